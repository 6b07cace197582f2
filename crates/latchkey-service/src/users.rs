//! Users and their directory attributes, and who may read or change a
//! user's security info.

use latchkey_core::model::DirectoryField;
use latchkey_core::password::check_password_policy;
use latchkey_core::tap::ChangeKind;
use latchkey_core::{Role, UserState, Username, VerifyMethod};
use latchkey_store::{AuditEntry, NewUser, UserRecord};
use serde_json::json;
use zeroize::Zeroizing;

use crate::error::{ServiceError, ServiceResult};

use crate::app::*;
use crate::recovery::two_person_rule_applies;

impl App {
    // ---- users ---------------------------------------------------------

    pub async fn user(&self, username: &str) -> ServiceResult<UserRecord> {
        let name = Username::parse(username)?;
        self.store
            .user_by_username(name.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("user '{name}'")))
    }

    pub async fn get_user(&self, p: &Principal, username: &str) -> ServiceResult<UserRecord> {
        let u = self.user(username).await?;
        p.require_read(&u)?;
        Ok(u)
    }

    pub async fn list_users(&self, p: &Principal) -> ServiceResult<Vec<UserRecord>> {
        if !(p.has_role(Role::Helpdesk) || p.has_role(Role::Auditor)) {
            return Err(ServiceError::Forbidden(
                "listing users needs the helpdesk, auditor or admin role".into(),
            ));
        }
        Ok(self.store.list_users().await?)
    }

    /// Active administrators: the people who can approve a privileged change.
    pub(crate) async fn active_admin_count(&self) -> ServiceResult<usize> {
        Ok(self
            .store
            .list_users()
            .await?
            .into_iter()
            .filter(|u| u.state == UserState::Active && u.roles.contains(&Role::Admin))
            .count())
    }

    pub async fn create_user(
        &self,
        p: &Principal,
        username: &str,
        display_name: &str,
        department: Option<String>,
        groups: Vec<String>,
        roles: Vec<String>,
    ) -> ServiceResult<UserRecord> {
        p.require_admin()?;
        let new = new_user(username, display_name, department, groups, roles)?;
        let now = self.now();
        let mut tx = self.store.write().await?;
        let user = tx.insert_user(&new, now).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "user.create",
                format!("user:{}", user.username),
                json!({ "display_name": user.display_name, "department": user.department, "groups": user.groups, "roles": user.roles }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Change a user's directory attributes (admin). Fields left `None` keep
    /// their value; an empty department clears it. The last active
    /// administrator cannot lose the admin role. Granting a role needs a
    /// second person: the first call records a `user.roles` request and
    /// answers `ApprovalRequired`; the requester repeats the change with
    /// `approval` once someone else approved it.
    pub async fn update_user(&self, p: &Principal, username: &str, change: UserChange) -> ServiceResult<UserRecord> {
        p.require_admin()?;
        let before = self.user(username).await?;
        let new = new_user(
            &before.username,
            change.display_name.as_deref().unwrap_or(&before.display_name),
            match change.department {
                Some(d) => Some(d),
                None => before.department.clone(),
            },
            change.groups.unwrap_or_else(|| before.groups.clone()),
            match change.roles {
                Some(r) => r,
                None => before.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            },
        )?;
        if before.roles.contains(&Role::Admin) && !new.roles.contains(&Role::Admin) {
            if self.active_admin_count().await? <= 1 {
                return Err(ServiceError::Conflict(format!(
                    "'{}' is the last active administrator; make someone else an administrator first",
                    before.username
                )));
            }
        }
        // Granting a role waits for a second person (removals apply at once).
        // The local operator is exempt, as from every two-person rule.
        let mut granted: Vec<&str> = new
            .roles
            .iter()
            .filter(|r| !before.roles.contains(r))
            .map(|r| r.as_str())
            .collect();
        granted.sort_unstable();
        let approved = if granted.is_empty() || matches!(p, Principal::Operator) {
            None
        } else {
            let subject = json!({ "grant": granted }).to_string();
            Some(
                self.second_person_gate(p, &before, ChangeKind::RoleGrant, &subject, change.approval.as_deref())
                    .await?,
            )
        };
        let mut tx = self.store.write().await?;
        if let Some(req) = &approved {
            self.consume_change(&mut tx, req, None).await?;
        }
        let roles_removed = before.roles.iter().any(|r| !new.roles.contains(r));
        tx.update_user_profile(&before.id, &new, roles_removed, self.now())
            .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "user.update",
                format!("user:{}", before.username),
                json!({
                    "before": { "display_name": before.display_name, "department": before.department, "groups": before.groups, "roles": before.roles },
                    "after": { "display_name": new.display_name, "department": new.department, "groups": new.groups, "roles": new.roles },
                    "request_id": approved.as_ref().map(|r| &r.id),
                    "approved_by": approved.as_ref().and_then(|r| r.decided_by.as_ref()),
                }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.user(username).await
    }

    /// Set `username`'s password. For a privileged user set by someone
    /// else, `approval` names the approved request (the first call records
    /// one and answers `ApprovalRequired`).
    pub async fn set_password(
        &self,
        p: &Principal,
        username: &str,
        password: &str,
        approval: Option<&str>,
    ) -> ServiceResult<()> {
        let user = self.user(username).await?;
        check_password_policy(password)?;
        let approved = self
            .authorize_credential_change(p, &user, ChangeKind::Password, "", approval)
            .await?;
        let params = self.config.password;
        let pw = Zeroizing::new(password.to_owned());
        let phc = tokio::task::spawn_blocking(move || params.hash(&pw))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let now = self.now();
        let mut tx = self.store.write().await?;
        if let Some(req) = &approved {
            self.consume_change(&mut tx, req, None).await?;
        }
        tx.set_password_hash(&user.id, &phc, now).await?;
        let (sessions, grants) = self
            .end_sessions_for_credential_change(&mut tx, p, &user, "password_changed", now)
            .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "password.set",
                format!("user:{}", user.username),
                match &approved {
                    Some(req) => json!({ "request_id": req.id, "approved_by": req.decided_by, "sessions_ended": sessions, "oidc_grants_revoked": grants }),
                    None => json!({ "sessions_ended": sessions, "oidc_grants_revoked": grants }),
                },
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.notify(
            &user.id,
            "outbox",
            "Your password was changed",
            "If this was not you, call the helpdesk now.",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- authorisation helpers ----------------------------------------

    /// Registering or removing methods, or changing a password: an admin, or
    /// the user themself with a fresh strong sign-in (or a TAP session). A
    /// stolen password alone never gets this far: there is no password-only
    /// session. Someone else's change to a privileged user's security info
    /// needs a second approver: here it is refused, and the operations that
    /// take an approval go through [`App::authorize_credential_change`].
    pub(crate) async fn require_register(&self, p: &Principal, target: &UserRecord) -> ServiceResult<()> {
        if two_person_rule_applies(p, target, self.now()) {
            return Err(ServiceError::Forbidden(format!(
                "'{}' holds a role: someone else's change to their security info needs a second approver \
                 (a password, authenticator app, recovery codes or removal can be requested; other methods \
                 they enrol themselves, with an approved pass)",
                target.username
            )));
        }
        if p.is_admin() {
            return Ok(());
        }
        match p {
            Principal::Session { session, user } if user.id == target.id => {
                let via_tap = session
                    .methods
                    .iter()
                    .any(|m| m == VerifyMethod::TemporaryAccessPass.as_str());
                if via_tap || self.now() - session.authenticated_at <= self.config.fresh_auth_secs {
                    self.check_registration_policy(user, session).await
                } else {
                    Err(ServiceError::ReauthenticationRequired(format!(
                        "sign in again with a second factor (sign-ins older than {} minutes cannot change security info)",
                        self.config.fresh_auth_secs / 60
                    )))
                }
            }
            _ => Err(ServiceError::Forbidden(
                "you may only change your own security info".into(),
            )),
        }
    }

    /// Who may change `target`'s credentials, and with which approval: for
    /// someone else's change to a privileged user, an administrator with an
    /// approved request for exactly this change (returned, to be consumed in
    /// the change's transaction); otherwise [`App::require_register`].
    pub(crate) async fn authorize_credential_change(
        &self,
        p: &Principal,
        target: &UserRecord,
        kind: ChangeKind,
        subject: &str,
        approval: Option<&str>,
    ) -> ServiceResult<Option<latchkey_store::TapRequestRecord>> {
        if two_person_rule_applies(p, target, self.now()) {
            // Only administrators change someone else's security info; check
            // before a request is recorded that could never be used.
            p.require_admin()?;
            return self.gate_privileged_change(p, target, kind, subject, approval).await;
        }
        self.require_register(p, target).await?;
        Ok(None)
    }

    pub async fn clear_lockout(&self, p: &Principal, username: &str) -> ServiceResult<()> {
        if !p.has_role(Role::Helpdesk) {
            return Err(ServiceError::Forbidden(
                "clearing a lockout needs the helpdesk or admin role".into(),
            ));
        }
        let user = self.user(username).await?;
        // Both counters: familiar and unfamiliar sources (smart lock-out).
        for key in latchkey_core::softlock::user_counters(&user.username) {
            self.store.clear_throttle(&key).await?;
        }
        self.store
            .audit_only(
                &AuditEntry::new(p.actor(), "lockout.clear", format!("user:{}", user.username), json!({})),
                self.clock.now_ms(),
            )
            .await?;
        Ok(())
    }
}

/// A change to a user's directory attributes; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub display_name: Option<String>,
    /// `Some("")` clears the department.
    pub department: Option<String>,
    pub groups: Option<Vec<String>>,
    pub roles: Option<Vec<String>>,
    /// The approved `user.roles` request, when this change grants a role.
    pub approval: Option<String>,
}

/// Validated directory attributes, for creating or updating a user.
fn new_user(
    username: &str,
    display_name: &str,
    department: Option<String>,
    groups: Vec<String>,
    roles: Vec<String>,
) -> ServiceResult<NewUser> {
    let name = Username::parse(username)?;
    let display_name = DirectoryField::DisplayName.validate(display_name)?;
    let department = department
        .filter(|d| !d.trim().is_empty())
        .map(|d| DirectoryField::Department.validate(&d))
        .transpose()?;
    let groups = groups
        .iter()
        .map(|g| DirectoryField::Group.validate(g))
        .collect::<Result<Vec<_>, _>>()?;
    let mut parsed_roles = roles.iter().map(|r| Role::parse(r)).collect::<Result<Vec<_>, _>>()?;
    parsed_roles.sort();
    parsed_roles.dedup();
    Ok(NewUser {
        username: name.as_str().to_owned(),
        display_name,
        department,
        groups,
        roles: parsed_roles,
    })
}
