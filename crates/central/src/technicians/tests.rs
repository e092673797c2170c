//! Technician accounts fan out to every gateway (and to one enrolled later), hashes verify and
//! passwords are stored nowhere, bad input is refused, and actions are stored once; through the
//! exchange and the API too, on SQLite and (when tests/run provides it) PostgreSQL.
use super::*;
use crate::downlink::ensure_gateway;
use crate::testing::{
    central, central_configured, central_with_tokens, fresh_postgres, priority_upload, TestCentral,
};
use crate::{ApiToken, Scope};
use argon2::password_hash::PasswordHash;
use chrono::TimeZone;
use gramgrid_core::tariff::TariffBook;
use gramgrid_proto::wire::{UplinkEvent, UploadRequest, UploadResponse};

const PASSWORD: &str = "kothi-7-transformer";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap()
}

fn change(role: &str, password: Option<&str>, active: Option<bool>) -> TechnicianChange {
    TechnicianChange {
        full_name: "Asha Verma".into(),
        role: role.into(),
        password: password.map(str::to_owned),
        active,
    }
}

fn set(t: &TestCentral, name: &str, change: TechnicianChange) -> Result<Saved> {
    let name = name.to_owned();
    t.tx(move |tx| set_technician(tx, &name, &change, now()))
}

fn gateways(t: &TestCentral, ids: &[&str]) {
    let ids: Vec<String> = ids.iter().map(|g| (*g).to_owned()).collect();
    t.tx(move |tx| ids.iter().try_for_each(|g| ensure_gateway(tx, g)))
        .unwrap();
}

/// The technician records of `gateway`'s downlink log, as (name, role, active, hash), in order.
fn sent(t: &TestCentral, gateway: &str) -> Vec<(String, String, bool, String)> {
    t.downlink(gateway)
        .into_iter()
        .filter_map(|event| match event {
            DownlinkEvent::Technician {
                name,
                role,
                active,
                password_hash,
                ..
            } => Some((name, role, active, password_hash)),
            _ => None,
        })
        .collect()
}

/// Applies `events` as `gateway`'s priority records from `first_seq`, in `protocol`.
fn exchange(
    t: &TestCentral,
    gateway: &str,
    protocol: u16,
    first_seq: u64,
    events: Vec<UplinkEvent>,
) -> UploadResponse {
    let mut request = priority_upload(first_seq, events, now());
    request.protocol = protocol;
    t.upload(gateway, request, now())
}

fn action(id: &str, detail: &str) -> UplinkEvent {
    UplinkEvent::TechnicianAction {
        id: id.into(),
        technician: "asha.v".into(),
        action: "override".into(),
        subject: Some("ACC42".into()),
        detail: detail.into(),
        reason: Some("medical equipment in the house".into()),
        at: now() - chrono::Duration::minutes(5),
    }
}

fn actions(t: &TestCentral) -> Vec<TechnicianAction> {
    t.tx(|tx| technician_actions(tx, None, None, 100)).unwrap()
}

fn fans_out_to_every_gateway(t: &TestCentral) {
    gateways(t, &["gw-a", "gw-b"]);
    let saved = set(t, "asha.v", change("technician", Some(PASSWORD), None)).unwrap();
    assert!(saved.created);
    assert_eq!(saved.gateways, 2);
    assert!(saved.technician.active, "a new technician is active");
    let first_hash = sent(t, "gw-a")[0].3.clone();

    // A change without a password keeps the hash; disabling is sent as well.
    let saved = set(t, "asha.v", change("supervisor", None, Some(false))).unwrap();
    assert!(!saved.created);
    assert_eq!(
        (saved.technician.role.as_str(), saved.technician.active),
        ("supervisor", false)
    );
    // Neither flag: stays disabled.
    set(t, "asha.v", change("supervisor", None, None)).unwrap();
    for gateway in ["gw-a", "gw-b"] {
        assert_eq!(
            sent(t, gateway),
            vec![
                (
                    "asha.v".into(),
                    "technician".into(),
                    true,
                    first_hash.clone()
                ),
                (
                    "asha.v".into(),
                    "supervisor".into(),
                    false,
                    first_hash.clone()
                ),
                (
                    "asha.v".into(),
                    "supervisor".into(),
                    false,
                    first_hash.clone()
                ),
            ],
            "{gateway}"
        );
    }

    // A new password is a new hash, under a new salt.
    set(
        t,
        "asha.v",
        change("supervisor", Some(PASSWORD), Some(true)),
    )
    .unwrap();
    let last = sent(t, "gw-b").pop().unwrap();
    assert!(last.2);
    assert_ne!(last.3, first_hash);

    // A gateway enrolled later gets every technician as it is now.
    set(
        t,
        "ravi.k",
        change("viewer", Some("another-password"), None),
    )
    .unwrap();
    gateways(t, &["gw-c"]);
    let names: Vec<(String, String, bool)> = sent(t, "gw-c")
        .into_iter()
        .map(|(name, role, active, _)| (name, role, active))
        .collect();
    assert_eq!(
        names,
        vec![
            ("asha.v".into(), "supervisor".into(), true),
            ("ravi.k".into(), "viewer".into(), true)
        ]
    );
    let listed = t.tx(list_technicians).unwrap();
    assert_eq!(
        listed.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["asha.v", "ravi.k"]
    );
}

