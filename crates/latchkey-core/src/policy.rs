//! Conditional access: who must prove what, when.
//!
//! A [`PolicySet`] holds [`ConditionalAccessPolicy`]s, named locations and
//! custom [`AuthenticationStrength`]s. [`evaluate`] turns a user and a sign-in
//! context into an explained [`Decision`]. Evaluation is a pure function of its
//! arguments (including `now`, which is all it takes for an expired exception
//! to stop applying) and visits policies in id order, so the same inputs give
//! the same decision and the same explanation.
//!
//! ```text
//!  for each policy (sorted by id):
//!    Disabled ───────────────────────────────────────────────▶ skipped(disabled)
//!    user is break-glass ────────────────────────────────────▶ skipped(break_glass)
//!    not included / excluded / exception in force ───────────▶ skipped(<why>)
//!    target (app or user action) or a condition doesn't match ▶ skipped(<why>)
//!    matches ──┬─ Enabled ────▶ applied      (grant enforced)
//!              └─ ReportOnly ─▶ report_only  (what it would have done; never enforced)
//!  outcome = Block if any applied policy blocks or needs a compliant device the
//!            context lacks; otherwise Allow with every required strength.
//! ```
//!
//! A policy that targets a user action (`register_security_info`) is the
//! specific rule for that action: when at least one enabled policy assigned to
//! the user targets the action, policies that only target applications are not
//! evaluated for it. That is what lets an enrollment policy allow a TAP or a
//! hardware key without a compliant device (the field guide's fix for the
//! circular enrollment traps) while every other sign-in still needs one.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{Role, VerifyMethod};
use crate::strength::AuthStrength;
use crate::CoreError;

/// The application a sign-in without an explicit application is for: Latchkey's own portal.
pub const PORTAL_APPLICATION: &str = "latchkey";
/// Wildcard for users and applications.
pub const ALL: &str = "*";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyState {
    Enabled,
    ReportOnly,
    Disabled,
}

impl PolicyState {
    pub fn as_str(&self) -> &'static str {
        match self {
            PolicyState::Enabled => "enabled",
            PolicyState::ReportOnly => "report_only",
            PolicyState::Disabled => "disabled",
        }
    }
}

/// User actions a policy can target instead of (or besides) applications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserAction {
    RegisterSecurityInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Windows,
    Macos,
    Ios,
    Android,
    Linux,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ownership {
    Corporate,
    Byod,
}

/// Sign-in risk, from detections. Ordered: `None < Low < Medium < High`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    #[default]
    None,
    Low,
    Medium,
    High,
}

/// Include/exclude lists. `*` in `include` means everyone (or every application).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncludeExclude<T> {
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<T>,
    #[serde(default = "Vec::new", skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<T>,
}

