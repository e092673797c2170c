//! Where the imperative shell reads "now": the system clock, or a simulated clock the demo steers.
//!
//! The pure core never reads a clock; the shell (central's handlers, the gateway's sync client and
//! policy loop) asks a [`WallClock`]. In production that is the system clock. `gramgrid demo` runs
//! days in seconds, so central, the gateway and the sync between them must agree on one simulated
//! time (the clock-trust rule compares them): it hands them a [`SimulatedClock`] and moves it.
use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex};

/// A source of "now" for the shell.
#[derive(Debug, Clone, Default)]
pub enum WallClock {
    /// The machine's clock.
    #[default]
    System,
    /// A clock the caller sets (see [`SimulatedClock`]).
    Simulated(SimulatedClock),
}

impl WallClock {
    /// The current time (UTC) by this clock.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            WallClock::System => Utc::now(),
            WallClock::Simulated(clock) => clock.now(),
        }
    }
}

/// A simulated clock: stands still at the time it was last set, or runs at real speed from a
/// simulated instant once [`SimulatedClock::run_from`] is called. Clones share one time.
#[derive(Debug, Clone)]
pub struct SimulatedClock(Arc<Mutex<Mode>>);

#[derive(Debug, Clone, Copy)]
enum Mode {
    Stopped(DateTime<Utc>),
    /// Simulated time = system time + this offset.
    Running(Duration),
}

impl SimulatedClock {
    /// A clock standing still at `at`.
    pub fn stopped_at(at: DateTime<Utc>) -> Self {
        SimulatedClock(Arc::new(Mutex::new(Mode::Stopped(at))))
    }

    /// The simulated time now (UTC).
    pub fn now(&self) -> DateTime<Utc> {
        match *self.mode() {
            Mode::Stopped(at) => at,
            Mode::Running(offset) => Utc::now() + offset,
        }
    }

    /// Stops the clock at `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.mode() = Mode::Stopped(at);
    }

    /// Lets the clock run at real speed, reading `at` now.
    pub fn run_from(&self, at: DateTime<Utc>) {
        *self.mode() = Mode::Running(at - Utc::now());
    }

    fn mode(&self) -> std::sync::MutexGuard<'_, Mode> {
        // The mode is a plain value, always whole: a panic elsewhere cannot leave it half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl From<SimulatedClock> for WallClock {
    fn from(clock: SimulatedClock) -> Self {
        WallClock::Simulated(clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_simulated_clock_stands_still_until_told_to_run() {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 4, 30, 0).unwrap();
        let clock = SimulatedClock::stopped_at(t);
        let shared = WallClock::from(clock.clone());
        assert_eq!(shared.now(), t);
        clock.set(t + Duration::hours(3));
        assert_eq!(
            shared.now(),
            t + Duration::hours(3),
            "clones share one time"
        );
        clock.run_from(t + Duration::days(2));
        let read = shared.now();
        assert!(
            read >= t + Duration::days(2) && read < t + Duration::days(2) + Duration::minutes(1)
        );
        assert!(WallClock::System.now() > t - Duration::days(3650));
    }
}
