//! The central certificate authority: creates the CA, the central server's certificate, and one
//! client-certificate bundle per gateway (the gateway id travels inside the certificate).
//!
//! Layout of a PKI directory (`gramgrid central init --dir DIR`):
//!
//! ```text
//! DIR/pki.toml            central URL written into every gateway bundle
//! DIR/ca.pem, ca.key      the CA; `central serve` never reads ca.key, so it can live offline
//! DIR/server.pem, .key    the central HTTPS listener's certificate, signed by the CA
//! DIR/gateways/<id>/      gateway.pem, ca.pem, bundle.toml, and gateway.key (0600) unless the
//!                         gateway enrolled with its own key (`add-gateway --csr`); technician.pem
//!                         and technician.key: the technician app's HTTPS certificate
//! DIR/revoked.toml        revoked gateway certificates (`central revoke-gateway`)
//! DIR/crl.pem             the same as a CA-signed revocation list, checked at every handshake
//! ```
//!
//! Keys are ECDSA P-256 made with `rcgen` on the `ring` backend. Nothing here logs key material.
use chrono::{DateTime, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

mod request;
mod revocation;
mod technician;
pub use request::{request_certificate, REQUEST_CSR, REQUEST_KEY};
pub use revocation::{crl_path, Revoked, CRL_FILE};
pub use technician::{
    certificate_info, fingerprint, self_signed_technician, spki_hash, CertificateInfo,
    TECHNICIAN_CERT, TECHNICIAN_KEY, TECHNICIAN_NAMES,
};

/// Prefix of the SAN URI that names a gateway: `urn:gramgrid:gateway:<id>`.
pub const GATEWAY_URI_PREFIX: &str = "urn:gramgrid:gateway:";

/// Server names used when `init` is given none.
pub const DEFAULT_SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";
const PKI_TOML: &str = "pki.toml";
const GATEWAYS_DIR: &str = "gateways";
const BUNDLE_TOML: &str = "bundle.toml";
const MAX_GATEWAY_ID_LEN: usize = 64;
/// The CA outlives every certificate it signs; rotating it means re-enrolling every gateway.
const CA_VALIDITY_DAYS: i64 = 20 * 365;
const SERVER_VALIDITY_DAYS: i64 = 5 * 365;
/// Certificates start a day in the past, so a gateway whose clock runs a little behind still
/// accepts them.
const BACKDATE: Duration = Duration::days(1);

/// What went wrong creating, loading or using the PKI. Messages say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// `init` found a CA already in the directory and refused to overwrite it.
    #[error("{dir} already holds a central CA ({file} exists); refusing to overwrite it, because every gateway bundle issued from it would stop working. Use the existing CA, or move the directory away and run `central init` again (then re-enrol every gateway)")]
    AlreadyInitialised {
        /// The PKI directory.
        dir: PathBuf,
        /// The CA file found there.
        file: PathBuf,
    },
    // The io error is part of the message, not a `source`, so `{:#}` does not print it twice.
    /// No CA in the directory (a file of it could not be read).
    #[error("no central CA in {dir} (cannot read {file}: {error}); run `gramgrid central init --dir {dir} --url URL` first, or point --dir at the right directory")]
    NotInitialised {
        /// The PKI directory.
        dir: PathBuf,
        /// The file that could not be read.
        file: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A gateway id that is empty, too long or has characters other than letters, digits, '-', '_'.
    #[error("gateway id '{0}' is not allowed: use 1 to 64 letters, digits, '-' or '_'")]
    BadGatewayId(String),
    /// The gateway already has a bundle; it is never overwritten.
    #[error("gateway '{id}' already has a bundle in {dir}; remove that directory to issue a new certificate (the old one stays valid until it expires)")]
    GatewayExists {
        /// The gateway id.
        id: String,
        /// Its existing bundle directory.
        dir: PathBuf,
    },
    /// The central URL is not `https://`.
    #[error("central URL '{0}' must start with https:// (gateways only sync over TLS)")]
    BadUrl(String),
    /// A server name for central's certificate is neither a DNS name nor an IP address.
    #[error("server name '{name}' is not a DNS name or IP address: {reason}")]
    BadServerName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A certificate's validity period is empty or reversed.
    #[error("validity is empty or backwards (not_before {not_before} is not before not_after {not_after})")]
    BadValidity {
        /// Start of validity (UTC).
        not_before: DateTime<Utc>,
        /// End of validity (UTC).
        not_after: DateTime<Utc>,
    },
    /// A file or directory operation failed.
    #[error("cannot {action} {path}: {error}")]
    Io {
        /// What was being done (e.g. "read the gateway bundle").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A PKI file exists but does not parse.
    #[error("{path} is not a valid {what}: {reason}; restore it from a backup or re-create it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
        /// The parser's reason (never key material).
        reason: String,
    },
    /// rcgen failed to make a key or certificate.
    #[error("certificate generation failed: {0}")]
    Rcgen(rcgen::Error),
}

// By hand rather than `#[from]`, which would also make it a `source` and print it twice.
impl From<rcgen::Error> for PkiError {
    fn from(error: rcgen::Error) -> Self {
        PkiError::Rcgen(error)
    }
}

/// The files the central listener reads from a PKI directory: never the CA key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerFiles {
    /// The CA certificate, the trust anchor for client certificates.
    pub ca: PathBuf,
    /// The listener's certificate.
    pub cert: PathBuf,
    /// The listener's private key.
    pub key: PathBuf,
    /// The revocation list (absent until a gateway is revoked).
    pub crl: PathBuf,
}

