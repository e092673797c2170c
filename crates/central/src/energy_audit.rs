//! The gateways' daily energy audits of their distribution transformers (`UplinkEvent::EnergyAudit`): stored by id (a re-audit replaces the day), a flagged day flagged `energy_loss`; read by `GET /api/v1/energy-audits`, `GET /api/v1/energy-audits/villages` and `gramgrid central energy-audit`.
//!
//! A gateway compares what its transformer meter delivered with what its consumers' meters
//! recorded, interval by interval, and on a day with more loss than the technical allowance ranks
//! the meters the evidence points to (docs/energy-audit.md). Central keeps the days so the office
//! can compare villages; the suspects are evidence for an inspection, never an accusation.
use crate::db::{Row, Tx};
use crate::flags::flag;
use crate::{CentralError, Result};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_proto::wire::{AuditReason, AuditSuspect, EnergyAuditDay};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Most audit days one listing returns.
pub const MAX_AUDITS_LIMIT: i64 = 1000;
/// Audit days one listing returns when the request does not say.
pub const DEFAULT_AUDITS_LIMIT: i64 = 100;
/// Longest range of days one request may cover.
pub const MAX_RANGE_DAYS: i64 = 366;
/// Days a range covers when the request gives no start: the last 30.
pub const DEFAULT_RANGE_DAYS: i64 = 30;

/// One kind of evidence against a meter on a flagged day, as central stores and shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The meter reported tamper events that day.
    Tamper {
        /// Their kinds (`tamper_magnet`, ...), each once.
        events: Vec<String>,
    },
    /// The meter recorded almost nothing all day while connected and supplied.
    NearZero {
        /// What it recorded in the compared intervals, in Wh.
        recorded_wh: i64,
    },
    /// In the intervals of most loss beyond the allowance it recorded at most half its usual.
    FallsWithLoss {
        /// What it usually records in those intervals, in Wh.
        usual_wh: i64,
        /// What it recorded in them that day, in Wh.
        recorded_wh: i64,
    },
}

impl From<&AuditReason> for Reason {
    fn from(reason: &AuditReason) -> Reason {
        match reason {
            AuditReason::Tamper { kinds } => Reason::Tamper {
                events: kinds.clone(),
            },
            AuditReason::NearZero { recorded_wh } => Reason::NearZero {
                recorded_wh: *recorded_wh,
            },
            AuditReason::FallsWithLoss {
                usual_wh,
                recorded_wh,
            } => Reason::FallsWithLoss {
                usual_wh: *usual_wh,
                recorded_wh: *recorded_wh,
            },
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Tamper { events } => write!(f, "tamper events: {}", events.join(", ")),
            Reason::NearZero { recorded_wh } => write!(
                f,
                "recorded {} kWh all day while connected",
                kwh(*recorded_wh)
            ),
            Reason::FallsWithLoss {
                usual_wh,
                recorded_wh,
            } => write!(
                f,
                "recorded {} kWh in the hours of most loss, against {} kWh usually",
                kwh(*recorded_wh),
                kwh(*usual_wh)
            ),
        }
    }
}

/// A meter the evidence points to on a flagged day, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredSuspect {
    meter: String,
    account: String,
    score: u32,
    reasons: Vec<Reason>,
}

impl From<&AuditSuspect> for StoredSuspect {
    fn from(suspect: &AuditSuspect) -> StoredSuspect {
        StoredSuspect {
            meter: suspect.meter.clone(),
            account: suspect.account.clone(),
            score: suspect.score,
            reasons: suspect.reasons.iter().map(Reason::from).collect(),
        }
    }
}

/// A meter the evidence points to on a flagged day: evidence for an inspection, never an
/// accusation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suspect {
    /// The meter's serial.
    pub meter: String,
    /// Its account.
    pub account: String,
    /// The gateway's ranking score, 0 to 100 (higher: more of the evidence points here).
    pub score: u32,
    /// The evidence, one entry per kind.
    pub reasons: Vec<Reason>,
    /// The same evidence in words, one line per reason.
    pub why: Vec<String>,
}

impl From<StoredSuspect> for Suspect {
    fn from(stored: StoredSuspect) -> Suspect {
        Suspect {
            why: stored.reasons.iter().map(ToString::to_string).collect(),
            meter: stored.meter,
            account: stored.account,
            score: stored.score,
            reasons: stored.reasons,
        }
    }
}

