//! `gramgrid central serve`: the API and the sync endpoint over TLS, plus the notification loop
//! and, with `[mqtt]` configured, the MQTT event publisher (`mqtt::run`).
use super::{
    api, console, consumer, mqtt, notify, push, sync, Central, CentralConfig, CentralError,
};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use gramgrid_net::pki::ListenerFiles;
use gramgrid_net::tls::{RequireGateway, ServerTls};
use gramgrid_net::wallclock::WallClock;
use std::sync::Arc;

/// The whole router: the API (bearer tokens), `POST /sync/v1/exchange` and the push channel
/// `GET /sync/v1/wait` (gateway client certificate, via [`RequireGateway`]: the gateway id never
/// comes from the body), the SMS receipts and the households' page under `/my/` (a signed link or a code).
pub fn router(central: Arc<Central>) -> Router {
    let sync = Router::new()
        .route(gramgrid_proto::wire::EXCHANGE_PATH, post(exchange))
        .route(gramgrid_proto::wire::WAIT_PATH, get(wait))
        .layer(DefaultBodyLimit::max(gramgrid_proto::wire::MAX_BODY_BYTES))
        .with_state(Arc::clone(&central));
    let receipts = Router::new()
        .route(RECEIPTS_PATH, post(sms_receipt))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(Arc::clone(&central));
    let households = consumer::router(Arc::clone(&central));
    api::router(Arc::clone(&central))
        .merge(console::router(central))
        .merge(sync)
        .merge(receipts)
        .merge(households)
}

/// Where the SMS provider posts delivery receipts.
pub const RECEIPTS_PATH: &str = "/sms/v1/receipts";

/// A delivery receipt as the provider posts it: the `ref` central gave with the message, and the
/// provider's status (`delivered`, or anything else: `failed`, `undelivered`, `expired`, ...).
#[derive(Debug, serde::Deserialize)]
struct Receipt {
    #[serde(rename = "ref")]
    reference: String,
    status: String,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct ReceiptQuery {
    token: Option<String>,
}

async fn sms_receipt(
    State(central): State<Arc<Central>>,
    axum::extract::Query(query): axum::extract::Query<ReceiptQuery>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or(query.token)
        .unwrap_or_default();
    let reply = |status: StatusCode, message: String| {
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    };
    if !central.receipt_token_matches(&presented) {
        return reply(
            StatusCode::UNAUTHORIZED,
            "unknown receipt token: the provider must present [sms] receipt_token_file's secret"
                .into(),
        );
    }
    let receipt: Receipt = match serde_json::from_slice(&body) {
        Ok(receipt) => receipt,
        Err(error) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("a receipt is JSON {{\"ref\": ID, \"status\": \"delivered\"|\"failed\", \"error\": TEXT}}: {error}"),
            )
        }
    };
    let delivered = receipt.status.eq_ignore_ascii_case("delivered");
    match notify::record_receipt(&central, &receipt.reference, delivered, receipt.error).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => api::ApiError(error).into_response(),
    }
}

async fn exchange(
    State(central): State<Arc<Central>>,
    RequireGateway(gateway): RequireGateway,
    body: Bytes,
) -> Response {
    sync::exchange(&central, gateway, body).await
}

async fn wait(
    State(central): State<Arc<Central>>,
    RequireGateway(gateway): RequireGateway,
    Query(query): Query<push::WaitQuery>,
) -> Response {
    push::wait(&central, gateway, query).await
}

