//! The sign-in flow as explicit states.
//!
//! ```text
//!  Started ──password ok, has 2nd factor──▶ SecondFactorRequired{allowed} ──factor ok──▶ Complete
//!     │  └─password ok, no 2nd factor──────▶ RegistrationRequired   (no session: ask for a TAP)
//!     ├──TAP ok────────────────────────────────────────────────────────────────────────▶ Complete
//!     └──passkey with user verification (no password)──────────────────────────────────▶ Complete
//! ```
//! A WebAuthn step taken without a password is only accepted with user
//! verification (see [`crate::webauthn::check_assertion`]).
//! Failures do not change the flow's state; they are counted by
//! [`crate::softlock`] against the user and the source. A flow expires after
//! [`FLOW_LIFETIME_SECS`] whatever its state.

use serde::{Deserialize, Serialize};

use crate::model::VerifyMethod;
use crate::policy::AuthenticationStrength;
use crate::strength::AuthStrength;
use crate::CoreError;

pub const FLOW_LIFETIME_SECS: i64 = 10 * 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SignInState {
    /// Identifier given (or, for a usernameless passkey sign-in, not even
    /// that); awaiting a password, a TAP or a passkey.
    Started,
    /// The password was right; one of `allowed` must follow.
    SecondFactorRequired {
        allowed: Vec<VerifyMethod>,
    },
    /// The password was right but the user has no second factor. No session
    /// is granted: a password alone must never be enough to enrol one.
    RegistrationRequired,
    Complete {
        acr: AuthStrength,
    },
}

impl SignInState {
    pub fn name(&self) -> &'static str {
        match self {
            SignInState::Started => "started",
            SignInState::SecondFactorRequired { .. } => "second_factor_required",
            SignInState::RegistrationRequired => "registration_required",
            SignInState::Complete { .. } => "complete",
        }
    }

    /// Whether `method` may come next. Beyond what [`Self::allowed_methods`]
    /// advertises, a passkey may always start: it is offered through its own
    /// endpoints (and must verify the user), and listing it per user would
    /// tell strangers who has one.
    pub fn accepts(&self, method: VerifyMethod) -> bool {
        self.allowed_methods().contains(&method)
            || (matches!(self, SignInState::Started) && method == VerifyMethod::Webauthn)
    }

    /// What the client may send next.
    pub fn allowed_methods(&self) -> Vec<VerifyMethod> {
        match self {
            SignInState::Started => vec![VerifyMethod::Password, VerifyMethod::TemporaryAccessPass],
            SignInState::SecondFactorRequired { allowed } => allowed.clone(),
            SignInState::RegistrationRequired => vec![VerifyMethod::TemporaryAccessPass],
            SignInState::Complete { .. } => vec![],
        }
    }
}

/// A sign-in in progress. Persisted between requests so any node can continue it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInFlow {
    pub state: SignInState,
    /// Steps proven so far, in order.
    pub methods: Vec<VerifyMethod>,
    pub required: AuthStrength,
    /// Strengths conditional access requires on top of `required`; all must
    /// hold before the flow completes, and only factors that can still lead
    /// there are offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strengths: Vec<AuthenticationStrength>,
    pub started_at: i64,
    pub expires_at: i64,
    /// `amr` values a step reported beyond its method's defaults (WebAuthn's
    /// `hwk`/`swk`, `user`), merged into [`SignInFlow::amr`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr_detail: Vec<String>,
    /// The Temporary Access Pass a step proved when that step did not
    /// complete the flow: it is checked again, and spent, by the step that
    /// does, so revoking it stops the flow too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_id: Option<String>,
}

impl SignInFlow {
    pub fn start(now: i64, required: AuthStrength) -> Self {
        Self {
            state: SignInState::Started,
            methods: vec![],
            required,
            strengths: vec![],
            started_at: now,
            expires_at: now + FLOW_LIFETIME_SECS,
            amr_detail: vec![],
            pass_id: None,
        }
    }

