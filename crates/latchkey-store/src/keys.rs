//! Key material that lives outside the database.
//!
//! One 256-bit master key (a file in the data dir, or `LATCHKEY_SECRET_KEY`)
//! is expanded with HKDF into purpose-bound subkeys: one seals secrets with
//! AES-256-GCM, one peppers the keyed hashes of bearer codes, one keys the
//! audit chain's HMAC, one signs audit checkpoints (Ed25519). A database copy
//! without the key reveals neither TOTP seeds nor anything to brute-force,
//! and a database writer without it cannot re-chain the audit log.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use hkdf::Hkdf;
use latchkey_core::audit::{ChainKey, Checkpoint};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::StoreError;

pub const SECRET_KEY_ENV: &str = "LATCHKEY_SECRET_KEY";
const NONCE_LEN: usize = 12;

pub struct Keys {
    seal: Aes256Gcm,
    pepper: Zeroizing<[u8; 32]>,
    audit_chain: Zeroizing<[u8; 32]>,
    checkpoint: SigningKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    pub fn from_master(master: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"latchkey"), master);
        let mut seal_key = Zeroizing::new([0u8; 32]);
        hk.expand(b"seal secrets v1", seal_key.as_mut())
            .expect("32 bytes is a valid HKDF length");
        let mut pepper = Zeroizing::new([0u8; 32]);
        hk.expand(b"pepper bearer codes v1", pepper.as_mut())
            .expect("32 bytes is a valid HKDF length");
        let mut audit_chain = Zeroizing::new([0u8; 32]);
        hk.expand(b"audit chain hmac v1", audit_chain.as_mut())
            .expect("32 bytes is a valid HKDF length");
        let mut checkpoint_seed = Zeroizing::new([0u8; 32]);
        hk.expand(b"audit checkpoint ed25519 v1", checkpoint_seed.as_mut())
            .expect("32 bytes is a valid HKDF length");
        Self {
            seal: Aes256Gcm::new_from_slice(seal_key.as_ref()).expect("32-byte key"),
            pepper,
            audit_chain,
            checkpoint: SigningKey::from_bytes(&checkpoint_seed),
        }
    }

    /// Parse a master key given as 64 hex characters.
    pub fn from_hex(hex_key: &str) -> Result<Self, StoreError> {
        let bytes = Zeroizing::new(
            hex::decode(hex_key.trim())
                .map_err(|_| StoreError::Key("the secret key must be 64 hex characters".into()))?,
        );
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Key("the secret key must be 32 bytes (64 hex characters)".into()))?;
        Ok(Self::from_master(&arr))
    }

    /// `LATCHKEY_SECRET_KEY` if set, else `<data>/secret.key`, created (mode
    /// 0600) on first use and refused if group or others may access it. Several nodes on one PostgreSQL must share the key.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, StoreError> {
        if let Ok(v) = std::env::var(SECRET_KEY_ENV) {
            return Self::from_hex(&v);
        }
        let path = data_dir.join("secret.key");
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                crate::private::check_key_file(&path)?;
                Self::from_hex(&s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::private::create_private_dir(data_dir)?;
                let mut key = Zeroizing::new([0u8; 32]);
                rand::rngs::OsRng.fill_bytes(key.as_mut());
                let hex_key = Zeroizing::new(hex::encode(key.as_ref()));
                write_private(&path, hex_key.as_bytes())
                    .map_err(|e| StoreError::Key(format!("{}: {e}", path.display())))?;
                Ok(Self::from_master(&key))
            }
            Err(e) => Err(StoreError::Key(format!("{}: {e}", path.display()))),
        }
    }

    /// Encrypt `plain`, binding it to `aad` (the owning row's id) so a sealed
    /// value copied to another row does not open.
    pub fn seal(&self, plain: &[u8], aad: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .seal
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of in-memory data cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if sealed.len() < NONCE_LEN {
            return Err(StoreError::Key("sealed value is truncated".into()));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.seal
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Key("a sealed secret did not open: wrong key or altered data".into()))
    }

    pub fn pepper(&self) -> &[u8] {
        self.pepper.as_ref()
    }

    /// The key that chains audit records.
    pub fn audit_chain_key(&self) -> ChainKey {
        ChainKey::new(*self.audit_chain)
    }

    /// Sign a checkpoint of the audit head (fills its `signature`).
    pub fn sign_checkpoint(&self, cp: &mut Checkpoint) {
        cp.signature = hex::encode(self.checkpoint.sign(&cp.signed_bytes()).to_bytes());
    }

    /// Whether `cp`'s signature is this master key's.
    pub fn checkpoint_signature_ok(&self, cp: &Checkpoint) -> bool {
        let Ok(bytes) = hex::decode(&cp.signature) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else {
            return false;
        };
        self.checkpoint.verifying_key().verify(&cp.signed_bytes(), &sig).is_ok()
    }

    /// The checkpoint verifying key (hex), for whoever checks checkpoints
    /// without the master key.
    pub fn checkpoint_public_key(&self) -> String {
        hex::encode(self.checkpoint.verifying_key().to_bytes())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_binding() {
        let k = Keys::from_master(&[7u8; 32]);
        let s = k.seal(b"seed", "row-1");
        assert_eq!(k.open(&s, "row-1").unwrap().as_slice(), b"seed");
        assert!(k.open(&s, "row-2").is_err(), "bound to its row");
        assert!(
            Keys::from_master(&[8u8; 32]).open(&s, "row-1").is_err(),
            "bound to the key"
        );
        assert!(k.open(&s[..5], "row-1").is_err());
    }

    #[test]
    fn checkpoints_are_signed_by_the_master_key() {
        let k = Keys::from_master(&[7u8; 32]);
        let mut cp = Checkpoint {
            seq: 3,
            hash: "ab".repeat(32),
            at_ms: 1,
            keyed_from: Some(1),
            signature: String::new(),
        };
        k.sign_checkpoint(&mut cp);
        assert!(k.checkpoint_signature_ok(&cp));
        assert!(!Keys::from_master(&[8u8; 32]).checkpoint_signature_ok(&cp));
        let mut moved = cp.clone();
        moved.seq = 2;
        assert!(!k.checkpoint_signature_ok(&moved), "the signature covers the seq");
        assert_ne!(
            k.audit_chain_key().id(),
            Keys::from_master(&[8u8; 32]).audit_chain_key().id()
        );
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("lk-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Keys::load_or_create(&dir).unwrap();
        let b = Keys::load_or_create(&dir).unwrap();
        assert_eq!(a.pepper(), b.pepper());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("secret.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
