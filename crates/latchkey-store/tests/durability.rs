//! Durability of the embedded SQLite store: every served connection syncs
//! each commit (`synchronous = FULL`), online backups are consistent copies
//! that restore only into an empty folder, and a database made by an older
//! release (the committed fixture) opens with every later migration.

mod common;

use std::path::{Path, PathBuf};

use latchkey_core::{MethodKind, MethodState, Role};
use latchkey_store::{method_id, AuditEntry, Keys, NewMethod, NewUser, SignInLogEntry, Store, StoreError};
use serde_json::json;

/// Made by the 0009 release; see `write_fixture_v0009` for how.
const FIXTURE_V0009: &str = "tests/fixtures/v0009.sqlite";
/// The key the fixture's secrets are sealed with (a test key, public).
const FIXTURE_KEY: [u8; 32] = [0x09; 32];

async fn add_user(store: &Store, name: &str, at: i64) -> latchkey_store::UserRecord {
    let mut tx = store.write().await.unwrap();
    let u = tx
        .insert_user(
            &NewUser {
                username: name.into(),
                display_name: format!("{name} (fixture)"),
                department: Some("Finance".into()),
                groups: vec!["staff".into()],
                roles: if name.starts_with("admin") {
                    vec![Role::Admin]
                } else {
                    vec![]
                },
            },
            at,
        )
        .await
        .unwrap();
    tx.audit(
        &AuditEntry::new("cli:operator", "user.create", format!("user:{name}"), json!({})),
        at * 1000,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    u
}

#[tokio::test]
async fn served_sqlite_connections_sync_every_commit() {
    let db = common::sqlite().await;
    // Every connection the pool hands out (all 8 at once, so distinct ones).
    let modes = db.store.sqlite_synchronous(8).await.unwrap();
    assert!(db.store.group_commit(), "SQLite writes go through the group writer");
    assert_eq!(
        modes,
        vec![2; 9],
        "PRAGMA synchronous must be FULL (2) on every connection: {modes:?}"
    );
}

/// Group commit keeps each step's own outcome: 48 steps at once, every
/// fourth failing after its writes (a compare-and-swap that lost); the rest
/// are all there, the failed ones left nothing, and the chain is in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_steps_commit_together_and_a_failed_one_spoils_none() {
    let db = common::sqlite().await;
    let mut tasks = vec![];
    for i in 0..48i64 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.write().await.unwrap();
            tx.insert_user(
                &NewUser {
                    username: format!("step{i}"),
                    display_name: "s".into(),
                    department: None,
                    groups: vec![],
                    roles: vec![],
                },
                1_700_000_000 + i,
            )
            .await
            .unwrap();
            tx.audit(
                &AuditEntry::new("test", "user.create", format!("user:step{i}"), json!({})),
                1_700_000_000_000 + i,
            )
            .await
            .unwrap();
            tokio::task::yield_now().await;
            if i % 4 == 0 {
                drop(tx); // failed: rolled back to its savepoint
                false
            } else {
                tx.commit().await.unwrap();
                true
            }
        }));
    }
    let mut committed = 0;
    for t in tasks {
        committed += t.await.unwrap() as i64;
    }
    // Answered only after the commit: another connection sees them all.
    assert_eq!(db.store.count_users().await.unwrap(), committed);
    for i in 0..48 {
        let there = db.store.user_by_username(&format!("step{i}")).await.unwrap().is_some();
        assert_eq!(there, i % 4 != 0, "step{i}");
    }
    let v = db.store.verify_audit_chain().await.unwrap();
    assert!(v.ok && v.length == committed, "{v:?}");
}

#[tokio::test]
async fn backup_is_a_private_consistent_copy_restored_only_into_an_empty_folder() {
    let db = common::sqlite().await;
    for i in 0..5 {
        add_user(&db.store, &format!("user{i}"), 1_700_000_000 + i).await;
    }
    let out = tempfile::tempdir().unwrap();
    let copy = out.path().join("copy.db");
    let head = db.store.backup_sqlite(&copy).await.unwrap();
    assert_eq!(head, db.store.audit_head().await.unwrap());
    assert_eq!(head.seq, 5);
    // Never overwrites.
    assert!(matches!(
        db.store.backup_sqlite(&copy).await,
        Err(StoreError::Conflict(_))
    ));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a backup holds password hashes: owner only");
    }
    // Changes after the backup are not in it.
    add_user(&db.store, "after", 1_700_000_100).await;

    let used = tempfile::tempdir().unwrap();
    std::fs::write(used.path().join("notes.txt"), "x").unwrap();
    let e = Store::restore_sqlite(&copy, used.path()).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict(ref m) if m.contains("not empty")),
        "{e}"
    );
    assert!(!used.path().join("latchkey.db").exists());

    let fresh = tempfile::tempdir().unwrap();
    std::fs::write(fresh.path().join("secret.key"), "key file is allowed").unwrap();
    let restored = Store::restore_sqlite(&copy, fresh.path()).await.unwrap();
    assert_eq!(restored.count_users().await.unwrap(), 5);
    assert!(restored.user_by_username("after").await.unwrap().is_none());
    assert!(restored.verify_audit_chain().await.unwrap().ok);
    assert_eq!(restored.audit_head().await.unwrap(), head);
    restored.close().await;
}

