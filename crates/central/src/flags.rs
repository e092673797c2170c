//! Business events for the office (`GET /api/v1/flags`): offline overdrafts, double redemptions,
//! refused records, decisions that do not replay, breaker holds. Recorded once per id; the kinds in
//! [`URGENT_KINDS`] are marked urgent (someone must act: disconnections wait for a release).
use super::db::Tx;
use super::Result;
use chrono::{DateTime, Utc};
use gramgrid_core::civil::ts;

/// Flag kinds that are urgent: a gateway's breaker holds disconnections until someone releases them.
pub(crate) const URGENT_KINDS: &[&str] = &["breaker_held"];

/// Records a business event for the office (once per id); a kind in [`URGENT_KINDS`] is urgent.
pub(crate) fn flag(
    tx: &mut dyn Tx,
    id: &str,
    kind: &str,
    gateway: Option<&str>,
    account: Option<&str>,
    at: DateTime<Utc>,
    detail: &str,
) -> Result<()> {
    let urgent = URGENT_KINDS.contains(&kind);
    let new = tx.execute(
        "INSERT INTO flags (id, kind, gateway, account, at, detail, urgent) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        &[id.into(), kind.into(), gateway.into(), account.into(), ts(at).into(), detail.into(), i64::from(urgent).into()],
    )?;
    if new == 1 {
        let event = crate::mqtt::Event::Flag {
            flag: id.to_owned(),
            kind: kind.to_owned(),
            gateway: gateway.map(str::to_owned),
            account: account.map(str::to_owned),
            urgent,
            detail: detail.to_owned(),
            at: crate::mqtt::rfc3339(at),
        };
        crate::mqtt::enqueue(tx, event, at)?;
    }
    if new == 1 && urgent {
        tracing::warn!(
            kind,
            gateway,
            account,
            detail,
            "urgent business event flagged"
        );
    } else if new == 1 {
        tracing::warn!(kind, gateway, account, detail, "business event flagged");
    }
    Ok(())
}
