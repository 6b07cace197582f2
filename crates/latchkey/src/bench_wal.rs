//! `latchkey bench --scenario wal`: is the SQLite WAL bounded under
//! sustained writes? One task appends `--signins` sign-in log rows (1,000 per
//! transaction, as a busy installation's log grows) while `--concurrency`
//! tasks run TOTP checks (`App::check_totp`, readers and writers both) and
//! a sampler reads the WAL file's size every 5 ms. Reports the largest size
//! seen; the store's checkpointing must keep it under 64 MiB.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use latchkey_store::SignInLogEntry;
use serde_json::{json, Value};

use super::{round, seed_totp_users, totp_bench, BenchArgs, CodePool, Env};

const ROWS_PER_TX: usize = 1000;
const ROUND: Duration = Duration::from_secs(2);

pub(super) async fn run(env: &Env, args: &BenchArgs, out: &mut Value) -> Result<()> {
    if env.backend != "sqlite" {
        bail!("the wal scenario measures SQLite's write-ahead log; run it without --database-url");
    }
    let rows = args.signins;
    // Sized for the sign-ins to outlast the writer at ~4,000 checks/s.
    let n = args.users.unwrap_or(20_000);
    eprintln!("wal: seeding {n} TOTP users");
    let users = Arc::new(seed_totp_users(&env.app, &env.fixture, &env.prefix, n, None).await?);
    let pool = Arc::new(CodePool::new(&users));

    let store = env.fixture.store.clone();
    let done = Arc::new(AtomicBool::new(false));
    let largest = Arc::new(AtomicU64::new(store.wal_bytes()));
    let sampler = {
        let (store, done, largest) = (store.clone(), done.clone(), largest.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                largest.fetch_max(store.wal_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    eprintln!("wal: writing {rows} sign-in log rows ({ROWS_PER_TX} per transaction) while TOTP checks run");
    let started = Instant::now();
    let writer = {
        let (store, done, now) = (store.clone(), done.clone(), env.app.now());
        tokio::spawn(async move {
            let mut written = 0;
            while written < rows {
                let batch: Vec<(SignInLogEntry, Option<Value>)> = (written..(written + ROWS_PER_TX).min(rows))
                    .map(|k| {
                        (
                            SignInLogEntry {
                                at: now - (rows - k) as i64 / 100,
                                user_id: None,
                                username: format!("walbench{:05}", k % 10_000),
                                application: Some("portal".into()),
                                source_ip: Some(format!("10.{}.{}.{}", k % 200, (k / 200) % 250, k % 250)),
                                result: if k % 10 == 0 { "failure" } else { "success" }.into(),
                                reason: (k % 10 == 0).then(|| "invalid_code".into()),
                                methods: vec!["password".into(), "totp".into()],
                                acr: (k % 10 != 0).then(|| "mfa".into()),
                            },
                            None,
                        )
                    })
                    .collect();
                let r = store.import_signins(&batch).await;
                if r.is_err() {
                    done.store(true, Ordering::Relaxed);
                }
                r?;
                written += batch.len();
            }
            done.store(true, Ordering::Relaxed);
            anyhow::Ok(started.elapsed())
        })
    };
    // Sign-ins in rounds until the writer has finished.
    let mut checks = 0usize;
    let mut latencies = vec![];
    let mut errors = 0;
    let mut first_error = None;
    while !done.load(Ordering::Relaxed) {
        let r = totp_bench(&env.app, users.clone(), pool.clone(), None, &round_args(args)).await?;
        checks += r.latencies.len();
        latencies.extend(r.latencies);
        errors += r.errors;
        first_error = first_error.or(r.first_error);
    }
    let writer_secs = writer.await??.as_secs_f64();
    let _ = sampler.await;
    let largest = largest.load(Ordering::Relaxed).max(store.wal_bytes());
    latencies.sort();
    let ms = |d: Duration| round(d.as_secs_f64() * 1000.0, 3);
    out["wal"] = json!({
        "rows": rows,
        "rows_per_tx": ROWS_PER_TX,
        "writer_secs": round(writer_secs, 2),
        "rows_per_sec": round(rows as f64 / writer_secs, 0),
        "totp_checks": checks,
        "totp_checks_per_sec": round(checks as f64 / writer_secs, 1),
        "totp_p99_ms": ms(super::percentile(&latencies, 0.99)),
        "totp_errors": errors,
        "first_error": first_error,
        "largest_wal_bytes": largest,
        "largest_wal_mib": round(largest as f64 / (1 << 20) as f64, 2),
        "final_wal_bytes": store.wal_bytes(),
    });
    Ok(())
}

/// One short unmeasured-warm-up-free round of the TOTP driver.
fn round_args(args: &BenchArgs) -> BenchArgs {
    BenchArgs {
        duration_secs: ROUND.as_secs(),
        warmup_secs: 0,
        ..args.clone()
    }
}
