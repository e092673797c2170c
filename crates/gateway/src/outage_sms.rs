//! Urgent consumer messages sent through the gateway's own modem while the backhaul is down.
//!
//! When no sync has succeeded for longer than `[modem] send_after_backhaul_down`, the gateway
//! sends the urgent messages (disconnect notice, disconnected, reconnected, voucher redeemed) that
//! central has never been offered, in the consumer's language, and amends each notice in the
//! outbox to say so: central records it as sent by the gateway and never sends it again. Each message goes once, from
//! whichever side has it first. While the modem sends, sync offers nothing from the first of those
//! notices on, so central cannot receive one the modem is about to send.
use crate::gateway::Gateway;
use crate::modem::SmsModem;
use crate::store::{ModemMessage, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_core::message::{self, Language};
use std::sync::Mutex;
use std::time::Duration;

/// Most messages one round sends (a modem sends a few a minute).
const PER_ROUND: usize = 20;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModemRound {
    /// Messages the modem sent.
    pub sent: usize,
    /// Sends the modem refused (the rest of the round waits for the next).
    pub failed: usize,
}

/// Why a round could not run.
#[derive(Debug, thiserror::Error)]
pub enum OutageSmsError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A task panicked while holding the gateway.
    #[error("the gateway state is unavailable (a task panicked while holding it)")]
    Poisoned,
}

fn lock(gateway: &Mutex<Gateway>) -> Result<std::sync::MutexGuard<'_, Gateway>, OutageSmsError> {
    gateway.lock().map_err(|_| OutageSmsError::Poisoned)
}

/// The text of a message in the consumer's language (English if its template cannot be filled).
pub fn text_of(message: &ModemMessage) -> String {
    let render = |language| {
        message::render(
            message::default_template(message.kind, language),
            &message.vars,
        )
    };
    render(message.language)
        .or_else(|_| render(Language::English))
        .unwrap_or_else(|_| message.kind.as_str().replace('_', " "))
}

/// Sends pending urgent messages through `modem` if the backhaul has been down (no successful
/// sync) for longer than `after` at `now`.
pub async fn send_round(
    gateway: &Mutex<Gateway>,
    modem: &dyn SmsModem,
    after: Duration,
    now: DateTime<Utc>,
) -> Result<ModemRound, OutageSmsError> {
    let messages = {
        let mut gateway = lock(gateway)?;
        let store = gateway.store();
        let last_sync = store.guard_marks()?.last_sync_at;
        let down_since_long_enough = last_sync.is_none_or(|at| {
            now - at > chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX)
        });
        if !down_since_long_enough {
            return Ok(ModemRound::default());
        }
        let messages = store.modem_messages(PER_ROUND)?;
        if let Some(first) = messages.first() {
            store.hold_outbox_from(first.outbox_seq);
        }
        messages
    };
    if messages.is_empty() {
        return Ok(ModemRound::default());
    }
    let round = send_each(gateway, modem, &messages, now).await;
    lock(gateway)?.store().release_outbox_hold();
    round
}

async fn send_each(
    gateway: &Mutex<Gateway>,
    modem: &dyn SmsModem,
    messages: &[ModemMessage],
    now: DateTime<Utc>,
) -> Result<ModemRound, OutageSmsError> {
    let mut round = ModemRound::default();
    for message in messages {
        let text = text_of(message);
        match modem.send(&message.phone, &text).await {
            Ok(()) => {
                lock(gateway)?
                    .store()
                    .record_sent_by_modem(message, &text, now)?;
                round.sent += 1;
                tracing::info!(alert = %message.alert_id, kind = message.kind.as_str(), "message sent through the gateway's modem (backhaul down)");
            }
            Err(error) => {
                // A modem that refuses one message refuses the next too: try again next round.
                round.failed += 1;
                tracing::warn!(alert = %message.alert_id, %error, "the modem did not send the message; central will send it after sync if the modem cannot");
                break;
            }
        }
    }
    Ok(round)
}

/// Runs a round every `every` until `shutdown` completes.
pub async fn run(
    gateway: std::sync::Arc<Mutex<Gateway>>,
    modem: std::sync::Arc<dyn SmsModem>,
    after: Duration,
    every: Duration,
    clock: gramgrid_net::wallclock::WallClock,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {
                if let Err(error) = send_round(&gateway, modem.as_ref(), after, clock.now()).await {
                    tracing::warn!(%error, "modem messages not sent this round");
                }
            }
        }
    }
}
