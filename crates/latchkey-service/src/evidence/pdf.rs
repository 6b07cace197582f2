//! PDF: an A4 document an auditor can file. A title page with the key
//! figures, then one section per topic with tables and vector charts; every
//! page carries a header (period) and a footer ("Latchkey evidence report —
//! page N of M", generation time, audit head hash).
//!
//! Written with `pdf-writer` in the builtin Helvetica (no embedded font), so
//! text is measured with Helvetica's published metrics (below) to wrap and
//! truncate it. Layout happens first into per-page drawing lists, so the
//! footer can name the page count. Content streams are left uncompressed:
//! the figures stay searchable in the raw file.

use latchkey_core::evidence::{CoveragePoint, EvidenceReport};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use super::{class_name, fmt_opt, fmt_pct, fmt_share, fmt_time, kind_name, more_note, LIST_LIMIT};

const W: f32 = 595.0;
const H: f32 = 842.0;
const LEFT: f32 = 50.0;
const RIGHT: f32 = W - 50.0;
const CONTENT_W: f32 = RIGHT - LEFT;
const TOP: f32 = 790.0;
const BOTTOM: f32 = 72.0;

type Rgb = (f32, f32, f32);
const INK: Rgb = (0.10, 0.12, 0.17);
const MUTED: Rgb = (0.29, 0.33, 0.41);
const ACCENT: Rgb = (0.12, 0.31, 0.55);
const RULE: Rgb = (0.79, 0.82, 0.88);
const SHADE: Rgb = (0.93, 0.95, 0.97);
const GOOD: Rgb = (0.11, 0.42, 0.21);
const BAD: Rgb = (0.64, 0.13, 0.17);

/// Helvetica and Helvetica-Bold advance widths (1/1000 em) for ASCII 32–126,
/// from the Adobe Core 14 AFM files.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556,
    556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334,
    260, 334, 584,
];
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611,
    556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389,
    280, 389, 584,
];

/// Text in the builtin fonts' WinAnsiEncoding; what it cannot show becomes '?'.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '–' => 0x96,
            '—' => 0x97,
            '·' => 0xB7,
            '…' => 0x85,
            _ => b'?',
        })
        .collect()
}

fn width(s: &str, size: f32, bold: bool) -> f32 {
    let table = if bold { &HELVETICA_BOLD } else { &HELVETICA };
    let units: u32 = win_ansi(s)
        .iter()
        .map(|b| match b {
            32..=126 => table[(*b - 32) as usize] as u32,
            0x97 | 0x85 => 1000,
            0xB7 => 278,
            _ => 556,
        })
        .sum();
    units as f32 * size / 1000.0
}

/// Cut `s` to fit `max` points, ending in "..." when cut.
fn fit(s: &str, size: f32, bold: bool, max: f32) -> String {
    if width(s, size, bold) <= max {
        return s.to_owned();
    }
    let mut out: String = s.to_owned();
    while !out.is_empty() && width(&format!("{out}..."), size, bold) > max {
        out.pop();
    }
    format!("{out}...")
}

/// Greedy word wrap to `max` points.
fn wrap(s: &str, size: f32, bold: bool, max: f32) -> Vec<String> {
    let mut lines = vec![];
    let mut line = String::new();
    for word in s.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if width(&candidate, size, bold) <= max || line.is_empty() {
            line = candidate;
        } else {
            lines.push(std::mem::take(&mut line));
            line = word.to_owned();
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines.into_iter().map(|l| fit(&l, size, bold, max)).collect()
}

enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        bold: bool,
        color: Rgb,
        s: String,
    },
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        color: Rgb,
    },
    Line {
        pts: Vec<(f32, f32)>,
        w: f32,
        color: Rgb,
    },
}

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}
use Align::{Left as L, Right as R};

struct Doc {
    pages: Vec<Vec<Op>>,
    y: f32,
}

