//! Guardrails in the store: protected accounts, the cut that opened a debt, the breaker's holds and
//! releases, the marks that make a wrong cut likely, and every relay decision's record.
use super::outbox::append_outbox;
use super::{from_ts, set_signed_state_in, signed_state_in, ts, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_core::breaker::Release;
use gramgrid_core::decision::DecisionRecord;
use gramgrid_core::ledger::EventKind;
use gramgrid_proto::wire::UplinkEvent;
use rusqlite::{params, OptionalExtension, Transaction};

/// `sync_state` keys of the marks (UTC seconds).
const POLICY_CHANGED_AT: &str = "policy_changed_at";
const DATABASE_RESTORED_AT: &str = "database_restored_at";
const CLOCK_JUMPED_AT: &str = "clock_jumped_at";
/// 1 while a clock that went back has not been trusted again.
const CLOCK_WENT_BACK: &str = "clock_went_back";
const LAST_SYNC_AT: &str = "last_sync_at";
/// The time of the last ledger check that failed; 0 after one that passed.
const LEDGER_INCONSISTENT_AT: &str = "ledger_inconsistent_at";

/// Events the breaker looks at (see `gramgrid_core::breaker::PassFacts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardMarks {
    /// A published policy replaced an earlier one.
    pub policy_changed_at: Option<DateTime<Utc>>,
    /// Central found this database restored or replaced.
    pub database_restored_at: Option<DateTime<Utc>>,
    /// The clock was last set right after it had gone backwards.
    pub clock_jumped_at: Option<DateTime<Utc>>,
    /// The last exchange with central.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// The last ledger check failed at this time (None: it passed, or none ran).
    pub ledger_inconsistent_at: Option<DateTime<Utc>>,
}

/// A breaker hold: the disconnections of one pass, held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPass {
    /// Unique id (`<gateway>:hold:<unix seconds>`).
    pub id: String,
    /// When the pass ran.
    pub at: DateTime<Utc>,
    /// The accounts whose disconnection it held.
    pub accounts: Vec<String>,
    /// Why, in words.
    pub reasons: Vec<String>,
    /// Who released it, why and when, if released.
    pub released: Option<(String, String, DateTime<Utc>)>,
    /// When a pass used the release.
    pub used_at: Option<DateTime<Utc>>,
}

pub(super) fn mark_in(tx: &Transaction<'_>, key: &str, at: DateTime<Utc>) -> Result<()> {
    set_signed_state_in(tx, key, ts(at))
}

