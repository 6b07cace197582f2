//! Recovery without "disable MFA": two-person approval of passes for
//! privileged users, helpdesk runbook cases, and device lifecycle.

use latchkey_core::device::{parse_enum, DeviceState, Ownership, Platform};
use latchkey_core::helpdesk::{CaseState, CaseStep, DeliveryChannel, HelpdeskCase, Scenario};
use latchkey_core::tap::{check_approval, check_change_request, ChangeKind, IdentityVerification, TapRequest};
use latchkey_core::{MethodKind, MethodState, Role, UserState};
use latchkey_store::{new_id, AuditEntry, CaseRecord, DeviceRecord, NewChangeRequest, TapRequestRecord, UserRecord};
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
    /// For a privileged user: the approved request for this step's removals.
    pub approval_id: Option<String>,
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

/// What a case's removal step approves, exactly: the case, the methods and
/// the devices, sorted (canonical JSON).
fn removal_subject(case_id: &str, input: &StepInput) -> String {
    let mut methods = input.remove_method_ids.clone();
    methods.sort();
    methods.dedup();
    let mut devices = input.lost_device_ids.clone();
    devices.sort();
    devices.dedup();
    json!({ "case": case_id, "methods": methods, "devices": devices }).to_string()
}

/// The one rule of who needs a second approver to change `user`'s access:
/// a privileged user (any role), changed by someone other than themself.
/// The local operator is exempt: it holds the master key and the database,
/// so an approval could not bind it.
pub(crate) fn two_person_rule_applies(p: &Principal, user: &UserRecord, now: i64) -> bool {
    user.privileged_at(now) && !p.acts_for(user) && !matches!(p, Principal::Operator)
}

