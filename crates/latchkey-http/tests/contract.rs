//! The HTTP contract at the edges: hostile or sloppy input always gets a 4xx
//! problem document (never a 5xx, never the framework's plain text), and
//! `/openapi.json` describes every route and nothing that would switch MFA off.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::{Harness, PASSWORD};
use serde_json::{json, Value};

fn req(
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, t);
    }
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(body.into()).unwrap()
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn bad_input_gets_a_4xx_problem_document_never_a_5xx() {
    let h = Harness::sqlite().await;
    h.user_with_totp("alice", &[]).await;
    h.advance(30);
    let r = h.start_with_password("alice", PASSWORD).await;
    r.expect(StatusCode::OK);
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    let verify = format!("/api/v1/signin/{flow}/verify");
    let admin = format!("Bearer {}", h.admin);
    let admin = Some(admin.as_str());
    let big = format!(r#"{{"username":"alice","password":"{}"}}"#, "x".repeat(70 * 1024));

    // (case, request, status, problem slug)
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            req(Method::POST, "/api/v1/signin", None, JSON, r#"{"username": "alice""#),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "empty JSON body",
            req(Method::POST, "/api/v1/signin", None, JSON, ""),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "body is not UTF-8",
            req(Method::POST, "/api/v1/signin", None, JSON, vec![0xff, 0xfe, 0x7b]),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "unknown field",
            req(
                Method::POST,
                "/api/v1/signin",
                None,
                JSON,
                r#"{"username":"alice","skip_mfa":true}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
        ),
        (
            "JSON array instead of object",
            req(Method::POST, "/api/v1/signin", None, JSON, "[]"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
        ),
        (
            "wrong field type",
            req(Method::POST, "/api/v1/signin", None, JSON, r#"{"username":5}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
        ),
        (
            "wrong content type",
            req(
                Method::POST,
                "/api/v1/signin",
                None,
                Some("text/plain"),
                r#"{"username":"alice"}"#,
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid-request",
        ),
        (
            "no content type",
            req(Method::POST, "/api/v1/signin", None, None, r#"{"username":"alice"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid-request",
        ),
        (
            "70 KiB JSON body",
            req(Method::POST, "/api/v1/signin", None, JSON, big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
        ),
        (
            "70 KiB body to an optional-body endpoint",
            req(
                Method::POST,
                "/api/v1/users/alice/methods/totp",
                admin,
                JSON,
                big.clone(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
        ),
        (
            "invalid username at sign-in",
            req(
                Method::POST,
                "/api/v1/signin",
                None,
                JSON,
                r#"{"username":"Bad User!","password":"x"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "invalid username on create",
            req(
                Method::POST,
                "/api/v1/users",
                admin,
                JSON,
                r#"{"username":"Bad User!","display_name":"B"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "invalid username in the path",
            req(Method::GET, "/api/v1/users/Bad%20User!", admin, None, Body::empty()),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "path segment that is not UTF-8",
            req(Method::GET, "/api/v1/users/%FF%FE", admin, None, Body::empty()),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "code with letters",
            req(
                Method::POST,
                &verify,
                None,
                JSON,
                r#"{"method":"totp","code":"12ab56"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "code too long",
            req(
                Method::POST,
                &verify,
                None,
                JSON,
                r#"{"method":"totp","code":"1234567"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "TOTP without a code",
            req(Method::POST, &verify, None, JSON, r#"{"method":"totp"}"#),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "unknown verify method",
            req(
                Method::POST,
                &verify,
                None,
                JSON,
                r#"{"method":"carrier_pigeon","code":"123456"}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
        ),
        (
            "method not offered by this server",
            req(Method::POST, &verify, None, JSON, r#"{"method":"webauthn"}"#),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "garbage flow id",
            req(
                Method::POST,
                "/api/v1/signin/garbage/verify",
                None,
                JSON,
                r#"{"method":"totp","code":"123456"}"#,
            ),
            StatusCode::NOT_FOUND,
            "flow-not-found",
        ),
        (
            "well-formed unknown flow id",
            req(
                Method::POST,
                "/api/v1/signin/lk_f_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/verify",
                None,
                JSON,
                r#"{"method":"totp","code":"123456"}"#,
            ),
            StatusCode::NOT_FOUND,
            "flow-not-found",
        ),
        (
            "huge flow id",
            req(
                Method::POST,
                &format!("/api/v1/signin/lk_f_{}/verify", "a".repeat(5000)),
                None,
                JSON,
                r#"{"method":"totp","code":"123456"}"#,
            ),
            StatusCode::NOT_FOUND,
            "flow-not-found",
        ),
        (
            "unknown route",
            req(Method::GET, "/api/v1/nope", None, None, Body::empty()),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "unknown API version",
            req(Method::GET, "/api/v2/users", admin, None, Body::empty()),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "wrong HTTP method",
            req(Method::DELETE, "/api/v1/signin", None, None, Body::empty()),
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid-request",
        ),
        (
            "PATCH is not a thing here",
            req(Method::PATCH, "/api/v1/users", admin, JSON, "{}"),
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid-request",
        ),
        (
            "no credentials",
            req(Method::GET, "/api/v1/users", None, None, Body::empty()),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "unknown API token",
            req(
                Method::GET,
                "/api/v1/users",
                Some("Bearer lk_at_doesnotexist"),
                None,
                Body::empty(),
            ),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "Basic auth",
            req(
                Method::GET,
                "/api/v1/users",
                Some("Basic YWRtaW46YWRtaW4="),
                None,
                Body::empty(),
            ),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "oversized bearer",
            req(
                Method::GET,
                "/api/v1/users",
                Some(&format!("Bearer lk_s_{}", "a".repeat(10_000))),
                None,
                Body::empty(),
            ),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "unknown user",
            req(Method::GET, "/api/v1/users/ghost", admin, None, Body::empty()),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "duplicate user",
            req(
                Method::POST,
                "/api/v1/users",
                admin,
                JSON,
                r#"{"username":"alice","display_name":"Again"}"#,
            ),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            "unknown role",
            req(
                Method::POST,
                "/api/v1/users",
                admin,
                JSON,
                r#"{"username":"zed","display_name":"Z","roles":["god"]}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "blank display name",
            req(
                Method::POST,
                "/api/v1/users",
                admin,
                JSON,
                r#"{"username":"zed","display_name":"   "}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "weak password",
            req(
                Method::PUT,
                "/api/v1/users/alice/password",
                admin,
                JSON,
                r#"{"password":"short"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "weak-password",
        ),
        (
            "TOTP with 12 digits",
            req(
                Method::POST,
                "/api/v1/users/alice/methods/totp",
                admin,
                JSON,
                r#"{"digits":12}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "TOTP with an unknown algorithm",
            req(
                Method::POST,
                "/api/v1/users/alice/methods/totp",
                admin,
                JSON,
                r#"{"algorithm":"MD5"}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "TOTP enrolment body that is not JSON",
            req(
                Method::POST,
                "/api/v1/users/alice/methods/totp",
                admin,
                JSON,
                "label=phone",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
        ),
        (
            "confirming an unknown method",
            req(
                Method::POST,
                "/api/v1/users/alice/methods/totp/nope/confirm",
                admin,
                JSON,
                r#"{"code":"123456"}"#,
            ),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "deleting an unknown method",
            req(
                Method::DELETE,
                "/api/v1/users/alice/methods/nope",
                admin,
                None,
                Body::empty(),
            ),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "TAP lifetime as a string",
            req(
                Method::POST,
                "/api/v1/users/alice/temporary-access-passes",
                admin,
                JSON,
                r#"{"lifetime_minutes":"sixty","verification":{"method":"callback","note":"n"}}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
        ),
        (
            "TAP lifetime overflowing i64",
            req(
                Method::POST,
                "/api/v1/users/alice/temporary-access-passes",
                admin,
                JSON,
                r#"{"lifetime_minutes":99999999999999999999,"verification":{"method":"callback","note":"n"}}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
        ),
        (
            "TAP delay at i64::MAX minutes",
            req(
                Method::POST,
                "/api/v1/users/alice/temporary-access-passes",
                admin,
                JSON,
                r#"{"starts_in_minutes":9223372036854775807,"verification":{"method":"callback","note":"n"}}"#,
            ),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "audit cursor that is not a number",
            req(Method::GET, "/api/v1/audit?after=abc", admin, None, Body::empty()),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "unknown audit query parameter",
            req(Method::GET, "/api/v1/audit?drop=table", admin, None, Body::empty()),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "API token name empty",
            req(Method::POST, "/api/v1/api-tokens", admin, JSON, r#"{"name":"  "}"#),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "revoking an unknown API token",
            req(Method::DELETE, "/api/v1/api-tokens/nope", admin, None, Body::empty()),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
    ];

    let mut failures = Vec::new();
    for (case, request, status, slug) in cases {
        let r = h.send(request).await;
        let ct = r
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let problem_type = r.json["type"].as_str().unwrap_or("").to_owned();
        let ok = r.status.is_client_error()
            && r.status == status
            && ct.starts_with("application/problem+json")
            && problem_type == format!("urn:latchkey:problem:{slug}")
            && r.json["status"].as_u64() == Some(r.status.as_u16() as u64)
            && r.json["detail"].is_string()
            && r.headers.get(header::CACHE_CONTROL).is_some_and(|v| v == "no-store")
            && r.headers
                .get(header::X_CONTENT_TYPE_OPTIONS)
                .is_some_and(|v| v == "nosniff");
        if !ok {
            failures.push(format!(
                "{case}: expected {status} {slug}, got {} content-type {ct:?}: {}",
                r.status,
                r.text().chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Nothing above broke the server's state.
    let r = h.get("/api/v1/audit/verify", Some(&h.admin)).await;
    assert_eq!(r.json["ok"], true);
    h.get("/readyz", None).await.expect(StatusCode::OK);
}

// ---- OpenAPI ---------------------------------------------------------------------

/// Every route `api::routes()` mounts (besides `/openapi.json` itself), with
/// its methods. Keep in step with `crates/latchkey-http/src/api/`.
const ROUTES: &[(&str, &[&str])] = &[
    ("/api/v1/users", &["post", "get"]),
    ("/api/v1/users/{username}", &["get", "patch", "delete"]),
    ("/api/v1/users/{username}/disable", &["post"]),
    ("/api/v1/users/{username}/enable", &["post"]),
    ("/api/v1/users/{username}/password", &["put"]),
    ("/api/v1/users/{username}/lockout", &["delete"]),
    ("/api/v1/users/{username}/notifications", &["get"]),
    ("/api/v1/users/{username}/methods", &["get"]),
    ("/api/v1/users/{username}/methods/totp", &["post"]),
    ("/api/v1/users/{username}/methods/totp/{id}/confirm", &["post"]),
    ("/api/v1/users/{username}/methods/totp/{id}/qr.svg", &["get"]),
    ("/api/v1/users/{username}/methods/recovery-codes", &["post"]),
    ("/api/v1/users/{username}/methods/{id}", &["delete"]),
    ("/api/v1/users/{username}/temporary-access-passes", &["post"]),
    ("/api/v1/signin", &["post"]),
    ("/api/v1/signin/{flow_id}/verify", &["post"]),
    ("/api/v1/session", &["get", "delete"]),
    ("/api/v1/api-tokens", &["post", "get"]),
    ("/api/v1/api-tokens/{id}", &["delete"]),
    ("/api/v1/audit", &["get"]),
    ("/api/v1/audit/verify", &["get"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    // recovery (issue 6)
    ("/api/v1/tap-requests", &["get"]),
    ("/api/v1/tap-requests/{id}/approve", &["post"]),
    ("/api/v1/tap-requests/{id}/issue", &["post"]),
    ("/api/v1/change-requests", &["get"]),
    ("/api/v1/change-requests/{id}/approve", &["post"]),
    ("/api/v1/helpdesk/cases", &["post", "get"]),
    ("/api/v1/helpdesk/cases/{id}", &["get"]),
    ("/api/v1/helpdesk/cases/{id}/steps", &["post"]),
    ("/api/v1/helpdesk/cases/{id}/skip", &["post"]),
    ("/api/v1/helpdesk/cases/{id}/cancel", &["post"]),
    ("/api/v1/users/{username}/devices", &["post", "get"]),
    ("/api/v1/users/{username}/methods/{id}/device", &["put"]),
    ("/api/v1/devices/{id}/compliance", &["put"]),
    ("/api/v1/devices/{id}/lost", &["post"]),
    ("/api/v1/devices/{id}/retire", &["post"]),
];

const HTTP_METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// Words that would name a way around MFA.
/// Operations that disable a whole account, not a factor.
const ACCOUNT_DISABLE: &[&str] = &["/api/v1/users/{username}/disable"];

const FORBIDDEN_WORDS: &[&str] = &[
    "disable",
    "bypass",
    // Skipping a runbook step (with a reason) is fine; skipping MFA is not.
    "skip-mfa",
    "skip_mfa",
    "skip-second",
    "mfa-off",
    "mfa_off",
    "turn-off",
    "without-mfa",
];

#[tokio::test]
async fn openapi_describes_every_route_and_no_way_around_mfa() {
    let h = Harness::sqlite().await;
    let r = h.get("/openapi.json", None).await;
    r.expect(StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = serde_json::from_slice(&r.body).expect("/openapi.json is JSON");
    let version = doc["openapi"].as_str().unwrap_or("");
    assert!(version.starts_with("3.1."), "openapi version {version:?}");
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().expect("paths");

    for (path, methods) in ROUTES {
        let item = paths.get(*path).unwrap_or_else(|| panic!("/openapi.json lacks {path}"));
        for m in *methods {
            assert!(
                item.get(*m).is_some(),
                "/openapi.json lacks {} {path}",
                m.to_uppercase()
            );
        }
    }
    // Nothing documented that isn't routed: every documented operation,
    // with its path parameters filled in, reaches a handler (anything but
    // the router's own "route not found" / "method not allowed").
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for m in HTTP_METHODS.iter().copied().filter(|m| item.get(*m).is_some()) {
            let method = axum::http::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let body = if matches!(m, "post" | "put") {
                Some(json!({}))
            } else {
                None
            };
            let r = h.call(method, &concrete, None, body).await;
            let unrouted = r.status == StatusCode::METHOD_NOT_ALLOWED
                || (r.status == StatusCode::NOT_FOUND && r.text().contains("route not found"));
            assert!(
                !unrouted,
                "{} {path} is documented but not routed ({})",
                m.to_uppercase(),
                r.status
            );
        }
    }

    // No path, operation id, summary or tag names a way to turn MFA off.
    for (path, item) in paths {
        let mut names = vec![path.to_lowercase()];
        for m in HTTP_METHODS {
            if let Some(op) = item.get(*m) {
                for key in ["operationId", "summary"] {
                    if let Some(v) = op[key].as_str() {
                        names.push(v.to_lowercase());
                    }
                }
                if let Some(tags) = op["tags"].as_array() {
                    names.extend(tags.iter().filter_map(|t| t.as_str()).map(str::to_lowercase));
                }
            }
        }
        for name in names {
            for w in FORBIDDEN_WORDS {
                // Disabling an *account* takes access away (a leaver); that
                // is the one operation allowed to say "disable".
                if *w == "disable" && ACCOUNT_DISABLE.contains(&path.as_str()) {
                    continue;
                }
                assert!(!name.contains(w), "{path}: '{name}' suggests turning MFA off ('{w}')");
            }
        }
    }
    // Nor does any request schema offer such a switch.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for (name, schema) in schemas {
        if let Some(props) = schema["properties"].as_object() {
            for prop in props.keys() {
                let p = prop.to_lowercase();
                for w in FORBIDDEN_WORDS {
                    assert!(!p.contains(w), "schema {name} has property '{prop}'");
                }
            }
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn every_documented_route_is_mounted() {
    let h = Harness::sqlite().await;
    for (path, methods) in ROUTES {
        let concrete = path
            .replace("{username}", "alice")
            .replace("{id}", "x")
            .replace("{flow_id}", "lk_f_x");
        for m in *methods {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let body = if matches!(*m, "post" | "put") {
                Some(json!({}))
            } else {
                None
            };
            let r = h.call(method, &concrete, None, body).await;
            let route_missing = r.status == StatusCode::NOT_FOUND && r.json["detail"] == "route not found";
            assert!(!route_missing, "{} {concrete} is not routed", m.to_uppercase());
            assert!(r.status.as_u16() < 500, "{} {concrete}: {}", m.to_uppercase(), r.status);
        }
    }
}
