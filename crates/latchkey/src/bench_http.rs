//! `latchkey bench --scenario http`: sign-in as its users feel it, next to
//! what the same machine does in process.
//!
//! The server is a separate process: the bench starts `latchkey serve` as a
//! child on 127.0.0.1 (a port the system picks), over a scratch database it
//! seeded itself, and drives it over loopback HTTP with one keep-alive client
//! from its own runtime. In order:
//!
//! ```text
//! Argon2 bound ─▶ scratch database, three seeded populations
//!   ─▶ App::check_totp in process ─▶ flows prepared (password step done)
//!   ─▶ bench's database handle closed ─▶ `latchkey serve` started
//!   ─▶ second step alone over HTTP ─▶ full sign-in over HTTP ─▶ server stopped
//! ```
//!
//! - **Second step alone**: `POST /api/v1/signin/{flow}/verify` with a TOTP
//!   code, on flows whose password step was done before the run, so only the
//!   second step is timed. The run ends after `--duration-secs` or when the
//!   `--flows` prepared flows are used up, whichever comes first.
//! - **Full sign-in**: `POST /api/v1/signin` with the password, then the
//!   verify, for `--duration-secs`.
//!
//! The figures are set against two aims: the second step reaches 40 % of the
//! in-process check_totp rate with p99 under 20 ms, and full sign-ins reach
//! 90 % of the Argon2 bound (Argon2id verifications per second with the
//! configured parameters, one thread per core). PASS/MISS is informational.
//!
//! The server gets the scratch data directory (`secret.key`, written here,
//! and the SQLite file) or `LATCHKEY_DATABASE_URL` in its environment, and
//! nothing else of the caller's `LATCHKEY_*` settings. It stops when its
//! standard input closes (`--stop-on-stdin-close`), which also happens if
//! the bench dies.

use std::net::SocketAddr;
use std::process::Stdio;

use latchkey_service::app::SignInContext;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::*;

