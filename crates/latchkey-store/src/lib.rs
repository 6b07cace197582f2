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
mod backup;
mod evidence;
mod group;
pub mod keys;
mod lifecycle;
mod methods;
mod oidc;
mod ops;
mod policy;
mod private;
mod push;
mod radius;
mod recovery;
mod signins;
mod users;
mod webauthn;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use audit::{AuditEntry, AuditPage};
pub use auth::{ApiTokenRecord, FlowRecord, SessionRecord, SignInLogEntry, TapRecord, ThrottleOutcome, ThrottleRow};
pub use backup::{remove_database, AuditHead};
pub use keys::Keys;
pub use lifecycle::RevokedAccess;
pub use methods::{method_id, MethodRecord, NewMethod, NotificationRecord};
pub use oidc::{CodeRecord, GrantRecord, OidcClientRecord, SigningKeyRecord, TokenRecord};
pub use ops::{SignInDetail, SignInFilter, SignInRecord};
pub use policy::{
    AlertRecord, BreakGlassRecord, ExceptionRecord, PolicyRecord, PolicyVersionRecord, SignInHistoryRecord,
};
pub use private::create_private_dir;
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
    /// The SQLite database file (None on PostgreSQL or in memory).
    sqlite_file: Option<PathBuf>,
    /// SQLite: the one writer connection, committing concurrent write
    /// transactions together (group.rs). None: each commits on its own.
    group: Option<std::sync::Arc<group::GroupWriter>>,
}

/// Every SQLite connection: WAL lets readers run beside the writer;
/// busy_timeout makes a second process wait for the lock, not fail;
/// `synchronous = FULL` syncs the WAL at every commit, so an acknowledged
/// change survives a power cut (NORMAL may lose the last commits);
/// journal_size_limit truncates the WAL back after a checkpoint resets it.
fn sqlite_pragmas(synchronous: &str) -> String {
    format!(
        "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
         PRAGMA journal_size_limit = 16777216; PRAGMA foreign_keys = ON;"
    )
}

/// Environment override of `synchronous`, for measuring what durability
/// costs (docs/performance.md): `normal` trades the last commits before a
/// power cut for speed. Anything else is refused.
pub const SQLITE_SYNCHRONOUS_ENV: &str = "LATCHKEY_SQLITE_SYNCHRONOUS";

fn sqlite_synchronous_setting() -> Result<&'static str> {
    match std::env::var(SQLITE_SYNCHRONOUS_ENV)
        .ok()
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("full") => Ok("FULL"),
        Some("normal") => Ok("NORMAL"),
        Some(other) => Err(StoreError::Db(sqlx::Error::Configuration(
            format!("{SQLITE_SYNCHRONOUS_ENV} must be full or normal, not {other:?}").into(),
        ))),
    }
}

