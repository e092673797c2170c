//! The events and their documentation, and the publisher against a real Mosquitto broker that is
//! killed and restarted in the middle.
use super::*;
use crate::accounts::{self, Account, RechargeRequest};
use crate::testing::{
    central_clocked, central_configured, fresh_postgres, priority_upload, TestCentral,
};
use chrono::{Duration as Span, TimeZone};
use gramgrid_core::tariff::Category;
use gramgrid_net::wallclock::SimulatedClock;
use gramgrid_proto::wire::{
    ReadingBatch, ReadingBlock, UplinkEvent, WireRelayAction, WireRelayState,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// One example of every variant, as the code builds them.
fn every_variant() -> Vec<Event> {
    vec![
        Event::GatewayUp {
            gateway: "gw-a".into(),
            previous_exchange: Some("2026-11-30T05:10:00Z".into()),
        },
        Event::GatewayDown {
            gateway: "gw-a".into(),
            last_exchange: "2026-11-30T05:30:00Z".into(),
            down_after_s: 900,
        },
        Event::Readings {
            gateway: "gw-a".into(),
            count: 8,
            stored: 8,
            meters: vec!["M1".into(), "M2".into()],
            first_interval_end: "2026-11-30T04:30:00Z".into(),
            last_interval_end: "2026-11-30T05:15:00Z".into(),
        },
        Event::Balance {
            account: "A1".into(),
            gateway: Some("gw-a".into()),
            balance_paise: 9_650,
            cause: "recharge".into(),
            ledger_event: Some("central:recharge:0193".into()),
        },
        Event::Relay {
            account: "A1".into(),
            gateway: "gw-a".into(),
            meter: "M1".into(),
            report: "command".into(),
            command: Some("cmd-7".into()),
            action: Some("disconnect".into()),
            state: "acknowledged".into(),
            at: "2026-11-30T05:31:12Z".into(),
            detail: String::new(),
        },
        Event::Alert {
            account: "A1".into(),
            notification: "gw-a/alert-12".into(),
            kind: "low_balance".into(),
            message: "Balance low".into(),
            created_at: "2026-11-30T05:30:00Z".into(),
        },
        Event::Flag {
            flag: "overdraft:A1:2026-11-30".into(),
            kind: "offline_overdraft".into(),
            gateway: Some("gw-a".into()),
            account: Some("A1".into()),
            urgent: false,
            detail: "balance -250 paise after sync with gateway 'gw-a'".into(),
            at: "2026-11-30T05:30:00Z".into(),
        },
    ]
}

fn event_name(event: &Event) -> String {
    serde_json::to_value(event).unwrap()["event"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The JSON examples of docs/mqtt.md, each with the topic written on the line before its block.
fn documented_examples() -> Vec<(String, serde_json::Value)> {
    let text = include_str!("../../../../docs/mqtt.md");
    let mut examples = Vec::new();
    let mut lines = text.lines().peekable();
    let mut topic = String::new();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("Topic: `") {
            topic = rest.split('`').next().unwrap_or_default().to_owned();
        }
        if line.trim() == "```json" {
            let mut block = String::new();
            for line in lines.by_ref() {
                if line.trim() == "```" {
                    break;
                }
                block.push_str(line);
                block.push('\n');
            }
            let value = serde_json::from_str(&block)
                .unwrap_or_else(|e| panic!("docs/mqtt.md example under {topic}: {e}\n{block}"));
            examples.push((topic.clone(), value));
        }
    }
    examples
}

#[test]
fn every_documented_example_is_exactly_what_the_code_publishes() {
    let examples = documented_examples();
    let mut documented = BTreeSet::new();
    for (topic, example) in &examples {
        // Read as the code's type and written back: a field the code does not have, or lacks,
        // or names differently, makes the two differ.
        let message: Message = serde_json::from_value(example.clone())
            .unwrap_or_else(|e| panic!("{topic}: {e}\n{example}"));
        assert_eq!(
            &serde_json::to_value(&message).unwrap(),
            example,
            "the example of {topic} differs from what the code writes"
        );
        assert_eq!(
            format!("gramgrid/{}", message.event.topic()),
            *topic,
            "the example's topic"
        );
        documented.insert(event_name(&message.event));
    }
    for event in every_variant() {
        assert!(
            documented.contains(&event_name(&event)),
            "docs/mqtt.md has no example of {}",
            event_name(&event)
        );
    }
}

#[test]
fn every_payload_carries_its_event_id_time_and_name() {
    for event in every_variant() {
        let message = Message {
            event_id: "0193a1f0-0000-7000-8000-000000000001".into(),
            time: rfc3339(Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap()),
            event: event.clone(),
        };
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(json["event_id"], "0193a1f0-0000-7000-8000-000000000001");
        assert_eq!(json["time"], "2026-11-30T05:30:00Z");
        assert_eq!(json["event"], event_name(&event));
        let back: Message = serde_json::from_value(json).unwrap();
        assert_eq!(back, message);
    }
}

#[test]
fn an_id_is_always_one_topic_level_and_never_a_wildcard() {
    assert_eq!(topic_level("A-1"), "A-1");
    assert_eq!(topic_level("a/b+c#d%e"), "a%2Fb%2Bc%23d%25e");
    let event = Event::Alert {
        account: "village/7#".into(),
        notification: "n".into(),
        kind: "low_balance".into(),
        message: "m".into(),
        created_at: "2026-11-30T05:30:00Z".into(),
    };
    assert_eq!(event.topic(), "account/village%2F7%23/alert");
    let flag = Event::Flag {
        flag: "f".into(),
        kind: "k".into(),
        gateway: None,
        account: None,
        urgent: false,
        detail: "d".into(),
        at: "2026-11-30T05:30:00Z".into(),
    };
    assert_eq!(flag.topic(), "central/flag");
}

fn mqtt_config(port: u16) -> MqttConfig {
    MqttConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: "gramgrid-central-test".into(),
        keep_alive: Duration::from_secs(5),
        ..MqttConfig::default()
    }
}

fn rows(t: &TestCentral) -> Vec<(String, String, Option<i64>)> {
    t.tx(|tx| {
        Ok(tx
            .query(
                "SELECT id, topic, published_at FROM mqtt_events ORDER BY seq",
                &[],
            )?
            .iter()
            .map(|r| {
                (
                    r.text(0).unwrap(),
                    r.text(1).unwrap(),
                    r.opt_int(2).unwrap(),
                )
            })
            .collect())
    })
    .unwrap()
}

#[test]
fn the_outbox_and_the_gateway_up_down_rule_work_on_postgresql_too() {
    let Some(url) = fresh_postgres("gg_mqtt") else {
        return;
    };
    let t = central_configured(|c| {
        c.database_url = url;
        c.mqtt = Some(mqtt_config(1883));
    });
    assert_eq!(t.central.db().backend(), "postgres");
    up_down_and_up(&t);
    // The publisher's reads and marks, in seq order.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let queued = unpublished(&t.central, 3).await.unwrap();
        let seqs: Vec<i64> = queued.iter().map(|q| q.seq).collect();
        assert_eq!(seqs.len(), 3);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        mark_published(&t.central, seqs.clone()).await.unwrap();
        let rest = unpublished(&t.central, 100).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert!(rest[0].seq > seqs[2]);
    });
    assert_eq!(rows(&t).iter().filter(|r| r.2.is_some()).count(), 3);
}

