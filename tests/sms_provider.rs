//! Central's SMS sender against a provider stand-in over real HTTPS: DLT ids and templates in the
//! consumer's language, retries on server errors, throttling, refusals, delivery receipts, quiet
//! hours, and each message's state per account through the API.
use chrono::{DateTime, Duration, TimeZone, Utc};
use gramgrid_central::accounts::{self, Account, RechargeRequest};
use gramgrid_central::notify::{self, sms::SmsConfig};
use gramgrid_central::{server, ApiToken, CentralConfig, Scope};
use gramgrid_core::message::{self, Kind, Language};
use gramgrid_core::tariff::Category;
use gramgrid_net::wallclock::{SimulatedClock, WallClock};
use gramgrid_sim::sms_standin::SmsStandIn;
use serde_json::Value;

const TOKEN: &str = "office-token-0123456789";
const RECEIPT_TOKEN: &str = "receipt-secret-0123456789";

fn ist(day: u32, h: u32, m: u32) -> DateTime<Utc> {
    gramgrid_core::civil::ist()
        .with_ymd_and_hms(2026, 11, day, h, m, 0)
        .unwrap()
        .with_timezone(&Utc)
}

fn sms_config(standin: &SmsStandIn, dir: &std::path::Path) -> SmsConfig {
    std::fs::write(dir.join("sms-auth"), "Bearer prov-key-123\n").unwrap();
    std::fs::write(dir.join("sms-receipts"), RECEIPT_TOKEN).unwrap();
    let mut config = SmsConfig {
        url: standin.url(),
        ca_file: Some(standin.ca_file().to_path_buf()),
        auth_value_file: Some(dir.join("sms-auth")),
        receipt_token_file: Some(dir.join("sms-receipts")),
        sender_id: "GRMGRD".into(),
        entity_id: "1101000000000001".into(),
        retry_initial: std::time::Duration::from_secs(60),
        retry_max: std::time::Duration::from_secs(600),
        max_attempts: 3,
        ..SmsConfig::default()
    };
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        for language in Language::ALL {
            config.dlt_template_ids.insert(
                format!("{}.{}", kind.as_str(), language.code()),
                format!("11071{i}{}", language.code()),
            );
        }
    }
    config
}

struct Office {
    running: server::Running,
    client: gramgrid_net::tls::HttpsClient,
    clock: SimulatedClock,
    sender: std::sync::Arc<dyn notify::Sender>,
    rendering: notify::Rendering,
}

