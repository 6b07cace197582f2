//! The evidence report as one format-neutral document: an ordered list of
//! sections, each a list of blocks (notes, paragraphs, key figures, tables
//! with typed cells, charts with their data). The CSV, HTML and PDF writers
//! render this model, so a section, its wording and which people lists are
//! cut at [`LIST_LIMIT`] are decided here once.
//!
//! A table says where it appears ([`Shown`]): the CSV holds the data tables
//! (machine column names, every row), the documents (HTML, PDF) the tables
//! meant for reading (human column titles, long people lists cut). Most
//! tables are both; a chart's numbers are a data table beside the chart.

use latchkey_core::evidence::{EvidenceReport, Period};

use super::{class_name, fmt_pct, fmt_share, kind_name};

/// People lists in the documents (HTML, PDF) stop here; JSON and CSV list everyone.
pub(crate) const LIST_LIMIT: usize = 200;

pub(crate) struct Document {
    pub title: &'static str,
    pub subtitle: &'static str,
    pub period: Period,
    pub generated_at: i64,
    /// Which figures are a state and which cover the period.
    pub scope_note: &'static str,
    pub audit_head_hash: String,
    /// The first is the summary (the PDF's title page).
    pub sections: Vec<Section>,
}

pub(crate) struct Section {
    /// The HTML anchor.
    pub id: &'static str,
    pub title: &'static str,
    pub blocks: Vec<Block>,
}

