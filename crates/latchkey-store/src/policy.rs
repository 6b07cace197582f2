//! Conditional access: versioned policies, named locations, custom strengths,
//! exceptions, break-glass accounts, alerts and rollout waves.
//!
//! Every change goes through a [`WriteTx`] (so it is audited in the same
//! transaction) and bumps `policy_generation`, which lets each node cache the
//! parsed policy set and re-read it only when something changed.

use latchkey_core::policy::{
    AuthenticationStrength, ConditionalAccessPolicy, ExceptionSubject, NamedLocation, PolicyException, PolicySet,
};
use latchkey_core::rollout::RolloutWave;
use serde::Serialize;
use sqlx::Row;

use crate::auth::SignInLogEntry;
use crate::{json_vec, Result, Store, StoreError, WriteTx};

fn corrupt(what: &str) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

/// A stored policy and its current version.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRecord {
    pub policy: ConditionalAccessPolicy,
    pub version: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyVersionRecord {
    pub version: i64,
    /// `None` for the version that deleted the policy.
    pub policy: Option<ConditionalAccessPolicy>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExceptionRecord {
    pub id: String,
    pub policy_id: String,
    pub subject: ExceptionSubject,
    pub reason: String,
    pub requested_by: String,
    pub approved_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl ExceptionRecord {
    pub fn as_exception(&self) -> PolicyException {
        PolicyException {
            id: self.id.clone(),
            policy_id: self.policy_id.clone(),
            subject: self.subject.clone(),
            expires_at: self.expires_at,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BreakGlassRecord {
    pub user_id: String,
    pub username: String,
    pub test_interval_days: i64,
    pub created_by: String,
    pub created_at: i64,
    pub last_test_at: Option<i64>,
    pub last_use_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub severity: String,
    pub target: String,
    pub details: serde_json::Value,
    pub acknowledged_at: Option<i64>,
    /// open | acknowledged | resolved (migration 0007).
    pub status: String,
    pub handled_by: Option<String>,
    pub handled_at: Option<i64>,
    pub resolution: Option<String>,
}

pub(crate) fn alert_from_row(r: &sqlx::any::AnyRow) -> Result<AlertRecord> {
    Ok(AlertRecord {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        severity: r.try_get("severity")?,
        target: r.try_get("target")?,
        details: serde_json::from_str(&r.try_get::<String, _>("details_json")?).map_err(corrupt("alert"))?,
        acknowledged_at: r.try_get("acknowledged_at")?,
        status: r.try_get("status")?,
        handled_by: r.try_get("handled_by")?,
        handled_at: r.try_get("handled_at")?,
        resolution: r.try_get("resolution")?,
    })
}

/// One row of the sign-in log, for replay.
#[derive(Debug, Clone, Serialize)]
pub struct SignInHistoryRecord {
    pub at: i64,
    pub user_id: Option<String>,
    pub username: String,
    pub application: Option<String>,
    pub source_ip: Option<String>,
    pub result: String,
    pub methods: Vec<String>,
    pub acr: Option<String>,
    pub policy: Option<serde_json::Value>,
}

fn exception_from_row(r: &sqlx::any::AnyRow) -> Result<ExceptionRecord> {
    let kind: String = r.try_get("subject_kind")?;
    let subject: String = r.try_get("subject")?;
    Ok(ExceptionRecord {
        id: r.try_get("id")?,
        policy_id: r.try_get("policy_id")?,
        subject: match kind.as_str() {
            "user" => ExceptionSubject::User(subject),
            "group" => ExceptionSubject::Group(subject),
            other => return Err(StoreError::Corrupt(format!("exception subject kind '{other}'"))),
        },
        reason: r.try_get("reason")?,
        requested_by: r.try_get("requested_by")?,
        approved_by: r.try_get("approved_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// Changes whenever anything evaluation reads changes.
    pub async fn policy_generation(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT generation FROM policy_generation WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get("generation")?)
    }

    pub async fn policies(&self) -> Result<Vec<PolicyRecord>> {
        let rows = sqlx::query(
            "SELECT p.id, p.current_version, p.updated_at, v.body_json FROM policies p
             JOIN policy_versions v ON v.policy_id = p.id AND v.version = p.current_version
             ORDER BY p.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body_json")?;
                Ok(PolicyRecord {
                    policy: serde_json::from_str(&body).map_err(corrupt("policy"))?,
                    version: r.try_get("current_version")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    pub async fn policy(&self, id: &str) -> Result<Option<PolicyRecord>> {
        Ok(self.policies().await?.into_iter().find(|p| p.policy.id == id))
    }

    pub async fn policy_versions(&self, id: &str) -> Result<Vec<PolicyVersionRecord>> {
        let rows = sqlx::query(
            "SELECT version, body_json, created_by, created_at FROM policy_versions WHERE policy_id = $1 ORDER BY version",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let body: Option<String> = r.try_get("body_json")?;
                Ok(PolicyVersionRecord {
                    version: r.try_get("version")?,
                    policy: body
                        .map(|b| serde_json::from_str(&b).map_err(corrupt("policy version")))
                        .transpose()?,
                    created_by: r.try_get("created_by")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub async fn named_locations(&self) -> Result<Vec<NamedLocation>> {
        let rows = sqlx::query("SELECT body_json FROM named_locations ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| serde_json::from_str(&r.try_get::<String, _>("body_json")?).map_err(corrupt("location")))
            .collect()
    }

    pub async fn custom_strengths(&self) -> Result<Vec<AuthenticationStrength>> {
        let rows = sqlx::query("SELECT body_json FROM auth_strengths ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| serde_json::from_str(&r.try_get::<String, _>("body_json")?).map_err(corrupt("strength")))
            .collect()
    }

    /// The stored policy set, as evaluation takes it.
    pub async fn policy_set(&self) -> Result<PolicySet> {
        let policies = self.policies().await?.into_iter().map(|p| p.policy).collect();
        Ok(PolicySet {
            policies,
            named_locations: self.named_locations().await?,
            strengths: self.custom_strengths().await?,
        })
    }

    /// Exceptions not revoked. Expired ones are kept for the record;
    /// evaluation ignores them by the clock.
    pub async fn exceptions(&self) -> Result<Vec<ExceptionRecord>> {
        sqlx::query("SELECT * FROM policy_exceptions WHERE revoked_at IS NULL ORDER BY expires_at, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(exception_from_row)
            .collect()
    }

    pub async fn exception(&self, id: &str) -> Result<Option<ExceptionRecord>> {
        sqlx::query("SELECT * FROM policy_exceptions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(exception_from_row)
            .transpose()
    }

    pub async fn break_glass_accounts(&self) -> Result<Vec<BreakGlassRecord>> {
        let rows = sqlx::query(
            "SELECT b.user_id, u.username, b.test_interval_days, b.created_by, b.created_at,
                    (SELECT MAX(at) FROM break_glass_signins s WHERE s.user_id = b.user_id AND s.kind = 'test') AS last_test_at,
                    (SELECT MAX(at) FROM break_glass_signins s WHERE s.user_id = b.user_id AND s.kind = 'use') AS last_use_at
             FROM break_glass_accounts b JOIN users u ON u.id = b.user_id ORDER BY u.username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BreakGlassRecord {
                    user_id: r.try_get("user_id")?,
                    username: r.try_get("username")?,
                    test_interval_days: r.try_get("test_interval_days")?,
                    created_by: r.try_get("created_by")?,
                    created_at: r.try_get("created_at")?,
                    last_test_at: r.try_get("last_test_at")?,
                    last_use_at: r.try_get("last_use_at")?,
                })
            })
            .collect()
    }

    pub async fn is_break_glass(&self, user_id: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT user_id FROM break_glass_accounts WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    pub async fn alerts(&self, after: i64, limit: i64) -> Result<Vec<AlertRecord>> {
        let rows = sqlx::query("SELECT * FROM policy_alerts WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(alert_from_row).collect()
    }

    pub async fn rollout_waves(&self) -> Result<Vec<RolloutWave>> {
        let rows = sqlx::query("SELECT body_json FROM rollout_waves ORDER BY position, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| serde_json::from_str(&r.try_get::<String, _>("body_json")?).map_err(corrupt("wave")))
            .collect()
    }

    /// The sign-in log since `since` (oldest first), for replay.
    pub async fn signin_history(&self, since: i64, limit: i64) -> Result<Vec<SignInHistoryRecord>> {
        let rows = sqlx::query("SELECT * FROM signins WHERE at >= $1 ORDER BY at, id LIMIT $2")
            .bind(since)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let policy: Option<String> = r.try_get("policy_json")?;
                Ok(SignInHistoryRecord {
                    at: r.try_get("at")?,
                    user_id: r.try_get("user_id")?,
                    username: r.try_get("username")?,
                    application: r.try_get("application")?,
                    source_ip: r.try_get("source_ip")?,
                    result: r.try_get("result")?,
                    methods: json_vec(&r.try_get::<String, _>("methods_json")?, "methods")?,
                    acr: r.try_get("acr")?,
                    policy: policy.and_then(|p| serde_json::from_str(&p).ok()),
                })
            })
            .collect()
    }

    /// Log a sign-in together with its conditional-access decision.
    pub async fn log_signin_with_decision(
        &self,
        e: &SignInLogEntry,
        decision: Option<&serde_json::Value>,
    ) -> Result<()> {
        self.log_signin_detailed(e, &crate::SignInDetail::default(), decision)
            .await
            .map(|_| ())
    }
}

impl WriteTx {
    async fn bump_policy_generation(&mut self) -> Result<()> {
        sqlx::query("UPDATE policy_generation SET generation = generation + 1 WHERE id = 1")
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Store a new version of a policy and point at it. With `expected`, the
    /// change only applies if the current version is still that one (two
    /// admins editing at once: the second gets a conflict, not a lost update).
    pub async fn put_policy(
        &mut self,
        p: &ConditionalAccessPolicy,
        expected: Option<i64>,
        actor: &str,
        now: i64,
    ) -> Result<i64> {
        let current: Option<i64> = sqlx::query("SELECT current_version FROM policies WHERE id = $1")
            .bind(&p.id)
            .fetch_optional(self.conn())
            .await?
            .map(|r| r.try_get("current_version"))
            .transpose()?;
        if let Some(e) = expected {
            if current != Some(e) {
                return Err(StoreError::Conflict(format!(
                    "policy '{}' is at version {}, not {e}",
                    p.id,
                    current.map_or("none".into(), |c| c.to_string())
                )));
            }
        }
        let max: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM policy_versions WHERE policy_id = $1")
            .bind(&p.id)
            .fetch_one(self.conn())
            .await?
            .try_get("v")?;
        let version = max.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO policy_versions (policy_id, version, body_json, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&p.id)
        .bind(version)
        .bind(to_json(p))
        .bind(actor)
        .bind(now)
        .execute(self.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, &format!("policy '{}' changed concurrently", p.id)))?;
        let n = match current {
            Some(c) => sqlx::query(
                "UPDATE policies SET current_version = $1, state = $2, updated_at = $3 WHERE id = $4 AND current_version = $5",
            )
            .bind(version)
            .bind(p.state.as_str())
            .bind(now)
            .bind(&p.id)
            .bind(c)
            .execute(self.conn())
            .await?
            .rows_affected(),
            None => sqlx::query("INSERT INTO policies (id, current_version, state, updated_at) VALUES ($1, $2, $3, $4)")
                .bind(&p.id)
                .bind(version)
                .bind(p.state.as_str())
                .bind(now)
                .execute(self.conn())
                .await
                .map_err(|e| StoreError::from_insert(e, &format!("policy '{}' changed concurrently", p.id)))?
                .rows_affected(),
        };
        if n != 1 {
            return Err(StoreError::Conflict(format!("policy '{}' changed concurrently", p.id)));
        }
        self.bump_policy_generation().await?;
        Ok(version)
    }

    /// Delete a policy; its history stays, ending with a deletion version.
    pub async fn delete_policy(&mut self, id: &str, actor: &str, now: i64) -> Result<i64> {
        let n = sqlx::query("DELETE FROM policies WHERE id = $1")
            .bind(id)
            .execute(self.conn())
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("policy '{id}'")));
        }
        let max: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM policy_versions WHERE policy_id = $1")
            .bind(id)
            .fetch_one(self.conn())
            .await?
            .try_get("v")?;
        let version = max.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO policy_versions (policy_id, version, body_json, created_by, created_at) VALUES ($1, $2, NULL, $3, $4)",
        )
        .bind(id)
        .bind(version)
        .bind(actor)
        .bind(now)
        .execute(self.conn())
        .await?;
        self.bump_policy_generation().await?;
        Ok(version)
    }

    pub async fn put_named_location(&mut self, l: &NamedLocation, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO named_locations (name, body_json, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET body_json = excluded.body_json, updated_at = excluded.updated_at",
        )
        .bind(&l.name)
        .bind(to_json(l))
        .bind(now)
        .execute(self.conn())
        .await?;
        self.bump_policy_generation().await
    }

    pub async fn delete_named_location(&mut self, name: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM named_locations WHERE name = $1")
            .bind(name)
            .execute(self.conn())
            .await?
            .rows_affected();
        self.bump_policy_generation().await?;
        Ok(n > 0)
    }

    pub async fn put_strength(&mut self, s: &AuthenticationStrength, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO auth_strengths (name, body_json, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET body_json = excluded.body_json, updated_at = excluded.updated_at",
        )
        .bind(&s.name)
        .bind(to_json(s))
        .bind(now)
        .execute(self.conn())
        .await?;
        self.bump_policy_generation().await
    }

    pub async fn delete_strength(&mut self, name: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM auth_strengths WHERE name = $1")
            .bind(name)
            .execute(self.conn())
            .await?
            .rows_affected();
        self.bump_policy_generation().await?;
        Ok(n > 0)
    }

    pub async fn insert_exception(&mut self, e: &ExceptionRecord) -> Result<()> {
        let (kind, subject) = match &e.subject {
            ExceptionSubject::User(u) => ("user", u),
            ExceptionSubject::Group(g) => ("group", g),
        };
        sqlx::query(
            "INSERT INTO policy_exceptions (id, policy_id, subject_kind, subject, reason, requested_by, approved_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&e.id)
        .bind(&e.policy_id)
        .bind(kind)
        .bind(subject)
        .bind(&e.reason)
        .bind(&e.requested_by)
        .bind(&e.approved_by)
        .bind(e.created_at)
        .bind(e.expires_at)
        .execute(self.conn())
        .await?;
        self.bump_policy_generation().await
    }

    pub async fn revoke_exception(&mut self, id: &str, now: i64) -> Result<bool> {
        let n = sqlx::query("UPDATE policy_exceptions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(self.conn())
            .await?
            .rows_affected();
        self.bump_policy_generation().await?;
        Ok(n > 0)
    }

    pub async fn set_break_glass(
        &mut self,
        user_id: &str,
        test_interval_days: i64,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO break_glass_accounts (user_id, test_interval_days, created_by, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET test_interval_days = excluded.test_interval_days",
        )
        .bind(user_id)
        .bind(test_interval_days)
        .bind(actor)
        .bind(now)
        .execute(self.conn())
        .await?;
        self.bump_policy_generation().await
    }

    pub async fn unset_break_glass(&mut self, user_id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM break_glass_accounts WHERE user_id = $1")
            .bind(user_id)
            .execute(self.conn())
            .await?
            .rows_affected();
        self.bump_policy_generation().await?;
        Ok(n > 0)
    }

    pub async fn record_break_glass_signin(
        &mut self,
        user_id: &str,
        kind: &str,
        note: Option<&str>,
        recorded_by: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO break_glass_signins (user_id, at, kind, note, recorded_by) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user_id)
        .bind(now)
        .bind(kind)
        .bind(note.map(str::to_owned))
        .bind(recorded_by)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    pub async fn insert_alert(
        &mut self,
        kind: &str,
        severity: &str,
        target: &str,
        details: &serde_json::Value,
        now: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO policy_alerts (at, kind, severity, target, details_json) VALUES ($1, $2, $3, $4, $5)")
            .bind(now)
            .bind(kind)
            .bind(severity)
            .bind(target)
            .bind(to_json(details))
            .execute(self.conn())
            .await?;
        Ok(())
    }

    pub async fn put_wave(&mut self, w: &RolloutWave, actor: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO rollout_waves (id, name, position, body_json, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, position = excluded.position, body_json = excluded.body_json",
        )
        .bind(&w.id)
        .bind(&w.name)
        .bind(w.position)
        .bind(to_json(w))
        .bind(actor)
        .bind(now)
        .execute(self.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, &format!("a wave named '{}' exists", w.name)))?;
        self.bump_policy_generation().await
    }

    pub async fn delete_wave(&mut self, id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM rollout_waves WHERE id = $1")
            .bind(id)
            .execute(self.conn())
            .await?
            .rows_affected();
        self.bump_policy_generation().await?;
        Ok(n > 0)
    }
}
