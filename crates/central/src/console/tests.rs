//! The console through its router, as a browser uses it (cookies, forms, CSRF tokens): logins and
//! lock-outs, roles, the gateway, flag, report and staff pages, on SQLite and PostgreSQL.
use crate::staff::{set_staff, StaffChange, StaffRole};
use crate::testing::{backends, TestCentral};
use axum::body::Body;
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt;

/// A browser's view of the console: its cookies and the last page it saw.
pub(crate) struct Visitor {
    router: axum::Router,
    cookies: HashMap<String, String>,
    /// The body of the last page.
    pub page: String,
}

/// What a request answered.
pub(crate) struct Answer {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
}

impl Visitor {
    /// A visitor of central's `router` (visitors of one router share its sessions).
    pub(crate) fn new(router: &axum::Router) -> Visitor {
        Visitor {
            router: router.clone(),
            cookies: HashMap::new(),
            page: String::new(),
        }
    }

    async fn send(&mut self, method: &str, path: &str, form: Option<String>) -> Answer {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form.unwrap_or_default()))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.into(), value.into());
            }
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&bytes).into_owned();
        self.page = body.clone();
        Answer {
            status,
            body,
            location,
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, None).await
    }

    /// Posts `fields` (the last page's CSRF token added unless `fields` names one).
    pub(crate) async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let csrf = self.csrf();
        let mut pairs: Vec<(&str, &str)> = fields.to_vec();
        if !fields.iter().any(|(k, _)| *k == "csrf") {
            pairs.push(("csrf", &csrf));
        }
        let body = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.send("POST", path, Some(body)).await
    }

    /// The CSRF token in the last page's forms.
    pub(crate) fn csrf(&self) -> String {
        self.page
            .split(r#"name="csrf" value=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_string()
    }

    /// Logs in through the login form; the answer to the form's post.
    pub(crate) async fn login(&mut self, name: &str, password: &str) -> Answer {
        self.get("/console/login").await;
        self.post("/console/login", &[("name", name), ("password", password)])
            .await
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Staff member `name` with `role`, password `<name>-password-2026`.
pub(crate) fn staff(t: &TestCentral, name: &str, role: StaffRole) {
    let change = StaffChange {
        full_name: format!("{name} of the office"),
        role,
        password: Some(format!("{name}-password-2026")),
        active: None,
    };
    let (name, now) = (name.to_string(), t.central.now());
    t.tx(move |tx| set_staff(tx, &name, &change, now)).unwrap();
}

fn audit_rows(t: &TestCentral, who: &str) -> Vec<(String, String)> {
    let who = who.to_string();
    t.tx(move |tx| {
        tx.query(
            "SELECT method, path FROM api_audit WHERE token = $1 ORDER BY id",
            &[who.as_str().into()],
        )?
        .iter()
        .map(|r| Ok((r.text(0)?, r.text(1)?)))
        .collect::<crate::Result<Vec<_>>>()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_needs_the_right_password_and_the_form_token_and_locks_after_five_failures() {
    for t in backends() {
        let router = crate::server::router(Arc::clone(&t.central));
        staff(&t, "meera", StaffRole::Cashier);
        let mut browser = Visitor::new(&router);
        let first = browser.get("/console/gateways").await;
        assert_eq!(
            first.location.as_deref(),
            Some("/console/login"),
            "not logged in"
        );

        // A form not from the login page is refused.
        let forged = browser
            .post(
                "/console/login",
                &[
                    ("csrf", "0000"),
                    ("name", "meera"),
                    ("password", "meera-password-2026"),
                ],
            )
            .await;
        assert_eq!(forged.status, 403);

        let wrong_name = browser.login("nobody", "meera-password-2026").await;
        let wrong_password = browser.login("meera", "not-her-password").await;
        assert_eq!((wrong_name.status, wrong_password.status), (401, 401));
        assert_eq!(
            wrong_name.body.contains("Wrong name or password"),
            wrong_password.body.contains("Wrong name or password"),
            "the same answer for both"
        );
        for _ in 0..4 {
            browser.login("meera", "still-wrong").await;
        }
        let locked = browser.login("meera", "meera-password-2026").await;
        assert_eq!(
            locked.status, 429,
            "locked after five failures: {}",
            locked.body
        );
        assert!(locked.body.contains("locked until"));
        let audit = audit_rows(&t, "staff:meera");
        assert_eq!(audit.iter().filter(|(m, _)| m == "LOGIN-FAILED").count(), 5);
        assert_eq!(audit.last().map(|(m, _)| m.as_str()), Some("LOGIN-LOCKED"));

        // A new password from an admin unlocks; then the login works and lands on the gateways.
        staff(&t, "meera", StaffRole::Cashier);
        let ok = browser.login("meera", "meera-password-2026").await;
        assert_eq!(ok.location.as_deref(), Some("/console/"));
        let home = browser.get("/console/").await;
        assert_eq!(home.location.as_deref(), Some("/console/gateways"));
        let page = browser.get("/console/gateways").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("meera of the office"));
        assert!(
            page.body.contains("/console/vouchers") && !page.body.contains("/console/staff"),
            "a cashier's menu"
        );

        // Logging out ends the session.
        browser.post("/console/logout", &[]).await;
        let after = browser.get("/console/gateways").await;
        assert_eq!(after.location.as_deref(), Some("/console/login"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_engineer_or_admin_resolves_a_flag_and_the_resolution_names_them() {
    for t in backends() {
        let router = crate::server::router(Arc::clone(&t.central));
        staff(&t, "ravi", StaffRole::Viewer);
        staff(&t, "kiran", StaffRole::Engineer);
        let at = t.central.now();
        t.tx(move |tx| {
            crate::flags::flag(
                tx,
                "dbl-1",
                "double_redemption",
                Some("gw-a"),
                Some("A1"),
                at,
                "voucher redeemed at two gateways",
            )
        })
        .unwrap();

        let mut viewer = Visitor::new(&router);
        viewer.login("ravi", "ravi-password-2026").await;
        let page = viewer.get("/console/flags").await;
        assert!(page.body.contains("voucher redeemed at two gateways"));
        assert!(
            !page.body.contains("/console/flags/resolve"),
            "no form for a viewer"
        );
        let refused = viewer
            .post(
                "/console/flags/resolve",
                &[("id", "dbl-1"), ("how", "nothing")],
            )
            .await;
        assert_eq!(refused.status, 403);
        let open = t
            .tx(|tx| crate::flags::list(tx, crate::flags::Which::Open))
            .unwrap();
        assert_eq!(open.len(), 1, "nothing changed");

        let mut engineer = Visitor::new(&router);
        engineer.login("kiran", "kiran-password-2026").await;
        engineer.get("/console/flags").await;
        let done = engineer
            .post(
                "/console/flags/resolve",
                &[
                    ("id", "dbl-1"),
                    ("how", "second credit reversed at the counter"),
                ],
            )
            .await;
        assert_eq!(done.status, 200);
        assert!(done.body.contains("Resolved: dbl-1"), "{}", done.body);
        let resolved = engineer.get("/console/flags?show=resolved").await;
        assert!(resolved
            .body
            .contains("second credit reversed at the counter"));
        assert!(resolved.body.contains("Resolved by kiran"));
        assert_eq!(
            audit_rows(&t, "staff:kiran").last(),
            Some(&("POST".to_string(), "/console/flags/resolve".to_string()))
        );
        let csv = engineer.get("/console/reports/flags.csv").await;
        assert!(csv.body.starts_with("Flag,Kind,Urgent"));
        assert!(csv.body.contains("staff:kiran"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_manages_staff_and_a_disabled_member_is_logged_out() {
    for t in backends() {
        let router = crate::server::router(Arc::clone(&t.central));
        staff(&t, "admin1", StaffRole::Admin);
        staff(&t, "meera", StaffRole::Cashier);
        let mut cashier = Visitor::new(&router);
        cashier.login("meera", "meera-password-2026").await;
        let refused = cashier.get("/console/staff").await;
        assert_eq!(refused.status, 403);
        assert!(refused.body.contains("Your role does not allow this"));
        let posted = cashier
            .post(
                "/console/staff",
                &[("name", "meera"), ("full_name", "Meera"), ("role", "admin")],
            )
            .await;
        assert_eq!(posted.status, 403, "a cashier cannot make herself admin");

        let mut admin = Visitor::new(&router);
        admin.login("admin1", "admin1-password-2026").await;
        admin.get("/console/staff").await;
        let created = admin
            .post(
                "/console/staff",
                &[
                    ("name", "sunil"),
                    ("full_name", "Sunil Netam"),
                    ("role", "viewer"),
                    ("password", "sunil-reads-2026"),
                ],
            )
            .await;
        assert!(created.body.contains("Created: sunil"), "{}", created.body);
        let short = admin
            .post(
                "/console/staff",
                &[
                    ("name", "anil"),
                    ("full_name", "Anil"),
                    ("role", "viewer"),
                    ("password", "short"),
                ],
            )
            .await;
        assert!(short.body.contains("too short"), "{}", short.body);
        admin
            .post(
                "/console/staff",
                &[
                    ("name", "meera"),
                    ("full_name", "Meera Sahu"),
                    ("role", "cashier"),
                    ("disabled", "1"),
                ],
            )
            .await;
        let gone = cashier.get("/console/gateways").await;
        assert_eq!(
            gone.location.as_deref(),
            Some("/console/login"),
            "her session ended"
        );
        let again = cashier.login("meera", "meera-password-2026").await;
        assert_eq!(again.status, 401);
        let mut sunil = Visitor::new(&router);
        assert_eq!(
            sunil
                .login("sunil", "sunil-reads-2026")
                .await
                .location
                .as_deref(),
            Some("/console/")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_list_and_reports_show_what_central_knows() {
    for t in backends() {
        let router = crate::server::router(Arc::clone(&t.central));
        staff(&t, "ravi", StaffRole::Viewer);
        let manifest = crate::testing::manifest(&[("M-1", 1, "consumer"), ("M-2", 2, "consumer")]);
        t.import(&manifest, "gw-a", t.central.now()).unwrap();
        let (a1, a2) = (
            crate::import::account_of("M-1"),
            crate::import::account_of("M-2"),
        );
        let mut viewer = Visitor::new(&router);
        viewer.login("ravi", "ravi-password-2026").await;
        let list = viewer.get("/console/gateways").await;
        assert!(
            list.body.contains(r#"href="/console/gateways/gw-a""#),
            "{}",
            list.body
        );
        let page = viewer.get("/console/gateways/gw-a").await;
        assert_eq!(page.status, 200);
        assert!(
            page.body
                .contains(&format!(r#"href="/console/accounts/{a1}""#))
                && page.body.contains(&a2)
        );
        assert!(page.body.contains("M-1") && page.body.contains("M-2"));
        assert_eq!(viewer.get("/console/gateways/nope").await.status, 404);
        for report in ["collection", "consumption", "disconnected", "silent"] {
            let html = viewer.get(&format!("/console/reports/{report}")).await;
            assert_eq!(html.status, 200, "{report}");
            let csv = viewer.get(&format!("/console/reports/{report}.csv")).await;
            assert_eq!(csv.status, 200, "{report}");
        }
        let silent = viewer.get("/console/reports/silent.csv").await;
        assert!(
            silent.body.contains(&format!("M-1,{a1},gw-a,never")),
            "{}",
            silent.body
        );
        assert_eq!(viewer.get("/console/reports/nope").await.status, 404);
        assert_eq!(
            viewer
                .get("/console/reports/consumption?month=11-2026")
                .await
                .status,
            400
        );
        // Hindi, by the language switch.
        viewer.get("/console/lang/hi?back=/console/gateways").await;
        let hindi = viewer.get("/console/gateways").await;
        assert!(hindi.body.contains("अंतिम सिंक"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_tables_download_as_csv() {
    for t in backends() {
        let router = crate::server::router(Arc::clone(&t.central));
        staff(&t, "ravi", StaffRole::Viewer);
        let manifest = crate::testing::manifest(&[("M-1", 1, "consumer")]);
        let now = t.central.now();
        t.import(&manifest, "gw-a", now).unwrap();
        let account = crate::import::account_of("M-1");
        let request = crate::accounts::RechargeRequest {
            idempotency_key: "counter-7".into(),
            account: account.clone(),
            amount_paise: 25_050,
            reference: Some("R, 7".into()),
        };
        t.tx(move |tx| crate::accounts::recharge(tx, &request, now))
            .unwrap();
        let mut viewer = Visitor::new(&router);
        viewer.login("ravi", "ravi-password-2026").await;
        let found = viewer.get("/console/accounts.csv?q=M-1").await;
        assert_eq!(found.status, 200);
        assert!(
            found
                .body
                .starts_with("Account,Name,Category,Gateway,Phone,Balance (INR)\r\n"),
            "{}",
            found.body
        );
        assert!(
            found.body.contains(&format!("{account},")),
            "{}",
            found.body
        );
        let paid = viewer
            .get(&format!("/console/accounts/{account}/recharges.csv"))
            .await;
        assert!(
            paid.body.contains(",250.50,\"R, 7\",API\r\n"),
            "{}",
            paid.body
        );
        let read = viewer
            .get(&format!("/console/accounts/{account}/readings.csv"))
            .await;
        assert_eq!(read.body, "Meter,At (UTC),Register (Wh),Gap\r\n");
        assert_eq!(
            viewer
                .get("/console/accounts/nobody/recharges.csv")
                .await
                .status,
            404
        );
    }
}
