//! The sync transport over HTTPS with the gateway's client certificate (mutual TLS).
use super::client::{Transport, TransportError};
use gramgrid_net::pki::GatewayBundle;
use gramgrid_net::tls::{client_config, into_success, ClientError, HttpsClient};
use gramgrid_proto::wire;
use std::path::Path;
use std::time::Duration;

/// How long a connection to central is kept for the next request: long enough for a push answer
/// to be followed by its session and for a catch-up's exchanges to follow each other, well under
/// central's 30 s limit for an idle connection. Exchanges and push waits can be sent twice
/// harmlessly, which keeping a connection needs.
pub const KEEP_IDLE: Duration = Duration::from_secs(20);

/// Exchanges with the central server named in an enrolment bundle.
#[derive(Clone)]
pub struct HttpsTransport {
    client: HttpsClient,
    timeout: Duration,
    gateway_id: String,
}

/// Why the transport could not be set up from a bundle.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The bundle could not be read, its certificates and key not used, or the central URL (the
    /// bundle's, or the one given instead) is not a usable `https://` URL.
    #[error("cannot load the enrolment bundle {path}: {reason}; run `gramgrid central add-gateway` at central and copy the bundle here")]
    Bundle {
        /// The bundle file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

impl HttpsTransport {
    /// Loads a bundle (`bundle.toml`) and prepares a client that trusts only its CA.
    pub fn from_bundle(path: &Path, timeout: Duration) -> Result<HttpsTransport, SetupError> {
        HttpsTransport::connect(path, None, timeout)
    }

    /// As [`HttpsTransport::from_bundle`], but reaching central at `url` instead of the bundle's URL
    /// (through a relay or a port forward).
    pub fn with_url(
        path: &Path,
        url: &str,
        timeout: Duration,
    ) -> Result<HttpsTransport, SetupError> {
        HttpsTransport::connect(path, Some(url), timeout)
    }

    fn connect(
        path: &Path,
        url: Option<&str>,
        timeout: Duration,
    ) -> Result<HttpsTransport, SetupError> {
        let failed = |reason: String| SetupError::Bundle {
            path: path.display().to_string(),
            reason,
        };
        let bundle = GatewayBundle::load(path).map_err(|e| failed(e.to_string()))?;
        let config = client_config(&bundle).map_err(|e| failed(e.to_string()))?;
        let url = url.unwrap_or(&bundle.central_url);
        let client = HttpsClient::new(config, url)
            .map_err(|e| failed(e.to_string()))?
            .keeping_connections(KEEP_IDLE);
        Ok(HttpsTransport {
            client,
            timeout,
            gateway_id: bundle.gateway_id,
        })
    }

    /// Closes the connection kept from the last request, so the next one opens a new connection
    /// (a simulated session minutes after the last would not find it open).
    pub fn forget_connection(&self) {
        self.client.forget_connection();
    }

    /// The gateway id the bundle's certificate names (central knows this gateway by it alone).
    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }
}

impl HttpsTransport {
    /// Waits up to `wait` at central (the push channel) for a downlink record after `after`:
    /// `Some(central's downlink sequence)` as soon as there is one, `None` when the wait ran out.
    pub async fn wait_for_downlink(
        &self,
        after: u64,
        wait: Duration,
    ) -> Result<Option<u64>, TransportError> {
        let wait = wait.min(Duration::from_secs(wire::MAX_WAIT_SECONDS));
        let path = format!(
            "{}?after={after}&wait_s={}",
            wire::WAIT_PATH,
            wait.as_secs().max(1)
        );
        // Central answers by the end of `wait`; the request timeout covers the way there and back.
        let answer = self.client.get(&path, wait + self.timeout).await;
        match answer.map_err(transport_error)? {
            (status, _) if status.as_u16() == 204 => Ok(None),
            (status, body) if status.is_success() => {
                let text = String::from_utf8_lossy(&body);
                text.trim().parse().map(Some).map_err(|_| {
                    TransportError::Unreachable(format!(
                        "central's push answer is not a sequence number: {text:?}"
                    ))
                })
            }
            refused => into_success(refused).map(|_| None).map_err(transport_error),
        }
    }
}

/// A client error as the sync client reports it.
fn transport_error(error: ClientError) -> TransportError {
    match error {
        ClientError::Status { status, body } => TransportError::Refused {
            status: status.as_u16(),
            message: body,
        },
        ClientError::Timeout(limit) => TransportError::Timeout(limit),
        other => TransportError::Unreachable(other.to_string()),
    }
}

impl Transport for HttpsTransport {
    async fn exchange(&self, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let answer = self
            .client
            .post(wire::EXCHANGE_PATH, wire::CONTENT_TYPE, body, self.timeout)
            .await
            .and_then(into_success);
        answer.map_err(transport_error)
    }
}
