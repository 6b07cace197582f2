//! HTTP handlers for push approval (enrollment, the device protocol, the
//! sign-in side) and SMS/voice codes. Thin shells over `latchkey_service::push` and
//! `latchkey_service::sms`.
//!
//! Device protocol: the device enrolls with the one-time token from the
//! security-info QR code and its P-256 public key, receiving a device token.
//! With that token it reads pending prompts (JSON, or a Server-Sent Events
//! stream) and posts answers signed with its private key over
//! `latchkey_core::push::canonical_payload`. The token alone cannot approve.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use latchkey_core::push::Decision;
use latchkey_core::VerifyMethod;
use latchkey_store::PushDeviceRecord;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::api::{rfc3339, AppState, MethodView};
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, Auth, PeerIp};
use latchkey_service::app::{App, SignInContext};
use latchkey_service::push::{DevicePrompt, PushStart};
use latchkey_service::sms::PhoneCodeSent;
use latchkey_service::ServiceError;

/// The PWA authenticator (plain JS, WebCrypto, no third-party code).
pub const AUTHENTICATOR_HTML: &str = include_str!("../../static/authenticator.html");
pub const AUTHENTICATOR_JS: &str = include_str!("../../static/authenticator.js");
pub const AUTHENTICATOR_MANIFEST: &str = include_str!("../../static/authenticator.webmanifest");
pub const AUTHENTICATOR_SW: &str = include_str!("../../static/authenticator-sw.js");
pub const AUTHENTICATOR_ICON: &str = include_str!("../../static/authenticator-icon.svg");
/// The sign-in page's push waiting script.
pub const PUSH_WAIT_JS: &str = include_str!("../../static/push-wait.js");

/// The calling authenticator device (`Authorization: Bearer lk_pd_...`).
pub struct DeviceAuth(pub PushDeviceRecord);

impl<S> FromRequestParts<S> for DeviceAuth
where
    Arc<App>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = crate::error::ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = Arc::<App>::from_ref(state);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or(ServiceError::Unauthenticated)?;
        Ok(DeviceAuth(app.push_device_auth(token).await?))
    }
}

fn b64(field: &str, s: &str) -> latchkey_service::ServiceResult<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    data_encoding::BASE64URL_NOPAD
        .decode(s.as_bytes())
        .or_else(|_| data_encoding::BASE64_NOPAD.decode(s.as_bytes()))
        .map_err(|_| ServiceError::InvalidRequest(format!("{field} must be base64url")))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentRequest {
    pub label: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EnrollmentResponse {
    /// One-time token (also inside `enrollment_url`).
    pub token: String,
    /// Scan or open on the device: the PWA reads the token from the fragment.
    pub enrollment_url: String,
    pub expires_at: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDeviceRequest {
    pub enrollment_token: String,
    /// The device's P-256 public key, base64url: SEC1 uncompressed point
    /// (WebCrypto `raw`) or SPKI DER.
    pub public_key: String,
    pub label: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RegisterDeviceResponse {
    pub method_id: String,
    pub username: String,
    /// Bearer token for the prompt stream. Shown once; store it on the device.
    pub device_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// approve, deny or report ("this wasn't me")
    #[schema(value_type = String)]
    pub decision: Decision,
    /// The number typed from the sign-in screen (required to approve).
    pub number: Option<u8>,
    /// ECDSA P-256 SHA-256 signature (raw r||s or DER), base64url, over
    /// "latchkey-push-v1\n{prompt id}\n{challenge}\n{number}\n{decision}".
    pub signature: String,
}

#[derive(Serialize, ToSchema)]
pub struct AnswerResponse {
    /// approved, denied, reported or wrong_number
    pub status: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneCodeRequest {
    /// sms or voice
    #[schema(value_type = String)]
    pub method: VerifyMethod,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneEnrollRequest {
    /// sms or voice
    #[schema(value_type = String)]
    pub kind: VerifyMethod,
    /// E.164, e.g. +14155550123
    pub phone: String,
    pub label: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PhoneEnrollResponse {
    pub method: MethodView,
    pub code: PhoneCodeSent,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmCodeRequest {
    pub code: String,
}

/// Start enrolling an authenticator device: a one-time token and the URL for the QR code.
#[utoipa::path(post, path = "/api/v1/users/{username}/methods/push/enrollments", tag = "methods",
    params(("username" = String, Path)), request_body = Option<EnrollmentRequest>,
    responses((status = 201, body = EnrollmentResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn enrollment_start(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<EnrollmentResponse>)> {
    let req: EnrollmentRequest = if body.iter().all(u8::is_ascii_whitespace) {
        EnrollmentRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ServiceError::InvalidRequest(format!("invalid JSON body: {e}")))?
    };
    let e = app.push_enrollment_start(&p, &username, req.label).await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentResponse {
            token: e.token,
            enrollment_url: e.enrollment_url,
            expires_at: rfc3339(e.expires_at),
        }),
    ))
}

/// The device registers its public key with the one-time enrollment token.
#[utoipa::path(post, path = "/api/v1/push/devices", tag = "push", request_body = RegisterDeviceRequest,
    responses((status = 201, body = RegisterDeviceResponse), (status = "4XX", body = Problem)))]
async fn register_device(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RegisterDeviceRequest>,
) -> ApiResult<(StatusCode, Json<RegisterDeviceResponse>)> {
    let key = b64("public_key", &req.public_key)?;
    let d = app
        .push_enrollment_finish(&req.enrollment_token, &key, req.label)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RegisterDeviceResponse {
            method_id: d.method_id,
            username: d.username,
            device_token: d.device_token,
        }),
    ))
}

