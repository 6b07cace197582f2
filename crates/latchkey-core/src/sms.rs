//! SMS and voice one-time codes: a labelled weak backup.
//!
//! Codes travel over the phone network, where SIM swaps, SS7 interception and
//! phishing relays read them; so they satisfy `mfa` only, never
//! `passwordless_mfa` or `phishing_resistant` (see [`crate::strength`]).
//!
//! ```text
//!   (send) ──▶ Sent ──right code, in time──▶ Used        (single use, in SQL)
//!               ├───wrong code──▶ Sent (attempts + 1) ──max_attempts──▶ Exhausted
//!               └───expires_at──▶ Expired
//! ```
//! The code is stored as a keyed hash (like every bearer secret); the phone
//! number is stored sealed and shown masked.

use rand::{CryptoRng, Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::CoreError;

/// A phone number in E.164 form: '+', country code, up to 15 digits in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Accepts spaces, dashes, dots and parentheses as people type them;
    /// requires the leading '+' and country code (no guessing a country).
    pub fn parse(input: &str) -> Result<Self, CoreError> {
        let s = input.trim();
        let bad = || CoreError::InvalidInput("phone number must be in E.164 form, e.g. +14155550123".into());
        let rest = s.strip_prefix('+').ok_or_else(bad)?;
        let mut digits = String::new();
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(bad()),
            }
        }
        if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(bad());
        }
        Ok(Self(format!("+{digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the UI, logs and audit show: the country code's first digit and
    /// the last two digits, e.g. `+1•••••••23`.
    pub fn masked(&self) -> String {
        let d = &self.0[1..];
        let keep_end = &d[d.len() - 2..];
        format!("+{}{}{}", &d[..1], "•".repeat(d.len() - 3), keep_end)
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, CoreError> {
        Self::parse(&s)
    }
}
impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

/// Code and sending limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsPolicy {
    /// 6–8.
    pub digits: u32,
    pub lifetime_secs: i64,
    /// Wrong guesses before a code stops working.
    pub max_attempts: u32,
    /// Codes sent per user per `window_secs`.
    pub max_sends_per_user: u32,
    /// Codes sent to one phone number per `window_secs` (whoever asks).
    pub max_sends_per_phone: u32,
    pub window_secs: i64,
}

impl Default for SmsPolicy {
    fn default() -> Self {
        Self {
            digits: 6,
            lifetime_secs: 5 * 60,
            max_attempts: 5,
            max_sends_per_user: 3,
            max_sends_per_phone: 5,
            window_secs: 10 * 60,
        }
    }
}

impl SmsPolicy {
    pub fn validate(&self) -> Result<(), CoreError> {
        if !(6..=8).contains(&self.digits) {
            return Err(CoreError::InvalidInput("SMS codes must have 6-8 digits".into()));
        }
        if !(30..=15 * 60).contains(&self.lifetime_secs) {
            return Err(CoreError::InvalidInput(
                "SMS code lifetime must be 30 s to 15 min".into(),
            ));
        }
        if self.max_attempts == 0
            || self.max_sends_per_user == 0
            || self.max_sends_per_phone == 0
            || self.window_secs <= 0
        {
            return Err(CoreError::InvalidInput("SMS limits must be positive".into()));
        }
        Ok(())
    }

    pub fn generate_code<R: RngCore + CryptoRng>(&self, rng: &mut R) -> String {
        (0..self.digits)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect()
    }

    /// Whether another code may be sent, given how many went out in the
    /// window to this user and to this number. Returns seconds to wait.
    pub fn may_send(&self, sent_to_user: u32, sent_to_phone: u32) -> Result<(), i64> {
        if sent_to_user >= self.max_sends_per_user || sent_to_phone >= self.max_sends_per_phone {
            Err(self.window_secs)
        } else {
            Ok(())
        }
    }
}

/// Canonical form of a typed code: digits only. `None` when it cannot be a code.
pub fn normalize_code(input: &str) -> Option<String> {
    let d: String = input.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    ((6..=8).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit())).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn e164_parsing_and_masking() {
        let p = PhoneNumber::parse(" +1 (415) 555-0123 ").unwrap();
        assert_eq!(p.as_str(), "+14155550123");
        assert_eq!(p.masked(), "+1••••••••23");
        assert!(!p.masked().contains("555"));
        for bad in [
            "4155550123",
            "+0123456789",
            "+12",
            "+1234567890123456",
            "+1415abc0123",
            "",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn codes_have_the_configured_digits() {
        let p = SmsPolicy {
            digits: 8,
            ..Default::default()
        };
        let c = p.generate_code(&mut OsRng);
        assert_eq!(c.len(), 8);
        assert!(c.chars().all(|c| c.is_ascii_digit()));
        assert!(SmsPolicy {
            digits: 4,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert_eq!(normalize_code("123 456"), Some("123456".into()));
        assert_eq!(normalize_code("12345"), None);
        assert_eq!(normalize_code("12345a"), None);
    }

    #[test]
    fn sending_is_limited_per_user_and_per_phone() {
        let p = SmsPolicy::default();
        assert_eq!(p.may_send(0, 0), Ok(()));
        assert_eq!(p.may_send(3, 0), Err(600));
        assert_eq!(p.may_send(0, 5), Err(600));
        assert_eq!(p.may_send(2, 4), Ok(()));
    }
}
