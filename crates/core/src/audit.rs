//! The transformer's energy audit: what a distribution transformer delivered against what its
//! consumers' meters recorded, per 15-minute interval and per local day, and the meters the
//! evidence points to when the difference is more than the lines and the transformer lose.
//!
//! Pure. Interval energy comes from cumulative registers read at any times: the register between
//! two consecutive readings is taken to rise evenly (rounded down), so the intervals of a span add
//! up exactly to the span's energy, and the result depends on the set of readings only. A span
//! longer than [`MAX_SPREAD_SECS`] says nothing about its intervals and leaves them unknown.
use crate::rating::RegisterReading;
use crate::tariff::INTERVAL_SECS;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The longest span between two readings whose energy is spread over its intervals (4 hours).
pub const MAX_SPREAD_SECS: i64 = 4 * 3600;
/// The share of a day's compared intervals, those with the most unexplained loss, in which a
/// meter's use is set against its usual day (one in four).
const HIGH_LOSS_SHARE: usize = 4;
/// A meter that usually uses less than this in the high-loss intervals is not judged by them.
const MIN_USUAL_WH: i64 = 200;
/// Most meters listed on a flagged day.
pub const MAX_SUSPECTS: usize = 10;

/// How much loss the transformer's lines are allowed, and when the rest is worth a visit (the
/// `[audit]` table of the gateway config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditRule {
    /// The technical loss allowed for (conductors and the transformer itself), as a percentage of
    /// the energy the transformer delivered.
    pub technical_loss_percent: f64,
    /// A day is flagged when the loss beyond the allowance is more than this percentage of the
    /// energy the transformer delivered.
    pub flag_above_percent: f64,
    /// A connected meter that recorded at most this many Wh over the compared intervals of a day
    /// is evidence (a meter that stopped, or a supply that goes around it).
    pub near_zero_wh: i64,
    /// A day with fewer compared intervals than this is reported but never flagged.
    pub min_intervals: usize,
}

impl Default for AuditRule {
    fn default() -> Self {
        AuditRule {
            technical_loss_percent: 4.0,
            flag_above_percent: 0.5,
            near_zero_wh: 100,
            min_intervals: 48,
        }
    }
}

impl AuditRule {
    /// Why the rule cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if !(0.0..=50.0).contains(&self.technical_loss_percent) {
            return Some(format!(
                "technical_loss_percent = {} is not between 0 and 50",
                self.technical_loss_percent
            ));
        }
        if !(0.0..=50.0).contains(&self.flag_above_percent) {
            return Some(format!(
                "flag_above_percent = {} is not between 0 and 50",
                self.flag_above_percent
            ));
        }
        if self.near_zero_wh < 0 {
            return Some(format!("near_zero_wh = {} is negative", self.near_zero_wh));
        }
        if self.min_intervals > INTERVALS_PER_DAY {
            return Some(format!(
                "min_intervals = {} is more than a day's {INTERVALS_PER_DAY}",
                self.min_intervals
            ));
        }
        None
    }

    /// The allowance on `wh` delivered, rounded down.
    fn allowance(&self, wh: i64) -> i64 {
        (wh as f64 * self.technical_loss_percent / 100.0).floor() as i64
    }
}

/// Intervals in a local day (India keeps no daylight saving time).
pub const INTERVALS_PER_DAY: usize = (86_400 / INTERVAL_SECS) as usize;

/// The energy (Wh) of each of the `n` intervals from `start`, from a meter's register readings
/// (any order); None where the readings do not cover the interval, cover it only by a span longer
/// than [`MAX_SPREAD_SECS`], or the register went back.
pub fn interval_energy(
    readings: &[RegisterReading],
    start: DateTime<Utc>,
    n: usize,
) -> Vec<Option<i64>> {
    register_intervals(readings, start, n, |r| r.register_wh)
}

