//! Temporary Access Pass rules: issuance bounds, identity verification, and
//! the pass's lifecycle.
//!
//! ```text
//!   issue ──▶ NotYetValid ──(starts_at)──▶ Usable ──(used, single-use)──▶ Used
//!                                            │
//!                                            └──(expires_at)──▶ Expired
//! ```
//! A multi-use pass stays `Usable` until it expires.

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::helpdesk::Scenario;
use crate::secret::{human_code, keyed_hash, normalize_human_code};
use crate::CoreError;

const PURPOSE: &str = "latchkey temporary access pass v1";
const GROUPS: usize = 4;
const GROUP_LEN: usize = 4;

/// How the helpdesk proved who the caller is before issuing a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationMethod {
    /// Called back the number already on file (never the number the caller gives).
    Callback,
    ManagerAttestation,
    InPersonId,
    VideoCall,
    /// Only for the first administrator, created by `latchkey serve` on first start.
    Bootstrap,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityVerification {
    pub method: VerificationMethod,
    pub note: String,
}

/// Issuance bounds (configurable; defaults follow the field guide: 1–8 h,
/// and per runbook scenario 1–4 h for a lost phone, up to 8 h for a new
/// employee).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TapPolicy {
    pub min_minutes: i64,
    pub max_minutes: i64,
    pub default_minutes: i64,
    pub allow_multi_use: bool,
    /// Longest pass issued for a lost-phone case.
    pub lost_phone_max_minutes: i64,
    /// Longest pass issued for a planned phone change (the user still has
    /// the old phone; the guide gives no figure, so the lost phone's).
    pub planned_phone_change_max_minutes: i64,
    /// Longest pass issued for a new employee's first device.
    pub new_employee_max_minutes: i64,
}

