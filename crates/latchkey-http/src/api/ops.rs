//! HTTP shell for operations: the sign-in log, per-user timelines, alert
//! handling and Prometheus `/metrics`. Handlers only translate between HTTP
//! and [`App`] (latchkey_service::ops).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use latchkey_store::SignInFilter;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use latchkey_service::app::App;
use latchkey_service::ops::{SignInPage, TimelineEntry};

type AppState = Arc<App>;

use latchkey_service::time::parse_time_arg;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SignInQuery {
    /// Username.
    pub user: Option<String>,
    /// Application (client id; `latchkey` is the portal).
    pub app: Option<String>,
    /// success | failure
    pub result: Option<String>,
    /// From this time (inclusive), RFC 3339 or unix seconds.
    pub from: Option<String>,
    /// Up to this time (exclusive).
    pub to: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<i64>,
}

impl SignInQuery {
    pub fn into_filter(self) -> ApiResult<SignInFilter> {
        Ok(SignInFilter {
            username: self.user,
            application: self.app,
            result: self.result,
            from: self.from.as_deref().map(parse_time_arg).transpose()?,
            to: self.to.as_deref().map(parse_time_arg).transpose()?,
            before_id: self.cursor,
            limit: self.limit.unwrap_or(100),
        })
    }
}

/// The sign-in log, newest first: who, when, from where (IP and named
/// location), which device and application, methods tried and used, the
/// conditional-access decision (applied and report-only), risk, result and
/// failure reason.
#[utoipa::path(get, path = "/api/v1/signins", tag = "operations", params(SignInQuery),
    responses((status = 200, body = SignInPage), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_signins(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<SignInQuery>,
) -> ApiResult<Json<SignInPage>> {
    Ok(Json(app.list_signins(&p, q.into_filter()?).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    pub limit: Option<i64>,
}

/// A user's timeline from the audit chain: method registrations and
/// removals, passes issued and used, exceptions, policy changes, sessions.
#[utoipa::path(get, path = "/api/v1/users/{username}/timeline", tag = "operations",
    params(("username" = String, Path), LimitQuery),
    responses((status = 200, body = Vec<TimelineEntry>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn user_timeline(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> ApiResult<Json<Vec<TimelineEntry>>> {
    Ok(Json(app.user_timeline(&p, &username, q.limit.unwrap_or(500)).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// open | acknowledged | resolved
    pub status: Option<String>,
    pub limit: Option<i64>,
}

/// Alerts newest first, with their handling.
#[utoipa::path(get, path = "/api/v1/operations/alerts", tag = "operations", params(AlertQuery),
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_alerts(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> ApiResult<Json<Value>> {
    let alerts = app.list_alerts(&p, q.status.as_deref(), q.limit.unwrap_or(100)).await?;
    Ok(Json(serde_json::to_value(alerts).expect("alerts serialise")))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AlertHandling {
    /// What was done (required to resolve).
    pub resolution: Option<String>,
}

/// Acknowledge an alert: someone is looking at it.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/acknowledge", tag = "operations", params(("id" = i64, Path)),
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn acknowledge_alert(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let a = app.handle_alert(&p, id, false, None).await?;
    Ok(Json(serde_json::to_value(a).expect("alert serialises")))
}

/// Resolve an alert with what was done about it.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/resolve", tag = "operations", params(("id" = i64, Path)),
    request_body = AlertHandling,
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn resolve_alert(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<i64>,
    ApiJson(b): ApiJson<AlertHandling>,
) -> ApiResult<Json<Value>> {
    let a = app.handle_alert(&p, id, true, b.resolution.as_deref()).await?;
    Ok(Json(serde_json::to_value(a).expect("alert serialises")))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
async fn metrics(State(app): State<AppState>) -> ApiResult<impl IntoResponse> {
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        app.metrics_text().await?,
    ))
}

#[derive(OpenApi)]
#[openapi(
    paths(list_signins, user_timeline, list_alerts, acknowledge_alert, resolve_alert, metrics),
    components(schemas(SignInPage, TimelineEntry, AlertHandling))
)]
pub struct OpsDoc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/signins", get(list_signins))
        .route("/api/v1/users/{username}/timeline", get(user_timeline))
        .route("/api/v1/operations/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}/acknowledge", post(acknowledge_alert))
        .route("/api/v1/alerts/{id}/resolve", post(resolve_alert))
        .route("/metrics", get(metrics))
}