    /// Add the strengths a conditional-access decision requires.
    pub fn with_strengths(mut self, strengths: Vec<AuthenticationStrength>) -> Self {
        self.strengths = strengths;
        self
    }

    /// The strength a set of steps reaches, if it completes this flow.
    fn completes(&self, methods: &[VerifyMethod]) -> Option<AuthStrength> {
        AuthStrength::achieved(methods)
            .filter(|acr| *acr >= self.required && self.strengths.iter().all(|s| s.satisfied_by(methods, None)))
    }

    /// Factors worth offering next: those that, with some of the user's other
    /// factors, can still complete the flow and are needed for it. (At most 2^6 subsets.)
    fn useful(&self, second_factors: &[VerifyMethod]) -> Vec<VerifyMethod> {
        let pool: Vec<VerifyMethod> = second_factors
            .iter()
            .copied()
            .filter(|m| m.is_second_factor() && !self.methods.contains(m))
            .collect();
        pool.iter()
            .copied()
            .filter(|m| {
                let others: Vec<VerifyMethod> = pool.iter().copied().filter(|o| o != m).collect();
                (0u32..1 << others.len()).any(|mask| {
                    let mut set = self.methods.clone();
                    set.push(*m);
                    set.extend(
                        others
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << i) != 0)
                            .map(|(_, o)| *o),
                    );
                    // `m` must matter: without it the same set falls short.
                    let without: Vec<VerifyMethod> = set.iter().copied().filter(|x| x != m).collect();
                    self.completes(&set).is_some() && self.completes(&without).is_none()
                })
            })
            .collect()
    }

    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.expires_at
    }

    /// Refuse a step the current state does not offer.
    pub fn check_allowed(&self, method: VerifyMethod, now: i64) -> Result<(), CoreError> {
        if self.is_expired(now) {
            return Err(CoreError::FlowExpired);
        }
        if self.state.accepts(method) {
            Ok(())
        } else {
            Err(CoreError::InvalidTransition(format!(
                "'{}' is not offered in state '{}'",
                method.as_str(),
                self.state.name()
            )))
        }
    }

    /// Record a verified step and move to the next state. `second_factors` are
    /// the steps the user's registered, active methods can answer.
    pub fn step_verified(
        mut self,
        method: VerifyMethod,
        second_factors: &[VerifyMethod],
        now: i64,
    ) -> Result<Self, CoreError> {
        self.check_allowed(method, now)?;
        self.methods.push(method);
        self.state = match self.completes(&self.methods) {
            Some(acr) => SignInState::Complete { acr },
            _ if method == VerifyMethod::Password => {
                let allowed = self.useful(second_factors);
                if allowed.is_empty() {
                    SignInState::RegistrationRequired
                } else {
                    SignInState::SecondFactorRequired { allowed }
                }
            }
            // A factor that proved something but not enough (a TAP where a
            // policy wants phishing resistance): keep asking for what can
            // still complete the flow.
            _ => SignInState::SecondFactorRequired {
                allowed: self.useful(second_factors),
            },
        };
        Ok(self)
    }

    /// Like [`SignInFlow::step_verified`], recording what the step itself
    /// reported about how it was performed (RFC 8176 values).
    pub fn step_verified_with_amr(
        self,
        method: VerifyMethod,
        amr: &[String],
        second_factors: &[VerifyMethod],
        now: i64,
    ) -> Result<Self, CoreError> {
        let mut next = self.step_verified(method, second_factors, now)?;
        for a in amr {
            if !next.amr_detail.contains(a) {
                next.amr_detail.push(a.clone());
            }
        }
        Ok(next)
    }

    pub fn amr(&self) -> Vec<String> {
        AuthStrength::amr_with_detail(&self.methods, &self.amr_detail)
    }
}

/// Order second factors strongest first (WebAuthn, push, TOTP, phone codes,
/// the rest), without duplicates, so clients can preselect the first.
pub fn strongest_first(factors: &mut Vec<VerifyMethod>) {
    let mut seen = vec![];
    factors.retain(|v| {
        let new = !seen.contains(v);
        seen.push(*v);
        new
    });
    factors.sort_by_key(|v| match v {
        VerifyMethod::Webauthn => 0,
        VerifyMethod::Push => 1,
        VerifyMethod::Totp => 2,
        VerifyMethod::Sms | VerifyMethod::Voice => 3,
        _ => 4,
    });
}

