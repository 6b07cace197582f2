//! Reading the audit chain: pages of events and the chain's verification,
//! and its anchor outside the database: signed checkpoints of the head
//! appended to a file. Writing events happens inside each change's own
//! transaction (`latchkey-store`).

use std::path::Path;

use latchkey_core::audit::{compare_checkpoint, ChainVerification, Checkpoint, CheckpointFinding};
use latchkey_core::Role;
use latchkey_store::AuditPage;

use crate::app::{App, Principal};
use crate::error::{ServiceError, ServiceResult};

fn require_auditor(p: &Principal) -> ServiceResult<()> {
    if p.has_role(Role::Auditor) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "the audit log needs the auditor or admin role".into(),
        ))
    }
}

impl App {
    /// Events after `after`, oldest first (auditors and admins).
    pub async fn audit_page(
        &self,
        p: &Principal,
        after: i64,
        limit: i64,
        target: Option<&str>,
    ) -> ServiceResult<AuditPage> {
        require_auditor(p)?;
        Ok(self
            .store
            .audit_page(after.max(0), limit.clamp(1, 10_000), target)
            .await?)
    }

    /// Recompute every link of the chain; names the first broken one.
    pub async fn verify_audit(&self, p: &Principal) -> ServiceResult<ChainVerification> {
        require_auditor(p)?;
        Ok(self.store.verify_audit_chain().await?)
    }
}

/// What `audit verify --checkpoints` found: the chain itself, and what each
/// checkpoint says about it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointReport {
    pub chain: ChainVerification,
    pub checkpoints: usize,
    pub findings: Vec<CheckpointFinding>,
    /// Every checkpoint's signature verified and the chain still holds
    /// every checkpointed head.
    pub intact: bool,
}

impl App {
    /// The head's seq (0: empty log), to tell whether a new checkpoint is due.
    pub async fn audit_head_seq(&self) -> ServiceResult<i64> {
        Ok(self.store.audit_head().await?.seq)
    }

    /// Sign the head as it is now and append it to `file` (one JSON line,
    /// written and synced before returning). `None` when the log is empty.
    /// The file must be outside the data folder: a copy beside the
    /// database falls with it.
    pub async fn write_audit_checkpoint(&self, file: &Path) -> ServiceResult<Option<Checkpoint>> {
        let latchkey_store::AuditHead { seq, hash, .. } = self.store.audit_head().await?;
        if seq == 0 {
            return Ok(None);
        }
        let chain = self.store.verify_audit_chain().await?;
        let mut cp = Checkpoint {
            seq,
            hash,
            at_ms: self.clock.now_ms(),
            keyed_from: chain.keyed_from,
            signature: String::new(),
        };
        self.keys.sign_checkpoint(&mut cp);
        let line = serde_json::to_string(&cp).expect("checkpoint serialises") + "\n";
        let path = file.to_owned();
        tokio::task::spawn_blocking(move || append_synced(&path, line.as_bytes()))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(|e| ServiceError::Internal(format!("{}: {e}", file.display())))?;
        Ok(Some(cp))
    }

    /// Verify the chain, then each checkpoint in `file` against it: a
    /// checkpoint the database no longer matches means the chain was
    /// rewritten or truncated since.
    pub async fn verify_audit_checkpoints(&self, p: &Principal, file: &Path) -> ServiceResult<CheckpointReport> {
        require_auditor(p)?;
        let text = std::fs::read_to_string(file)
            .map_err(|e| ServiceError::InvalidRequest(format!("{}: {e}", file.display())))?;
        let chain = self.store.verify_audit_chain().await?;
        let mut findings = vec![];
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let cp: Checkpoint = serde_json::from_str(line).map_err(|e| {
                ServiceError::InvalidRequest(format!("{} line {}: not a checkpoint: {e}", file.display(), n + 1))
            })?;
            if !self.keys.checkpoint_signature_ok(&cp) {
                findings.push(CheckpointFinding::BadSignature { seq: cp.seq });
                continue;
            }
            let stored = self.store.audit_hash_at(cp.seq).await?;
            findings.push(compare_checkpoint(&cp, stored.as_deref(), &chain));
        }
        let intact = findings.iter().all(CheckpointFinding::holds);
        Ok(CheckpointReport {
            chain,
            checkpoints: findings.len(),
            findings,
            intact,
        })
    }
}

/// Refuse a checkpoint file inside the data folder (compared canonically,
/// so `..` and symlinks do not slip past).
pub fn checkpoint_file_outside(data: &Path, file: &Path) -> Result<(), String> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if canon(dir).starts_with(canon(data)) {
        return Err(format!(
            "the audit checkpoint file {} is inside the data folder {}: put it where the database's writers cannot reach",
            file.display(),
            data.display()
        ));
    }
    Ok(())
}

fn append_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}
