//! The API audit: one row per write request that committed, naming the token that made it.
//!
//! The row is written in the transaction of the write itself, so a write is never stored without
//! its audit row, nor an audit row without its write. Refused requests write neither.
use super::db::Tx;
use super::{CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use serde::Serialize;

/// The most rows one audit page returns.
pub const MAX_AUDIT_LIMIT: i64 = 1000;

/// One write made through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Unique, and ordered by time of recording (a UUIDv7).
    pub id: String,
    /// When the write committed (UTC, whole seconds).
    pub at: DateTime<Utc>,
    /// The name of the API token that made it (`token-N`, `env`, or the config's `name`).
    pub token: String,
    /// The HTTP method.
    pub method: String,
    /// The request path, with its ids (e.g. `/api/v1/vouchers/voucher:1:…/cancel`).
    pub path: String,
}

/// Records a write in the caller's transaction.
pub fn record(
    tx: &mut dyn Tx,
    token: &str,
    method: &str,
    path: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO api_audit (id, at, token, method, path) VALUES ($1, $2, $3, $4, $5)",
        &[
            uuid::Uuid::now_v7().to_string().into(),
            ts(at).into(),
            token.into(),
            method.into(),
            path.into(),
        ],
    )?;
    Ok(())
}

/// The writes recorded at or after `since`, oldest first, at most `limit` (1 to
/// [`MAX_AUDIT_LIMIT`]).
pub fn list(tx: &mut dyn Tx, since: DateTime<Utc>, limit: i64) -> Result<Vec<AuditEntry>> {
    if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
        return Err(CentralError::Invalid(format!(
            "limit {limit} is out of range: give 1 to {MAX_AUDIT_LIMIT}"
        )));
    }
    tx.query(
        "SELECT id, at, token, method, path FROM api_audit WHERE at >= $1 ORDER BY at, id LIMIT $2",
        &[ts(since).into(), limit.into()],
    )?
    .iter()
    .map(|row| {
        Ok(AuditEntry {
            id: row.text(0)?,
            at: from_ts(row.int(1)?),
            token: row.text(2)?,
            method: row.text(3)?,
            path: row.text(4)?,
        })
    })
    .collect()
}
