//! Maximum demand: a meter's average power over each demand interval, from its cumulative register
//! readings, and the largest of a month.
//!
//! Pure. Demand is measured only over a span of exactly one interval between two readings (a
//! longer span after missed readings says nothing about any one interval), so the result depends
//! on the set of readings only.
use crate::rating::RegisterReading;
use crate::tariff::INTERVAL_SECS;
use chrono::{DateTime, Utc};

/// The highest demand among `readings` (any order): the interval's end and its average power in W.
/// None when no two readings are exactly one interval apart.
pub fn maximum(readings: &[RegisterReading]) -> Option<(DateTime<Utc>, i64)> {
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
        }
    }
}
