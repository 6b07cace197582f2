//! Issue 6 in process, with a clock the tests move: two-person approval of
//! passes for privileged users, runbook deadlines, devices and the MDM scope.

mod common;

use axum::http::StatusCode;
use common::Harness;
use latchkey_service::app::Principal;
use serde_json::json;

#[tokio::test]
async fn a_privileged_users_pass_needs_two_administrators() {
    let h = Harness::sqlite().await;
    h.user_with_totp("boss", &["admin"]).await;
    let a1 = h.user_with_totp("admin1", &["admin"]).await;
    let a2 = h.user_with_totp("admin2", &["admin"]).await;
    let s1 = h.signin_mfa("admin1", &a1).await;
    let s2 = h.signin_mfa("admin2", &a2).await;

    // The request exists, the pass does not.
    let r = h.issue_tap(&s1, "boss", json!({})).await;
    r.expect(StatusCode::ACCEPTED);
    assert_eq!(r.json["state"], "pending_approval");
    assert!(r.json.get("pass").is_none());
    let id = r.json["request_id"].as_str().unwrap().to_owned();

    // The requester cannot approve; nor can it issue before approval.
    h.post(&format!("/api/v1/tap-requests/{id}/approve"), Some(&s1), json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    h.post(&format!("/api/v1/tap-requests/{id}/issue"), Some(&s1), json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    // The approver cannot issue in the requester's place.
    h.post(&format!("/api/v1/tap-requests/{id}/approve"), Some(&s2), json!({}))
        .await
        .expect(StatusCode::OK);
    h.post(&format!("/api/v1/tap-requests/{id}/issue"), Some(&s2), json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    let r = h
        .post(&format!("/api/v1/tap-requests/{id}/issue"), Some(&s1), json!({}))
        .await;
    r.expect(StatusCode::CREATED);
    let pass = r.json["pass"].as_str().unwrap().to_owned();
    // Issued once only.
    h.post(&format!("/api/v1/tap-requests/{id}/issue"), Some(&s1), json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    let done = h.signin_tap("boss", &pass).await;
    done.expect(StatusCode::OK);
    assert_eq!(done.json["acr"], "passwordless_mfa");

    let events = h.all_audit_events().await;
    let issue = events
        .iter()
        .find(|e| e["action"] == "tap.issue" && e["target"] == "user:boss")
        .unwrap();
    assert_eq!(issue["actor"], "user:admin1");
    assert_eq!(issue["details"]["approved_by"], "user:admin2");
    assert!(events
        .iter()
        .any(|e| e["action"] == "tap.approve" && e["actor"] == "user:admin2"));
}

#[tokio::test]
async fn open_cases_past_their_deadline_show_as_overdue() {
    let h = Harness::sqlite().await;
    h.user_with_totp("carol", &[]).await;
    let r = h
        .post(
            "/api/v1/helpdesk/cases",
            Some(&h.admin),
            json!({ "username": "carol", "scenario": "lost_phone" }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json["overdue"], false);
    h.advance(24 * 3600 + 60);
    let r = h.get("/api/v1/helpdesk/cases?open=true", Some(&h.admin)).await;
    r.expect(StatusCode::OK);
    let case = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(case["overdue"], true);
    // A cancelled case is no longer overdue, and needs a reason.
    h.post(
        &format!("/api/v1/helpdesk/cases/{id}/cancel"),
        Some(&h.admin),
        json!({ "reason": " " }),
    )
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    let r = h
        .post(
            &format!("/api/v1/helpdesk/cases/{id}/cancel"),
            Some(&h.admin),
            json!({ "reason": "duplicate ticket" }),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "cancelled");
    assert_eq!(r.json["overdue"], false);
    // Unknown scenarios and steps are clear 400s.
    h.post(
        "/api/v1/helpdesk/cases",
        Some(&h.admin),
        json!({ "username": "carol", "scenario": "disable-mfa" }),
    )
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
}

#[tokio::test]
async fn planned_phone_change_can_skip_the_pass_with_a_reason() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("dave", &[]).await;
    h.advance(60);
    let r = h
        .post(
            "/api/v1/helpdesk/cases",
            Some(&h.admin),
            json!({ "username": "dave", "scenario": "planned-phone-change" }),
        )
        .await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let step = |body: serde_json::Value| {
        let h = &h;
        let id = id.clone();
        async move {
            h.post(&format!("/api/v1/helpdesk/cases/{id}/steps"), Some(&h.admin), body)
                .await
        }
    };
    step(
        json!({ "step": "verify_identity", "verification": { "method": "in_person_id", "note": "badge at the desk" } }),
    )
    .await
    .expect(StatusCode::OK);
    for s in ["issue_tap", "deliver_tap"] {
        h.post(
            &format!("/api/v1/helpdesk/cases/{id}/skip"),
            Some(&h.admin),
            json!({ "step": s, "reason": "the user still has the old phone" }),
        )
        .await
        .expect(StatusCode::OK);
    }
    // Dave signs in with the old phone and moves to the new one himself.
    let session = h.signin_mfa("dave", &secret).await;
    let (new_id, new_secret, _) = h.enroll_totp("dave", &session).await;
    h.confirm_totp("dave", &session, &new_id, &new_secret)
        .await
        .expect(StatusCode::OK);
    step(json!({ "step": "confirm_registration" }))
        .await
        .expect(StatusCode::OK);
    // Old methods still active: the runbook says so rather than closing blind.
    step(json!({ "step": "remove_old_methods" }))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    let methods = h.get("/api/v1/users/dave/methods", Some(&h.admin)).await;
    let old = methods
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "totp" && m["id"] != new_id.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    step(json!({ "step": "remove_old_methods", "remove_method_ids": [old] }))
        .await
        .expect(StatusCode::OK);
    h.signin_mfa("dave", &new_secret).await;
    step(json!({ "step": "confirm_sign_in" })).await.expect(StatusCode::OK);
    let r = step(json!({ "step": "close" })).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "closed");
    let statuses: Vec<&str> = r.json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["done", "skipped", "skipped", "done", "done", "done", "done"]);
}

#[tokio::test]
async fn a_lost_device_takes_its_methods_and_sessions_with_it() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("erin", &[]).await;
    let r = h
        .post(
            "/api/v1/users/erin/devices",
            Some(&h.admin),
            json!({ "name": "Erin's Pixel", "platform": "android", "ownership": "corporate" }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let device = r.json["id"].as_str().unwrap().to_owned();
    let methods = h.get("/api/v1/users/erin/methods", Some(&h.admin)).await;
    let totp = methods
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "totp")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.put(
        &format!("/api/v1/users/erin/methods/{totp}/device"),
        Some(&h.admin),
        json!({ "device_id": device }),
    )
    .await
    .expect(StatusCode::NO_CONTENT);

    // A session opened on that device (a relying party vouches for it).
    let (_, rp) = h
        .app
        .create_scoped_api_token(&Principal::Operator, "portal", &["relying_party"], None)
        .await
        .unwrap();
    h.advance(30);
    let r = h
        .post(
            "/api/v1/signin",
            Some(&rp),
            json!({ "username": "erin", "password": common::PASSWORD, "context": { "device_id": device } }),
        )
        .await;
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    let r = h
        .post(
            &format!("/api/v1/signin/{flow}/verify"),
            Some(&rp),
            json!({ "method": "totp", "code": h.code(&secret), "context": { "device_id": device } }),
        )
        .await;
    r.expect(StatusCode::OK);
    let session = r.json["session_token"].as_str().unwrap().to_owned();
    h.get("/api/v1/session", Some(&session)).await.expect(StatusCode::OK);

    // MDM compliance needs the mdm scope; an mdm token can do nothing else.
    let (_, mdm) = h
        .app
        .create_scoped_api_token(&Principal::Operator, "intune", &["mdm"], None)
        .await
        .unwrap();
    let r = h
        .put(
            &format!("/api/v1/devices/{device}/compliance"),
            Some(&mdm),
            json!({ "managed": true, "compliant": true, "external_id": "mdm-42" }),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["compliant"], true);
    h.post(
        "/api/v1/users",
        Some(&mdm),
        json!({ "username": "x", "display_name": "X" }),
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "forbidden");
    let (_, plain) = h.app.create_api_token(&Principal::Operator, "ops").await.unwrap();
    let _ = plain;
    let user_session = session.clone();
    h.put(
        &format!("/api/v1/devices/{device}/compliance"),
        Some(&user_session),
        json!({ "managed": false, "compliant": false }),
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "forbidden");

    let r = h
        .post(&format!("/api/v1/devices/{device}/lost"), Some(&h.admin), json!({}))
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["revoked_method_ids"], json!([totp]));
    assert_eq!(r.json["sessions_ended"], 1);
    assert_eq!(r.json["device"]["state"], "lost");
    h.get("/api/v1/session", Some(&session))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    // Lost is final.
    h.post(&format!("/api/v1/devices/{device}/retire"), Some(&h.admin), json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    let events = h.all_audit_events().await;
    let lost = events.iter().find(|e| e["action"] == "device.lost").unwrap();
    assert_eq!(lost["details"]["revoked_methods"], json!([totp]));
}

#[tokio::test]
async fn conditional_access_reads_device_compliance_from_the_inventory() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("finn", &[]).await;
    h.user_with_totp("gina", &[]).await;
    let device = |owner: &'static str| {
        let h = &h;
        async move {
            let r = h
                .post(
                    &format!("/api/v1/users/{owner}/devices"),
                    Some(&h.admin),
                    json!({ "name": "laptop", "platform": "windows", "ownership": "corporate" }),
                )
                .await;
            r.expect(StatusCode::CREATED);
            r.json["id"].as_str().unwrap().to_owned()
        }
    };
    let finns = device("finn").await;
    let ginas = device("gina").await;
    let (_, mdm) = h
        .app
        .create_scoped_api_token(&Principal::Operator, "mdm", &["mdm"], None)
        .await
        .unwrap();
    for d in [&finns, &ginas] {
        h.put(
            &format!("/api/v1/devices/{d}/compliance"),
            Some(&mdm),
            json!({ "managed": true, "compliant": true }),
        )
        .await
        .expect(StatusCode::OK);
    }
    h.require_compliant_device("finn").await;
    // The relying party vouches for the device (spoofed_context.rs: an id
    // from anyone else is no device).
    let (_, rp) = h
        .app
        .create_scoped_api_token(&Principal::Operator, "portal", &["relying_party"], None)
        .await
        .unwrap();
    let attempt = |device_id: Option<String>| {
        let h = &h;
        let rp = rp.clone();
        async move {
            let mut body = json!({ "username": "finn", "password": common::PASSWORD });
            if let Some(d) = device_id {
                body["context"] = json!({ "device_id": d });
            }
            h.post("/api/v1/signin", Some(&rp), body).await
        }
    };
    // No device, or someone else's compliant device: blocked.
    attempt(None)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "access-blocked");
    attempt(Some(ginas.clone()))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "access-blocked");
    // Finn's own device, reported compliant by the MDM: the sign-in goes on.
    let r = attempt(Some(finns.clone())).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "second_factor_required");
    let _ = secret;
    // The MDM withdraws compliance: blocked again.
    h.put(
        &format!("/api/v1/devices/{finns}/compliance"),
        Some(&mdm),
        json!({ "managed": true, "compliant": false }),
    )
    .await
    .expect(StatusCode::OK);
    attempt(Some(finns))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "access-blocked");
}
