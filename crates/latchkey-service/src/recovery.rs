//! Recovery without "disable MFA": two-person approval of passes for
//! privileged users, helpdesk runbook cases, and device lifecycle.

use latchkey_core::device::{parse_enum, DeviceState, Ownership, Platform};
use latchkey_core::helpdesk::{CaseState, CaseStep, DeliveryChannel, HelpdeskCase, Scenario};
use latchkey_core::tap::{IdentityVerification, TapRequest};
use latchkey_core::{MethodState, Role};
use latchkey_store::{new_id, AuditEntry, CaseRecord, DeviceRecord, TapRequestRecord, UserRecord};
use serde_json::json;

use crate::app::{App, IssuedTap, Principal, TapOutcome, API_SCOPE_MDM};
use crate::error::{ServiceError, ServiceResult};

/// A case with the facts a console shows next to it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseView {
    pub id: String,
    pub username: String,
    pub scenario: Scenario,
    pub opened_by: String,
    pub opened_at: i64,
    pub deadline: i64,
    pub overdue: bool,
    pub next_step: Option<CaseStep>,
    #[serde(flatten)]
    pub case: HelpdeskCase,
}

/// What a step request carries, besides the step itself.
#[derive(Debug, Clone, Default)]
pub struct StepInput {
    pub verification: Option<IdentityVerification>,
    pub lifetime_minutes: Option<i64>,
    pub single_use: Option<bool>,
    pub channel: Option<String>,
    pub remove_method_ids: Vec<String>,
    pub lost_device_ids: Vec<String>,
    pub note: Option<String>,
    /// For a privileged user: the approved and issued pass request.
    pub tap_request_id: Option<String>,
}

/// The result of recording a step: the case, and a pass when one was issued
/// (shown once, to the agent, who delivers it out of band).
pub struct StepResult {
    pub case: CaseView,
    pub tap: Option<IssuedTap>,
}

fn require_helpdesk(p: &Principal) -> ServiceResult<()> {
    if p.has_role(Role::Helpdesk) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden("this needs the helpdesk or admin role".into()))
    }
}

fn case_state_str(c: &HelpdeskCase) -> &'static str {
    match c.state {
        CaseState::Open { .. } => "open",
        CaseState::Closed { .. } => "closed",
        CaseState::Cancelled { .. } => "cancelled",
    }
}

impl App {
    // ---- two-person pass approval ---------------------------------------

    pub async fn tap_requests(&self, p: &Principal, state: Option<&str>) -> ServiceResult<Vec<TapRequestRecord>> {
        require_helpdesk(p)?;
        Ok(self.store.list_tap_requests(state).await?)
    }

    /// A second administrator approves a pass for a privileged user. The
    /// approver may be neither the requester nor the user.
    pub async fn approve_tap_request(&self, p: &Principal, id: &str) -> ServiceResult<TapRequestRecord> {
        // Requests exist only for privileged users: a second administrator decides.
        p.require_admin()?;
        let req = self
            .store
            .tap_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("pass request".into()))?;
        if req.requested_by == p.actor() {
            return Err(ServiceError::Forbidden(
                "the approver must be someone other than the requester".into(),
            ));
        }
        let user = self
            .store
            .user_by_id(&req.user_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("user".into()))?;
        if p.is_user(&user) {
            return Err(ServiceError::Forbidden(
                "nobody may approve a pass for themselves".into(),
            ));
        }
        let mut tx = self.store.write().await?;
        if !tx
            .decide_tap_request(id, "pending_approval", "approved", Some(&p.actor()), None, self.now())
            .await?
        {
            return Err(ServiceError::InvalidState(format!(
                "the request is {}, not pending approval",
                req.state
            )));
        }
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "tap.approve",
                format!("user:{}", user.username),
                json!({ "request_id": id, "requested_by": req.requested_by }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(self.store.tap_request(id).await?.expect("request exists"))
    }

