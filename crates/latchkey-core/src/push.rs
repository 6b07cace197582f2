//! Push approval with number matching, and the fatigue rules around it.
//!
//! A sign-in that chooses push creates a *prompt*. The server picks a
//! two-digit number and shows it on the sign-in screen only; the
//! authenticator device shows where the sign-in comes from and asks the person
//! to type the number they see. The device signs its answer with its P-256
//! key (generated on the device; the server only ever holds the public key),
//! over a canonical payload that contains the prompt id, the server's random
//! challenge, the typed number and the decision. So:
//! - approving blindly is impossible: without looking at the sign-in screen
//!   there is a 1-in-90 chance to type the right number, and a wrong number
//!   ends the prompt (`WrongNumber`), it cannot be retried;
//! - a database leak cannot forge an approval (no private key on the server);
//! - an approval cannot be replayed onto another prompt (id + challenge).
//!
//! ```text
//!                 ┌──right number, valid signature──▶ Approved ──sign-in completes (used once)
//!                 ├──"deny"─────────────────────────▶ Denied
//!   Pending ──────┼──"this wasn't me"───────────────▶ Reported   (alert raised)
//!                 ├──wrong number───────────────────▶ WrongNumber
//!                 └──no answer by expires_at────────▶ Expired    (a timeout)
//! ```
//! Every state but `Pending` is final. A bad signature changes nothing (it is
//! not the device speaking).
//!
//! Fatigue rules ([`FatiguePolicy`]), pure functions over the user's recent
//! prompts: at most one pending prompt per user (the store also enforces it
//! with a unique partial index), at most `max_prompts` new prompts per
//! `window_secs`, and push is suspended for `suspend_secs` once
//! `suspend_after` prompts in `suspend_window_secs` were denied, reported,
//! answered with a wrong number or left to time out.

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use rand::{CryptoRng, Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::CoreError;

/// How long a prompt waits for its answer.
pub const PROMPT_LIFETIME_SECS: i64 = 60;
/// Domain separation for the signed payload.
pub const PAYLOAD_PREFIX: &str = "latchkey-push-v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptStatus {
    Pending,
    Approved,
    Denied,
    Reported,
    Expired,
    WrongNumber,
}

impl PromptStatus {
    pub const ALL: [PromptStatus; 6] = [
        PromptStatus::Pending,
        PromptStatus::Approved,
        PromptStatus::Denied,
        PromptStatus::Reported,
        PromptStatus::Expired,
        PromptStatus::WrongNumber,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PromptStatus::Pending => "pending",
            PromptStatus::Approved => "approved",
            PromptStatus::Denied => "denied",
            PromptStatus::Reported => "reported",
            PromptStatus::Expired => "expired",
            PromptStatus::WrongNumber => "wrong_number",
        }
    }

    pub fn parse(s: &str) -> Result<Self, CoreError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| CoreError::InvalidInput(format!("unknown prompt status '{s}'")))
    }

    /// An outcome that counts toward suspension: the person did not approve.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            PromptStatus::Denied | PromptStatus::Reported | PromptStatus::Expired | PromptStatus::WrongNumber
        )
    }

    /// The sign-in log reason for a prompt that did not end in approval
    /// (the contract the push-bombing detection reads).
    pub fn signin_reason(&self) -> Option<&'static str> {
        match self {
            PromptStatus::Denied => Some("push_denied"),
            PromptStatus::Expired => Some("push_timeout"),
            PromptStatus::Reported => Some("push_reported"),
            PromptStatus::WrongNumber => Some("push_wrong_number"),
            PromptStatus::Pending | PromptStatus::Approved => None,
        }
    }

    /// The status as of `now`: a pending prompt past its expiry has expired.
    pub fn at(self, expires_at: i64, now: i64) -> PromptStatus {
        if self == PromptStatus::Pending && now >= expires_at {
            PromptStatus::Expired
        } else {
            self
        }
    }
}

/// What the device answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Deny,
    /// "This wasn't me": deny and report.
    Report,
}

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
            Decision::Report => "report",
        }
    }
}

/// The two-digit number shown on the sign-in screen (10–99, so it always
/// has two digits and cannot be confused with an empty answer).
pub fn generate_number<R: RngCore + CryptoRng>(rng: &mut R) -> u8 {
    rng.gen_range(10..=99)
}

/// The bytes the device signs. Line-separated fields; none can contain a
/// newline (ids and challenges are base64url/uuid, the rest are fixed words
/// or digits), so the encoding is unambiguous.
pub fn canonical_payload(prompt_id: &str, challenge: &str, number: Option<u8>, decision: Decision) -> String {
    let number = number.map(|n| n.to_string()).unwrap_or_default();
    format!(
        "{PAYLOAD_PREFIX}\n{prompt_id}\n{challenge}\n{number}\n{}",
        decision.as_str()
    )
}