/// WAL size past which the housekeeper forces a RESTART checkpoint. The
/// automatic (passive) checkpoints cannot rewind the WAL while readers keep
/// using it, so under steady reads and writes it would grow without end.
const WAL_RESTART_BYTES: u64 = 16 << 20;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Open (creating if needed) the embedded SQLite database in `data_dir`.
    /// The folder is kept 0700 and the database files 0600: they hold
    /// password hashes, sealed secrets and the audit chain.
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("latchkey.db");
        private::prepare_sqlite(data_dir, &path)?;
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
        let pragmas = sqlite_pragmas(sqlite_synchronous_setting()?);
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .after_connect(move |conn, _| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(pragmas.as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts.clone())
            .await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        let sqlite_file = (backend == Backend::Sqlite).then(|| sqlite_file(url)).flatten();
        let group = if sqlite_file.is_some() && group_commit_setting()? {
            use sqlx::ConnectOptions;
            let mut conn = opts.connect().await?;
            conn.execute(sqlite_pragmas(sqlite_synchronous_setting()?).as_str())
                .await?;
            Some(std::sync::Arc::new(group::GroupWriter::new(conn)))
        } else {
            None
        };
        if let Some(file) = &sqlite_file {
            tokio::spawn(bound_wal(pool.clone(), group.clone(), wal_file(file)));
        }
        Ok(Self {
            pool,
            backend,
            sqlite_file,
            group,
            chain_key: None,
        })
    }

    /// Chain audit records (and verify them) under `key` from now on.
    pub fn with_audit_key(mut self, key: latchkey_core::audit::ChainKey) -> Self {
        self.chain_key = Some(std::sync::Arc::new(key));
        self
    }

    /// The SQLite WAL's size on disk now (0 without one).
    pub fn wal_bytes(&self) -> u64 {
        self.sqlite_file
            .as_deref()
            .and_then(|f| std::fs::metadata(wal_file(f)).ok())
            .map_or(0, |m| m.len())
    }

    /// `PRAGMA synchronous` as each of `n` pooled SQLite connections has it
    /// (2 = FULL), checked out at once so they are distinct connections,
    /// then as the group writer has it.
    pub async fn sqlite_synchronous(&self, n: usize) -> Result<Vec<i64>> {
        use sqlx::Row;
        let mut held = vec![];
        let mut modes = vec![];
        for _ in 0..n {
            let mut c = self.pool.acquire().await?;
            modes.push(sqlx::query("PRAGMA synchronous").fetch_one(&mut *c).await?.try_get(0)?);
            held.push(c);
        }
        if self.group.is_some() {
            // And the group writer, where every write is made.
            let mut tx = self.bookkeeping().await?;
            modes.push(
                sqlx::query("PRAGMA synchronous")
                    .fetch_one(tx.conn())
                    .await?
                    .try_get(0)?,
            );
        }
        Ok(modes)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Begin a transaction for an audited change. Its first statement takes
    /// the audit-head lock (and reads the head the chain continues from),
    /// which serialises audited writers on every backend and, on SQLite,
    /// takes the write lock before any read (so a busy database makes us
    /// wait instead of failing with a stale snapshot).
    pub async fn write(&self) -> Result<WriteTx> {
        let mut tx = self.begin().await?;
        let head = lock_audit_head(tx.conn()).await?;
        Ok(WriteTx {
            tx,
            appended: false,
            head: Some(head),
            head_moved: false,
            audited: true,
            chain_key: self.chain_key.clone(),
        })
    }

    /// Begin a transaction for bookkeeping that the sign-in log records
    /// instead of the audit chain (throttle counters, sign-in log rows, a new
    /// flow). It takes no lock up front: its first statement must be a write,
    /// so SQLite takes the write lock then. Appending an audit event takes the
    /// audit-head lock at that point (and chains under the same key).
    pub async fn bookkeeping(&self) -> Result<WriteTx> {
        Ok(WriteTx {
            tx: self.begin().await?,
            appended: false,
            head: None,
            head_moved: false,
            audited: false,
            chain_key: self.chain_key.clone(),
        })
    }

    /// A transaction on the group writer (SQLite) or the pool.
    async fn begin(&self) -> Result<Tx> {
        Ok(match &self.group {
            Some(g) => Tx::Group(g.begin().await?),
            None => Tx::Pool(self.pool.begin().await?),
        })
    }

    /// Whether write transactions are committed in groups (SQLite).
    pub fn group_commit(&self) -> bool {
        self.group.is_some()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `LATCHKEY_SQLITE_GROUP_COMMIT=off` commits each write transaction on
/// its own (for measuring what group commit buys; docs/performance.md).
pub const SQLITE_GROUP_COMMIT_ENV: &str = "LATCHKEY_SQLITE_GROUP_COMMIT";

fn group_commit_setting() -> Result<bool> {
    match std::env::var(SQLITE_GROUP_COMMIT_ENV)
        .ok()
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(StoreError::Db(sqlx::Error::Configuration(
            format!("{SQLITE_GROUP_COMMIT_ENV} must be on or off, not {other:?}").into(),
        ))),
    }
}

/// A write transaction: a savepoint on the group writer, or a pool transaction.
enum Tx {
    Pool(sqlx::Transaction<'static, sqlx::Any>),
    Group(group::GroupStep),
}

impl Tx {
    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        match self {
            Tx::Pool(t) => &mut **t,
            Tx::Group(g) => g.conn(),
        }
    }

    async fn commit(self) -> Result<()> {
        match self {
            Tx::Pool(t) => Ok(t.commit().await?),
            Tx::Group(g) => g.commit().await,
        }
    }
}

fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn wal_file(db: &Path) -> PathBuf {
    let mut f = db.as_os_str().to_owned();
    f.push("-wal");
    PathBuf::from(f)
}

/// Keep the WAL bounded: when it passes [`WAL_RESTART_BYTES`], a RESTART
/// checkpoint copies it into the database and waits (busy_timeout) for the
/// readers still on it, so the next writer starts it from the beginning and
/// `journal_size_limit` truncates the file. Ends when the pool is closed.
async fn bound_wal(pool: AnyPool, group: Option<std::sync::Arc<group::GroupWriter>>, wal: PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !pool.is_closed() {
        tick.tick().await;
        let big = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_RESTART_BYTES);
        if big {
            // On the group writer, between groups: a checkpoint from another
            // connection would wait for a write lock the writer rarely frees.
            let done = match &group {
                Some(g) => g.between_groups("PRAGMA wal_checkpoint(RESTART)").await,
                None => sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(Into::into),
            };
            if let Err(e) = done {
                if !pool.is_closed() {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        }
    }
}

async fn lock_audit_head(conn: &mut sqlx::AnyConnection) -> Result<(i64, String)> {
    use sqlx::Row;
    let r = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
        .fetch_one(conn)
        .await?;
    Ok((r.try_get("seq")?, r.try_get("hash")?))
}

/// A transaction that must record at least one audit event before it commits
/// (unless begun with [`Store::bookkeeping`]).
pub struct WriteTx {
    tx: Tx,
    appended: bool,
    /// The chain's head (seq, hash) as of the events appended so far.
    head: Option<(i64, String)>,
    /// Events were appended: the head row is written once, at commit.
    head_moved: bool,
    audited: bool,
    /// Keys every event appended in this transaction (None only for tests
    /// of the store alone).
    chain_key: Option<std::sync::Arc<latchkey_core::audit::ChainKey>>,
}

impl WriteTx {
    pub async fn commit(mut self) -> Result<()> {
        debug_assert!(
            self.appended || !self.audited,
            "an audited write committed without an audit event"
        );
        if self.head_moved {
            let (seq, hash) = self.head.clone().expect("a moved head is known");
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(hash)
                .execute(self.tx.conn())
                .await?;
        }
        self.tx.commit().await
    }

    /// Commit a transaction that turned out to change only bookkeeping (a
    /// refused or failed sign-in step: its counters and log row).
    pub async fn commit_bookkeeping(mut self) -> Result<()> {
        self.audited = false;
        self.commit().await
    }

    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        self.tx.conn()
    }

    /// The head the next audit event continues from (taking the lock if this
    /// transaction has not yet).
    pub(crate) async fn audit_head(&mut self) -> Result<(i64, String)> {
        if self.head.is_none() {
            self.head = Some(lock_audit_head(self.tx.conn()).await?);
        }
        Ok(self.head.clone().expect("just read"))
    }

    pub(crate) fn move_audit_head(&mut self, seq: i64, hash: String) {
        self.head = Some((seq, hash));
        self.head_moved = true;
        self.appended = true;
    }
}

pub(crate) fn json_vec<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<Vec<T>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
