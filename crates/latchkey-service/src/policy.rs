//! Conditional access in the service layer: evaluation at every sign-in,
//! policy management (versioned, audited, guarded by the bootstrap-path
//! analyzer), what-if, replay, exceptions, break-glass accounts and rollout.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use latchkey_core::analyzer::{self, AnalyzedUser, AnalyzerOptions, AnalyzerReport};
use latchkey_core::policy::{
    evaluate, minimum_builtin, validate_exception, AccessContext, AuthenticationStrength, ConditionalAccessPolicy,
    Decision, DevicePosture, ExceptionSubject, NamedLocation, PolicyException, PolicySet, RiskLevel, UserAction,
};
use latchkey_core::replay::{self, HistoricSignIn, ReplayReport, UserProfile};
use latchkey_core::rollout::{self, CampaignPhase, RegistrationNudge, RolloutWave, WaveCoverage};
use latchkey_core::signin::{SignInFlow, SignInState};
use latchkey_core::tap::ChangeKind;
use latchkey_core::{MethodState, Role, UserState, VerifyMethod};
use latchkey_store::{
    AlertRecord, AuditEntry, BreakGlassRecord, ExceptionRecord, PolicyRecord, PolicyVersionRecord, SignInLogEntry,
    UserRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::{App, Principal, SignInContext};
use crate::error::{ServiceError, ServiceResult};

/// What evaluation reads, parsed once per generation (and per campaign phase).
/// An exception as asked for, kept in its change request until approved.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingException {
    policy_id: String,
    subject: ExceptionSubject,
    reason: String,
    expires_at: i64,
}

/// An exception made, or a request waiting for a second approver.
pub enum ExceptionOutcome {
    Created(ExceptionRecord),
    PendingApproval { request_id: String },
}

#[derive(Debug)]
pub(crate) struct CachedPolicies {
    generation: i64,
    phases: Vec<CampaignPhase>,
    /// Stored policies plus the policies of started rollout waves.
    pub(crate) effective: PolicySet,
    exceptions: Vec<PolicyException>,
    break_glass: HashSet<String>,
}

impl CachedPolicies {
    /// The first named location (in set order) whose ranges contain `ip`.
    pub(crate) fn named_location_of(&self, ip: IpAddr) -> Option<String> {
        self.effective
            .named_locations
            .iter()
            .find(|l| l.ranges.iter().any(|r| r.contains(&ip)))
            .map(|l| l.name.clone())
    }
}

#[derive(Debug, Default)]
pub struct PolicyCache(RwLock<Option<(Arc<CachedPolicies>, Vec<RolloutWave>)>>);

/// Document formats for import and export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocFormat {
    #[default]
    Yaml,
    Json,
}

pub fn parse_document(text: &str, format: DocFormat) -> ServiceResult<PolicySet> {
    let set: PolicySet = match format {
        DocFormat::Json => {
            serde_json::from_str(text).map_err(|e| ServiceError::InvalidRequest(format!("policy document: {e}")))?
        }
        DocFormat::Yaml => {
            serde_norway::from_str(text).map_err(|e| ServiceError::InvalidRequest(format!("policy document: {e}")))?
        }
    };
    Ok(set.validated()?)
}

pub fn render_document(set: &PolicySet, format: DocFormat) -> String {
    match format {
        DocFormat::Json => serde_json::to_string_pretty(set).expect("policy set serialises"),
        DocFormat::Yaml => serde_norway::to_string(set).expect("policy set serialises"),
    }
}

/// The flow as a decision wants it: the built-in floor for `acr`, plus every
/// required strength as data.
pub fn apply_decision(flow: SignInFlow, d: &Decision) -> SignInFlow {
    let mut flow = flow.with_strengths(d.strengths.clone());
    flow.required = flow.required.max(minimum_builtin(&d.required_strengths));
    flow
}

/// What the sign-in log keeps of a decision.
pub fn decision_log(d: &Decision) -> serde_json::Value {
    json!({
        "outcome": d.outcome,
        "required_strengths": d.required_strengths,
        "applied": d.applied,
        "report_only": d.report_only,
        "break_glass": d.break_glass,
    })
}

fn parse_ip(ip: Option<&str>) -> Option<IpAddr> {
    ip.and_then(|i| i.trim().parse().ok())
}

/// Input of a what-if question.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatIf {
    pub username: String,
    #[serde(default)]
    pub application: Option<String>,
    /// `register_security_info` to ask about registering methods.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub action: Option<UserAction>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    /// Hypothetical device posture (`compliant`, `managed`, `ownership`, `platform`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub device: Option<DevicePosture>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub risk: Option<RiskLevel>,
    /// A proposed policy document to ask about instead of the stored set.
    #[serde(default)]
    pub document: Option<String>,
    #[serde(default)]
    pub format: Option<DocFormat>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The analyzer's report for the set checked.
    pub report: AnalyzerReport,
    /// Users the checked set locks out that the stored set doesn't.
    pub newly_locked_out: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExceptionView {
    #[serde(flatten)]
    pub record: ExceptionRecord,
    pub in_force: bool,
    /// In force and ending within 7 days.
    pub near_expiry: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreakGlassView {
    #[serde(flatten)]
    pub record: BreakGlassRecord,
    pub test_overdue: bool,
    pub has_phishing_resistant_key: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WaveView {
    #[serde(flatten)]
    pub wave: RolloutWave,
    pub phase: CampaignPhase,
    pub coverage: WaveCoverage,
}

fn require_policy_admin(p: &Principal) -> ServiceResult<()> {
    if p.has_role(Role::SecurityAdmin) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "managing policies needs the security_admin or admin role".into(),
        ))
    }
}

