//! Rating: turns cumulative register readings into energy per tariff segment, whatever their order.
//!
//! Rules (each is a decision a billing engineer can check):
//! - **Spans.** Energy is measured between consecutive readings of a meter (by timestamp). A span's
//!   energy is the register difference, and it is billed in the segment (month × tariff version)
//!   of its *later* reading: energy is billed when it is read, as post-paid billing does.
//! - **Gaps.** Missing intervals lose nothing: the register is cumulative, so the span across a gap
//!   carries all of its energy.
//! - **Late and out-of-order readings.** A reading that lands between two known readings replaces one
//!   span by two. Only the segment totals move (if the halves fall in different segments), so the
//!   totals, and therefore the charges, are a function of the *set* of readings, not of arrival order.
//! - **Duplicates.** A second reading with the same meter and timestamp is ignored (the store keeps the
//!   first, and reports a conflicting register value).
//! - **Register went back** (a reset, a swapped meter not recorded as such, a corrupt value): that span
//!   is billed nothing and reported as an anomaly; the lower value becomes the new baseline. The office
//!   decides, never a guess.
//! - **Time of day.** A span's energy takes the time-of-day slot of its *earlier* reading's local
//!   time when the span is at most one 15-minute interval; a longer span (readings were missed) is
//!   charged at the slab rates until a late reading splits it. Each segment keeps the ToD weight
//!   of its spans beside its energy, so the weight too is a function of the set of readings.
//! - **Net metering.** A rooftop-solar home's meter also reads its export register. Each span's
//!   export is accumulated in the same segment as its import, and the segment's energy charge is on
//!   the net units (import − export, never below zero); a segment's surplus is not charged and is
//!   reported (`SegmentEnergy::surplus_wh`). Time of day stays a property of the import: the net
//!   units carry the import's average time-of-day rate. An export register that went back is an
//!   anomaly like the import's. An installation baseline's export is not known
//!   ([`EXPORT_UNKNOWN`]): the span from it credits no export.
//! - **Meter replacement.** Each meter has its own readings. A meter installed with a known register
//!   value gets that value as its first reading (the baseline); otherwise its first reading is the
//!   baseline. Readings before installation or after removal are refused by the store.
use crate::civil::Month;
use crate::tariff::{Category, Cost, SegmentEnergy, SegmentKey, SegmentUse, TariffBook};
use chrono::{DateTime, Utc};

/// One reading of a meter's cumulative registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterReading {
    /// When the meter took the reading (UTC).
    pub at: DateTime<Utc>,
    /// The cumulative import register (OBIS 1.0.1.8.0), in Wh.
    pub register_wh: i64,
    /// The cumulative export register (OBIS 1.0.2.8.0), in Wh: what a rooftop-solar home fed into
    /// the grid. Always 0 for a meter without one; [`EXPORT_UNKNOWN`] for an installation
    /// baseline (its export register was not read).
    pub export_wh: i64,
}

/// The export register of a reading whose export nobody read: a meter's installation baseline,
/// entered with its import register alone. The span from it credits no export (a net meter that
/// had exported before it was installed must not be credited for that), and the next reading's
/// export register becomes the baseline.
pub const EXPORT_UNKNOWN: i64 = -1;

impl RegisterReading {
    /// A reading of a meter that only imports (its export register stays 0).
    pub fn import(at: DateTime<Utc>, register_wh: i64) -> RegisterReading {
        RegisterReading {
            at,
            register_wh,
            export_wh: 0,
        }
    }
}

/// The readings of the same meter immediately before and after a new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Neighbours {
    /// The latest known reading before the new one, if any.
    pub previous: Option<RegisterReading>,
    /// The earliest known reading after the new one (the new one arrived late), if any.
    pub next: Option<RegisterReading>,
}

/// Something a billing engineer should look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// The register was lower than the reading before it; the span was billed nothing.
    RegisterWentBack {
        /// The earlier reading (the higher register value).
        from: RegisterReading,
        /// The later reading, whose register is lower; it becomes the new baseline.
        to: RegisterReading,
    },
    /// The export register was lower than the reading before it; the span credited no export
    /// (its import is billed as usual).
    ExportWentBack {
        /// The earlier reading (the higher export register).
        from: RegisterReading,
        /// The later reading, whose export register is lower; it becomes the new baseline.
        to: RegisterReading,
    },
}

/// A change of a segment's total energy and the change in its cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentChange {
    /// The segment (month × tariff version) whose total moves.
    pub key: SegmentKey,
    /// Change of the segment's energy (negative when a late reading moves energy out) and of its
    /// time-of-day weight.
    pub delta: SegmentEnergy,
    /// Change of the segment's energy charge and duty, in paise.
    pub delta_cost: Cost,
}

/// The largest register a meter may report, in Wh (10 GWh: far above any household meter's
/// rollover). Gateway and central refuse readings beyond it, so no register arithmetic overflows.
pub const MAX_REGISTER_WH: i64 = 10_000_000_000;

/// The effect of one reading's arrival.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rated {
    /// What this arrival adds to the meter's charges (negative when a late reading moves energy
    /// into a cheaper segment).
    pub charge: Cost,
    /// The segment totals to change, at most one entry per segment and none with zero energy.
    pub changes: Vec<SegmentChange>,
    /// Spans this arrival revealed that need a billing engineer (billed nothing).
    pub anomalies: Vec<Anomaly>,
}

/// Why a reading could not be rated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RatingError {
    /// The book has no version of the meter's category in force at the reading's local date.
    #[error("no {category} tariff is in force at {at}; add a tariff version effective on or before that date")]
    NoTariff {
        /// The consumer category being rated.
        category: Category,
        /// The instant (UTC) that no tariff covers.
        at: DateTime<Utc>,
    },
}

