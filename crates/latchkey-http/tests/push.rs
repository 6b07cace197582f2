//! Push approval with number matching, through the HTTP router: enrollment
//! with a device key, approval with the right number, refusal of a wrong
//! number / wrong key / late answer, "this wasn't me", the rate limit and
//! suspension, and the SSE prompt stream. The clock is moved, never slept.

mod common;
mod radius_support;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{Request, StatusCode};
use common::{cheap_config, Harness, PASSWORD};
use http_body_util::BodyExt;
use latchkey_core::push::{canonical_payload, Decision};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rand::rngs::OsRng;
use serde_json::{json, Value};
use tower::ServiceExt;

fn b64(b: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(b)
}

struct Device {
    key: SigningKey,
    token: String,
    method_id: String,
}

impl Device {
    fn sign(&self, prompt: &Value, number: Option<u8>, decision: Decision) -> String {
        let payload = canonical_payload(
            prompt["id"].as_str().unwrap(),
            prompt["challenge"].as_str().unwrap(),
            number,
            decision,
        );
        let sig: Signature = self.key.sign(payload.as_bytes());
        b64(&sig.to_bytes())
    }
}

async fn user(h: &Harness, name: &str) {
    h.create_user(name, &[]).await;
    h.set_password(name, &h.admin).await;
}

async fn enroll(h: &Harness, name: &str) -> Device {
    let r = h
        .post(
            &format!("/api/v1/users/{name}/methods/push/enrollments"),
            Some(&h.admin),
            json!({ "label": "Test phone" }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let token = r.json["token"].as_str().unwrap().to_owned();
    assert!(r.json["enrollment_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/authenticator#enroll={token}")));
    let key = SigningKey::random(&mut OsRng);
    let public = key.verifying_key().to_encoded_point(false);
    let r = h
        .post(
            "/api/v1/push/devices",
            None,
            json!({ "enrollment_token": token, "public_key": b64(public.as_bytes()) }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.json["username"], name);
    // The enrollment token is single use.
    let again = h
        .post(
            "/api/v1/push/devices",
            None,
            json!({ "enrollment_token": token, "public_key": b64(public.as_bytes()) }),
        )
        .await;
    again.expect_problem(StatusCode::UNAUTHORIZED, "invalid-pass");
    Device {
        key,
        token: r.json["device_token"].as_str().unwrap().to_owned(),
        method_id: r.json["method_id"].as_str().unwrap().to_owned(),
    }
}

/// Password step, then send a push; returns (flow id, number shown).
async fn start_push(h: &Harness, name: &str) -> (String, u8) {
    let r = h.start_with_password(name, PASSWORD).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "second_factor_required", "{}", r.json);
    assert!(r.json["allowed_methods"].as_array().unwrap().contains(&json!("push")));
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    let r = h.post(&format!("/api/v1/signin/{flow}/push"), None, json!({})).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["status"], "pending");
    let n = r.json["number"].as_u64().unwrap() as u8;
    assert!((10..=99).contains(&n));
    (flow, n)
}

async fn pending_prompt(h: &Harness, d: &Device) -> Value {
    let r = h.get("/api/v1/push/prompts", Some(&d.token)).await;
    r.expect(StatusCode::OK);
    let list = r.json.as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", r.json);
    assert!(
        list[0].get("number").is_none(),
        "the device must never learn the number"
    );
    list[0].clone()
}

async fn answer(
    h: &Harness,
    d: &Device,
    prompt: &Value,
    number: Option<u8>,
    decision: Decision,
    sig: &str,
) -> common::Resp {
    let mut body = json!({ "decision": decision.as_str(), "signature": sig });
    if let Some(n) = number {
        body["number"] = json!(n);
    }
    h.post(
        &format!("/api/v1/push/prompts/{}/answer", prompt["id"].as_str().unwrap()),
        Some(&d.token),
        body,
    )
    .await
}

