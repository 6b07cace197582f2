//! `latchkey bench`: throughput and latency figures for docs/performance.md.
//!
//! Three scenarios, each against a fresh in-process server (a temporary
//! SQLite data directory, or the PostgreSQL database given with
//! `--database-url`) listening on loopback:
//!
//! - `argon2`: the cost of the password hash alone (OWASP parameters):
//!   hash and verify latency on one thread, and verify throughput with one
//!   thread per core. That throughput is the ceiling for password sign-ins.
//! - `totp`: [`App::check_totp`] called directly by `--concurrency` tasks,
//!   the durable path every TOTP check takes: load the user's methods, open
//!   the sealed seed, verify, and atomically advance the replay guard
//!   (`last_used_step`) in the database.
//! - `signin`: a whole sign-in end to end over HTTP on loopback:
//!   `POST /api/v1/signin {username, password}` then
//!   `POST /api/v1/signin/{flow}/verify {method: "totp", code}` until a
//!   session token comes back; reported as a fraction of the Argon2 bound.
//! - `http` (not part of `all`): the same requests against a separate
//!   `latchkey serve` process, see bench_http.rs.
//!
//! Every code is used once: a TOTP method accepts each time step once and
//! never an older step than the last one accepted. Users are checked out
//! exclusively by one task at a time and walk their steps upwards
//! (current-1, current, current+1, then one more per new 30 s step), and
//! enough users are seeded that the run does not run out of fresh codes.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use latchkey_core::otp::{self, OtpAlgorithm, TotpParams};
use latchkey_core::password::{verify_password, PasswordParams};
use latchkey_core::{MethodKind, MethodState};
use latchkey_service::app::{App, Config, Principal};
use latchkey_service::clock::SystemClock;
use latchkey_store::{method_id, AuditEntry, Keys, NewMethod, NewUser, Store, UserRecord};
use rand::rngs::OsRng;
use rand::RngCore;
use serde_json::{json, Value};

#[path = "bench_http.rs"]
mod http;
#[path = "bench_wal.rs"]
mod wal;

/// Password every seeded sign-in user gets (policy: at least 12 characters).
const PASSWORD: &str = "bench correct horse battery staple";
/// Users inserted per audited transaction when seeding the TOTP scenario.
const SEED_BATCH: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    All,
    Argon2,
    Totp,
    Signin,
    /// Diagnosis, not part of `all`: the TOTP path taken apart (method
    /// lookup alone, lookup + decrypt + verify without the write, and the
    /// replay-guard write alone).
    TotpParts,
    /// Not part of `all`: evidence-report generation over `--signins` sign-ins
    /// (see bench_report.rs).
    Report,
    /// Not part of `all`: detections over `--events` synthetic sign-in
    /// events, pure (no server), see ops_bench.rs.
    Detections,
    /// Not part of `all`: the events logged in SQLite, then the server's
    /// detection engine over them.
    DetectionsStore,
    /// Not part of `all`: a `latchkey serve` child process driven over
    /// loopback HTTP (second step alone, full sign-in), next to the
    /// in-process check_totp rate and the Argon2 bound (see bench_http.rs).
    Http,
    /// Not part of `all`: the SQLite WAL's largest size while `--signins`
    /// sign-in log rows are written beside TOTP checks (see bench_wal.rs).
    Wal,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Which measurement to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    /// Users to seed for each of the totp and signin scenarios (default:
    /// sized from the duration so the run cannot run out of fresh codes).
    #[arg(long)]
    pub users: Option<usize>,
    /// Operations in flight at once (tasks for totp, HTTP clients for signin).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Measured seconds per scenario (argon2 spends half of it on each of its phases).
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// After the unpaced TOTP run, a second one paced at this many checks per
    /// second (0: skip), for the latency at a given load rather than at saturation.
    #[arg(long, default_value_t = 3000.0)]
    pub totp_rate: f64,
    /// Pace the totp-parts runs at this many operations per second (default: unpaced).
    #[arg(long)]
    pub parts_rate: Option<f64>,
    /// Unmeasured warm-up seconds before each measured run.
    #[arg(long, default_value_t = 1)]
    pub warmup_secs: u64,
    /// With --database-url: run even if the database already has users. Bench
    /// users are added under a unique prefix and left behind.
    #[arg(long)]
    pub allow_existing: bool,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Sign-in log rows to seed for the report scenario (and to write in the wal scenario).
    #[arg(long, default_value_t = 1_000_000)]
    pub signins: usize,
    /// Sign-in events for the detections scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Sign-in flows the http scenario prepares (password step done) before
    /// timing the second step alone; that run ends when they are used up or
    /// after --duration-secs, whichever comes first.
    #[arg(long, default_value_t = 6000)]
    pub flows: usize,
}

