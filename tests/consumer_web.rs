//! The household's balance page in a real browser: `central serve` as its own process over TLS,
//! an account with 30 days of 15-minute readings synced by a gateway's client certificate, a link
//! made with `gramgrid central consumer-link`, opened in headless chromium on a phone viewport
//! (360×740). The figures must be the balance API's; a changed or expired link must show nothing
//! of the account; the code login works with the code read from central's notification log.
//! Screenshots go to `target/test-artefacts/consumer/`.
use crate::common::browser::{
    self, browser, chromedriver, click_link, submit, text, text_containing,
};
use crate::common::village::{run, start_central, wait_for, Central, GATEWAY_ID};
use chrono::{Duration, Utc};
use fantoccini::{Client, Locator};
use gramgrid_proto::wire::{self, ReadingBatch, ReadingBlock, UploadRequest};
use serde_json::{json, Value};
use std::path::Path;

async fn screenshot(client: &Client, name: &str) {
    browser::screenshot(client, "consumer", name).await;
}

/// Days or units as the page writes them.
fn estimate(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// The balance report central's API gives for A-1001.
fn balance(central: &Central) -> Value {
    let (status, body) = central.call("GET", "/api/v1/accounts/A-1001/balance", None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// 31 days of 15-minute readings of M-1001 up to now (more in the evening), uploaded by the
/// gateway over mutual TLS with its enrolment bundle.
async fn sync_readings(url: &str, bundle: &Path, start: chrono::DateTime<Utc>) {
    let now = Utc::now();
    let mut register = 0;
    let readings: Vec<(String, i64, i64)> = (1..=31 * 96)
        .map(|i| start + Duration::minutes(15 * i))
        .filter(|at| *at <= now)
        .map(|at| {
            let hour = chrono::Timelike::hour(&gramgrid_core::civil::local(at));
            register += if (18..22).contains(&hour) { 250 } else { 60 };
            ("M-1001".to_owned(), at.timestamp(), register)
        })
        .collect();
    let request = UploadRequest {
        protocol: wire::PROTOCOL_VERSION,
        sent_at: now,
        priority: Vec::new(),
        readings: Some(ReadingBatch {
            after_seq: 0,
            through_seq: readings.len() as u64,
            blocks: ReadingBlock::group(readings),
            exports: Vec::new(),
        }),
        downlink_applied: 0,
        identity: None,
        status: None,
    };
    let bundle = gramgrid_net::pki::GatewayBundle::load(bundle).unwrap();
    let client = gramgrid_net::tls::HttpsClient::new(
        gramgrid_net::tls::client_config(&bundle).unwrap(),
        url,
    )
    .unwrap();
    let (status, answer) = client
        .post(
            wire::EXCHANGE_PATH,
            wire::CONTENT_TYPE,
            wire::encode(&request).unwrap(),
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
}

/// The code of the latest `login_code` message in central's notification log.
fn logged_code(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|n| n["kind"] == "login_code")
        .and_then(|n| {
            let message = n["message"].as_str()?.to_owned();
            let after = message.split("code is ").nth(1)?;
            Some(after.chars().take_while(char::is_ascii_digit).collect())
        })
}

#[test]
fn a_household_on_a_phone_opens_its_page_by_link_or_code_and_a_bad_link_shows_nothing() {
    let Some(driver) = chromedriver() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_server, central) =
        start_central(d, |url| format!("\n[consumer]\nbase_url = \"{url}\"\n"));
    let url = central.url.clone();
    // Sunita Devi's account and meter, a month old, and a recharge of ₹2,000.
    let start = chrono::DateTime::from_timestamp(Utc::now().timestamp() / 900 * 900, 0).unwrap()
        - Duration::days(31);
    for (path, body) in [
        (
            "/api/v1/accounts",
            json!({"id": "A-1001", "consumer_name": "Sunita Devi", "category": "domestic", "phone": "+919800000001", "gateway": GATEWAY_ID, "created_at": start}),
        ),
        (
            "/api/v1/meters",
            json!({"serial": "M-1001", "account": "A-1001", "installed_at": start, "initial_register_wh": 0}),
        ),
        (
            "/api/v1/recharges",
            json!({"idempotency_key": "counter-1", "account": "A-1001", "amount_paise": 200_000}),
        ),
    ] {
        central.post(path, &body.to_string());
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bundle = d.join(format!("pki/gateways/{GATEWAY_ID}/bundle.toml"));
    runtime.block_on(sync_readings(&url, &bundle, start));

    // The office makes the links: one good, one already expired, one altered on the way.
    let config = d.join("central.toml");
    let make_link = |extra: &[&str]| {
        let mut args = vec!["central", "consumer-link", "--config"];
        args.extend([config.to_str().unwrap(), "--account", "A-1001"]);
        args.extend(extra);
        run(&args).trim().to_owned()
    };
    let link = make_link(&[]);
    assert!(link.starts_with(&format!("{url}/my/l/")), "{link}");
    let expired = make_link(&["--valid-for", "1s"]);
    let mut tampered = link.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    std::thread::sleep(std::time::Duration::from_secs(2));

    // The page's weight, as a 2G phone would fetch it.
    let (status, page) =
        crate::common::https_request(&url, &central.ca, "GET", &link[url.len()..], &[], "");
    assert_eq!(status, 200, "{page}");
    eprintln!(
        "the consumer page with 30 days of readings: {} bytes",
        page.len()
    );
    assert!(page.len() < 100 * 1024, "{} bytes", page.len());

    let server_cert = d.join("pki/server.pem");
    let spki = gramgrid_net::pki::spki_hash(&server_cert).unwrap();
    let profile = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let (_driver, client) = browser(&driver, &spki, profile.path()).await;
        client.set_window_size(360, 740).await.unwrap();

        // The link opens the page with the API's figures.
        let before = balance(&central);
        client.goto(&link).await.unwrap();
        let page = text(&client).await;
        let after = balance(&central);
        let rupees = gramgrid_web::format::inr(before["balance_paise"].as_i64().unwrap());
        assert_eq!(before["balance_paise"], after["balance_paise"]);
        assert!(
            page.contains("Sunita Devi") && page.contains(&rupees),
            "{rupees}: {page}"
        );
        for (field, words) in [
            ("estimated_days_left", "days left"),
            ("estimated_units_left", "units (kWh)"),
        ] {
            let shown =
                |report: &Value| format!("{} {words}", estimate(report[field].as_f64().unwrap()));
            assert!(
                page.contains(&shown(&before)) || page.contains(&shown(&after)),
                "{field}: {} in {page}",
                shown(&before)
            );
        }
        assert!(
            page.contains("Up to date.") && page.contains("This month's bill so far"),
            "{page}"
        );
        assert!(
            page.contains("Last 30 days") && page.contains("Recharges"),
            "{page}"
        );
        screenshot(&client, "page-phone").await;

        // The month's printable bill, then back to the page.
        click_link(&client, "Printable bill").await;
        let bill = text_containing(&client, "Closing balance").await;
        assert!(bill.contains("Closing balance"), "{bill}");
        screenshot(&client, "bill-phone").await;
        client.back().await.unwrap();

        // In Hindi, the same figures.
        click_link(&client, "हिन्दी").await;
        let hindi = text_containing(&client, "बैलेंस").await;
        assert!(hindi.contains("बैलेंस") && hindi.contains(&rupees), "{hindi}");
        screenshot(&client, "page-hindi-phone").await;
        click_link(&client, "English").await;
        let english = text_containing(&client, "Balance").await;
        assert!(
            english.contains("Balance") && english.contains(&rupees),
            "{english}"
        );
        let logout = client.form(Locator::Css("form.logout")).await.unwrap();
        let login = submit(&client, logout).await;
        assert!(login.contains("Send me a code"), "{login}");

        // An expired link and an altered one: said plainly, and nothing of the account.
        for (bad, words, name) in [
            (&expired, "The link has expired", "link-expired-phone"),
            (
                &tampered,
                "The link is not complete or has been changed",
                "link-altered-phone",
            ),
        ] {
            client.goto(bad).await.unwrap();
            let page = text(&client).await;
            assert!(
                page.contains(words) && page.contains("Open with a code"),
                "{page}"
            );
            for secret in ["Sunita", "A-1001", &rupees, "Balance"] {
                assert!(!page.contains(secret), "{name} shows {secret}: {page}");
            }
            screenshot(&client, name).await;
        }

        // The code login: account, registered phone, the code from the SMS.
        click_link(&client, "Open with a code").await;
        text_containing(&client, "Send me a code").await;
        let form = client.form(Locator::Css("form.card")).await.unwrap();
        form.set_by_name("account", "A-1001").await.unwrap();
        form.set_by_name("phone", "98000 00001").await.unwrap();
        let page = submit(&client, form).await;
        assert!(
            page.contains("If this phone number is registered for this account"),
            "{page}"
        );
        screenshot(&client, "code-asked-phone").await;
        let log = d.join("notifications.log");
        let mut code = None;
        wait_for(
            "the login code in the notification log",
            std::time::Duration::from_secs(30),
            d,
            || {
                code = logged_code(&log);
                code.is_some()
            },
        );
        let code = code.unwrap_or_default();
        assert_eq!(code.len(), 6, "{code}");
        let form = client.form(Locator::Css("form.card")).await.unwrap();
        form.set_by_name("code", &code).await.unwrap();
        let page = submit(&client, form).await;
        assert!(
            page.contains("Sunita Devi") && page.contains(&rupees),
            "{page}"
        );
        screenshot(&client, "code-login-phone").await;
        client.close().await.unwrap();
    });
}
