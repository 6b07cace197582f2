//! Replay: run a proposed policy set against stored sign-ins and report who
//! would have been blocked, asked for a stronger method, or newly prompted —
//! before anyone enables it.
//!
//! Each successful historic sign-in is evaluated under the current and the
//! proposed set (as of `now`, so expired exceptions don't count) and lands in
//! exactly one bucket:
//! ```text
//!  proposed blocks ─────────────────────────────────────────▶ blocked
//!  methods used don't satisfy the proposed strengths ───────▶ stronger_method
//!  proposed requires something the current set didn't ─────▶ newly_prompted
//!  otherwise ───────────────────────────────────────────────▶ unchanged
//! ```
//! The log keeps no device posture, so the device is unknown in replay: a
//! compliant-device requirement shows up as blocked, which is what it would
//! do to a sign-in from an unenrolled device.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Role, VerifyMethod};
use crate::policy::{evaluate, AccessContext, PolicyException, PolicySet, UserFacts};

/// An owned user profile (what [`UserFacts`] borrows from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub username: String,
    pub groups: Vec<String>,
    pub roles: Vec<Role>,
    pub department: Option<String>,
    pub break_glass: bool,
}

impl UserProfile {
    pub fn facts(&self) -> UserFacts<'_> {
        UserFacts {
            username: &self.username,
            groups: &self.groups,
            roles: &self.roles,
            department: self.department.as_deref(),
            break_glass: self.break_glass,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoricSignIn {
    pub at: i64,
    pub username: String,
    pub application: Option<String>,
    pub ip: Option<IpAddr>,
    pub methods: Vec<VerifyMethod>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayOutcome {
    Blocked,
    StrongerMethod,
    NewlyPrompted,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRow {
    pub at: i64,
    pub username: String,
    pub application: String,
    pub outcome: ReplayOutcome,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayReport {
    pub signins: usize,
    pub unchanged: usize,
    pub blocked: Vec<ReplayRow>,
    pub stronger_method: Vec<ReplayRow>,
    pub newly_prompted: Vec<ReplayRow>,
    /// Affected users per outcome.
    pub users: BTreeMap<String, BTreeSet<String>>,
    /// Sign-ins of users that no longer exist (skipped).
    pub unknown_users: usize,
}

pub fn replay(
    current: &PolicySet,
    proposed: &PolicySet,
    exceptions: &[PolicyException],
    users: &BTreeMap<String, UserProfile>,
    history: &[HistoricSignIn],
    now: i64,
) -> ReplayReport {
    let mut r = ReplayReport::default();
    for s in history {
        let Some(u) = users.get(&s.username) else {
            r.unknown_users += 1;
            continue;
        };
        r.signins += 1;
        let ctx = AccessContext {
            application: s.application.clone(),
            ip: s.ip,
            ..Default::default()
        };
        let before = evaluate(current, exceptions, &u.facts(), &ctx, now);
        let after = evaluate(proposed, exceptions, &u.facts(), &ctx, now);
        let (outcome, detail) = if after.is_blocked() {
            (ReplayOutcome::Blocked, after.block_reason().unwrap_or_default())
        } else if !after.strengths_satisfied(&s.methods, None) {
            (
                ReplayOutcome::StrongerMethod,
                format!(
                    "used {} but {} is required",
                    s.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join("+"),
                    after.required_strengths.join(" and ")
                ),
            )
        } else if after
            .required_strengths
            .iter()
            .any(|n| !before.required_strengths.contains(n))
            || after.sign_in_frequency_secs.unwrap_or(i64::MAX) < before.sign_in_frequency_secs.unwrap_or(i64::MAX)
        {
            (
                ReplayOutcome::NewlyPrompted,
                format!(
                    "would be prompted for {} (sign-in frequency {:?})",
                    after.required_strengths.join(" and "),
                    after.sign_in_frequency_secs
                ),
            )
        } else {
            r.unchanged += 1;
            continue;
        };
        let row = ReplayRow {
            at: s.at,
            username: s.username.clone(),
            application: ctx.application().to_owned(),
            outcome,
            detail,
        };
        let key = serde_json::to_value(outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        r.users.entry(key).or_default().insert(s.username.clone());
        match outcome {
            ReplayOutcome::Blocked => r.blocked.push(row),
            ReplayOutcome::StrongerMethod => r.stronger_method.push(row),
            _ => r.newly_prompted.push(row),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::*;
    use VerifyMethod::*;

    fn p(id: &str, roles: Vec<Role>, grant: GrantControl) -> ConditionalAccessPolicy {
        ConditionalAccessPolicy {
            id: id.into(),
            name: id.into(),
            state: PolicyState::Enabled,
            assignments: Assignments {
                users: IncludeExclude {
                    include: if roles.is_empty() { vec![ALL.into()] } else { vec![] },
                    exclude: vec![],
                },
                roles: IncludeExclude {
                    include: roles,
                    exclude: vec![],
                },
                applications: IncludeExclude {
                    include: vec![ALL.into()],
                    exclude: vec![],
                },
                ..Default::default()
            },
            conditions: Default::default(),
            grant: vec![grant],
            session: Default::default(),
        }
    }

    #[test]
    fn replay_sorts_sign_ins_into_buckets() {
        let profile = |name: &str, roles: Vec<Role>| UserProfile {
            username: name.into(),
            groups: vec![],
            roles,
            department: None,
            break_glass: false,
        };
        let users: BTreeMap<String, UserProfile> = [
            ("root".to_owned(), profile("root", vec![Role::Admin])),
            ("ann".to_owned(), profile("ann", vec![])),
            ("kim".to_owned(), profile("kim", vec![Role::Auditor])),
        ]
        .into_iter()
        .collect();
        let signin = |u: &str, methods: Vec<VerifyMethod>| HistoricSignIn {
            at: 1,
            username: u.into(),
            application: None,
            ip: None,
            methods,
        };
        let history = vec![
            signin("root", vec![Password, Totp]),
            signin("root", vec![Webauthn]),
            signin("ann", vec![Password, Totp]),
            signin("kim", vec![Password, Sms]),
            signin("gone", vec![Password, Totp]),
        ];
        let proposed = PolicySet {
            policies: vec![
                p(
                    "admins",
                    vec![Role::Admin],
                    GrantControl::RequireStrength("phishing_resistant".into()),
                ),
                p("auditors", vec![Role::Auditor], GrantControl::Block),
                p("all", vec![], GrantControl::RequireStrength("mfa".into())),
            ],
            ..Default::default()
        }
        .validated()
        .unwrap();
        let r = replay(&PolicySet::default(), &proposed, &[], &users, &history, 10);
        assert_eq!(r.signins, 4);
        assert_eq!(r.unknown_users, 1);
        assert_eq!(r.blocked.len(), 1);
        assert_eq!(r.blocked[0].username, "kim");
        assert_eq!(r.stronger_method.len(), 1);
        assert_eq!(r.stronger_method[0].username, "root");
        // root's WebAuthn sign-in and ann's TOTP one are newly asked for a named strength they meet.
        assert_eq!(r.newly_prompted.len(), 2);
        assert_eq!(r.unchanged, 0);
        let same = replay(&proposed, &proposed, &[], &users, &history, 10);
        assert_eq!(same.newly_prompted.len(), 0);
        assert_eq!(same.unchanged, 2);
    }
}