#[test]
fn a_technician_set_updated_or_disabled_goes_to_every_gateway_and_to_one_enrolled_later() {
    fans_out_to_every_gateway(&central());
}

#[test]
fn the_hash_verifies_and_the_password_is_nowhere_in_the_database() {
    let t = central();
    gateways(&t, &["gw-a"]);
    set(&t, "asha.v", change("technician", Some(PASSWORD), None)).unwrap();
    let (_, _, _, hash) = sent(&t, "gw-a").remove(0);
    let parsed = PasswordHash::new(&hash).unwrap();
    assert_eq!(parsed.algorithm.as_str(), "argon2id");
    assert!(gramgrid_web::password::matches(&hash, PASSWORD));
    assert!(!gramgrid_web::password::matches(
        &hash,
        "kothi-7-transformeR"
    ));
    let stored: String = t
        .tx(|tx| {
            Ok(tx
                .query_opt("SELECT password_hash FROM technicians", &[])?
                .map(|r| r.text(0).unwrap())
                .unwrap_or_default())
        })
        .unwrap();
    assert_eq!(stored, hash);

    // Every byte central wrote: the database file and its write-ahead log.
    let url = t.central.config().database_url.clone();
    let path = std::path::PathBuf::from(url.strip_prefix("sqlite:").unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
    let needle = PASSWORD.as_bytes();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the password is in the database"
    );
    assert!(!format!("{:?}", change("viewer", Some(PASSWORD), None)).contains(PASSWORD));
}

#[test]
fn a_bad_name_role_full_name_or_password_is_refused_saying_what_to_fix_and_nothing_is_sent() {
    let t = central();
    gateways(&t, &["gw-a"]);
    let cases = [
        (
            "Asha",
            change("technician", Some(PASSWORD), None),
            "lowercase",
        ),
        ("as", change("technician", Some(PASSWORD), None), "3 to 32"),
        (
            "asha v",
            change("technician", Some(PASSWORD), None),
            "3 to 32",
        ),
        (
            "asha.v",
            change("admin", Some(PASSWORD), None),
            "role 'admin' is not one of viewer, technician, supervisor",
        ),
        (
            "asha.v",
            change("technician", Some("short7!"), None),
            "too short: give at least 8 characters",
        ),
        (
            "asha.v",
            change("technician", None, None),
            "is new: give a password",
        ),
        (
            "asha.v",
            TechnicianChange {
                full_name: "  ".into(),
                ..change("technician", Some(PASSWORD), None)
            },
            "full_name must be",
        ),
    ];
    for (name, change, expected) in cases {
        let error = set(&t, name, change).unwrap_err();
        assert!(matches!(error, CentralError::Invalid(_)), "{error:?}");
        assert!(error.to_string().contains(expected), "{name}: {error}");
    }
    assert!(sent(&t, "gw-a").is_empty());
    assert!(t.tx(list_technicians).unwrap().is_empty());
}

