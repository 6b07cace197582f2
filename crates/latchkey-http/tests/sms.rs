//! SMS and voice codes through the HTTP router: the development outbox and
//! the webhook adapter (to an HTTP receiver this test starts on 127.0.0.1),
//! single use, expiry, attempt and send limits, masking, the privileged-user
//! rule. The clock is moved, never slept.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use common::{cheap_config, Harness, PASSWORD};
use latchkey_service::sms::{GatewayConfig, OutboxGateway, WebhookGateway};
use latchkey_service::Config;
use serde_json::{json, Value};

const PHONE: &str = "+1 415 555 0123";

fn outbox_config(dir: &Path) -> (Config, PathBuf) {
    let path = dir.join("outbox.jsonl");
    let mut c = cheap_config();
    c.sms.gateway = GatewayConfig::Outbox(OutboxGateway { path: path.clone() });
    (c, path)
}

fn messages(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn code_in(body: &str) -> String {
    let digits: String = body
        .split(|c: char| !c.is_ascii_digit() && c != ' ')
        .find(|w| w.chars().filter(char::is_ascii_digit).count() >= 6)
        .unwrap_or_else(|| panic!("no code in {body:?}"))
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    digits
}

fn last_code(path: &Path) -> String {
    let m = messages(path);
    code_in(m.last().expect("a message")["body"].as_str().unwrap())
}

async fn user_with_phone(h: &Harness, name: &str, kind: &str, outbox: &Path) -> String {
    h.create_user(name, &[]).await;
    h.set_password(name, &h.admin).await;
    let r = h
        .post(
            &format!("/api/v1/users/{name}/methods/phone"),
            Some(&h.admin),
            json!({ "kind": kind, "phone": PHONE }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.json["method"]["state"], "pending");
    assert_eq!(r.json["code"]["to"], "+1••••••••23");
    assert_eq!(r.json["code"]["development_only"], true);
    let id = r.json["method"]["id"].as_str().unwrap().to_owned();
    h.post(
        &format!("/api/v1/users/{name}/methods/phone/{id}/confirm"),
        Some(&h.admin),
        json!({ "code": "000000" }),
    )
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid-code");
    let r = h
        .post(
            &format!("/api/v1/users/{name}/methods/phone/{id}/confirm"),
            Some(&h.admin),
            json!({ "code": last_code(outbox) }),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "active");
    id
}

async fn flow(h: &Harness, name: &str) -> String {
    let r = h.start_with_password(name, PASSWORD).await;
    r.expect(StatusCode::OK);
    r.json["flow_id"].as_str().unwrap().to_owned()
}

async fn send(h: &Harness, flow: &str, method: &str) -> common::Resp {
    h.post(
        &format!("/api/v1/signin/{flow}/phone-code"),
        None,
        json!({ "method": method }),
    )
    .await
}

#[tokio::test]
async fn sms_through_the_outbox_signs_in_once_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let (config, outbox) = outbox_config(dir.path());
    let h = Harness::sqlite_with(config).await;
    user_with_phone(&h, "sam", "sms", &outbox).await;
    let m = messages(&outbox);
    assert_eq!(m[0]["to"], "+14155550123");
    assert_eq!(m[0]["development_only"], true);

    let f = flow(&h, "sam").await;
    // Verifying before any code was sent is a client error, not a guess.
    h.verify(&f, json!({ "method": "sms", "code": "123456" }))
        .await
        .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    let r = send(&h, &f, "sms").await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["to"], "+1••••••••23");
    let code = last_code(&outbox);
    assert_eq!(code.len(), 6);
    let r = h.verify(&f, json!({ "method": "sms", "code": code })).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete");
    assert_eq!(r.json["acr"], "mfa", "SMS satisfies mfa only");
    assert_eq!(r.json["amr"], json!(["pwd", "sms", "mfa"]));

    // Replay: the spent code does not work on a new sign-in's code.
    let f2 = flow(&h, "sam").await;
    send(&h, &f2, "sms").await.expect(StatusCode::OK);
    let fresh = last_code(&outbox);
    if fresh != code {
        h.verify(&f2, json!({ "method": "sms", "code": code }))
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");
    }
    h.verify(&f2, json!({ "method": "sms", "code": fresh }))
        .await
        .expect(StatusCode::OK);

    // The full number never reaches the audit log.
    let audit = h.all_audit_events().await;
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains("4155550123"), "unmasked phone number in the audit log");
    assert!(audit.iter().any(|e| e["action"] == "phone.code.send"));
}

