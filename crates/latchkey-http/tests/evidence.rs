//! Evidence reports end to end in process: a seeded organisation (users in
//! departments, privileged users with and without a security key, an
//! SMS-only user, a removed method, an exception, an overdue break-glass
//! test, sign-ins at different strengths, alerts handled and open), then
//! the exact figures in JSON, CSV, HTML and PDF, and bad input refused.
//!
//! Set LATCHKEY_EVIDENCE_OUT=/some/dir to keep the rendered files for review.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, MockConnectInfo};
use axum::http::{header, Method, Request, StatusCode};
use latchkey_core::otp::{self, TotpParams};
use latchkey_core::{MethodKind, MethodState};
use latchkey_service::clock::{Clock, ManualClock};
use latchkey_service::{App, Principal};
use latchkey_store::{AuditEntry, Keys, NewMethod, SignInLogEntry, Store};
use serde_json::{json, Value};
use sqlx::Connection;
use tower::ServiceExt;

mod common;

/// 2023-11-14 22:13:35 UTC.
const T0: i64 = 1_700_000_015;
const DAY: i64 = 86_400;
const NOV_1: i64 = 1_698_796_800;

struct Env {
    app: Arc<App>,
    clock: Arc<ManualClock>,
    router: axum::Router,
    admin: String,
    /// The database, for what this branch has no API for (acknowledging alerts).
    url: String,
    _guard: (Option<tempfile::TempDir>, Option<common::PgDatabase>),
}