/// Notes that a published policy changed the policy in force (called when a policy record is
/// applied): it replaces an earlier published one, or the config file's on a gateway that has
/// accounts to enforce it on. A new gateway's first policy (sent before its accounts) is no change.
pub(super) fn note_policy_change_in(tx: &Transaction<'_>, at: DateTime<Utc>) -> Result<()> {
    let (earlier, accounts): (i64, i64) = tx.query_row(
        "SELECT (SELECT COUNT(*) FROM published_config WHERE kind = 'policy'),
                (SELECT COUNT(*) FROM accounts)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if earlier > 0 || accounts > 0 {
        mark_in(tx, POLICY_CHANGED_AT, at)?;
    }
    Ok(())
}

/// Notes that central found this database restored or replaced.
pub(super) fn note_restored_in(tx: &Transaction<'_>, at: DateTime<Utc>) -> Result<()> {
    mark_in(tx, DATABASE_RESTORED_AT, at)
}

/// Notes the end of an exchange with central.
pub(super) fn note_sync_in(tx: &Transaction<'_>, at: DateTime<Utc>) -> Result<()> {
    mark_in(tx, LAST_SYNC_AT, at)
}

/// Sets or clears an account's protection.
pub(super) fn set_protection_in(
    tx: &Transaction<'_>,
    account: &str,
    reason: Option<&str>,
) -> Result<()> {
    tx.execute(
        "UPDATE accounts SET protected = ?2 WHERE id = ?1",
        params![account, reason],
    )?;
    Ok(())
}

/// Records a supervisor's release of a hold; one made here is queued for central's audit.
pub(super) fn release_in(
    tx: &Transaction<'_>,
    id: &str,
    by: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let released: Option<Option<(String, i64)>> = tx
        .query_row(
            "SELECT released_by, released_at FROM breaker_holds WHERE id = ?1",
            [id],
            |r| {
                Ok(r.get::<_, Option<String>>(0)?
                    .zip(r.get::<_, Option<i64>>(1)?))
            },
        )
        .optional()?;
    match released {
        None => Err(StoreError::UnknownHold(id.to_string())),
        Some(Some((by, at))) => Err(StoreError::HoldAlreadyReleased {
            id: id.to_string(),
            by,
            at: from_ts(at),
        }),
        Some(None) => {
            tx.execute(
                "UPDATE breaker_holds SET released_by = ?2, released_reason = ?3, released_at = ?4 WHERE id = ?1",
                params![id, by, reason, ts(at)],
            )?;
            Ok(())
        }
    }
}

/// Stores a relay decision (the command's or hold's id) with its record and queues it for central,
/// inside the caller's transaction. A decision stored before is not stored again.
pub(super) fn record_decision_in(
    tx: &Transaction<'_>,
    id: &str,
    record: &DecisionRecord,
) -> Result<()> {
    let body = serde_json::to_string(record).map_err(|e| StoreError::Encoding(e.to_string()))?;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO relay_decisions (id, account, at, record) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![id, record.account, ts(record.at), body])?;
    if inserted > 0 {
        append_outbox(
            tx,
            &UplinkEvent::Decision {
                id: id.to_string(),
                account: record.account.clone(),
                at: record.at,
                record: body,
            },
        )?;
    }
    Ok(())
}

fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

impl Store {
    /// The marks the breaker looks at.
    pub fn guard_marks(&mut self) -> Result<GuardMarks> {
        let tx = self.conn.transaction()?;
        let mark = |key| -> Result<Option<DateTime<Utc>>> {
            Ok(signed_state_in(&tx, key)?.filter(|t| *t != 0).map(from_ts))
        };
        let marks = GuardMarks {
            policy_changed_at: mark(POLICY_CHANGED_AT)?,
            database_restored_at: mark(DATABASE_RESTORED_AT)?,
            clock_jumped_at: mark(CLOCK_JUMPED_AT)?,
            last_sync_at: mark(LAST_SYNC_AT)?,
            ledger_inconsistent_at: mark(LEDGER_INCONSISTENT_AT)?,
        };
        tx.commit()?;
        Ok(marks)
    }

    /// Notes that the clock reads before its high-water mark: it went back (a Pi booted at an old
    /// saved time). The mark the breaker reads is set when the clock is right again.
    pub fn note_clock_went_back(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        set_signed_state_in(&tx, CLOCK_WENT_BACK, 1)?;
        tx.commit()?;
        Ok(())
    }