/// Serves `central` over TLS on `listener` until `shutdown` completes; delivers notifications
/// with `sender` meanwhile.
pub async fn serve(
    central: Arc<Central>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    sender: Arc<dyn notify::Sender>,
    rendering: notify::Rendering,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let tls = ServerTls::from(tls);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut crl_stopped = stopped.clone();
    let files = ListenerFiles::in_dir(&central.config().pki_dir);
    let crl = tokio::spawn(watch_revocations(files, tls.clone(), async move {
        let _ = crl_stopped.wait_for(|s| *s).await;
    }));
    let every = central.config().notify_every;
    let mut outbox_stopped = stopped.clone();
    let outbox = tokio::spawn(notify::run(
        Arc::clone(&central),
        sender,
        rendering,
        every,
        async move {
            let _ = outbox_stopped.wait_for(|s| *s).await;
        },
    ));
    let mut mqtt_stopped = stopped.clone();
    let mqtt = tokio::spawn(mqtt::run(Arc::clone(&central), async move {
        let _ = mqtt_stopped.wait_for(|s| *s).await;
    }));
    let mut watchdog_stopped = stopped.clone();
    let watchdog = tokio::spawn(systemd_watchdog(Arc::clone(&central), async move {
        let _ = watchdog_stopped.wait_for(|s| *s).await;
    }));
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    let closing = Arc::clone(&central);
    let shutdown = async move {
        shutdown.await;
        closing.close();
    };
    let served = gramgrid_net::tls::serve(listener, tls, router(central), shutdown).await;
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    let _ = stop.send(true);
    let _ = watchdog.await;
    let _ = outbox.await;
    let _ = mqtt.await;
    let _ = crl.await;
    drop(stopped);
    served
}

/// Tells systemd (`Type=notify`) how the server stands; a no-op outside systemd.
fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(error) = sd_notify::notify(false, state) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

/// How long the database may take to answer the watchdog's query.
const DATABASE_ANSWER: std::time::Duration = std::time::Duration::from_secs(20);

/// Pings systemd's watchdog (`WatchdogSec=`) every half period while the database answers a query
/// in time, so a server whose database hangs is restarted; returns at once without a watchdog.
async fn systemd_watchdog(central: Arc<Central>, stop: impl std::future::Future<Output = ()>) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = std::time::Duration::from_micros(usec) / 2;
    tokio::pin!(stop);
    loop {
        let query = central.db().transaction(|tx| tx.query_int("SELECT 1", &[]));
        match tokio::time::timeout(DATABASE_ANSWER, query).await {
            Ok(Ok(_)) => notify_systemd(&[sd_notify::NotifyState::Watchdog]),
            Ok(Err(error)) => tracing::error!(%error, "the database does not answer: not pinging systemd's watchdog"),
            Err(_) => tracing::error!("the database did not answer within {DATABASE_ANSWER:?}: not pinging systemd's watchdog"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// How often the listener looks for a new revocation list (`central revoke-gateway`).
pub const REVOCATION_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Reloads the TLS settings whenever the revocation list changes, so a revoked gateway is refused
/// at its next handshake without a restart. A list that does not load is logged and the settings
/// in use are kept.
async fn watch_revocations(
    files: ListenerFiles,
    tls: ServerTls,
    stop: impl std::future::Future<Output = ()>,
) {
    let stamp = |path: &std::path::Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut seen = stamp(&files.crl);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(REVOCATION_CHECK) => {}
        }
        let now = stamp(&files.crl);
        if now == seen {
            continue;
        }
        seen = now;
        match gramgrid_net::tls::server_config_from_files(&files) {
            Ok(config) => {
                tls.replace(config);
                tracing::warn!(crl = %files.crl.display(), "revocation list reloaded: revoked gateways are refused from now on");
            }
            Err(error) => {
                tracing::error!(%error, "the new revocation list does not load; the previous one stays in force")
            }
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS settings could not be built from the PKI directory's listener files (not
    /// initialised, unreadable or damaged).
    #[error("TLS from the PKI directory {1}: {0}; run `gramgrid central init` first, or set pki_dir in the central config")]
    Tls(gramgrid_net::tls::TlsError, String),
    /// Central could not open its database (see [`Central::open`]).
    #[error(transparent)]
    Central(#[from] CentralError),
    /// The blocking task opening the storage failed (panicked or was cancelled), or the
    /// listener's local address could not be read.
    #[error("the storage could not be opened: {0}")]
    Join(String),
    /// The SMS provider could not be set up from `[sms]`.
    #[error(transparent)]
    Sms(#[from] notify::sms::SetupError),
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
    // Only the listener's files: the CA key can stay offline.
    let files = ListenerFiles::in_dir(&config.pki_dir);
    let tls = gramgrid_net::tls::server_config_from_files(&files)
        .map_err(|error| StartError::Tls(error, config.pki_dir.display().to_string()))?;
    let (sender, rendering) =
        notify::sms::sender_for(config.sms.as_ref(), config.notifications_log.clone())?;
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
        rendering,
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
