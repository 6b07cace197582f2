//! Users and their directory attributes, and who may read or change a
//! user's security info.

use latchkey_core::model::DirectoryField;
use latchkey_core::password::check_password_policy;
use latchkey_core::{Role, UserState, Username, VerifyMethod};
use latchkey_store::{AuditEntry, NewUser, UserRecord};
use serde_json::json;
use zeroize::Zeroizing;

use crate::error::{ServiceError, ServiceResult};

use crate::app::*;

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
    /// administrator cannot lose the admin role.
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
            let admins = self
                .store
                .list_users()
                .await?
                .into_iter()
                .filter(|u| u.state == UserState::Active && u.roles.contains(&Role::Admin))
                .count();
            if admins <= 1 {
                return Err(ServiceError::Conflict(format!(
                    "'{}' is the last active administrator; make someone else an administrator first",
                    before.username
                )));
            }
        }
        let mut tx = self.store.write().await?;
        tx.update_user_profile(&before.id, &new, self.now()).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "user.update",
                format!("user:{}", before.username),
                json!({
                    "before": { "display_name": before.display_name, "department": before.department, "groups": before.groups, "roles": before.roles },
                    "after": { "display_name": new.display_name, "department": new.department, "groups": new.groups, "roles": new.roles },
                }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.user(username).await
    }

    pub async fn set_password(&self, p: &Principal, username: &str, password: &str) -> ServiceResult<()> {
        let user = self.user(username).await?;
        self.require_register(p, &user).await?;
        check_password_policy(password)?;
        let params = self.config.password;
        let pw = Zeroizing::new(password.to_owned());
        let phc = tokio::task::spawn_blocking(move || params.hash(&pw))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let now = self.now();
        let mut tx = self.store.write().await?;
        tx.set_password_hash(&user.id, &phc, now).await?;
        let (sessions, grants) = self
            .end_sessions_for_credential_change(&mut tx, p, &user, "password_changed", now)
            .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "password.set",
                format!("user:{}", user.username),
                json!({ "sessions_ended": sessions, "oidc_grants_revoked": grants }),
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
    /// session.
    pub(crate) async fn require_register(&self, p: &Principal, target: &UserRecord) -> ServiceResult<()> {
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

    pub async fn clear_lockout(&self, p: &Principal, username: &str) -> ServiceResult<()> {
        if !p.has_role(Role::Helpdesk) {
            return Err(ServiceError::Forbidden(
                "clearing a lockout needs the helpdesk or admin role".into(),
            ));
        }
        let user = self.user(username).await?;
        self.store.clear_throttle(&user_key(&user.username)).await?;
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
