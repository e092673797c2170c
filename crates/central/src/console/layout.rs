//! The console's page frame (navigation by role, language switch, logout), the login form, and
//! the notices at the top of a page. Desktop first, usable on a phone; no script.
use super::i18n::Tr;
use super::Ctx;
use crate::staff::{Permission, StaffRole};
use gramgrid_web::lang::Lang;
use gramgrid_web::session::Session;
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// The console's own rules (and its print rules), after `gramgrid_web`'s base style.
const STYLE: &str = include_str!("style.css");

/// What every page's frame needs.
pub struct Frame<'a> {
    /// The page's language.
    pub lang: Lang,
    /// The page's own path (for the language switch to come back to).
    pub path: &'a str,
    /// The logged-in staff member, if any.
    pub session: Option<&'a Session<StaffRole>>,
}

impl<'a> Frame<'a> {
    /// The frame of a logged-in request.
    pub fn of(ctx: &'a Ctx) -> Frame<'a> {
        Frame {
            lang: ctx.lang,
            path: &ctx.path,
            session: Some(&ctx.session),
        }
    }

    /// The frame of a page shown before login.
    pub fn anonymous(lang: Lang, path: &'a str) -> Frame<'a> {
        Frame {
            lang,
            path,
            session: None,
        }
    }
}

/// A message at the top of a page.
pub enum Notice {
    /// Something done.
    Done(String),
    /// Something refused, and why.
    Refused(String),
}

/// The console's sections, each with the permission that shows it in the navigation.
const SECTIONS: &[(&str, &str, Permission)] = &[
    ("/console/gateways", "Gateways", Permission::Read),
    ("/console/accounts", "Accounts", Permission::Read),
    ("/console/vouchers", "Vouchers", Permission::Cash),
    ("/console/flags", "Flags", Permission::Read),
    ("/console/reports", "Reports", Permission::Read),
    ("/console/staff", "Staff", Permission::Administer),
];

/// Wraps `body` in the page frame: title, navigation, language switch, notice.
pub fn page(frame: &Frame<'_>, title: &str, notice: Option<&Notice>, body: Markup) -> Markup {
    let lang = frame.lang;
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · gramgrid" }
                style { (PreEscaped(gramgrid_web::http::BASE_STYLE)) (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "gramgrid · " (lang.tr("Office")) }
                    a.lang href=(format!("/console/lang/{}?back={}", lang.other().code(), frame.path)) {
                        @if lang == Lang::En { "हिन्दी" } @else { "English" }
                    }
                    @if let Some(session) = frame.session {
                        nav {
                            @for (href, label, needs) in SECTIONS {
                                @if session.role.may(*needs) {
                                    a href=(href) { (lang.tr(label)) }
                                }
                            }
                        }
                        form.logout method="post" action="/console/logout" {
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
        form.card method="post" action="/console/login" {
            input type="hidden" name="csrf" value=(login_csrf);
            label { (lang.tr("Name")) input name="name" value=(name) autocomplete="username" autocapitalize="none" required; }
            label { (lang.tr("Password")) input name="password" type="password" autocomplete="current-password" required; }
            button type="submit" { (lang.tr("Log in")) }
        }
    }
}
