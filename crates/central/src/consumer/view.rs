//! What a household's page shows, read in one transaction: the balance report (with its
//! estimates), how fresh the figures are, the last 30 days' consumption, recent recharges and
//! this month's bill so far (the month's statement).
use crate::accounts::{self, Balance};
use crate::db::Tx;
use crate::export::{self, Statement};
use crate::Result;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use gramgrid_core::civil::{self, from_ts, ts, Month};
use gramgrid_core::ledger::EventKind;
use gramgrid_core::message::Language;
use gramgrid_core::tariff::TariffBook;

/// Days of consumption the chart shows, today included.
pub const CHART_DAYS: usize = 30;
/// Recharges the page lists, newest first.
pub const RECHARGES_SHOWN: i64 = 5;

/// Everything the page shows of one account.
#[derive(Debug, Clone)]
pub struct AccountPage {
    /// The account id.
    pub account: String,
    /// The consumer's name.
    pub name: String,
    /// The language of the account's messages (the page's when no choice was made).
    pub language: Language,
    /// Balance, estimates, the gateway's last sync and whether that is too long ago.
    pub balance: Balance,
    /// The newest reading of the account's meters, if any.
    pub last_reading_at: Option<DateTime<Utc>>,
    /// The first local day of the chart.
    pub first_day: NaiveDate,
    /// Wh per local day from `first_day`, [`CHART_DAYS`] of them.
    pub daily_wh: Vec<i64>,
    /// Recent recharges (time, paise), newest first.
    pub recharges: Vec<(DateTime<Utc>, i64)>,
    /// This local month's statement so far.
    pub bill: Statement,
}

/// The page of `account` at `now`.
pub fn account_page(
    tx: &mut dyn Tx,
    account: &str,
    now: DateTime<Utc>,
    stale_after: Duration,
    book: &TariffBook,
) -> Result<AccountPage> {
    let details = accounts::account(tx, account)?;
    let balance = accounts::balance(tx, account, now, stale_after, book)?;
    let last_reading_at = tx
        .query_opt(
            "SELECT MAX(r.at) FROM readings r JOIN meters m ON m.serial = r.meter WHERE m.account = $1",
            &[account.into()],
        )?
        .and_then(|row| row.opt_int(0).ok().flatten())
        .map(from_ts);
    let first_day = civil::local_date(now) - Duration::days(CHART_DAYS as i64 - 1);
    let daily_wh = daily_energy(tx, account, first_day)?;
    let recharges = tx
        .query(
            "SELECT at, effect_paise FROM ledger_events WHERE account = $1 AND kind = $2 ORDER BY at DESC, id DESC LIMIT $3",
            &[account.into(), EventKind::Recharge.as_str().into(), RECHARGES_SHOWN.into()],
        )?
        .iter()
        .map(|row| Ok((from_ts(row.int(0)?), row.int(1)?)))
        .collect::<Result<Vec<_>>>()?;
    let bill = export::statement(tx, account, Month::containing(now))?;
    Ok(AccountPage {
        account: details.id,
        name: details.consumer_name,
        language: details.language,
        balance,
        last_reading_at,
        first_day,
        daily_wh,
        recharges,
        bill,
    })
}

/// Wh per local day over [`CHART_DAYS`] days from `first_day`, summed over the account's meters
/// (a replaced meter's days and its successor's add up).
fn daily_energy(tx: &mut dyn Tx, account: &str, first_day: NaiveDate) -> Result<Vec<i64>> {
    let start = civil::start_of_local_day(first_day);
    // From a day before: the reading that starts the first day's first span.
    let rows = tx.query(
        "SELECT r.meter, r.at, r.register_wh FROM readings r JOIN meters m ON m.serial = r.meter
         WHERE m.account = $1 AND r.at >= $2 ORDER BY r.meter, r.at",
        &[account.into(), ts(start - Duration::days(1)).into()],
    )?;
    let mut totals = vec![0; CHART_DAYS];
    let mut series: Vec<(DateTime<Utc>, i64)> = Vec::new();
    let mut meter = None;
    let mut add = |series: &[(DateTime<Utc>, i64)]| {
        let days = gramgrid_web::chart::energy_per_slot(series, start, 86_400, CHART_DAYS);
        for (total, day) in totals.iter_mut().zip(days) {
            *total += day;
        }
    };
    for row in &rows {
        let serial = row.text(0)?;
        if meter.as_ref() != Some(&serial) {
            add(&series);
            series.clear();
            meter = Some(serial);
        }
        series.push((from_ts(row.int(1)?), row.int(2)?));
    }
    add(&series);
    Ok(totals)
}
