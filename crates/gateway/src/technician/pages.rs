//! The app's HTML: one function per page, plain server-rendered forms, no script. Mobile first,
//! large type and high contrast for a phone in sunlight.
use super::auth::{Role, Session};
use super::i18n::{inr, kwh, span, when, when_ago, Lang, Tr};
use crate::link::MeterLinkHealth;
use crate::report::AccountStatus;
use chrono::{DateTime, Utc};
use gramgrid_core::policy::RelayState;
use gramgrid_proto::wire::{AuditReason, DiskSpace, EnergyAuditDay, RadioCounters};
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// What every page's frame needs.
pub struct Frame<'a> {
    /// The page's language.
    pub lang: Lang,
    /// The page's own path (for the language switch to come back to).
    pub path: &'a str,
    /// The logged-in technician, if any.
    pub session: Option<&'a Session>,
    /// The gateway's id.
    pub gateway: &'a str,
}

/// A message at the top of a page.
pub enum Notice {
    /// Something done.
    Done(String),
    /// Something refused, and why.
    Refused(String),
}

/// Wraps `body` in the page frame: title, navigation, language switch, notice.
pub fn page(frame: &Frame<'_>, title: &str, notice: Option<&Notice>, body: Markup) -> Markup {
    let lang = frame.lang;
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (frame.gateway) }
                style { (PreEscaped(gramgrid_web::http::BASE_STYLE)) }
            }
            body {
                header {
                    strong { (lang.tr("Gateway")) " " (frame.gateway) }
                    a.lang href=(format!("/lang/{}?back={}", lang.other().code(), frame.path)) {
                        @if lang == Lang::En { "हिन्दी" } @else { "English" }
                    }
                    @if let Some(session) = frame.session {
                        nav {
                            a href="/" { (lang.tr("Status")) }
                            a href="/meters" { (lang.tr("Meters")) }
                            a href="/redeem" { (lang.tr("Redeem voucher")) }
                            a href="/install" { (lang.tr("Install a meter")) }
                            a href="/audit" { (lang.tr("Energy audit")) }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            span { (lang.tr("Logged in as")) " " (session.full_name) " (" (lang.tr(session.role.as_str())) ")" }
                            button type="submit" { (lang.tr("Log out")) }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @match notice {
                        Some(Notice::Done(text)) => p.done role="status" { (text) },
                        Some(Notice::Refused(text)) => p.refused role="alert" { (text) },
                        None => {},
                    }
                    (body)
                }
            }
        }
    }
}

/// The login form; `login_csrf` goes back in the form and in a cookie.
pub fn login(lang: Lang, login_csrf: &str, name: &str) -> Markup {
    html! {
        form.card method="post" action="/login" {
            input type="hidden" name="csrf" value=(login_csrf);
            label { (lang.tr("Name")) input name="name" value=(name) autocomplete="username" autocapitalize="none" required; }
            label { (lang.tr("Password")) input name="password" type="password" autocomplete="current-password" required; }
            button type="submit" { (lang.tr("Log in")) }
        }
    }
}

/// What the status page shows.
pub struct StatusView {
    /// When central last answered a sync (None: never).
    pub last_sync: Option<DateTime<Utc>>,
    /// Records and readings waiting for upload.
    pub backlog: (u64, u64),
    /// When the oldest reading not yet uploaded was taken.
    pub oldest_unsent: Option<DateTime<Utc>>,
    /// Whether the clock is trusted, and the skew central measured (seconds).
    pub clock: (bool, Option<i64>),
    /// Free and total bytes on the data directory's file system.
    pub disk: Option<DiskSpace>,
    /// The link's counters, when a radio runs.
    pub radio: Option<RadioCounters>,
    /// The last policy pass: when, and its error if it failed.
    pub policy: Option<(DateTime<Utc>, Option<String>)>,
    /// Seconds since the daemon started.
    pub uptime: i64,
    /// Breaker holds waiting for a supervisor: (id, accounts, reasons).
    pub holds: Vec<(String, usize, Vec<String>)>,
}

