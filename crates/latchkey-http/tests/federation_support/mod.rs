//! Helpers shared by the OIDC and RADIUS integration tests: an in-process
//! App on SQLite with a ManualClock, cheap Argon2, users with TOTP.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, Response};
use axum::Router;
use http_body_util::BodyExt;
use latchkey_core::otp::{self, TotpParams};
use latchkey_core::password::PasswordParams;
use latchkey_core::VerifyMethod;
use latchkey_service::app::{Proof, SignInContext};
use latchkey_service::clock::ManualClock;
use latchkey_service::{App, Config, Principal};
use latchkey_store::{Keys, Store};
use tower::ServiceExt;

pub const T0: i64 = 1_800_000_000;
pub const ISSUER: &str = "http://lk.test";

pub struct Env {
    pub app: Arc<App>,
    pub clock: Arc<ManualClock>,
    pub admin: String,
    pub dir: std::path::PathBuf,
}

pub struct TestUser {
    pub name: String,
    pub password: String,
    pub secret: Vec<u8>,
}

impl Env {
    pub async fn new() -> Env {
        let dir = std::env::temp_dir().join(format!("lk-fed-{}", uuid_like()));
        let store = Store::open_sqlite(&dir).await.expect("sqlite");
        let keys = Keys::from_master(&[7u8; 32]);
        let mut config = Config::default();
        config.password = PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        config.public_url = ISSUER.into();
        let clock = Arc::new(ManualClock::new(T0));
        let app = Arc::new(App::new(store, keys, config, clock.clone()).expect("app"));
        let (_, admin) = app
            .create_api_token(&Principal::Operator, "tests")
            .await
            .expect("token");
        Env { app, clock, admin, dir }
    }

    pub fn router(&self) -> Router {
        latchkey_http::router(self.app.clone(), Default::default())
            .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))))
    }

    pub async fn send(&self, req: Request<Body>) -> (u16, axum::http::HeaderMap, Vec<u8>) {
        let resp: Response<Body> = self.router().oneshot(req).await.expect("infallible");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
        (status, headers, body)
    }

    pub async fn user(&self, name: &str) -> TestUser {
        let op = Principal::Operator;
        self.app
            .create_user(
                &op,
                name,
                &format!("{name} Example"),
                None,
                vec!["staff".into()],
                vec![],
            )
            .await
            .expect("user");
        let password = format!("{name}-correct-horse-battery");
        self.app
            .set_password(&op, name, &password, None)
            .await
            .expect("password");
        let e = self
            .app
            .enroll_totp(&op, name, None, None, None, None)
            .await
            .expect("enroll");
        let secret = otp::decode_secret(&e.secret_base32).expect("secret");
        let code = otp::totp_at(&secret, self.clock.now_secs() as u64, &TotpParams::default());
        self.app
            .confirm_totp(&op, name, &e.method.id, &code)
            .await
            .expect("confirm");
        TestUser {
            name: name.into(),
            password,
            secret,
        }
    }

    /// A code for a step after any used before: move the clock one step on.
    pub fn fresh_code(&self, u: &TestUser) -> String {
        self.clock.advance(30);
        otp::totp_at(&u.secret, self.clock.now_secs() as u64, &TotpParams::default())
    }

    /// Password + TOTP through the service layer; returns the session token.
    pub async fn session(&self, u: &TestUser, application: Option<&str>) -> String {
        let ctx = SignInContext {
            application: application.map(str::to_owned),
            source_ip: Some("127.0.0.1".into()),
            continues_to: None,
            ..Default::default()
        };
        let code = self.fresh_code(u);
        let f = self
            .app
            .signin_start(&u.name, Some(&u.password), &ctx)
            .await
            .expect("start");
        let o = self
            .app
            .signin_verify(&f.flow_id, VerifyMethod::Totp, Proof::Code(code), &ctx)
            .await
            .expect("verify");
        o.session_token.expect("complete")
    }
}

pub trait Now {
    fn now_secs(&self) -> i64;
}
impl Now for ManualClock {
    fn now_secs(&self) -> i64 {
        use latchkey_service::clock::Clock;
        self.now()
    }
}

pub fn uuid_like() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}