fn actions_are_stored_once(t: &TestCentral) {
    t.account("ACC42", Some("gw-a"));
    exchange(
        t,
        "gw-a",
        PROTOCOL,
        1,
        vec![action("act-1", "reconnect until 10:00")],
    );
    // The same record resent (a lost answer), and again under a later sequence number.
    exchange(
        t,
        "gw-a",
        PROTOCOL,
        1,
        vec![action("act-1", "reconnect until 10:00")],
    );
    exchange(
        t,
        "gw-a",
        PROTOCOL,
        2,
        vec![action("act-1", "reconnect until 10:00")],
    );
    let stored = actions(t);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].gateway, "gw-a", "the certificate's gateway");
    assert_eq!(stored[0].subject.as_deref(), Some("ACC42"));
    assert_eq!(stored[0].received_at, now());
    assert!(t.flags().is_empty());

    // The same id with other content, from this gateway or another: refused and flagged.
    let answer = exchange(t, "gw-a", PROTOCOL, 3, vec![action("act-1", "disconnect")]);
    assert_eq!(answer.priority_acked, 3, "refused alone, acknowledged");
    exchange(
        t,
        "gw-b",
        PROTOCOL,
        1,
        vec![action("act-1", "reconnect until 10:00")],
    );
    assert_eq!(actions(t), stored);
    let flags = t.flags();
    assert_eq!(
        flags
            .iter()
            .map(|f| (f.kind.as_str(), f.gateway.as_deref()))
            .collect::<Vec<_>>(),
        [
            ("event_id_conflict", Some("gw-a")),
            ("event_id_conflict", Some("gw-b"))
        ]
    );
    assert!(flags[0].detail.contains("act-1"), "{}", flags[0].detail);

    // Filters.
    exchange(t, "gw-b", PROTOCOL, 2, vec![action("act-2", "sync now")]);
    let of = |gateway: Option<&str>, technician: Option<&str>| {
        let (gateway, technician) = (gateway.map(str::to_owned), technician.map(str::to_owned));
        t.tx(move |tx| technician_actions(tx, gateway.as_deref(), technician.as_deref(), 10))
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(of(None, None).len(), 2);
    assert_eq!(of(Some("gw-b"), None), ["act-2"]);
    assert_eq!(of(Some("gw-a"), Some("asha.v")), ["act-1"]);
    assert!(of(None, Some("ravi.k")).is_empty());
    assert!(t.tx(|tx| technician_actions(tx, None, None, 0)).is_err());
}

const PROTOCOL: u16 = gramgrid_proto::wire::PROTOCOL_VERSION;

#[test]
fn an_action_is_stored_once_by_id_with_the_certificates_gateway_and_a_replay_changes_nothing() {
    actions_are_stored_once(&central());
}

#[test]
fn an_action_out_of_bounds_is_refused() {
    let t = central();
    let long = "x".repeat(2000);
    let answer = exchange(&t, "gw-a", PROTOCOL, 1, vec![action("act-1", &long)]);
    assert_eq!(answer.priority_acked, 1);
    assert!(actions(&t).is_empty());
    assert_eq!(t.flags()[0].kind, "absurd_value");
}

#[test]
fn a_gateway_too_old_for_technicians_gets_them_all_once_it_speaks_a_newer_protocol() {
    assert_eq!(
        DownlinkEvent::Technician {
            name: String::new(),
            full_name: String::new(),
            role: String::new(),
            password_hash: String::new(),
            active: true,
            updated_at: now(),
        }
        .min_protocol(),
        TECHNICIAN_PROTOCOL
    );
    let t = central();
    exchange(&t, "gw-old", PROTOCOL, 1, vec![]);
    set(&t, "asha.v", change("technician", Some(PASSWORD), None)).unwrap();
    let technicians = |answer: &UploadResponse| {
        answer
            .downlink
            .iter()
            .filter(|r| matches!(r.event, DownlinkEvent::Technician { .. }))
            .count()
    };
    // Protocol 4 skips them ...
    let old = exchange(&t, "gw-old", 4, 1, vec![]);
    assert_eq!(technicians(&old), 0);
    // ... and once it speaks 5 it is sent them all again, then only changes.
    let new = exchange(&t, "gw-old", PROTOCOL, 1, vec![]);
    assert_eq!(
        technicians(&new),
        2,
        "the skipped record and the resent one"
    );
    let again = exchange(&t, "gw-old", PROTOCOL, 1, vec![]);
    assert_eq!(technicians(&again), 2, "nothing new");
    // A gateway enrolled with them is not sent them twice.
    let fresh = exchange(&t, "gw-new", PROTOCOL, 1, vec![]);
    assert_eq!(technicians(&fresh), 1);
}

