//! A RADIUS server (RFC 2865 over UDP) so VPNs and network gear can put
//! Latchkey's MFA in front of their users.
//!
//! ```text
//!  Access-Request(User-Name, User-Password=password, Message-Authenticator)
//!     │  App::signin_start  (same throttles, lockouts and sign-in log as HTTP)
//!     ├─ wrong / locked / no authenticator app ─────────▶ Access-Reject
//!     └─ second_factor_required ───────────────────────▶ Access-Challenge(State, Reply-Message)
//!  Access-Request(User-Name, User-Password=TOTP code, State, Message-Authenticator)
//!     │  challenge taken once from the DB (any node can answer)
//!     │  App::signin_verify(totp)  (same replay guard as HTTP)
//!     ├─ complete ─────────────────────────────────────▶ Access-Accept
//!     └─ anything else ────────────────────────────────▶ Access-Reject
//! ```
//! Push (number matching): when the user has an authenticator device, the
//! first answer's Reply-Message carries the number to type on it (a prompt
//! is sent then). The user answers the challenge with anything that is not
//! a TOTP code (e.g. just Enter); that request waits up to
//! [`PUSH_WAIT`] for the approval, then Access-Accept or Access-Reject.
//! A TOTP code is still accepted on the same challenge.
//! Packets from unknown addresses, with a missing or wrong
//! Message-Authenticator (RFC 3579 §3.2; which is also what a wrong shared
//! secret looks like), or that are not Access-Requests are silently
//! discarded, as the RFCs require: an answer could not be authenticated by
//! the NAS anyway, and silence gives an attacker nothing to measure.
//! The NAS's name is the sign-in's `application`, so conditional access
//! sees the VPN as the application.

pub mod http;
pub mod packet;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_core::secret::random_token;
use latchkey_core::VerifyMethod;
use latchkey_store::{new_id, AuditEntry, RadiusChallengeRecord, RadiusClientRecord};
use rand::rngs::OsRng;
use serde_json::json;
use tokio::net::UdpSocket;
use zeroize::Zeroizing;

use crate::app::{App, Principal, Proof, SignInContext};
use crate::error::{AppError, AppResult};
use packet::{Packet, ACCESS_ACCEPT, ACCESS_CHALLENGE, ACCESS_REJECT, ACCESS_REQUEST};

const STATE_PREFIX: &str = "lk_rs_";
/// How long the NAS (and its user) have to answer a challenge.
pub const CHALLENGE_SECS: i64 = 5 * 60;
/// Retransmissions within this window get the cached answer (RFC 5080 §2.2.2).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);
/// How long an answer to a push challenge waits for the approval. NAS
/// timeouts are usually 30 s or more; retransmissions meanwhile are ignored.
pub const PUSH_WAIT: Duration = Duration::from_secs(25);
/// Requests handled at once; more are dropped (the NAS retransmits).
const MAX_IN_FLIGHT: usize = 64;

impl App {
    // ---- NAS clients ---------------------------------------------------

