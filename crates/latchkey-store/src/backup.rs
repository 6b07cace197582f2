//! Online backup and restore of the embedded SQLite database. A backup is
//! one `VACUUM INTO`: a read transaction, so it is a consistent snapshot
//! taken while the server keeps serving (readers and the writer go on).
//! PostgreSQL installations use `pg_dump` (README).

use std::path::{Path, PathBuf};

use sqlx::{Connection, Row};

use crate::{Backend, Result, Store, StoreError};

/// Where a backup's audit chain ends: what it holds and what a restore from
/// it loses (every event after `seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
    /// When the last event in the copy was written (None: no events).
    pub last_at_ms: Option<i64>,
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Conflict(format!("{}: {e}", path.display()))
}

async fn read_head(conn: &mut sqlx::AnyConnection) -> Result<AuditHead> {
    let r = sqlx::query(
        "SELECT h.seq, h.hash, (SELECT at_ms FROM audit_events WHERE seq = h.seq) AS last_at_ms FROM audit_head h WHERE h.id = 1",
    )
    .fetch_one(conn)
    .await?;
    Ok(AuditHead {
        seq: r.try_get("seq")?,
        hash: r.try_get("hash")?,
        last_at_ms: r.try_get("last_at_ms")?,
    })
}

impl Store {
    /// Copy the live SQLite database into `dest` (which must not exist),
    /// readable by the owner only, and return the audit head the copy holds.
    pub async fn backup_sqlite(&self, dest: &Path) -> Result<AuditHead> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Conflict(
                "online backup copies the embedded SQLite database; back PostgreSQL up with pg_dump".into(),
            ));
        }
        // VACUUM INTO writes into an empty file; creating it first (0600,
        // failing if it exists) keeps the copy private and never overwrites.
        create_new_private(dest)?;
        let copied = sqlx::query("VACUUM INTO $1")
            .bind(dest.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await;
        if let Err(e) = copied {
            let _ = std::fs::remove_file(dest);
            return Err(e.into());
        }
        let mut conn =
            sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=ro&immutable=true", dest.display())).await?;
        let head = read_head(&mut conn).await;
        let _ = conn.close().await;
        head
    }

    /// The head of this database's audit chain.
    pub async fn audit_head(&self) -> Result<AuditHead> {
        let mut conn = self.pool.acquire().await?;
        read_head(&mut conn).await
    }

    /// Put the backup `file` in place as the database of `data_dir`, which
    /// must hold nothing but (optionally) the key file, and open it (running
    /// the migrations of this release). The caller verifies the chain.
    pub async fn restore_sqlite(file: &Path, data_dir: &Path) -> Result<Store> {
        if !file.is_file() {
            return Err(StoreError::NotFound(format!("backup file {}", file.display())));
        }
        crate::private::create_private_dir(data_dir)?;
        let others: Vec<String> = std::fs::read_dir(data_dir)
            .map_err(|e| io_err(data_dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "secret.key")
            .collect();
        if !others.is_empty() {
            return Err(StoreError::Conflict(format!(
                "{} is not empty (holds {}); restore into an empty data folder (the key file may be there)",
                data_dir.display(),
                others.join(", ")
            )));
        }
        let db = data_dir.join("latchkey.db");
        let partial = data_dir.join("latchkey.db.restoring");
        create_new_private(&partial)?;
        let copied = std::fs::copy(file, &partial)
            .and_then(|_| std::fs::File::open(&partial)?.sync_all())
            .and_then(|_| std::fs::rename(&partial, &db));
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&partial);
            return Err(io_err(&db, e));
        }
        match Store::open_sqlite(data_dir).await {
            Ok(s) => Ok(s),
            Err(e) => {
                remove_database(&db);
                Err(e)
            }
        }
    }
}

/// Remove a database file and its side files (a failed restore).
pub fn remove_database(db: &Path) {
    for side in ["", "-wal", "-shm"] {
        let mut f = db.as_os_str().to_owned();
        f.push(side);
        let _ = std::fs::remove_file(PathBuf::from(f));
    }
}

#[cfg(unix)]
fn create_new_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(|_| ())
        .map_err(|e| io_err(path, e))
}

#[cfg(not(unix))]
fn create_new_private(path: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map(|_| ())
        .map_err(|e| io_err(path, e))
}