pub(crate) enum Block {
    Heading(&'static str),
    /// Explanatory text, set smaller.
    Note(String),
    Para(Vec<Span>),
    Figures(Vec<Figure>),
    Table(Table),
    Chart(Chart),
}

/// A key figure: "MFA coverage / 77.8% / 7 of 9 active users".
pub(crate) struct Figure {
    pub label: &'static str,
    pub value: String,
    pub detail: String,
}

pub(crate) enum Span {
    Text(String),
    Strong(String),
    Hash(String),
    /// A finding, shown as good or bad.
    Verdict {
        text: String,
        good: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    Everywhere,
    /// CSV only (the documents say it in their own words or charts).
    DataOnly,
    /// HTML and PDF only (the CSV has the same numbers in another table).
    DocumentsOnly,
}

#[derive(Clone, Copy)]
pub(crate) enum WhenEmpty {
    /// The header row alone.
    Header,
    /// Documents leave the table out.
    Omit,
    /// Documents say this instead.
    Say(&'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Number,
    Percent,
    Time,
    Hash,
    /// A yes/no fact.
    Flag,
}

pub(crate) struct Column {
    /// The CSV header.
    pub key: &'static str,
    /// The documents' header.
    pub title: &'static str,
    pub kind: Kind,
    /// Relative width in paged documents.
    pub weight: f32,
    /// Documents show this column's cell under the named column's cell
    /// (a display name under a username) rather than as a column.
    pub beneath: Option<&'static str>,
    /// CSV only.
    pub data_only: bool,
}

impl Column {
    fn new(key: &'static str, title: &'static str, kind: Kind, weight: f32) -> Self {
        Column {
            key,
            title,
            kind,
            weight,
            beneath: None,
            data_only: false,
        }
    }
    fn beneath(mut self, key: &'static str) -> Self {
        self.beneath = Some(key);
        self
    }
    fn data_only(mut self) -> Self {
        self.data_only = true;
        self
    }
    pub fn numeric(&self) -> bool {
        matches!(self.kind, Kind::Number | Kind::Percent)
    }
}

fn text(key: &'static str, title: &'static str, weight: f32) -> Column {
    Column::new(key, title, Kind::Text, weight)
}
fn number(key: &'static str, title: &'static str, weight: f32) -> Column {
    Column::new(key, title, Kind::Number, weight)
}
fn percent(key: &'static str, title: &'static str, weight: f32) -> Column {
    Column::new(key, title, Kind::Percent, weight)
}
fn time(key: &'static str, title: &'static str, weight: f32) -> Column {
    Column::new(key, title, Kind::Time, weight)
}
fn flag(key: &'static str, title: &'static str, weight: f32) -> Column {
    Column::new(key, title, Kind::Flag, weight)
}
/// A column for the CSV alone (no document title or width).
fn data(key: &'static str, kind: Kind) -> Column {
    Column::new(key, "", kind, 0.0).data_only()
}

/// A cell's value: each writer formats it its way (RFC 3339 times and plain
/// numbers in the CSV, "2026-01-31 14:05 UTC" and "66.7%" in the documents).
#[derive(Clone, Debug)]
pub(crate) enum Cell {
    /// Free text, possibly user controlled.
    Text(String),
    /// A stored code and its human name ("webauthn" / "Passkey / security key").
    Label {
        code: String,
        shown: String,
    },
    List(Vec<String>),
    Number(i64),
    Percent(f64),
    /// `None`: never.
    Time(Option<i64>),
    Hash(String),
    /// `shown` in the documents, marked good or bad; `true`/`false` in the CSV.
    Flag {
        value: bool,
        shown: &'static str,
        good: bool,
    },
}

impl Cell {
    fn text(s: impl Into<String>) -> Self {
        Cell::Text(s.into())
    }
    fn time(t: i64) -> Self {
        Cell::Time(Some(t))
    }
    fn label(code: impl Into<String>, shown: impl Into<String>) -> Self {
        Cell::Label {
            code: code.into(),
            shown: shown.into(),
        }
    }
    /// A code shown with its underscores as spaces ("report_only" → "report only").
    fn code(code: &str) -> Self {
        Cell::label(code, code.replace('_', " "))
    }
    fn method(kind: Option<&str>) -> Self {
        match kind {
            Some(k) => Cell::label(k, kind_name(k)),
            None => Cell::label("", "none"),
        }
    }
    /// `value` in words (`yes` when true, `no` when false); `good` is the
    /// answer that needs no attention.
    fn flag(value: bool, yes: &'static str, no: &'static str, good: bool) -> Self {
        Cell::Flag {
            value,
            shown: if value { yes } else { no },
            good: value == good,
        }
    }
    pub fn is_empty(&self) -> bool {
        match self {
            Cell::Text(s) | Cell::Hash(s) => s.is_empty(),
            Cell::Label { shown, .. } => shown.is_empty(),
            Cell::List(l) => l.is_empty(),
            _ => false,
        }
    }
}

pub(crate) struct Table {
    /// The CSV section name.
    pub name: &'static str,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    pub shown: Shown,
    pub when_empty: WhenEmpty,
    /// A people list: documents show the first [`LIST_LIMIT`] rows.
    pub cut: bool,
}

/// A column as the documents show it: its cell, and what goes under it.
pub(crate) struct DocColumn<'a> {
    pub column: &'a Column,
    pub index: usize,
    pub beneath: Option<usize>,
}

impl Table {
    fn new(name: &'static str, columns: Vec<Column>, rows: Vec<Vec<Cell>>) -> Self {
        debug_assert!(
            rows.iter().all(|r| r.len() == columns.len()),
            "{name}: a cell per column"
        );
        Table {
            name,
            columns,
            rows,
            shown: Shown::Everywhere,
            when_empty: WhenEmpty::Header,
            cut: false,
        }
    }
    fn shown(mut self, shown: Shown) -> Self {
        self.shown = shown;
        self
    }
    fn when_empty(mut self, w: WhenEmpty) -> Self {
        self.when_empty = w;
        self
    }
    fn people(mut self) -> Self {
        self.cut = true;
        self
    }
    pub fn in_data(&self) -> bool {
        self.shown != Shown::DocumentsOnly
    }
    pub fn in_documents(&self) -> bool {
        self.shown != Shown::DataOnly
    }
    /// The documents' columns, in order, each with the column shown under it.
    pub fn doc_columns(&self) -> Vec<DocColumn<'_>> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.data_only && c.beneath.is_none())
            .map(|(index, column)| DocColumn {
                column,
                index,
                beneath: self.columns.iter().position(|b| b.beneath == Some(column.key)),
            })
            .collect()
    }
    /// Whether any row has a cell to show under another.
    pub fn has_beneath(&self) -> bool {
        self.doc_columns()
            .iter()
            .filter_map(|c| c.beneath)
            .any(|b| self.doc_rows().iter().any(|r| !r[b].is_empty()))
    }
    /// The rows the documents list.
    pub fn doc_rows(&self) -> &[Vec<Cell>] {
        if self.cut {
            &self.rows[..self.rows.len().min(LIST_LIMIT)]
        } else {
            &self.rows
        }
    }
    /// The note under a list the documents cut.
    pub fn cut_note(&self) -> Option<String> {
        (self.cut && self.rows.len() > LIST_LIMIT).then(|| {
            format!(
                "The first {LIST_LIMIT} of {} are listed; the JSON and CSV formats list all of them.",
                self.rows.len()
            )
        })
    }
}

pub(crate) struct Chart {
    pub plot: Plot,
    /// What the documents say when there is nothing to draw.
    pub empty: &'static str,
}

pub(crate) enum Plot {
    /// A share over time on a 0–100 % grid.
    Line {
        description: String,
        points: Vec<LinePoint>,
    },
    /// Horizontal bars scaled to the largest value.
    Bars(Vec<Bar>),
}

impl Plot {
    pub fn is_empty(&self) -> bool {
        match self {
            Plot::Line { points, .. } => points.is_empty(),
            Plot::Bars(b) => b.is_empty(),
        }
    }
}

pub(crate) struct LinePoint {
    pub at: i64,
    pub pct: f64,
    /// Nobody to count yet: no point is drawn (not a 0 %).
    pub counted: bool,
}

pub(crate) struct Bar {
    pub label: String,
    pub value: i64,
    pub text: String,
}

/// The report as sections.
pub(crate) fn build(r: &EvidenceReport) -> Document {
    Document {
        title: "MFA evidence report",
        subtitle: "Latchkey · policy intent and enforcement proof",
        period: r.period,
        generated_at: r.generated_at,
        scope_note:
            "State figures (coverage, privileged accounts, exceptions, break-glass, policies, audit chain) are as \
                     of the generation time; activity figures (enforcement, detections, policy changes, coverage over \
                     time) cover the period.",
        audit_head_hash: r.audit_chain.head_hash.clone(),
        sections: vec![
            summary(r),
            coverage(r),
            privileged(r),
            sms_only(r),
            without_backup(r),
            leavers(r),
            exceptions(r),
            break_glass(r),
            policies(r),
            enforcement(r),
            detections(r),
            audit_chain(r),
        ],
    }
}

fn summary(r: &EvidenceReport) -> Section {
    let s = &r.summary;
    let figure = |label, value, detail| Figure { label, value, detail };
    let row = |k: &str, v: Cell| vec![Cell::text(k), v];
    let n = Cell::Number;
    let flag = |b| Cell::flag(b, "true", "false", true);
    Section {
        id: "summary",
        title: "Summary",
        blocks: vec![
            Block::Figures(vec![
                figure(
                    "MFA coverage",
                    fmt_share(s.mfa_coverage_pct, s.users),
                    format!("{} of {} active users", s.users_with_mfa, s.users),
                ),
                figure(
                    "Privileged users with phishing-resistant MFA",
                    fmt_share(s.privileged_phishing_resistant_pct, s.privileged_users),
                    format!(
                        "{} of {} privileged users",
                        s.privileged_phishing_resistant, s.privileged_users
                    ),
                ),
                figure(
                    "Users on SMS/voice only",
                    s.sms_only_users.to_string(),
                    "telephony is their only factor".into(),
                ),
                figure(
                    "Users without a backup method",
                    s.users_without_backup.to_string(),
                    "one second factor at most, no recovery codes".into(),
                ),
                figure(
                    "Leavers in period",
                    s.leavers.to_string(),
                    match s.leavers_longest_revocation_secs {
                        Some(secs) => format!("access revoked at most {secs} s after the change"),
                        None => "none revoked".into(),
                    },
                ),
                figure(
                    "Active exceptions",
                    s.active_exceptions.to_string(),
                    "each with an end date and approver".into(),
                ),
                figure(
                    "Break-glass tests overdue",
                    s.break_glass_tests_overdue.to_string(),
                    format!("of {} break-glass accounts", s.break_glass_accounts),
                ),
                figure(
                    "Completed sign-ins",
                    s.signins_completed.to_string(),
                    format!(
                        "{} phishing resistant",
                        fmt_share(s.signins_phishing_resistant_pct, s.signins_completed)
                    ),
                ),
                figure(
                    "Detections in period",
                    s.detections.to_string(),
                    format!("{} open", s.detections_open),
                ),
                figure(
                    "Conditional-access policies",
                    s.policies.to_string(),
                    format!("{} changes in period", s.policy_changes_in_period),
                ),
            ]),
            Block::Para(vec![
                Span::Text("Audit chain: ".into()),
                Span::Verdict {
                    text: if s.audit_chain_ok { "verified" } else { "BROKEN" }.into(),
                    good: s.audit_chain_ok,
                },
                Span::Text(format!(", {} events; head hash ", r.audit_chain.length)),
                Span::Hash(s.audit_head_hash.clone()),
            ]),
            Block::Table(
                Table::new(
                    "summary",
                    vec![data("figure", Kind::Text), data("value", Kind::Text)],
                    vec![
                        row("generated_at", Cell::time(r.generated_at)),
                        row("period_from", Cell::time(r.period.from)),
                        row("period_to", Cell::time(r.period.to)),
                        row("users", n(s.users)),
                        row("users_with_mfa", n(s.users_with_mfa)),
                        row("mfa_coverage_pct", Cell::Percent(s.mfa_coverage_pct)),
                        row("privileged_users", n(s.privileged_users)),
                        row("privileged_phishing_resistant", n(s.privileged_phishing_resistant)),
                        row(
                            "privileged_phishing_resistant_pct",
                            Cell::Percent(s.privileged_phishing_resistant_pct),
                        ),
                        row("sms_only_users", n(s.sms_only_users)),
                        row("users_without_backup", n(s.users_without_backup)),
                        row("leavers", n(s.leavers)),
                        row(
                            "leavers_longest_revocation_secs",
                            s.leavers_longest_revocation_secs.map_or(Cell::text(""), n),
                        ),
                        row("active_exceptions", n(s.active_exceptions)),
                        row("break_glass_accounts", n(s.break_glass_accounts)),
                        row("break_glass_tests_overdue", n(s.break_glass_tests_overdue)),
                        row("policies", n(s.policies)),
                        row("policy_changes_in_period", n(s.policy_changes_in_period)),
                        row("signins_completed", n(s.signins_completed)),
                        row(
                            "signins_phishing_resistant_pct",
                            Cell::Percent(s.signins_phishing_resistant_pct),
                        ),
                        row("detections", n(s.detections)),
                        row("detections_open", n(s.detections_open)),
                        row("audit_chain_ok", flag(s.audit_chain_ok)),
                        row("audit_head_hash", Cell::Hash(s.audit_head_hash.clone())),
                    ],
                )
                .shown(Shown::DataOnly),
            ),
        ],
    }
}

fn coverage(r: &EvidenceReport) -> Section {
    let points = &r.coverage_over_time;
    let description = match (points.first(), points.last()) {
        (Some(a), Some(b)) => format!(
            "MFA coverage over the period, from {} to {}",
            fmt_pct(a.pct),
            fmt_pct(b.pct)
        ),
        _ => String::new(),
    };
    Section {
        id: "coverage",
        title: "MFA coverage",
        blocks: vec![
            Block::Note(
                "A user is covered with at least one active second factor (authenticator app, push, passkey or \
                 security key, SMS, voice); recovery codes and temporary passes do not count. Active users only."
                    .into(),
            ),
            Block::Table(Table::new(
                "coverage",
                vec![
                    text("scope", "Scope", 3.0),
                    number("users", "Users", 1.0),
                    number("with_mfa", "With MFA", 1.0),
                    number("phishing_resistant", "Phishing resistant", 1.4),
                    percent("pct", "Coverage", 1.0),
                ],
                r.coverage
                    .iter()
                    .map(|c| {
                        vec![
                            Cell::text(&c.scope),
                            Cell::Number(c.users),
                            Cell::Number(c.with_mfa),
                            Cell::Number(c.phishing_resistant),
                            Cell::Percent(c.pct),
                        ]
                    })
                    .collect(),
            )),
            Block::Heading("Coverage over the period"),
            Block::Chart(Chart {
                plot: Plot::Line {
                    description,
                    points: points
                        .iter()
                        .map(|p| LinePoint {
                            at: p.at,
                            pct: p.pct,
                            counted: p.users > 0,
                        })
                        .collect(),
                },
                empty: "No data.",
            }),
            Block::Table(
                Table::new(
                    "coverage_over_time",
                    vec![
                        data("at", Kind::Time),
                        data("users", Kind::Number),
                        data("with_mfa", Kind::Number),
                        data("pct", Kind::Percent),
                    ],
                    points
                        .iter()
                        .map(|c| {
                            vec![
                                Cell::time(c.at),
                                Cell::Number(c.users),
                                Cell::Number(c.with_mfa),
                                Cell::Percent(c.pct),
                            ]
                        })
                        .collect(),
                )
                .shown(Shown::DataOnly),
            ),
            Block::Heading("Methods mix"),
            Block::Note("Users holding at least one active method of each kind (one user can hold several).".into()),
            Block::Chart(Chart {
                plot: Plot::Bars(
                    r.methods_mix
                        .iter()
                        .map(|m| Bar {
                            label: kind_name(&m.kind),
                            value: m.users,
                            text: format!("{} ({})", m.users, fmt_pct(m.pct)),
                        })
                        .collect(),
                ),
                empty: "No active MFA methods.",
            }),
            Block::Table(
                Table::new(
                    "methods_mix",
                    vec![
                        data("kind", Kind::Text),
                        data("users", Kind::Number),
                        data("pct", Kind::Percent),
                    ],
                    r.methods_mix
                        .iter()
                        .map(|m| vec![Cell::text(&m.kind), Cell::Number(m.users), Cell::Percent(m.pct)])
                        .collect(),
                )
                .shown(Shown::DataOnly),
            ),
        ],
    }
}

fn privileged(r: &EvidenceReport) -> Section {
    let s = &r.summary;
    Section {
        id: "privileged",
        title: "Privileged accounts",
        blocks: vec![
            Block::Note(format!(
                "Accounts holding an administrative role (admin, helpdesk, security_admin) and the strongest MFA \
                 method each has registered: {} of {} have a phishing-resistant method ({}).",
                s.privileged_phishing_resistant,
                s.privileged_users,
                fmt_share(s.privileged_phishing_resistant_pct, s.privileged_users)
            )),
            Block::Table(
                Table::new(
                    "privileged_accounts",
                    vec![
                        text("username", "Account", 1.8),
                        text("display_name", "Display name", 0.0).beneath("username"),
                        text("roles", "Roles", 1.8),
                        text("strongest_method", "Strongest method", 2.2),
                        text("strength_class", "Class", 1.6),
                        flag("phishing_resistant", "Phishing resistant", 1.6),
                    ],
                    r.privileged
                        .iter()
                        .map(|p| {
                            vec![
                                Cell::text(&p.username),
                                Cell::text(&p.display_name),
                                Cell::List(p.roles.clone()),
                                Cell::method(p.strongest_method.as_deref()),
                                Cell::label(&p.strength_class, class_name(&p.strength_class)),
                                Cell::flag(p.phishing_resistant, "yes", "no", true),
                            ]
                        })
                        .collect(),
                )
                .people()
                .when_empty(WhenEmpty::Say("No privileged accounts.")),
            ),
        ],
    }
}

fn sms_only(r: &EvidenceReport) -> Section {
    Section {
        id: "sms-only",
        title: "Users on SMS or voice only",
        blocks: vec![Block::Table(
            people_with_methods(
                "sms_only_users",
                r.sms_only
                    .iter()
                    .map(|u| (&u.username, &u.display_name, &u.department, &u.kinds, u.privileged)),
            )
            .when_empty(WhenEmpty::Say("No user relies on telephony alone.")),
        )],
    }
}

/// A list of people with their department, method kinds and whether they
/// are privileged.
fn people_with_methods<'a>(
    name: &'static str,
    people: impl Iterator<Item = (&'a String, &'a String, &'a Option<String>, &'a Vec<String>, bool)>,
) -> Table {
    Table::new(
        name,
        vec![
            text("username", "User", 2.0),
            text("display_name", "Display name", 0.0).beneath("username"),
            text("department", "Department", 1.6),
            text("kinds", "Methods", 1.4),
            flag("privileged", "Privileged", 1.0),
        ],
        people
            .map(|(username, display_name, department, kinds, privileged)| {
                vec![
                    Cell::text(username),
                    Cell::text(display_name),
                    match department {
                        Some(d) => Cell::text(d),
                        None => Cell::label("", "-"),
                    },
                    Cell::List(kinds.clone()),
                    Cell::flag(privileged, "yes", "no", false),
                ]
            })
            .collect(),
    )
    .people()
}

