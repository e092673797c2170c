//! Integration events for the utility's other systems, published to an MQTT broker (`[mqtt]` in
//! the config; docs/mqtt.md has every topic with an example payload).
//!
//! Each event is an [`Event`], queued by [`enqueue`] in the transaction of the change it reports
//! (table `mqtt_events`), so an event exists exactly when its change committed. Only a central
//! with `[mqtt]` configured queues events ([`crate::db::Tx::events`]). The publisher ([`run`])
//! sends the queued rows in `seq` order with QoS 1 over a persistent session (clean session off)
//! and marks a row published only when the broker has acknowledged it (PUBACK). A row whose
//! acknowledgement never came (broker down, connection cut) is published again after the
//! reconnection: delivery is at least once, and every payload carries a unique `event_id` by
//! which a subscriber drops what it has already seen.
use super::db::Tx;
use super::{Central, CentralError, Result};
use crate::config::MqttConfig;
use chrono::{DateTime, SecondsFormat, Utc};
use gramgrid_core::civil::ts;
use rumqttc::{AsyncClient, ConnectionError, MqttOptions, Outgoing, Packet, QoS};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

pub use crate::db::EventOutbox as Outbox;

/// The outbox settings of an `[mqtt]` table.
pub fn outbox_of(config: &MqttConfig) -> Outbox {
    Outbox {
        gateway_down_after_s: i64::try_from(config.gateway_down_after.as_secs())
            .unwrap_or(i64::MAX),
    }
}

/// One integration event. Serialised with its `event` name beside the fields below (see
/// [`Message`]); every time is RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// `gateway/{gateway}/up`: the gateway completed an exchange, for the first time since
    /// events are published, or after it was announced down, or after a silence longer than
    /// `gateway_down_after`.
    GatewayUp {
        /// The gateway id.
        gateway: String,
        /// Its previous exchange, if central had seen one since events are published.
        previous_exchange: Option<String>,
    },
    /// `gateway/{gateway}/down`: the periodic check found no exchange for longer than
    /// `gateway_down_after`.
    GatewayDown {
        /// The gateway id.
        gateway: String,
        /// Its last exchange.
        last_exchange: String,
        /// `gateway_down_after`, in seconds.
        down_after_s: i64,
    },
    /// `gateway/{gateway}/readings`: an exchange carried interval readings.
    Readings {
        /// The gateway id.
        gateway: String,
        /// Readings taken in by the exchange (its own meters', and those handed over by a move).
        count: u64,
        /// Of these, the readings stored for the first time (a resent batch stores none).
        stored: u64,
        /// Serials of the meters read, sorted.
        meters: Vec<String>,
        /// The earliest interval end among the readings.
        first_interval_end: String,
        /// The latest interval end among the readings.
        last_interval_end: String,
    },
    /// `account/{account}/balance`: the account's balance changed at central (a recharge, an
    /// adjustment, a voucher, emergency credit or arrears entered here), or a sync applied
    /// charges or money events of its gateway.
    Balance {
        /// The account id.
        account: String,
        /// Its gateway, if it has one.
        gateway: Option<String>,
        /// The balance after the change, in paise (as `GET /api/v1/accounts/{id}/balance`).
        balance_paise: i64,
        /// What changed it: a money event kind made at central (`recharge`, `adjustment`,
        /// `voucher_recharge`, `emergency_credit`, `arrears`, ...) or `sync`.
        cause: String,
        /// The money event made at central, for the causes other than `sync`.
        ledger_event: Option<String>,
    },
    /// `account/{account}/relay`: a gateway reported a relay command's progress (`report` =
    /// `command`) or a meter's relay state (`report` = `state`).
    Relay {
        /// The account of the meter.
        account: String,
        /// The gateway that reported it.
        gateway: String,
        /// The meter's serial.
        meter: String,
        /// `command` or `state`.
        report: String,
        /// The command's id at the gateway (`command` only).
        command: Option<String>,
        /// `connect` or `disconnect` (`command` only).
        action: Option<String>,
        /// A command's state (`queued`, `sent`, `acknowledged`, `failed`, `timed_out`,
        /// `withdrawn`), or the relay's (`connected`, `disconnected`, `unknown`).
        state: String,
        /// When it happened (the gateway's clock).
        at: String,
        /// Free text from the gateway (why a disconnect was withdrawn, ...); may be empty.
        detail: String,
    },
    /// `account/{account}/alert`: a message to the consumer was queued (a gateway's alert, or
    /// central's own "recharge received").
    Alert {
        /// The account id.
        account: String,
        /// The notification's id (the same as in the notification log).
        notification: String,
        /// `recharge_received`, `low_balance`, `disconnected`, `reconnected`, `daily_balance`, ...
        kind: String,
        /// The text for the consumer.
        message: String,
        /// When it was decided.
        created_at: String,
    },
    /// `gateway/{gateway}/flag` (or `central/flag` for a flag about no gateway): a business
    /// event for the office was flagged (`GET /api/v1/flags`).
    Flag {
        /// The flag's id.
        flag: String,
        /// Its kind (`offline_overdraft`, `double_redemption`, `breaker_held`, ...).
        kind: String,
        /// The gateway concerned, if any.
        gateway: Option<String>,
        /// The account concerned, if any.
        account: Option<String>,
        /// Whether someone must act (e.g. `breaker_held`).
        urgent: bool,
        /// What happened.
        detail: String,
        /// When.
        at: String,
    },
}

