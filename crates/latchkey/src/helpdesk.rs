//! `latchkey helpdesk ...` and `latchkey device ...`: the recovery runbooks
//! and device lifecycle from the command line, over the same service layer
//! as the API.

use anyhow::Result;
use clap::Subcommand;
use latchkey_core::device::DeviceState;
use latchkey_core::helpdesk::{CaseState, StepOutcome};
use latchkey_core::tap::IdentityVerification;
use latchkey_service::app::{App, Principal, TapOutcome};
use latchkey_service::recovery::{CaseView, StepInput};
use serde_json::json;

use crate::print_json;

#[derive(Subcommand)]
pub enum HelpdeskCmd {
    /// Recovery cases (runbooks): planned-phone-change, lost-phone, new-employee.
    Case {
        #[command(subcommand)]
        cmd: CaseCmd,
    },
    /// Temporary Access Passes.
    Tap {
        #[command(subcommand)]
        cmd: TapCmd,
    },
    /// Privileged change requests (passes, credential changes, device ends,
    /// case removals, policy exceptions) and their second approval.
    Requests {
        #[command(subcommand)]
        cmd: RequestCmd,
    },
}

#[derive(Subcommand)]
pub enum RequestCmd {
    /// Requests, newest first.
    List {
        /// pending_approval, approved, issued, used
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Approve a request as the person behind the API token in the
    /// LATCHKEY_TOKEN environment variable (a session or an owned token):
    /// an approval needs a named person, which the local operator is not.
    Approve {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CaseCmd {
    /// Open a case for a user.
    Open {
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// List cases (newest first); overdue ones are flagged.
    List {
        #[arg(long)]
        user: Option<String>,
        /// Only open cases.
        #[arg(long)]
        open: bool,
        #[arg(long)]
        json: bool,
    },
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Record the next step: verify-identity, issue-tap, deliver-tap,
    /// confirm-registration, remove-old-methods, confirm-sign-in, close.
    Step {
        id: String,
        step: String,
        /// verify-identity: callback, manager_attestation, in_person_id, video_call
        #[arg(long)]
        method: Option<String>,
        #[arg(long)]
        note: Option<String>,
        /// issue-tap
        #[arg(long)]
        lifetime_minutes: Option<i64>,
        #[arg(long)]
        multi_use: bool,
        /// issue-tap for a privileged user: the approved and issued request
        #[arg(long)]
        tap_request: Option<String>,
        /// deliver-tap: phone-call, in-person, manager, sms-to-number-on-file
        #[arg(long)]
        channel: Option<String>,
        /// remove-old-methods: method ids to remove
        #[arg(long = "remove-method")]
        remove_methods: Vec<String>,
        /// remove-old-methods: devices to mark lost (revokes their methods)
        #[arg(long = "lost-device")]
        lost_devices: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Skip the next step with a reason (identity verification cannot be skipped).
    Skip {
        id: String,
        step: String,
        #[arg(long)]
        reason: String,
    },
    Cancel {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum TapCmd {
    /// Issue a pass after recording how the identity was verified.
    Issue {
        #[arg(long)]
        user: String,
        /// callback, manager_attestation, in_person_id, video_call
        #[arg(long)]
        verification: String,
        #[arg(long)]
        note: String,
        #[arg(long)]
        lifetime_minutes: Option<i64>,
        #[arg(long)]
        multi_use: bool,
        #[arg(long)]
        json: bool,
    },
    /// A user's passes that can still be used (never the passes themselves).
    List {
        #[arg(long)]
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a pass: it signs nobody in from now on, and sessions opened
    /// with a pass end.
    Revoke {
        #[arg(long)]
        user: String,
        /// The pass's id (from `helpdesk tap list`).
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Pass requests waiting for a second approver.
    Requests {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum DeviceCmd {
    List {
        username: String,
        #[arg(long)]
        json: bool,
    },
    /// Register a device for a user.
    Add {
        username: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        platform: String,
        #[arg(long)]
        ownership: String,
    },
    /// Mark a device lost: revokes its methods and ends its sessions.
    Lost { id: String },
    /// Retire a device (planned replacement).
    Retire { id: String },
}

fn verification(method: &str, note: &str) -> Result<IdentityVerification> {
    Ok(IdentityVerification {
        method: serde_json::from_value(serde_json::Value::String(method.replace('-', "_"))).map_err(|_| {
            anyhow::anyhow!(
                "unknown verification method '{method}' (callback, manager_attestation, in_person_id, video_call)"
            )
        })?,
        note: note.to_owned(),
    })
}

fn ts(secs: i64) -> String {
    latchkey_service::time::rfc3339(secs)
}

fn print_case(c: &CaseView) {
    let state = match &c.case.state {
        CaseState::Open { next } => format!("open, next: {}", next.as_str()),
        CaseState::Closed { at } => format!("closed {}", ts(*at)),
        CaseState::Cancelled { at, reason } => format!("cancelled {} ({reason})", ts(*at)),
    };
    println!(
        "case {}  {}  user {}  {}{}",
        c.id,
        c.scenario.as_str(),
        c.username,
        state,
        if c.overdue { "  OVERDUE" } else { "" }
    );
    println!(
        "  opened {} by {}, deadline {}",
        ts(c.opened_at),
        c.opened_by,
        ts(c.deadline)
    );
    for r in &c.case.steps {
        let status = match &r.outcome {
            None => "[ ]".to_owned(),
            Some(StepOutcome::Done { actor, at, .. }) => format!("[x] {} by {actor}", ts(*at)),
            Some(StepOutcome::Skipped { actor, at, reason }) => {
                format!("[-] {} by {actor}: skipped, {reason}", ts(*at))
            }
        };
        println!("  {:<22} {status}", r.step.as_str());
    }
}

pub async fn run(app: &App, cmd: HelpdeskCmd) -> Result<()> {
    let op = Principal::Operator;
    match cmd {
        HelpdeskCmd::Case { cmd } => match cmd {
            CaseCmd::Open { scenario, user, json } => {
                let c = app.open_case(&op, &user, &scenario).await?;
                if json {
                    print_json(&c)?
                } else {
                    print_case(&c)
                }
            }
            CaseCmd::List { user, open, json } => {
                let cases = app.cases(&op, user.as_deref(), open).await?;
                if json {
                    print_json(&cases)?;
                } else if cases.is_empty() {
                    println!("no cases");
                } else {
                    for c in &cases {
                        let next = c.next_step.map(|s| s.as_str()).unwrap_or("-");
                        println!(
                            "{}  {:<20} {:<16} next: {:<22} deadline {}{}",
                            c.id,
                            c.scenario.as_str(),
                            c.username,
                            next,
                            ts(c.deadline),
                            if c.overdue { "  OVERDUE" } else { "" }
                        );
                    }
                }
            }
            CaseCmd::Show { id, json } => {
                let c = app.case(&op, &id).await?;
                if json {
                    print_json(&c)?
                } else {
                    print_case(&c)
                }
            }
            CaseCmd::Step {
                id,
                step,
                method,
                note,
                lifetime_minutes,
                multi_use,
                tap_request,
                channel,
                remove_methods,
                lost_devices,
                json,
            } => {
                let verification = match (&method, step.replace('-', "_").as_str()) {
                    (Some(m), _) => Some(verification(m, note.as_deref().unwrap_or(""))?),
                    (None, "verify_identity") => anyhow::bail!("verify-identity needs --method and --note"),
                    _ => None,
                };
                let input = StepInput {
                    verification,
                    lifetime_minutes,
                    single_use: multi_use.then_some(false),
                    channel,
                    remove_method_ids: remove_methods,
                    lost_device_ids: lost_devices,
                    note,
                    tap_request_id: tap_request,
                    // The local operator needs no approval (it holds the key).
                    approval_id: None,
                };
                let r = app.case_step(&op, &id, &step, input).await?;
                if json {
                    print_json(
                        &json!({ "case": r.case, "tap": r.tap.as_ref().map(|t| json!({ "id": t.id, "pass": t.pass, "expires_at": ts(t.expires_at), "single_use": t.single_use })) }),
                    )?;
                } else {
                    if let Some(t) = &r.tap {
                        println!("Temporary Access Pass (shown once; deliver it by phone or in person, never email):");
                        println!(
                            "  {}   expires {}{}",
                            t.pass,
                            ts(t.expires_at),
                            if t.single_use { ", single use" } else { "" }
                        );
                    }
                    print_case(&r.case);
                }
            }
            CaseCmd::Skip { id, step, reason } => print_case(&app.case_skip(&op, &id, &step, &reason).await?),
            CaseCmd::Cancel { id, reason } => print_case(&app.case_cancel(&op, &id, &reason).await?),
        },
        HelpdeskCmd::Tap { cmd } => match cmd {
            TapCmd::Issue {
                user,
                verification: method,
                note,
                lifetime_minutes,
                multi_use,
                json,
            } => {
                let v = verification(&method, &note)?;
                match app
                    .issue_tap(&op, &user, lifetime_minutes, !multi_use, None, Some(v))
                    .await?
                {
                    TapOutcome::Issued(t) => {
                        if json {
                            print_json(
                                &json!({ "id": t.id, "pass": t.pass, "expires_at": ts(t.expires_at), "single_use": t.single_use }),
                            )?;
                        } else {
                            println!("Temporary Access Pass for {user} (shown once; deliver it by phone or in person, never email):");
                            println!("  {}   expires {}", t.pass, ts(t.expires_at));
                        }
                    }
                    TapOutcome::PendingApproval { request_id } => {
                        if json {
                            print_json(&json!({ "request_id": request_id, "state": "pending_approval" }))?;
                        } else {
                            println!("{user} is privileged: request {request_id} needs a second administrator's approval (POST /api/v1/tap-requests/{request_id}/approve)");
                        }
                    }
                }
            }
            TapCmd::List { user, json } => {
                let (_, passes) = app.passes(&op, &user).await?;
                if json {
                    let v: Vec<_> = passes
                        .iter()
                        .map(|t| json!({ "id": t.id, "issued_by": t.issued_by, "starts_at": ts(t.starts_at), "expires_at": ts(t.expires_at), "single_use": t.single_use, "used_at": t.used_at.map(ts) }))
                        .collect();
                    print_json(&v)?;
                } else if passes.is_empty() {
                    println!("{user} has no live Temporary Access Pass");
                } else {
                    for t in passes {
                        println!(
                            "{}  issued by {}  expires {}{}",
                            t.id,
                            t.issued_by,
                            ts(t.expires_at),
                            if t.used_at.is_some() { "  (used)" } else { "" }
                        );
                    }
                }
            }
            TapCmd::Revoke { user, id, reason } => {
                let r = app.revoke_tap(&op, &user, &id, reason.as_deref()).await?;
                println!(
                    "Pass {} of {user} revoked; {} session(s) opened with a pass ended.",
                    r.tap_id, r.sessions_ended
                );
            }
            TapCmd::Requests { json } => print_requests(app, None, json).await?,
        },
        HelpdeskCmd::Requests { cmd } => match cmd {
            RequestCmd::List { state, json } => print_requests(app, state.as_deref(), json).await?,
            RequestCmd::Approve { id, json } => {
                let token = std::env::var("LATCHKEY_TOKEN").map_err(|_| {
                    anyhow::anyhow!(
                        "set LATCHKEY_TOKEN to the approver's API token (one with an owner) or session token"
                    )
                })?;
                let approver = app.authenticate(token.trim()).await?;
                let r = app.approve_change_request(&approver, &id).await?;
                if json {
                    print_json(&r)?;
                } else {
                    println!(
                        "approved {} ({} for user {}) as {}",
                        r.id,
                        r.kind,
                        r.user_id,
                        approver.actor()
                    );
                }
            }
        },
    }
    Ok(())
}

async fn print_requests(app: &App, state: Option<&str>, json: bool) -> Result<()> {
    let reqs = app.change_requests(&Principal::Operator, state).await?;
    if json {
        print_json(&reqs)?;
    } else {
        for r in reqs {
            println!(
                "{}  {:<24} user {}  {:<16} requested by {}",
                r.id, r.kind, r.user_id, r.state, r.requested_by
            );
        }
    }
    Ok(())
}

pub async fn run_device(app: &App, cmd: DeviceCmd) -> Result<()> {
    let op = Principal::Operator;
    match cmd {
        DeviceCmd::List { username, json } => {
            let devices = app.devices(&op, &username).await?;
            if json {
                print_json(&devices)?;
            } else if devices.is_empty() {
                println!("{username} has no registered devices");
            } else {
                for d in devices {
                    println!(
                        "{}  {:<20} {:<8} {:<9} {:<8} {}",
                        d.id,
                        d.name,
                        d.platform,
                        d.ownership,
                        d.state,
                        if d.compliant { "compliant" } else { "not compliant" }
                    );
                }
            }
        }
        DeviceCmd::Add {
            username,
            name,
            platform,
            ownership,
        } => {
            let d = app
                .register_device(&op, &username, &name, &platform, &ownership)
                .await?;
            println!("registered device {} ({})", d.id, d.name);
        }
        DeviceCmd::Lost { id } => {
            let (_, methods, sessions) = app.end_device(&op, &id, DeviceState::Lost, None).await?;
            println!(
                "device {id} marked lost: {} method(s) revoked, {sessions} session(s) ended",
                methods.len()
            );
        }
        DeviceCmd::Retire { id } => {
            let (_, methods, sessions) = app.end_device(&op, &id, DeviceState::Retired, None).await?;
            println!(
                "device {id} retired: {} method(s) revoked, {sessions} session(s) ended",
                methods.len()
            );
        }
    }
    Ok(())
}
