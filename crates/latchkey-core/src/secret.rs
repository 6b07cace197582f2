//! Random secrets people or programs hold, and how Latchkey stores them.
//!
//! High-entropy bearer secrets (session and API tokens, TAPs, recovery codes)
//! are stored as a keyed hash: HMAC-SHA-256 under a server-held pepper, so a
//! stolen database alone cannot be brute-forced offline. Passwords, which are
//! low-entropy, use Argon2id instead (see [`crate::password`]).

use hmac::{Hmac, Mac};
use rand::{CryptoRng, Rng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Letters and digits a person can read aloud without confusion
/// (no 0/O, 1/I/L, U/V).
pub const HUMAN_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTWXYZ23456789";

/// A URL-safe bearer token: `prefix` + 32 random bytes, base32 (256 bits).
pub fn random_token<R: RngCore + CryptoRng>(rng: &mut R, prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
    )
}

/// `groups` groups of `len` characters from [`HUMAN_ALPHABET`], joined by '-'.
pub fn human_code<R: RngCore + CryptoRng>(rng: &mut R, groups: usize, len: usize) -> String {
    (0..groups)
        .map(|_| {
            (0..len)
                .map(|_| HUMAN_ALPHABET[rng.gen_range(0..HUMAN_ALPHABET.len())] as char)
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Canonical form of a human-typed code: upper-case, separators and spaces
/// removed. Returns `None` when a character is outside the alphabet.
pub fn normalize_human_code(input: &str) -> Option<String> {
    let mut out = String::with_capacity(input.len());
    for c in input.trim().chars() {
        if c == '-' || c == ' ' {
            continue;
        }
        let u = c.to_ascii_uppercase();
        if !u.is_ascii() || !HUMAN_ALPHABET.contains(&(u as u8)) {
            return None;
        }
        out.push(u);
    }
    Some(out)
}

/// HMAC-SHA-256(pepper, purpose || 0x00 || value), hex. `purpose` separates
/// domains so a recovery code hash can never be replayed as a TAP hash.
pub fn keyed_hash(pepper: &[u8], purpose: &str, value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(pepper).expect("HMAC accepts any key length");
    mac.update(purpose.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time equality of two strings (length is not secret).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_code_round_trips_through_normalisation() {
        let mut rng = rand::thread_rng();
        let c = human_code(&mut rng, 4, 4);
        assert_eq!(c.len(), 19);
        let n = normalize_human_code(&c.to_ascii_lowercase()).unwrap();
        assert_eq!(n, c.replace('-', ""));
        assert_eq!(normalize_human_code("ab0d"), None, "0 is not in the alphabet");
        assert_eq!(normalize_human_code("ä"), None);
    }

    #[test]
    fn keyed_hash_separates_purposes_and_peppers() {
        let a = keyed_hash(b"k1", "tap", "X");
        assert_ne!(a, keyed_hash(b"k1", "recovery", "X"));
        assert_ne!(a, keyed_hash(b"k2", "tap", "X"));
        assert_eq!(a, keyed_hash(b"k1", "tap", "X"));
        assert!(ct_eq(&a, &keyed_hash(b"k1", "tap", "X")));
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let mut rng = rand::thread_rng();
        let a = random_token(&mut rng, "lk_s_");
        assert!(a.starts_with("lk_s_") && a.len() > 50);
        assert_ne!(a, random_token(&mut rng, "lk_s_"));
    }
}
