//! The production path as a field engineer meets it, every part its own process: `central serve`,
//! `gramgrid gateway` (emulated radio on `gramgrid air-bus`) and a fleet from `gramgrid sim`. The
//! gateway is installed first; the meters are added at central while it runs, and are then read,
//! cut at zero balance, recharged and reconnected with no restart anywhere. Every frame on the air
//! is checked against the meters' keys with the `lorawan` crate.
use crate::common::{api_call, Proc};
use gramgrid_proto::manifest::MeterManifest;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "field-test-token-0123456789";

/// `gramgrid ARGS` with logs at info to `log`, stdout piped (for its first line).
fn spawn(args: &[&str], log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    Proc::new(
        Command::new(env!("CARGO_BIN_EXE_gramgrid"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gramgrid"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gramgrid {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `ready` (polled every half second), failing with `what` and the logs after `limit`.
fn wait_for(what: &str, limit: Duration, logs: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            let mut text = String::new();
            for name in ["central.log", "gateway.log", "sim.log"] {
                let log = std::fs::read_to_string(logs.join(name)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                text += &format!(
                    "\n--- {name} (last lines, newest first)\n{}",
                    tail.join("\n")
                );
            }
            panic!("timed out waiting for {what}{text}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn gateway_db(path: &Path) -> Option<Connection> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()
}

fn count(path: &Path, sql: &str) -> i64 {
    gateway_db(path)
        .and_then(|db| db.query_row(sql, [], |r| r.get(0)).ok())
        .unwrap_or(0)
}

struct Central {
    url: String,
    ca: PathBuf,
}

impl Central {
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        api_call(&self.url, &self.ca, TOKEN, method, path, body)
    }

    fn post(&self, path: &str, body: &str) {
        let (status, answer) = self.call("POST", path, Some(body));
        assert!(
            status == 200 || status == 201,
            "POST {path}: {status} {answer}"
        );
    }
}

#[test]
fn meters_added_at_central_while_the_gateway_runs_are_read_cut_and_reconnected_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |name: &str| d.join(name).to_str().unwrap().to_string();

    // The office: a CA, the gateway's enrolment bundle, central serving over TLS.
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    run(&["central", "init", "--dir", &path("pki"), "--url", &url]);
    run(&[
        "central",
        "add-gateway",
        "--dir",
        &path("pki"),
        "--id",
        "village-a",
    ]);
    std::fs::write(
        d.join("central.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"sqlite:{}\"\npki_dir = {:?}\nnotifications_log = {:?}\nsecrets_key_file = {:?}\nnotify_every = \"1s\"\napi_tokens = [\"{TOKEN}\"]\n",
            path("central.db"),
            path("pki"),
            path("notifications.log"),
            path("secrets.key"),
        ),
    )
    .unwrap();
    let _central = spawn(
        &["central", "serve", "--config", &path("central.toml")],
        &d.join("central.log"),
    );
    let central = Central {
        url: url.clone(),
        ca: d.join("pki/ca.pem"),
    };
    wait_for("central to listen", Duration::from_secs(30), d, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // The office allows cuts at any minute, one second after the balance runs out (the defaults,
    // 10:00-14:00 IST on working days from the next day, would make the test depend on the date).
    let (status, answer) = central.call(
        "PUT",
        "/api/v1/policy",
        Some(r#"{"version": 2, "policy": {"disconnect_windows": ["* * * * * *"], "first_disconnect": "1s", "holidays": []}}"#),
    );
    assert_eq!(status, 201, "{answer}");

    // The village: the shared air (with a capture), a fleet of two meters, the gateway daemon.
    let mut hub = spawn(
        &[
            "air-bus",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "5",
            "--capture",
            &path("air.jsonl"),
        ],
        &d.join("air-bus.log"),
    );
    let bus = hub
        .first_line()
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let mut sim = spawn(
        &[
            "sim",
            "--meters",
            "2",
            "--bus",
            &bus,
            "--radius-m",
            "150",
            "--seed",
            "5",
            "--history-hours",
            "2",
            "--manifest-out",
            &path("meters.toml"),
        ],
        &d.join("sim.log"),
    );
    assert!(sim.first_line().starts_with("sim running 2 meters"));
    let gateway_db_path = d.join("gateway/gateway.db");
    std::fs::write(
        d.join("gateway.toml"),
        format!(
            "[gateway]\nid = \"village-a\"\ndata_dir = {:?}\npolicy_schedule = \"*/2 * * * * *\"\n\
             [sync]\nbundle = {:?}\nschedule = \"*/2 * * * * *\"\n\
             [radio]\nkind = \"emulator\"\nbus = \"{bus}\"\n",
            path("gateway"),
            path("pki/gateways/village-a/bundle.toml"),
        ),
    )
    .unwrap();
    let _gateway = spawn(
        &["gateway", "--config", &path("gateway.toml")],
        &d.join("gateway.log"),
    );
    wait_for(
        "the gateway's first sync (voucher keys and policy from central)",
        Duration::from_secs(30),
        d,
        || {
            count(
                &gateway_db_path,
                "SELECT COUNT(*) FROM published_config WHERE kind = 'policy'",
            ) == 1
        },
    );

    // Weeks later, the meters are installed and entered at central, keys as the manifest has them.
    let manifest =
        MeterManifest::parse(&std::fs::read_to_string(d.join("meters.toml")).unwrap()).unwrap();
    let installed = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    for (i, meter) in manifest.meters.iter().enumerate() {
        let account = format!("ACC-{i}");
        central.post(
            "/api/v1/accounts",
            &format!(
                r#"{{"id": "{account}", "consumer_name": "Household {i}", "category": "domestic", "gateway": "village-a"}}"#
            ),
        );
        central.post(
            "/api/v1/meters",
            &format!(
                r#"{{"serial": "{}", "account": "{account}", "installed_at": "{installed}", "keys": {{"dev_addr": "{}", "nwk_skey": "{}", "app_skey": "{}"}}}}"#,
                meter.serial,
                meter.keys.dev_addr,
                meter.keys.nwk_skey.to_storage_hex(),
                meter.keys.app_skey.to_storage_hex(),
            ),
        );
    }

    // The running gateway takes them up: keys arrive by sync, the link polls them at once.
    wait_for(
        "readings from both meters",
        Duration::from_secs(90),
        d,
        || {
            count(
                &gateway_db_path,
                "SELECT COUNT(DISTINCT meter) FROM readings",
            ) == 2
        },
    );
    // No credit yet: both are cut, inside the (any-minute) window, and the meters confirm.
    let acknowledged = |action: &str| {
        count(
            &gateway_db_path,
            &format!("SELECT COUNT(DISTINCT meter) FROM relay_commands WHERE action = '{action}' AND state = 'acknowledged'"),
        )
    };
    wait_for(
        "both disconnects confirmed by the meters",
        Duration::from_secs(90),
        d,
        || acknowledged("disconnect") == 2,
    );
    for i in 0..2 {
        central.post(
            "/api/v1/recharges",
            &format!(r#"{{"idempotency_key": "counter-{i}", "account": "ACC-{i}", "amount_paise": 50000}}"#),
        );
    }
    wait_for(
        "both reconnects confirmed by the meters",
        Duration::from_secs(90),
        d,
        || acknowledged("connect") == 2,
    );
    wait_for(
        "central to see both relays connected",
        Duration::from_secs(30),
        d,
        || {
            let (_, meters) = central.call("GET", "/api/v1/meters", None);
            meters.matches(r#""relay_state":"connected""#).count() == 2
        },
    );
    let (status, balance) = central.call("GET", "/api/v1/accounts/ACC-0/balance", None);
    assert_eq!(status, 200, "{balance}");

    // Every frame on the air between the gateway and these meters carries a good MIC.
    drop(_gateway);
    drop(hub);
    let checked = check_capture(&d.join("air.jsonl"), &manifest);
    assert!(
        checked.uplinks >= 4 && checked.downlinks >= 4,
        "too few frames on the air: {checked:?}"
    );
}

#[derive(Debug, Default)]
struct Checked {
    uplinks: usize,
    downlinks: usize,
}

/// Verifies the MIC of every data frame in an air capture with the `lorawan` crate and the keys of
/// the manifest; a frame for an unknown DevAddr or with a bad MIC fails the test.
fn check_capture(capture: &Path, manifest: &MeterManifest) -> Checked {
    let mut checked = Checked::default();
    let text = std::fs::read_to_string(capture).unwrap();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let phy = hex::decode(record["phy_payload"].as_str().unwrap()).unwrap();
        let dev_addr = u32::from_le_bytes([phy[1], phy[2], phy[3], phy[4]]);
        let fcnt = u32::from(u16::from_le_bytes([phy[6], phy[7]]));
        let meter = manifest
            .meters
            .iter()
            .find(|m| m.keys.dev_addr.0 == dev_addr)
            .unwrap_or_else(|| panic!("frame for unknown DevAddr {dev_addr:08X}"));
        let nwk: [u8; 16] = hex::decode(meter.keys.nwk_skey.to_storage_hex())
            .unwrap()
            .try_into()
            .unwrap();
        let parsed = lorawan::parser::parse(phy.clone()).unwrap();
        let lorawan::parser::PhyPayload::Data(lorawan::parser::DataPayload::Encrypted(frame)) =
            parsed
        else {
            panic!("not a data frame: {line}");
        };
        assert!(
            frame.validate_mic(&lorawan::keys::AES128(nwk), fcnt),
            "bad MIC on the air: {line}"
        );
        // MType: 010 unconfirmed data up, 011 unconfirmed data down (and 100/101 confirmed).
        match phy[0] >> 5 {
            0b010 | 0b100 => checked.uplinks += 1,
            _ => checked.downlinks += 1,
        }
    }
    checked
}
