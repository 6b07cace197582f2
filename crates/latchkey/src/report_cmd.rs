//! `latchkey report evidence ...`: the evidence report, as the local operator
//! (the same App operation and renderers the API uses).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use latchkey_service::app::{App, Principal};
use latchkey_service::evidence::{parse_period, render, EvidenceFormat};

#[derive(Subcommand)]
pub enum ReportCmd {
    /// MFA coverage, privileged accounts, exceptions, break-glass, policies,
    /// enforcement proof, detections and the audit chain for a period.
    Evidence {
        /// First day (2026-01-01) or an RFC 3339 time.
        #[arg(long)]
        from: String,
        /// Last day, included (2026-01-31), or an RFC 3339 time.
        #[arg(long)]
        to: String,
        /// html, pdf, json or csv.
        #[arg(long, default_value = "html")]
        format: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run(app: &App, cmd: ReportCmd) -> Result<()> {
    match cmd {
        ReportCmd::Evidence { from, to, format, out } => {
            let format = EvidenceFormat::parse(&format)?;
            let period = parse_period(&from, &to)?;
            let report = app.evidence_report(&Principal::Operator, period, format).await?;
            let rendered = render(&report, format);
            match out {
                Some(path) => {
                    std::fs::write(&path, &rendered.body).with_context(|| format!("writing {}", path.display()))?;
                    let s = &report.summary;
                    eprintln!(
                        "Wrote {} ({} bytes): MFA coverage {:.1}% of {} users, {} privileged ({:.1}% phishing resistant), audit chain {}",
                        path.display(),
                        rendered.body.len(),
                        s.mfa_coverage_pct,
                        s.users,
                        s.privileged_users,
                        s.privileged_phishing_resistant_pct,
                        if s.audit_chain_ok { "verified" } else { "BROKEN" }
                    );
                }
                None => {
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&rendered.body)?;
                    stdout.flush()?;
                }
            }
            Ok(())
        }
    }
}
