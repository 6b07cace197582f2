//! Latency of the sign-in endpoints, recorded into the service's metrics
//! registry (`latchkey_service::metrics`), which `/metrics` exposes.

use latchkey_service::metrics::observe_latency;

/// Which routes get a latency histogram: the sign-in endpoints, by route
/// template so flow ids don't explode the label set.
pub fn signin_route(path: &str) -> Option<&'static str> {
    match path {
        "/api/v1/signin" => Some("/api/v1/signin"),
        p if p.starts_with("/api/v1/signin/") && p.ends_with("/verify") => Some("/api/v1/signin/{flow_id}/verify"),
        p if p.starts_with("/api/v1/signin/") => Some("/api/v1/signin/*"),
        "/signin" => Some("/signin"),
        p if p.starts_with("/signin/") => Some("/signin/*"),
        "/oauth2/token" | "/oauth2/authorize" => Some("/oauth2"),
        _ => None,
    }
}

/// Middleware: time sign-in requests.
pub async fn track_latency(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let route = signin_route(req.uri().path());
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    if let Some(r) = route {
        observe_latency(r, resp.status().as_u16(), start.elapsed());
    }
    resp
}