    /// The requester issues an approved pass; its lifetime starts now.
    pub async fn issue_approved_tap(&self, p: &Principal, id: &str) -> ServiceResult<IssuedTap> {
        require_helpdesk(p)?;
        let req = self
            .store
            .tap_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("pass request".into()))?;
        if req.requested_by != p.actor() {
            return Err(ServiceError::Forbidden(
                "only the requester issues an approved pass".into(),
            ));
        }
        let user = self
            .store
            .user_by_id(&req.user_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("user".into()))?;
        let verification: Option<IdentityVerification> = serde_json::from_str(&req.verification_json)
            .map_err(|e| ServiceError::Internal(format!("stored verification: {e}")))?;
        let now = self.now();
        let grant = self.config.tap.validate(
            &TapRequest {
                lifetime_minutes: Some(req.lifetime_minutes),
                single_use: req.single_use,
                starts_in_minutes: Some(req.starts_in_minutes),
                verification: verification.clone(),
                issuer_is_subject: p.is_user(&user),
                // Bounded when requested (a case's request was checked then).
                scenario: None,
            },
            now,
        )?;
        let mut tx = self.store.write().await?;
        let verification = serde_json::to_value(&verification).expect("verification serialises");
        let issued = self
            .insert_tap(
                &mut tx,
                &user,
                &p.actor(),
                &verification,
                &grant,
                req.decided_by.as_deref(),
                now,
            )
            .await?;
        if !tx
            .decide_tap_request(id, "approved", "issued", None, Some(&issued.id), now)
            .await?
        {
            return Err(ServiceError::InvalidState(format!(
                "the request is {}, not approved",
                req.state
            )));
        }
        tx.commit().await?;
        Ok(issued)
    }

    // ---- devices ---------------------------------------------------------

    pub async fn register_device(
        &self,
        p: &Principal,
        username: &str,
        name: &str,
        platform: &str,
        ownership: &str,
    ) -> ServiceResult<DeviceRecord> {
        let user = self.user(username).await?;
        if !p.has_role(Role::Helpdesk) {
            self.require_register(p, &user).await?;
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ServiceError::InvalidRequest(
                "device name must be 1-100 printable characters".into(),
            ));
        }
        let platform: Platform = parse_enum(platform, "platform", "ios, android, windows, macos, linux, other")?;
        let ownership: Ownership = parse_enum(ownership, "ownership", "byod, corporate")?;
        let enum_str = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let (platform, ownership) = (
            enum_str(serde_json::to_value(platform).unwrap()),
            enum_str(serde_json::to_value(ownership).unwrap()),
        );
        let id = new_id();
        let now = self.now();
        let mut tx = self.store.write().await?;
        tx.insert_device(&id, &user.id, name, &platform, &ownership, now)
            .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "device.register",
                format!("user:{}", user.username),
                json!({ "device_id": id, "name": name, "platform": platform, "ownership": ownership }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(self.store.device(&id).await?.expect("device exists"))
    }

    pub async fn devices(&self, p: &Principal, username: &str) -> ServiceResult<Vec<DeviceRecord>> {
        let user = self.get_user(p, username).await?;
        Ok(self.store.devices_for_user(&user.id).await?)
    }

    /// Compliance from an MDM integration (API token with the `mdm` scope).
    pub async fn set_device_compliance(
        &self,
        p: &Principal,
        device_id: &str,
        managed: bool,
        compliant: bool,
        external_id: Option<&str>,
    ) -> ServiceResult<DeviceRecord> {
        if !p.has_scope(API_SCOPE_MDM) {
            return Err(ServiceError::Forbidden(
                "compliance updates need an API token with the mdm scope".into(),
            ));
        }
        let device = self
            .store
            .device(device_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("device".into()))?;
        let mut tx = self.store.write().await?;
        tx.set_device_compliance(device_id, managed, compliant, external_id, self.now())
            .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "device.compliance",
                format!("device:{device_id}"),
                json!({ "user_id": device.user_id, "managed": managed, "compliant": compliant, "external_id": external_id }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(self.store.device(device_id).await?.expect("device exists"))
    }

    /// Mark a device lost or retired: every method bound to it is revoked and
    /// its sessions end, in one audited transaction.
    pub async fn end_device(
        &self,
        p: &Principal,
        device_id: &str,
        to: DeviceState,
    ) -> ServiceResult<(DeviceRecord, Vec<String>, u64)> {
        let device = self
            .store
            .device(device_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("device".into()))?;
        let user = self
            .store
            .user_by_id(&device.user_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("user".into()))?;
        if !p.has_role(Role::Helpdesk) {
            self.require_register(p, &user).await?;
        }
        let now = self.now();
        let mut tx = self.store.write().await?;
        let (methods, sessions) = self.end_device_in(&mut tx, p, &user, &device, to, now).await?;
        tx.commit().await?;
        let device = self.store.device(device_id).await?.unwrap_or(device);
        Ok((device, methods, sessions))
    }

    async fn end_device_in(
        &self,
        tx: &mut latchkey_store::WriteTx,
        p: &Principal,
        user: &UserRecord,
        device: &DeviceRecord,
        to: DeviceState,
        now: i64,
    ) -> ServiceResult<(Vec<String>, u64)> {
        let from: DeviceState = parse_enum(&device.state, "device state", "active, lost, retired")?;
        let to = from.transition(to)?;
        let (methods, sessions) = tx.end_device(&device.id, to.as_str(), now).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                if to == DeviceState::Lost { "device.lost" } else { "device.retire" },
                format!("user:{}", user.username),
                json!({ "device_id": device.id, "name": device.name, "revoked_methods": methods, "sessions_ended": sessions }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.notify(
            &user.id,
            "outbox",
            "A device was removed from your account",
            &format!(
                "The device '{}' was marked {}; {} sign-in method(s) bound to it no longer work.",
                device.name,
                to.as_str(),
                methods.len()
            ),
            now,
        )
        .await?;
        Ok((methods, sessions))
    }

    /// Bind a method (e.g. an authenticator app) to the device it lives on, so
    /// losing the device revokes it.
    pub async fn bind_method_to_device(
        &self,
        p: &Principal,
        username: &str,
        method_id: &str,
        device_id: &str,
    ) -> ServiceResult<()> {
        let user = self.user(username).await?;
        self.require_register(p, &user).await?;
        let mut tx = self.store.write().await?;
        tx.bind_method_device(&user.id, method_id, device_id).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "method.bind_device",
                format!("user:{}", user.username),
                json!({ "method_id": method_id, "device_id": device_id }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- helpdesk cases --------------------------------------------------

    async fn case_view(&self, rec: &CaseRecord) -> ServiceResult<CaseView> {
        let case: HelpdeskCase =
            serde_json::from_str(&rec.case_json).map_err(|e| ServiceError::Internal(format!("stored case: {e}")))?;
        let user = self
            .store
            .user_by_id(&rec.user_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("user".into()))?;
        Ok(CaseView {
            id: rec.id.clone(),
            username: user.username,
            scenario: case.scenario,
            opened_by: rec.opened_by.clone(),
            opened_at: rec.opened_at,
            deadline: rec.deadline,
            overdue: case.is_overdue(self.now()),
            next_step: case.next_step(),
            case,
        })
    }

    pub async fn open_case(&self, p: &Principal, username: &str, scenario: &str) -> ServiceResult<CaseView> {
        require_helpdesk(p)?;
        let scenario = Scenario::parse(scenario)?;
        let user = self.user(username).await?;
        if p.is_user(&user) {
            return Err(ServiceError::Forbidden(
                "open a case for someone else; your own recovery goes through a colleague".into(),
            ));
        }
        let now = self.now();
        let existing = self.store.methods_for_user(&user.id).await?;
        let at_open = existing
            .iter()
            .filter(|m| m.state == MethodState::Active && m.kind.second_factor().is_some())
            .map(|m| m.id.clone())
            .collect();
        let case = HelpdeskCase::open(scenario, now, at_open);
        let id = new_id();
        let json = serde_json::to_string(&case).expect("case serialises");
        let mut tx = self.store.write().await?;
        tx.insert_case(
            &id,
            &user.id,
            scenario.as_str(),
            "open",
            &json,
            &p.actor(),
            now,
            case.deadline,
        )
        .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "case.open",
                format!("user:{}", user.username),
                json!({ "case_id": id, "scenario": scenario, "deadline": case.deadline }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.case(p, &id).await
    }

    pub async fn case(&self, p: &Principal, id: &str) -> ServiceResult<CaseView> {
        require_helpdesk(p)?;
        let rec = self
            .store
            .case(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("case".into()))?;
        self.case_view(&rec).await
    }

    pub async fn cases(&self, p: &Principal, username: Option<&str>, open_only: bool) -> ServiceResult<Vec<CaseView>> {
        require_helpdesk(p)?;
        let user_id = match username {
            Some(u) => Some(self.user(u).await?.id),
            None => None,
        };
        let mut out = vec![];
        for rec in self.store.list_cases(user_id.as_deref(), open_only).await? {
            out.push(self.case_view(&rec).await?);
        }
        Ok(out)
    }

    /// Record the next step of a case, after checking its evidence. Steps
    /// that change the world (issuing the pass, removing the old device's
    /// methods) do so in the same transaction as the step record.
    pub async fn case_step(&self, p: &Principal, id: &str, step: &str, input: StepInput) -> ServiceResult<StepResult> {
        require_helpdesk(p)?;
        let step = CaseStep::parse(step)?;
        let (rec, case, user) = self.load_case(id).await?;
        // Order first, so an out-of-turn step says so before its evidence is checked.
        case.check_next(step)?;
        let actor = p.actor();
        let now = self.now();
        let mut tap = None;
        let mut tx = self.store.write().await?;
        let next = match step {
            CaseStep::VerifyIdentity => {
                let v = input
                    .verification
                    .ok_or_else(|| ServiceError::InvalidRequest("record the verification: {method, note}".into()))?;
                case.verify_identity(&actor, v, now)?
            }
            CaseStep::IssueTap => {
                let verification = case.verification.clone();
                let single_use = input
                    .single_use
                    .unwrap_or(case.scenario != Scenario::NewEmployee || !self.config.tap.allow_multi_use);
                let grant = self.config.tap.validate(
                    &TapRequest {
                        lifetime_minutes: input.lifetime_minutes,
                        single_use,
                        starts_in_minutes: None,
                        verification: verification.clone(),
                        issuer_is_subject: p.is_user(&user),
                        scenario: Some(case.scenario),
                    },
                    now,
                )?;
                let vjson = serde_json::to_value(&verification).expect("verification serialises");
                if user.privileged() {
                    // Two people: the request is approved by a second
                    // helpdesk member and issued by the requester first; the
                    // step then records that issued request.
                    let Some(req_id) = input.tap_request_id.as_deref() else {
                        drop(tx);
                        let outcome = self
                            .issue_tap_for(
                                p,
                                &user.username,
                                input.lifetime_minutes,
                                single_use,
                                None,
                                verification,
                                Some(case.scenario),
                            )
                            .await?;
                        let request_id = match outcome {
                            TapOutcome::PendingApproval { request_id } => request_id,
                            TapOutcome::Issued(_) => {
                                return Err(ServiceError::Internal("privileged pass issued without approval".into()))
                            }
                        };
                        return Err(ServiceError::ApprovalRequired { request_id });
                    };
                    let req = self
                        .store
                        .tap_request(req_id)
                        .await?
                        .ok_or_else(|| ServiceError::NotFound("pass request".into()))?;
                    if req.user_id != user.id || req.state != "issued" {
                        return Err(ServiceError::InvalidState(
                            "that pass request is not an issued pass for this user".into(),
                        ));
                    }
                    let evidence =
                        json!({ "tap_request_id": req.id, "tap_id": req.tap_id, "approved_by": req.decided_by });
                    let next = case.complete(step, &actor, evidence, now)?;
                    self.save_case(
                        &mut tx,
                        p,
                        &rec,
                        &user,
                        &next,
                        json!({ "step": step, "outcome": "done" }),
                    )
                    .await?;
                    tx.commit().await?;
                    return Ok(StepResult {
                        case: self.case(p, id).await?,
                        tap: None,
                    });
                }
                let issued = self
                    .insert_tap(&mut tx, &user, &actor, &vjson, &grant, None, now)
                    .await?;
                let evidence =
                    json!({ "tap_id": issued.id, "expires_at": issued.expires_at, "single_use": issued.single_use });
                tap = Some(issued);
                case.complete(step, &actor, evidence, now)?
            }
            CaseStep::DeliverTap => {
                let channel = input
                    .channel
                    .as_deref()
                    .ok_or_else(|| ServiceError::InvalidRequest("say how the pass was delivered (channel)".into()))?;
                let channel = DeliveryChannel::parse(channel)?;
                case.complete(step, &actor, json!({ "channel": channel, "note": input.note }), now)?
            }
            CaseStep::ConfirmRegistration => {
                let methods = self.store.methods_for_user(&user.id).await?;
                let new: Vec<&String> = methods
                    .iter()
                    .filter(|m| m.state == MethodState::Active && m.kind.second_factor().is_some())
                    .filter(|m| !case.methods_at_open.contains(&m.id))
                    .map(|m| &m.id)
                    .collect();
                if new.is_empty() {
                    return Err(ServiceError::InvalidState(
                        "the user has not registered a new method since the case opened".into(),
                    ));
                }
                case.complete(step, &actor, json!({ "new_methods": new }), now)?
            }
            CaseStep::RemoveOldMethods => {
                let mut removed = vec![];
                for device_id in &input.lost_device_ids {
                    let device = self
                        .store
                        .device(device_id)
                        .await?
                        .ok_or_else(|| ServiceError::NotFound("device".into()))?;
                    if device.user_id != user.id {
                        return Err(ServiceError::InvalidRequest(format!(
                            "device {device_id} is not this user's"
                        )));
                    }
                    let (m, _) = self
                        .end_device_in(&mut tx, p, &user, &device, DeviceState::Lost, now)
                        .await?;
                    removed.extend(m);
                }
                let methods = self.store.methods_for_user(&user.id).await?;
                for mid in &input.remove_method_ids {
                    if removed.contains(mid) {
                        continue;
                    }
                    let m = methods
                        .iter()
                        .find(|m| &m.id == mid)
                        .ok_or_else(|| ServiceError::NotFound(format!("method {mid}")))?;
                    tx.delete_method(&user.id, mid).await?;
                    tx.audit(
                        &AuditEntry::new(
                            &actor,
                            "method.remove",
                            format!("user:{}", user.username),
                            json!({ "method_id": m.id, "kind": m.kind, "label": m.label, "case_id": id }),
                        ),
                        self.clock.now_ms(),
                    )
                    .await?;
                    removed.push(mid.clone());
                }
                let stale: Vec<&String> = methods
                    .iter()
                    .filter(|m| !removed.contains(&m.id))
                    .filter(|m| m.state == MethodState::Active && m.kind.second_factor().is_some())
                    .filter(|m| case.methods_at_open.contains(&m.id))
                    .filter(|m| m.kind != latchkey_core::MethodKind::RecoveryCodes)
                    .map(|m| &m.id)
                    .collect();
                if !input.remove_method_ids.is_empty() {
                    // Methods removed by the helpdesk: the user's sessions and
                    // grants end with them (a lost device's already did).
                    let (sessions, grants) = self
                        .end_sessions_for_credential_change(&mut tx, p, &user, "method_removed", now)
                        .await?;
                    tx.audit(
                        &AuditEntry::new(
                            &actor,
                            "session.end_all",
                            format!("user:{}", user.username),
                            json!({ "reason": "method_removed", "case_id": id, "sessions_ended": sessions, "oidc_grants_revoked": grants }),
                        ),
                        self.clock.now_ms(),
                    )
                    .await?;
                }
                if removed.is_empty() && !stale.is_empty() {
                    return Err(ServiceError::InvalidState(format!(
                        "methods registered before the case are still active ({}); remove the old device's methods, mark the device lost, or skip this step with a reason",
                        stale.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
                case.complete(
                    step,
                    &actor,
                    json!({ "removed_methods": removed, "lost_devices": input.lost_device_ids }),
                    now,
                )?
            }
            CaseStep::ConfirmSignIn => {
                let since = case.done_at(CaseStep::ConfirmRegistration).unwrap_or(case.opened_at);
                let Some(s) = self.store.normal_signin_since(&user.id, since).await? else {
                    return Err(ServiceError::InvalidState(
                        "no normal sign-in (without a pass) since the new method was registered; ask the user to sign in".into(),
                    ));
                };
                case.complete(
                    step,
                    &actor,
                    json!({ "signin_at": s.at, "methods": s.methods, "acr": s.acr }),
                    now,
                )?
            }
            CaseStep::Close => case.complete(step, &actor, json!({ "note": input.note }), now)?,
        };
        self.save_case(
            &mut tx,
            p,
            &rec,
            &user,
            &next,
            json!({ "step": step, "outcome": "done" }),
        )
        .await?;
        tx.commit().await?;
        Ok(StepResult {
            case: self.case(p, id).await?,
            tap,
        })
    }

    pub async fn case_skip(&self, p: &Principal, id: &str, step: &str, reason: &str) -> ServiceResult<CaseView> {
        require_helpdesk(p)?;
        let step = CaseStep::parse(step)?;
        let (rec, case, user) = self.load_case(id).await?;
        let next = case.skip(step, &p.actor(), reason, self.now())?;
        let mut tx = self.store.write().await?;
        self.save_case(
            &mut tx,
            p,
            &rec,
            &user,
            &next,
            json!({ "step": step, "outcome": "skipped", "reason": reason.trim() }),
        )
        .await?;
        tx.commit().await?;
        self.case(p, id).await
    }

    pub async fn case_cancel(&self, p: &Principal, id: &str, reason: &str) -> ServiceResult<CaseView> {
        require_helpdesk(p)?;
        let (rec, case, user) = self.load_case(id).await?;
        // The pass issued for the case dies with it (if it can still be used).
        let pass = match case.evidence(CaseStep::IssueTap).and_then(|e| e["tap_id"].as_str()) {
            Some(tap_id) => self
                .store
                .tap(&user.id, tap_id)
                .await?
                .filter(|t| t.revoked_at.is_none() && t.expires_at > self.now()),
            None => None,
        };
        let next = case.cancel(reason, self.now())?;
        let mut tx = self.store.write().await?;
        let revoked_pass = match &pass {
            Some(t) => {
                let why = format!("helpdesk case cancelled: {}", reason.trim());
                let why: String = why.chars().take(500).collect();
                Some(
                    self.revoke_tap_in(&mut tx, &p.actor(), &user, t, Some(&why), Some(id))
                        .await?
                        .tap_id,
                )
            }
            None => None,
        };
        self.save_case(
            &mut tx,
            p,
            &rec,
            &user,
            &next,
            json!({ "outcome": "cancelled", "reason": reason.trim(), "revoked_tap_id": revoked_pass }),
        )
        .await?;
        tx.commit().await?;
        self.case(p, id).await
    }

    async fn load_case(&self, id: &str) -> ServiceResult<(CaseRecord, HelpdeskCase, UserRecord)> {
        let rec = self
            .store
            .case(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("case".into()))?;
        let case: HelpdeskCase =
            serde_json::from_str(&rec.case_json).map_err(|e| ServiceError::Internal(format!("stored case: {e}")))?;
        let user = self
            .store
            .user_by_id(&rec.user_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("user".into()))?;
        Ok((rec, case, user))
    }

    async fn save_case(
        &self,
        tx: &mut latchkey_store::WriteTx,
        p: &Principal,
        rec: &CaseRecord,
        user: &UserRecord,
        next: &HelpdeskCase,
        details: serde_json::Value,
    ) -> ServiceResult<()> {
        let json = serde_json::to_string(next).expect("case serialises");
        tx.update_case(&rec.id, &rec.case_json, case_state_str(next), &json, self.now())
            .await?;
        let action = match next.state {
            CaseState::Closed { .. } => "case.close",
            CaseState::Cancelled { .. } => "case.cancel",
            CaseState::Open { .. } => "case.step",
        };
        let mut details = details;
        details["case_id"] = json!(rec.id);
        tx.audit(
            &AuditEntry::new(p.actor(), action, format!("user:{}", user.username), details),
            self.clock.now_ms(),
        )
        .await?;
        Ok(())
    }
}
