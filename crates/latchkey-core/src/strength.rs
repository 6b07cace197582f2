//! Authentication strengths: named, ordered sets of acceptable method combinations.

use serde::{Deserialize, Serialize};

use crate::model::VerifyMethod;

/// Built-in strengths, weakest first. `Ord` follows strength, so
/// `required <= achieved` is the satisfaction test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStrength {
    /// Password plus any second factor (SMS included), or anything stronger.
    Mfa,
    /// No password needed: a passkey, a push with a device-bound key, or a TAP.
    PasswordlessMfa,
    /// Only WebAuthn: bound to the origin, so a phishing proxy cannot relay it.
    PhishingResistant,
}

impl AuthStrength {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthStrength::Mfa => "mfa",
            AuthStrength::PasswordlessMfa => "passwordless_mfa",
            AuthStrength::PhishingResistant => "phishing_resistant",
        }
    }

    /// The strongest built-in strength a set of completed steps satisfies.
    ///
    /// A WebAuthn step is phishing resistant (the signature covers our
    /// origin) whether it follows a password (security key as second factor)
    /// or stands alone: the sign-in flow only accepts it alone when the
    /// authenticator verified the user (a passkey), which is itself
    /// multi-factor, so it also meets `passwordless_mfa`.
    pub fn achieved(methods: &[VerifyMethod]) -> Option<AuthStrength> {
        let has = |m: VerifyMethod| methods.contains(&m);
        if has(VerifyMethod::Webauthn) {
            return Some(AuthStrength::PhishingResistant);
        }
        if has(VerifyMethod::TemporaryAccessPass) {
            return Some(AuthStrength::PasswordlessMfa);
        }
        let second = methods.iter().any(VerifyMethod::is_second_factor);
        if has(VerifyMethod::Password) && second {
            return Some(AuthStrength::Mfa);
        }
        None
    }

    /// RFC 8176 `amr` for a set of steps: each step's values, plus `mfa` when
    /// more than one factor was used.
    pub fn amr(methods: &[VerifyMethod]) -> Vec<String> {
        let mut amr: Vec<String> = Vec::new();
        for m in methods {
            for v in m.amr() {
                if !amr.iter().any(|a| a == v) {
                    amr.push((*v).to_owned());
                }
            }
        }
        if methods.len() > 1 {
            amr.push("mfa".to_owned());
        }
        amr
    }

    /// [`AuthStrength::amr`] refined by what the steps reported about
    /// themselves: a software WebAuthn key replaces the default `hwk` with
    /// `swk`; `mfa` stays last.
    pub fn amr_with_detail(methods: &[VerifyMethod], detail: &[String]) -> Vec<String> {
        let mut amr = Self::amr(methods);
        if detail.is_empty() {
            return amr;
        }
        if detail.iter().any(|d| d == "swk") && !methods.contains(&VerifyMethod::Push) {
            amr.retain(|a| a != "hwk");
        }
        let had_mfa = amr.iter().any(|a| a == "mfa");
        amr.retain(|a| a != "mfa");
        for d in detail {
            if d != "mfa" && !amr.contains(d) {
                amr.push(d.clone());
            }
        }
        if had_mfa || detail.iter().any(|d| d == "mfa") {
            amr.push("mfa".to_owned());
        }
        amr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VerifyMethod::*;

    #[test]
    fn password_alone_is_not_mfa() {
        assert_eq!(AuthStrength::achieved(&[Password]), None);
    }

    #[test]
    fn password_and_totp_is_mfa_only() {
        assert_eq!(AuthStrength::achieved(&[Password, Totp]), Some(AuthStrength::Mfa));
        assert!(AuthStrength::Mfa < AuthStrength::PhishingResistant);
    }

    #[test]
    fn tap_is_passwordless_mfa_but_not_phishing_resistant() {
        let s = AuthStrength::achieved(&[TemporaryAccessPass]).unwrap();
        assert_eq!(s, AuthStrength::PasswordlessMfa);
        assert!(s < AuthStrength::PhishingResistant);
    }

    #[test]
    fn webauthn_is_phishing_resistant_alone_or_after_a_password() {
        assert_eq!(
            AuthStrength::achieved(&[Password, Webauthn]),
            Some(AuthStrength::PhishingResistant)
        );
        let passkey = AuthStrength::achieved(&[Webauthn]).unwrap();
        assert_eq!(passkey, AuthStrength::PhishingResistant);
        assert!(passkey >= AuthStrength::PasswordlessMfa);
    }

    #[test]
    fn amr_detail_refines_webauthn() {
        let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            AuthStrength::amr_with_detail(&[Webauthn], &d(&["swk", "user", "mfa"])),
            vec!["swk", "user", "mfa"]
        );
        assert_eq!(
            AuthStrength::amr_with_detail(&[Password, Webauthn], &d(&["hwk", "user", "mfa"])),
            vec!["pwd", "hwk", "user", "mfa"]
        );
        assert_eq!(
            AuthStrength::amr_with_detail(&[Password, Totp], &[]),
            vec!["pwd", "otp", "mfa"]
        );
    }

    #[test]
    fn amr_lists_rfc8176_values() {
        assert_eq!(AuthStrength::amr(&[Password, Totp]), vec!["pwd", "otp", "mfa"]);
        assert_eq!(AuthStrength::amr(&[TemporaryAccessPass]), vec!["tap"]);
    }
}