/// The energy (Wh) a rooftop-solar home exported in each of the `n` intervals from `start`, from
/// its export register, as [`interval_energy`] takes the import (all zero for a meter without one).
/// A reading whose export is not known (an installation baseline) leaves its span unknown.
pub fn interval_export(
    readings: &[RegisterReading],
    start: DateTime<Utc>,
    n: usize,
) -> Vec<Option<i64>> {
    let known: Vec<RegisterReading> = readings
        .iter()
        .filter(|r| r.export_wh != crate::rating::EXPORT_UNKNOWN)
        .copied()
        .collect();
    register_intervals(&known, start, n, |r| r.export_wh)
}

/// The rise of one cumulative `register` in each of the `n` intervals from `start`.
fn register_intervals(
    readings: &[RegisterReading],
    start: DateTime<Utc>,
    n: usize,
    register: fn(&RegisterReading) -> i64,
) -> Vec<Option<i64>> {
    let mut sorted = readings.to_vec();
    sorted.sort_by_key(|r| (r.at, register(r)));
    sorted.dedup_by_key(|r| r.at);
    let values: Vec<(DateTime<Utc>, i64)> = sorted.iter().map(|r| (r.at, register(r))).collect();
    (0..n)
        .map(|k| {
            let from = start + Duration::seconds(INTERVAL_SECS * k as i64);
            let to = from + Duration::seconds(INTERVAL_SECS);
            let wh = register_at(&values, to)? - register_at(&values, from)?;
            (wh >= 0).then_some(wh)
        })
        .collect()
}

/// The register at `at`, between the consecutive readings around it (`sorted` by time, one per
/// time); None outside the readings or inside a span too long to spread over.
fn register_at(sorted: &[(DateTime<Utc>, i64)], at: DateTime<Utc>) -> Option<i64> {
    let after = sorted.partition_point(|(t, _)| *t < at);
    let (next_at, next) = *sorted.get(after)?;
    if next_at == at {
        return Some(next);
    }
    let (previous_at, previous) = *sorted.get(after.checked_sub(1)?)?;
    let span = (next_at - previous_at).num_seconds();
    if span > MAX_SPREAD_SECS {
        return None;
    }
    let rise = i128::from(next - previous);
    let elapsed = i128::from((at - previous_at).num_seconds());
    let share = (rise * elapsed).div_euclid(i128::from(span));
    Some(previous + i64::try_from(share).ok()?)
}

/// A meter's usual day: the mean energy of each interval over earlier days' `days` (each
/// [`INTERVALS_PER_DAY`] long), over the days where the interval is known.
pub fn usual_day(days: &[Vec<Option<i64>>]) -> Vec<Option<i64>> {
    (0..INTERVALS_PER_DAY)
        .map(|k| {
            let known: Vec<i64> = days
                .iter()
                .filter_map(|d| d.get(k).copied().flatten())
                .collect();
            let count = i64::try_from(known.len()).ok().filter(|c| *c > 0)?;
            Some(known.iter().sum::<i64>() / count)
        })
        .collect()
}

/// One consumer meter's day, as the audit needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerDay<M> {
    /// Whoever the caller knows the meter by.
    pub meter: M,
    /// Its energy in each interval of the day ([`interval_energy`]): what the household used
    /// from the grid, which the evidence is about.
    pub energy: Vec<Option<i64>>,
    /// What it exported in each interval ([`interval_export`]): a rooftop-solar home's feed into
    /// the transformer's lines, taken off its energy in the balance (not in the evidence).
    pub exported: Vec<Option<i64>>,
    /// Its usual day ([`usual_day`] of the days before), if it has history.
    pub usual: Option<Vec<Option<i64>>>,
    /// Whether its relay was connected all day (a disconnected meter recording little, or less
    /// than usual, is not evidence).
    pub connected: bool,
    /// Names of the tamper events it reported that day, each once.
    pub tamper_kinds: Vec<String>,
}

