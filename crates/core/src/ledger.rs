//! The ledger: an account's money events and the balance derived from them, in integer paise.
//!
//! Events are append-only and carry a globally unique id; folding a log that holds the same event
//! twice, or holds events in any order, gives the same balance. Energy charges are the rated readings
//! themselves (see `rating`); here they appear as [`EventKind::Charge`] events.
//!
//! Arrears carried over from post-paid ([`EventKind::Arrears`]) are a pot of their own: each
//! recharge made after them pays a share into it ([`ArrearsRule`], effective-dated), the rest is
//! credit. The total recovered is `min(arrears, Σ share of each recharge)`, a sum, so it too is the
//! same for any order in which events arrive, and every paisa of a recharge is either credit or
//! arrears recovered.
use crate::civil;
use chrono::{DateTime, NaiveDate, Utc};
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
    /// Arrears carried over when the account moved from post-paid: not part of the balance, but
    /// recovered from later recharges by the [`ArrearsRule`] in force.
    Arrears,
    /// The demand charge on a month's maximum demand, after the month ends.
    DemandCharge,
    /// Net metering's credit at a month's close: banked export used against its net units, and
    /// at the end of the settlement year the units still banked, paid (`core::netmeter`).
    ExportCredit,
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
            EventKind::Arrears => "arrears",
            EventKind::DemandCharge => "demand_charge",
            EventKind::ExportCredit => "export_credit",
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
            EventKind::Arrears,
            EventKind::DemandCharge,
            EventKind::ExportCredit,
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
            EventKind::Recharge | EventKind::Adjustment | EventKind::ExportCredit => {
                self.amount_paise
            }
            EventKind::Charge
            | EventKind::FixedCharge
            | EventKind::MinimumCharge
            | EventKind::DemandCharge => -self.amount_paise,
            EventKind::EmergencyCredit | EventKind::Arrears => 0,
        }
    }
}

/// What the policy needs to know about an account's money, derived from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// Recharges plus adjustments minus charges and arrears recovered, in paise; emergency credit
    /// is not included.
    pub balance_paise: i64,
    /// The latest recharge (by time, then id): the base of the low-balance alert levels.
    pub last_recharge: Option<LastRecharge>,
    /// Arrears carried over from post-paid and how much of them recharges have recovered.
    pub arrears: Arrears,
}

/// An account's arrears from post-paid, in paise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrears {
    /// Arrears recorded ([`EventKind::Arrears`] events).
    pub opening_paise: i64,
    /// Recovered so far from recharges.
    pub recovered_paise: i64,
}

impl Arrears {
    /// Still to be recovered.
    pub fn outstanding_paise(&self) -> i64 {
        self.opening_paise - self.recovered_paise
    }
}

/// How arrears are recovered from recharges, from a local date on (the version with the latest
/// `effective_from` on or before a recharge's date applies to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrearsRule {
    /// First local date the rule applies.
    pub effective_from: NaiveDate,
    /// Share of each recharge that goes to the arrears, in percent (0 to 100).
    pub recovery_percent: u8,
    /// At most this much of one recharge goes to the arrears (paise).
    pub max_per_recharge_paise: i64,
}

impl ArrearsRule {
    /// The default: a quarter of each recharge, at most 500 INR of it.
    pub fn default_rules() -> Vec<ArrearsRule> {
        NaiveDate::from_ymd_opt(2026, 1, 1)
            .map(|effective_from| ArrearsRule {
                effective_from,
                recovery_percent: 25,
                max_per_recharge_paise: 50_000,
            })
            .into_iter()
            .collect()
    }

    /// Checks the values serde cannot.
    pub fn validate(rules: &[ArrearsRule]) -> Result<(), String> {
        for rule in rules {
            if rule.recovery_percent > 100 || rule.max_per_recharge_paise < 0 {
                return Err(format!(
                    "arrears rule from {}: recovery_percent must be 0 to 100 and max_per_recharge_paise not negative",
                    rule.effective_from
                ));
            }
        }
        Ok(())
    }

