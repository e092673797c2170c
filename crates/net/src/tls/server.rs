//! Server side: the rustls server config and the TLS accept loop that serves an axum router.
use super::{load_certs, load_key, load_roots, provider, TlsError};
use crate::pki::{validate_gateway_id, CentralPki, ListenerFiles, GATEWAY_URI_PREFIX};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

mod admission;
use admission::Admission;
pub use admission::{MAX_HANDSHAKES, MAX_PER_ADDRESS};

/// A client that has not finished the TLS handshake by then is dropped, so slow or silent
/// connections cannot hold a connection slot for long (see also `admission`: a flood of them is
/// evicted oldest first long before this).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; the accept loop waits for a free slot beyond that.
pub const MAX_CONNECTIONS: usize = 512;
/// How long shutdown waits for requests in flight before dropping their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(5);

/// Inserted into every request's extensions: the gateway id from the connection's verified
/// client certificate, or `None` when the caller presented no certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGateway(pub Option<String>);

/// Extractor for gateway-only handlers: the calling gateway's id, taken from its verified client
/// certificate (never from the request). Rejects with 401 when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequireGateway(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequireGateway {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<PeerGateway>() {
            Some(PeerGateway(Some(id))) => Ok(RequireGateway(id.clone())),
            _ => Err((
                StatusCode::UNAUTHORIZED,
                "this endpoint is for gateways: connect with the client certificate from the gateway's bundle (gramgrid central add-gateway)\n",
            )),
        }
    }
}

/// TLS sessions central keeps for resumption (see `resume_sessions`).
pub const RESUMABLE_SESSIONS: usize = 8192;

/// The central listener's TLS config from a PKI directory.
pub fn server_config(pki: &CentralPki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_from_files(&ListenerFiles::in_dir(pki.dir()))
}

/// The central listener's TLS config from its files (never the CA key, which can stay offline):
/// client certificates are optional, but a presented one must chain to the CA, be in date and not
/// be on the revocation list (when there is one).
pub fn server_config_from_files(
    files: &ListenerFiles,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let roots = load_roots(&files.ca)?;
    let mut builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
            .allow_unauthenticated();
    if let Some(crl) = load_crl(&files.crl)? {
        builder = builder.with_crls([crl]);
    }
    let verifier = builder
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let (cert, key) = (&files.cert, &files.key);
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert, "server certificate")?, load_key(key)?)
        .map_err(|e| TlsError::Config(format!("server certificate and key: {e}")))?;
    // The accept loop speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    resume_sessions(&mut config);
    Ok(Arc::new(config))
}

/// TLS 1.3 resumption: a gateway's next connection skips both certificate chains and their
/// signatures. Sessions are kept at central (a ticket is a 32-byte id): a stateless ticket would
/// carry the gateway's certificate down and up again on every connection and cost more bytes than
/// it saves. The cache holds a district's gateways several times over (an entry is about 2 KB).
/// It belongs to this config, so the replacement built when the revocation list changes forgets
/// every session and a revoked gateway must do a full handshake, which fails. A resumed
/// connection keeps the client certificate of the handshake it resumes, so it still names its
/// gateway.
fn resume_sessions(config: &mut rustls::ServerConfig) {
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(RESUMABLE_SESSIONS);
    // One ticket per connection: each resumption uses one up and the connection brings a new one,
    // so a gateway's store stays filled, also with a push wait and a session open at once.
    config.send_tls13_tickets = 1;
}

