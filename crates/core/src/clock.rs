//! Whether the gateway may trust its own clock: the rule that keeps disconnects off a wrong clock.
//!
//! A Raspberry Pi has no battery-backed clock: after a power cut with no backhaul it boots at the
//! last time it saved, hours or days in the past, and nothing corrects it until NTP or a sync. The
//! rule (pure; the gateway stores the state):
//! 1. Every policy pass on a trusted clock raises a *high-water mark* to "now".
//! 2. The clock is untrusted while it reads more than [`BACKWARDS_TOLERANCE`] before the high-water
//!    mark (it went backwards), or while the last sync measured it off from the central server's
//!    clock by more than `max_skew`.
//! 3. Trust returns when the clock is past the high-water mark again and the last sync measured it
//!    within `max_skew` (a sync that finds it right clears an earlier skew).
//! 4. While untrusted, no disconnect is carried out (reconnects still are), and each measured skew is
//!    uploaded as a `ClockSkew` event so the office can judge the times the gateway recorded.
use chrono::{DateTime, Duration, Utc};

/// How far the clock may step back (NTP corrections, a slow RTC) before it is distrusted.
pub const BACKWARDS_TOLERANCE: Duration = Duration::minutes(5);

/// What the gateway remembers about its clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockState {
    /// The latest "now" of a policy pass on a trusted clock (UTC); None before the first one.
    pub high_water: Option<DateTime<Utc>>,
    /// Gateway clock minus central clock, as measured by the last sync.
    pub last_skew: Option<Duration>,
}

/// Whether the clock reading `now` can be trusted.
pub fn trusted(state: ClockState, now: DateTime<Utc>, max_skew: Duration) -> bool {
    let skewed = state.last_skew.is_some_and(|s| s.abs() > max_skew);
    !went_back(state, now) && !skewed
}

/// Whether the clock reading `now` is more than [`BACKWARDS_TOLERANCE`] before the high-water mark.
pub fn went_back(state: ClockState, now: DateTime<Utc>) -> bool {
    state
        .high_water
        .is_some_and(|hw| now < hw - BACKWARDS_TOLERANCE)
}

/// The skew measured by one exchange: the gateway's midpoint between sending and receiving minus
/// the central server's time (network delay cancels out to first order).
pub fn measure(
    sent_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    central_time: DateTime<Utc>,
) -> Duration {
    let midpoint = sent_at + (received_at - sent_at) / 2;
    midpoint - central_time
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_clock_that_went_back_or_is_skewed_is_not_trusted() {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 5, 0, 0).unwrap();
        let max = Duration::minutes(2);
        let fresh = ClockState::default();
        assert!(trusted(fresh, t, max));
        let seen = ClockState {
            high_water: Some(t),
            last_skew: None,
        };
        assert!(trusted(seen, t - Duration::minutes(4), max));
        assert!(
            !trusted(seen, t - Duration::hours(30), max),
            "booted at an old saved time"
        );
        let skewed = ClockState {
            last_skew: Some(Duration::minutes(-3)),
            ..seen
        };
        assert!(!trusted(skewed, t, max));
        let corrected = ClockState {
            last_skew: Some(Duration::seconds(1)),
            ..seen
        };
        assert!(trusted(corrected, t + Duration::hours(1), max));
    }

    #[test]
    fn skew_is_measured_at_the_round_trip_midpoint() {
        let sent = Utc.with_ymd_and_hms(2026, 12, 1, 5, 0, 0).unwrap();
        let received = sent + Duration::seconds(4);
        assert_eq!(
            measure(sent, received, sent + Duration::seconds(2)),
            Duration::zero()
        );
        assert_eq!(
            measure(sent, received, sent - Duration::hours(1)),
            Duration::seconds(3602)
        );
    }
}
