//! Conditional access end to end, in process: policies over the API, sign-ins
//! over the API, a clock moved by hand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use latchkey_core::otp::{self, TotpParams};
use latchkey_core::password::PasswordParams;
use latchkey_core::{MethodKind, MethodState};
use latchkey_service::app::{App, Config, Principal};
use latchkey_service::clock::ManualClock;
use latchkey_store::{AuditEntry, Keys, NewMethod, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

const T0: i64 = 1_800_000_000;
const PASSWORD: &str = "correct horse battery staple";

struct Env {
    app: Arc<App>,
    clock: Arc<ManualClock>,
    token: String,
    router: axum::Router,
}

async fn env() -> Env {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "latchkey-policy-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    env_on(Store::open_sqlite(&dir).await.unwrap()).await
}

async fn env_on(store: Store) -> Env {
    let clock = Arc::new(ManualClock::new(T0));
    let config = Config {
        password: PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        ..Config::default()
    };
    let app = Arc::new(App::new(store, Keys::from_master(&[7u8; 32]), config, clock.clone()).unwrap());
    let (_, token) = app
        .create_api_token(&Principal::Operator, "policy-admin")
        .await
        .unwrap();
    let router = latchkey_http::router(app.clone(), Default::default())
        .layer(MockConnectInfo(SocketAddr::from(([10, 1, 2, 3], 4000))));
    Env {
        app,
        clock,
        token,
        router,
    }
}

impl Env {
    async fn call(&self, method: &str, uri: &str, auth: bool, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if auth {
            req = req.header("authorization", format!("Bearer {}", self.token));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let v =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    /// A user with a password and a confirmed TOTP; returns the TOTP secret.
    async fn user(&self, name: &str, roles: &[&str], groups: &[&str]) -> Vec<u8> {
        let op = Principal::Operator;
        self.app
            .create_user(
                &op,
                name,
                name,
                None,
                groups.iter().map(|g| g.to_string()).collect(),
                roles.iter().map(|r| r.to_string()).collect(),
            )
            .await
            .unwrap();
        self.app.set_password(&op, name, PASSWORD, None).await.unwrap();
        let e = self.app.enroll_totp(&op, name, None, None, None, None).await.unwrap();
        let secret = otp::decode_secret(&e.secret_base32).unwrap();
        self.app
            .confirm_totp(&op, name, &e.method.id, &self.code(&secret))
            .await
            .unwrap();
        self.clock.advance(30);
        secret
    }

    fn code(&self, secret: &[u8]) -> String {
        otp::totp_at(secret, self.app.now() as u64, &TotpParams::default())
    }

    async fn signin(&self, name: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/api/v1/signin",
            false,
            Some(json!({ "username": name, "password": PASSWORD })),
        )
        .await
    }

    async fn totp(&self, flow: &Value, secret: &[u8]) -> (StatusCode, Value) {
        let uri = format!("/api/v1/signin/{}/verify", flow["flow_id"].as_str().unwrap());
        let r = self
            .call(
                "POST",
                &uri,
                false,
                Some(json!({ "method": "totp", "code": self.code(secret) })),
            )
            .await;
        self.clock.advance(30);
        r
    }

    async fn policy(&self, policy: Value, force: bool) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/api/v1/policies",
            true,
            Some(json!({ "policy": policy, "force": force })),
        )
        .await
    }

    /// The trusted named location "office" = 10.0.0.0/8.
    async fn office(&self) {
        let body = json!({ "name": "office", "ranges": ["10.0.0.0/8"], "trusted": true });
        let (s, _) = self
            .call("PUT", "/api/v1/named-locations/office", true, Some(body))
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }

    async fn last_signin_policy(&self) -> Value {
        let h = self.app.store().signin_history(0, 10_000).await.unwrap();
        h.last()
            .unwrap()
            .policy
            .clone()
            .expect("the decision is on the sign-in log")
    }
}

fn problem(v: &Value) -> &str {
    v["type"].as_str().unwrap_or("")
}

