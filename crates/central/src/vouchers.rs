//! Voucher keys, issue, cancellation and single-use redemption at central and at gateways.
//!
//! Central keeps the Ed25519 signing secrets (never logged, never sent); gateways get the public
//! halves with their issuing windows (`DownlinkEvent::VoucherKeys`). A voucher's redemption id is
//! also the id of the recharge it makes, so one code credits an account at most once in any
//! merged ledger; a second redemption elsewhere is flagged as a business event.
use super::db::Tx;
use super::downlink::{append_downlink_to_all, published_keys};
use super::flags::flag;
use super::{accounts, CentralError, Result};
use chrono::{DateTime, Duration, DurationRound, Utc};
use gramgrid_core::civil::ts;
use gramgrid_core::ledger::{EventKind, LedgerEvent};
use gramgrid_proto::voucher::{self, SigningSecret, Voucher, MAX_LIFETIME_DAYS};
use gramgrid_proto::wire::DownlinkEvent;
use serde::{Deserialize, Serialize};

/// Creates the first signing key when there is none.
pub fn ensure_key(tx: &mut dyn Tx, now: DateTime<Utc>) -> Result<()> {
    if tx.query_int("SELECT COUNT(*) FROM voucher_keys", &[])? == 0 {
        insert_key(tx, 1, now)?;
    }
    Ok(())
}

fn insert_key(tx: &mut dyn Tx, key_id: u16, now: DateTime<Utc>) -> Result<()> {
    let secret = SigningSecret::generate(key_id);
    let sealed = tx.sealer().seal(&secret.to_hex(), &key_context(key_id));
    tx.execute(
        "INSERT INTO voucher_keys (key_id, secret_hex, public_key, issue_from, issue_until, revoked) VALUES ($1, $2, $3, $4, NULL, 0)",
        &[i64::from(key_id).into(), sealed.into(), secret.public_key_hex().into(), ts(now).into()],
    )?;
    Ok(())
}

/// Where a signing key's sealed secret belongs (`secrets`).
fn key_context(key_id: u16) -> String {
    format!("voucher_key:{key_id}")
}

/// Seals signing secrets stored in the clear by a gramgrid before sealing existed.
pub(crate) fn seal_stored_secrets(tx: &mut dyn Tx) -> Result<()> {
    for row in tx.query("SELECT key_id, secret_hex FROM voucher_keys", &[])? {
        let (key_id, stored) = (row.int(0)?, row.text(1)?);
        if gramgrid_net::secrets::Sealer::is_sealed(&stored) {
            continue;
        }
        let key_id = u16::try_from(key_id).map_err(|e| CentralError::Corrupt(e.to_string()))?;
        let sealed = tx.sealer().seal(&stored, &key_context(key_id));
        tx.execute(
            "UPDATE voucher_keys SET secret_hex = $2 WHERE key_id = $1",
            &[i64::from(key_id).into(), sealed.into()],
        )?;
    }
    Ok(())
}

/// Opens the current signing secret, if there is one: a wrong secrets key file is found at start.
pub(crate) fn check_secrets_open(tx: &mut dyn Tx) -> Result<()> {
    match current_secret(tx) {
        Ok(_) | Err(CentralError::Conflict(_)) => Ok(()),
        Err(other) => Err(other),
    }
}

fn current_secret(tx: &mut dyn Tx) -> Result<SigningSecret> {
    let row = tx
        .query_opt(
            "SELECT key_id, secret_hex FROM voucher_keys WHERE issue_until IS NULL AND revoked = 0 ORDER BY key_id DESC LIMIT 1",
            &[],
        )?
        .ok_or_else(|| CentralError::Conflict("no current voucher key: rotate to create one".into()))?;
    let key_id = u16::try_from(row.int(0)?).map_err(|e| CentralError::Corrupt(e.to_string()))?;
    let secret = tx.sealer().open(&row.text(1)?, &key_context(key_id))?;
    Ok(SigningSecret::from_hex(key_id, &secret)?)
}

/// Ends the current key's issuing window and starts a new key; every gateway is sent the key set.
/// Vouchers of the old key stay valid until they expire. Returns the new key id.
pub fn rotate(tx: &mut dyn Tx, now: DateTime<Utc>) -> Result<u16> {
    let now = seconds(now);
    let next = start_new_key(tx, now)?;
    publish_keys(tx)?;
    Ok(next)
}

