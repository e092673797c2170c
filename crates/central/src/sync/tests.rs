//! The guardrail records of an exchange: checked like every other record, then applied.
use super::*;
use crate::holds;
use crate::testing::{central, decision, priority_upload, TestCentral};
use chrono::{Duration, TimeZone};
use gramgrid_proto::wire::GatewayIdentity;

/// 11:00 IST on a Monday: inside the default disconnect window.
fn monday_morning() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap()
}

/// Applies `events` as priority records `first_seq`, `first_seq + 1`, ... of `gateway` at `now`.
fn exchange(
    t: &TestCentral,
    gateway: &str,
    first_seq: u64,
    events: Vec<UplinkEvent>,
    identity: Option<GatewayIdentity>,
    now: DateTime<Utc>,
) -> UploadResponse {
    let mut request = priority_upload(first_seq, events, now);
    request.identity = identity;
    t.upload(gateway, request, now)
}

fn decision_event(
    id: &str,
    account: &str,
    record: &gramgrid_core::decision::DecisionRecord,
) -> UplinkEvent {
    UplinkEvent::Decision {
        id: id.into(),
        account: account.into(),
        at: record.at,
        record: serde_json::to_string(record).unwrap(),
    }
}

fn stored_decisions(t: &TestCentral) -> Vec<(String, String, bool)> {
    t.tx(|tx| {
        Ok(tx
            .query(
                "SELECT gateway, id, replays FROM relay_decisions ORDER BY gateway, id",
                &[],
            )?
            .iter()
            .map(|r| {
                (
                    r.text(0).unwrap(),
                    r.text(1).unwrap(),
                    r.int(2).unwrap() != 0,
                )
            })
            .collect())
    })
    .unwrap()
}

fn breaker_holds(t: &TestCentral, gateway: Option<&str>) -> Vec<holds::BreakerHold> {
    let gateway = gateway.map(str::to_owned);
    t.tx(move |tx| holds::breaker_holds(tx, gateway.as_deref()))
        .unwrap()
}

#[test]
fn a_decision_is_stored_once_and_one_that_does_not_replay_is_flagged() {
    let t = central();
    t.account("A1", Some("gw-a"));
    t.account("A2", Some("gw-a"));
    let now = monday_morning();
    let honest = decision("A1", now, -2_500);
    let mut altered = decision("A2", now, -2_500);
    // The recorded outcome claims a connect the facts never allowed.
    altered.outcome.relay = Some(gramgrid_core::policy::RelayAction::Connect);
    let events = vec![
        decision_event("cmd-1", "A1", &honest),
        decision_event("cmd-2", "A2", &altered),
    ];
    let answer = exchange(&t, "gw-a", 1, events.clone(), None, now);
    assert_eq!(answer.priority_acked, 2);
    // The same records again under new sequence numbers (a restored outbox): stored once.
    exchange(&t, "gw-a", 3, events, None, now);
    assert_eq!(
        stored_decisions(&t),
        [
            ("gw-a".into(), "cmd-1".into(), true),
            ("gw-a".into(), "cmd-2".into(), false)
        ]
    );
    let flags = t.flags();
    assert_eq!(flags.len(), 1, "{flags:?}");
    let flag = &flags[0];
    assert_eq!(flag.kind, "replay_mismatch");
    assert_eq!(flag.gateway.as_deref(), Some("gw-a"));
    assert_eq!(flag.account.as_deref(), Some("A2"));
    assert!(flag.detail.contains("replay DISAGREES"), "{}", flag.detail);
    assert!(!flag.urgent);
}

#[test]
fn a_protected_account_left_on_at_the_threshold_is_flagged_for_the_office() {
    let t = central();
    t.account("A1", Some("gw-a"));
    let now = monday_morning();
    let mut left_on = decision("A1", now, -2_500);
    left_on.facts.protected = true;
    left_on.outcome = left_on.replay();
    assert_eq!(
        left_on.outcome.hold,
        Some(gramgrid_core::policy::Hold::Protected)
    );
    exchange(
        &t,
        "gw-a",
        1,
        vec![decision_event("gw-a:protected:A1:1", "A1", &left_on)],
        None,
        now,
    );
    let flags = t.flags();
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0].kind, "protected_exhausted");
    assert_eq!(flags[0].account.as_deref(), Some("A1"));
    assert!(
        flags[0].detail.contains("it is not cut"),
        "{}",
        flags[0].detail
    );
}

