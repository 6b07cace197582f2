//! The helpdesk console: find a user, see their methods and recent sign-ins,
//! clear a lock-out, mark a device lost, and open a recovery case (the cases
//! themselves are in `pages_cases.rs`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use latchkey_core::{MethodState, Role};
use maud::html;
use serde::Deserialize;

use super::layout::{csrf_field, method_name, notice_ok, role_name, signin_table, tag, Section};
use super::{when, Ctx};
use latchkey_service::app::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/helpdesk", get(search))
        .route("/helpdesk/users/{username}", get(user_view))
        .route("/helpdesk/users/{username}/unlock", post(unlock))
        .route("/helpdesk/users/{username}/passes/{id}/revoke", post(revoke_pass))
}

#[derive(Deserialize, Default)]
struct SearchQuery {
    q: Option<String>,
}

async fn search(State(app): State<Arc<App>>, ctx: Ctx, Query(sq): Query<SearchQuery>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Helpdesk)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = sq.q.unwrap_or_default().trim().to_lowercase();
    let users = match app.list_users(&p).await {
        Ok(u) => u,
        Err(e) => return ctx.error_page(e),
    };
    let hits: Vec<_> = users
        .iter()
        .filter(|u| {
            q.is_empty()
                || u.username.contains(&q)
                || u.display_name.to_lowercase().contains(&q)
                || u.department.as_deref().is_some_and(|d| d.to_lowercase().contains(&q))
        })
        .take(50)
        .collect();
    let body = html! {
        h1 { "Helpdesk" }
        p.lead { "Look a user up to see their sign-in methods and recent sign-ins. Always verify the caller's identity before you act." }
        form.search role="search" method="get" action="/helpdesk" {
            label for="q" { "Find a user" }
            div.row {
                input #q type="search" name="q" value=(q) placeholder="Name, username or department" autofocus;
                button.primary type="submit" { "Search" }
            }
        }
        @if hits.is_empty() {
            p.muted { "No users match." }
        } @else {
            div.table-wrap {
                table {
                    caption { @if q.is_empty() { "Users" } @else { "Users matching “" (q) "”" } }
                    thead { tr { th scope="col" { "User" } th scope="col" { "Name" } th scope="col" { "Department" } th scope="col" { "State" } } }
                    tbody {
                        @for u in &hits {
                            tr {
                                td { a href={ "/helpdesk/users/" (u.username) } { (u.username) } }
                                td { (u.display_name) }
                                td { (u.department.as_deref().unwrap_or("—")) }
                                td { (super::pages_account::state_tag(u.state)) }
                            }
                        }
                    }
                }
            }
        }
    };
    ctx.page(StatusCode::OK, "Helpdesk", Section::Helpdesk, body)
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    done: Option<String>,
}

