//! Vouchers at the counter: the recent ones with their state, the issue form, the print-ready
//! voucher (the code as text in groups and as a QR code, inline SVG), and cancelling with a reason.
use super::accounts::{account_href, ctx_or_return, see_other};
use super::i18n::Tr;
use super::layout::Notice;
use super::{explain, Console, Ctx, Shared};
use crate::db::Tx;
use crate::staff::Permission;
use crate::vouchers::{self, IssueRequest, IssuedVoucher};
use crate::{accounts, api, CentralError, Result};
use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use gramgrid_core::civil::from_ts;
use gramgrid_proto::voucher::MAX_LIFETIME_DAYS;
use gramgrid_web::format::{inr, when};
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;

/// How many of the latest vouchers the list shows.
pub const LIST_LIMIT: i64 = 100;
/// Days a voucher is valid unless the cashier says otherwise.
pub const DEFAULT_VALID_DAYS: i64 = 30;
/// The longest cancellation reason the form takes.
pub const MAX_REASON_CHARS: usize = 200;

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/console/vouchers", get(list_page).post(issue))
        .route("/console/vouchers/{id}/cancel", post(cancel))
}

/// A voucher as the list shows it.
pub struct VoucherRow {
    pub redemption_id: String,
    pub account: String,
    pub amount_paise: i64,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `issued`, `redeemed` or `cancelled`.
    pub state: String,
    pub redeemed_at: Option<DateTime<Utc>>,
    /// `central` or the gateway that redeemed it.
    pub redeemed_by: Option<String>,
}

/// The latest vouchers issued, newest first (at most `limit`); with `id`, only that one.
pub fn recent(tx: &mut dyn Tx, id: Option<&str>, limit: i64) -> Result<Vec<VoucherRow>> {
    tx.query(
        "SELECT redemption_id, account, amount_paise, issued_at, expires_at, state, redeemed_at, redeemed_by
         FROM vouchers WHERE ($1 = '' OR redemption_id = $1)
         ORDER BY issued_at DESC, redemption_id DESC LIMIT $2",
        &[id.unwrap_or("").into(), limit.into()],
    )?
    .iter()
    .map(|row| {
        Ok(VoucherRow {
            redemption_id: row.text(0)?,
            account: row.text(1)?,
            amount_paise: row.int(2)?,
            issued_at: from_ts(row.int(3)?),
            expires_at: from_ts(row.int(4)?),
            state: row.text(5)?,
            redeemed_at: row.opt_int(6)?.map(from_ts),
            redeemed_by: row.opt_text(7)?,
        })
    })
    .collect()
}

#[derive(Deserialize)]
struct ListQuery {
    account: Option<String>,
    cancelled: Option<String>,
}

async fn list_page(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let ctx = ctx_or_return!(s.authorise(&headers, "/console/vouchers", Permission::Cash));
    let cancelled = query.cancelled;
    let notice = |rows: &[VoucherRow]| {
        let id = cancelled.as_deref()?;
        rows.iter()
            .any(|v| v.redemption_id == id && v.state == "cancelled")
            .then(|| {
                Notice::Done(
                    ctx.lang
                        .tr("Voucher {id} is cancelled. Every gateway refuses it from its next sync.")
                        .replace("{id}", id),
                )
            })
    };
    show_list(
        &s,
        &ctx,
        query.account.as_deref().unwrap_or(""),
        notice,
        StatusCode::OK,
    )
    .await
}

