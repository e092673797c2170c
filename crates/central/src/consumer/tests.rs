//! The `/my/` routes through central's whole router, on SQLite and (when the suite has one)
//! PostgreSQL: a link opens the page, a changed or expired one shows nothing, the code login, the
//! language switch, the API that sends a link, and the page's weight.
use super::*;
use crate::accounts::{Account, Meter, RechargeRequest};
use crate::testing::{central_configured, fresh_postgres, priority_upload, TestCentral};
use crate::{ApiToken, Scope};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::Duration;
use gramgrid_proto::wire::{ReadingBatch, ReadingBlock};
use tower::ServiceExt;

const TOKEN: &str = "office-token-0123456789";
const BASE: &str = "https://central.test:8443";

fn household_central(database_url: Option<String>) -> TestCentral {
    central_configured(|c| {
        c.api_tokens = vec![ApiToken::new("office", TOKEN, Scope::Admin)];
        c.consumer.base_url = BASE.into();
        if let Some(url) = database_url {
            c.database_url = url;
        }
    })
}

/// Account A1 (Sunita, with a phone) on gw-a, its meter read every 15 minutes for the 31 days
/// to now (about 9 kWh a day, more in the evening), and a recharge of ₹2,000.
fn household(t: &TestCentral) {
    let now = Utc::now();
    let start = from_ts(ts(now) / 900 * 900) - Duration::days(31);
    let account = Account {
        id: "A1".into(),
        consumer_name: "Sunita Devi".into(),
        category: gramgrid_core::tariff::Category::Domestic,
        phone: Some("+919800000001".into()),
        gateway: Some("gw-a".into()),
        language: Default::default(),
        created_at: start,
    };
    let meter = Meter {
        serial: "M-A1".into(),
        account: "A1".into(),
        installed_at: start,
        initial_register_wh: Some(0),
        keys: None,
        dlms: None,
        relay_state: "unknown".into(),
    };
    t.tx(move |tx| {
        crate::downlink::ensure_gateway(tx, "gw-a")?;
        accounts::put_account(tx, &account, false)?;
        accounts::put_meter(tx, &meter, false)?;
        let recharge = RechargeRequest {
            idempotency_key: "pay-1".into(),
            account: "A1".into(),
            amount_paise: 200_000,
            reference: None,
        };
        accounts::recharge(tx, &recharge, start + Duration::hours(1)).map(drop)
    })
    .unwrap();
    let mut register = 0;
    let readings: Vec<(String, i64, i64)> = (1..=31 * 96)
        .map(|i| {
            let at = start + Duration::minutes(15 * i);
            let hour = chrono::Timelike::hour(&gramgrid_core::civil::local(at));
            register += if (18..22).contains(&hour) { 250 } else { 60 };
            ("M-A1".to_owned(), ts(at), register)
        })
        .filter(|(_, at, _)| *at <= ts(now))
        .collect();
    let mut request = priority_upload(1, Vec::new(), now);
    request.readings = Some(ReadingBatch {
        after_seq: 0,
        through_seq: readings.len() as u64,
        blocks: ReadingBlock::group(readings),
        exports: Vec::new(),
    });
    t.upload("gw-a", request, now);
}

/// What a response brought back.
struct Answer {
    status: StatusCode,
    cookies: Vec<String>,
    location: Option<String>,
    body: String,
}

