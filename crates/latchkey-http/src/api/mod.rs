//! The JSON API under `/api/v1`, described by `/openapi.json`. Handlers only
//! translate between HTTP and [`App`].

pub mod account;
pub mod backup;
pub mod evidence;
pub mod ops;
pub mod policy;
pub mod push;
pub mod radius;
pub mod recovery;
pub mod webauthn;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use latchkey_core::{AuthStrength, Role, VerifyMethod};
use latchkey_store::{MethodRecord, UserRecord};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth, MaybeAuth, PeerIp};
use latchkey_service::app::{App, ClaimedContext, Principal, Proof, SignInContext};
use latchkey_service::ServiceError;

pub use latchkey_service::time::rfc3339;

// ---- views ---------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub department: Option<String>,
    pub groups: Vec<String>,
    #[schema(value_type = Vec<String>)]
    pub roles: Vec<Role>,
    /// True when any role is administrative.
    pub privileged: bool,
    /// `active`, `disabled` or `deleted`.
    pub state: String,
    /// Why the account was disabled or deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// When the account's state last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_changed_at: Option<String>,
    pub has_password: bool,
    pub created_at: String,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            department: u.department.clone(),
            groups: u.groups.clone(),
            roles: u.roles.clone(),
            privileged: u.privileged(),
            state: u.state.as_str().to_owned(),
            state_reason: u.state_reason.clone(),
            state_changed_at: u.state_changed_at.map(rfc3339),
            has_password: u.password_hash.is_some(),
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MethodView {
    pub id: String,
    /// password, totp, webauthn, push, sms, voice, recovery_codes, temporary_access_pass
    pub kind: String,
    pub label: String,
    /// pending or active
    pub state: String,
    pub registered_at: String,
    pub last_used_at: Option<String>,
    pub device_id: Option<String>,
}

impl From<&MethodRecord> for MethodView {
    fn from(m: &MethodRecord) -> Self {
        Self {
            id: m.id.clone(),
            kind: m.kind.as_str().to_owned(),
            label: m.label.clone(),
            state: serde_json::to_value(m.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            registered_at: rfc3339(m.registered_at),
            last_used_at: m.last_used_at.map(rfc3339),
            device_id: m.device_id.clone(),
        }
    }
}

// ---- requests ------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub username: String,
    pub display_name: String,
    pub department: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// admin, helpdesk, security_admin, auditor
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Directory attributes to change; omitted fields keep their value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub display_name: Option<String>,
    /// An empty string clears the department.
    pub department: Option<String>,
    pub groups: Option<Vec<String>>,
    /// admin, helpdesk, security_admin, auditor (replaces the list)
    pub roles: Option<Vec<String>>,
}