impl<T> IncludeExclude<T> {
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

impl<T> Default for IncludeExclude<T> {
    fn default() -> Self {
        Self {
            include: vec![],
            exclude: vec![],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignments {
    /// Usernames; `*` = all users.
    #[serde(default, skip_serializing_if = "IncludeExclude::is_empty")]
    pub users: IncludeExclude<String>,
    #[serde(default, skip_serializing_if = "IncludeExclude::is_empty")]
    pub groups: IncludeExclude<String>,
    #[serde(default, skip_serializing_if = "IncludeExclude::is_empty")]
    pub roles: IncludeExclude<Role>,
    #[serde(default, skip_serializing_if = "IncludeExclude::is_empty")]
    pub departments: IncludeExclude<String>,
    /// Application names; `*` = all. Sign-ins without an application are for `latchkey`.
    #[serde(default)]
    pub applications: IncludeExclude<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_actions: Vec<UserAction>,
}

/// Location condition over named locations. Besides location names, `trusted`
/// (inside any trusted location), `untrusted` (inside none) and `*` are accepted.
pub type LocationCondition = IncludeExclude<String>;

/// Device filter: the policy applies only to sign-ins whose device matches
/// every field that is set. An unknown device is neither compliant nor managed
/// and has no ownership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliant: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ownership: Vec<Ownership>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<LocationCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<IncludeExclude<Platform>>,
    /// Applies only at these risk levels; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sign_in_risk: Vec<RiskLevel>,
}

/// Grant controls. Several in one policy must all hold; `block` wins over the rest.
/// Written `block`, `require_compliant_device` or `{require_strength: NAME}`
/// in JSON and YAML alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "GrantRepr", into = "GrantRepr")]
pub enum GrantControl {
    Block,
    /// The name of a built-in or custom authentication strength.
    RequireStrength(String),
    RequireCompliantDevice,
}

/// The written form of a grant: serde's enum tagging differs between JSON
/// (maps) and YAML (`!tags`), and people write maps in both.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum GrantRepr {
    Word(String),
    Strength { require_strength: String },
}

impl TryFrom<GrantRepr> for GrantControl {
    type Error = String;
    fn try_from(r: GrantRepr) -> Result<Self, String> {
        match r {
            GrantRepr::Word(w) if w == "block" => Ok(GrantControl::Block),
            GrantRepr::Word(w) if w == "require_compliant_device" => Ok(GrantControl::RequireCompliantDevice),
            GrantRepr::Word(w) => Err(format!(
                "unknown grant '{w}' (block, require_compliant_device, {{require_strength: NAME}})"
            )),
            GrantRepr::Strength { require_strength } => Ok(GrantControl::RequireStrength(require_strength)),
        }
    }
}

impl From<GrantControl> for GrantRepr {
    fn from(g: GrantControl) -> Self {
        match g {
            GrantControl::Block => GrantRepr::Word("block".into()),
            GrantControl::RequireCompliantDevice => GrantRepr::Word("require_compliant_device".into()),
            GrantControl::RequireStrength(s) => GrantRepr::Strength { require_strength: s },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionControls {
    /// Re-authenticate at least this often (caps the session lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in_frequency_secs: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionalAccessPolicy {
    pub id: String,
    pub name: String,
    pub state: PolicyState,
    #[serde(default)]
    pub assignments: Assignments,
    #[serde(default)]
    pub conditions: Conditions,
    pub grant: Vec<GrantControl>,
    #[serde(default)]
    pub session: SessionControls,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedLocation {
    pub name: String,
    /// CIDR ranges (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a /32 or /128.
    #[serde(with = "cidr_list")]
    pub ranges: Vec<IpNet>,
    #[serde(default)]
    pub trusted: bool,
}

impl NamedLocation {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }
}

mod cidr_list {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| format!("'{s}' is not an IP range (CIDR such as 10.0.0.0/8) or address"))
    }

    pub fn serialize<S: Serializer>(v: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|n| n.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        let raw: Vec<String> = Vec::deserialize(d)?;
        raw.iter().map(|s| parse(s).map_err(serde::de::Error::custom)).collect()
    }
}

/// An authentication strength as data: any one of `combinations` satisfies it
/// (every method in that combination was used). With `aaguids`, a combination
/// using WebAuthn only counts when the authenticator's AAGUID is listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationStrength {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub combinations: Vec<Vec<VerifyMethod>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aaguids: Option<Vec<String>>,
}

const SECOND_FACTORS: [VerifyMethod; 6] = [
    VerifyMethod::Totp,
    VerifyMethod::RecoveryCode,
    VerifyMethod::Push,
    VerifyMethod::Sms,
    VerifyMethod::Voice,
    VerifyMethod::Webauthn,
];

impl AuthenticationStrength {
    /// The data form of a built-in [`AuthStrength`]. A test proves these agree
    /// with [`AuthStrength::achieved`] for every set of methods.
    pub fn builtin(s: AuthStrength) -> Self {
        use VerifyMethod::*;
        let (description, combinations): (&str, Vec<Vec<VerifyMethod>>) = match s {
            AuthStrength::Mfa => (
                "Password plus any second factor (SMS included), or anything stronger",
                SECOND_FACTORS
                    .iter()
                    .map(|f| vec![Password, *f])
                    .chain([vec![TemporaryAccessPass], vec![Webauthn]])
                    .collect(),
            ),
            AuthStrength::PasswordlessMfa => (
                "A passkey or a Temporary Access Pass; no password needed",
                vec![vec![TemporaryAccessPass], vec![Webauthn]],
            ),
            AuthStrength::PhishingResistant => ("WebAuthn only (passkey or security key)", vec![vec![Webauthn]]),
        };
        Self {
            name: s.as_str().to_owned(),
            description: description.to_owned(),
            combinations,
            aaguids: None,
        }
    }

