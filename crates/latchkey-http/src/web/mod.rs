//! The server-rendered web UI: sign-in, the user's own security info, the
//! helpdesk console and the admin console. Not part of `/api/v1` nor of the
//! OpenAPI document; pages call [`App`] directly, like the JSON handlers.
//!
//! Browser security in one place:
//! - the session is the `lk_session` cookie (HttpOnly, SameSite=Lax, Secure
//!   when served over TLS or an https public URL or via a trusted https proxy);
//! - every POST carries a CSRF token checked by [`csrf::guard`] before any
//!   handler runs (a signed double-submit token bound to the session cookie);
//! - a strict Content-Security-Policy (no inline script or style), and
//!   `X-Frame-Options: DENY` from the outer router.

pub mod csrf;
mod errors;

mod layout;
mod pages_account;
mod pages_admin;
mod pages_alerts;
mod pages_campaign;
mod pages_cases;
mod pages_helpdesk;
mod pages_push;
mod pages_reports;
mod pages_security;
mod pages_signin;
pub mod proxy;

use std::sync::Arc;

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use latchkey_core::{AuthStrength, Role};
use maud::Markup;
use tower_http::set_header::SetResponseHeaderLayer;

use latchkey_service::app::{App, Principal};
use latchkey_service::ServiceError;

pub use latchkey_service::history::WebFlow;

pub const SESSION_COOKIE: &str = "lk_session";
pub const FLOW_COOKIE: &str = "lk_flow";
pub const CSRF_COOKIE: &str = "lk_csrf";

pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// Web UI settings the server's command line decides.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// Mark cookies `Secure` (set when serving TLS directly).
    pub secure_cookies: bool,
    /// Reverse proxies whose `X-Forwarded-For`/`X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

static CSS: &str = include_str!("../../static/latchkey.css");
static JS: &str = include_str!("../../static/latchkey.js");
static PASSKEYS_JS: &str = include_str!("../../static/passkeys.js");

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/security-info") }))
        .route(
            "/static/latchkey.css",
            get(|| async { static_file(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/static/latchkey.js",
            get(|| async { static_file(JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/static/passkeys.js",
            get(|| async { static_file(PASSKEYS_JS, "text/javascript; charset=utf-8") }),
        )
        .merge(pages_signin::routes())
        .merge(pages_campaign::routes())
        .merge(pages_push::routes())
        .merge(pages_security::routes())
        .merge(pages_helpdesk::routes())
        .merge(pages_cases::routes())
        .merge(pages_admin::routes())
        .merge(pages_account::routes())
        .merge(pages_reports::routes())
        .merge(pages_alerts::routes())
        .route("/signout", post(pages_signin::signout))
        .layer(axum::middleware::from_fn_with_state(app.clone(), csrf::guard))
        .layer(axum::middleware::from_fn_with_state(app, to_passkey_origin))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
}

/// A browser that opens a page at a loopback IP address (`http://127.0.0.1:PORT`)
/// while the relying party is `localhost` goes to `http://localhost:PORT`
/// instead: browsers refuse WebAuthn at an IP address, and cookies set at one
/// name are not sent to the other. Only navigations are moved (scripts and
/// API clients keep the address they were given).
async fn to_passkey_origin(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let navigation = req.method() == axum::http::Method::GET
        && req
            .headers()
            .get("sec-fetch-mode")
            .is_some_and(|v| v.as_bytes() == b"navigate");
    if navigation {
        if let Some(to) = loopback_redirect(&app, req.headers().get(header::HOST), req.uri()) {
            return Redirect::temporary(&to).into_response();
        }
    }
    next.run(req).await
}

fn loopback_redirect(app: &App, host: Option<&HeaderValue>, uri: &axum::http::Uri) -> Option<String> {
    let rp = app.relying_party().ok()?;
    if !(rp.any_port && rp.id == "localhost") {
        return None;
    }
    let authority: axum::http::uri::Authority = host?.to_str().ok()?.parse().ok()?;
    let ip: std::net::IpAddr = authority.host().trim_matches(['[', ']']).parse().ok()?;
    if !ip.is_loopback() {
        return None;
    }
    let port = authority.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Some(format!("{}://localhost{port}{path}", rp.origin.scheme()))
}

/// The origin passkeys work at, when this request came to another one
/// (pages say so in words rather than leave the browser's refusal unexplained).
fn passkey_origin_elsewhere(parts: &Parts, app: &App) -> Option<String> {
    let rp = app.relying_party().ok()?;
    let authority: axum::http::uri::Authority = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse().ok())
        .or_else(|| parts.uri.authority().cloned())?;
    // Host names only: a proxy in front may change the scheme or the port.
    let wanted_host = rp.origin.host_str().unwrap_or(&rp.id);
    let same = authority.host().eq_ignore_ascii_case(wanted_host);
    (!same).then(|| rp.origin.origin().ascii_serialization())
}

/// Everything a page handler needs about the browser: cookies, who is signed
/// in, the CSRF token for its forms, and whether the connection is https.
pub struct Ctx {
    pub app: Arc<App>,
    pub jar: CookieJar,
    pub principal: Option<Principal>,
    pub csrf: String,
    pub secure: bool,
    pub peer: Option<String>,
    /// Path and query of this request (where to come back after signing in).
    pub here: String,
    /// Set when this page was opened at another origin than the one passkeys
    /// are registered for: that origin.
    pub passkey_origin: Option<String>,
}

impl FromRequestParts<Arc<App>> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let mut jar = CookieJar::from_headers(&parts.headers);
        let secure = proxy::is_https(parts, app);
        let nonce = match jar.get(CSRF_COOKIE).map(|c| c.value().to_owned()) {
            Some(n) if csrf::nonce_is_well_formed(&n) => n,
            _ => {
                let n = csrf::new_nonce();
                jar = jar.add(cookie(CSRF_COOKIE, n.clone(), secure));
                n
            }
        };
        let session_value = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned());
        let principal = match &session_value {
            Some(token) => match app.authenticate(token).await {
                Ok(p @ Principal::Session { .. }) => Some(p),
                _ => None,
            },
            None => None,
        };
        let csrf = csrf::token(app, &nonce, session_value.as_deref());
        let here = parts
            .extensions
            .get::<OriginalUri>()
            .map(|u| u.0.clone())
            .unwrap_or_else(|| parts.uri.clone());
        let passkey_origin = passkey_origin_elsewhere(parts, app);
        Ok(Ctx {
            passkey_origin,
            app: app.clone(),
            jar,
            principal,
            csrf,
            secure,
            peer: proxy::peer_ip(parts),
            here: here
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into()),
        })
    }
}

