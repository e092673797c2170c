//! The priority outbox: events made at the gateway wait here, in the transaction that made them,
//! until central acknowledges them. Each row records its format (`gramgrid_proto::outbox`).
use super::{Result, Store, StoreError};
use gramgrid_proto::outbox;
use gramgrid_proto::wire::{PriorityRecord, UplinkEvent};
use rusqlite::{params, OptionalExtension, Transaction};

/// Appends a locally made event to the priority outbox, inside the caller's transaction.
pub(super) fn append_outbox(tx: &Transaction<'_>, event: &UplinkEvent) -> Result<()> {
    append_outbox_seq(tx, event).map(drop)
}

/// As [`append_outbox`], returning the row's sequence.
pub(super) fn append_outbox_seq(tx: &Transaction<'_>, event: &UplinkEvent) -> Result<i64> {
    let body = outbox::encode(event).map_err(|e| StoreError::Encoding(e.to_string()))?;
    tx.prepare_cached("INSERT INTO sync_outbox (event, format) VALUES (?1, ?2)")?
        .execute(params![body, outbox::OUTBOX_FORMAT])?;
    Ok(tx.last_insert_rowid())
}

/// Replaces the event of outbox row `seq` (a notice the gateway's modem sent, amended before
/// central was ever offered it).
pub(super) fn amend_outbox(tx: &Transaction<'_>, seq: i64, event: &UplinkEvent) -> Result<()> {
    let body = outbox::encode(event).map_err(|e| StoreError::Encoding(e.to_string()))?;
    tx.prepare_cached("UPDATE sync_outbox SET event = ?2, format = ?3 WHERE seq = ?1")?
        .execute(params![seq, body, outbox::OUTBOX_FORMAT])?;
    Ok(())
}

/// The event of outbox row `seq`, if it is still there (not yet acknowledged).
pub(super) fn outbox_event(tx: &Transaction<'_>, seq: i64) -> Result<Option<UplinkEvent>> {
    let row: Option<(u16, Vec<u8>)> = tx
        .prepare_cached("SELECT format, event FROM sync_outbox WHERE seq = ?1")?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(format, body)| {
        outbox::decode(format, &body).map_err(|e| StoreError::Encoding(e.to_string()))
    })
    .transpose()
}

impl Store {
    /// Outbox records after `after`, oldest first, at most `limit`.
    pub fn priority_after(&self, after: u64, limit: usize) -> Result<Vec<PriorityRecord>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT seq, format, event FROM sync_outbox WHERE seq > ?1 AND seq < ?3 ORDER BY seq LIMIT ?2",
        )?;
        let hold = self.outbox_hold.map_or(i64::MAX, |seq| seq as i64);
        let rows = statement.query_map(params![after as i64, limit as i64, hold], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u16>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut records = Vec::new();
        for row in rows {
            let (seq, format, body) = row?;
            let event =
                outbox::decode(format, &body).map_err(|e| StoreError::Encoding(e.to_string()))?;
            records.push(PriorityRecord {
                seq: seq as u64,
                event,
            });
        }
        Ok(records)
    }

    /// Alerts still in the outbox: made here and not yet acknowledged by central (a row leaves
    /// the outbox in the transaction that records central's acknowledgement of it).
    pub(super) fn alerts_in_outbox(&self) -> Result<u64> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT format, event FROM sync_outbox ORDER BY seq")?;
        let mut rows = statement.query([])?;
        let mut alerts = 0;
        while let Some(row) = rows.next()? {
            let body: Vec<u8> = row.get(1)?;
            let event = outbox::decode(row.get(0)?, &body)
                .map_err(|e| StoreError::Encoding(e.to_string()))?;
            if matches!(
                event,
                UplinkEvent::Alert { .. } | UplinkEvent::Notice { .. }
            ) {
                alerts += 1;
            }
        }
        Ok(alerts)
    }
}
