//! Operations (issue 8): the full sign-in log with its query, retention purge,
//! alert handling and dedup, per-user timelines from the audit chain, and the
//! named cursors the detection engine and alert sinks advance.

use serde::Serialize;
use sqlx::Row;

use crate::audit::record_from_row;
use crate::{json_vec, Result, SignInLogEntry, Store, StoreError, WriteTx};

/// What the sign-in log keeps beyond [`SignInLogEntry`].
#[derive(Debug, Clone, Default)]
pub struct SignInDetail {
    /// Named location the source IP falls in, if any.
    pub location: Option<String>,
    /// The device, when the sign-in proved it.
    pub device_id: Option<String>,
    /// A device id the request named without proof (not believed).
    pub unproven_device_id: Option<String>,
    /// Methods attempted (on a failure: the step that failed).
    pub methods_tried: Vec<String>,
    /// Sign-in risk given to conditional access (`none`..`high`).
    pub risk: Option<String>,
}

/// One row of the sign-in log, everything it records.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SignInRecord {
    pub id: i64,
    pub at: i64,
    pub user_id: Option<String>,
    pub username: String,
    pub application: Option<String>,
    pub source_ip: Option<String>,
    pub location: Option<String>,
    /// The device, when the sign-in proved it (a relying party vouched, or
    /// a key bound to it was verified).
    pub device_id: Option<String>,
    /// A device id the request named without proof: recorded, not believed.
    pub unproven_device_id: Option<String>,
    pub result: String,
    pub reason: Option<String>,
    /// Methods that completed (amr material).
    pub methods_used: Vec<String>,
    pub methods_tried: Vec<String>,
    pub acr: Option<String>,
    pub risk: Option<String>,
    /// Conditional-access decision: applied policies and report-only results.
    pub policy: Option<serde_json::Value>,
}

/// Filters of the sign-in log query; `before_id` is the page cursor.
#[derive(Debug, Clone, Default)]
pub struct SignInFilter {
    pub username: Option<String>,
    pub application: Option<String>,
    pub result: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

pub(crate) fn signin_from_row(r: &sqlx::any::AnyRow) -> Result<SignInRecord> {
    let policy: Option<String> = r.try_get("policy_json")?;
    let tried: Option<String> = r.try_get("methods_tried_json")?;
    Ok(SignInRecord {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        user_id: r.try_get("user_id")?,
        username: r.try_get("username")?,
        application: r.try_get("application")?,
        source_ip: r.try_get("source_ip")?,
        location: r.try_get("location")?,
        device_id: r.try_get("device_id")?,
        unproven_device_id: r.try_get("unproven_device_id")?,
        result: r.try_get("result")?,
        reason: r.try_get("reason")?,
        methods_used: json_vec(&r.try_get::<String, _>("methods_json")?, "sign-in methods")?,
        methods_tried: match tried {
            Some(t) => json_vec(&t, "sign-in methods tried")?,
            None => vec![],
        },
        acr: r.try_get("acr")?,
        risk: r.try_get("risk")?,
        policy: policy
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("sign-in decision: {e}")))?,
    })
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

async fn log_signin_in<'e>(
    x: impl sqlx::Executor<'e, Database = sqlx::Any>,
    e: &SignInLogEntry,
    detail: &SignInDetail,
    decision: Option<&serde_json::Value>,
) -> Result<i64> {
    let row = sqlx::query(
        "INSERT INTO signins (at, user_id, username, application, source_ip, result, reason, methods_json, acr, policy_json, location, device_id, methods_tried_json, risk, unproven_device_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
    )
    .bind(e.at)
    .bind(e.user_id.clone())
    .bind(&e.username)
    .bind(e.application.clone())
    .bind(e.source_ip.clone())
    .bind(&e.result)
    .bind(e.reason.clone())
    .bind(to_json(&e.methods))
    .bind(e.acr.clone())
    .bind(decision.map(to_json))
    .bind(detail.location.clone())
    .bind(detail.device_id.clone())
    .bind(to_json(&detail.methods_tried))
    .bind(detail.risk.clone())
    .bind(detail.unproven_device_id.clone())
    .fetch_one(x)
    .await?;
    Ok(row.try_get(0)?)
}

impl Store {
    /// Log one sign-in attempt with everything the operations log keeps.
    pub async fn log_signin_detailed(
        &self,
        e: &SignInLogEntry,
        detail: &SignInDetail,
        decision: Option<&serde_json::Value>,
    ) -> Result<i64> {
        log_signin_in(&self.pool, e, detail, decision).await
    }

