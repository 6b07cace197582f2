//! The append-only audit chain.

use latchkey_core::audit::{next_record, AuditRecord, ChainVerification, ChainVerifier};
use sqlx::Row;

use crate::{Result, Store, StoreError, WriteTx};

/// What happened, by whom, to what. `details` must never hold a secret.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
}

impl AuditEntry {
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        details: serde_json::Value,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            details,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditPage {
    pub events: Vec<AuditRecord>,
    pub next_after: i64,
}

pub(crate) fn record_from_row(r: &sqlx::any::AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.try_get("seq")?,
        at_ms: r.try_get("at_ms")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        details: r.try_get("details")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
        scheme: r.try_get("scheme")?,
    })
}

impl WriteTx {
    /// Append to the chain inside this transaction. The head row is locked
    /// (by [`Store::write`], or here on the first event), so the sequence
    /// cannot fork.
    pub async fn audit(&mut self, entry: &AuditEntry, at_ms: i64) -> Result<i64> {
        let (seq, hash) = self.audit_head().await?;
        let details = serde_json::to_string(&entry.details).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let prev = if seq == 0 { None } else { Some((seq, hash.as_str())) };
        let rec = next_record(
            prev,
            at_ms,
            &entry.actor,
            &entry.action,
            &entry.target,
            &details,
            self.chain_key.as_deref(),
        );
        sqlx::query(
            "INSERT INTO audit_events (seq, at_ms, actor, action, target, details, prev_hash, hash, scheme) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(rec.seq)
        .bind(rec.at_ms)
        .bind(&rec.actor)
        .bind(&rec.action)
        .bind(&rec.target)
        .bind(&rec.details)
        .bind(&rec.prev_hash)
        .bind(&rec.hash)
        .bind(&rec.scheme)
        .execute(self.conn())
        .await?;
        // The head row itself is written once, when the transaction commits.
        self.move_audit_head(rec.seq, rec.hash);
        Ok(rec.seq)
    }
}

impl Store {
    /// The stored hash of the record at `seq`, if there is one.
    pub async fn audit_hash_at(&self, seq: i64) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT hash FROM audit_events WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("hash"))
            .transpose()?)
    }

    /// One audited change in its own transaction, for callers with nothing else to write.
    pub async fn audit_only(&self, entry: &AuditEntry, at_ms: i64) -> Result<i64> {
        let mut tx = self.write().await?;
        let seq = tx.audit(entry, at_ms).await?;
        tx.commit().await?;
        Ok(seq)
    }

    pub async fn audit_page(&self, after: i64, limit: i64, target: Option<&str>) -> Result<AuditPage> {
        let rows = match target {
            Some(t) => {
                sqlx::query("SELECT * FROM audit_events WHERE seq > $1 AND target = $2 ORDER BY seq LIMIT $3")
                    .bind(after)
                    .bind(t)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let events = rows.iter().map(record_from_row).collect::<Result<Vec<_>>>()?;
        let next_after = events.last().map(|e| e.seq).unwrap_or(after);
        Ok(AuditPage { events, next_after })
    }

    /// Recompute the whole chain, page by page, up to the head as it was
    /// when verification began (appends during verification are not
    /// tampering), and compare the end of the chain with that head.
    pub async fn verify_audit_chain(&self) -> Result<ChainVerification> {
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let head_seq: i64 = head.try_get("seq")?;
        let head_hash: String = head.try_get("hash")?;
        let mut verifier = ChainVerifier::with_key(self.chain_key.as_deref().cloned());
        let mut after = 0;
        loop {
            let rows = sqlx::query("SELECT * FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT 5000")
                .bind(after)
                .bind(head_seq)
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let e = record_from_row(r)?;
                after = e.seq;
                verifier.push(&e);
            }
        }
        let mut result = verifier.finish();
        // Rows deleted from the tail leave a chain that is internally
        // consistent but shorter than the head says.
        if result.first_broken.is_none() && (head_seq != result.length || head_hash != result.head_hash) {
            result.ok = false;
            result.first_broken = Some(latchkey_core::audit::BrokenLink {
                seq: result.length + 1,
                reason: format!(
                    "chain ends at seq {} but the head records seq {head_seq}: events were removed",
                    result.length
                ),
            });
        }
        Ok(result)
    }
}
