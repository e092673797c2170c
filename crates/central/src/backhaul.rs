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

/// A gateway's backhaul over a span: hours in which it synced, out of the hours observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Uptime {
    /// Hours with at least one exchange.
    pub up: i64,
    /// Hours of the span since its first kept exchange (a gateway enrolled yesterday is not
    /// judged on a week).
    pub observed: i64,
}

impl Uptime {
    /// The share of observed hours it was up, in percent (none observed: none).
    pub fn percent(self) -> Option<f64> {
        (self.observed > 0).then(|| 100.0 * self.up as f64 / self.observed as f64)
    }
}

/// For every gateway that synced in the `days` before `now` (the current hour included): its
/// [`Uptime`] over them.
pub fn uptime(tx: &mut dyn Tx, now: DateTime<Utc>, days: i64) -> Result<HashMap<String, Uptime>> {
    let this_hour = ts(now).div_euclid(3600);
    let first = this_hour - days * 24 + 1;
    tx.query(
        "SELECT s.gateway, COUNT(*), MIN(s.hour),
                (SELECT MIN(f.hour) FROM gateway_sync_hours f WHERE f.gateway = s.gateway)
         FROM gateway_sync_hours s WHERE s.hour >= $1 AND s.hour <= $2 GROUP BY s.gateway",
        &[first.into(), this_hour.into()],
    )?
    .iter()
    .map(|row| {
        let since = row.int(3)?.max(first);
        let uptime = Uptime {
            up: row.int(1)?,
            observed: this_hour - since + 1,
        };
        Ok((row.text(0)?, uptime))
    })
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
            let up = t.tx(move |tx| uptime(tx, at(30, 9, 0), 7)).unwrap();
            // gw-a: up 2 of the 24 hours from its first sync (10:00 on the 29th) to 09:00 on the
            // 30th; gw-b: its old hour is dropped, so 1 of the 23 from 11:00.
            assert_eq!(
                up["gw-a"],
                Uptime {
                    up: 2,
                    observed: 24
                }
            );
            assert_eq!(
                up["gw-b"],
                Uptime {
                    up: 1,
                    observed: 23
                }
            );
            assert_eq!(up["gw-a"].percent().map(f64::round), Some(8.0));
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
