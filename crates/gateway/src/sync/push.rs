//! The push channel's gateway end: between sync sessions it keeps a request open at central
//! (`GET /sync/v1/wait`, see docs/sync.md) and wakes the sync client as soon as central answers
//! that it holds something new for this gateway. It only speeds things up: the scheduled sessions
//! carry everything anyway, so a cut or refused wait is retried with backoff and never fatal.
use super::client::{retry_delay, SyncConfig};
use super::https::HttpsTransport;
use crate::gateway::Gateway;
use crate::wakers::Wakers;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long, after central's news, the channel lets the woken session apply it before it waits
/// again (a session that fails meanwhile is the sync client's to retry).
const SESSION_GRACE: Duration = Duration::from_secs(30);
/// How often it looks whether the woken session has applied the news.
const APPLIED_POLL: Duration = Duration::from_millis(200);

/// Waits at central until `shutdown` completes (not at all when `config.push_wait` is zero).
pub async fn run(
    gateway: Arc<Mutex<Gateway>>,
    transport: HttpsTransport,
    config: SyncConfig,
    wakers: Arc<Wakers>,
    shutdown: impl Future<Output = ()>,
) {
    if config.push_wait.is_zero() {
        return;
    }
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    loop {
        let Some(applied) = downlink_applied(&gateway) else {
            tracing::error!("gateway state poisoned by a panic; stopping the push channel");
            return;
        };
        let waited = tokio::select! {
            waited = transport.wait_for_downlink(applied, config.push_wait) => waited,
            _ = &mut shutdown => return,
        };
        let pause = match waited {
            Ok(Some(seq)) => {
                failures = 0;
                tracing::debug!(seq, applied, "central has news; syncing now");
                wakers.sync.notify_one();
                settle(&gateway, seq).await;
                Duration::ZERO
            }
            Ok(None) => {
                failures = 0;
                Duration::ZERO
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::debug!(%error, failures, "push channel cut; waiting again after a pause");
                retry_delay(
                    failures,
                    config.retry_initial,
                    config.retry_max,
                    rand::random(),
                )
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// The downlink sequence the gateway has applied, or `None` if its state is poisoned.
fn downlink_applied(gateway: &Mutex<Gateway>) -> Option<u64> {
    let mut gateway = gateway.lock().ok()?;
    match gateway.store().sync_cursors() {
        Ok(cursors) => Some(cursors.downlink_applied),
        // A store that cannot be read now is waited on from the start: central answers at once.
        Err(error) => {
            tracing::warn!(%error, "cannot read the downlink cursor; waiting from the start");
            Some(0)
        }
    }
}

/// Waits until the gateway has applied downlink record `seq`, or [`SESSION_GRACE`] passed (so the
/// next wait does not return at once for the same news while the session is still running).
async fn settle(gateway: &Mutex<Gateway>, seq: u64) {
    let deadline = tokio::time::Instant::now() + SESSION_GRACE;
    while tokio::time::Instant::now() < deadline {
        if downlink_applied(gateway).is_none_or(|applied| applied >= seq) {
            return;
        }
        tokio::time::sleep(APPLIED_POLL).await;
    }
}
