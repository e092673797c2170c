//! TLS between a gateway and central on loopback sockets: a gateway's next connection resumes its
//! session and is still known by its certificate; a new revocation list ends its sessions; a kept
//! connection carries the next request, and one central closed is replaced without an error.
use super::*;
use crate::pki::CentralPki;
use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accepts one connection and answers the gateway id its certificate names, or `None` when the
/// handshake failed or carried no gateway certificate.
async fn accept_one(listener: &TcpListener, tls: &ServerTls) -> Option<String> {
    let (tcp, _) = listener.accept().await.ok()?;
    let mut stream = tokio_rustls::TlsAcceptor::from(tls.current())
        .accept(tcp)
        .await
        .ok()?;
    let id = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| gateway_id_from_cert(chain.first()?.as_ref()));
    // The session ticket goes out with the first data after the handshake.
    stream.write_all(b"ok").await.ok()?;
    stream.shutdown().await.ok()?;
    id
}

/// Connects as the gateway of `client` and reads to the end (taking the ticket), answering how the
/// handshake went.
async fn connect(client: &tokio_rustls::TlsConnector, port: u16) -> Option<HandshakeKind> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let name = ServerName::try_from("127.0.0.1").ok()?;
    let mut stream = client.connect(name, tcp).await.ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    stream.get_ref().1.handshake_kind()
}

#[tokio::test]
async fn a_gateway_resumes_its_session_is_still_named_and_loses_it_when_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let pki = CentralPki::init(&dir.path().join("pki"), "https://127.0.0.1:1", &[]).unwrap();
    let bundle = pki.add_gateway("village-a", 30).unwrap();
    let tls = ServerTls::from(server_config(&pki).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = tokio_rustls::TlsConnector::from(client_config(&bundle).unwrap());

    let mut kinds = Vec::new();
    for _ in 0..3 {
        let (named, kind) = tokio::join!(accept_one(&listener, &tls), connect(&client, port));
        assert_eq!(named.as_deref(), Some("village-a"));
        kinds.push(kind);
    }
    assert_eq!(
        kinds,
        [
            Some(HandshakeKind::Full),
            Some(HandshakeKind::Resumed),
            Some(HandshakeKind::Resumed)
        ]
    );

    // Revoked, and central reloads its settings: the session the gateway holds is no longer known,
    // and the full handshake it falls back to is refused.
    pki.revoke_gateway("village-a").unwrap();
    tls.replace(server_config(&pki).unwrap());
    let (named, _) = tokio::join!(accept_one(&listener, &tls), connect(&client, port));
    assert_eq!(
        named, None,
        "a revoked gateway must not get in on its old session"
    );
}

/// Central's HTTPS listener on a loopback port, answering `GET /port` with the caller's TCP port
/// (which tells connections apart); stops when `stop` is sent.
async fn port_echo(
    listener: TcpListener,
    pki: &CentralPki,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    use axum::extract::ConnectInfo;
    let router = axum::Router::new().route(
        "/port",
        axum::routing::get(
            |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move {
                peer.port().to_string()
            },
        ),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = server_config(pki).unwrap();
    let server = tokio::spawn(async move {
        let _ = serve(listener, config, router, async {
            let _ = stopped.await;
        })
        .await;
    });
    (stop, server)
}

#[tokio::test]
async fn a_kept_connection_carries_the_next_request_and_a_closed_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let pki = CentralPki::init(&dir.path().join("pki"), "https://127.0.0.1:1", &[]).unwrap();
    let bundle = pki.add_gateway("village-a", 30).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, server) = port_echo(listener, &pki).await;
    let url = format!("https://{addr}");
    let plain = HttpsClient::new(client_config(&bundle).unwrap(), &url).unwrap();
    let keeping = plain.clone().keeping_connections(Duration::from_secs(20));
    let port = |client: HttpsClient| async move {
        let (status, body) = client.get("/port", Duration::from_secs(5)).await.unwrap();
        assert!(status.is_success());
        String::from_utf8(body).unwrap()
    };

    let first = port(keeping.clone()).await;
    assert_eq!(
        port(keeping.clone()).await,
        first,
        "the kept connection is used"
    );
    assert_ne!(port(plain.clone()).await, port(plain.clone()).await);
    keeping.forget_connection();
    assert_ne!(
        port(keeping.clone()).await,
        first,
        "a forgotten connection is not"
    );

    // Central restarts: the kept connection is closed, and the next request still gets through.
    let kept = port(keeping.clone()).await;
    stop.send(()).unwrap();
    server.await.unwrap();
    let listener = TcpListener::bind(addr).await.unwrap();
    let (_stop, _server) = port_echo(listener, &pki).await;
    assert_ne!(port(keeping.clone()).await, kept);
}
