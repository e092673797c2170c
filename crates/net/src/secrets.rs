//! Secrets at rest: voucher signing keys (central) and meter session keys (central and gateway)
//! are stored sealed (XChaCha20-Poly1305) under a key kept in a file outside the database, so a
//! copy of the database (a backup, a dump) reveals none of them.
//!
//! A sealed value is `sealed1:` and the hex of a random 24-byte nonce and the ciphertext. Each
//! value is bound to its place (`context`, e.g. `meter:MTR1:nwk`): moved to another row it no
//! longer opens.
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::{Path, PathBuf};

const PREFIX: &str = "sealed1:";
const NONCE_BYTES: usize = 24;

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key file could not be read or created.
    #[error("cannot {action} the key file {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold 64 hex digits.
    #[error("the key file {0} does not hold a key (64 hex digits); restore it from your backup")]
    BadKeyFile(PathBuf),
    /// A stored secret does not open with this key (another key file, or a damaged value).
    #[error("the stored secret {0} does not open with this secrets key file: restore the key file the database was sealed with")]
    WrongKey(String),
}

/// Writes a new random key to `path` (0600), unless another process made one first. The key is
/// written to a private temporary file and linked into place, so no process reads a half-written
/// key file.
fn create_key_file(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut staged = tempfile::Builder::new().prefix(".key-").tempfile_in(dir)?;
    let key: [u8; 32] = rand::random();
    staged.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
    staged.as_file().sync_all()?;
    match std::fs::hard_link(staged.path(), path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(error) => return Err(error),
    }
    tracing::info!(path = %path.display(), "key file created: back it up apart from the database");
    Ok(())
}

/// The 32-byte key in the key file `path` (64 hex digits), or a new random one written there
/// (mode 0600) when the file does not exist: the secrets key, and central's consumer link key.
pub fn load_or_create_key(path: &Path) -> Result<[u8; 32], SecretsError> {
    let io = |action, source| SecretsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        create_key_file(path).map_err(|e| io("create", e))?;
    }
    let text = std::fs::read_to_string(path).map_err(|e| io("read", e))?;
    hex::decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| SecretsError::BadKeyFile(path.to_path_buf()))
}

/// Seals and opens secrets with the key from the key file.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

impl Sealer {
    /// Reads the key from `path`, or makes a new random one there (mode 0600) when the file does
    /// not exist.
    pub fn load_or_create(path: &Path) -> Result<Sealer, SecretsError> {
        let key = load_or_create_key(path)?;
        Ok(Sealer {
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    /// Seals `secret` for the place `context`.
    pub fn seal(&self, secret: &str, context: &str) -> String {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let payload = Payload {
            msg: secret.as_bytes(),
            aad: context.as_bytes(),
        };
        // Encryption with a valid key and a nonce of the right length cannot fail.
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        format!("{PREFIX}{}{}", hex::encode(nonce), hex::encode(sealed))
    }

    /// Opens a value sealed for `context`.
    pub fn open(&self, stored: &str, context: &str) -> Result<String, SecretsError> {
        let wrong = || SecretsError::WrongKey(context.to_owned());
        let bytes = stored
            .strip_prefix(PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .filter(|b| b.len() > NONCE_BYTES)
            .ok_or_else(wrong)?;
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let payload = Payload {
            msg: sealed,
            aad: context.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| wrong())?;
        String::from_utf8(plain).map_err(|_| wrong())
    }

    /// Whether a stored value is sealed (values stored before sealing existed are not).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_opens_only_with_its_key_and_in_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let sealer = Sealer::load_or_create(&path).unwrap();
        let sealed = sealer.seal("00112233445566778899aabbccddeeff", "meter:M1:nwk");
        assert!(!sealed.contains("00112233"));
        assert_eq!(
            sealer.open(&sealed, "meter:M1:nwk").unwrap(),
            "00112233445566778899aabbccddeeff"
        );
        assert!(
            sealer.open(&sealed, "meter:M2:nwk").is_err(),
            "bound to its place"
        );
        let again = Sealer::load_or_create(&path).unwrap();
        assert!(
            again.open(&sealed, "meter:M1:nwk").is_ok(),
            "the same key file"
        );
        let other = Sealer::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(other.open(&sealed, "meter:M1:nwk").is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("bad.key"), "not a key").unwrap();
        assert!(matches!(
            Sealer::load_or_create(&dir.path().join("bad.key")),
            Err(SecretsError::BadKeyFile(_))
        ));
    }
}
