//! The village's supply in the simulation: what each household draws, through its meter or
//! around it, adds up interval by interval to what the distribution transformer delivers, and the
//! transformer meter reads that plus the loss of the lines.
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// What the households drew in each interval, less what rooftop-solar homes fed in (Wh by
/// interval start), shared by a village's meters and its transformer meter.
#[derive(Debug, Clone, Default)]
pub struct Feeder(Arc<Mutex<BTreeMap<i64, i64>>>);

impl Feeder {
    /// A household drew `wh` in the interval starting at `start`.
    pub fn draw(&self, start: DateTime<Utc>, wh: u64) {
        *self.lock().entry(start.timestamp()).or_default() += i64::try_from(wh).unwrap_or(0);
    }

    /// A rooftop-solar home fed `wh` into the lines in the interval starting at `start`: its
    /// neighbours use it, so the transformer delivers that much less.
    pub fn feed(&self, start: DateTime<Utc>, wh: u64) {
        *self.lock().entry(start.timestamp()).or_default() -= i64::try_from(wh).unwrap_or(0);
    }

    /// What the transformer delivered to the households in the intervals starting after `after`
    /// (from the first when None) up to and including the one starting at `through` (an interval
    /// where the village fed in more than it drew delivers nothing).
    pub fn drawn_between(&self, after: Option<DateTime<Utc>>, through: DateTime<Utc>) -> u64 {
        let after = after.map_or(std::ops::Bound::Unbounded, |at| {
            std::ops::Bound::Excluded(at.timestamp())
        });
        self.lock()
            .range((after, std::ops::Bound::Included(through.timestamp())))
            .map(|(_, wh)| u64::try_from(*wh).unwrap_or(0))
            .sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A household that takes its supply around its meter in some hours of the day from some date:
/// the meter records nothing then, and an extra load runs besides the household's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bypass {
    /// From when (true time).
    pub from: DateTime<Utc>,
    /// Local (IST) hours of each day, e.g. `18..23`.
    pub hours: Range<u32>,
    /// The extra load's energy per interval, Wh.
    pub extra_wh: u64,
}

impl Bypass {
    /// Whether the interval starting at `start` is bypassed.
    pub fn covers(&self, start: DateTime<Utc>) -> bool {
        start >= self.from && self.hours.contains(&super::profile::local_hour(start))
    }
}

/// How a simulated meter is connected to the village's supply.
#[derive(Debug, Clone)]
pub enum Supply {
    /// A household's meter: what the household draws is added to the feeder, bypassed or not.
    Household {
        /// The village's feeder.
        feeder: Feeder,
        /// Whether, and when, the household goes around its meter.
        bypass: Option<Bypass>,
    },
    /// The transformer's meter: it reads what the households drew plus the lines' loss.
    Transformer {
        /// The village's feeder.
        feeder: Feeder,
        /// The lines' and the transformer's loss, in percent of what the households drew.
        loss_percent: u64,
    },
}

impl Supply {
    /// The interval a capture at the end of the interval starting at `start` logs. The
    /// transformer meter logs the interval before: by then every household meter (their clocks
    /// are off by up to half a minute) has added that interval to the feeder.
    pub fn logged_interval(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Supply::Household { .. } => start,
            Supply::Transformer { .. } => {
                start - Duration::seconds(i64::from(gramgrid_proto::payload::INTERVAL_SECS))
            }
        }
    }
}
