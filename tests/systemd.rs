//! The systemd units (`systemd/`: `systemd-analyze verify` clean, exposure at most 2.0) and the
//! daemons under systemd's `Type=notify` and `WatchdogSec=`, as seen from systemd's side of
//! `NOTIFY_SOCKET` (a datagram socket this test binds): `READY=1` once serving, `WATCHDOG=1` every
//! half period while alive, `STOPPING=1` on SIGTERM, then a clean exit within the unit's stop
//! timeout. (Whether systemd then restarts a unit whose pings stop is systemd's part; the rule that
//! stops the pings is unit-tested in `gramgrid_gateway::watchdog`.)
use crate::common::village::free_port;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The messages the daemon sent on the socket within `limit`, until `until` has been seen.
fn messages_until(socket: &UnixDatagram, until: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(10)),
            ))
            .unwrap();
        let Ok(n) = socket.recv(&mut buffer) else {
            break;
        };
        let message = String::from_utf8_lossy(&buffer[..n]).trim().to_string();
        let done = message.contains(until);
        seen.push(message);
        if done {
            break;
        }
    }
    seen
}

fn spawn_notified(args: &[&str], socket: &Path, dir: &Path) -> Child {
    // As systemd does: WATCHDOG_PID names the daemon itself (the shell execs it, keeping its pid).
    Command::new("sh")
        .args([
            "-c",
            "WATCHDOG_PID=$$ exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_gramgrid"),
        ])
        .args(args)
        .current_dir(dir)
        .env("NOTIFY_SOCKET", socket)
        .env("WATCHDOG_USEC", "1000000")
        // Standard error goes to the journal, which stamps each line itself.
        .env("JOURNAL_STREAM", "8:4242")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap()
}

/// SIGTERM, then the exit status within the units' 30 s stop timeout.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn watched(args: &[&str], dir: &Path) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut daemon = spawn_notified(args, &path, dir);
    let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let start = messages_until(&socket, "READY=1", Duration::from_secs(30));
    assert!(start.iter().any(|m| m == "READY=1"), "{start:?}\n{}", log());
    // Pings every half second while alive: a few within two seconds.
    let pings = messages_until(&socket, "never", Duration::from_secs(2));
    let count = pings.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(count >= 2, "{pings:?}\n{}", log());
    let status = terminate(&mut daemon);
    // One time per line in `journalctl`: the journal's, not a second one from the daemon.
    let first = log().lines().next().map(str::to_owned).unwrap_or_default();
    assert!(
        ["INFO", "WARN"]
            .iter()
            .any(|level| first.trim_start().starts_with(level)),
        "{first}"
    );
    let end = messages_until(&socket, "STOPPING=1", Duration::from_secs(5));
    assert!(end.iter().any(|m| m == "STOPPING=1"), "{end:?}");
    assert!(status.success(), "{status:?}\n{}", log());
}

#[test]
fn the_gateway_tells_systemd_it_is_ready_alive_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("gateway.toml"),
        format!("[gateway]\nid = \"village-w\"\ndata_dir = \"data\"\npolicy_schedule = \"* * * * * *\"\n[technician]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    watched(&["gateway", "--config", "gateway.toml"], dir.path());
}

#[test]
fn central_tells_systemd_it_is_ready_alive_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gramgrid"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "central",
        "init",
        "--dir",
        "pki",
        "--url",
        &format!("https://127.0.0.1:{port}"),
    ]);
    std::fs::write(
        dir.path().join("central.toml"),
        format!("listen = \"127.0.0.1:{port}\"\ndatabase_url = \"sqlite:central.db\"\npki_dir = \"pki\"\nnotifications_log = \"notifications.log\"\nsecrets_key_file = \"secrets.key\"\napi_tokens = [\"notify-test-token-0123456789\"]\n"),
    )
    .unwrap();
    watched(
        &["central", "serve", "--config", "central.toml"],
        dir.path(),
    );
}

/// `systemd-analyze` (the `systemd` package, which `tests/run` installs), or None outside CI.
fn systemd_analyze() -> Option<&'static str> {
    const PATH: &str = "/usr/bin/systemd-analyze";
    if Path::new(PATH).exists() {
        return Some(PATH);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{PATH} is missing in CI: tests/run installs the `systemd` package"
    );
    eprintln!(
        "\n!!!!! SKIPPED: systemd-analyze is not installed, the units were NOT checked !!!!!\n"
    );
    None
}

#[test]
fn the_units_verify_clean_and_the_gateways_exposure_is_at_most_2() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut exposures = Vec::new();
    for unit in ["gramgrid-gateway.service", "gramgrid-central.service"] {
        // `verify` checks that ExecStart's binary exists: point it at the one just built.
        let text = std::fs::read_to_string(units.join(unit))
            .unwrap()
            .replace("/usr/bin/gramgrid", env!("CARGO_BIN_EXE_gramgrid"));
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        let verify = Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&verify.stderr).to_string();
        assert!(
            verify.status.success() && said.trim().is_empty(),
            "{unit}: {said}"
        );
        let security = Command::new(analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&security.stdout).to_string();
        let level: f64 = report
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: no exposure level in {report}"));
        exposures.push((unit, level));
    }
    println!("systemd-analyze security --offline=yes: {exposures:?}");
    assert!(exposures[0].1 <= 2.0, "{exposures:?}");
    assert!(exposures[1].1 <= 2.0, "{exposures:?}");
}
