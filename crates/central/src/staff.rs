//! Office staff who log in to the console: roles, Argon2id hashes, failed logins and lock-outs.
//!
//! Accounts are set with `gramgrid central staff set` (the first admin) or by an admin in the
//! console. A role says what its holder may do ([`StaffRole::may`]); the console checks it on every
//! request, and every write is audited as `staff:<name>`.
use super::db::{Row, Tx};
use super::technicians::{check_full_name, check_login_name, hash_password, MIN_PASSWORD_CHARS};
use super::{CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use serde::Serialize;

/// What a staff member may do, from the office's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StaffRole {
    /// Reads every page and report; changes nothing.
    Viewer,
    /// Also takes counter payments and issues and cancels vouchers.
    Cashier,
    /// Also resolves flags (the business events).
    Engineer,
    /// Everything, including staff accounts.
    Admin,
}

/// A kind of action a role may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read pages, reports and CSV exports.
    Read,
    /// Take payments, issue and cancel vouchers.
    Cash,
    /// Resolve flags.
    Resolve,
    /// Manage staff accounts.
    Administer,
}

impl StaffRole {
    /// Every role, in the order the console lists them.
    pub const ALL: [StaffRole; 4] = [
        StaffRole::Viewer,
        StaffRole::Cashier,
        StaffRole::Engineer,
        StaffRole::Admin,
    ];

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Viewer => "viewer",
            StaffRole::Cashier => "cashier",
            StaffRole::Engineer => "engineer",
            StaffRole::Admin => "admin",
        }
    }

    /// From its name; anything else is no role.
    pub fn parse(name: &str) -> Option<StaffRole> {
        StaffRole::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether this role may do `what`.
    pub fn may(self, what: Permission) -> bool {
        match what {
            Permission::Read => true,
            Permission::Cash => matches!(self, StaffRole::Cashier | StaffRole::Admin),
            Permission::Resolve => matches!(self, StaffRole::Engineer | StaffRole::Admin),
            Permission::Administer => self == StaffRole::Admin,
        }
    }
}

/// A staff account as pages and the command line show it (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaffMember {
    /// Login name.
    pub name: String,
    /// The person's name.
    pub full_name: String,
    /// What they may do.
    pub role: StaffRole,
    /// false: logins are refused.
    pub active: bool,
    /// Failed logins in a row.
    pub failures: u32,
    /// Logins are refused until then after too many failures.
    pub locked_until: Option<DateTime<Utc>>,
    /// When the account was last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

/// A change to a staff account ([`set_staff`]). `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct StaffChange {
    /// The person's name.
    pub full_name: String,
    /// The role.
    pub role: StaffRole,
    /// A new password; `None` keeps the current one (a new account needs one).
    pub password: Option<String>,
    /// Whether logins are allowed; `None` keeps the setting (a new account is active).
    pub active: Option<bool>,
}

impl std::fmt::Debug for StaffChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffChange")
            .field("full_name", &self.full_name)
            .field("role", &self.role)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("active", &self.active)
            .finish()
    }
}

/// Creates or changes staff member `name` in the caller's transaction; returns the account and
/// whether it was created. A new password also clears failed logins and a lock-out. Refused
/// (nothing written): a bad name or full name, a password too short, a new account without a
/// password.
pub fn set_staff(
    tx: &mut dyn Tx,
    name: &str,
    change: &StaffChange,
    now: DateTime<Utc>,
) -> Result<(StaffMember, bool)> {
    check_login_name("staff", name)?;
    check_full_name(&change.full_name)?;
    let current = tx.query_opt(
        "SELECT password_hash, active FROM staff WHERE name = $1",
        &[name.into()],
    )?;
    let password_hash = match (&change.password, &current) {
        (Some(password), _) => hash_password(password)?,
        (None, Some(row)) => row.text(0)?,
        (None, None) => {
            return Err(CentralError::Invalid(format!(
                "staff member '{name}' is new: give a password (at least {MIN_PASSWORD_CHARS} characters)"
            )))
        }
    };
    let was_active = current.as_ref().map(|row| row.int(1)).transpose()?;
    let active = change.active.unwrap_or(was_active.is_none_or(|a| a != 0));
    tx.execute(
        "INSERT INTO staff (name, full_name, role, password_hash, active, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (name) DO UPDATE SET full_name = excluded.full_name, role = excluded.role,
             password_hash = excluded.password_hash, active = excluded.active,
             updated_at = excluded.updated_at",
        &[
            name.into(),
            change.full_name.as_str().into(),
            change.role.as_str().into(),
            password_hash.as_str().into(),
            i64::from(active).into(),
            ts(now).into(),
        ],
    )?;
    if change.password.is_some() {
        set_login_failures(tx, name, 0, None)?;
    }
    Ok((staff_member(tx, name)?, current.is_none()))
}

const COLUMNS: &str = "name, full_name, role, active, failures, locked_until, updated_at";