async fn user_view(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(username): Path<String>,
    Query(dq): Query<DoneQuery>,
) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Helpdesk)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (user, methods) = match app.methods(&p, &username).await {
        Ok(v) => v,
        Err(e) => return ctx.error_page(e),
    };
    let history = match app.signin_history(&p, &username, 20).await {
        Ok(h) => h,
        Err(e) => return ctx.error_page(e),
    };
    let devices = match app.devices(&p, &username).await {
        Ok(d) => d,
        Err(e) => return ctx.error_page(e),
    };
    let passes = match app.passes(&p, &username).await {
        Ok((_, t)) => t,
        Err(e) => return ctx.error_page(e),
    };
    let has_second = methods
        .iter()
        .any(|m| m.state == MethodState::Active && m.kind.second_factor().is_some());
    let ok = match dq.done.as_deref() {
        Some("unlocked") => Some("The sign-in lock-out was cleared."),
        Some("lost") => Some("The device was marked lost: its methods were removed and its sessions ended."),
        Some("disabled") => Some("The account was disabled: its sessions, grants, passes and API tokens were revoked."),
        Some("enabled") => Some("The account was enabled. The user signs in with their own methods."),
        Some("deleted") => Some("The account was deleted: its password and methods were removed."),
        Some("pass-revoked") => {
            Some("The pass was revoked: it signs nobody in, and sessions opened with a pass have ended.")
        }
        _ => None,
    };
    let u = &user.username;
    let body = html! {
        p.crumbs { a href="/helpdesk" { "Helpdesk" } " › " (u) }
        h1 { (user.display_name) " " span.muted { "(" (u) ")" } }
        (notice_ok(ok))
        dl.facts {
            dt { "Department" } dd { (user.department.as_deref().unwrap_or("—")) }
            dt { "Groups" } dd { @if user.groups.is_empty() { "—" } @else { (user.groups.join(", ")) } }
            dt { "Roles" } dd { @if user.roles.is_empty() { "—" } @else {
                @for (i, r) in user.roles.iter().enumerate() { @if i > 0 { ", " } (role_name(*r)) } } }
            dt { "State" } dd { (super::pages_account::state_tag(user.state)) }
            dt { "Password" } dd { @if user.password_hash.is_some() { "Set" } @else { "Not set" } }
            dt { "Created" } dd { (when(user.created_at)) }
        }
        @if !has_second {
            p.notice.error { "This user has no second sign-in method. They need a Temporary Access Pass to register one." }
        }
        section aria-labelledby="m-h" {
            h2 #m-h { "Sign-in methods" }
            @if methods.is_empty() {
                p.muted { "No methods registered." }
            } @else {
                div.table-wrap { table {
                    caption.visually-hidden { "Registered methods" }
                    thead { tr { th scope="col" { "Method" } th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Added" } th scope="col" { "Last used" } } }
                    tbody { @for m in &methods { tr {
                        td { (method_name(m.kind)) }
                        td { (m.label) }
                        td { @if m.state == MethodState::Active { (tag("Active", "ok")) } @else { (tag("Not confirmed", "warn")) } }
                        td { (when(m.registered_at)) }
                        td { @if let Some(t) = m.last_used_at { (when(t)) } @else { span.muted { "Never" } } }
                    } } }
                } }
            }
        }
        section aria-labelledby="p-h" {
            h2 #p-h { "Temporary Access Passes" }
            @if passes.is_empty() {
                p.muted { "No pass that can still be used." }
            } @else {
                div.table-wrap { table {
                    caption.visually-hidden { "Passes that can still be used" }
                    thead { tr { th scope="col" { "Issued by" } th scope="col" { "Valid from" } th scope="col" { "Expires" } th scope="col" { "Used" } th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody { @for t in &passes { tr {
                        td { (t.issued_by) }
                        td { (when(t.starts_at)) }
                        td { (when(t.expires_at)) }
                        td { @if let Some(at) = t.used_at { (when(at)) } @else { span.muted { "Not yet" } } }
                        td.actions {
                            form.inline method="post" action={ "/helpdesk/users/" (u) "/passes/" (t.id) "/revoke" } {
                                (csrf_field(&ctx))
                                label.visually-hidden for={ "why-" (t.id) } { "Reason" }
                                input id={ "why-" (t.id) } type="text" name="reason" placeholder="Reason (optional)" maxlength="500";
                                button.danger.small type="submit" aria-label={ "Revoke the pass issued by " (t.issued_by) } { "Revoke" }
                            }
                        }
                    } } }
                } }
                p.muted { "Revoking a pass also stops a sign-in that started with it and ends sessions opened with a pass." }
            }
        }
        section aria-labelledby="d-h" {
            h2 #d-h { "Devices" }
            @if devices.is_empty() {
                p.muted { "No devices on record." }
            } @else {
                div.table-wrap { table {
                    caption.visually-hidden { "Devices" }
                    thead { tr { th scope="col" { "Device" } th scope="col" { "Platform" } th scope="col" { "Managed" } th scope="col" { "State" } th scope="col" { span.visually-hidden { "Actions" } } } }
                    tbody { @for d in &devices { tr {
                        td { (d.name) }
                        td { (d.platform) }
                        td { @if d.managed { @if d.compliant { (tag("Compliant", "ok")) } @else { (tag("Not compliant", "bad")) } } @else { span.muted { "No" } } }
                        td { @match d.state.as_str() { "active" => (tag("Active", "ok")), "lost" => (tag("Lost", "bad")), other => (tag(other, "warn")) } }
                        td.actions { @if d.state == "active" {
                            form.inline method="post" action={ "/helpdesk/users/" (u) "/devices/" (d.id) "/lost" } {
                                (csrf_field(&ctx))
                                button.danger.small type="submit" aria-label={ "Mark lost: " (d.name) } { "Mark lost" }
                            }
                        } }
                    } } }
                } }
                p.muted { "Marking a device lost removes the methods bound to it and ends its sessions." }
            }
        }
        section aria-labelledby="r-h" {
            h2 #r-h { "Recovery runbooks" }
            p { "Guided cases: verify identity → issue a Temporary Access Pass → confirm the new registration → remove old methods → confirm a normal sign-in. "
                a href={ "/helpdesk/users/" (u) "/cases" } { "See this user's cases" } "." }
            ul.choices {
                li { a href={ "/helpdesk/users/" (u) "/cases?runbook=lost_phone" } { "Lost or broken phone" } }
                li { a href={ "/helpdesk/users/" (u) "/cases?runbook=planned_phone_change" } { "Planned phone change" } }
                li { a href={ "/helpdesk/users/" (u) "/cases?runbook=new_employee" } { "New employee, first device" } }
            }
        }
        section aria-labelledby="l-h" {
            h2 #l-h { "Lock-out" }
            p { "After repeated failures, sign-in pauses for a while. Clear it only once you have verified who is calling." }
            form method="post" action={ "/helpdesk/users/" (u) "/unlock" } {
                (csrf_field(&ctx))
                button type="submit" { "Clear sign-in lock-out" }
            }
        }
        section aria-labelledby="h-h" {
            h2 #h-h { "Recent sign-ins" }
            (signin_table(&history, "Twenty most recent sign-in attempts"))
        }
        (super::pages_account::account_card(&ctx, &user))
    };
    ctx.page(StatusCode::OK, &user.display_name, Section::Helpdesk, body)
}

async fn unlock(State(app): State<Arc<App>>, ctx: Ctx, Path(username): Path<String>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Helpdesk)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app.clear_lockout(&p, &username).await {
        Ok(()) => Redirect::to(&format!("/helpdesk/users/{username}?done=unlocked")).into_response(),
        Err(e) => ctx.error_page(e),
    }
}

#[derive(Deserialize, Default)]
struct RevokeForm {
    #[serde(default)]
    reason: String,
}

async fn revoke_pass(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path((username, id)): Path<(String, String)>,
    axum::Form(f): axum::Form<RevokeForm>,
) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Helpdesk)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let reason = Some(f.reason.trim()).filter(|r| !r.is_empty());
    match app.revoke_tap(&p, &username, &id, reason).await {
        Ok(_) => Redirect::to(&format!("/helpdesk/users/{username}?done=pass-revoked")).into_response(),
        Err(e) => ctx.error_page(e),
    }
}
