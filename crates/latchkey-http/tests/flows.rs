//! Sign-in, registration and recovery flows over HTTP, in process, with a
//! manual clock. Every error is asserted by status and problem `type`.

mod common;

use axum::http::StatusCode;
use common::{Harness, PASSWORD};
use latchkey_core::otp;
use latchkey_service::time::rfc3339;
use serde_json::{json, Value};

const MIN: i64 = 60;
const HOUR: i64 = 3600;

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_owned()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(s)
        .collect()
}

// ---- bootstrap -------------------------------------------------------------------

#[tokio::test]
async fn bootstrap_pass_signs_the_first_admin_in_once() {
    let h = Harness::sqlite().await;
    let b = h
        .app
        .bootstrap_if_empty()
        .await
        .unwrap()
        .expect("an empty server bootstraps");
    assert_eq!(b.username, "admin");
    assert_eq!(b.expires_at, h.now() + 8 * HOUR);

    let r = h.post("/api/v1/signin", None, json!({ "username": "admin" })).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "started");
    assert!(strings(&r.json["allowed_methods"]).contains(&"temporary_access_pass".to_string()));
    let flow = s(&r.json["flow_id"]);

    let r = h
        .verify(&flow, json!({ "method": "temporary_access_pass", "pass": b.pass }))
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete");
    assert_eq!(r.json["acr"], "passwordless_mfa");
    assert_eq!(strings(&r.json["amr"]), ["tap"]);
    let session = s(&r.json["session_token"]);
    assert!(session.starts_with("lk_s_"));

    let r = h.get("/api/v1/session", Some(&session)).await;
    r.expect(StatusCode::OK);
    assert_eq!(
        (r.json["username"].clone(), r.json["acr"].clone()),
        (json!("admin"), json!("passwordless_mfa"))
    );
    // The bootstrap session is an admin's: it can create the next user.
    h.post(
        "/api/v1/users",
        Some(&session),
        json!({ "username": "second", "display_name": "Second admin", "roles": ["admin"] }),
    )
    .await
    .expect(StatusCode::CREATED);

    // The pass is spent.
    h.signin_tap("admin", &b.pass)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");
    // And there is only ever one bootstrap.
    assert!(h.app.bootstrap_if_empty().await.unwrap().is_none());
}

// ---- password + TOTP -------------------------------------------------------------------

#[tokio::test]
async fn password_and_totp_sign_in_end_to_end() {
    let h = Harness::sqlite().await;
    let admin = h.admin.clone();
    h.create_user("alice", &[]).await;
    h.set_password("alice", &admin).await;

    let (id, secret, r) = h.enroll_totp("alice", &admin).await;
    assert_eq!(r.json["state"], "pending");
    let uri = s(&r.json["otpauth_uri"]);
    assert!(uri.starts_with("otpauth://totp/Latchkey:alice?"), "{uri}");
    assert!(
        uri.contains(&format!("secret={}", otp::encode_secret(&secret))),
        "{uri}"
    );
    assert_eq!(secret.len(), 20, "SHA1 secrets are 20 bytes");

    // A pending method is no second factor yet: the password alone gets no session.
    let r = h.start_with_password("alice", PASSWORD).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "registration_required");

    // Confirmation needs the right code, once.
    h.post(
        &format!("/api/v1/users/alice/methods/totp/{id}/confirm"),
        Some(&admin),
        json!({ "code": h.wrong_code(&secret) }),
    )
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid-code");
    let r = h.confirm_totp("alice", &admin, &id, &secret).await;
    r.expect(StatusCode::OK);
    assert_eq!(
        (r.json["kind"].clone(), r.json["state"].clone()),
        (json!("totp"), json!("active"))
    );
    h.confirm_totp("alice", &admin, &id, &secret)
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");

    let r = h.start_with_password("alice", PASSWORD).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "second_factor_required");
    assert_eq!(strings(&r.json["allowed_methods"]), ["totp"]);
    let flow = s(&r.json["flow_id"]);
    // The code that confirmed the method is spent.
    h.verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "code-replayed");

    h.advance(30);
    let code = h.code(&secret);
    let r = h.verify(&flow, json!({ "method": "totp", "code": code })).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete");
    assert_eq!(strings(&r.json["amr"]), ["pwd", "otp", "mfa"]);
    assert_eq!(strings(&r.json["methods"]), ["password", "totp"]);
    assert_eq!(r.json["acr"], "mfa");
    let session = s(&r.json["session_token"]);
    assert_eq!(r.json["expires_at"], rfc3339(h.now() + 8 * HOUR));

    let r = h.get("/api/v1/session", Some(&session)).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["username"], "alice");
    assert_eq!(r.json["acr"], "mfa");
    assert_eq!(strings(&r.json["amr"]), ["pwd", "otp", "mfa"]);
    assert_eq!(r.json["authenticated_at"], rfc3339(h.now()));

    // A completed flow is gone.
    h.verify(&flow, json!({ "method": "totp", "code": code }))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "flow-not-found");

    // The same code in a new sign-in: replayed.
    let r = h.start_with_password("alice", PASSWORD).await;
    let flow = s(&r.json["flow_id"]);
    h.verify(&flow, json!({ "method": "totp", "code": code }))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "code-replayed");
    // The next period's code works (on the same flow: failures don't end it).
    h.advance(30);
    let r = h
        .verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete");

    // The password can also be given as a verify step of a started flow,
    // with the same answers.
    let r = h.post("/api/v1/signin", None, json!({ "username": "alice" })).await;
    let flow = s(&r.json["flow_id"]);
    h.verify(&flow, json!({ "method": "password", "password": "not it, not it" }))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    h.verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    let r = h
        .verify(&flow, json!({ "method": "password", "password": PASSWORD }))
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "second_factor_required");
    assert!(r.json["session_token"].is_null());
    h.advance(30);
    let r = h
        .verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["acr"], "mfa");

    // The user sees their own methods, with last use.
    let r = h.get("/api/v1/users/alice/methods", Some(&session)).await;
    r.expect(StatusCode::OK);
    let kinds: Vec<String> = r.json.as_array().unwrap().iter().map(|m| s(&m["kind"])).collect();
    assert_eq!(kinds, ["password", "totp"]);
    assert_eq!(r.json[1]["state"], "active");
    assert_eq!(r.json[1]["last_used_at"], rfc3339(h.now()));
}

// ---- lockout -------------------------------------------------------------------------

