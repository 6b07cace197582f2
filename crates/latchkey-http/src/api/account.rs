//! Account lifecycle: disable, enable and delete a user (admin). Thin shells
//! over `App::disable_user`, `enable_user` and `delete_user`; the states are
//! `latchkey_core::account`'s.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use latchkey_service::app::App;
use latchkey_store::RevokedAccess;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::UserView;
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, Auth};

type AppState = Arc<App>;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why (1-500 characters, one line); kept in the audit log.
    pub reason: String,
}

/// What a state change ended.
#[derive(Serialize, ToSchema)]
pub struct RevokedView {
    pub sessions: u64,
    pub oidc_grants: u64,
    pub signin_flows: u64,
    pub passes: u64,
    pub push_prompts: u64,
    pub api_tokens: u64,
}

impl From<RevokedAccess> for RevokedView {
    fn from(r: RevokedAccess) -> Self {
        Self {
            sessions: r.sessions,
            oidc_grants: r.oidc_grants,
            signin_flows: r.signin_flows,
            passes: r.passes,
            push_prompts: r.push_prompts,
            api_tokens: r.api_tokens,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AccountChangeView {
    pub user: UserView,
    pub revoked: RevokedView,
}

/// Disable a user (admin): sign-ins are refused everywhere with the answer a
/// wrong password gets, and web sessions, OpenID Connect grants and refresh
/// tokens, sign-ins in progress, unused passes, pending push prompts and the
/// API tokens the user created are revoked in the same transaction.
#[utoipa::path(post, path = "/api/v1/users/{username}/disable", tag = "users", params(("username" = String, Path)),
    request_body = ReasonRequest,
    responses((status = 200, body = AccountChangeView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn disable_user(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> ApiResult<Json<AccountChangeView>> {
    let (user, revoked) = app.disable_user(&p, &username, &req.reason).await?;
    Ok(Json(AccountChangeView {
        user: UserView::from(&user),
        revoked: revoked.into(),
    }))
}

/// Let a user sign in again (admin). Nothing that was revoked comes back.
#[utoipa::path(post, path = "/api/v1/users/{username}/enable", tag = "users", params(("username" = String, Path)),
    responses((status = 200, body = UserView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn enable_user(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(UserView::from(&app.enable_user(&p, &username).await?)))
}

/// Delete a user (admin): access is revoked as for disabling, the password
/// and every method are removed, and the account stays as a tombstone whose
/// username cannot be reused until the hold period ends. Send
/// `{"reason": "..."}`.
#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "users", params(("username" = String, Path)),
    request_body = ReasonRequest,
    responses((status = 200, body = AccountChangeView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
pub(super) async fn delete_user(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> ApiResult<Json<AccountChangeView>> {
    let (user, revoked) = app.delete_user(&p, &username, &req.reason).await?;
    Ok(Json(AccountChangeView {
        user: UserView::from(&user),
        revoked: revoked.into(),
    }))
}

#[derive(OpenApi)]
#[openapi(paths(disable_user, enable_user, delete_user))]
pub struct AccountDoc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users/{username}/disable", post(disable_user))
        .route("/api/v1/users/{username}/enable", post(enable_user))
}
