//! Store tests on real SQLite files: migrations and upgrades, money events, ingest and rating
//! (charges independent of arrival order, property-tested), relay commands, alerts, overrides,
//! backup, and the sync side (outbox, acknowledgements, downlink records, vouchers).
use super::*;
use chrono::{Duration, TimeZone};
use gramgrid_core::ledger::{EventKind, LedgerEvent};
use gramgrid_core::policy::RelayAction;
use gramgrid_core::relay::CommandState;
use gramgrid_core::tariff::TariffBook;
use gramgrid_proto::wire::UplinkEvent;
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap()
}

fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("gateway.db")).unwrap();
    (dir, store)
}

fn with_account(store: &mut Store, id: &str) -> i64 {
    store
        .upsert_account(&Account {
            id: id.into(),
            consumer_name: format!("Consumer {id}"),
            category: Category::Domestic,
            phone: Some("+910000000000".into()),
            created_at: t0(),
        })
        .unwrap();
    store
        .install_meter(&MeterInstall {
            serial: format!("M-{id}"),
            account: id.into(),
            installed_at: t0(),
            initial_register_wh: Some(1_000),
        })
        .unwrap()
}

fn recharge(id: &str, account: &str, amount_paise: i64) -> LedgerEvent {
    LedgerEvent {
        id: id.into(),
        account: account.into(),
        at: t0() + Duration::hours(1),
        kind: EventKind::Recharge,
        amount_paise,
        expires_at: None,
    }
}

fn reading(meter: i64, interval: i64, register_wh: i64) -> MeterReading {
    MeterReading {
        meter,
        at: t0() + Duration::minutes(15 * interval),
        register_wh,
        export_wh: 0,
    }
}

#[test]
fn migrations_run_from_empty_and_reopen_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        schema::MIGRATIONS.len() as i64
    );
    let mode: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        schema::MIGRATIONS.len() as i64
    );
    store.conn.pragma_update(None, "user_version", 99).unwrap();
    drop(store);
    let err = Store::open(&path).err().unwrap().to_string();
    assert!(
        err.contains("schema version 99") && err.contains("newer"),
        "{err}"
    );
}

#[test]
fn processes_opening_a_new_database_at_once_all_succeed() {
    // The daemon and a technician's command can open the same new file together at first boot:
    // each migration step and the secrets key must be made once, and nobody may see them half made.
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.db");
        let start = std::sync::Barrier::new(6);
        let versions: Vec<std::result::Result<i64, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        let store = Store::open(&path).map_err(|e| e.to_string())?;
                        store.schema_version().map_err(|e| e.to_string())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for version in versions {
            assert_eq!(version, Ok(schema::MIGRATIONS.len() as i64));
        }
    }
}

/// A database as gramgrid left it at schema version 4, with one account and meter (id 1), relay
/// commands `(id, state, created_at offset in seconds)` and one event per command.
fn version_4_database(path: &std::path::Path, commands: &[(&str, &str, i64)]) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    for sql in &schema::MIGRATIONS[..4] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 4).unwrap();
    conn.execute_batch(
        "INSERT INTO accounts (id, consumer_name, category, created_at) VALUES ('A1', 'Asha', 'domestic', 0);
         INSERT INTO meters (id, serial, account, installed_at) VALUES (1, 'M-A1', 'A1', 0);",
    )
    .unwrap();
    for (id, state, created) in commands {
        conn.execute(
            "INSERT INTO relay_commands (id, meter, action, state, reason, created_at, attempts) VALUES (?1, 1, 'disconnect', ?2, 'balance 0.00 INR', ?3, 1)",
            params![id, state, ts(t0()) + created],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO relay_command_events (command, state, at, detail) VALUES (?1, ?2, ?3, '')",
            params![id, state, ts(t0()) + created],
        )
        .unwrap();
    }
    conn
}

