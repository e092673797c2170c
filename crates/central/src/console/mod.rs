//! The office console: central's pages for the utility's staff, under `/console/` on central's
//! listener (docs/console.md). Staff log in with the accounts of [`crate::staff`]; each request is
//! checked against the role's [`Permission`]s, every form carries the session's CSRF token, and
//! every write is audited as `staff:<name>` in the write's own transaction.
//!
//! - `layout`: the page frame, the login form, notices; `i18n`: the console's Hindi texts;
//! - `gateways`, `accounts`, `bills`, `cashier`, `vouchers`, `flags`, `reports`, `staff_pages`: one page
//!   set each; `table`: a table as a page shows it and as its CSV exports it.

mod account_csv;
mod accounts;
mod bills;
mod cashier;
mod flags;
mod gateways;
mod i18n;
mod layout;
mod reports;
mod staff_pages;
mod table;
#[cfg(test)]
pub(crate) mod tests;
mod vouchers;

use crate::db::Tx;
use crate::staff::{self, Permission, StaffRole};
use crate::{audit, Central, CentralError};
use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use gramgrid_web::format::when;
use gramgrid_web::http::{cookie, html_response, language, set_cookie};
use gramgrid_web::lang::Lang;
use gramgrid_web::session::{self, Session, SessionRefused, Sessions};
use i18n::Tr;
use layout::Notice;
use maud::Markup;
use serde::Deserialize;
use std::sync::{Arc, Mutex};

/// Where the console lives on central's listener.
pub const PREFIX: &str = "/console";
const SESSION_COOKIE: &str = "gg_console";
const LOGIN_COOKIE: &str = "gg_console_login";

/// The console's state: central and the sessions of this server (a restart logs everyone out).
struct Console {
    central: Arc<Central>,
    sessions: Mutex<Sessions<StaffRole>>,
}

type Shared = Arc<Console>;

/// A request's staff member, language and path.
struct Ctx {
    session: Session<StaffRole>,
    lang: Lang,
    path: String,
}

impl Ctx {
    /// The name the audit records for this staff member's writes.
    fn auditor(&self) -> String {
        format!("staff:{}", self.session.name)
    }
}

