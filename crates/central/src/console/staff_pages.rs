//! Staff accounts for admins: who may log in to the console and with what role; create, change
//! role or password, disable.
use super::i18n::Tr;
use super::layout::Notice;
use super::{Ctx, Shared};
use crate::staff::{self, Permission, StaffChange, StaffMember, StaffRole};
use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::Response;
use gramgrid_web::format::when;
use maud::{html, Markup};
use serde::Deserialize;

pub(super) async fn list(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let ctx = match s.authorise(&headers, "/console/staff", Permission::Administer) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    show(&s, &ctx, None).await
}

async fn show(s: &Shared, ctx: &Ctx, notice: Option<Notice>) -> Response {
    let all = match s.read(ctx, staff::list_staff).await {
        Ok(all) => all,
        Err(response) => return *response,
    };
    let body = body(ctx, &all);
    s.render(ctx, ctx.lang.tr("Staff"), notice, body)
}

fn body(ctx: &Ctx, all: &[StaffMember]) -> Markup {
    let lang = ctx.lang;
    html! {
        table.grid {
            thead { tr { th { (lang.tr("Name")) } th { (lang.tr("Full name")) } th { (lang.tr("Role")) } th { (lang.tr("State")) } th { (lang.tr("Changed")) } } }
            tbody {
                @for m in all {
                    tr {
                        td { (m.name) } td { (m.full_name) } td { (lang.tr(m.role.as_str())) }
                        td {
                            @if !m.active { (lang.tr("disabled")) }
                            @else if let Some(until) = m.locked_until { (lang.tr("locked until")) " " (when(until)) }
                            @else { (lang.tr("active")) }
                        }
                        td { (when(m.updated_at)) }
                    }
                }
            }
        }
        h2 { (lang.tr("Add or change a staff member")) }
        form.card method="post" action="/console/staff" {
            input type="hidden" name="csrf" value=(ctx.session.csrf);
            label { (lang.tr("Name")) input name="name" required autocapitalize="none" pattern="[a-z0-9._-]{3,32}"; }
            label { (lang.tr("Full name")) input name="full_name" required maxlength="100"; }
            label { (lang.tr("Role"))
                select name="role" { @for role in StaffRole::ALL { option value=(role.as_str()) { (lang.tr(role.as_str())) } } }
            }
            label { (lang.tr("New password (blank: keep the current one)")) input name="password" type="password" autocomplete="new-password"; }
            label.check { input type="checkbox" name="disabled" value="1"; " " (lang.tr("Disable logins")) }
            button type="submit" { (lang.tr("Save")) }
        }
    }
}

#[derive(Deserialize)]
pub(super) struct StaffForm {
    csrf: String,
    name: String,
    full_name: String,
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    disabled: Option<String>,
}

pub(super) async fn save(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<StaffForm>,
) -> Response {
    let ctx = match s.authorise_form(
        &headers,
        "/console/staff",
        Permission::Administer,
        &form.csrf,
    ) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let Some(role) = StaffRole::parse(&form.role) else {
        return show(
            &s,
            &ctx,
            Some(Notice::Refused(format!("unknown role '{}'", form.role))),
        )
        .await;
    };
    let name = form.name.trim().to_lowercase();
    let change = StaffChange {
        full_name: form.full_name.trim().to_string(),
        role,
        password: Some(form.password).filter(|p| !p.is_empty()),
        active: Some(form.disabled.is_none()),
    };
    let now = s.now();
    let saved_name = name.clone();
    let saved = s
        .write(&ctx, move |tx| {
            staff::set_staff(tx, &saved_name, &change, now)
        })
        .await;
    let notice = match saved {
        Ok((member, created)) => {
            if !member.active {
                s.sessions().end_all_of(&member.name);
            }
            let done = if created {
                ctx.lang.tr("Created:")
            } else {
                ctx.lang.tr("Changed:")
            };
            Notice::Done(format!("{done} {name}"))
        }
        Err(error) => Notice::Refused(super::explain(&error).1),
    };
    show(&s, &ctx, Some(notice)).await
}