/// Parse a device public key: SEC1 (65-byte uncompressed point, what
/// WebCrypto's `raw` export gives) or SPKI DER. Returns its SEC1 bytes.
pub fn parse_public_key(bytes: &[u8]) -> Result<Vec<u8>, CoreError> {
    let key = VerifyingKey::from_sec1_bytes(bytes)
        .or_else(|_| VerifyingKey::from_public_key_der(bytes))
        .map_err(|_| CoreError::InvalidInput("public_key must be a P-256 key (SEC1 point or SPKI)".into()))?;
    Ok(key.to_encoded_point(false).as_bytes().to_vec())
}

/// Verify an ECDSA P-256 / SHA-256 signature, raw `r||s` (WebCrypto) or DER.
pub fn verify_signature(public_key_sec1: &[u8], payload: &str, signature: &[u8]) -> Result<(), CoreError> {
    let key = VerifyingKey::from_sec1_bytes(public_key_sec1)
        .map_err(|_| CoreError::Crypto("stored device key is not a P-256 point".into()))?;
    let sig = Signature::from_slice(signature)
        .or_else(|_| Signature::from_der(signature))
        .map_err(|_| CoreError::InvalidInput("signature must be a P-256 ECDSA signature".into()))?;
    key.verify(payload.as_bytes(), &sig)
        .map_err(|_| CoreError::Crypto("the signature does not match the device key".into()))
}

/// A prompt as the answer rule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptView {
    pub status: PromptStatus,
    pub number: u8,
    pub expires_at: i64,
}

/// The state a signed, verified answer moves a prompt to. The signature must
/// already have been checked against the device key (it covers `typed`).
pub fn answer(prompt: &PromptView, decision: Decision, typed: Option<u8>, now: i64) -> Result<PromptStatus, CoreError> {
    match prompt.status.at(prompt.expires_at, now) {
        PromptStatus::Pending => {}
        PromptStatus::Expired => {
            return Err(CoreError::InvalidTransition("the prompt has expired".into()));
        }
        other => {
            return Err(CoreError::InvalidTransition(format!(
                "the prompt was already answered ({})",
                other.as_str()
            )))
        }
    }
    Ok(match decision {
        Decision::Deny => PromptStatus::Denied,
        Decision::Report => PromptStatus::Reported,
        Decision::Approve if typed == Some(prompt.number) => PromptStatus::Approved,
        Decision::Approve => PromptStatus::WrongNumber,
    })
}

/// Fatigue limits. The defaults follow common practice: a handful of prompts
/// per ten minutes is plenty for a person; three rejections in an hour look
/// like someone else holds the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FatiguePolicy {
    pub max_prompts: u32,
    pub window_secs: i64,
    pub suspend_after: u32,
    pub suspend_window_secs: i64,
    pub suspend_secs: i64,
}

impl Default for FatiguePolicy {
    fn default() -> Self {
        Self {
            max_prompts: 3,
            window_secs: 10 * 60,
            suspend_after: 3,
            suspend_window_secs: 60 * 60,
            suspend_secs: 60 * 60,
        }
    }
}

/// One recent prompt of the user (status already taken [`PromptStatus::at`] now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptHistory {
    pub created_at: i64,
    /// When it reached its final state (its expiry for a timeout).
    pub ended_at: Option<i64>,
    pub status: PromptStatus,
}

/// Why no new prompt may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum PushRefusal {
    /// A prompt is still waiting for an answer.
    PromptPending,
    /// Too many prompts lately; try again in `retry_after` seconds.
    RateLimited { retry_after: i64 },
    /// Push is suspended for this user until `until`.
    Suspended { until: i64 },
}

