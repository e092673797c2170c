//! A village as separate processes, the way an installer meets it: `central serve` over TLS,
//! `gramgrid air-bus` (the shared air), a meter fleet from `gramgrid sim`, and the `gramgrid gateway`
//! daemon on the emulated radio, synced to central; and the helpers to drive and watch them.
use super::{api_call, Proc};
use gramgrid_proto::manifest::MeterManifest;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The API token of the village's central (scope admin).
pub const TOKEN: &str = "field-test-token-0123456789";

/// The gateway's id.
pub const GATEWAY_ID: &str = "village-a";

/// `gramgrid sim` for the test villages: `meters` meters within 150 m (seed 5, two hours of load
/// profile) on `bus`, their manifest written to `manifest_out`.
pub fn sim_args<'a>(meters: &'a str, bus: &'a str, manifest_out: &'a str) -> Vec<&'a str> {
    vec![
        "sim",
        "--meters",
        meters,
        "--bus",
        bus,
        "--radius-m",
        "150",
        "--seed",
        "5",
        "--history-hours",
        "2",
        "--manifest-out",
        manifest_out,
    ]
}

/// `gramgrid ARGS` with logs at info to `log`, stdout piped (for its first line).
pub fn spawn(args: &[&str], log: &Path) -> Proc {
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

/// Runs `gramgrid ARGS` to completion; it must succeed. Its stdout.
pub fn run(args: &[&str]) -> String {
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

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `ready` (polled every half second), failing with `what` and the logs in `logs` after
/// `limit`.
pub fn wait_for(what: &str, limit: Duration, logs: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}{}", log_tails(logs));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The last lines of each process's log, newest first (for a failure message).
pub fn log_tails(logs: &Path) -> String {
    let mut text = String::new();
    for name in ["central.log", "gateway.log", "sim.log"] {
        let log = std::fs::read_to_string(logs.join(name)).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        text += &format!(
            "\n--- {name} (last lines, newest first)\n{}",
            tail.join("\n")
        );
    }
    text
}

/// One number from a read-only look at an SQLite database (0 if it cannot be read yet).
pub fn count(path: &Path, sql: &str) -> i64 {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()
        .and_then(|db| db.query_row(sql, [], |r| r.get(0)).ok())
        .unwrap_or(0)
}

/// Central's API, as the office calls it.
pub struct Central {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA its certificate chains to.
    pub ca: PathBuf,
}

impl Central {
    /// One API call with the village's token: (status, body).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        api_call(&self.url, &self.ca, TOKEN, method, path, body)
    }

    /// A POST that must succeed (200 or 201).
    pub fn post(&self, path: &str, body: &str) -> String {
        let (status, answer) = self.call("POST", path, Some(body));
        assert!(
            status == 200 || status == 201,
            "POST {path}: {status} {answer}"
        );
        answer
    }
}

/// The office in `d`, as separate processes: a CA with gateway [`GATEWAY_ID`]'s enrolment bundle,
/// and `central serve` over TLS (SQLite, notifications logged to `notifications.log`, every second,
/// the API token [`TOKEN`]) with `config_extra(its URL)` appended to its `central.toml`; returns
/// once it listens.
pub fn start_central(d: &Path, config_extra: impl FnOnce(&str) -> String) -> (Proc, Central) {
    start_central_on(d, None, config_extra)
}

/// As [`start_central`], with central on the PostgreSQL database `postgres` (a URL) instead of
/// SQLite.
pub fn start_central_on(
    d: &Path,
    postgres: Option<&str>,
    config_extra: impl FnOnce(&str) -> String,
) -> (Proc, Central) {
    let path = |name: &str| d.join(name).to_str().unwrap().to_string();
    let database_url =
        postgres.map_or_else(|| format!("sqlite:{}", path("central.db")), str::to_owned);
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let config_extra = config_extra(&url);
    run(&["central", "init", "--dir", &path("pki"), "--url", &url]);
    run(&[
        "central",
        "add-gateway",
        "--dir",
        &path("pki"),
        "--id",
        GATEWAY_ID,
    ]);
    std::fs::write(
        d.join("central.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = {database_url:?}\npki_dir = {:?}\nnotifications_log = {:?}\nsecrets_key_file = {:?}\nnotify_every = \"1s\"\napi_tokens = [\"{TOKEN}\"]\n{config_extra}",
            path("pki"),
            path("notifications.log"),
            path("secrets.key"),
        ),
    )
    .unwrap();
    let process = spawn(
        &["central", "serve", "--config", &path("central.toml")],
        &d.join("central.log"),
    );
    wait_for("central to listen", Duration::from_secs(30), d, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let central = Central {
        url,
        ca: d.join("pki/ca.pem"),
    };
    (process, central)
}

/// The running village. Dropping it stops every process (the gateway first, then the air, the
/// fleet and central), then removes its directory.
pub struct Village {
    /// The gateway daemon (taken to stop it early).
    pub gateway: Option<Proc>,
    /// The air bus (taken to stop it early).
    pub hub: Option<Proc>,
    _sim: Proc,
    _central: Proc,
    /// Central's API.
    pub central: Central,
    /// The gateway's database.
    pub gateway_db: PathBuf,
    /// The fleet's manifest (keys), as `gramgrid sim --manifest-out` wrote it.
    pub manifest: MeterManifest,
    /// Its working directory (databases, configs, logs); removed last.
    pub dir: tempfile::TempDir,
}

/// Sync and policy passes every two seconds: the tests' village reacts fast.
pub const EVERY_TWO_SECONDS: (&str, &str) = ("*/2 * * * * *", "*/2 * * * * *");

impl Village {
    /// Starts central (cuts allowed at any minute, one second after the balance runs out), the
    /// air with a capture in `air.jsonl`, `meters` simulated meters and the gateway daemon (with
    /// `gateway_extra` appended to its config), and waits for the gateway's first sync.
    pub fn start(meters: usize, gateway_extra: &str) -> Village {
        Village::start_with(meters, gateway_extra, &[])
    }

    /// As [`Village::start`], with `sim_extra` appended to `gramgrid sim`'s arguments.
    pub fn start_with(meters: usize, gateway_extra: &str, sim_extra: &[&str]) -> Village {
        Village::start_on(None, meters, gateway_extra, sim_extra)
    }

    /// As [`Village::start_with`], with central on the PostgreSQL database `postgres` (a URL)
    /// instead of SQLite.
    pub fn start_on(
        postgres: Option<&str>,
        meters: usize,
        gateway_extra: &str,
        sim_extra: &[&str],
    ) -> Village {
        Village::start_scheduled(
            postgres,
            meters,
            EVERY_TWO_SECONDS,
            gateway_extra,
            sim_extra,
        )
    }

    /// As [`Village::start_on`], with the gateway's sync and policy passes on `schedules` (cron,
    /// sync first) instead of every two seconds.
    pub fn start_scheduled(
        postgres: Option<&str>,
        meters: usize,
        (sync_schedule, policy_schedule): (&str, &str),
        gateway_extra: &str,
        sim_extra: &[&str],
    ) -> Village {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let path = |name: &str| d.join(name).to_str().unwrap().to_string();

        let (central_proc, central) = start_central_on(&d, postgres, |_| String::new());
        // The defaults (10:00-14:00 IST on working days from the next day) would make a test
        // depend on the date.
        let (status, answer) = central.call(
            "PUT",
            "/api/v1/policy",
            Some(r#"{"version": 2, "policy": {"disconnect_windows": ["* * * * * *"], "first_disconnect": "1s", "holidays": []}}"#),
        );
        assert_eq!(status, 201, "{answer}");

        // The village: the shared air (with a capture), the fleet, the gateway daemon.
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
        let (meters_arg, manifest_out) = (meters.to_string(), path("meters.toml"));
        let mut args = sim_args(&meters_arg, &bus, &manifest_out);
        args.extend_from_slice(sim_extra);
        let mut sim = spawn(&args, &d.join("sim.log"));
        assert!(sim
            .first_line()
            .starts_with(&format!("sim running {meters} meters")));
        std::fs::write(
            d.join("gateway.toml"),
            format!(
                "[gateway]\nid = \"{GATEWAY_ID}\"\ndata_dir = {:?}\npolicy_schedule = \"{policy_schedule}\"\n\
                 [sync]\nbundle = {:?}\nschedule = \"{sync_schedule}\"\n\
                 [radio]\nkind = \"emulator\"\nbus = \"{bus}\"\n{gateway_extra}",
                path("gateway"),
                path(&format!("pki/gateways/{GATEWAY_ID}/bundle.toml")),
            ),
        )
        .unwrap();
        let gateway = spawn(
            &["gateway", "--config", &path("gateway.toml")],
            &d.join("gateway.log"),
        );
        let gateway_db = d.join("gateway/gateway.db");
        wait_for(
            "the gateway's first sync (voucher keys and policy from central)",
            Duration::from_secs(30),
            &d,
            || {
                count(
                    &gateway_db,
                    "SELECT COUNT(*) FROM published_config WHERE kind = 'policy'",
                ) == 1
            },
        );
        let manifest =
            MeterManifest::parse(&std::fs::read_to_string(d.join("meters.toml")).unwrap()).unwrap();
        Village {
            gateway: Some(gateway),
            hub: Some(hub),
            _sim: sim,
            _central: central_proc,
            central,
            gateway_db,
            manifest,
            dir,
        }
    }

    /// The working directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Enters every meter of the fleet at central, on account `ACC-i` (installed a day ago, keys
    /// as the manifest has them), and waits until the gateway has readings from all of them.
    pub fn install_meters(&self) {
        self.install_first_meters(self.manifest.meters.len());
    }

    /// Puts the fleet's meters from the `first`th on into the gateway's stock of spares
    /// (`central import-meters --stock`, as the office does), and waits until the gateway has them.
    pub fn stock_meters_from(&self, first: usize) {
        let manifest = std::fs::read_to_string(self.path().join("meters.toml")).unwrap();
        let mut entries = manifest.split("\n[[meter]]");
        let header = entries.next().unwrap();
        let spares: Vec<&str> = entries.skip(first).collect();
        let text = format!("{header}\n[[meter]]{}", spares.join("\n[[meter]]"));
        let path = self.path().join("spares.toml");
        std::fs::write(&path, text).unwrap();
        let config = self.path().join("central.toml");
        let out = run(&[
            "central",
            "import-meters",
            "--stock",
            "--config",
            config.to_str().unwrap(),
            "--manifest",
            path.to_str().unwrap(),
            "--gateway",
            GATEWAY_ID,
        ]);
        assert!(
            out.contains(&format!("{} spare meters added", spares.len())),
            "{out}"
        );
        wait_for(
            "the spares to reach the gateway",
            Duration::from_secs(30),
            self.path(),
            || count(&self.gateway_db, "SELECT COUNT(*) FROM stock_meters") == spares.len() as i64,
        );
    }

    /// Enters the fleet's first `n` meters at central as [`Village::install_meters`] does, and waits
    /// for readings from each.
    pub fn install_first_meters(&self, n: usize) {
        let installed = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
        for (i, meter) in self.manifest.meters.iter().enumerate().take(n) {
            let account = format!("ACC-{i}");
            self.central.post(
                "/api/v1/accounts",
                &format!(
                    r#"{{"id": "{account}", "consumer_name": "Household {i}", "category": "domestic", "gateway": "{GATEWAY_ID}"}}"#
                ),
            );
            self.central.post(
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
        let all = n as i64;
        wait_for(
            "readings from every meter",
            Duration::from_secs(90),
            self.path(),
            || {
                count(
                    &self.gateway_db,
                    "SELECT COUNT(DISTINCT meter) FROM readings",
                ) == all
            },
        );
    }

    /// How many meters have confirmed a relay command of `action` (`connect`, `disconnect`).
    pub fn acknowledged(&self, action: &str) -> i64 {
        count(
            &self.gateway_db,
            &format!("SELECT COUNT(DISTINCT meter) FROM relay_commands WHERE action = '{action}' AND state = 'acknowledged'"),
        )
    }
}
