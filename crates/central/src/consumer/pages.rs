//! The household's pages: one function each, maud HTML with inline CSS and the inline SVG chart,
//! no script and no image, readable on a small phone over 2G.
use super::i18n::{inr, kwh, when, when_ago, Lang, Tr};
use super::view::AccountPage;
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::ledger::EventKind;
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// The style sheet, inline in every page (one request per page on a slow link).
const STYLE: &str = include_str!("style.css");

/// A message at the top of a page, already in the page's language.
pub enum Notice {
    /// Something done or to do next.
    Info(&'static str),
    /// Something refused, and why.
    Refused(&'static str),
}

/// Wraps `body` in the page frame: title, language switch (back to `path`), notice.
pub fn page(lang: Lang, path: &str, notice: Option<&Notice>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (lang.tr("My electricity")) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "GramGrid · " (lang.tr("My electricity")) }
                    a.lang href=(format!("/my/lang/{}?back={path}", lang.other().code())) {
                        @if lang == Lang::En { "हिन्दी" } @else { "English" }
                    }
                }
                main {
                    @match notice {
                        Some(Notice::Info(text)) => p.info role="status" { (text) },
                        Some(Notice::Refused(text)) => p.refused role="alert" { (text) },
                        None => {},
                    }
                    (body)
                }
            }
        }
    }
}

/// The first login form: account number and registered phone; `csrf` goes back with it.
pub fn ask_for_code(lang: Lang, csrf: &str) -> Markup {
    html! {
        h1 { (lang.tr("Open your page with a code")) }
        p { (lang.tr("Enter your account number and the phone number registered with the office. We send a 6-digit code to that phone.")) }
        form.card method="post" action="/my/login" {
            input type="hidden" name="csrf" value=(csrf);
            label { (lang.tr("Account number")) input name="account" autocomplete="username" autocapitalize="none" required; }
            label { (lang.tr("Registered phone number")) input name="phone" type="tel" autocomplete="tel" required; }
            button type="submit" { (lang.tr("Send me a code")) }
        }
    }
}

/// The second login form: the code sent to the phone, for `account`.
pub fn enter_code(lang: Lang, csrf: &str, account: &str) -> Markup {
    html! {
        h1 { (lang.tr("Enter your code")) }
        form.card method="post" action="/my/code" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="account" value=(account);
            label { (lang.tr("6-digit code")) input name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="6" required; }
            button type="submit" { (lang.tr("Open my page")) }
        }
        p { a href="/my/login" { (lang.tr("Ask for a new code")) } }
    }
}

/// What a refused link shows: why, in plain words, and the way in with a code. Nothing of any
/// account.
pub fn link_refused(lang: Lang, expired: bool) -> Markup {
    html! {
        h1 { (lang.tr("This link does not open your page")) }
        p {
            @if expired {
                (lang.tr("The link has expired: each link works for a limited time only."))
            } @else {
                (lang.tr("The link is not complete or has been changed. Open it exactly as it came in the SMS."))
            }
        }
        p { (lang.tr("You can open your page with your account number, your registered phone and a code we send to it.")) }
        p { a.button href="/my/login" { (lang.tr("Open with a code")) } }
    }
}

/// The household's page.
pub fn account(lang: Lang, view: &AccountPage, csrf: &str, now: DateTime<Utc>) -> Markup {
    let b = &view.balance;
    html! {
        h1 { (view.name) }
        p.muted { (lang.tr("Account")) " " (view.account) }
        section.balance {
            h2 { (lang.tr("Balance")) }
            p.big.bad[b.balance_paise < 0] { (inr(b.balance_paise)) }
            @if b.balance_paise <= 0 {
                p.refused { (lang.tr("Your balance is used up. Please recharge to keep your supply on.")) }
            }
            p {
                @match b.estimated_days_left {
                    Some(days) => { (lang.tr("About")) " " strong { (estimate(days)) } " " (lang.tr("days left")) },
                    None => (lang.tr("Not enough readings yet to estimate the days left.")),
                }
                @if let Some(units) = b.estimated_units_left {
                    " · " (lang.tr("about")) " " strong { (estimate(units)) } " " (lang.tr("units (kWh)"))
                }
            }
            p { (lang.tr("Supply")) ": " (supply(lang, &b.relay_state)) }
            (freshness(lang, view, now))
        }
        section {
            h2 { (lang.tr("Last 30 days")) }
            (chart(view))
            @let total: i64 = view.daily_wh.iter().sum();
            p {
                (lang.tr("Used")) " " (kwh(total)) " kWh · "
                (lang.tr("on average")) " " (kwh(total / view.daily_wh.len().max(1) as i64)) " kWh " (lang.tr("a day"))
            }
        }
        section {
            h2 { (lang.tr("Recharges")) }
            @if view.recharges.is_empty() {
                p { (lang.tr("No recharge yet.")) }
            } @else {
                table {
                    @for (at, paise) in &view.recharges {
                        tr { td { (when(*at)) } td.num { (inr(*paise)) } }
                    }
                }
            }
        }
        (bill(lang, view))
        form.logout method="post" action="/my/logout" {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" { (lang.tr("Log out")) }
        }
    }
}

