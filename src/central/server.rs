//! `gramgrid central serve`: the API and the sync endpoint over TLS, plus the notification loop.
use super::{api, notify, sync, Central};
use crate::tls::RequireGateway;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use std::sync::Arc;

/// The whole router: the API (bearer tokens) and `POST /sync/v1/exchange` (gateway client
/// certificate, via [`RequireGateway`]: the gateway id never comes from the body).
pub fn router(central: Arc<Central>) -> Router {
    let sync = Router::new()
        .route(crate::sync::wire::EXCHANGE_PATH, post(exchange))
        .layer(DefaultBodyLimit::max(crate::sync::wire::MAX_BODY_BYTES))
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
    let served = crate::tls::serve(listener, tls, router(central), shutdown).await;
    let _ = stop.send(true);
    let _ = outbox.await;
    drop(stopped);
    served
}
