//! The bootstrap-path analyzer: proves, for every user, that some sequence of
//! methods they have (or the helpdesk can issue: a TAP) gets them to a sign-in
//! that lets them register security info, under a given policy set.
//!
//! ```text
//!  for each user, scenario (current methods | phone lost: totp/push/sms/voice gone),
//!           target (register_security_info | device enrollment, when a policy needs a compliant device):
//!    exists context (unknown device; no address or one inside each named location)
//!      such that evaluate(..) is not Block
//!      and some subset of the available methods reaches `mfa` and every required strength
//!    ──yes──▶ Reachable{via}
//!    ──no───▶ LockedOut{why}
//! ```
//! The device is always taken as unknown: a user bootstrapping is on a new or
//! wiped phone that is not enrolled yet, which is exactly when the circular
//! traps bite. Locations are taken at their most favourable (the user can go
//! to the office).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::VerifyMethod;
use crate::policy::{
    assigned, evaluate, AccessContext, Decision, GrantControl, PolicyException, PolicySet, PolicyState, UserAction,
    UserFacts,
};
use crate::strength::AuthStrength;

/// The application a device signs in to while enrolling in management.
pub const DEVICE_ENROLLMENT_APPLICATION: &str = "device-enrollment";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyzerOptions {
    /// The helpdesk can issue a Temporary Access Pass.
    pub tap_available: bool,
    pub enrollment_application: String,
}

