//! Registered authentication methods, recovery codes and user notifications.

use latchkey_core::{MethodKind, MethodState};
use sqlx::Row;

use crate::{new_id, Result, Store, StoreError, WriteTx};

#[derive(Debug, Clone)]
pub struct MethodRecord {
    pub id: String,
    pub user_id: String,
    pub kind: MethodKind,
    pub label: String,
    pub state: MethodState,
    pub secret_sealed: Option<Vec<u8>>,
    pub params: serde_json::Value,
    pub last_used_step: Option<i64>,
    pub device_id: Option<String>,
    pub registered_at: i64,
    pub confirmed_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NotificationRecord {
    pub at: i64,
    pub channel: String,
    pub subject: String,
    pub body: String,
}

async fn advance_totp_step_in<'e>(
    e: impl sqlx::Executor<'e, Database = sqlx::Any>,
    method_id: &str,
    step: i64,
    now: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE methods SET last_used_step = $1, last_used_at = $2
         WHERE id = $3 AND state = 'active' AND (last_used_step IS NULL OR last_used_step < $1)",
    )
    .bind(step)
    .bind(now)
    .bind(method_id)
    .execute(e)
    .await?
    .rows_affected();
    Ok(n == 1)
}

async fn use_recovery_code_in(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    code_hash: &str,
    now: i64,
) -> Result<bool> {
    let n =
        sqlx::query("UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL")
            .bind(now)
            .bind(user_id)
            .bind(code_hash)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if n == 1 {
        sqlx::query("UPDATE methods SET last_used_at = $1 WHERE user_id = $2 AND kind = 'recovery_codes'")
            .bind(now)
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(n == 1)
}

fn method_from_row(r: &sqlx::any::AnyRow) -> Result<MethodRecord> {
    let kind: String = r.try_get("kind")?;
    let state: String = r.try_get("state")?;
    let params: String = r.try_get("params_json")?;
    Ok(MethodRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        kind: MethodKind::parse(&kind).map_err(|_| StoreError::Corrupt(format!("method kind '{kind}'")))?,
        label: r.try_get("label")?,
        state: match state.as_str() {
            "pending" => MethodState::Pending,
            "active" => MethodState::Active,
            other => return Err(StoreError::Corrupt(format!("method state '{other}'"))),
        },
        secret_sealed: r.try_get("secret_sealed")?,
        params: serde_json::from_str(&params).map_err(|e| StoreError::Corrupt(format!("method params: {e}")))?,
        last_used_step: r.try_get("last_used_step")?,
        device_id: r.try_get("device_id")?,
        registered_at: r.try_get("registered_at")?,
        confirmed_at: r.try_get("confirmed_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

fn state_str(s: MethodState) -> &'static str {
    match s {
        MethodState::Pending => "pending",
        MethodState::Active => "active",
    }
}

/// Fields of a method about to be inserted. The id is chosen by the caller
/// because sealed secrets are bound to it.
#[derive(Debug, Clone)]
pub struct NewMethod<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub kind: MethodKind,
    pub label: &'a str,
    pub state: MethodState,
    pub secret_sealed: Option<Vec<u8>>,
    pub params: serde_json::Value,
}

impl WriteTx {
    /// [`Store::advance_totp_step`] inside a sign-in step's transaction.
    pub async fn advance_totp_step(&mut self, method_id: &str, step: i64, now: i64) -> Result<bool> {
        advance_totp_step_in(self.conn(), method_id, step, now).await
    }

    /// [`Store::use_recovery_code`] inside a sign-in step's transaction.
    pub async fn use_recovery_code(&mut self, user_id: &str, code_hash: &str, now: i64) -> Result<bool> {
        use_recovery_code_in(self.conn(), user_id, code_hash, now).await
    }

    pub async fn insert_method(&mut self, m: NewMethod<'_>, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO methods (id, user_id, kind, label, state, secret_sealed, params_json, registered_at, confirmed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(m.id)
        .bind(m.user_id)
        .bind(m.kind.as_str())
        .bind(m.label)
        .bind(state_str(m.state))
        .bind(m.secret_sealed)
        .bind(m.params.to_string())
        .bind(now)
        .bind(if m.state == MethodState::Active { Some(now) } else { None })
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Activate a pending method, recording the step its first code used so
    /// that code cannot also be used to sign in. False if it was not pending.
    pub async fn activate_method(&mut self, id: &str, first_step: Option<i64>, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE methods SET state = 'active', confirmed_at = $1, last_used_step = $2 WHERE id = $3 AND state = 'pending'",
        )
        .bind(now)
        .bind(first_step)
        .bind(id)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn delete_method(&mut self, user_id: &str, id: &str) -> Result<()> {
        // Children first: not every SQLite connection is guaranteed to have
        // foreign keys enforced, and PostgreSQL would cascade anyway.
        sqlx::query("DELETE FROM recovery_codes WHERE method_id = $1")
            .bind(id)
            .execute(self.conn())
            .await?;
        let n = sqlx::query("DELETE FROM methods WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(self.conn())
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("method".into()));
        }
        Ok(())
    }

    /// Replace the user's recovery-code set: the old set (if any) stops working
    /// in the same transaction. Returns the ids of removed methods.
    pub async fn replace_recovery_codes(
        &mut self,
        user_id: &str,
        method_id: &str,
        hashes: &[String],
        now: i64,
    ) -> Result<Vec<String>> {
        let old: Vec<String> = sqlx::query("SELECT id FROM methods WHERE user_id = $1 AND kind = 'recovery_codes'")
            .bind(user_id)
            .fetch_all(self.conn())
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        for id in &old {
            self.delete_method(user_id, id).await?;
        }
        self.insert_method(
            NewMethod {
                id: method_id,
                user_id,
                kind: MethodKind::RecoveryCodes,
                label: "Recovery codes",
                state: MethodState::Active,
                secret_sealed: None,
                params: serde_json::json!({ "count": hashes.len() }),
            },
            now,
        )
        .await?;
        for h in hashes {
            sqlx::query("INSERT INTO recovery_codes (method_id, user_id, code_hash) VALUES ($1, $2, $3)")
                .bind(method_id)
                .bind(user_id)
                .bind(h)
                .execute(self.conn())
                .await?;
        }
        Ok(old)
    }

    pub async fn notify(&mut self, user_id: &str, channel: &str, subject: &str, body: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO notifications (user_id, at, channel, subject, body) VALUES ($1, $2, $3, $4, $5)")
            .bind(user_id)
            .bind(now)
            .bind(channel)
            .bind(subject)
            .bind(body)
            .execute(self.conn())
            .await?;
        Ok(())
    }
}

impl Store {
    pub async fn methods_for_user(&self, user_id: &str) -> Result<Vec<MethodRecord>> {
        sqlx::query("SELECT * FROM methods WHERE user_id = $1 ORDER BY registered_at, id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(method_from_row)
            .collect()
    }

    pub async fn method(&self, user_id: &str, id: &str) -> Result<Option<MethodRecord>> {
        sqlx::query("SELECT * FROM methods WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(method_from_row)
            .transpose()
    }

    /// The TOTP replay guard: advance the method's last accepted step to
    /// `step` only if it is higher. One atomic statement, so two nodes racing
    /// with the same code cannot both win. True if this caller won.
    pub async fn advance_totp_step(&self, method_id: &str, step: i64, now: i64) -> Result<bool> {
        if !self.group_commit() {
            return advance_totp_step_in(&self.pool, method_id, step, now).await;
        }
        // SQLite: on the group writer, made durable with the writes beside it.
        let mut tx = self.bookkeeping().await?;
        let won = advance_totp_step_in(tx.conn(), method_id, step, now).await?;
        tx.commit_bookkeeping().await?;
        Ok(won)
    }

    /// Spend one recovery code. True if it existed, belonged to the user and
    /// was unused; the conditional update makes it single-use across nodes.
    pub async fn use_recovery_code(&self, user_id: &str, code_hash: &str, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let used = use_recovery_code_in(&mut tx, user_id, code_hash, now).await?;
        tx.commit().await?;
        Ok(used)
    }

    pub async fn recovery_codes_left(&self, method_id: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM recovery_codes WHERE method_id = $1 AND used_at IS NULL")
                .bind(method_id)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?,
        )
    }

    pub async fn notifications(&self, user_id: &str) -> Result<Vec<NotificationRecord>> {
        sqlx::query("SELECT at, channel, subject, body FROM notifications WHERE user_id = $1 ORDER BY id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(NotificationRecord {
                    at: r.try_get("at")?,
                    channel: r.try_get("channel")?,
                    subject: r.try_get("subject")?,
                    body: r.try_get("body")?,
                })
            })
            .collect()
    }
}

pub fn method_id() -> String {
    new_id()
}
