//! Recovery codes: a set of ten single-use codes, shown once, stored hashed.

use rand::{CryptoRng, RngCore};

use crate::secret::{human_code, keyed_hash, normalize_human_code};
use crate::CoreError;

pub const RECOVERY_CODE_COUNT: usize = 10;
/// 3 groups of 4 from a 29-letter alphabet: about 58 bits each.
const GROUPS: usize = 3;
const GROUP_LEN: usize = 4;
const PURPOSE: &str = "latchkey recovery code v1";

/// A freshly generated set: the plain codes (to show once) and their hashes (to store).
pub struct RecoveryCodeSet {
    pub codes: Vec<String>,
    pub hashes: Vec<String>,
}

pub fn generate<R: RngCore + CryptoRng>(rng: &mut R, pepper: &[u8]) -> RecoveryCodeSet {
    let codes: Vec<String> = (0..RECOVERY_CODE_COUNT)
        .map(|_| human_code(rng, GROUPS, GROUP_LEN))
        .collect();
    let hashes = codes
        .iter()
        .map(|c| hash(pepper, &normalize_human_code(c).expect("generated from the alphabet")))
        .collect();
    RecoveryCodeSet { codes, hashes }
}

/// Hash of a user-typed code, after checking its shape. Lookup by this hash
/// is safe to do in the database: without the pepper nobody can aim at a prefix.
pub fn hash_input(pepper: &[u8], input: &str) -> Result<String, CoreError> {
    let norm = normalize_human_code(input)
        .filter(|n| n.len() == GROUPS * GROUP_LEN)
        .ok_or_else(|| {
            CoreError::InvalidInput("a recovery code is 12 letters and digits, like ABCD-EFGH-JKMN".into())
        })?;
    Ok(hash(pepper, &norm))
}

fn hash(pepper: &[u8], normalized: &str) -> String {
    keyed_hash(pepper, PURPOSE, normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_distinct_codes_whose_input_hash_matches() {
        let set = generate(&mut rand::thread_rng(), b"pepper");
        assert_eq!(set.codes.len(), 10);
        let mut uniq = set.codes.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 10);
        for (c, h) in set.codes.iter().zip(&set.hashes) {
            assert_eq!(&hash_input(b"pepper", &c.to_lowercase()).unwrap(), h);
            assert_ne!(&hash_input(b"other", c).unwrap(), h);
        }
    }

    #[test]
    fn malformed_input_is_rejected() {
        assert!(hash_input(b"p", "").is_err());
        assert!(hash_input(b"p", "ABCD-EFGH").is_err());
        assert!(hash_input(b"p", "ABCD-EFGH-JKM0").is_err());
    }
}
