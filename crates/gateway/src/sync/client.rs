//! The gateway's sync client: runs exchanges with the central server on a schedule, backs off with
//! jitter while the link is down, and catches up at once when it returns.
//!
//! A session repeats exchanges until nothing is left to upload and central has nothing more to send.
//! Each exchange: build the upload from the store (priority records first, then a slice of readings),
//! send it, then record central's acknowledgements and apply the downlink records. Anything lost on
//! the way is simply sent again: every record is idempotent on the central side, and nothing is
//! dropped from the gateway until central has acknowledged it, however long the link is down.
use crate::health::Health;
use crate::store::{Store, StoreError};
use crate::wakers::Wakers;
use chrono::{DateTime, Utc};
use gramgrid_core::clock;
use gramgrid_net::wallclock::WallClock;
use gramgrid_proto::wire::{self, ReadingBlock, UploadRequest, UploadResponse, WireError};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Sync settings (the `[sync]` table of the gateway config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Enrolment bundle written by `gramgrid central add-gateway`; without one the gateway runs
    /// offline only.
    pub bundle: Option<PathBuf>,
    /// When to sync while the link is up: a cron expression (UTC).
    pub schedule: String,
    /// Priority records (money, relay, alerts) per exchange.
    pub max_priority_records: usize,
    /// Readings per exchange.
    pub max_readings: usize,
    /// An exchange that takes longer is abandoned and retried.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First wait after a failed exchange; it doubles per failure, with jitter, up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between retries: the backoff stops doubling here (with jitter, the wait is half
    /// to all of it).
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// A clock further than this from central's is not trusted for disconnects.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// The push channel's longest wait at central between sessions; zero switches it off
    /// ([`super::push`]).
    #[serde(with = "humantime_serde")]
    pub push_wait: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            bundle: None,
            schedule: "0 */5 * * * *".into(),
            max_priority_records: 500,
            max_readings: 20_000,
            request_timeout: Duration::from_secs(60),
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(15 * 60),
            max_clock_skew: Duration::from_secs(120),
            push_wait: Duration::from_secs(15 * 60),
        }
    }
}

/// Carries one exchange body to the central server and brings back its answer.
pub trait Transport: Send + Sync {
    /// Sends one encoded upload (`wire::encode` of an `UploadRequest`) and returns central's
    /// encoded answer. The session puts `request_timeout` around it.
    fn exchange(
        &self,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// Why an exchange did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No HTTP answer: connection, TLS or HTTP failure (the detail says which).
    #[error("central server unreachable: {0}")]
    Unreachable(String),
    /// Central answered with a non-2xx status, e.g. 403 for a record about another gateway's data.
    #[error("central server refused the exchange (HTTP {status}): {message}")]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body, usually central's explanation.
        message: String,
    },
    /// No answer within this limit (`sync.request_timeout`).
    #[error("no answer from the central server within {0:?}")]
    Timeout(Duration),
}

/// Why a session stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The exchange got no usable answer from central.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The upload could not be encoded, or central's answer not decoded (or has another protocol
    /// version).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Reading the upload from, or applying the answer to, the store failed.
    #[error("gateway store: {0}")]
    Store(#[from] StoreError),
    /// The shared gateway's lock is poisoned: a task panicked while holding it.
    #[error("the gateway state is unavailable (a task panicked while holding it)")]
    Poisoned,
}

/// What one session moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SessionReport {
    /// Request/answer round trips completed.
    pub exchanges: usize,
    /// Encoded (compressed) bytes sent to central.
    pub bytes_up: usize,
    /// Encoded (compressed) bytes received from central.
    pub bytes_down: usize,
    /// Priority outbox records uploaded, summed over exchanges (one sent again counts again).
    pub priority_records: usize,
    /// Readings uploaded, summed over exchanges (one sent again counts again).
    pub readings: usize,
    /// Downlink records applied to the store (ones already applied are not counted).
    pub downlink_records: usize,
}

