//! RADIUS under attack: one attacker behind a shared NAS must not lock out
//! everybody behind it, and spoofed datagrams must not grow the log without
//! bound (docs/threat-model-outage.md).

mod federation_support;

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use federation_support::Env;
use latchkey_radius::packet::{self, Packet};
use latchkey_service::Principal;

const SECRET: &str = "nas-shared-secret-0123";
const NAS_IP: &str = "127.0.0.1";

fn request(id: u8, user: &str, password: &str, calling_station: Option<&str>) -> Vec<u8> {
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
        &packet::encode_user_password(password.as_bytes(), SECRET.as_bytes(), &auth),
    );
    if let Some(c) = calling_station {
        p.add(packet::CALLING_STATION_ID, c.as_bytes());
    }
    packet::sign_request(p, SECRET.as_bytes())
}

/// The answer's code and Reply-Message.
async fn ask(env: &Env, raw: &[u8]) -> (u8, String) {
    let ip: IpAddr = NAS_IP.parse().unwrap();
    let resp = latchkey_radius::handle(&env.app, ip, raw)
        .await
        .unwrap()
        .expect("answered");
    let p = Packet::decode(&resp).unwrap();
    let msg = p
        .attr(packet::REPLY_MESSAGE)
        .map(|m| String::from_utf8_lossy(m).into_owned());
    (p.code, msg.unwrap_or_default())
}

async fn nas_env() -> Env {
    let env = Env::new().await;
    env.app
        .add_radius_client(&Principal::Operator, "vpn", NAS_IP, SECRET)
        .await
        .unwrap();
    env
}

#[tokio::test]
async fn one_attacker_behind_a_nas_does_not_lock_out_its_other_users() {
    let env = nas_env().await;
    let victim = env.user("victim").await;
    // Far more wrong passwords than the per-source threshold (20), each for
    // a different user, through the NAS without Calling-Station-Id.
    for i in 0..30u8 {
        let raw = request(i, &format!("guess{i}"), "wrong password", None);
        assert_eq!(ask(&env, &raw).await.0, packet::ACCESS_REJECT);
    }
    let (code, msg) = ask(&env, &request(100, &victim.name, &victim.password, None)).await;
    assert_eq!(code, packet::ACCESS_CHALLENGE, "the victim is not locked out: {msg}");

    // A Calling-Station-Id of any form is the source: the attacker's station
    // is throttled, a colleague's station is not.
    let attacker = "00-11-22-33-44-55";
    for i in 0..30u8 {
        ask(
            &env,
            &request(i, &format!("spray{i}"), "wrong password", Some(attacker)),
        )
        .await;
    }
    let (code, msg) = ask(&env, &request(101, &victim.name, &victim.password, Some(attacker))).await;
    assert_eq!(code, packet::ACCESS_REJECT);
    assert!(msg.contains("Too many"), "{msg}");
    let (code, msg) = ask(&env, &request(102, &victim.name, &victim.password, Some("+4930123456"))).await;
    assert_eq!(code, packet::ACCESS_CHALLENGE, "{msg}");

    // The per-user lock still applies through the NAS.
    for i in 0..5u8 {
        ask(&env, &request(110 + i, &victim.name, "wrong password", None)).await;
    }
    let (code, msg) = ask(&env, &request(120, &victim.name, &victim.password, None)).await;
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
    let env = nas_env().await;
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
        let raw = request((i % 256) as u8, &format!("u{i}"), "pw", None);
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