/// The status page body.
pub fn status(lang: Lang, session: &Session, view: &StatusView, now: DateTime<Utc>) -> Markup {
    let ago = |at: DateTime<Utc>| when_ago(at, now, lang.tr("ago"));
    html! {
        dl.status {
            dt { (lang.tr("Backhaul")) " · " (lang.tr("Last sync")) }
            dd { @match view.last_sync { Some(at) => (ago(at)), None => (lang.tr("never")) } }
            dt { (lang.tr("Waiting to upload")) }
            dd { (view.backlog.0) " " (lang.tr("records")) ", " (view.backlog.1) " " (lang.tr("readings")) }
            dt { (lang.tr("Oldest unsent reading")) }
            dd { @match view.oldest_unsent { Some(at) => (ago(at)), None => (lang.tr("none")) } }
            dt { (lang.tr("Clock")) }
            dd {
                @if view.clock.0 { (lang.tr("trusted")) } @else { strong.bad { (lang.tr("not trusted")) } }
                @if let Some(skew) = view.clock.1 { ", " (lang.tr("skew")) " " (skew) " s" }
            }
            dt { (lang.tr("Disk")) }
            dd { @match view.disk {
                Some(disk) => { (mib(disk.free)) " MiB " (lang.tr("free")) " / " (mib(disk.total)) " MiB" },
                None => (lang.tr("unknown")),
            } }
            dt { (lang.tr("Radio")) }
            dd { @match &view.radio {
                Some(radio) => {
                    (radio.uplinks) " " (lang.tr("frames heard")) ", " (radio.silences) " " (lang.tr("unanswered polls"))
                    @for (reason, n) in &radio.rejects { ", " (n) " " (lang.tr("rejected")) " (" (reason) ")" }
                },
                None => (lang.tr("none")),
            } }
            dt { (lang.tr("Policy loop")) }
            dd { @match &view.policy {
                Some((at, None)) => { (lang.tr("last pass")) " " (ago(*at)) },
                Some((at, Some(error))) => { strong.bad { (lang.tr("failed")) } " " (ago(*at)) ": " (error) },
                None => (lang.tr("not run yet")),
            } }
            dt { (lang.tr("Uptime")) }
            dd { (span(view.uptime)) }
            dt { (lang.tr("Version")) }
            dd { (crate::health::SOFTWARE_VERSION) }
        }
        @if !view.holds.is_empty() {
            h2 { (lang.tr("Breaker holds waiting for a supervisor")) }
            ul { @for (id, accounts, reasons) in &view.holds { li { code { (id) } ": " (accounts) " · " (reasons.join("; ")) } } }
        }
        @if session.role.may(Role::Technician) {
            form method="post" action="/sync" {
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" { (lang.tr("Sync now")) }
            }
            p { a.button href="/diagnostics" download { (lang.tr("Download diagnostics")) } }
        }
    }
}

fn mib(bytes: u64) -> String {
    super::i18n::group_indian(bytes / (1024 * 1024))
}

/// One row of the meters page.
pub struct MeterRow {
    /// The account's status line (balance, relay, open command).
    pub status: AccountStatus,
    /// The meter's latest reading.
    pub last_reading: Option<(DateTime<Utc>, i64)>,
    /// How the radio last heard it.
    pub health: Option<MeterLinkHealth>,
    /// Its latest alerts (kind).
    pub alerts: Vec<String>,
}

/// The meters page body: search, then one card per meter.
pub fn meters(lang: Lang, query: &str, rows: &[MeterRow]) -> Markup {
    html! {
        form.search method="get" action="/meters" {
            input name="q" value=(query) placeholder=(lang.tr("serial, account or name")) aria-label=(lang.tr("Search"));
            button type="submit" { (lang.tr("Search")) }
        }
        table.meters {
            thead { tr {
                th { (lang.tr("Meter")) } th { (lang.tr("Account")) } th { (lang.tr("Consumer")) }
                th { (lang.tr("Balance")) } th { (lang.tr("Relay")) } th { (lang.tr("Signal")) }
                th { (lang.tr("Last reading")) } th { (lang.tr("Open command")) } th { (lang.tr("Alerts")) }
            } }
            tbody {
                @for row in rows {
                    @let s = &row.status;
                    tr data-account=(s.account) {
                        td { @match &s.meter { Some(serial) => a href=(format!("/meters/{serial}")) { (serial) }, None => "—" } }
                        td { a href=(format!("/accounts/{}/why", s.account)) { (s.account) } br; small { (lang.tr(category_text(&s.category))) } }
                        td { (s.consumer_name) }
                        td.num { (inr(s.balance_paise)) }
                        td { (relay(lang, s.relay_state)) }
                        td { (signal(row.health.as_ref())) }
                        td { @match row.last_reading { Some((at, wh)) => { (when(at)) br; small { (kwh(wh)) " kWh" } }, None => "—" } }
                        td { (s.open_command.as_deref().unwrap_or("—")) }
                        td { (row.alerts.join(", ")) }
                    }
                }
            }
        }
    }
}

