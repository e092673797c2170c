//! The `/my/` routes: a signed link or a code opens a short session (in memory), the session
//! shows the page, the language switch and log-out; every refusal is a page that says why.
use super::i18n::{Lang, Tr};
use super::pages::{self, Notice};
use super::{code, view};
use crate::Central;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Duration;
use gramgrid_core::message::Language;
use gramgrid_web::http::{cookie, html_response, set_cookie, LANG_COOKIE};
use gramgrid_web::session::{random_token, tokens_match, Session, Sessions};
use maud::Markup;
use serde::Deserialize;
use std::sync::{Arc, Mutex};

/// The household's session cookie (not the office's: both live on central's listener).
const SESSION_COOKIE: &str = "gg_consumer";
/// The login forms' CSRF cookie.
const LOGIN_COOKIE: &str = "gg_consumer_login";
/// Longest a session lasts however busy (the idle age is `[consumer] session_idle`).
const SESSION_MAX: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

struct ConsumerState {
    central: Arc<Central>,
    /// Sessions by token; the name is the account id.
    sessions: Mutex<Sessions<()>>,
}

type Shared = State<Arc<ConsumerState>>;

/// The page's routes under `/my/`, for central's listener (no client certificate, no token).
pub fn router(central: Arc<Central>) -> Router {
    let state = Arc::new(ConsumerState {
        central,
        sessions: Mutex::new(Sessions::default()),
    });
    Router::new()
        .route("/my", get(|| async { Redirect::permanent("/my/") }))
        .route("/my/", get(home))
        .route("/my/l/{token}", get(open_link))
        .route("/my/login", get(login_page).post(ask_for_code))
        .route("/my/code", post(enter_code))
        .route("/my/lang/{code}", get(switch_language))
        .route("/my/logout", post(logout))
        .route("/my/bill", get(printable_bill))
        .layer(DefaultBodyLimit::max(8 * 1024))
        .with_state(state)
}

impl ConsumerState {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions<()>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request's session, refreshed, if it has a live one.
    fn session(&self, headers: &HeaderMap) -> Option<Session<()>> {
        let token = cookie(headers, SESSION_COOKIE)?;
        let idle = self.central.config().consumer.session_idle;
        self.sessions()
            .touch(&token, self.central.now(), idle, SESSION_MAX)
            .ok()
    }

    /// A new session for `account` and the cookie that carries it (None only if the session
    /// ended as it began: a clock gone backwards past its start).
    fn start(
        &self,
        account: &str,
        name: &str,
    ) -> Option<(Session<()>, (axum::http::HeaderName, String))> {
        let mut sessions = self.sessions();
        let token = sessions.start(account, name, (), self.central.now());
        let idle = self.central.config().consumer.session_idle;
        let session = sessions
            .touch(&token, self.central.now(), idle, SESSION_MAX)
            .ok()?;
        Some((
            session,
            set_cookie(SESSION_COOKIE, &token, SESSION_MAX.as_secs()),
        ))
    }

    /// The account's page as read now.
    async fn account_page(&self, account: &str) -> crate::Result<view::AccountPage> {
        let central = &self.central;
        let stale_after = Duration::from_std(central.config().stale_after).unwrap_or(Duration::MAX);
        let (now, book, account) = (central.now(), central.tariff_book(), account.to_owned());
        central
            .db()
            .transaction(move |tx| view::account_page(tx, &account, now, stale_after, &book))
            .await
    }

    /// The account's page for `session`, in the chosen language or else the account's own.
    async fn render_account(&self, headers: &HeaderMap, session: &Session<()>) -> Response {
        match self.account_page(&session.name).await {
            Ok(view) => {
                let lang = language(headers, Some(view.language));
                let body = pages::account(lang, &view, &session.csrf, self.central.now());
                html_response(pages::page(lang, "/my/", None, body))
            }
            Err(error) => internal(headers, error),
        }
    }
}

/// The language a person chose (the `gg_lang` cookie), else the account's, else English.
fn language(headers: &HeaderMap, account: Option<Language>) -> Lang {
    match (cookie(headers, LANG_COOKIE), account) {
        (Some(code), _) => Lang::parse(&code),
        (None, Some(Language::Hindi)) => Lang::Hi,
        (None, _) => Lang::En,
    }
}