#[tokio::test]
async fn wrong_codes_lock_with_doubling_backoff_and_clear() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("alice", &[]).await;
    h.advance(30);
    let r = h.start_with_password("alice", PASSWORD).await;
    let flow = s(&r.json["flow_id"]);
    let wrong = |h: &Harness| json!({ "method": "totp", "code": h.wrong_code(&secret) });

    for i in 1..=5 {
        let r = h.verify(&flow, wrong(&h)).await;
        r.expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");
        assert!(r.retry_after().is_none(), "failure {i} is not a lock");
    }
    // Locked for 30 s: even the right code is refused unverified, and so is a
    // fresh password sign-in.
    let r = h
        .verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await;
    r.expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
    assert_eq!(r.retry_after(), Some(30));
    assert_eq!(r.json["retry_after"], 30);
    h.start_with_password("alice", PASSWORD)
        .await
        .expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
    h.advance(10);
    let r = h.verify(&flow, wrong(&h)).await;
    r.expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
    assert_eq!(r.retry_after(), Some(20), "Retry-After counts down with the clock");

    // After each lock one attempt is allowed; failing it locks twice as long.
    let mut lock = 20;
    for expected_next_lock in [60, 120, 240] {
        h.advance(lock);
        h.verify(&flow, wrong(&h))
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");
        let r = h.verify(&flow, wrong(&h)).await;
        r.expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
        assert_eq!(r.retry_after(), Some(expected_next_lock));
        lock = expected_next_lock;
    }

    // The helpdesk clears it.
    h.delete("/api/v1/users/alice/lockout", Some(&h.admin))
        .await
        .expect(StatusCode::NO_CONTENT);
    for _ in 0..4 {
        h.verify(&flow, wrong(&h))
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");
    }
    // A success clears the counter (4 failures so far)...
    let r = h
        .verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete");
    // ...so it takes 5 new failures to lock again.
    h.advance(30);
    let r = h.start_with_password("alice", PASSWORD).await;
    let flow = s(&r.json["flow_id"]);
    for _ in 0..5 {
        h.verify(&flow, wrong(&h))
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");
    }
    h.verify(&flow, wrong(&h))
        .await
        .expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
    let events = h.all_audit_events().await;
    assert!(events
        .iter()
        .any(|e| e["action"] == "lockout.clear" && e["target"] == "user:alice"));
}

#[tokio::test]
async fn one_source_address_is_throttled_across_usernames() {
    let h = Harness::sqlite().await;
    let attacker = [198, 51, 100, 66];
    // 20 failures (the per-source threshold), spread over usernames so no
    // single user locks.
    for i in 0..20 {
        let r = h
            .call_from(
                attacker,
                axum::http::Method::POST,
                "/api/v1/signin",
                None,
                Some(json!({ "username": format!("victim{}", i % 5), "password": "guess guess guess" })),
            )
            .await;
        r.expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    }
    let r = h
        .call_from(
            attacker,
            axum::http::Method::POST,
            "/api/v1/signin",
            None,
            Some(json!({ "username": "someone-new", "password": "guess guess guess" })),
        )
        .await;
    r.expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
    assert_eq!(r.retry_after(), Some(60));
    // Another address is unaffected.
    h.post(
        "/api/v1/signin",
        None,
        json!({ "username": "someone-new", "password": "guess guess guess" }),
    )
    .await
    .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
}

// ---- enumeration -----------------------------------------------------------------------

#[tokio::test]
async fn unknown_user_and_wrong_password_are_indistinguishable() {
    let h = Harness::sqlite().await;
    h.user_with_totp("alice", &[]).await;
    h.create_user("nopass", &[]).await; // exists, has no password

    // (case, username, password)
    let cases = [
        ("wrong password", "alice", "not the password at all"),
        ("unknown user", "nobody-here", "not the password at all"),
        ("user without a password", "nopass", "not the password at all"),
    ];
    let mut seen: Vec<(String, StatusCode, Value, Option<String>)> = Vec::new();
    for (i, (case, user, pw)) in cases.iter().enumerate() {
        let peer = [192, 0, 2, 10 + i as u8];
        let r = h
            .call_from(
                peer,
                axum::http::Method::POST,
                "/api/v1/signin",
                None,
                Some(json!({ "username": user, "password": pw })),
            )
            .await;
        r.expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
        let ct = r.headers.get("content-type").map(|v| v.to_str().unwrap().to_owned());
        seen.push((case.to_string(), r.status, r.json.clone(), ct));
    }
    for w in seen.windows(2) {
        assert_eq!(
            (w[0].1, &w[0].2, &w[0].3),
            (w[1].1, &w[1].2, &w[1].3),
            "'{}' and '{}' answer differently",
            w[0].0,
            w[1].0
        );
    }

    // Starting without a password: the same shape for a known and an unknown user.
    let a = h.post("/api/v1/signin", None, json!({ "username": "alice" })).await;
    let b = h
        .post("/api/v1/signin", None, json!({ "username": "nobody-here" }))
        .await;
    a.expect(StatusCode::OK);
    b.expect(StatusCode::OK);
    assert_eq!(a.json["state"], b.json["state"]);
    assert_eq!(a.json["allowed_methods"], b.json["allowed_methods"]);
    // A pass for an unknown user fails like a wrong pass for a known one.
    let bad_pass = "ABCD-EFGH-JKMN-PQRS";
    let ra = h
        .verify(
            &s(&a.json["flow_id"]),
            json!({ "method": "temporary_access_pass", "pass": bad_pass }),
        )
        .await;
    let rb = h
        .verify(
            &s(&b.json["flow_id"]),
            json!({ "method": "temporary_access_pass", "pass": bad_pass }),
        )
        .await;
    ra.expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");
    assert_eq!((ra.status, &ra.json), (rb.status, &rb.json));

    // Lockout is keyed by the name given, so it cannot tell the two apart either.
    for user in ["alice", "nobody-here"] {
        // 2 failures each so far (the wrong password or unknown user case
        // above, and the pass): 3 more reach the threshold of 5.
        for _ in 0..3 {
            h.post(
                "/api/v1/signin",
                None,
                json!({ "username": user, "password": "wrong wrong wrong" }),
            )
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
        }
        let r = h
            .post(
                "/api/v1/signin",
                None,
                json!({ "username": user, "password": "wrong wrong wrong" }),
            )
            .await;
        r.expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
        assert_eq!(r.retry_after(), Some(30), "{user}");
    }
}

// ---- registration needs a fresh strong sign-in ----------------------------------------------

