//! Tamper-evident audit log: each record's SHA-256 hash covers its content and
//! the previous record's hash, so altering, inserting, reordering or deleting
//! a record breaks every later link.
//!
//! Two schemes chain records. Records written before the chain was keyed use
//! an unkeyed SHA-256 ([`SCHEME_UNKEYED`]): anyone who can write to the
//! database can rewrite them and recompute every hash. Records written since
//! carry an HMAC-SHA256 under a key derived from the master key
//! ([`ChainKey`], scheme `hmac-sha256:<key id>`): rewriting them needs the
//! key. Each record names its scheme, so one verification covers both, and
//! once the chain is keyed an unkeyed record after it is itself a break.
//!
//! The chain alone cannot reveal truncation of its newest records (nor a
//! wholesale rewrite of the unkeyed part): [`Checkpoint`]s of the head, signed
//! and kept outside the database, catch that.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record (seq 1): 64 hex zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separation, so these hashes can't be confused with any other SHA-256
/// use. Bump the version (and keep the old one for verification) if the
/// encoding ever changes: stored chains depend on it.
const DOMAIN: &[u8] = b"latchkey-audit-v1";
/// Domain of the keyed scheme.
const KEYED_DOMAIN: &[u8] = b"latchkey-audit-v2-hmac";

/// The scheme of records chained before the chain was keyed.
pub const SCHEME_UNKEYED: &str = "sha256";
const SCHEME_KEYED_PREFIX: &str = "hmac-sha256:";

fn unkeyed_scheme() -> String {
    SCHEME_UNKEYED.to_owned()
}

/// The key that chains records (derived from the master key by the store's
/// key material; passed in, core does no I/O). Its id names it in each
/// record's scheme without revealing it.
#[derive(Clone)]
pub struct ChainKey {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainKey({})", self.id)
    }
}

