//! HTML: a self-contained, print-friendly document (inline stylesheet, SVG
//! charts, no script). The admin console shows the same [`body`] inside its
//! own frame with [`CSS`] served as a file, which its Content-Security-Policy
//! (`style-src 'self'`) allows; the charts use SVG presentation attributes,
//! not style attributes, for the same reason.

use latchkey_core::evidence::{CoveragePoint, EvidenceReport};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{class_name, fmt_opt, fmt_pct, fmt_share, fmt_time, kind_name, more_note, LIST_LIMIT};

pub const CSS: &str = r#"
.evidence { font-family: "Helvetica Neue", Helvetica, Arial, sans-serif; color: #1a1f2b; max-width: 60rem; margin: 0 auto; line-height: 1.45; }
.evidence h1 { font-size: 1.7rem; margin: 0 0 .2rem; }
.evidence h2 { font-size: 1.2rem; margin: 2rem 0 .5rem; padding-bottom: .2rem; border-bottom: 2px solid #1f4e8c; break-after: avoid; page-break-after: avoid; }
.evidence h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; break-after: avoid; }
.evidence .meta { color: #4a5468; margin: 0 0 1rem; }
.evidence .note { color: #4a5468; font-size: .9rem; }
.evidence .figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr)); gap: .6rem; margin: 1rem 0; padding: 0; }
.evidence .figure { border: 1px solid #c9d2e0; border-radius: 4px; padding: .6rem .8rem; break-inside: avoid; }
.evidence .figure dt { font-size: .8rem; color: #4a5468; }
.evidence .figure dd { margin: .1rem 0 0; font-size: 1.5rem; font-weight: 700; }
.evidence .figure dd small { display: block; font-size: .8rem; font-weight: 400; color: #4a5468; }
.evidence table { border-collapse: collapse; width: 100%; margin: .4rem 0 1rem; font-size: .88rem; }
.evidence thead { display: table-header-group; }
.evidence tr { break-inside: avoid; page-break-inside: avoid; }
.evidence th, .evidence td { border: 1px solid #c9d2e0; padding: .3rem .5rem; text-align: left; vertical-align: top; }
.evidence th { background: #eef2f8; }
.evidence td.num, .evidence th.num { text-align: right; font-variant-numeric: tabular-nums; }
.evidence .hash { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .8rem; word-break: break-all; }
.evidence .ok { color: #1c6b36; font-weight: 700; }
.evidence .bad { color: #a3222b; font-weight: 700; }
.evidence .chart { margin: .5rem 0 1rem; break-inside: avoid; }
.evidence .chart svg { max-width: 100%; height: auto; }
.evidence .empty { color: #4a5468; font-style: italic; }
@media print {
  @page { size: A4; margin: 16mm 14mm; }
  body { margin: 0; }
  .evidence { max-width: none; font-size: 10pt; }
  .evidence section { break-inside: auto; }
  .no-print { display: none; }
}
"#;

/// The report as a standalone HTML file.
pub fn document(r: &EvidenceReport) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Latchkey evidence report " (fmt_time(r.period.from, true)) " to " (fmt_time(r.period.to, true)) }
                style { (PreEscaped(CSS)) }
            }
            body { (body(r)) }
        }
    }
}

fn yes_no(ok: bool, yes: &str, no: &str) -> Markup {
    html! { @if ok { span.ok { (yes) } } @else { span.bad { (no) } } }
}

fn figure(label: &str, value: String, detail: String) -> Markup {
    html! { div.figure { dt { (label) } dd { (value) small { (detail) } } } }
}

fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

/// The report itself (no page frame).
pub fn body(r: &EvidenceReport) -> Markup {
    let s = &r.summary;
    html! {
        article.evidence {
            header {
                h1 { "MFA evidence report" }
                p.meta {
                    "Period " strong { (fmt_time(r.period.from, false)) } " to " strong { (fmt_time(r.period.to, false)) }
                    " · generated " (fmt_time(r.generated_at, false)) " by Latchkey"
                }
                p.note {
                    "State figures (coverage, privileged accounts, exceptions, break-glass, policies, audit chain) are as of the generation time; "
                    "activity figures (enforcement, detections, policy changes, coverage over time) cover the period."
                }
            }
            section #summary {
                h2 { "Summary" }
                dl.figures {
                    (figure("MFA coverage", fmt_share(s.mfa_coverage_pct, s.users), format!("{} of {} active users", s.users_with_mfa, s.users)))
                    (figure("Privileged users with phishing-resistant MFA", fmt_share(s.privileged_phishing_resistant_pct, s.privileged_users),
                        format!("{} of {} privileged users", s.privileged_phishing_resistant, s.privileged_users)))
                    (figure("Users on SMS/voice only", s.sms_only_users.to_string(), "telephony is their only factor".into()))
                    (figure("Active exceptions", s.active_exceptions.to_string(), "each with an end date and approver".into()))
                    (figure("Break-glass tests overdue", s.break_glass_tests_overdue.to_string(), format!("of {} break-glass accounts", s.break_glass_accounts)))
                    (figure("Completed sign-ins", s.signins_completed.to_string(), format!("{} phishing resistant", fmt_share(s.signins_phishing_resistant_pct, s.signins_completed))))
                    (figure("Detections in period", s.detections.to_string(), format!("{} open", s.detections_open)))
                    (figure("Conditional-access policies", s.policies.to_string(), format!("{} changes in period", s.policy_changes_in_period)))
                }
                p {
                    "Audit chain: " (yes_no(s.audit_chain_ok, "verified", "BROKEN")) ", "
                    (r.audit_chain.length) " events; head hash " span.hash { (s.audit_head_hash) }
                }
            }
            section #coverage {
                h2 { "MFA coverage" }
                p.note { "A user is covered with at least one active second factor (authenticator app, push, passkey or security key, SMS, voice); recovery codes and temporary passes do not count. Active users only." }
                table {
                    thead { tr { th { "Scope" } th.num { "Users" } th.num { "With MFA" } th.num { "Phishing resistant" } th.num { "Coverage" } } }
                    tbody {
                        @for c in &r.coverage {
                            tr { td { (c.scope) } td.num { (c.users) } td.num { (c.with_mfa) } td.num { (c.phishing_resistant) } td.num { (fmt_pct(c.pct)) } }
                        }
                    }
                }
                h3 { "Coverage over the period" }
                div.chart { (coverage_chart(&r.coverage_over_time)) }
                h3 { "Methods mix" }
                p.note { "Users holding at least one active method of each kind (one user can hold several)." }
                @if r.methods_mix.is_empty() { (empty("No active MFA methods.")) }
                @else {
                    div.chart { (bar_chart(&r.methods_mix.iter().map(|m| (kind_name(&m.kind), m.users, format!("{} ({})", m.users, fmt_pct(m.pct)))).collect::<Vec<_>>())) }
                }
            }
            section #privileged {
                h2 { "Privileged accounts" }
                p.note { "Accounts holding an administrative role (admin, helpdesk, security_admin) and the strongest MFA method each has registered." }
                @if r.privileged.is_empty() { (empty("No privileged accounts.")) }
                @else {
                    table {
                        thead { tr { th { "Account" } th { "Roles" } th { "Strongest method" } th { "Class" } th { "Phishing resistant" } } }
                        tbody {
                            @for p in r.privileged.iter().take(LIST_LIMIT) {
                                tr {
                                    td { (p.username) br; small { (p.display_name) } }
                                    td { (p.roles.join(", ")) }
                                    td { (p.strongest_method.as_deref().map(kind_name).unwrap_or_else(|| "none".into())) }
                                    td { (class_name(&p.strength_class)) }
                                    td { (yes_no(p.phishing_resistant, "yes", "no")) }
                                }
                            }
                        }
                    }
                    @if let Some(n) = more_note(r.privileged.len()) { p.note { (n) } }
                }
            }
            section #sms-only {
                h2 { "Users on SMS or voice only" }
                @if r.sms_only.is_empty() { (empty("No user relies on telephony alone.")) }
                @else {
                    table {
                        thead { tr { th { "User" } th { "Department" } th { "Methods" } th { "Privileged" } } }
                        tbody {
                            @for u in r.sms_only.iter().take(LIST_LIMIT) {
                                tr { td { (u.username) br; small { (u.display_name) } } td { (u.department.as_deref().unwrap_or("-")) } td { (u.kinds.join(", ")) } td { (yes_no(!u.privileged, "no", "yes")) } }
                            }
                        }
                    }
                    @if let Some(n) = more_note(r.sms_only.len()) { p.note { (n) } }
                }
            }
            section #exceptions {
                h2 { "Active policy exceptions" }
                @if r.exceptions.is_empty() { (empty("No active exceptions.")) }
                @else {
                    table {
                        thead { tr { th { "Policy" } th { "Subject" } th { "Reason" } th { "Requested by" } th { "Approved by" } th { "Ends" } th.num { "Days left" } } }
                        tbody {
                            @for e in &r.exceptions {
                                tr { td { (e.exception.policy_id) } td { (e.exception.subject) } td { (e.exception.reason) } td { (e.exception.requested_by) } td { (e.exception.approved_by) } td { (fmt_time(e.exception.expires_at, false)) } td.num { (e.days_left) } }
                            }
                        }
                    }
                }
            }
            section #break-glass {
                h2 { "Break-glass accounts" }
                @if r.break_glass.is_empty() { (empty("No break-glass accounts.")) }
                @else {
                    table {
                        thead { tr { th { "Account" } th.num { "Test every (days)" } th { "Last test" } th { "Next test due" } th { "Last use" } th { "Strongest method" } } }
                        tbody {
                            @for b in &r.break_glass {
                                tr {
                                    td { (b.account.username) }
                                    td.num { (b.account.test_interval_days) }
                                    td { (fmt_opt(b.account.last_test_at)) }
                                    td { (fmt_time(b.next_test_due, false)) " " (yes_no(!b.test_overdue, "", "OVERDUE")) }
                                    td { (fmt_opt(b.account.last_use_at)) }
                                    td { (b.strongest_method.as_deref().map(kind_name).unwrap_or_else(|| "none".into())) }
                                }
                            }
                        }
                    }
                }
            }
            section #policies {
                h2 { "Conditional-access policies" }
                @if r.policies.is_empty() { (empty("No conditional-access policies are defined.")) }
                @else {
                    table {
                        thead { tr { th { "Policy" } th { "State" } th.num { "Version" } th { "Last changed" } th { "Changed by" } th.num { "Changes in period" } } }
                        tbody {
                            @for p in &r.policies {
                                tr { td { (p.name) br; small { (p.id) } } td { (p.state.replace('_', " ")) } td.num { (p.version) } td { (fmt_time(p.updated_at, false)) } td { (p.changed_by) } td.num { (p.changes_in_period) } }
                            }
                        }
                    }
                }
            }
            section #enforcement {
                h2 { "Enforcement proof" }
                p { (r.enforcement.attempts) " sign-in attempts in the period: " strong { (r.enforcement.completed) " completed" } ", " (r.enforcement.failed) " refused or failed." }
                h3 { "Completed sign-ins that met each strength" }
                div.chart { (bar_chart(&r.enforcement.met.iter().map(|m| (m.name.replace('_', " "), m.count, format!("{} ({})", m.count, fmt_pct(m.pct)))).collect::<Vec<_>>())) }
                table {
                    thead { tr { th { "Strength achieved (acr)" } th.num { "Completed sign-ins" } th.num { "Share" } } }
                    tbody {
                        @for m in &r.enforcement.by_acr { tr { td { (m.name) } td.num { (m.count) } td.num { (fmt_pct(m.pct)) } } }
                    }
                }
                @if !r.enforcement.required.is_empty() {
                    h3 { "Strengths required by policy" }
                    table {
                        thead { tr { th { "Required strength" } th.num { "Completed sign-ins" } th.num { "Met it" } th.num { "Share" } } }
                        tbody {
                            @for q in &r.enforcement.required { tr { td { (q.strength) } td.num { (q.completed) } td.num { (q.met) } td.num { (fmt_pct(q.pct)) } } }
                        }
                    }
                }
                @if !r.enforcement.failures_by_reason.is_empty() {
                    h3 { "Refused and failed sign-ins by reason" }
                    table {
                        thead { tr { th { "Reason" } th.num { "Attempts" } th.num { "Share" } } }
                        tbody {
                            @for m in &r.enforcement.failures_by_reason { tr { td { (m.name.replace('_', " ")) } td.num { (m.count) } td.num { (fmt_pct(m.pct)) } } }
                        }
                    }
                }
            }
            section #detections {
                h2 { "Detections and their handling" }
                p { (r.detections.total) " alerts raised in the period: " (r.detections.handled) " handled (acknowledged), " (yes_no(r.detections.open == 0, "0 open", &format!("{} open", r.detections.open))) "." }
                @if !r.detections.by_kind.is_empty() {
                    table {
                        thead { tr { th { "Detection" } th { "Severity" } th.num { "Raised" } th.num { "Handled" } th.num { "Open" } } }
                        tbody {
                            @for d in &r.detections.by_kind { tr { td { (d.kind.replace('_', " ")) } td { (d.severity) } td.num { (d.total) } td.num { (d.handled) } td.num { (d.open) } } }
                        }
                    }
                }
            }
            section #audit {
                h2 { "Audit chain integrity" }
                p {
                    "The audit log is a SHA-256 hash chain; every event names the hash of the one before. Verification recomputed all "
                    (r.audit_chain.length) " events: " (yes_no(r.audit_chain.ok, "the chain is intact", "the chain is BROKEN")) "."
                }
                @if let Some(b) = &r.audit_chain.first_broken { p.bad { "First broken link: " (b) } }
                p { "Head hash at generation: " span.hash { (r.audit_chain.head_hash) } }
            }
        }
    }
}

