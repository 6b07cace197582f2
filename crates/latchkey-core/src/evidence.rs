//! Evidence reports: what audits and insurers look for, "policy intent plus
//! enforcement proof", computed from plain data the store loads.
//!
//! Two kinds of figures, and the report says which is which:
//! - **state** as of the generation time (`now`): coverage, privileged
//!   accounts, SMS-only users, active exceptions, break-glass accounts, the
//!   policy set, the audit chain;
//! - **activity** within the period `[from, to]`: enforcement (completed
//!   sign-ins by strength), detections and their handling, policy changes,
//!   and coverage over time (reconstructed from method add/remove events).
//!
//! A report is built in one step and has no states of its own:
//! ```text
//!  EvidenceInput ──build(now)──▶ EvidenceReport ──render──▶ html | pdf | json | csv
//! ```
//! Method kinds are compared as strings so kinds added later (push, sms,
//! voice from other features) are counted without a change here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Longest period a report may cover (about five years).
pub const MAX_PERIOD_SECS: i64 = 5 * 366 * 86_400;
/// At most this many points on the coverage-over-time chart.
pub const MAX_TIMELINE_POINTS: i64 = 60;

/// Method kinds that are not a second factor on their own: a password is the
/// first factor, recovery codes and passes are for getting back in.
const NOT_MFA: [&str; 3] = ["password", "recovery_codes", "temporary_access_pass"];
/// Telephony factors (SIM swapping, social engineering).
const TELEPHONY: [&str; 2] = ["sms", "voice"];

/// Whether a registered method of this kind counts as MFA coverage.
pub fn is_mfa_kind(kind: &str) -> bool {
    !NOT_MFA.contains(&kind)
}

/// Rank of a method kind for "strongest method": WebAuthn (phishing
/// resistant) above app-based push/TOTP above telephony above anything else.
pub fn method_rank(kind: &str) -> u8 {
    match kind {
        "webauthn" => 4,
        "push" => 3,
        "totp" => 2,
        k if TELEPHONY.contains(&k) => 1,
        k if is_mfa_kind(k) => 1,
        _ => 0,
    }
}

/// The class an auditor reads next to a method.
pub fn method_class(kind: &str) -> &'static str {
    match kind {
        "webauthn" => "phishing_resistant",
        "push" | "totp" => "app_based",
        k if TELEPHONY.contains(&k) => "telephony",
        k if is_mfa_kind(k) => "other",
        _ => "none",
    }
}

/// The reporting period, unix seconds, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub from: i64,
    pub to: i64,
}

impl Period {
    pub fn new(from: i64, to: i64) -> Result<Self, CoreError> {
        if from > to {
            return Err(CoreError::InvalidInput("the period's 'from' is after its 'to'".into()));
        }
        if to - from > MAX_PERIOD_SECS {
            return Err(CoreError::InvalidInput("a report covers at most five years".into()));
        }
        Ok(Self { from, to })
    }
    pub fn contains(&self, t: i64) -> bool {
        (self.from..=self.to).contains(&t)
    }
}

// ---- input -------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRow {
    pub username: String,
    pub display_name: String,
    pub department: Option<String>,
    /// Role names (admin, helpdesk, security_admin, auditor).
    pub roles: Vec<String>,
    pub active: bool,
    pub created_at: i64,
}

/// A registered method as it is now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodRow {
    pub id: String,
    pub username: String,
    pub kind: String,
    /// Pending methods (awaiting their first code) do not count.
    pub active: bool,
    pub registered_at: i64,
    pub confirmed_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodChange {
    Added,
    Removed,
}

