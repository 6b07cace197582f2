//! In-process harness for the HTTP API: a real store (SQLite in a temp dir, or
//! a fresh PostgreSQL database), cheap Argon2, a `ManualClock`, and the
//! production router driven with `tower::ServiceExt::oneshot`. Time moves only
//! when a test moves the clock.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, MockConnectInfo};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use latchkey_core::otp::{self, TotpParams};
use latchkey_core::password::PasswordParams;
use latchkey_service::clock::{Clock, ManualClock};
use latchkey_service::{App, Config, Principal};
use latchkey_store::{Keys, Store};
use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use tower::ServiceExt;

/// Start of a TOTP period (divisible by 30), plus a few seconds, so a test
/// that moves the clock by less than 25 s stays inside one period.
pub const T0: i64 = 1_700_000_010 + 5;
pub const PASSWORD: &str = "correct horse battery staple";
pub const DEFAULT_PEER: [u8; 4] = [203, 0, 113, 7];
pub const PG_ENV: &str = "LATCHKEY_TEST_POSTGRES_URL";
pub const PROBLEM_PREFIX: &str = "urn:latchkey:problem:";

/// One test per backend for each `case => sqlite_name, postgres_name;`:
/// the case runs on SQLite, and on PostgreSQL when `LATCHKEY_TEST_POSTGRES_URL`
/// is set (skipped loudly otherwise). Needs `#[macro_use] mod common;`.
#[allow(unused_macros)]
macro_rules! backends {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test]
        async fn $sqlite() {
            $case($crate::common::Harness::sqlite().await).await;
        }

        #[tokio::test]
        async fn $postgres() {
            let Some(h) = $crate::common::Harness::postgres(stringify!($postgres)).await else { return };
            $case(h).await;
        }
    )*};
}

pub struct Harness {
    pub app: Arc<App>,
    pub clock: Arc<ManualClock>,
    router: Router,
    /// Admin-scoped API token (made through the app, as the CLI does).
    pub admin: String,
    _guard: Guard,
}

enum Guard {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

pub fn cheap_config() -> Config {
    let mut config = Config::default();
    config.password = PasswordParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    config
}

impl Harness {
    pub async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(dir.path()).await.expect("open sqlite");
        Self::build(store, Guard::Sqlite(dir), cheap_config()).await
    }

