//! A relay decision's record: the facts and rules it was made from, in words, and its replay.
//!
//! The gateway stores a [`DecisionRecord`] with every relay command it queues and every
//! disconnection the breaker or a rule holds back; central keeps a copy. [`DecisionRecord::replay`]
//! runs the pure policy again on the recorded facts: a replay that does not give the recorded
//! outcome means the code or the record changed, and is flagged.
use crate::civil;
use crate::demand::{kilowatts, LoadTrip};
use crate::policy::{self, AccountFacts, Hold, PolicyConfig, RelayAction, RelayState};
use crate::tariff::rupees;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a decision did: the policy's answer for one account at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The relay command issued, if any.
    pub relay: Option<RelayAction>,
    /// Why a due disconnect was held back, if it was.
    pub hold: Option<Hold>,
    /// An in-flight disconnect was withdrawn.
    pub withdraw_disconnect: bool,
    /// Set when the load-limit trip decided, not the balance: the end of its lockout. Absent from
    /// the records of balance decisions, which read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_trip: Option<DateTime<Utc>>,
}

impl From<&policy::Decision> for Outcome {
    fn from(d: &policy::Decision) -> Self {
        Outcome {
            relay: d.relay,
            hold: d.hold,
            withdraw_disconnect: d.withdraw_disconnect,
            load_trip: d.load_trip,
        }
    }
}

/// A disconnection the breaker held after the policy decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerHold {
    /// The hold's id (a supervisor releases it by this id).
    pub hold_id: String,
    /// Why, in words.
    pub reasons: Vec<String>,
}

/// Everything one relay decision was made from, and what it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The account.
    pub account: String,
    /// When the decision was made (gateway clock, UTC).
    pub at: DateTime<Utc>,
    /// The policy in force (thresholds, windows, holidays, grace, rules).
    pub policy: PolicyConfig,
    /// The published policy version, None while the gateway runs on its config file.
    pub policy_version: Option<u64>,
    /// The tariff version in force for the account's category.
    pub tariff_version: Option<String>,
    /// The facts the policy looked at.
    pub facts: AccountFacts,
    /// What the policy decided.
    pub outcome: Outcome,
    /// Set when the breaker held the disconnection the policy decided.
    pub breaker: Option<BreakerHold>,
}

impl DecisionRecord {
    /// Runs the pure policy again on the recorded facts.
    pub fn replay(&self) -> Outcome {
        Outcome::from(&policy::decide(&self.policy, &self.facts, self.at))
    }

    /// Whether the replay gives the recorded outcome.
    pub fn replays(&self) -> bool {
        self.replay() == self.outcome
    }

    /// The effective disconnect threshold (lowered by emergency credit in force).
    fn threshold(&self) -> i64 {
        self.policy.disconnect_threshold_paise - self.facts.emergency_credit_paise.max(0)
    }

    /// The rule that fired, in one line.
    pub fn rule(&self) -> String {
        let f = &self.facts;
        let balance = rupees(f.balance_paise);
        let threshold = rupees(self.threshold());
        if let Some(o) = f.manual_override.filter(|o| o.until > self.at) {
            return format!(
                "a technician's {} override, in force until {}",
                action_word(o.action),
                local(o.until)
            );
        }
        if let (Some(until), Some(load)) = (self.outcome.load_trip, f.load) {
            return trip_words(&load, until, &self.outcome, self.at);
        }
        if let Some(end) = f
            .load
            .and_then(|load| load.lockout_end())
            .filter(|end| *end <= self.at && f.relay == RelayState::Disconnected)
            .filter(|_| self.outcome.relay == Some(RelayAction::Connect))
        {
            return format!(
                "the load-limit lockout ended at {} and the balance {balance} INR is above the threshold {threshold} INR: supply on",
                local(end)
            );
        }
        match (self.outcome.relay, self.outcome.hold) {
            (Some(RelayAction::Disconnect), _) => format!(
                "balance {balance} INR at or below the threshold {threshold} INR since {}, inside a disconnect window, not a holiday, grace over, clock trusted",
                f.below_threshold_since.map(local).unwrap_or_else(|| local(self.at))
            ),
            (_, Some(Hold::PartialPayment { until })) => {
                let paid = f.arrangement.map(|a| (a.paid_paise, a.debt_paise)).unwrap_or_default();
                format!(
                    "partial payment: {} INR paid of a {} INR debt at the cut; supply on, the rest due by {}",
                    rupees(paid.0),
                    rupees(paid.1),
                    local(until)
                )
            }
            (_, Some(hold)) => format!(
                "balance {balance} INR at or below the threshold {threshold} INR, but no disconnect: {}",
                hold_words(hold)
            ),
            (Some(RelayAction::Connect), None) => {
                format!("balance {balance} INR is above the threshold {threshold} INR: supply on")
            }
            (None, None) => format!("balance {balance} INR: nothing to do"),
        }
    }

