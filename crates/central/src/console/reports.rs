//! The office's reports, each a page and a CSV: daily collection, consumption by category and
//! village, households disconnected now and for how long, meters not heard for more than a day;
//! and the gateway list and flags as CSV.
use super::i18n::Tr;
use super::table::Table;
use super::{gateways, Ctx, Shared};
use crate::db::Tx;
use crate::flags::{self, Which};
use crate::staff::Permission;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::civil::{self, from_ts, ts, Month};
use gramgrid_web::format::{inr, kwh, span, when};
use maud::html;
use serde::Deserialize;

/// Days the daily collection covers.
const COLLECTION_DAYS: i64 = 31;
/// Seconds Asia/Kolkata is ahead of UTC (local days in SQL: `(at + IST) / 86400`).
const IST_SECONDS: i64 = 5 * 3600 + 30 * 60;

/// The reports: (URL name, title).
const REPORTS: &[(&str, &str)] = &[
    ("collection", "Daily collection"),
    ("consumption", "Consumption by category and village"),
    ("disconnected", "Households disconnected now"),
    ("silent", "Meters not heard for more than a day"),
];

#[derive(Deserialize)]
pub(super) struct ReportQuery {
    month: Option<String>,
}

/// What a report needs besides the database.
struct Params {
    now: DateTime<Utc>,
    month: Month,
}

pub(super) async fn index(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let ctx = match s.authorise(&headers, "/console/reports", Permission::Read) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let lang = ctx.lang;
    let body = html! {
        ul {
            @for (name, title) in REPORTS {
                li { a href=(format!("/console/reports/{name}")) { (lang.tr(title)) } " · " a href=(format!("/console/reports/{name}.csv")) { "CSV" } }
            }
            li { (lang.tr("Gateways")) " · " a href="/console/reports/gateways.csv" { "CSV" } }
            li { (lang.tr("Flags")) " · " a href="/console/reports/flags.csv" { "CSV" } }
        }
    };
    s.render(&ctx, lang.tr("Reports"), None, body)
}

pub(super) async fn report(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    Query(query): Query<ReportQuery>,
) -> Response {
    let (name, as_csv) = match name.strip_suffix(".csv") {
        Some(stem) => (stem.to_string(), true),
        None => (name, false),
    };
    let path = format!("/console/reports/{name}");
    let ctx = match s.authorise(&headers, &path, Permission::Read) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let now = s.now();
    let month = match query.month.as_deref().map(Month::parse) {
        None => Month::containing(now),
        Some(Some(month)) => month,
        Some(None) => {
            let text = ctx.lang.tr("The month is written YYYY-MM, e.g. 2026-11.");
            return s.refusal(&ctx, StatusCode::BAD_REQUEST, text);
        }
    };
    let Some(title) = title_of(&name) else {
        return s.refusal(&ctx, StatusCode::NOT_FOUND, ctx.lang.tr("No such report."));
    };
    let stale_after = s.central.config().stale_after;
    let params = Params { now, month };
    let built = s
        .read(&ctx, move |tx| build(tx, &name, &params, stale_after))
        .await;
    let table = match built {
        Ok(table) => table,
        Err(response) => return *response,
    };
    if as_csv {
        return csv_response(&path, &table);
    }
    show(&s, &ctx, title, month, &table)
}

fn title_of(name: &str) -> Option<&'static str> {
    REPORTS
        .iter()
        .chain(&[("gateways", "Gateways"), ("flags", "Flags")])
        .find(|(n, _)| *n == name)
        .map(|(_, title)| *title)
}

fn show(s: &Shared, ctx: &Ctx, title: &'static str, month: Month, table: &Table) -> Response {
    let lang = ctx.lang;
    let body = html! {
        @if ctx.path.ends_with("/consumption") {
            form.inline method="get" action=(ctx.path) {
                label { (lang.tr("Month")) input name="month" value=(month.to_string()) pattern="[0-9]{4}-[0-9]{2}"; }
                button type="submit" { (lang.tr("Show")) }
            }
        }
        p { a href=(format!("{}.csv?month={month}", ctx.path)) { (lang.tr("Download as CSV")) } }
        @if table.rows.is_empty() { p { (lang.tr("Nothing here.")) } }
        @else { (table.html(|h| lang.tr(h))) }
    };
    s.render(ctx, lang.tr(title), None, body)
}

/// `table` as a CSV download named after the last part of `path`.
pub(super) fn csv_response(path: &str, table: &Table) -> Response {
    let file = path.rsplit('/').next().unwrap_or("report");
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}.csv\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        table.csv(),
    )
        .into_response()
}