impl Default for AnalyzerOptions {
    fn default() -> Self {
        Self {
            tap_available: true,
            enrollment_application: DEVICE_ENROLLMENT_APPLICATION.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// With every method the user has now.
    Current,
    /// New, lost or wiped phone (authenticator restore blocked): only what
    /// doesn't live on the phone is left.
    PhoneLost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    RegisterSecurityInfo,
    DeviceEnrollment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathResult {
    pub scenario: Scenario,
    pub target: Target,
    pub reachable: bool,
    /// The methods of the path found (`temporary_access_pass` = issued by the helpdesk).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<VerifyMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserReport {
    pub username: String,
    pub break_glass: bool,
    pub locked_out: bool,
    pub paths: Vec<PathResult>,
    /// Findings that are not lockouts (a break-glass account without a
    /// phishing-resistant key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

impl UserReport {
    /// One line naming who is locked out and why.
    pub fn summary(&self) -> String {
        let whys: Vec<String> = self
            .paths
            .iter()
            .filter(|p| !p.reachable)
            .map(|p| {
                format!(
                    "{}/{}: {}",
                    snake(&p.scenario),
                    snake(&p.target),
                    p.why.clone().unwrap_or_default()
                )
            })
            .collect();
        format!("{}: {}", self.username, whys.join("; "))
    }
}

fn snake<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A user as the analyzer sees them.
#[derive(Debug, Clone)]
pub struct AnalyzedUser<'a> {
    pub facts: UserFacts<'a>,
    /// Steps the user can perform today: `password` if they have one, plus
    /// each active second factor.
    pub methods: Vec<VerifyMethod>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyzerReport {
    pub users: usize,
    pub locked_out: Vec<UserReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

impl AnalyzerReport {
    pub fn locked_usernames(&self) -> Vec<String> {
        self.locked_out.iter().map(|u| u.username.clone()).collect()
    }
}

fn on_phone(m: VerifyMethod) -> bool {
    matches!(
        m,
        VerifyMethod::Totp | VerifyMethod::Push | VerifyMethod::Sms | VerifyMethod::Voice
    )
}

/// The smallest subset of `available` that completes a sign-in under `d`.
fn path(d: &Decision, available: &[VerifyMethod]) -> Option<Vec<VerifyMethod>> {
    let n = available.len().min(12);
    let mut best: Option<Vec<VerifyMethod>> = None;
    for mask in 1u32..(1 << n) {
        let set: Vec<VerifyMethod> = (0..n).filter(|i| mask & (1 << i) != 0).map(|i| available[i]).collect();
        if best.as_ref().is_some_and(|b| b.len() <= set.len()) {
            continue;
        }
        if AuthStrength::achieved(&set).is_some() && d.strengths_satisfied(&set, None) {
            best = Some(set);
        }
    }
    best
}

fn contexts(set: &PolicySet, application: Option<&str>, action: Option<UserAction>) -> Vec<AccessContext> {
    let mut ips: Vec<Option<IpAddr>> = vec![None];
    ips.extend(
        set.named_locations
            .iter()
            .filter_map(|l| l.ranges.first().map(|r| Some(r.network()))),
    );
    ips.into_iter()
        .map(|ip| AccessContext {
            application: application.map(str::to_owned),
            action,
            ip,
            device: None,
            risk: Default::default(),
        })
        .collect()
}

fn names(ms: &[VerifyMethod]) -> String {
    if ms.is_empty() {
        "no method".into()
    } else {
        ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
    }
}

fn check(
    set: &PolicySet,
    exceptions: &[PolicyException],
    user: &UserFacts,
    ctxs: &[AccessContext],
    available: &[VerifyMethod],
    tap_available: bool,
    now: i64,
) -> Result<Vec<VerifyMethod>, String> {
    let mut first_why = None;
    for c in ctxs {
        let d = evaluate(set, exceptions, user, c, now);
        if d.is_blocked() {
            first_why.get_or_insert_with(|| d.block_reason().unwrap_or_else(|| "blocked".into()));
            continue;
        }
        if let Some(p) = path(&d, available) {
            return Ok(p);
        }
        first_why.get_or_insert_with(|| {
            let needs = if d.required_strengths.is_empty() {
                "mfa".to_owned()
            } else {
                d.required_strengths.join(" and ")
            };
            let by: Vec<String> = d.applied.iter().map(|r| format!("'{}'", r.policy_name)).collect();
            let by = if by.is_empty() {
                String::new()
            } else {
                format!(" (policy {})", by.join(", "))
            };
            let user_methods: Vec<VerifyMethod> = available
                .iter()
                .copied()
                .filter(|m| *m != VerifyMethod::TemporaryAccessPass)
                .collect();
            format!(
                "requires {needs}{by}, and the user has {}{}; none satisfies it",
                names(&user_methods),
                if tap_available {
                    " plus a helpdesk TAP"
                } else {
                    " and no TAP can be issued"
                }
            )
        });
    }
    Err(first_why.unwrap_or_else(|| "no context to sign in from".into()))
}

/// Analyze one user.
pub fn analyze_user(
    set: &PolicySet,
    exceptions: &[PolicyException],
    user: &AnalyzedUser,
    opts: &AnalyzerOptions,
    now: i64,
) -> UserReport {
    let facts = &user.facts;
    let needs_compliant_device = set.policies.iter().any(|p| {
        p.state == PolicyState::Enabled && p.grant.contains(&GrantControl::RequireCompliantDevice) && assigned(p, facts)
    }) && !facts.break_glass;
    let register = contexts(set, None, Some(UserAction::RegisterSecurityInfo));
    let enroll = contexts(set, Some(&opts.enrollment_application), None);
    let mut paths = vec![];
    for scenario in [Scenario::Current, Scenario::PhoneLost] {
        let mut available: Vec<VerifyMethod> = user
            .methods
            .iter()
            .copied()
            .filter(|m| scenario == Scenario::Current || !on_phone(*m))
            .collect();
        if opts.tap_available && !facts.break_glass {
            available.push(VerifyMethod::TemporaryAccessPass);
        }
        available.dedup();
        let mut targets = vec![(Target::RegisterSecurityInfo, &register)];
        if needs_compliant_device {
            targets.push((Target::DeviceEnrollment, &enroll));
        }
        for (target, ctxs) in targets {
            let r = check(set, exceptions, facts, ctxs, &available, opts.tap_available, now);
            paths.push(match r {
                Ok(via) => PathResult {
                    scenario,
                    target,
                    reachable: true,
                    via,
                    why: None,
                },
                Err(why) => PathResult {
                    scenario,
                    target,
                    reachable: false,
                    via: vec![],
                    why: Some(match target {
                        Target::RegisterSecurityInfo => why,
                        Target::DeviceEnrollment => format!(
                            "requires a compliant device, but device enrollment ('{}') {why}",
                            opts.enrollment_application
                        ),
                    }),
                },
            });
        }
    }
    let mut findings = vec![];
    if facts.break_glass && !user.methods.contains(&VerifyMethod::Webauthn) {
        findings.push(format!(
            "break-glass account '{}' has no phishing-resistant key",
            facts.username
        ));
    }
    // A break-glass account is never locked out by policy (it is excluded),
    // but one with nothing to sign in with is: the helpdesk can't rescue it.
    let locked_out = paths.iter().any(|p| !p.reachable);
    UserReport {
        username: facts.username.to_owned(),
        break_glass: facts.break_glass,
        locked_out,
        paths,
        findings,
    }
}

/// Analyze every user.
pub fn analyze(
    set: &PolicySet,
    exceptions: &[PolicyException],
    users: &[AnalyzedUser],
    opts: &AnalyzerOptions,
    now: i64,
) -> AnalyzerReport {
    let mut report = AnalyzerReport {
        users: users.len(),
        ..Default::default()
    };
    for u in users {
        let r = analyze_user(set, exceptions, u, opts, now);
        report.findings.extend(r.findings.iter().cloned());
        if r.locked_out {
            report.locked_out.push(r);
        }
    }
    report
}

/// Users a proposed set locks out that the current set doesn't.
pub fn newly_locked(current: &AnalyzerReport, proposed: &AnalyzerReport) -> Vec<String> {
    let before = current.locked_usernames();
    proposed
        .locked_out
        .iter()
        .filter(|u| !before.contains(&u.username))
        .map(|u| u.username.clone())
        .collect()
}

#[cfg(test)]
mod tests;
