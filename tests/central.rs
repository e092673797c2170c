//! Central server end to end, on real SQLite files and (with GRAMGRID_TEST_POSTGRES_URL) a real
//! PostgreSQL server: API validation, idempotent recharges, balances equal to the gateway's after a
//! sync, gateway isolation, vouchers single use everywhere, lanes and downlink.
use crate::common::fresh_postgres;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Duration, TimeZone, Utc};
use gramgrid_central::db::DbError;
use gramgrid_central::{server, ApiToken, Central, CentralConfig, Scope};
use gramgrid_core::ledger::{EventKind, LedgerEvent};
use gramgrid_core::policy::RelayAction;
use gramgrid_core::tariff::{Category, TariffBook, TariffVersion};
use gramgrid_gateway::store::{Account, MeterInstall, MeterReading, Store};
use gramgrid_net::tls::PeerGateway;
use gramgrid_net::wallclock::{SimulatedClock, WallClock};
use gramgrid_proto::wire::{
    self, DownlinkEvent, PriorityRecord, ReadingBatch, ReadingBlock, UplinkEvent, UploadRequest,
    UploadResponse,
};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

const TOKEN: &str = "test-token-0123456789";

/// A central server on a fresh database of each available backend.
struct Harness {
    router: axum::Router,
    central: Arc<Central>,
    _dir: Arc<tempfile::TempDir>,
}

/// SQLite always; PostgreSQL when GRAMGRID_TEST_POSTGRES_URL is set (tests/run sets it).
fn harnesses(test: &str) -> Vec<Harness> {
    harnesses_on(test, &WallClock::System)
}

/// As [`harnesses`], with central reading "now" from `clock`.
fn harnesses_on(test: &str, clock: &WallClock) -> Vec<Harness> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut urls = vec![format!(
        "sqlite:{}",
        dir.path().join("central.db").display()
    )];
    match std::env::var("GRAMGRID_TEST_POSTGRES_URL") {
        Ok(admin) => urls.push(fresh_postgres(&admin)),
        Err(_) => eprintln!(
            "SKIP {test} on PostgreSQL: GRAMGRID_TEST_POSTGRES_URL is not set (tests/run sets it)"
        ),
    }
    urls.into_iter()
        .map(|database_url| harness(database_url, &dir, clock.clone()).unwrap())
        .collect()
}

/// A central server on `database_url`, or why it could not open.
fn harness(
    database_url: String,
    dir: &Arc<tempfile::TempDir>,
    clock: WallClock,
) -> Result<Harness, gramgrid_central::CentralError> {
    let config = CentralConfig {
        database_url,
        secrets_key_file: dir.path().join("secrets.key"),
        api_tokens: vec![ApiToken::new("test", TOKEN, Scope::Admin)],
        ..CentralConfig::default()
    };
    let central = Arc::new(Central::open_with_clock(config, clock)?);
    Ok(Harness {
        router: server::router(Arc::clone(&central)),
        central,
        _dir: Arc::clone(dir),
    })
}

impl Harness {
    /// The status and the body exactly as the API sent it.
    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, axum::body::Bytes) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Body::from(body.unwrap_or("").to_owned()))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, bytes)
    }

    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        let (status, bytes) = self.call_raw(method, path, body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(&body.to_string())).await
    }

    async fn recharge(&self, account: &str, key: &str, amount_paise: i64) -> Value {
        let body =
            json!({"idempotency_key": key, "account": account, "amount_paise": amount_paise});
        self.ok("POST", "/api/v1/recharges", body).await
    }

    async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(method, path, Some(&body.to_string())).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer
    }

    async fn exchange(
        &self,
        gateway: &str,
        request: &UploadRequest,
    ) -> Result<UploadResponse, (StatusCode, String)> {
        let mut http = Request::builder()
            .method("POST")
            .uri(wire::EXCHANGE_PATH)
            .header("content-type", wire::CONTENT_TYPE)
            .body(Body::from(wire::encode(request).unwrap()))
            .unwrap();
        http.extensions_mut()
            .insert(PeerGateway(Some(gateway.to_owned())));
        let response = self.router.clone().oneshot(http).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), wire::MAX_BODY_BYTES)
            .await
            .unwrap();
        if status == StatusCode::OK {
            Ok(wire::decode(&bytes).unwrap())
        } else {
            Err((status, String::from_utf8_lossy(&bytes).into_owned()))
        }
    }

    async fn balance(&self, account: &str) -> i64 {
        self.ok(
            "GET",
            &format!("/api/v1/accounts/{account}/balance"),
            Value::Null,
        )
        .await["balance_paise"]
            .as_i64()
            .unwrap()
    }

    /// Account `id` with meter `M-id` on `gateway`, installed at `t0` with register 0.
    async fn customer(&self, id: &str, gateway: &str) {
        self.ok("POST", "/api/v1/accounts", json!({"id": id, "consumer_name": "Asha", "category": "domestic", "gateway": gateway, "created_at": t0()})).await;
        self.ok("POST", "/api/v1/meters", json!({"serial": format!("M-{id}"), "account": id, "installed_at": t0(), "initial_register_wh": 0})).await;
    }
}

/// The flags of `kind` in a `GET /api/v1/flags` answer.
fn flags_of_kind(flags: &Value, kind: &str) -> Vec<Value> {
    let all = flags.as_array().map(Vec::as_slice).unwrap_or_default();
    all.iter().filter(|f| f["kind"] == kind).cloned().collect()
}

/// The built-in domestic tariff as a new version `id`, in force from `effective_from`.
fn domestic_version(id: &str, effective_from: chrono::NaiveDate) -> TariffVersion {
    let mut version = TariffBook::builtin().versions()[0].clone();
    version.id = id.into();
    version.effective_from = effective_from;
    version
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 25, 0, 0, 0).unwrap()
}

fn upload(
    priority: Vec<PriorityRecord>,
    readings: Option<ReadingBatch>,
    downlink_applied: u64,
) -> UploadRequest {
    UploadRequest {
        protocol: wire::PROTOCOL_VERSION,
        sent_at: Utc::now(),
        priority,
        readings,
        downlink_applied,
        identity: None,
        status: None,
    }
}

