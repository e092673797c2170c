//! Notifications outbox: consumer messages (recharge received, low balance, disconnect, reconnect,
//! daily balance and consumption) queued once by id and handed to a pluggable sender once.
//!
//! Gateways decide most messages (they know the balance first) and upload them as alerts; central
//! adds its own (recharge received). Rows are marked sent in the same transaction that hands them
//! to the sender, so a message is sent once unless the commit itself fails after sending.
use super::db::Tx;
use super::{Central, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// One message to a consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// Unique id: a notification is queued and sent once per id (a gateway alert's id, or
    /// `recharge:<event id>`).
    pub id: String,
    /// The account whose consumer is told.
    pub account: String,
    /// What it is about: "recharge_received", "low_balance", "disconnected", "reconnected",
    /// "daily_balance", ...
    pub kind: String,
    /// The text for the consumer.
    pub message: String,
    /// When it was decided (UTC, whole seconds), at the gateway or at central.
    pub created_at: DateTime<Utc>,
}

/// Delivers notifications (SMS gateway, app push, ...). Must not block for long: it runs on a
/// storage worker inside the outbox transaction.
pub trait Sender: Send + Sync {
    /// Sends one notification; an error leaves it (and the rest of the batch) queued.
    fn send(&self, notification: &Notification) -> std::result::Result<(), String>;
}

/// The default sender: appends one JSON line per notification to a log file.
#[derive(Debug, Clone)]
pub struct LogFileSender {
    /// The log file (created with its directory when missing); `notifications_log` in the config.
    pub path: PathBuf,
}

impl Sender for LogFileSender {
    fn send(&self, notification: &Notification) -> std::result::Result<(), String> {
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

/// Queues a notification once (a second enqueue of the same id does nothing).
pub fn enqueue(
    tx: &mut dyn Tx,
    id: &str,
    account: &str,
    kind: &str,
    message: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let new = tx.execute(
        "INSERT INTO notifications (id, account, kind, message, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        &[id.into(), account.into(), kind.into(), message.into(), ts(at).into()],
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

/// Sends up to `limit` queued notifications in creation order; returns how many were sent.
pub async fn deliver(central: &Central, sender: Arc<dyn Sender>, limit: i64) -> Result<usize> {
    let now = ts(central.now());
    central
        .db()
        .transaction(move |tx| {
            let rows = tx.query(
                "SELECT id, account, kind, message, created_at FROM notifications WHERE sent_at IS NULL ORDER BY created_at, id LIMIT $1",
                &[limit.into()],
            )?;
            let mut sent = 0;
            for row in rows {
                let notification = Notification {
                    id: row.text(0)?,
                    account: row.text(1)?,
                    kind: row.text(2)?,
                    message: row.text(3)?,
                    created_at: from_ts(row.int(4)?),
                };
                if let Err(error) = sender.send(&notification) {
                    tracing::warn!(id = notification.id, %error, "notification not sent; will retry");
                    break;
                }
                tx.execute("UPDATE notifications SET sent_at = $2 WHERE id = $1", &[notification.id.as_str().into(), now.into()])?;
                sent += 1;
            }
            Ok(sent)
        })
        .await
}

/// Delivers queued notifications every `every` until `shutdown` completes.
pub async fn run(
    central: Arc<Central>,
    sender: Arc<dyn Sender>,
    every: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {
                if let Err(error) = deliver(&central, Arc::clone(&sender), 500).await {
                    tracing::warn!(%error, "notification delivery failed; will retry");
                }
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_notification_log_with_phone_numbers_is_not_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let sender = LogFileSender {
            path: dir.path().join("logs/notifications.log"),
        };
        let notification = Notification {
            id: "n1".into(),
            account: "A1".into(),
            kind: "low_balance".into(),
            message: "Balance low".into(),
            created_at: chrono::Utc::now(),
        };
        sender.send(&notification).unwrap();
        let mode = std::fs::metadata(&sender.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }
}
