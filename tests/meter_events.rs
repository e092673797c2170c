//! Meter events end to end, every part its own process (`central serve`, `gramgrid gateway` on
//! `gramgrid air-bus`, `gramgrid sim`): a fleet that comes back from an hour's feeder outage, one
//! meter with a magnet on it. Their own event logs travel over the air; the gateway stores each
//! event once, finds the outage, and central shows the events, the outage and the flags.
use crate::common::village::{count, wait_for, Village, GATEWAY_ID};
use serde_json::Value;
use std::time::Duration;

fn get(village: &Village, path: &str) -> Value {
    let (status, body) = village.central.call("GET", path, None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn a_feeder_outage_and_a_tamper_reach_central_from_the_meters_own_event_logs() {
    let started = chrono::Utc::now();
    let village = Village::start_with(4, "", &["--outage-minutes", "60", "--tampered", "1"]);
    village.install_meters();
    let d = village.path().to_path_buf();
    wait_for(
        "central to list the outage of all four meters, ended",
        Duration::from_secs(90),
        &d,
        || {
            let outages = get(&village, "/api/v1/outages");
            outages
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["meters"].as_array().unwrap().len() == 4 && !o["ended_at"].is_null())
        },
    );
    let outages = get(&village, &format!("/api/v1/outages?gateway={GATEWAY_ID}"));
    let outage = &outages[0];
    let began: chrono::DateTime<chrono::Utc> =
        outage["started_at"].as_str().unwrap().parse().unwrap();
    let ended: chrono::DateTime<chrono::Utc> =
        outage["ended_at"].as_str().unwrap().parse().unwrap();
    // An hour long, ending as the fleet started (meter clocks are off by up to 30 s).
    let length = (ended - began).num_seconds();
    assert!((3540..=3660).contains(&length), "{outage}");
    assert!((ended - started).num_seconds().abs() < 120, "{outage}");

    let tampered = village.manifest.meters[0].serial.clone();
    let events = get(&village, &format!("/api/v1/meters/{tampered}/events"));
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["tamper_magnet", "power_fail", "power_restore"] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), 1, "{kinds:?}");
    }
    // Each report repeats the log; each event is stored once, at both ends.
    assert_eq!(
        count(
            &village.gateway_db,
            "SELECT COUNT(*) FROM meter_events WHERE kind = 'tamper_magnet'"
        ),
        1
    );
    let flags = get(&village, "/api/v1/flags");
    let flagged = |kind: &str| {
        flags
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == kind)
            .cloned()
            .collect::<Vec<Value>>()
    };
    let tamper = flagged("meter_tamper");
    assert_eq!(tamper.len(), 1, "{flags}");
    assert_eq!(tamper[0]["account"], "ACC-0");
    assert_eq!(flagged("supply_outage").len(), 1, "{flags}");
}