/// Ends the issuing window of the current key and starts the next one; returns its id.
fn start_new_key(tx: &mut dyn Tx, now: DateTime<Utc>) -> Result<u16> {
    let last = tx.query_int("SELECT MAX(key_id) FROM voucher_keys", &[])?;
    let next = u16::try_from(last + 1)
        .map_err(|_| CentralError::Conflict("voucher key ids are exhausted (65535)".into()))?;
    tx.execute(
        "UPDATE voucher_keys SET issue_until = $1 WHERE issue_until IS NULL",
        &[ts(now).into()],
    )?;
    insert_key(tx, next, now)?;
    Ok(next)
}

/// Sends every gateway the whole key set.
fn publish_keys(tx: &mut dyn Tx) -> Result<()> {
    let keys = published_keys(tx)?;
    append_downlink_to_all(tx, None, &DownlinkEvent::VoucherKeys(keys))
}

/// The outcome of a key revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The revoked key.
    pub key_id: u16,
    /// False when the key was already revoked (nothing changed).
    pub newly_revoked: bool,
    /// The key central issues with from now on (a new one when the revoked key was current).
    pub current_key_id: u16,
}

/// Revokes a key (e.g. leaked): every code it signed is refused, at central and, once they have
/// the key set this sends them, at every gateway, even codes issued before. Revoking the current
/// key starts a new one in the same transaction, so issuing goes on. Revoking a revoked key
/// changes nothing; an unknown key is `NotFound`.
pub fn revoke_key(tx: &mut dyn Tx, key_id: u16, now: DateTime<Utc>) -> Result<Revoked> {
    let row = tx
        .query_opt(
            "SELECT revoked, issue_until FROM voucher_keys WHERE key_id = $1",
            &[i64::from(key_id).into()],
        )?
        .ok_or_else(|| CentralError::NotFound(format!("no voucher key {key_id}")))?;
    let newly_revoked = row.int(0)? == 0;
    if newly_revoked {
        tx.execute(
            "UPDATE voucher_keys SET revoked = 1 WHERE key_id = $1",
            &[i64::from(key_id).into()],
        )?;
        if row.opt_int(1)?.is_none() {
            start_new_key(tx, seconds(now))?;
        }
        publish_keys(tx)?;
    }
    Ok(Revoked {
        key_id,
        newly_revoked,
        current_key_id: current_secret(tx)?.key_id,
    })
}

/// A voucher asked for through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// The account the voucher is bound to: it credits no other.
    pub account: String,
    /// Amount the voucher credits, in paise (1 to [`accounts::MAX_RECHARGE_PAISE`]).
    pub amount_paise: i64,
    /// Days until the voucher expires (1 to `voucher::MAX_LIFETIME_DAYS`).
    pub valid_days: i64,
}

/// An issued voucher: the code to hand to the consumer, and its facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedVoucher {
    /// The code to hand to the consumer (Crockford base32, Ed25519-signed); it is not stored at
    /// central, so it cannot be shown again.
    pub code: String,
    /// The voucher's id (`voucher:<key id>:<16 hex digits>`): the id of the recharge it makes, and
    /// the id to cancel it with.
    pub redemption_id: String,
    /// The signing key that signed it.
    pub key_id: u16,
    /// The account the voucher is bound to.
    pub account: String,
    /// Amount it credits, in paise.
    pub amount_paise: i64,
    /// When it was issued (UTC, whole seconds).
    pub issued_at: DateTime<Utc>,
    /// From this instant (UTC, `valid_days` after issue) the voucher is refused as expired.
    pub expires_at: DateTime<Utc>,
}

fn seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::seconds(1)).unwrap_or(at)
}

