//! Relay command lifecycle: queued → sent (retried with backoff) → acknowledged, failed, timed out
//! or withdrawn.
//!
//! A command counts as done only when the meter *reports* the relay in the commanded state; a radio
//! acknowledgement alone proves nothing about the contactor. A disconnect the policy no longer wants
//! before the meter confirmed it is withdrawn, and the policy decides again. Pure: the caller
//! supplies "now".
use crate::policy::{RelayAction, RelayState};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Waiting for its first transmission.
    Queued,
    /// Transmitted at least once; waiting for the meter to report the commanded relay state.
    Sent,
    /// The meter reported its relay in the commanded state: done.
    Acknowledged,
    /// Could not be sent at all (e.g. the meter has no keys); needs a person.
    Failed,
    /// Sent `max_attempts` times without the meter confirming; raises an alert.
    TimedOut,
    /// A disconnect no longer wanted (window closed, holiday, balance recharged) before the meter
    /// confirmed it; the policy decides again.
    Withdrawn,
}

impl CommandState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Sent => "sent",
            CommandState::Acknowledged => "acknowledged",
            CommandState::Failed => "failed",
            CommandState::TimedOut => "timed_out",
            CommandState::Withdrawn => "withdrawn",
        }
    }

    /// Whether the command is still being worked on.
    pub fn is_open(self) -> bool {
        matches!(self, CommandState::Queued | CommandState::Sent)
    }
}

/// Retry settings (the `[relay]` table of the gateway config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Wait after the first send before sending again.
    #[serde(with = "humantime_serde")]
    pub first_retry_after: std::time::Duration,
    /// The wait doubles after each send up to this.
    #[serde(with = "humantime_serde")]
    pub max_retry_interval: std::time::Duration,
    /// Sends before giving up.
    pub max_attempts: u32,
    /// After a command times out, the same action is not issued again for this long (the meter is
    /// probably unreachable; an alert has been raised).
    #[serde(with = "humantime_serde")]
    pub reissue_after: std::time::Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_retry_after: std::time::Duration::from_secs(60),
            max_retry_interval: std::time::Duration::from_secs(15 * 60),
            max_attempts: 6,
            reissue_after: std::time::Duration::from_secs(3600),
        }
    }
}

/// The facts of one command that the schedule depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandProgress {
    /// Where the command is in its life.
    pub state: CommandState,
    /// How many times it has been transmitted so far.
    pub attempts: u32,
    /// When it was last transmitted (UTC); None if never.
    pub last_sent_at: Option<DateTime<Utc>>,
}

/// What to do with an open command now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Transmit (again) now.
    Send,
    /// Nothing before this instant.
    WaitUntil(DateTime<Utc>),
    /// Give up and raise an alert.
    TimeOut,
    /// Closed; nothing to do.
    Done,
}

impl RetryPolicy {
    /// The wait after the `attempt`-th send (1-based): doubling from `first_retry_after`, capped.
    pub fn wait_after(&self, attempt: u32) -> Duration {
        let first = Duration::from_std(self.first_retry_after).unwrap_or(Duration::MAX);
        let cap = Duration::from_std(self.max_retry_interval).unwrap_or(Duration::MAX);
        let factor = 1i32
            .checked_shl(attempt.saturating_sub(1).min(30))
            .unwrap_or(i32::MAX);
        first.checked_mul(factor).unwrap_or(cap).min(cap)
    }

    /// The next step for a command.
    pub fn next_step(&self, progress: CommandProgress, now: DateTime<Utc>) -> Step {
        if !progress.state.is_open() {
            return Step::Done;
        }
        let Some(last) = progress.last_sent_at else {
            return Step::Send;
        };
        let due = last + self.wait_after(progress.attempts);
        match (now >= due, progress.attempts >= self.max_attempts) {
            (false, _) => Step::WaitUntil(due),
            (true, true) => Step::TimeOut,
            (true, false) => Step::Send,
        }
    }

    /// Whether a command still stands in the way of issuing its action again: it is open, or it timed
    /// out less than `reissue_after` ago.
    pub fn blocks_reissue(&self, progress: CommandProgress, now: DateTime<Utc>) -> bool {
        let cooling = Duration::from_std(self.reissue_after).unwrap_or(Duration::MAX);
        progress.state.is_open()
            || (progress.state == CommandState::TimedOut
                && progress.last_sent_at.is_some_and(|t| now - t < cooling))
    }
}

/// Whether a relay state reported by the meter confirms a command.
pub fn confirms(action: RelayAction, reported: RelayState) -> bool {
    action.target() == reported
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retries_back_off_then_time_out() {
        let policy = RetryPolicy::default();
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 5, 0, 0).unwrap();
        let queued = CommandProgress {
            state: CommandState::Queued,
            attempts: 0,
            last_sent_at: None,
        };
        assert_eq!(policy.next_step(queued, t0), Step::Send);
        let waits: Vec<i64> = (1..=6)
            .map(|a| policy.wait_after(a).num_seconds())
            .collect();
        assert_eq!(waits, vec![60, 120, 240, 480, 900, 900]);
        let sent = CommandProgress {
            state: CommandState::Sent,
            attempts: 2,
            last_sent_at: Some(t0),
        };
        assert_eq!(
            policy.next_step(sent, t0 + Duration::seconds(119)),
            Step::WaitUntil(t0 + Duration::seconds(120))
        );
        assert_eq!(
            policy.next_step(sent, t0 + Duration::seconds(120)),
            Step::Send
        );
        let last = CommandProgress {
            attempts: 6,
            ..sent
        };
        assert_eq!(
            policy.next_step(last, t0 + Duration::seconds(900)),
            Step::TimeOut
        );
        let done = CommandProgress {
            state: CommandState::Acknowledged,
            ..last
        };
        assert_eq!(policy.next_step(done, t0), Step::Done);
    }

    #[test]
    fn a_withdrawn_command_is_closed_and_does_not_block_a_new_decision() {
        let policy = RetryPolicy::default();
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 8, 29, 0).unwrap();
        let withdrawn = CommandProgress {
            state: CommandState::Withdrawn,
            attempts: 1,
            last_sent_at: Some(t0),
        };
        assert!(!withdrawn.state.is_open());
        assert_eq!(
            policy.next_step(withdrawn, t0 + Duration::minutes(5)),
            Step::Done
        );
        assert!(!policy.blocks_reissue(withdrawn, t0 + Duration::minutes(1)));
        let timed_out = CommandProgress {
            state: CommandState::TimedOut,
            ..withdrawn
        };
        assert!(policy.blocks_reissue(timed_out, t0 + Duration::minutes(1)));
    }

    #[test]
    fn only_the_commanded_state_confirms() {
        assert!(confirms(RelayAction::Disconnect, RelayState::Disconnected));
        assert!(!confirms(RelayAction::Disconnect, RelayState::Connected));
        assert!(!confirms(RelayAction::Connect, RelayState::Unknown));
    }
}
