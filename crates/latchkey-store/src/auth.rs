//! Sign-in flows, sessions, API tokens, Temporary Access Passes, throttling
//! counters and the sign-in log.

use latchkey_core::softlock::{LockPolicy, LockState};
use sqlx::Row;

use crate::{json_vec, Result, Store, StoreError, WriteTx};

#[derive(Debug, Clone)]
pub struct FlowRecord {
    pub user_id: Option<String>,
    pub username: String,
    pub flow_json: String,
    pub application: Option<String>,
    pub source_ip: Option<String>,
    pub expires_at: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: String,
    pub amr: Vec<String>,
    pub methods: Vec<String>,
    pub acr: String,
    pub authenticated_at: i64,
    pub idle_expires_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct ApiTokenRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    /// The human the token acts for (user id); `None` for tokens made before
    /// owners were recorded: they work, but approve nothing.
    pub owner_user_id: Option<String>,
    /// That human's username, read with the token.
    pub owner: Option<String>,
}

/// Tokens are read with their owner's username.
const API_TOKEN_SELECT: &str =
    "SELECT t.*, u.username AS owner_username FROM api_tokens t LEFT JOIN users u ON u.id = t.owner_user_id";

fn api_token_from_row(r: &sqlx::any::AnyRow) -> Result<ApiTokenRecord> {
    Ok(ApiTokenRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scopes: json_vec(&r.try_get::<String, _>("scopes_json")?, "scopes")?,
        created_by: r.try_get("created_by")?,
        owner_user_id: r.try_get("owner_user_id")?,
        owner: r.try_get("owner_username")?,
    })
}

#[derive(Debug, Clone)]
pub struct TapRecord {
    pub id: String,
    pub user_id: String,
    pub single_use: bool,
    pub starts_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct SignInLogEntry {
    pub at: i64,
    pub user_id: Option<String>,
    pub username: String,
    pub application: Option<String>,
    pub source_ip: Option<String>,
    pub result: String,
    pub reason: Option<String>,
    pub methods: Vec<String>,
    pub acr: Option<String>,
}

fn tap_from_row(r: &sqlx::any::AnyRow) -> Result<TapRecord> {
    Ok(TapRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        single_use: r.try_get::<i64, _>("single_use")? != 0,
        starts_at: r.try_get("starts_at")?,
        expires_at: r.try_get("expires_at")?,
        used_at: r.try_get("used_at")?,
    })
}

/// Result of recording a failure against a throttle key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleOutcome {
    pub failures: u32,
    pub locked_until: Option<i64>,
}

impl Store {
    // ---- sign-in flows -------------------------------------------------

