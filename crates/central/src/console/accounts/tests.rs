//! The account pages and the cashier's payment, driven through the console's router on SQLite
//! and PostgreSQL; `Client` logs a staff member in as a browser would.
use super::*;
use crate::accounts::{Account, Meter};
use crate::staff::{StaffChange, StaffRole};
use crate::testing::{backends, TestCentral};
use axum::body::Body;
use gramgrid_core::tariff::Category;
use tower::ServiceExt;

const PASSWORD: &str = "counter-password-1";

/// A logged-in staff member's browser: the console's router, the session cookie and its CSRF token.
pub(in crate::console) struct Client {
    router: Router,
    cookie: String,
    pub csrf: String,
}

/// A response: status, `Location` and body.
pub(in crate::console) struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

fn set_cookie_value(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(axum::http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// The first hidden field's value named `name` in `html`.
pub(in crate::console) fn hidden(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!(r#"name="{name}" value=""#))?;
    let rest = &html[at + name.len() + 15..];
    rest.split('"').next().map(str::to_owned)
}

impl Client {
    /// Creates staff member `name` with `role` and logs in.
    pub async fn login(t: &TestCentral, name: &str, role: StaffRole) -> Client {
        let (who, now) = (name.to_owned(), t.central.now());
        t.tx(move |tx| {
            let change = StaffChange {
                full_name: format!("{who} Devi"),
                role,
                password: Some(PASSWORD.into()),
                active: None,
            };
            crate::staff::set_staff(tx, &who, &change, now)
        })
        .unwrap();
        let router = super::super::router(std::sync::Arc::clone(&t.central));
        let mut client = Client {
            router,
            cookie: String::new(),
            csrf: String::new(),
        };
        let page = client.send("GET", "/console/login", None).await;
        let login_csrf = set_cookie_value(&page, "gg_console_login").unwrap();
        client.cookie = format!("gg_console_login={login_csrf}");
        let form = [
            ("csrf", login_csrf.as_str()),
            ("name", name),
            ("password", PASSWORD),
        ];
        let response = client.send("POST", "/console/login", Some(&form)).await;
        let session = set_cookie_value(&response, "gg_console").expect("logged in");
        client.cookie = format!("gg_console={session}");
        let page = client.get("/console/accounts").await;
        client.csrf = hidden(&page.body, "csrf").expect("the logout form's token");
        client
    }

    async fn send(&self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Response {
        let body = form
            .map(|fields| {
                fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", api::percent_encode(v)))
                    .collect::<Vec<_>>()
                    .join("&")
            })
            .unwrap_or_default();
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.router.clone().oneshot(request).await.unwrap()
    }

    async fn answer(response: Response) -> Answer {
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .unwrap();
        Answer {
            status,
            location,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        Self::answer(self.send("GET", path, None).await).await
    }

    /// Posts `fields` and the session's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut form = vec![("csrf", self.csrf.as_str())];
        form.extend_from_slice(fields);
        Self::answer(self.send("POST", path, Some(&form)).await).await
    }
}

/// Opens account `id` with a name, phone and meter, on gateway `gw-a`.
pub(in crate::console) fn household(
    t: &TestCentral,
    id: &str,
    name: &str,
    phone: &str,
    serial: &str,
) {
    let account = Account {
        id: id.into(),
        consumer_name: name.into(),
        category: Category::Domestic,
        phone: Some(phone.into()),
        gateway: Some("gw-a".into()),
        language: Default::default(),
        created_at: Utc::now(),
    };
    let meter = Meter {
        serial: serial.into(),
        account: id.into(),
        installed_at: t.central.now() - Duration::days(60),
        initial_register_wh: None,
        keys: None,
        dlms: None,
        relay_state: "connected".into(),
    };
    t.tx(move |tx| {
        accounts::put_account(tx, &account, false)?;
        accounts::put_meter(tx, &meter, false)
    })
    .unwrap();
}

impl Client {
    /// Posts the payment form of account ACC-1.
    async fn pay(&self, nonce: &str, amount: &str, reference: &str) -> Answer {
        let form = [
            ("nonce", nonce),
            ("amount", amount),
            ("reference", reference),
        ];
        self.post("/console/accounts/ACC-1/payments", &form).await
    }
}

/// The one integer `sql` selects.
pub(in crate::console) fn count(t: &TestCentral, sql: &'static str) -> i64 {
    t.tx(move |tx| Ok(tx.query_int(sql, &[])?)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_an_account_by_id_name_phone_and_meter_serial() {
    for t in backends() {
        household(&t, "ACC-1", "Sunita Devi", "+919812345678", "MTR-0001");
        household(&t, "ACC-2", "Ramesh Kumar", "+919800000002", "MTR-0002");
        household(&t, "ACC_3", "Kamla 100% Bai", "+919800000003", "MTR-0003");
        let find = |q: &'static str| t.tx(move |tx| search(tx, q, 10)).unwrap();
        assert_eq!(find("ACC-2"), ["ACC-2"], "by id");
        assert_eq!(find("sunita"), ["ACC-1"], "by part of the name, any case");
        assert_eq!(find("RAMESH KU"), ["ACC-2"]);
        assert_eq!(find("+919812345678"), ["ACC-1"], "by phone");
        assert_eq!(
            find("9812345678"),
            ["ACC-1"],
            "by the phone without its prefix"
        );
        assert_eq!(find("MTR-0003"), ["ACC_3"], "by meter serial");
        assert_eq!(
            find("100%"),
            ["ACC_3"],
            "a % is a character, not a wildcard"
        );
        assert!(find("_").is_empty(), "nor is _");
        assert!(find("nobody").is_empty());

        let viewer = Client::login(&t, "vikram", StaffRole::Viewer).await;
        let page = viewer.get("/console/accounts?q=devi").await;
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains(r#"href="/console/accounts/ACC-1""#),
            "{}",
            page.body
        );
        assert!(page.body.contains("Sunita Devi") && page.body.contains("₹0.00"));
        assert!(!page.body.contains("Ramesh"));
    }
}

#[test]
fn a_missing_run_of_intervals_is_one_gap_row_per_meter() {
    let at = |minutes: i64| DateTime::UNIX_EPOCH + Duration::minutes(minutes);
    let reading = |meter: &str, minutes: i64| Reading {
        meter: meter.into(),
        at: at(minutes),
        register_wh: minutes,
    };
    // Newest first; M1 misses 00:30 to 01:00, M2 (a second meter) reads every interval.
    let readings = [
        reading("M1", 75),
        reading("M2", 75),
        reading("M2", 60),
        reading("M2", 45),
        reading("M1", 15),
        reading("M1", 0),
    ];
    let rows = with_gaps(&readings, 5);
    let gaps: Vec<_> = rows
        .iter()
        .filter(|r| matches!(r, ReadingRow::Gap { .. }))
        .collect();
    assert_eq!(
        gaps,
        [&ReadingRow::Gap {
            meter: "M1".into(),
            from: at(30),
            to: at(60)
        }]
    );
    assert_eq!(rows.len(), 6, "five readings and the gap");
    assert!(
        matches!(&rows[1], ReadingRow::Gap { .. }),
        "right after the newer reading"
    );
    // The page's last reading looks at the next page's for its gap.
    assert_eq!(with_gaps(&readings[..2], 2).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_page_shows_a_readings_gap_the_load_and_no_payment_form_to_a_viewer() {
    for t in backends() {
        household(&t, "ACC-1", "Sunita Devi", "+919812345678", "MTR-0001");
        let now = t.central.now();
        let base = now - Duration::seconds(now.timestamp().rem_euclid(INTERVAL_SECS));
        // Every interval of the last 6 hours but 2 hours ago (two missing intervals).
        let times: Vec<i64> = (0..24)
            .map(|i| ts(base - Duration::minutes(15 * i)))
            .filter(|at| {
                let hole = ts(base - Duration::hours(2));
                *at != hole && *at != hole - INTERVAL_SECS
            })
            .collect();
        t.tx(move |tx| {
            for (i, at) in times.iter().rev().enumerate() {
                tx.execute(
                    "INSERT INTO readings (meter, at, register_wh, charge_paise) VALUES ('MTR-0001', $1, $2, 0)",
                    &[(*at).into(), (10_000 + 250 * i as i64).into()],
                )?;
            }
            Ok(())
        })
        .unwrap();
        let viewer = Client::login(&t, "vikram", StaffRole::Viewer).await;
        let page = viewer.get("/console/accounts/ACC-1?range=week").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let from = when(base - Duration::hours(2) - Duration::minutes(15));
        let to = when(base - Duration::hours(2));
        let gap = format!("No readings from {from} to {to} (MTR-0001)");
        assert!(page.body.contains(&gap), "{gap} in {}", page.body);
        assert_eq!(page.body.matches("No readings from").count(), 1);
        assert!(page.body.contains("<svg") && page.body.contains("Sunita Devi"));
        assert!(
            !page.body.contains("Take a payment"),
            "a viewer takes no payment"
        );
        assert!(
            !page.body.contains("bill.html"),
            "no bill link until its page exists"
        );
        let month = viewer.get("/console/accounts/ACC-1?range=month").await;
        assert!(month.body.contains("<strong>Month</strong>"));
        let missing = viewer.get("/console/accounts/NOBODY").await;
        assert_eq!(missing.status, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_posted_twice_is_taken_once_and_the_receipt_names_the_cashier() {
    for t in backends() {
        household(&t, "ACC-1", "Sunita Devi", "+919812345678", "MTR-0001");
        let cashier = Client::login(&t, "kiran", StaffRole::Cashier).await;
        let page = cashier.get("/console/accounts/ACC-1").await;
        assert!(page.body.contains("Take a payment"));
        let nonce = hidden(&page.body, "nonce").expect("the form's nonce");
        let first = cashier.pay(&nonce, "250.50", "RCPT 17").await;
        assert_eq!(first.status, 303, "{}", first.body);
        let receipt_at = first.location.clone().unwrap();
        assert!(receipt_at.starts_with("/console/accounts/ACC-1/receipts/"));
        let again = cashier.pay(&nonce, "250.50", "RCPT 17").await;
        assert_eq!(again.status, 303);
        assert_eq!(again.location.unwrap(), format!("{receipt_at}?again=1"));
        assert_eq!(
            count(
                &t,
                "SELECT COUNT(*) FROM ledger_events WHERE kind = 'recharge'"
            ),
            1
        );
        let audited = count(
            &t,
            "SELECT COUNT(*) FROM api_audit WHERE token = 'staff:kiran' AND path = '/console/accounts/ACC-1/payments'",
        );
        assert_eq!(
            audited, 2,
            "each committed post is audited with the cashier's name"
        );

        let receipt = cashier.get(&receipt_at).await;
        assert_eq!(receipt.status, 200);
        for text in ["₹250.50", "RCPT 17", "kiran", "Sunita Devi", "gw-a"] {
            assert!(receipt.body.contains(text), "{text} in {}", receipt.body);
        }
        let account = cashier.get("/console/accounts/ACC-1").await;
        assert_eq!(
            account.body.matches("RCPT 17").count(),
            1,
            "one recharge listed"
        );
        assert_ne!(
            hidden(&account.body, "nonce").unwrap(),
            nonce,
            "a new form, a new key"
        );

        // A bad amount charges nothing and says what to write.
        let nonce = hidden(&account.body, "nonce").unwrap();
        let bad = cashier.pay(&nonce, "-5", "").await;
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("Give the amount in rupees"));
        // The same form reused for another amount is refused.
        let reused = cashier.pay("0123456789abcdef0123", "10", "").await;
        assert_eq!(reused.status, 303);
        let reused = cashier.pay("0123456789abcdef0123", "11", "").await;
        assert_eq!(reused.status, 409);
        assert_eq!(
            count(
                &t,
                "SELECT COUNT(*) FROM ledger_events WHERE kind = 'recharge'"
            ),
            2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_payment_is_refused_and_nothing_is_written() {
    for t in backends() {
        household(&t, "ACC-1", "Sunita Devi", "+919812345678", "MTR-0001");
        let viewer = Client::login(&t, "vikram", StaffRole::Viewer).await;
        let audit_before = count(&t, "SELECT COUNT(*) FROM api_audit");
        let refused = viewer.pay("0123456789abcdef0123", "100", "").await;
        assert_eq!(refused.status, 403);
        assert!(refused.body.contains("Your role does not allow this"));
        let bad_csrf = Client {
            csrf: "not-the-token".into(),
            ..Client::login(&t, "kiran", StaffRole::Cashier).await
        };
        let forged = bad_csrf.pay("0123456789abcdef0123", "100", "").await;
        assert_eq!(forged.status, 403, "a form without the session's token");
        assert_eq!(count(&t, "SELECT COUNT(*) FROM ledger_events"), 0);
        assert_eq!(count(&t, "SELECT COUNT(*) FROM recharge_requests"), 0);
        assert_eq!(
            count(&t, "SELECT COUNT(*) FROM api_audit WHERE method = 'POST'"),
            0
        );
        // The two logins were audited (and nothing else).
        assert_eq!(
            count(&t, "SELECT COUNT(*) FROM api_audit"),
            audit_before + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_page_shows_the_totals_of_the_statement() {
    for t in backends() {
        household(&t, "ACC-1", "Sunita Devi", "+919812345678", "MTR-0001");
        let now = t.central.now();
        t.tx(move |tx| {
            for (key, paise) in [("k1", 50_000), ("k2", 12_345)] {
                let request = RechargeRequest {
                    idempotency_key: key.into(),
                    account: "ACC-1".into(),
                    amount_paise: paise,
                    reference: None,
                };
                accounts::recharge(tx, &request, now)?;
            }
            Ok(())
        })
        .unwrap();
        let month = Month::containing(now);
        let expected = t
            .tx(move |tx| export::statement(tx, "ACC-1", month))
            .unwrap();
        let viewer = Client::login(&t, "vikram", StaffRole::Viewer).await;
        let page = viewer
            .get(&format!("/console/accounts/ACC-1/statement?month={month}"))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(expected.closing_paise, 62_345);
        for figure in [
            inr(expected.opening_paise),
            inr(expected.closing_paise),
            inr(50_000),
            inr(12_345),
        ] {
            assert!(page.body.contains(&figure), "{figure} in {}", page.body);
        }
        assert_eq!(page.body.matches("Recharge").count(), expected.events.len());
        let bad = viewer
            .get("/console/accounts/ACC-1/statement?month=April")
            .await;
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("YYYY-MM"));
    }
}
