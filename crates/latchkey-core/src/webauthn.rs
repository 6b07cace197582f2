//! WebAuthn (FIDO2 security keys and passkeys): the domain rules around the
//! ceremonies. The cryptography and the protocol itself are webauthn-rs's job
//! in the server crate; this module decides what the results *mean*.
//!
//! A ceremony (registration or authentication) is a challenge the server
//! stores and the client answers once:
//!
//! ```text
//!  (none) ──start──▶ Pending{expires_at} ──finish (row deleted atomically)──▶ Finished
//!                        │                        └─ verification fails ──▶ Finished (refused; start again)
//!                        └──now ≥ expires_at──▶ Expired (finish refused, row purged)
//! ```
//! Finishing always consumes the stored state, successful or not, so a
//! challenge can never be answered twice.
//!
//! Authentication results map onto sign-in steps:
//! * after a password, any registered credential is a second factor and makes
//!   the sign-in `phishing_resistant` (the signature is bound to our origin);
//! * without a password, only an assertion with user verification (PIN or
//!   biometric on the authenticator) counts: possession + knowledge/inherence
//!   is multi-factor on its own.

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// How long a started ceremony may be finished.
pub const CEREMONY_LIFETIME_SECS: i64 = 5 * 60;

/// What was registered. The difference matters for sign-in: passkeys are
/// discoverable and always verify the user, so they can replace the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A roaming FIDO2 key used as a second factor (user verification preferred).
    SecurityKey,
    /// A discoverable credential with user verification required.
    Passkey,
}

impl CredentialKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialKind::SecurityKey => "security_key",
            CredentialKind::Passkey => "passkey",
        }
    }
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "security_key" => Ok(CredentialKind::SecurityKey),
            "passkey" => Ok(CredentialKind::Passkey),
            _ => Err(CoreError::InvalidInput(format!(
                "unknown credential kind '{s}' (use security_key or passkey)"
            ))),
        }
    }
}

/// What a stored ceremony is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
pub enum CeremonyPurpose {
    Registration {
        kind: CredentialKind,
        label: String,
        attested: bool,
    },
    /// An assertion inside a sign-in flow; `passwordless` when no password came first.
    Authentication { passwordless: bool },
    /// Usernameless sign-in: the credential names the user.
    Discoverable,
}

/// A ceremony's lifecycle (see the module diagram). Only `Pending` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyState {
    Pending { expires_at: i64 },
    Expired,
}

impl CeremonyState {
    pub fn at(expires_at: i64, now: i64) -> Self {
        if now >= expires_at {
            CeremonyState::Expired
        } else {
            CeremonyState::Pending { expires_at }
        }
    }
    pub fn check_finishable(self) -> Result<(), CoreError> {
        match self {
            CeremonyState::Pending { .. } => Ok(()),
            CeremonyState::Expired => Err(CoreError::InvalidTransition(
                "the WebAuthn challenge has expired; start again".into(),
            )),
        }
    }
}

/// The signature counter verdict. Authenticators that keep no counter
/// (many passkeys) always send 0; any other value must strictly increase,
/// otherwise a second copy of the private key exists somewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterCheck {
    /// The authenticator keeps no counter.
    NotKept,
    Advanced {
        to: u32,
    },
    /// Refuse and raise `webauthn.counter_regression`: a possibly cloned key.
    Regressed {
        stored: u32,
        presented: u32,
    },
}

pub fn check_counter(stored: u32, presented: u32) -> CounterCheck {
    if stored == 0 && presented == 0 {
        CounterCheck::NotKept
    } else if presented > stored {
        CounterCheck::Advanced { to: presented }
    } else {
        CounterCheck::Regressed { stored, presented }
    }
}

/// The facts an assertion proved, as webauthn-rs reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssertionFacts {
    pub user_verified: bool,
    pub backup_eligible: bool,
}

/// Whether this assertion may be a sign-in step at all.
pub fn check_assertion(passwordless: bool, facts: &AssertionFacts) -> Result<(), CoreError> {
    if passwordless && !facts.user_verified {
        return Err(CoreError::Forbidden(
            "signing in without a password needs a passkey that verifies you (PIN or biometric)".into(),
        ));
    }
    Ok(())
}

