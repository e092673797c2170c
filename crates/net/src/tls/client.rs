//! Client side: the gateway's rustls config (trust only the bundle's CA, present the gateway
//! certificate) and a small HTTPS/1.1 client for the sync client: a connection per request, or
//! one kept for the next request for a few seconds where the caller's requests may be repeated.
use super::{load_certs, load_key, load_roots, provider, TlsError};
use crate::pki::GatewayBundle;
use axum::http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;

/// Why a request to central did not produce a response (or, from [`into_success`], a 2xx one).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not `https://host[:port][/prefix]` without a query.
    #[error("central URL '{url}' is not usable: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP connection refused: central is down or the port is wrong.
    #[error("central at {addr} refused the connection (server down or wrong port)")]
    ConnectRefused {
        /// `host:port` of central.
        addr: String,
    },
    /// Any other TCP connect failure (DNS, no route, cellular link down).
    #[error("cannot connect to central at {addr}: {error}")]
    Connect {
        /// `host:port` of central.
        addr: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The TLS handshake failed; `reason` is rustls's, e.g. an unknown CA on either side or an
    /// expired certificate. With TLS 1.3 the server's refusal of our certificate arrives after
    /// the client has sent its request, so it can surface here from the request itself.
    #[error("TLS with central at {addr} failed: {reason}; check the gateway bundle (CA, certificate expiry) and the clocks")]
    TlsHandshake {
        /// `host:port` of central.
        addr: String,
        /// rustls's reason.
        reason: String,
    },
    /// The whole exchange, connect included, took longer than the timeout given.
    #[error("no complete answer from central within {0:?}")]
    Timeout(Duration),
    /// The HTTP/1.1 exchange failed after the TLS handshake (connection cut, bad response).
    #[error("HTTP exchange with central failed: {0}")]
    Http(String),
    /// Central answered with a non-2xx status (from [`into_success`]).
    #[error("central answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The start of the response body (at most 500 characters), usually central's message.
        body: String,
    },
}

