//! Read-only exports for the office: readings as CSV with OBIS codes, monthly account statements.
use super::accounts::{self, ArrearsReport};
use super::db::Tx;
use super::{CentralError, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use gramgrid_core::civil::Month;
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_core::ledger::{self, LedgerEvent};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write;

/// OBIS code of the cumulative active import energy register (IEC 62056-61).
pub const OBIS_ACTIVE_IMPORT: &str = "1.0.1.8.0";

/// Rows in one page of the readings export when the caller names no `limit`.
pub const DEFAULT_EXPORT_LIMIT: i64 = 10_000;

/// Most rows one page of the readings export may hold (`limit` is 1 to this): a page is built in
/// memory, so this bounds what one request can cost.
pub const MAX_EXPORT_LIMIT: i64 = 100_000;

/// Where a page of the readings export ended: the last (meter, time) it returned. The next page
/// continues strictly after it (rows are ordered by meter, then time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCursor {
    /// The last row's meter serial.
    pub meter: String,
    /// The last row's time (storage seconds, UTC).
    pub at: i64,
}

/// Version tag inside a cursor token, so that the format can change without misreading old ones.
const CURSOR_VERSION: &str = "r1";

impl ExportCursor {
    /// The opaque token a client sends back as `?cursor=` (URL-safe base64, no padding).
    pub fn encode(&self) -> String {
        let raw = format!("{CURSOR_VERSION}:{}:{}", self.at, self.meter);
        data_encoding::BASE64URL_NOPAD.encode(raw.as_bytes())
    }

    /// Reads a token made by [`ExportCursor::encode`]; anything else is [`CentralError::Invalid`].
    pub fn decode(token: &str) -> Result<ExportCursor> {
        let invalid = || {
            CentralError::Invalid(format!(
                "cursor '{}' is not one this server gave: pass the X-Next-Cursor (or the Link rel=\"next\") of the previous page unchanged",
                token.chars().take(100).collect::<String>()
            ))
        };
        let raw = data_encoding::BASE64URL_NOPAD
            .decode(token.as_bytes())
            .map_err(|_| invalid())?;
        let raw = String::from_utf8(raw).map_err(|_| invalid())?;
        let mut parts = raw.splitn(3, ':');
        let (Some(CURSOR_VERSION), Some(at), Some(meter)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let at = at.parse::<i64>().map_err(|_| invalid())?;
        if meter.is_empty() {
            return Err(invalid());
        }
        Ok(ExportCursor {
            meter: meter.to_owned(),
            at,
        })
    }
}

/// What one page of the readings export asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingsExport {
    /// One meter, or every meter.
    pub meter: Option<String>,
    /// First interval end included.
    pub from: DateTime<Utc>,
    /// Interval ends before this are included.
    pub to: DateTime<Utc>,
    /// Continue strictly after this row (the previous page's last); `None` for the first page.
    pub after: Option<ExportCursor>,
    /// Most rows in the page, 1 to [`MAX_EXPORT_LIMIT`].
    pub limit: i64,
}

/// One page of the readings export: a whole CSV file (header line included) and, when more rows
/// follow, where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvPage {
    /// The CSV text.
    pub csv: String,
    /// The last row of this page when at least one more row exists; `None` on the last page.
    pub next: Option<ExportCursor>,
}