/// Central's whole router (one per test: the households' sessions live in it).
fn router(t: &TestCentral) -> axum::Router {
    crate::server::router(std::sync::Arc::clone(&t.central))
}

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let text = |name| {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let cookies = text(header::SET_COOKIE);
    let location = text(header::LOCATION).pop();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        cookies,
        location,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// `name=value` of the cookie `name` a response set.
fn cookie_of(answer: &Answer, name: &str) -> String {
    answer
        .cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", answer.cookies))
        .to_owned()
}

fn form_token(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form token")
        .to_owned()
}

/// The office's `POST /api/v1/accounts/{account}/consumer-link`.
async fn send_link_api(r: &axum::Router, account: &str) -> Answer {
    let path = format!("/api/v1/accounts/{account}/consumer-link");
    let bearer = format!("Bearer {TOKEN}");
    call(r, "POST", &path, &[("authorization", &bearer)], "").await
}

async fn balance_api(r: &axum::Router) -> accounts::Balance {
    let answer = call(
        r,
        "GET",
        "/api/v1/accounts/A1/balance",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

async fn scenario(t: &TestCentral) {
    household(t);
    let r = &router(t);
    // The office sends a link: queued by SMS, audited, and answered.
    let answer = send_link_api(r, "A1").await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let link: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let url = link["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{BASE}/my/l/")), "{url}");
    let queued = t
        .tx(|tx| {
            tx.query_int(
                "SELECT COUNT(*) FROM notifications WHERE account = 'A1' AND kind = 'consumer_link' AND state = 'queued'",
                &[],
            )
            .map_err(Into::into)
        })
        .unwrap();
    assert_eq!(queued, 1);
    let audited = t
        .tx(|tx| {
            tx.query_int(
                "SELECT COUNT(*) FROM api_audit WHERE path = '/api/v1/accounts/A1/consumer-link'",
                &[],
            )
            .map_err(Into::into)
        })
        .unwrap();
    assert_eq!(audited, 1);

    // The link opens the page with the balance the API reports, and a session.
    let path = url.trim_start_matches(BASE);
    let page = call(r, "GET", path, &[], "").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let balance = balance_api(r).await;
    let shown = gramgrid_web::format::inr(balance.balance_paise);
    assert!(page.body.contains(&shown), "{shown} not on the page");
    assert!(page.body.contains("Sunita Devi") && page.body.contains("This month"));
    let days = balance.estimated_days_left.unwrap();
    assert!(page.body.contains(&format!(
        "<strong>{}</strong> days left",
        pages_estimate(days)
    )));
    assert!(page.body.contains("<svg") && !page.body.contains("<script"));
    // Light: well under 100 KB with 30 days of readings.
    eprintln!("consumer page: {} bytes", page.body.len());
    assert!(page.body.len() < 100 * 1024, "{} bytes", page.body.len());
    let session = cookie_of(&page, "gg_consumer");

    // The session shows it again; the switch turns it Hindi.
    let again = call(r, "GET", "/my/", &[("cookie", &session)], "").await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.body.contains(&shown));
    let switch = call(
        r,
        "GET",
        "/my/lang/hi?back=/my/",
        &[("cookie", &session)],
        "",
    )
    .await;
    assert_eq!(switch.location.as_deref(), Some("/my/"));
    let hindi = cookie_of(&switch, "gg_lang");
    let both = format!("{session}; {hindi}");
    let hindi_page = call(r, "GET", "/my/", &[("cookie", &both)], "").await;
    assert!(hindi_page.body.contains("बैलेंस") && hindi_page.body.contains(&shown));
    // The switch never sends anyone off the page set.
    let away = call(r, "GET", "/my/lang/en?back=//evil.example/", &[], "").await;
    assert_eq!(away.location.as_deref(), Some("/my/"));

    // A changed link and an expired one show nothing of the account.
    let mut changed = path.to_owned();
    let last = changed.pop().unwrap();
    changed.push(if last == 'A' { 'B' } else { 'A' });
    let now = t.central.now();
    let expired = make_link(
        &t.central,
        "A1",
        now - Duration::hours(2),
        Some(std::time::Duration::from_secs(3600)),
    )
    .unwrap();
    for (path, words) in [
        (changed.as_str(), "not complete or has been changed"),
        (expired.url.trim_start_matches(BASE), "has expired"),
        ("/my/l/garbage", "not complete or has been changed"),
    ] {
        let refused = call(r, "GET", path, &[], "").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        assert!(refused.body.contains(words), "{path}: {}", refused.body);
        assert!(refused.body.contains("/my/login"));
        for secret in ["Sunita", &shown, "A1"] {
            assert!(!refused.body.contains(secret), "{path} shows {secret}");
        }
        assert!(refused
            .cookies
            .iter()
            .all(|c| !c.starts_with("gg_consumer=")));
    }
    // Without a session, the page is the login.
    let none = call(r, "GET", "/my/", &[], "").await;
    assert_eq!(none.location.as_deref(), Some("/my/login"));

    // The code login: a wrong phone gets the same answer as the right one, and no code.
    let login = call(r, "GET", "/my/login", &[], "").await;
    let login_cookie = cookie_of(&login, "gg_consumer_login");
    let csrf = form_token(&login.body);
    let form = ("content-type", "application/x-www-form-urlencoded");
    let ask = |phone: &str| format!("csrf={csrf}&account=A1&phone={phone}");
    let wrong = call(
        r,
        "POST",
        "/my/login",
        &[form, ("cookie", &login_cookie)],
        &ask("9800000002"),
    )
    .await;
    let codes = |t: &TestCentral| {
        t.tx(|tx| {
            tx.query(
                "SELECT vars FROM notifications WHERE kind = 'login_code' ORDER BY created_at, id",
                &[],
            )
            .map_err(Into::into)
        })
        .unwrap()
    };
    assert!(codes(t).is_empty());
    let right = call(
        r,
        "POST",
        "/my/login",
        &[form, ("cookie", &login_cookie)],
        &ask("%2B91+98000+00001"),
    )
    .await;
    let without_token = |a: &Answer| a.body.replace(&form_token(&a.body), "");
    assert_eq!(wrong.status, right.status);
    assert_eq!(without_token(&wrong), without_token(&right));
    let sent = codes(t);
    assert_eq!(sent.len(), 1);
    let vars: Vars = serde_json::from_str(&sent[0].text(0).unwrap()).unwrap();
    let code = vars["code"].clone();
    let csrf = form_token(&right.body);
    let login_cookie = cookie_of(&right, "gg_consumer_login");
    let enter = |code: &str| format!("csrf={csrf}&account=A1&code={code}");
    let bad = if code == "111111" { "222222" } else { "111111" };
    let refused = call(
        r,
        "POST",
        "/my/code",
        &[form, ("cookie", &login_cookie)],
        &enter(bad),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.body.contains("wrong or no longer valid") && !refused.body.contains("Sunita"));
    let forged = call(r, "POST", "/my/code", &[form], &enter(&code)).await;
    assert_eq!(
        forged.status,
        StatusCode::FORBIDDEN,
        "a form without its cookie"
    );
    let opened = call(
        r,
        "POST",
        "/my/code",
        &[form, ("cookie", &login_cookie)],
        &enter(&code),
    )
    .await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.body);
    assert_eq!(opened.location.as_deref(), Some("/my/"));
    let session = cookie_of(&opened, "gg_consumer");
    let mine = call(r, "GET", "/my/", &[("cookie", &session)], "").await;
    assert!(mine.body.contains("Sunita Devi") && mine.body.contains(&shown));
    let twice = call(
        r,
        "POST",
        "/my/code",
        &[form, ("cookie", &login_cookie)],
        &enter(&code),
    )
    .await;
    assert_eq!(
        twice.status,
        StatusCode::UNAUTHORIZED,
        "a code opens the page once"
    );

    // Logging out ends the session.
    let csrf = form_token(&mine.body);
    let out = call(
        r,
        "POST",
        "/my/logout",
        &[form, ("cookie", &session)],
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(out.location.as_deref(), Some("/my/login"));
    let after = call(r, "GET", "/my/", &[("cookie", &session)], "").await;
    assert_eq!(after.location.as_deref(), Some("/my/login?expired=1"));
}