pub(crate) fn require_policy_read(p: &Principal) -> ServiceResult<()> {
    if p.has_role(Role::SecurityAdmin) || p.has_role(Role::Auditor) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "reading policies needs the security_admin, auditor or admin role".into(),
        ))
    }
}

fn profile(u: &UserRecord, break_glass: bool) -> UserProfile {
    UserProfile {
        username: u.username.clone(),
        groups: u.groups.clone(),
        roles: u.roles.clone(),
        department: u.department.clone(),
        break_glass,
    }
}

impl App {
    // ---- evaluation ----------------------------------------------------

    /// The policy state for `now`: one cheap generation read per call; the
    /// set is re-read and re-parsed only when something changed.
    pub(crate) async fn policies_now(&self) -> ServiceResult<Arc<CachedPolicies>> {
        let now = self.now();
        let generation = self.store.policy_generation().await?;
        {
            let guard = self.policy_cache.0.read().expect("policy cache lock");
            if let Some((c, waves)) = guard.as_ref() {
                let phases: Vec<CampaignPhase> = waves.iter().map(|w| w.phase(now)).collect();
                if c.generation == generation && c.phases == phases {
                    return Ok(c.clone());
                }
            }
        }
        let base = self.store.policy_set().await?;
        let waves = self.store.rollout_waves().await?;
        let exceptions = self
            .store
            .exceptions()
            .await?
            .iter()
            .map(ExceptionRecord::as_exception)
            .collect();
        let break_glass = self
            .store
            .break_glass_accounts()
            .await?
            .into_iter()
            .map(|b| b.user_id)
            .collect();
        let c = Arc::new(CachedPolicies {
            generation,
            phases: waves.iter().map(|w| w.phase(now)).collect(),
            effective: rollout::with_waves(&base, &waves, now),
            exceptions,
            break_glass,
        });
        *self.policy_cache.0.write().expect("policy cache lock") = Some((c.clone(), waves));
        Ok(c)
    }

    fn access_context(&self, ctx: &SignInContext) -> AccessContext {
        AccessContext {
            application: ctx.application.clone(),
            action: None,
            ip: parse_ip(ctx.source_ip.as_deref()),
            // Unknown to the inventory (or not this user's): neither managed
            // nor compliant. `access_decision` fills in what the inventory says.
            device: ctx.device.as_ref().map(|d| DevicePosture {
                id: d.id.clone(),
                platform: None,
                ownership: None,
                managed: false,
                compliant: false,
            }),
            risk: RiskLevel::None,
        }
    }

    /// The posture of a device from the inventory, if it is this user's and
    /// still active: nobody borrows someone else's compliant device.
    pub(crate) async fn device_posture(
        &self,
        user: &UserRecord,
        device_id: &str,
    ) -> ServiceResult<Option<DevicePosture>> {
        let Some(d) = self.store.device(device_id).await? else {
            return Ok(None);
        };
        if d.user_id != user.id || d.state != "active" {
            return Ok(None);
        }
        fn parse<T: serde::de::DeserializeOwned>(v: &str) -> Option<T> {
            serde_json::from_value(serde_json::Value::String(v.to_owned())).ok()
        }
        Ok(Some(DevicePosture {
            id: d.id.clone(),
            platform: parse(&d.platform),
            ownership: parse(&d.ownership),
            managed: d.managed,
            compliant: d.compliant,
        }))
    }

    pub async fn access_decision(&self, user: &UserRecord, ctx: &SignInContext) -> ServiceResult<Decision> {
        self.decide(user, ctx, None).await
    }

    /// Registering or changing security info is the `register_security_info`
    /// user action: policies that govern it decide, with the session's
    /// origin (where it signed in from, on which device) as the context.
    /// Only self-service is governed; staff act under their own controls.
    pub(crate) async fn check_registration_policy(
        &self,
        user: &UserRecord,
        session: &latchkey_store::SessionRecord,
    ) -> ServiceResult<()> {
        let (source_ip, device_id) = self.store.session_origin(&session.id).await?;
        let ctx = SignInContext {
            application: None,
            source_ip,
            device: device_id.map(latchkey_core::device::DeviceClaim::recorded),
            unproven_device_id: None,
            continues_to: None,
        };
        let d = self.decide(user, &ctx, Some(UserAction::RegisterSecurityInfo)).await?;
        if d.is_blocked() {
            return Err(ServiceError::AccessBlocked(format!(
                "changing security info is blocked by conditional access: {}",
                d.block_reason().unwrap_or_default()
            )));
        }
        if !d.strengths_satisfied(&steps(&session.methods), None) {
            return Err(ServiceError::AuthenticationStrengthRequired(format!(
                "changing security info requires {}; this session signed in with {}. Sign in again with a method that satisfies it (or use a Temporary Access Pass from the helpdesk)",
                d.required_strengths.join(" and "),
                session.methods.join(" + ")
            )));
        }
        Ok(())
    }