pub async fn run(_data: &Path, database_url: Option<&str>, args: BenchArgs) -> anyhow::Result<()> {
    if args.scenario == Scenario::Detections {
        return crate::ops_bench::run(args.events, args.json);
    }
    if args.scenario == Scenario::DetectionsStore {
        return crate::ops_bench::run_with_store(args.events).await;
    }
    if args.concurrency == 0 || args.duration_secs == 0 {
        bail!("--concurrency and --duration-secs must be at least 1");
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if args.scenario == Scenario::Report {
        return crate::bench_report::run(database_url, args.signins, args.json, machine(cores)).await;
    }
    let want = |s: Scenario| {
        args.scenario == s
            || (args.scenario == Scenario::All
                && !matches!(
                    s,
                    Scenario::TotpParts | Scenario::Report | Scenario::Http | Scenario::Wal
                ))
    };
    let backend = if database_url.is_some() { "postgres" } else { "sqlite" };
    let started = unix_secs() as i64;
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; figures are only meaningful from `cargo build --release`");
    }

    let mut out = json!({
        "latchkey_version": env!("CARGO_PKG_VERSION"),
        "started_at": latchkey_service::time::rfc3339(started),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine": machine(cores),
        "backend": backend,
        "parameters": {
            "scenario": format!("{:?}", args.scenario).to_lowercase(),
            "concurrency": args.concurrency,
            "duration_secs": args.duration_secs,
            "warmup_secs": args.warmup_secs,
            "totp_rate": args.totp_rate,
            "parts_rate": args.parts_rate,
            "argon2": PasswordParams::default(),
            "totp": TotpParams::default(),
            "totp_window": Config::default().totp_window,
        },
    });
    if args.scenario == Scenario::Http {
        out["parameters"]["flows"] = json!(args.flows);
        let failed = http::run(database_url, &args, cores, &mut out).await?;
        finish(&out, &args)?;
        if failed > 0 {
            bail!("{failed} operations failed during the measured runs (see first_error)");
        }
        return Ok(());
    }

    if args.scenario == Scenario::Wal {
        out["parameters"]["signins"] = json!(args.signins);
        let env = Env::start(database_url, args.allow_existing).await?;
        let result = wal::run(&env, &args, &mut out).await;
        env.stop().await;
        result?;
        if !args.json {
            let w = &out["wal"];
            println!(
                "wal: {} rows in {} s beside {} TOTP checks/s (p99 {} ms); largest WAL {} MiB, at the end {} bytes",
                w["rows"],
                w["writer_secs"],
                w["totp_checks_per_sec"],
                w["totp_p99_ms"],
                w["largest_wal_mib"],
                w["final_wal_bytes"]
            );
            return Ok(());
        }
        return finish(&out, &args);
    }

    let argon2 = if want(Scenario::Argon2) {
        let phase = Duration::from_secs(args.duration_secs).max(Duration::from_secs(2)) / 2;
        eprintln!(
            "argon2: hashing and verifying for {:.1} s per phase ({cores} threads for the parallel phase)",
            phase.as_secs_f64()
        );
        let c = args.concurrency;
        Some(tokio::task::spawn_blocking(move || argon2_bench(phase, cores, c)).await??)
    } else {
        None
    };
    if let Some(a) = &argon2 {
        out["argon2"] = a.to_json();
    }

    if want(Scenario::Totp) || want(Scenario::Signin) || want(Scenario::TotpParts) {
        let env = Env::start(database_url, args.allow_existing).await?;
        let result = run_server_scenarios(&env, &args, cores, argon2.as_ref(), &mut out).await;
        env.stop().await;
        result?;
    }

    finish(&out, &args)
}

fn finish(out: &Value, args: &BenchArgs) -> Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(out)?);
    } else {
        print_table(out);
    }
    Ok(())
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn run_server_scenarios(
    env: &Env,
    args: &BenchArgs,
    cores: usize,
    argon2: Option<&Argon2Result>,
    out: &mut Value,
) -> Result<()> {
    let want = |s: Scenario| args.scenario == s || (args.scenario == Scenario::All && s != Scenario::TotpParts);
    let total_secs = total_secs(args);
    if want(Scenario::Totp) {
        let paced = (args.totp_rate > 0.0).then_some(args.totp_rate);
        let n = totp_users_needed(args, paced);
        eprintln!("totp: seeding {n} users with an active TOTP method ({})", env.backend);
        let t = Instant::now();
        let users = Arc::new(seed_totp_users(&env.app, &env.fixture, &env.prefix, n, None).await?);
        let seed_secs = t.elapsed().as_secs_f64();
        let pool = Arc::new(CodePool::new(&users));
        eprintln!(
            "totp: seeded in {seed_secs:.1} s; measuring App::check_totp with {} tasks for {} s, unpaced",
            args.concurrency, args.duration_secs
        );
        let r = totp_bench(&env.app, users.clone(), pool.clone(), None, args).await?;
        let mut v = r.to_json();
        v["users"] = json!(n);
        v["seed_secs"] = json!(round(seed_secs, 2));
        out["totp"] = v;
        if let Some(rate) = paced {
            eprintln!("totp: again, paced at {rate} checks/s");
            let r = totp_bench(&env.app, users, pool, Some(rate), args).await?;
            let mut v = r.to_json();
            v["users"] = json!(n);
            v["seed_secs"] = json!(round(seed_secs, 2));
            out["totp_paced"] = v;
        }
    }
    if want(Scenario::TotpParts) {
        // Four of the parts write, each at up to ~15,000/s.
        let n = args
            .users
            .unwrap_or_else(|| ((50_000.0 * total_secs / 3.0).ceil() as usize).max(args.concurrency * 4));
        eprintln!(
            "totp-parts: seeding {n} users with an active TOTP method ({})",
            env.backend
        );
        let users = Arc::new(seed_totp_users(&env.app, &env.fixture, &env.prefix, n, None).await?);
        // One pool across the parts: the writes of one part use up steps.
        let pool = Arc::new(CodePool::new(&users));
        let mut parts = serde_json::Map::new();
        for part in [
            Part::Lookup,
            Part::LookupVerify,
            Part::Advance,
            Part::AdvanceSerialized,
            Part::Full,
            Part::FullSerialized,
        ] {
            eprintln!(
                "totp-parts: {} with {} tasks for {} s",
                part.name(),
                args.concurrency,
                args.duration_secs
            );
            let r = totp_part_bench(env, users.clone(), pool.clone(), part, args).await?;
            parts.insert(part.name().into(), r.to_json());
        }
        out["totp_parts"] = Value::Object(parts);
    }
    if want(Scenario::Signin) {
        let bound = match argon2 {
            Some(a) => a.clone(),
            None => {
                eprintln!("signin: calibrating the Argon2 bound (2 s per phase)");
                tokio::task::spawn_blocking(move || argon2_bench(Duration::from_secs(2), cores, 0)).await??
            }
        };
        if argon2.is_none() {
            out["argon2"] = bound.to_json();
        }
        let n = signin_users_needed(args, bound.bound_measured());
        eprintln!("signin: seeding {n} users through the App API (password + confirmed TOTP)");
        let t = Instant::now();
        let users = seed_signin_users(&env.app, &env.prefix, n, cores.max(2)).await?;
        let seed_secs = t.elapsed().as_secs_f64();
        eprintln!(
            "signin: seeded in {seed_secs:.1} s; signing in over HTTP with {} clients for {} s",
            args.concurrency, args.duration_secs
        );
        let r = signin_bench(&env.base_url, users, args).await?;
        let mut v = r.to_json();
        v["users"] = json!(n);
        v["seed_secs"] = json!(round(seed_secs, 2));
        v["argon2_bound_per_sec"] = json!(round(bound.bound_theoretical(), 1));
        v["argon2_measured_parallel_per_sec"] = json!(round(bound.bound_measured(), 1));
        v["fraction_of_bound"] = json!(round(r.rate() / bound.bound_theoretical(), 3));
        v["fraction_of_measured_parallel"] = json!(round(r.rate() / bound.bound_measured(), 3));
        out["signin"] = v;
    }
    Ok(())
}