/// A cookie as every Latchkey cookie is: HttpOnly, SameSite=Lax, Path=/,
/// Secure on https, and gone when the browser closes.
pub fn cookie(name: &'static str, value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(secure)
        .build()
}

pub fn removal(name: &'static str) -> Cookie<'static> {
    Cookie::build((name, "")).path("/").build()
}

impl Ctx {
    /// The signed-in user, or a redirect to the sign-in page that comes back here.
    pub fn require_session(&self) -> Result<&Principal, Response> {
        match &self.principal {
            Some(p) => Ok(p),
            None => Err(Redirect::to(&signin_url(&self.here, false)).into_response()),
        }
    }

    /// The signed-in user holding `role` (any signed-in user for `None`);
    /// otherwise a redirect to sign in, or a 403 page.
    pub fn gate(self, role: Option<Role>) -> Result<(Ctx, Principal), Response> {
        let p = match self.require_session() {
            Ok(p) => p.clone(),
            Err(r) => return Err(r),
        };
        match role {
            Some(r) if !p.has_role(r) => Err(self.error_page(ServiceError::Forbidden(format!(
                "this page needs the {} role",
                layout::role_name(r).to_lowercase()
            )))),
            _ => Ok((self, p)),
        }
    }

    pub fn username(&self) -> Option<&str> {
        match &self.principal {
            Some(Principal::Session { user, .. }) => Some(&user.username),
            _ => None,
        }
    }

    /// Render a full page with this request's cookies.
    pub fn page(self, status: StatusCode, title: &str, section: layout::Section, body: Markup) -> Response {
        let html = layout::page(&self, title, section, body);
        (status, self.jar, html).into_response()
    }

    /// A page for an error that has no better place to be shown (see [`errors`]).
    pub fn error_page(self, err: ServiceError) -> Response {
        if let ServiceError::Internal(msg) = &err {
            tracing::error!(error = %msg, "internal error");
        }
        match errors::treatment(&err) {
            errors::Treatment::SignIn { fresh } => Redirect::to(&signin_url(&self.here, fresh)).into_response(),
            errors::Treatment::OwnPage { title, refusal } => {
                let body = maud::html! {
                    h1 { (title) }
                    p.notice.error role="alert" { (refusal.message) }
                    p { a href="/security-info" { "Back to your security info" } }
                };
                self.page(refusal.status, title, layout::Section::None, body)
            }
        }
    }
}

/// The answer to a page script's request (passkeys.js) that cannot go on: a
/// problem document in the page's words for `e` and, when signing in (again)
/// helps, where to go (the `Location` header).
pub fn json_refusal(e: ServiceError, message: &str, location: Option<String>) -> Response {
    let err = crate::error::ApiError::from(e);
    let (_, status, _) = err.slug_and_status();
    let mut p = err.problem();
    p.detail = message.to_owned();
    let mut resp = crate::error::problem_response(status, &p);
    if let Some(to) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LOCATION, to);
    }
    resp
}

