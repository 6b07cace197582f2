//! HTTP API for recovery: pass approval, helpdesk cases and devices.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use latchkey_core::device::DeviceState;
use latchkey_core::tap::IdentityVerification;
use latchkey_store::{DeviceRecord, TapRequestRecord};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::api::{rfc3339, TapResponse};
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use latchkey_service::app::App;
use latchkey_service::recovery::{CaseView, StepInput};
use latchkey_service::ServiceError;

type AppState = Arc<App>;

#[derive(Serialize, ToSchema)]
pub struct TapRequestView {
    pub id: String,
    pub user_id: String,
    /// tap, password, method.enroll, method.remove, device.end,
    /// case.remove_old_methods, policy.exception
    pub kind: String,
    /// What exactly is approved: a method id, a device and state, a case's
    /// removals or an exception (JSON).
    pub subject: String,
    pub requested_by: String,
    /// pending_approval, approved, issued (a pass), used (another change)
    pub state: String,
    pub lifetime_minutes: i64,
    pub single_use: bool,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub created_at: String,
    /// What the change made: the pass, the method, the exception.
    pub result_id: Option<String>,
}

impl From<TapRequestRecord> for TapRequestView {
    fn from(r: TapRequestRecord) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            kind: r.kind,
            subject: r.subject,
            requested_by: r.requested_by,
            state: r.state,
            lifetime_minutes: r.lifetime_minutes,
            single_use: r.single_use,
            decided_by: r.decided_by,
            decided_at: r.decided_at.map(rfc3339),
            created_at: rfc3339(r.created_at),
            result_id: r.tap_id,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TapRequestQuery {
    pub state: Option<String>,
}

/// Pass requests and every other privileged change request (the same list
/// as `/api/v1/change-requests`).
#[utoipa::path(get, path = "/api/v1/tap-requests", tag = "recovery", params(("state" = Option<String>, Query)),
    responses((status = 200, body = Vec<TapRequestView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_tap_requests(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<TapRequestQuery>,
) -> ApiResult<Json<Vec<TapRequestView>>> {
    Ok(Json(
        app.change_requests(&p, q.state.as_deref())
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// Approve a pass request (as `/api/v1/change-requests/{id}/approve`).
#[utoipa::path(post, path = "/api/v1/tap-requests/{id}/approve", tag = "recovery", params(("id" = String, Path)),
    responses((status = 200, body = TapRequestView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn approve_tap_request(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TapRequestView>> {
    Ok(Json(app.approve_change_request(&p, &id).await?.into()))
}

/// Privileged change requests (passes, credential changes, device ends,
/// case removals, policy exceptions) and their state (helpdesk, security
/// admin, admin).
#[utoipa::path(get, path = "/api/v1/change-requests", tag = "recovery", params(("state" = Option<String>, Query)),
    responses((status = 200, body = Vec<TapRequestView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_change_requests(
    state: State<AppState>,
    auth: Auth,
    query: ApiQuery<TapRequestQuery>,
) -> ApiResult<Json<Vec<TapRequestView>>> {
    list_tap_requests(state, auth, query).await
}

/// Approve a change request: a person other than the requester and the user
/// it is for (an administrator; for an exception a security administrator),
/// through a session or a token that has an owner. A policy exception is
/// made by the approval (`result_id`).
#[utoipa::path(post, path = "/api/v1/change-requests/{id}/approve", tag = "recovery", params(("id" = String, Path)),
    responses((status = 200, body = TapRequestView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn approve_change_request(
    state: State<AppState>,
    auth: Auth,
    id: ApiPath<String>,
) -> ApiResult<Json<TapRequestView>> {
    approve_tap_request(state, auth, id).await
}

/// Issue an approved pass (the requester); the pass is shown once.
#[utoipa::path(post, path = "/api/v1/tap-requests/{id}/issue", tag = "recovery", params(("id" = String, Path)),
    responses((status = 201, body = TapResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn issue_approved_tap(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<TapResponse>)> {
    Ok((StatusCode::CREATED, Json(app.issue_approved_tap(&p, &id).await?.into())))
}

// ---- cases ----------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct CaseStepView {
    pub step: String,
    pub title: String,
    /// pending, done or skipped
    pub status: String,
    pub actor: Option<String>,
    pub at: Option<String>,
    pub reason: Option<String>,
    #[schema(value_type = Object)]
    pub evidence: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct CaseResponse {
    pub id: String,
    pub username: String,
    /// planned_phone_change, lost_phone, new_employee
    pub scenario: String,
    /// open, closed, cancelled
    pub state: String,
    pub next_step: Option<String>,
    pub opened_by: String,
    pub opened_at: String,
    pub deadline: String,
    pub overdue: bool,
    pub steps: Vec<CaseStepView>,
    /// Present once, right after the issue_tap step.
    pub tap: Option<TapResponse>,
}

impl From<CaseView> for CaseResponse {
    fn from(c: CaseView) -> Self {
        use latchkey_core::helpdesk::{CaseState, StepOutcome};
        let steps = c
            .case
            .steps
            .iter()
            .map(|r| {
                let (status, actor, at, reason, evidence) = match &r.outcome {
                    None => ("pending", None, None, None, None),
                    Some(StepOutcome::Done { actor, at, evidence }) => (
                        "done",
                        Some(actor.clone()),
                        Some(rfc3339(*at)),
                        None,
                        Some(evidence.clone()),
                    ),
                    Some(StepOutcome::Skipped { actor, at, reason }) => (
                        "skipped",
                        Some(actor.clone()),
                        Some(rfc3339(*at)),
                        Some(reason.clone()),
                        None,
                    ),
                };
                CaseStepView {
                    step: r.step.as_str().into(),
                    title: r.step.title().into(),
                    status: status.into(),
                    actor,
                    at,
                    reason,
                    evidence,
                }
            })
            .collect();
        Self {
            id: c.id,
            username: c.username,
            scenario: c.scenario.as_str().into(),
            state: match c.case.state {
                CaseState::Open { .. } => "open",
                CaseState::Closed { .. } => "closed",
                CaseState::Cancelled { .. } => "cancelled",
            }
            .into(),
            next_step: c.next_step.map(|s| s.as_str().to_owned()),
            opened_by: c.opened_by,
            opened_at: rfc3339(c.opened_at),
            deadline: rfc3339(c.deadline),
            overdue: c.overdue,
            steps,
            tap: None,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenCaseRequest {
    pub username: String,
    /// planned_phone_change, lost_phone, new_employee (dashes accepted)
    pub scenario: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseQuery {
    pub username: Option<String>,
    #[serde(default)]
    pub open: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationInput {
    /// callback, manager_attestation, in_person_id, video_call
    pub method: String,
    pub note: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseStepRequest {
    /// verify_identity, issue_tap, deliver_tap, confirm_registration, remove_old_methods, confirm_sign_in, close
    pub step: String,
    /// verify_identity
    pub verification: Option<VerificationInput>,
    /// issue_tap
    pub lifetime_minutes: Option<i64>,
    pub single_use: Option<bool>,
    /// issue_tap for a privileged user: the approved and issued request
    pub tap_request_id: Option<String>,
    /// remove_old_methods for a privileged user: the approved change request
    /// for exactly these removals (the first call records one: 409
    /// `approval-required` with its `request_id`)
    pub approval_id: Option<String>,
    /// deliver_tap: phone_call, in_person, manager, sms_to_number_on_file (never email)
    pub channel: Option<String>,
    /// remove_old_methods
    #[serde(default)]
    pub remove_method_ids: Vec<String>,
    #[serde(default)]
    pub lost_device_ids: Vec<String>,
    pub note: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkipRequest {
    pub step: String,
    pub reason: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub reason: String,
}

pub fn parse_verification(v: VerificationInput) -> ApiResult<IdentityVerification> {
    Ok(IdentityVerification {
        method: serde_json::from_value(serde_json::Value::String(v.method.clone())).map_err(|_| {
            ServiceError::InvalidRequest(format!(
                "unknown verification method '{}' (callback, manager_attestation, in_person_id, video_call)",
                v.method
            ))
        })?,
        note: v.note,
    })
}

/// Open a recovery case (runbook) for a user (helpdesk, admin).
#[utoipa::path(post, path = "/api/v1/helpdesk/cases", tag = "recovery", request_body = OpenCaseRequest,
    responses((status = 201, body = CaseResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn open_case(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<OpenCaseRequest>,
) -> ApiResult<(StatusCode, Json<CaseResponse>)> {
    Ok((
        StatusCode::CREATED,
        Json(app.open_case(&p, &req.username, &req.scenario).await?.into()),
    ))
}

/// Cases, newest first; `open=true` for open ones only (overdue ones are flagged).
#[utoipa::path(get, path = "/api/v1/helpdesk/cases", tag = "recovery",
    params(("username" = Option<String>, Query), ("open" = Option<bool>, Query)),
    responses((status = 200, body = Vec<CaseResponse>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_cases(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<CaseQuery>,
) -> ApiResult<Json<Vec<CaseResponse>>> {
    Ok(Json(
        app.cases(&p, q.username.as_deref(), q.open)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

/// One case with its steps.
#[utoipa::path(get, path = "/api/v1/helpdesk/cases/{id}", tag = "recovery", params(("id" = String, Path)),
    responses((status = 200, body = CaseResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn get_case(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CaseResponse>> {
    Ok(Json(app.case(&p, &id).await?.into()))
}

/// Record the next step, after its evidence is checked.
#[utoipa::path(post, path = "/api/v1/helpdesk/cases/{id}/steps", tag = "recovery", params(("id" = String, Path)),
    request_body = CaseStepRequest,
    responses((status = 200, body = CaseResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn case_step(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CaseStepRequest>,
) -> ApiResult<Json<CaseResponse>> {
    let input = StepInput {
        verification: req.verification.map(parse_verification).transpose()?,
        lifetime_minutes: req.lifetime_minutes,
        single_use: req.single_use,
        channel: req.channel,
        remove_method_ids: req.remove_method_ids,
        lost_device_ids: req.lost_device_ids,
        note: req.note,
        tap_request_id: req.tap_request_id,
        approval_id: req.approval_id,
    };
    let r = app.case_step(&p, &id, &req.step, input).await?;
    let mut out = CaseResponse::from(r.case);
    out.tap = r.tap.map(Into::into);
    Ok(Json(out))
}

/// Skip the next step, with a reason (never identity verification).
#[utoipa::path(post, path = "/api/v1/helpdesk/cases/{id}/skip", tag = "recovery", params(("id" = String, Path)),
    request_body = SkipRequest,
    responses((status = 200, body = CaseResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn case_skip(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SkipRequest>,
) -> ApiResult<Json<CaseResponse>> {
    Ok(Json(app.case_skip(&p, &id, &req.step, &req.reason).await?.into()))
}

/// Cancel an open case, with a reason.
#[utoipa::path(post, path = "/api/v1/helpdesk/cases/{id}/cancel", tag = "recovery", params(("id" = String, Path)),
    request_body = CancelRequest,
    responses((status = 200, body = CaseResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn case_cancel(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CancelRequest>,
) -> ApiResult<Json<CaseResponse>> {
    Ok(Json(app.case_cancel(&p, &id, &req.reason).await?.into()))
}

// ---- devices --------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub platform: String,
    /// byod or corporate
    pub ownership: String,
    pub managed: bool,
    pub compliant: bool,
    pub external_id: Option<String>,
    /// active, lost, retired
    pub state: String,
    pub registered_at: String,
    pub compliance_updated_at: Option<String>,
}

impl From<DeviceRecord> for DeviceView {
    fn from(d: DeviceRecord) -> Self {
        Self {
            id: d.id,
            name: d.name,
            platform: d.platform,
            ownership: d.ownership,
            managed: d.managed,
            compliant: d.compliant,
            external_id: d.external_id,
            state: d.state,
            registered_at: rfc3339(d.registered_at),
            compliance_updated_at: d.compliance_updated_at.map(rfc3339),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDeviceRequest {
    pub name: String,
    /// ios, android, windows, macos, linux, other
    pub platform: String,
    /// byod or corporate
    pub ownership: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplianceRequest {
    pub managed: bool,
    pub compliant: bool,
    /// The MDM's own id for the device.
    pub external_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindDeviceRequest {
    pub device_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceEndedResponse {
    pub device: DeviceView,
    pub revoked_method_ids: Vec<String>,
    pub sessions_ended: u64,
}

/// Register a device for a user (the user with a fresh sign-in, helpdesk, admin).
#[utoipa::path(post, path = "/api/v1/users/{username}/devices", tag = "devices", params(("username" = String, Path)),
    request_body = RegisterDeviceRequest,
    responses((status = 201, body = DeviceView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn register_device(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<RegisterDeviceRequest>,
) -> ApiResult<(StatusCode, Json<DeviceView>)> {
    let d = app
        .register_device(&p, &username, &req.name, &req.platform, &req.ownership)
        .await?;
    Ok((StatusCode::CREATED, Json(d.into())))
}

/// A user's devices with their state and compliance.
#[utoipa::path(get, path = "/api/v1/users/{username}/devices", tag = "devices", params(("username" = String, Path)),
    responses((status = 200, body = Vec<DeviceView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_devices(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<Vec<DeviceView>>> {
    Ok(Json(
        app.devices(&p, &username).await?.into_iter().map(Into::into).collect(),
    ))
}

/// Bind a registered method to the device it lives on.
#[utoipa::path(put, path = "/api/v1/users/{username}/methods/{id}/device", tag = "devices",
    params(("username" = String, Path), ("id" = String, Path)), request_body = BindDeviceRequest,
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn bind_method_device(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath((username, id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<BindDeviceRequest>,
) -> ApiResult<StatusCode> {
    app.bind_method_to_device(&p, &username, &id, &req.device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Compliance from an MDM integration (API token with the `mdm` scope).
#[utoipa::path(put, path = "/api/v1/devices/{id}/compliance", tag = "devices", params(("id" = String, Path)),
    request_body = ComplianceRequest,
    responses((status = 200, body = DeviceView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn set_compliance(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ComplianceRequest>,
) -> ApiResult<Json<DeviceView>> {
    let d = app
        .set_device_compliance(&p, &id, req.managed, req.compliant, req.external_id.as_deref())
        .await?;
    Ok(Json(d.into()))
}

async fn end_device(
    app: &App,
    p: &latchkey_service::app::Principal,
    id: &str,
    to: DeviceState,
    approval: Option<&str>,
) -> ApiResult<Json<DeviceEndedResponse>> {
    let (device, methods, sessions) = app.end_device(p, id, to, approval).await?;
    Ok(Json(DeviceEndedResponse {
        device: device.into(),
        revoked_method_ids: methods,
        sessions_ended: sessions,
    }))
}

/// Mark a device lost: revokes every method bound to it and ends its sessions.
#[utoipa::path(post, path = "/api/v1/devices/{id}/lost", tag = "devices", params(("id" = String, Path), ("approval" = Option<String>, Query)),
    responses((status = 200, body = DeviceEndedResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn device_lost(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<crate::api::ApprovalQuery>,
) -> ApiResult<Json<DeviceEndedResponse>> {
    end_device(&app, &p, &id, DeviceState::Lost, q.approval.as_deref()).await
}

/// Retire a device: as lost, but planned.
#[utoipa::path(post, path = "/api/v1/devices/{id}/retire", tag = "devices", params(("id" = String, Path), ("approval" = Option<String>, Query)),
    responses((status = 200, body = DeviceEndedResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn device_retire(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<crate::api::ApprovalQuery>,
) -> ApiResult<Json<DeviceEndedResponse>> {
    end_device(&app, &p, &id, DeviceState::Retired, q.approval.as_deref()).await
}

/// A pass as the helpdesk sees it: never the pass itself.
#[derive(Serialize, ToSchema)]
pub struct PassView {
    pub id: String,
    pub issued_by: String,
    pub created_at: String,
    pub starts_at: String,
    pub expires_at: String,
    pub single_use: bool,
    pub used_at: Option<String>,
}

impl From<latchkey_store::TapRecord> for PassView {
    fn from(t: latchkey_store::TapRecord) -> Self {
        Self {
            id: t.id,
            issued_by: t.issued_by,
            created_at: rfc3339(t.created_at),
            starts_at: rfc3339(t.starts_at),
            expires_at: rfc3339(t.expires_at),
            single_use: t.single_use,
            used_at: t.used_at.map(rfc3339),
        }
    }
}

/// A user's passes that can still be used, or will be after a delayed start (helpdesk, admin).
#[utoipa::path(get, path = "/api/v1/users/{username}/temporary-access-passes", tag = "methods",
    params(("username" = String, Path)),
    responses((status = 200, body = Vec<PassView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
pub(super) async fn list_passes(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<Vec<PassView>>> {
    let (_, passes) = app.passes(&p, &username).await?;
    Ok(Json(passes.into_iter().map(Into::into).collect()))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RevokePassBody {
    /// Why (1-500 characters, one line); kept in the audit log.
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PassRevokedView {
    pub id: String,
    pub revoked_at: String,
    /// Sessions opened with a pass that ended with it.
    pub sessions_ended: u64,
}

/// Revoke a pass (helpdesk, admin): it signs nobody in from now on, including
/// a sign-in that already proved it, and sessions opened with a pass end.
/// The body `{"reason": "..."}` is optional.
#[utoipa::path(delete, path = "/api/v1/users/{username}/temporary-access-passes/{id}", tag = "methods",
    params(("username" = String, Path), ("id" = String, Path)), request_body(content = Option<RevokePassBody>),
    responses((status = 200, body = PassRevokedView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn revoke_pass(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath((username, id)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<PassRevokedView>> {
    let body: RevokePassBody = if body.iter().all(u8::is_ascii_whitespace) {
        RevokePassBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ServiceError::InvalidRequest(format!("request body: {e}")))?
    };
    let r = app.revoke_tap(&p, &username, &id, body.reason.as_deref()).await?;
    Ok(Json(PassRevokedView {
        id: r.tap_id,
        revoked_at: rfc3339(r.revoked_at),
        sessions_ended: r.sessions_ended,
    }))
}

#[derive(OpenApi)]
#[openapi(paths(
    list_passes,
    revoke_pass,
    list_tap_requests,
    approve_tap_request,
    list_change_requests,
    approve_change_request,
    issue_approved_tap,
    open_case,
    list_cases,
    get_case,
    case_step,
    case_skip,
    case_cancel,
    register_device,
    list_devices,
    bind_method_device,
    set_compliance,
    device_lost,
    device_retire
))]
pub struct RecoveryDoc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/users/{username}/temporary-access-passes/{id}",
            axum::routing::delete(revoke_pass),
        )
        .route("/api/v1/tap-requests", get(list_tap_requests))
        .route("/api/v1/tap-requests/{id}/approve", post(approve_tap_request))
        .route("/api/v1/change-requests", get(list_change_requests))
        .route("/api/v1/change-requests/{id}/approve", post(approve_change_request))
        .route("/api/v1/tap-requests/{id}/issue", post(issue_approved_tap))
        .route("/api/v1/helpdesk/cases", post(open_case).get(list_cases))
        .route("/api/v1/helpdesk/cases/{id}", get(get_case))
        .route("/api/v1/helpdesk/cases/{id}/steps", post(case_step))
        .route("/api/v1/helpdesk/cases/{id}/skip", post(case_skip))
        .route("/api/v1/helpdesk/cases/{id}/cancel", post(case_cancel))
        .route(
            "/api/v1/users/{username}/devices",
            post(register_device).get(list_devices),
        )
        .route("/api/v1/users/{username}/methods/{id}/device", put(bind_method_device))
        .route("/api/v1/devices/{id}/compliance", put(set_compliance))
        .route("/api/v1/devices/{id}/lost", post(device_lost))
        .route("/api/v1/devices/{id}/retire", post(device_retire))
}