/// RFC 8176 `amr` values for an assertion. A backup-eligible (synced)
/// credential lives in software (`swk`), a device-bound one in hardware
/// (`hwk`). `user` says the authenticator verified the person; WebAuthn does
/// not say whether by PIN or biometric, so `pin` is never claimed. Verified
/// possession is two factors by itself, hence `mfa`.
pub fn assertion_amr(facts: &AssertionFacts) -> Vec<String> {
    let mut amr = vec![if facts.backup_eligible { "swk" } else { "hwk" }.to_owned()];
    if facts.user_verified {
        amr.push("user".into());
        amr.push("mfa".into());
    }
    amr
}

/// One authenticator model the organisation trusts: its attestation root
/// (PEM) and the AAGUID it attests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedAuthenticator {
    pub aaguid: String,
    pub description: String,
    pub ca_pem: String,
}

/// Admin policy for WebAuthn registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebauthnPolicy {
    /// Every registration must carry an attestation that chains to a trusted model.
    #[serde(default)]
    pub require_attestation: bool,
    /// When not empty, privileged users may only register these attested models.
    #[serde(default)]
    pub privileged_aaguids: Vec<String>,
    /// The attestation roots and model names that attestation is checked against.
    #[serde(default)]
    pub trusted_authenticators: Vec<TrustedAuthenticator>,
}

/// What a registration must prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestationRequirement {
    /// Attestation is recorded when offered but not required.
    Optional,
    /// Attestation must chain to one of these trusted models (by AAGUID).
    Required { aaguids: Vec<String> },
}

/// Canonical lower-case hyphenated AAGUID, or an error.
pub fn normalize_aaguid(s: &str) -> Result<String, CoreError> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) || s.len() > 36 {
        return Err(CoreError::InvalidInput(format!("'{s}' is not an AAGUID (a UUID)")));
    }
    let h = hex.to_ascii_lowercase();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

impl WebauthnPolicy {
    /// Check and canonicalise a policy an admin submitted.
    pub fn validated(mut self) -> Result<Self, CoreError> {
        for a in &mut self.privileged_aaguids {
            *a = normalize_aaguid(a)?;
        }
        self.privileged_aaguids.sort();
        self.privileged_aaguids.dedup();
        for t in &mut self.trusted_authenticators {
            t.aaguid = normalize_aaguid(&t.aaguid)?;
            let d = t.description.trim();
            if d.is_empty() || d.chars().count() > 200 || d.chars().any(char::is_control) {
                return Err(CoreError::InvalidInput(
                    "trusted authenticator description must be 1-200 printable characters".into(),
                ));
            }
            t.description = d.to_owned();
            if !t.ca_pem.contains("-----BEGIN CERTIFICATE-----") || t.ca_pem.len() > 20_000 {
                return Err(CoreError::InvalidInput(
                    "ca_pem must be one PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
                ));
            }
        }
        let needs_roots = self.require_attestation || !self.privileged_aaguids.is_empty();
        if needs_roots && self.trusted_authenticators.is_empty() {
            return Err(CoreError::InvalidInput(
                "requiring attestation needs at least one trusted authenticator (AAGUID + CA certificate)".into(),
            ));
        }
        for a in &self.privileged_aaguids {
            if !self.trusted_authenticators.iter().any(|t| &t.aaguid == a) {
                return Err(CoreError::InvalidInput(format!(
                    "AAGUID {a} is allowed for privileged users but has no trusted authenticator entry to attest it"
                )));
            }
        }
        Ok(self)
    }

    /// What a registration by this user must prove.
    pub fn requirement(&self, privileged: bool) -> AttestationRequirement {
        if privileged && !self.privileged_aaguids.is_empty() {
            AttestationRequirement::Required {
                aaguids: self.privileged_aaguids.clone(),
            }
        } else if self.require_attestation {
            AttestationRequirement::Required {
                aaguids: self.trusted_authenticators.iter().map(|t| t.aaguid.clone()).collect(),
            }
        } else {
            AttestationRequirement::Optional
        }
    }

    /// The final word on a finished registration: the library verified the
    /// chain; this re-checks the model against the requirement.
    pub fn check_registration(&self, privileged: bool, attested_aaguid: Option<&str>) -> Result<(), CoreError> {
        match self.requirement(privileged) {
            AttestationRequirement::Optional => Ok(()),
            AttestationRequirement::Required { aaguids } => match attested_aaguid {
                Some(a) if aaguids.iter().any(|x| x == a) => Ok(()),
                _ => Err(CoreError::Forbidden(
                    if privileged && !self.privileged_aaguids.is_empty() {
                        "privileged accounts may only register the organisation's approved security keys".into()
                    } else {
                        "this authenticator's model could not be attested as an approved one".into()
                    },
                )),
            },
        }
    }

