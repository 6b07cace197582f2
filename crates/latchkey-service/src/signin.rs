//! Sign-in: starting a flow with the first factor, verifying each step,
//! throttling guesses, and opening the session when the flow completes. The
//! flow's states are `latchkey_core::signin`'s.
//!
//! One step, one transaction. A step reads what it needs first (the flow
//! with its user, the user's methods, the policy generation, the risk facts)
//! and then writes everything in one transaction: throttle bookkeeping, the
//! replay guard or single-use secret, the flow's compare-and-swap (a delete
//! when it completes), the session, the sign-in log row and the audit events.
//!
//! ```text
//!   TOTP, recovery code, TAP:   reads ─▶ [ lock · throttle check · verify · CAS · session · log ] ─▶ queue
//!   password, push, phone code,  reads ─▶ [ count attempt ] ─▶ verify (Argon2 bounded, outside any
//!   WebAuthn:                              write transaction) ─▶ [ refund · CAS · session · log ] ─▶ queue
//! ```
//! Where the proof is checked inside the transaction, the audit-head lock
//! serialises steps, so the throttle is checked and a failure counted
//! atomically with the check. Where it is checked outside (slow, or with its
//! own single-use statement), the attempt is counted before it is checked, so
//! parallel guesses cannot outrun the lock, and refunded when it was right.
//! Detections over the logged row run after the response (`crate::ops`).

use std::sync::Arc;
use std::time::Duration;

use latchkey_core::device::{DeviceClaim, DeviceProof};
use latchkey_core::otp::{self, OtpError, TotpParams};
use latchkey_core::password::verify_password;
use latchkey_core::policy::{Decision, RiskLevel};
use latchkey_core::secret::random_token;
use latchkey_core::signin::{self as core_signin, SessionLimits, SignInFlow, SignInState};
use latchkey_core::softlock::{self, Familiarity, LockPolicy};
use latchkey_core::tap::{self, TapState};
use latchkey_core::{AuthStrength, MethodKind, MethodState, UserState, Username, VerifyMethod};
use latchkey_store::{
    new_id, AuditEntry, FlowRecord, MethodRecord, SessionRecord, SignInLogEntry, TapRecord, ThrottleRow, UserRecord,
    WriteTx,
};
use rand::rngs::OsRng;
use serde_json::json;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::app::*;
use crate::error::{ServiceError, ServiceResult};
use crate::history::WebFlow;
use crate::ops::LoggedSignIn;
use crate::policy::CachedPolicies;

/// A stored sign-in flow, parsed, with its user: what every step starts from.
pub(crate) struct LoadedFlow {
    /// The keyed hash the flow is stored under.
    pub(crate) key: String,
    pub(crate) rec: FlowRecord,
    pub(crate) flow: SignInFlow,
    /// The user the flow names, as stored (any state).
    pub(crate) user: Option<UserRecord>,
    /// Whether that user signed in successfully from this step's source
    /// recently (which of their lock counters the step counts against).
    pub(crate) familiarity: Familiarity,
}

impl LoadedFlow {
    /// The context a step runs in: the relying party may not change it
    /// mid-flow, the source address only fills in what the flow lacks.
    pub(crate) fn context(&self, ctx: &SignInContext) -> SignInContext {
        SignInContext {
            application: self.rec.application.clone(),
            source_ip: ctx.source_ip.clone().or(self.rec.source_ip.clone()),
            device: ctx.device.clone(),
            unproven_device_id: ctx.unproven_device_id.clone(),
            continues_to: ctx.continues_to.clone(),
        }
    }
}

/// Bounded concurrent password hashing: Argon2 takes its memory cost per
/// hash (19 MiB by default), so a burst of sign-ins must queue instead of
/// taking the machine's memory. Past the wait a caller is told to retry.
pub struct PasswordSlots {
    slots: Arc<Semaphore>,
    size: usize,
    wait: Duration,
}

impl PasswordSlots {
    /// `slots` = 0: one per core.
    pub fn new(slots: usize, wait: Duration) -> Self {
        let size = if slots == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            slots
        };
        Self {
            slots: Arc::new(Semaphore::new(size)),
            size,
            wait,
        }
    }

    /// Run `work` (Argon2) on the blocking pool once a slot is free.
    pub(crate) async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> ServiceResult<T> {
        let permit = match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(p) => p.map_err(|e| ServiceError::Internal(e.to_string()))?,
            Err(_) => {
                tracing::warn!("password checks are at their bound; asking the client to retry");
                return Err(ServiceError::Busy {
                    retry_after: self.wait.as_secs().max(1) as i64,
                });
            }
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// Take every slot (tests: a machine busy hashing).
    #[cfg(feature = "test-support")]
    pub async fn occupy(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_many_owned(self.size as u32)
            .await
            .expect("slots are never closed")
    }
}