/// Signs a voucher for an account with the current key.
pub fn issue(tx: &mut dyn Tx, request: &IssueRequest, now: DateTime<Utc>) -> Result<IssuedVoucher> {
    accounts::check_amount(request.amount_paise)?;
    if !(1..=MAX_LIFETIME_DAYS).contains(&request.valid_days) {
        return Err(CentralError::Invalid(format!(
            "valid_days {} is out of range: a voucher lives 1 to {MAX_LIFETIME_DAYS} days",
            request.valid_days
        )));
    }
    let account = accounts::account(tx, &request.account)?;
    let secret = current_secret(tx)?;
    let issued_at = seconds(now);
    let voucher = Voucher {
        key_id: secret.key_id,
        voucher_id: rand::random(),
        account: account.id.clone(),
        amount_paise: request.amount_paise,
        issued_at,
        expires_at: issued_at + Duration::days(request.valid_days),
    };
    let code = secret.issue(&voucher)?;
    tx.execute(
        "INSERT INTO vouchers (redemption_id, account, amount_paise, issued_at, expires_at, state) VALUES ($1, $2, $3, $4, $5, 'issued')",
        &[voucher.redemption_id().into(), account.id.as_str().into(), voucher.amount_paise.into(),
          ts(voucher.issued_at).into(), ts(voucher.expires_at).into()],
    )?;
    Ok(IssuedVoucher {
        code,
        redemption_id: voucher.redemption_id(),
        key_id: voucher.key_id,
        account: account.id,
        amount_paise: voucher.amount_paise,
        issued_at: voucher.issued_at,
        expires_at: voucher.expires_at,
    })
}

/// The state of a voucher: (state, redeemed_by).
fn state(tx: &mut dyn Tx, redemption_id: &str) -> Result<Option<(String, Option<String>)>> {
    tx.query_opt(
        "SELECT state, redeemed_by FROM vouchers WHERE redemption_id = $1",
        &[redemption_id.into()],
    )?
    .map(|row| -> Result<_> { Ok((row.text(0)?, row.opt_text(1)?)) })
    .transpose()
}

/// Redeems a code at central (e.g. typed in at a payment counter): verified, single use, credited
/// as a recharge whose id is the redemption id; every gateway is told to refuse it.
pub fn redeem_at_central(tx: &mut dyn Tx, code: &str, now: DateTime<Utc>) -> Result<LedgerEvent> {
    let voucher = voucher::verify(&published_keys(tx)?, code, now)?;
    let id = voucher.redemption_id();
    match state(tx, &id)? {
        Some((s, by)) if s != "issued" => {
            return Err(CentralError::Conflict(format!(
                "voucher {id} is already {s}{}",
                by.map(|b| format!(" (by {b})")).unwrap_or_default()
            )))
        }
        Some(_) => {}
        None => {
            return Err(CentralError::NotFound(format!(
                "voucher {id} was not issued by this central server"
            )))
        }
    }
    tx.execute(
        "UPDATE vouchers SET state = 'redeemed', redeemed_at = $2, redeemed_by = 'central' WHERE redemption_id = $1",
        &[id.as_str().into(), ts(now).into()],
    )?;
    let account = accounts::account(tx, &voucher.account)?;
    let event = LedgerEvent {
        id: id.clone(),
        account: account.id.clone(),
        at: now,
        kind: EventKind::Recharge,
        amount_paise: voucher.amount_paise,
        expires_at: None,
    };
    accounts::record_central_event(tx, &account, &event)?;
    append_downlink_to_all(
        tx,
        None,
        &DownlinkEvent::VoucherRevoked { redemption_id: id },
    )?;
    Ok(event)
}

/// Cancels an issued voucher; every gateway is told to refuse it.
pub fn cancel(tx: &mut dyn Tx, redemption_id: &str) -> Result<()> {
    match state(tx, redemption_id)? {
        None => {
            return Err(CentralError::NotFound(format!(
                "no voucher '{redemption_id}'"
            )))
        }
        Some((s, _)) if s == "cancelled" => return Ok(()),
        Some((s, by)) if s != "issued" => {
            return Err(CentralError::Conflict(format!(
                "voucher {redemption_id} is already {s}{}; it cannot be cancelled",
                by.map(|b| format!(" by {b}")).unwrap_or_default()
            )))
        }
        Some(_) => {}
    }
    tx.execute(
        "UPDATE vouchers SET state = 'cancelled' WHERE redemption_id = $1",
        &[redemption_id.into()],
    )?;
    append_downlink_to_all(
        tx,
        None,
        &DownlinkEvent::VoucherRevoked {
            redemption_id: redemption_id.to_owned(),
        },
    )
}