/// Warm-up plus measured seconds of one run.
fn total_secs(args: &BenchArgs) -> f64 {
    (args.duration_secs + args.warmup_secs) as f64
}

/// TOTP users for an unpaced check_totp run (and a paced one at `paced`/s):
/// each fresh user offers three codes in the first window; sized for
/// 15,000/s unpaced so a fast machine does not run dry.
fn totp_users_needed(args: &BenchArgs, paced: Option<f64>) -> usize {
    args.users.unwrap_or_else(|| {
        (((15_000.0 + paced.unwrap_or(0.0) * 1.2) * total_secs(args) / 3.0).ceil() as usize).max(args.concurrency * 4)
    })
}

/// Users for `secs` seconds of password + TOTP sign-ins at up to `rate`/s:
/// a user confirmed at step c-1 (or fresh) offers codes for c and c+1, so
/// count on 1.5 sign-ins per user.
fn signin_users_needed(args: &BenchArgs, rate: f64) -> usize {
    args.users
        .unwrap_or_else(|| ((rate * total_secs(args) / 1.5).ceil() as usize).max(args.concurrency * 4))
}

// ---- environment -----------------------------------------------------------

/// An in-process server on 127.0.0.1:0 over a fresh store.
/// The scratch database as the bench itself sees it, for seeding and for
/// timing the store's parts of a TOTP check one by one.
struct Fixture {
    store: Store,
    keys: Arc<Keys>,
}

struct Env {
    app: Arc<App>,
    fixture: Fixture,
    base_url: String,
    backend: &'static str,
    /// Username prefix unique to this run (PostgreSQL may hold older runs).
    prefix: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    temp: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh scratch database: SQLite in a new temporary directory, or the
/// given PostgreSQL database, which must hold no users unless the caller
/// allows it (bench users are left behind there, under a unique prefix).
/// Comes with a new master key that only this run knows.
struct Scratch {
    store: Store,
    backend: &'static str,
    master: [u8; 32],
    /// Username prefix unique to this run (PostgreSQL may hold older runs).
    prefix: String,
    temp: TempDir,
}

impl Scratch {
    async fn open(database_url: Option<&str>, allow_existing: bool) -> Result<Scratch> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let temp = TempDir(std::env::temp_dir().join(format!("latchkey-bench-{}-{nanos}", std::process::id())));
        std::fs::create_dir_all(&temp.0).with_context(|| format!("creating {}", temp.0.display()))?;
        let (store, backend) = match database_url {
            Some(url) => (
                Store::connect(url).await.context("connecting to the database")?,
                "postgres",
            ),
            None => (
                Store::open_sqlite(&temp.0)
                    .await
                    .with_context(|| format!("opening SQLite in {}", temp.0.display()))?,
                "sqlite",
            ),
        };
        if database_url.is_some() && !allow_existing && store.count_users().await? > 0 {
            store.close().await;
            bail!(
                "the database already has users; point --database-url at an empty scratch database \
                 (bench users are left behind), or pass --allow-existing"
            );
        }
        let mut master = [0u8; 32];
        OsRng.fill_bytes(&mut master);
        Ok(Scratch {
            store,
            backend,
            master,
            prefix: format!("bench{:x}-", (nanos / 1_000_000) % 0xffff_ffff),
            temp,
        })
    }

    /// The bench's own handle on the scratch database, for seeding and for
    /// timing the store's parts of a TOTP check one by one.
    fn fixture(&self) -> Fixture {
        Fixture {
            store: self.store.clone(),
            keys: Arc::new(Keys::from_master(&self.master)),
        }
    }

    /// The service over the scratch database, as a server would run it.
    fn app(&self, config: Config) -> Result<Arc<App>> {
        Ok(Arc::new(App::new(
            self.store.clone(),
            Keys::from_master(&self.master),
            config,
            Arc::new(SystemClock),
        )?))
    }
}

impl Env {
    async fn start(database_url: Option<&str>, allow_existing: bool) -> Result<Env> {
        let scratch = Scratch::open(database_url, allow_existing).await?;
        // The bench seeds and probes its scratch database through its own
        // store handle; what it measures as a sign-in goes through the service.
        let fixture = scratch.fixture();
        let app = scratch.app(Config::default())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(latchkey_http::serve(
            app.clone(),
            Default::default(),
            listener,
            async move {
                let _ = rx.await;
            },
        ));
        Ok(Env {
            app,
            fixture,
            base_url: format!("http://{addr}"),
            backend: scratch.backend,
            prefix: scratch.prefix,
            shutdown,
            server,
            temp: scratch.temp,
        })
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        match tokio::time::timeout(Duration::from_secs(10), self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("warning: server ended with {e}"),
            Ok(Err(e)) => eprintln!("warning: server task failed: {e}"),
            Err(_) => eprintln!("warning: server did not stop within 10 s"),
        }
        self.fixture.store.close().await;
        drop(self.temp);
    }
}

// ---- seeding -----------------------------------------------------------------

struct BenchUser {
    user: UserRecord,
    method_id: String,
    secret: Vec<u8>,
    /// Lowest step not yet used (0 = none used).
    next_step: u64,
}

