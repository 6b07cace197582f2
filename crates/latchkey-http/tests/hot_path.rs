//! The sign-in hot path's guarantees beyond its statement budget
//! (statement_budget.rs): detections run after the response yet the next
//! sign-in still sees a spray's risk, bounded password hashing answers 503
//! with Retry-After instead of taking the machine's memory, and a step's
//! writes commit or roll back together.

mod common;

use axum::http::{Method, StatusCode};
use common::{Harness, PASSWORD};
use serde_json::json;

/// Not geolocated: its risk comes from the spray alone.
const SPRAYER: [u8; 4] = [100, 64, 0, 23];

async fn password_from(h: &Harness, peer: [u8; 4], user: &str, password: &str) -> common::Resp {
    h.call_from(
        peer,
        Method::POST,
        "/api/v1/signin",
        None,
        Some(json!({ "username": user, "password": password })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signin_right_after_a_spray_sees_its_risk() {
    let h = Harness::sqlite().await;
    // The detection task as `serve` runs it: fed by the queue after each response.
    let housekeeping = latchkey_service::ops::spawn_housekeeping(h.app.clone());
    h.create_user("bob", &[]).await;
    h.set_password("bob", &h.admin.clone()).await;
    for i in 0..10 {
        h.create_user(&format!("s{i}"), &[]).await;
    }
    h.post(
        "/api/v1/policies",
        Some(&h.admin),
        json!({ "policy": { "id": "block-high-risk", "name": "Block high risk", "state": "enabled",
                "assignments": { "users": { "include": ["*"] }, "applications": { "include": ["*"] } },
                "conditions": { "sign_in_risk": ["high"] }, "grant": ["block"] }, "force": true }),
    )
    .await
    .expect(StatusCode::CREATED);
    // Before any spray bob's password is fine from there.
    password_from(&h, SPRAYER, "bob", PASSWORD).await.expect(StatusCode::OK);

    for i in 0..10 {
        password_from(&h, SPRAYER, &format!("s{i}"), "Summer2026!")
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    }
    // At once, with no detection run by the test: the queue's task must have
    // examined the spray before this sign-in's risk is computed.
    let r = password_from(&h, SPRAYER, "bob", PASSWORD).await;
    r.expect_problem(StatusCode::FORBIDDEN, "access-blocked");
    let alerts = h.app.store().alerts(0, 100).await.unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a.kind == "password_spray" && a.target == "ip:100.64.0.23"),
        "{alerts:?}"
    );
    let page = h.get("/api/v1/signins?user=bob&limit=1", Some(&h.admin)).await;
    assert_eq!(page.json["signins"][0]["risk"], "high", "{}", page.json);
    housekeeping.abort();
}

#[tokio::test]
async fn password_checks_past_their_bound_answer_503_with_retry_after() {
    let mut config = common::cheap_config();
    config.password_slots = 1;
    config.password_slot_wait_ms = 50;
    let h = Harness::sqlite_with(config).await;
    let secret = h.user_with_totp("alice", &[]).await;

    let held = h.app.occupy_password_slots().await;
    let r = h.start_with_password("alice", PASSWORD).await;
    r.expect_problem(StatusCode::SERVICE_UNAVAILABLE, "busy");
    assert_eq!(r.retry_after(), Some(1), "{}", r.text());
    // Not a guess: nothing was counted or logged against alice.
    for _ in 0..6 {
        h.start_with_password("alice", PASSWORD)
            .await
            .expect_problem(StatusCode::SERVICE_UNAVAILABLE, "busy");
    }
    let page = h.get("/api/v1/signins?user=alice", Some(&h.admin)).await;
    assert_eq!(page.json["signins"].as_array().unwrap().len(), 0, "{}", page.json);

    // A free slot: the sign-in goes through, the throttle untouched by the 503s.
    drop(held);
    h.advance(30);
    h.signin_mfa("alice", &secret).await;
}

#[tokio::test]
async fn a_step_that_loses_its_flow_leaves_nothing_behind() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("alice", &[]).await;
    h.advance(30);
    let r = h.start_with_password("alice", PASSWORD).await;
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    let first = h
        .verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await;
    first.expect(StatusCode::OK);
    // The flow is gone with the session that completed it: once, atomically.
    h.verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "flow-not-found");
    let sessions = h
        .all_audit_events()
        .await
        .iter()
        .filter(|e| e["action"] == "session.create")
        .count();
    let signins = h.get("/api/v1/signins?user=alice&result=success", Some(&h.admin)).await;
    assert_eq!(sessions, 1);
    assert_eq!(signins.json["signins"].as_array().unwrap().len(), 1, "{}", signins.json);
}
