//! What meters report besides readings, as gateways send it (`UplinkEvent::MeterEvent`,
//! `UplinkEvent::SupplyOutage`): each event stored once per gateway and id, a tamper flagged
//! `meter_tamper` for the office, each outage flagged `supply_outage` once and kept up to date;
//! `GET /api/v1/meters/{serial}/events` and `GET /api/v1/outages`.
use crate::db::{Row, Tx};
use crate::flags::flag;
use crate::{CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use serde::Serialize;

/// Most rows one list answers.
pub const MAX_LIST_LIMIT: i64 = 1000;

/// A meter event as central stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeterEventRow {
    /// The gateway's id for it (`ev-<serial>-<kind>-<unix seconds>`).
    pub id: String,
    /// The gateway that reported it.
    pub gateway: String,
    /// The meter's serial.
    pub meter: String,
    /// `tamper`, `tamper_magnet`, `tamper_cover_open`, `tamper_neutral`,
    /// `tamper_reverse_current`, `power_fail`, `power_restore`, `relay_operated`, `clock_set`.
    pub kind: String,
    /// When it happened, by the meter's clock (RFC 3339, UTC).
    pub at: DateTime<Utc>,
    /// For `relay_operated`: the gateway's wire command id (0: operated at the meter).
    pub command_id: Option<i64>,
}

/// A supply outage as central stores it: the gateway's latest word on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutageRow {
    /// The gateway's id for it.
    pub id: String,
    /// The gateway behind whose transformer it happened.
    pub gateway: String,
    /// The first power failure.
    pub started_at: DateTime<Utc>,
    /// When supply came back to most meters; null while it has not.
    pub ended_at: Option<DateTime<Utc>>,
    /// The meters that lost power together.
    pub meters: Vec<String>,
}

/// A meter event a gateway reported, as the sync applies it.
pub(crate) struct ReportedEvent<'a> {
    pub gateway: &'a str,
    pub id: &'a str,
    pub meter: &'a str,
    /// The meter's account, if it has one (the flag names it).
    pub account: Option<&'a str>,
    pub kind: &'a str,
    pub at: DateTime<Utc>,
    pub command_id: Option<u32>,
}

/// Stores a meter event once; a new tamper is flagged for the office.
pub(crate) fn record_event(
    tx: &mut dyn Tx,
    event: &ReportedEvent<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let stored = tx.execute(
        "INSERT INTO meter_events (gateway, id, meter, kind, at, command_id, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        &[
            event.gateway.into(),
            event.id.into(),
            event.meter.into(),
            event.kind.into(),
            ts(event.at).into(),
            event.command_id.map(i64::from).into(),
            ts(now).into(),
        ],
    )?;
    if stored == 1 && event.kind.starts_with("tamper") {
        flag(
            tx,
            &format!("tamper:{}/{}", event.gateway, event.id),
            "meter_tamper",
            Some(event.gateway),
            event.account,
            event.at,
            &format!(
                "meter {} reported {} at {}",
                event.meter,
                event.kind.replace('_', " "),
                event.at
            ),
        )?;
    }
    Ok(())
}

/// Stores a gateway's latest word on an outage; the first is flagged for the office.
pub(crate) fn record_outage(tx: &mut dyn Tx, outage: &OutageRow, now: DateTime<Utc>) -> Result<()> {
    let meters = serde_json::to_string(&outage.meters)
        .map_err(|e| CentralError::Invalid(format!("outage meters: {e}")))?;
    tx.execute(
        "INSERT INTO supply_outages (gateway, id, started_at, ended_at, meters, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (gateway, id) DO UPDATE SET started_at = $3, ended_at = $4, meters = $5, updated_at = $6",
        &[
            outage.gateway.as_str().into(),
            outage.id.as_str().into(),
            ts(outage.started_at).into(),
            outage.ended_at.map(ts).into(),
            meters.into(),
            ts(now).into(),
        ],
    )?;
    flag(
        tx,
        &format!("outage:{}/{}", outage.gateway, outage.id),
        "supply_outage",
        Some(&outage.gateway),
        None,
        outage.started_at,
        &format!(
            "{} meters lost power together at {}: a transformer or feeder outage; no household is disconnected while it lasts, and its hours do not count towards the grace",
            outage.meters.len(),
            outage.started_at
        ),
    )
}

/// A meter's events, newest first, at most `limit` (1 to [`MAX_LIST_LIMIT`]).
pub fn meter_events(tx: &mut dyn Tx, serial: &str, limit: i64) -> Result<Vec<MeterEventRow>> {
    check_limit(limit)?;
    tx.query(
        "SELECT id, gateway, meter, kind, at, command_id FROM meter_events WHERE meter = $1
         ORDER BY at DESC, id DESC LIMIT $2",
        &[serial.into(), limit.into()],
    )?
    .iter()
    .map(|r: &Row| {
        Ok(MeterEventRow {
            id: r.text(0)?,
            gateway: r.text(1)?,
            meter: r.text(2)?,
            kind: r.text(3)?,
            at: from_ts(r.int(4)?),
            command_id: r.opt_int(5)?,
        })
    })
    .collect()
}

/// Outages that started at or after `since`, newest first, of one gateway when given, at most
/// `limit` (1 to [`MAX_LIST_LIMIT`]).
pub fn outages(
    tx: &mut dyn Tx,
    gateway: Option<&str>,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<OutageRow>> {
    check_limit(limit)?;
    let rows = match gateway {
        Some(gateway) => tx.query(
            "SELECT id, gateway, started_at, ended_at, meters FROM supply_outages
             WHERE gateway = $1 AND started_at >= $2 ORDER BY started_at DESC, id LIMIT $3",
            &[gateway.into(), ts(since).into(), limit.into()],
        )?,
        None => tx.query(
            "SELECT id, gateway, started_at, ended_at, meters FROM supply_outages
             WHERE started_at >= $1 ORDER BY started_at DESC, gateway, id LIMIT $2",
            &[ts(since).into(), limit.into()],
        )?,
    };
    rows.iter()
        .map(|r| {
            let meters = r.text(4)?;
            Ok(OutageRow {
                id: r.text(0)?,
                gateway: r.text(1)?,
                started_at: from_ts(r.int(2)?),
                ended_at: r.opt_int(3)?.map(from_ts),
                meters: serde_json::from_str(&meters).map_err(|e| {
                    CentralError::Invalid(format!("stored outage meters do not parse: {e}"))
                })?,
            })
        })
        .collect()
}

fn check_limit(limit: i64) -> Result<()> {
    if (1..=MAX_LIST_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(CentralError::Invalid(format!(
            "limit {limit} is out of range: give 1 to {MAX_LIST_LIMIT}"
        )))
    }
}

#[cfg(test)]
mod tests;
