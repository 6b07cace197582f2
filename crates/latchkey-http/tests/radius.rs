//! RADIUS server, in process: PAP + Access-Challenge for TOTP, the
//! Message-Authenticator requirement, replay and shared throttling.

mod federation_support;

use std::net::IpAddr;

use federation_support::{Env, TestUser};
use latchkey_radius::packet::{self, Packet};
use latchkey_service::app::SignInContext;
use latchkey_service::{Principal, ServiceError};

const SECRET: &str = "nas-shared-secret-0123";
const NAS_IP: &str = "127.0.0.1";

fn request(id: u8, user: &str, password: &str, secret: &str, state: Option<&[u8]>) -> (Vec<u8>, [u8; 16]) {
    let auth: [u8; 16] = rand::random();
    let mut p = Packet {
        code: packet::ACCESS_REQUEST,
        identifier: id,
        authenticator: auth,
        attributes: vec![],
    };
    p.add(packet::USER_NAME, user.as_bytes());
    p.add(
        packet::USER_PASSWORD,
        &packet::encode_user_password(password.as_bytes(), secret.as_bytes(), &auth),
    );
    if let Some(s) = state {
        p.add(packet::STATE, s);
    }
    (packet::sign_request(p, secret.as_bytes()), auth)
}

async fn ask(env: &Env, raw: &[u8], auth: &[u8; 16]) -> Option<Packet> {
    let ip: IpAddr = NAS_IP.parse().unwrap();
    let resp = latchkey_radius::handle(&env.app, ip, raw).await.expect("handled")?;
    let p = Packet::decode(&resp).expect("well-formed response");
    assert_eq!(
        p.authenticator,
        packet::response_authenticator(&resp, auth, SECRET.as_bytes()),
        "Response Authenticator"
    );
    let mut check = resp.clone();
    check[4..20].copy_from_slice(auth);
    assert!(
        packet::verify_request_message_authenticator(&check, SECRET.as_bytes()),
        "Message-Authenticator on the response"
    );
    Some(p)
}

async fn setup() -> (Env, TestUser) {
    let env = Env::new().await;
    let u = env.user("vpnuser").await;
    env.app
        .add_radius_client(&Principal::Operator, "vpn", NAS_IP, SECRET)
        .await
        .unwrap();
    (env, u)
}

async fn challenge(env: &Env, u: &TestUser) -> Vec<u8> {
    let (raw, auth) = request(1, &u.name, &u.password, SECRET, None);
    let p = ask(env, &raw, &auth).await.expect("answered");
    assert_eq!(p.code, packet::ACCESS_CHALLENGE);
    assert!(p.attr(packet::REPLY_MESSAGE).is_some());
    p.attr(packet::STATE).expect("State").to_vec()
}

#[tokio::test]
async fn password_then_totp_challenge_accepts() {
    let (env, u) = setup().await;
    let state = challenge(&env, &u).await;
    let code = env.fresh_code(&u);
    let (raw, auth) = request(2, &u.name, &code, SECRET, Some(&state));
    let p = ask(&env, &raw, &auth).await.unwrap();
    assert_eq!(p.code, packet::ACCESS_ACCEPT);
    // The NAS is the application in the sign-in log and audit.
    let audit = env.app.store().audit_page(0, 1000, None).await.unwrap();
    assert!(audit
        .events
        .iter()
        .any(|e| e.action == "session.create" && e.details.contains("\"application\":\"vpn\"")));
    // The challenge cannot be answered twice.
    let code = env.fresh_code(&u);
    let (raw, auth) = request(3, &u.name, &code, SECRET, Some(&state));
    assert_eq!(ask(&env, &raw, &auth).await.unwrap().code, packet::ACCESS_REJECT);
}

