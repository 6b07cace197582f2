//! The repository contract, run unchanged against SQLite and PostgreSQL.
//!
//! Each `case_*` body is written once against [`Db`] (which derefs to
//! [`Store`]); the `backends!` macro turns it into a `sqlite_*` and a
//! `postgres_*` test. Without `LATCHKEY_TEST_POSTGRES_URL` the PostgreSQL
//! variants print `SKIPPED (PostgreSQL): ...` to stderr and return.
//!
//! Single-use and replay guarantees are checked under real concurrency:
//! 16 tasks on a multi-threaded runtime race on the same row, and exactly one
//! may win.

mod common;

use std::sync::Arc;

use common::Db;
use latchkey_core::audit::GENESIS_HASH;
use latchkey_core::softlock::{LockPolicy, LockState};
use latchkey_core::{MethodKind, MethodState, Role};
use latchkey_store::{
    method_id, ApiTokenRecord, AuditEntry, FlowRecord, Keys, NewMethod, NewUser, SessionRecord, Store, StoreError,
    UserRecord,
};
use serde_json::json;
use sqlx::Row;

macro_rules! backends {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sqlite() {
            let db = common::sqlite().await;
            $case(&db).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $postgres() {
            let Some(db) = common::postgres(stringify!($postgres)).await else { return };
            $case(&db).await;
            db.store.close().await;
        }
    )*};
}

backends! {
    case_user_insert_and_duplicate => sqlite_user_insert_and_duplicate, postgres_user_insert_and_duplicate;
    case_audit_chain_appends_and_verifies => sqlite_audit_chain_appends_and_verifies, postgres_audit_chain_appends_and_verifies;
    case_dropped_transaction_leaves_nothing => sqlite_dropped_transaction_leaves_nothing, postgres_dropped_transaction_leaves_nothing;
    case_tampered_rows_break_the_chain => sqlite_tampered_rows_break_the_chain, postgres_tampered_rows_break_the_chain;
    case_deleted_rows_break_the_chain => sqlite_deleted_rows_break_the_chain, postgres_deleted_rows_break_the_chain;
    case_totp_step_only_moves_forward => sqlite_totp_step_only_moves_forward, postgres_totp_step_only_moves_forward;
    case_totp_step_race_has_one_winner => sqlite_totp_step_race_has_one_winner, postgres_totp_step_race_has_one_winner;
    case_recovery_code_is_single_use => sqlite_recovery_code_is_single_use, postgres_recovery_code_is_single_use;
    case_throttle_counts_and_locks => sqlite_throttle_counts_and_locks, postgres_throttle_counts_and_locks;
    case_throttle_counts_every_concurrent_failure => sqlite_throttle_counts_every_concurrent_failure, postgres_throttle_counts_every_concurrent_failure;
    case_tap_window_and_single_use => sqlite_tap_window_and_single_use, postgres_tap_window_and_single_use;
    case_sessions_expire_idle_and_absolute => sqlite_sessions_expire_idle_and_absolute, postgres_sessions_expire_idle_and_absolute;
    case_flow_compare_and_swap => sqlite_flow_compare_and_swap, postgres_flow_compare_and_swap;
    case_sealed_secret_round_trips_and_is_not_stored_plain => sqlite_sealed_secret_round_trips_and_is_not_stored_plain, postgres_sealed_secret_round_trips_and_is_not_stored_plain;
    case_api_tokens_and_notifications => sqlite_api_tokens_and_notifications, postgres_api_tokens_and_notifications;
    case_verify_during_appends_never_reports_tampering => sqlite_verify_during_appends_never_reports_tampering, postgres_verify_during_appends_never_reports_tampering;
}

const CONCURRENCY: usize = 16;

// ---- fixtures ----------------------------------------------------------------

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.to_owned(),
        display_name: format!("{name} display"),
        department: Some("Finance".into()),
        groups: vec!["staff".into(), "vpn users".into()],
        roles: vec![Role::Helpdesk],
    }
}

fn entry(action: &str, target: &str) -> AuditEntry {
    AuditEntry::new("test:harness", action, target, json!({ "n": 1, "note": "fixture" }))
}

async fn add_user(store: &Store, name: &str) -> UserRecord {
    let mut tx = store.write().await.unwrap();
    let u = tx.insert_user(&new_user(name), 1_000).await.unwrap();
    tx.audit(&entry("user.create", &format!("user:{name}")), 1_000_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    u
}

async fn add_method(store: &Store, user: &UserRecord, kind: MethodKind, state: MethodState) -> String {
    let id = method_id();
    let mut tx = store.write().await.unwrap();
    tx.insert_method(
        NewMethod {
            id: &id,
            user_id: &user.id,
            kind,
            label: "fixture method",
            state,
            secret_sealed: None,
            params: json!({}),
        },
        1_000,
    )
    .await
    .unwrap();
    tx.audit(&entry("method.add", &format!("user:{}", user.username)), 1_000_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

/// Append `n` events, one transaction each.
async fn append_events(store: &Store, n: i64) {
    for i in 0..n {
        store
            .audit_only(
                &AuditEntry::new(
                    format!("actor{i}"),
                    "test.event",
                    format!("thing:{i}"),
                    json!({ "i": i }),
                ),
                1_700_000_000_000 + i,
            )
            .await
            .unwrap();
    }
}

/// Run `n` copies of `f` at once and collect their results.
async fn race<F, Fut, T>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let fut = f(i);
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.expect("task panicked"));
    }
    out
}

