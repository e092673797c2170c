//! The technician web app: HTTPS on the village Wi-Fi, served by the daemon, usable with no
//! backhaul. Technicians log in with the accounts central synced down (roles, Argon2id hashes),
//! see the gateway's health and every meter, read why a household is off or on, and act
//! (override, redeem, sync, diagnostics); every action is audited and uploaded to central.
//!
//! - `auth`: roles, password check, sessions, lockout rule, CSRF tokens;
//! - `pages`: the HTML (maud, no script), with `gramgrid_web`'s load chart (inline SVG);
//! - `i18n`: English and Hindi, Indian formats; `[technician]` is `crate::technician_config` (a
//!   leaf, so that the gateway config can name it without importing the app).

mod auth;
mod i18n;
mod install;
mod pages;

pub use crate::technician_config::TechnicianConfig;
pub use auth::Role;

use crate::gateway::Gateway;
use crate::health::Health;
use crate::report::{gateway_status, AccountStatus};
use crate::store::{MeterSwap, OverrideRecord, Store, StoreError, TechnicianAction};
use auth::{Session, SessionRefused, Sessions};
use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use gramgrid_core::policy::RelayAction;
use gramgrid_net::wallclock::WallClock;
use gramgrid_web::http::{cookie, html_response, language, set_cookie};
use i18n::{Lang, Tr};
use maud::Markup;
use pages::{Frame, Notice};
use serde::Deserialize;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The policy loop's last pass, as the status page shows it.
#[derive(Debug, Clone)]
pub struct LastPass {
    /// When it ran (UTC).
    pub at: DateTime<Utc>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Where the policy loop leaves its last pass for the status page.
pub type PolicyHealth = Arc<Mutex<Option<LastPass>>>;

/// What the app needs from the daemon.
pub struct TechnicianApp {
    /// The gateway the daemon runs (each request takes its lock briefly).
    pub gateway: Arc<Mutex<Gateway>>,
    /// This gateway's id.
    pub gateway_id: String,
    /// Where "now" comes from.
    pub clock: WallClock,
    /// Wakes the sync client ("sync now") and, after a redemption, the policy pass.
    pub wakers: Arc<crate::wakers::Wakers>,
    /// The gateway's version, uptime, radio counters and disk space.
    pub health: Health,
    /// The policy loop's last pass.
    pub policy_health: PolicyHealth,
    /// `[technician]`.
    pub config: TechnicianConfig,
    /// The daemon's configuration as TOML, for the diagnostics bundle (it holds no secret: keys
    /// live in files it only names).
    pub config_toml: String,
}

struct AppState {
    app: TechnicianApp,
    sessions: Mutex<Sessions>,
}

type Shared = Arc<AppState>;

const SESSION_COOKIE: &str = "gg_session";
const LOGIN_COOKIE: &str = "gg_login";

/// The app's routes.
pub fn router(app: TechnicianApp) -> Router {
    let state = Arc::new(AppState {
        app,
        sessions: Mutex::new(Sessions::default()),
    });
    Router::new()
        .route("/", get(status_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/lang/{code}", get(switch_language))
        .route("/meters", get(meters_page))
        .route("/meters/{serial}", get(meter_page))
        .route("/accounts/{id}/why", get(why_page))
        .route("/accounts/{id}/override", post(override_relay))
        .route("/redeem", get(redeem_page).post(redeem))
        .route("/install", get(install_page).post(install))
        .route("/audit", get(audit_page))
        .route("/sync", post(sync_now))
        .route("/diagnostics", get(diagnostics))
        .with_state(state)
}

/// Serves the app over TLS with `certificate` (cert and key files, see [`certificate`]) on
/// `listener`, and the plain-HTTP redirect if configured, until `shutdown` completes.
pub async fn serve(
    app: TechnicianApp,
    listener: tokio::net::TcpListener,
    certificate: (PathBuf, PathBuf),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = gramgrid_net::tls::server_config_without_client_auth(&certificate.0, &certificate.1)
        .map_err(std::io::Error::other)?;
    let https_port = listener.local_addr()?.port();
    let redirect = match app.config.redirect_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let redirecting = redirect.map(|listener| {
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let router = Router::new().fallback(
                move |headers: HeaderMap, uri: axum::http::Uri| async move {
                    redirect_to_https(&headers, &uri, https_port)
                },
            );
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopping.wait_for(|s| *s).await;
                })
                .await
        })
    });
    let served = gramgrid_net::tls::serve(listener, tls, router(app), shutdown).await;
    let _ = stop.send(true);
    if let Some(task) = redirecting {
        let _ = task.await;
    }
    served
}

