//! RADIUS sign-ins as the service sees them: the NAS clients an
//! administrator registers, and one Access-Request's decision. The codec and
//! the UDP server live in `latchkey-radius`; this module never sees a packet.
//!
//! ```text
//!  Access-Request(User-Name, password)            no State
//!     │  App::signin_start  (same throttles, lockouts and sign-in log as HTTP)
//!     ├─ wrong / locked / no authenticator app ─────────▶ Reject
//!     └─ second_factor_required ───────────────────────▶ Challenge(state, message)
//!  Access-Request(User-Name, TOTP code or Enter, State)
//!     │  challenge taken once from the DB (any node can answer)
//!     │  App::signin_verify(totp) or wait for the push approval
//!     ├─ complete ─────────────────────────────────────▶ Accept
//!     └─ anything else ────────────────────────────────▶ Reject
//! ```
//! Push (number matching): when the user has an authenticator device, the
//! challenge message carries the number to type on it (a prompt is sent
//! then). The user answers with anything that is not a TOTP code (e.g. just
//! Enter); that request waits up to [`PUSH_WAIT`] for the approval. A TOTP
//! code is still accepted on the same challenge. The NAS's name is the
//! sign-in's `application`, so conditional access sees the VPN as the
//! application.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use latchkey_core::secret::random_token;
use latchkey_core::VerifyMethod;
use latchkey_store::{new_id, AuditEntry, RadiusChallengeRecord, RadiusClientRecord};
use rand::rngs::OsRng;
use serde_json::json;
use zeroize::Zeroizing;

use crate::app::{App, Principal, Proof, SignInContext, VerifyOutcome};
use crate::error::{ServiceError, ServiceResult};

const STATE_PREFIX: &str = "lk_rs_";
/// How long the NAS (and its user) have to answer a challenge.
pub const CHALLENGE_SECS: i64 = 5 * 60;
/// How long an answer to a push challenge waits for the approval. NAS
/// timeouts are usually 30 s or more; retransmissions meanwhile are ignored.
pub const PUSH_WAIT: Duration = Duration::from_secs(25);

/// A registered NAS with its shared secret opened.
pub struct Nas {
    pub client: RadiusClientRecord,
    pub secret: Zeroizing<Vec<u8>>,
}

/// What an Access-Request carries, decoded by the transport.
pub struct AccessRequest {
    pub username: String,
    pub password: Zeroizing<String>,
    /// Who the NAS says is calling (Calling-Station-Id): an IP address for
    /// a VPN, a MAC address for Wi-Fi or a switch port, a phone number for
    /// dial-up. An opaque label, unless it parses as an IP address.
    pub calling_station: Option<String>,
    /// The State of a challenge this request answers.
    pub state: Option<Vec<u8>>,
}

/// The service's answer; the transport encodes it.
#[derive(Debug, PartialEq, Eq)]
pub enum AccessAnswer {
    Accept,
    Reject(&'static str),
    Challenge { state: String, message: String },
}

impl App {
    // ---- NAS clients ---------------------------------------------------

