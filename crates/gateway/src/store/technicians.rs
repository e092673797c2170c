//! Technician accounts as central sent them, failed logins and lock-outs, and technicians' actions audited here and queued for central.
//!
//! Central sends every technician account to every gateway (`DownlinkEvent::Technician`, applied
//! by `sync`), so a technician can log in to the local web app with no backhaul: the account
//! carries an Argon2id hash, never the password ([`TechnicianAccount::password_matches`] checks
//! one). Every action recorded here goes to the priority outbox in the same transaction
//! (`UplinkEvent::TechnicianAction`), so central gets each one once.
use super::outbox::append_outbox;
use super::{from_ts, ts, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_proto::wire::UplinkEvent;
use rusqlite::{params, OptionalExtension, Transaction};

/// A technician's login at this gateway, as central set it.
#[derive(Clone, PartialEq, Eq)]
pub struct TechnicianAccount {
    /// Login name (3 to 32 of `a-z`, `0-9`, `.`, `-`, `_`; central checks it).
    pub name: String,
    /// The person's name as pages and the audit show it.
    pub full_name: String,
    /// `viewer`, `technician` or `supervisor`.
    pub role: String,
    /// Argon2id hash in PHC string form (never the password).
    pub password_hash: String,
    /// false: disabled, logins are refused.
    pub active: bool,
}

impl std::fmt::Debug for TechnicianAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TechnicianAccount")
            .field("name", &self.name)
            .field("full_name", &self.full_name)
            .field("role", &self.role)
            .field("password_hash", &"<redacted>")
            .field("active", &self.active)
            .finish()
    }
}

impl TechnicianAccount {
    /// Whether `password` is this account's (Argon2 verification against the stored hash, with
    /// the hash's own parameters). A hash that does not parse matches nothing. Says nothing of
    /// `active` or a lock-out: the caller checks those.
    pub fn password_matches(&self, password: &str) -> bool {
        gramgrid_web::password::matches(&self.password_hash, password)
    }
}

/// Something a technician did (or tried) at this gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TechnicianAction {
    /// Unique id made by the gateway (`tech-<gateway>-<random hex>`).
    pub id: String,
    /// The login name (or the name tried, for a failed login).
    pub technician: String,
    /// What happened: `login`, `login_failed`, `locked_out`, `logout`, `override`, `redeem`,
    /// `sync_now`, `diagnostics`, `commission`, `replace`.
    pub action: String,
    /// The account or meter it concerned, if any.
    pub subject: Option<String>,
    /// What was done, in words (e.g. "reconnect until 2026-11-30 10:00 IST").
    pub detail: String,
    /// Why, as the technician wrote it, where the action asks for a reason.
    pub reason: Option<String>,
    /// When (this gateway's clock, UTC; stored to the second).
    pub at: DateTime<Utc>,
}

/// Inserts or replaces a technician account inside the caller's transaction; `updated_at` is
/// central's time of the change (None: put here, by the demo or a test).
pub(super) fn put_technician_in(
    tx: &Transaction<'_>,
    account: &TechnicianAccount,
    updated_at: Option<DateTime<Utc>>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO technicians (name, full_name, role, password_hash, active, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (name) DO UPDATE SET full_name = ?2, role = ?3, password_hash = ?4, active = ?5, updated_at = ?6",
    )?
    .execute(params![
        account.name,
        account.full_name,
        account.role,
        account.password_hash,
        account.active,
        updated_at.map(ts)
    ])?;
    Ok(())
}

fn action_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TechnicianAction> {
    Ok(TechnicianAction {
        id: r.get(0)?,
        technician: r.get(1)?,
        action: r.get(2)?,
        subject: r.get(3)?,
        detail: r.get(4)?,
        reason: r.get(5)?,
        at: from_ts(r.get(6)?),
    })
}

const ACTION_COLUMNS: &str = "id, technician, action, subject, detail, reason, at";