#[test]
fn without_mqtt_nothing_is_queued_and_with_it_a_gateway_goes_up_down_and_up() {
    let off = central_configured(|_| {});
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap();
    off.account("A1", Some("gw-a"));
    exchange(&off, "gw-a", 1, vec![], None, now);
    assert!(rows(&off).is_empty());
    up_down_and_up(&central_configured(|c| c.mqtt = Some(mqtt_config(1883))));
}

#[test]
fn published_events_are_deleted_after_keep_published_and_unpublished_ones_never() {
    let t = central_configured(|c| c.mqtt = Some(mqtt_config(1883)));
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap();
    up_down_and_up(&t);
    let seqs: Vec<i64> = t
        .tx(|tx| {
            Ok(tx
                .query("SELECT seq FROM mqtt_events ORDER BY seq", &[])?
                .iter()
                .map(|r| r.int(0).unwrap())
                .collect())
        })
        .unwrap();
    assert_eq!(seqs.len(), 4);
    // Acknowledged 8 days ago, 6 days ago, just now; the fourth never.
    for (seq, published) in seqs
        .iter()
        .zip([now - Span::days(8), now - Span::days(6), now])
    {
        let (seq, published) = (*seq, ts(published));
        t.tx(move |tx| {
            Ok(tx.execute(
                "UPDATE mqtt_events SET published_at = $1 WHERE seq = $2",
                &[published.into(), seq.into()],
            )?)
        })
        .unwrap();
    }
    let keep = Span::from_std(MqttConfig::default().keep_published).unwrap();
    assert_eq!(t.tx(move |tx| prune_published(tx, now - keep)).unwrap(), 1);
    let left: Vec<Option<i64>> = rows(&t).into_iter().map(|r| r.2).collect();
    assert_eq!(left, [Some(ts(now - Span::days(6))), Some(ts(now)), None]);
    // Long after: everything published goes, the unpublished event stays for the publisher.
    assert_eq!(
        t.tx(move |tx| prune_published(tx, now + Span::days(30)))
            .unwrap(),
        2
    );
    assert_eq!(rows(&t).len(), 1);
}

