//! Business events for the office (`GET /api/v1/flags`): offline overdrafts, double redemptions,
//! refused records. Recorded once per id.
use super::db::Tx;
use super::Result;
use chrono::{DateTime, Utc};
use gramgrid_core::civil::ts;

/// Records a business event for the office (once per id).
pub(crate) fn flag(
    tx: &mut dyn Tx,
    id: &str,
    kind: &str,
    gateway: Option<&str>,
    account: Option<&str>,
    at: DateTime<Utc>,
    detail: &str,
) -> Result<()> {
    let new = tx.execute(
        "INSERT INTO flags (id, kind, gateway, account, at, detail) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        &[id.into(), kind.into(), gateway.into(), account.into(), ts(at).into(), detail.into()],
    )?;
    if new == 1 {
        tracing::warn!(kind, gateway, account, detail, "business event flagged");
    }
    Ok(())
}