/// Coverage over time as a line on a 0–100% grid.
fn coverage_chart(points: &[CoveragePoint]) -> Markup {
    let (w, h, left, top, bottom) = (640.0, 220.0, 44.0, 12.0, 30.0);
    let pw = w - left - 12.0;
    let ph = h - top - bottom;
    let (t0, t1) = match (points.first(), points.last()) {
        (Some(a), Some(b)) => (a.at, b.at),
        _ => return empty("No data."),
    };
    let x = |t: i64| {
        left + if t1 > t0 {
            (t - t0) as f64 / (t1 - t0) as f64 * pw
        } else {
            pw
        }
    };
    let y = |p: f64| top + ph - p / 100.0 * ph;
    // Before anyone existed there is no coverage to draw (not a 0%).
    let line: Vec<String> = points
        .iter()
        .filter(|p| p.users > 0)
        .map(|p| format!("{:.1},{:.1}", x(p.at), y(p.pct)))
        .collect();
    let mid = &points[points.len() / 2];
    let last = points.last().expect("not empty");
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {w} {h}")) width=(w) height=(h) role="img" aria-labelledby="cov-title" {
            title #cov-title { "MFA coverage over the period, from " (fmt_pct(points[0].pct)) " to " (fmt_pct(last.pct)) }
            @for g in [0.0, 25.0, 50.0, 75.0, 100.0] {
                line x1=(left) x2=(left + pw) y1=(y(g)) y2=(y(g)) stroke="#d5dbe5" stroke-width="1" {}
                text x=(left - 6.0) y=(y(g) + 4.0) text-anchor="end" font-size="11" fill="#4a5468" { (g) "%" }
            }
            polyline points=(line.join(" ")) fill="none" stroke="#1f4e8c" stroke-width="2.5" {}
            circle cx=(x(last.at)) cy=(y(last.pct)) r="4" fill="#1f4e8c" {}
            // Above the point, or below it when the point is at the top edge.
            text x=(x(last.at) - 6.0) y=(if y(last.pct) - 8.0 < top + 10.0 { y(last.pct) + 16.0 } else { y(last.pct) - 8.0 }) text-anchor="end" font-size="12" font-weight="bold" fill="#1a1f2b" { (fmt_pct(last.pct)) }
            @for (p, anchor) in [(&points[0], "start"), (mid, "middle"), (last, "end")] {
                text x=(x(p.at)) y=(h - 10.0) text-anchor=(anchor) font-size="11" fill="#4a5468" { (fmt_time(p.at, true)) }
            }
        }
    }
}

/// Horizontal bars: (label, value, value text), scaled to the largest value.
fn bar_chart(items: &[(String, i64, String)]) -> Markup {
    let max = items.iter().map(|i| i.1).max().unwrap_or(0).max(1) as f64;
    let (w, row, label_w, value_w) = (640.0, 26.0, 200.0, 110.0);
    let h = row * items.len() as f64 + 6.0;
    let bw = w - label_w - value_w;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {w} {h}")) width=(w) height=(h) role="img" {
            @for (i, (label, v, text)) in items.iter().enumerate() {
                @let y = 3.0 + i as f64 * row;
                text x=(label_w - 8.0) y=(y + 16.0) text-anchor="end" font-size="12" fill="#1a1f2b" { (label) }
                rect x=(label_w) y=(y + 3.0) width=(bw) height="16" fill="#eef2f8" {}
                rect x=(label_w) y=(y + 3.0) width=(format!("{:.1}", *v as f64 / max * bw)) height="16" fill="#1f4e8c" {}
                text x=(label_w + bw + 8.0) y=(y + 16.0) font-size="12" fill="#1a1f2b" { (text) }
            }
        }
    }
}
