//! Read-only views of the store for the technician's pages: a meter's readings over a window, its
//! latest reading, an account's recent alerts, and the oldest reading central has not acknowledged.
use super::{from_ts, ts, Result, Store};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

impl Store {
    /// The meter's readings `(at, register Wh)` with `from <= at <= to`, oldest first.
    pub fn meter_readings(
        &self,
        meter: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, i64)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT at, register_wh FROM readings WHERE meter = ?1 AND at BETWEEN ?2 AND ?3 ORDER BY at",
        )?;
        let rows = statement.query_map(params![meter, ts(from), ts(to)], |r| {
            Ok((from_ts(r.get(0)?), r.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The meter's maximum demand between two instants (`gramgrid_core::demand::maximum` over its
    /// readings from `from` to `to`, both included): when, and the average power in W.
    pub fn max_demand(
        &self,
        meter: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Option<(DateTime<Utc>, i64)>> {
        let readings: Vec<gramgrid_core::rating::RegisterReading> = self
            .meter_readings(meter, from, to)?
            .into_iter()
            .map(|(at, register_wh)| {
                gramgrid_core::rating::RegisterReading::import(at, register_wh)
            })
            .collect();
        Ok(gramgrid_core::demand::maximum(&readings))
    }

    /// The meter's latest reading `(at, register Wh)`, if it has one.
    pub fn last_reading(&self, meter: i64) -> Result<Option<(DateTime<Utc>, i64)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT at, register_wh FROM readings WHERE meter = ?1 ORDER BY at DESC LIMIT 1",
                [meter],
                |r| Ok((from_ts(r.get(0)?), r.get(1)?)),
            )
            .optional()?)
    }

    /// The export register of the meter's latest reading (0 without readings, or for a meter that
    /// never exported).
    pub fn last_export(&self, meter: i64) -> Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT export_wh FROM readings WHERE meter = ?1 ORDER BY at DESC LIMIT 1",
                [meter],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// The account's latest `limit` alerts `(kind, raised at)`, newest first.
    pub fn recent_alerts(
        &self,
        account: &str,
        limit: usize,
    ) -> Result<Vec<(String, DateTime<Utc>)>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT kind, created_at FROM alerts WHERE account = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2",
        )?;
        let rows = statement.query_map(params![account, limit as i64], |r| {
            Ok((r.get(0)?, from_ts(r.get(1)?)))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the oldest reading central has not acknowledged was taken (None: all uploaded).
    pub fn oldest_unsent_reading(&mut self) -> Result<Option<DateTime<Utc>>> {
        let acked = self.sync_cursors()?.readings_acked;
        let at: Option<i64> = self.conn.query_row(
            "SELECT MIN(at) FROM readings WHERE seq > ?1",
            [acked as i64],
            |r| r.get(0),
        )?;
        Ok(at.map(from_ts))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Account, MeterInstall, MeterReading, Store};
    use chrono::{DateTime, Duration, TimeZone, Utc};
    use gramgrid_core::tariff::{Category, TariffBook};

    #[test]
    fn a_meters_readings_come_back_in_time_order_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("gateway.db")).unwrap();
        let t0: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        store
            .upsert_account(&Account {
                id: "A1".into(),
                consumer_name: "Consumer".into(),
                category: Category::Domestic,
                phone: None,
                created_at: t0,
            })
            .unwrap();
        let meter = store
            .install_meter(&MeterInstall {
                serial: "M-A1".into(),
                account: "A1".into(),
                installed_at: t0,
                initial_register_wh: None,
            })
            .unwrap();
        let at = |minutes| t0 + Duration::minutes(minutes);
        let batch: Vec<MeterReading> = [(30, 1_300), (0, 1_000), (15, 1_100)]
            .into_iter()
            .map(|(m, register_wh)| MeterReading {
                meter,
                at: at(m),
                register_wh,
                export_wh: 0,
            })
            .collect();
        store.ingest(&TariffBook::builtin(), &batch).unwrap();
        let window = store.meter_readings(meter, at(10), at(60)).unwrap();
        assert_eq!(window, vec![(at(15), 1_100), (at(30), 1_300)]);
        assert_eq!(store.last_reading(meter).unwrap(), Some((at(30), 1_300)));
        assert_eq!(store.oldest_unsent_reading().unwrap(), Some(at(0)));
        store.record_acks(0, 3).unwrap();
        assert_eq!(store.oldest_unsent_reading().unwrap(), None);
    }
}
