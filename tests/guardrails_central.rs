//! Guardrails end to end: `gramgrid central serve` as its own process, the office over HTTPS with
//! scoped tokens and on the command line, a gateway over mutual TLS. A policy publish that would
//! cut too many is held and released; a gateway's breaker hold is flagged urgent and released from
//! the command line; a protected account, arrears and decisions in words.
use chrono::{DateTime, Duration, TimeZone, Utc};
use gramgrid_core::decision::{DecisionRecord, Outcome};
use gramgrid_core::policy::{self, AccountFacts, PolicyConfig, RelayState};
use gramgrid_proto::wire::{self, DownlinkEvent, PriorityRecord, UplinkEvent, UploadRequest};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const OFFICE: &str = "guardrails-office-0123456789";
const DASHBOARD: &str = "guardrails-dashboard-0123456789";

struct Office {
    url: String,
    ca: PathBuf,
    config: PathBuf,
}

impl Office {
    fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (status, answer) = tokio::task::block_in_place(|| {
            crate::common::api_call(&self.url, &self.ca, token, method, path, body.as_deref())
        });
        (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(OFFICE, method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }

    /// `gramgrid central ARGS --config C` as the office's user; its stdout, or a panic with stderr.
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_gramgrid"))
            .arg("central")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("USER", "asha")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "gramgrid central {args:?}: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

/// 11:00 IST on a Tuesday: inside the default disconnect window.
fn tuesday_morning() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 5, 30, 0).unwrap()
}

/// A cut of `account` two days after its balance fell to -25 INR, as a gateway records it.
fn cut(account: &str, at: DateTime<Utc>) -> DecisionRecord {
    let facts = AccountFacts {
        balance_paise: -2_500,
        last_recharge: None,
        emergency_credit_paise: 0,
        daily_consumption_paise: None,
        relay: RelayState::Connected,
        pending: None,
        below_threshold_since: Some(at - Duration::days(2)),
        manual_override: None,
        clock_trusted: true,
        protected: false,
        arrangement: None,
        outages: Vec::new(),
        load: None,
    };
    let policy = PolicyConfig::default();
    let outcome = Outcome::from(&policy::decide(&policy, &facts, at));
    DecisionRecord {
        account: account.into(),
        at,
        policy,
        policy_version: Some(1),
        tariff_version: None,
        facts,
        outcome,
        breaker: None,
    }
}

/// Central on `database_url` with its PKI and config in `d`, running as its own process.
fn start(
    d: &Path,
    database_url: &str,
) -> (
    crate::common::Proc,
    Office,
    gramgrid_net::pki::GatewayBundle,
) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let pki = gramgrid_net::pki::CentralPki::init(&d.join("pki"), &url, &[]).unwrap();
    let bundle = pki.add_gateway("gw-a", 30).unwrap();
    let config = d.join("central.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{database_url}\"\npki_dir = {:?}\nnotifications_log = {:?}\nsecrets_key_file = {:?}\n\
             api_tokens = [\"{OFFICE}\", {{ name = \"dashboard\", token = \"{DASHBOARD}\", scope = \"read\" }}]\n",
            d.join("pki"),
            d.join("notifications.log"),
            d.join("secrets.key"),
        ),
    )
    .unwrap();
    let central = crate::common::Proc::new(
        Command::new(env!("CARGO_BIN_EXE_gramgrid"))
            .args(["central", "serve", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.join("central.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    for _ in 0..120 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let office = Office {
        url,
        ca: d.join("pki/ca.pem"),
        config,
    };
    (central, office, bundle)
}

/// One exchange of gateway `gw-a` over mutual TLS; the downlink records it was sent.
async fn exchange(
    office: &Office,
    bundle: &gramgrid_net::pki::GatewayBundle,
    first_seq: u64,
    events: Vec<UplinkEvent>,
) -> Vec<DownlinkEvent> {
    let client = gramgrid_net::tls::HttpsClient::new(
        gramgrid_net::tls::client_config(bundle).unwrap(),
        &office.url,
    )
    .unwrap();
    let request = UploadRequest {
        protocol: wire::PROTOCOL_VERSION,
        sent_at: Utc::now(),
        priority: events
            .into_iter()
            .zip(first_seq..)
            .map(|(event, seq)| PriorityRecord { seq, event })
            .collect(),
        readings: None,
        downlink_applied: 0,
        identity: None,
        status: None,
    };
    let (status, body) = client
        .post(
            wire::EXCHANGE_PATH,
            wire::CONTENT_TYPE,
            wire::encode(&request).unwrap(),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200, "{}", String::from_utf8_lossy(&body));
    let answer: wire::UploadResponse = wire::decode(&body).unwrap();
    answer.downlink.into_iter().map(|r| r.event).collect()
}

/// SQLite always; PostgreSQL too when GRAMGRID_TEST_POSTGRES_URL is set (tests/run sets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrails_over_https_and_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!(
        "sqlite:{}",
        dir.path().join("central.db").display()
    )];
    match std::env::var("GRAMGRID_TEST_POSTGRES_URL") {
        Ok(admin) => urls.push(crate::common::fresh_postgres(&admin)),
        Err(_) => eprintln!(
            "SKIP guardrails on PostgreSQL: GRAMGRID_TEST_POSTGRES_URL is not set (tests/run sets it)"
        ),
    }
    for (i, url) in urls.iter().enumerate() {
        let d = dir.path().join(format!("backend-{i}"));
        std::fs::create_dir(&d).unwrap();
        guardrails(&d, url).await;
    }
}