/// A method registration or removal from the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodEvent {
    pub at: i64,
    pub username: String,
    pub method_id: String,
    pub kind: String,
    pub change: MethodChange,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionRow {
    pub id: String,
    pub policy_id: String,
    /// "user:alice" or "group:finance".
    pub subject: String,
    pub reason: String,
    pub requested_by: String,
    pub approved_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassRow {
    pub username: String,
    pub test_interval_days: i64,
    pub created_at: i64,
    pub last_test_at: Option<i64>,
    pub last_use_at: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRow {
    pub id: String,
    pub name: String,
    pub state: String,
    pub version: i64,
    pub updated_at: i64,
    /// Who made the current version.
    pub changed_by: String,
    /// Versions created within the period.
    pub changes_in_period: i64,
}

/// Sign-ins in the period grouped (in SQL) by what the report needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignInGroup {
    pub result: String,
    pub reason: Option<String>,
    pub acr: Option<String>,
    /// Strengths the conditional-access decision required (empty: none recorded).
    pub required: Vec<String>,
    pub count: i64,
}

/// Alerts raised in the period, grouped by kind and severity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertGroup {
    pub kind: String,
    pub severity: String,
    pub handled: i64,
    pub open: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditChainStatus {
    pub ok: bool,
    pub length: i64,
    pub head_hash: String,
    pub first_broken: Option<String>,
}

/// An account that left `active` (disabled or deleted) in the period, from
/// the lifecycle history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaverRow {
    pub username: String,
    pub display_name: String,
    /// disabled or deleted
    pub state: String,
    pub reason: Option<String>,
    pub actor: String,
    /// Where the change came from: `local` (an administrator) or a directory.
    pub source: String,
    /// When the source changed (a local change: when it was requested).
    pub source_changed_at: i64,
    /// When Latchkey revoked the account's access.
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct EvidenceInput {
    pub users: Vec<UserRow>,
    pub methods: Vec<MethodRow>,
    pub method_events: Vec<MethodEvent>,
    pub exceptions: Vec<ExceptionRow>,
    pub break_glass: Vec<BreakGlassRow>,
    pub policies: Vec<PolicyRow>,
    pub signins: Vec<SignInGroup>,
    pub alerts: Vec<AlertGroup>,
    pub audit: AuditChainStatus,
    pub leavers: Vec<LeaverRow>,
}

// ---- output ------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceReport {
    pub generated_at: i64,
    pub period: Period,
    pub summary: Summary,
    pub coverage: Vec<CoverageRow>,
    pub coverage_over_time: Vec<CoveragePoint>,
    pub methods_mix: Vec<MethodMix>,
    pub privileged: Vec<PrivilegedAccount>,
    pub sms_only: Vec<SmsOnlyUser>,
    pub exceptions: Vec<ActiveException>,
    pub break_glass: Vec<BreakGlassStatus>,
    pub policies: Vec<PolicyRow>,
    pub enforcement: Enforcement,
    pub detections: Detections,
    pub audit_chain: AuditChainStatus,
    #[serde(default)]
    pub leavers: Vec<Leaver>,
    #[serde(default)]
    pub without_backup: Vec<NoBackupUser>,
}

/// A leaver of the period and how long their access outlived the change at
/// its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaver {
    #[serde(flatten)]
    pub leaver: LeaverRow,
    /// Seconds from the source's change to Latchkey's revocation.
    pub revocation_secs: Option<i64>,
}

/// An active user with no backup: at most one second-factor method and no
/// recovery codes (the field guide asks for backups registered in advance).
/// The same facts as an SMS-only user: who, where, which method kinds.
pub type NoBackupUser = SmsOnlyUser;

/// The key figures, first page of every rendering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub users: i64,
    pub users_with_mfa: i64,
    pub mfa_coverage_pct: f64,
    pub privileged_users: i64,
    pub privileged_phishing_resistant: i64,
    pub privileged_phishing_resistant_pct: f64,
    pub sms_only_users: i64,
    pub active_exceptions: i64,
    pub break_glass_accounts: i64,
    pub break_glass_tests_overdue: i64,
    pub policies: i64,
    pub policy_changes_in_period: i64,
    pub signins_completed: i64,
    pub signins_phishing_resistant_pct: f64,
    pub detections: i64,
    pub detections_open: i64,
    pub audit_chain_ok: bool,
    pub audit_head_hash: String,
    #[serde(default)]
    pub leavers: i64,
    /// The longest time from a leaver's change at its source to revocation.
    #[serde(default)]
    pub leavers_longest_revocation_secs: Option<i64>,
    #[serde(default)]
    pub users_without_backup: i64,
}

/// Coverage of one population: "all users" first, then each department.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverageRow {
    pub scope: String,
    pub users: i64,
    pub with_mfa: i64,
    pub phishing_resistant: i64,
    pub pct: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoveragePoint {
    pub at: i64,
    pub users: i64,
    pub with_mfa: i64,
    pub pct: f64,
}