impl Office {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        let timeout = std::time::Duration::from_secs(10);
        let (status, body) = match method {
            "GET" => {
                self.client
                    .get_with_headers(path, &[("authorization", &auth)], timeout)
                    .await
            }
            _ => {
                self.client
                    .post_with_headers(
                        path,
                        &[("authorization", &auth)],
                        "application/json",
                        body.unwrap_or(Value::Null).to_string().into_bytes(),
                        timeout,
                    )
                    .await
            }
        }
        .unwrap();
        (
            status.as_u16(),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    async fn messages(&self, account: &str) -> Vec<Value> {
        let (status, answer) = self
            .call(
                "GET",
                &format!("/api/v1/accounts/{account}/messages"),
                TOKEN,
                None,
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer.as_array().unwrap().clone()
    }

    async fn deliver(&self) -> notify::Delivered {
        notify::deliver(
            &self.running.central,
            self.sender.as_ref(),
            &self.rendering,
            100,
        )
        .await
        .unwrap()
    }

    async fn recharge(&self, account: &str, key: &str, paise: i64) {
        let request = RechargeRequest {
            idempotency_key: key.into(),
            account: account.into(),
            amount_paise: paise,
            reference: None,
        };
        let now = self.clock.now();
        self.running
            .central
            .db()
            .transaction(move |tx| accounts::recharge(tx, &request, now))
            .await
            .unwrap();
    }
}

async fn office(dir: &std::path::Path, standin: &SmsStandIn) -> Office {
    let pki_dir = dir.join("pki");
    let pki = gramgrid_net::pki::CentralPki::init(&pki_dir, "https://127.0.0.1:8443", &[]).unwrap();
    let sms = sms_config(standin, dir);
    let (sender, rendering) = notify::sms::sender_for(Some(&sms), dir.join("unused.log")).unwrap();
    let config = CentralConfig {
        database_url: format!("sqlite:{}", dir.join("central.db").display()),
        secrets_key_file: dir.join("secrets.key"),
        pki_dir,
        // The test delivers by hand, step by step.
        notify_every: std::time::Duration::from_secs(3600),
        api_tokens: vec![ApiToken::new("office", TOKEN, Scope::Admin)],
        sms: Some(sms),
        ..CentralConfig::default()
    };
    let clock = SimulatedClock::stopped_at(ist(30, 12, 0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = server::start_with_clock(config, listener, WallClock::Simulated(clock.clone()))
        .await
        .unwrap();
    let client = gramgrid_net::tls::HttpsClient::new(
        gramgrid_net::tls::api_client_config(&pki.ca_cert_path()).unwrap(),
        &format!("https://127.0.0.1:{}", running.addr.port()),
    )
    .unwrap();
    for (id, phone, language) in [
        ("A1", Some("+919800000001"), Language::English),
        ("A2", Some("+919800000002"), Language::Hindi),
        ("A3", None, Language::English),
    ] {
        let account = Account {
            id: id.into(),
            consumer_name: format!("Consumer {id}"),
            category: Category::Domestic,
            phone: phone.map(str::to_string),
            gateway: None,
            language,
            created_at: ist(1, 9, 0),
        };
        running
            .central
            .db()
            .transaction(move |tx| accounts::put_account(tx, &account, false))
            .await
            .unwrap();
    }
    Office {
        running,
        client,
        clock,
        sender,
        rendering,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_provider_in_the_consumers_language_and_come_back_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let standin = SmsStandIn::start(&dir.path().join("provider"))
        .await
        .unwrap();
    let o = office(dir.path(), &standin).await;

    o.recharge("A1", "pay-1", 20_000).await;
    o.clock.set(o.clock.now() + Duration::seconds(1));
    o.recharge("A2", "pay-2", 50_000).await;
    o.clock.set(o.clock.now() + Duration::seconds(1));
    o.recharge("A3", "pay-3", 10_000).await;

    // The provider fails the first request with a server error: that message is retried later;
    // the Hindi one goes; the account without a phone number cannot be told.
    standin.answer_next(&[500]);
    let round = o.deliver().await;
    assert_eq!(
        (round.sent, round.retrying, round.failed),
        (1, 1, 1),
        "{round:?}"
    );
    let a1 = &o.messages("A1").await[0];
    assert_eq!(
        (a1["state"].as_str(), a1["attempts"].as_i64()),
        (Some("retrying"), Some(1))
    );
    assert!(a1["last_error"].as_str().unwrap().contains("500"), "{a1}");
    assert_eq!(o.messages("A3").await[0]["state"], "failed");
    assert!(o.messages("A3").await[0]["last_error"]
        .as_str()
        .unwrap()
        .contains("no phone"));

    // Not before its retry time; then it goes.
    assert_eq!(o.deliver().await.sent, 0);
    o.clock.set(o.clock.now() + Duration::seconds(61));
    assert_eq!(o.deliver().await.sent, 1);

    let accepted = standin.accepted();
    assert_eq!(accepted.len(), 2);
    let hindi = &accepted[0].body;
    assert_eq!(hindi["to"], "+919800000002");
    assert_eq!(hindi["sender"], "GRMGRD");
    assert_eq!(hindi["entity_id"], "1101000000000001");
    assert_eq!(hindi["template_id"], "110710hi");
    let text = hindi["text"].as_str().unwrap();
    assert_eq!(text, "₹500.00 का रिचार्ज मिला। शेष राशि ₹500.00। - GramGrid");
    assert_eq!(
        accepted[0].authorization.as_deref(),
        Some("Bearer prov-key-123")
    );
    let english = &accepted[1].body;
    assert_eq!(
        english["text"],
        "Recharge of Rs 200.00 received. Balance Rs 200.00. - GramGrid"
    );
    assert_eq!(english["template_id"], "110710en");

    // The account's message list shows who sent it, the parts billed and the provider's id.
    let a2 = &o.messages("A2").await[0];
    assert_eq!(a2["state"], "sent");
    assert_eq!(a2["channel"], "sms_provider");
    assert_eq!(
        a2["parts"].as_u64().unwrap() as usize,
        message::sms_parts(text).parts
    );
    assert_eq!(a2["text"], text);

    // Delivery receipts: only with the provider's secret, only for a message central sent.
    let reference = hindi["ref"].as_str().unwrap().to_string();
    let receipt = serde_json::json!({ "ref": reference, "status": "delivered" });
    let (status, _) = o
        .call("POST", server::RECEIPTS_PATH, TOKEN, Some(receipt.clone()))
        .await;
    assert_eq!(status, 401);
    let (status, answer) = o
        .call("POST", server::RECEIPTS_PATH, RECEIPT_TOKEN, Some(receipt))
        .await;
    assert_eq!(status, 204, "{answer}");
    let a2 = &o.messages("A2").await[0];
    assert_eq!(a2["state"], "delivered");
    assert!(a2["delivered_at"].is_string());
    let unknown = serde_json::json!({ "ref": "nope", "status": "delivered" });
    let (status, _) = o
        .call("POST", server::RECEIPTS_PATH, RECEIPT_TOKEN, Some(unknown))
        .await;
    assert_eq!(status, 404);
    let failed = serde_json::json!({ "ref": accepted[1].body["ref"], "status": "undelivered", "error": "handset off" });
    o.call("POST", server::RECEIPTS_PATH, RECEIPT_TOKEN, Some(failed))
        .await;
    let a1 = &o.messages("A1").await[0];
    assert_eq!(
        (a1["state"].as_str(), a1["last_error"].as_str()),
        (Some("failed"), Some("handset off"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_provider_is_left_alone_a_refusal_is_final_and_night_waits_for_morning() {
    let dir = tempfile::tempdir().unwrap();
    let standin = SmsStandIn::start(&dir.path().join("provider"))
        .await
        .unwrap();
    let o = office(dir.path(), &standin).await;
    o.recharge("A1", "pay-1", 20_000).await;
    o.clock.set(o.clock.now() + Duration::seconds(1));
    o.recharge("A2", "pay-2", 20_000).await;

    // 429: nothing more is sent in that round.
    standin.answer_next(&[429]);
    let round = o.deliver().await;
    assert_eq!((round.sent, round.retrying), (0, 1), "{round:?}");
    assert_eq!(standin.refused(), 1);
    assert!(standin.accepted().is_empty());
    assert_eq!(o.messages("A2").await[0]["state"], "queued");

    // 400 (e.g. the text does not match the DLT template): failed, never retried.
    o.clock.set(o.clock.now() + Duration::seconds(61));
    standin.answer_next(&[400]);
    let round = o.deliver().await;
    assert_eq!((round.sent, round.failed), (1, 1), "{round:?}");
    assert_eq!(o.messages("A1").await[0]["state"], "failed");
    o.clock.set(o.clock.now() + Duration::hours(2));
    assert_eq!(o.deliver().await, notify::Delivered::default());

    // At 23:30 a daily balance waits for 07:00; a recharge receipt goes at once.
    o.clock.set(ist(30, 23, 30));
    let now = o.clock.now();
    o.running
        .central
        .db()
        .transaction(move |tx| {
            let vars = [("date", "30-11-2026"), ("balance", "180.00")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            notify::enqueue(
                tx,
                "gw-a/A2:daily:2026-11-30",
                "A2",
                "daily_balance",
                "Balance",
                &vars,
                now,
            )
        })
        .await
        .unwrap();
    o.recharge("A2", "pay-3", 10_000).await;
    let round = o.deliver().await;
    assert_eq!((round.sent, round.deferred), (1, 1), "{round:?}");
    o.clock.set(ist(30, 23, 30) + Duration::minutes(449));
    assert_eq!(o.deliver().await.sent, 0);
    o.clock.set(ist(30, 23, 30) + Duration::minutes(450));
    assert_eq!(o.deliver().await.sent, 1);
    let last = standin.accepted().last().unwrap().body.clone();
    assert_eq!(last["text"], "30-11-2026 को बिजली बैलेंस: ₹180.00। - GramGrid");
}