/// The console's routes, to merge into central's router.
pub fn router(central: Arc<Central>) -> Router {
    let console = Arc::new(Console {
        central,
        sessions: Mutex::new(Sessions::default()),
    });
    Router::new()
        .route(PREFIX, get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/lang/{code}", get(switch_language))
        .route("/console/gateways", get(gateways::list))
        .route("/console/gateways/{id}", get(gateways::page))
        .route("/console/flags", get(flags::list))
        .route("/console/reports", get(reports::index))
        .route(
            "/console/staff",
            get(staff_pages::list).post(staff_pages::save),
        )
        .route("/console/reports/{name}", get(reports::report))
        .route("/console/flags/resolve", post(flags::resolve))
        .merge(accounts::routes())
        .merge(account_csv::routes())
        .merge(bills::routes())
        .merge(cashier::routes())
        .merge(vouchers::routes())
        .with_state(console)
}

impl Console {
    fn now(&self) -> DateTime<Utc> {
        self.central.now()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions<StaffRole>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request's session if its role may do `what`; otherwise the response to send.
    fn authorise(
        &self,
        headers: &HeaderMap,
        path: &str,
        what: Permission,
    ) -> Result<Ctx, Box<Response>> {
        let lang = language(headers);
        let token = cookie(headers, SESSION_COOKIE).unwrap_or_default();
        let config = &self.central.config().console;
        let session = self
            .sessions()
            .touch(&token, self.now(), config.session_idle, config.session_max)
            .map_err(|refused| {
                let to = match refused {
                    SessionRefused::Expired => "/console/login?expired=1",
                    SessionRefused::Unknown => "/console/login",
                };
                Box::new(Redirect::to(to).into_response())
            })?;
        let ctx = Ctx {
            session,
            lang,
            path: path.to_string(),
        };
        if !ctx.session.role.may(what) {
            let text = lang.tr("Your role does not allow this. Nothing was changed.");
            return Err(Box::new(self.refusal(&ctx, StatusCode::FORBIDDEN, text)));
        }
        Ok(ctx)
    }

    /// As [`Console::authorise`] for a form, which must also carry the session's CSRF token.
    fn authorise_form(
        &self,
        headers: &HeaderMap,
        path: &str,
        what: Permission,
        csrf: &str,
    ) -> Result<Ctx, Box<Response>> {
        let ctx = self.authorise(headers, path, what)?;
        if !session::tokens_match(&ctx.session.csrf, csrf) {
            let text = ctx.lang.tr(
                "The form was out of date or not from this console. Nothing was changed; please try again.",
            );
            return Err(Box::new(self.refusal(&ctx, StatusCode::FORBIDDEN, text)));
        }
        Ok(ctx)
    }

    fn render(&self, ctx: &Ctx, title: &str, notice: Option<Notice>, body: Markup) -> Response {
        html_response(layout::page(
            &layout::Frame::of(ctx),
            title,
            notice.as_ref(),
            body,
        ))
    }

    fn refusal(&self, ctx: &Ctx, status: StatusCode, text: &str) -> Response {
        let notice = Notice::Refused(text.to_string());
        let body = layout::page(
            &layout::Frame::of(ctx),
            ctx.lang.tr("Refused"),
            Some(&notice),
            maud::html! {},
        );
        (status, html_response(body)).into_response()
    }

    /// Reads in one transaction; a failure is the error page.
    async fn read<T: Send + 'static>(
        &self,
        ctx: &Ctx,
        f: impl FnOnce(&mut dyn Tx) -> crate::Result<T> + Send + 'static,
    ) -> Result<T, Box<Response>> {
        self.central
            .db()
            .transaction(f)
            .await
            .map_err(|error| Box::new(self.failure(ctx, error)))
    }

    /// Writes in one transaction with its audit row naming the staff member (`staff:<name>`,
    /// method `POST`, the console path), so a write is never stored without it.
    async fn write<T: Send + 'static>(
        &self,
        ctx: &Ctx,
        f: impl FnOnce(&mut dyn Tx) -> crate::Result<T> + Send + 'static,
    ) -> crate::Result<T> {
        let (who, path, now) = (ctx.auditor(), ctx.path.clone(), self.now());
        self.central
            .db()
            .transaction(move |tx| {
                let done = f(tx)?;
                audit::record(tx, &who, "POST", &path, now)?;
                Ok(done)
            })
            .await
    }

    /// A central error as a page: what to fix for refused input, an error id for a failure.
    fn failure(&self, ctx: &Ctx, error: CentralError) -> Response {
        let (status, text) = explain(&error);
        self.refusal(ctx, status, &text)
    }
}

/// The status and the words for a central error on a page: refused input says what to fix (it is
/// the operator's to correct), a server failure gives an id to quote and says nothing was done.
fn explain(error: &CentralError) -> (StatusCode, String) {
    match error {
        CentralError::Invalid(_) | CentralError::Voucher(_) | CentralError::Rating(_) => {
            (StatusCode::BAD_REQUEST, error.to_string())
        }
        CentralError::NotFound(_) => (StatusCode::NOT_FOUND, error.to_string()),
        CentralError::Conflict(_) | CentralError::Forbidden(_) => {
            (StatusCode::CONFLICT, error.to_string())
        }
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            tracing::error!(error_id = %id, %error, "console request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("The server could not complete this (error id {id}). Nothing was changed; try again later."),
            )
        }
    }
}

