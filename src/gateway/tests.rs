use super::*;
use crate::store::MeterInstall;
use crate::tariff::Category;
use chrono::TimeZone;
use std::sync::{Arc, Mutex};

/// A UTC instant from Asia/Kolkata wall-clock time.
fn ist(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    civil::ist()
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// Records what the gateway sends to meters.
#[derive(Clone, Default)]
struct RecordingLink(Arc<Mutex<Vec<(i64, String, RelayAction)>>>);

impl RelayLink for RecordingLink {
    fn send(&mut self, meter: i64, command_id: &str, action: RelayAction) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push((meter, command_id.to_string(), action));
        Ok(())
    }
}

fn gateway(dir: &tempfile::TempDir, config_toml: &str) -> (Gateway, i64, RecordingLink) {
    let mut config = GatewayConfig::parse(config_toml).unwrap();
    config.gateway.data_dir = dir.path().join("data");
    let mut gateway = Gateway::open(config).unwrap();
    let link = RecordingLink::default();
    gateway.set_relay_link(Box::new(link.clone()));
    let created = ist(2026, 11, 1, 0, 0);
    gateway
        .store()
        .upsert_account(&Account {
            id: "A1".into(),
            consumer_name: "Kamla Bai".into(),
            category: Category::Domestic,
            phone: None,
            created_at: created,
        })
        .unwrap();
    let meter = gateway
        .store()
        .install_meter(&MeterInstall {
            serial: "M1".into(),
            account: "A1".into(),
            installed_at: created,
            initial_register_wh: Some(0),
        })
        .unwrap();
    gateway
        .on_relay_report(meter, RelayState::Connected, created)
        .unwrap();
    (gateway, meter, link)
}

fn recharge(id: &str, amount_paise: i64, at: DateTime<Utc>) -> LedgerEvent {
    LedgerEvent {
        id: id.into(),
        account: "A1".into(),
        at,
        kind: EventKind::Recharge,
        amount_paise,
        expires_at: None,
    }
}

#[test]
fn exhausted_balance_disconnects_in_the_next_days_window_and_a_recharge_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, meter, link) = gateway(&dir, "");
    gw.store()
        .record_event(&recharge("r1", 37_000, ist(2026, 11, 1, 9, 0)))
        .unwrap();
    // 100 kWh at 3.70 INR uses up exactly the 370 INR recharge: balance 0, at the threshold.
    let used = MeterReading {
        meter,
        at: ist(2026, 11, 30, 10, 15),
        register_wh: 100_000,
    };
    gw.ingest_readings(&[used]).unwrap();

    let monday = gw.policy_pass(ist(2026, 11, 30, 10, 30), true).unwrap();
    assert_eq!((monday.commands_queued, monday.disconnects_held), (0, 1));
    assert_eq!(gw.store().alert_count("A1", "low_balance").unwrap(), 3); // 30 %, 10 %, 0 %
    assert_eq!(
        gw.policy_pass(ist(2026, 12, 1, 9, 59), true)
            .unwrap()
            .commands_queued,
        0
    );

    let tuesday = gw.policy_pass(ist(2026, 12, 1, 10, 0), true).unwrap();
    assert_eq!((tuesday.commands_queued, tuesday.commands_sent), (1, 1));
    assert_eq!(link.0.lock().unwrap()[0].2, RelayAction::Disconnect);
    // Not confirmed yet: no new command, no alert.
    assert_eq!(
        gw.policy_pass(ist(2026, 12, 1, 10, 1), true)
            .unwrap()
            .commands_queued,
        0
    );
    assert_eq!(gw.store().alert_count("A1", "disconnected").unwrap(), 0);
    gw.on_relay_report(meter, RelayState::Disconnected, ist(2026, 12, 1, 10, 2))
        .unwrap();
    assert_eq!(gw.store().alert_count("A1", "disconnected").unwrap(), 1);

    // A recharge at night, outside every window, reconnects at the next pass.
    gw.store()
        .record_event(&recharge("r2", 20_000, ist(2026, 12, 1, 23, 0)))
        .unwrap();
    let night = gw.policy_pass(ist(2026, 12, 1, 23, 1), true).unwrap();
    assert_eq!(night.commands_queued, 1);
    assert_eq!(
        link.0.lock().unwrap().last().unwrap().2,
        RelayAction::Connect
    );
    gw.on_relay_report(meter, RelayState::Connected, ist(2026, 12, 1, 23, 2))
        .unwrap();
    assert_eq!(gw.store().alert_count("A1", "reconnected").unwrap(), 1);
    assert_eq!(gw.store().below_threshold_since("A1").unwrap(), None);
}