/// Whether `p` is the one who asked for `req`: the same person, or for a
/// request without a known person, the same actor.
pub(crate) fn same_requester(req: &TapRequestRecord, p: &Principal) -> bool {
    match (&req.requester_user_id, p.human_id()) {
        (Some(r), Some(h)) => r == h,
        (None, None) => req.requested_by == p.actor(),
        _ => false,
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
    // ---- privileged change requests (two people) -------------------------
    //
    // One rule, one place: a change to a privileged user's access (a pass, a
    // password, a method added or removed, a device ended, a helpdesk case's
    // removals) made by someone other than that user, and every policy
    // exception, waits for a second person. People are compared by user id:
    // a session's user, or an API token's owner. See
    // `latchkey_core::tap::ChangeKind` for the states.

    pub async fn change_requests(&self, p: &Principal, state: Option<&str>) -> ServiceResult<Vec<TapRequestRecord>> {
        if !(p.has_role(Role::Helpdesk) || p.has_role(Role::SecurityAdmin)) {
            return Err(ServiceError::Forbidden(
                "change requests are listed for the helpdesk, security_admin or admin role".into(),
            ));
        }
        Ok(self.store.list_tap_requests(state).await?)
    }

    /// Record a request for `kind` on `user`, audited, in its own
    /// transaction, and answer that it awaits approval.
    pub(crate) async fn request_change(
        &self,
        p: &Principal,
        user: &UserRecord,
        kind: ChangeKind,
        subject: &str,
        details: serde_json::Value,
    ) -> ServiceResult<String> {
        check_change_request(p.human_id(), Some(&user.id))?;
        let id = new_id();
        let now = self.now();
        let mut tx = self.store.write().await?;
        tx.insert_change_request(
            &NewChangeRequest::change(&id, &user.id, kind.as_str(), subject, &p.actor(), p.human_id()),
            now,
        )
        .await?;
        let mut details = details;
        details["request_id"] = json!(id);
        details["kind"] = json!(kind.as_str());
        details["reason"] = json!("privileged account: a second approver is required");
        tx.audit(
            &AuditEntry::new(p.actor(), "change.request", format!("user:{}", user.username), details),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The gate of every change to a privileged user's access: `Ok(None)`
    /// when the two-person rule does not apply (the user holds no role, or
    /// acts on their own account, or the local operator acts — it holds the
    /// master key and the database, so no approval could bind it);
    /// `Ok(Some(request))` when `approval` names a request approved for
    /// exactly this change and this requester (consume it with
    /// [`App::consume_change`] in the change's transaction); otherwise a new
    /// request is recorded and the answer is `ApprovalRequired`.
    pub(crate) async fn gate_privileged_change(
        &self,
        p: &Principal,
        user: &UserRecord,
        kind: ChangeKind,
        subject: &str,
        approval: Option<&str>,
    ) -> ServiceResult<Option<TapRequestRecord>> {
        if !two_person_rule_applies(p, user, self.now()) {
            return Ok(None);
        }
        self.second_person_gate(p, user, kind, subject, approval)
            .await
            .map(Some)
    }

    /// The request flow itself, for a change that always needs a second
    /// person: the approved request `approval` names for exactly this
    /// change, or a new request recorded and `ApprovalRequired`.
    pub(crate) async fn second_person_gate(
        &self,
        p: &Principal,
        user: &UserRecord,
        kind: ChangeKind,
        subject: &str,
        approval: Option<&str>,
    ) -> ServiceResult<TapRequestRecord> {
        if let Some(id) = approval {
            return self.approved_change(p, user, kind, subject, id).await;
        }
        let request_id = self
            .request_change(p, user, kind, subject, json!({ "subject": subject }))
            .await?;
        Err(ServiceError::ApprovalRequired { request_id })
    }

    /// The request `id`, approved, for `kind` on `user` with `subject`, asked
    /// by the same person (or, for a request without a known person, the
    /// same actor) as `p`.
    pub(crate) async fn approved_change(
        &self,
        p: &Principal,
        user: &UserRecord,
        kind: ChangeKind,
        subject: &str,
        id: &str,
    ) -> ServiceResult<TapRequestRecord> {
        let req = self
            .store
            .tap_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("change request".into()))?;
        if req.kind != kind.as_str() || req.user_id != user.id || req.subject != subject {
            return Err(ServiceError::InvalidState(format!(
                "request {id} approves another change (a {} for another subject)",
                req.kind
            )));
        }
        if !same_requester(&req, p) {
            return Err(ServiceError::Forbidden(
                "only the requester makes an approved change".into(),
            ));
        }
        if req.state != "approved" {
            return Err(ServiceError::InvalidState(format!(
                "request {id} is {}, not approved",
                req.state
            )));
        }
        Ok(req)
    }

    /// Use an approved request inside the change's transaction (once).
    pub(crate) async fn consume_change(
        &self,
        tx: &mut latchkey_store::WriteTx,
        req: &TapRequestRecord,
        result_id: Option<&str>,
    ) -> ServiceResult<()> {
        if latchkey_core::tap::approval_expired(req.decided_at, self.now()) {
            return Err(ServiceError::InvalidState(format!(
                "the approval of request {} is more than a day old; ask again",
                req.id
            )));
        }
        if !tx
            .decide_tap_request(&req.id, "approved", "used", None, result_id, self.now())
            .await?
        {
            return Err(ServiceError::InvalidState(format!(
                "request {} was already used",
                req.id
            )));
        }
        Ok(())
    }

    /// A second person approves a request. Passes and credential changes
    /// need an administrator; policy exceptions a security administrator.
    /// The approver is a named person (a session, or a token with an owner
    /// who still holds the role), neither the requester nor the user the
    /// change is for. There is no automatic approval, however few
    /// administrators there are: a break-glass account is the way out.
    pub async fn approve_change_request(&self, p: &Principal, id: &str) -> ServiceResult<TapRequestRecord> {
        let req = self
            .store
            .tap_request(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("change request".into()))?;
        let kind = ChangeKind::parse(&req.kind)?;
        let role = if kind == ChangeKind::PolicyException {
            Role::SecurityAdmin
        } else {
            Role::Admin
        };
        if !p.has_role(role) {
            return Err(ServiceError::Forbidden(format!(
                "approving this request needs the {} role",
                if role == Role::Admin {
                    "admin"
                } else {
                    "security_admin or admin"
                }
            )));
        }
        if let Principal::ApiToken(t) = p {
            // A token is only as good as its owner: one who lost the role or
            // left does not approve through a token made earlier.
            if let Some(owner_id) = &t.owner_user_id {
                let owner = self.store.user_by_id(owner_id).await?;
                let holds = owner.is_some_and(|o| {
                    o.state == UserState::Active && (o.roles.contains(&role) || o.roles.contains(&Role::Admin))
                });
                if !holds {
                    return Err(ServiceError::Forbidden(
                        "this token's owner no longer holds the role to approve".into(),
                    ));
                }
            }
        }
        check_approval(req.requester_user_id.as_deref(), p.human_id(), Some(&req.user_id))?;
        let user = self
            .store
            .user_by_id(&req.user_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("user".into()))?;
        let approver = p.human_id().expect("check_approval needs a named approver");
        let now = self.now();
        let mut tx = self.store.write().await?;
        if !tx.approve_change_request(id, &p.actor(), approver, now).await? {
            return Err(ServiceError::InvalidState(format!(
                "the request is {}, not pending approval",
                req.state
            )));
        }
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                if kind == ChangeKind::Tap { "tap.approve" } else { "change.approve" },
                format!("user:{}", user.username),
                json!({ "request_id": id, "kind": kind.as_str(), "subject": req.subject, "requested_by": req.requested_by }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        if kind == ChangeKind::PolicyException {
            // Nothing secret to re-send: the approval makes the exception.
            let exception_id = self.make_approved_exception(&mut tx, p, &req).await?;
            let approved = TapRequestRecord {
                state: "approved".into(),
                decided_at: Some(now),
                ..req.clone()
            };
            self.consume_change(&mut tx, &approved, Some(&exception_id)).await?;
        }
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
        if req.kind != ChangeKind::Tap.as_str() {
            return Err(ServiceError::InvalidState(format!(
                "request {id} is not a pass request"
            )));
        }
        if !same_requester(&req, p) {
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
                issuer_is_subject: p.acts_for(&user),
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
    /// For a privileged user's device, ended by someone else, `approval`
    /// names the approved request (the first call records one).
    pub async fn end_device(
        &self,
        p: &Principal,
        device_id: &str,
        to: DeviceState,
        approval: Option<&str>,
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
        let subject = format!("{device_id}:{}", to.as_str());
        let approved = self
            .gate_privileged_change(p, &user, ChangeKind::DeviceEnd, &subject, approval)
            .await?;
        let now = self.now();
        let mut tx = self.store.write().await?;
        if let Some(req) = &approved {
            self.consume_change(&mut tx, req, Some(device_id)).await?;
        }
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
        let (methods, mut sessions) = tx.end_device(&device.id, to.as_str(), now).await?;
        // A lost device's factors may already have opened sessions elsewhere
        // (a thief's laptop, an OIDC application): they all end, with their
        // grants, as after any credential change by someone else.
        let mut grants = 0;
        if to == DeviceState::Lost {
            let (s, g) = self
                .end_sessions_for_credential_change(tx, p, user, "device_lost", now)
                .await?;
            sessions += s;
            grants = g;
        }
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                if to == DeviceState::Lost { "device.lost" } else { "device.retire" },
                format!("user:{}", user.username),
                json!({ "device_id": device.id, "name": device.name, "revoked_methods": methods, "sessions_ended": sessions, "oidc_grants_revoked": grants }),
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
        // A WebAuthn key bound to a device proves that device at sign-in
        // (finding 9): the user must not be able to vouch for it themselves.
        let methods = self.store.methods_for_user(&user.id).await?;
        if methods
            .iter()
            .any(|m| m.id == method_id && m.kind == MethodKind::Webauthn)
            && !p.is_admin()
        {
            return Err(ServiceError::Forbidden(
                "binding a security key or passkey to a device proves the device to conditional access; only an administrator may".into(),
            ));
        }
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
        if p.acts_for(&user) {
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
        // Stripping a privileged user's methods is a privileged change: a
        // second approver, before this step's transaction begins.
        let removal_approved = if step == CaseStep::RemoveOldMethods
            && !(input.remove_method_ids.is_empty() && input.lost_device_ids.is_empty())
        {
            let subject = removal_subject(id, &input);
            self.gate_privileged_change(
                p,
                &user,
                ChangeKind::CaseRemoveOldMethods,
                &subject,
                input.approval_id.as_deref(),
            )
            .await?
        } else {
            None
        };
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
                        issuer_is_subject: p.acts_for(&user),
                        scenario: Some(case.scenario),
                    },
                    now,
                )?;
                let vjson = serde_json::to_value(&verification).expect("verification serialises");
                if two_person_rule_applies(p, &user, self.now()) {
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
                    if req.kind != ChangeKind::Tap.as_str() || req.user_id != user.id || req.state != "issued" {
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
                if let Some(req) = &removal_approved {
                    self.consume_change(&mut tx, req, Some(id)).await?;
                }
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
