//! Account lifecycle writes: a user's state, revoking everything that lets
//! an account in, removing a deleted account's secrets, and releasing a
//! tombstone's username. The rules are `latchkey_core::account`'s; each of
//! these runs inside the caller's audited transaction.

use latchkey_core::UserState;

use crate::{Result, StoreError, WriteTx};

/// What revoking an account's access ended, for the audit event.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RevokedAccess {
    pub sessions: u64,
    pub oidc_grants: u64,
    pub signin_flows: u64,
    pub passes: u64,
    pub push_prompts: u64,
    pub api_tokens: u64,
}

impl WriteTx {
    /// Active administrators, read inside the write transaction (writers are
    /// serialised by the audit head), so two admins cannot both remove the
    /// last-but-one.
    pub async fn count_active_admins(&mut self) -> Result<i64> {
        use sqlx::Row;
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM users WHERE state = 'active' AND roles_json LIKE '%\"admin\"%'")
                .fetch_one(self.conn())
                .await?;
        Ok(row.try_get("n")?)
    }

    /// Move a user from `from` to `to` (compare-and-set on the state, so two
    /// admins cannot both apply conflicting changes).
    pub async fn set_user_state(
        &mut self,
        user_id: &str,
        from: UserState,
        to: UserState,
        reason: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let n = sqlx::query(
            "UPDATE users SET state = $1, state_reason = $2, state_changed_at = $3, updated_at = $3 WHERE id = $4 AND state = $5",
        )
        .bind(to.as_str())
        .bind(reason.map(str::to_owned))
        .bind(now)
        .bind(user_id)
        .bind(from.as_str())
        .execute(self.conn())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::Conflict(
                "the account's state changed meanwhile; reload and try again".into(),
            ));
        }
        Ok(())
    }

    /// Record an account state change in the history the evidence report
    /// reads. `source_changed_at`: when the change happened at its source
    /// (the directory, or the administrator's request for a local change);
    /// `revoked_at`: when Latchkey revoked access, if the change did.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_state_change(
        &mut self,
        user_id: &str,
        from: UserState,
        to: UserState,
        reason: Option<&str>,
        actor: &str,
        source: &str,
        source_changed_at: i64,
        revoked_at: Option<i64>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO account_state_changes (id, user_id, from_state, to_state, reason, actor, source, source_changed_at, revoked_at, changed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(crate::new_id())
        .bind(user_id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(reason.map(str::to_owned))
        .bind(actor)
        .bind(source)
        .bind(source_changed_at)
        .bind(revoked_at)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// End every way into the account at once: web sessions, OpenID Connect
    /// grants with their access and refresh tokens, sign-in flows in
    /// progress, passes not yet spent, pending push prompts, and the API
    /// tokens the user created or owns. `token_creator` is the actor string API
    /// tokens record for their creator.
    pub async fn revoke_user_access(&mut self, user_id: &str, token_creator: &str, now: i64) -> Result<RevokedAccess> {
        let sessions = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(user_id)
            .execute(self.conn())
            .await?
            .rows_affected();
        let oidc_grants = self.revoke_user_grants(user_id, "account_disabled", now).await?;
        let signin_flows = sqlx::query("DELETE FROM signin_flows WHERE user_id = $1")
            .bind(user_id)
            .execute(self.conn())
            .await?
            .rows_affected();
        let passes = sqlx::query(
            "UPDATE temporary_access_passes SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(user_id)
        .execute(self.conn())
        .await?
        .rows_affected();
        // An approved prompt not yet used could still complete a flow.
        let push_prompts = sqlx::query(
            "UPDATE push_prompts SET status = 'expired' WHERE user_id = $1 AND (status = 'pending' OR (status = 'approved' AND used_at IS NULL))",
        )
        .bind(user_id)
        .execute(self.conn())
        .await?
        .rows_affected();
        let api_tokens =
            sqlx::query(
                "UPDATE api_tokens SET revoked_at = $1 WHERE (created_by = $2 OR owner_user_id = $3) AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(token_creator)
            .bind(user_id)
                .execute(self.conn())
                .await?
                .rows_affected();
        Ok(RevokedAccess {
            sessions,
            oidc_grants,
            signin_flows,
            passes,
            push_prompts,
            api_tokens,
        })
    }

    /// End a user's OpenID Connect grants: their access tokens expire now and
    /// their refresh tokens stop rotating.
    pub async fn revoke_user_grants(&mut self, user_id: &str, reason: &str, now: i64) -> Result<u64> {
        sqlx::query(
            "UPDATE oidc_tokens SET expires_at = $1 WHERE expires_at > $1 \
             AND grant_id IN (SELECT id FROM oidc_grants WHERE user_id = $2 AND revoked_at IS NULL)",
        )
        .bind(now)
        .bind(user_id)
        .execute(self.conn())
        .await?;
        Ok(sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(user_id)
        .execute(self.conn())
        .await?
        .rows_affected())
    }

    /// End a user's web sessions and OpenID Connect grants (after an
    /// administrator reset their password or removed one of their methods).
    pub async fn end_user_sessions(&mut self, user_id: &str, reason: &str, now: i64) -> Result<(u64, u64)> {
        self.end_user_sessions_except(user_id, None, reason, now).await
    }

    /// Like [`WriteTx::end_user_sessions`], keeping the session `keep` and the
    /// grants made from it (a user changing their own security info stays
    /// signed in where they made the change).
    pub async fn end_user_sessions_except(
        &mut self,
        user_id: &str,
        keep: Option<&str>,
        reason: &str,
        now: i64,
    ) -> Result<(u64, u64)> {
        let Some(keep) = keep else {
            let sessions = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(user_id)
                .execute(self.conn())
                .await?
                .rows_affected();
            let grants = self.revoke_user_grants(user_id, reason, now).await?;
            return Ok((sessions, grants));
        };
        let sessions =
            sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3")
                .bind(now)
                .bind(user_id)
                .bind(keep)
                .execute(self.conn())
                .await?
                .rows_affected();
        sqlx::query(
            "UPDATE oidc_tokens SET expires_at = $1 WHERE expires_at > $1 \
             AND grant_id IN (SELECT id FROM oidc_grants WHERE user_id = $2 AND revoked_at IS NULL \
                              AND (session_id IS NULL OR session_id <> $3))",
        )
        .bind(now)
        .bind(user_id)
        .bind(keep)
        .execute(self.conn())
        .await?;
        let grants = sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL \
             AND (session_id IS NULL OR session_id <> $4)",
        )
        .bind(now)
        .bind(reason)
        .bind(user_id)
        .bind(keep)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok((sessions, grants))
    }

    /// Remove a deleted account's secrets: its password hash and every
    /// method with what hangs off it (codes, keys, devices, phones). The
    /// user row stays as the audit chain's tombstone. Returns the methods removed.
    pub async fn remove_user_secrets(&mut self, user_id: &str, now: i64) -> Result<u64> {
        // Children first: SQLite enforces foreign keys only when asked to.
        for sql in [
            "DELETE FROM recovery_codes WHERE method_id IN (SELECT id FROM methods WHERE user_id = $1)",
            "DELETE FROM webauthn_credentials WHERE user_id = $1",
            "DELETE FROM sms_codes WHERE user_id = $1",
            "DELETE FROM push_devices WHERE user_id = $1",
            "DELETE FROM push_enrollments WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(user_id).execute(self.conn()).await?;
        }
        let methods = sqlx::query("DELETE FROM methods WHERE user_id = $1")
            .bind(user_id)
            .execute(self.conn())
            .await?
            .rows_affected();
        sqlx::query("UPDATE users SET password_hash = NULL, password_changed_at = $1 WHERE id = $2")
            .bind(now)
            .bind(user_id)
            .execute(self.conn())
            .await?;
        Ok(methods)
    }

    /// Free the usernames of accounts deleted before `deleted_before`: the
    /// tombstone takes a name that is not a valid username. Returns the
    /// (user id, old username) pairs released.
    pub async fn release_deleted_usernames(&mut self, deleted_before: i64) -> Result<Vec<(String, String)>> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT id, username FROM users WHERE state = 'deleted' AND state_changed_at < $1 AND username NOT LIKE '~deleted~%'",
        )
        .bind(deleted_before)
        .fetch_all(self.conn())
        .await?;
        let mut out = vec![];
        for r in rows {
            let (id, name): (String, String) = (r.try_get("id")?, r.try_get("username")?);
            sqlx::query("UPDATE users SET username = $1 WHERE id = $2")
                .bind(latchkey_core::account::released_username(&id))
                .bind(&id)
                .execute(self.conn())
                .await?;
            out.push((id, name));
        }
        Ok(out)
    }
}
