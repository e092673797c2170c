//! Gateway and central over real TLS on loopback, through an emulated cellular link: outages, cut
//! requests and lost answers lose and double nothing, and balances agree to the paisa afterwards.
use chrono::{DateTime, Duration, DurationRound, Utc};
use gramgrid_core::ledger::EventKind;
use gramgrid_sim::netem::Fault;
use gramgrid_sim::village::Village;
use rand::SeedableRng;

fn start() -> DateTime<Utc> {
    (Utc::now() - Duration::days(4))
        .duration_trunc(Duration::minutes(15))
        .unwrap()
}

/// Syncs until a session succeeds (the link may fail some attempts), at most `tries` times.
async fn sync_until_done(village: &Village, tries: usize) -> usize {
    for attempt in 1..=tries {
        if village.sync().await.is_ok() {
            return attempt;
        }
    }
    panic!("no successful sync in {tries} attempts");
}

fn recharges_at_gateway(village: &Village, account: &str) -> Vec<(String, i64)> {
    village
        .with_gateway(|g| g.store().events(account))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Recharge)
        .map(|e| (e.id, e.amount_paise))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_days_with_recharges_and_vouchers_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = start();
    let village = Village::build(dir.path(), "gw-outage", 20, t0)
        .await
        .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    village.sync().await.unwrap();
    for h in &village.households {
        village
            .recharge_at_central(&h.account, 50_000, &format!("opening-{}", h.account))
            .await
            .unwrap();
    }
    village.sync().await.unwrap();
    assert_eq!(
        village.gateway_balance("ACC000000").unwrap(),
        50_000,
        "opening recharge reached the gateway"
    );
    village
        .consume(t0, t0 + Duration::hours(12), &mut rng)
        .unwrap();
    village.sync().await.unwrap();

    // The backhaul goes down for days.
    village.link.plan.lock().unwrap().default_fault = Fault::Refuse;
    village
        .consume(t0 + Duration::hours(12), t0 + Duration::days(2), &mut rng)
        .unwrap();
    for (i, h) in village.households.iter().take(5).enumerate() {
        village
            .recharge_at_central(&h.account, 20_000 + i as i64, &format!("outage-{i}"))
            .await
            .unwrap();
    }
    // A retried payment request during the outage credits once.
    village
        .recharge_at_central("ACC000000", 20_000, "outage-0")
        .await
        .unwrap();
    assert!(village.sync().await.is_err(), "the link is down");
    let voucher = village.issue_voucher("ACC000003", 30_000).await.unwrap();
    village
        .with_gateway(|g| {
            g.store()
                .redeem_voucher(&voucher.code, Utc::now())
                .map(|_| ())
        })
        .unwrap();
    village
        .consume(t0 + Duration::days(2), t0 + Duration::days(3), &mut rng)
        .unwrap();
    assert!(village.sync().await.is_err(), "still down");

    // The link returns: one catch-up.
    village.link.plan.lock().unwrap().default_fault = Fault::None;
    let report = village.sync().await.unwrap();
    assert!(report.readings >= 20 * 96 * 2, "{report:?}");
    assert_eq!(
        village.with_gateway(|g| g.store().sync_backlog()).unwrap(),
        (0, 0)
    );
    assert_eq!(
        village.disagreements().await.unwrap(),
        vec![],
        "balances agree to the paisa"
    );

    // Nothing lost or doubled: the gateway holds each central recharge once, the voucher once.
    let mut ids: Vec<String> = recharges_at_gateway(&village, "ACC000000")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        2,
        "opening and outage recharge, once each: {ids:?}"
    );
    let acc3 = recharges_at_gateway(&village, "ACC000003");
    assert_eq!(
        acc3.iter()
            .filter(|(id, _)| *id == voucher.redemption_id)
            .count(),
        1
    );
    // The voucher is now refused at central too.
    let code = voucher.code.clone();
    let at_central = village
        .central
        .central
        .db()
        .transaction(move |tx| gramgrid_central::vouchers::redeem_at_central(tx, &code, Utc::now()))
        .await;
    assert!(
        at_central.is_err(),
        "a voucher redeemed at the gateway is refused at central"
    );
    village.central.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_requests_and_lost_answers_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = start();
    let village = Village::build(dir.path(), "gw-faults", 12, t0)
        .await
        .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    village.sync().await.unwrap();
    for h in &village.households {
        village
            .recharge_at_central(&h.account, 40_000, &format!("r-{}", h.account))
            .await
            .unwrap();
    }
    village
        .consume(t0, t0 + Duration::days(2), &mut rng)
        .unwrap();
    // Small batches so the catch-up takes many exchanges, each of which the link can break.
    let mut village = village;
    village.sync.max_readings = 500;
    village.sync.max_priority_records = 20;
    {
        let mut plan = village.link.plan.lock().unwrap();
        plan.latency = std::time::Duration::from_millis(30); // a slow cellular bearer
        plan.faults.extend([
            Fault::CutRequestAfter(300),
            Fault::None,
            Fault::CutResponseAfter(40), // central applied the batch, the gateway never heard
            Fault::None,
            Fault::None,
            Fault::CutResponseAfter(10),
            Fault::Refuse,
            Fault::CutRequestAfter(2_000),
            Fault::None,
            Fault::CutResponseAfter(100),
        ]);
    }
    let attempts = sync_until_done(&village, 20).await;
    assert!(attempts > 1, "the faults must have broken some sessions");
    // On a clean link, a later sync has nothing left, and everything agrees.
    village.link.plan.lock().unwrap().faults.clear();
    sync_until_done(&village, 1).await;
    let last = village.sync().await.unwrap();
    assert_eq!((last.priority_records, last.readings), (0, 0));
    assert_eq!(village.disagreements().await.unwrap(), vec![]);
    let book = village
        .with_gateway(|g| Ok(g.tariff_book().clone()))
        .unwrap();
    assert_eq!(
        village.with_gateway(|g| g.store().verify(&book)).unwrap(),
        Vec::<String>::new()
    );
    for h in &village.households {
        assert_eq!(
            recharges_at_gateway(&village, &h.account).len(),
            1,
            "{}",
            h.account
        );
    }
    village.central.stop().await.unwrap();
}

