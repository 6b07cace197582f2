//! Backup and restore of the embedded SQLite database (admin actions).
//!
//! A backup is a consistent online copy named after the audit head it holds
//! (`...-audit-<seq>-<hash>.db`), so the chain end it can be restored to is
//! visible without opening it. It never contains the master key: sealed
//! secrets in it are useless without the key file, which is backed up
//! separately. A restore goes into an empty data folder, verifies the chain
//! up to the backup's head and appends an audited `restored` event naming
//! what was lost (every event after that head).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use latchkey_store::{remove_database, AuditEntry, AuditHead, Keys, Store};
use serde_json::json;

use crate::app::{App, Config, Principal};
use crate::clock::Clock;
use crate::error::{ServiceError, ServiceResult};
use crate::time::rfc3339;

/// Said wherever a backup is made: the copy is useless without the key.
pub const KEY_REMINDER: &str = "The key file (secret.key in the data folder, or LATCHKEY_SECRET_KEY) is not in the \
     backup: back it up separately and keep it apart from the database copies.";

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupInfo {
    pub file: PathBuf,
    pub bytes: u64,
    pub audit_head_seq: i64,
    pub audit_head_hash: String,
    pub key_file: &'static str,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreInfo {
    pub audit_head_seq: i64,
    pub audit_head_hash: String,
    /// Events after this one were written after the backup: they are lost.
    pub lost_after_seq: i64,
    pub lost_from: String,
    pub lost_until: String,
    /// Sequence number of the `restored` event.
    pub event_seq: i64,
}

/// The part of a backup's name that carries its audit head.
fn head_tag(seq: i64, hash: &str) -> String {
    format!("audit-{seq}-{}", &hash[..hash.len().min(16)])
}

/// `out` a directory: a new name in it; otherwise the head goes before the extension.
fn backup_path(out: &Path, head: &AuditHead, now: i64) -> PathBuf {
    let tag = head_tag(head.seq, &head.hash);
    if out.is_dir() {
        let stamp: String = rfc3339(now).chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        return out.join(format!("latchkey-{stamp}-{tag}.db"));
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match out.extension() {
        Some(ext) => format!("{stem}-{tag}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{tag}.db"),
    };
    out.with_file_name(name)
}

impl App {
    /// Copy the live database (SQLite) to `out` (a directory, or a file name
    /// the audit head is added to). Admins only; audited.
    pub async fn backup(&self, p: &Principal, out: &Path) -> ServiceResult<BackupInfo> {
        p.require_admin()?;
        let dir = if out.is_dir() {
            out.to_owned()
        } else {
            out.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_owned()
        };
        if !dir.is_dir() {
            return Err(ServiceError::InvalidRequest(format!(
                "the backup folder {} does not exist",
                dir.display()
            )));
        }
        let partial = dir.join(format!(".latchkey-backup-{}.partial", latchkey_store::new_id()));
        let head = self.store.backup_sqlite(&partial).await?;
        let file = backup_path(out, &head, self.now());
        if file.exists() {
            let _ = std::fs::remove_file(&partial);
            return Err(ServiceError::Conflict(format!("{} already exists", file.display())));
        }
        std::fs::rename(&partial, &file).map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            ServiceError::Internal(format!("{}: {e}", file.display()))
        })?;
        let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.store
            .audit_only(
                &AuditEntry::new(
                    p.actor(),
                    "backup.created",
                    "database",
                    json!({ "file": name, "bytes": bytes, "audit_head_seq": head.seq, "audit_head_hash": head.hash }),
                ),
                self.clock.now_ms(),
            )
            .await?;
        tracing::info!(file = %file.display(), audit_head_seq = head.seq, "backup written");
        Ok(BackupInfo {
            file,
            bytes,
            audit_head_seq: head.seq,
            audit_head_hash: head.hash,
            key_file: KEY_REMINDER,
        })
    }

    /// Server-side backup into the configured folder (the API and console).
    pub async fn backup_to_folder(&self, p: &Principal) -> ServiceResult<BackupInfo> {
        p.require_admin()?;
        let dir = self
            .config
            .backup_dir
            .clone()
            .ok_or_else(|| ServiceError::InvalidRequest("no backup folder is configured (--backup-dir)".into()))?;
        latchkey_store::create_private_dir(&dir)?;
        self.backup(p, &dir).await
    }
}

/// Restore the SQLite backup `file` into the empty `data_dir`, whose key
/// (file or environment) must already be in place. On any failure the
/// restored database is removed again.
pub async fn restore(
    file: &Path,
    data_dir: &Path,
    config: Config,
    clock: Arc<dyn Clock>,
) -> ServiceResult<RestoreInfo> {
    if std::env::var(latchkey_store::keys::SECRET_KEY_ENV).is_err() && !data_dir.join("secret.key").is_file() {
        return Err(ServiceError::InvalidRequest(format!(
            "put the key file backed up with this database at {} first (or set {}): without it no sealed secret can be opened",
            data_dir.join("secret.key").display(),
            latchkey_store::keys::SECRET_KEY_ENV
        )));
    }
    let keys = Keys::load_or_create(data_dir)?;
    // The chain is verified under the key the backup was written with.
    let store = Store::restore_sqlite(file, data_dir)
        .await?
        .with_audit_key(keys.audit_chain_key());
    let db = data_dir.join("latchkey.db");
    let result = finish_restore(file, store.clone(), keys, config, clock).await;
    if result.is_err() {
        store.close().await;
        remove_database(&db);
    } else {
        store.close().await;
    }
    result
}

async fn finish_restore(
    file: &Path,
    store: Store,
    keys: Keys,
    config: Config,
    clock: Arc<dyn Clock>,
) -> ServiceResult<RestoreInfo> {
    let head = store.audit_head().await?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A backup renamed or swapped for another shows here.
    if name.contains("-audit-") && !name.contains(&format!("-{}.", head_tag(head.seq, &head.hash))) {
        return Err(ServiceError::Conflict(format!(
            "{name} names another audit head than the one it holds (seq {}, {})",
            head.seq, head.hash
        )));
    }
    let verified = store.verify_audit_chain().await?;
    if !verified.ok {
        let why = verified
            .first_broken
            .map(|b| format!("seq {}: {}", b.seq, b.reason))
            .unwrap_or_default();
        return Err(ServiceError::Conflict(format!(
            "the backup's audit chain does not verify ({why}); nothing was restored"
        )));
    }
    let app = App::new(store, keys, config, clock)?;
    let now = app.now();
    let lost_from = rfc3339(head.last_at_ms.map_or(0, |ms| ms.div_euclid(1000)));
    let lost_until = rfc3339(now);
    let event_seq = app
        .store
        .audit_only(
            &AuditEntry::new(
                Principal::Operator.actor(),
                "restored",
                "database",
                json!({
                    "backup": name,
                    "audit_head_seq": head.seq,
                    "audit_head_hash": head.hash,
                    "lost": {
                        "after_seq": head.seq,
                        "from": lost_from,
                        "until": lost_until,
                        "what": "every change made after the backup was taken, with its audit events",
                    },
                }),
            ),
            app.clock.now_ms(),
        )
        .await?;
    Ok(RestoreInfo {
        audit_head_seq: head.seq,
        audit_head_hash: head.hash,
        lost_after_seq: head.seq,
        lost_from,
        lost_until,
        event_seq,
    })
}
