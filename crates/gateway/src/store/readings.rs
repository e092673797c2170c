//! Reading ingest: store a batch of interval readings and rate them in one transaction.
use super::{from_ts, ts, MeterInfo, Result, Store};
use chrono::{DateTime, Utc};
use gramgrid_core::rating::{self, Neighbours, RegisterReading};
use gramgrid_core::tariff::{Cost, SegmentEnergy, SegmentKey, TariffBook};
use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::HashMap;

/// One interval reading as received from a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterReading {
    /// The meter's id in the store.
    pub meter: i64,
    /// When the register was read (UTC; for a meter report, the end of the interval); stored to the
    /// whole second.
    pub at: DateTime<Utc>,
    /// The cumulative import energy register at `at` (Wh).
    pub register_wh: i64,
    /// The cumulative export energy register at `at` (Wh; 0 for a meter without one).
    pub export_wh: i64,
}

impl MeterReading {
    fn register(&self) -> RegisterReading {
        RegisterReading {
            at: self.at,
            register_wh: self.register_wh,
            export_wh: self.export_wh,
        }
    }
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// New readings stored and rated.
    pub stored: usize,
    /// Already stored with the same register value: ignored.
    pub duplicates: usize,
    /// Already stored with a different register value: the first is kept, an anomaly is recorded.
    pub conflicts: usize,
    /// Unknown meter, before installation or after removal: not stored, an anomaly is recorded.
    pub refused: usize,
    /// Stored, but a span billed nothing (register went back): an anomaly is recorded.
    pub anomalies: usize,
    /// What the batch charged, energy plus duty.
    pub charged_paise: i64,
}

/// Key of a `segment_energy` row: (month index, version id, billing meter: the meter itself, or
/// for a replacement the meter it replaced).
pub(super) type SegmentRow = (i64, i64, i64);

/// Energy and cost accumulated in one segment by one meter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SegmentTotals {
    energy: SegmentEnergy,
    cost: Cost,
}

impl SegmentTotals {
    /// Totals from a row's `energy_wh, tod_weight, energy_paise, tod_paise, duty_paise,
    /// export_wh` from column `first` on.
    fn from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<SegmentTotals> {
        Ok(SegmentTotals {
            energy: SegmentEnergy {
                wh: r.get(first)?,
                tod_weight: r.get(first + 1)?,
                export_wh: r.get(first + 5)?,
            },
            cost: Cost {
                energy_paise: r.get(first + 2)?,
                tod_paise: r.get(first + 3)?,
                duty_paise: r.get(first + 4)?,
            },
        })
    }
}

/// Changes made inside the open transaction; merged into the store's caches only after commit.
#[derive(Default)]
struct Overlay {
    cursors: HashMap<i64, RegisterReading>,
    /// The earliest `at` of the readings stored in this batch (for the bulk upload lane).
    earliest_stored: Option<i64>,
    segments: HashMap<SegmentRow, SegmentTotals>,
}

/// What rating a consumer meter's reading needs besides the open transaction.
struct Billing<'a> {
    book: &'a TariffBook,
    info: &'a MeterInfo,
    versions: &'a HashMap<String, i64>,
    segments: &'a HashMap<SegmentRow, SegmentTotals>,
}

impl Billing<'_> {
    /// Rates a new reading between its neighbours into the overlay's segment totals; returns what
    /// its arrival charged (energy plus duty).
    fn rate(
        &self,
        tx: &Transaction<'_>,
        overlay: &mut Overlay,
        reading: &MeterReading,
        neighbours: Neighbours,
        report: &mut IngestReport,
    ) -> Result<i64> {
        let rows = segment_rows(self.book, self.info, self.versions, reading, neighbours);
        for (_, row) in &rows {
            load_segment(tx, self.segments, overlay, *row)?;
        }
        let register = reading.register();
        let rated =
            rating::rate_arrival(self.book, self.info.category, neighbours, register, |key| {
                rows.iter()
                    .find(|(k, _)| k == key)
                    .and_then(|(_, row)| overlay.segments.get(row))
                    .map_or(SegmentEnergy::default(), |t| t.energy)
            })?;
        for change in &rated.changes {
            let Some((_, row)) = rows.iter().find(|(k, _)| *k == change.key) else {
                continue;
            };
            let totals = overlay.segments.entry(*row).or_default();
            totals.energy = totals.energy + change.delta;
            totals.cost = totals.cost + change.delta_cost;
        }
        for anomaly in &rated.anomalies {
            record_anomaly(tx, reading, "register_went_back", &format!("{anomaly:?}"))?;
            report.anomalies += 1;
        }
        Ok(rated.charge.total())
    }
}

