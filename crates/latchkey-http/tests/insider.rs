//! Holding against insiders (security review items 3–8), over HTTP, on
//! SQLite and on PostgreSQL (`LATCHKEY_TEST_POSTGRES_URL`): two-person
//! approval compares people, not tokens; nobody takes over a privileged
//! account alone; any role is privileged; the helpdesk cannot strip an
//! administrator's second factors; the audit chain is keyed and anchored
//! outside the database; exception requesters are who they say.

mod common;

use axum::http::StatusCode;
use common::{Harness, PASSWORD};
use latchkey_service::app::Principal;
use serde_json::{json, Value};

/// Run a scenario on SQLite, then on PostgreSQL when it is configured.
macro_rules! both_backends {
    ($scenario:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            $scenario(Harness::sqlite().await).await;
        }
        #[tokio::test]
        async fn $postgres() {
            if let Some(h) = Harness::postgres(stringify!($postgres)).await {
                $scenario(h).await;
            }
        }
    };
}

fn request_id(r: &common::Resp) -> String {
    r.json["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no request_id in {}", r.json))
        .to_owned()
}

async fn approve(h: &Harness, id: &str, token: &str) -> common::Resp {
    h.post(&format!("/api/v1/change-requests/{id}/approve"), Some(token), json!({}))
        .await
}

async fn totp_method_id(h: &Harness, user: &str) -> String {
    let r = h.get(&format!("/api/v1/users/{user}/methods"), Some(&h.admin)).await;
    r.expect(StatusCode::OK);
    r.json
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "totp" && m["state"] == "active")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .expect("an active TOTP method")
}

async fn password_works(h: &Harness, user: &str, password: &str) -> bool {
    let r = h.start_with_password(user, password).await;
    r.status == StatusCode::OK && r.json["state"] == "second_factor_required"
}

// ---- item 3: two-person approval is two people ------------------------------