impl Default for TapPolicy {
    fn default() -> Self {
        Self {
            min_minutes: 60,
            max_minutes: 480,
            default_minutes: 60,
            allow_multi_use: false,
            lost_phone_max_minutes: 240,
            planned_phone_change_max_minutes: 240,
            new_employee_max_minutes: 480,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapRequest {
    pub lifetime_minutes: Option<i64>,
    pub single_use: bool,
    pub starts_in_minutes: Option<i64>,
    pub verification: Option<IdentityVerification>,
    pub issuer_is_subject: bool,
    /// The runbook scenario of the helpdesk case the pass is issued for.
    pub scenario: Option<Scenario>,
}

/// What the store should persist for a validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapGrant {
    pub starts_at: i64,
    pub expires_at: i64,
    pub single_use: bool,
}

impl TapPolicy {
    /// The longest pass allowed, for a case of `scenario` or outside any case.
    pub fn max_for(&self, scenario: Option<Scenario>) -> i64 {
        let bound = match scenario {
            None => self.max_minutes,
            Some(Scenario::LostPhone) => self.lost_phone_max_minutes,
            Some(Scenario::PlannedPhoneChange) => self.planned_phone_change_max_minutes,
            Some(Scenario::NewEmployee) => self.new_employee_max_minutes,
        };
        bound.min(self.max_minutes)
    }

    /// Refuse a configuration no pass could satisfy.
    pub fn check(&self) -> Result<(), CoreError> {
        let scenarios = [Scenario::LostPhone, Scenario::PlannedPhoneChange, Scenario::NewEmployee];
        if self.min_minutes < 1 || self.max_minutes < self.min_minutes {
            return Err(CoreError::InvalidInput(
                "pass lifetimes: the minimum must be at least 1 and at most the maximum".into(),
            ));
        }
        if let Some(s) = scenarios.iter().find(|s| self.max_for(Some(**s)) < self.min_minutes) {
            return Err(CoreError::InvalidInput(format!(
                "pass lifetimes: the {} maximum is below the minimum of {} minutes",
                s.as_str(),
                self.min_minutes
            )));
        }
        Ok(())
    }

    /// Validate an issuance request at time `now` (unix seconds).
    pub fn validate(&self, req: &TapRequest, now: i64) -> Result<TapGrant, CoreError> {
        if req.issuer_is_subject {
            return Err(CoreError::Forbidden(
                "nobody may issue a Temporary Access Pass to themselves".into(),
            ));
        }
        let Some(v) = &req.verification else {
            return Err(CoreError::InvalidInput(
                "record how the user's identity was verified before issuing a pass".into(),
            ));
        };
        if v.method == VerificationMethod::Bootstrap {
            return Err(CoreError::InvalidInput(
                "'bootstrap' verification is reserved for the first administrator".into(),
            ));
        }
        if v.note.trim().is_empty() {
            return Err(CoreError::InvalidInput(
                "the identity verification needs a note (who verified what)".into(),
            ));
        }
        let max = self.max_for(req.scenario);
        let minutes = req.lifetime_minutes.unwrap_or(self.default_minutes.min(max));
        if minutes < self.min_minutes || minutes > max {
            return Err(CoreError::InvalidInput(match req.scenario {
                Some(s) if max < self.max_minutes => format!(
                    "lifetime_minutes must be between {} and {} for a {} case (the runbook's bound)",
                    self.min_minutes,
                    max,
                    s.as_str().replace('_', "-")
                ),
                _ => format!("lifetime_minutes must be between {} and {}", self.min_minutes, max),
            }));
        }
        if !req.single_use && !self.allow_multi_use {
            return Err(CoreError::Forbidden(
                "multi-use passes are not allowed by policy".into(),
            ));
        }
        let delay = req.starts_in_minutes.unwrap_or(0);
        if !(0..=7 * 24 * 60).contains(&delay) {
            return Err(CoreError::InvalidInput(
                "starts_in_minutes must be between 0 and 10080".into(),
            ));
        }
        let starts_at = now + delay * 60;
        Ok(TapGrant {
            starts_at,
            expires_at: starts_at + minutes * 60,
            single_use: req.single_use,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TapState {
    NotYetValid,
    Usable,
    Used,
    Expired,
}

/// The state of a stored pass at `now`.
pub fn tap_state(starts_at: i64, expires_at: i64, single_use: bool, used_at: Option<i64>, now: i64) -> TapState {
    if single_use && used_at.is_some() {
        TapState::Used
    } else if now >= expires_at {
        TapState::Expired
    } else if now < starts_at {
        TapState::NotYetValid
    } else {
        TapState::Usable
    }
}

/// A new pass: 16 characters from the human alphabet (about 77 bits).
pub fn generate_pass<R: RngCore + CryptoRng>(rng: &mut R) -> String {
    human_code(rng, GROUPS, GROUP_LEN)
}

pub fn hash_pass_input(pepper: &[u8], input: &str) -> Result<String, CoreError> {
    let norm = normalize_human_code(input)
        .filter(|n| n.len() == GROUPS * GROUP_LEN)
        .ok_or_else(|| {
            CoreError::InvalidInput("a Temporary Access Pass is 16 letters and digits, like ABCD-EFGH-JKMN-PQRS".into())
        })?;
    Ok(keyed_hash(pepper, PURPOSE, &norm))
}

/// What a second approver approves: a change to a privileged user's access
/// made by someone else, or a policy exception.
///
/// ```text
///   request ──▶ PendingApproval ──(another human approves)──▶ Approved
///                                                               │
///        (the requester makes the change, naming the request) ──┘──▶ Used / Issued
/// ```
/// A policy exception is made by the approval itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    #[serde(rename = "tap")]
    Tap,
    #[serde(rename = "password")]
    Password,
    #[serde(rename = "method.enroll")]
    MethodEnroll,
    #[serde(rename = "method.remove")]
    MethodRemove,
    #[serde(rename = "device.end")]
    DeviceEnd,
    #[serde(rename = "case.remove_old_methods")]
    CaseRemoveOldMethods,
    #[serde(rename = "policy.exception")]
    PolicyException,
    /// Granting a role (removals apply at once): an administrator alone
    /// could otherwise make a second account of their own privileged and
    /// approve their own requests through it.
    #[serde(rename = "user.roles")]
    RoleGrant,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 8] = [
        ChangeKind::Tap,
        ChangeKind::Password,
        ChangeKind::MethodEnroll,
        ChangeKind::MethodRemove,
        ChangeKind::DeviceEnd,
        ChangeKind::CaseRemoveOldMethods,
        ChangeKind::PolicyException,
        ChangeKind::RoleGrant,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeKind::Tap => "tap",
            ChangeKind::Password => "password",
            ChangeKind::MethodEnroll => "method.enroll",
            ChangeKind::MethodRemove => "method.remove",
            ChangeKind::DeviceEnd => "device.end",
            ChangeKind::CaseRemoveOldMethods => "case.remove_old_methods",
            ChangeKind::PolicyException => "policy.exception",
            ChangeKind::RoleGrant => "user.roles",
        }
    }

    pub fn parse(s: &str) -> Result<Self, CoreError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| CoreError::InvalidInput(format!("unknown change kind '{s}'")))
    }
}

/// Asking for a change: a named person asks (a signed-in user, or an API
/// token that has an owner), never for their own account (their own
/// recovery goes through a colleague, and their own security info through
/// their own sign-in). `requester` and `subject` are user ids. An owner-less
/// token cannot ask: its request could only be told apart from its owner's
/// approval by actor strings, which one person can hold many of.
pub fn check_change_request(requester: Option<&str>, subject: Option<&str>) -> Result<(), CoreError> {
    let Some(requester) = requester else {
        return Err(CoreError::Forbidden(
            "privileged changes are requested by a named person: sign in, or use an API token that has an owner".into(),
        ));
    };
    if Some(requester) == subject {
        return Err(CoreError::Forbidden(
            "nobody may request a privileged change or pass for themselves".into(),
        ));
    }
    Ok(())
}

/// How long an approval may wait to be used: a second person approves a
/// change they can still picture, not one made weeks later.
pub const APPROVAL_VALID_SECS: i64 = 24 * 3600;

/// Whether an approval given at `decided_at` is too old to use at `now`.
pub fn approval_expired(decided_at: Option<i64>, now: i64) -> bool {
    decided_at.is_none_or(|t| now - t > APPROVAL_VALID_SECS)
}

/// The two-person rule, on humans (user ids), never on actor strings: one
/// person holds many sessions and tokens. The requester and the approver
/// must both be named people, different from each other and from the person
/// the change is for. A request without a known requester (recorded before
/// requesters were) is never approved: it is asked for again.
pub fn check_approval(requester: Option<&str>, approver: Option<&str>, subject: Option<&str>) -> Result<(), CoreError> {
    let Some(approver) = approver else {
        return Err(CoreError::Forbidden(
            "approvals need a named person: sign in, or use an API token that has an owner".into(),
        ));
    };
    let Some(requester) = requester else {
        return Err(CoreError::Forbidden(
            "this request names no person who asked for it; ask again as a named person".into(),
        ));
    };
    if requester == approver {
        return Err(CoreError::Forbidden(
            "the approver must be someone other than the requester".into(),
        ));
    }
    if subject == Some(approver) {
        return Err(CoreError::Forbidden(
            "nobody may approve a change to their own account".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> TapRequest {
        TapRequest {
            lifetime_minutes: Some(60),
            single_use: true,
            starts_in_minutes: None,
            verification: Some(IdentityVerification {
                method: VerificationMethod::Callback,
                note: "called back +1 555 0100".into(),
            }),
            issuer_is_subject: false,
            scenario: None,
        }
    }

    #[test]
    fn scenario_bounds_the_lifetime() {
        let p = TapPolicy::default();
        let mut r = req();
        r.scenario = Some(Scenario::LostPhone);
        r.lifetime_minutes = Some(240);
        assert!(p.validate(&r, 0).is_ok());
        r.lifetime_minutes = Some(241);
        let e = p.validate(&r, 0).unwrap_err().to_string();
        assert!(e.contains("lost-phone") && e.contains("240"), "{e}");
        r.scenario = Some(Scenario::NewEmployee);
        r.lifetime_minutes = Some(480);
        assert!(p.validate(&r, 0).is_ok());
        r.lifetime_minutes = Some(481);
        assert!(p.validate(&r, 0).is_err());
        // A scenario bound never exceeds the global one.
        let tight = TapPolicy { max_minutes: 120, ..p };
        assert_eq!(tight.max_for(Some(Scenario::NewEmployee)), 120);
        assert!(TapPolicy {
            lost_phone_max_minutes: 30,
            ..p
        }
        .check()
        .is_err());
        assert!(p.check().is_ok());
    }

    #[test]
    fn valid_request_gets_its_window() {
        let g = TapPolicy::default().validate(&req(), 1000).unwrap();
        assert_eq!(
            g,
            TapGrant {
                starts_at: 1000,
                expires_at: 1000 + 3600,
                single_use: true
            }
        );
    }

    #[test]
    fn refusals() {
        let p = TapPolicy::default();
        let mut r = req();
        r.verification = None;
        assert!(matches!(p.validate(&r, 0), Err(CoreError::InvalidInput(_))));
        let mut r = req();
        r.issuer_is_subject = true;
        assert!(matches!(p.validate(&r, 0), Err(CoreError::Forbidden(_))));
        for m in [59, 481, -5] {
            let mut r = req();
            r.lifetime_minutes = Some(m);
            assert!(p.validate(&r, 0).is_err(), "{m} minutes");
        }
        let mut r = req();
        r.single_use = false;
        assert!(p.validate(&r, 0).is_err());
        let mut r = req();
        r.verification.as_mut().unwrap().note = "  ".into();
        assert!(p.validate(&r, 0).is_err());
    }

    #[test]
    fn lifecycle() {
        assert_eq!(tap_state(10, 20, true, None, 5), TapState::NotYetValid);
        assert_eq!(tap_state(10, 20, true, None, 10), TapState::Usable);
        assert_eq!(tap_state(10, 20, true, Some(12), 13), TapState::Used);
        assert_eq!(tap_state(10, 20, false, Some(12), 13), TapState::Usable);
        assert_eq!(tap_state(10, 20, false, Some(12), 20), TapState::Expired);
    }

    #[test]
    fn pass_hash_accepts_typing_variations() {
        let pass = generate_pass(&mut rand::thread_rng());
        let h = hash_pass_input(b"k", &pass).unwrap();
        assert_eq!(
            h,
            hash_pass_input(b"k", &pass.to_lowercase().replace('-', " ")).unwrap()
        );
        assert!(hash_pass_input(b"k", "ABCD").is_err());
    }

    #[test]
    fn two_person_rule_compares_people() {
        // Requester and approver are one person (two tokens of theirs).
        assert!(check_approval(Some("u1"), Some("u1"), Some("u2")).is_err());
        // An ownerless token or the local operator approves nothing.
        assert!(check_approval(Some("u1"), None, Some("u2")).is_err());
        // Nobody approves for themselves.
        assert!(check_approval(Some("u1"), Some("u2"), Some("u2")).is_err());
        assert!(check_approval(Some("u1"), Some("u3"), Some("u2")).is_ok());
        // A request of unknown requester is never approved, whoever approves.
        assert!(check_approval(None, Some("u3"), Some("u2")).is_err());
        assert!(check_change_request(Some("u2"), Some("u2")).is_err());
        // An owner-less token asks for nothing (finding 1 of the second review).
        assert!(check_change_request(None, Some("u2")).is_err());
        assert!(check_change_request(Some("u1"), Some("u2")).is_ok());
        assert!(!approval_expired(Some(100), 100 + APPROVAL_VALID_SECS));
        assert!(approval_expired(Some(100), 101 + APPROVAL_VALID_SECS));
        assert!(approval_expired(None, 100));
        for k in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(k.as_str()).unwrap(), k);
        }
    }
}
