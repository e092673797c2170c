//! The account pages' tables as CSV: the search results, an account's recharges, and its readings
//! with their gaps (the last [`READINGS_DAYS`] days), the same rows the pages show.
use super::accounts::{account_href, ctx_or_return};
use super::accounts::{readings, recharges, search, with_gaps, ReadingRow, SEARCH_LIMIT};
use super::reports::csv_response;
use super::table::Table;
use super::Shared;
use crate::accounts;
use crate::staff::Permission;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::Duration;
use serde::Deserialize;

/// Days of readings one CSV holds (the readings API, `GET /api/v1/readings.csv`, pages through
/// everything).
const READINGS_DAYS: i64 = 90;
/// The most recharges one CSV holds.
const RECHARGES_MAX: i64 = 10_000;

/// The CSV routes, to merge into the console's router.
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/console/accounts.csv", get(search_csv))
        .route("/console/accounts/{id}/recharges.csv", get(recharges_csv))
        .route("/console/accounts/{id}/readings.csv", get(readings_csv))
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

async fn search_csv(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Response {
    let ctx = ctx_or_return!(s.authorise(&headers, "/console/accounts.csv", Permission::Read));
    let q = query.q.unwrap_or_default().trim().to_owned();
    let built = s
        .read(&ctx, move |tx| {
            let mut rows = Vec::new();
            for id in search(tx, &q, SEARCH_LIMIT)? {
                let view = accounts::account_view(tx, &id)?;
                let balance = accounts::balance_paise(tx, &id)?;
                let a = view.account;
                rows.push(vec![
                    a.id,
                    a.consumer_name,
                    a.category.as_str().to_string(),
                    a.gateway.unwrap_or_default(),
                    a.phone.unwrap_or_default(),
                    paise(balance),
                ]);
            }
            Ok(Table {
                headers: vec![
                    "Account",
                    "Name",
                    "Category",
                    "Gateway",
                    "Phone",
                    "Balance (INR)",
                ],
                rows,
                numeric: vec![5],
            })
        })
        .await;
    answer("/console/accounts", built)
}

async fn recharges_csv(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let path = format!("{}/recharges", account_href(&id));
    let ctx = ctx_or_return!(s.authorise(&headers, &path, Permission::Read));
    let built = s
        .read(&ctx, move |tx| {
            accounts::account(tx, &id)?;
            let rows = recharges(tx, &id, None, RECHARGES_MAX)?
                .into_iter()
                .map(|r| {
                    vec![
                        r.event_id,
                        r.at.to_rfc3339(),
                        paise(r.amount_paise),
                        r.reference.unwrap_or_default(),
                        r.taken_by,
                    ]
                })
                .collect();
            Ok(Table {
                headers: vec![
                    "Recharge",
                    "At (UTC)",
                    "Amount (INR)",
                    "Reference",
                    "Taken by",
                ],
                rows,
                numeric: vec![2],
            })
        })
        .await;
    answer(&path, built)
}

async fn readings_csv(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let path = format!("{}/readings", account_href(&id));
    let ctx = ctx_or_return!(s.authorise(&headers, &path, Permission::Read));
    let now = s.now();
    let built = s
        .read(&ctx, move |tx| {
            accounts::account(tx, &id)?;
            let all = readings(
                tx,
                &id,
                now - Duration::days(READINGS_DAYS),
                now + Duration::days(1),
                usize::MAX,
            )?;
            let rows = with_gaps(&all, all.len())
                .into_iter()
                .map(|row| match row {
                    ReadingRow::Reading(r) => {
                        vec![
                            r.meter,
                            r.at.to_rfc3339(),
                            r.register_wh.to_string(),
                            String::new(),
                        ]
                    }
                    ReadingRow::Gap { meter, from, to } => vec![
                        meter,
                        from.to_rfc3339(),
                        String::new(),
                        format!(
                            "no readings from {} to {}",
                            from.to_rfc3339(),
                            to.to_rfc3339()
                        ),
                    ],
                })
                .collect();
            Ok(Table {
                headers: vec!["Meter", "At (UTC)", "Register (Wh)", "Gap"],
                rows,
                numeric: vec![2],
            })
        })
        .await;
    answer(&path, built)
}

/// Paise as rupees with two decimals and no grouping (a spreadsheet reads it as a number).
fn paise(amount: i64) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn answer(path: &str, built: Result<Table, Box<Response>>) -> Response {
    match built {
        Ok(table) => csv_response(path, &table),
        Err(response) => *response,
    }
}