/// Hourly readings of one meter across a month boundary (so two tariff segments are involved).
fn readings(meter: &str, hours: std::ops::Range<i64>) -> Vec<(String, i64, i64)> {
    hours
        .map(|h| {
            (
                meter.to_owned(),
                (t0() + Duration::hours(h)).timestamp(),
                h * h * 7 + h * 300,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_bad_input_with_clear_4xx_and_writes_nothing() {
    for h in harnesses("api_refuses_bad_input") {
        h.customer("A1", "gw-a").await;
        let cases: &[(&str, &str, StatusCode, &str)] = &[
            (
                "/api/v1/recharges",
                "{not json",
                StatusCode::BAD_REQUEST,
                "request body",
            ),
            (
                "/api/v1/recharges",
                r#"{"idempotency_key":"k1","account":"NOPE","amount_paise":100}"#,
                StatusCode::NOT_FOUND,
                "no account 'NOPE'",
            ),
            (
                "/api/v1/recharges",
                r#"{"idempotency_key":"k2","account":"A1","amount_paise":-5}"#,
                StatusCode::BAD_REQUEST,
                "out of range",
            ),
            (
                "/api/v1/recharges",
                r#"{"idempotency_key":"k3","account":"A1","amount_paise":99999999999}"#,
                StatusCode::BAD_REQUEST,
                "out of range",
            ),
            (
                "/api/v1/recharges",
                r#"{"idempotency_key":"k4","account":"A1","amount_paise":"ten"}"#,
                StatusCode::BAD_REQUEST,
                "request body",
            ),
            (
                "/api/v1/accounts",
                r#"{"id":"A2","consumer_name":"x","category":"industrial"}"#,
                StatusCode::BAD_REQUEST,
                "request body",
            ),
            (
                "/api/v1/vouchers",
                r#"{"account":"A1","amount_paise":100,"valid_days":365}"#,
                StatusCode::BAD_REQUEST,
                "valid_days",
            ),
        ];
        for (path, body, status, needle) in cases {
            let (got, answer) = h.call("POST", path, Some(body)).await;
            assert_eq!(got, *status, "{path} {body}: {answer}");
            assert!(
                answer["error"].as_str().unwrap().contains(needle),
                "{answer}"
            );
        }
        assert_eq!(h.balance("A1").await, 0);
        // The same key again with the same body credits once; with another body it is refused.
        let first = h
            .ok(
                "POST",
                "/api/v1/recharges",
                json!({"idempotency_key": "pay-1", "account": "A1", "amount_paise": 50_000}),
            )
            .await;
        let (status, again) = h
            .post(
                "/api/v1/recharges",
                json!({"idempotency_key": "pay-1", "account": "A1", "amount_paise": 50_000}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["event_id"], first["event_id"]);
        let (status, answer) = h
            .post(
                "/api/v1/recharges",
                json!({"idempotency_key": "pay-1", "account": "A1", "amount_paise": 60_000}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(h.balance("A1").await, 50_000);
        // No token, no API.
        let request = Request::builder()
            .uri("/api/v1/accounts")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            h.router.clone().oneshot(request).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_recharge_answers_the_first_receipt_byte_for_byte() {
    for h in harnesses("replayed_recharge") {
        h.customer("A1", "gw-a").await;
        let body = json!({"idempotency_key": "pay-7", "account": "A1", "amount_paise": 25_000})
            .to_string();
        let (status, first) = h.call_raw("POST", "/api/v1/recharges", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{first:?}");
        let (status, again) = h.call_raw("POST", "/api/v1/recharges", Some(&body)).await;
        assert_eq!(status, StatusCode::OK, "{again:?}");
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&first),
            "a repeat must answer the first receipt"
        );
        // The receipt's time is the ledger's: whole UTC seconds, as the statement shows it.
        let receipt: Value = serde_json::from_slice(&first).unwrap();
        let at: DateTime<Utc> = receipt["at"].as_str().unwrap().parse().unwrap();
        assert_eq!(at.timestamp_subsec_nanos(), 0, "{receipt}");
        assert_eq!(h.balance("A1").await, 25_000);
    }
}

/// 15-minute readings of `meter` over the 2 hours before now, using 865 Wh in all.
fn two_hours_to_now(meter: &str) -> Vec<(String, i64, i64)> {
    let end = Utc::now().timestamp() / 900 * 900;
    let used = [0, 60, 150, 270, 400, 520, 640, 760, 865];
    used.iter()
        .enumerate()
        .map(|(i, wh)| (meter.to_owned(), end - 7_200 + 900 * i as i64, *wh))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_says_what_it_rests_on_and_lasts_as_long_as_its_readings_say() {
    for h in harnesses("balance_before_sync") {
        h.customer("A1", "gw-a").await;
        h.recharge("A1", "pay-1", 60_000).await;
        // Before the gateway's first sync: central's figure alone, and not "last sync".
        let report = h
            .ok("GET", "/api/v1/accounts/A1/balance", Value::Null)
            .await;
        assert_eq!(report["last_sync_at"], Value::Null, "{report}");
        assert_eq!(
            report["source"], "central (gateway gw-a has not synced yet)",
            "{report}"
        );
        // No readings: a typical domestic day (8.94 kWh) prices the estimate.
        let typical = gramgrid_central::accounts::typical_daily_paise(
            &TariffBook::builtin(),
            Category::Domestic,
            Utc::now(),
        );
        let days = report["estimated_days_left"].as_f64().unwrap();
        assert!((days - 60_000.0 / typical).abs() < 1e-6, "{report}");

        // The gateway syncs 2 hours of readings: 0.865 kWh.
        let batch = ReadingBatch {
            after_seq: 0,
            through_seq: 9,
            blocks: ReadingBlock::group(two_hours_to_now("M-A1")),
            exports: Vec::new(),
        };
        h.exchange("gw-a", &upload(vec![], Some(batch), 0))
            .await
            .unwrap();
        let report = h
            .ok("GET", "/api/v1/accounts/A1/balance", Value::Null)
            .await;
        assert_eq!(report["source"], "gateway:gw-a last sync", "{report}");
        assert_ne!(report["last_sync_at"], Value::Null, "{report}");
        let units = report["estimated_units_left"].as_f64().unwrap();
        let days = report["estimated_days_left"].as_f64().unwrap();
        // Spreading 0.865 kWh over 7 days would say the credit lasts this long:
        let seven_day_rule = units / (0.865 / 7.0);
        assert!(seven_day_rule > 900.0, "{report}");
        // The readings cover 2 hours; the rest of the first day is a typical domestic one.
        let balance = report["balance_paise"].as_i64().unwrap();
        let charged = 60_000 - balance;
        assert!(charged > 0, "{report}");
        let expected = balance as f64 / (charged as f64 + typical * 22.0 / 24.0);
        assert!(
            (days - expected).abs() < 1e-6,
            "{days} days, not {expected}: {report}"
        );
        assert!((5.0..30.0).contains(&days), "{days} days: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_after_sync_equals_the_gateways_to_the_paisa() {
    for h in harnesses("balance_after_sync") {
        h.customer("A1", "gw-a").await;
        h.recharge("A1", "pay-1", 80_000).await;
        // The gateway's side: its own store, fed the account, the central recharge from the
        // downlink, a fixed charge it made, and readings, late ones included.
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("gateway.db")).unwrap();
        let book = TariffBook::builtin();
        let first = h.exchange("gw-a", &upload(vec![], None, 0)).await.unwrap();
        for record in &first.downlink {
            match &record.event {
                DownlinkEvent::Account {
                    id,
                    consumer_name,
                    category,
                    phone,
                    created_at,
                } => store
                    .upsert_account(&Account {
                        id: id.clone(),
                        consumer_name: consumer_name.clone(),
                        category: (*category).into(),
                        phone: phone.clone(),
                        created_at: *created_at,
                    })
                    .unwrap(),
                DownlinkEvent::Meter {
                    serial,
                    account,
                    installed_at,
                    initial_register_wh,
                    ..
                } => {
                    store
                        .install_meter(&MeterInstall {
                            serial: serial.clone(),
                            account: account.clone(),
                            installed_at: *installed_at,
                            initial_register_wh: *initial_register_wh,
                        })
                        .unwrap();
                }
                DownlinkEvent::Ledger(event) => {
                    store.record_event(&event.clone().into()).unwrap();
                }
                _ => {}
            }
        }
        let fixed = LedgerEvent {
            id: "gw-a:minimum:A1:2026-09".into(),
            account: "A1".into(),
            at: t0() + Duration::hours(20),
            kind: EventKind::MinimumCharge,
            amount_paise: 258,
            expires_at: None,
        };
        store.record_event(&fixed).unwrap();
        let meter = store.meter_id("M-A1").unwrap().unwrap();
        let mut all = readings("M-A1", 1..400);
        // Arrival order at the gateway: every third reading late.
        let (late, on_time): (Vec<_>, Vec<_>) =
            all.drain(..).enumerate().partition(|(i, _)| i % 3 == 0);
        for (_, (_, at, register)) in on_time.iter().chain(late.iter()) {
            store
                .ingest(
                    &book,
                    &[MeterReading {
                        meter,
                        at: DateTime::from_timestamp(*at, 0).unwrap(),
                        register_wh: *register,
                        export_wh: 0,
                    }],
                )
                .unwrap();
        }
        let gateway_balance = store.position("A1", &[]).unwrap().balance_paise;
        // Upload as the gateway does: priority records, and the bulk lane in two slices sent in
        // arrival order, the second slice twice (a resend after a lost answer).
        let on_time: Vec<_> = on_time.into_iter().map(|(_, r)| r).collect();
        let late: Vec<_> = late.into_iter().map(|(_, r)| r).collect();
        let priority = vec![PriorityRecord {
            seq: 1,
            event: UplinkEvent::Ledger(fixed.clone().into()),
        }];
        let a = h
            .exchange(
                "gw-a",
                &upload(
                    priority.clone(),
                    Some(ReadingBatch {
                        after_seq: 0,
                        through_seq: on_time.len() as u64,
                        blocks: ReadingBlock::group(on_time.clone()),
                        exports: Vec::new(),
                    }),
                    first.downlink.last().unwrap().seq,
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            (a.priority_acked, a.readings_acked),
            (1, on_time.len() as u64)
        );
        let second = ReadingBatch {
            after_seq: on_time.len() as u64,
            through_seq: 399,
            blocks: ReadingBlock::group(late),
            exports: Vec::new(),
        };
        for _ in 0..2 {
            let b = h
                .exchange(
                    "gw-a",
                    &upload(
                        priority.clone(),
                        Some(second.clone()),
                        a.downlink.last().map_or(0, |r| r.seq),
                    ),
                )
                .await
                .unwrap();
            assert_eq!((b.priority_acked, b.readings_acked), (1, 399));
        }
        assert_ne!(
            gateway_balance,
            80_000 - 258,
            "readings must have charged something"
        );
        assert_eq!(h.balance("A1").await, gateway_balance);
        let report = h
            .ok("GET", "/api/v1/accounts/A1/balance", Value::Null)
            .await;
        assert_eq!(report["stale"], false);
        assert_eq!(report["source"], "gateway:gw-a last sync");
    }
}

/// A time-of-day tariff with a demand charge published at central reaches the gateway with its
/// slots and rate, and 15-minute readings across the evening peak and the solar hours charge the
/// same at both, to the paisa, whatever order the gateway received them in; so does the gateway's
/// demand charge on the month's maximum demand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_of_day_tariff_reaches_the_gateway_and_both_charge_the_same() {
    // Central's clock stands on t0 for the publish, then moves past the two days of readings (a
    // reading more than a day ahead of central's clock is refused).
    let clock = SimulatedClock::stopped_at(t0());
    for h in harnesses_on("time_of_day", &WallClock::Simulated(clock.clone())) {
        clock.set(t0());
        h.customer("A1", "gw-a").await;
        h.recharge("A1", "pay-1", 500_000).await;
        let tomorrow = gramgrid_core::civil::local_date(t0()) + Duration::days(1);
        let mut version = domestic_version("domestic-tod", tomorrow);
        version.duty_percent = 8.0;
        version.demand_paise_per_kw = 5_000;
        let mut body = serde_json::to_value(&version).unwrap();
        body["tod"] = json!([
            {"name": "peak", "from": "18:00", "to": "22:00", "percent": 25.0},
            {"name": "solar", "from": "09:00", "to": "16:00", "percent": -20.0}
        ]);
        let (status, answer) = h.post("/api/v1/tariffs", body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");

        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("gateway.db")).unwrap();
        clock.set(t0() + Duration::days(4));
        let first = h.exchange("gw-a", &upload(vec![], None, 0)).await.unwrap();
        store.apply_downlink(&first.downlink, t0()).unwrap();
        let mut versions = store.published_tariffs().unwrap();
        versions.retain(|v| v.id == "domestic-tod");
        let slots: Vec<(String, String, f64)> = versions[0]
            .tod
            .iter()
            .map(|s| (s.name.clone(), format!("{}-{}", s.from, s.to), s.percent))
            .collect();
        assert_eq!(
            slots,
            vec![
                ("peak".to_string(), "18:00-22:00".to_string(), 25.0),
                ("solar".to_string(), "09:00-16:00".to_string(), -20.0)
            ]
        );
        assert_eq!(versions[0].demand_paise_per_kw, 5_000);
        let book = TariffBook::new(store.published_tariffs().unwrap()).unwrap();

        // Two local days of 15-minute readings from tomorrow's local midnight, more in the evening.
        let start = gramgrid_core::civil::start_of_local_day(tomorrow);
        let mut register = 0;
        let all: Vec<(String, i64, i64)> = (0..192)
            .map(|i| {
                let at = start + Duration::minutes(15 * i);
                let hour = (i / 4) % 24;
                register += if (18..22).contains(&hour) { 400 } else { 90 };
                ("M-A1".to_string(), at.timestamp(), register)
            })
            .collect();
        let meter = store.meter_id("M-A1").unwrap().unwrap();
        // The gateway hears every fifth reading late.
        let (late, on_time): (Vec<_>, Vec<_>) =
            all.iter().enumerate().partition(|(i, _)| i % 5 == 2);
        for (_, (_, at, register_wh)) in on_time.iter().chain(late.iter()) {
            store
                .ingest(
                    &book,
                    &[MeterReading {
                        meter,
                        at: DateTime::from_timestamp(*at, 0).unwrap(),
                        register_wh: *register_wh,
                        export_wh: 0,
                    }],
                )
                .unwrap();
        }
        assert_eq!(store.verify(&book).unwrap(), Vec::<String>::new());
        // The evening intervals draw 400 Wh in 15 minutes: 1.6 kW, at ₹50 per kW, pro-rated by
        // the version's days in its month.
        let month = gramgrid_core::civil::Month::of(tomorrow);
        let (_, max_demand_w) = store
            .max_demand(meter, start, start + Duration::days(2))
            .unwrap()
            .unwrap();
        assert_eq!(max_demand_w, 1_600);
        let demand = LedgerEvent {
            id: format!("gw-a:demand:A1:{month}"),
            account: "A1".into(),
            at: start + Duration::days(2),
            kind: EventKind::DemandCharge,
            amount_paise: book.demand_charge(Category::Domestic, month, max_demand_w),
            expires_at: None,
        };
        assert!(demand.amount_paise > 0);
        store.record_event(&demand).unwrap();
        let gateway_balance = store.position("A1", &[]).unwrap().balance_paise;
        let answer = h
            .exchange(
                "gw-a",
                &upload(
                    vec![PriorityRecord {
                        seq: 1,
                        event: UplinkEvent::Ledger((&demand).into()),
                    }],
                    Some(ReadingBatch {
                        after_seq: 0,
                        through_seq: all.len() as u64,
                        blocks: ReadingBlock::group(all.clone()),
                        exports: Vec::new(),
                    }),
                    first.downlink.last().unwrap().seq,
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            (answer.priority_acked, answer.readings_acked),
            (1, all.len() as u64)
        );
        assert_eq!(h.balance("A1").await, gateway_balance);
        // The peak's surcharge outweighs the solar rebate with this much evening use.
        let statement = h
            .ok(
                "GET",
                &format!("/api/v1/accounts/A1/statement?month={month}"),
                Value::Null,
            )
            .await;
        assert!(statement["tod_paise"].as_i64().unwrap() > 0, "{statement}");

        // The month's bill from the readings: its slab and time-of-day lines add up to the
        // statement's charges, its charges are the statement's, and it closes where it does.
        let bill = h
            .ok(
                "GET",
                &format!("/api/v1/accounts/A1/bill?month={month}"),
                Value::Null,
            )
            .await;
        // The amounts of `lines` (of `kind` only, if given), added up.
        let sum = |lines: &Value, kind: Option<&str>| -> i64 {
            lines
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| kind.is_none_or(|kind| l["kind"] == kind))
                .map(|l| l["amount_paise"].as_i64().unwrap())
                .sum()
        };
        assert_eq!(
            sum(&bill["tariff"]["lines"], None),
            statement["energy_paise"],
            "{bill}"
        );
        assert_eq!(
            sum(&bill["tariff"]["tod_lines"], None),
            statement["tod_paise"],
            "{bill}"
        );
        assert_eq!(bill["tariff"]["units_wh"], statement["units_wh"]);
        assert_eq!(bill["tariff"]["max_demand_w"], max_demand_w);
        assert_eq!(bill["tariff"]["demand_paise"], demand.amount_paise);
        let charged = |kind| sum(&bill["charges"], Some(kind));
        assert_eq!(charged("energy"), statement["energy_paise"]);
        assert_eq!(charged("time_of_day"), statement["tod_paise"]);
        assert_eq!(charged("duty"), statement["duty_paise"]);
        assert_eq!(charged("demand"), demand.amount_paise);
        let debits: i64 = statement["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["effect_paise"].as_i64().unwrap())
            .filter(|effect| *effect < 0)
            .sum();
        let charges = bill["account"]["charges_paise"].as_i64().unwrap();
        assert_eq!(
            charges,
            -debits
                + statement["energy_paise"].as_i64().unwrap()
                + statement["tod_paise"].as_i64().unwrap()
                + statement["duty_paise"].as_i64().unwrap()
        );
        assert_eq!(bill["account"]["closing_paise"], statement["closing_paise"]);
        assert_eq!(
            bill["account"]["opening_paise"].as_i64().unwrap()
                + bill["account"]["credits_paise"].as_i64().unwrap()
                - charges,
            statement["closing_paise"].as_i64().unwrap()
        );
        // The printable page, in Hindi; a language it does not speak is refused.
        for (lang, wanted) in [("hi", StatusCode::OK), ("fr", StatusCode::BAD_REQUEST)] {
            let path = format!("/api/v1/accounts/A1/bill.html?month={month}&lang={lang}");
            let (status, page) = h.call_raw("GET", &path, None).await;
            assert_eq!(status, wanted, "{lang}");
            let page = String::from_utf8_lossy(&page);
            assert_eq!(
                page.contains("बिजली बिल") && page.contains("@media print"),
                status == StatusCode::OK
            );
        }
    }
}

/// A tariff banking export reaches the gateway with its rule; a rooftop-solar home's readings
/// travel with their export registers and charge the same net units at both ends; the gateway's
/// month-close credit is taken; a batch whose export names a reading it lacks is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_solar_homes_exports_and_its_banked_credit_agree_at_both_ends() {
    let clock = SimulatedClock::stopped_at(t0());
    for h in harnesses_on("net_metering", &WallClock::Simulated(clock.clone())) {
        clock.set(t0());
        h.customer("A1", "gw-a").await;
        h.recharge("A1", "pay-1", 500_000).await;
        let tomorrow = gramgrid_core::civil::local_date(t0()) + Duration::days(1);
        let mut version = domestic_version("domestic-net", tomorrow);
        version.export_banking = true;
        version.export_settlement_paise_per_kwh = 300;
        let (status, answer) = h
            .post("/api/v1/tariffs", serde_json::to_value(&version).unwrap())
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");

        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("gateway.db")).unwrap();
        clock.set(t0() + Duration::days(4));
        let first = h.exchange("gw-a", &upload(vec![], None, 0)).await.unwrap();
        store.apply_downlink(&first.downlink, t0()).unwrap();
        let versions = store.published_tariffs().unwrap();
        let banking = versions.iter().find(|v| v.id == "domestic-net").unwrap();
        assert!(banking.export_banking);
        assert_eq!(banking.export_settlement_paise_per_kwh, 300);
        let book = TariffBook::new(versions).unwrap();

        // A day of readings: 200 Wh in each quarter-hour, and from 09:00 to 15:00 also 500 out.
        let start = gramgrid_core::civil::start_of_local_day(tomorrow);
        let meter = store.meter_id("M-A1").unwrap().unwrap();
        let (mut import, mut export) = (0, 0);
        let readings: Vec<MeterReading> = (0..96)
            .map(|i| {
                import += 200;
                if (36..60).contains(&i) {
                    export += 500;
                }
                MeterReading {
                    meter,
                    at: start + Duration::minutes(15 * i),
                    register_wh: import,
                    export_wh: export,
                }
            })
            .collect();
        store.ingest(&book, &readings).unwrap();
        assert_eq!(store.verify(&book).unwrap(), Vec::<String>::new());
        let batch = store.readings_after(0, 1_000).unwrap().unwrap();
        assert!(!batch.exports.is_empty());

        // The batch with an export for a reading it does not carry: refused, nothing taken.
        let before = h.balance("A1").await;
        let mut broken = batch.clone();
        broken
            .exports
            .push(ReadingBlock::group(vec![("M-A1".into(), 17, 5)])[0].clone());
        let downlink_applied = first.downlink.last().unwrap().seq;
        let refused = h
            .exchange("gw-a", &upload(vec![], Some(broken), downlink_applied))
            .await
            .unwrap_err();
        assert_eq!(refused.0, StatusCode::BAD_REQUEST, "{}", refused.1);
        assert!(refused.1.contains("no reading there"), "{}", refused.1);
        assert_eq!(h.balance("A1").await, before);

        // The month's close at the gateway, with 5 kWh banked before: its credit is taken.
        let month = gramgrid_core::civil::Month::of(tomorrow);
        let close = gramgrid_core::netmeter::close_month(
            &book,
            Category::Domestic,
            month,
            &store.month_segments("A1", month).unwrap(),
            5_000,
        );
        assert!(close.credit_paise > 0, "{close:?}");
        let credit = LedgerEvent {
            id: format!("gw-a:export:A1:{month}"),
            account: "A1".into(),
            at: start + Duration::days(1),
            kind: EventKind::ExportCredit,
            amount_paise: close.amount_paise(),
            expires_at: None,
        };
        store.record_event(&credit).unwrap();
        let answer = h
            .exchange(
                "gw-a",
                &upload(
                    vec![PriorityRecord {
                        seq: 1,
                        event: UplinkEvent::Ledger(credit.into()),
                    }],
                    Some(batch.clone()),
                    downlink_applied,
                ),
            )
            .await
            .unwrap();
        assert_eq!(
            (answer.priority_acked, answer.readings_acked),
            (1, batch.through_seq)
        );
        assert_eq!(
            h.balance("A1").await,
            store.position("A1", &[]).unwrap().balance_paise
        );
        // The month's statement shows the export and the credit.
        let statement = h
            .ok(
                "GET",
                &format!("/api/v1/accounts/A1/statement?month={month}"),
                Value::Null,
            )
            .await;
        assert_eq!(statement["export_wh"], 12_000, "{statement}");
        let credited: Vec<&Value> = statement["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "export_credit")
            .collect();
        assert_eq!(credited.len(), 1, "{statement}");
        assert_eq!(credited[0]["effect_paise"], close.amount_paise());
        // A credit under another gateway's id is refused and flagged, not taken.
        let forged = LedgerEvent {
            id: format!("gw-b:export:A1:{month}"),
            account: "A1".into(),
            at: start + Duration::days(1),
            kind: EventKind::ExportCredit,
            amount_paise: 10_000,
            expires_at: None,
        };
        let balance = h.balance("A1").await;
        h.exchange(
            "gw-a",
            &upload(
                vec![PriorityRecord {
                    seq: 2,
                    event: UplinkEvent::Ledger(forged.into()),
                }],
                None,
                downlink_applied,
            ),
        )
        .await
        .unwrap();
        assert_eq!(h.balance("A1").await, balance);
    }
}

/// A tariff version a gateway would bill otherwise than central (its sync protocol is older than
/// what the version uses) is refused with the gateways named, until they have been upgraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tariff_an_old_gateway_would_misbill_waits_for_its_upgrade() {
    for h in harnesses("old_gateway_tariff") {
        h.customer("A1", "gw-a").await;
        let mut old = upload(vec![], None, 0);
        old.protocol = 9;
        h.exchange("gw-a", &old).await.unwrap();
        let tomorrow = gramgrid_core::civil::local_date(Utc::now()) + Duration::days(1);
        let mut version = domestic_version("domestic-banking", tomorrow + Duration::days(1));
        version.export_banking = true;
        let (status, answer) = h
            .post("/api/v1/tariffs", serde_json::to_value(&version).unwrap())
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains("banking of surplus export"), "{error}");
        assert!(error.contains("gw-a (protocol 9)"), "{error}");
        // Slots are fine for a protocol-9 gateway.
        let mut tod = domestic_version("domestic-demand", tomorrow);
        tod.demand_paise_per_kw = 5_000;
        let (status, answer) = h
            .post("/api/v1/tariffs", serde_json::to_value(&tod).unwrap())
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        // Upgraded: its next exchange speaks the current protocol, and the version goes out.
        h.exchange("gw-a", &upload(vec![], None, 0)).await.unwrap();
        let (status, answer) = h
            .post("/api/v1/tariffs", serde_json::to_value(&version).unwrap())
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
}

/// The office records a connection's sanctioned load; the gateway is told, and its report of a
/// month over it becomes one flag for the office. Out-of-range loads and bad months are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sanctioned_load_reaches_the_gateway_and_its_excess_is_flagged() {
    for h in harnesses("sanctioned_load") {
        h.customer("A1", "gw-a").await;
        let path = "/api/v1/accounts/A1/sanctioned-load";
        let (status, body) = h.call("PUT", path, Some(r#"{"watts": 50}"#)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("outside 100 to 200000 W"),
            "{body}"
        );
        let (status, body) = h.call("PUT", path, Some(r#"{"watts": 2000}"#)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["sanctioned_load_w"], 2000);
        let first = h.exchange("gw-a", &upload(vec![], None, 0)).await.unwrap();
        assert!(first.downlink.iter().any(|r| r.event
            == DownlinkEvent::AccountSanctionedLoad {
                id: "A1".into(),
                watts: Some(2000),
            }));
        let excess = |seq: u64, month: &str| PriorityRecord {
            seq,
            event: UplinkEvent::SanctionedLoadExceeded {
                id: format!("gw-a:overload:A1:{month}"),
                account: "A1".into(),
                month: month.into(),
                intervals: 4,
                max_demand_w: 2_800,
                sanctioned_w: 2_000,
                at: Utc::now(),
            },
        };
        let answer = h
            .exchange(
                "gw-a",
                &upload(
                    vec![
                        excess(1, "2026-11"),
                        excess(2, "November"),
                        excess(3, "2026-11"),
                    ],
                    None,
                    first.downlink.last().unwrap().seq,
                ),
            )
            .await
            .unwrap();
        assert_eq!(answer.priority_acked, 3);
        let flags = h.ok("GET", "/api/v1/flags", Value::Null).await;
        let kinds = |kind: &str| flags_of_kind(&flags, kind);
        let exceeded = kinds("sanctioned_load_exceeded");
        assert_eq!(exceeded.len(), 1, "{flags}");
        assert_eq!(exceeded[0]["account"], "A1");
        assert!(
            exceeded[0]["detail"]
                .as_str()
                .unwrap()
                .contains("2000 W in 4"),
            "{flags}"
        );
        assert!(kinds("absurd_value").iter().any(|f| f["detail"]
            .as_str()
            .unwrap()
            .contains("'November' is not a month")));
        let (status, body) = h.call("DELETE", path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["sanctioned_load_w"], Value::Null);
    }
}

/// `gramgrid central ARGS --config C` on `h`'s database, with the config written in `dir`; the
/// exit code and what it printed (stdout, then stderr).
fn central_cli(h: &Harness, dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let config = dir.join("central.toml");
    let settings = h.central.config();
    std::fs::write(
        &config,
        format!(
            "database_url = {:?}\nsecrets_key_file = {:?}\n",
            settings.database_url, settings.secrets_key_file
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gramgrid"))
        .arg("central")
        .args(args)
        .arg("--config")
        .arg(&config)
        .env("USER", "asha")
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), printed)
}

/// gw-a's audit of `transformer` on 2026-11-29, sent under `id_gateway`'s id: 10 kWh delivered,
/// `consumers_wh` recorded, flagged, with `suspect` (meter, account) ranked first.
fn energy_audit(
    id_gateway: &str,
    transformer: &str,
    consumers_wh: i64,
    suspect: (&str, &str),
) -> UplinkEvent {
    let mut losses = vec![Some((10_000 - consumers_wh) / 95); 95];
    losses.insert(0, None);
    UplinkEvent::EnergyAudit(wire::EnergyAuditDay {
        id: format!("{id_gateway}:audit:{transformer}:2026-11-29"),
        transformer: transformer.into(),
        day: "2026-11-29".into(),
        intervals_compared: 95,
        meters: 2,
        transformer_wh: 10_000,
        consumers_wh,
        allowance_wh: 500,
        flagged: true,
        interval_loss_wh: losses,
        suspects: vec![wire::AuditSuspect {
            meter: suspect.0.into(),
            account: suspect.1.into(),
            score: 80,
            reasons: vec![
                wire::AuditReason::Tamper {
                    kinds: vec!["tamper_magnet".into()],
                },
                wire::AuditReason::FallsWithLoss {
                    usual_wh: 4_200,
                    recorded_wh: 150,
                },
            ],
        }],
        at: Utc.with_ymd_and_hms(2026, 11, 30, 1, 0, 0).unwrap(),
    })
}

/// A distribution transformer's meter in a manifest goes to its gateway with its keys, on no
/// account. The gateway's energy audit of a day is kept (a re-audit replaces it), listed per day
/// and per village, flagged for the office and printed in words; an audit under another
/// gateway's id, of a meter that is not this gateway's transformer, or naming another gateway's
/// meter, is refused and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformer_meter_reaches_its_gateway_and_its_energy_audit_is_kept_compared_and_flagged()
{
    let clock = SimulatedClock::stopped_at(Utc.with_ymd_and_hms(2026, 11, 30, 6, 0, 0).unwrap());
    for h in harnesses_on("energy_audit", &WallClock::Simulated(clock.clone())) {
        let dir = tempfile::tempdir().unwrap();
        let village = |name: &str, meters: &[(&str, &str, &str)]| {
            let mut text = String::from("version = 1\n");
            for (serial, dev_addr, role) in meters {
                text += &format!(
                    "[[meter]]\nserial = \"{serial}\"\ndev_addr = \"{dev_addr}\"\nrole = \"{role}\"\nnwk_skey = \"00112233445566778899aabbccddeeff\"\napp_skey = \"ffeeddccbbaa99887766554433221100\"\n"
                );
            }
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let a = village(
            "a.toml",
            &[
                ("DT-A", "26010100", "dt"),
                ("M1", "26010001", "consumer"),
                ("M2", "26010002", "consumer"),
            ],
        );
        let b = village(
            "b.toml",
            &[("DT-B", "26010200", "dt"), ("N1", "26010003", "consumer")],
        );
        let import = |manifest: &str, gateway: &str| {
            central_cli(
                &h,
                dir.path(),
                &[
                    "import-meters",
                    "--manifest",
                    manifest,
                    "--gateway",
                    gateway,
                    "--installed-at",
                    "2026-11-01T00:00:00Z",
                ],
            )
        };
        let (code, printed) = import(&a, "gw-a");
        assert_eq!(code, 0, "{printed}");
        assert!(
            printed.contains("2 meters added") && printed.contains("1 transformer meters added"),
            "{printed}"
        );
        assert_eq!(import(&b, "gw-b").0, 0);
        let (code, printed) = import(&a, "gw-b");
        assert_eq!(code, 1, "{printed}");
        assert!(
            printed.contains("DT-A is the transformer meter of gateway gw-a, not gw-b"),
            "{printed}"
        );
        let (_, accounts) = h.call("GET", "/api/v1/accounts", None).await;
        assert_eq!(
            accounts.as_array().unwrap().len(),
            3,
            "no account for a transformer"
        );

        let first = h.exchange("gw-a", &upload(vec![], None, 0)).await.unwrap();
        let transformers: Vec<(String, u32, String)> = first
            .downlink
            .iter()
            .filter_map(|r| match &r.event {
                DownlinkEvent::TransformerMeter { serial, keys, .. } => {
                    Some((serial.clone(), keys.dev_addr, keys.nwk_skey.to_lowercase()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            transformers,
            [(
                "DT-A".to_string(),
                0x2601_0100,
                "00112233445566778899aabbccddeeff".to_string()
            )]
        );

        let records = |first_seq: u64, events: Vec<UplinkEvent>| {
            events
                .into_iter()
                .zip(first_seq..)
                .map(|(event, seq)| PriorityRecord { seq, event })
                .collect::<Vec<_>>()
        };
        let applied = first.downlink.last().unwrap().seq;
        let answer = h
            .exchange(
                "gw-a",
                &upload(
                    records(
                        1,
                        vec![
                            energy_audit("gw-a", "DT-A", 8_200, ("M1", "ACC-M1")),
                            energy_audit("gw-b", "DT-B", 8_200, ("N1", "ACC-N1")),
                            energy_audit("gw-a", "DT-B", 8_200, ("M1", "ACC-M1")),
                            energy_audit("gw-a", "DT-X", 8_200, ("M1", "ACC-M1")),
                            energy_audit("gw-a", "DT-A", 5_000, ("N1", "ACC-N1")),
                        ],
                    ),
                    None,
                    applied,
                ),
            )
            .await
            .unwrap();
        assert_eq!(answer.priority_acked, 5);
        // Late readings arrived: the gateway audits the day again.
        let again = energy_audit("gw-a", "DT-A", 8_600, ("M1", "ACC-M1"));
        // The transformer meter's own events are the gateway's to report; gateway B's are not.
        let power_fail = |meter: &str| UplinkEvent::MeterEvent {
            id: format!("ev-{meter}-power_fail-1796000000"),
            meter: meter.into(),
            kind: "power_fail".into(),
            at: Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap(),
            command_id: None,
        };
        let answer = h
            .exchange(
                "gw-a",
                &upload(
                    records(6, vec![again, power_fail("DT-A"), power_fail("DT-B")]),
                    None,
                    applied,
                ),
            )
            .await
            .unwrap();
        assert_eq!(answer.priority_acked, 8);
        let events = h.ok("GET", "/api/v1/meters/DT-A/events", Value::Null).await;
        assert_eq!(events.as_array().unwrap().len(), 1, "{events}");

        let days = h
            .ok(
                "GET",
                "/api/v1/energy-audits?gateway=gw-a&from=2026-11-01&to=2026-11-30",
                Value::Null,
            )
            .await;
        let days = days.as_array().unwrap();
        assert_eq!(days.len(), 1, "{days:?}");
        let day = &days[0];
        assert_eq!(day["id"], "gw-a:audit:DT-A:2026-11-29");
        assert_eq!(
            (&day["consumers_wh"], &day["loss_wh"], &day["loss_permille"]),
            (&json!(8_600), &json!(1_400), &json!(140))
        );
        assert_eq!(day["interval_loss_wh"].as_array().unwrap().len(), 96);
        assert_eq!(day["interval_loss_wh"][0], Value::Null);
        let suspect = &day["suspects"][0];
        assert_eq!(
            (&suspect["meter"], &suspect["score"]),
            (&json!("M1"), &json!(80))
        );
        assert_eq!(
            suspect["reasons"][0],
            json!({"kind": "tamper", "events": ["tamper_magnet"]})
        );
        assert_eq!(
            suspect["why"][1],
            "recorded 0.15 kWh in the hours of most loss, against 4.20 kWh usually"
        );
        let all = h
            .ok(
                "GET",
                "/api/v1/energy-audits?from=2026-11-01&to=2026-11-30",
                Value::Null,
            )
            .await;
        assert_eq!(
            all.as_array().unwrap().len(),
            1,
            "nothing forged was stored"
        );

        let villages = h
            .ok(
                "GET",
                "/api/v1/energy-audits/villages?from=2026-11-29&to=2026-11-29",
                Value::Null,
            )
            .await;
        assert_eq!(
            villages,
            json!([{"gateway": "gw-a", "days": 1, "flagged_days": 1, "transformer_wh": 10_000,
                    "consumers_wh": 8_600, "loss_wh": 1_400, "loss_permille": 140, "allowance_wh": 500}])
        );
        for (query, says) in [
            ("?from=2026-11-31", "from '2026-11-31' is not a date"),
            ("?from=2026-11-30&to=2026-11-01", "is after to"),
        ] {
            for route in ["/api/v1/energy-audits", "/api/v1/energy-audits/villages"] {
                let (status, body) = h.call("GET", &format!("{route}{query}"), None).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{route}{query}: {body}");
                assert!(body["error"].as_str().unwrap().contains(says), "{body}");
            }
        }

        let flags = h.ok("GET", "/api/v1/flags", Value::Null).await;
        let kinds = |kind: &str| flags_of_kind(&flags, kind);
        let loss = kinds("energy_loss");
        assert_eq!(loss.len(), 1, "{flags}");
        assert_eq!(loss[0]["gateway"], "gw-a");
        assert!(
            loss[0]["detail"].as_str().unwrap().contains("2026-11-29"),
            "{flags}"
        );
        assert_eq!(kinds("foreign_record").len(), 5, "{flags}");

        let (code, printed) = central_cli(
            &h,
            dir.path(),
            &["energy-audit", "--from", "2026-11-01", "--to", "2026-11-30"],
        );
        assert_eq!(code, 0, "{printed}");
        for words in [
            "loss 1.40 kWh (14.0%)",
            "2026-11-29 gw-a transformer DT-A",
            "1. meter M1 (account ACC-M1), score 80",
            "- tamper events: tamper_magnet",
            "- recorded 0.15 kWh in the hours of most loss, against 4.20 kWh usually",
        ] {
            assert!(printed.contains(words), "{words}:\n{printed}");
        }
        let (code, printed) = central_cli(
            &h,
            dir.path(),
            &["energy-audit", "--from", "2026-11-30", "--to", "2026-11-01"],
        );
        assert_eq!(code, 2, "{printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_b_cannot_touch_gateway_a_data() {
    for h in harnesses("gateway_isolation") {
        h.customer("A1", "gw-a").await;
        h.customer("B1", "gw-b").await;
        let theft = LedgerEvent {
            id: "gw-b:fixed:A1:2026-10-25".into(),
            account: "A1".into(),
            at: t0(),
            kind: EventKind::FixedCharge,
            amount_paise: 100,
            expires_at: None,
        };
        let readings = Some(ReadingBatch {
            after_seq: 0,
            through_seq: 3,
            blocks: ReadingBlock::group(readings("M-A1", 1..4)),
            exports: Vec::new(),
        });
        let request = upload(
            vec![PriorityRecord {
                seq: 1,
                event: UplinkEvent::Ledger(theft.into()),
            }],
            readings,
            0,
        );
        // Refused record by record, acknowledged so B's lanes go on, and flagged.
        let b = h.exchange("gw-b", &request).await.unwrap();
        assert_eq!((b.priority_acked, b.readings_acked), (1, 3));
        assert_eq!(h.balance("A1").await, 0);
        let flags = h.ok("GET", "/api/v1/flags", Value::Null).await;
        let foreign: Vec<&Value> = flags
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "foreign_record" && f["gateway"] == "gw-b")
            .collect();
        assert_eq!(foreign.len(), 2, "{flags}");
        assert!(
            foreign.iter().any(|f| f["detail"]
                .as_str()
                .unwrap()
                .contains("account 'A1' is assigned to gateway 'gw-a'")),
            "{flags}"
        );
        assert!(
            foreign
                .iter()
                .any(|f| f["detail"].as_str().unwrap().contains("meter 'M-A1'")),
            "{flags}"
        );
        // Nothing of A's in B's downlink.
        let b = h.exchange("gw-b", &upload(vec![], None, 0)).await.unwrap();
        assert!(!format!("{:?}", b.downlink).contains("A1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_lane_is_idempotent_and_stops_at_a_gap() {
    for h in harnesses("priority_lane") {
        h.customer("A1", "gw-a").await;
        let charge = |seq: u64| PriorityRecord {
            seq,
            event: UplinkEvent::Ledger(
                LedgerEvent {
                    id: format!("gw-a:minimum:A1:2026-{seq:02}"),
                    account: "A1".into(),
                    at: t0(),
                    kind: EventKind::MinimumCharge,
                    amount_paise: 100,
                    expires_at: None,
                }
                .into(),
            ),
        };
        let a = h
            .exchange(
                "gw-a",
                &upload(vec![charge(1), charge(2), charge(4)], None, 0),
            )
            .await
            .unwrap();
        assert_eq!(a.priority_acked, 2);
        let b = h
            .exchange(
                "gw-a",
                &upload(vec![charge(2), charge(3), charge(4)], None, 0),
            )
            .await
            .unwrap();
        assert_eq!(b.priority_acked, 4);
        assert_eq!(h.balance("A1").await, -400);
        let mut bad = upload(vec![], None, 0);
        bad.protocol = 99;
        let (status, body) = h.exchange("gw-a", &bad).await.unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("protocol 99"), "{body}");
        // The offline overdraft is reported as a business event.
        let flags = h.ok("GET", "/api/v1/flags", Value::Null).await;
        assert!(
            flags
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["kind"] == "offline_overdraft"),
            "{flags}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_events_and_an_outage_are_stored_once_listed_and_flagged() {
    for h in harnesses("meter_events") {
        for id in ["A1", "A2", "A3"] {
            h.customer(id, "gw-a").await;
        }
        let event = |seq: u64, meter: &str, kind: &str| PriorityRecord {
            seq,
            event: UplinkEvent::MeterEvent {
                id: format!("ev-{meter}-{kind}-{}", t0().timestamp()),
                meter: meter.into(),
                kind: kind.into(),
                at: t0(),
                command_id: None,
            },
        };
        let outage = |seq: u64, ended: Option<DateTime<Utc>>| PriorityRecord {
            seq,
            event: UplinkEvent::SupplyOutage {
                id: "outage-gw-a-1".into(),
                started_at: t0(),
                ended_at: ended,
                meters: vec!["M-A1".into(), "M-A2".into(), "M-A3".into()],
            },
        };
        let first = vec![
            event(1, "M-A1", "tamper_cover_open"),
            event(2, "M-A2", "power_fail"),
            outage(3, None),
        ];
        h.exchange("gw-a", &upload(first, None, 0)).await.unwrap();
        // The same event again (a meter repeats its log), and the outage's end.
        let again = vec![
            event(4, "M-A1", "tamper_cover_open"),
            outage(5, Some(t0() + Duration::hours(1))),
        ];
        h.exchange("gw-a", &upload(again, None, 0)).await.unwrap();
        let events = h.ok("GET", "/api/v1/meters/M-A1/events", Value::Null).await;
        assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
        assert_eq!(events[0]["kind"], "tamper_cover_open");
        let since = (t0() - Duration::days(1)).to_rfc3339().replace('+', "%2B");
        let outages = h
            .ok(
                "GET",
                &format!("/api/v1/outages?gateway=gw-a&since={since}"),
                Value::Null,
            )
            .await;
        assert_eq!(outages.as_array().unwrap().len(), 1, "{outages}");
        assert_eq!(outages[0]["meters"].as_array().unwrap().len(), 3);
        assert!(!outages[0]["ended_at"].is_null(), "{outages}");
        let flags = h.ok("GET", "/api/v1/flags", Value::Null).await;
        let kinds: Vec<&str> = flags
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["kind"].as_str())
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "meter_tamper").count(),
            1,
            "{flags}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "supply_outage").count(),
            1,
            "{flags}"
        );
        let (status, _) = h.call("GET", "/api/v1/outages?limit=0", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_relay_command_is_stored_with_its_reason() {
    for h in harnesses("withdrawn_relay_command") {
        h.customer("A1", "gw-a").await;
        let change = |seq: u64, state: &str, detail: &str| PriorityRecord {
            seq,
            event: UplinkEvent::RelayCommand {
                id: "gw-a:relay:A1:disconnect:1".into(),
                meter: "M-A1".into(),
                action: RelayAction::Disconnect.into(),
                state: state.into(),
                at: t0() + Duration::minutes(seq as i64),
                detail: detail.into(),
            },
        };
        let changes = vec![
            change(1, "queued", "balance 0.00 INR"),
            change(2, "sent", ""),
            change(
                3,
                "withdrawn",
                "no longer wanted: outside every disconnect window",
            ),
        ];
        let answer = h.exchange("gw-a", &upload(changes, None, 0)).await.unwrap();
        assert_eq!(answer.priority_acked, 3);
        let rows = h
            .central
            .db()
            .transaction(|tx| {
                tx.query(
                    "SELECT what, detail FROM relay_events WHERE gateway = $1 ORDER BY at",
                    &["gw-a".into()],
                )
            })
            .await
            .map_err(|e: DbError| e.to_string())
            .unwrap();
        let last = rows.last().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            last.text(0).unwrap(),
            "command gw-a:relay:A1:disconnect:1 Disconnect withdrawn"
        );
        assert_eq!(
            last.text(1).unwrap(),
            "no longer wanted: outside every disconnect window"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voucher_is_single_use_everywhere() {
    for h in harnesses("voucher_single_use") {
        h.customer("A1", "gw-a").await;
        h.customer("B1", "gw-b").await;
        let issued = h
            .ok(
                "POST",
                "/api/v1/vouchers",
                json!({"account": "A1", "amount_paise": 20_000, "valid_days": 30}),
            )
            .await;
        let code = issued["code"].as_str().unwrap();
        let id = issued["redemption_id"].as_str().unwrap();
        // The gateway verifies it offline with the published keys it was sent.
        let keys: Vec<gramgrid_proto::voucher::PublishedKey> =
            serde_json::from_value(h.ok("GET", "/api/v1/voucher-keys", Value::Null).await).unwrap();
        let voucher = gramgrid_proto::voucher::verify(&keys, code, Utc::now()).unwrap();
        let redeemed = vec![
            PriorityRecord {
                seq: 1,
                event: UplinkEvent::VoucherRedeemed {
                    voucher: voucher.clone(),
                    redeemed_at: Utc::now(),
                },
            },
            PriorityRecord {
                seq: 2,
                event: UplinkEvent::Ledger(
                    LedgerEvent {
                        id: id.into(),
                        account: "A1".into(),
                        at: Utc::now(),
                        kind: EventKind::Recharge,
                        amount_paise: 20_000,
                        expires_at: None,
                    }
                    .into(),
                ),
            },
        ];
        h.exchange("gw-a", &upload(redeemed, None, 0))
            .await
            .unwrap();
        assert_eq!(h.balance("A1").await, 20_000);
        // Every other gateway is told to refuse it; central refuses it too.
        let b = h.exchange("gw-b", &upload(vec![], None, 0)).await.unwrap();
        assert!(b.downlink.iter().any(|r| r.event
            == DownlinkEvent::VoucherRevoked {
                redemption_id: id.into()
            }));
        let (status, answer) = h
            .call(
                "POST",
                "/api/v1/vouchers/redeem",
                Some(&json!({"code": code}).to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        // A code redeemed at the counter is refused at a gateway that redeemed it offline anyway:
        // flagged, credited once.
        let counter = h
            .ok(
                "POST",
                "/api/v1/vouchers",
                json!({"account": "A1", "amount_paise": 5_000, "valid_days": 1}),
            )
            .await;
        let counter_code = counter["code"].as_str().unwrap();
        h.ok(
            "POST",
            "/api/v1/vouchers/redeem",
            json!({"code": counter_code}),
        )
        .await;
        assert_eq!(h.balance("A1").await, 25_000);
        let late = gramgrid_proto::voucher::verify(&keys, counter_code, Utc::now()).unwrap();
        h.exchange(
            "gw-a",
            &upload(
                vec![PriorityRecord {
                    seq: 3,
                    event: UplinkEvent::VoucherRedeemed {
                        voucher: late,
                        redeemed_at: Utc::now(),
                    },
                }],
                None,
                0,
            ),
        )
        .await
        .unwrap();
        let flags = h.ok("GET", "/api/v1/flags", Value::Null).await;
        assert!(
            flags
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["kind"] == "double_redemption"),
            "{flags}"
        );
        assert_eq!(h.balance("A1").await, 25_000);
        // Rotation: new key published, old vouchers still verify.
        let rotated = h
            .ok("POST", "/api/v1/voucher-keys/rotate", Value::Null)
            .await;
        assert_eq!(rotated["key_id"], 2);
        let issued = h
            .ok(
                "POST",
                "/api/v1/vouchers",
                json!({"account": "B1", "amount_paise": 1_000, "valid_days": 2}),
            )
            .await;
        assert_eq!(issued["key_id"], 2);
        let cancel = format!(
            "/api/v1/vouchers/{}/cancel",
            issued["redemption_id"].as_str().unwrap()
        );
        assert_eq!(
            h.call("POST", &cancel, None).await.0,
            StatusCode::NO_CONTENT
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_and_documents_every_route() {
    let h = harnesses("openapi").remove(0);
    let (status, served) = h.call("GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string("docs/openapi.json").unwrap()).unwrap();
    assert_eq!(served, file);
    let paths = file["paths"].as_object().unwrap();
    let mut documented = 0;
    for (path, methods) in paths {
        for method in methods.as_object().unwrap().keys() {
            documented += 1;
            assert!(
                gramgrid_central::api::ROUTES.contains(&(method.as_str(), path.as_str()))
                    || path == wire::EXCHANGE_PATH,
                "{method} {path} is documented but not routed"
            );
        }
    }
    for (method, path) in gramgrid_central::api::ROUTES {
        assert!(
            paths.get(*path).and_then(|m| m.get(*method)).is_some(),
            "{method} {path} is not documented"
        );
        // Routed: anything but 404/405 for the documented method.
        let uri = path
            .replace("{id}", "X")
            .replace("{serial}", "X")
            .replace("{hold}", "X")
            .replace("{name}", "X");
        let (status, _) = h.call(&method.to_uppercase(), &uri, Some("{}")).await;
        assert!(
            status != StatusCode::NOT_FOUND || uri.contains("/X"),
            "{method} {path}: {status}"
        );
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
    assert_eq!(documented, gramgrid_central::api::ROUTES.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_benchmark_runs() {
    let figures = gramgrid_sim::central_bench::ingest(&gramgrid_sim::central_bench::IngestBench {
        database_url: None,
        gateways: 2,
        meters_per_gateway: 5,
        readings: 2 * 5 * 96 * 2,
        connections: 2,
    })
    .await
    .unwrap();
    assert_eq!(figures.readings, 1920);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_statements_and_policy_publishing() {
    for h in harnesses("exports") {
        h.customer("A1", "gw-a").await;
        h.recharge("A1", "pay-1", 10_000).await;
        let batch = ReadingBatch {
            after_seq: 0,
            through_seq: 3,
            blocks: ReadingBlock::group(readings("M-A1", 1..4)),
            exports: Vec::new(),
        };
        h.exchange("gw-a", &upload(vec![], Some(batch), 0))
            .await
            .unwrap();
        let request = Request::builder()
            .uri("/api/v1/readings.csv?meter=M-A1")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let response = h.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let csv = String::from_utf8(
            axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "meter,obis,time_utc,value,unit");
        assert_eq!(lines[1], "M-A1,1.0.1.8.0,2026-10-25T00:00:00Z,0.000,kWh");
        assert_eq!(lines[2], "M-A1,1.0.1.8.0,2026-10-25T01:00:00Z,0.307,kWh");
        assert_eq!(lines.len(), 5);
        let statement = h
            .ok(
                "GET",
                "/api/v1/accounts/A1/statement?month=2026-10",
                Value::Null,
            )
            .await;
        assert_eq!(statement["opening_paise"], 0);
        assert_eq!(statement["units_wh"], 63 + 3 * 300);
        // The recharge was made today, after October: it opens a later month.
        let october = statement["closing_paise"].as_i64().unwrap();
        assert_eq!(october, h.balance("A1").await - 10_000);
        let this_month = gramgrid_core::civil::Month::containing(Utc::now()).to_string();
        let now = h
            .ok(
                "GET",
                &format!("/api/v1/accounts/A1/statement?month={this_month}"),
                Value::Null,
            )
            .await;
        assert_eq!(
            now["closing_paise"].as_i64().unwrap(),
            h.balance("A1").await
        );
        let (status, answer) = h
            .call("GET", "/api/v1/accounts/A1/statement?month=2026-13", None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        // A policy version reaches the gateway; an older version is refused.
        let policy = serde_json::to_value(gramgrid_core::policy::PolicyConfig::default()).unwrap();
        for (version, expected) in [(2, StatusCode::CREATED), (1, StatusCode::CONFLICT)] {
            let body = json!({"version": version, "policy": policy}).to_string();
            let (status, answer) = h.call("PUT", "/api/v1/policy", Some(&body)).await;
            assert_eq!(status, expected, "{answer}");
        }
        let sync = h.exchange("gw-a", &upload(vec![], None, 0)).await.unwrap();
        assert!(sync
            .downlink
            .iter()
            .any(|r| matches!(r.event, DownlinkEvent::Policy { version: 2, .. })));
    }
}

/// One GET of the readings export: status, the Link rel="next" target, the X-Next-Cursor, body.
async fn export_page(
    h: &Harness,
    uri: &str,
) -> (StatusCode, Option<String>, Option<String>, String) {
    let request = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = h.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let next = header("link").map(|link| {
        let target = link
            .strip_prefix('<')
            .and_then(|l| l.strip_suffix(">; rel=\"next\""))
            .unwrap_or_else(|| panic!("Link header {link}"));
        target.to_owned()
    });
    let cursor = header("x-next-cursor");
    let body = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    (
        status,
        next,
        cursor,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// Follows the export's `next` links from `first`; every page is a whole CSV of at most `limit`
/// rows. Returns the data lines of all pages in order and the number of pages.
async fn export_all_pages(h: &Harness, first: &str, limit: usize) -> (Vec<String>, usize) {
    let mut rows = Vec::new();
    let mut pages = 0;
    let mut uri = Some(first.to_owned());
    while let Some(current) = uri.take() {
        pages += 1;
        assert!(pages < 1000, "the export never ends");
        let (status, next, cursor, csv) = export_page(h, &current).await;
        assert_eq!(status, StatusCode::OK, "{current}: {csv}");
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("meter,obis,time_utc,value,unit"),
            "{current}"
        );
        let page: Vec<String> = lines.map(String::from).collect();
        assert!(page.len() <= limit, "{current}: {} rows", page.len());
        match (&next, &cursor) {
            (Some(next), Some(cursor)) => {
                assert!(
                    next.ends_with(&format!("cursor={cursor}")),
                    "{next} {cursor}"
                );
                assert_eq!(page.len(), limit, "a page before the last one is full");
            }
            (None, None) => {}
            other => panic!("Link and X-Next-Cursor come together: {other:?}"),
        }
        rows.extend(page);
        uri = next;
    }
    (rows, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readings_export_pages_by_cursor_and_every_reading_comes_once() {
    for h in harnesses("export_pages") {
        h.customer("A1", "gw-a").await;
        h.customer("A2", "gw-a").await;
        let mut all = readings("M-A1", 1..24);
        all.extend(readings("M-A2", 1..24));
        let batch = ReadingBatch {
            after_seq: 0,
            through_seq: all.len() as u64,
            blocks: ReadingBlock::group(all.clone()),
            exports: Vec::new(),
        };
        h.exchange("gw-a", &upload(vec![], Some(batch), 0))
            .await
            .unwrap();
        // One page holds everything: the reference, ordered by meter then time.
        let (status, next, cursor, whole) =
            export_page(&h, "/api/v1/readings.csv?limit=100000").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((next, cursor), (None, None), "one page, nothing follows");
        let reference: Vec<String> = whole.lines().skip(1).map(String::from).collect();
        // Each meter: its installation reading and 23 hourly ones.
        assert_eq!(reference.len(), 48);
        let mut keys: Vec<(String, String)> = reference
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].to_owned(), f[2].to_owned())
            })
            .collect();
        let sorted = {
            let mut k = keys.clone();
            k.sort();
            k
        };
        assert_eq!(keys, sorted, "ordered by meter, then time");
        keys.dedup();
        assert_eq!(keys.len(), 48);

        // Pages of 7 (the last one short), of 24 (one meter each) and of 1.
        for (limit, pages) in [(7, 7), (24, 2), (1, 48)] {
            let (rows, counted) =
                export_all_pages(&h, &format!("/api/v1/readings.csv?limit={limit}"), limit).await;
            assert_eq!(
                rows, reference,
                "limit {limit}: every reading once, in order"
            );
            assert_eq!(counted, pages, "limit {limit}");
        }
        // Exactly one page's worth: no next page is announced.
        let (_, next, _, _) = export_page(&h, "/api/v1/readings.csv?limit=48").await;
        assert_eq!(next, None);
        // The default limit (10,000) holds this export whole.
        let (_, next, _, csv) = export_page(&h, "/api/v1/readings.csv").await;
        assert_eq!((next, csv), (None, whole.clone()));

        // The next link keeps the meter and the time range (an offset time included).
        let from = "2026-10-25T10:30:00%2B05:30"; // 05:00 UTC
        let to = "2026-10-25T20:00:00Z";
        let (rows, pages) = export_all_pages(
            &h,
            &format!("/api/v1/readings.csv?meter=M-A2&from={from}&to={to}&limit=4"),
            4,
        )
        .await;
        let expected: Vec<String> = reference
            .iter()
            .filter(|l| l.starts_with("M-A2,"))
            .filter(|l| {
                let time = l.split(',').nth(2).unwrap();
                ("2026-10-25T05:00:00Z".."2026-10-25T20:00:00Z").contains(&time)
            })
            .cloned()
            .collect();
        assert_eq!(expected.len(), 15);
        assert_eq!(rows, expected);
        assert_eq!(pages, 4);

        // Bad limits and cursors are refused with what to send instead.
        for query in ["limit=0", "limit=100001", "limit=-3", "limit=ten", "limit="] {
            let (status, answer) = h
                .call("GET", &format!("/api/v1/readings.csv?{query}"), None)
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
            let error = answer["error"].as_str().unwrap();
            assert!(error.contains("1 to 100000"), "{query}: {error}");
        }
        for cursor in ["garbage!", "AAAA", "cjE6eDpNLUEx", ""] {
            let (status, answer) = h
                .call(
                    "GET",
                    &format!("/api/v1/readings.csv?cursor={cursor}"),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{cursor}: {answer}");
            let error = answer["error"].as_str().unwrap();
            assert!(error.contains("X-Next-Cursor"), "{cursor}: {error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_real_tls_a_gateway_syncs_with_its_certificate_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki = gramgrid_net::pki::CentralPki::init(&pki_dir, "https://127.0.0.1:8443", &[]).unwrap();
    let bundle = pki.add_gateway("gw-a", 30).unwrap();
    let config = CentralConfig {
        database_url: format!("sqlite:{}", dir.path().join("central.db").display()),
        secrets_key_file: dir.path().join("secrets.key"),
        pki_dir,
        notifications_log: dir.path().join("notifications.log"),
        notify_every: std::time::Duration::from_millis(50),
        api_tokens: vec![ApiToken::new("test", TOKEN, Scope::Admin)],
        ..CentralConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = server::start(config, listener).await.unwrap();
    let url = format!("https://127.0.0.1:{}", running.addr.port());
    let gateway = gramgrid_net::tls::HttpsClient::new(
        gramgrid_net::tls::client_config(&bundle).unwrap(),
        &url,
    )
    .unwrap();
    let t = std::time::Duration::from_secs(10);
    let body = wire::encode(&upload(vec![], None, 0)).unwrap();
    let (status, answer) = gateway
        .post(wire::EXCHANGE_PATH, wire::CONTENT_TYPE, body.clone(), t)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let answer: UploadResponse = wire::decode(&answer).unwrap();
    assert!(matches!(
        answer.downlink[0].event,
        DownlinkEvent::VoucherKeys(_)
    ));
    // The API wants a bearer token, not a certificate: the gateway's client gets 401.
    let (status, _) = gateway.get("/api/v1/accounts", t).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An alert uploaded twice is sent once, through the default log-file sender.
    let alert = PriorityRecord {
        seq: 1,
        event: UplinkEvent::Alert {
            id: "gw-a:low:A1:1".into(),
            account: "A1".into(),
            kind: "low_balance".into(),
            created_at: Utc::now(),
            message: "Balance low".into(),
        },
    };
    running
        .central
        .db()
        .transaction(|tx| {
            gramgrid_central::accounts::put_account(
                tx,
                &gramgrid_central::accounts::Account {
                    language: Default::default(),
                    id: "A1".into(),
                    consumer_name: "Asha".into(),
                    category: gramgrid_core::tariff::Category::Domestic,
                    phone: None,
                    gateway: Some("gw-a".into()),
                    created_at: t0(),
                },
                false,
            )
        })
        .await
        .unwrap();
    for _ in 0..2 {
        let body = wire::encode(&upload(vec![alert.clone()], None, 0)).unwrap();
        let (status, _) = gateway
            .post(wire::EXCHANGE_PATH, wire::CONTENT_TYPE, body, t)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    let log = dir.path().join("notifications.log");
    for _ in 0..100 {
        if log.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let sent = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        sent.lines().filter(|l| l.contains("gw-a:low:A1:1")).count(),
        1,
        "{sent}"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjustments_and_emergency_credit_reach_the_gateway_once() {
    for h in harnesses("adjustments") {
        h.customer("A1", "gw-a").await;
        let adjust = json!({"idempotency_key": "adj-1", "account": "A1", "amount_paise": -1_500, "reason": "meter test fee"});
        h.ok("POST", "/api/v1/adjustments", adjust.clone()).await;
        let (status, _) = h.post("/api/v1/adjustments", adjust).await;
        assert_eq!(status, StatusCode::OK);
        let credit = json!({"idempotency_key": "ec-1", "account": "A1", "amount_paise": 5_000, "valid_days": 3});
        h.ok("POST", "/api/v1/emergency-credits", credit).await;
        // Emergency credit lowers the disconnect threshold, not the balance.
        assert_eq!(h.balance("A1").await, -1_500);
        for (body, needle) in [
            (
                json!({"idempotency_key": "adj-1", "account": "A1", "amount_paise": -1_600, "reason": "x"}),
                "already used",
            ),
            (
                json!({"idempotency_key": "adj-2", "account": "A1", "amount_paise": -1, "reason": " "}),
                "reason",
            ),
            (
                json!({"idempotency_key": "ec-2", "account": "A1", "amount_paise": 5_000, "valid_days": 31}),
                "valid_days",
            ),
        ] {
            let path = if body.get("reason").is_some() {
                "/api/v1/adjustments"
            } else {
                "/api/v1/emergency-credits"
            };
            let (status, answer) = h.post(path, body).await;
            assert!(status.is_client_error(), "{answer}");
            assert!(
                answer["error"].as_str().unwrap().contains(needle),
                "{answer}"
            );
        }
        let sync = h.exchange("gw-a", &upload(vec![], None, 0)).await.unwrap();
        let kinds: Vec<EventKind> = sync
            .downlink
            .iter()
            .filter_map(|r| match &r.event {
                DownlinkEvent::Ledger(e) => Some(e.kind.into()),
                _ => None,
            })
            .collect();
        assert_eq!(
            kinds,
            vec![EventKind::Adjustment, EventKind::EmergencyCredit]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_manifest_is_entered_once_rekeyed_on_change_and_sent_to_its_gateway() {
    let manifest = |nwk: &str| {
        gramgrid_proto::manifest::MeterManifest::parse(&format!(
            "version = 1\n[[meter]]\nserial = \"SIM-00001\"\ndev_addr = \"26010001\"\nnwk_skey = \"{nwk}\"\napp_skey = \"DD50AD492DBB6BC997DB98528D2530D3\"\ncategory = \"commercial\"\n"
        ))
        .unwrap()
    };
    let first = manifest("ABEC61DA682F4CBF30867EFB4D34B34D");
    for h in harnesses("manifest_import") {
        let import = |m: gramgrid_proto::manifest::MeterManifest| {
            h.central
                .db()
                .blocking(move |tx| gramgrid_central::import::import_manifest(tx, &m, "gw-a", t0()))
        };
        let report = import(first.clone()).unwrap();
        assert_eq!((report.added, report.rekeyed), (1, 0));
        let again = import(first.clone()).unwrap();
        assert_eq!(
            (again.added, again.rekeyed),
            (0, 0),
            "a second import changes nothing"
        );
        let rekeyed = import(manifest("00112233445566778899AABBCCDDEEFF")).unwrap();
        assert_eq!((rekeyed.added, rekeyed.rekeyed), (0, 1));

        let (_, accounts) = h.call("GET", "/api/v1/accounts", None).await;
        let account = &accounts.as_array().unwrap()[0];
        assert_eq!(account["id"], "ACC-SIM-00001");
        assert_eq!(account["category"], "commercial");
        assert_eq!(account["gateway"], "gw-a");
        // The gateway is sent the meter with the keys in force (the newest).
        let sync = h.exchange("gw-a", &upload(vec![], None, 0)).await.unwrap();
        let keys: Vec<_> = sync
            .downlink
            .iter()
            .filter_map(|r| match &r.event {
                DownlinkEvent::Meter { keys: Some(k), .. } => Some(k.nwk_skey.to_uppercase()),
                _ => None,
            })
            .collect();
        assert_eq!(
            keys.last().map(String::as_str),
            Some("00112233445566778899AABBCCDDEEFF")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_keys_are_written_in_hex_as_lorawan_tools_write_them() {
    for h in harnesses("meter_keys_hex") {
        h.customer("A1", "gw-a").await;
        let meter = |dev_addr: Value| {
            json!({"serial": "M-HEX", "account": "A1", "installed_at": "2026-11-01T00:00:00Z",
                   "keys": {"dev_addr": dev_addr, "nwk_skey": "00112233445566778899AABBCCDDEEFF",
                            "app_skey": "FFEEDDCCBBAA99887766554433221100"}})
        };
        let (status, answer) = h.post("/api/v1/meters", meter(json!(638_656_298))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("dev_addr"),
            "{answer}"
        );
        let (status, answer) = h.post("/api/v1/meters", meter(json!("26011F2A"))).await;
        assert!(status.is_success(), "{answer}");
        let sync = h.exchange("gw-a", &upload(vec![], None, 0)).await.unwrap();
        assert!(sync.downlink.iter().any(|r| matches!(
            &r.event,
            DownlinkEvent::Meter { keys: Some(k), .. } if k.dev_addr == 0x2601_1F2A
        )));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_with_413_and_the_limit() {
    for h in harnesses("oversized_body") {
        let name = "x".repeat(1024 * 1024);
        let body = json!({"id": "A1", "consumer_name": name, "category": "domestic"}).to_string();
        let (status, answer) = h.call("POST", "/api/v1/accounts", Some(&body)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
        let limit = gramgrid_central::api::MAX_API_BODY_BYTES.to_string();
        assert!(
            answer["error"].as_str().unwrap().contains(&limit),
            "{answer}"
        );
        let (_, accounts) = h.call("GET", "/api/v1/accounts", None).await;
        assert_eq!(accounts, json!([]), "nothing was written");
    }
}

#[test]
fn the_central_database_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db/central.db");
    let config = CentralConfig {
        database_url: format!("sqlite:{}", path.display()),
        secrets_key_file: dir.path().join("secrets.key"),
        ..CentralConfig::default()
    };
    drop(Central::open(config).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_over_the_reading_limit_is_refused_whole_with_413() {
    for h in harnesses("exchange_limit") {
        h.customer("A1", "gw-a").await;
        let (_, before) = h.call_raw("GET", "/api/v1/readings.csv", None).await;
        let over = gramgrid_proto::wire::MAX_READINGS_PER_EXCHANGE as i64 + 1;
        let request = upload(
            vec![],
            Some(ReadingBatch {
                after_seq: 0,
                through_seq: over as u64,
                blocks: ReadingBlock::group(readings("M-A1", 1..over + 1)),
                exports: Vec::new(),
            }),
            0,
        );
        let (status, body) = h.exchange("gw-a", &request).await.unwrap_err();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            body.contains("100000") && body.contains("max_readings"),
            "{body}"
        );
        let (_, after) = h.call_raw("GET", "/api/v1/readings.csv", None).await;
        assert_eq!(before, after, "nothing was stored");
    }
}

/// A gateway holding a valid certificate (stolen, or a box tampered with) sends, over real mutual
/// TLS, money it may not make, another gateway's records and absurd values between two honest
/// records: central applies the honest ones, refuses each of the others alone with a flag naming
/// the gateway, and the gateway's lanes go on.
/// The office's side of a central running as its own process: API calls over HTTPS.
struct Office {
    url: String,
    ca: std::path::PathBuf,
}

impl Office {
    async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (!body.is_null()).then(|| body.to_string());
        let (status, answer) = tokio::task::block_in_place(|| {
            crate::common::api_call(&self.url, &self.ca, TOKEN, method, path, body.as_deref())
        });
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        serde_json::from_str(&answer).unwrap_or(Value::Null)
    }

    async fn balance(&self, account: &str) -> i64 {
        let path = format!("/api/v1/accounts/{account}/balance");
        self.ok("GET", &path, Value::Null).await["balance_paise"]
            .as_i64()
            .unwrap()
    }

    async fn customer(&self, id: &str, gateway: &str, category: &str) {
        self.ok("POST", "/api/v1/accounts", json!({"id": id, "consumer_name": "Asha", "category": category, "gateway": gateway, "created_at": t0()})).await;
        self.ok("POST", "/api/v1/meters", json!({"serial": format!("M-{id}"), "account": id, "installed_at": t0(), "initial_register_wh": 0})).await;
    }
}

/// A gateway holding a valid certificate (stolen, or a box tampered with) sends, over real mutual
/// TLS to `gramgrid central serve` running as its own process, money it may not make, another
/// gateway's records and absurd values between two honest records: central applies the honest
/// ones, refuses each of the others alone with a flag naming the gateway, and the gateway's lanes
/// go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_a_valid_certificate_cannot_make_money_or_touch_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let pki = gramgrid_net::pki::CentralPki::init(&d.join("pki"), &url, &[]).unwrap();
    let bundle = pki.add_gateway("gw-b", 30).unwrap();
    std::fs::write(
        d.join("central.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"sqlite:{}\"\npki_dir = {:?}\nnotifications_log = {:?}\nsecrets_key_file = {:?}\napi_tokens = [\"{TOKEN}\"]\n",
            d.join("central.db").display(),
            d.join("pki"),
            d.join("notifications.log"),
            d.join("secrets.key"),
        ),
    )
    .unwrap();
    let _central = crate::common::Proc::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_gramgrid"))
            .args(["central", "serve", "--config"])
            .arg(d.join("central.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.join("central.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    for _ in 0..120 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let h = Office {
        url: url.clone(),
        ca: d.join("pki/ca.pem"),
    };
    h.customer("A1", "gw-a", "domestic").await;
    h.customer("B1", "gw-b", "commercial").await;
    let h = &h;
    let voucher = |account: &'static str, amount: i64| async move {
        let body = json!({"account": account, "amount_paise": amount, "valid_days": 30});
        h.ok("POST", "/api/v1/vouchers", body).await["code"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let b_code = voucher("B1", 30_000).await;
    let a_code = voucher("A1", 40_000).await;
    let mut forged_code = b_code.clone();
    forged_code.replace_range(10..11, if &b_code[10..11] == "2" { "3" } else { "2" });
    let money = |id: &str, account: &str, kind: EventKind, amount_paise: i64| {
        UplinkEvent::Ledger(
            LedgerEvent {
                id: id.into(),
                account: account.into(),
                at: t0() + Duration::days(1),
                kind,
                amount_paise,
                expires_at: None,
            }
            .into(),
        )
    };
    let now = Utc::now();
    let code = |code: &str| UplinkEvent::VoucherCode {
        code: code.into(),
        redeemed_at: now,
    };
    let forged_voucher = gramgrid_proto::voucher::Voucher {
        key_id: 1,
        voucher_id: 7,
        account: "B1".into(),
        amount_paise: 90_000,
        issued_at: t0(),
        expires_at: t0() + Duration::days(30),
    };
    // (record, the flag kind it must raise, or None for an honest record)
    let records = vec![
        (
            money(
                "gw-b:fixed:B1:2026-10-26",
                "B1",
                EventKind::FixedCharge,
                484,
            ),
            None,
        ),
        (
            money("gw-b:r", "B1", EventKind::Recharge, i64::MAX),
            Some("forged_money"),
        ),
        (
            money("gw-b:adj", "B1", EventKind::Adjustment, 50_000),
            Some("forged_money"),
        ),
        (
            money("gw-b:ec", "B1", EventKind::EmergencyCredit, 50_000),
            Some("forged_money"),
        ),
        (
            money("gw-b:charge", "B1", EventKind::Charge, -50_000),
            Some("forged_money"),
        ),
        (
            money(
                "gw-b:fixed:B1:2026-10-27",
                "B1",
                EventKind::FixedCharge,
                i64::MAX,
            ),
            Some("forged_money"),
        ),
        (
            money(
                "gw-a:fixed:B1:2026-10-28",
                "B1",
                EventKind::FixedCharge,
                484,
            ),
            Some("forged_money"),
        ),
        (
            money("gw-b:fixed:A1:2026-10-26", "A1", EventKind::FixedCharge, 1),
            Some("foreign_record"),
        ),
        // The commercial tariff has no demand charge; and a demand charge names its month.
        (
            money("gw-b:demand:B1:2026-10", "B1", EventKind::DemandCharge, 500),
            Some("forged_money"),
        ),
        (
            money("gw-b:demand:B1:october", "B1", EventKind::DemandCharge, 1),
            Some("forged_money"),
        ),
        (
            money(
                &forged_voucher.redemption_id(),
                "B1",
                EventKind::Recharge,
                90_000,
            ),
            Some("forged_money"),
        ),
        (
            UplinkEvent::VoucherRedeemed {
                voucher: forged_voucher,
                redeemed_at: now,
            },
            Some("forged_voucher"),
        ),
        (code(&forged_code), Some("forged_voucher")),
        (code("NOT-A-VOUCHER"), Some("forged_voucher")),
        (code(&a_code), Some("foreign_record")),
        (
            UplinkEvent::Alert {
                id: "x".into(),
                account: "B1".into(),
                kind: "low_balance".into(),
                created_at: now,
                message: "x".repeat(5_000),
            },
            Some("absurd_value"),
        ),
        (
            UplinkEvent::RelayState {
                meter: "M-B1".into(),
                state: gramgrid_proto::wire::WireRelayState::Connected,
                at: now + Duration::days(400),
            },
            Some("absurd_value"),
        ),
        (code(&b_code), None),
    ];
    let priority: Vec<PriorityRecord> = records
        .iter()
        .enumerate()
        .map(|(i, (event, _))| PriorityRecord {
            seq: i as u64 + 1,
            event: event.clone(),
        })
        .collect();
    let huge = ReadingBlock {
        meter: "M-B1".into(),
        first_at: (t0() + Duration::hours(1)).timestamp(),
        interval_s: 900,
        first_register_wh: 1_000,
        register_deltas: vec![i64::MAX / 2, i64::MAX / 2],
    };
    let theirs = ReadingBlock {
        meter: "M-A1".into(),
        first_at: (t0() + Duration::hours(1)).timestamp(),
        interval_s: 900,
        first_register_wh: 1_000,
        register_deltas: vec![],
    };
    let batch = ReadingBatch {
        after_seq: 0,
        through_seq: 5,
        blocks: vec![huge, theirs],
        exports: Vec::new(),
    };
    let gateway = gramgrid_net::tls::HttpsClient::new(
        gramgrid_net::tls::client_config(&bundle).unwrap(),
        &url,
    )
    .unwrap();
    let t = std::time::Duration::from_secs(10);
    let body = wire::encode(&upload(priority, Some(batch), 0)).unwrap();
    let (status, answer) = gateway
        .post(wire::EXCHANGE_PATH, wire::CONTENT_TYPE, body, t)
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let answer: UploadResponse = wire::decode(&answer).unwrap();
    assert_eq!(
        (answer.priority_acked, answer.readings_acked),
        (records.len() as u64, 5)
    );
    // Only the honest fixed charge and the genuine voucher of B's own account moved money.
    assert_eq!(h.balance("B1").await, 30_000 - 484);
    assert_eq!(h.balance("A1").await, 0);
    let flags = h.ok("GET", "/api/v1/flags", Value::Null).await;
    let flags = flags.as_array().unwrap();
    for (seq, (event, kind)) in records.iter().enumerate() {
        let id = format!("refused:gw-b:{}", seq + 1);
        let flag = flags.iter().find(|f| f["id"] == id.as_str());
        match kind {
            Some(kind) => {
                let flag = flag.unwrap_or_else(|| panic!("no flag for {event:?}"));
                assert_eq!(
                    (flag["kind"].as_str(), flag["gateway"].as_str()),
                    (Some(*kind), Some("gw-b")),
                    "{event:?}: {flag}"
                );
            }
            None => assert!(flag.is_none(), "honest record refused: {flag:?}"),
        }
    }
    for meter in ["M-B1", "M-A1"] {
        assert!(
            flags
                .iter()
                .any(|f| f["id"] == format!("refused:gw-b:readings:5:{meter}")),
            "{meter}: {flags:?}"
        );
    }
    // The lane is not blocked: the next honest record is applied.
    let next = PriorityRecord {
        seq: records.len() as u64 + 1,
        event: money(
            "gw-b:fixed:B1:2026-10-29",
            "B1",
            EventKind::FixedCharge,
            484,
        ),
    };
    let body = wire::encode(&upload(vec![next], None, 0)).unwrap();
    let (status, _) = gateway
        .post(wire::EXCHANGE_PATH, wire::CONTENT_TYPE, body, t)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.balance("B1").await, 30_000 - 2 * 484);
}

/// An account moved to another gateway while the old one still has records of it queued: both
/// gateways keep syncing; the old one's records of the moved account are refused alone and
/// flagged, its other records are applied, and the new one takes the account over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_account_moves_both_gateways_keep_syncing() {
    for h in harnesses("account_move") {
        h.customer("A1", "gw-a").await;
        h.customer("A2", "gw-a").await;
        h.ok("POST", "/api/v1/accounts", json!({"id": "B1", "consumer_name": "Bina", "category": "domestic", "gateway": "gw-b", "created_at": t0()})).await;
        h.recharge("A1", "pay-1", 10_000).await;
        h.ok(
            "PUT",
            "/api/v1/accounts/A1",
            json!({"consumer_name": "Asha", "category": "domestic", "gateway": "gw-b"}),
        )
        .await;
        let minimum = |seq: u64, gateway: &str, account: &str| PriorityRecord {
            seq,
            event: UplinkEvent::Ledger(
                LedgerEvent {
                    id: format!("{gateway}:minimum:{account}:2026-10"),
                    account: account.into(),
                    at: t0() + Duration::days(7),
                    kind: EventKind::MinimumCharge,
                    amount_paise: 4_000,
                    expires_at: None,
                }
                .into(),
            ),
        };
        let mut all = readings("M-A1", 1..4);
        all.extend(readings("M-A2", 1..4));
        let batch = ReadingBatch {
            after_seq: 0,
            through_seq: 6,
            blocks: ReadingBlock::group(all),
            exports: Vec::new(),
        };
        let old = h
            .exchange(
                "gw-a",
                &upload(
                    vec![minimum(1, "gw-a", "A1"), minimum(2, "gw-a", "A2")],
                    Some(batch),
                    0,
                ),
            )
            .await
            .unwrap();
        assert_eq!((old.priority_acked, old.readings_acked), (2, 6));
        assert!(
            old.downlink.iter().any(|r| r.event
                == DownlinkEvent::AccountRemoved {
                    id: "A1".into(),
                    to_gateway: Some("gw-b".into())
                }),
            "the old gateway is told to stop serving the account"
        );
        let a1 = h.balance("A1").await;
        assert!(
            a1 < 10_000,
            "the old gateway's readings from before the move are still charged: {a1}"
        );
        assert!(
            h.balance("A2").await < -4_000,
            "the old gateway's own accounts are charged as usual"
        );
        let flags = h.ok("GET", "/api/v1/flags", Value::Null).await;
        let refused: Vec<&str> = flags
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["kind"] == "foreign_record" && f["gateway"] == "gw-a" && f["account"] == "A1"
            })
            .map(|f| f["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            refused,
            ["refused:gw-a:1"],
            "only the charge the old gateway made after the move is refused: {flags}"
        );
        // The old gateway's next exchange goes on from there; the new one has the account.
        let again = h
            .exchange(
                "gw-a",
                &upload(vec![], None, old.downlink.last().map_or(0, |r| r.seq)),
            )
            .await
            .unwrap();
        assert_eq!((again.priority_acked, again.readings_acked), (2, 6));
        let new = h
            .exchange("gw-b", &upload(vec![minimum(1, "gw-b", "B1")], None, 0))
            .await
            .unwrap();
        assert_eq!(new.priority_acked, 1);
        assert_eq!(h.balance("B1").await, -4_000);
        assert!(new
            .downlink
            .iter()
            .any(|r| matches!(&r.event, DownlinkEvent::Account { id, .. } if id == "A1")));
        assert!(new.downlink.iter().any(|r| matches!(&r.event, DownlinkEvent::Ledger(e) if e.account == "A1" && e.amount_paise == 10_000)));
        // The old gateway's final readings are handed to the new one.
        let handed: usize = new
            .downlink
            .iter()
            .filter_map(|r| match &r.event {
                DownlinkEvent::Readings { blocks } => Some(
                    blocks
                        .iter()
                        .filter(|b| b.meter == "M-A1")
                        .map(ReadingBlock::len)
                        .sum::<usize>(),
                ),
                _ => None,
            })
            .sum();
        assert_eq!(handed, 3, "{:?}", new.downlink);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flood_benchmark_runs_and_every_real_call_succeeds() {
    let settings = gramgrid_sim::flood_bench::FloodBench {
        connections: 150,
        addresses: 2,
        requests: 3,
    };
    let figures = gramgrid_sim::flood_bench::flood(&settings).await.unwrap();
    assert_eq!(figures.requests, 3);
    assert!(figures.connected > 0, "{figures}");
    assert!(figures.to_string().contains("idle connections"));
}

/// Numbers the office enters are bounded: a tariff cannot take effect in the past or today (readings
/// already rated would differ between gateway and central), nor charge absurd rates, and one policy
/// version cannot use up every later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tariffs_and_policies_out_of_bounds_are_refused() {
    for h in harnesses("publish_bounds") {
        let tomorrow = gramgrid_core::civil::local_date(Utc::now()) + Duration::days(1);
        let tariff = |id: &str, from: chrono::NaiveDate, rate: i64| {
            json!({"id": id, "category": "domestic", "effective_from": from, "slabs": [{"paise_per_kwh": rate}],
                   "fixed_monthly_paise": 0, "minimum_monthly_paise": 0, "duty_percent": 0.0})
        };
        let (status, body) = h
            .post(
                "/api/v1/tariffs",
                tariff("today", tomorrow - Duration::days(1), 500),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("from tomorrow"),
            "{body}"
        );
        let (status, body) = h
            .post("/api/v1/tariffs", tariff("absurd", tomorrow, i64::MAX))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("paise per kWh is outside"),
            "{body}"
        );
        let (status, body) = h
            .post("/api/v1/tariffs", tariff("next", tomorrow, 500))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let policy =
            |version: u64| json!({"version": version, "policy": {"holidays": []}}).to_string();
        let (status, body) = h
            .call("PUT", "/api/v1/policy", Some(&policy(u64::MAX)))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("jumps too far"),
            "{body}"
        );
        let (status, body) = h.call("PUT", "/api/v1/policy", Some(&policy(2))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _) = h.call("PUT", "/api/v1/policy", Some(&policy(3))).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "a version within the step still publishes"
        );
    }
}

/// A bug that panics inside a storage transaction costs that request only: it is rolled back,
/// answered with an error id, and the storage worker goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_transaction_is_rolled_back_and_storage_goes_on() {
    for h in harnesses("panicking_transaction") {
        h.customer("A1", "gw-a").await;
        let failed: Result<(), gramgrid_central::CentralError> = h
            .central
            .db()
            .transaction(|tx| {
                tx.execute(
                    "UPDATE accounts SET consumer_name = 'changed' WHERE id = $1",
                    &["A1".into()],
                )?;
                panic!("a bug in a storage job");
            })
            .await;
        let message = failed.unwrap_err().to_string();
        assert!(
            message.contains("internal error") && message.contains("rolled back"),
            "{message}"
        );
        let accounts = h.ok("GET", "/api/v1/accounts", Value::Null).await;
        assert_eq!(
            accounts[0]["consumer_name"], "Asha",
            "the panicking write was rolled back"
        );
        h.recharge("A1", "after-panic", 1_000).await;
        assert_eq!(h.balance("A1").await, 1_000);
    }
}

/// PostgreSQL drops central's connections (a server restart, a network cut): the storage workers
/// notice before their next transaction and reconnect, so requests go on being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_reconnects_after_postgresql_drops_its_connections() {
    let Ok(admin) = std::env::var("GRAMGRID_TEST_POSTGRES_URL") else {
        eprintln!("SKIP: GRAMGRID_TEST_POSTGRES_URL is not set (tests/run sets it)");
        return;
    };
    let h = harnesses("postgres_reconnect").pop().unwrap();
    assert_eq!(h.central.db().backend(), "postgres");
    h.customer("A1", "gw-a").await;
    let database = h
        .central
        .config()
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        let dropped = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&database],
            )
            .unwrap();
        assert!(
            !dropped.is_empty(),
            "central's connections were found and dropped"
        );
    })
    .join()
    .unwrap();
    // Every worker finds its connection gone by a ping and reconnects before it serves: no
    // request fails, however many land on a worker whose connection was dropped.
    for _ in 0..8 {
        let (status, body) = h.call("GET", "/api/v1/accounts/A1/balance", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    h.recharge("A1", "after-reconnect", 500).await;
    assert_eq!(h.balance("A1").await, 500);
}
/// One API call over HTTPS with `token`; the status and the JSON answer (null if not JSON).
async fn https_call(
    url: &str,
    ca: &std::path::Path,
    token: &'static str,
    method: &'static str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (url, ca, path) = (url.to_owned(), ca.to_owned(), path.to_owned());
    let body = body.map(|b| b.to_string());
    let (status, answer) = tokio::task::spawn_blocking(move || {
        crate::common::api_call(&url, &ca, token, method, &path, body.as_deref())
    })
    .await
    .unwrap();
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_each_token_is_held_to_its_scope_and_the_audit_names_who_wrote() {
    const OFFICE: &str = "office-token-0123456789";
    const COUNTER: &str = "counter-token-0123456789";
    const DASHBOARD: &str = "dashboard-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki = gramgrid_net::pki::CentralPki::init(&pki_dir, "https://127.0.0.1:8443", &[]).unwrap();
    // The config file's forms: a plain (admin) token and scoped tables.
    let text = format!(
        "database_url = \"sqlite:{}\"\npki_dir = {:?}\nnotifications_log = {:?}\nsecrets_key_file = {:?}\n\
         api_tokens = [\"{OFFICE}\",\n  {{ name = \"counter-3\", token = \"{COUNTER}\", scope = \"recharge\" }},\n  \
         {{ name = \"dashboard\", token = \"{DASHBOARD}\", scope = \"read\" }}]\n",
        dir.path().join("central.db").display(),
        pki_dir,
        dir.path().join("notifications.log"),
        dir.path().join("secrets.key"),
    );
    let config = CentralConfig::parse(&text).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = server::start(config, listener).await.unwrap();
    let url = format!("https://127.0.0.1:{}", running.addr.port());
    let ca = pki.ca_cert_path();
    let call =
        |token, method, path: &'static str, body| https_call(&url, &ca, token, method, path, body);
    let account =
        json!({"id": "A1", "consumer_name": "Asha", "category": "domestic", "created_at": t0()});
    let (status, answer) = call(OFFICE, "POST", "/api/v1/accounts", Some(account)).await;
    assert_eq!(status, 201, "{answer}");
    let recharge =
        |key: &str| json!({"idempotency_key": key, "account": "A1", "amount_paise": 5_000});
    // A read token reads a balance but cannot recharge: 403 saying which scope is needed.
    let (status, answer) = call(
        DASHBOARD,
        "POST",
        "/api/v1/recharges",
        Some(recharge("r-1")),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["needed_scope"], "recharge", "{answer}");
    assert_eq!(answer["token_scope"], "read", "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("'dashboard'"),
        "{answer}"
    );
    let (status, answer) = call(DASHBOARD, "GET", "/api/v1/accounts/A1/balance", None).await;
    assert_eq!(
        (status, &answer["balance_paise"]),
        (200, &json!(0)),
        "{answer}"
    );
    // A recharge token recharges but cannot publish a tariff, nor read the audit.
    let (status, answer) = call(COUNTER, "POST", "/api/v1/recharges", Some(recharge("r-1"))).await;
    assert_eq!(status, 201, "{answer}");
    let tariff = serde_json::to_value(TariffBook::builtin().versions()[0].clone()).unwrap();
    let (status, answer) = call(COUNTER, "POST", "/api/v1/tariffs", Some(tariff)).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["needed_scope"], "admin", "{answer}");
    assert_eq!(answer["token_scope"], "recharge", "{answer}");
    for token in [COUNTER, DASHBOARD] {
        assert_eq!(call(token, "GET", "/api/v1/audit", None).await.0, 403);
    }
    let (_, answer) = call(DASHBOARD, "GET", "/api/v1/accounts/A1/balance", None).await;
    assert_eq!(answer["balance_paise"], 5_000, "{answer}");
    // The audit lists each write that was made, by token name; the refused ones wrote nothing.
    let (status, audit) = call(OFFICE, "GET", "/api/v1/audit", None).await;
    assert_eq!(status, 200, "{audit}");
    let rows: Vec<(&str, &str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap();
            (field("token"), field("method"), field("path"))
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("token-1", "POST", "/api/v1/accounts"),
            ("counter-3", "POST", "/api/v1/recharges")
        ],
        "{audit}"
    );
    let (_, later) = call(
        OFFICE,
        "GET",
        "/api/v1/audit?since=2100-01-01T00:00:00Z",
        None,
    )
    .await;
    assert_eq!(later, json!([]));
    let (_, one) = call(OFFICE, "GET", "/api/v1/audit?limit=1", None).await;
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    assert_eq!(
        call(OFFICE, "GET", "/api/v1/audit?limit=0", None).await.0,
        400
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_voucher_key_is_refused_at_central_and_sent_to_every_gateway() {
    for h in harnesses("voucher_key_revocation") {
        h.customer("A1", "gw-a").await;
        h.customer("B1", "gw-b").await;
        let voucher = json!({"account": "A1", "amount_paise": 20_000, "valid_days": 30});
        let old = h.ok("POST", "/api/v1/vouchers", voucher.clone()).await;
        assert_eq!(old["key_id"], 1);
        // Revoking the current key starts a new one; a second revocation changes nothing.
        let revoked = h
            .ok("POST", "/api/v1/voucher-keys/1/revoke", Value::Null)
            .await;
        assert_eq!(
            revoked,
            json!({"key_id": 1, "newly_revoked": true, "current_key_id": 2})
        );
        let again = h
            .ok("POST", "/api/v1/voucher-keys/1/revoke", Value::Null)
            .await;
        assert_eq!(again["newly_revoked"], false, "{again}");
        let (status, answer) = h.post("/api/v1/voucher-keys/99/revoke", Value::Null).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        let (status, answer) = h.post("/api/v1/voucher-keys/one/revoke", Value::Null).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        // Central refuses a code of the revoked key, and credits nothing.
        let (status, answer) = h
            .post("/api/v1/vouchers/redeem", json!({"code": old["code"]}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("revoked"),
            "{answer}"
        );
        assert_eq!(h.balance("A1").await, 0);
        // Issuing goes on with the new key.
        let new = h.ok("POST", "/api/v1/vouchers", voucher).await;
        assert_eq!(new["key_id"], 2);
        h.ok(
            "POST",
            "/api/v1/vouchers/redeem",
            json!({"code": new["code"]}),
        )
        .await;
        assert_eq!(h.balance("A1").await, 20_000);
        // Revoking an old key leaves the current one current.
        h.ok("POST", "/api/v1/voucher-keys/rotate", Value::Null)
            .await;
        let revoked = h
            .ok("POST", "/api/v1/voucher-keys/2/revoke", Value::Null)
            .await;
        assert_eq!(revoked["current_key_id"], 3, "{revoked}");
        // Every gateway's downlink carries the key set with the revocations.
        for gateway in ["gw-a", "gw-b"] {
            let sync = h.exchange(gateway, &upload(vec![], None, 0)).await.unwrap();
            let last_keys = sync
                .downlink
                .iter()
                .rev()
                .find_map(|r| match &r.event {
                    DownlinkEvent::VoucherKeys(keys) => Some(keys.clone()),
                    _ => None,
                })
                .unwrap();
            let revoked: Vec<(u16, bool)> =
                last_keys.iter().map(|k| (k.key_id, k.revoked)).collect();
            assert_eq!(revoked, [(1, true), (2, true), (3, false)], "{gateway}");
        }
        // The revocations are in the audit, by token name.
        let audit = h.ok("GET", "/api/v1/audit", Value::Null).await;
        let revocations = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["path"].as_str().unwrap().ends_with("/revoke"))
            .inspect(|r| assert_eq!(r["token"], "test"))
            .count();
        assert_eq!(revocations, 3, "{audit}");
    }
}

/// Central tells a replaced database (another instance) and a restored one (an exchange number it
/// has seen) from a gateway that merely lost an answer (a higher number, the same marks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_or_restored_gateway_database_is_flagged_and_a_lost_answer_is_not() {
    for h in harnesses("gateway_identity") {
        h.customer("A1", "gw-a").await;
        let exchange = |instance: u64, exchange: u64| {
            let mut request = upload(vec![], None, 0);
            request.identity = Some(wire::GatewayIdentity {
                instance,
                exchange,
                priority_acked: 0,
                readings_acked: 0,
            });
            request
        };
        let kinds = || async {
            let flags = h.ok("GET", "/api/v1/flags", Value::Null).await;
            flags
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["kind"].as_str().unwrap().to_owned())
                .filter(|k| k.starts_with("gateway_"))
                .collect::<Vec<_>>()
        };
        for n in 1..=3 {
            h.exchange("gw-a", &exchange(u64::MAX - 1, n))
                .await
                .unwrap();
        }
        // Exchange 4's answer was lost: the gateway goes on with 5.
        h.exchange("gw-a", &exchange(u64::MAX - 1, 5))
            .await
            .unwrap();
        assert!(kinds().await.is_empty());
        h.exchange("gw-a", &exchange(7, 1)).await.unwrap();
        assert_eq!(kinds().await, ["gateway_replaced"]);
        h.exchange("gw-a", &exchange(7, 2)).await.unwrap();
        h.exchange("gw-a", &exchange(7, 2)).await.unwrap();
        assert_eq!(kinds().await, ["gateway_replaced", "gateway_restored"]);
    }
}

/// Voucher signing secrets and meter session keys are sealed in the database under the key file:
/// a copy of the database shows none of them; secrets stored in the clear by an older central are
/// sealed at the next start; a central started with another key file refuses to start.
#[test]
fn secrets_at_rest_are_sealed_under_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("central.db");
    let config = |key: &str| CentralConfig {
        database_url: format!("sqlite:{}", db.display()),
        secrets_key_file: dir.path().join(key),
        ..CentralConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let central = Central::open(config("secrets.key")).unwrap();
    runtime.block_on(async {
        central
            .db()
            .transaction(|tx| {
                let account = gramgrid_central::accounts::Account {
                    language: Default::default(),
                    id: "A1".into(),
                    consumer_name: "Asha".into(),
                    category: Category::Domestic,
                    phone: None,
                    gateway: Some("gw-a".into()),
                    created_at: t0(),
                };
                gramgrid_central::accounts::put_account(tx, &account, false)?;
                let meter = gramgrid_central::accounts::Meter {
                    serial: "M1".into(),
                    account: "A1".into(),
                    installed_at: t0(),
                    initial_register_wh: Some(0),
                    keys: Some(gramgrid_proto::wire::MeterKeys {
                        dev_addr: 0x2601_1F2A,
                        nwk_skey: "00112233445566778899aabbccddeeff".into(),
                        app_skey: "ffeeddccbbaa99887766554433221100".into(),
                    }),
                    dlms: None,
                    relay_state: "unknown".into(),
                };
                gramgrid_central::accounts::put_meter(tx, &meter, false)
            })
            .await
            .unwrap();
    });
    drop(central);
    let raw = rusqlite::Connection::open(&db).unwrap();
    let stored: (String, String, String) = raw
        .query_row(
            "SELECT m.nwk_skey, m.app_skey, k.secret_hex FROM meters m, voucher_keys k",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(
        stored.0.starts_with("sealed1:") && !stored.0.contains("00112233"),
        "{stored:?}"
    );
    assert!(stored.1.starts_with("sealed1:") && stored.2.starts_with("sealed1:"));
    // An older central stored them in the clear: the next start seals them, and the keys still
    // reach the gateway unchanged.
    raw.execute(
        "UPDATE meters SET nwk_skey = '00112233445566778899aabbccddeeff', app_skey = 'ffeeddccbbaa99887766554433221100'",
        [],
    )
    .unwrap();
    let central = Central::open(config("secrets.key")).unwrap();
    let sealed: String = raw
        .query_row("SELECT nwk_skey FROM meters", [], |r| r.get(0))
        .unwrap();
    assert!(sealed.starts_with("sealed1:"));
    let meters = runtime
        .block_on(
            central
                .db()
                .transaction(|tx| gramgrid_central::accounts::list_meters(tx)),
        )
        .unwrap();
    assert_eq!(
        meters[0].keys.as_ref().unwrap().nwk_skey,
        "00112233445566778899aabbccddeeff"
    );
    drop(central);
    let error = Central::open(config("another.key"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("does not open with this secrets key file"),
        "{error}"
    );
}

/// A meter with history handed to another gateway: the new gateway receives the readings central
/// holds and rates them as late readings, so its balance equals central's to the paisa (it does
/// not charge the whole history again from the installation reading).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_account_brings_its_meter_history_and_the_balances_agree() {
    for h in harnesses("move_history") {
        h.customer("A1", "gw-a").await;
        h.recharge("A1", "pay-1", 200_000).await;
        let batch = ReadingBatch {
            after_seq: 0,
            through_seq: 300,
            blocks: ReadingBlock::group(readings("M-A1", 1..300)),
            exports: Vec::new(),
        };
        h.exchange("gw-a", &upload(vec![], Some(batch), 0))
            .await
            .unwrap();
        let charged = h.balance("A1").await;
        assert!(charged < 200_000, "the history was charged at central");
        h.ok(
            "PUT",
            "/api/v1/accounts/A1",
            json!({"consumer_name": "Asha", "category": "domestic", "gateway": "gw-b"}),
        )
        .await;
        // The new gateway: a real store fed the downlink as its sync client would.
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("gateway.db")).unwrap();
        let mut applied = 0;
        loop {
            let answer = h
                .exchange("gw-b", &upload(vec![], None, applied))
                .await
                .unwrap();
            store.apply_downlink(&answer.downlink, Utc::now()).unwrap();
            applied = answer.downlink.last().map_or(applied, |r| r.seq);
            if !answer.more {
                break;
            }
        }
        assert!(store.ingest_handed_over(&TariffBook::builtin()).unwrap() >= 290);
        assert_eq!(store.position("A1", &[]).unwrap().balance_paise, charged);
        assert_eq!(h.balance("A1").await, charged);
    }
}

/// Whether this connection of central's is encrypted, as the server sees it (`pg_stat_ssl`),
/// and with which protocol.
async fn central_connection_tls(h: &Harness) -> (bool, String) {
    h.central
        .db()
        .transaction(|tx| {
            let row = tx
                .query_opt(
                    "SELECT CASE WHEN ssl THEN 1 ELSE 0 END, COALESCE(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )?
                .expect("pg_stat_ssl has a row for every backend");
            Ok::<_, gramgrid_central::CentralError>((row.int(0)? == 1, row.text(1)?))
        })
        .await
        .unwrap()
}

/// `sslmode=require` in database_url: central's connections to PostgreSQL are TLS (the server
/// says so in pg_stat_ssl, for every one of them) and work as plain ones do; with the cluster's
/// CA (`GRAMGRID_TEST_POSTGRES_CA`, set by tests/run) `verify-full` and `verify-ca` connect and
/// another CA is refused at the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_reaches_postgresql_over_tls_when_the_url_asks() {
    let Ok(admin) = std::env::var("GRAMGRID_TEST_POSTGRES_URL") else {
        eprintln!("SKIP: GRAMGRID_TEST_POSTGRES_URL is not set (tests/run sets it)");
        return;
    };
    let admin_check = admin.clone();
    let ssl_on = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&admin_check, postgres::NoTls).unwrap();
        let row = client.query_one("SHOW ssl", &[]).unwrap();
        row.get::<_, String>(0) == "on"
    })
    .join()
    .unwrap();
    if !ssl_on {
        eprintln!(
            "SKIP: the PostgreSQL server of GRAMGRID_TEST_POSTGRES_URL has ssl = off (tests/run turns it on)"
        );
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let url = format!("{}?sslmode=require", fresh_postgres(&admin));
    let h = harness(url.clone(), &dir, WallClock::System).unwrap();
    assert_eq!(h.central.db().backend(), "postgres");
    h.customer("A1", "gw-a").await;
    h.recharge("A1", "over-tls", 2_500).await;
    assert_eq!(h.balance("A1").await, 2_500);
    let (ssl, version) = central_connection_tls(&h).await;
    assert!(ssl, "central's connection is not encrypted");
    assert!(version.starts_with("TLSv1."), "{version}");
    // Every one of central's connections, seen from the admin connection.
    let database = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let admin_count = admin.clone();
    let (encrypted, plain) = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&admin_count, postgres::NoTls).unwrap();
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid WHERE a.datname = $1",
                &[&database],
            )
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    })
    .join()
    .unwrap();
    assert_eq!(
        (encrypted, plain),
        (CentralConfig::default().database_connections as i64, 0),
        "every connection of central's is TLS"
    );
    drop(h);
    // Without sslmode, as before: plain TCP.
    let plain = harness(fresh_postgres(&admin), &dir, WallClock::System).unwrap();
    assert!(!central_connection_tls(&plain).await.0);
    drop(plain);

    let Ok(ca) = std::env::var("GRAMGRID_TEST_POSTGRES_CA") else {
        eprintln!("SKIP verify-full: GRAMGRID_TEST_POSTGRES_CA is not set (tests/run sets it)");
        return;
    };
    for mode in ["verify-full", "verify-ca"] {
        let url = format!("{}?sslmode={mode}&sslrootcert={ca}", fresh_postgres(&admin));
        let h = harness(url, &dir, WallClock::System).unwrap();
        h.customer("A1", "gw-a").await;
        assert_eq!(h.balance("A1").await, 0);
        assert!(central_connection_tls(&h).await.0, "{mode}");
    }
    // A CA that did not sign the server's certificate: no connection, and the error says why.
    let other_ca = dir.path().join("other-pki");
    gramgrid_net::pki::CentralPki::init(&other_ca, "https://127.0.0.1:8443", &[]).unwrap();
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = format!(
            "{}?sslmode={mode}&sslrootcert={}",
            fresh_postgres(&admin),
            other_ca.join("ca.pem").display()
        );
        let Err(error) = harness(url, &dir, WallClock::System) else {
            panic!("{mode}: connected to a server whose certificate the CA did not sign");
        };
        let error = error.to_string();
        assert!(
            error.contains("TLS handshake") && error.contains("UnknownIssuer"),
            "{mode}: {error}"
        );
    }
}
