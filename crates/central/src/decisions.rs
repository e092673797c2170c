//! The gateways' relay decisions: every relay command a gateway queues, and every disconnection a
//! rule or its breaker holds back, arrives with the facts and rules it was made from
//! (`gramgrid_core::decision::DecisionRecord`). Central stores each once, replays it on receipt
//! (the pure policy run again on the recorded facts) and flags one that does not replay
//! (`replay_mismatch`): a reason for every cut, checkable by the office. A protected account left
//! on at the threshold is flagged too (`protected_exhausted`): the office acts instead of the relay.
use super::db::Tx;
use super::flags::flag;
use super::{accounts, CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_core::decision::{DecisionRecord, Outcome};
use gramgrid_core::policy::RelayAction;
use serde::Serialize;

/// Most decisions one listing returns.
pub const MAX_DECISIONS_LIMIT: i64 = 1_000;

/// Stores a gateway's decision, made at `at` (the uplink record's time, which the sync checked),
/// once per (gateway, id), with whether it replayed on receipt; a new one that does not replay is
/// flagged `replay_mismatch`; one that left a protected account on at the threshold is flagged
/// `protected_exhausted`.
pub(crate) fn record(
    tx: &mut dyn Tx,
    gateway: &str,
    id: &str,
    at: DateTime<Utc>,
    record: &DecisionRecord,
    text: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let replays = record.replays();
    let new = tx.execute(
        "INSERT INTO relay_decisions (gateway, id, account, at, record, replays, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        &[
            gateway.into(),
            id.into(),
            record.account.as_str().into(),
            ts(at).into(),
            text.into(),
            i64::from(replays).into(),
            ts(now).into(),
        ],
    )?;
    if new == 1 && record.outcome.hold == Some(gramgrid_core::policy::Hold::Protected) {
        flag(
            tx,
            &format!("protected_exhausted:{gateway}:{id}"),
            "protected_exhausted",
            Some(gateway),
            Some(&record.account),
            now,
            &format!(
                "protected account '{}' is at or below the disconnect threshold ({}); it is not cut: arrange payment or support",
                record.account,
                record.rule()
            ),
        )?;
    }
    if new == 1 && !replays {
        let words = record.explain();
        flag(
            tx,
            &format!("replay_mismatch:{gateway}:{id}"),
            "replay_mismatch",
            Some(gateway),
            Some(&record.account),
            now,
            &format!(
                "decision '{id}' of gateway '{gateway}' does not replay: {}",
                words.join("; ")
            ),
        )?;
    }
    Ok(())
}

/// A stored decision as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The decision's id at its gateway (the relay command's, or the breaker hold's).
    pub id: String,
    /// The gateway that made it.
    pub gateway: String,
    /// When it was made (gateway clock, UTC).
    pub at: DateTime<Utc>,
    /// The relay command it issued, if any.
    pub action: Option<RelayAction>,
    /// What the policy decided (relay command, why a disconnect was held, a withdrawal).
    pub outcome: Outcome,
    /// The rule that fired, in one line.
    pub rule: String,
    /// The decision in words, one fact per line, ending with the replay's verdict.
    pub words: Vec<String>,
    /// Whether the policy, run again now on the recorded facts, decides the same.
    pub replays: bool,
    /// Whether it replayed when central received it.
    pub replayed_on_receipt: bool,
    /// The record itself: facts, policy, outcome, breaker hold.
    pub record: DecisionRecord,
}