    pub fn builtins() -> Vec<Self> {
        [
            AuthStrength::Mfa,
            AuthStrength::PasswordlessMfa,
            AuthStrength::PhishingResistant,
        ]
        .into_iter()
        .map(Self::builtin)
        .collect()
    }

    /// Whether the steps of a sign-in satisfy this strength. `aaguid` is the
    /// authenticator model of the WebAuthn step, if any.
    pub fn satisfied_by(&self, methods: &[VerifyMethod], aaguid: Option<&str>) -> bool {
        self.combinations.iter().any(|combo| {
            combo.iter().all(|m| methods.contains(m))
                && (!combo.contains(&VerifyMethod::Webauthn)
                    || match &self.aaguids {
                        None => true,
                        Some(list) => aaguid.is_some_and(|a| list.iter().any(|l| l.eq_ignore_ascii_case(a))),
                    })
        })
    }

    /// The strength as it applies to `action`. A TAP exists to register
    /// security info, so for that action it also satisfies the built-in
    /// `phishing_resistant` (otherwise nobody could register their first
    /// security key). Custom strengths are explicit data: a TAP counts only
    /// where they list it.
    pub fn for_action(&self, action: Option<UserAction>) -> Self {
        let mut s = self.clone();
        if action == Some(UserAction::RegisterSecurityInfo)
            && s.name == AuthStrength::PhishingResistant.as_str()
            && !s.combinations.iter().any(|c| c == &[VerifyMethod::TemporaryAccessPass])
        {
            s.combinations.push(vec![VerifyMethod::TemporaryAccessPass]);
        }
        s
    }