impl Store {
    /// Stores and rates a batch of readings in one durable transaction.
    pub fn ingest(&mut self, book: &TariffBook, batch: &[MeterReading]) -> Result<IngestReport> {
        self.register_versions(book)?;
        let mut report = IngestReport::default();
        let mut overlay = Overlay::default();
        let mut next_seq = self.next_reading_seq;
        let tx = self.conn.transaction()?;
        for reading in batch {
            // Storage keeps whole seconds; compare at that resolution, or a reading with a
            // fraction of a second would look newer than its own stored copy.
            let reading = &MeterReading {
                at: from_ts(ts(reading.at)),
                ..*reading
            };
            let info = self.meters.get(&reading.meter);
            let Some(service) = info
                .map(|i| (i.installed_at, i.removed_at))
                .or_else(|| self.transformers.get(&reading.meter).copied())
            else {
                refuse(
                    &tx,
                    reading,
                    "unknown_meter",
                    "no such meter on this gateway",
                    &mut report,
                )?;
                continue;
            };
            // An installation baseline handed over by central carries an unknown export.
            let export = Some(reading.export_wh).filter(|e| *e != rating::EXPORT_UNKNOWN);
            if let Some(register) = std::iter::once(reading.register_wh)
                .chain(export)
                .find(|r| !(0..=rating::MAX_REGISTER_WH).contains(r))
            {
                let why = format!(
                    "register {register} Wh is outside 0 to {} Wh: not a reading a meter can make",
                    rating::MAX_REGISTER_WH
                );
                refuse(&tx, reading, "implausible_register", &why, &mut report)?;
                continue;
            }
            let at = ts(reading.at);
            let (installed_at, removed_at) = service;
            if at < installed_at || removed_at.is_some_and(|removed| at > removed) {
                refuse(
                    &tx,
                    reading,
                    "outside_service",
                    "reading outside the meter's service period",
                    &mut report,
                )?;
                continue;
            }
            let cursor = overlay
                .cursors
                .get(&reading.meter)
                .or(self.cursors.get(&reading.meter))
                .copied();
            let neighbours = match cursor {
                Some(latest) if latest.at < reading.at => Neighbours {
                    previous: Some(latest),
                    next: None,
                },
                None => Neighbours::default(),
                Some(_) => match existing_register(&tx, reading)? {
                    Some(stored) => {
                        note_duplicate(&tx, reading, stored, &mut report)?;
                        continue;
                    }
                    None => late_neighbours(&tx, reading)?,
                },
            };
            let register = reading.register();
            // A transformer meter's readings are stored for the energy audit, never billed.
            let charge = match info {
                Some(info) => {
                    let billing = Billing {
                        book,
                        info,
                        versions: &self.versions,
                        segments: &self.segments,
                    };
                    billing.rate(&tx, &mut overlay, reading, neighbours, &mut report)?
                }
                None => 0,
            };
            tx.prepare_cached(
                "INSERT INTO readings (at, meter, register_wh, export_wh, charge_paise, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![at, reading.meter, reading.register_wh, reading.export_wh, charge, next_seq])?;
            next_seq += 1;
            overlay.earliest_stored = Some(overlay.earliest_stored.map_or(at, |e: i64| e.min(at)));
            if cursor.is_none_or(|c| c.at < reading.at) {
                overlay.cursors.insert(reading.meter, register);
            }
            report.stored += 1;
            report.charged_paise += charge;
        }
        write_overlay(&tx, &overlay)?;
        tx.commit()?;
        self.next_reading_seq = next_seq;
        if let Some(at) = overlay.earliest_stored {
            self.stored_since_audit = Some(self.stored_since_audit.map_or(at, |s| s.min(at)));
        }
        self.cursors.extend(overlay.cursors);
        self.segments.extend(overlay.segments);
        Ok(report)
    }

    /// Gives every version in the book a small integer id (committed on its own, before ingest).
    fn register_versions(&mut self, book: &TariffBook) -> Result<()> {
        if book
            .versions()
            .iter()
            .all(|v| self.versions.contains_key(&v.id))
        {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        let mut ids = HashMap::new();
        for version in book.versions() {
            tx.execute(
                "INSERT OR IGNORE INTO tariff_versions (name) VALUES (?1)",
                [&version.id],
            )?;
            let id: i64 = tx.query_row(
                "SELECT id FROM tariff_versions WHERE name = ?1",
                [&version.id],
                |r| r.get(0),
            )?;
            ids.insert(version.id.clone(), id);
        }
        tx.commit()?;
        self.versions.extend(ids);
        Ok(())
    }

    /// Checks the database file (SQLite `quick_check`) and the derived tables against the readings
    /// they are derived from: for every billing meter (a meter and its replacements), the
    /// charges stored with its readings add up to its segment totals, and each segment's stored cost
    /// is the tariff's cost of its energy. Returns the problems found (empty when consistent).
    pub fn verify(&self, book: &TariffBook) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let quick_check: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if quick_check != "ok" {
            problems.push(format!(
                "SQLite quick_check: {quick_check}; restore the latest backup"
            ));
        }
        let mut sums = self.conn.prepare(
            "SELECT r.meter, r.total, COALESCE(s.total, 0) FROM
               (SELECT COALESCE(m.billing_meter, m.id) AS meter, SUM(r.charge_paise) AS total
                FROM readings r JOIN meters m ON m.id = r.meter GROUP BY 1) r
             LEFT JOIN (SELECT meter, SUM(energy_paise + tod_paise + duty_paise) AS total FROM segment_energy GROUP BY meter) s
               ON s.meter = r.meter WHERE r.total != COALESCE(s.total, 0)",
        )?;
        for row in sums.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })? {
            let (meter, readings, segments) = row?;
            problems.push(format!(
                "meter {meter}: readings charged {readings} paise, segments hold {segments}"
            ));
        }
        let mut segments = self.conn.prepare(
            "SELECT s.month, v.name, s.meter, s.energy_wh, s.tod_weight, s.energy_paise, s.tod_paise, s.duty_paise, s.export_wh
             FROM segment_energy s JOIN tariff_versions v ON v.id = s.version",
        )?;
        let rows = segments.query_map([], |r| {
            let key = SegmentKey {
                month: gramgrid_core::civil::Month::from_index(r.get(0)?),
                version_id: r.get(1)?,
            };
            Ok((key, r.get::<_, i64>(2)?, SegmentTotals::from_row(r, 3)?))
        })?;
        for row in rows {
            let (key, meter, totals) = row?;
            let category = self.meters.get(&meter).map(|m| m.category);
            let expected = category
                .and_then(|c| book.segment(c, &key))
                .map(|s| s.cost_of(totals.energy));
            if expected != Some(totals.cost) {
                problems.push(format!(
                    "meter {meter} {} {}: stored cost does not match {} Wh",
                    key.month, key.version_id, totals.energy.wh
                ));
            }
        }
        Ok(problems)
    }
}

