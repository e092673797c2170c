//! The guardrail routes through the router, with scoped tokens: statuses, bodies and the audit.
use super::*;
use crate::testing::{central_with_tokens, decision, priority_upload, TestCentral};
use axum::body::Body;
use chrono::TimeZone;
use gramgrid_net::tls::PeerGateway;
use gramgrid_proto::wire::{self, DownlinkEvent, UplinkEvent};
use serde_json::{json, Value};
use tower::ServiceExt;

const OFFICE: &str = "office-token-0123456789";
const DASHBOARD: &str = "dashboard-token-0123456789";

struct Api {
    t: TestCentral,
    router: Router,
}

fn api() -> Api {
    let t = central_with_tokens(vec![
        ApiToken::new("office", OFFICE, Scope::Admin),
        ApiToken::new("dashboard", DASHBOARD, Scope::Read),
    ]);
    let router = crate::server::router(Arc::clone(&t.central));
    Api { t, router }
}

impl Api {
    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn office(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(OFFICE, method, path, body).await
    }

    /// Sends `events` as gateway `gateway`'s priority records from `first_seq` on.
    async fn exchange(&self, gateway: &str, first_seq: u64, events: Vec<UplinkEvent>) {
        let request = priority_upload(first_seq, events, Utc::now());
        let mut http = axum::http::Request::builder()
            .method("POST")
            .uri(wire::EXCHANGE_PATH)
            .header("content-type", wire::CONTENT_TYPE)
            .body(Body::from(wire::encode(&request).unwrap()))
            .unwrap();
        http.extensions_mut()
            .insert(PeerGateway(Some(gateway.to_owned())));
        let response = self.router.clone().oneshot(http).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

async fn customers(a: &Api, gateway: &str, ids: &[&str], paise: i64) {
    for id in ids {
        let account =
            json!({"id": id, "consumer_name": "Asha", "category": "domestic", "gateway": gateway});
        assert_eq!(
            a.office("POST", "/api/v1/accounts", Some(account)).await.0,
            201
        );
        if paise > 0 {
            let recharge =
                json!({"idempotency_key": format!("r-{id}"), "account": id, "amount_paise": paise});
            assert_eq!(
                a.office("POST", "/api/v1/recharges", Some(recharge))
                    .await
                    .0,
                201
            );
        }
    }
}

#[tokio::test]
async fn protection_and_arrears_are_admin_writes_shown_with_the_balance() {
    let a = api();
    customers(&a, "gw-a", &["A1"], 0).await;
    let reason = json!({"reason": "life support"});
    let (status, answer) = a
        .call(
            DASHBOARD,
            "PUT",
            "/api/v1/accounts/A1/protection",
            Some(reason.clone()),
        )
        .await;
    assert_eq!((status, &answer["needed_scope"]), (403, &json!("admin")));
    let (status, answer) = a
        .office(
            "PUT",
            "/api/v1/accounts/A1/protection",
            Some(reason.clone()),
        )
        .await;
    assert_eq!(
        (status, &answer["protected"]),
        (200, &json!("life support")),
        "{answer}"
    );
    assert_eq!(
        a.office("PUT", "/api/v1/accounts/A9/protection", Some(reason))
            .await
            .0,
        404
    );
    assert_eq!(
        a.office(
            "PUT",
            "/api/v1/accounts/A1/protection",
            Some(json!({"reason": ""}))
        )
        .await
        .0,
        400
    );
    let (_, listed) = a.call(DASHBOARD, "GET", "/api/v1/accounts", None).await;
    assert_eq!(listed[0]["protected"], "life support", "{listed}");
    let arrears = json!({"id": "postpaid-A1", "amount_paise": 120_000, "note": "bill 2026-10"});
    let path = "/api/v1/accounts/A1/arrears";
    let (status, first) = a.office("POST", path, Some(arrears.clone())).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = a.office("POST", path, Some(arrears)).await;
    assert_eq!((status, &again), (200, &first));
    let other = json!({"id": "postpaid-A1", "amount_paise": 100_000});
    assert_eq!(a.office("POST", path, Some(other)).await.0, 409);
    let recharge = json!({"idempotency_key": "r-1", "account": "A1", "amount_paise": 40_000});
    assert_eq!(
        a.office("POST", "/api/v1/recharges", Some(recharge))
            .await
            .0,
        201
    );
    let (_, balance) = a
        .call(DASHBOARD, "GET", "/api/v1/accounts/A1/balance", None)
        .await;
    // 25 % of the 400 INR recharge went to the arrears.
    assert_eq!(balance["balance_paise"], 30_000, "{balance}");
    assert_eq!(
        balance["arrears"],
        json!({"opening_paise": 120_000, "recovered_paise": 10_000, "outstanding_paise": 110_000})
    );
    assert_eq!(balance["protected"], "life support");
    let (status, answer) = a
        .office("DELETE", "/api/v1/accounts/A1/protection", None)
        .await;
    assert_eq!(
        (status, &answer["protected"]),
        (200, &Value::Null),
        "{answer}"
    );
}

#[tokio::test]
async fn a_policy_that_would_cut_too_many_is_answered_409_and_published_on_release() {
    let a = api();
    customers(&a, "gw-a", &["A1", "A2", "A3", "A4"], 10_000).await;
    let policy = json!({"version": 1, "policy": {"disconnect_threshold_paise": 10_000}});
    let (status, held) = a.office("PUT", "/api/v1/policy", Some(policy)).await;
    assert_eq!(status, 409, "{held}");
    assert_eq!(
        held["gateways"],
        json!([{"gateway": "gw-a", "accounts": 4, "newly_cut": 4, "limit": 3}])
    );
    assert!(
        held["error"]
            .as_str()
            .unwrap()
            .contains("was not published"),
        "{held}"
    );
    let id = held["hold_id"].as_str().unwrap().to_owned();
    let (status, listed) = a.call(DASHBOARD, "GET", "/api/v1/policy/holds", None).await;
    assert_eq!((status, &listed[0]["id"]), (200, &json!(id)), "{listed}");
    assert_eq!(listed[0]["held_by"], "office");
    let release = format!("/api/v1/policy/holds/{id}/release");
    let reason = json!({"reason": "threshold agreed with the village committee"});
    assert_eq!(
        a.call(DASHBOARD, "POST", &release, Some(reason.clone()))
            .await
            .0,
        403
    );
    let (status, released) = a.office("POST", &release, Some(reason.clone())).await;
    assert_eq!(status, 200, "{released}");
    assert_eq!(released["released"]["by"], "office");
    assert_eq!(
        a.office("POST", &release, Some(reason.clone())).await.0,
        409
    );
    let unknown = "/api/v1/policy/holds/nope/release";
    assert_eq!(a.office("POST", unknown, Some(reason)).await.0, 404);
    // Published: the next version must be higher.
    let same = json!({"version": 1, "policy": {}});
    assert_eq!(a.office("PUT", "/api/v1/policy", Some(same)).await.0, 409);
    // The held publish and its release are both in the audit, by token name.
    let (_, audit) = a.office("GET", "/api/v1/audit", None).await;
    let writes: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().into(),
                r["path"].as_str().unwrap().into(),
            )
        })
        .filter(|(_, path): &(String, String)| path.contains("policy"))
        .collect();
    assert_eq!(
        writes,
        [
            ("PUT".to_owned(), "/api/v1/policy".to_owned()),
            ("POST".to_owned(), release)
        ]
    );
}

