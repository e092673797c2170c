//! Reading ingest at central: store the gateways' readings and rate them with the gateway's code.
//!
//! Central charges are `rating::rate_arrival` over the same readings and the same tariff book as
//! the gateway's, so both sides derive the same energy charges to the paisa whatever the arrival
//! order. Readings arriving in time order (the usual case) are rated from each meter's cursor and
//! written with multi-row inserts; a late reading asks the database for its neighbours.
use super::db::{placeholders, Row, Tx, Value, IN_CHUNK};
use super::{CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::Month;
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_core::rating::{self, Neighbours, RegisterReading};
use gramgrid_core::tariff::{Category, Cost, SegmentEnergy, SegmentKey, TariffBook};
use gramgrid_proto::wire::ReadingBlock;
use std::collections::{BTreeSet, HashMap};

/// What an ingest did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Readings newly stored and rated.
    pub stored: usize,
    /// Readings whose meter and time were already stored: not stored or charged again (a different
    /// register is recorded as a `conflicting_duplicate` anomaly; the stored one is kept).
    pub duplicates: usize,
    /// Refused (before the meter's installation) or billed nothing (register went back).
    pub anomalies: usize,
    /// What the stored readings added to the charges (energy and duty), in paise; a late reading
    /// can add a negative amount.
    pub charged_paise: i64,
    /// Accounts whose balance changed.
    pub accounts: BTreeSet<String>,
}

/// What rating needs to know about a meter.
#[derive(Debug, Clone)]
pub struct MeterInfo {
    /// The account the meter is installed on.
    pub account: String,
    /// The account's tariff category.
    pub category: Category,
    /// When the meter was installed, in UTC seconds (storage time): earlier readings are refused.
    pub installed_at: i64,
    /// The gateway the meter's account is assigned to, if any: only it may send the meter's data.
    pub gateway: Option<String>,
    /// The gateway the account was last moved from, and when (UTC seconds): that gateway's
    /// readings from before then are still taken.
    pub moved_from: Option<(String, i64)>,
    /// The meter whose slabs this one is billed in: itself, or for a replacement a technician
    /// installed, the meter it replaced.
    pub billing: String,
}

/// The account, category, installation time and gateway of each known serial (unknown ones are absent).
pub fn meter_infos(tx: &mut dyn Tx, serials: &[&str]) -> Result<HashMap<String, MeterInfo>> {
    let mut out = HashMap::with_capacity(serials.len());
    for chunk in serials.chunks(IN_CHUNK) {
        let sql = format!(
            "SELECT m.serial, a.id, a.category, m.installed_at, a.gateway, a.moved_from, a.moved_at, COALESCE(m.billing_serial, m.serial)
             FROM meters m JOIN accounts a ON a.id = m.account
             WHERE m.serial IN ({})",
            placeholders(1, chunk.len())
        );
        let keys: Vec<Value> = chunk.iter().map(|s| (*s).into()).collect();
        for row in tx.query(&sql, &keys)? {
            let category = row.text(2)?;
            let info = MeterInfo {
                account: row.text(1)?,
                category: Category::parse(&category)
                    .ok_or_else(|| CentralError::Corrupt(format!("category '{category}'")))?,
                installed_at: row.int(3)?,
                gateway: row.opt_text(4)?,
                moved_from: row.opt_text(5)?.zip(row.opt_int(6)?),
                billing: row.text(7)?,
            };
            out.insert(row.text(0)?, info);
        }
    }
    Ok(out)
}

/// Stores a meter's installation register as its first reading (charging nothing), as the
/// gateway does, so both rate the first span from the same baseline.
pub fn install_baseline(
    tx: &mut dyn Tx,
    serial: &str,
    at: DateTime<Utc>,
    register_wh: i64,
) -> Result<()> {
    // Its export register was not read: the span from it credits no export.
    let export: Value = rating::EXPORT_UNKNOWN.into();
    tx.execute(
        "INSERT INTO readings (meter, at, register_wh, export_wh, charge_paise) VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING",
        &[serial.into(), ts(at).into(), register_wh.into(), export.clone()],
    )?;
    tx.execute(
        "INSERT INTO meter_cursor (meter, at, register_wh, export_wh) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[serial.into(), ts(at).into(), register_wh.into(), export],
    )?;
    Ok(())
}

