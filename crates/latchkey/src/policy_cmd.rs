//! `latchkey policy ...`: conditional access from the command line, as the
//! local operator (the same App operations the API uses).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use latchkey_core::policy::{PolicySet, UserAction};
use latchkey_service::app::{App, Principal};
use latchkey_service::policy::{parse_document, DocFormat, WhatIf};

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// List policies with their versions.
    List {
        #[arg(long)]
        json: bool,
    },
    /// What would happen if USER signed in like this? Signs nobody in.
    WhatIf {
        #[arg(long)]
        user: String,
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        ip: Option<String>,
        /// Device id (unknown devices are neither managed nor compliant).
        #[arg(long)]
        device: Option<String>,
        /// Ask about registering security info instead of an application.
        #[arg(long)]
        register_security_info: bool,
        /// A proposed policy document to ask about instead of the stored set.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Run the bootstrap-path analyzer on the stored set, or on FILE. Exits 1
    /// if anyone is locked out (by FILE: anyone the stored set doesn't lock out).
    Check {
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Replay FILE against the stored sign-ins of the last DAYS days.
    Replay {
        #[arg(long, default_value_t = 30)]
        days: i64,
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the policy set as YAML (default) or JSON.
    Export {
        #[arg(long, default_value = "yaml")]
        format: String,
    },
    /// Replace the policy set with FILE (YAML, or JSON for *.json). Refused if
    /// it locks anyone out, unless --force.
    Import {
        file: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

fn format_of(path: &Path) -> DocFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => DocFormat::Json,
        _ => DocFormat::Yaml,
    }
}

fn read_set(path: &Path) -> Result<PolicySet> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_document(&text, format_of(path))?)
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(app: &App, cmd: PolicyCmd) -> Result<()> {
    let op = Principal::Operator;
    match cmd {
        PolicyCmd::List { json } => {
            let list = app.list_policies(&op).await?;
            if json {
                return print_json(&list);
            }
            println!("{:<28} {:<12} {:>7}  NAME", "ID", "STATE", "VERSION");
            for p in list {
                println!(
                    "{:<28} {:<12} {:>7}  {}",
                    p.policy.id,
                    p.policy.state.as_str(),
                    p.version,
                    p.policy.name
                );
            }
        }
        PolicyCmd::WhatIf {
            user,
            app: application,
            ip,
            device,
            register_security_info,
            file,
            json,
        } => {
            let document = match &file {
                Some(f) => Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?),
                None => None,
            };
            let d = app
                .what_if(
                    &op,
                    WhatIf {
                        username: user.clone(),
                        application,
                        action: register_security_info.then_some(UserAction::RegisterSecurityInfo),
                        ip,
                        device_id: device,
                        document,
                        format: file.as_deref().map(format_of),
                        ..Default::default()
                    },
                )
                .await?;
            if json {
                return print_json(&d);
            }
            println!("decision for {user}: {:?}", d.outcome);
            if !d.required_strengths.is_empty() {
                println!("  requires: {}", d.required_strengths.join(" and "));
            }
            if let Some(f) = d.sign_in_frequency_secs {
                println!("  sign-in frequency: {f} s");
            }
            if d.break_glass {
                println!("  break-glass account: excluded from conditional access; the sign-in raises an alert");
            }
            for r in &d.applied {
                println!(
                    "  applied     {} ({}): because {}",
                    r.policy_id,
                    r.policy_name,
                    r.because.join(", ")
                );
                if let Some(b) = &r.block_reason {
                    println!("              blocks: {b}");
                }
            }
            for r in &d.report_only {
                println!(
                    "  report-only {} would {:?}: because {}",
                    r.policy_id,
                    r.result,
                    r.because.join(", ")
                );
            }
            for s in &d.skipped {
                println!("  skipped     {}: {}", s.policy_id, s.reason);
            }
        }
        PolicyCmd::Check { file, json } => {
            let proposed = file.as_deref().map(read_set).transpose()?;
            let is_proposal = proposed.is_some();
            let c = app.check_policies(&op, proposed).await?;
            if json {
                print_json(&c)?;
            } else {
                println!(
                    "{} users analyzed; {} locked out",
                    c.report.users,
                    c.report.locked_out.len()
                );
                for u in &c.report.locked_out {
                    let new = if c.newly_locked_out.contains(&u.username) {
                        " (new)"
                    } else {
                        ""
                    };
                    println!("  LOCKED OUT{new} {}", u.summary());
                }
                for f in &c.report.findings {
                    println!("  finding: {f}");
                }
            }
            let failed = if is_proposal {
                !c.newly_locked_out.is_empty()
            } else {
                !c.report.locked_out.is_empty()
            };
            if failed {
                std::process::exit(1);
            }
        }
        PolicyCmd::Replay { days, file, json } => {
            let r = app.replay_policies(&op, read_set(&file)?, days).await?;
            if json {
                return print_json(&r);
            }
            println!(
                "{} sign-ins in the last {days} days: {} blocked, {} need a stronger method, {} newly prompted, {} unchanged",
                r.signins,
                r.blocked.len(),
                r.stronger_method.len(),
                r.newly_prompted.len(),
                r.unchanged
            );
            for row in r.blocked.iter().chain(&r.stronger_method).chain(&r.newly_prompted) {
                println!(
                    "  {:<16} {} {:<20} {:?}: {}",
                    latchkey_service::time::rfc3339(row.at),
                    row.username,
                    row.application,
                    row.outcome,
                    row.detail
                );
            }
        }
        PolicyCmd::Export { format } => {
            let f = match format.as_str() {
                "yaml" | "yml" => DocFormat::Yaml,
                "json" => DocFormat::Json,
                other => bail!("unknown format '{other}' (yaml, json)"),
            };
            print!("{}", app.export_policies(&op, f).await?);
        }
        PolicyCmd::Import { file, force } => {
            let set = read_set(&file)?;
            let list = app.import_policies(&op, set, force).await?;
            println!("imported {} policies from {}", list.len(), file.display());
        }
    }
    Ok(())
}
