//! Relay commands (with the load-limit trip a disconnect carries out), alerts and technician
//! overrides in the store.
use super::outbox::{append_outbox, append_outbox_seq};
use super::serial_of;
use super::{from_ts, ts, LoadTripped, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_core::decision::DecisionRecord;
use gramgrid_core::policy::{Override, RelayAction, RelayState};
use gramgrid_core::relay::{CommandProgress, CommandState};
use gramgrid_proto::wire::UplinkEvent;
use rusqlite::{params, OptionalExtension, Transaction};

/// A relay command and where it is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCommand {
    /// Unique id; the policy pass makes
    /// `<gateway>:relay:<account>:<connect|disconnect|trip>:<UTC seconds>` (`trip`: a load-limit
    /// trip's disconnect).
    pub id: String,
    /// The meter's id in the store (`meters.id`).
    pub meter: i64,
    /// Connect (close the relay) or disconnect (open it).
    pub action: RelayAction,
    /// Why it was queued (e.g. `balance -12.50 INR`), as recorded in its history.
    pub reason: String,
    /// When it was queued (UTC).
    pub created_at: DateTime<Utc>,
    /// Its state, how many times it was sent, and when last.
    pub progress: CommandProgress,
}

/// A notification for a consumer or the office. The id makes it unique: enqueueing the same id
/// twice keeps one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Unique id, built from the account and what the alert is about (e.g.
    /// `<account>:daily:<date>`).
    pub id: String,
    /// The account it concerns.
    pub account: String,
    /// A `gramgrid_core::message::Kind` name (`low_balance`, `disconnected`,
    /// `sanctioned_load_exceeded`, ...), or `relay_timeout` for the office.
    pub kind: String,
    /// When it was raised (UTC).
    pub created_at: DateTime<Utc>,
    /// The text for the consumer (for `relay_timeout`, for the office); amounts in INR.
    pub message: String,
    /// The variables of the message's template (`gramgrid_core::message`), e.g. `balance`.
    pub vars: gramgrid_core::message::Vars,
}

/// Where the gateway's alerts are on their way to central, which relays them to consumers.
/// Delivery itself is central's: whether a consumer was told does not come back to the gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertUploads {
    /// Alerts still in the outbox: not yet acknowledged by central.
    pub awaiting_upload: u64,
    /// Alerts central has acknowledged (they have left the outbox).
    pub uploaded: u64,
}

/// A technician's manual override of the relay, with who and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideRecord {
    /// Unique id; recording the same id again changes nothing.
    pub id: String,
    /// The account whose relay it overrides.
    pub account: String,
    /// The relay action the technician imposes.
    pub action: RelayAction,
    /// When the override lapses (UTC).
    pub until: DateTime<Utc>,
    /// Who ordered it.
    pub technician: String,
    /// Why.
    pub reason: String,
    /// When it was recorded (UTC); it is in force from then, and the latest recorded one wins.
    pub created_at: DateTime<Utc>,
}

fn action_str(action: RelayAction) -> &'static str {
    match action {
        RelayAction::Connect => "connect",
        RelayAction::Disconnect => "disconnect",
    }
}

fn parse_action(text: &str) -> RelayAction {
    if text == "disconnect" {
        RelayAction::Disconnect
    } else {
        RelayAction::Connect
    }
}

fn parse_state(text: &str) -> CommandState {
    match text {
        "sent" => CommandState::Sent,
        "acknowledged" => CommandState::Acknowledged,
        "failed" => CommandState::Failed,
        "timed_out" => CommandState::TimedOut,
        "withdrawn" => CommandState::Withdrawn,
        _ => CommandState::Queued,
    }
}

/// Appends a command state change to its history and queues it for upload.
fn log_state(
    tx: &Transaction<'_>,
    command: &str,
    state: CommandState,
    at: DateTime<Utc>,
    detail: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO relay_command_events (command, state, at, detail) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![command, state.as_str(), ts(at), detail])?;
    let (meter, action): (i64, String) = tx
        .prepare_cached("SELECT meter, action FROM relay_commands WHERE id = ?1")?
        .query_row([command], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let event = UplinkEvent::RelayCommand {
        id: command.to_string(),
        meter: serial_of(tx, meter)?,
        action: parse_action(&action).into(),
        state: state.as_str().to_string(),
        at,
        detail: detail.to_string(),
    };
    append_outbox(tx, &event)
}

