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
    pub issued_by: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
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
        issued_by: r.try_get("issued_by")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// Result of recording a failure against a throttle key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleOutcome {
    pub failures: u32,
    pub locked_until: Option<i64>,
}

/// One throttle counter as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleRow {
    pub key: String,
    pub failures: u32,
    pub locked_until: Option<i64>,
}

fn throttle_from_row(r: &sqlx::any::AnyRow) -> Result<ThrottleRow> {
    Ok(ThrottleRow {
        key: r.try_get("key")?,
        failures: r.try_get::<i64, _>("failures")?.clamp(0, u32::MAX as i64) as u32,
        locked_until: r.try_get("locked_until")?,
    })
}

/// `$from, $from+1, ...` for an `IN (...)` list of `n` values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

// The flow and throttle statements, shared by the pool (`Store`) and a
// transaction (`WriteTx`).

async fn insert_flow_in<'e>(
    e: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id_hash: &str,
    f: &FlowRecord,
    now: i64,
) -> Result<()> {
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
    .execute(e)
    .await?;
    Ok(())
}

/// Compare-and-swap of a flow's state: succeeds only if nobody else moved it
/// since `expected` was read. `next` = `None` deletes the flow (it completed).
async fn swap_flow_in<'e>(
    e: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id_hash: &str,
    expected: &str,
    next: Option<&str>,
) -> Result<bool> {
    let done = match next {
        Some(next) => {
            sqlx::query("UPDATE signin_flows SET flow_json = $1 WHERE id_hash = $2 AND flow_json = $3")
                .bind(next)
                .bind(id_hash)
                .bind(expected)
                .execute(e)
                .await?
        }
        None => {
            sqlx::query("DELETE FROM signin_flows WHERE id_hash = $1 AND flow_json = $2")
                .bind(id_hash)
                .bind(expected)
                .execute(e)
                .await?
        }
    };
    Ok(done.rows_affected() == 1)
}

/// Count one failure; returns the failures now counted.
async fn count_failure_in<'e>(e: impl sqlx::Executor<'e, Database = sqlx::Any>, key: &str, now: i64) -> Result<u32> {
    let row = sqlx::query(
        "INSERT INTO throttle (key, failures, locked_until, updated_at) VALUES ($1, 1, NULL, $2)
         ON CONFLICT (key) DO UPDATE SET failures = throttle.failures + 1, updated_at = $2
         RETURNING failures",
    )
    .bind(key)
    .bind(now)
    .fetch_one(e)
    .await?;
    Ok(row.try_get::<i64, _>("failures")?.clamp(0, u32::MAX as i64) as u32)
}

/// Set a lock decided by the caller; only ever extends one, so a node with
/// a lagging clock cannot shorten it.
async fn extend_lock_in<'e>(e: impl sqlx::Executor<'e, Database = sqlx::Any>, key: &str, until: i64) -> Result<()> {
    sqlx::query("UPDATE throttle SET locked_until = $1 WHERE key = $2 AND (locked_until IS NULL OR locked_until < $1)")
        .bind(until)
        .bind(key)
        .execute(e)
        .await?;
    Ok(())
}

async fn clear_throttle_in<'e>(e: impl sqlx::Executor<'e, Database = sqlx::Any>, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM throttle WHERE key = $1")
        .bind(key)
        .execute(e)
        .await?;
    Ok(())
}

fn flow_from_row(r: &sqlx::any::AnyRow) -> Result<FlowRecord> {
    Ok(FlowRecord {
        user_id: r.try_get("flow_user_id")?,
        username: r.try_get("flow_username")?,
        flow_json: r.try_get("flow_json")?,
        application: r.try_get("flow_application")?,
        source_ip: r.try_get("flow_source_ip")?,
        expires_at: r.try_get("flow_expires_at")?,
    })
}

const FLOW_COLUMNS: &str = "f.user_id AS flow_user_id, f.username AS flow_username, f.flow_json, \
     f.application AS flow_application, f.source_ip AS flow_source_ip, f.expires_at AS flow_expires_at";

impl Store {
    // ---- sign-in flows -------------------------------------------------

    pub async fn insert_flow(&self, id_hash: &str, f: &FlowRecord, now: i64) -> Result<()> {
        insert_flow_in(&self.pool, id_hash, f, now).await
    }