/// What central made of a gateway's report of an offline redemption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// The first redemption of an issued voucher: recorded, every other gateway told to refuse it.
    First,
    /// This gateway had already reported it (a resent record): nothing to do.
    Repeat,
    /// Already redeemed elsewhere or cancelled: flagged as a double redemption.
    Double,
    /// Central has no record of the voucher (a legacy report carries no signature to check).
    Unknown,
}

/// A gateway reports an offline redemption. The first redemption wins and every other gateway is
/// told to refuse the code; a later one (or one of a cancelled code) is a double redemption:
/// flagged with both parties for the office, never silently dropped. With `genuine` (the signed
/// code verified), a voucher central has no record of (issued before a restored backup) is
/// recorded as redeemed; without it, it is left `Unknown` for the caller to refuse.
pub fn redeemed_at_gateway(
    tx: &mut dyn Tx,
    gateway: &str,
    voucher: &Voucher,
    at: DateTime<Utc>,
    genuine: bool,
) -> Result<Redemption> {
    let id = voucher.redemption_id();
    match state(tx, &id)? {
        Some((s, _)) if s == "issued" => {
            tx.execute(
                "UPDATE vouchers SET state = 'redeemed', redeemed_at = $2, redeemed_by = $3 WHERE redemption_id = $1",
                &[id.as_str().into(), ts(at).into(), gateway.into()],
            )?;
        }
        Some((_, Some(by))) if by == gateway => return Ok(Redemption::Repeat),
        Some((s, by)) => {
            let first = by.unwrap_or_else(|| "central".into());
            flag(tx, &format!("double_redemption:{id}:{gateway}"), "double_redemption", Some(gateway), Some(&voucher.account), at,
                &format!("voucher {id} ({} paise) redeemed at gateway '{gateway}' at {at}, but it was already {s} by '{first}'", voucher.amount_paise))?;
            return Ok(Redemption::Double);
        }
        None if !genuine => return Ok(Redemption::Unknown),
        None => {
            tx.execute(
                "INSERT INTO vouchers (redemption_id, account, amount_paise, issued_at, expires_at, state, redeemed_at, redeemed_by)
                 VALUES ($1, $2, $3, $4, $5, 'redeemed', $6, $7)",
                &[id.as_str().into(), voucher.account.as_str().into(), voucher.amount_paise.into(), ts(voucher.issued_at).into(),
                  ts(voucher.expires_at).into(), ts(at).into(), gateway.into()],
            )?;
        }
    }
    append_downlink_to_all(
        tx,
        Some(gateway),
        &DownlinkEvent::VoucherRevoked { redemption_id: id },
    )?;
    Ok(Redemption::First)
}

/// Verifies a code a gateway redeemed offline at `redeemed_at`: signature, key window, and expiry
/// at the redemption time (a code cannot be redeemed before it was issued either).
pub fn verify_gateway_code(
    tx: &mut dyn Tx,
    code: &str,
    redeemed_at: DateTime<Utc>,
) -> Result<std::result::Result<Voucher, voucher::VoucherError>> {
    Ok(
        match voucher::verify(&published_keys(tx)?, code, redeemed_at) {
            Ok(voucher) if voucher.issued_at > redeemed_at => {
                Err(voucher::VoucherError::BadLifetime)
            }
            other => other,
        },
    )
}

/// Records a verified offline redemption and, the first time, its recharge (id: the redemption
/// id, at the redemption second, as the gateway recorded it).
pub fn record_gateway_code(
    tx: &mut dyn Tx,
    gateway: &str,
    voucher: &Voucher,
    redeemed_at: DateTime<Utc>,
) -> Result<Redemption> {
    let redemption = redeemed_at_gateway(tx, gateway, voucher, redeemed_at, true)?;
    if redemption == Redemption::First {
        let recharge = LedgerEvent {
            id: voucher.redemption_id(),
            account: voucher.account.clone(),
            at: seconds(redeemed_at),
            kind: EventKind::Recharge,
            amount_paise: voucher.amount_paise,
            expires_at: None,
        };
        accounts::insert_ledger_event(tx, &recharge, gateway)?;
    }
    Ok(redemption)
}
