//! Real TLS on 127.0.0.1: who gets through the central listener, and as whom.
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{Duration as Days, Utc};
use gramgrid_net::pki::{CentralPki, GatewayBundle};
use gramgrid_net::tls::{self, ClientError, HttpsClient, PeerGateway, RequireGateway};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(10);

/// The pattern the sync endpoint follows: the gateway named in the path must be the one in the
/// certificate, or the answer is 403.
async fn own_data(
    RequireGateway(caller): RequireGateway,
    Path(gateway): Path<String>,
) -> (StatusCode, String) {
    if caller == gateway {
        (StatusCode::OK, format!("data of {gateway}"))
    } else {
        (
            StatusCode::FORBIDDEN,
            format!("{caller} may not touch {gateway}"),
        )
    }
}

fn router() -> Router {
    Router::new()
        .route("/public", get(|| async { "public ok" }))
        .route(
            "/whoami",
            get(|RequireGateway(id): RequireGateway| async move { id }),
        )
        .route(
            "/peer",
            get(|Extension(peer): Extension<PeerGateway>| async move { format!("{:?}", peer.0) }),
        )
        .route("/test/{gateway}", get(own_data))
        .route(
            "/echo",
            post(|body: axum::body::Bytes| async move { body.to_vec() }),
        )
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(pki: &CentralPki) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = tls::server_config(pki).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tls::serve(listener, config, router(), async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(T, self.task)
            .await
            .expect("server stops when the shutdown future completes")
            .unwrap()
            .unwrap();
    }
}

fn new_pki() -> (tempfile::TempDir, CentralPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = CentralPki::init(&dir.path().join("pki"), "https://127.0.0.1:8443", &[]).unwrap();
    (dir, pki)
}

fn client_for(bundle: &GatewayBundle, url: &str) -> HttpsClient {
    HttpsClient::new(tls::client_config(bundle).unwrap(), url).unwrap()
}

/// A client with no certificate that trusts the central CA (as the utility's API clients do).
fn anonymous_client(pki: &CentralPki, url: &str) -> HttpsClient {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.ca_cert_path()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    HttpsClient::new(Arc::new(config), url).unwrap()
}

fn assert_tls_refused(result: Result<(StatusCode, Vec<u8>), ClientError>, needle: &str) {
    match result {
        Err(ClientError::TlsHandshake { reason, .. }) => {
            assert!(
                reason.to_lowercase().contains(needle),
                "reason '{reason}' should mention '{needle}'"
            )
        }
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn valid_gateway_gets_through_and_handler_sees_its_id() {
    let (_dir, pki) = new_pki();
    let server = Server::start(&pki).await;
    pki.add_gateway("village-a", 30).unwrap();
    // The gateway side starts from bundle.toml, as its config points to it.
    let bundle = GatewayBundle::load(&pki.bundle_path("village-a")).unwrap();
    assert_eq!(bundle.central_url, "https://127.0.0.1:8443");
    let client = client_for(&bundle, &server.url());

    let (status, body) = client.get("/whoami", T).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"village-a");
    let (status, body) = client.get("/test/village-a", T).await.unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"data of village-a"[..])
    );
    let (status, body) = client
        .post("/echo", "application/octet-stream", vec![1, 2, 3], T)
        .await
        .unwrap();
    assert_eq!((status, body), (StatusCode::OK, vec![1, 2, 3]));
    server.stop().await;
}

