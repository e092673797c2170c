//! Technician accounts (set here, an Argon2id hash each, sent to every gateway) and the actions the gateways audited.
//!
//! Technicians log in to a gateway's local web app over the village Wi-Fi, with no backhaul, so
//! every gateway holds every account: a change is appended to every gateway's downlink log in its
//! own transaction, and a gateway enrolled later is sent them all (`downlink::ensure_gateway`). A
//! gateway that spoke a protocol too old for them gets them all again once it speaks a newer one
//! ([`OWED`]). What a technician did (or tried) at a gateway comes back as
//! `UplinkEvent::TechnicianAction`, stored once by id with the gateway of the certificate.
use super::db::{Row, Tx};
use super::downlink::{append_downlink_to_all, Owed};
use super::{CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_proto::wire::DownlinkEvent;
use serde::Serialize;

/// The roles a technician may have, from least to most trusted.
pub const ROLES: &[&str] = &["viewer", "technician", "supervisor"];
/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes (a bound on hashing work, far above any real one).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest full name accepted, in characters.
pub const MAX_FULL_NAME_CHARS: usize = 100;
/// Most actions one listing returns.
pub const MAX_ACTIONS_LIMIT: i64 = 1000;
/// The oldest sync protocol that carries technician records (`DownlinkEvent::Technician`).
const TECHNICIAN_PROTOCOL: u16 = 5;

/// A change to a technician account (`set_technician`). The password is never printed: `Debug`
/// leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct TechnicianChange {
    /// The person's name as pages and the audit show it.
    pub full_name: String,
    /// One of [`ROLES`].
    pub role: String,
    /// A new password; `None` keeps the current one (a new account needs one).
    pub password: Option<String>,
    /// Whether logins are allowed; `None` keeps the current setting (a new account is active).
    pub active: Option<bool>,
}

impl std::fmt::Debug for TechnicianChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TechnicianChange")
            .field("full_name", &self.full_name)
            .field("role", &self.role)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("active", &self.active)
            .finish()
    }
}

/// A technician account as the API and the command line show it (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Technician {
    /// Login name.
    pub name: String,
    /// The person's name.
    pub full_name: String,
    /// `viewer`, `technician` or `supervisor`.
    pub role: String,
    /// false: logins are refused at every gateway.
    pub active: bool,
    /// When it was last changed here (UTC).
    pub updated_at: DateTime<Utc>,
}

/// What [`set_technician`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The account as stored.
    pub technician: Technician,
    /// true: it was created; false: an existing one was changed.
    pub created: bool,
    /// How many gateways were sent it (each takes it at its next sync).
    pub gateways: usize,
}

/// Something a technician did (or tried) at a gateway, as the gateway audited it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TechnicianAction {
    /// Unique id made by the gateway (`tech-<gateway>-<random hex>`).
    pub id: String,
    /// The gateway it happened at (its certificate's id).
    pub gateway: String,
    /// The login name (or the name tried, for a failed login).
    pub technician: String,
    /// What happened (`login`, `login_failed`, `override`, ...), as the gateway said it.
    pub action: String,
    /// The account or meter it concerned, if any.
    pub subject: Option<String>,
    /// What was done, in words.
    pub detail: String,
    /// Why, as the technician wrote it, if the action asks for a reason.
    pub reason: Option<String>,
    /// When (the gateway's clock, UTC).
    pub at: DateTime<Utc>,
    /// When central received it (UTC).
    pub received_at: DateTime<Utc>,
}

/// Checks a technician's login name: see [`check_login_name`].
pub fn check_name(name: &str) -> Result<()> {
    check_login_name("technician", name)
}

/// Checks the login name of a `who` (technician, staff member): 3 to 32 characters, lowercase
/// ASCII letters, digits, '.', '-' and '_'.
pub fn check_login_name(who: &str, name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
    if !(3..=32).contains(&name.len()) || !name.chars().all(allowed) {
        return Err(CentralError::Invalid(format!(
            "{who} name '{name}' is not valid: use 3 to 32 characters of lowercase letters a-z, digits, '.', '-' and '_' (e.g. asha.verma)"
        )));
    }
    Ok(())
}