    /// What sign-in risk is computed from, in one read: the kinds of
    /// unresolved alerts raised since `since` about any of `targets`, and the
    /// user's newest `limit` successful sign-ins (newest first).
    pub async fn risk_facts(
        &self,
        targets: &[String],
        since: i64,
        user_id: &str,
        limit: i64,
    ) -> Result<(Vec<String>, Vec<SignInRecord>)> {
        let n = targets.len();
        let alert_targets = if n == 0 {
            "NULL".to_owned()
        } else {
            (4..4 + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
        };
        // Alerts and history are told apart by `alert_kind`; the history keeps
        // its own order by id.
        let sql = format!(
            "SELECT * FROM (
               SELECT NULL AS alert_kind, s.* FROM signins s
               WHERE s.user_id = $1 AND s.result = 'success' ORDER BY s.id DESC LIMIT $2
             ) AS history
             UNION ALL
             SELECT a.kind AS alert_kind, s.* FROM policy_alerts a LEFT JOIN signins s ON 1 = 0
             WHERE a.target IN ({alert_targets}) AND a.at >= $3 AND a.status <> 'resolved'"
        );
        let mut q = sqlx::query(&sql).bind(user_id).bind(limit).bind(since);
        for t in targets {
            q = q.bind(t);
        }
        let mut kinds = vec![];
        let mut history = vec![];
        for r in q.fetch_all(&self.pool).await? {
            match r.try_get::<Option<String>, _>("alert_kind")? {
                Some(k) => kinds.push(k),
                None => history.push(signin_from_row(&r)?),
            }
        }
        history.sort_by(|a, b| b.id.cmp(&a.id));
        Ok((kinds, history))
    }

    /// The sign-in log, newest first, filtered; page on with `before_id`.
    pub async fn signins_query(&self, f: &SignInFilter) -> Result<Vec<SignInRecord>> {
        // Absent filters bind NULL and match everything: one statement for
        // both databases, no string-built SQL.
        let rows = sqlx::query(
            "SELECT * FROM signins
             WHERE ($1 IS NULL OR username = $1)
               AND ($2 IS NULL OR COALESCE(application, $8) = $2)
               AND ($3 IS NULL OR result = $3)
               AND ($4 IS NULL OR at >= $4)
               AND ($5 IS NULL OR at < $5)
               AND ($6 IS NULL OR id < $6)
             ORDER BY id DESC LIMIT $7",
        )
        .bind(f.username.clone())
        .bind(f.application.clone())
        .bind(f.result.clone())
        .bind(f.from)
        .bind(f.to)
        .bind(f.before_id)
        .bind(f.limit.clamp(1, 1000))
        // Sign-ins to Latchkey's own portal are logged without an application.
        .bind(latchkey_core::policy::PORTAL_APPLICATION)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(signin_from_row).collect()
    }