/// The gateway's TLS config: trusts only the bundle's CA and presents the gateway certificate.
pub fn client_config(bundle: &GatewayBundle) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = load_roots(&bundle.ca)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            load_certs(&bundle.cert, "gateway certificate")?,
            load_key(&bundle.key)?,
        )
        .map_err(|e| TlsError::Config(format!("gateway certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An API client's TLS config (the utility's systems): trusts only central's CA `ca`, presents
/// no certificate.
pub fn api_client_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(load_roots(ca)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where Debian and other systems keep the CA bundle, in the order tried after `SSL_CERT_FILE`
/// (also by central's PostgreSQL client).
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A client config for a public HTTPS service (e.g. an SMS provider): trusts the system CA bundle
/// (`SSL_CERT_FILE`, else the distribution's bundle), presents no certificate.
pub fn system_client_config() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(SYSTEM_CA_BUNDLES.iter().map(std::path::PathBuf::from));
    let mut roots = rustls::RootCertStore::empty();
    for path in candidates {
        if let Ok(certs) = load_certs(&path, "CA bundle") {
            roots.add_parsable_certificates(certs);
            break;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::Config(format!(
            "no system CA bundle found (SSL_CERT_FILE, {}): install ca-certificates or give a CA file",
            SYSTEM_CA_BUNDLES.join(", ")
        )));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Turns a non-2xx answer into [`ClientError::Status`]; returns the body of a 2xx one.
pub fn into_success(response: (StatusCode, Vec<u8>)) -> Result<Vec<u8>, ClientError> {
    let (status, body) = response;
    if status.is_success() {
        Ok(body)
    } else {
        Err(ClientError::Status {
            status,
            body: String::from_utf8_lossy(&body).chars().take(500).collect(),
        })
    }
}

/// An HTTPS client for one base URL (`https://host[:port][/prefix]`). By default it opens a fresh
/// connection per request: sync runs a few times an hour over a flaky cellular link, where a
/// connection kept for long is more often dead than useful. [`HttpsClient::keeping_connections`]
/// keeps the last one for a few seconds, for requests that follow each other (a push answer and
/// the session it starts, the exchanges of a catch-up).
#[derive(Clone)]
pub struct HttpsClient {
    connector: tokio_rustls::TlsConnector,
    host: String,
    port: u16,
    prefix: String,
    server_name: ServerName<'static>,
    keep_idle: Option<Duration>,
    idle: Arc<std::sync::Mutex<Option<Kept>>>,
}

/// An open HTTP/1.1 connection and the task that drives it (stopped when this is dropped).
struct Kept {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    idle_since: std::time::Instant,
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// A client for `base_url` (`https://host[:port][/prefix]`, port 443 by default) with the given
    /// TLS config (see [`client_config`]). Connects nothing yet.
    pub fn new(config: Arc<rustls::ClientConfig>, base_url: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = base_url
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| bad(&e.to_string()))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("it must start with https://"));
        }
        if uri.query().is_some() {
            return Err(bad("it must not have a query string"));
        }
        let host = uri.host().ok_or_else(|| bad("it has no host"))?;
        // Uri keeps IPv6 brackets; the socket address and the SNI name want them off.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| bad(&format!("'{host}' is not a DNS name or IP address: {e}")))?;
        Ok(HttpsClient {
            connector: tokio_rustls::TlsConnector::from(config),
            port: uri.port_u16().unwrap_or(443),
            prefix: uri.path().trim_end_matches('/').to_string(),
            host,
            server_name,
            keep_idle: None,
            idle: Arc::default(),
        })
    }

    /// Keeps a connection open after an answer, for a next request within `idle` (keep it under
    /// the server's idle limit: central closes a connection whose next request has not come in
    /// 30 s). A request that fails on a kept connection is sent again on a new one, so use this
    /// only where sending a request twice does no harm (sync exchanges and push waits do none;
    /// a message to an SMS provider would be sent twice).
    pub fn keeping_connections(mut self, idle: Duration) -> Self {
        self.keep_idle = Some(idle);
        self
    }

    /// Closes the kept connection, if any: the next request opens a new one.
    pub fn forget_connection(&self) {
        drop(self.take_kept());
    }

    /// POSTs `body` to `path` (below the base URL) and returns the status and body, whatever the
    /// status; `timeout` bounds the whole exchange, connect included.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        self.request(Method::POST, path, &[], Some(content_type), body, timeout)
            .await
    }

    /// As [`HttpsClient::post`], with extra request headers (e.g. a provider's API key).
    pub async fn post_with_headers(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        content_type: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        self.request(
            Method::POST,
            path,
            headers,
            Some(content_type),
            body,
            timeout,
        )
        .await
    }

    /// GETs `path` (below the base URL); see [`HttpsClient::post`].
    pub async fn get(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        self.get_with_headers(path, &[], timeout).await
    }

    /// As [`HttpsClient::get`], with extra request headers (e.g. `authorization`).
    pub async fn get_with_headers(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        self.request(Method::GET, path, headers, None, Vec::new(), timeout)
            .await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        tokio::time::timeout(
            timeout,
            self.exchange(method, path, headers, content_type, body),
        )
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let body = Bytes::from(body);
        let request = || self.build_request(&method, path, headers, content_type, body.clone());
        if let Some(kept) = self.take_kept() {
            match self.send(kept, request()?).await {
                Ok(answer) => return Ok(answer),
                // Closed by central in the meantime, or cut: the request goes on a new one.
                Err(error) => tracing::debug!(%error, "kept connection to central failed"),
            }
        }
        let fresh = self.open().await?;
        self.send(fresh, request()?).await
    }

    /// The kept connection, if it is still open and has not been idle too long.
    fn take_kept(&self) -> Option<Kept> {
        let limit = self.keep_idle?;
        let kept = match self.idle.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }?;
        (!kept.sender.is_closed() && kept.idle_since.elapsed() < limit).then_some(kept)
    }

    /// Keeps `kept` for the next request when this client keeps connections.
    fn keep(&self, mut kept: Kept) {
        if self.keep_idle.is_none() || kept.sender.is_closed() {
            return;
        }
        kept.idle_since = std::time::Instant::now();
        match self.idle.lock() {
            Ok(mut slot) => *slot = Some(kept),
            Err(poisoned) => *poisoned.into_inner() = Some(kept),
        }
    }

    /// A new TCP connection, TLS (resumed when the config holds a session) and HTTP/1.1 on it.
    async fn open(&self) -> Result<Kept, ClientError> {
        let addr = self.addr_label();
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|error| {
                if error.kind() == std::io::ErrorKind::ConnectionRefused {
                    ClientError::ConnectRefused { addr: addr.clone() }
                } else {
                    ClientError::Connect {
                        addr: addr.clone(),
                        error,
                    }
                }
            })?;
        // Sync messages are small and latency-bound over cellular: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|error| self.classify(&error))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|error| self.classify(&error))?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection to central ended with an error");
            }
        });
        Ok(Kept {
            sender,
            driver,
            idle_since: std::time::Instant::now(),
        })
    }

    fn build_request(
        &self,
        method: &Method,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{}", self.prefix, path))
            .header(hyper::header::HOST, authority);
        if let Some(content_type) = content_type {
            builder = builder.header(hyper::header::CONTENT_TYPE, content_type);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
            .body(Full::new(body))
            .map_err(|e| ClientError::Http(format!("cannot build the request: {e}")))
    }

    /// Sends `request` on `connection` and reads the whole answer; the connection is kept for the
    /// next request when this client keeps connections.
    async fn send(
        &self,
        mut connection: Kept,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        connection
            .sender
            .ready()
            .await
            .map_err(|error| self.classify(&error))?;
        let response = connection
            .sender
            .send_request(request)
            .await
            .map_err(|error| self.classify(&error))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| self.classify(&error))?
            .to_bytes()
            .to_vec();
        self.keep(connection);
        Ok((status, body))
    }

    fn addr_label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A rustls error anywhere in the chain means TLS failed (including the server's alert
    /// refusing our certificate, which TLS 1.3 delivers after the client's handshake is done).
    fn classify(&self, error: &(dyn std::error::Error + 'static)) -> ClientError {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(current) = cause {
            if let Some(tls) = current.downcast_ref::<rustls::Error>() {
                return ClientError::TlsHandshake {
                    addr: self.addr_label(),
                    reason: tls.to_string(),
                };
            }
            if let Some(io) = current.downcast_ref::<std::io::Error>() {
                if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                    return ClientError::TlsHandshake {
                        addr: self.addr_label(),
                        reason: tls.to_string(),
                    };
                }
            }
            cause = current.source();
        }
        ClientError::Http(error.to_string())
    }
}