type SegmentRow = (String, i64, String);

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    energy: SegmentEnergy,
    cost: Cost,
}

impl Totals {
    /// Totals from a row's `energy_wh, tod_weight, energy_paise, tod_paise, duty_paise,
    /// export_wh` from column `first` on.
    fn from_row(r: &Row, first: usize) -> Result<Totals> {
        Ok(Totals {
            energy: SegmentEnergy {
                wh: r.int(first)?,
                tod_weight: r.int(first + 1)?,
                export_wh: r.int(first + 5)?,
            },
            cost: Cost {
                energy_paise: r.int(first + 2)?,
                tod_paise: r.int(first + 3)?,
                duty_paise: r.int(first + 4)?,
            },
        })
    }
}

/// Writes accumulated in the transaction, flushed in bulk.
#[derive(Default)]
struct Pending {
    readings: Vec<Vec<Value>>,
    /// Each meter's latest reading: loaded for the batch's meters up front, then kept current.
    cursors: HashMap<String, Option<RegisterReading>>,
    /// Segment totals: every stored row of the batch's meters from `first_month` on is loaded up
    /// front, so a row that is absent here (and not older) is zero.
    segments: HashMap<SegmentRow, Totals>,
    first_month: i64,
}

impl Pending {
    fn flush_readings(&mut self, tx: &mut dyn Tx) -> Result<()> {
        tx.insert_many(
            "readings (meter, at, register_wh, export_wh, charge_paise)",
            5,
            &self.readings,
            "ON CONFLICT DO NOTHING",
        )?;
        self.readings.clear();
        Ok(())
    }

    fn flush(mut self, tx: &mut dyn Tx) -> Result<()> {
        self.flush_readings(tx)?;
        let cursors: Vec<Vec<Value>> = self
            .cursors
            .into_iter()
            .filter_map(|(meter, r)| {
                r.map(|r| {
                    vec![
                        meter.into(),
                        ts(r.at).into(),
                        r.register_wh.into(),
                        r.export_wh.into(),
                    ]
                })
            })
            .collect();
        tx.insert_many(
            "meter_cursor (meter, at, register_wh, export_wh)",
            4,
            &cursors,
            "ON CONFLICT (meter) DO UPDATE SET at = excluded.at, register_wh = excluded.register_wh,
             export_wh = excluded.export_wh",
        )?;
        let segments: Vec<Vec<Value>> = self
            .segments
            .into_iter()
            .map(|((meter, month, version), t)| {
                vec![
                    meter.into(),
                    month.into(),
                    version.into(),
                    t.energy.wh.into(),
                    t.energy.tod_weight.into(),
                    t.cost.energy_paise.into(),
                    t.cost.tod_paise.into(),
                    t.cost.duty_paise.into(),
                    t.energy.export_wh.into(),
                ]
            })
            .collect();
        tx.insert_many(
            "segment_energy (meter, month, version, energy_wh, tod_weight, energy_paise, tod_paise, duty_paise, export_wh)",
            9,
            &segments,
            "ON CONFLICT (meter, month, version) DO UPDATE SET energy_wh = excluded.energy_wh,
             tod_weight = excluded.tod_weight, energy_paise = excluded.energy_paise,
             tod_paise = excluded.tod_paise, duty_paise = excluded.duty_paise,
             export_wh = excluded.export_wh",
        )?;
        Ok(())
    }