fn all_users_policy(id: &str, state: &str, grant: Value) -> Value {
    json!({
        "id": id, "name": id, "state": state,
        "assignments": { "users": { "include": ["*"] }, "applications": { "include": ["*"] } },
        "grant": grant
    })
}

#[tokio::test]
async fn phishing_resistant_for_admins_makes_a_password_totp_admin_step_up() {
    let e = env().await;
    let secret = e.user("root", &["admin"], &[]).await;
    let (s, v) = e
        .policy(
            json!({
                "id": "admins-pr", "name": "Admins need phishing-resistant MFA", "state": "enabled",
                "assignments": { "roles": { "include": ["admin"] }, "applications": { "include": ["*"] } },
                "grant": [ { "require_strength": "phishing_resistant" } ]
            }),
            false,
        )
        .await;
    // A TAP still lets the admin register a key, so the analyzer accepts it unforced.
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["version"], 1);

    // Password + TOTP is not enough, and the admin has nothing stronger: a clear problem.
    let (s, v) = e.signin("root").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(problem(&v), "urn:latchkey:problem:authentication-strength-required");
    assert!(v["detail"].as_str().unwrap().contains("phishing_resistant"), "{v}");
    let logged = e.last_signin_policy().await;
    assert_eq!(logged["applied"][0]["policy_id"], "admins-pr");
    assert_eq!(logged["required_strengths"], json!(["phishing_resistant"]));

    // Once a security key is registered, only it is offered; TOTP is refused.
    let user = e.app.user("root").await.unwrap();
    let mut tx = e.app.store().write().await.unwrap();
    tx.insert_method(
        NewMethod {
            id: "key-1",
            user_id: &user.id,
            kind: MethodKind::Webauthn,
            label: "security key",
            state: MethodState::Active,
            secret_sealed: None,
            params: json!({}),
        },
        e.app.now(),
    )
    .await
    .unwrap();
    tx.audit(
        &AuditEntry::new("test", "method.add", "user:root", json!({})),
        e.app.now() * 1000,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (s, flow) = e.signin("root").await;
    assert_eq!(s, StatusCode::OK, "{flow}");
    assert_eq!(flow["state"], "second_factor_required");
    assert_eq!(flow["allowed_methods"], json!(["webauthn"]));
    let (s, v) = e.totp(&flow, &secret).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(problem(&v), "urn:latchkey:problem:invalid-state");

    // A non-admin is untouched by the admin policy.
    let alice = e.user("alice", &[], &[]).await;
    let (_, flow) = e.signin("alice").await;
    assert_eq!(flow["allowed_methods"], json!(["totp"]));
    let (s, v) = e.totp(&flow, &alice).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "complete");
}

#[tokio::test]
async fn an_expired_exception_stops_applying_when_the_clock_moves() {
    let e = env().await;
    let secret = e.user("alice", &[], &["contractors"]).await;
    let block = json!({
        "id": "block-contractors", "name": "Block contractors", "state": "enabled",
        "assignments": { "groups": { "include": ["contractors"] }, "applications": { "include": ["*"] } },
        "grant": ["block"]
    });
    // The analyzer refuses a policy that locks alice out, naming her.
    let (s, v) = e.policy(block.clone(), false).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(problem(&v), "urn:latchkey:problem:policy-lockout");
    assert!(v["detail"].as_str().unwrap().contains("alice"), "{v}");
    let (s, _) = e.policy(block, true).await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, v) = e.signin("alice").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(problem(&v), "urn:latchkey:problem:access-blocked");
    assert!(v["detail"].as_str().unwrap().contains("Block contractors"), "{v}");

    let expires = latchkey_http::api::rfc3339(e.app.now() + 86_400);
    let exception = |requested_by: &str, expires_at: &str| {
        json!({ "policy_id": "block-contractors", "user": "alice", "reason": "vendor audit this week",
                "requested_by": requested_by, "expires_at": expires_at })
    };
    // No approving your own request; no exception beyond the maximum.
    let (s, _) = e
        .call(
            "POST",
            "/api/v1/policy-exceptions",
            true,
            Some(exception("token:policy-admin", &expires)),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // (Over the API an exception is requested by one person and approved by
    // another: tests/insider.rs. Here the local operator makes it.)
    let grant = |days: i64| {
        e.app.create_exception(
            &Principal::Operator,
            "block-contractors",
            latchkey_core::policy::ExceptionSubject::User("alice".into()),
            "vendor audit this week",
            Some("alice"),
            e.app.now() + days * 86_400,
        )
    };
    assert!(matches!(
        grant(31).await,
        Err(latchkey_service::ServiceError::InvalidRequest(_))
    ));
    assert!(grant(1).await.is_ok());

    let (s, flow) = e.signin("alice").await;
    assert_eq!(s, StatusCode::OK, "{flow}");
    let (s, v) = e.totp(&flow, &secret).await;
    assert_eq!(v["state"], "complete", "{s} {v}");
    let (_, list) = e.call("GET", "/api/v1/policy-exceptions", true, None).await;
    assert_eq!(list[0]["in_force"], true);
    assert_eq!(list[0]["near_expiry"], true);

    // Nobody acts; the day passes.
    e.clock.advance(86_400);
    let (s, v) = e.signin("alice").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(problem(&v), "urn:latchkey:problem:access-blocked");
    let (_, list) = e.call("GET", "/api/v1/policy-exceptions", true, None).await;
    assert_eq!(list[0]["in_force"], false);
}