#[test]
fn an_outbox_queued_by_the_previous_version_is_still_uploaded_after_the_upgrade() {
    // Outbox rows as schema version 6 stored them: postcard bodies with no format column (golden
    // bytes written by the previous version, tests/data/wire-v1/).
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/wire-v1");
    let names = [
        "ledger-fixed-charge",
        "ledger-emergency-credit",
        "voucher-redeemed",
        "relay-command",
        "relay-state",
        "alert",
        "override",
        "anomaly",
        "clock-skew",
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    {
        let conn = Connection::open(&path).unwrap();
        for sql in &schema::MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        for name in names {
            let body = std::fs::read(golden.join(format!("uplink-{name}.postcard"))).unwrap();
            conn.execute("INSERT INTO sync_outbox (event) VALUES (?1)", [body])
                .unwrap();
        }
    }
    let mut store = Store::open(&path).unwrap();
    let queued = store.priority_after(0, 100).unwrap();
    assert_eq!(queued.len(), names.len());
    assert!(matches!(&queued[0].event, UplinkEvent::Ledger(e) if e.amount_paise == 133));
    assert!(matches!(&queued[8].event, UplinkEvent::ClockSkew { .. }));
    // New rows go behind the old ones, in the current format, and read back alike.
    with_account(&mut store, "A1");
    store
        .record_event(&LedgerEvent {
            id: "gw:fixed:A1:1".into(),
            account: "A1".into(),
            at: t0(),
            kind: EventKind::FixedCharge,
            amount_paise: 7,
            expires_at: None,
        })
        .unwrap();
    let all = store.priority_after(0, 100).unwrap();
    assert_eq!(all.len(), names.len() + 1);
    assert!(matches!(&all[9].event, UplinkEvent::Ledger(e) if e.id == "gw:fixed:A1:1"));
}

#[test]
fn migration_5_rebuilds_relay_commands_keeping_rows_references_and_the_open_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    // "late" and "later" share a creation time: the newest is the one inserted last (rowid).
    let commands = [
        ("early", "acknowledged", 0),
        ("mid", "timed_out", 60),
        ("later", "failed", 120),
        ("late", "sent", 120),
    ];
    let conn = version_4_database(&path, &commands);
    conn.execute(
        "UPDATE relay_commands SET rowid = rowid + 10 WHERE id = 'late'",
        [],
    )
    .unwrap();
    let rowids = |conn: &Connection| -> Vec<(String, i64)> {
        conn.prepare("SELECT id, rowid FROM relay_commands ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let before = rowids(&conn);
    drop(conn);

    let mut store = Store::open(&path).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        super::schema::MIGRATIONS.len() as i64
    );
    let ids: Vec<String> = store
        .relay_commands_of(1)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, vec!["early", "mid", "late", "later"]);
    assert_eq!(rowids(&store.conn), before);
    assert_eq!(store.latest_relay_command(1).unwrap().unwrap().id, "late");
    let events: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM relay_command_events", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(events, 4);
    let dangling = store
        .conn
        .prepare("PRAGMA foreign_key_check")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .count();
    assert_eq!(dangling, 0);
    let foreign_keys: i64 = store
        .conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(foreign_keys, 1);
    let index: String = store
        .conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'relay_commands_open'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        index.contains("WHERE state IN ('queued', 'sent')"),
        "{index}"
    );
    assert_eq!(store.open_relay_commands().unwrap().len(), 1);

    // The new state is allowed, unknown ones still are not, and references are enforced again.
    assert!(store
        .withdraw_relay_command("late", t0() + Duration::minutes(5), "window closed")
        .unwrap());
    assert!(store
        .conn
        .execute(
            "UPDATE relay_commands SET state = 'lost' WHERE id = 'early'",
            []
        )
        .is_err());
    assert!(store
        .conn
        .execute(
            "INSERT INTO relay_command_events (command, state, at) VALUES ('nope', 'sent', 0)",
            []
        )
        .is_err());
}

#[test]
fn a_migration_that_would_leave_a_dangling_reference_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    let conn = version_4_database(&path, &[("c1", "sent", 0)]);
    conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
    conn.execute(
        "INSERT INTO relay_command_events (command, state, at) VALUES ('gone', 'sent', 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let err = Store::open(&path).err().unwrap();
    assert!(
        matches!(&err, StoreError::MigrationForeignKeys { version: 5, rows: 1, table, .. } if table == "relay_command_events"),
        "{err}"
    );
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
}

#[test]
fn a_recharge_credits_once_and_a_reused_id_is_refused() {
    let (_dir, mut store) = open_temp();
    with_account(&mut store, "A1");
    assert!(store.record_event(&recharge("r-1", "A1", 50_000)).unwrap());
    assert!(!store.record_event(&recharge("r-1", "A1", 50_000)).unwrap());
    assert_eq!(store.position("A1", &[]).unwrap().balance_paise, 50_000);
    let err = store
        .record_event(&recharge("r-1", "A1", 90_000))
        .unwrap_err();
    assert!(matches!(err, StoreError::EventIdConflict(_)), "{err}");
    let err = store
        .record_event(&recharge("r-2", "nobody", 100))
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownAccount(_)), "{err}");
    assert_eq!(store.position("A1", &[]).unwrap().balance_paise, 50_000);
}

#[test]
fn readings_are_charged_by_the_tariff_and_reduce_the_balance() {
    let (_dir, mut store) = open_temp();
    let book = TariffBook::builtin();
    let meter = with_account(&mut store, "A1");
    store.record_event(&recharge("r-1", "A1", 100_000)).unwrap();
    // 150 kWh over 150 intervals, after the 1,000 Wh installation baseline.
    let batch: Vec<_> = (1..=150)
        .map(|i| reading(meter, i, 1_000 + i * 1_000))
        .collect();
    let report = store.ingest(&book, &batch).unwrap();
    assert_eq!(report.stored, 150);
    // 100 kWh × 3.70 + 50 kWh × 3.90 = 565.00 INR
    assert_eq!(report.charged_paise, 56_500);
    assert_eq!(
        store.position("A1", &[]).unwrap().balance_paise,
        100_000 - 56_500
    );
    assert_eq!(store.verify(&book).unwrap(), Vec::<String>::new());
}

#[test]
fn a_rooftop_solar_home_is_charged_its_net_units_and_its_exports_go_up_with_its_readings() {
    let (_dir, mut store) = open_temp();
    let book = TariffBook::builtin();
    let meter = with_account(&mut store, "A1");
    store.record_event(&recharge("r-1", "A1", 100_000)).unwrap();
    let solar = |interval, register_wh, export_wh| MeterReading {
        export_wh,
        ..reading(meter, interval, register_wh)
    };
    // The installation baseline's export was not read: the first reading's export register is
    // the baseline, and the span to it credits no export.
    let report = store.ingest(&book, &[solar(1, 1_000, 0)]).unwrap();
    assert_eq!(report.charged_paise, 0);
    // 20 kWh in, 5 kWh out over the next span: 15 net units × 3.70 = 55.50 INR.
    let report = store.ingest(&book, &[solar(4, 21_000, 5_000)]).unwrap();
    assert_eq!(report.charged_paise, 5_550);
    // A late reading in between changes nothing in the month's net units, so nothing is charged.
    let report = store.ingest(&book, &[solar(2, 11_000, 1_000)]).unwrap();
    assert_eq!((report.stored, report.charged_paise), (1, 0));
    // The sun outruns the household: 1 kWh in, 30 kWh out. The month's export exceeds its import,
    // so what was charged is given back and nothing more.
    let report = store.ingest(&book, &[solar(8, 22_000, 35_000)]).unwrap();
    assert_eq!(report.charged_paise, -5_550);
    assert_eq!(store.position("A1", &[]).unwrap().balance_paise, 100_000);
    assert_eq!(store.verify(&book).unwrap(), Vec::<String>::new());
    // The upload carries the export registers beside their readings.
    let batch = store.readings_after(0, 100).unwrap().unwrap();
    let exports = gramgrid_proto::wire::exports_by_reading(&batch.blocks, &batch.exports).unwrap();
    let mut exported: Vec<i64> = exports.values().copied().collect();
    exported.sort();
    assert_eq!(exported, vec![EXPORT_UNKNOWN, 1_000, 5_000, 35_000]);
    // The same reading with another export register is a conflict, not a duplicate.
    let report = store.ingest(&book, &[solar(8, 22_000, 34_000)]).unwrap();
    assert_eq!((report.duplicates, report.conflicts), (0, 1));
}