/// Withdraws every open relay command of an account's meters (the account left this gateway).
pub(super) fn withdraw_account_commands_in(
    tx: &Transaction<'_>,
    account: &str,
    at: DateTime<Utc>,
    detail: &str,
) -> Result<()> {
    let open: Vec<(String, String)> = tx
        .prepare(
            "SELECT c.id, c.state FROM relay_commands c JOIN meters m ON m.id = c.meter WHERE m.account = ?1",
        )?
        .query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, state) in open {
        if parse_state(&state).is_open() {
            set_state(tx, &id, CommandState::Withdrawn, at, detail)?;
        }
    }
    Ok(())
}

fn set_state(
    tx: &Transaction<'_>,
    id: &str,
    state: CommandState,
    at: DateTime<Utc>,
    detail: &str,
) -> Result<()> {
    let closed_at = (!state.is_open()).then_some(ts(at));
    tx.execute(
        "UPDATE relay_commands SET state = ?2, closed_at = ?3 WHERE id = ?1",
        params![id, state.as_str(), closed_at],
    )?;
    log_state(tx, id, state, at, detail)
}

impl Store {
    /// Queues a relay command durably, with the record of the decision that made it (stored and
    /// queued for central in the same transaction; a load-limit trip is noted with it). An open command for the same meter with the
    /// other action is closed as failed ("superseded"): the newest decision wins.
    pub fn queue_relay_command(
        &mut self,
        id: &str,
        meter: i64,
        action: RelayAction,
        reason: &str,
        now: DateTime<Utc>,
        decision: Option<&gramgrid_core::decision::DecisionRecord>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        let superseded: Vec<String> = tx
            .prepare("SELECT id FROM relay_commands WHERE meter = ?1 AND state IN ('queued', 'sent') AND action != ?2")?
            .query_map(params![meter, action_str(action)], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for old in superseded {
            set_state(
                &tx,
                &old,
                CommandState::Failed,
                now,
                &format!("superseded by {id}"),
            )?;
        }
        tx.execute(
            "INSERT INTO relay_commands (id, meter, action, state, reason, created_at) VALUES (?1, ?2, ?3, 'queued', ?4, ?5)",
            params![id, meter, action_str(action), reason, ts(now)],
        )
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::UnknownMeter(meter.to_string()),
            _ => e.into(),
        })?;
        log_state(&tx, id, CommandState::Queued, now, reason)?;
        if let Some(record) = decision {
            super::guard::record_decision_in(&tx, id, record)?;
            note_load_trip_in(&tx, id, record)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Commands still being worked on (queued or sent), oldest first.
    pub fn open_relay_commands(&self) -> Result<Vec<RelayCommand>> {
        self.relay_commands(
            "WHERE state IN ('queued', 'sent') ORDER BY created_at, id",
            [],
        )
    }

    /// Every relay command of a meter, oldest first.
    pub fn relay_commands_of(&self, meter: i64) -> Result<Vec<RelayCommand>> {
        self.relay_commands("WHERE meter = ?1 ORDER BY created_at, id", [meter])
    }

    /// The newest relay command of a meter.
    pub fn latest_relay_command(&self, meter: i64) -> Result<Option<RelayCommand>> {
        let mut newest = self.relay_commands(
            "WHERE meter = ?1 ORDER BY created_at DESC, rowid DESC LIMIT 1",
            [meter],
        )?;
        Ok(newest.pop())
    }

    fn relay_commands(
        &self,
        tail: &str,
        parameters: impl rusqlite::Params,
    ) -> Result<Vec<RelayCommand>> {
        let mut statement = self.conn.prepare(&format!(
            "SELECT id, meter, action, reason, created_at, state, attempts, last_sent_at FROM relay_commands {tail}"
        ))?;
        let rows = statement.query_map(parameters, |r| {
            Ok(RelayCommand {
                id: r.get(0)?,
                meter: r.get(1)?,
                action: parse_action(&r.get::<_, String>(2)?),
                reason: r.get(3)?,
                created_at: from_ts(r.get(4)?),
                progress: CommandProgress {
                    state: parse_state(&r.get::<_, String>(5)?),
                    attempts: r.get(6)?,
                    last_sent_at: r.get::<_, Option<i64>>(7)?.map(from_ts),
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that a command was transmitted (again).
    pub fn mark_relay_sent(&mut self, id: &str, at: DateTime<Utc>) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE relay_commands SET state = 'sent', attempts = attempts + 1, last_sent_at = ?2 WHERE id = ?1",
            params![id, ts(at)],
        )?;
        log_state(&tx, id, CommandState::Sent, at, "")?;
        tx.commit()?;
        Ok(())
    }

    /// Closes a command as failed or timed out, and enqueues the alert that says so.
    pub fn close_relay_command(
        &mut self,
        id: &str,
        state: CommandState,
        at: DateTime<Utc>,
        alert: &Alert,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        set_state(&tx, id, state, at, &alert.message)?;
        insert_alert(&tx, alert)?;
        tx.commit()?;
        Ok(())
    }

    /// Closes a command as withdrawn (a disconnect no longer wanted), recording why. Returns false,
    /// changing nothing, if it was not open any more (confirmed or closed meanwhile).
    pub fn withdraw_relay_command(
        &mut self,
        id: &str,
        at: DateTime<Utc>,
        detail: &str,
    ) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let open = tx
            .query_row(
                "SELECT state FROM relay_commands WHERE id = ?1",
                [id],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .is_some_and(|state| parse_state(&state).is_open());
        if open {
            set_state(&tx, id, CommandState::Withdrawn, at, detail)?;
        }
        tx.commit()?;
        Ok(open)
    }

    /// Records the relay state a meter reported, acknowledges the open commands it confirms and
    /// enqueues the alert `alert_for` gives for each (with the load-limit trip a disconnect
    /// carried out, if it was one), all in one transaction: a power cut cannot leave a command
    /// confirmed without its notice (the next report confirms nothing, so the notice would never
    /// be sent). Returns the confirmed commands.
    pub fn record_relay_state(
        &mut self,
        meter: i64,
        state: RelayState,
        at: DateTime<Utc>,
        alert_for: impl Fn(&RelayCommand, Option<LoadTripped>) -> Option<Alert>,
    ) -> Result<Vec<RelayCommand>> {
        let confirmed: Vec<RelayCommand> = self
            .open_relay_commands()?
            .into_iter()
            .filter(|c| c.meter == meter && gramgrid_core::relay::confirms(c.action, state))
            .collect();
        let mut alerts = Vec::new();
        for command in &confirmed {
            let trip = match command.action {
                RelayAction::Disconnect => self.load_trip_of_command(&command.id)?,
                RelayAction::Connect => None,
            };
            alerts.extend(alert_for(command, trip));
        }
        let tx = self.conn.transaction()?;
        let state_name = match state {
            RelayState::Connected => "connected",
            RelayState::Disconnected => "disconnected",
            RelayState::Unknown => "unknown",
        };
        // The same report again (a retransmission, or a retry after a power cut that let the
        // first one commit) changes nothing and is not uploaded twice.
        let changed = tx.execute(
            "UPDATE meters SET relay_state = ?2, relay_state_at = ?3 WHERE id = ?1
               AND (relay_state IS NOT ?2 OR relay_state_at IS NOT ?3)",
            params![meter, state_name, ts(at)],
        )? > 0;
        for command in &confirmed {
            set_state(
                &tx,
                &command.id,
                CommandState::Acknowledged,
                at,
                "meter reported the relay state",
            )?;
        }
        for alert in &alerts {
            insert_alert(&tx, alert)?;
        }
        if changed {
            let meter_serial = serial_of(&tx, meter)?;
            append_outbox(
                &tx,
                &UplinkEvent::RelayState {
                    meter: meter_serial,
                    state: state.into(),
                    at,
                },
            )?;
        }
        tx.commit()?;
        Ok(confirmed)
    }

    /// Enqueues an alert once; returns false if that alert id was already enqueued.
    pub fn enqueue_alert(&mut self, alert: &Alert) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let added = insert_alert(&tx, alert)?;
        tx.commit()?;
        Ok(added)
    }

    /// How many of the alerts made here central has acknowledged, and how many still wait in the
    /// outbox.
    pub fn alert_uploads(&self) -> Result<AlertUploads> {
        let total: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))?;
        let awaiting_upload = self.alerts_in_outbox()?;
        Ok(AlertUploads {
            awaiting_upload,
            uploaded: (total.max(0) as u64).saturating_sub(awaiting_upload),
        })
    }

    /// Alerts whose `sent_at` is unset, oldest first: every alert enqueued here but those the
    /// gateway's modem sent (central relays the rest once uploaded); [`Store::alert_uploads`]
    /// says which of them central has.
    pub fn unsent_alerts(&self) -> Result<Vec<Alert>> {
        let mut statement = self.conn.prepare(
            "SELECT id, account, kind, created_at, message, vars FROM alerts WHERE sent_at IS NULL ORDER BY created_at, id",
        )?;
        let rows = statement.query_map([], |r| {
            Ok(Alert {
                id: r.get(0)?,
                account: r.get(1)?,
                kind: r.get(2)?,
                created_at: from_ts(r.get(3)?),
                message: r.get(4)?,
                vars: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Number of alerts of a kind for an account (for reports and tests).
    pub fn alert_count(&self, account: &str, kind: &str) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM alerts WHERE account = ?1 AND kind = ?2",
            params![account, kind],
            |r| r.get(0),
        )?)
    }

    /// Records a technician's override durably (audited: who, why, until when).
    pub fn record_override(&mut self, record: &OverrideRecord) -> Result<()> {
        let tx = self.conn.transaction()?;
        let added = tx
            .execute(
                "INSERT INTO overrides (id, account, action, until, technician, reason, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                params![
                    record.id,
                    record.account,
                    action_str(record.action),
                    ts(record.until),
                    record.technician,
                    record.reason,
                    ts(record.created_at)
                ],
            )
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => {
                    StoreError::UnknownAccount(record.account.clone())
                }
                _ => e.into(),
            })?;
        if added == 1 {
            let event = UplinkEvent::Override {
                id: record.id.clone(),
                account: record.account.clone(),
                action: record.action.into(),
                until: record.until,
                technician: record.technician.clone(),
                reason: record.reason.clone(),
                created_at: record.created_at,
            };
            append_outbox(&tx, &event)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The override in force for an account at `now`: the latest one recorded, if not expired.
    pub fn active_override(&self, account: &str, now: DateTime<Utc>) -> Result<Option<Override>> {
        let latest = self
            .conn
            .query_row(
                "SELECT action, until FROM overrides WHERE account = ?1 AND created_at <= ?2 ORDER BY created_at DESC, seq DESC LIMIT 1",
                params![account, ts(now)],
                |r| {
                    Ok(Override {
                        action: parse_action(&r.get::<_, String>(0)?),
                        until: from_ts(r.get(1)?),
                    })
                },
            )
            .optional()?;
        Ok(latest.filter(|o| o.until > now))
    }
}

pub(super) fn insert_alert(tx: &Transaction<'_>, alert: &Alert) -> Result<bool> {
    let vars =
        serde_json::to_string(&alert.vars).map_err(|e| StoreError::Encoding(e.to_string()))?;
    let added = tx
        .prepare_cached(
            "INSERT INTO alerts (id, account, kind, created_at, message, vars) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![alert.id, alert.account, alert.kind, ts(alert.created_at), alert.message, vars])?;
    if added == 1 {
        let event = UplinkEvent::Notice {
            id: alert.id.clone(),
            account: alert.account.clone(),
            kind: alert.kind.clone(),
            created_at: alert.created_at,
            message: alert.message.clone(),
            vars: alert.vars.clone().into_iter().collect(),
            sent_by_gateway_at: None,
        };
        let seq = append_outbox_seq(tx, &event)?;
        tx.prepare_cached("UPDATE alerts SET outbox_seq = ?2 WHERE id = ?1")?
            .execute(params![alert.id, seq])?;
    }
    Ok(added == 1)
}

/// Notes the trip of a disconnect queued as `command`, when its decision is a load-limit trip
/// (in the transaction that queues it).
fn note_load_trip_in(tx: &Transaction<'_>, command: &str, record: &DecisionRecord) -> Result<()> {
    let (Some(until), Some(load), Some(RelayAction::Disconnect)) = (
        record.outcome.load_trip,
        record.facts.load,
        record.outcome.relay,
    ) else {
        return Ok(());
    };
    tx.execute(
        "INSERT INTO load_trips (command, account, at, until, sanctioned_w) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (command) DO NOTHING",
        params![command, record.account, ts(record.at), ts(until), load.sanctioned_w],
    )?;
    Ok(())
}
