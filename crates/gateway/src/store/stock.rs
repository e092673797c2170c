//! Spare meters in this gateway's stock, and the technician's installation of one: a new connection or the swap of a failed meter.
//!
//! Central sends each spare with its radio keys (`DownlinkEvent::StockMeter`), so a technician can
//! commission it with no backhaul. Installing one moves it from the stock to the account in one
//! transaction with the audit (`UplinkEvent::TechnicianAction`) and the news for central
//! (`UplinkEvent::MeterInstalled`). A replacement is billed in the slabs of the meter it replaced
//! (`meters.billing_meter`), so the household's month goes on as if one meter had read it all.
use super::technicians::{record_action_in, TechnicianAction};
use super::{from_ts, install_meter_in, ts, MeterInstall, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_net::secrets::Sealer;
use gramgrid_proto::frame::{DevAddr, SessionKey, SessionKeys};
use gramgrid_proto::wire::UplinkEvent;
use rusqlite::{params, OptionalExtension, Transaction};

/// A spare meter as the stock page lists it (never its keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockMeter {
    /// The serial on its nameplate.
    pub serial: String,
    /// Its DevAddr.
    pub dev_addr: u32,
}

/// A technician's installation of a spare meter on an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterSwap {
    /// The account that gets the meter.
    pub account: String,
    /// The spare's serial.
    pub serial: String,
    /// Its register at installation (Wh), read from its display; None when the display could not
    /// be read: the meter's first report is then its baseline (and, for a replacement, the energy
    /// between the swap and that report is not billed).
    pub first_register_wh: Option<i64>,
    /// For a replacement: the final register (Wh) of the account's meter in service, read from its
    /// display; None for a new connection (the account must have no meter in service).
    pub final_register_wh: Option<i64>,
    /// When (UTC; stored to the second).
    pub at: DateTime<Utc>,
}

/// Where a spare's sealed session key belongs: `which` is `nwk` or `app`.
fn key_context(serial: &str, which: &str) -> String {
    format!("stock_meters:{serial}:{which}")
}

/// Puts a spare into the stock (or re-keys it) inside the caller's transaction; a serial already
/// installed here is left alone (central's stock record arrived after the installation).
pub(super) fn put_stock_meter_in(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    serial: &str,
    keys: &SessionKeys,
) -> Result<()> {
    let installed = tx
        .query_row("SELECT 1 FROM meters WHERE serial = ?1", [serial], |_| {
            Ok(())
        })
        .optional()?
        .is_some();
    if installed {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO stock_meters (serial, dev_addr, nwk_skey, app_skey) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (serial) DO UPDATE SET dev_addr = ?2, nwk_skey = ?3, app_skey = ?4",
        params![
            serial,
            i64::from(keys.dev_addr.0),
            sealer.seal(&keys.nwk_skey.to_storage_hex(), &key_context(serial, "nwk")),
            sealer.seal(&keys.app_skey.to_storage_hex(), &key_context(serial, "app"))
        ],
    )?;
    Ok(())
}

fn not_in_stock(serial: &str) -> StoreError {
    StoreError::InstallRefused(format!(
        "meter {serial} is not in this gateway's stock; check the serial on its nameplate, or ask the office to add it to the stock"
    ))
}