async fn reasons(h: &Harness, name: &str) -> Vec<String> {
    let u = h.app.store().user_by_username(name).await.unwrap().unwrap();
    h.app
        .store()
        .signins_for_user(&u.id, 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

async fn alert_kinds(h: &Harness) -> Vec<String> {
    h.app
        .store()
        .alerts(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect()
}

async fn approve_with_right_number_completes(h: &Harness) {
    user(h, "alice").await;
    let d = enroll(h, "alice").await;
    let methods = h.get("/api/v1/users/alice/methods", Some(&h.admin)).await;
    assert!(methods.text().contains("\"push\""), "{}", methods.text());
    let (flow, n) = start_push(h, "alice").await;
    // Waiting: the verify step says so and changes nothing.
    h.verify(&flow, json!({ "method": "push" }))
        .await
        .expect_problem(StatusCode::CONFLICT, "push-pending");
    let p = pending_prompt(h, &d).await;
    assert_eq!(p["username"], "alice");
    let r = answer(
        h,
        &d,
        &p,
        Some(n),
        Decision::Approve,
        &d.sign(&p, Some(n), Decision::Approve),
    )
    .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["status"], "approved");
    let st = h.get(&format!("/api/v1/signin/{flow}/push"), None).await;
    assert_eq!(st.json["status"], "approved");
    let r = h.verify(&flow, json!({ "method": "push" })).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete");
    assert_eq!(r.json["acr"], "mfa", "push counts as mfa only");
    assert_eq!(r.json["amr"], json!(["pwd", "swk", "mfa"]));
    assert!(r.json["session_token"].as_str().unwrap().starts_with("lk_s_"));
    // The approval was used; a second answer is refused.
    answer(
        h,
        &d,
        &p,
        Some(n),
        Decision::Approve,
        &d.sign(&p, Some(n), Decision::Approve),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "invalid-state");
}

#[tokio::test]
async fn enroll_and_approve_with_the_right_number() {
    let h = Harness::sqlite().await;
    approve_with_right_number_completes(&h).await;
}

#[tokio::test]
async fn the_approving_device_is_marked_as_used() {
    let h = Harness::sqlite().await;
    user(&h, "kim").await;
    let d = enroll(&h, "kim").await;
    let last_used = |r: &common::Resp| {
        r.json
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == d.method_id.as_str())
            .map(|m| m["last_used_at"].clone())
            .unwrap()
    };
    let before = h.get("/api/v1/users/kim/methods", Some(&h.admin)).await;
    assert!(last_used(&before).is_null());
    let (flow, n) = start_push(&h, "kim").await;
    let p = pending_prompt(&h, &d).await;
    answer(
        &h,
        &d,
        &p,
        Some(n),
        Decision::Approve,
        &d.sign(&p, Some(n), Decision::Approve),
    )
    .await
    .expect(StatusCode::OK);
    h.verify(&flow, json!({ "method": "push" }))
        .await
        .expect(StatusCode::OK);
    let after = h.get("/api/v1/users/kim/methods", Some(&h.admin)).await;
    assert!(last_used(&after).is_string(), "{}", after.text());
}

#[tokio::test]
async fn enroll_and_approve_on_postgres() {
    let Some(h) = Harness::postgres("push::enroll_and_approve_on_postgres").await else {
        return;
    };
    approve_with_right_number_completes(&h).await;
}

#[tokio::test]
async fn a_wrong_number_refuses_and_ends_the_prompt() {
    let h = Harness::sqlite().await;
    user(&h, "bob").await;
    let d = enroll(&h, "bob").await;
    let (flow, n) = start_push(&h, "bob").await;
    let wrong = if n == 99 { 10 } else { n + 1 };
    let p = pending_prompt(&h, &d).await;
    let r = answer(
        &h,
        &d,
        &p,
        Some(wrong),
        Decision::Approve,
        &d.sign(&p, Some(wrong), Decision::Approve),
    )
    .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["status"], "wrong_number");
    // No retry with the right number: the prompt is over.
    answer(
        &h,
        &d,
        &p,
        Some(n),
        Decision::Approve,
        &d.sign(&p, Some(n), Decision::Approve),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "invalid-state");
    h.verify(&flow, json!({ "method": "push" }))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "push-not-approved");
    assert!(reasons(&h, "bob").await.contains(&"push_wrong_number".to_owned()));
}

#[tokio::test]
async fn a_signature_that_covers_another_number_is_refused() {
    // The number is inside the signed payload: claiming the right number with
    // a signature made over another one does not verify.
    let h = Harness::sqlite().await;
    user(&h, "bea").await;
    let d = enroll(&h, "bea").await;
    let (_flow, n) = start_push(&h, "bea").await;
    let p = pending_prompt(&h, &d).await;
    let other = if n == 99 { 10 } else { n + 1 };
    answer(
        &h,
        &d,
        &p,
        Some(n),
        Decision::Approve,
        &d.sign(&p, Some(other), Decision::Approve),
    )
    .await
    .expect_problem(StatusCode::UNAUTHORIZED, "push-signature-invalid");
    // Approving without a number at all is a wrong number, never an approval.
    let r = answer(
        &h,
        &d,
        &p,
        None,
        Decision::Approve,
        &d.sign(&p, None, Decision::Approve),
    )
    .await;
    assert_eq!(r.json["status"], "wrong_number");
}