#[tokio::test]
async fn gateway_b_presents_as_b_and_cannot_touch_a() {
    let (_dir, pki) = new_pki();
    let server = Server::start(&pki).await;
    pki.add_gateway("village-a", 30).unwrap();
    let b = pki.add_gateway("village-b", 30).unwrap();
    let client = client_for(&b, &server.url());

    let (status, body) = client.get("/whoami", T).await.unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"village-b"[..])
    );
    let (status, body) = client.get("/test/village-a", T).await.unwrap();
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let err = tls::into_success((status, body)).unwrap_err();
    assert!(matches!(
        err,
        ClientError::Status {
            status: StatusCode::FORBIDDEN,
            ..
        }
    ));
    let (status, _) = client.get("/test/village-b", T).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn client_cert_from_another_ca_is_refused_at_the_handshake() {
    let (_dir, pki) = new_pki();
    let (_other_dir, other) = new_pki();
    let server = Server::start(&pki).await;
    // Same gateway name, same shape, wrong CA. The client must trust the real server to get as
    // far as presenting its certificate, so swap in the right CA file.
    let mut rogue = other.add_gateway("village-a", 30).unwrap();
    rogue.ca = pki.ca_cert_path();
    let client = client_for(&rogue, &server.url());
    assert_tls_refused(client.get("/public", T).await, "unknownca");
    // The server is still serving others.
    let good = pki.add_gateway("village-a", 30).unwrap();
    let (status, _) = client_for(&good, &server.url())
        .get("/whoami", T)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn expired_client_cert_is_refused() {
    let (_dir, pki) = new_pki();
    let server = Server::start(&pki).await;
    let now = Utc::now();
    let expired = pki
        .add_gateway_valid("village-old", now - Days::days(60), now - Days::days(1))
        .unwrap();
    let client = client_for(&expired, &server.url());
    assert_tls_refused(client.get("/whoami", T).await, "expired");
    server.stop().await;
}

#[tokio::test]
async fn no_client_cert_gets_401_from_gateway_routes_but_public_routes_work() {
    let (_dir, pki) = new_pki();
    let server = Server::start(&pki).await;
    let client = anonymous_client(&pki, &server.url());

    let (status, body) = client.get("/public", T).await.unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"public ok"[..])
    );
    let (status, body) = client.get("/peer", T).await.unwrap();
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"None"[..]));
    let (status, body) = client.get("/whoami", T).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("client certificate"));
    let (status, _) = client.get("/test/village-a", T).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn client_refuses_a_server_not_signed_by_the_bundle_ca() {
    let (_dir, pki) = new_pki();
    let (_other_dir, other) = new_pki();
    // The server runs on the other PKI; the gateway's bundle trusts only its own CA.
    let server = Server::start(&other).await;
    let bundle = pki.add_gateway("village-a", 30).unwrap();
    let client = client_for(&bundle, &server.url());
    assert_tls_refused(client.get("/public", T).await, "unknownissuer");
    server.stop().await;
}

#[tokio::test]
async fn accept_loop_survives_garbage_and_half_open_connections() {
    let (_dir, pki) = new_pki();
    let server = Server::start(&pki).await;
    // Plain HTTP on the TLS port, then a connection that says nothing and is dropped.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(T, plain.read_to_end(&mut buf)).await;
    let silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    drop(silent);

    let bundle = pki.add_gateway("village-a", 30).unwrap();
    let (status, body) = client_for(&bundle, &server.url())
        .get("/whoami", T)
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"village-a"[..])
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_future_stops_the_server_and_the_client_sees_refused() {
    let (_dir, pki) = new_pki();
    let server = Server::start(&pki).await;
    let url = server.url();
    let bundle = pki.add_gateway("village-a", 30).unwrap();
    let client = client_for(&bundle, &url);
    assert_eq!(client.get("/whoami", T).await.unwrap().0, StatusCode::OK);
    // A client stuck before its handshake must not hold shutdown up for the handshake timeout.
    let _silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    match client.get("/whoami", T).await {
        Err(ClientError::ConnectRefused { .. }) => {}
        other => panic!("expected connection refused after shutdown, got {other:?}"),
    }
}