/// Upper bound on exchanges in one session (a 7-day outage of 5,000 meters is ~170 at the defaults).
const MAX_EXCHANGES_PER_SESSION: usize = 10_000;

/// What the sync client needs from the gateway: its store, and a way to say that central changed
/// what the gateway must apply (tariffs, policy) so it reloads them.
pub trait SyncBackend: Send {
    /// The gateway's store: outbox, cursors, downlink application.
    fn store(&mut self) -> &mut Store;
    /// Downlink records were applied: reload anything derived from published versions.
    fn downlink_applied(&mut self) -> Result<(), StoreError>;
}

fn lock<B: SyncBackend>(backend: &Mutex<B>) -> Result<std::sync::MutexGuard<'_, B>, SyncError> {
    backend.lock().map_err(|_| SyncError::Poisoned)
}

/// Builds the next upload from the store, with the gateway's status when `health` is given.
fn build_request(
    gateway: &mut impl SyncBackend,
    config: &SyncConfig,
    now: DateTime<Utc>,
    health: Option<&Health>,
) -> Result<UploadRequest, SyncError> {
    let store = gateway.store();
    let status = health.map(|health| health.status(store)).transpose()?;
    let exchange = store.next_exchange()?;
    let cursors = store.sync_cursors()?;
    let priority = store.priority_after(cursors.priority_acked, config.max_priority_records)?;
    if let Some(last) = priority.last() {
        // Before it leaves: the gateway's modem must not send a message central may have.
        store.note_offered(last.seq)?;
    }
    Ok(UploadRequest {
        protocol: wire::PROTOCOL_VERSION,
        sent_at: now,
        priority,
        readings: store.readings_after(cursors.readings_acked, config.max_readings)?,
        downlink_applied: cursors.downlink_applied,
        identity: Some(wire::GatewayIdentity {
            instance: cursors.instance,
            exchange,
            priority_acked: cursors.priority_acked,
            readings_acked: cursors.readings_acked,
        }),
        status,
    })
}

/// Records central's answer: acknowledgements, clock skew, downlink records.
fn apply_response(
    gateway: &mut impl SyncBackend,
    config: &SyncConfig,
    response: &UploadResponse,
    sent_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
) -> Result<usize, SyncError> {
    wire::check_version(response.protocol)?;
    let store = gateway.store();
    store.record_acks(response.priority_acked, response.readings_acked)?;
    let skew = clock::measure(sent_at, received_at, response.central_time);
    let max_skew =
        chrono::Duration::from_std(config.max_clock_skew).unwrap_or(chrono::Duration::MAX);
    store.record_clock_skew(skew, received_at, response.central_time, max_skew)?;
    let applied = store.apply_downlink(&response.downlink, received_at)?;
    if applied > 0 {
        gateway.downlink_applied()?;
    }
    Ok(applied)
}

/// Runs exchanges until the gateway is caught up in both directions. The first exchange carries
/// the gateway's status read from `health`, if given (once per session keeps small sessions
/// small).
pub async fn session<B: SyncBackend, T: Transport>(
    gateway: &Mutex<B>,
    transport: &T,
    config: &SyncConfig,
    clock: &WallClock,
    health: Option<&Health>,
) -> Result<SessionReport, SyncError> {
    let mut report = SessionReport::default();
    for exchange in 0..MAX_EXCHANGES_PER_SESSION {
        let sent_at = clock.now();
        let status_from = health.filter(|_| exchange == 0);
        let request = build_request(&mut *lock(gateway)?, config, sent_at, status_from)?;
        let body = wire::encode(&request)?;
        report.bytes_up += body.len();
        let answer = tokio::time::timeout(config.request_timeout, transport.exchange(body))
            .await
            .map_err(|_| TransportError::Timeout(config.request_timeout))??;
        report.bytes_down += answer.len();
        let response: UploadResponse = wire::decode(&answer)?;
        let received_at = clock.now();
        let applied = apply_response(
            &mut *lock(gateway)?,
            config,
            &response,
            sent_at,
            received_at,
        )?;
        report.exchanges += 1;
        report.priority_records += request.priority.len();
        report.readings += request
            .readings
            .as_ref()
            .map_or(0, |r| r.blocks.iter().map(ReadingBlock::len).sum());
        report.downlink_records += applied;
        let uploaded_everything = request.priority.len() < config.max_priority_records
            && request.readings.as_ref().is_none_or(|r| {
                r.blocks.iter().map(ReadingBlock::len).sum::<usize>() < config.max_readings
            });
        if uploaded_everything && !response.more {
            break;
        }
    }
    Ok(report)
}