/// Users with an active TOTP method, written in batches through the store's
/// audited write transactions (the rows `enroll_totp` + `confirm_totp` would
/// leave, minus the per-user round trips, so seeding tens of thousands takes
/// seconds). The replay guard starts empty. With `password_phc`, every user
/// gets that one password hash (the cost of verifying it is the same as
/// for a hash of their own, without an Argon2 hash per seeded user).
async fn seed_totp_users(
    app: &App,
    fx: &Fixture,
    prefix: &str,
    n: usize,
    password_phc: Option<&str>,
) -> Result<Vec<BenchUser>> {
    let params = serde_json::to_value(TotpParams::default())?;
    let now = app.now();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(SEED_BATCH) {
        let end = (start + SEED_BATCH).min(n);
        let mut tx = fx.store.write().await?;
        for i in start..end {
            let user = tx
                .insert_user(
                    &NewUser {
                        username: format!("{prefix}t{i}"),
                        display_name: format!("Bench TOTP user {i}"),
                        department: Some("bench".into()),
                        groups: vec![],
                        roles: vec![],
                    },
                    now,
                )
                .await?;
            if let Some(phc) = password_phc {
                tx.set_password_hash(&user.id, phc, now).await?;
            }
            let secret = otp::generate_secret(&mut OsRng, OtpAlgorithm::Sha1);
            let id = method_id();
            let sealed = fx.keys.seal(&secret, &id);
            tx.insert_method(
                NewMethod {
                    id: &id,
                    user_id: &user.id,
                    kind: MethodKind::Totp,
                    label: "Bench authenticator",
                    state: MethodState::Active,
                    secret_sealed: Some(sealed),
                    params: params.clone(),
                },
                now,
            )
            .await?;
            out.push(BenchUser {
                user,
                method_id: id,
                secret,
                next_step: 0,
            });
        }
        tx.audit(
            &AuditEntry::new(
                "cli:bench",
                "bench.seed",
                "bench",
                json!({ "kind": "totp", "users": end - start, "password": password_phc.is_some() }),
            ),
            app.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
    }
    Ok(out)
}

/// Users created the way an administrator would: `create_user`,
/// `set_password` (an Argon2 hash each), `enroll_totp`, `confirm_totp`.
async fn seed_signin_users(app: &Arc<App>, prefix: &str, n: usize, workers: usize) -> Result<Vec<BenchUser>> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let app = app.clone();
        let prefix = prefix.to_owned();
        set.spawn(async move {
            let mut mine = Vec::new();
            for i in (w..n).step_by(workers) {
                mine.push((i, seed_one_signin_user(&app, &format!("{prefix}s{i}"), i).await?));
            }
            anyhow::Ok(mine)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, u)| u).collect())
}

async fn seed_one_signin_user(app: &App, username: &str, i: usize) -> Result<BenchUser> {
    let op = Principal::Operator;
    let user = app
        .create_user(
            &op,
            username,
            &format!("Bench sign-in user {i}"),
            Some("bench".into()),
            vec![],
            vec![],
        )
        .await?;
    app.set_password(&op, username, PASSWORD, None).await?;
    let e = app.enroll_totp(&op, username, None, None, None, None).await?;
    let secret = otp::decode_secret(&e.secret_base32)?;
    let params = TotpParams::default();
    // Confirm with the previous step's code so the current and next steps
    // stay free for sign-ins; at a step boundary fall back to the current one.
    let now = app.now().max(30) as u64;
    let method = match app
        .confirm_totp(&op, username, &e.method.id, &otp::totp_at(&secret, now - 30, &params))
        .await
    {
        Ok(m) => m,
        Err(_) => {
            app.confirm_totp(
                &op,
                username,
                &e.method.id,
                &otp::totp_at(&secret, unix_secs(), &params),
            )
            .await?
        }
    };
    let used = method
        .last_used_step
        .ok_or_else(|| anyhow!("confirm_totp did not record a step"))?;
    Ok(BenchUser {
        user,
        method_id: e.method.id,
        secret,
        next_step: used as u64 + 1,
    })
}

// ---- fresh codes -------------------------------------------------------------

/// Hands out users that still have an unused TOTP step inside the window.
/// A user is held by one task at a time, so its steps are used in order.
struct CodePool {
    inner: Mutex<PoolInner>,
    step_secs: u64,
}

struct PoolInner {
    ready: VecDeque<usize>,
    exhausted: Vec<usize>,
    next_step: Vec<u64>,
    starved: u64,
}

impl CodePool {
    fn new(users: &[BenchUser]) -> Self {
        Self {
            inner: Mutex::new(PoolInner {
                ready: (0..users.len()).collect(),
                exhausted: vec![],
                next_step: users.iter().map(|u| u.next_step).collect(),
                starved: 0,
            }),
            step_secs: TotpParams::default().step_secs,
        }
    }

    /// A user with a usable step at `now` (at most current+1), or `None`
    /// if every user has used its whole window.
    fn checkout(&self, now: u64) -> Option<usize> {
        let c = now / self.step_secs;
        let mut g = self.inner.lock().expect("pool lock");
        while let Some(i) = g.ready.pop_front() {
            if g.next_step[i] <= c + 1 {
                return Some(i);
            }
            g.exhausted.push(i);
        }
        // The step may have moved on since these ran dry.
        let exhausted = std::mem::take(&mut g.exhausted);
        for i in exhausted {
            if g.next_step[i] <= c + 1 {
                g.ready.push_back(i);
            } else {
                g.exhausted.push(i);
            }
        }
        let got = g.ready.pop_front();
        if got.is_none() {
            g.starved += 1;
        }
        got
    }

    /// Claim the lowest step of user `i` that is unused and no older than
    /// current-`back`.
    fn claim_step(&self, i: usize, now: u64, back: u64) -> u64 {
        let c = now / self.step_secs;
        let mut g = self.inner.lock().expect("pool lock");
        let s = g.next_step[i].max(c.saturating_sub(back));
        g.next_step[i] = s + 1;
        s
    }

