//! Operations in process: the sign-in log and its API, retention, timelines,
//! the detection engine over a seeded scenario (exact set of alerts), risk fed
//! to conditional access at real sign-ins, alert handling, the webhook and
//! syslog sinks, and /metrics. The clock moves by hand; nothing sleeps.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::{cheap_config, Harness, PASSWORD};
use latchkey_core::detect::GeoTable;
use latchkey_service::app::SignInContext;
use latchkey_service::Principal;
use latchkey_store::SignInLogEntry;
use serde_json::{json, Value};

const BERLIN: [u8; 4] = [192, 0, 2, 10];
const PARIS: [u8; 4] = [198, 51, 100, 200];
/// Not geolocated: its risk comes from the spray alone.
const SPRAYER: [u8; 4] = [100, 64, 0, 23];
const OFFICE: [u8; 4] = [10, 20, 0, 5];

fn geo() -> Arc<GeoTable> {
    Arc::new(
        GeoTable::parse_csv(
            "cidr,latitude,longitude,label\n192.0.2.0/24,52.52,13.40,Berlin\n198.51.100.0/24,40.71,-74.01,New York\n198.51.100.128/25,48.85,2.35,Paris\n",
        )
        .unwrap(),
    )
}

async fn harness() -> Harness {
    let mut c = cheap_config();
    c.ops.geo = geo();
    Harness::sqlite_with(c).await
}

async fn wrong_password_from(h: &Harness, peer: [u8; 4], user: &str) {
    let r = h
        .call_from(
            peer,
            Method::POST,
            "/api/v1/signin",
            None,
            Some(json!({ "username": user, "password": "Summer2026!" })),
        )
        .await;
    r.expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
}

/// A push outcome as the push channel logs it (methods ["push"], push_* reason),
/// here for a VPN behind RADIUS.
async fn push_outcome(h: &Harness, user: &str, reason: Option<&str>) {
    let u = h.app.store().user_by_username(user).await.unwrap().unwrap();
    h.app
        .store()
        .log_signin_with_decision(
            &SignInLogEntry {
                at: h.now(),
                user_id: Some(u.id),
                username: user.into(),
                application: Some("vpn".into()),
                source_ip: Some("10.0.0.1".into()),
                result: if reason.is_some() { "failure" } else { "success" }.into(),
                reason: reason.map(str::to_owned),
                methods: vec!["push".into()],
                acr: None,
            },
            None,
        )
        .await
        .unwrap();
}

async fn policy(h: &Harness, p: Value) {
    h.post(
        "/api/v1/policies",
        Some(&h.admin),
        json!({ "policy": p, "force": true }),
    )
    .await
    .expect(StatusCode::CREATED);
}

fn kinds(alerts: &[latchkey_store::AlertRecord]) -> BTreeSet<(String, String, String)> {
    alerts
        .iter()
        .map(|a| (a.kind.clone(), a.severity.clone(), a.target.clone()))
        .collect()
}

fn set(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(k, s, t)| (k.to_string(), s.to_string(), t.to_string()))
        .collect()
}

