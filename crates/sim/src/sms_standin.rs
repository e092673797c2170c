//! A local stand-in for an HTTP SMS gateway: it takes `[sms]` requests over HTTPS on loopback,
//! records them, answers like a provider (accepted with a message id, refused, server error,
//! throttled), and can post delivery receipts back to central.
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use gramgrid_net::pki::CentralPki;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The send endpoint's path.
pub const SEND_PATH: &str = "/v1/sms";

/// One request the stand-in accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The request body, as JSON.
    pub body: serde_json::Value,
    /// The credential header's value, if any.
    pub authorization: Option<String>,
    /// The provider's id for it.
    pub provider_id: String,
}

#[derive(Default)]
struct Book {
    accepted: Vec<Received>,
    /// Answers to give before accepting again (status codes), first first.
    scripted: VecDeque<u16>,
    refused: usize,
}

/// A running stand-in.
pub struct SmsStandIn {
    addr: std::net::SocketAddr,
    ca: PathBuf,
    book: Arc<Mutex<Book>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Why the stand-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    /// Its certificate could not be made.
    #[error("SMS stand-in certificate: {0}")]
    Pki(#[from] gramgrid_net::pki::PkiError),
    /// Its TLS config could not be built.
    #[error("SMS stand-in TLS: {0}")]
    Tls(#[from] gramgrid_net::tls::TlsError),
    /// It could not listen on loopback.
    #[error("SMS stand-in listener: {0}")]
    Io(#[from] std::io::Error),
}

impl SmsStandIn {
    /// Starts on 127.0.0.1 with a certificate under a new CA kept in `dir`.
    pub async fn start(dir: &Path) -> Result<SmsStandIn, StandInError> {
        let pki = CentralPki::init(dir, "https://127.0.0.1", &[])?;
        let tls = gramgrid_net::tls::server_config(&pki)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let book = Arc::new(Mutex::new(Book::default()));
        let router = Router::new()
            .route(SEND_PATH, post(send))
            .with_state(Arc::clone(&book));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(gramgrid_net::tls::serve(
            listener,
            gramgrid_net::tls::ServerTls::from(tls),
            router,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(SmsStandIn {
            addr,
            ca: pki.ca_cert_path(),
            book,
            stop: Some(stop),
        })
    }

    /// The URL for `[sms] url`.
    pub fn url(&self) -> String {
        format!("https://{}{SEND_PATH}", self.addr)
    }

    /// The CA file for `[sms] ca_file`.
    pub fn ca_file(&self) -> &Path {
        &self.ca
    }

    /// Makes the next requests fail with these statuses (e.g. 500, 429, 400), in order.
    pub fn answer_next(&self, statuses: &[u16]) {
        if let Ok(mut book) = self.book.lock() {
            book.scripted.extend(statuses);
        }
    }

    /// Every request accepted so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.book
            .lock()
            .map(|b| b.accepted.clone())
            .unwrap_or_default()
    }

    /// How many requests it refused (scripted answers given).
    pub fn refused(&self) -> usize {
        self.book.lock().map(|b| b.refused).unwrap_or_default()
    }
}

impl Drop for SmsStandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn send(
    State(book): State<Arc<Mutex<Book>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(mut book) = book.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Some(status) = book.scripted.pop_front() {
        book.refused += 1;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            Json(serde_json::json!({"error": "scripted answer"})),
        )
            .into_response();
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "the body is not JSON").into_response();
    };
    // A real provider refuses a message without its DLT ids.
    for field in ["to", "text", "sender", "template_id", "ref"] {
        if body
            .get(field)
            .and_then(|v| v.as_str())
            .is_none_or(str::is_empty)
        {
            return (StatusCode::BAD_REQUEST, format!("missing {field}")).into_response();
        }
    }
    let provider_id = format!("sim-{}", book.accepted.len() + 1);
    book.accepted.push(Received {
        body,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        provider_id: provider_id.clone(),
    });
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "message_id": provider_id, "status": "queued" })),
    )
        .into_response()
}

/// An `[sms]` config for this stand-in: every DLT template id (made up), no quiet hours (the demo
/// hands central's messages over at the end of its simulated days).
pub fn demo_config(standin: &SmsStandIn) -> gramgrid_central::notify::sms::SmsConfig {
    use gramgrid_core::message::{Kind, Language};
    let mut config = gramgrid_central::notify::sms::SmsConfig {
        url: standin.url(),
        ca_file: Some(standin.ca_file().to_path_buf()),
        sender_id: "GRMGRD".into(),
        entity_id: "1101000000000001".into(),
        quiet_hours: String::new(),
        ..Default::default()
    };
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        for (j, language) in Language::ALL.into_iter().enumerate() {
            config.dlt_template_ids.insert(
                format!("{}.{}", kind.as_str(), language.code()),
                format!("11070000000000{i:02}{j}"),
            );
        }
    }
    config
}
