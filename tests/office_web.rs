//! The office console in a real browser: chromium through chromedriver against a real central
//! process (SQLite, and PostgreSQL when tests/run provides a server) synced with a real gateway
//! daemon and a simulated fleet on the emulated radio. Staff accounts are made with the command
//! line, as docs/console.md says. Screenshots go to `target/test-artefacts/office/`.
use crate::common::browser::{
    browser, chromedriver, click_link, log_in, log_out, screenshot, submit, text,
};
use crate::common::village::{count, run, wait_for, Village, GATEWAY_ID};
use fantoccini::Locator;
use std::path::Path;
use std::time::Duration;

const CASHIER: (&str, &str) = ("meera.sahu", "counter-meera-2026");
const ENGINEER: (&str, &str) = ("kiran.netam", "engineer-kiran-2026");

/// Makes staff member `name` with the command line, the password in a file.
fn staff(village: &Village, (name, password): (&str, &str), full_name: &str, role: &str) {
    let d = village.path();
    let file = d.join(format!("{name}.password"));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let printed = run(&[
        "central",
        "staff",
        "set",
        name,
        "--full-name",
        full_name,
        "--role",
        role,
        "--password-file",
        file.to_str().unwrap(),
        "--config",
        d.join("central.toml").to_str().unwrap(),
    ]);
    assert!(
        printed.contains(&format!("staff member {name} created")),
        "{printed}"
    );
}