fn without_backup(r: &EvidenceReport) -> Section {
    Section {
        id: "without-backup",
        title: "Active users without a backup method",
        blocks: vec![
            Block::Note(
                "A backup is a second sign-in method or a set of recovery codes, registered before it is needed: \
                 without one, a lost phone means a helpdesk call."
                    .into(),
            ),
            Block::Table(
                people_with_methods(
                    "users_without_backup",
                    r.without_backup
                        .iter()
                        .map(|u| (&u.username, &u.display_name, &u.department, &u.kinds, u.privileged)),
                )
                .when_empty(WhenEmpty::Say("Every active user has a backup method.")),
            ),
        ],
    }
}

fn leavers(r: &EvidenceReport) -> Section {
    Section {
        id: "leavers",
        title: "Leavers in the period",
        blocks: vec![
            Block::Note(
                "Accounts disabled or deleted in the period, with the time from the change at its source (the \
                 directory, or the administrator's request for a change made in Latchkey) to Latchkey's revocation \
                 of their sessions, grants, passes and tokens. Disabled and deleted users are not in the coverage figures."
                    .into(),
            ),
            Block::Table(
                Table::new(
                    "leavers",
                    vec![
                        text("username", "User", 1.6),
                        text("display_name", "Display name", 0.0).beneath("username"),
                        text("state", "Now", 0.9),
                        text("reason", "Reason", 2.0),
                        text("actor", "By", 1.2),
                        text("source", "Source", 0.9),
                        time("source_changed_at", "Changed at source", 1.4),
                        time("revoked_at", "Access revoked", 1.4),
                        number("revocation_secs", "Seconds to revocation", 1.0),
                    ],
                    r.leavers
                        .iter()
                        .map(|x| {
                            let l = &x.leaver;
                            vec![
                                Cell::text(&l.username),
                                Cell::text(&l.display_name),
                                Cell::code(&l.state),
                                match &l.reason {
                                    Some(x) => Cell::text(x),
                                    None => Cell::label("", "-"),
                                },
                                Cell::text(&l.actor),
                                Cell::code(&l.source),
                                Cell::time(l.source_changed_at),
                                Cell::Time(l.revoked_at),
                                x.revocation_secs.map_or(Cell::label("", "-"), Cell::Number),
                            ]
                        })
                        .collect(),
                )
                .people()
                .when_empty(WhenEmpty::Say("No account was disabled or deleted in the period.")),
            ),
        ],
    }
}

