//! Each gateway's backhaul as central saw it: the hours in which it synced, and from them its
//! uptime over a span of days (the console's gateway list). Recorded in the exchange's own
//! transaction; 31 days are kept.
use super::db::Tx;
use super::Result;
use chrono::{DateTime, Utc};
use gramgrid_core::civil::ts;
use std::collections::HashMap;

/// Days of sync hours kept.
const KEEP_DAYS: i64 = 31;

/// Notes that `gateway` exchanged at `now` (once per hour; older hours beyond the kept span are
/// dropped when a new hour begins).
pub fn record_exchange(tx: &mut dyn Tx, gateway: &str, now: DateTime<Utc>) -> Result<()> {
    let hour = ts(now).div_euclid(3600);
    let new = tx.execute(
        "INSERT INTO gateway_sync_hours (gateway, hour) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[gateway.into(), hour.into()],
    )?;
    if new == 1 {
        tx.execute(
            "DELETE FROM gateway_sync_hours WHERE gateway = $1 AND hour < $2",
            &[gateway.into(), (hour - KEEP_DAYS * 24).into()],
        )?;
    }
    Ok(())
}

/// For every gateway that synced in the `days` before `now`: in how many of those hours it did
/// (an hour with any exchange counts as up), out of `days × 24`.
pub fn hours_up(tx: &mut dyn Tx, now: DateTime<Utc>, days: i64) -> Result<HashMap<String, i64>> {
    let this_hour = ts(now).div_euclid(3600);
    tx.query(
        "SELECT gateway, COUNT(*) FROM gateway_sync_hours WHERE hour > $1 AND hour <= $2 GROUP BY gateway",
        &[(this_hour - days * 24).into(), this_hour.into()],
    )?
    .iter()
    .map(|row| Ok((row.text(0)?, row.int(1)?)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_hour_with_any_exchange_counts_once_and_old_hours_are_dropped() {
        for t in crate::testing::backends() {
            let at = |day: u32, hour: u32, minute: u32| {
                Utc.with_ymd_and_hms(2026, 11, day, hour, minute, 0)
                    .unwrap()
            };
            t.tx(move |tx| {
                // Three exchanges in one hour, one the next hour, one six weeks before.
                for when in [at(29, 10, 0), at(29, 10, 15), at(29, 10, 59), at(29, 11, 5)] {
                    record_exchange(tx, "gw-a", when)?;
                }
                record_exchange(tx, "gw-b", at(29, 11, 30) - chrono::Duration::days(42))?;
                record_exchange(tx, "gw-b", at(29, 11, 30))?;
                Ok(())
            })
            .unwrap();
            let up = t.tx(move |tx| hours_up(tx, at(30, 9, 0), 7)).unwrap();
            assert_eq!(up.get("gw-a"), Some(&2));
            assert_eq!(
                up.get("gw-b"),
                Some(&1),
                "the old hour is not in the last 7 days"
            );
            let kept = t
                .tx(|tx| {
                    Ok(tx.query_int(
                        "SELECT COUNT(*) FROM gateway_sync_hours WHERE gateway = 'gw-b'",
                        &[],
                    )?)
                })
                .unwrap();
            assert_eq!(kept, 1, "hours beyond 31 days are dropped");
        }
    }
}
