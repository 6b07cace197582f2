//! HTTP shell for conditional access: policies (versioned, import/export,
//! what-if, check, replay), named locations, strengths, exceptions,
//! break-glass accounts, alerts and rollout waves. Handlers only translate
//! between HTTP and [`App`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use latchkey_core::policy::{AuthenticationStrength, ConditionalAccessPolicy, ExceptionSubject, NamedLocation};
use latchkey_core::rollout::RolloutWave;
use latchkey_service::policy::ExceptionOutcome;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use latchkey_service::app::App;
use latchkey_service::policy::{parse_document, DocFormat, WhatIf};
use latchkey_service::ServiceError;

type AppState = Arc<App>;

fn to_value<T: serde::Serialize>(v: &T) -> Json<Value> {
    Json(serde_json::to_value(v).expect("views serialise"))
}

fn parse_time(s: &str) -> latchkey_service::ServiceResult<i64> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| ServiceError::InvalidRequest(format!("'{s}' is not an RFC 3339 time (2026-01-31T17:00:00Z)")))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// A ConditionalAccessPolicy: {id, name, state, assignments, conditions, grant, session}.
    #[schema(value_type = Object)]
    pub policy: ConditionalAccessPolicy,
    /// Only apply if the current version is still this one.
    pub expected_version: Option<i64>,
    /// Apply even if the analyzer finds users it would lock out.
    #[serde(default)]
    pub force: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentBody {
    /// A policy document ({policies, named_locations, strengths}) as YAML or JSON text.
    pub document: Option<String>,
    #[serde(default)]
    pub format: DocFormat,
    #[serde(default)]
    pub force: bool,
    /// For replay: how many days of sign-ins (default 30).
    pub days: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForceQuery {
    #[serde(default)]
    pub force: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FormatQuery {
    #[serde(default)]
    pub format: DocFormat,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExceptionBody {
    pub policy_id: String,
    /// Exactly one of `user` and `group`.
    pub user: Option<String>,
    pub group: Option<String>,
    pub reason: String,
    /// Ignored if it names the caller, refused otherwise: the requester is
    /// the caller (a session's user, or a token's owner).
    pub requested_by: Option<String>,
    /// Mandatory end (RFC 3339), at most the configured maximum (default 30 days) ahead.
    pub expires_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassBody {
    pub test_interval_days: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassTestBody {
    #[serde(default)]
    pub note: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AfterQuery {
    pub after: Option<i64>,
}

fn body_document(b: &DocumentBody) -> latchkey_service::ServiceResult<Option<latchkey_core::policy::PolicySet>> {
    b.document.as_deref().map(|d| parse_document(d, b.format)).transpose()
}

/// List policies with their current version.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policy",
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_policies(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Value>> {
    Ok(to_value(&app.list_policies(&p).await?))
}

/// Create a policy (version 1). Refused with `policy-lockout` if it would lock anyone out, unless `force`.
#[utoipa::path(post, path = "/api/v1/policies", tag = "policy", request_body = PolicyBody,
    responses((status = 201, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn create_policy(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(b): ApiJson<PolicyBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let rec = app.put_policy(&p, b.policy, true, None, b.force).await?;
    Ok((StatusCode::CREATED, to_value(&rec)))
}

/// A policy, its current version and its history.
#[utoipa::path(get, path = "/api/v1/policies/{id}", tag = "policy", params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn get_policy(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let (rec, versions) = app.get_policy(&p, &id).await?;
    Ok(Json(
        json!({ "policy": rec.policy, "version": rec.version, "updated_at": rec.updated_at, "versions": versions }),
    ))
}

/// Replace a policy: a new version.
#[utoipa::path(put, path = "/api/v1/policies/{id}", tag = "policy", params(("id" = String, Path)), request_body = PolicyBody,
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn update_policy(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<PolicyBody>,
) -> ApiResult<Json<Value>> {
    if b.policy.id != id {
        return Err(ServiceError::InvalidRequest("the policy's id must match the path".into()).into());
    }
    Ok(to_value(
        &app.put_policy(&p, b.policy, false, b.expected_version, b.force).await?,
    ))
}

/// Delete a policy (its history stays).
#[utoipa::path(delete, path = "/api/v1/policies/{id}", tag = "policy", params(("id" = String, Path), ("force" = Option<bool>, Query)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn delete_policy(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> ApiResult<StatusCode> {
    app.delete_policy(&p, &id, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Export the policy set (policies, named locations, custom strengths) as YAML (default) or JSON.
#[utoipa::path(get, path = "/api/v1/policies/export", tag = "policy", params(("format" = Option<String>, Query)),
    responses((status = 200, body = String), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn export_policies(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<FormatQuery>,
) -> ApiResult<Response> {
    let doc = app.export_policies(&p, q.format).await?;
    let ct = match q.format {
        DocFormat::Yaml => "application/yaml",
        DocFormat::Json => "application/json",
    };
    Ok(([(header::CONTENT_TYPE, ct)], doc).into_response())
}

/// Replace the policy set with a document. Analyzer-guarded unless `force`.
#[utoipa::path(post, path = "/api/v1/policies/import", tag = "policy", request_body = DocumentBody,
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn import_policies(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(b): ApiJson<DocumentBody>,
) -> ApiResult<Json<Value>> {
    let set = body_document(&b)?
        .ok_or_else(|| ServiceError::InvalidRequest("send the policy document in 'document'".into()))?;
    Ok(to_value(&app.import_policies(&p, set, b.force).await?))
}

/// What would happen if this user signed in like this? Nobody is signed in.
#[utoipa::path(post, path = "/api/v1/policies/what-if", tag = "policy", request_body = WhatIf,
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn what_if(State(app): State<AppState>, Auth(p): Auth, ApiJson(q): ApiJson<WhatIf>) -> ApiResult<Json<Value>> {
    Ok(to_value(&app.what_if(&p, q).await?))
}

/// Run the bootstrap-path analyzer on the stored set, or on a proposed document.
#[utoipa::path(post, path = "/api/v1/policies/check", tag = "policy", request_body = DocumentBody,
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn check_policies(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(b): ApiJson<DocumentBody>,
) -> ApiResult<Json<Value>> {
    Ok(to_value(&app.check_policies(&p, body_document(&b)?).await?))
}

/// Replay a proposed document against the last `days` (default 30) of sign-ins.
#[utoipa::path(post, path = "/api/v1/policies/replay", tag = "policy", request_body = DocumentBody,
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn replay_policies(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(b): ApiJson<DocumentBody>,
) -> ApiResult<Json<Value>> {
    let set = body_document(&b)?
        .ok_or_else(|| ServiceError::InvalidRequest("send the proposed document in 'document'".into()))?;
    Ok(to_value(&app.replay_policies(&p, set, b.days.unwrap_or(30)).await?))
}

/// Named locations.
#[utoipa::path(get, path = "/api/v1/named-locations", tag = "policy",
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_locations(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Value>> {
    Ok(to_value(&app.named_locations(&p).await?))
}

/// Create or replace a named location `{ranges: ["10.0.0.0/8"], trusted}`.
#[utoipa::path(put, path = "/api/v1/named-locations/{name}", tag = "policy", params(("name" = String, Path)), request_body = Object,
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn put_location(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(l): ApiJson<NamedLocation>,
) -> ApiResult<StatusCode> {
    if l.name != name {
        return Err(ServiceError::InvalidRequest("the location's name must match the path".into()).into());
    }
    app.put_named_location(&p, l).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/named-locations/{name}", tag = "policy", params(("name" = String, Path)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn delete_location(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.delete_named_location(&p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Built-in and custom authentication strengths.
#[utoipa::path(get, path = "/api/v1/authentication-strengths", tag = "policy",
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_strengths(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Value>> {
    Ok(to_value(&app.strengths(&p).await?))
}

/// Create or replace a custom strength `{combinations: [["password","totp"]], aaguids?}`.
#[utoipa::path(put, path = "/api/v1/authentication-strengths/{name}", tag = "policy", params(("name" = String, Path)), request_body = Object,
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn put_strength(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(s): ApiJson<AuthenticationStrength>,
) -> ApiResult<StatusCode> {
    if s.name != name {
        return Err(ServiceError::InvalidRequest("the strength's name must match the path".into()).into());
    }
    app.put_strength(&p, s).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/authentication-strengths/{name}", tag = "policy", params(("name" = String, Path)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn delete_strength(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.delete_strength(&p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Exceptions (expired ones stay listed with `in_force: false`; `near_expiry` within 7 days).
#[utoipa::path(get, path = "/api/v1/policy-exceptions", tag = "policy",
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_exceptions(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Value>> {
    Ok(to_value(&app.exceptions(&p).await?))
}

/// Ask for an exception: one user or group, one policy, a reason, an end
/// date. The caller is the requester; another security administrator
/// approves it (`POST /api/v1/change-requests/{id}/approve`), which makes it.
#[utoipa::path(post, path = "/api/v1/policy-exceptions", tag = "policy", request_body = ExceptionBody,
    responses((status = 202, body = Object, description = "pending: request_id awaits a second approver"), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn create_exception(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(b): ApiJson<ExceptionBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let subject = match (b.user, b.group) {
        (Some(u), None) => ExceptionSubject::User(u),
        (None, Some(g)) => ExceptionSubject::Group(g),
        _ => return Err(ServiceError::InvalidRequest("give exactly one of 'user' and 'group'".into()).into()),
    };
    let expires_at = parse_time(&b.expires_at)?;
    match app
        .create_exception(
            &p,
            &b.policy_id,
            subject,
            &b.reason,
            b.requested_by.as_deref(),
            expires_at,
        )
        .await?
    {
        ExceptionOutcome::Created(rec) => Ok((StatusCode::CREATED, to_value(&rec))),
        ExceptionOutcome::PendingApproval { request_id } => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "request_id": request_id, "state": "pending_approval" })),
        )),
    }
}

#[utoipa::path(delete, path = "/api/v1/policy-exceptions/{id}", tag = "policy", params(("id" = String, Path)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn revoke_exception(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.revoke_exception(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Break-glass accounts with test status (`test_overdue`) and whether each holds a phishing-resistant key.
#[utoipa::path(get, path = "/api/v1/break-glass", tag = "policy",
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_break_glass(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Value>> {
    Ok(to_value(&app.break_glass_accounts(&p).await?))
}

/// Flag a user as a break-glass account (admin).
#[utoipa::path(put, path = "/api/v1/break-glass/{username}", tag = "policy", params(("username" = String, Path)), request_body = BreakGlassBody,
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn set_break_glass(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiJson(b): ApiJson<BreakGlassBody>,
) -> ApiResult<StatusCode> {
    app.set_break_glass(&p, &username, b.test_interval_days).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/break-glass/{username}", tag = "policy", params(("username" = String, Path)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn unset_break_glass(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.unset_break_glass(&p, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Record that the account's sign-in within the last hour was a planned test.
#[utoipa::path(post, path = "/api/v1/break-glass/{username}/tests", tag = "policy", params(("username" = String, Path)), request_body = BreakGlassTestBody,
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn record_break_glass_test(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiJson(b): ApiJson<BreakGlassTestBody>,
) -> ApiResult<StatusCode> {
    app.record_break_glass_test(&p, &username, &b.note).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Alerts raised by policy events (break-glass sign-ins).
#[utoipa::path(get, path = "/api/v1/alerts", tag = "policy", params(("after" = Option<i64>, Query)),
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_alerts(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<AfterQuery>,
) -> ApiResult<Json<Value>> {
    Ok(to_value(&app.alerts(&p, q.after.unwrap_or(0)).await?))
}

/// Rollout waves with their campaign phase and coverage.
#[utoipa::path(get, path = "/api/v1/rollout/waves", tag = "policy",
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_waves(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Value>> {
    Ok(to_value(&app.waves(&p).await?))
}

/// Per-wave coverage: how many users in each wave reach which strength.
#[utoipa::path(get, path = "/api/v1/rollout/coverage", tag = "policy",
    responses((status = 200, body = Object), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn coverage(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Value>> {
    let waves = app.waves(&p).await?;
    Ok(Json(Value::Array(
        waves
            .iter()
            .map(|w| json!({ "wave": w.wave.name, "phase": w.phase, "coverage": w.coverage }))
            .collect(),
    )))
}

/// Create or replace a wave `{id, name, position, audience, strength, nudge_from, enforce_from}`.
#[utoipa::path(post, path = "/api/v1/rollout/waves", tag = "policy", request_body = Object,
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn put_wave(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(w): ApiJson<RolloutWave>,
) -> ApiResult<StatusCode> {
    app.put_wave(&p, w).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/rollout/waves/{id}", tag = "policy", params(("id" = String, Path)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn delete_wave(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.delete_wave(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(OpenApi)]
#[openapi(
    paths(
        list_policies,
        create_policy,
        get_policy,
        update_policy,
        delete_policy,
        export_policies,
        import_policies,
        what_if,
        check_policies,
        replay_policies,
        list_locations,
        put_location,
        delete_location,
        list_strengths,
        put_strength,
        delete_strength,
        list_exceptions,
        create_exception,
        revoke_exception,
        list_break_glass,
        set_break_glass,
        unset_break_glass,
        record_break_glass_test,
        list_alerts,
        list_waves,
        coverage,
        put_wave,
        delete_wave
    ),
    components(schemas(
        PolicyBody,
        DocumentBody,
        ExceptionBody,
        BreakGlassBody,
        BreakGlassTestBody,
        WhatIf,
        DocFormat
    ))
)]
pub struct PolicyDoc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/policies", get(list_policies).post(create_policy))
        .route("/api/v1/policies/export", get(export_policies))
        .route("/api/v1/policies/import", post(import_policies))
        .route("/api/v1/policies/what-if", post(what_if))
        .route("/api/v1/policies/check", post(check_policies))
        .route("/api/v1/policies/replay", post(replay_policies))
        .route(
            "/api/v1/policies/{id}",
            get(get_policy).put(update_policy).delete(delete_policy),
        )
        .route("/api/v1/named-locations", get(list_locations))
        .route(
            "/api/v1/named-locations/{name}",
            put(put_location).delete(delete_location),
        )
        .route("/api/v1/authentication-strengths", get(list_strengths))
        .route(
            "/api/v1/authentication-strengths/{name}",
            put(put_strength).delete(delete_strength),
        )
        .route("/api/v1/policy-exceptions", get(list_exceptions).post(create_exception))
        .route(
            "/api/v1/policy-exceptions/{id}",
            axum::routing::delete(revoke_exception),
        )
        .route("/api/v1/break-glass", get(list_break_glass))
        .route(
            "/api/v1/break-glass/{username}",
            put(set_break_glass).delete(unset_break_glass),
        )
        .route("/api/v1/break-glass/{username}/tests", post(record_break_glass_test))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/rollout/waves", get(list_waves).post(put_wave))
        .route("/api/v1/rollout/waves/{id}", axum::routing::delete(delete_wave))
        .route("/api/v1/rollout/coverage", get(coverage))
}
