//! The gateway list with its map, and one gateway's page with its village's meters.
use super::i18n::Tr;
use super::{Console, Ctx, Shared};
use crate::accounts;
use crate::config::GatewaySite;
use crate::db::Tx;
use crate::gateway_status::Reported;
use crate::staff::Permission;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::civil::{from_ts, ts};
use gramgrid_proto::wire::DiskSpace;
use gramgrid_web::format::{inr, span, when};
use gramgrid_web::lang::Lang;
use maud::{html, Markup};
use std::collections::{BTreeMap, HashMap};

/// Days the backhaul's uptime is measured over.
const UPTIME_DAYS: i64 = 7;

/// One gateway as the list shows it.
pub struct GatewayRow {
    /// The gateway's id.
    pub id: String,
    /// When it last synced.
    pub last_sync: Option<DateTime<Utc>>,
    /// Its clock less central's at that sync, in seconds.
    pub skew_seconds: Option<i64>,
    /// The sync protocol it spoke last.
    pub protocol: Option<i64>,
    /// Downlink records it has not applied yet.
    pub downlink_backlog: i64,
    /// Meters on its accounts, and how many of them central has a reading of in the last day.
    pub meters: (i64, i64),
    /// The newest reading central has from its meters.
    pub newest_reading: Option<DateTime<Utc>>,
    /// Its backhaul over the last [`UPTIME_DAYS`] days.
    pub uptime: crate::backhaul::Uptime,
    /// What it last said about itself (version, upload backlog, radio, disk), if it has.
    pub reported: Option<Reported>,
}

/// Every gateway's row, by id.
pub fn gateway_rows(tx: &mut dyn Tx, now: DateTime<Utc>) -> crate::Result<Vec<GatewayRow>> {
    let uptime = crate::backhaul::uptime(tx, now, UPTIME_DAYS)?;
    let mut reported = crate::gateway_status::all(tx)?;
    let mut meters: HashMap<String, ((i64, i64), Option<i64>)> = HashMap::new();
    for row in tx.query(
        "SELECT a.gateway, COUNT(m.serial),
                CAST(SUM(CASE WHEN c.at >= $1 THEN 1 ELSE 0 END) AS BIGINT), MAX(c.at)
         FROM accounts a JOIN meters m ON m.account = a.id
         LEFT JOIN meter_cursor c ON c.meter = m.serial
         WHERE a.gateway IS NOT NULL GROUP BY a.gateway",
        &[ts(now - Duration::days(1)).into()],
    )? {
        meters.insert(
            row.text(0)?,
            ((row.int(1)?, row.opt_int(2)?.unwrap_or(0)), row.opt_int(3)?),
        );
    }
    tx.query(
        "SELECT id, last_sync_at, last_gateway_time, protocol, downlink_seq - downlink_applied
         FROM gateways ORDER BY id",
        &[],
    )?
    .iter()
    .map(|row| {
        let id = row.text(0)?;
        let last_sync = row.opt_int(1)?;
        let (counts, newest) = meters.get(&id).copied().unwrap_or_default();
        Ok(GatewayRow {
            last_sync: last_sync.map(from_ts),
            skew_seconds: last_sync.zip(row.opt_int(2)?).map(|(at, clock)| clock - at),
            protocol: row.opt_int(3)?,
            downlink_backlog: row.int(4)?.max(0),
            meters: counts,
            newest_reading: newest.map(from_ts),
            uptime: uptime.get(&id).copied().unwrap_or_default(),
            reported: reported.remove(&id),
            id,
        })
    })
    .collect()
}

pub(super) async fn list(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let ctx = match s.authorise(&headers, "/console/gateways", Permission::Read) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let now = s.now();
    let rows = match s.read(&ctx, move |tx| gateway_rows(tx, now)).await {
        Ok(rows) => rows,
        Err(response) => return *response,
    };
    let listing = Listing {
        lang: ctx.lang,
        rows: &rows,
        sites: &s.central.config().console.sites,
        console: &s,
        now,
    };
    let body = html! { (listing.map()) (listing.table()) };
    s.render(&ctx, ctx.lang.tr("Gateways"), None, body)
}

impl Console {
    /// Whether a gateway that last synced at `last_sync` is overdue (its balances are stale).
    fn overdue(&self, last_sync: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        let stale_after =
            Duration::from_std(self.central.config().stale_after).unwrap_or(Duration::MAX);
        last_sync.is_none_or(|at| now - at > stale_after)
    }
}

