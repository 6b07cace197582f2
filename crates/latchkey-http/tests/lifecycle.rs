//! Joiners and leavers over HTTP: disabling revokes every way in within the
//! request, sign-in refuses a disabled account with the wrong-password
//! answer, enabling brings nothing back, deletion leaves a tombstone that
//! holds the username, and the last administrator stays. Runs on SQLite and
//! (with `LATCHKEY_TEST_POSTGRES_URL`) PostgreSQL.

#[macro_use]
mod common;

use axum::http::{Method, StatusCode};
use common::{Harness, PASSWORD};
use serde_json::json;

backends! {
    case_disabling_revokes_every_way_in => sqlite_disabling_revokes_every_way_in, postgres_disabling_revokes_every_way_in;
    case_deletion_leaves_a_tombstone_that_holds_the_name => sqlite_deletion_leaves_a_tombstone_that_holds_the_name, postgres_deletion_leaves_a_tombstone_that_holds_the_name;
    case_the_last_administrator_and_oneself_stay => sqlite_the_last_administrator_and_oneself_stay, postgres_the_last_administrator_and_oneself_stay;
}

async fn disable(h: &Harness, who: &str, token: &str) -> common::Resp {
    h.post(
        &format!("/api/v1/users/{who}/disable"),
        Some(token),
        json!({ "reason": "left the company" }),
    )
    .await
}

async fn case_disabling_revokes_every_way_in(h: Harness) {
    // Two administrators, so the leaver is not the last one.
    let boss_secret = h.user_with_totp("boss", &["admin"]).await;
    let secret = h.user_with_totp("leo", &["admin"]).await;
    let session = h.signin_mfa("leo", &secret).await;
    // What a leaver holds: a session, an API token they made, a sign-in in
    // progress, an unused pass.
    let r = h
        .post("/api/v1/api-tokens", Some(&session), json!({ "name": "leo-script" }))
        .await;
    r.expect(StatusCode::CREATED);
    let leo_token = r.json["token"].as_str().unwrap().to_owned();
    h.get("/api/v1/users/leo", Some(&leo_token))
        .await
        .expect(StatusCode::OK);
    h.advance(30);
    let r = h.start_with_password("leo", PASSWORD).await;
    r.expect(StatusCode::OK);
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    let boss = h.signin_mfa("boss", &boss_secret).await;
    // Leo holds a role: his pass is asked for by one administrator (boss),
    // approved by another (cara), then issued by boss.
    let cara_secret = h.user_with_totp("cara", &["admin"]).await;
    let cara = h.signin_mfa("cara", &cara_secret).await;
    let r = h.issue_tap(&boss, "leo", json!({})).await;
    r.expect(StatusCode::ACCEPTED);
    let request = r.json["request_id"].as_str().unwrap().to_owned();
    h.post(
        &format!("/api/v1/change-requests/{request}/approve"),
        Some(&cara),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    let r = h
        .post(&format!("/api/v1/tap-requests/{request}/issue"), Some(&boss), json!({}))
        .await;
    r.expect(StatusCode::CREATED);
    let pass = r.json["pass"].as_str().unwrap().to_owned();

    let r = disable(&h, "leo", &boss).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["user"]["state"], "disabled");
    assert_eq!(r.json["user"]["state_reason"], "left the company");
    assert!(r.json["revoked"]["sessions"].as_u64().unwrap() >= 1, "{}", r.json);
    assert_eq!(r.json["revoked"]["api_tokens"], 1, "{}", r.json);
    assert_eq!(r.json["revoked"]["signin_flows"], 1, "{}", r.json);
    assert_eq!(r.json["revoked"]["passes"], 1, "{}", r.json);

    // Within the same request: the session and the token are dead.
    h.get("/api/v1/session", Some(&session))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    h.get("/api/v1/users/leo", Some(&leo_token))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    // The flow in progress is gone.
    h.verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "flow-not-found");
    // The right password gets exactly the wrong-password answer.
    h.advance(30);
    let right = h.start_with_password("leo", PASSWORD).await;
    let wrong = h.start_with_password("leo", "not the password at all").await;
    right.expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    assert_eq!(right.json["detail"], wrong.json["detail"]);
    h.signin_tap("leo", &pass)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");
    // Audited in the same transaction as the change.
    let events = h.all_audit_events().await;
    let e = events.iter().find(|e| e["action"] == "user.disable").expect("audited");
    assert_eq!(e["target"], "user:leo");
    assert_eq!(e["details"]["reason"], "left the company");

    // Enabling brings the account back, nothing else: they sign in afresh.
    h.post("/api/v1/users/leo/enable", Some(&boss), json!({}))
        .await
        .expect(StatusCode::OK);
    h.get("/api/v1/session", Some(&session))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    h.get("/api/v1/users/leo", Some(&leo_token))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    h.signin_mfa("leo", &secret).await;
    // Disabling twice, or enabling an active account, is a clear conflict.
    h.post("/api/v1/users/leo/enable", Some(&boss), json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    // Reasons are required.
    h.post("/api/v1/users/leo/disable", Some(&boss), json!({ "reason": "  " }))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    h.post("/api/v1/users/leo/disable", Some(&boss), json!({}))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);
}

