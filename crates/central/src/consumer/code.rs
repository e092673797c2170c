//! One-time login codes: a household types its account number and registered phone, gets a
//! 6-digit code by SMS, and types it back. The rules are pure ([`may_issue`], [`check`]); the
//! store keeps only each code's hash ([`super::link::LinkKey::code_hash`]).
//!
//! Nothing here tells a caller whether an account exists or a phone is its own: the page gives
//! the same answer either way, and a code goes only to the phone the account has at central.
use super::link::LinkKey;
use crate::db::Tx;
use crate::{accounts, notify, Result};
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_core::message::{Kind, Vars};
use subtle::ConstantTimeEq;

/// Digits in a code.
pub const CODE_DIGITS: usize = 6;
/// How long a code opens the page after it is made (its SMS says so).
pub const CODE_LIFETIME: Duration = Duration::minutes(10);
/// Wrong entries a code survives; the next wrong one ends it.
pub const MAX_TRIES: i64 = 5;
/// Codes sent to one account within [`RATE_WINDOW`] at most.
pub const MAX_CODES_PER_WINDOW: i64 = 3;
/// The window of [`MAX_CODES_PER_WINDOW`].
pub const RATE_WINDOW: Duration = Duration::hours(1);

/// An account's latest code as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeState {
    /// The code's hash; None once used or ended by too many wrong entries.
    pub hash: Option<String>,
    /// When it was made.
    pub issued_at: DateTime<Utc>,
    /// Wrong entries so far.
    pub tries: i64,
    /// When the account's current rate window began.
    pub window_start: DateTime<Utc>,
    /// Codes sent in that window.
    pub sent_in_window: i64,
}

/// The rate window a new code at `now` counts in, as (start, codes in it with this one); None
/// when the account has had its [`MAX_CODES_PER_WINDOW`] codes in the current window.
pub fn may_issue(state: Option<&CodeState>, now: DateTime<Utc>) -> Option<(DateTime<Utc>, i64)> {
    match state {
        Some(s) if now - s.window_start < RATE_WINDOW => (s.sent_in_window < MAX_CODES_PER_WINDOW)
            .then_some((s.window_start, s.sent_in_window + 1)),
        _ => Some((now, 1)),
    }
}

/// What an entered code does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The code is right and in time: the page opens and the code is spent.
    Accepted,
    /// Wrong; the code stays for `tries` wrong entries in all (ended at [`MAX_TRIES`]).
    Wrong {
        /// Wrong entries including this one.
        tries: i64,
    },
    /// No code to compare with (none made, used, ended, or expired): nothing changes.
    NoCode,
}

/// Judges `presented_hash` (the hash of what was typed, made with the stored code's time)
/// against the stored code at `now`.
pub fn check(state: Option<&CodeState>, presented_hash: &str, now: DateTime<Utc>) -> Check {
    let Some((state, hash)) = state.and_then(|s| s.hash.as_deref().map(|h| (s, h))) else {
        return Check::NoCode;
    };
    if now - state.issued_at >= CODE_LIFETIME || state.tries >= MAX_TRIES {
        return Check::NoCode;
    }
    if bool::from(hash.as_bytes().ct_eq(presented_hash.as_bytes())) {
        Check::Accepted
    } else {
        Check::Wrong {
            tries: state.tries + 1,
        }
    }
}

/// The digits of a phone number, without a leading country code 91 or trunk 0 (an Indian mobile
/// number is its last ten digits), so `+91 98000 00001` and `098000-00001` are one number.
pub fn phone_key(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let start = digits.len().saturating_sub(10);
    digits[start..].to_string()
}

/// A random code of [`CODE_DIGITS`] digits (leading zeros kept).
pub fn random_code() -> String {
    let codes = 10u32.pow(CODE_DIGITS as u32);
    format!("{:0CODE_DIGITS$}", rand::random::<u32>() % codes)
}

fn state_of(tx: &mut dyn Tx, account: &str) -> Result<Option<CodeState>> {
    tx.query_opt(
        "SELECT code_hash, issued_at, tries, window_start, sent_in_window FROM consumer_codes WHERE account = $1",
        &[account.into()],
    )?
    .map(|row| {
        Ok(CodeState {
            hash: row.opt_text(0)?,
            issued_at: from_ts(row.int(1)?),
            tries: row.int(2)?,
            window_start: from_ts(row.int(3)?),
            sent_in_window: row.int(4)?,
        })
    })
    .transpose()
}