fn village<'a>(sites: &'a BTreeMap<String, GatewaySite>, id: &'a str) -> &'a str {
    sites.get(id).map_or(id, |site| site.village.as_str())
}

/// "12 min ago" style, or "never".
fn ago(lang: Lang, at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match at {
        Some(at) => format!("{} {}", span((now - at).num_seconds()), lang.tr("ago")),
        None => lang.tr("never").to_string(),
    }
}

/// The gateway's clock as central measured it at the last sync: within a minute is trusted.
fn clock(lang: Lang, skew_seconds: Option<i64>) -> String {
    match skew_seconds {
        None => "—".into(),
        Some(skew) if skew.abs() <= 60 => lang.tr("in step").into(),
        Some(skew) => format!(
            "{} {}",
            span(skew.abs()),
            if skew > 0 {
                lang.tr("fast")
            } else {
                lang.tr("slow")
            }
        ),
    }
}

/// The version it runs and the sync protocol it speaks.
fn software(lang: Lang, row: &GatewayRow) -> String {
    let version = row
        .reported
        .as_ref()
        .map_or("—", |r| r.status.software.as_str());
    match row.protocol {
        Some(protocol) => format!("{version} ({} {protocol})", lang.tr("protocol")),
        None => version.to_string(),
    }
}

/// Readings it reported waiting that central has not acknowledged since, and how old the oldest
/// was (when none of them has arrived since the report).
fn upload_backlog(lang: Lang, row: &GatewayRow, now: DateTime<Utc>) -> String {
    let Some(reported) = &row.reported else {
        return "—".into();
    };
    let waiting = reported.still_waiting.1;
    let count = format!("{waiting} {}", lang.tr("readings"));
    match reported.status.oldest_unsent {
        Some(oldest) if waiting > 0 && waiting == reported.status.readings_backlog => format!(
            "{count}, {} {}",
            lang.tr("oldest"),
            ago(lang, Some(oldest), now)
        ),
        _ => count,
    }
}

/// Frames heard, polls unanswered and frames rejected since the gateway's daemon started.
fn radio_text(lang: Lang, row: &GatewayRow) -> String {
    let Some(reported) = &row.reported else {
        return "—".into();
    };
    match &reported.status.radio {
        Some(radio) => format!(
            "{} {} · {} {} · {} {}",
            radio.uplinks,
            lang.tr("heard"),
            radio.silences,
            lang.tr("unanswered"),
            radio.rejected(),
            lang.tr("rejected")
        ),
        None => lang.tr("no radio").into(),
    }
}

/// Whether the gateway's disk is nearly full (under a tenth free): readings will be shed soon.
fn disk_low(disk: DiskSpace) -> bool {
    disk.free.saturating_mul(10) < disk.total
}

/// What the gateway said about itself at its last session, for its page.
fn reported_details(lang: Lang, row: &GatewayRow, now: DateTime<Utc>) -> Markup {
    let Some(reported) = &row.reported else {
        return html! {
            dt { (lang.tr("Software")) }
            dd { (software(lang, row)) " · " (lang.tr("not reported yet")) }
        };
    };
    let status = &reported.status;
    let mib = |bytes: u64| bytes / (1024 * 1024);
    html! {
        dt { (lang.tr("Software")) }
        dd { (software(lang, row)) }
        dt { (lang.tr("Running since")) }
        dd { (when(status.started_at)) }
        dt { (lang.tr("Waiting to upload")) }
        dd { (reported.still_waiting.0) " " (lang.tr("records")) ", " (upload_backlog(lang, row, now)) }
        dt { (lang.tr("Radio (since start)")) }
        dd {
            (radio_text(lang, row))
            @if let Some(radio) = &status.radio {
                " · " (radio.downlinks) " " (lang.tr("downlinks"))
                @for (reason, n) in &radio.rejects { " · " (reason) ": " (n) }
            }
        }
        dt { (lang.tr("Disk")) }
        @match status.disk {
            Some(disk) => dd.bad[disk_low(disk)] { (mib(disk.free)) " MiB " (lang.tr("free")) " / " (mib(disk.total)) " MiB" },
            None => dd { "—" },
        }
        dt { (lang.tr("Reported")) }
        dd { (ago(lang, Some(reported.at), now)) }
    }
}

