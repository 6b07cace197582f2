//! Latchkey's HTTP transport: the JSON API (`api/`, one file per resource)
//! with its OpenAPI document, the web pages (`web/`), the OpenID Connect
//! provider endpoints, `/metrics`, TLS. Handlers are thin shells over
//! [`latchkey_service::App`]; service errors become problem documents in one
//! place ([`error`]).

pub mod api;
pub mod connections;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod oidc;
pub mod tls;
pub mod web;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;

pub use connections::ConnLimits;
pub use error::{ApiError, ApiResult};
use latchkey_service::{App, ServiceError};
pub use web::WebConfig;

/// Request bodies larger than this are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::from(ServiceError::Internal("a request handler panicked".into())).into_response()
}

/// Whatever produced an error response (our handlers, or the framework
/// rejecting a request before they ran), the client gets a problem document.
async fn ensure_problem(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    // Web pages (crate::web) answer people with HTML error pages of their own;
    // OAuth endpoints answer in their protocol's own error format.
    let is_page = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let protocol = resp.extensions().get::<oidc::ProtocolBody>().is_some();
    if !(status.is_client_error() || status.is_server_error()) || is_problem || is_page || protocol {
        return resp;
    }
    let err: ApiError = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::NOT_FOUND => ServiceError::NotFound("route".into()).into(),
        StatusCode::UNAUTHORIZED => ServiceError::Unauthenticated.into(),
        s if s.is_server_error() => ServiceError::Internal(format!("framework error {s}")).into(),
        _ => ServiceError::InvalidRequest(status.canonical_reason().unwrap_or("bad request").to_owned()).into(),
    };
    let mut p = err.problem();
    p.status = status.as_u16();
    let mut out = error::problem_response(status, &p);
    for (k, v) in resp.headers() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

pub fn router(app: Arc<App>, web: WebConfig) -> Router {
    api::routes()
        .merge(web::routes(app.clone()))
        .fallback(|| async { ApiError::from(ServiceError::NotFound("route".into())) })
        .method_not_allowed_fallback(|| async {
            let e = ApiError::from(ServiceError::InvalidRequest("method not allowed on this route".into()));
            let mut p = e.problem();
            p.status = 405;
            p.title = "Method not allowed".into();
            error::problem_response(StatusCode::METHOD_NOT_ALLOWED, &p)
        })
        .with_state(app.clone())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::map_response(ensure_problem))
        .layer(axum::middleware::from_fn(metrics::track_latency))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(web),
            web::proxy::forwarded,
        ))
        // Responses carry tokens and codes: never cache them; never sniff.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}

/// Serve until `shutdown` resolves, with the default [`ConnLimits`]. Also
/// runs the service's housekeeping.
pub async fn serve(
    app: Arc<App>,
    web: WebConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(app, web, ConnLimits::default(), listener, shutdown).await
}

/// Serve plain http until `shutdown` resolves, within `limits`.
pub async fn serve_with(
    app: Arc<App>,
    web: WebConfig,
    limits: ConnLimits,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    connections::serve(app, web, limits, listener, None, shutdown).await
}
