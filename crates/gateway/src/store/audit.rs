//! The transformer meter and its energy audit in the store: the meter (role `dt`, no account), the
//! facts a day's audit needs, and each day's audit, recorded once and queued for central in the
//! same transaction.
use super::outbox::append_outbox;
use super::{from_ts, ts, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_core::rating::RegisterReading;
use gramgrid_net::secrets::Sealer;
use gramgrid_proto::frame::SessionKeys;
use gramgrid_proto::wire::{EnergyAuditDay, UplinkEvent};
use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::HashMap;

/// A transformer meter installed at this gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformerMeter {
    /// Its id in the store.
    pub id: i64,
    /// Its serial.
    pub serial: String,
    /// When it was installed.
    pub installed_at: DateTime<Utc>,
}

/// One consumer meter's facts for an audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerFacts {
    /// Its serial.
    pub serial: String,
    /// Its account.
    pub account: String,
    /// Its service period (removed: None while in service).
    pub installed_at: DateTime<Utc>,
    /// When it left service, if it did.
    pub removed_at: Option<DateTime<Utc>>,
    /// No disconnect command was open for it during the day and its relay is not known open.
    pub connected: bool,
    /// Names of the tamper events it reported in the day, each once.
    pub tamper_kinds: Vec<String>,
    /// Its readings over the span asked for.
    pub readings: Vec<RegisterReading>,
}

/// What the store knows for auditing one transformer over one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditInputs {
    /// The transformer meter's readings over the span asked for.
    pub transformer: Vec<RegisterReading>,
    /// Every consumer meter in service at some time in the day.
    pub consumers: Vec<ConsumerFacts>,
}

/// Installs a transformer meter with its keys (once; a meter of that serial already here keeps its
/// role, and only its keys are replaced).
pub(super) fn install_transformer_in(
    tx: &Transaction<'_>,
    sealer: &Sealer,
    serial: &str,
    installed_at: DateTime<Utc>,
    keys: &SessionKeys,
) -> Result<()> {
    let existing: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, role FROM meters WHERE serial = ?1",
            [serial],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let id = match existing {
        Some((id, role)) if role == "dt" => id,
        Some(_) => {
            tracing::error!(%serial, "central sent a transformer meter that is a household's meter here; ignored");
            return Ok(());
        }
        None => {
            tx.execute(
                "INSERT INTO meters (serial, account, installed_at, role) VALUES (?1, NULL, ?2, 'dt')",
                params![serial, ts(installed_at)],
            )?;
            tx.last_insert_rowid()
        }
    };
    super::link::set_meter_keys_in(tx, sealer, id, keys)
}

impl Store {
    /// Installs a transformer meter with its keys (from central, or a manifest's `role = "dt"`).
    pub fn install_transformer_meter(
        &mut self,
        serial: &str,
        installed_at: DateTime<Utc>,
        keys: &SessionKeys,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        install_transformer_in(&tx, &self.sealer, serial, installed_at, keys)?;
        tx.commit()?;
        self.load_caches()
    }

