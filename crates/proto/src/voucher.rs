//! Offline vouchers: Ed25519-signed credit codes bound to one account, redeemable with no backhaul.
//!
//! A code carries: format version, key id, a random 64-bit voucher id, the account, the amount, the
//! issue and expiry instants, and an Ed25519 signature over all of that. It is written in Crockford
//! base32 in groups of five characters, so it can be read out over the phone and typed with mistakes
//! in letter case or `O`/`0`, `I`/`L`/`1` forgiven.
//!
//! Lessons designed in (the STS token-id rollover of 2024): the voucher id is 64 random bits, so it
//! never rolls over; every code names its key, and a key set lists each key's issuing window, so keys
//! can be rotated and retired without touching meters; a voucher lives at most [`MAX_LIFETIME_DAYS`], so
//! the register of redeemed ids only has to remember unexpired vouchers. Single use is the redeemer's
//! job (gateway store, central store); this module only proves a code genuine.
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The longest a voucher may be valid, from issue to expiry.
pub const MAX_LIFETIME_DAYS: i64 = 90;
const FORMAT_VERSION: u8 = 1;
/// Domain separation: a signature over a voucher can never be mistaken for another message.
const SIGNING_CONTEXT: &[u8] = b"gramgrid voucher v1\0";
const MAX_ACCOUNT_LEN: usize = 64;

/// The facts a voucher stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Voucher {
    /// The signing key's id (set by [`SigningSecret::issue`]).
    pub key_id: u16,
    /// 64 random bits chosen by the issuer; with `key_id` it names the voucher for single use.
    pub voucher_id: u64,
    /// The only account the credit may go to (1 to 64 bytes).
    pub account: String,
    /// Credit, in paise (0 to `u32::MAX` in a code).
    pub amount_paise: i64,
    /// When it was issued (UTC, whole seconds in a code).
    pub issued_at: DateTime<Utc>,
    /// When it stops being redeemable (UTC, whole seconds; at most [`MAX_LIFETIME_DAYS`] after issue).
    pub expires_at: DateTime<Utc>,
}

impl Voucher {
    /// The id under which a redemption is recorded (unique across keys).
    pub fn redemption_id(&self) -> String {
        format!("voucher:{}:{:016x}", self.key_id, self.voucher_id)
    }
}

/// A public key as published to gateways, with the window in which it may issue vouchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedKey {
    /// The id codes name this key by.
    pub key_id: u16,
    /// Ed25519 public key, hex.
    pub public_key: String,
    /// Vouchers issued (by their `issued_at`) before this instant are refused.
    pub issue_from: DateTime<Utc>,
    /// Absent while the key is current; set when a newer key takes over.
    pub issue_until: Option<DateTime<Utc>>,
    /// A revoked key (e.g. leaked) verifies nothing, even vouchers issued before.
    pub revoked: bool,
}

/// The signing half, kept only by the central server.
pub struct SigningSecret {
    /// The id written into every code this key signs.
    pub key_id: u16,
    key: SigningKey,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningSecret {{ key_id: {}, key: <redacted> }}",
            self.key_id
        )
    }
}

/// Why a code was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VoucherError {
    /// Not base32, wrong length or a field out of range: usually a typing mistake.
    #[error("the code is not a voucher (mistyped?): {0}")]
    Malformed(&'static str),
    /// The code's format version byte is not one this gramgrid reads.
    #[error("voucher format version {0} is not supported by this gramgrid")]
    UnsupportedVersion(u8),
    /// No published key has the code's key id.
    #[error("voucher key {0} is unknown here; the gateway may need a sync to learn new keys")]
    UnknownKey(u16),
    /// The code's key is revoked: it verifies nothing.
    #[error("voucher key {0} has been revoked")]
    RevokedKey(u16),
    /// The Ed25519 signature does not verify.
    #[error("the voucher's signature is not valid (mistyped or forged)")]
    BadSignature,
    /// The voucher's issue time is outside its key's issuing window.
    #[error("voucher key {0} was not allowed to issue vouchers at the voucher's issue time")]
    OutsideKeyWindow(u16),
    /// The voucher's expiry (UTC) has passed.
    #[error("the voucher expired at {0}")]
    Expired(DateTime<Utc>),
    /// Expiry is not after issue, or more than [`MAX_LIFETIME_DAYS`] after it.
    #[error(
        "the voucher's validity is longer than {MAX_LIFETIME_DAYS} days or ends before it starts"
    )]
    BadLifetime,
    /// The voucher is bound to another account (the account it names).
    #[error("the voucher is for account {0}, not this one")]
    WrongAccount(String),
    /// A signing secret or published public key is not valid key material.
    #[error("invalid key material: {0}")]
    BadKey(String),
}

