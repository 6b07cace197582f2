//! Staged rollout: waves (admins → pilot group → departments), each with a
//! registration campaign, and per-wave coverage.
//!
//! ```text
//!  NotStarted ──(nudge_from)──▶ Nudge{deadline} ──(enforce_from = deadline)──▶ Enforced
//! ```
//! A wave becomes a conditional-access policy for its audience requiring the
//! wave's strength: report-only while nudging (the sign-in records what would
//! be required and the user is shown the deadline), enabled once enforced.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Role, VerifyMethod};
use crate::policy::{
    Assignments, ConditionalAccessPolicy, Conditions, GrantControl, IncludeExclude, PolicySet, PolicyState,
    SessionControls, UserFacts, ALL,
};
use crate::strength::AuthStrength;
use crate::CoreError;

/// Who a wave covers: anyone matching any list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveAudience {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departments: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutWave {
    pub id: String,
    pub name: String,
    /// Order of the waves (admins first).
    pub position: i64,
    pub audience: WaveAudience,
    /// The strength the campaign registers people for.
    pub strength: String,
    /// Nudging starts (unix seconds).
    pub nudge_from: i64,
    /// The visible deadline: enforced from here on.
    pub enforce_from: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum CampaignPhase {
    NotStarted,
    Nudge { deadline: i64 },
    Enforced,
}

impl RolloutWave {
    pub fn validate(&self, set: &PolicySet) -> Result<(), CoreError> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(CoreError::InvalidInput("wave name must be 1-200 characters".into()));
        }
        let a = &self.audience;
        if a.roles.is_empty() && a.groups.is_empty() && a.departments.is_empty() && a.users.is_empty() {
            return Err(CoreError::InvalidInput(
                "a wave needs an audience (roles, groups, departments or users)".into(),
            ));
        }
        if set.strength(&self.strength).is_none() {
            return Err(CoreError::InvalidInput(format!("unknown strength '{}'", self.strength)));
        }
        if self.enforce_from < self.nudge_from {
            return Err(CoreError::InvalidInput(
                "enforce_from (the deadline) must not be before nudge_from".into(),
            ));
        }
        Ok(())
    }

    pub fn phase(&self, now: i64) -> CampaignPhase {
        if now >= self.enforce_from {
            CampaignPhase::Enforced
        } else if now >= self.nudge_from {
            CampaignPhase::Nudge {
                deadline: self.enforce_from,
            }
        } else {
            CampaignPhase::NotStarted
        }
    }

    pub fn includes(&self, user: &UserFacts) -> bool {
        let a = &self.audience;
        a.users.iter().any(|u| u == ALL || u == user.username)
            || user.roles.iter().any(|r| a.roles.contains(r))
            || user.groups.iter().any(|g| a.groups.contains(g))
            || user.department.is_some_and(|d| a.departments.iter().any(|x| x == d))
    }

    /// The policy this wave's campaign amounts to right now, if any.
    pub fn as_policy(&self, now: i64) -> Option<ConditionalAccessPolicy> {
        let state = match self.phase(now) {
            CampaignPhase::NotStarted => return None,
            CampaignPhase::Nudge { .. } => PolicyState::ReportOnly,
            CampaignPhase::Enforced => PolicyState::Enabled,
        };
        let inc = |v: Vec<String>| IncludeExclude {
            include: v,
            exclude: vec![],
        };
        Some(ConditionalAccessPolicy {
            id: format!("rollout:{}", self.id),
            name: format!("Rollout wave '{}'", self.name),
            state,
            assignments: Assignments {
                users: inc(self.audience.users.clone()),
                groups: inc(self.audience.groups.clone()),
                roles: IncludeExclude {
                    include: self.audience.roles.clone(),
                    exclude: vec![],
                },
                departments: inc(self.audience.departments.clone()),
                applications: inc(vec![ALL.into()]),
                user_actions: vec![],
            },
            conditions: Conditions::default(),
            grant: vec![GrantControl::RequireStrength(self.strength.clone())],
            session: SessionControls::default(),
        })
    }
}

/// Add each started wave to a policy set as its policy.
pub fn with_waves(set: &PolicySet, waves: &[RolloutWave], now: i64) -> PolicySet {
    let mut out = set.clone();
    out.policies.extend(waves.iter().filter_map(|w| w.as_policy(now)));
    out.policies.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// How many users of a wave hold which strength.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveCoverage {
    pub wave_id: String,
    pub users: usize,
    /// Users whose registered methods reach the wave's strength.
    pub meeting_target: usize,
    /// The strongest built-in strength each user can reach: `none`, `mfa`, ...
    pub by_strength: BTreeMap<String, usize>,
    /// Users not yet meeting the target (first 100).
    pub missing: Vec<String>,
}

pub fn coverage(wave: &RolloutWave, set: &PolicySet, users: &[(UserFacts, Vec<VerifyMethod>)]) -> WaveCoverage {
    let target = set.strength(&wave.strength);
    let mut c = WaveCoverage {
        wave_id: wave.id.clone(),
        ..Default::default()
    };
    for (u, methods) in users.iter().filter(|(u, _)| wave.includes(u)) {
        c.users += 1;
        let best = AuthStrength::achieved(methods).map_or("none", |s| s.as_str());
        *c.by_strength.entry(best.to_owned()).or_default() += 1;
        if target.as_ref().is_some_and(|t| t.satisfied_by(methods, None)) {
            c.meeting_target += 1;
        } else if c.missing.len() < 100 {
            c.missing.push(u.username.to_owned());
        }
    }
    c
}

