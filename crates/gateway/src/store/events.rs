//! What meters report besides readings: their event log (tamper, power fail and restore, relay
//! operated, clock set), and the supply outages the gateway finds in it.
//!
//! An event's id is made from the meter, the kind and the meter's time, so a meter that reports
//! the same event twice stores it once. Each new event goes to the priority outbox in the
//! transaction that stores it (`UplinkEvent::MeterEvent`); a new or changed outage is marked and
//! queued by the next policy pass, its latest state once (`UplinkEvent::SupplyOutage`).
use super::outbox::append_outbox;
use super::{from_ts, serial_of, ts, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_proto::payload::{EventKind, MeterEvent};
use gramgrid_proto::wire::UplinkEvent;
use rusqlite::{params, OptionalExtension};

/// A meter event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMeterEvent {
    /// The meter's id in this store.
    pub meter: i64,
    /// `EventKind::name`: `tamper_magnet`, `power_fail`, ...
    pub kind: String,
    /// When it happened, by the meter's clock.
    pub at: DateTime<Utc>,
    /// For `relay_operated`: the wire command id that moved the relay (0: moved at the meter).
    pub command_id: Option<u32>,
}

impl StoredMeterEvent {
    /// Whether the event is a tamper of any kind.
    pub fn is_tamper(&self) -> bool {
        self.kind.starts_with("tamper")
    }
}

/// A supply outage as stored (and as sent to central).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupplyOutage {
    /// `outage-<gateway>-<unix seconds of its start>`, fixed when first found.
    pub id: String,
    /// The first power failure of the meters that lost power together.
    pub started_at: DateTime<Utc>,
    /// When supply came back to most of them; None while it has not.
    pub ended_at: Option<DateTime<Utc>>,
    /// Serials of the meters that lost power together, sorted.
    pub meters: Vec<String>,
}