#[tokio::test]
async fn registering_methods_needs_a_fresh_strong_sign_in_of_the_same_user() {
    let h = Harness::sqlite().await;
    let alice = h.user_with_totp("alice", &[]).await;
    let bob = h.user_with_totp("bob", &[]).await;

    // (endpoint, method, body, success status)
    let changes: [(&str, axum::http::Method, Option<Value>, StatusCode); 3] = [
        (
            "/api/v1/users/alice/methods/totp",
            axum::http::Method::POST,
            Some(json!({})),
            StatusCode::CREATED,
        ),
        (
            "/api/v1/users/alice/methods/recovery-codes",
            axum::http::Method::POST,
            None,
            StatusCode::CREATED,
        ),
        (
            "/api/v1/users/alice/password",
            axum::http::Method::PUT,
            Some(json!({ "password": "a brand new long password" })),
            StatusCode::NO_CONTENT,
        ),
    ];

    // An 11-minute-old session, kept alive (idle limit is 30 min).
    let stale = h.signin_mfa("alice", &alice).await;
    h.advance(11 * MIN);
    h.get("/api/v1/session", Some(&stale)).await.expect(StatusCode::OK);
    for (path, method, body, _) in &changes {
        h.call(method.clone(), path, Some(&stale), body.clone())
            .await
            .expect_problem(StatusCode::FORBIDDEN, "reauthentication-required");
    }

    // Fresh: allowed up to and including 10 minutes after signing in.
    let fresh = h.signin_mfa("alice", &alice).await;
    h.advance(10 * MIN);
    for (path, method, body, ok) in &changes {
        h.call(method.clone(), path, Some(&fresh), body.clone())
            .await
            .expect(*ok);
    }
    h.advance(1);
    h.call(changes[0].1.clone(), changes[0].0, Some(&fresh), changes[0].2.clone())
        .await
        .expect_problem(StatusCode::FORBIDDEN, "reauthentication-required");

    // Someone else's fresh session: forbidden, whatever its age.
    let bob_session = h.signin_mfa("bob", &bob).await;
    for (path, method, body, _) in &changes {
        h.call(method.clone(), path, Some(&bob_session), body.clone())
            .await
            .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    }
    h.get("/api/v1/users/alice", Some(&bob_session))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");

    // A password alone never yields a session; only a TAP gets such a user in.
    h.create_user("carl", &[]).await;
    h.set_password("carl", &h.admin.clone()).await;
    let r = h.start_with_password("carl", PASSWORD).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "registration_required");
    assert_eq!(strings(&r.json["allowed_methods"]), ["temporary_access_pass"]);
    assert!(r.json.get("session_token").is_none(), "{}", r.json);
    let flow = s(&r.json["flow_id"]);
    h.verify(&flow, json!({ "method": "totp", "code": "123456" }))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    let tap = h.issue_tap(&h.admin.clone(), "carl", json!({})).await;
    tap.expect(StatusCode::CREATED);
    let r = h
        .verify(
            &flow,
            json!({ "method": "temporary_access_pass", "pass": s(&tap.json["pass"]) }),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete");
    assert_eq!(r.json["acr"], "passwordless_mfa");
    assert_eq!(strings(&r.json["amr"]), ["pwd", "tap", "mfa"]);
    let carl = s(&r.json["session_token"]);
    // A TAP session may register, for as long as it lives.
    h.advance(30 * MIN - 1);
    h.post("/api/v1/users/carl/methods/totp", Some(&carl), json!({}))
        .await
        .expect(StatusCode::CREATED);
}

// ---- sessions ----------------------------------------------------------------------------

#[tokio::test]
async fn sessions_expire_when_idle_absolutely_with_the_pass_and_on_sign_out() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("alice", &[]).await;

    // Idle: 30 minutes without use.
    let kept = h.signin_mfa("alice", &secret).await;
    let idle = h.signin_mfa("alice", &secret).await;
    h.advance(29 * MIN);
    h.get("/api/v1/session", Some(&kept)).await.expect(StatusCode::OK);
    h.advance(2 * MIN);
    h.get("/api/v1/session", Some(&idle))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    h.get("/api/v1/session", Some(&kept)).await.expect(StatusCode::OK);

    // Absolute: 8 hours, however busy.
    let busy = h.signin_mfa("alice", &secret).await;
    let start = h.now();
    while h.now() + 25 * MIN < start + 8 * HOUR {
        h.advance(25 * MIN);
        h.get("/api/v1/session", Some(&busy)).await.expect(StatusCode::OK);
    }
    h.clock.set(start + 8 * HOUR - 1);
    let r = h.get("/api/v1/session", Some(&busy)).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["expires_at"], rfc3339(start + 8 * HOUR));
    assert_eq!(
        r.json["idle_expires_at"],
        rfc3339(start + 8 * HOUR),
        "idle deadline capped"
    );
    h.advance(1);
    h.get("/api/v1/session", Some(&busy))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");

    // A TAP session ends with the pass.
    let issued_at = h.now();
    let tap = h
        .issue_tap(&h.admin.clone(), "alice", json!({ "lifetime_minutes": 60 }))
        .await;
    tap.expect(StatusCode::CREATED);
    assert_eq!(tap.json["expires_at"], rfc3339(issued_at + HOUR));
    h.advance(10 * MIN);
    let r = h.signin_tap("alice", &s(&tap.json["pass"])).await;
    r.expect(StatusCode::OK);
    assert_eq!(
        r.json["expires_at"], tap.json["expires_at"],
        "capped at the pass's expiry"
    );
    let tap_session = s(&r.json["session_token"]);
    for at in [35 * MIN, 59 * MIN, HOUR - 1] {
        h.clock.set(issued_at + at);
        h.get("/api/v1/session", Some(&tap_session))
            .await
            .expect(StatusCode::OK);
    }
    h.clock.set(issued_at + HOUR);
    h.get("/api/v1/session", Some(&tap_session))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");

    // Signing out.
    let out = h.signin_mfa("alice", &secret).await;
    h.get("/api/v1/session", Some(&out)).await.expect(StatusCode::OK);
    h.delete("/api/v1/session", Some(&out))
        .await
        .expect(StatusCode::NO_CONTENT);
    h.get("/api/v1/session", Some(&out))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    h.delete("/api/v1/session", Some(&out))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    // An API token is not a session.
    h.delete("/api/v1/session", Some(&h.admin))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    h.get("/api/v1/session", Some(&h.admin))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
}

// ---- Temporary Access Pass issuance ---------------------------------------------------