/// A page for something that went wrong at central, with an id the log has too.
fn internal(headers: &HeaderMap, error: impl std::fmt::Display) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    tracing::error!(error_id = %id, %error, "consumer page failed");
    let lang = language(headers, None);
    let notice = Notice::Refused(
        lang.tr("The page cannot be shown just now. Please try again in a few minutes."),
    );
    let body = maud::html! { p.muted { "ref " (id) } };
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        html_response(pages::page(lang, "/my/", Some(&notice), body)),
    )
        .into_response()
}

async fn home(State(s): Shared, headers: HeaderMap) -> Response {
    match s.session(&headers) {
        Some(session) => s.render_account(&headers, &session).await,
        None if cookie(&headers, SESSION_COOKIE).is_some_and(|c| !c.is_empty()) => {
            Redirect::to("/my/login?expired=1").into_response()
        }
        None => Redirect::to("/my/login").into_response(),
    }
}

async fn open_link(State(s): Shared, headers: HeaderMap, Path(token): Path<String>) -> Response {
    let refused = |expired: bool| {
        let lang = language(&headers, None);
        let body = pages::page(lang, "/my/login", None, pages::link_refused(lang, expired));
        (StatusCode::FORBIDDEN, html_response(body)).into_response()
    };
    let account = match s.central.link_key().verify(&token, s.central.now()) {
        Ok(account) => account,
        Err(why) => return refused(why == super::LinkRefused::Expired),
    };
    let view = match s.account_page(&account).await {
        Ok(view) => view,
        // Signed for an account that is no more.
        Err(crate::CentralError::NotFound(_)) => return refused(false),
        Err(error) => return internal(&headers, error),
    };
    let Some((session, set)) = s.start(&view.account, &view.name) else {
        return internal(&headers, "a new session was refused");
    };
    let lang = language(&headers, Some(view.language));
    // The page itself, not a redirect: a link opened from an SMS app is a cross-site visit, on
    // which the browser would not yet send the new (SameSite=Strict) cookie back.
    let body = pages::account(lang, &view, &session.csrf, s.central.now());
    ([set], html_response(pages::page(lang, "/my/", None, body))).into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    expired: Option<String>,
}

async fn login_page(State(s): Shared, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    if q.expired.is_none() && s.session(&headers).is_some() {
        return Redirect::to("/my/").into_response();
    }
    let lang = language(&headers, None);
    let notice =
        q.expired.map(|_| {
            Notice::Info(lang.tr(
                "Your session has ended. Open the link from your SMS again, or ask for a code.",
            ))
        });
    login_form(lang, notice, StatusCode::OK, |csrf| {
        pages::ask_for_code(lang, csrf)
    })
}

/// A login page with a fresh CSRF token, in its form (`form`) and in a cookie.
fn login_form(
    lang: Lang,
    notice: Option<Notice>,
    status: StatusCode,
    form: impl FnOnce(&str) -> Markup,
) -> Response {
    let token = random_token();
    let body = pages::page(lang, "/my/login", notice.as_ref(), form(&token));
    (
        status,
        [set_cookie(LOGIN_COOKIE, &token, 3600)],
        html_response(body),
    )
        .into_response()
}

/// Whether a login form came from this site: its token is the cookie's.
fn form_is_ours(headers: &HeaderMap, csrf: &str) -> bool {
    cookie(headers, LOGIN_COOKIE)
        .is_some_and(|expected| !expected.is_empty() && tokens_match(&expected, csrf))
}

fn out_of_date(lang: Lang) -> Response {
    let notice = Notice::Refused(lang.tr("The form was out of date. Please try again."));
    login_form(lang, Some(notice), StatusCode::FORBIDDEN, |csrf| {
        pages::ask_for_code(lang, csrf)
    })
}

#[derive(Deserialize)]
struct CodeRequest {
    csrf: String,
    account: String,
    phone: String,
}