    pub async fn add_radius_client(
        &self,
        p: &Principal,
        name: &str,
        ip: &str,
        secret: &str,
    ) -> AppResult<RadiusClientRecord> {
        p.require_admin()?;
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(AppError::InvalidRequest(
                "name must be 1-64 printable characters".into(),
            ));
        }
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| AppError::InvalidRequest(format!("'{ip}' is not an IP address")))?;
        // RFC 2865 §3: at least 16 octets; the secret is all that protects passwords.
        if secret.len() < 16 || secret.len() > 128 || secret.chars().any(|c| c.is_control()) {
            return Err(AppError::InvalidRequest(
                "the shared secret must be 16-128 printable characters".into(),
            ));
        }
        let id = new_id();
        let rec = RadiusClientRecord {
            id: id.clone(),
            name: name.to_owned(),
            ip: ip.to_string(),
            secret_sealed: self.keys.seal(secret.as_bytes(), &id),
            created_by: p.actor(),
            created_at: self.now(),
        };
        let mut tx = self.store.write().await?;
        tx.insert_radius_client(&rec).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "radius.client.create",
                format!("radius_client:{}", rec.name),
                json!({ "id": rec.id, "ip": rec.ip }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(rec)
    }

    pub async fn list_radius_clients(&self, p: &Principal) -> AppResult<Vec<RadiusClientRecord>> {
        p.require_admin()?;
        Ok(self.store.list_radius_clients().await?)
    }

    pub async fn remove_radius_client(&self, p: &Principal, id: &str) -> AppResult<()> {
        p.require_admin()?;
        let mut tx = self.store.write().await?;
        if !tx.delete_radius_client(id).await? {
            return Err(AppError::NotFound("RADIUS client".into()));
        }
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "radius.client.remove",
                format!("radius_client_id:{id}"),
                json!({}),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- one request ---------------------------------------------------

    /// Answer one datagram from `src`. `None`: discard silently.
    pub async fn radius_handle(&self, src: IpAddr, raw: &[u8]) -> AppResult<Option<Vec<u8>>> {
        let src = canonical_ip(src);
        let Some(nas) = self.store.radius_client_by_ip(&src.to_string()).await? else {
            tracing::warn!(%src, "RADIUS: request from an unknown client discarded");
            return Ok(None);
        };
        let secret = self.keys.open(&nas.secret_sealed, &nas.id)?;
        let Ok(req) = Packet::decode(raw) else {
            tracing::warn!(nas = %nas.name, "RADIUS: malformed packet discarded");
            return Ok(None);
        };
        if req.code != ACCESS_REQUEST {
            return Ok(None);
        }
        if !packet::verify_request_message_authenticator(raw, &secret) {
            tracing::warn!(nas = %nas.name, "RADIUS: missing or invalid Message-Authenticator (or wrong shared secret); discarded");
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
            Some(packet::sign_response(resp, &req.authenticator, &secret))
        };
        let reject = |message: &str| answer(ACCESS_REJECT, message, None);
        let username = match req.attr(packet::USER_NAME).map(std::str::from_utf8) {
            Some(Ok(u)) if !u.is_empty() => u.to_owned(),
            _ => return Ok(reject("User-Name is required")),
        };
        let Some(hidden) = req.attr(packet::USER_PASSWORD) else {
            return Ok(reject("Only PAP (User-Password) is supported"));
        };
        let password = match packet::decode_user_password(hidden, &secret, &req.authenticator) {
            Ok(p) => Zeroizing::new(p),
            Err(_) => return Ok(reject("Malformed User-Password")),
        };
        let Ok(password) = std::str::from_utf8(&password).map(|s| Zeroizing::new(s.to_owned())) else {
            return Ok(reject("Sign-in failed"));
        };
        // The end user's address when the NAS reports it (Calling-Station-Id
        // of a VPN is the client IP); otherwise the NAS's own address.
        let user_ip = req
            .attr(packet::CALLING_STATION_ID)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .unwrap_or(src);
        let ctx = SignInContext {
            application: Some(nas.name.clone()),
            source_ip: Some(user_ip.to_string()),
            device_id: None,
            continues_to: None,
        };
        let now = self.now();
        match req.attr(packet::STATE) {
            None => {
                match self.signin_start(&username, Some(&password), &ctx).await {
                    Ok(flow)
                        if flow.allowed_methods.contains(&VerifyMethod::Totp)
                            || flow.allowed_methods.contains(&VerifyMethod::Push) =>
                    {
                        let totp = flow.allowed_methods.contains(&VerifyMethod::Totp);
                        let mut message = "Enter the code from your authenticator app".to_owned();
                        if flow.allowed_methods.contains(&VerifyMethod::Push) {
                            match self.signin_push_start(&flow.flow_id, &ctx).await {
                                Ok(p) => {
                                    message =
                                        format!(
                                    "Approve in Latchkey Authenticator by typing {:02}, then press Enter here{}",
                                    p.number,
                                    if totp { " (or enter an authenticator app code)" } else { "" }
                                );
                                }
                                // Push suspended or rate-limited: the app code still works.
                                Err(e) if !totp => return Ok(reject(reject_message(&e))),
                                Err(_) => {}
                            }
                        }
                        let state = random_token(&mut OsRng, STATE_PREFIX);
                        let state_hash = self.hash("radius state", &state);
                        self.store
                            .insert_radius_challenge(
                                &state_hash,
                                &RadiusChallengeRecord {
                                    client_id: nas.id.clone(),
                                    username: username.clone(),
                                    flow_sealed: self.keys.seal(flow.flow_id.as_bytes(), &state_hash),
                                    expires_at: flow.expires_at.min(now + CHALLENGE_SECS),
                                },
                                now,
                            )
                            .await?;
                        Ok(answer(ACCESS_CHALLENGE, &message, Some(state.as_bytes())))
                    }
                    Ok(_) => Ok(reject("No authenticator app is registered for this account")),
                    Err(e) => Ok(reject(reject_message(&e))),
                }
            }
            Some(state) => {
                let Ok(state) = std::str::from_utf8(state) else {
                    return Ok(reject("Unknown or expired challenge"));
                };
                let state_hash = self.hash("radius state", state);
                let Some(ch) = self.store.take_radius_challenge(&state_hash, now).await? else {
                    return Ok(reject("Unknown or expired challenge; sign in again"));
                };
                if ch.client_id != nas.id || ch.username != username {
                    return Ok(reject("Unknown or expired challenge; sign in again"));
                }
                let flow_id = self.keys.open(&ch.flow_sealed, &state_hash)?;
                let flow_id = String::from_utf8_lossy(&flow_id).into_owned();
                let looks_like_code = latchkey_core::sms::normalize_code(&password).is_some();
                let result = if looks_like_code {
                    self.signin_verify(&flow_id, VerifyMethod::Totp, Proof::Code(password.to_string()), &ctx)
                        .await
                } else {
                    self.radius_wait_for_push(&flow_id, &ctx).await
                };
                match result {
                    Ok(o) if o.state == "complete" => Ok(answer(ACCESS_ACCEPT, "", None)),
                    Ok(_) => Ok(reject("Sign-in not complete")),
                    Err(e) => Ok(reject(reject_message(&e))),
                }
            }
        }
    }
}

impl App {
    /// Poll the flow's push step until it is answered or [`PUSH_WAIT`] ends.
    async fn radius_wait_for_push(&self, flow_id: &str, ctx: &SignInContext) -> AppResult<crate::app::VerifyOutcome> {
        let deadline = Instant::now() + PUSH_WAIT;
        loop {
            match self.signin_verify(flow_id, VerifyMethod::Push, Proof::Push, ctx).await {
                Err(AppError::PushPending) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(AppError::PushPending) => {
                    return Err(AppError::PushNotApproved { reason: "push_timeout" });
                }
                other => return other,
            }
        }
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn reject_message(e: &AppError) -> &'static str {
    match e {
        AppError::TooManyAttempts { .. } => "Too many failed attempts; try again later",
        AppError::CodeReplayed => "This code was already used; wait for the next one",
        AppError::PushNotApproved { .. } => "The push request was not approved",
        AppError::PushUnavailable(_) => "Push is unavailable for this account now; use an authenticator app code",
        AppError::Internal(_) => "Temporary server error",
        _ => "Sign-in failed",
    }
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
            let resp = match app.radius_handle(src.ip(), &data).await {
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
