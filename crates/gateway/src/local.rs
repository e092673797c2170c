//! The gateway's local entry point: a Unix socket in the data directory for technicians' commands
//! (`gramgrid gateway redeem CODE`) against the running daemon. One JSON line in, one JSON line out.
use crate::gateway::Gateway;
use crate::store::StoreError;
use crate::wakers::Wakers;
use chrono::{DateTime, Utc};
use gramgrid_net::wallclock::WallClock;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// A request to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalRequest {
    /// Redeem an offline voucher code.
    Redeem {
        /// The voucher code as printed for the consumer.
        code: String,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalResponse {
    /// Whether the request was carried out (for a voucher: accepted and credited).
    pub ok: bool,
    /// Text for the technician: the amount credited and the new balance in INR, or why not.
    pub message: String,
}

/// Where the socket lives for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("gateway.sock")
}

/// Serves the socket until `shutdown` completes; each redemption wakes the policy pass and the sync
/// client (`wakers`), so the household is reconnected and central hears of it at once.
pub async fn serve(
    path: PathBuf,
    gateway: Arc<Mutex<Gateway>>,
    clock: WallClock,
    wakers: Arc<Wakers>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // A socket left by a killed daemon would make bind fail; nothing else owns this path.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    // Whoever may connect may redeem vouchers: the daemon's user only.
    gramgrid_net::files::restrict(&path, gramgrid_net::files::OWNER_ONLY)?;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "local socket accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let (gateway, clock, wakers) = (gateway.clone(), clock.clone(), wakers.clone());
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &gateway, &clock, &wakers).await {
                tracing::warn!(%error, "local request failed");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

async fn answer(
    stream: tokio::net::UnixStream,
    gateway: &Mutex<Gateway>,
    clock: &WallClock,
    wakers: &Wakers,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read)
        .take(64 * 1024)
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<LocalRequest>(&line) {
        Ok(LocalRequest::Redeem { code }) => redeem(gateway, &code, clock.now(), wakers),
        Err(error) => LocalResponse {
            ok: false,
            message: format!("not a request this gateway understands: {error}"),
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

/// A voucher credited at the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    /// The account credited.
    pub account: String,
    /// The amount credited (paise).
    pub amount_paise: i64,
    /// The account's balance after it (paise).
    pub balance_paise: i64,
}

/// Redeems `code` at `now` and wakes the policy pass and the sync client (`wakers`); the error is a
/// sentence for the technician.
pub fn redeem_voucher(
    gateway: &Mutex<Gateway>,
    code: &str,
    now: DateTime<Utc>,
    wakers: &Wakers,
) -> Result<Redeemed, String> {
    let Ok(mut gateway) = gateway.lock() else {
        return Err("the gateway is not in a state to take requests; restart it".into());
    };
    let arrears_rules = gateway.policy().arrears.clone();
    match gateway.store().redeem_voucher(code, now) {
        Ok(voucher) => {
            wakers.money_arrived();
            tracing::info!(account = %voucher.account, amount_paise = voucher.amount_paise, "voucher redeemed");
            let balance_paise = gateway
                .store()
                .position(&voucher.account, &arrears_rules)
                .map(|p| p.balance_paise)
                .unwrap_or_default();
            Ok(Redeemed {
                account: voucher.account,
                amount_paise: voucher.amount_paise,
                balance_paise,
            })
        }
        // The store's message already says "voucher refused" / "voucher already redeemed".
        Err(error @ (StoreError::VoucherRefused(_) | StoreError::VoucherSpent { .. })) => {
            Err(capitalised(&error.to_string()))
        }
        Err(other) => Err(format!("Voucher not redeemed: {other}")),
    }
}

fn redeem(
    gateway: &Mutex<Gateway>,
    code: &str,
    now: DateTime<Utc>,
    wakers: &Wakers,
) -> LocalResponse {
    match redeem_voucher(gateway, code, now, wakers) {
        Ok(credited) => LocalResponse {
            ok: true,
            message: format!(
                "Voucher accepted: {} INR credited to account {}. Balance now {} INR.",
                gramgrid_core::tariff::rupees(credited.amount_paise),
                credited.account,
                gramgrid_core::tariff::rupees(credited.balance_paise)
            ),
        },
        Err(message) => LocalResponse { ok: false, message },
    }
}

/// Sends one request to a running daemon (the client side of `gramgrid gateway redeem`).
pub async fn request(path: &Path, request: &LocalRequest) -> std::io::Result<LocalResponse> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}

/// A message's first letter in upper case, as a sentence shown to a technician starts.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
