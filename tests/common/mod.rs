//! Helpers shared by the integration tests.

pub mod browser;
pub mod village;

use gramgrid_air::air::{Air, AirConfig};
use gramgrid_air::pathloss::PathLossModel;

/// LoRaSim's urban log-distance model without shadowing, so received power is exact:
/// 14 dBm reaches SF7's -124 dBm at about 130 m. Keeps every frame record.
pub fn exact_air() -> Air {
    Air::new(AirConfig {
        seed: 1,
        path_loss: PathLossModel::LogDistance {
            d0_m: 40.0,
            pl_d0_db: 127.41,
            gamma: 2.08,
            shadowing_sigma_db: 0.0,
        },
        keep_records: true,
    })
}

/// A new, empty PostgreSQL database on the server of `admin_url` (a URL with rights to create
/// databases); its URL.
pub fn fresh_postgres(admin_url: &str) -> String {
    let name = format!("gg_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_url.to_owned();
    let create = name.clone();
    // The sync client runs its own runtime: keep it off the test's.
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {create}"))
            .unwrap();
    })
    .join()
    .unwrap();
    let base = admin_url.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

/// One HTTPS request to a central server, trusting its CA (`ca`, PEM) and sending the API token;
/// returns the status code and the body. Blocking, one connection per call.
pub fn api_call(
    url: &str,
    ca: &std::path::Path,
    token: &str,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> (u16, String) {
    let authorization = format!("Bearer {token}");
    let mut headers = vec![("Authorization", authorization.as_str())];
    if json_body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    https_request(url, ca, method, path, &headers, json_body.unwrap_or(""))
}

/// One HTTPS request to `url` (`https://HOST:PORT`) trusting only the CA in `ca` (PEM), with
/// `headers` and `body`; returns the status code and the body. Blocking, one connection per call.
pub fn https_request(
    url: &str,
    ca: &std::path::Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let addr = url.trim_start_matches("https://").trim_end_matches('/');
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let answer = https_exchange(
        url,
        ca,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) over TLS to `url`, trusting
/// only the CA in `ca`; the whole answer, headers included.
pub fn https_exchange(url: &str, ca: &std::path::Path, request: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr = url.trim_start_matches("https://").trim_end_matches('/');
    let host = addr.split(':').next().unwrap().to_string();
    let mut tls = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        ServerName::try_from(host).unwrap(),
    )
    .unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// Logs in to a technician app at `base` with a plain HTTPS client (no browser): the login form's
/// token, then the form; the session cookie's value.
pub fn technician_login(base: &str, ca: &std::path::Path, name: &str, password: &str) -> String {
    let (status, page) = https_request(base, ca, "GET", "/login", &[], "");
    assert_eq!(status, 200, "{page}");
    let token = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a login token in the form")
        .to_string();
    let body = format!("csrf={token}&name={name}&password={password}");
    let answer = https_exchange(
        base,
        ca,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {}\r\nCookie: gg_login={token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            base.trim_start_matches("https://"),
            body.len()
        ),
    );
    assert!(
        answer.starts_with("HTTP/1.1 303"),
        "login refused: {answer}"
    );
    answer
        .split("gg_session=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("a session cookie")
        .to_string()
}

/// A child process of a test, stopped when dropped: SIGTERM to it (or, with `group`, to the process
/// group it leads), up to five seconds to exit cleanly, then SIGKILL.
pub struct Proc {
    /// The child.
    pub child: std::process::Child,
    /// Whether the child leads its own process group (a shell line and what it started).
    pub group: bool,
}

impl Proc {
    /// Wraps a child that is stopped alone.
    pub fn new(child: std::process::Child) -> Proc {
        Proc {
            child,
            group: false,
        }
    }

    /// The first line the child prints on stdout (servers print their address there).
    pub fn first_line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(self.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        line
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let target = if self.group {
            format!("-{}", self.child.id())
        } else {
            self.child.id().to_string()
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &target])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