    fn validate(&self) -> Result<(), CoreError> {
        check_name(&self.name, "strength name")?;
        if self.combinations.is_empty() || self.combinations.iter().any(Vec::is_empty) {
            return Err(CoreError::InvalidInput(format!(
                "strength '{}' needs at least one non-empty method combination",
                self.name
            )));
        }
        if self
            .combinations
            .iter()
            .any(|c| c.len() == 1 && c[0] == VerifyMethod::Password)
        {
            return Err(CoreError::InvalidInput(format!(
                "strength '{}': a password alone is not an authentication strength",
                self.name
            )));
        }
        Ok(())
    }
}

/// Everything evaluation needs besides the user, the context and exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySet {
    #[serde(default)]
    pub policies: Vec<ConditionalAccessPolicy>,
    #[serde(default)]
    pub named_locations: Vec<NamedLocation>,
    /// Custom strengths (the built-ins are always there and cannot be redefined).
    #[serde(default)]
    pub strengths: Vec<AuthenticationStrength>,
}

fn check_name(s: &str, what: &str) -> Result<(), CoreError> {
    if s.trim().is_empty() || s.len() > 200 || s.chars().any(char::is_control) {
        return Err(CoreError::InvalidInput(format!(
            "{what} must be 1-200 printable characters"
        )));
    }
    Ok(())
}

impl PolicySet {
    /// Sorts policies by id (the evaluation order) and checks every reference.
    pub fn validated(mut self) -> Result<Self, CoreError> {
        let builtin_names = ["mfa", "passwordless_mfa", "phishing_resistant"];
        let mut seen = BTreeSet::new();
        for s in &self.strengths {
            s.validate()?;
            if builtin_names.contains(&s.name.as_str()) || !seen.insert(s.name.clone()) {
                return Err(CoreError::InvalidInput(format!(
                    "strength '{}' is defined twice (built-ins: mfa, passwordless_mfa, phishing_resistant)",
                    s.name
                )));
            }
        }
        let mut locs = BTreeSet::new();
        for l in &self.named_locations {
            check_name(&l.name, "location name")?;
            if ["trusted", "untrusted", ALL].contains(&l.name.as_str()) || !locs.insert(l.name.clone()) {
                return Err(CoreError::InvalidInput(format!(
                    "named location '{}' is reserved or defined twice",
                    l.name
                )));
            }
            if l.ranges.is_empty() {
                return Err(CoreError::InvalidInput(format!(
                    "named location '{}' has no IP range",
                    l.name
                )));
            }
        }
        let mut ids = BTreeSet::new();
        for p in &self.policies {
            check_name(&p.id, "policy id")?;
            check_name(&p.name, "policy name")?;
            if !ids.insert(p.id.clone()) {
                return Err(CoreError::InvalidInput(format!("policy id '{}' is used twice", p.id)));
            }
            if p.grant.is_empty() {
                return Err(CoreError::InvalidInput(format!(
                    "policy '{}' needs at least one grant control (block, require_strength, require_compliant_device)",
                    p.id
                )));
            }
            for g in &p.grant {
                if let GrantControl::RequireStrength(name) = g {
                    if self.strength(name).is_none() {
                        return Err(CoreError::InvalidInput(format!(
                            "policy '{}' requires unknown strength '{name}'",
                            p.id
                        )));
                    }
                }
            }
            if let Some(loc) = &p.conditions.locations {
                for n in loc.include.iter().chain(&loc.exclude) {
                    if !["trusted", "untrusted", ALL].contains(&n.as_str()) && !locs.contains(n) {
                        return Err(CoreError::InvalidInput(format!(
                            "policy '{}' names unknown location '{n}'",
                            p.id
                        )));
                    }
                }
            }
            if let Some(f) = p.session.sign_in_frequency_secs {
                if f < 60 {
                    return Err(CoreError::InvalidInput(format!(
                        "policy '{}': sign_in_frequency_secs must be at least 60",
                        p.id
                    )));
                }
            }
            let a = &p.assignments;
            if a.users.include.is_empty()
                && a.groups.include.is_empty()
                && a.roles.include.is_empty()
                && a.departments.include.is_empty()
            {
                return Err(CoreError::InvalidInput(format!(
                    "policy '{}' includes nobody: list users ('*' for all), groups or roles",
                    p.id
                )));
            }
            if a.applications.include.is_empty() && a.user_actions.is_empty() {
                return Err(CoreError::InvalidInput(format!(
                    "policy '{}' targets nothing: list applications ('*' for all) or user actions",
                    p.id
                )));
            }
        }
        self.policies.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(self)
    }

    /// A built-in or custom strength by name.
    pub fn strength(&self, name: &str) -> Option<AuthenticationStrength> {
        match name {
            "mfa" => Some(AuthenticationStrength::builtin(AuthStrength::Mfa)),
            "passwordless_mfa" => Some(AuthenticationStrength::builtin(AuthStrength::PasswordlessMfa)),
            "phishing_resistant" => Some(AuthenticationStrength::builtin(AuthStrength::PhishingResistant)),
            _ => self.strengths.iter().find(|s| s.name == name).cloned(),
        }
    }
}

/// Who an exception covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionSubject {
    User(String),
    Group(String),
}

/// A scoped bypass of one policy, always with an end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyException {
    pub id: String,
    pub policy_id: String,
    pub subject: ExceptionSubject,
    pub expires_at: i64,
}

impl PolicyException {
    pub fn in_force(&self, now: i64) -> bool {
        now < self.expires_at
    }
    fn covers(&self, user: &UserFacts) -> bool {
        match &self.subject {
            ExceptionSubject::User(u) => u == user.username,
            ExceptionSubject::Group(g) => user.groups.iter().any(|x| x == g),
        }
    }
}

