//! The ledger: an account's money events and the balance derived from them, in integer paise.
//!
//! Events are append-only and carry a globally unique id; folding a log that holds the same event
//! twice, or holds events in any order, gives the same balance. Energy charges are the rated readings
//! themselves (see `rating`); here they appear as [`EventKind::Charge`] events.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// What happened to an account's money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Money paid in (counter, app, voucher).
    Recharge,
    /// Energy charge and duty of rated readings.
    Charge,
    /// A day's share of the monthly fixed charge.
    FixedCharge,
    /// The top-up to the minimum monthly charge, at month end.
    MinimumCharge,
    /// A correction by the utility, either sign.
    Adjustment,
    /// A credit line granted until an expiry: lowers the disconnect threshold, not the balance.
    EmergencyCredit,
}

impl EventKind {
    /// The name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Recharge => "recharge",
            EventKind::Charge => "charge",
            EventKind::FixedCharge => "fixed_charge",
            EventKind::MinimumCharge => "minimum_charge",
            EventKind::Adjustment => "adjustment",
            EventKind::EmergencyCredit => "emergency_credit",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<EventKind> {
        [
            EventKind::Recharge,
            EventKind::Charge,
            EventKind::FixedCharge,
            EventKind::MinimumCharge,
            EventKind::Adjustment,
            EventKind::EmergencyCredit,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// One money event. `amount_paise` is the magnitude for recharges, charges and emergency credit
/// (never negative) and the signed correction for adjustments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEvent {
    /// Globally unique event id; a second event with the same id is a duplicate and counts once.
    pub id: String,
    /// The account whose money moved.
    pub account: String,
    /// When it happened (UTC).
    pub at: DateTime<Utc>,
    /// What kind of money event this is; decides the sign of its effect on the balance.
    pub kind: EventKind,
    /// Amount in paise: a magnitude (never negative) except for adjustments, which are signed.
    pub amount_paise: i64,
    /// Only for emergency credit: when the credit line lapses. Always serialized: the sync wire
    /// format (postcard) is not self-describing, so a skipped field would shift every later byte.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl LedgerEvent {
    /// How this event moves the balance.
    pub fn balance_effect(&self) -> i64 {
        match self.kind {
            EventKind::Recharge | EventKind::Adjustment => self.amount_paise,
            EventKind::Charge | EventKind::FixedCharge | EventKind::MinimumCharge => {
                -self.amount_paise
            }
            EventKind::EmergencyCredit => 0,
        }
    }
}

/// What the policy needs to know about an account's money, derived from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// Recharges plus adjustments minus charges, in paise; emergency credit is not included.
    pub balance_paise: i64,
    /// The latest recharge (by time, then id): the base of the low-balance alert levels.
    pub last_recharge: Option<LastRecharge>,
}

/// The most recent recharge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRecharge {
    /// The recharge's ledger event id.
    pub id: String,
    /// Amount paid in, in paise.
    pub amount_paise: i64,
    /// When it was paid in (UTC).
    pub at: DateTime<Utc>,
}

/// Folds events into a position; an id seen before is skipped, so duplicates count once.
pub fn position<'a>(events: impl IntoIterator<Item = &'a LedgerEvent>) -> Position {
    let mut seen = HashSet::new();
    let mut out = Position::default();
    for event in events {
        if !seen.insert(event.id.as_str()) {
            continue;
        }
        out.balance_paise += event.balance_effect();
        if event.kind == EventKind::Recharge {
            let newer = out
                .last_recharge
                .as_ref()
                .is_none_or(|last| (event.at, event.id.as_str()) > (last.at, last.id.as_str()));
            if newer {
                out.last_recharge = Some(LastRecharge {
                    id: event.id.clone(),
                    amount_paise: event.amount_paise,
                    at: event.at,
                });
            }
        }
    }
    out
}

/// Emergency credit in force at `now`: granted credit lines that have not expired and were granted
/// after the last recharge (a recharge repays and closes the credit line).
pub fn active_emergency_credit<'a>(
    events: impl IntoIterator<Item = &'a LedgerEvent>,
    last_recharge_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> i64 {
    let mut seen = HashSet::new();
    events
        .into_iter()
        .filter(|e| e.kind == EventKind::EmergencyCredit && seen.insert(e.id.as_str()))
        .filter(|e| e.at <= now && e.expires_at.is_none_or(|x| x > now))
        .filter(|e| last_recharge_at.is_none_or(|r| e.at > r))
        .map(|e| e.amount_paise)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn event(id: u32, kind: EventKind, amount_paise: i64, minute: i64) -> LedgerEvent {
        LedgerEvent {
            id: format!("e{id}"),
            account: "A1".into(),
            at: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
                + chrono::Duration::minutes(minute),
            kind,
            amount_paise,
            expires_at: None,
        }
    }

    fn kind_strategy() -> impl Strategy<Value = EventKind> {
        prop_oneof![
            Just(EventKind::Recharge),
            Just(EventKind::Charge),
            Just(EventKind::FixedCharge),
            Just(EventKind::MinimumCharge),
            Just(EventKind::EmergencyCredit),
        ]
    }

    proptest! {
        /// The final balance equals recharges minus charges, for any order and duplication of events.
        #[test]
        fn balance_is_recharges_minus_charges(
            specs in proptest::collection::vec((kind_strategy(), 0i64..1_000_000, 0i64..50_000), 0..80),
            duplicates in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40),
            shuffle in any::<u64>(),
        ) {
            let events: Vec<LedgerEvent> = specs
                .iter()
                .enumerate()
                .map(|(i, (kind, amount, minute))| event(i as u32, *kind, *amount, *minute))
                .collect();
            let recharged: i64 = events.iter().filter(|e| e.kind == EventKind::Recharge).map(|e| e.amount_paise).sum();
            let charged: i64 = events
                .iter()
                .filter(|e| matches!(e.kind, EventKind::Charge | EventKind::FixedCharge | EventKind::MinimumCharge))
                .map(|e| e.amount_paise)
                .sum();
            let mut log = events.clone();
            if !events.is_empty() {
                log.extend(duplicates.iter().map(|i| i.get(&events).clone()));
            }
            let mut rng = shuffle;
            for i in (1..log.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                log.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let position = position(&log);
            prop_assert_eq!(position.balance_paise, recharged - charged);
            let expected_last = events.iter().filter(|e| e.kind == EventKind::Recharge).max_by_key(|e| (e.at, e.id.clone())).map(|e| e.id.clone());
            prop_assert_eq!(position.last_recharge.map(|r| r.id), expected_last);
        }
    }

    #[test]
    fn emergency_credit_lapses_at_expiry_and_at_the_next_recharge() {
        let mut credit = event(1, EventKind::EmergencyCredit, 5_000, 10);
        credit.expires_at = Some(credit.at + chrono::Duration::days(3));
        let now = credit.at + chrono::Duration::days(1);
        assert_eq!(active_emergency_credit([&credit], None, now), 5_000);
        assert_eq!(
            active_emergency_credit([&credit, &credit], None, now),
            5_000
        );
        assert_eq!(
            active_emergency_credit([&credit], None, now + chrono::Duration::days(3)),
            0
        );
        assert_eq!(active_emergency_credit([&credit], Some(now), now), 0);
        assert_eq!(position([&credit]).balance_paise, 0);
    }
}
