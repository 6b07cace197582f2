#![no_main]
//! Any datagram: decoding, re-encoding, authenticator checks and password
//! recovery must never panic.
use latchkey_radius::packet::{self, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        let _ = p.encode();
        if let Some(pw) = p.attr(packet::USER_PASSWORD) {
            let _ = packet::decode_user_password(pw, b"secret", &p.authenticator);
        }
    }
    let _ = packet::verify_request_message_authenticator(data, b"secret");
});
