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
