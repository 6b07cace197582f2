//! Failed-attempt throttling with exponential back-off (a "soft lock").
//!
//! One counter per key (a user, or a source IP). State diagram:
//!
//! ```text
//!            failure (count < threshold)
//!          ┌──────────────┐
//!          ▼              │
//!   ┌─────────────┐   failure (count ≥ threshold)   ┌───────────────────────┐
//!   │ Open{count} │ ───────────────────────────────▶│ Locked{count, until}  │
//!   └─────────────┘                                 └───────────────────────┘
//!          ▲   success / admin clear                  │  attempt before `until`: refused
//!          └──────────────────────────────────────────┘  unverified; after `until` one try
//!                                                         is allowed, and another failure
//!                                                         locks again for twice as long
//! ```
//! The counter lives in the database so every node sees the same state; this
//! module alone decides the back-off schedule ([`LockPolicy::locked_until`]):
//! the store counts and keeps the lock it is told.
//!
//! ## Smart lock-out: familiar and unfamiliar sources
//!
//! A user has two counters, each running the diagram above on its own
//! ([`user_counter`]): one for attempts from [`Familiarity::Familiar`]
//! sources (where this user signed in successfully within
//! [`FAMILIAR_SOURCE_DAYS`], as the server's own sign-in log says; nothing
//! the client sends counts) and one for every other source.
//!
//! ```text
//!   attempt from source S for user U
//!        │
//!        ├─ U succeeded from S in the last 30 days ──▶ counter user:U        (+ src:S)
//!        └─ otherwise ───────────────────────────────▶ counter user-unfamiliar:U (+ src:S)
//! ```
//! So wrong passwords sprayed from anywhere lock only the unfamiliar counter:
//! they keep slowing the guessing down, and do not refuse the real user's
//! correct password from a place they use. Guesses from a familiar source
//! still lock familiar sources, and the per-source counter applies to every
//! attempt. A success resets only the counter it was counted against.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockPolicy {
    /// Consecutive failures before the first lock.
    pub threshold: u32,
    /// First lock duration; each further failure doubles it.
    pub base_secs: i64,
    pub max_secs: i64,
}

impl LockPolicy {
    pub const USER_DEFAULT: LockPolicy = LockPolicy {
        threshold: 5,
        base_secs: 30,
        max_secs: 3600,
    };
    /// Per source address: higher, since one NAT can front many honest users.
    pub const SOURCE_DEFAULT: LockPolicy = LockPolicy {
        threshold: 20,
        base_secs: 60,
        max_secs: 3600,
    };

    /// The lock that follows the `failures`-th consecutive failure at `now`.
    pub fn locked_until(&self, failures: u32, now: i64) -> Option<i64> {
        if failures < self.threshold {
            return None;
        }
        let doublings = (failures - self.threshold).min(30);
        let secs = self.base_secs.saturating_mul(1i64 << doublings).min(self.max_secs);
        Some(now + secs)
    }
}

/// How long a successful sign-in makes its source familiar for the user.
pub const FAMILIAR_SOURCE_DAYS: i64 = 30;

/// Where an attempt comes from, as far as the user's own history goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Familiarity {
    /// The user signed in successfully from this source recently.
    Familiar,
    /// Anything else, including an attempt without a known source.
    Unfamiliar,
}

impl Familiarity {
    pub fn of(recent_success_from_source: bool) -> Self {
        if recent_success_from_source {
            Familiarity::Familiar
        } else {
            Familiarity::Unfamiliar
        }
    }

    /// Successes at or after this time make a source familiar at `now`.
    pub fn window_start(now: i64) -> i64 {
        now - FAMILIAR_SOURCE_DAYS * 86_400
    }
}

/// The user counter an attempt of this familiarity is counted against.
pub fn user_counter(username: &str, familiarity: Familiarity) -> String {
    match familiarity {
        Familiarity::Familiar => format!("user:{username}"),
        Familiarity::Unfamiliar => format!("user-unfamiliar:{username}"),
    }
}

/// Both of a user's counters (an administrator's clear resets both).
pub fn user_counters(username: &str) -> [String; 2] {
    [
        user_counter(username, Familiarity::Familiar),
        user_counter(username, Familiarity::Unfamiliar),
    ]
}

/// Whether the counters of one attempt's keys (user and source) let it be
/// verified at `now`: `Err(seconds to wait)` for the longest lock in force.
pub fn check_all(locks: impl IntoIterator<Item = Option<i64>>, now: i64) -> Result<(), i64> {
    match locks.into_iter().flatten().filter(|until| *until > now).max() {
        Some(until) => Err(until - now),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LockState {
    Open { failures: u32 },
    Locked { failures: u32, until: i64 },
}

impl LockState {
    pub fn from_row(failures: u32, locked_until: Option<i64>) -> Self {
        match locked_until {
            Some(until) => LockState::Locked { failures, until },
            None => LockState::Open { failures },
        }
    }

    /// Whether an attempt may be verified at `now`; `Err(seconds to wait)` if not.
    pub fn check(&self, now: i64) -> Result<(), i64> {
        match *self {
            LockState::Locked { until, .. } if now < until => Err(until - now),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = LockPolicy {
            threshold: 3,
            base_secs: 10,
            max_secs: 100,
        };
        assert_eq!(p.locked_until(2, 0), None);
        assert_eq!(p.locked_until(3, 0), Some(10));
        assert_eq!(p.locked_until(4, 0), Some(20));
        assert_eq!(p.locked_until(6, 0), Some(80));
        assert_eq!(p.locked_until(7, 0), Some(100));
        assert_eq!(p.locked_until(u32::MAX, 0), Some(100));
    }

    #[test]
    fn the_longest_lock_in_force_decides() {
        assert_eq!(check_all([None, None], 50), Ok(()));
        assert_eq!(
            check_all([Some(40), None], 50),
            Ok(()),
            "an expired lock allows one try"
        );
        assert_eq!(check_all([Some(60), Some(100)], 50), Err(50));
        assert_eq!(check_all([Some(100), Some(50)], 50), Err(50));
        assert_eq!(check_all(std::iter::empty(), 50), Ok(()));
    }

    #[test]
    fn familiar_and_unfamiliar_attempts_count_against_separate_counters() {
        let familiar = user_counter("alice", Familiarity::of(true));
        let unfamiliar = user_counter("alice", Familiarity::of(false));
        assert_ne!(familiar, unfamiliar);
        assert_eq!(user_counters("alice"), [familiar, unfamiliar]);
        // A username cannot make one counter collide with another's.
        assert_ne!(
            user_counter("unfamiliar:alice", Familiarity::Familiar),
            user_counter("alice", Familiarity::Unfamiliar)
        );
        assert_eq!(Familiarity::window_start(FAMILIAR_SOURCE_DAYS * 86_400), 0);
    }

    #[test]
    fn locked_refuses_until_deadline() {
        let s = LockState::from_row(5, Some(100));
        assert_eq!(s.check(40), Err(60));
        assert_eq!(s.check(100), Ok(()));
        assert_eq!(LockState::from_row(2, None).check(0), Ok(()));
    }
}