struct Resp {
    status: StatusCode,
    content_type: String,
    disposition: String,
    csp: String,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
        Env::on(store, url, (Some(dir), None)).await
    }

    /// `None` (after a loud line on stderr) without LATCHKEY_TEST_POSTGRES_URL.
    async fn postgres(test: &str) -> Option<Env> {
        let Ok(admin_url) = std::env::var(common::PG_ENV) else {
            eprintln!(
                "SKIPPED (PostgreSQL): {} is not set; {test} did not run against PostgreSQL",
                common::PG_ENV
            );
            return None;
        };
        let db = common::PgDatabase::create(&admin_url).await;
        let store = Store::connect(&db.url).await.unwrap();
        Some(Env::on(store, db.url.clone(), (None, Some(db))).await)
    }

    async fn on(store: Store, url: String, guard: (Option<tempfile::TempDir>, Option<common::PgDatabase>)) -> Env {
        let clock = Arc::new(ManualClock::new(T0));
        let config = common::cheap_config();
        let app = Arc::new(
            App::new(
                store,
                Keys::from_master(&[7u8; 32]),
                config,
                clock.clone() as Arc<dyn Clock>,
            )
            .unwrap(),
        );
        let (_, admin) = app.create_api_token(&Principal::Operator, "t").await.unwrap();
        let router = latchkey_http::router(app.clone(), Default::default())
            .layer(MockConnectInfo(SocketAddr::from(([203, 0, 113, 7], 1))));
        Env {
            app,
            clock,
            router,
            admin,
            url,
            _guard: guard,
        }
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
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
        self.send(req).await
    }

    /// Send as if from a TCP peer (the server reads `ConnectInfo`).
    async fn send(&self, mut req: Request<Body>) -> Resp {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([203, 0, 113, 7], 1))));
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let h = |k| {
            parts
                .headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        Resp {
            status: parts.status,
            content_type: h(header::CONTENT_TYPE),
            disposition: h(header::CONTENT_DISPOSITION),
            csp: h(header::CONTENT_SECURITY_POLICY),
            body: axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec(),
        }
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let r = self.call(method, path, Some(&self.admin.clone()), Some(body)).await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.text());
        r.json()
    }

    async fn user(&self, name: &str, dept: Option<&str>, roles: &[&str]) {
        self.ok(
            Method::POST,
            "/api/v1/users",
            json!({ "username": name, "display_name": format!("User {name}"), "department": dept, "roles": roles }),
        )
        .await;
    }

    /// A confirmed TOTP, set up by the local operator (someone else's
    /// enrolment for a privileged user needs a second approver over the API);
    /// returns its method id.
    async fn totp(&self, name: &str) -> String {
        let op = Principal::Operator;
        let e = self.app.enroll_totp(&op, name, None, None, None, None).await.unwrap();
        let secret = otp::decode_secret(&e.secret_base32).unwrap();
        let code = otp::totp_at(&secret, self.clock.now() as u64, &TotpParams::default());
        self.app.confirm_totp(&op, name, &e.method.id, &code).await.unwrap();
        self.clock.advance(30);
        e.method.id
    }

    async fn set_password(&self, name: &str, password: &str) {
        self.app
            .set_password(&Principal::Operator, name, password, None)
            .await
            .unwrap();
    }

    /// A method of a kind this branch has no enrolment API for (a security
    /// key, SMS), written as its feature would: with its audit event.
    async fn method(&self, name: &str, kind: MethodKind) {
        let user = self.app.store().user_by_username(name).await.unwrap().unwrap();
        let id = latchkey_store::method_id();
        let mut tx = self.app.store().write().await.unwrap();
        tx.insert_method(
            NewMethod {
                id: &id,
                user_id: &user.id,
                kind,
                label: "seeded",
                state: MethodState::Active,
                secret_sealed: None,
                params: json!({}),
            },
            self.clock.now(),
        )
        .await
        .unwrap();
        tx.audit(
            &AuditEntry::new(
                "seed",
                "method.add",
                format!("user:{name}"),
                json!({ "method_id": id, "kind": kind.as_str() }),
            ),
            self.clock.now_ms(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    async fn signins(
        &self,
        at: i64,
        result: &str,
        reason: Option<&str>,
        acr: Option<&str>,
        required: &[&str],
        n: usize,
    ) {
        for _ in 0..n {
            self.app
                .store()
                .log_signin_with_decision(
                    &SignInLogEntry {
                        at,
                        user_id: None,
                        username: "alice".into(),
                        application: Some("portal".into()),
                        source_ip: Some("198.51.100.4".into()),
                        result: result.into(),
                        reason: reason.map(Into::into),
                        methods: vec![],
                        acr: acr.map(Into::into),
                    },
                    (!required.is_empty())
                        .then(|| json!({ "outcome": "allow", "required_strengths": required, "applied": [], "report_only": [], "break_glass": false }))
                        .as_ref(),
                )
                .await
                .unwrap();
        }
    }

    async fn alert(&self, kind: &str, severity: &str, at: i64, acknowledged: bool) {
        let mut tx = self.app.store().write().await.unwrap();
        tx.insert_alert(kind, severity, "user:alice", &json!({}), at)
            .await
            .unwrap();
        tx.audit(
            &AuditEntry::new("seed", "alert.raise", "user:alice", json!({ "kind": kind })),
            self.clock.now_ms(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        if acknowledged {
            // Acknowledging belongs to the operations feature; the report only reads the column.
            let mut c = sqlx::AnyConnection::connect(&self.url).await.unwrap();
            sqlx::query("UPDATE policy_alerts SET acknowledged_at = $1 WHERE id = (SELECT MAX(id) FROM policy_alerts)")
                .bind(at + 60)
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

/// The seeded organisation; the report is generated two days after T0.
async fn seeded(e: Env) -> Env {
    e.user("root", Some("IT"), &["admin"]).await;
    e.user("helen", Some("IT"), &["helpdesk"]).await;
    e.user("sam", Some("Security"), &["security_admin"]).await;
    e.user("alice", Some("Finance"), &[]).await;
    e.user("bob", Some("Finance"), &[]).await;
    e.user("carol", Some("Sales"), &[]).await;
    e.user("dave", Some("Sales"), &[]).await;
    e.user("bg-1", None, &["admin"]).await;
    e.user("ann", Some("Audit"), &["auditor"]).await;

    e.method("root", MethodKind::Webauthn).await;
    e.totp("root").await;
    e.totp("helen").await;
    e.totp("alice").await;
    e.method("bob", MethodKind::Sms).await;
    let carol_totp = e.totp("carol").await;
    e.totp("dave").await;
    e.method("bg-1", MethodKind::Webauthn).await;
    e.totp("ann").await;

    // A report-only policy, changed once: two versions in the period.
    let policy = json!({
        "id": "mfa-all", "name": "MFA for everyone", "state": "report_only",
        "assignments": { "users": { "include": ["*"] }, "applications": { "include": ["*"] } },
        "grant": [{ "require_strength": "mfa" }]
    });
    e.ok(
        Method::POST,
        "/api/v1/policies",
        json!({ "policy": policy, "force": true }),
    )
    .await;
    let mut renamed = policy.clone();
    renamed["name"] = json!("MFA for all users");
    e.ok(
        Method::PUT,
        "/api/v1/policies/mfa-all",
        json!({ "policy": renamed, "force": true }),
    )
    .await;
    // Requested by helen; over the API a second person approves it, the
    // local operator makes it at once.
    e.app
        .create_exception(
            &Principal::Operator,
            "mfa-all",
            latchkey_core::policy::ExceptionSubject::User("alice".into()),
            "hardware token on order",
            Some("helen"),
            T0 + 7 * DAY,
        )
        .await
        .unwrap();
    e.ok(
        Method::PUT,
        "/api/v1/break-glass/bg-1",
        json!({ "test_interval_days": 1 }),
    )
    .await;

    // Sign-ins: in the period at three strengths, refused ones, and one before it.
    e.signins(
        T0 - DAY,
        "success",
        None,
        Some("phishing_resistant"),
        &["phishing_resistant"],
        6,
    )
    .await;
    e.signins(T0 - DAY, "success", None, Some("mfa"), &["mfa"], 10).await;
    e.signins(T0, "success", None, Some("passwordless_mfa"), &[], 4).await;
    e.signins(T0, "failure", Some("invalid_code"), None, &[], 3).await;
    e.signins(T0, "failure", Some("access_blocked"), None, &["mfa"], 2)
        .await;
    e.signins(NOV_1 - 10, "success", None, Some("mfa"), &["mfa"], 5).await;

    e.alert("push_fatigue", "high", T0, true).await;
    e.alert("push_fatigue", "high", T0 + 10, false).await;
    e.alert("password_spray", "critical", T0 + 20, true).await;
    e.alert("password_spray", "critical", NOV_1 - 10, false).await;

    // A day later carol's phone is gone: her only method is removed.
    e.clock.advance(DAY);
    let r = e
        .call(
            Method::DELETE,
            &format!("/api/v1/users/carol/methods/{carol_totp}"),
            Some(&e.admin.clone()),
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    // The break-glass test (due one day after designation) is now overdue.
    e.clock.advance(DAY);
    e
}

fn keep(name: &str, body: &[u8]) {
    if let Ok(dir) = std::env::var("LATCHKEY_EVIDENCE_OUT") {
        std::fs::write(std::path::Path::new(&dir).join(name), body).unwrap();
    }
}

const PERIOD: &str = "from=2023-11-01&to=2023-11-30";

#[tokio::test]
async fn the_report_states_the_exact_figures_in_every_format() {
    exact_figures(seeded(Env::new().await).await).await;
}

#[tokio::test]
async fn postgres_the_report_states_the_exact_figures() {
    if let Some(e) = Env::postgres("postgres_the_report_states_the_exact_figures").await {
        exact_figures(seeded(e).await).await;
    }
}

async fn exact_figures(e: Env) {
    let r = e
        .call(
            Method::GET,
            &format!("/api/v1/reports/evidence?{PERIOD}"),
            Some(&e.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.content_type.starts_with("application/json"));
    let j = r.json();
    keep("report.json", &r.body);
    let s = &j["summary"];
    // 9 users (ann the auditor counts as a user); covered: root, helen, alice,
    // bob (SMS), dave, bg-1, ann = 7; carol's only method was removed; sam has none.
    assert_eq!(s["users"], 9);
    assert_eq!(s["users_with_mfa"], 7);
    assert_eq!(s["mfa_coverage_pct"], 77.8);
    // Privileged: root, helen, sam, bg-1 (auditors only read); root and bg-1 hold keys.
    assert_eq!(s["privileged_users"], 4);
    assert_eq!(s["privileged_phishing_resistant"], 2);
    assert_eq!(s["privileged_phishing_resistant_pct"], 50.0);
    assert_eq!(s["sms_only_users"], 1);
    assert_eq!(s["active_exceptions"], 1);
    assert_eq!(s["break_glass_accounts"], 1);
    assert_eq!(s["break_glass_tests_overdue"], 1);
    assert_eq!(s["policies"], 1);
    assert_eq!(s["policy_changes_in_period"], 2);
    assert_eq!(s["signins_completed"], 20);
    assert_eq!(s["signins_phishing_resistant_pct"], 30.0);
    assert_eq!(s["detections"], 3);
    assert_eq!(s["detections_open"], 1);
    assert_eq!(s["audit_chain_ok"], true);
    let head = s["audit_head_hash"].as_str().unwrap().to_owned();
    assert_eq!(head.len(), 64);

    let coverage: Vec<(String, i64, i64, f64)> = j["coverage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["scope"].as_str().unwrap().to_owned(),
                c["users"].as_i64().unwrap(),
                c["with_mfa"].as_i64().unwrap(),
                c["pct"].as_f64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64, i64, f64)> = [
        ("All users", 9, 7, 77.8),
        ("Audit", 1, 1, 100.0),
        ("Finance", 2, 2, 100.0),
        ("IT", 2, 2, 100.0),
        ("Sales", 2, 1, 50.0),
        ("Security", 1, 0, 0.0),
        ("(no department)", 1, 1, 100.0),
    ]
    .into_iter()
    .map(|(a, b, c, d)| (a.to_owned(), b, c, d))
    .collect();
    assert_eq!(coverage, expected);

    let privileged: Vec<(String, Value)> = j["privileged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["username"].as_str().unwrap().to_owned(),
                p["strongest_method"].clone(),
            )
        })
        .collect();
    assert_eq!(
        privileged,
        vec![
            ("bg-1".to_owned(), json!("webauthn")),
            ("helen".to_owned(), json!("totp")),
            ("root".to_owned(), json!("webauthn")),
            ("sam".to_owned(), Value::Null),
        ]
    );
    assert_eq!(j["sms_only"][0]["username"], "bob");
    assert_eq!(j["exceptions"][0]["subject"], "user:alice");
    assert_eq!(j["exceptions"][0]["approved_by"], "cli:operator");
    assert_eq!(j["exceptions"][0]["requested_by"], "helen");
    assert_eq!(j["exceptions"][0]["expires_at"], T0 + 7 * DAY);
    // Generated at T0 + 2 days + 3 minutes (six TOTP enrolments moved the clock 30 s each).
    let now = T0 + 2 * DAY + 180;
    assert_eq!(j["generated_at"], now);
    assert_eq!(j["exceptions"][0]["days_left"], 4);
    assert_eq!(j["break_glass"][0]["username"], "bg-1");
    assert_eq!(j["break_glass"][0]["test_overdue"], true);
    assert_eq!(j["break_glass"][0]["next_test_due"], T0 + 180 + DAY);
    assert_eq!(j["break_glass"][0]["last_test_at"], Value::Null);
    assert_eq!(j["policies"][0]["version"], 2);
    assert_eq!(j["policies"][0]["name"], "MFA for all users");
    assert_eq!(j["policies"][0]["changed_by"], "token:t");

    // Enforcement: 20 completed in the period (the 5 before it are not counted).
    let en = &j["enforcement"];
    assert_eq!(
        (en["attempts"].as_i64(), en["completed"].as_i64(), en["failed"].as_i64()),
        (Some(25), Some(20), Some(5))
    );
    let met: Vec<(String, i64, f64)> = en["met"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().into(),
                m["count"].as_i64().unwrap(),
                m["pct"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        met,
        vec![
            ("mfa".into(), 20, 100.0),
            ("passwordless_mfa".into(), 10, 50.0),
            ("phishing_resistant".into(), 6, 30.0)
        ]
    );
    assert_eq!(
        en["required"],
        json!([
            { "strength": "mfa", "completed": 10, "met": 10, "pct": 100.0 },
            { "strength": "phishing_resistant", "completed": 6, "met": 6, "pct": 100.0 }
        ])
    );
    assert_eq!(en["failures_by_reason"][0]["name"], "invalid_code");
    assert_eq!(en["failures_by_reason"][0]["count"], 3);

    assert_eq!(
        j["detections"]["by_kind"],
        json!([
            { "kind": "password_spray", "severity": "critical", "total": 1, "handled": 1, "open": 0 },
            { "kind": "push_fatigue", "severity": "high", "total": 2, "handled": 1, "open": 1 }
        ])
    );

    // Coverage over time: daily from Nov 1 to now (Nov 16 22:13). Everyone
    // exists from T0; carol's removal on day T0+1 shows from Nov 16.
    let points = j["coverage_over_time"].as_array().unwrap();
    assert_eq!(points.len(), 17);
    let at = |t: i64| points.iter().find(|p| p["at"] == t).unwrap();
    assert_eq!(
        (
            at(NOV_1 + 13 * DAY)["users"].as_i64(),
            at(NOV_1 + 13 * DAY)["with_mfa"].as_i64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(at(NOV_1 + 14 * DAY)["with_mfa"], 8);
    assert_eq!(at(NOV_1 + 14 * DAY)["pct"], 88.9);
    assert_eq!(at(NOV_1 + 15 * DAY)["with_mfa"], 7);
    assert_eq!(points.last().unwrap()["at"], now);
    assert_eq!(
        j["methods_mix"][0],
        json!({ "kind": "webauthn", "users": 2, "pct": 22.2 })
    );

    // Generating the report is itself audited, naming the head it reported;
    // so each later report names a new head (the one after that event).
    let heads = || async {
        let events = e
            .app
            .store()
            .audit_page(0, 10_000, Some("report:evidence"))
            .await
            .unwrap()
            .events;
        let head = e.app.store().verify_audit_chain().await.unwrap().head_hash;
        (events, head)
    };
    let (events, head_now) = heads().await;
    assert_eq!(events.len(), 1);
    assert!(events[0].details.contains(&head), "{}", events[0].details);
    let head = head_now;

    // CSV: the same figures, one table per section.
    let r = e
        .call(
            Method::GET,
            &format!("/api/v1/reports/evidence?{PERIOD}&format=csv"),
            Some(&e.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type.starts_with("text/csv"));
    assert!(
        r.disposition.contains("latchkey-evidence-2023-11-01-2023-11-30.csv"),
        "{}",
        r.disposition
    );
    keep("report.csv", &r.body);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(r.body.as_slice());
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let section = |name: &str| -> Vec<Vec<String>> {
        let start = rows
            .iter()
            .position(|r| r[0] == format!("# {name}"))
            .unwrap_or_else(|| panic!("section {name}"));
        rows[start + 1..]
            .iter()
            .take_while(|r| !r[0].starts_with("# "))
            .cloned()
            .collect()
    };
    let summary = section("summary");
    let figure = |k: &str| summary.iter().find(|r| r[0] == k).unwrap()[1].clone();
    assert_eq!(figure("mfa_coverage_pct"), "77.8");
    assert_eq!(figure("privileged_phishing_resistant"), "2");
    assert_eq!(figure("audit_head_hash"), head);
    let cov = section("coverage");
    assert_eq!(cov[0], ["scope", "users", "with_mfa", "phishing_resistant", "pct"]);
    assert!(cov.contains(&vec!["Sales".into(), "2".into(), "1".into(), "0".into(), "50.0".into()]));
    let det = section("detections");
    assert!(det.contains(&vec![
        "push_fatigue".into(),
        "high".into(),
        "2".into(),
        "1".into(),
        "1".into()
    ]));
    let enf = section("enforcement");
    assert!(enf.contains(&vec![
        "met_at_least".into(),
        "phishing_resistant".into(),
        "6".into(),
        "30.0".into()
    ]));
    assert_eq!(section("sms_only_users")[1][0], "bob");

    let head = heads().await.1;
    // HTML: the figures, the charts, no script.
    let r = e
        .call(
            Method::GET,
            &format!("/api/v1/reports/evidence?{PERIOD}&format=html"),
            Some(&e.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type.starts_with("text/html"));
    keep("report.html", &r.body);
    let html = r.text();
    for needle in [
        "77.8%",
        "7 of 9 active users",
        "50.0%",
        "bob",
        "hardware token on order",
        "OVERDUE",
        "MFA for all users",
        "30.0%",
        "1 open",
        &head,
        "<svg",
        "<polyline",
    ] {
        assert!(html.contains(needle), "HTML lacks {needle}");
    }
    assert!(!html.contains("<script"));

    let head = heads().await.1;
    // PDF: a real document with the figures in its (uncompressed) text.
    let r = e
        .call(
            Method::GET,
            &format!("/api/v1/reports/evidence?{PERIOD}&format=pdf"),
            Some(&e.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type, "application/pdf");
    assert!(r.disposition.starts_with("attachment"));
    keep("report.pdf", &r.body);
    assert!(r.body.starts_with(b"%PDF-"));
    let pdf = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(
        pdf.matches("/Type /Page\n").count() + pdf.matches("/Type /Page ").count(),
        EXPECTED_PAGES,
        "page objects"
    );
    for n in 1..=EXPECTED_PAGES {
        let footer = format!("page {n} of {EXPECTED_PAGES}");
        assert!(pdf.contains(&footer), "PDF lacks footer {footer}");
    }
    for needle in [
        "77.8%",
        "7 of 9 active users",
        "50.0%",
        "hardware token on order",
        "OVERDUE",
        "30.0%",
        "Active users without a backup method",
        "Leavers in the period",
        head.as_str(),
    ] {
        assert!(pdf.contains(needle), "PDF lacks {needle}");
    }
}

// Summary, coverage and people lists (backups and leavers included), activity, audit.
const EXPECTED_PAGES: usize = 6;

#[tokio::test]
async fn bad_input_is_refused_with_a_problem_document() {
    let e = Env::new().await;
    for (query, status) in [
        ("from=2023-11-30&to=2023-11-01", StatusCode::BAD_REQUEST),
        ("from=2023-13-01&to=2023-11-01", StatusCode::BAD_REQUEST),
        ("from=yesterday&to=2023-11-01", StatusCode::BAD_REQUEST),
        ("from=2023-11-01&to=2023-11-30&format=docx", StatusCode::BAD_REQUEST),
        ("from=2023-11-01", StatusCode::BAD_REQUEST),
        ("from=2023-11-01&to=2023-11-30&colour=red", StatusCode::BAD_REQUEST),
        ("from=1990-01-01&to=2023-11-30", StatusCode::BAD_REQUEST),
    ] {
        let r = e
            .call(
                Method::GET,
                &format!("/api/v1/reports/evidence?{query}"),
                Some(&e.admin),
                None,
            )
            .await;
        assert_eq!(r.status, status, "{query}: {}", r.text());
        assert!(
            r.content_type.starts_with("application/problem+json"),
            "{query}: {}",
            r.content_type
        );
        assert!(r.json()["detail"].is_string());
    }
    let r = e
        .call(Method::GET, &format!("/api/v1/reports/evidence?{PERIOD}"), None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.content_type.starts_with("application/problem+json"));
}

#[tokio::test]
async fn only_admins_and_auditors_may_read_evidence() {
    let e = Env::new().await;
    for (name, roles) in [("aud", vec!["auditor"]), ("hd", vec!["helpdesk"]), ("u", vec![])] {
        e.user(name, None, &roles).await;
        e.set_password(name, "correct horse battery staple").await;
    }
    // Sessions through the App, as the web console would have them.
    for (name, allowed) in [("aud", true), ("hd", false), ("u", false)] {
        let user = e.app.store().user_by_username(name).await.unwrap().unwrap();
        let session = latchkey_service::Principal::Session {
            session: fake_session(&user.id),
            user,
        };
        let period = latchkey_service::evidence::parse_period("2023-11-01", "2023-11-30").unwrap();
        let r = e
            .app
            .evidence_report(&session, period, latchkey_service::evidence::EvidenceFormat::Json)
            .await;
        assert_eq!(r.is_ok(), allowed, "{name}: {:?}", r.err());
    }
}

fn fake_session(user_id: &str) -> latchkey_store::SessionRecord {
    latchkey_store::SessionRecord {
        id: "s".into(),
        user_id: user_id.into(),
        amr: vec!["pwd".into(), "otp".into()],
        methods: vec!["password".into(), "totp".into()],
        acr: "mfa".into(),
        authenticated_at: T0,
        idle_expires_at: T0 + 3600,
        expires_at: T0 + 3600,
    }
}

#[test]
fn openapi_describes_the_report() {
    let doc: Value = serde_json::from_str(&latchkey_http::api::openapi_json()).unwrap();
    let op = &doc["paths"]["/api/v1/reports/evidence"]["get"];
    assert!(op.is_object(), "missing from /openapi.json");
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["from", "to", "format"]);
    assert!(op["responses"]["200"]["content"]["application/pdf"].is_object());
}

impl Env {
    /// An auditor (or other role) signed in with password + TOTP; returns the session token.
    async fn session(&self, name: &str, roles: &[&str]) -> String {
        self.user(name, None, roles).await;
        self.set_password(name, common::PASSWORD).await;
        let op = Principal::Operator;
        let e = self.app.enroll_totp(&op, name, None, None, None, None).await.unwrap();
        let secret = otp::decode_secret(&e.secret_base32).unwrap();
        let code = |e: &Env| otp::totp_at(&secret, e.clock.now() as u64, &TotpParams::default());
        self.app
            .confirm_totp(&op, name, &e.method.id, &code(self))
            .await
            .unwrap();
        self.clock.advance(30);
        let r = self
            .call(
                Method::POST,
                "/api/v1/signin",
                None,
                Some(json!({ "username": name, "password": common::PASSWORD })),
            )
            .await;
        let flow = r.json()["flow_id"].as_str().unwrap().to_owned();
        let r = self
            .call(
                Method::POST,
                &format!("/api/v1/signin/{flow}/verify"),
                None,
                Some(json!({ "method": "totp", "code": code(self) })),
            )
            .await;
        r.json()["session_token"].as_str().unwrap().to_owned()
    }

    async fn page(&self, path: &str, session: &str) -> Resp {
        let req = Request::builder()
            .uri(path)
            .header(header::COOKIE, format!("lk_session={session}"))
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }
}

#[tokio::test]
async fn the_console_shows_the_report_and_offers_downloads() {
    let e = Env::new().await;
    e.user("bob", Some("Finance"), &[]).await;
    e.method("bob", MethodKind::Sms).await;
    let auditor = e.session("ann", &["auditor"]).await;

    let r = e.page("/admin/reports", &auditor).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains(r#"name="from""#) && r.text().contains(r#"type="date""#));
    assert!(r.csp.contains("style-src 'self'"), "{}", r.csp);

    // ann (TOTP) and bob (SMS): 2 of 2 covered, 1 on SMS only.
    let r = e.page("/admin/reports?from=2023-11-01&to=2023-11-30", &auditor).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let html = r.text();
    keep("console.html", &r.body);
    for needle in [
        "100.0%",
        "2 of 2 active users",
        "Users on SMS or voice only",
        "/static/evidence.css",
        "format=pdf",
        "<svg",
    ] {
        assert!(html.contains(needle), "console page lacks {needle}");
    }
    // Nobody privileged: the share is "n/a", not a failing 0 %.
    assert!(html.contains("n/a") && html.contains("0 of 0 privileged users"));
    // The page's CSP allows no inline style: the report's stylesheet is a file.
    assert!(!html.contains("<style"));
    let css = e.page("/static/evidence.css", &auditor).await;
    assert!(css.content_type.starts_with("text/css") && css.text().contains("@media print"));

    let r = e.page("/admin/reports?from=2023-11-30&to=2023-11-01", &auditor).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("after its"), "{}", r.text());

    let r = e
        .page(
            "/admin/reports/evidence?from=2023-11-01&to=2023-11-30&format=pdf",
            &auditor,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type, "application/pdf");
    assert!(r.disposition.starts_with("attachment") && r.body.starts_with(b"%PDF-"));
    let r = e
        .page(
            "/admin/reports/evidence?from=2023-11-01&to=2023-11-30&format=csv",
            &auditor,
        )
        .await;
    assert!(
        r.text().contains("# summary") && r.text().contains("sms_only_users,1"),
        "{}",
        r.text()
    );

    // Helpdesk agents do not read evidence.
    let helpdesk = e.session("hal", &["helpdesk"]).await;
    let r = e.page("/admin/reports?from=2023-11-01&to=2023-11-30", &helpdesk).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// Security finding 16: the standalone HTML report, served from the API's
/// origin, ran under no Content-Security-Policy.
#[tokio::test]
async fn evidence_html_report_carries_a_content_security_policy() {
    let e = Env::new().await;
    e.user("mallory", Some("<script>alert(1)</script>"), &[]).await;
    e.method("mallory", MethodKind::Sms).await;
    let r = e
        .call(
            Method::GET,
            &format!("/api/v1/reports/evidence?{PERIOD}&format=html"),
            Some(&e.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let directives: Vec<&str> = r.csp.split(';').map(str::trim).collect();
    for d in [
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(directives.contains(&d), "CSP lacks {d}: {}", r.csp);
    }
    assert!(!r.csp.contains("script-src"), "{}", r.csp);
    // The one inline thing the policy allows is the one the document has.
    let html = r.text();
    assert!(html.contains("<style>") && !html.contains("<script"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    // The other formats are data, not documents a browser renders on this origin.
    let r = e
        .call(
            Method::GET,
            &format!("/api/v1/reports/evidence?{PERIOD}&format=csv"),
            Some(&e.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.csp.is_empty(), "{}", r.csp);
}