#[test]
fn guardrail_records_a_gateway_may_not_send_are_refused_alone_and_flagged() {
    let t = central();
    t.account("A1", Some("gw-a"));
    t.account("B1", Some("gw-b"));
    let now = monday_morning();
    let ahead = now + Duration::days(2);
    let record = decision("A1", now, -2_500);
    let mut huge = record.clone();
    huge.policy.holidays = vec![chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(); 10_000];
    let held = |id: &str, accounts: &[&str], at| UplinkEvent::BreakerHeld {
        id: id.into(),
        at,
        accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
        reasons: vec!["too many".into()],
    };
    // (record, the flag kind it raises)
    let refused = vec![
        (
            decision_event("d-foreign", "B1", &decision("B1", now, -2_500)),
            "foreign_record",
        ),
        (
            decision_event("d-other", "A1", &decision("B1", now, -2_500)),
            "foreign_record",
        ),
        (
            UplinkEvent::Decision {
                id: "d-garbled".into(),
                account: "A1".into(),
                at: now,
                record: "{\"not\": \"a decision\"}".into(),
            },
            "absurd_value",
        ),
        (decision_event("d-huge", "A1", &huge), "absurd_value"),
        (
            UplinkEvent::Decision {
                id: "d-ahead".into(),
                account: "A1".into(),
                at: ahead,
                record: serde_json::to_string(&record).unwrap(),
            },
            "absurd_value",
        ),
        (
            decision_event(&"x".repeat(300), "A1", &record),
            "absurd_value",
        ),
        (held("h-foreign", &["A1", "B1"], now), "foreign_record"),
        (held("h-empty", &[], now), "absurd_value"),
        (held("h-ahead", &["A1"], ahead), "absurd_value"),
        (
            UplinkEvent::BreakerReleased {
                hold_id: "h-never".into(),
                by: "supervisor".into(),
                reason: "checked".into(),
                at: now,
            },
            "foreign_record",
        ),
    ];
    let kinds: Vec<&str> = refused.iter().map(|(_, kind)| *kind).collect();
    let events: Vec<UplinkEvent> = refused.into_iter().map(|(event, _)| event).collect();
    let answer = exchange(&t, "gw-a", 1, events, None, now);
    // Every record is acknowledged, none applied, each flagged by its sequence number.
    assert_eq!(answer.priority_acked, kinds.len() as u64);
    assert!(stored_decisions(&t).is_empty());
    assert!(breaker_holds(&t, None).is_empty());
    let flags = t.flags();
    for (seq, kind) in (1..).zip(&kinds) {
        let flag = flags
            .iter()
            .find(|f| f.id == format!("refused:gw-a:{seq}"))
            .unwrap_or_else(|| panic!("record {seq} was not flagged: {flags:?}"));
        assert_eq!(flag.kind, *kind, "record {seq}: {}", flag.detail);
    }
    assert_eq!(flags.len(), kinds.len(), "{flags:?}");
}

#[test]
fn a_breaker_hold_is_an_urgent_flag_and_a_release_at_the_gateway_is_kept() {
    let t = central();
    t.account("A1", Some("gw-a"));
    t.account("A2", Some("gw-a"));
    let now = monday_morning();
    let held = UplinkEvent::BreakerHeld {
        id: "hold-7".into(),
        at: now,
        accounts: vec!["A1".into(), "A2".into()],
        reasons: vec!["12 disconnections today would exceed the limit of 3 for 20 accounts".into()],
    };
    let released = |by: &str| UplinkEvent::BreakerReleased {
        hold_id: "hold-7".into(),
        by: by.into(),
        reason: "checked the list".into(),
        at: now + Duration::minutes(5),
    };
    exchange(
        &t,
        "gw-a",
        1,
        vec![held.clone(), released("ravi")],
        None,
        now,
    );
    // A later, second release of the same hold keeps the first.
    exchange(
        &t,
        "gw-a",
        3,
        vec![held, released("someone else")],
        None,
        now,
    );
    let flags = t.flags();
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0].kind, "breaker_held");
    assert!(flags[0].urgent);
    assert!(
        flags[0].detail.contains("holds 2 disconnection(s)"),
        "{}",
        flags[0].detail
    );
    assert!(
        flags[0].detail.contains("exceed the limit of 3"),
        "{}",
        flags[0].detail
    );
    let holds = breaker_holds(&t, Some("gw-a"));
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].accounts, ["A1", "A2"]);
    let release = holds[0].released.clone().unwrap();
    assert_eq!(
        (release.by.as_str(), release.place.as_str()),
        ("ravi", "gateway")
    );
}