/// A kind of evidence against a meter. It crosses the sync as it is (`proto::wire::AuditReason`):
/// append new kinds, never reorder or change one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// It reported tamper events.
    Tamper {
        /// Their kinds, each once.
        kinds: Vec<String>,
    },
    /// It recorded almost nothing over the compared intervals while connected.
    NearZero {
        /// What it recorded, in Wh.
        recorded_wh: i64,
    },
    /// In the intervals with the most unexplained loss (a quarter of those compared), it recorded
    /// at most half of what it usually does in them.
    FallsWithLoss {
        /// What it usually records in those intervals (its usual day), Wh.
        usual_wh: i64,
        /// What it recorded in them this day, Wh.
        recorded_wh: i64,
    },
}

/// A meter the evidence points to, with a score from 0 to 100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect<M> {
    /// The caller's meter.
    pub meter: M,
    /// Higher: more of the evidence points here.
    pub score: u32,
    /// The evidence, in the order of [`Evidence`]'s kinds.
    pub evidence: Vec<Evidence>,
}

/// A day's audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayAudit<M> {
    /// Intervals where the transformer and every consumer meter are known and supply was on.
    pub intervals_compared: usize,
    /// What the transformer delivered in them, Wh.
    pub transformer_wh: i64,
    /// What the consumer meters recorded in them, Wh.
    pub consumers_wh: i64,
    /// The technical loss allowed on `transformer_wh`, Wh.
    pub allowance_wh: i64,
    /// The loss beyond the allowance is above the rule's threshold (and enough was compared).
    pub flagged: bool,
    /// Each interval's loss (transformer minus consumers), Wh; None where not compared.
    pub interval_loss: Vec<Option<i64>>,
    /// On a flagged day, the meters the evidence points to, highest score first (at most
    /// [`MAX_SUSPECTS`]); empty otherwise.
    pub suspects: Vec<Suspect<M>>,
}

impl<M> DayAudit<M> {
    /// Transformer energy minus consumers' energy, Wh.
    pub fn loss_wh(&self) -> i64 {
        self.transformer_wh - self.consumers_wh
    }
}

/// Audits one day: `transformer` is the transformer meter's [`interval_energy`], `consumers`
/// every consumer meter in service behind it. An interval is compared when all of them are known
/// in it and the transformer delivered something (a supply outage is nobody's loss).
pub fn audit_day<M: Clone + Ord>(
    rule: &AuditRule,
    transformer: &[Option<i64>],
    consumers: &[ConsumerDay<M>],
) -> DayAudit<M> {
    let interval_loss: Vec<Option<i64>> = transformer
        .iter()
        .enumerate()
        .map(|(k, delivered)| {
            let delivered = delivered.filter(|wh| *wh > 0)?;
            let recorded: Option<i64> = consumers
                .iter()
                .map(|c| {
                    let used = c.energy.get(k).copied().flatten()?;
                    Some(used - c.exported.get(k).copied().flatten()?)
                })
                .sum();
            Some(delivered - recorded?)
        })
        .collect();
    let compared: Vec<usize> = (0..interval_loss.len())
        .filter(|k| interval_loss[*k].is_some())
        .collect();
    let transformer_wh: i64 = compared.iter().filter_map(|k| transformer[*k]).sum();
    let loss: i64 = compared.iter().filter_map(|k| interval_loss[*k]).sum();
    let allowance_wh = rule.allowance(transformer_wh);
    let threshold = transformer_wh as f64 * rule.flag_above_percent / 100.0;
    let flagged =
        compared.len() >= rule.min_intervals.max(1) && (loss - allowance_wh) as f64 > threshold;
    let suspects = if flagged {
        rank(
            rule,
            &compared,
            &high_loss(rule, &compared, &interval_loss, transformer),
            consumers,
        )
    } else {
        Vec::new()
    };
    DayAudit {
        intervals_compared: compared.len(),
        transformer_wh,
        consumers_wh: transformer_wh - loss,
        allowance_wh,
        flagged,
        interval_loss,
        suspects,
    }
}

