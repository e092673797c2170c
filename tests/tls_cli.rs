//! `gramgrid central init` and `add-gateway` as an operator runs them.
use std::process::Command;

fn gramgrid(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gramgrid"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_then_add_gateway_writes_a_loadable_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let pki = pki.to_str().unwrap();
    let (ok, out, err) = gramgrid(&[
        "central",
        "init",
        "--dir",
        pki,
        "--url",
        "https://127.0.0.1:8443",
        "--name",
        "localhost",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("ca.pem"), "{out}");

    let (ok, _, err) = gramgrid(&["central", "init", "--dir", pki, "--url", "https://x"]);
    assert!(!ok);
    assert!(err.contains("refusing to overwrite"), "{err}");

    let (ok, out, err) = gramgrid(&[
        "central",
        "add-gateway",
        "--dir",
        pki,
        "--id",
        "village-a",
        "--days",
        "30",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("bundle.toml"), "{out}");
    let bundle = gramgrid_net::pki::GatewayBundle::load(
        &dir.path().join("pki/gateways/village-a/bundle.toml"),
    )
    .unwrap();
    assert_eq!(bundle.gateway_id, "village-a");
    assert_eq!(bundle.central_url, "https://127.0.0.1:8443");
    gramgrid_net::tls::client_config(&bundle).unwrap();

    let (ok, _, err) = gramgrid(&["central", "add-gateway", "--dir", pki, "--id", "a/b"]);
    assert!(!ok);
    assert!(err.contains("letters, digits"), "{err}");
}

fn ok(args: &[&str]) -> String {
    let (ok, out, err) = gramgrid(args);
    assert!(ok, "gramgrid {args:?}: {err}");
    out
}

/// Enrolment as the issue asks for it, each step a separate `gramgrid` process: the gateway makes
/// its key and sends only a signing request; the office signs it with the CA; central serves from
/// a PKI directory that holds no CA key; revoking the gateway makes the running central refuse
/// its handshake without a restart, while another gateway goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_enrols_by_signing_request_and_a_revoked_one_is_refused_at_the_handshake() {
    use gramgrid_proto::wire;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = |name: &str| d.join(name).to_str().unwrap().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    ok(&["central", "init", "--dir", &path("office"), "--url", &url]);
    // At the gateway: a key that never leaves it, and a request.
    let out = ok(&[
        "gateway",
        "request-certificate",
        "--id",
        "village-a",
        "--dir",
        &path("enrol"),
    ]);
    assert!(out.contains("gateway.csr"), "{out}");
    let csr = std::fs::read_to_string(d.join("enrol/gateway.csr")).unwrap();
    assert!(csr.contains("CERTIFICATE REQUEST") && !csr.contains("PRIVATE KEY"));
    // At the office: sign it. No private key is written there.
    ok(&[
        "central",
        "add-gateway",
        "--dir",
        &path("office"),
        "--id",
        "village-a",
        "--csr",
        &path("enrol/gateway.csr"),
    ]);
    assert!(!d.join("office/gateways/village-a/gateway.key").exists());
    for file in ["gateway.pem", "ca.pem", "bundle.toml"] {
        std::fs::copy(
            d.join("office/gateways/village-a").join(file),
            d.join("enrol").join(file),
        )
        .unwrap();
    }
    ok(&[
        "central",
        "add-gateway",
        "--dir",
        &path("office"),
        "--id",
        "village-b",
    ]);
    // The server's PKI directory: everything but the CA key.
    std::fs::create_dir(d.join("server")).unwrap();
    for file in ["ca.pem", "server.pem", "server.key", "pki.toml"] {
        std::fs::copy(d.join("office").join(file), d.join("server").join(file)).unwrap();
    }
    std::fs::write(
        d.join("central.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"sqlite:{}\"\npki_dir = {:?}\nnotifications_log = {:?}\nsecrets_key_file = {:?}\napi_tokens = [\"enrolment-test-token-0123\"]\n",
            path("central.db"), path("server"), path("notifications.log"), path("secrets.key")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(d.join("central.log")).unwrap();
    let _central = crate::common::Proc::new(
        Command::new(env!("CARGO_BIN_EXE_gramgrid"))
            .args(["central", "serve", "--config", &path("central.toml")])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let exchange = |bundle: &str| {
        let bundle = gramgrid_net::pki::GatewayBundle::load(std::path::Path::new(bundle)).unwrap();
        let client = gramgrid_net::tls::HttpsClient::new(
            gramgrid_net::tls::client_config(&bundle).unwrap(),
            &url,
        )
        .unwrap();
        let body = wire::encode(&wire::UploadRequest {
            protocol: wire::PROTOCOL_VERSION,
            sent_at: chrono::Utc::now(),
            priority: vec![],
            readings: None,
            downlink_applied: 0,
            identity: None,
            status: None,
        })
        .unwrap();
        async move {
            client
                .post(
                    wire::EXCHANGE_PATH,
                    wire::CONTENT_TYPE,
                    body,
                    std::time::Duration::from_secs(5),
                )
                .await
        }
    };
    let a = path("enrol/bundle.toml");
    let b = path("office/gateways/village-b/bundle.toml");
    let mut first = exchange(&a).await;
    for _ in 0..60 {
        if first.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        first = exchange(&a).await;
    }
    assert_eq!(first.unwrap().0, 200, "the CSR-enrolled gateway syncs");
    let out = ok(&[
        "central",
        "revoke-gateway",
        "--dir",
        &path("office"),
        "--id",
        "village-a",
    ]);
    assert!(out.contains("revoked"), "{out}");
    // Deploying the new list is copying one public file to the server.
    std::fs::copy(d.join("office/crl.pem"), d.join("server/crl.pem")).unwrap();
    let mut refused = None;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        if let Err(error) = exchange(&a).await {
            refused = Some(error);
            break;
        }
    }
    // With TLS 1.3 the server's verdict on a client certificate reaches the client as an alert
    // during the handshake or, depending on timing, as a connection closed on the first read; the
    // listener's log says why.
    assert!(
        refused.is_some(),
        "the revoked gateway was not refused within 10 s"
    );
    // The listener logs its reason when the handshake task ends, which may be just after the
    // client saw the connection close.
    let says_revoked = |log: &str| {
        log.lines()
            .any(|l| l.contains("TLS handshake refused") && l.to_lowercase().contains("revoked"))
    };
    let mut log = String::new();
    for _ in 0..40 {
        log = std::fs::read_to_string(d.join("central.log")).unwrap();
        if says_revoked(&log) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(says_revoked(&log), "{log}");
    assert_eq!(exchange(&b).await.unwrap().0, 200, "other gateways go on");
    // Revoking again changes nothing; an unknown gateway is a clear error.
    ok(&[
        "central",
        "revoke-gateway",
        "--dir",
        &path("office"),
        "--id",
        "village-a",
    ]);
    let (fine, _, err) = gramgrid(&[
        "central",
        "revoke-gateway",
        "--dir",
        &path("office"),
        "--id",
        "village-z",
    ]);
    assert!(!fine && err.contains("village-z"), "{err}");
}
