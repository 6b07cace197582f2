//! Password hashing with Argon2id.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Argon2id cost. Defaults are OWASP's first recommended configuration
/// (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

pub const MIN_PASSWORD_LEN: usize = 12;
pub const MAX_PASSWORD_LEN: usize = 1024;

impl PasswordParams {
    fn argon2(&self) -> Result<Argon2<'static>, CoreError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| CoreError::InvalidInput(format!("argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Hash a password into a PHC string (salt and parameters embedded).
    pub fn hash(&self, password: &str) -> Result<String, CoreError> {
        let salt = SaltString::generate(&mut OsRng);
        Ok(self
            .argon2()?
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| CoreError::Crypto(format!("argon2: {e}")))?
            .to_string())
    }

    /// Whether a stored hash was made with other parameters and should be
    /// replaced after the next successful verification.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        if parsed.algorithm != argon2::ARGON2ID_IDENT {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(p) => p.m_cost() != self.memory_kib || p.t_cost() != self.iterations || p.p_cost() != self.parallelism,
            Err(_) => true,
        }
    }
}

/// Verify a password against a stored PHC string. The comparison inside
/// `argon2` is constant-time. A corrupt stored hash verifies as false.
pub fn verify_password(phc: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // Parameters come from the PHC string itself, not the current policy.
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Check a candidate password against the policy (length only: NIST SP 800-63B
/// advises against composition rules).
pub fn check_password_policy(password: &str) -> Result<(), CoreError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(CoreError::WeakPassword(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(CoreError::WeakPassword(format!(
            "a password may have at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordParams {
        PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn hash_and_verify() {
        let h = cheap().hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterx"));
        assert!(!verify_password("not a phc string", "x"));
    }

    #[test]
    fn rehash_when_parameters_change() {
        let h = cheap().hash("correct horse battery").unwrap();
        assert!(!cheap().needs_rehash(&h));
        assert!(PasswordParams::default().needs_rehash(&h));
        assert!(cheap().needs_rehash("garbage"));
    }

    #[test]
    fn policy_is_length_based() {
        assert!(check_password_policy("short").is_err());
        assert!(check_password_policy("twelve chars").is_ok());
        assert!(check_password_policy(&"x".repeat(2000)).is_err());
    }
}
