//! Spare meters in a gateway's stock (`gramgrid central import-meters --stock`), and their installation by a technician there (`UplinkEvent::MeterInstalled`).
//!
//! A spare is on no account. Its gateway gets it with its radio keys (`DownlinkEvent::StockMeter`),
//! so a technician can commission it on a new connection, or swap it for a failed meter, with no
//! backhaul. When the gateway reports the installation, central installs the meter on the account
//! with the stock's keys; a replacement is billed in the slabs of the meter it replaced
//! (`meters.billing_serial`), exactly as the gateway bills it.
use super::accounts::{self, Meter};
use super::db::{Row, Tx};
use super::downlink::append_downlink;
use super::sealed_keys::{self, KeyHome};
use super::{CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_proto::manifest::{MeterManifest, MeterRole};
use gramgrid_proto::wire::{DownlinkEvent, MeterKeys};

/// What a stock import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StockReport {
    /// Spares entered for the first time.
    pub added: usize,
    /// Spares already in this gateway's stock whose keys the manifest replaced.
    pub rekeyed: usize,
    /// Spares already in this gateway's stock with the same keys.
    pub unchanged: usize,
}

/// Enters every meter of `manifest` into `gateway`'s stock, in one transaction (all or nothing),
/// and queues each new or re-keyed spare for the gateway. A meter already installed on an account,
/// or in another gateway's stock, is refused.
pub fn add_to_stock(
    tx: &mut dyn Tx,
    manifest: &MeterManifest,
    gateway: &str,
    now: DateTime<Utc>,
) -> Result<StockReport> {
    if tx
        .query_opt("SELECT 1 FROM gateways WHERE id = $1", &[gateway.into()])?
        .is_none()
    {
        return Err(CentralError::NotFound(format!(
            "no gateway '{gateway}'; enrol it first with `gramgrid central add-gateway`"
        )));
    }
    let mut report = StockReport::default();
    for entry in &manifest.meters {
        let serial = entry.serial.as_str();
        accounts::check_id("meter serial", serial)?;
        if let Some(row) = tx.query_opt(
            "SELECT account FROM meters WHERE serial = $1",
            &[serial.into()],
        )? {
            return Err(CentralError::Conflict(format!(
                "meter {serial} is already installed on account {}; a spare must be a meter on no account",
                row.text(0)?
            )));
        }
        if entry.role == MeterRole::Transformer {
            return Err(CentralError::Invalid(format!(
                "meter {serial} is a transformer meter (role = \"dt\"), never a spare: import it without --stock"
            )));
        }
        // A spare travels with its radio keys alone (`StockMeter`): a DLMS spare installed from
        // stock would come up without its association keys, so it is refused, not half taken.
        if entry.dlms.is_some() {
            return Err(CentralError::Invalid(format!(
                "meter {serial} speaks DLMS (protocol = \"dlms\"), which spares do not carry yet: import it without --stock"
            )));
        }
        if let Some(owner) = super::transformers::gateway_of(tx, serial)? {
            return Err(CentralError::Conflict(format!(
                "meter {serial} is the transformer meter of gateway {owner}; a spare must be a meter on no account"
            )));
        }
        let keys = super::import::manifest_keys(entry);
        let stored = tx.query_opt(
            "SELECT gateway, dev_addr, nwk_skey, app_skey FROM stock_meters WHERE serial = $1",
            &[serial.into()],
        )?;
        if let Some(row) = &stored {
            let owner = row.text(0)?;
            if owner != gateway {
                return Err(CentralError::Conflict(format!(
                    "meter {serial} is in the stock of gateway {owner}, not {gateway}"
                )));
            }
            if stock_keys(tx, serial, row)? == keys {
                report.unchanged += 1;
                continue;
            }
        }
        let (nwk, app) = sealed_keys::seal(tx.sealer(), KeyHome::Stock, serial, &keys);
        tx.execute(
            "INSERT INTO stock_meters (serial, gateway, dev_addr, nwk_skey, app_skey, added_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (serial) DO UPDATE SET dev_addr = $3, nwk_skey = $4, app_skey = $5",
            &[serial.into(), gateway.into(), i64::from(keys.dev_addr).into(), nwk.into(), app.into(), ts(now).into()],
        )?;
        append_downlink(
            tx,
            gateway,
            &DownlinkEvent::StockMeter {
                serial: serial.to_owned(),
                keys,
            },
        )?;
        if stored.is_some() {
            report.rekeyed += 1;
        } else {
            report.added += 1;
        }
    }
    Ok(report)
}