/// One page of the readings in `[from, to)` (optionally of one meter) as CSV: meter, OBIS code,
/// `time_utc` (the end of the 15-minute interval whose register it is), register in kWh with three
/// decimals (exact: registers are whole Wh). Rows are ordered by meter, then time; at most
/// `limit` of them, read with a keyset query (strictly after `after`), so a page costs the same
/// however deep into the export it is.
pub fn readings_csv(tx: &mut dyn Tx, request: &ReadingsExport) -> Result<CsvPage> {
    if !(1..=MAX_EXPORT_LIMIT).contains(&request.limit) {
        return Err(CentralError::Invalid(format!(
            "limit {} is out of range: give 1 to {MAX_EXPORT_LIMIT} rows per page (default {DEFAULT_EXPORT_LIMIT})",
            request.limit
        )));
    }
    let meter = request.meter.as_deref().unwrap_or("");
    // One row more than the page holds tells whether another page follows.
    let fetch = request.limit + 1;
    let rows = match &request.after {
        None => tx.query(
            "SELECT meter, at, register_wh FROM readings WHERE at >= $1 AND at < $2 AND ($3 = '' OR meter = $3)
             ORDER BY meter, at LIMIT $4",
            &[ts(request.from).into(), ts(request.to).into(), meter.into(), fetch.into()],
        )?,
        Some(after) => tx.query(
            "SELECT meter, at, register_wh FROM readings WHERE at >= $1 AND at < $2 AND ($3 = '' OR meter = $3)
             AND (meter > $4 OR (meter = $4 AND at > $5))
             ORDER BY meter, at LIMIT $6",
            &[
                ts(request.from).into(),
                ts(request.to).into(),
                meter.into(),
                after.meter.as_str().into(),
                after.at.into(),
                fetch.into(),
            ],
        )?,
    };
    let more = rows.len() as i64 > request.limit;
    let mut csv = String::from("meter,obis,time_utc,value,unit\n");
    let mut last = None;
    for row in rows.iter().take(request.limit as usize) {
        let wh = row.int(2)?;
        let at = row.int(1)?;
        let time = from_ts(at).to_rfc3339_opts(SecondsFormat::Secs, true);
        let meter = row.text(0)?;
        // Meter serials are checked ids (no spaces, commas are the only CSV hazard left).
        let serial = meter.replace(',', "_");
        let _ = writeln!(
            csv,
            "{serial},{OBIS_ACTIVE_IMPORT},{time},{}.{:03},kWh",
            wh.div_euclid(1000),
            wh.rem_euclid(1000)
        );
        last = Some(ExportCursor { meter, at });
    }
    Ok(CsvPage {
        csv,
        next: if more { last } else { None },
    })
}

/// One line of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    /// The money event's id.
    pub id: String,
    /// When the event happened (UTC, whole seconds).
    pub at: DateTime<Utc>,
    /// The event kind: "recharge", "charge", "fixed_charge", "minimum_charge", "demand_charge",
    /// "export_credit", "adjustment", "emergency_credit" or "arrears".
    pub kind: String,
    /// How the event moved the balance, in paise: positive credits, negative debits, zero for an
    /// emergency credit (it lowers the disconnect threshold instead) and for arrears (recovered
    /// from recharges instead).
    pub effect_paise: i64,
    /// The event's amount as recorded, in paise (positive): for an emergency credit the credit
    /// line granted, for arrears the arrears recorded.
    pub amount_paise: i64,
    /// The part of a recharge that went to the arrears instead of the balance, in paise (zero for
    /// other events).
    pub arrears_paise: i64,
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
    /// Energy a rooftop-solar home exported in the month, read the same way; the energy charge is
    /// on the net units of each segment (import less export, never below zero).
    pub export_wh: i64,
    /// Energy charge of `units_wh`, in paise, duty excluded.
    pub energy_paise: i64,
    /// Time-of-day surcharges less rebates on that energy charge, in paise.
    pub tod_paise: i64,
    /// Electricity duty on the energy charge and its time-of-day adjustment, in paise.
    pub duty_paise: i64,
    /// Arrears recovered in the month, in paise: the lines' `arrears_paise` plus
    /// `arrears_from_earlier_recharges_paise`.
    pub arrears_recovered_paise: i64,
    /// Arrears recovered in the month from recharges of earlier months: when arrears are recorded
    /// after recharges that paid their full share into arrears already cleared, those shares go to
    /// the new arrears.
    pub arrears_from_earlier_recharges_paise: i64,
    /// The account's arrears at the end of the month: recorded, recovered, outstanding.
    pub arrears: ArrearsReport,
    /// Balance at the end of the month, in paise: opening + events − arrears recovered − energy −
    /// duty.
    pub closing_paise: i64,
}