#[test]
fn a_gateway_shedding_readings_for_want_of_disk_is_an_urgent_flag_and_its_recovery_a_flag() {
    let t = central();
    let now = monday_morning();
    let anomaly = |kind: &str, detail: &str, at| UplinkEvent::Anomaly {
        meter: None,
        kind: kind.into(),
        detail: detail.into(),
        at,
    };
    exchange(
        &t,
        "gw-a",
        1,
        vec![
            anomaly("readings_shed", "only 31 MiB free on the data disk", now),
            anomaly(
                "readings_resumed",
                "disk space is back",
                now + Duration::hours(2),
            ),
        ],
        None,
        now + Duration::hours(2),
    );
    let flags = t.flags();
    let kinds: Vec<(&str, bool, Option<&str>)> = flags
        .iter()
        .map(|f| (f.kind.as_str(), f.urgent, f.gateway.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("readings_shed", true, Some("gw-a")),
            ("readings_resumed", false, Some("gw-a"))
        ]
    );
    assert!(
        flags[0].detail.contains("31 MiB free"),
        "{}",
        flags[0].detail
    );
}

#[test]
fn a_restored_gateway_database_is_told_so_in_the_same_exchange() {
    let t = central();
    t.account("A1", Some("gw-a"));
    let now = monday_morning();
    let identity = |exchange| GatewayIdentity {
        instance: 7,
        exchange,
        priority_acked: 0,
        readings_acked: 0,
    };
    exchange(&t, "gw-a", 1, vec![], Some(identity(5)), now);
    assert!(!t
        .downlink("gw-a")
        .iter()
        .any(|e| matches!(e, DownlinkEvent::DatabaseRestored { .. })));
    // Exchange 3 after 5: a backup.
    let later = now + Duration::hours(1);
    let answer = exchange(&t, "gw-a", 1, vec![], Some(identity(3)), later);
    assert!(answer
        .downlink
        .iter()
        .any(|r| r.event == DownlinkEvent::DatabaseRestored { at: later }));
}

#[test]
fn a_message_the_gateways_modem_sent_is_recorded_so_and_a_double_is_flagged() {
    let t = central();
    t.account("A1", Some("gw-a"));
    let now = monday_morning();
    let notice = |id: &str, sent_by_gateway_at| UplinkEvent::Notice {
        id: id.into(),
        account: "A1".into(),
        kind: "disconnected".into(),
        created_at: now,
        message: "Electricity supply disconnected".into(),
        vars: vec![],
        sent_by_gateway_at,
    };
    exchange(
        &t,
        "gw-a",
        1,
        vec![notice("n1", Some(now)), notice("n2", None)],
        None,
        now,
    );
    let states = |t: &TestCentral| {
        let mut messages = t
            .tx(|tx| crate::notify::account_messages(tx, "A1", 10))
            .unwrap();
        messages.sort_by(|a, b| a.id.cmp(&b.id));
        messages
            .into_iter()
            .map(|m| (m.id, m.state, m.channel))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        states(&t),
        [
            (
                "gw-a/n1".into(),
                "sent".into(),
                Some("gateway_modem".into())
            ),
            ("gw-a/n2".into(), "queued".into(), None),
        ]
    );
    assert!(t.flags().is_empty());
    // Central sends n2; should the gateway's modem ever say it sent n2 as well, the office hears.
    t.tx(|tx| {
        tx.execute(
            "UPDATE notifications SET state = 'sent', channel = 'sms_provider' WHERE id = 'gw-a/n2'",
            &[],
        )?;
        Ok(())
    })
    .unwrap();
    exchange(&t, "gw-a", 3, vec![notice("n2", Some(now))], None, now);
    let flags = t.flags();
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0].kind, "message_sent_twice");
    assert_eq!(flags[0].account.as_deref(), Some("A1"));
}