async fn case_deletion_leaves_a_tombstone_that_holds_the_name(h: Harness) {
    let secret = h.user_with_totp("dora", &[]).await;
    let session = h.signin_mfa("dora", &secret).await;
    let r = h
        .call(
            Method::DELETE,
            "/api/v1/users/dora",
            Some(&h.admin.clone()),
            Some(json!({ "reason": "contract ended" })),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["user"]["state"], "deleted");
    assert_eq!(r.json["user"]["has_password"], false);
    h.get("/api/v1/session", Some(&session))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    // Secrets are gone; the tombstone stays readable and the chain intact.
    let m = h.get("/api/v1/users/dora/methods", Some(&h.admin.clone())).await;
    m.expect(StatusCode::OK);
    assert_eq!(m.json.as_array().unwrap().len(), 0, "{}", m.json);
    let v = h.get("/api/v1/audit/verify", Some(&h.admin.clone())).await;
    assert_eq!(v.json["ok"], true);
    // A deleted account is final.
    h.post("/api/v1/users/dora/enable", Some(&h.admin.clone()), json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    // The name is held: a new "dora" cannot be created yet.
    h.post(
        "/api/v1/users",
        Some(&h.admin.clone()),
        json!({ "username": "dora", "display_name": "Another Dora" }),
    )
    .await
    .expect(StatusCode::CONFLICT);
    // After the hold period, housekeeping releases it (audited).
    h.advance(366 * 86_400);
    assert_eq!(h.app.release_deleted_usernames().await.unwrap(), 1);
    h.create_user("dora", &[]).await;
    let events = h.all_audit_events().await;
    assert!(events.iter().any(|e| e["action"] == "user.username_released"));
    assert!(events
        .iter()
        .any(|e| e["action"] == "user.delete" && e["details"]["reason"] == "contract ended"));
}

async fn case_the_last_administrator_and_oneself_stay(h: Harness) {
    let secret = h.user_with_totp("solo", &["admin"]).await;
    let session = h.signin_mfa("solo", &secret).await;
    // Through a token: still the last administrator.
    disable(&h, "solo", &h.admin.clone())
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");
    h.user_with_totp("second", &["admin"]).await;
    // Not oneself, even with another administrator around.
    disable(&h, "solo", &session)
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");
    // Only administrators.
    let hd = h.user_with_totp("desk", &["helpdesk"]).await;
    let desk = h.signin_mfa("desk", &hd).await;
    disable(&h, "second", &desk)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    disable(&h, "nobody", &h.admin.clone())
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
    disable(&h, "second", &h.admin.clone()).await.expect(StatusCode::OK);
}
