//! One-time passwords: HOTP (RFC 4226) and TOTP (RFC 6238), plus the
//! secret encoding and `otpauth://` URI that authenticator apps expect.
//!
//! Nothing here reads a clock: callers pass the current Unix time, and
//! persist the step that [`verify_totp`] returns so a code works only once.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// HMAC hash used to derive codes. Serialized as in otpauth URIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OtpAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl OtpAlgorithm {
    /// The name used in otpauth URIs: `SHA1`, `SHA256`, `SHA512`.
    pub fn as_str(&self) -> &'static str {
        match self {
            OtpAlgorithm::Sha1 => "SHA1",
            OtpAlgorithm::Sha256 => "SHA256",
            OtpAlgorithm::Sha512 => "SHA512",
        }
    }

    /// Case-insensitive; accepts both `SHA256` and `sha-256` spellings.
    pub fn parse(s: &str) -> Result<Self, OtpError> {
        let normalized: String = s
            .trim()
            .chars()
            .filter(|c| *c != '-')
            .collect::<String>()
            .to_ascii_uppercase();
        match normalized.as_str() {
            "SHA1" => Ok(OtpAlgorithm::Sha1),
            "SHA256" => Ok(OtpAlgorithm::Sha256),
            "SHA512" => Ok(OtpAlgorithm::Sha512),
            _ => Err(OtpError::InvalidParams(format!(
                "unknown algorithm {s:?} (expected SHA1, SHA256 or SHA512)"
            ))),
        }
    }

    /// Secret length in bytes: the hash's output size, as RFC 4226 §4 and
    /// RFC 6238 §5.1 recommend (a shorter key weakens the HMAC).
    pub fn recommended_secret_len(&self) -> usize {
        match self {
            OtpAlgorithm::Sha1 => 20,
            OtpAlgorithm::Sha256 => 32,
            OtpAlgorithm::Sha512 => 64,
        }
    }
}

/// Shortest and longest code lengths we issue or accept. RFC 4226 requires at
/// least 6; authenticator apps don't support more than 8.
pub const MIN_DIGITS: u32 = 6;
pub const MAX_DIGITS: u32 = 8;

/// Largest accepted verification window, in steps each side. Every extra step
/// makes guessing easier and costs an HMAC per attempt, so a caller bug passing
/// a huge window must fail loudly rather than accept almost any code.
pub const MAX_WINDOW: u64 = 10;

/// Parameters of one TOTP credential (fixed at enrollment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TotpParams {
    pub algorithm: OtpAlgorithm,
    pub digits: u32,
    pub step_secs: u64,
}

