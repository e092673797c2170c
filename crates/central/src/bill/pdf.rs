//! A bill page printed to PDF by headless chromium (`--print-to-pdf`), in a throwaway profile.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browsers tried, in order, when `GRAMGRID_CHROMIUM` does not name one.
const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// How long a print may take before the browser is stopped.
const PRINT_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a PDF was not made.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    /// No browser to print with.
    #[error("no chromium found (looked for {} on PATH; GRAMGRID_CHROMIUM may name one): install the `chromium` package (apt-get install chromium) to print bills to PDF, or write the page with --html and print it from a browser", BROWSERS.join(", "))]
    NoBrowser,
    /// The browser could not be run, or a file not written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The browser ran and made no PDF.
    #[error("{browser} did not print {pdf}: {detail}")]
    Failed {
        /// The browser run.
        browser: String,
        /// The PDF asked for.
        pdf: String,
        /// Its exit and the end of what it said.
        detail: String,
    },
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> PdfError {
    move |source| PdfError::Io { what, source }
}

/// The browser to print with: `GRAMGRID_CHROMIUM`, else the first of [`BROWSERS`] on `PATH`.
fn browser() -> Option<PathBuf> {
    if let Some(named) = std::env::var_os("GRAMGRID_CHROMIUM").filter(|n| !n.is_empty()) {
        return Some(PathBuf::from(named));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| BROWSERS.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Prints the self-contained HTML `page` to the PDF `pdf` (A4, as the page's print style says,
/// no header or footer) with headless chromium, in a throwaway directory for the page and the
/// browser's profile.
pub fn print_to_pdf(page: &str, pdf: &Path) -> Result<(), PdfError> {
    let browser = browser().ok_or(PdfError::NoBrowser)?;
    let pdf = std::path::absolute(pdf).map_err(io(format!("cannot find {}", pdf.display())))?;
    let scratch = tempfile::tempdir().map_err(io("cannot make a scratch directory".into()))?;
    let html = scratch.path().join("bill.html");
    std::fs::write(&html, page).map_err(io(format!("cannot write {}", html.display())))?;
    let profile = scratch.path().join("profile");
    let mut child = Command::new(&browser)
        .arg("--headless=new")
        .arg("--no-sandbox")
        .arg("--disable-gpu")
        .arg("--no-first-run")
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg("--no-pdf-header-footer")
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io(format!("cannot run {}", browser.display())))?;
    let deadline = Instant::now() + PRINT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut said = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
    }
    let printed = std::fs::metadata(&pdf).is_ok_and(|m| m.len() > 0);
    match status {
        Some(status) if status.success() && printed => Ok(()),
        status => {
            let tail: Vec<&str> = said.lines().rev().take(5).collect();
            let exit = status.map_or_else(
                || format!("stopped after {} s", PRINT_TIMEOUT.as_secs()),
                |s| s.to_string(),
            );
            Err(PdfError::Failed {
                browser: browser.display().to_string(),
                pdf: pdf.display().to_string(),
                detail: format!(
                    "{exit}; {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            })
        }
    }
}