fn redirect_to_https(headers: &HeaderMap, uri: &axum::http::Uri, port: u16) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
        .unwrap_or("10.42.0.1");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Redirect::permanent(&format!("https://{host}:{port}{path}")).into_response()
}

/// The technician certificate and key to serve: `[technician] cert`/`key` when set, else the one
/// issued with the enrolment bundle, else a self-signed one in the data directory.
pub fn certificate(
    config: &TechnicianConfig,
    bundle: Option<&gramgrid_net::pki::GatewayBundle>,
    data_dir: &std::path::Path,
    gateway_id: &str,
) -> Result<(PathBuf, PathBuf), gramgrid_net::pki::PkiError> {
    if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
        return Ok((cert.clone(), key.clone()));
    }
    match bundle.and_then(|b| b.technician_cert()) {
        Some(pair) => Ok(pair),
        None => gramgrid_net::pki::self_signed_technician(data_dir, gateway_id),
    }
}

/// A request's technician and language.
struct Ctx {
    session: Session,
    lang: Lang,
    path: String,
}

impl AppState {
    fn now(&self) -> DateTime<Utc> {
        self.app.clock.now()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gateway> {
        // A panic elsewhere while holding the lock leaves the store transactionally consistent.
        self.app.gateway.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request's session if it may do what needs `role`; otherwise the response to send.
    fn authorise(&self, headers: &HeaderMap, path: &str, role: Role) -> Result<Ctx, Box<Response>> {
        let lang = language(headers);
        let token = cookie(headers, SESSION_COOKIE).unwrap_or_default();
        let config = &self.app.config;
        let session = self
            .sessions()
            .touch(&token, self.now(), config.session_idle, config.session_max)
            .map_err(|refused| {
                let to = match refused {
                    SessionRefused::Expired => "/login?expired=1",
                    SessionRefused::Unknown => "/login",
                };
                Box::new(Redirect::to(to).into_response())
            })?;
        let ctx = Ctx {
            session,
            lang,
            path: path.to_string(),
        };
        if !ctx.session.role.may(role) {
            let text = lang.tr("Your role does not allow this. Nothing was changed.");
            return Err(Box::new(self.refusal(&ctx, StatusCode::FORBIDDEN, text)));
        }
        Ok(ctx)
    }

    /// As [`AppState::authorise`] for a form, which must also carry the session's CSRF token.
    fn authorise_form(
        &self,
        headers: &HeaderMap,
        path: &str,
        role: Role,
        csrf: &str,
    ) -> Result<Ctx, Box<Response>> {
        let ctx = self.authorise(headers, path, role)?;
        if !auth::tokens_match(&ctx.session.csrf, csrf) {
            let text = ctx.lang.tr(
                "The form was out of date or not from this app. Nothing was changed; please try again.",
            );
            return Err(Box::new(self.refusal(&ctx, StatusCode::FORBIDDEN, text)));
        }
        Ok(ctx)
    }

    fn frame<'a>(&'a self, ctx: &'a Ctx) -> Frame<'a> {
        Frame {
            lang: ctx.lang,
            path: &ctx.path,
            session: Some(&ctx.session),
            gateway: &self.app.gateway_id,
        }
    }

    fn render(&self, ctx: &Ctx, title: &str, notice: Option<Notice>, body: Markup) -> Response {
        html_response(pages::page(&self.frame(ctx), title, notice.as_ref(), body))
    }

    fn refusal(&self, ctx: &Ctx, status: StatusCode, text: &str) -> Response {
        let notice = Notice::Refused(text.to_string());
        let body = pages::page(
            &self.frame(ctx),
            ctx.lang.tr("Status"),
            Some(&notice),
            maud::html! {},
        );
        (status, html_response(body)).into_response()
    }

    /// Records an action for the audit trail (it is uploaded to central with the next sync).
    fn audit(
        &self,
        technician: &str,
        action: &str,
        subject: Option<&str>,
        detail: String,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let record = self.action(technician, action, subject, detail, reason);
        self.lock().store().record_technician_action(&record)
    }

    /// A new audit record of an action done now, with a fresh id.
    fn action(
        &self,
        technician: &str,
        action: &str,
        subject: Option<&str>,
        detail: String,
        reason: Option<&str>,
    ) -> TechnicianAction {
        TechnicianAction {
            id: format!(
                "tech-{}-{}",
                self.app.gateway_id,
                &auth::random_token()[..24]
            ),
            technician: technician.to_string(),
            action: action.to_string(),
            subject: subject.map(str::to_string),
            detail,
            reason: reason.map(str::to_string),
            at: self.now(),
        }
    }
}

fn internal(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "technician request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("The gateway could not answer: {error}. Try again; if it persists, download the diagnostics."),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    expired: Option<String>,
}

async fn login_page(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let lang = language(&headers);
    let notice = query.expired.map(|_| {
        Notice::Refused(
            lang.tr("Your session has expired. Please log in again.")
                .into(),
        )
    });
    login_form(&s, lang, notice, "", StatusCode::OK)
}

/// The login page with a fresh login CSRF token (in the form and in a cookie).
fn login_form(
    s: &AppState,
    lang: Lang,
    notice: Option<Notice>,
    name: &str,
    status: StatusCode,
) -> Response {
    let token = auth::random_token();
    let frame = Frame {
        lang,
        path: "/login",
        session: None,
        gateway: &s.app.gateway_id,
    };
    let body = pages::page(
        &frame,
        lang.tr("Technician login"),
        notice.as_ref(),
        pages::login(lang, &token, name),
    );
    (
        status,
        [set_cookie(LOGIN_COOKIE, &token, 3600)],
        html_response(body),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: String,
    name: String,
    password: String,
}

async fn login(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = language(&headers);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !auth::tokens_match(&expected, &form.csrf) {
        let text = lang.tr(
            "The form was out of date or not from this app. Nothing was changed; please try again.",
        );
        return login_form(
            &s,
            lang,
            Some(Notice::Refused(text.into())),
            &form.name,
            StatusCode::FORBIDDEN,
        );
    }
    let name = form.name.trim().to_lowercase();
    let now = s.now();
    let looked_up = {
        let mut gateway = s.lock();
        let store = gateway.store();
        store
            .technician(&name)
            .and_then(|account| Ok((account, store.login_failures(&name)?)))
    };
    let (account, (failures, locked_until)) = match looked_up {
        Ok(found) => found,
        Err(error) => return internal(error),
    };
    if let Some(until) = locked_until.filter(|until| *until > now) {
        let _ = s.audit(
            &name,
            "login_failed",
            None,
            format!("account locked until {}", i18n::when(until)),
            None,
        );
        let text = format!(
            "{} {}.",
            lang.tr("Too many failed logins: this account is locked until"),
            i18n::when(until)
        );
        return login_form(
            &s,
            lang,
            Some(Notice::Refused(text)),
            &name,
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let checked = account.clone().unwrap_or_else(|| auth::decoy(&name));
    let password = form.password;
    let matches = tokio::task::spawn_blocking(move || checked.password_matches(&password))
        .await
        .unwrap_or(false);
    let admitted = account
        .filter(|a| matches && a.active)
        .and_then(|a| Role::parse(&a.role).map(|role| (a, role)));
    match admitted {
        Some((account, role)) => {
            // One statement each: the gateway's lock is not re-entrant, and `audit` takes it.
            let cleared = s.lock().store().set_login_failures(&name, 0, None);
            let recorded = cleared.and_then(|()| {
                s.audit(
                    &name,
                    "login",
                    None,
                    format!("logged in as {}", role.as_str()),
                    None,
                )
            });
            if let Err(error) = recorded {
                return internal(error);
            }
            let token = s.sessions().start(&name, &account.full_name, role, now);
            let max_age = s.app.config.session_max.as_secs();
            (
                // Appended: two Set-Cookie headers, not the second replacing the first.
                axum::response::AppendHeaders([
                    set_cookie(SESSION_COOKIE, &token, max_age),
                    set_cookie(LOGIN_COOKIE, "", 0),
                ]),
                Redirect::to("/"),
            )
                .into_response()
        }
        None => {
            let config = &s.app.config;
            let (failures, locked) =
                auth::after_failure(failures, config.lockout_after, config.lockout_for, now);
            let (action, detail) = match locked {
                Some(until) => (
                    "locked_out",
                    format!(
                        "{failures} failed logins in a row: locked until {}",
                        i18n::when(until)
                    ),
                ),
                None => ("login_failed", format!("failed login {failures} in a row")),
            };
            let counted = s.lock().store().set_login_failures(&name, failures, locked);
            let recorded = counted.and_then(|()| s.audit(&name, action, None, detail, None));
            if let Err(error) = recorded {
                return internal(error);
            }
            if locked.is_some() {
                s.sessions().end_all_of(&name);
            }
            let text = lang.tr("Wrong name or password.");
            login_form(
                &s,
                lang,
                Some(Notice::Refused(text.into())),
                &name,
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let ctx = match s.authorise_form(&headers, "/logout", Role::Viewer, &form.csrf) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        s.sessions().end(&token);
    }
    if let Err(error) = s.audit(&ctx.session.name, "logout", None, "logged out".into(), None) {
        return internal(error);
    }
    ([set_cookie(SESSION_COOKIE, "", 0)], Redirect::to("/login")).into_response()
}

#[derive(Deserialize)]
struct BackQuery {
    back: Option<String>,
}

async fn switch_language(
    UrlPath(code): UrlPath<String>,
    Query(query): Query<BackQuery>,
) -> Response {
    gramgrid_web::http::switch_language(&code, query.back, "/")
}

async fn status_page(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let ctx = match s.authorise(&headers, "/", Role::Viewer) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let now = s.now();
    let view = match status_view(&s, now) {
        Ok(view) => view,
        Err(error) => return internal(error),
    };
    let body = pages::status(ctx.lang, &ctx.session, &view, now);
    s.render(&ctx, ctx.lang.tr("Status"), None, body)
}

fn status_view(s: &AppState, now: DateTime<Utc>) -> Result<pages::StatusView, StoreError> {
    let mut gateway = s.lock();
    let clock_trusted = gateway.clock_trusted(now)?;
    let store = gateway.store();
    // What central gets at each session is what the page shows.
    let health = s.app.health.status(store)?;
    let marks = store.guard_marks()?;
    let skew = store.clock_state()?.last_skew.map(|d| d.num_seconds());
    let holds = store
        .holds(10)?
        .into_iter()
        .filter(|h| h.released.is_none())
        .map(|h| (h.id, h.accounts.len(), h.reasons))
        .collect();
    Ok(pages::StatusView {
        last_sync: marks.last_sync_at,
        backlog: (health.priority_backlog, health.readings_backlog),
        oldest_unsent: health.oldest_unsent,
        clock: (clock_trusted, skew),
        disk: health.disk,
        radio: health.radio,
        policy: s
            .app
            .policy_health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|pass| (pass.at, pass.error.clone())),
        uptime: s.app.health.uptime_seconds(),
        holds,
    })
}

/// Free and total bytes of the file system holding `dir`.
#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

async fn meters_page(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Response {
    let ctx = match s.authorise(&headers, "/meters", Role::Viewer) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let q = query.q.unwrap_or_default();
    let needle = q.trim().to_lowercase();
    let rows = match meter_rows(&s, |status| {
        needle.is_empty()
            || status.account.to_lowercase().contains(&needle)
            || status.consumer_name.to_lowercase().contains(&needle)
            || status
                .meter
                .as_ref()
                .is_some_and(|m| m.to_lowercase().contains(&needle))
    }) {
        Ok(rows) => rows,
        Err(error) => return internal(error),
    };
    let body = pages::meters(ctx.lang, &q, &rows);
    s.render(&ctx, ctx.lang.tr("Meters"), None, body)
}

/// Rows for the accounts `keep` selects, with their meters' readings, radio health and alerts.
fn meter_rows(
    s: &AppState,
    keep: impl Fn(&AccountStatus) -> bool,
) -> Result<Vec<pages::MeterRow>, StoreError> {
    let health = s.app.health.link().map(|stats| stats.meters);
    let mut gateway = s.lock();
    let policy = gateway.policy().clone();
    let store = gateway.store();
    let mut rows = Vec::new();
    for status in gateway_status(store, &policy)?
        .accounts
        .into_iter()
        .filter(|a| keep(a))
    {
        let meter = match &status.meter {
            Some(serial) => store.meter_id(serial)?,
            None => None,
        };
        rows.push(pages::MeterRow {
            last_reading: meter.map(|m| store.last_reading(m)).transpose()?.flatten(),
            health: meter.and_then(|m| health.as_ref()?.get(&m).cloned()),
            alerts: store
                .recent_alerts(&status.account, 3)?
                .into_iter()
                .map(|(kind, _)| kind)
                .collect(),
            status,
        });
    }
    Ok(rows)
}

async fn meter_page(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(serial): UrlPath<String>,
) -> Response {
    let path = format!("/meters/{serial}");
    let ctx = match s.authorise(&headers, &path, Role::Viewer) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let now = s.now();
    let found = meter_rows(&s, |status| {
        status.meter.as_deref() == Some(serial.as_str())
    })
    .and_then(|mut rows| {
        let Some(row) = rows.pop() else {
            return Ok(None);
        };
        let mut gateway = s.lock();
        let store = gateway.store();
        let Some(meter) = store.meter_id(&serial)? else {
            return Ok(None);
        };
        let account = row.status.account.clone();
        let month = gramgrid_core::civil::Month::containing(now).to_string();
        let view = pages::MeterView {
            chart: load_chart(store, meter, now)?,
            events: store.meter_events(meter, METER_PAGE_EVENTS)?,
            max_demand: month_max_demand(store, meter, now)?,
            exported_wh: store.last_export(meter)?,
            sanctioned_load_w: store.sanctioned_load(&account)?,
            overload_intervals: store.overload_in(&account, &month)?,
            row,
        };
        Ok(Some(view))
    });
    match found {
        Ok(Some(view)) => {
            let body = pages::meter(ctx.lang, &ctx.session, &view);
            s.render(
                &ctx,
                &format!("{} {serial}", ctx.lang.tr("Meter")),
                None,
                body,
            )
        }
        Ok(None) => s.refusal(&ctx, StatusCode::NOT_FOUND, ctx.lang.tr("No such meter.")),
        Err(error) => internal(error),
    }
}

/// How many of a meter's latest events its page lists.
const METER_PAGE_EVENTS: usize = 30;

/// The meter's maximum demand in the local month of `now` (`gramgrid_core::demand`).
fn month_max_demand(
    store: &Store,
    meter: i64,
    now: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, i64)>, StoreError> {
    let month = gramgrid_core::civil::Month::containing(now);
    let Some(first_day) = month.first_day() else {
        return Ok(None);
    };
    let start = gramgrid_core::civil::start_of_local_day(first_day);
    store.max_demand(meter, start, now + Duration::hours(1))
}

/// The meter's last 7 days as kWh per hour, labelled at each local midnight.
fn load_chart(store: &Store, meter: i64, now: DateTime<Utc>) -> Result<Markup, StoreError> {
    const HOURS: i64 = 7 * 24;
    let end = now - Duration::seconds(now.timestamp().rem_euclid(3600)) + Duration::hours(1);
    let start = end - Duration::hours(HOURS);
    // One reading before the window gives the first hour its start.
    let readings = store.meter_readings(meter, start - Duration::hours(1), end)?;
    let per_hour = gramgrid_web::chart::hourly_energy(&readings, start, HOURS as usize);
    let labels = (0..HOURS as usize)
        .filter_map(|i| {
            let local = gramgrid_core::civil::local(start + Duration::hours(i as i64));
            (chrono::Timelike::hour(&local) == 0).then(|| (i, local.format("%d-%m").to_string()))
        })
        .collect::<Vec<_>>();
    Ok(gramgrid_web::chart::load_bars(&per_hour, &labels))
}

async fn why_page(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(account): UrlPath<String>,
) -> Response {
    why(&s, &headers, &account, None)
}

fn why(s: &AppState, headers: &HeaderMap, account: &str, notice: Option<Notice>) -> Response {
    let path = format!("/accounts/{account}/why");
    let ctx = match s.authorise(headers, &path, Role::Viewer) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    match why_view(s, account) {
        Ok(Some(view)) => {
            let body = pages::why(ctx.lang, &ctx.session, &view);
            let title = format!(
                "{} {account}",
                ctx.lang.tr("Why is this household off or on?")
            );
            s.render(&ctx, &title, notice, body)
        }
        Ok(None) => s.refusal(&ctx, StatusCode::NOT_FOUND, ctx.lang.tr("No such account.")),
        Err(error) => internal(error),
    }
}

/// How many of an account's latest decisions the "why" page explains.
const DECISIONS_SHOWN: usize = 5;

fn why_view(s: &AppState, account: &str) -> Result<Option<pages::WhyView>, StoreError> {
    let now = s.now();
    let mut gateway = s.lock();
    let policy = gateway.policy().clone();
    let store = gateway.store();
    let Some(status) = gateway_status(store, &policy)?
        .accounts
        .into_iter()
        .find(|a| a.account == account)
    else {
        return Ok(None);
    };
    let mut decisions = Vec::new();
    for (id, record) in store.decisions(account, None, DECISIONS_SHOWN)? {
        let replays = record.replays();
        if !replays {
            let detail = format!(
                "recorded {:?}, replay gives {:?}",
                record.outcome,
                record.replay()
            );
            store.flag_replay_mismatch(&id, &detail, now)?;
        }
        decisions.push(pages::DecisionView {
            lines: record.explain(),
            replays,
            id,
        });
    }
    let active_override = store
        .active_override(account, now)?
        .map(|o| format!("{:?} {} {}", o.action, "until", i18n::when(o.until)));
    Ok(Some(pages::WhyView {
        status,
        active_override,
        decisions,
        override_max_hours: (s.app.config.override_max.as_secs() / 3600).max(1),
    }))
}

#[derive(Deserialize)]
struct OverrideForm {
    csrf: String,
    hours: String,
    reason: String,
}

async fn override_relay(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(account): UrlPath<String>,
    Form(form): Form<OverrideForm>,
) -> Response {
    let path = format!("/accounts/{account}/override");
    let ctx = match s.authorise_form(&headers, &path, Role::Supervisor, &form.csrf) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let reason = form.reason.trim();
    let max_hours = (s.app.config.override_max.as_secs() / 3600).max(1);
    let hours = form
        .hours
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|h| (1..=max_hours).contains(h));
    let (Some(hours), false) = (hours, reason.is_empty()) else {
        let text = if reason.is_empty() {
            ctx.lang.tr("A reason is required.").to_string()
        } else {
            format!("{} 1–{max_hours}", ctx.lang.tr("Hours"))
        };
        return why(&s, &headers, &account, Some(Notice::Refused(text)));
    };
    let now = s.now();
    let until = now + Duration::hours(hours as i64);
    let record = OverrideRecord {
        id: format!(
            "override-{}-{}",
            s.app.gateway_id,
            &auth::random_token()[..24]
        ),
        account: account.clone(),
        action: RelayAction::Connect,
        until,
        technician: ctx.session.name.clone(),
        reason: reason.to_string(),
        created_at: now,
    };
    let done = {
        let mut gateway = s.lock();
        gateway
            .store()
            .record_override(&record)
            // The policy pass turns it into a reconnect at once, not at the next minute.
            .and_then(|()| gateway.tick(now).map(|_| ()))
    };
    match done {
        Ok(()) => {}
        Err(StoreError::UnknownAccount(_)) => {
            return s.refusal(&ctx, StatusCode::NOT_FOUND, ctx.lang.tr("No such account."))
        }
        Err(error) => return internal(error),
    }
    let detail = format!("keep connected until {}", i18n::when(until));
    if let Err(error) = s.audit(
        &ctx.session.name,
        "override",
        Some(&account),
        detail,
        Some(reason),
    ) {
        return internal(error);
    }
    why(
        &s,
        &headers,
        &account,
        Some(Notice::Done(ctx.lang.tr("Override recorded.").into())),
    )
}

#[derive(Deserialize)]
struct InstallQuery {
    #[serde(default)]
    serial: String,
    #[serde(default)]
    account: String,
}

/// The commissioning form and the stock. `?serial=` fills the serial in, so a QR code on the
/// nameplate that holds this page's address opens it ready to submit.
async fn install_page(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<InstallQuery>,
) -> Response {
    let ctx = match s.authorise(&headers, "/install", Role::Technician) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let serial = install::serial_from_scan(&query.serial);
    install_form(
        &s,
        &ctx,
        StatusCode::OK,
        None,
        (&serial, query.account.trim()),
    )
}

fn install_form(
    s: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    notice: Option<Notice>,
    (serial, account): (&str, &str),
) -> Response {
    let spares = match s.lock().store().stock_meters() {
        Ok(spares) => spares,
        Err(error) => return internal(error),
    };
    let view = pages::InstallView {
        spares,
        serial,
        account,
    };
    let body = pages::install(ctx.lang, &ctx.session, &view);
    let title = ctx.lang.tr("Install a meter");
    (status, s.render(ctx, title, notice, body)).into_response()
}

#[derive(Deserialize)]
struct InstallForm {
    csrf: String,
    account: String,
    serial: String,
    #[serde(default)]
    first_register: String,
    /// Present (the meter page's form) for a replacement.
    final_register: Option<String>,
    #[serde(default)]
    reason: String,
}

/// Commissions a spare on an account with no meter, or (with `final_register`) swaps one for the
/// account's meter in service; audited and reported to central in the same transaction.
async fn install(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<InstallForm>,
) -> Response {
    let ctx = match s.authorise_form(&headers, "/install", Role::Technician, &form.csrf) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let lang = ctx.lang;
    let account = form.account.trim();
    let serial = install::serial_from_scan(&form.serial);
    let refuse = |text: String| {
        install_form(
            &s,
            &ctx,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(Notice::Refused(text)),
            (&serial, account),
        )
    };
    let request = match install::InstallRequest::parse(
        &form.first_register,
        form.final_register.as_deref(),
        form.reason.trim(),
    ) {
        Ok(request) => request,
        Err(problem) => return refuse(lang.tr(problem.text()).to_string()),
    };
    let swap = MeterSwap {
        account: account.to_string(),
        serial: serial.clone(),
        first_register_wh: request.first_register_wh,
        final_register_wh: request.final_register_wh,
        at: s.now(),
    };
    let (action, detail) = request.describe(&serial);
    let record = s.action(
        &ctx.session.name,
        action,
        Some(account),
        detail,
        request.reason,
    );
    let installed = s.lock().install_spare(&swap, &record);
    match installed {
        Ok(_) => {
            let text = format!(
                "{} {serial} · {} {account}.",
                lang.tr("Meter installed"),
                lang.tr("Account")
            );
            install_form(&s, &ctx, StatusCode::OK, Some(Notice::Done(text)), ("", ""))
        }
        Err(StoreError::InstallRefused(why)) => refuse(why),
        Err(StoreError::UnknownAccount(_)) => refuse(lang.tr("No such account.").to_string()),
        Err(error) => internal(error),
    }
}

async fn redeem_page(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let ctx = match s.authorise(&headers, "/redeem", Role::Technician) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let body = pages::redeem(ctx.lang, &ctx.session);
    s.render(&ctx, ctx.lang.tr("Redeem voucher"), None, body)
}

#[derive(Deserialize)]
struct RedeemForm {
    csrf: String,
    code: String,
}

async fn redeem(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<RedeemForm>,
) -> Response {
    let ctx = match s.authorise_form(&headers, "/redeem", Role::Technician, &form.csrf) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let lang = ctx.lang;
    let code = form.code.trim();
    let outcome = crate::local::redeem_voucher(&s.app.gateway, code, s.now(), &s.app.wakers);
    let (notice, audited) = match &outcome {
        Ok(credited) => (
            Notice::Done(format!(
                "{}: {} {} {}. {} {}.",
                lang.tr("Voucher accepted"),
                i18n::inr(credited.amount_paise),
                lang.tr("credited to account"),
                credited.account,
                lang.tr("Balance now"),
                i18n::inr(credited.balance_paise)
            )),
            s.audit(
                &ctx.session.name,
                "redeem",
                Some(&credited.account),
                format!("voucher of {} credited", i18n::inr(credited.amount_paise)),
                None,
            ),
        ),
        Err(why) => (
            Notice::Refused(format!("{}: {why}", lang.tr("Voucher refused"))),
            Ok(()),
        ),
    };
    if let Err(error) = audited {
        return internal(error);
    }
    let status = if outcome.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = pages::redeem(lang, &ctx.session);
    (
        status,
        s.render(&ctx, lang.tr("Redeem voucher"), Some(notice), body),
    )
        .into_response()
}

async fn sync_now(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let ctx = match s.authorise_form(&headers, "/sync", Role::Technician, &form.csrf) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    if let Err(error) = s.audit(
        &ctx.session.name,
        "sync_now",
        None,
        "sync requested".into(),
        None,
    ) {
        return internal(error);
    }
    s.app.wakers.sync.notify_one();
    let now = s.now();
    match status_view(&s, now) {
        Ok(view) => {
            let body = pages::status(ctx.lang, &ctx.session, &view, now);
            let notice = Notice::Done(ctx.lang.tr("Sync requested: it starts now.").into());
            s.render(&ctx, ctx.lang.tr("Status"), Some(notice), body)
        }
        Err(error) => internal(error),
    }
}

/// The transformer's energy audits of the last two weeks.
async fn audit_page(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let ctx = match s.authorise(&headers, "/audit", Role::Viewer) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let audits = match s.lock().store().energy_audits(14) {
        Ok(audits) => audits,
        Err(error) => return internal(error),
    };
    let body = pages::energy_audit(ctx.lang, &audits);
    s.render(&ctx, ctx.lang.tr("Energy audit"), None, body)
}

async fn diagnostics(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let ctx = match s.authorise(&headers, "/diagnostics", Role::Technician) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let now = s.now();
    let bundle = match diagnostics_bundle(&s, now) {
        Ok(bundle) => bundle,
        Err(error) => return internal(error),
    };
    if let Err(error) = s.audit(
        &ctx.session.name,
        "diagnostics",
        None,
        "diagnostics downloaded".into(),
        None,
    ) {
        return internal(error);
    }
    let name = format!(
        "attachment; filename=\"gramgrid-{}-diagnostics-{}.json\"",
        s.app.gateway_id,
        now.format("%Y%m%dT%H%M%SZ")
    );
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::CONTENT_DISPOSITION, name),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        bundle,
    )
        .into_response()
}

/// What a technician sends the office when something is wrong: the config (no secrets), the
/// status, the link's counters, the store's self-check, the sync state and recent actions.
fn diagnostics_bundle(s: &AppState, now: DateTime<Utc>) -> Result<String, StoreError> {
    let link = s.app.health.link();
    let view = status_view(s, now)?;
    let mut gateway = s.lock();
    let policy = gateway.policy().clone();
    let book = gateway.tariff_book().clone();
    let store = gateway.store();
    let status = gateway_status(store, &policy)?;
    let problems = store.verify(&book)?;
    let cursors = store.sync_cursors()?;
    let actions: Vec<HashMap<&str, String>> = store
        .technician_actions(50)?
        .into_iter()
        .map(|a| {
            HashMap::from([
                ("at", a.at.to_rfc3339()),
                ("technician", a.technician),
                ("action", a.action),
                ("subject", a.subject.unwrap_or_default()),
                ("detail", a.detail),
            ])
        })
        .collect();
    let bundle = serde_json::json!({
        "gateway": s.app.gateway_id,
        "version": crate::health::SOFTWARE_VERSION,
        "generated_at": now.to_rfc3339(),
        "config_toml": s.app.config_toml,
        "status": status,
        "last_sync": view.last_sync.map(|t| t.to_rfc3339()),
        "backlog": { "records": view.backlog.0, "readings": view.backlog.1 },
        "oldest_unsent_reading": view.oldest_unsent.map(|t| t.to_rfc3339()),
        "clock": { "trusted": view.clock.0, "skew_seconds": view.clock.1 },
        "disk": view.disk.map(|d| serde_json::json!({ "free_bytes": d.free, "total_bytes": d.total })),
        "link": link,
        "policy_last_pass": view.policy.map(|(at, error)| serde_json::json!({ "at": at.to_rfc3339(), "error": error })),
        "uptime_seconds": view.uptime,
        "sync_cursors": {
            "priority_acked": cursors.priority_acked,
            "readings_acked": cursors.readings_acked,
            "downlink_applied": cursors.downlink_applied,
        },
        "verify": { "consistent": problems.is_empty(), "problems": problems },
        "technician_actions": actions,
        "recent_logs": crate::recent_logs::lines(),
    });
    Ok(serde_json::to_string_pretty(&bundle).unwrap_or_default())
}
