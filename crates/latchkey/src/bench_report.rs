//! `latchkey bench --scenario report`: evidence-report generation over a
//! large sign-in log (default one million rows over 30 days).
//!
//! Seeds a fresh store (temporary SQLite, or the empty PostgreSQL database
//! given with `--database-url`): users in departments with a mix of methods,
//! a few hundred alerts, then the sign-ins in multi-row INSERTs. Then it
//! times [`App::evidence_report`] (load with SQL aggregation + computation)
//! and each renderer, and reads the process's peak resident memory during
//! generation (Linux: `VmHWM` after resetting it through `/proc/self/clear_refs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use latchkey_core::evidence::Period;
use latchkey_core::{MethodKind, MethodState, Role};
use latchkey_service::app::{App, Config, Principal};
use latchkey_service::clock::SystemClock;
use latchkey_service::evidence::{render, EvidenceFormat};
use latchkey_store::{method_id, AuditEntry, Keys, NewMethod, NewUser, SignInLogEntry, Store};
use serde_json::{json, Value};

const USERS: usize = 10_000;
const ALERTS: usize = 500;
const CHUNK: usize = 50_000;
const DAY: i64 = 86_400;

fn proc_status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub async fn run(database_url: Option<&str>, signins: usize, json_out: bool, machine: Value) -> Result<()> {
    let temp = std::env::temp_dir().join(format!("latchkey-bench-report-{}", std::process::id()));
    std::fs::create_dir_all(&temp)?;
    let result = run_in(&temp, database_url, signins, json_out, machine).await;
    let _ = std::fs::remove_dir_all(&temp);
    result
}