/// A listener's TLS config that asks for no client certificate: the technician app, whose people
/// log in with a password over the village Wi-Fi.
pub fn server_config_without_client_auth(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert, "server certificate")?, load_key(key)?)
        .map_err(|e| TlsError::Config(format!("server certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The revocation list, or None when the file does not exist (nothing revoked).
fn load_crl(
    path: &Path,
) -> Result<Option<rustls::pki_types::CertificateRevocationListDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    if !path.exists() {
        return Ok(None);
    }
    rustls::pki_types::CertificateRevocationListDer::from_pem_file(path)
        .map(Some)
        .map_err(|e| TlsError::Config(format!("revocation list {}: {e}", path.display())))
}

/// The listener's TLS settings; a replacement applies to connections accepted after it (a new
/// revocation list takes effect without a restart).
#[derive(Clone)]
pub struct ServerTls(Arc<std::sync::RwLock<Arc<rustls::ServerConfig>>>);

impl ServerTls {
    /// The settings in use now.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.0.read() {
            Ok(config) => Arc::clone(&config),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the settings for new connections.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        match self.0.write() {
            Ok(mut slot) => *slot = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }
}

impl From<Arc<rustls::ServerConfig>> for ServerTls {
    fn from(config: Arc<rustls::ServerConfig>) -> Self {
        ServerTls(Arc::new(std::sync::RwLock::new(config)))
    }
}

/// The gateway id in a (already verified) client certificate: its SAN URI
/// `urn:gramgrid:gateway:<id>`. `None` if the certificate carries no such name.
pub fn gateway_id_from_cert(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => uri
            .strip_prefix(GATEWAY_URI_PREFIX)
            .filter(|id| validate_gateway_id(id).is_ok())
            .map(str::to_string),
        _ => None,
    })
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then lets requests in
/// flight finish (up to [`SHUTDOWN_GRACE`]). A failed handshake or connection is logged and
/// affects no other connection; accept errors (e.g. out of file descriptors) back off and retry.
/// Each request carries [`PeerGateway`] and `ConnectInfo<SocketAddr>` in its extensions.
pub async fn serve(
    listener: TcpListener,
    tls: impl Into<ServerTls>,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tls: ServerTls = tls.into();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let admission = Admission::default();
    // Tells connections still in their handshake to give up: `graceful` only knows connections
    // that reached HTTP, and would otherwise wait for a silent client's handshake timeout.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    // Connection tasks, so the ones still running after the grace period can be aborted.
    let mut connections = tokio::task::JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTPS listener up");
    }
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = accept_with_slot(&listener, &slots) => accepted,
        };
        let (stream, remote, permit) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(error) => {
                tracing::warn!(%error, ?backoff, "accept failed; retrying");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let Some(admitted) = admission.admit(remote.ip()) else {
            tracing::debug!(%remote, "connection refused: its address holds {MAX_PER_ADDRESS} connections already");
            continue;
        };
        let handshaking = admission.handshake();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let router = router.clone();
        let watcher = graceful.watcher();
        let mut stopping = stopping.clone();
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            // Held for the connection's life: their drop frees the slot and the address's share.
            let (_permit, _admitted) = (permit, admitted);
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let mut handshaking = handshaking;
            let tls = tokio::select! {
                _ = &mut handshaking.evicted => {
                    tracing::debug!(%remote, "TLS handshake evicted to make room for newer connections");
                    return;
                }
                outcome = handshake => match outcome {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::info!(%remote, %error, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, "TLS handshake timed out");
                        return;
                    }
                },
                _ = stopping.wait_for(|stop| *stop) => return,
            };
            drop(handshaking);
            let peer = PeerGateway(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|leaf| gateway_id_from_cert(leaf)),
            );
            if peer.0.is_none() && tls.get_ref().1.peer_certificates().is_some() {
                tracing::warn!(%remote, "client certificate from the CA names no gateway");
            }
            tracing::debug!(%remote, gateway = ?peer.0, "TLS connection");
            let service = hyper::service::service_fn(move |mut request| {
                request.extensions_mut().insert(peer.clone());
                request.extensions_mut().insert(ConnectInfo(remote));
                router.clone().oneshot(request)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    tracing::info!("HTTPS listener stopping; waiting for requests in flight");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; dropping them");
    }
    connections.shutdown().await;
    Ok(())
}

async fn accept_with_slot(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    // The semaphore is never closed, so acquiring can only wait.
    let permit = slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| std::io::Error::other("connection limit closed"))?;
    let (stream, remote) = listener.accept().await?;
    Ok((stream, remote, permit))
}