/// Takes a spare out of the stock inside the caller's transaction, with its keys opened.
fn take_from_stock(tx: &Transaction<'_>, sealer: &Sealer, serial: &str) -> Result<SessionKeys> {
    let row: Option<(i64, String, String)> = tx
        .query_row(
            "SELECT dev_addr, nwk_skey, app_skey FROM stock_meters WHERE serial = ?1",
            [serial],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((dev_addr, nwk, app)) = row else {
        return Err(not_in_stock(serial));
    };
    let key = |sealed: &str, which: &str| -> Result<SessionKey> {
        SessionKey::from_hex(&sealer.open(sealed, &key_context(serial, which))?)
            .ok_or_else(|| StoreError::Encoding(format!("stored {which} key of spare {serial}")))
    };
    let keys = SessionKeys {
        dev_addr: DevAddr(
            u32::try_from(dev_addr)
                .map_err(|_| StoreError::Encoding(format!("DevAddr of spare {serial}")))?,
        ),
        nwk_skey: key(&nwk, "nwk")?,
        app_skey: key(&app, "app")?,
    };
    tx.execute("DELETE FROM stock_meters WHERE serial = ?1", [serial])?;
    Ok(keys)
}

impl Store {
    /// The spares in stock, by serial.
    pub fn stock_meters(&self) -> Result<Vec<StockMeter>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT serial, dev_addr FROM stock_meters ORDER BY serial")?;
        let rows = statement.query_map([], |r| {
            Ok(StockMeter {
                serial: r.get(0)?,
                dev_addr: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Checks that `swap` can be done: its spare is in stock, and the account has a meter in
    /// service exactly when `swap` replaces one. Returns that meter (id and serial), if any.
    pub fn check_swap(&self, swap: &MeterSwap) -> Result<Option<(i64, String)>> {
        let in_stock = self
            .conn
            .prepare_cached("SELECT 1 FROM stock_meters WHERE serial = ?1")?
            .query_row([&swap.serial], |_| Ok(()))
            .optional()?
            .is_some();
        if !in_stock {
            return Err(not_in_stock(&swap.serial));
        }
        match (self.active_meter(&swap.account)?, swap.final_register_wh) {
            (replaced @ Some(_), Some(_)) | (replaced @ None, None) => Ok(replaced),
            (Some((_, serial)), None) => Err(StoreError::InstallRefused(format!(
                "account {} already has meter {serial} in service: replace it instead",
                swap.account
            ))),
            (None, Some(_)) => Err(StoreError::InstallRefused(format!(
                "account {} has no meter in service to replace: commission the new meter instead",
                swap.account
            ))),
        }
    }

    /// Installs a spare on an account as `action` (the technician's audit record) says, in one
    /// transaction: the spare leaves the stock with its keys, the account's meter in service (for a
    /// replacement) leaves service at `swap.at`, the new meter's first register becomes its first
    /// reading, and the audit and `UplinkEvent::MeterInstalled` are queued for central.
    ///
    /// The replaced meter's final register must already be stored as its reading at `swap.at`
    /// (`Gateway::install_spare` ingests it first, so it is charged like any reading). Returns the
    /// new meter's id.
    pub fn install_spare(&mut self, swap: &MeterSwap, action: &TechnicianAction) -> Result<i64> {
        let at = from_ts(ts(swap.at));
        let replaces = self.check_swap(swap)?;
        let tx = self.conn.transaction()?;
        let keys = take_from_stock(&tx, &self.sealer, &swap.serial)?;
        let install = MeterInstall {
            serial: swap.serial.clone(),
            account: swap.account.clone(),
            installed_at: at,
            initial_register_wh: swap.first_register_wh,
        };
        let meter = install_meter_in(&tx, &install, self.next_reading_seq)?;
        if let Some((old, _)) = &replaces {
            tx.execute(
                "UPDATE meters SET billing_meter = (SELECT COALESCE(billing_meter, id) FROM meters WHERE id = ?2)
                 WHERE id = ?1",
                params![meter, old],
            )?;
        }
        super::link::set_meter_keys_in(&tx, &self.sealer, meter, &keys)?;
        if record_action_in(&tx, action)? {
            super::outbox::append_outbox(
                &tx,
                &UplinkEvent::MeterInstalled {
                    id: action.id.clone(),
                    serial: swap.serial.clone(),
                    account: swap.account.clone(),
                    installed_at: at,
                    first_register_wh: swap.first_register_wh,
                    replaces: replaces.map(|(_, serial)| serial),
                    technician: action.technician.clone(),
                },
            )?;
        }
        tx.commit()?;
        self.load_caches()?;
        Ok(meter)
    }
}