    async fn decide(
        &self,
        user: &UserRecord,
        ctx: &SignInContext,
        action: Option<UserAction>,
    ) -> ServiceResult<Decision> {
        let c = self.policies_now().await?;
        // Sign-in risk from detections about this user and source (issue 8).
        let risk = self.signin_risk_with(&c, user, ctx).await?.0;
        self.decide_with(&c, user, ctx, action, risk).await
    }

    /// One sign-in step's risk and decision, under the policies the step
    /// read once: the risk is computed once and shared by the decision and
    /// the sign-in log.
    pub(crate) async fn evaluate_step(
        &self,
        c: &CachedPolicies,
        user: &UserRecord,
        ctx: &SignInContext,
    ) -> ServiceResult<(RiskLevel, Decision)> {
        let risk = self.signin_risk_with(c, user, ctx).await?.0;
        Ok((risk, self.decide_with(c, user, ctx, None, risk).await?))
    }

    async fn decide_with(
        &self,
        c: &CachedPolicies,
        user: &UserRecord,
        ctx: &SignInContext,
        action: Option<UserAction>,
        risk: RiskLevel,
    ) -> ServiceResult<Decision> {
        let p = profile(user, c.break_glass.contains(&user.id));
        let mut actx = self.access_context(ctx);
        actx.action = action;
        actx.risk = risk;
        if let Some(id) = ctx.device_id() {
            if let Some(posture) = self.device_posture(user, id).await? {
                actx.device = Some(posture);
            }
        }
        let now = self.now();
        let d = evaluate(&c.effective, &c.exceptions, &p.facts(), &actx, now);
        Ok(match &ctx.continues_to {
            Some(app) if Some(app) != ctx.application.as_ref() => {
                actx.application = Some(app.clone());
                d.combine(evaluate(&c.effective, &c.exceptions, &p.facts(), &actx, now))
            }
            _ => d,
        })
    }

    pub(crate) async fn log_policy_failure(
        &self,
        user: &UserRecord,
        ctx: &SignInContext,
        reason: &str,
        d: &Decision,
    ) -> ServiceResult<()> {
        self.record_signin(
            SignInLogEntry {
                at: self.now(),
                user_id: Some(user.id.clone()),
                username: user.username.clone(),
                application: ctx.application.clone(),
                source_ip: ctx.source_ip.clone(),
                result: "failure".into(),
                reason: Some(reason.into()),
                methods: vec![],
                acr: None,
            },
            ctx,
            &[],
            Some(d),
        )
        .await
    }

    /// Every break-glass sign-in is recorded, audited and raises an alert,
    /// in the sign-in step's transaction.
    pub(crate) async fn record_break_glass_use_in(
        &self,
        tx: &mut latchkey_store::WriteTx,
        user: &UserRecord,
        ctx: &SignInContext,
    ) -> ServiceResult<()> {
        let now = self.now();
        let details = json!({ "application": ctx.application, "source_ip": ctx.source_ip });
        let target = format!("user:{}", user.username);
        tx.record_break_glass_signin(&user.id, "use", None, "system", now)
            .await?;
        tx.insert_alert("break_glass.signin", "high", &target, &details, now)
            .await?;
        tx.audit(
            &AuditEntry::new(format!("user:{}", user.username), "break_glass.signin", target, details),
            self.clock.now_ms(),
        )
        .await?;
        Ok(())
    }

    /// Every active user with the steps their registered methods can perform.
    async fn profiles_with_methods(&self, c: &CachedPolicies) -> ServiceResult<Vec<(UserProfile, Vec<VerifyMethod>)>> {
        let mut out = vec![];
        for u in self
            .store
            .list_users()
            .await?
            .iter()
            .filter(|u| u.state == UserState::Active)
        {
            out.push((
                profile(u, c.break_glass.contains(&u.id)),
                self.registered_steps(u).await?,
            ));
        }
        Ok(out)
    }

    /// The sign-in steps a user's registered, active methods can answer.
    async fn registered_steps(&self, u: &UserRecord) -> ServiceResult<Vec<VerifyMethod>> {
        let mut methods = vec![];
        if u.password_hash.is_some() {
            methods.push(VerifyMethod::Password);
        }
        for m in self.store.methods_for_user(&u.id).await? {
            if let Some(v) = m.kind.second_factor().filter(|_| m.state == MethodState::Active) {
                if !methods.contains(&v) {
                    methods.push(v);
                }
            }
        }
        Ok(methods)
    }

    /// The registration campaigns nudging this user now (shown after sign-in
    /// with their deadline; see [`rollout::nudges`]).
    pub async fn registration_nudges(&self, user: &UserRecord) -> ServiceResult<Vec<RegistrationNudge>> {
        let c = self.policies_now().await?;
        self.registration_nudges_with(&c, user).await
    }