    /// Sign-ins with id above `after`, oldest first (the detection engine's feed).
    pub async fn signins_after(&self, after: i64, limit: i64) -> Result<Vec<SignInRecord>> {
        let rows = sqlx::query("SELECT * FROM signins WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(signin_from_row).collect()
    }

    /// Sign-ins in `[from, to)`, oldest first (windowed detections).
    pub async fn signins_between(&self, from: i64, to: i64, limit: i64) -> Result<Vec<SignInRecord>> {
        let rows = sqlx::query("SELECT * FROM signins WHERE at >= $1 AND at < $2 ORDER BY id LIMIT $3")
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(signin_from_row).collect()
    }

    /// (application, failures, attempts) of sign-ins in `[from, to)`, the
    /// portal (no application) as `portal`.
    pub async fn signin_counts_by_app(&self, from: i64, to: i64, portal: &str) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT COALESCE(application, $3) AS app,
                    SUM(CASE WHEN result = 'success' THEN 0 ELSE 1 END) AS failures, COUNT(*) AS attempts
             FROM signins WHERE at >= $1 AND at < $2 GROUP BY COALESCE(application, $3)",
        )
        .bind(from)
        .bind(to)
        .bind(portal)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("app")?, r.try_get("failures")?, r.try_get("attempts")?)))
            .collect()
    }

    /// A user's successful sign-ins before sign-in `before_id` (newest first):
    /// the places and networks this user is known from.
    pub async fn user_success_history(&self, user_id: &str, before_id: i64, limit: i64) -> Result<Vec<SignInRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM signins WHERE user_id = $1 AND result = 'success' AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(user_id)
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(signin_from_row).collect()
    }

    /// Alerts raised since `since` about any of `targets`, still open or acknowledged.
    pub async fn unresolved_alerts_for(&self, target: &str, since: i64) -> Result<Vec<crate::AlertRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM policy_alerts WHERE target = $1 AND at >= $2 AND status <> 'resolved' ORDER BY id",
        )
        .bind(target)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(crate::policy::alert_from_row).collect()
    }

    pub async fn alert(&self, id: i64) -> Result<Option<crate::AlertRecord>> {
        let row = sqlx::query("SELECT * FROM policy_alerts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(crate::policy::alert_from_row).transpose()
    }

    /// Alerts newest first, optionally only one status.
    pub async fn alerts_newest(&self, status: Option<&str>, limit: i64) -> Result<Vec<crate::AlertRecord>> {
        let rows =
            sqlx::query("SELECT * FROM policy_alerts WHERE ($1 IS NULL OR status = $1) ORDER BY id DESC LIMIT $2")
                .bind(status.map(str::to_owned))
                .bind(limit.clamp(1, 1000))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(crate::policy::alert_from_row).collect()
    }

    /// (kind, severity, status, count) over every alert, for metrics.
    pub async fn alert_counts(&self) -> Result<Vec<(String, String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT kind, severity, status, COUNT(*) AS n FROM policy_alerts GROUP BY kind, severity, status ORDER BY kind, severity, status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("kind")?,
                    r.try_get("severity")?,
                    r.try_get("status")?,
                    r.try_get("n")?,
                ))
            })
            .collect()
    }

    pub async fn max_alert_id(&self) -> Result<i64> {
        let r = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM policy_alerts")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get(0)?)
    }

    pub async fn max_signin_id(&self) -> Result<i64> {
        let r = sqlx::query("SELECT COALESCE(MAX(id), 0) FROM signins")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get(0)?)
    }

    pub async fn cursor(&self, name: &str) -> Result<Option<i64>> {
        let r = sqlx::query("SELECT position FROM ops_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.try_get(0)).transpose()?)
    }

    /// Move a cursor from `expected` (None = not created yet) to `next`;
    /// false when another node moved it first.
    pub async fn advance_cursor(&self, name: &str, expected: Option<i64>, next: i64) -> Result<bool> {
        let n = match expected {
            None => {
                sqlx::query("INSERT INTO ops_cursors (name, position) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(next)
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
            }
            Some(old) => sqlx::query("UPDATE ops_cursors SET position = $1 WHERE name = $2 AND position = $3")
                .bind(next)
                .bind(name)
                .bind(old)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        };
        Ok(n == 1)
    }

    /// Audit events about one user (its `user:NAME` target) and every policy,
    /// strength, location, exception and rollout change, in chain order.
    pub async fn audit_timeline(
        &self,
        target: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<latchkey_core::audit::AuditRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_events WHERE seq > $1 AND (target = $2
                OR action LIKE 'policy%' OR action LIKE 'strength.%' OR action LIKE 'named_location.%'
                OR action LIKE 'rollout.%')
             ORDER BY seq LIMIT $3",
        )
        .bind(after)
        .bind(target)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }
}

impl WriteTx {
    /// Log one sign-in attempt inside the step's transaction; returns its id.
    pub async fn log_signin_detailed(
        &mut self,
        e: &SignInLogEntry,
        detail: &SignInDetail,
        decision: Option<&serde_json::Value>,
    ) -> Result<i64> {
        log_signin_in(self.conn(), e, detail, decision).await
    }

    /// Delete sign-in log rows older than `cutoff`; returns how many.
    pub async fn purge_signins_before(&mut self, cutoff: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM signins WHERE at < $1")
            .bind(cutoff)
            .execute(self.conn())
            .await?
            .rows_affected())
    }

    /// Whether an alert of this kind about this target was raised since
    /// `since`. Checked inside the write transaction, which writers take one
    /// at a time, so two nodes cannot both raise it.
    pub async fn alert_raised_since(&mut self, kind: &str, target: &str, since: i64) -> Result<bool> {
        Ok(
            sqlx::query("SELECT id FROM policy_alerts WHERE kind = $1 AND target = $2 AND at >= $3 LIMIT 1")
                .bind(kind)
                .bind(target)
                .bind(since)
                .fetch_optional(self.conn())
                .await?
                .is_some(),
        )
    }

    /// Whether an alert of this kind about this target is still unresolved.
    pub async fn alert_unresolved(&mut self, kind: &str, target: &str) -> Result<bool> {
        Ok(
            sqlx::query(
                "SELECT id FROM policy_alerts WHERE kind = $1 AND target = $2 AND status <> 'resolved' LIMIT 1",
            )
            .bind(kind)
            .bind(target)
            .fetch_optional(self.conn())
            .await?
            .is_some(),
        )
    }

    /// Move an alert to `status` (acknowledged or resolved). Resolved is final.
    pub async fn handle_alert(
        &mut self,
        id: i64,
        status: &str,
        by: &str,
        resolution: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE policy_alerts SET status = $1, handled_by = $2, handled_at = $3, resolution = $4,
                acknowledged_at = COALESCE(acknowledged_at, $3)
             WHERE id = $5 AND status <> 'resolved'",
        )
        .bind(status)
        .bind(by)
        .bind(now)
        .bind(resolution.map(str::to_owned))
        .bind(id)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}
