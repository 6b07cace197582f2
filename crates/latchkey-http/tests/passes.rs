//! Temporary Access Passes after issue: revoking one (API), which also
//! stops a sign-in that already proved it and ends sessions opened with a
//! pass; cancelling a helpdesk case revokes its pass; and a case's runbook
//! scenario bounds its pass's lifetime. Runs on SQLite and (with
//! `LATCHKEY_TEST_POSTGRES_URL`) PostgreSQL.

#[macro_use]
mod common;

use axum::http::{Method, StatusCode};
use common::Harness;
use serde_json::{json, Value};

backends! {
    case_a_revoked_pass_signs_nobody_in => sqlite_a_revoked_pass_signs_nobody_in, postgres_a_revoked_pass_signs_nobody_in;
    case_revoking_stops_a_sign_in_that_started_with_the_pass => sqlite_revoking_stops_a_sign_in_that_started_with_the_pass, postgres_revoking_stops_a_sign_in_that_started_with_the_pass;
    case_cancelling_a_case_revokes_its_pass => sqlite_cancelling_a_case_revokes_its_pass, postgres_cancelling_a_case_revokes_its_pass;
    case_the_runbook_bounds_the_pass_lifetime => sqlite_the_runbook_bounds_the_pass_lifetime, postgres_the_runbook_bounds_the_pass_lifetime;
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_owned()
}

async fn issued(h: &Harness, user: &str) -> (String, String) {
    let r = h.issue_tap(&h.admin.clone(), user, json!({})).await;
    r.expect(StatusCode::CREATED);
    (s(&r.json["id"]), s(&r.json["pass"]))
}

async fn revoke(h: &Harness, user: &str, id: &str, token: &str, body: Option<Value>) -> common::Resp {
    h.call(
        Method::DELETE,
        &format!("/api/v1/users/{user}/temporary-access-passes/{id}"),
        Some(token),
        body,
    )
    .await
}

async fn case_a_revoked_pass_signs_nobody_in(h: Harness) {
    h.user_with_totp("pia", &[]).await;
    let desk_secret = h.user_with_totp("desk", &["helpdesk"]).await;
    let desk = h.signin_mfa("desk", &desk_secret).await;
    let (id, pass) = issued(&h, "pia").await;

    // The helpdesk sees the live pass, never the pass itself.
    let r = h.get("/api/v1/users/pia/temporary-access-passes", Some(&desk)).await;
    r.expect(StatusCode::OK);
    let list = r.json.as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", r.json);
    assert_eq!(list[0]["id"], id.as_str());
    assert!(list[0].get("pass").is_none() && !r.text().contains(&pass));

    // Pia signs in with it: a pass session.
    let r = h.signin_tap("pia", &pass).await;
    r.expect(StatusCode::OK);
    let session = s(&r.json["session_token"]);
    h.get("/api/v1/session", Some(&session)).await.expect(StatusCode::OK);

    // Someone without the helpdesk role may not revoke it.
    let plain = h.user_with_totp("plain", &[]).await;
    let plain = h.signin_mfa("plain", &plain).await;
    revoke(&h, "pia", &id, &plain, None)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");

    // Revoked (no body needed): the session opened with it ends now.
    let r = revoke(&h, "pia", &id, &desk, None).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["id"], id.as_str());
    assert_eq!(r.json["sessions_ended"], 1, "{}", r.json);
    h.get("/api/v1/session", Some(&session))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    h.get("/api/v1/users/pia/temporary-access-passes", Some(&desk))
        .await
        .json
        .as_array()
        .map(|l| assert!(l.is_empty(), "a revoked pass is not live: {l:?}"));

    // A multi-use pass would not help either: a revoked pass is dead.
    let (id2, pass2) = issued(&h, "pia").await;
    let r = revoke(
        &h,
        "pia",
        &id2,
        &desk,
        Some(json!({ "reason": "caller could not be verified" })),
    )
    .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["sessions_ended"], 0);
    h.signin_tap("pia", &pass2)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");

    // Twice, unknown, someone else's, bad reason: clear 4xx.
    revoke(&h, "pia", &id2, &desk, None)
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    revoke(&h, "pia", "no-such-pass", &desk, None)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
    let (id3, _) = issued(&h, "pia").await;
    revoke(&h, "plain", &id3, &desk, None)
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
    revoke(&h, "pia", &id3, &desk, Some(json!({ "reason": "a\nb" })))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    revoke(&h, "pia", &id3, &desk, Some(json!({ "why": "x" })))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    // An expired pass has nothing left to revoke.
    h.advance(2 * 3600);
    revoke(&h, "pia", &id3, &h.admin.clone(), None)
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");

    // Audited, with who and why.
    let events = h.all_audit_events().await;
    let revoked: Vec<&Value> = events.iter().filter(|e| e["action"] == "tap.revoke").collect();
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert_eq!(revoked[0]["actor"], "user:desk");
    assert_eq!(revoked[0]["target"], "user:pia");
    assert_eq!(revoked[0]["details"]["tap_id"], id.as_str());
    assert_eq!(revoked[0]["details"]["was_used"], true);
    assert_eq!(revoked[1]["details"]["reason"], "caller could not be verified");
}

