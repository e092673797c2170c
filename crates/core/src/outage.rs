//! Supply outages: many meters behind one transformer losing power together is the feeder's or
//! the transformer's outage, not a household's event.
//!
//! Pure: [`detect`] reads the meters' power-off spans (from their power fail and restore events)
//! and finds the outages; [`suspected`] sees one going on in meters that stopped answering
//! together (meters that cannot send a last gasp report their power failure only once it is
//! back); [`grace_end`] moves a disconnect's grace past the outage hours, so no household is cut
//! for time it had no supply. The result depends on the set of spans only, never
//! on the order they arrived in (property-tested).
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// When meters' power failures count as one outage (the `[outage]` table of the gateway config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutageRule {
    /// At least this many meters must lose power together.
    pub min_meters: usize,
    /// And at least this share of the gateway's meters (percent).
    pub min_share_percent: u8,
    /// Power failures this close to the first one are "together" (meter clocks drift a little,
    /// and a feeder trips in stages).
    #[serde(with = "humantime_serde")]
    pub together_within: std::time::Duration,
    /// Meters that stopped answering the gateway within this long of each other count as dark
    /// together (the gateway polls each meter in turn, so they fall silent over a poll period).
    #[serde(with = "humantime_serde")]
    pub silent_together_within: std::time::Duration,
}

impl OutageRule {
    /// How many meters of `meters_total` an outage takes: [`Self::min_meters`] and
    /// [`Self::min_share_percent`] of them, and at least one.
    fn meters_needed(&self, meters_total: usize) -> usize {
        self.min_meters
            .max((meters_total * usize::from(self.min_share_percent)).div_ceil(100))
            .max(1)
    }
}

impl Default for OutageRule {
    fn default() -> Self {
        Self {
            min_meters: 3,
            min_share_percent: 30,
            together_within: std::time::Duration::from_secs(120),
            silent_together_within: std::time::Duration::from_secs(3600),
        }
    }
}

/// One meter without power: from its power failure to its restoration (None: not reported yet).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DarkSpan<M> {
    /// When the meter reported its power failure.
    pub failed_at: DateTime<Utc>,
    /// The meter.
    pub meter: M,
    /// When it reported power back, if it has.
    pub restored_at: Option<DateTime<Utc>>,
}

/// Spans of time with no supply, as the policy needs them: from `start` to `end` (None: still out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutageSpan {
    /// When the supply failed (UTC).
    pub start: DateTime<Utc>,
    /// When it came back (UTC); None while it has not.
    pub end: Option<DateTime<Utc>>,
}

/// An outage found in the meters' spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage<M> {
    /// The first power failure of the meters that lost power together.
    pub started_at: DateTime<Utc>,
    /// The median of their restorations: when supply came back to most of them. None while fewer
    /// than half have reported power back.
    pub ended_at: Option<DateTime<Utc>>,
    /// The meters that lost power together, sorted, each once.
    pub meters: Vec<M>,
}

/// Pairs each meter's power failures with its next restoration. `events` are
/// `(meter, at, failed)`: `failed` true for a power failure, false for a restoration, in any order.
/// A restoration with no failure before it is ignored (the failure was reported before the
/// window the caller read).
pub fn dark_spans<M: Ord + Clone>(events: &[(M, DateTime<Utc>, bool)]) -> Vec<DarkSpan<M>> {
    let mut sorted: Vec<&(M, DateTime<Utc>, bool)> = events.iter().collect();
    // At one instant a failure sorts before a restoration (false < true after the negation).
    sorted.sort_by(|a, b| (&a.0, a.1, !a.2).cmp(&(&b.0, b.1, !b.2)));
    let mut spans = Vec::new();
    let mut open: Option<DarkSpan<M>> = None;
    for (meter, at, failed) in sorted {
        if open.as_ref().is_some_and(|o| &o.meter != meter) {
            spans.extend(open.take());
        }
        match (failed, open.as_mut()) {
            (true, Some(span)) if span.restored_at.is_none() => {} // a second failure while dark
            (true, _) => {
                spans.extend(open.take());
                open = Some(DarkSpan {
                    failed_at: *at,
                    meter: meter.clone(),
                    restored_at: None,
                });
            }
            (false, Some(span)) if span.restored_at.is_none() => span.restored_at = Some(*at),
            (false, _) => {}
        }
    }
    spans.extend(open);
    spans
}

