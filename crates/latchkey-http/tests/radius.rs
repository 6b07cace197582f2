//! RADIUS server, in process: PAP + Access-Challenge for TOTP, the
//! Message-Authenticator requirement, replay and shared throttling; and
//! under attack: one attacker behind a shared NAS must not lock out everybody
//! behind it, and spoofed datagrams must not grow the log without bound
//! (docs/threat-model-outage.md).

mod federation_support;
mod radius_support;

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use federation_support::{Env, TestUser};
use latchkey_radius::packet::{self, Packet};
use latchkey_service::app::SignInContext;
use latchkey_service::{Principal, ServiceError};
use radius_support::access_request;

const SECRET: &str = "nas-shared-secret-0123";
const NAS_IP: &str = "127.0.0.1";

fn request(id: u8, user: &str, password: &str, secret: &str, state: Option<&[u8]>) -> (Vec<u8>, [u8; 16]) {
    access_request(id, user, password, secret, state, None)
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
        continues_to: None,
        ..Default::default()
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

/// The answer's code and Reply-Message to a first request (no State).
async fn answer_to(env: &Env, id: u8, user: &str, password: &str, calling_station: Option<&str>) -> (u8, String) {
    let (raw, auth) = access_request(id, user, password, SECRET, None, calling_station);
    let p = ask(env, &raw, &auth).await.expect("answered");
    let msg = p
        .attr(packet::REPLY_MESSAGE)
        .map(|m| String::from_utf8_lossy(m).into_owned());
    (p.code, msg.unwrap_or_default())
}

#[tokio::test]
async fn one_attacker_behind_a_nas_does_not_lock_out_its_other_users() {
    let (env, victim) = setup().await;
    // Far more wrong passwords than the per-source threshold (20), each for
    // a different user, through the NAS without Calling-Station-Id.
    for i in 0..30u8 {
        let (code, _) = answer_to(&env, i, &format!("guess{i}"), "wrong password", None).await;
        assert_eq!(code, packet::ACCESS_REJECT);
    }
    let (code, msg) = answer_to(&env, 100, &victim.name, &victim.password, None).await;
    assert_eq!(code, packet::ACCESS_CHALLENGE, "the victim is not locked out: {msg}");

    // A Calling-Station-Id of any form is the source: the attacker's station
    // is throttled, a colleague's station is not.
    let attacker = "00-11-22-33-44-55";
    for i in 0..30u8 {
        answer_to(&env, i, &format!("spray{i}"), "wrong password", Some(attacker)).await;
    }
    let (code, msg) = answer_to(&env, 101, &victim.name, &victim.password, Some(attacker)).await;
    assert_eq!(code, packet::ACCESS_REJECT);
    assert!(msg.contains("Too many"), "{msg}");
    let (code, msg) = answer_to(&env, 102, &victim.name, &victim.password, Some("+4930123456")).await;
    assert_eq!(code, packet::ACCESS_CHALLENGE, "{msg}");

    // The per-user lock still applies through the NAS.
    for i in 0..5u8 {
        answer_to(&env, 110 + i, &victim.name, "wrong password", None).await;
    }
    let (code, msg) = answer_to(&env, 120, &victim.name, &victim.password, None).await;
    assert_eq!(code, packet::ACCESS_REJECT);
    assert!(msg.contains("Too many"), "{msg}");
}

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn spoofed_datagrams_from_unknown_addresses_log_a_bounded_number_of_lines() {
    let (env, _) = setup().await;
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The test's runtime is single-threaded: the server's tasks log here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(latchkey_radius::serve(env.app.clone(), server, async {
        let _ = stopped.await;
    }));
    // 127.0.0.2 is not a registered NAS.
    let spoofer = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    const SENT: usize = 2000;
    for i in 0..SENT {
        let (raw, _) = request((i % 256) as u8, &format!("u{i}"), "pw", SECRET, None);
        spoofer.send_to(&raw, addr).await.unwrap();
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Let the server drain its socket.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("RADIUS")).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("unknown client") && l.contains("127.0.0.2")),
        "the first one is still reported: {text}"
    );
    assert!(lines.len() <= 3, "{} lines for {SENT} datagrams:\n{text}", lines.len());
}