fn exceptions(r: &EvidenceReport) -> Section {
    Section {
        id: "exceptions",
        title: "Active policy exceptions",
        blocks: vec![Block::Table(
            Table::new(
                "active_exceptions",
                vec![
                    data("id", Kind::Text),
                    text("policy_id", "Policy", 1.2),
                    text("subject", "Subject", 1.5),
                    text("reason", "Reason", 2.0),
                    text("requested_by", "Requested by", 1.3),
                    text("approved_by", "Approved by", 1.2),
                    time("created_at", "Created", 0.0).data_only(),
                    time("expires_at", "Ends", 1.1),
                    number("days_left", "Days left", 1.0),
                ],
                r.exceptions
                    .iter()
                    .map(|e| {
                        let x = &e.exception;
                        vec![
                            Cell::text(&x.id),
                            Cell::text(&x.policy_id),
                            Cell::text(&x.subject),
                            Cell::text(&x.reason),
                            Cell::text(&x.requested_by),
                            Cell::text(&x.approved_by),
                            Cell::time(x.created_at),
                            Cell::time(x.expires_at),
                            Cell::Number(e.days_left),
                        ]
                    })
                    .collect(),
            )
            .when_empty(WhenEmpty::Say("No active exceptions.")),
        )],
    }
}

fn break_glass(r: &EvidenceReport) -> Section {
    Section {
        id: "break-glass",
        title: "Break-glass accounts",
        blocks: vec![Block::Table(
            Table::new(
                "break_glass_accounts",
                vec![
                    text("username", "Account", 1.3),
                    number("test_interval_days", "Test every (days)", 1.1),
                    time("last_test_at", "Last test", 1.5),
                    time("next_test_due", "Next test due", 1.5),
                    flag("test_overdue", "Status", 1.3),
                    time("last_use_at", "Last use", 1.5),
                    text("strongest_method", "Strongest method", 2.0),
                ],
                r.break_glass
                    .iter()
                    .map(|b| {
                        vec![
                            Cell::text(&b.account.username),
                            Cell::Number(b.account.test_interval_days),
                            Cell::Time(b.account.last_test_at),
                            Cell::time(b.next_test_due),
                            Cell::flag(b.test_overdue, "OVERDUE", "on schedule", false),
                            Cell::Time(b.account.last_use_at),
                            Cell::method(b.strongest_method.as_deref()),
                        ]
                    })
                    .collect(),
            )
            .when_empty(WhenEmpty::Say("No break-glass accounts.")),
        )],
    }
}

