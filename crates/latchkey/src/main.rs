//! `latchkey`: the server and its command-line administration.
//!
//! Admin commands work directly on the data directory (or `--database-url`)
//! as the local operator: whoever can read the key file is the operator.

mod bench;
mod bench_report;
mod federation;
mod helpdesk;
mod ops_bench;
mod ops_cmd;
mod policy_cmd;
mod push_cmd;
mod report_cmd;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use latchkey_service::app::{App, Config, Principal};
use latchkey_service::clock::SystemClock;
use serde_json::json;

#[derive(Parser)]
#[command(name = "latchkey", version, about = "Self-hosted MFA server")]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct DbArgs {
    /// Data directory: the SQLite database and the secret key file.
    #[arg(long, global = true, env = "LATCHKEY_DATA", default_value = "./latchkey-data")]
    data: PathBuf,
    /// Use PostgreSQL (postgres://...) instead of the embedded SQLite.
    #[arg(long, global = true, env = "LATCHKEY_DATABASE_URL")]
    database_url: Option<String>,
    /// Argon2id memory cost in KiB (OWASP default 19456).
    #[arg(long, global = true, env = "LATCHKEY_ARGON2_MEMORY_KIB", default_value_t = 19456)]
    argon2_memory_kib: u32,
    /// Argon2id iterations (OWASP default 2).
    #[arg(long, global = true, env = "LATCHKEY_ARGON2_ITERATIONS", default_value_t = 2)]
    argon2_iterations: u32,
    /// Shortest Temporary Access Pass lifetime an agent may choose, in minutes.
    #[arg(long, global = true, env = "LATCHKEY_TAP_MIN_MINUTES", default_value_t = 60)]
    tap_min_minutes: i64,
    /// Longest Temporary Access Pass lifetime, in minutes (the guide: 1-8 h).
    #[arg(long, global = true, env = "LATCHKEY_TAP_MAX_MINUTES", default_value_t = 480)]
    tap_max_minutes: i64,
    /// Lifetime when none is given, in minutes.
    #[arg(long, global = true, env = "LATCHKEY_TAP_DEFAULT_MINUTES", default_value_t = 60)]
    tap_default_minutes: i64,
    /// Longest pass for a lost-phone helpdesk case, in minutes (the guide: 1-4 h).
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_TAP_LOST_PHONE_MAX_MINUTES",
        default_value_t = 240
    )]
    tap_lost_phone_max_minutes: i64,
    /// Longest pass for a planned-phone-change case, in minutes.
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_TAP_PLANNED_PHONE_CHANGE_MAX_MINUTES",
        default_value_t = 240
    )]
    tap_planned_phone_change_max_minutes: i64,
    /// Longest pass for a new-employee case, in minutes (the guide: up to 8 h).
    #[arg(
        long,
        global = true,
        env = "LATCHKEY_TAP_NEW_EMPLOYEE_MAX_MINUTES",
        default_value_t = 480
    )]
    tap_new_employee_max_minutes: i64,
    /// Allow multi-use passes (for onboarding several devices).
    #[arg(long, global = true, env = "LATCHKEY_TAP_ALLOW_MULTI_USE")]
    tap_allow_multi_use: bool,
    /// Days a deleted account's username stays taken by its tombstone.
    #[arg(long, global = true, env = "LATCHKEY_DELETED_USERNAME_HOLD_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(i64).range(0..=36500))]
    deleted_username_hold_days: i64,
    /// Folder for backups made through the API or the console (default: <data>/backups).
    #[arg(long, global = true, env = "LATCHKEY_BACKUP_DIR")]
    backup_dir: Option<PathBuf>,
    #[command(flatten)]
    ops: ops_cmd::OpsArgs,
    #[command(flatten)]
    push: push_cmd::PushSmsArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server. On an empty database, creates the first administrator
    /// and prints a one-time bootstrap pass.
    Serve {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, env = "LATCHKEY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Public base URL (for printed links), if not http://<listen>.
        #[arg(long, env = "LATCHKEY_PUBLIC_URL")]
        public_url: Option<String>,
        /// Exit when standard input closes (for supervisors and tests).
        #[arg(long)]
        stop_on_stdin_close: bool,
        #[command(flatten)]
        web: WebArgs,
        #[command(flatten)]
        limits: ConnArgs,
        /// Also serve RADIUS (UDP) on this address, e.g. 127.0.0.1:1812.
        #[arg(long, env = "LATCHKEY_RADIUS_LISTEN")]
        radius_listen: Option<String>,
        #[command(flatten)]
        checkpoints: CheckpointArgs,
    },
    /// OpenID Connect provider: clients and signing keys.
    Oidc {
        #[command(subcommand)]
        cmd: federation::OidcCmd,
    },
    /// RADIUS server: NAS clients.
    Radius {
        #[command(subcommand)]
        cmd: federation::RadiusCmd,
    },
    /// Administration.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Users.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Authentication methods.
    Method {
        #[command(subcommand)]
        cmd: MethodCmd,
    },
    /// The audit chain.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Check the deployment's own state for what weakens its rules (fewer
    /// than two administrators, admin tokens without an owner, a broken
    /// audit chain). Exit 1 on an error, 0 otherwise (warnings included).
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Recovery runbooks and Temporary Access Passes.
    Helpdesk {
        #[command(subcommand)]
        cmd: helpdesk::HelpdeskCmd,
    },
    /// Devices and their lifecycle.
    Device {
        #[command(subcommand)]
        cmd: helpdesk::DeviceCmd,
    },
    /// Conditional access: what-if, check (bootstrap-path analyzer), replay, export/import.
    Policy {
        #[command(subcommand)]
        cmd: policy_cmd::PolicyCmd,
    },
    /// Reports: `report evidence` for auditors and insurers.
    Report {
        #[command(subcommand)]
        cmd: report_cmd::ReportCmd,
    },
    /// The sign-in log, newest first (filters: --user --app --result --from --to).
    Signins(ops_cmd::SigninsArgs),
    /// Alerts raised by detections: list, acknowledge, resolve, run detections now.
    Alerts {
        #[command(subcommand)]
        cmd: ops_cmd::AlertsCmd,
    },
    /// A consistent copy of the SQLite database, taken while the server
    /// serves; its name carries the audit head it holds. The key file is
    /// not in it: back that up separately. (PostgreSQL: pg_dump, see README.)
    Backup {
        /// A folder (a name is chosen), or a file name the audit head is added to.
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into an empty data folder (holding only the key
    /// file): verifies the audit chain up to the backup's head and records
    /// a `restored` event naming what was lost.
    Restore {
        /// The backup file (from `latchkey backup`).
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Measure sign-in and TOTP throughput (see docs/performance.md).
    Bench(bench::BenchArgs),
}

/// How browsers reach the server: TLS, or a reverse proxy in front.
#[derive(Args, Clone, Default)]
struct WebArgs {
    /// Serve https with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "LATCHKEY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "LATCHKEY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A reverse proxy (address or CIDR) whose X-Forwarded-For/-Proto are believed; repeatable.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_cidr)]
    trusted_proxies: Vec<ipnet::IpNet>,
}

/// Connection caps and timeouts: one client must not exhaust the server.
#[derive(Args, Clone)]
struct ConnArgs {
    /// Open connections at once, from everybody (lowered to fit the open-files limit).
    #[arg(long, env = "LATCHKEY_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Open connections at once from one client address (IPv6: one /64); --trusted-proxy peers are exempt.
    #[arg(long, env = "LATCHKEY_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_address: u32,
    /// Seconds a new connection has for its TLS handshake and request head (and HTTP/1.1 between requests).
    #[arg(long, env = "LATCHKEY_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout_secs: u64,
    /// Seconds a connection may stay open with nothing sent either way and no request in flight.
    #[arg(long, env = "LATCHKEY_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    idle_timeout_secs: u64,
}

impl ConnArgs {
    fn limits(&self) -> latchkey_http::ConnLimits {
        latchkey_http::ConnLimits {
            max_connections: self.max_connections as usize,
            max_per_address: self.max_connections_per_address as usize,
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
        }
    }
}

/// Raise the soft open-files limit to the hard one (every connection, and
/// the database, needs a descriptor); returns the limit now in force.
#[cfg(unix)]
fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        } else {
            tracing::warn!(
                soft = lim.rlim_cur,
                hard = lim.rlim_max,
                "could not raise the open-files limit to its hard limit"
            );
        }
    }
    #[allow(clippy::useless_conversion)] // rlim_t is u64 on most targets, not all
    Some(u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX))
}