async fn guardrails(d: &Path, database_url: &str) {
    let (_central, office, bundle) = start(d, database_url);
    for id in ["A1", "A2", "A3", "A4", "A5"] {
        office.ok(
            "POST",
            "/api/v1/accounts",
            Some(json!({"id": id, "consumer_name": "Asha", "category": "domestic", "gateway": "gw-a"})),
        );
        if id != "A5" {
            let recharge = json!({"idempotency_key": format!("r-{id}"), "account": id, "amount_paise": 10_000});
            office.ok("POST", "/api/v1/recharges", Some(recharge));
        }
    }

    // A protected account, from the command line, seen through the API.
    let said = office.cli(&["protect", "A5", "--reason", "life support"]);
    assert!(said.contains("A5 protected (life support)"), "{said}");
    let (_, accounts) = office.call(DASHBOARD, "GET", "/api/v1/accounts", None);
    assert_eq!(accounts[4]["protected"], "life support", "{accounts}");

    // Arrears: once per id, shown apart in the balance.
    let arrears = json!({"id": "postpaid-A1", "amount_paise": 120_000});
    let (status, _) = office.call(
        OFFICE,
        "POST",
        "/api/v1/accounts/A1/arrears",
        Some(arrears.clone()),
    );
    assert_eq!(status, 201);
    let (status, _) = office.call(OFFICE, "POST", "/api/v1/accounts/A1/arrears", Some(arrears));
    assert_eq!(status, 200);
    let (status, _) = office.call(
        DASHBOARD,
        "POST",
        "/api/v1/accounts/A1/arrears",
        Some(json!({"id": "postpaid-A1b", "amount_paise": 1})),
    );
    assert_eq!(status, 403);
    let balance = office.ok("GET", "/api/v1/accounts/A1/balance", None);
    // The recharge pays a share only if made at or after the arrears (in the same second here,
    // or not): whatever it paid is off the balance and off the arrears alike.
    let recovered = balance["arrears"]["recovered_paise"].as_i64().unwrap();
    assert_eq!(balance["arrears"]["opening_paise"], 120_000, "{balance}");
    assert_eq!(
        balance["arrears"]["outstanding_paise"],
        120_000 - recovered,
        "{balance}"
    );
    assert_eq!(balance["balance_paise"], 10_000 - recovered, "{balance}");

    // A threshold of 100 INR would newly cut 4 of gw-a's 5 accounts; its breaker allows 3 a day.
    let policy = json!({"version": 1, "policy": {"disconnect_threshold_paise": 10_000}});
    let (status, held) = office.call(OFFICE, "PUT", "/api/v1/policy", Some(policy));
    assert_eq!(status, 409, "{held}");
    assert_eq!(
        held["gateways"],
        json!([{"gateway": "gw-a", "accounts": 5, "newly_cut": 4, "limit": 3}])
    );
    let hold = held["hold_id"].as_str().unwrap().to_owned();
    let listed = office.cli(&["holds"]);
    assert!(
        listed.contains(&format!("policy hold {hold}: version 1")),
        "{listed}"
    );
    let release = format!("/api/v1/policy/holds/{hold}/release");
    let reason = json!({"reason": "agreed with the village committee"});
    assert_eq!(
        office
            .call(DASHBOARD, "POST", &release, Some(reason.clone()))
            .0,
        403
    );
    let released = office.ok("POST", &release, Some(reason.clone()));
    assert_eq!(released["released"]["by"], "token-1", "{released}");
    assert_eq!(office.call(OFFICE, "POST", &release, Some(reason)).0, 409);

    // The gateway reports a cut with its facts and a breaker hold.
    let at = tuesday_morning();
    let decision = serde_json::to_string(&cut("A1", at)).unwrap();
    let events = vec![
        UplinkEvent::Decision {
            id: "cmd-1".into(),
            account: "A1".into(),
            at,
            record: decision,
        },
        UplinkEvent::BreakerHeld {
            id: "hold-1".into(),
            at,
            accounts: vec!["A2".into(), "A3".into()],
            reasons: vec!["a new policy took effect".into()],
        },
    ];
    let sent = exchange(&office, &bundle, 1, events).await;
    // Everything so far reached the gateway: the policy and its rules, the protection.
    let position = |wanted: fn(&DownlinkEvent) -> bool| sent.iter().position(wanted);
    let policy_at = position(|e| matches!(e, DownlinkEvent::Policy { version: 1, .. })).unwrap();
    let rules_at =
        position(|e| matches!(e, DownlinkEvent::PolicyRules { version: 1, .. })).unwrap();
    assert_eq!(rules_at, policy_at + 1);
    assert!(sent.iter().any(|e| matches!(
        e,
        DownlinkEvent::AccountProtection { id, protected: Some(_) } if id == "A5"
    )));
    let flags = office.ok("GET", "/api/v1/flags", None);
    let urgent: Vec<&Value> = flags
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["urgent"] == true)
        .collect();
    assert_eq!(urgent.len(), 1, "{flags}");
    assert_eq!(urgent[0]["kind"], "breaker_held");
    let (status, holds) = office.call(DASHBOARD, "GET", "/api/v1/gateways/gw-a/holds", None);
    assert_eq!(
        (status, &holds[0]["released"]),
        (200, &Value::Null),
        "{holds}"
    );

    // Released from the command line; a second release is refused over the API.
    let said = office.cli(&[
        "release",
        "hold-1",
        "--gateway",
        "gw-a",
        "--reason",
        "checked both meters",
    ]);
    assert!(
        said.contains("hold hold-1 of gateway gw-a released"),
        "{said}"
    );
    let (_, holds) = office.call(DASHBOARD, "GET", "/api/v1/gateways/gw-a/holds", None);
    assert_eq!(holds[0]["released"]["by"], "cli:asha", "{holds}");
    assert_eq!(holds[0]["released"]["place"], "central");
    let again = json!({"reason": "again"});
    let path = "/api/v1/gateways/gw-a/holds/hold-1/release";
    assert_eq!(
        office.call(OFFICE, "POST", path, Some(again.clone())).0,
        409
    );
    assert_eq!(
        office
            .call(
                OFFICE,
                "POST",
                "/api/v1/gateways/gw-a/holds/hold-9/release",
                Some(again)
            )
            .0,
        404
    );
    let sent = exchange(&office, &bundle, 3, vec![]).await;
    assert!(sent.iter().any(|e| matches!(
        e,
        DownlinkEvent::BreakerRelease { hold_id, by, .. } if hold_id == "hold-1" && by == "cli:asha"
    )));

    // The decision in words, over the API and on the command line.
    let (status, decisions) = office.call(
        DASHBOARD,
        "GET",
        "/api/v1/accounts/A1/decisions?at=2026-11-24T06:00:00Z",
        None,
    );
    assert_eq!(status, 200, "{decisions}");
    assert_eq!(decisions[0]["id"], "cmd-1");
    assert_eq!(decisions[0]["action"], "disconnect");
    assert_eq!(decisions[0]["replays"], true);
    let words = office.cli(&["decisions", "A1", "--at", "2026-11-24T11:30:00+05:30"]);
    assert!(words.contains("decision cmd-1 of gateway gw-a"), "{words}");
    assert!(words.contains("disconnect command issued"), "{words}");
    assert!(
        words.contains("replay: the policy decides the same"),
        "{words}"
    );

    // The audit names who wrote, on the API and on the command line.
    let audit = office.ok("GET", "/api/v1/audit?limit=1000", None);
    let rows: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["token"].as_str().unwrap().into(),
                r["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    for expected in [
        ("cli:asha", "central protect A5"),
        ("token-1", "/api/v1/policy"),
        ("token-1", release.as_str()),
        ("cli:asha", "central release hold-1 --gateway gw-a"),
    ] {
        assert!(
            rows.iter()
                .any(|(t, p)| (t.as_str(), p.as_str()) == expected),
            "{expected:?} not in {rows:?}"
        );
    }
}