    /// Claim a step as [`CodePool::claim_step`] does and return its code.
    /// When a later step inside the window happens to have the same code
    /// (a few times in a million), the server matches the newest one and
    /// records that, so skip past it too.
    fn claim_code(&self, i: usize, secret: &[u8], now: u64, back: u64) -> String {
        let digits = TotpParams::default().digits;
        let step = self.claim_step(i, now, back);
        let code = otp::hotp(secret, step, OtpAlgorithm::Sha1, digits);
        // The server's window ends at current+1, and its clock may be one step ahead.
        let last = now / self.step_secs + 2;
        for later in step + 1..=last {
            if otp::hotp(secret, later, OtpAlgorithm::Sha1, digits) == code {
                let mut g = self.inner.lock().expect("pool lock");
                g.next_step[i] = g.next_step[i].max(later + 1);
            }
        }
        code
    }

    fn checkin(&self, i: usize) {
        self.inner.lock().expect("pool lock").ready.push_back(i);
    }

    fn starved(&self) -> u64 {
        self.inner.lock().expect("pool lock").starved
    }
}

// ---- load driver ---------------------------------------------------------------

struct LoadResult {
    concurrency: usize,
    target_rate: Option<f64>,
    latencies: Vec<Duration>,
    measured: Duration,
    errors: u64,
    first_error: Option<String>,
    starved: u64,
    /// The work ran out before the deadline (`drive` with `until_empty`).
    ran_dry: bool,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        if self.measured.is_zero() {
            return 0.0;
        }
        self.latencies.len() as f64 / self.measured.as_secs_f64()
    }

    fn to_json(&self) -> Value {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let ms = |d: Duration| round(d.as_secs_f64() * 1000.0, 3);
        let mean = if sorted.is_empty() {
            Duration::ZERO
        } else {
            sorted.iter().sum::<Duration>() / sorted.len() as u32
        };
        json!({
            "concurrency": self.concurrency,
            "target_rate_per_sec": self.target_rate,
            "ops": sorted.len(),
            "seconds": round(self.measured.as_secs_f64(), 3),
            "ops_per_sec": round(self.rate(), 1),
            "p50_ms": ms(percentile(&sorted, 0.50)),
            "p90_ms": ms(percentile(&sorted, 0.90)),
            "p95_ms": ms(percentile(&sorted, 0.95)),
            "p99_ms": ms(percentile(&sorted, 0.99)),
            "max_ms": ms(sorted.last().copied().unwrap_or_default()),
            "mean_ms": ms(mean),
            "errors": self.errors,
            "first_error": self.first_error,
            "starved": self.starved,
        })
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Run `op` in `concurrency` tasks for warm-up + duration. Counts the
/// operations that complete inside the measured window. `op` returns its own
/// latency, or `None` when it found nothing to do: no fresh code yet (the
/// task waits a little and tries again) or, with `until_empty`, no work
/// left (the task ends; when every task has ended before the deadline, the
/// measured window ends with the last operation counted).
///
/// Without `rate`, each task runs `op` back to back (closed loop: the
/// maximum throughput, and the latency at saturation). With `rate`, the
/// tasks together start `rate` operations per second on a fixed schedule
/// (open loop); an operation that starts late because its task was still
/// busy is charged the delay, so a server that falls behind shows it in the
/// latency instead of hiding it (no coordinated omission).
async fn drive<F, Fut>(
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    rate: Option<f64>,
    until_empty: bool,
    op: F,
) -> LoadResult
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<Duration>>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let interval = rate.map(|r| Duration::from_secs_f64(concurrency as f64 / r));
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 14);
            let mut errors = 0u64;
            let mut first_error = None;
            let mut ran_dry = false;
            let mut last_counted = None;
            // Stagger the tasks evenly over one interval.
            let mut scheduled = interval.map(|iv| start + iv * w as u32 / concurrency as u32);
            while Instant::now() < deadline {
                let mut late = Duration::ZERO;
                if let (Some(at), Some(iv)) = (scheduled.as_mut(), interval) {
                    let now = Instant::now();
                    if now < *at {
                        // Timer wake-up jitter is the client's, not the server's: not charged.
                        tokio::time::sleep_until((*at).into()).await;
                    } else {
                        late = now - *at;
                    }
                    *at += iv;
                }
                let r = op().await;
                let done = Instant::now();
                let counted = done >= measure_from && done <= deadline;
                if counted {
                    last_counted = Some(done);
                }
                match r {
                    Ok(Some(d)) if counted => lat.push(late + d),
                    Ok(Some(_)) => {}
                    Ok(None) if until_empty => {
                        ran_dry = true;
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
                    Err(e) => {
                        if counted {
                            errors += 1;
                        }
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (lat, errors, first_error, ran_dry, last_counted)
        }));
    }
    let mut out = LoadResult {
        concurrency,
        target_rate: rate,
        latencies: vec![],
        measured: duration,
        errors: 0,
        first_error: None,
        starved: 0,
        ran_dry: false,
    };
    let mut all_ran_dry = true;
    let mut last: Option<Instant> = None;
    for t in tasks {
        match t.await {
            Ok((lat, errors, first, ran_dry, last_counted)) => {
                out.latencies.extend(lat);
                out.errors += errors;
                if out.first_error.is_none() {
                    out.first_error = first;
                }
                all_ran_dry &= ran_dry;
                last = last.max(last_counted);
            }
            Err(e) => {
                all_ran_dry = false;
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("task failed: {e}"));
            }
        }
    }
    if until_empty && all_ran_dry {
        out.ran_dry = true;
        // Nothing ran after the last operation: the window ends there.
        out.measured = last.map_or(Duration::ZERO, |l| l.saturating_duration_since(measure_from));
    }
    out
}

// ---- scenarios -----------------------------------------------------------------