/// The voucher list with the issue form (its account field filled with `account`).
async fn show_list(
    s: &Console,
    ctx: &Ctx,
    account: &str,
    notice: impl FnOnce(&[VoucherRow]) -> Option<Notice>,
    status: StatusCode,
) -> Response {
    let rows = ctx_or_return!(s.read(ctx, |tx| recent(tx, None, LIST_LIMIT)).await);
    let notice = notice(&rows);
    let lang = ctx.lang;
    let body = html! {
        h2 { (lang.tr("Issue a voucher")) }
        form.card method="post" action="/console/vouchers" {
            input type="hidden" name="csrf" value=(ctx.session.csrf);
            label { (lang.tr("Account")) input name="account" value=(account) required autocapitalize="none"; }
            label { (lang.tr("Amount (₹)")) input name="amount" inputmode="decimal" required placeholder="500"; }
            label { (lang.tr("Valid for (days)")) input name="valid_days" inputmode="numeric" value=(DEFAULT_VALID_DAYS) required; }
            button type="submit" { (lang.tr("Issue and print")) }
        }
        h2 { (lang.tr("Recent vouchers")) }
        @if rows.is_empty() { p { (lang.tr("None yet.")) } } @else {
            table.meters {
                thead { tr {
                    th { (lang.tr("Voucher")) } th { (lang.tr("Account")) } th.num { (lang.tr("Amount")) }
                    th { (lang.tr("Issued")) } th { (lang.tr("Expires")) } th { (lang.tr("State")) } th {}
                } }
                tbody { @for v in &rows { tr {
                    td { (v.redemption_id) }
                    td { a href=(account_href(&v.account)) { (v.account) } }
                    td.num { (inr(v.amount_paise)) }
                    td { (when(v.issued_at)) }
                    td { (when(v.expires_at)) }
                    td { (state_words(ctx, v)) }
                    td { @if v.state == "issued" { (cancel_form(ctx, &v.redemption_id)) } }
                } } }
            }
        }
    };
    let mut response = s.render(ctx, lang.tr("Vouchers"), notice, body);
    *response.status_mut() = status;
    response
}

fn state_words(ctx: &Ctx, v: &VoucherRow) -> Markup {
    let lang = ctx.lang;
    html! {
        @match v.state.as_str() {
            "issued" => (lang.tr("issued")),
            "cancelled" => (lang.tr("cancelled")),
            "redeemed" => {
                (lang.tr("redeemed"))
                @if let Some(at) = v.redeemed_at { " " (when(at)) }
                @if let Some(by) = &v.redeemed_by { " (" (by) ")" }
            },
            other => (other),
        }
    }
}

fn cancel_form(ctx: &Ctx, id: &str) -> Markup {
    let lang = ctx.lang;
    html! {
        form.inline method="post" action=(format!("/console/vouchers/{}/cancel", api::percent_encode(id))) {
            input type="hidden" name="csrf" value=(ctx.session.csrf);
            input name="reason" required maxlength=(MAX_REASON_CHARS) aria-label=(lang.tr("Why cancel"))
                placeholder=(lang.tr("Why cancel"));
            button type="submit" { (lang.tr("Cancel voucher")) }
        }
    }
}

#[derive(Deserialize)]
struct IssueForm {
    csrf: String,
    account: String,
    amount: String,
    valid_days: String,
}

async fn issue(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<IssueForm>,
) -> Response {
    let ctx = ctx_or_return!(s.authorise_form(
        &headers,
        "/console/vouchers",
        Permission::Cash,
        &form.csrf
    ));
    let lang = ctx.lang;
    let account = form.account.trim().to_owned();
    let amount = accounts::parse_rupees(form.amount.trim());
    let days = form
        .valid_days
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|d| (1..=MAX_LIFETIME_DAYS).contains(d));
    let (status, text) = match (amount, days) {
        (None, _) => (
            StatusCode::BAD_REQUEST,
            lang.tr("Give the amount in rupees, e.g. 500 or 500.50. No voucher was issued.")
                .to_owned(),
        ),
        (_, None) => (
            StatusCode::BAD_REQUEST,
            lang.tr("Give the days the voucher is valid as a whole number from 1 to 90. No voucher was issued.")
                .to_owned(),
        ),
        (Some(amount_paise), Some(valid_days)) => {
            let request = IssueRequest {
                account: account.clone(),
                amount_paise,
                valid_days,
            };
            let now = s.now();
            let issued = s
                .write(&ctx, move |tx| {
                    let issued = vouchers::issue(tx, &request, now)?;
                    let name = accounts::account(tx, &issued.account)?.consumer_name;
                    Ok((issued, name))
                })
                .await;
            match issued {
                Ok((voucher, name)) => return print_page(&s, &ctx, &voucher, &name),
                Err(CentralError::NotFound(_)) => (
                    StatusCode::NOT_FOUND,
                    lang.tr("There is no account {account}: check the account number (search on the Accounts page). No voucher was issued.")
                        .replace("{account}", &account),
                ),
                Err(error) => explain(&error),
            }
        }
    };
    show_list(&s, &ctx, &account, |_| Some(Notice::Refused(text)), status).await
}