/// The published payload: the event with its unique id and time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Unique per event: a redelivery (QoS 1 is at least once) carries the same id.
    pub event_id: String,
    /// When the event happened (RFC 3339 UTC).
    pub time: String,
    /// The event, its name under `event`.
    #[serde(flatten)]
    pub event: Event,
}

/// A time as the payloads write it: RFC 3339, UTC, whole seconds.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One topic level made of an id: `/`, `+`, `#` and `%` are percent-encoded so an id is always
/// one level and never a wildcard (ids are checked to carry no spaces or control characters).
pub fn topic_level(id: &str) -> String {
    let mut level = String::with_capacity(id.len());
    for c in id.chars() {
        match c {
            '%' => level.push_str("%25"),
            '/' => level.push_str("%2F"),
            '+' => level.push_str("%2B"),
            '#' => level.push_str("%23"),
            '\0' => level.push_str("%00"),
            c => level.push(c),
        }
    }
    level
}

impl Event {
    /// The event's topic below `topic_prefix`.
    pub fn topic(&self) -> String {
        let gateway = |id: &str, what: &str| format!("gateway/{}/{what}", topic_level(id));
        let account = |id: &str, what: &str| format!("account/{}/{what}", topic_level(id));
        match self {
            Event::GatewayUp { gateway: g, .. } => gateway(g, "up"),
            Event::GatewayDown { gateway: g, .. } => gateway(g, "down"),
            Event::Readings { gateway: g, .. } => gateway(g, "readings"),
            Event::Balance { account: a, .. } => account(a, "balance"),
            Event::Relay { account: a, .. } => account(a, "relay"),
            Event::Alert { account: a, .. } => account(a, "alert"),
            Event::Flag {
                gateway: Some(g), ..
            } => gateway(g, "flag"),
            Event::Flag { gateway: None, .. } => "central/flag".into(),
        }
    }
}

/// Queues `event`, which happened at `at`, in the caller's transaction, when `[mqtt]` is
/// configured (otherwise does nothing).
pub(crate) fn enqueue(tx: &mut dyn Tx, event: Event, at: DateTime<Utc>) -> Result<()> {
    if tx.events().is_none() {
        return Ok(());
    }
    let topic = event.topic();
    let message = Message {
        event_id: uuid::Uuid::now_v7().to_string(),
        time: rfc3339(at),
        event,
    };
    let payload =
        serde_json::to_string(&message).map_err(|e| CentralError::Corrupt(e.to_string()))?;
    tx.execute(
        "INSERT INTO mqtt_events (id, topic, payload, created_at) VALUES ($1, $2, $3, $4)",
        &[
            message.event_id.into(),
            topic.into(),
            payload.into(),
            ts(at).into(),
        ],
    )?;
    Ok(())
}