fn refuse(
    tx: &Transaction<'_>,
    reading: &MeterReading,
    kind: &str,
    why: &str,
    report: &mut IngestReport,
) -> Result<()> {
    record_anomaly(tx, reading, kind, why)?;
    report.refused += 1;
    Ok(())
}

fn record_anomaly(
    tx: &Transaction<'_>,
    reading: &MeterReading,
    kind: &str,
    detail: &str,
) -> Result<()> {
    tracing::warn!(meter = reading.meter, at = %reading.at, kind, detail, "reading anomaly");
    super::anomalies::anomaly_in(tx, Some(reading.meter), kind, detail, reading.at)
}

/// The import and export registers already stored for the reading's meter and time, if any.
fn existing_register(tx: &Transaction<'_>, reading: &MeterReading) -> Result<Option<(i64, i64)>> {
    Ok(tx
        .prepare_cached("SELECT register_wh, export_wh FROM readings WHERE at = ?1 AND meter = ?2")?
        .query_row(params![ts(reading.at), reading.meter], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

fn note_duplicate(
    tx: &Transaction<'_>,
    reading: &MeterReading,
    (stored, stored_export): (i64, i64),
    report: &mut IngestReport,
) -> Result<()> {
    // An installation baseline's export was not read: any export matches it.
    let same_export = stored_export == reading.export_wh || stored_export == rating::EXPORT_UNKNOWN;
    if stored == reading.register_wh && same_export {
        report.duplicates += 1;
        return Ok(());
    }
    report.conflicts += 1;
    let detail = format!(
        "stored registers {stored} Wh in, {stored_export} Wh out kept; a second reading said {} Wh in, {} Wh out",
        reading.register_wh, reading.export_wh
    );
    record_anomaly(tx, reading, "conflicting_duplicate", &detail)
}

/// The stored readings of the same meter just before and just after a late reading.
fn late_neighbours(tx: &Transaction<'_>, reading: &MeterReading) -> Result<Neighbours> {
    let as_reading = |r: &rusqlite::Row<'_>| -> rusqlite::Result<RegisterReading> {
        Ok(RegisterReading {
            at: from_ts(r.get(0)?),
            register_wh: r.get(1)?,
            export_wh: r.get(2)?,
        })
    };
    let at = ts(reading.at);
    let previous = tx
        .prepare_cached("SELECT at, register_wh, export_wh FROM readings WHERE meter = ?1 AND at < ?2 ORDER BY at DESC LIMIT 1")?
        .query_row(params![reading.meter, at], as_reading)
        .optional()?;
    let next = tx
        .prepare_cached(
            "SELECT at, register_wh, export_wh FROM readings WHERE meter = ?1 AND at > ?2 ORDER BY at LIMIT 1",
        )?
        .query_row(params![reading.meter, at], as_reading)
        .optional()?;
    Ok(Neighbours { previous, next })
}

/// The segments a reading's arrival can touch (its own and its next neighbour's), with their rows.
fn segment_rows(
    book: &TariffBook,
    info: &MeterInfo,
    versions: &HashMap<String, i64>,
    reading: &MeterReading,
    neighbours: Neighbours,
) -> Vec<(SegmentKey, SegmentRow)> {
    let mut rows = Vec::with_capacity(2);
    for at in std::iter::once(reading.at).chain(neighbours.next.map(|n| n.at)) {
        let Some(segment) = book.segment_at(info.category, at) else {
            continue;
        };
        let key = segment.key();
        let Some(version) = versions.get(&key.version_id) else {
            continue;
        };
        let row = (key.month.index(), *version, info.billing);
        if !rows.iter().any(|(_, r)| *r == row) {
            rows.push((key, row));
        }
    }
    rows
}

/// Makes sure a segment row is in the overlay, read from the cache or the database.
fn load_segment(
    tx: &Transaction<'_>,
    cache: &HashMap<SegmentRow, SegmentTotals>,
    overlay: &mut Overlay,
    row: SegmentRow,
) -> Result<()> {
    if overlay.segments.contains_key(&row) {
        return Ok(());
    }
    let totals = match cache.get(&row) {
        Some(totals) => *totals,
        None => tx
            .prepare_cached(
                "SELECT energy_wh, tod_weight, energy_paise, tod_paise, duty_paise, export_wh FROM segment_energy
                 WHERE month = ?1 AND version = ?2 AND meter = ?3",
            )?
            .query_row(params![row.0, row.1, row.2], |r| SegmentTotals::from_row(r, 0))
            .optional()?
            .unwrap_or_default(),
    };
    overlay.segments.insert(row, totals);
    Ok(())
}

fn write_overlay(tx: &Transaction<'_>, overlay: &Overlay) -> Result<()> {
    if let Some(at) = overlay.earliest_stored {
        super::sync::note_unacked_reading(tx, at)?;
    }
    let mut cursor = tx.prepare_cached(
        "INSERT INTO meter_cursor (meter, at, register_wh, export_wh) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (meter) DO UPDATE SET at = ?2, register_wh = ?3, export_wh = ?4",
    )?;
    for (meter, reading) in &overlay.cursors {
        cursor.execute(params![
            meter,
            ts(reading.at),
            reading.register_wh,
            reading.export_wh
        ])?;
    }
    let mut segment = tx.prepare_cached(
        "INSERT INTO segment_energy (month, version, meter, energy_wh, tod_weight, energy_paise, tod_paise, duty_paise, export_wh)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (month, version, meter) DO UPDATE SET
           energy_wh = ?4, tod_weight = ?5, energy_paise = ?6, tod_paise = ?7, duty_paise = ?8, export_wh = ?9",
    )?;
    for ((month, version, meter), totals) in &overlay.segments {
        segment.execute(params![
            month,
            version,
            meter,
            totals.energy.wh,
            totals.energy.tod_weight,
            totals.cost.energy_paise,
            totals.cost.tod_paise,
            totals.cost.duty_paise,
            totals.energy.export_wh
        ])?;
    }
    Ok(())
}