#[tokio::test]
async fn a_code_expires_and_is_attempt_limited() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, outbox) = outbox_config(dir.path());
    config.sms.policy.max_attempts = 2;
    let h = Harness::sqlite_with(config).await;
    user_with_phone(&h, "tia", "sms", &outbox).await;

    let f = flow(&h, "tia").await;
    send(&h, &f, "sms").await.expect(StatusCode::OK);
    let code = last_code(&outbox);
    h.advance(5 * 60 + 1);
    h.verify(&f, json!({ "method": "sms", "code": code }))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");

    let f = flow(&h, "tia").await;
    send(&h, &f, "sms").await.expect(StatusCode::OK);
    let code = last_code(&outbox);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..2 {
        h.verify(&f, json!({ "method": "sms", "code": wrong }))
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");
    }
    // Out of attempts: even the right code is refused now.
    h.verify(&f, json!({ "method": "sms", "code": code }))
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-code");
}

#[tokio::test]
async fn sending_is_rate_limited_per_user_and_per_phone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, outbox) = outbox_config(dir.path());
    config.sms.policy.max_sends_per_phone = 4;
    let h = Harness::sqlite_with(config).await;
    // Each enrollment sends one code.
    user_with_phone(&h, "uma", "sms", &outbox).await;
    let f = flow(&h, "uma").await;
    send(&h, &f, "sms").await.expect(StatusCode::OK);
    send(&h, &f, "sms").await.expect(StatusCode::OK);
    let r = send(&h, &f, "sms").await;
    r.expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
    assert!(r.retry_after().is_some());
    // A second account with the same number: the number's limit (4) is hit
    // by the confirmation code plus one more.
    user_with_phone(&h, "vic", "sms", &outbox).await;
    let f = flow(&h, "vic").await;
    send(&h, &f, "sms")
        .await
        .expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
    h.advance(10 * 60 + 1);
    let f = flow(&h, "vic").await;
    send(&h, &f, "sms").await.expect(StatusCode::OK);
}

#[tokio::test]
async fn voice_reads_the_code_digit_by_digit() {
    let dir = tempfile::tempdir().unwrap();
    let (config, outbox) = outbox_config(dir.path());
    let h = Harness::sqlite_with(config).await;
    user_with_phone(&h, "wes", "voice", &outbox).await;
    let f = flow(&h, "wes").await;
    let r = h.start_with_password("wes", PASSWORD).await;
    assert!(r.json["allowed_methods"].as_array().unwrap().contains(&json!("voice")));
    send(&h, &f, "voice").await.expect(StatusCode::OK);
    let m = messages(&outbox);
    let last = m.last().unwrap();
    assert_eq!(last["channel"], "voice");
    let body = last["body"].as_str().unwrap();
    let code = last_code(&outbox);
    let spoken: Vec<String> = code.chars().map(String::from).collect();
    assert!(body.contains(&spoken.join(" ")), "{body}");
    // A voice phone does not answer the sms step.
    send(&h, &f, "sms")
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
    h.verify(&f, json!({ "method": "voice", "code": code }))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn privileged_users_cannot_use_sms_when_the_admin_forbids_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _outbox) = outbox_config(dir.path());
    config.sms.forbid_privileged = true;
    let h = Harness::sqlite_with(config).await;
    h.create_user("root2", &["admin"]).await;
    let r = h
        .post(
            "/api/v1/users/root2/methods/phone",
            Some(&h.admin),
            json!({ "kind": "sms", "phone": PHONE }),
        )
        .await;
    r.expect_problem(StatusCode::FORBIDDEN, "forbidden");
    h.post(
        "/api/v1/users/root2/methods/phone",
        Some(&h.admin),
        json!({ "kind": "sms", "phone": "0415550123" }),
    )
    .await
    .expect(StatusCode::FORBIDDEN);
    h.create_user("plain", &[]).await;
    h.post(
        "/api/v1/users/plain/methods/phone",
        Some(&h.admin),
        json!({ "kind": "sms", "phone": "0415550123" }),
    )
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, String, String)>>>);