impl Store {
    /// Technician `name`, if central sent one by that name.
    pub fn technician(&self, name: &str) -> Result<Option<TechnicianAccount>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT name, full_name, role, password_hash, active FROM technicians WHERE name = ?1",
            )?
            .query_row([name], |r| {
                Ok(TechnicianAccount {
                    name: r.get(0)?,
                    full_name: r.get(1)?,
                    role: r.get(2)?,
                    password_hash: r.get(3)?,
                    active: r.get(4)?,
                })
            })
            .optional()?)
    }

    /// How many technician accounts this gateway holds (active or not).
    pub fn technician_count(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM technicians", [], |r| r.get(0))?)
    }

    /// Inserts or replaces (used by downlink apply, and by the demo/tests to seed one).
    pub fn put_technician(&mut self, account: &TechnicianAccount) -> Result<()> {
        let tx = self.conn.transaction()?;
        put_technician_in(&tx, account, None)?;
        tx.commit()?;
        Ok(())
    }

    /// Failed logins in a row for `name` and when its lock-out ends, if it is locked out; (0,
    /// None) for a name never tried.
    pub fn login_failures(&self, name: &str) -> Result<(u32, Option<DateTime<Utc>>)> {
        let row: Option<(i64, Option<i64>)> = self
            .conn
            .prepare_cached("SELECT failures, locked_until FROM technician_logins WHERE name = ?1")?
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.map_or((0, None), |(failures, locked_until)| {
            (
                u32::try_from(failures).unwrap_or(0),
                locked_until.map(from_ts),
            )
        }))
    }

    /// Sets the failed logins in a row for `name` and when its lock-out ends (None: not locked).
    pub fn set_login_failures(
        &mut self,
        name: &str,
        failures: u32,
        locked_until: Option<DateTime<Utc>>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO technician_logins (name, failures, locked_until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET failures = ?2, locked_until = ?3",
            )?
            .execute(params![name, failures, locked_until.map(ts)])?;
        Ok(())
    }

    /// Records the action and queues `UplinkEvent::TechnicianAction` in the priority outbox, in
    /// one transaction. The same action again (same id and content) changes nothing; the same id
    /// with other content is [`StoreError::EventIdConflict`].
    pub fn record_technician_action(&mut self, action: &TechnicianAction) -> Result<()> {
        let tx = self.conn.transaction()?;
        record_action_in(&tx, action)?;
        tx.commit()?;
        Ok(())
    }

    /// The latest `limit` actions recorded here, newest first.
    pub fn technician_actions(&self, limit: usize) -> Result<Vec<TechnicianAction>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {ACTION_COLUMNS} FROM technician_actions ORDER BY at DESC, rowid DESC LIMIT ?1"
            ))?
            .query_map([limit], action_from_row)?
            .collect::<rusqlite::Result<_>>()?)
    }
}

/// Records a technician's action and queues its `UplinkEvent::TechnicianAction` inside the
/// caller's transaction; false if it was recorded before (same id and content).
pub(super) fn record_action_in(tx: &Transaction<'_>, action: &TechnicianAction) -> Result<bool> {
    let at = from_ts(ts(action.at));
    let added = tx
        .prepare_cached(&format!(
            "INSERT INTO technician_actions ({ACTION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO NOTHING"
        ))?
        .execute(params![
            action.id,
            action.technician,
            action.action,
            action.subject,
            action.detail,
            action.reason,
            ts(at)
        ])?;
    if added == 0 {
        let stored = tx
            .prepare_cached(&format!(
                "SELECT {ACTION_COLUMNS} FROM technician_actions WHERE id = ?1"
            ))?
            .query_row([&action.id], action_from_row)?;
        if stored
            != (TechnicianAction {
                at,
                ..action.clone()
            })
        {
            return Err(StoreError::EventIdConflict(action.id.clone()));
        }
        return Ok(false);
    }
    let event = UplinkEvent::TechnicianAction {
        id: action.id.clone(),
        technician: action.technician.clone(),
        action: action.action.clone(),
        subject: action.subject.clone(),
        detail: action.detail.clone(),
        reason: action.reason.clone(),
        at,
    };
    append_outbox(tx, &event)?;
    Ok(true)
}
