//! A small RADIUS codec: exactly what Latchkey's server needs from RFC 2865
//! (packet format, User-Password hiding, Response Authenticator) and RFC
//! 3579 (Message-Authenticator). MD5 and HMAC-MD5 come from RustCrypto.
//!
//! The `radius` crate was considered: its last release predates RFC 3579
//! being mandatory in practice (BlastRADIUS, 2024) and it pulls the non-
//! RustCrypto `md5` crate, so this codec stays small and separately tested
//! (RFC 2865 §7.1 example, property tests, and `fuzz/` for cargo-fuzz).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

pub const ACCESS_REQUEST: u8 = 1;
pub const ACCESS_ACCEPT: u8 = 2;
pub const ACCESS_REJECT: u8 = 3;
pub const ACCESS_CHALLENGE: u8 = 11;

pub const USER_NAME: u8 = 1;
pub const USER_PASSWORD: u8 = 2;
pub const REPLY_MESSAGE: u8 = 18;
pub const STATE: u8 = 24;
pub const CALLING_STATION_ID: u8 = 31;
pub const NAS_IDENTIFIER: u8 = 32;
pub const PROXY_STATE: u8 = 33;
pub const MESSAGE_AUTHENTICATOR: u8 = 80;

pub const HEADER_LEN: usize = 20;
pub const MAX_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet shorter than its header or its length field")]
    Truncated,
    #[error("length field out of range")]
    BadLength,
    #[error("attribute with an invalid length")]
    BadAttribute,
    #[error("User-Password must be a non-empty multiple of 16 bytes, at most 128")]
    BadPassword,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub code: u8,
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub attributes: Vec<(u8, Vec<u8>)>,
}

