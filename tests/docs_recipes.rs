//! The commands the docs show, run as written: each `<!-- recipe: ... -->` block of docs/*.md and
//! README.md runs line by line in an empty directory, with `gramgrid` on the PATH (a line ending in
//! `&` runs in the background until the test ends), and must do what the text after it promises.
use crate::common::Proc;
use rusqlite::{Connection, OpenFlags};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The shell lines of the fenced block that follows `<!-- recipe: NAME -->` in `doc`.
fn recipe(doc: &str, name: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = format!("<!-- recipe: {name} -->");
    let start = text
        .find(&marker)
        .unwrap_or_else(|| panic!("{doc} has no `{marker}`"));
    let block = &text[start..];
    let body = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(body, _)| body)
        .unwrap_or_else(|| panic!("no ```sh block after `{marker}` in {doc}"));
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Runs a recipe's lines in `dir`; returns the background processes and what the foreground
/// lines printed.
fn run_recipe(lines: &[String], dir: &Path) -> (Vec<Proc>, Vec<String>) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_gramgrid"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let shell = |line: &str| {
        let mut command = Command::new("bash");
        command
            .args(["-c", line])
            .current_dir(dir)
            .env("PATH", &path)
            .env("RUST_LOG", "warn");
        command
    };
    let mut background: Vec<Proc> = Vec::new();
    let mut printed = Vec::new();
    for line in lines {
        if let Some(line) = line.strip_suffix('&') {
            let log =
                std::fs::File::create(dir.join(format!("bg-{}.log", background.len()))).unwrap();
            let child = shell(line.trim())
                .process_group(0)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            // Each runs in its own process group: bash and what it started stop together.
            background.push(Proc { child, group: true });
            // Give a server a moment to bind before the next line talks to it.
            std::thread::sleep(Duration::from_millis(700));
            continue;
        }
        // A line that talks to a server started just before may need a few tries.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = shell(line).output().unwrap();
            if out.status.success() {
                printed.push(String::from_utf8_lossy(&out.stdout).into_owned());
                break;
            }
            if Instant::now() > deadline {
                let logs: String = (0..background.len())
                    .map(|i| {
                        let log = std::fs::read_to_string(dir.join(format!("bg-{i}.log")));
                        format!("\n--- background {i}:\n{}", log.unwrap_or_default())
                    })
                    .collect();
                panic!(
                    "`{line}` failed: {}{}{logs}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    (background, printed)
}

fn count(db: &Path, sql: &str) -> i64 {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap_or(0)
}

#[test]
fn the_separate_process_village_of_docs_link_md_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let lines = recipe("docs/link.md", "village in separate processes");
    let (_background, printed) = run_recipe(&lines, dir.path());
    let import = printed.iter().find(|p| p.contains("meters added")).unwrap();
    assert!(import.starts_with("5 meters added"), "{import}");
    let receipt: serde_json::Value = serde_json::from_str(&printed[printed.len() - 2]).unwrap();
    assert_eq!(receipt["account"], "ACC-SIM-00001");
    assert_eq!(receipt["amount_paise"], 50000);
    let balance: serde_json::Value = serde_json::from_str(printed.last().unwrap()).unwrap();
    assert_eq!(balance["account"], "ACC-SIM-00001");
    assert!(
        balance["balance_paise"].as_i64().unwrap() <= 50000,
        "{balance}"
    );

    // "Within a minute the gateway has the five accounts, their keys and their first readings."
    let db = dir.path().join("gateway/gateway.db");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let accounts = count(&db, "SELECT COUNT(*) FROM accounts");
        let keyed = count(&db, "SELECT COUNT(*) FROM meter_keys");
        let read = count(&db, "SELECT COUNT(DISTINCT meter) FROM readings");
        if accounts == 5 && keyed == 5 && read == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after two minutes: {accounts} accounts, {keyed} meters with keys, {read} meters read; gateway log:\n{}",
            std::fs::read_to_string(dir.path().join("bg-3.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let status = Command::new(env!("CARGO_BIN_EXE_gramgrid"))
        .args(["gateway", "status", "--config", "gateway.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(status.status.success());
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("ACC-SIM-00005"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
}

#[test]
fn the_first_admin_of_docs_console_md_is_made_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let lines = recipe("docs/console.md", "first admin");
    let (_background, printed) = run_recipe(&lines, dir.path());
    let [_, created, listed] = &printed[..] else {
        panic!("three commands, three outputs: {printed:?}");
    };
    assert!(
        created.contains("staff member meera.sahu created (Meera Sahu, admin, active)"),
        "{created}"
    );
    assert!(
        listed.contains("meera.sahu") && listed.contains("admin"),
        "{listed}"
    );
    let hash = Connection::open_with_flags(
        dir.path().join("gramgrid-central/central.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
    .query_row("SELECT password_hash FROM staff", [], |r| {
        r.get::<_, String>(0)
    })
    .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains("meera-keeps"));
}

#[test]
fn the_guardrails_of_docs_guardrails_md_show_on_the_demo_village() {
    let dir = tempfile::tempdir().unwrap();
    let lines = recipe("docs/guardrails.md", "guardrails on the demo village");
    let (_background, printed) = run_recipe(&lines, dir.path());
    let [summary, holds, explain, status] = &printed[..] else {
        panic!("four commands, four outputs: {printed:?}");
    };
    for line in ["bad policy", "protected", "arrears"] {
        assert!(summary.contains(&format!("  {line}")), "{summary}");
    }
    assert!(summary.contains("0 households cut under it"), "{summary}");
    // The mass cut of Tuesday noon, and Wednesday's cut held after the correction.
    assert!(
        holds.contains("85 accounts  OPEN")
            && holds
                .contains("85 disconnections today would exceed the limit of 10 for 100 accounts"),
        "{holds}"
    );
    assert!(holds.contains("a new policy took effect"), "{holds}");
    assert!(explain.contains("CG-000009"), "{explain}");
    assert!(
        explain.contains("a protected account (never cut automatically)")
            && explain.contains("replay: the policy decides the same today"),
        "{explain}"
    );
    assert!(status.contains("[protected: health centre]"), "{status}");
    assert!(
        status.contains("release: gramgrid gateway release gw-village-1:hold:"),
        "{status}"
    );
}

#[test]
fn the_technician_app_of_docs_technician_md_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let lines = recipe("docs/technician.md", "technician app");
    let (_background, printed) = run_recipe(&lines, dir.path());
    let cert = printed.last().unwrap();
    let issued = dir.path().join("pki/gateways/village-t/technician.pem");
    let fingerprint = gramgrid_net::pki::fingerprint(&issued).unwrap();
    assert!(
        cert.contains(&fingerprint) && cert.contains("the central CA"),
        "{cert}"
    );

    // "Within seconds the login has reached the gateway; open https://127.0.0.1:9444/ and log in."
    let db = dir.path().join("gateway/gateway.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&db, "SELECT COUNT(*) FROM technicians") != 1 {
        assert!(
            Instant::now() < deadline,
            "the login never reached the gateway; gateway log:\n{}",
            std::fs::read_to_string(dir.path().join("bg-1.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let ca = dir.path().join("pki/ca.pem");
    let base = "https://127.0.0.1:9444";
    let password = std::fs::read_to_string(dir.path().join("asha.password")).unwrap();
    let session = crate::common::technician_login(base, &ca, "asha", password.trim());
    let (status, page) = crate::common::https_request(
        base,
        &ca,
        "GET",
        "/",
        &[("Cookie", &format!("gg_session={session}"))],
        "",
    );
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Asha Verma") && page.contains("Last sync"),
        "{page}"
    );
    // "the spare is under "Install a meter"."
    assert!(
        printed[printed.len() - 2].contains("1 spare meters added to the stock"),
        "{printed:?}"
    );
    while count(&db, "SELECT COUNT(*) FROM stock_meters") != 1 {
        assert!(
            Instant::now() < deadline,
            "the spare never reached the gateway"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, page) = crate::common::https_request(
        base,
        &ca,
        "GET",
        "/install",
        &[("Cookie", &format!("gg_session={session}"))],
        "",
    );
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("SPARE-0001"), "{page}");
}

#[test]
fn the_technician_commands_of_the_readme_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let lines = recipe("README.md", "technicians at central");
    let (_background, printed) = run_recipe(&lines, dir.path());
    assert!(
        printed[1].starts_with("technician asha.verma created (Asha Verma, technician, active)"),
        "{printed:?}"
    );
    assert!(
        printed[2].starts_with("technician ravi.kumar created (Ravi Kumar, viewer, active)"),
        "{printed:?}"
    );
    assert!(printed[4].contains("changed") && printed[4].contains("disabled"));
    let list: Vec<&str> = printed.last().unwrap().lines().collect();
    assert_eq!(list.len(), 2, "{list:?}");
    for (line, words) in list.iter().zip([
        ["asha.verma", "supervisor", "active", "Asha Verma"],
        ["ravi.kumar", "viewer", "disabled", "Ravi Kumar"],
    ]) {
        assert!(words.iter().all(|w| line.contains(w)), "{line}");
    }
    // Both stored as Argon2id hashes; neither password is anywhere in central's files.
    let db = dir.path().join("gramgrid-central/central.db");
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM technicians WHERE password_hash LIKE '$argon2id$%'"
        ),
        2
    );
    for file in ["central.db", "central.db-wal"] {
        let bytes =
            std::fs::read(dir.path().join("gramgrid-central").join(file)).unwrap_or_default();
        for password in ["kothi-7-transformer", "feeder-3-pump-house"] {
            assert!(
                !bytes
                    .windows(password.len())
                    .any(|w| w == password.as_bytes()),
                "{password} in {file}"
            );
        }
    }
}

#[test]
fn the_bills_of_docs_bills_md_print_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let lines = recipe("docs/bills.md", "bills on the demo village");
    let (_background, printed) = run_recipe(&lines, dir.path());
    let [_demo, _config, english, hindi, quote] = &printed[..] else {
        panic!("five commands, five outputs: {printed:?}");
    };
    assert!(
        english.starts_with("bill of CG-000001 (Household 1) for 2026-12: ")
            && english.contains("charges ₹")
            && english.contains("closing balance ₹"),
        "{english}"
    );
    assert!(hindi.contains("pdf:  bill-hi.pdf"), "{hindi}");
    for pdf in ["bill.pdf", "bill-hi.pdf"] {
        let bytes = std::fs::read(dir.path().join(pdf)).unwrap();
        assert!(bytes.starts_with(b"%PDF"), "{pdf}");
    }
    let page = std::fs::read_to_string(dir.path().join("bill.html")).unwrap();
    assert!(page.contains("Energy charge by slab") && page.contains("@media print"));
    assert!(quote.contains("slab"), "{quote}");
}

#[test]
fn the_consumer_page_of_docs_consumer_md_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let lines = recipe("docs/consumer.md", "consumer page");
    let (_background, printed) = run_recipe(&lines, dir.path());
    // "The `consumer-link` line prints the link"; the API answers one too.
    let url = printed[printed.len() - 2].trim();
    let base = "https://127.0.0.1:9446";
    assert!(url.starts_with(&format!("{base}/my/l/")), "{printed:?}");
    let answer: serde_json::Value = serde_json::from_str(printed.last().unwrap()).unwrap();
    assert!(answer["url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{base}/my/l/")));
    // "... it shows Sunita Devi's page in Hindi."
    let ca = dir.path().join("gramgrid-central/pki/ca.pem");
    let (status, page) =
        crate::common::https_request(base, &ca, "GET", &url[base.len()..], &[], "");
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Sunita Devi") && page.contains("बैलेंस"),
        "{page}"
    );
    // "Without `[sms]` the messages land in gramgrid-central/notifications.log within seconds."
    // (Two links made in the same second are one link, sent once.)
    let log = dir.path().join("gramgrid-central/notifications.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sent = std::fs::read_to_string(&log).unwrap_or_default();
        if sent.contains(url) {
            break;
        }
        assert!(Instant::now() < deadline, "the links were not sent: {sent}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