#[tokio::test]
async fn a_breaker_hold_is_listed_released_once_and_decisions_read_in_words() {
    let a = api();
    customers(&a, "gw-a", &["A1", "A2"], 0).await;
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap();
    let record = decision("A1", at, -2_500);
    a.exchange(
        "gw-a",
        1,
        vec![
            UplinkEvent::Decision {
                id: "cmd-1".into(),
                account: "A1".into(),
                at,
                record: serde_json::to_string(&record).unwrap(),
            },
            UplinkEvent::BreakerHeld {
                id: "hold-1".into(),
                at,
                accounts: vec!["A1".into(), "A2".into()],
                reasons: vec!["a new policy took effect".into()],
            },
        ],
    )
    .await;
    let (status, holds) = a
        .call(DASHBOARD, "GET", "/api/v1/gateways/gw-a/holds", None)
        .await;
    assert_eq!(status, 200, "{holds}");
    assert_eq!(holds[0]["accounts"], json!(["A1", "A2"]));
    assert_eq!(holds[0]["released"], Value::Null);
    assert_eq!(
        a.office("GET", "/api/v1/gateways/gw-z/holds", None).await.0,
        404
    );
    let (_, flags) = a.office("GET", "/api/v1/flags", None).await;
    assert_eq!(flags[0]["kind"], "breaker_held", "{flags}");
    assert_eq!(flags[0]["urgent"], true);
    let reason = json!({"reason": "checked every meter on the list"});
    let path = "/api/v1/gateways/gw-a/holds/hold-1/release";
    let unknown = "/api/v1/gateways/gw-a/holds/hold-2/release";
    assert_eq!(a.office("POST", unknown, Some(reason.clone())).await.0, 404);
    let (status, released) = a.office("POST", path, Some(reason.clone())).await;
    assert_eq!(status, 200, "{released}");
    assert_eq!(released["released"]["place"], "central");
    assert_eq!(a.office("POST", path, Some(reason)).await.0, 409);
    let sent = a.t.downlink("gw-a");
    assert!(sent.iter().any(|e| matches!(
        e,
        DownlinkEvent::BreakerRelease { hold_id, by, .. } if hold_id == "hold-1" && by == "office"
    )));
    let (status, decisions) = a
        .call(
            DASHBOARD,
            "GET",
            "/api/v1/accounts/A1/decisions?at=2026-11-30T06:00:00Z",
            None,
        )
        .await;
    assert_eq!(status, 200, "{decisions}");
    let one = &decisions[0];
    assert_eq!(
        (&one["id"], &one["gateway"], &one["action"]),
        (&json!("cmd-1"), &json!("gw-a"), &json!("disconnect"))
    );
    assert_eq!(one["replays"], true);
    assert!(
        one["words"][0]
            .as_str()
            .unwrap()
            .contains("disconnect command issued"),
        "{one}"
    );
    assert!(one["rule"].as_str().unwrap().contains("threshold"), "{one}");
    let (_, none) = a
        .call(
            DASHBOARD,
            "GET",
            "/api/v1/accounts/A1/decisions?at=2026-11-01T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(none, json!([]));
    assert_eq!(
        a.call(
            DASHBOARD,
            "GET",
            "/api/v1/accounts/A1/decisions?at=yesterday",
            None
        )
        .await
        .0,
        400
    );
}
