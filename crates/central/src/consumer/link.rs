//! Signed consumer links: a token that names one account and an expiry, with an HMAC-SHA256 under
//! central's link key, so a household opens its page with no password and nobody can make, alter
//! or extend one without the key. The same key hashes the one-time login codes.
use chrono::{DateTime, Utc};
use data_encoding::BASE64URL_NOPAD;
use ring::hmac;
use std::path::Path;
use subtle::ConstantTimeEq;

/// Bytes of the MAC a token carries: HMAC-SHA256 truncated to 128 bits (RFC 2104 allows half),
/// to keep the link short enough for one SMS.
const MAC_BYTES: usize = 16;

/// What the token's MAC covers besides the account and the expiry, so a MAC made for anything
/// else under the key (a code's hash) is never a valid link.
const LINK_DOMAIN: &str = "gramgrid-consumer-link/1";
const CODE_DOMAIN: &str = "gramgrid-login-code/1";

/// The key behind links and code hashes (from `[consumer] link_key_file`).
pub struct LinkKey(hmac::Key);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(<redacted>)")
    }
}

/// Why a link does not open the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefused {
    /// Not a token this server makes (cut short, altered, or signed under another key).
    Invalid,
    /// A real link whose time is over.
    Expired,
}

impl LinkKey {
    /// The key in `path`, made there (0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<LinkKey, gramgrid_net::secrets::SecretsError> {
        gramgrid_net::secrets::load_or_create_key(path).map(|key| LinkKey::from_bytes(&key))
    }

    /// A key from its bytes.
    pub fn from_bytes(key: &[u8; 32]) -> LinkKey {
        LinkKey(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    fn mac(&self, parts: &[&str]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.0);
        for part in parts {
            // Each part with its length first: no two lists of parts sign the same bytes.
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        context.sign()
    }

    /// The token for `account` valid until `expires` (whole seconds):
    /// `EXPIRY.ACCOUNT.MAC`, the account and the MAC in URL-safe base64.
    pub fn sign(&self, account: &str, expires: DateTime<Utc>) -> String {
        let expiry = expires.timestamp().to_string();
        let tag = self.mac(&[LINK_DOMAIN, account, &expiry]);
        format!(
            "{expiry}.{}.{}",
            BASE64URL_NOPAD.encode(account.as_bytes()),
            BASE64URL_NOPAD.encode(&tag.as_ref()[..MAC_BYTES])
        )
    }

    /// The account `token` opens at `now`. An altered, cut or foreign token is
    /// [`LinkRefused::Invalid`] whatever its expiry says; a real one past its expiry is
    /// [`LinkRefused::Expired`].
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<String, LinkRefused> {
        let mut parts = token.split('.');
        let (Some(expiry), Some(account), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkRefused::Invalid);
        };
        let seconds: i64 = expiry.parse().map_err(|_| LinkRefused::Invalid)?;
        let account = BASE64URL_NOPAD
            .decode(account.as_bytes())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(LinkRefused::Invalid)?;
        let mac = BASE64URL_NOPAD
            .decode(mac.as_bytes())
            .map_err(|_| LinkRefused::Invalid)?;
        let expected = self.mac(&[LINK_DOMAIN, &account, expiry]);
        let genuine = mac.len() == MAC_BYTES
            && bool::from(expected.as_ref()[..MAC_BYTES].ct_eq(&mac))
            && seconds.to_string() == expiry;
        if !genuine {
            return Err(LinkRefused::Invalid);
        }
        if now.timestamp() >= seconds {
            return Err(LinkRefused::Expired);
        }
        Ok(account)
    }

    /// The stored form of a login code: its HMAC (hex) with the account and the time it was
    /// made, so the table holds nothing a code can be read back from without the key.
    pub fn code_hash(&self, account: &str, issued_at: DateTime<Utc>, code: &str) -> String {
        let tag = self.mac(&[
            CODE_DOMAIN,
            account,
            &issued_at.timestamp().to_string(),
            code,
        ]);
        data_encoding::HEXLOWER.encode(tag.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn key(byte: u8) -> LinkKey {
        LinkKey::from_bytes(&[byte; 32])
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_link_opens_its_own_account_until_it_expires() {
        let token = key(1).sign("ACC-7.b/é", at(3600));
        assert!(token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        assert_eq!(key(1).verify(&token, at(0)).as_deref(), Ok("ACC-7.b/é"));
        assert_eq!(key(1).verify(&token, at(3599)).as_deref(), Ok("ACC-7.b/é"));
        assert_eq!(key(1).verify(&token, at(3600)), Err(LinkRefused::Expired));
        assert_eq!(
            key(1).verify(&token, at(3600) + Duration::days(400)),
            Err(LinkRefused::Expired)
        );
    }

    #[test]
    fn a_tampered_foreign_or_other_account_link_is_invalid() {
        let k = key(1);
        let token = k.sign("A1", at(3600));
        let (expiry, rest) = token.split_once('.').unwrap();
        let (_, mac) = rest.split_once('.').unwrap();
        // Another account with this link's MAC; a later expiry; another key; cut short.
        let other = format!("{expiry}.{}.{mac}", BASE64URL_NOPAD.encode(b"A2"));
        let later = token.replacen(expiry, &(at(7200).timestamp()).to_string(), 1);
        let padded = token.replacen(expiry, &format!("0{expiry}"), 1);
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            other,
            later,
            padded,
            flipped,
            token[..token.len() - 2].to_string(),
            format!("{token}.x"),
            String::new(),
            "x.y.z".into(),
        ] {
            assert_eq!(k.verify(&bad, at(0)), Err(LinkRefused::Invalid), "{bad}");
        }
        assert_eq!(key(2).verify(&token, at(0)), Err(LinkRefused::Invalid));
        // An expired link with a changed account is invalid, not merely expired.
        let stale_other = format!("{expiry}.{}.{mac}", BASE64URL_NOPAD.encode(b"A2"));
        assert_eq!(k.verify(&stale_other, at(9999)), Err(LinkRefused::Invalid));
    }

    #[test]
    fn a_code_hash_depends_on_the_key_account_time_and_code_and_hides_the_code() {
        let hash = key(1).code_hash("A1", at(0), "123456");
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains("123456"));
        assert_eq!(hash, key(1).code_hash("A1", at(0), "123456"));
        for other in [
            key(2).code_hash("A1", at(0), "123456"),
            key(1).code_hash("A2", at(0), "123456"),
            key(1).code_hash("A1", at(1), "123456"),
            key(1).code_hash("A1", at(0), "123457"),
        ] {
            assert_ne!(hash, other);
        }
    }
}