#[tokio::test]
async fn a_break_glass_sign_in_raises_an_alert_and_ignores_policy() {
    let e = env().await;
    let secret = e.user("breakglass1", &["admin"], &[]).await;
    let (s, _) = e
        .call(
            "PUT",
            "/api/v1/break-glass/breakglass1",
            true,
            Some(json!({ "test_interval_days": 30 })),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = e
        .policy(all_users_policy("block-all", "enabled", json!(["block"])), true)
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, alerts) = e.call("GET", "/api/v1/alerts", true, None).await;
    assert_eq!(alerts, json!([]));

    let (s, flow) = e.signin("breakglass1").await;
    assert_eq!(s, StatusCode::OK, "{flow}");
    let (s, v) = e.totp(&flow, &secret).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "complete");
    assert!(e.last_signin_policy().await["break_glass"].as_bool().unwrap());

    let (_, alerts) = e.call("GET", "/api/v1/alerts", true, None).await;
    assert_eq!(alerts.as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(alerts[0]["kind"], "break_glass.signin");
    assert_eq!(alerts[0]["target"], "user:breakglass1");
    let audit = e
        .app
        .store()
        .audit_page(0, 1000, Some("user:breakglass1"))
        .await
        .unwrap();
    assert!(audit.events.iter().any(|a| a.action == "break_glass.signin"));

    // The sign-in can be recorded as the periodic test; no key is reported.
    let (s, _) = e
        .call(
            "POST",
            "/api/v1/break-glass/breakglass1/tests",
            true,
            Some(json!({ "note": "quarterly test" })),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, bg) = e.call("GET", "/api/v1/break-glass", true, None).await;
    assert_eq!(bg[0]["test_overdue"], false);
    assert_eq!(bg[0]["has_phishing_resistant_key"], false);
    e.clock.advance(31 * 86_400);
    let (_, bg) = e.call("GET", "/api/v1/break-glass", true, None).await;
    assert_eq!(bg[0]["test_overdue"], true);
}

#[tokio::test]
async fn report_only_policies_are_recorded_but_never_block() {
    let e = env().await;
    let secret = e.user("alice", &[], &[]).await;
    let (s, v) = e
        .policy(all_users_policy("would-block", "report_only", json!(["block"])), false)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, flow) = e.signin("alice").await;
    assert_eq!(s, StatusCode::OK, "{flow}");
    let (_, v) = e.totp(&flow, &secret).await;
    assert_eq!(v["state"], "complete");
    let logged = e.last_signin_policy().await;
    assert_eq!(logged["outcome"], "allow");
    assert_eq!(logged["applied"], json!([]));
    assert_eq!(logged["report_only"][0]["policy_id"], "would-block");
    assert_eq!(logged["report_only"][0]["result"], "block");
}

