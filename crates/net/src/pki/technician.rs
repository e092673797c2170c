//! The technician app's HTTPS certificate: issued under the central CA at enrolment, beside the
//! gateway's client certificate, or self-signed by a gateway that has none; and its SHA-256
//! fingerprint, which a technician compares with the one printed on the enclosure label.
use super::{
    create_dir, leaf_params, san_for, write_new, CentralPki, GatewayBundle, PkiError, BACKDATE,
};
use chrono::{DateTime, Duration, Utc};
use rcgen::{ExtendedKeyUsagePurpose, Issuer, KeyPair};
use std::path::{Path, PathBuf};

/// The technician certificate's file name (in a gateway bundle's directory, or the data directory).
pub const TECHNICIAN_CERT: &str = "technician.pem";
/// Its private key (mode 0600).
pub const TECHNICIAN_KEY: &str = "technician.key";

/// Names the technician certificate is valid for: the gateway's Wi-Fi hotspot address (the
/// image's default, 10.42.0.1), its mDNS name, and loopback for the demo.
pub const TECHNICIAN_NAMES: [&str; 4] = ["10.42.0.1", "gramgrid.local", "localhost", "127.0.0.1"];

/// A self-signed technician certificate is good for this long; it is made again when it expires.
const SELF_SIGNED_DAYS: i64 = 10 * 365;

impl CentralPki {
    /// Issues the technician app's server certificate for gateway `id` into `out`.
    pub(super) fn issue_technician(
        &self,
        id: &str,
        out: &Path,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<(), PkiError> {
        let key = KeyPair::generate()?;
        let params = technician_params(id, not_before, not_after)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?;
        let cert = params.signed_by(&key, &issuer)?;
        write_new(&out.join(TECHNICIAN_KEY), &key.serialize_pem(), true)?;
        write_new(&out.join(TECHNICIAN_CERT), &cert.pem(), false)
    }
}

impl GatewayBundle {
    /// The technician certificate and key issued with this bundle, if it has them (bundles made
    /// from a certificate request, or before the technician app, do not).
    pub fn technician_cert(&self) -> Option<(PathBuf, PathBuf)> {
        let dir = self.cert.parent()?;
        let (cert, key) = (dir.join(TECHNICIAN_CERT), dir.join(TECHNICIAN_KEY));
        (cert.exists() && key.exists()).then_some((cert, key))
    }
}

fn technician_params(
    id: &str,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<rcgen::CertificateParams, PkiError> {
    let mut params = leaf_params(
        &format!("gramgrid gateway {id} technician app"),
        not_before,
        not_after,
    )?;
    params.subject_alt_names = TECHNICIAN_NAMES
        .iter()
        .map(|name| san_for(name))
        .collect::<Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

/// The self-signed technician certificate in `dir` (made on first use, and again once expired),
/// for a gateway whose bundle has none: `(certificate, key)`.
pub fn self_signed_technician(
    dir: &Path,
    gateway_id: &str,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let (cert, key) = (dir.join(TECHNICIAN_CERT), dir.join(TECHNICIAN_KEY));
    if cert.exists() && key.exists() && !expired(&cert)? {
        return Ok((cert, key));
    }
    create_dir(dir)?;
    for stale in [&cert, &key] {
        if stale.exists() {
            std::fs::remove_file(stale).map_err(|error| PkiError::Io {
                action: "replace the expired technician certificate",
                path: stale.clone(),
                error,
            })?;
        }
    }
    let now = Utc::now();
    let pair = KeyPair::generate()?;
    let params = technician_params(
        gateway_id,
        now - BACKDATE,
        now + Duration::days(SELF_SIGNED_DAYS),
    )?;
    let signed = params.self_signed(&pair)?;
    write_new(&key, &pair.serialize_pem(), true)?;
    write_new(&cert, &signed.pem(), false)?;
    tracing::info!(path = %cert.display(), "self-signed technician certificate made");
    Ok((cert, key))
}

fn expired(cert: &Path) -> Result<bool, PkiError> {
    let der = first_der(cert)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| corrupt(cert, e))?;
    Ok(parsed.validity().not_after.timestamp() <= Utc::now().timestamp())
}

/// The SHA-256 fingerprint of the first certificate in a PEM file, as colon-separated upper-case
/// hex pairs (the form browsers show).
pub fn fingerprint(cert: &Path) -> Result<String, PkiError> {
    let der = first_der(cert)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    Ok(digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// What a technician (and the enclosure label) needs to know of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// SHA-256 of the certificate, `AB:CD:...` (see [`fingerprint`]).
    pub fingerprint: String,
    /// The DNS names and IP addresses it is valid for.
    pub names: Vec<String>,
    /// The end of its validity (UTC).
    pub not_after: DateTime<Utc>,
    /// Whether it signed itself (no central CA behind it).
    pub self_signed: bool,
}

/// Reads a certificate's [`CertificateInfo`].
pub fn certificate_info(cert: &Path) -> Result<CertificateInfo, PkiError> {
    use x509_parser::extensions::GeneralName;
    let der = first_der(cert)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| corrupt(cert, e))?;
    let names = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_string()),
                    GeneralName::IPAddress(ip) => ip_text(ip),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertificateInfo {
        fingerprint: fingerprint(cert)?,
        names,
        not_after: DateTime::from_timestamp(parsed.validity().not_after.timestamp(), 0)
            .unwrap_or_default(),
        self_signed: parsed.issuer() == parsed.subject(),
    })
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

/// The base64 SHA-256 hash of a certificate's public key (SPKI), as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it: a browser pinned to it trusts this
/// certificate only.
pub fn spki_hash(cert: &Path) -> Result<String, PkiError> {
    let der = first_der(cert)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| corrupt(cert, e))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, parsed.public_key().raw);
    Ok(data_encoding::BASE64.encode(digest.as_ref()))
}

fn first_der(cert: &Path) -> Result<Vec<u8>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(cert)
        .map(|der| der.to_vec())
        .map_err(|e| corrupt(cert, e))
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> PkiError {
    PkiError::Corrupt {
        path: path.to_path_buf(),
        what: "technician certificate",
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_without_an_issued_certificate_makes_one_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed_technician(dir.path(), "gw-1").unwrap();
        let first = fingerprint(&cert).unwrap();
        assert!(certificate_info(&cert).unwrap().self_signed);
        assert_eq!(first.len(), 32 * 3 - 1, "{first}");
        assert!(gramgrid_key_is_private(&key));
        let (again, _) = self_signed_technician(dir.path(), "gw-1").unwrap();
        assert_eq!(
            fingerprint(&again).unwrap(),
            first,
            "the label's fingerprint stays valid"
        );
        assert_eq!(spki_hash(&cert).unwrap().len(), 44);
    }

    #[test]
    fn enrolment_issues_a_technician_certificate_under_the_central_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = CentralPki::init(dir.path(), "https://127.0.0.1:1", &[]).unwrap();
        let bundle = pki.add_gateway("gw-7", 30).unwrap();
        let (cert, _) = bundle.technician_cert().expect("issued with the bundle");
        let der = first_der(&cert).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = first_der(&pki.ca_cert_path()).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(parsed.issuer(), ca.subject());
        parsed.verify_signature(Some(ca.public_key())).unwrap();
        let info = certificate_info(&cert).unwrap();
        assert!(!info.self_signed);
        assert_eq!(info.names, TECHNICIAN_NAMES.map(String::from).to_vec());
    }

    fn gramgrid_key_is_private(key: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(key).unwrap().permissions().mode() & 0o077 == 0
    }
}
