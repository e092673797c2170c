//! systemd's watchdog: the daemon pings it only while its meter link, policy loop and store are alive, so a hung loop gets the unit restarted.
//!
//! Under systemd (`Type=notify`, `WatchdogSec=`), the daemon says `READY=1` once it serves,
//! `STOPPING=1` when told to stop, and `WATCHDOG=1` every half watchdog period while
//! [`check`] finds every part alive. Outside systemd (no `NOTIFY_SOCKET`) all of it is a no-op.
use crate::gateway::Gateway;
use crate::link::SharedStats;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When each loop last showed it was alive (monotonic, so a clock correction is no stall).
#[derive(Debug, Clone, Default)]
pub struct Heartbeats {
    policy: Arc<Mutex<Option<Instant>>>,
}

impl Heartbeats {
    /// The policy loop finished a pass (whatever its outcome: a failed pass is a live loop).
    pub fn policy_pass(&self) {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn last_policy_pass(&self) -> Option<Instant> {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one check saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vitals {
    /// Since the daemon started.
    pub up: Duration,
    /// Since the meter link's loop last turned; None when it never did, or no radio runs.
    pub radio_idle: Option<Duration>,
    /// Whether a radio runs.
    pub radio_runs: bool,
    /// Since the policy loop's last pass; None before the first.
    pub policy_idle: Option<Duration>,
    /// Whether the store answered a read within [`STORE_ANSWER`].
    pub store_answered: bool,
}

/// How long each part may stay silent before the daemon counts as hung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest gap the policy schedule leaves between passes, plus the time a pass may take.
    pub policy: Duration,
    /// The meter link's loop turns at least every `link::IDLE_TURN`; this allows for long exchanges.
    pub radio: Duration,
}

/// How long the store may take to answer the check's read.
pub const STORE_ANSWER: Duration = Duration::from_secs(20);

/// Which part looks hung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stalled {
    /// The store did not answer (a stuck disk, or a pass holding it forever).
    #[error("the store did not answer within {STORE_ANSWER:?}")]
    Store,
    /// The policy loop has not finished a pass in time.
    #[error("the policy loop has not finished a pass for {0:?}")]
    Policy(Duration),
    /// The meter link's loop has not turned in time.
    #[error("the meter link has not turned for {0:?}")]
    Radio(Duration),
}

/// Whether every part is alive. A part that has not reported yet counts from the daemon's start.
pub fn check(vitals: &Vitals, limits: &Limits) -> Result<(), Stalled> {
    if !vitals.store_answered {
        return Err(Stalled::Store);
    }
    let policy_idle = vitals.policy_idle.unwrap_or(vitals.up);
    if policy_idle > limits.policy {
        return Err(Stalled::Policy(policy_idle));
    }
    if vitals.radio_runs {
        let radio_idle = vitals.radio_idle.unwrap_or(vitals.up);
        if radio_idle > limits.radio {
            return Err(Stalled::Radio(radio_idle));
        }
    }
    Ok(())
}

/// The limits for a policy schedule: its longest gap between two passes over the two days after
/// `now` (so every gap of a daily schedule is seen whole), plus five minutes for a pass.
pub fn limits_for(schedule: &cron::Schedule, now: chrono::DateTime<chrono::Utc>) -> Limits {
    let times: Vec<_> = schedule
        .after(&now)
        .take_while(|t| *t < now + chrono::Duration::days(2))
        .take(6_000)
        .collect();
    let gap = times
        .windows(2)
        .map(|w| (w[1] - w[0]).to_std().unwrap_or_default())
        .max()
        .unwrap_or(Duration::from_secs(24 * 3600));
    Limits {
        policy: gap + Duration::from_secs(300),
        radio: crate::link::IDLE_TURN * 4,
    }
}

/// Tells systemd the daemon serves (no-op outside systemd).
pub fn ready() {
    notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the daemon is stopping (no-op outside systemd).
pub fn stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(error) = sd_notify::notify(false, state) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

/// Pings systemd's watchdog every half period while [`check`] passes, until `stop`; returns at once
/// when the unit has no watchdog.
pub async fn run(
    gateway: Arc<Mutex<Gateway>>,
    (heartbeats, link): (Heartbeats, Option<SharedStats>),
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec) / 2;
    let started = Instant::now();
    let mut stalled_before = false;
    while !*stop.borrow() {
        let vitals = Vitals {
            up: started.elapsed(),
            radio_runs: link.is_some(),
            radio_idle: link.as_ref().and_then(|stats| {
                crate::link::read_stats(stats)
                    .last_turn
                    .map(|t| t.elapsed())
            }),
            policy_idle: heartbeats.last_policy_pass().map(|t| t.elapsed()),
            store_answered: store_answers(&gateway).await,
        };
        match check(&vitals, &limits) {
            Ok(()) => {
                notify(&[sd_notify::NotifyState::Watchdog]);
                stalled_before = false;
            }
            Err(stalled) if !stalled_before => {
                tracing::error!(%stalled, "not pinging systemd's watchdog: the daemon will be restarted unless this recovers");
                stalled_before = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Whether the store answers a small read within [`STORE_ANSWER`] (taking the gateway's lock, as
/// every loop does: a loop stuck while holding it stalls this too).
async fn store_answers(gateway: &Arc<Mutex<Gateway>>) -> bool {
    let gateway = gateway.clone();
    let probe = tokio::task::spawn_blocking(move || {
        let mut gateway = gateway.lock().unwrap_or_else(|p| p.into_inner());
        gateway.store().sync_cursors().is_ok()
    });
    matches!(
        tokio::time::timeout(STORE_ANSWER, probe).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn alive() -> Vitals {
        Vitals {
            up: S(3_600),
            radio_idle: Some(S(5)),
            radio_runs: true,
            policy_idle: Some(S(40)),
            store_answered: true,
        }
    }

    #[test]
    fn every_part_must_be_alive_for_a_ping() {
        let limits = limits_for(
            &cron::Schedule::from_str("0 * * * * *").unwrap(),
            chrono::Utc::now(),
        );
        assert_eq!(limits.policy, S(60 + 300));
        assert_eq!(check(&alive(), &limits), Ok(()));
        let stuck_store = Vitals {
            store_answered: false,
            ..alive()
        };
        assert_eq!(check(&stuck_store, &limits), Err(Stalled::Store));
        let stuck_policy = Vitals {
            policy_idle: Some(S(400)),
            ..alive()
        };
        assert_eq!(check(&stuck_policy, &limits), Err(Stalled::Policy(S(400))));
        let stuck_radio = Vitals {
            radio_idle: Some(S(121)),
            ..alive()
        };
        assert_eq!(check(&stuck_radio, &limits), Err(Stalled::Radio(S(121))));
        // No radio: its silence does not matter.
        let no_radio = Vitals {
            radio_runs: false,
            radio_idle: None,
            ..alive()
        };
        assert_eq!(check(&no_radio, &limits), Ok(()));
        // A loop that never reported counts from the start: fine at first, hung later.
        let fresh = Vitals {
            up: S(10),
            radio_idle: None,
            policy_idle: None,
            ..alive()
        };
        assert_eq!(check(&fresh, &limits), Ok(()));
        let never = Vitals {
            up: S(500),
            policy_idle: None,
            ..alive()
        };
        assert_eq!(check(&never, &limits), Err(Stalled::Policy(S(500))));
    }

    #[test]
    fn a_sparse_schedule_allows_its_longest_gap() {
        // Every 15 minutes from 06:00 to 21:45 UTC: the night gap is 8 h 15 min, whatever the
        // time of day the daemon starts.
        let schedule = cron::Schedule::from_str("0 */15 6-21 * * *").unwrap();
        let midnight = chrono::DateTime::parse_from_rfc3339("2026-11-29T00:00:00Z").unwrap();
        for hour in 0..24 {
            let now =
                midnight.with_timezone(&chrono::Utc) + chrono::Duration::minutes(hour * 60 + 49);
            assert_eq!(
                limits_for(&schedule, now).policy,
                S(8 * 3600 + 15 * 60 + 300),
                "{now}"
            );
        }
    }
}