/// Argon2id parameters of the users whose flows are prepared before the
/// second-step run: their password step is not timed, so it need not cost
/// 19 MiB and two passes each (these are the smallest argon2 accepts). The
/// service that prepares them is configured with the same parameters, so it
/// does not rehash.
const PREP_PASSWORD: PasswordParams = PasswordParams {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

/// Second step ÷ in-process check_totp, at least.
const AIM_SECOND_STEP_FRACTION: f64 = 0.40;
/// Second step p99, below.
const AIM_SECOND_STEP_P99_MS: f64 = 20.0;
/// Full sign-ins ÷ Argon2 bound, at least.
const AIM_FULL_FRACTION: f64 = 0.90;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the scenario into `out`. Returns how many requests failed (the
/// caller prints the figures first, then fails the command if any did).
pub(super) async fn run(database_url: Option<&str>, args: &BenchArgs, cores: usize, out: &mut Value) -> Result<u64> {
    if args.flows == 0 {
        bail!("--flows must be at least 1");
    }
    let phase = (Duration::from_secs(args.duration_secs) / 2).clamp(Duration::from_secs(1), Duration::from_secs(3));
    eprintln!(
        "http: Argon2 bound: verifying for {:.1} s on 1 thread, then on {cores}",
        phase.as_secs_f64()
    );
    let argon2 = tokio::task::spawn_blocking(move || argon2_bench(phase, cores, 0)).await??;
    out["argon2"] = argon2.to_json();

    let scratch = Scratch::open(database_url, args.allow_existing).await?;
    let result = measure(&scratch, database_url, args, &argon2, out).await;
    scratch.store.close().await;
    result
}

async fn measure(
    scratch: &Scratch,
    database_url: Option<&str>,
    args: &BenchArgs,
    argon2: &Argon2Result,
    out: &mut Value,
) -> Result<u64> {
    let bound = argon2.bound_measured();
    let fx = scratch.fixture();
    let app = scratch.app(Config::default())?;
    let prep_app = scratch.app(Config {
        password: PREP_PASSWORD,
        ..Config::default()
    })?;

    let n_check = totp_users_needed(args, None);
    let n_full = signin_users_needed(args, bound);
    eprintln!(
        "http: seeding {n_check} users for check_totp, {} with prepared flows and {n_full} for full sign-ins ({})",
        args.flows, scratch.backend
    );
    let t = Instant::now();
    let p = &scratch.prefix;
    let check_users = Arc::new(seed_totp_users(&app, &fx, &format!("{p}c"), n_check, None).await?);
    let prep_phc = PREP_PASSWORD.hash(PASSWORD)?;
    let flow_users = seed_totp_users(&app, &fx, &format!("{p}f"), args.flows, Some(&prep_phc)).await?;
    // One real hash with the configured parameters, shared: each sign-in
    // still verifies it in full.
    let full_phc = Config::default().password.hash(PASSWORD)?;
    let full_users = seed_totp_users(&app, &fx, &format!("{p}s"), n_full, Some(&full_phc)).await?;
    let seed_secs = t.elapsed().as_secs_f64();

    eprintln!(
        "http: seeded in {seed_secs:.1} s; App::check_totp in process with {} tasks for {} s",
        args.concurrency, args.duration_secs
    );
    let pool = Arc::new(CodePool::new(&check_users));
    let check = totp_bench(&app, check_users, pool, None, args).await?;
    let mut v = check.to_json();
    v["users"] = json!(n_check);
    v["seed_secs"] = json!(round(seed_secs, 2));
    out["totp"] = v;

    eprintln!("http: preparing {} sign-in flows (password step)", args.flows);
    let t = Instant::now();
    let flows = prepare_flows(&prep_app, &flow_users).await?;
    let prep_secs = t.elapsed().as_secs_f64();

    // The server is the only one using the database from here on.
    scratch.store.close().await;
    write_secret_key(&scratch.temp.0, &scratch.master)?;
    let server = ChildServer::start(&scratch.temp.0, database_url).await?;
    eprintln!(
        "http: server pid {} at {}; second step alone with {} clients for up to {} s",
        server.pid, server.base_url, args.concurrency, args.duration_secs
    );
    let runs = async {
        let second = second_step_bench(&server.base_url, flow_users, flows, args).await?;
        eprintln!(
            "http: full sign-in with {} clients for {} s",
            args.concurrency, args.duration_secs
        );
        let full = signin_bench(&server.base_url, full_users, args).await?;
        anyhow::Ok((second, full))
    }
    .await;
    let base_url = server.base_url.clone();
    let stopped = server.stop().await;
    let (second, full) = runs?;
    stopped?;

    let second_fraction = second.rate() / check.rate().max(f64::MIN_POSITIVE);
    let second_p99_ms = second.to_json()["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
    let full_fraction = full.rate() / bound;
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let mut second_json = second.to_json();
    second_json["flows_prepared"] = json!(args.flows);
    second_json["flow_prepare_secs"] = json!(round(prep_secs, 2));
    second_json["ended_by"] = json!(if second.ran_dry { "flows used up" } else { "duration" });
    let mut full_json = full.to_json();
    full_json["users"] = json!(n_full);
    out["http"] = json!({
        "server": {
            "process": "child (latchkey serve --stop-on-stdin-close)",
            "base_url": base_url,
        },
        "second_step": second_json,
        "full_signin": full_json,
        "check_totp_in_process_per_sec": round(check.rate(), 1),
        "argon2_bound_per_sec": round(bound, 1),
        "aims": {
            "second_step_vs_check_totp": {
                "fraction": round(second_fraction, 3),
                "aim_fraction": AIM_SECOND_STEP_FRACTION,
                "p99_ms": second_p99_ms,
                "aim_p99_ms_below": AIM_SECOND_STEP_P99_MS,
                "result": verdict(second_fraction >= AIM_SECOND_STEP_FRACTION && second_p99_ms < AIM_SECOND_STEP_P99_MS),
            },
            "full_signin_vs_argon2_bound": {
                "fraction": round(full_fraction, 3),
                "aim_fraction": AIM_FULL_FRACTION,
                "result": verdict(full_fraction >= AIM_FULL_FRACTION),
            },
        },
    });
    Ok(check.errors + second.errors + full.errors)
}

/// Password step of one sign-in per user, through the service as the API
/// would call it (same context: a caller on loopback). Returns (user, flow id).
async fn prepare_flows(app: &Arc<App>, users: &[BenchUser]) -> Result<Vec<(usize, String)>> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let names: Arc<Vec<String>> = Arc::new(users.iter().map(|u| u.user.username.clone()).collect());
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (app, names) = (app.clone(), names.clone());
        set.spawn(async move {
            let ctx = SignInContext {
                source_ip: Some("127.0.0.1".into()),
                ..Default::default()
            };
            let mut mine = Vec::new();
            for i in (w..names.len()).step_by(workers) {
                let f = app
                    .signin_start(&names[i], Some(PASSWORD), &ctx)
                    .await
                    .with_context(|| format!("password step for {}", names[i]))?;
                if f.state != "second_factor_required" {
                    bail!("password step for {} left the flow in state {}", names[i], f.state);
                }
                mine.push((i, f.flow_id));
            }
            anyhow::Ok(mine)
        });
    }
    let mut flows = Vec::with_capacity(users.len());
    while let Some(r) = set.join_next().await {
        flows.extend(r??);
    }
    Ok(flows)
}

/// The verify request alone, one prepared flow each, until the flows or the
/// time run out.
async fn second_step_bench(
    base_url: &str,
    users: Vec<BenchUser>,
    flows: Vec<(usize, String)>,
    args: &BenchArgs,
) -> Result<LoadResult> {
    let client = http_client(args.concurrency)?;
    let pool = Arc::new(CodePool::new(&users));
    let users = Arc::new(users);
    let queue = Arc::new(Mutex::new(VecDeque::from(flows)));
    let base = Arc::new(base_url.to_owned());
    Ok(drive(
        args.concurrency,
        Duration::from_secs(args.warmup_secs),
        Duration::from_secs(args.duration_secs),
        None,
        true,
        move || {
            let (client, pool, users, queue, base) =
                (client.clone(), pool.clone(), users.clone(), queue.clone(), base.clone());
            async move {
                let Some((i, flow)) = queue.lock().expect("flow queue").pop_front() else {
                    return Ok(None);
                };
                // Each user has one flow: its first code, of the current step.
                let code = pool.claim_code(i, &users[i].secret, unix_secs(), 0);
                let url = format!("{base}/api/v1/signin/{flow}/verify");
                let body = json!({ "method": "totp", "code": code });
                let t0 = Instant::now();
                let v = post_json(&client, &url, body).await?;
                let dt = t0.elapsed();
                if v["state"] != "complete" || v["session_token"].as_str().is_none() {
                    bail!("second step answered {v}");
                }
                Ok(Some(dt))
            }
        },
    )
    .await)
}

/// `secret.key` in the scratch directory, which `latchkey serve` reads:
/// the same master key the bench sealed the seeds with.
fn write_secret_key(dir: &Path, master: &[u8; 32]) -> Result<()> {
    use std::io::Write;
    let path = dir.join("secret.key");
    let hex: String = master.iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(&path)
        .and_then(|mut f| f.write_all(hex.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

/// `latchkey serve` in a child process on 127.0.0.1.
struct ChildServer {
    child: tokio::process::Child,
    /// Closing it stops the server.
    stdin: Option<tokio::process::ChildStdin>,
    pid: u32,
    base_url: String,
    log: PathBuf,
}

impl ChildServer {
    async fn start(data: &Path, database_url: Option<&str>) -> Result<ChildServer> {
        let exe = std::env::current_exe().context("locating the latchkey binary")?;
        let log = data.join("server.log");
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(exe);
        // Its settings come from here alone, not from this shell's LATCHKEY_*.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LATCHKEY_") {
                cmd.env_remove(&k);
            }
        }
        if let Some(url) = database_url {
            // In the environment rather than in the arguments, which `ps` shows.
            cmd.env("LATCHKEY_DATABASE_URL", url);
        }
        let p = Config::default().password;
        cmd.arg("--data")
            .arg(data)
            .arg("--argon2-memory-kib")
            .arg(p.memory_kib.to_string())
            .arg("--argon2-iterations")
            .arg(p.iterations.to_string())
            .args(["serve", "--listen", "127.0.0.1:0", "--stop-on-stdin-close"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting latchkey serve")?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout from the server"))?;
        let mut lines = BufReader::new(stdout).lines();
        let announced = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("Latchkey listening on http://") {
                    return Ok(Some(addr.trim().to_owned()));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let mut server = ChildServer {
            child,
            stdin,
            pid,
            base_url: String::new(),
            log,
        };
        let addr = match announced {
            Ok(Ok(Some(a))) => a,
            Ok(Ok(None)) => bail!("the server exited before listening:\n{}", server.log_tail()),
            Ok(Err(e)) => bail!("reading the server's output: {e}"),
            Err(_) => {
                let tail = server.log_tail();
                server.kill().await;
                bail!("the server did not listen within {START_TIMEOUT:?}:\n{tail}")
            }
        };
        let addr: SocketAddr = addr.parse().with_context(|| format!("server address {addr}"))?;
        if !addr.ip().is_loopback() {
            server.kill().await;
            bail!("the server listens on {addr}, not on loopback");
        }
        server.base_url = format!("http://{addr}");
        // Keep reading, so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(server)
    }

    /// Close its standard input and wait for it to exit.
    async fn stop(mut self) -> Result<()> {
        drop(self.stdin.take());
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!("the server exited with {status}:\n{}", self.log_tail()),
            Ok(Err(e)) => Err(e).context("waiting for the server"),
            Err(_) => {
                self.kill().await;
                bail!("the server did not stop within {STOP_TIMEOUT:?}; killed it")
            }
        }
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// The last lines the server logged (its log goes with the scratch directory).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// The table's lines for this scenario (after argon2 and check_totp).
pub(super) fn print_summary(v: &Value) {
    let h = &v["http"];
    if !h.is_object() {
        return;
    }
    let f = fmt2;
    for (title, s) in [
        ("HTTP second step alone", &h["second_step"]),
        ("HTTP full sign-in", &h["full_signin"]),
    ] {
        print_load_row(&format!("{title}, c={}", s["concurrency"]), s);
        println!(
            "  p95 {} ms; errors {}; starved {}",
            f(&s["p95_ms"]),
            s["errors"],
            s["starved"]
        );
        if let Some(e) = s["first_error"].as_str() {
            println!("  first error: {e}");
        }
    }
    let s = &h["second_step"];
    println!(
        "  second step: {} flows prepared in {} s, run ended by {}",
        s["flows_prepared"],
        f(&s["flow_prepare_secs"]),
        s["ended_by"].as_str().unwrap_or("-")
    );
    let a = &h["aims"]["second_step_vs_check_totp"];
    println!(
        "second step / in-process check_totp ({} /s) = {:.1} % (aim >= {:.0} %), p99 {} ms (aim < {} ms): {}",
        f(&h["check_totp_in_process_per_sec"]),
        a["fraction"].as_f64().unwrap_or(0.0) * 100.0,
        AIM_SECOND_STEP_FRACTION * 100.0,
        f(&a["p99_ms"]),
        AIM_SECOND_STEP_P99_MS,
        a["result"].as_str().unwrap_or("-")
    );
    let a = &h["aims"]["full_signin_vs_argon2_bound"];
    println!(
        "full sign-in / Argon2 bound ({} /s) = {:.1} % (aim >= {:.0} %): {}",
        f(&h["argon2_bound_per_sec"]),
        a["fraction"].as_f64().unwrap_or(0.0) * 100.0,
        AIM_FULL_FRACTION * 100.0,
        a["result"].as_str().unwrap_or("-")
    );
}
