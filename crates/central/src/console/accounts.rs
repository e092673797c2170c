//! The account pages: search, an account's page (balance, messages, recharges, load chart,
//! readings with their gaps, relay decisions, the cashier's payment form) and its monthly statement.
use super::i18n::Tr;
use super::layout::Notice;
use super::{Console, Ctx, Shared};
use crate::accounts::{self, RechargeRequest};
use crate::db::Tx;
use crate::staff::Permission;
use crate::{api, decisions, export, notify, Result};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::civil::{self, from_ts, ts, Month};
use gramgrid_core::policy::RelayAction;
use gramgrid_core::tariff::INTERVAL_SECS;
use gramgrid_web::chart;
use gramgrid_web::format::{inr, kwh, when};
use gramgrid_web::lang::Lang;
use maud::{html, Markup};
use serde::Deserialize;

/// The most accounts one search shows.
pub const SEARCH_LIMIT: usize = 100;
/// Readings per page of an account's readings table (a day of one meter).
pub const READINGS_PAGE: usize = 96;
/// Recharges, messages and relay decisions an account page lists, newest first.
const HISTORY_LIMIT: i64 = 50;
/// The most readings a load chart reads (a month of 15-minute readings is under 3,000 a meter).
const CHART_READINGS_MAX: usize = 20_000;

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/console/accounts", get(search_page))
        .route("/console/accounts/{id}", get(account_page))
        .route("/console/accounts/{id}/statement", get(statement_page))
}

/// An account's page, `/console/accounts/{id}` with its id percent-encoded.
pub(super) fn account_href(id: &str) -> String {
    format!("/console/accounts/{}", api::percent_encode(id))
}

/// A `Result<Ctx, Box<Response>>` as the context, or the response to return.
macro_rules! ctx_or_return {
    ($authorised:expr) => {
        match $authorised {
            Ok(ctx) => ctx,
            Err(response) => return *response,
        }
    };
}
pub(super) use ctx_or_return;

// ---------------------------------------------------------------------------------------------
// Search

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

/// One account found.
struct Found {
    view: accounts::AccountView,
    balance: accounts::Balance,
}

/// Accounts whose id, phone or meter serial is `q`, whose phone ends with it, or whose consumer
/// name holds it (any letter case): at most `limit`, by id.
pub fn search(tx: &mut dyn Tx, q: &str, limit: usize) -> Result<Vec<String>> {
    let escaped = q
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let rows = tx.query(
        "SELECT a.id FROM accounts a WHERE a.id = $1 OR a.phone = $1
           OR a.phone LIKE $3 ESCAPE '\\' OR LOWER(a.consumer_name) LIKE $2 ESCAPE '\\'
           OR EXISTS (SELECT 1 FROM meters m WHERE m.account = a.id AND m.serial = $1)
         ORDER BY a.id LIMIT $4",
        &[
            q.into(),
            format!("%{escaped}%").into(),
            format!("%{escaped}").into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
        ],
    )?;
    rows.iter().map(|row| Ok(row.text(0)?)).collect()
}