/// A provider stand-in on 127.0.0.1:0 recording (auth header, content type, body).
async fn receiver(status: StatusCode) -> (String, Received, tokio::task::JoinHandle<()>) {
    use axum::http::HeaderMap;
    let got = Received::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/send",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let g = g.clone();
            async move {
                let h = |k: &str| {
                    headers
                        .get(k)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default()
                };
                g.0.lock().unwrap().push((h("authorization"), h("content-type"), body));
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/send", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, got, task)
}

#[tokio::test]
async fn the_webhook_adapter_posts_the_templated_message() {
    let (url, got, task) = receiver(StatusCode::OK).await;
    let mut config = cheap_config();
    config.sms.gateway = GatewayConfig::Webhook(WebhookGateway {
        url,
        headers: vec![("Authorization".into(), "Bearer provider-key".into())],
        body_template: r#"{"to":"{to}","text":"{message}","kind":"{channel}"}"#.into(),
        ..Default::default()
    });
    let h = Harness::sqlite_with(config).await;
    h.create_user("xena", &[]).await;
    h.set_password("xena", &h.admin).await;
    let r = h
        .post(
            "/api/v1/users/xena/methods/phone",
            Some(&h.admin),
            json!({ "kind": "sms", "phone": PHONE }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.json["code"]["development_only"], false);
    let id = r.json["method"]["id"].as_str().unwrap().to_owned();
    let (auth, ctype, body) = got.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(auth, "Bearer provider-key");
    assert_eq!(ctype, "application/json");
    let sent: Value = serde_json::from_str(&body).expect("the template renders valid JSON");
    assert_eq!(sent["to"], "+14155550123");
    assert_eq!(sent["kind"], "sms");
    let code = code_in(sent["text"].as_str().unwrap());
    h.post(
        &format!("/api/v1/users/xena/methods/phone/{id}/confirm"),
        Some(&h.admin),
        json!({ "code": code }),
    )
    .await
    .expect(StatusCode::OK);
    let f = flow(&h, "xena").await;
    send(&h, &f, "sms").await.expect(StatusCode::OK);
    let (_, _, body) = got.0.lock().unwrap().last().cloned().unwrap();
    let sent: Value = serde_json::from_str(&body).unwrap();
    let code = code_in(sent["text"].as_str().unwrap());
    let r = h.verify(&f, json!({ "method": "sms", "code": code })).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete");
    task.abort();
}

#[tokio::test]
async fn a_failing_gateway_is_a_502_problem() {
    let (url, _got, task) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let mut config = cheap_config();
    config.sms.gateway = GatewayConfig::Webhook(WebhookGateway {
        url,
        ..Default::default()
    });
    let h = Harness::sqlite_with(config).await;
    h.create_user("yan", &[]).await;
    h.post(
        "/api/v1/users/yan/methods/phone",
        Some(&h.admin),
        json!({ "kind": "sms", "phone": PHONE }),
    )
    .await
    .expect_problem(StatusCode::BAD_GATEWAY, "gateway-failed");
    task.abort();
}

/// A minimal SMTP relay on 127.0.0.1:0 that accepts one message and records
/// (RCPT TO, DATA).
async fn smtp_relay() -> (u16, tokio::task::JoinHandle<(String, String)>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let (r, mut w) = sock.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"220 relay.test ESMTP\r\n").await.unwrap();
        let (mut rcpt, mut data, mut in_data) = (String::new(), String::new(), false);
        while let Some(line) = lines.next_line().await.unwrap() {
            if in_data {
                if line == "." {
                    in_data = false;
                    w.write_all(b"250 queued\r\n").await.unwrap();
                } else {
                    data.push_str(&line);
                    data.push('\n');
                }
                continue;
            }
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                b"250 relay.test\r\n"
            } else if upper.starts_with("RCPT TO:") {
                rcpt = line[8..].trim().to_owned();
                b"250 ok\r\n"
            } else if upper.starts_with("DATA") {
                in_data = true;
                b"354 go on\r\n"
            } else if upper.starts_with("QUIT") {
                w.write_all(b"221 bye\r\n").await.unwrap();
                break;
            } else {
                b"250 ok\r\n"
            };
            w.write_all(reply).await.unwrap();
        }
        (rcpt, data)
    });
    (port, task)
}

