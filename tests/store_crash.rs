//! A process killed (SIGKILL) in the middle of a transaction loses no recharge it had acknowledged.
//!
//! The test re-runs this test binary as a child that writes to a real SQLite file: it records a
//! recharge, prints "committed <id>" once `record_event` returned, then opens a large readings
//! transaction. The parent kills it at a random moment, mostly inside that transaction, three times
//! over the same database, then checks every acknowledged recharge is there exactly once.
use chrono::{Duration, TimeZone, Utc};
use gramgrid_core::ledger::{EventKind, LedgerEvent};
use gramgrid_core::tariff::{Category, TariffBook};
use gramgrid_gateway::store::{Account, MeterInstall, MeterReading, Store};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const DB_ENV: &str = "GRAMGRID_CRASH_TEST_DB";

#[test]
#[ignore = "run by kill_mid_transaction_loses_no_acknowledged_recharge as its child process"]
fn crash_child_writer() {
    let Ok(path) = std::env::var(DB_ENV) else {
        return;
    };
    let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let mut store = Store::open(std::path::Path::new(&path)).unwrap();
    let book = TariffBook::builtin();
    store
        .upsert_account(&Account {
            id: "A1".into(),
            consumer_name: "Crash Test".into(),
            category: Category::Domestic,
            phone: None,
            created_at: start,
        })
        .unwrap();
    let serial = format!("M-{}", std::process::id());
    let meter = store
        .install_meter(&MeterInstall {
            serial: serial.clone(),
            account: "A1".into(),
            installed_at: start,
            initial_register_wh: Some(0),
        })
        .unwrap();
    let mut out = std::io::stdout();
    for i in 0.. {
        let id = format!("{serial}-r{i}");
        store
            .record_event(&LedgerEvent {
                id: id.clone(),
                account: "A1".into(),
                at: start + Duration::minutes(i),
                kind: EventKind::Recharge,
                amount_paise: 100 + i,
                expires_at: None,
            })
            .unwrap();
        writeln!(out, "committed {id} {}", 100 + i).unwrap();
        writeln!(out, "ingesting").unwrap();
        out.flush().unwrap();
        let batch: Vec<MeterReading> = (0..4_000)
            .map(|k| MeterReading {
                meter,
                at: start + Duration::minutes(15 * (i * 4_000 + k + 1)),
                register_wh: (i * 4_000 + k + 1) * 10,
                export_wh: 0,
            })
            .collect();
        store.ingest(&book, &batch).unwrap();
    }
}

#[test]
fn kill_mid_transaction_loses_no_acknowledged_recharge() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.db");
    let mut acknowledged: Vec<(String, i64)> = Vec::new();
    // The child's test name as libtest knows it inside the suite binary: "store_crash::crash_child_writer".
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let child_test = format!("{module}::crash_child_writer");
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                child_test.as_str(),
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DB_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut ingests = 0;
        for line in lines {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("committed ") {
                let (id, amount) = rest.split_once(' ').unwrap();
                acknowledged.push((id.to_string(), amount.parse().unwrap()));
            } else if line == "ingesting" {
                ingests += 1;
                if ingests == 4 + round as usize {
                    // Land inside the readings transaction, at a different point each round.
                    std::thread::sleep(std::time::Duration::from_millis(3 + 7 * round));
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    assert!(
        acknowledged.len() >= 12,
        "the child acknowledged {} recharges",
        acknowledged.len()
    );

    let store = Store::open(&db).unwrap();
    let events = store.events("A1").unwrap();
    for (id, amount) in &acknowledged {
        let found: Vec<_> = events.iter().filter(|e| &e.id == id).collect();
        assert_eq!(
            found.len(),
            1,
            "acknowledged recharge {id} must be stored exactly once"
        );
        assert_eq!(found[0].amount_paise, *amount);
    }
    let recharged: i64 = events
        .iter()
        .filter(|e| e.kind == EventKind::Recharge)
        .map(|e| e.amount_paise)
        .sum();
    let position = store.position("A1", &[]).unwrap();
    assert_eq!(
        position.balance_paise,
        recharged - store.energy_charges("A1", None).unwrap()
    );
    assert_eq!(
        store.verify(&TariffBook::builtin()).unwrap(),
        Vec::<String>::new()
    );
}