    /// The decision in words, one fact per line, ending with the replay's verdict.
    pub fn explain(&self) -> Vec<String> {
        let f = &self.facts;
        let mut lines = vec![
            format!(
                "{} at {}: {}",
                self.account,
                local(self.at),
                outcome_words(&self.outcome)
            ),
            format!("rule: {}", self.rule()),
            format!(
                "balance {} INR; threshold {} INR (policy {} INR, emergency credit {} INR)",
                rupees(f.balance_paise),
                rupees(self.threshold()),
                rupees(self.policy.disconnect_threshold_paise),
                rupees(f.emergency_credit_paise)
            ),
            format!(
                "relay {}; command in flight: {}",
                relay_words(f.relay),
                f.pending.map(action_word).unwrap_or("none")
            ),
            format!(
                "disconnect windows {}; holidays {}",
                self.policy
                    .disconnect_windows
                    .iter()
                    .map(|w| format!("\"{}\"", String::from(w.clone())))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.policy.holidays.len()
            ),
            format!(
                "policy version {}; tariff {}; clock {}{}",
                self.policy_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "from the config file".into()),
                self.tariff_version.as_deref().unwrap_or("unknown"),
                if f.clock_trusted {
                    "trusted"
                } else {
                    "NOT trusted"
                },
                if f.protected {
                    "; protected account"
                } else {
                    ""
                }
            ),
        ];
        if !f.outages.is_empty() {
            let spans: Vec<String> = f
                .outages
                .iter()
                .map(|o| match o.end {
                    Some(end) => format!("{} to {}", local(o.start), local(end)),
                    None => format!("since {}, going on", local(o.start)),
                })
                .collect();
            lines.push(format!(
                "supply outages (not counted in the grace): {}",
                spans.join("; ")
            ));
        }
        if let Some(load) = &f.load {
            lines.push(format!(
                "load-limit trip after {} consecutive intervals above the sanctioned {} kW, {} minutes off; {}; latest trip {}",
                load.trip_after_intervals,
                kilowatts(load.sanctioned_w),
                load.trip_minutes,
                match load.over {
                    Some(run) => format!(
                        "{} intervals above it from {} to {} (highest {} kW)",
                        run.intervals,
                        local(run.from),
                        local(run.until),
                        kilowatts(run.max_w)
                    ),
                    None => "the latest interval was not above it".into(),
                },
                load.tripped_at.map(local).unwrap_or_else(|| "none".into())
            ));
        }
        if let Some(hold) = &self.breaker {
            lines.push(format!(
                "held by the disconnection breaker (hold {}): {}",
                hold.hold_id,
                hold.reasons.join("; ")
            ));
        }
        lines.push(if self.replays() {
            "replay: the policy decides the same today".to_string()
        } else {
            format!(
                "replay DISAGREES: the policy now decides {}",
                outcome_words(&self.replay())
            )
        });
        lines
    }
}

/// The rule of a decision the load-limit trip made (lockout until `until`).
fn trip_words(
    load: &LoadTrip,
    until: DateTime<Utc>,
    outcome: &Outcome,
    at: DateTime<Utc>,
) -> String {
    let sanctioned = kilowatts(load.sanctioned_w);
    let cause = if load.in_lockout(at) {
        format!(
            "load-limit lockout of the trip at {} until {}",
            load.tripped_at.map(local).unwrap_or_default(),
            local(until)
        )
    } else {
        let run = load.over.map_or_else(String::new, |run| {
            format!(
                "{} consecutive intervals to {} (highest {} kW)",
                run.intervals,
                local(run.until),
                kilowatts(run.max_w)
            )
        });
        format!(
            "load-limit trip: {run} above the sanctioned {sanctioned} kW; off until {}",
            local(until)
        )
    };
    match (outcome.relay, outcome.hold) {
        (Some(RelayAction::Disconnect), _) => format!(
            "{cause}, inside a disconnect window, not a holiday, clock trusted; the balance plays no part"
        ),
        (_, Some(hold)) => format!("{cause}, but no disconnect: {}", hold_words(hold)),
        _ => format!("{cause}: supply stays off"),
    }
}

fn local(at: DateTime<Utc>) -> String {
    civil::local(at).format("%Y-%m-%d %H:%M IST").to_string()
}

fn action_word(action: RelayAction) -> &'static str {
    match action {
        RelayAction::Connect => "connect",
        RelayAction::Disconnect => "disconnect",
    }
}