/// One transformer's audited local day, as the gateway last sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditDay {
    /// `<gateway>:audit:<transformer>:<day>`.
    pub id: String,
    /// The gateway that audited it.
    pub gateway: String,
    /// The transformer meter's serial.
    pub transformer: String,
    /// The local (IST) day, `YYYY-MM-DD`.
    pub day: String,
    /// 15-minute intervals compared (the figures cover these only).
    pub intervals_compared: i64,
    /// Consumer meters compared.
    pub meters: i64,
    /// Energy the transformer delivered in the compared intervals, in Wh.
    pub transformer_wh: i64,
    /// Energy the consumers' meters recorded in them, in Wh.
    pub consumers_wh: i64,
    /// `transformer_wh - consumers_wh`, in Wh.
    pub loss_wh: i64,
    /// The loss in thousandths of `transformer_wh` (null when the transformer delivered nothing).
    pub loss_permille: Option<i64>,
    /// The technical loss allowed for, in Wh.
    pub allowance_wh: i64,
    /// Whether the loss beyond the allowance was over the gateway's threshold.
    pub flagged: bool,
    /// The loss of each of the day's 15-minute intervals in order, in Wh; null where the
    /// interval was not compared.
    pub interval_loss_wh: Vec<Option<i64>>,
    /// On a flagged day, the meters the evidence points to, most likely first.
    pub suspects: Vec<Suspect>,
    /// When the gateway made the audit (its clock).
    pub at: DateTime<Utc>,
    /// When central received this version of it.
    pub received_at: DateTime<Utc>,
}

/// One village's (gateway's) losses over a range of days, for comparing villages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VillageLoss {
    /// The gateway.
    pub gateway: String,
    /// Days audited in the range (a day of two transformers counts once).
    pub days: i64,
    /// Days of them flagged.
    pub flagged_days: i64,
    /// Energy its transformers delivered in the compared intervals, in Wh.
    pub transformer_wh: i64,
    /// Energy its consumers' meters recorded in them, in Wh.
    pub consumers_wh: i64,
    /// `transformer_wh - consumers_wh`, in Wh.
    pub loss_wh: i64,
    /// The loss in thousandths of `transformer_wh` (null when they delivered nothing).
    pub loss_permille: Option<i64>,
    /// The technical loss allowed for, in Wh.
    pub allowance_wh: i64,
}

/// An inclusive range of local days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    /// The first day.
    pub from: NaiveDate,
    /// The last day.
    pub to: NaiveDate,
}

impl DayRange {
    /// From `from` (default: [`DEFAULT_RANGE_DAYS`] days up to `to`) to `to` (default: `today`);
    /// refused when it runs backwards or covers more than [`MAX_RANGE_DAYS`] days.
    pub fn new(
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        today: NaiveDate,
    ) -> Result<DayRange> {
        let to = to.unwrap_or(today);
        let from = from.unwrap_or(to - Duration::days(DEFAULT_RANGE_DAYS - 1));
        if from > to {
            return Err(CentralError::Invalid(format!(
                "from {from} is after to {to}: give the first day first"
            )));
        }
        if (to - from).num_days() >= MAX_RANGE_DAYS {
            return Err(CentralError::Invalid(format!(
                "{from} to {to} is more than {MAX_RANGE_DAYS} days: ask for a shorter range"
            )));
        }
        Ok(DayRange { from, to })
    }

    /// As [`DayRange::new`], from dates written `YYYY-MM-DD`.
    pub fn parse(from: Option<&str>, to: Option<&str>, today: NaiveDate) -> Result<DayRange> {
        let date = |name: &str, text: Option<&str>| {
            text.map(|text| {
                parse_day(text).ok_or_else(|| {
                    CentralError::Invalid(format!(
                        "{name} '{}' is not a date: write it YYYY-MM-DD, e.g. 2026-11-29",
                        text.chars().take(40).collect::<String>()
                    ))
                })
            })
            .transpose()
        };
        DayRange::new(date("from", from)?, date("to", to)?, today)
    }

    fn bounds(&self) -> [crate::db::Value; 2] {
        [day_text(self.from).into(), day_text(self.to).into()]
    }
}

/// A day written exactly `YYYY-MM-DD` (as ids and storage write it), or None.
pub fn parse_day(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|day| day_text(*day) == text)
}

fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Stores a gateway's audit of a day (the origin checks passed), replacing an earlier audit of
/// the same day; a flagged day is flagged for the office (once per day).
pub(crate) fn record(
    tx: &mut dyn Tx,
    gateway: &str,
    day: &EnergyAuditDay,
    now: DateTime<Utc>,
) -> Result<()> {
    let corrupt = |e: serde_json::Error| CentralError::Corrupt(format!("an energy audit: {e}"));
    let losses = serde_json::to_string(&day.interval_loss_wh).map_err(corrupt)?;
    let suspects: Vec<StoredSuspect> = day.suspects.iter().map(StoredSuspect::from).collect();
    let suspects = serde_json::to_string(&suspects).map_err(corrupt)?;
    tx.execute(
        "INSERT INTO energy_audits (id, gateway, transformer, day, intervals_compared, meters, transformer_wh, consumers_wh, allowance_wh, flagged, interval_loss_wh, suspects, at, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (id) DO UPDATE SET intervals_compared = $5, meters = $6, transformer_wh = $7, consumers_wh = $8, allowance_wh = $9, flagged = $10, interval_loss_wh = $11, suspects = $12, at = $13, received_at = $14",
        &[
            day.id.as_str().into(),
            gateway.into(),
            day.transformer.as_str().into(),
            day.day.as_str().into(),
            i64::from(day.intervals_compared).into(),
            i64::from(day.meters).into(),
            day.transformer_wh.into(),
            day.consumers_wh.into(),
            day.allowance_wh.into(),
            i64::from(day.flagged).into(),
            losses.into(),
            suspects.into(),
            ts(day.at).into(),
            ts(now).into(),
        ],
    )?;
    let flag_id = format!("energy_loss:{}", day.id);
    let detail = loss_detail(gateway, day);
    if day.flagged {
        flag(
            tx,
            &flag_id,
            "energy_loss",
            Some(gateway),
            None,
            day.at,
            &detail,
        )?;
    }
    // A re-audit (late readings) may change a flagged day's figures or clear it: the day's flag,
    // if it has one, says what holds now.
    let now_holds = if day.flagged {
        detail
    } else {
        format!("{detail}; re-audited: no longer beyond the allowance")
    };
    tx.execute(
        "UPDATE flags SET detail = $2 WHERE id = $1",
        &[flag_id.as_str().into(), now_holds.into()],
    )?;
    Ok(())
}

/// What the office reads in the flag of a flagged day.
fn loss_detail(gateway: &str, day: &EnergyAuditDay) -> String {
    let loss = day.transformer_wh - day.consumers_wh;
    let share = permille(loss, day.transformer_wh)
        .map(|p| format!(" ({})", percent(p)))
        .unwrap_or_default();
    let suspects = match day.suspects.first() {
        None => "no meter stands out: check the feeder and unmetered connections".to_owned(),
        Some(first) => format!(
            "{} meter(s) to inspect, first {} of account {} (score {})",
            day.suspects.len(),
            first.meter,
            first.account,
            first.score
        ),
    };
    format!(
        "gateway {gateway}, transformer {}, {}: {} kWh{share} of the {} kWh the transformer delivered is not on the consumers' meters (allowance {} kWh); {suspects}",
        day.transformer,
        day.day,
        kwh(loss),
        kwh(day.transformer_wh),
        kwh(day.allowance_wh)
    )
}

const AUDIT_COLUMNS: &str = "id, gateway, transformer, day, intervals_compared, meters, transformer_wh, consumers_wh, allowance_wh, flagged, interval_loss_wh, suspects, at, received_at";

fn audit_from_row(row: &Row) -> Result<AuditDay> {
    let id = row.text(0)?;
    let unreadable = |what: &str, e: serde_json::Error| {
        CentralError::Corrupt(format!("energy audit {id}: {what}: {e}"))
    };
    let losses = serde_json::from_str(&row.text(10)?).map_err(|e| unreadable("losses", e))?;
    let suspects: Vec<StoredSuspect> =
        serde_json::from_str(&row.text(11)?).map_err(|e| unreadable("suspects", e))?;
    let (transformer_wh, consumers_wh) = (row.int(6)?, row.int(7)?);
    Ok(AuditDay {
        gateway: row.text(1)?,
        transformer: row.text(2)?,
        day: row.text(3)?,
        intervals_compared: row.int(4)?,
        meters: row.int(5)?,
        transformer_wh,
        consumers_wh,
        loss_wh: transformer_wh - consumers_wh,
        loss_permille: permille(transformer_wh - consumers_wh, transformer_wh),
        allowance_wh: row.int(8)?,
        flagged: row.int(9)? != 0,
        interval_loss_wh: losses,
        suspects: suspects.into_iter().map(Suspect::from).collect(),
        at: from_ts(row.int(12)?),
        received_at: from_ts(row.int(13)?),
        id,
    })
}