    /// Loads the cursors and segment totals of `meters` with a few `IN (...)` queries.
    fn load(tx: &mut dyn Tx, meters: &[&str], first_month: i64) -> Result<Pending> {
        let mut pending = Pending {
            first_month,
            ..Pending::default()
        };
        for meter in meters {
            pending.cursors.insert((*meter).to_owned(), None);
        }
        for chunk in meters.chunks(IN_CHUNK) {
            let keys: Vec<Value> = chunk.iter().map(|s| (*s).into()).collect();
            let sql = format!(
                "SELECT meter, at, register_wh, export_wh FROM meter_cursor WHERE meter IN ({})",
                placeholders(1, chunk.len())
            );
            for r in tx.query(&sql, &keys)? {
                let reading = RegisterReading {
                    at: from_ts(r.int(1)?),
                    register_wh: r.int(2)?,
                    export_wh: r.int(3)?,
                };
                pending.cursors.insert(r.text(0)?, Some(reading));
            }
            let sql = format!(
                "SELECT meter, month, version, energy_wh, tod_weight, energy_paise, tod_paise, duty_paise, export_wh
                 FROM segment_energy WHERE month >= $1 AND meter IN ({})",
                placeholders(2, chunk.len())
            );
            let mut params = vec![Value::Int(first_month)];
            params.extend(keys);
            for r in tx.query(&sql, &params)? {
                let totals = Totals::from_row(&r, 3)?;
                pending
                    .segments
                    .insert((r.text(0)?, r.int(1)?, r.text(2)?), totals);
            }
        }
        Ok(pending)
    }

    fn segment(&mut self, tx: &mut dyn Tx, row: &SegmentRow) -> Result<Totals> {
        if let Some(totals) = self.segments.get(row) {
            return Ok(*totals);
        }
        if row.1 >= self.first_month && self.cursors.contains_key(&row.0) {
            return Ok(Totals::default());
        }
        let totals = tx
            .query_opt(
                "SELECT energy_wh, tod_weight, energy_paise, tod_paise, duty_paise, export_wh FROM segment_energy
                 WHERE meter = $1 AND month = $2 AND version = $3",
                &[row.0.as_str().into(), row.1.into(), row.2.as_str().into()],
            )?
            .map(|r| Totals::from_row(&r, 0))
            .transpose()?
            .unwrap_or_default();
        self.segments.insert(row.clone(), totals);
        Ok(totals)
    }
}

/// Records an anomaly once (by id).
pub(crate) fn record_anomaly(
    tx: &mut dyn Tx,
    id: &str,
    gateway: &str,
    meter: Option<&str>,
    kind: &str,
    detail: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO anomalies (id, gateway, meter, kind, detail, at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        &[id.into(), gateway.into(), meter.into(), kind.into(), detail.into(), ts(at).into()],
    )?;
    Ok(())
}

/// The import and export registers stored for the meter at `at`, if any.
fn register_at(tx: &mut dyn Tx, meter: &str, at: i64) -> Result<Option<(i64, i64)>> {
    tx.query_opt(
        "SELECT register_wh, export_wh FROM readings WHERE meter = $1 AND at = $2",
        &[meter.into(), at.into()],
    )?
    .map(|r| Ok((r.int(0)?, r.int(1)?)))
    .transpose()
}

fn late_neighbours(tx: &mut dyn Tx, meter: &str, at: i64) -> Result<Neighbours> {
    let read = |row: Option<super::db::Row>| -> Result<Option<RegisterReading>> {
        row.map(|r| {
            Ok(RegisterReading {
                at: from_ts(r.int(0)?),
                register_wh: r.int(1)?,
                export_wh: r.int(2)?,
            })
        })
        .transpose()
    };
    let previous = read(tx.query_opt(
        "SELECT at, register_wh, export_wh FROM readings WHERE meter = $1 AND at < $2 ORDER BY at DESC LIMIT 1",
        &[meter.into(), at.into()],
    )?)?;
    let next = read(tx.query_opt(
        "SELECT at, register_wh, export_wh FROM readings WHERE meter = $1 AND at > $2 ORDER BY at LIMIT 1",
        &[meter.into(), at.into()],
    )?)?;
    Ok(Neighbours { previous, next })
}