#[tokio::test]
async fn the_smtp_adapter_mails_the_code_to_the_email_to_sms_address() {
    let (port, relay) = smtp_relay().await;
    let mut config = cheap_config();
    config.sms.gateway = GatewayConfig::Smtp(latchkey_service::sms::SmtpGateway {
        host: "127.0.0.1".into(),
        port,
        username: None,
        password: None,
        from: "latchkey@example.org".into(),
        to_template: "{number}@sms.example.net".into(),
        subject: "Latchkey code".into(),
    });
    let h = Harness::sqlite_with(config).await;
    h.create_user("zed", &[]).await;
    let r = h
        .post(
            "/api/v1/users/zed/methods/phone",
            Some(&h.admin),
            json!({ "kind": "sms", "phone": PHONE }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let id = r.json["method"]["id"].as_str().unwrap().to_owned();
    let (rcpt, data) = tokio::time::timeout(std::time::Duration::from_secs(10), relay)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rcpt, "<14155550123@sms.example.net>");
    assert!(data.contains("Subject: Latchkey code"), "{data}");
    let code = code_in(data.split("\n\n").nth(1).unwrap_or(&data));
    h.post(
        &format!("/api/v1/users/zed/methods/phone/{id}/confirm"),
        Some(&h.admin),
        json!({ "code": code }),
    )
    .await
    .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_privileged_users_existing_phone_is_not_offered_when_forbidden() {
    use latchkey_core::{MethodKind, MethodState};
    use latchkey_store::{AuditEntry, NewMethod};
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _outbox) = outbox_config(dir.path());
    config.sms.forbid_privileged = true;
    let h = Harness::sqlite_with(config).await;
    h.create_user("ops", &["helpdesk"]).await;
    h.app
        .set_password(&latchkey_service::Principal::Operator, "ops", common::PASSWORD, None)
        .await
        .unwrap();
    // A phone registered before the setting was turned on.
    let user = h.app.store().user_by_username("ops").await.unwrap().unwrap();
    let mut tx = h.app.store().write().await.unwrap();
    tx.insert_method(
        NewMethod {
            id: "m-phone",
            user_id: &user.id,
            kind: MethodKind::Sms,
            label: "Old phone",
            state: MethodState::Active,
            secret_sealed: Some(h.app.keys().seal(b"+14155550123", "m-phone")),
            params: json!({}),
        },
        h.now(),
    )
    .await
    .unwrap();
    tx.audit(
        &AuditEntry::new("test", "method.add", "user:ops", json!({})),
        h.now() * 1000,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let r = h.start_with_password("ops", PASSWORD).await;
    r.expect(StatusCode::OK);
    assert_eq!(
        r.json["state"], "registration_required",
        "SMS does not count: {}",
        r.json
    );
    let f = r.json["flow_id"].as_str().unwrap().to_owned();
    send(&h, &f, "sms")
        .await
        .expect_problem(StatusCode::CONFLICT, "invalid-state");
}