/// How long a session may last, from configuration and the sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// The longest any session lives.
    pub absolute_secs: i64,
    /// Unused for this long, a session ends.
    pub idle_secs: i64,
    /// Conditional access's sign-in frequency: sign in again after this.
    pub sign_in_frequency_secs: Option<i64>,
    /// The end of the Temporary Access Pass the session was opened with: a
    /// TAP session exists to register methods and ends with the pass.
    pub pass_expires_at: Option<i64>,
}

/// When a session opened at `now` ends: (absolute end, first idle end).
pub fn session_deadlines(now: i64, l: &SessionLimits) -> (i64, i64) {
    let mut expires_at = now + l.absolute_secs;
    if let Some(f) = l.sign_in_frequency_secs {
        expires_at = expires_at.min(now + f);
    }
    if let Some(t) = l.pass_expires_at {
        expires_at = expires_at.min(t);
    }
    (expires_at, (now + l.idle_secs).min(expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_rank_strongest_first_without_duplicates() {
        use VerifyMethod::*;
        let mut f = vec![Sms, Totp, RecoveryCode, Webauthn, Totp, Push, Voice];
        strongest_first(&mut f);
        assert_eq!(f, vec![Webauthn, Push, Totp, Sms, Voice, RecoveryCode]);
        let mut none: Vec<VerifyMethod> = vec![];
        strongest_first(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn session_deadlines_take_the_earliest_limit() {
        let base = SessionLimits {
            absolute_secs: 8 * 3600,
            idle_secs: 1800,
            sign_in_frequency_secs: None,
            pass_expires_at: None,
        };
        assert_eq!(session_deadlines(1000, &base), (1000 + 8 * 3600, 1000 + 1800));
        // Sign-in frequency shortens the session, and idle never outlives it.
        let f = SessionLimits {
            sign_in_frequency_secs: Some(600),
            ..base
        };
        assert_eq!(session_deadlines(1000, &f), (1600, 1600));
        // A TAP session ends with its pass, whichever is earlier.
        let t = SessionLimits {
            pass_expires_at: Some(1300),
            sign_in_frequency_secs: Some(3600),
            ..base
        };
        assert_eq!(session_deadlines(1000, &t), (1300, 1300));
        let late_pass = SessionLimits {
            pass_expires_at: Some(1_000_000),
            ..base
        };
        assert_eq!(session_deadlines(1000, &late_pass), (1000 + 8 * 3600, 2800));
    }
    use VerifyMethod::*;

    #[test]
    fn password_then_totp_completes_with_mfa() {
        let f = SignInFlow::start(0, AuthStrength::Mfa);
        let f = f.step_verified(Password, &[Totp, RecoveryCode], 1).unwrap();
        assert_eq!(
            f.state,
            SignInState::SecondFactorRequired {
                allowed: vec![Totp, RecoveryCode]
            }
        );
        let f = f.step_verified(Totp, &[Totp, RecoveryCode], 2).unwrap();
        assert_eq!(f.state, SignInState::Complete { acr: AuthStrength::Mfa });
        assert_eq!(f.amr(), vec!["pwd", "otp", "mfa"]);
    }

    #[test]
    fn password_alone_never_completes() {
        let f = SignInFlow::start(0, AuthStrength::Mfa)
            .step_verified(Password, &[], 1)
            .unwrap();
        assert_eq!(f.state, SignInState::RegistrationRequired);
        assert!(f.clone().step_verified(Totp, &[], 2).is_err());
        // ...but a TAP still gets the user in to register a method.
        let f = f.step_verified(TemporaryAccessPass, &[], 2).unwrap();
        assert_eq!(
            f.state,
            SignInState::Complete {
                acr: AuthStrength::PasswordlessMfa
            }
        );
    }

    #[test]
    fn totp_before_password_is_refused() {
        let f = SignInFlow::start(0, AuthStrength::Mfa);
        assert!(matches!(
            f.step_verified(Totp, &[Totp], 1),
            Err(CoreError::InvalidTransition(_))
        ));
    }

    #[test]
    fn a_method_not_registered_is_not_offered() {
        let f = SignInFlow::start(0, AuthStrength::Mfa)
            .step_verified(Password, &[Totp], 1)
            .unwrap();
        assert!(f.step_verified(RecoveryCode, &[Totp], 2).is_err());
    }

    #[test]
    fn expired_flows_refuse_everything() {
        let f = SignInFlow::start(0, AuthStrength::Mfa);
        assert_eq!(
            f.step_verified(Password, &[Totp], FLOW_LIFETIME_SECS),
            Err(CoreError::FlowExpired)
        );
    }

    #[test]
    fn a_policy_strength_offers_only_factors_that_satisfy_it() {
        let pr = crate::policy::AuthenticationStrength::builtin(AuthStrength::PhishingResistant);
        let f = SignInFlow::start(0, AuthStrength::Mfa)
            .with_strengths(vec![pr])
            .step_verified(Password, &[Webauthn, Totp], 1)
            .unwrap();
        assert_eq!(
            f.state,
            SignInState::SecondFactorRequired {
                allowed: vec![Webauthn]
            }
        );
        assert!(f.clone().step_verified(Totp, &[Webauthn, Totp], 2).is_err());
        let f = f.step_verified(Webauthn, &[Webauthn, Totp], 2).unwrap();
        assert_eq!(
            f.state,
            SignInState::Complete {
                acr: AuthStrength::PhishingResistant
            }
        );
    }

    #[test]
    fn no_satisfying_factor_means_registration_required() {
        let pr = crate::policy::AuthenticationStrength::builtin(AuthStrength::PhishingResistant);
        let f = SignInFlow::start(0, AuthStrength::Mfa)
            .with_strengths(vec![pr])
            .step_verified(Password, &[Totp], 1)
            .unwrap();
        assert_eq!(f.state, SignInState::RegistrationRequired);
    }

    #[test]
    fn passkey_alone_completes_phishing_resistant() {
        let f = SignInFlow::start(0, AuthStrength::Mfa);
        let amr = vec!["swk".to_owned(), "user".into(), "mfa".into()];
        let f = f.step_verified_with_amr(Webauthn, &amr, &[Webauthn], 1).unwrap();
        assert_eq!(
            f.state,
            SignInState::Complete {
                acr: AuthStrength::PhishingResistant
            }
        );
        assert_eq!(f.amr(), vec!["swk", "user", "mfa"]);
        // Survives the round trip through the store.
        let back: SignInFlow = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back.amr(), f.amr());
    }

    #[test]
    fn security_key_after_password_is_phishing_resistant() {
        let f = SignInFlow::start(0, AuthStrength::Mfa)
            .step_verified(Password, &[Webauthn, Totp], 1)
            .unwrap()
            .step_verified_with_amr(Webauthn, &["hwk".to_owned()], &[Webauthn, Totp], 2)
            .unwrap();
        assert_eq!(
            f.state,
            SignInState::Complete {
                acr: AuthStrength::PhishingResistant
            }
        );
        assert_eq!(f.amr(), vec!["pwd", "hwk", "mfa"]);
    }

    #[test]
    fn old_stored_flows_without_amr_detail_still_load() {
        let json = r#"{"state":{"state":"started"},"methods":[],"required":"mfa","started_at":0,"expires_at":600}"#;
        let f: SignInFlow = serde_json::from_str(json).unwrap();
        assert!(f.amr_detail.is_empty());
    }

    #[test]
    fn complete_is_terminal() {
        let f = SignInFlow::start(0, AuthStrength::Mfa)
            .step_verified(TemporaryAccessPass, &[], 1)
            .unwrap();
        assert!(f.step_verified(Password, &[], 2).is_err());
    }
}