impl SigningSecret {
    /// A new random key.
    pub fn generate(key_id: u16) -> SigningSecret {
        let seed: [u8; 32] = rand::random();
        SigningSecret {
            key_id,
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Restores a key from its 32-byte secret in hex.
    pub fn from_hex(key_id: u16, secret_hex: &str) -> Result<SigningSecret, VoucherError> {
        let bytes: [u8; 32] = hex::decode(secret_hex.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| VoucherError::BadKey("a signing secret is 64 hex digits".into()))?;
        Ok(SigningSecret {
            key_id,
            key: SigningKey::from_bytes(&bytes),
        })
    }

    /// The secret in hex, for the central server's key store.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// The public key in hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// Signs a voucher into a code. The voucher's `key_id` is set to this key's.
    pub fn issue(&self, voucher: &Voucher) -> Result<String, VoucherError> {
        let voucher = Voucher {
            key_id: self.key_id,
            ..voucher.clone()
        };
        check_lifetime(&voucher)?;
        let body = encode_body(&voucher)?;
        let signature = self.key.sign(&signed_message(&body));
        let mut bytes = body;
        bytes.extend_from_slice(&signature.to_bytes());
        Ok(format_code(&bytes))
    }
}

fn check_lifetime(voucher: &Voucher) -> Result<(), VoucherError> {
    let lifetime = voucher.expires_at - voucher.issued_at;
    if lifetime <= Duration::zero() || lifetime > Duration::days(MAX_LIFETIME_DAYS) {
        return Err(VoucherError::BadLifetime);
    }
    Ok(())
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, body].concat()
}

fn encode_body(v: &Voucher) -> Result<Vec<u8>, VoucherError> {
    let account = v.account.as_bytes();
    if account.is_empty() || account.len() > MAX_ACCOUNT_LEN {
        return Err(VoucherError::Malformed("account id must be 1 to 64 bytes"));
    }
    let amount = u32::try_from(v.amount_paise)
        .map_err(|_| VoucherError::Malformed("amount out of range"))?;
    let seconds = |t: DateTime<Utc>| {
        u32::try_from(t.timestamp()).map_err(|_| VoucherError::Malformed("time out of range"))
    };
    let mut out = Vec::with_capacity(24 + account.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&v.key_id.to_be_bytes());
    out.extend_from_slice(&v.voucher_id.to_be_bytes());
    out.extend_from_slice(&amount.to_be_bytes());
    out.extend_from_slice(&seconds(v.issued_at)?.to_be_bytes());
    out.extend_from_slice(&seconds(v.expires_at)?.to_be_bytes());
    out.push(account.len() as u8);
    out.extend_from_slice(account);
    Ok(out)
}

/// Splits code bytes into (body, signature) and decodes the body.
fn decode(bytes: &[u8]) -> Result<(Voucher, &[u8], Signature), VoucherError> {
    const FIXED: usize = 1 + 2 + 8 + 4 + 4 + 4 + 1;
    if bytes.len() < FIXED + 1 + 64 {
        return Err(VoucherError::Malformed("too short"));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(VoucherError::UnsupportedVersion(bytes[0]));
    }
    let account_len = usize::from(bytes[FIXED - 1]);
    if bytes.len() != FIXED + account_len + 64 {
        return Err(VoucherError::Malformed("wrong length"));
    }
    let (body, signature) = bytes.split_at(FIXED + account_len);
    let be32 = |at: usize| u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    let time = |at: usize| {
        DateTime::from_timestamp(i64::from(be32(at)), 0).ok_or(VoucherError::Malformed("bad time"))
    };
    let mut id = [0u8; 8];
    id.copy_from_slice(&body[3..11]);
    let voucher = Voucher {
        key_id: u16::from_be_bytes([body[1], body[2]]),
        voucher_id: u64::from_be_bytes(id),
        amount_paise: i64::from(be32(11)),
        issued_at: time(15)?,
        expires_at: time(19)?,
        account: String::from_utf8(body[FIXED..].to_vec())
            .map_err(|_| VoucherError::Malformed("account is not text"))?,
    };
    let signature = Signature::from_slice(signature)
        .map_err(|_| VoucherError::Malformed("bad signature bytes"))?;
    Ok((voucher, body, signature))
}

/// Crockford base32 in dash-separated groups of five.
fn format_code(bytes: &[u8]) -> String {
    let text = crockford().encode(bytes);
    text.as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

fn crockford() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("0123456789ABCDEFGHJKMNPQRSTVWXYZ");
    spec.translate.from.push_str("abcdefghjkmnpqrstvwxyzoOiIlL");
    spec.translate.to.push_str("ABCDEFGHJKMNPQRSTVWXYZ001111");
    spec.ignore.push_str("- ");
    // The specification above is a fixed, valid alphabet; the unit tests exercise it.
    spec.encoding()
        .unwrap_or_else(|e| unreachable!("crockford alphabet: {e}"))
}

/// Verifies a code against the published keys at `now` and returns the voucher it stands for.
pub fn verify(
    keys: &[PublishedKey],
    code: &str,
    now: DateTime<Utc>,
) -> Result<Voucher, VoucherError> {
    let bytes = crockford()
        .decode(code.trim().as_bytes())
        .map_err(|_| VoucherError::Malformed("not base32"))?;
    let (voucher, body, signature) = decode(&bytes)?;
    let key = keys
        .iter()
        .find(|k| k.key_id == voucher.key_id)
        .ok_or(VoucherError::UnknownKey(voucher.key_id))?;
    if key.revoked {
        return Err(VoucherError::RevokedKey(key.key_id));
    }
    let public: [u8; 32] = hex::decode(&key.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            VoucherError::BadKey(format!(
                "published key {} is not 32 bytes of hex",
                key.key_id
            ))
        })?;
    let verifying =
        VerifyingKey::from_bytes(&public).map_err(|e| VoucherError::BadKey(e.to_string()))?;
    verifying
        .verify(&signed_message(body), &signature)
        .map_err(|_| VoucherError::BadSignature)?;
    if voucher.issued_at < key.issue_from
        || key
            .issue_until
            .is_some_and(|until| voucher.issued_at >= until)
    {
        return Err(VoucherError::OutsideKeyWindow(key.key_id));
    }
    check_lifetime(&voucher)?;
    if now >= voucher.expires_at {
        return Err(VoucherError::Expired(voucher.expires_at));
    }
    Ok(voucher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, 6, 0, 0).unwrap()
    }

    fn published(secret: &SigningSecret) -> PublishedKey {
        PublishedKey {
            key_id: secret.key_id,
            public_key: secret.public_key_hex(),
            issue_from: t(1),
            issue_until: None,
            revoked: false,
        }
    }

    fn voucher() -> Voucher {
        Voucher {
            key_id: 0,
            voucher_id: 0x0123_4567_89ab_cdef,
            account: "ACC000042".into(),
            amount_paise: 50_000,
            issued_at: t(2),
            expires_at: t(2) + Duration::days(30),
        }
    }

    #[test]
    fn a_code_round_trips_and_forgives_case_and_lookalikes() {
        let secret = SigningSecret::generate(7);
        let code = secret.issue(&voucher()).unwrap();
        let keys = [published(&secret)];
        let expected = Voucher {
            key_id: 7,
            ..voucher()
        };
        assert_eq!(verify(&keys, &code, t(3)).unwrap(), expected);
        let sloppy = code
            .to_lowercase()
            .replace('0', "o")
            .replace('1', "l")
            .replace('-', " ");
        assert_eq!(verify(&keys, &sloppy, t(3)).unwrap(), expected);
        assert_eq!(expected.redemption_id(), "voucher:7:0123456789abcdef");
    }

    #[test]
    fn tampering_keys_and_time_are_checked() {
        let secret = SigningSecret::generate(1);
        let code = secret.issue(&voucher()).unwrap();
        let mut keys = vec![published(&secret)];
        // One changed character breaks the signature or the structure.
        let mut tampered = code.clone().into_bytes();
        let i = tampered.iter().position(|c| *c == b'-').unwrap() + 3;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let err = verify(&keys, &String::from_utf8(tampered).unwrap(), t(3)).unwrap_err();
        assert!(
            matches!(err, VoucherError::BadSignature | VoucherError::Malformed(_)),
            "{err}"
        );
        assert_eq!(
            verify(&keys, &code, t(2) + Duration::days(30)),
            Err(VoucherError::Expired(t(2) + Duration::days(30)))
        );
        assert_eq!(verify(&[], &code, t(3)), Err(VoucherError::UnknownKey(1)));
        keys[0].issue_until = Some(t(2));
        assert_eq!(
            verify(&keys, &code, t(3)),
            Err(VoucherError::OutsideKeyWindow(1))
        );
        keys[0].issue_until = None;
        keys[0].revoked = true;
        assert_eq!(verify(&keys, &code, t(3)), Err(VoucherError::RevokedKey(1)));
        // Another key with the same id does not verify it.
        let impostor = SigningSecret::generate(1);
        assert_eq!(
            verify(&[published(&impostor)], &code, t(3)),
            Err(VoucherError::BadSignature)
        );
        assert_eq!(
            verify(&keys, "ABCDE-FGH", t(3)),
            Err(VoucherError::Malformed("too short"))
        );
        assert_eq!(
            verify(&keys, "HELLO-WORLD", t(3)),
            Err(VoucherError::Malformed("not base32"))
        );
    }

    #[test]
    fn rotation_keeps_old_vouchers_valid_until_they_expire() {
        let old = SigningSecret::generate(1);
        let new = SigningSecret::generate(2);
        let old_code = old.issue(&voucher()).unwrap();
        let mut old_key = published(&old);
        old_key.issue_until = Some(t(10));
        let mut new_key = published(&new);
        new_key.issue_from = t(10);
        let keys = [old_key, new_key];
        assert!(verify(&keys, &old_code, t(20)).is_ok());
        let late = Voucher {
            issued_at: t(11),
            expires_at: t(12),
            ..voucher()
        };
        assert_eq!(
            verify(&keys, &old.issue(&late).unwrap(), t(11)),
            Err(VoucherError::OutsideKeyWindow(1))
        );
        assert!(verify(&keys, &new.issue(&late).unwrap(), t(11)).is_ok());
    }

    #[test]
    fn lifetimes_and_secrets_are_validated() {
        let secret = SigningSecret::generate(3);
        let too_long = Voucher {
            expires_at: t(2) + Duration::days(MAX_LIFETIME_DAYS + 1),
            ..voucher()
        };
        assert_eq!(secret.issue(&too_long), Err(VoucherError::BadLifetime));
        let restored = SigningSecret::from_hex(3, &secret.to_hex()).unwrap();
        assert_eq!(restored.public_key_hex(), secret.public_key_hex());
        assert!(!format!("{secret:?}").contains(&secret.to_hex()));
        assert!(SigningSecret::from_hex(3, "abcd").is_err());
    }
}