async fn ask_for_code(
    State(s): Shared,
    headers: HeaderMap,
    Form(form): Form<CodeRequest>,
) -> Response {
    let lang = language(&headers, None);
    if !form_is_ours(&headers, &form.csrf) {
        return out_of_date(lang);
    }
    let account = form.account.trim().to_owned();
    if crate::check_id("account", &account).is_ok() {
        let key = Arc::clone(s.central.link_key());
        let (phone, now, id) = (form.phone, s.central.now(), account.clone());
        let asked = s
            .central
            .db()
            .transaction(move |tx| code::request_code(tx, &key, &id, &phone, now))
            .await;
        match asked {
            Ok(sent) => tracing::info!(account, sent, "consumer login code asked for"),
            Err(error) => return internal(&headers, error),
        }
    }
    // The same answer whether the account exists and the phone is its own or not.
    let notice = Notice::Info(lang.tr("If this phone number is registered for this account, a code has been sent to it. It is valid for 10 minutes; at most 3 codes are sent in an hour."));
    login_form(lang, Some(notice), StatusCode::OK, |csrf| {
        pages::enter_code(lang, csrf, &account)
    })
}

#[derive(Deserialize)]
struct CodeEntry {
    csrf: String,
    account: String,
    code: String,
}

async fn enter_code(State(s): Shared, headers: HeaderMap, Form(form): Form<CodeEntry>) -> Response {
    let lang = language(&headers, None);
    if !form_is_ours(&headers, &form.csrf) {
        return out_of_date(lang);
    }
    let account = form.account.trim().to_owned();
    let key = Arc::clone(s.central.link_key());
    let (typed, now, id) = (form.code, s.central.now(), account.clone());
    let entered = s
        .central
        .db()
        .transaction(move |tx| code::enter_code(tx, &key, &id, &typed, now))
        .await;
    match entered {
        Ok(true) => {
            let name = match s.account_page(&account).await {
                Ok(view) => view.name,
                Err(error) => return internal(&headers, error),
            };
            let Some((_, set)) = s.start(&account, &name) else {
                return internal(&headers, "a new session was refused");
            };
            (
                AppendHeaders([set, set_cookie(LOGIN_COOKIE, "", 0)]),
                Redirect::to("/my/"),
            )
                .into_response()
        }
        Ok(false) => {
            let notice =
                Notice::Refused(lang.tr(
                    "The code is wrong or no longer valid. Check the SMS, or ask for a new code.",
                ));
            login_form(lang, Some(notice), StatusCode::UNAUTHORIZED, |csrf| {
                pages::enter_code(lang, csrf, &account)
            })
        }
        Err(error) => internal(&headers, error),
    }
}

#[derive(Deserialize)]
struct BackQuery {
    back: Option<String>,
}

async fn switch_language(Path(code): Path<String>, Query(query): Query<BackQuery>) -> Response {
    gramgrid_web::http::switch_language(&code, query.back, "/my/")
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(State(s): Shared, headers: HeaderMap, Form(form): Form<LogoutForm>) -> Response {
    if let (Some(session), Some(token)) = (s.session(&headers), cookie(&headers, SESSION_COOKIE)) {
        if tokens_match(&session.csrf, &form.csrf) {
            s.sessions().end(&token);
        }
    }
    (
        [set_cookie(SESSION_COOKIE, "", 0)],
        Redirect::to("/my/login"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct BillQuery {
    month: Option<String>,
}

/// The household's printable bill for a month (this month so far without one): the office's
/// bill page (`bill::html`), for the account of the session only.
async fn printable_bill(
    State(s): Shared,
    headers: HeaderMap,
    Query(query): Query<BillQuery>,
) -> Response {
    let Some(session) = s.session(&headers) else {
        return Redirect::to("/my/login").into_response();
    };
    let now = s.central.now();
    let Some(month) = query.month.as_deref().map_or(
        Some(gramgrid_core::civil::Month::containing(now)),
        gramgrid_core::civil::Month::parse,
    ) else {
        return Redirect::to("/my/").into_response();
    };
    let account = session.name.clone();
    let bill = s
        .central
        .db()
        .transaction(move |tx| crate::bill::month_bill(tx, &account, month))
        .await;
    match bill {
        Ok(bill) => {
            let lang = match language(&headers, None) {
                Lang::Hi => Language::Hindi,
                Lang::En => Language::English,
            };
            html_response(crate::bill::html::render(&bill, lang))
        }
        Err(error) => internal(&headers, error),
    }
}
