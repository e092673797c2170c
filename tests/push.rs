//! The push channel, every part its own process: with the gateway's scheduled sync a day away and
//! its policy pass once a minute (at second 30), a recharge taken at central still reaches the
//! gateway and queues the household's reconnect within seconds, well before the next scheduled
//! pass: the gateway's request held open at central (`GET /sync/v1/wait`) is answered as soon as
//! the recharge is committed, and the money's arrival wakes the policy pass.
use crate::common::village::{count, wait_for, Village};
use chrono::{Timelike, Utc};
use std::time::Duration;

/// Sessions once a day (at 00:00 UTC: apart from the session the daemon runs as it starts,
/// everything arrives by push); policy passes at second 30 of every minute.
const SCHEDULES: (&str, &str) = ("0 0 0 * * *", "30 * * * * *");

#[test]
fn a_recharge_at_central_reaches_the_gateway_and_reconnects_within_seconds() {
    let village = Village::start_scheduled(None, 1, SCHEDULES, "", &[]);
    let d = village.path().to_path_buf();
    // The meter entered at central reaches the gateway by push; the household has no credit and
    // is cut (the village's policy cuts at any minute).
    village.install_first_meters(1);
    wait_for(
        "the disconnect confirmed by the meter",
        Duration::from_secs(150),
        &d,
        || village.acknowledged("disconnect") == 1,
    );

    // Pay just after a scheduled pass, so the next one is nearly a minute away.
    while !(32..36).contains(&Utc::now().second()) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let paid = Utc::now();
    village.central.post(
        "/api/v1/recharges",
        r#"{"idempotency_key": "counter-push-1", "account": "ACC-0", "amount_paise": 50000}"#,
    );
    let connect_queued_at = || {
        count(
            &village.gateway_db,
            "SELECT COALESCE(MIN(created_at), 0) FROM relay_commands WHERE action = 'connect'",
        )
    };
    wait_for(
        "the reconnect queued at the gateway",
        Duration::from_secs(20),
        &d,
        || connect_queued_at() > 0,
    );
    let queued_after = connect_queued_at() - paid.timestamp();
    eprintln!("reconnect queued {queued_after} s after the payment");
    // Before the next scheduled pass (at second 30 of the next minute, 54 s or more away).
    assert!((0..20).contains(&queued_after), "{queued_after} s");
    assert_eq!(
        count(
            &village.gateway_db,
            "SELECT COUNT(*) FROM ledger_events WHERE account = 'ACC-0' AND kind = 'recharge'",
        ),
        1
    );
    wait_for(
        "the reconnect confirmed by the meter",
        Duration::from_secs(60),
        &d,
        || village.acknowledged("connect") == 1,
    );
}

#[test]
fn the_reconnect_bench_measures_both_ways_of_paying() {
    let out = crate::common::village::run(&["bench", "reconnect", "--households", "2", "--json"]);
    let figures: serde_json::Value = serde_json::from_str(&out).unwrap();
    for way in ["recharge_at_central", "voucher_at_gateway"] {
        let latencies = &figures[way];
        assert_eq!(latencies["payments"], 1, "{out}");
        let p99 = latencies["p99_s"].as_f64().unwrap();
        // Paid, then the relay closed: it took some time, and far less than a scheduled session.
        assert!(p99 > 0.0 && p99 < 60.0, "{way}: {out}");
    }
}
