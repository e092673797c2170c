//! kill -9 of the gateway and of the central server in the middle of a catch-up, then a restart of
//! both: the same end state as an undisturbed sync (every reading and money event once, balances
//! equal to the paisa).
use chrono::{Duration, DurationRound, Utc};
use gramgrid_central::accounts::{self, Account, Meter, RechargeRequest};
use gramgrid_central::{Central, CentralConfig, CentralError};
use gramgrid_core::tariff::Category;
use gramgrid_gateway::config::GatewayConfig;
use gramgrid_gateway::gateway::Gateway;
use gramgrid_gateway::store::{MeterReading, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const METERS: usize = 30;

/// Runs a future to completion (central's storage API is async).
fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Paths {
    central_config: PathBuf,
    gateway_config: PathBuf,
    central_db: PathBuf,
    gateway_db: PathBuf,
}

/// Starts `gramgrid ARGS --config CONFIG`, its log appended to a file beside the config.
fn spawn(args: &[&str], config: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_gramgrid"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn kill(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

fn central_config(dir: &Path, port: u16) -> CentralConfig {
    CentralConfig {
        listen: format!("127.0.0.1:{port}"),
        database_url: format!("sqlite:{}", dir.join("central.db").display()),
        pki_dir: dir.join("pki"),
        secrets_key_file: dir.join("secrets.key"),
        notifications_log: dir.join("notifications.log"),
        api_tokens: vec![gramgrid_central::ApiToken::new(
            "test",
            "kill-test-token-0123456789",
            gramgrid_central::Scope::Admin,
        )],
        ..CentralConfig::default()
    }
}

/// Central with accounts and recharges, a gateway config pointing at it, and a gateway database
/// holding days of readings that central has not seen (the state after an outage).
fn prepare(dir: &Path) -> Paths {
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let pki = gramgrid_net::pki::CentralPki::init(&dir.join("pki"), &url, &[]).unwrap();
    pki.add_gateway("gw-kill", 30).unwrap();
    let config = central_config(dir, port);
    let central_config = dir.join("central.toml");
    std::fs::write(&central_config, toml::to_string(&config).unwrap()).unwrap();
    let start = (Utc::now() - Duration::days(3))
        .duration_trunc(Duration::minutes(15))
        .unwrap();
    let central = Central::open(config).unwrap();
    block(central.db().transaction(move |tx| {
        for i in 0..METERS {
            let id = format!("ACC{i:03}");
            let account = Account {
                language: Default::default(),
                id: id.clone(),
                consumer_name: format!("Household {i}"),
                category: if i % 5 == 0 {
                    Category::Commercial
                } else {
                    Category::Domestic
                },
                phone: None,
                gateway: Some("gw-kill".into()),
                created_at: start,
            };
            accounts::put_account(tx, &account, false)?;
            let meter = Meter {
                serial: format!("MTR{i:03}"),
                account: id.clone(),
                installed_at: start,
                initial_register_wh: Some(0),
                keys: None,
                dlms: None,
                relay_state: "unknown".into(),
            };
            accounts::put_meter(tx, &meter, false)?;
            let recharge = RechargeRequest {
                idempotency_key: format!("pay-{i}"),
                account: id,
                amount_paise: 100_000 + i as i64,
                reference: None,
            };
            accounts::recharge(tx, &recharge, start)?;
        }
        Ok::<_, CentralError>(())
    }))
    .unwrap();
    drop(central);

    let mut gateway = GatewayConfig::default();
    gateway.gateway.id = "gw-kill".into();
    gateway.gateway.data_dir = dir.join("gateway");
    gateway.sync.bundle = Some(pki.bundle_path("gw-kill"));
    gateway.sync.schedule = "* * * * * *".into();
    gateway.sync.retry_initial = std::time::Duration::from_millis(200);
    gateway.sync.retry_max = std::time::Duration::from_secs(1);
    gateway.sync.max_readings = 400;
    let gateway_config = dir.join("gateway.toml");
    std::fs::write(&gateway_config, toml::to_string(&gateway).unwrap()).unwrap();

    // First contact: the gateway learns its accounts, then goes offline for days of readings.
    let paths = Paths {
        central_db: dir.join("central.db"),
        gateway_db: gateway.database_path(),
        central_config,
        gateway_config,
    };
    let mut central = spawn(&["central", "serve"], &paths.central_config);
    let mut daemon = spawn(&["gateway"], &paths.gateway_config);
    wait_until(
        dir,
        || {
            let store = Store::open(&paths.gateway_db).map_err(|e| e.to_string())?;
            let meter = store.meter_id(&format!("MTR{:03}", METERS - 1));
            Ok(meter.map_err(|e| e.to_string())?.is_some())
        },
        "first sync",
    );
    kill(&mut daemon);
    kill(&mut central);
    let mut gateway = Gateway::open(gateway).unwrap();
    for interval in 1..(3 * 96) {
        let at = start + Duration::minutes(15 * interval);
        let batch: Vec<MeterReading> = (0..METERS)
            .map(|i| MeterReading {
                meter: gateway
                    .store()
                    .meter_id(&format!("MTR{i:03}"))
                    .unwrap()
                    .unwrap(),
                at,
                register_wh: interval * (20 + i as i64 % 7) + (interval % 5) * i as i64,
                export_wh: 0,
            })
            .collect();
        gateway.ingest_readings(&batch).unwrap();
        if interval % 24 == 0 {
            gateway.tick(at).unwrap();
        }
    }
    paths
}

/// Waits for `done`, or fails showing its last error and the processes' logs in `dir`.
fn wait_until(dir: &Path, mut done: impl FnMut() -> Result<bool, String>, what: &str) {
    let started = Instant::now();
    let mut last_error = String::new();
    loop {
        match done() {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => last_error = error,
        }
        if started.elapsed() > std::time::Duration::from_secs(120) {
            let logs: String = ["central.log", "gateway.log"]
                .iter()
                .map(|f| {
                    format!(
                        "--- {f}\n{}",
                        std::fs::read_to_string(dir.join(f)).unwrap_or_default()
                    )
                })
                .collect();
            panic!("timed out waiting for {what} (last error: {last_error:?})\n{logs}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn backlog(paths: &Paths) -> Result<(u64, u64), String> {
    Store::open(&paths.gateway_db)
        .and_then(|mut s| s.sync_backlog())
        .map_err(|e| e.to_string())
}

/// Balances per account at the gateway and at central (processes stopped).
fn balances(paths: &Paths, dir: &Path) -> Vec<(String, i64, i64)> {
    let gateway = Store::open(&paths.gateway_db).unwrap();
    let central = Central::open(central_config(dir, 0)).unwrap();
    assert!(paths.central_db.exists());
    (0..METERS)
        .map(|i| {
            let id = format!("ACC{i:03}");
            let at_gateway = gateway.position(&id, &[]).unwrap().balance_paise;
            let account = id.clone();
            let at_central = block(
                central
                    .db()
                    .transaction(move |tx| accounts::balance_paise(tx, &account)),
            )
            .unwrap();
            (id, at_gateway, at_central)
        })
        .collect()
}

#[test]
fn kill_9_of_either_side_mid_sync_then_restart_reaches_the_same_end_state() {
    let dir = tempfile::tempdir().unwrap();
    let paths = prepare(dir.path());
    let readings_waiting = backlog(&paths).unwrap().1;
    assert!(
        readings_waiting > 8_000,
        "{readings_waiting} readings waiting"
    );

    let mut central = spawn(&["central", "serve"], &paths.central_config);
    let mut daemon = spawn(&["gateway"], &paths.gateway_config);
    // Kill the gateway once it has started catching up, and restart it.
    wait_until(
        dir.path(),
        || Ok(backlog(&paths)?.1 < readings_waiting),
        "the catch-up to start",
    );
    kill(&mut daemon);
    let after_gateway_kill = backlog(&paths).unwrap().1;
    daemon = spawn(&["gateway"], &paths.gateway_config);
    // Kill central in the middle of the rest, and restart it.
    wait_until(
        dir.path(),
        || Ok(backlog(&paths)?.1 < after_gateway_kill),
        "the catch-up to resume",
    );
    kill(&mut central);
    central = spawn(&["central", "serve"], &paths.central_config);
    wait_until(
        dir.path(),
        || Ok(backlog(&paths)? == (0, 0)),
        "the catch-up to finish",
    );
    // One more sync tick for the downlink, then stop both.
    std::thread::sleep(std::time::Duration::from_secs(2));
    kill(&mut daemon);
    kill(&mut central);

    let balances = balances(&paths, dir.path());
    let disagreements: Vec<_> = balances.iter().filter(|(_, g, c)| g != c).collect();
    assert!(
        disagreements.is_empty(),
        "gateway and central disagree: {disagreements:?}"
    );
    // Account i opened with 100,000 + i paise and its meter recorded days of use.
    let uncharged: Vec<_> = balances
        .iter()
        .enumerate()
        .filter(|(i, (_, g, _))| *g >= 100_000 + *i as i64)
        .collect();
    assert!(uncharged.is_empty(), "no charges applied: {uncharged:?}");
    // Every reading once at central: the key (meter, time) keeps duplicates out, so the counts
    // agree only if none was lost.
    let count = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))
            .unwrap()
    };
    let at_gateway = count(&paths.gateway_db);
    assert!(at_gateway >= (METERS * (3 * 96 - 1)) as i64, "{at_gateway}");
    assert_eq!(count(&paths.central_db), at_gateway);
    let gateway = Store::open(&paths.gateway_db).unwrap();
    let book = gramgrid_core::tariff::TariffBook::builtin();
    assert_eq!(gateway.verify(&book).unwrap(), Vec::<String>::new());
}