fn winners(results: &[bool]) -> usize {
    results.iter().filter(|b| **b).count()
}

// ---- users -------------------------------------------------------------------

async fn case_user_insert_and_duplicate(db: &Db) {
    let inserted = add_user(db, "alice").await;
    let by_name = db.user_by_username("alice").await.unwrap().expect("alice exists");
    assert_eq!(
        by_name, inserted,
        "{}: a user reads back exactly as inserted",
        db.backend
    );
    assert_eq!(db.user_by_id(&inserted.id).await.unwrap().as_ref(), Some(&inserted));
    assert_eq!(by_name.roles, vec![Role::Helpdesk]);
    assert_eq!(by_name.groups, vec!["staff".to_string(), "vpn users".to_string()]);
    assert!(by_name.privileged());
    assert_eq!(by_name.password_hash, None);

    let mut tx = db.write().await.unwrap();
    let err = tx.insert_user(&new_user("alice"), 2_000).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("alice")),
        "{}: duplicate username must be a Conflict, got {err:?}",
        db.backend
    );
    drop(tx);

    assert_eq!(db.count_users().await.unwrap(), 1);
    let v = db.verify_audit_chain().await.unwrap();
    assert!(v.ok);
    assert_eq!(v.length, 1, "the failed insert recorded no event");

    // The password hash is set through an audited write, and only on a real user.
    let mut tx = db.write().await.unwrap();
    tx.set_password_hash(&inserted.id, "$argon2id$fake", 3_000)
        .await
        .unwrap();
    assert!(matches!(
        tx.set_password_hash("no-such-user", "$argon2id$fake", 3_000).await,
        Err(StoreError::NotFound(_))
    ));
    tx.audit(&entry("password.set", "user:alice"), 3_000_000).await.unwrap();
    tx.commit().await.unwrap();
    let alice = db.user_by_username("alice").await.unwrap().unwrap();
    assert_eq!(alice.password_hash.as_deref(), Some("$argon2id$fake"));
    assert_eq!(alice.updated_at, 3_000);

    add_user(db, "bob").await;
    let names: Vec<String> = db.list_users().await.unwrap().into_iter().map(|u| u.username).collect();
    assert_eq!(names, ["alice", "bob"]);
}

// ---- audit chain -------------------------------------------------------------

async fn case_audit_chain_appends_and_verifies(db: &Db) {
    let empty = db.verify_audit_chain().await.unwrap();
    assert!(empty.ok);
    assert_eq!(empty.length, 0);
    assert_eq!(empty.head_hash, GENESIS_HASH);

    // Several events in one transaction, then more in their own.
    let mut tx = db.write().await.unwrap();
    let u = tx.insert_user(&new_user("carol"), 10).await.unwrap();
    let s1 = tx.audit(&entry("user.create", "user:carol"), 10_000).await.unwrap();
    let s2 = tx.audit(&entry("password.set", "user:carol"), 10_001).await.unwrap();
    let s3 = tx.audit(&entry("method.add", "user:carol"), 10_002).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!((s1, s2, s3), (1, 2, 3));
    assert_eq!(db.user_by_id(&u.id).await.unwrap().unwrap().username, "carol");
    append_events(db, 2).await;

    let v = db.verify_audit_chain().await.unwrap();
    assert!(v.ok, "{}: {v:?}", db.backend);
    assert_eq!(v.length, 5);
    assert_eq!(v.first_broken, None);
    let page = db.audit_page(0, 100, None).await.unwrap();
    let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(v.head_hash, page.events[4].hash, "head is the last event's hash");
    assert_eq!(page.events[0].prev_hash, GENESIS_HASH);
    for w in page.events.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash, "each event links to its predecessor");
    }
    // Details are stored exactly as serialised (they are hashed byte for byte).
    assert_eq!(page.events[0].details, r#"{"n":1,"note":"fixture"}"#);

    // Paging and target filter.
    let p = db.audit_page(2, 2, None).await.unwrap();
    assert_eq!(p.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(p.next_after, 4);
    let p = db.audit_page(5, 10, None).await.unwrap();
    assert!(p.events.is_empty());
    assert_eq!(p.next_after, 5, "an empty page keeps the cursor");
    let p = db.audit_page(0, 10, Some("user:carol")).await.unwrap();
    assert_eq!(p.events.len(), 3);
}

async fn case_dropped_transaction_leaves_nothing(db: &Db) {
    append_events(db, 1).await;
    {
        let mut tx = db.write().await.unwrap();
        tx.insert_user(&new_user("ghost"), 10).await.unwrap();
        tx.audit(&entry("user.create", "user:ghost"), 10_000).await.unwrap();
        // dropped without commit
    }
    assert_eq!(db.user_by_username("ghost").await.unwrap(), None, "{}", db.backend);
    let v = db.verify_audit_chain().await.unwrap();
    assert!(v.ok);
    assert_eq!(v.length, 1, "the rolled-back event is gone");
    assert!(db
        .audit_page(0, 10, Some("user:ghost"))
        .await
        .unwrap()
        .events
        .is_empty());

    // The head was rolled back too: the next append continues without a gap.
    let mut tx = db.write().await.unwrap();
    tx.insert_user(&new_user("ghost"), 20).await.unwrap();
    assert_eq!(tx.audit(&entry("user.create", "user:ghost"), 20_000).await.unwrap(), 2);
    tx.commit().await.unwrap();
    let v = db.verify_audit_chain().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.length, 2);
}

