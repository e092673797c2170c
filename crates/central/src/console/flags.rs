//! The flags page: the business events (offline overdrafts, double redemptions, refused records,
//! clock skew, breaker holds), open ones first, and resolving one with what was done.
use super::i18n::Tr;
use super::layout::Notice;
use super::{Ctx, Shared};
use crate::flags::{self, Flag, Which};
use crate::staff::Permission;
use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use gramgrid_web::format::when;
use gramgrid_web::lang::Lang;
use maud::{html, Markup};
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct FlagsQuery {
    show: Option<String>,
}

fn which(show: Option<&str>) -> Which {
    match show {
        Some("resolved") => Which::Resolved,
        Some("all") => Which::All,
        _ => Which::Open,
    }
}

pub(super) async fn list(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<FlagsQuery>,
) -> Response {
    let ctx = match s.authorise(&headers, "/console/flags", Permission::Read) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    show(&s, &ctx, which(query.show.as_deref()), None).await
}

async fn show(s: &Shared, ctx: &Ctx, which: Which, notice: Option<Notice>) -> Response {
    let all = match s.read(ctx, move |tx| flags::list(tx, which)).await {
        Ok(all) => all,
        Err(response) => return *response,
    };
    let body = body(ctx, which, &all);
    s.render(ctx, ctx.lang.tr("Flags"), notice, body)
}

fn body(ctx: &Ctx, which: Which, all: &[Flag]) -> Markup {
    let lang = ctx.lang;
    let may_resolve = ctx.session.role.may(Permission::Resolve);
    html! {
        p.tabs {
            @for (key, label, this) in [("open", "Open", Which::Open), ("resolved", "Resolved", Which::Resolved), ("all", "All", Which::All)] {
                @if this == which { strong { (lang.tr(label)) } } @else { a href=(format!("/console/flags?show={key}")) { (lang.tr(label)) } }
            }
            " · " a href="/console/reports/flags.csv" { "CSV" }
        }
        @if all.is_empty() {
            p { (lang.tr("Nothing here.")) }
        }
        @for flag in all {
            section.flag.urgent[flag.urgent && flag.resolved.is_none()] id=(flag.id) {
                p {
                    strong { (flag.kind) }
                    " · " (when(flag.at))
                    @if let Some(gateway) = &flag.gateway { " · " a href=(format!("/console/gateways/{gateway}")) { (gateway) } }
                    @if let Some(account) = &flag.account { " · " a href=(format!("/console/accounts/{account}")) { (account) } }
                }
                p { (flag.detail) }
                @match &flag.resolved {
                    Some(r) => p.done { (lang.tr("Resolved by")) " " (r.by.trim_start_matches("staff:")) ", " (when(r.at)) ": " (r.how) },
                    None if may_resolve => (resolve_form(lang, &ctx.session.csrf, &flag.id)),
                    None => {},
                }
            }
        }
    }
}

fn resolve_form(lang: Lang, csrf: &str, id: &str) -> Markup {
    html! {
        form.inline method="post" action="/console/flags/resolve" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="id" value=(id);
            label { (lang.tr("What was done")) input name="how" required maxlength="500"; }
            button type="submit" { (lang.tr("Resolve")) }
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ResolveForm {
    csrf: String,
    id: String,
    how: String,
}

pub(super) async fn resolve(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<ResolveForm>,
) -> Response {
    let ctx = match s.authorise_form(
        &headers,
        "/console/flags/resolve",
        Permission::Resolve,
        &form.csrf,
    ) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let (by, now, id) = (ctx.auditor(), s.now(), form.id.clone());
    let done = s
        .write(&ctx, move |tx| flags::resolve(tx, &id, &by, &form.how, now))
        .await;
    let notice = match done {
        Ok(()) => Notice::Done(format!("{} {}", ctx.lang.tr("Resolved:"), form.id)),
        Err(error) => Notice::Refused(super::explain(&error).1),
    };
    show(&s, &ctx, Which::Open, Some(notice)).await
}
