//! Latchkey's HTTP shell over the domain: the JSON API, OpenAPI document and
//! server lifecycle. Business operations live in [`app::App`], shared with
//! the CLI.

pub mod api;
pub mod api_evidence;
pub mod api_ops;
pub mod api_policy;
pub mod api_push;
pub mod api_recovery;
pub mod api_webauthn;
pub mod app;
pub mod clock;
pub mod error;
pub mod evidence;
pub mod extract;
pub mod metrics;
pub mod oidc;
pub mod ops;
pub mod ops_sinks;
pub mod policy;
pub mod push;
pub mod qr;
pub mod radius;
pub mod recovery;
pub mod sms;
pub mod tls;
pub mod web;
pub mod webauthn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;

pub use app::{App, Config, Principal};
pub use error::{AppError, AppResult};

/// Request bodies larger than this are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    AppError::Internal("a request handler panicked".into()).into_response()
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
    let protocol = resp.extensions().get::<oidc::http::ProtocolBody>().is_some();
    if !(status.is_client_error() || status.is_server_error()) || is_problem || is_page || protocol {
        return resp;
    }
    let err = match status {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
        StatusCode::NOT_FOUND => AppError::NotFound("route".into()),
        StatusCode::UNAUTHORIZED => AppError::Unauthenticated,
        s if s.is_server_error() => AppError::Internal(format!("framework error {s}")),
        _ => AppError::InvalidRequest(status.canonical_reason().unwrap_or("bad request").to_owned()),
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

pub fn router(app: Arc<App>) -> Router {
    api::routes()
        .merge(web::routes(app.clone()))
        .fallback(|| async { AppError::NotFound("route".into()) })
        .method_not_allowed_fallback(|| async {
            let e = AppError::InvalidRequest("method not allowed on this route".into());
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
        .layer(axum::middleware::from_fn_with_state(app.clone(), web::proxy::forwarded))
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

/// Purge expired flows and sessions every minute (abort the handle to stop).
pub(crate) fn spawn_housekeeping(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ops_tasks = ops::spawn_tasks(app.clone());
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            ops::housekeeping(&app).await;
            if let Err(e) = app.store.purge_expired(app.now()).await {
                tracing::warn!(error = %e, "purging expired flows and sessions failed");
            }
            if let Err(e) = app.store.purge_radius_challenges(app.now()).await {
                tracing::warn!(error = %e, "purging expired RADIUS challenges failed");
            }
        }
    })
}

/// Serve until `shutdown` resolves. Also purges expired flows and sessions.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let housekeeping = spawn_housekeeping(app.clone());
    let result = axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    housekeeping.abort();
    result
}

/// The one outbound HTTP client (SMS and alert webhooks): rustls with the
/// system's CA store, read once per process rather than per message.
pub(crate) fn http_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| format!("HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}
