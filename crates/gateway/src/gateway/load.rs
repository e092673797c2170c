//! Sanctioned loads: at the first pass of each local day (and again when central changes a
//! sanctioned load), every account with one is checked against its 15-minute demands in the month
//! of the day that ended; a month with enough intervals above it (`[load]`,
//! `gramgrid_core::demand::LoadRule`) is recorded once, flagged at central and told to the
//! household (`sanctioned_load_exceeded`). With the load-limit trip on, every pass gives the
//! policy each account's latest run of intervals above its load and its latest trip.
use super::{vars, Gateway};
use crate::store::{Account, Alert, Overload, StoreError};
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::civil::{self, Month};
use gramgrid_core::demand::{self, kilowatts, LoadTrip, TRIP_FRESH_SECS};
use gramgrid_core::message::Kind;
use gramgrid_core::rating::RegisterReading;
use gramgrid_core::tariff::INTERVAL_SECS;

impl Gateway {
    /// The load-limit trip's facts for an account: None with the trip off (`[load]
    /// trip_after_intervals = 0`) or no sanctioned load. Reads the readings that can make a fresh
    /// run long enough to trip, none from before the latest trip.
    pub(super) fn load_trip_facts(
        &self,
        account: &Account,
        meter: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<LoadTrip>, StoreError> {
        let rule = &self.config.load;
        if rule.trip_after_intervals == 0 {
            return Ok(None);
        }
        let Some(sanctioned_w) = self.store.sanctioned_load(&account.id)? else {
            return Ok(None);
        };
        let tripped_at = self.store.latest_load_trip(&account.id)?.map(|t| t.at);
        let span = Duration::seconds(
            INTERVAL_SECS * (i64::from(rule.trip_after_intervals) + 1) + TRIP_FRESH_SECS,
        );
        let from = tripped_at.map_or(now - span, |t| t.max(now - span));
        let readings: Vec<RegisterReading> = self
            .store
            .meter_readings(meter, from, now)?
            .into_iter()
            .map(|(at, register_wh)| RegisterReading::import(at, register_wh))
            .collect();
        Ok(Some(LoadTrip {
            trip_after_intervals: rule.trip_after_intervals,
            trip_minutes: rule.trip_minutes,
            sanctioned_w,
            over: demand::latest_run_over(&readings, sanctioned_w, tripped_at),
            tripped_at,
        }))
    }

    /// Checks the accounts once per local day, and again when the sanctioned loads changed;
    /// returns how many months were newly flagged.
    pub(super) fn check_sanctioned_loads(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let checked = (
            civil::local_date(now),
            self.store.sanctioned_loads_digest()?,
        );
        if self.loads_checked == Some(checked) {
            return Ok(0);
        }
        self.loads_checked = Some(checked);
        // The month of the day that ended: on the 1st, the whole of last month.
        let month = Month::containing(now - Duration::days(1));
        let Some((start, next_month)) = month.span() else {
            return Ok(0);
        };
        let end = next_month.min(now);
        let mut flagged = 0;
        for account in self.store.accounts()? {
            let Some(sanctioned_w) = self.store.sanctioned_load(&account.id)? else {
                continue;
            };
            let id = format!("{}:overload:{}:{month}", self.config.gateway.id, account.id);
            if self.store.has_overload(&id)? {
                continue;
            }
            let Some((meter, _)) = self.store.active_meter(&account.id)? else {
                continue;
            };
            let readings: Vec<RegisterReading> = self
                .store
                .meter_readings(meter, start, end)?
                .into_iter()
                .map(|(at, register_wh)| RegisterReading::import(at, register_wh))
                .collect();
            let Some(excess) = self.config.load.excess(&readings, sanctioned_w) else {
                continue;
            };
            let overload = Overload {
                id,
                account: account.id.clone(),
                month: month.to_string(),
                intervals: u32::try_from(excess.intervals).unwrap_or(u32::MAX),
                max_demand_w: excess.max_demand_w,
                sanctioned_w,
                at: now,
            };
            let notice = overload_notice(&overload, month);
            if self.store.record_overload(&overload, &notice)? {
                tracing::warn!(account = %account.id, %month, intervals = excess.intervals,
                    max_demand_w = excess.max_demand_w, sanctioned_w,
                    "a household drew more than its sanctioned load repeatedly; flagged for the office");
                flagged += 1;
            }
        }
        Ok(flagged)
    }
}

/// The household's message about a month over its sanctioned load.
fn overload_notice(overload: &Overload, month: Month) -> Alert {
    let month_words = month
        .first_day()
        .map_or_else(|| overload.month.clone(), |d| d.format("%m-%Y").to_string());
    let sanctioned = kilowatts(overload.sanctioned_w);
    let max = kilowatts(overload.max_demand_w);
    Alert {
        id: format!("{}:overload:{}", overload.account, overload.month),
        account: overload.account.clone(),
        kind: Kind::SanctionedLoadExceeded.as_str().into(),
        created_at: overload.at,
        message: format!(
            "In {month_words} your load was above your sanctioned {sanctioned} kW in {} quarter-hours (highest {max} kW). Reduce your load or apply for a higher sanctioned load.",
            overload.intervals
        ),
        vars: vars(&[
            ("month", month_words.clone()),
            ("intervals", overload.intervals.to_string()),
            ("sanctioned_kw", sanctioned),
            ("max_kw", max),
        ]),
    }
}