/// An account's decisions: with `at`, the one in force then (the latest made at or before it, or
/// none); without, the latest `limit` (1 to [`MAX_DECISIONS_LIMIT`]), newest first.
pub fn of_account(
    tx: &mut dyn Tx,
    account: &str,
    at: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Decision>> {
    if !(1..=MAX_DECISIONS_LIMIT).contains(&limit) {
        return Err(CentralError::Invalid(format!(
            "limit {limit} is out of range: give 1 to {MAX_DECISIONS_LIMIT}"
        )));
    }
    accounts::account(tx, account)?;
    let (until, limit) = match at {
        Some(at) => (ts(at), 1),
        None => (i64::MAX, limit),
    };
    tx.query(
        "SELECT gateway, id, at, record, replays FROM relay_decisions
         WHERE account = $1 AND at <= $2 ORDER BY at DESC, received_at DESC, id DESC LIMIT $3",
        &[account.into(), until.into(), limit.into()],
    )?
    .iter()
    .map(|row| {
        let record: DecisionRecord = serde_json::from_str(&row.text(3)?)
            .map_err(|e| CentralError::Corrupt(format!("decision record: {e}")))?;
        Ok(Decision {
            id: row.text(1)?,
            gateway: row.text(0)?,
            at: from_ts(row.int(2)?),
            action: record.outcome.relay,
            outcome: record.outcome,
            rule: record.rule(),
            words: record.explain(),
            replays: record.replays(),
            replayed_on_receipt: row.int(4)? != 0,
            record,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{central, decision};
    use chrono::{Duration, TimeZone};

    #[test]
    fn a_load_limit_trip_is_stored_replayed_and_not_taken_for_a_balance_cut() {
        let t = central();
        t.account("A1", Some("gw-a"));
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap();
        let mut record = decision("A1", at, 40_000);
        record.facts.below_threshold_since = None;
        record.facts.load = Some(gramgrid_core::demand::LoadTrip {
            trip_after_intervals: 3,
            trip_minutes: 30,
            sanctioned_w: 2_000,
            over: Some(gramgrid_core::demand::OverRun {
                intervals: 4,
                from: at - Duration::minutes(65),
                until: at - Duration::minutes(5),
                max_w: 2_800,
            }),
            tripped_at: None,
        });
        record.outcome = Outcome::from(&gramgrid_core::policy::decide(
            &record.policy,
            &record.facts,
            at,
        ));
        assert_eq!(record.outcome.relay, Some(RelayAction::Disconnect));
        let text = serde_json::to_string(&record).unwrap();
        t.tx(move |tx| super::record(tx, "gw-a", "trip", at, &record, &text, at))
            .unwrap();
        let stored = t.tx(|tx| of_account(tx, "A1", None, 10)).unwrap().remove(0);
        assert!(stored.replays && stored.replayed_on_receipt);
        assert_eq!(stored.outcome.load_trip, Some(at + Duration::minutes(30)));
        assert!(stored.rule.contains("load-limit trip"), "{}", stored.rule);
        assert!(!stored.rule.contains("threshold"), "{}", stored.rule);
    }

    #[test]
    fn the_decision_in_force_at_a_time_is_the_latest_made_by_then() {
        let t = central();
        t.account("A1", Some("gw-a"));
        // 11:00 IST on a Monday (a cut), then 15:00 (outside the window), then a day later.
        let first = Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap();
        let times = [first, first + Duration::hours(4), first + Duration::days(1)];
        for (i, at) in times.into_iter().enumerate() {
            let record = decision("A1", at, -2_500);
            let text = serde_json::to_string(&record).unwrap();
            t.tx(move |tx| super::record(tx, "gw-a", &format!("d{i}"), at, &record, &text, at))
                .unwrap();
        }
        let list =
            |at: Option<DateTime<Utc>>, limit: i64| t.tx(move |tx| of_account(tx, "A1", at, limit));
        let ids = |found: Vec<Decision>| found.into_iter().map(|d| d.id).collect::<Vec<_>>();
        assert_eq!(ids(list(None, 100).unwrap()), ["d2", "d1", "d0"]);
        assert_eq!(ids(list(None, 2).unwrap()), ["d2", "d1"]);
        assert_eq!(
            ids(list(Some(times[1] + Duration::hours(1)), 100).unwrap()),
            ["d1"]
        );
        assert_eq!(ids(list(Some(times[0]), 100).unwrap()), ["d0"]);
        assert!(list(Some(times[0] - Duration::seconds(1)), 100)
            .unwrap()
            .is_empty());
        let cut = list(Some(times[0]), 1).unwrap().remove(0);
        assert_eq!(cut.action, Some(RelayAction::Disconnect));
        assert_eq!(cut.gateway, "gw-a");
        assert!(cut.replays && cut.replayed_on_receipt);
        assert!(
            cut.rule.contains("at or below the threshold"),
            "{}",
            cut.rule
        );
        assert!(
            cut.words[0].contains("disconnect command issued"),
            "{:?}",
            cut.words
        );
        let held = list(Some(times[1]), 1).unwrap().remove(0);
        assert_eq!(held.action, None);
        assert!(held.rule.contains("no disconnect"), "{}", held.rule);
        assert!(matches!(list(None, 0), Err(CentralError::Invalid(_))));
        assert!(matches!(
            t.tx(|tx| of_account(tx, "A9", None, 10)),
            Err(CentralError::NotFound(_))
        ));
    }
}