    pub async fn flow(&self, id_hash: &str, now: i64) -> Result<Option<FlowRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FLOW_COLUMNS} FROM signin_flows f WHERE f.id_hash = $1 AND f.expires_at > $2"
        ))
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(flow_from_row).transpose()
    }

    /// A flow that has not expired, with its user if it names one (and the
    /// user still exists): one read for what every sign-in step starts from.
    /// A flow that has not expired with its user, and whether that user
    /// signed in successfully from `source` (the flow's own source when
    /// `None`) at or after `familiar_since` (smart lock-out): one read.
    pub async fn flow_with_user(
        &self,
        id_hash: &str,
        now: i64,
        source: Option<&str>,
        familiar_since: i64,
    ) -> Result<Option<(FlowRecord, Option<crate::UserRecord>, bool)>> {
        let row = sqlx::query(&format!(
            "SELECT {FLOW_COLUMNS}, u.*, {} FROM signin_flows f LEFT JOIN users u ON u.id = f.user_id
             WHERE f.id_hash = $1 AND f.expires_at > $2",
            crate::users::familiar_source("COALESCE($3, f.source_ip)", "$4")
        ))
        .bind(id_hash)
        .bind(now)
        .bind(source.map(str::to_owned))
        .bind(familiar_since)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let user = match r.try_get::<Option<String>, _>("id")? {
            Some(_) => Some(crate::users::user_from_row(&r)?),
            None => None,
        };
        let familiar = r.try_get::<i64, _>("familiar_source")? != 0;
        Ok(Some((flow_from_row(&r)?, user, familiar)))
    }

    /// Compare-and-swap the flow's state: succeeds only if nobody else moved
    /// it since `expected` was read, so one flow cannot complete twice.
    pub async fn update_flow(&self, id_hash: &str, expected: &str, next: &str) -> Result<bool> {
        swap_flow_in(&self.pool, id_hash, expected, Some(next)).await
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
    //
    // The store counts and keeps what `latchkey_core::softlock` decides; the
    // back-off schedule lives only there.

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

    /// Count one failure without gating (for callers that verified first),
    /// and keep the lock `policy` sets after that many failures.
    pub async fn record_failure(&self, key: &str, policy: &LockPolicy, now: i64) -> Result<ThrottleOutcome> {
        let failures = count_failure_in(&self.pool, key, now).await?;
        let locked_until = policy.locked_until(failures, now);
        if let Some(until) = locked_until {
            extend_lock_in(&self.pool, key, until).await?;
        }
        Ok(ThrottleOutcome { failures, locked_until })
    }

    pub async fn clear_throttle(&self, key: &str) -> Result<()> {
        clear_throttle_in(&self.pool, key).await
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

    /// One pass of `user_id`, in any state (revoked included).
    pub async fn tap(&self, user_id: &str, id: &str) -> Result<Option<TapRecord>> {
        let row = sqlx::query("SELECT * FROM temporary_access_passes WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
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
    // ---- a sign-in step's writes ---------------------------------------

    pub async fn insert_flow(&mut self, id_hash: &str, f: &FlowRecord, now: i64) -> Result<()> {
        insert_flow_in(self.conn(), id_hash, f, now).await
    }

    /// Compare-and-swap of the flow (see [`Store::update_flow`]); `next` =
    /// `None` deletes it, for a flow that completed.
    pub async fn swap_flow(&mut self, id_hash: &str, expected: &str, next: Option<&str>) -> Result<bool> {
        swap_flow_in(self.conn(), id_hash, expected, next).await
    }

    /// The counters of `keys` that exist.
    pub async fn throttle(&mut self, keys: &[String]) -> Result<Vec<ThrottleRow>> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "SELECT key, failures, locked_until FROM throttle WHERE key IN ({})",
            placeholders(1, keys.len())
        );
        let mut q = sqlx::query(&sql);
        for k in keys {
            q = q.bind(k);
        }
        q.fetch_all(self.conn()).await?.iter().map(throttle_from_row).collect()
    }

    /// Count an attempt against every key *before* verifying it, unless the
    /// key is locked at `now`: one statement, so parallel guesses each see
    /// the others' counts. Returns the keys counted with their new counts;
    /// a key missing from the answer is locked (roll back, nothing counted).
    pub async fn count_attempts(&mut self, keys: &[String], now: i64) -> Result<Vec<ThrottleRow>> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let values = (0..keys.len())
            .map(|i| format!("(${}, 1, NULL, $1)", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO throttle (key, failures, locked_until, updated_at) VALUES {values}
             ON CONFLICT (key) DO UPDATE SET failures = throttle.failures + 1, updated_at = $1
             WHERE throttle.locked_until IS NULL OR throttle.locked_until <= $1
             RETURNING key, failures, locked_until"
        );
        let mut q = sqlx::query(&sql).bind(now);
        for k in keys {
            q = q.bind(k);
        }
        q.fetch_all(self.conn()).await?.iter().map(throttle_from_row).collect()
    }

    /// Count one failure after verifying (the step transaction holds the
    /// audit-head lock, so nothing slipped in between). Returns the count.
    pub async fn count_failure(&mut self, key: &str, now: i64) -> Result<u32> {
        count_failure_in(self.conn(), key, now).await
    }

    /// Keep a lock the caller decided (see [`Store::record_failure`]).
    pub async fn extend_lock(&mut self, key: &str, until: i64) -> Result<()> {
        extend_lock_in(self.conn(), key, until).await
    }

    /// Give back attempts counted by [`WriteTx::count_attempts`] that turned
    /// out right: not failures, and a lock they set must not stop the next
    /// step. A counter back at zero is removed (as if never touched).
    pub async fn refund_attempts(&mut self, counted: &[ThrottleRow]) -> Result<()> {
        let firsts: Vec<&str> = counted
            .iter()
            .filter(|r| r.failures <= 1)
            .map(|r| r.key.as_str())
            .collect();
        let mut deleted: Vec<String> = vec![];
        if !firsts.is_empty() {
            // Only if no other attempt was counted meanwhile.
            let sql = format!(
                "DELETE FROM throttle WHERE failures <= 1 AND key IN ({}) RETURNING key",
                placeholders(1, firsts.len())
            );
            let mut q = sqlx::query(&sql);
            for k in &firsts {
                q = q.bind(*k);
            }
            for r in q.fetch_all(self.conn()).await? {
                deleted.push(r.try_get("key")?);
            }
        }
        let rest: Vec<&str> = counted
            .iter()
            .map(|r| r.key.as_str())
            .filter(|k| !deleted.iter().any(|d| d == k))
            .collect();
        if !rest.is_empty() {
            let sql = format!(
                "UPDATE throttle SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END, locked_until = NULL
                 WHERE key IN ({})",
                placeholders(1, rest.len())
            );
            let mut q = sqlx::query(&sql);
            for k in &rest {
                q = q.bind(*k);
            }
            q.execute(self.conn()).await?;
        }
        Ok(())
    }

    pub async fn clear_throttle(&mut self, key: &str) -> Result<()> {
        clear_throttle_in(self.conn(), key).await
    }

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

    /// Revoke a pass that is not revoked yet (compare-and-set, so two
    /// agents revoking at once audit one revocation).
    pub async fn revoke_tap(
        &mut self,
        user_id: &str,
        id: &str,
        by: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE temporary_access_passes SET revoked_at = $1, revoked_by = $2, revoked_reason = $3
             WHERE user_id = $4 AND id = $5 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(by)
        .bind(reason.map(str::to_owned))
        .bind(user_id)
        .bind(id)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// End a user's web sessions that were opened with a pass, and the OpenID
    /// Connect grants made from them (a revoked pass must not leave a way in).
    pub async fn end_pass_sessions(&mut self, user_id: &str, now: i64) -> Result<u64> {
        sqlx::query(
            "UPDATE oidc_tokens SET expires_at = $1 WHERE expires_at > $1 AND grant_id IN
               (SELECT g.id FROM oidc_grants g JOIN sessions s ON s.id = g.session_id
                WHERE g.user_id = $2 AND g.revoked_at IS NULL AND s.revoked_at IS NULL AND s.methods_json LIKE '%temporary_access_pass%')",
        )
        .bind(now)
        .bind(user_id)
        .execute(self.conn())
        .await?;
        sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $1, revoked_reason = 'pass_revoked' WHERE user_id = $2 AND revoked_at IS NULL
               AND session_id IN (SELECT id FROM sessions WHERE user_id = $2 AND revoked_at IS NULL AND methods_json LIKE '%temporary_access_pass%')",
        )
        .bind(now)
        .bind(user_id)
        .execute(self.conn())
        .await?;
        Ok(sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND methods_json LIKE '%temporary_access_pass%'",
        )
        .bind(now)
        .bind(user_id)
        .execute(self.conn())
        .await?
        .rows_affected())
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
