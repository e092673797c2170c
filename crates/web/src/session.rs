//! Who is logged in: sessions in memory that expire when idle or old, the lockout rule after
//! failed logins, and the random tokens behind sessions and CSRF checks.
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;

/// The lockout rule after a failed login: the new failure count, and the time the account is
/// locked until once `after` failures in a row have been reached.
pub fn after_failure(
    failures: u32,
    after: u32,
    lock_for: Duration,
    now: DateTime<Utc>,
) -> (u32, Option<DateTime<Utc>>) {
    let failures = failures.saturating_add(1);
    let locked = (failures >= after.max(1))
        .then(|| now + chrono::Duration::from_std(lock_for).unwrap_or(chrono::Duration::MAX));
    (failures, locked)
}

/// A logged-in person, with the role `R` of the page set they logged in to.
#[derive(Debug, Clone)]
pub struct Session<R> {
    /// The login name.
    pub name: String,
    /// The person's name.
    pub full_name: String,
    /// The role at login (a change applies from the next login).
    pub role: R,
    /// The token every form must carry back.
    pub csrf: String,
    started: DateTime<Utc>,
    last_seen: DateTime<Utc>,
}

/// Why a session cookie did not let a request in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefused {
    /// No such session (never, or logged out, or the server restarted).
    Unknown,
    /// It was idle too long or is too old.
    Expired,
}

/// The sessions of one server (in memory: a restart logs everyone out).
#[derive(Debug)]
pub struct Sessions<R> {
    by_token: HashMap<String, Session<R>>,
}

impl<R> Default for Sessions<R> {
    fn default() -> Self {
        Sessions {
            by_token: HashMap::new(),
        }
    }
}

impl<R: Clone> Sessions<R> {
    /// Starts a session and returns its token (the cookie's value).
    pub fn start(&mut self, name: &str, full_name: &str, role: R, now: DateTime<Utc>) -> String {
        let token = random_token();
        self.by_token.insert(
            token.clone(),
            Session {
                name: name.to_string(),
                full_name: full_name.to_string(),
                role,
                csrf: random_token(),
                started: now,
                last_seen: now,
            },
        );
        token
    }

    /// The session of `token` at `now` under the idle and maximum ages, refreshed; an expired one
    /// is forgotten.
    pub fn touch(
        &mut self,
        token: &str,
        now: DateTime<Utc>,
        idle: Duration,
        max: Duration,
    ) -> Result<Session<R>, SessionRefused> {
        let session = self
            .by_token
            .get_mut(token)
            .ok_or(SessionRefused::Unknown)?;
        let older_than = |since: DateTime<Utc>, limit: Duration| {
            (now - since).to_std().is_ok_and(|age| age > limit)
        };
        if older_than(session.last_seen, idle) || older_than(session.started, max) {
            self.by_token.remove(token);
            return Err(SessionRefused::Expired);
        }
        session.last_seen = now;
        Ok(session.clone())
    }

    /// Ends the session of `token`.
    pub fn end(&mut self, token: &str) {
        self.by_token.remove(token);
    }

    /// Ends every session of `name` (the account was disabled or locked).
    pub fn end_all_of(&mut self, name: &str) {
        self.by_token.retain(|_, s| s.name != name);
    }
}

/// 32 random bytes as hex: session tokens and CSRF tokens.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares a submitted token with the expected one in constant time.
pub fn tokens_match(expected: &str, submitted: &str) -> bool {
    expected.len() == submitted.len()
        && expected
            .bytes()
            .zip(submitted.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::minutes(minutes)
    }

    #[test]
    fn the_fifth_failure_in_a_row_locks_for_the_configured_time() {
        let lock = Duration::from_secs(15 * 60);
        assert_eq!(after_failure(3, 5, lock, at(0)), (4, None));
        assert_eq!(after_failure(4, 5, lock, at(0)), (5, Some(at(15))));
    }

    #[test]
    fn sessions_expire_when_idle_or_old_and_are_gone_after() {
        let (idle, max) = (Duration::from_secs(30 * 60), Duration::from_secs(12 * 3600));
        let mut sessions = Sessions::default();
        let token = sessions.start("asha", "Asha", "technician", at(0));
        assert!(sessions.touch(&token, at(29), idle, max).is_ok());
        assert!(
            sessions.touch(&token, at(58), idle, max).is_ok(),
            "kept alive by use"
        );
        assert_eq!(
            sessions.touch(&token, at(100), idle, max).unwrap_err(),
            SessionRefused::Expired
        );
        assert_eq!(
            sessions.touch(&token, at(101), idle, max).unwrap_err(),
            SessionRefused::Unknown
        );
        let busy = sessions.start("asha", "Asha", "technician", at(0));
        for minute in (10..=720).step_by(10) {
            assert!(sessions.touch(&busy, at(minute), idle, max).is_ok());
        }
        assert!(
            sessions.touch(&busy, at(730), idle, max).is_err(),
            "12 h at most"
        );
        let other = sessions.start("ravi", "Ravi", "viewer", at(0));
        sessions.end_all_of("asha");
        assert!(sessions.touch(&other, at(1), idle, max).is_ok());
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert!(
            tokens_match("abc", "abc") && !tokens_match("abc", "abd") && !tokens_match("abc", "ab")
        );
        assert_eq!(random_token().len(), 64);
        assert_ne!(random_token(), random_token());
    }
}
