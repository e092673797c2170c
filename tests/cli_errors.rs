//! What a careless operator meets: each mistake gets one clear message, the exit code the README
//! promises (1: the command failed, 2: the command line was wrong), and nothing is changed.
use crate::common::Proc;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn gramgrid(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gramgrid"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env_remove("GRAMGRID_API_TOKEN")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn wrong_option_values_exit_2_with_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let out = gramgrid(&["demo", "--radius-m", "0"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("more than 0"), "{}", stderr(&out));
    let out = gramgrid(&["demo", "--days", "1", "--outage", "30h"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = gramgrid(&["demo", "--feeder-cut", "10m"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("whole quarter-hours"),
        "{}",
        stderr(&out)
    );
    let out = gramgrid(
        &[
            "demo",
            "--days",
            "1",
            "--outage",
            "0s",
            "--feeder-cut-after",
            "23h",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the feeder cut (1h, starting 23h in) must end"),
        "{}",
        stderr(&out)
    );

    let pki = dir.path().join("pki");
    let pki = pki.to_str().unwrap();
    let out = gramgrid(
        &[
            "central",
            "init",
            "--dir",
            pki,
            "--url",
            "https://127.0.0.1:1",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for days in ["0", "100000000"] {
        let out = gramgrid(
            &[
                "central",
                "add-gateway",
                "--dir",
                pki,
                "--id",
                "v",
                "--days",
                days,
            ],
            dir.path(),
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "--days {days}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("1..=3650"), "{}", stderr(&out));
    }
    assert!(
        !dir.path().join("pki/gateways/v").exists(),
        "no certificate was written"
    );
}

#[test]
fn a_short_api_token_in_the_environment_is_refused_like_one_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gramgrid"))
        .args(["central", "serve"])
        .current_dir(dir.path())
        .env("GRAMGRID_API_TOKEN", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("GRAMGRID_API_TOKEN") && message.contains("at least 16"),
        "{message}"
    );
    // Said once, not repeated by every layer it went through.
    assert_eq!(message.matches("at least 16").count(), 1, "{message}");
}

#[test]
fn read_only_commands_refuse_a_data_directory_with_no_gateway_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[gateway]\ndata_dir = \"mistyped\"\n",
    )
    .unwrap();
    for command in ["status", "verify"] {
        let out = gramgrid(
            &["gateway", command, "--config", "gateway.toml"],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("no gateway database"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!dir.path().join("mistyped").exists());
}

#[test]
fn check_fails_on_a_bundle_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[sync]\nbundle = \"pki/gateways/village-a/bundle.toml\"\n",
    )
    .unwrap();
    let out = gramgrid(
        &["gateway", "--config", "gateway.toml", "--check"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("[sync] bundle"), "{}", stderr(&out));
}

#[test]
fn a_second_daemon_on_the_same_data_directory_refuses_to_start_and_leaves_the_first_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[gateway]\ndata_dir = \"data\"\n",
    )
    .unwrap();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_gramgrid"))
            .args(["gateway", "--config", "gateway.toml"])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let _first = Proc::new(start());
    let socket = dir.path().join("data/gateway.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the first daemon did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = start().wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("already running"),
        "{}",
        stderr(&second)
    );
    assert!(
        socket.exists(),
        "the first daemon's technician socket is still there"
    );
    // Meter keys and phone numbers: the database and the socket are the daemon user's alone.
    use std::os::unix::fs::PermissionsExt;
    for file in ["data/gateway.db", "data/gateway.sock"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let status = gramgrid(
        &["gateway", "status", "--config", "gateway.toml"],
        dir.path(),
    );
    assert!(status.status.success(), "{}", stderr(&status));
}

#[test]
fn an_error_and_its_cause_are_each_said_once() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where a config file should be: the OS error appears once, not once per layer.
    let out = gramgrid(&["gateway", "--check", "--config", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains("cannot read config file"), "{message}");
    assert_eq!(message.matches("os error").count(), 1, "{message}");
}

#[test]
fn a_gateway_id_that_is_not_the_certificates_is_refused_by_check_and_by_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| assert!(gramgrid(args, dir.path()).status.success(), "{args:?}");
    ok(&[
        "central",
        "init",
        "--dir",
        "pki",
        "--url",
        "https://127.0.0.1:1",
    ]);
    ok(&[
        "central",
        "add-gateway",
        "--dir",
        "pki",
        "--id",
        "village-a",
    ]);
    std::fs::write(
        dir.path().join("gateway.toml"),
        "[gateway]\nid = \"village-b\"\ndata_dir = \"data\"\n[sync]\nbundle = \"pki/gateways/village-a/bundle.toml\"\n",
    )
    .unwrap();
    let check = gramgrid(
        &["gateway", "--check", "--config", "gateway.toml"],
        dir.path(),
    );
    assert_eq!(check.status.code(), Some(1));
    assert!(
        stderr(&check).contains("is for gateway 'village-a'"),
        "{}",
        stderr(&check)
    );
    let daemon = gramgrid(&["gateway", "--config", "gateway.toml"], dir.path());
    assert_eq!(daemon.status.code(), Some(1));
    assert!(
        stderr(&daemon).contains("is for gateway 'village-a'"),
        "{}",
        stderr(&daemon)
    );
    assert!(
        !dir.path().join("data/gateway.db").exists(),
        "nothing was started"
    );
}

#[test]
fn a_technician_with_a_bad_name_or_a_short_password_is_refused_saying_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let set = |name: &str| {
        gramgrid(
            &[
                "central",
                "technician",
                "set",
                name,
                "--full-name",
                "Asha Verma",
                "--role",
                "technician",
                "--password-file",
                "asha.pass",
            ],
            dir.path(),
        )
    };
    std::fs::write(dir.path().join("asha.pass"), "short\n").unwrap();
    let out = set("Asha Verma");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lowercase letters"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.path().join("gramgrid-central").exists(),
        "nothing was opened or written"
    );
    let out = set("asha.verma");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the password is too short: give at least 8 characters"),
        "{}",
        stderr(&out)
    );
}

