//! The technician app in a real browser: Debian's chromium driven through chromedriver (WebDriver,
//! the `fantoccini` client) against a real gateway daemon synced to a real central, with a
//! simulated fleet on the emulated radio, every part its own process. A phone viewport (360×740)
//! and a desktop one; a screenshot of each page goes to `target/test-artefacts/technician/`.
use crate::common::browser::{self, browser, chromedriver, click_link, submit, text};
use crate::common::village::{count, free_port, run, wait_for, Village, GATEWAY_ID};
use crate::common::{https_request, technician_login};
use fantoccini::{Client, Locator};
use std::path::Path;
use std::time::{Duration, Instant};

const SUPERVISOR: (&str, &str) = ("asha", "asha-supervises-2026");
const VIEWER: (&str, &str) = ("ravi", "ravi-only-looks-2026");

/// A screenshot among the technician app's artefacts.
async fn screenshot(client: &Client, name: &str) {
    browser::screenshot(client, "technician", name).await;
}

async fn log_in(client: &Client, base: &str, (name, password): (&str, &str)) -> String {
    client.goto(&format!("{base}/login")).await.unwrap();
    let form = client.form(Locator::Css("form.card")).await.unwrap();
    form.set_by_name("name", name).await.unwrap();
    form.set_by_name("password", password).await.unwrap();
    submit(client, form).await
}