fn from_row(row: &Row) -> Result<StaffMember> {
    let role = row.text(2)?;
    Ok(StaffMember {
        name: row.text(0)?,
        full_name: row.text(1)?,
        role: StaffRole::parse(&role)
            .ok_or_else(|| CentralError::Corrupt(format!("staff role '{role}'")))?,
        active: row.int(3)? != 0,
        failures: u32::try_from(row.int(4)?).unwrap_or(u32::MAX),
        locked_until: row.opt_int(5)?.map(from_ts),
        updated_at: from_ts(row.int(6)?),
    })
}

/// Staff member `name` (404 when there is none).
pub fn staff_member(tx: &mut dyn Tx, name: &str) -> Result<StaffMember> {
    let row = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM staff WHERE name = $1"),
            &[name.into()],
        )?
        .ok_or_else(|| CentralError::NotFound(format!("no staff member '{name}'")))?;
    from_row(&row)
}

/// Every staff account, by name.
pub fn list_staff(tx: &mut dyn Tx) -> Result<Vec<StaffMember>> {
    tx.query(&format!("SELECT {COLUMNS} FROM staff ORDER BY name"), &[])?
        .iter()
        .map(from_row)
        .collect()
}

/// The account and its hash, for a login (`None`: no such name).
pub fn login_facts(tx: &mut dyn Tx, name: &str) -> Result<Option<(StaffMember, String)>> {
    let Some(row) = tx.query_opt(
        &format!("SELECT {COLUMNS}, password_hash FROM staff WHERE name = $1"),
        &[name.into()],
    )?
    else {
        return Ok(None);
    };
    Ok(Some((from_row(&row)?, row.text(7)?)))
}

/// Records failed logins in a row and a lock-out (zero and `None` after a good login).
pub fn set_login_failures(
    tx: &mut dyn Tx,
    name: &str,
    failures: u32,
    locked_until: Option<DateTime<Utc>>,
) -> Result<()> {
    tx.execute(
        "UPDATE staff SET failures = $2, locked_until = $3 WHERE name = $1",
        &[
            name.into(),
            i64::from(failures).into(),
            locked_until.map(ts).into(),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn change(role: StaffRole, password: Option<&str>) -> StaffChange {
        StaffChange {
            full_name: "Meera Sahu".into(),
            role,
            password: password.map(str::to_owned),
            active: None,
        }
    }

    #[test]
    fn roles_allow_what_the_office_expects() {
        use Permission::*;
        let allowed = |role: StaffRole| {
            [Read, Cash, Resolve, Administer]
                .into_iter()
                .filter(|p| role.may(*p))
                .count()
        };
        assert!(StaffRole::Cashier.may(Cash) && !StaffRole::Cashier.may(Administer));
        assert!(StaffRole::Engineer.may(Resolve) && !StaffRole::Engineer.may(Cash));
        assert!(!StaffRole::Viewer.may(Cash) && StaffRole::Viewer.may(Read));
        assert_eq!(allowed(StaffRole::Admin), 4);
        assert_eq!(StaffRole::parse("root"), None);
    }

    #[test]
    fn an_account_keeps_its_hash_never_its_password_and_a_new_password_unlocks_it() {
        for t in crate::testing::backends() {
            let now = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap();
            let created = t
                .tx(move |tx| {
                    set_staff(
                        tx,
                        "meera",
                        &change(StaffRole::Cashier, Some("counter-2026")),
                        now,
                    )
                })
                .unwrap();
            assert!(created.1 && created.0.active && created.0.role == StaffRole::Cashier);
            let (_, hash) = t.tx(|tx| login_facts(tx, "meera")).unwrap().unwrap();
            assert!(gramgrid_web::password::matches(&hash, "counter-2026"));
            assert!(!hash.contains("counter-2026"));
            t.tx(move |tx| set_login_failures(tx, "meera", 5, Some(now)))
                .unwrap();
            let (changed, new) = t
                .tx(move |tx| set_staff(tx, "meera", &change(StaffRole::Admin, None), now))
                .unwrap();
            assert!(!new && changed.role == StaffRole::Admin && changed.failures == 5);
            let (unlocked, _) = t
                .tx(move |tx| {
                    set_staff(
                        tx,
                        "meera",
                        &change(StaffRole::Admin, Some("a-new-one-2026")),
                        now,
                    )
                })
                .unwrap();
            assert_eq!((unlocked.failures, unlocked.locked_until), (0, None));
            for (name, password) in [
                ("Meera", Some("counter-2026")),
                ("new.one", None),
                ("ok.name", Some("short")),
            ] {
                let refused =
                    t.tx(move |tx| set_staff(tx, name, &change(StaffRole::Viewer, password), now));
                assert!(matches!(refused, Err(CentralError::Invalid(_))), "{name}");
            }
            assert_eq!(t.tx(list_staff).unwrap().len(), 1);
        }
    }
}