/// Exception rules: reason, approver ≠ requester, mandatory end ≤ maximum.
pub fn validate_exception(
    requester: &str,
    approver: &str,
    reason: &str,
    expires_at: i64,
    max_days: i64,
    now: i64,
) -> Result<(), CoreError> {
    if reason.trim().len() < 3 || reason.len() > 500 {
        return Err(CoreError::InvalidInput(
            "an exception needs a reason (3-500 characters)".into(),
        ));
    }
    if approver.trim().is_empty() || approver == requester {
        return Err(CoreError::Forbidden(
            "an exception must be approved by someone other than its requester".into(),
        ));
    }
    if expires_at <= now {
        return Err(CoreError::InvalidInput("expires_at must be in the future".into()));
    }
    if expires_at > now + max_days * 86_400 {
        return Err(CoreError::InvalidInput(format!(
            "an exception may last at most {max_days} days"
        )));
    }
    Ok(())
}

/// What evaluation needs to know about the user.
#[derive(Debug, Clone, Copy)]
pub struct UserFacts<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
    pub roles: &'a [Role],
    pub department: Option<&'a str>,
    /// Break-glass accounts are excluded from conditional access by design.
    pub break_glass: bool,
}

/// A device's posture as the device inventory knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePosture {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<Ownership>,
    #[serde(default)]
    pub managed: bool,
    #[serde(default)]
    pub compliant: bool,
}

/// The sign-in being decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessContext {
    /// `None` = Latchkey's own portal.
    #[serde(default)]
    pub application: Option<String>,
    #[serde(default)]
    pub action: Option<UserAction>,
    #[serde(default)]
    pub ip: Option<IpAddr>,
    #[serde(default)]
    pub device: Option<DevicePosture>,
    #[serde(default)]
    pub risk: RiskLevel,
}

impl AccessContext {
    pub fn application(&self) -> &str {
        self.application.as_deref().unwrap_or(PORTAL_APPLICATION)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Block,
}

/// What one matching policy demands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyResult {
    pub policy_id: String,
    pub policy_name: String,
    /// Why it applies (assignment and conditions that matched).
    pub because: Vec<String>,
    pub grant: Vec<GrantControl>,
    /// `block`, or `allow` with requirements.
    pub result: Outcome,
    /// Why it blocks, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub policy_id: String,
    pub reason: String,
}

/// An explained decision. `report_only` lists what report-only policies would
/// have done; they never change `outcome` or `required_strengths`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// Names of the strengths the sign-in must satisfy (all of them).
    pub required_strengths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in_frequency_secs: Option<i64>,
    pub applied: Vec<PolicyResult>,
    pub report_only: Vec<PolicyResult>,
    pub skipped: Vec<Skipped>,
    pub break_glass: bool,
    /// The strengths themselves, adjusted for the action (see [`AuthenticationStrength::for_action`]).
    #[serde(skip)]
    pub strengths: Vec<AuthenticationStrength>,
}

impl Decision {
    pub fn is_blocked(&self) -> bool {
        self.outcome == Outcome::Block
    }

    /// The first reason an enforced policy blocks.
    pub fn block_reason(&self) -> Option<String> {
        self.applied.iter().find(|r| r.result == Outcome::Block).map(|r| {
            format!(
                "policy '{}': {}",
                r.policy_name,
                r.block_reason.clone().unwrap_or_default()
            )
        })
    }

    /// Whether a set of completed steps satisfies every required strength.
    pub fn strengths_satisfied(&self, methods: &[VerifyMethod], aaguid: Option<&str>) -> bool {
        self.strengths.iter().all(|s| s.satisfied_by(methods, aaguid))
    }