#[tokio::test]
async fn seeded_scenario_raises_exactly_the_expected_detections() {
    let h = harness().await;
    let op = Principal::Operator;
    // Many users; a privileged one without a security key; a break-glass account.
    for i in 0..14 {
        h.create_user(&format!("staff{i:02}"), &[]).await;
        h.set_password(&format!("staff{i:02}"), &h.admin.clone()).await;
    }
    h.create_user("root", &["admin"]).await;
    let traveler = h.user_with_totp("traveler", &[]).await;
    h.create_user("victim", &[]).await;
    h.create_user("bg", &[]).await;
    h.put(
        "/api/v1/break-glass/bg",
        Some(&h.admin),
        json!({ "test_interval_days": 3 }),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    // Two exceptions: one ends in a day, one in ten days.
    policy(
        &h,
        json!({ "id": "contractors-mfa", "name": "Contractors MFA", "state": "report_only",
                "assignments": { "users": { "include": ["*"] }, "applications": { "include": ["*"] } },
                "grant": [ { "require_strength": "mfa" } ] }),
    )
    .await;
    let mut exceptions = vec![];
    for (user, days) in [("staff00", 1), ("staff01", 10)] {
        // Made by the local operator: over the API it would need two more
        // privileged people, whose posture would change the detections.
        let rec = h
            .app
            .create_exception(
                &op,
                "contractors-mfa",
                latchkey_core::policy::ExceptionSubject::User(user.into()),
                "vendor migration",
                Some("traveler"),
                h.now() + days * 86_400,
            )
            .await
            .unwrap();
        let latchkey_service::policy::ExceptionOutcome::Created(rec) = rec else {
            panic!("the operator makes exceptions at once")
        };
        exceptions.push(rec.id);
    }
    // Four days later: the first exception ended, the second ends within the
    // week, the break-glass test (every 3 days, never done) is overdue.
    h.advance(4 * 86_400);

    // Traveler: Berlin, then Paris 30 minutes later.
    h.signin_mfa_from(BERLIN, "traveler", &traveler)
        .await
        .expect(StatusCode::OK);
    h.advance(1800);
    let r = h.signin_mfa_from(PARIS, "traveler", &traveler).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete", "{}", r.json);

    // Push bombing of victim: six prompts in five minutes, three denied.
    for reason in [
        "push_timeout",
        "push_denied",
        "push_timeout",
        "push_denied",
        "push_timeout",
        "push_denied",
    ] {
        push_outcome(&h, "victim", Some(reason)).await;
        h.advance(50);
    }
    // A password spray: twelve users, one wrong password each, one source.
    for i in 0..12 {
        wrong_password_from(&h, SPRAYER, &format!("staff{i:02}")).await;
    }
    // Background noise that must stay quiet: a few wrong passwords from elsewhere.
    for i in 0..3 {
        wrong_password_from(&h, OFFICE, &format!("staff{i:02}")).await;
    }

    let run = h.app.run_detections().await.unwrap();
    assert!(run.signins_examined >= 20, "{run:?}");
    let alerts = h.app.store().alerts(0, 100).await.unwrap();
    assert_eq!(
        kinds(&alerts),
        set(&[
            ("push_fatigue", "high", "user:victim"),
            ("password_spray", "high", "ip:100.64.0.23"),
            ("unusual_location", "medium", "user:traveler"),
            ("impossible_travel", "high", "user:traveler"),
            ("privileged_without_phishing_resistant", "high", "user:root"),
            ("exception_expired", "low", &format!("exception:{}", exceptions[0])),
            (
                "exception_near_expiry",
                "medium",
                &format!("exception:{}", exceptions[1])
            ),
            ("break_glass_test_overdue", "high", "user:bg"),
        ]),
        "{alerts:#?}"
    );
    assert_eq!(alerts.len(), 8, "no duplicates");
    assert_eq!(kinds(&run.raised), kinds(&alerts));
    let spray = alerts.iter().find(|a| a.kind == "password_spray").unwrap();
    assert_eq!(spray.details["users"], 12);
    let push = alerts.iter().find(|a| a.kind == "push_fatigue").unwrap();
    assert_eq!(
        (push.details["prompts"].as_i64(), push.details["denials"].as_i64()),
        (Some(6), Some(3))
    );
    // Each alert is audited.
    let audit = h.all_audit_events().await;
    assert_eq!(audit.iter().filter(|e| e["action"] == "alert.raise").count(), 8);

    // Dedup: running again raises nothing; neither does it an hour later
    // for standing conditions still unresolved.
    assert!(h.app.run_detections().await.unwrap().raised.is_empty());
    h.advance(2 * 3600);
    assert!(h.app.run_detections().await.unwrap().raised.is_empty());
    // Once resolved (and past the dedup window), a standing condition raises again.
    let root_alert = alerts.iter().find(|a| a.target == "user:root").unwrap().id;
    h.post(
        &format!("/api/v1/alerts/{root_alert}/resolve"),
        Some(&h.admin),
        json!({ "resolution": "asked root to register a key" }),
    )
    .await
    .expect(StatusCode::OK);
    let again = h.app.run_detections().await.unwrap();
    assert_eq!(
        kinds(&again.raised),
        set(&[("privileged_without_phishing_resistant", "high", "user:root")])
    );
    // The CLI path (operator) sees them too.
    assert_eq!(h.app.list_alerts(&op, Some("open"), 100).await.unwrap().len(), 8);

    // The evidence report over the same days shows the same scenario.
    let from = latchkey_http::api::rfc3339(h.now() - 10 * 86_400);
    let to = latchkey_http::api::rfc3339(h.now());
    let r = h
        .get(
            &format!("/api/v1/reports/evidence?from={from}&to={to}&format=json"),
            Some(&h.admin),
        )
        .await;
    r.expect(StatusCode::OK);
    let report = &r.json;
    let d = &report["detections"];
    assert_eq!(
        (d["total"].as_i64(), d["handled"].as_i64(), d["open"].as_i64()),
        (Some(9), Some(1), Some(8)),
        "{d}"
    );
    let by_kind = |kind: &str| {
        d["by_kind"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| row["kind"] == kind)
            .map(|row| (row["total"].as_i64().unwrap(), row["handled"].as_i64().unwrap()))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    assert_eq!(by_kind("push_fatigue"), (1, 0));
    assert_eq!(by_kind("password_spray"), (1, 0));
    assert_eq!(by_kind("privileged_without_phishing_resistant"), (2, 1));
    assert_eq!(by_kind("break_glass_test_overdue"), (1, 0));
    let summary = &report["summary"];
    assert_eq!(summary["active_exceptions"], 1, "staff00's ended: {summary}");
    assert_eq!(summary["break_glass_tests_overdue"], 1, "{summary}");
    assert_eq!(summary["signins_completed"], 2, "the traveler's two: {summary}");
    assert_eq!(summary["audit_chain_ok"], true);
    let privileged: Vec<&str> = report["privileged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["username"].as_str().unwrap())
        .collect();
    assert!(privileged.contains(&"root"), "{privileged:?}");
}

#[tokio::test]
async fn risk_from_detections_applies_at_a_real_sign_in() {
    let h = harness().await;
    let alice = h.user_with_totp("alice", &[]).await;
    let bob = h.user_with_totp("bob", &[]).await;
    for i in 0..10 {
        h.create_user(&format!("s{i}"), &[]).await;
    }
    policy(
        &h,
        json!({ "id": "block-high-risk", "name": "Block high risk", "state": "enabled",
                "assignments": { "users": { "include": ["*"] }, "applications": { "include": ["*"] } },
                "conditions": { "sign_in_risk": ["high"] }, "grant": ["block"] }),
    )
    .await;
    policy(
        &h,
        json!({ "id": "pr-medium-risk", "name": "Phishing-resistant at medium risk", "state": "enabled",
                "assignments": { "users": { "include": ["*"] }, "applications": { "include": ["*"] } },
                "conditions": { "sign_in_risk": ["medium"] }, "grant": [ { "require_strength": "phishing_resistant" } ] }),
    )
    .await;

    // No history, no alerts: risk none, sign-in completes.
    let r = h.signin_mfa_from(BERLIN, "alice", &alice).await;
    assert_eq!(r.json["state"], "complete", "{}", r.json);
    let page = h.get("/api/v1/signins?user=alice&limit=1", Some(&h.admin)).await;
    assert_eq!(page.json["signins"][0]["risk"], "none", "{}", page.json);

    // A network alice was never seen on (no geolocation for it): medium, so
    // the phishing-resistant policy applies and TOTP is not enough.
    let r = h.signin_mfa_from(OFFICE, "alice", &alice).await;
    r.expect_problem(StatusCode::FORBIDDEN, "authentication-strength-required");
    let page = h.get("/api/v1/signins?user=alice&limit=1", Some(&h.admin)).await;
    let row = &page.json["signins"][0];
    assert_eq!(
        (row["risk"].as_str(), row["reason"].as_str()),
        (Some("medium"), Some("strength_required"))
    );
    assert_eq!(row["policy"]["applied"][0]["policy_id"], "pr-medium-risk", "{row}");

    // Paris 10 minutes after Berlin: impossible travel, high: blocked.
    h.advance(600);
    let r = h.signin_mfa_from(PARIS, "alice", &alice).await;
    r.expect_problem(StatusCode::FORBIDDEN, "access-blocked");
    assert!(
        r.json["detail"].as_str().unwrap().contains("Block high risk"),
        "{}",
        r.json
    );

    // A spray from SPRAYER: once detected, bob's correct password from the
    // same source is blocked too, while bob from his usual place is fine.
    let r = h.signin_mfa_from(BERLIN, "bob", &bob).await;
    assert_eq!(r.json["state"], "complete", "{}", r.json);
    for i in 0..10 {
        wrong_password_from(&h, SPRAYER, &format!("s{i}")).await;
    }
    let before = h.signin_mfa_from([192, 0, 2, 77], "bob", &bob).await;
    assert_eq!(before.json["state"], "complete", "{}", before.json);
    h.app.run_detections().await.unwrap();
    let r = h.signin_mfa_from(SPRAYER, "bob", &bob).await;
    r.expect_problem(StatusCode::FORBIDDEN, "access-blocked");
    let r = h.signin_mfa_from(BERLIN, "bob", &bob).await;
    assert_eq!(r.json["state"], "complete", "{}", r.json);

    // Resolving the spray alert lowers the source's risk again... but the
    // source is still a new place for bob (medium): phishing-resistant needed.
    let alerts = h.app.store().alerts(0, 100).await.unwrap();
    let spray = alerts.iter().find(|a| a.kind == "password_spray").unwrap();
    h.post(
        &format!("/api/v1/alerts/{}/resolve", spray.id),
        Some(&h.admin),
        json!({ "resolution": "source blocked at the firewall" }),
    )
    .await
    .expect(StatusCode::OK);
    let r = h.signin_mfa_from(SPRAYER, "bob", &bob).await;
    r.expect_problem(StatusCode::FORBIDDEN, "authentication-strength-required");

    // What the engine now sees for that source: only the new place.
    let (level, signals) = h
        .app
        .signin_risk(
            &h.app.user("bob").await.unwrap(),
            &SignInContext {
                application: None,
                source_ip: Some("100.64.0.23".into()),
                continues_to: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(format!("{level:?}"), "Medium");
    assert!(
        signals.unusual_location && signals.alert_kinds.is_empty(),
        "{signals:?}"
    );
}

#[tokio::test]
async fn signins_api_filters_pages_and_records_everything() {
    let h = harness().await;
    let secret = h.user_with_totp("carol", &[]).await;
    h.user_with_totp("dave", &[]).await;
    h.put(
        "/api/v1/named-locations/hq",
        Some(&h.admin),
        json!({ "name": "hq", "ranges": ["10.20.0.0/16"], "trusted": true }),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    policy(
        &h,
        json!({ "id": "ro-block", "name": "Would block", "state": "report_only",
                "assignments": { "users": { "include": ["*"] }, "applications": { "include": ["*"] } },
                "grant": ["block"] }),
    )
    .await;
    let t_start = h.now();
    wrong_password_from(&h, OFFICE, "carol").await;
    wrong_password_from(&h, OFFICE, "dave").await;
    h.advance(30);
    // A wrong TOTP code: the step tried is logged.
    let r = h
        .call_from(
            OFFICE,
            Method::POST,
            "/api/v1/signin",
            None,
            Some(json!({ "username": "carol", "password": PASSWORD })),
        )
        .await;
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    h.call_from(
        OFFICE,
        Method::POST,
        &format!("/api/v1/signin/{flow}/verify"),
        None,
        Some(json!({ "method": "totp", "code": h.wrong_code(&secret) })),
    )
    .await
    .expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");
    // With a device id the client names at each step, unproven: recorded
    // as a claim, not as the device (spoofed_context.rs).
    h.advance(30);
    let r = h
        .call_from(
            OFFICE,
            Method::POST,
            "/api/v1/signin",
            None,
            Some(json!({ "username": "carol", "password": PASSWORD, "application": "crm", "context": { "device_id": "laptop-7" } })),
        )
        .await;
    r.expect(StatusCode::OK);
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    h.call_from(
        OFFICE,
        Method::POST,
        &format!("/api/v1/signin/{flow}/verify"),
        None,
        Some(json!({ "method": "totp", "code": h.code(&secret), "context": { "device_id": "laptop-7" } })),
    )
    .await
    .expect(StatusCode::OK);

    let all = h.get("/api/v1/signins", Some(&h.admin)).await;
    all.expect(StatusCode::OK);
    let rows = all.json["signins"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{}", all.json);
    assert!(all.json["next_cursor"].is_null());
    let ok = &rows[0];
    assert_eq!(ok["result"], "success");
    assert_eq!(ok["username"], "carol");
    assert_eq!(ok["application"], "crm");
    assert_eq!(ok["source_ip"], "10.20.0.5");
    assert_eq!(ok["location"], "hq");
    assert!(ok["device_id"].is_null(), "{ok}");
    assert_eq!(ok["unproven_device_id"], "laptop-7");
    assert_eq!(ok["methods_used"], json!(["password", "totp"]));
    assert_eq!(ok["acr"], "mfa");
    assert_eq!(ok["risk"], "none");
    assert_eq!(ok["policy"]["report_only"][0]["policy_id"], "ro-block", "{ok}");
    let code = &rows[1];
    assert_eq!(
        (code["reason"].as_str(), code["methods_tried"].clone()),
        (Some("invalid_code"), json!(["totp"]))
    );
    assert_eq!(rows[3]["methods_tried"], json!(["password"]));
    assert_eq!(rows[3]["reason"], "invalid_credentials");

    // Filters.
    let f = h.get("/api/v1/signins?user=carol&result=failure", Some(&h.admin)).await;
    assert_eq!(f.json["signins"].as_array().unwrap().len(), 2);
    let f = h.get("/api/v1/signins?app=crm", Some(&h.admin)).await;
    assert_eq!(f.json["signins"].as_array().unwrap().len(), 1);
    let f = h
        .get(
            &format!("/api/v1/signins?from={}&to={}", t_start + 1, h.now() + 1),
            Some(&h.admin),
        )
        .await;
    assert_eq!(f.json["signins"].as_array().unwrap().len(), 2, "{}", f.json);
    let f = h
        .get(
            &format!("/api/v1/signins?to={}", latchkey_http::api::rfc3339(t_start + 1)),
            Some(&h.admin),
        )
        .await;
    assert_eq!(f.json["signins"].as_array().unwrap().len(), 2, "{}", f.json);
    // Pagination: 3 pages of 1..2.
    let p1 = h.get("/api/v1/signins?limit=3", Some(&h.admin)).await;
    let cursor = p1.json["next_cursor"].as_i64().expect("more");
    let p2 = h
        .get(&format!("/api/v1/signins?limit=3&cursor={cursor}"), Some(&h.admin))
        .await;
    assert_eq!(p2.json["signins"].as_array().unwrap().len(), 1);
    assert_eq!(p2.json["signins"][0]["id"], rows[3]["id"]);
    // Bad input is a problem, not a 500.
    h.get("/api/v1/signins?result=maybe", Some(&h.admin))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    h.get("/api/v1/signins?from=yesterday", Some(&h.admin))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    h.get("/api/v1/signins?limit=0", Some(&h.admin))
        .await
        .expect(StatusCode::OK);
    h.get("/api/v1/signins?limit=5000", Some(&h.admin))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    h.get("/api/v1/signins?bogus=1", Some(&h.admin))
        .await
        .expect(StatusCode::BAD_REQUEST);
    // Roles: a plain user may not read the log; an auditor may.
    let session = h.signin_mfa("carol", &secret).await;
    h.get("/api/v1/signins", Some(&session))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    h.get("/api/v1/signins", None).await.expect(StatusCode::UNAUTHORIZED);
    let aud = h.user_with_totp("audrey", &["auditor"]).await;
    let s = h.signin_mfa("audrey", &aud).await;
    h.get("/api/v1/signins", Some(&s)).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn retention_purges_old_sign_ins_and_audits_the_purge() {
    let mut c = cheap_config();
    c.ops.signin_retention_days = 30;
    let h = Harness::sqlite_with(c).await;
    h.create_user("erin", &[]).await;
    for _ in 0..3 {
        wrong_password_from(&h, OFFICE, "erin").await;
    }
    h.advance(20 * 86_400);
    wrong_password_from(&h, OFFICE, "erin").await;
    assert_eq!(h.app.purge_signin_log().await.unwrap(), 0);
    h.advance(11 * 86_400);
    let cutoff = h.now() - 30 * 86_400;
    assert_eq!(h.app.purge_signin_log().await.unwrap(), 3);
    let left = h.get("/api/v1/signins", Some(&h.admin)).await;
    assert_eq!(left.json["signins"].as_array().unwrap().len(), 1);
    let purges: Vec<Value> = h
        .all_audit_events()
        .await
        .into_iter()
        .filter(|e| e["action"] == "signins.purge")
        .collect();
    assert_eq!(purges.len(), 1, "only a purge that deleted something is audited");
    let d: Value = purges[0]["details"].clone();
    let d: Value = if let Some(s) = d.as_str() {
        serde_json::from_str(s).unwrap()
    } else {
        d
    };
    assert_eq!(
        (d["count"].as_i64(), d["cutoff"].as_i64()),
        (Some(3), Some(cutoff)),
        "{d}"
    );
    assert_eq!(h.app.purge_signin_log().await.unwrap(), 0);
}

#[tokio::test]
async fn a_users_timeline_shows_what_changed_for_them() {
    let h = harness().await;
    h.user_with_totp("fay", &["helpdesk"]).await;
    h.user_with_totp("gil", &[]).await;
    policy(
        &h,
        json!({ "id": "all-mfa", "name": "All MFA", "state": "enabled",
                "assignments": { "users": { "include": ["*"] }, "applications": { "include": ["*"] } },
                "grant": [ { "require_strength": "mfa" } ] }),
    )
    .await;
    for user in ["fay", "gil"] {
        h.grant_exception(json!({ "policy_id": "all-mfa", "user": user, "reason": "travel",
                                   "expires_at": latchkey_http::api::rfc3339(h.now() + 86_400) }))
            .await;
    }
    let tap = h.issue_tap(&h.admin.clone(), "gil", json!({})).await;
    tap.expect(StatusCode::CREATED);
    let pass = tap.json["pass"].as_str().unwrap().to_owned();
    h.signin_tap("gil", &pass).await.expect(StatusCode::OK);

    let t = h.get("/api/v1/users/gil/timeline", Some(&h.admin)).await;
    t.expect(StatusCode::OK);
    let actions: Vec<&str> = t
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "user.create",
        "password.set",
        "method.add",
        "policy_exception.create",
        "tap.issue",
        "tap.use",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(actions.iter().any(|a| a.starts_with("policy.")), "{actions:?}");
    // fay's exception is not gil's business.
    assert_eq!(actions.iter().filter(|a| **a == "policy_exception.create").count(), 1);
    let categories: BTreeSet<&str> = t
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["category"].as_str().unwrap())
        .collect();
    assert!(
        categories.is_superset(&["method", "tap", "exception", "policy"].into_iter().collect()),
        "{categories:?}"
    );
    h.get("/api/v1/users/nobody/timeline", Some(&h.admin))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn alerts_are_acknowledged_and_resolved_with_audit() {
    let h = harness().await;
    h.create_user("root", &["admin"]).await;
    h.app.run_detections().await.unwrap();
    let list = h.get("/api/v1/operations/alerts?status=open", Some(&h.admin)).await;
    list.expect(StatusCode::OK);
    let id = list.json[0]["id"].as_i64().unwrap();
    assert_eq!(list.json[0]["status"], "open");
    let a = h
        .post(&format!("/api/v1/alerts/{id}/acknowledge"), Some(&h.admin), json!({}))
        .await;
    a.expect(StatusCode::OK);
    assert_eq!(a.json["status"], "acknowledged");
    assert_eq!(a.json["handled_by"], "token:t");
    h.post(&format!("/api/v1/alerts/{id}/resolve"), Some(&h.admin), json!({}))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    let r = h
        .post(
            &format!("/api/v1/alerts/{id}/resolve"),
            Some(&h.admin),
            json!({ "resolution": "key registered" }),
        )
        .await;
    assert_eq!(
        (r.json["status"].as_str(), r.json["resolution"].as_str()),
        (Some("resolved"), Some("key registered"))
    );
    h.post(
        &format!("/api/v1/alerts/{id}/resolve"),
        Some(&h.admin),
        json!({ "resolution": "again" }),
    )
    .await
    .expect(StatusCode::CONFLICT);
    h.post("/api/v1/alerts/999/acknowledge", Some(&h.admin), json!({}))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
    let audit = h.all_audit_events().await;
    assert!(audit.iter().any(|e| e["action"] == "alert.acknowledge"));
    assert!(audit
        .iter()
        .any(|e| e["action"] == "alert.resolve" && e["target"] == format!("alert:{id}")));
    assert_eq!(
        h.get("/api/v1/operations/alerts?status=resolved", Some(&h.admin))
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Raise one alert through the engine: a privileged user without a key.
async fn raise_one(h: &Harness, name: &str) {
    h.create_user(name, &["admin"]).await;
    let run = h.app.run_detections().await.unwrap();
    assert_eq!(run.raised.len(), 1);
}

#[tokio::test]
async fn webhook_sink_posts_each_alert_once_and_retries_failures() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let fail_first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ff = fail_first.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            let ff = ff.clone();
            async move {
                if ff.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                tx.send(v).unwrap();
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let mut c = cheap_config();
    c.ops.webhook_url = Some(format!("http://{addr}/hook"));
    let h = Harness::sqlite_with(c).await;
    // An alert from before the sink existed is not flooded out.
    raise_one(&h, "old-admin").await;
    assert_eq!(h.app.deliver_alerts().await.unwrap(), 0);
    raise_one(&h, "root").await;
    // First attempt: the receiver fails; nothing is lost.
    assert_eq!(h.app.deliver_alerts().await.unwrap(), 0);
    assert_eq!(h.app.deliver_alerts().await.unwrap(), 1);
    let got = rx.recv().await.unwrap();
    assert_eq!(got["kind"], "privileged_without_phishing_resistant");
    assert_eq!(got["target"], "user:root");
    assert_eq!(got["severity"], "high");
    assert_eq!(got["source"], "latchkey");
    assert_eq!(h.app.deliver_alerts().await.unwrap(), 0, "delivered once");
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn syslog_sink_sends_rfc5424_over_udp() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut c = cheap_config();
    c.ops.syslog_addr = Some(sock.local_addr().unwrap().to_string());
    let h = Harness::sqlite_with(c).await;
    assert_eq!(h.app.deliver_alerts().await.unwrap(), 0);
    raise_one(&h, "root").await;
    assert_eq!(h.app.deliver_alerts().await.unwrap(), 1);
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("a datagram")
        .unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    // PRI = facility auth (4) * 8 + severity err (3) = 35; version 1.
    assert!(msg.starts_with("<35>1 "), "{msg}");
    let fields: Vec<&str> = msg.splitn(8, ' ').collect();
    assert_eq!(fields[3], "latchkey", "{msg}");
    assert_eq!(fields[5], "1", "MSGID is the alert id: {msg}");
    assert_eq!(fields[6], "[latchkey@32473", "{msg}");
    assert!(msg.contains("kind=\"privileged_without_phishing_resistant\""), "{msg}");
    assert!(msg.contains("target=\"user:root\""), "{msg}");
    assert!(
        time::OffsetDateTime::parse(fields[1], &time::format_description::well_known::Rfc3339).is_ok(),
        "{msg}"
    );
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_signins_latency_and_alerts() {
    let h = harness().await;
    let before = h.get("/metrics", None).await;
    before.expect(StatusCode::OK);
    assert!(before.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let b = before.text();
    let secret = h.user_with_totp("ivy", &[]).await;
    h.create_user("root", &["admin"]).await;
    h.signin_mfa("ivy", &secret).await;
    wrong_password_from(&h, OFFICE, "ivy").await;
    wrong_password_from(&h, OFFICE, "ivy").await;
    latchkey_service::metrics::push_prompt("latchkey");
    h.app.run_detections().await.unwrap();
    let a = h.get("/metrics", None).await.text();
    // Counters are per process (tests in this binary share them): compare deltas.
    let d = |k: &str| metric(&a, k) - metric(&b, k);
    assert!(
        d(r#"latchkey_signins_total{method="password",result="failure"}"#) >= 2.0,
        "{a}"
    );
    assert!(
        d(r#"latchkey_signins_total{method="totp",result="success"}"#) >= 1.0,
        "{a}"
    );
    assert!(
        d(r#"latchkey_push_prompts_total{application="latchkey"}"#) >= 1.0,
        "{a}"
    );
    assert!(
        d(r#"latchkey_http_request_duration_seconds_count{route="/api/v1/signin",status="401"}"#) >= 2.0,
        "{a}"
    );
    assert!(
        d(r#"latchkey_http_request_duration_seconds_count{route="/api/v1/signin/{flow_id}/verify",status="200"}"#)
            >= 1.0,
        "{a}"
    );
    // Alert counts come from this database: exact.
    assert_eq!(
        metric(
            &a,
            r#"latchkey_alerts{kind="privileged_without_phishing_resistant",severity="high",status="open"}"#
        ),
        1.0,
        "{a}"
    );
    assert!(a.contains("# TYPE latchkey_http_request_duration_seconds histogram"));
}

#[tokio::test]
async fn openapi_lists_the_operations_routes() {
    let doc: Value = serde_json::from_str(&latchkey_http::api::openapi_json()).unwrap();
    for p in [
        "/api/v1/signins",
        "/api/v1/users/{username}/timeline",
        "/api/v1/operations/alerts",
        "/api/v1/alerts/{id}/acknowledge",
        "/api/v1/alerts/{id}/resolve",
        "/metrics",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing");
    }
}

#[tokio::test]
async fn the_admin_console_lists_alerts_and_acknowledges_them() {
    use axum::body::Body;
    use axum::http::{header, Request};
    let h = harness().await;
    h.create_user("root", &["admin"]).await;
    h.app.run_detections().await.unwrap();
    let id = h.app.store().alerts(0, 10).await.unwrap()[0].id;
    let sec = h.user_with_totp("sec", &["security_admin"]).await;
    let session = h.signin_mfa("sec", &sec).await;
    let page = h
        .send(
            Request::get("/admin/alerts")
                .header(header::COOKIE, format!("lk_session={session}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    page.expect(StatusCode::OK);
    let html = page.text();
    assert!(
        html.contains("privileged_without_phishing_resistant") && html.contains("user:root"),
        "{html}"
    );
    assert!(html.contains(&format!("/admin/alerts/{id}/acknowledge")), "{html}");
    let csrf_cookie = page
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("lk_csrf="))
        .map(|c| c.split(';').next().unwrap().to_owned())
        .unwrap_or_default();
    let i = html.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    let token = &html[i..i + html[i..].find('"').unwrap()];
    let cookies = format!("lk_session={session}; {csrf_cookie}");
    let post = |path: String, body: String| {
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, cookies.clone())
            .body(Body::from(body))
            .unwrap()
    };
    // Without the token the form is refused.
    let r = h
        .send(post(format!("/admin/alerts/{id}/acknowledge"), String::new()))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h
        .send(post(format!("/admin/alerts/{id}/acknowledge"), format!("csrf={token}")))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let a = h.app.store().alert(id).await.unwrap().unwrap();
    assert_eq!(
        (a.status.as_str(), a.handled_by.as_deref()),
        ("acknowledged", Some("user:sec"))
    );
    let r = h
        .send(post(
            format!("/admin/alerts/{id}/resolve"),
            format!("csrf={token}&resolution=key+registered"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(h.app.store().alert(id).await.unwrap().unwrap().status, "resolved");
    // A plain user gets no alerts page.
    let plain = h.user_with_totp("pat", &[]).await;
    let s = h.signin_mfa("pat", &plain).await;
    let r = h
        .send(
            Request::get("/admin/alerts")
                .header(header::COOKIE, format!("lk_session={s}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// The same SQL on PostgreSQL: log with details, filtered query with NULL
/// filters, detection cursor, dedup, alert handling, purge with audit.
#[tokio::test]
async fn postgres_signin_log_detections_and_alerts() {
    let Some(h) = Harness::postgres("postgres_signin_log_detections_and_alerts").await else {
        return;
    };
    let secret = h.user_with_totp("pgu", &[]).await;
    for i in 0..10 {
        h.create_user(&format!("pg{i}"), &[]).await;
        wrong_password_from(&h, SPRAYER, &format!("pg{i}")).await;
    }
    let r = h.signin_mfa_from(BERLIN, "pgu", &secret).await;
    assert_eq!(r.json["state"], "complete", "{}", r.json);
    let page = h.get("/api/v1/signins?result=failure&limit=4", Some(&h.admin)).await;
    page.expect(StatusCode::OK);
    assert_eq!(page.json["signins"].as_array().unwrap().len(), 4);
    let cursor = page.json["next_cursor"].as_i64().unwrap();
    let rest = h
        .get(
            &format!("/api/v1/signins?result=failure&cursor={cursor}&limit=100"),
            Some(&h.admin),
        )
        .await;
    assert_eq!(rest.json["signins"].as_array().unwrap().len(), 6, "{}", rest.json);
    let ok = h.get("/api/v1/signins?user=pgu&app=latchkey", Some(&h.admin)).await;
    assert_eq!(
        ok.json["signins"].as_array().unwrap().len(),
        1,
        "the portal is 'latchkey'"
    );
    let ok = h.get("/api/v1/signins?user=pgu", Some(&h.admin)).await;
    assert_eq!(ok.json["signins"][0]["methods_used"], json!(["password", "totp"]));

    let run = h.app.run_detections().await.unwrap();
    assert_eq!(kinds(&run.raised), set(&[("password_spray", "high", "ip:100.64.0.23")]));
    assert!(h.app.run_detections().await.unwrap().raised.is_empty());
    let id = run.raised[0].id;
    h.post(&format!("/api/v1/alerts/{id}/acknowledge"), Some(&h.admin), json!({}))
        .await
        .expect(StatusCode::OK);
    let m = h.get("/metrics", None).await.text();
    assert_eq!(
        metric(
            &m,
            r#"latchkey_alerts{kind="password_spray",severity="high",status="acknowledged"}"#
        ),
        1.0,
        "{m}"
    );
    h.advance(91 * 86_400);
    assert_eq!(h.app.purge_signin_log().await.unwrap(), 11);
    assert!(h
        .all_audit_events()
        .await
        .iter()
        .any(|e| e["action"] == "signins.purge"));
}

async fn log_at(h: &Harness, at: i64, app: &str, user: &str, ok: bool) {
    h.app
        .store()
        .log_signin_with_decision(
            &SignInLogEntry {
                at,
                user_id: None,
                username: user.into(),
                application: Some(app.into()),
                source_ip: Some(format!("10.9.{}.{}", at % 200, at % 250)),
                result: if ok { "success" } else { "failure" }.into(),
                reason: (!ok).then(|| "invalid_code".to_owned()),
                methods: vec!["totp".into()],
                acr: None,
            },
            None,
        )
        .await
        .unwrap();
}

/// The failure-spike baseline comes from database counts over the day
/// before the recent window, per application.
#[tokio::test]
async fn failure_rate_spike_against_the_stored_baseline() {
    let h = harness().await;
    let now = h.now();
    // crm: a calm baseline (100 successes, 10 failures two hours ago), then
    // 20 failures in the last 15 minutes. mail: fails as often all day.
    for i in 0..100 {
        log_at(&h, now - 7200 - i, "crm", &format!("b{i}"), true).await;
        log_at(&h, now - 7200 - i, "mail", &format!("m{i}"), false).await;
    }
    for i in 0..10 {
        log_at(&h, now - 7300 - i, "crm", &format!("f{i}"), false).await;
    }
    for i in 0..20 {
        log_at(&h, now - 60 - i, "crm", &format!("r{i}"), false).await;
        log_at(&h, now - 60 - i, "mail", &format!("r{i}"), false).await;
    }
    let run = h.app.run_detections().await.unwrap();
    assert_eq!(kinds(&run.raised), set(&[("failure_rate_spike", "medium", "app:crm")]));
    let d = &run.raised[0].details;
    assert_eq!(
        (d["failures"].as_i64(), d["attempts"].as_i64()),
        (Some(20), Some(20)),
        "{d}"
    );
    assert!(
        (d["baseline_ratio"].as_f64().unwrap() - 10.0 / 110.0).abs() < 1e-9,
        "{d}"
    );
}
