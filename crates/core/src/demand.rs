//! Maximum demand: a meter's average power over each demand interval, from its cumulative register
//! readings, the largest of a month, and the intervals above a sanctioned load.
//!
//! Pure. Demand is measured only over a span of exactly one interval between two readings (a
//! longer span after missed readings says nothing about any one interval), so the result depends
//! on the set of readings only.
use crate::rating::RegisterReading;
use crate::tariff::INTERVAL_SECS;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// When drawing more than the sanctioned load is worth the office's attention (the `[load]` table
/// of the gateway config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadRule {
    /// A month is flagged once this many of its intervals were above the sanctioned load.
    pub alert_after_intervals: usize,
}

impl Default for LoadRule {
    fn default() -> Self {
        LoadRule {
            alert_after_intervals: 3,
        }
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
        RegisterReading {
            at: DateTime::from_timestamp(1_795_824_000 + minutes * 60, 0).unwrap(),
            register_wh,
        }
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
