//! Operations commands: `latchkey signins`, `latchkey alerts ...`,
//! `latchkey user timeline`, and the serve flags for retention, detections
//! and alert sinks.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::{Args, Subcommand};
use latchkey_core::detect::{GeoTable, Thresholds};
use latchkey_service::app::{App, Config, Principal};
use latchkey_service::time::parse_time_arg;

use crate::print_json;

/// Sign-in log retention, detections and alert sinks.
#[derive(Args, Clone, Default)]
pub struct OpsArgs {
    /// Days the sign-in log keeps each attempt; older rows are purged (and the purge audited).
    #[arg(long, global = true, env = "LATCHKEY_SIGNIN_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(i64).range(1..=3650))]
    pub signin_retention_days: i64,
    /// CSV of geolocated IP ranges (cidr,latitude,longitude[,label]) for impossible-travel detection.
    #[arg(long, global = true, env = "LATCHKEY_GEO_RANGES", value_parser = parse_geo)]
    pub geo_ranges: Option<Arc<GeoTable>>,
    /// JSON file overriding detection thresholds (see docs/architecture.md, "Operations").
    #[arg(long, global = true, env = "LATCHKEY_DETECTION_THRESHOLDS", value_parser = parse_thresholds)]
    pub detection_thresholds: Option<Thresholds>,
    /// POST each alert as JSON to this URL.
    #[arg(long, global = true, env = "LATCHKEY_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
    /// Send each alert as RFC 5424 syslog over UDP to HOST:PORT.
    #[arg(long, global = true, env = "LATCHKEY_ALERT_SYSLOG")]
    pub alert_syslog: Option<String>,
    /// Seconds between runs of windowed and account-level detections.
    #[arg(long, global = true, env = "LATCHKEY_DETECTION_INTERVAL_SECS", default_value_t = 60)]
    pub detection_interval_secs: u64,
}

fn parse_geo(path: &str) -> Result<Arc<GeoTable>, String> {
    let text = std::fs::read_to_string(PathBuf::from(path)).map_err(|e| format!("reading {path}: {e}"))?;
    GeoTable::parse_csv(&text).map(Arc::new).map_err(|e| e.to_string())
}

fn parse_thresholds(path: &str) -> Result<Thresholds, String> {
    let text = std::fs::read_to_string(PathBuf::from(path)).map_err(|e| format!("reading {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

impl OpsArgs {
    pub fn apply(&self, c: &mut Config) {
        c.ops.signin_retention_days = self.signin_retention_days;
        if let Some(g) = &self.geo_ranges {
            c.ops.geo = g.clone();
        }
        if let Some(t) = &self.detection_thresholds {
            c.ops.thresholds = t.clone();
        }
        c.ops.webhook_url = self.alert_webhook.clone();
        c.ops.syslog_addr = self.alert_syslog.clone();
        c.ops.detection_interval_secs = self.detection_interval_secs;
    }
}

/// `latchkey signins`: the sign-in log, newest first.
#[derive(Args)]
pub struct SigninsArgs {
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub app: Option<String>,
    /// success | failure
    #[arg(long)]
    pub result: Option<String>,
    /// RFC 3339 time or unix seconds (inclusive).
    #[arg(long)]
    pub from: Option<String>,
    /// RFC 3339 time or unix seconds (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    /// Continue from a previous page's cursor.
    #[arg(long)]
    pub cursor: Option<i64>,
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// Alerts newest first.
    List {
        /// open | acknowledged | resolved
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an alert.
    Ack { id: i64 },
    /// Resolve an alert with what was done.
    Resolve {
        id: i64,
        #[arg(long)]
        resolution: String,
    },
    /// Run the detections now and print what they raised.
    Run {
        #[arg(long)]
        json: bool,
    },
}

fn fmt_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

pub async fn signins(app: &App, a: SigninsArgs) -> Result<()> {
    let filter = latchkey_store::SignInFilter {
        username: a.user,
        application: a.app,
        result: a.result,
        from: a.from.as_deref().map(parse_time_arg).transpose()?,
        to: a.to.as_deref().map(parse_time_arg).transpose()?,
        before_id: a.cursor,
        limit: a.limit,
    };
    let page = app.list_signins(&Principal::Operator, filter).await?;
    if a.json {
        return print_json(&page);
    }
    println!(
        "{:<20} {:<16} {:<10} {:<16} {:<12} {:<8} {:<22} {:<6} REASON",
        "TIME", "USER", "APP", "SOURCE", "LOCATION", "RESULT", "METHODS", "RISK"
    );
    for s in &page.signins {
        let methods = if s.methods_used.is_empty() {
            s.methods_tried.join("+")
        } else {
            s.methods_used.join("+")
        };
        println!(
            "{:<20} {:<16} {:<10} {:<16} {:<12} {:<8} {:<22} {:<6} {}",
            fmt_time(s.at),
            s.username,
            s.application.as_deref().unwrap_or("latchkey"),
            s.source_ip.as_deref().unwrap_or("-"),
            s.location.as_deref().unwrap_or("-"),
            s.result,
            if methods.is_empty() { "-".into() } else { methods },
            s.risk.as_deref().unwrap_or("-"),
            s.reason.as_deref().unwrap_or("")
        );
    }
    if let Some(c) = page.next_cursor {
        eprintln!("more: --cursor {c}");
    }
    Ok(())
}

pub async fn alerts(app: &App, cmd: AlertsCmd) -> Result<()> {
    let op = Principal::Operator;
    match cmd {
        AlertsCmd::List { status, limit, json } => {
            let alerts = app.list_alerts(&op, status.as_deref(), limit).await?;
            if json {
                return print_json(&alerts);
            }
            println!(
                "{:<6} {:<20} {:<38} {:<9} {:<28} STATUS",
                "ID", "TIME", "KIND", "SEVERITY", "TARGET"
            );
            for a in alerts {
                println!(
                    "{:<6} {:<20} {:<38} {:<9} {:<28} {}",
                    a.id,
                    fmt_time(a.at),
                    a.kind,
                    a.severity,
                    a.target,
                    a.status
                );
            }
        }
        AlertsCmd::Ack { id } => {
            app.handle_alert(&op, id, false, None).await?;
            println!("alert {id} acknowledged");
        }
        AlertsCmd::Resolve { id, resolution } => {
            app.handle_alert(&op, id, true, Some(&resolution)).await?;
            println!("alert {id} resolved");
        }
        AlertsCmd::Run { json } => {
            let run = app.run_detections().await?;
            if json {
                return print_json(&run);
            }
            println!(
                "examined {} new sign-ins; raised {} alerts",
                run.signins_examined,
                run.raised.len()
            );
            for a in run.raised {
                println!("{:<6} {:<38} {:<9} {}", a.id, a.kind, a.severity, a.target);
            }
        }
    }
    Ok(())
}

pub async fn timeline(app: &App, username: &str, limit: i64, json: bool) -> Result<()> {
    let entries = app.user_timeline(&Principal::Operator, username, limit).await?;
    if json {
        return print_json(&entries);
    }
    println!(
        "{:<20} {:<10} {:<28} {:<24} DETAILS",
        "TIME", "CATEGORY", "ACTION", "ACTOR"
    );
    for e in entries {
        println!(
            "{:<20} {:<10} {:<28} {:<24} {}",
            fmt_time(e.at_ms / 1000),
            e.category,
            e.action,
            e.actor,
            e.details
        );
    }
    Ok(())
}