    /// The part of a recharge of `amount_paise` on local date `date` that goes to the arrears,
    /// before the arrears themselves cap it.
    pub fn share(rules: &[ArrearsRule], amount_paise: i64, date: NaiveDate) -> i64 {
        rules
            .iter()
            .filter(|r| r.effective_from <= date)
            .max_by_key(|r| r.effective_from)
            .map(|r| {
                let share = amount_paise
                    .max(0)
                    .saturating_mul(i64::from(r.recovery_percent))
                    / 100;
                share.min(r.max_per_recharge_paise)
            })
            .unwrap_or(0)
    }
}

/// The most recent recharge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRecharge {
    /// The recharge's ledger event id.
    pub id: String,
    /// Amount paid in, in paise.
    pub amount_paise: i64,
    /// When it was paid in (UTC).
    pub at: DateTime<Utc>,
}

/// Folds events into a position under the arrears `rules`; an id seen before is skipped, so
/// duplicates count once.
pub fn position<'a>(
    events: impl IntoIterator<Item = &'a LedgerEvent>,
    rules: &[ArrearsRule],
) -> Position {
    let mut seen = HashSet::new();
    let mut unique = Vec::new();
    let mut out = Position::default();
    for event in events {
        if !seen.insert(event.id.as_str()) {
            continue;
        }
        unique.push(event);
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
    out.arrears = arrears(unique.iter().copied(), rules);
    out.balance_paise -= out.arrears.recovered_paise;
    out
}

/// Arrears and their recovery: the share ([`ArrearsRule::share`]) of every recharge made at or
/// after the first arrears event, capped by the arrears. Events must be unique by id.
pub fn arrears<'a>(
    events: impl IntoIterator<Item = &'a LedgerEvent> + Clone,
    rules: &[ArrearsRule],
) -> Arrears {
    let arrears_events = events
        .clone()
        .into_iter()
        .filter(|e| e.kind == EventKind::Arrears);
    let (opening_paise, since) = arrears_events.fold((0i64, None), |(sum, since), e| {
        let first = match since {
            Some(t) if t <= e.at => t,
            _ => e.at,
        };
        (sum.saturating_add(e.amount_paise.max(0)), Some(first))
    });
    let Some(since) = since else {
        return Arrears::default();
    };
    let shares: i64 = events
        .into_iter()
        .filter(|e| e.kind == EventKind::Recharge && e.at >= since)
        .map(|e| ArrearsRule::share(rules, e.amount_paise, civil::local_date(e.at)))
        .fold(0i64, i64::saturating_add);
    Arrears {
        opening_paise,
        recovered_paise: shares.min(opening_paise),
    }
}