#[test]
fn duplicates_conflicts_and_refused_readings_are_reported_not_charged() {
    let (_dir, mut store) = open_temp();
    let book = TariffBook::builtin();
    let meter = with_account(&mut store, "A1");
    store
        .ingest(&book, &[reading(meter, 1, 2_000), reading(meter, 2, 3_000)])
        .unwrap();
    let report = store
        .ingest(
            &book,
            &[
                reading(meter, 2, 3_000),      // duplicate
                reading(meter, 1, 2_500),      // conflicting duplicate
                reading(meter, -4, 500),       // before installation
                reading(meter + 99, 3, 9_999), // unknown meter
                reading(meter, 3, i64::MAX),   // a register no meter can report
            ],
        )
        .unwrap();
    assert_eq!(
        (
            report.stored,
            report.duplicates,
            report.conflicts,
            report.refused
        ),
        (0, 1, 1, 3)
    );
    assert_eq!(report.charged_paise, 0);
    let anomalies: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM anomalies", [], |r| r.get(0))
        .unwrap();
    assert_eq!(anomalies, 4);
}

#[test]
fn a_reading_with_a_fraction_of_a_second_is_the_same_reading() {
    let (_dir, mut store) = open_temp();
    let book = TariffBook::builtin();
    let meter = with_account(&mut store, "A1");
    let mut r = reading(meter, 0, 1_000);
    r.at += Duration::milliseconds(250); // same second as the installation reading
    let report = store.ingest(&book, &[r]).unwrap();
    assert_eq!((report.stored, report.duplicates), (0, 1));
}

#[test]
fn a_replaced_meter_starts_from_its_installation_reading() {
    let (_dir, mut store) = open_temp();
    let book = TariffBook::builtin();
    let old = with_account(&mut store, "A1");
    store.ingest(&book, &[reading(old, 4, 5_000)]).unwrap(); // 4 kWh on the old meter
    let new = store
        .install_meter(&MeterInstall {
            serial: "M-A1-new".into(),
            account: "A1".into(),
            installed_at: t0() + Duration::hours(2),
            initial_register_wh: Some(7),
        })
        .unwrap();
    assert_eq!(
        store.active_meter("A1").unwrap(),
        Some((new, "M-A1-new".to_string()))
    );
    let report = store
        .ingest(&book, &[reading(old, 12, 6_000), reading(new, 12, 2_007)])
        .unwrap();
    assert_eq!((report.refused, report.stored), (1, 1));
    // 4 kWh + 2 kWh at 3.70
    assert_eq!(store.energy_charges("A1", None).unwrap(), 6 * 370);
}

#[test]
fn relay_commands_are_acknowledged_only_by_the_reported_state() {
    let (_dir, mut store) = open_temp();
    let meter = with_account(&mut store, "A1");
    store
        .queue_relay_command(
            "c1",
            meter,
            RelayAction::Disconnect,
            "balance exhausted",
            t0(),
            None,
        )
        .unwrap();
    store.mark_relay_sent("c1", t0()).unwrap();
    assert!(store
        .record_relay_state(meter, RelayState::Connected, t0(), |_, _| None)
        .unwrap()
        .is_empty());
    let confirmed = store
        .record_relay_state(meter, RelayState::Disconnected, t0(), |_, _| None)
        .unwrap();
    assert_eq!(confirmed.len(), 1);
    assert_eq!(store.relay_state(meter).unwrap(), RelayState::Disconnected);
    let history = store.relay_commands_of(meter).unwrap();
    assert_eq!(history[0].progress.state, CommandState::Acknowledged);
    assert_eq!(history[0].progress.attempts, 1);

    store
        .queue_relay_command("c2", meter, RelayAction::Disconnect, "again", t0(), None)
        .unwrap();
    store
        .queue_relay_command("c3", meter, RelayAction::Connect, "recharged", t0(), None)
        .unwrap();
    let states: Vec<_> = store
        .relay_commands_of(meter)
        .unwrap()
        .iter()
        .map(|c| c.progress.state)
        .collect();
    assert_eq!(
        states,
        vec![
            CommandState::Acknowledged,
            CommandState::Failed,
            CommandState::Queued
        ]
    );
    assert!(matches!(
        store.queue_relay_command("c4", 999, RelayAction::Connect, "x", t0(), None),
        Err(StoreError::UnknownMeter(_))
    ));
}

