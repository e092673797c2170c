//! Read-only exports for the office: readings as CSV with OBIS codes, monthly account statements.
use super::accounts;
use super::db::Tx;
use super::{CentralError, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_core::civil::{start_of_local_day, Month};
use serde::Serialize;
use std::fmt::Write;

/// OBIS code of the cumulative active import energy register (IEC 62056-61).
pub const OBIS_ACTIVE_IMPORT: &str = "1.0.1.8.0";

/// Readings in `[from, to)` (optionally of one meter) as CSV: meter, OBIS code, `time_utc` (the end
/// of the 15-minute interval whose register it is), register in kWh with three decimals (exact:
/// registers are whole Wh).
pub fn readings_csv(
    tx: &mut dyn Tx,
    meter: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<String> {
    let rows = tx.query(
        "SELECT meter, at, register_wh FROM readings WHERE at >= $1 AND at < $2 AND ($3 = '' OR meter = $3)
         ORDER BY meter, at",
        &[ts(from).into(), ts(to).into(), meter.unwrap_or("").into()],
    )?;
    let mut csv = String::from("meter,obis,time_utc,value,unit\n");
    for row in rows {
        let wh = row.int(2)?;
        let time = from_ts(row.int(1)?).to_rfc3339_opts(SecondsFormat::Secs, true);
        // Meter serials are checked ids (no spaces, commas are the only CSV hazard left).
        let serial = row.text(0)?.replace(',', "_");
        let _ = writeln!(
            csv,
            "{serial},{OBIS_ACTIVE_IMPORT},{time},{}.{:03},kWh",
            wh.div_euclid(1000),
            wh.rem_euclid(1000)
        );
    }
    Ok(csv)
}

/// One line of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    /// The money event's id.
    pub id: String,
    /// When the event happened (UTC, whole seconds).
    pub at: DateTime<Utc>,
    /// The event kind: "recharge", "charge", "fixed_charge", "minimum_charge", "adjustment" or
    /// "emergency_credit".
    pub kind: String,
    /// How the event moved the balance, in paise: positive credits, negative debits, zero for an
    /// emergency credit (it lowers the disconnect threshold instead).
    pub effect_paise: i64,
}

/// An account's month: opening balance, money events, energy billed, closing balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    /// The account id.
    pub account: String,
    /// The Asia/Kolkata month, as `YYYY-MM`.
    pub month: String,
    /// Balance at the start of the month (local midnight on the 1st), in paise.
    pub opening_paise: i64,
    /// The month's money events, in time order.
    pub events: Vec<StatementLine>,
    /// Energy read in the month (billed in the month of the later reading, as the gateway does).
    pub units_wh: i64,
    /// Energy charge of `units_wh`, in paise, duty excluded.
    pub energy_paise: i64,
    /// Electricity duty on that energy, in paise.
    pub duty_paise: i64,
    /// Balance at the end of the month, in paise: opening + events − energy − duty.
    pub closing_paise: i64,
}

/// The statement of one account for one (Asia/Kolkata) month, from what central has.
pub fn statement(tx: &mut dyn Tx, account: &str, month: Month) -> Result<Statement> {
    accounts::account(tx, account)?;
    let start = month
        .first_day()
        .map(start_of_local_day)
        .ok_or_else(|| CentralError::Invalid(format!("month {month} is out of range")))?;
    let end = month
        .next()
        .first_day()
        .map(start_of_local_day)
        .ok_or_else(|| CentralError::Invalid(format!("month {month} is out of range")))?;
    let money_before = tx.query_int(
        "SELECT CAST(SUM(effect_paise) AS BIGINT) FROM ledger_events WHERE account = $1 AND at < $2",
        &[account.into(), ts(start).into()],
    )?;
    let energy_before = tx.query_int(
        "SELECT CAST(SUM(s.energy_paise + s.duty_paise) AS BIGINT) FROM segment_energy s
         JOIN meters m ON m.serial = s.meter WHERE m.account = $1 AND s.month < $2",
        &[account.into(), month.index().into()],
    )?;
    let events = tx
        .query(
            "SELECT id, at, kind, effect_paise FROM ledger_events WHERE account = $1 AND at >= $2 AND at < $3
             ORDER BY at, id",
            &[account.into(), ts(start).into(), ts(end).into()],
        )?
        .iter()
        .map(|r| {
            Ok(StatementLine {
                id: r.text(0)?,
                at: from_ts(r.int(1)?),
                kind: r.text(2)?,
                effect_paise: r.int(3)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let energy = tx
        .query_opt(
            "SELECT CAST(SUM(s.energy_wh) AS BIGINT), CAST(SUM(s.energy_paise) AS BIGINT), CAST(SUM(s.duty_paise) AS BIGINT)
             FROM segment_energy s JOIN meters m ON m.serial = s.meter WHERE m.account = $1 AND s.month = $2",
            &[account.into(), month.index().into()],
        )?
        .map(|r| -> Result<(i64, i64, i64)> {
            Ok((
                r.opt_int(0)?.unwrap_or(0),
                r.opt_int(1)?.unwrap_or(0),
                r.opt_int(2)?.unwrap_or(0),
            ))
        })
        .transpose()?
        .unwrap_or_default();
    let opening_paise = money_before - energy_before;
    let closing_paise =
        opening_paise + events.iter().map(|e| e.effect_paise).sum::<i64>() - energy.1 - energy.2;
    Ok(Statement {
        account: account.to_owned(),
        month: month.to_string(),
        opening_paise,
        events,
        units_wh: energy.0,
        energy_paise: energy.1,
        duty_paise: energy.2,
        closing_paise,
    })
}