#[test]
fn gateway_id_comes_from_the_certificate_san_uri() {
    let (_dir, pki) = new_pki();
    let bundle = pki.add_gateway("village-a", 30).unwrap();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(&bundle.cert).unwrap();
    assert_eq!(
        tls::gateway_id_from_cert(&der).as_deref(),
        Some("village-a")
    );
    let server = rustls::pki_types::CertificateDer::from_pem_file(pki.server_cert_path()).unwrap();
    assert_eq!(tls::gateway_id_from_cert(&server), None);
    assert_eq!(tls::gateway_id_from_cert(b"not a certificate"), None);
}

#[tokio::test]
async fn client_times_out_on_a_server_that_never_answers() {
    // A listener that accepts and never speaks TLS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    });
    let (_dir, pki) = new_pki();
    let bundle = pki.add_gateway("village-a", 30).unwrap();
    let client = client_for(&bundle, &format!("https://127.0.0.1:{}", addr.port()));
    match client.get("/x", Duration::from_millis(300)).await {
        Err(ClientError::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    hold.abort();
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let (_dir, pki) = new_pki();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let entered_tx = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
    let slow = Router::new().route(
        "/slow",
        get(move || {
            let entered_tx = entered_tx.clone();
            async move {
                if let Some(tx) = entered_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                "finished"
            }
        }),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(tls::serve(
        listener,
        tls::server_config(&pki).unwrap(),
        slow,
        async move {
            let _ = stopped.await;
        },
    ));
    let bundle = pki.add_gateway("village-a", 30).unwrap();
    let client = client_for(&bundle, &url);
    let request = tokio::spawn(async move { client.get("/slow", T).await });
    entered_rx.await.unwrap();
    stop.send(()).unwrap();
    let (status, body) = request.await.unwrap().unwrap();
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"finished"[..])
    );
    tokio::time::timeout(T, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Silent connections from `addresses` source addresses (127.0.0.20 and up), `per_address` each.
async fn silent_connections(
    target: SocketAddr,
    addresses: u8,
    per_address: usize,
) -> Vec<tokio::net::TcpStream> {
    let mut open = Vec::new();
    for i in 0..per_address * usize::from(addresses) {
        let source = SocketAddr::from(([127, 0, 0, 20 + (i % usize::from(addresses)) as u8], 0));
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(source).unwrap();
        open.push(socket.connect(target).await.unwrap());
    }
    open
}

/// How many of `streams` the server has closed by now (well before any handshake time-out).
async fn closed_by_server(streams: &mut [tokio::net::TcpStream]) -> usize {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut byte = [0u8; 1];
    streams
        .iter_mut()
        .filter(|stream| matches!(stream.try_read(&mut byte), Ok(0)))
        .count()
}

/// An idle-connection flood: one address gets no more than its share of connections, a flood from
/// many addresses has its oldest silent handshakes dropped, and a real gateway gets through.
/// (`gramgrid bench flood` measures how long the real request takes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_flood_is_bounded_and_a_real_gateway_gets_through() {
    let (_dir, pki) = new_pki();
    let server = Server::start(&pki).await;
    let bundle = pki.add_gateway("village-a", 30).unwrap();
    let mut one_address = silent_connections(server.addr, 1, tls::MAX_PER_ADDRESS + 40).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closed = closed_by_server(&mut one_address).await;
    assert!(
        closed >= 40,
        "only {closed} of the 40 connections beyond one address's share were closed"
    );
    drop(one_address);
    let per_address = tls::MAX_PER_ADDRESS - 2;
    let mut many = silent_connections(server.addr, 4, per_address).await;
    let (status, _) = client_for(&bundle, &server.url())
        .get("/whoami", T)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let closed = closed_by_server(&mut many).await;
    // The real gateway's handshake took a place in the queue too, so one more silent one went.
    assert!(
        closed > 4 * per_address - tls::MAX_HANDSHAKES,
        "only {closed} of {} silent handshakes were evicted at once",
        4 * per_address - tls::MAX_HANDSHAKES
    );
    assert!(
        closed < 4 * per_address,
        "the newest silent handshakes wait for their time-out"
    );
    server.stop().await;
}
