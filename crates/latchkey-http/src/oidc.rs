//! The OpenID Connect provider's HTTP endpoints (discovery, JWKS,
//! authorize, token, userinfo, logout) and the admin API for clients.
//! Protocol endpoints answer in the protocol's own formats (redirects,
//! RFC 6749 JSON errors); the admin API uses problem documents.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth, PeerIp};
use latchkey_service::app::App;
use latchkey_service::oidc::{OAuthError, TokenError, TokenRequest};
use latchkey_service::ServiceError;

type AppState = Arc<App>;

/// The browser session cookie set by the web sign-in (see DESIGN contracts).
pub const SESSION_COOKIE: &str = "lk_session";

/// Marks a response whose 4xx body is a protocol document, not to be
/// rewritten as a problem document by the router's safety net.
#[derive(Clone, Copy)]
pub struct ProtocolBody;

fn protocol_json(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.extensions_mut().insert(ProtocolBody);
    r
}

/// An OAuth error (RFC 6749 §5.2) in its protocol's own format.
fn oauth_error(e: OAuthError) -> Response {
    {
        let status = if e.error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        let mut r = protocol_json(
            status,
            serde_json::json!({ "error": e.error, "error_description": e.description }),
        );
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"latchkey\""),
            );
        }
        r
    }
}

fn token_error(e: TokenError) -> Response {
    {
        match e {
            TokenError::OAuth(e) => oauth_error(e),
            TokenError::App(ServiceError::Internal(m)) => {
                tracing::error!(error = %m, "token endpoint failed");
                protocol_json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({ "error": "server_error", "error_description": "internal error" }),
                )
            }
            TokenError::App(e) => oauth_error(OAuthError::new("invalid_request", e.to_string())),
        }
    }
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

fn found(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_owned())]).into_response()
}

// ---- discovery and keys ----------------------------------------------

/// OpenID Provider metadata.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "oidc",
    responses((status = 200, body = Object)))]
async fn discovery(State(app): State<AppState>) -> Json<serde_json::Value> {
    let iss = app.issuer();
    Json(serde_json::json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/oauth2/authorize"),
        "token_endpoint": format!("{iss}/oauth2/token"),
        "userinfo_endpoint": format!("{iss}/oauth2/userinfo"),
        "jwks_uri": format!("{iss}/oauth2/jwks"),
        "end_session_endpoint": format!("{iss}/oauth2/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid", "profile", "offline_access"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "sid", "preferred_username", "name", "groups", "department"],
        "acr_values_supported": latchkey_service::oidc::acr_values_supported(),
        "prompt_values_supported": ["none", "login"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    }))
}

/// Public signing keys (current and recently retired).
#[utoipa::path(get, path = "/oauth2/jwks", tag = "oidc", responses((status = 200, body = Object)))]
async fn jwks(State(app): State<AppState>) -> ApiResult<Response> {
    let set = app.jwks().await?;
    let mut r = Json(set).into_response();
    // Relying parties cache keys; rotation keeps old keys published.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(r)
}

// ---- authorize ---------------------------------------------------------

/// Authorization endpoint (code flow with PKCE). Redirects to the client, or
/// to `/signin` when a (fresh or stronger) sign-in is needed.
#[utoipa::path(get, path = "/oauth2/authorize", tag = "oidc",
    responses((status = 302, description = "to the client's redirect_uri or to /signin"), (status = "4XX", body = Problem)))]
async fn authorize_get(
    State(app): State<AppState>,
    headers: HeaderMap,
    PeerIp(peer): PeerIp,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> ApiResult<Response> {
    let token = cookie(&headers, SESSION_COOKIE);
    Ok(found(&app.oidc_authorize(&q, token.as_deref(), peer).await?))
}

async fn authorize_post(
    State(app): State<AppState>,
    headers: HeaderMap,
    PeerIp(peer): PeerIp,
    Form(q): Form<HashMap<String, String>>,
) -> ApiResult<Response> {
    let token = cookie(&headers, SESSION_COOKIE);
    Ok(found(&app.oidc_authorize(&q, token.as_deref(), peer).await?))
}

// ---- token ---------------------------------------------------------------

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (id, secret) = s.split_once(':')?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded.
    let dec = |x: &str| {
        url::form_urlencoded::parse(format!("a={x}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

/// Token endpoint: authorization_code (with PKCE) and refresh_token (rotated).
#[utoipa::path(post, path = "/oauth2/token", tag = "oidc",
    responses((status = 200, body = Object), (status = 400, description = "RFC 6749 error JSON")))]
async fn token(State(app): State<AppState>, headers: HeaderMap, Form(f): Form<HashMap<String, String>>) -> Response {
    let field = |k: &str| f.get(k).filter(|v| !v.is_empty()).cloned();
    let mut req = TokenRequest {
        grant_type: field("grant_type"),
        code: field("code"),
        redirect_uri: field("redirect_uri"),
        code_verifier: field("code_verifier"),
        refresh_token: field("refresh_token"),
        client_id: field("client_id"),
        client_secret: field("client_secret"),
    };
    if let Some((id, secret)) = basic_credentials(&headers) {
        if req.client_id.as_ref().is_some_and(|c| *c != id) || req.client_secret.is_some() {
            return oauth_error(OAuthError::new(
                "invalid_request",
                "use one client authentication method",
            ));
        }
        req.client_id = Some(id);
        req.client_secret = Some(secret);
    }
    match app.oidc_token(&req).await {
        Ok(t) => {
            let mut r = Json(t).into_response();
            r.headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => token_error(e),
    }
}

// ---- userinfo ------------------------------------------------------------

/// Claims about the signed-in user, for a bearer access token.
#[utoipa::path(get, path = "/oauth2/userinfo", tag = "oidc",
    responses((status = 200, body = Object), (status = 401, description = "invalid_token")))]
async fn userinfo(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let claims = match token {
        Some(t) if t.len() < 200 => app.oidc_userinfo(&t).await?,
        _ => None,
    };
    Ok(match claims {
        Some(c) => Json(c).into_response(),
        None => {
            let mut r = protocol_json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({ "error": "invalid_token", "error_description": "the access token is not valid" }),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            r
        }
    })
}

// ---- logout --------------------------------------------------------------

async fn do_logout(app: &App, headers: &HeaderMap, q: &HashMap<String, String>) -> ApiResult<Response> {
    let token = cookie(headers, SESSION_COOKIE);
    let out = app.oidc_logout(q, token.as_deref()).await?;
    let mut r = match &out.redirect {
        Some(u) => found(u),
        None => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            if out.signed_out {
                "You are signed out of Latchkey.\n"
            } else {
                "No Latchkey session to sign out of.\n"
            },
        )
            .into_response(),
    };
    if out.signed_out {
        r.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static("lk_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
        );
    }
    Ok(r)
}