impl ChainKey {
    pub fn new(key: [u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"latchkey-audit-key-id");
        h.update(key);
        let id = hex::encode(&h.finalize()[..8]);
        Self { key, id }
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The scheme string stored with each record this key chains.
    pub fn scheme(&self) -> String {
        format!("{SCHEME_KEYED_PREFIX}{}", self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// JSON text exactly as stored: it is hashed byte for byte, so it must not
    /// be re-serialized (key order or whitespace would change the hash).
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
    /// [`SCHEME_UNKEYED`] or `hmac-sha256:<key id>`.
    #[serde(default = "unkeyed_scheme")]
    pub scheme: String,
}

fn put_field(hasher: &mut Sha256, bytes: &[u8]) {
    // Length prefix makes the encoding injective: ("ab","c") != ("a","bc").
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// Hash of one record, lowercase hex.
///
/// Encoding (stable; stored chains depend on it): SHA-256 over
/// `"latchkey-audit-v1"` followed by each field as u64 big-endian byte length
/// then bytes, in order: prev_hash (its hex text), seq and at_ms (8-byte
/// big-endian two's complement), actor, action, target, details (UTF-8).
pub fn compute_hash(
    prev_hash: &str,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN);
    put_fields(
        &mut |b| put_field(&mut hasher, b),
        prev_hash,
        seq,
        at_ms,
        [actor, action, target, details],
    );
    hex::encode(hasher.finalize())
}

/// Keyed hash of one record, lowercase hex: HMAC-SHA256 under `key` over
/// `"latchkey-audit-v2-hmac"` then the scheme and the same fields, each in
/// the same length-prefixed encoding as [`compute_hash`].
#[allow(clippy::too_many_arguments)]
pub fn compute_keyed_hash(
    key: &ChainKey,
    prev_hash: &str,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.key).expect("HMAC takes any key length");
    let mut put = |bytes: &[u8]| {
        mac.update(&(bytes.len() as u64).to_be_bytes());
        mac.update(bytes);
    };
    put(KEYED_DOMAIN);
    put(key.scheme().as_bytes());
    put_fields(&mut put, prev_hash, seq, at_ms, [actor, action, target, details]);
    hex::encode(mac.finalize().into_bytes())
}

/// The chained fields in their stable order: prev_hash, seq, at_ms, then
/// actor, action, target, details.
fn put_fields(put: &mut dyn FnMut(&[u8]), prev_hash: &str, seq: i64, at_ms: i64, texts: [&str; 4]) {
    put(prev_hash.as_bytes());
    put(&seq.to_be_bytes());
    put(&at_ms.to_be_bytes());
    for t in texts {
        put(t.as_bytes());
    }
}

impl AuditRecord {
    /// This record's hash under `key` (keyed scheme) or none (unkeyed).
    fn recompute(&self, key: Option<&ChainKey>) -> String {
        let (prev, seq, at, a, b, c, d) = (
            &self.prev_hash,
            self.seq,
            self.at_ms,
            &self.actor,
            &self.action,
            &self.target,
            &self.details,
        );
        match key {
            Some(k) => compute_keyed_hash(k, prev, seq, at, a, b, c, d),
            None => compute_hash(prev, seq, at, a, b, c, d),
        }
    }
}

/// A new record following `prev`, the `(seq, hash)` of the current head
/// (`None` for an empty log: seq 1 chained to [`GENESIS_HASH`]).
///
/// The caller must read the head and append in one transaction, or two
/// concurrent appends would both claim the same seq.
/// Chained with `key` when given (every production write), else unkeyed.
pub fn next_record(
    prev: Option<(i64, &str)>,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
    key: Option<&ChainKey>,
) -> AuditRecord {
    let (seq, prev_hash) = match prev {
        Some((prev_seq, prev_hash)) => (prev_seq + 1, prev_hash),
        None => (1, GENESIS_HASH),
    };
    let mut rec = AuditRecord {
        seq,
        at_ms,
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        details: details.to_string(),
        prev_hash: prev_hash.to_string(),
        hash: String::new(),
        scheme: key.map_or_else(unkeyed_scheme, ChainKey::scheme),
    };
    rec.hash = rec.recompute(key);
    rec
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainVerification {
    pub ok: bool,
    /// Number of records seen, including any after the first broken link.
    pub length: i64,
    /// Stored hash of the last record; [`GENESIS_HASH`] for an empty chain.
    pub head_hash: String,
    pub first_broken: Option<BrokenLink>,
    /// Seq of the first keyed record (`None`: nothing is keyed yet).
    pub keyed_from: Option<i64>,
    /// Records verified only by the unkeyed hash (written before keying).
    pub unkeyed: i64,
}

/// Streaming verifier: push records in seq order, so the store can page
/// through millions of rows while holding only the previous link.
#[derive(Debug)]
pub struct ChainVerifier {
    prev_seq: i64,
    prev_hash: String,
    length: i64,
    first_broken: Option<BrokenLink>,
    key: Option<ChainKey>,
    keyed_from: Option<i64>,
    unkeyed: i64,
}

impl ChainVerifier {
    /// A verifier that holds no key: keyed records cannot be checked by it
    /// and count as breaks.
    pub fn new() -> Self {
        Self::with_key(None)
    }

    pub fn with_key(key: Option<ChainKey>) -> Self {
        ChainVerifier {
            prev_seq: 0,
            prev_hash: GENESIS_HASH.to_string(),
            length: 0,
            first_broken: None,
            key,
            keyed_from: None,
            unkeyed: 0,
        }
    }

    pub fn push(&mut self, rec: &AuditRecord) {
        self.length += 1;
        if self.first_broken.is_none() {
            if let Some(reason) = self.check(rec) {
                self.first_broken = Some(BrokenLink { seq: rec.seq, reason });
            }
        }
        if rec.scheme == SCHEME_UNKEYED {
            self.unkeyed += 1;
        } else if self.keyed_from.is_none() {
            self.keyed_from = Some(rec.seq);
        }
        // Later records are linked against what is actually stored, so the
        // head hash reported is the real head even past a break.
        self.prev_seq = rec.seq;
        self.prev_hash.clone_from(&rec.hash);
    }

    fn check(&self, rec: &AuditRecord) -> Option<String> {
        let expected_seq = self.prev_seq + 1;
        if rec.seq != expected_seq {
            return Some(format!("sequence gap: expected {expected_seq}, found {}", rec.seq));
        }
        if rec.prev_hash != self.prev_hash {
            return Some(if self.prev_seq == 0 {
                "prev_hash does not match the genesis hash".to_string()
            } else {
                format!("prev_hash does not match the hash of seq {}", self.prev_seq)
            });
        }
        let key = if rec.scheme == SCHEME_UNKEYED {
            if self.keyed_from.is_some() {
                // A downgrade: someone wrote an unkeyed record (or relabelled
                // one) after the chain was keyed, to avoid needing the key.
                return Some("unkeyed record after the chain became keyed".to_string());
            }
            None
        } else {
            match &self.key {
                Some(k) if rec.scheme == k.scheme() => Some(k),
                _ => {
                    return Some(format!(
                        "chained under '{}', a key this verifier does not hold",
                        rec.scheme
                    ))
                }
            }
        };
        let recomputed = rec.recompute(key);
        if rec.hash != recomputed {
            return Some("hash mismatch: record content was altered".to_string());
        }
        None
    }

    pub fn finish(self) -> ChainVerification {
        ChainVerification {
            ok: self.first_broken.is_none(),
            length: self.length,
            head_hash: self.prev_hash,
            first_broken: self.first_broken,
            keyed_from: self.keyed_from,
            unkeyed: self.unkeyed,
        }
    }
}

/// A signed statement "the chain's head was `(seq, hash)` at `at_ms`",
/// appended to a sink outside the database. The signature (Ed25519, by a key
/// derived from the master key; signing is the store's key material's job)
/// covers [`Checkpoint::signed_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub at_ms: i64,
    /// First keyed seq at that time, so a later rewrite of the whole chain
    /// into the unkeyed scheme is caught too.
    pub keyed_from: Option<i64>,
    /// Hex Ed25519 signature.
    pub signature: String,
}

impl Checkpoint {
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = b"latchkey-audit-checkpoint-v1".to_vec();
        let mut put = |b: &[u8]| {
            out.extend_from_slice(&(b.len() as u64).to_be_bytes());
            out.extend_from_slice(b);
        };
        put(&self.seq.to_be_bytes());
        put(self.hash.as_bytes());
        put(&self.at_ms.to_be_bytes());
        put(&self.keyed_from.unwrap_or(0).to_be_bytes());
        out
    }
}

/// What a checkpoint says about the chain as it is now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CheckpointFinding {
    /// The stored record at the checkpoint's seq has the checkpointed hash.
    Matches { seq: i64 },
    /// The chain no longer reaches the checkpoint: records were removed.
    Truncated { seq: i64, chain_length: i64 },
    /// The record at the checkpoint's seq has another hash: rewritten.
    Rewritten { seq: i64 },
    /// The chain was keyed from a later seq than the checkpoint says (or not
    /// at all): keyed records were rewritten as unkeyed ones.
    Downgraded { seq: i64 },
    /// The signature does not verify: the checkpoint itself is forged or damaged.
    BadSignature { seq: i64 },
}