#[tokio::test]
async fn this_wasnt_me_denies_and_raises_an_alert() {
    let h = Harness::sqlite().await;
    user(&h, "carol").await;
    let d = enroll(&h, "carol").await;
    let (flow, _n) = start_push(&h, "carol").await;
    let p = pending_prompt(&h, &d).await;
    let r = answer(&h, &d, &p, None, Decision::Report, &d.sign(&p, None, Decision::Report)).await;
    assert_eq!(r.json["status"], "reported");
    h.verify(&flow, json!({ "method": "push" }))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "push-not-approved");
    let alerts = h.app.store().alerts(0, 100).await.unwrap();
    let a = alerts.iter().find(|a| a.kind == "push_reported").expect("alert raised");
    assert_eq!(a.target, "user:carol");
    assert_eq!(a.severity, "high");
    assert!(reasons(&h, "carol").await.contains(&"push_reported".to_owned()));
    let audit = h.all_audit_events().await;
    assert!(audit.iter().any(|e| e["action"] == "alert.raise"));
}

#[tokio::test]
async fn an_approval_signed_by_another_key_is_refused() {
    let h = Harness::sqlite().await;
    user(&h, "dave").await;
    let d = enroll(&h, "dave").await;
    let (flow, n) = start_push(&h, "dave").await;
    let p = pending_prompt(&h, &d).await;
    let thief = Device {
        key: SigningKey::random(&mut OsRng),
        token: d.token.clone(),
        method_id: d.method_id.clone(),
    };
    answer(
        &h,
        &d,
        &p,
        Some(n),
        Decision::Approve,
        &thief.sign(&p, Some(n), Decision::Approve),
    )
    .await
    .expect_problem(StatusCode::UNAUTHORIZED, "push-signature-invalid");
    answer(&h, &d, &p, Some(n), Decision::Approve, "bm90IGEgc2lnbmF0dXJl")
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "push-signature-invalid");
    // Nothing changed: still waiting, and the real device can still approve.
    h.verify(&flow, json!({ "method": "push" }))
        .await
        .expect_problem(StatusCode::CONFLICT, "push-pending");
    let r = answer(
        &h,
        &d,
        &p,
        Some(n),
        Decision::Approve,
        &d.sign(&p, Some(n), Decision::Approve),
    )
    .await;
    assert_eq!(r.json["status"], "approved");
    // Another user's device cannot even see or answer it.
    user(&h, "eve").await;
    let e = enroll(&h, "eve").await;
    answer(
        &h,
        &e,
        &p,
        Some(n),
        Decision::Approve,
        &e.sign(&p, Some(n), Decision::Approve),
    )
    .await
    .expect_problem(StatusCode::NOT_FOUND, "not-found");
    h.get("/api/v1/push/prompts", Some("lk_pd_nope"))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn an_approval_after_expiry_is_refused_and_logged_as_a_timeout() {
    late_approval(&Harness::sqlite().await).await;
}

#[tokio::test]
async fn an_approval_after_expiry_is_refused_on_postgres() {
    let Some(h) = Harness::postgres("push::an_approval_after_expiry_is_refused_on_postgres").await else {
        return;
    };
    late_approval(&h).await;
}

async fn late_approval(h: &Harness) {
    user(h, "frank").await;
    let d = enroll(&h, "frank").await;
    let (flow, n) = start_push(&h, "frank").await;
    let p = pending_prompt(&h, &d).await;
    h.advance(61);
    answer(
        &h,
        &d,
        &p,
        Some(n),
        Decision::Approve,
        &d.sign(&p, Some(n), Decision::Approve),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "invalid-state");
    h.verify(&flow, json!({ "method": "push" }))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "push-not-approved");
    let st = h.get(&format!("/api/v1/signin/{flow}/push"), None).await;
    assert_eq!(st.json["status"], "expired");
    let rs = reasons(&h, "frank").await;
    assert_eq!(rs.iter().filter(|r| *r == "push_timeout").count(), 1, "{rs:?}");
}