/// The energy imported and exported in the span between two consecutive readings; a register
/// that went back counts nothing and is reported.
fn span_energy(
    from: RegisterReading,
    to: RegisterReading,
    anomalies: &mut Vec<Anomaly>,
) -> (i64, i64) {
    let import = if to.register_wh < from.register_wh {
        anomalies.push(Anomaly::RegisterWentBack { from, to });
        0
    } else {
        to.register_wh - from.register_wh
    };
    let export = if from.export_wh == EXPORT_UNKNOWN || to.export_wh == EXPORT_UNKNOWN {
        0
    } else if to.export_wh < from.export_wh {
        anomalies.push(Anomaly::ExportWentBack { from, to });
        0
    } else {
        to.export_wh - from.export_wh
    };
    (import, export)
}

/// The segment a span ending at `to` is billed in: energy is billed in the segment of the span's
/// later reading.
fn billed_in(
    book: &TariffBook,
    category: Category,
    to: RegisterReading,
) -> Result<crate::tariff::Segment<'_>, RatingError> {
    book.segment_at(category, to.at)
        .ok_or(RatingError::NoTariff {
            category,
            at: to.at,
        })
}

/// Rates the arrival of `reading` given its neighbours and what any segment holds now
/// (`segment_energy`). The caller applies the returned changes to its segment totals.
pub fn rate_arrival(
    book: &TariffBook,
    category: Category,
    neighbours: Neighbours,
    reading: RegisterReading,
    segment_energy: impl Fn(&SegmentKey) -> SegmentEnergy,
) -> Result<Rated, RatingError> {
    let mut anomalies = Vec::new();
    // Each span that appears (+1) or disappears (−1): its readings and its energy.
    let mut spans: Vec<(RegisterReading, RegisterReading, (i64, i64), i64)> = Vec::with_capacity(3);
    if let Some(previous) = neighbours.previous {
        spans.push((
            previous,
            reading,
            span_energy(previous, reading, &mut anomalies),
            1,
        ));
    }
    if let Some(next) = neighbours.next {
        spans.push((reading, next, span_energy(reading, next, &mut anomalies), 1));
        if let Some(previous) = neighbours.previous {
            // The span previous → next is replaced; its anomaly (if any) was reported when it appeared.
            spans.push((
                previous,
                next,
                span_energy(previous, next, &mut Vec::new()),
                -1,
            ));
        }
    }
    let mut changes: Vec<(SegmentChange, crate::tariff::Segment<'_>)> =
        Vec::with_capacity(spans.len());
    for (from, to, (wh, export_wh), sign) in spans {
        let segment = billed_in(book, category, to)?;
        let energy = segment.energy_of_span(from.at, to.at, wh, export_wh);
        let delta = if sign < 0 { -energy } else { energy };
        let key = segment.key();
        match changes.iter_mut().find(|(c, _)| c.key == key) {
            Some((change, _)) => change.delta = change.delta + delta,
            None => changes.push((
                SegmentChange {
                    key,
                    delta,
                    delta_cost: Cost::default(),
                },
                segment,
            )),
        }
    }
    let mut charge = Cost::default();
    let mut rated_changes = Vec::with_capacity(changes.len());
    for (mut change, segment) in changes {
        if change.delta == SegmentEnergy::default() {
            continue;
        }
        change.delta_cost = segment.charge(segment_energy(&change.key), change.delta);
        charge = charge + change.delta_cost;
        rated_changes.push(change);
    }
    Ok(Rated {
        charge,
        changes: rated_changes,
        anomalies,
    })
}

/// What the spans billed in `month` add to each of its segments, read again from the readings of
/// the meters billed in one set of slabs (a meter, and the meters that replaced it): each meter's
/// consecutive readings are a span, billed in the segment of the later one, with its import in the
/// time-of-day slot it takes (the same rules as [`rate_arrival`], so the segments' energy and
/// time-of-day weight are those rating accumulated). Each meter's readings must hold the last one
/// before the month (the baseline of its first span), in any order. Segments in the month's order.
pub fn month_usage<'a>(
    book: &'a TariffBook,
    category: Category,
    month: Month,
    meters: &[Vec<RegisterReading>],
) -> Result<Vec<SegmentUse<'a>>, RatingError> {
    let mut uses: Vec<SegmentUse<'a>> = Vec::new();
    for readings in meters {
        let mut sorted = readings.clone();
        sorted.sort_by_key(|r| r.at);
        sorted.dedup_by_key(|r| r.at);
        for pair in sorted.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            if Month::containing(to.at) != month {
                continue;
            }
            let segment = billed_in(book, category, to)?;
            let (wh, export_wh) = span_energy(from, to, &mut Vec::new());
            let slot = segment.slot_of_span(from.at, to.at);
            let index = match uses
                .iter()
                .position(|u| u.segment.version.id == segment.version.id)
            {
                Some(index) => index,
                None => {
                    uses.push(SegmentUse {
                        segment,
                        wh: 0,
                        slot_wh: vec![0; segment.version.tod.len()],
                        export_wh: 0,
                    });
                    uses.len() - 1
                }
            };
            let part = &mut uses[index];
            part.wh += wh;
            part.export_wh += export_wh;
            if let Some(slot) = slot {
                part.slot_wh[slot] += wh;
            }
        }
    }
    uses.sort_by_key(|u| u.segment.first_day);
    Ok(uses)
}

#[cfg(test)]
mod tests;