async fn totp_bench(
    app: &Arc<App>,
    users: Arc<Vec<BenchUser>>,
    pool: Arc<CodePool>,
    rate: Option<f64>,
    args: &BenchArgs,
) -> Result<LoadResult> {
    let starved_before = pool.starved();
    let app = app.clone();
    let p = pool.clone();
    let mut r = drive(
        args.concurrency,
        Duration::from_secs(args.warmup_secs),
        Duration::from_secs(args.duration_secs),
        rate,
        false,
        move || {
            let (app, pool, users) = (app.clone(), p.clone(), users.clone());
            async move {
                let now = app.now();
                let Some(i) = pool.checkout(now as u64) else {
                    return Ok(None);
                };
                let u = &users[i];
                let code = pool.claim_code(i, &u.secret, now as u64, 1);
                let t0 = Instant::now();
                let r = app.check_totp(Some(&u.user), &code, now).await;
                let dt = t0.elapsed();
                pool.checkin(i);
                r.with_context(|| format!("check_totp for {}", u.user.username))?;
                Ok(Some(dt))
            }
        },
    )
    .await;
    r.starved = pool.starved() - starved_before;
    Ok(r)
}

#[derive(Clone, Copy, Debug)]
enum Part {
    /// `Store::methods_for_user`: the read every check starts with.
    Lookup,
    /// The read, opening the sealed seed and `verify_totp`: everything but the write.
    LookupVerify,
    /// `Store::advance_totp_step`: the durable replay-guard write alone.
    Advance,
    /// `App::check_totp`, for comparison in the same run.
    Full,
    /// The write alone, queued behind one in-process async mutex (what a
    /// single-connection SQLite write pool would do) instead of contending
    /// for SQLite's lock in its sleeping busy handler.
    AdvanceSerialized,
    /// `check_totp`'s steps replayed here with the write behind that mutex.
    FullSerialized,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Lookup => "lookup",
            Part::LookupVerify => "lookup_decrypt_verify",
            Part::Advance => "advance_step",
            Part::Full => "check_totp",
            Part::AdvanceSerialized => "advance_step_serialized",
            Part::FullSerialized => "check_totp_serialized_write",
        }
    }
}

async fn totp_part_bench(
    env: &Env,
    users: Arc<Vec<BenchUser>>,
    pool: Arc<CodePool>,
    part: Part,
    args: &BenchArgs,
) -> Result<LoadResult> {
    let starved_before = pool.starved();
    let app = env.app.clone();
    let (store, keys) = (env.fixture.store.clone(), env.fixture.keys.clone());
    let write_lock = Arc::new(tokio::sync::Mutex::new(()));
    let p = pool.clone();
    let mut r = drive(
        args.concurrency,
        Duration::from_secs(args.warmup_secs),
        Duration::from_secs(args.duration_secs),
        args.parts_rate,
        false,
        move || {
            let (app, pool, users, write_lock) = (app.clone(), p.clone(), users.clone(), write_lock.clone());
            let (store, keys) = (store.clone(), keys.clone());
            async move {
                let now = app.now();
                let Some(i) = pool.checkout(now as u64) else {
                    return Ok(None);
                };
                let u = &users[i];
                let t0 = Instant::now();
                let r: Result<()> = async {
                    match part {
                        Part::Lookup => {
                            let ms = store.methods_for_user(&u.user.id).await?;
                            anyhow::ensure!(ms.len() == 1, "expected one method");
                        }
                        Part::LookupVerify => {
                            let params = TotpParams::default();
                            // Reads never advance the guard, so any code of the window will do.
                            let code = otp::totp_at(&u.secret, now as u64, &params);
                            for m in store.methods_for_user(&u.user.id).await? {
                                let sealed = m.secret_sealed.as_deref().ok_or_else(|| anyhow!("no secret"))?;
                                let secret = keys.open(sealed, &m.id)?;
                                let params: TotpParams = serde_json::from_value(m.params.clone())?;
                                otp::verify_totp(&secret, &code, now as u64, &params, 1, None)?;
                            }
                        }
                        Part::Advance => {
                            let step = pool.claim_step(i, now as u64, 1);
                            anyhow::ensure!(
                                store.advance_totp_step(&u.method_id, step as i64, now).await?,
                                "advance_totp_step refused a fresh step"
                            );
                        }
                        Part::Full => {
                            let code = pool.claim_code(i, &u.secret, now as u64, 1);
                            app.check_totp(Some(&u.user), &code, now).await?;
                        }
                        Part::AdvanceSerialized => {
                            let step = pool.claim_step(i, now as u64, 1);
                            let _w = write_lock.lock().await;
                            anyhow::ensure!(
                                store.advance_totp_step(&u.method_id, step as i64, now).await?,
                                "advance_totp_step refused a fresh step"
                            );
                        }
                        Part::FullSerialized => {
                            let code = pool.claim_code(i, &u.secret, now as u64, 1);
                            let mut ok = false;
                            for m in store.methods_for_user(&u.user.id).await? {
                                if m.kind != MethodKind::Totp || m.state != MethodState::Active {
                                    continue;
                                }
                                let sealed = m.secret_sealed.as_deref().ok_or_else(|| anyhow!("no secret"))?;
                                let secret = keys.open(sealed, &m.id)?;
                                let params: TotpParams = serde_json::from_value(m.params.clone())?;
                                let last = m.last_used_step.map(|s| s.max(0) as u64);
                                let step = otp::verify_totp(&secret, &code, now as u64, &params, 1, last)?;
                                let _w = write_lock.lock().await;
                                if store.advance_totp_step(&m.id, step as i64, now).await? {
                                    ok = true;
                                    break;
                                }
                            }
                            anyhow::ensure!(ok, "code not accepted");
                        }
                    }
                    Ok(())
                }
                .await;
                let dt = t0.elapsed();
                pool.checkin(i);
                r?;
                Ok(Some(dt))
            }
        },
    )
    .await;
    r.starved = pool.starved() - starved_before;
    Ok(r)
}