fn policies(r: &EvidenceReport) -> Section {
    Section {
        id: "policies",
        title: "Conditional-access policies",
        blocks: vec![Block::Table(
            Table::new(
                "policies",
                vec![
                    text("id", "Id", 0.0).beneath("name"),
                    text("name", "Policy", 2.2),
                    text("state", "State", 1.1),
                    number("version", "Version", 0.8),
                    time("updated_at", "Last changed", 2.0),
                    text("changed_by", "Changed by", 1.4),
                    number("changes_in_period", "Changes in period", 1.6),
                ],
                r.policies
                    .iter()
                    .map(|p| {
                        vec![
                            Cell::text(&p.id),
                            Cell::text(&p.name),
                            Cell::code(&p.state),
                            Cell::Number(p.version),
                            Cell::time(p.updated_at),
                            Cell::text(&p.changed_by),
                            Cell::Number(p.changes_in_period),
                        ]
                    })
                    .collect(),
            )
            .when_empty(WhenEmpty::Say("No conditional-access policies are defined.")),
        )],
    }
}

fn enforcement(r: &EvidenceReport) -> Section {
    let e = &r.enforcement;
    // The CSV keeps every measure in one table, tagged by what it measures.
    let measure = |m: &str, name: &str, count: Cell, pct: Option<f64>| {
        vec![
            Cell::text(m),
            Cell::text(name),
            count,
            pct.map_or_else(|| Cell::text(""), Cell::Percent),
        ]
    };
    let mut all = vec![
        measure("attempts", "", Cell::Number(e.attempts), None),
        measure("completed", "", Cell::Number(e.completed), None),
        measure("failed", "", Cell::Number(e.failed), None),
    ];
    all.extend(
        e.met
            .iter()
            .map(|m| measure("met_at_least", &m.name, Cell::Number(m.count), Some(m.pct))),
    );
    all.extend(
        e.by_acr
            .iter()
            .map(|m| measure("acr", &m.name, Cell::Number(m.count), Some(m.pct))),
    );
    all.extend(e.required.iter().map(|q| {
        measure(
            "required",
            &q.strength,
            Cell::text(format!("{}/{}", q.met, q.completed)),
            Some(q.pct),
        )
    }));
    all.extend(
        e.failures_by_reason
            .iter()
            .map(|m| measure("failure_reason", &m.name, Cell::Number(m.count), Some(m.pct))),
    );
    let docs = |t: Table| Block::Table(t.shown(Shown::DocumentsOnly).when_empty(WhenEmpty::Omit));
    let mut blocks = vec![
        Block::Table(
            Table::new(
                "enforcement",
                vec![
                    data("measure", Kind::Text),
                    data("name", Kind::Text),
                    data("count", Kind::Text),
                    data("pct", Kind::Percent),
                ],
                all,
            )
            .shown(Shown::DataOnly),
        ),
        Block::Para(vec![
            Span::Text(format!("{} sign-in attempts in the period: ", e.attempts)),
            Span::Strong(format!("{} completed", e.completed)),
            Span::Text(format!(", {} refused or failed.", e.failed)),
        ]),
        Block::Heading("Completed sign-ins that met each strength"),
        Block::Chart(Chart {
            plot: Plot::Bars(
                e.met
                    .iter()
                    .map(|m| Bar {
                        label: m.name.replace('_', " "),
                        value: m.count,
                        text: format!("{} ({})", m.count, fmt_pct(m.pct)),
                    })
                    .collect(),
            ),
            empty: "No completed sign-ins.",
        }),
        Block::Table(
            Table::new(
                "acr",
                vec![
                    text("acr", "Strength achieved (acr)", 3.0),
                    number("count", "Completed sign-ins", 1.5),
                    percent("pct", "Share", 1.0),
                ],
                e.by_acr
                    .iter()
                    .map(|m| vec![Cell::text(&m.name), Cell::Number(m.count), Cell::Percent(m.pct)])
                    .collect(),
            )
            .shown(Shown::DocumentsOnly),
        ),
    ];
    if !e.required.is_empty() {
        blocks.push(Block::Heading("Strengths required by policy"));
        blocks.push(docs(Table::new(
            "required",
            vec![
                text("strength", "Required strength", 3.0),
                number("completed", "Completed sign-ins", 1.5),
                number("met", "Met it", 1.0),
                percent("pct", "Share", 1.0),
            ],
            e.required
                .iter()
                .map(|q| {
                    vec![
                        Cell::text(&q.strength),
                        Cell::Number(q.completed),
                        Cell::Number(q.met),
                        Cell::Percent(q.pct),
                    ]
                })
                .collect(),
        )));
    }
    if !e.failures_by_reason.is_empty() {
        blocks.push(Block::Heading("Refused and failed sign-ins by reason"));
        blocks.push(docs(Table::new(
            "failures",
            vec![
                text("reason", "Reason", 3.0),
                number("count", "Attempts", 1.5),
                percent("pct", "Share", 1.0),
            ],
            e.failures_by_reason
                .iter()
                .map(|m| vec![Cell::code(&m.name), Cell::Number(m.count), Cell::Percent(m.pct)])
                .collect(),
        )));
    }
    Section {
        id: "enforcement",
        title: "Enforcement proof",
        blocks,
    }
}