impl FatiguePolicy {
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.max_prompts == 0 || self.suspend_after == 0 {
            return Err(CoreError::InvalidInput("push limits must be at least 1".into()));
        }
        if self.window_secs <= 0 || self.suspend_window_secs <= 0 || self.suspend_secs <= 0 {
            return Err(CoreError::InvalidInput("push windows must be positive".into()));
        }
        Ok(())
    }

    /// Until when push is suspended, if it is: `suspend_after` rejections
    /// within `suspend_window_secs`, none of them followed by an approval,
    /// suspend push for `suspend_secs` after the last of them.
    pub fn suspended_until(&self, history: &[PromptHistory], now: i64) -> Option<i64> {
        let last_approval = history
            .iter()
            .filter(|p| p.status == PromptStatus::Approved)
            .filter_map(|p| p.ended_at)
            .max()
            .unwrap_or(i64::MIN);
        let mut ends: Vec<i64> = history
            .iter()
            .filter(|p| p.status.is_rejection())
            .filter_map(|p| p.ended_at)
            .filter(|&t| t > last_approval && t <= now)
            .collect();
        ends.sort_unstable();
        let n = self.suspend_after as usize;
        // Any n consecutive rejections that fit in the window start a suspension.
        let mut until: Option<i64> = None;
        for w in ends.windows(n) {
            if w[n - 1] - w[0] < self.suspend_window_secs {
                until = Some(w[n - 1] + self.suspend_secs);
            }
        }
        until.filter(|&u| u > now)
    }

    /// Whether a new prompt may be created now.
    pub fn may_prompt(&self, history: &[PromptHistory], now: i64) -> Result<(), PushRefusal> {
        if let Some(until) = self.suspended_until(history, now) {
            return Err(PushRefusal::Suspended { until });
        }
        if history.iter().any(|p| p.status == PromptStatus::Pending) {
            return Err(PushRefusal::PromptPending);
        }
        let mut recent: Vec<i64> = history
            .iter()
            .map(|p| p.created_at)
            .filter(|&t| t > now - self.window_secs && t <= now)
            .collect();
        if recent.len() >= self.max_prompts as usize {
            recent.sort_unstable();
            // The oldest prompt in the window must leave it first.
            let oldest = recent[recent.len() - self.max_prompts as usize];
            return Err(PushRefusal::RateLimited {
                retry_after: (oldest + self.window_secs - now).max(1),
            });
        }
        Ok(())
    }

    /// Whether ending a prompt with `outcome` at `now` is the rejection that
    /// starts a suspension (so the alert is raised once, not on every refusal).
    pub fn starts_suspension(&self, history_before: &[PromptHistory], outcome: PromptStatus, now: i64) -> bool {
        if !outcome.is_rejection() || self.suspended_until(history_before, now).is_some() {
            return false;
        }
        let mut after = history_before.to_vec();
        after.push(PromptHistory {
            created_at: now,
            ended_at: Some(now),
            status: outcome,
        });
        self.suspended_until(&after, now).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;
    use rand::rngs::OsRng;

    const T: i64 = 1_800_000_000;

    fn pending(number: u8) -> PromptView {
        PromptView {
            status: PromptStatus::Pending,
            number,
            expires_at: T + PROMPT_LIFETIME_SECS,
        }
    }

    #[test]
    fn only_the_right_number_approves() {
        let p = pending(42);
        assert_eq!(
            answer(&p, Decision::Approve, Some(42), T).unwrap(),
            PromptStatus::Approved
        );
        assert_eq!(
            answer(&p, Decision::Approve, Some(24), T).unwrap(),
            PromptStatus::WrongNumber
        );
        assert_eq!(
            answer(&p, Decision::Approve, None, T).unwrap(),
            PromptStatus::WrongNumber
        );
        assert_eq!(answer(&p, Decision::Deny, None, T).unwrap(), PromptStatus::Denied);
        assert_eq!(answer(&p, Decision::Report, None, T).unwrap(), PromptStatus::Reported);
    }

    #[test]
    fn final_states_cannot_be_answered_again_and_expiry_wins() {
        let mut p = pending(42);
        assert!(answer(&p, Decision::Approve, Some(42), T + PROMPT_LIFETIME_SECS).is_err());
        assert!(answer(&p, Decision::Approve, Some(42), T + PROMPT_LIFETIME_SECS - 1).is_ok());
        for s in PromptStatus::ALL.into_iter().filter(|s| *s != PromptStatus::Pending) {
            p.status = s;
            assert!(answer(&p, Decision::Approve, Some(42), T).is_err(), "{s:?}");
        }
        assert_eq!(PromptStatus::Pending.at(T, T), PromptStatus::Expired);
        assert_eq!(PromptStatus::Denied.at(T, T + 5), PromptStatus::Denied);
    }

    #[test]
    fn numbers_have_two_digits() {
        for _ in 0..1000 {
            let n = generate_number(&mut OsRng);
            assert!((10..=99).contains(&n));
        }
    }

    #[test]
    fn signatures_bind_every_field_and_the_key() {
        let sk = SigningKey::random(&mut OsRng);
        let pk = parse_public_key(sk.verifying_key().to_encoded_point(false).as_bytes()).unwrap();
        let spki = p256::pkcs8::EncodePublicKey::to_public_key_der(sk.verifying_key()).unwrap();
        assert_eq!(parse_public_key(spki.as_bytes()).unwrap(), pk);
        let payload = canonical_payload("p1", "chal", Some(42), Decision::Approve);
        let sig: Signature = sk.sign(payload.as_bytes());
        verify_signature(&pk, &payload, &sig.to_bytes()).unwrap();
        verify_signature(&pk, &payload, sig.to_der().as_bytes()).unwrap();
        for other in [
            canonical_payload("p2", "chal", Some(42), Decision::Approve),
            canonical_payload("p1", "chal2", Some(42), Decision::Approve),
            canonical_payload("p1", "chal", Some(43), Decision::Approve),
            canonical_payload("p1", "chal", Some(42), Decision::Deny),
        ] {
            assert!(verify_signature(&pk, &other, &sig.to_bytes()).is_err());
        }
        let stranger = SigningKey::random(&mut OsRng);
        let sig2: Signature = stranger.sign(payload.as_bytes());
        assert!(verify_signature(&pk, &payload, &sig2.to_bytes()).is_err());
        assert!(parse_public_key(b"not a key").is_err());
        assert!(verify_signature(&pk, &payload, b"junk").is_err());
    }

    fn h(created_at: i64, ended_at: Option<i64>, status: PromptStatus) -> PromptHistory {
        PromptHistory {
            created_at,
            ended_at,
            status,
        }
    }

    #[test]
    fn one_pending_prompt_at_a_time() {
        let p = FatiguePolicy::default();
        assert_eq!(p.may_prompt(&[], T), Ok(()));
        let hist = [h(T, None, PromptStatus::Pending)];
        assert_eq!(p.may_prompt(&hist, T + 1), Err(PushRefusal::PromptPending));
    }

    #[test]
    fn rate_limit_counts_prompts_in_the_window() {
        let p = FatiguePolicy::default();
        let hist = [
            h(T, Some(T + 5), PromptStatus::Approved),
            h(T + 60, Some(T + 65), PromptStatus::Approved),
            h(T + 120, Some(T + 125), PromptStatus::Approved),
        ];
        assert_eq!(
            p.may_prompt(&hist, T + 130),
            Err(PushRefusal::RateLimited { retry_after: 470 })
        );
        assert_eq!(p.may_prompt(&hist, T + 600), Ok(()));
        assert_eq!(p.may_prompt(&hist[..2], T + 130), Ok(()));
    }

    #[test]
    fn repeated_rejections_suspend_push_until_it_lapses() {
        let p = FatiguePolicy {
            max_prompts: 100,
            ..Default::default()
        };
        let hist = [
            h(T, Some(T + 60), PromptStatus::Expired),
            h(T + 100, Some(T + 110), PromptStatus::Denied),
        ];
        assert_eq!(p.may_prompt(&hist, T + 200), Ok(()));
        assert!(p.starts_suspension(&hist, PromptStatus::WrongNumber, T + 200));
        assert!(!p.starts_suspension(&hist, PromptStatus::Approved, T + 200));
        let mut more = hist.to_vec();
        more.push(h(T + 150, Some(T + 200), PromptStatus::WrongNumber));
        assert_eq!(
            p.may_prompt(&more, T + 201),
            Err(PushRefusal::Suspended { until: T + 200 + 3600 })
        );
        assert!(
            !p.starts_suspension(&more, PromptStatus::Denied, T + 300),
            "already suspended"
        );
        assert_eq!(p.may_prompt(&more, T + 200 + 3600), Ok(()));
    }

    #[test]
    fn rejections_spread_out_or_reset_by_approval_do_not_suspend() {
        let p = FatiguePolicy::default();
        let spread = [
            h(T, Some(T), PromptStatus::Denied),
            h(T + 2000, Some(T + 2000), PromptStatus::Denied),
            h(T + 4000, Some(T + 4000), PromptStatus::Denied),
        ];
        assert_eq!(p.suspended_until(&spread, T + 4001), None);
        let reset = [
            h(T, Some(T), PromptStatus::Denied),
            h(T + 10, Some(T + 10), PromptStatus::Denied),
            h(T + 20, Some(T + 20), PromptStatus::Approved),
            h(T + 30, Some(T + 30), PromptStatus::Denied),
        ];
        assert_eq!(p.suspended_until(&reset, T + 31), None);
    }

    #[test]
    fn push_and_sms_satisfy_mfa_only() {
        use crate::policy::AuthenticationStrength;
        use crate::{AuthStrength, VerifyMethod::*};
        for second in [Push, Sms, Voice] {
            assert_eq!(AuthStrength::achieved(&[Password, second]), Some(AuthStrength::Mfa));
            assert_eq!(AuthStrength::achieved(&[second]), None, "never without the password");
            for s in [AuthStrength::PasswordlessMfa, AuthStrength::PhishingResistant] {
                let table = AuthenticationStrength::builtin(s);
                assert!(
                    !table.combinations.iter().any(|c| c.contains(&second)),
                    "{second:?} must not appear in {}",
                    s.as_str()
                );
            }
            let mfa = AuthenticationStrength::builtin(AuthStrength::Mfa);
            assert!(mfa.combinations.contains(&vec![Password, second]));
        }
    }

    #[test]
    fn policy_validation() {
        assert!(FatiguePolicy::default().validate().is_ok());
        assert!(FatiguePolicy {
            max_prompts: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
