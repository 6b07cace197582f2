//! The SQLite and PostgreSQL migrations must define the same tables with the
//! same columns: code written once against the store runs on both, and a
//! column added to one backend only would fail on the other in production.

mod common;

use std::collections::BTreeSet;

use sqlx::Row;

async fn sqlite_columns(db: &common::Db) -> BTreeSet<(String, String)> {
    let raw = db.raw().await;
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(&raw)
    .await
    .expect("tables")
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    let mut out = BTreeSet::new();
    for t in tables {
        let cols = sqlx::query(&format!("SELECT name FROM pragma_table_info('{t}')"))
            .fetch_all(&raw)
            .await
            .expect("columns");
        for c in cols {
            out.insert((t.clone(), c.get::<String, _>(0)));
        }
    }
    out
}

async fn postgres_columns(db: &common::Db) -> BTreeSet<(String, String)> {
    let raw = db.raw().await;
    sqlx::query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&raw)
    .await
    .expect("columns")
    .iter()
    .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
    .collect()
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_define_the_same_tables_and_columns() {
    let lite = common::sqlite().await;
    let lite_cols = sqlite_columns(&lite).await;
    assert!(
        lite_cols.iter().any(|(t, c)| t == "users" && c == "username"),
        "the SQLite schema was read: {lite_cols:?}"
    );
    let Some(pg) = common::postgres("schema_parity").await else {
        return;
    };
    let pg_cols = postgres_columns(&pg).await;
    pg.store.close().await;
    let only_sqlite: Vec<_> = lite_cols.difference(&pg_cols).collect();
    let only_postgres: Vec<_> = pg_cols.difference(&lite_cols).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "migrations differ.\n  only in SQLite: {only_sqlite:?}\n  only in PostgreSQL: {only_postgres:?}"
    );
}