async fn home(State(s): State<Shared>, headers: HeaderMap) -> Response {
    match s.authorise(&headers, "/console/", Permission::Read) {
        Ok(_) => Redirect::to("/console/gateways").into_response(),
        Err(response) => *response,
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    expired: Option<String>,
}

async fn login_page(headers: HeaderMap, Query(query): Query<LoginQuery>) -> Response {
    let lang = language(&headers);
    let notice = query.expired.map(|_| {
        Notice::Refused(
            lang.tr("Your session has expired. Please log in again.")
                .into(),
        )
    });
    login_form(lang, notice, "", StatusCode::OK)
}

/// The login page with a fresh login CSRF token (in the form and in a cookie).
fn login_form(lang: Lang, notice: Option<Notice>, name: &str, status: StatusCode) -> Response {
    let token = session::random_token();
    let body = layout::page(
        &layout::Frame::anonymous(lang, "/console/login"),
        lang.tr("Office login"),
        notice.as_ref(),
        layout::login(lang, &token, name),
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
    let name = form.name.trim().to_lowercase();
    if expected.is_empty() || !session::tokens_match(&expected, &form.csrf) {
        let text = lang.tr(
            "The form was out of date or not from this console. Nothing was changed; please try again.",
        );
        return login_form(
            lang,
            Some(Notice::Refused(text.into())),
            &name,
            StatusCode::FORBIDDEN,
        );
    }
    match check_login(&s, &name, form.password).await {
        Ok(Ok(member)) => {
            let token = s
                .sessions()
                .start(&name, &member.full_name, member.role, s.now());
            let max_age = s.central.config().console.session_max.as_secs();
            (
                axum::response::AppendHeaders([
                    set_cookie(SESSION_COOKIE, &token, max_age),
                    set_cookie(LOGIN_COOKIE, "", 0),
                ]),
                Redirect::to("/console/"),
            )
                .into_response()
        }
        Ok(Err((status, text))) => login_form(lang, Some(Notice::Refused(text)), &name, status),
        Err(error) => {
            let (status, text) = explain(&error);
            login_form(lang, Some(Notice::Refused(text)), &name, status)
        }
    }
}

/// A login attempt: the member when the password matches an active, unlocked account (failures
/// cleared), else the status and words to refuse with (the failure counted, the account locked
/// after `[console] lockout_after`). Every attempt is audited; a wrong name and a wrong password
/// get the same answer.
async fn check_login(
    s: &Console,
    name: &str,
    password: String,
) -> crate::Result<Result<staff::StaffMember, (StatusCode, String)>> {
    let now = s.now();
    let lookup = name.to_owned();
    let found = s
        .central
        .db()
        .transaction(move |tx| staff::login_facts(tx, &lookup))
        .await?;
    if let Some((member, _)) = &found {
        if let Some(until) = member.locked_until.filter(|until| *until > now) {
            record_login(s, name, "LOGIN-LOCKED", None).await?;
            return Ok(Err((
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many failed logins: this account is locked until {}.",
                    when(until)
                ),
            )));
        }
    }
    let hash = found
        .as_ref()
        .map_or(gramgrid_web::password::DECOY.to_owned(), |(_, h)| h.clone());
    let matches =
        tokio::task::spawn_blocking(move || gramgrid_web::password::matches(&hash, &password))
            .await
            .unwrap_or(false);
    match found {
        Some((member, _)) if matches && member.active => {
            record_login(s, name, "LOGIN", Some((0, None))).await?;
            Ok(Ok(member))
        }
        Some((member, _)) => {
            let config = &s.central.config().console;
            let (failures, locked) = session::after_failure(
                member.failures,
                config.lockout_after,
                config.lockout_for,
                now,
            );
            record_login(s, name, "LOGIN-FAILED", Some((failures, locked))).await?;
            Ok(Err(wrong_login()))
        }
        None => {
            record_login(s, name, "LOGIN-FAILED", None).await?;
            Ok(Err(wrong_login()))
        }
    }
}

fn wrong_login() -> (StatusCode, String) {
    (
        StatusCode::UNAUTHORIZED,
        "Wrong name or password, or the account is disabled.".into(),
    )
}

/// Audits a login attempt as `staff:<name>` and, for a known name, sets its failure count.
async fn record_login(
    s: &Console,
    name: &str,
    outcome: &'static str,
    failures: Option<(u32, Option<DateTime<Utc>>)>,
) -> crate::Result<()> {
    let (name, now) = (name.to_owned(), s.now());
    s.central
        .db()
        .transaction(move |tx| {
            if let Some((failures, locked)) = failures {
                staff::set_login_failures(tx, &name, failures, locked)?;
            }
            audit::record(tx, &format!("staff:{name}"), outcome, "/console/login", now)
        })
        .await
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
    if s.authorise_form(&headers, "/console/logout", Permission::Read, &form.csrf)
        .is_ok()
    {
        let token = cookie(&headers, SESSION_COOKIE).unwrap_or_default();
        s.sessions().end(&token);
    }
    (
        [set_cookie(SESSION_COOKIE, "", 0)],
        Redirect::to("/console/login"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct BackQuery {
    back: Option<String>,
}

async fn switch_language(
    UrlPath(code): UrlPath<String>,
    Query(query): Query<BackQuery>,
) -> Response {
    gramgrid_web::http::switch_language(&code, query.back, "/console/")
}