#[tokio::test]
async fn what_if_versions_and_yaml_round_trip() {
    let e = env().await;
    e.user("alice", &[], &[]).await;
    e.office().await;
    let mut p = all_users_policy(
        "outside",
        "enabled",
        json!([{ "require_strength": "passwordless_mfa" }]),
    );
    p["conditions"] = json!({ "locations": { "include": ["*"], "exclude": ["trusted"] } });
    assert_eq!(e.policy(p.clone(), false).await.0, StatusCode::CREATED);

    let ask = |ip: &str| json!({ "username": "alice", "application": "payroll", "ip": ip });
    let (_, d) = e
        .call("POST", "/api/v1/policies/what-if", true, Some(ask("192.0.2.7")))
        .await;
    assert_eq!(d["required_strengths"], json!(["passwordless_mfa"]), "{d}");
    let (_, d) = e
        .call("POST", "/api/v1/policies/what-if", true, Some(ask("10.9.8.7")))
        .await;
    assert_eq!(d["required_strengths"], json!([]), "{d}");
    assert!(
        d["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("excluded location"),
        "{d}"
    );

    // An update is a new version; the history keeps both.
    p["name"] = json!("Outside the office");
    let (s, v) = e
        .call(
            "PUT",
            "/api/v1/policies/outside",
            true,
            Some(json!({ "policy": p, "expected_version": 1 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2);
    let (s, _) = e
        .call(
            "PUT",
            "/api/v1/policies/outside",
            true,
            Some(json!({ "policy": p, "expected_version": 1 })),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "a stale version is refused");
    let (_, v) = e.call("GET", "/api/v1/policies/outside", true, None).await;
    assert_eq!(v["versions"].as_array().unwrap().len(), 2);

    let (s, yaml) = e.call("GET", "/api/v1/policies/export?format=yaml", true, None).await;
    assert_eq!(s, StatusCode::OK);
    let yaml = yaml.as_str().unwrap().to_owned();
    assert!(
        yaml.contains("10.0.0.0/8") && yaml.contains("Outside the office"),
        "{yaml}"
    );
    let (s, v) = e
        .call(
            "POST",
            "/api/v1/policies/import",
            true,
            Some(json!({ "document": yaml, "format": "yaml" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v[0]["version"], 2, "an unchanged policy keeps its version");
    let (s, v) = e
        .call(
            "POST",
            "/api/v1/policies/import",
            true,
            Some(json!({ "document": "policies: [", "format": "yaml" })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Analyzer and replay answer on the stored set and a proposal.
    let (s, v) = e.call("POST", "/api/v1/policies/check", true, Some(json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["report"]["locked_out"], json!([]));
    let proposal = json!({ "policies": [ all_users_policy("b", "enabled", json!(["block"])) ] }).to_string();
    let (_, v) = e
        .call(
            "POST",
            "/api/v1/policies/check",
            true,
            Some(json!({ "document": proposal, "format": "json" })),
        )
        .await;
    assert_eq!(v["newly_locked_out"], json!(["alice"]));
    let audit = e.app.store().audit_page(0, 1000, Some("policy:outside")).await.unwrap();
    assert_eq!(audit.events.len(), 2, "create and update are audited");
}

#[tokio::test]
async fn replay_reports_who_would_be_blocked() {
    let e = env().await;
    let secret = e.user("alice", &[], &[]).await;
    let (_, flow) = e.signin("alice").await;
    e.totp(&flow, &secret).await;
    let proposal = json!({ "policies": [ all_users_policy("b", "enabled", json!(["block"])) ] }).to_string();
    let (s, v) = e
        .call(
            "POST",
            "/api/v1/policies/replay",
            true,
            Some(json!({ "document": proposal, "format": "json", "days": 30 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["signins"], 1);
    assert_eq!(v["blocked"][0]["username"], "alice");
}

#[tokio::test]
async fn the_example_document_is_valid_yaml_with_written_grants() {
    use latchkey_service::policy::{parse_document, render_document, DocFormat};
    let set = parse_document(include_str!("../../../docs/policy-example.yaml"), DocFormat::Yaml).unwrap();
    assert_eq!(set.policies.len(), 4);
    let yaml = render_document(&set, DocFormat::Yaml);
    assert!(yaml.contains("require_strength: phishing_resistant"), "{yaml}");
    assert!(!yaml.contains('!'), "no YAML tags in exported documents: {yaml}");
    assert_eq!(parse_document(&yaml, DocFormat::Yaml).unwrap(), set);
    let bad = "policies: [{id: p, name: p, state: enabled, grant: [allow_all], assignments: {users: {include: ['*']}, applications: {include: ['*']}}}]";
    let err = parse_document(bad, DocFormat::Yaml).unwrap_err().to_string();
    assert!(err.contains("policy document"), "{err}");
}

/// The same break-glass and exception paths on PostgreSQL (fresh database per run).
#[tokio::test]
async fn postgres_break_glass_alerts_and_exceptions() {
    let Ok(base) = std::env::var("LATCHKEY_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED (PostgreSQL): LATCHKEY_TEST_POSTGRES_URL not set; run eval \"$(bash scripts/postgres.sh)\"");
        return;
    };
    let db = format!("lk_policy_{}", std::process::id());
    let psql = |sql: String| {
        let ok = std::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &base, "-c", &sql])
            .status()
            .expect("psql runs");
        assert!(ok.success(), "psql {sql}");
    };
    psql(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    psql(format!("CREATE DATABASE {db}"));
    let url = format!("{}/{db}", base.rsplit_once('/').unwrap().0);
    let e = env_on(Store::connect(&url).await.unwrap()).await;
    let secret = e.user("breakglass1", &["admin"], &[]).await;
    e.user("alice", &[], &[]).await;
    let (s, _) = e
        .call("PUT", "/api/v1/break-glass/breakglass1", true, Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = e
        .policy(all_users_policy("block-all", "enabled", json!(["block"])), true)
        .await;
    assert_eq!(s, StatusCode::CREATED);
    e.app
        .create_exception(
            &Principal::Operator,
            "block-all",
            latchkey_core::policy::ExceptionSubject::Group("staff".into()),
            "pilot",
            Some("breakglass1"),
            e.app.now() + 3600,
        )
        .await
        .unwrap();
    assert_eq!(e.signin("alice").await.0, StatusCode::FORBIDDEN);
    let (_, flow) = e.signin("breakglass1").await;
    let (_, v) = e.totp(&flow, &secret).await;
    assert_eq!(v["state"], "complete", "{v}");
    let (_, alerts) = e.call("GET", "/api/v1/alerts", true, None).await;
    assert_eq!(alerts[0]["kind"], "break_glass.signin", "{alerts}");
    let (_, bg) = e.call("GET", "/api/v1/break-glass", true, None).await;
    assert!(bg[0]["last_use_at"].is_i64(), "{bg}");
    let (_, list) = e.call("GET", "/api/v1/policy-exceptions", true, None).await;
    assert_eq!(list[0]["subject"], json!({ "group": "staff" }));
    e.app.store().close().await;
    psql(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

/// A live session of `name` signed in from `ip` with password + TOTP, or with a TAP.
async fn session_from(e: &Env, name: &str, ip: &str, second: Result<&[u8], &str>) -> Principal {
    use latchkey_core::VerifyMethod;
    use latchkey_service::app::{Proof, SignInContext};
    let ctx = SignInContext {
        application: Some("web".into()),
        source_ip: Some(ip.into()),
        continues_to: None,
        ..Default::default()
    };
    let o = match second {
        Ok(secret) => {
            let f = e.app.signin_start(name, Some(PASSWORD), &ctx).await.unwrap();
            let code = e.code(secret);
            e.clock.advance(30);
            e.app
                .signin_verify(&f.flow_id, VerifyMethod::Totp, Proof::Code(code), &ctx)
                .await
                .unwrap()
        }
        Err(pass) => {
            let f = e.app.signin_start(name, None, &ctx).await.unwrap();
            e.app
                .signin_verify(
                    &f.flow_id,
                    VerifyMethod::TemporaryAccessPass,
                    Proof::Pass(pass.into()),
                    &ctx,
                )
                .await
                .unwrap()
        }
    };
    e.app.authenticate(&o.session_token.unwrap()).await.unwrap()
}

#[tokio::test]
async fn register_security_info_policies_govern_live_registration() {
    use latchkey_core::tap::{IdentityVerification, VerificationMethod};
    use latchkey_service::app::TapOutcome;
    use latchkey_service::ServiceError;
    let e = env().await;
    let secret = e.user("alice", &[], &[]).await;
    e.office().await;
    let reg = json!({
        "id": "register-from-office", "name": "register-from-office", "state": "enabled",
        "assignments": { "users": { "include": ["*"] }, "user_actions": ["register_security_info"] },
        "conditions": { "locations": { "include": ["*"], "exclude": ["trusted"] } },
        "grant": ["block"]
    });
    let (s, v) = e.policy(reg, true).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // Signed in from outside: signing in works, registering does not.
    let away = session_from(&e, "alice", "192.0.2.7", Ok(&secret)).await;
    let r = e.app.enroll_totp(&away, "alice", None, None, None, None).await;
    assert!(
        matches!(&r, Err(ServiceError::AccessBlocked(m)) if m.contains("register-from-office")),
        "{:?}",
        r.err()
    );
    let count = || async { e.app.methods(&Principal::Operator, "alice").await.unwrap().1.len() };
    assert_eq!(count().await, 1, "the confirmed TOTP only: nothing was added");
    // From the office it is allowed.
    let office = session_from(&e, "alice", "10.4.4.4", Ok(&secret)).await;
    e.app
        .enroll_totp(&office, "alice", None, None, None, None)
        .await
        .unwrap();
    assert_eq!(count().await, 2, "a pending TOTP enrollment");

    // Now registration needs phishing-resistant strength: a TOTP session is
    // not enough, a Temporary Access Pass is (that is what a TAP is for).
    let strong = json!({
        "id": "register-strong", "name": "register-strong", "state": "enabled",
        "assignments": { "users": { "include": ["*"] }, "user_actions": ["register_security_info"] },
        "grant": [{ "require_strength": "phishing_resistant" }]
    });
    let (s, v) = e.policy(strong, true).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let office = session_from(&e, "alice", "10.4.4.4", Ok(&secret)).await;
    let r = e.app.regenerate_recovery_codes(&office, "alice", None).await;
    assert!(
        matches!(&r, Err(ServiceError::AuthenticationStrengthRequired(m)) if m.contains("phishing_resistant")),
        "{:?}",
        r.err()
    );
    let verification = IdentityVerification {
        method: VerificationMethod::InPersonId,
        note: "badge checked".into(),
    };
    let pass = match e
        .app
        .issue_tap(&Principal::Operator, "alice", Some(60), true, None, Some(verification))
        .await
        .unwrap()
    {
        TapOutcome::Issued(t) => t.pass,
        TapOutcome::PendingApproval { .. } => panic!("not privileged"),
    };
    let via_tap = session_from(&e, "alice", "10.4.4.4", Err(&pass)).await;
    e.app.regenerate_recovery_codes(&via_tap, "alice", None).await.unwrap();
}

#[tokio::test]
async fn a_rollout_wave_nudges_with_its_deadline_then_enforces() {
    let e = env().await;
    let secret = e.user("pat", &[], &["pilot"]).await;
    e.user("quinn", &[], &["sales"]).await;
    let deadline = T0 + 7 * 86_400;
    let wave = json!({
        "id": "pilot", "name": "Pilot", "position": 1,
        "audience": { "groups": ["pilot"] },
        "strength": "passwordless_mfa", "nudge_from": T0, "enforce_from": deadline
    });
    let (s, v) = e.call("POST", "/api/v1/rollout/waves", true, Some(wave)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    // Nudging: the sign-in completes and says what to register by when.
    let (s, flow) = e.signin("pat").await;
    assert_eq!(s, StatusCode::OK, "{flow}");
    let (s, done) = e.totp(&flow, &secret).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "complete");
    assert_eq!(
        done["registration_campaigns"],
        json!([{ "wave": "Pilot", "strength": "passwordless_mfa", "deadline": "2027-01-22T08:00:00Z" }]),
        "{done}"
    );
    let (_, waves) = e.call("GET", "/api/v1/rollout/waves", true, None).await;
    assert_eq!(waves[0]["phase"]["phase"], "nudge", "{waves}");
    assert_eq!(waves[0]["coverage"]["users"], 1);
    assert_eq!(waves[0]["coverage"]["meeting_target"], 0);
    assert_eq!(waves[0]["coverage"]["missing"], json!(["pat"]));

    // After the deadline the wave is a policy: password + TOTP no longer signs in.
    e.clock.set(deadline);
    let (s, v) = e.signin("pat").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(problem(&v), "urn:latchkey:problem:authentication-strength-required");
    assert!(v["detail"].as_str().unwrap().contains("Rollout wave 'Pilot'"), "{v}");
}

#[tokio::test]
async fn moving_a_user_to_another_department_changes_which_policies_apply() {
    let e = env().await;
    let secret = e.user("dora", &[], &["staff"]).await;
    let (s, v) = e
        .policy(
            json!({
                "id": "finance-pr", "name": "Finance needs phishing-resistant", "state": "enabled",
                "assignments": { "departments": { "include": ["Finance"] }, "applications": { "include": ["*"] } },
                "grant": [ { "require_strength": "phishing_resistant" } ]
            }),
            true,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, flow) = e.signin("dora").await;
    assert_eq!(s, StatusCode::OK, "{flow}");
    assert_eq!(e.totp(&flow, &secret).await.0, StatusCode::OK);

    let (s, u) = e
        .call(
            "PATCH",
            "/api/v1/users/dora",
            true,
            Some(json!({ "department": "Finance", "groups": ["staff", "payroll"] })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["department"], "Finance");
    assert_eq!(u["groups"], json!(["staff", "payroll"]));
    let (s, v) = e.signin("dora").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("Finance needs phishing-resistant"),
        "{v}"
    );
    let audit = e.app.store().audit_page(0, 1000, Some("user:dora")).await.unwrap();
    let ev = audit
        .events
        .iter()
        .find(|a| a.action == "user.update")
        .expect("audited");
    let details: Value = serde_json::from_str(&ev.details).unwrap();
    assert_eq!(details["before"]["department"], Value::Null);
    assert_eq!(details["after"]["department"], "Finance");

    // An empty department clears it; bad input is a problem, not a change.
    let (s, u) = e
        .call("PATCH", "/api/v1/users/dora", true, Some(json!({ "department": "" })))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(u["department"], Value::Null);
    let (s, v) = e
        .call("PATCH", "/api/v1/users/dora", true, Some(json!({ "roles": ["root"] })))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = e
        .call("PATCH", "/api/v1/users/dora", true, Some(json!({ "mfa": false })))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "unknown fields are refused");
    let (s, _) = e
        .call(
            "PATCH",
            "/api/v1/users/nobody",
            true,
            Some(json!({ "department": "x" })),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The last administrator keeps the role.
    e.user("root", &["admin"], &[]).await;
    let (s, v) = e
        .call("PATCH", "/api/v1/users/root", true, Some(json!({ "roles": [] })))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("last active administrator"),
        "{v}"
    );
    // Granting the role over the API is never one caller's act: this
    // owner-less token may not even ask (with an owner it would be a request
    // for a second person, which the insider tests walk); the local operator
    // grants it directly.
    let (s, v) = e
        .call("PATCH", "/api/v1/users/dora", true, Some(json!({ "roles": ["admin"] })))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("named person"), "{v}");
    assert!(e.app.user("dora").await.unwrap().roles.is_empty());
    let change = latchkey_service::users::UserChange {
        roles: Some(vec!["admin".into()]),
        ..Default::default()
    };
    e.app.update_user(&Principal::Operator, "dora", change).await.unwrap();
    let (s, v) = e
        .call("PATCH", "/api/v1/users/root", true, Some(json!({ "roles": [] })))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
