//! Loading what an evidence report is computed from
//! ([`latchkey_core::evidence`]). The sign-in log can hold millions of rows,
//! so it is aggregated in SQL (`GROUP BY`), never loaded row by row; alerts
//! likewise. Users, methods, method events, exceptions, break-glass
//! accounts and policies are small and loaded whole.

use std::collections::BTreeMap;

use latchkey_core::evidence::{
    AlertGroup, AuditChainStatus, BreakGlassRow, EvidenceInput, ExceptionRow, LeaverRow, MethodChange, MethodEvent,
    MethodRow, Period, PolicyRow, SignInGroup, UserRow,
};
use latchkey_core::policy::ExceptionSubject;
use sqlx::Row;

use crate::{json_vec, Result, SignInLogEntry, Store};

/// Rows per multi-row INSERT when importing sign-ins. Measured: 100 rows
/// (1,000 parameters) imports ~15x faster than 1,000 rows per statement
/// through sqlx's `Any` driver, and stays far below both databases' limits.
const IMPORT_BATCH: usize = 100;

impl Store {
    /// Everything an evidence report for `period` needs, as of now.
    pub async fn evidence_input(&self, period: Period) -> Result<EvidenceInput> {
        Ok(EvidenceInput {
            users: self.evidence_users().await?,
            methods: self.evidence_methods().await?,
            method_events: self.method_events(period.to).await?,
            exceptions: self
                .exceptions()
                .await?
                .into_iter()
                .map(|e| ExceptionRow {
                    subject: match &e.subject {
                        ExceptionSubject::User(u) => format!("user:{u}"),
                        ExceptionSubject::Group(g) => format!("group:{g}"),
                    },
                    id: e.id,
                    policy_id: e.policy_id,
                    reason: e.reason,
                    requested_by: e.requested_by,
                    approved_by: e.approved_by,
                    created_at: e.created_at,
                    expires_at: e.expires_at,
                })
                .collect(),
            break_glass: self
                .break_glass_accounts()
                .await?
                .into_iter()
                .map(|b| BreakGlassRow {
                    username: b.username,
                    test_interval_days: b.test_interval_days,
                    created_at: b.created_at,
                    last_test_at: b.last_test_at,
                    last_use_at: b.last_use_at,
                })
                .collect(),
            policies: self.evidence_policies(period).await?,
            signins: self.signin_groups(period).await?,
            alerts: self.alert_groups(period).await?,
            leavers: self.evidence_leavers(period).await?,
            audit: {
                let v = self.verify_audit_chain().await?;
                AuditChainStatus {
                    ok: v.ok,
                    length: v.length,
                    head_hash: v.head_hash,
                    first_broken: v.first_broken.map(|b| format!("seq {}: {}", b.seq, b.reason)),
                }
            },
        })
    }