/// Days as the page writes them.
fn pages_estimate(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_opens_its_page_by_link_or_code_and_nothing_else_opens_it() {
    scenario(&household_central(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_opens_its_page_by_link_or_code_on_postgresql_too() {
    let Some(url) = fresh_postgres("gg_consumer") else {
        return;
    };
    let t = household_central(Some(url));
    assert_eq!(t.central.db().backend(), "postgres");
    scenario(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_needs_a_base_url_and_sending_one_needs_a_phone() {
    let t =
        central_configured(|c| c.api_tokens = vec![ApiToken::new("office", TOKEN, Scope::Admin)]);
    t.account("A2", None);
    let answer = send_link_api(&router(&t), "A2").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.body.contains("[consumer] base_url"),
        "{}",
        answer.body
    );

    let t = household_central(None);
    t.account("A2", None);
    let answer = send_link_api(&router(&t), "A2").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.body.contains("has no phone number"),
        "{}",
        answer.body
    );
    let answer = send_link_api(&router(&t), "NOPE").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_sent_link_or_code_is_not_kept_once_it_has_gone() {
    let dir = tempfile::tempdir().unwrap();
    let t = household_central(None);
    t.account("A3", None);
    t.tx(|tx| {
        tx.execute(
            "UPDATE accounts SET phone = '+919800000003' WHERE id = 'A3'",
            &[],
        )
        .map(drop)
        .map_err(Into::into)
    })
    .unwrap();
    let now = t.central.now();
    let link = make_link(&t.central, "A3", now, None).unwrap();
    let url = link.url.clone();
    t.tx(move |tx| send_link(tx, link, now)).unwrap();
    let sender = notify::LogFileSender {
        path: dir.path().join("notifications.log"),
    };
    let round = notify::deliver(&t.central, &sender, &notify::Rendering::built_in(), 10)
        .await
        .unwrap();
    assert_eq!(round.sent, 1);
    assert!(std::fs::read_to_string(&sender.path)
        .unwrap()
        .contains(&url));
    let kept = t
        .tx(|tx| {
            tx.query(
                "SELECT message, vars FROM notifications WHERE account = 'A3'",
                &[],
            )
            .map_err(Into::into)
        })
        .unwrap();
    let (message, vars) = (kept[0].text(0).unwrap(), kept[0].text(1).unwrap());
    assert!(
        !message.contains(&url) && !vars.contains(&url),
        "{message} {vars}"
    );
}