impl Packet {
    /// Parse one datagram. Bytes after the length field are padding and
    /// ignored (RFC 2865 §3); a shorter datagram is dropped.
    pub fn decode(buf: &[u8]) -> Result<Packet, PacketError> {
        if buf.len() < HEADER_LEN {
            return Err(PacketError::Truncated);
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if !(HEADER_LEN..=MAX_LEN).contains(&len) {
            return Err(PacketError::BadLength);
        }
        if buf.len() < len {
            return Err(PacketError::Truncated);
        }
        let mut authenticator = [0u8; 16];
        authenticator.copy_from_slice(&buf[4..20]);
        let mut attributes = Vec::new();
        let mut rest = &buf[HEADER_LEN..len];
        while !rest.is_empty() {
            if rest.len() < 2 {
                return Err(PacketError::BadAttribute);
            }
            let alen = rest[1] as usize;
            if alen < 2 || alen > rest.len() {
                return Err(PacketError::BadAttribute);
            }
            attributes.push((rest[0], rest[2..alen].to_vec()));
            rest = &rest[alen..];
        }
        Ok(Packet {
            code: buf[0],
            identifier: buf[1],
            authenticator,
            attributes,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        out.push(self.code);
        out.push(self.identifier);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.authenticator);
        for (t, v) in &self.attributes {
            // Callers add at most 253 bytes per attribute (see `add`).
            out.push(*t);
            out.push((v.len() + 2) as u8);
            out.extend_from_slice(v);
        }
        let len = out.len() as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        out
    }

    pub fn attr(&self, t: u8) -> Option<&[u8]> {
        self.attributes.iter().find(|(k, _)| *k == t).map(|(_, v)| v.as_slice())
    }

    pub fn count(&self, t: u8) -> usize {
        self.attributes.iter().filter(|(k, _)| *k == t).count()
    }

    /// Add an attribute, truncating the value to the 253 bytes a RADIUS
    /// attribute can hold.
    pub fn add(&mut self, t: u8, v: &[u8]) {
        self.attributes.push((t, v[..v.len().min(253)].to_vec()));
    }

    /// A reply to `req` (same identifier, Proxy-State copied per RFC 2865 §5.33).
    pub fn reply_to(req: &Packet, code: u8) -> Packet {
        let mut p = Packet {
            code,
            identifier: req.identifier,
            authenticator: req.authenticator,
            attributes: vec![],
        };
        for (t, v) in &req.attributes {
            if *t == PROXY_STATE {
                p.attributes.push((*t, v.clone()));
            }
        }
        p
    }
}

fn hmac_md5(secret: &[u8], data: &[u8]) -> [u8; 16] {
    let mut mac = Hmac::<Md5>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// RFC 3579 §3.2: HMAC-MD5 over the request with the Message-Authenticator
/// value zeroed. Exactly one Message-Authenticator must be present and match.
pub fn verify_request_message_authenticator(raw: &[u8], secret: &[u8]) -> bool {
    let Ok(p) = Packet::decode(raw) else { return false };
    if p.count(MESSAGE_AUTHENTICATOR) != 1 {
        return false;
    }
    let len = u16::from_be_bytes([raw[2], raw[3]]) as usize;
    let mut copy = raw[..len].to_vec();
    // Find the attribute's offset to zero it in place (encoding must not change).
    let mut off = HEADER_LEN;
    let mut given = None;
    while off + 2 <= len {
        let (t, alen) = (copy[off], copy[off + 1] as usize);
        if t == MESSAGE_AUTHENTICATOR {
            if alen != 18 {
                return false;
            }
            given = Some(copy[off + 2..off + 18].to_vec());
            copy[off + 2..off + 18].fill(0);
        }
        off += alen.max(2);
    }
    let Some(given) = given else { return false };
    hmac_md5(secret, &copy).ct_eq(&given).into()
}

/// Finish a response: add Message-Authenticator (computed with the request
/// authenticator in place, RFC 3579 §3.2), then the Response Authenticator
/// MD5(Code+ID+Length+RequestAuth+Attributes+Secret) (RFC 2865 §3).
pub fn sign_response(mut resp: Packet, request_authenticator: &[u8; 16], secret: &[u8]) -> Vec<u8> {
    resp.attributes.retain(|(t, _)| *t != MESSAGE_AUTHENTICATOR);
    resp.attributes.push((MESSAGE_AUTHENTICATOR, vec![0; 16]));
    resp.authenticator = *request_authenticator;
    let mut raw = resp.encode();
    let mac = hmac_md5(secret, &raw);
    let n = raw.len();
    raw[n - 16..].copy_from_slice(&mac);
    let mut h = Md5::new();
    h.update(&raw);
    h.update(secret);
    let auth = h.finalize();
    raw[4..20].copy_from_slice(&auth);
    raw
}

/// Response Authenticator alone (for checking responses in tests).
pub fn response_authenticator(raw_response: &[u8], request_authenticator: &[u8; 16], secret: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(&raw_response[..4]);
    h.update(request_authenticator);
    h.update(&raw_response[HEADER_LEN..]);
    h.update(secret);
    h.finalize().into()
}

/// RFC 2865 §5.2: recover a User-Password hidden with the shared secret and
/// the Request Authenticator. Trailing NUL padding is removed.
pub fn decode_user_password(
    hidden: &[u8],
    secret: &[u8],
    request_authenticator: &[u8; 16],
) -> Result<Vec<u8>, PacketError> {
    if hidden.is_empty() || hidden.len() % 16 != 0 || hidden.len() > 128 {
        return Err(PacketError::BadPassword);
    }
    let mut out = Vec::with_capacity(hidden.len());
    let mut prev: &[u8] = request_authenticator;
    for chunk in hidden.chunks(16) {
        let mut h = Md5::new();
        h.update(secret);
        h.update(prev);
        let b = h.finalize();
        out.extend(chunk.iter().zip(b.iter()).map(|(c, k)| c ^ k));
        prev = chunk;
    }
    while out.last() == Some(&0) {
        out.pop();
    }
    Ok(out)
}

/// The inverse of [`decode_user_password`] (what a NAS does; for tests and tools).
pub fn encode_user_password(password: &[u8], secret: &[u8], request_authenticator: &[u8; 16]) -> Vec<u8> {
    let mut padded = password.to_vec();
    let pad = (16 - padded.len() % 16) % 16;
    padded.extend(std::iter::repeat_n(0, if padded.is_empty() { 16 } else { pad }));
    let mut out: Vec<u8> = Vec::with_capacity(padded.len());
    for (i, chunk) in padded.chunks(16).enumerate() {
        let mut h = Md5::new();
        h.update(secret);
        if i == 0 {
            h.update(request_authenticator);
        } else {
            h.update(&out[(i - 1) * 16..i * 16]);
        }
        let b = h.finalize();
        let enc: Vec<u8> = chunk.iter().zip(b.iter()).map(|(c, k)| c ^ k).collect();
        out.extend(enc);
    }
    out
}

/// Add a Message-Authenticator to a request (what a NAS does; for tests).
pub fn sign_request(mut req: Packet, secret: &[u8]) -> Vec<u8> {
    req.attributes.retain(|(t, _)| *t != MESSAGE_AUTHENTICATOR);
    req.attributes.push((MESSAGE_AUTHENTICATOR, vec![0; 16]));
    let mut raw = req.encode();
    let mac = hmac_md5(secret, &raw);
    let n = raw.len();
    raw[n - 16..].copy_from_slice(&mac);
    raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // RFC 2865 §7.1: NAS 192.168.1.16, secret "xyzzy5461", user "nemo",
    // password "arctangent", and the server's Access-Accept.
    const RFC_REQUEST: &str = "010000380f403f9473978057bd83d5cb98f4227a01066e656d6f02120dbe708d93d413ce3196e43f782a0aee0406c0a801100506000000 03";
    const RFC_ACCEPT: &str = "0200002686fe220e7624ba2a1005f6bf9b55e0b20606000000010f06000000000e06c0a80103";

    fn rfc_request() -> Vec<u8> {
        hex::decode(RFC_REQUEST.replace(' ', "")).unwrap()
    }

    #[test]
    fn rfc2865_example_request_decodes() {
        let raw = rfc_request();
        let p = Packet::decode(&raw).unwrap();
        assert_eq!(p.code, ACCESS_REQUEST);
        assert_eq!(p.identifier, 0);
        assert_eq!(p.attr(USER_NAME), Some(&b"nemo"[..]));
        let pw = decode_user_password(p.attr(USER_PASSWORD).unwrap(), b"xyzzy5461", &p.authenticator).unwrap();
        assert_eq!(pw, b"arctangent");
        assert_eq!(p.encode(), raw, "re-encoding is byte-identical");
        assert_eq!(
            encode_user_password(b"arctangent", b"xyzzy5461", &p.authenticator),
            p.attr(USER_PASSWORD).unwrap()
        );
    }

    #[test]
    fn rfc2865_example_response_authenticator() {
        let req = Packet::decode(&rfc_request()).unwrap();
        let accept = hex::decode(RFC_ACCEPT).unwrap();
        let expected: [u8; 16] = accept[4..20].try_into().unwrap();
        assert_eq!(
            response_authenticator(&accept, &req.authenticator, b"xyzzy5461"),
            expected
        );
        assert_ne!(response_authenticator(&accept, &req.authenticator, b"wrong"), expected);
    }

    #[test]
    fn message_authenticator_round_trip_and_tamper() {
        let mut req = Packet {
            code: ACCESS_REQUEST,
            identifier: 7,
            authenticator: [9; 16],
            attributes: vec![],
        };
        req.add(USER_NAME, b"alice");
        let raw = sign_request(req.clone(), b"s3cret");
        assert!(verify_request_message_authenticator(&raw, b"s3cret"));
        assert!(!verify_request_message_authenticator(&raw, b"other"));
        let mut tampered = raw.clone();
        tampered[HEADER_LEN + 2] ^= 1;
        assert!(!verify_request_message_authenticator(&tampered, b"s3cret"));
        // Missing entirely.
        assert!(!verify_request_message_authenticator(&req.encode(), b"s3cret"));
    }

    #[test]
    fn signed_response_verifies_both_ways() {
        let req = Packet {
            code: ACCESS_REQUEST,
            identifier: 3,
            authenticator: [5; 16],
            attributes: vec![(PROXY_STATE, b"px".to_vec())],
        };
        let mut resp = Packet::reply_to(&req, ACCESS_CHALLENGE);
        resp.add(STATE, b"abc");
        let raw = sign_response(resp, &req.authenticator, b"k");
        let p = Packet::decode(&raw).unwrap();
        assert_eq!(p.attr(PROXY_STATE), Some(&b"px"[..]));
        assert_eq!(p.authenticator, response_authenticator(&raw, &req.authenticator, b"k"));
        // The MA is computed with the request authenticator in the header.
        let mut check = raw.clone();
        check[4..20].copy_from_slice(&req.authenticator);
        assert!(verify_request_message_authenticator(&check, b"k"));
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(Packet::decode(&[1, 2, 3]), Err(PacketError::Truncated));
        let mut raw = rfc_request();
        raw[3] = 10;
        assert_eq!(Packet::decode(&raw), Err(PacketError::BadLength));
        let mut raw = rfc_request();
        raw[HEADER_LEN + 1] = 1; // attribute length below 2
        assert_eq!(Packet::decode(&raw), Err(PacketError::BadAttribute));
        assert_eq!(
            decode_user_password(&[0; 15], b"s", &[0; 16]),
            Err(PacketError::BadPassword)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(p) = Packet::decode(&bytes) {
                let _ = p.encode();
            }
            let _ = verify_request_message_authenticator(&bytes, b"k");
        }

        #[test]
        fn password_hiding_round_trips(pw in proptest::collection::vec(1u8..=255, 1..=128), auth in any::<[u8; 16]>()) {
            let hidden = encode_user_password(&pw, b"shared", &auth);
            prop_assert_eq!(decode_user_password(&hidden, b"shared", &auth).unwrap(), pw);
        }
    }
}