impl Store {
    /// Stores the events a meter reported, and queues each new one for central, in one
    /// transaction. Returns the events that were new (a meter may report one again).
    pub fn record_meter_events(
        &mut self,
        meter: i64,
        events: &[MeterEvent],
        received_at: DateTime<Utc>,
    ) -> Result<Vec<StoredMeterEvent>> {
        let tx = self.conn.transaction()?;
        let serial = serial_of(&tx, meter)?;
        let mut new = Vec::new();
        for event in events {
            let at = from_ts(ts(event.at));
            let kind = event.kind.name();
            let command_id = match event.kind {
                EventKind::RelayOperated { command_id } => Some(command_id),
                _ => None,
            };
            let id = format!("ev-{serial}-{kind}-{}", ts(at));
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO meter_events (id, meter, kind, at, command_id, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    id,
                    meter,
                    kind,
                    ts(at),
                    command_id,
                    ts(received_at)
                ])?;
            if inserted == 0 {
                continue;
            }
            append_outbox(
                &tx,
                &UplinkEvent::MeterEvent {
                    id,
                    meter: serial.clone(),
                    kind: kind.to_string(),
                    at,
                    command_id,
                },
            )?;
            new.push(StoredMeterEvent {
                meter,
                kind: kind.to_string(),
                at,
                command_id,
            });
        }
        tx.commit()?;
        Ok(new)
    }

    /// A meter's events, newest first, at most `limit`.
    pub fn meter_events(&self, meter: i64, limit: usize) -> Result<Vec<StoredMeterEvent>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT meter, kind, at, command_id FROM meter_events WHERE meter = ?1
             ORDER BY at DESC, kind LIMIT ?2",
        )?;
        let rows = statement.query_map(params![meter, limit as i64], stored_event)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every meter's power fail and restore events from `since` on, oldest first.
    pub fn power_events_since(&self, since: DateTime<Utc>) -> Result<Vec<StoredMeterEvent>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT meter, kind, at, command_id FROM meter_events
             WHERE at >= ?1 AND kind IN ('power_fail', 'power_restore') ORDER BY at, meter, kind",
        )?;
        let rows = statement.query_map([ts(since)], stored_event)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A meter's serial.
    pub fn meter_serial(&self, meter: i64) -> Result<String> {
        self.conn
            .prepare_cached("SELECT serial FROM meters WHERE id = ?1")?
            .query_row([meter], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::UnknownMeter(meter.to_string()))
    }

    /// Meters in service now (the base of an outage's share).
    pub fn meters_in_service(&self) -> usize {
        self.meters
            .values()
            .filter(|m| m.removed_at.is_none())
            .count()
    }

    /// Outages that had not ended by `since` (going on, or ended after it), oldest first.
    pub fn outages_since(&self, since: DateTime<Utc>) -> Result<Vec<SupplyOutage>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, started_at, ended_at, meters FROM supply_outages
             WHERE ended_at IS NULL OR ended_at > ?1 ORDER BY started_at",
        )?;
        let rows = statement.query_map([ts(since)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut outages = Vec::new();
        for row in rows {
            let (id, started_at, ended_at, meters) = row?;
            outages.push(SupplyOutage {
                id,
                started_at: from_ts(started_at),
                ended_at: ended_at.map(from_ts),
                meters: serde_json::from_str(&meters)
                    .map_err(|e| StoreError::Encoding(format!("supply_outages.meters: {e}")))?,
            });
        }
        Ok(outages)
    }

    /// Stores an outage found or changed and marks it for central ([`Store::queue_outage_updates`]
    /// sends it). Returns false (and writes nothing) when it is stored already exactly so.
    pub fn put_outage(&mut self, outage: &SupplyOutage) -> Result<bool> {
        let meters = serde_json::to_string(&outage.meters)
            .map_err(|e| StoreError::Encoding(e.to_string()))?;
        let tx = self.conn.transaction()?;
        let stored: Option<(i64, Option<i64>, String)> = tx
            .prepare_cached(
                "SELECT started_at, ended_at, meters FROM supply_outages WHERE id = ?1",
            )?
            .query_row([&outage.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let row = (ts(outage.started_at), outage.ended_at.map(ts), meters);
        if stored.as_ref() == Some(&row) {
            return Ok(false);
        }
        tx.prepare_cached(
            "INSERT INTO supply_outages (id, started_at, ended_at, meters, uplink_pending) VALUES (?1, ?2, ?3, ?4, 1)
             ON CONFLICT (id) DO UPDATE SET started_at = ?2, ended_at = ?3, meters = ?4, uplink_pending = 1",
        )?
        .execute(params![outage.id, row.0, row.1, row.2])?;
        tx.commit()?;
        Ok(true)
    }

    /// Queues for central, in one transaction, every outage stored or changed since the last call
    /// (`UplinkEvent::SupplyOutage`, its latest state once). The policy pass calls it, so the
    /// reports of a village's meters after a cut, each refining the outage, cost one record per
    /// pass on the backhaul rather than one per meter. Returns how many were queued.
    pub fn queue_outage_updates(&mut self) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let pending = tx
            .prepare_cached(
                "SELECT id, started_at, ended_at, meters FROM supply_outages WHERE uplink_pending = 1 ORDER BY started_at, id",
            )?
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (id, started_at, ended_at, meters) in &pending {
            let meters: Vec<String> = serde_json::from_str(meters)
                .map_err(|e| StoreError::Encoding(format!("supply_outages.meters: {e}")))?;
            append_outbox(
                &tx,
                &UplinkEvent::SupplyOutage {
                    id: id.clone(),
                    started_at: from_ts(*started_at),
                    ended_at: ended_at.map(from_ts),
                    meters,
                },
            )?;
        }
        tx.execute(
            "UPDATE supply_outages SET uplink_pending = 0 WHERE uplink_pending = 1",
            [],
        )?;
        tx.commit()?;
        Ok(pending.len())
    }
}

fn stored_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMeterEvent> {
    Ok(StoredMeterEvent {
        meter: r.get(0)?,
        kind: r.get(1)?,
        at: from_ts(r.get(2)?),
        command_id: r.get(3)?,
    })
}
