//! Business events for the office (`GET /api/v1/flags`, the console's flags page): offline
//! overdrafts, double redemptions, refused records, decisions that do not replay, breaker holds,
//! what a gateway reports about itself (its disk below its reserve, a published record refused).
//! Recorded once per id; the kinds in [`URGENT_KINDS`] are marked urgent (someone must act:
//! disconnections wait for a release). Staff resolve a flag once, saying how; who and when are kept.
use super::db::Tx;
use super::{CentralError, Result};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::{from_ts, ts};
use serde::Serialize;

/// Flag kinds that are urgent: a gateway's breaker holds disconnections until someone releases
/// them; a gateway's disk is below its reserve and readings wait on the meters (a week at most).
pub(crate) const URGENT_KINDS: &[&str] = &["breaker_held", "readings_shed"];

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

/// A business event for the office.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// Unique id (the event's own, or made from it).
    pub id: String,
    /// What happened (`offline_overdraft`, `double_redemption`, `breaker_held`, ...).
    pub kind: String,
    /// The gateway it concerns, if any.
    pub gateway: Option<String>,
    /// The account it concerns, if any.
    pub account: Option<String>,
    /// When it happened (UTC).
    pub at: DateTime<Utc>,
    /// What happened, in words.
    pub detail: String,
    /// Someone must act.
    pub urgent: bool,
    /// Who resolved it (`staff:<name>`), when, and how; none while open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolution>,
}

/// How a flag was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// Who resolved it, as the audit names them.
    pub by: String,
    /// When (UTC).
    pub at: DateTime<Utc>,
    /// What was done, in their words.
    pub how: String,
}

/// Which flags [`list`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Every flag, oldest first.
    All,
    /// The open ones, newest first.
    Open,
    /// The resolved ones, newest first.
    Resolved,
}

/// The flags `which` selects.
pub fn list(tx: &mut dyn Tx, which: Which) -> Result<Vec<Flag>> {
    let filter = match which {
        Which::All => "ORDER BY at, id",
        Which::Open => "WHERE resolved_at IS NULL ORDER BY at DESC, id",
        Which::Resolved => "WHERE resolved_at IS NOT NULL ORDER BY at DESC, id",
    };
    tx.query(
        &format!("SELECT id, kind, gateway, account, at, detail, urgent, resolved_by, resolved_at, resolution FROM flags {filter}"),
        &[],
    )?
    .iter()
    .map(|r| {
        let resolved = match (r.opt_text(7)?, r.opt_int(8)?, r.opt_text(9)?) {
            (Some(by), Some(at), Some(how)) => Some(Resolution { by, at: from_ts(at), how }),
            _ => None,
        };
        Ok(Flag {
            id: r.text(0)?,
            kind: r.text(1)?,
            gateway: r.opt_text(2)?,
            account: r.opt_text(3)?,
            at: from_ts(r.int(4)?),
            detail: r.text(5)?,
            urgent: r.int(6)? != 0,
            resolved,
        })
    })
    .collect()
}

/// Marks flag `id` resolved by `by` at `at`, with what was done. Refused: an unknown flag, one
/// already resolved (its resolution stands), a blank or overlong note.
pub fn resolve(tx: &mut dyn Tx, id: &str, by: &str, how: &str, at: DateTime<Utc>) -> Result<()> {
    super::check_reason("the resolution", how)?;
    let changed = tx.execute(
        "UPDATE flags SET resolved_by = $2, resolved_at = $3, resolution = $4
         WHERE id = $1 AND resolved_at IS NULL",
        &[id.into(), by.into(), ts(at).into(), how.trim().into()],
    )?;
    if changed == 1 {
        return Ok(());
    }
    let exists = tx.query_int("SELECT COUNT(*) FROM flags WHERE id = $1", &[id.into()])?;
    Err(if exists == 0 {
        CentralError::NotFound(format!("no flag '{id}'"))
    } else {
        CentralError::Conflict(format!(
            "flag '{id}' was already resolved; its resolution stands"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_flag_is_resolved_once_with_who_when_and_how() {
        for t in crate::testing::backends() {
            let at = Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap();
            t.tx(move |tx| {
                flag(
                    tx,
                    "f1",
                    "double_redemption",
                    Some("gw-a"),
                    Some("A1"),
                    at,
                    "voucher twice",
                )?;
                flag(tx, "f2", "breaker_held", Some("gw-a"), None, at, "held")
            })
            .unwrap();
            t.tx(move |tx| resolve(tx, "f1", "staff:meera", "second credit reversed", at))
                .unwrap();
            let again = t.tx(move |tx| resolve(tx, "f1", "staff:ravi", "again", at));
            assert!(matches!(again, Err(CentralError::Conflict(_))), "{again:?}");
            let unknown = t.tx(move |tx| resolve(tx, "nope", "staff:ravi", "x", at));
            assert!(matches!(unknown, Err(CentralError::NotFound(_))));
            let blank = t.tx(move |tx| resolve(tx, "f2", "staff:ravi", "  ", at));
            assert!(matches!(blank, Err(CentralError::Invalid(_))));
            let open = t.tx(|tx| list(tx, Which::Open)).unwrap();
            assert_eq!(
                open.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
                ["f2"]
            );
            let resolved = t.tx(|tx| list(tx, Which::Resolved)).unwrap();
            assert_eq!(
                resolved[0].resolved,
                Some(Resolution {
                    by: "staff:meera".into(),
                    at,
                    how: "second credit reversed".into()
                })
            );
            assert_eq!(t.tx(|tx| list(tx, Which::All)).unwrap().len(), 2);
        }
    }
}
