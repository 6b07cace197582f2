//! A user account's lifecycle: joiners are active, leavers are disabled, and
//! a deleted account stays as a tombstone.
//!
//! ```text
//!            disable(reason)
//!   Active ──────────────────▶ Disabled
//!     ▲  ◀─────────────────────   │
//!     │         enable            │
//!     └──── delete(reason) ───────┴──▶ Deleted   (final; secrets removed,
//!                                                 the username held for a while)
//! ```
//!
//! Leaving `Active` revokes everything that lets the account in (the service
//! does that in the same transaction). Only `Active` signs in; every sign-in
//! path refuses the others with the same answer as a wrong password.

use crate::{CoreError, UserState};

/// What a state change does, once allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: UserState,
    pub to: UserState,
    /// Sessions, grants, flows, passes, prompts and tokens must be revoked.
    pub revokes_access: bool,
    /// Passwords and method secrets must be removed.
    pub removes_secrets: bool,
}

/// Whether `from → to` is allowed.
pub fn transition(from: UserState, to: UserState) -> Result<Transition, CoreError> {
    use UserState::*;
    let ok = matches!(
        (from, to),
        (Active, Disabled) | (Disabled, Active) | (Active, Deleted) | (Disabled, Deleted)
    );
    if !ok {
        return Err(CoreError::InvalidTransition(match (from, to) {
            (Deleted, _) => "the account was deleted; it cannot change any more".to_owned(),
            (a, b) if a == b => format!("the account is already {}", a.as_str()),
            (a, b) => format!("an account cannot go from {} to {}", a.as_str(), b.as_str()),
        }));
    }
    Ok(Transition {
        from,
        to,
        revokes_access: from == Active,
        removes_secrets: to == Deleted,
    })
}

/// A reason for disabling or deleting: required, one line, bounded, so the
/// audit trail says why someone lost access.
pub fn check_reason(reason: &str) -> Result<String, CoreError> {
    let r = reason.trim();
    if r.is_empty() || r.chars().count() > 500 || r.chars().any(char::is_control) {
        return Err(CoreError::InvalidInput(
            "give a reason of 1-500 characters on one line".into(),
        ));
    }
    Ok(r.to_owned())
}

/// A deleted account's username may be reused from this time on; until then
/// the tombstone holds it, so a new person never inherits a leaver's name
/// (and with it their history in logs and other systems) by accident.
pub fn username_released_at(deleted_at: i64, hold_days: i64) -> i64 {
    deleted_at.saturating_add(hold_days.max(0).saturating_mul(86_400))
}

/// The name a released tombstone takes: not a valid username, so it can
/// never be signed in with or collide with a new account.
pub fn released_username(user_id: &str) -> String {
    format!("~deleted~{user_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Username;
    use UserState::*;

    #[test]
    fn leaving_active_revokes_and_only_deletion_removes_secrets() {
        let t = transition(Active, Disabled).unwrap();
        assert!(t.revokes_access && !t.removes_secrets);
        let t = transition(Disabled, Active).unwrap();
        assert!(!t.revokes_access && !t.removes_secrets);
        let t = transition(Active, Deleted).unwrap();
        assert!(t.revokes_access && t.removes_secrets);
        // Disabled already lost its access; deleting removes the secrets.
        let t = transition(Disabled, Deleted).unwrap();
        assert!(!t.revokes_access && t.removes_secrets);
    }

    #[test]
    fn deleted_is_final_and_no_op_changes_are_refused() {
        for to in [Active, Disabled, Deleted] {
            assert!(transition(Deleted, to).is_err());
        }
        assert!(transition(Active, Active).is_err());
        assert!(transition(Disabled, Disabled).is_err());
    }

    #[test]
    fn reasons_are_required_and_bounded() {
        assert_eq!(check_reason("  left the company ").unwrap(), "left the company");
        assert!(check_reason("").is_err());
        assert!(check_reason("a\nb").is_err());
        assert!(check_reason(&"x".repeat(501)).is_err());
    }

    #[test]
    fn a_released_name_is_never_a_username() {
        assert!(Username::parse(&released_username("0f3a")).is_err());
        assert_eq!(username_released_at(1_000, 2), 1_000 + 2 * 86_400);
        assert_eq!(username_released_at(1_000, -5), 1_000);
    }
}