fn build(
    tx: &mut dyn Tx,
    name: &str,
    p: &Params,
    stale_after: std::time::Duration,
) -> crate::Result<Table> {
    match name {
        "collection" => collection(tx, p.now),
        "consumption" => consumption(tx, p.month),
        "disconnected" => disconnected(tx, p.now),
        "silent" => silent(tx, p.now),
        "gateways" => gateway_table(tx, p.now, stale_after),
        _ => flag_table(tx),
    }
}

/// A local day counted from 1970-01-01 (as SQL's `(at + IST) / 86400` counts it), day first.
fn local_day(index: i64) -> String {
    DateTime::from_timestamp(index * 86_400, 0)
        .map_or_else(|| index.to_string(), |d| d.format("%d-%m-%Y").to_string())
}

/// Recharges per local day over the last [`COLLECTION_DAYS`] days (newest first): how many, and
/// the money taken.
fn collection(tx: &mut dyn Tx, now: DateTime<Utc>) -> crate::Result<Table> {
    let since =
        civil::start_of_local_day(civil::local_date(now - Duration::days(COLLECTION_DAYS - 1)));
    let rows = tx.query(
        "SELECT (at + $1) / 86400 AS day, COUNT(*), CAST(SUM(effect_paise) AS BIGINT)
         FROM ledger_events WHERE kind = 'recharge' AND at >= $2
         GROUP BY (at + $1) / 86400 ORDER BY day DESC",
        &[IST_SECONDS.into(), ts(since).into()],
    )?;
    Ok(Table {
        headers: vec!["Day", "Recharges", "Collected"],
        rows: rows
            .iter()
            .map(|r| {
                Ok(vec![
                    local_day(r.int(0)?),
                    r.int(1)?.to_string(),
                    inr(r.opt_int(2)?.unwrap_or(0)),
                ])
            })
            .collect::<crate::Result<_>>()?,
        numeric: vec![1, 2],
    })
}

/// Energy read in `month` per category and village (gateway), with what it was charged.
fn consumption(tx: &mut dyn Tx, month: Month) -> crate::Result<Table> {
    let rows = tx.query(
        "SELECT a.category, COALESCE(a.gateway, ''), COUNT(DISTINCT a.id),
                CAST(SUM(s.energy_wh) AS BIGINT), CAST(SUM(s.energy_paise + s.tod_paise + s.duty_paise) AS BIGINT)
         FROM segment_energy s JOIN meters m ON m.serial = s.meter JOIN accounts a ON a.id = m.account
         WHERE s.month = $1 GROUP BY a.category, a.gateway ORDER BY a.category, a.gateway",
        &[month.index().into()],
    )?;
    Ok(Table {
        headers: vec!["Category", "Village", "Accounts", "kWh", "Charged"],
        rows: rows
            .iter()
            .map(|r| {
                Ok(vec![
                    r.text(0)?,
                    r.text(1)?,
                    r.int(2)?.to_string(),
                    kwh(r.opt_int(3)?.unwrap_or(0)),
                    inr(r.opt_int(4)?.unwrap_or(0)),
                ])
            })
            .collect::<crate::Result<_>>()?,
        numeric: vec![2, 3, 4],
    })
}

/// Households whose meter last reported its relay open, longest first.
fn disconnected(tx: &mut dyn Tx, now: DateTime<Utc>) -> crate::Result<Table> {
    let rows = tx.query(
        "SELECT a.id, a.consumer_name, COALESCE(a.gateway, ''), m.serial, m.relay_state_at
         FROM meters m JOIN accounts a ON a.id = m.account
         WHERE m.relay_state = 'disconnected' ORDER BY m.relay_state_at, a.id",
        &[],
    )?;
    Ok(Table {
        headers: vec!["Account", "Name", "Village", "Meter", "Since", "For"],
        rows: rows
            .iter()
            .map(|r| {
                let since = r.opt_int(4)?.map(from_ts);
                Ok(vec![
                    r.text(0)?,
                    r.text(1)?,
                    r.text(2)?,
                    r.text(3)?,
                    since.map_or(String::new(), when),
                    since.map_or(String::new(), |at| span((now - at).num_seconds())),
                ])
            })
            .collect::<crate::Result<_>>()?,
        numeric: vec![],
    })
}

