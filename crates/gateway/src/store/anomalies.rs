//! Anomalies for the office: something odd about a meter's readings, or (with no meter) about the
//! gateway itself. Each is stored and queued for central in the transaction that found it.
use super::{ts, Result, Store};
use chrono::{DateTime, Utc};
use gramgrid_proto::wire::UplinkEvent;
use rusqlite::{params, OptionalExtension, Transaction};

/// Stores an anomaly for the office (about a meter, or with `meter` None the gateway itself) and
/// queues it for central, in `tx`.
pub(super) fn anomaly_in(
    tx: &Transaction<'_>,
    meter: Option<i64>,
    kind: &str,
    detail: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    tx.prepare_cached("INSERT INTO anomalies (at, meter, kind, detail) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![ts(at), meter, kind, detail])?;
    let serial = match meter {
        Some(meter) => tx
            .prepare_cached("SELECT serial FROM meters WHERE id = ?1")?
            .query_row([meter], |r| r.get(0))
            .optional()?,
        None => None,
    };
    let event = UplinkEvent::Anomaly {
        meter: serial,
        kind: kind.to_string(),
        detail: detail.to_string(),
        at,
    };
    super::outbox::append_outbox(tx, &event)
}

impl Store {
    /// Records something about the gateway itself for the office (no meter), e.g.
    /// `readings_shed`: stored and queued for central in one transaction.
    pub fn record_gateway_anomaly(
        &mut self,
        kind: &str,
        detail: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        anomaly_in(&tx, None, kind, detail, at)?;
        tx.commit()?;
        Ok(())
    }
}