#[tokio::test]
async fn one_pending_prompt_and_a_burst_is_cut_off_by_the_rate_limit() {
    let h = Harness::sqlite().await;
    user(&h, "gina").await;
    let d = enroll(&h, "gina").await;
    let (flow1, n1) = start_push(&h, "gina").await;
    // The same sign-in asking again sees the same prompt and number.
    let again = h.post(&format!("/api/v1/signin/{flow1}/push"), None, json!({})).await;
    assert_eq!(again.json["number"].as_u64().unwrap() as u8, n1);
    // Another sign-in while one prompt is pending is refused.
    let r = h.start_with_password("gina", PASSWORD).await;
    let flow2 = r.json["flow_id"].as_str().unwrap().to_owned();
    h.post(&format!("/api/v1/signin/{flow2}/push"), None, json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "push-unavailable");
    // Approve prompt 1, then prompts 2 and 3 are allowed, the 4th within
    // ten minutes is not.
    let p = pending_prompt(&h, &d).await;
    answer(
        &h,
        &d,
        &p,
        Some(n1),
        Decision::Approve,
        &d.sign(&p, Some(n1), Decision::Approve),
    )
    .await
    .expect(StatusCode::OK);
    for _ in 0..2 {
        h.advance(5);
        let (_f, n) = start_push(&h, "gina").await;
        let p = pending_prompt(&h, &d).await;
        answer(
            &h,
            &d,
            &p,
            Some(n),
            Decision::Approve,
            &d.sign(&p, Some(n), Decision::Approve),
        )
        .await
        .expect(StatusCode::OK);
    }
    h.advance(5);
    let r = h.start_with_password("gina", PASSWORD).await;
    let flow4 = r.json["flow_id"].as_str().unwrap().to_owned();
    let r = h.post(&format!("/api/v1/signin/{flow4}/push"), None, json!({})).await;
    r.expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
    assert!(r.retry_after().unwrap() > 500);
    // Once the window has passed, push works again.
    h.advance(600);
    let r = h.start_with_password("gina", PASSWORD).await;
    let flow5 = r.json["flow_id"].as_str().unwrap().to_owned();
    h.post(&format!("/api/v1/signin/{flow5}/push"), None, json!({}))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn repeated_denials_and_timeouts_suspend_push_and_raise_an_alert() {
    let mut config = cheap_config();
    config.push.fatigue.max_prompts = 100;
    suspension(&Harness::sqlite_with(config).await).await;
}

#[tokio::test]
async fn suspension_on_postgres() {
    let Some(h) = Harness::postgres("push::suspension_on_postgres").await else {
        return;
    };
    suspension(&h).await;
}

async fn suspension(h: &Harness) {
    user(h, "hank").await;
    let d = enroll(&h, "hank").await;
    // A timeout and two denials within the hour.
    let (_f, _n) = start_push(&h, "hank").await;
    h.advance(61);
    for _ in 0..2 {
        let (_f, _n) = start_push(&h, "hank").await;
        let p = pending_prompt(&h, &d).await;
        answer(&h, &d, &p, None, Decision::Deny, &d.sign(&p, None, Decision::Deny))
            .await
            .expect(StatusCode::OK);
        h.advance(10);
    }
    assert_eq!(
        alert_kinds(&h).await.iter().filter(|k| *k == "push_suspended").count(),
        1
    );
    let r = h.start_with_password("hank", PASSWORD).await;
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    let r = h.post(&format!("/api/v1/signin/{flow}/push"), None, json!({})).await;
    r.expect_problem(StatusCode::FORBIDDEN, "push-unavailable");
    assert!(r.text().contains("suspended"));
    let rs = reasons(&h, "hank").await;
    for want in ["push_timeout", "push_denied", "push_suspended"] {
        assert!(rs.iter().any(|r| r == want), "{want} missing from {rs:?}");
    }
    // An hour later push is available again.
    h.advance(3600);
    let r = h.start_with_password("hank", PASSWORD).await;
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    h.post(&format!("/api/v1/signin/{flow}/push"), None, json!({}))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn the_device_stream_delivers_pending_prompts() {
    let h = Harness::sqlite().await;
    user(&h, "ivy").await;
    let d = enroll(&h, "ivy").await;
    let (_flow, _n) = start_push(&h, "ivy").await;
    let router = latchkey_http::router(h.app.clone(), Default::default());
    let mut req = Request::get("/api/v1/push/prompts/stream")
        .header("authorization", format!("Bearer {}", d.token))
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    let resp = router.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = resp.into_body();
    let mut text = String::new();
    while !text.contains("event: prompt") {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
            .await
            .expect("a prompt event within 5 s")
            .unwrap()
            .unwrap();
        if let Some(b) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(b));
        }
    }
    assert!(text.contains("event: ready"));
    assert!(text.contains("\"username\":\"ivy\""), "{text}");
    assert!(!text.contains("\"number\""));
    // Without a device token there is no stream.
    let mut req = Request::get("/api/v1/push/prompts/stream").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    let resp = latchkey_http::router(h.app.clone(), Default::default())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn push_needs_a_password_first_and_a_registered_device() {
    let h = Harness::sqlite().await;
    user(&h, "jo").await;
    // No device: push is not offered.
    h.enroll_totp("jo", &h.admin).await;
    let r = h.start_with_password("jo", PASSWORD).await;
    assert!(!r.json["allowed_methods"].as_array().unwrap().contains(&json!("push")));
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    h.post(&format!("/api/v1/signin/{flow}/push"), None, json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    // A flow that has not passed the password step cannot send prompts.
    let _d = enroll(&h, "jo").await;
    let r = h.post("/api/v1/signin", None, json!({ "username": "jo" })).await;
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    h.post(&format!("/api/v1/signin/{flow}/push"), None, json!({}))
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    h.post("/api/v1/signin/lk_f_nope/push", None, json!({}))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "flow-not-found");
}

// ---- RADIUS: the challenge carries the number; the answer waits for the device ----

mod radius_push {
    use super::*;
    use latchkey_radius::packet::{self, Packet};
    use latchkey_service::Principal;

    const SECRET: &str = "nas-shared-secret-0123";

    fn request(id: u8, user: &str, password: &str, state: Option<&[u8]>) -> Vec<u8> {
        crate::radius_support::access_request(id, user, password, SECRET, state, None).0
    }

    async fn ask(h: &Harness, raw: Vec<u8>) -> Packet {
        let resp = latchkey_radius::handle(&h.app, "127.0.0.1".parse().unwrap(), &raw)
            .await
            .unwrap()
            .expect("answered");
        Packet::decode(&resp).unwrap()
    }

    /// Password → Access-Challenge with the number; returns (State, number).
    async fn challenge(h: &Harness, name: &str) -> (Vec<u8>, u8) {
        let p = ask(h, request(1, name, PASSWORD, None)).await;
        assert_eq!(p.code, packet::ACCESS_CHALLENGE);
        let msg = String::from_utf8(p.attr(packet::REPLY_MESSAGE).unwrap().to_vec()).unwrap();
        let number: u8 = msg
            .split_whitespace()
            .find_map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
            .unwrap_or_else(|| panic!("no number in {msg:?}"));
        assert!(msg.contains("Latchkey Authenticator"), "{msg}");
        (p.attr(packet::STATE).unwrap().to_vec(), number)
    }

    async fn setup(name: &str) -> (Harness, Device) {
        let h = Harness::sqlite().await;
        user(&h, name).await;
        let d = enroll(&h, name).await;
        h.app
            .add_radius_client(&Principal::Operator, "vpn", "127.0.0.1", SECRET)
            .await
            .unwrap();
        (h, d)
    }

    #[tokio::test]
    async fn radius_waits_for_the_push_approval_then_accepts() {
        let (h, d) = setup("vpnpush").await;
        let (state, number) = challenge(&h, "vpnpush").await;
        let p = pending_prompt(&h, &d).await;
        assert_eq!(p["application"], "vpn", "the NAS is the application the device shows");
        let h = std::sync::Arc::new(h);
        let waiting = {
            let h = h.clone();
            tokio::spawn(async move { ask(&h, request(2, "vpnpush", "", Some(&state))).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "the answer waits for the device");
        answer(
            &h,
            &d,
            &p,
            Some(number),
            Decision::Approve,
            &d.sign(&p, Some(number), Decision::Approve),
        )
        .await
        .expect(StatusCode::OK);
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("answered within the wait")
            .unwrap();
        assert_eq!(resp.code, packet::ACCESS_ACCEPT);
    }

    #[tokio::test]
    async fn radius_rejects_a_denied_push_and_a_wrong_number() {
        let (h, d) = setup("vpndeny").await;
        for decision in [Decision::Deny, Decision::Approve] {
            let (state, number) = challenge(&h, "vpndeny").await;
            let p = pending_prompt(&h, &d).await;
            let typed = (decision == Decision::Approve).then_some(if number == 99 { 10 } else { number + 1 });
            answer(&h, &d, &p, typed, decision, &d.sign(&p, typed, decision))
                .await
                .expect(StatusCode::OK);
            let resp = ask(&h, request(2, "vpndeny", "", Some(&state))).await;
            assert_eq!(resp.code, packet::ACCESS_REJECT, "{decision:?}");
        }
    }
}
