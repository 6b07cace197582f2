//! CSRF protection for every form: a signed double-submit token.
//!
//! The browser holds a random nonce in the HttpOnly cookie `lk_csrf`; forms
//! carry `csrf = HMAC(pepper, "web csrf v1" || nonce || session cookie)`.
//! Another site can make the browser send the cookies but can neither read
//! them nor compute the token, and a token minted for one session does not
//! work for another. [`guard`] checks every POST before a handler runs, so a
//! new form cannot forget it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use latchkey_core::secret::ct_eq;
use rand::RngCore;

use super::{CSRF_COOKIE, SESSION_COOKIE};
use latchkey_service::app::App;

pub const FIELD: &str = "csrf";

pub fn new_nonce() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    data_encoding::BASE64URL_NOPAD.encode(&b)
}

pub fn nonce_is_well_formed(n: &str) -> bool {
    n.len() == 43 && n.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

pub fn token(app: &App, nonce: &str, session_cookie: Option<&str>) -> String {
    let bound = format!("{nonce}\0{}", session_cookie.unwrap_or(""));
    app.keyed_hash("web csrf v1", &bound)
}

#[derive(serde::Deserialize)]
struct CsrfField {
    csrf: Option<String>,
}

fn refused(why: &str) -> Response {
    tracing::info!(why, "form refused by CSRF check");
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Form refused · Latchkey</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"stylesheet\" href=\"/static/latchkey.css\"></head><body><main id=\"main\" class=\"narrow\">\
         <h1>This form was refused</h1><p class=\"notice error\" role=\"alert\">{why}</p>\
         <p><a href=\"/security-info\">Go back and try again</a></p></main></body></html>"
    );
    (StatusCode::FORBIDDEN, Html(html)).into_response()
}

/// Refuse any POST whose form lacks a valid token for this browser's cookies.
pub async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    // Browsers say when a request comes from another site; no need to look further.
    if req
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return refused("The form was sent from another site.");
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, crate::MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, Html("The form is too large.")).into_response(),
    };
    let jar = CookieJar::from_headers(&parts.headers);
    let nonce = jar.get(CSRF_COOKIE).map(|c| c.value().to_owned());
    let session = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned());
    let mut probe = Request::new(Body::from(bytes.clone()));
    *probe.method_mut() = Method::POST;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        probe.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    let sent = axum::Form::<CsrfField>::from_request(probe, &())
        .await
        .ok()
        .and_then(|f| f.0.csrf);
    let ok = match (nonce, sent) {
        (Some(n), Some(t)) if nonce_is_well_formed(&n) => ct_eq(&token(&app, &n, session.as_deref()), &t),
        _ => false,
    };
    if !ok {
        return refused(
            "The form's security token was missing or did not match (it may be from an older page). \
             Reload the page and send the form again.",
        );
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}