impl Doc {
    fn new() -> Self {
        Doc {
            pages: vec![vec![]],
            y: TOP,
        }
    }
    fn ops(&mut self) -> &mut Vec<Op> {
        self.pages.last_mut().expect("a page")
    }
    fn new_page(&mut self) {
        self.pages.push(vec![]);
        self.y = TOP;
    }
    fn ensure(&mut self, h: f32) {
        if self.y - h < BOTTOM {
            self.new_page();
        }
    }
    fn text(&mut self, x: f32, y: f32, size: f32, bold: bool, color: Rgb, s: &str) {
        self.ops().push(Op::Text {
            x,
            y,
            size,
            bold,
            color,
            s: s.to_owned(),
        });
    }
    fn text_right(&mut self, right: f32, y: f32, size: f32, bold: bool, color: Rgb, s: &str) {
        let x = right - width(s, size, bold);
        self.text(x, y, size, bold, color, s);
    }
    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, color: Rgb) {
        self.ops().push(Op::Rect { x, y, w, h, color });
    }
    fn line(&mut self, pts: Vec<(f32, f32)>, w: f32, color: Rgb) {
        self.ops().push(Op::Line { pts, w, color });
    }

    /// A section heading; never left alone at the bottom of a page.
    fn heading(&mut self, s: &str) {
        // Room for the heading, a note and the start of a table.
        self.ensure(120.0);
        if self.y < TOP {
            self.y -= 14.0;
        }
        self.text(LEFT, self.y - 15.0, 15.0, true, ACCENT, s);
        self.line(vec![(LEFT, self.y - 21.0), (RIGHT, self.y - 21.0)], 1.2, ACCENT);
        self.y -= 34.0;
    }
    fn subheading(&mut self, s: &str) {
        self.ensure(90.0);
        self.text(LEFT, self.y - 11.0, 11.0, true, INK, s);
        self.y -= 18.0;
    }
    fn para(&mut self, s: &str, size: f32, color: Rgb) {
        for l in wrap(s, size, false, CONTENT_W) {
            self.ensure(size + 4.0);
            self.text(LEFT, self.y - size, size, false, color, &l);
            self.y -= size + 4.0;
        }
        self.y -= 6.0;
    }
    fn empty(&mut self, s: &str) {
        self.para(s, 9.5, MUTED);
    }

    /// A table: columns as (title, share of the width, alignment). Cells
    /// that do not fit are cut with "..."; the header repeats after a page break.
    fn table(&mut self, cols: &[(&str, f32, Align)], rows: &[Vec<String>]) {
        const ROW: f32 = 16.0;
        const SIZE: f32 = 8.5;
        let total: f32 = cols.iter().map(|c| c.1).sum();
        let widths: Vec<f32> = cols.iter().map(|c| c.1 / total * CONTENT_W).collect();
        let header = |d: &mut Doc| {
            d.rect(LEFT, d.y - ROW, CONTENT_W, ROW, SHADE);
            let mut x = LEFT;
            for (c, w) in cols.iter().zip(&widths) {
                let t = fit(c.0, SIZE, true, w - 8.0);
                match c.2 {
                    L => d.text(x + 4.0, d.y - 11.5, SIZE, true, INK, &t),
                    R => d.text_right(x + w - 4.0, d.y - 11.5, SIZE, true, INK, &t),
                }
                x += w;
            }
            d.line(vec![(LEFT, d.y - ROW), (RIGHT, d.y - ROW)], 0.8, MUTED);
            d.y -= ROW;
        };
        // Small tables stay on one page; long ones break with the header repeated.
        self.ensure(ROW * (rows.len().min(8) as f32 + 1.0) + 4.0);
        header(self);
        for row in rows {
            if self.y - ROW < BOTTOM {
                self.new_page();
                header(self);
            }
            let mut x = LEFT;
            for ((cell, c), w) in row.iter().zip(cols).zip(&widths) {
                let color = match cell.as_str() {
                    "OVERDUE" | "no" | "BROKEN" => BAD,
                    _ => INK,
                };
                let t = fit(cell, SIZE, false, w - 8.0);
                match c.2 {
                    L => self.text(x + 4.0, self.y - 11.5, SIZE, false, color, &t),
                    R => self.text_right(x + w - 4.0, self.y - 11.5, SIZE, false, color, &t),
                }
                x += w;
            }
            self.line(vec![(LEFT, self.y - ROW), (RIGHT, self.y - ROW)], 0.4, RULE);
            self.y -= ROW;
        }
        self.y -= 12.0;
    }

    /// Coverage over time: a line on a 0–100% grid.
    fn coverage_chart(&mut self, points: &[CoveragePoint]) {
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            return self.empty("No data.");
        };
        let (h, left) = (150.0, LEFT + 34.0);
        self.ensure(h + 30.0);
        let (bottom, top) = (self.y - h, self.y - 8.0);
        let pw = RIGHT - left - 10.0;
        let x = |t: i64| {
            left + if last.at > first.at {
                (t - first.at) as f32 / (last.at - first.at) as f32 * pw
            } else {
                pw
            }
        };
        let y = |p: f64| bottom + (p as f32) / 100.0 * (top - bottom);
        for g in [0.0, 25.0, 50.0, 75.0, 100.0] {
            self.line(vec![(left, y(g)), (left + pw, y(g))], 0.5, RULE);
            self.text_right(left - 5.0, y(g) - 3.0, 8.0, false, MUTED, &format!("{g}%"));
        }
        // Before anyone existed there is no coverage to draw (not a 0%).
        self.line(
            points
                .iter()
                .filter(|p| p.users > 0)
                .map(|p| (x(p.at), y(p.pct)))
                .collect(),
            2.0,
            ACCENT,
        );
        let (lx, ly) = (x(last.at), y(last.pct));
        self.rect(lx - 2.5, ly - 2.5, 5.0, 5.0, ACCENT);
        self.text_right(lx - 6.0, (ly + 6.0).min(top - 2.0), 9.0, true, INK, &fmt_pct(last.pct));
        let mid = &points[points.len() / 2];
        self.text(left, bottom - 12.0, 8.0, false, MUTED, &fmt_time(first.at, true));
        let m = fmt_time(mid.at, true);
        self.text(
            x(mid.at) - width(&m, 8.0, false) / 2.0,
            bottom - 12.0,
            8.0,
            false,
            MUTED,
            &m,
        );
        self.text_right(left + pw, bottom - 12.0, 8.0, false, MUTED, &fmt_time(last.at, true));
        self.y = bottom - 26.0;
    }

    /// Horizontal bars scaled to the largest value.
    fn bars(&mut self, items: &[(String, i64, String)]) {
        const ROW: f32 = 18.0;
        let max = items.iter().map(|i| i.1).max().unwrap_or(0).max(1) as f32;
        let (label_w, value_w) = (150.0, 90.0);
        let bw = CONTENT_W - label_w - value_w;
        for (label, v, text) in items {
            self.ensure(ROW);
            let y = self.y - ROW;
            self.text_right(
                LEFT + label_w - 8.0,
                y + 5.0,
                9.0,
                false,
                INK,
                &fit(label, 9.0, false, label_w - 10.0),
            );
            self.rect(LEFT + label_w, y + 2.0, bw, 12.0, SHADE);
            self.rect(LEFT + label_w, y + 2.0, *v as f32 / max * bw, 12.0, ACCENT);
            self.text(LEFT + label_w + bw + 8.0, y + 5.0, 9.0, false, INK, text);
            self.y -= ROW;
        }
        self.y -= 10.0;
    }
}

