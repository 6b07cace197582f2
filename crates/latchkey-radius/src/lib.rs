//! A RADIUS server (RFC 2865 over UDP) so VPNs and network gear can put
//! Latchkey's MFA in front of their users. This crate is the transport: the
//! packet codec ([`packet`]) and the UDP loop. What an Access-Request means
//! is decided by `latchkey_service::radius` (its module doc draws the flow).
//!
//! Packets from unknown addresses, with a missing or wrong
//! Message-Authenticator (RFC 3579 §3.2; which is also what a wrong shared
//! secret looks like), or that are not Access-Requests are silently
//! discarded, as the RFCs require: an answer could not be authenticated by
//! the NAS anyway, and silence gives an attacker nothing to measure.

pub mod packet;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_service::radius::{AccessAnswer, AccessRequest};
use latchkey_service::{App, ServiceResult};
use tokio::net::UdpSocket;
use zeroize::Zeroizing;

use packet::{Packet, ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT, ACCESS_REQUEST};

pub use latchkey_service::radius::{CHALLENGE_SECS, PUSH_WAIT};

/// Retransmissions within this window get the cached answer (RFC 5080 §2.2.2).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);
/// Requests handled at once; more are dropped (the NAS retransmits).
const MAX_IN_FLIGHT: usize = 64;

/// Answer one datagram from `src`. `None`: discard silently.
pub async fn handle(app: &App, src: IpAddr, raw: &[u8]) -> ServiceResult<Option<Vec<u8>>> {
    let Some(nas) = app.radius_nas(src).await? else {
        tracing::warn!(%src, "RADIUS: request from an unknown client discarded");
        return Ok(None);
    };
    let secret = &nas.secret;
    let Ok(req) = Packet::decode(raw) else {
        tracing::warn!(nas = %nas.client.name, "RADIUS: malformed packet discarded");
        return Ok(None);
    };
    if req.code != ACCESS_REQUEST {
        return Ok(None);
    }
    if !packet::verify_request_message_authenticator(raw, secret) {
        tracing::warn!(nas = %nas.client.name, "RADIUS: missing or invalid Message-Authenticator (or wrong shared secret); discarded");
        return Ok(None);
    }
    let answer = |code: u8, message: &str, state: Option<&[u8]>| {
        let mut resp = Packet::reply_to(&req, code);
        if let Some(s) = state {
            resp.add(packet::STATE, s);
        }
        if !message.is_empty() {
            resp.add(packet::REPLY_MESSAGE, message.as_bytes());
        }
        Some(packet::sign_response(resp, &req.authenticator, secret))
    };
    let reject = |message: &str| answer(ACCESS_REJECT, message, None);
    let username = match req.attr(packet::USER_NAME).map(std::str::from_utf8) {
        Some(Ok(u)) if !u.is_empty() => u.to_owned(),
        _ => return Ok(reject("User-Name is required")),
    };
    let Some(hidden) = req.attr(packet::USER_PASSWORD) else {
        return Ok(reject("Only PAP (User-Password) is supported"));
    };
    let password = match packet::decode_user_password(hidden, secret, &req.authenticator) {
        Ok(p) => Zeroizing::new(p),
        Err(_) => return Ok(reject("Malformed User-Password")),
    };
    let Ok(password) = std::str::from_utf8(&password).map(|s| Zeroizing::new(s.to_owned())) else {
        return Ok(reject("Sign-in failed"));
    };
    let calling_station = req
        .attr(packet::CALLING_STATION_ID)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.trim().parse::<IpAddr>().ok());
    let request = AccessRequest {
        username,
        password,
        calling_station,
        state: req.attr(packet::STATE).map(<[u8]>::to_vec),
    };
    Ok(match app.radius_access_request(&nas.client, src, request).await? {
        AccessAnswer::Accept => answer(ACCESS_ACCEPT, "", None),
        AccessAnswer::Reject(m) => reject(m),
        AccessAnswer::Challenge { state, message } => answer(ACCESS_CHALLENGE, &message, Some(state.as_bytes())),
    })
}

enum Seen {
    InFlight,
    Answered(Vec<u8>),
}

type DuplicateKey = (SocketAddr, u8, [u8; 16]);

/// Serve RADIUS on `socket` until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    socket: UdpSocket,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let seen: Arc<Mutex<HashMap<DuplicateKey, (Instant, Seen)>>> = Arc::default();
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    tokio::pin!(shutdown);
    let mut buf = vec![0u8; packet::MAX_LEN];
    loop {
        let (n, src) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "RADIUS receive failed");
                    continue;
                }
            },
        };
        if n < packet::HEADER_LEN {
            continue;
        }
        let data = buf[..n].to_vec();
        let key: DuplicateKey = (src, data[1], data[4..20].try_into().expect("16 bytes"));
        {
            let mut seen = seen.lock().expect("not poisoned");
            seen.retain(|_, (at, _)| at.elapsed() < DUPLICATE_WINDOW);
            match seen.get(&key) {
                Some((_, Seen::Answered(resp))) => {
                    let (socket, resp) = (socket.clone(), resp.clone());
                    tokio::spawn(async move { socket.send_to(&resp, src).await });
                    continue;
                }
                Some((_, Seen::InFlight)) => continue,
                None => {
                    seen.insert(key, (Instant::now(), Seen::InFlight));
                }
            }
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            seen.lock().expect("not poisoned").remove(&key);
            tracing::warn!("RADIUS: too many requests in flight; dropping one");
            continue;
        };
        let (app, socket, seen) = (app.clone(), socket.clone(), seen.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let resp = match handle(&app, src.ip(), &data).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "RADIUS request failed");
                    None
                }
            };
            {
                let mut s = seen.lock().expect("not poisoned");
                match &resp {
                    Some(r) => s.insert(key, (Instant::now(), Seen::Answered(r.clone()))),
                    None => s.remove(&key),
                };
            }
            if let Some(r) = resp {
                if let Err(e) = socket.send_to(&r, src).await {
                    tracing::warn!(error = %e, "RADIUS send failed");
                }
            }
        });
    }
}