/// What a user in a nudging wave is told at sign-in: register this strength
/// before the deadline, after which sign-in requires it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationNudge {
    pub wave_id: String,
    pub wave_name: String,
    pub strength: String,
    pub deadline: i64,
}

/// The campaigns nudging this user now: waves that include them, in their
/// nudge phase, whose strength their registered methods do not reach yet.
/// Break-glass accounts are outside conditional access and never nudged.
pub fn nudges(
    waves: &[RolloutWave],
    set: &PolicySet,
    user: &UserFacts,
    methods: &[VerifyMethod],
    now: i64,
) -> Vec<RegistrationNudge> {
    if user.break_glass {
        return vec![];
    }
    waves
        .iter()
        .filter(|w| w.includes(user))
        .filter_map(|w| match w.phase(now) {
            CampaignPhase::Nudge { deadline } => Some((w, deadline)),
            _ => None,
        })
        .filter(|(w, _)| !set.strength(&w.strength).is_some_and(|s| s.satisfied_by(methods, None)))
        .map(|(w, deadline)| RegistrationNudge {
            wave_id: w.id.clone(),
            wave_name: w.name.clone(),
            strength: w.strength.clone(),
            deadline,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{evaluate, AccessContext};
    use VerifyMethod::*;

    fn wave() -> RolloutWave {
        RolloutWave {
            id: "w1".into(),
            name: "admins".into(),
            position: 1,
            audience: WaveAudience {
                roles: vec![Role::Admin],
                departments: vec!["Finance".into()],
                ..Default::default()
            },
            strength: "phishing_resistant".into(),
            nudge_from: 100,
            enforce_from: 200,
        }
    }

    #[test]
    fn campaign_phases_follow_the_clock() {
        let w = wave();
        assert_eq!(w.phase(99), CampaignPhase::NotStarted);
        assert_eq!(w.phase(100), CampaignPhase::Nudge { deadline: 200 });
        assert_eq!(w.phase(200), CampaignPhase::Enforced);
        assert!(w.as_policy(99).is_none());
        assert_eq!(w.as_policy(150).unwrap().state, PolicyState::ReportOnly);
        assert_eq!(w.as_policy(250).unwrap().state, PolicyState::Enabled);
    }

    #[test]
    fn a_nudging_wave_never_blocks_and_an_enforced_one_requires_its_strength() {
        let roles = [Role::Admin];
        let u = UserFacts {
            username: "root",
            groups: &[],
            roles: &roles,
            department: None,
            break_glass: false,
        };
        let set = PolicySet::default();
        let d = evaluate(
            &with_waves(&set, &[wave()], 150),
            &[],
            &u,
            &AccessContext::default(),
            150,
        );
        assert!(d.required_strengths.is_empty());
        assert_eq!(d.report_only.len(), 1);
        let d = evaluate(
            &with_waves(&set, &[wave()], 250),
            &[],
            &u,
            &AccessContext::default(),
            250,
        );
        assert_eq!(d.required_strengths, vec!["phishing_resistant"]);
    }

    #[test]
    fn coverage_counts_users_by_strength() {
        let roles = [Role::Admin];
        let mk = |name, department| UserFacts {
            username: name,
            groups: &[],
            roles: &[],
            department,
            break_glass: false,
        };
        let admin = UserFacts {
            username: "root",
            groups: &[],
            roles: &roles,
            department: None,
            break_glass: false,
        };
        let users = vec![
            (admin, vec![Password, Webauthn]),
            (mk("ann", Some("Finance")), vec![Password, Totp]),
            (mk("bo", Some("Finance")), vec![Password]),
            (mk("cy", Some("Sales")), vec![Password, Webauthn]),
        ];
        let c = coverage(&wave(), &PolicySet::default(), &users);
        assert_eq!(c.users, 3);
        assert_eq!(c.meeting_target, 1);
        assert_eq!(c.by_strength["phishing_resistant"], 1);
        assert_eq!(c.by_strength["mfa"], 1);
        assert_eq!(c.by_strength["none"], 1);
        assert_eq!(c.missing, vec!["ann", "bo"]);
    }

    #[test]
    fn users_are_nudged_only_while_nudging_and_only_until_they_register() {
        let (finance, roles) = ([] as [Role; 0], [Role::Admin]);
        let ann = UserFacts {
            username: "ann",
            groups: &[],
            roles: &finance,
            department: Some("Finance"),
            break_glass: false,
        };
        let set = PolicySet::default();
        let waves = [wave()];
        assert!(
            nudges(&waves, &set, &ann, &[Password, Totp], 99).is_empty(),
            "not started"
        );
        let n = nudges(&waves, &set, &ann, &[Password, Totp], 150);
        assert_eq!(
            n,
            vec![RegistrationNudge {
                wave_id: "w1".into(),
                wave_name: "admins".into(),
                strength: "phishing_resistant".into(),
                deadline: 200,
            }]
        );
        assert!(
            nudges(&waves, &set, &ann, &[Password, Webauthn], 150).is_empty(),
            "registered"
        );
        assert!(
            nudges(&waves, &set, &ann, &[Password, Totp], 200).is_empty(),
            "enforced now"
        );
        let sales = UserFacts {
            department: Some("Sales"),
            ..ann
        };
        assert!(
            nudges(&waves, &set, &sales, &[Password], 150).is_empty(),
            "not in the wave"
        );
        let glass = UserFacts {
            username: "glass",
            groups: &[],
            roles: &roles,
            department: None,
            break_glass: true,
        };
        assert!(nudges(&waves, &set, &glass, &[Password], 150).is_empty(), "break-glass");
    }
}