#[tokio::test]
async fn tap_issuance_rules() {
    let h = Harness::sqlite().await;
    let admin = h.admin.clone();
    h.user_with_totp("alice", &[]).await;
    let hd_secret = h.user_with_totp("hd", &["helpdesk"]).await;
    let bob_secret = h.user_with_totp("bob", &[]).await;

    // (case, body overrides, status, problem slug)
    let cases: &[(&str, Value, StatusCode, &str)] = &[
        (
            "missing verification",
            json!({ "verification": null }),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "lifetime 30 min",
            json!({ "lifetime_minutes": 30 }),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "lifetime 59 min",
            json!({ "lifetime_minutes": 59 }),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "lifetime 481 min",
            json!({ "lifetime_minutes": 481 }),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "lifetime 600 min",
            json!({ "lifetime_minutes": 600 }),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "negative lifetime",
            json!({ "lifetime_minutes": -60 }),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "empty verification note",
            json!({ "verification": { "method": "callback", "note": "   " } }),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "unknown verification method",
            json!({ "verification": { "method": "email", "note": "sent a mail" } }),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "bootstrap verification is reserved",
            json!({ "verification": { "method": "bootstrap", "note": "trust me" } }),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "multi-use by default policy",
            json!({ "single_use": false }),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "negative delay",
            json!({ "starts_in_minutes": -1 }),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            "lifetime 60 min",
            json!({ "lifetime_minutes": 60 }),
            StatusCode::CREATED,
            "",
        ),
        (
            "lifetime 480 min",
            json!({ "lifetime_minutes": 480 }),
            StatusCode::CREATED,
            "",
        ),
        (
            "default lifetime",
            json!({ "lifetime_minutes": null }),
            StatusCode::CREATED,
            "",
        ),
    ];
    for (case, body, status, slug) in cases {
        let r = h.issue_tap(&admin, "alice", body.clone()).await;
        assert_eq!(r.status, *status, "{case}: {}", r.text());
        if slug.is_empty() {
            assert!(s(&r.json["pass"]).len() == 19, "{case}: {}", r.json);
            assert_eq!(r.json["single_use"], true);
        } else {
            r.expect_problem(*status, slug);
        }
    }

    // Nobody issues a pass to themself; helpdesk may issue to others; users may not.
    let hd = h.signin_mfa("hd", &hd_secret).await;
    h.issue_tap(&hd, "hd", json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    h.issue_tap(&hd, "alice", json!({})).await.expect(StatusCode::CREATED);
    let bob = h.signin_mfa("bob", &bob_secret).await;
    h.issue_tap(&bob, "alice", json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    h.issue_tap(&bob, "bob", json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    h.issue_tap(&admin, "ghost", json!({}))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");

    // Expired passes are refused, at and after expiry.
    let t = h.issue_tap(&admin, "alice", json!({ "lifetime_minutes": 60 })).await;
    h.advance(HOUR);
    h.signin_tap("alice", &s(&t.json["pass"]))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");
    h.advance(MIN);
    h.signin_tap("alice", &s(&t.json["pass"]))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");

    // A delayed start is refused until it starts, and the refusals don't spend it.
    let issued = h.now();
    let t = h
        .issue_tap(
            &admin,
            "alice",
            json!({ "starts_in_minutes": 30, "lifetime_minutes": 60 }),
        )
        .await;
    t.expect(StatusCode::CREATED);
    assert_eq!(t.json["starts_at"], rfc3339(issued + 30 * MIN));
    assert_eq!(t.json["expires_at"], rfc3339(issued + 90 * MIN));
    let pass = s(&t.json["pass"]);
    h.signin_tap("alice", &pass)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");
    h.advance(30 * MIN - 1);
    h.signin_tap("alice", &pass)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");
    h.advance(1);
    // Typed the way people type: lower case, spaces for dashes.
    let r = h.signin_tap("alice", &pass.to_lowercase().replace('-', " ")).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["acr"], "passwordless_mfa");
    h.signin_tap("alice", &pass)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");

    // A pass belongs to its user.
    let t = h.issue_tap(&admin, "alice", json!({})).await;
    h.signin_tap("bob", &s(&t.json["pass"]))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");
    h.signin_tap("alice", &s(&t.json["pass"])).await.expect(StatusCode::OK);
}

// ---- recovery codes -----------------------------------------------------------------------

#[tokio::test]
async fn recovery_codes_are_single_use_and_regeneration_revokes_the_old_set() {
    let h = Harness::sqlite().await;
    h.user_with_totp("alice", &[]).await;
    let r = h
        .call(
            axum::http::Method::POST,
            "/api/v1/users/alice/methods/recovery-codes",
            Some(&h.admin),
            None,
        )
        .await;
    r.expect(StatusCode::CREATED);
    let codes = strings(&r.json["codes"]);
    assert_eq!(codes.len(), 10);
    let mut uniq = codes.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 10, "distinct");
    assert!(
        codes.iter().all(|c| c.len() == 14 && c.matches('-').count() == 2),
        "{codes:?}"
    );

    let with_code = |code: String| {
        let h = &h;
        async move {
            let r = h.start_with_password("alice", PASSWORD).await;
            r.expect(StatusCode::OK);
            assert!(strings(&r.json["allowed_methods"]).contains(&"recovery_code".to_string()));
            h.verify(
                &s(&r.json["flow_id"]),
                json!({ "method": "recovery_code", "code": code }),
            )
            .await
        }
    };
    let r = with_code(codes[0].clone()).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete");
    assert_eq!(r.json["acr"], "mfa");
    assert_eq!(strings(&r.json["amr"]), ["pwd", "otp", "mfa"]);
    assert_eq!(strings(&r.json["methods"]), ["password", "recovery_code"]);
    with_code(codes[0].clone())
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");
    // Typing variations of an unused code work.
    with_code(codes[1].to_lowercase().replace('-', ""))
        .await
        .expect(StatusCode::OK);

    let r = h
        .call(
            axum::http::Method::POST,
            "/api/v1/users/alice/methods/recovery-codes",
            Some(&h.admin),
            None,
        )
        .await;
    r.expect(StatusCode::CREATED);
    let fresh = strings(&r.json["codes"]);
    assert!(fresh.iter().all(|c| !codes.contains(c)));
    for old in &codes[2..5] {
        with_code(old.clone())
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");
    }
    with_code(fresh[0].clone()).await.expect(StatusCode::OK);
    let methods = h.get("/api/v1/users/alice/methods", Some(&h.admin)).await;
    let rc: Vec<&Value> = methods
        .json
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "recovery_codes")
        .collect();
    assert_eq!(rc.len(), 1, "one set at a time: {}", methods.json);
}

// ---- audit and notifications after a realistic day -----------------------------------------

/// Secrets handed out during [`scenario`], none of which may reach the audit log.
struct Secrets(Vec<(String, String)>);

