//! The web UI driven in-process like a browser: cookies carried between
//! requests, CSRF tokens read from the forms, a ManualClock for freshness.

use latchkey_http::WebConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use latchkey_core::otp::{self, TotpParams};
use latchkey_core::password::PasswordParams;
use latchkey_core::tap::{IdentityVerification, VerificationMethod};
use latchkey_service::app::{App, Config, Principal};
use latchkey_service::clock::{Clock, ManualClock};
use latchkey_store::{Keys, Store};
use tower::ServiceExt;

const T0: i64 = 1_790_000_000;
const PW: &str = "correct horse battery staple";

async fn app_with(edit: impl FnOnce(&mut Config)) -> (Arc<App>, Arc<ManualClock>) {
    let dir = tempfile_dir("test");
    let store = Store::open_sqlite(&dir).await.unwrap();
    let mut config = Config {
        password: PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        ..Config::default()
    };
    edit(&mut config);
    let clock = Arc::new(ManualClock::new(T0));
    let app = App::new(store, Keys::from_master(&[9u8; 32]), config, clock.clone()).unwrap();
    (Arc::new(app), clock)
}

/// A tiny browser: a cookie jar and the last page's CSRF token.
struct Browser {
    router: Router,
    cookies: BTreeMap<String, String>,
    csrf: Option<String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with(&format!("{name}=")))
    }
}

impl Browser {
    fn new(app: &Arc<App>, peer: &str) -> Self {
        Self::with_web(app, peer, WebConfig::default())
    }

    fn with_web(app: &Arc<App>, peer: &str, web: WebConfig) -> Self {
        let peer: SocketAddr = format!("{peer}:40000").parse().unwrap();
        Browser {
            router: latchkey_http::router(app.clone(), web).layer(MockConnectInfo(peer)),
            cookies: BTreeMap::new(),
            csrf: None,
        }
    }

    async fn send(&mut self, req: Request<Body>) -> Page {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
        for c in headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        if let Some(i) = body.find("name=\"csrf\" value=\"") {
            let rest = &body[i + 19..];
            self.csrf = Some(rest[..rest.find('"').unwrap()].to_owned());
        }
        Page { status, headers, body }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> Page {
        self.get_with(path, &[]).await
    }

    async fn get_with(&mut self, path: &str, extra: &[(&str, &str)]) -> Page {
        let mut b = Request::get(path).header(header::COOKIE, self.cookie_header());
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    /// POST a form with the current CSRF token.
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let token = self.csrf.clone().expect("a page with a form was loaded first");
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.push(("csrf", &token));
        self.post_raw(path, &fields, &[]).await
    }

    async fn post_raw(&mut self, path: &str, form: &[(&str, &str)], extra: &[(&str, &str)]) -> Page {
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", latchkey_http::web::percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut b = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, self.cookie_header());
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::from(body)).unwrap()).await
    }

    /// Username, then one proof per step; returns the final response.
    async fn sign_in(&mut self, next: &str, username: &str, steps: &[(&str, &str, &str)]) -> Page {
        self.get(&format!("/signin?next={next}")).await;
        let mut page = self.post("/signin", &[("username", username), ("next", next)]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        for (method, field, value) in steps {
            self.get(&format!("/signin/continue?next={next}&method={method}")).await;
            page = self
                .post("/signin/verify", &[("method", method), (field, value), ("next", next)])
                .await;
        }
        page
    }
}

fn verification() -> Option<IdentityVerification> {
    Some(IdentityVerification {
        method: VerificationMethod::InPersonId,
        note: "badge checked at the desk".into(),
    })
}

/// A user with a password and a confirmed authenticator app; returns its secret and method id.
async fn user_with_totp(app: &App, clock: &ManualClock, name: &str) -> (Vec<u8>, String) {
    let op = Principal::Operator;
    app.create_user(&op, name, "Test User", None, vec![], vec![])
        .await
        .unwrap();
    app.set_password(&op, name, PW, None).await.unwrap();
    let e = app.enroll_totp(&op, name, None, None, None, None).await.unwrap();
    let secret = otp::decode_secret(&e.secret_base32).unwrap();
    let code = otp::totp_at(&secret, clock.now() as u64, &TotpParams::default());
    app.confirm_totp(&op, name, &e.method.id, &code).await.unwrap();
    (secret, e.method.id)
}