    /// The model name for an attested AAGUID.
    pub fn model(&self, aaguid: &str) -> Option<&str> {
        self.trusted_authenticators
            .iter()
            .find(|t| t.aaguid == aaguid)
            .map(|t| t.description.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YUBI: &str = "CB69481E-8FF7-4039-93EC-0A2729A154A8";

    fn fleet() -> WebauthnPolicy {
        WebauthnPolicy {
            require_attestation: false,
            privileged_aaguids: vec![YUBI.into()],
            trusted_authenticators: vec![TrustedAuthenticator {
                aaguid: YUBI.into(),
                description: "YubiKey 5".into(),
                ca_pem: "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----".into(),
            }],
        }
        .validated()
        .unwrap()
    }

    #[test]
    fn counter_must_strictly_increase_unless_never_kept() {
        assert_eq!(check_counter(0, 0), CounterCheck::NotKept);
        assert_eq!(check_counter(0, 1), CounterCheck::Advanced { to: 1 });
        assert_eq!(check_counter(5, 6), CounterCheck::Advanced { to: 6 });
        assert_eq!(
            check_counter(5, 5),
            CounterCheck::Regressed {
                stored: 5,
                presented: 5
            }
        );
        assert_eq!(
            check_counter(5, 0),
            CounterCheck::Regressed {
                stored: 5,
                presented: 0
            }
        );
    }

    #[test]
    fn passwordless_needs_user_verification() {
        let no_uv = AssertionFacts {
            user_verified: false,
            backup_eligible: false,
        };
        let uv = AssertionFacts {
            user_verified: true,
            backup_eligible: true,
        };
        assert!(check_assertion(true, &no_uv).is_err());
        assert!(check_assertion(false, &no_uv).is_ok());
        assert!(check_assertion(true, &uv).is_ok());
    }

    #[test]
    fn amr_names_hardware_or_software_and_user_verification() {
        let key = AssertionFacts {
            user_verified: false,
            backup_eligible: false,
        };
        assert_eq!(assertion_amr(&key), vec!["hwk"]);
        let synced = AssertionFacts {
            user_verified: true,
            backup_eligible: true,
        };
        assert_eq!(assertion_amr(&synced), vec!["swk", "user", "mfa"]);
    }

    #[test]
    fn aaguids_are_canonicalised_and_checked() {
        assert_eq!(normalize_aaguid(YUBI).unwrap(), "cb69481e-8ff7-4039-93ec-0a2729a154a8");
        assert!(normalize_aaguid("cb69481e").is_err());
        assert!(normalize_aaguid("zz69481e-8ff7-4039-93ec-0a2729a154a8").is_err());
    }

    #[test]
    fn privileged_users_are_held_to_the_allow_list() {
        let p = fleet();
        let yubi = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
        assert_eq!(p.requirement(false), AttestationRequirement::Optional);
        assert!(p.check_registration(false, None).is_ok());
        assert!(matches!(p.requirement(true), AttestationRequirement::Required { .. }));
        assert!(p.check_registration(true, None).is_err());
        assert!(p
            .check_registration(true, Some("00000000-0000-0000-0000-000000000001"))
            .is_err());
        assert!(p.check_registration(true, Some(yubi)).is_ok());
        assert_eq!(p.model(yubi), Some("YubiKey 5"));
    }

    #[test]
    fn require_attestation_applies_to_everyone() {
        let mut p = fleet();
        p.privileged_aaguids.clear();
        p.require_attestation = true;
        let p = p.validated().unwrap();
        assert!(p.check_registration(false, None).is_err());
        assert!(p
            .check_registration(false, Some("cb69481e-8ff7-4039-93ec-0a2729a154a8"))
            .is_ok());
    }

    #[test]
    fn a_policy_that_requires_attestation_needs_roots() {
        let p = WebauthnPolicy {
            require_attestation: true,
            ..Default::default()
        };
        assert!(p.validated().is_err());
        let p = WebauthnPolicy {
            privileged_aaguids: vec![YUBI.into()],
            ..Default::default()
        };
        assert!(p.validated().is_err());
    }

    #[test]
    fn expired_ceremonies_cannot_finish() {
        assert!(CeremonyState::at(100, 99).check_finishable().is_ok());
        assert!(CeremonyState::at(100, 100).check_finishable().is_err());
    }
}