/// Asks for a code for `account` at `phone`: made and queued by SMS only when the account exists,
/// `phone` is the one it has at central and its rate allows; otherwise nothing happens. The
/// caller answers the same in every case. True when a code was queued (for the log and tests).
pub fn request_code(
    tx: &mut dyn Tx,
    key: &LinkKey,
    account: &str,
    phone: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let registered = match accounts::account(tx, account) {
        Ok(found) => found.phone,
        Err(crate::CentralError::NotFound(_)) => return Ok(false),
        Err(other) => return Err(other),
    };
    let presented = phone_key(phone);
    let matches = registered.is_some_and(|r| {
        let r = phone_key(&r);
        r.len() >= 6 && bool::from(r.as_bytes().ct_eq(presented.as_bytes()))
    });
    if !matches {
        return Ok(false);
    }
    let Some((window_start, sent)) = may_issue(state_of(tx, account)?.as_ref(), now) else {
        return Ok(false);
    };
    let now = from_ts(ts(now));
    let code = random_code();
    tx.execute(
        "INSERT INTO consumer_codes (account, code_hash, issued_at, tries, window_start, sent_in_window)
         VALUES ($1, $2, $3, 0, $4, $5)
         ON CONFLICT (account) DO UPDATE SET code_hash = $2, issued_at = $3, tries = 0, window_start = $4, sent_in_window = $5",
        &[
            account.into(),
            key.code_hash(account, now, &code).into(),
            ts(now).into(),
            ts(window_start).into(),
            sent.into(),
        ],
    )?;
    let vars: Vars = [("code".to_string(), code)].into();
    notify::enqueue(
        tx,
        &format!("login-code:{account}:{}:{sent}", ts(now)),
        account,
        Kind::LoginCode.as_str(),
        "a one-time code for the consumer page",
        &vars,
        now,
    )?;
    Ok(true)
}