/// Pending prompts for this device's user (never the number).
#[utoipa::path(get, path = "/api/v1/push/prompts", tag = "push",
    responses((status = 200, body = Vec<DevicePrompt>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn device_prompts(State(app): State<AppState>, DeviceAuth(d): DeviceAuth) -> ApiResult<Json<Vec<DevicePrompt>>> {
    Ok(Json(app.push_device_prompts(&d).await?))
}

/// Server-Sent Events: one `prompt` event per new pending prompt. Polls the
/// shared database, so a prompt created on any node reaches the device.
#[utoipa::path(get, path = "/api/v1/push/prompts/stream", tag = "push",
    responses((status = 200, description = "text/event-stream of `prompt` events", content_type = "text/event-stream"), (status = "4XX", body = Problem)),
    security(("bearer" = [])))]
async fn device_stream(State(app): State<AppState>, DeviceAuth(d): DeviceAuth) -> impl IntoResponse {
    struct St {
        app: Arc<App>,
        device: PushDeviceRecord,
        seen: HashSet<String>,
        queue: VecDeque<Event>,
        first: bool,
    }
    let st = St {
        app,
        device: d,
        seen: HashSet::new(),
        queue: VecDeque::from([Event::default().event("ready").data("{}")]),
        first: true,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok::<Event, Infallible>(e), st));
            }
            if !st.first {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            st.first = false;
            match st.app.push_device_prompts(&st.device).await {
                Ok(prompts) => {
                    for p in prompts {
                        if st.seen.insert(p.id.clone()) {
                            if let Ok(e) = Event::default().event("prompt").id(p.id.clone()).json_data(&p) {
                                st.queue.push_back(e);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "push stream: reading prompts failed");
                    return None;
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Answer a prompt with a signature by the device key. Approving needs the number from the sign-in screen.
#[utoipa::path(post, path = "/api/v1/push/prompts/{prompt_id}/answer", tag = "push",
    params(("prompt_id" = String, Path)), request_body = AnswerRequest,
    responses((status = 200, body = AnswerResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn answer(
    State(app): State<AppState>,
    DeviceAuth(d): DeviceAuth,
    ApiPath(prompt_id): ApiPath<String>,
    ApiJson(req): ApiJson<AnswerRequest>,
) -> ApiResult<Json<AnswerResponse>> {
    let sig = b64("signature", &req.signature)?;
    let status = app.push_answer(&d, &prompt_id, req.decision, req.number, &sig).await?;
    Ok(Json(AnswerResponse {
        status: status.as_str().to_owned(),
    }))
}

/// Send a push prompt for this sign-in; show `number` on the screen, then
/// POST /signin/{flow_id}/verify {method: "push"} once it is approved.
#[utoipa::path(post, path = "/api/v1/signin/{flow_id}/push", tag = "signin",
    params(("flow_id" = String, Path)),
    responses((status = 200, body = PushStart), (status = "4XX", body = Problem)))]
async fn signin_push(
    State(app): State<AppState>,
    PeerIp(peer): PeerIp,
    ApiPath(flow_id): ApiPath<String>,
) -> ApiResult<Json<PushStart>> {
    let ctx = SignInContext {
        source_ip: peer,
        ..Default::default()
    };
    Ok(Json(app.signin_push_start(&flow_id, &ctx).await?))
}

/// The state of this sign-in's push prompt (pending, approved, denied, ...).
#[utoipa::path(get, path = "/api/v1/signin/{flow_id}/push", tag = "signin",
    params(("flow_id" = String, Path)),
    responses((status = 200, body = PushStart), (status = "4XX", body = Problem)))]
async fn signin_push_status(
    State(app): State<AppState>,
    ApiPath(flow_id): ApiPath<String>,
) -> ApiResult<Json<PushStart>> {
    Ok(Json(app.signin_push_status(&flow_id).await?))
}

/// Text (sms) or call (voice) a one-time code for this sign-in. A weak
/// method: it satisfies `mfa` only.
#[utoipa::path(post, path = "/api/v1/signin/{flow_id}/phone-code", tag = "signin",
    params(("flow_id" = String, Path)), request_body = PhoneCodeRequest,
    responses((status = 200, body = PhoneCodeSent), (status = "4XX", body = Problem)))]
async fn signin_phone_code(
    State(app): State<AppState>,
    ApiPath(flow_id): ApiPath<String>,
    ApiJson(req): ApiJson<PhoneCodeRequest>,
) -> ApiResult<Json<PhoneCodeSent>> {
    Ok(Json(app.signin_phone_send(&flow_id, req.method).await?))
}

/// Register a phone for SMS or voice codes; a code is sent to confirm it.
#[utoipa::path(post, path = "/api/v1/users/{username}/methods/phone", tag = "methods",
    params(("username" = String, Path)), request_body = PhoneEnrollRequest,
    responses((status = 201, body = PhoneEnrollResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn phone_enroll(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<PhoneEnrollRequest>,
) -> ApiResult<(StatusCode, Json<PhoneEnrollResponse>)> {
    let (m, code) = app.enroll_phone(&p, &username, req.kind, &req.phone, req.label).await?;
    Ok((
        StatusCode::CREATED,
        Json(PhoneEnrollResponse {
            method: MethodView::from(&m),
            code,
        }),
    ))
}

/// Confirm a phone with the code sent to it.
#[utoipa::path(post, path = "/api/v1/users/{username}/methods/phone/{id}/confirm", tag = "methods",
    params(("username" = String, Path), ("id" = String, Path)), request_body = ConfirmCodeRequest,
    responses((status = 200, body = MethodView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn phone_confirm(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath((username, id)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ConfirmCodeRequest>,
) -> ApiResult<Json<MethodView>> {
    let m = app.confirm_phone(&p, &username, &id, &req.code).await?;
    Ok(Json(MethodView::from(&m)))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, crate::web::CSP),
        ],
        body,
    )
}

/// The authenticator web app (PWA).
#[utoipa::path(get, path = "/authenticator", tag = "push",
    responses((status = 200, description = "HTML", content_type = "text/html")))]
async fn authenticator_page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", AUTHENTICATOR_HTML)
}