/// A quote on a tariff with time-of-day slots and a demand charge shows each slot's surcharge or
/// rebate and the demand charge; units for a slot the tariff does not have are refused with the
/// slots it does have.
#[test]
fn a_time_of_day_quote_shows_its_slots_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let book = gramgrid(&["tariff", "show"], dir.path());
    let book = String::from_utf8(book.stdout).unwrap();
    let with_tod = book.replacen(
        "duty_percent = 0.0\n",
        "duty_percent = 0.0\ndemand_paise_per_kw = 10000\ntod = [{ name = \"peak\", from = \"18:00\", to = \"22:00\", percent = 25.0 },\n       { name = \"solar\", from = \"09:00\", to = \"16:00\", percent = -20.0 }]\n",
        1,
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, with_tod).unwrap();
    let config = config.to_str().unwrap();
    let quote = |extra: &[&str]| {
        let mut args = vec![
            "tariff", "quote", "--config", config, "--month", "2026-11", "--units", "250",
        ];
        args.extend_from_slice(extra);
        gramgrid(&args, dir.path())
    };
    let out = quote(&[
        "--slot-units",
        "peak=60",
        "--slot-units",
        "solar=40",
        "--max-demand-kw",
        "2.5",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("time of day peak     18:00-22:00"), "{text}");
    assert!(text.contains("+25.00 % =      61.50"), "{text}");
    assert!(text.contains("-20.00 % =     -32.80"), "{text}");
    assert!(text.contains("time-of-day adjustment     28.70"), "{text}");
    assert!(
        text.contains("250.00   [2.500 kW maximum demand]"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("  total (INR)") && l.ends_with(" 1303.70")),
        "{text}"
    );
    let out = quote(&["--export-units", "150"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("exported      150.000 kWh, net      100.000 kWh billed"),
        "{text}"
    );
    let out = quote(&["--export-units=-5"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--export-units -5 is not a month's export"),
        "{}",
        stderr(&out)
    );
    let out = quote(&["--slot-units", "night=10"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has a time-of-day slot named 'night'; its slots: peak, solar"),
        "{}",
        stderr(&out)
    );
    let out = quote(&["--slot-units", "peak"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not SLOT=KWH"), "{}", stderr(&out));
}