/// `/signin?next=...` (with `prompt=login` for a fresh sign-in).
pub fn signin_url(next: &str, fresh: bool) -> String {
    let next = safe_next(Some(next)).unwrap_or("/security-info");
    let enc = percent_encode(next);
    if fresh {
        format!("/signin?prompt=login&next={enc}")
    } else {
        format!("/signin?next={enc}")
    }
}

/// Query-component encoding: RFC 3986 unreserved characters and "/" pass through.
pub fn percent_encode(s: &str) -> String {
    const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, QUERY).to_string()
}

/// Only same-origin relative paths: starting with one "/", no "//", no
/// backslash (browsers treat `/\evil` as `//evil`), no control characters.
pub fn safe_next(next: Option<&str>) -> Option<&str> {
    let n = next?;
    let ok = n.starts_with('/')
        && !n.starts_with("//")
        && !n.contains('\\')
        && !n.chars().any(|c| c.is_control() || c.is_whitespace())
        && n.len() <= 2000;
    ok.then_some(n)
}

pub fn parse_acr(s: Option<&str>) -> Option<AuthStrength> {
    match s? {
        "mfa" => Some(AuthStrength::Mfa),
        "passwordless_mfa" => Some(AuthStrength::PasswordlessMfa),
        "phishing_resistant" => Some(AuthStrength::PhishingResistant),
        _ => None,
    }
}

pub fn session_acr(p: &Principal) -> Option<AuthStrength> {
    match p {
        Principal::Session { session, .. } => parse_acr(Some(&session.acr)),
        _ => None,
    }
}

pub fn can(p: &Principal, role: Role) -> bool {
    p.has_role(role)
}

/// Unix seconds as "2026-01-31 14:05 UTC".
pub fn when(secs: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// "in 3 minutes" style wait for lock-out messages.
pub fn wait_text(secs: i64) -> String {
    let secs = secs.max(1);
    if secs < 90 {
        format!("{secs} seconds")
    } else if secs < 90 * 60 {
        format!("{} minutes", (secs + 59) / 60)
    } else {
        format!("{} hours", (secs + 3599) / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_a_local_path() {
        assert_eq!(safe_next(Some("/admin/users?x=1")), Some("/admin/users?x=1"));
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "",
            "/a b",
            "/x\n",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_next(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(safe_next(None), None);
    }

    #[test]
    fn signin_url_encodes_and_falls_back() {
        assert_eq!(
            signin_url("/admin?a=1&b=2", false),
            "/signin?next=/admin%3Fa%3D1%26b%3D2"
        );
        assert_eq!(signin_url("//evil", true), "/signin?prompt=login&next=/security-info");
    }

    #[test]
    fn acr_names_are_the_strength_names() {
        for s in [
            AuthStrength::Mfa,
            AuthStrength::PasswordlessMfa,
            AuthStrength::PhishingResistant,
        ] {
            assert_eq!(parse_acr(Some(s.as_str())), Some(s));
        }
        assert_eq!(parse_acr(Some("bogus")), None);
    }

    #[test]
    fn waits_read_naturally() {
        assert_eq!(wait_text(30), "30 seconds");
        assert_eq!(wait_text(600), "10 minutes");
        assert_eq!(wait_text(7200), "2 hours");
    }
}