#[test]
fn technicians_and_actions_work_on_postgresql_too() {
    let Some(url) = fresh_postgres("gg_technicians") else {
        return;
    };
    let t = central_configured(|c| c.database_url = url);
    assert_eq!(t.central.db().backend(), "postgres");
    fans_out_to_every_gateway(&t);
    actions_are_stored_once(&t);
}

mod api {
    use super::*;
    use axum::body::Body;
    use serde_json::{json, Value};
    use std::sync::Arc;
    use tower::ServiceExt;

    const OFFICE: &str = "office-token-0123456789";
    const DASHBOARD: &str = "dashboard-token-0123456789";

    async fn call(
        router: &axum::Router,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_routes_set_list_and_audit_technicians_and_never_echo_a_password() {
        let t = central_with_tokens(vec![
            ApiToken::new("office", OFFICE, Scope::Admin),
            ApiToken::new("dashboard", DASHBOARD, Scope::Read),
        ]);
        t.account("ACC42", Some("gw-a"));
        let router = crate::server::router(Arc::clone(&t.central));
        let body = json!({"full_name": "Asha Verma", "role": "technician", "password": PASSWORD});
        let path = "/api/v1/technicians/asha.v";

        let (status, _) = call(&router, DASHBOARD, "PUT", path, Some(body.clone())).await;
        assert_eq!(status, 403, "a read token cannot set a technician");
        let (status, created) = call(&router, OFFICE, "PUT", path, Some(body)).await;
        assert_eq!(status, 201, "{created}");
        let created: Value = serde_json::from_str(&created).unwrap();
        assert_eq!(created["active"], true);
        assert!(created.get("password").is_none() && created.get("password_hash").is_none());

        // Disabled, password kept.
        let (status, changed) = call(
            &router,
            OFFICE,
            "PUT",
            path,
            Some(json!({"full_name": "Asha Verma", "role": "supervisor", "active": false})),
        )
        .await;
        assert_eq!(status, 200, "{changed}");
        assert!(changed.contains("\"active\":false"), "{changed}");
        let (status, refused) = call(
            &router,
            OFFICE,
            "PUT",
            path,
            Some(json!({"full_name": "Asha Verma", "role": "technician", "password": "short"})),
        )
        .await;
        assert_eq!(status, 400);
        assert!(refused.contains("at least 8 characters"), "{refused}");
        assert!(
            !refused.contains("short\""),
            "the password is not echoed: {refused}"
        );

        let (status, listed) = call(&router, DASHBOARD, "GET", "/api/v1/technicians", None).await;
        assert_eq!(status, 200);
        assert!(listed.contains("\"role\":\"supervisor\"") && !listed.contains("argon2"));
        assert!(!listed.contains(PASSWORD));

        // Two writes committed, two audit rows; the refused one wrote none.
        let (_, audit) = call(&router, OFFICE, "GET", "/api/v1/audit", None).await;
        let audit: Value = serde_json::from_str(&audit).unwrap();
        let rows: Vec<(&str, &str)> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["token"].as_str().unwrap(), r["path"].as_str().unwrap()))
            .filter(|(_, p)| p.contains("technicians"))
            .collect();
        assert_eq!(rows, [("office", path), ("office", path)]);
        assert!(!audit.to_string().contains(PASSWORD));

        let t2 = Arc::clone(&t.central);
        t2.db()
            .transaction(|tx| {
                crate::sync::apply(
                    tx,
                    &TariffBook::builtin(),
                    "gw-a",
                    &UploadRequest {
                        protocol: PROTOCOL,
                        ..priority_upload(1, vec![action("act-1", "reconnect")], now())
                    },
                    now(),
                )
            })
            .await
            .unwrap();
        let (status, found) = call(
            &router,
            DASHBOARD,
            "GET",
            "/api/v1/technician-actions?gateway=gw-a&technician=asha.v&limit=5",
            None,
        )
        .await;
        assert_eq!(status, 200);
        let found: Value = serde_json::from_str(&found).unwrap();
        assert_eq!(found[0]["id"], "act-1");
        assert_eq!(found[0]["gateway"], "gw-a");
        let (status, _) = call(
            &router,
            DASHBOARD,
            "GET",
            "/api/v1/technician-actions?limit=0",
            None,
        )
        .await;
        assert_eq!(status, 400);
    }
}
