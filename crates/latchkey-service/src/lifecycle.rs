//! Joiners and leavers: disabling, enabling and deleting accounts. The
//! states and their transitions are `latchkey_core::account`'s (diagram
//! there). Leaving `Active` revokes every way in, in the same audited
//! transaction as the state change, so a leaver's session, refresh token or
//! API token stops working within the request that disabled them.

use latchkey_core::account::{self, Transition};
use latchkey_core::{Role, UserState, Username};
use latchkey_store::{AuditEntry, RevokedAccess, UserRecord};
use serde_json::json;

use crate::app::{App, Principal};
use crate::error::{ServiceError, ServiceResult};

impl App {
    /// Disable an account (admin): it can no longer sign in anywhere, and
    /// everything that let it in is revoked.
    pub async fn disable_user(
        &self,
        p: &Principal,
        username: &str,
        reason: &str,
    ) -> ServiceResult<(UserRecord, RevokedAccess)> {
        self.change_account_state(p, username, UserState::Disabled, Some(reason))
            .await
    }

    /// Enable a disabled account (admin). Nothing comes back with it: the
    /// user signs in again with their own methods.
    pub async fn enable_user(&self, p: &Principal, username: &str) -> ServiceResult<UserRecord> {
        Ok(self.change_account_state(p, username, UserState::Active, None).await?.0)
    }

    /// Delete an account (admin): it becomes a tombstone. Access is revoked
    /// and its secrets removed; its username stays taken for
    /// `deleted_username_hold_days`, then housekeeping releases it.
    pub async fn delete_user(
        &self,
        p: &Principal,
        username: &str,
        reason: &str,
    ) -> ServiceResult<(UserRecord, RevokedAccess)> {
        self.change_account_state(p, username, UserState::Deleted, Some(reason))
            .await
    }

    async fn change_account_state(
        &self,
        p: &Principal,
        username: &str,
        to: UserState,
        reason: Option<&str>,
    ) -> ServiceResult<(UserRecord, RevokedAccess)> {
        p.require_admin()?;
        let reason = reason.map(account::check_reason).transpose()?;
        let name = Username::parse(username)?;
        if matches!(p, Principal::Session { user, .. } if user.username == name.as_str()) && to != UserState::Active {
            return Err(ServiceError::Conflict(
                "you cannot disable or delete your own account; ask another administrator".into(),
            ));
        }
        let now = self.now();
        let mut tx = self.store.write().await?;
        let user = tx
            .user_by_username(name.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("user '{name}'")))?;
        let Transition {
            from,
            revokes_access,
            removes_secrets,
            ..
        } = account::transition(user.state, to)?;
        if revokes_access && user.roles.contains(&Role::Admin) && tx.count_active_admins().await? <= 1 {
            return Err(ServiceError::Conflict(format!(
                "'{}' is the last active administrator; make someone else an administrator first",
                user.username
            )));
        }
        tx.set_user_state(&user.id, from, to, reason.as_deref(), now).await?;
        let revoked = if revokes_access {
            tx.revoke_user_access(&user.id, &format!("user:{}", user.username), now)
                .await?
        } else {
            RevokedAccess::default()
        };
        // A local change: its source is the administrator's request, made
        // now. A directory sync would pass the directory's own time.
        tx.record_state_change(
            &user.id,
            from,
            to,
            reason.as_deref(),
            &p.actor(),
            "local",
            now,
            revokes_access.then_some(now),
            now,
        )
        .await?;
        let methods_removed = if removes_secrets {
            tx.remove_user_secrets(&user.id, now).await?
        } else {
            0
        };
        let action = match to {
            UserState::Active => "user.enable",
            UserState::Disabled => "user.disable",
            UserState::Deleted => "user.delete",
        };
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                action,
                format!("user:{}", user.username),
                json!({ "from": from.as_str(), "reason": reason, "revoked": revoked, "methods_removed": methods_removed }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        if to == UserState::Disabled {
            tx.notify(
                &user.id,
                "outbox",
                "Your account was disabled",
                "Your account was disabled by an administrator; its sign-ins and sessions have ended. Contact your helpdesk if this is unexpected.",
                now,
            )
            .await?;
        }
        tx.commit().await?;
        let after = self
            .store
            .user_by_id(&user.id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("user '{name}'")))?;
        tracing::info!(user = %user.username, to = to.as_str(), "account state changed");
        Ok((after, revoked))
    }

    /// After a credential change to `user` (password set, method removed),
    /// inside its transaction: end the user's web sessions and OpenID Connect
    /// grants. Someone else's change (an administrator's, the helpdesk's)
    /// ends them all; a user changing their own keeps the session they made
    /// the change in, and the grants made from it. Returns (sessions, grants).
    pub(crate) async fn end_sessions_for_credential_change(
        &self,
        tx: &mut latchkey_store::WriteTx,
        p: &Principal,
        user: &UserRecord,
        reason: &str,
        now: i64,
    ) -> ServiceResult<(u64, u64)> {
        let keep = match p {
            Principal::Session { session, user: me } if me.id == user.id => Some(session.id.as_str()),
            _ => None,
        };
        Ok(tx.end_user_sessions_except(&user.id, keep, reason, now).await?)
    }

    /// Housekeeping: release the usernames of accounts deleted longer ago
    /// than the hold period (each release audited).
    pub async fn release_deleted_usernames(&self) -> ServiceResult<usize> {
        let now = self.now();
        let before = now - account::username_released_at(0, self.config.deleted_username_hold_days);
        let mut tx = self.store.write().await?;
        let released = tx.release_deleted_usernames(before).await?;
        if released.is_empty() {
            return Ok(0);
        }
        for (id, name) in &released {
            tx.audit(
                &AuditEntry::new(
                    "system",
                    "user.username_released",
                    format!("user:{name}"),
                    json!({ "user_id": id, "hold_days": self.config.deleted_username_hold_days }),
                ),
                self.clock.now_ms(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(released.len())
    }
}
