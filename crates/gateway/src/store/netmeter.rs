//! Net metering's month closes: each account's closed months with what the close did with its
//! export (`core::netmeter`), recorded with the close's credit in one transaction.
use super::money::insert_events_in;
use super::{ts, Result, Store};
use chrono::{DateTime, Utc};
use gramgrid_core::civil::Month;
use gramgrid_core::ledger::LedgerEvent;
use gramgrid_core::netmeter::MonthClose;
use gramgrid_core::tariff::{SegmentEnergy, SegmentKey};
use rusqlite::{params, OptionalExtension};

impl Store {
    /// Whether `month` is closed for the account.
    pub fn export_month_closed(&self, account: &str, month: Month) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM export_bank WHERE account = ?1 AND month = ?2",
                params![account, month.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Units banked at the latest close before `month` (0 when there was none).
    pub fn export_banked_before(&self, account: &str, month: Month) -> Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT banked_out_wh FROM export_bank WHERE account = ?1 AND month < ?2
                 ORDER BY month DESC LIMIT 1",
                params![account, month.to_string()],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// The account's segment totals in `month`, its meters' together per segment.
    pub fn month_segments(
        &self,
        account: &str,
        month: Month,
    ) -> Result<Vec<(SegmentKey, SegmentEnergy)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT v.name, SUM(s.energy_wh), SUM(s.tod_weight), SUM(s.export_wh)
             FROM segment_energy s JOIN meters m ON m.id = s.meter JOIN tariff_versions v ON v.id = s.version
             WHERE m.account = ?1 AND s.month = ?2 GROUP BY v.name",
        )?;
        let rows = statement.query_map(params![account, month.index()], |r| {
            Ok((
                SegmentKey {
                    month,
                    version_id: r.get(0)?,
                },
                SegmentEnergy {
                    wh: r.get(1)?,
                    tod_weight: r.get(2)?,
                    export_wh: r.get(3)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records `month`'s close for the account and its credit (if any) in one transaction; a month
    /// already closed is left as it is. Returns the money events added (0 or 1).
    pub fn record_export_close(
        &mut self,
        account: &str,
        month: Month,
        close: &MonthClose,
        credit: Option<&LedgerEvent>,
        at: DateTime<Utc>,
    ) -> Result<usize> {
        let report =
            serde_json::to_string(close).map_err(|e| super::StoreError::Encoding(e.to_string()))?;
        let tx = self.conn.transaction()?;
        let inserted = tx.execute(
            "INSERT INTO export_bank (account, month, banked_out_wh, report, at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (account, month) DO NOTHING",
            params![account, month.to_string(), close.banked_out_wh, report, ts(at)],
        )?;
        let added = match credit {
            Some(event) if inserted == 1 => {
                insert_events_in(&tx, std::slice::from_ref(event), true)?
            }
            _ => 0,
        };
        tx.commit()?;
        Ok(added)
    }
}