    /// On a trusted clock reading `now`: if it had gone back, it is right again from now, and the
    /// breaker holds disconnections for a while from this instant (a wrong clock's own readings
    /// cannot date it).
    pub fn note_clock_trusted(&mut self, now: DateTime<Utc>) -> Result<()> {
        let tx = self.conn.transaction()?;
        if signed_state_in(&tx, CLOCK_WENT_BACK)? == Some(1) {
            set_signed_state_in(&tx, CLOCK_WENT_BACK, 0)?;
            mark_in(&tx, CLOCK_JUMPED_AT, now)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Records the outcome of a ledger check (`gateway verify`): disconnections are held while the
    /// last one failed.
    pub fn note_ledger_check(&mut self, consistent: bool, at: DateTime<Utc>) -> Result<()> {
        let tx = self.conn.transaction()?;
        set_signed_state_in(
            &tx,
            LEDGER_INCONSISTENT_AT,
            if consistent { 0 } else { ts(at) },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Why the account is protected, if it is.
    pub fn protection(&self, account: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT protected FROM accounts WHERE id = ?1",
                [account],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Protects an account (technician or test; central's records do the same through sync).
    pub fn set_protection(&mut self, account: &str, reason: Option<&str>) -> Result<()> {
        let tx = self.conn.transaction()?;
        set_protection_in(&tx, account, reason)?;
        tx.commit()?;
        Ok(())
    }

    /// The cut that opened the account's current debt: when, and how far below the threshold.
    pub fn cut(&self, account: &str) -> Result<Option<(DateTime<Utc>, i64)>> {
        let row: Option<(Option<i64>, Option<i64>)> = self
            .conn
            .query_row(
                "SELECT cut_at, cut_debt_paise FROM accounts WHERE id = ?1",
                [account],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(at, debt)| Some((from_ts(at?), debt?))))
    }

    /// Records (or, with None, ends) the cut that opened the account's debt.
    pub fn set_cut(&mut self, account: &str, cut: Option<(DateTime<Utc>, i64)>) -> Result<()> {
        self.conn.execute(
            "UPDATE accounts SET cut_at = ?2, cut_debt_paise = ?3 WHERE id = ?1",
            params![account, cut.map(|c| ts(c.0)), cut.map(|c| c.1)],
        )?;
        Ok(())
    }

    /// Recharges recorded for the account after `since`: their total and the latest one's time.
    pub fn recharged_since(
        &self,
        account: &str,
        since: DateTime<Utc>,
    ) -> Result<(i64, Option<DateTime<Utc>>)> {
        let (total, latest): (i64, Option<i64>) = self.conn.query_row(
            "SELECT COALESCE(SUM(amount_paise), 0), MAX(at) FROM ledger_events
             WHERE account = ?1 AND kind = ?2 AND at > ?3",
            params![account, EventKind::Recharge.as_str(), ts(since)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((total, latest.map(from_ts)))
    }

    /// When the first account served here was opened (the start of the breaker's baseline).
    pub fn first_account_at(&self) -> Result<Option<DateTime<Utc>>> {
        let at: Option<i64> =
            self.conn
                .query_row("SELECT MIN(created_at) FROM accounts", [], |r| r.get(0))?;
        Ok(at.map(from_ts))
    }

    /// Stores a relay decision that queued no command (a protected account left on), once per id.
    pub fn record_decision(&mut self, id: &str, record: &DecisionRecord) -> Result<()> {
        let tx = self.conn.transaction()?;
        record_decision_in(&tx, id, record)?;
        tx.commit()?;
        Ok(())
    }

    /// Meters sent a disconnect command per local day from `first` to `last` (inclusive), oldest
    /// first; a meter commanded twice in a day counts once.
    pub fn disconnects_per_day(
        &self,
        first: chrono::NaiveDate,
        last: chrono::NaiveDate,
    ) -> Result<Vec<usize>> {
        let from = gramgrid_core::civil::start_of_local_day(first);
        let to = gramgrid_core::civil::start_of_local_day(last + chrono::Duration::days(1));
        let mut statement = self.conn.prepare_cached(
            "SELECT created_at, meter FROM relay_commands WHERE action = 'disconnect' AND created_at >= ?1 AND created_at < ?2",
        )?;
        let days = (last - first).num_days().max(-1) + 1;
        let mut counts = vec![0usize; usize::try_from(days).unwrap_or(0)];
        let mut seen = std::collections::HashSet::new();
        let rows = statement.query_map(params![ts(from), ts(to)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (at, meter) = row?;
            let day = gramgrid_core::civil::local_date(from_ts(at));
            if !seen.insert((day, meter)) {
                continue;
            }
            if let Some(count) = usize::try_from((day - first).num_days())
                .ok()
                .and_then(|i| counts.get_mut(i))
            {
                *count += 1;
            }
        }
        Ok(counts)
    }

    /// Stores a held pass and the decisions it held (each with its record), queues them for
    /// central, in one transaction.
    pub fn record_hold(
        &mut self,
        hold: &HeldPass,
        decisions: &[(String, DecisionRecord)],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        let encode = |v: &Vec<String>| {
            serde_json::to_string(v).map_err(|e| StoreError::Encoding(e.to_string()))
        };
        tx.execute(
            "INSERT INTO breaker_holds (id, at, accounts, reasons) VALUES (?1, ?2, ?3, ?4)",
            params![
                hold.id,
                ts(hold.at),
                encode(&hold.accounts)?,
                encode(&hold.reasons)?
            ],
        )?;
        for (id, record) in decisions {
            record_decision_in(&tx, id, record)?;
        }
        append_outbox(
            &tx,
            &UplinkEvent::BreakerHeld {
                id: hold.id.clone(),
                at: hold.at,
                accounts: hold.accounts.clone(),
                reasons: hold.reasons.clone(),
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Breaker holds, newest first (at most `limit`).
    pub fn holds(&self, limit: usize) -> Result<Vec<HeldPass>> {
        let mut statement = self.conn.prepare(
            "SELECT id, at, accounts, reasons, released_by, released_reason, released_at, used_at
             FROM breaker_holds ORDER BY at DESC, id DESC LIMIT ?1",
        )?;
        let rows = statement.query_map([limit as i64], |r| {
            let released = match (
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ) {
                (Some(by), reason, Some(at)) => Some((by, reason.unwrap_or_default(), from_ts(at))),
                _ => None,
            };
            Ok(HeldPass {
                id: r.get(0)?,
                at: from_ts(r.get(1)?),
                accounts: json_list(&r.get::<_, String>(2)?),
                reasons: json_list(&r.get::<_, String>(3)?),
                released,
                used_at: r.get::<_, Option<i64>>(7)?.map(from_ts),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A supervisor at the gateway releases a hold: audited, and queued for central.
    pub fn release_hold(
        &mut self,
        id: &str,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        release_in(&tx, id, by, reason, at)?;
        append_outbox(
            &tx,
            &UplinkEvent::BreakerReleased {
                hold_id: id.to_string(),
                by: by.to_string(),
                reason: reason.to_string(),
                at,
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The newest released hold no pass has used yet, as the breaker takes it.
    pub fn unused_release(&self) -> Result<Option<Release>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, accounts FROM breaker_holds WHERE released_at IS NOT NULL AND used_at IS NULL
                 ORDER BY released_at DESC LIMIT 1",
                [],
                |r| {
                    Ok(Release {
                        hold_id: r.get(0)?,
                        accounts: json_list(&r.get::<_, String>(1)?).into_iter().collect(),
                    })
                },
            )
            .optional()?)
    }

    /// Marks a released hold as used: a release serves one pass, never more.
    pub fn use_release(&mut self, id: &str, at: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "UPDATE breaker_holds SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL",
            params![id, ts(at)],
        )?;
        Ok(())
    }

    /// A recorded decision that no longer replays to the same outcome: flagged for the office
    /// (an anomaly central shows among its flags), once per decision.
    pub fn flag_replay_mismatch(
        &mut self,
        decision_id: &str,
        detail: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        append_outbox(
            &tx,
            &UplinkEvent::Anomaly {
                meter: None,
                kind: "replay_mismatch".into(),
                detail: format!("decision {decision_id}: {detail}"),
                at,
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The account's relay decisions, newest first: all of them (at most `limit`), or with `at`
    /// the one in force then (the newest at or before it).
    pub fn decisions(
        &self,
        account: &str,
        at: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<(String, DecisionRecord)>> {
        let (limit, before) = match at {
            Some(at) => (1, ts(at)),
            None => (limit, i64::MAX),
        };
        let mut statement = self.conn.prepare(
            "SELECT id, record FROM relay_decisions WHERE account = ?1 AND at <= ?2
             ORDER BY at DESC, id DESC LIMIT ?3",
        )?;
        let rows = statement.query_map(params![account, before, limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row?;
            let record =
                serde_json::from_str(&body).map_err(|e| StoreError::Encoding(e.to_string()))?;
            out.push((id, record));
        }
        Ok(out)
    }
}