impl CheckpointFinding {
    pub fn holds(&self) -> bool {
        matches!(self, CheckpointFinding::Matches { .. })
    }
}

/// Compare a checkpoint whose signature verified with the stored chain:
/// `stored_hash` is the hash stored at the checkpoint's seq (`None` if no
/// such record), `chain` what verifying the whole chain found.
pub fn compare_checkpoint(cp: &Checkpoint, stored_hash: Option<&str>, chain: &ChainVerification) -> CheckpointFinding {
    let seq = cp.seq;
    let Some(stored) = stored_hash else {
        return CheckpointFinding::Truncated {
            seq,
            chain_length: chain.length,
        };
    };
    if stored != cp.hash {
        return CheckpointFinding::Rewritten { seq };
    }
    match (cp.keyed_from, chain.keyed_from) {
        (Some(then), Some(now)) if now > then => CheckpointFinding::Downgraded { seq },
        (Some(_), None) => CheckpointFinding::Downgraded { seq },
        _ => CheckpointFinding::Matches { seq },
    }
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_chain(n: i64) -> Vec<AuditRecord> {
        let mut chain: Vec<AuditRecord> = Vec::new();
        for i in 1..=n {
            let prev = chain.last().map(|r| (r.seq, r.hash.as_str()));
            let rec = next_record(
                prev,
                1_700_000_000_000 + i * 1000,
                &format!("admin:user{}", i % 7),
                if i % 2 == 0 { "method.add" } else { "user.update" },
                &format!("user:u{i}"),
                &format!("{{\"n\":{i}}}"),
                None,
            );
            chain.push(rec);
        }
        chain
    }

    fn verify(chain: &[AuditRecord]) -> ChainVerification {
        let mut v = ChainVerifier::new();
        for rec in chain {
            v.push(rec);
        }
        v.finish()
    }

    fn broken(seq: i64, reason: &str) -> Option<BrokenLink> {
        Some(BrokenLink {
            seq,
            reason: reason.to_string(),
        })
    }

    const ALTERED: &str = "hash mismatch: record content was altered";

    #[test]
    fn genesis_is_64_zeros() {
        assert_eq!(GENESIS_HASH.len(), 64);
        assert!(GENESIS_HASH.bytes().all(|b| b == b'0'));
    }

    #[test]
    fn known_answer() {
        // Computed independently (Python hashlib) from the documented encoding,
        // so an accidental format change fails here rather than on old chains.
        assert_eq!(
            compute_hash(
                GENESIS_HASH,
                1,
                1_700_000_000_000,
                "admin:alice",
                "user.create",
                "user:bob",
                r#"{"department":"ops"}"#
            ),
            "9378b1f6a62e5af28880f1b88358af296bac57dcf4c6cb44eb69d9d638be8d80"
        );
        assert_eq!(
            compute_hash(GENESIS_HASH, -5, -1, "ä", "", "x", "{}"),
            "553b54b29989088c6b6d40b2d848e3895012be6dc0d435b31d4f4de5bd2ec165"
        );
    }

    #[test]
    fn next_record_links() {
        let first = next_record(None, 10, "a", "b", "c", "{}", None);
        assert_eq!(first.seq, 1);
        assert_eq!(first.prev_hash, GENESIS_HASH);
        assert_eq!(first.hash, compute_hash(GENESIS_HASH, 1, 10, "a", "b", "c", "{}"));
        assert_eq!(first.hash.len(), 64);
        assert!(first
            .hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));

        let second = next_record(Some((first.seq, &first.hash)), 11, "a", "b", "c", "{}", None);
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev_hash, first.hash);
        // Same content at a different position hashes differently.
        assert_ne!(second.hash, first.hash);
    }

    #[test]
    fn hundred_record_chain_verifies() {
        let chain = build_chain(100);
        let v = verify(&chain);
        assert_eq!(
            v,
            ChainVerification {
                ok: true,
                length: 100,
                head_hash: chain[99].hash.clone(),
                first_broken: None,
                keyed_from: None,
                unkeyed: 100,
            }
        );
    }

    #[test]
    fn empty_chain_is_ok() {
        let v = ChainVerifier::default().finish();
        assert!(v.ok);
        assert_eq!(v.length, 0);
        assert_eq!(v.head_hash, GENESIS_HASH);
        assert_eq!(v.first_broken, None);
    }

    #[test]
    fn altered_fields_are_detected_at_that_record() {
        let alterations: [fn(&mut AuditRecord); 6] = [
            |r| r.details = r#"{"n":999}"#.to_string(),
            |r| r.actor = "attacker".to_string(),
            |r| r.at_ms += 1,
            |r| r.action.push('x'),
            |r| r.target = String::new(),
            |r| r.details.push(' '), // whitespace counts: details are hashed as stored
        ];
        for alter in alterations {
            let mut chain = build_chain(100);
            alter(&mut chain[36]);
            let v = verify(&chain);
            assert!(!v.ok);
            assert_eq!(v.first_broken, broken(37, ALTERED));
            assert_eq!(v.length, 100);
            assert_eq!(v.head_hash, chain[99].hash);
        }
    }

    #[test]
    fn rewritten_hash_breaks_the_next_link() {
        let mut chain = build_chain(100);
        let r = &mut chain[36];
        r.details = r#"{"n":"forged"}"#.to_string();
        r.hash = compute_hash(&r.prev_hash, r.seq, r.at_ms, &r.actor, &r.action, &r.target, &r.details);
        let v = verify(&chain);
        assert!(!v.ok);
        assert_eq!(
            v.first_broken,
            broken(38, "prev_hash does not match the hash of seq 37")
        );
        assert_eq!(v.length, 100);
    }

    #[test]
    fn deleted_record_is_a_sequence_gap() {
        let mut chain = build_chain(100);
        chain.remove(49); // seq 50
        let v = verify(&chain);
        assert!(!v.ok);
        assert_eq!(v.first_broken, broken(51, "sequence gap: expected 50, found 51"));
        assert_eq!(v.length, 99);

        // Deleting the first record: the chain must start at 1.
        let mut chain = build_chain(5);
        chain.remove(0);
        assert_eq!(
            verify(&chain).first_broken,
            broken(2, "sequence gap: expected 1, found 2")
        );
    }

    #[test]
    fn swapped_records_are_detected() {
        let mut chain = build_chain(10);
        chain.swap(3, 4);
        assert_eq!(
            verify(&chain).first_broken,
            broken(5, "sequence gap: expected 4, found 5")
        );
    }

    #[test]
    fn renumbered_chain_after_deletion_is_detected() {
        // Attacker deletes seq 50 and renumbers the rest to close the gap.
        let mut chain = build_chain(100);
        chain.remove(49);
        for r in chain.iter_mut().skip(49) {
            r.seq -= 1;
        }
        assert_eq!(
            verify(&chain).first_broken,
            broken(50, "prev_hash does not match the hash of seq 49")
        );
    }

    #[test]
    fn first_record_must_chain_to_genesis() {
        let mut chain = build_chain(3);
        chain[0].prev_hash = "f".repeat(64);
        assert_eq!(
            verify(&chain).first_broken,
            broken(1, "prev_hash does not match the genesis hash")
        );
    }

    #[test]
    fn only_first_break_is_reported() {
        let mut chain = build_chain(20);
        chain[4].actor = "x".to_string();
        chain[9].details = "{}".to_string();
        chain.remove(15);
        let v = verify(&chain);
        assert_eq!(v.first_broken, broken(5, ALTERED));
        assert_eq!(v.length, 19);
        assert_eq!(v.head_hash, chain[18].hash);
    }

    #[test]
    fn field_boundaries_cannot_collide() {
        let h = |actor: &str, action: &str, target: &str, details: &str| {
            compute_hash(GENESIS_HASH, 1, 0, actor, action, target, details)
        };
        // Naive concatenation of these would be identical.
        assert_ne!(h("ab", "c", "t", "{}"), h("a", "bc", "t", "{}"));
        assert_ne!(h("a", "", "b", "{}"), h("a", "b", "", "{}"));
        assert_ne!(h("", "", "", "ab"), h("a", "b", "", ""));
        assert_ne!(h("x", "y", "z", ""), h("x", "y", "", "z"));
        // A field's bytes can't impersonate a length prefix plus the next field.
        let mut forged = String::from("a");
        forged.push_str(std::str::from_utf8(&1u64.to_be_bytes()).unwrap());
        forged.push('c');
        assert_ne!(h("a", "c", "t", "{}"), h(&forged, "", "t", "{}"));
        // Numeric fields are bound too, and not interchangeable.
        assert_ne!(
            compute_hash(GENESIS_HASH, 1, 2, "a", "b", "c", "{}"),
            compute_hash(GENESIS_HASH, 2, 1, "a", "b", "c", "{}")
        );
        // And so is prev_hash.
        assert_ne!(
            compute_hash(GENESIS_HASH, 1, 0, "a", "b", "c", "{}"),
            compute_hash(&"1".repeat(64), 1, 0, "a", "b", "c", "{}")
        );
    }

    #[test]
    fn record_serde_round_trip() {
        let rec = next_record(None, 1, "a", "b", "c", r#"{"k":[1,2]}"#, None);
        let json = serde_json::to_string(&rec).unwrap();
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
        assert!(verify(&[back]).ok);
    }

    fn key(b: u8) -> ChainKey {
        ChainKey::new([b; 32])
    }

    /// `n` unkeyed records, then `m` keyed ones: an old database after the upgrade.
    fn mixed_chain(n: i64, m: i64, k: &ChainKey) -> Vec<AuditRecord> {
        let mut chain = build_chain(n);
        for i in 1..=m {
            let prev = chain.last().map(|r| (r.seq, r.hash.clone()));
            let rec = next_record(
                prev.as_ref().map(|(s, h)| (*s, h.as_str())),
                1_800_000_000_000 + i,
                "user:alice",
                "method.add",
                "user:bob",
                "{}",
                Some(k),
            );
            chain.push(rec);
        }
        chain
    }

    fn verify_with(chain: &[AuditRecord], k: Option<&ChainKey>) -> ChainVerification {
        let mut v = ChainVerifier::with_key(k.cloned());
        for rec in chain {
            v.push(rec);
        }
        v.finish()
    }

    #[test]
    fn old_and_keyed_records_verify_in_one_chain() {
        let k = key(1);
        let chain = mixed_chain(10, 5, &k);
        let v = verify_with(&chain, Some(&k));
        assert!(v.ok, "{v:?}");
        assert_eq!((v.keyed_from, v.unkeyed, v.length), (Some(11), 10, 15));
        assert_eq!(chain[12].scheme, format!("hmac-sha256:{}", k.id()));
    }

    #[test]
    fn recomputing_unkeyed_hashes_over_keyed_records_is_detected() {
        let k = key(1);
        let mut chain = mixed_chain(3, 6, &k);
        // Alter seq 5, then recompute every later hash without the key, keeping the scheme label.
        chain[4].details = r#"{"forged":true}"#.into();
        for i in 4..chain.len() {
            let prev = chain[i - 1].hash.clone();
            let r = &mut chain[i];
            r.prev_hash = prev;
            r.hash = compute_hash(&r.prev_hash, r.seq, r.at_ms, &r.actor, &r.action, &r.target, &r.details);
        }
        assert_eq!(verify_with(&chain, Some(&k)).first_broken, broken(5, ALTERED));
        // Relabelling them unkeyed instead is a downgrade after the first keyed record.
        for r in chain.iter_mut().skip(4) {
            r.scheme = SCHEME_UNKEYED.into();
        }
        assert_eq!(
            verify_with(&chain, Some(&k)).first_broken,
            broken(5, "unkeyed record after the chain became keyed")
        );
    }

    #[test]
    fn another_key_does_not_verify() {
        let chain = mixed_chain(0, 3, &key(1));
        let v = verify_with(&chain, Some(&key(2)));
        assert_eq!(v.first_broken.unwrap().seq, 1);
        assert!(!verify_with(&chain, None).ok, "a keyed chain needs the key");
        // Same content and position, different key: different hash.
        assert_ne!(mixed_chain(0, 1, &key(1))[0].hash, mixed_chain(0, 1, &key(2))[0].hash);
    }

    #[test]
    fn keyed_hash_binds_the_scheme_and_fields() {
        let k = key(3);
        let h = |a: &str, b: &str| compute_keyed_hash(&k, GENESIS_HASH, 1, 0, a, b, "t", "{}");
        assert_ne!(h("ab", "c"), h("a", "bc"));
        assert_ne!(
            compute_keyed_hash(&k, GENESIS_HASH, 1, 0, "a", "b", "t", "{}"),
            compute_hash(GENESIS_HASH, 1, 0, "a", "b", "t", "{}")
        );
    }

    #[test]
    fn checkpoints_tell_truncation_rewrite_and_downgrade_apart() {
        let k = key(1);
        let chain = mixed_chain(2, 8, &k);
        let full = verify_with(&chain, Some(&k));
        let cp = Checkpoint {
            seq: 10,
            hash: chain[9].hash.clone(),
            at_ms: 0,
            keyed_from: Some(3),
            signature: String::new(),
        };
        assert!(compare_checkpoint(&cp, Some(&chain[9].hash), &full).holds());
        let short = verify_with(&chain[..7], Some(&k));
        assert_eq!(
            compare_checkpoint(&cp, None, &short),
            CheckpointFinding::Truncated {
                seq: 10,
                chain_length: 7
            }
        );
        assert_eq!(
            compare_checkpoint(&cp, Some(&"f".repeat(64)), &full),
            CheckpointFinding::Rewritten { seq: 10 }
        );
        let unkeyed = verify(&build_chain(10));
        assert_eq!(
            compare_checkpoint(&cp, Some(&chain[9].hash), &unkeyed),
            CheckpointFinding::Downgraded { seq: 10 }
        );
        // The signed bytes bind every field.
        let mut other = cp.clone();
        other.keyed_from = Some(4);
        assert_ne!(cp.signed_bytes(), other.signed_bytes());
    }
}
