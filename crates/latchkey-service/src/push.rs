//! Push approval with number matching: device enrollment, prompts for
//! sign-in (and RADIUS), the device's signed answers, and the fatigue rules.
//! The rules themselves are in `latchkey_core::push`; here they are applied
//! to what the store holds, in write transactions with their audit events.

use latchkey_core::push::{
    self, Decision, FatiguePolicy, PromptHistory, PromptStatus, PromptView, PushRefusal, PROMPT_LIFETIME_SECS,
};
use latchkey_core::secret::random_token;
use latchkey_core::{MethodKind, MethodState, VerifyMethod};
use latchkey_store::{
    method_id, new_id, AuditEntry, NewMethod, PushDeviceRecord, PushPromptRecord, SignInLogEntry, UserRecord,
};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::Serialize;
use serde_json::json;

use crate::app::{clean_label, App, Principal, SignInContext};
use crate::error::{ServiceError, ServiceResult};

pub const ENROLLMENT_PREFIX: &str = "lk_pe_";
pub const DEVICE_TOKEN_PREFIX: &str = "lk_pd_";

#[derive(Debug, Clone)]
pub struct PushConfig {
    pub fatigue: FatiguePolicy,
    pub prompt_lifetime_secs: i64,
    /// How long an enrollment QR code stays valid.
    pub enrollment_minutes: i64,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            fatigue: FatiguePolicy::default(),
            prompt_lifetime_secs: PROMPT_LIFETIME_SECS,
            enrollment_minutes: 10,
        }
    }
}

pub struct PushEnrollment {
    pub token: String,
    /// Opens the PWA, which reads the token from the fragment (never sent to
    /// the server in a request line, so it stays out of access logs).
    pub enrollment_url: String,
    pub expires_at: i64,
}

pub struct EnrolledDevice {
    pub method_id: String,
    pub username: String,
    /// The device's bearer token for its prompt stream (shown once).
    pub device_token: String,
}

/// A prompt as the device shows it. Never the number: the person must read
/// it off the sign-in screen.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DevicePrompt {
    pub id: String,
    pub challenge: String,
    pub username: String,
    pub application: Option<String>,
    pub source_ip: Option<String>,
    /// The named location the source IP falls in, if any.
    pub location: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What the sign-in screen shows while the prompt waits.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PushStart {
    pub prompt_id: String,
    /// Type this number on the authenticator.
    pub number: u8,
    pub status: String,
    pub expires_at: i64,
}

pub(crate) fn status_of(p: &PushPromptRecord) -> ServiceResult<PromptStatus> {
    Ok(PromptStatus::parse(&p.status)?)
}

fn history(records: &[PushPromptRecord], now: i64) -> ServiceResult<Vec<PromptHistory>> {
    records
        .iter()
        .map(|r| {
            let status = status_of(r)?.at(r.expires_at, now);
            Ok(PromptHistory {
                created_at: r.created_at,
                ended_at: r.ended_at.or((status == PromptStatus::Expired).then_some(r.expires_at)),
                status,
            })
        })
        .collect()
}

impl App {
    fn fatigue(&self) -> &FatiguePolicy {
        &self.config.push.fatigue
    }

    /// How far back the fatigue rules look.
    fn history_since(&self, now: i64) -> i64 {
        let f = self.fatigue();
        now - f.window_secs.max(f.suspend_window_secs) - self.config.push.prompt_lifetime_secs
    }

    // ---- enrollment ------------------------------------------------------