/// How many users hold at least one active method of a kind (a user with
/// TOTP and a passkey counts under both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodMix {
    pub kind: String,
    pub users: i64,
    pub pct: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivilegedAccount {
    pub username: String,
    pub display_name: String,
    pub roles: Vec<String>,
    /// None when the account has no MFA method at all.
    pub strongest_method: Option<String>,
    pub strength_class: String,
    pub phishing_resistant: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsOnlyUser {
    pub username: String,
    pub display_name: String,
    pub department: Option<String>,
    pub kinds: Vec<String>,
    pub privileged: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveException {
    #[serde(flatten)]
    pub exception: ExceptionRow,
    /// Whole days until it ends (rounded down).
    pub days_left: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakGlassStatus {
    #[serde(flatten)]
    pub account: BreakGlassRow,
    pub next_test_due: i64,
    pub test_overdue: bool,
    pub strongest_method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enforcement {
    pub attempts: i64,
    pub completed: i64,
    pub failed: i64,
    /// Completed sign-ins by the strength they satisfied (`acr`).
    pub by_acr: Vec<CountShare>,
    /// Completed sign-ins that met at least each built-in strength.
    pub met: Vec<CountShare>,
    /// Completed sign-ins where a policy required a strength, and how many met it.
    pub required: Vec<RequiredStrength>,
    pub failures_by_reason: Vec<CountShare>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountShare {
    pub name: String,
    pub count: i64,
    pub pct: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequiredStrength {
    pub strength: String,
    pub completed: i64,
    pub met: i64,
    pub pct: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detections {
    pub total: i64,
    pub handled: i64,
    pub open: i64,
    pub by_kind: Vec<DetectionRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionRow {
    pub kind: String,
    pub severity: String,
    pub total: i64,
    pub handled: i64,
    pub open: i64,
}

// ---- computation ---------------------------------------------------------------

/// Percentage with one decimal, 0 for an empty population.
pub fn pct(n: i64, d: i64) -> f64 {
    if d <= 0 {
        return 0.0;
    }
    // Integer rounding to per-mille, so figures are exact and stable.
    ((n * 2000 + d) / (2 * d)) as f64 / 10.0
}

const BUILTIN: [&str; 3] = ["mfa", "passwordless_mfa", "phishing_resistant"];

/// Rank of a strength name for "met at least": built-ins in order; custom
/// strengths only meet themselves.
fn strength_rank(s: &str) -> Option<usize> {
    BUILTIN.iter().position(|b| *b == s)
}

fn meets(acr: &str, required: &str) -> bool {
    match (strength_rank(acr), strength_rank(required)) {
        (Some(a), Some(r)) => a >= r,
        _ => acr == required,
    }
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 0,
        "high" => 1,
        "medium" => 2,
        "low" => 3,
        _ => 4,
    }
}

/// A method's life as far as the record shows: present from `start`, until `end`.
struct Interval {
    username: String,
    start: i64,
    end: Option<i64>,
}

/// Method lifetimes: current methods from their add event (or confirmation),
/// removed ones from their add event (or "always", if it predates the
/// chain) until their removal.
fn method_intervals(input: &EvidenceInput) -> Vec<Interval> {
    let mut added: BTreeMap<&str, i64> = BTreeMap::new();
    let mut removed: BTreeMap<&str, (&MethodEvent, i64)> = BTreeMap::new();
    for e in &input.method_events {
        match e.change {
            MethodChange::Added => {
                added.entry(&e.method_id).or_insert(e.at);
            }
            MethodChange::Removed => {
                removed.entry(&e.method_id).or_insert((e, e.at));
            }
        }
    }
    let mut out = vec![];
    let current: BTreeSet<&str> = input.methods.iter().map(|m| m.id.as_str()).collect();
    for m in input.methods.iter().filter(|m| m.active && is_mfa_kind(&m.kind)) {
        let confirmed = m.confirmed_at.unwrap_or(m.registered_at);
        let start = added.get(m.id.as_str()).map_or(confirmed, |a| (*a).max(confirmed));
        out.push(Interval {
            username: m.username.clone(),
            start,
            end: None,
        });
    }
    for (id, (e, at)) in removed {
        if current.contains(id) || !is_mfa_kind(&e.kind) {
            continue;
        }
        out.push(Interval {
            username: e.username.clone(),
            start: added.get(id).copied().unwrap_or(i64::MIN),
            end: Some(at),
        });
    }
    out
}

fn timeline_points(p: Period) -> Vec<i64> {
    let span = p.to - p.from;
    // Whole days, so points fall on the same time of day.
    let days = (span + (MAX_TIMELINE_POINTS - 1) * 86_400 - 1) / ((MAX_TIMELINE_POINTS - 1) * 86_400);
    let step = days.max(1) * 86_400;
    let mut pts: Vec<i64> = (0..).map(|k| p.from + k * step).take_while(|t| *t < p.to).collect();
    pts.push(p.to);
    pts
}

impl EvidenceReport {
    pub fn build(input: &EvidenceInput, period: Period, now: i64) -> EvidenceReport {
        let users: Vec<&UserRow> = input.users.iter().filter(|u| u.active).collect();
        let known: BTreeSet<&str> = users.iter().map(|u| u.username.as_str()).collect();
        let mut kinds_by_user: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for m in input.methods.iter().filter(|m| m.active && is_mfa_kind(&m.kind)) {
            if known.contains(m.username.as_str()) {
                kinds_by_user.entry(&m.username).or_default().insert(&m.kind);
            }
        }
        let kinds = |u: &str| kinds_by_user.get(u).cloned().unwrap_or_default();
        let has_pr = |u: &str| kinds(u).contains("webauthn");
        let strongest = |u: &str| {
            kinds(u)
                .into_iter()
                .max_by_key(|k| (method_rank(k), *k))
                .map(str::to_owned)
        };
        let privileged = |u: &UserRow| u.roles.iter().any(|r| r != "auditor");

        // Coverage, overall then per department (users without one listed last).
        let row = |scope: String, group: &[&&UserRow]| CoverageRow {
            scope,
            users: group.len() as i64,
            with_mfa: group.iter().filter(|u| !kinds(&u.username).is_empty()).count() as i64,
            phishing_resistant: group.iter().filter(|u| has_pr(&u.username)).count() as i64,
            pct: pct(
                group.iter().filter(|u| !kinds(&u.username).is_empty()).count() as i64,
                group.len() as i64,
            ),
        };
        let all: Vec<&&UserRow> = users.iter().collect();
        let mut coverage = vec![row("All users".into(), &all)];
        let mut by_dept: BTreeMap<Option<&str>, Vec<&&UserRow>> = BTreeMap::new();
        for u in &users {
            by_dept.entry(u.department.as_deref()).or_default().push(u);
        }
        let mut depts: Vec<_> = by_dept.into_iter().collect();
        depts.sort_by_key(|(d, _)| (d.is_none(), d.map(str::to_owned)));
        for (d, group) in depts {
            coverage.push(row(d.map_or_else(|| "(no department)".into(), str::to_owned), &group));
        }

        // Coverage over time.
        let intervals = method_intervals(input);
        // Points after the generation time would only repeat the present.
        let until = period.to.min(now).max(period.from);
        let coverage_over_time = timeline_points(Period {
            from: period.from,
            to: until,
        })
        .into_iter()
        .map(|t| {
            let population: BTreeSet<&str> = users
                .iter()
                .filter(|u| u.created_at <= t)
                .map(|u| u.username.as_str())
                .collect();
            let covered: BTreeSet<&str> = intervals
                .iter()
                .filter(|i| i.start <= t && i.end.is_none_or(|e| e > t))
                .map(|i| i.username.as_str())
                .filter(|u| population.contains(u))
                .collect();
            CoveragePoint {
                at: t,
                users: population.len() as i64,
                with_mfa: covered.len() as i64,
                pct: pct(covered.len() as i64, population.len() as i64),
            }
        })
        .collect();

        // Methods mix: strongest kinds first.
        let mut mix: BTreeMap<&str, i64> = BTreeMap::new();
        for ks in kinds_by_user.values() {
            for k in ks {
                *mix.entry(k).or_default() += 1;
            }
        }
        let mut methods_mix: Vec<MethodMix> = mix
            .into_iter()
            .map(|(k, n)| MethodMix {
                kind: k.to_owned(),
                users: n,
                pct: pct(n, users.len() as i64),
            })
            .collect();
        methods_mix.sort_by(|a, b| {
            method_rank(&b.kind)
                .cmp(&method_rank(&a.kind))
                .then(a.kind.cmp(&b.kind))
        });

        let privileged_accounts: Vec<PrivilegedAccount> = users
            .iter()
            .filter(|u| privileged(u))
            .map(|u| {
                let s = strongest(&u.username);
                PrivilegedAccount {
                    username: u.username.clone(),
                    display_name: u.display_name.clone(),
                    roles: u.roles.clone(),
                    strength_class: s.as_deref().map_or("none", method_class).to_owned(),
                    phishing_resistant: has_pr(&u.username),
                    strongest_method: s,
                }
            })
            .collect();

        let with_methods = |u: &UserRow| SmsOnlyUser {
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            department: u.department.clone(),
            kinds: kinds(&u.username).into_iter().map(str::to_owned).collect(),
            privileged: privileged(u),
        };
        let sms_only: Vec<SmsOnlyUser> = users
            .iter()
            .filter(|u| {
                let k = kinds(&u.username);
                !k.is_empty() && k.iter().all(|k| TELEPHONY.contains(k))
            })
            .map(|u| with_methods(u))
            .collect();

        let mut exceptions: Vec<ActiveException> = input
            .exceptions
            .iter()
            .filter(|e| e.expires_at > now)
            .map(|e| ActiveException {
                exception: e.clone(),
                days_left: (e.expires_at - now) / 86_400,
            })
            .collect();
        exceptions
            .sort_by(|a, b| (a.exception.expires_at, &a.exception.id).cmp(&(b.exception.expires_at, &b.exception.id)));

        let break_glass: Vec<BreakGlassStatus> = input
            .break_glass
            .iter()
            .map(|b| {
                // The same rule as the policy console: due one interval after
                // the last test (or after designation, if never tested).
                let due = b.last_test_at.unwrap_or(b.created_at) + b.test_interval_days * 86_400;
                BreakGlassStatus {
                    account: b.clone(),
                    next_test_due: due,
                    test_overdue: now > due,
                    strongest_method: strongest(&b.username),
                }
            })
            .collect();

        let policies = input.policies.clone();

        let enforcement = enforcement(&input.signins);
        let detections = detections(&input.alerts);

        let mut leavers: Vec<Leaver> = input
            .leavers
            .iter()
            .map(|l| Leaver {
                leaver: l.clone(),
                revocation_secs: l.revoked_at.map(|r| (r - l.source_changed_at).max(0)),
            })
            .collect();
        leavers.sort_by(|a, b| {
            (a.leaver.source_changed_at, &a.leaver.username).cmp(&(b.leaver.source_changed_at, &b.leaver.username))
        });

        // Backups: a second second-factor method, or recovery codes.
        let mut factor_methods: BTreeMap<&str, usize> = BTreeMap::new();
        let mut has_codes: BTreeSet<&str> = BTreeSet::new();
        for m in input.methods.iter().filter(|m| m.active) {
            if is_mfa_kind(&m.kind) {
                *factor_methods.entry(&m.username).or_default() += 1;
            } else if m.kind == "recovery_codes" {
                has_codes.insert(&m.username);
            }
        }
        let without_backup: Vec<NoBackupUser> = users
            .iter()
            .filter(|u| {
                factor_methods.get(u.username.as_str()).copied().unwrap_or(0) < 2
                    && !has_codes.contains(u.username.as_str())
            })
            .map(|u| with_methods(u))
            .collect();

        let pr_privileged = privileged_accounts.iter().filter(|p| p.phishing_resistant).count() as i64;
        let summary = Summary {
            users: coverage[0].users,
            users_with_mfa: coverage[0].with_mfa,
            mfa_coverage_pct: coverage[0].pct,
            privileged_users: privileged_accounts.len() as i64,
            privileged_phishing_resistant: pr_privileged,
            privileged_phishing_resistant_pct: pct(pr_privileged, privileged_accounts.len() as i64),
            sms_only_users: sms_only.len() as i64,
            active_exceptions: exceptions.len() as i64,
            break_glass_accounts: break_glass.len() as i64,
            break_glass_tests_overdue: break_glass.iter().filter(|b| b.test_overdue).count() as i64,
            policies: policies.len() as i64,
            policy_changes_in_period: policies.iter().map(|p| p.changes_in_period).sum(),
            signins_completed: enforcement.completed,
            signins_phishing_resistant_pct: enforcement
                .met
                .iter()
                .find(|m| m.name == "phishing_resistant")
                .map_or(0.0, |m| m.pct),
            detections: detections.total,
            detections_open: detections.open,
            audit_chain_ok: input.audit.ok,
            audit_head_hash: input.audit.head_hash.clone(),
            leavers: leavers.len() as i64,
            leavers_longest_revocation_secs: leavers.iter().filter_map(|l| l.revocation_secs).max(),
            users_without_backup: without_backup.len() as i64,
        };
        EvidenceReport {
            generated_at: now,
            period,
            summary,
            coverage,
            coverage_over_time,
            methods_mix,
            privileged: privileged_accounts,
            sms_only,
            exceptions,
            break_glass,
            policies,
            enforcement,
            detections,
            audit_chain: input.audit.clone(),
            leavers,
            without_backup,
        }
    }
}

fn enforcement(groups: &[SignInGroup]) -> Enforcement {
    let completed_groups: Vec<&SignInGroup> = groups.iter().filter(|g| g.result == "success").collect();
    let attempts: i64 = groups.iter().map(|g| g.count).sum();
    let completed: i64 = completed_groups.iter().map(|g| g.count).sum();

    let mut acr: BTreeMap<String, i64> = BTreeMap::new();
    for g in &completed_groups {
        *acr.entry(g.acr.clone().unwrap_or_else(|| "none".into())).or_default() += g.count;
    }
    let mut by_acr: Vec<CountShare> = acr
        .into_iter()
        .map(|(name, count)| CountShare {
            pct: pct(count, completed),
            name,
            count,
        })
        .collect();
    by_acr.sort_by_key(|c| (std::cmp::Reverse(strength_rank(&c.name)), c.name.clone()));

    let met = BUILTIN
        .iter()
        .map(|s| {
            let n = completed_groups
                .iter()
                .filter(|g| g.acr.as_deref().is_some_and(|a| meets(a, s)))
                .map(|g| g.count)
                .sum();
            CountShare {
                name: (*s).to_owned(),
                count: n,
                pct: pct(n, completed),
            }
        })
        .collect();

    let mut req: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for g in &completed_groups {
        for r in &g.required {
            let e = req.entry(r.clone()).or_default();
            e.0 += g.count;
            if g.acr.as_deref().is_some_and(|a| meets(a, r)) {
                e.1 += g.count;
            }
        }
    }
    let required = req
        .into_iter()
        .map(|(strength, (c, m))| RequiredStrength {
            strength,
            completed: c,
            met: m,
            pct: pct(m, c),
        })
        .collect();

    let mut reasons: BTreeMap<String, i64> = BTreeMap::new();
    for g in groups.iter().filter(|g| g.result != "success") {
        *reasons
            .entry(g.reason.clone().unwrap_or_else(|| g.result.clone()))
            .or_default() += g.count;
    }
    let failed = attempts - completed;
    let mut failures_by_reason: Vec<CountShare> = reasons
        .into_iter()
        .map(|(name, count)| CountShare {
            pct: pct(count, failed),
            name,
            count,
        })
        .collect();
    failures_by_reason.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));

    Enforcement {
        attempts,
        completed,
        failed,
        by_acr,
        met,
        required,
        failures_by_reason,
    }
}

fn detections(groups: &[AlertGroup]) -> Detections {
    let mut by_kind: Vec<DetectionRow> = groups
        .iter()
        .map(|g| DetectionRow {
            kind: g.kind.clone(),
            severity: g.severity.clone(),
            total: g.handled + g.open,
            handled: g.handled,
            open: g.open,
        })
        .collect();
    by_kind.sort_by(|a, b| {
        severity_rank(&a.severity)
            .cmp(&severity_rank(&b.severity))
            .then(a.kind.cmp(&b.kind))
    });
    Detections {
        total: by_kind.iter().map(|d| d.total).sum(),
        handled: by_kind.iter().map(|d| d.handled).sum(),
        open: by_kind.iter().map(|d| d.open).sum(),
        by_kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const NOW: i64 = 100 * DAY;

    fn user(name: &str, dept: Option<&str>, roles: &[&str], created_at: i64) -> UserRow {
        UserRow {
            username: name.into(),
            display_name: name.to_uppercase(),
            department: dept.map(Into::into),
            roles: roles.iter().map(|r| (*r).into()).collect(),
            active: true,
            created_at,
        }
    }

    fn method(id: &str, user: &str, kind: &str, at: i64) -> MethodRow {
        MethodRow {
            id: id.into(),
            username: user.into(),
            kind: kind.into(),
            active: true,
            registered_at: at,
            confirmed_at: Some(at),
        }
    }

    fn group(result: &str, acr: Option<&str>, required: &[&str], count: i64) -> SignInGroup {
        SignInGroup {
            result: result.into(),
            reason: (result != "success").then(|| "invalid_code".into()),
            acr: acr.map(Into::into),
            required: required.iter().map(|r| (*r).into()).collect(),
            count,
        }
    }

    fn sample() -> EvidenceInput {
        EvidenceInput {
            users: vec![
                user("root", None, &["admin"], 0),
                user("helen", Some("IT"), &["helpdesk"], 0),
                user("sam", None, &["security_admin"], 0),
                user("alice", Some("Finance"), &[], 0),
                user("bob", Some("Finance"), &[], 0),
                user("carol", Some("Sales"), &[], 50 * DAY),
                user("dave", Some("Sales"), &["auditor"], 0),
                UserRow {
                    active: false,
                    ..user("gone", Some("Sales"), &[], 0)
                },
            ],
            methods: vec![
                method("m1", "root", "webauthn", 10 * DAY),
                method("m2", "root", "totp", 5 * DAY),
                method("m3", "helen", "totp", 20 * DAY),
                method("m4", "alice", "sms", 30 * DAY),
                method("m5", "bob", "recovery_codes", 1),
                MethodRow {
                    active: false,
                    ..method("m6", "bob", "totp", 40 * DAY)
                },
                method("m7", "carol", "push", 60 * DAY),
                method("m8", "gone", "totp", 1),
            ],
            method_events: vec![
                MethodEvent {
                    at: 15 * DAY,
                    username: "bob".into(),
                    method_id: "old".into(),
                    kind: "totp".into(),
                    change: MethodChange::Added,
                },
                MethodEvent {
                    at: 45 * DAY,
                    username: "bob".into(),
                    method_id: "old".into(),
                    kind: "totp".into(),
                    change: MethodChange::Removed,
                },
            ],
            exceptions: vec![
                ExceptionRow {
                    id: "x1".into(),
                    policy_id: "p1".into(),
                    subject: "user:alice".into(),
                    reason: "travel".into(),
                    requested_by: "helen".into(),
                    approved_by: "root".into(),
                    created_at: 90 * DAY,
                    expires_at: NOW + 3 * DAY + 5,
                },
                ExceptionRow {
                    id: "x0".into(),
                    expires_at: NOW - 1,
                    ..Default::default()
                },
            ],
            break_glass: vec![
                BreakGlassRow {
                    username: "root".into(),
                    test_interval_days: 30,
                    created_at: 0,
                    last_test_at: Some(60 * DAY),
                    last_use_at: Some(60 * DAY),
                },
                BreakGlassRow {
                    username: "helen".into(),
                    test_interval_days: 90,
                    created_at: 20 * DAY,
                    last_test_at: None,
                    last_use_at: None,
                },
            ],
            policies: vec![PolicyRow {
                id: "p1".into(),
                name: "MFA for all".into(),
                state: "enabled".into(),
                version: 3,
                updated_at: 95 * DAY,
                changed_by: "user:root".into(),
                changes_in_period: 2,
            }],
            signins: vec![
                group("success", Some("phishing_resistant"), &["mfa"], 30),
                group("success", Some("mfa"), &["mfa"], 50),
                group("success", Some("passwordless_mfa"), &[], 20),
                group("failure", None, &[], 7),
                SignInGroup {
                    reason: Some("blocked_by_policy".into()),
                    ..group("failure", None, &["phishing_resistant"], 3)
                },
            ],
            alerts: vec![
                AlertGroup {
                    kind: "push_fatigue".into(),
                    severity: "high".into(),
                    handled: 2,
                    open: 1,
                },
                AlertGroup {
                    kind: "break_glass.signin".into(),
                    severity: "critical".into(),
                    handled: 1,
                    open: 0,
                },
            ],
            audit: AuditChainStatus {
                ok: true,
                length: 42,
                head_hash: "ab".repeat(32),
                first_broken: None,
            },
            leavers: vec![],
        }
    }

    #[test]
    fn leavers_are_timed_and_users_without_backup_listed() {
        let user = |name: &str, active: bool| UserRow {
            username: name.into(),
            display_name: name.to_uppercase(),
            active,
            ..Default::default()
        };
        let method = |id: &str, user: &str, kind: &str| MethodRow {
            id: id.into(),
            username: user.into(),
            kind: kind.into(),
            active: true,
            ..Default::default()
        };
        let input = EvidenceInput {
            users: vec![
                user("codes", true),
                user("gone", false),
                user("none", true),
                user("one", true),
                user("two", true),
            ],
            methods: vec![
                method("a", "one", "totp"),
                method("b", "two", "totp"),
                method("c", "two", "webauthn"),
                method("d", "codes", "sms"),
                method("e", "codes", "recovery_codes"),
                method("f", "gone", "totp"),
            ],
            leavers: vec![LeaverRow {
                username: "gone".into(),
                display_name: "GONE".into(),
                state: "disabled".into(),
                actor: "user:boss".into(),
                source: "directory".into(),
                source_changed_at: 1_000,
                revoked_at: Some(1_090),
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = EvidenceReport::build(&input, Period::new(0, 86_400).unwrap(), 86_400);
        // The leaver is out of coverage, and timed.
        assert_eq!(r.summary.users, 4);
        assert_eq!(r.leavers.len(), 1);
        assert_eq!(r.leavers[0].revocation_secs, Some(90));
        assert_eq!(r.summary.leavers_longest_revocation_secs, Some(90));
        let names: Vec<&str> = r.without_backup.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names, ["none", "one"]);
        assert_eq!(r.summary.users_without_backup, 2);
    }

    fn build() -> EvidenceReport {
        EvidenceReport::build(&sample(), Period::new(0, NOW).unwrap(), NOW)
    }

    #[test]
    fn percentages_round_half_up_to_one_decimal() {
        assert_eq!(pct(1, 3), 33.3);
        assert_eq!(pct(2, 3), 66.7);
        assert_eq!(pct(1, 8), 12.5);
        assert_eq!(pct(0, 0), 0.0);
        assert_eq!(pct(5, 5), 100.0);
    }

    #[test]
    fn coverage_counts_active_users_with_an_active_second_factor() {
        let r = build();
        // root, helen, alice, carol covered; bob has only recovery codes and a
        // pending TOTP; dave and sam none; "gone" is disabled and not counted.
        assert_eq!(r.summary.users, 7);
        assert_eq!(r.summary.users_with_mfa, 4);
        assert_eq!(r.summary.mfa_coverage_pct, 57.1);
        let scopes: Vec<(&str, i64, i64, i64)> = r
            .coverage
            .iter()
            .map(|c| (c.scope.as_str(), c.users, c.with_mfa, c.phishing_resistant))
            .collect();
        assert_eq!(
            scopes,
            vec![
                ("All users", 7, 4, 1),
                ("Finance", 2, 1, 0),
                ("IT", 1, 1, 0),
                ("Sales", 2, 1, 0),
                ("(no department)", 2, 1, 1),
            ]
        );
        assert_eq!(r.coverage[1].pct, 50.0);
    }

    #[test]
    fn privileged_accounts_show_their_strongest_method() {
        let r = build();
        let p: Vec<(&str, Option<&str>, &str, bool)> = r
            .privileged
            .iter()
            .map(|p| {
                (
                    p.username.as_str(),
                    p.strongest_method.as_deref(),
                    p.strength_class.as_str(),
                    p.phishing_resistant,
                )
            })
            .collect();
        // Auditors read only: not privileged.
        assert_eq!(
            p,
            vec![
                ("root", Some("webauthn"), "phishing_resistant", true),
                ("helen", Some("totp"), "app_based", false),
                ("sam", None, "none", false),
            ]
        );
        assert_eq!(r.summary.privileged_phishing_resistant, 1);
        assert_eq!(r.summary.privileged_phishing_resistant_pct, 33.3);
    }

    #[test]
    fn sms_only_users_are_those_whose_every_factor_is_telephony() {
        let r = build();
        assert_eq!(r.sms_only.len(), 1);
        assert_eq!(r.sms_only[0].username, "alice");
        assert_eq!(r.sms_only[0].kinds, vec!["sms"]);
        assert!(!r.sms_only[0].privileged);
    }

    #[test]
    fn only_unexpired_exceptions_are_listed_with_days_left() {
        let r = build();
        assert_eq!(r.exceptions.len(), 1);
        assert_eq!(r.exceptions[0].exception.id, "x1");
        assert_eq!(r.exceptions[0].exception.approved_by, "root");
        assert_eq!(r.exceptions[0].days_left, 3);
    }

    #[test]
    fn break_glass_tests_are_overdue_one_interval_after_the_last() {
        let r = build();
        let root = &r.break_glass[0];
        assert_eq!(root.next_test_due, 90 * DAY);
        assert!(root.test_overdue);
        let helen = &r.break_glass[1];
        // Never tested: due 90 days after designation (day 110), not yet.
        assert_eq!(helen.next_test_due, 110 * DAY);
        assert!(!helen.test_overdue);
        assert_eq!(r.summary.break_glass_tests_overdue, 1);
    }

    #[test]
    fn enforcement_shares_of_completed_signins() {
        let e = build().enforcement;
        assert_eq!((e.attempts, e.completed, e.failed), (110, 100, 10));
        let met: Vec<(&str, i64, f64)> = e.met.iter().map(|m| (m.name.as_str(), m.count, m.pct)).collect();
        assert_eq!(
            met,
            vec![
                ("mfa", 100, 100.0),
                ("passwordless_mfa", 50, 50.0),
                ("phishing_resistant", 30, 30.0)
            ]
        );
        let acr: Vec<(&str, i64)> = e.by_acr.iter().map(|m| (m.name.as_str(), m.count)).collect();
        assert_eq!(
            acr,
            vec![("phishing_resistant", 30), ("passwordless_mfa", 20), ("mfa", 50)]
        );
        assert_eq!(e.required.len(), 1);
        assert_eq!((e.required[0].completed, e.required[0].met), (80, 80));
        let reasons: Vec<(&str, i64)> = e
            .failures_by_reason
            .iter()
            .map(|m| (m.name.as_str(), m.count))
            .collect();
        assert_eq!(reasons, vec![("invalid_code", 7), ("blocked_by_policy", 3)]);
    }

    #[test]
    fn custom_strengths_only_meet_themselves() {
        assert!(meets("phishing_resistant", "mfa"));
        assert!(!meets("mfa", "phishing_resistant"));
        assert!(meets("contractors", "contractors"));
        assert!(!meets("contractors", "mfa"));
    }

    #[test]
    fn detections_grouped_most_severe_first() {
        let d = build().detections;
        assert_eq!((d.total, d.handled, d.open), (4, 3, 1));
        assert_eq!(d.by_kind[0].kind, "break_glass.signin");
        assert_eq!(d.by_kind[1].open, 1);
    }

    #[test]
    fn coverage_over_time_follows_method_history() {
        let r = build();
        let at = |day: i64| r.coverage_over_time.iter().find(|p| p.at == day * DAY).unwrap();
        // 100 days in at most 60 points: a point every 2 days.
        assert_eq!(r.coverage_over_time.len(), 51);
        assert_eq!((at(0).users, at(0).with_mfa), (6, 0));
        assert_eq!(at(14).with_mfa, 1);
        // Day 16: root (totp from day 5, key from 10), bob (totp added day 15).
        assert_eq!(at(16).with_mfa, 2);
        // Day 30: + helen (20), alice (30).
        assert_eq!(at(30).with_mfa, 4);
        assert_eq!(at(44).with_mfa, 4);
        // Day 46: bob's TOTP was removed on day 45.
        assert_eq!(at(46).with_mfa, 3);
        // Day 60: carol exists from day 50 and registered push on day 60.
        assert_eq!((at(60).users, at(60).with_mfa, at(60).pct), (7, 4, 57.1));
        assert_eq!(r.coverage_over_time.last().unwrap().with_mfa, r.summary.users_with_mfa);
    }

    #[test]
    fn timeline_is_bounded() {
        let pts = timeline_points(Period::new(0, 1000 * DAY).unwrap());
        assert!(pts.len() as i64 <= MAX_TIMELINE_POINTS + 1);
        assert_eq!(*pts.last().unwrap(), 1000 * DAY);
        assert_eq!(timeline_points(Period::new(5, 5).unwrap()), vec![5]);
    }

    #[test]
    fn methods_mix_counts_users_per_kind_strongest_first() {
        let mix: Vec<(String, i64)> = build().methods_mix.into_iter().map(|m| (m.kind, m.users)).collect();
        assert_eq!(
            mix,
            vec![
                ("webauthn".into(), 1),
                ("push".into(), 1),
                ("totp".into(), 2),
                ("sms".into(), 1)
            ]
        );
    }

    #[test]
    fn a_period_must_run_forwards_and_be_bounded() {
        assert!(Period::new(10, 5).is_err());
        assert!(Period::new(0, MAX_PERIOD_SECS + 1).is_err());
        assert!(Period::new(5, 5).is_ok());
    }

    #[test]
    fn summary_carries_the_key_figures() {
        let s = build().summary;
        assert_eq!(s.active_exceptions, 1);
        assert_eq!(s.policy_changes_in_period, 2);
        assert_eq!(s.signins_completed, 100);
        assert_eq!(s.signins_phishing_resistant_pct, 30.0);
        assert_eq!((s.detections, s.detections_open), (4, 1));
        assert!(s.audit_chain_ok);
        assert_eq!(s.audit_head_hash.len(), 64);
    }
}