    /// One sign-in that must satisfy two decisions at once (a web sign-in
    /// that continues to an application: the session serves both). The
    /// stricter wins everywhere: any block blocks, every strength is
    /// required, the shorter sign-in frequency applies.
    pub fn combine(mut self, other: Decision) -> Decision {
        if other.outcome == Outcome::Block {
            self.outcome = Outcome::Block;
        }
        for (name, s) in other.required_strengths.into_iter().zip(other.strengths) {
            if !self.required_strengths.contains(&name) {
                self.required_strengths.push(name);
                self.strengths.push(s);
            }
        }
        self.sign_in_frequency_secs = match (self.sign_in_frequency_secs, other.sign_in_frequency_secs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let push_new = |into: &mut Vec<PolicyResult>, from: Vec<PolicyResult>| {
            for r in from {
                if !into.iter().any(|x| x.policy_id == r.policy_id) {
                    into.push(r);
                }
            }
        };
        push_new(&mut self.applied, other.applied);
        push_new(&mut self.report_only, other.report_only);
        // A policy skipped for one target but applied for the other is not "skipped".
        let mut seen: Vec<String> = self.applied.iter().map(|r| r.policy_id.clone()).collect();
        self.skipped.extend(other.skipped);
        self.skipped.retain(|s| {
            let first = !seen.contains(&s.policy_id);
            seen.push(s.policy_id.clone());
            first
        });
        self.break_glass |= other.break_glass;
        self
    }
}

fn matches_list(list: &IncludeExclude<String>, value: &str) -> (bool, bool) {
    let inc = list.include.iter().any(|v| v == ALL || v == value);
    let exc = list.exclude.iter().any(|v| v == ALL || v == value);
    (inc, exc)
}

/// Why a user is or isn't assigned. `Err` carries the skip reason.
fn assignment(p: &ConditionalAccessPolicy, user: &UserFacts, because: &mut Vec<String>) -> Result<(), String> {
    let a = &p.assignments;
    // Exclusions first: they beat every inclusion.
    if a.users.exclude.iter().any(|u| u == ALL || u == user.username) {
        return Err(format!("user '{}' is excluded", user.username));
    }
    if let Some(g) = user.groups.iter().find(|g| a.groups.exclude.contains(g)) {
        return Err(format!("group '{g}' is excluded"));
    }
    if let Some(r) = user.roles.iter().find(|r| a.roles.exclude.contains(r)) {
        return Err(format!("role '{}' is excluded", r.as_str()));
    }
    if let Some(d) = user.department.filter(|d| a.departments.exclude.iter().any(|x| x == d)) {
        return Err(format!("department '{d}' is excluded"));
    }
    if a.users.include.iter().any(|u| u == ALL) {
        because.push("all users".into());
    } else if a.users.include.iter().any(|u| u == user.username) {
        because.push(format!("user '{}'", user.username));
    } else if let Some(g) = user.groups.iter().find(|g| a.groups.include.contains(g)) {
        because.push(format!("member of '{g}'"));
    } else if let Some(r) = user.roles.iter().find(|r| a.roles.include.contains(r)) {
        because.push(format!("role '{}'", r.as_str()));
    } else if let Some(d) = user.department.filter(|d| a.departments.include.iter().any(|x| x == d)) {
        because.push(format!("department '{d}'"));
    } else {
        return Err("user not included".into());
    }
    Ok(())
}

/// Whether a policy's assignments cover a user (ignoring target and conditions).
pub(crate) fn assigned(p: &ConditionalAccessPolicy, user: &UserFacts) -> bool {
    assignment(p, user, &mut vec![]).is_ok()
}

fn target(
    p: &ConditionalAccessPolicy,
    ctx: &AccessContext,
    action_governed: bool,
    because: &mut Vec<String>,
) -> Result<(), String> {
    let a = &p.assignments;
    if let Some(action) = ctx.action {
        if a.user_actions.contains(&action) {
            because.push(format!("user action '{}'", action_name(action)));
            return Ok(());
        }
        if action_governed {
            return Err(format!("'{}' is governed by a user-action policy", action_name(action)));
        }
    }
    let app = ctx.application();
    let (inc, exc) = matches_list(&a.applications, app);
    if exc {
        return Err(format!("application '{app}' is excluded"));
    }
    if !inc {
        return Err(format!("application '{app}' not targeted"));
    }
    because.push(format!("application '{app}'"));
    Ok(())
}

pub fn action_name(a: UserAction) -> &'static str {
    match a {
        UserAction::RegisterSecurityInfo => "register_security_info",
    }
}

