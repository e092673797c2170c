//! Meter events are stored once per gateway and id and a tamper is flagged with its account;
//! an outage is the gateway's latest word on it, flagged once; a gateway cannot report events or
//! outages of meters that are not its own.
use super::*;
use crate::accounts::{self, Meter};
use crate::downlink::ensure_gateway;
use crate::testing::{central, priority_upload, TestCentral};
use chrono::TimeZone;
use gramgrid_proto::wire::UplinkEvent;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, h, m, 0).unwrap()
}

/// gw-a with accounts A1..A3 (meters M1..M3), gw-b with B1 (meter N1).
fn two_villages() -> TestCentral {
    let t = central();
    t.tx(|tx| {
        ensure_gateway(tx, "gw-a")?;
        ensure_gateway(tx, "gw-b")
    })
    .unwrap();
    for (account, serial, gateway) in [
        ("A1", "M1", "gw-a"),
        ("A2", "M2", "gw-a"),
        ("A3", "M3", "gw-a"),
        ("B1", "N1", "gw-b"),
    ] {
        t.account(account, Some(gateway));
        let meter = Meter {
            serial: serial.into(),
            account: account.into(),
            installed_at: at(0, 0),
            initial_register_wh: Some(0),
            keys: None,
            dlms: None,
            relay_state: "unknown".into(),
        };
        t.tx(move |tx| accounts::put_meter(tx, &meter, false))
            .unwrap();
    }
    t
}

fn event(meter: &str, kind: &str, when: DateTime<Utc>) -> UplinkEvent {
    UplinkEvent::MeterEvent {
        id: format!("ev-{meter}-{kind}-{}", when.timestamp()),
        meter: meter.into(),
        kind: kind.into(),
        at: when,
        command_id: None,
    }
}

fn outage(meters: &[&str], ended_at: Option<DateTime<Utc>>) -> UplinkEvent {
    UplinkEvent::SupplyOutage {
        id: "outage-gw-a-1795900000".into(),
        started_at: at(18, 0),
        ended_at,
        meters: meters.iter().map(|m| m.to_string()).collect(),
    }
}

#[test]
fn a_tamper_is_stored_once_and_flagged_with_its_account() {
    let t = two_villages();
    let magnet = event("M1", "tamper_magnet", at(10, 0));
    let fail = event("M1", "power_fail", at(9, 0));
    t.upload(
        "gw-a",
        priority_upload(1, vec![magnet.clone(), fail], at(12, 0)),
        at(12, 0),
    );
    // The same event again (the meter reported it twice): nothing new.
    t.upload(
        "gw-a",
        priority_upload(3, vec![magnet], at(12, 5)),
        at(12, 5),
    );
    let events = t.tx(|tx| meter_events(tx, "M1", 10)).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["tamper_magnet", "power_fail"], "newest first");
    assert!(events.iter().all(|e| e.gateway == "gw-a"));
    let tampers: Vec<_> = t
        .flags()
        .into_iter()
        .filter(|f| f.kind == "meter_tamper")
        .collect();
    assert_eq!(tampers.len(), 1, "{tampers:?}");
    assert_eq!(tampers[0].account.as_deref(), Some("A1"));
    assert!(tampers[0]
        .detail
        .contains("meter M1 reported tamper magnet"));
    assert!(t.tx(|tx| meter_events(tx, "M1", 0)).is_err(), "limit 0");
}

#[test]
fn an_outage_is_the_gateways_latest_word_and_is_flagged_once() {
    let t = two_villages();
    t.upload(
        "gw-a",
        priority_upload(1, vec![outage(&["M1", "M2"], None)], at(18, 30)),
        at(18, 30),
    );
    let going_on = t.tx(|tx| outages(tx, None, at(0, 0), 10)).unwrap();
    assert_eq!(going_on.len(), 1);
    assert_eq!(going_on[0].ended_at, None);
    t.upload(
        "gw-a",
        priority_upload(
            2,
            vec![outage(&["M1", "M2", "M3"], Some(at(19, 0)))],
            at(19, 30),
        ),
        at(19, 30),
    );
    let ended = t.tx(|tx| outages(tx, Some("gw-a"), at(0, 0), 10)).unwrap();
    assert_eq!(
        ended,
        vec![OutageRow {
            id: "outage-gw-a-1795900000".into(),
            gateway: "gw-a".into(),
            started_at: at(18, 0),
            ended_at: Some(at(19, 0)),
            meters: vec!["M1".into(), "M2".into(), "M3".into()],
        }]
    );
    assert!(t
        .tx(|tx| outages(tx, Some("gw-b"), at(0, 0), 10))
        .unwrap()
        .is_empty());
    assert!(t
        .tx(|tx| outages(tx, None, at(18, 1), 10))
        .unwrap()
        .is_empty());
    let flags: Vec<_> = t
        .flags()
        .into_iter()
        .filter(|f| f.kind == "supply_outage")
        .collect();
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0].gateway.as_deref(), Some("gw-a"));
}

#[test]
fn a_gateway_cannot_report_events_or_outages_of_another_gateways_meters() {
    let t = two_villages();
    t.upload(
        "gw-b",
        priority_upload(
            1,
            vec![
                event("M1", "tamper_cover_open", at(10, 0)),
                outage(&["N1", "M1", "M2"], None),
                event("N1", "power_fail", at(10, 0)),
            ],
            at(12, 0),
        ),
        at(12, 0),
    );
    assert!(t.tx(|tx| meter_events(tx, "M1", 10)).unwrap().is_empty());
    assert_eq!(t.tx(|tx| meter_events(tx, "N1", 10)).unwrap().len(), 1);
    assert!(t
        .tx(|tx| outages(tx, None, at(0, 0), 10))
        .unwrap()
        .is_empty());
    let refused = t
        .flags()
        .into_iter()
        .filter(|f| f.kind == "foreign_record")
        .count();
    assert_eq!(refused, 2);
    assert!(!t.flags().iter().any(|f| f.kind == "meter_tamper"));
}