/// Checks `code` typed for `account` at `now`: true when it opens the page (the code is spent).
/// A wrong entry counts against the code; no code, an expired or ended one, or an unknown
/// account is simply false.
pub fn enter_code(
    tx: &mut dyn Tx,
    key: &LinkKey,
    account: &str,
    code: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let state = state_of(tx, account)?;
    let typed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let presented = state
        .as_ref()
        .map(|s| key.code_hash(account, s.issued_at, &typed))
        .unwrap_or_default();
    match check(state.as_ref(), &presented, now) {
        Check::Accepted => {
            tx.execute(
                "UPDATE consumer_codes SET code_hash = NULL WHERE account = $1",
                &[account.into()],
            )?;
            Ok(true)
        }
        Check::Wrong { tries } => {
            tx.execute(
                "UPDATE consumer_codes SET tries = $2 WHERE account = $1",
                &[account.into(), tries.into()],
            )?;
            Ok(false)
        }
        Check::NoCode => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    fn state(issued: i64, tries: i64) -> CodeState {
        CodeState {
            hash: Some("h".into()),
            issued_at: at(issued),
            tries,
            window_start: at(issued),
            sent_in_window: 1,
        }
    }

    #[test]
    fn a_code_is_good_for_ten_minutes_and_five_wrong_tries() {
        let fresh = state(0, 0);
        assert_eq!(check(Some(&fresh), "h", at(9)), Check::Accepted);
        assert_eq!(check(Some(&fresh), "h", at(10)), Check::NoCode);
        assert_eq!(check(Some(&fresh), "x", at(1)), Check::Wrong { tries: 1 });
        assert_eq!(
            check(Some(&state(0, 4)), "x", at(1)),
            Check::Wrong { tries: 5 }
        );
        // Five wrong entries end it: even the right code no longer opens the page.
        assert_eq!(check(Some(&state(0, 5)), "h", at(1)), Check::NoCode);
        let spent = CodeState {
            hash: None,
            ..fresh
        };
        assert_eq!(check(Some(&spent), "h", at(1)), Check::NoCode);
        assert_eq!(check(None, "", at(1)), Check::NoCode);
    }

    #[test]
    fn at_most_three_codes_an_hour_go_to_one_account() {
        assert_eq!(may_issue(None, at(0)), Some((at(0), 1)));
        let mut s = state(0, 0);
        assert_eq!(may_issue(Some(&s), at(5)), Some((at(0), 2)));
        s.sent_in_window = 3;
        assert_eq!(may_issue(Some(&s), at(59)), None);
        assert_eq!(may_issue(Some(&s), at(60)), Some((at(60), 1)));
    }

    #[test]
    fn a_phone_is_its_last_ten_digits_and_a_code_six() {
        assert_eq!(phone_key("+91 98000-00001"), "9800000001");
        assert_eq!(phone_key("09800000001"), "9800000001");
        assert_eq!(phone_key("12"), "12");
        for _ in 0..100 {
            let code = random_code();
            assert!(code.len() == CODE_DIGITS && code.chars().all(|c| c.is_ascii_digit()));
        }
    }

    fn household(t: &crate::testing::TestCentral, phone: Option<&str>) {
        let account = accounts::Account {
            id: "A1".into(),
            consumer_name: "Sunita".into(),
            category: gramgrid_core::tariff::Category::Domestic,
            phone: phone.map(str::to_owned),
            gateway: None,
            language: Default::default(),
            created_at: at(0),
        };
        t.tx(move |tx| accounts::put_account(tx, &account, false))
            .unwrap();
    }

    /// The code of the account's latest `login_code` message, read from its variables.
    fn sent_code(t: &crate::testing::TestCentral) -> Option<String> {
        t.tx(|tx| {
            Ok(tx
                .query_opt(
                    "SELECT vars FROM notifications WHERE kind = 'login_code' ORDER BY created_at DESC, id DESC LIMIT 1",
                    &[],
                )?
                .map(|r| {
                    let vars: Vars = serde_json::from_str(&r.text(0).unwrap()).unwrap();
                    vars["code"].clone()
                }))
        })
        .unwrap()
    }

    #[test]
    fn a_code_goes_only_to_the_registered_phone_is_stored_hashed_and_opens_once() {
        let t = crate::testing::central();
        household(&t, Some("+919800000001"));
        let key = std::sync::Arc::new(LinkKey::from_bytes(&[7; 32]));
        let request = |account: &'static str, phone: &'static str, minute: i64| {
            let key = std::sync::Arc::clone(&key);
            t.tx(move |tx| request_code(tx, &key, account, phone, at(minute)))
                .unwrap()
        };
        let enter = |code: String, minute: i64| {
            let key = std::sync::Arc::clone(&key);
            t.tx(move |tx| enter_code(tx, &key, "A1", &code, at(minute)))
                .unwrap()
        };
        assert!(!request("A1", "9800000002", 0), "another phone");
        assert!(!request("NOPE", "9800000001", 0), "no such account");
        assert_eq!(sent_code(&t), None);
        assert!(request("A1", "098000 00001", 0));
        let code = sent_code(&t).unwrap();
        let stored = t
            .tx(|tx| Ok(tx.query_opt("SELECT code_hash FROM consumer_codes", &[])?))
            .unwrap()
            .unwrap()
            .text(0)
            .unwrap();
        assert!(stored.len() == 64 && !stored.contains(&code), "{stored}");
        let wrong = if code == "000000" { "000001" } else { "000000" };
        assert!(!enter(wrong.into(), 1));
        assert!(enter(code.clone(), 2));
        assert!(!enter(code, 3), "a code opens the page once");
        // Three codes an hour: the third is the last until the hour is over.
        assert!(request("A1", "9800000001", 4));
        assert!(request("A1", "9800000001", 5));
        assert!(!request("A1", "9800000001", 6));
        assert!(request("A1", "9800000001", 61));
        let late = sent_code(&t).unwrap();
        assert!(!enter(late, 72), "ten minutes and no more");
    }

    #[test]
    fn an_account_without_a_phone_gets_no_code() {
        let t = crate::testing::central();
        household(&t, None);
        let key = LinkKey::from_bytes(&[7; 32]);
        assert!(!t
            .tx(move |tx| request_code(tx, &key, "A1", "", at(0)))
            .unwrap());
    }
}