    /// The transformer meters in service.
    pub fn transformer_meters(&self) -> Result<Vec<TransformerMeter>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, serial, installed_at FROM meters WHERE role = 'dt' AND removed_at IS NULL ORDER BY id",
        )?;
        let rows = statement.query_map([], |r| {
            Ok(TransformerMeter {
                id: r.get(0)?,
                serial: r.get(1)?,
                installed_at: from_ts(r.get(2)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The facts of the day from `day_start` to `day_end` for `transformer`, with the readings of
    /// every meter from `from` to `to` (the day, its neighbours and the days before it).
    pub fn audit_inputs(
        &self,
        transformer: i64,
        (day_start, day_end): (DateTime<Utc>, DateTime<Utc>),
        (from, to): (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<AuditInputs> {
        let mut readings: HashMap<i64, Vec<RegisterReading>> = HashMap::new();
        let mut statement = self.conn.prepare_cached(
            "SELECT meter, at, register_wh, export_wh FROM readings WHERE at BETWEEN ?1 AND ?2",
        )?;
        let rows = statement.query_map(params![ts(from), ts(to)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                RegisterReading {
                    at: from_ts(r.get(1)?),
                    register_wh: r.get(2)?,
                    export_wh: r.get(3)?,
                },
            ))
        })?;
        for row in rows {
            let (meter, reading) = row?;
            readings.entry(meter).or_default().push(reading);
        }
        let mut consumers = Vec::new();
        let mut statement = self.conn.prepare_cached(
            "SELECT m.id, m.serial, m.account, m.installed_at, m.removed_at,
                    m.relay_state != 'disconnected' AND NOT EXISTS (
                        SELECT 1 FROM relay_commands c WHERE c.meter = m.id AND c.action = 'disconnect'
                        AND c.created_at < ?2 AND (c.closed_at IS NULL OR c.closed_at > ?1)),
                    (SELECT group_concat(kind) FROM (SELECT DISTINCT kind FROM meter_events e
                        WHERE e.meter = m.id AND e.kind LIKE 'tamper%' AND e.at BETWEEN ?1 AND ?2 ORDER BY kind))
             FROM meters m
             WHERE m.role = 'consumer' AND m.installed_at < ?2 AND (m.removed_at IS NULL OR m.removed_at > ?1)
             ORDER BY m.serial",
        )?;
        let rows = statement.query_map(params![ts(day_start), ts(day_end)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                ConsumerFacts {
                    serial: r.get(1)?,
                    account: r.get(2)?,
                    installed_at: from_ts(r.get(3)?),
                    removed_at: r.get::<_, Option<i64>>(4)?.map(from_ts),
                    connected: r.get(5)?,
                    tamper_kinds: r
                        .get::<_, Option<String>>(6)?
                        .map(|kinds| kinds.split(',').map(str::to_owned).collect())
                        .unwrap_or_default(),
                    readings: Vec::new(),
                },
            ))
        })?;
        for row in rows {
            let (meter, mut facts) = row?;
            facts.readings = readings.remove(&meter).unwrap_or_default();
            consumers.push(facts);
        }
        Ok(AuditInputs {
            transformer: readings.remove(&transformer).unwrap_or_default(),
            consumers,
        })
    }

    /// The audit with this id, if it is on record.
    pub fn energy_audit(&self, id: &str) -> Result<Option<EnergyAuditDay>> {
        self.conn
            .query_row(
                "SELECT report FROM energy_audits WHERE id = ?1",
                [id],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(|report| {
                serde_json::from_str(&report).map_err(|e| StoreError::Encoding(e.to_string()))
            })
            .transpose()
    }

    /// The earliest time of the readings stored since the last call (None: none), so that a day
    /// already audited is audited again when late readings of it arrive.
    pub fn take_stored_since_audit(&mut self) -> Option<DateTime<Utc>> {
        self.stored_since_audit.take().map(from_ts)
    }

    /// Records a day's audit of `transformer` and queues it for central, both in one transaction:
    /// a new day, or a day audited again whose figures changed (central replaces it by id).
    /// Returns false when the same audit was on record.
    pub fn record_energy_audit(
        &mut self,
        transformer: i64,
        audit: &EnergyAuditDay,
    ) -> Result<bool> {
        if self.energy_audit(&audit.id)?.is_some_and(|stored| {
            EnergyAuditDay {
                at: stored.at,
                ..audit.clone()
            } == stored
        }) {
            return Ok(false);
        }
        let report =
            serde_json::to_string(audit).map_err(|e| StoreError::Encoding(e.to_string()))?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO energy_audits (id, transformer, day, report, at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET report = ?4, at = ?5",
            params![audit.id, transformer, audit.day, report, ts(audit.at)],
        )?;
        append_outbox(&tx, &UplinkEvent::EnergyAudit(audit.clone()))?;
        tx.commit()?;
        Ok(true)
    }

    /// The latest `limit` audits, newest day first.
    pub fn energy_audits(&self, limit: usize) -> Result<Vec<EnergyAuditDay>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT report FROM energy_audits ORDER BY day DESC, id LIMIT ?1")?;
        let rows = statement.query_map([limit as i64], |r| r.get::<_, String>(0))?;
        rows.map(|row| serde_json::from_str(&row?).map_err(|e| StoreError::Encoding(e.to_string())))
            .collect()
    }
}
