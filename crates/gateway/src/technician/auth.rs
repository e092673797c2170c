//! Who may do what at the gateway with no backhaul: roles, the decoy checked for unknown names,
//! and the sessions, lockout rule and CSRF tokens of `gramgrid_web::session` for this app's roles.
use crate::store::TechnicianAccount;

/// A technician's role, as central assigned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads every page; changes nothing.
    Viewer,
    /// Also redeems vouchers, starts a sync and downloads diagnostics.
    Technician,
    /// Also overrides the policy for a household (reconnect, or keep connected).
    Supervisor,
}

impl Role {
    /// From central's name for it; an unknown role is no role (the login is refused).
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "technician" => Some(Role::Technician),
            "supervisor" => Some(Role::Supervisor),
            _ => None,
        }
    }

    /// Central's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Technician => "technician",
            Role::Supervisor => "supervisor",
        }
    }

    /// Whether this role may do what needs `required`.
    pub fn may(self, required: Role) -> bool {
        self >= required
    }
}

/// An account no one's password matches: checked when the name is unknown, so a wrong name
/// takes as long as a wrong password and does not tell which names exist.
pub fn decoy(name: &str) -> TechnicianAccount {
    TechnicianAccount {
        name: name.to_string(),
        full_name: String::new(),
        role: String::new(),
        password_hash: gramgrid_web::password::DECOY.into(),
        active: false,
    }
}

/// A logged-in technician.
pub type Session = gramgrid_web::session::Session<Role>;

/// The sessions of this daemon (in memory: a restart logs everyone out).
pub type Sessions = gramgrid_web::session::Sessions<Role>;

pub use gramgrid_web::session::{after_failure, random_token, tokens_match, SessionRefused};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        assert!(Role::Supervisor.may(Role::Technician));
        assert!(Role::Technician.may(Role::Viewer));
        assert!(!Role::Viewer.may(Role::Technician));
        assert!(!Role::Technician.may(Role::Supervisor));
        assert_eq!(Role::parse("admin"), None);
    }

    #[test]
    fn a_wrong_name_is_checked_against_a_real_hash_and_matches_nothing() {
        let decoy = decoy("nobody");
        assert!(!decoy.password_matches("") && !decoy.password_matches("nobody"));
    }
}
