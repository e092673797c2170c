//! TLS for central and the gateway sync client: rustls configs built from the central PKI, an
//! axum-over-TLS accept loop that tells handlers which gateway is calling, and a small HTTPS client.
//!
//! One HTTPS port serves two kinds of caller. The utility's API presents no client certificate
//! (it uses bearer tokens). A gateway presents the certificate from its bundle. Client
//! certificates are therefore optional at the handshake but, when presented, must chain to the
//! central CA and be in date, or the handshake fails. Handlers that serve gateways take
//! [`RequireGateway`], which answers 401 when the connection carried no client certificate.
//!
//! rustls runs on the `ring` provider everywhere (no aws-lc-rs, so no cmake/nasm in the build).
mod client;
mod server;
#[cfg(test)]
mod tests;

pub use client::{
    api_client_config, client_config, into_success, system_client_config, ClientError, HttpsClient,
    SYSTEM_CA_BUNDLES,
};
pub use server::{
    gateway_id_from_cert, serve, server_config, server_config_from_files,
    server_config_without_client_auth, PeerGateway, RequireGateway, ServerTls, HANDSHAKE_TIMEOUT,
    MAX_CONNECTIONS, MAX_HANDSHAKES, MAX_PER_ADDRESS, RESUMABLE_SESSIONS, SHUTDOWN_GRACE,
};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went wrong building a TLS configuration or running the listener.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or is not PEM.
    #[error("cannot read {what} from {path}: {reason}; check the path (see `gramgrid central init` / `add-gateway`) and that the file is PEM")]
    Pem {
        /// What the file should hold (e.g. "private key").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The reader's error (never the file's contents).
        reason: String,
    },
    /// A certificate file holds no certificate.
    #[error(
        "{path} holds no certificate; it should be the PEM file written by `gramgrid central`"
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The CA certificate was refused as a root of trust.
    #[error("the CA certificate in {path} is not usable as a trust anchor: {reason}")]
    BadTrustAnchor {
        /// The CA file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// rustls refused the configuration (e.g. certificate and key do not match).
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The error never includes the file's contents, so a key cannot leak into a log this way.
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn load_roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path, "CA certificate")? {
        roots.add(cert).map_err(|e| TlsError::BadTrustAnchor {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}