/// The named locations an address is in (in set order).
fn locations_of<'a>(set: &'a PolicySet, ip: Option<&IpAddr>) -> impl Iterator<Item = &'a NamedLocation> {
    let ip = ip.copied();
    set.named_locations
        .iter()
        .filter(move |l| ip.is_some_and(|ip| l.contains(&ip)))
}

fn location_matches(set: &PolicySet, name: &str, ip: Option<&IpAddr>) -> bool {
    match name {
        ALL => true,
        "trusted" => locations_of(set, ip).any(|l| l.trusted),
        "untrusted" => !locations_of(set, ip).any(|l| l.trusted),
        n => locations_of(set, ip).any(|l| l.name == n),
    }
}

fn conditions(set: &PolicySet, c: &Conditions, ctx: &AccessContext, because: &mut Vec<String>) -> Result<(), String> {
    let ip = ctx.ip.as_ref();
    let where_ = || ip.map(|i| i.to_string()).unwrap_or_else(|| "an unknown address".into());
    if let Some(loc) = &c.locations {
        if let Some(n) = loc.exclude.iter().find(|n| location_matches(set, n, ip)) {
            return Err(format!("{} is in excluded location '{n}'", where_()));
        }
        match loc.include.iter().find(|n| location_matches(set, n, ip)) {
            Some(n) => because.push(format!("{} is in location '{n}'", where_())),
            None => return Err(format!("{} is not in an included location", where_())),
        }
    }
    if let Some(d) = &c.devices {
        let dev = ctx.device.as_ref();
        let compliant = dev.is_some_and(|d| d.compliant);
        let managed = dev.is_some_and(|d| d.managed);
        let ownership = dev.and_then(|d| d.ownership);
        if d.compliant.is_some_and(|want| want != compliant) {
            return Err(format!("device compliance is {compliant}"));
        }
        if d.managed.is_some_and(|want| want != managed) {
            return Err(format!("device management is {managed}"));
        }
        if !d.ownership.is_empty() && !ownership.is_some_and(|o| d.ownership.contains(&o)) {
            return Err("device ownership does not match".into());
        }
        because.push(match dev {
            Some(dev) => format!("device '{}' matches the device filter", dev.id),
            None => "unknown device matches the device filter".into(),
        });
    }
    if let Some(p) = &c.platforms {
        let platform = ctx.device.as_ref().and_then(|d| d.platform);
        let name = platform
            .map(|p| format!("{p:?}").to_lowercase())
            .unwrap_or_else(|| "unknown".into());
        // An unknown platform only matches a policy that doesn't ask for specific ones.
        if platform.is_some_and(|pl| p.exclude.contains(&pl)) {
            return Err(format!("platform '{name}' is excluded"));
        }
        if !p.include.is_empty() && !platform.is_some_and(|pl| p.include.contains(&pl)) {
            return Err(format!("platform '{name}' not included"));
        }
        because.push(format!("platform '{name}'"));
    }
    if !c.sign_in_risk.is_empty() {
        if !c.sign_in_risk.contains(&ctx.risk) {
            return Err(format!("sign-in risk {:?} not targeted", ctx.risk).to_lowercase());
        }
        because.push(format!("sign-in risk {:?}", ctx.risk).to_lowercase());
    }
    Ok(())
}