/// Meters central has no reading of in the last day (or none at all), longest silent first.
fn silent(tx: &mut dyn Tx, now: DateTime<Utc>) -> crate::Result<Table> {
    let rows = tx.query(
        "SELECT m.serial, a.id, COALESCE(a.gateway, ''), c.at
         FROM meters m JOIN accounts a ON a.id = m.account LEFT JOIN meter_cursor c ON c.meter = m.serial
         WHERE c.at IS NULL OR c.at < $1 ORDER BY c.at, m.serial",
        &[ts(now - Duration::days(1)).into()],
    )?;
    Ok(Table {
        headers: vec!["Meter", "Account", "Village", "Last reading", "Silent for"],
        rows: rows
            .iter()
            .map(|r| {
                let last = r.opt_int(3)?.map(from_ts);
                Ok(vec![
                    r.text(0)?,
                    r.text(1)?,
                    r.text(2)?,
                    last.map_or("never".into(), when),
                    last.map_or(String::new(), |at| span((now - at).num_seconds())),
                ])
            })
            .collect::<crate::Result<_>>()?,
        numeric: vec![],
    })
}

fn gateway_table(
    tx: &mut dyn Tx,
    now: DateTime<Utc>,
    stale_after: std::time::Duration,
) -> crate::Result<Table> {
    let stale_after = Duration::from_std(stale_after).unwrap_or(Duration::MAX);
    Ok(Table {
        headers: vec![
            "Gateway",
            "Last sync",
            "Stale",
            "Hours up (7 days)",
            "Hours observed",
            "Waiting to send down",
            "Meters",
            "Meters heard (24 h)",
            "Newest reading",
            "Clock offset (s)",
            "Protocol",
            "Software",
            "Running since",
            "Records waiting to upload",
            "Readings waiting to upload",
            "Oldest reading waiting at report",
            "Frames heard",
            "Polls unanswered",
            "Frames rejected",
            "Disk free (bytes)",
            "Disk size (bytes)",
            "Reported at",
        ],
        rows: gateways::gateway_rows(tx, now)?
            .into_iter()
            .map(|g| {
                vec![
                    g.id,
                    g.last_sync.map_or(String::new(), |at| at.to_rfc3339()),
                    g.last_sync
                        .is_none_or(|at| now - at > stale_after)
                        .to_string(),
                    g.uptime.up.to_string(),
                    g.uptime.observed.to_string(),
                    g.downlink_backlog.to_string(),
                    g.meters.0.to_string(),
                    g.meters.1.to_string(),
                    g.newest_reading.map_or(String::new(), |at| at.to_rfc3339()),
                    g.skew_seconds.map_or(String::new(), |s| s.to_string()),
                    g.protocol.map_or(String::new(), |p| p.to_string()),
                ]
                .into_iter()
                .chain(reported_columns(g.reported.as_ref()))
                .collect()
            })
            .collect(),
        numeric: vec![3, 4, 5, 6, 7, 9, 10, 13, 14, 16, 17, 18, 19, 20],
    })
}

/// The gateway table's columns from what the gateway last reported (blank when it has not).
fn reported_columns(reported: Option<&crate::gateway_status::Reported>) -> Vec<String> {
    let Some(reported) = reported else {
        return vec![String::new(); 11];
    };
    let status = &reported.status;
    let radio = status.radio.as_ref();
    let number = |n: Option<u64>| n.map_or(String::new(), |n| n.to_string());
    vec![
        status.software.clone(),
        status.started_at.to_rfc3339(),
        reported.still_waiting.0.to_string(),
        reported.still_waiting.1.to_string(),
        status
            .oldest_unsent
            .map_or(String::new(), |at| at.to_rfc3339()),
        number(radio.map(|r| r.uplinks)),
        number(radio.map(|r| r.silences)),
        number(radio.map(|r| r.rejected())),
        number(status.disk.map(|d| d.free)),
        number(status.disk.map(|d| d.total)),
        reported.at.to_rfc3339(),
    ]
}

fn flag_table(tx: &mut dyn Tx) -> crate::Result<Table> {
    Ok(Table {
        headers: vec![
            "Flag",
            "Kind",
            "Urgent",
            "Gateway",
            "Account",
            "At",
            "Detail",
            "Resolved by",
            "Resolved at",
            "Resolution",
        ],
        rows: flags::list(tx, Which::All)?
            .into_iter()
            .map(|f| {
                let (by, at, how) = f
                    .resolved
                    .map_or_else(Default::default, |r| (r.by, r.at.to_rfc3339(), r.how));
                vec![
                    f.id,
                    f.kind,
                    f.urgent.to_string(),
                    f.gateway.unwrap_or_default(),
                    f.account.unwrap_or_default(),
                    f.at.to_rfc3339(),
                    f.detail,
                    by,
                    at,
                    how,
                ]
            })
            .collect(),
        numeric: vec![],
    })
}