/// Notes a completed exchange of `gateway` at `now` (called with its row locked): queues
/// `gateway/{id}/up` when it was announced down, never seen, or silent for longer than
/// `gateway_down_after`.
pub(crate) fn gateway_exchanged(tx: &mut dyn Tx, gateway: &str, now: DateTime<Utc>) -> Result<()> {
    let Some(down_after) = tx.events().map(|e| e.gateway_down_after_s) else {
        return Ok(());
    };
    let known = tx.query_opt(
        "SELECT up, last_seen FROM mqtt_gateways WHERE gateway = $1",
        &[gateway.into()],
    )?;
    let now_s = ts(now);
    let (announce, previous) = match known {
        None => (true, None),
        Some(row) => {
            let (up, last_seen) = (row.int(0)? != 0, row.int(1)?);
            (
                !up || now_s - last_seen > down_after,
                Some(gramgrid_core::civil::from_ts(last_seen)),
            )
        }
    };
    tx.execute(
        "INSERT INTO mqtt_gateways (gateway, up, last_seen) VALUES ($1, 1, $2)
         ON CONFLICT (gateway) DO UPDATE SET up = 1, last_seen = $2",
        &[gateway.into(), now_s.into()],
    )?;
    if announce {
        let event = Event::GatewayUp {
            gateway: gateway.to_owned(),
            previous_exchange: previous.map(rfc3339),
        };
        enqueue(tx, event, now)?;
    }
    Ok(())
}

/// Announces down (`gateway/{id}/down`) every gateway announced up whose last exchange is older
/// than `gateway_down_after` at `now`; returns how many.
pub fn check_gateways(tx: &mut dyn Tx, now: DateTime<Utc>) -> Result<usize> {
    let Some(down_after) = tx.events().map(|e| e.gateway_down_after_s) else {
        return Ok(0);
    };
    let cutoff = ts(now).saturating_sub(down_after);
    let rows = tx.query(
        "SELECT gateway, last_seen FROM mqtt_gateways WHERE up = 1 AND last_seen < $1 ORDER BY gateway",
        &[cutoff.into()],
    )?;
    let mut down = 0;
    for row in rows {
        let (gateway, last_seen) = (row.text(0)?, row.int(1)?);
        // Only if no exchange came in meanwhile (PostgreSQL runs exchanges concurrently).
        let changed = tx.execute(
            "UPDATE mqtt_gateways SET up = 0 WHERE gateway = $1 AND up = 1 AND last_seen = $2",
            &[gateway.as_str().into(), last_seen.into()],
        )?;
        if changed == 1 {
            let event = Event::GatewayDown {
                gateway,
                last_exchange: rfc3339(gramgrid_core::civil::from_ts(last_seen)),
                down_after_s: down_after,
            };
            enqueue(tx, event, now)?;
            down += 1;
        }
    }
    Ok(down)
}

/// Queues a balance event for each of `accounts`, with the balance after `cause` (as
/// `balance_of` derives it: `accounts::balance_paise`, passed in so this module stays below
/// `accounts`).
pub(crate) fn balances_changed(
    tx: &mut dyn Tx,
    balance_of: fn(&mut dyn Tx, &str) -> Result<i64>,
    accounts: &[String],
    cause: &str,
    ledger_event: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    if tx.events().is_none() {
        return Ok(());
    }
    for account in accounts {
        let balance_paise = balance_of(tx, account)?;
        let gateway = tx
            .query_opt(
                "SELECT gateway FROM accounts WHERE id = $1",
                &[account.into()],
            )?
            .and_then(|row| row.opt_text(0).ok().flatten());
        let event = Event::Balance {
            account: account.clone(),
            gateway,
            balance_paise,
            cause: cause.to_owned(),
            ledger_event: ledger_event.map(str::to_owned),
        };
        enqueue(tx, event, now)?;
    }
    Ok(())
}

/// Most rows published before their acknowledgements are awaited (MQTT's in-flight window).
pub const BATCH: usize = 100;

/// How often the publisher looks for new rows when the outbox is empty.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// The longest wait between two connection attempts (the wait doubles from 1 s up to this).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One queued row.
struct Queued {
    seq: i64,
    topic: String,
    payload: String,
}

async fn unpublished(central: &Central, limit: usize) -> Result<Vec<Queued>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    central
        .db()
        .transaction(move |tx| {
            tx.query(
                "SELECT seq, topic, payload FROM mqtt_events WHERE published_at IS NULL ORDER BY seq LIMIT $1",
                &[limit.into()],
            )?
            .iter()
            .map(|row| -> Result<Queued> {
                Ok(Queued {
                    seq: row.int(0)?,
                    topic: row.text(1)?,
                    payload: row.text(2)?,
                })
            })
            .collect()
        })
        .await
}