impl ListenerFiles {
    /// The listener's files in PKI directory `dir`.
    pub fn in_dir(dir: &Path) -> ListenerFiles {
        ListenerFiles {
            ca: dir.join(CA_CERT),
            cert: dir.join(SERVER_CERT),
            key: dir.join(SERVER_KEY),
            crl: crl_path(dir),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct PkiToml {
    central_url: String,
}

/// The central CA, loaded from its directory. Holds the CA key in memory: only the enrolment
/// commands need it, the running server needs only the certificates.
pub struct CentralPki {
    dir: PathBuf,
    central_url: String,
    ca_cert_pem: String,
    ca_key: KeyPair,
}

impl std::fmt::Debug for CentralPki {
    // Hand-written so the CA key can never end up in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CentralPki")
            .field("dir", &self.dir)
            .field("central_url", &self.central_url)
            .finish_non_exhaustive()
    }
}

impl CentralPki {
    /// Creates the CA and the central server's certificate in `dir` (created if missing).
    /// `server_names` are DNS names or IP addresses of the central listener; empty means
    /// `localhost` and `127.0.0.1`. Refuses to touch a directory that already holds a CA.
    pub fn init(
        dir: &Path,
        central_url: &str,
        server_names: &[String],
    ) -> Result<CentralPki, PkiError> {
        if !central_url.starts_with("https://") {
            return Err(PkiError::BadUrl(central_url.to_string()));
        }
        // Any of our files means a CA (or a half-finished init) is here: never mix two CAs.
        for file in [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, PKI_TOML] {
            let path = dir.join(file);
            if path.exists() {
                return Err(PkiError::AlreadyInitialised {
                    dir: dir.to_path_buf(),
                    file: path,
                });
            }
        }
        let names: Vec<String> = if server_names.is_empty() {
            DEFAULT_SERVER_NAMES.iter().map(|s| s.to_string()).collect()
        } else {
            server_names.to_vec()
        };
        let server_sans = names
            .iter()
            .map(|name| san_for(name))
            .collect::<Result<Vec<_>, _>>()?;
        create_dir(dir)?;

        let now = Utc::now();
        let ca_key = KeyPair::generate()?;
        let ca_params = ca_params(now)?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let server_key = KeyPair::generate()?;
        let mut server = leaf_params(
            &names[0],
            now - BACKDATE,
            now + Duration::days(SERVER_VALIDITY_DAYS),
        )?;
        server.subject_alt_names = server_sans;
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        // ca.pem last: `load` needs it, so a crash part-way leaves nothing that loads.
        write_new(&dir.join(CA_KEY), &ca_key.serialize_pem(), true)?;
        write_new(&dir.join(SERVER_KEY), &server_key.serialize_pem(), true)?;
        write_new(&dir.join(SERVER_CERT), &server_cert.pem(), false)?;
        let toml = toml::to_string(&PkiToml {
            central_url: central_url.to_string(),
        })
        .map_err(|e| PkiError::Corrupt {
            path: dir.join(PKI_TOML),
            what: "PKI settings file",
            reason: e.to_string(),
        })?;
        write_new(&dir.join(PKI_TOML), &toml, false)?;
        write_new(&dir.join(CA_CERT), &ca_cert.pem(), false)?;
        tracing::info!(dir = %dir.display(), ?names, "central CA created");
        Ok(CentralPki {
            dir: dir.to_path_buf(),
            central_url: central_url.to_string(),
            ca_cert_pem: ca_cert.pem(),
            ca_key,
        })
    }

    /// Loads a CA created by [`CentralPki::init`].
    pub fn load(dir: &Path) -> Result<CentralPki, PkiError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|error| PkiError::NotInitialised {
                dir: dir.to_path_buf(),
                file: path,
                error,
            })
        };
        let ca_cert_pem = read(CA_CERT)?;
        let ca_key_pem = read(CA_KEY)?;
        let settings: PkiToml =
            toml::from_str(&read(PKI_TOML)?).map_err(|e| PkiError::Corrupt {
                path: dir.join(PKI_TOML),
                what: "PKI settings file",
                reason: e.to_string(),
            })?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| PkiError::Corrupt {
            path: dir.join(CA_KEY),
            what: "CA private key",
            reason: e.to_string(),
        })?;
        // Parse once now so a damaged ca.pem is reported here, not at the first enrolment.
        Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key).map_err(|e| PkiError::Corrupt {
            path: dir.join(CA_CERT),
            what: "CA certificate",
            reason: e.to_string(),
        })?;
        Ok(CentralPki {
            dir: dir.to_path_buf(),
            central_url: settings.central_url,
            ca_cert_pem,
            ca_key,
        })
    }

    /// Issues a client certificate for gateway `id`, valid from now for `validity_days`, and
    /// writes its bundle to `<dir>/gateways/<id>/`.
    pub fn add_gateway(&self, id: &str, validity_days: u32) -> Result<GatewayBundle, PkiError> {
        let now = Utc::now();
        self.add_gateway_valid(
            id,
            now - BACKDATE,
            now + Duration::days(i64::from(validity_days)),
        )
    }

    /// As [`CentralPki::add_gateway`] with an explicit validity window (tests issue expired ones).
    pub fn add_gateway_valid(
        &self,
        id: &str,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<GatewayBundle, PkiError> {
        validate_gateway_id(id)?;
        let out = self.dir.join(GATEWAYS_DIR).join(id);
        if out.exists() {
            return Err(PkiError::GatewayExists {
                id: id.to_string(),
                dir: out,
            });
        }
        let key = KeyPair::generate()?;
        let mut params = leaf_params(id, not_before, not_after)?;
        let uri = format!("{GATEWAY_URI_PREFIX}{id}");
        params.subject_alt_names = vec![SanType::URI(uri.as_str().try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?;
        let cert = params.signed_by(&key, &issuer)?;

        create_dir(&out)?;
        let bundle = GatewayBundle {
            gateway_id: id.to_string(),
            central_url: self.central_url.clone(),
            cert: out.join("gateway.pem"),
            key: out.join("gateway.key"),
            ca: out.join("ca.pem"),
        };
        write_new(&bundle.key, &key.serialize_pem(), true)?;
        write_new(&bundle.cert, &cert.pem(), false)?;
        write_new(&bundle.ca, &self.ca_cert_pem, false)?;
        self.issue_technician(id, &out, not_before, not_after)?;
        self.write_bundle_toml(&out, &bundle)?;
        tracing::info!(gateway = id, %not_after, dir = %out.display(), "gateway certificate issued");
        Ok(bundle)
    }

    /// The PKI directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Central's `https://` URL, as written into every gateway bundle.
    pub fn central_url(&self) -> &str {
        &self.central_url
    }
    /// The CA certificate: the only trust anchor for gateway client certificates.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }
    /// Central's HTTPS server certificate (`server.pem`), signed by the CA.
    pub fn server_cert_path(&self) -> PathBuf {
        self.dir.join(SERVER_CERT)
    }
    /// The server certificate's private key (`server.key`, mode 0600).
    pub fn server_key_path(&self) -> PathBuf {
        self.dir.join(SERVER_KEY)
    }
    /// The revocation list the listener checks (absent until a gateway is revoked).
    pub fn crl_path(&self) -> PathBuf {
        crl_path(&self.dir)
    }
    /// Where `add_gateway` writes the bundle of gateway `id`.
    pub fn bundle_path(&self, id: &str) -> PathBuf {
        self.dir.join(GATEWAYS_DIR).join(id).join(BUNDLE_TOML)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleToml {
    gateway_id: String,
    central_url: String,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// What a gateway needs to reach central: its id, central's URL, its certificate and key, and
/// the CA that central's certificate must chain to. Paths are absolute once loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayBundle {
    /// The gateway's id, as in its certificate (CN and SAN URI `urn:gramgrid:gateway:<id>`).
    pub gateway_id: String,
    /// Central's `https://` URL.
    pub central_url: String,
    /// The gateway's client certificate (PEM).
    pub cert: PathBuf,
    /// The gateway's private key (PEM, mode 0600). Never log its contents.
    pub key: PathBuf,
    /// The central CA certificate (PEM): the only anchor trusted for central's certificate.
    pub ca: PathBuf,
}

impl GatewayBundle {
    /// Reads `bundle.toml`; file names in it are relative to the file's own directory.
    pub fn load(path: &Path) -> Result<GatewayBundle, PkiError> {
        let text = std::fs::read_to_string(path).map_err(|error| PkiError::Io {
            action: "read the gateway bundle",
            path: path.to_path_buf(),
            error,
        })?;
        let file: BundleToml = toml::from_str(&text).map_err(|e| PkiError::Corrupt {
            path: path.to_path_buf(),
            what: "gateway bundle (bundle.toml)",
            reason: e.to_string(),
        })?;
        validate_gateway_id(&file.gateway_id)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(GatewayBundle {
            gateway_id: file.gateway_id,
            central_url: file.central_url,
            cert: base.join(file.cert),
            key: base.join(file.key),
            ca: base.join(file.ca),
        })
    }
}

/// Gateway ids appear in paths, certificate names and URIs, so they are kept to a safe alphabet.
pub fn validate_gateway_id(id: &str) -> Result<(), PkiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_GATEWAY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadGatewayId(id.to_string()))
    }
}

fn ca_params(now: DateTime<Utc>) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "gramgrid");
    // A random tag makes each CA's name unique, so a certificate from another (or an earlier)
    // CA is reported as "unknown issuer" instead of a confusing bad signature.
    let tag: [u8; 4] = rand::random();
    dn.push(
        DnType::CommonName,
        format!("gramgrid central CA {}", hex::encode(tag)),
    );
    params.distinguished_name = dn;
    // Path length 0: the CA signs leaves only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = to_time(now - BACKDATE)?;
    params.not_after = to_time(now + Duration::days(CA_VALIDITY_DAYS))?;
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn leaf_params(
    common_name: &str,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<CertificateParams, PkiError> {
    if not_before >= not_after {
        return Err(PkiError::BadValidity {
            not_before,
            not_after,
        });
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "gramgrid");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_time(not_before)?;
    params.not_after = to_time(not_after)?;
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn san_for(name: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(PkiError::BadServerName {
            name: name.to_string(),
            reason: "use letters, digits, '-' and '.' only".into(),
        });
    }
    let ia5 = name
        .try_into()
        .map_err(|e: rcgen::Error| PkiError::BadServerName {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
    Ok(SanType::DnsName(ia5))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and without a leading zero byte, as RFC 5280 asks of serial numbers.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn to_time(at: DateTime<Utc>) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp()).map_err(|_| PkiError::BadValidity {
        not_before: at,
        not_after: at,
    })
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|error| PkiError::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        error,
    })
}