/// The statement of one account for one (Asia/Kolkata) month, from what central has.
pub fn statement(tx: &mut dyn Tx, account: &str, month: Month) -> Result<Statement> {
    accounts::account(tx, account)?;
    let (start, end) = month
        .span()
        .ok_or_else(|| CentralError::Invalid(format!("month {month} is out of range")))?;
    // Arrears recovered by the start and by the end of the month, under the policy in force, from
    // the money events known then: what the gateway's balance would have taken off.
    let (_, policy) = accounts::policy_in_force(tx)?;
    let all = accounts::events_of(tx, account)?;
    let until = |t: DateTime<Utc>| all.iter().filter(move |e: &&LedgerEvent| e.at < t);
    let arrears_start = ledger::arrears(until(start), &policy.arrears);
    let arrears_end = ledger::arrears(until(end), &policy.arrears);
    let by_recharge: HashMap<String, i64> =
        ledger::arrears_by_recharge(until(end), &policy.arrears)
            .into_iter()
            .collect();
    let money_before = tx.query_int(
        "SELECT CAST(SUM(effect_paise) AS BIGINT) FROM ledger_events WHERE account = $1 AND at < $2",
        &[account.into(), ts(start).into()],
    )?;
    let energy_before = tx.query_int(
        "SELECT CAST(SUM(s.energy_paise + s.tod_paise + s.duty_paise) AS BIGINT) FROM segment_energy s
         JOIN meters m ON m.serial = s.meter WHERE m.account = $1 AND s.month < $2",
        &[account.into(), month.index().into()],
    )?;
    let events = tx
        .query(
            "SELECT id, at, kind, effect_paise, amount_paise FROM ledger_events WHERE account = $1 AND at >= $2 AND at < $3
             ORDER BY at, id",
            &[account.into(), ts(start).into(), ts(end).into()],
        )?
        .iter()
        .map(|r| {
            let id = r.text(0)?;
            Ok(StatementLine {
                arrears_paise: by_recharge.get(&id).copied().unwrap_or(0),
                id,
                at: from_ts(r.int(1)?),
                kind: r.text(2)?,
                effect_paise: r.int(3)?,
                amount_paise: r.int(4)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let energy = tx
        .query_opt(
            "SELECT CAST(SUM(s.energy_wh) AS BIGINT), CAST(SUM(s.energy_paise) AS BIGINT), CAST(SUM(s.duty_paise) AS BIGINT),
               CAST(SUM(s.tod_paise) AS BIGINT), CAST(SUM(s.export_wh) AS BIGINT)
             FROM segment_energy s JOIN meters m ON m.serial = s.meter WHERE m.account = $1 AND s.month = $2",
            &[account.into(), month.index().into()],
        )?
        .map(|r| -> Result<(i64, i64, i64, i64, i64)> {
            Ok((
                r.opt_int(0)?.unwrap_or(0),
                r.opt_int(1)?.unwrap_or(0),
                r.opt_int(2)?.unwrap_or(0),
                r.opt_int(3)?.unwrap_or(0),
                r.opt_int(4)?.unwrap_or(0),
            ))
        })
        .transpose()?
        .unwrap_or_default();
    let opening_paise = money_before - arrears_start.recovered_paise - energy_before;
    let recovered = arrears_end.recovered_paise - arrears_start.recovered_paise;
    let recovered_by_lines: i64 = events.iter().map(|e| e.arrears_paise).sum();
    let closing_paise = opening_paise + events.iter().map(|e| e.effect_paise).sum::<i64>()
        - recovered
        - energy.1
        - energy.2
        - energy.3;
    Ok(Statement {
        account: account.to_owned(),
        month: month.to_string(),
        opening_paise,
        events,
        units_wh: energy.0,
        export_wh: energy.4,
        energy_paise: energy.1,
        tod_paise: energy.3,
        duty_paise: energy.2,
        arrears_recovered_paise: recovered,
        arrears_from_earlier_recharges_paise: recovered - recovered_by_lines,
        arrears: arrears_end.into(),
        closing_paise,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_it_was_written() {
        for meter in ["M-1", "a:b:c", "x/y?&#=%", "मीटर"] {
            let cursor = ExportCursor {
                meter: meter.into(),
                at: -5,
            };
            let token = cursor.encode();
            assert!(token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            assert_eq!(ExportCursor::decode(&token).unwrap(), cursor);
        }
    }

    #[test]
    fn a_cursor_not_made_here_is_refused() {
        let forged = |raw: &str| data_encoding::BASE64URL_NOPAD.encode(raw.as_bytes());
        for token in [
            String::new(),
            "not base64!".into(),
            forged("r1:12"),
            forged("r1:x:M-1"),
            forged("r1:12:"),
            forged("r0:12:M-1"),
        ] {
            assert!(
                matches!(ExportCursor::decode(&token), Err(CentralError::Invalid(_))),
                "{token}"
            );
        }
    }

    #[test]
    fn a_statement_shows_what_each_recharge_paid_into_the_arrears() {
        use crate::accounts::{recharge, record_arrears, ArrearsRequest, RechargeRequest};
        use chrono::TimeZone;
        let t = crate::testing::central();
        t.account("A1", Some("gw-a"));
        let at = |month: u32, day: u32| Utc.with_ymd_and_hms(2026, month, day, 6, 0, 0).unwrap();
        let arrears = ArrearsRequest {
            id: "postpaid-A1".into(),
            amount_paise: 120_000,
            note: None,
        };
        t.tx(move |tx| record_arrears(tx, "A1", &arrears, at(10, 20)))
            .unwrap();
        for (key, amount, when) in [
            ("r1", 40_000, at(10, 25)),
            ("r2", 300_000, at(11, 5)),
            ("r3", 100_000, at(11, 20)),
        ] {
            let request = RechargeRequest {
                idempotency_key: key.into(),
                account: "A1".into(),
                amount_paise: amount,
                reference: None,
            };
            t.tx(move |tx| recharge(tx, &request, when)).unwrap();
        }
        let october = t
            .tx(|tx| statement(tx, "A1", Month::parse("2026-10").unwrap()))
            .unwrap();
        let november = t
            .tx(|tx| statement(tx, "A1", Month::parse("2026-11").unwrap()))
            .unwrap();
        // 100 INR of the 400 INR recharge in October; 500 (the cap) and 250 in November.
        assert_eq!(
            october
                .events
                .iter()
                .map(|e| (e.kind.as_str(), e.arrears_paise))
                .collect::<Vec<_>>(),
            [("arrears", 0), ("recharge", 10_000)]
        );
        assert_eq!(october.arrears_recovered_paise, 10_000);
        assert_eq!(october.closing_paise, 30_000);
        assert_eq!(
            november
                .events
                .iter()
                .map(|e| e.arrears_paise)
                .collect::<Vec<_>>(),
            [50_000, 25_000]
        );
        assert_eq!(november.opening_paise, october.closing_paise);
        assert_eq!(november.arrears_recovered_paise, 75_000);
        assert_eq!(november.arrears_from_earlier_recharges_paise, 0);
        assert_eq!(
            november.arrears,
            ArrearsReport {
                opening_paise: 120_000,
                recovered_paise: 85_000,
                outstanding_paise: 35_000
            }
        );
        assert_eq!(november.closing_paise, 440_000 - 85_000);
        assert_eq!(
            november.closing_paise,
            t.tx(|tx| accounts::balance_paise(tx, "A1")).unwrap()
        );
    }
}
