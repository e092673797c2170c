//! What the meter link keeps in the store: session keys and the frame counters of each meter.

use super::{from_ts, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_net::secrets::Sealer;
use gramgrid_proto::frame::{DevAddr, SessionKey, SessionKeys};
use rusqlite::{params, OptionalExtension, Transaction};

/// One meter's LoRaWAN session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSession {
    /// The meter's id in the store.
    pub meter: i64,
    /// The meter's serial number.
    pub serial: String,
    /// DevAddr and ABP session keys (NwkSKey, AppSKey); never logged.
    pub keys: SessionKeys,
    /// Last uplink counter accepted, last downlink counter sent.
    pub fcnt_up: Option<u32>,
    /// Last downlink counter committed; None before the session's first downlink.
    pub fcnt_down: Option<u32>,
    /// The meter's latest stored reading, if any.
    pub last_reading_at: Option<DateTime<Utc>>,
    /// When the meter was installed: intervals before it are not the account's to fetch.
    pub installed_at: DateTime<Utc>,
}

/// Which counter of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fcnt {
    /// The uplink counter (meter to gateway): the last one accepted.
    Up,
    /// The downlink counter (gateway to meter): the last one used.
    Down,
}

impl Store {
    /// Every meter in service that has session keys.
    pub fn link_sessions(&self) -> Result<Vec<LinkSession>> {
        let mut stmt = self.conn.prepare(
            "SELECT k.meter, m.serial, k.dev_addr, k.nwk_skey, k.app_skey, c.fcnt_up, c.fcnt_down, r.at, m.installed_at
             FROM meter_keys k JOIN meters m ON m.id = k.meter
             LEFT JOIN link_counters c ON c.meter = k.meter
             LEFT JOIN meter_cursor r ON r.meter = k.meter
             WHERE m.removed_at IS NULL ORDER BY k.meter",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, i64>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (meter, serial, dev_addr, nwk, app, up, down, at, installed) = row?;
            let key = |sealed: &str, which: &str| -> Result<SessionKey> {
                let hex = self.sealer.open(sealed, &key_context(meter, which))?;
                SessionKey::from_hex(&hex).ok_or_else(|| {
                    StoreError::Encoding(format!(
                        "the stored session keys of meter {serial} are not 32 hex digits; re-provision it"
                    ))
                })
            };
            let counter = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
            out.push(LinkSession {
                meter,
                keys: SessionKeys {
                    dev_addr: DevAddr(u32::try_from(dev_addr).unwrap_or_default()),
                    nwk_skey: key(&nwk, "nwk")?,
                    app_skey: key(&app, "app")?,
                },
                serial,
                fcnt_up: counter(up),
                fcnt_down: counter(down),
                last_reading_at: at.map(from_ts),
                installed_at: from_ts(installed),
            });
        }
        Ok(out)
    }

    /// Provisions (or replaces) a meter's ABP session keys, e.g. from a meter manifest. New keys
    /// mean a new session: its counters start again.
    pub fn set_meter_keys(&mut self, meter: i64, keys: &SessionKeys) -> Result<()> {
        let tx = self.conn.transaction()?;
        set_meter_keys_in(&tx, &self.sealer, meter, keys)?;
        tx.commit()?;
        Ok(())
    }

    /// Durably records a frame counter (fsynced: `synchronous = FULL`) before the frame is acted
    /// upon or sent, so a restart never accepts or reuses an older one.
    pub fn commit_fcnt(&mut self, meter: i64, which: Fcnt, fcnt: u32) -> Result<()> {
        let sql = match which {
            Fcnt::Up => {
                "INSERT INTO link_counters (meter, fcnt_up) VALUES (?1, ?2)
                 ON CONFLICT (meter) DO UPDATE SET fcnt_up = ?2"
            }
            Fcnt::Down => {
                "INSERT INTO link_counters (meter, fcnt_down) VALUES (?1, ?2)
                 ON CONFLICT (meter) DO UPDATE SET fcnt_down = ?2"
            }
        };
        self.conn.execute(sql, params![meter, i64::from(fcnt)])?;
        Ok(())
    }
}

/// Stores a meter's session keys inside the caller's transaction; new keys (a re-keyed or replaced
/// meter) start a new session, so the meter's frame counters start again.
pub(super) fn set_meter_keys_in(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    meter: i64,
    keys: &SessionKeys,
) -> Result<()> {
    let stored: Option<(i64, String, String)> = tx
        .query_row(
            "SELECT dev_addr, nwk_skey, app_skey FROM meter_keys WHERE meter = ?1",
            [meter],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (nwk, app) = (
        keys.nwk_skey.to_storage_hex(),
        keys.app_skey.to_storage_hex(),
    );
    if let Some((dev_addr, stored_nwk, stored_app)) = stored {
        let same = dev_addr == i64::from(keys.dev_addr.0)
            && sealer.open(&stored_nwk, &key_context(meter, "nwk"))? == nwk
            && sealer.open(&stored_app, &key_context(meter, "app"))? == app;
        if same {
            return Ok(());
        }
    }
    tx.execute(
        "INSERT INTO meter_keys (meter, dev_addr, nwk_skey, app_skey) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (meter) DO UPDATE SET dev_addr = ?2, nwk_skey = ?3, app_skey = ?4",
        params![
            meter,
            i64::from(keys.dev_addr.0),
            sealer.seal(&nwk, &key_context(meter, "nwk")),
            sealer.seal(&app, &key_context(meter, "app"))
        ],
    )?;
    // New keys (a re-keyed or replaced meter) start a new session: the frame counters start again.
    tx.execute("DELETE FROM link_counters WHERE meter = ?1", [meter])?;
    Ok(())
}

/// Where a meter's sealed session key belongs: `which` is `nwk` or `app`.
fn key_context(meter: i64, which: &str) -> String {
    format!("meter_keys:{meter}:{which}")
}

impl Store {
    /// Seals session keys stored in the clear by a gramgrid before sealing existed.
    pub(super) fn seal_stored_keys(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        let stored: Vec<(i64, String, String)> = tx
            .prepare("SELECT meter, nwk_skey, app_skey FROM meter_keys")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let clear = stored
            .into_iter()
            .filter(|(_, nwk, _)| !Sealer::is_sealed(nwk));
        for (meter, nwk, app) in clear {
            tx.execute(
                "UPDATE meter_keys SET nwk_skey = ?2, app_skey = ?3 WHERE meter = ?1",
                params![
                    meter,
                    self.sealer.seal(&nwk, &key_context(meter, "nwk")),
                    self.sealer.seal(&app, &key_context(meter, "app"))
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}
