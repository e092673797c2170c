//! Printable monthly bills: the month's readings rated again with the tariff in force, beside
//! what the ledger charged (`month_bill`); assembled in `assemble`, rendered as HTML in `html`,
//! printed to PDF in `pdf`.
mod assemble;
pub mod html;
pub mod pdf;

pub use assemble::{
    assemble, AccountLine, AccountPart, ChargeKind, ChargeLine, Consumer, Facts, MeterRegisters,
    MonthBill, Note, Register,
};

use super::db::Tx;
use super::export::{self, StatementLine};
use super::{accounts, CentralError, Result};
use gramgrid_core::civil::{from_ts, ts, Month};
use gramgrid_core::demand;
use gramgrid_core::rating::{self, RegisterReading};
use std::collections::BTreeMap;

/// The bill of one account for one (Asia/Kolkata) month, from what central has: the account, its
/// meters' readings, the published tariff book and the month's statement.
pub fn month_bill(tx: &mut dyn Tx, account: &str, month: Month) -> Result<MonthBill> {
    let statement = export::statement(tx, account, month)?;
    let view = accounts::account_view(tx, account)?;
    let (start, end) = month
        .span()
        .ok_or_else(|| CentralError::Invalid(format!("month {month} is out of range")))?;
    let first_day = gramgrid_core::civil::local_date(start);
    let last_day = gramgrid_core::civil::local_date(end) - chrono::Duration::days(1);
    let book = accounts::load_tariff_book(tx)?;
    let category = view.account.category;

    // Each meter's readings from the last one before the month to the month's end (inclusive,
    // as the gateway reads the maximum demand), grouped by the meter whose slabs bill them.
    let meters = tx.query(
        "SELECT serial, COALESCE(billing_serial, serial) FROM meters WHERE account = $1 ORDER BY installed_at, serial",
        &[account.into()],
    )?;
    let mut registers = Vec::with_capacity(meters.len());
    let mut by_billing: BTreeMap<String, Vec<Vec<RegisterReading>>> = BTreeMap::new();
    let mut max_demand_w = 0;
    for row in meters {
        let (serial, billing) = (row.text(0)?, row.text(1)?);
        let readings = tx
            .query(
                "SELECT at, register_wh, export_wh FROM readings WHERE meter = $1 AND at <= $3
                 AND at >= COALESCE((SELECT MAX(at) FROM readings WHERE meter = $1 AND at < $2), $2)
                 ORDER BY at",
                &[serial.as_str().into(), ts(start).into(), ts(end).into()],
            )?
            .iter()
            .map(|r| {
                Ok(RegisterReading {
                    at: from_ts(r.int(0)?),
                    register_wh: r.int(1)?,
                    export_wh: r.int(2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let in_month: Vec<RegisterReading> =
            readings.iter().filter(|r| r.at >= start).copied().collect();
        if let Some((_, watts)) = demand::maximum(&in_month) {
            max_demand_w = max_demand_w.max(watts);
        }
        registers.push(MeterRegisters::of(&serial, &readings, start, end));
        by_billing.entry(billing).or_default().push(readings);
    }
    let mut usage = Vec::new();
    for meters in by_billing.values() {
        usage.extend(
            rating::month_usage(&book, category, month, meters)
                .map_err(|e| CentralError::Invalid(e.to_string()))?,
        );
    }
    let tariff = book.bill(category, month, &usage, max_demand_w);

    // The month's own minimum and demand charges and export credit (a gateway posts them at the
    // start of the next month).
    let suffix = format!(":{account}:{month}");
    let after = tx
        .query(
            "SELECT id, at, kind, effect_paise, amount_paise FROM ledger_events WHERE account = $1 AND at >= $2
             AND kind IN ('minimum_charge', 'demand_charge', 'export_credit') ORDER BY at, id",
            &[account.into(), ts(start).into()],
        )?
        .iter()
        .map(|r| {
            Ok(StatementLine {
                id: r.text(0)?,
                at: from_ts(r.int(1)?),
                kind: r.text(2)?,
                effect_paise: r.int(3)?,
                amount_paise: r.int(4)?,
                arrears_paise: 0,
            })
        })
        .filter(|line: &Result<StatementLine>| line.as_ref().map_or(true, |l| l.id.ends_with(&suffix)))
        .collect::<Result<Vec<_>>>()?;

    Ok(assemble(Facts {
        consumer: Consumer {
            account: view.account.id,
            name: view.account.consumer_name,
            category,
            gateway: view.account.gateway,
            sanctioned_load_w: view.sanctioned_load_w,
        },
        period: (first_day, last_day),
        registers,
        tariff,
        statement,
        after,
    }))
}

#[cfg(test)]
mod tests;