    pub(crate) async fn registration_nudges_with(
        &self,
        c: &CachedPolicies,
        user: &UserRecord,
    ) -> ServiceResult<Vec<RegistrationNudge>> {
        // The common case costs nothing on the sign-in path: no wave is nudging.
        if !c.phases.iter().any(|p| matches!(p, CampaignPhase::Nudge { .. })) {
            return Ok(vec![]);
        }
        let waves = self.store.rollout_waves().await?;
        let p = profile(user, c.break_glass.contains(&user.id));
        let steps = self.registered_steps(user).await?;
        Ok(rollout::nudges(&waves, &c.effective, &p.facts(), &steps, self.now()))
    }

    // ---- policies ------------------------------------------------------

    pub async fn list_policies(&self, p: &Principal) -> ServiceResult<Vec<PolicyRecord>> {
        require_policy_read(p)?;
        Ok(self.store.policies().await?)
    }

    pub async fn get_policy(&self, p: &Principal, id: &str) -> ServiceResult<(PolicyRecord, Vec<PolicyVersionRecord>)> {
        require_policy_read(p)?;
        let rec = self
            .store
            .policy(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("policy '{id}'")))?;
        Ok((rec, self.store.policy_versions(id).await?))
    }

    /// Analyze every user under `proposed`, compared with the stored set.
    pub async fn check_policies(&self, p: &Principal, proposed: Option<PolicySet>) -> ServiceResult<CheckReport> {
        require_policy_read(p)?;
        let now = self.now();
        let c = self.policies_now().await?;
        let owned = self.profiles_with_methods(&c).await?;
        let analyzed: Vec<AnalyzedUser> = owned
            .iter()
            .map(|(p, m)| AnalyzedUser {
                facts: p.facts(),
                methods: m.clone(),
            })
            .collect();
        let opts = AnalyzerOptions::default();
        let current = analyzer::analyze(&c.effective, &c.exceptions, &analyzed, &opts, now);
        match proposed {
            None => Ok(CheckReport {
                report: current,
                newly_locked_out: vec![],
            }),
            Some(set) => {
                let waves = self.store.rollout_waves().await?;
                let set = rollout::with_waves(&set, &waves, now);
                let report = analyzer::analyze(&set, &c.exceptions, &analyzed, &opts, now);
                Ok(CheckReport {
                    newly_locked_out: analyzer::newly_locked(&current, &report),
                    report,
                })
            }
        }
    }

    /// Refuse a change that locks anyone out, unless forced.
    async fn guard(&self, p: &Principal, proposed: &PolicySet, force: bool) -> ServiceResult<()> {
        let check = self.check_policies(p, Some(proposed.clone())).await?;
        if check.newly_locked_out.is_empty() || force {
            return Ok(());
        }
        let who: Vec<String> = check
            .report
            .locked_out
            .iter()
            .filter(|u| check.newly_locked_out.contains(&u.username))
            .map(|u| u.summary())
            .collect();
        Err(ServiceError::PolicyLockout(format!(
            "this change would leave {} user(s) with no way to register security info (send force: true to apply anyway): {}",
            who.len(),
            who.join(" | ")
        )))
    }

    /// Create or replace one policy: a new version, audited, analyzer-guarded.
    pub async fn put_policy(
        &self,
        p: &Principal,
        policy: ConditionalAccessPolicy,
        create: bool,
        expected_version: Option<i64>,
        force: bool,
    ) -> ServiceResult<PolicyRecord> {
        require_policy_admin(p)?;
        let mut set = self.store.policy_set().await?;
        let exists = set.policies.iter().any(|x| x.id == policy.id);
        if create && exists {
            return Err(ServiceError::Conflict(format!("policy '{}' already exists", policy.id)));
        }
        if !create && !exists {
            return Err(ServiceError::NotFound(format!("policy '{}'", policy.id)));
        }
        set.policies.retain(|x| x.id != policy.id);
        set.policies.push(policy.clone());
        let set = set.validated()?;
        self.guard(p, &set, force).await?;
        let now = self.now();
        let mut tx = self.store.write().await?;
        let version = tx.put_policy(&policy, expected_version, &p.actor(), now).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                if create { "policy.create" } else { "policy.update" },
                format!("policy:{}", policy.id),
                json!({ "version": version, "state": policy.state, "forced": force, "policy": policy }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(PolicyRecord {
            policy,
            version,
            updated_at: now,
        })
    }

    pub async fn delete_policy(&self, p: &Principal, id: &str, force: bool) -> ServiceResult<()> {
        require_policy_admin(p)?;
        let mut set = self.store.policy_set().await?;
        set.policies.retain(|x| x.id != id);
        self.guard(p, &set.validated()?, force).await?;
        let mut tx = self.store.write().await?;
        let version = tx.delete_policy(id, &p.actor(), self.now()).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "policy.delete",
                format!("policy:{id}"),
                json!({ "version": version }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn export_policies(&self, p: &Principal, format: DocFormat) -> ServiceResult<String> {
        require_policy_read(p)?;
        Ok(render_document(&self.store.policy_set().await?, format))
    }

    /// Replace the whole set with a document (policies, locations, custom
    /// strengths). Unchanged policies keep their version.
    pub async fn import_policies(
        &self,
        p: &Principal,
        set: PolicySet,
        force: bool,
    ) -> ServiceResult<Vec<PolicyRecord>> {
        require_policy_admin(p)?;
        let set = set.validated()?;
        self.guard(p, &set, force).await?;
        let now = self.now();
        let current = self.store.policy_set().await?;
        let actor = p.actor();
        let mut tx = self.store.write().await?;
        let mut changed = vec![];
        for old in &current.policies {
            if !set.policies.iter().any(|x| x.id == old.id) {
                tx.delete_policy(&old.id, &actor, now).await?;
                changed.push(json!({ "policy": old.id, "deleted": true }));
            }
        }
        for l in &current.named_locations {
            if !set.named_locations.iter().any(|x| x.name == l.name) {
                tx.delete_named_location(&l.name).await?;
            }
        }
        for s in &current.strengths {
            if !set.strengths.iter().any(|x| x.name == s.name) {
                tx.delete_strength(&s.name).await?;
            }
        }
        for l in &set.named_locations {
            tx.put_named_location(l, now).await?;
        }
        for s in &set.strengths {
            tx.put_strength(s, now).await?;
        }
        for pol in &set.policies {
            if !current.policies.contains(pol) {
                let v = tx.put_policy(pol, None, &actor, now).await?;
                changed.push(json!({ "policy": pol.id, "version": v }));
            }
        }
        tx.audit(
            &AuditEntry::new(
                actor.clone(),
                "policy.import",
                "policies",
                json!({ "policies": set.policies.len(), "named_locations": set.named_locations.len(), "strengths": set.strengths.len(), "changed": changed, "forced": force }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(self.store.policies().await?)
    }

    pub async fn what_if(&self, p: &Principal, q: WhatIf) -> ServiceResult<Decision> {
        require_policy_read(p)?;
        let user = self.user(&q.username).await?;
        let c = self.policies_now().await?;
        let set = match &q.document {
            Some(doc) => {
                let waves = self.store.rollout_waves().await?;
                rollout::with_waves(&parse_document(doc, q.format.unwrap_or_default())?, &waves, self.now())
            }
            None => c.effective.clone(),
        };
        let ip = match &q.ip {
            Some(s) => Some(
                s.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| ServiceError::InvalidRequest(format!("'{s}' is not an IP address")))?,
            ),
            None => None,
        };
        let inventory = match &q.device_id {
            Some(id) => self.device_posture(&user, id).await?,
            None => None,
        };
        let device = q.device.clone().or(inventory).or_else(|| {
            q.device_id.as_ref().map(|id| DevicePosture {
                id: id.clone(),
                platform: None,
                ownership: None,
                managed: false,
                compliant: false,
            })
        });
        let ctx = AccessContext {
            application: q.application.clone(),
            action: q.action,
            ip,
            device,
            risk: q.risk.unwrap_or_default(),
        };
        let prof = profile(&user, c.break_glass.contains(&user.id));
        Ok(evaluate(&set, &c.exceptions, &prof.facts(), &ctx, self.now()))
    }

    /// Replay the last `days` of sign-ins under `proposed`.
    pub async fn replay_policies(&self, p: &Principal, proposed: PolicySet, days: i64) -> ServiceResult<ReplayReport> {
        require_policy_read(p)?;
        if !(1..=365).contains(&days) {
            return Err(ServiceError::InvalidRequest("days must be 1-365".into()));
        }
        let now = self.now();
        let c = self.policies_now().await?;
        let waves = self.store.rollout_waves().await?;
        let proposed = rollout::with_waves(&proposed, &waves, now);
        let users: BTreeMap<String, UserProfile> = self
            .store
            .list_users()
            .await?
            .iter()
            .map(|u| (u.username.clone(), profile(u, c.break_glass.contains(&u.id))))
            .collect();
        let history: Vec<HistoricSignIn> = self
            .store
            .signin_history(now - days * 86_400, 1_000_000)
            .await?
            .into_iter()
            .filter(|s| s.result == "success")
            .map(|s| HistoricSignIn {
                at: s.at,
                username: s.username,
                application: s.application,
                ip: parse_ip(s.source_ip.as_deref()),
                methods: steps(&s.methods),
            })
            .collect();
        Ok(replay::replay(
            &c.effective,
            &proposed,
            &c.exceptions,
            &users,
            &history,
            now,
        ))
    }

    // ---- named locations and strengths --------------------------------

    pub async fn named_locations(&self, p: &Principal) -> ServiceResult<Vec<NamedLocation>> {
        require_policy_read(p)?;
        Ok(self.store.named_locations().await?)
    }

    pub async fn put_named_location(&self, p: &Principal, l: NamedLocation) -> ServiceResult<()> {
        require_policy_admin(p)?;
        let mut set = self.store.policy_set().await?;
        set.named_locations.retain(|x| x.name != l.name);
        set.named_locations.push(l.clone());
        set.validated()?;
        let mut tx = self.store.write().await?;
        tx.put_named_location(&l, self.now()).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "named_location.put",
                format!("location:{}", l.name),
                json!(l),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_named_location(&self, p: &Principal, name: &str) -> ServiceResult<()> {
        require_policy_admin(p)?;
        let mut set = self.store.policy_set().await?;
        set.named_locations.retain(|x| x.name != name);
        set.validated()
            .map_err(|e| ServiceError::Conflict(format!("location '{name}' is still used: {e}")))?;
        let mut tx = self.store.write().await?;
        if !tx.delete_named_location(name).await? {
            return Err(ServiceError::NotFound(format!("named location '{name}'")));
        }
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "named_location.delete",
                format!("location:{name}"),
                json!({}),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn strengths(&self, p: &Principal) -> ServiceResult<Vec<AuthenticationStrength>> {
        require_policy_read(p)?;
        let mut all = AuthenticationStrength::builtins();
        all.extend(self.store.custom_strengths().await?);
        Ok(all)
    }

    pub async fn put_strength(&self, p: &Principal, s: AuthenticationStrength) -> ServiceResult<()> {
        require_policy_admin(p)?;
        let mut set = self.store.policy_set().await?;
        set.strengths.retain(|x| x.name != s.name);
        set.strengths.push(s.clone());
        self.guard(p, &set.validated()?, false).await?;
        let mut tx = self.store.write().await?;
        tx.put_strength(&s, self.now()).await?;
        tx.audit(
            &AuditEntry::new(p.actor(), "strength.put", format!("strength:{}", s.name), json!(s)),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_strength(&self, p: &Principal, name: &str) -> ServiceResult<()> {
        require_policy_admin(p)?;
        let mut set = self.store.policy_set().await?;
        set.strengths.retain(|x| x.name != name);
        set.validated()
            .map_err(|e| ServiceError::Conflict(format!("strength '{name}' is still used: {e}")))?;
        let mut tx = self.store.write().await?;
        if !tx.delete_strength(name).await? {
            return Err(ServiceError::NotFound(format!("custom strength '{name}'")));
        }
        tx.audit(
            &AuditEntry::new(p.actor(), "strength.delete", format!("strength:{name}"), json!({})),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- exceptions ----------------------------------------------------

    pub async fn exceptions(&self, p: &Principal) -> ServiceResult<Vec<ExceptionView>> {
        require_policy_read(p)?;
        let now = self.now();
        Ok(self
            .store
            .exceptions()
            .await?
            .into_iter()
            .map(|record| {
                let in_force = now < record.expires_at;
                ExceptionView {
                    near_expiry: in_force && record.expires_at - now <= 7 * 86_400,
                    in_force,
                    record,
                }
            })
            .collect())
    }

    /// The caller approves; `requested_by` is who asked. No end date, no exception.
    #[allow(clippy::too_many_arguments)]
    /// Ask for an exception. The requester is the caller (a session's user,
    /// or a token's owner): a `requested_by` naming anyone else is refused.
    /// Someone else approves it (`approve_change_request`), which makes it.
    /// The local operator, which no approval could bind, makes it at once,
    /// naming the requester (an existing user).
    pub async fn create_exception(
        &self,
        p: &Principal,
        policy_id: &str,
        subject: ExceptionSubject,
        reason: &str,
        requested_by: Option<&str>,
        expires_at: i64,
    ) -> ServiceResult<ExceptionOutcome> {
        require_policy_admin(p)?;
        let now = self.now();
        if self.store.policy(policy_id).await?.is_none() {
            return Err(ServiceError::NotFound(format!("policy '{policy_id}'")));
        }
        let subject_user = match &subject {
            ExceptionSubject::User(u) => Some(self.user(u).await?),
            ExceptionSubject::Group(_) => None,
        };
        if matches!(p, Principal::Operator) {
            let requester = requested_by
                .ok_or_else(|| ServiceError::InvalidRequest("name the requester (an existing user)".into()))?;
            let requester = self.user(requester.trim()).await?;
            validate_exception(
                &requester.username,
                &p.actor(),
                reason,
                expires_at,
                self.config.exception_max_days,
                now,
            )?;
            let mut tx = self.store.write().await?;
            let rec = self
                .insert_exception_in(
                    &mut tx,
                    p,
                    policy_id,
                    subject,
                    reason,
                    &requester.username,
                    expires_at,
                    None,
                )
                .await?;
            tx.commit().await?;
            return Ok(ExceptionOutcome::Created(rec));
        }
        let requester_id = p.human_id().ok_or_else(|| {
            ServiceError::Forbidden(
                "an exception request needs a named requester: sign in, or use an API token that has an owner".into(),
            )
        })?;
        let requester = self
            .store
            .user_by_id(requester_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("requester".into()))?;
        if let Some(claimed) = requested_by.map(str::trim).filter(|c| !c.is_empty()) {
            if claimed != requester.username {
                return Err(ServiceError::InvalidRequest(format!(
                    "requested_by is the caller ('{}'), not '{claimed}'; leave it out",
                    requester.username
                )));
            }
        }
        // Reason and end date now; the approver is checked at approval.
        validate_exception(
            &requester.username,
            "a second approver",
            reason,
            expires_at,
            self.config.exception_max_days,
            now,
        )?;
        if subject_user.as_ref().is_some_and(|u| u.id == requester.id) {
            return Err(ServiceError::Forbidden(
                "nobody may request an exception for themselves".into(),
            ));
        }
        let pending = PendingException {
            policy_id: policy_id.to_owned(),
            subject,
            reason: reason.trim().to_owned(),
            expires_at,
        };
        let subject_json = serde_json::to_string(&pending).expect("exception serialises");
        let id = latchkey_store::new_id();
        let mut tx = self.store.write().await?;
        tx.insert_change_request(
            &latchkey_store::NewChangeRequest::change(
                &id,
                // The user the exception covers, or for a group the requester.
                subject_user.as_ref().map_or(&requester.id, |u| &u.id),
                ChangeKind::PolicyException.as_str(),
                &subject_json,
                &p.actor(),
                Some(&requester.id),
            ),
            now,
        )
        .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "policy_exception.request",
                format!("policy:{policy_id}"),
                json!({ "request_id": id, "subject": pending.subject, "reason": pending.reason, "requested_by": requester.username, "expires_at": expires_at }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(ExceptionOutcome::PendingApproval { request_id: id })
    }

    /// Make the exception an approved request asked for (inside the approval's transaction).
    pub(crate) async fn make_approved_exception(
        &self,
        tx: &mut latchkey_store::WriteTx,
        p: &Principal,
        req: &latchkey_store::TapRequestRecord,
    ) -> ServiceResult<String> {
        let pending: PendingException = serde_json::from_str(&req.subject)
            .map_err(|e| ServiceError::Internal(format!("stored exception request: {e}")))?;
        let requester_id = req
            .requester_user_id
            .as_deref()
            .ok_or_else(|| ServiceError::Internal("exception request without a requester".into()))?;
        let requester = self
            .store
            .user_by_id(requester_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("requester".into()))?;
        // The end date is checked again: a request may wait.
        validate_exception(
            &requester.username,
            &p.actor(),
            &pending.reason,
            pending.expires_at,
            self.config.exception_max_days,
            self.now(),
        )?;
        let rec = self
            .insert_exception_in(
                tx,
                p,
                &pending.policy_id,
                pending.subject,
                &pending.reason,
                &requester.username,
                pending.expires_at,
                Some(&req.id),
            )
            .await?;
        Ok(rec.id)
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_exception_in(
        &self,
        tx: &mut latchkey_store::WriteTx,
        p: &Principal,
        policy_id: &str,
        subject: ExceptionSubject,
        reason: &str,
        requested_by: &str,
        expires_at: i64,
        request_id: Option<&str>,
    ) -> ServiceResult<ExceptionRecord> {
        let rec = ExceptionRecord {
            id: latchkey_store::new_id(),
            policy_id: policy_id.to_owned(),
            subject,
            reason: reason.trim().to_owned(),
            requested_by: requested_by.to_owned(),
            approved_by: p.actor(),
            created_at: self.now(),
            expires_at,
            revoked_at: None,
        };
        tx.insert_exception(&rec).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "policy_exception.create",
                format!("policy:{policy_id}"),
                json!({ "exception_id": rec.id, "subject": rec.subject, "reason": rec.reason, "requested_by": rec.requested_by, "expires_at": rec.expires_at, "request_id": request_id }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        Ok(rec)
    }

    pub async fn revoke_exception(&self, p: &Principal, id: &str) -> ServiceResult<()> {
        require_policy_admin(p)?;
        let mut tx = self.store.write().await?;
        if !tx.revoke_exception(id, self.now()).await? {
            return Err(ServiceError::NotFound(format!("active exception '{id}'")));
        }
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "policy_exception.revoke",
                format!("exception:{id}"),
                json!({}),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- break-glass ---------------------------------------------------

    pub async fn break_glass_accounts(&self, p: &Principal) -> ServiceResult<Vec<BreakGlassView>> {
        require_policy_read(p)?;
        let now = self.now();
        let mut out = vec![];
        for record in self.store.break_glass_accounts().await? {
            let has_key = self
                .store
                .methods_for_user(&record.user_id)
                .await?
                .iter()
                .any(|m| m.kind == latchkey_core::MethodKind::Webauthn && m.state == MethodState::Active);
            let due = record.last_test_at.unwrap_or(record.created_at) + record.test_interval_days * 86_400;
            out.push(BreakGlassView {
                test_overdue: now > due,
                has_phishing_resistant_key: has_key,
                record,
            });
        }
        Ok(out)
    }

    pub async fn set_break_glass(
        &self,
        p: &Principal,
        username: &str,
        interval_days: Option<i64>,
    ) -> ServiceResult<()> {
        p.require_admin()?;
        let user = self.user(username).await?;
        let days = interval_days.unwrap_or(self.config.break_glass_test_interval_days);
        if !(1..=365).contains(&days) {
            return Err(ServiceError::InvalidRequest("test_interval_days must be 1-365".into()));
        }
        let mut tx = self.store.write().await?;
        tx.set_break_glass(&user.id, days, &p.actor(), self.now()).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "break_glass.set",
                format!("user:{}", user.username),
                json!({ "test_interval_days": days }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn unset_break_glass(&self, p: &Principal, username: &str) -> ServiceResult<()> {
        p.require_admin()?;
        let user = self.user(username).await?;
        let mut tx = self.store.write().await?;
        if !tx.unset_break_glass(&user.id).await? {
            return Err(ServiceError::NotFound(format!("break-glass account '{username}'")));
        }
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "break_glass.unset",
                format!("user:{}", user.username),
                json!({}),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record that the latest break-glass sign-in (within the last hour) was a planned test.
    pub async fn record_break_glass_test(&self, p: &Principal, username: &str, note: &str) -> ServiceResult<()> {
        p.require_admin()?;
        let user = self.user(username).await?;
        let now = self.now();
        let rec = self
            .store
            .break_glass_accounts()
            .await?
            .into_iter()
            .find(|b| b.user_id == user.id)
            .ok_or_else(|| ServiceError::NotFound(format!("break-glass account '{username}'")))?;
        if rec.last_use_at.is_none_or(|t| now - t > 3600) {
            return Err(ServiceError::InvalidState(
                "sign in with the break-glass account first; a test records a real sign-in from the last hour".into(),
            ));
        }
        let mut tx = self.store.write().await?;
        tx.record_break_glass_signin(&user.id, "test", Some(note), &p.actor(), now)
            .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "break_glass.test",
                format!("user:{}", user.username),
                json!({ "note": note }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn alerts(&self, p: &Principal, after: i64) -> ServiceResult<Vec<AlertRecord>> {
        require_policy_read(p)?;
        Ok(self.store.alerts(after, 1000).await?)
    }

    // ---- rollout -------------------------------------------------------

    pub async fn put_wave(&self, p: &Principal, wave: RolloutWave) -> ServiceResult<()> {
        require_policy_admin(p)?;
        let set = self.store.policy_set().await?;
        wave.validate(&set)?;
        let mut tx = self.store.write().await?;
        tx.put_wave(&wave, &p.actor(), self.now()).await?;
        tx.audit(
            &AuditEntry::new(p.actor(), "rollout.wave.put", format!("wave:{}", wave.id), json!(wave)),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_wave(&self, p: &Principal, id: &str) -> ServiceResult<()> {
        require_policy_admin(p)?;
        let mut tx = self.store.write().await?;
        if !tx.delete_wave(id).await? {
            return Err(ServiceError::NotFound(format!("wave '{id}'")));
        }
        tx.audit(
            &AuditEntry::new(p.actor(), "rollout.wave.delete", format!("wave:{id}"), json!({})),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every wave with its campaign phase and coverage.
    pub async fn waves(&self, p: &Principal) -> ServiceResult<Vec<WaveView>> {
        require_policy_read(p)?;
        let now = self.now();
        let set = self.store.policy_set().await?;
        let c = self.policies_now().await?;
        let owned = self.profiles_with_methods(&c).await?;
        let users: Vec<_> = owned.iter().map(|(p, m)| (p.facts(), m.clone())).collect();
        Ok(self
            .store
            .rollout_waves()
            .await?
            .into_iter()
            .map(|wave| WaveView {
                phase: wave.phase(now),
                coverage: rollout::coverage(&wave, &set, &users),
                wave,
            })
            .collect())
    }
}

/// Recorded step names (sessions, the sign-in log) as sign-in steps; names
/// this version does not know are left out.
/// A flow that can no longer complete with the user's methods ends with a
/// clear problem instead of a dead-end state.
pub(crate) fn step_up_problem(flow: &SignInFlow, factors: &[VerifyMethod], d: &Decision) -> Option<ServiceError> {
    let stuck = match &flow.state {
        SignInState::SecondFactorRequired { allowed } => allowed.is_empty(),
        SignInState::RegistrationRequired => !factors.is_empty() && !d.required_strengths.is_empty(),
        _ => false,
    };
    if !stuck {
        return None;
    }
    let by: Vec<String> = d
        .applied
        .iter()
        .filter(|r| {
            r.grant
                .iter()
                .any(|g| matches!(g, latchkey_core::policy::GrantControl::RequireStrength(_)))
        })
        .map(|r| format!("'{}'", r.policy_name))
        .collect();
    Some(ServiceError::AuthenticationStrengthRequired(format!(
        "policy {} requires {}; none of your registered methods ({}) satisfies it. Register a method that does (a Temporary Access Pass from the helpdesk lets you in to register it)",
        by.join(", "),
        d.required_strengths.join(" and "),
        factors.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
    )))
}

pub(crate) fn steps(names: &[String]) -> Vec<VerifyMethod> {
    names
        .iter()
        .filter_map(|m| serde_json::from_value(serde_json::Value::String(m.clone())).ok())
        .collect()
}
