//! Latchkey's one repository layer: every read and write of durable state goes
//! through [`Store`]. SQLite is the embedded default; PostgreSQL serves several
//! stateless nodes. Both run the same SQL through sqlx's `Any` driver
//! (`$n` placeholders, INTEGER booleans, unix-second times).
//!
//! Changes that matter are made through a [`WriteTx`], which appends the audit
//! event in the same transaction. Single-use and replay rules are enforced in
//! SQL (conditional `UPDATE ... WHERE used_at IS NULL`, monotonic step
//! updates, unique constraints), so they hold across processes.

mod audit;
mod auth;
mod evidence;
pub mod keys;
mod methods;
mod oidc;
mod ops;
mod policy;
mod push;
mod radius;
mod recovery;
mod signins;
mod users;
mod webauthn;

use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use audit::{AuditEntry, AuditPage};
pub use auth::{ApiTokenRecord, FlowRecord, SessionRecord, SignInLogEntry, TapRecord, ThrottleOutcome};
pub use keys::Keys;
pub use methods::{method_id, MethodRecord, NewMethod, NotificationRecord};
pub use oidc::{CodeRecord, GrantRecord, OidcClientRecord, SigningKeyRecord, TokenRecord};
pub use ops::{SignInDetail, SignInFilter, SignInRecord};
pub use policy::{
    AlertRecord, BreakGlassRecord, ExceptionRecord, PolicyRecord, PolicyVersionRecord, SignInHistoryRecord,
};
pub use push::{PushDeviceRecord, PushPromptRecord, SmsCodeRecord};
pub use radius::{RadiusChallengeRecord, RadiusClientRecord};
pub use recovery::{CaseRecord, DeviceRecord, NewChangeRequest, SignInSummary, TapRequestRecord};
pub use users::{NewUser, UserRecord};
pub use webauthn::{CeremonyRecord, NewWebauthnCredential, WebauthnCredentialRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("key material: {0}")]
    Key(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// A unique-constraint violation becomes a domain conflict.
    fn from_insert(e: sqlx::Error, what: &str) -> StoreError {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(what.to_owned()),
            _ => StoreError::Db(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Keys the audit chain; without it (tests of the store alone) records
    /// are chained unkeyed.
    chain_key: Option<std::sync::Arc<latchkey_core::audit::ChainKey>>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Open (creating if needed) the embedded SQLite database in `data_dir`.
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Key(format!("{}: {e}", data_dir.display())))?;
        let path = data_dir.join("latchkey.db");
        Self::connect(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    /// Connect to `sqlite://...` or `postgres://...` and run migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Db(sqlx::Error::Configuration(
                "database URL must start with sqlite: or postgres:".into(),
            )));
        };
        let opts = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; busy_timeout
                        // makes a second process wait for the lock, not fail.
                        conn.execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend,
            chain_key: None,
        })
    }

    /// Chain audit records (and verify them) under `key` from now on.
    pub fn with_audit_key(mut self, key: latchkey_core::audit::ChainKey) -> Self {
        self.chain_key = Some(std::sync::Arc::new(key));
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Begin a transaction for an audited change. Its first statement takes
    /// the audit-head lock, which serialises audited writers on every backend
    /// and, on SQLite, takes the write lock before any read (so a busy
    /// database makes us wait instead of failing with a stale snapshot).
    pub async fn write(&self) -> Result<WriteTx> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(WriteTx {
            tx,
            appended: false,
            chain_key: self.chain_key.clone(),
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A transaction that must record at least one audit event before it commits.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    appended: bool,
    chain_key: Option<std::sync::Arc<latchkey_core::audit::ChainKey>>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<()> {
        debug_assert!(self.appended, "an audited write committed without an audit event");
        self.tx.commit().await?;
        Ok(())
    }

    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

pub(crate) fn json_vec<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<Vec<T>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
