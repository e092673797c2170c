//! TLS between a gateway and central on loopback sockets: a gateway's next connection resumes its
//! session and is still known by its certificate; a new revocation list ends its sessions.
use super::*;
use crate::pki::CentralPki;
use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
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