impl TotpParams {
    /// Standard 30-second step; `digits` must be 6..=8.
    pub fn new(algorithm: OtpAlgorithm, digits: u32) -> Result<Self, OtpError> {
        let params = TotpParams {
            algorithm,
            digits,
            step_secs: 30,
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks values that may have come from storage or deserialization,
    /// which bypass [`TotpParams::new`].
    pub fn validate(&self) -> Result<(), OtpError> {
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&self.digits) {
            return Err(OtpError::InvalidParams(format!(
                "digits must be between {MIN_DIGITS} and {MAX_DIGITS}, got {}",
                self.digits
            )));
        }
        if self.step_secs == 0 {
            return Err(OtpError::InvalidParams("step_secs must be at least 1".to_string()));
        }
        Ok(())
    }
}

impl Default for TotpParams {
    /// SHA1, 6 digits, 30 s: the only combination every authenticator app supports.
    fn default() -> Self {
        TotpParams {
            algorithm: OtpAlgorithm::Sha1,
            digits: 6,
            step_secs: 30,
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum OtpError {
    #[error("the code must be exactly {expected} digits")]
    Malformed { expected: u32 },
    #[error("the code is not valid")]
    Invalid,
    #[error("the code was already used")]
    Replayed,
    #[error("invalid OTP parameters: {0}")]
    InvalidParams(String),
    #[error("the secret is not valid base32")]
    BadSecret,
}

fn hmac_digest<M: Mac + KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length (long keys are hashed, short ones padded).
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// HOTP value for `counter`, zero-padded to exactly `digits` characters.
///
/// `digits` is normally 6..=8 (see [`TotpParams::validate`]); any other value
/// still yields exactly `digits` ASCII digits (0 gives an empty string).
pub fn hotp(secret: &[u8], counter: u64, algorithm: OtpAlgorithm, digits: u32) -> String {
    let msg = counter.to_be_bytes();
    let mac = match algorithm {
        OtpAlgorithm::Sha1 => hmac_digest::<Hmac<sha1::Sha1>>(secret, &msg),
        OtpAlgorithm::Sha256 => hmac_digest::<Hmac<sha2::Sha256>>(secret, &msg),
        OtpAlgorithm::Sha512 => hmac_digest::<Hmac<sha2::Sha512>>(secret, &msg),
    };
    // Dynamic truncation (RFC 4226 §5.3): the low nibble of the last byte picks
    // a 4-byte window; the top bit is masked so the result is a positive i32.
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = u64::from(u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]));
    if digits == 0 {
        return String::new();
    }
    // Beyond 10^19 the modulus can't be represented, but a 31-bit value is
    // already smaller than it, so no reduction is needed.
    let value = match 10u64.checked_pow(digits) {
        Some(modulus) => binary % modulus,
        None => binary,
    };
    format!("{value:0width$}", width = digits as usize)
}

/// The TOTP counter for a Unix time (RFC 6238 §4.2, T0 = 0).
///
/// Panics if `step_secs` is 0, like integer division; [`verify_totp`] rejects
/// such parameters before getting here.
pub fn time_step(unix_secs: u64, step_secs: u64) -> u64 {
    assert!(step_secs > 0, "TOTP step must be at least one second");
    unix_secs / step_secs
}

/// The TOTP code valid at `unix_secs`.
pub fn totp_at(secret: &[u8], unix_secs: u64, params: &TotpParams) -> String {
    hotp(
        secret,
        time_step(unix_secs, params.step_secs),
        params.algorithm,
        params.digits,
    )
}

/// Accepts codes for steps current-window ..= current+window (window = 1 in production).
///
/// The code format is checked first: exactly `params.digits` ASCII digits after
/// trimming surrounding whitespace (internal spaces are not accepted), else
/// [`OtpError::Malformed`]. The code is compared in constant time against every
/// step in the window, without stopping at the first match, so timing doesn't
/// reveal which step matched. If the matched step is `<= last_used_step` the
/// result is [`OtpError::Replayed`]: a code is accepted once only, and an older
/// code can't be used after a newer one. Returns the matched step, which the
/// caller must persist atomically as the new `last_used_step`.
///
/// Invalid `params` or a window above [`MAX_WINDOW`] give
/// [`OtpError::InvalidParams`].
pub fn verify_totp(
    secret: &[u8],
    code: &str,
    unix_secs: u64,
    params: &TotpParams,
    window: u64,
    last_used_step: Option<u64>,
) -> Result<u64, OtpError> {
    params.validate()?;
    if window > MAX_WINDOW {
        return Err(OtpError::InvalidParams(format!(
            "window must be at most {MAX_WINDOW}, got {window}"
        )));
    }

    let code = code.trim();
    // Byte length plus is_ascii_digit rules out Unicode digits such as "١" or "７".
    if code.len() != params.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OtpError::Malformed {
            expected: params.digits,
        });
    }

    let current = time_step(unix_secs, params.step_secs);
    let first = current.saturating_sub(window);
    let last = current.saturating_add(window);

    let mut found = Choice::from(0);
    let mut matched_step = 0u64;
    // Ascending order means that if two steps happen to share a code, the
    // newest one wins: the replay check then errs towards locking out older codes.
    for step in first..=last {
        let expected = hotp(secret, step, params.algorithm, params.digits);
        let is_match = expected.as_bytes().ct_eq(code.as_bytes());
        matched_step = u64::conditional_select(&matched_step, &step, is_match);
        found |= is_match;
    }

