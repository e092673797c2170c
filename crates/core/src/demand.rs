//! Maximum demand: a meter's average power over each demand interval, from its cumulative register
//! readings, the largest of a month, the intervals above a sanctioned load, and the load-limit trip.
//!
//! Pure. Demand is measured only over a span of exactly one interval between two readings (a
//! longer span after missed readings says nothing about any one interval), so the result depends
//! on the set of readings only.
use crate::rating::RegisterReading;
use crate::tariff::INTERVAL_SECS;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// When drawing more than the sanctioned load is worth the office's attention, and when it trips
/// the supply (the `[load]` table of the gateway config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadRule {
    /// A month is flagged once this many of its intervals were above the sanctioned load.
    pub alert_after_intervals: usize,
    /// The load-limit trip: this many consecutive intervals above the sanctioned load disconnect
    /// the household for `trip_minutes` (0: never; the default).
    pub trip_after_intervals: u32,
    /// How long a load-limit trip keeps the supply off, in minutes.
    pub trip_minutes: u32,
}

impl Default for LoadRule {
    fn default() -> Self {
        LoadRule {
            alert_after_intervals: 3,
            trip_after_intervals: 0,
            trip_minutes: 30,
        }
    }
}

/// A run longer than this (a day of intervals) is no load limiter's setting.
const MAX_TRIP_AFTER_INTERVALS: u32 = 96;
/// The longest lockout a trip may have: a day.
const MAX_TRIP_MINUTES: u32 = 24 * 60;
/// A run of intervals over the sanctioned load whose last interval ended longer ago than this
/// (its readings arrived late) trips nothing: a trip answers a load being drawn now.
pub const TRIP_FRESH_SECS: i64 = 3600;

/// A run of consecutive intervals above a sanctioned load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverRun {
    /// Intervals in the run.
    pub intervals: u32,
    /// The start of its first interval.
    pub from: DateTime<Utc>,
    /// The end of its last interval.
    pub until: DateTime<Utc>,
    /// The highest demand in it, in W.
    pub max_w: i64,
}

/// The run of consecutive intervals above `sanctioned_w` that ends with the latest interval
/// `readings` (any order) measure, counting only intervals that start at or after `since` (the
/// latest trip). None when that latest interval is not above the sanctioned load. A missing
/// reading ends a run: an interval is measured only by two readings exactly one interval apart.
pub fn latest_run_over(
    readings: &[RegisterReading],
    sanctioned_w: i64,
    since: Option<DateTime<Utc>>,
) -> Option<OverRun> {
    let step = chrono::Duration::seconds(INTERVAL_SECS);
    let demands: Vec<(DateTime<Utc>, i64)> = interval_demands(readings)
        .into_iter()
        .filter(|(end, _)| since.is_none_or(|t| *end - step >= t))
        .collect();
    let mut run: Option<OverRun> = None;
    for (end, w) in demands.into_iter().rev() {
        match run {
            _ if w <= sanctioned_w => break,
            Some(r) if r.from != end => break,
            Some(r) => {
                run = Some(OverRun {
                    intervals: r.intervals + 1,
                    from: end - step,
                    max_w: r.max_w.max(w),
                    ..r
                })
            }
            None => {
                run = Some(OverRun {
                    intervals: 1,
                    from: end - step,
                    until: end,
                    max_w: w,
                })
            }
        }
    }
    run
}

/// What the load-limit trip looks at for one account: the rule, the sanctioned load, what its
/// readings show and its latest trip (stored with every relay decision, so it can be replayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadTrip {
    /// `[load] trip_after_intervals` (0: the trip is off).
    pub trip_after_intervals: u32,
    /// `[load] trip_minutes`: how long a trip keeps the supply off.
    pub trip_minutes: u32,
    /// The account's sanctioned load, in W.
    pub sanctioned_w: i64,
    /// The run of intervals above it that ends with the latest interval measured since the latest
    /// trip ([`latest_run_over`]), if the latest interval was above it.
    pub over: Option<OverRun>,
    /// When the latest trip was carried out (its disconnect queued), if any.
    pub tripped_at: Option<DateTime<Utc>>,
}

impl LoadTrip {
    /// When the latest trip's lockout ends (the supply may come back from this instant on).
    pub fn lockout_end(&self) -> Option<DateTime<Utc>> {
        self.tripped_at
            .map(|t| t + chrono::Duration::minutes(i64::from(self.trip_minutes)))
    }

    /// Whether the trip governs the relay at `now`, and until when the supply stays off: while
    /// the latest trip's lockout lasts, its end; when a fresh run of enough intervals (none of
    /// them before the latest trip) calls for a trip now, `now` plus the lockout. Never with the
    /// trip off.
    pub fn off_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.trip_after_intervals == 0 {
            return None;
        }
        if self.in_lockout(now) {
            return self.lockout_end();
        }
        let run = self.over?;
        let fresh = run.until <= now && (now - run.until).num_seconds() <= TRIP_FRESH_SECS;
        let after_the_last_trip = self.tripped_at.is_none_or(|t| run.from >= t);
        (run.intervals >= self.trip_after_intervals && fresh && after_the_last_trip)
            .then(|| now + chrono::Duration::minutes(i64::from(self.trip_minutes)))
    }

    /// Whether the supply is off for the latest trip's lockout at `now` (not a new trip).
    pub fn in_lockout(&self, now: DateTime<Utc>) -> bool {
        self.trip_after_intervals > 0
            && self.tripped_at.is_some_and(|at| at <= now)
            && self.lockout_end().is_some_and(|end| now < end)
    }
}

