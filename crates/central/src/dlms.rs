//! DLMS/COSEM meters at central (docs/dlms.md section 7): a household's or transformer's meter
//! may carry its system title and association keys, which its gateway receives in a
//! `DownlinkEvent::MeterDlms` record right after the meter's own record.
//!
//! A gateway speaking a sync protocol older than [`DLMS_PROTOCOL`] cannot decode that record and
//! so cannot reach the meter: central refuses to record a DLMS meter for a gateway known to speak
//! one (as it refuses a tariff such a gateway would misbill), and a gateway that spoke one since is
//! sent every DLMS record again once it speaks a newer one ([`OWED`]).
use super::db::Tx;
use super::downlink::Owed;
use super::{CentralError, Result};
use gramgrid_proto::dlms::client::MeterSecurity;
use gramgrid_proto::wire::{DownlinkEvent, WireDlms};

/// The oldest sync protocol that carries DLMS security (`DownlinkEvent::MeterDlms`).
pub(crate) const DLMS_PROTOCOL: u16 = 12;

/// A gateway speaking a protocol older than [`DLMS_PROTOCOL`] skips DLMS records, so it is owed
/// them all (`dlms_resend`) until it speaks a newer one (`downlink::resend_when_current` with
/// [`dlms_events`]).
pub(crate) const OWED: Owed = Owed {
    column: "dlms_resend",
    needs: DLMS_PROTOCOL,
};

/// The record that tells a gateway meter `serial`'s DLMS security (None: it speaks payload v1).
pub(crate) fn record(serial: &str, dlms: Option<&MeterSecurity>) -> DownlinkEvent {
    DownlinkEvent::MeterDlms {
        serial: serial.to_owned(),
        dlms: dlms.map(WireDlms::from),
    }
}

/// Refuses DLMS meter `serial` for `gateway` when the gateway's latest exchange spoke a protocol
/// too old to receive its keys: the meter would stay unreachable there. A gateway that has not
/// synced yet is taken (if it turns out older, it is sent the records once it upgrades).
pub(crate) fn refuse_for_old_gateway(tx: &mut dyn Tx, gateway: &str, serial: &str) -> Result<()> {
    let spoken = tx
        .query_opt(
            "SELECT protocol FROM gateways WHERE id = $1",
            &[gateway.into()],
        )?
        .map(|row| row.opt_int(0))
        .transpose()?
        .flatten();
    match spoken {
        Some(protocol) if protocol < i64::from(DLMS_PROTOCOL) => Err(CentralError::Conflict(format!(
            "meter {serial} speaks DLMS, which gateway {gateway} (sync protocol {protocol}) cannot reach: upgrade it to protocol {DLMS_PROTOCOL} or newer first"
        ))),
        _ => Ok(()),
    }
}

/// The DLMS records of every DLMS meter `gateway` serves (its accounts' meters in installation
/// order, then its transformer meters), for a gateway that skipped them while too old.
pub(crate) fn dlms_events(tx: &mut dyn Tx, gateway: &str) -> Result<Vec<DownlinkEvent>> {
    let mut events = Vec::new();
    for (home, query) in [
        (
            super::sealed_keys::KeyHome::Meter,
            "SELECT m.serial, m.dlms_title, m.dlms_ek, m.dlms_ak FROM meters m JOIN accounts a ON a.id = m.account
             WHERE a.gateway = $1 AND m.dlms_title IS NOT NULL ORDER BY m.installed_at, m.serial",
        ),
        (
            super::sealed_keys::KeyHome::Transformer,
            "SELECT serial, dlms_title, dlms_ek, dlms_ak FROM transformer_meters
             WHERE gateway = $1 AND dlms_title IS NOT NULL ORDER BY serial",
        ),
    ] {
        for row in tx.query(query, &[gateway.into()])? {
            let serial = row.text(0)?;
            let stored = (row.opt_text(1)?, row.opt_text(2)?, row.opt_text(3)?);
            let security = super::sealed_keys::open_dlms(tx.sealer(), home, &serial, stored)?;
            if security.is_some() {
                events.push(record(&serial, security.as_ref()));
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests;