/// Decide a sign-in. Deterministic: policies are visited in id order (as
/// [`PolicySet::validated`] sorts them) and the result depends on nothing but
/// the arguments.
pub fn evaluate(
    set: &PolicySet,
    exceptions: &[PolicyException],
    user: &UserFacts,
    ctx: &AccessContext,
    now: i64,
) -> Decision {
    let mut d = Decision {
        outcome: Outcome::Allow,
        required_strengths: vec![],
        sign_in_frequency_secs: None,
        applied: vec![],
        report_only: vec![],
        skipped: vec![],
        break_glass: user.break_glass,
        strengths: vec![],
    };
    let skip = |d: &mut Decision, p: &ConditionalAccessPolicy, reason: String| {
        d.skipped.push(Skipped {
            policy_id: p.id.clone(),
            reason,
        })
    };
    // An action is governed by user-action policies when an enabled one is assigned to this user.
    let action_governed = ctx.action.is_some_and(|action| {
        set.policies.iter().any(|p| {
            p.state == PolicyState::Enabled
                && p.assignments.user_actions.contains(&action)
                && assigned(p, user)
                && !exceptions
                    .iter()
                    .any(|e| e.policy_id == p.id && e.in_force(now) && e.covers(user))
        })
    });
    for p in &set.policies {
        if p.state == PolicyState::Disabled {
            skip(&mut d, p, "disabled".into());
            continue;
        }
        if user.break_glass {
            skip(
                &mut d,
                p,
                "break-glass accounts are excluded from conditional access".into(),
            );
            continue;
        }
        let mut because = Vec::new();
        if let Err(why) = assignment(p, user, &mut because) {
            skip(&mut d, p, why);
            continue;
        }
        if let Some(e) = exceptions
            .iter()
            .find(|e| e.policy_id == p.id && e.in_force(now) && e.covers(user))
        {
            skip(
                &mut d,
                p,
                format!("exception '{}' in force until {}", e.id, e.expires_at),
            );
            continue;
        }
        if let Err(why) = target(p, ctx, action_governed, &mut because) {
            skip(&mut d, p, why);
            continue;
        }
        if let Err(why) = conditions(set, &p.conditions, ctx, &mut because) {
            skip(&mut d, p, why);
            continue;
        }
        let mut result = PolicyResult {
            policy_id: p.id.clone(),
            policy_name: p.name.clone(),
            because,
            grant: p.grant.clone(),
            result: Outcome::Allow,
            block_reason: None,
        };
        let compliant = ctx.device.as_ref().is_some_and(|d| d.compliant);
        for g in &p.grant {
            let reason = match g {
                GrantControl::Block => Some("access is blocked".to_owned()),
                GrantControl::RequireCompliantDevice if !compliant => Some(match &ctx.device {
                    Some(dev) => format!("requires a compliant device; device '{}' is not compliant", dev.id),
                    None => "requires a compliant device; the device is unknown".to_owned(),
                }),
                GrantControl::RequireStrength(name) if set.strength(name).is_none() => {
                    // Fail closed on a dangling reference (validation normally prevents it).
                    Some(format!("requires unknown strength '{name}'"))
                }
                _ => None,
            };
            if let Some(r) = reason {
                result.result = Outcome::Block;
                result.block_reason.get_or_insert(r);
            }
        }
        if p.state == PolicyState::ReportOnly {
            d.report_only.push(result);
            continue;
        }
        if result.result == Outcome::Block {
            d.outcome = Outcome::Block;
        }
        for g in &p.grant {
            if let GrantControl::RequireStrength(name) = g {
                if !d.required_strengths.contains(name) {
                    if let Some(s) = set.strength(name) {
                        d.required_strengths.push(name.clone());
                        d.strengths.push(s.for_action(ctx.action));
                    }
                }
            }
        }
        if let Some(f) = p.session.sign_in_frequency_secs {
            d.sign_in_frequency_secs = Some(d.sign_in_frequency_secs.map_or(f, |x| x.min(f)));
        }
        d.applied.push(result);
    }
    d
}

/// The built-in strength a set of required strengths demands at least,
/// for flows that only know built-ins (`acr`). Custom strengths map to `mfa`.
pub fn minimum_builtin(required: &[String]) -> AuthStrength {
    required
        .iter()
        .filter_map(|n| match n.as_str() {
            "passwordless_mfa" => Some(AuthStrength::PasswordlessMfa),
            "phishing_resistant" => Some(AuthStrength::PhishingResistant),
            _ => None,
        })
        .max()
        .unwrap_or(AuthStrength::Mfa)
}

#[cfg(test)]
mod tests;