/// The quarter of the compared intervals with the most loss beyond the allowance.
fn high_loss(
    rule: &AuditRule,
    compared: &[usize],
    interval_loss: &[Option<i64>],
    transformer: &[Option<i64>],
) -> Vec<usize> {
    let unexplained = |k: usize| -> i64 {
        let loss = interval_loss[k].unwrap_or(0);
        loss - rule.allowance(transformer[k].unwrap_or(0))
    };
    let mut by_loss = compared.to_vec();
    by_loss.sort_by_key(|k| (std::cmp::Reverse(unexplained(*k)), *k));
    by_loss.truncate(compared.len().div_ceil(HIGH_LOSS_SHARE));
    by_loss
}

/// The consumer meters with any evidence, highest score first (ties by meter).
fn rank<M: Clone + Ord>(
    rule: &AuditRule,
    compared: &[usize],
    high_loss: &[usize],
    consumers: &[ConsumerDay<M>],
) -> Vec<Suspect<M>> {
    let mut suspects: Vec<Suspect<M>> = consumers
        .iter()
        .filter_map(|c| {
            let evidence = evidence(rule, compared, high_loss, c);
            let score = evidence.iter().map(points).sum::<u32>().min(100);
            (!evidence.is_empty()).then(|| Suspect {
                meter: c.meter.clone(),
                score,
                evidence,
            })
        })
        .collect();
    suspects.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.meter.cmp(&b.meter)));
    suspects.truncate(MAX_SUSPECTS);
    suspects
}

fn evidence<M>(
    rule: &AuditRule,
    compared: &[usize],
    high_loss: &[usize],
    consumer: &ConsumerDay<M>,
) -> Vec<Evidence> {
    let mut found = Vec::new();
    if !consumer.tamper_kinds.is_empty() {
        found.push(Evidence::Tamper {
            kinds: consumer.tamper_kinds.clone(),
        });
    }
    let recorded_wh: i64 = compared
        .iter()
        .filter_map(|k| consumer.energy.get(*k).copied().flatten())
        .sum();
    // A meter disconnected during the day used little, or less than usual, for a reason the
    // gateway knows.
    if !consumer.connected {
        return found;
    }
    if recorded_wh <= rule.near_zero_wh {
        found.push(Evidence::NearZero { recorded_wh });
    } else if let Some((usual_wh, recorded_wh)) = consumer
        .usual
        .as_ref()
        .and_then(|usual| use_against_usual(high_loss, &consumer.energy, usual))
        .filter(|(usual, recorded)| *usual >= MIN_USUAL_WH && 2 * recorded <= *usual)
    {
        found.push(Evidence::FallsWithLoss {
            usual_wh,
            recorded_wh,
        });
    }
    found
}

/// Points per kind of evidence: a fall in use counts by its depth.
fn points(evidence: &Evidence) -> u32 {
    match evidence {
        Evidence::Tamper { kinds } => 25 * u32::try_from(kinds.len().min(2)).unwrap_or(2),
        Evidence::NearZero { .. } => 40,
        Evidence::FallsWithLoss {
            usual_wh,
            recorded_wh,
        } => u32::try_from(60 * (usual_wh - recorded_wh) / (*usual_wh).max(1)).unwrap_or(0),
    }
}

/// What the meter usually records in `intervals` and what it recorded in them, over those where
/// both are known; None when none are.
fn use_against_usual(
    intervals: &[usize],
    energy: &[Option<i64>],
    usual: &[Option<i64>],
) -> Option<(i64, i64)> {
    let pairs: Vec<(i64, i64)> = intervals
        .iter()
        .filter_map(|k| {
            Some((
                usual.get(*k).copied().flatten()?,
                energy.get(*k).copied().flatten()?,
            ))
        })
        .collect();
    (!pairs.is_empty()).then(|| {
        (
            pairs.iter().map(|p| p.0).sum(),
            pairs.iter().map(|p| p.1).sum(),
        )
    })
}

#[cfg(test)]
mod tests;