/// Replaces a public file atomically (a temporary file renamed over it), so a reader never sees
/// half of it.
fn write_replace(path: &Path, contents: &str) -> Result<(), PkiError> {
    let temporary = path.with_extension("new");
    let _ = std::fs::remove_file(&temporary);
    write_new(&temporary, contents, false)?;
    std::fs::rename(&temporary, path).map_err(|error| PkiError::Io {
        action: "replace",
        path: path.to_path_buf(),
        error,
    })
}

/// Writes a new file (never replaces one); `secret` files are created 0600 from the start, so a
/// key is never readable by others even for an instant.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    let io = |error| PkiError::Io {
        action: "write",
        path: path.to_path_buf(),
        error,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_ids_are_a_safe_alphabet() {
        for good in ["a", "village-07", "G_1", &"x".repeat(64)] {
            assert!(validate_gateway_id(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "..", "a b", "é", &"x".repeat(65), "a.b"] {
            assert!(validate_gateway_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn init_load_add_gateway_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pki");
        let pki = CentralPki::init(&root, "https://central.example:8443", &[]).unwrap();
        let again = CentralPki::init(&root, "https://central.example:8443", &[]).unwrap_err();
        assert!(
            matches!(again, PkiError::AlreadyInitialised { .. }),
            "{again}"
        );
        assert!(again.to_string().contains("refusing to overwrite"));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(root.join("ca.key")), 0o600);
            assert_eq!(mode(root.join("server.key")), 0o600);
        }

        let loaded = CentralPki::load(&root).unwrap();
        assert_eq!(loaded.central_url(), "https://central.example:8443");
        let bundle = loaded.add_gateway("village-a", 30).unwrap();
        assert_eq!(
            GatewayBundle::load(&pki.bundle_path("village-a")).unwrap(),
            bundle
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&bundle.key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let dup = pki.add_gateway("village-a", 30).unwrap_err();
        assert!(matches!(dup, PkiError::GatewayExists { .. }));
        assert!(matches!(
            pki.add_gateway("../etc", 30).unwrap_err(),
            PkiError::BadGatewayId(_)
        ));

        // The id is in the certificate: CN and SAN URI.
        let pem = std::fs::read_to_string(&bundle.cert).unwrap();
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "village-a");
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(san.value.general_names.iter().any(|n| matches!(
            n,
            x509_parser::extensions::GeneralName::URI("urn:gramgrid:gateway:village-a")
        )));
    }

    #[test]
    fn init_refuses_plain_http_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            CentralPki::init(dir.path(), "http://x", &[]).unwrap_err(),
            PkiError::BadUrl(_)
        ));
        assert!(matches!(
            CentralPki::init(dir.path(), "https://x", &["bad name".into()]).unwrap_err(),
            PkiError::BadServerName { .. }
        ));
        assert!(CentralPki::load(dir.path()).is_err());
    }
}