/// Bootstrap, create and onboard a user by TAP, self-register TOTP and
/// recovery codes, sign in with each. Returns every secret that was shown.
async fn scenario(h: &Harness) -> Secrets {
    let mut secrets = vec![("api token".to_string(), h.admin.clone())];
    let b = h.app.bootstrap_if_empty().await.unwrap().expect("bootstrap");
    secrets.push(("bootstrap pass".into(), b.pass.clone()));
    secrets.push(("bootstrap pass".into(), b.pass.replace('-', "")));
    let r = h.signin_tap("admin", &b.pass).await;
    r.expect(StatusCode::OK);
    let admin = s(&r.json["session_token"]);
    secrets.push(("admin session".into(), admin.clone()));

    h.create_user("alice", &[]).await;
    h.set_password("alice", &admin).await;
    secrets.push(("password".into(), PASSWORD.into()));
    let tap = h.issue_tap(&admin, "alice", json!({})).await;
    tap.expect(StatusCode::CREATED);
    secrets.push(("alice's TAP".into(), s(&tap.json["pass"])));
    secrets.push(("alice's TAP".into(), s(&tap.json["pass"]).replace('-', "")));
    let r = h.signin_tap("alice", &s(&tap.json["pass"])).await;
    r.expect(StatusCode::OK);
    let alice_tap = s(&r.json["session_token"]);
    secrets.push(("alice's TAP session".into(), alice_tap.clone()));

    let (id, secret, r) = h.enroll_totp("alice", &alice_tap).await;
    secrets.push(("TOTP secret (base32)".into(), s(&r.json["secret"])));
    secrets.push(("TOTP secret (hex)".into(), to_hex(&secret)));
    h.confirm_totp("alice", &alice_tap, &id, &secret)
        .await
        .expect(StatusCode::OK);
    let r = h
        .call(
            axum::http::Method::POST,
            "/api/v1/users/alice/methods/recovery-codes",
            Some(&alice_tap),
            None,
        )
        .await;
    r.expect(StatusCode::CREATED);
    for c in strings(&r.json["codes"]) {
        secrets.push(("recovery code".into(), c.replace('-', "")));
        secrets.push(("recovery code".into(), c));
    }
    let codes = strings(&r.json["codes"]);

    let session = h.signin_mfa("alice", &secret).await;
    secrets.push(("alice's session".into(), session.clone()));
    h.get("/api/v1/session", Some(&session)).await.expect(StatusCode::OK);
    let r = h.start_with_password("alice", PASSWORD).await;
    h.verify(
        &s(&r.json["flow_id"]),
        json!({ "method": "recovery_code", "code": codes[3] }),
    )
    .await
    .expect(StatusCode::OK);
    // A failure or two belong in a realistic log as well.
    h.start_with_password("alice", "wrong wrong wrong")
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    h.delete("/api/v1/session", Some(&session))
        .await
        .expect(StatusCode::NO_CONTENT);
    Secrets(secrets)
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl std::ops::Deref for Secrets {
    type Target = Vec<(String, String)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

async fn check_audit_and_notifications(h: &Harness, secrets: &Secrets) {
    let r = h.get("/api/v1/audit/verify", Some(&h.admin)).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["ok"], true, "{}", r.json);
    assert!(r.json["first_broken"].is_null());
    let events = h.all_audit_events().await;
    assert_eq!(r.json["length"].as_u64(), Some(events.len() as u64));
    assert_eq!(r.json["head_hash"], events.last().unwrap()["hash"]);
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "paging saw every event once"
    );

    let actions: Vec<String> = events.iter().map(|e| s(&e["action"])).collect();
    for required in [
        "user.create",
        "password.set",
        "method.enroll.start",
        "method.add",
        "tap.issue",
        "tap.use",
        "session.create",
        "session.revoke",
        "api_token.create",
    ] {
        assert!(actions.iter().any(|a| a == required), "no '{required}' in {actions:?}");
    }
    let alice_events = events.iter().filter(|e| e["target"] == "user:alice").count();
    let r = h
        .get("/api/v1/audit?target=user:alice&limit=1000", Some(&h.admin))
        .await;
    assert_eq!(r.json["events"].as_array().unwrap().len(), alice_events);

    let whole_log = serde_json::to_string(&events).unwrap();
    for (what, secret) in secrets.iter() {
        assert!(
            !whole_log.contains(secret.as_str()),
            "the audit log contains the {what}"
        );
        assert!(
            !whole_log.to_lowercase().contains(&secret.to_lowercase()),
            "the audit log contains the {what} (in another case)"
        );
    }

    let r = h.get("/api/v1/users/alice/notifications", Some(&h.admin)).await;
    r.expect(StatusCode::OK);
    let subjects: Vec<String> = r.json.as_array().unwrap().iter().map(|n| s(&n["subject"])).collect();
    let count = |needle: &str| subjects.iter().filter(|s| s.contains(needle)).count();
    assert_eq!(
        count("new sign-in method"),
        1,
        "one for the new TOTP method: {subjects:?}"
    );
    assert_eq!(count("Temporary Access Pass"), 1, "one for the TAP: {subjects:?}");
    let whole = r.text();
    for (what, secret) in secrets.iter() {
        assert!(!whole.contains(secret.as_str()), "a notification contains the {what}");
    }
}

#[tokio::test]
async fn audit_chain_verifies_has_every_action_and_no_secret() {
    let h = Harness::sqlite().await;
    let secrets = scenario(&h).await;
    check_audit_and_notifications(&h, &secrets).await;
}

#[tokio::test]
async fn postgres_audit_chain_verifies_has_every_action_and_no_secret() {
    let Some(h) = Harness::postgres("postgres_audit_chain_verifies_has_every_action_and_no_secret").await else {
        return;
    };
    let secrets = scenario(&h).await;
    check_audit_and_notifications(&h, &secrets).await;
    h.app.store().close().await;
}

// ---- races -----------------------------------------------------------------------------
//
// Many requests at once, on a multi-threaded runtime. Single-use secrets must
// have exactly one winner; the lockout must not be outrun by parallel guesses.

const RACERS: usize = 16;

/// Send `bodies[i]` to `paths[i]` all at once (from distinct source addresses,
/// so per-source throttling stays out of the way).
async fn burst(h: &std::sync::Arc<Harness>, requests: Vec<(String, Value)>) -> Vec<common::Resp> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(requests.len()));
    let handles: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, (path, body))| {
            let h = h.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                h.call_from([10, 0, 1, i as u8], axum::http::Method::POST, &path, None, Some(body))
                    .await
            })
        })
        .collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("request task panicked"));
    }
    out
}

