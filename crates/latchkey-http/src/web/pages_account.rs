//! The account card on a user's console page, for administrators: disable
//! (with a reason), enable, delete. Each form asks for a confirmation in the
//! page itself (a checkbox), because the action ends the user's sessions at
//! once; the service checks the role and the rules.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::{Form, Router};
use latchkey_core::{Role, UserState};
use latchkey_store::UserRecord;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{csrf_field, tag};
use super::{when, Ctx};
use latchkey_service::app::App;
use latchkey_service::ServiceError;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/admin/users/{username}/disable", post(disable))
        .route("/admin/users/{username}/enable", post(enable))
        .route("/admin/users/{username}/delete", post(delete))
}

/// The account's state, as a tag.
pub fn state_tag(state: UserState) -> Markup {
    match state {
        UserState::Active => tag("Active", "ok"),
        UserState::Disabled => tag("Disabled", "bad"),
        UserState::Deleted => tag("Deleted", "bad"),
    }
}

/// What an administrator can do with the account (nothing for others).
pub fn account_card(ctx: &Ctx, user: &UserRecord) -> Markup {
    let admin = ctx.principal.as_ref().is_some_and(|p| p.is_admin());
    let u = &user.username;
    html! {
        section aria-labelledby="acct-h" #account {
            h2 #acct-h { "Account" }
            p { "State: " (state_tag(user.state))
                @if let Some(r) = &user.state_reason { " — " (r) }
                @if let Some(t) = user.state_changed_at { " " span.muted { "(since " (when(t)) ")" } } }
            @if admin {
                @match user.state {
                    UserState::Active => {
                        form method="post" action={ "/admin/users/" (u) "/disable" } {
                            (csrf_field(ctx))
                            label for="disable-reason" { "Reason for disabling" }
                            input #disable-reason type="text" name="reason" required maxlength="500" placeholder="e.g. left the company on 2026-12-01";
                            div.check { input #disable-confirm type="checkbox" name="confirm" value="yes" required; label for="disable-confirm" { "I understand this ends the user's sessions, grants, passes and API tokens now" } }
                            button.danger type="submit" { "Disable account" }
                        }
                    }
                    UserState::Disabled => {
                        form.inline method="post" action={ "/admin/users/" (u) "/enable" } {
                            (csrf_field(ctx))
                            button type="submit" { "Enable account" }
                        }
                    }
                    UserState::Deleted => { p.muted { "A deleted account cannot change any more." } }
                }
                @if user.state != UserState::Deleted {
                    details {
                        summary { "Delete account" }
                        form method="post" action={ "/admin/users/" (u) "/delete" } {
                            (csrf_field(ctx))
                            p { "Deleting removes the password and every sign-in method, and keeps the account as a tombstone so the audit log still names it. The username stays taken for a while." }
                            label for="delete-reason" { "Reason for deleting" }
                            input #delete-reason type="text" name="reason" required maxlength="500";
                            div.check { input #delete-confirm type="checkbox" name="confirm" value="yes" required; label for="delete-confirm" { "I understand this cannot be undone" } }
                            button.danger type="submit" { "Delete account" }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    reason: String,
    confirm: Option<String>,
}

fn back(username: &str, done: &str) -> Response {
    Redirect::to(&format!("/helpdesk/users/{username}?done={done}")).into_response()
}

fn unconfirmed() -> ServiceError {
    ServiceError::InvalidRequest("tick the confirmation box to go ahead".into())
}

async fn disable(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(username): Path<String>,
    Form(f): Form<ReasonForm>,
) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Admin)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if f.confirm.as_deref() != Some("yes") {
        return ctx.error_page(unconfirmed());
    }
    match app.disable_user(&p, &username, &f.reason).await {
        Ok(_) => back(&username, "disabled"),
        Err(e) => ctx.error_page(e),
    }
}

async fn enable(State(app): State<Arc<App>>, ctx: Ctx, Path(username): Path<String>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Admin)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app.enable_user(&p, &username).await {
        Ok(_) => back(&username, "enabled"),
        Err(e) => ctx.error_page(e),
    }
}

async fn delete(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(username): Path<String>,
    Form(f): Form<ReasonForm>,
) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Admin)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if f.confirm.as_deref() != Some("yes") {
        return ctx.error_page(unconfirmed());
    }
    match app.delete_user(&p, &username, &f.reason).await {
        Ok(_) => back(&username, "deleted"),
        Err(e) => ctx.error_page(e),
    }
}