#[test]
fn a_withdrawn_command_is_closed_with_its_reason_and_queued_for_upload() {
    let (_dir, mut store) = open_temp();
    let meter = with_account(&mut store, "A1");
    store
        .queue_relay_command(
            "c1",
            meter,
            RelayAction::Disconnect,
            "balance 0.00 INR",
            t0(),
            None,
        )
        .unwrap();
    store.mark_relay_sent("c1", t0()).unwrap();
    let at = t0() + Duration::minutes(1);
    assert!(store
        .withdraw_relay_command("c1", at, "outside every disconnect window")
        .unwrap());
    assert!(!store.withdraw_relay_command("c1", at, "again").unwrap());
    assert!(!store.withdraw_relay_command("nope", at, "unknown").unwrap());
    assert!(store.open_relay_commands().unwrap().is_empty());
    let command = store.latest_relay_command(meter).unwrap().unwrap();
    assert_eq!(command.progress.state, CommandState::Withdrawn);
    let closed_at: Option<i64> = store
        .conn
        .query_row(
            "SELECT closed_at FROM relay_commands WHERE id = 'c1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(closed_at, Some(ts(at)));
    let last = store.priority_after(0, 100).unwrap().pop().unwrap();
    assert!(
        matches!(&last.event, UplinkEvent::RelayCommand { id, state, detail, .. }
            if id == "c1" && state == "withdrawn" && detail == "outside every disconnect window"),
        "{last:?}"
    );
}

#[test]
fn each_alert_is_enqueued_once() {
    let (_dir, mut store) = open_temp();
    with_account(&mut store, "A1");
    let alert = Alert {
        id: "low-30:r-1".into(),
        account: "A1".into(),
        kind: "low_balance".into(),
        created_at: t0(),
        message: "Balance is 30 % of your last recharge".into(),
        vars: Default::default(),
    };
    assert!(store.enqueue_alert(&alert).unwrap());
    assert!(!store.enqueue_alert(&alert).unwrap());
    assert_eq!(store.unsent_alerts().unwrap().len(), 1);
}

#[test]
fn the_modem_sends_only_notices_central_was_never_offered_and_marks_them_sent() {
    use gramgrid_core::message::{Kind, Language};
    let (_dir, mut store) = open_temp();
    store
        .upsert_account(&Account {
            id: "A1".into(),
            consumer_name: "Asha".into(),
            category: Category::Domestic,
            phone: Some("+919800000001".into()),
            created_at: t0(),
        })
        .unwrap();
    let notice = |id: &str, kind: Kind| Alert {
        id: id.into(),
        account: "A1".into(),
        kind: kind.as_str().into(),
        created_at: t0(),
        message: "text".into(),
        vars: [("balance".to_string(), "-3.00".to_string())]
            .into_iter()
            .collect(),
    };
    // Offered to central before the backhaul went down: central may have it; not the modem's.
    store
        .enqueue_alert(&notice("n-offered", Kind::Disconnected))
        .unwrap();
    let offered = store.priority_after(0, 100).unwrap();
    store.note_offered(offered.last().unwrap().seq).unwrap();
    // Raised during the outage: the urgent one is the modem's, the daily balance waits for central.
    store
        .enqueue_alert(&notice("n-urgent", Kind::DisconnectNotice))
        .unwrap();
    store
        .enqueue_alert(&notice("n-daily", Kind::DailyBalance))
        .unwrap();
    let messages = store.modem_messages(10).unwrap();
    assert_eq!(
        messages
            .iter()
            .map(|m| m.alert_id.as_str())
            .collect::<Vec<_>>(),
        ["n-urgent"]
    );
    let message = &messages[0];
    assert_eq!(message.language, Language::English);
    assert_eq!(message.vars["balance"], "-3.00");

    // While the modem sends, sync offers nothing from that notice on.
    store.hold_outbox_from(message.outbox_seq);
    assert!(store
        .priority_after(0, 100)
        .unwrap()
        .iter()
        .all(|r| (r.seq as i64) < message.outbox_seq));
    store
        .record_sent_by_modem(message, "Balance exhausted", t0() + Duration::minutes(1))
        .unwrap();
    store.release_outbox_hold();

    let records = store.priority_after(0, 100).unwrap();
    let sent = records
        .iter()
        .find_map(|r| match &r.event {
            UplinkEvent::Notice {
                id,
                sent_by_gateway_at,
                message,
                ..
            } if id == "n-urgent" => Some((*sent_by_gateway_at, message.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        sent,
        (
            Some(t0() + Duration::minutes(1)),
            "Balance exhausted".to_string()
        )
    );
    assert!(store.modem_messages(10).unwrap().is_empty(), "sent once");
    let unsent: Vec<String> = store
        .unsent_alerts()
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(unsent, ["n-daily", "n-offered"]);
}

#[test]
fn overrides_are_audited_and_expire() {
    let (_dir, mut store) = open_temp();
    with_account(&mut store, "A1");
    let record = OverrideRecord {
        id: "o1".into(),
        account: "A1".into(),
        action: RelayAction::Connect,
        until: t0() + Duration::hours(4),
        technician: "tech-7".into(),
        reason: "medical equipment in the house".into(),
        created_at: t0(),
    };
    store.record_override(&record).unwrap();
    assert_eq!(
        store
            .active_override("A1", t0() + Duration::hours(1))
            .unwrap()
            .map(|o| o.action),
        Some(RelayAction::Connect)
    );
    assert_eq!(
        store
            .active_override("A1", t0() + Duration::hours(4))
            .unwrap(),
        None
    );
}

#[test]
fn backup_copies_a_consistent_database() {
    let (dir, mut store) = open_temp();
    with_account(&mut store, "A1");
    store.record_event(&recharge("r-1", "A1", 12_345)).unwrap();
    let copy = dir.path().join("backup.db");
    store.backup_to(&copy).unwrap();
    let restored = Store::open(&copy).unwrap();
    assert_eq!(restored.position("A1", &[]).unwrap().balance_paise, 12_345);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// On real SQLite: readings ingested in shuffled, duplicated batches give the same balance as in
    /// order, and the derived tables stay consistent with the readings.
    #[test]
    fn store_charging_is_independent_of_arrival_order(
        increments in proptest::collection::vec(0i64..3_000, 1..120),
        keys in proptest::collection::vec(any::<u32>(), 1..120),
        batch_size in 1usize..40,
    ) {
        let book = TariffBook::builtin();
        let readings: Vec<MeterReading> = increments
            .iter()
            .scan(1_000i64, |register, inc| { *register += inc; Some(*register) })
            .enumerate()
            // 90-minute steps so the readings cross into December
            .map(|(i, register)| MeterReading { export_wh: 0, meter: 0, at: t0() + Duration::minutes(90 * (i as i64 + 1)) + Duration::days(20), register_wh: register })
            .collect();
        let mut arrivals: Vec<(u32, MeterReading)> = readings.iter().copied().zip(keys.iter().copied().cycle()).map(|(r, k)| (k, r)).collect();
        arrivals.extend(readings.iter().take(keys.len() / 3).map(|r| (keys[0] ^ 0x5555, *r)));
        arrivals.sort_by_key(|(k, r)| (*k, r.at));

        let (_d1, mut ordered) = open_temp();
        let (_d2, mut shuffled) = open_temp();
        let m1 = with_account(&mut ordered, "A1");
        let m2 = with_account(&mut shuffled, "A1");
        ordered.ingest(&book, &readings.iter().map(|r| MeterReading { meter: m1, ..*r }).collect::<Vec<_>>()).unwrap();
        let arrivals: Vec<MeterReading> = arrivals.into_iter().map(|(_, r)| MeterReading { meter: m2, ..r }).collect();
        for batch in arrivals.chunks(batch_size) {
            shuffled.ingest(&book, batch).unwrap();
        }
        prop_assert_eq!(shuffled.position("A1", &[]).unwrap(), ordered.position("A1", &[]).unwrap());
        prop_assert_eq!(shuffled.verify(&book).unwrap(), Vec::<String>::new());
        prop_assert_eq!(ordered.verify(&book).unwrap(), Vec::<String>::new());
    }
}

mod sync {
    use super::*;
    use gramgrid_proto::voucher::{PublishedKey, SigningSecret, Voucher};
    use gramgrid_proto::wire::{DownlinkEvent, DownlinkRecord, UplinkEvent};

    fn downlink(seq: u64, event: DownlinkEvent) -> DownlinkRecord {
        DownlinkRecord { seq, event }
    }

    fn account_record(seq: u64, id: &str) -> DownlinkRecord {
        downlink(
            seq,
            DownlinkEvent::Account {
                id: id.into(),
                consumer_name: "From central".into(),
                category: Category::Domestic.into(),
                phone: None,
                created_at: t0(),
            },
        )
    }

    #[test]
    fn a_meter_rekeyed_by_central_starts_a_new_session_with_fresh_counters() {
        let (_dir, mut store) = open_temp();
        let meter_record = |seq: u64, nwk: &str| {
            downlink(
                seq,
                DownlinkEvent::Meter {
                    serial: "M-K".into(),
                    account: "A1".into(),
                    installed_at: t0(),
                    initial_register_wh: None,
                    keys: Some(gramgrid_proto::wire::MeterKeys {
                        dev_addr: 0x2601_0001,
                        nwk_skey: nwk.into(),
                        app_skey: "DD50AD492DBB6BC997DB98528D2530D3".into(),
                    }),
                },
            )
        };
        let old = "ABEC61DA682F4CBF30867EFB4D34B34D";
        store
            .apply_downlink(&[account_record(1, "A1"), meter_record(2, old)], t0())
            .unwrap();
        let meter = store.link_sessions().unwrap()[0].meter;
        store.commit_fcnt(meter, Fcnt::Up, 500).unwrap();
        store.commit_fcnt(meter, Fcnt::Down, 40).unwrap();
        // The same keys again (a resent record) keep the session and its counters.
        store.apply_downlink(&[meter_record(3, old)], t0()).unwrap();
        let session = &store.link_sessions().unwrap()[0];
        assert_eq!((session.fcnt_up, session.fcnt_down), (Some(500), Some(40)));
        // New keys: a new session, whose counters start again (its first frames are not replays).
        store
            .apply_downlink(&[meter_record(4, "00112233445566778899AABBCCDDEEFF")], t0())
            .unwrap();
        let session = &store.link_sessions().unwrap()[0];
        assert_eq!((session.fcnt_up, session.fcnt_down), (None, None));
        assert_eq!(
            session.keys.nwk_skey.to_storage_hex().to_uppercase(),
            "00112233445566778899AABBCCDDEEFF"
        );
        // At rest the keys are sealed under secrets.key beside the database: a backup of the
        // database alone holds no key, and opens none without that file.
        let stored: String = store
            .conn
            .query_row("SELECT nwk_skey FROM meter_keys", [], |r| r.get(0))
            .unwrap();
        assert!(stored.starts_with("sealed1:") && !stored.to_uppercase().contains("00112233"));
        let elsewhere = tempfile::tempdir().unwrap();
        store
            .backup_to(&elsewhere.path().join("gateway.db"))
            .unwrap();
        let copy = Store::open(&elsewhere.path().join("gateway.db")).unwrap();
        assert!(matches!(copy.link_sessions(), Err(StoreError::Secrets(_))));
    }

    #[test]
    fn central_s_dlms_record_keys_a_meter_keeps_its_counters_when_resent_and_resets_them_when_new()
    {
        use gramgrid_proto::wire::WireDlms;
        let (_dir, mut store) = open_temp();
        let dlms_record = |seq: u64, serial: &str, ek: &str| {
            downlink(
                seq,
                DownlinkEvent::MeterDlms {
                    serial: serial.into(),
                    dlms: Some(WireDlms {
                        system_title: "4D4D4D0000BC614E".into(),
                        ek: ek.into(),
                        ak: "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF".into(),
                    }),
                },
            )
        };
        let ek = "000102030405060708090A0B0C0D0E0F";
        let meter = DownlinkEvent::Meter {
            serial: "M-D".into(),
            account: "A1".into(),
            installed_at: t0(),
            initial_register_wh: None,
            keys: Some(gramgrid_proto::wire::MeterKeys {
                dev_addr: 0x2601_0001,
                nwk_skey: "ABEC61DA682F4CBF30867EFB4D34B34D".into(),
                app_skey: "DD50AD492DBB6BC997DB98528D2530D3".into(),
            }),
        };
        store
            .apply_downlink(
                &[
                    account_record(1, "A1"),
                    downlink(2, meter),
                    dlms_record(3, "M-D", ek),
                ],
                t0(),
            )
            .unwrap();
        let session = &store.link_sessions().unwrap()[0];
        let association = session.dlms.clone().expect("a DLMS meter");
        assert_eq!(association.security.system_title, *b"MMM\0\0\xBC\x61\x4E");
        assert_eq!(
            association.security.keys.encryption,
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        );
        assert_eq!(association.security.keys.authentication[0], 0xD0);
        let meter = session.meter;
        store
            .commit_dlms_ic(meter, DlmsIc::GatewayNext, 70)
            .unwrap();
        store.commit_dlms_ic(meter, DlmsIc::MeterLast, 12).unwrap();
        // The same security again (a resent record) keeps the association's counters.
        store
            .apply_downlink(&[dlms_record(4, "M-D", ek)], t0())
            .unwrap();
        let association = store.link_sessions().unwrap()[0].dlms.clone().unwrap();
        assert_eq!(
            (association.gateway_next_ic, association.meter_last_ic),
            (Some(70), Some(12))
        );
        // New keys: a new association, whose counters start again.
        store
            .apply_downlink(
                &[dlms_record(5, "M-D", "101112131415161718191A1B1C1D1E1F")],
                t0(),
            )
            .unwrap();
        let association = store.link_sessions().unwrap()[0].dlms.clone().unwrap();
        assert_eq!(association.security.keys.encryption[0], 0x10);
        assert_eq!(
            (association.gateway_next_ic, association.meter_last_ic),
            (None, None)
        );
        // Keys that do not parse, or a meter this gateway does not know, are logged and skipped:
        // the record is applied (sync goes on) and the meter keeps what it had.
        let applied = store
            .apply_downlink(
                &[dlms_record(6, "M-D", "0011"), dlms_record(7, "M-NONE", ek)],
                t0(),
            )
            .unwrap();
        assert_eq!(applied, 2);
        let association = store.link_sessions().unwrap()[0].dlms.clone().unwrap();
        assert_eq!(association.security.keys.encryption[0], 0x10);
        // Switched back to payload v1.
        store
            .apply_downlink(
                &[downlink(
                    8,
                    DownlinkEvent::MeterDlms {
                        serial: "M-D".into(),
                        dlms: None,
                    },
                )],
                t0(),
            )
            .unwrap();
        assert_eq!(store.link_sessions().unwrap()[0].dlms, None);
    }

    #[test]
    fn local_events_queue_for_upload_and_acks_prune_them() {
        let (_dir, mut store) = open_temp();
        let meter = with_account(&mut store, "A1");
        store.record_event(&recharge("local-1", "A1", 100)).unwrap();
        store
            .queue_relay_command("c1", meter, RelayAction::Disconnect, "test", t0(), None)
            .unwrap();
        store
            .record_relay_state(meter, RelayState::Disconnected, t0(), |_, _| None)
            .unwrap();
        let pending = store.priority_after(0, 100).unwrap();
        let kinds: Vec<&str> = pending
            .iter()
            .map(|r| match &r.event {
                UplinkEvent::Ledger(_) => "ledger",
                UplinkEvent::RelayCommand { .. } => "command",
                UplinkEvent::RelayState { .. } => "state",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, vec!["ledger", "command", "command", "state"]);
        assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
        store.record_acks(pending[1].seq, 0).unwrap();
        assert_eq!(store.priority_after(0, 100).unwrap().len(), 2);
        store.record_acks(1, 0).unwrap(); // an older ack never moves the cursor back
        assert_eq!(store.sync_cursors().unwrap().priority_acked, pending[1].seq);
    }

    #[test]
    fn reading_batches_cover_every_reading_once_including_late_ones() {
        let (_dir, mut store) = open_temp();
        let book = TariffBook::builtin();
        let meter = with_account(&mut store, "A1");
        store
            .ingest(&book, &[reading(meter, 1, 1_100), reading(meter, 3, 1_300)])
            .unwrap();
        let first = store.readings_after(0, 2).unwrap().unwrap();
        store.record_acks(0, first.through_seq).unwrap();
        store.ingest(&book, &[reading(meter, 2, 1_200)]).unwrap(); // late
        let cursors = store.sync_cursors().unwrap();
        let second = store
            .readings_after(cursors.readings_acked, 100)
            .unwrap()
            .unwrap();
        let mut all: Vec<(i64, i64)> = first
            .blocks
            .iter()
            .chain(&second.blocks)
            .flat_map(|b| b.readings().collect::<Vec<_>>())
            .collect();
        all.sort();
        let expected: Vec<(i64, i64)> = [(0, 1_000), (1, 1_100), (2, 1_200), (3, 1_300)]
            .iter()
            .map(|(i, r)| ((t0() + Duration::minutes(15 * i)).timestamp(), *r))
            .collect();
        assert_eq!(all, expected);
        store.record_acks(0, second.through_seq).unwrap();
        assert_eq!(store.readings_after(second.through_seq, 100).unwrap(), None);
        assert_eq!(store.sync_backlog().unwrap(), (0, 0));
    }

    #[test]
    fn downlink_records_apply_once_and_do_not_echo() {
        let (_dir, mut store) = open_temp();
        let records = vec![
            account_record(1, "A9"),
            downlink(
                2,
                DownlinkEvent::Meter {
                    serial: "M9".into(),
                    account: "A9".into(),
                    installed_at: t0(),
                    initial_register_wh: Some(50),
                    keys: None,
                },
            ),
            downlink(
                3,
                DownlinkEvent::Ledger((&recharge("central-r1", "A9", 70_000)).into()),
            ),
        ];
        assert_eq!(store.apply_downlink(&records, t0()).unwrap(), 3);
        assert_eq!(store.apply_downlink(&records, t0()).unwrap(), 0);
        assert_eq!(store.sync_cursors().unwrap().downlink_applied, 3);
        assert_eq!(store.position("A9", &[]).unwrap().balance_paise, 70_000);
        assert!(store.active_meter("A9").unwrap().is_some());
        assert!(
            store.priority_after(0, 10).unwrap().is_empty(),
            "central's own events are not sent back"
        );
        let meter = store.meter_id("M9").unwrap().unwrap();
        let report = store
            .ingest(&TariffBook::builtin(), &[reading(meter, 4, 1_050)])
            .unwrap();
        assert_eq!(report.charged_paise, 370);
    }

    #[test]
    fn an_account_moved_away_is_served_no_more_and_its_open_commands_are_withdrawn() {
        let (_dir, mut store) = open_temp();
        let meter = with_account(&mut store, "A1");
        with_account(&mut store, "A2");
        store
            .queue_relay_command(
                "c1",
                meter,
                RelayAction::Disconnect,
                "balance exhausted",
                t0(),
                None,
            )
            .unwrap();
        let moved = DownlinkEvent::AccountRemoved {
            id: "A1".into(),
            to_gateway: Some("gw-b".into()),
        };
        store.apply_downlink(&[downlink(1, moved)], t0()).unwrap();
        let served: Vec<String> = store
            .accounts()
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(served, ["A2"]);
        assert_eq!(
            store.account_in_service(meter),
            None,
            "its meter left service"
        );
        let history = store.relay_commands_of(meter).unwrap();
        assert_eq!(history[0].progress.state, CommandState::Withdrawn);
        let report = store
            .ingest(&TariffBook::builtin(), &[reading(meter, 8, 5_000)])
            .unwrap();
        assert_eq!(
            report.stored, 0,
            "readings of its meter are not charged here any more"
        );
        // Moved back later: served again.
        store
            .apply_downlink(&[account_record(2, "A1")], t0())
            .unwrap();
        assert_eq!(store.accounts().unwrap().len(), 2);
    }

    #[test]
    fn a_voucher_is_redeemed_once_and_refused_after_a_revocation() {
        let (_dir, mut store) = open_temp();
        with_account(&mut store, "A1");
        let secret = SigningSecret::generate(4);
        let key = PublishedKey {
            key_id: 4,
            public_key: secret.public_key_hex(),
            issue_from: t0() - Duration::days(1),
            issue_until: None,
            revoked: false,
        };
        let issue = |id: u64| {
            secret
                .issue(&Voucher {
                    key_id: 4,
                    voucher_id: id,
                    account: "A1".into(),
                    amount_paise: 25_000,
                    issued_at: t0(),
                    expires_at: t0() + Duration::days(30),
                })
                .unwrap()
        };
        let now = t0() + Duration::hours(3);
        assert!(
            matches!(
                store.redeem_voucher(&issue(1), now),
                Err(StoreError::VoucherRefused(_))
            ),
            "no keys yet"
        );
        store
            .apply_downlink(&[downlink(1, DownlinkEvent::VoucherKeys(vec![key]))], now)
            .unwrap();
        let code = issue(1);
        store.redeem_voucher(&code, now).unwrap();
        assert!(matches!(
            store.redeem_voucher(&code, now),
            Err(StoreError::VoucherSpent { .. })
        ));
        assert_eq!(store.position("A1", &[]).unwrap().balance_paise, 25_000);
        let revoked = Voucher {
            key_id: 4,
            voucher_id: 2,
            account: "A1".into(),
            amount_paise: 25_000,
            issued_at: t0(),
            expires_at: t0() + Duration::days(30),
        };
        store
            .apply_downlink(
                &[downlink(
                    2,
                    DownlinkEvent::VoucherRevoked {
                        redemption_id: revoked.redemption_id(),
                    },
                )],
                now,
            )
            .unwrap();
        let err = store
            .redeem_voucher(&issue(2), now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("elsewhere"), "{err}");
        assert_eq!(store.position("A1", &[]).unwrap().balance_paise, 25_000);
        let uploads: Vec<_> = store
            .priority_after(0, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect();
        // Only the signed code goes up as money (central makes the recharge from it after
        // verifying it), with the household's message that the voucher counted.
        assert!(
            matches!(
                uploads.as_slice(),
                [
                    UplinkEvent::VoucherCode { code: sent, .. },
                    UplinkEvent::Notice { kind, vars, .. },
                ] if *sent == code && kind == "voucher_redeemed"
                    && vars == &[("amount".to_string(), "250.00".to_string())]
            ),
            "{uploads:?}"
        );
    }
}

mod technicians {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};
    use argon2::Argon2;
    use gramgrid_proto::wire::{DownlinkEvent, DownlinkRecord};

    fn hash(password: &str) -> String {
        let salt = SaltString::encode_b64(b"a salt of 16 byt").unwrap();
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn technician_record(
        seq: u64,
        role: &str,
        password_hash: &str,
        active: bool,
    ) -> DownlinkRecord {
        DownlinkRecord {
            seq,
            event: DownlinkEvent::Technician {
                name: "asha.v".into(),
                full_name: "Asha Verma".into(),
                role: role.into(),
                password_hash: password_hash.into(),
                active,
                updated_at: t0(),
            },
        }
    }

    fn action(id: &str, detail: &str) -> TechnicianAction {
        TechnicianAction {
            id: id.into(),
            technician: "asha.v".into(),
            action: "override".into(),
            subject: Some("A1".into()),
            detail: detail.into(),
            reason: Some("medical equipment in the house".into()),
            at: t0() + Duration::milliseconds(1_500),
        }
    }

    #[test]
    fn a_technician_from_central_is_stored_and_a_later_record_replaces_it() {
        let (_dir, mut store) = open_temp();
        assert_eq!(store.technician("asha.v").unwrap(), None);
        let first = hash("kothi-7-transformer");
        store
            .apply_downlink(&[technician_record(1, "technician", &first, true)], t0())
            .unwrap();
        let account = store.technician("asha.v").unwrap().unwrap();
        assert_eq!(
            (
                account.full_name.as_str(),
                account.role.as_str(),
                account.active
            ),
            ("Asha Verma", "technician", true)
        );
        assert!(account.password_matches("kothi-7-transformer"));
        assert!(!account.password_matches("kothi-7-transformeR"));
        assert!(
            !format!("{account:?}").contains(&first),
            "the hash is not printed"
        );

        store
            .apply_downlink(&[technician_record(2, "supervisor", &first, false)], t0())
            .unwrap();
        let account = store.technician("asha.v").unwrap().unwrap();
        assert_eq!(
            (account.role.as_str(), account.active),
            ("supervisor", false)
        );
        assert_eq!(store.technician_count().unwrap(), 1);

        // Seeded here (the demo, a test): replaced the same way.
        store
            .put_technician(&TechnicianAccount {
                name: "ravi.k".into(),
                full_name: "Ravi Kumar".into(),
                role: "viewer".into(),
                password_hash: "not a hash".into(),
                active: true,
            })
            .unwrap();
        assert_eq!(store.technician_count().unwrap(), 2);
        let ravi = store.technician("ravi.k").unwrap().unwrap();
        assert!(
            !ravi.password_matches("not a hash"),
            "a bad hash matches nothing"
        );
    }

    #[test]
    fn an_action_is_recorded_once_and_queued_for_central_until_acknowledged() {
        let (_dir, mut store) = open_temp();
        store
            .record_technician_action(&action("act-1", "reconnect until 10:00"))
            .unwrap();
        // The same action again (a retried request) is not queued twice; other content is refused.
        store
            .record_technician_action(&action("act-1", "reconnect until 10:00"))
            .unwrap();
        assert!(matches!(
            store.record_technician_action(&action("act-1", "disconnect")),
            Err(StoreError::EventIdConflict(id)) if id == "act-1"
        ));
        let pending = store.priority_after(0, 10).unwrap();
        assert_eq!(pending.len(), 1);
        match &pending[0].event {
            UplinkEvent::TechnicianAction {
                id,
                technician,
                action,
                subject,
                detail,
                reason,
                at,
            } => {
                assert_eq!(
                    (
                        id.as_str(),
                        technician.as_str(),
                        action.as_str(),
                        detail.as_str()
                    ),
                    ("act-1", "asha.v", "override", "reconnect until 10:00")
                );
                assert_eq!(subject.as_deref(), Some("A1"));
                assert!(reason.is_some());
                assert_eq!(*at, t0() + Duration::seconds(1), "to the second");
            }
            other => panic!("{other:?}"),
        }
        let recorded = store.technician_actions(10).unwrap();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].at, t0() + Duration::seconds(1));

        // Uploaded and acknowledged: it leaves the outbox, its row stays.
        store.record_acks(pending[0].seq, 0).unwrap();
        assert!(store.priority_after(0, 10).unwrap().is_empty());
        store
            .record_technician_action(&TechnicianAction {
                at: t0() + Duration::minutes(5),
                ..action("act-2", "sync now")
            })
            .unwrap();
        let ids: Vec<String> = store
            .technician_actions(10)
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["act-2", "act-1"], "newest first");
        assert_eq!(store.technician_actions(1).unwrap().len(), 1);
    }

    #[test]
    fn failed_logins_and_lock_outs_are_kept_per_name() {
        let (_dir, mut store) = open_temp();
        assert_eq!(store.login_failures("asha.v").unwrap(), (0, None));
        store.set_login_failures("asha.v", 3, None).unwrap();
        let until = t0() + Duration::minutes(15);
        store.set_login_failures("asha.v", 5, Some(until)).unwrap();
        assert_eq!(store.login_failures("asha.v").unwrap(), (5, Some(until)));
        assert_eq!(store.login_failures("ravi.k").unwrap(), (0, None));
        store.set_login_failures("asha.v", 0, None).unwrap();
        assert_eq!(store.login_failures("asha.v").unwrap(), (0, None));
    }
}