/// A gateway's exchanges and silences, on a central with `[mqtt]`: up, down, up, up.
fn up_down_and_up(t: &TestCentral) {
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap();
    t.account("A1", Some("gw-a"));
    let topics = |t: &TestCentral| -> Vec<String> { rows(t).into_iter().map(|r| r.1).collect() };
    exchange(t, "gw-a", 1, vec![], None, now);
    assert_eq!(topics(t), ["gateway/gw-a/up"]);
    // Another exchange within gateway_down_after: nothing new.
    exchange(t, "gw-a", 1, vec![], None, now + Span::minutes(10));
    let down = |at: DateTime<Utc>| t.tx(move |tx| check_gateways(tx, at)).unwrap();
    assert_eq!(down(now + Span::minutes(20)), 0);
    assert_eq!(topics(t).len(), 1);
    // 15 minutes after the last exchange: down, once.
    assert_eq!(down(now + Span::minutes(26)), 1);
    assert_eq!(down(now + Span::minutes(40)), 0);
    exchange(t, "gw-a", 1, vec![], None, now + Span::minutes(41));
    assert_eq!(
        topics(t),
        ["gateway/gw-a/up", "gateway/gw-a/down", "gateway/gw-a/up"]
    );
    // Back after a silence the check did not see (central was stopped): up again.
    exchange(t, "gw-a", 1, vec![], None, now + Span::minutes(90));
    assert_eq!(topics(t).len(), 4);
    let payloads: Vec<Message> = t
        .tx(|tx| {
            Ok(tx
                .query("SELECT payload FROM mqtt_events ORDER BY seq", &[])?
                .iter()
                .map(|r| serde_json::from_str(&r.text(0).unwrap()).unwrap())
                .collect())
        })
        .unwrap();
    assert_eq!(
        payloads[1].event,
        Event::GatewayDown {
            gateway: "gw-a".into(),
            last_exchange: "2026-11-30T05:40:00Z".into(),
            down_after_s: 900
        }
    );
    assert_eq!(
        payloads[3].event,
        Event::GatewayUp {
            gateway: "gw-a".into(),
            previous_exchange: Some("2026-11-30T06:11:00Z".into())
        }
    );
}

/// Applies one exchange of `gateway` at `now`: priority records from `first_seq`, and readings.
fn exchange(
    t: &TestCentral,
    gateway: &str,
    first_seq: u64,
    events: Vec<UplinkEvent>,
    readings: Option<ReadingBatch>,
    now: DateTime<Utc>,
) {
    let mut request = priority_upload(first_seq, events, now);
    request.readings = readings;
    t.upload(gateway, request, now);
}