async fn case_tampered_rows_break_the_chain(db: &Db) {
    append_events(db, 5).await;
    let raw = db.raw().await;
    let original = db.audit_page(0, 10, None).await.unwrap().events;

    // (what is altered, SQL, the seq that must be reported first)
    let cases: &[(&str, &str, i64)] = &[
        ("details", "UPDATE audit_events SET details = '{\"i\":99}' WHERE seq = 3", 3),
        ("actor", "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 1", 1),
        ("action", "UPDATE audit_events SET action = 'nothing.happened' WHERE seq = 5", 5),
        ("at_ms", "UPDATE audit_events SET at_ms = at_ms + 1 WHERE seq = 4", 4),
        (
            "hash",
            "UPDATE audit_events SET hash = '1111111111111111111111111111111111111111111111111111111111111111' WHERE seq = 2",
            2,
        ),
        ("prev_hash", "UPDATE audit_events SET prev_hash = hash WHERE seq = 4", 4),
    ];
    for (what, sql, broken_at) in cases {
        sqlx::query(sql).execute(&raw).await.unwrap();
        let v = db.verify_audit_chain().await.unwrap();
        assert!(!v.ok, "{}: altering {what} must be detected", db.backend);
        assert_eq!(
            v.first_broken.as_ref().map(|b| b.seq),
            Some(*broken_at),
            "{}: altering {what}: {v:?}",
            db.backend
        );
        assert_eq!(v.length, 5, "every stored event is still counted");

        // Put the row back exactly: the chain verifies again.
        let o = &original[(*broken_at - 1) as usize];
        sqlx::query(
            "UPDATE audit_events SET at_ms = $1, actor = $2, action = $3, target = $4, details = $5, prev_hash = $6, hash = $7 WHERE seq = $8",
        )
        .bind(o.at_ms)
        .bind(&o.actor)
        .bind(&o.action)
        .bind(&o.target)
        .bind(&o.details)
        .bind(&o.prev_hash)
        .bind(&o.hash)
        .bind(o.seq)
        .execute(&raw)
        .await
        .unwrap();
        let v = db.verify_audit_chain().await.unwrap();
        assert!(v.ok, "{}: after restoring {what}: {v:?}", db.backend);
    }
    raw.close().await;
}

async fn reinsert(raw: &sqlx::AnyPool, e: &latchkey_core::audit::AuditRecord) {
    sqlx::query(
        "INSERT INTO audit_events (seq, at_ms, actor, action, target, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(e.seq)
    .bind(e.at_ms)
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.details)
    .bind(&e.prev_hash)
    .bind(&e.hash)
    .execute(raw)
    .await
    .unwrap();
}

async fn case_deleted_rows_break_the_chain(db: &Db) {
    append_events(db, 5).await;
    let raw = db.raw().await;
    let original = db.audit_page(0, 10, None).await.unwrap().events;

    // The newest event: internally the chain is fine, but the head says 5.
    sqlx::query("DELETE FROM audit_events WHERE seq = 5")
        .execute(&raw)
        .await
        .unwrap();
    let v = db.verify_audit_chain().await.unwrap();
    assert!(!v.ok, "{}: deleting the tail must be detected", db.backend);
    assert_eq!(v.length, 4);
    let b = v.first_broken.expect("a broken link");
    assert_eq!(b.seq, 5, "{}: {}", db.backend, b.reason);
    reinsert(&raw, &original[4]).await;
    assert!(db.verify_audit_chain().await.unwrap().ok);

    // One in the middle: a sequence gap at the next stored event.
    sqlx::query("DELETE FROM audit_events WHERE seq = 3")
        .execute(&raw)
        .await
        .unwrap();
    let v = db.verify_audit_chain().await.unwrap();
    assert!(!v.ok);
    let b = v.first_broken.expect("a broken link");
    assert_eq!(b.seq, 4, "{}: {}", db.backend, b.reason);
    assert!(b.reason.contains("gap"), "{}", b.reason);
    reinsert(&raw, &original[2]).await;
    assert!(db.verify_audit_chain().await.unwrap().ok);

    // Everything.
    sqlx::query("DELETE FROM audit_events").execute(&raw).await.unwrap();
    let v = db.verify_audit_chain().await.unwrap();
    assert!(
        !v.ok,
        "{}: an emptied log must not verify while the head says 5",
        db.backend
    );
    assert_eq!(v.length, 0);
    assert_eq!(v.first_broken.map(|b| b.seq), Some(1));
    raw.close().await;
}

// ---- TOTP replay guard -------------------------------------------------------

