//! Identities and authentication methods in the field's vocabulary.

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// A validated username: lower-case, 1–64 chars of `[a-z0-9._-]`, starting with
/// a letter or digit. Kept strict so usernames are safe in URLs, logs and RADIUS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        let ok_len = (1..=64).contains(&s.len());
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if ok_len && first_ok && rest_ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(CoreError::InvalidInput(
                "username must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit".into(),
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Username {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, CoreError> {
        Self::parse(&s)
    }
}
impl From<Username> for String {
    fn from(u: Username) -> String {
        u.0
    }
}
impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Roles. Any role makes a user *privileged* ([`is_privileged`]), which
/// policy (phishing-resistant methods, a second approver for passes and
/// credential changes) keys off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Full control.
    Admin,
    /// Looks users up, runs recovery cases, issues TAPs.
    Helpdesk,
    /// Manages policies and reviews detections.
    SecurityAdmin,
    /// Reads audit logs and reports; changes nothing.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Helpdesk, Role::SecurityAdmin, Role::Auditor];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Helpdesk => "helpdesk",
            Role::SecurityAdmin => "security_admin",
            Role::Auditor => "auditor",
        }
    }
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            CoreError::InvalidInput(format!(
                "unknown role '{s}' (known: admin, helpdesk, security_admin, auditor)"
            ))
        })
    }
}

/// The one definition of "privileged": holding any role at all. An auditor
/// changes nothing, but reads every user's audit trail and sign-ins, so a
/// pass or a second factor for one is as sensitive as for an administrator.
pub fn is_privileged(roles: &[Role]) -> bool {
    !roles.is_empty()
}

/// How long someone who lost a role is still treated as privileged by the
/// two-person rule: otherwise one administrator could remove another's role
/// (which applies at once) and then reset their password alone.
pub const ROLE_REMOVAL_GRACE_SECS: i64 = 7 * 86_400;

/// Privileged now, or lost a role less than [`ROLE_REMOVAL_GRACE_SECS`] ago.
pub fn is_privileged_at(roles: &[Role], roles_removed_at: Option<i64>, now: i64) -> bool {
    is_privileged(roles) || roles_removed_at.is_some_and(|t| now - t < ROLE_REMOVAL_GRACE_SECS)
}

/// A user account's state; `crate::account` holds its transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserState {
    Active,
    Disabled,
    /// A tombstone: the row stays so the audit chain keeps naming it.
    Deleted,
}

impl UserState {
    pub fn as_str(&self) -> &'static str {
        match self {
            UserState::Active => "active",
            UserState::Disabled => "disabled",
            UserState::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(UserState::Active),
            "disabled" => Some(UserState::Disabled),
            "deleted" => Some(UserState::Deleted),
            _ => None,
        }
    }
}

/// Kinds of registered authentication method (DESIGN.md `AuthMethod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    Password,
    Totp,
    Webauthn,
    Push,
    Sms,
    Voice,
    RecoveryCodes,
    TemporaryAccessPass,
}

impl MethodKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            MethodKind::Password => "password",
            MethodKind::Totp => "totp",
            MethodKind::Webauthn => "webauthn",
            MethodKind::Push => "push",
            MethodKind::Sms => "sms",
            MethodKind::Voice => "voice",
            MethodKind::RecoveryCodes => "recovery_codes",
            MethodKind::TemporaryAccessPass => "temporary_access_pass",
        }
    }
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| CoreError::InvalidInput(format!("unknown method kind '{s}'")))
    }
    /// The sign-in step this registered method answers, if it is a second factor.
    pub fn second_factor(&self) -> Option<VerifyMethod> {
        match self {
            MethodKind::Totp => Some(VerifyMethod::Totp),
            MethodKind::RecoveryCodes => Some(VerifyMethod::RecoveryCode),
            MethodKind::Webauthn => Some(VerifyMethod::Webauthn),
            MethodKind::Push => Some(VerifyMethod::Push),
            MethodKind::Sms => Some(VerifyMethod::Sms),
            MethodKind::Voice => Some(VerifyMethod::Voice),
            MethodKind::Password | MethodKind::TemporaryAccessPass => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodState {
    /// Registered but not yet proven (e.g. TOTP awaiting its first code).
    Pending,
    Active,
}

/// What a sign-in step proves. These are the `method` values of the verify API
/// and what a completed sign-in lists in `methods`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMethod {
    Password,
    Totp,
    RecoveryCode,
    TemporaryAccessPass,
    Webauthn,
    Push,
    Sms,
    Voice,
}

impl VerifyMethod {
    pub fn as_str(&self) -> &'static str {
        match self {
            VerifyMethod::Password => "password",
            VerifyMethod::Totp => "totp",
            VerifyMethod::RecoveryCode => "recovery_code",
            VerifyMethod::TemporaryAccessPass => "temporary_access_pass",
            VerifyMethod::Webauthn => "webauthn",
            VerifyMethod::Push => "push",
            VerifyMethod::Sms => "sms",
            VerifyMethod::Voice => "voice",
        }
    }

    /// RFC 8176 authentication method reference values for this step.
    /// A TAP has no registered value; `tap` is Latchkey's own.
    pub fn amr(&self) -> &'static [&'static str] {
        match self {
            VerifyMethod::Password => &["pwd"],
            VerifyMethod::Totp | VerifyMethod::RecoveryCode => &["otp"],
            VerifyMethod::TemporaryAccessPass => &["tap"],
            VerifyMethod::Webauthn => &["hwk"],
            VerifyMethod::Push => &["swk"],
            VerifyMethod::Sms => &["sms"],
            VerifyMethod::Voice => &["tel"],
        }
    }

    /// Whether this step proves possession of something other than a memorised secret.
    pub fn is_second_factor(&self) -> bool {
        !matches!(self, VerifyMethod::Password)
    }
}