#[test]
fn fixed_and_minimum_charges_are_charged_once_however_often_the_loop_runs() {
    let dir = tempfile::tempdir().unwrap();
    // A domestic tariff with a 60 INR fixed charge, as the example file would state it.
    let toml = r#"
        [[tariff]]
        id = "dom"
        category = "domestic"
        effective_from = "2023-04-01"
        fixed_monthly_paise = 6000
        minimum_monthly_paise = 10000
        slabs = [{ paise_per_kwh = 400 }]
        [[tariff]]
        id = "com"
        category = "commercial"
        effective_from = "2023-04-01"
        slabs = [{ paise_per_kwh = 700 }]
        [[tariff]]
        id = "agr"
        category = "agricultural"
        effective_from = "2023-04-01"
        slabs = [{ paise_per_kwh = 300 }]
    "#;
    let (mut gw, _meter, _link) = gateway(&dir, toml);
    for hour in [0, 6, 12, 18] {
        gw.policy_pass(ist(2026, 11, 30, hour, 5), true).unwrap();
    }
    let november_fixed = gw
        .store()
        .sum_of(
            "A1",
            EventKind::FixedCharge,
            ist(2026, 11, 1, 0, 0),
            ist(2026, 12, 1, 0, 0),
        )
        .unwrap();
    assert_eq!(november_fixed, 6_000);
    // December 1st: one more fixed day, and November is topped up from 60 INR to the 100 INR minimum.
    let first = gw.policy_pass(ist(2026, 12, 1, 0, 1), true).unwrap();
    let second = gw.policy_pass(ist(2026, 12, 1, 0, 2), true).unwrap();
    assert_eq!((first.fixed_charges, first.minimum_charges), (1, 1));
    assert_eq!((second.fixed_charges, second.minimum_charges), (0, 0));
    assert_eq!(
        gw.store().position("A1").unwrap().balance_paise,
        -(6_000 + 4_000 + 6_000 / 31)
    );
}

#[test]
fn an_unconfirmed_command_is_retried_then_times_out_with_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(
        &dir,
        "[relay]\nmax_attempts = 3\n[policy]\nfirst_disconnect = \"0s\"\n",
    );
    let mut now = ist(2026, 12, 1, 10, 0);
    gw.policy_pass(now, true).unwrap(); // balance 0 with no recharge: disconnect due
    for _ in 0..50 {
        now += Duration::minutes(1);
        gw.policy_pass(now, true).unwrap();
    }
    let sends = link.0.lock().unwrap().len();
    assert_eq!(
        sends, 3,
        "sent at 0, +1 min and +3 min, then gave up; not reissued within the hour"
    );
    assert_eq!(gw.store().alert_count("A1", "relay_timeout").unwrap(), 1);
}

#[test]
fn reading_buffer_is_due_by_count_or_age() {
    let mut config = GatewayConfig::default();
    config.store.readings_commit_max = 3;
    let mut buffer = ReadingBuffer::new(&config);
    let t = tokio::time::Instant::now();
    let r = MeterReading {
        meter: 1,
        at: ist(2026, 12, 1, 0, 0),
        register_wh: 1,
    };
    assert!(!buffer.push(r, t));
    assert!(!buffer.push(r, t));
    assert!(buffer.push(r, t));
    assert_eq!(buffer.take().len(), 3);
    assert!(!buffer.push(r, t));
    assert_eq!(
        buffer.deadline(),
        Some(t + std::time::Duration::from_secs(5))
    );
    assert!(buffer.is_due(t + std::time::Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn the_daemon_runs_a_pass_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = GatewayConfig::default();
    config.gateway.data_dir = dir.path().join("data");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(run(config.clone(), async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    stop.send(()).unwrap();
    daemon.await.unwrap().unwrap();
    assert!(config.database_path().exists());
}

#[test]
fn no_disconnect_on_a_clock_that_went_back_after_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _meter, link) = gateway(&dir, "[policy]\nfirst_disconnect = \"0s\"\n");
    // The balance is exhausted (no recharge), and the gateway ran until Tuesday evening.
    gw.tick(ist(2026, 12, 1, 20, 0)).unwrap();
    // Power cut; the Pi boots at its last saved time, a day behind, in a disconnect window.
    let rebooted_at = ist(2026, 11, 30, 11, 0);
    assert!(!gw.clock_trusted(rebooted_at).unwrap());
    let report = gw.tick(rebooted_at).unwrap();
    assert_eq!((report.commands_queued, report.disconnects_held), (0, 1));
    assert!(link.0.lock().unwrap().is_empty());
    // Once the clock is right again (NTP, or a sync measured it), the disconnect goes ahead.
    let report = gw.tick(ist(2026, 12, 2, 10, 30)).unwrap();
    assert_eq!(report.commands_queued, 1);
}

#[test]
fn confirming_a_new_meters_first_connect_does_not_tell_the_consumer_supply_was_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _, _) = gateway(&dir, "");
    let created = ist(2026, 11, 1, 0, 0);
    gw.store()
        .upsert_account(&Account {
            id: "A2".into(),
            consumer_name: "Ramesh".into(),
            category: Category::Domestic,
            phone: None,
            created_at: created,
        })
        .unwrap();
    let meter = gw
        .store()
        .install_meter(&MeterInstall {
            serial: "M2".into(),
            account: "A2".into(),
            installed_at: created,
            initial_register_wh: Some(0),
        })
        .unwrap();
    gw.store()
        .record_event(&LedgerEvent {
            account: "A2".into(),
            ..recharge("r-a2", 50_000, created)
        })
        .unwrap();
    // The relay state is unknown until the meter reports: the policy makes sure it is connected.
    assert_eq!(gw.policy_pass(created, true).unwrap().commands_queued, 1);
    gw.on_relay_report(meter, RelayState::Connected, created + Duration::minutes(1))
        .unwrap();
    assert_eq!(gw.store().alert_count("A2", "reconnected").unwrap(), 0);
    assert_eq!(
        gw.store().relay_state(meter).unwrap(),
        RelayState::Connected
    );
}