impl std::fmt::Debug for PasswordSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordSlots")
            .field("size", &self.size)
            .field("wait", &self.wait)
            .finish()
    }
}

/// What a verified step leads to, decided before anything is written.
enum Advance {
    /// The flow moves on.
    Next(SignInFlow),
    /// Conditional access or an unreachable strength ends the sign-in:
    /// logged as a failure with this reason.
    Refused(&'static str, ServiceError),
}

impl App {
    // ---- the flow repository -------------------------------------------

    /// The stored key of a flow id, or `FlowNotFound` for anything that is
    /// not one of ours.
    fn flow_key(&self, flow_id: &str) -> ServiceResult<String> {
        if !flow_id.starts_with(FLOW_PREFIX) || flow_id.len() > 128 {
            return Err(ServiceError::FlowNotFound);
        }
        Ok(self.hash_flow(flow_id))
    }

    /// Load a flow that has not expired, with its user and how familiar
    /// `source` (the flow's own when `None`) is to them, in one read.
    pub(crate) async fn load_flow(&self, flow_id: &str, source: Option<&str>) -> ServiceResult<LoadedFlow> {
        let key = self.flow_key(flow_id)?;
        let now = self.now();
        let (rec, user, familiar) = self
            .store
            .flow_with_user(&key, now, source, Familiarity::window_start(now))
            .await?
            .ok_or(ServiceError::FlowNotFound)?;
        let flow: SignInFlow =
            serde_json::from_str(&rec.flow_json).map_err(|e| ServiceError::Internal(format!("stored flow: {e}")))?;
        Ok(LoadedFlow {
            key,
            rec,
            flow,
            user,
            familiarity: Familiarity::of(familiar),
        })
    }

    /// Store a new flow; its id is returned once, in the view.
    pub(crate) async fn insert_flow(
        &self,
        tx: &mut WriteTx,
        flow: &SignInFlow,
        username: &str,
        user_id: Option<String>,
        ctx: &SignInContext,
    ) -> ServiceResult<FlowView> {
        let flow_id = random_token(&mut OsRng, FLOW_PREFIX);
        let rec = FlowRecord {
            user_id,
            username: username.to_owned(),
            flow_json: serde_json::to_string(flow).expect("flow serialises"),
            application: ctx.application.clone(),
            source_ip: ctx.source_ip.clone(),
            expires_at: flow.expires_at,
        };
        tx.insert_flow(&self.hash_flow(&flow_id), &rec, self.now()).await?;
        Ok(FlowView {
            flow_id,
            state: flow.state.name().to_owned(),
            allowed_methods: flow.state.allowed_methods(),
            expires_at: flow.expires_at,
        })
    }