async fn two_person_approval_is_two_people(h: Harness) {
    let a = h.user_with_totp("alice", &["admin"]).await;
    h.user_with_totp("bob", &["admin"]).await;
    let c = h.user_with_totp("carol", &["admin"]).await;
    let alice = h.signin_mfa("alice", &a).await;

    // A token made by alice's session is alice's.
    let r = h
        .post(
            "/api/v1/api-tokens",
            Some(&alice),
            json!({ "name": "alice-automation" }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.json["owner"], "alice");
    let alice_token = r.json["token"].as_str().unwrap().to_owned();
    // A token made by that token is still alice's.
    let r = h
        .post(
            "/api/v1/api-tokens",
            Some(&alice_token),
            json!({ "name": "alice-second" }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.json["owner"], "alice");
    let alice_second = r.json["token"].as_str().unwrap().to_owned();

    // Alice's token asks for a pass for bob; the audit names her.
    let r = h.issue_tap(&alice_token, "bob", json!({})).await;
    r.expect(StatusCode::ACCEPTED);
    let id = request_id(&r);
    let events = h.all_audit_events().await;
    let asked = events
        .iter()
        .find(|e| e["action"] == "tap.request" && e["target"] == "user:bob")
        .unwrap();
    assert_eq!(asked["actor"], "token:alice-automation (owner:alice)");

    // Alice's session, her second token, and a token without an owner
    // approve nothing; the request still waits.
    for t in [&alice, &alice_second, &h.admin] {
        approve(&h, &id, t)
            .await
            .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    }
    // Nobody asks for a pass for themselves through a token either.
    h.issue_tap(&alice_token, "alice", json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    // The person the pass is for does not approve it.
    let bob_token = h.owned_token("bob-token", "bob").await;
    approve(&h, &id, &bob_token)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    let list = h
        .get("/api/v1/change-requests?state=pending_approval", Some(&h.admin))
        .await;
    list.expect(StatusCode::OK);
    assert!(list.json.as_array().unwrap().iter().any(|r| r["id"] == id));

    // Carol, another person, approves through her session.
    let carol = h.signin_mfa("carol", &c).await;
    let r = approve(&h, &id, &carol).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "approved");
    h.post(
        &format!("/api/v1/tap-requests/{id}/issue"),
        Some(&alice_token),
        json!({}),
    )
    .await
    .expect(StatusCode::CREATED);

    // A token's owner must be an administrator when it is admin-scoped, and
    // an owner who lost the role no longer acts through it at all (approving
    // included): the token holds no more than its owner.
    h.create_user("dave", &[]).await;
    assert!(h
        .app
        .create_scoped_api_token(&Principal::Operator, "dave-token", &["admin"], Some("dave"))
        .await
        .is_err());
    let carol_token = h.owned_token("carol-token", "carol").await;
    h.get("/api/v1/users", Some(&carol_token)).await.expect(StatusCode::OK);
    let r = h.issue_tap(&alice_token, "bob", json!({})).await;
    let id = request_id(&r);
    h.call(
        axum::http::Method::PATCH,
        "/api/v1/users/carol",
        Some(&h.admin),
        Some(json!({ "roles": [] })),
    )
    .await
    .expect(StatusCode::OK);
    approve(&h, &id, &carol_token)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    h.get("/api/v1/users", Some(&carol_token))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
}
both_backends!(
    two_person_approval_is_two_people,
    finding3_two_person_approval_is_two_people_sqlite,
    finding3_two_person_approval_is_two_people_postgres
);

// ---- item 4: an admin cannot take over another admin alone -----------------

async fn admin_takeover_needs_a_second_approver(h: Harness) {
    let a = h.user_with_totp("alice", &["admin"]).await;
    h.user_with_totp("bob", &["admin"]).await;
    let c = h.user_with_totp("carol", &["admin"]).await;
    let alice = h.signin_mfa("alice", &a).await;
    let carol = h.signin_mfa("carol", &c).await;
    let new_password = "a completely different passphrase 42";

    // Setting bob's password: a request, not a change.
    let r = h
        .put(
            "/api/v1/users/bob/password",
            Some(&alice),
            json!({ "password": new_password }),
        )
        .await;
    r.expect_problem(StatusCode::CONFLICT, "approval-required");
    let pw_request = request_id(&r);
    assert!(password_works(&h, "bob", PASSWORD).await);
    assert!(!password_works(&h, "bob", new_password).await);
    // Enrolling an authenticator for him, or removing his: requests too.
    let r = h.post("/api/v1/users/bob/methods/totp", Some(&alice), json!({})).await;
    r.expect_problem(StatusCode::CONFLICT, "approval-required");
    let totp_request = request_id(&r);
    let bob_totp = totp_method_id(&h, "bob").await;
    h.delete(&format!("/api/v1/users/bob/methods/{bob_totp}"), Some(&alice))
        .await
        .expect_problem(StatusCode::CONFLICT, "approval-required");
    h.post("/api/v1/users/bob/methods/recovery-codes", Some(&alice), json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "approval-required");
    // Other methods bob enrols himself (with an approved pass).
    h.post(
        "/api/v1/users/bob/methods/webauthn/register/start",
        Some(&alice),
        json!({ "kind": "security_key" }),
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    let (_, methods) = h.app.methods(&Principal::Operator, "bob").await.unwrap();
    assert_eq!(methods.len(), 1, "nothing was enrolled or removed");

    // An approval not yet given, or given for another change, does nothing.
    h.put(
        &format!("/api/v1/users/bob/password?approval={pw_request}"),
        Some(&alice),
        json!({ "password": new_password }),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "invalid-state");
    approve(&h, &pw_request, &carol).await.expect(StatusCode::OK);
    h.post(
        &format!("/api/v1/users/bob/methods/totp?approval={pw_request}"),
        Some(&alice),
        json!({}),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "invalid-state");
    // Only the requester uses it.
    h.put(
        &format!("/api/v1/users/bob/password?approval={pw_request}"),
        Some(&carol),
        json!({ "password": new_password }),
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    h.put(
        &format!("/api/v1/users/bob/password?approval={pw_request}"),
        Some(&alice),
        json!({ "password": new_password }),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    assert!(password_works(&h, "bob", new_password).await);
    // Once.
    h.put(
        &format!("/api/v1/users/bob/password?approval={pw_request}"),
        Some(&alice),
        json!({ "password": PASSWORD }),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "invalid-state");

    // The approved enrolment covers its own confirmation.
    approve(&h, &totp_request, &carol).await.expect(StatusCode::OK);
    let r = h
        .post(
            &format!("/api/v1/users/bob/methods/totp?approval={totp_request}"),
            Some(&alice),
            json!({}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let secret = latchkey_core::otp::decode_secret(r.json["secret"].as_str().unwrap()).unwrap();
    h.confirm_totp("bob", &alice, &id, &secret).await.expect(StatusCode::OK);

    let events = h.all_audit_events().await;
    let set = events
        .iter()
        .find(|e| e["action"] == "password.set" && e["target"] == "user:bob" && e["actor"] != "cli:operator")
        .unwrap();
    assert_eq!(set["actor"], "user:alice");
    assert_eq!(set["details"]["request_id"], pw_request.as_str());
    assert_eq!(set["details"]["approved_by"], "user:carol");
}
both_backends!(
    admin_takeover_needs_a_second_approver,
    finding4_admin_takeover_needs_a_second_approver_sqlite,
    finding4_admin_takeover_needs_a_second_approver_postgres
);

// ---- item 5: helpdesk does not become an auditor -----------------------------

async fn helpdesk_cannot_become_an_auditor(h: Harness) {
    let hd = h.user_with_totp("hd", &["helpdesk"]).await;
    h.create_user("aud", &["auditor"]).await;
    let hd = h.signin_mfa("hd", &hd).await;

    let r = h.get("/api/v1/users/aud", Some(&hd)).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["privileged"], true, "any role is privileged");
    // No pass for the auditor from the helpdesk, so no sign-in as them.
    h.issue_tap(&hd, "aud", json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    // No security info set for them either.
    h.put("/api/v1/users/aud/password", Some(&hd), json!({ "password": PASSWORD }))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    h.post("/api/v1/users/aud/methods/totp", Some(&hd), json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    // An administrator's pass for an auditor waits for a second person too.
    h.create_user("boss", &["admin"]).await;
    let boss = h.owned_token("boss-token", "boss").await;
    h.issue_tap(&boss, "aud", json!({})).await.expect(StatusCode::ACCEPTED);
    let (_, methods) = h.app.methods(&Principal::Operator, "aud").await.unwrap();
    assert!(methods.is_empty());
    assert!(h
        .app
        .live_passes(&h.app.user("aud").await.unwrap())
        .await
        .unwrap()
        .is_empty());
}
both_backends!(
    helpdesk_cannot_become_an_auditor,
    finding5_helpdesk_cannot_become_an_auditor_sqlite,
    finding5_helpdesk_cannot_become_an_auditor_postgres
);

// ---- item 6: helpdesk cannot strip an administrator's second factors --------

async fn helpdesk_cannot_strip_an_admins_second_factors(h: Harness) {
    let hd = h.user_with_totp("hd", &["helpdesk"]).await;
    h.user_with_totp("boss", &["admin"]).await;
    let c = h.user_with_totp("carol", &["admin"]).await;
    let hd = h.signin_mfa("hd", &hd).await;
    let carol = h.signin_mfa("carol", &c).await;
    let totp = totp_method_id(&h, "boss").await;
    let r = h
        .post(
            "/api/v1/users/boss/devices",
            Some(&hd),
            json!({ "name": "Boss's phone", "platform": "ios", "ownership": "corporate" }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let phone = r.json["id"].as_str().unwrap().to_owned();
    h.app
        .bind_method_to_device(&Principal::Operator, "boss", &totp, &phone)
        .await
        .unwrap();

    // The lost-phone runbook: verify, skip three steps, remove the old methods.
    let r = h
        .post(
            "/api/v1/helpdesk/cases",
            Some(&hd),
            json!({ "username": "boss", "scenario": "lost-phone" }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let case = r.json["id"].as_str().unwrap().to_owned();
    let step = |body: Value| {
        let h = &h;
        let hd = hd.clone();
        let case = case.clone();
        async move {
            h.post(&format!("/api/v1/helpdesk/cases/{case}/steps"), Some(&hd), body)
                .await
        }
    };
    step(json!({ "step": "verify_identity", "verification": { "method": "callback", "note": "called back" } }))
        .await
        .expect(StatusCode::OK);
    for s in ["issue_tap", "deliver_tap", "confirm_registration"] {
        h.post(
            &format!("/api/v1/helpdesk/cases/{case}/skip"),
            Some(&hd),
            json!({ "step": s, "reason": "the caller says it is urgent" }),
        )
        .await
        .expect(StatusCode::OK);
    }
    let r = step(json!({ "step": "remove_old_methods", "remove_method_ids": [totp] })).await;
    r.expect_problem(StatusCode::CONFLICT, "approval-required");
    let removal = request_id(&r);
    // Marking the admin's phone lost directly: the same rule.
    let r = h
        .post(&format!("/api/v1/devices/{phone}/lost"), Some(&hd), json!({}))
        .await;
    r.expect_problem(StatusCode::CONFLICT, "approval-required");
    let lost = request_id(&r);
    assert_eq!(totp_method_id(&h, "boss").await, totp, "the method still works");

    // The helpdesk does not approve; an administrator does. The approval is
    // for exactly those removals.
    approve(&h, &removal, &hd)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    approve(&h, &removal, &carol).await.expect(StatusCode::OK);
    step(json!({ "step": "remove_old_methods", "remove_method_ids": [totp, "another"], "approval_id": removal }))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    step(json!({ "step": "remove_old_methods", "remove_method_ids": [totp], "approval_id": removal }))
        .await
        .expect(StatusCode::OK);
    let (_, methods) = h.app.methods(&Principal::Operator, "boss").await.unwrap();
    assert!(methods.iter().all(|m| m.id != totp));

    // The device request can still be approved and used once.
    approve(&h, &lost, &carol).await.expect(StatusCode::OK);
    h.post(
        &format!("/api/v1/devices/{phone}/lost?approval={lost}"),
        Some(&hd),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    h.post(
        &format!("/api/v1/devices/{phone}/retire?approval={lost}"),
        Some(&hd),
        json!({}),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "invalid-state");
}
both_backends!(
    helpdesk_cannot_strip_an_admins_second_factors,
    finding6_helpdesk_cannot_strip_an_admins_second_factors_sqlite,
    finding6_helpdesk_cannot_strip_an_admins_second_factors_postgres
);

// ---- item 7: the audit chain is keyed and anchored outside the database -----

/// What someone who can write the database but lacks the key can do:
/// recompute every hash from `from` on with the unkeyed scheme, and the head.
async fn rechain_unkeyed(raw: &sqlx::AnyPool, from: i64) {
    use sqlx::Row;
    let rows = sqlx::query("SELECT seq, at_ms, actor, action, target, details FROM audit_events ORDER BY seq")
        .fetch_all(raw)
        .await
        .unwrap();
    let mut prev: String = if from == 1 {
        latchkey_core::audit::GENESIS_HASH.to_owned()
    } else {
        sqlx::query("SELECT hash FROM audit_events WHERE seq = $1")
            .bind(from - 1)
            .fetch_one(raw)
            .await
            .unwrap()
            .get("hash")
    };
    for r in rows.iter().filter(|r| r.get::<i64, _>("seq") >= from) {
        let seq: i64 = r.get("seq");
        let hash = latchkey_core::audit::compute_hash(
            &prev,
            seq,
            r.get("at_ms"),
            &r.get::<String, _>("actor"),
            &r.get::<String, _>("action"),
            &r.get::<String, _>("target"),
            &r.get::<String, _>("details"),
        );
        sqlx::query("UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE seq = $3")
            .bind(&prev)
            .bind(&hash)
            .bind(seq)
            .execute(raw)
            .await
            .unwrap();
        prev = hash;
    }
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&prev)
        .execute(raw)
        .await
        .unwrap();
}

async fn audit_chain_rewrite_is_detected(h: Harness) {
    for i in 0..6 {
        h.create_user(&format!("u{i}"), &[]).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checkpoints.jsonl");
    let cp = h.app.write_audit_checkpoint(&file).await.unwrap().unwrap();
    let op = Principal::Operator;
    let r = h.app.verify_audit_checkpoints(&op, &file).await.unwrap();
    assert!(r.intact && r.chain.ok, "{r:?}");
    assert_eq!(r.chain.keyed_from, Some(1), "every event is keyed");
    for i in 6..9 {
        h.create_user(&format!("u{i}"), &[]).await;
    }
    let raw = h.raw().await;

    // 1. Change a row and recompute every later hash the unkeyed way, head
    // included: the keyed hashes no longer match.
    sqlx::query("UPDATE audit_events SET target = 'user:nobody' WHERE seq = 3")
        .execute(&raw)
        .await
        .unwrap();
    rechain_unkeyed(&raw, 3).await;
    let r = h.get("/api/v1/audit/verify", Some(&h.admin)).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["ok"], false, "{}", r.json);
    assert_eq!(r.json["first_broken"]["seq"], 3);
    assert_eq!(
        r.json["first_broken"]["reason"],
        "hash mismatch: record content was altered"
    );
    // 2. Rewrite the whole chain as old unkeyed events: consistent, but the
    // checkpoint taken earlier no longer matches.
    sqlx::query("UPDATE audit_events SET scheme = 'sha256'")
        .execute(&raw)
        .await
        .unwrap();
    rechain_unkeyed(&raw, 1).await;
    let r = h.app.verify_audit_checkpoints(&op, &file).await.unwrap();
    assert!(r.chain.ok, "internally consistent unkeyed chain: {r:?}");
    assert!(!r.intact);
    assert!(
        matches!(
            r.findings[0],
            latchkey_core::audit::CheckpointFinding::Rewritten { seq } if seq == cp.seq
        ),
        "{r:?}"
    );
}
both_backends!(
    audit_chain_rewrite_is_detected,
    finding7_audit_chain_rewrite_is_detected_sqlite,
    finding7_audit_chain_rewrite_is_detected_postgres
);

async fn audit_tail_deletion_is_detected_by_checkpoints(h: Harness) {
    for i in 0..8 {
        h.create_user(&format!("u{i}"), &[]).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checkpoints.jsonl");
    let cp = h.app.write_audit_checkpoint(&file).await.unwrap().unwrap();
    let op = Principal::Operator;
    // Delete the tail and move the head back: the chain alone looks intact.
    let raw = h.raw().await;
    sqlx::query("DELETE FROM audit_events WHERE seq > 5")
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_head SET seq = 5, hash = (SELECT hash FROM audit_events WHERE seq = 5) WHERE id = 1")
        .execute(&raw)
        .await
        .unwrap();
    let r = h.get("/api/v1/audit/verify", Some(&h.admin)).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["ok"], true, "the truncated chain is consistent: {}", r.json);
    let r = h.app.verify_audit_checkpoints(&op, &file).await.unwrap();
    assert!(!r.intact);
    assert_eq!(
        r.findings,
        vec![latchkey_core::audit::CheckpointFinding::Truncated {
            seq: cp.seq,
            chain_length: 5
        }]
    );
    // A forged checkpoint (right shape, wrong signer) says so.
    let mut forged = cp.clone();
    forged.seq = 5;
    std::fs::write(&file, serde_json::to_string(&forged).unwrap() + "\n").unwrap();
    let r = h.app.verify_audit_checkpoints(&op, &file).await.unwrap();
    assert_eq!(
        r.findings,
        vec![latchkey_core::audit::CheckpointFinding::BadSignature { seq: 5 }]
    );
}
both_backends!(
    audit_tail_deletion_is_detected_by_checkpoints,
    finding7_audit_tail_deletion_is_detected_by_checkpoints_sqlite,
    finding7_audit_tail_deletion_is_detected_by_checkpoints_postgres
);

// ---- item 8: exception requesters are the caller ------------------------------

async fn exception_requester_is_the_caller(h: Harness) {
    h.post(
        "/api/v1/policies",
        Some(&h.admin),
        json!({ "policy": { "id": "all-mfa", "name": "All MFA", "state": "enabled",
                "assignments": { "users": { "include": ["*"] }, "applications": { "include": ["*"] } },
                "grant": [ { "require_strength": "mfa" } ] }, "force": true }),
    )
    .await
    .expect(StatusCode::CREATED);
    h.create_user("fay", &[]).await;
    let s1 = h.user_with_totp("sec1", &["security_admin"]).await;
    let s2 = h.user_with_totp("sec2", &["security_admin"]).await;
    let sec1 = h.signin_mfa("sec1", &s1).await;
    let sec2 = h.signin_mfa("sec2", &s2).await;
    let body = |requested_by: Option<&str>| {
        let mut b = json!({ "policy_id": "all-mfa", "user": "fay", "reason": "travel without a phone",
                            "expires_at": latchkey_http::api::rfc3339(h.now() + 86_400) });
        if let Some(r) = requested_by {
            b["requested_by"] = json!(r);
        }
        b
    };
    // Someone else named as requester: refused, clearly.
    let r = h
        .post("/api/v1/policy-exceptions", Some(&sec1), body(Some("nobody-at-all")))
        .await;
    r.expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    assert!(r.json["detail"].as_str().unwrap().contains("sec1"), "{}", r.json);
    // A token without an owner names no requester.
    h.post("/api/v1/policy-exceptions", Some(&h.admin), body(None))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    // The caller asks (naming themself is fine); nothing is in force yet.
    let r = h
        .post("/api/v1/policy-exceptions", Some(&sec1), body(Some("sec1")))
        .await;
    r.expect(StatusCode::ACCEPTED);
    let id = request_id(&r);
    let list = h.get("/api/v1/policy-exceptions", Some(&sec1)).await;
    assert!(!list.text().contains("travel without a phone"), "{}", list.json);
    // Not approved by the requester, nor by fay.
    approve(&h, &id, &sec1)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    // Fay becomes a security administrator (granted by the local operator:
    // over the API a role grant is itself a request).
    let change = latchkey_service::users::UserChange {
        roles: Some(vec!["security_admin".into()]),
        ..Default::default()
    };
    h.app.update_user(&Principal::Operator, "fay", change).await.unwrap();
    let f = h.provision_as_operator("fay").await;
    let fay = h.signin_mfa("fay", &f).await;
    approve(&h, &id, &fay)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    // Another security administrator approves: the exception exists.
    let r = approve(&h, &id, &sec2).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "used");
    let list = h.get("/api/v1/policy-exceptions", Some(&sec1)).await;
    let text = list.text();
    assert!(text.contains("travel without a phone"), "{text}");
    assert!(text.contains("\"requested_by\":\"sec1\""), "{text}");
    assert!(text.contains("\"approved_by\":\"user:sec2\""), "{text}");
}
both_backends!(
    exception_requester_is_the_caller,
    finding8_exception_requester_is_the_caller_sqlite,
    finding8_exception_requester_is_the_caller_postgres
);

// ---- item 3, the known gap: a role grant is a change request ----------------

async fn role_grant_needs_a_second_approver(h: Harness) {
    let a = h.user_with_totp("alice", &["admin"]).await;
    let b = h.user_with_totp("bob", &["admin"]).await;
    let alice = h.signin_mfa("alice", &a).await;
    let bob = h.signin_mfa("bob", &b).await;
    let alice_token = h.owned_token("alice-token", "alice").await;
    // Alice alone makes an account she controls: no role, so she may set
    // its password and authenticator herself...
    h.create_user("mallory", &[]).await;
    h.set_password("mallory", &alice).await;
    let make_admin = json!({ "roles": ["admin"] });
    let patch = |token: &str, approval: Option<&str>, body: Value| {
        let h = &h;
        let token = token.to_owned();
        let path = match approval {
            Some(id) => format!("/api/v1/users/mallory?approval={id}"),
            None => "/api/v1/users/mallory".to_owned(),
        };
        async move { h.call(axum::http::Method::PATCH, &path, Some(&token), Some(body)).await }
    };
    // ...but making it an administrator is a request, not a change.
    let r = patch(&alice, None, make_admin.clone()).await;
    r.expect_problem(StatusCode::CONFLICT, "approval-required");
    let id = request_id(&r);
    assert!(h.app.user("mallory").await.unwrap().roles.is_empty());
    let pending = h
        .get("/api/v1/change-requests?state=pending_approval", Some(&bob))
        .await;
    let req = pending.json.as_array().unwrap().iter().find(|r| r["id"] == id).cloned();
    assert_eq!(req.as_ref().unwrap()["kind"], "user.roles", "{}", pending.json);
    // Alice does not approve it, through her session or her token, and the
    // request cannot be used before someone else approved it.
    for t in [&alice, &alice_token] {
        approve(&h, &id, t)
            .await
            .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    }
    patch(&alice, Some(&id), make_admin.clone())
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    // Nobody asks for a role for themselves.
    h.call(
        axum::http::Method::PATCH,
        "/api/v1/users/alice",
        Some(&alice_token),
        Some(json!({ "roles": ["admin", "auditor"] })),
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "forbidden");

    // Bob approves; the approval is for exactly that grant, by its requester, once.
    approve(&h, &id, &bob).await.expect(StatusCode::OK);
    patch(&alice, Some(&id), json!({ "roles": ["admin", "auditor"] }))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    patch(&bob, Some(&id), make_admin.clone())
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    let r = patch(&alice_token, Some(&id), make_admin.clone()).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["roles"], json!(["admin"]));
    let events = h.all_audit_events().await;
    let granted = events
        .iter()
        .rev()
        .find(|e| e["action"] == "user.update" && e["target"] == "user:mallory")
        .unwrap();
    assert_eq!(granted["details"]["request_id"], id.as_str());
    assert_eq!(granted["details"]["approved_by"], "user:bob");

    // Removing a role applies at once; the used approval grants nothing again.
    let r = patch(&alice, None, json!({ "roles": [] })).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["roles"], json!([]));
    patch(&alice, Some(&id), make_admin.clone())
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    // Other attributes need no second person.
    patch(&alice, None, json!({ "department": "Finance" }))
        .await
        .expect(StatusCode::OK);
}
both_backends!(
    role_grant_needs_a_second_approver,
    finding3_role_grant_needs_a_second_approver_sqlite,
    finding3_role_grant_needs_a_second_approver_postgres
);

// ---- item 3: with fewer than two administrators, doctor says so --------------

async fn doctor_warns_with_fewer_than_two_admins(h: Harness) {
    let codes = |r: &common::Resp| -> Vec<String> {
        r.json
            .as_array()
            .unwrap_or_else(|| panic!("a list: {}", r.json))
            .iter()
            .map(|f| f["code"].as_str().unwrap().to_owned())
            .collect()
    };
    let r = h.get("/api/v1/doctor", Some(&h.admin)).await;
    r.expect(StatusCode::OK);
    let found = codes(&r);
    assert!(found.contains(&"fewer_than_two_admins".to_owned()), "{}", r.json);
    // The harness's token was made without an owner: it approves nothing.
    assert!(found.contains(&"admin_tokens_without_owner".to_owned()), "{}", r.json);
    // One administrator is still fewer than two.
    let a = h.user_with_totp("alice", &["admin"]).await;
    let alice = h.signin_mfa("alice", &a).await;
    let r = h.get("/api/v1/doctor", Some(&alice)).await;
    r.expect(StatusCode::OK);
    assert!(codes(&r).contains(&"fewer_than_two_admins".to_owned()), "{}", r.json);
    h.user_with_totp("bob", &["admin"]).await;
    let r = h.get("/api/v1/doctor", Some(&alice)).await;
    assert!(!codes(&r).contains(&"fewer_than_two_admins".to_owned()), "{}", r.json);
    // A disabled administrator does not count.
    h.post("/api/v1/users/bob/disable", Some(&alice), json!({ "reason": "left" }))
        .await
        .expect(StatusCode::OK);
    let r = h.get("/api/v1/doctor", Some(&alice)).await;
    assert!(codes(&r).contains(&"fewer_than_two_admins".to_owned()), "{}", r.json);
    // Not for everyone.
    let u = h.user_with_totp("plain", &[]).await;
    let plain = h.signin_mfa("plain", &u).await;
    h.get("/api/v1/doctor", Some(&plain))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
}
both_backends!(
    doctor_warns_with_fewer_than_two_admins,
    finding3_doctor_warns_with_fewer_than_two_admins_sqlite,
    finding3_doctor_warns_with_fewer_than_two_admins_postgres
);

// ---- second review: no request without a person; no takeover by demotion ----

/// A token without an owner asks for no privileged change: its request
/// could otherwise be approved by the very person holding the token.
async fn an_ownerless_token_requests_no_privileged_change(h: Harness) {
    let a = h.user_with_totp("alice", &["admin"]).await;
    h.user_with_totp("bob", &["admin"]).await;
    let alice = h.signin_mfa("alice", &a).await;
    let (_, ownerless) = h
        .app
        .create_scoped_api_token(&Principal::Operator, "legacy", &["admin"], None)
        .await
        .unwrap();
    h.put(
        "/api/v1/users/bob/password",
        Some(&ownerless),
        json!({ "password": "another passphrase 42" }),
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    h.issue_tap(&ownerless, "bob", json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    // Nothing waits for alice to approve.
    let pending = h
        .get("/api/v1/change-requests?state=pending_approval", Some(&alice))
        .await;
    pending.expect(StatusCode::OK);
    assert_eq!(pending.json.as_array().unwrap().len(), 0, "{}", pending.json);
    assert!(password_works(&h, "bob", PASSWORD).await);
}
both_backends!(
    an_ownerless_token_requests_no_privileged_change,
    review2_an_ownerless_token_requests_no_privileged_change_sqlite,
    review2_an_ownerless_token_requests_no_privileged_change_postgres
);

/// Removing a role applies at once, but the person stays under the
/// two-person rule for a while: demotion is no first step of a takeover.
async fn removing_a_role_is_no_first_step_of_a_takeover(h: Harness) {
    let a = h.user_with_totp("alice", &["admin"]).await;
    h.user_with_totp("bob", &["admin"]).await;
    h.user_with_totp("carol", &["admin"]).await;
    let alice = h.signin_mfa("alice", &a).await;
    h.call(
        axum::http::Method::PATCH,
        "/api/v1/users/bob",
        Some(&alice),
        Some(json!({ "roles": [] })),
    )
    .await
    .expect(StatusCode::OK);
    assert!(
        h.app.user("bob").await.unwrap().roles.is_empty(),
        "the removal applied at once"
    );
    h.put(
        "/api/v1/users/bob/password",
        Some(&alice),
        json!({ "password": "another passphrase 42" }),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "approval-required");
    h.post("/api/v1/users/bob/methods/totp", Some(&alice), json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "approval-required");
    h.issue_tap(&alice, "bob", json!({})).await.expect(StatusCode::ACCEPTED);
    assert!(password_works(&h, "bob", PASSWORD).await);
}
both_backends!(
    removing_a_role_is_no_first_step_of_a_takeover,
    review2_removing_a_role_is_no_first_step_of_a_takeover_sqlite,
    review2_removing_a_role_is_no_first_step_of_a_takeover_postgres
);

/// An approval is used within a day or not at all.
async fn an_approval_is_used_within_a_day(h: Harness) {
    let a = h.user_with_totp("alice", &["admin"]).await;
    h.user_with_totp("bob", &["admin"]).await;
    let c = h.user_with_totp("carol", &["admin"]).await;
    let alice = h.signin_mfa("alice", &a).await;
    let carol = h.signin_mfa("carol", &c).await;
    let body = json!({ "password": "another passphrase 42" });
    let r = h.put("/api/v1/users/bob/password", Some(&alice), body.clone()).await;
    r.expect_problem(StatusCode::CONFLICT, "approval-required");
    let id = request_id(&r);
    approve(&h, &id, &carol).await.expect(StatusCode::OK);
    h.clock.advance(24 * 3600 + 1);
    // The sessions have gone stale too; alice signs in again.
    let alice = h.signin_mfa("alice", &a).await;
    h.put(&format!("/api/v1/users/bob/password?approval={id}"), Some(&alice), body)
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    assert!(password_works(&h, "bob", PASSWORD).await);
}
both_backends!(
    an_approval_is_used_within_a_day,
    review2_an_approval_is_used_within_a_day_sqlite,
    review2_an_approval_is_used_within_a_day_postgres
);