async fn case_totp_step_only_moves_forward(db: &Db) {
    let u = add_user(db, "dave").await;
    let active = add_method(db, &u, MethodKind::Totp, MethodState::Active).await;
    let pending = add_method(db, &u, MethodKind::Totp, MethodState::Pending).await;

    // (step, expected winner?) in order
    let steps: &[(i64, bool)] = &[
        (100, true),
        (100, false),
        (99, false),
        (1, false),
        (101, true),
        (101, false),
        (500, true),
    ];
    for (i, (step, expected)) in steps.iter().enumerate() {
        let won = db.advance_totp_step(&active, *step, 5_000 + i as i64).await.unwrap();
        assert_eq!(won, *expected, "{}: advancing to step {step} (call {i})", db.backend);
    }
    let m = db.method(&u.id, &active).await.unwrap().unwrap();
    assert_eq!(m.last_used_step, Some(500));
    assert_eq!(m.last_used_at, Some(5_006), "last_used_at is the winning call's time");

    assert!(
        !db.advance_totp_step(&pending, 1, 6_000).await.unwrap(),
        "a pending method cannot be used"
    );
    assert!(!db.advance_totp_step("no-such-method", 1, 6_000).await.unwrap());

    // Activation records the confirming code's step, so that code is spent.
    let mut tx = db.write().await.unwrap();
    assert!(tx.activate_method(&pending, Some(700), 7_000).await.unwrap());
    assert!(
        !tx.activate_method(&pending, Some(800), 7_000).await.unwrap(),
        "only a pending method activates"
    );
    tx.audit(&entry("method.add", "user:dave"), 7_000_000).await.unwrap();
    tx.commit().await.unwrap();
    let m = db.method(&u.id, &pending).await.unwrap().unwrap();
    assert_eq!(
        (m.state, m.last_used_step, m.confirmed_at),
        (MethodState::Active, Some(700), Some(7_000))
    );
    assert!(!db.advance_totp_step(&pending, 700, 7_001).await.unwrap());
    assert!(db.advance_totp_step(&pending, 701, 7_001).await.unwrap());
}

async fn case_totp_step_race_has_one_winner(db: &Db) {
    let u = add_user(db, "erin").await;
    let id = add_method(db, &u, MethodKind::Totp, MethodState::Active).await;

    for round in 0..3i64 {
        let step = 1_000 + round;
        let results = race(CONCURRENCY, |_| {
            let store = db.store.clone();
            let id = id.clone();
            async move { store.advance_totp_step(&id, step, 9_000).await.unwrap() }
        })
        .await;
        assert_eq!(
            winners(&results),
            1,
            "{}: {CONCURRENCY} concurrent uses of one code, round {round}: {results:?}",
            db.backend
        );
    }

    // Distinct steps racing: the guard ends at the highest, never lower.
    let results = race(CONCURRENCY, |i| {
        let store = db.store.clone();
        let id = id.clone();
        async move { store.advance_totp_step(&id, 2_000 + i as i64, 9_500).await.unwrap() }
    })
    .await;
    assert!(winners(&results) >= 1);
    let m = db.method(&u.id, &id).await.unwrap().unwrap();
    assert_eq!(m.last_used_step, Some(2_000 + CONCURRENCY as i64 - 1), "{}", db.backend);
}

// ---- recovery codes ----------------------------------------------------------