async fn run_in(
    temp: &std::path::Path,
    database_url: Option<&str>,
    signins: usize,
    json_out: bool,
    machine: Value,
) -> Result<()> {
    let store = match database_url {
        Some(url) => Store::connect(url).await.context("connecting to the database")?,
        None => Store::open_sqlite(temp).await?,
    };
    if store.count_users().await? > 0 {
        bail!("the report benchmark needs an empty database");
    }
    // The bench seeds its scratch database through its own store handle;
    // what it measures goes through the service.
    let seed = store.clone();
    let app = Arc::new(App::new(
        store,
        Keys::from_master(&[9u8; 32]),
        Config::default(),
        Arc::new(SystemClock),
    )?);
    let now = app.now();
    let from = now - 30 * DAY;

    eprintln!("report: seeding {USERS} users, {ALERTS} alerts and {signins} sign-ins");
    let t = Instant::now();
    seed_users(&app, &seed, now).await?;
    seed_alerts(&app, &seed, from).await?;
    let seed_users_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let expected_completed = seed_signins(&seed, from, signins).await?;
    let seed_signins_secs = t.elapsed().as_secs_f64();

    let period = Period::new(from, now)?;
    let baseline_kib = proc_status_kib("VmRSS:");
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let mut runs = vec![];
    let mut report = None;
    for _ in 0..3 {
        let t = Instant::now();
        let r = app
            .evidence_report(&Principal::Operator, period, EvidenceFormat::Json)
            .await?;
        runs.push(t.elapsed());
        report = Some(r);
    }
    let peak_kib = if reset { proc_status_kib("VmHWM:") } else { None };
    let report = report.expect("three runs");
    ensure!(
        report.enforcement.completed == expected_completed,
        "the report counted {} completed sign-ins, {expected_completed} were seeded",
        report.enforcement.completed
    );
    ensure!(
        report.enforcement.attempts == signins as i64,
        "attempts {} != {signins}",
        report.enforcement.attempts
    );

    let mut renders = serde_json::Map::new();
    for f in [
        EvidenceFormat::Json,
        EvidenceFormat::Csv,
        EvidenceFormat::Html,
        EvidenceFormat::Pdf,
    ] {
        let t = Instant::now();
        let out = render(&report, f);
        // For looking at the documents a large installation gets.
        if let Ok(dir) = std::env::var("LATCHKEY_BENCH_REPORT_OUT") {
            std::fs::write(std::path::Path::new(&dir).join(&out.filename), &out.body)?;
        }
        renders.insert(
            f.as_str().into(),
            json!({ "ms": ms(t.elapsed()), "bytes": out.body.len() }),
        );
    }
    runs.sort();
    let median = runs[1];
    let out = json!({
        "scenario": "report",
        "backend": if database_url.is_some() { "postgres" } else { "sqlite" },
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": machine,
        "signins": signins,
        "users": USERS,
        "alerts": ALERTS,
        "seed": { "users_and_alerts_secs": round(seed_users_secs), "signins_secs": round(seed_signins_secs),
                  "signins_per_sec": (signins as f64 / seed_signins_secs).round() },
        "generate": {
            "runs_ms": runs.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "median_ms": ms(median),
            "signins_per_sec": (signins as f64 / median.as_secs_f64()).round(),
        },
        "memory": {
            "rss_before_mib": baseline_kib.map(|k| round(k as f64 / 1024.0)),
            "peak_rss_during_generation_mib": peak_kib.map(|k| round(k as f64 / 1024.0)),
        },
        "render": renders,
        "figures": { "completed": report.enforcement.completed, "coverage_pct": report.summary.mfa_coverage_pct },
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "Evidence report over {signins} sign-ins ({}, {} build)",
            out["backend"], out["build"]
        );
        println!(
            "  seeding sign-ins        {:>10.1} s ({} rows/s)",
            seed_signins_secs, out["seed"]["signins_per_sec"]
        );
        println!(
            "  generation (median of 3) {:>9} ms ({} sign-ins/s); runs {} ms",
            out["generate"]["median_ms"], out["generate"]["signins_per_sec"], out["generate"]["runs_ms"]
        );
        println!(
            "  resident memory         {} MiB before, peak {} MiB during generation",
            out["memory"]["rss_before_mib"], out["memory"]["peak_rss_during_generation_mib"]
        );
        for (k, v) in &renders {
            println!("  render {k:<5}            {:>8} ms, {} bytes", v["ms"], v["bytes"]);
        }
    }
    app.close().await;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0)
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Users in 20 departments; every 100th an admin, every 50th helpdesk. Methods:
/// 6 in 10 TOTP, 1 a security key, 1 SMS only, 1 both TOTP and key, 1 none.
async fn seed_users(app: &App, store: &Store, now: i64) -> Result<()> {
    for batch in (0..USERS).collect::<Vec<_>>().chunks(500) {
        let mut tx = store.write().await?;
        for &i in batch {
            let roles = match i {
                i if i % 100 == 0 => vec![Role::Admin],
                i if i % 50 == 0 => vec![Role::Helpdesk],
                _ => vec![],
            };
            let u = tx
                .insert_user(
                    &NewUser {
                        username: format!("user{i:05}"),
                        display_name: format!("User {i}"),
                        department: Some(format!("dept{:02}", i % 20)),
                        groups: vec![],
                        roles,
                    },
                    now - 60 * DAY,
                )
                .await?;
            let kinds: &[MethodKind] = match i % 10 {
                0..=5 => &[MethodKind::Totp],
                6 => &[MethodKind::Webauthn],
                7 => &[MethodKind::Sms],
                8 => &[MethodKind::Totp, MethodKind::Webauthn],
                _ => &[],
            };
            for kind in kinds {
                let id = method_id();
                tx.insert_method(
                    NewMethod {
                        id: &id,
                        user_id: &u.id,
                        kind: *kind,
                        label: "bench",
                        state: MethodState::Active,
                        secret_sealed: None,
                        params: json!({}),
                    },
                    now - 45 * DAY + (i as i64 % 30) * DAY,
                )
                .await?;
            }
        }
        tx.audit(
            &AuditEntry::new("bench", "bench.seed", "users", json!({ "users": batch.len() })),
            app.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

async fn seed_alerts(app: &App, store: &Store, from: i64) -> Result<()> {
    let mut tx = store.write().await?;
    for i in 0..ALERTS {
        let (kind, severity) = [
            ("push_fatigue", "high"),
            ("password_spray", "critical"),
            ("unusual_location", "medium"),
            ("exception_near_expiry", "low"),
        ][i % 4];
        tx.insert_alert(
            kind,
            severity,
            &format!("user:user{i:05}"),
            &json!({}),
            from + i as i64 * 60,
        )
        .await?;
    }
    tx.audit(
        &AuditEntry::new("bench", "bench.seed", "alerts", json!({ "alerts": ALERTS })),
        app.clock.now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `n` sign-ins spread over the 30 days; returns how many completed.
async fn seed_signins(store: &Store, from: i64, n: usize) -> Result<i64> {
    let decision = |required: &[&str]| {
        Some(
            json!({ "outcome": "allow", "required_strengths": required, "applied": [], "report_only": [], "break_glass": false }),
        )
    };
    let step = (30 * DAY) as f64 / n.max(1) as f64;
    let mut completed = 0;
    let mut i = 0;
    while i < n {
        let end = (i + CHUNK).min(n);
        let rows: Vec<(SignInLogEntry, Option<Value>)> = (i..end)
            .map(|k| {
                let (result, reason, acr, d) = match k % 25 {
                    0 => ("failure", Some("invalid_code"), None, None),
                    1 => ("failure", Some("invalid_password"), None, None),
                    2 => (
                        "failure",
                        Some("access_blocked"),
                        None,
                        decision(&["phishing_resistant"]),
                    ),
                    3..=8 => (
                        "success",
                        None,
                        Some("phishing_resistant"),
                        decision(&["phishing_resistant"]),
                    ),
                    9..=12 => ("success", None, Some("passwordless_mfa"), None),
                    _ => ("success", None, Some("mfa"), decision(&["mfa"])),
                };
                let user = k % USERS;
                (
                    SignInLogEntry {
                        at: from + (k as f64 * step) as i64,
                        user_id: None,
                        username: format!("user{user:05}"),
                        application: Some(["portal", "vpn", "mail"][k % 3].into()),
                        source_ip: Some(format!("10.{}.{}.{}", k % 200, (k / 200) % 250, k % 250)),
                        result: result.into(),
                        reason: reason.map(Into::into),
                        methods: vec!["password".into(), "totp".into()],
                        acr: acr.map(Into::into),
                    },
                    d,
                )
            })
            .collect();
        completed += rows.iter().filter(|r| r.0.result == "success").count() as i64;
        store.import_signins(&rows).await?;
        i = end;
    }
    Ok(completed)
}