fn check_role(role: &str) -> Result<()> {
    if !ROLES.contains(&role) {
        return Err(CentralError::Invalid(format!(
            "role '{role}' is not one of {}",
            ROLES.join(", ")
        )));
    }
    Ok(())
}

/// Checks a person's full name: 1 to [`MAX_FULL_NAME_CHARS`] characters, no control characters.
pub fn check_full_name(full_name: &str) -> Result<()> {
    if full_name.trim().is_empty()
        || full_name.chars().count() > MAX_FULL_NAME_CHARS
        || full_name.chars().any(char::is_control)
    {
        return Err(CentralError::Invalid(format!(
            "full_name must be 1 to {MAX_FULL_NAME_CHARS} characters, not blank, without control characters"
        )));
    }
    Ok(())
}

/// Hashes a password with Argon2id (the crate's default parameters) under a random salt, in PHC
/// string form; refuses one shorter than [`MIN_PASSWORD_CHARS`] or longer than
/// [`MAX_PASSWORD_BYTES`].
pub fn hash_password(password: &str) -> Result<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(CentralError::Invalid(format!(
            "the password is too short: give at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(CentralError::Invalid(format!(
            "the password is too long: give at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    gramgrid_web::password::hash(password)
        .map_err(|e| CentralError::Invalid(format!("the password cannot be hashed: {e}")))
}

/// Creates or changes technician `name` and appends the account (with its hash) to every
/// gateway's downlink log, in the caller's transaction. A new account needs a password; a change
/// without one keeps the hash. Refused (nothing written): a bad name, role or full name, a password
/// too short, a new account without a password.
pub fn set_technician(
    tx: &mut dyn Tx,
    name: &str,
    change: &TechnicianChange,
    now: DateTime<Utc>,
) -> Result<Saved> {
    check_name(name)?;
    check_role(&change.role)?;
    check_full_name(&change.full_name)?;
    let current = tx.query_opt(
        "SELECT password_hash, active FROM technicians WHERE name = $1",
        &[name.into()],
    )?;
    let password_hash = match (&change.password, &current) {
        (Some(password), _) => hash_password(password)?,
        (None, Some(row)) => row.text(0)?,
        (None, None) => {
            return Err(CentralError::Invalid(format!(
                "technician '{name}' is new: give a password (at least {MIN_PASSWORD_CHARS} characters)"
            )))
        }
    };
    let was_active = current.as_ref().map(|row| row.int(1)).transpose()?;
    let active = change.active.unwrap_or(was_active.is_none_or(|a| a != 0));
    tx.execute(
        "INSERT INTO technicians (name, full_name, role, password_hash, active, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (name) DO UPDATE SET full_name = excluded.full_name, role = excluded.role,
             password_hash = excluded.password_hash, active = excluded.active, updated_at = excluded.updated_at",
        &[
            name.into(),
            change.full_name.as_str().into(),
            change.role.as_str().into(),
            password_hash.as_str().into(),
            i64::from(active).into(),
            ts(now).into(),
        ],
    )?;
    let event = DownlinkEvent::Technician {
        name: name.to_owned(),
        full_name: change.full_name.clone(),
        role: change.role.clone(),
        password_hash,
        active,
        updated_at: from_ts(ts(now)),
    };
    append_downlink_to_all(tx, None, &event)?;
    let gateways = tx.query_int("SELECT COUNT(*) FROM gateways", &[])?;
    Ok(Saved {
        technician: technician(tx, name)?,
        created: current.is_none(),
        gateways: usize::try_from(gateways).unwrap_or(0),
    })
}

const TECHNICIAN_COLUMNS: &str = "name, full_name, role, active, updated_at";

fn technician_from_row(row: &Row) -> Result<Technician> {
    Ok(Technician {
        name: row.text(0)?,
        full_name: row.text(1)?,
        role: row.text(2)?,
        active: row.int(3)? != 0,
        updated_at: from_ts(row.int(4)?),
    })
}

/// Technician `name` (404 when there is none).
pub fn technician(tx: &mut dyn Tx, name: &str) -> Result<Technician> {
    let row = tx
        .query_opt(
            &format!("SELECT {TECHNICIAN_COLUMNS} FROM technicians WHERE name = $1"),
            &[name.into()],
        )?
        .ok_or_else(|| CentralError::NotFound(format!("no technician '{name}'")))?;
    technician_from_row(&row)
}

/// Every technician account, by name (no hashes).
pub fn list_technicians(tx: &mut dyn Tx) -> Result<Vec<Technician>> {
    tx.query(
        &format!("SELECT {TECHNICIAN_COLUMNS} FROM technicians ORDER BY name"),
        &[],
    )?
    .iter()
    .map(technician_from_row)
    .collect()
}

const ACTION_COLUMNS: &str =
    "id, gateway, technician, action, subject, detail, reason, at, received_at";

fn action_from_row(row: &Row) -> Result<TechnicianAction> {
    Ok(TechnicianAction {
        id: row.text(0)?,
        gateway: row.text(1)?,
        technician: row.text(2)?,
        action: row.text(3)?,
        subject: row.opt_text(4)?,
        detail: row.text(5)?,
        reason: row.opt_text(6)?,
        at: from_ts(row.int(7)?),
        received_at: from_ts(row.int(8)?),
    })
}

/// Stores an action a gateway audited (`action.gateway` is the certificate's id), once by id: the
/// same action again changes nothing and returns false; the same id with other content is a
/// [`CentralError::Conflict`] and nothing is written.
pub fn record_action(tx: &mut dyn Tx, action: &TechnicianAction) -> Result<bool> {
    let inserted = tx.execute(
        &format!(
            "INSERT INTO technician_actions ({ACTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT DO NOTHING"
        ),
        &[
            action.id.as_str().into(),
            action.gateway.as_str().into(),
            action.technician.as_str().into(),
            action.action.as_str().into(),
            action.subject.clone().into(),
            action.detail.as_str().into(),
            action.reason.clone().into(),
            ts(action.at).into(),
            ts(action.received_at).into(),
        ],
    )?;
    if inserted == 1 {
        return Ok(true);
    }
    let row = tx
        .query_opt(
            &format!("SELECT {ACTION_COLUMNS} FROM technician_actions WHERE id = $1"),
            &[action.id.as_str().into()],
        )?
        .ok_or_else(|| CentralError::Corrupt(format!("technician action '{}'", action.id)))?;
    let stored = action_from_row(&row)?;
    let same = TechnicianAction {
        received_at: stored.received_at,
        at: from_ts(ts(action.at)),
        ..action.clone()
    };
    if stored == same {
        Ok(false)
    } else {
        Err(CentralError::Conflict(format!(
            "technician action id '{}' is already recorded with different content (from gateway '{}', {} by '{}')",
            action.id, stored.gateway, stored.action, stored.technician
        )))
    }
}

/// The actions audited at gateways, newest first, at most `limit` (1 to [`MAX_ACTIONS_LIMIT`]),
/// only those of `gateway` and of `technician` when given.
pub fn technician_actions(
    tx: &mut dyn Tx,
    gateway: Option<&str>,
    technician: Option<&str>,
    limit: i64,
) -> Result<Vec<TechnicianAction>> {
    if !(1..=MAX_ACTIONS_LIMIT).contains(&limit) {
        return Err(CentralError::Invalid(format!(
            "limit {limit} is out of range: give 1 to {MAX_ACTIONS_LIMIT}"
        )));
    }
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    for (column, value) in [("gateway", gateway), ("technician", technician)] {
        if let Some(value) = value {
            params.push(value.into());
            clauses.push(format!("{column} = ${}", params.len()));
        }
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    params.push(limit.into());
    tx.query(
        &format!(
            "SELECT {ACTION_COLUMNS} FROM technician_actions {filter} ORDER BY at DESC, id DESC LIMIT ${}",
            params.len()
        ),
        &params,
    )?
    .iter()
    .map(action_from_row)
    .collect()
}

/// A gateway speaking a protocol older than [`TECHNICIAN_PROTOCOL`] skips technician records, so
/// it is owed them all (`technicians_resend`) until it speaks a newer one
/// (`downlink::resend_when_current` with `technician_events`).
pub(crate) const OWED: Owed = Owed {
    column: "technicians_resend",
    needs: TECHNICIAN_PROTOCOL,
};

#[cfg(test)]
mod tests;
