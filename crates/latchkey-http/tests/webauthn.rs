//! WebAuthn end to end through the HTTP router, with authenticators nobody
//! here wrote: webauthn-authenticator-rs's `SoftToken` (a CTAP2-style
//! security key with its own attestation CA) and `SoftPasskey` (a platform
//! passkey that performs user verification).
//!
//! Neither soft authenticator stores resident keys, so for the usernameless
//! (discoverable) ceremony the test plays the browser's part: it tells the
//! authenticator which of its credentials to use and returns the user handle
//! as a discoverable authenticator does. The user handle is not signed; the
//! server checks it against the credential's owner anyway. Chromium's
//! virtual authenticator covers real discoverable credentials in
//! tests/e2e/test_webauthn.py.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use latchkey_core::password::PasswordParams;
use latchkey_service::app::{App, Config, Principal};
use latchkey_service::clock::ManualClock;
use latchkey_store::{Keys, Store};
use serde_json::{json, Value};
use tower::ServiceExt;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::{AuthenticatorBackend, WebauthnAuthenticator};
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};
use webauthn_rs_core::proto::AllowCredentials;

const ORIGIN: &str = "http://localhost:8080";

struct Harness {
    router: Router,
    clock: Arc<ManualClock>,
    admin: String,
    dir: PathBuf,
    app: Arc<App>,
    /// Privileged users' own sessions (a pass from the local operator):
    /// someone else's registration for them needs a second approver.
    own_sessions: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Reply {
    status: StatusCode,
    body: Value,
    content_type: String,
}

impl Harness {
    async fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("latchkey-webauthn-{}", uuid_like()));
        let store = Store::open_sqlite(&dir).await.unwrap();
        let keys = Keys::from_master(&[7u8; 32]);
        let config = Config {
            public_url: ORIGIN.into(),
            password: PasswordParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            ..Config::default()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let clock = Arc::new(ManualClock::new(now));
        let app = Arc::new(App::new(store, keys, config, clock.clone()).unwrap());
        let (_, admin) = app.create_api_token(&Principal::Operator, "tests").await.unwrap();
        let router = latchkey_http::router(app.clone(), Default::default())
            .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        Harness {
            router,
            clock,
            admin,
            dir,
            app,
            own_sessions: Default::default(),
        }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            content_type,
        }
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, Some(&self.admin.clone()), body).await
    }

    async fn user(&self, name: &str, roles: &[&str]) {
        let r = self
            .admin(
                "POST",
                "/api/v1/users",
                Some(json!({"username": name, "display_name": name, "roles": roles})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        if roles.is_empty() {
            let r = self
                .admin(
                    "PUT",
                    &format!("/api/v1/users/{name}/password"),
                    Some(json!({"password": "correct horse battery staple"})),
                )
                .await;
            assert!(r.status.is_success(), "{:?}", r.body);
            return;
        }
        let op = Principal::Operator;
        self.app
            .set_password(&op, name, "correct horse battery staple", None)
            .await
            .unwrap();
        let verification = latchkey_core::tap::IdentityVerification {
            method: latchkey_core::tap::VerificationMethod::InPersonId,
            note: "test".into(),
        };
        let latchkey_service::app::TapOutcome::Issued(tap) = self
            .app
            .issue_tap(&op, name, Some(60), true, None, Some(verification))
            .await
            .unwrap()
        else {
            panic!("the operator's pass needs no approval")
        };
        let r = self
            .call("POST", "/api/v1/signin", None, Some(json!({ "username": name })))
            .await;
        let flow = r.body["flow_id"].as_str().unwrap().to_owned();
        let r = self
            .call(
                "POST",
                &format!("/api/v1/signin/{flow}/verify"),
                None,
                Some(json!({ "method": "temporary_access_pass", "pass": tap.pass })),
            )
            .await;
        let session = r.body["session_token"].as_str().expect("a pass session").to_owned();
        self.own_sessions.lock().unwrap().insert(name.to_owned(), session);
    }

    /// Run a registration ceremony with `auth`; returns the finish reply.
    async fn register(
        &self,
        token: Option<&str>,
        username: &str,
        kind: &str,
        auth: &mut dyn AuthenticatorBackend,
        origin: &str,
        tamper: impl FnOnce(&mut CreationChallengeResponse),
    ) -> Reply {
        let own = self.own_sessions.lock().unwrap().get(username).cloned();
        let token = token.map(str::to_owned).or(own).unwrap_or_else(|| self.admin.clone());
        let start = self
            .call(
                "POST",
                &format!("/api/v1/users/{username}/methods/webauthn/register/start"),
                Some(&token),
                Some(json!({"kind": kind, "label": format!("{kind} of {username}")})),
            )
            .await;
        assert_eq!(start.status, StatusCode::OK, "{:?}", start.body);
        let mut ccr: CreationChallengeResponse =
            serde_json::from_value(json!({"publicKey": start.body["publicKey"]})).unwrap();
        tamper(&mut ccr);
        let cred = auth
            .do_registration(Url::parse(origin).unwrap(), ccr)
            .expect("the authenticator registers");
        self.call(
            "POST",
            &format!("/api/v1/users/{username}/methods/webauthn/register/finish"),
            Some(&token),
            Some(json!({"ceremony_id": start.body["ceremony_id"], "credential": cred})),
        )
        .await
    }

    async fn password_flow(&self, username: &str) -> String {
        let r = self
            .call(
                "POST",
                "/api/v1/signin",
                None,
                Some(json!({"username": username, "password": "correct horse battery staple"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["state"], "second_factor_required");
        r.body["flow_id"].as_str().unwrap().to_owned()
    }

    async fn challenge(&self, flow: &str) -> RequestChallengeResponse {
        let r = self
            .call("POST", &format!("/api/v1/signin/{flow}/webauthn/challenge"), None, None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        serde_json::from_value(json!({"publicKey": r.body["publicKey"]})).unwrap()
    }

    async fn verify(&self, flow: &str, assertion: Value) -> Reply {
        self.call(
            "POST",
            &format!("/api/v1/signin/{flow}/verify"),
            None,
            Some(json!({"method": "webauthn", "assertion": assertion})),
        )
        .await
    }

    async fn audit_actions(&self) -> Vec<Value> {
        let r = self.admin("GET", "/api/v1/audit?limit=1000", None).await;
        r.body["events"].as_array().unwrap().clone()
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}

fn assert_problem(r: &Reply) {
    assert!(
        r.status.is_client_error(),
        "expected 4xx, got {} {:?}",
        r.status,
        r.body
    );
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "{}",
        r.content_type
    );
}

/// SoftPasskey cannot create resident keys; a platform authenticator would.
fn as_non_resident(ccr: &mut CreationChallengeResponse) {
    if let Some(sel) = ccr.public_key.authenticator_selection.as_mut() {
        sel.require_resident_key = false;
        sel.resident_key = None;
    }
}

/// The browser's part of a discoverable sign-in with a soft authenticator.
fn discoverable_get(
    auth: &mut dyn AuthenticatorBackend,
    mut rcr: RequestChallengeResponse,
    cred_id: &[u8],
    user_id: &str,
) -> Value {
    assert!(
        rcr.public_key.allow_credentials.is_empty(),
        "passkey challenges name no credential"
    );
    rcr.public_key.allow_credentials = vec![AllowCredentials {
        type_: "public-key".into(),
        id: cred_id.to_vec(),
        transports: None,
    }];
    let mut a = auth.do_authentication(Url::parse(ORIGIN).unwrap(), rcr).unwrap();
    a.response.user_handle = Some(uuid_bytes(user_id).into());
    serde_json::to_value(a).unwrap()
}

fn uuid_bytes(id: &str) -> Vec<u8> {
    hex_decode(&id.replace('-', ""))
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn b64url(s: &str) -> Vec<u8> {
    data_encoding::BASE64URL_NOPAD
        .decode(s.trim_end_matches('=').as_bytes())
        .unwrap()
}

async fn user_id(h: &Harness, name: &str) -> String {
    h.admin("GET", &format!("/api/v1/users/{name}"), None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn security_key_after_password_is_phishing_resistant() {
    let h = Harness::new().await;
    h.user("alice", &[]).await;
    let (mut key, _ca) = SoftToken::new(false).unwrap();
    let r = h
        .register(None, "alice", "security_key", &mut key, ORIGIN, |_| {})
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["credential_kind"], "security_key");
    // SoftToken reports its AAGUID; without an attestation policy it is
    // recorded but the model is not vouched for.
    assert_eq!(
        r.body["aaguid"],
        webauthn_authenticator_rs::softtoken::AAGUID.hyphenated().to_string()
    );
    assert_eq!(r.body["attested"], false);
    assert_eq!(r.body["backup_eligible"], false);

    // The method list shows it like any other method, and alice was told.
    let methods = h.admin("GET", "/api/v1/users/alice/methods", None).await;
    assert!(methods.body.as_array().unwrap().iter().any(|m| m["kind"] == "webauthn"));
    let notes = h.admin("GET", "/api/v1/users/alice/notifications", None).await;
    assert!(notes.body.to_string().contains("security key"));

    let flow = h.password_flow("alice").await;
    let rcr = h.challenge(&flow).await;
    assert_eq!(rcr.public_key.allow_credentials.len(), 1);
    let a = key.do_authentication(Url::parse(ORIGIN).unwrap(), rcr).unwrap();
    let r = h.verify(&flow, serde_json::to_value(a).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["state"], "complete");
    assert_eq!(r.body["acr"], "phishing_resistant");
    assert_eq!(r.body["amr"], json!(["pwd", "hwk", "mfa"]));
    assert!(r.body["session_token"].as_str().unwrap().starts_with("lk_s_"));

    let creds = h.admin("GET", "/api/v1/users/alice/methods/webauthn", None).await;
    assert!(creds.body[0]["sign_count"].as_i64().unwrap() > 0);
    assert!(creds.body[0]["last_used_at"].is_i64());
}

#[tokio::test]
async fn passkey_signs_in_alone_and_usernameless() {
    let h = Harness::new().await;
    h.user("bob", &[]).await;
    let mut pk = SoftPasskey::new(true);
    let r = h
        .register(None, "bob", "passkey", &mut pk, ORIGIN, as_non_resident)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let method_id = r.body["id"].as_str().unwrap().to_owned();
    let cred_id = {
        let creds = h.admin("GET", "/api/v1/users/bob/methods/webauthn", None).await;
        assert_eq!(creds.body[0]["credential_kind"], "passkey");
        // Stored, not shown: fetch the id through a second-factor challenge.
        let flow = h.password_flow("bob").await;
        let rcr = h.challenge(&flow).await;
        rcr.public_key.allow_credentials[0].id.clone()
    };
    let bob = user_id(&h, "bob").await;

    // Usernameless: no name, no password, the passkey alone.
    let start = h.call("POST", "/api/v1/signin/passkey/start", None, None).await;
    assert_eq!(start.status, StatusCode::OK, "{:?}", start.body);
    let flow = start.body["flow_id"].as_str().unwrap().to_owned();
    let rcr: RequestChallengeResponse = serde_json::from_value(json!({"publicKey": start.body["publicKey"]})).unwrap();
    let a = discoverable_get(&mut pk, rcr, &cred_id, &bob);
    let r = h.verify(&flow, a).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["acr"], "phishing_resistant");
    assert_eq!(r.body["amr"], json!(["hwk", "user", "mfa"]));
    let session = r.body["session_token"].as_str().unwrap().to_owned();
    let me = h.call("GET", "/api/v1/session", Some(&session), None).await;
    assert_eq!(me.body["username"], "bob");

    // Username first, no password: the same passkey, same strength.
    let r = h
        .call("POST", "/api/v1/signin", None, Some(json!({"username": "bob"})))
        .await;
    let flow = r.body["flow_id"].as_str().unwrap().to_owned();
    let rcr = h.challenge(&flow).await;
    let r = h.verify(&flow, discoverable_get(&mut pk, rcr, &cred_id, &bob)).await;
    assert_eq!(r.body["acr"], "phishing_resistant", "{:?}", r.body);

    // A passkey session is a fresh strong sign-in: bob may add a spare key
    // himself, but not once it is stale.
    let (mut spare, _) = SoftToken::new(false).unwrap();
    let r = h
        .register(Some(&session), "bob", "security_key", &mut spare, ORIGIN, |_| {})
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    h.clock.advance(11 * 60);
    let r = h
        .call(
            "POST",
            "/api/v1/users/bob/methods/webauthn/register/start",
            Some(&session),
            Some(json!({"kind": "passkey"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["type"], "urn:latchkey:problem:reauthentication-required");

    // Removal works like any other method.
    let r = h
        .admin("DELETE", &format!("/api/v1/users/bob/methods/{method_id}"), None)
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let creds = h.admin("GET", "/api/v1/users/bob/methods/webauthn", None).await;
    assert_eq!(creds.body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_security_key_without_user_verification_cannot_replace_the_password() {
    let h = Harness::new().await;
    h.user("carol", &[]).await;
    let (mut key, _) = SoftToken::new(false).unwrap();
    let r = h
        .register(None, "carol", "security_key", &mut key, ORIGIN, |_| {})
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let cred_id = {
        let flow = h.password_flow("carol").await;
        h.challenge(&flow).await.public_key.allow_credentials[0].id.clone()
    };
    let carol = user_id(&h, "carol").await;
    let start = h.call("POST", "/api/v1/signin/passkey/start", None, None).await;
    let flow = start.body["flow_id"].as_str().unwrap().to_owned();
    let mut rcr: RequestChallengeResponse =
        serde_json::from_value(json!({"publicKey": start.body["publicKey"]})).unwrap();
    // The key cannot verify the user; pretend the client asked for less.
    rcr.public_key.user_verification = webauthn_rs_core::proto::UserVerificationPolicy::Preferred;
    let a = discoverable_get(&mut key, rcr, &cred_id, &carol);
    let r = h.verify(&flow, a).await;
    assert_problem(&r);
    let s = h.call("GET", "/api/v1/session", None, None).await;
    assert_eq!(s.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_origin_or_rp_id_is_refused() {
    let h = Harness::new().await;
    h.user("dave", &[]).await;
    let (mut key, _) = SoftToken::new(false).unwrap();

    // Registration from a look-alike origin (as a phishing proxy would relay it).
    let start = h
        .admin(
            "POST",
            "/api/v1/users/dave/methods/webauthn/register/start",
            Some(json!({"kind": "security_key"})),
        )
        .await;
    let ccr: CreationChallengeResponse = serde_json::from_value(json!({"publicKey": start.body["publicKey"]})).unwrap();
    let cred = key
        .perform_register(
            Url::parse("https://login.evil.example").unwrap(),
            ccr.public_key,
            60_000,
        )
        .unwrap();
    let r = h
        .admin(
            "POST",
            "/api/v1/users/dave/methods/webauthn/register/finish",
            Some(json!({"ceremony_id": start.body["ceremony_id"], "credential": cred})),
        )
        .await;
    assert_problem(&r);
    // The failed attempt consumed the ceremony: it cannot be retried.
    let r = h
        .admin(
            "POST",
            "/api/v1/users/dave/methods/webauthn/register/finish",
            Some(json!({"ceremony_id": start.body["ceremony_id"], "credential": cred})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Registration for another RP ID.
    let r = h
        .register(None, "dave", "security_key", &mut key, "https://evil.example", |c| {
            c.public_key.rp.id = "evil.example".into()
        })
        .await;
    assert_problem(&r);

    // A good registration, then assertions for the wrong origin / RP ID.
    let r = h.register(None, "dave", "security_key", &mut key, ORIGIN, |_| {}).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let flow = h.password_flow("dave").await;
    let rcr = h.challenge(&flow).await;
    let a = key
        .perform_auth(
            Url::parse("https://login.evil.example").unwrap(),
            rcr.public_key,
            60_000,
        )
        .unwrap();
    assert_problem(&h.verify(&flow, serde_json::to_value(a).unwrap()).await);
    let mut rcr = h.challenge(&flow).await;
    rcr.public_key.rp_id = "evil.example".into();
    let a = key
        .perform_auth(Url::parse(ORIGIN).unwrap(), rcr.public_key, 60_000)
        .unwrap();
    let r = h.verify(&flow, serde_json::to_value(a).unwrap()).await;
    assert_problem(&r);
    assert_eq!(r.body["type"], "urn:latchkey:problem:webauthn-rejected");
    // A challenge is single use: the right answer to a spent challenge fails.
    let rcr = h.challenge(&flow).await;
    let a = serde_json::to_value(key.do_authentication(Url::parse(ORIGIN).unwrap(), rcr).unwrap()).unwrap();
    assert_eq!(h.verify(&flow, a.clone()).await.status, StatusCode::OK);
    let flow2 = h.password_flow("dave").await;
    assert_problem(&h.verify(&flow2, a).await);
}

async fn sign_in(h: &Harness, username: &str, key: &mut SoftToken) -> Reply {
    let flow = h.password_flow(username).await;
    let rcr = h.challenge(&flow).await;
    let a = key.do_authentication(Url::parse(ORIGIN).unwrap(), rcr).unwrap();
    h.verify(&flow, serde_json::to_value(a).unwrap()).await
}

#[tokio::test]
async fn a_cloned_key_is_refused_and_audited() {
    let h = Harness::new().await;
    h.user("erin", &[]).await;
    let (mut key, _) = SoftToken::new(false).unwrap();
    let r = h.register(None, "erin", "security_key", &mut key, ORIGIN, |_| {}).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(sign_in(&h, "erin", &mut key).await.status, StatusCode::OK);
    // Copy the key's secrets and counter, as an attacker with a cloned key would.
    let mut clone = SoftToken::from_cbor(&key.to_cbor().unwrap()).unwrap();
    assert_eq!(sign_in(&h, "erin", &mut key).await.status, StatusCode::OK);
    let r = sign_in(&h, "erin", &mut clone).await;
    assert_problem(&r);
    assert_eq!(r.body["type"], "urn:latchkey:problem:webauthn-counter-regression");
    let events = h.audit_actions().await;
    let ev = events
        .iter()
        .find(|e| e["action"] == "webauthn.counter_regression")
        .expect("counter regression audited");
    assert_eq!(ev["target"], "user:erin");
    // The real key still works.
    assert_eq!(sign_in(&h, "erin", &mut key).await.status, StatusCode::OK);
    let audit = h.admin("GET", "/api/v1/audit/verify", None).await;
    assert_eq!(audit.body["ok"], true);
}

#[tokio::test]
async fn garbled_responses_get_4xx_never_500() {
    let h = Harness::new().await;
    h.user("frank", &[]).await;
    let (mut key, _) = SoftToken::new(false).unwrap();

    // Registration: capture one good response, then mangle its parts.
    let start = h
        .admin(
            "POST",
            "/api/v1/users/frank/methods/webauthn/register/start",
            Some(json!({"kind": "security_key"})),
        )
        .await;
    let ccr: CreationChallengeResponse = serde_json::from_value(json!({"publicKey": start.body["publicKey"]})).unwrap();
    let good = serde_json::to_value(key.do_registration(Url::parse(ORIGIN).unwrap(), ccr).unwrap()).unwrap();
    let mangle = |field: &str, f: &dyn Fn(Vec<u8>) -> Vec<u8>| {
        let mut v = good.clone();
        let raw = b64url(v["response"][field].as_str().unwrap());
        v["response"][field] = json!(data_encoding::BASE64URL_NOPAD.encode(&f(raw)));
        v
    };
    let truncate = |b: Vec<u8>| b[..b.len() / 2].to_vec();
    let garble = |mut b: Vec<u8>| {
        for x in b.iter_mut().step_by(3) {
            *x ^= 0x5a;
        }
        b
    };
    let bad_regs = vec![
        json!({}),
        json!("nope"),
        json!({"id": "x", "rawId": "!!!", "type": "public-key", "response": {}}),
        mangle("clientDataJSON", &truncate),
        mangle("clientDataJSON", &garble),
        mangle("attestationObject", &truncate),
        mangle("attestationObject", &garble),
        mangle("attestationObject", &|_| vec![]),
        mangle("clientDataJSON", &|_| b"{\"type\":\"webauthn.create\"}".to_vec()),
    ];
    for bad in bad_regs {
        let s = h
            .admin(
                "POST",
                "/api/v1/users/frank/methods/webauthn/register/start",
                Some(json!({"kind": "security_key"})),
            )
            .await;
        let r = h
            .admin(
                "POST",
                "/api/v1/users/frank/methods/webauthn/register/finish",
                Some(json!({"ceremony_id": s.body["ceremony_id"], "credential": bad})),
            )
            .await;
        assert_problem(&r);
    }
    let r = h
        .admin(
            "POST",
            "/api/v1/users/frank/methods/webauthn/register/finish",
            Some(json!({"ceremony_id": "lk_wc_nope", "credential": good})),
        )
        .await;
    assert_problem(&r);
    let r = h
        .admin(
            "POST",
            "/api/v1/users/frank/methods/webauthn/register/start",
            Some(json!({"kind": "smartcard"})),
        )
        .await;
    assert_problem(&r);

    // Authentication.
    let r = h
        .register(None, "frank", "security_key", &mut key, ORIGIN, |_| {})
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let flow = h.password_flow("frank").await;
    // Verify without a challenge first.
    let rcr = h.challenge(&flow).await;
    let good = serde_json::to_value(key.do_authentication(Url::parse(ORIGIN).unwrap(), rcr).unwrap()).unwrap();
    let mangle = |field: &str, f: &dyn Fn(Vec<u8>) -> Vec<u8>| {
        let mut v = good.clone();
        let raw = b64url(v["response"][field].as_str().unwrap());
        v["response"][field] = json!(data_encoding::BASE64URL_NOPAD.encode(&f(raw)));
        v
    };
    let bad_assertions = vec![
        json!({}),
        json!([1, 2, 3]),
        mangle("clientDataJSON", &truncate),
        mangle("clientDataJSON", &garble),
        mangle("authenticatorData", &truncate),
        mangle("authenticatorData", &garble),
        mangle("signature", &truncate),
        mangle("signature", &garble),
        mangle("signature", &|_| vec![]),
    ];
    for bad in bad_assertions {
        h.challenge(&flow).await;
        let r = h.verify(&flow, bad).await;
        assert_problem(&r);
    }
    let r = h
        .call(
            "POST",
            &format!("/api/v1/signin/{flow}/verify"),
            None,
            Some(json!({"method": "webauthn"})),
        )
        .await;
    assert_problem(&r);
    let r = h
        .call("POST", "/api/v1/signin/lk_f_nope/webauthn/challenge", None, None)
        .await;
    assert_problem(&r);
}

#[tokio::test]
async fn ceremonies_expire_after_five_minutes() {
    let h = Harness::new().await;
    h.user("gina", &[]).await;
    let (mut key, _) = SoftToken::new(false).unwrap();
    let start = h
        .admin(
            "POST",
            "/api/v1/users/gina/methods/webauthn/register/start",
            Some(json!({"kind": "security_key"})),
        )
        .await;
    let ccr: CreationChallengeResponse = serde_json::from_value(json!({"publicKey": start.body["publicKey"]})).unwrap();
    let cred = key.do_registration(Url::parse(ORIGIN).unwrap(), ccr).unwrap();
    h.clock.advance(5 * 60 + 1);
    let r = h
        .admin(
            "POST",
            "/api/v1/users/gina/methods/webauthn/register/finish",
            Some(json!({"ceremony_id": start.body["ceremony_id"], "credential": cred})),
        )
        .await;
    assert_problem(&r);
}

fn pem_of(token: &SoftToken) -> String {
    // SoftToken serialises its CA certificate as base64url DER.
    let v: serde_cbor_2::Value = serde_cbor_2::from_slice(&token.to_cbor().unwrap()).unwrap();
    let serde_cbor_2::Value::Map(m) = v else {
        panic!("SoftToken is a map")
    };
    let ca = m
        .iter()
        .find_map(|(k, v)| match (k, v) {
            (serde_cbor_2::Value::Text(k), serde_cbor_2::Value::Text(v)) if k == "ca_cert" => Some(v.clone()),
            _ => None,
        })
        .expect("ca_cert");
    let b64 = ca.replace('-', "+").replace('_', "/");
    let b64 = b64.trim_end_matches('=').to_owned();
    let padded = format!("{b64}{}", "=".repeat((4 - b64.len() % 4) % 4));
    let body: Vec<String> = padded
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        body.join("\n")
    )
}

#[tokio::test]
async fn privileged_users_are_held_to_the_attested_allow_list() {
    let h = Harness::new().await;
    h.user("root", &["admin"]).await;
    h.user("staff", &[]).await;
    let (mut fleet_key, _) = SoftToken::new(false).unwrap();
    let (mut other_key, _) = SoftToken::new(false).unwrap();
    let aaguid = webauthn_authenticator_rs::softtoken::AAGUID.hyphenated().to_string();
    let policy = json!({
        "privileged_aaguids": [aaguid.to_uppercase()],
        "trusted_authenticators": [{"aaguid": aaguid, "description": "Fleet key (SoftToken)", "ca_pem": pem_of(&fleet_key)}],
    });
    let r = h.admin("PUT", "/api/v1/settings/webauthn", Some(policy)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["privileged_aaguids"], json!([aaguid]));
    assert!(h
        .audit_actions()
        .await
        .iter()
        .any(|e| e["action"] == "settings.webauthn.update"));

    // A key from the fleet CA: attested, model recorded.
    let r = h
        .register(None, "root", "security_key", &mut fleet_key, ORIGIN, |_| {})
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["attested"], true);
    assert_eq!(r.body["model"], "Fleet key (SoftToken)");
    // Same model, but not from the organisation's CA: refused for an admin.
    let r = h
        .register(None, "root", "security_key", &mut other_key, ORIGIN, |_| {})
        .await;
    assert_problem(&r);
    // Ordinary users are not restricted.
    let r = h
        .register(None, "staff", "security_key", &mut other_key, ORIGIN, |_| {})
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["attested"], false);

    // Bad policies are 4xx.
    for bad in [
        json!({"require_attestation": true}),
        json!({"privileged_aaguids": ["not-a-uuid"]}),
        json!({"trusted_authenticators": [{"aaguid": aaguid, "description": "x", "ca_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}]}),
        json!({"surprise": 1}),
    ] {
        assert_problem(&h.admin("PUT", "/api/v1/settings/webauthn", Some(bad)).await);
    }
    // Only admins set it.
    let flow = h.password_flow("staff").await;
    let _ = flow;
    let r = h.call("PUT", "/api/v1/settings/webauthn", None, Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_webauthn_endpoint_is_in_the_openapi_document() {
    let doc: Value = serde_json::from_str(&latchkey_http::api::openapi_json()).unwrap();
    for p in [
        "/api/v1/users/{username}/methods/webauthn",
        "/api/v1/users/{username}/methods/webauthn/register/start",
        "/api/v1/users/{username}/methods/webauthn/register/finish",
        "/api/v1/signin/{flow_id}/webauthn/challenge",
        "/api/v1/signin/passkey/start",
        "/api/v1/settings/webauthn",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from /openapi.json");
    }
    let h = Harness::new().await;
    let js = h
        .router
        .clone()
        .oneshot(Request::get("/static/webauthn.js").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
}

/// Finding 9's possession route: a passkey whose key cannot leave its device
/// (not backup eligible), bound to an inventory device, proves that device
/// when it signs in; the same passkey unbound proves nothing.
#[tokio::test]
async fn finding_09_a_device_bound_passkey_proves_its_device() {
    let h = Harness::new().await;
    h.user("dana", &[]).await;
    let mut pk = SoftPasskey::new(true);
    let r = h
        .register(None, "dana", "passkey", &mut pk, ORIGIN, as_non_resident)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["backup_eligible"], false, "{:?}", r.body);
    let method_id = r.body["id"].as_str().unwrap().to_owned();
    let cred_id = {
        let flow = h.password_flow("dana").await;
        h.challenge(&flow).await.public_key.allow_credentials[0].id.clone()
    };
    let dana = user_id(&h, "dana").await;

    let r = h
        .admin(
            "POST",
            "/api/v1/users/dana/devices",
            Some(json!({ "name": "dana's laptop", "platform": "windows", "ownership": "corporate" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let laptop = r.body["id"].as_str().unwrap().to_owned();
    let r = h
        .admin(
            "POST",
            "/api/v1/api-tokens",
            Some(json!({ "name": "mdm", "scopes": ["mdm"] })),
        )
        .await;
    let mdm = r.body["token"].as_str().unwrap().to_owned();
    let r = h
        .call(
            "PUT",
            &format!("/api/v1/devices/{laptop}/compliance"),
            Some(&mdm),
            Some(json!({ "managed": true, "compliant": true })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let policy = json!({
        "id": "compliant-only", "name": "compliant-only", "state": "enabled",
        "assignments": { "users": { "include": ["dana"] }, "applications": { "include": ["*"] } },
        "grant": ["require_compliant_device"]
    });
    let r = h
        .admin(
            "POST",
            "/api/v1/policies",
            Some(json!({ "policy": policy, "force": true })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    // Not bound: naming the laptop proves nothing.
    let r = passkey_signin(&h, &mut pk, &cred_id, &dana, &laptop).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["type"], "urn:latchkey:problem:access-blocked");

    let r = h
        .admin(
            "PUT",
            &format!("/api/v1/users/dana/methods/{method_id}/device"),
            Some(json!({ "device_id": laptop })),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = passkey_signin(&h, &mut pk, &cred_id, &dana, &laptop).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["state"], "complete");
    let log = h.admin("GET", "/api/v1/signins?user=dana&result=success", None).await;
    assert_eq!(log.body["signins"][0]["device_id"], laptop.as_str(), "{:?}", log.body);

    // The binding is an administrator's word: dana, freshly signed in, may
    // not bind her own key to a compliant device (it would vouch for any
    // machine she registers a passkey on).
    let session = r.body["session_token"].as_str().unwrap().to_owned();
    let r = h
        .call(
            "PUT",
            &format!("/api/v1/users/dana/methods/{method_id}/device"),
            Some(&session),
            Some(json!({ "device_id": laptop })),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
}

/// Username first, no password: the passkey alone, naming `device`.
async fn passkey_signin(h: &Harness, pk: &mut SoftPasskey, cred_id: &[u8], user_id: &str, device: &str) -> Reply {
    let r = h
        .call(
            "POST",
            "/api/v1/signin",
            None,
            Some(json!({ "username": "dana", "context": { "device_id": device } })),
        )
        .await;
    let flow = r.body["flow_id"].as_str().unwrap().to_owned();
    let rcr = h.challenge(&flow).await;
    h.verify(&flow, discoverable_get(pk, rcr, cred_id, user_id)).await
}

/// The web pages' cookie jar and the last page's CSRF token.
#[derive(Default)]
struct WebJar {
    cookies: std::collections::BTreeMap<String, String>,
    csrf: Option<String>,
}

struct WebReply {
    status: StatusCode,
    location: String,
    set_cookies: Vec<String>,
    body: String,
}

impl Harness {
    /// A browser's request to the web pages: GET, or a form POST carrying the
    /// CSRF token of the last page (as passkeys.js posts its requests).
    async fn web(&self, jar: &mut WebJar, method: &str, path: &str, form: &[(&str, &str)]) -> WebReply {
        let cookie = jar
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let req = Request::builder().method(method).uri(path).header("cookie", cookie);
        let req = if method == "POST" {
            let mut fields: Vec<(&str, &str)> = form.to_vec();
            let token = jar.csrf.clone().expect("a page was loaded first");
            fields.push(("csrf", &token));
            let body = fields
                .iter()
                .map(|(k, v)| format!("{k}={}", latchkey_http::web::percent_encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            req.header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap()
        } else {
            req.body(Body::empty()).unwrap()
        };
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let set_cookies: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || c.contains("Max-Age=0") {
                jar.cookies.remove(k);
            } else {
                jar.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let body = String::from_utf8(bytes.to_vec()).unwrap();
        if let Some(i) = body.find("name=\"csrf\" value=\"") {
            let rest = &body[i + 19..];
            jar.csrf = Some(rest[..rest.find('"').unwrap()].to_owned());
        }
        WebReply {
            status,
            location,
            set_cookies,
            body,
        }
    }
}

#[tokio::test]
async fn the_web_pages_sign_in_with_a_passkey_alone_set_the_cookie_and_register_a_key() {
    let h = Harness::new().await;
    h.user("carol", &[]).await;
    let mut pk = SoftPasskey::new(true);
    let r = h
        .register(None, "carol", "passkey", &mut pk, ORIGIN, as_non_resident)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let cred_id = {
        let flow = h.password_flow("carol").await;
        h.challenge(&flow).await.public_key.allow_credentials[0].id.clone()
    };
    let carol = user_id(&h, "carol").await;

    // "Sign in with a passkey": no username typed anywhere.
    let mut jar = WebJar::default();
    let page = h.web(&mut jar, "GET", "/signin?next=/security-info", &[]).await;
    assert!(
        page.body.contains("autocomplete=\"username webauthn\""),
        "autofill offers passkeys"
    );
    assert!(page.body.contains("data-challenge-url=\"/signin/passkey\""));
    let start = h
        .web(&mut jar, "POST", "/signin/passkey", &[("next", "/security-info")])
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    assert!(
        jar.cookies.contains_key("lk_passkey_flow"),
        "the flow lives in the browser's cookie"
    );
    assert!(
        !jar.cookies.contains_key("lk_flow"),
        "a username typed meanwhile keeps its own flow"
    );
    let options: Value = serde_json::from_str(&start.body).unwrap();
    let rcr: RequestChallengeResponse = serde_json::from_value(json!({"publicKey": options["publicKey"]})).unwrap();
    let assertion = discoverable_get(&mut pk, rcr, &cred_id, &carol).to_string();
    let done = h
        .web(
            &mut jar,
            "POST",
            "/signin/verify",
            &[
                ("method", "webauthn"),
                ("assertion", &assertion),
                ("passkey", "1"),
                ("next", "/security-info"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location, "/security-info");
    let cookie = done
        .set_cookies
        .iter()
        .find(|c| c.starts_with("lk_session="))
        .expect("a usernameless sign-in sets the session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    // The same assertion again: its challenge is spent; the page restarts.
    let again = h
        .web(
            &mut jar,
            "POST",
            "/signin/verify",
            &[
                ("method", "webauthn"),
                ("assertion", &assertion),
                ("passkey", "1"),
                ("next", "/security-info"),
            ],
        )
        .await;
    assert!(again.status.is_client_error(), "{}", again.status);

    // Signed in with a passkey: a fresh strong sign-in, so carol adds a
    // security key from her security info page.
    let info = h.web(&mut jar, "GET", "/security-info", &[]).await;
    assert_eq!(info.status, StatusCode::OK);
    assert!(
        info.body.contains("data-webauthn-register"),
        "the page offers passkeys and keys"
    );
    let start = h
        .web(
            &mut jar,
            "POST",
            "/security-info/webauthn/start",
            &[("kind", "security_key"), ("label", "Desk key")],
        )
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    let start: Value = serde_json::from_str(&start.body).unwrap();
    let ccr: CreationChallengeResponse = serde_json::from_value(json!({"publicKey": start["publicKey"]})).unwrap();
    let (mut key, _) = SoftToken::new(false).unwrap();
    let cred = key.do_registration(Url::parse(ORIGIN).unwrap(), ccr).unwrap();
    let finish = h
        .web(
            &mut jar,
            "POST",
            "/security-info/webauthn/finish",
            &[
                ("ceremony_id", start["ceremony_id"].as_str().unwrap()),
                ("credential", &serde_json::to_string(&cred).unwrap()),
            ],
        )
        .await;
    assert_eq!(finish.status, StatusCode::SEE_OTHER, "{}", finish.body);
    assert_eq!(finish.location, "/security-info?done=security_key_added");
    let info = h.web(&mut jar, "GET", &finish.location, &[]).await;
    assert!(info.body.contains("Desk key"), "the new key is listed by its name");

    // An unknown kind is refused in words, not with a 500.
    let bad = h
        .web(&mut jar, "POST", "/security-info/webauthn/start", &[("kind", "fido3")])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(bad.body.contains("passkey or a security key"), "{}", bad.body);
}

#[tokio::test]
async fn a_security_key_is_the_second_step_of_a_web_sign_in() {
    let h = Harness::new().await;
    h.user("dan", &["admin"]).await;
    let (mut key, _) = SoftToken::new(false).unwrap();
    let r = h.register(None, "dan", "security_key", &mut key, ORIGIN, |_| {}).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let mut jar = WebJar::default();
    h.web(&mut jar, "GET", "/signin?next=/admin/users", &[]).await;
    let r = h
        .web(
            &mut jar,
            "POST",
            "/signin",
            &[("username", "dan"), ("next", "/admin/users")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    h.web(&mut jar, "GET", &r.location, &[]).await;
    let r = h
        .web(
            &mut jar,
            "POST",
            "/signin/verify",
            &[
                ("method", "password"),
                ("password", "correct horse battery staple"),
                ("next", "/admin/users"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let step = h.web(&mut jar, "GET", &r.location, &[]).await;
    assert!(step.body.contains("Use your passkey or security key"), "{}", step.body);
    assert!(step.body.contains("data-challenge-url=\"/signin/webauthn/challenge\""));
    let ch = h.web(&mut jar, "POST", "/signin/webauthn/challenge", &[]).await;
    assert_eq!(ch.status, StatusCode::OK, "{}", ch.body);
    let ch: Value = serde_json::from_str(&ch.body).unwrap();
    let rcr: RequestChallengeResponse = serde_json::from_value(json!({"publicKey": ch["publicKey"]})).unwrap();
    let a = key.do_authentication(Url::parse(ORIGIN).unwrap(), rcr).unwrap();
    let done = h
        .web(
            &mut jar,
            "POST",
            "/signin/verify",
            &[
                ("method", "webauthn"),
                ("assertion", &serde_json::to_string(&a).unwrap()),
                ("next", "/admin/users"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location, "/admin/users");
    assert!(jar.cookies.contains_key("lk_session"));
    let console = h.web(&mut jar, "GET", "/admin/users", &[]).await;
    assert_eq!(console.status, StatusCode::OK);
}
