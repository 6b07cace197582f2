//! CSV: one file, one table per section. Each section starts with a row
//! holding only `# <section>`, then its header row and data rows, then an
//! empty row. Rows differ in length between sections, so read it with a
//! flexible reader (spreadsheets open it as is). Times are RFC 3339 UTC,
//! percentages plain numbers.

use latchkey_core::evidence::EvidenceReport;

use crate::time::rfc3339;

fn opt(secs: Option<i64>) -> String {
    secs.map(rfc3339).unwrap_or_default()
}

/// Free text (reasons, display names) starting like a formula would be run
/// by a spreadsheet; a leading apostrophe keeps it text.
fn defuse(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

struct Out(Vec<u8>);

impl Out {
    fn row<I: IntoIterator<Item = S>, S: AsRef<[u8]>>(&mut self, r: I) {
        let mut w = csv::WriterBuilder::new().from_writer(&mut self.0);
        w.write_record(r).expect("writing to memory");
        w.flush().expect("writing to memory");
    }
    fn section(&mut self, name: &str, header: &[&str], rows: Vec<Vec<String>>) {
        self.row([format!("# {name}")]);
        self.row(header);
        for r in rows {
            self.row(r.into_iter().map(defuse));
        }
        // An empty line separates sections (an empty record would be `""`).
        self.0.push(b'\n');
    }
}

pub fn render(r: &EvidenceReport) -> Vec<u8> {
    let mut o = Out(vec![]);
    let s = &r.summary;
    o.section(
        "summary",
        &["figure", "value"],
        vec![
            vec!["generated_at".into(), rfc3339(r.generated_at)],
            vec!["period_from".into(), rfc3339(r.period.from)],
            vec!["period_to".into(), rfc3339(r.period.to)],
            vec!["users".into(), s.users.to_string()],
            vec!["users_with_mfa".into(), s.users_with_mfa.to_string()],
            vec!["mfa_coverage_pct".into(), format!("{:.1}", s.mfa_coverage_pct)],
            vec!["privileged_users".into(), s.privileged_users.to_string()],
            vec![
                "privileged_phishing_resistant".into(),
                s.privileged_phishing_resistant.to_string(),
            ],
            vec![
                "privileged_phishing_resistant_pct".into(),
                format!("{:.1}", s.privileged_phishing_resistant_pct),
            ],
            vec!["sms_only_users".into(), s.sms_only_users.to_string()],
            vec!["active_exceptions".into(), s.active_exceptions.to_string()],
            vec!["break_glass_accounts".into(), s.break_glass_accounts.to_string()],
            vec![
                "break_glass_tests_overdue".into(),
                s.break_glass_tests_overdue.to_string(),
            ],
            vec!["policies".into(), s.policies.to_string()],
            vec![
                "policy_changes_in_period".into(),
                s.policy_changes_in_period.to_string(),
            ],
            vec!["signins_completed".into(), s.signins_completed.to_string()],
            vec![
                "signins_phishing_resistant_pct".into(),
                format!("{:.1}", s.signins_phishing_resistant_pct),
            ],
            vec!["detections".into(), s.detections.to_string()],
            vec!["detections_open".into(), s.detections_open.to_string()],
            vec!["audit_chain_ok".into(), s.audit_chain_ok.to_string()],
            vec!["audit_head_hash".into(), s.audit_head_hash.clone()],
        ],
    );
    o.section(
        "coverage",
        &["scope", "users", "with_mfa", "phishing_resistant", "pct"],
        r.coverage
            .iter()
            .map(|c| {
                vec![
                    c.scope.clone(),
                    c.users.to_string(),
                    c.with_mfa.to_string(),
                    c.phishing_resistant.to_string(),
                    format!("{:.1}", c.pct),
                ]
            })
            .collect(),
    );
    o.section(
        "coverage_over_time",
        &["at", "users", "with_mfa", "pct"],
        r.coverage_over_time
            .iter()
            .map(|c| {
                vec![
                    rfc3339(c.at),
                    c.users.to_string(),
                    c.with_mfa.to_string(),
                    format!("{:.1}", c.pct),
                ]
            })
            .collect(),
    );
    o.section(
        "methods_mix",
        &["kind", "users", "pct"],
        r.methods_mix
            .iter()
            .map(|m| vec![m.kind.clone(), m.users.to_string(), format!("{:.1}", m.pct)])
            .collect(),
    );
    o.section(
        "privileged_accounts",
        &[
            "username",
            "display_name",
            "roles",
            "strongest_method",
            "strength_class",
            "phishing_resistant",
        ],
        r.privileged
            .iter()
            .map(|p| {
                vec![
                    p.username.clone(),
                    p.display_name.clone(),
                    p.roles.join(" "),
                    p.strongest_method.clone().unwrap_or_default(),
                    p.strength_class.clone(),
                    p.phishing_resistant.to_string(),
                ]
            })
            .collect(),
    );
    o.section(
        "sms_only_users",
        &["username", "display_name", "department", "kinds", "privileged"],
        r.sms_only
            .iter()
            .map(|u| {
                vec![
                    u.username.clone(),
                    u.display_name.clone(),
                    u.department.clone().unwrap_or_default(),
                    u.kinds.join(" "),
                    u.privileged.to_string(),
                ]
            })
            .collect(),
    );
    o.section(
        "active_exceptions",
        &[
            "id",
            "policy_id",
            "subject",
            "reason",
            "requested_by",
            "approved_by",
            "created_at",
            "expires_at",
            "days_left",
        ],
        r.exceptions
            .iter()
            .map(|e| {
                vec![
                    e.exception.id.clone(),
                    e.exception.policy_id.clone(),
                    e.exception.subject.clone(),
                    e.exception.reason.clone(),
                    e.exception.requested_by.clone(),
                    e.exception.approved_by.clone(),
                    rfc3339(e.exception.created_at),
                    rfc3339(e.exception.expires_at),
                    e.days_left.to_string(),
                ]
            })
            .collect(),
    );
    o.section(
        "break_glass_accounts",
        &[
            "username",
            "test_interval_days",
            "last_test_at",
            "next_test_due",
            "test_overdue",
            "last_use_at",
            "strongest_method",
        ],
        r.break_glass
            .iter()
            .map(|b| {
                vec![
                    b.account.username.clone(),
                    b.account.test_interval_days.to_string(),
                    opt(b.account.last_test_at),
                    rfc3339(b.next_test_due),
                    b.test_overdue.to_string(),
                    opt(b.account.last_use_at),
                    b.strongest_method.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    o.section(
        "policies",
        &[
            "id",
            "name",
            "state",
            "version",
            "updated_at",
            "changed_by",
            "changes_in_period",
        ],
        r.policies
            .iter()
            .map(|p| {
                vec![
                    p.id.clone(),
                    p.name.clone(),
                    p.state.clone(),
                    p.version.to_string(),
                    rfc3339(p.updated_at),
                    p.changed_by.clone(),
                    p.changes_in_period.to_string(),
                ]
            })
            .collect(),
    );
    let e = &r.enforcement;
    let mut rows = vec![
        vec!["attempts".into(), "".into(), e.attempts.to_string(), "".into()],
        vec!["completed".into(), "".into(), e.completed.to_string(), "".into()],
        vec!["failed".into(), "".into(), e.failed.to_string(), "".into()],
    ];
    rows.extend(e.met.iter().map(|m| {
        vec![
            "met_at_least".into(),
            m.name.clone(),
            m.count.to_string(),
            format!("{:.1}", m.pct),
        ]
    }));
    rows.extend(e.by_acr.iter().map(|m| {
        vec![
            "acr".into(),
            m.name.clone(),
            m.count.to_string(),
            format!("{:.1}", m.pct),
        ]
    }));
    rows.extend(e.required.iter().map(|q| {
        vec![
            "required".into(),
            q.strength.clone(),
            format!("{}/{}", q.met, q.completed),
            format!("{:.1}", q.pct),
        ]
    }));
    rows.extend(e.failures_by_reason.iter().map(|m| {
        vec![
            "failure_reason".into(),
            m.name.clone(),
            m.count.to_string(),
            format!("{:.1}", m.pct),
        ]
    }));
    o.section("enforcement", &["measure", "name", "count", "pct"], rows);
    o.section(
        "detections",
        &["kind", "severity", "total", "handled", "open"],
        r.detections
            .by_kind
            .iter()
            .map(|d| {
                vec![
                    d.kind.clone(),
                    d.severity.clone(),
                    d.total.to_string(),
                    d.handled.to_string(),
                    d.open.to_string(),
                ]
            })
            .collect(),
    );
    let a = &r.audit_chain;
    o.section(
        "audit_chain",
        &["ok", "length", "head_hash", "first_broken"],
        vec![vec![
            a.ok.to_string(),
            a.length.to_string(),
            a.head_hash.clone(),
            a.first_broken.clone().unwrap_or_default(),
        ]],
    );
    o.0
}