/// Directory attributes people type and others read (in the console, in
/// reports, in logs): display names, departments, group names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryField {
    DisplayName,
    Department,
    Group,
}

impl DirectoryField {
    pub fn as_str(&self) -> &'static str {
        match self {
            DirectoryField::DisplayName => "display_name",
            DirectoryField::Department => "department",
            DirectoryField::Group => "group name",
        }
    }

    /// Longest value, in characters.
    pub fn max_chars(&self) -> usize {
        match self {
            DirectoryField::DisplayName => 200,
            DirectoryField::Department | DirectoryField::Group => 100,
        }
    }

    /// The value trimmed, if it is 1 to [`Self::max_chars`] characters of
    /// text that displays as itself: no control characters (NUL, newlines,
    /// escapes), no line or paragraph separators, and no bidirectional
    /// controls, which make a name read differently from what it is
    /// ("admin" spelt backwards behind U+202E) in lists and audit trails.
    pub fn validate(&self, value: &str) -> Result<String, CoreError> {
        let v = value.trim();
        let (field, max) = (self.as_str(), self.max_chars());
        let n = v.chars().count();
        if n == 0 || n > max {
            return Err(CoreError::InvalidInput(format!(
                "{field} must be 1-{max} characters (got {n})"
            )));
        }
        if let Some(c) = v.chars().find(|&c| is_hidden_control(c)) {
            return Err(CoreError::InvalidInput(format!(
                "{field} must not contain control or text-direction characters (found U+{:04X})",
                c as u32
            )));
        }
        Ok(v.to_owned())
    }
}

/// Characters that change how surrounding text displays instead of showing.
fn is_hidden_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{061C}' // direction marks
            | '\u{202A}'..='\u{202E}'            // embeddings and overrides
            | '\u{2066}'..='\u{2069}'            // isolates
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
        )
}

#[cfg(test)]
mod directory_tests {
    use super::DirectoryField::*;

    #[test]
    fn directory_text_is_plain_and_bounded() {
        assert_eq!(DisplayName.validate("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(
            Department.validate("Forschung & Entwicklung").unwrap(),
            "Forschung & Entwicklung"
        );
        assert_eq!(
            DisplayName.validate("محمد علي").unwrap(),
            "محمد علي",
            "right-to-left scripts are fine"
        );
        assert_eq!(DisplayName.validate("👩‍💻 Zoë").unwrap(), "👩‍💻 Zoë", "joiners are fine");
        assert!(DisplayName.validate(&"é".repeat(200)).is_ok());
        assert!(DisplayName.validate(&"é".repeat(201)).is_err());
        assert!(Department.validate(&"x".repeat(101)).is_err());
        assert!(Group.validate(&"x".repeat(101)).is_err());
        assert!(Group.validate("   ").is_err());
        for bad in [
            "a\0b",
            "a\nb",
            "a\u{1b}[31mb",
            "a\u{85}b",
            "gro\u{202E}nimda",
            "a\u{2066}b",
            "a\u{200F}b",
            "a\u{2028}b",
        ] {
            let e = DisplayName.validate(bad).unwrap_err().to_string();
            assert!(e.contains("display_name") && e.contains("U+"), "{bad:?}: {e}");
        }
    }
}
