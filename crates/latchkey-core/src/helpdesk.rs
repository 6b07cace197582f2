//! Recovery runbooks as guided helpdesk cases.
//!
//! A [`HelpdeskCase`] walks the field guide's recovery flow for one user, one
//! explicit step at a time, in order. Each step is either done (with its
//! evidence) or skipped with a reason; identity verification can never be
//! skipped, because everything after it (a pass, new methods) rests on it.
//!
//! ```text
//!  Open{next: VerifyIdentity} ─done─▶ Open{next: IssueTap} ─done/skip─▶ Open{next: DeliverTap} ─▶ …
//!        … ─▶ Open{next: Close} ─close─▶ Closed
//!  Open{..} ─cancel(reason)─▶ Cancelled
//! ```
//! Which steps a case has depends on its [`Scenario`]. The service layer
//! checks each step's evidence against the real world (a method registered
//! after the case opened, a normal sign-in after that) before recording it.

use serde::{Deserialize, Serialize};

use crate::tap::{IdentityVerification, VerificationMethod};
use crate::CoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// The user still has the old phone: they can move their methods themselves.
    PlannedPhoneChange,
    /// Lost, stolen or broken phone: the classic Friday-evening ticket.
    LostPhone,
    /// A new employee's first device: nothing registered yet.
    NewEmployee,
}

impl Scenario {
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s.replace('-', "_").as_str() {
            "planned_phone_change" => Ok(Scenario::PlannedPhoneChange),
            "lost_phone" => Ok(Scenario::LostPhone),
            "new_employee" => Ok(Scenario::NewEmployee),
            _ => Err(CoreError::InvalidInput(format!(
                "unknown scenario '{s}' (planned-phone-change, lost-phone, new-employee)"
            ))),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Scenario::PlannedPhoneChange => "planned_phone_change",
            Scenario::LostPhone => "lost_phone",
            Scenario::NewEmployee => "new_employee",
        }
    }

    /// The runbook: steps in the order they must happen.
    pub fn steps(&self) -> &'static [CaseStep] {
        use CaseStep::*;
        match self {
            Scenario::PlannedPhoneChange => &[
                VerifyIdentity,
                IssueTap,
                DeliverTap,
                ConfirmRegistration,
                RemoveOldMethods,
                ConfirmSignIn,
                Close,
            ],
            Scenario::LostPhone => &[
                VerifyIdentity,
                IssueTap,
                DeliverTap,
                ConfirmRegistration,
                RemoveOldMethods,
                ConfirmSignIn,
                Close,
            ],
            Scenario::NewEmployee => &[
                VerifyIdentity,
                IssueTap,
                DeliverTap,
                ConfirmRegistration,
                ConfirmSignIn,
                Close,
            ],
        }
    }

    /// How long a case may stay open before it shows as overdue.
    pub fn deadline_secs(&self) -> i64 {
        match self {
            // Someone is locked out right now.
            Scenario::LostPhone => 24 * 3600,
            Scenario::PlannedPhoneChange => 7 * 24 * 3600,
            Scenario::NewEmployee => 5 * 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStep {
    VerifyIdentity,
    IssueTap,
    DeliverTap,
    ConfirmRegistration,
    RemoveOldMethods,
    ConfirmSignIn,
    Close,
}

impl CaseStep {
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        serde_json::from_value(serde_json::Value::String(s.replace('-', "_")))
            .map_err(|_| CoreError::InvalidInput(format!("unknown step '{s}'")))
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            CaseStep::VerifyIdentity => "verify_identity",
            CaseStep::IssueTap => "issue_tap",
            CaseStep::DeliverTap => "deliver_tap",
            CaseStep::ConfirmRegistration => "confirm_registration",
            CaseStep::RemoveOldMethods => "remove_old_methods",
            CaseStep::ConfirmSignIn => "confirm_sign_in",
            CaseStep::Close => "close",
        }
    }
    pub fn title(&self) -> &'static str {
        match self {
            CaseStep::VerifyIdentity => "Verify the caller's identity",
            CaseStep::IssueTap => "Issue a Temporary Access Pass",
            CaseStep::DeliverTap => "Deliver the pass through a channel other than email",
            CaseStep::ConfirmRegistration => "Confirm the user registered a new method",
            CaseStep::RemoveOldMethods => "Remove the old device's methods",
            CaseStep::ConfirmSignIn => "Confirm a normal sign-in works",
            CaseStep::Close => "Close the case",
        }
    }
}

/// How a pass reached the user. Email is not offered: the mailbox is often
/// what the attacker already has, and what the user cannot reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryChannel {
    /// Read aloud on a call to the number on file.
    PhoneCall,
    InPerson,
    /// Given to the user's manager, who hands it over.
    Manager,
    /// Sent by SMS to the number already on file.
    SmsToNumberOnFile,
}