fn copy_fixture(to: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE_V0009);
    assert!(src.is_file(), "{} is missing (see write_fixture_v0009)", src.display());
    std::fs::create_dir_all(to).unwrap();
    let db = to.join("latchkey.db");
    std::fs::copy(&src, &db).unwrap();
    db
}

/// Every migration after 0009 must upgrade a real 0009 database: open the
/// fixture (running them), and read back what it held.
#[tokio::test]
async fn fixture_v0009_opens_with_every_later_migration() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let store = Store::open_sqlite(dir.path())
        .await
        .expect("the 0009 fixture opens and migrates");
    let v = store.verify_audit_chain().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.length, 4);
    assert_eq!(store.count_users().await.unwrap(), 3);
    let alice = store.user_by_username("alice").await.unwrap().expect("alice");
    let methods = store.methods_for_user(&alice.id).await.unwrap();
    assert_eq!(methods.len(), 1);
    let keys = Keys::from_master(&FIXTURE_KEY);
    let sealed = methods[0].secret_sealed.clone().expect("sealed seed");
    let seed = keys.open(&sealed, &format!("method:{}", methods[0].id)).unwrap();
    assert_eq!(&seed[..], b"fixture totp seed 20b");
    assert_eq!(store.signins_for_user(&alice.id, 10).await.unwrap().len(), 1);
    // And it takes new writes after the upgrade.
    add_user(&store, "carol", 1_800_000_000).await;
    assert!(store.verify_audit_chain().await.unwrap().ok);
    store.close().await;
}

/// Writes the fixture. Run once per release whose schema later migrations
/// must upgrade, with that release checked out:
/// `LATCHKEY_WRITE_FIXTURE=1 cargo test -p latchkey-store --test durability -- --ignored write_fixture_v0009`
#[tokio::test]
#[ignore = "writes tests/fixtures/v0009.sqlite; run by hand (see the doc comment)"]
async fn write_fixture_v0009() {
    if std::env::var("LATCHKEY_WRITE_FIXTURE").is_err() {
        panic!("set LATCHKEY_WRITE_FIXTURE=1 to overwrite {FIXTURE_V0009}");
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    add_user(&store, "admin", 1_700_000_000).await;
    let alice = add_user(&store, "alice", 1_700_000_001).await;
    add_user(&store, "bob", 1_700_000_002).await;
    let keys = Keys::from_master(&FIXTURE_KEY);
    let id = method_id();
    let sealed = keys.seal(b"fixture totp seed 20b", &format!("method:{id}"));
    let mut tx = store.write().await.unwrap();
    tx.insert_method(
        NewMethod {
            id: &id,
            user_id: &alice.id,
            kind: MethodKind::Totp,
            label: "phone",
            state: MethodState::Active,
            secret_sealed: Some(sealed),
            params: json!({}),
        },
        1_700_000_010,
    )
    .await
    .unwrap();
    tx.audit(
        &AuditEntry::new(
            "user:alice",
            "method.totp.confirm",
            "user:alice",
            json!({ "method": id }),
        ),
        1_700_000_010_000,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    store
        .log_signin(&SignInLogEntry {
            at: 1_700_000_020,
            user_id: Some(alice.id.clone()),
            username: "alice".into(),
            application: Some("portal".into()),
            source_ip: Some("192.0.2.7".into()),
            result: "success".into(),
            reason: None,
            methods: vec!["password".into(), "totp".into()],
            acr: Some("mfa".into()),
        })
        .await
        .unwrap();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE_V0009);
    let _ = std::fs::remove_file(&out);
    store.backup_sqlite(&out).await.unwrap();
    store.close().await;
}