/// The outages among `spans`, oldest first. `meters_total` is how many meters the gateway serves
/// (the base of [`OutageRule::min_share_percent`]).
///
/// Power failures are grouped from the earliest on: a group is every failure within
/// `together_within` of its first; a group of enough distinct meters is an outage. A household's
/// own failure (a blown fuse) is never one.
pub fn detect<M: Ord + Clone>(
    spans: &[DarkSpan<M>],
    meters_total: usize,
    rule: &OutageRule,
) -> Vec<Outage<M>> {
    let mut sorted: Vec<&DarkSpan<M>> = spans.iter().collect();
    sorted.sort();
    let within = Duration::from_std(rule.together_within).unwrap_or(Duration::MAX);
    let needed = rule.meters_needed(meters_total);
    let mut outages = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let first = sorted[i].failed_at;
        let end = sorted[i..]
            .iter()
            .position(|s| s.failed_at > first + within)
            .map_or(sorted.len(), |n| i + n);
        let group = &sorted[i..end];
        let mut meters: Vec<M> = group.iter().map(|s| s.meter.clone()).collect();
        meters.sort();
        meters.dedup();
        if meters.len() >= needed {
            outages.push(Outage {
                started_at: first,
                ended_at: median_restoration(group),
                meters,
            });
        }
        i = end;
    }
    outages
}

/// The median restoration of a group's meters (each meter's latest), if at least half reported one.
fn median_restoration<M: Ord>(group: &[&DarkSpan<M>]) -> Option<DateTime<Utc>> {
    let mut latest: std::collections::BTreeMap<&M, Option<DateTime<Utc>>> = Default::default();
    for span in group {
        let entry = latest.entry(&span.meter).or_insert(span.restored_at);
        *entry = (*entry).max(span.restored_at);
    }
    let mut restored: Vec<DateTime<Utc>> = latest.values().flatten().copied().collect();
    restored.sort();
    // The lower median of all the group's meters, counting one not restored as later than any:
    // a restoration once at least half have one.
    restored.get(latest.len().div_ceil(2) - 1).copied()
}

/// An outage going on now, as the radio sees it: when enough meters (by the same rule as
/// [`detect`]) stopped answering within [`OutageRule::silent_together_within`] of each other, it
/// began when the first of them did. `silent_since` holds when each silent meter's run of
/// unanswered turns began. It is not an outage on record: it holds disconnects while it lasts, and
/// the meters' power events say afterwards what it was.
pub fn suspected(
    silent_since: &[DateTime<Utc>],
    meters_total: usize,
    rule: &OutageRule,
) -> Option<OutageSpan> {
    let mut starts = silent_since.to_vec();
    starts.sort();
    let within = Duration::from_std(rule.silent_together_within).unwrap_or(Duration::MAX);
    let needed = rule.meters_needed(meters_total);
    (0..starts.len())
        .find(|&i| starts[i..].partition_point(|s| *s <= starts[i] + within) >= needed)
        .map(|i| OutageSpan {
            start: starts[i],
            end: None,
        })
}

/// The end of a disconnect's grace that would end at `grace_end`, for a threshold crossed at
/// `crossed`, with the outage hours after the crossing added: every outage that starts before the
/// (moved) end pushes it on by the part of its length after the crossing. None while an outage
/// that started before the end is still going on. Overlapping outages (one outage recorded from
/// the meters' silence and again from their power events) count their shared hours once.
pub fn grace_end(
    crossed: DateTime<Utc>,
    grace_end: DateTime<Utc>,
    outages: &[OutageSpan],
) -> Option<DateTime<Utc>> {
    let mut end = grace_end;
    for outage in merged(outages) {
        if outage.start >= end {
            break;
        }
        let from = outage.start.max(crossed);
        let to = outage.end?;
        if to > from {
            end += to - from;
        }
    }
    Some(end)
}

/// The union of outage spans as disjoint spans in time order (an open end runs on for ever).
fn merged(outages: &[OutageSpan]) -> Vec<OutageSpan> {
    let mut sorted = outages.to_vec();
    sorted.sort_by_key(|o| o.start);
    let mut union: Vec<OutageSpan> = Vec::with_capacity(sorted.len());
    for outage in sorted {
        match union.last_mut() {
            Some(last) if last.end.is_none_or(|end| outage.start <= end) => {
                last.end = match (last.end, outage.end) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => union.push(outage),
        }
    }
    union
}

#[cfg(test)]
mod tests;