async fn case_recovery_code_is_single_use(db: &Db) {
    let u = add_user(db, "frank").await;
    let other = add_user(db, "grace").await;
    let hashes: Vec<String> = (0..10).map(|i| format!("hash-{i:02}")).collect();
    let set1 = method_id();
    let mut tx = db.write().await.unwrap();
    assert!(tx
        .replace_recovery_codes(&u.id, &set1, &hashes, 100)
        .await
        .unwrap()
        .is_empty());
    tx.audit(&entry("method.add", "user:frank"), 100_000).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(db.recovery_codes_left(&set1).await.unwrap(), 10);
    let m = db.method(&u.id, &set1).await.unwrap().unwrap();
    assert_eq!((m.kind, m.state), (MethodKind::RecoveryCodes, MethodState::Active));

    let results = race(CONCURRENCY, |_| {
        let store = db.store.clone();
        let uid = u.id.clone();
        async move { store.use_recovery_code(&uid, "hash-03", 200).await.unwrap() }
    })
    .await;
    assert_eq!(
        winners(&results),
        1,
        "{}: one code, {CONCURRENCY} racers: {results:?}",
        db.backend
    );
    assert_eq!(db.recovery_codes_left(&set1).await.unwrap(), 9);
    assert!(!db.use_recovery_code(&u.id, "hash-03", 300).await.unwrap(), "spent");
    assert_eq!(db.method(&u.id, &set1).await.unwrap().unwrap().last_used_at, Some(200));

    assert!(
        !db.use_recovery_code(&other.id, "hash-04", 300).await.unwrap(),
        "another user's code"
    );
    assert!(
        !db.use_recovery_code(&u.id, "hash-99", 300).await.unwrap(),
        "not a code"
    );

    // Different codes racing: all win.
    let results = race(5, |i| {
        let store = db.store.clone();
        let uid = u.id.clone();
        async move {
            store
                .use_recovery_code(&uid, &format!("hash-{:02}", 5 + i), 400)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(winners(&results), 5);
    assert_eq!(db.recovery_codes_left(&set1).await.unwrap(), 4);

    // Replacing the set kills every old code in the same transaction.
    let set2 = method_id();
    let new_hashes: Vec<String> = (0..10).map(|i| format!("new-{i:02}")).collect();
    let mut tx = db.write().await.unwrap();
    let replaced = tx.replace_recovery_codes(&u.id, &set2, &new_hashes, 500).await.unwrap();
    tx.audit(&entry("method.recovery_codes.regenerate", "user:frank"), 500_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(replaced, vec![set1.clone()]);
    assert!(db.method(&u.id, &set1).await.unwrap().is_none());
    assert!(
        !db.use_recovery_code(&u.id, "hash-00", 600).await.unwrap(),
        "old set is dead"
    );
    assert!(db.use_recovery_code(&u.id, "new-00", 600).await.unwrap());
    assert_eq!(db.recovery_codes_left(&set2).await.unwrap(), 9);

    // Deleting the method deletes its codes.
    let mut tx = db.write().await.unwrap();
    tx.delete_method(&u.id, &set2).await.unwrap();
    assert!(matches!(
        tx.delete_method(&u.id, &set2).await,
        Err(StoreError::NotFound(_))
    ));
    tx.audit(&entry("method.remove", "user:frank"), 700_000).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!db.use_recovery_code(&u.id, "new-01", 800).await.unwrap());
    assert_eq!(db.recovery_codes_left(&set2).await.unwrap(), 0);
}

// ---- throttling --------------------------------------------------------------

async fn case_throttle_counts_and_locks(db: &Db) {
    let p = LockPolicy {
        threshold: 3,
        base_secs: 10,
        max_secs: 100,
    };
    let key = "user:henry";
    assert_eq!(db.throttle_state(key).await.unwrap(), LockState::Open { failures: 0 });

    // (now, failures after this one, lock returned)
    let steps: &[(i64, u32, Option<i64>)] = &[
        (1_000, 1, None),
        (1_000, 2, None),
        (1_000, 3, Some(1_010)),
        (1_000, 4, Some(1_020)),
        (1_000, 5, Some(1_040)),
        (1_000, 9, Some(1_100)),
    ];
    let mut count = 0;
    for (now, failures, until) in steps {
        let mut out = None;
        while count < *failures {
            out = Some(db.record_failure(key, &p, *now).await.unwrap());
            count += 1;
        }
        let out = out.unwrap();
        assert_eq!(out.failures, *failures, "{}", db.backend);
        assert_eq!(out.locked_until, *until, "{}: after {failures} failures", db.backend);
    }
    let state = db.throttle_state(key).await.unwrap();
    assert_eq!(
        state,
        LockState::Locked {
            failures: 9,
            until: 1_100
        }
    );
    assert_eq!(state.check(1_040), Err(60));
    assert_eq!(state.check(1_100), Ok(()));

    // A node with a lagging clock computes an earlier lock: it must not shorten ours.
    let out = db.record_failure(key, &p, 900).await.unwrap();
    assert_eq!(out.failures, 10);
    assert_eq!(
        db.throttle_state(key).await.unwrap(),
        LockState::Locked {
            failures: 10,
            until: 1_100
        },
        "{}: a lock is only ever extended",
        db.backend
    );

    // Keys are independent; clearing resets.
    assert_eq!(
        db.throttle_state("user:other").await.unwrap(),
        LockState::Open { failures: 0 }
    );
    db.clear_throttle(key).await.unwrap();
    assert_eq!(db.throttle_state(key).await.unwrap(), LockState::Open { failures: 0 });
    assert_eq!(db.record_failure(key, &p, 2_000).await.unwrap().failures, 1);
}

async fn case_throttle_counts_every_concurrent_failure(db: &Db) {
    let p = LockPolicy::USER_DEFAULT;
    let now = 50_000;
    let results = race(CONCURRENCY, |_| {
        let store = db.store.clone();
        async move { store.record_failure("src:198.51.100.7", &p, now).await.unwrap() }
    })
    .await;
    let mut counts: Vec<u32> = results.iter().map(|o| o.failures).collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=CONCURRENCY as u32).collect::<Vec<_>>(),
        "{}: each concurrent failure sees its own increment",
        db.backend
    );
    // 16 failures, threshold 5, base 30 s doubling: capped at max_secs; the
    // longest lock computed by any racer is the one stored.
    let expected_until = now + p.max_secs;
    assert_eq!(
        db.throttle_state("src:198.51.100.7").await.unwrap(),
        LockState::Locked {
            failures: CONCURRENCY as u32,
            until: expected_until
        },
        "{}",
        db.backend
    );
}

// ---- Temporary Access Passes -------------------------------------------------

async fn insert_tap(
    store: &Store,
    user: &UserRecord,
    id: &str,
    hash: &str,
    single_use: bool,
    starts: i64,
    expires: i64,
) {
    let mut tx = store.write().await.unwrap();
    tx.insert_tap(
        id,
        &user.id,
        hash,
        "user:helpdesk",
        &json!({ "method": "callback", "note": "called back" }),
        single_use,
        starts,
        expires,
        starts,
    )
    .await
    .unwrap();
    tx.audit(&entry("tap.issue", &format!("user:{}", user.username)), starts * 1000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Spend a pass the way the app does: in an audited transaction.
async fn use_tap_audited(store: &Store, id: &str, now: i64) -> bool {
    let mut tx = store.write().await.unwrap();
    let won = tx.use_tap(id, now).await.unwrap();
    if won {
        tx.audit(&entry("tap.use", "user:ivy"), now * 1000).await.unwrap();
        tx.commit().await.unwrap();
    }
    won
}

async fn case_tap_window_and_single_use(db: &Db) {
    let u = add_user(db, "ivy").await;
    let other = add_user(db, "jack").await;
    insert_tap(db, &u, "tap-1", "pass-hash-1", true, 1_000, 4_600).await;

    let t = db
        .tap_by_hash(&u.id, "pass-hash-1")
        .await
        .unwrap()
        .expect("found by hash");
    assert_eq!(
        (t.single_use, t.starts_at, t.expires_at, t.used_at),
        (true, 1_000, 4_600, None)
    );
    assert!(
        db.tap_by_hash(&other.id, "pass-hash-1").await.unwrap().is_none(),
        "bound to its user"
    );

    assert!(!use_tap_audited(db, "tap-1", 999).await, "not yet valid");
    let results = race(CONCURRENCY, |_| {
        let store = db.store.clone();
        async move { use_tap_audited(&store, "tap-1", 2_000).await }
    })
    .await;
    assert_eq!(
        winners(&results),
        1,
        "{}: one pass, {CONCURRENCY} racers: {results:?}",
        db.backend
    );
    assert_eq!(
        db.tap_by_hash(&u.id, "pass-hash-1").await.unwrap().unwrap().used_at,
        Some(2_000)
    );
    assert!(!use_tap_audited(db, "tap-1", 2_001).await, "spent");

    // A multi-use pass works repeatedly inside its window, never outside.
    insert_tap(db, &u, "tap-2", "pass-hash-2", false, 1_000, 4_600).await;
    assert!(use_tap_audited(db, "tap-2", 1_500).await);
    assert!(use_tap_audited(db, "tap-2", 1_600).await);
    assert!(!use_tap_audited(db, "tap-2", 4_600).await, "expired at expires_at");

    // Pass hashes are unique.
    let mut tx = db.write().await.unwrap();
    let err = tx
        .insert_tap("tap-3", &u.id, "pass-hash-1", "x", &json!({}), true, 1, 2, 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    drop(tx);

    let v = db.verify_audit_chain().await.unwrap();
    assert!(v.ok);
    // 2 users + 2 issues + 1 winning use + 2 multi-use uses.
    assert_eq!(v.length, 7, "{}: only winners committed an event", db.backend);
}

// ---- sessions ----------------------------------------------------------------

async fn case_sessions_expire_idle_and_absolute(db: &Db) {
    let u = add_user(db, "kate").await;
    let t0 = 100_000;
    let idle = 1_800;
    let absolute = 8 * 3_600;
    let s = SessionRecord {
        id: "session-1".into(),
        user_id: u.id.clone(),
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
        methods: vec!["password".into(), "totp".into()],
        acr: "mfa".into(),
        authenticated_at: t0,
        idle_expires_at: t0 + idle,
        expires_at: t0 + absolute,
    };
    let mut tx = db.write().await.unwrap();
    tx.insert_session("token-hash-1", &s, Some("192.0.2.1"), None)
        .await
        .unwrap();
    tx.audit(&entry("session.create", "user:kate"), t0 * 1000)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let got = db
        .session_by_token_hash("token-hash-1", t0)
        .await
        .unwrap()
        .expect("live");
    assert_eq!((got.id.as_str(), got.acr.as_str()), ("session-1", "mfa"));
    assert_eq!(got.amr, s.amr);
    assert_eq!(got.methods, s.methods);
    assert_eq!(got.authenticated_at, t0);
    assert!(db.session_by_token_hash("other-hash", t0).await.unwrap().is_none());

    // Idle: valid until one second before the idle deadline.
    assert!(db
        .session_by_token_hash("token-hash-1", t0 + idle - 1)
        .await
        .unwrap()
        .is_some());
    assert!(
        db.session_by_token_hash("token-hash-1", t0 + idle)
            .await
            .unwrap()
            .is_none(),
        "{}: idle expiry",
        db.backend
    );

    // Touching slides the idle deadline...
    db.touch_session("session-1", t0 + idle - 1, idle).await.unwrap();
    let got = db
        .session_by_token_hash("token-hash-1", t0 + idle)
        .await
        .unwrap()
        .expect("touched");
    assert_eq!(got.idle_expires_at, t0 + 2 * idle - 1);
    // ...but never past the absolute deadline.
    let late = t0 + absolute - 60;
    db.touch_session("session-1", t0 + 2 * idle - 2, idle).await.unwrap();
    let mut now = t0 + 2 * idle - 2;
    while now + idle < late {
        now += idle - 1;
        assert!(
            db.session_by_token_hash("token-hash-1", now).await.unwrap().is_some(),
            "at {now}"
        );
        db.touch_session("session-1", now, idle).await.unwrap();
    }
    db.touch_session("session-1", late, idle).await.unwrap();
    let got = db.session_by_token_hash("token-hash-1", late).await.unwrap().unwrap();
    assert_eq!(
        got.idle_expires_at,
        t0 + absolute,
        "idle deadline capped at the absolute one"
    );
    assert!(db
        .session_by_token_hash("token-hash-1", t0 + absolute - 1)
        .await
        .unwrap()
        .is_some());
    assert!(
        db.session_by_token_hash("token-hash-1", t0 + absolute)
            .await
            .unwrap()
            .is_none(),
        "{}: absolute expiry",
        db.backend
    );

    // Revocation, and housekeeping.
    let s2 = SessionRecord {
        id: "session-2".into(),
        authenticated_at: t0,
        idle_expires_at: t0 + idle,
        expires_at: t0 + absolute,
        ..s.clone()
    };
    let mut tx = db.write().await.unwrap();
    tx.insert_session("token-hash-2", &s2, None, None).await.unwrap();
    tx.audit(&entry("session.create", "user:kate"), t0 * 1000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Token hashes are unique (a failed statement aborts a PostgreSQL
    // transaction, so this one is dropped).
    let mut tx = db.write().await.unwrap();
    let s3 = SessionRecord {
        id: "session-3".into(),
        ..s2.clone()
    };
    assert!(
        tx.insert_session("token-hash-2", &s3, None, None).await.is_err(),
        "{}",
        db.backend
    );
    drop(tx);
    assert!(db
        .session_by_token_hash("token-hash-2", t0 + 10)
        .await
        .unwrap()
        .is_some());
    let mut tx = db.write().await.unwrap();
    assert!(tx.revoke_session("session-2", t0 + 10).await.unwrap());
    assert!(
        !tx.revoke_session("session-2", t0 + 11).await.unwrap(),
        "already revoked"
    );
    tx.audit(&entry("session.revoke", "user:kate"), t0 * 1000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        db.session_by_token_hash("token-hash-2", t0 + 12)
            .await
            .unwrap()
            .is_none(),
        "revoked"
    );

    // session-1 is past its absolute deadline, session-2 (revoked) is not yet expired.
    assert_eq!(
        db.purge_expired(t0 + absolute).await.unwrap(),
        2,
        "{}: both are past a deadline",
        db.backend
    );
}

// ---- sign-in flows -----------------------------------------------------------

async fn case_flow_compare_and_swap(db: &Db) {
    let now = 10_000;
    let rec = FlowRecord {
        user_id: None,
        username: "nobody".into(),
        flow_json: "A".into(),
        application: Some("vpn".into()),
        source_ip: Some("192.0.2.9".into()),
        expires_at: now + 600,
    };
    db.insert_flow("flow-1", &rec, now).await.unwrap();
    let got = db.flow("flow-1", now).await.unwrap().expect("stored");
    assert_eq!(
        (
            got.username.as_str(),
            got.flow_json.as_str(),
            got.application.as_deref(),
            got.source_ip.as_deref(),
            got.user_id
        ),
        ("nobody", "A", Some("vpn"), Some("192.0.2.9"), None)
    );
    assert!(
        db.insert_flow("flow-1", &rec, now).await.is_err(),
        "flow ids are unique"
    );

    // (expected, next, succeeds?)
    let steps: &[(&str, &str, bool)] = &[
        ("stale", "C", false),
        ("A", "B", true),
        ("A", "C", false),
        ("B", "C", true),
    ];
    for (expected, next, ok) in steps {
        assert_eq!(
            db.update_flow("flow-1", expected, next).await.unwrap(),
            *ok,
            "{}: CAS {expected} -> {next}",
            db.backend
        );
    }
    assert_eq!(db.flow("flow-1", now).await.unwrap().unwrap().flow_json, "C");
    assert!(!db.update_flow("no-such-flow", "C", "D").await.unwrap());

    // Racing advances of one flow: exactly one wins.
    let results = race(CONCURRENCY, |i| {
        let store = db.store.clone();
        async move { store.update_flow("flow-1", "C", &format!("D{i}")).await.unwrap() }
    })
    .await;
    assert_eq!(winners(&results), 1, "{}: {results:?}", db.backend);

    // Expiry by the `now` argument, deletion, purge.
    assert!(db.flow("flow-1", now + 599).await.unwrap().is_some());
    assert!(
        db.flow("flow-1", now + 600).await.unwrap().is_none(),
        "expired at expires_at"
    );
    db.insert_flow("flow-2", &rec, now).await.unwrap();
    db.delete_flow("flow-2").await.unwrap();
    assert!(db.flow("flow-2", now).await.unwrap().is_none());
    assert_eq!(db.purge_expired(now + 600).await.unwrap(), 1);
    assert!(db.flow("flow-1", now).await.unwrap().is_none(), "purged");
}

// ---- secrets at rest -----------------------------------------------------------

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn case_sealed_secret_round_trips_and_is_not_stored_plain(db: &Db) {
    let keys = Keys::from_master(&[42u8; 32]);
    let u = add_user(db, "liam").await;
    let plain: &[u8] = b"PLAINTEXT-TOTP-SEED-0123456789-ZQXJ";
    let label = "LABEL-MARKER-7f3a9c";
    let id = method_id();
    let sealed = keys.seal(plain, &id);
    let mut tx = db.write().await.unwrap();
    tx.insert_method(
        NewMethod {
            id: &id,
            user_id: &u.id,
            kind: MethodKind::Totp,
            label,
            state: MethodState::Active,
            secret_sealed: Some(sealed.clone()),
            params: json!({ "algorithm": "SHA1", "digits": 6, "step_secs": 30 }),
        },
        1_000,
    )
    .await
    .unwrap();
    tx.audit(&entry("method.add", "user:liam"), 1_000_000).await.unwrap();
    tx.commit().await.unwrap();

    let m = db.method(&u.id, &id).await.unwrap().unwrap();
    assert_eq!(
        m.secret_sealed.as_deref(),
        Some(sealed.as_slice()),
        "{}: BLOB round trip",
        db.backend
    );
    assert_eq!(m.params["digits"], 6);
    assert_eq!(m.confirmed_at, Some(1_000), "inserted active means confirmed now");
    assert_eq!(
        keys.open(m.secret_sealed.as_deref().unwrap(), &id).unwrap().as_slice(),
        plain
    );
    assert!(keys.open(&sealed, "another-row").is_err(), "bound to its row id");
    assert!(
        Keys::from_master(&[43u8; 32]).open(&sealed, &id).is_err(),
        "bound to the key"
    );

    let encodings: Vec<Vec<u8>> = vec![
        plain.to_vec(),
        data_encoding::BASE32_NOPAD.encode(plain).into_bytes(),
        hex::encode(plain).into_bytes(),
    ];

    // What the database holds in the column.
    let raw = db.raw().await;
    let row = sqlx::query("SELECT secret_sealed FROM methods WHERE id = $1")
        .bind(&id)
        .fetch_one(&raw)
        .await
        .unwrap();
    let stored: Vec<u8> = row.try_get("secret_sealed").unwrap();
    assert_eq!(stored, sealed);
    for e in &encodings {
        assert!(
            !contains(&stored, e),
            "{}: the column holds the secret in the clear",
            db.backend
        );
    }
    raw.close().await;

    // What the SQLite files on disk hold (database, WAL, shared memory).
    if let Some(dir) = db.sqlite_dir() {
        let mut bytes = Vec::new();
        for f in std::fs::read_dir(dir).unwrap() {
            let f = f.unwrap();
            if f.file_name().to_string_lossy().starts_with("latchkey.db") {
                bytes.extend(std::fs::read(f.path()).unwrap());
            }
        }
        assert!(
            contains(&bytes, label.as_bytes()),
            "control: the unsealed label must be visible in the files we scan"
        );
        for e in &encodings {
            assert!(
                !contains(&bytes, e),
                "the SQLite files hold the TOTP secret in the clear"
            );
        }
    }
}

// ---- API tokens and notifications -----------------------------------------------

async fn case_api_tokens_and_notifications(db: &Db) {
    let rec = ApiTokenRecord {
        id: "tok-1".into(),
        name: "ci".into(),
        scopes: vec!["admin".into()],
        created_by: "cli:operator".into(),
        owner_user_id: None,
        owner: None,
    };
    let mut tx = db.write().await.unwrap();
    tx.insert_api_token(&rec, "token-hash", 10).await.unwrap();
    tx.audit(&entry("api_token.create", "api_token:tok-1"), 10_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let got = db.api_token_by_hash("token-hash").await.unwrap().expect("found");
    assert_eq!(
        (got.id.as_str(), got.name.as_str(), got.scopes.clone()),
        ("tok-1", "ci", vec!["admin".to_string()])
    );

    let mut tx = db.write().await.unwrap();
    let dup = ApiTokenRecord {
        id: "tok-2".into(),
        ..rec.clone()
    };
    assert!(matches!(
        tx.insert_api_token(&dup, "token-hash", 11).await,
        Err(StoreError::Conflict(_))
    ));
    drop(tx);

    let mut tx = db.write().await.unwrap();
    assert!(tx.revoke_api_token("tok-1", 20).await.unwrap());
    assert!(!tx.revoke_api_token("tok-1", 21).await.unwrap());
    tx.audit(&entry("api_token.revoke", "api_token:tok-1"), 20_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(db.api_token_by_hash("token-hash").await.unwrap().is_none(), "revoked");
    let listed = db.list_api_tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].1, listed[0].2), (10, Some(20)));

    let u = add_user(db, "mia").await;
    let mut tx = db.write().await.unwrap();
    for i in 0..3 {
        tx.notify(&u.id, "outbox", &format!("subject {i}"), "body", 100 + i)
            .await
            .unwrap();
    }
    tx.audit(&entry("notify", "user:mia"), 100_000).await.unwrap();
    tx.commit().await.unwrap();
    let subjects: Vec<String> = db
        .notifications(&u.id)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.subject)
        .collect();
    assert_eq!(subjects, ["subject 0", "subject 1", "subject 2"], "in insertion order");
    db.ping().await.unwrap();
}

// ---- verification while others write ----------------------------------------------

/// BUG (see report): `verify_audit_chain` reads the events, then the head, in
/// separate statements with no common snapshot. An append that commits in
/// between makes an intact chain look truncated ("events were removed").
async fn case_verify_during_appends_never_reports_tampering(db: &Db) {
    append_events(db, 3).await;
    let writer = {
        let store = db.store.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                store
                    .audit_only(
                        &AuditEntry::new("writer", "test.event", "thing", json!({ "i": i })),
                        1_800_000_000_000 + i,
                    )
                    .await
                    .unwrap();
            }
        })
    };
    let mut verifications = 0;
    let mut false_alarms = Vec::new();
    while !writer.is_finished() {
        let v = db.verify_audit_chain().await.unwrap();
        verifications += 1;
        if !v.ok {
            false_alarms.push(format!("{v:?}"));
        }
    }
    writer.await.unwrap();
    let v = db.verify_audit_chain().await.unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.length, 303);
    assert!(
        false_alarms.is_empty(),
        "BUG ({}): {} of {verifications} verifications of an untouched chain reported tampering while \
         another task appended; first: {}",
        db.backend,
        false_alarms.len(),
        false_alarms[0]
    );
}