/// How much each recharge paid into the arrears, for statements: recharges in time order (then
/// id) each pay their share until the arrears are cleared. The amounts add up to
/// [`Arrears::recovered_paise`]. Events must be unique by id.
pub fn arrears_by_recharge<'a>(
    events: impl IntoIterator<Item = &'a LedgerEvent> + Clone,
    rules: &[ArrearsRule],
) -> Vec<(String, i64)> {
    let mut left = arrears(events.clone(), rules).recovered_paise;
    let since = events
        .clone()
        .into_iter()
        .filter(|e| e.kind == EventKind::Arrears)
        .map(|e| e.at)
        .min();
    let mut recharges: Vec<&LedgerEvent> = events
        .into_iter()
        .filter(|e| e.kind == EventKind::Recharge && since.is_some_and(|s| e.at >= s))
        .collect();
    recharges.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    recharges
        .into_iter()
        .map(|r| {
            let paid = ArrearsRule::share(rules, r.amount_paise, civil::local_date(r.at)).min(left);
            left -= paid;
            (r.id.clone(), paid)
        })
        .collect()
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
            Just(EventKind::DemandCharge),
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
                .filter(|e| matches!(e.kind, EventKind::Charge | EventKind::FixedCharge | EventKind::MinimumCharge | EventKind::DemandCharge))
                .map(|e| e.amount_paise)
                .sum();
            let mut log = events.clone();
            if !events.is_empty() {
                log.extend(duplicates.iter().map(|i| i.get(&events).clone()));
            }
            crate::testing::shuffle(&mut log, shuffle);
            let position = position(&log, &ArrearsRule::default_rules());
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
        assert_eq!(position([&credit], &[]).balance_paise, 0);
    }

    proptest! {
        /// Every paisa of a recharge is either credit or arrears recovered; recovery never exceeds
        /// the arrears; and order or duplication of events changes nothing.
        #[test]
        fn a_recharge_is_split_between_credit_and_arrears(
            arrears_paise in proptest::collection::vec(0i64..2_000_000, 0..3),
            recharges in proptest::collection::vec((0i64..1_000_000, 0i64..50_000), 0..30),
            percent in 0u8..=100,
            cap in 0i64..200_000,
            shuffle in any::<u64>(),
        ) {
            let mut events: Vec<LedgerEvent> = arrears_paise
                .iter()
                .enumerate()
                .map(|(i, a)| event(1000 + i as u32, EventKind::Arrears, *a, 0))
                .collect();
            events.extend(recharges.iter().enumerate().map(|(i, (amount, minute))| event(i as u32, EventKind::Recharge, *amount, *minute)));
            let rules = [ArrearsRule {
                effective_from: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
                recovery_percent: percent,
                max_per_recharge_paise: cap,
            }];
            let mut log = events.clone();
            log.extend(events.iter().take(3).cloned());
            crate::testing::shuffle(&mut log, shuffle);
            let paid: i64 = recharges.iter().map(|(a, _)| a).sum();
            let opening: i64 = arrears_paise.iter().sum();
            let p = position(&log, &rules);
            prop_assert_eq!(p.balance_paise + p.arrears.recovered_paise, paid);
            prop_assert!(p.arrears.recovered_paise <= opening);
            prop_assert!(p.arrears.recovered_paise >= 0);
            prop_assert_eq!(p.arrears.opening_paise, opening);
            prop_assert_eq!(&p, &position(&events, &rules));
            let by_recharge = arrears_by_recharge(&events, &rules);
            prop_assert_eq!(by_recharge.iter().map(|(_, a)| a).sum::<i64>(), position(&events, &rules).arrears.recovered_paise);
            let shares: i64 = recharges.iter().map(|(a, _)| (a * i64::from(percent) / 100).min(cap)).sum();
            prop_assert_eq!(p.arrears.recovered_paise, shares.min(opening));
        }
    }

    /// The worked example in docs/policy.md: 1,200 INR of arrears, 25 % of each recharge, at most
    /// 500 INR of one.
    #[test]
    fn worked_example_of_arrears_recovery() {
        let rules = ArrearsRule::default_rules();
        let events = [
            event(1, EventKind::Arrears, 120_000, 0),
            event(2, EventKind::Recharge, 40_000, 10),
            event(3, EventKind::Recharge, 300_000, 20),
            event(4, EventKind::Recharge, 100_000, 30),
        ];
        let p = position(&events, &rules);
        // 100 of the 400 INR recharge, 500 (the cap) of the 3,000 one, 250 of the 1,000 one.
        assert_eq!(p.arrears.recovered_paise, 85_000);
        assert_eq!(p.arrears.outstanding_paise(), 35_000);
        assert_eq!(p.balance_paise, 440_000 - 85_000);
        assert_eq!(
            arrears_by_recharge(&events, &rules),
            vec![
                ("e2".into(), 10_000),
                ("e3".into(), 50_000),
                ("e4".into(), 25_000)
            ]
        );
    }
}