fn title_page(d: &mut Doc, r: &EvidenceReport) {
    let s = &r.summary;
    d.rect(LEFT, 748.0, 6.0, 50.0, ACCENT);
    d.text(LEFT + 16.0, 772.0, 26.0, true, INK, "MFA evidence report");
    d.text(
        LEFT + 16.0,
        752.0,
        11.0,
        false,
        MUTED,
        "Latchkey · policy intent and enforcement proof",
    );
    d.text(LEFT, 716.0, 10.0, true, INK, "Period");
    d.text(
        LEFT + 80.0,
        716.0,
        10.0,
        false,
        INK,
        &format!("{} to {}", fmt_time(r.period.from, false), fmt_time(r.period.to, false)),
    );
    d.text(LEFT, 700.0, 10.0, true, INK, "Generated");
    d.text(LEFT + 80.0, 700.0, 10.0, false, INK, &fmt_time(r.generated_at, false));

    let cards: [(&str, String, String); 8] = [
        (
            "MFA coverage",
            fmt_share(s.mfa_coverage_pct, s.users),
            format!("{} of {} active users", s.users_with_mfa, s.users),
        ),
        (
            "Privileged users, phishing resistant",
            fmt_share(s.privileged_phishing_resistant_pct, s.privileged_users),
            format!(
                "{} of {} privileged users",
                s.privileged_phishing_resistant, s.privileged_users
            ),
        ),
        (
            "Users on SMS/voice only",
            s.sms_only_users.to_string(),
            "telephony is their only factor".into(),
        ),
        (
            "Active exceptions",
            s.active_exceptions.to_string(),
            "each with end date and approver".into(),
        ),
        (
            "Break-glass tests overdue",
            s.break_glass_tests_overdue.to_string(),
            format!("of {} break-glass accounts", s.break_glass_accounts),
        ),
        (
            "Completed sign-ins",
            s.signins_completed.to_string(),
            format!(
                "{} phishing resistant",
                fmt_share(s.signins_phishing_resistant_pct, s.signins_completed)
            ),
        ),
        (
            "Detections in period",
            s.detections.to_string(),
            format!("{} open", s.detections_open),
        ),
        (
            "Conditional-access policies",
            s.policies.to_string(),
            format!("{} changes in period", s.policy_changes_in_period),
        ),
    ];
    let (cw, ch, gap) = ((CONTENT_W - 12.0) / 2.0, 64.0, 12.0);
    let top = 670.0;
    for (i, (label, value, detail)) in cards.iter().enumerate() {
        let x = LEFT + (i % 2) as f32 * (cw + gap);
        let y = top - (i / 2) as f32 * (ch + gap) - ch;
        d.rect(x, y, cw, ch, SHADE);
        d.rect(x, y, 3.0, ch, ACCENT);
        d.text(
            x + 12.0,
            y + ch - 16.0,
            9.0,
            false,
            MUTED,
            &fit(label, 9.0, false, cw - 20.0),
        );
        d.text(x + 12.0, y + ch - 40.0, 20.0, true, INK, value);
        d.text(
            x + 12.0,
            y + 10.0,
            8.5,
            false,
            MUTED,
            &fit(detail, 8.5, false, cw - 20.0),
        );
    }
    let y = top - 4.0 * (ch + gap) - 14.0;
    d.text(LEFT, y, 11.0, true, INK, "Audit chain");
    let (status, color) = if s.audit_chain_ok {
        ("verified: intact", GOOD)
    } else {
        ("BROKEN", BAD)
    };
    d.text(LEFT + 80.0, y, 11.0, true, color, status);
    d.text(
        LEFT + 80.0 + width(status, 11.0, true) + 8.0,
        y,
        10.0,
        false,
        INK,
        &format!("({} events)", r.audit_chain.length),
    );
    d.text(LEFT, y - 16.0, 9.0, false, MUTED, "Head hash");
    d.text(LEFT + 80.0, y - 16.0, 8.0, false, INK, &s.audit_head_hash);

    d.y = y - 44.0;
    d.text(LEFT, d.y, 11.0, true, INK, "Contents");
    d.y -= 6.0;
    for (i, t) in SECTIONS.iter().enumerate() {
        d.y -= 14.0;
        d.text(LEFT + 10.0, d.y, 9.5, false, INK, &format!("{}. {t}", i + 1));
    }
    d.y -= 20.0;
    d.para(
        "State figures (coverage, privileged accounts, exceptions, break-glass, policies, audit chain) are as of the \
         generation time; activity figures (enforcement, detections, policy changes, coverage over time) cover the period.",
        8.5,
        MUTED,
    );
}

