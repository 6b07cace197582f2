//! Sign-in: starting a flow with the first factor, verifying each step,
//! throttling guesses, and opening the session when the flow completes. The
//! flow's states are `latchkey_core::signin`'s.

use latchkey_core::otp::{self, OtpError, TotpParams};
use latchkey_core::password::verify_password;
use latchkey_core::secret::random_token;
use latchkey_core::signin::{SignInFlow, SignInState};
use latchkey_core::softlock::LockPolicy;
use latchkey_core::tap::{self, TapState};
use latchkey_core::{AuthStrength, MethodKind, MethodState, UserState, Username, VerifyMethod};
use latchkey_store::{new_id, AuditEntry, FlowRecord, MethodRecord, SessionRecord, SignInLogEntry, UserRecord};
use rand::rngs::OsRng;
use serde_json::json;
use zeroize::Zeroizing;

use crate::error::{ServiceError, ServiceResult};

use crate::app::*;

impl App {
    // ---- sign-in -------------------------------------------------------

    fn throttle_keys(&self, username: &str, ctx: &SignInContext) -> Vec<(String, LockPolicy)> {
        // A usernameless (passkey) flow has no name to count against yet.
        let mut keys: Vec<(String, LockPolicy)> = (!username.is_empty())
            .then(|| (user_key(username), self.config.user_lock))
            .into_iter()
            .collect();
        if let Some(ip) = &ctx.source_ip {
            keys.push((source_key(ip), self.config.source_lock));
        }
        keys
    }

    /// Count this attempt against the user and the source before verifying
    /// it; refuse it while either is locked.
    async fn begin_attempt(&self, username: &str, ctx: &SignInContext) -> ServiceResult<()> {
        let now = self.now();
        let mut counted = vec![];
        for (key, policy) in self.throttle_keys(username, ctx) {
            match self.store.begin_attempt(&key, &policy, now).await? {
                Ok(_) => counted.push(key),
                Err(wait) => {
                    for k in counted {
                        self.store.refund_attempt(&k).await?;
                    }
                    return Err(ServiceError::TooManyAttempts { retry_after: wait });
                }
            }
        }
        Ok(())
    }

    /// The attempt was right, or was not a guess at all (malformed input).
    async fn refund_attempt(&self, username: &str, ctx: &SignInContext) -> ServiceResult<()> {
        for (key, _) in self.throttle_keys(username, ctx) {
            self.store.refund_attempt(&key).await?;
        }
        Ok(())
    }

    /// Settle a counted attempt: refund it unless it was a wrong credential,
    /// which is logged as a failed sign-in step.
    async fn settle_attempt(
        &self,
        username: &str,
        user_id: Option<String>,
        ctx: &SignInContext,
        method: VerifyMethod,
        result: &ServiceResult<()>,
    ) -> ServiceResult<()> {
        match result {
            Err(
                e @ (ServiceError::InvalidCredentials
                | ServiceError::InvalidCode
                | ServiceError::CodeReplayed
                | ServiceError::InvalidPass
                | ServiceError::WebauthnRejected(_)
                | ServiceError::WebauthnCounterRegression),
            ) => {
                self.log_failure(username, user_id, ctx, method.as_str(), failure_reason(e))
                    .await
            }
            _ => self.refund_attempt(username, ctx).await,
        }
    }

    async fn log_failure(
        &self,
        username: &str,
        user_id: Option<String>,
        ctx: &SignInContext,
        method: &str,
        reason: &str,
    ) -> ServiceResult<()> {
        self.record_signin(
            SignInLogEntry {
                at: self.now(),
                user_id,
                username: username.to_owned(),
                application: ctx.application.clone(),
                source_ip: ctx.source_ip.clone(),
                result: "failure".into(),
                reason: Some(reason.to_owned()),
                methods: vec![],
                acr: None,
            },
            ctx,
            &[method],
            None,
        )
        .await?;
        tracing::info!(user = username, reason, "sign-in step failed");
        Ok(())
    }