async fn search_page(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Response {
    let ctx = ctx_or_return!(s.authorise(&headers, "/console/accounts", Permission::Read));
    let q = query.q.unwrap_or_default().trim().to_owned();
    let (now, stale_after, book) = balance_inputs(&s);
    let lookup = q.clone();
    let found = s
        .read(&ctx, move |tx| {
            if lookup.is_empty() {
                return Ok(Vec::new());
            }
            let ids = search(tx, &lookup, SEARCH_LIMIT + 1)?;
            ids.iter()
                .map(|id| {
                    Ok(Found {
                        view: accounts::account_view(tx, id)?,
                        balance: accounts::balance(tx, id, now, stale_after, &book)?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .await;
    let found = ctx_or_return!(found);
    let lang = ctx.lang;
    let more = found.len() > SEARCH_LIMIT;
    let body = html! {
        form.search method="get" action="/console/accounts" {
            input name="q" value=(q) aria-label=(lang.tr("Account, name, phone or meter serial"))
                placeholder=(lang.tr("Account, name, phone or meter serial")) autofocus;
            button type="submit" { (lang.tr("Search")) }
        }
        @if q.is_empty() {
            p { (lang.tr("Search by account number, consumer name (or part of it), phone number or meter serial.")) }
        } @else if found.is_empty() {
            p { (lang.tr("No account matches. Check the spelling, or search by part of the name.")) }
        } @else {
            table.meters {
                thead { tr {
                    th { (lang.tr("Account")) } th { (lang.tr("Name")) } th { (lang.tr("Category")) }
                    th { (lang.tr("Gateway")) } th.num { (lang.tr("Balance")) } th { (lang.tr("Relay")) }
                } }
                tbody {
                    @for f in found.iter().take(SEARCH_LIMIT) {
                        tr {
                            td { a href=(account_href(&f.view.account.id)) { (f.view.account.id) } }
                            td { (f.view.account.consumer_name) }
                            td { (lang.tr(f.view.account.category.as_str())) }
                            td { (f.view.account.gateway.as_deref().unwrap_or("—")) }
                            td.num { (inr(f.balance.balance_paise)) }
                            td { (relay_words(lang, &f.balance.relay_state)) }
                        }
                    }
                }
            }
            p { a href=(format!("/console/accounts.csv?q={}", api::percent_encode(&q))) { (lang.tr("Download as CSV")) } }
            @if more {
                p { (lang.tr("More accounts match than are shown (the first 100). Narrow the search.")) }
            }
        }
    };
    s.render(&ctx, lang.tr("Accounts"), None, body)
}

/// What a balance report needs from central's state.
fn balance_inputs(
    s: &Console,
) -> (
    DateTime<Utc>,
    Duration,
    std::sync::Arc<gramgrid_core::tariff::TariffBook>,
) {
    let stale_after = Duration::from_std(s.central.config().stale_after).unwrap_or(Duration::MAX);
    (s.now(), stale_after, s.central.tariff_book())
}

fn relay_words(lang: Lang, state: &str) -> &'static str {
    match state {
        "connected" => lang.tr("connected"),
        "disconnected" => lang.tr("disconnected"),
        "mixed" => lang.tr("mixed (meters differ)"),
        _ => lang.tr("unknown"),
    }
}

// ---------------------------------------------------------------------------------------------
// Recharges

/// A recharge as the account page and the receipt show it.
pub(super) struct Recharge {
    pub event_id: String,
    pub at: DateTime<Utc>,
    pub amount_paise: i64,
    /// The receipt number or payment reference given with it.
    pub reference: Option<String>,
    /// Who took it: a staff member's login name (console), "API", or where a voucher was redeemed.
    pub taken_by: String,
}

/// The idempotency key of a payment taken in the console by staff member `name`: the name is in
/// the key, so the recharge history says who took it.
pub(super) fn payment_key(name: &str, nonce: &str) -> String {
    format!("staff:{name}:{nonce}")
}

/// An account's recharges, newest first (at most `limit`); with `event`, only that one.
pub(super) fn recharges(
    tx: &mut dyn Tx,
    account: &str,
    event: Option<&str>,
    limit: i64,
) -> Result<Vec<Recharge>> {
    let rows = tx.query(
        "SELECT l.id, l.at, l.amount_paise, l.source, r.idempotency_key, r.request
         FROM ledger_events l LEFT JOIN recharge_requests r ON r.event_id = l.id
         WHERE l.account = $1 AND l.kind = 'recharge' AND ($2 = '' OR l.id = $2)
         ORDER BY l.at DESC, l.id DESC LIMIT $3",
        &[account.into(), event.unwrap_or("").into(), limit.into()],
    )?;
    rows.iter()
        .map(|row| {
            let (id, source) = (row.text(0)?, row.text(3)?);
            let key = row.opt_text(4)?;
            // The stored request is `recharge:<its JSON>`.
            let reference = row
                .opt_text(5)?
                .and_then(|r| {
                    let json = r.split_once(':').map(|(_, json)| json.to_owned())?;
                    serde_json::from_str::<RechargeRequest>(&json).ok()
                })
                .and_then(|r| r.reference);
            let taken_by = match key.as_deref().map(|k| k.split(':').collect::<Vec<_>>()) {
                Some(parts) if parts.len() == 3 && parts[0] == "staff" => parts[1].to_owned(),
                Some(_) => "API".to_owned(),
                None if id.starts_with("voucher:") => format!("voucher ({source})"),
                None => source,
            };
            Ok(Recharge {
                reference: reference.or_else(|| id.starts_with("voucher:").then(|| id.clone())),
                event_id: id,
                at: from_ts(row.int(1)?),
                amount_paise: row.int(2)?,
                taken_by,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Readings: the table with its gaps, and the load chart

/// One stored reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub meter: String,
    pub at: DateTime<Utc>,
    pub register_wh: i64,
}

/// A row of the readings table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadingRow {
    /// A reading.
    Reading(Reading),
    /// Missing 15-minute intervals of a meter: no reading at `from`, `to` or between.
    Gap {
        meter: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// An account's readings at or after `from` and before `before`, newest first, at most `limit`.
pub fn readings(
    tx: &mut dyn Tx,
    account: &str,
    from: DateTime<Utc>,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Reading>> {
    tx.query(
        "SELECT r.meter, r.at, r.register_wh FROM readings r JOIN meters m ON m.serial = r.meter
         WHERE m.account = $1 AND r.at >= $2 AND r.at < $3 ORDER BY r.at DESC, r.meter LIMIT $4",
        &[
            account.into(),
            ts(from).into(),
            ts(before).into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
        ],
    )?
    .iter()
    .map(|row| {
        Ok(Reading {
            meter: row.text(0)?,
            at: from_ts(row.int(1)?),
            register_wh: row.int(2)?,
        })
    })
    .collect()
}

/// The first `shown` of `newest_first` as table rows, each followed by the gap (if any) before
/// it: the intervals missing between it and its meter's next older reading (which may be past
/// `shown`, from the next page).
pub fn with_gaps(newest_first: &[Reading], shown: usize) -> Vec<ReadingRow> {
    let interval = Duration::seconds(INTERVAL_SECS);
    let mut rows = Vec::new();
    for (i, reading) in newest_first.iter().enumerate().take(shown) {
        rows.push(ReadingRow::Reading(reading.clone()));
        let older = newest_first[i + 1..]
            .iter()
            .find(|o| o.meter == reading.meter);
        if let Some(older) = older.filter(|o| reading.at - o.at > interval) {
            rows.push(ReadingRow::Gap {
                meter: reading.meter.clone(),
                from: older.at + interval,
                to: reading.at - interval,
            });
        }
    }
    rows
}

/// The load chart's span: a day or a week of hourly bars, or a month of daily bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Range {
    /// The last 24 hours, hourly.
    #[default]
    Day,
    /// The last 7 days, hourly.
    Week,
    /// The last 30 local days, daily.
    Month,
}

impl Range {
    fn parse(text: Option<&str>) -> Range {
        match text {
            Some("week") => Range::Week,
            Some("month") => Range::Month,
            _ => Range::Day,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Range::Day => "day",
            Range::Week => "week",
            Range::Month => "month",
        }
    }

    /// The first slot's start, the slot length in seconds and the number of slots, at `now`.
    pub fn slots(self, now: DateTime<Utc>) -> (DateTime<Utc>, i64, usize) {
        let next_hour =
            now - Duration::seconds(now.timestamp().rem_euclid(3600)) + Duration::hours(1);
        match self {
            Range::Day => (next_hour - Duration::hours(24), 3600, 24),
            Range::Week => (next_hour - Duration::hours(7 * 24), 3600, 7 * 24),
            Range::Month => {
                let first = civil::local_date(now) - chrono::Days::new(29);
                (civil::start_of_local_day(first), 86_400, 30)
            }
        }
    }
}

/// Energy per slot of `range` from readings (any order, any meters), with the slots' labels.
pub fn load(
    readings: &[Reading],
    range: Range,
    now: DateTime<Utc>,
) -> (Vec<i64>, Vec<(usize, String)>) {
    let (start, slot, count) = range.slots(now);
    let mut total = vec![0; count];
    let mut meters: Vec<&str> = readings.iter().map(|r| r.meter.as_str()).collect();
    meters.sort_unstable();
    meters.dedup();
    for meter in meters {
        let mut own: Vec<(DateTime<Utc>, i64)> = readings
            .iter()
            .filter(|r| r.meter == meter)
            .map(|r| (r.at, r.register_wh))
            .collect();
        own.sort_unstable();
        for (sum, wh) in total
            .iter_mut()
            .zip(chart::energy_per_slot(&own, start, slot, count))
        {
            *sum += wh;
        }
    }
    let labels = (0..count)
        .filter_map(|i| {
            let local = civil::local(start + Duration::seconds(slot * i as i64));
            let hour = chrono::Timelike::hour(&local);
            match range {
                Range::Day => hour
                    .is_multiple_of(6)
                    .then(|| local.format("%H:00").to_string()),
                Range::Week => (hour == 0).then(|| local.format("%d-%m").to_string()),
                Range::Month => i
                    .is_multiple_of(7)
                    .then(|| local.format("%d-%m").to_string()),
            }
            .map(|label| (i, label))
        })
        .collect();
    (total, labels)
}

// ---------------------------------------------------------------------------------------------
// The account page

#[derive(Deserialize, Default)]
pub(super) struct PageQuery {
    range: Option<String>,
    /// Readings older than this (UTC seconds): the readings table's next page.
    before: Option<i64>,
}

/// What an account page shows.
struct AccountData {
    view: accounts::AccountView,
    meters: Vec<String>,
    balance: accounts::Balance,
    messages: Vec<notify::MessageRecord>,
    recharges: Vec<Recharge>,
    chart_readings: Vec<Reading>,
    table_readings: Vec<Reading>,
    decisions: Vec<decisions::Decision>,
}

async fn account_page(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let ctx = ctx_or_return!(s.authorise(&headers, &account_href(&id), Permission::Read));
    show_account(&s, &ctx, &id, &query, None, StatusCode::OK).await
}

/// The account page of `id` with `notice` (the cashier's refusals come back here).
pub(super) async fn show_account(
    s: &Console,
    ctx: &Ctx,
    id: &str,
    query: &PageQuery,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let (now, stale_after, book) = balance_inputs(s);
    let range = Range::parse(query.range.as_deref());
    let before = query.before.map_or(now + Duration::days(1), from_ts);
    let id_owned = id.to_owned();
    let data = s
        .read(ctx, move |tx| {
            let id = id_owned.as_str();
            let view = accounts::account_view(tx, id)?;
            let (start, slot, _) = range.slots(now);
            Ok(AccountData {
                meters: accounts::meters_of(tx, id)?
                    .into_iter()
                    .map(|m| m.serial)
                    .collect(),
                balance: accounts::balance(tx, id, now, stale_after, &book)?,
                messages: notify::account_messages(tx, id, HISTORY_LIMIT)?,
                recharges: recharges(tx, id, None, HISTORY_LIMIT)?,
                // One slot before the first gives it its starting register.
                chart_readings: readings(
                    tx,
                    id,
                    start - Duration::seconds(slot),
                    now + Duration::days(1),
                    CHART_READINGS_MAX,
                )?,
                // One more than a page: its gap, if any, shows on this page.
                table_readings: readings(tx, id, DateTime::UNIX_EPOCH, before, READINGS_PAGE + 1)?,
                decisions: decisions::of_account(tx, id, None, HISTORY_LIMIT)?,
                view,
            })
        })
        .await;
    let data = ctx_or_return!(data);
    let title = format!(
        "{} {} · {}",
        ctx.lang.tr("Account"),
        data.view.account.id,
        data.view.account.consumer_name
    );
    let body = account_body(ctx, &data, range, now);
    let mut response = s.render(ctx, &title, notice, body);
    *response.status_mut() = status;
    response
}

fn account_body(ctx: &Ctx, d: &AccountData, range: Range, now: DateTime<Utc>) -> Markup {
    let lang = ctx.lang;
    let account = &d.view.account;
    let href = account_href(&account.id);
    let b = &d.balance;
    let (per_slot, labels) = load(&d.chart_readings, range, now);
    let page_rows = with_gaps(&d.table_readings, READINGS_PAGE);
    let older = (d.table_readings.len() > READINGS_PAGE)
        .then(|| d.table_readings[READINGS_PAGE - 1].at.timestamp());
    let month = Month::containing(now);
    html! {
        h2 { (lang.tr("Details")) }
        dl.status {
            dt { (lang.tr("Name")) } dd { (account.consumer_name) }
            dt { (lang.tr("Category")) } dd { (lang.tr(account.category.as_str())) }
            dt { (lang.tr("Phone")) } dd { (account.phone.as_deref().unwrap_or("—")) }
            dt { (lang.tr("Gateway")) } dd { (account.gateway.as_deref().unwrap_or("—")) }
            dt { (lang.tr("Meters")) } dd { (d.meters.join(", ")) }
            dt { (lang.tr("Protected")) }
            dd { @match &d.view.protected { Some(why) => { (lang.tr("yes")) ": " (why) }, None => (lang.tr("no")) } }
            dt { (lang.tr("Sanctioned load")) }
            dd { @match d.view.sanctioned_load_w { Some(w) => { (kwh(w)) " kW" }, None => "—" } }
        }
        h2 { (lang.tr("Balance")) }
        dl.status {
            dt { (lang.tr("Balance")) } dd { strong { (inr(b.balance_paise)) } }
            dt { (lang.tr("As of")) }
            dd {
                (when(b.valid_at))
                @if b.stale { " " span.bad { (lang.tr("(stale: the gateway has not synced for a while; the true balance may differ)")) } }
            }
            dt { (lang.tr("Days left")) }
            dd { @match b.estimated_days_left { Some(days) => (format!("{days:.1}")), None => "—" } }
            dt { (lang.tr("Units left")) }
            dd { @match b.estimated_units_left { Some(units) => { (format!("{units:.1}")) " kWh" }, None => "—" } }
            dt { (lang.tr("Relay")) } dd { (relay_words(lang, &b.relay_state)) }
            @if b.arrears.opening_paise != 0 {
                dt { (lang.tr("Arrears outstanding")) } dd { (inr(b.arrears.outstanding_paise)) " / " (inr(b.arrears.opening_paise)) }
            }
        }
        p {
            a href=(format!("{href}/statement?month={month}")) { (lang.tr("Statement for this month")) }
            " · "
            a href=(format!("{href}/statement?month={}", month.previous())) { (lang.tr("last month")) }
            " · "
            a href=(format!("{href}/bill?month={}", month.previous())) { (lang.tr("Last month's bill")) }
            " (" a href=(format!("{href}/bill.pdf?month={}", month.previous())) { "PDF" } ")"
            " · "
            a href=(format!("{href}/bill?month={month}")) { (lang.tr("This month's bill so far")) }
        }
        @if ctx.session.role.may(Permission::Cash) {
            (payment_form(ctx, &href))
            p { a href=(format!("/console/vouchers?account={}", api::percent_encode(&account.id))) { (lang.tr("Issue a voucher for this account")) } }
        }
        h2 { (lang.tr("Load")) }
        p {
            @for r in [Range::Day, Range::Week, Range::Month] {
                @let label = match r { Range::Day => lang.tr("Day"), Range::Week => lang.tr("Week"), Range::Month => lang.tr("Month") };
                @if r == range { strong { (label) } } @else { a href=(format!("{href}?range={}", r.code())) { (label) } }
                " "
            }
        }
        (chart::load_bars(&per_slot, &labels))
        p { (lang.tr("Total")) ": " (kwh(per_slot.iter().sum())) " kWh" }
        h2 { (lang.tr("Recharges")) }
        p { a href=(format!("{href}/recharges.csv")) { (lang.tr("Download as CSV")) } }
        @if d.recharges.is_empty() { p { (lang.tr("None yet.")) } } @else {
            table.meters {
                thead { tr { th { (lang.tr("Time")) } th.num { (lang.tr("Amount")) } th { (lang.tr("Reference")) } th { (lang.tr("Taken by")) } } }
                tbody { @for r in &d.recharges { tr {
                    td { (when(r.at)) } td.num { (inr(r.amount_paise)) }
                    td { (r.reference.as_deref().unwrap_or("—")) } td { (r.taken_by) }
                } } }
            }
        }
        h2 { (lang.tr("Alerts and messages")) }
        @if d.messages.is_empty() { p { (lang.tr("None yet.")) } } @else {
            table.meters {
                thead { tr { th { (lang.tr("Time")) } th { (lang.tr("Kind")) } th { (lang.tr("State")) } th { (lang.tr("Text")) } } }
                tbody { @for m in &d.messages { tr {
                    td { (when(m.created_at)) } td { (m.kind) } td { (m.state) } td { (m.text) }
                } } }
            }
        }
        h2 { (lang.tr("Disconnections and reconnections")) }
        @if d.decisions.is_empty() { p { (lang.tr("None yet.")) } } @else {
            @for decision in &d.decisions {
                section.decision {
                    p {
                        strong { (when(decision.at)) " · " (action_words(lang, decision.action)) }
                        " (" (lang.tr("gateway")) " " (decision.gateway) ")"
                    }
                    p { (lang.tr("Rule")) ": " (decision.rule) }
                    details {
                        summary { (lang.tr("The facts and the replay")) }
                        @for line in &decision.words { p { (line) } }
                    }
                }
            }
        }
        h2 { (lang.tr("Readings")) }
        p { a href=(format!("{href}/readings.csv")) { (lang.tr("Download as CSV (the last 90 days)")) } }
        @if page_rows.is_empty() { p { (lang.tr("None yet.")) } } @else {
            table.meters {
                thead { tr { th { (lang.tr("Time")) } th { (lang.tr("Meter")) } th.num { (lang.tr("Register (kWh)")) } } }
                tbody { @for row in &page_rows { @match row {
                    ReadingRow::Reading(r) => tr { td { (when(r.at)) } td { (r.meter) } td.num { (kwh(r.register_wh)) } },
                    ReadingRow::Gap { meter, from, to } => tr.gap {
                        td colspan="3" { (lang.tr("No readings from {from} to {to} ({meter})")
                            .replace("{from}", &when(*from)).replace("{to}", &when(*to)).replace("{meter}", meter)) }
                    },
                } } }
            }
            @if let Some(before) = older {
                p { a href=(format!("{href}?range={}&before={before}", range.code())) { (lang.tr("Older readings")) } }
            }
        }
    }
}

fn action_words(lang: Lang, action: Option<RelayAction>) -> &'static str {
    match action {
        Some(RelayAction::Disconnect) => lang.tr("Disconnect"),
        Some(RelayAction::Connect) => lang.tr("Reconnect"),
        None => lang.tr("No relay command"),
    }
}

/// The cashier's form on the account page. Its nonce, made when the page is rendered, is the
/// payment's idempotency key (with the cashier's name): sending the form twice pays once.
fn payment_form(ctx: &Ctx, href: &str) -> Markup {
    let lang = ctx.lang;
    let nonce = new_nonce();
    html! {
        h2 { (lang.tr("Take a payment")) }
        form.card method="post" action=(format!("{href}/payments")) {
            input type="hidden" name="csrf" value=(ctx.session.csrf);
            input type="hidden" name="nonce" value=(nonce);
            label { (lang.tr("Amount (₹)")) input name="amount" inputmode="decimal" required placeholder="500"; }
            label { (lang.tr("Receipt number or reference")) input name="reference" maxlength="64"; }
            button type="submit" { (lang.tr("Take payment")) }
        }
    }
}

/// A fresh form nonce: 20 hex digits (80 random bits).
pub(super) fn new_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..NONCE_LEN].to_owned()
}

/// A form nonce's length.
pub(super) const NONCE_LEN: usize = 20;

// ---------------------------------------------------------------------------------------------
// The statement

#[derive(Deserialize)]
struct StatementQuery {
    month: Option<String>,
}

async fn statement_page(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<StatementQuery>,
) -> Response {
    let href = account_href(&id);
    let ctx = ctx_or_return!(s.authorise(&headers, &format!("{href}/statement"), Permission::Read));
    let lang = ctx.lang;
    let month = match query.month.as_deref().map(Month::parse) {
        None => Month::containing(s.now()),
        Some(Some(month)) => month,
        Some(None) => {
            let text = lang.tr("Give the month as YYYY-MM, e.g. 2026-04.");
            return s.refusal(&ctx, StatusCode::BAD_REQUEST, text);
        }
    };
    let lookup = id.clone();
    let st = ctx_or_return!(
        s.read(&ctx, move |tx| export::statement(tx, &lookup, month))
            .await
    );
    let kinds = |kind: &str| match kind {
        "recharge" => lang.tr("Recharge"),
        "charge" => lang.tr("Charge"),
        "fixed_charge" => lang.tr("Fixed charge"),
        "minimum_charge" => lang.tr("Minimum charge top-up"),
        "demand_charge" => lang.tr("Demand charge"),
        "export_credit" => lang.tr("Export credit"),
        "adjustment" => lang.tr("Adjustment"),
        "emergency_credit" => lang.tr("Emergency credit"),
        "arrears" => lang.tr("Arrears"),
        _ => lang.tr("Other"),
    };
    let body = html! {
        p {
            a href=(href) { (lang.tr("Back to the account")) } " · "
            a href=(format!("{href}/statement?month={}", month.previous())) { (lang.tr("Previous month")) } " · "
            a href=(format!("{href}/statement?month={}", month.next())) { (lang.tr("Next month")) }
        }
        table.meters.statement {
            tbody {
                tr { th colspan="3" { (lang.tr("Opening balance")) } td.num { (inr(st.opening_paise)) } }
                @for line in &st.events {
                    tr {
                        td { (when(line.at)) }
                        td { (kinds(&line.kind)) }
                        td { @if line.arrears_paise != 0 { (lang.tr("to arrears")) " " (inr(line.arrears_paise)) } }
                        td.num { (inr(line.effect_paise)) }
                    }
                }
                tr { td colspan="3" { (lang.tr("Energy")) " " (kwh(st.units_wh)) " kWh"
                    @if st.export_wh != 0 { " (" (lang.tr("exported")) " " (kwh(st.export_wh)) " kWh)" } }
                    td.num { (inr(-st.energy_paise)) } }
                tr { td colspan="3" { (lang.tr("Time-of-day adjustment")) } td.num { (inr(-st.tod_paise)) } }
                tr { td colspan="3" { (lang.tr("Electricity duty")) } td.num { (inr(-st.duty_paise)) } }
                tr { td colspan="3" { (lang.tr("Arrears recovered")) } td.num { (inr(-st.arrears_recovered_paise)) } }
                tr { th colspan="3" { (lang.tr("Closing balance")) } td.num { strong { (inr(st.closing_paise)) } } }
            }
        }
        @if st.arrears.opening_paise != 0 {
            p { (lang.tr("Arrears outstanding")) ": " (inr(st.arrears.outstanding_paise)) }
        }
    };
    let title = format!("{} {} · {}", lang.tr("Statement"), st.account, st.month);
    s.render(&ctx, &title, None, body)
}

/// `response` for a redirect after a form (303: the browser GETs the target).
pub(super) fn see_other(to: &str) -> Response {
    axum::response::Redirect::to(to).into_response()
}

#[cfg(test)]
pub(super) mod tests;
