//! Notifications outbox: consumer messages (recharge received, low balance, disconnect notice,
//! disconnected, reconnected, daily balance) queued once by id, rendered in the consumer's language
//! when sent, and followed through queued → sent → delivered (or failed) per account.
//!
//! Gateways decide most messages (they know the balance first) and upload them as a kind plus
//! variables; central adds its own (recharge received). A message a gateway already sent through its
//! own modem arrives marked so and is never sent again here. The sender is pluggable: the SMS
//! provider (`sms`) when `[sms]` is configured, else a JSON-lines log file.
use super::db::Tx;
use super::{Central, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_core::message::{self, Kind, Language, QuietHours, Vars};
use serde::Serialize;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub mod sms;

/// One message to a consumer, ready to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// Unique id: a notification is queued and sent once per id (`<gateway>/<alert id>`, or
    /// `recharge:<event id>`). Sent to the provider as its reference, so receipts find it.
    pub id: String,
    /// The account whose consumer is told.
    pub account: String,
    /// What it is about: a `gramgrid_core::message::Kind` name.
    pub kind: String,
    /// The text as sent, in the consumer's language.
    pub message: String,
    /// When it was decided (UTC, whole seconds), at the gateway or at central.
    pub created_at: DateTime<Utc>,
    /// The consumer's phone number (empty if the account has none).
    pub to: String,
    /// The language of `message`.
    pub language: Language,
    /// The DLT template the text was rendered from, when the sender needs one.
    pub dlt_template_id: Option<String>,
    /// SMS parts the operator bills for `message`.
    pub parts: usize,
}

/// What became of one attempt to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted for delivery; `provider_id` is the provider's id for it, if it gave one.
    Sent {
        /// The provider's message id.
        provider_id: Option<String>,
    },
    /// Not accepted this time (network, server error, throttled): try again later.
    Retry {
        /// What went wrong.
        error: String,
        /// The provider is throttling us: send nothing more in this round.
        throttled: bool,
    },
    /// Refused for good (e.g. an invalid number or a template mismatch): not retried.
    Failed {
        /// The provider's reason.
        error: String,
    },
}

/// A boxed future, for the object-safe [`Sender`].
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// Delivers notifications (an SMS provider, a log file, ...).
pub trait Sender: Send + Sync {
    /// The channel's name as the message records show it (`sms_provider`, `log`).
    fn channel(&self) -> &'static str;
    /// Tries to send one notification.
    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a>;
}

/// The sender without `[sms]`: appends one JSON line per notification to a log file.
#[derive(Debug, Clone)]
pub struct LogFileSender {
    /// The log file (created with its directory when missing); `notifications_log` in the config.
    pub path: PathBuf,
}