    pub async fn insert_flow(&self, id_hash: &str, f: &FlowRecord, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO signin_flows (id_hash, user_id, username, flow_json, application, source_ip, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id_hash)
        .bind(f.user_id.clone())
        .bind(&f.username)
        .bind(&f.flow_json)
        .bind(f.application.clone())
        .bind(f.source_ip.clone())
        .bind(now)
        .bind(f.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn flow(&self, id_hash: &str, now: i64) -> Result<Option<FlowRecord>> {
        let row = sqlx::query("SELECT * FROM signin_flows WHERE id_hash = $1 AND expires_at > $2")
            .bind(id_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(FlowRecord {
                user_id: r.try_get("user_id")?,
                username: r.try_get("username")?,
                flow_json: r.try_get("flow_json")?,
                application: r.try_get("application")?,
                source_ip: r.try_get("source_ip")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Compare-and-swap the flow's state: succeeds only if nobody else moved
    /// it since `expected` was read, so one flow cannot complete twice.
    pub async fn update_flow(&self, id_hash: &str, expected: &str, next: &str) -> Result<bool> {
        let n = sqlx::query("UPDATE signin_flows SET flow_json = $1 WHERE id_hash = $2 AND flow_json = $3")
            .bind(next)
            .bind(id_hash)
            .bind(expected)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    pub async fn delete_flow(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM signin_flows WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Housekeeping: drop expired flows and sessions. Returns rows removed.
    pub async fn purge_expired(&self, now: i64) -> Result<u64> {
        let a = sqlx::query("DELETE FROM signin_flows WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let b = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR idle_expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(a.rows_affected() + b.rows_affected())
    }

    // ---- throttling ----------------------------------------------------

    pub async fn throttle_state(&self, key: &str) -> Result<LockState> {
        let row = sqlx::query("SELECT failures, locked_until FROM throttle WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => LockState::from_row(
                r.try_get::<i64, _>("failures")?.clamp(0, u32::MAX as i64) as u32,
                r.try_get("locked_until")?,
            ),
            None => LockState::Open { failures: 0 },
        })
    }

    /// Count an attempt *before* verifying it, and refuse it if the key is
    /// locked. Check, count and lock are one atomic statement (a row lock on
    /// PostgreSQL, the write lock on SQLite), so parallel guesses cannot all
    /// slip in before the lock is set. A right answer is refunded with
    /// [`Store::refund_attempt`]. `Err(seconds to wait)` when locked.
    pub async fn begin_attempt(
        &self,
        key: &str,
        policy: &LockPolicy,
        now: i64,
    ) -> Result<Result<ThrottleOutcome, i64>> {
        // The next lock: base on the first, then double, capped.
        let next_lock = "(CASE WHEN lock_secs = 0 THEN $4 WHEN lock_secs * 2 > $5 THEN $5 ELSE lock_secs * 2 END)";
        let sql = format!(
            "UPDATE throttle SET failures = failures + 1, updated_at = $2,
                 lock_secs = CASE WHEN failures + 1 >= $3 THEN {next_lock} ELSE lock_secs END,
                 locked_until = CASE WHEN failures + 1 >= $3 THEN $2 + {next_lock} ELSE locked_until END
             WHERE key = $1 AND (locked_until IS NULL OR locked_until <= $2)
             RETURNING failures, locked_until"
        );
        // A concurrent success may delete the row between our statements;
        // then simply start over.
        for _ in 0..5 {
            sqlx::query(
                "INSERT INTO throttle (key, failures, locked_until, updated_at) VALUES ($1, 0, NULL, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(now)
            .execute(&self.pool)
            .await?;
            let row = sqlx::query(&sql)
                .bind(key)
                .bind(now)
                .bind(policy.threshold as i64)
                .bind(policy.base_secs)
                .bind(policy.max_secs)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(r) = row {
                return Ok(Ok(ThrottleOutcome {
                    failures: r.try_get::<i64, _>("failures")?.clamp(0, u32::MAX as i64) as u32,
                    locked_until: r.try_get("locked_until")?,
                }));
            }
            let locked: Option<Option<i64>> = sqlx::query("SELECT locked_until FROM throttle WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("locked_until"))
                .transpose()?;
            if let Some(Some(until)) = locked {
                if until > now {
                    return Ok(Err(until - now));
                }
            }
        }
        Err(StoreError::Conflict(
            "the attempt counter kept changing; try again".into(),
        ))
    }

    /// Give back an attempt that turned out right: it was not a failure, and
    /// the lock it may have set must not stop the user's next step. The lock
    /// length is kept, so the next lock is still longer.
    pub async fn refund_attempt(&self, key: &str) -> Result<()> {
        sqlx::query(
            "UPDATE throttle SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END, locked_until = NULL WHERE key = $1",
        )
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Count one failure without gating (for callers that verified first).
    pub async fn record_failure(&self, key: &str, policy: &LockPolicy, now: i64) -> Result<ThrottleOutcome> {
        let row = sqlx::query(
            "INSERT INTO throttle (key, failures, locked_until, updated_at) VALUES ($1, 1, NULL, $2)
             ON CONFLICT (key) DO UPDATE SET failures = throttle.failures + 1, updated_at = $2
             RETURNING failures",
        )
        .bind(key)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let failures = row.try_get::<i64, _>("failures")?.clamp(0, u32::MAX as i64) as u32;
        let locked_until = policy.locked_until(failures, now);
        if let Some(until) = locked_until {
            // Only ever extend a lock: a slower node must not shorten it.
            sqlx::query(
                "UPDATE throttle SET locked_until = $1 WHERE key = $2 AND (locked_until IS NULL OR locked_until < $1)",
            )
            .bind(until)
            .bind(key)
            .execute(&self.pool)
            .await?;
        }
        Ok(ThrottleOutcome { failures, locked_until })
    }

    pub async fn clear_throttle(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM throttle WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- sessions ------------------------------------------------------

    pub async fn session_by_token_hash(&self, token_hash: &str, now: i64) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT * FROM sessions WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND idle_expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionRecord {
                id: r.try_get("id")?,
                user_id: r.try_get("user_id")?,
                amr: json_vec(&r.try_get::<String, _>("amr_json")?, "amr")?,
                methods: json_vec(&r.try_get::<String, _>("methods_json")?, "methods")?,
                acr: r.try_get("acr")?,
                authenticated_at: r.try_get("authenticated_at")?,
                idle_expires_at: r.try_get("idle_expires_at")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Where a session was signed in from: (source IP, device id). Kept out
    /// of `SessionRecord` because only policy re-evaluation needs it.
    pub async fn session_origin(&self, id: &str) -> Result<(Option<String>, Option<String>)> {
        let row = sqlx::query("SELECT source_ip, device_id FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => (r.try_get("source_ip")?, r.try_get("device_id")?),
            None => (None, None),
        })
    }

    /// Slide the idle deadline, never past the absolute one.
    pub async fn touch_session(&self, id: &str, now: i64, idle_secs: i64) -> Result<()> {
        sqlx::query(
            "UPDATE sessions SET last_seen_at = $1, idle_expires_at = CASE WHEN $2 < expires_at THEN $2 ELSE expires_at END WHERE id = $3",
        )
        .bind(now)
        .bind(now + idle_secs)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- API tokens ----------------------------------------------------

    pub async fn api_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>> {
        let row = sqlx::query(&format!(
            "{API_TOKEN_SELECT} WHERE t.token_hash = $1 AND t.revoked_at IS NULL"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(api_token_from_row).transpose()
    }

    pub async fn list_api_tokens(&self) -> Result<Vec<(ApiTokenRecord, i64, Option<i64>)>> {
        sqlx::query(&format!("{API_TOKEN_SELECT} ORDER BY t.created_at"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    api_token_from_row(r)?,
                    r.try_get("created_at")?,
                    r.try_get("revoked_at")?,
                ))
            })
            .collect()
    }

    // ---- Temporary Access Passes ---------------------------------------

    /// A user's passes that are not revoked, newest first.
    pub async fn taps_for_user(&self, user_id: &str) -> Result<Vec<TapRecord>> {
        sqlx::query(
            "SELECT * FROM temporary_access_passes WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(tap_from_row)
        .collect()
    }

    pub async fn tap_by_hash(&self, user_id: &str, pass_hash: &str) -> Result<Option<TapRecord>> {
        let row = sqlx::query(
            "SELECT * FROM temporary_access_passes WHERE user_id = $1 AND pass_hash = $2 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(pass_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(tap_from_row).transpose()
    }

    // ---- sign-in log ---------------------------------------------------

    pub async fn log_signin(&self, e: &SignInLogEntry) -> Result<()> {
        self.log_signin_with_decision(e, None).await
    }
}

impl WriteTx {
    pub async fn insert_session(
        &mut self,
        token_hash: &str,
        s: &SessionRecord,
        source_ip: Option<&str>,
        device_id: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id, token_hash, user_id, amr_json, methods_json, acr, authenticated_at, last_seen_at, idle_expires_at, expires_at, source_ip, device_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11)",
        )
        .bind(&s.id)
        .bind(token_hash)
        .bind(&s.user_id)
        .bind(serde_json::to_string(&s.amr).expect("strings serialise"))
        .bind(serde_json::to_string(&s.methods).expect("strings serialise"))
        .bind(&s.acr)
        .bind(s.authenticated_at)
        .bind(s.idle_expires_at)
        .bind(s.expires_at)
        .bind(source_ip.map(str::to_owned))
        .bind(device_id.map(str::to_owned))
        .execute(self.conn())
        .await?;
        Ok(())
    }

    pub async fn revoke_session(&mut self, id: &str, now: i64) -> Result<bool> {
        let n = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(self.conn())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    pub async fn insert_api_token(&mut self, rec: &ApiTokenRecord, token_hash: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO api_tokens (id, name, token_hash, scopes_json, created_by, created_at, owner_user_id) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&rec.id)
            .bind(&rec.name)
            .bind(token_hash)
            .bind(serde_json::to_string(&rec.scopes).expect("strings serialise"))
            .bind(&rec.created_by)
            .bind(now)
            .bind(rec.owner_user_id.clone())
            .execute(self.conn())
            .await
            .map_err(|e| StoreError::from_insert(e, "token"))?;
        Ok(())
    }

    pub async fn revoke_api_token(&mut self, id: &str, now: i64) -> Result<bool> {
        let n = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(self.conn())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_tap(
        &mut self,
        id: &str,
        user_id: &str,
        pass_hash: &str,
        issued_by: &str,
        verification: &serde_json::Value,
        single_use: bool,
        starts_at: i64,
        expires_at: i64,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO temporary_access_passes (id, user_id, pass_hash, issued_by, verification_json, single_use, starts_at, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(user_id)
        .bind(pass_hash)
        .bind(issued_by)
        .bind(verification.to_string())
        .bind(single_use as i64)
        .bind(starts_at)
        .bind(expires_at)
        .bind(now)
        .execute(self.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, "pass"))?;
        Ok(())
    }

    /// Spend a pass inside its window. Single-use passes flip `used_at` from
    /// NULL exactly once, so two nodes racing with one pass cannot both win.
    pub async fn use_tap(&mut self, id: &str, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE temporary_access_passes SET used_at = $1, use_count = use_count + 1
             WHERE id = $2 AND revoked_at IS NULL AND starts_at <= $1 AND expires_at > $1
               AND (single_use = 0 OR used_at IS NULL)",
        )
        .bind(now)
        .bind(id)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}