    /// Accounts that left `active` in the period (a later delete of a
    /// disabled account is not a second leaving).
    async fn evidence_leavers(&self, period: Period) -> Result<Vec<LeaverRow>> {
        sqlx::query(
            "SELECT u.username, u.display_name, c.to_state, c.reason, c.actor, c.source, c.source_changed_at, c.revoked_at
             FROM account_state_changes c JOIN users u ON u.id = c.user_id
             WHERE c.from_state = 'active' AND c.to_state <> 'active' AND c.changed_at >= $1 AND c.changed_at <= $2
             ORDER BY c.source_changed_at, u.username",
        )
        .bind(period.from)
        .bind(period.to)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(LeaverRow {
                username: r.try_get("username")?,
                display_name: r.try_get("display_name")?,
                state: r.try_get("to_state")?,
                reason: r.try_get("reason")?,
                actor: r.try_get("actor")?,
                source: r.try_get("source")?,
                source_changed_at: r.try_get("source_changed_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        })
        .collect()
    }

    async fn evidence_users(&self) -> Result<Vec<UserRow>> {
        let rows = sqlx::query(
            "SELECT username, display_name, department, roles_json, state, created_at FROM users ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UserRow {
                    username: r.try_get("username")?,
                    display_name: r.try_get("display_name")?,
                    department: r.try_get("department")?,
                    // Role names as strings: the report lists whatever is stored.
                    roles: json_vec(&r.try_get::<String, _>("roles_json")?, "roles")?,
                    active: r.try_get::<String, _>("state")? == "active",
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Methods with their kind as stored (kinds added by later features count too).
    async fn evidence_methods(&self) -> Result<Vec<MethodRow>> {
        let rows = sqlx::query(
            "SELECT m.id, u.username, m.kind, m.state, m.registered_at, m.confirmed_at
             FROM methods m JOIN users u ON u.id = m.user_id ORDER BY u.username, m.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MethodRow {
                    id: r.try_get("id")?,
                    username: r.try_get("username")?,
                    kind: r.try_get("kind")?,
                    active: r.try_get::<String, _>("state")? == "active",
                    registered_at: r.try_get("registered_at")?,
                    confirmed_at: r.try_get("confirmed_at")?,
                })
            })
            .collect()
    }

    /// Method registrations and removals from the audit chain up to `until`:
    /// `method.add`, `method.remove`, and the methods a lost or retired
    /// device took with it.
    async fn method_events(&self, until: i64) -> Result<Vec<MethodEvent>> {
        let rows = sqlx::query(
            "SELECT at_ms, action, target, details FROM audit_events
             WHERE action IN ('method.add', 'method.remove', 'device.lost', 'device.retire') AND at_ms <= $1
             ORDER BY seq",
        )
        .bind(until.saturating_mul(1000).saturating_add(999))
        .fetch_all(&self.pool)
        .await?;
        let mut kinds: BTreeMap<String, String> = BTreeMap::new();
        let mut out = vec![];
        for r in &rows {
            let action: String = r.try_get("action")?;
            let target: String = r.try_get("target")?;
            let Some(username) = target.strip_prefix("user:") else {
                continue;
            };
            let at = r.try_get::<i64, _>("at_ms")? / 1000;
            // Details that do not parse are someone else's format: skip them.
            let details: serde_json::Value =
                serde_json::from_str(&r.try_get::<String, _>("details")?).unwrap_or_default();
            let text = |k: &str| details.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            let mut push = |id: String, kind: Option<String>, change| {
                let kind = match kind.or_else(|| kinds.get(&id).cloned()) {
                    Some(k) => k,
                    None => return,
                };
                kinds.insert(id.clone(), kind.clone());
                out.push(MethodEvent {
                    at,
                    username: username.to_owned(),
                    method_id: id,
                    kind,
                    change,
                });
            };
            match action.as_str() {
                "method.add" | "method.remove" => {
                    if let Some(id) = text("method_id") {
                        let change = if action == "method.add" {
                            MethodChange::Added
                        } else {
                            MethodChange::Removed
                        };
                        push(id, text("kind"), change);
                    }
                }
                _ => {
                    for id in details
                        .get("revoked_methods")
                        .and_then(|v| v.as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str())
                    {
                        push(id.to_owned(), None, MethodChange::Removed);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn evidence_policies(&self, period: Period) -> Result<Vec<PolicyRow>> {
        let changed_by: BTreeMap<(String, i64), String> =
            sqlx::query("SELECT policy_id, version, created_by FROM policy_versions")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        (r.try_get("policy_id")?, r.try_get("version")?),
                        r.try_get("created_by")?,
                    ))
                })
                .collect::<Result<_>>()?;
        let changes: BTreeMap<String, i64> = sqlx::query(
            "SELECT policy_id, COUNT(*) AS n FROM policy_versions WHERE created_at >= $1 AND created_at <= $2
             GROUP BY policy_id",
        )
        .bind(period.from)
        .bind(period.to)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("policy_id")?, r.try_get("n")?)))
        .collect::<Result<_>>()?;
        Ok(self
            .policies()
            .await?
            .into_iter()
            .map(|p| {
                let id = p.policy.id.clone();
                PolicyRow {
                    changed_by: changed_by.get(&(id.clone(), p.version)).cloned().unwrap_or_default(),
                    changes_in_period: changes.get(&id).copied().unwrap_or(0),
                    name: p.policy.name.clone(),
                    state: serde_json::to_value(p.policy.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    version: p.version,
                    updated_at: p.updated_at,
                    id,
                }
            })
            .collect())
    }

    /// Sign-ins in the period, counted per (result, reason, acr, decision).
    /// Decisions repeat (the same policies apply to many sign-ins), so the
    /// groups stay few however many rows there are.
    async fn signin_groups(&self, period: Period) -> Result<Vec<SignInGroup>> {
        let rows = sqlx::query(
            "SELECT result, reason, acr, policy_json, COUNT(*) AS n FROM signins
             WHERE at >= $1 AND at <= $2 GROUP BY result, reason, acr, policy_json",
        )
        .bind(period.from)
        .bind(period.to)
        .fetch_all(&self.pool)
        .await?;
        // (result, reason, acr, required strengths) -> count
        type Key = (String, Option<String>, Option<String>, Vec<String>);
        let mut merged: BTreeMap<Key, i64> = BTreeMap::new();
        for r in &rows {
            let policy: Option<String> = r.try_get("policy_json")?;
            let required: Vec<String> = policy
                .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
                .and_then(|v| serde_json::from_value(v.get("required_strengths")?.clone()).ok())
                .unwrap_or_default();
            *merged
                .entry((r.try_get("result")?, r.try_get("reason")?, r.try_get("acr")?, required))
                .or_default() += r.try_get::<i64, _>("n")?;
        }
        Ok(merged
            .into_iter()
            .map(|((result, reason, acr, required), count)| SignInGroup {
                result,
                reason,
                acr,
                required,
                count,
            })
            .collect())
    }

    /// Import sign-in log rows with their decisions in one transaction,
    /// many rows per statement: history from another system, or a
    /// benchmark's million rows. Live sign-ins use `log_signin_with_decision`.
    pub async fn import_signins(&self, rows: &[(SignInLogEntry, Option<serde_json::Value>)]) -> Result<u64> {
        let mut tx = self.bookkeeping().await?;
        let mut n = 0;
        for chunk in rows.chunks(IMPORT_BATCH) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let b = i * 10;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 7,
                        b + 8,
                        b + 9,
                        b + 10
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO signins (at, user_id, username, application, source_ip, result, reason, methods_json, acr, policy_json) VALUES {}",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (e, decision) in chunk {
                q = q
                    .bind(e.at)
                    .bind(e.user_id.clone())
                    .bind(e.username.clone())
                    .bind(e.application.clone())
                    .bind(e.source_ip.clone())
                    .bind(e.result.clone())
                    .bind(e.reason.clone())
                    .bind(serde_json::to_string(&e.methods).expect("strings serialise"))
                    .bind(e.acr.clone())
                    .bind(decision.as_ref().map(|d| d.to_string()));
            }
            n += q.execute(tx.conn()).await?.rows_affected();
        }
        tx.commit_bookkeeping().await?;
        Ok(n)
    }

    /// Alerts raised in the period per kind and severity; handled means acknowledged.
    async fn alert_groups(&self, period: Period) -> Result<Vec<AlertGroup>> {
        let rows = sqlx::query(
            "SELECT kind, severity, COUNT(*) AS total, COUNT(acknowledged_at) AS handled FROM policy_alerts
             WHERE at >= $1 AND at <= $2 GROUP BY kind, severity ORDER BY kind, severity",
        )
        .bind(period.from)
        .bind(period.to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let total: i64 = r.try_get("total")?;
                let handled: i64 = r.try_get("handled")?;
                Ok(AlertGroup {
                    kind: r.try_get("kind")?,
                    severity: r.try_get("severity")?,
                    handled,
                    open: total - handled,
                })
            })
            .collect()
    }
}