/// A custom strength that needs a pass and a TOTP code: the pass step
/// alone does not complete the sign-in.
async fn pass_then_code_policy(h: &Harness, user: &str) {
    h.call(
        Method::PUT,
        "/api/v1/authentication-strengths/pass_and_code",
        Some(&h.admin.clone()),
        Some(json!({ "name": "pass_and_code", "combinations": [["temporary_access_pass", "totp"]] })),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    let policy = json!({
        "id": "pass-and-code", "name": "pass-and-code", "state": "enabled",
        "assignments": { "users": { "include": [user] }, "applications": { "include": ["*"] } },
        "grant": [{ "require_strength": "pass_and_code" }]
    });
    h.post(
        "/api/v1/policies",
        Some(&h.admin.clone()),
        json!({ "policy": policy, "force": true }),
    )
    .await
    .expect(StatusCode::CREATED);
}

async fn pass_step(h: &Harness, user: &str, pass: &str) -> String {
    let r = h.post("/api/v1/signin", None, json!({ "username": user })).await;
    r.expect(StatusCode::OK);
    let flow = s(&r.json["flow_id"]);
    let r = h
        .verify(&flow, json!({ "method": "temporary_access_pass", "pass": pass }))
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "second_factor_required", "{}", r.json);
    flow
}

async fn case_revoking_stops_a_sign_in_that_started_with_the_pass(h: Harness) {
    let secret = h.user_with_totp("ravi", &[]).await;
    pass_then_code_policy(&h, "ravi").await;

    // Without a revocation the pass and the code complete the sign-in, and
    // the completing step spends the pass: the session ends with it.
    let (_, pass) = issued(&h, "ravi").await;
    let flow = pass_step(&h, "ravi", &pass).await;
    h.advance(30);
    let r = h
        .verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete", "{}", r.json);
    let passes = h
        .get("/api/v1/users/ravi/temporary-access-passes", Some(&h.admin.clone()))
        .await;
    assert_eq!(passes.json.as_array().unwrap().len(), 0, "spent: {}", passes.json);
    h.signin_tap("ravi", &pass)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");

    // Revoked between its step and the next: the right code gets nobody in.
    let (id, pass) = issued(&h, "ravi").await;
    let flow = pass_step(&h, "ravi", &pass).await;
    revoke(
        &h,
        "ravi",
        &id,
        &h.admin.clone(),
        Some(json!({ "reason": "wrong person" })),
    )
    .await
    .expect(StatusCode::OK);
    h.advance(30);
    h.verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");
    // ...and the flow is gone.
    h.advance(30);
    h.verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "flow-not-found");
    let events = h.all_audit_events().await;
    let sessions = events
        .iter()
        .filter(|e| e["action"] == "session.create" && e["target"] == "user:ravi")
        .count();
    // Only the first flow opened a session (the setup opens none).
    assert_eq!(sessions, 1);
}