/// Map size in SVG units.
const MAP_W: f64 = 640.0;
const MAP_H: f64 = 360.0;
const MAP_MARGIN: f64 = 24.0;

fn uptime_text(uptime: crate::backhaul::Uptime) -> String {
    uptime.percent().map_or("—".into(), |p| format!("{p:.0} %"))
}

/// What the gateway list shows.
struct Listing<'a> {
    lang: Lang,
    rows: &'a [GatewayRow],
    sites: &'a BTreeMap<String, GatewaySite>,
    console: &'a Console,
    now: DateTime<Utc>,
}

impl Listing<'_> {
    fn table(&self) -> Markup {
        let Listing {
            lang,
            rows,
            sites,
            console: s,
            now,
        } = *self;
        html! {
            @if rows.is_empty() {
                p { (lang.tr("No gateway has been enrolled yet.")) }
            } @else {
                table.grid {
                    thead { tr {
                        th { (lang.tr("Gateway")) } th { (lang.tr("Village")) } th { (lang.tr("Last sync")) }
                        th { (lang.tr("Backhaul up (7 days)")) } th { (lang.tr("Waiting to send down")) }
                        th { (lang.tr("Newest reading")) } th { (lang.tr("Meters heard (24 h)")) }
                        th { (lang.tr("Waiting to upload")) } th { (lang.tr("Radio (since start)")) }
                        th { (lang.tr("Clock")) } th { (lang.tr("Software")) }
                    } }
                    tbody {
                        @for row in rows {
                            tr.bad[s.overdue(row.last_sync, now)] {
                                td { a href=(format!("/console/gateways/{}", row.id)) { (row.id) } }
                                td { (village(sites, &row.id)) }
                                td { (ago(lang, row.last_sync, now)) }
                                td.num { (uptime_text(row.uptime)) }
                                td.num { (row.downlink_backlog) }
                                td { (ago(lang, row.newest_reading, now)) }
                                td.num { (row.meters.1) " / " (row.meters.0) }
                                td { (upload_backlog(lang, row, now)) }
                                td { (radio_text(lang, row)) }
                                td { (clock(lang, row.skew_seconds)) }
                                td { (software(lang, row)) }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The gateways with a site on a plain map (no tiles: a frame of latitude and longitude), each a
    /// dot coloured by its last sync, linked to its page.
    fn map(&self) -> Markup {
        let (lang, s, now) = (self.lang, self.console, self.now);
        let placed: Vec<(&GatewayRow, &GatewaySite)> = self
            .rows
            .iter()
            .filter_map(|row| self.sites.get(&row.id).map(|site| (row, site)))
            .collect();
        if placed.is_empty() {
            return html! {};
        }
        let bounds = |f: fn(&GatewaySite) -> f64| {
            let values = placed.iter().map(|(_, site)| f(site));
            let low = values.clone().fold(f64::INFINITY, f64::min);
            let high = values.fold(f64::NEG_INFINITY, f64::max);
            (low, (high - low).max(0.01))
        };
        let ((lat0, lat_span), (lon0, lon_span)) = (bounds(|s| s.lat), bounds(|s| s.lon));
        let x = |lon: f64| MAP_MARGIN + (lon - lon0) / lon_span * (MAP_W - 2.0 * MAP_MARGIN);
        let y =
            |lat: f64| MAP_H - MAP_MARGIN - (lat - lat0) / lat_span * (MAP_H - 2.0 * MAP_MARGIN);
        html! {
            svg.map viewBox=(format!("0 0 {MAP_W} {MAP_H}")) role="img" aria-label=(lang.tr("Map of the gateways")) {
                rect x="0" y="0" width=(MAP_W) height=(MAP_H) {}
                @for (row, site) in &placed {
                    a href=(format!("/console/gateways/{}", row.id)) {
                        circle.late[s.overdue(row.last_sync, now)] cx=(format!("{:.1}", x(site.lon))) cy=(format!("{:.1}", y(site.lat))) r="7" {}
                        text x=(format!("{:.1}", x(site.lon) + 10.0)) y=(format!("{:.1}", y(site.lat) + 4.0)) { (site.village) }
                    }
                }
            }
        }
    }
}

/// One meter of a gateway's village, as its page lists it.
struct VillageMeter {
    serial: String,
    account: String,
    consumer_name: String,
    relay_state: String,
    last_reading: Option<DateTime<Utc>>,
    balance_paise: i64,
}

fn village_meters(tx: &mut dyn Tx, gateway: &str) -> crate::Result<Vec<VillageMeter>> {
    let rows = tx.query(
        "SELECT m.serial, a.id, a.consumer_name, m.relay_state, c.at
         FROM accounts a JOIN meters m ON m.account = a.id
         LEFT JOIN meter_cursor c ON c.meter = m.serial
         WHERE a.gateway = $1 ORDER BY a.id, m.serial",
        &[gateway.into()],
    )?;
    rows.iter()
        .map(|row| {
            let account = row.text(1)?;
            Ok(VillageMeter {
                serial: row.text(0)?,
                balance_paise: accounts::balance_paise(tx, &account)?,
                account,
                consumer_name: row.text(2)?,
                relay_state: row.text(3)?,
                last_reading: row.opt_int(4)?.map(from_ts),
            })
        })
        .collect()
}

pub(super) async fn page(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    let path = format!("/console/gateways/{id}");
    let ctx = match s.authorise(&headers, &path, Permission::Read) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let now = s.now();
    let wanted = id.clone();
    let found = s
        .read(&ctx, move |tx| {
            let row = gateway_rows(tx, now)?.into_iter().find(|r| r.id == wanted);
            let meters = match &row {
                Some(_) => village_meters(tx, &wanted)?,
                None => Vec::new(),
            };
            Ok(row.map(|row| (row, meters)))
        })
        .await;
    let (row, meters) = match found {
        Ok(Some(found)) => found,
        Ok(None) => {
            let text = ctx.lang.tr("No such gateway.");
            return s.refusal(&ctx, axum::http::StatusCode::NOT_FOUND, text);
        }
        Err(response) => return *response,
    };
    let sites = &s.central.config().console.sites;
    let title = format!("{} · {}", village(sites, &row.id), row.id);
    let body = gateway_body(&ctx, &s, &row, &meters, now);
    s.render(&ctx, &title, None, body)
}

fn gateway_body(
    ctx: &Ctx,
    s: &Console,
    row: &GatewayRow,
    meters: &[VillageMeter],
    now: DateTime<Utc>,
) -> Markup {
    let lang = ctx.lang;
    let silent = meters
        .iter()
        .filter(|m| m.last_reading.is_none_or(|at| now - at > Duration::days(1)))
        .count();
    html! {
        dl.status {
            dt { (lang.tr("Last sync")) }
            dd.bad[s.overdue(row.last_sync, now)] { (row.last_sync.map_or(lang.tr("never").to_string(), when)) " (" (ago(lang, row.last_sync, now)) ")" }
            dt { (lang.tr("Backhaul up (7 days)")) }
            dd { (uptime_text(row.uptime)) " (" (row.uptime.up) " / " (row.uptime.observed) " h)" }
            dt { (lang.tr("Waiting to send down")) }
            dd { (row.downlink_backlog) }
            dt { (lang.tr("Newest reading")) }
            dd { (ago(lang, row.newest_reading, now)) }
            dt { (lang.tr("Meters heard (24 h)")) }
            dd { (row.meters.1) " / " (row.meters.0) }
            dt { (lang.tr("Not heard for more than a day")) }
            dd.bad[silent > 0] { (silent) }
            dt { (lang.tr("Clock")) }
            dd { (clock(lang, row.skew_seconds)) }
            (reported_details(lang, row, now))
        }
        h2 { (lang.tr("Meters")) }
        table.grid {
            thead { tr {
                th { (lang.tr("Account")) } th { (lang.tr("Name")) } th { (lang.tr("Meter")) }
                th { (lang.tr("Balance")) } th { (lang.tr("Relay")) } th { (lang.tr("Last reading")) }
            } }
            tbody {
                @for m in meters {
                    tr {
                        td { a href=(format!("/console/accounts/{}", m.account)) { (m.account) } }
                        td { (m.consumer_name) }
                        td { (m.serial) }
                        td.num.bad[m.balance_paise < 0] { (inr(m.balance_paise)) }
                        td { (m.relay_state) }
                        td.bad[m.last_reading.is_none_or(|at| now - at > Duration::days(1))] { (ago(lang, m.last_reading, now)) }
                    }
                }
            }
        }
    }
}
