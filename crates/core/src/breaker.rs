//! The disconnection circuit breaker: holds all of a pass's disconnections when they are too many, or
//! when a wrong cut is likely, until a supervisor releases them. Reconnections are never held.
//!
//! Pure: the gateway gathers [`PassFacts`], asks [`admit`] which of the disconnections its policy
//! pass wants may go, and stores the hold it returns. A supervisor's [`Release`] names one hold and
//! lets exactly that hold's accounts go, in one pass; it is never a standing switch (the gateway
//! consumes it), and accounts it does not name are judged as usual.
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Breaker settings (the `[policy.breaker]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Hold when one local day's disconnections would exceed this share of the gateway's accounts.
    pub max_share_percent: u8,
    /// ... but a day may always have this many, whatever the share (small villages).
    pub always_allowed: u32,
    /// Hold when a day's disconnections would exceed this multiple of the recent daily average
    /// (needs at least [`MIN_BASELINE_DAYS`] days of history; never below `always_allowed`).
    pub baseline_factor: u32,
    /// Hold every disconnection for this long after a policy or tariff change, a clock jump, or a
    /// restored or replaced database.
    #[serde(with = "humantime_serde")]
    pub hold_after_change: std::time::Duration,
    /// Hold every disconnection while the last sync with central is older than this (recharges
    /// made at the office have not reached the gateway).
    #[serde(with = "humantime_serde")]
    pub max_sync_gap: std::time::Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            max_share_percent: 10,
            always_allowed: 3,
            baseline_factor: 4,
            hold_after_change: std::time::Duration::from_secs(24 * 3600),
            max_sync_gap: std::time::Duration::from_secs(3 * 24 * 3600),
        }
    }
}

/// Days of history the baseline rule needs before it applies.
pub const MIN_BASELINE_DAYS: usize = 7;

/// Complete days before today that make the baseline (at most).
pub const BASELINE_DAYS: i64 = 14;

impl BreakerConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_share_percent > 100 {
            return Err(format!(
                "policy.breaker.max_share_percent = {} must be 0 to 100",
                self.max_share_percent
            ));
        }
        Ok(())
    }

    /// The most disconnections a local day may have without a release.
    pub fn daily_limit(&self, accounts: usize) -> usize {
        let share = accounts.saturating_mul(usize::from(self.max_share_percent)) / 100;
        share.max(self.always_allowed as usize)
    }
}

/// What the gateway knows when a pass wants to disconnect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassFacts {
    /// Accounts with a meter in service at the gateway.
    pub accounts: usize,
    /// Disconnections already queued this local day (before this pass).
    pub disconnected_today: usize,
    /// Disconnections queued on each of the recent complete local days (the baseline).
    pub recent_days: Vec<usize>,
    /// When the policy in force replaced an earlier one (not the first policy).
    pub policy_changed_at: Option<DateTime<Utc>>,
    /// When the newest tariff version took effect, if it replaced an earlier one.
    pub tariff_changed_at: Option<DateTime<Utc>>,
    /// False while the gateway doubts its clock.
    pub clock_trusted: bool,
    /// When the clock was last set right after it had gone backwards.
    pub clock_jumped_at: Option<DateTime<Utc>>,
    /// When central last found this database restored from a backup or replaced.
    pub database_restored_at: Option<DateTime<Utc>>,
    /// The last successful sync with central; None if the gateway never synced (it runs on its
    /// config file).
    pub last_sync_at: Option<DateTime<Utc>>,
    /// False when the last ledger check (`gateway verify`) found an inconsistency.
    pub ledger_consistent: bool,
}

/// Why the breaker holds a pass's disconnections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Trip {
    /// The day's disconnections would exceed the share of the gateway's accounts.
    TooMany {
        /// Disconnections today including this pass's.
        wanted: usize,
        /// The day's limit ([`BreakerConfig::daily_limit`]).
        limit: usize,
        /// Accounts at the gateway.
        accounts: usize,
    },
    /// The day's disconnections would jump far above the gateway's recent average.
    AboveBaseline {
        /// Disconnections today including this pass's.
        wanted: usize,
        /// The recent daily average, in tenths.
        average_tenths: usize,
        /// The most the baseline rule allows today.
        limit: usize,
    },
    /// A new policy took effect recently.
    PolicyChanged {
        /// When it took effect.
        at: DateTime<Utc>,
    },
    /// A new tariff version took effect recently.
    TariffChanged {
        /// When it took effect.
        at: DateTime<Utc>,
    },
    /// The gateway does not trust its clock.
    ClockUntrusted,
    /// The clock went back, and was set right recently.
    ClockJumped {
        /// When it was right again.
        at: DateTime<Utc>,
    },
    /// The database was restored from a backup or replaced recently.
    DatabaseRestored {
        /// When central found it.
        at: DateTime<Utc>,
    },
    /// No sync with central for longer than allowed.
    SyncGap {
        /// The last successful sync.
        last: DateTime<Utc>,
    },
    /// The ledger check found an inconsistency.
    LedgerInconsistent,
}

/// A time as the office reads it: Asia/Kolkata.
fn ist(at: &DateTime<Utc>) -> String {
    crate::civil::local(*at)
        .format("%Y-%m-%d %H:%M IST")
        .to_string()
}

impl std::fmt::Display for Trip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trip::TooMany {
                wanted,
                limit,
                accounts,
            } => write!(
                f,
                "{wanted} disconnections today would exceed the limit of {limit} for {accounts} accounts"
            ),
            Trip::AboveBaseline {
                wanted,
                average_tenths,
                limit,
            } => write!(
                f,
                "{wanted} disconnections today would exceed {limit}, far above the recent average of {}.{} a day",
                average_tenths / 10,
                average_tenths % 10
            ),
            Trip::PolicyChanged { at } => write!(f, "a new policy took effect at {}", ist(at)),
            Trip::TariffChanged { at } => write!(f, "a new tariff took effect at {}", ist(at)),
            Trip::ClockUntrusted => write!(f, "the clock is not trusted"),
            Trip::ClockJumped { at } => {
                write!(f, "the clock went back (right again at {})", ist(at))
            }
            Trip::DatabaseRestored { at } => {
                write!(f, "the database was restored or replaced (found at {})", ist(at))
            }
            Trip::SyncGap { last } => write!(f, "no sync with central since {}", ist(last)),
            Trip::LedgerInconsistent => write!(f, "the ledger check found an inconsistency"),
        }
    }
}

/// A supervisor's release of one hold: the accounts it held may be disconnected in one pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The hold released.
    pub hold_id: String,
    /// The accounts that hold held.
    pub accounts: BTreeSet<String>,
}

/// What the breaker lets a pass do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Accounts whose disconnection may be queued now.
    pub admitted: Vec<String>,
    /// Accounts whose disconnection is held (empty when nothing trips).
    pub held: Vec<String>,
    /// Why they are held.
    pub trips: Vec<Trip>,
    /// The release was used in this pass (the gateway marks it consumed).
    pub release_used: bool,
}

/// Which of the disconnections a pass wants (`wanted`, account ids) may go at `now`. Accounts named
/// by `release` go (the supervisor looked at them); the others go only if nothing trips, counting
/// the released ones among the day's disconnections. All or nothing: a tripped breaker holds every
/// unreleased disconnection of the pass.
pub fn admit(
    config: &BreakerConfig,
    facts: &PassFacts,
    wanted: &[String],
    release: Option<&Release>,
    now: DateTime<Utc>,
) -> Admission {
    let (released, rest): (Vec<String>, Vec<String>) = wanted
        .iter()
        .cloned()
        .partition(|a| release.is_some_and(|r| r.accounts.contains(a)));
    let release_used = !released.is_empty();
    if rest.is_empty() {
        return Admission {
            admitted: released,
            release_used,
            ..Admission::default()
        };
    }
    let trips = trips(config, facts, released.len() + rest.len(), now);
    let (admitted, held) = if trips.is_empty() {
        ([released, rest].concat(), Vec::new())
    } else {
        (released, rest)
    };
    Admission {
        admitted,
        held,
        trips,
        release_used,
    }
}

/// Every reason to hold a pass that would queue `count` disconnections.
pub fn trips(
    config: &BreakerConfig,
    facts: &PassFacts,
    count: usize,
    now: DateTime<Utc>,
) -> Vec<Trip> {
    let mut trips = Vec::new();
    let wanted = facts.disconnected_today + count;
    let limit = config.daily_limit(facts.accounts);
    if wanted > limit {
        trips.push(Trip::TooMany {
            wanted,
            limit,
            accounts: facts.accounts,
        });
    }
    if let Some(trip) = above_baseline(config, facts, wanted) {
        trips.push(trip);
    }
    let recent = |at: Option<DateTime<Utc>>| {
        let window = Duration::from_std(config.hold_after_change).unwrap_or(Duration::MAX);
        at.filter(|at| *at <= now && now - *at < window)
    };
    if let Some(at) = recent(facts.policy_changed_at) {
        trips.push(Trip::PolicyChanged { at });
    }
    if let Some(at) = recent(facts.tariff_changed_at) {
        trips.push(Trip::TariffChanged { at });
    }
    if !facts.clock_trusted {
        trips.push(Trip::ClockUntrusted);
    }
    if let Some(at) = recent(facts.clock_jumped_at) {
        trips.push(Trip::ClockJumped { at });
    }
    if let Some(at) = recent(facts.database_restored_at) {
        trips.push(Trip::DatabaseRestored { at });
    }
    let gap = Duration::from_std(config.max_sync_gap).unwrap_or(Duration::MAX);
    if let Some(last) = facts.last_sync_at.filter(|last| now - *last > gap) {
        trips.push(Trip::SyncGap { last });
    }
    if !facts.ledger_consistent {
        trips.push(Trip::LedgerInconsistent);
    }
    trips
}

fn above_baseline(config: &BreakerConfig, facts: &PassFacts, wanted: usize) -> Option<Trip> {
    let days = facts.recent_days.len();
    if days < MIN_BASELINE_DAYS || config.baseline_factor == 0 {
        return None;
    }
    let total: usize = facts.recent_days.iter().sum();
    let average_tenths = total * 10 / days;
    // The factor times the average, rounded up, never below the day's floor.
    let limit = (total * config.baseline_factor as usize)
        .div_ceil(days)
        .max(config.always_allowed as usize);
    (wanted > limit).then_some(Trip::AboveBaseline {
        wanted,
        average_tenths,
        limit,
    })
}

#[cfg(test)]
mod tests;
