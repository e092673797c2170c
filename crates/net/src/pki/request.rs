//! Enrolment by certificate signing request: the gateway makes its key and never sends it; the
//! office signs the request with the CA.
use super::{
    create_dir, leaf_params, write_new, BundleToml, CentralPki, GatewayBundle, PkiError, BACKDATE,
    BUNDLE_TOML, GATEWAYS_DIR, GATEWAY_URI_PREFIX,
};
use chrono::{Duration, Utc};
use rcgen::{CertificateSigningRequestParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use std::path::{Path, PathBuf};

/// File names a request directory holds (`gramgrid gateway request-certificate`).
pub const REQUEST_KEY: &str = "gateway.key";
/// The signing request the office signs (`gramgrid central add-gateway --csr`).
pub const REQUEST_CSR: &str = "gateway.csr";

/// Makes the gateway's key (0600, never leaves `dir`) and a signing request for gateway `id` in
/// `dir`. Refuses to overwrite an existing key. Returns the request's path.
pub fn request_certificate(id: &str, dir: &Path) -> Result<PathBuf, PkiError> {
    super::validate_gateway_id(id)?;
    create_dir(dir)?;
    let key = KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, id);
    let csr = params.serialize_request(&key)?;
    write_new(&dir.join(REQUEST_KEY), &key.serialize_pem(), true)?;
    let path = dir.join(REQUEST_CSR);
    write_new(&path, &csr.pem()?, false)?;
    Ok(path)
}

impl CentralPki {
    /// Signs gateway `id`'s certificate signing request for `validity_days` and writes its bundle
    /// (certificate, CA, `bundle.toml`, but no key) to `<dir>/gateways/<id>/`. Only the request's
    /// public key is used: the name, the gateway URI and the usages are the CA's.
    pub fn add_gateway_from_request(
        &self,
        id: &str,
        csr_pem: &str,
        validity_days: u32,
    ) -> Result<GatewayBundle, PkiError> {
        super::validate_gateway_id(id)?;
        let out = self.dir.join(GATEWAYS_DIR).join(id);
        if out.exists() {
            return Err(PkiError::GatewayExists {
                id: id.to_string(),
                dir: out,
            });
        }
        let mut request =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::Corrupt {
                path: PathBuf::from(REQUEST_CSR),
                what: "certificate signing request",
                reason: e.to_string(),
            })?;
        let now = Utc::now();
        let mut params = leaf_params(
            id,
            now - BACKDATE,
            now + Duration::days(i64::from(validity_days)),
        )?;
        let uri = format!("{GATEWAY_URI_PREFIX}{id}");
        params.subject_alt_names = vec![SanType::URI(uri.as_str().try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        request.params = params;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?;
        let cert = request.signed_by(&issuer)?;
        create_dir(&out)?;
        let bundle = GatewayBundle {
            gateway_id: id.to_string(),
            central_url: self.central_url.clone(),
            cert: out.join("gateway.pem"),
            key: out.join(REQUEST_KEY),
            ca: out.join("ca.pem"),
        };
        write_new(&bundle.cert, &cert.pem(), false)?;
        write_new(&bundle.ca, &self.ca_cert_pem, false)?;
        self.write_bundle_toml(&out, &bundle)?;
        tracing::info!(gateway = id, dir = %out.display(), "gateway certificate issued from a signing request");
        Ok(bundle)
    }

    pub(super) fn write_bundle_toml(
        &self,
        out: &Path,
        bundle: &GatewayBundle,
    ) -> Result<(), PkiError> {
        let file = BundleToml {
            gateway_id: bundle.gateway_id.clone(),
            central_url: bundle.central_url.clone(),
            cert: "gateway.pem".into(),
            key: REQUEST_KEY.into(),
            ca: "ca.pem".into(),
        };
        let text = toml::to_string(&file).map_err(|e| PkiError::Corrupt {
            path: out.join(BUNDLE_TOML),
            what: "gateway bundle",
            reason: e.to_string(),
        })?;
        write_new(&out.join(BUNDLE_TOML), &text, false)
    }
}
