//! Tamper-evident audit log: each record's SHA-256 hash covers its content and
//! the previous record's hash, so altering, inserting, reordering or deleting
//! a record breaks every later link.
//!
//! The chain alone cannot reveal truncation of its newest records; compare
//! [`ChainVerification::head_hash`] and `length` with a copy kept elsewhere
//! (an export, a log shipper) to catch that.

use sha2::{Digest, Sha256};

/// `prev_hash` of the first record (seq 1): 64 hex zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separation, so these hashes can't be confused with any other SHA-256
/// use. Bump the version (and keep the old one for verification) if the
/// encoding ever changes: stored chains depend on it.
const DOMAIN: &[u8] = b"latchkey-audit-v1";

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
    put_field(&mut hasher, prev_hash.as_bytes());
    put_field(&mut hasher, &seq.to_be_bytes());
    put_field(&mut hasher, &at_ms.to_be_bytes());
    put_field(&mut hasher, actor.as_bytes());
    put_field(&mut hasher, action.as_bytes());
    put_field(&mut hasher, target.as_bytes());
    put_field(&mut hasher, details.as_bytes());
    hex::encode(hasher.finalize())
}

/// A new record following `prev`, the `(seq, hash)` of the current head
/// (`None` for an empty log: seq 1 chained to [`GENESIS_HASH`]).
///
/// The caller must read the head and append in one transaction, or two
/// concurrent appends would both claim the same seq.
pub fn next_record(
    prev: Option<(i64, &str)>,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
) -> AuditRecord {
    let (seq, prev_hash) = match prev {
        Some((prev_seq, prev_hash)) => (prev_seq + 1, prev_hash),
        None => (1, GENESIS_HASH),
    };
    let hash = compute_hash(prev_hash, seq, at_ms, actor, action, target, details);
    AuditRecord {
        seq,
        at_ms,
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        details: details.to_string(),
        prev_hash: prev_hash.to_string(),
        hash,
    }
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
}

/// Streaming verifier: push records in seq order, so the store can page
/// through millions of rows while holding only the previous link.
#[derive(Debug)]
pub struct ChainVerifier {
    prev_seq: i64,
    prev_hash: String,
    length: i64,
    first_broken: Option<BrokenLink>,
}

impl ChainVerifier {
    pub fn new() -> Self {
        ChainVerifier {
            prev_seq: 0,
            prev_hash: GENESIS_HASH.to_string(),
            length: 0,
            first_broken: None,
        }
    }

    pub fn push(&mut self, rec: &AuditRecord) {
        self.length += 1;
        if self.first_broken.is_none() {
            if let Some(reason) = self.check(rec) {
                self.first_broken = Some(BrokenLink { seq: rec.seq, reason });
            }
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
        let recomputed = compute_hash(
            &rec.prev_hash,
            rec.seq,
            rec.at_ms,
            &rec.actor,
            &rec.action,
            &rec.target,
            &rec.details,
        );
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
        }
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
        let first = next_record(None, 10, "a", "b", "c", "{}");
        assert_eq!(first.seq, 1);
        assert_eq!(first.prev_hash, GENESIS_HASH);
        assert_eq!(first.hash, compute_hash(GENESIS_HASH, 1, 10, "a", "b", "c", "{}"));
        assert_eq!(first.hash.len(), 64);
        assert!(first
            .hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));

        let second = next_record(Some((first.seq, &first.hash)), 11, "a", "b", "c", "{}");
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
        let rec = next_record(None, 1, "a", "b", "c", r#"{"k":[1,2]}"#);
        let json = serde_json::to_string(&rec).unwrap();
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
        assert!(verify(&[back]).ok);
    }
}