/// For someone else's change to a privileged user: the approved change
/// request (`?approval=ID`). Without it, the first call records a request
/// and answers 409 `approval-required` with its `request_id`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalQuery {
    pub approval: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    pub password: String,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TotpEnrollRequest {
    pub label: Option<String>,
    /// SHA1 (default; what most apps support), SHA256 or SHA512
    pub algorithm: Option<String>,
    /// 6 (default) to 8
    pub digits: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct TotpEnrollResponse {
    pub id: String,
    /// Base32 secret, shown once, for manual entry.
    pub secret: String,
    pub otpauth_uri: String,
    /// SVG QR code of `otpauth_uri` (needs the same authorization).
    pub qr_svg_url: String,
    pub state: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct RecoveryCodesResponse {
    pub id: String,
    /// Shown once. Each works once.
    pub codes: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationBody {
    /// callback, manager_attestation, in_person_id, video_call
    pub method: String,
    pub note: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TapRequestBody {
    pub lifetime_minutes: Option<i64>,
    #[serde(default = "yes")]
    pub single_use: bool,
    pub starts_in_minutes: Option<i64>,
    pub verification: Option<VerificationBody>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, ToSchema)]
pub struct TapResponse {
    pub id: String,
    /// Shown once: deliver it through a channel other than email.
    pub pass: String,
    pub starts_at: String,
    pub expires_at: String,
    pub single_use: bool,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SignInContextBody {
    /// The end user's address, honoured only from a caller authenticated
    /// with a `relying_party`-scoped API token (ignored from anyone else).
    pub ip: Option<String>,
    /// The inventory device the end user signs in on. Counts only from a
    /// `relying_party`-scoped token (which vouches for it); from anyone
    /// else it is treated as no device.
    pub device_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub username: String,
    pub password: Option<String>,
    pub application: Option<String>,
    pub context: Option<SignInContextBody>,
}

#[derive(Serialize, ToSchema)]
pub struct SignInResponse {
    pub flow_id: String,
    /// started, second_factor_required, registration_required, complete
    pub state: String,
    #[schema(value_type = Vec<String>)]
    pub allowed_methods: Vec<VerifyMethod>,
    pub expires_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// password, totp, recovery_code, temporary_access_pass, webauthn, push, sms, voice
    #[schema(value_type = String)]
    pub method: VerifyMethod,
    pub code: Option<String>,
    pub pass: Option<String>,
    pub password: Option<String>,
    /// For `webauthn`: the PublicKeyCredential from navigator.credentials.get
    /// (binary fields base64url), answering POST /signin/{flow_id}/webauthn/challenge.
    #[schema(value_type = Option<Object>)]
    pub assertion: Option<serde_json::Value>,
    pub context: Option<SignInContextBody>,
}

#[derive(Serialize, ToSchema)]
pub struct VerifyResponse {
    pub flow_id: String,
    pub state: String,
    #[schema(value_type = Vec<String>)]
    pub allowed_methods: Vec<VerifyMethod>,
    /// RFC 8176 authentication method references.
    pub amr: Vec<String>,
    #[schema(value_type = Vec<String>)]
    pub methods: Vec<VerifyMethod>,
    /// The authentication strength met: mfa, passwordless_mfa, phishing_resistant.
    #[schema(value_type = Option<String>)]
    pub acr: Option<AuthStrength>,
    pub session_token: Option<String>,
    pub expires_at: Option<String>,
    /// Rollout campaigns asking the user to register a stronger method
    /// before the deadline; show them to the user (omitted when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registration_campaigns: Vec<RegistrationCampaignView>,
}

#[derive(Serialize, ToSchema)]
pub struct RegistrationCampaignView {
    pub wave: String,
    /// The authentication strength to register for.
    pub strength: String,
    /// From this time on, sign-in requires the strength (RFC 3339).
    pub deadline: String,
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub username: String,
    pub amr: Vec<String>,
    pub methods: Vec<String>,
    pub acr: String,
    pub authenticated_at: String,
    pub expires_at: String,
    pub idle_expires_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenRequest {
    pub name: String,
    /// admin (the default), mdm (device compliance updates only) or
    /// relying_party (an application signing its users in: may pass the end
    /// user's `context.ip` and vouch for `context.device_id`).
    pub scopes: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiTokenResponse {
    pub id: String,
    pub name: String,
    /// Shown once.
    pub token: String,
    pub scopes: Vec<String>,
    /// The person the token acts for: the creator's user (a session's, or a
    /// token's owner). A token without one approves nothing.
    pub owner: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiTokenView {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// The person the token acts for (none: made before owners, approves nothing).
    pub owner: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub after: Option<i64>,
    pub limit: Option<i64>,
    /// e.g. `user:alice`
    pub target: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventView {
    pub seq: i64,
    pub at: String,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPageView {
    pub events: Vec<AuditEventView>,
    pub next_after: i64,
}

#[derive(Serialize, ToSchema)]
pub struct BrokenLinkView {
    pub seq: i64,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditVerifyView {
    pub ok: bool,
    pub length: i64,
    pub head_hash: String,
    pub first_broken: Option<BrokenLinkView>,
}

#[derive(Serialize, ToSchema)]
pub struct NotificationView {
    pub at: String,
    pub channel: String,
    pub subject: String,
    pub body: String,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

pub(crate) type AppState = Arc<App>;

// ---- users ---------------------------------------------------------------

/// Create a user (admin).
#[utoipa::path(post, path = "/api/v1/users", request_body = CreateUserRequest, tag = "users",
    responses((status = 201, body = UserView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn create_user(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let u = app
        .create_user(
            &p,
            &req.username,
            &req.display_name,
            req.department,
            req.groups,
            req.roles,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&u))))
}

/// List users (helpdesk, auditor, admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = Vec<UserView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_users(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Vec<UserView>>> {
    Ok(Json(app.list_users(&p).await?.iter().map(UserView::from).collect()))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "users", params(("username" = String, Path)),
    responses((status = 200, body = UserView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn get_user(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(UserView::from(&app.get_user(&p, &username).await?)))
}

/// Change a user's display name, department, groups or roles (admin; audited).
/// Granting a role answers 409 `approval-required` with a `request_id`; once
/// another administrator approved it, repeat the change with `?approval=ID`.
#[utoipa::path(patch, path = "/api/v1/users/{username}", request_body = UpdateUserRequest, tag = "users",
    params(("username" = String, Path), ("approval" = Option<String>, Query)),
    responses((status = 200, body = UserView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn update_user(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiQuery(q): ApiQuery<ApprovalQuery>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<UserView>> {
    let change = latchkey_service::users::UserChange {
        display_name: req.display_name,
        department: req.department,
        groups: req.groups,
        roles: req.roles,
        approval: q.approval,
    };
    Ok(Json(UserView::from(&app.update_user(&p, &username, change).await?)))
}

/// Set a user's password (admin, or the user with a fresh strong sign-in).
#[utoipa::path(put, path = "/api/v1/users/{username}/password", request_body = PasswordRequest, tag = "users",
    params(("username" = String, Path), ("approval" = Option<String>, Query)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn set_password(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiQuery(q): ApiQuery<ApprovalQuery>,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> ApiResult<StatusCode> {
    app.set_password(&p, &username, &req.password, q.approval.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Clear a user's sign-in lockout (helpdesk, admin).
#[utoipa::path(delete, path = "/api/v1/users/{username}/lockout", tag = "users", params(("username" = String, Path)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn clear_lockout(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.clear_lockout(&p, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Messages sent to the user about their account (new methods, passes).
#[utoipa::path(get, path = "/api/v1/users/{username}/notifications", tag = "users", params(("username" = String, Path)),
    responses((status = 200, body = Vec<NotificationView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn notifications(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<Vec<NotificationView>>> {
    Ok(Json(
        app.notifications(&p, &username)
            .await?
            .into_iter()
            .map(|n| NotificationView {
                at: rfc3339(n.at),
                channel: n.channel,
                subject: n.subject,
                body: n.body,
            })
            .collect(),
    ))
}

// ---- methods -------------------------------------------------------------

/// A user's registered methods, with last use.
#[utoipa::path(get, path = "/api/v1/users/{username}/methods", tag = "methods", params(("username" = String, Path)),
    responses((status = 200, body = Vec<MethodView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_methods(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<Vec<MethodView>>> {
    let (user, methods) = app.methods(&p, &username).await?;
    let mut out: Vec<MethodView> = Vec::new();
    if user.password_hash.is_some() {
        out.push(MethodView {
            id: "password".into(),
            kind: "password".into(),
            label: "Password".into(),
            state: "active".into(),
            registered_at: rfc3339(user.updated_at),
            last_used_at: None,
            device_id: None,
        });
    }
    out.extend(methods.iter().map(MethodView::from));
    // Passes that can still be used (or will be, after a delayed start)
    // are methods too: the helpdesk must see a pass it forgot about.
    for t in app.live_passes(&user).await? {
        {
            out.push(MethodView {
                id: t.id,
                kind: "temporary_access_pass".into(),
                label: format!("Temporary Access Pass (expires {})", rfc3339(t.expires_at)),
                state: "active".into(),
                registered_at: rfc3339(t.starts_at),
                last_used_at: t.used_at.map(rfc3339),
                device_id: None,
            });
        }
    }
    Ok(Json(out))
}

/// Remove a method (admin, or the user with a fresh strong sign-in; never the user's last second factor).
#[utoipa::path(delete, path = "/api/v1/users/{username}/methods/{id}", tag = "methods",
    params(("username" = String, Path), ("id" = String, Path), ("approval" = Option<String>, Query)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn delete_method(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath((username, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ApprovalQuery>,
) -> ApiResult<StatusCode> {
    app.delete_method(&p, &username, &id, q.approval.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start TOTP enrolment: returns the secret once; confirm with a first code.
#[utoipa::path(post, path = "/api/v1/users/{username}/methods/totp", tag = "methods", params(("username" = String, Path), ("approval" = Option<String>, Query)),
    request_body = TotpEnrollRequest,
    responses((status = 201, body = TotpEnrollResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn enroll_totp(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiQuery(q): ApiQuery<ApprovalQuery>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<TotpEnrollResponse>)> {
    // The body is optional: every field has a sensible default.
    let req: TotpEnrollRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TotpEnrollRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ServiceError::Unprocessable(e.to_string()))?
    };
    let e = app
        .enroll_totp(
            &p,
            &username,
            req.label,
            req.algorithm,
            req.digits,
            q.approval.as_deref(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TotpEnrollResponse {
            qr_svg_url: format!("/api/v1/users/{}/methods/totp/{}/qr.svg", username, e.method.id),
            id: e.method.id,
            secret: e.secret_base32,
            otpauth_uri: e.otpauth_uri,
            state: "pending".into(),
        }),
    ))
}

/// Confirm TOTP enrolment with the first code the app shows.
#[utoipa::path(post, path = "/api/v1/users/{username}/methods/totp/{id}/confirm", tag = "methods",
    params(("username" = String, Path), ("id" = String, Path)), request_body = CodeRequest,
    responses((status = 200, body = MethodView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn confirm_totp(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath((username, id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<CodeRequest>,
) -> ApiResult<Json<MethodView>> {
    Ok(Json(MethodView::from(
        &app.confirm_totp(&p, &username, &id, &req.code).await?,
    )))
}

/// QR code (SVG) for a TOTP method that awaits confirmation.
#[utoipa::path(get, path = "/api/v1/users/{username}/methods/totp/{id}/qr.svg", tag = "methods",
    params(("username" = String, Path), ("id" = String, Path)),
    responses((status = 200, content_type = "image/svg+xml", body = String), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn totp_qr(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath((username, id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let uri = app.pending_totp_uri(&p, &username, &id).await?;
    let svg = latchkey_service::qr::svg(&uri)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}

/// Generate a new set of 10 recovery codes; the old set stops working.
#[utoipa::path(post, path = "/api/v1/users/{username}/methods/recovery-codes", tag = "methods", params(("username" = String, Path), ("approval" = Option<String>, Query)),
    responses((status = 201, body = RecoveryCodesResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn recovery_codes(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiQuery(q): ApiQuery<ApprovalQuery>,
) -> ApiResult<(StatusCode, Json<RecoveryCodesResponse>)> {
    let (id, codes) = app
        .regenerate_recovery_codes(&p, &username, q.approval.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(RecoveryCodesResponse { id, codes })))
}

/// Issue a Temporary Access Pass after recording how identity was verified (helpdesk, admin).
#[utoipa::path(post, path = "/api/v1/users/{username}/temporary-access-passes", tag = "methods",
    params(("username" = String, Path)), request_body = TapRequestBody,
    responses((status = 201, body = TapResponse), (status = 202, description = "privileged user: a second approver is needed", body = TapPendingResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn issue_tap(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<TapRequestBody>,
) -> ApiResult<Response> {
    let verification = req
        .verification
        .map(|v| {
            crate::api::recovery::parse_verification(crate::api::recovery::VerificationInput {
                method: v.method,
                note: v.note,
            })
        })
        .transpose()?;
    let t = app
        .issue_tap(
            &p,
            &username,
            req.lifetime_minutes,
            req.single_use,
            req.starts_in_minutes,
            verification,
        )
        .await?;
    Ok(match t {
        latchkey_service::app::TapOutcome::Issued(t) => {
            (StatusCode::CREATED, Json(TapResponse::from(t))).into_response()
        }
        latchkey_service::app::TapOutcome::PendingApproval { request_id } => (
            StatusCode::ACCEPTED,
            Json(TapPendingResponse {
                request_id,
                state: "pending_approval".into(),
            }),
        )
            .into_response(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct TapPendingResponse {
    /// Approve with POST /api/v1/tap-requests/{id}/approve (someone else), then
    /// the requester issues with POST /api/v1/tap-requests/{id}/issue.
    pub request_id: String,
    pub state: String,
}

impl From<latchkey_service::app::IssuedTap> for TapResponse {
    fn from(t: latchkey_service::app::IssuedTap) -> Self {
        TapResponse {
            id: t.id,
            pass: t.pass,
            starts_at: rfc3339(t.starts_at),
            expires_at: rfc3339(t.expires_at),
            single_use: t.single_use,
        }
    }
}

// ---- sign-in -------------------------------------------------------------

fn context(
    caller: &Option<Principal>,
    peer: Option<String>,
    application: Option<String>,
    body: Option<SignInContextBody>,
) -> SignInContext {
    SignInContext::from_request(caller.as_ref(), peer, application, body.unwrap_or_default().into())
}

impl From<SignInContextBody> for ClaimedContext {
    fn from(b: SignInContextBody) -> Self {
        ClaimedContext {
            ip: b.ip,
            device_id: b.device_id,
        }
    }
}

/// Start a sign-in. With a password, answers which second factors may follow.
#[utoipa::path(post, path = "/api/v1/signin", tag = "signin", request_body = SignInRequest,
    responses((status = 200, body = SignInResponse), (status = "4XX", body = Problem)))]
async fn signin_start(
    State(app): State<AppState>,
    MaybeAuth(caller): MaybeAuth,
    PeerIp(peer): PeerIp,
    ApiJson(req): ApiJson<SignInRequest>,
) -> ApiResult<Json<SignInResponse>> {
    let ctx = context(&caller, peer, req.application.clone(), req.context);
    let f = app.signin_start(&req.username, req.password.as_deref(), &ctx).await?;
    Ok(Json(SignInResponse {
        flow_id: f.flow_id,
        state: f.state,
        allowed_methods: f.allowed_methods,
        expires_at: rfc3339(f.expires_at),
    }))
}

/// Prove one step of a sign-in. On completion returns a session token.
#[utoipa::path(post, path = "/api/v1/signin/{flow_id}/verify", tag = "signin", params(("flow_id" = String, Path)),
    request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse), (status = "4XX", body = Problem)))]
async fn signin_verify(
    State(app): State<AppState>,
    MaybeAuth(caller): MaybeAuth,
    PeerIp(peer): PeerIp,
    ApiPath(flow_id): ApiPath<String>,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> ApiResult<Json<VerifyResponse>> {
    let ctx = context(&caller, peer, None, req.context);
    let missing =
        |f: &str| ServiceError::InvalidRequest(format!("method '{}' needs the field '{f}'", req.method.as_str()));
    let proof = match req.method {
        VerifyMethod::Password => Proof::Password(req.password.clone().ok_or_else(|| missing("password"))?),
        VerifyMethod::TemporaryAccessPass => Proof::Pass(req.pass.clone().ok_or_else(|| missing("pass"))?),
        VerifyMethod::Push => Proof::Push,
        VerifyMethod::Totp | VerifyMethod::RecoveryCode | VerifyMethod::Sms | VerifyMethod::Voice => {
            Proof::Code(req.code.clone().ok_or_else(|| missing("code"))?)
        }
        VerifyMethod::Webauthn => Proof::Assertion(req.assertion.clone().ok_or_else(|| missing("assertion"))?),
    };
    let o = app.signin_verify(&flow_id, req.method, proof, &ctx).await?;
    Ok(Json(VerifyResponse {
        flow_id: o.flow_id,
        state: o.state,
        allowed_methods: o.allowed_methods,
        amr: o.amr,
        methods: o.methods,
        acr: o.acr,
        session_token: o.session_token,
        expires_at: o.session_expires_at.map(rfc3339),
        registration_campaigns: o
            .registration_campaigns
            .into_iter()
            .map(|n| RegistrationCampaignView {
                wave: n.wave_name,
                strength: n.strength,
                deadline: rfc3339(n.deadline),
            })
            .collect(),
    }))
}

/// The current session.
#[utoipa::path(get, path = "/api/v1/session", tag = "signin",
    responses((status = 200, body = SessionView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn get_session(Auth(p): Auth) -> ApiResult<Json<SessionView>> {
    match p {
        Principal::Session { session, user } => Ok(Json(SessionView {
            username: user.username,
            amr: session.amr,
            methods: session.methods,
            acr: session.acr,
            authenticated_at: rfc3339(session.authenticated_at),
            expires_at: rfc3339(session.expires_at),
            idle_expires_at: rfc3339(session.idle_expires_at),
        })),
        _ => Err(ServiceError::InvalidRequest("this is an API token, not a session".into()).into()),
    }
}

/// Sign out: revoke the current session.
#[utoipa::path(delete, path = "/api/v1/session", tag = "signin",
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn delete_session(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<StatusCode> {
    app.logout(&p).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- API tokens ----------------------------------------------------------

/// Create an API token for automation (admin): admin-scoped unless `scopes` says otherwise.
#[utoipa::path(post, path = "/api/v1/api-tokens", tag = "admin", request_body = ApiTokenRequest,
    responses((status = 201, body = ApiTokenResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn create_api_token(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<ApiTokenRequest>,
) -> ApiResult<(StatusCode, Json<ApiTokenResponse>)> {
    let (rec, token) = match &req.scopes {
        Some(scopes) => {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            app.create_scoped_api_token(&p, &req.name, &scopes, None).await?
        }
        None => app.create_api_token(&p, &req.name).await?,
    };
    Ok((
        StatusCode::CREATED,
        Json(ApiTokenResponse {
            id: rec.id,
            name: rec.name,
            token,
            scopes: rec.scopes,
            owner: rec.owner,
        }),
    ))
}

/// List API tokens (admin). Token values are never shown again.
#[utoipa::path(get, path = "/api/v1/api-tokens", tag = "admin",
    responses((status = 200, body = Vec<ApiTokenView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_api_tokens(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Vec<ApiTokenView>>> {
    Ok(Json(
        app.list_api_tokens(&p)
            .await?
            .into_iter()
            .map(|(t, created, revoked)| ApiTokenView {
                id: t.id,
                name: t.name,
                scopes: t.scopes,
                created_by: t.created_by,
                owner: t.owner,
                created_at: rfc3339(created),
                revoked_at: revoked.map(rfc3339),
            })
            .collect(),
    ))
}

/// Revoke an API token (admin).
#[utoipa::path(delete, path = "/api/v1/api-tokens/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn revoke_api_token(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.revoke_api_token(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- audit ---------------------------------------------------------------

/// Page through the audit chain.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(("after" = Option<i64>, Query), ("limit" = Option<i64>, Query), ("target" = Option<String>, Query)),
    responses((status = 200, body = AuditPageView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn audit_page(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPageView>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page = app
        .audit_page(&p, q.after.unwrap_or(0), limit, q.target.as_deref())
        .await?;
    Ok(Json(AuditPageView {
        next_after: page.next_after,
        events: page
            .events
            .into_iter()
            .map(|e| AuditEventView {
                seq: e.seq,
                at: rfc3339(e.at_ms.div_euclid(1000)),
                at_ms: e.at_ms,
                details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::String(e.details.clone())),
                actor: e.actor,
                action: e.action,
                target: e.target,
                prev_hash: e.prev_hash,
                hash: e.hash,
            })
            .collect(),
    }))
}

/// Recompute the hash chain and name the first broken link.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = AuditVerifyView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn audit_verify(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<AuditVerifyView>> {
    let v = app.verify_audit(&p).await?;
    Ok(Json(AuditVerifyView {
        ok: v.ok,
        length: v.length,
        head_hash: v.head_hash,
        first_broken: v.first_broken.map(|b| BrokenLinkView {
            seq: b.seq,
            reason: b.reason,
        }),
    }))
}

/// One finding of `latchkey doctor`.
#[derive(Serialize, ToSchema)]
pub struct DoctorFindingView {
    /// warning, error
    pub level: String,
    /// fewer_than_two_admins, admin_tokens_without_owner, audit_chain_broken
    pub code: String,
    pub message: String,
}

/// What in the deployment's own state weakens its rules (auditor, admin).
#[utoipa::path(get, path = "/api/v1/doctor", tag = "operations",
    responses((status = 200, body = Vec<DoctorFindingView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn doctor(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Vec<DoctorFindingView>>> {
    Ok(Json(
        app.doctor(&p)
            .await?
            .into_iter()
            .map(|f| DoctorFindingView {
                level: f.level.to_owned(),
                code: f.code.to_owned(),
                message: f.message,
            })
            .collect(),
    ))
}

// ---- health --------------------------------------------------------------

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = Health), (status = 503, body = Problem)))]
async fn readyz(State(app): State<AppState>) -> Response {
    match app.ready().await {
        Ok(()) => Json(Health { status: "ready".into() }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let problem = Problem {
                kind: "urn:latchkey:problem:not-ready".into(),
                title: "Not ready".into(),
                status: 503,
                detail: "the database is not reachable".into(),
                retry_after: None,
                request_id: None,
            };
            crate::error::problem_response(StatusCode::SERVICE_UNAVAILABLE, &problem)
        }
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token (lk_at_...) or a session token (lk_s_...)"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Latchkey", description = "Self-hosted MFA server. Errors are application/problem+json with a stable `type` (urn:latchkey:problem:<slug>)."),
    paths(
        create_user, list_users, get_user, update_user, set_password, clear_lockout, notifications,
        list_methods, delete_method, enroll_totp, confirm_totp, totp_qr, recovery_codes, issue_tap,
        signin_start, signin_verify, get_session, delete_session,
        create_api_token, list_api_tokens, revoke_api_token,
        audit_page, audit_verify, doctor, healthz, readyz
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::api::recovery::RecoveryDoc::openapi());
    doc.merge(crate::api::account::AccountDoc::openapi());
    doc.merge(crate::api::policy::PolicyDoc::openapi());
    doc.merge(crate::oidc::OidcDoc::openapi());
    doc.merge(crate::api::radius::RadiusDoc::openapi());
    doc.merge(crate::api::webauthn::WebauthnDoc::openapi());
    doc.merge(crate::api::evidence::EvidenceDoc::openapi());
    doc.merge(crate::api::ops::OpsDoc::openapi());
    doc.merge(crate::api::push::PushDoc::openapi());
    doc.merge(crate::api::backup::BackupDoc::openapi());
    doc.to_pretty_json().expect("OpenAPI document serialises")
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(crate::api::recovery::routes())
        .merge(crate::api::account::routes())
        .merge(crate::api::policy::routes())
        .merge(crate::api::ops::routes())
        .merge(crate::api::push::routes())
        .merge(crate::api::backup::routes())
        .merge(crate::oidc::routes())
        .merge(crate::api::radius::routes())
        .route("/api/v1/users", post(create_user).get(list_users))
        .route(
            "/api/v1/users/{username}",
            get(get_user).patch(update_user).delete(account::delete_user),
        )
        .route("/api/v1/users/{username}/password", put(set_password))
        .route("/api/v1/users/{username}/lockout", delete(clear_lockout))
        .route("/api/v1/users/{username}/notifications", get(notifications))
        .route("/api/v1/users/{username}/methods", get(list_methods))
        .route("/api/v1/users/{username}/methods/totp", post(enroll_totp))
        .route("/api/v1/users/{username}/methods/totp/{id}/confirm", post(confirm_totp))
        .route("/api/v1/users/{username}/methods/totp/{id}/qr.svg", get(totp_qr))
        .route("/api/v1/users/{username}/methods/recovery-codes", post(recovery_codes))
        .route("/api/v1/users/{username}/methods/{id}", delete(delete_method))
        .route(
            "/api/v1/users/{username}/temporary-access-passes",
            post(issue_tap).get(recovery::list_passes),
        )
        .route("/api/v1/signin", post(signin_start))
        .route("/api/v1/signin/{flow_id}/verify", post(signin_verify))
        .route("/api/v1/session", get(get_session).delete(delete_session))
        .route("/api/v1/api-tokens", post(create_api_token).get(list_api_tokens))
        .route("/api/v1/api-tokens/{id}", delete(revoke_api_token))
        .route("/api/v1/audit", get(audit_page))
        .route("/api/v1/audit/verify", get(audit_verify))
        .route("/api/v1/doctor", get(doctor))
        .merge(crate::api::webauthn::routes())
        .merge(crate::api::evidence::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], openapi_json()) }),
        )
}