    if !bool::from(found) {
        return Err(OtpError::Invalid);
    }
    if last_used_step.is_some_and(|used| matched_step <= used) {
        return Err(OtpError::Replayed);
    }
    Ok(matched_step)
}

/// A fresh random secret of the algorithm's recommended length.
pub fn generate_secret<R: rand::RngCore + rand::CryptoRng>(rng: &mut R, algorithm: OtpAlgorithm) -> Vec<u8> {
    let mut secret = vec![0u8; algorithm.recommended_secret_len()];
    rng.fill_bytes(&mut secret);
    secret
}

/// RFC 4648 base32, uppercase, without padding (what authenticator apps expect).
pub fn encode_secret(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// Decodes a secret as users type or paste it: case-insensitive, ignoring
/// spaces and dashes (apps display secrets in groups), with or without `=`
/// padding. An empty secret is rejected.
pub fn decode_secret(s: &str) -> Result<Vec<u8>, OtpError> {
    let compact: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let unpadded = compact.trim_end_matches('=');
    if unpadded.is_empty() {
        return Err(OtpError::BadSecret);
    }
    data_encoding::BASE32_NOPAD
        .decode(unpadded.as_bytes())
        .map_err(|_| OtpError::BadSecret)
}

/// Everything except RFC 3986 unreserved characters (ALPHA / DIGIT / "-" / "." / "_" / "~").
/// Notably ':' is encoded so an issuer or account can't forge the label separator,
/// and ' ' becomes %20 (some apps show '+' literally).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `otpauth://totp/ISSUER:ACCOUNT?secret=..&issuer=..&algorithm=SHA1&digits=6&period=30`
/// (Key Uri Format), with label and issuer percent-encoded. The issuer appears
/// in both places because older apps read only the label prefix. An empty
/// issuer is omitted from both.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8], params: &TotpParams) -> String {
    let account_enc = utf8_percent_encode(account, URI_COMPONENT);
    let secret_enc = encode_secret(secret);
    let tail = format!(
        "algorithm={}&digits={}&period={}",
        params.algorithm.as_str(),
        params.digits,
        params.step_secs
    );
    if issuer.is_empty() {
        format!("otpauth://totp/{account_enc}?secret={secret_enc}&{tail}")
    } else {
        let issuer_enc = utf8_percent_encode(issuer, URI_COMPONENT);
        format!("otpauth://totp/{issuer_enc}:{account_enc}?secret={secret_enc}&issuer={issuer_enc}&{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RFC_SEED_SHA1: &[u8] = b"12345678901234567890";
    const RFC_SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
    const RFC_SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    fn params6() -> TotpParams {
        TotpParams::default()
    }

    #[test]
    fn rfc4226_appendix_d() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489",
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(
                hotp(RFC_SEED_SHA1, counter as u64, OtpAlgorithm::Sha1, 6),
                *want,
                "counter {counter}"
            );
        }
    }

    #[test]
    fn rfc6238_appendix_b() {
        let cases: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, sha1, sha256, sha512) in cases {
            for (alg, seed, want) in [
                (OtpAlgorithm::Sha1, RFC_SEED_SHA1, sha1),
                (OtpAlgorithm::Sha256, RFC_SEED_SHA256, sha256),
                (OtpAlgorithm::Sha512, RFC_SEED_SHA512, sha512),
            ] {
                let p = TotpParams::new(alg, 8).unwrap();
                assert_eq!(totp_at(seed, t, &p), want, "{alg:?} at {t}");
                // And the same code verifies at that time.
                assert_eq!(verify_totp(seed, want, t, &p, 1, None), Ok(time_step(t, 30)));
            }
        }
    }

    #[test]
    fn algorithm_names() {
        for alg in [OtpAlgorithm::Sha1, OtpAlgorithm::Sha256, OtpAlgorithm::Sha512] {
            assert_eq!(OtpAlgorithm::parse(alg.as_str()), Ok(alg));
            assert_eq!(serde_json::to_string(&alg).unwrap(), format!("\"{}\"", alg.as_str()));
        }
        assert_eq!(OtpAlgorithm::parse("sha-256"), Ok(OtpAlgorithm::Sha256));
        assert_eq!(OtpAlgorithm::parse("Sha512"), Ok(OtpAlgorithm::Sha512));
        assert_eq!(OtpAlgorithm::parse("sha-1"), Ok(OtpAlgorithm::Sha1));
        assert!(matches!(OtpAlgorithm::parse("md5"), Err(OtpError::InvalidParams(_))));
        assert!(OtpAlgorithm::parse("").is_err());
        assert_eq!(OtpAlgorithm::Sha1.recommended_secret_len(), 20);
        assert_eq!(OtpAlgorithm::Sha256.recommended_secret_len(), 32);
        assert_eq!(OtpAlgorithm::Sha512.recommended_secret_len(), 64);
    }

    #[test]
    fn params_validation() {
        assert_eq!(
            TotpParams::default(),
            TotpParams {
                algorithm: OtpAlgorithm::Sha1,
                digits: 6,
                step_secs: 30
            }
        );
        assert!(TotpParams::new(OtpAlgorithm::Sha1, 6).is_ok());
        assert!(TotpParams::new(OtpAlgorithm::Sha1, 8).is_ok());
        for bad in [0, 5, 9, 10] {
            assert!(matches!(
                TotpParams::new(OtpAlgorithm::Sha1, bad),
                Err(OtpError::InvalidParams(_))
            ));
        }
        // Deserialized params bypass new(); verify_totp must still refuse them.
        let zero_step = TotpParams {
            step_secs: 0,
            ..TotpParams::default()
        };
        assert!(matches!(
            verify_totp(RFC_SEED_SHA1, "123456", 100, &zero_step, 1, None),
            Err(OtpError::InvalidParams(_))
        ));
        let four_digits = TotpParams {
            digits: 4,
            ..TotpParams::default()
        };
        assert!(matches!(
            verify_totp(RFC_SEED_SHA1, "1234", 100, &four_digits, 1, None),
            Err(OtpError::InvalidParams(_))
        ));
        assert!(matches!(
            verify_totp(RFC_SEED_SHA1, "123456", 100, &params6(), MAX_WINDOW + 1, None),
            Err(OtpError::InvalidParams(_))
        ));
    }

    #[test]
    fn window_accepts_adjacent_steps_only() {
        let p = params6();
        let now = 1_700_000_015u64;
        let step = time_step(now, 30);
        for offset in [-1i64, 0, 1] {
            let s = step.checked_add_signed(offset).unwrap();
            let code = hotp(RFC_SEED_SHA1, s, p.algorithm, p.digits);
            assert_eq!(
                verify_totp(RFC_SEED_SHA1, &code, now, &p, 1, None),
                Ok(s),
                "offset {offset}"
            );
        }
        for offset in [-2i64, 2] {
            let s = step.checked_add_signed(offset).unwrap();
            let code = hotp(RFC_SEED_SHA1, s, p.algorithm, p.digits);
            // Guard against the one-in-a-million chance that this code also
            // belongs to a step inside the window.
            let in_window = (step - 1..=step + 1).any(|w| hotp(RFC_SEED_SHA1, w, p.algorithm, 6) == code);
            assert!(!in_window);
            assert_eq!(
                verify_totp(RFC_SEED_SHA1, &code, now, &p, 1, None),
                Err(OtpError::Invalid),
                "offset {offset}"
            );
        }
        // Window 0 accepts only the current step.
        let prev = hotp(RFC_SEED_SHA1, step - 1, p.algorithm, p.digits);
        assert_eq!(
            verify_totp(RFC_SEED_SHA1, &prev, now, &p, 0, None),
            Err(OtpError::Invalid)
        );
    }

    #[test]
    fn window_near_epoch_does_not_underflow() {
        let p = params6();
        let code = hotp(RFC_SEED_SHA1, 0, p.algorithm, p.digits);
        assert_eq!(verify_totp(RFC_SEED_SHA1, &code, 5, &p, 1, None), Ok(0));
        let far_future = hotp(RFC_SEED_SHA1, u64::MAX / 30, p.algorithm, p.digits);
        assert_eq!(
            verify_totp(RFC_SEED_SHA1, &far_future, u64::MAX, &p, 1, None),
            Ok(u64::MAX / 30)
        );
    }

    #[test]
    fn wrong_code_is_invalid() {
        let p = params6();
        let now = 1_700_000_000;
        let good = totp_at(RFC_SEED_SHA1, now, &p);
        let bad = if good == "000000" { "000001" } else { "000000" };
        assert_eq!(
            verify_totp(RFC_SEED_SHA1, bad, now, &p, 1, None),
            Err(OtpError::Invalid)
        );
        // A different secret doesn't accept the code either.
        assert_eq!(
            verify_totp(RFC_SEED_SHA256, &good, now, &p, 1, None),
            Err(OtpError::Invalid)
        );
    }

    #[test]
    fn replay_is_rejected() {
        let p = params6();
        let now = 1_700_000_015u64;
        let step = time_step(now, 30);
        let code = totp_at(RFC_SEED_SHA1, now, &p);

        let used = verify_totp(RFC_SEED_SHA1, &code, now, &p, 1, None).unwrap();
        assert_eq!(used, step);
        // Same code again, even a second later in the same step.
        assert_eq!(
            verify_totp(RFC_SEED_SHA1, &code, now + 1, &p, 1, Some(used)),
            Err(OtpError::Replayed)
        );

        // The next step's code was used (clock running ahead): the older code
        // must now be refused although it is still inside the window.
        let newer = hotp(RFC_SEED_SHA1, step + 1, p.algorithm, p.digits);
        let used_newer = verify_totp(RFC_SEED_SHA1, &newer, now, &p, 1, Some(used)).unwrap();
        assert_eq!(used_newer, step + 1);
        let older = hotp(RFC_SEED_SHA1, step - 1, p.algorithm, p.digits);
        assert_eq!(
            verify_totp(RFC_SEED_SHA1, &older, now, &p, 1, Some(used_newer)),
            Err(OtpError::Replayed)
        );
        assert_eq!(
            verify_totp(RFC_SEED_SHA1, &code, now, &p, 1, Some(used_newer)),
            Err(OtpError::Replayed)
        );

        // A step newer than the last used one is accepted.
        let later = now + 60;
        let code_later = totp_at(RFC_SEED_SHA1, later, &p);
        assert_eq!(
            verify_totp(RFC_SEED_SHA1, &code_later, later, &p, 1, Some(used_newer)),
            Ok(step + 2)
        );
    }

    #[test]
    fn malformed_codes() {
        let p = params6();
        let now = 1_700_000_000;
        let malformed = Err(OtpError::Malformed { expected: 6 });
        for code in [
            "",
            "   ",
            "12345",
            "1234567",
            "12345a",
            "abcdef",
            "123 456",
            "12-3456",
            "+12345",
            "-12345",
            "١٢٣٤٥٦",       // Arabic-Indic digits
            "１２３４５６", // fullwidth digits
            "12345６",
            "1234\u{0}5",
        ] {
            assert_eq!(
                verify_totp(RFC_SEED_SHA1, code, now, &p, 1, None),
                malformed,
                "{code:?}"
            );
        }
        // 7 digits when 6 are expected, even if its first 6 are the right code.
        let good = totp_at(RFC_SEED_SHA1, now, &p);
        assert_eq!(
            verify_totp(RFC_SEED_SHA1, &format!("{good}0"), now, &p, 1, None),
            malformed
        );
        // An 8-digit credential reports its own expected length.
        let p8 = TotpParams::new(OtpAlgorithm::Sha1, 8).unwrap();
        assert_eq!(
            verify_totp(RFC_SEED_SHA1, "123456", now, &p8, 1, None),
            Err(OtpError::Malformed { expected: 8 })
        );
        // Surrounding whitespace (as pasted) is fine.
        let step = time_step(now, 30);
        assert_eq!(
            verify_totp(RFC_SEED_SHA1, &format!(" \t{good}\n"), now, &p, 1, None),
            Ok(step)
        );
    }

    #[test]
    fn secret_generation() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = generate_secret(&mut rng, OtpAlgorithm::Sha1);
        let b = generate_secret(&mut rng, OtpAlgorithm::Sha1);
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert_eq!(generate_secret(&mut rng, OtpAlgorithm::Sha256).len(), 32);
        assert_eq!(generate_secret(&mut rng, OtpAlgorithm::Sha512).len(), 64);
    }

    #[test]
    fn base32_round_trip_and_leniency() {
        // RFC 4648 §10 test vector.
        assert_eq!(encode_secret(b"foobar"), "MZXW6YTBOI");
        assert_eq!(encode_secret(RFC_SEED_SHA1), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(decode_secret("MZXW6YTBOI").unwrap(), b"foobar");
        assert_eq!(decode_secret("mzxw6ytboi").unwrap(), b"foobar");
        assert_eq!(decode_secret("MZXW 6YTB OI").unwrap(), b"foobar");
        assert_eq!(decode_secret("mzxw-6ytb-oi").unwrap(), b"foobar");
        assert_eq!(decode_secret("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(decode_secret(" MZXW6YTBOI\n").unwrap(), b"foobar");

        for bad in ["", "   ", "-", "====", "MZXW6YTBO1", "MZXW=6YTBOI", "M", "MZXW6YTBOÍ"] {
            assert_eq!(decode_secret(bad), Err(OtpError::BadSecret), "{bad:?}");
        }

        for len in 1..=64 {
            let secret: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let encoded = encode_secret(&secret);
            assert!(!encoded.contains('='));
            assert_eq!(encoded, encoded.to_ascii_uppercase());
            assert_eq!(decode_secret(&encoded).unwrap(), secret);
        }
    }

    /// Splits `otpauth://totp/LABEL?QUERY` and returns (label, query pairs).
    fn split_uri(uri: &str) -> (&str, Vec<(&str, &str)>) {
        let rest = uri.strip_prefix("otpauth://totp/").expect("scheme and type");
        let (label, query) = rest.split_once('?').expect("query");
        let pairs = query
            .split('&')
            .map(|kv| kv.split_once('=').expect("key=value"))
            .collect();
        (label, pairs)
    }

    fn param<'a>(pairs: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
        pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    #[test]
    fn otpauth_uri_contents() {
        let p = params6();
        let uri = otpauth_uri("Latchkey", "alice@example.com", RFC_SEED_SHA1, &p);
        let (label, pairs) = split_uri(&uri);
        assert_eq!(label, "Latchkey:alice%40example.com");
        assert_eq!(param(&pairs, "secret"), Some("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"));
        assert_eq!(param(&pairs, "issuer"), Some("Latchkey"));
        assert_eq!(param(&pairs, "algorithm"), Some("SHA1"));
        assert_eq!(param(&pairs, "digits"), Some("6"));
        assert_eq!(param(&pairs, "period"), Some("30"));
        assert_eq!(pairs.len(), 5);
        assert_eq!(decode_secret(param(&pairs, "secret").unwrap()).unwrap(), RFC_SEED_SHA1);

        let p8 = TotpParams::new(OtpAlgorithm::Sha512, 8).unwrap();
        let uri = otpauth_uri("Acme & Co: Ops", "bob smith/ä?x=1#", RFC_SEED_SHA512, &p8);
        let (label, pairs) = split_uri(&uri);
        // Exactly one ':' in the label (the separator) and no raw reserved chars.
        assert_eq!(label.matches(':').count(), 1);
        let (issuer, account) = label.split_once(':').unwrap();
        assert_eq!(issuer, "Acme%20%26%20Co%3A%20Ops");
        assert_eq!(account, "bob%20smith%2F%C3%A4%3Fx%3D1%23");
        assert_eq!(param(&pairs, "issuer"), Some(issuer));
        assert_eq!(param(&pairs, "algorithm"), Some("SHA512"));
        assert_eq!(param(&pairs, "digits"), Some("8"));
        assert_eq!(pairs.len(), 5);
        assert!(!uri.contains(' ') && !uri.contains('#') && !uri.contains('+'));
        // Unreserved characters stay readable.
        let uri = otpauth_uri("a-b.c_d~e", "x", b"k", &p);
        assert!(uri.starts_with("otpauth://totp/a-b.c_d~e:x?"));

        // No issuer: bare account label, no issuer parameter.
        let uri = otpauth_uri("", "alice", RFC_SEED_SHA1, &p);
        let (label, pairs) = split_uri(&uri);
        assert_eq!(label, "alice");
        assert_eq!(param(&pairs, "issuer"), None);
    }

    fn any_algorithm() -> impl Strategy<Value = OtpAlgorithm> {
        prop_oneof![
            Just(OtpAlgorithm::Sha1),
            Just(OtpAlgorithm::Sha256),
            Just(OtpAlgorithm::Sha512),
        ]
    }

    proptest! {
        #[test]
        fn prop_code_verifies_within_window(
            secret in proptest::collection::vec(any::<u8>(), 1..80),
            t in 30u64..=u64::MAX / 2,
            digits in MIN_DIGITS..=MAX_DIGITS,
            alg in any_algorithm(),
            d in -1i64..=1,
        ) {
            let p = TotpParams::new(alg, digits).unwrap();
            let code = totp_at(&secret, t, &p);
            let verify_at = t.checked_add_signed(d * 30).unwrap();
            let step = verify_totp(&secret, &code, verify_at, &p, 1, None)
                .map_err(|e| TestCaseError::fail(format!("rejected: {e:?}")))?;
            let want = time_step(t, 30);
            // If another step in the window shares the code (~1e-6), the
            // newest such step is reported; it must carry this code.
            prop_assert!(
                step == want || (step > want && hotp(&secret, step, alg, digits) == code),
                "got step {step}, want {want}"
            );
        }

        #[test]
        fn prop_base32_round_trip(secret in proptest::collection::vec(any::<u8>(), 1..200)) {
            prop_assert_eq!(decode_secret(&encode_secret(&secret)).unwrap(), secret);
        }

        #[test]
        fn prop_verify_never_panics(
            code in any::<String>(),
            digitsish in "[0-9 \\t]{0,10}",
            t in any::<u64>(),
            window in 0u64..=3,
            last in proptest::option::of(any::<u64>()),
            digits in 0u32..=12,
            step_secs in 0u64..=120,
        ) {
            let p = TotpParams { algorithm: OtpAlgorithm::Sha1, digits, step_secs };
            let _ = verify_totp(RFC_SEED_SHA1, &code, t, &p, window, last);
            let _ = verify_totp(RFC_SEED_SHA1, &digitsish, t, &p, window, last);
            let _ = verify_totp(RFC_SEED_SHA1, &code, t, &params6(), window, last);
        }

        #[test]
        fn prop_hotp_has_exactly_digits(
            secret in proptest::collection::vec(any::<u8>(), 0..80),
            counter in any::<u64>(),
            digits in 1u32..=12,
            alg in any_algorithm(),
        ) {
            let code = hotp(&secret, counter, alg, digits);
            prop_assert_eq!(code.len(), digits as usize);
            prop_assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
