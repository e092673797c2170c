//! `gramgrid central serve`: the API and the sync endpoint over TLS, plus the notification loop.
use super::{api, notify, sync, Central, CentralConfig, CentralError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use gramgrid_net::tls::RequireGateway;
use gramgrid_net::wallclock::WallClock;
use std::sync::Arc;

/// The whole router: the API (bearer tokens) and `POST /sync/v1/exchange` (gateway client
/// certificate, via [`RequireGateway`]: the gateway id never comes from the body).
pub fn router(central: Arc<Central>) -> Router {
    let sync = Router::new()
        .route(gramgrid_proto::wire::EXCHANGE_PATH, post(exchange))
        .layer(DefaultBodyLimit::max(gramgrid_proto::wire::MAX_BODY_BYTES))
        .with_state(Arc::clone(&central));
    api::router(central).merge(sync)
}

async fn exchange(
    State(central): State<Arc<Central>>,
    RequireGateway(gateway): RequireGateway,
    body: Bytes,
) -> Response {
    sync::exchange(&central, gateway, body).await
}

/// Serves `central` over TLS on `listener` until `shutdown` completes; delivers notifications
/// with `sender` meanwhile.
pub async fn serve(
    central: Arc<Central>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    sender: Arc<dyn notify::Sender>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let every = central.config().notify_every;
    let mut outbox_stopped = stopped.clone();
    let outbox = tokio::spawn(notify::run(
        Arc::clone(&central),
        sender,
        every,
        async move {
            let _ = outbox_stopped.wait_for(|s| *s).await;
        },
    ));
    let served = gramgrid_net::tls::serve(listener, tls, router(central), shutdown).await;
    let _ = stop.send(true);
    let _ = outbox.await;
    drop(stopped);
    served
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The central PKI could not be loaded from `pki_dir` (not initialised, or unreadable).
    #[error(
        "central PKI: {0}; run `gramgrid central init` first, or set pki_dir in the central config"
    )]
    Pki(#[from] gramgrid_net::pki::PkiError),
    /// The TLS server configuration could not be built from the PKI.
    #[error("TLS: {0}")]
    Tls(#[from] gramgrid_net::tls::TlsError),
    /// Central could not open its database (see [`Central::open`]).
    #[error(transparent)]
    Central(#[from] CentralError),
    /// The blocking task opening the storage failed (panicked or was cancelled), or the
    /// listener's local address could not be read.
    #[error("the storage could not be opened: {0}")]
    Join(String),
}

/// A central server running in this process.
pub struct Running {
    /// The address it listens on (useful with a `127.0.0.1:0` listener).
    pub addr: std::net::SocketAddr,
    /// The server's state, for calls that bypass HTTP (tests, the demo).
    pub central: Arc<Central>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and waits for the server to end.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Starts central on `listener` with `config` (database, PKI directory, tokens, notification log).
pub async fn start(
    config: CentralConfig,
    listener: tokio::net::TcpListener,
) -> Result<Running, StartError> {
    start_with_clock(config, listener, WallClock::System).await
}

/// As [`start`], with central reading "now" from `clock`.
pub async fn start_with_clock(
    config: CentralConfig,
    listener: tokio::net::TcpListener,
    clock: WallClock,
) -> Result<Running, StartError> {
    let pki = gramgrid_net::pki::CentralPki::load(&config.pki_dir)?;
    let tls = gramgrid_net::tls::server_config(&pki)?;
    let sender = Arc::new(notify::LogFileSender {
        path: config.notifications_log.clone(),
    });
    let central = tokio::task::spawn_blocking(move || Central::open_with_clock(config, clock))
        .await
        .map_err(|e| StartError::Join(e.to_string()))??;
    let central = Arc::new(central);
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Join(e.to_string()))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        Arc::clone(&central),
        listener,
        tls,
        sender,
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(Running {
        addr,
        central,
        stop: Some(stop),
        task,
    })
}
