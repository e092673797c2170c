//! Distribution-transformer meters at central (`import-meters`, `role = "dt"`): on no account, never billed, sent with their radio keys to their gateway, which audits their energy against its consumers' (`energy_audit`).
//!
//! A serial is either a household's meter (`meters`), a spare (`stock_meters`) or a transformer's
//! (`transformer_meters`), never two of them: the audit would otherwise count one meter's energy
//! on both sides of the balance.
use super::db::{Row, Tx, Value};
use super::downlink::{append_downlink, ensure_gateway, Owed};
use super::sealed_keys::{self, KeyHome};
use super::{check_id, CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_proto::dlms::client::MeterSecurity;
use gramgrid_proto::wire::{DownlinkEvent, MeterKeys};

/// The oldest sync protocol that carries transformer meters (`DownlinkEvent::TransformerMeter`).
pub(crate) const TRANSFORMER_PROTOCOL: u16 = 9;

/// What entering one transformer meter did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entered {
    /// New: stored and queued for its gateway.
    Added,
    /// Known with other keys (radio or DLMS): re-keyed and queued again.
    Rekeyed,
    /// Known with the same keys: nothing to do.
    Unchanged,
}

/// Enters `serial` as the transformer meter of `gateway` (installed at `installed_at` when new)
/// with `keys` and, for a DLMS meter, `dlms`, and queues it for the gateway when new or re-keyed.
/// A serial that is a household's meter, a spare, or another gateway's transformer meter is
/// refused; so is a DLMS meter for a gateway too old to reach it.
pub(crate) fn enter(
    tx: &mut dyn Tx,
    gateway: &str,
    serial: &str,
    installed_at: DateTime<Utc>,
    keys: &MeterKeys,
    dlms: Option<&MeterSecurity>,
) -> Result<Entered> {
    check_id("meter serial", serial)?;
    for (query, what) in [
        (
            "SELECT account FROM meters WHERE serial = $1",
            "a household meter on account",
        ),
        (
            "SELECT gateway FROM stock_meters WHERE serial = $1",
            "a spare in the stock of gateway",
        ),
    ] {
        if let Some(row) = tx.query_opt(query, &[serial.into()])? {
            return Err(CentralError::Conflict(format!(
                "meter {serial} is {what} {}; a transformer meter (role = \"dt\") must be a meter of its own",
                row.text(0)?
            )));
        }
    }
    ensure_gateway(tx, gateway)?;
    if dlms.is_some() {
        crate::dlms::refuse_for_old_gateway(tx, gateway, serial)?;
    }
    let stored = tx.query_opt(
        "SELECT gateway, installed_at, dev_addr, nwk_skey, app_skey, dlms_title, dlms_ek, dlms_ak FROM transformer_meters WHERE serial = $1",
        &[serial.into()],
    )?;
    let mut was_dlms = false;
    let (entered, installed_at) = match &stored {
        None => (Entered::Added, installed_at),
        Some(row) => {
            let owner = row.text(0)?;
            if owner != gateway {
                return Err(CentralError::Conflict(format!(
                    "meter {serial} is the transformer meter of gateway {owner}, not {gateway}"
                )));
            }
            let stored_dlms = transformer_dlms(tx, serial, row)?;
            was_dlms = stored_dlms.is_some();
            if &transformer_keys(tx, serial, row)? == keys && stored_dlms.as_ref() == dlms {
                return Ok(Entered::Unchanged);
            }
            (Entered::Rekeyed, from_ts(row.int(1)?))
        }
    };
    let (nwk, app) = sealed_keys::seal(tx.sealer(), KeyHome::Transformer, serial, keys);
    let (title, ek, ak) = match dlms {
        Some(security) => {
            let (title, ek, ak) =
                sealed_keys::seal_dlms(tx.sealer(), KeyHome::Transformer, serial, security);
            (title.into(), ek.into(), ak.into())
        }
        None => (Value::Null, Value::Null, Value::Null),
    };
    tx.execute(
        "INSERT INTO transformer_meters (serial, gateway, installed_at, dev_addr, nwk_skey, app_skey, dlms_title, dlms_ek, dlms_ak) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (serial) DO UPDATE SET dev_addr = $4, nwk_skey = $5, app_skey = $6, dlms_title = $7, dlms_ek = $8, dlms_ak = $9",
        &[serial.into(), gateway.into(), ts(installed_at).into(), i64::from(keys.dev_addr).into(), nwk.into(), app.into(), title, ek, ak],
    )?;
    let event = DownlinkEvent::TransformerMeter {
        serial: serial.to_owned(),
        installed_at,
        keys: keys.clone(),
    };
    append_downlink(tx, gateway, &event)?;
    // Right after the meter's record; a meter switched back to payload v1 is told so.
    if dlms.is_some() || was_dlms {
        append_downlink(tx, gateway, &crate::dlms::record(serial, dlms))?;
    }
    Ok(entered)
}

/// A transformer meter's DLMS security from its row (`..., dlms_title, dlms_ek, dlms_ak` at 5 to
/// 7), opened; None for a payload-v1 meter.
fn transformer_dlms(tx: &mut dyn Tx, serial: &str, row: &Row) -> Result<Option<MeterSecurity>> {
    let stored = (row.opt_text(5)?, row.opt_text(6)?, row.opt_text(7)?);
    sealed_keys::open_dlms(tx.sealer(), KeyHome::Transformer, serial, stored)
}

/// A transformer meter's keys from its row (`_, installed_at, dev_addr, nwk_skey, app_skey`),
/// opened.
fn transformer_keys(tx: &mut dyn Tx, serial: &str, row: &Row) -> Result<MeterKeys> {
    let sealed = (row.text(3)?, row.text(4)?);
    sealed_keys::open(
        tx.sealer(),
        KeyHome::Transformer,
        serial,
        row.int(2)?,
        (&sealed.0, &sealed.1),
    )
}

/// The records that tell `gateway` of each of its transformer meters, by serial.
pub(crate) fn transformer_events(tx: &mut dyn Tx, gateway: &str) -> Result<Vec<DownlinkEvent>> {
    let rows = tx.query(
        "SELECT serial, installed_at, dev_addr, nwk_skey, app_skey FROM transformer_meters WHERE gateway = $1 ORDER BY serial",
        &[gateway.into()],
    )?;
    rows.iter()
        .map(|row| {
            let serial = row.text(0)?;
            let keys = transformer_keys(tx, &serial, row)?;
            Ok(DownlinkEvent::TransformerMeter {
                serial,
                installed_at: from_ts(row.int(1)?),
                keys,
            })
        })
        .collect()
}

/// The gateway whose transformer meter `serial` is, if it is one.
pub(crate) fn gateway_of(tx: &mut dyn Tx, serial: &str) -> Result<Option<String>> {
    tx.query_opt(
        "SELECT gateway FROM transformer_meters WHERE serial = $1",
        &[serial.into()],
    )?
    .map(|row| row.text(0))
    .transpose()
    .map_err(Into::into)
}

/// A gateway speaking a protocol older than [`TRANSFORMER_PROTOCOL`] skips transformer meter
/// records, so it is owed them all (`transformers_resend`) until it speaks a newer one
/// (`downlink::resend_when_current` with [`transformer_events`]).
pub(crate) const OWED: Owed = Owed {
    column: "transformers_resend",
    needs: TRANSFORMER_PROTOCOL,
};

#[cfg(test)]
mod tests;