    /// Compare-and-swap the flow to `next`, or delete it (`None`: it
    /// completed). Another request that moved it first wins.
    pub(crate) async fn swap_flow(
        &self,
        tx: &mut WriteTx,
        loaded: &LoadedFlow,
        next: Option<&SignInFlow>,
    ) -> ServiceResult<()> {
        let next_json = next.map(|f| serde_json::to_string(f).expect("flow serialises"));
        if tx
            .swap_flow(&loaded.key, &loaded.rec.flow_json, next_json.as_deref())
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::InvalidState(
                "this sign-in was advanced by another request; start again".into(),
            ))
        }
    }

    /// The state of a flow this browser holds, without advancing it.
    pub async fn signin_flow_state(&self, flow_id: &str) -> ServiceResult<WebFlow> {
        let loaded = self.load_flow(flow_id, None).await?;
        if loaded.flow.is_expired(self.now()) {
            return Err(ServiceError::FlowNotFound);
        }
        let now = self.now();
        let pass_first = match loaded.user.as_ref().filter(|u| u.state == UserState::Active) {
            Some(u) if matches!(loaded.flow.state, SignInState::Started) => {
                u.password_hash.is_none()
                    || self.store.taps_for_user(&u.id).await?.iter().any(|t| {
                        tap::tap_state(t.starts_at, t.expires_at, t.single_use, t.used_at, now) == TapState::Usable
                    })
            }
            _ => false,
        };
        Ok(WebFlow {
            username: loaded.rec.username,
            flow: loaded.flow,
            pass_first,
        })
    }

    // ---- throttling ----------------------------------------------------

    /// The counters an attempt is counted against: the user's counter for
    /// sources of this familiarity (smart lock-out, `softlock`) and the
    /// source's.
    fn throttle_keys(
        &self,
        username: &str,
        familiarity: Familiarity,
        ctx: &SignInContext,
    ) -> Vec<(String, LockPolicy)> {
        // A usernameless (passkey) flow has no name to count against yet.
        let mut keys: Vec<(String, LockPolicy)> = (!username.is_empty())
            .then(|| (softlock::user_counter(username, familiarity), self.config.user_lock))
            .into_iter()
            .collect();
        if let Some(ip) = &ctx.source_ip {
            keys.push((source_key(ip), self.config.source_lock));
        }
        keys
    }

    /// Count an attempt whose proof is checked outside the step transaction
    /// *before* checking it; refuse it while any key is locked.
    async fn count_attempt(&self, keys: &[(String, LockPolicy)]) -> ServiceResult<Vec<ThrottleRow>> {
        let now = self.now();
        let names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
        let mut tx = self.store.bookkeeping().await?;
        let counted = tx.count_attempts(&names, now).await?;
        if counted.len() < names.len() {
            let rows = tx.throttle(&names).await?;
            drop(tx); // nothing counted
            let wait = softlock::check_all(rows.iter().map(|r| r.locked_until), now)
                .err()
                .unwrap_or(1);
            return Err(ServiceError::TooManyAttempts { retry_after: wait });
        }
        for r in &counted {
            if let Some(until) = lock_policy(keys, &r.key).locked_until(r.failures, now) {
                tx.extend_lock(&r.key, until).await?;
            }
        }
        tx.commit_bookkeeping().await?;
        Ok(counted)
    }

    /// Inside the step transaction: refuse the step while any key is locked.
    /// Returns the counters that exist.
    async fn check_throttle(
        &self,
        tx: &mut WriteTx,
        keys: &[(String, LockPolicy)],
        now: i64,
    ) -> ServiceResult<Vec<ThrottleRow>> {
        let names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
        let rows = tx.throttle(&names).await?;
        softlock::check_all(rows.iter().map(|r| r.locked_until), now)
            .map_err(|wait| ServiceError::TooManyAttempts { retry_after: wait })?;
        Ok(rows)
    }

    /// Inside the step transaction: count a wrong proof, locking as the
    /// schedule says.
    async fn count_failure(&self, tx: &mut WriteTx, keys: &[(String, LockPolicy)], now: i64) -> ServiceResult<()> {
        for (key, policy) in keys {
            let failures = tx.count_failure(key, now).await?;
            if let Some(until) = policy.locked_until(failures, now) {
                tx.extend_lock(key, until).await?;
            }
        }
        Ok(())
    }

    /// An attempt counted before its check that was not a wrong proof
    /// (right, malformed, or refused as busy) is given back.
    async fn refund_attempt(&self, counted: &[ThrottleRow]) -> ServiceResult<()> {
        let mut tx = self.store.bookkeeping().await?;
        tx.refund_attempts(counted).await?;
        tx.commit_bookkeeping().await?;
        Ok(())
    }

    /// A wrong proof: log the failed step (in `tx`, which is committed) and
    /// answer `e`.
    #[allow(clippy::too_many_arguments)]
    async fn fail_step<T>(
        &self,
        mut tx: WriteTx,
        c: &CachedPolicies,
        username: &str,
        user_id: Option<String>,
        ctx: &SignInContext,
        method: VerifyMethod,
        e: ServiceError,
    ) -> ServiceResult<T> {
        let reason = failure_reason(&e);
        let logged = self
            .log_signin_in(
                &mut tx,
                c,
                failure_entry(self.now(), username, user_id, ctx, reason),
                ctx,
                &[method.as_str()],
                None,
                None,
            )
            .await?;
        tx.commit_bookkeeping().await?;
        self.signin_logged(logged).await;
        tracing::info!(user = username, reason, "sign-in step failed");
        Err(e)
    }

    // ---- proofs --------------------------------------------------------

    async fn verify_password_for(&self, user: Option<&UserRecord>, password: &str) -> ServiceResult<bool> {
        let phc = user
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let exists = user.is_some_and(|u| u.password_hash.is_some() && u.state == UserState::Active);
        let pw = Zeroizing::new(password.to_owned());
        let ok = self.password_slots.run(move || verify_password(&phc, &pw)).await?;
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
        let new = self.password_slots.run(move || params.hash(&pw)).await??;
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

    /// Which active TOTP method `code` is right for, and its step. The
    /// replay guard is advanced by the caller (the store has the last word:
    /// another node may have accepted this step a moment ago).
    fn match_totp(&self, methods: &[MethodRecord], code: &str, now: i64) -> ServiceResult<Vec<(String, u64)>> {
        let mut replayed = false;
        let mut malformed: Option<OtpError> = None;
        let mut matches = vec![];
        for m in methods
            .iter()
            .filter(|m| m.kind == MethodKind::Totp && m.state == MethodState::Active)
        {
            let (secret, params) = self.totp_secret(m)?;
            let last = m.last_used_step.map(|s| s.max(0) as u64);
            match otp::verify_totp(&secret, code, now.max(0) as u64, &params, self.config.totp_window, last) {
                Ok(step) => matches.push((m.id.clone(), step)),
                Err(OtpError::Replayed) => replayed = true,
                Err(e @ OtpError::Malformed { .. }) => malformed = Some(e),
                Err(_) => {}
            }
        }
        if !matches.is_empty() {
            Ok(matches)
        } else if replayed {
            Err(ServiceError::CodeReplayed)
        } else if let Some(e) = malformed {
            Err(e.into())
        } else {
            Err(ServiceError::InvalidCode)
        }
    }

    /// Verify a TOTP code for a user against every active TOTP method,
    /// advancing the durable replay guard. Used by RADIUS and the benchmark;
    /// sign-in does the same inside its step transaction.
    pub async fn check_totp(&self, user: Option<&UserRecord>, code: &str, now: i64) -> ServiceResult<()> {
        let Some(user) = user else {
            return unknown_user_totp(code, now);
        };
        let methods = self.store.methods_for_user(&user.id).await?;
        for (id, step) in self.match_totp(&methods, code, now)? {
            if self.store.advance_totp_step(&id, step as i64, now).await? {
                return Ok(());
            }
        }
        Err(ServiceError::CodeReplayed)
    }

    /// Active methods that can answer a second-factor step now (a recovery
    /// code set with no codes left cannot).
    pub async fn usable_second_factor_methods(&self, user: &UserRecord) -> ServiceResult<Vec<MethodRecord>> {
        let methods = self.store.methods_for_user(&user.id).await?;
        self.usable_of(methods).await
    }

    async fn usable_of(&self, methods: Vec<MethodRecord>) -> ServiceResult<Vec<MethodRecord>> {
        let mut out = vec![];
        for m in methods {
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

    /// The second factors `methods` (the user's) can answer, strongest first.
    async fn second_factors_of(&self, user: &UserRecord, methods: &[MethodRecord]) -> ServiceResult<Vec<VerifyMethod>> {
        let mut out: Vec<VerifyMethod> = self
            .usable_of(methods.to_vec())
            .await?
            .iter()
            .filter_map(|m| m.kind.second_factor())
            .collect();
        self.drop_forbidden_phone_methods(user, &mut out);
        core_signin::strongest_first(&mut out);
        Ok(out)
    }

    /// What a verified step leads to under `decision`.
    fn advance(
        &self,
        flow: &SignInFlow,
        decision: &Decision,
        method: VerifyMethod,
        step_amr: &[String],
        factors: &[VerifyMethod],
        now: i64,
    ) -> ServiceResult<Advance> {
        if decision.is_blocked() {
            return Ok(Advance::Refused(
                "access_blocked",
                ServiceError::AccessBlocked(format!(
                    "access blocked by conditional access: {}",
                    decision.block_reason().unwrap_or_default()
                )),
            ));
        }
        let next = crate::policy::apply_decision(flow.clone(), decision)
            .step_verified_with_amr(method, step_amr, factors, now)?;
        Ok(match crate::policy::step_up_problem(&next, factors, decision) {
            Some(e) => Advance::Refused("strength_required", e),
            None => Advance::Next(next),
        })
    }

    // ---- the steps -----------------------------------------------------

    /// `POST /signin`. Unknown users get the same answers as known ones.
    pub async fn signin_start(
        &self,
        username: &str,
        password: Option<&str>,
        ctx: &SignInContext,
    ) -> ServiceResult<FlowView> {
        let name = Username::parse(username.trim())?;
        let username = name.as_str();
        let now = self.now();
        let (user, familiar) = match self
            .store
            .user_for_signin(username, ctx.source_ip.as_deref(), Familiarity::window_start(now))
            .await?
        {
            Some((u, familiar)) if u.state == UserState::Active => (Some(u), familiar),
            _ => (None, false),
        };
        let flow = SignInFlow::start(now, AuthStrength::Mfa);
        let Some(password) = password else {
            let mut tx = self.store.bookkeeping().await?;
            let view = self
                .insert_flow(&mut tx, &flow, username, user.map(|u| u.id), ctx)
                .await?;
            tx.commit_bookkeeping().await?;
            return Ok(view);
        };
        let keys = self.throttle_keys(username, Familiarity::of(familiar), ctx);
        let counted = self.count_attempt(&keys).await?;
        let checked = self.verify_password_for(user.as_ref(), password).await;
        let c = self.policies_now().await?;
        match checked {
            Ok(true) => {}
            Ok(false) => {
                let tx = self.store.bookkeeping().await?;
                let user_id = user.map(|u| u.id);
                return self
                    .fail_step(
                        tx,
                        &c,
                        username,
                        user_id,
                        ctx,
                        VerifyMethod::Password,
                        ServiceError::InvalidCredentials,
                    )
                    .await;
            }
            Err(e) => {
                self.refund_attempt(&counted).await?;
                return Err(e);
            }
        }
        let user = user.expect("a verified password implies a user");
        self.rehash_if_needed(&user, password).await?;
        // Conditional access decides what this sign-in must prove.
        let methods = self.store.methods_for_user(&user.id).await?;
        let (risk, decision) = self.evaluate_step(&c, &user, ctx).await?;
        let factors = self.second_factors_of(&user, &methods).await?;
        let advance = self.advance(&flow, &decision, VerifyMethod::Password, &[], &factors, now);
        let mut tx = self.store.bookkeeping().await?;
        tx.refund_attempts(&counted).await?;
        let next = match advance {
            Ok(Advance::Next(next)) => next,
            Ok(Advance::Refused(reason, e)) => {
                return self.refuse_step(tx, &c, &user, ctx, reason, &decision, risk, e).await
            }
            Err(e) => {
                tx.commit_bookkeeping().await?;
                return Err(e);
            }
        };
        let view = self
            .insert_flow(&mut tx, &next, username, Some(user.id.clone()), ctx)
            .await?;
        tx.commit_bookkeeping().await?;
        Ok(view)
    }

    /// Conditional access refused a verified step: log it (in `tx`,
    /// committed) and answer `e`.
    #[allow(clippy::too_many_arguments)]
    async fn refuse_step<T>(
        &self,
        mut tx: WriteTx,
        c: &CachedPolicies,
        user: &UserRecord,
        ctx: &SignInContext,
        reason: &str,
        decision: &Decision,
        risk: RiskLevel,
        e: ServiceError,
    ) -> ServiceResult<T> {
        let entry = failure_entry(self.now(), &user.username, Some(user.id.clone()), ctx, reason);
        let logged = self
            .log_signin_in(&mut tx, c, entry, ctx, &[], Some(decision), Some(risk))
            .await?;
        tx.commit_bookkeeping().await?;
        self.signin_logged(logged).await;
        Err(e)
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
        let loaded = self.load_flow(flow_id, ctx.source_ip.as_deref()).await?;
        loaded.flow.check_allowed(method, now)?;
        let mut ctx = loaded.context(ctx);
        let username = loaded.rec.username.clone();
        let keys = self.throttle_keys(&username, loaded.familiarity, &ctx);
        let mut user = loaded.user.clone().filter(|u| u.state == UserState::Active);
        let c = self.policies_now().await?;
        // A pass an earlier step proved must still be good: revoking it
        // ends the sign-in it started.
        let flow_pass = match self.flow_pass(user.as_ref(), loaded.flow.pass_id.as_deref()).await {
            Ok(t) => t,
            Err(e) => {
                let mut tx = self.store.bookkeeping().await?;
                // Another request may have moved the flow meanwhile; it meets the same check.
                let _ = self.swap_flow(&mut tx, &loaded, None).await;
                let user_id = loaded.rec.user_id.clone();
                return self.fail_step(tx, &c, &username, user_id, &ctx, method, e).await;
            }
        };

        // Proofs checked before the step transaction: counted first.
        let mut counted: Option<Vec<ThrottleRow>> = None;
        let mut step_amr: Vec<String> = vec![];
        let mut possessed_method: Option<String> = None;
        if checked_outside(method, &proof) {
            let rows = self.count_attempt(&keys).await?;
            let checked: ServiceResult<()> = async {
                match (method, &proof) {
                    (VerifyMethod::Password, Proof::Password(pw)) => {
                        if self.verify_password_for(user.as_ref(), pw).await? {
                            Ok(())
                        } else {
                            Err(ServiceError::InvalidCredentials)
                        }
                    }
                    (VerifyMethod::Push, Proof::Push) => self.check_push(&loaded.key, user.as_ref(), now).await,
                    (VerifyMethod::Sms | VerifyMethod::Voice, Proof::Code(code)) => {
                        self.check_phone_code(&loaded.key, user.as_ref(), code, now).await
                    }
                    (VerifyMethod::Webauthn, Proof::Assertion(a)) => {
                        let o = self
                            .check_webauthn_assertion(flow_id, &loaded.rec, &loaded.flow, a, now)
                            .await?;
                        step_amr = o.amr;
                        possessed_method = o.device_bound_method;
                        // A usernameless flow learns its user from the passkey.
                        user = Some(o.user);
                        Ok(())
                    }
                    _ => unreachable!("checked_outside matched"),
                }
            }
            .await;
            match checked {
                Ok(()) => counted = Some(rows),
                Err(e) if is_wrong_proof(&e) => {
                    let tx = self.store.bookkeeping().await?;
                    let user_id = loaded.rec.user_id.clone();
                    return self.fail_step(tx, &c, &username, user_id, &ctx, method, e).await;
                }
                Err(e) => {
                    self.refund_attempt(&rows).await?;
                    return Err(e);
                }
            }
        }

        // What the rest of the step needs, read before the transaction (which
        // must not wait for another pooled connection while it holds one).
        let (methods, prepared) = match &user {
            Some(u) => {
                let methods = self.store.methods_for_user(&u.id).await?;
                // A key bound to a device, verified in this step, proves the
                // device (finding 9's possession route).
                let bound = possessed_method
                    .as_ref()
                    .and_then(|id| methods.iter().find(|m| &m.id == id && m.state == MethodState::Active))
                    .and_then(|m| m.device_id.clone());
                if let Some(id) = bound {
                    ctx.device = Some(DeviceClaim {
                        id,
                        proof: DeviceProof::KeyPossession,
                    });
                }
                let (risk, decision) = self.evaluate_step(&c, u, &ctx).await?;
                let factors = self.second_factors_of(u, &methods).await?;
                let nudges = self.registration_nudges_with(&c, u).await?;
                (methods, Some((risk, decision, factors, nudges)))
            }
            None => (vec![], None),
        };
        let pass = match (&user, method, &proof) {
            (Some(u), VerifyMethod::TemporaryAccessPass, Proof::Pass(p)) => {
                let h = tap::hash_pass_input(self.keys.pepper(), p)?;
                self.store.tap_by_hash(&u.id, &h).await?
            }
            (None, VerifyMethod::TemporaryAccessPass, Proof::Pass(p)) => {
                tap::hash_pass_input(self.keys.pepper(), p)?;
                None
            }
            _ => None,
        };

        let mut tx = self.store.write().await?;
        let throttle = match &counted {
            Some(rows) => {
                tx.refund_attempts(rows).await?;
                rows.clone()
            }
            None => self.check_throttle(&mut tx, &keys, now).await?,
        };
        let mut tap_used: Option<TapRecord> = None;
        let verified: ServiceResult<()> = match (method, &proof) {
            _ if counted.is_some() => Ok(()),
            (VerifyMethod::Totp, Proof::Code(code)) => match &user {
                None => unknown_user_totp(code, now),
                Some(_) => self.advance_totp_in(&mut tx, &methods, code, now).await,
            },
            (VerifyMethod::RecoveryCode, Proof::Code(code)) => {
                let h = latchkey_core::recovery::hash_input(self.keys.pepper(), code)?;
                match &user {
                    Some(u) if tx.use_recovery_code(&u.id, &h, now).await? => Ok(()),
                    _ => Err(ServiceError::InvalidCode),
                }
            }
            (VerifyMethod::TemporaryAccessPass, Proof::Pass(_)) => match pass {
                // Spent here, so two nodes racing with one single-use pass
                // cannot both win.
                Some(t)
                    if tap::tap_state(t.starts_at, t.expires_at, t.single_use, t.used_at, now) == TapState::Usable
                        && tx.use_tap(&t.id, now).await? =>
                {
                    tap_used = Some(t);
                    Ok(())
                }
                _ => Err(ServiceError::InvalidPass),
            },
            _ => Err(ServiceError::InvalidRequest(format!(
                "method '{}' needs its matching field",
                method.as_str()
            ))),
        };
        if let Err(e) = verified {
            if !is_wrong_proof(&e) {
                return Err(e); // not a guess: nothing to count, roll back
            }
            self.count_failure(&mut tx, &keys, now).await?;
            return self
                .fail_step(tx, &c, &username, loaded.rec.user_id.clone(), &ctx, method, e)
                .await;
        }

        let user = user.expect("a verified step implies a user");
        let (risk, decision, factors, nudges) = prepared.expect("a verified step had its user");
        // Re-evaluated at every step, so a policy change applies to flows in progress.
        let next = match self.advance(&loaded.flow, &decision, method, &step_amr, &factors, now) {
            Ok(Advance::Next(next)) => next,
            Ok(Advance::Refused(reason, e)) => {
                let tx = self.unspend_pass(tx, tap_used.is_some()).await?;
                return self.refuse_step(tx, &c, &user, &ctx, reason, &decision, risk, e).await;
            }
            Err(e) => {
                let tx = self.unspend_pass(tx, tap_used.is_some()).await?;
                tx.commit_bookkeeping().await?;
                return Err(e);
            }
        };
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
        let mut next = next;
        if let (Some(t), false) = (&tap_used, matches!(next.state, SignInState::Complete { .. })) {
            next.pass_id = Some(t.id.clone());
        }
        let SignInState::Complete { acr } = next.state else {
            let mut tx = self.unspend_pass(tx, tap_used.is_some()).await?;
            self.swap_flow(&mut tx, &loaded, Some(&next)).await?;
            tx.commit_bookkeeping().await?;
            return Ok(outcome);
        };
        outcome.registration_campaigns = nudges;
        if let (None, Some(t)) = (&tap_used, flow_pass) {
            // The step that completes the flow spends the pass an earlier
            // step proved (and fails if it was revoked meanwhile).
            if !tx.use_tap(&t.id, now).await? {
                return Err(ServiceError::InvalidPass);
            }
            tap_used = Some(t);
        }
        self.swap_flow(&mut tx, &loaded, None).await?;
        let (token, session) = self
            .open_session_in(&mut tx, &user, &next, acr, tap_used.as_ref(), &ctx, Some(&decision))
            .await?;
        if decision.break_glass {
            self.record_break_glass_use_in(&mut tx, &user, &ctx).await?;
        }
        let user_counter = softlock::user_counter(&user.username, loaded.familiarity);
        if counted.is_some() || throttle.iter().any(|r| r.key == user_counter) {
            tx.clear_throttle(&user_counter).await?;
        }
        let logged = self
            .log_session_signin_in(&mut tx, &c, &user, &ctx, &session, None, Some(&decision), Some(risk))
            .await?;
        tx.commit().await?;
        self.signin_logged(logged).await;
        if decision.break_glass {
            tracing::warn!(user = %user.username, "break-glass account signed in");
        }
        outcome.acr = Some(acr);
        outcome.session_token = Some(token);
        outcome.session_expires_at = Some(session.expires_at);
        Ok(outcome)
    }

    /// A pass is spent only by the step that completes the sign-in: a step
    /// that does not roll its transaction back and continues in a new one.
    async fn unspend_pass(&self, tx: WriteTx, spent: bool) -> ServiceResult<WriteTx> {
        if !spent {
            return Ok(tx);
        }
        drop(tx);
        Ok(self.store.bookkeeping().await?)
    }

    /// The TOTP step inside the step transaction.
    async fn advance_totp_in(
        &self,
        tx: &mut WriteTx,
        methods: &[MethodRecord],
        code: &str,
        now: i64,
    ) -> ServiceResult<()> {
        for (id, step) in self.match_totp(methods, code, now)? {
            if tx.advance_totp_step(&id, step as i64, now).await? {
                return Ok(());
            }
        }
        Err(ServiceError::CodeReplayed)
    }

    /// Insert the session (and audit it, with the pass it used) in `tx`.
    #[allow(clippy::too_many_arguments)]
    async fn open_session_in(
        &self,
        tx: &mut WriteTx,
        user: &UserRecord,
        flow: &SignInFlow,
        acr: AuthStrength,
        tap_used: Option<&TapRecord>,
        ctx: &SignInContext,
        decision: Option<&Decision>,
    ) -> ServiceResult<(String, SessionRecord)> {
        let now = self.now();
        let token = random_token(&mut OsRng, SESSION_PREFIX);
        let (expires_at, idle_expires_at) = core_signin::session_deadlines(
            now,
            &SessionLimits {
                absolute_secs: self.config.session_absolute_secs,
                idle_secs: self.config.session_idle_secs,
                sign_in_frequency_secs: decision.and_then(|d| d.sign_in_frequency_secs),
                pass_expires_at: tap_used.map(|t| t.expires_at),
            },
        );
        let session = SessionRecord {
            id: new_id(),
            user_id: user.id.clone(),
            amr: flow.amr(),
            methods: flow.methods.iter().map(|m| m.as_str().to_owned()).collect(),
            acr: acr.as_str().to_owned(),
            authenticated_at: now,
            idle_expires_at,
            expires_at,
        };
        let who = format!("user:{}", user.username);
        if let Some(t) = tap_used {
            tx.audit(
                &AuditEntry::new(who.clone(), "tap.use", who.clone(), json!({ "tap_id": t.id })),
                self.clock.now_ms(),
            )
            .await?;
        }
        tx.insert_session(
            &self.hash("session", &token),
            &session,
            ctx.source_ip.as_deref(),
            ctx.device_id(),
        )
        .await?;
        tx.audit(
            &AuditEntry::new(
                who.clone(),
                "session.create",
                who,
                json!({ "session_id": session.id, "acr": session.acr, "amr": session.amr, "application": ctx.application, "source_ip": ctx.source_ip }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        Ok((token, session))
    }

    /// A successful sign-in on the log: a new session, or (with a reason)
    /// an existing one reused for another application.
    pub(crate) async fn log_session_signin(
        &self,
        user: &UserRecord,
        ctx: &SignInContext,
        session: &SessionRecord,
        reason: Option<&str>,
        decision: Option<&Decision>,
    ) -> ServiceResult<()> {
        let tried: Vec<&str> = session.methods.iter().map(String::as_str).collect();
        self.record_signin(
            success_entry(self.now(), user, ctx, session, reason),
            ctx,
            &tried,
            decision,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn log_session_signin_in(
        &self,
        tx: &mut WriteTx,
        c: &CachedPolicies,
        user: &UserRecord,
        ctx: &SignInContext,
        session: &SessionRecord,
        reason: Option<&str>,
        decision: Option<&Decision>,
        risk: Option<RiskLevel>,
    ) -> ServiceResult<LoggedSignIn> {
        let tried: Vec<&str> = session.methods.iter().map(String::as_str).collect();
        let entry = success_entry(self.now(), user, ctx, session, reason);
        self.log_signin_in(tx, c, entry, ctx, &tried, decision, risk).await
    }
}

fn lock_policy<'a>(keys: &'a [(String, LockPolicy)], key: &str) -> &'a LockPolicy {
    &keys
        .iter()
        .find(|(k, _)| k == key)
        .expect("the store answers only for the keys asked")
        .1
}

/// Same shape checks as for a real user, then the same answer.
fn unknown_user_totp(code: &str, now: i64) -> ServiceResult<()> {
    let _ = otp::verify_totp(&[0u8; 20], code, now.max(0) as u64, &TotpParams::default(), 1, None)?;
    Err(ServiceError::InvalidCode)
}

/// Proofs checked before the step transaction: the password (Argon2 is slow
/// and must not hold a write lock) and those with their own single-use
/// statements (push approval, phone code, WebAuthn challenge).
fn checked_outside(method: VerifyMethod, proof: &Proof) -> bool {
    matches!(
        (method, proof),
        (VerifyMethod::Password, Proof::Password(_))
            | (VerifyMethod::Push, Proof::Push)
            | (VerifyMethod::Sms | VerifyMethod::Voice, Proof::Code(_))
            | (VerifyMethod::Webauthn, Proof::Assertion(_))
    )
}

/// A wrong credential: counted against the throttle and logged as a failed
/// step. Anything else (malformed input, a busy server) is not a guess.
fn is_wrong_proof(e: &ServiceError) -> bool {
    matches!(
        e,
        ServiceError::InvalidCredentials
            | ServiceError::InvalidCode
            | ServiceError::CodeReplayed
            | ServiceError::InvalidPass
            | ServiceError::WebauthnRejected(_)
            | ServiceError::WebauthnCounterRegression
    )
}

fn failure_entry(
    at: i64,
    username: &str,
    user_id: Option<String>,
    ctx: &SignInContext,
    reason: &str,
) -> SignInLogEntry {
    SignInLogEntry {
        at,
        user_id,
        username: username.to_owned(),
        application: ctx.application.clone(),
        source_ip: ctx.source_ip.clone(),
        result: "failure".into(),
        reason: Some(reason.to_owned()),
        methods: vec![],
        acr: None,
    }
}

fn success_entry(
    at: i64,
    user: &UserRecord,
    ctx: &SignInContext,
    session: &SessionRecord,
    reason: Option<&str>,
) -> SignInLogEntry {
    SignInLogEntry {
        at,
        user_id: Some(user.id.clone()),
        username: user.username.clone(),
        application: ctx.application.clone(),
        source_ip: ctx.source_ip.clone(),
        result: "success".into(),
        reason: reason.map(str::to_owned),
        methods: session.methods.clone(),
        acr: Some(session.acr.clone()),
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