async fn open_case(h: &Harness, user: &str, scenario: &str) -> String {
    let r = h
        .post(
            "/api/v1/helpdesk/cases",
            Some(&h.admin.clone()),
            json!({ "username": user, "scenario": scenario }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let id = s(&r.json["id"]);
    h.post(
        &format!("/api/v1/helpdesk/cases/{id}/steps"),
        Some(&h.admin.clone()),
        json!({ "step": "verify_identity", "verification": { "method": "callback", "note": "called back the number on file" } }),
    )
    .await
    .expect(StatusCode::OK);
    id
}

async fn issue_step(h: &Harness, case: &str, minutes: i64) -> common::Resp {
    h.post(
        &format!("/api/v1/helpdesk/cases/{case}/steps"),
        Some(&h.admin.clone()),
        json!({ "step": "issue_tap", "lifetime_minutes": minutes }),
    )
    .await
}

async fn case_cancelling_a_case_revokes_its_pass(h: Harness) {
    h.user_with_totp("cara", &[]).await;
    let case = open_case(&h, "cara", "lost-phone").await;
    let r = issue_step(&h, &case, 120).await;
    r.expect(StatusCode::OK);
    let pass = s(&r.json["tap"]["pass"]);
    let tap_id = s(&r.json["tap"]["id"]);
    let r = h
        .post(
            &format!("/api/v1/helpdesk/cases/{case}/cancel"),
            Some(&h.admin.clone()),
            json!({ "reason": "the caller hung up before the callback" }),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "cancelled");
    h.signin_tap("cara", &pass)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");
    let events = h.all_audit_events().await;
    let e = events
        .iter()
        .find(|e| e["action"] == "tap.revoke")
        .expect("the revocation is audited");
    assert_eq!(e["details"]["tap_id"], tap_id.as_str());
    assert_eq!(e["details"]["case_id"], case.as_str());
    let c = events.iter().find(|e| e["action"] == "case.cancel").unwrap();
    assert_eq!(c["details"]["revoked_tap_id"], tap_id.as_str());

    // A case whose pass was never issued cancels without one.
    let case = open_case(&h, "cara", "lost-phone").await;
    h.post(
        &format!("/api/v1/helpdesk/cases/{case}/cancel"),
        Some(&h.admin.clone()),
        json!({ "reason": "duplicate ticket" }),
    )
    .await
    .expect(StatusCode::OK);
}

async fn case_the_runbook_bounds_the_pass_lifetime(h: Harness) {
    h.user_with_totp("lou", &[]).await;
    h.create_user("nia", &[]).await;
    // A lost phone: 1-4 hours.
    let case = open_case(&h, "lou", "lost_phone").await;
    let r = issue_step(&h, &case, 241).await;
    r.expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    let detail = s(&r.json["detail"]);
    assert!(detail.contains("240") && detail.contains("lost-phone"), "{detail}");
    let r = issue_step(&h, &case, 240).await;
    r.expect(StatusCode::OK);
    let t = &r.json["tap"];
    let secs = chrono_secs(&t["expires_at"]) - h.now();
    assert!((240 * 60 - 5..=240 * 60).contains(&secs), "{secs}");
    // A new employee: up to 8 hours.
    let case = open_case(&h, "nia", "new-employee").await;
    issue_step(&h, &case, 481)
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    issue_step(&h, &case, 480).await.expect(StatusCode::OK);
    // Outside a case the global bound applies.
    h.issue_tap(&h.admin.clone(), "lou", json!({ "lifetime_minutes": 480 }))
        .await
        .expect(StatusCode::CREATED);
}

fn chrono_secs(v: &Value) -> i64 {
    time::OffsetDateTime::parse(v.as_str().unwrap(), &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}