fn relay_words(state: RelayState) -> &'static str {
    match state {
        RelayState::Connected => "connected",
        RelayState::Disconnected => "disconnected",
        RelayState::Unknown => "unknown",
    }
}

fn hold_words(hold: Hold) -> String {
    match hold {
        Hold::Grace { until } => format!("in the grace period until {}", local(until)),
        other => other.to_string(),
    }
}

fn outcome_words(outcome: &Outcome) -> String {
    match (outcome.relay, outcome.hold, outcome.withdraw_disconnect) {
        (Some(action), _, _) => format!("{} command issued", action_word(action)),
        (None, Some(hold), true) => {
            format!("disconnect withdrawn ({})", hold_words(hold))
        }
        (None, Some(hold), false) => format!("disconnect held ({})", hold_words(hold)),
        (None, None, true) => "disconnect withdrawn".into(),
        (None, None, false) => "no relay action".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn record(balance_paise: i64) -> DecisionRecord {
        let at = civil::ist()
            .with_ymd_and_hms(2026, 11, 30, 11, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let facts = AccountFacts {
            balance_paise,
            last_recharge: None,
            emergency_credit_paise: 0,
            daily_consumption_paise: None,
            relay: RelayState::Connected,
            pending: None,
            below_threshold_since: Some(at - chrono::Duration::days(2)),
            manual_override: None,
            clock_trusted: true,
            protected: false,
            arrangement: None,
            outages: Vec::new(),
            load: None,
        };
        let policy = PolicyConfig::default();
        let outcome = Outcome::from(&policy::decide(&policy, &facts, at));
        DecisionRecord {
            account: "A1".into(),
            at,
            policy,
            policy_version: Some(3),
            tariff_version: Some("domestic-2026".into()),
            facts,
            outcome,
            breaker: None,
        }
    }

    #[test]
    fn a_cut_is_explained_and_replays_the_same_after_a_round_trip_through_json() {
        let record = record(-2_500);
        assert_eq!(record.outcome.relay, Some(RelayAction::Disconnect));
        let stored = serde_json::to_string(&record).unwrap();
        let back: DecisionRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, record);
        assert!(back.replays());
        let words = back.explain().join("\n");
        assert!(words.contains("disconnect command issued"), "{words}");
        assert!(
            words.contains("balance -25.00 INR at or below the threshold 0.00 INR"),
            "{words}"
        );
        assert!(words.contains("2026-11-28 11:00 IST"), "{words}");
        assert!(
            words.contains("policy version 3; tariff domestic-2026; clock trusted"),
            "{words}"
        );
        assert!(
            words.contains("replay: the policy decides the same"),
            "{words}"
        );
    }

    #[test]
    fn a_load_trip_is_told_apart_from_a_balance_cut_and_replays() {
        let balance_cut = serde_json::to_string(&record(-2_500)).unwrap();
        assert!(
            !balance_cut.contains("load"),
            "a balance record reads as before: {balance_cut}"
        );
        let mut trip = record(40_000);
        trip.facts.below_threshold_since = None;
        trip.facts.load = Some(LoadTrip {
            trip_after_intervals: 3,
            trip_minutes: 30,
            sanctioned_w: 2_000,
            over: Some(crate::demand::OverRun {
                intervals: 3,
                from: trip.at - chrono::Duration::minutes(50),
                until: trip.at - chrono::Duration::minutes(5),
                max_w: 2_600,
            }),
            tripped_at: None,
        });
        trip.outcome = Outcome::from(&policy::decide(&trip.policy, &trip.facts, trip.at));
        assert_eq!(trip.outcome.relay, Some(RelayAction::Disconnect));
        let back: DecisionRecord =
            serde_json::from_str(&serde_json::to_string(&trip).unwrap()).unwrap();
        assert!(back.replays());
        let rule = back.rule();
        assert!(
            rule.contains("load-limit trip: 3 consecutive intervals")
                && rule.contains("above the sanctioned 2.00 kW; off until 2026-11-30 11:30 IST")
                && !rule.contains("at or below the threshold"),
            "{rule}"
        );
        assert!(back
            .explain()
            .iter()
            .any(|l| l.starts_with("load-limit trip after 3")));
    }

    #[test]
    fn a_record_that_no_longer_replays_says_so() {
        let mut record = record(-2_500);
        // The recorded outcome claims a connect the facts never allowed.
        record.outcome.relay = Some(RelayAction::Connect);
        assert!(!record.replays());
        assert!(record
            .explain()
            .last()
            .unwrap()
            .contains("replay DISAGREES: the policy now decides disconnect command issued"));
    }
}