fn detections(r: &EvidenceReport) -> Section {
    let d = &r.detections;
    Section {
        id: "detections",
        title: "Detections and their handling",
        blocks: vec![
            Block::Para(vec![
                Span::Text(format!(
                    "{} alerts raised in the period: {} handled (acknowledged), ",
                    d.total, d.handled
                )),
                Span::Verdict {
                    text: format!("{} open", d.open),
                    good: d.open == 0,
                },
                Span::Text(".".into()),
            ]),
            Block::Table(
                Table::new(
                    "detections",
                    vec![
                        text("kind", "Detection", 3.0),
                        text("severity", "Severity", 1.2),
                        number("total", "Raised", 1.0),
                        number("handled", "Handled", 1.0),
                        number("open", "Open", 1.0),
                    ],
                    d.by_kind
                        .iter()
                        .map(|k| {
                            vec![
                                Cell::code(&k.kind),
                                Cell::text(&k.severity),
                                Cell::Number(k.total),
                                Cell::Number(k.handled),
                                Cell::Number(k.open),
                            ]
                        })
                        .collect(),
                )
                .when_empty(WhenEmpty::Omit),
            ),
        ],
    }
}

fn audit_chain(r: &EvidenceReport) -> Section {
    let a = &r.audit_chain;
    let mut blocks = vec![
        Block::Table(
            Table::new(
                "audit_chain",
                vec![
                    data("ok", Kind::Flag),
                    data("length", Kind::Number),
                    data("head_hash", Kind::Hash),
                    data("first_broken", Kind::Text),
                ],
                vec![vec![
                    Cell::flag(a.ok, "true", "false", true),
                    Cell::Number(a.length),
                    Cell::Hash(a.head_hash.clone()),
                    Cell::text(a.first_broken.clone().unwrap_or_default()),
                ]],
            )
            .shown(Shown::DataOnly),
        ),
        Block::Para(vec![
            Span::Text(format!(
                "The audit log is a SHA-256 hash chain; every event names the hash of the one before. Verification \
                 recomputed all {} events: ",
                a.length
            )),
            Span::Verdict {
                text: if a.ok {
                    "the chain is intact"
                } else {
                    "the chain is BROKEN"
                }
                .into(),
                good: a.ok,
            },
            Span::Text(".".into()),
        ]),
    ];
    if let Some(b) = &a.first_broken {
        blocks.push(Block::Para(vec![Span::Verdict {
            text: format!("First broken link: {b}"),
            good: false,
        }]));
    }
    blocks.push(Block::Para(vec![
        Span::Strong("Head hash at generation: ".into()),
        Span::Hash(a.head_hash.clone()),
    ]));
    Section {
        id: "audit",
        title: "Audit chain integrity",
        blocks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::evidence::EvidenceInput;

    #[test]
    fn every_data_table_has_a_cell_per_column_and_unique_csv_names() {
        let r = EvidenceReport::build(&EvidenceInput::default(), Period::new(0, 86_400).unwrap(), 86_400);
        let d = build(&r);
        let mut names = vec![];
        for s in &d.sections {
            for b in &s.blocks {
                if let Block::Table(t) = b {
                    assert!(t.rows.iter().all(|row| row.len() == t.columns.len()), "{}", t.name);
                    if t.in_data() {
                        names.push(t.name);
                    }
                    for c in &t.columns {
                        if let Some(k) = c.beneath {
                            assert!(
                                t.columns.iter().any(|p| p.key == k && p.beneath.is_none()),
                                "{}",
                                t.name
                            );
                        }
                    }
                }
            }
        }
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "CSV section names repeat");
        assert_eq!(d.sections[0].id, "summary");
    }
}