const SECTIONS: [&str; 9] = [
    "MFA coverage",
    "Privileged accounts",
    "Users on SMS or voice only",
    "Active policy exceptions",
    "Break-glass accounts",
    "Conditional-access policies",
    "Enforcement proof",
    "Detections and their handling",
    "Audit chain integrity",
];

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn sections(d: &mut Doc, r: &EvidenceReport) {
    d.new_page();
    d.heading(&format!("1. {}", SECTIONS[0]));
    d.para(
        "A user is covered with at least one active second factor (authenticator app, push, passkey or security key, \
         SMS, voice); recovery codes and temporary passes do not count. Active users only.",
        9.0,
        MUTED,
    );
    d.table(
        &[
            ("Scope", 3.0, L),
            ("Users", 1.0, R),
            ("With MFA", 1.0, R),
            ("Phishing resistant", 1.4, R),
            ("Coverage", 1.0, R),
        ],
        &r.coverage
            .iter()
            .map(|c| {
                vec![
                    c.scope.clone(),
                    c.users.to_string(),
                    c.with_mfa.to_string(),
                    c.phishing_resistant.to_string(),
                    fmt_pct(c.pct),
                ]
            })
            .collect::<Vec<_>>(),
    );
    d.subheading("Coverage over the period");
    d.coverage_chart(&r.coverage_over_time);
    d.subheading("Methods mix (users holding each kind)");
    if r.methods_mix.is_empty() {
        d.empty("No active MFA methods.");
    } else {
        d.bars(
            &r.methods_mix
                .iter()
                .map(|m| (kind_name(&m.kind), m.users, format!("{} ({})", m.users, fmt_pct(m.pct))))
                .collect::<Vec<_>>(),
        );
    }

    d.heading(&format!("2. {}", SECTIONS[1]));
    d.para(
        &format!(
            "Accounts holding an administrative role (admin, helpdesk, security_admin): {} of {} have a phishing-resistant \
             method ({}).",
            r.summary.privileged_phishing_resistant,
            r.summary.privileged_users,
            fmt_share(r.summary.privileged_phishing_resistant_pct, r.summary.privileged_users)
        ),
        9.0,
        MUTED,
    );
    if r.privileged.is_empty() {
        d.empty("No privileged accounts.");
    } else {
        d.table(
            &[
                ("Account", 1.8, L),
                ("Roles", 1.8, L),
                ("Strongest method", 2.2, L),
                ("Class", 1.6, L),
                ("Phishing resistant", 1.6, L),
            ],
            &r.privileged
                .iter()
                .take(LIST_LIMIT)
                .map(|p| {
                    vec![
                        p.username.clone(),
                        p.roles.join(", "),
                        p.strongest_method
                            .as_deref()
                            .map(kind_name)
                            .unwrap_or_else(|| "none".into()),
                        class_name(&p.strength_class).into(),
                        yes(p.phishing_resistant),
                    ]
                })
                .collect::<Vec<_>>(),
        );
        if let Some(n) = more_note(r.privileged.len()) {
            d.para(&n, 9.0, MUTED);
        }
    }

    d.heading(&format!("3. {}", SECTIONS[2]));
    if r.sms_only.is_empty() {
        d.empty("No user relies on telephony alone.");
    } else {
        d.table(
            &[
                ("User", 2.0, L),
                ("Display name", 2.2, L),
                ("Department", 1.6, L),
                ("Methods", 1.4, L),
                ("Privileged", 1.0, L),
            ],
            &r.sms_only
                .iter()
                .take(LIST_LIMIT)
                .map(|u| {
                    vec![
                        u.username.clone(),
                        u.display_name.clone(),
                        u.department.clone().unwrap_or_else(|| "-".into()),
                        u.kinds.join(", "),
                        if u.privileged { "YES".into() } else { "-".into() },
                    ]
                })
                .collect::<Vec<_>>(),
        );
        if let Some(n) = more_note(r.sms_only.len()) {
            d.para(&n, 9.0, MUTED);
        }
    }

    d.heading(&format!("4. {}", SECTIONS[3]));
    if r.exceptions.is_empty() {
        d.empty("No active exceptions.");
    } else {
        d.table(
            &[
                ("Policy", 1.2, L),
                ("Subject", 1.5, L),
                ("Reason", 2.0, L),
                ("Requested by", 1.3, L),
                ("Approved by", 1.2, L),
                ("Ends", 1.1, L),
                ("Days left", 1.0, R),
            ],
            &r.exceptions
                .iter()
                .map(|e| {
                    vec![
                        e.exception.policy_id.clone(),
                        e.exception.subject.clone(),
                        e.exception.reason.clone(),
                        e.exception.requested_by.clone(),
                        e.exception.approved_by.clone(),
                        fmt_time(e.exception.expires_at, true),
                        e.days_left.to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        );
    }

    d.heading(&format!("5. {}", SECTIONS[4]));
    if r.break_glass.is_empty() {
        d.empty("No break-glass accounts.");
    } else {
        d.table(
            &[
                ("Account", 1.5, L),
                ("Every (days)", 1.2, R),
                ("Last test", 1.9, L),
                ("Next test due", 1.9, L),
                ("Status", 1.0, L),
                ("Strongest method", 1.8, L),
            ],
            &r.break_glass
                .iter()
                .map(|b| {
                    vec![
                        b.account.username.clone(),
                        b.account.test_interval_days.to_string(),
                        fmt_opt(b.account.last_test_at),
                        fmt_time(b.next_test_due, false),
                        if b.test_overdue {
                            "OVERDUE".into()
                        } else {
                            "on schedule".into()
                        },
                        b.strongest_method
                            .as_deref()
                            .map(kind_name)
                            .unwrap_or_else(|| "none".into()),
                    ]
                })
                .collect::<Vec<_>>(),
        );
    }

    d.heading(&format!("6. {}", SECTIONS[5]));
    if r.policies.is_empty() {
        d.empty("No conditional-access policies are defined.");
    } else {
        d.table(
            &[
                ("Policy", 2.2, L),
                ("State", 1.1, L),
                ("Version", 0.8, R),
                ("Last changed", 2.0, L),
                ("Changed by", 1.4, L),
                ("Changes in period", 1.6, R),
            ],
            &r.policies
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.state.replace('_', " "),
                        p.version.to_string(),
                        fmt_time(p.updated_at, false),
                        p.changed_by.clone(),
                        p.changes_in_period.to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        );
    }

    let e = &r.enforcement;
    d.heading(&format!("7. {}", SECTIONS[6]));
    d.para(
        &format!(
            "{} sign-in attempts in the period: {} completed, {} refused or failed.",
            e.attempts, e.completed, e.failed
        ),
        9.5,
        INK,
    );
    d.subheading("Completed sign-ins that met each strength");
    d.bars(
        &e.met
            .iter()
            .map(|m| {
                (
                    m.name.replace('_', " "),
                    m.count,
                    format!("{} ({})", m.count, fmt_pct(m.pct)),
                )
            })
            .collect::<Vec<_>>(),
    );
    d.table(
        &[
            ("Strength achieved (acr)", 3.0, L),
            ("Completed sign-ins", 1.5, R),
            ("Share", 1.0, R),
        ],
        &e.by_acr
            .iter()
            .map(|m| vec![m.name.clone(), m.count.to_string(), fmt_pct(m.pct)])
            .collect::<Vec<_>>(),
    );
    if !e.required.is_empty() {
        d.subheading("Strengths required by policy");
        d.table(
            &[
                ("Required strength", 3.0, L),
                ("Completed sign-ins", 1.5, R),
                ("Met it", 1.0, R),
                ("Share", 1.0, R),
            ],
            &e.required
                .iter()
                .map(|q| {
                    vec![
                        q.strength.clone(),
                        q.completed.to_string(),
                        q.met.to_string(),
                        fmt_pct(q.pct),
                    ]
                })
                .collect::<Vec<_>>(),
        );
    }
    if !e.failures_by_reason.is_empty() {
        d.subheading("Refused and failed sign-ins by reason");
        d.table(
            &[("Reason", 3.0, L), ("Attempts", 1.5, R), ("Share", 1.0, R)],
            &e.failures_by_reason
                .iter()
                .map(|m| vec![m.name.replace('_', " "), m.count.to_string(), fmt_pct(m.pct)])
                .collect::<Vec<_>>(),
        );
    }

    let t = &r.detections;
    d.heading(&format!("8. {}", SECTIONS[7]));
    d.para(
        &format!(
            "{} alerts raised in the period: {} handled (acknowledged), {} open.",
            t.total, t.handled, t.open
        ),
        9.5,
        INK,
    );
    if !t.by_kind.is_empty() {
        d.table(
            &[
                ("Detection", 3.0, L),
                ("Severity", 1.2, L),
                ("Raised", 1.0, R),
                ("Handled", 1.0, R),
                ("Open", 1.0, R),
            ],
            &t.by_kind
                .iter()
                .map(|k| {
                    vec![
                        k.kind.replace('_', " "),
                        k.severity.clone(),
                        k.total.to_string(),
                        k.handled.to_string(),
                        k.open.to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        );
    }

    let a = &r.audit_chain;
    d.heading(&format!("9. {}", SECTIONS[8]));
    d.para(
        &format!(
            "The audit log is a SHA-256 hash chain; every event names the hash of the one before. Verification \
             recomputed all {} events: {}.",
            a.length,
            if a.ok {
                "the chain is intact"
            } else {
                "the chain is BROKEN"
            }
        ),
        9.5,
        if a.ok { INK } else { BAD },
    );
    if let Some(b) = &a.first_broken {
        d.para(&format!("First broken link: {b}"), 9.5, BAD);
    }
    d.ensure(20.0);
    d.text(LEFT, d.y - 10.0, 9.5, true, INK, "Head hash at generation:");
    d.text(LEFT + 125.0, d.y - 10.0, 8.5, false, INK, &a.head_hash);
    d.y -= 20.0;
}

fn page_frame(d: &mut Vec<Op>, r: &EvidenceReport, n: usize, total: usize) {
    let period = format!(
        "Period {} to {}",
        fmt_time(r.period.from, true),
        fmt_time(r.period.to, true)
    );
    let mut ops = vec![
        Op::Text {
            x: LEFT,
            y: 815.0,
            size: 8.0,
            bold: true,
            color: MUTED,
            s: "Latchkey evidence report".into(),
        },
        Op::Text {
            x: RIGHT - width(&period, 8.0, false),
            y: 815.0,
            size: 8.0,
            bold: false,
            color: MUTED,
            s: period,
        },
        Op::Line {
            pts: vec![(LEFT, 808.0), (RIGHT, 808.0)],
            w: 0.5,
            color: RULE,
        },
        Op::Line {
            pts: vec![(LEFT, 56.0), (RIGHT, 56.0)],
            w: 0.5,
            color: RULE,
        },
    ];
    // Two runs: text with a non-ASCII dash is written as a hex string, and
    // the page numbers should stay searchable.
    let lead = "Latchkey evidence report — ";
    ops.push(Op::Text {
        x: LEFT,
        y: 44.0,
        size: 8.0,
        bold: false,
        color: MUTED,
        s: lead.into(),
    });
    ops.push(Op::Text {
        x: LEFT + width(lead, 8.0, false),
        y: 44.0,
        size: 8.0,
        bold: false,
        color: MUTED,
        s: format!("page {n} of {total}"),
    });
    let generated = format!("Generated {}", fmt_time(r.generated_at, false));
    ops.push(Op::Text {
        x: RIGHT - width(&generated, 8.0, false),
        y: 44.0,
        size: 8.0,
        bold: false,
        color: MUTED,
        s: generated,
    });
    ops.push(Op::Text {
        x: LEFT,
        y: 32.0,
        size: 7.0,
        bold: false,
        color: MUTED,
        s: format!("Audit head {}", r.audit_chain.head_hash),
    });
    d.extend(ops);
}

pub fn render(r: &EvidenceReport) -> Vec<u8> {
    let mut d = Doc::new();
    title_page(&mut d, r);
    sections(&mut d, r);
    let total = d.pages.len();
    for (i, page) in d.pages.iter_mut().enumerate() {
        page_frame(page, r, i + 1, total);
    }

    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let first_page = 10;
    let page_ids: Vec<Ref> = (0..total).map(|i| Ref::new(first_page + 2 * i as i32)).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(page_ids.iter().copied()).count(total as i32);
    pdf.type1_font(regular)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.document_info(info)
        .title(TextStr("Latchkey MFA evidence report"))
        .producer(TextStr("Latchkey"));
    for (i, ops) in d.pages.iter().enumerate() {
        let id = page_ids[i];
        let content_id = Ref::new(id.get() + 1);
        let mut page = pdf.page(id);
        page.media_box(Rect::new(0.0, 0.0, W, H))
            .parent(tree)
            .contents(content_id);
        let mut res = page.resources();
        let mut fonts = res.fonts();
        fonts.pair(Name(b"F1"), regular);
        fonts.pair(Name(b"F2"), bold);
        fonts.finish();
        res.finish();
        page.finish();

        let mut c = Content::new();
        for op in ops {
            match op {
                Op::Rect { x, y, w, h, color } => {
                    c.set_fill_rgb(color.0, color.1, color.2);
                    c.rect(*x, *y, *w, *h);
                    c.fill_nonzero();
                }
                Op::Line { pts, w, color } => {
                    if let Some((first, rest)) = pts.split_first() {
                        c.set_stroke_rgb(color.0, color.1, color.2);
                        c.set_line_width(*w);
                        c.move_to(first.0, first.1);
                        for p in rest {
                            c.line_to(p.0, p.1);
                        }
                        c.stroke();
                    }
                }
                Op::Text {
                    x,
                    y,
                    size,
                    bold,
                    color,
                    s,
                } => {
                    c.set_fill_rgb(color.0, color.1, color.2);
                    c.begin_text();
                    c.set_font(Name(if *bold { b"F2" } else { b"F1" }), *size);
                    c.next_line(*x, *y);
                    c.show(Str(&win_ansi(s)));
                    c.end_text();
                }
            }
        }
        pdf.stream(content_id, &c.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_measured_with_helvetica_metrics() {
        // "Hi" = H (722) + i (222) at 10 pt.
        assert!((width("Hi", 10.0, false) - 9.44).abs() < 1e-3);
        assert!(width("Hi", 10.0, true) > width("Hi", 10.0, false));
        let cut = fit("a rather long reason that will not fit", 9.0, false, 60.0);
        assert!(cut.ends_with("...") && width(&cut, 9.0, false) <= 60.0, "{cut}");
        assert_eq!(wrap("one two three", 10.0, false, 40.0), vec!["one two", "three"]);
        assert_eq!(win_ansi("a—b€"), vec![b'a', 0x97, b'b', b'?']);
    }
}