// ---- against a real broker ----

/// The broker binary, or `None` (with a loud message) when it is not installed outside CI.
fn mosquitto() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/sbin/mosquitto");
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("/usr/sbin/mosquitto is missing in CI: tests/run installs the `mosquitto` package");
    }
    eprintln!(
        "\n!!!!! SKIPPED: /usr/sbin/mosquitto is not installed, so the MQTT publisher was NOT tested against a broker (apt-get install mosquitto) !!!!!\n"
    );
    None
}

struct Broker {
    child: Child,
}

impl Broker {
    /// Starts Mosquitto on 127.0.0.1:`port` with its persistence in `dir`, and waits until it
    /// accepts connections. (`user root`: started as root, it would otherwise switch to the
    /// `mosquitto` user, who cannot write in the test's directory; ignored when not root.)
    fn start(binary: &Path, dir: &Path, port: u16) -> Broker {
        let conf = dir.join("mosquitto.conf");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\nautosave_interval 1\nlog_dest file {}\n",
                data.display(),
                dir.join("mosquitto.log").display()
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .spawn()
            .expect("mosquitto starts");
        let broker = Broker { child };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen on {port} within 10 s (see {})",
                dir.join("mosquitto.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    /// Kills the broker (SIGKILL: no goodbye, no last save) and waits for it to be gone.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to `limit` for `done`, checking every 50 ms; panics with `what` otherwise.
async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Received = Arc<std::sync::Mutex<Vec<(String, Message)>>>;

/// A subscriber to `gramgrid/#` with a persistent session (QoS 1), reconnecting on its own;
/// records every message it receives, redeliveries included.
fn subscriber(
    port: u16,
    subscribed: Arc<std::sync::atomic::AtomicBool>,
    sessions: Arc<std::sync::Mutex<Vec<bool>>>,
) -> Received {
    let received: Received = Arc::default();
    let mut options = MqttOptions::new("utility-billing", "127.0.0.1", port);
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let seen = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack))) => {
                    sessions.lock().unwrap().push(ack.session_present);
                    // The broker kept the subscription across its restart when the session is
                    // present; subscribed only at the first connection.
                    if !ack.session_present {
                        client
                            .subscribe("gramgrid/#", QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                }
                Ok(rumqttc::Event::Incoming(Packet::SubAck(_))) => {
                    subscribed.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(rumqttc::Event::Incoming(Packet::Publish(publish))) => {
                    let message: Message = serde_json::from_slice(&publish.payload)
                        .unwrap_or_else(|e| panic!("{}: {e}", publish.topic));
                    seen.lock().unwrap().push((publish.topic.clone(), message));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    received
}

fn account(id: &str, gateway: &str, created_at: DateTime<Utc>) -> Account {
    Account {
        language: Default::default(),
        id: id.into(),
        consumer_name: "Asha".into(),
        category: Category::Domestic,
        phone: None,
        gateway: Some(gateway.into()),
        created_at,
    }
}

fn recharge(t: &TestCentral, key: &str, amount_paise: i64, now: DateTime<Utc>) {
    let request = RechargeRequest {
        idempotency_key: key.into(),
        account: "A1".into(),
        amount_paise,
        reference: None,
    };
    t.tx(move |tx| accounts::recharge(tx, &request, now))
        .unwrap();
}

/// `n` readings of meter M1 every 15 minutes from `first_at`, 100 Wh apart from `first_wh`.
fn readings(after: u64, n: usize, first_at: DateTime<Utc>, first_wh: i64) -> ReadingBatch {
    ReadingBatch {
        after_seq: after,
        through_seq: after + n as u64,
        blocks: vec![ReadingBlock {
            meter: "M1".into(),
            first_at: ts(first_at),
            interval_s: 900,
            first_register_wh: first_wh,
            register_deltas: vec![100; n - 1],
        }],
        exports: Vec::new(),
    }
}

fn relay_command(id: &str, state: &str, at: DateTime<Utc>) -> UplinkEvent {
    UplinkEvent::RelayCommand {
        id: id.into(),
        meter: "M1".into(),
        action: WireRelayAction::Disconnect,
        state: state.into(),
        at,
        detail: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_a_persistent_subscriber_once_across_a_broker_restart() {
    let Some(binary) = mosquitto() else { return };
    let broker_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Broker::start(&binary, broker_dir.path(), port);
    // The publisher's gateway watcher reads central's clock: it stays at the scenario's time, so
    // the watcher announces gw-a down only when the test moves past `gateway_down_after`.
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 5, 30, 0).unwrap();
    let clock = SimulatedClock::stopped_at(now).into();
    let t = central_clocked(|c| c.mqtt = Some(mqtt_config(port)), clock);
    let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sessions: Arc<std::sync::Mutex<Vec<bool>>> = Arc::default();
    let received = subscriber(port, Arc::clone(&subscribed), Arc::clone(&sessions));
    wait_for(Duration::from_secs(10), "the subscription", || {
        subscribed.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let subscribed_at = std::time::SystemTime::now();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let publisher = tokio::spawn(run(Arc::clone(&t.central), async move {
        let _ = stopped.await;
    }));

    // Broker up: a recharge, then an exchange with readings, an alert and a relay command.
    let enrolled = account("A1", "gw-a", now - Span::days(1));
    t.tx(move |tx| accounts::enrol_household(tx, &enrolled, "M1"))
        .unwrap();
    recharge(&t, "pay-1", 20_000, now);
    let alert = UplinkEvent::Alert {
        id: "alert-1".into(),
        account: "A1".into(),
        kind: "low_balance".into(),
        created_at: now,
        message: "Balance low".into(),
    };
    let first_reading = now - Span::hours(2);
    exchange(
        &t,
        "gw-a",
        1,
        vec![alert, relay_command("cmd-1", "sent", now)],
        Some(readings(0, 8, first_reading, 1_000)),
        now,
    );
    let all_ids = |t: &TestCentral| -> BTreeSet<String> {
        rows(t).into_iter().map(|(id, _, _)| id).collect()
    };
    let received_ids = |received: &Received| -> BTreeSet<String> {
        received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.event_id.clone())
            .collect()
    };
    let before = all_ids(&t);
    assert_eq!(before.len(), 7, "{:?}", rows(&t));
    wait_for(Duration::from_secs(20), "the first events", || {
        received_ids(&received) == before
    })
    .await;
    // The broker saved the subscriber's session (autosave every second) before it is killed.
    let saved = broker_dir.path().join("data/mosquitto.db");
    wait_for(Duration::from_secs(10), "the broker's autosave", || {
        std::fs::metadata(&saved)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at > subscribed_at)
    })
    .await;
    broker.kill();

    // Broker down: more events, queued in central's outbox meanwhile.
    let later = now + Span::minutes(5);
    recharge(&t, "pay-2", 5_000, later);
    exchange(
        &t,
        "gw-a",
        3,
        vec![
            relay_command("cmd-1", "acknowledged", later),
            UplinkEvent::RelayState {
                meter: "M1".into(),
                state: WireRelayState::Disconnected,
                at: later,
            },
            UplinkEvent::ClockSkew {
                gateway_time: later - Span::minutes(9),
                central_time: later,
            },
        ],
        Some(readings(8, 4, now, 1_700)),
        later,
    );
    let down_at = later + Span::minutes(16);
    assert_eq!(t.tx(move |tx| check_gateways(tx, down_at)).unwrap(), 1);
    exchange(&t, "gw-a", 6, vec![], None, down_at + Span::minutes(1));
    let unpublished = rows(&t).iter().filter(|r| r.2.is_none()).count();
    assert_eq!(unpublished, 9, "{:?}", rows(&t));

    // Broker back on the same port and persistence: everything arrives.
    let broker = Broker::start(&binary, broker_dir.path(), port);
    let every = all_ids(&t);
    wait_for(
        Duration::from_secs(60),
        "every event after the restart",
        || received_ids(&received) == every,
    )
    .await;
    wait_for(
        Duration::from_secs(10),
        "every row marked published",
        || rows(&t).iter().all(|r| r.2.is_some()),
    )
    .await;
    // The subscriber's session (its subscription) survived the broker's restart.
    assert_eq!(*sessions.lock().unwrap(), [false, true]);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("the publisher stops on shutdown")
        .unwrap();
    drop(broker);

    // After dropping redeliveries by event_id: each event once, as stored, on its topic.
    let stored: BTreeMap<String, String> = rows(&t)
        .into_iter()
        .map(|(id, topic, _)| (id, topic))
        .collect();
    let mut seen: BTreeMap<String, (String, Message)> = BTreeMap::new();
    for (topic, message) in received.lock().unwrap().iter() {
        if let Some(earlier) = seen.get(&message.event_id) {
            assert_eq!(
                earlier,
                &(topic.clone(), message.clone()),
                "a redelivery differs"
            );
            continue;
        }
        assert_eq!(*topic, format!("gramgrid/{}", stored[&message.event_id]));
        assert_eq!(*topic, format!("gramgrid/{}", message.event.topic()));
        seen.insert(message.event_id.clone(), (topic.clone(), message.clone()));
    }
    assert_eq!(seen.len(), 16);
    let mut topics: Vec<(String, String)> = seen
        .values()
        .map(|(topic, m)| (topic.clone(), event_name(&m.event)))
        .collect();
    topics.sort();
    let expect = |topic: &str, event: &str, n: usize| vec![(topic.to_owned(), event.to_owned()); n];
    let expected: Vec<(String, String)> = [
        expect("gramgrid/account/A1/alert", "alert", 3),
        expect("gramgrid/account/A1/balance", "balance", 4),
        expect("gramgrid/account/A1/relay", "relay", 3),
        expect("gramgrid/gateway/gw-a/down", "gateway_down", 1),
        expect("gramgrid/gateway/gw-a/flag", "flag", 1),
        expect("gramgrid/gateway/gw-a/readings", "readings", 2),
        expect("gramgrid/gateway/gw-a/up", "gateway_up", 2),
    ]
    .concat();
    assert_eq!(topics, expected);

    let events: Vec<&Event> = seen.values().map(|(_, m)| &m.event).collect();
    assert!(events.contains(&&Event::Readings {
        gateway: "gw-a".into(),
        count: 8,
        stored: 8,
        meters: vec!["M1".into()],
        first_interval_end: "2026-11-30T03:30:00Z".into(),
        last_interval_end: "2026-11-30T05:15:00Z".into(),
    }));
    assert!(events.iter().any(|e| matches!(e,
        Event::Relay { report, command, action, state, .. }
            if report == "command" && command.as_deref() == Some("cmd-1")
                && action.as_deref() == Some("disconnect") && state == "acknowledged")));
    assert!(events.iter().any(|e| matches!(e,
        Event::Relay { report, state, command: None, .. }
            if report == "state" && state == "disconnected")));
    assert!(events.iter().any(|e| matches!(e,
        Event::Flag { kind, gateway, .. } if kind == "clock_skew" && gateway.as_deref() == Some("gw-a"))));
    // The last balance event is the balance central reports.
    let balance = t.tx(|tx| accounts::balance_paise(tx, "A1")).unwrap();
    let last_balance = rows(&t)
        .iter()
        .rev()
        .find(|r| r.1 == "account/A1/balance")
        .map(|r| seen[&r.0].1.event.clone())
        .unwrap();
    assert!(
        matches!(&last_balance, Event::Balance { balance_paise, cause, .. } if *balance_paise == balance && cause == "sync"),
        "{last_balance:?}, balance {balance}"
    );
    assert!(events.iter().any(|e| matches!(e,
        Event::Balance { cause, ledger_event: Some(_), balance_paise, .. }
            if cause == "recharge" && *balance_paise == 20_000)));
}