async fn mark_published(central: &Central, seqs: Vec<i64>) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    let now = ts(central.now());
    central
        .db()
        .transaction(move |tx| {
            for chunk in seqs.chunks(crate::db::IN_CHUNK) {
                let mut params: Vec<crate::db::Value> = vec![now.into()];
                params.extend(chunk.iter().map(|&seq| seq.into()));
                tx.execute(
                    &format!(
                        "UPDATE mqtt_events SET published_at = $1 WHERE seq IN ({})",
                        crate::db::placeholders(2, chunk.len())
                    ),
                    &params,
                )?;
            }
            Ok(())
        })
        .await
}

/// Why a publishing session ended.
enum Ended {
    /// The server is shutting down.
    Stopped,
    /// The broker could not be reached, refused central, or the connection broke.
    Broker(String),
    /// Central's own storage failed.
    Storage(CentralError),
}

impl From<CentralError> for Ended {
    fn from(error: CentralError) -> Ended {
        Ended::Storage(error)
    }
}

fn options(config: &MqttConfig) -> std::result::Result<MqttOptions, String> {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options
        .set_clean_session(false)
        .set_keep_alive(config.keep_alive)
        .set_inflight(BATCH as u16);
    if let Some(username) = &config.username {
        let password = match &config.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("[mqtt] password_file {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            None => String::new(),
        };
        options.set_credentials(username, password);
    }
    Ok(options)
}