/// Days or units as a person says them: whole numbers, one decimal below ten.
fn estimate(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// A relay state in words.
fn supply(lang: Lang, relay: &str) -> &'static str {
    match relay {
        "connected" => lang.tr("on"),
        "disconnected" => lang.tr("off"),
        _ => lang.tr("not known yet"),
    }
}

/// How old the figures are: the newest reading and the gateway's last sync, and plainly whether
/// they are up to date.
fn freshness(lang: Lang, view: &AccountPage, now: DateTime<Utc>) -> Markup {
    let b = &view.balance;
    let ago = |at: DateTime<Utc>| when_ago(at, now, lang.tr("ago"));
    html! {
        @if b.stale {
            p.stale {
                (lang.tr("Not up to date: the village gateway has not reported for a while. Your balance may now be lower."))
            }
        } @else if b.last_sync_at.is_some() {
            p.fresh { (lang.tr("Up to date.")) }
        }
        dl {
            dt { (lang.tr("Last meter reading")) }
            dd { @match view.last_reading_at { Some(at) => (ago(at)), None => (lang.tr("none yet")) } }
            dt { (lang.tr("Village gateway last reported")) }
            dd { @match b.last_sync_at { Some(at) => (ago(at)), None => (lang.tr("not yet")) } }
        }
    }
}

/// The 30 days' bars, labelled every seventh day with its date.
fn chart(view: &AccountPage) -> Markup {
    let labels: Vec<(usize, String)> = (0..view.daily_wh.len())
        .step_by(7)
        .map(|i| {
            let day = view.first_day + Duration::days(i as i64);
            (i, day.format("%d-%m").to_string())
        })
        .collect();
    gramgrid_web::chart::load_bars(&view.daily_wh, &labels)
}

/// This month's bill so far, as the month's statement has it.
fn bill(lang: Lang, view: &AccountPage) -> Markup {
    let s = &view.bill;
    let charged = |kind: EventKind| -> i64 {
        s.events
            .iter()
            .filter(|e| e.kind == kind.as_str())
            .map(|e| -e.effect_paise)
            .sum()
    };
    // (text, paise, shown when nothing is on it this month)
    let lines = [
        (lang.tr("Energy charge"), s.energy_paise, true),
        (lang.tr("Time-of-day adjustment"), s.tod_paise, false),
        (lang.tr("Electricity duty"), s.duty_paise, true),
        (
            lang.tr("Fixed charge"),
            charged(EventKind::FixedCharge),
            false,
        ),
        (
            lang.tr("Minimum charge top-up"),
            charged(EventKind::MinimumCharge),
            false,
        ),
        (
            lang.tr("Demand charge"),
            charged(EventKind::DemandCharge),
            false,
        ),
    ];
    let total: i64 = lines.iter().map(|(_, paise, _)| paise).sum();
    html! {
        section.bill {
            h2 { (lang.tr("This month's bill so far")) " (" (s.month) ")" }
            dl {
                dt { (lang.tr("Units used")) }
                dd.num { (kwh(s.units_wh)) " kWh" }
                @for (text, paise, always) in lines {
                    @if paise != 0 || always {
                        dt { (text) }
                        dd.num { (inr(paise)) }
                    }
                }
                dt.total { (lang.tr("Total so far")) }
                dd.num.total { (inr(total)) }
            }
            (printable_bill(lang, &s.month))
        }
    }
}

/// The link to the month's printable bill (`/my/bill?month=YYYY-MM`).
fn printable_bill(lang: Lang, month: &str) -> Markup {
    html! {
        p { a href=(format!("/my/bill?month={month}")) { (lang.tr("Printable bill")) } }
    }
}