/// The print-ready voucher. Central does not keep the code, so this page is the only time it is
/// shown: print it before leaving the page.
fn print_page(s: &Console, ctx: &Ctx, v: &IssuedVoucher, name: &str) -> Response {
    let lang = ctx.lang;
    let body = html! {
        div.voucher {
            dl.status {
                dt { (lang.tr("Account")) } dd { (v.account) " · " (name) }
                dt { (lang.tr("Amount")) } dd { strong { (inr(v.amount_paise)) } }
                dt { (lang.tr("Valid until")) } dd { (when(v.expires_at)) }
                dt { (lang.tr("Voucher")) } dd { (v.redemption_id) }
            }
            p.code { (grouped(&v.code)) }
            @if let Some(svg) = qr_svg(&v.code) { div.qr { (PreEscaped(svg)) } }
            p { (lang.tr("Enter this code at the meter's gateway, or give it to the technician. It credits this account only, once.")) }
        }
        p.no-print.bad { (lang.tr("Print this page now: the code is not kept and cannot be shown again. A voucher issued by mistake can be cancelled from the list.")) }
        p.no-print { a href="/console/vouchers" { (lang.tr("Back to the vouchers")) } }
    };
    s.render(ctx, lang.tr("Voucher"), None, body)
}

/// The code in its groups of five, spaced for reading aloud.
pub fn grouped(code: &str) -> String {
    code.split('-').collect::<Vec<_>>().join(" ")
}

/// The code as a QR code in inline SVG (no image request); None if it does not fit one.
pub fn qr_svg(code: &str) -> Option<String> {
    let qr = qrcode::QrCode::new(code.as_bytes()).ok()?;
    let svg = qr
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build();
    // The renderer writes a whole document: inline, only its <svg> element.
    svg.find("<svg").map(|start| svg[start..].to_owned())
}

#[derive(Deserialize)]
struct CancelForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn cancel(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Form(form): Form<CancelForm>,
) -> Response {
    let reason = form.reason.trim().to_owned();
    // The reason is kept in the audit row's path, with the staff member's name.
    let path = format!(
        "/console/vouchers/{}/cancel?reason={}",
        api::percent_encode(&id),
        api::percent_encode(&reason)
    );
    let mut ctx = ctx_or_return!(s.authorise_form(&headers, &path, Permission::Cash, &form.csrf));
    let lang = ctx.lang;
    let (status, text) = if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        (
            StatusCode::BAD_REQUEST,
            lang.tr(
                "Say why the voucher is cancelled (up to 200 characters). Nothing was changed.",
            )
            .to_owned(),
        )
    } else {
        let lookup = id.clone();
        let done = s
            .write(&ctx, move |tx| {
                let state = recent(tx, Some(&lookup), 1)?.pop().map(|v| v.state);
                if state.as_deref() == Some("cancelled") {
                    return Err(CentralError::Conflict(format!(
                        "voucher {lookup} is already cancelled; nothing was changed"
                    )));
                }
                vouchers::cancel(tx, &lookup)
            })
            .await;
        match done {
            Ok(()) => {
                return see_other(&format!(
                    "/console/vouchers?cancelled={}",
                    api::percent_encode(&id)
                ))
            }
            Err(error) => explain(&error),
        }
    };
    ctx.path = "/console/vouchers".into();
    show_list(&s, &ctx, "", |_| Some(Notice::Refused(text)), status).await
}

#[cfg(test)]
mod tests;