/// A spare's keys from its row (`gateway, dev_addr, nwk_skey, app_skey, ...`), opened.
fn stock_keys(tx: &mut dyn Tx, serial: &str, row: &Row) -> Result<MeterKeys> {
    let sealed = (row.text(2)?, row.text(3)?);
    sealed_keys::open(
        tx.sealer(),
        KeyHome::Stock,
        serial,
        row.int(1)?,
        (&sealed.0, &sealed.1),
    )
}

/// A gateway's report that a technician installed one of its spares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation<'a> {
    /// The reporting gateway (from its certificate).
    pub gateway: &'a str,
    /// The spare's serial.
    pub serial: &'a str,
    /// The account it went to (the caller checked it is the gateway's).
    pub account: &'a str,
    /// When (gateway clock).
    pub installed_at: DateTime<Utc>,
    /// Its register at installation (Wh), if the technician could read it.
    pub first_register_wh: Option<i64>,
    /// The meter it replaced, if any.
    pub replaces: Option<&'a str>,
}

/// Installs a gateway's spare on the account it reports, with the stock's keys; a replacement
/// goes on in the replaced meter's slabs. Reporting the same installation again changes nothing.
/// Err(why) when the report does not match central's records (the caller refuses and flags it).
pub fn record_installation(
    tx: &mut dyn Tx,
    installation: &Installation<'_>,
) -> Result<std::result::Result<(), String>> {
    let Installation {
        gateway,
        serial,
        account,
        ..
    } = *installation;
    let Some(row) = tx.query_opt(
        "SELECT gateway, dev_addr, nwk_skey, app_skey, installed_account FROM stock_meters WHERE serial = $1",
        &[serial.into()],
    )?
    else {
        return Ok(Err(format!("meter {serial} is not in any gateway's stock")));
    };
    if row.text(0)? != gateway {
        return Ok(Err(format!(
            "meter {serial} is in the stock of gateway {}, not this one",
            row.text(0)?
        )));
    }
    match row.opt_text(4)? {
        Some(installed) if installed == account => return Ok(Ok(())),
        Some(installed) => {
            return Ok(Err(format!(
                "meter {serial} was installed on account {installed} before"
            )))
        }
        None => {}
    }
    let billing = match installation.replaces {
        None => None,
        Some(old) => {
            let Some(old_row) = tx.query_opt(
                "SELECT account, COALESCE(billing_serial, serial) FROM meters WHERE serial = $1",
                &[old.into()],
            )?
            else {
                return Ok(Err(format!("the replaced meter {old} is unknown")));
            };
            if old_row.text(0)? != account {
                return Ok(Err(format!(
                    "the replaced meter {old} is not on account {account}"
                )));
            }
            Some(old_row.text(1)?)
        }
    };
    let keys = stock_keys(tx, serial, &row)?;
    let installed_at = from_ts(ts(installation.installed_at));
    accounts::put_meter(
        tx,
        &Meter {
            serial: serial.to_owned(),
            account: account.to_owned(),
            installed_at,
            initial_register_wh: installation.first_register_wh,
            keys: Some(keys),
            // Spares carry radio keys alone: `add_to_stock` refuses a DLMS spare.
            dlms: None,
            relay_state: "unknown".into(),
        },
        false,
    )?;
    tx.execute(
        "UPDATE meters SET billing_serial = $2 WHERE serial = $1",
        &[serial.into(), billing.into()],
    )?;
    tx.execute(
        "UPDATE stock_meters SET installed_account = $2, installed_at = $3 WHERE serial = $1",
        &[serial.into(), account.into(), ts(installed_at).into()],
    )?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests;
