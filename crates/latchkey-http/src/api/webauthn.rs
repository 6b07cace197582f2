//! HTTP handlers for WebAuthn: registration ceremonies, the sign-in
//! challenge, usernameless passkey sign-in, the admin policy, and the
//! browser helper script. Thin shells over `latchkey_service::webauthn`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use latchkey_core::webauthn::{CredentialKind, TrustedAuthenticator, WebauthnPolicy};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::api::{rfc3339, AppState, SignInContextBody};
use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, Auth, MaybeAuth, PeerIp};
use latchkey_service::app::{Principal, SignInContext};
use latchkey_service::webauthn::WebauthnCredentialView;
use latchkey_service::ServiceError;

/// The browser helper (base64url <-> ArrayBuffer, navigator.credentials calls).
pub const WEBAUTHN_JS: &str = include_str!("../../static/webauthn.js");

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterStartRequest {
    /// security_key (a second factor after the password) or passkey
    /// (discoverable, user verification required; signs in without a password)
    pub kind: String,
    pub label: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RegisterStartResponse {
    /// Send back with register/finish within `expires_at`.
    pub ceremony_id: String,
    pub expires_at: String,
    /// PublicKeyCredentialCreationOptions for navigator.credentials.create
    /// (binary fields base64url-encoded).
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    pub public_key: serde_json::Value,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinishRequest {
    pub ceremony_id: String,
    /// The PublicKeyCredential from navigator.credentials.create, binary
    /// fields base64url-encoded (as webauthn.js sends it).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct ChallengeResponse {
    pub flow_id: String,
    /// PublicKeyCredentialRequestOptions for navigator.credentials.get.
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    pub public_key: serde_json::Value,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PasskeyStartRequest {
    pub application: Option<String>,
    pub context: Option<SignInContextBody>,
}

#[derive(Serialize, ToSchema)]
pub struct PasskeyStartResponse {
    pub flow_id: String,
    pub state: String,
    pub allowed_methods: Vec<String>,
    pub expires_at: String,
    /// PublicKeyCredentialRequestOptions with no allowCredentials: the
    /// authenticator offers its passkeys for this site.
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    pub public_key: serde_json::Value,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustedAuthenticatorBody {
    /// The model's AAGUID.
    pub aaguid: String,
    /// Model name recorded on attested registrations.
    pub description: String,
    /// The vendor's attestation root certificate (PEM).
    pub ca_pem: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebauthnPolicyBody {
    /// Every new registration must present an attestation chaining to a trusted authenticator.
    #[serde(default)]
    pub require_attestation: bool,
    /// When not empty, privileged users may only register attested authenticators of these AAGUIDs.
    #[serde(default)]
    pub privileged_aaguids: Vec<String>,
    #[serde(default)]
    pub trusted_authenticators: Vec<TrustedAuthenticatorBody>,
}

impl From<WebauthnPolicy> for WebauthnPolicyBody {
    fn from(p: WebauthnPolicy) -> Self {
        Self {
            require_attestation: p.require_attestation,
            privileged_aaguids: p.privileged_aaguids,
            trusted_authenticators: p
                .trusted_authenticators
                .into_iter()
                .map(|t| TrustedAuthenticatorBody {
                    aaguid: t.aaguid,
                    description: t.description,
                    ca_pem: t.ca_pem,
                })
                .collect(),
        }
    }
}

pub(crate) fn public_key_of<T: Serialize>(options: &T) -> serde_json::Value {
    let mut v = serde_json::to_value(options).expect("options serialise");
    v.get_mut("publicKey").map(serde_json::Value::take).unwrap_or(v)
}

fn context(caller: &Option<Principal>, peer: Option<String>, body: PasskeyStartRequest) -> SignInContext {
    // As for POST /signin.
    SignInContext::from_request(
        caller.as_ref(),
        peer,
        body.application,
        body.context.unwrap_or_default().into(),
    )
}

/// Start registering a security key or passkey (the user with a fresh strong sign-in, or an admin).
#[utoipa::path(post, path = "/api/v1/users/{username}/methods/webauthn/register/start", tag = "methods",
    params(("username" = String, Path)), request_body = RegisterStartRequest,
    responses((status = 200, body = RegisterStartResponse), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn register_start(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<RegisterStartRequest>,
) -> ApiResult<Json<RegisterStartResponse>> {
    let kind = CredentialKind::parse(&req.kind)?;
    let s = app.webauthn_register_start(&p, &username, kind, req.label).await?;
    Ok(Json(RegisterStartResponse {
        ceremony_id: s.ceremony_id,
        expires_at: rfc3339(s.expires_at),
        public_key: public_key_of(&s.options),
    }))
}

/// Finish a registration with the authenticator's response. The user is notified.
#[utoipa::path(post, path = "/api/v1/users/{username}/methods/webauthn/register/finish", tag = "methods",
    params(("username" = String, Path)), request_body = RegisterFinishRequest,
    responses((status = 201, body = WebauthnCredentialView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn register_finish(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
    ApiJson(req): ApiJson<RegisterFinishRequest>,
) -> ApiResult<(StatusCode, Json<WebauthnCredentialView>)> {
    let c = app
        .webauthn_register_finish(&p, &username, &req.ceremony_id, req.credential)
        .await?;
    Ok((StatusCode::CREATED, Json(WebauthnCredentialView::from(&c))))
}

/// A user's security keys and passkeys with AAGUID, model, backup flags and counter.
#[utoipa::path(get, path = "/api/v1/users/{username}/methods/webauthn", tag = "methods",
    params(("username" = String, Path)),
    responses((status = 200, body = Vec<WebauthnCredentialView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_credentials(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(username): ApiPath<String>,
) -> ApiResult<Json<Vec<WebauthnCredentialView>>> {
    let creds = app.webauthn_credentials(&p, &username).await?;
    Ok(Json(creds.iter().map(WebauthnCredentialView::from).collect()))
}

/// Assertion options for a sign-in flow: after the password, the user's
/// credentials; before it, a passkey (discoverable) challenge. Answer with
/// POST /signin/{flow_id}/verify {method: "webauthn", assertion}.
#[utoipa::path(post, path = "/api/v1/signin/{flow_id}/webauthn/challenge", tag = "signin",
    params(("flow_id" = String, Path)),
    responses((status = 200, body = ChallengeResponse), (status = "4XX", body = Problem)))]
async fn signin_challenge(
    State(app): State<AppState>,
    ApiPath(flow_id): ApiPath<String>,
) -> ApiResult<Json<ChallengeResponse>> {
    let o = app.webauthn_challenge(&flow_id).await?;
    Ok(Json(ChallengeResponse {
        flow_id,
        public_key: public_key_of(&o),
    }))
}

/// Usernameless sign-in: start a flow with a passkey challenge. Finish with
/// POST /signin/{flow_id}/verify {method: "webauthn", assertion}.
#[utoipa::path(post, path = "/api/v1/signin/passkey/start", tag = "signin",
    request_body = Option<PasskeyStartRequest>,
    responses((status = 200, body = PasskeyStartResponse), (status = "4XX", body = Problem)))]
async fn passkey_start(
    State(app): State<AppState>,
    MaybeAuth(caller): MaybeAuth,
    PeerIp(peer): PeerIp,
    body: axum::body::Bytes,
) -> ApiResult<Json<PasskeyStartResponse>> {
    // The body is optional: a browser's passkey button sends none.
    let req: PasskeyStartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PasskeyStartRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ServiceError::InvalidRequest(format!("invalid JSON body: {e}")))?
    };
    let ctx = context(&caller, peer, req);
    let s = app.passkey_signin_start(&ctx).await?;
    Ok(Json(PasskeyStartResponse {
        flow_id: s.flow.flow_id,
        state: s.flow.state,
        allowed_methods: s.flow.allowed_methods.iter().map(|m| m.as_str().to_owned()).collect(),
        expires_at: rfc3339(s.flow.expires_at),
        public_key: public_key_of(&s.options),
    }))
}

/// The WebAuthn registration policy (admin, security_admin, auditor).
#[utoipa::path(get, path = "/api/v1/settings/webauthn", tag = "admin",
    responses((status = 200, body = WebauthnPolicyBody), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn get_policy(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<WebauthnPolicyBody>> {
    Ok(Json(app.get_webauthn_policy(&p).await?.into()))
}

/// Replace the WebAuthn registration policy: require attestation, and/or
/// restrict privileged users to an allow-list of attested AAGUIDs (admin, security_admin).
#[utoipa::path(put, path = "/api/v1/settings/webauthn", tag = "admin", request_body = WebauthnPolicyBody,
    responses((status = 200, body = WebauthnPolicyBody), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn put_policy(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<WebauthnPolicyBody>,
) -> ApiResult<Json<WebauthnPolicyBody>> {
    let policy = WebauthnPolicy {
        require_attestation: req.require_attestation,
        privileged_aaguids: req.privileged_aaguids,
        trusted_authenticators: req
            .trusted_authenticators
            .into_iter()
            .map(|t| TrustedAuthenticator {
                aaguid: t.aaguid,
                description: t.description,
                ca_pem: t.ca_pem,
            })
            .collect(),
    };
    Ok(Json(app.set_webauthn_policy(&p, policy).await?.into()))
}

/// The browser helper script for the web UI.
#[utoipa::path(get, path = "/static/webauthn.js", tag = "operations",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript")))]
async fn webauthn_js() -> impl axum::response::IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        WEBAUTHN_JS,
    )
}

#[derive(OpenApi)]
#[openapi(
    paths(
        register_start,
        register_finish,
        list_credentials,
        signin_challenge,
        passkey_start,
        get_policy,
        put_policy,
        webauthn_js
    ),
    components(schemas(WebauthnCredentialView, WebauthnPolicyBody, TrustedAuthenticatorBody))
)]
pub struct WebauthnDoc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users/{username}/methods/webauthn", get(list_credentials))
        .route(
            "/api/v1/users/{username}/methods/webauthn/register/start",
            post(register_start),
        )
        .route(
            "/api/v1/users/{username}/methods/webauthn/register/finish",
            post(register_finish),
        )
        .route("/api/v1/signin/passkey/start", post(passkey_start))
        .route("/api/v1/signin/{flow_id}/webauthn/challenge", post(signin_challenge))
        .route("/api/v1/settings/webauthn", get(get_policy).put(put_policy))
        .route("/static/webauthn.js", get(webauthn_js))
}