async fn log_out(client: &Client) {
    client
        .find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Reloads `url` until its text contains `wanted` (each load keeps the session alive).
async fn page_until(
    client: &Client,
    url: &str,
    wanted: &str,
    limit: Duration,
    logs: &Path,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        client.goto(url).await.unwrap();
        let page = text(client).await;
        if page.contains(wanted) {
            return page;
        }
        if Instant::now() > deadline {
            panic!(
                "{url} never showed {wanted:?}; last page:\n{page}{}",
                crate::common::village::log_tails(logs)
            );
        }
        // Not faster: chromium and the page cost CPU that the emulated radio's reply windows need.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn set_technician(village: &Village, name: &str, full_name: &str, role: &str, password: &str) {
    let (status, answer) = village.central.call(
        "PUT",
        &format!("/api/v1/technicians/{name}"),
        Some(&format!(
            r#"{{"full_name": "{full_name}", "role": "{role}", "password": "{password}"}}"#
        )),
    );
    assert!(status == 200 || status == 201, "{status} {answer}");
}

#[test]
fn a_technician_on_a_phone_finds_why_a_household_is_off_reconnects_it_redeems_a_voucher_and_installs_meters(
) {
    let Some(driver) = chromedriver("the technician app") else {
        return;
    };
    let port = free_port();
    // Four meters on the air: two on accounts (the first a net meter with rooftop solar), two
    // spares in the gateway's stock.
    let village = Village::start_with(
        4,
        &format!("[technician]\nlisten = \"127.0.0.1:{port}\"\nsession_idle = \"20s\"\n"),
        &["--rooftop-solar", "1"],
    );
    let d = village.path().to_path_buf();
    // The office creates the logins; they reach the gateway with the next sync.
    set_technician(
        &village,
        SUPERVISOR.0,
        "Asha Verma",
        "supervisor",
        SUPERVISOR.1,
    );
    set_technician(&village, VIEWER.0, "Ravi Kumar", "viewer", VIEWER.1);
    village.install_first_meters(2);
    village.stock_meters_from(2);
    // A new connection waiting for its meter.
    village.central.post(
        "/api/v1/accounts",
        &format!(r#"{{"id": "ACC-2", "consumer_name": "Household 2", "category": "domestic", "gateway": "{GATEWAY_ID}"}}"#),
    );
    // The office records the first household's sanctioned load.
    let (status, answer) = village.central.call(
        "PUT",
        "/api/v1/accounts/ACC-0/sanctioned-load",
        Some(r#"{"watts": 2500}"#),
    );
    assert_eq!(status, 200, "{answer}");
    wait_for(
        "the logins and the sanctioned load to reach the gateway",
        Duration::from_secs(30),
        &d,
        || {
            count(&village.gateway_db, "SELECT COUNT(*) FROM technicians") == 2
                && count(
                    &village.gateway_db,
                    "SELECT COUNT(*) FROM accounts WHERE sanctioned_load_w = 2500",
                ) == 1
        },
    );
    // No credit: both households are cut and the meters confirm.
    wait_for(
        "both disconnects confirmed",
        Duration::from_secs(90),
        &d,
        || village.acknowledged("disconnect") == 2,
    );

    // The label's fingerprint is the certificate the daemon serves (issued at enrolment).
    let cert = d.join(format!("pki/gateways/{GATEWAY_ID}/technician.pem"));
    let printed = run(&[
        "gateway",
        "cert",
        "--config",
        d.join("gateway.toml").to_str().unwrap(),
    ]);
    let fingerprint = gramgrid_net::pki::fingerprint(&cert).unwrap();
    assert!(printed.contains(&fingerprint), "{printed}");
    assert!(printed.contains("the central CA"), "{printed}");
    let spki = gramgrid_net::pki::spki_hash(&cert).unwrap();

    let base = format!("https://127.0.0.1:{port}");
    let voucher = village.central.post(
        "/api/v1/vouchers",
        r#"{"account": "ACC-1", "amount_paise": 20000, "valid_days": 7}"#,
    );
    let voucher: serde_json::Value = serde_json::from_str(&voucher).unwrap();
    let code = voucher["code"].as_str().unwrap().to_string();
    let serials: Vec<String> = village
        .manifest
        .meters
        .iter()
        .map(|m| m.serial.clone())
        .collect();
    let meter_0 = serials[0].clone();
    let (meter_1, spare_a, spare_b) = (&serials[1], &serials[2], &serials[3]);
    // What the technician reads on meter 1's display: a little more than its last report.
    let last_register_1 = || {
        count(
            &village.gateway_db,
            &format!("SELECT r.register_wh FROM readings r JOIN meters m ON m.id = r.meter WHERE m.serial = '{meter_1}' ORDER BY r.at DESC LIMIT 1"),
        )
    };
    let profile = tempfile::tempdir().unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (_driver, client) = browser(&driver, &spki, profile.path()).await;
        client.set_window_size(360, 740).await.unwrap();

        // A wrong password: refused, nothing else said.
        let page = log_in(&client, &base, (SUPERVISOR.0, "not-the-password")).await;
        assert!(page.contains("Wrong name or password."), "{page}");
        screenshot(&client, "login-refused-phone").await;

        // A viewer may look but not act.
        let page = log_in(&client, &base, VIEWER).await;
        assert!(page.contains("Ravi Kumar"), "{page}");
        client.goto(&format!("{base}/redeem")).await.unwrap();
        let page = text(&client).await;
        assert!(
            page.contains("Your role does not allow this. Nothing was changed."),
            "{page}"
        );
        client
            .goto(&format!("{base}/accounts/ACC-0/why"))
            .await
            .unwrap();
        assert!(
            client.find(Locator::Css("form.card")).await.is_err(),
            "no override form for a viewer"
        );
        log_out(&client).await;

        // The supervisor: status, meters, a meter, why a household is off.
        let page = log_in(&client, &base, SUPERVISOR).await;
        assert!(
            page.contains("Last sync") && page.contains("frames heard"),
            "{page}"
        );
        screenshot(&client, "status-phone").await;
        click_link(&client, "Meters").await;
        let page = text(&client).await;
        assert!(
            page.contains(&meter_0) && page.contains(meter_1.as_str()),
            "{page}"
        );
        assert!(
            !page.contains(spare_a.as_str()),
            "a spare is on no account: {page}"
        );
        screenshot(&client, "meters-phone").await;
        click_link(&client, &meter_0).await;
        let page = text(&client).await;
        assert!(
            page.contains("ACC-0") && page.contains("Link history"),
            "{page}"
        );
        // Readings 15 minutes apart give the month's maximum demand; in a month's first half hour
        // (Asia/Kolkata) there are no two of them yet, and the page says so.
        let demand = client
            .find(Locator::Css("dd.demand"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let now = chrono::Utc::now();
        let month_start = gramgrid_core::civil::Month::containing(now)
            .span()
            .unwrap()
            .0;
        if now - month_start < chrono::Duration::minutes(30) {
            assert_eq!(demand, "—");
        } else {
            assert!(demand.contains(" kW · "), "{demand}");
        }
        // Its rooftop array's export, as the meter's latest report carried it.
        let exported = client
            .find(Locator::Css("dd.exported"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(exported.ends_with(" kWh"), "{exported}");
        let sanctioned = client
            .find(Locator::Css("dd.sanctioned"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(sanctioned.starts_with("2.500 kW"), "{sanctioned}");
        assert!(
            client.find(Locator::Css("svg.chart rect")).await.is_ok(),
            "the load chart"
        );
        screenshot(&client, "meter-phone").await;
        click_link(&client, "ACC-0").await;
        let page = text(&client).await;
        assert!(page.contains("disconnected"), "{page}");
        assert!(page.contains("replays to the same outcome"), "{page}");
        screenshot(&client, "why-phone").await;

        // Reconnect with a reason: the relay command reaches the simulated meter, whose report
        // turns the relay state on the page to connected.
        let form = client.form(Locator::Css("form.card")).await.unwrap();
        form.set_by_name("hours", "2").await.unwrap();
        form.set_by_name("reason", "patient on oxygen at home")
            .await
            .unwrap();
        let page = submit(&client, form).await;
        assert!(page.contains("Override recorded."), "{page}");
        let why = format!("{base}/accounts/ACC-0/why");
        let page = page_until(
            &client,
            &why,
            "Relay\nconnected",
            Duration::from_secs(90),
            &d,
        )
        .await;
        assert!(page.contains("Connect until"), "{page}");
        screenshot(&client, "why-reconnected-phone").await;

        // A voucher issued at central, redeemed here: credited once, refused the second time.
        click_link(&client, "Redeem voucher").await;
        for expected in ["Voucher accepted", "Voucher refused"] {
            let form = client.form(Locator::Css("form.card")).await.unwrap();
            form.set_by_name("code", &code).await.unwrap();
            let page = submit(&client, form).await;
            assert!(page.contains(expected), "{page}");
        }
        screenshot(&client, "redeem-phone").await;

        // Commission a spare on the new connection: its nameplate's QR code opens the form with
        // the serial filled in; the first register is left blank (display unreadable).
        client
            .goto(&format!("{base}/install?serial={spare_a}"))
            .await
            .unwrap();
        let page = text(&client).await;
        assert!(
            page.contains("Spare meters in stock") && page.contains(spare_b.as_str()),
            "{page}"
        );
        let form = client.form(Locator::Css("form.install")).await.unwrap();
        form.set_by_name("account", "ACC-2").await.unwrap();
        let page = submit(&client, form).await;
        assert!(
            page.contains(&format!("Meter installed {spare_a}")),
            "{page}"
        );
        screenshot(&client, "install-phone").await;
        // The same spare again: refused with the reason, nothing changed.
        client.goto(&format!("{base}/install")).await.unwrap();
        let form = client.form(Locator::Css("form.install")).await.unwrap();
        form.set_by_name("serial", &format!("MAKE:Sim;SN:{spare_a}"))
            .await
            .unwrap();
        form.set_by_name("account", "ACC-0").await.unwrap();
        let page = submit(&client, form).await;
        assert!(page.contains("is not in this gateway's stock"), "{page}");

        // Replace meter 1 (household ACC-1) by the other spare, from the meter's page.
        client
            .goto(&format!("{base}/meters/{meter_1}"))
            .await
            .unwrap();
        let final_kwh = format!("{:.3}", (last_register_1() + 1_500) as f64 / 1000.0);
        let form = client.form(Locator::Css("form.replace")).await.unwrap();
        form.set_by_name("final_register", &final_kwh)
            .await
            .unwrap();
        form.set_by_name("serial", spare_b).await.unwrap();
        form.set_by_name("reason", "display dead after a storm")
            .await
            .unwrap();
        let page = submit(&client, form).await;
        assert!(
            page.contains(&format!("Meter installed {spare_b}")),
            "{page}"
        );
        // The new meters are polled at once: their reports reach the pages.
        for spare in [spare_a, spare_b] {
            let page = page_until(
                &client,
                &format!("{base}/meters/{spare}"),
                "heard",
                Duration::from_secs(90),
                &d,
            )
            .await;
            assert!(
                page.contains(if spare == spare_a { "ACC-2" } else { "ACC-1" }),
                "{page}"
            );
        }
        screenshot(&client, "replaced-meter-phone").await;

        // Hindi, then the desktop.
        click_link(&client, "हिन्दी").await;
        let page = text(&client).await;
        assert!(page.contains("वाउचर भुनाएँ"), "{page}");
        screenshot(&client, "meter-hindi-phone").await;
        click_link(&client, "English").await;
        client.set_window_size(1280, 800).await.unwrap();
        for (path, name) in [
            ("/", "status"),
            ("/meters", "meters"),
            (&*format!("/meters/{meter_0}"), "meter"),
        ] {
            client.goto(&format!("{base}{path}")).await.unwrap();
            screenshot(&client, &format!("{name}-desktop")).await;
        }
        // Idle longer than the session allows: back to the login, told why.
        tokio::time::sleep(Duration::from_secs(21)).await;
        client.goto(&format!("{base}/meters")).await.unwrap();
        let page = text(&client).await;
        assert!(
            page.contains("Your session has expired. Please log in again."),
            "{page}"
        );

        // Five wrong passwords lock the viewer out; the right one is refused while locked.
        for _ in 0..5 {
            log_in(&client, &base, (VIEWER.0, "guess")).await;
        }
        let page = log_in(&client, &base, VIEWER).await;
        assert!(page.contains("this account is locked until"), "{page}");
        screenshot(&client, "locked-out-phone").await;
        client.close().await.unwrap();
    });

    // A form with a wrong CSRF token (posted from elsewhere with a live session cookie): refused,
    // and no override recorded.
    let ca = d.join("pki/ca.pem");
    let overrides = || count(&village.gateway_db, "SELECT COUNT(*) FROM overrides");
    let before = overrides();
    let fresh = technician_login(&base, &ca, SUPERVISOR.0, SUPERVISOR.1);
    let (status, body) = https_request(
        &base,
        &ca,
        "POST",
        "/accounts/ACC-1/override",
        &[
            ("Cookie", &format!("gg_session={fresh}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "csrf=0000&hours=2&reason=forged",
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("The form was out of date or not from this app"),
        "{body}"
    );
    assert_eq!(overrides(), before, "nothing changed");

    // The diagnostics bundle: the store's self-check, the daemon's latest log lines, no secret.
    let (status, bundle) = https_request(
        &base,
        &ca,
        "GET",
        "/diagnostics",
        &[("Cookie", &format!("gg_session={fresh}"))],
        "",
    );
    assert_eq!(status, 200, "{bundle}");
    let json: serde_json::Value = serde_json::from_str(&bundle).unwrap();
    assert_eq!(json["verify"]["consistent"], true, "{bundle}");
    let logs = json["recent_logs"].as_array().unwrap();
    assert!(
        logs.iter()
            .any(|line| line.as_str().unwrap().contains("INFO")),
        "{logs:?}"
    );
    for meter in &village.manifest.meters {
        let key = meter.keys.nwk_skey.to_storage_hex();
        assert!(
            !bundle.to_lowercase().contains(&key.to_lowercase()),
            "a key in the bundle"
        );
    }

    // Every action reached central with the next sync, with who, what and why.
    wait_for(
        "the technicians' actions at central",
        Duration::from_secs(30),
        &d,
        || {
            let (_, actions) = village.central.call(
                "GET",
                &format!("/api/v1/technician-actions?gateway={GATEWAY_ID}"),
                None,
            );
            [
                "\"override\"",
                "patient on oxygen at home",
                "\"redeem\"",
                "\"login_failed\"",
                "\"locked_out\"",
                "\"commission\"",
                "display dead after a storm",
            ]
            .iter()
            .all(|wanted| actions.contains(wanted))
        },
    );
    assert_eq!(
        count(
            &village.gateway_db,
            "SELECT COUNT(*) FROM ledger_events WHERE account = 'ACC-1' AND kind = 'recharge'"
        ),
        1,
        "the voucher credited once"
    );
    // Central installed both spares where the technician did, the replacement billed on in the
    // old meter's slabs; the old meter's final register is its last reading, and the old meter
    // is heard no more.
    let central_db = d.join("central.db");
    wait_for(
        "the installations at central",
        Duration::from_secs(30),
        &d,
        || {
            count(&central_db, &format!("SELECT COUNT(*) FROM meters WHERE serial = '{spare_a}' AND account = 'ACC-2' AND billing_serial IS NULL")) == 1
            && count(&central_db, &format!("SELECT COUNT(*) FROM meters WHERE serial = '{spare_b}' AND account = 'ACC-1' AND billing_serial = '{meter_1}'")) == 1
        },
    );
    assert_eq!(
        count(
            &village.gateway_db,
            &format!("SELECT COUNT(*) FROM readings r JOIN meters m ON m.id = r.meter WHERE m.serial = '{meter_1}' AND r.at > m.removed_at")
        ),
        0
    );
    assert_eq!(
        count(&village.gateway_db, "SELECT COUNT(*) FROM stock_meters"),
        0
    );
}
