//! Revoking gateway certificates: `revoked.toml` lists them, `crl.pem` (signed by the CA) is what
//! the central listener checks at every handshake.
use super::{write_replace, CentralPki, PkiError, GATEWAYS_DIR};
use chrono::{DateTime, Duration, Utc};
use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason, RevokedCertParams,
    SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The revocation list the listener loads (PEM, signed by the CA).
pub const CRL_FILE: &str = "crl.pem";
const REVOKED_TOML: &str = "revoked.toml";
/// A CRL names no real expiry here (the listener reads the file, not a distribution point), but
/// X.509 requires one.
const CRL_VALIDITY_DAYS: i64 = 10 * 365;

/// One revoked gateway certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The gateway the certificate was issued to.
    pub gateway_id: String,
    /// The certificate's serial number, hex.
    pub serial: String,
    /// When it was revoked (UTC).
    pub revoked_at: DateTime<Utc>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokedToml {
    #[serde(default)]
    revoked: Vec<Revoked>,
}

/// The path of the revocation list in a PKI directory (it may not exist: nothing revoked yet).
pub fn crl_path(dir: &Path) -> PathBuf {
    dir.join(CRL_FILE)
}

impl CentralPki {
    /// Revokes the certificate of gateway `id` (the one in its bundle directory): records it in
    /// `revoked.toml` and rewrites `crl.pem`. A running central picks the new list up within seconds.
    /// Revoking again changes nothing. Returns the revocation.
    pub fn revoke_gateway(&self, id: &str) -> Result<Revoked, PkiError> {
        super::validate_gateway_id(id)?;
        let cert_path = self.dir.join(GATEWAYS_DIR).join(id).join("gateway.pem");
        let pem = std::fs::read_to_string(&cert_path).map_err(|error| PkiError::Io {
            action: "read the gateway's certificate (was it enrolled from this PKI directory?)",
            path: cert_path.clone(),
            error,
        })?;
        let serial = serial_of(&pem).ok_or_else(|| PkiError::Corrupt {
            path: cert_path,
            what: "gateway certificate",
            reason: "no X.509 certificate in it".into(),
        })?;
        let mut list = self.revoked()?;
        if let Some(known) = list.iter().find(|r| r.serial == serial) {
            return Ok(known.clone());
        }
        let revocation = Revoked {
            gateway_id: id.to_owned(),
            serial,
            revoked_at: Utc::now(),
        };
        list.push(revocation.clone());
        self.write_crl(&list)?;
        let text =
            toml::to_string(&RevokedToml { revoked: list }).map_err(|e| PkiError::Corrupt {
                path: self.dir.join(REVOKED_TOML),
                what: "revocation list",
                reason: e.to_string(),
            })?;
        write_replace(&self.dir.join(REVOKED_TOML), &text)?;
        tracing::warn!(gateway = id, serial = %revocation.serial, "gateway certificate revoked");
        Ok(revocation)
    }

    /// Every revoked certificate, oldest first.
    pub fn revoked(&self) -> Result<Vec<Revoked>, PkiError> {
        let path = self.dir.join(REVOKED_TOML);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<RevokedToml>(&text)
                .map(|file| file.revoked)
                .map_err(|e| PkiError::Corrupt {
                    path,
                    what: "revocation list",
                    reason: e.to_string(),
                }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(PkiError::Io {
                action: "read",
                path,
                error,
            }),
        }
    }

    fn write_crl(&self, list: &[Revoked]) -> Result<(), PkiError> {
        let now = Utc::now();
        let revoked_certs = list
            .iter()
            .map(|r| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(&r.serial).map_err(
                        |e| PkiError::Corrupt {
                            path: self.dir.join(REVOKED_TOML),
                            what: "revocation list",
                            reason: e.to_string(),
                        },
                    )?),
                    revocation_time: super::to_time(r.revoked_at)?,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = CertificateRevocationListParams {
            this_update: super::to_time(now)?,
            next_update: super::to_time(now + Duration::days(CRL_VALIDITY_DAYS))?,
            crl_number: SerialNumber::from(u64::try_from(list.len()).unwrap_or(u64::MAX)),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?;
        let crl = params.signed_by(&issuer)?;
        write_replace(&crl_path(&self.dir), &crl.pem()?)
    }
}

/// The serial number (hex) of the first certificate in a PEM text.
fn serial_of(pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(hex::encode(cert.raw_serial()))
}