fn code_at(secret: &[u8], secs: i64) -> String {
    otp::totp_at(secret, secs as u64, &TotpParams::default())
}

#[tokio::test]
async fn pages_carry_strict_headers_and_an_httponly_csrf_cookie() {
    let (app, _) = app_with(|_| {}).await;
    let mut b = Browser::new(&app, "127.0.0.1");
    let p = b.get("/signin").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(p.headers[header::CONTENT_SECURITY_POLICY], latchkey_http::web::CSP);
    assert_eq!(p.headers[header::X_FRAME_OPTIONS], "DENY");
    let c = p.set_cookie("lk_csrf").expect("csrf cookie");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"),
        "{c}"
    );
    assert!(!c.contains("Secure"), "plain http on loopback: {c}");
    assert!(p.body.contains("name=\"csrf\""));
    // Static assets are ours, cacheable, and typed.
    let css = b.get("/static/latchkey.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}

#[tokio::test]
async fn form_posts_without_a_valid_token_are_refused() {
    let (app, _) = app_with(|_| {}).await;
    let mut b = Browser::new(&app, "127.0.0.1");
    b.get("/signin").await;
    let none = b.post_raw("/signin", &[("username", "admin")], &[]).await;
    assert_eq!(none.status, StatusCode::FORBIDDEN);
    assert!(none.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let wrong = b
        .post_raw("/signin", &[("username", "admin"), ("csrf", &"0".repeat(64))], &[])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let token = b.csrf.clone().unwrap();
    let cross = b
        .post_raw(
            "/signin",
            &[("username", "admin"), ("csrf", &token)],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    // Another browser's token does not fit this browser's cookie.
    let mut other = Browser::new(&app, "127.0.0.1");
    other.get("/signin").await;
    let foreign = other
        .post_raw("/signin", &[("username", "admin"), ("csrf", &token)], &[])
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let ok = b.post("/signin", &[("username", "admin")]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_pass_signs_in_sets_the_session_cookie_and_goes_to_next() {
    let (app, _) = app_with(|_| {}).await;
    let boot = app.bootstrap_if_empty().await.unwrap().unwrap();
    let mut b = Browser::new(&app, "127.0.0.1");
    b.get("/signin").await;
    let stale_token = b.csrf.clone().unwrap();
    let done = b
        .sign_in(
            "/admin/users",
            "admin",
            &[("temporary_access_pass", "pass", &boot.pass)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/admin/users");
    let c = done.set_cookie("lk_session").expect("session cookie");
    assert!(c.starts_with("lk_session=lk_s_"), "{c}");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"),
        "{c}"
    );
    assert!(!c.contains("Secure"));
    let users = b.get("/admin/users").await;
    assert_eq!(users.status, StatusCode::OK);
    assert!(users.body.contains("First administrator"));
    // A token minted before sign-in is bound to the old (absent) session.
    let refused = b.post_raw("/signout", &[("csrf", &stale_token)], &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // The same single-use pass does not work twice.
    let mut again = Browser::new(&app, "127.0.0.1");
    let p = again
        .sign_in("/", "admin", &[("temporary_access_pass", "pass", &boot.pass)])
        .await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("not valid, has expired or was already used"));
    // Sign-out is a CSRF-checked POST that revokes the session.
    let out = b.post("/signout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(!b.cookies.contains_key("lk_session"));
    let gone = b.get("/admin/users").await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER);
    assert_eq!(gone.location(), "/signin?next=/admin/users");
}

#[tokio::test]
async fn cookies_are_secure_behind_https() {
    let (app, _) = app_with(|c| c.public_url = "https://mfa.example.org".into()).await;
    let mut b = Browser::new(&app, "127.0.0.1");
    let c = b.get("/signin").await.set_cookie("lk_csrf").unwrap();
    assert!(c.contains("Secure"), "{c}");
}

#[tokio::test]
async fn next_only_accepts_local_paths() {
    let (app, _) = app_with(|_| {}).await;
    let boot = app.bootstrap_if_empty().await.unwrap().unwrap();
    let mut b = Browser::new(&app, "127.0.0.1");
    let done = b
        .sign_in(
            "%2F%2Fevil.example%2F",
            "admin",
            &[("temporary_access_pass", "pass", &boot.pass)],
        )
        .await;
    assert_eq!(done.location(), "/security-info");
    for evil in ["//evil.example/", "/%5Cevil.example", "https://evil.example/"] {
        let p = b.get(&format!("/signin?next={evil}")).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{evil}");
        assert_eq!(p.location(), "/security-info", "{evil}");
    }
    // prompt=login shows the sign-in form even with a valid session.
    let fresh = b.get("/signin?prompt=login&next=/admin/users").await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert!(fresh.body.contains("confirm it") && fresh.body.contains("value=\"admin\""));
}

#[tokio::test]
async fn password_and_totp_with_clear_errors_then_fresh_sign_in_to_remove() {
    let (app, clock) = app_with(|_| {}).await;
    let (secret, totp_id) = user_with_totp(&app, &clock, "bob").await;
    let mut b = Browser::new(&app, "127.0.0.1");

    let wrong_pw = b
        .sign_in("/security-info", "bob", &[("password", "password", "nope nope nope")])
        .await;
    assert_eq!(wrong_pw.status, StatusCode::UNAUTHORIZED);
    assert!(wrong_pw.body.contains("username or password is not right"));

    b.post(
        "/signin/verify",
        &[("method", "password"), ("password", PW), ("next", "/security-info")],
    )
    .await;
    let step = b.get("/signin/continue?next=/security-info").await;
    assert!(
        step.body.contains("Enter the code from your authenticator app"),
        "{}",
        step.body
    );
    assert!(step.body.contains("I lost my device"));
    let bad = b
        .post(
            "/signin/verify",
            &[("method", "totp"), ("code", "12345"), ("next", "/security-info")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "malformed code is explained");
    clock.advance(30);
    let wrong_code = {
        let good = code_at(&secret, clock.now());
        if good == "000000" {
            "111111"
        } else {
            "000000"
        }
    };
    let bad = b
        .post(
            "/signin/verify",
            &[("method", "totp"), ("code", wrong_code), ("next", "/security-info")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.body.contains("That code is not right"));
    assert!(bad.body.contains("aria-invalid=\"true\""));
    let ok = b
        .post(
            "/signin/verify",
            &[
                ("method", "totp"),
                ("code", &code_at(&secret, clock.now())),
                ("next", "/security-info"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location(), "/security-info");

    let info = b.get("/security-info").await;
    assert!(info.body.contains("Authenticator app"));
    // The last second factor cannot be removed, even with a fresh sign-in.
    let last = b.post(&format!("/security-info/methods/{totp_id}/delete"), &[]).await;
    assert_eq!(last.status, StatusCode::CONFLICT);
    assert!(last.body.contains("last second sign-in method"));

    // Add recovery codes, let the sign-in go stale: removal needs a fresh sign-in.
    let made = b.post("/security-info/recovery-codes", &[]).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER);
    let codes = b.get(made.location()).await;
    assert_eq!(codes.status, StatusCode::OK);
    assert!(codes.body.contains("download=\"latchkey-recovery-codes.txt\""));
    b.get("/security-info").await;
    clock.advance(11 * 60);
    b.get("/security-info").await;
    let stale = b.post(&format!("/security-info/methods/{totp_id}/delete"), &[]).await;
    assert_eq!(stale.status, StatusCode::SEE_OTHER);
    assert_eq!(stale.location(), "/signin?prompt=login&next=/security-info");
    let (_, methods) = app.methods(&Principal::Operator, "bob").await.unwrap();
    assert!(methods.iter().any(|m| m.id == totp_id), "nothing removed");
}

#[tokio::test]
async fn lockouts_say_when_to_try_again() {
    let (app, clock) = app_with(|_| {}).await;
    user_with_totp(&app, &clock, "carol").await;
    let mut b = Browser::new(&app, "127.0.0.1");
    b.sign_in("/", "carol", &[]).await;
    let mut last = None;
    for _ in 0..10 {
        b.get("/signin/continue?next=/").await;
        let p = b
            .post(
                "/signin/verify",
                &[("method", "password"), ("password", "wrong wrong wrong")],
            )
            .await;
        if p.status == StatusCode::TOO_MANY_REQUESTS {
            last = Some(p);
            break;
        }
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    }
    let p = last.expect("locked after repeated failures");
    assert!(p.body.contains("try again in"), "{}", p.body);
}

#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    let (app, clock) = app_with(|_| {}).await;
    user_with_totp(&app, &clock, "dave").await;
    let via_proxy = [
        ("x-forwarded-for", "198.51.100.1, 203.0.113.9"),
        ("x-forwarded-proto", "https"),
    ];

    // One failed password through the proxy header set, from a given peer;
    // answers whether the cookies were marked Secure.
    async fn fail_via(app: &Arc<App>, peer: &str, headers: &[(&str, &str)]) -> bool {
        let web = WebConfig {
            trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        let mut b = Browser::with_web(app, peer, web);
        let secure = b
            .get_with("/signin", headers)
            .await
            .set_cookie("lk_csrf")
            .unwrap()
            .contains("Secure");
        b.post("/signin", &[("username", "dave")]).await;
        b.get("/signin/continue").await;
        let token = b.csrf.clone().unwrap();
        let form = [
            ("method", "password"),
            ("password", "wrong wrong wrong"),
            ("csrf", token.as_str()),
        ];
        b.post_raw("/signin/verify", &form, headers).await;
        secure
    }
    assert!(
        fail_via(&app, "127.0.0.1", &via_proxy).await,
        "trusted proxy said https"
    );
    assert!(!fail_via(&app, "192.0.2.50", &via_proxy).await, "untrusted peer");

    let hist = app.signin_history(&Principal::Operator, "dave", 10).await.unwrap();
    let ips: Vec<_> = hist.iter().filter_map(|h| h.source_ip.clone()).collect();
    assert_eq!(ips, vec!["192.0.2.50".to_owned(), "203.0.113.9".to_owned()]);
}

#[tokio::test]
async fn consoles_need_their_roles() {
    let (app, _) = app_with(|_| {}).await;
    let op = Principal::Operator;
    app.create_user(&op, "erin", "Erin", None, vec![], vec![])
        .await
        .unwrap();
    let tap = app
        .issue_tap(&op, "erin", Some(60), true, None, verification())
        .await
        .unwrap();
    let latchkey_service::app::TapOutcome::Issued(tap) = tap else {
        panic!("pass pending approval")
    };
    let mut anon = Browser::new(&app, "127.0.0.1");
    let p = anon.get("/helpdesk").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/signin?next=/helpdesk");

    let mut b = Browser::new(&app, "127.0.0.1");
    let done = b
        .sign_in(
            "/security-info",
            "erin",
            &[("temporary_access_pass", "pass", &tap.pass)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    for path in [
        "/admin/users",
        "/admin/tokens",
        "/admin/audit",
        "/helpdesk",
        "/helpdesk/users/erin",
    ] {
        assert_eq!(b.get(path).await.status, StatusCode::FORBIDDEN, "{path}");
    }
    let info = b.get("/security-info").await;
    assert_eq!(info.status, StatusCode::OK);
    assert!(info.body.contains("Temporary Access Pass"));
    assert!(
        !info.body.contains("href=\"/admin/users\""),
        "no admin link for a plain user"
    );
    let create = b
        .post("/admin/users", &[("username", "x"), ("display_name", "X")])
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);
}

#[test]
fn web_pages_are_not_in_the_openapi_document() {
    let doc: serde_json::Value = serde_json::from_str(&latchkey_http::api::openapi_json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.keys().all(|p| !p.starts_with("/signin")
        && !p.starts_with("/security-info")
        && !p.starts_with("/admin")
        && !p.starts_with("/helpdesk")));
}

#[tokio::test]
async fn a_nudging_rollout_wave_tells_the_user_what_to_register_and_by_when() {
    use latchkey_core::rollout::{RolloutWave, WaveAudience};
    let (app, clock) = app_with(|_| {}).await;
    let (secret, _) = user_with_totp(&app, &clock, "nia").await;
    let deadline = T0 + 14 * 86_400;
    let wave = RolloutWave {
        id: "pilot".into(),
        name: "Pilot group".into(),
        position: 1,
        audience: WaveAudience {
            users: vec!["nia".into()],
            ..Default::default()
        },
        strength: "phishing_resistant".into(),
        nudge_from: T0,
        enforce_from: deadline,
    };
    app.put_wave(&Principal::Operator, wave).await.unwrap();
    clock.advance(30);
    let mut b = Browser::new(&app, "127.0.0.1");
    let code = code_at(&secret, clock.now());
    let done = b
        .sign_in(
            "/security-info",
            "nia",
            &[("password", "password", PW), ("totp", "code", &code)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/signin/campaign?next=/security-info");
    let page = b.get(done.location()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Pilot group"), "{}", page.body);
    assert!(page.body.contains("a security key or passkey"), "{}", page.body);
    assert!(page.body.contains(&latchkey_test_when(deadline)), "{}", page.body);
    assert!(
        page.body.contains("in 14 days") || page.body.contains("hours"),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"href="/security-info""#));

    // Once the deadline passes the wave is enforced: no nudge, the policy decides.
    clock.set(deadline + 1);
    let page = b.get("/signin/campaign?next=/security-info").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/security-info");
}

fn latchkey_test_when(secs: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&fmt)
        .unwrap()
}

#[tokio::test]
async fn a_phone_is_added_from_security_info_as_a_labelled_backup() {
    use latchkey_service::sms::{GatewayConfig, OutboxGateway};
    let outbox = std::env::temp_dir().join(format!("lk-web-outbox-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&outbox);
    let path = outbox.clone();
    let (app, clock) = app_with(move |c| c.sms.gateway = GatewayConfig::Outbox(OutboxGateway { path })).await;
    let (secret, _) = user_with_totp(&app, &clock, "pia").await;
    clock.advance(30);
    let mut b = Browser::new(&app, "127.0.0.1");
    let code = code_at(&secret, clock.now());
    b.sign_in(
        "/security-info",
        "pia",
        &[("password", "password", PW), ("totp", "code", &code)],
    )
    .await;
    let info = b.get("/security-info").await;
    assert!(
        info.body.contains("Phone (backup)") && info.body.contains("weakest method"),
        "{}",
        info.body
    );

    let page = b
        .post(
            "/security-info/phone",
            &[("phone", "+44 20 7946 0018"), ("kind", "sms")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("+4•••••••••18"), "masked: {}", page.body);
    assert!(!page.body.contains("7946"), "never the whole number");
    assert!(page.body.contains("outbox file"), "development outbox is labelled");
    let sent = std::fs::read_to_string(&outbox).unwrap();
    let last: serde_json::Value = serde_json::from_str(sent.lines().last().unwrap()).unwrap();
    let body = last["body"].as_str().unwrap();
    let sms_code: String = body
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() >= 6)
        .unwrap()
        .to_owned();
    let action = page.body.split("action=\"/security-info/phone/").nth(1).unwrap();
    let id = &action[..action.find('/').unwrap()];

    let wrong = if sms_code == "000000" { "111111" } else { "000000" };
    let bad = b
        .post(&format!("/security-info/phone/{id}/confirm"), &[("code", wrong)])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let ok = b
        .post(&format!("/security-info/phone/{id}/confirm"), &[("code", &sms_code)])
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location(), "/security-info?done=phone_added");
    let (_, methods) = app.methods(&Principal::Operator, "pia").await.unwrap();
    let phone = methods
        .iter()
        .find(|m| m.kind == latchkey_core::MethodKind::Sms)
        .unwrap();
    assert_eq!(phone.state, latchkey_core::MethodState::Active);
    let _ = std::fs::remove_file(&outbox);
}

/// Security review item 3 in the console: the change requests page lists
/// what waits for a second person, and only another person approves.
#[tokio::test]
async fn the_console_approves_change_requests_only_by_another_person() {
    let (app, _) = app_with(|_| {}).await;
    let op = Principal::Operator;
    let mut passes = BTreeMap::new();
    for name in ["alice", "bob", "carol"] {
        app.create_user(&op, name, name, None, vec![], vec!["admin".into()])
            .await
            .unwrap();
        let latchkey_service::app::TapOutcome::Issued(tap) = app
            .issue_tap(&op, name, Some(60), true, None, verification())
            .await
            .unwrap()
        else {
            panic!("the operator needs no approval")
        };
        passes.insert(name, tap.pass);
    }
    // Alice, through a token of hers, asks to set bob's password.
    let (_, token) = app
        .create_scoped_api_token(&op, "alice-ci", &["admin"], Some("alice"))
        .await
        .unwrap();
    let alice_token = app.authenticate(&token).await.unwrap();
    let Err(latchkey_service::ServiceError::ApprovalRequired { request_id }) = app
        .set_password(&alice_token, "bob", "a brand new passphrase 42", None)
        .await
    else {
        panic!("someone else's password change for an admin needs a second approver")
    };

    let mut alice = Browser::new(&app, "127.0.0.1");
    alice
        .sign_in(
            "/admin/requests",
            "alice",
            &[("temporary_access_pass", "pass", &passes["alice"])],
        )
        .await;
    let page = alice.get("/admin/requests").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&request_id), "{}", page.body);
    assert!(page.body.contains("token:alice-ci (owner:alice)"), "{}", page.body);
    let refused = alice.post(&format!("/admin/requests/{request_id}/approve"), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.body.contains("someone other than the requester"),
        "{}",
        refused.body
    );

    let mut carol = Browser::new(&app, "127.0.0.1");
    carol
        .sign_in(
            "/admin/requests",
            "carol",
            &[("temporary_access_pass", "pass", &passes["carol"])],
        )
        .await;
    carol.get("/admin/requests").await;
    let ok = carol.post(&format!("/admin/requests/{request_id}/approve"), &[]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let list = app.change_requests(&op, Some("approved")).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].decided_by.as_deref(), Some("user:carol"));
}

/// Security review item 3's known gap, in the console: granting a role is a
/// request another administrator approves; removing one applies at once.
#[tokio::test]
async fn the_console_grants_a_role_only_with_another_persons_approval() {
    let (app, _) = app_with(|_| {}).await;
    let op = Principal::Operator;
    let mut passes = BTreeMap::new();
    for name in ["alice", "carol"] {
        app.create_user(&op, name, name, None, vec![], vec!["admin".into()])
            .await
            .unwrap();
        let latchkey_service::app::TapOutcome::Issued(tap) = app
            .issue_tap(&op, name, Some(60), true, None, verification())
            .await
            .unwrap()
        else {
            panic!("the operator needs no approval")
        };
        passes.insert(name, tap.pass);
    }
    app.create_user(&op, "dan", "Dan", None, vec![], vec![]).await.unwrap();
    let mut alice = Browser::new(&app, "127.0.0.1");
    alice
        .sign_in(
            "/admin/users",
            "alice",
            &[("temporary_access_pass", "pass", &passes["alice"])],
        )
        .await;
    alice.get("/admin/users").await;
    let asked = alice
        .post("/admin/users/roles", &[("username", "dan"), ("role_admin", "1")])
        .await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    let request = app.change_requests(&op, Some("pending_approval")).await.unwrap();
    assert_eq!(request.len(), 1);
    assert_eq!(request[0].kind, "user.roles");
    assert!(asked.body.contains(&request[0].id), "{}", asked.body);
    assert!(app.user("dan").await.unwrap().roles.is_empty());

    let mut carol = Browser::new(&app, "127.0.0.1");
    carol
        .sign_in(
            "/admin/requests",
            "carol",
            &[("temporary_access_pass", "pass", &passes["carol"])],
        )
        .await;
    carol.get("/admin/requests").await;
    let ok = carol
        .post(&format!("/admin/requests/{}/approve", request[0].id), &[])
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);

    alice.get("/admin/users").await;
    let done = alice
        .post(
            "/admin/users/roles",
            &[("username", "dan"), ("role_admin", "1"), ("approval", &request[0].id)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/admin/users?roles_changed=dan");
    assert_eq!(app.user("dan").await.unwrap().roles, vec![latchkey_core::Role::Admin]);
    // Removing it applies at once.
    alice.get("/admin/users").await;
    let removed = alice.post("/admin/users/roles", &[("username", "dan")]).await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER, "{}", removed.body);
    assert!(app.user("dan").await.unwrap().roles.is_empty());
}

#[tokio::test]
async fn the_backup_button_writes_a_server_side_copy_for_admins() {
    let backups = tempfile_dir("backups");
    let dir = backups.clone();
    let (app, _) = app_with(move |c| c.backup_dir = Some(dir)).await;
    let boot = app.bootstrap_if_empty().await.unwrap().unwrap();
    let mut b = Browser::new(&app, "127.0.0.1");
    b.sign_in(
        "/admin/backup",
        "admin",
        &[("temporary_access_pass", "pass", &boot.pass)],
    )
    .await;
    let page = b.get("/admin/backup").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Back up now") && page.body.contains("key file is not in the backup"));
    let made = b.post("/admin/backup", &[]).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert!(made.body.contains("id=\"backup-result\""), "{}", made.body);
    let files: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].to_string_lossy().into_owned();
    assert!(
        name.starts_with("latchkey-") && name.contains("-audit-") && name.ends_with(".db"),
        "{name}"
    );
    assert!(made.body.contains(&name));
    // Without the CSRF token the button does nothing.
    let forged = b.post_raw("/admin/backup", &[], &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 1);
}

/// A fresh, empty folder under the system's temporary directory.
fn tempfile_dir(what: &str) -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lk-web-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn a_browser_at_a_loopback_ip_goes_to_localhost_where_passkeys_work() {
    // Config::default's public URL is http://127.0.0.1:8080: the relying party is localhost.
    let (app, _) = app_with(|_| {}).await;
    let mut b = Browser::new(&app, "127.0.0.1");
    let nav = [("host", "127.0.0.1:8080"), ("sec-fetch-mode", "navigate")];
    let page = b.get_with("/signin?next=/admin/users", &nav).await;
    assert_eq!(page.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(page.location(), "http://localhost:8080/signin?next=/admin/users");
    let page = b
        .get_with(
            "/security-info",
            &[("host", "[::1]:8080"), ("sec-fetch-mode", "navigate")],
        )
        .await;
    assert_eq!(page.location(), "http://localhost:8080/security-info");
    // Scripts and API clients keep the address they were given.
    let page = b.get_with("/signin", &[("host", "127.0.0.1:8080")]).await;
    assert_eq!(page.status, StatusCode::OK);
    let page = b
        .get_with("/signin", &[("host", "localhost:8080"), ("sec-fetch-mode", "navigate")])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("only work at"), "no warning at the right address");
}

#[tokio::test]
async fn a_page_at_another_address_names_the_one_passkeys_need() {
    let (app, _) = app_with(|c| c.public_url = "https://mfa.example.com".into()).await;
    let mut b = Browser::new(&app, "127.0.0.1");
    let page = b.get_with("/signin", &[("host", "10.0.0.7:8443")]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("Passkeys and security keys only work at") && page.body.contains("https://mfa.example.com"),
        "{}",
        page.body
    );
    // Another host is never sent elsewhere: only loopback, only for localhost.
    let page = b
        .get_with("/signin", &[("host", "127.0.0.1:8443"), ("sec-fetch-mode", "navigate")])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let page = b.get_with("/signin", &[("host", "mfa.example.com")]).await;
    assert!(!page.body.contains("only work at"));
}

#[tokio::test]
async fn the_pass_is_asked_first_when_the_user_has_one_or_no_password() {
    let (app, clock) = app_with(|_| {}).await;
    app.bootstrap_if_empty().await.unwrap().unwrap();
    // The first administrator has only the bootstrap pass.
    let mut b = Browser::new(&app, "127.0.0.1");
    b.get("/signin").await;
    b.post("/signin", &[("username", "admin")]).await;
    let step = b.get("/signin/continue?next=/security-info").await;
    assert!(step.body.contains("Enter your Temporary Access Pass"), "{}", step.body);
    assert!(
        step.body.contains("Use my password"),
        "the password stays one choice away"
    );

    // A user with a password and nothing from the helpdesk: the password.
    user_with_totp(&app, &clock, "omar").await;
    let mut b = Browser::new(&app, "127.0.0.1");
    b.get("/signin").await;
    b.post("/signin", &[("username", "omar")]).await;
    let step = b.get("/signin/continue?next=/security-info").await;
    assert!(step.body.contains("Enter your password"), "{}", step.body);
    // The helpdesk issues a pass: now that comes first.
    app.issue_tap(&Principal::Operator, "omar", Some(60), true, None, verification())
        .await
        .unwrap();
    let step = b.get("/signin/continue?next=/security-info").await;
    assert!(step.body.contains("Enter your Temporary Access Pass"), "{}", step.body);
}

#[tokio::test]
async fn recovery_codes_are_shown_after_a_redirect_and_a_reload_never_makes_new_ones() {
    let (app, clock) = app_with(|_| {}).await;
    let (secret, _) = user_with_totp(&app, &clock, "rosa").await;
    clock.advance(30);
    let mut b = Browser::new(&app, "127.0.0.1");
    let code = code_at(&secret, clock.now());
    b.sign_in(
        "/security-info",
        "rosa",
        &[("password", "password", PW), ("totp", "code", &code)],
    )
    .await;
    b.get("/security-info").await;
    let made = b.post("/security-info/recovery-codes", &[]).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    assert_eq!(made.location(), "/security-info/recovery-codes");
    let codes_of = |body: &str| -> Vec<String> {
        body.split("<li><code>")
            .skip(1)
            .map(|s| s[..s.find('<').unwrap()].to_owned())
            .collect()
    };
    let shown = b.get("/security-info/recovery-codes").await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    let codes = codes_of(&shown.body);
    assert_eq!(codes.len(), 10, "{}", shown.body);
    // Reload: the same codes, and still one set (the first code still works below).
    let reloaded = b.get("/security-info/recovery-codes").await;
    assert_eq!(codes_of(&reloaded.body), codes);
    let events = app
        .audit_page(&Principal::Operator, 0, 10_000, None)
        .await
        .unwrap()
        .events;
    let made: Vec<&str> = events
        .iter()
        .map(|e| e.action.as_str())
        .filter(|a| a.starts_with("method.recovery_codes") || *a == "method.add")
        .collect();
    assert_eq!(
        made,
        ["method.add", "method.add"],
        "TOTP and one set of codes, never replaced"
    );
    let info = b.get("/security-info").await;
    assert!(info.body.contains("10 unused"), "the count is visible");
    // Another browser (another session) cannot see them, even with the cookie.
    let sealed = b.cookies.get("lk_codes").cloned().expect("sealed codes cookie");
    let mut other = Browser::new(&app, "127.0.0.1");
    clock.advance(30);
    other
        .sign_in(
            "/security-info",
            "rosa",
            &[
                ("password", "password", PW),
                ("totp", "code", &code_at(&secret, clock.now())),
            ],
        )
        .await;
    other.cookies.insert("lk_codes".into(), sealed);
    let page = other.get("/security-info/recovery-codes").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/security-info");

    // Signing in with one: straight to security info, told what to do.
    let mut lost = Browser::new(&app, "127.0.0.1");
    let done = lost
        .sign_in(
            "/admin/users",
            "rosa",
            &[("password", "password", PW), ("recovery_code", "code", &codes[0])],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/security-info");
    let info = lost.get("/security-info").await;
    assert!(
        info.body.contains("You signed in with a recovery code (9 left)") && info.body.contains("9 unused"),
        "{}",
        info.body
    );
}