    pub async fn add_radius_client(
        &self,
        p: &Principal,
        name: &str,
        ip: &str,
        secret: &str,
    ) -> ServiceResult<RadiusClientRecord> {
        p.require_admin()?;
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(ServiceError::InvalidRequest(
                "name must be 1-64 printable characters".into(),
            ));
        }
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| ServiceError::InvalidRequest(format!("'{ip}' is not an IP address")))?;
        // RFC 2865 §3: at least 16 octets; the secret is all that protects passwords.
        if secret.len() < 16 || secret.len() > 128 || secret.chars().any(|c| c.is_control()) {
            return Err(ServiceError::InvalidRequest(
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

    pub async fn list_radius_clients(&self, p: &Principal) -> ServiceResult<Vec<RadiusClientRecord>> {
        p.require_admin()?;
        Ok(self.store.list_radius_clients().await?)
    }

    pub async fn remove_radius_client(&self, p: &Principal, id: &str) -> ServiceResult<()> {
        p.require_admin()?;
        let mut tx = self.store.write().await?;
        if !tx.delete_radius_client(id).await? {
            return Err(ServiceError::NotFound("RADIUS client".into()));
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
}

impl App {
    /// The NAS registered for `src` (IPv4-mapped addresses count as IPv4).
    pub async fn radius_nas(&self, src: IpAddr) -> ServiceResult<Option<Nas>> {
        let src = canonical_ip(src);
        let Some(client) = self.store.radius_client_by_ip(&src.to_string()).await? else {
            return Ok(None);
        };
        let secret = self.keys.open(&client.secret_sealed, &client.id)?;
        Ok(Some(Nas { client, secret }))
    }

    /// Decide one Access-Request from `nas`.
    pub async fn radius_access_request(
        &self,
        nas: &RadiusClientRecord,
        req: AccessRequest,
    ) -> ServiceResult<AccessAnswer> {
        let AccessRequest {
            username,
            password,
            calling_station,
            state,
        } = req;
        let ctx = SignInContext {
            application: Some(nas.name.clone()),
            source_ip: signin_source(calling_station.as_deref()),
            ..Default::default()
        };
        let now = self.now();
        let reject = |m: &'static str| Ok(AccessAnswer::Reject(m));
        match state {
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
                                Err(e) if !totp => return reject(reject_message(&e)),
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
                        Ok(AccessAnswer::Challenge { state, message })
                    }
                    Ok(_) => reject("No authenticator app is registered for this account"),
                    Err(e) => reject(reject_message(&e)),
                }
            }
            Some(state) => {
                let Ok(state) = std::str::from_utf8(&state) else {
                    return reject("Unknown or expired challenge");
                };
                let state_hash = self.hash("radius state", state);
                let Some(ch) = self.store.take_radius_challenge(&state_hash, now).await? else {
                    return reject("Unknown or expired challenge; sign in again");
                };
                if ch.client_id != nas.id || ch.username != username {
                    return reject("Unknown or expired challenge; sign in again");
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
                    Ok(o) if o.state == "complete" => Ok(AccessAnswer::Accept),
                    Ok(_) => reject("Sign-in not complete"),
                    Err(e) => reject(reject_message(&e)),
                }
            }
        }
    }
}

impl App {
    /// Poll the flow's push step until it is answered or [`PUSH_WAIT`] ends.
    async fn radius_wait_for_push(&self, flow_id: &str, ctx: &SignInContext) -> ServiceResult<VerifyOutcome> {
        let deadline = Instant::now() + PUSH_WAIT;
        loop {
            match self.signin_verify(flow_id, VerifyMethod::Push, Proof::Push, ctx).await {
                Err(ServiceError::PushPending) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(ServiceError::PushPending) => {
                    return Err(ServiceError::PushNotApproved { reason: "push_timeout" });
                }
                other => return other,
            }
        }
    }
}

/// The sign-in's source (its per-source throttle, its sign-in log entry and
/// the address conditional access sees): what the NAS reports as the
/// Calling-Station-Id, an IP address in canonical form or otherwise the
/// label as sent. Never the NAS's own address: behind a VPN concentrator
/// every user shares it, and one attacker's wrong passwords would lock the
/// source for all of them. Without a Calling-Station-Id only the per-user
/// lock applies, and conditional access sees an unknown (untrusted) place.
fn signin_source(calling_station: Option<&str>) -> Option<String> {
    let label = calling_station?.trim();
    let source = match label.parse::<IpAddr>() {
        Ok(ip) => canonical_ip(ip).to_string(),
        // Bounded: the attribute may be up to 253 octets of anything.
        Err(_) => label.chars().filter(|c| !c.is_control()).take(64).collect(),
    };
    (!source.is_empty()).then_some(source)
}

/// IPv4-mapped IPv6 addresses are their IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn reject_message(e: &ServiceError) -> &'static str {
    match e {
        ServiceError::TooManyAttempts { .. } => "Too many failed attempts; try again later",
        ServiceError::CodeReplayed => "This code was already used; wait for the next one",
        ServiceError::PushNotApproved { .. } => "The push request was not approved",
        ServiceError::PushUnavailable(_) => "Push is unavailable for this account now; use an authenticator app code",
        ServiceError::Internal(_) => "Temporary server error",
        _ => "Sign-in failed",
    }
}