/// Publishes queued events until `shutdown` completes, reconnecting with back-off; also announces
/// gateways down every so often. Run by `server::serve` when `[mqtt]` is configured.
pub async fn run(central: Arc<Central>, shutdown: impl std::future::Future<Output = ()>) {
    let Some(config) = central.config().mqtt.clone() else {
        return;
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let publisher = publish(Arc::clone(&central), config.clone(), stopped.clone());
    let watcher = watch_gateways(Arc::clone(&central), &config, stopped);
    let stopper = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::join!(publisher, watcher, stopper);
}

/// Deletes the events the broker acknowledged before `before`; returns how many.
pub fn prune_published(tx: &mut dyn Tx, before: DateTime<Utc>) -> Result<u64> {
    Ok(tx.execute(
        "DELETE FROM mqtt_events WHERE published_at IS NOT NULL AND published_at < $1",
        &[ts(before).into()],
    )?)
}

/// Runs [`check_gateways`] every quarter of `gateway_down_after` (at most every minute), and
/// [`prune_published`] with `keep_published`.
async fn watch_gateways(
    central: Arc<Central>,
    config: &MqttConfig,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let every =
        (config.gateway_down_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let keep = chrono::Duration::from_std(config.keep_published).unwrap_or(chrono::Duration::MAX);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let now = central.now();
        if let Err(error) = central
            .db()
            .transaction(move |tx| check_gateways(tx, now))
            .await
        {
            tracing::warn!(%error, "the gateway up/down check failed; will retry");
        }
        let before = now
            .checked_sub_signed(keep)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        if let Err(error) = central
            .db()
            .transaction(move |tx| prune_published(tx, before))
            .await
        {
            tracing::warn!(%error, "deleting published MQTT events failed; will retry");
        }
    }
}

async fn publish(
    central: Arc<Central>,
    config: MqttConfig,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut connected = false;
        let ended = session(&central, &config, &mut stopped, &mut connected).await;
        if connected {
            backoff = Duration::from_secs(1);
        }
        match ended {
            Ended::Stopped => return,
            Ended::Broker(error) => tracing::warn!(
                broker = %format!("{}:{}", config.host, config.port),
                client_id = %config.client_id,
                %error,
                retry_in = ?backoff,
                "MQTT broker unreachable or the connection broke; events stay queued and are published after reconnecting (check [mqtt] host and port, that the broker runs and accepts this client id, username and password_file)"
            ),
            Ended::Storage(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "MQTT publisher could not read or mark its outbox; will retry")
            }
        }
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: connects, then publishes the outbox in batches until the connection breaks
/// or the server stops. A fresh client each time, so nothing of a broken connection's in-flight
/// state is resent by the client itself: unacknowledged rows are simply read again.
async fn session(
    central: &Central,
    config: &MqttConfig,
    stopped: &mut tokio::sync::watch::Receiver<bool>,
    connected: &mut bool,
) -> Ended {
    let options = match options(config) {
        Ok(options) => options,
        Err(error) => return Ended::Broker(error),
    };
    let (client, mut eventloop) = AsyncClient::new(options, 2 * BATCH);
    // The event loop runs in a task of its own (its poll is not cancel-safe), forwarding what
    // happens; it ends with the first error.
    let (events_tx, mut events) = tokio::sync::mpsc::channel(4 * BATCH);
    let driver = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if events_tx.send(event).await.is_err() || failed {
                return;
            }
        }
    });
    let _abort = AbortOnDrop(driver);
    let prefix = config.topic_prefix.clone();
    // Connected when the broker's CONNACK arrives.
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return Ended::Stopped,
            event = events.recv() => match event {
                Some(Ok(rumqttc::Event::Incoming(Packet::ConnAck(_)))) => break,
                Some(Ok(_)) => {}
                Some(Err(error)) => return Ended::Broker(describe(&error)),
                None => return Ended::Broker("the MQTT client stopped".into()),
            }
        }
    }
    *connected = true;
    tracing::info!(
        broker = %format!("{}:{}", config.host, config.port),
        "MQTT publisher connected"
    );
    loop {
        let batch = match unpublished(central, BATCH).await {
            Ok(batch) => batch,
            Err(error) => return Ended::Storage(error),
        };
        if batch.is_empty() {
            let wake = tokio::time::sleep(POLL_EVERY);
            tokio::pin!(wake);
            let mut stopping = false;
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => {
                        stopping = true;
                        break;
                    }
                    () = &mut wake => break,
                    event = events.recv() => match event {
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return Ended::Broker(describe(&error)),
                        None => return Ended::Broker("the MQTT client stopped".into()),
                    }
                }
            }
            if stopping {
                return disconnect(&client, &mut events).await;
            }
            continue;
        }
        // Packet ids are given in request order: the n-th outgoing PUBLISH is the n-th row.
        let mut waiting: VecDeque<i64> = VecDeque::with_capacity(batch.len());
        for row in &batch {
            let topic = format!("{prefix}/{}", row.topic);
            if let Err(error) = client
                .publish(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    row.payload.clone().into_bytes(),
                )
                .await
            {
                return Ended::Broker(error.to_string());
            }
            waiting.push_back(row.seq);
        }
        let mut in_flight: HashMap<u16, i64> = HashMap::new();
        let mut acked = Vec::with_capacity(batch.len());
        let ended = loop {
            if acked.len() == batch.len() {
                break None;
            }
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => break Some(Ended::Stopped),
                event = events.recv() => match event {
                    Some(Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid)))) => {
                        if let Some(seq) = waiting.pop_front() {
                            in_flight.insert(pkid, seq);
                        }
                    }
                    Some(Ok(rumqttc::Event::Incoming(Packet::PubAck(ack)))) => {
                        if let Some(seq) = in_flight.remove(&ack.pkid) {
                            acked.push(seq);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => break Some(Ended::Broker(describe(&error))),
                    None => break Some(Ended::Broker("the MQTT client stopped".into())),
                }
            }
        };
        // What the broker acknowledged is published, whatever happens next.
        if let Err(error) = mark_published(central, acked).await {
            return Ended::Storage(error);
        }
        match ended {
            None => {}
            Some(Ended::Stopped) => return disconnect(&client, &mut events).await,
            Some(other) => return other,
        }
    }
}

/// Says goodbye to the broker (bounded: the server is stopping).
async fn disconnect(
    client: &AsyncClient,
    events: &mut tokio::sync::mpsc::Receiver<std::result::Result<rumqttc::Event, ConnectionError>>,
) -> Ended {
    if client.disconnect().await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(event)) = events.recv().await {
                if matches!(event, rumqttc::Event::Outgoing(Outgoing::Disconnect)) {
                    return;
                }
            }
        })
        .await;
    }
    Ended::Stopped
}

fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {code:?}")
        }
        other => other.to_string(),
    }
}

/// Aborts a task when dropped (the client's event loop ends with its session).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests;