/// A month's readings above a sanctioned load, when they are enough for [`LoadRule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Excess {
    /// Intervals above the sanctioned load.
    pub intervals: usize,
    /// The highest demand among them, in W.
    pub max_demand_w: i64,
}

impl LoadRule {
    /// Checks what serde cannot: a trip's count and lockout in range.
    pub fn validate(&self) -> Result<(), String> {
        if self.trip_after_intervals > MAX_TRIP_AFTER_INTERVALS {
            return Err(format!(
                "load.trip_after_intervals = {} is more than a day of intervals ({MAX_TRIP_AFTER_INTERVALS}); 0 turns the trip off",
                self.trip_after_intervals
            ));
        }
        if self.trip_after_intervals > 0 && !(1..=MAX_TRIP_MINUTES).contains(&self.trip_minutes) {
            return Err(format!(
                "load.trip_minutes = {} must be 1 to {MAX_TRIP_MINUTES} while the trip is on",
                self.trip_minutes
            ));
        }
        Ok(())
    }

    /// The excess over `sanctioned_w` in `readings` (any order), if it reaches the rule's count.
    pub fn excess(&self, readings: &[RegisterReading], sanctioned_w: i64) -> Option<Excess> {
        let intervals = intervals_over(readings, sanctioned_w);
        if intervals == 0 || intervals < self.alert_after_intervals {
            return None;
        }
        Some(Excess {
            intervals,
            max_demand_w: maximum(readings).map_or(0, |(_, w)| w),
        })
    }
}

/// A power in W as kilowatts with two decimals, for consumer messages (`2450` → `"2.45"`).
pub fn kilowatts(watts: i64) -> String {
    let sign = if watts < 0 { "-" } else { "" };
    let w = watts.unsigned_abs();
    format!("{sign}{}.{:02}", w / 1000, (w % 1000) / 10)
}

/// The average power of every interval `readings` (any order) measure: (interval end, W), in
/// time order. An interval is measured by two readings exactly one interval apart.
fn interval_demands(readings: &[RegisterReading]) -> Vec<(DateTime<Utc>, i64)> {
    let mut sorted = readings.to_vec();
    sorted.sort_by_key(|r| (r.at, r.register_wh));
    sorted.dedup_by_key(|r| r.at);
    sorted
        .windows(2)
        .filter(|pair| (pair[1].at - pair[0].at).num_seconds() == INTERVAL_SECS)
        .map(|pair| {
            let wh = (pair[1].register_wh - pair[0].register_wh).max(0);
            (pair[1].at, wh * 3600 / INTERVAL_SECS)
        })
        .collect()
}

/// The intervals among `readings` (any order) whose demand exceeded `sanctioned_w`: how many.
pub fn intervals_over(readings: &[RegisterReading], sanctioned_w: i64) -> usize {
    interval_demands(readings)
        .iter()
        .filter(|(_, w)| *w > sanctioned_w)
        .count()
}

