//! An account's printable monthly bill in the console (the page of `bill::html`), and the same
//! bill as a PDF printed by headless chromium.
use super::accounts::{account_href, ctx_or_return};
use super::i18n::Tr;
use super::{Ctx, Shared};
use crate::bill::{self, MonthBill};
use crate::staff::Permission;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gramgrid_core::civil::Month;
use gramgrid_core::message::Language;
use gramgrid_web::http::html_response;
use gramgrid_web::lang::Lang;
use serde::Deserialize;

/// The bill routes, to merge into the console's router.
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/console/accounts/{id}/bill", get(page))
        .route("/console/accounts/{id}/bill.pdf", get(pdf))
}

#[derive(Deserialize)]
struct BillQuery {
    month: Option<String>,
}

/// The bill of `id` for the query's month (this month without one), or the page to answer with.
async fn bill_of(
    s: &Shared,
    headers: &HeaderMap,
    id: &str,
    query: &BillQuery,
) -> Result<(Ctx, MonthBill), Box<Response>> {
    let ctx = s.authorise(
        headers,
        &format!("{}/bill", account_href(id)),
        Permission::Read,
    )?;
    let month = match query.month.as_deref().map(Month::parse) {
        None => Month::containing(s.now()),
        Some(Some(month)) => month,
        Some(None) => {
            let text = ctx.lang.tr("The month is written YYYY-MM, e.g. 2026-11.");
            return Err(Box::new(s.refusal(&ctx, StatusCode::BAD_REQUEST, text)));
        }
    };
    let id = id.to_string();
    let bill = s
        .read(&ctx, move |tx| bill::month_bill(tx, &id, month))
        .await?;
    Ok((ctx, bill))
}

fn language(lang: Lang) -> Language {
    match lang {
        Lang::En => Language::English,
        Lang::Hi => Language::Hindi,
    }
}

async fn page(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<BillQuery>,
) -> Response {
    let (ctx, bill) = ctx_or_return!(bill_of(&s, &headers, &id, &query).await);
    html_response(bill::html::render(&bill, language(ctx.lang)))
}

async fn pdf(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<BillQuery>,
) -> Response {
    let (ctx, bill) = ctx_or_return!(bill_of(&s, &headers, &id, &query).await);
    let page = bill::html::render(&bill, language(ctx.lang)).into_string();
    let printed = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = scratch.path().join("bill.pdf");
        bill::pdf::print_to_pdf(&page, &file).map_err(|e| e.to_string())?;
        std::fs::read(&file).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match printed {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/pdf".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"bill-{id}-{}.pdf\"", bill.month),
                ),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            bytes,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "a bill could not be printed to PDF");
            let text = format!("{} {error}", ctx.lang.tr("The PDF could not be made:"));
            s.refusal(&ctx, StatusCode::SERVICE_UNAVAILABLE, &text)
        }
    }
}