/// The frames heard, from the gateway page's "Radio (since start)" line ("812 heard · ...").
fn radio_heard(page: &str) -> u64 {
    page.lines()
        .skip_while(|line| !line.contains("Radio (since start)"))
        .find_map(|line| line.split_once(" heard").map(|(n, _)| n.trim().to_string()))
        .and_then(|n| {
            n.rsplit(|c: char| !c.is_ascii_digit())
                .next()
                .map(str::to_string)
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Chromium trusts central's server certificate by its key, as an office PC trusts the CA.
fn central_spki(village: &Village) -> String {
    gramgrid_net::pki::spki_hash(&village.path().join("pki/server.pem")).unwrap()
}

fn office_works(postgres: Option<&str>, area: &str) {
    let Some(driver) = chromedriver() else {
        return;
    };
    let village = Village::start_on(postgres, 2, "", &[]);
    village.install_first_meters(2);
    staff(&village, CASHIER, "Meera Sahu", "cashier");
    staff(&village, ENGINEER, "Kiran Netam", "engineer");
    let spki = central_spki(&village);
    let console = format!("{}/console", village.central.url);
    let profile = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (_driver, client) = browser(&driver, &spki, profile.path()).await;
        client.set_window_size(1280, 900).await.unwrap();

        // A wrong password: refused, nothing said about which part was wrong.
        let page = log_in(&client, &console, (CASHIER.0, "not-her-password")).await;
        assert!(page.contains("Wrong name or password"), "{page}");
        screenshot(&client, area, "login-refused").await;

        // The cashier: the gateway list, then the village's meters.
        let page = log_in(&client, &console, CASHIER).await;
        assert!(page.contains("Meera Sahu (cashier)"), "{page}");
        assert!(
            page.contains(GATEWAY_ID) && page.contains("2 / 2"),
            "both meters heard: {page}"
        );
        screenshot(&client, area, "gateways").await;
        // The daemon's own report: its version and protocol, its radio's counters, its backlog.
        let version = format!(
            "{} (protocol {})",
            env!("CARGO_PKG_VERSION"),
            gramgrid_proto::wire::PROTOCOL_VERSION
        );
        assert!(page.contains(&version), "the gateway's software: {page}");
        click_link(&client, GATEWAY_ID).await;
        let page = text(&client).await;
        assert!(page.contains("ACC-0") && page.contains("ACC-1"), "{page}");
        let heard = radio_heard(&page);
        assert!(heard > 0, "the meters' frames the gateway heard: {page}");
        assert!(page.contains("Running since") && page.contains("MiB free"), "{page}");
        screenshot(&client, area, "gateway").await;

        // Find the household by name, take a counter payment, print the receipt.
        client.goto(&format!("{console}/accounts")).await.unwrap();
        let search = client.form(Locator::Css("form.search")).await.unwrap();
        search.set_by_name("q", "household 1").await.unwrap();
        let page = submit(&client, search).await;
        assert!(page.contains("ACC-1") && !page.contains("ACC-0"), "{page}");
        click_link(&client, "ACC-1").await;
        let page = text(&client).await;
        assert!(page.contains("Take a payment"), "{page}");
        screenshot(&client, area, "account").await;
        let pay = client
            .form(Locator::Css(r#"form[action$="/payments"]"#))
            .await
            .unwrap();
        pay.set_by_name("amount", "250").await.unwrap();
        pay.set_by_name("reference", "R-1001").await.unwrap();
        let receipt = submit(&client, pay).await;
        assert!(receipt.contains("₹250.00") && receipt.contains("R-1001"), "{receipt}");
        assert!(receipt.contains("Meera Sahu") || receipt.contains(CASHIER.0), "{receipt}");
        screenshot(&client, area, "receipt").await;
        // The payment reaches the household's gateway at its next sync.
        wait_for(
            "the counter payment at the gateway",
            Duration::from_secs(60),
            village.path(),
            || {
                count(
                    &village.gateway_db,
                    "SELECT COUNT(*) FROM ledger_events WHERE account = 'ACC-1' AND kind = 'recharge' AND amount_paise = 25000",
                ) == 1
            },
        );
        client.goto(&format!("{console}/accounts/ACC-1")).await.unwrap();
        let page = text(&client).await;
        assert!(page.contains("R-1001"), "the recharge history: {page}");

        // This month's bill so far: its closing balance is the statement's, to the paisa.
        click_link(&client, "This month's bill so far").await;
        let bill = text(&client).await;
        let month = chrono::Utc::now()
            .with_timezone(&gramgrid_core::civil::ist())
            .format("%Y-%m")
            .to_string();
        let (status, statement) = village.central.call(
            "GET",
            &format!("/api/v1/accounts/ACC-1/statement?month={month}"),
            None,
        );
        assert_eq!(status, 200, "{statement}");
        let statement: serde_json::Value = serde_json::from_str(&statement).unwrap();
        let closing = gramgrid_web::format::inr(statement["closing_paise"].as_i64().unwrap());
        assert!(bill.contains(&closing), "closing balance {closing} on the bill:\n{bill}");
        screenshot(&client, area, "bill").await;
        // The same bill as a PDF, with the browser's session.
        let session = client.get_named_cookie("gg_console").await.unwrap();
        let (status, pdf) = crate::common::https_request(
            &village.central.url,
            &village.central.ca,
            "GET",
            &format!("/console/accounts/ACC-1/bill.pdf?month={month}"),
            &[("Cookie", &format!("gg_console={}", session.value()))],
            "",
        );
        assert_eq!(status, 200);
        assert!(pdf.starts_with("%PDF"), "not a PDF");

        // An admin's page: refused, and nothing to click for it.
        assert!(client
            .find(Locator::LinkText("Staff"))
            .await
            .is_err());
        client.goto(&format!("{console}/staff")).await.unwrap();
        let page = text(&client).await;
        assert!(page.contains("Your role does not allow this"), "{page}");

        // Reports in Hindi.
        client.goto(&format!("{console}/reports")).await.unwrap();
        click_link(&client, "हिन्दी").await;
        let page = text(&client).await;
        assert!(page.contains("दैनिक संग्रह"), "{page}");
        screenshot(&client, area, "reports-hindi").await;
        click_link(&client, "English").await;
        log_out(&client).await;
        let page = text(&client).await;
        assert!(page.contains("Office login"), "{page}");
    });
    assert_audited(village.path(), postgres);
}

/// Every console login is in central's audit, named after the staff member.
fn assert_audited(dir: &Path, postgres: Option<&str>) {
    if postgres.is_some() {
        return;
    }
    let audit = crate::common::village::count(
        &dir.join("central.db"),
        &format!(
            "SELECT COUNT(*) FROM api_audit WHERE token = 'staff:{}' AND method = 'LOGIN'",
            CASHIER.0
        ),
    );
    assert_eq!(audit, 1);
}

#[test]
fn the_office_works_in_a_browser_on_sqlite() {
    office_works(None, "office");
}

#[test]
fn the_office_works_in_a_browser_on_postgres() {
    let Ok(admin) = std::env::var("GRAMGRID_TEST_POSTGRES_URL") else {
        eprintln!("SKIP the PostgreSQL variant: GRAMGRID_TEST_POSTGRES_URL is not set (tests/run sets it)");
        return;
    };
    let url = crate::common::fresh_postgres(&admin);
    office_works(Some(&url), "office-postgres");
}