async fn authenticator_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", AUTHENTICATOR_JS)
}

async fn authenticator_manifest() -> impl IntoResponse {
    asset("application/manifest+json", AUTHENTICATOR_MANIFEST)
}

/// The service worker, allowed to control `/authenticator` itself (its own
/// path would only give it `/authenticator/`).
async fn authenticator_sw() -> impl IntoResponse {
    (
        [(
            header::HeaderName::from_static("service-worker-allowed"),
            "/authenticator",
        )],
        asset("text/javascript; charset=utf-8", AUTHENTICATOR_SW),
    )
}

async fn push_wait_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", PUSH_WAIT_JS)
}

#[derive(OpenApi)]
#[openapi(
    paths(
        enrollment_start,
        register_device,
        device_prompts,
        device_stream,
        answer,
        signin_push,
        signin_push_status,
        signin_phone_code,
        phone_enroll,
        phone_confirm,
        authenticator_page
    ),
    components(schemas(DevicePrompt, PushStart, PhoneCodeSent, AnswerRequest, AnswerResponse))
)]
pub struct PushDoc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/users/{username}/methods/push/enrollments",
            post(enrollment_start),
        )
        .route("/api/v1/push/devices", post(register_device))
        .route("/api/v1/push/prompts", get(device_prompts))
        .route("/api/v1/push/prompts/stream", get(device_stream))
        .route("/api/v1/push/prompts/{prompt_id}/answer", post(answer))
        .route(
            "/api/v1/signin/{flow_id}/push",
            post(signin_push).get(signin_push_status),
        )
        .route("/api/v1/signin/{flow_id}/phone-code", post(signin_phone_code))
        .route("/api/v1/users/{username}/methods/phone", post(phone_enroll))
        .route(
            "/api/v1/users/{username}/methods/phone/{id}/confirm",
            post(phone_confirm),
        )
        .route("/authenticator", get(authenticator_page))
        .route("/authenticator/app.js", get(authenticator_js))
        .route("/authenticator/manifest.webmanifest", get(authenticator_manifest))
        .route("/authenticator/sw.js", get(authenticator_sw))
        .route(
            "/authenticator/icon.svg",
            get(|| async { asset("image/svg+xml", AUTHENTICATOR_ICON) }),
        )
        .route("/static/push-wait.js", get(push_wait_js))
}
