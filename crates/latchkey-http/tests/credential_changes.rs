//! Sessions end on credential changes: an administrator's password reset
//! or method removal ends every session of the user, in the same audited
//! transaction; a user changing their own keeps the session they made the
//! change in and loses the others. Runs on SQLite and (with
//! `LATCHKEY_TEST_POSTGRES_URL`) PostgreSQL; the OpenID Connect side is in
//! `oidc.rs`.

#[macro_use]
mod common;

use axum::http::{Method, StatusCode};
use common::{Harness, PASSWORD};
use serde_json::json;

backends! {
    case_an_administrators_change_ends_every_session => sqlite_an_administrators_change_ends_every_session, postgres_an_administrators_change_ends_every_session;
    case_ones_own_change_keeps_the_current_session => sqlite_ones_own_change_keeps_the_current_session, postgres_ones_own_change_keeps_the_current_session;
    case_a_lost_device_ends_every_session => sqlite_a_lost_device_ends_every_session, postgres_a_lost_device_ends_every_session;
}

async fn alive(h: &Harness, session: &str) -> bool {
    h.get("/api/v1/session", Some(session)).await.status == StatusCode::OK
}

async fn recovery_codes(h: &Harness, user: &str) -> String {
    let r = h
        .post(
            &format!("/api/v1/users/{user}/methods/recovery-codes"),
            Some(&h.admin.clone()),
            json!({}),
        )
        .await;
    r.expect(StatusCode::CREATED);
    r.json["id"].as_str().unwrap().to_owned()
}

async fn case_an_administrators_change_ends_every_session(h: Harness) {
    let secret = h.user_with_totp("ana", &[]).await;
    let codes = recovery_codes(&h, "ana").await;
    let boss = h.user_with_totp("boss", &["admin"]).await;
    let boss = h.signin_mfa("boss", &boss).await;

    let (a, b) = (h.signin_mfa("ana", &secret).await, h.signin_mfa("ana", &secret).await);
    h.set_password("ana", &boss).await;
    assert!(
        !alive(&h, &a).await && !alive(&h, &b).await,
        "a reset ends every session"
    );
    // The administrator's own session is not the user's: it stays.
    assert!(alive(&h, &boss).await);

    let (a, b) = (h.signin_mfa("ana", &secret).await, h.signin_mfa("ana", &secret).await);
    h.call(
        Method::DELETE,
        &format!("/api/v1/users/ana/methods/{codes}"),
        Some(&boss),
        None,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    assert!(
        !alive(&h, &a).await && !alive(&h, &b).await,
        "a removal ends every session"
    );

    // Audited with what ended, in the change's own event.
    let events = h.all_audit_events().await;
    let reset = events
        .iter()
        .rev()
        .find(|e| e["action"] == "password.set" && e["target"] == "user:ana")
        .unwrap();
    assert_eq!(reset["actor"], "user:boss");
    assert_eq!(reset["details"]["sessions_ended"], 2, "{reset}");
    let removal = events.iter().find(|e| e["action"] == "method.remove").unwrap();
    assert_eq!(removal["details"]["sessions_ended"], 2, "{removal}");
    // A user created and set up with no session yet: nothing to end.
    let setup = events
        .iter()
        .find(|e| e["action"] == "password.set" && e["target"] == "user:ana")
        .unwrap();
    assert_eq!(setup["details"]["sessions_ended"], 0);
}

async fn case_ones_own_change_keeps_the_current_session(h: Harness) {
    let secret = h.user_with_totp("ben", &[]).await;
    let codes = recovery_codes(&h, "ben").await;
    let other = h.signin_mfa("ben", &secret).await;
    let here = h.signin_mfa("ben", &secret).await;
    h.call(
        Method::DELETE,
        &format!("/api/v1/users/ben/methods/{codes}"),
        Some(&here),
        None,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    assert!(alive(&h, &here).await, "the session the change was made in stays");
    assert!(!alive(&h, &other).await, "the other session ends");

    let other = h.signin_mfa("ben", &secret).await;
    let here = h.signin_mfa("ben", &secret).await;
    h.put(
        "/api/v1/users/ben/password",
        Some(&here),
        json!({ "password": "another long passphrase for ben" }),
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    assert!(alive(&h, &here).await);
    assert!(!alive(&h, &other).await);
    // The old password is gone with the change.
    h.advance(30);
    h.start_with_password("ben", PASSWORD)
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
}

/// A lost phone's factors may have opened sessions anywhere: marking it lost
/// ends every session of the user, not only those opened on the phone.
async fn case_a_lost_device_ends_every_session(h: Harness) {
    let secret = h.user_with_totp("ana", &[]).await;
    let r = h
        .post(
            "/api/v1/users/ana/devices",
            Some(&h.admin.clone()),
            json!({ "name": "Ana's phone", "platform": "ios", "ownership": "corporate" }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let phone = r.json["id"].as_str().unwrap().to_owned();
    // Sessions opened from elsewhere (no device named).
    let (a, b) = (h.signin_mfa("ana", &secret).await, h.signin_mfa("ana", &secret).await);
    h.post(
        &format!("/api/v1/devices/{phone}/lost"),
        Some(&h.admin.clone()),
        json!({}),
    )
    .await
    .expect(StatusCode::OK);
    assert!(
        !alive(&h, &a).await && !alive(&h, &b).await,
        "a lost device ends every session of its user"
    );
    let events = h.all_audit_events().await;
    let lost = events.iter().find(|e| e["action"] == "device.lost").unwrap();
    assert_eq!(lost["details"]["sessions_ended"], 2, "{lost}");
}
