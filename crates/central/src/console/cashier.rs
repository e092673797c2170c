//! The cashier's counter payment: the account page's form, idempotent by the nonce rendered into
//! it, and the printable receipt that says when the gateway hears of the payment.
use super::accounts::{
    account_href, ctx_or_return, payment_key, recharges, see_other, show_account, PageQuery,
    NONCE_LEN,
};
use super::i18n::Tr;
use super::layout::Notice;
use super::{explain, Shared};
use crate::accounts::{self, RechargeRequest};
use crate::staff::Permission;
use crate::{api, CentralError};
use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use gramgrid_web::format::{inr, span, when};
use maud::html;
use serde::Deserialize;

/// The longest receipt number or payment reference a cashier may enter.
pub const MAX_REFERENCE_CHARS: usize = 64;

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/console/accounts/{id}/payments", post(pay))
        .route("/console/accounts/{id}/receipts/{event}", get(receipt))
}

#[derive(Deserialize)]
struct PaymentForm {
    csrf: String,
    nonce: String,
    amount: String,
    #[serde(default)]
    reference: String,
}

async fn pay(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Form(form): Form<PaymentForm>,
) -> Response {
    let href = account_href(&id);
    let mut ctx = ctx_or_return!(s.authorise_form(
        &headers,
        &format!("{href}/payments"),
        Permission::Cash,
        &form.csrf
    ));
    let lang = ctx.lang;
    let reference = form.reference.trim().to_owned();
    let nonce_ok =
        form.nonce.len() == NONCE_LEN && form.nonce.bytes().all(|b| b.is_ascii_hexdigit());
    let refused = if !nonce_ok {
        Some(
            lang.tr(
                "The payment form was damaged. Nothing was charged; enter the payment again below.",
            )
            .to_owned(),
        )
    } else if reference.chars().count() > MAX_REFERENCE_CHARS {
        Some(
            lang.tr(
                "The receipt number is too long: keep it to 64 characters. Nothing was charged.",
            )
            .to_owned(),
        )
    } else {
        None
    };
    let amount = accounts::parse_rupees(form.amount.trim());
    let (status, text) = match (refused, amount) {
        (Some(text), _) => (StatusCode::BAD_REQUEST, text),
        (None, None) => (
            StatusCode::BAD_REQUEST,
            lang.tr("Give the amount in rupees, e.g. 500 or 500.50. Nothing was charged.")
                .to_owned(),
        ),
        (None, Some(amount_paise)) => {
            let request = RechargeRequest {
                idempotency_key: payment_key(&ctx.session.name, &form.nonce),
                account: id.clone(),
                amount_paise,
                reference: (!reference.is_empty()).then_some(reference),
            };
            let now = s.now();
            match s
                .write(&ctx, move |tx| accounts::recharge(tx, &request, now))
                .await
            {
                Ok(receipt) => {
                    let again = if receipt.created { "" } else { "?again=1" };
                    return see_other(&format!(
                        "{href}/receipts/{}{again}",
                        api::percent_encode(&receipt.event_id)
                    ));
                }
                Err(CentralError::Conflict(_)) => (
                    StatusCode::CONFLICT,
                    lang.tr("This payment form was already used for a different payment. Nothing was charged; the form below is new: enter the payment again.")
                        .to_owned(),
                ),
                Err(error) => explain(&error),
            }
        }
    };
    // Back to the account page, with a fresh form.
    ctx.path = href;
    show_account(
        &s,
        &ctx,
        &id,
        &PageQuery::default(),
        Some(Notice::Refused(text)),
        status,
    )
    .await
}

#[derive(Deserialize)]
struct ReceiptQuery {
    again: Option<String>,
}

async fn receipt(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath((id, event)): UrlPath<(String, String)>,
    Query(query): Query<ReceiptQuery>,
) -> Response {
    let href = account_href(&id);
    let path = format!("{href}/receipts/{}", api::percent_encode(&event));
    let ctx = ctx_or_return!(s.authorise(&headers, &path, Permission::Read));
    let lang = ctx.lang;
    let (account_id, now) = (id.clone(), s.now());
    let stale_after = chrono::Duration::MAX;
    let book = s.central.tariff_book();
    let found = s
        .read(&ctx, move |tx| {
            let account = accounts::account(tx, &account_id)?;
            let recharge = recharges(tx, &account_id, Some(&event), 1)?.pop();
            let balance = accounts::balance(tx, &account_id, now, stale_after, &book)?;
            Ok((account, recharge, balance))
        })
        .await;
    let (account, recharge, balance) = ctx_or_return!(found);
    let Some(recharge) = recharge else {
        let text = lang
            .tr("This account has no such payment. Open the account page to see its recharges.");
        return s.refusal(&ctx, StatusCode::NOT_FOUND, text);
    };
    let notice = query.again.map(|_| {
        Notice::Done(
            lang.tr("This payment form had already been sent: the payment was recorded once, not twice.")
                .to_owned(),
        )
    });
    let body = html! {
        div.receipt {
            dl.status {
                dt { (lang.tr("Account")) } dd { (account.id) " · " (account.consumer_name) }
                dt { (lang.tr("Amount")) } dd { strong { (inr(recharge.amount_paise)) } }
                dt { (lang.tr("Reference")) } dd { (recharge.reference.as_deref().unwrap_or("—")) }
                dt { (lang.tr("Time")) } dd { (when(recharge.at)) }
                dt { (lang.tr("Taken by")) } dd { (recharge.taken_by) }
                dt { (lang.tr("Balance now")) } dd { (inr(balance.balance_paise)) }
                dt { (lang.tr("Payment id")) } dd { (recharge.event_id) }
            }
            p { (gateway_words(lang, account.gateway.as_deref(), balance.last_sync_at, recharge.at, now)) }
        }
        p.no-print { a href=(href) { (lang.tr("Back to the account")) } }
    };
    s.render(&ctx, lang.tr("Payment receipt"), notice, body)
}

/// When the account's gateway hears of a payment made at `paid`: the gateway takes it at its
/// next sync (and the meter's balance with it).
fn gateway_words(
    lang: gramgrid_web::lang::Lang,
    gateway: Option<&str>,
    last_sync: Option<DateTime<Utc>>,
    paid: DateTime<Utc>,
    now: DateTime<Utc>,
) -> String {
    let text = match (gateway, last_sync) {
        (None, _) => lang.tr("This account has no gateway yet: the payment counts at central, and its gateway will receive it when one is assigned."),
        (Some(_), Some(at)) if at > paid => lang.tr("Gateway {gateway} has synced since the payment (at {at}): it has the payment."),
        (Some(_), Some(_)) => lang.tr("Gateway {gateway} receives the payment at its next sync, usually within minutes while its link is up. It last synced at {at} ({ago} ago)."),
        (Some(_), None) => lang.tr("Gateway {gateway} has never synced: it receives the payment at its first sync."),
    };
    text.replace("{gateway}", gateway.unwrap_or_default())
        .replace("{at}", &last_sync.map(when).unwrap_or_default())
        .replace(
            "{ago}",
            &span(last_sync.map_or(0, |at| (now - at).num_seconds())),
        )
}