/// The audit days in `range`, of one gateway when given, newest first (then by gateway and
/// transformer), at most `limit` (1 to [`MAX_AUDITS_LIMIT`]).
pub fn audits(
    tx: &mut dyn Tx,
    gateway: Option<&str>,
    range: DayRange,
    limit: i64,
) -> Result<Vec<AuditDay>> {
    if !(1..=MAX_AUDITS_LIMIT).contains(&limit) {
        return Err(CentralError::Invalid(format!(
            "limit {limit} is out of range: give 1 to {MAX_AUDITS_LIMIT}"
        )));
    }
    let [from, to] = range.bounds();
    let rows = match gateway {
        Some(gateway) => tx.query(
            &format!("SELECT {AUDIT_COLUMNS} FROM energy_audits WHERE gateway = $1 AND day >= $2 AND day <= $3 ORDER BY day DESC, transformer LIMIT $4"),
            &[gateway.into(), from, to, limit.into()],
        )?,
        None => tx.query(
            &format!("SELECT {AUDIT_COLUMNS} FROM energy_audits WHERE day >= $1 AND day <= $2 ORDER BY day DESC, gateway, transformer LIMIT $3"),
            &[from, to, limit.into()],
        )?,
    };
    rows.iter().map(audit_from_row).collect()
}

/// Every gateway's losses over `range`, the largest share of its transformers' energy first
/// (a village whose transformers delivered nothing last), then by gateway.
pub fn villages(tx: &mut dyn Tx, range: DayRange) -> Result<Vec<VillageLoss>> {
    let rows = tx.query(
        "SELECT gateway, COUNT(DISTINCT day), COUNT(DISTINCT CASE WHEN flagged <> 0 THEN day END),
                CAST(SUM(transformer_wh) AS BIGINT), CAST(SUM(consumers_wh) AS BIGINT), CAST(SUM(allowance_wh) AS BIGINT)
         FROM energy_audits WHERE day >= $1 AND day <= $2 GROUP BY gateway",
        &range.bounds(),
    )?;
    let mut villages = rows
        .iter()
        .map(|row| {
            let (transformer_wh, consumers_wh) = (row.int(3)?, row.int(4)?);
            Ok(VillageLoss {
                gateway: row.text(0)?,
                days: row.int(1)?,
                flagged_days: row.int(2)?,
                transformer_wh,
                consumers_wh,
                loss_wh: transformer_wh - consumers_wh,
                loss_permille: permille(transformer_wh - consumers_wh, transformer_wh),
                allowance_wh: row.int(5)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // None (nothing delivered) sorts below every share.
    villages.sort_by(|a, b| {
        b.loss_permille
            .cmp(&a.loss_permille)
            .then_with(|| a.gateway.cmp(&b.gateway))
    });
    Ok(villages)
}

/// `part` in thousandths of `whole`, rounded half away from zero; None when `whole` is not
/// positive.
pub fn permille(part: i64, whole: i64) -> Option<i64> {
    (whole > 0).then(|| {
        let (part, whole) = (i128::from(part) * 1000, i128::from(whole));
        let rounded = (part.abs() * 2 + whole) / (whole * 2);
        i64::try_from(rounded * part.signum()).unwrap_or(i64::MAX)
    })
}

/// Thousandths as a percentage with one decimal: 182 → "18.2%".
pub fn percent(permille: i64) -> String {
    let sign = if permille < 0 { "-" } else { "" };
    // A permille is a tenth of a percent.
    let tenths = permille.unsigned_abs();
    format!("{sign}{}.{}%", tenths / 10, tenths % 10)
}

/// Wh as kWh with two decimals: 1234 → "1.23".
pub fn kwh(wh: i64) -> String {
    hundredths(wh, 1000)
}

/// `value / unit` with two decimals, rounded half away from zero (`unit` a multiple of 10).
fn hundredths(value: i64, unit: u64) -> String {
    let step = unit / 100;
    let hundredths = (value.unsigned_abs() + step / 2) / step;
    let sign = if value < 0 && hundredths > 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", hundredths / 100, hundredths % 100)
}

#[cfg(test)]
mod tests;
