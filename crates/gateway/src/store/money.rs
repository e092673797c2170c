//! Money events in the store: recording them durably and deriving an account's position.
use super::{from_ts, ts, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::Month;
use gramgrid_core::ledger::{self, ArrearsRule, EventKind, LastRecharge, LedgerEvent, Position};
use gramgrid_proto::wire::UplinkEvent;
use rusqlite::{params, OptionalExtension};

impl Store {
    /// Records a money event durably. Returns false if the same event was already recorded (so a
    /// retried recharge credits once); an id reused with different content is an error.
    pub fn record_event(&mut self, event: &LedgerEvent) -> Result<bool> {
        self.record_events(std::slice::from_ref(event))
            .map(|n| n == 1)
    }

    /// Records several money events made here in one durable transaction (each also queued for
    /// upload to central); returns how many were new.
    pub fn record_events(&mut self, events: &[LedgerEvent]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let added = insert_events_in(&tx, events, true)?;
        tx.commit()?;
        Ok(added)
    }

    /// Whether a money event with this id is recorded (a month already closed, a charge already made).
    pub fn has_event(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM ledger_events WHERE id = ?1",
                [id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// All money events of an account, in the order they were recorded.
    pub fn events(&self, account: &str) -> Result<Vec<LedgerEvent>> {
        let mut statement = self.conn.prepare(
            "SELECT id, account, at, kind, amount_paise, expires_at FROM ledger_events WHERE account = ?1 ORDER BY seq",
        )?;
        let rows = statement.query_map([account], event_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Energy charges (energy, time-of-day adjustment and duty) of all of an account's meters, from
    /// the segment totals.
    pub fn energy_charges(&self, account: &str, months: Option<(Month, Month)>) -> Result<i64> {
        let (from, to) = months.map_or((i64::MIN, i64::MAX), |(a, b)| (a.index(), b.index()));
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(s.energy_paise + s.tod_paise + s.duty_paise), 0) FROM segment_energy s JOIN meters m ON m.id = s.meter
             WHERE m.account = ?1 AND s.month BETWEEN ?2 AND ?3",
            params![account, from, to],
            |r| r.get(0),
        )?)
    }

    /// Energy charge with its time-of-day adjustment (without duty) of an account in one month: what
    /// the minimum charge is measured against.
    pub fn energy_charge_in(&self, account: &str, month: Month) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(s.energy_paise + s.tod_paise), 0) FROM segment_energy s JOIN meters m ON m.id = s.meter
             WHERE m.account = ?1 AND s.month = ?2",
            params![account, month.index()],
            |r| r.get(0),
        )?)
    }

    /// Sum of one kind of event for an account between two instants (inclusive start, exclusive end).
    pub fn sum_of(
        &self,
        account: &str,
        kind: EventKind,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(amount_paise), 0) FROM ledger_events WHERE account = ?1 AND kind = ?2 AND at >= ?3 AND at < ?4",
            params![account, kind.as_str(), ts(from), ts(to)],
            |r| r.get(0),
        )?)
    }

    /// The latest instant of an event kind for an account.
    pub fn last_event_at(&self, account: &str, kind: EventKind) -> Result<Option<DateTime<Utc>>> {
        let at: Option<i64> = self.conn.query_row(
            "SELECT MAX(at) FROM ledger_events WHERE account = ?1 AND kind = ?2",
            params![account, kind.as_str()],
            |r| r.get(0),
        )?;
        Ok(at.map(from_ts))
    }

    /// The account's balance, last recharge and arrears, derived from its events and rated
    /// readings; arrears are recovered from recharges by `rules`.
    pub fn position(&self, account: &str, rules: &[ArrearsRule]) -> Result<Position> {
        let events: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(effect_paise), 0) FROM ledger_events WHERE account = ?1",
            [account],
            |r| r.get(0),
        )?;
        let last_recharge = self
            .conn
            .query_row(
                "SELECT id, amount_paise, at FROM ledger_events WHERE account = ?1 AND kind = 'recharge'
                 ORDER BY at DESC, id DESC LIMIT 1",
                [account],
                |r| {
                    Ok(LastRecharge {
                        id: r.get(0)?,
                        amount_paise: r.get(1)?,
                        at: from_ts(r.get(2)?),
                    })
                },
            )
            .optional()?;
        let arrears = ledger::arrears(&self.arrears_and_recharges(account)?, rules);
        Ok(Position {
            balance_paise: events - self.energy_charges(account, None)? - arrears.recovered_paise,
            last_recharge,
            arrears,
        })
    }

    /// The account's arrears events and recharges (what arrears recovery is derived from).
    fn arrears_and_recharges(&self, account: &str) -> Result<Vec<LedgerEvent>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, account, at, kind, amount_paise, expires_at FROM ledger_events
             WHERE account = ?1 AND kind IN ('arrears', 'recharge') ORDER BY seq",
        )?;
        let rows = statement.query_map([account], event_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Emergency credit events of an account.
    pub fn emergency_credits(&self, account: &str) -> Result<Vec<LedgerEvent>> {
        let mut statement = self.conn.prepare(
            "SELECT id, account, at, kind, amount_paise, expires_at FROM ledger_events
             WHERE account = ?1 AND kind = 'emergency_credit' ORDER BY seq",
        )?;
        let rows = statement.query_map([account], event_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LedgerEvent> {
    let kind: String = r.get(3)?;
    Ok(LedgerEvent {
        id: r.get(0)?,
        account: r.get(1)?,
        at: from_ts(r.get(2)?),
        kind: EventKind::parse(&kind).unwrap_or(EventKind::Adjustment),
        amount_paise: r.get(4)?,
        expires_at: r.get::<_, Option<i64>>(5)?.map(from_ts),
    })
}

/// Inserts money events by id inside a transaction: a known id with the same content is skipped, a
/// known id with other content is an error. Events made here (`local`) are queued for upload.
pub(super) fn insert_events_in(
    tx: &rusqlite::Transaction<'_>,
    events: &[LedgerEvent],
    local: bool,
) -> Result<usize> {
    let mut added = 0;
    for event in events {
        let inserted = tx
            .prepare_cached(
                "INSERT INTO ledger_events (id, account, at, kind, amount_paise, effect_paise, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                event.id,
                event.account,
                ts(event.at),
                event.kind.as_str(),
                event.amount_paise,
                event.balance_effect(),
                event.expires_at.map(ts)
            ])
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::UnknownAccount(event.account.clone()),
                _ => e.into(),
            })?;
        if inserted == 1 {
            added += 1;
            if local {
                super::outbox::append_outbox(tx, &UplinkEvent::Ledger(event.into()))?;
            }
            continue;
        }
        // Storage keeps whole seconds, so compare at that resolution.
        let mut expected = event.clone();
        expected.at = from_ts(ts(event.at));
        expected.expires_at = event.expires_at.map(|x| from_ts(ts(x)));
        if read_event(tx, &event.id)? != Some(expected) {
            return Err(StoreError::EventIdConflict(event.id.clone()));
        }
    }
    Ok(added)
}

fn read_event(tx: &rusqlite::Transaction<'_>, id: &str) -> Result<Option<LedgerEvent>> {
    Ok(tx
        .query_row(
            "SELECT id, account, at, kind, amount_paise, expires_at FROM ledger_events WHERE id = ?1",
            [id],
            event_from_row,
        )
        .optional()?)
}