impl DeliveryChannel {
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        if s.eq_ignore_ascii_case("email") {
            return Err(CoreError::InvalidInput(
                "a pass is never delivered by email: use a phone call, in person, the manager or SMS to the number on file".into(),
            ));
        }
        serde_json::from_value(serde_json::Value::String(s.replace('-', "_"))).map_err(|_| {
            CoreError::InvalidInput(format!(
                "unknown delivery channel '{s}' (phone_call, in_person, manager, sms_to_number_on_file)"
            ))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StepOutcome {
    Done {
        actor: String,
        at: i64,
        evidence: serde_json::Value,
    },
    Skipped {
        actor: String,
        at: i64,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: CaseStep,
    pub outcome: Option<StepOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CaseState {
    Open { next: CaseStep },
    Closed { at: i64 },
    Cancelled { at: i64, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelpdeskCase {
    pub scenario: Scenario,
    pub state: CaseState,
    pub steps: Vec<StepRecord>,
    pub opened_at: i64,
    pub deadline: i64,
    /// The identity verification recorded by the first step; a pass is only
    /// issued under it.
    pub verification: Option<IdentityVerification>,
    /// The user's second-factor methods when the case opened: "new" and
    /// "old" methods are told apart by this, not by clock readings.
    #[serde(default)]
    pub methods_at_open: Vec<String>,
}

impl HelpdeskCase {
    pub fn open(scenario: Scenario, now: i64, methods_at_open: Vec<String>) -> Self {
        let steps: Vec<StepRecord> = scenario
            .steps()
            .iter()
            .map(|s| StepRecord {
                step: *s,
                outcome: None,
            })
            .collect();
        Self {
            scenario,
            state: CaseState::Open { next: steps[0].step },
            steps,
            opened_at: now,
            deadline: now + scenario.deadline_secs(),
            verification: None,
            methods_at_open,
        }
    }

    pub fn next_step(&self) -> Option<CaseStep> {
        match self.state {
            CaseState::Open { next } => Some(next),
            _ => None,
        }
    }

    pub fn is_overdue(&self, now: i64) -> bool {
        matches!(self.state, CaseState::Open { .. }) && now > self.deadline
    }

    pub fn check_next(&self, step: CaseStep) -> Result<(), CoreError> {
        match self.state {
            CaseState::Open { next } if next == step => Ok(()),
            CaseState::Open { next } => Err(CoreError::InvalidTransition(format!(
                "the next step is '{}', not '{}'",
                next.as_str(),
                step.as_str()
            ))),
            _ => Err(CoreError::InvalidTransition("the case is no longer open".into())),
        }
    }

    fn advance(mut self, step: CaseStep, outcome: StepOutcome, now: i64) -> Self {
        let idx = self
            .steps
            .iter()
            .position(|r| r.step == step)
            .expect("step belongs to the runbook");
        self.steps[idx].outcome = Some(outcome);
        self.state = match self.steps.get(idx + 1) {
            Some(r) => CaseState::Open { next: r.step },
            None => CaseState::Closed { at: now },
        };
        self
    }

    /// Record the identity verification. The bootstrap method is reserved.
    pub fn verify_identity(
        mut self,
        actor: &str,
        verification: IdentityVerification,
        now: i64,
    ) -> Result<Self, CoreError> {
        self.check_next(CaseStep::VerifyIdentity)?;
        if verification.method == VerificationMethod::Bootstrap {
            return Err(CoreError::InvalidInput(
                "'bootstrap' is not a helpdesk verification method".into(),
            ));
        }
        if verification.note.trim().is_empty() {
            return Err(CoreError::InvalidInput("describe how the identity was verified".into()));
        }
        let evidence = serde_json::to_value(&verification).expect("verification serialises");
        self.verification = Some(verification);
        Ok(self.advance(
            CaseStep::VerifyIdentity,
            StepOutcome::Done {
                actor: actor.into(),
                at: now,
                evidence,
            },
            now,
        ))
    }

    /// Record any other step as done, with the evidence the service checked.
    pub fn complete(
        self,
        step: CaseStep,
        actor: &str,
        evidence: serde_json::Value,
        now: i64,
    ) -> Result<Self, CoreError> {
        if step == CaseStep::VerifyIdentity {
            return Err(CoreError::InvalidInput("use verify_identity for the first step".into()));
        }
        self.check_next(step)?;
        if self.verification.is_none() {
            return Err(CoreError::InvalidTransition(
                "the identity must be verified first".into(),
            ));
        }
        Ok(self.advance(
            step,
            StepOutcome::Done {
                actor: actor.into(),
                at: now,
                evidence,
            },
            now,
        ))
    }

    /// Skip the next step with a reason. Identity verification and closing
    /// cannot be skipped.
    pub fn skip(self, step: CaseStep, actor: &str, reason: &str, now: i64) -> Result<Self, CoreError> {
        self.check_next(step)?;
        if matches!(step, CaseStep::VerifyIdentity | CaseStep::Close) {
            return Err(CoreError::InvalidInput(format!(
                "the step '{}' cannot be skipped",
                step.as_str()
            )));
        }
        if reason.trim().is_empty() {
            return Err(CoreError::InvalidInput("a skipped step needs a reason".into()));
        }
        Ok(self.advance(
            step,
            StepOutcome::Skipped {
                actor: actor.into(),
                at: now,
                reason: reason.trim().into(),
            },
            now,
        ))
    }

    pub fn cancel(mut self, reason: &str, now: i64) -> Result<Self, CoreError> {
        if !matches!(self.state, CaseState::Open { .. }) {
            return Err(CoreError::InvalidTransition("the case is no longer open".into()));
        }
        if reason.trim().is_empty() {
            return Err(CoreError::InvalidInput("cancelling a case needs a reason".into()));
        }
        self.state = CaseState::Cancelled {
            at: now,
            reason: reason.trim().into(),
        };
        Ok(self)
    }

    /// When a step was completed, if it was (e.g. when the pass was issued).
    pub fn done_at(&self, step: CaseStep) -> Option<i64> {
        self.steps
            .iter()
            .find(|r| r.step == step)
            .and_then(|r| match &r.outcome {
                Some(StepOutcome::Done { at, .. }) => Some(*at),
                _ => None,
            })
    }

    pub fn evidence(&self, step: CaseStep) -> Option<&serde_json::Value> {
        self.steps
            .iter()
            .find(|r| r.step == step)
            .and_then(|r| match &r.outcome {
                Some(StepOutcome::Done { evidence, .. }) => Some(evidence),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verification() -> IdentityVerification {
        IdentityVerification {
            method: VerificationMethod::Callback,
            note: "called back the number on file".into(),
        }
    }

    #[test]
    fn lost_phone_walks_every_step_in_order() {
        let c = HelpdeskCase::open(Scenario::LostPhone, 0, vec![]);
        assert_eq!(c.next_step(), Some(CaseStep::VerifyIdentity));
        assert!(
            c.clone().complete(CaseStep::IssueTap, "hd", json!({}), 1).is_err(),
            "order is enforced"
        );
        let mut c = c.verify_identity("hd", verification(), 1).unwrap();
        for step in &Scenario::LostPhone.steps()[1..] {
            assert_eq!(c.next_step(), Some(*step));
            c = c.complete(*step, "hd", json!({}), 2).unwrap();
        }
        assert_eq!(c.state, CaseState::Closed { at: 2 });
        assert!(
            c.complete(CaseStep::Close, "hd", json!({}), 3).is_err(),
            "closed is terminal"
        );
    }

    #[test]
    fn new_employee_has_no_old_methods_step() {
        assert!(!Scenario::NewEmployee.steps().contains(&CaseStep::RemoveOldMethods));
    }

    #[test]
    fn skipping_needs_a_reason_and_never_covers_verification() {
        let c = HelpdeskCase::open(Scenario::PlannedPhoneChange, 0, vec![]);
        assert!(c.clone().skip(CaseStep::VerifyIdentity, "hd", "trust me", 1).is_err());
        let c = c.verify_identity("hd", verification(), 1).unwrap();
        assert!(c.clone().skip(CaseStep::IssueTap, "hd", "  ", 2).is_err());
        let c = c
            .skip(CaseStep::IssueTap, "hd", "user still has the old phone", 2)
            .unwrap();
        assert_eq!(c.next_step(), Some(CaseStep::DeliverTap));
        assert!(matches!(c.steps[1].outcome, Some(StepOutcome::Skipped { .. })));
    }

    #[test]
    fn verification_must_have_a_note_and_not_be_bootstrap() {
        let c = HelpdeskCase::open(Scenario::LostPhone, 0, vec![]);
        let mut v = verification();
        v.note = " ".into();
        assert!(c.clone().verify_identity("hd", v, 1).is_err());
        let v = IdentityVerification {
            method: VerificationMethod::Bootstrap,
            note: "x".into(),
        };
        assert!(c.verify_identity("hd", v, 1).is_err());
    }

    #[test]
    fn overdue_only_while_open() {
        let c = HelpdeskCase::open(Scenario::LostPhone, 0, vec![]);
        assert!(!c.is_overdue(24 * 3600));
        assert!(c.is_overdue(24 * 3600 + 1));
        let c = c.cancel("duplicate ticket", 5).unwrap();
        assert!(!c.is_overdue(10 * 24 * 3600));
    }

    #[test]
    fn email_is_not_a_delivery_channel() {
        assert!(DeliveryChannel::parse("email").is_err());
        assert!(DeliveryChannel::parse("EMAIL").is_err());
        assert_eq!(
            DeliveryChannel::parse("phone-call").unwrap(),
            DeliveryChannel::PhoneCall
        );
    }

    #[test]
    fn scenario_names_accept_cli_spelling() {
        assert_eq!(Scenario::parse("lost-phone").unwrap(), Scenario::LostPhone);
        assert!(Scenario::parse("disable-mfa").is_err());
    }
}
