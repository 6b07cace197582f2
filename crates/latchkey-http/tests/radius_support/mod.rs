//! An Access-Request as a NAS sends it, shared by the RADIUS tests.
#![allow(dead_code)]

use latchkey_radius::packet::{self, Packet};

/// A signed Access-Request with PAP `password`, answering `state` if given;
/// the NAS reports `calling_station` as the caller if given. Returns the
/// datagram and its Request Authenticator.
pub fn access_request(
    id: u8,
    user: &str,
    password: &str,
    secret: &str,
    state: Option<&[u8]>,
    calling_station: Option<&str>,
) -> (Vec<u8>, [u8; 16]) {
    let auth: [u8; 16] = rand::random();
    let mut p = Packet {
        code: packet::ACCESS_REQUEST,
        identifier: id,
        authenticator: auth,
        attributes: vec![],
    };
    p.add(packet::USER_NAME, user.as_bytes());
    p.add(
        packet::USER_PASSWORD,
        &packet::encode_user_password(password.as_bytes(), secret.as_bytes(), &auth),
    );
    if let Some(s) = state {
        p.add(packet::STATE, s);
    }
    if let Some(c) = calling_station {
        p.add(packet::CALLING_STATION_ID, c.as_bytes());
    }
    (packet::sign_request(p, secret.as_bytes()), auth)
}