    /// A one-time enrollment token for the security-info QR code.
    pub async fn push_enrollment_start(
        &self,
        p: &Principal,
        username: &str,
        label: Option<String>,
    ) -> ServiceResult<PushEnrollment> {
        let user = self.user(username).await?;
        self.require_register(p, &user).await?;
        let label = clean_label(label, "Authenticator device")?;
        let token = random_token(&mut OsRng, ENROLLMENT_PREFIX);
        let now = self.now();
        let expires_at = now + self.config.push.enrollment_minutes * 60;
        let mut tx = self.store.write().await?;
        tx.insert_push_enrollment(&self.hash("push enrollment", &token), &user.id, &label, now, expires_at)
            .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "method.enroll.start",
                format!("user:{}", user.username),
                json!({ "kind": "push", "label": label, "expires_at": expires_at }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(PushEnrollment {
            enrollment_url: format!(
                "{}/authenticator#enroll={token}",
                self.config.public_url.trim_end_matches('/')
            ),
            token,
            expires_at,
        })
    }

    /// The device posts its public key with the enrollment token.
    pub async fn push_enrollment_finish(
        &self,
        token: &str,
        public_key: &[u8],
        label: Option<String>,
    ) -> ServiceResult<EnrolledDevice> {
        if !token.starts_with(ENROLLMENT_PREFIX) || token.len() > 200 {
            return Err(ServiceError::InvalidPass);
        }
        let key = push::parse_public_key(public_key)?;
        let now = self.now();
        let device_token = random_token(&mut OsRng, DEVICE_TOKEN_PREFIX);
        let id = method_id();
        let mut tx = self.store.write().await?;
        let Some((user_id, default_label)) = tx
            .take_push_enrollment(&self.hash("push enrollment", token), now)
            .await?
        else {
            return Err(ServiceError::InvalidPass);
        };
        let user = self
            .store
            .user_by_id(&user_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("user".into()))?;
        let label = clean_label(label.or(Some(default_label)), "Authenticator device")?;
        tx.insert_method(
            NewMethod {
                id: &id,
                user_id: &user.id,
                kind: MethodKind::Push,
                label: &label,
                state: MethodState::Active,
                secret_sealed: None,
                params: json!({}),
            },
            now,
        )
        .await?;
        tx.insert_push_device(&id, &user.id, &key, &self.hash("push device", &device_token), now)
            .await?;
        tx.audit(
            &AuditEntry::new(
                format!("user:{}", user.username),
                "method.add",
                format!("user:{}", user.username),
                json!({ "method_id": id, "kind": "push", "label": label }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.notify(
            &user.id,
            "outbox",
            "A new sign-in method was added to your account",
            &format!(
                "An authenticator device ('{label}') was registered for push approvals. If this was not you, call the helpdesk now."
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(EnrolledDevice {
            method_id: id,
            username: user.username,
            device_token,
        })
    }

    /// The device behind a bearer token.
    pub async fn push_device_auth(&self, bearer: &str) -> ServiceResult<PushDeviceRecord> {
        if !bearer.starts_with(DEVICE_TOKEN_PREFIX) || bearer.len() > 200 {
            return Err(ServiceError::Unauthenticated);
        }
        let d = self
            .store
            .push_device_by_token(&self.hash("push device", bearer))
            .await?
            .ok_or(ServiceError::Unauthenticated)?;
        self.store.touch_push_device(&d.method_id, self.now()).await?;
        Ok(d)
    }

    // ---- prompts -------------------------------------------------------

    async fn log_push(&self, user: &UserRecord, p: &PushPromptRecord, reason: &str, at: i64) -> ServiceResult<()> {
        let ctx = SignInContext {
            application: p.application.clone(),
            source_ip: p.source_ip.clone(),
            ..SignInContext::default()
        };
        let push = VerifyMethod::Push.as_str();
        crate::metrics::push_outcome(reason);
        self.record_signin(
            SignInLogEntry {
                at,
                user_id: Some(user.id.clone()),
                username: user.username.clone(),
                application: p.application.clone(),
                source_ip: p.source_ip.clone(),
                result: "failure".into(),
                reason: Some(reason.to_owned()),
                methods: vec![push.to_owned()],
                acr: None,
            },
            &ctx,
            &[push],
            None,
        )
        .await?;
        tracing::info!(user = %user.username, prompt = %p.id, reason, "push prompt not approved");
        Ok(())
    }

    /// Raise the suspension alert inside `tx` (audited there).
    async fn raise_suspension_alert(
        &self,
        tx: &mut latchkey_store::WriteTx,
        user: &UserRecord,
        last: &PushPromptRecord,
        now: i64,
    ) -> ServiceResult<()> {
        let f = self.fatigue();
        let details = json!({
            "reason": "repeated push denials or timeouts",
            "rejections": f.suspend_after,
            "window_secs": f.suspend_window_secs,
            "suspended_until": now + f.suspend_secs,
            "last_prompt_id": last.id,
            "application": last.application,
            "source_ip": last.source_ip,
        });
        let target = format!("user:{}", user.username);
        tx.insert_alert("push_suspended", "high", &target, &details, now)
            .await?;
        tx.audit(
            &AuditEntry::new(
                "system",
                "alert.raise",
                target,
                json!({ "kind": "push_suspended", "details": details }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        Ok(())
    }

    /// Mark this user's overdue prompts expired (timeouts), log them, and
    /// suspend push if they tip the fatigue rule.
    pub(crate) async fn settle_overdue_prompts(&self, user: &UserRecord) -> ServiceResult<()> {
        let now = self.now();
        let mut tx = self.store.write().await?;
        let before = tx.push_history(&user.id, self.history_since(now)).await?;
        let expired = tx.expire_push_prompts(&user.id, now).await?;
        if expired.is_empty() {
            return Ok(());
        }
        let mut hist: Vec<PromptHistory> = history(&before, now)?
            .into_iter()
            .zip(&before)
            .filter(|(_, r)| !expired.iter().any(|e| e.id == r.id))
            .map(|(h, _)| h)
            .collect();
        let mut suspended = false;
        for e in &expired {
            if !suspended
                && self
                    .fatigue()
                    .starts_suspension(&hist, PromptStatus::Expired, e.expires_at)
            {
                self.raise_suspension_alert(&mut tx, user, e, now).await?;
                suspended = true;
            }
            hist.push(PromptHistory {
                created_at: e.created_at,
                ended_at: Some(e.expires_at),
                status: PromptStatus::Expired,
            });
        }
        tx.audit(
            &AuditEntry::new(
                "system",
                "push.prompt.expire",
                format!("user:{}", user.username),
                json!({ "prompt_ids": expired.iter().map(|e| &e.id).collect::<Vec<_>>() }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        for e in &expired {
            self.log_push(user, e, "push_timeout", e.expires_at).await?;
        }
        Ok(())
    }

    /// Create a prompt for `user`, bound to `flow_key`, if the fatigue rules
    /// allow it. A pending prompt of the same flow is returned again (a
    /// refreshed sign-in page shows the same number).
    pub(crate) async fn create_push_prompt(
        &self,
        user: &UserRecord,
        flow_key: &str,
        ctx: &SignInContext,
    ) -> ServiceResult<PushPromptRecord> {
        if self.store.push_devices(&user.id).await?.is_empty() {
            return Err(ServiceError::InvalidState(
                "no authenticator device is registered".into(),
            ));
        }
        self.settle_overdue_prompts(user).await?;
        let location = self.named_location(ctx.source_ip.as_deref()).await?;
        let now = self.now();
        let mut tx = self.store.write().await?;
        let recent = tx.push_history(&user.id, self.history_since(now)).await?;
        if let Some(p) = recent
            .iter()
            .find(|p| p.flow_key == flow_key && p.status == PromptStatus::Pending.as_str())
        {
            return Ok(p.clone());
        }
        match self.fatigue().may_prompt(&history(&recent, now)?, now) {
            Ok(()) => {}
            Err(refusal) => {
                drop(tx);
                let (reason, msg) = match refusal {
                    PushRefusal::PromptPending => (
                        None,
                        "another push prompt is waiting for an answer; answer or let it expire first".to_owned(),
                    ),
                    PushRefusal::RateLimited { retry_after } => {
                        return Err(ServiceError::TooManyAttempts { retry_after });
                    }
                    PushRefusal::Suspended { until } => (
                        Some("push_suspended"),
                        format!(
                            "push is suspended for this account after repeated denied or unanswered prompts (until {}); use another method",
                            crate::time::rfc3339(until)
                        ),
                    ),
                };
                if let Some(reason) = reason {
                    let stub = PushPromptRecord {
                        id: String::new(),
                        user_id: user.id.clone(),
                        flow_key: flow_key.to_owned(),
                        number: 0,
                        challenge: String::new(),
                        application: ctx.application.clone(),
                        source_ip: ctx.source_ip.clone(),
                        location: None,
                        status: String::new(),
                        created_at: now,
                        expires_at: now,
                        ended_at: None,
                        answered_by: None,
                        used_at: None,
                    };
                    self.log_push(user, &stub, reason, now).await?;
                }
                return Err(ServiceError::PushUnavailable(msg));
            }
        }
        let mut challenge = [0u8; 32];
        OsRng.fill_bytes(&mut challenge);
        let prompt = PushPromptRecord {
            id: new_id(),
            user_id: user.id.clone(),
            flow_key: flow_key.to_owned(),
            number: push::generate_number(&mut OsRng) as i64,
            challenge: data_encoding::BASE64URL_NOPAD.encode(&challenge),
            application: ctx.application.clone(),
            source_ip: ctx.source_ip.clone(),
            location,
            status: PromptStatus::Pending.as_str().to_owned(),
            created_at: now,
            expires_at: now + self.config.push.prompt_lifetime_secs,
            ended_at: None,
            answered_by: None,
            used_at: None,
        };
        tx.insert_push_prompt(&prompt).await?;
        tx.audit(
            &AuditEntry::new(
                "system",
                "push.prompt",
                format!("user:{}", user.username),
                json!({ "prompt_id": prompt.id, "application": prompt.application, "source_ip": prompt.source_ip, "location": prompt.location, "expires_at": prompt.expires_at }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        crate::metrics::push_prompt(prompt.application.as_deref().unwrap_or("latchkey"));
        Ok(prompt)
    }

    /// A flow waiting for `method` as its next step, with its user: what
    /// push and phone-code sending start from. Returns (flow key, record, user).
    pub(crate) async fn flow_awaiting(
        &self,
        flow_id: &str,
        method: VerifyMethod,
    ) -> ServiceResult<(crate::signin::LoadedFlow, UserRecord)> {
        let loaded = self.load_flow(flow_id, None).await?;
        loaded.flow.check_allowed(method, self.now())?;
        let user = loaded.user.clone().ok_or(ServiceError::FlowNotFound)?;
        Ok((loaded, user))
    }

    /// `POST /signin/{flow}/push`: send a prompt; the screen shows the number.
    pub async fn signin_push_start(&self, flow_id: &str, ctx: &SignInContext) -> ServiceResult<PushStart> {
        let (loaded, user) = self.flow_awaiting(flow_id, VerifyMethod::Push).await?;
        let ctx = loaded.context(ctx);
        let p = self.create_push_prompt(&user, &loaded.key, &ctx).await?;
        Ok(PushStart {
            prompt_id: p.id,
            number: p.number as u8,
            status: p.status,
            expires_at: p.expires_at,
        })
    }

    /// `GET /signin/{flow}/push`: the prompt's state, for the waiting screen.
    pub async fn signin_push_status(&self, flow_id: &str) -> ServiceResult<PushStart> {
        let (loaded, user) = self.flow_awaiting(flow_id, VerifyMethod::Push).await?;
        let now = self.now();
        let mut p = self
            .store
            .push_prompt_for_flow(&loaded.key)
            .await?
            .ok_or_else(|| ServiceError::NotFound("push prompt for this sign-in".into()))?;
        if status_of(&p)?.at(p.expires_at, now) != status_of(&p)? {
            self.settle_overdue_prompts(&user).await?;
            p.status = PromptStatus::Expired.as_str().to_owned();
        }
        Ok(PushStart {
            prompt_id: p.id,
            number: p.number as u8,
            status: p.status,
            expires_at: p.expires_at,
        })
    }

    /// The verify step for push: succeeds once, when the flow's prompt was
    /// approved with the right number.
    pub(crate) async fn check_push(&self, flow_key: &str, user: Option<&UserRecord>, now: i64) -> ServiceResult<()> {
        let Some(user) = user else {
            return Err(ServiceError::FlowNotFound);
        };
        let p = self
            .store
            .push_prompt_for_flow(flow_key)
            .await?
            .filter(|p| p.user_id == user.id)
            .ok_or_else(|| {
                ServiceError::InvalidRequest("send a push prompt first (POST /signin/{flow_id}/push)".into())
            })?;
        match status_of(&p)?.at(p.expires_at, now) {
            PromptStatus::Pending => Err(ServiceError::PushPending),
            PromptStatus::Approved => {
                let mut tx = self.store.write().await?;
                if !tx.use_push_approval(&p.id, now).await? {
                    return Err(ServiceError::InvalidState("this approval was already used".into()));
                }
                tx.audit(
                    &AuditEntry::new(
                        format!("user:{}", user.username),
                        "push.approval.use",
                        format!("user:{}", user.username),
                        json!({ "prompt_id": p.id }),
                    ),
                    self.clock.now_ms(),
                )
                .await?;
                tx.commit().await?;
                Ok(())
            }
            status => {
                if status == PromptStatus::Expired && p.status == PromptStatus::Pending.as_str() {
                    self.settle_overdue_prompts(user).await?;
                }
                Err(ServiceError::PushNotApproved {
                    reason: status.signin_reason().unwrap_or("push_denied"),
                })
            }
        }
    }

    /// Pending prompts for a device's user, as the device shows them.
    pub async fn push_device_prompts(&self, device: &PushDeviceRecord) -> ServiceResult<Vec<DevicePrompt>> {
        let now = self.now();
        let user = self
            .store
            .user_by_id(&device.user_id)
            .await?
            .ok_or(ServiceError::Unauthenticated)?;
        Ok(self
            .store
            .pending_push_prompts(&device.user_id, now)
            .await?
            .into_iter()
            .map(|p| DevicePrompt {
                id: p.id,
                challenge: p.challenge,
                username: user.username.clone(),
                application: p.application,
                source_ip: p.source_ip,
                location: p.location,
                created_at: p.created_at,
                expires_at: p.expires_at,
            })
            .collect())
    }

    /// The device's signed answer. A bad signature changes nothing; a valid
    /// one moves the prompt to its final state (see `latchkey_core::push`).
    pub async fn push_answer(
        &self,
        device: &PushDeviceRecord,
        prompt_id: &str,
        decision: Decision,
        number: Option<u8>,
        signature: &[u8],
    ) -> ServiceResult<PromptStatus> {
        let now = self.now();
        let p = self
            .store
            .push_prompt(prompt_id)
            .await?
            .filter(|p| p.user_id == device.user_id)
            .ok_or_else(|| ServiceError::NotFound("push prompt".into()))?;
        let user = self
            .store
            .user_by_id(&device.user_id)
            .await?
            .ok_or(ServiceError::Unauthenticated)?;
        let payload = push::canonical_payload(&p.id, &p.challenge, number, decision);
        if push::verify_signature(&device.public_key, &payload, signature).is_err() {
            tracing::warn!(user = %user.username, prompt = %p.id, device = %device.method_id, "push answer with a bad signature");
            return Err(ServiceError::PushSignatureInvalid);
        }
        let view = PromptView {
            status: status_of(&p)?,
            number: p.number as u8,
            expires_at: p.expires_at,
        };
        let outcome = match push::answer(&view, decision, number, now) {
            Ok(o) => o,
            Err(e) => {
                if view.status == PromptStatus::Pending {
                    self.settle_overdue_prompts(&user).await?;
                }
                return Err(e.into());
            }
        };
        let target = format!("user:{}", user.username);
        let mut tx = self.store.write().await?;
        let before = tx.push_history(&user.id, self.history_since(now)).await?;
        if !tx
            .answer_push_prompt(&p.id, outcome.as_str(), &device.method_id, now)
            .await?
        {
            return Err(ServiceError::InvalidState(
                "the prompt was already answered or has expired".into(),
            ));
        }
        tx.audit(
            &AuditEntry::new(
                target.clone(),
                "push.answer",
                target.clone(),
                json!({ "prompt_id": p.id, "device": device.method_id, "decision": decision.as_str(), "outcome": outcome.as_str() }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        if outcome == PromptStatus::Reported {
            let details = json!({
                "reason": "the user reported a push prompt they did not start",
                "prompt_id": p.id,
                "application": p.application,
                "source_ip": p.source_ip,
                "location": p.location,
            });
            tx.insert_alert("push_reported", "high", &target, &details, now).await?;
            tx.audit(
                &AuditEntry::new(
                    target.clone(),
                    "alert.raise",
                    target.clone(),
                    json!({ "kind": "push_reported", "details": details }),
                ),
                self.clock.now_ms(),
            )
            .await?;
        }
        let before: Vec<PushPromptRecord> = before.into_iter().filter(|r| r.id != p.id).collect();
        if self.fatigue().starts_suspension(&history(&before, now)?, outcome, now) {
            self.raise_suspension_alert(&mut tx, &user, &p, now).await?;
        }
        tx.commit().await?;
        match outcome.signin_reason() {
            Some(reason) => self.log_push(&user, &p, reason, now).await?,
            None => crate::metrics::push_outcome("push_approved"),
        }
        Ok(outcome)
    }
}