/// Puts the gateway database back to `backup` (as a technician restoring an SD card would): the
/// daemon's gateway is closed, the file replaced, and the gateway opened again.
fn restore_gateway(village: &Village, backup: &std::path::Path) {
    let mut gateway = village.gateway.lock().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut elsewhere = village.gateway_config.clone();
    elsewhere.gateway.data_dir = scratch.path().to_path_buf();
    drop(std::mem::replace(
        &mut *gateway,
        gramgrid_gateway::gateway::Gateway::open(elsewhere).unwrap(),
    ));
    let db = village.gateway_config.database_path();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(backup, &db).unwrap();
    *gateway = gramgrid_gateway::gateway::Gateway::open(village.gateway_config.clone()).unwrap();
}

/// A gateway whose database is restored from a backup keeps syncing: central notices the stale
/// database, flags it, takes the new records (whose sequence numbers it has seen before) and
/// sends back what the backup lost, so the voucher redeemed after the backup is credited again and
/// cannot be redeemed twice, and both sides agree to the paisa.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restored_from_a_backup_loses_nothing_and_redeems_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = start();
    let village = Village::build(dir.path(), "gw-restore", 4, t0)
        .await
        .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    village.sync().await.unwrap();
    for h in &village.households {
        village
            .recharge_at_central(&h.account, 40_000, &format!("opening-{}", h.account))
            .await
            .unwrap();
    }
    village
        .consume(t0, t0 + Duration::hours(6), &mut rng)
        .unwrap();
    village.sync().await.unwrap();
    let backup = dir.path().join("backup.db");
    village
        .with_gateway(|g| g.store().backup_to(&backup))
        .unwrap();

    // After the backup: a voucher redeemed offline and more readings, all synced.
    let voucher = village.issue_voucher("ACC000001", 25_000).await.unwrap();
    village
        .with_gateway(|g| {
            g.store()
                .redeem_voucher(&voucher.code, Utc::now())
                .map(|_| ())
        })
        .unwrap();
    village
        .consume(t0 + Duration::hours(6), t0 + Duration::hours(12), &mut rng)
        .unwrap();
    village.sync().await.unwrap();
    let acked_before = village.with_gateway(|g| g.store().sync_cursors()).unwrap();

    // The SD card is restored from the backup; the gateway records new things and syncs.
    restore_gateway(&village, &backup);
    let restored = village.with_gateway(|g| g.store().sync_cursors()).unwrap();
    assert!(
        restored.priority_acked < acked_before.priority_acked,
        "the backup is older"
    );
    village
        .consume(t0 + Duration::hours(12), t0 + Duration::hours(18), &mut rng)
        .unwrap();
    for _ in 0..3 {
        village.sync().await.unwrap();
    }
    let flags = village
        .central
        .central
        .db()
        .transaction(|tx| {
            tx.query(
                "SELECT kind, gateway FROM flags WHERE kind = 'gateway_restored'",
                &[],
            )
        })
        .await
        .unwrap();
    assert_eq!(flags.len(), 1, "the restore is flagged once");
    assert_eq!(
        village.with_gateway(|g| g.store().sync_backlog()).unwrap(),
        (0, 0),
        "everything recorded after the restore was taken"
    );
    // What the backup lost came back: the voucher's credit, and its refusal.
    let credited = recharges_at_gateway(&village, "ACC000001");
    assert!(
        credited
            .iter()
            .any(|(id, amount)| *id == voucher.redemption_id && *amount == 25_000),
        "{credited:?}"
    );
    let again = village.with_gateway(|g| {
        g.store()
            .redeem_voucher(&voucher.code, Utc::now())
            .map(|_| ())
    });
    assert!(
        again.is_err(),
        "the restored gateway refuses the voucher it had already redeemed"
    );
    assert_eq!(
        village.disagreements().await.unwrap(),
        vec![],
        "balances agree to the paisa"
    );
    village.central.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technician_set_at_central_reaches_the_gateway_and_their_actions_come_back_in_one_exchange_each(
) {
    use gramgrid_central::technicians::{self, TechnicianChange};
    const PASSWORD: &str = "kothi-7-transformer";
    let dir = tempfile::tempdir().unwrap();
    let village = Village::build(dir.path(), "gw-tech", 2, start())
        .await
        .unwrap();
    village.sync().await.unwrap();
    assert_eq!(
        village
            .with_gateway(|g| g.store().technician_count())
            .unwrap(),
        0
    );

    let change = TechnicianChange {
        full_name: "Asha Verma".into(),
        role: "technician".into(),
        password: Some(PASSWORD.into()),
        active: None,
    };
    let now = Utc::now();
    village
        .central
        .central
        .db()
        .transaction(move |tx| technicians::set_technician(tx, "asha.v", &change, now))
        .await
        .unwrap();
    let report = village.sync().await.unwrap();
    assert_eq!(report.exchanges, 1, "{report:?}");
    let account = village
        .with_gateway(|g| g.store().technician("asha.v"))
        .unwrap()
        .expect("the gateway has the technician after one exchange");
    assert_eq!(
        (
            account.full_name.as_str(),
            account.role.as_str(),
            account.active
        ),
        ("Asha Verma", "technician", true)
    );
    assert!(account.password_matches(PASSWORD));

    let action = gramgrid_gateway::store::TechnicianAction {
        id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        technician: "asha.v".into(),
        action: "override".into(),
        subject: Some(village.households[0].account.clone()),
        detail: "reconnect until 2026-11-30 10:00 IST".into(),
        reason: Some("medical equipment in the house".into()),
        at: Utc::now(),
    };
    let recorded = action.clone();
    village
        .with_gateway(move |g| g.store().record_technician_action(&recorded))
        .unwrap();
    let report = village.sync().await.unwrap();
    assert_eq!(
        (report.exchanges, report.priority_records),
        (1, 1),
        "{report:?}"
    );
    let stored = village
        .central
        .central
        .db()
        .transaction(|tx| technicians::technician_actions(tx, None, Some("asha.v"), 10))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].id, action.id);
    assert_eq!(stored[0].gateway, "gw-tech", "the certificate's gateway");
    assert_eq!(stored[0].subject, action.subject);
    assert_eq!(stored[0].reason, action.reason);
    assert_eq!(
        village
            .with_gateway(|g| g.store().sync_backlog())
            .unwrap()
            .0,
        0,
        "acknowledged, out of the outbox"
    );
    village.central.stop().await.unwrap();
}

/// `gramgrid bench sync-steady` as the README shows it, on a small village: every interval's
/// readings arrive, and resumed sessions make a session cost less than a full handshake does.
#[test]
fn the_steady_state_sync_bench_counts_the_bytes_of_every_session() {
    let out = crate::common::village::run(&[
        "bench",
        "sync-steady",
        "--meters",
        "4",
        "--sessions",
        "3",
        "--json",
    ]);
    let figures: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(figures["readings"], 12, "{out}");
    assert_eq!(figures["balances_agree"], true, "{out}");
    // A full mutual-TLS handshake alone costs more than 2,000 bytes (both certificate chains).
    let per_session = figures["wire_bytes_per_session"].as_f64().unwrap();
    assert!(per_session > 500.0 && per_session < 2_000.0, "{out}");
}