/// RP-initiated logout: `id_token_hint` required; `post_logout_redirect_uri`
/// must be registered for the client.
#[utoipa::path(get, path = "/oauth2/logout", tag = "oidc",
    responses((status = 302), (status = 200), (status = "4XX", body = Problem)))]
async fn logout_get(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> ApiResult<Response> {
    do_logout(&app, &headers, &q).await
}

async fn logout_post(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(q): Form<HashMap<String, String>>,
) -> ApiResult<Response> {
    do_logout(&app, &headers, &q).await
}

// ---- admin: clients and keys ---------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcClientRequest {
    pub name: String,
    /// confidential (has a secret) or public (PKCE only)
    #[serde(rename = "type")]
    pub kind: String,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OidcClientView {
    pub client_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub created_by: String,
    pub created_at: String,
    /// Shown once, at registration, for confidential clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl From<&latchkey_store::OidcClientRecord> for OidcClientView {
    fn from(c: &latchkey_store::OidcClientRecord) -> Self {
        Self {
            client_id: c.id.clone(),
            name: c.name.clone(),
            kind: c.kind.clone(),
            redirect_uris: c.redirect_uris.clone(),
            post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
            created_by: c.created_by.clone(),
            created_at: crate::api::rfc3339(c.created_at),
            client_secret: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RotatedKeyView {
    pub kid: String,
}

/// Register an OpenID Connect client (admin). Consent is implicit for
/// admin-registered clients.
#[utoipa::path(post, path = "/api/v1/oidc/clients", tag = "oidc", request_body = OidcClientRequest,
    responses((status = 201, body = OidcClientView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn create_client(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<OidcClientRequest>,
) -> ApiResult<(StatusCode, Json<OidcClientView>)> {
    let r = app
        .register_oidc_client(
            &p,
            &req.name,
            &req.kind,
            req.redirect_uris,
            req.post_logout_redirect_uris,
        )
        .await?;
    let mut v = OidcClientView::from(&r.client);
    v.client_secret = r.secret;
    Ok((StatusCode::CREATED, Json(v)))
}

/// List OpenID Connect clients (admin).
#[utoipa::path(get, path = "/api/v1/oidc/clients", tag = "oidc",
    responses((status = 200, body = Vec<OidcClientView>), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn list_clients(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Vec<OidcClientView>>> {
    Ok(Json(
        app.list_oidc_clients(&p)
            .await?
            .iter()
            .map(OidcClientView::from)
            .collect(),
    ))
}

/// Remove a client; its grants and tokens stop working (admin).
#[utoipa::path(delete, path = "/api/v1/oidc/clients/{client_id}", tag = "oidc", params(("client_id" = String, Path)),
    responses((status = 204), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn delete_client(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    app.remove_oidc_client(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate the ID-token signing key now (admin). The old key stays in the
/// JWKS until the tokens it signed have expired.
#[utoipa::path(post, path = "/api/v1/oidc/keys/rotate", tag = "oidc",
    responses((status = 200, body = RotatedKeyView), (status = "4XX", body = Problem)), security(("bearer" = [])))]
async fn rotate_keys(State(app): State<AppState>, Auth(p): Auth) -> ApiResult<Json<RotatedKeyView>> {
    Ok(Json(RotatedKeyView {
        kid: app.rotate_signing_key(&p).await?,
    }))
}

#[derive(OpenApi)]
#[openapi(paths(
    discovery,
    jwks,
    authorize_get,
    token,
    userinfo,
    logout_get,
    create_client,
    list_clients,
    delete_client,
    rotate_keys
))]
pub struct OidcDoc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oauth2/jwks", get(jwks))
        .route("/oauth2/authorize", get(authorize_get).post(authorize_post))
        .route("/oauth2/token", post(token))
        .route("/oauth2/userinfo", get(userinfo).post(userinfo))
        .route("/oauth2/logout", get(logout_get).post(logout_post))
        .route("/api/v1/oidc/clients", post(create_client).get(list_clients))
        .route("/api/v1/oidc/clients/{client_id}", delete(delete_client))
        .route("/api/v1/oidc/keys/rotate", post(rotate_keys))
}
