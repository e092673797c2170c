//! The summary's guardrail section: what the breakers held when the bad policy came, the protected
//! household, and the arrears recovered, read from the databases.
use super::{count, local, Run};
use gramgrid_core::ledger::{self, EventKind, LedgerEvent};
use rusqlite::Connection;
use serde::Serialize;

/// The guardrails at work in the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GuardrailSummary {
    /// The bad policy publish, if the run had one.
    pub bad_publish: Option<BadPublishSummary>,
    /// The protected household, if any.
    pub protected: Option<ProtectedSummary>,
    /// Arrears from post-paid and their recovery.
    pub arrears: ArrearsSummary,
}

/// The bad publish and both breakers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BadPublishSummary {
    /// When it was published, local time.
    pub at: String,
    /// Its disconnect threshold, in paise.
    pub threshold_paise: i64,
    /// Central's breaker held it: accounts it would newly put at or below the threshold, and the
    /// day's limit (an engineer released it anyway).
    pub central_held: Option<(usize, usize)>,
    /// Breaker holds the gateway stored while it was in force.
    pub gateway_holds: i64,
    /// The most accounts one of those holds held.
    pub gateway_held_accounts: usize,
    /// Why the gateway held them (the first hold's reasons).
    pub gateway_reasons: Vec<String>,
    /// Disconnect commands queued while it was in force (must be zero).
    pub disconnects_under_it: i64,
    /// When the office published the correction, local time.
    pub corrected_at: Option<String>,
}

/// The protected household.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProtectedSummary {
    /// Its account.
    pub account: String,
    /// Its balance reached the threshold (the gateway recorded the decision to leave it on).
    pub reached_threshold: bool,
    /// Disconnect commands queued for it (must be zero).
    pub disconnects: i64,
}

/// Arrears from post-paid, at the gateway.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ArrearsSummary {
    /// Households that brought arrears.
    pub households: usize,
    /// Their arrears, in paise.
    pub opening_paise: i64,
    /// Recovered from their recharges, in paise.
    pub recovered_paise: i64,
    /// Still owed, in paise.
    pub outstanding_paise: i64,
}

/// Reads the section from the gateway's and central's databases.
pub fn read(gateway: &Connection, run: &Run) -> rusqlite::Result<GuardrailSummary> {
    let scenes = &run.scenes;
    let bad_publish = match &scenes.bad_publish {
        Some(bad) => {
            let until = bad.corrected_at.unwrap_or(run.end).timestamp();
            let window = (bad.at.timestamp(), until);
            let mut holds = gateway.prepare(
                "SELECT accounts, reasons FROM breaker_holds WHERE at >= ?1 AND at < ?2 ORDER BY at",
            )?;
            let held: Vec<(Vec<String>, Vec<String>)> = holds
                .query_map(window, |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .map(|row| {
                    row.map(|(accounts, reasons)| {
                        (
                            serde_json::from_str(&accounts).unwrap_or_default(),
                            serde_json::from_str(&reasons).unwrap_or_default(),
                        )
                    })
                })
                .collect::<rusqlite::Result<_>>()?;
            Some(BadPublishSummary {
                at: local(bad.at),
                threshold_paise: bad.threshold_paise,
                central_held: bad.central_hold,
                gateway_holds: i64::try_from(held.len()).unwrap_or(i64::MAX),
                gateway_held_accounts: held.iter().map(|h| h.0.len()).max().unwrap_or(0),
                gateway_reasons: held.first().map(|h| h.1.clone()).unwrap_or_default(),
                disconnects_under_it: count(
                    gateway,
                    "SELECT COUNT(*) FROM relay_commands WHERE action = 'disconnect' AND created_at >= ?1 AND created_at < ?2",
                    window,
                )?,
                corrected_at: bad.corrected_at.map(local),
            })
        }
        None => None,
    };
    let protected = match &scenes.protected {
        Some(account) => Some(ProtectedSummary {
            account: account.clone(),
            reached_threshold: count(
                gateway,
                "SELECT COUNT(*) FROM relay_decisions WHERE account = ?1 AND id LIKE '%:protected:%'",
                [account],
            )? > 0,
            disconnects: count(
                gateway,
                "SELECT COUNT(*) FROM relay_commands c JOIN meters m ON m.id = c.meter
                 WHERE m.account = ?1 AND c.action = 'disconnect'",
                [account],
            )?,
        }),
        None => None,
    };
    Ok(GuardrailSummary {
        bad_publish,
        protected,
        arrears: arrears(gateway, run)?,
    })
}

/// Arrears and recovery per household, derived as the ledger derives them.
fn arrears(gateway: &Connection, run: &Run) -> rusqlite::Result<ArrearsSummary> {
    let mut events = gateway.prepare(
        "SELECT id, at, kind, amount_paise FROM ledger_events
         WHERE account = ?1 AND kind IN ('arrears', 'recharge')",
    )?;
    let mut summary = ArrearsSummary::default();
    for (account, _) in &run.scenes.arrears {
        let log: Vec<LedgerEvent> = events
            .query_map([account], |r| {
                Ok(LedgerEvent {
                    id: r.get(0)?,
                    account: account.clone(),
                    at: chrono::DateTime::from_timestamp(r.get(1)?, 0).unwrap_or_default(),
                    kind: EventKind::parse(&r.get::<_, String>(2)?)
                        .unwrap_or(EventKind::Adjustment),
                    amount_paise: r.get(3)?,
                    expires_at: None,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let owed = ledger::arrears(&log, &run.policy.arrears);
        summary.households += 1;
        summary.opening_paise += owed.opening_paise;
        summary.recovered_paise += owed.recovered_paise;
        summary.outstanding_paise += owed.outstanding_paise();
    }
    Ok(summary)
}
