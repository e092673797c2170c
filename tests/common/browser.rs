//! A real browser for the web pages' tests: Debian's chromium driven through chromedriver
//! (WebDriver, the `fantoccini` client), and what a person does with it (log in, follow a link,
//! submit a form, read the page, take a screenshot).
use super::village::free_port;
use super::Proc;
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver, or `None` (with a loud message) when it is not installed outside CI.
pub fn chromedriver() -> Option<PathBuf> {
    let path = PathBuf::from(CHROMEDRIVER);
    if path.exists() && Path::new(CHROMIUM).exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{CHROMEDRIVER} or {CHROMIUM} is missing in CI: tests/run installs the `chromium` and `chromium-driver` packages");
    }
    eprintln!(
        "\n!!!!! SKIPPED: chromium and chromedriver are not installed, so the web pages were NOT tested in a browser (apt-get install chromium chromium-driver) !!!!!\n"
    );
    None
}

/// Starts chromedriver on a free port and a headless chromium session that trusts only the
/// technician certificate's key (`spki`, as a technician trusts the fingerprint on the label).
pub async fn browser(driver: &Path, spki: &str, profile: &Path) -> (Proc, Client) {
    let port = free_port();
    let process = Proc::new(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let args = [
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        format!("--user-data-dir={}", profile.display()),
        format!("--ignore-certificate-errors-spki-list={spki}"),
    ];
    let capabilities = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a chromium session");
    (process, client)
}

/// Where the screenshots of `area` (technician, office, consumer) go: kept after the run for a
/// person to look at.
pub fn artefacts(area: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-artefacts")
        .join(area);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a screenshot of the page as `target/test-artefacts/{area}/{name}.png`.
pub async fn screenshot(client: &Client, area: &str, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(artefacts(area).join(format!("{name}.png")), png).unwrap();
}

/// Follows the link whose text is `text`.
pub async fn click_link(client: &Client, text: &str) {
    let link = client.find(Locator::LinkText(text)).await.unwrap();
    leave_page(client, link).await;
}

/// Clicks `element` and waits until the browser has left the page it was on: WebDriver may answer
/// the click before the next page replaced this one, and reading the page then reads the old one.
async fn leave_page(client: &Client, element: fantoccini::elements::Element) {
    let old_body = client.find(Locator::Css("body")).await.unwrap();
    element.click().await.unwrap();
    for _ in 0..100 {
        if old_body.text().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the browser stayed on its page after a click");
}

/// The page's text; a page still being replaced (no body yet, or a stale one) is read again.
pub async fn text(client: &Client) -> String {
    for _ in 0..50 {
        if let Ok(body) = client.find(Locator::Css("body")).await {
            if let Ok(text) = body.text().await {
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never settled");
}

/// Submits `form` and returns the text of the page it leads to. WebDriver may answer before the
/// browser has replaced the page, so the text is read again until it is not the form's page.
pub async fn submit(client: &Client, form: fantoccini::elements::Form) -> String {
    let before = text(client).await;
    form.submit().await.unwrap();
    for _ in 0..100 {
        let after = text(client).await;
        if after != before {
            return after;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page did not change after submitting its form:\n{before}");
}

/// Logs in through the login form at `{base}/login`; the text of the page it leads to.
pub async fn log_in(client: &Client, base: &str, (name, password): (&str, &str)) -> String {
    client.goto(&format!("{base}/login")).await.unwrap();
    let form = client.form(Locator::Css("form.card")).await.unwrap();
    form.set_by_name("name", name).await.unwrap();
    form.set_by_name("password", password).await.unwrap();
    submit(client, form).await
}

/// Presses the logout button in the page's header.
pub async fn log_out(client: &Client) {
    let button = client
        .find(Locator::Css("form.logout button"))
        .await
        .unwrap();
    leave_page(client, button).await;
}

/// Reloads `url` until its text contains `wanted` (each load keeps the session alive).
pub async fn page_until(
    client: &Client,
    url: &str,
    wanted: &str,
    limit: Duration,
    logs: &Path,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        client.goto(url).await.unwrap();
        let page = text(client).await;
        if page.contains(wanted) {
            return page;
        }
        if Instant::now() > deadline {
            panic!(
                "{url} never showed {wanted:?}; last page:\n{page}{}",
                crate::common::village::log_tails(logs)
            );
        }
        // Not faster: chromium and the page cost CPU that the emulated radio's reply windows need.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
/// The page's text once it contains `wanted` (after a click that loads another page), read again
/// for up to 10 s; the last text read if it never does.
pub async fn text_containing(client: &Client, wanted: &str) -> String {
    let mut page = String::new();
    for _ in 0..100 {
        page = text(client).await;
        if page.contains(wanted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    page
}