async fn signin_bench(base_url: &str, users: Vec<BenchUser>, args: &BenchArgs) -> Result<LoadResult> {
    let client = http_client(args.concurrency)?;
    let pool = Arc::new(CodePool::new(&users));
    let users = Arc::new(users);
    let base = Arc::new(base_url.to_owned());
    let p = pool.clone();
    let mut r = drive(
        args.concurrency,
        Duration::from_secs(args.warmup_secs),
        Duration::from_secs(args.duration_secs),
        None,
        false,
        move || {
            let (client, pool, users, base) = (client.clone(), p.clone(), users.clone(), base.clone());
            async move {
                let Some(i) = pool.checkout(unix_secs()) else {
                    return Ok(None);
                };
                let r = signin_once(&client, &base, &pool, i, &users[i]).await;
                pool.checkin(i);
                r.map(Some)
            }
        },
    )
    .await;
    r.starved = pool.starved();
    Ok(r)
}

/// One keep-alive client for `concurrency` requests in flight.
fn http_client(concurrency: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn signin_once(
    client: &reqwest::Client,
    base: &str,
    pool: &CodePool,
    i: usize,
    u: &BenchUser,
) -> Result<Duration> {
    let t0 = Instant::now();
    let v = post_json(
        client,
        &format!("{base}/api/v1/signin"),
        json!({ "username": u.user.username, "password": PASSWORD }),
    )
    .await?;
    if v["state"] != "second_factor_required" {
        bail!("sign-in start answered {v}");
    }
    let flow = v["flow_id"].as_str().ok_or_else(|| anyhow!("no flow_id in {v}"))?;
    // Never an older step than current: the server's clock may tick between
    // our computing the code and its checking it, and current-1 would then
    // fall out of the window.
    let code = pool.claim_code(i, &u.secret, unix_secs(), 0);
    let v = post_json(
        client,
        &format!("{base}/api/v1/signin/{flow}/verify"),
        json!({ "method": "totp", "code": code }),
    )
    .await?;
    if v["state"] != "complete" || v["session_token"].as_str().is_none() {
        bail!("sign-in verify answered {v}");
    }
    Ok(t0.elapsed())
}

async fn post_json(client: &reqwest::Client, url: &str, body: Value) -> Result<Value> {
    let resp = client.post(url).json(&body).send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("POST {url}: {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

// ---- Argon2 ----------------------------------------------------------------------

#[derive(Clone)]
struct Argon2Result {
    params: PasswordParams,
    threads: usize,
    hash: Vec<Duration>,
    verify: Vec<Duration>,
    parallel_ops: usize,
    parallel_secs: f64,
    parallel_verify: Vec<Duration>,
    /// As many verifying threads as sign-ins in flight (more than cores):
    /// what the server does today, one blocking task per password check.
    oversubscribed: Option<(usize, usize, f64, Vec<Duration>)>,
}

impl Argon2Result {
    fn verify_p50(&self) -> Duration {
        let mut v = self.verify.clone();
        v.sort();
        percentile(&v, 0.5)
    }

    /// Cores / single-thread verify time: what perfect scaling would give.
    fn bound_theoretical(&self) -> f64 {
        self.threads as f64 / self.verify_p50().as_secs_f64()
    }

    /// Verifications per second actually reached with one thread per core.
    fn bound_measured(&self) -> f64 {
        self.parallel_ops as f64 / self.parallel_secs
    }

    fn to_json(&self) -> Value {
        let stats = |v: &[Duration]| {
            let mut s = v.to_vec();
            s.sort();
            let ms = |d: Duration| round(d.as_secs_f64() * 1000.0, 3);
            json!({
                "ops": s.len(),
                "p50_ms": ms(percentile(&s, 0.5)),
                "p99_ms": ms(percentile(&s, 0.99)),
                "max_ms": ms(s.last().copied().unwrap_or_default()),
            })
        };
        json!({
            "params": self.params,
            "hash_1_thread": stats(&self.hash),
            "verify_1_thread": stats(&self.verify),
            "verify_parallel": {
                "threads": self.threads,
                "ops": self.parallel_ops,
                "seconds": round(self.parallel_secs, 3),
                "ops_per_sec": round(self.bound_measured(), 1),
                "latency": stats(&self.parallel_verify),
            },
            "verify_oversubscribed": self.oversubscribed.as_ref().map(|(threads, ops, secs, lat)| json!({
                "threads": threads,
                "ops": ops,
                "seconds": round(*secs, 3),
                "ops_per_sec": round(*ops as f64 / secs, 1),
                "latency": stats(lat),
            })),
            "bound_per_sec": round(self.bound_theoretical(), 1),
        })
    }
}

/// Verify on `threads` threads for `phase`: (ops, seconds, latencies).
fn verify_on_threads(phc: &str, threads: usize, phase: Duration) -> (usize, f64, Vec<Duration>) {
    let start = Instant::now();
    let end = start + phase;
    let per_thread: Vec<Vec<Duration>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let mut v = Vec::new();
                    while Instant::now() < end {
                        let t = Instant::now();
                        assert!(verify_password(phc, PASSWORD));
                        v.push(t.elapsed());
                    }
                    v
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("argon2 thread")).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let lat: Vec<Duration> = per_thread.into_iter().flatten().collect();
    (lat.len(), secs, lat)
}

/// Hash, then verify, on one thread for `phase` each; then verify on
/// `threads` threads for `phase`; then, if `oversubscribed` > `threads`,
/// on that many. Blocking: call from `spawn_blocking`.
fn argon2_bench(phase: Duration, threads: usize, oversubscribed: usize) -> Result<Argon2Result> {
    let params = PasswordParams::default();
    let timed = |f: &dyn Fn() -> Result<()>| -> Result<Vec<Duration>> {
        let mut v = Vec::new();
        let end = Instant::now() + phase;
        while Instant::now() < end || v.len() < 5 {
            let t = Instant::now();
            f()?;
            v.push(t.elapsed());
        }
        Ok(v)
    };
    // One warm-up hash (page faults for the 19 MiB block, CPU clocks).
    let phc = params.hash(PASSWORD)?;
    let hash = timed(&|| {
        params.hash(PASSWORD)?;
        Ok(())
    })?;
    let verify = timed(&|| {
        if !verify_password(&phc, PASSWORD) {
            bail!("verify_password rejected the right password");
        }
        Ok(())
    })?;
    let (parallel_ops, parallel_secs, parallel_verify) = verify_on_threads(&phc, threads, phase);
    let oversubscribed = (oversubscribed > threads).then(|| {
        let (ops, secs, lat) = verify_on_threads(&phc, oversubscribed, phase);
        (oversubscribed, ops, secs, lat)
    });
    Ok(Argon2Result {
        params,
        threads,
        hash,
        verify,
        parallel_ops,
        parallel_secs,
        parallel_verify,
        oversubscribed,
    })
}

// ---- reporting -------------------------------------------------------------------

fn machine(cores: usize) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u64>().ok());
    json!({
        "cores": cores,
        "cpu_model": model,
        "memory_mib": mem_kib.map(|k| k / 1024),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

/// A number with two decimals, or "-".
fn fmt2(x: &Value) -> String {
    x.as_f64().map(|n| format!("{n:.2}")).unwrap_or_else(|| "-".into())
}

/// One table row for a [`LoadResult`]'s JSON.
fn print_load_row(title: &str, s: &Value) {
    println!(
        "{:<34} {:>7} {:>10} {:>9} {:>9} {:>9}",
        title,
        s["ops"],
        fmt2(&s["ops_per_sec"]),
        fmt2(&s["p50_ms"]),
        fmt2(&s["p99_ms"]),
        fmt2(&s["max_ms"])
    );
}

fn print_table(v: &Value) {
    let f = fmt2;
    let m = &v["machine"];
    println!(
        "latchkey bench {} ({} build) on {} core(s), {}, {} MiB; storage {}",
        v["latchkey_version"].as_str().unwrap_or(""),
        v["build"].as_str().unwrap_or(""),
        m["cores"],
        m["cpu_model"].as_str().unwrap_or("unknown CPU"),
        m["memory_mib"],
        v["backend"].as_str().unwrap_or(""),
    );
    println!(
        "{:<34} {:>7} {:>10} {:>9} {:>9} {:>9}",
        "measurement", "ops", "ops/s", "p50 ms", "p99 ms", "max ms"
    );
    let a = &v["argon2"];
    if a.is_object() {
        let p = &a["params"];
        println!(
            "Argon2id m={} KiB t={} p={}",
            p["memory_kib"], p["iterations"], p["parallelism"]
        );
        for (name, s) in [
            ("  hash, 1 thread", &a["hash_1_thread"]),
            ("  verify, 1 thread", &a["verify_1_thread"]),
        ] {
            let rate = s["p50_ms"].as_f64().map(|ms| 1000.0 / ms);
            println!(
                "{:<34} {:>7} {:>10} {:>9} {:>9} {:>9}",
                name,
                s["ops"],
                rate.map(|r| format!("{r:.1}")).unwrap_or_default(),
                f(&s["p50_ms"]),
                f(&s["p99_ms"]),
                f(&s["max_ms"])
            );
        }
        let par = &a["verify_parallel"];
        println!(
            "{:<34} {:>7} {:>10} {:>9} {:>9} {:>9}",
            format!("  verify, {} threads", par["threads"]),
            par["ops"],
            f(&par["ops_per_sec"]),
            f(&par["latency"]["p50_ms"]),
            f(&par["latency"]["p99_ms"]),
            f(&par["latency"]["max_ms"])
        );
        let over = &a["verify_oversubscribed"];
        if over.is_object() {
            println!(
                "{:<34} {:>7} {:>10} {:>9} {:>9} {:>9}",
                format!("  verify, {} threads", over["threads"]),
                over["ops"],
                f(&over["ops_per_sec"]),
                f(&over["latency"]["p50_ms"]),
                f(&over["latency"]["p99_ms"]),
                f(&over["latency"]["max_ms"])
            );
        }
        println!("  bound (cores / verify p50): {} sign-ins/s", f(&a["bound_per_sec"]));
    }
    let parts = &v["totp_parts"];
    for (key, title, s) in [
        ("totp", "TOTP check_totp (durable)", &v["totp"]),
        ("totp", "TOTP check_totp, paced", &v["totp_paced"]),
        ("signin", "sign-in, HTTP, password+TOTP", &v["signin"]),
        ("part", "parts: methods_for_user", &parts["lookup"]),
        ("part", "parts: lookup+decrypt+verify", &parts["lookup_decrypt_verify"]),
        ("part", "parts: advance_totp_step", &parts["advance_step"]),
        ("part", "parts: advance, serialized", &parts["advance_step_serialized"]),
        ("part", "parts: check_totp", &parts["check_totp"]),
        (
            "part",
            "parts: check_totp, serialized wr",
            &parts["check_totp_serialized_write"],
        ),
    ] {
        if !s.is_object() {
            continue;
        }
        let rate = s["target_rate_per_sec"]
            .as_f64()
            .map(|r| format!(" @{r}/s"))
            .unwrap_or_default();
        print_load_row(&format!("{title}, c={}{rate}", s["concurrency"]), s);
        if key != "part" {
            println!(
                "  {} users seeded in {} s; errors {}; starved {}",
                s["users"],
                f(&s["seed_secs"]),
                s["errors"],
                s["starved"]
            );
        } else if s["errors"] != 0 || s["starved"] != 0 {
            println!("  errors {}; starved {}", s["errors"], s["starved"]);
        }
        if let Some(e) = s["first_error"].as_str() {
            println!("  first error: {e}");
        }
        if key == "signin" {
            println!(
                "  = {:.1}% of the Argon2 bound ({} /s), {:.1}% of measured parallel Argon2 ({} /s)",
                s["fraction_of_bound"].as_f64().unwrap_or(0.0) * 100.0,
                f(&s["argon2_bound_per_sec"]),
                s["fraction_of_measured_parallel"].as_f64().unwrap_or(0.0) * 100.0,
                f(&s["argon2_measured_parallel_per_sec"]),
            );
        }
    }
    http::print_summary(v);
}