/// Stores and rates blocks of readings from `gateway`, whose meters the caller has checked, with
/// the export registers of those that have one (`exports`, by meter and time; absent means 0).
pub fn ingest(
    tx: &mut dyn Tx,
    book: &TariffBook,
    gateway: &str,
    blocks: &[(MeterInfo, &ReadingBlock)],
    exports: &HashMap<(&str, i64), i64>,
) -> Result<IngestReport> {
    let mut report = IngestReport::default();
    let meters: Vec<&str> = blocks.iter().map(|(_, b)| b.meter.as_str()).collect();
    let first_month = blocks
        .iter()
        .flat_map(|(_, b)| b.readings().map(|(at, _)| at))
        .min()
        .map_or(0, |at| Month::containing(from_ts(at)).index());
    let mut pending = Pending::load(tx, &meters, first_month)?;
    for (info, block) in blocks {
        let meter = block.meter.as_str();
        for (at, register_wh) in block.readings() {
            let export_wh = exports.get(&(meter, at)).copied().unwrap_or(0);
            let reading = RegisterReading {
                at: from_ts(at),
                register_wh,
                export_wh,
            };
            if at < info.installed_at {
                record_anomaly(
                    tx,
                    &format!("{meter}:{at}:outside_service"),
                    gateway,
                    Some(meter),
                    "outside_service",
                    "reading before the meter's installation",
                    reading.at,
                )?;
                report.anomalies += 1;
                continue;
            }
            let latest = pending.cursors.get(meter).copied().flatten();
            let neighbours = match latest {
                None => Neighbours::default(),
                Some(latest) if latest.at < reading.at => Neighbours {
                    previous: Some(latest),
                    next: None,
                },
                Some(_) => {
                    // A late or repeated reading: the database must see this batch's rows.
                    pending.flush_readings(tx)?;
                    if let Some((stored, stored_export)) = register_at(tx, meter, at)? {
                        report.duplicates += 1;
                        // An installation baseline's export was not read: any export matches it.
                        let same_export =
                            stored_export == export_wh || stored_export == rating::EXPORT_UNKNOWN;
                        if stored != register_wh || !same_export {
                            record_anomaly(tx, &format!("{meter}:{at}:conflicting_duplicate:{register_wh}:{export_wh}"), gateway, Some(meter),
                                "conflicting_duplicate", &format!("stored registers {stored} Wh in, {stored_export} Wh out kept; a second reading said {register_wh} Wh in, {export_wh} Wh out"), reading.at)?;
                        }
                        continue;
                    }
                    late_neighbours(tx, meter, at)?
                }
            };
            let mut rows: Vec<(SegmentKey, SegmentRow)> = Vec::with_capacity(2);
            for end in std::iter::once(reading.at).chain(neighbours.next.map(|n| n.at)) {
                if let Some(segment) = book.segment_at(info.category, end) {
                    let key = segment.key();
                    let row = (
                        info.billing.clone(),
                        key.month.index(),
                        key.version_id.clone(),
                    );
                    if !rows.iter().any(|(_, r)| *r == row) {
                        rows.push((key, row));
                    }
                }
            }
            let mut energy = Vec::with_capacity(rows.len());
            for (key, row) in &rows {
                energy.push((key.clone(), pending.segment(tx, row)?.energy));
            }
            let rated = rating::rate_arrival(book, info.category, neighbours, reading, |key| {
                energy
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or(SegmentEnergy::default(), |(_, energy)| *energy)
            })?;
            for change in &rated.changes {
                if let Some((_, row)) = rows.iter().find(|(k, _)| *k == change.key) {
                    let totals = pending.segments.entry(row.clone()).or_default();
                    totals.energy = totals.energy + change.delta;
                    totals.cost = totals.cost + change.delta_cost;
                }
            }
            for anomaly in &rated.anomalies {
                record_anomaly(
                    tx,
                    &format!("{meter}:{at}:register_went_back"),
                    gateway,
                    Some(meter),
                    "register_went_back",
                    &format!("{anomaly:?}"),
                    reading.at,
                )?;
                report.anomalies += 1;
            }
            let charge = rated.charge.total();
            pending.readings.push(vec![
                meter.into(),
                at.into(),
                register_wh.into(),
                export_wh.into(),
                charge.into(),
            ]);
            if latest.is_none_or(|c| c.at < reading.at) {
                pending.cursors.insert(meter.to_owned(), Some(reading));
            }
            report.stored += 1;
            report.charged_paise += charge;
            report.accounts.insert(info.account.clone());
        }
    }
    pending.flush(tx)?;
    Ok(report)
}