/// The transformer's energy audits, newest day first, with the meters a flagged day points to.
pub fn energy_audit(lang: Lang, audits: &[EnergyAuditDay]) -> Markup {
    html! {
        @if audits.is_empty() {
            p { (lang.tr("No audit yet: a day is audited two hours after it ends, when a transformer meter is installed.")) }
        } @else {
            table.audits {
                thead { tr {
                    th { (lang.tr("Day")) } th { (lang.tr("Transformer")) } th { (lang.tr("Intervals compared")) }
                    th { (lang.tr("Delivered")) } th { (lang.tr("Recorded")) } th { (lang.tr("Loss")) }
                    th { (lang.tr("Allowed")) } th { (lang.tr("Flagged")) }
                } }
                tbody {
                    @for audit in audits {
                        tr data-day=(audit.day) .flagged[audit.flagged] {
                            td { (audit.day) } td { (audit.transformer) }
                            td.num { (audit.intervals_compared) " / 96" }
                            td.num { (kwh(audit.transformer_wh)) " kWh" }
                            td.num { (kwh(audit.consumers_wh)) " kWh" }
                            td.num { (kwh(audit.transformer_wh - audit.consumers_wh)) " kWh" br; small { (percent(audit.transformer_wh - audit.consumers_wh, audit.transformer_wh)) } }
                            td.num { (kwh(audit.allowance_wh)) " kWh" }
                            td { @if audit.flagged { strong { (lang.tr("yes")) } } @else { (lang.tr("no")) } }
                        }
                    }
                }
            }
            @for audit in audits.iter().filter(|a| a.flagged) {
                section.suspects data-day=(audit.day) {
                    h2 { (lang.tr("Where to look")) ": " (audit.day) }
                    p { (lang.tr("Evidence, not proof: check the meter and its service line with the household before any action.")) }
                    @if audit.suspects.is_empty() {
                        p { (lang.tr("No meter stands out; look for a hook on the line.")) }
                    }
                    ol {
                        @for suspect in &audit.suspects {
                            li data-meter=(suspect.meter) {
                                a href=(format!("/meters/{}", suspect.meter)) { (suspect.meter) }
                                " (" (suspect.account) "), " (lang.tr("score")) " " (suspect.score)
                                ul { @for reason in &suspect.reasons { li { (audit_reason(lang, reason)) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn percent(part: i64, whole: i64) -> String {
    if whole == 0 {
        return "—".into();
    }
    format!("{:.1} %", part as f64 * 100.0 / whole as f64)
}

fn audit_reason(lang: Lang, reason: &AuditReason) -> String {
    match reason {
        AuditReason::Tamper { kinds } => {
            format!("{}: {}", lang.tr("tamper events"), kinds.join(", "))
        }
        AuditReason::NearZero { recorded_wh } => format!(
            "{} {} kWh {}",
            lang.tr("recorded"),
            kwh(*recorded_wh),
            lang.tr("all day while connected")
        ),
        AuditReason::FallsWithLoss {
            usual_wh,
            recorded_wh,
        } => format!(
            "{}: {} kWh, {} {} kWh",
            lang.tr("in the hours of most loss it recorded"),
            kwh(*recorded_wh),
            lang.tr("usually"),
            kwh(*usual_wh)
        ),
    }
}

fn category_text(category: &str) -> &'static str {
    match category {
        "domestic" => "domestic",
        "commercial" => "commercial",
        _ => "agricultural",
    }
}

/// A relay state in words.
pub fn relay(lang: Lang, state: RelayState) -> &'static str {
    match state {
        RelayState::Connected => lang.tr("connected"),
        RelayState::Disconnected => lang.tr("disconnected"),
        RelayState::Unknown => lang.tr("unknown"),
    }
}

fn signal(health: Option<&MeterLinkHealth>) -> String {
    match health {
        Some(MeterLinkHealth {
            rssi_dbm: Some(rssi),
            snr_db: Some(snr),
            sf,
            ..
        }) => format!(
            "SF{} {rssi} dBm {snr} dB",
            sf.map_or("?".to_string(), |sf| sf.to_string())
        ),
        _ => "—".into(),
    }
}

/// What the meter page shows.
pub struct MeterView {
    /// The meter's row (account, balance, relay, ...).
    pub row: MeterRow,
    /// Its load over the last 7 days: kWh per hour, oldest first, with day labels.
    pub chart: Markup,
    /// Its latest events, newest first.
    pub events: Vec<crate::store::StoredMeterEvent>,
    /// This month's maximum demand: the 15-minute interval's end and its average power in W.
    pub max_demand: Option<(DateTime<Utc>, i64)>,
    /// The export register of its latest reading, in Wh (0: not a net meter, or nothing exported).
    pub exported_wh: i64,
    /// The load the connection is sanctioned for, in W, if central recorded one.
    pub sanctioned_load_w: Option<i64>,
    /// The intervals over it this month was flagged for, if it was.
    pub overload_intervals: Option<u32>,
}

/// A meter event's kind in words (`EventKind::name` → an i18n text).
fn event_text(kind: &str) -> &'static str {
    match kind {
        "tamper_magnet" => "Magnet tamper",
        "tamper_cover_open" => "Cover opened",
        "tamper_neutral" => "Neutral disturbance",
        "tamper_reverse_current" => "Reverse current",
        "power_fail" => "Power failed",
        "power_restore" => "Power restored",
        "relay_operated" => "Relay operated",
        "clock_set" => "Clock set",
        _ => "Tamper",
    }
}

/// The meter page body, with the replacement form for technicians.
pub fn meter(lang: Lang, session: &Session, view: &MeterView) -> Markup {
    let s = &view.row.status;
    html! {
        dl.status {
            dt { (lang.tr("Account")) } dd { a href=(format!("/accounts/{}/why", s.account)) { (s.account) } " · " (s.consumer_name) }
            dt { (lang.tr("Category")) } dd { (lang.tr(category_text(&s.category))) }
            dt { (lang.tr("Balance")) } dd { (inr(s.balance_paise)) }
            dt { (lang.tr("Relay")) } dd { (relay(lang, s.relay_state)) }
            dt { (lang.tr("Open command")) } dd { (s.open_command.as_deref().unwrap_or("—")) }
            dt { (lang.tr("Signal")) } dd { (signal(view.row.health.as_ref())) }
            dt { (lang.tr("Last reading")) } dd { @match view.row.last_reading { Some((at, wh)) => { (when(at)) " · " (kwh(wh)) " kWh" }, None => "—" } }
            @if view.exported_wh > 0 {
                dt { (lang.tr("Exported (rooftop solar)")) } dd.exported { (kwh(view.exported_wh)) " kWh" }
            }
            dt { (lang.tr("Maximum demand this month")) } dd.demand { @match view.max_demand { Some((at, w)) => { (kwh(w)) " kW · " (when(at)) }, None => "—" } }
            dt { (lang.tr("Sanctioned load")) } dd.sanctioned {
                @match view.sanctioned_load_w { Some(w) => { (kwh(w)) " kW" }, None => "—" }
                @if let Some(n) = view.overload_intervals { " · " strong.bad { (lang.tr("exceeded this month, intervals:")) " " (n) } }
            }
            dt { (lang.tr("Alerts")) } dd { @if view.row.alerts.is_empty() { (lang.tr("none")) } @else { (view.row.alerts.join(", ")) } }
        }
        h2 { (lang.tr("Load, last 7 days (kWh per hour)")) }
        (view.chart)
        h2 { (lang.tr("Link history")) }
        @match &view.row.health {
            Some(health) if !health.history.is_empty() => {
                ol.history reversed {
                    @for event in health.history.iter().rev() {
                        li {
                            (when(event.at)) " · SF" (event.sf.map_or("?".into(), |sf| sf.to_string())) " · "
                            @match event.heard {
                                Some((rssi, snr)) => { (lang.tr("heard")) " " (rssi) " dBm " (snr) " dB" },
                                None => (lang.tr("silent")),
                            }
                        }
                    }
                }
            },
            _ => p { (lang.tr("none")) },
        }
        h2 { (lang.tr("Meter events (meter clock)")) }
        @if view.events.is_empty() { p { (lang.tr("none")) } }
        @else {
            ol.events reversed {
                @for event in &view.events {
                    li {
                        (when(event.at)) " · "
                        @if event.is_tamper() { strong.bad { (lang.tr(event_text(&event.kind))) } }
                        @else { (lang.tr(event_text(&event.kind))) }
                        @match event.command_id {
                            Some(0) => { " (" (lang.tr("at the meter")) ")" },
                            Some(id) => { " (" (lang.tr("command")) " " (id) ")" },
                            None => {},
                        }
                    }
                }
            }
        }
        @if session.role.may(Role::Technician) {
            h2 { (lang.tr("Replace this meter")) }
            form.card.replace method="post" action="/install" {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="account" value=(s.account);
                label { (lang.tr("Final register of this meter (kWh)")) input name="final_register" inputmode="decimal" autocomplete="off" required; }
                label { (lang.tr("New meter serial (nameplate or QR code)")) input name="serial" autocomplete="off" autocapitalize="characters" required; }
                label { (lang.tr("First register of the new meter (kWh, blank if unreadable)")) input name="first_register" inputmode="decimal" autocomplete="off"; }
                label { (lang.tr("Reason")) input name="reason" required maxlength="200"; }
                button type="submit" { (lang.tr("Replace")) }
            }
        }
    }
}

/// What the installation page shows.
pub struct InstallView<'a> {
    /// The spares in stock.
    pub spares: Vec<crate::store::StockMeter>,
    /// The serial to fill in (from a QR code's link, or the form sent back).
    pub serial: &'a str,
    /// The account to fill in.
    pub account: &'a str,
}

/// The commissioning form (a spare on an account with no meter) and the stock.
pub fn install(lang: Lang, session: &Session, view: &InstallView<'_>) -> Markup {
    html! {
        form.card.install method="post" action="/install" {
            input type="hidden" name="csrf" value=(session.csrf);
            label { (lang.tr("Meter serial (nameplate or QR code)")) input name="serial" value=(view.serial) list="spares" autocomplete="off" autocapitalize="characters" required; }
            label { (lang.tr("Account")) input name="account" value=(view.account) autocomplete="off" required; }
            label { (lang.tr("First register (kWh, blank if unreadable)")) input name="first_register" inputmode="decimal" autocomplete="off"; }
            button type="submit" { (lang.tr("Install")) }
        }
        datalist #spares { @for spare in &view.spares { option value=(spare.serial); } }
        h2 { (lang.tr("Spare meters in stock")) }
        @if view.spares.is_empty() {
            p { (lang.tr("No spare meters in stock: ask the office to add some.")) }
        } @else {
            ul.stock { @for spare in &view.spares { li { (spare.serial) " · DevAddr " (format!("{:08X}", spare.dev_addr)) } } }
        }
    }
}

/// One decision on the "why" page.
pub struct DecisionView {
    /// The decision's id.
    pub id: String,
    /// Its explanation, line by line.
    pub lines: Vec<String>,
    /// Whether replaying the pure policy on its facts gives the same outcome.
    pub replays: bool,
}

/// What the "why" page shows besides the decisions.
pub struct WhyView {
    /// The account's status line.
    pub status: AccountStatus,
    /// The override in force: action, until, by whom, why.
    pub active_override: Option<String>,
    /// The latest decisions, newest first.
    pub decisions: Vec<DecisionView>,
    /// The longest override a supervisor may set, in hours.
    pub override_max_hours: u64,
}

/// The "why is this household off or on" page body, with the override form for supervisors.
pub fn why(lang: Lang, session: &Session, view: &WhyView) -> Markup {
    let s = &view.status;
    html! {
        dl.status {
            dt { (lang.tr("Consumer")) } dd { (s.consumer_name) }
            dt { (lang.tr("Meter")) } dd { (s.meter.as_deref().unwrap_or("—")) }
            dt { (lang.tr("Balance")) } dd { (inr(s.balance_paise)) }
            dt { (lang.tr("Relay")) } dd.relay { (relay(lang, s.relay_state)) }
            dt { (lang.tr("Open command")) } dd { (s.open_command.as_deref().unwrap_or("—")) }
            dt { (lang.tr("Active override")) } dd { (view.active_override.as_deref().unwrap_or(lang.tr("none"))) }
        }
        h2 { (lang.tr("Decisions")) }
        @if view.decisions.is_empty() { p { (lang.tr("No relay decision recorded yet.")) } }
        @for decision in &view.decisions {
            section.decision {
                @for line in &decision.lines { p { (line) } }
                p { small { code { (decision.id) } " · "
                    @if decision.replays { (lang.tr("replays to the same outcome")) }
                    @else { strong.bad { (lang.tr("DOES NOT replay to the same outcome: flagged to the office")) } }
                } }
            }
        }
        @if session.role.may(Role::Supervisor) {
            h2 { (lang.tr("Override")) }
            form.card method="post" action=(format!("/accounts/{}/override", s.account)) {
                input type="hidden" name="csrf" value=(session.csrf);
                p { (lang.tr("Keep connected (reconnects now if off)")) }
                label { (lang.tr("Hours")) input name="hours" type="number" min="1" max=(view.override_max_hours) value="4" required; }
                label { (lang.tr("Reason")) input name="reason" required maxlength="200"; }
                button type="submit" { (lang.tr("Override")) }
            }
        }
    }
}

/// The voucher form.
pub fn redeem(lang: Lang, session: &Session) -> Markup {
    html! {
        form.card method="post" action="/redeem" {
            input type="hidden" name="csrf" value=(session.csrf);
            label { (lang.tr("Voucher code")) input name="code" autocomplete="off" autocapitalize="characters" required; }
            button type="submit" { (lang.tr("Redeem")) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gramgrid_proto::wire::AuditSuspect;

    fn audit(day: &str, flagged: bool) -> EnergyAuditDay {
        EnergyAuditDay {
            id: format!("gw:audit:DT-1:{day}"),
            transformer: "DT-1".into(),
            day: day.into(),
            intervals_compared: 96,
            meters: 2,
            transformer_wh: 100_000,
            consumers_wh: 92_500,
            allowance_wh: 4_000,
            flagged,
            interval_loss_wh: vec![Some(78); 96],
            suspects: if flagged {
                vec![AuditSuspect {
                    meter: "M7".into(),
                    account: "A7".into(),
                    score: 60,
                    reasons: vec![AuditReason::FallsWithLoss {
                        usual_wh: 4_200,
                        recorded_wh: 0,
                    }],
                }]
            } else {
                Vec::new()
            },
            at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_flagged_day_lists_where_to_look_with_the_reasons_in_either_language() {
        let audits = [audit("2026-12-02", true), audit("2026-12-01", false)];
        let english = energy_audit(Lang::En, &audits).into_string();
        assert!(
            english.contains("7.500 kWh") && english.contains("7.5 %"),
            "{english}"
        );
        assert!(english.contains(r#"<section class="suspects" data-day="2026-12-02">"#));
        assert!(!english.contains(r#"data-day="2026-12-01"><h2"#));
        assert!(
            english.contains(r#"<a href="/meters/M7">M7</a>"#),
            "{english}"
        );
        assert!(
            english.contains("in the hours of most loss it recorded: 0.000 kWh, usually 4.200 kWh")
        );
        let hindi = energy_audit(Lang::Hi, &audits).into_string();
        assert!(hindi.contains("सबसे ज़्यादा हानि के समय इसमें दर्ज हुआ"), "{hindi}");
        assert!(energy_audit(Lang::En, &[])
            .into_string()
            .contains("No audit yet"));
    }
}