#[cfg(not(unix))]
fn raise_open_files_limit() -> Option<u64> {
    None
}

fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{s}' is not an IP address or CIDR range (e.g. 10.0.0.0/8)"))
}

#[derive(Args)]
struct CheckpointArgs {
    /// Append a signed checkpoint of the audit chain's head to this file
    /// (outside the data folder; best on another host or an append-only
    /// mount) at start and every --audit-checkpoint-interval seconds.
    #[arg(long, env = "LATCHKEY_AUDIT_CHECKPOINT_FILE")]
    audit_checkpoint_file: Option<PathBuf>,
    #[arg(long, env = "LATCHKEY_AUDIT_CHECKPOINT_INTERVAL", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    audit_checkpoint_interval: u64,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// API tokens for automation.
    ApiToken {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token (admin-scoped unless --scope says otherwise) and print it (shown once).
    Create {
        #[arg(long)]
        name: String,
        /// admin (default), mdm (device compliance updates only) or
        /// relying_party (an application signing its users in: may pass the
        /// end user's address and vouch for their device); repeatable.
        #[arg(long = "scope", default_value = "admin")]
        scopes: Vec<String>,
        /// The person the token acts for (an active administrator for an
        /// admin-scoped token). Without one the token works but approves
        /// nothing, and the audit log names no person behind it.
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user.
    Add {
        username: String,
        #[arg(long)]
        display_name: String,
        #[arg(long)]
        department: Option<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
        /// admin, helpdesk, security_admin, auditor
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        username: String,
        #[arg(long)]
        json: bool,
    },
    /// Change display name, department, groups or roles (given lists replace the old ones).
    Update {
        username: String,
        #[arg(long)]
        display_name: Option<String>,
        /// An empty value clears the department.
        #[arg(long)]
        department: Option<String>,
        /// Replace the groups (repeat the flag; --no-groups clears them).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long, conflicts_with = "groups")]
        no_groups: bool,
        /// Replace the roles (repeat the flag; --no-roles clears them).
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long, conflicts_with = "roles")]
        no_roles: bool,
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: sign-ins are refused and its sessions, grants,
    /// passes, push prompts and API tokens are revoked at once.
    Disable {
        username: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Enable a disabled account (nothing revoked comes back).
    Enable { username: String },
    /// Delete an account: access revoked, password and methods removed; the
    /// account stays as a tombstone and its username is held for a while.
    Delete {
        username: String,
        #[arg(long)]
        reason: String,
        /// Required: deletion cannot be undone.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Set a password, read from standard input (one line).
    SetPassword { username: String },
    /// Clear a sign-in lockout.
    Unlock { username: String },
    /// What changed for a user: methods, passes, exceptions, policy changes.
    Timeline {
        username: String,
        #[arg(long, default_value_t = 500)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MethodCmd {
    List {
        username: String,
        #[arg(long)]
        json: bool,
    },
    Remove {
        username: String,
        id: String,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Recompute the hash chain; exits 1 and names the first broken link if it was altered.
    /// With --checkpoints, also checks the chain against signed checkpoints of its head:
    /// exits 2 when a checkpoint no longer matches (a rewritten or truncated chain).
    Verify {
        #[arg(long)]
        json: bool,
        /// A checkpoint file written by `serve --audit-checkpoint-file` or `audit checkpoint`.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
    /// Append a signed checkpoint of the head to FILE now (e.g. from cron).
    Checkpoint {
        #[arg(long)]
        file: PathBuf,
    },
    List {
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

impl DbArgs {
    fn config(&self) -> Config {
        let mut c = Config::default();
        c.password.memory_kib = self.argon2_memory_kib;
        c.password.iterations = self.argon2_iterations;
        c.tap.min_minutes = self.tap_min_minutes;
        c.tap.max_minutes = self.tap_max_minutes;
        c.tap.default_minutes = self.tap_default_minutes;
        c.tap.allow_multi_use = self.tap_allow_multi_use;
        c.tap.lost_phone_max_minutes = self.tap_lost_phone_max_minutes;
        c.tap.planned_phone_change_max_minutes = self.tap_planned_phone_change_max_minutes;
        c.tap.new_employee_max_minutes = self.tap_new_employee_max_minutes;
        c.deleted_username_hold_days = self.deleted_username_hold_days;
        self.ops.apply(&mut c);
        self.push.apply(&mut c, &self.data);
        c.backup_dir = Some(self.backup_dir.clone().unwrap_or_else(|| self.data.join("backups")));
        c
    }

    async fn app(&self, config: Config) -> Result<Arc<App>> {
        config.tap.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        let app = App::open(&self.data, self.database_url.as_deref(), config, Arc::new(SystemClock))
            .await
            // The operator needs the detail an API client must not see
            // (e.g. which key file has the wrong mode and how to fix it).
            .map_err(|e| match e {
                latchkey_service::ServiceError::Internal(detail) => anyhow::anyhow!(detail),
                other => other.into(),
            })
            .with_context(|| match &self.database_url {
                Some(_) => "connecting to the database".to_owned(),
                None => format!("opening {}", self.data.display()),
            })?;
        Ok(Arc::new(app))
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(run(cli));
    // Work is done; a blocking read still waiting on standard input
    // (`serve --stop-on-stdin-close` stopped by SIGTERM) must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let op = Principal::Operator;
    match cli.cmd {
        Cmd::Serve {
            listen,
            public_url,
            stop_on_stdin_close,
            web,
            limits,
            radius_listen,
            checkpoints,
        } => {
            serve(
                &cli.db,
                &listen,
                public_url,
                stop_on_stdin_close,
                web,
                limits,
                radius_listen,
                checkpoints,
            )
            .await
        }
        Cmd::Helpdesk { cmd } => helpdesk::run(&*cli.db.app(cli.db.config()).await?, cmd).await,
        Cmd::Device { cmd } => helpdesk::run_device(&*cli.db.app(cli.db.config()).await?, cmd).await,
        Cmd::Oidc { cmd } => federation::oidc(&*cli.db.app(cli.db.config()).await?, cmd).await,
        Cmd::Radius { cmd } => federation::radius(&*cli.db.app(cli.db.config()).await?, cmd).await,
        Cmd::Signins(a) => ops_cmd::signins(&*cli.db.app(cli.db.config()).await?, a).await,
        Cmd::Alerts { cmd } => ops_cmd::alerts(&*cli.db.app(cli.db.config()).await?, cmd).await,
        Cmd::Backup { out, json } => {
            if cli.db.database_url.is_some() {
                bail!("`latchkey backup` copies the embedded SQLite database; back PostgreSQL up with pg_dump (see README, \"Backup and restore\")");
            }
            let app = cli.db.app(cli.db.config()).await?;
            let b = app.backup(&op, &out).await?;
            if json {
                print_json(&b)?;
            } else {
                println!(
                    "backup written: {} ({} bytes, audit head seq {})",
                    b.file.display(),
                    b.bytes,
                    b.audit_head_seq
                );
                println!("{}", b.key_file);
            }
            Ok(())
        }
        Cmd::Restore { file, json } => {
            if cli.db.database_url.is_some() {
                bail!("`latchkey restore` restores SQLite backups; restore PostgreSQL with pg_restore (see README)");
            }
            let r = latchkey_service::backup::restore(&file, &cli.db.data, cli.db.config(), Arc::new(SystemClock))
                .await
                .with_context(|| format!("restoring {} into {}", file.display(), cli.db.data.display()))?;
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "restored into {}: audit chain verified up to seq {} ({})",
                    cli.db.data.display(),
                    r.audit_head_seq,
                    r.audit_head_hash
                );
                println!(
                    "lost: every change after seq {} (from {} until {}); recorded as audit event {}",
                    r.lost_after_seq, r.lost_from, r.lost_until, r.event_seq
                );
            }
            Ok(())
        }
        Cmd::Openapi => {
            println!("{}", latchkey_http::api::openapi_json());
            Ok(())
        }
        Cmd::Policy { cmd } => {
            let app = cli.db.app(cli.db.config()).await?;
            policy_cmd::run(&app, cmd).await
        }
        Cmd::Report { cmd } => report_cmd::run(&*cli.db.app(cli.db.config()).await?, cmd).await,
        Cmd::Bench(args) => bench::run(&cli.db.data, cli.db.database_url.as_deref(), args).await,
        Cmd::Admin {
            cmd: AdminCmd::ApiToken { cmd },
        } => {
            let app = cli.db.app(cli.db.config()).await?;
            match cmd {
                TokenCmd::Create {
                    name,
                    scopes,
                    owner,
                    json,
                } => {
                    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
                    let (rec, token) = app
                        .create_scoped_api_token(&op, &name, &scopes, owner.as_deref())
                        .await?;
                    if rec.owner.is_none() {
                        eprintln!("note: this token has no owner (--owner USERNAME): it approves no change request");
                    }
                    if json {
                        print_json(
                            &json!({ "id": rec.id, "name": rec.name, "token": token, "scopes": rec.scopes, "owner": rec.owner }),
                        )?;
                    } else {
                        eprintln!(
                            "API token '{}' created (id {}). It is shown once; store it now:",
                            rec.name, rec.id
                        );
                        println!("{token}");
                    }
                }
                TokenCmd::List { json } => {
                    let tokens = app.list_api_tokens(&op).await?;
                    if json {
                        let v: Vec<_> = tokens
                            .iter()
                            .map(|(t, c, r)| json!({ "id": t.id, "name": t.name, "scopes": t.scopes, "created_by": t.created_by, "owner": t.owner, "created_at": c, "revoked_at": r }))
                            .collect();
                        print_json(&v)?;
                    } else {
                        for (t, _, r) in tokens {
                            println!(
                                "{}  {:<24} {:<8} owner {}",
                                t.id,
                                t.name,
                                if r.is_some() { "revoked" } else { "active" },
                                t.owner.as_deref().unwrap_or("-")
                            );
                        }
                    }
                }
                TokenCmd::Revoke { id } => {
                    app.revoke_api_token(&op, &id).await?;
                    println!("revoked {id}");
                }
            }
            Ok(())
        }
        Cmd::User { cmd } => {
            let app = cli.db.app(cli.db.config()).await?;
            match cmd {
                UserCmd::Add {
                    username,
                    display_name,
                    department,
                    groups,
                    roles,
                    json,
                } => {
                    let u = app
                        .create_user(&op, &username, &display_name, department, groups, roles)
                        .await?;
                    if json {
                        print_json(&user_json(&u))?;
                    } else {
                        println!("created user {} ({})", u.username, u.id);
                    }
                }
                UserCmd::Update {
                    username,
                    display_name,
                    department,
                    groups,
                    no_groups,
                    roles,
                    no_roles,
                    json,
                } => {
                    let list = |v: Vec<String>, clear: bool| (clear || !v.is_empty()).then_some(v);
                    let change = latchkey_service::users::UserChange {
                        display_name,
                        department,
                        groups: list(groups, no_groups),
                        roles: list(roles, no_roles),
                        // The local operator grants roles without a second
                        // person (it holds the master key; see the threat model).
                        approval: None,
                    };
                    let u = app.update_user(&op, &username, change).await?;
                    if json {
                        print_json(&user_json(&u))?;
                    } else {
                        println!("updated user {}", u.username);
                    }
                }
                UserCmd::List { json } => {
                    let users = app.list_users(&op).await?;
                    if json {
                        print_json(&users.iter().map(user_json).collect::<Vec<_>>())?;
                    } else {
                        println!("{:<24} {:<28} {:<16} ROLES", "USERNAME", "DISPLAY NAME", "DEPARTMENT");
                        for u in users {
                            let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
                            println!(
                                "{:<24} {:<28} {:<16} {}",
                                u.username,
                                u.display_name,
                                u.department.as_deref().unwrap_or("-"),
                                roles.join(",")
                            );
                        }
                    }
                }
                UserCmd::Show { username, json } => {
                    let u = app.get_user(&op, &username).await?;
                    if json {
                        print_json(&user_json(&u))?;
                    } else {
                        let v = user_json(&u);
                        for (k, val) in v.as_object().expect("object") {
                            println!("{k:<14} {val}");
                        }
                    }
                }
                UserCmd::SetPassword { username } => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    let pw = line.trim_end_matches(['\r', '\n']);
                    if pw.is_empty() {
                        bail!("no password on standard input");
                    }
                    app.set_password(&op, &username, pw, None).await?;
                    println!("password set for {username}");
                }
                UserCmd::Disable { username, reason, json } => {
                    let (u, revoked) = app.disable_user(&op, &username, &reason).await?;
                    if json {
                        print_json(&json!({ "user": user_json(&u), "revoked": revoked }))?;
                    } else {
                        println!(
                            "disabled {}: ended {} session(s), {} OpenID Connect grant(s), {} sign-in(s) in progress, \
                             {} pass(es), {} push prompt(s), {} API token(s)",
                            u.username,
                            revoked.sessions,
                            revoked.oidc_grants,
                            revoked.signin_flows,
                            revoked.passes,
                            revoked.push_prompts,
                            revoked.api_tokens
                        );
                    }
                }
                UserCmd::Enable { username } => {
                    let u = app.enable_user(&op, &username).await?;
                    println!("enabled {}", u.username);
                }
                UserCmd::Delete {
                    username,
                    reason,
                    yes,
                    json,
                } => {
                    if !yes {
                        bail!("deleting '{username}' cannot be undone; add --yes to go ahead (or disable the account instead)");
                    }
                    let (u, revoked) = app.delete_user(&op, &username, &reason).await?;
                    if json {
                        print_json(&json!({ "user": user_json(&u), "revoked": revoked }))?;
                    } else {
                        println!(
                            "deleted {} (a tombstone keeps the name for {} days); ended {} session(s)",
                            u.username, app.config.deleted_username_hold_days, revoked.sessions
                        );
                    }
                }
                UserCmd::Timeline { username, limit, json } => {
                    ops_cmd::timeline(&app, &username, limit, json).await?;
                }
                UserCmd::Unlock { username } => {
                    app.clear_lockout(&op, &username).await?;
                    println!("lockout cleared for {username}");
                }
            }
            Ok(())
        }
        Cmd::Method { cmd } => {
            let app = cli.db.app(cli.db.config()).await?;
            match cmd {
                MethodCmd::List { username, json } => {
                    let (_, methods) = app.methods(&op, &username).await?;
                    if json {
                        let v: Vec<_> = methods
                            .iter()
                            .map(|m| json!({ "id": m.id, "kind": m.kind.as_str(), "label": m.label, "state": m.state, "registered_at": m.registered_at, "last_used_at": m.last_used_at }))
                            .collect();
                        print_json(&v)?;
                    } else if methods.is_empty() {
                        println!("{username} has no registered methods");
                    } else {
                        println!("{:<38} {:<16} {:<8} LABEL", "ID", "KIND", "STATE");
                        for m in methods {
                            let state = if m.state == latchkey_core::MethodState::Active {
                                "active"
                            } else {
                                "pending"
                            };
                            println!("{:<38} {:<16} {:<8} {}", m.id, m.kind.as_str(), state, m.label);
                        }
                    }
                }
                MethodCmd::Remove { username, id } => {
                    app.delete_method(&op, &username, &id, None).await?;
                    println!("removed method {id} from {username}");
                }
            }
            Ok(())
        }
        Cmd::Doctor { json } => {
            let app = cli.db.app(cli.db.config()).await?;
            let findings = app.doctor(&op).await?;
            if json {
                print_json(&findings)?;
            } else if findings.is_empty() {
                println!("doctor: nothing to report");
            } else {
                for f in &findings {
                    println!("{}: {} ({})", f.level, f.message, f.code);
                }
            }
            if findings.iter().any(|f| f.level == "error") {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Audit { cmd } => {
            let app = cli.db.app(cli.db.config()).await?;
            match cmd {
                AuditCmd::Checkpoint { file } => {
                    latchkey_service::audit::checkpoint_file_outside(&cli.db.data, &file)
                        .map_err(anyhow::Error::msg)?;
                    match app.write_audit_checkpoint(&file).await? {
                        Some(cp) => println!(
                            "checkpoint: seq {} head {} appended to {}",
                            cp.seq,
                            cp.hash,
                            file.display()
                        ),
                        None => println!("the audit log is empty: nothing to checkpoint"),
                    }
                }
                AuditCmd::Verify {
                    json,
                    checkpoints: Some(file),
                } => {
                    let r = app.verify_audit_checkpoints(&op, &file).await?;
                    if json {
                        print_json(&r)?;
                    } else {
                        let v = &r.chain;
                        match &v.first_broken {
                            None => println!("audit chain OK: {} events, head {}", v.length, v.head_hash),
                            Some(b) => println!(
                                "audit chain BROKEN at seq {}: {} ({} events read)",
                                b.seq, b.reason, v.length
                            ),
                        }
                        if v.unkeyed > 0 {
                            println!(
                                "  {} event(s) from before the chain was keyed verify by the unkeyed hash only",
                                v.unkeyed
                            );
                        }
                        for f in r.findings.iter().filter(|f| !f.holds()) {
                            println!("CHECKPOINT MISMATCH: {}", serde_json::to_string(f)?);
                        }
                        if r.intact {
                            println!("checkpoints OK: {} checkpoint(s) match the chain", r.checkpoints);
                        } else {
                            println!("the chain was REWRITTEN or TRUNCATED since a checkpoint was taken");
                        }
                    }
                    if !r.intact {
                        std::process::exit(2);
                    }
                    if !r.chain.ok {
                        std::process::exit(1);
                    }
                }
                AuditCmd::Verify {
                    json,
                    checkpoints: None,
                } => {
                    let v = app.verify_audit(&op).await?;
                    if json {
                        print_json(&v)?;
                    } else if v.ok {
                        println!("audit chain OK: {} events, head {}", v.length, v.head_hash);
                    } else {
                        let b = v.first_broken.as_ref().expect("broken chain names a link");
                        println!(
                            "audit chain BROKEN at seq {}: {} ({} events read)",
                            b.seq, b.reason, v.length
                        );
                    }
                    if !v.ok {
                        std::process::exit(1);
                    }
                }
                AuditCmd::List { after, limit, json } => {
                    let page = app.audit_page(&op, after, limit.clamp(1, 10_000), None).await?;
                    if json {
                        print_json(&page)?;
                    } else {
                        for e in page.events {
                            println!(
                                "{:>6}  {}  {:<22} {:<28} {:<20} {}",
                                e.seq,
                                latchkey_service::time::rfc3339(e.at_ms / 1000),
                                e.actor,
                                e.action,
                                e.target,
                                e.details
                            );
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

fn user_json(u: &latchkey_store::UserRecord) -> serde_json::Value {
    json!({
        "id": u.id, "username": u.username, "display_name": u.display_name, "department": u.department,
        "groups": u.groups, "roles": u.roles, "privileged": u.privileged(), "state": u.state,
        "state_reason": u.state_reason,
        "has_password": u.password_hash.is_some(),
    })
}

/// Append a signed checkpoint whenever the head moved, every `secs` seconds.
/// A failed write is logged loudly and retried next time: serving goes on.
async fn checkpoint_loop(app: Arc<App>, file: PathBuf, secs: u64) {
    let mut last: Option<i64> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(secs));
    loop {
        tick.tick().await;
        match app.audit_head_seq().await {
            Ok(seq) if Some(seq) == last => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "audit checkpoint: reading the head failed");
                continue;
            }
        }
        match app.write_audit_checkpoint(&file).await {
            Ok(cp) => last = cp.map(|c| c.seq),
            Err(e) => tracing::error!(error = %e, file = %file.display(), "audit checkpoint: writing failed"),
        }
    }
}

async fn serve(
    db: &DbArgs,
    listen: &str,
    public_url: Option<String>,
    stop_on_stdin_close: bool,
    web: WebArgs,
    conn: ConnArgs,
    radius_listen: Option<String>,
    checkpoints: CheckpointArgs,
) -> Result<()> {
    let mut limits = conn.limits();
    if let Some(nofile) = raise_open_files_limit() {
        if limits.fit_descriptors(nofile) {
            tracing::warn!(
                open_files_limit = nofile,
                max_connections = limits.max_connections,
                max_connections_per_address = limits.max_per_address,
                "connection caps lowered to fit the open-files limit (raise it with ulimit -n or LimitNOFILE=)"
            );
        }
    }
    if let Some(file) = &checkpoints.audit_checkpoint_file {
        latchkey_service::audit::checkpoint_file_outside(&db.data, file).map_err(anyhow::Error::msg)?;
    }
    // Load the certificate before binding, so a bad file fails fast and clearly.
    let tls = match (&web.tls_cert, &web.tls_key) {
        (Some(cert), Some(key)) => Some(latchkey_http::tls::load(cert, key).await?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let radius_socket = match &radius_listen {
        Some(a) => Some(
            tokio::net::UdpSocket::bind(a)
                .await
                .with_context(|| format!("binding RADIUS on {a}"))?,
        ),
        None => None,
    };
    let addr = listener.local_addr()?;
    let mut config = db.config();
    config.public_url = public_url
        .unwrap_or_else(|| format!("{scheme}://{addr}"))
        .trim_end_matches('/')
        .to_owned();
    let web_config = latchkey_http::WebConfig {
        secure_cookies: tls.is_some(),
        trusted_proxies: web.trusted_proxies,
    };
    let app = db.app(config.clone()).await?;
    println!("Latchkey listening on {scheme}://{addr}");
    // Browsers refuse WebAuthn at an IP address: on loopback the pages live
    // at localhost (the server sends browsers there), so say that address.
    let pages_url = app
        .relying_party()
        .map(|rp| rp.origin.origin().ascii_serialization())
        .unwrap_or_else(|_| config.public_url.clone());
    if pages_url != config.public_url {
        println!("Web pages at {pages_url} (passkeys need this address)");
    }
    push_cmd::announce(&config);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "started");
    let radius_task = match radius_socket {
        Some(sock) => {
            println!("RADIUS listening on udp://{}", sock.local_addr()?);
            Some(tokio::spawn(latchkey_radius::serve(
                app.clone(),
                sock,
                std::future::pending::<()>(),
            )))
        }
        None => None,
    };
    match &db.database_url {
        Some(_) => println!("Storage: PostgreSQL; key material from {}", key_source(db)),
        None => println!("Storage: SQLite in {}", db.data.display()),
    }
    if let Some(file) = checkpoints.audit_checkpoint_file.clone() {
        println!(
            "Audit checkpoints: {} every {} s",
            file.display(),
            checkpoints.audit_checkpoint_interval
        );
        tokio::spawn(checkpoint_loop(
            app.clone(),
            file,
            checkpoints.audit_checkpoint_interval,
        ));
    }
    if let Some(b) = app.bootstrap_if_empty().await? {
        println!("First start: created administrator '{}'.", b.username);
        println!(
            "  One-time bootstrap pass (Temporary Access Pass, expires {}): {}",
            latchkey_service::time::rfc3339(b.expires_at),
            b.pass
        );
        println!("  Sign in at: {pages_url}/signin");
        println!("  Then register an authenticator and set a password; the pass works once.");
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    let shutdown = async move {
        let stdin_closed = async {
            if stop_on_stdin_close {
                use tokio::io::AsyncReadExt;
                let mut stdin = tokio::io::stdin();
                let mut buf = [0u8; 256];
                while let Ok(n) = stdin.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            } else {
                std::future::pending::<()>().await;
            }
        };
        let terminate = async {
            #[cfg(unix)]
            {
                if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    s.recv().await;
                } else {
                    std::future::pending::<()>().await;
                }
            }
            #[cfg(not(unix))]
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = stdin_closed => {},
            _ = terminate => {},
        }
        tracing::info!("shutting down");
    };
    match tls {
        Some(tls) => latchkey_http::tls::serve_tls(app.clone(), web_config, limits, listener, tls, shutdown).await?,
        None => latchkey_http::serve_with(app.clone(), web_config, limits, listener, shutdown).await?,
    }
    if let Some(t) = radius_task {
        t.abort();
    }
    app.close().await;
    Ok(())
}

fn key_source(db: &DbArgs) -> String {
    if std::env::var(latchkey_store::keys::SECRET_KEY_ENV).is_ok() {
        format!("${}", latchkey_store::keys::SECRET_KEY_ENV)
    } else {
        db.data.join("secret.key").display().to_string()
    }
}