#[tokio::test]
async fn replayed_code_and_wrong_code_are_rejected() {
    let (env, u) = setup().await;
    let state = challenge(&env, &u).await;
    let code = env.fresh_code(&u);
    let (raw, auth) = request(2, &u.name, &code, SECRET, Some(&state));
    assert_eq!(ask(&env, &raw, &auth).await.unwrap().code, packet::ACCESS_ACCEPT);
    // Same code, new challenge: replay.
    let state = challenge(&env, &u).await;
    let (raw, auth) = request(4, &u.name, &code, SECRET, Some(&state));
    assert_eq!(ask(&env, &raw, &auth).await.unwrap().code, packet::ACCESS_REJECT);
    let state = challenge(&env, &u).await;
    let (raw, auth) = request(5, &u.name, "000000", SECRET, Some(&state));
    assert_eq!(ask(&env, &raw, &auth).await.unwrap().code, packet::ACCESS_REJECT);
    // Another user cannot answer someone's challenge.
    let state = challenge(&env, &u).await;
    let code = env.fresh_code(&u);
    let (raw, auth) = request(6, "someoneelse", &code, SECRET, Some(&state));
    assert_eq!(ask(&env, &raw, &auth).await.unwrap().code, packet::ACCESS_REJECT);
}

#[tokio::test]
async fn bad_authenticators_and_unknown_clients_are_discarded() {
    let (env, u) = setup().await;
    let ip: IpAddr = NAS_IP.parse().unwrap();
    // Wrong shared secret: the Message-Authenticator does not verify.
    let (raw, _) = request(1, &u.name, &u.password, "a-different-secret-xyz", None);
    assert_eq!(latchkey_radius::handle(&env.app, ip, &raw).await.unwrap(), None);
    // Missing Message-Authenticator.
    let (raw, _) = request(1, &u.name, &u.password, SECRET, None);
    let mut p = Packet::decode(&raw).unwrap();
    p.attributes.retain(|(t, _)| *t != packet::MESSAGE_AUTHENTICATOR);
    assert_eq!(latchkey_radius::handle(&env.app, ip, &p.encode()).await.unwrap(), None);
    // Unknown NAS address.
    let (raw, _) = request(1, &u.name, &u.password, SECRET, None);
    assert_eq!(
        latchkey_radius::handle(&env.app, "10.9.9.9".parse().unwrap(), &raw)
            .await
            .unwrap(),
        None
    );
    // Garbage.
    assert_eq!(latchkey_radius::handle(&env.app, ip, &[1, 2, 3]).await.unwrap(), None);
}

#[tokio::test]
async fn wrong_passwords_lock_the_user_for_http_too() {
    let (env, u) = setup().await;
    for i in 0..5 {
        let (raw, auth) = request(i, &u.name, "not the password", SECRET, None);
        assert_eq!(ask(&env, &raw, &auth).await.unwrap().code, packet::ACCESS_REJECT);
    }
    let ctx = SignInContext {
        application: None,
        source_ip: Some("192.0.2.1".into()),
        device_id: None,
        continues_to: None,
    };
    let r = env.app.signin_start(&u.name, Some(&u.password), &ctx).await;
    assert!(matches!(r, Err(ServiceError::TooManyAttempts { .. })), "shared lockout");
    let (raw, auth) = request(9, &u.name, &u.password, SECRET, None);
    let p = ask(&env, &raw, &auth).await.unwrap();
    assert_eq!(p.code, packet::ACCESS_REJECT);
    assert!(String::from_utf8_lossy(p.attr(packet::REPLY_MESSAGE).unwrap()).contains("Too many"));
}

#[tokio::test]
async fn client_registration_rules() {
    let env = Env::new().await;
    let op = Principal::Operator;
    assert!(env
        .app
        .add_radius_client(&op, "vpn", "127.0.0.1", "short")
        .await
        .is_err());
    assert!(env
        .app
        .add_radius_client(&op, "vpn", "not-an-ip", SECRET)
        .await
        .is_err());
    env.app
        .add_radius_client(&op, "vpn", "127.0.0.1", SECRET)
        .await
        .unwrap();
    assert!(matches!(
        env.app.add_radius_client(&op, "vpn2", "127.0.0.1", SECRET).await,
        Err(ServiceError::Conflict(_))
    ));
}
