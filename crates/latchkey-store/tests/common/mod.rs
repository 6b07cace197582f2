//! Shared harness for the repository tests: one fresh database per test, on
//! SQLite (a temp dir) or PostgreSQL (a new database on the server named by
//! `LATCHKEY_TEST_POSTGRES_URL`, dropped again when the test ends).

#![allow(dead_code)]

use std::ops::Deref;
use std::path::{Path, PathBuf};

use latchkey_store::Store;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection, Executor};

pub const PG_ENV: &str = "LATCHKEY_TEST_POSTGRES_URL";

/// A store on a database nobody else uses, plus what a test needs to reach
/// behind the repository (raw SQL, the SQLite files).
pub struct Db {
    pub store: Store,
    pub url: String,
    pub backend: &'static str,
    sqlite_dir: Option<PathBuf>,
    // Dropped after `store` (fields drop in order): removes the temp dir or
    // drops the PostgreSQL database.
    _guard: Guard,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(PgDatabase),
}

impl Deref for Db {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Db {
    /// A separate pool on the same database, for tampering behind the store's back.
    pub async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        let sqlite = self.backend == "sqlite";
        AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        conn.execute("PRAGMA busy_timeout = 10000;").await?;
                    }
                    Ok(())
                })
            })
            .connect(&self.url)
            .await
            .expect("raw pool connects")
    }

    /// The SQLite data directory (None on PostgreSQL).
    pub fn sqlite_dir(&self) -> Option<&Path> {
        self.sqlite_dir.as_deref()
    }
}

pub async fn sqlite() -> Db {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(dir.path()).await.expect("open sqlite store");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("latchkey.db").display());
    Db {
        store,
        url,
        backend: "sqlite",
        sqlite_dir: Some(dir.path().to_owned()),
        _guard: Guard::Sqlite(dir),
    }
}

/// A fresh PostgreSQL database, or `None` (after saying so loudly on stderr)
/// when `LATCHKEY_TEST_POSTGRES_URL` is not set.
pub async fn postgres(test: &str) -> Option<Db> {
    let Ok(admin_url) = std::env::var(PG_ENV) else {
        eprintln!("SKIPPED (PostgreSQL): {PG_ENV} is not set; {test} did not run against PostgreSQL");
        return None;
    };
    let db = PgDatabase::create(&admin_url).await;
    let store = Store::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", db.url));
    Some(Db {
        store,
        url: db.url.clone(),
        backend: "postgres",
        sqlite_dir: None,
        _guard: Guard::Postgres(db),
    })
}

/// A database created for one test; dropped (WITH FORCE) when this value is,
/// even if the test panicked.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str) -> PgDatabase {
        let name = format!("lk_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::postgres::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("{PG_ENV}={admin_url}: cannot connect: {e}"));
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e} (does the role have CREATEDB?)"));
        conn.close().await.ok();
        PgDatabase {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread
        // with its own runtime and wait for it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::postgres::PgConnection::connect(&admin_url).await.ok()?;
                if let Err(e) = conn
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                {
                    eprintln!("warning: could not drop test database {name}: {e}");
                }
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// `postgres://u:p@h:port/db?x=y` with `db` replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(
        with_database("postgres://u:p@127.0.0.1:5432/latchkey_test", "x"),
        "postgres://u:p@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgresql://u@h/db?sslmode=disable", "x"),
        "postgresql://u@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
}