impl LogFileSender {
    fn append(&self, notification: &Notification) -> std::result::Result<(), String> {
        let line = serde_json::to_string(notification).map_err(|e| e.to_string())?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        // Phone numbers and balances: not for every user of the machine.
        let mut file = gramgrid_net::files::open_private_append(
            &self.path,
            gramgrid_net::files::OWNER_AND_GROUP_READ,
        )
        .map_err(|e| format!("{}: {e}", self.path.display()))?;
        writeln!(file, "{line}").map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

impl Sender for LogFileSender {
    fn channel(&self) -> &'static str {
        "log"
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a> {
        let outcome = match self.append(notification) {
            Ok(()) => Outcome::Sent { provider_id: None },
            Err(error) => Outcome::Retry {
                error,
                throttled: false,
            },
        };
        Box::pin(std::future::ready(outcome))
    }
}

/// The channel recorded for a message a gateway sent through its own modem.
pub const GATEWAY_MODEM: &str = "gateway_modem";

/// Queues a notification once (a second enqueue of the same id does nothing). `message` is the
/// deciding side's own text, kept for the office and for kinds without a template.
pub fn enqueue(
    tx: &mut dyn Tx,
    id: &str,
    account: &str,
    kind: &str,
    message: &str,
    vars: &Vars,
    at: DateTime<Utc>,
) -> Result<()> {
    let vars =
        serde_json::to_string(vars).map_err(|e| super::CentralError::Corrupt(e.to_string()))?;
    // Kinds that are not consumer messages (a relay time-out) are for the office: kept, not sent.
    let state = if Kind::parse(kind).is_some() {
        "queued"
    } else {
        "office"
    };
    let new = tx.execute(
        "INSERT INTO notifications (id, account, kind, message, created_at, vars, state, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $5) ON CONFLICT DO NOTHING",
        &[id.into(), account.into(), kind.into(), message.into(), ts(at).into(), vars.into(), state.into()],
    )?;
    if new == 1 {
        let event = crate::mqtt::Event::Alert {
            account: account.to_owned(),
            notification: id.to_owned(),
            kind: kind.to_owned(),
            message: message.to_owned(),
            created_at: crate::mqtt::rfc3339(at),
        };
        crate::mqtt::enqueue(tx, event, at)?;
    }
    Ok(())
}

/// Records that a gateway sent notification `id` itself (through its modem, while its backhaul
/// was down), so central never sends it. Should central have sent it already, that is flagged
/// (`message_sent_twice`).
pub fn record_sent_by_gateway(
    tx: &mut dyn Tx,
    gateway: &str,
    id: &str,
    text: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let row = tx.query_opt(
        "SELECT state, channel, account FROM notifications WHERE id = $1",
        &[id.into()],
    )?;
    let Some(row) = row else { return Ok(()) };
    let (state, channel, account) = (row.text(0)?, row.opt_text(1)?, row.text(2)?);
    match state.as_str() {
        "queued" | "retrying" | "failed" => {
            tx.execute(
                "UPDATE notifications SET state = 'sent', channel = $2, sent_at = $3, message = $4, parts = $5 WHERE id = $1",
                &[id.into(), GATEWAY_MODEM.into(), ts(at).into(), text.into(), (message::sms_parts(text).parts as i64).into()],
            )?;
        }
        _ if channel.as_deref() == Some(GATEWAY_MODEM) => {}
        _ => super::flags::flag(
            tx,
            &format!("sent-twice:{id}"),
            "message_sent_twice",
            Some(gateway),
            Some(&account),
            at,
            &format!("message {id} was sent by central and by the gateway's modem"),
        )?,
    }
    Ok(())
}

/// How messages are rendered and when they may go: the `[sms]` templates and quiet hours, or the
/// built-in English/Hindi texts at any hour without it.
#[derive(Debug, Clone, Default)]
pub struct Rendering {
    /// Per kind and language: DLT template id and text.
    pub templates: std::collections::BTreeMap<(Kind, Language), (Option<String>, String)>,
    /// Non-urgent messages wait through these local hours.
    pub quiet_hours: Option<QuietHours>,
    /// Attempts before a message is given up as failed.
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl Rendering {
    /// The built-in texts, no quiet hours, 8 attempts from 30 s to 1 h apart.
    pub fn built_in() -> Rendering {
        let mut templates = std::collections::BTreeMap::new();
        for kind in Kind::ALL {
            for language in Language::ALL {
                templates.insert(
                    (kind, language),
                    (None, message::default_template(kind, language).to_string()),
                );
            }
        }
        Rendering {
            templates,
            quiet_hours: None,
            max_attempts: 8,
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
        }
    }

    fn retry_delay(&self, attempts: u32) -> Duration {
        let doubled = self
            .retry_initial
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
        doubled.min(self.retry_max)
    }
}

/// A queued message as read for sending.
struct Due {
    id: String,
    account: String,
    kind: String,
    message: String,
    created_at: DateTime<Utc>,
    vars: Vars,
    phone: Option<String>,
    language: Language,
    attempts: u32,
}

/// What one delivery round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Delivered {
    /// Accepted by the sender.
    pub sent: usize,
    /// To be tried again later.
    pub retrying: usize,
    /// Given up (refused, no phone number, too many attempts).
    pub failed: usize,
    /// Waiting for the end of quiet hours.
    pub deferred: usize,
}

/// Sends up to `limit` due notifications in creation order.
pub async fn deliver(
    central: &Central,
    sender: &dyn Sender,
    rendering: &Rendering,
    limit: i64,
) -> Result<Delivered> {
    let now = central.now();
    let due = central
        .db()
        .transaction(move |tx| due_notifications(tx, now, limit))
        .await?;
    let mut round = Delivered::default();
    for message in due {
        let at = message::may_send_at(
            Kind::parse(&message.kind).unwrap_or(Kind::DailyBalance),
            rendering.quiet_hours,
            now,
        );
        if at > now {
            round.deferred += 1;
            update(central, &message.id, Update::Defer(at), false).await?;
            continue;
        }
        let notification = render(&message, rendering);
        let outcome = sender.send(&notification).await;
        // A link or a code is kept only until it is sent: the office sees that it went, not it.
        let secret = Kind::parse(&message.kind).is_some_and(Kind::carries_secret);
        let throttled = matches!(
            outcome,
            Outcome::Retry {
                throttled: true,
                ..
            }
        );
        let next = match outcome {
            Outcome::Sent { provider_id } => {
                round.sent += 1;
                Update::Sent {
                    channel: sender.channel(),
                    provider_id,
                    text: if secret {
                        message.message.clone()
                    } else {
                        notification.message
                    },
                    parts: notification.parts,
                }
            }
            Outcome::Retry { error, .. } if message.attempts + 1 < rendering.max_attempts => {
                round.retrying += 1;
                tracing::warn!(id = message.id, %error, "notification not sent; will retry");
                let delay = rendering.retry_delay(message.attempts + 1);
                Update::Retry(
                    error,
                    now + chrono::Duration::from_std(delay).unwrap_or_default(),
                )
            }
            Outcome::Retry { error, .. } | Outcome::Failed { error } => {
                round.failed += 1;
                tracing::warn!(id = message.id, %error, "notification failed; not retried");
                Update::Failed(error)
            }
        };
        update(central, &message.id, next, secret).await?;
        if throttled {
            break;
        }
    }
    Ok(round)
}

fn due_notifications(tx: &mut dyn Tx, now: DateTime<Utc>, limit: i64) -> Result<Vec<Due>> {
    let rows = tx.query(
        "SELECT n.id, n.account, n.kind, n.created_at, n.vars, a.phone, a.language, n.attempts, n.message
         FROM notifications n LEFT JOIN accounts a ON a.id = n.account
         WHERE n.state IN ('queued', 'retrying') AND n.next_attempt_at <= $1
         ORDER BY n.created_at, n.id LIMIT $2",
        &[ts(now).into(), limit.into()],
    )?;
    rows.iter()
        .map(|row| {
            Ok(Due {
                id: row.text(0)?,
                account: row.text(1)?,
                kind: row.text(2)?,
                created_at: from_ts(row.int(3)?),
                vars: serde_json::from_str(&row.text(4)?).unwrap_or_default(),
                phone: row.opt_text(5)?,
                language: row
                    .opt_text(6)?
                    .and_then(|code| Language::parse(&code))
                    .unwrap_or_default(),
                attempts: row.int(7)?.clamp(0, i64::from(u32::MAX)) as u32,
                message: row.text(8)?,
            })
        })
        .collect()
}

/// The message in the consumer's language from its template. A message from an older gateway
/// carries no variables: it keeps the gateway's own text and no DLT template (a provider that
/// needs one refuses it).
fn render(message: &Due, rendering: &Rendering) -> Notification {
    let template = Kind::parse(&message.kind)
        .and_then(|kind| rendering.templates.get(&(kind, message.language)));
    let rendered = template.and_then(|(dlt_template_id, template)| {
        message::render(template, &message.vars)
            .ok()
            .map(|text| (dlt_template_id.clone(), text))
    });
    let (dlt_template_id, text) = rendered.unwrap_or((None, message.message.clone()));
    Notification {
        id: message.id.clone(),
        account: message.account.clone(),
        kind: message.kind.clone(),
        parts: message::sms_parts(&text).parts,
        message: text,
        created_at: message.created_at,
        to: message.phone.clone().unwrap_or_default(),
        language: message.language,
        dlt_template_id,
    }
}

enum Update {
    Defer(DateTime<Utc>),
    Sent {
        channel: &'static str,
        provider_id: Option<String>,
        text: String,
        parts: usize,
    },
    Retry(String, DateTime<Utc>),
    Failed(String),
}

/// Applies `update` to message `id`; with `forget_vars`, a message that is now sent or failed
/// keeps no variables.
async fn update(central: &Central, id: &str, update: Update, forget_vars: bool) -> Result<()> {
    let id = id.to_string();
    let now = ts(central.now());
    central
        .db()
        .transaction(move |tx| {
            match update {
                Update::Defer(at) => tx.execute(
                    "UPDATE notifications SET next_attempt_at = $2 WHERE id = $1",
                    &[id.as_str().into(), ts(at).into()],
                )?,
                Update::Sent { channel, provider_id, text, parts } => tx.execute(
                    "UPDATE notifications SET state = 'sent', channel = $2, provider_id = $3, message = $4, parts = $5, sent_at = $6, attempts = attempts + 1, last_error = NULL WHERE id = $1 AND state IN ('queued', 'retrying')",
                    &[id.as_str().into(), channel.into(), provider_id.into(), text.into(), (parts as i64).into(), now.into()],
                )?,
                Update::Retry(error, at) => tx.execute(
                    "UPDATE notifications SET state = 'retrying', attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1 AND state IN ('queued', 'retrying')",
                    &[id.as_str().into(), error.into(), ts(at).into()],
                )?,
                Update::Failed(error) => tx.execute(
                    "UPDATE notifications SET state = 'failed', attempts = attempts + 1, last_error = $2 WHERE id = $1 AND state IN ('queued', 'retrying')",
                    &[id.as_str().into(), error.into()],
                )?,
            };
            if forget_vars {
                tx.execute(
                    "UPDATE notifications SET vars = '{}' WHERE id = $1 AND state IN ('sent', 'failed')",
                    &[id.into()],
                )?;
            }
            Ok(())
        })
        .await
}

/// A delivery receipt from the provider: the message reached the phone, or did not.
pub async fn record_receipt(
    central: &Central,
    id: &str,
    delivered: bool,
    error: Option<String>,
) -> Result<()> {
    let id = id.to_string();
    let now = ts(central.now());
    central
        .db()
        .transaction(move |tx| {
            let changed = if delivered {
                tx.execute(
                    "UPDATE notifications SET state = 'delivered', delivered_at = $2 WHERE id = $1 AND state IN ('sent', 'delivered')",
                    &[id.as_str().into(), now.into()],
                )?
            } else {
                tx.execute(
                    "UPDATE notifications SET state = 'failed', last_error = $2 WHERE id = $1 AND state = 'sent'",
                    &[id.as_str().into(), error.unwrap_or_else(|| "not delivered".into()).into()],
                )?
            };
            if changed == 0 && tx.query_opt("SELECT 1 FROM notifications WHERE id = $1", &[id.as_str().into()])?.is_none() {
                return Err(super::CentralError::NotFound(format!("no message with reference '{id}'")));
            }
            Ok(())
        })
        .await
}

/// One message as the account's message list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRecord {
    /// The message's id (the provider's reference).
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// `queued`, `retrying`, `sent`, `delivered`, `failed`, or `office` (not for the consumer).
    pub state: String,
    /// Who sent it: `sms_provider`, `gateway_modem` or `log`; none until sent.
    pub channel: Option<String>,
    /// The text (as sent, once sent).
    pub text: String,
    /// SMS parts billed, once sent.
    pub parts: Option<i64>,
    /// Attempts made.
    pub attempts: i64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// When it was decided.
    pub created_at: DateTime<Utc>,
    /// When it was sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// When the provider reported it delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// An account's messages, newest first (at most `limit`).
pub fn account_messages(tx: &mut dyn Tx, account: &str, limit: i64) -> Result<Vec<MessageRecord>> {
    if tx
        .query_opt("SELECT 1 FROM accounts WHERE id = $1", &[account.into()])?
        .is_none()
    {
        return Err(super::CentralError::NotFound(format!(
            "no account '{account}'"
        )));
    }
    let rows = tx.query(
        "SELECT id, kind, state, channel, message, parts, attempts, last_error, created_at, sent_at, delivered_at
         FROM notifications WHERE account = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        &[account.into(), limit.into()],
    )?;
    rows.iter()
        .map(|row| {
            Ok(MessageRecord {
                id: row.text(0)?,
                kind: row.text(1)?,
                state: row.text(2)?,
                channel: row.opt_text(3)?,
                text: row.text(4)?,
                parts: row.opt_int(5)?,
                attempts: row.int(6)?,
                last_error: row.opt_text(7)?,
                created_at: from_ts(row.int(8)?),
                sent_at: row.opt_int(9)?.map(from_ts),
                delivered_at: row.opt_int(10)?.map(from_ts),
            })
        })
        .collect()
}

/// Delivers queued notifications every `every` until `shutdown` completes.
pub async fn run(
    central: Arc<Central>,
    sender: Arc<dyn Sender>,
    rendering: Rendering,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // The first round one period after start, like every other.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {
                if let Err(error) = deliver(&central, sender.as_ref(), &rendering, 500).await {
                    tracing::warn!(%error, "notification delivery failed; will retry");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