fn tally(rs: &[common::Resp]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in rs {
        let key = if r.status == StatusCode::OK {
            format!("200 {}", r.json["state"].as_str().unwrap_or(""))
        } else {
            assert!(
                r.status.is_client_error(),
                "never a 5xx under concurrency: {} {}",
                r.status,
                r.text()
            );
            format!(
                "{} {}",
                r.status.as_u16(),
                r.problem_type().trim_start_matches(common::PROBLEM_PREFIX)
            )
        };
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

/// Exactly one winner; every loser is refused with `loser` (or, once the
/// losers' own failures reach the lockout threshold, 429).
#[track_caller]
fn assert_one_winner(t: &std::collections::BTreeMap<String, usize>, loser: &str) {
    assert_eq!(t.get("200 complete"), Some(&1), "{t:?}");
    let refused = t.get(loser).copied().unwrap_or(0) + t.get("429 too-many-attempts").copied().unwrap_or(0);
    assert_eq!(refused, RACERS - 1, "{t:?}");
}

async fn flows_for(h: &Harness, user: &str, n: usize, password: bool) -> Vec<String> {
    let mut flows = Vec::new();
    for _ in 0..n {
        let body = if password {
            json!({ "username": user, "password": PASSWORD })
        } else {
            json!({ "username": user })
        };
        let r = h.post("/api/v1/signin", None, body).await;
        r.expect(StatusCode::OK);
        flows.push(s(&r.json["flow_id"]));
    }
    flows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_totp_code_raced_on_many_flows_opens_one_session() {
    let h = std::sync::Arc::new(Harness::sqlite().await);
    let secret = h.user_with_totp("alice", &[]).await;
    let flows = flows_for(&h, "alice", RACERS, true).await;
    h.advance(30);
    let code = h.code(&secret);
    let rs = burst(
        &h,
        flows
            .iter()
            .map(|f| {
                (
                    format!("/api/v1/signin/{f}/verify"),
                    json!({ "method": "totp", "code": code }),
                )
            })
            .collect(),
    )
    .await;
    let t = tally(&rs);
    assert_one_winner(&t, "401 code-replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_totp_code_raced_on_one_flow_opens_one_session() {
    let h = std::sync::Arc::new(Harness::sqlite().await);
    let secret = h.user_with_totp("alice", &[]).await;
    let flow = flows_for(&h, "alice", 1, true).await.remove(0);
    h.advance(30);
    let code = h.code(&secret);
    let path = format!("/api/v1/signin/{flow}/verify");
    let rs = burst(&h, vec![(path, json!({ "method": "totp", "code": code })); RACERS]).await;
    let t = tally(&rs);
    assert_eq!(t.get("200 complete"), Some(&1), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_pass_raced_on_many_flows_opens_one_session() {
    let h = std::sync::Arc::new(Harness::sqlite().await);
    h.create_user("alice", &[]).await;
    let tap = h.issue_tap(&h.admin.clone(), "alice", json!({})).await;
    tap.expect(StatusCode::CREATED);
    let pass = s(&tap.json["pass"]);
    let flows = flows_for(&h, "alice", RACERS, false).await;
    let rs = burst(
        &h,
        flows
            .iter()
            .map(|f| {
                (
                    format!("/api/v1/signin/{f}/verify"),
                    json!({ "method": "temporary_access_pass", "pass": pass }),
                )
            })
            .collect(),
    )
    .await;
    let t = tally(&rs);
    assert_one_winner(&t, "401 invalid-pass");
    let uses = h
        .all_audit_events()
        .await
        .iter()
        .filter(|e| e["action"] == "tap.use")
        .count();
    assert_eq!(uses, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_recovery_code_raced_on_many_flows_opens_one_session() {
    let h = std::sync::Arc::new(Harness::sqlite().await);
    h.user_with_totp("alice", &[]).await;
    let r = h
        .call(
            axum::http::Method::POST,
            "/api/v1/users/alice/methods/recovery-codes",
            Some(&h.admin),
            None,
        )
        .await;
    let code = strings(&r.json["codes"]).remove(0);
    let flows = flows_for(&h, "alice", RACERS, true).await;
    let rs = burst(
        &h,
        flows
            .iter()
            .map(|f| {
                (
                    format!("/api/v1/signin/{f}/verify"),
                    json!({ "method": "recovery_code", "code": code }),
                )
            })
            .collect(),
    )
    .await;
    let t = tally(&rs);
    assert_one_winner(&t, "401 invalid-code");
}

/// BUG (see report): the lock is checked before verifying and the failure
/// counted after, with nothing atomic in between, so parallel guesses all see
/// an open lock. An attacker gets as many guesses per lock window as requests
/// they can send at once, instead of 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_guesses_cannot_outrun_the_lockout() {
    let h = std::sync::Arc::new(Harness::sqlite().await);
    let threshold = h.app.config.user_lock.threshold as usize;
    let secret = h.user_with_totp("alice", &[]).await;
    h.user_with_totp("bob", &[]).await;

    // Second factor: many wrong codes on one flow.
    let flow = flows_for(&h, "alice", 1, true).await.remove(0);
    let wrong = h.wrong_code(&secret);
    let path = format!("/api/v1/signin/{flow}/verify");
    let rs = burst(&h, vec![(path, json!({ "method": "totp", "code": wrong })); RACERS]).await;
    let totp = tally(&rs);

    // First factor: many wrong passwords.
    let rs = burst(
        &h,
        vec![
            (
                "/api/v1/signin".to_string(),
                json!({ "username": "bob", "password": "a wrong guess here" })
            );
            RACERS
        ],
    )
    .await;
    let password = tally(&rs);

    let verified_totp = totp.get("401 invalid-code").copied().unwrap_or(0);
    let verified_pw = password.get("401 invalid-credentials").copied().unwrap_or(0);
    assert!(
        verified_totp <= threshold && verified_pw <= threshold,
        "BUG: {RACERS} parallel guesses were verified past a lockout threshold of {threshold}: \
         TOTP {totp:?}, password {password:?}"
    );
}

// ---- privilege boundaries ---------------------------------------------------------------

/// BUG (see report): a helpdesk user can issue a TAP for an administrator and
/// then sign in as that administrator: helpdesk → admin escalation.
#[tokio::test]
async fn helpdesk_cannot_issue_a_pass_that_signs_in_as_an_admin() {
    let h = Harness::sqlite().await;
    h.user_with_totp("boss", &["admin"]).await;
    let hd_secret = h.user_with_totp("hd", &["helpdesk"]).await;
    let hd = h.signin_mfa("hd", &hd_secret).await;
    // Sanity: helpdesk may not act as an admin directly.
    h.post(
        "/api/v1/users",
        Some(&hd),
        json!({ "username": "mallory", "display_name": "M", "roles": ["admin"] }),
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "forbidden");

    let r = h.issue_tap(&hd, "boss", json!({})).await;
    if r.status == StatusCode::CREATED {
        let signin = h.signin_tap("boss", &s(&r.json["pass"])).await;
        let admin_session = s(&signin.json["session_token"]);
        let escalated = h
            .post(
                "/api/v1/users",
                Some(&admin_session),
                json!({ "username": "mallory", "display_name": "M", "roles": ["admin"] }),
            )
            .await;
        panic!(
            "BUG: a helpdesk user was issued a TAP for an admin; signing in with it gave acr {} \
             and creating an admin user through that session answered {}",
            signin.json["acr"], escalated.status
        );
    }
    r.expect_problem(StatusCode::FORBIDDEN, "forbidden");
}

/// BUG (see report): the "last second factor" guard counts a recovery-code set
/// with no codes left, which `second_factors` (rightly) ignores at sign-in.
#[tokio::test]
async fn a_user_cannot_remove_their_last_usable_second_factor() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("alice", &[]).await;
    let methods = h.get("/api/v1/users/alice/methods", Some(&h.admin)).await;
    let totp_id = s(&methods.json[1]["id"]);

    // With only TOTP, the guard holds.
    let session = h.signin_mfa("alice", &secret).await;
    h.delete(&format!("/api/v1/users/alice/methods/{totp_id}"), Some(&session))
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");

    // Spend every recovery code.
    let r = h
        .call(
            axum::http::Method::POST,
            "/api/v1/users/alice/methods/recovery-codes",
            Some(&h.admin),
            None,
        )
        .await;
    for code in strings(&r.json["codes"]) {
        let f = h.start_with_password("alice", PASSWORD).await;
        h.verify(
            &s(&f.json["flow_id"]),
            json!({ "method": "recovery_code", "code": code }),
        )
        .await
        .expect(StatusCode::OK);
    }
    let f = h.start_with_password("alice", PASSWORD).await;
    assert_eq!(
        strings(&f.json["allowed_methods"]),
        ["totp"],
        "an empty set is no factor at sign-in"
    );

    let session = h.signin_mfa("alice", &secret).await;
    let r = h
        .delete(&format!("/api/v1/users/alice/methods/{totp_id}"), Some(&session))
        .await;
    if r.status == StatusCode::NO_CONTENT {
        let f = h.start_with_password("alice", PASSWORD).await;
        panic!(
            "BUG: alice removed her only usable second factor (the other was an exhausted recovery-code set); \
             her next sign-in is in state {}",
            f.json["state"]
        );
    }
    r.expect_problem(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn method_removal_rules() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("alice", &[]).await;
    let bob = h.user_with_totp("bob", &[]).await;
    let list = h.get("/api/v1/users/alice/methods", Some(&h.admin)).await;
    let totp_id = s(&list.json[1]["id"]);
    let alice = h.signin_mfa("alice", &secret).await;

    // The last second factor stays; another user can't touch it.
    h.delete(&format!("/api/v1/users/alice/methods/{totp_id}"), Some(&alice))
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");
    let bob = h.signin_mfa("bob", &bob).await;
    h.delete(&format!("/api/v1/users/alice/methods/{totp_id}"), Some(&bob))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");

    // With a second one registered, the first may go (while the sign-in is fresh).
    let (id2, secret2, _) = h.enroll_totp("alice", &alice).await;
    // Pending methods don't count as a second factor.
    h.delete(&format!("/api/v1/users/alice/methods/{totp_id}"), Some(&alice))
        .await
        .expect_problem(StatusCode::CONFLICT, "conflict");
    h.confirm_totp("alice", &alice, &id2, &secret2)
        .await
        .expect(StatusCode::OK);
    h.delete(&format!("/api/v1/users/alice/methods/{totp_id}"), Some(&alice))
        .await
        .expect(StatusCode::NO_CONTENT);
    // The old app's codes no longer work; the new one's do.
    h.advance(30);
    let f = h.start_with_password("alice", PASSWORD).await;
    let flow = s(&f.json["flow_id"]);
    h.verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");
    h.verify(&flow, json!({ "method": "totp", "code": h.code(&secret2) }))
        .await
        .expect(StatusCode::OK);
    // An admin may remove anything.
    h.delete(&format!("/api/v1/users/alice/methods/{id2}"), Some(&h.admin))
        .await
        .expect(StatusCode::NO_CONTENT);
    let events = h.all_audit_events().await;
    assert_eq!(events.iter().filter(|e| e["action"] == "method.remove").count(), 2);
    let n = h.get("/api/v1/users/alice/notifications", Some(&h.admin)).await;
    assert_eq!(
        n.json
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| s(&n["subject"]).contains("removed"))
            .count(),
        2
    );
}

// ---- odds and ends ---------------------------------------------------------------------

#[tokio::test]
async fn flows_expire_after_ten_minutes() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("alice", &[]).await;
    let r = h.start_with_password("alice", PASSWORD).await;
    let flow = s(&r.json["flow_id"]);
    h.advance(10 * MIN);
    h.verify(&flow, json!({ "method": "totp", "code": h.code(&secret) }))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "flow-not-found");
}

#[tokio::test]
async fn qr_code_only_while_pending_and_only_for_the_owner() {
    let h = Harness::sqlite().await;
    h.create_user("alice", &[]).await;
    h.create_user("bob", &[]).await;
    let (id, secret, r) = h.enroll_totp("alice", &h.admin.clone()).await;
    let qr = s(&r.json["qr_svg_url"]);
    assert_eq!(qr, format!("/api/v1/users/alice/methods/totp/{id}/qr.svg"));
    let r = h.get(&qr, Some(&h.admin)).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.headers["content-type"], "image/svg+xml");
    assert!(r.text().contains("<svg"));
    h.get(&qr, None)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    let tap = h.issue_tap(&h.admin.clone(), "bob", json!({})).await;
    let bob = h.signin_tap("bob", &s(&tap.json["pass"])).await;
    h.get(&qr, Some(&s(&bob.json["session_token"])))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    h.confirm_totp("alice", &h.admin.clone(), &id, &secret)
        .await
        .expect(StatusCode::OK);
    h.get(&qr, Some(&h.admin))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn responses_carrying_secrets_are_not_cacheable() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("alice", &[]).await;
    h.advance(30);
    let r = h.start_with_password("alice", PASSWORD).await;
    let r = h
        .verify(
            &s(&r.json["flow_id"]),
            json!({ "method": "totp", "code": h.code(&secret) }),
        )
        .await;
    r.expect(StatusCode::OK);
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(r.headers.get(name).map(|v| v.to_str().unwrap()), Some(value), "{name}");
    }
}

#[tokio::test]
async fn authorization_matrix_by_role() {
    use axum::http::Method;
    let h = Harness::sqlite().await;
    h.user_with_totp("alice", &[]).await;
    // (role, username)
    let roles = [
        ("user", "plain"),
        ("helpdesk", "hd"),
        ("auditor", "aud"),
        ("security_admin", "sec"),
        ("admin", "adm"),
    ];
    let mut sessions = Vec::new();
    for (role, name) in roles {
        let r: Vec<&str> = if role == "user" { vec![] } else { vec![role] };
        let secret = h.user_with_totp(name, &r).await;
        sessions.push(h.signin_mfa(name, &secret).await);
    }
    let tap_body = json!({ "lifetime_minutes": 60, "verification": { "method": "callback", "note": "n" } });
    // (request, allowed status, which roles may) — roles in the order above.
    type Case<'a> = (&'a str, Method, &'a str, Option<Value>, StatusCode, [bool; 5]);
    let cases: Vec<Case> = vec![
        (
            "list users",
            Method::GET,
            "/api/v1/users",
            None,
            StatusCode::OK,
            [false, true, true, false, true],
        ),
        (
            "read another user",
            Method::GET,
            "/api/v1/users/alice",
            None,
            StatusCode::OK,
            [false, true, true, false, true],
        ),
        (
            "read their notifications",
            Method::GET,
            "/api/v1/users/alice/notifications",
            None,
            StatusCode::OK,
            [false, true, true, false, true],
        ),
        (
            "read their methods",
            Method::GET,
            "/api/v1/users/alice/methods",
            None,
            StatusCode::OK,
            [false, true, true, false, true],
        ),
        (
            "read the audit log",
            Method::GET,
            "/api/v1/audit",
            None,
            StatusCode::OK,
            [false, false, true, false, true],
        ),
        (
            "verify the audit log",
            Method::GET,
            "/api/v1/audit/verify",
            None,
            StatusCode::OK,
            [false, false, true, false, true],
        ),
        (
            "list API tokens",
            Method::GET,
            "/api/v1/api-tokens",
            None,
            StatusCode::OK,
            [false, false, false, false, true],
        ),
        (
            "clear a lockout",
            Method::DELETE,
            "/api/v1/users/alice/lockout",
            None,
            StatusCode::NO_CONTENT,
            [false, true, false, false, true],
        ),
        (
            "issue a TAP to another user",
            Method::POST,
            "/api/v1/users/alice/temporary-access-passes",
            Some(tap_body),
            StatusCode::CREATED,
            [false, true, false, false, true],
        ),
        (
            "set another user's password",
            Method::PUT,
            "/api/v1/users/alice/password",
            Some(json!({ "password": PASSWORD })),
            StatusCode::NO_CONTENT,
            [false, false, false, false, true],
        ),
        (
            "enrol TOTP for another user",
            Method::POST,
            "/api/v1/users/alice/methods/totp",
            Some(json!({})),
            StatusCode::CREATED,
            [false, false, false, false, true],
        ),
    ];
    let mut failures = Vec::new();
    for (case, method, path, body, ok_status, allowed) in &cases {
        for (i, (role, _)) in roles.iter().enumerate() {
            let r = h.call(method.clone(), path, Some(&sessions[i]), body.clone()).await;
            let expected = if allowed[i] { *ok_status } else { StatusCode::FORBIDDEN };
            if r.status != expected || (!allowed[i] && r.problem_type() != "urn:latchkey:problem:forbidden") {
                failures.push(format!(
                    "{role}: {case}: expected {expected}, got {} {}",
                    r.status,
                    r.text()
                ));
            }
        }
    }
    // Creating users and API tokens: admin only (each name used once).
    for (i, (role, _)) in roles.iter().enumerate() {
        let r = h
            .post(
                "/api/v1/users",
                Some(&sessions[i]),
                json!({ "username": format!("new-{role}").replace('_', "-"), "display_name": "N" }),
            )
            .await;
        let r2 = h
            .post(
                "/api/v1/api-tokens",
                Some(&sessions[i]),
                json!({ "name": format!("by {role}") }),
            )
            .await;
        let expected = if *role == "admin" {
            StatusCode::CREATED
        } else {
            StatusCode::FORBIDDEN
        };
        for (what, r) in [("create a user", r), ("create an API token", r2)] {
            if r.status != expected {
                failures.push(format!(
                    "{role}: {what}: expected {expected}, got {} {}",
                    r.status,
                    r.text()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn sha256_eight_digit_totp_enrols_and_signs_in() {
    use latchkey_core::otp::{OtpAlgorithm, TotpParams};
    let h = Harness::sqlite().await;
    h.create_user("alice", &[]).await;
    h.set_password("alice", &h.admin.clone()).await;
    let r = h
        .post(
            "/api/v1/users/alice/methods/totp",
            Some(&h.admin),
            json!({ "algorithm": "SHA256", "digits": 8, "label": "Work phone" }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let uri = s(&r.json["otpauth_uri"]);
    assert!(uri.contains("algorithm=SHA256") && uri.contains("digits=8"), "{uri}");
    let secret = otp::decode_secret(&s(&r.json["secret"])).unwrap();
    assert_eq!(secret.len(), 32);
    let params = TotpParams::new(OtpAlgorithm::Sha256, 8).unwrap();
    let code = |h: &Harness| otp::totp_at(&secret, h.now() as u64, &params);
    let id = s(&r.json["id"]);
    // A 6-digit code is malformed for this method.
    h.post(
        &format!("/api/v1/users/alice/methods/totp/{id}/confirm"),
        Some(&h.admin),
        json!({ "code": &code(&h)[..6] }),
    )
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    h.post(
        &format!("/api/v1/users/alice/methods/totp/{id}/confirm"),
        Some(&h.admin),
        json!({ "code": code(&h) }),
    )
    .await
    .expect(StatusCode::OK);
    h.advance(30);
    let r = h.start_with_password("alice", PASSWORD).await;
    let r = h
        .verify(&s(&r.json["flow_id"]), json!({ "method": "totp", "code": code(&h) }))
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["acr"], "mfa");
    let n = h.get("/api/v1/users/alice/notifications", Some(&h.admin)).await;
    assert!(
        n.text().contains("Work phone"),
        "the notification names the method: {}",
        n.text()
    );
}
