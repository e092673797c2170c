//! The per-gateway downlink logs: everything central must tell a gateway is appended to its log in
//! the transaction that made the change, and the exchange pages through it (`sync`).
use super::db::Tx;
use super::{CentralError, Result};
use gramgrid_core::civil::from_ts;
use gramgrid_core::tariff::TariffVersion;
use gramgrid_proto::voucher::PublishedKey;
use gramgrid_proto::wire::DownlinkEvent;

/// Appends an event to one gateway's downlink log (in the caller's transaction).
pub(crate) fn append_downlink(tx: &mut dyn Tx, gateway: &str, event: &DownlinkEvent) -> Result<()> {
    let seq = tx
        .query_opt(
            "UPDATE gateways SET downlink_seq = downlink_seq + 1 WHERE id = $1 RETURNING downlink_seq",
            &[gateway.into()],
        )?
        .ok_or_else(|| CentralError::NotFound(format!("no gateway '{gateway}'")))?
        .int(0)?;
    tx.downlink_appended(gateway);
    let body = serde_json::to_string(event).map_err(|e| CentralError::Corrupt(e.to_string()))?;
    tx.execute(
        "INSERT INTO downlink (gateway, seq, event) VALUES ($1, $2, $3)",
        &[gateway.into(), seq.into(), body.into()],
    )?;
    Ok(())
}

/// Appends an event to every gateway's downlink log except `except`'s.
pub(crate) fn append_downlink_to_all(
    tx: &mut dyn Tx,
    except: Option<&str>,
    event: &DownlinkEvent,
) -> Result<()> {
    let gateways = tx.query("SELECT id FROM gateways ORDER BY id", &[])?;
    for row in gateways {
        let gateway = row.text(0)?;
        if except != Some(gateway.as_str()) {
            append_downlink(tx, &gateway, event)?;
        }
    }
    Ok(())
}

/// The sequence of `gateway`'s newest downlink record (0 for a gateway central has no row of).
pub(crate) fn downlink_seq(tx: &mut dyn Tx, gateway: &str) -> Result<i64> {
    let row = tx.query_opt(
        "SELECT downlink_seq FROM gateways WHERE id = $1",
        &[gateway.into()],
    )?;
    Ok(row.map(|row| row.int(0)).transpose()?.unwrap_or(0))
}

/// Makes sure a gateway is known; a new one is first sent the voucher keys, the published tariff
/// versions, the policies with their rules, and every technician account.
pub(crate) fn ensure_gateway(tx: &mut dyn Tx, gateway: &str) -> Result<()> {
    crate::check_id("gateway id", gateway)?;
    let created = tx.execute(
        "INSERT INTO gateways (id, technicians_resend) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        &[gateway.into()],
    )?;
    if created == 0 {
        return Ok(());
    }
    let keys = published_keys(tx)?;
    append_downlink(tx, gateway, &DownlinkEvent::VoucherKeys(keys))?;
    for row in tx.query(
        // A policy's rules follow the policy ('policy' < 'policy_rules').
        "SELECT kind, body FROM published ORDER BY published_at, version, kind",
        &[],
    )? {
        let body = row.text(1)?;
        let corrupt = |e: serde_json::Error| CentralError::Corrupt(e.to_string());
        let events = match row.text(0)?.as_str() {
            "tariff" => tariff_events(&serde_json::from_str(&body).map_err(corrupt)?),
            _ => vec![serde_json::from_str(&body).map_err(corrupt)?],
        };
        for event in &events {
            append_downlink(tx, gateway, event)?;
        }
    }
    for event in technician_events(tx)? {
        append_downlink(tx, gateway, &event)?;
    }
    Ok(())
}

/// Records a gateway skips while it speaks a sync protocol too old for them (it cannot decode
/// them: `DownlinkEvent::min_protocol`), and the `gateways` column that remembers it owes them.
pub(crate) struct Owed {
    /// The column (1: owed).
    pub column: &'static str,
    /// The oldest protocol that carries the records.
    pub needs: u16,
}

/// Called in every exchange with the protocol the gateway `speaks` and whether it was marked as
/// `owed` the records: a gateway too old for them is marked; a marked gateway that speaks a
/// protocol that carries them is sent every record `events` makes now (before this exchange's
/// downlink page), and unmarked.
pub(crate) fn resend_when_current(
    tx: &mut dyn Tx,
    (gateway, speaks, owed): (&str, u16, bool),
    what: &Owed,
    events: impl FnOnce(&mut dyn Tx) -> Result<Vec<DownlinkEvent>>,
) -> Result<()> {
    let mark = |value: i64| {
        format!(
            "UPDATE gateways SET {} = {value} WHERE id = $1",
            what.column
        )
    };
    if speaks < what.needs {
        if !owed {
            tx.execute(&mark(1), &[gateway.into()])?;
        }
        return Ok(());
    }
    if owed {
        for event in events(tx)? {
            append_downlink(tx, gateway, &event)?;
        }
        tx.execute(&mark(0), &[gateway.into()])?;
    }
    Ok(())
}

/// The records that publish a tariff version: the version, then its time-of-day slots and demand
/// charge if it has either.
pub(crate) fn tariff_events(version: &TariffVersion) -> Vec<DownlinkEvent> {
    let mut events = vec![DownlinkEvent::Tariff(version.into())];
    if !version.tod.is_empty() || version.demand_paise_per_kw != 0 {
        events.push(DownlinkEvent::TariffDetails {
            version_id: version.id.clone(),
            tod: version.tod.iter().map(Into::into).collect(),
            demand_paise_per_kw: version.demand_paise_per_kw,
        });
    }
    if version.export_banking {
        events.push(DownlinkEvent::TariffNetMetering {
            version_id: version.id.clone(),
            export_banking: version.export_banking,
            export_settlement_paise_per_kwh: version.export_settlement_paise_per_kwh,
        });
    }
    events
}

/// Every technician account as the record that tells a gateway of it, by name.
pub(crate) fn technician_events(tx: &mut dyn Tx) -> Result<Vec<DownlinkEvent>> {
    tx.query(
        "SELECT name, full_name, role, password_hash, active, updated_at FROM technicians ORDER BY name",
        &[],
    )?
    .iter()
    .map(|row| {
        Ok(DownlinkEvent::Technician {
            name: row.text(0)?,
            full_name: row.text(1)?,
            role: row.text(2)?,
            password_hash: row.text(3)?,
            active: row.int(4)? != 0,
            updated_at: from_ts(row.int(5)?),
        })
    })
    .collect()
}

/// Every key's public half and issuing window.
pub fn published_keys(tx: &mut dyn Tx) -> Result<Vec<PublishedKey>> {
    tx.query("SELECT key_id, public_key, issue_from, issue_until, revoked FROM voucher_keys ORDER BY key_id", &[])?
        .iter()
        .map(|row| {
            Ok(PublishedKey {
                key_id: u16::try_from(row.int(0)?).map_err(|e| CentralError::Corrupt(e.to_string()))?,
                public_key: row.text(1)?,
                issue_from: from_ts(row.int(2)?),
                issue_until: row.opt_int(3)?.map(from_ts),
                revoked: row.int(4)? != 0,
            })
        })
        .collect()
}