/// The wait before retry number `failures` (1-based): exponential from `initial`, capped at `max`,
/// with "equal jitter" (half fixed, half random) so a village's worth of gateways coming back after
/// the same outage do not all knock at once.
pub fn retry_delay(failures: u32, initial: Duration, max: Duration, random: f64) -> Duration {
    let exponential = initial.saturating_mul(
        1u32.checked_shl(failures.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX),
    );
    let capped = exponential.min(max);
    capped / 2 + capped.mul_f64(random.clamp(0.0, 1.0) / 2.0)
}

/// Runs a session at once, then on the schedule until `shutdown` completes: a gateway back from a
/// power cut or an update tells central at once. After a failure it retries with backoff instead
/// of waiting for the schedule, so the first probe after the link returns starts a catch-up;
/// `wakers.sync` starts a session at once (a voucher redemption, central's push); a session that
/// applied downlink records (a recharge, say) wakes the policy pass. Each session tells central
/// the gateway's `health`, if given.
pub async fn run<B: SyncBackend, T: Transport>(
    gateway: Arc<Mutex<B>>,
    transport: T,
    config: SyncConfig,
    (clock, health): (WallClock, Option<Health>),
    wakers: Arc<Wakers>,
    shutdown: impl Future<Output = ()>,
) {
    let schedule = sync_schedule(&config);
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    let mut first = true;
    loop {
        let wait = if first {
            first = false;
            Duration::ZERO
        } else if failures > 0 {
            retry_delay(
                failures,
                config.retry_initial,
                config.retry_max,
                rand::random(),
            )
        } else {
            next_tick(&schedule, clock.now())
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wakers.sync.notified() => {}
            _ = &mut shutdown => break,
        }
        match session(&gateway, &transport, &config, &clock, health.as_ref()).await {
            Ok(report) => {
                if failures > 0 {
                    tracing::info!(
                        after_failures = failures,
                        "central server reachable again; caught up"
                    );
                }
                failures = 0;
                if report.downlink_records > 0 {
                    wakers.policy.notify_one();
                }
                tracing::info!(?report, "sync session");
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(%error, failures, "sync failed; retrying with backoff (nothing is lost)");
            }
        }
    }
}

/// Time from `now` until the schedule's next tick.
fn next_tick(schedule: &cron::Schedule, now: DateTime<Utc>) -> Duration {
    schedule
        .after(&now)
        .next()
        .and_then(|t| (t - now).to_std().ok())
        .unwrap_or(Duration::from_secs(300))
}

/// The configured schedule; the config loader has validated it, so the fallback (every five minutes,
/// the documented default) only guards against a config built in code.
pub fn sync_schedule(config: &SyncConfig) -> cron::Schedule {
    use std::str::FromStr;
    cron::Schedule::from_str(&config.schedule)
        .or_else(|_| cron::Schedule::from_str("0 */5 * * * *"))
        .unwrap_or_else(|e| unreachable!("default sync schedule: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_with_jitter_up_to_the_cap() {
        let initial = Duration::from_secs(10);
        let max = Duration::from_secs(900);
        assert_eq!(retry_delay(1, initial, max, 0.0), Duration::from_secs(5));
        assert_eq!(retry_delay(1, initial, max, 1.0), Duration::from_secs(10));
        assert_eq!(retry_delay(3, initial, max, 1.0), Duration::from_secs(40));
        assert_eq!(retry_delay(30, initial, max, 1.0), max);
        assert!(retry_delay(30, initial, max, 0.5) >= max / 2);
    }
}
