//! Passwords as Argon2id hashes in PHC string form: made at central, checked wherever a person
//! logs in. A password itself is never stored.
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Hashes `password` with Argon2id (the crate's default parameters) under a random salt.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches `phc` (with the hash's own parameters). A hash that does not parse
/// matches nothing.
pub fn matches(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A hash no password matches: checked when a login names nobody, so that a wrong name takes as
/// long as a wrong password and does not tell which names exist.
pub const DECOY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Uu6tW5cN1QZL1fYb4Zr0rO8sG2f7mQ7xVXi8o0m2a0Q";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_matches_its_password_only_and_the_decoy_matches_none() {
        let phc = hash("a-long-passphrase").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(matches(&phc, "a-long-passphrase"));
        assert!(!matches(&phc, "a-long-passphrasE"));
        assert!(!matches("not a hash", ""));
        assert!(PasswordHash::new(DECOY).is_ok());
        assert!(!matches(DECOY, "") && !matches(DECOY, "nobody"));
    }
}