    async fn verify_password_for(&self, user: Option<&UserRecord>, password: &str) -> ServiceResult<bool> {
        let phc = user
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let exists = user.is_some_and(|u| u.password_hash.is_some() && u.state == UserState::Active);
        let pw = Zeroizing::new(password.to_owned());
        let ok = tokio::task::spawn_blocking(move || verify_password(&phc, &pw))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(ok && exists)
    }

    /// Replace a hash made with older parameters, now that we know the password.
    async fn rehash_if_needed(&self, user: &UserRecord, password: &str) -> ServiceResult<()> {
        let Some(phc) = &user.password_hash else { return Ok(()) };
        if !self.config.password.needs_rehash(phc) {
            return Ok(());
        }
        let params = self.config.password;
        let pw = Zeroizing::new(password.to_owned());
        let new = tokio::task::spawn_blocking(move || params.hash(&pw))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let mut tx = self.store.write().await?;
        tx.set_password_hash(&user.id, &new, self.now()).await?;
        tx.audit(
            &AuditEntry::new(
                "system",
                "password.rehash",
                format!("user:{}", user.username),
                json!({ "params": params }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Active methods that can answer a second-factor step now (a recovery
    /// code set with no codes left cannot).
    pub async fn usable_second_factor_methods(&self, user: &UserRecord) -> ServiceResult<Vec<MethodRecord>> {
        let mut out = vec![];
        for m in self.store.methods_for_user(&user.id).await? {
            if m.state != MethodState::Active || m.kind.second_factor().is_none() {
                continue;
            }
            if m.kind == MethodKind::RecoveryCodes && self.store.recovery_codes_left(&m.id).await? == 0 {
                continue;
            }
            out.push(m);
        }
        Ok(out)
    }

    pub(crate) async fn second_factors(&self, user: &UserRecord) -> ServiceResult<Vec<VerifyMethod>> {
        let mut out = vec![];
        for m in self.usable_second_factor_methods(user).await? {
            if let Some(v) = m.kind.second_factor() {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        self.drop_forbidden_phone_methods(user, &mut out);
        // Strongest first, so clients can preselect it.
        out.sort_by_key(|v| match v {
            VerifyMethod::Webauthn => 0,
            VerifyMethod::Push => 1,
            VerifyMethod::Totp => 2,
            VerifyMethod::Sms | VerifyMethod::Voice => 3,
            _ => 4,
        });
        Ok(out)
    }

    async fn active_user(&self, username: &str) -> ServiceResult<Option<UserRecord>> {
        Ok(self
            .store
            .user_by_username(username)
            .await?
            .filter(|u| u.state == UserState::Active))
    }

    /// `POST /signin`. Unknown users get the same answers as known ones.
    pub async fn signin_start(
        &self,
        username: &str,
        password: Option<&str>,
        ctx: &SignInContext,
    ) -> ServiceResult<FlowView> {
        let name = Username::parse(username.trim())?;
        let username = name.as_str();
        let user = self.active_user(username).await?;
        let now = self.now();
        let mut flow = SignInFlow::start(now, AuthStrength::Mfa);
        if let Some(password) = password {
            self.begin_attempt(username, ctx).await?;
            let checked = match self.verify_password_for(user.as_ref(), password).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(ServiceError::InvalidCredentials),
                Err(e) => Err(e),
            };
            self.settle_attempt(
                username,
                user.as_ref().map(|u| u.id.clone()),
                ctx,
                VerifyMethod::Password,
                &checked,
            )
            .await?;
            checked?;
            let user = user.as_ref().expect("verified password implies a user");
            self.rehash_if_needed(user, password).await?;
            // Conditional access decides what this sign-in must prove.
            let decision = self.enforce_access(user, ctx).await?;
            let factors = self.second_factors(user).await?;
            flow =
                crate::policy::apply_decision(flow, &decision).step_verified(VerifyMethod::Password, &factors, now)?;
            self.check_step_up(user, &flow, &factors, &decision, ctx).await?;
        }
        self.persist_new_flow(flow, username, user.map(|u| u.id), ctx, now)
            .await
    }

    async fn persist_new_flow(
        &self,
        flow: SignInFlow,
        username: &str,
        user_id: Option<String>,
        ctx: &SignInContext,
        now: i64,
    ) -> ServiceResult<FlowView> {
        let flow_id = random_token(&mut OsRng, FLOW_PREFIX);
        let rec = FlowRecord {
            user_id,
            username: username.to_owned(),
            flow_json: serde_json::to_string(&flow).expect("flow serialises"),
            application: ctx.application.clone(),
            source_ip: ctx.source_ip.clone(),
            expires_at: flow.expires_at,
        };
        self.store.insert_flow(&self.hash("flow", &flow_id), &rec, now).await?;
        Ok(FlowView {
            flow_id,
            state: flow.state.name().to_owned(),
            allowed_methods: flow.state.allowed_methods(),
            expires_at: flow.expires_at,
        })
    }

    /// `POST /signin/{flow}/verify`: check one step, advance the flow, and
    /// on completion open a session.
    pub async fn signin_verify(
        &self,
        flow_id: &str,
        method: VerifyMethod,
        proof: Proof,
        ctx: &SignInContext,
    ) -> ServiceResult<VerifyOutcome> {
        let now = self.now();
        if !flow_id.starts_with(FLOW_PREFIX) || flow_id.len() > 128 {
            return Err(ServiceError::FlowNotFound);
        }
        let flow_hash = self.hash("flow", flow_id);
        let rec = self
            .store
            .flow(&flow_hash, now)
            .await?
            .ok_or(ServiceError::FlowNotFound)?;
        let flow: SignInFlow =
            serde_json::from_str(&rec.flow_json).map_err(|e| ServiceError::Internal(format!("stored flow: {e}")))?;
        flow.check_allowed(method, now)?;
        // The relying party may not change the context mid-flow.
        let ctx = SignInContext {
            application: rec.application.clone(),
            source_ip: ctx.source_ip.clone().or(rec.source_ip.clone()),
            device_id: ctx.device_id.clone(),
            continues_to: ctx.continues_to.clone(),
        };
        self.begin_attempt(&rec.username, &ctx).await?;
        let mut user = match &rec.user_id {
            Some(id) => self
                .store
                .user_by_id(id)
                .await?
                .filter(|u| u.state == UserState::Active),
            None => None,
        };
        let mut tap_used: Option<latchkey_store::TapRecord> = None;
        let mut step_amr: Vec<String> = vec![];
        // An async block, so a `?` inside still settles the counted attempt.
        let checked: ServiceResult<()> = async {
            match (method, &proof) {
                (VerifyMethod::Password, Proof::Password(pw)) => {
                    if self.verify_password_for(user.as_ref(), pw).await? {
                        Ok(())
                    } else {
                        Err(ServiceError::InvalidCredentials)
                    }
                }
                (VerifyMethod::Totp, Proof::Code(code)) => self.check_totp(user.as_ref(), code, now).await,
                (VerifyMethod::RecoveryCode, Proof::Code(code)) => {
                    let h = latchkey_core::recovery::hash_input(self.keys.pepper(), code)?;
                    match &user {
                        Some(u) if self.store.use_recovery_code(&u.id, &h, now).await? => Ok(()),
                        _ => Err(ServiceError::InvalidCode),
                    }
                }
                (VerifyMethod::TemporaryAccessPass, Proof::Pass(pass)) => {
                    let h = tap::hash_pass_input(self.keys.pepper(), pass)?;
                    match &user {
                        Some(u) => match self.store.tap_by_hash(&u.id, &h).await? {
                            Some(t)
                                if tap::tap_state(t.starts_at, t.expires_at, t.single_use, t.used_at, now)
                                    == TapState::Usable =>
                            {
                                tap_used = Some(t);
                                Ok(())
                            }
                            _ => Err(ServiceError::InvalidPass),
                        },
                        None => Err(ServiceError::InvalidPass),
                    }
                }
                (VerifyMethod::Push, Proof::Push) => self.check_push(&flow_hash, user.as_ref(), now).await,
                (VerifyMethod::Sms | VerifyMethod::Voice, Proof::Code(code)) => {
                    self.check_phone_code(&flow_hash, user.as_ref(), code, now).await
                }
                (VerifyMethod::Webauthn, Proof::Assertion(a)) => {
                    let o = self.check_webauthn_assertion(flow_id, &rec, &flow, a, now).await?;
                    step_amr = o.amr;
                    // A usernameless flow learns its user from the passkey.
                    user = Some(o.user);
                    Ok(())
                }
                _ => Err(ServiceError::InvalidRequest(format!(
                    "method '{}' needs its matching field",
                    method.as_str()
                ))),
            }
        }
        .await;
        self.settle_attempt(&rec.username, rec.user_id.clone(), &ctx, method, &checked)
            .await?;
        checked?;
        let user = user.expect("a verified step implies a user");
        // Re-evaluated at every step, so a policy change applies to flows in progress.
        let decision = self.enforce_access(&user, &ctx).await?;
        let factors = self.second_factors(&user).await?;
        let next = crate::policy::apply_decision(flow.clone(), &decision)
            .step_verified_with_amr(method, &step_amr, &factors, now)?;
        self.check_step_up(&user, &next, &factors, &decision, &ctx).await?;
        let next_json = serde_json::to_string(&next).expect("flow serialises");
        if !self.store.update_flow(&flow_hash, &rec.flow_json, &next_json).await? {
            return Err(ServiceError::InvalidState(
                "this sign-in was advanced by another request; start again".into(),
            ));
        }
        let mut outcome = VerifyOutcome {
            flow_id: flow_id.to_owned(),
            state: next.state.name().to_owned(),
            allowed_methods: next.state.allowed_methods(),
            amr: next.amr(),
            methods: next.methods.clone(),
            acr: None,
            session_token: None,
            session_expires_at: None,
            registration_campaigns: vec![],
        };
        if let SignInState::Complete { acr } = next.state {
            outcome.registration_campaigns = self.registration_nudges(&user).await?;
            let (token, expires_at) = self
                .open_session(&user, &next, acr, tap_used.as_ref(), &ctx, Some(&decision))
                .await?;
            if decision.break_glass {
                self.record_break_glass_use(&user, &ctx).await?;
            }
            self.store.delete_flow(&flow_hash).await?;
            self.store.clear_throttle(&user_key(&user.username)).await?;
            outcome.acr = Some(acr);
            outcome.session_token = Some(token);
            outcome.session_expires_at = Some(expires_at);
        }
        Ok(outcome)
    }

    /// Verify a TOTP code for a user against every active TOTP method,
    /// advancing the durable replay guard. Used by sign-in (and RADIUS, bench).
    pub async fn check_totp(&self, user: Option<&UserRecord>, code: &str, now: i64) -> ServiceResult<()> {
        let Some(user) = user else {
            // Same shape checks as for a real user, then the same answer.
            let _ = otp::verify_totp(&[0u8; 20], code, now.max(0) as u64, &TotpParams::default(), 1, None)?;
            return Err(ServiceError::InvalidCode);
        };
        let mut replayed = false;
        let mut malformed: Option<OtpError> = None;
        for m in self.store.methods_for_user(&user.id).await? {
            if m.kind != MethodKind::Totp || m.state != MethodState::Active {
                continue;
            }
            let (secret, params) = self.totp_secret(&m)?;
            let last = m.last_used_step.map(|s| s.max(0) as u64);
            match otp::verify_totp(&secret, code, now.max(0) as u64, &params, self.config.totp_window, last) {
                Ok(step) => {
                    // The store has the last word: another node may have
                    // accepted this step a moment ago.
                    if self.store.advance_totp_step(&m.id, step as i64, now).await? {
                        return Ok(());
                    }
                    replayed = true;
                }
                Err(OtpError::Replayed) => replayed = true,
                Err(e @ OtpError::Malformed { .. }) => malformed = Some(e),
                Err(_) => {}
            }
        }
        if replayed {
            Err(ServiceError::CodeReplayed)
        } else if let Some(e) = malformed {
            Err(e.into())
        } else {
            Err(ServiceError::InvalidCode)
        }
    }

    async fn open_session(
        &self,
        user: &UserRecord,
        flow: &SignInFlow,
        acr: AuthStrength,
        tap_used: Option<&latchkey_store::TapRecord>,
        ctx: &SignInContext,
        decision: Option<&latchkey_core::policy::Decision>,
    ) -> ServiceResult<(String, i64)> {
        let now = self.now();
        let token = random_token(&mut OsRng, SESSION_PREFIX);
        let mut expires_at = now + self.config.session_absolute_secs;
        if let Some(f) = decision.and_then(|d| d.sign_in_frequency_secs) {
            // Sign-in frequency: the session ends when the policy wants a new sign-in.
            expires_at = expires_at.min(now + f);
        }
        if let Some(t) = tap_used {
            // A TAP session exists to register methods; it ends with the pass.
            expires_at = expires_at.min(t.expires_at);
        }
        let session = SessionRecord {
            id: new_id(),
            user_id: user.id.clone(),
            amr: flow.amr(),
            methods: flow.methods.iter().map(|m| m.as_str().to_owned()).collect(),
            acr: acr.as_str().to_owned(),
            authenticated_at: now,
            idle_expires_at: (now + self.config.session_idle_secs).min(expires_at),
            expires_at,
        };
        let mut tx = self.store.write().await?;
        if let Some(t) = tap_used {
            if !tx.use_tap(&t.id, now).await? {
                // Another node spent this single-use pass first.
                drop(tx);
                self.store
                    .record_failure(&user_key(&user.username), &self.config.user_lock, now)
                    .await?;
                self.log_failure(
                    &user.username,
                    Some(user.id.clone()),
                    ctx,
                    VerifyMethod::TemporaryAccessPass.as_str(),
                    "invalid_pass",
                )
                .await?;
                return Err(ServiceError::InvalidPass);
            }
            tx.audit(
                &AuditEntry::new(
                    format!("user:{}", user.username),
                    "tap.use",
                    format!("user:{}", user.username),
                    json!({ "tap_id": t.id }),
                ),
                self.clock.now_ms(),
            )
            .await?;
        }
        tx.insert_session(
            &self.hash("session", &token),
            &session,
            ctx.source_ip.as_deref(),
            ctx.device_id.as_deref(),
        )
        .await?;
        tx.audit(
            &AuditEntry::new(
                format!("user:{}", user.username),
                "session.create",
                format!("user:{}", user.username),
                json!({ "session_id": session.id, "acr": session.acr, "amr": session.amr, "application": ctx.application, "source_ip": ctx.source_ip }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.log_session_signin(&user, ctx, &session, None, decision).await?;
        Ok((token, expires_at))
    }

    /// A successful sign-in on the log: a new session, or (with a reason)
    /// an existing one reused for another application.
    pub(crate) async fn log_session_signin(
        &self,
        user: &UserRecord,
        ctx: &SignInContext,
        session: &SessionRecord,
        reason: Option<&str>,
        decision: Option<&latchkey_core::policy::Decision>,
    ) -> ServiceResult<()> {
        let tried: Vec<&str> = session.methods.iter().map(String::as_str).collect();
        self.record_signin(
            SignInLogEntry {
                at: self.now(),
                user_id: Some(user.id.clone()),
                username: user.username.clone(),
                application: ctx.application.clone(),
                source_ip: ctx.source_ip.clone(),
                result: "success".into(),
                reason: reason.map(str::to_owned),
                methods: session.methods.clone(),
                acr: Some(session.acr.clone()),
            },
            ctx,
            &tried,
            decision,
        )
        .await
    }
}

/// Whether the caller is a session opened with a Temporary Access Pass.
pub(crate) fn via_tap(p: &Principal) -> bool {
    matches!(p, Principal::Session { session, .. } if session.methods.iter().any(|m| m == VerifyMethod::TemporaryAccessPass.as_str()))
}

fn failure_reason(e: &ServiceError) -> &'static str {
    match e {
        ServiceError::InvalidCredentials => "invalid_credentials",
        ServiceError::CodeReplayed => "code_replayed",
        ServiceError::InvalidPass => "invalid_pass",
        ServiceError::WebauthnRejected(_) => "webauthn_rejected",
        ServiceError::WebauthnCounterRegression => "webauthn_counter_regression",
        _ => "invalid_code",
    }
}