    pub async fn sqlite_with(config: Config) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(dir.path()).await.expect("open sqlite");
        Self::build(store, Guard::Sqlite(dir), config).await
    }

    /// `None` (after a loud line on stderr) without `LATCHKEY_TEST_POSTGRES_URL`.
    pub async fn postgres(test: &str) -> Option<Harness> {
        let Ok(admin_url) = std::env::var(PG_ENV) else {
            eprintln!("SKIPPED (PostgreSQL): {PG_ENV} is not set; {test} did not run against PostgreSQL");
            return None;
        };
        let db = PgDatabase::create(&admin_url).await;
        let store = Store::connect(&db.url).await.expect("connect to the test database");
        Some(Self::build(store, Guard::Postgres(db), cheap_config()).await)
    }

    async fn build(store: Store, guard: Guard, config: Config) -> Harness {
        let clock = Arc::new(ManualClock::new(T0));
        let app = Arc::new(
            App::new(
                store,
                Keys::from_master(&[7u8; 32]),
                config,
                clock.clone() as Arc<dyn Clock>,
            )
            .expect("app"),
        );
        let (_, admin) = app
            .create_api_token(&Principal::Operator, "t")
            .await
            .expect("admin token");
        let router = latchkey_http::router(app.clone(), Default::default())
            .layer(MockConnectInfo(SocketAddr::from((DEFAULT_PEER, 40000))));
        Harness {
            app,
            clock,
            router,
            admin,
            _guard: guard,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn advance(&self, secs: i64) {
        self.clock.advance(secs)
    }

    // ---- HTTP ------------------------------------------------------------

    /// Send a request as it arrives from a TCP peer at `peer`. The server's
    /// `PeerIp` reads the `ConnectInfo` extension that
    /// `into_make_service_with_connect_info` inserts in production, so we
    /// insert it too (the `MockConnectInfo` layer alone is not seen by it).
    pub async fn send_from(&self, peer: [u8; 4], mut req: Request<Body>) -> Resp {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((peer, 40000))));
        let resp = self.router.clone().oneshot(req).await.expect("infallible");
        Resp::read(resp).await
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        self.send_from(DEFAULT_PEER, req).await
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        self.call_from(DEFAULT_PEER, method, path, token, body).await
    }

    pub async fn call_from(
        &self,
        peer: [u8; 4],
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&v).unwrap()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send_from(peer, req).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.call(Method::GET, path, token, None).await
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.call(Method::POST, path, token, Some(body)).await
    }
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.call(Method::PUT, path, token, Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.call(Method::DELETE, path, token, None).await
    }

    // ---- scenario steps (each asserts its own success) ---------------------

    pub async fn create_user(&self, username: &str, roles: &[&str]) -> Value {
        let r = self
            .post(
                "/api/v1/users",
                Some(&self.admin),
                json!({ "username": username, "display_name": format!("User {username}"), "roles": roles }),
            )
            .await;
        r.expect(StatusCode::CREATED);
        r.json
    }

    pub async fn set_password(&self, username: &str, token: &str) {
        self.put(
            &format!("/api/v1/users/{username}/password"),
            Some(token),
            json!({ "password": PASSWORD }),
        )
        .await
        .expect(StatusCode::NO_CONTENT);
    }

    /// Start TOTP enrolment with `token`; returns (method id, raw secret, the response).
    pub async fn enroll_totp(&self, username: &str, token: &str) -> (String, Vec<u8>, Resp) {
        let r = self
            .post(
                &format!("/api/v1/users/{username}/methods/totp"),
                Some(token),
                json!({}),
            )
            .await;
        r.expect(StatusCode::CREATED);
        let id = r.json["id"].as_str().unwrap().to_owned();
        let secret = otp::decode_secret(r.json["secret"].as_str().unwrap()).expect("base32 secret");
        (id, secret, r)
    }

    pub async fn confirm_totp(&self, username: &str, token: &str, id: &str, secret: &[u8]) -> Resp {
        self.post(
            &format!("/api/v1/users/{username}/methods/totp/{id}/confirm"),
            Some(token),
            json!({ "code": self.code(secret) }),
        )
        .await
    }

    /// A user with a password and a confirmed TOTP, set up by the admin token.
    /// Returns the TOTP secret. A privileged user (any role) is set up by the
    /// local operator instead: someone else's change to their credentials
    /// needs a second approver over the API.
    pub async fn user_with_totp(&self, username: &str, roles: &[&str]) -> Vec<u8> {
        self.create_user(username, roles).await;
        if !roles.is_empty() {
            return self.provision_as_operator(username).await;
        }
        self.set_password(username, &self.admin.clone()).await;
        let (id, secret, _) = self.enroll_totp(username, &self.admin.clone()).await;
        self.confirm_totp(username, &self.admin.clone(), &id, &secret)
            .await
            .expect(StatusCode::OK);
        secret
    }

    /// Password and confirmed TOTP set by the local operator (no approval
    /// binds it); returns the TOTP secret.
    pub async fn provision_as_operator(&self, username: &str) -> Vec<u8> {
        let op = Principal::Operator;
        self.app
            .set_password(&op, username, PASSWORD, None)
            .await
            .expect("operator sets the password");
        let e = self
            .app
            .enroll_totp(&op, username, None, None, None, None)
            .await
            .expect("operator enrols TOTP");
        let secret = otp::decode_secret(&e.secret_base32).expect("base32 secret");
        self.app
            .confirm_totp(&op, username, &e.method.id, &self.code(&secret))
            .await
            .expect("operator confirms TOTP");
        secret
    }

    /// An admin-scoped API token owned by `owner` (made by the operator, as
    /// `latchkey admin api-token create --owner` does).
    pub async fn owned_token(&self, name: &str, owner: &str) -> String {
        self.app
            .create_scoped_api_token(&Principal::Operator, name, &["admin"], Some(owner))
            .await
            .expect("owned token")
            .1
    }

    /// A raw connection to the harness's database, for tests that tamper
    /// with it behind the service's back.
    pub async fn raw(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = match &self._guard {
            Guard::Sqlite(dir) => format!("sqlite://{}", dir.path().join("latchkey.db").display()),
            Guard::Postgres(db) => db.url.clone(),
        };
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("raw pool connects")
    }

    /// Grant a policy exception the way it must be: requested by one
    /// security administrator (`requester`, made on first use with an owned
    /// token), approved by another (`approver`). Returns the exception.
    pub async fn grant_exception(&self, mut body: Value) -> Value {
        let mut tokens = vec![];
        for name in ["requester", "approver"] {
            if self.app.user(name).await.is_err() {
                self.create_user(name, &["security_admin", "admin"]).await;
            }
            tokens.push(self.owned_token(&format!("{name}-token-{}", tokens.len()), name).await);
        }
        body.as_object_mut().unwrap().remove("requested_by");
        let r = self.post("/api/v1/policy-exceptions", Some(&tokens[0]), body).await;
        r.expect(StatusCode::ACCEPTED);
        let request = r.json["request_id"].as_str().unwrap().to_owned();
        let r = self
            .post(
                &format!("/api/v1/change-requests/{request}/approve"),
                Some(&tokens[1]),
                json!({}),
            )
            .await;
        r.expect(StatusCode::OK);
        let id = r.json["result_id"]
            .as_str()
            .expect("the approval names the exception")
            .to_owned();
        let list = self.get("/api/v1/policy-exceptions", Some(&self.admin)).await;
        list.expect(StatusCode::OK);
        let all = list
            .json
            .as_array()
            .cloned()
            .or_else(|| list.json["exceptions"].as_array().cloned())
            .unwrap_or_default();
        all.into_iter()
            .find(|e| e["id"] == id || e["exception"]["id"] == id)
            .unwrap_or_else(|| json!({ "id": id }))
    }

    /// The TOTP code at the clock's current time.
    pub fn code(&self, secret: &[u8]) -> String {
        otp::totp_at(secret, self.now() as u64, &TotpParams::default())
    }

    /// A 6-digit code that is valid for no step in the accepted window.
    pub fn wrong_code(&self, secret: &[u8]) -> String {
        let valid: Vec<String> = [-30, 0, 30]
            .iter()
            .map(|d| otp::totp_at(secret, (self.now() + d) as u64, &TotpParams::default()))
            .collect();
        ["000000", "111111", "222222", "333333"]
            .into_iter()
            .find(|c| !valid.iter().any(|v| v == c))
            .unwrap()
            .to_owned()
    }

    /// POST /signin with a password; asserts 200 and returns the body.
    pub async fn start_with_password(&self, username: &str, password: &str) -> Resp {
        self.post(
            "/api/v1/signin",
            None,
            json!({ "username": username, "password": password }),
        )
        .await
    }

    pub async fn verify(&self, flow_id: &str, body: Value) -> Resp {
        self.post(&format!("/api/v1/signin/{flow_id}/verify"), None, body).await
    }

    /// Password + TOTP. Moves the clock one TOTP period first so the code is
    /// always a fresh one (the previous period's code may have been spent).
    pub async fn signin_mfa(&self, username: &str, secret: &[u8]) -> String {
        self.advance(30);
        let r = self.start_with_password(username, PASSWORD).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.json["state"], "second_factor_required", "{}", r.json);
        let flow = r.json["flow_id"].as_str().unwrap().to_owned();
        let r = self
            .verify(&flow, json!({ "method": "totp", "code": self.code(secret) }))
            .await;
        r.expect(StatusCode::OK);
        assert_eq!(r.json["state"], "complete", "{}", r.json);
        r.json["session_token"].as_str().unwrap().to_owned()
    }

    /// Password + TOTP from `peer` (a step on from the last code); returns
    /// the verify response, or the password step's if that failed.
    pub async fn signin_mfa_from(&self, peer: [u8; 4], user: &str, secret: &[u8]) -> Resp {
        self.advance(30);
        let r = self
            .call_from(
                peer,
                Method::POST,
                "/api/v1/signin",
                None,
                Some(json!({ "username": user, "password": PASSWORD })),
            )
            .await;
        if r.status != StatusCode::OK {
            return r;
        }
        let flow = r.json["flow_id"].as_str().unwrap().to_owned();
        self.call_from(
            peer,
            Method::POST,
            &format!("/api/v1/signin/{flow}/verify"),
            None,
            Some(json!({ "method": "totp", "code": self.code(secret) })),
        )
        .await
    }

    /// An enabled policy: `user` signs in only from a compliant device.
    pub async fn require_compliant_device(&self, user: &str) {
        let policy = json!({
            "id": "compliant-only", "name": "compliant-only", "state": "enabled",
            "assignments": { "users": { "include": [user] }, "applications": { "include": ["*"] } },
            "grant": ["require_compliant_device"]
        });
        self.post(
            "/api/v1/policies",
            Some(&self.admin),
            json!({ "policy": policy, "force": true }),
        )
        .await
        .expect(StatusCode::CREATED);
    }

    pub async fn issue_tap(&self, token: &str, username: &str, extra: Value) -> Resp {
        let mut body = json!({
            "lifetime_minutes": 60,
            "verification": { "method": "callback", "note": "called back the number on file" }
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if v.is_null() {
                    b.remove(k);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        self.post(
            &format!("/api/v1/users/{username}/temporary-access-passes"),
            Some(token),
            body,
        )
        .await
    }

    /// POST /signin without a password, then verify the pass.
    pub async fn signin_tap(&self, username: &str, pass: &str) -> Resp {
        let r = self.post("/api/v1/signin", None, json!({ "username": username })).await;
        r.expect(StatusCode::OK);
        assert_eq!(r.json["state"], "started");
        let flow = r.json["flow_id"].as_str().unwrap().to_owned();
        self.verify(&flow, json!({ "method": "temporary_access_pass", "pass": pass }))
            .await
    }

    /// Every audit event, paging with `after`.
    pub async fn all_audit_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let r = self
                .get(&format!("/api/v1/audit?after={after}&limit=7"), Some(&self.admin))
                .await;
            r.expect(StatusCode::OK);
            let events = r.json["events"].as_array().unwrap().clone();
            if events.is_empty() {
                break;
            }
            after = r.json["next_after"].as_i64().unwrap();
            out.extend(events);
        }
        out
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The body as JSON, or `Value::Null` when it is not JSON.
    pub json: Value,
}

impl Resp {
    async fn read(resp: axum::response::Response) -> Resp {
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.expect("body").to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
            json,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text());
        self
    }

    /// Assert a problem document with this status and `urn:latchkey:problem:<slug>`.
    #[track_caller]
    pub fn expect_problem(&self, status: StatusCode, slug: &str) -> &Self {
        self.expect(status);
        self.assert_is_problem();
        assert_eq!(
            self.json["type"],
            format!("{PROBLEM_PREFIX}{slug}"),
            "problem type; body: {}",
            self.text()
        );
        self
    }

    /// Content type application/problem+json; body with type, title, status, detail.
    #[track_caller]
    pub fn assert_is_problem(&self) {
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            ct.starts_with("application/problem+json"),
            "content-type {ct:?} for {}; body: {}",
            self.status,
            self.text()
        );
        let t = self.json["type"].as_str().unwrap_or("");
        assert!(
            t.starts_with(PROBLEM_PREFIX),
            "problem type {t:?}; body: {}",
            self.text()
        );
        assert_eq!(
            self.json["status"].as_u64(),
            Some(self.status.as_u16() as u64),
            "{}",
            self.text()
        );
        assert!(
            self.json["title"].is_string() && self.json["detail"].is_string(),
            "{}",
            self.text()
        );
    }

    pub fn problem_type(&self) -> &str {
        self.json["type"].as_str().unwrap_or("")
    }

    pub fn retry_after(&self) -> Option<i64> {
        self.headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }
}

// ---- PostgreSQL --------------------------------------------------------------

/// A database created for one test and dropped (WITH FORCE) when this value
/// is, even after a panic.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str) -> PgDatabase {
        use rand::Rng;
        let name = format!("lk_test_srv_{:016x}", rand::thread_rng().gen::<u64>());
        let mut conn = sqlx::postgres::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("{PG_ENV}={admin_url}: cannot connect: {e}"));
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e} (does the role have CREATEDB?)"));
        conn.close().await.ok();
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (admin_url, None),
        };
        let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
        let host = match base[scheme_end..].find('/') {
            Some(i) => &base[..scheme_end + i],
            None => base,
        };
        let url = match query {
            Some(q) => format!("{host}/{name}?{q}"),
            None => format!("{host}/{name}"),
        };
        PgDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::postgres::PgConnection::connect(&admin_url).await.ok()?;
                if let Err(e) = conn
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                {
                    eprintln!("warning: could not drop test database {name}: {e}");
                }
                conn.close().await.ok()
            })
        })
        .join();
    }
}
