//! `gramgrid bench flood`: how long a real API call takes while idle connections flood central's
//! listener, against the same call without the flood. Loopback only: the flood comes from a few
//! 127.0.0.x source addresses.
use gramgrid_central::server::{self, StartError};
use gramgrid_central::CentralConfig;
use gramgrid_net::pki::{CentralPki, PkiError};
use gramgrid_net::tls::{ClientError, HttpsClient};
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Settings of the flood benchmark.
#[derive(Debug, Clone)]
pub struct FloodBench {
    /// Idle TCP connections opened against the listener (none sends a byte).
    pub connections: usize,
    /// Source addresses they come from (127.0.0.10, .11, ...).
    pub addresses: u8,
    /// Real API calls timed with and without the flood, each on a new TLS connection.
    pub requests: usize,
}

/// Latency of the timed calls, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub median_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct FloodFigures {
    /// Idle connections attempted.
    pub connections: usize,
    /// Of those, connected at the TCP level (the listener closes what it does not admit).
    pub connected: usize,
    /// Source addresses of the flood.
    pub addresses: u8,
    /// Timed calls in each phase.
    pub requests: usize,
    /// Calls without the flood.
    pub quiet: Latency,
    /// Calls while the flood holds its connections.
    pub flooded: Latency,
}

impl std::fmt::Display for FloodFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addresses = match self.addresses {
            1 => "1 address".to_owned(),
            n => format!("{n} addresses"),
        };
        write!(
            f,
            "{} idle connections from {addresses} ({} connected): a real API call took {:.1} ms median, {:.1} ms at most (without the flood: {:.1} ms, {:.1} ms), {} calls each",
            self.connections, self.connected, self.flooded.median_ms, self.flooded.max_ms,
            self.quiet.median_ms, self.quiet.max_ms, self.requests
        )
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    /// The temporary directory or a socket could not be made.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The PKI could not be made.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Central did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A timed call failed.
    #[error("a real API call failed during the benchmark: {0}")]
    Call(#[from] ClientError),
    /// A timed call got another answer than 200.
    #[error("a real API call was answered {0}")]
    Status(u16),
    /// The client's TLS settings could not be made.
    #[error("client TLS: {0}")]
    Tls(String),
}

/// Runs the benchmark against a central on a temporary SQLite database.
pub async fn flood(settings: &FloodBench) -> Result<FloodFigures, FloodError> {
    let dir = tempfile::tempdir()?;
    let pki = CentralPki::init(&dir.path().join("pki"), "https://127.0.0.1:8443", &[])?;
    let config = CentralConfig {
        database_url: format!("sqlite:{}", dir.path().join("central.db").display()),
        pki_dir: pki.dir().to_path_buf(),
        secrets_key_file: dir.path().join("secrets.key"),
        notifications_log: dir.path().join("notifications.log"),
        ..CentralConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = server::start(config, listener).await?;
    let client = api_client(&pki, running.addr)?;
    let quiet = timed_calls(&client, settings.requests).await?;
    let flood = open_idle(running.addr, settings).await;
    let connected = flood.len();
    let flooded = timed_calls(&client, settings.requests).await?;
    drop(flood);
    running.stop().await?;
    Ok(FloodFigures {
        connections: settings.connections,
        connected,
        addresses: settings.addresses,
        requests: settings.requests,
        quiet,
        flooded,
    })
}

fn api_client(pki: &CentralPki, addr: SocketAddr) -> Result<HttpsClient, FloodError> {
    let config = gramgrid_net::tls::api_client_config(&pki.ca_cert_path())
        .map_err(|e| FloodError::Tls(e.to_string()))?;
    HttpsClient::new(config, &format!("https://127.0.0.1:{}", addr.port()))
        .map_err(FloodError::Call)
}

/// Times `n` calls of the API's public document, each on a new TLS connection (the client does
/// not pool), so every call pays a handshake as a new client does.
async fn timed_calls(client: &HttpsClient, n: usize) -> Result<Latency, FloodError> {
    let mut millis = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (status, _) = client
            .get("/api/v1/openapi.json", Duration::from_secs(30))
            .await?;
        if status != 200 {
            return Err(FloodError::Status(status.as_u16()));
        }
        millis.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    millis.sort_by(f64::total_cmp);
    Ok(Latency {
        median_ms: millis.get(n / 2).copied().unwrap_or(0.0),
        max_ms: millis.last().copied().unwrap_or(0.0),
    })
}

/// Opens the flood's connections, round-robin over its source addresses; each stays silent.
async fn open_idle(target: SocketAddr, settings: &FloodBench) -> Vec<tokio::net::TcpStream> {
    let mut open = Vec::with_capacity(settings.connections);
    for i in 0..settings.connections {
        let last = 10u8.saturating_add((i % usize::from(settings.addresses.max(1))) as u8);
        let source = SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0));
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            continue;
        };
        if socket.bind(source).is_err() {
            continue;
        }
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await
        {
            open.push(stream);
        }
    }
    open
}