/// The highest demand among `readings` (any order): the interval's end and its average power in W.
/// None when no two readings are exactly one interval apart.
pub fn maximum(readings: &[RegisterReading]) -> Option<(DateTime<Utc>, i64)> {
    interval_demands(readings)
        .into_iter()
        // The largest; of equals, the earliest.
        .fold(
            None,
            |best: Option<(DateTime<Utc>, i64)>, (at, w)| match best {
                Some((_, top)) if top >= w => best,
                _ => Some((at, w)),
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reading(minutes: i64, register_wh: i64) -> RegisterReading {
        RegisterReading::import(
            DateTime::from_timestamp(1_795_824_000 + minutes * 60, 0).unwrap(),
            register_wh,
        )
    }

    #[test]
    fn the_largest_fifteen_minute_demand_counts_and_a_gap_says_nothing() {
        let readings = [
            reading(0, 1_000),
            reading(15, 1_250), // 250 Wh in 15 min: 1,000 W
            reading(30, 1_750), // 500 Wh: 2,000 W
            reading(75, 4_000), // 2,250 Wh over 45 min: not one interval
            reading(90, 4_300), // 300 Wh: 1,200 W
        ];
        assert_eq!(maximum(&readings), Some((reading(30, 0).at, 2_000)));
        assert_eq!(maximum(&readings[..1]), None);
        assert_eq!(maximum(&[reading(0, 0), reading(45, 9_000)]), None);
        // Over 1,100 W: the 2,000 W and 1,200 W intervals, not the gap's average.
        assert_eq!(intervals_over(&readings, 1_100), 2);
        assert_eq!(intervals_over(&readings, 2_000), 0);
        let rule = LoadRule {
            alert_after_intervals: 2,
            ..LoadRule::default()
        };
        assert_eq!(
            rule.excess(&readings, 1_100),
            Some(Excess {
                intervals: 2,
                max_demand_w: 2_000
            })
        );
        assert_eq!(
            rule.excess(&readings, 1_500),
            None,
            "one interval is not repeated"
        );
    }

    #[test]
    fn the_latest_run_over_ends_with_the_latest_interval_and_a_gap_or_a_trip_ends_it() {
        // 600 Wh a quarter-hour is 2,400 W; 300 Wh is 1,200 W.
        let readings = [
            reading(0, 0),
            reading(15, 600),
            reading(30, 900), // 1,200 W: breaks the run
            reading(45, 1_500),
            reading(60, 2_100),
            reading(75, 2_800), // 2,800 W
        ];
        assert_eq!(
            latest_run_over(&readings, 2_000, None),
            Some(OverRun {
                intervals: 3,
                from: reading(30, 0).at,
                until: reading(75, 0).at,
                max_w: 2_800
            })
        );
        // Only intervals that started at or after the latest trip count.
        assert_eq!(
            latest_run_over(&readings, 2_000, Some(reading(40, 0).at)).map(|r| r.intervals),
            Some(2)
        );
        // The latest interval under the load: no run.
        assert_eq!(latest_run_over(&readings[..3], 2_000, None), None);
        // A missing reading ends a run.
        let gap = [
            reading(0, 0),
            reading(15, 600),
            reading(45, 1_800),
            reading(60, 2_400),
        ];
        assert_eq!(
            latest_run_over(&gap, 2_000, None).map(|r| r.intervals),
            Some(1)
        );
    }

    fn trip(over: Option<u32>, tripped_at: Option<i64>) -> LoadTrip {
        LoadTrip {
            trip_after_intervals: 3,
            trip_minutes: 30,
            sanctioned_w: 2_000,
            over: over.map(|intervals| OverRun {
                intervals,
                from: reading(60 - 15 * i64::from(intervals), 0).at,
                until: reading(60, 0).at,
                max_w: 2_400,
            }),
            tripped_at: tripped_at.map(|m| reading(m, 0).at),
        }
    }

    #[test]
    fn a_trip_needs_enough_fresh_intervals_and_its_lockout_ends_exactly_on_time() {
        let at = |minutes| reading(minutes, 0).at;
        assert_eq!(trip(Some(2), None).off_until(at(61)), None);
        assert_eq!(trip(Some(3), None).off_until(at(61)), Some(at(91)));
        assert_eq!(trip(Some(3), None).off_until(at(120)), Some(at(150)));
        assert_eq!(trip(Some(3), None).off_until(at(121)), None, "stale");
        let off = LoadTrip {
            trip_after_intervals: 0,
            ..trip(Some(10), None)
        };
        assert_eq!(off.off_until(at(61)), None);
        // Tripped at 61: off until 91 exactly, and the run that caused it trips nothing again.
        let tripped = trip(Some(3), Some(61));
        assert!(tripped.in_lockout(at(61)) && tripped.in_lockout(at(90)));
        assert_eq!(tripped.off_until(at(90)), Some(at(91)));
        assert!(!tripped.in_lockout(at(91)));
        assert_eq!(tripped.off_until(at(91)), None);
    }

    #[test]
    fn a_trip_setting_out_of_range_is_refused() {
        let on = |after, minutes| LoadRule {
            trip_after_intervals: after,
            trip_minutes: minutes,
            ..LoadRule::default()
        };
        assert_eq!(LoadRule::default().validate(), Ok(()));
        assert_eq!(
            on(0, 0).validate(),
            Ok(()),
            "off: the lockout is not looked at"
        );
        assert_eq!(on(4, 30).validate(), Ok(()));
        assert!(on(4, 0).validate().unwrap_err().contains("trip_minutes"));
        assert!(on(97, 30)
            .validate()
            .unwrap_err()
            .contains("trip_after_intervals"));
    }

    #[test]
    fn kilowatts_have_two_decimals() {
        assert_eq!(kilowatts(2_450), "2.45");
        assert_eq!(kilowatts(2_000), "2.00");
        assert_eq!(kilowatts(999), "0.99");
        assert_eq!(kilowatts(-1_500), "-1.50");
    }

    proptest! {
        #[test]
        fn the_maximum_does_not_depend_on_the_order_or_repeats_of_readings(
            steps in proptest::collection::vec((1i64..4, 0i64..2_000), 1..30),
            seed in any::<u64>(),
        ) {
            let mut minutes = 0;
            let mut register = 0;
            let mut readings = vec![reading(0, 0)];
            for (intervals, wh) in steps {
                minutes += intervals * 15;
                register += wh;
                readings.push(reading(minutes, register));
            }
            let expected = maximum(&readings);
            let mut shuffled = readings.clone();
            shuffled.extend(readings.iter().take(3).copied());
            crate::testing::shuffle(&mut shuffled, seed);
            prop_assert_eq!(maximum(&shuffled), expected);
            prop_assert_eq!(intervals_over(&shuffled, 1_000), intervals_over(&readings, 1_000));
        }
    }
}
