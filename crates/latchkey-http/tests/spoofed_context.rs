//! What a sign-in request says about its end user, and who is believed
//! (issue "Hold against insiders and outages", findings 9-11): a device id
//! proves nothing on its own, only a `relying_party` token speaks for the
//! end user's address, and wrong passwords from unfamiliar places do not
//! lock the user out of the places they sign in from (smart lock-out).

mod common;
mod federation_support;
mod radius_support;

use axum::http::{Method, StatusCode};
use common::{cheap_config, Harness, Resp, DEFAULT_PEER, PASSWORD};
use latchkey_core::softlock::LockPolicy;
use latchkey_radius::packet::{self, Packet};
use latchkey_service::app::Principal;
use serde_json::{json, Value};

async fn scoped_token(h: &Harness, name: &str, scope: &str) -> String {
    h.app
        .create_scoped_api_token(&Principal::Operator, name, &[scope], None)
        .await
        .expect("token")
        .1
}

async fn signin_as(h: &Harness, peer: [u8; 4], token: Option<&str>, body: Value) -> Resp {
    h.call_from(peer, Method::POST, "/api/v1/signin", token, Some(body))
        .await
}

/// The sign-in log's rows for `user`, newest first.
async fn signins_of(h: &Harness, user: &str) -> Vec<Value> {
    let r = h.get(&format!("/api/v1/signins?user={user}"), Some(&h.admin)).await;
    r.expect(StatusCode::OK);
    r.json["signins"].as_array().unwrap().clone()
}

#[tokio::test]
async fn finding_09_device_id_alone_is_not_compliant() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("finn", &[]).await;
    let r = h
        .post(
            "/api/v1/users/finn/devices",
            Some(&h.admin),
            json!({ "name": "laptop", "platform": "windows", "ownership": "corporate" }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    let laptop = r.json["id"].as_str().unwrap().to_owned();
    let mdm = scoped_token(&h, "intune", "mdm").await;
    h.put(
        &format!("/api/v1/devices/{laptop}/compliance"),
        Some(&mdm),
        json!({ "managed": true, "compliant": true }),
    )
    .await
    .expect(StatusCode::OK);
    h.require_compliant_device("finn").await;
    let with_device = json!({ "username": "finn", "password": PASSWORD, "context": { "device_id": laptop } });

    // Anyone who learned the compliant laptop's id: no device at all.
    signin_as(&h, DEFAULT_PEER, None, with_device.clone())
        .await
        .expect_problem(StatusCode::FORBIDDEN, "access-blocked");
    // Nor from the MDM's token or an administrator's automation: only a
    // relying party vouches for the device its user is on.
    signin_as(&h, DEFAULT_PEER, Some(&mdm), with_device.clone())
        .await
        .expect_problem(StatusCode::FORBIDDEN, "access-blocked");
    signin_as(&h, DEFAULT_PEER, Some(&h.admin), with_device.clone())
        .await
        .expect_problem(StatusCode::FORBIDDEN, "access-blocked");
    // The claim is recorded as unproven, not as the device.
    let rows = signins_of(&h, "finn").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert_eq!(row["reason"], "access_blocked", "{row}");
        assert!(row["device_id"].is_null(), "an unproven device is no device: {row}");
        assert_eq!(row["unproven_device_id"], laptop.as_str(), "{row}");
    }

    // A relying party vouching for it: the sign-in goes on, and the session
    // is the laptop's.
    let rp = scoped_token(&h, "portal", "relying_party").await;
    h.advance(30); // a TOTP step not spent by the enrolment
    let r = signin_as(&h, DEFAULT_PEER, Some(&rp), with_device.clone()).await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "second_factor_required", "{}", r.text());
    let flow = r.json["flow_id"].as_str().unwrap().to_owned();
    let r = h
        .call_from(
            DEFAULT_PEER,
            Method::POST,
            &format!("/api/v1/signin/{flow}/verify"),
            Some(&rp),
            Some(json!({ "method": "totp", "code": h.code(&secret), "context": { "device_id": laptop } })),
        )
        .await;
    r.expect(StatusCode::OK);
    assert_eq!(r.json["state"], "complete", "{}", r.text());
    let rows = signins_of(&h, "finn").await;
    assert_eq!(rows[0]["result"], "success");
    assert_eq!(rows[0]["device_id"], laptop.as_str());
    assert!(rows[0]["unproven_device_id"].is_null());

    // A relying party cannot vouch for someone else's device either: the
    // inventory still decides whose it is.
    h.user_with_totp("gina", &[]).await;
    let r = h
        .post(
            "/api/v1/users/gina/devices",
            Some(&h.admin),
            json!({ "name": "gina's", "platform": "windows", "ownership": "corporate" }),
        )
        .await;
    let ginas = r.json["id"].as_str().unwrap().to_owned();
    h.put(
        &format!("/api/v1/devices/{ginas}/compliance"),
        Some(&mdm),
        json!({ "managed": true, "compliant": true }),
    )
    .await
    .expect(StatusCode::OK);
    signin_as(
        &h,
        DEFAULT_PEER,
        Some(&rp),
        json!({ "username": "finn", "password": PASSWORD, "context": { "device_id": ginas } }),
    )
    .await
    .expect_problem(StatusCode::FORBIDDEN, "access-blocked");
}

#[tokio::test]
async fn finding_10_an_mdm_token_does_not_set_the_source_address() {
    let mut config = cheap_config();
    config.source_lock = LockPolicy {
        threshold: 3,
        base_secs: 60,
        max_secs: 3600,
    };
    let h = Harness::sqlite_with(config).await;
    let mdm = scoped_token(&h, "intune", "mdm").await;
    // The relying_party scope is made like any other, through the API.
    let r = h
        .post(
            "/api/v1/api-tokens",
            Some(&h.admin),
            json!({ "name": "portal", "scopes": ["relying_party"] }),
        )
        .await;
    r.expect(StatusCode::CREATED);
    assert_eq!(r.json["scopes"], json!(["relying_party"]));
    let rp = r.json["token"].as_str().unwrap().to_owned();
    h.post(
        "/api/v1/api-tokens",
        Some(&h.admin),
        json!({ "name": "x", "scopes": ["root"] }),
    )
    .await
    .expect_problem(StatusCode::BAD_REQUEST, "invalid-request");
    let listed = h.get("/api/v1/api-tokens", Some(&h.admin)).await;
    assert!(listed
        .json
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["scopes"] == json!(["relying_party"])));

    // A spray from one host through the mdm token, naming a new address at
    // every attempt: the host's own counter catches it.
    let spray = |i: u8, token: String| {
        let h = &h;
        async move {
            signin_as(
                h,
                DEFAULT_PEER,
                Some(&token),
                json!({ "username": format!("spray{i}"), "password": "Winter2026!",
                        "context": { "ip": format!("198.51.100.{i}") } }),
            )
            .await
        }
    };
    for i in 0..3 {
        spray(i, mdm.clone())
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    }
    let r = spray(3, mdm.clone()).await;
    r.expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
    let host = "203.0.113.7";
    for i in 0..3 {
        let rows = signins_of(&h, &format!("spray{i}")).await;
        assert_eq!(
            rows[0]["source_ip"], host,
            "the log names the host, not the claim: {:?}",
            rows[0]
        );
    }
    // An admin token's claim is not believed either.
    spray(4, h.admin.clone())
        .await
        .expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");

    // A relying party's word counts: each end user's address is its own source.
    for i in 10..14 {
        spray(i, rp.clone())
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
        let rows = signins_of(&h, &format!("spray{i}")).await;
        assert_eq!(rows[0]["source_ip"], format!("198.51.100.{i}"));
    }
}

const OFFICE: [u8; 4] = [10, 20, 0, 5];
const ATTACKER: [u8; 4] = [198, 51, 100, 66];
const ELSEWHERE: [u8; 4] = [192, 0, 2, 77];

async fn password_from(h: &Harness, peer: [u8; 4], user: &str, password: &str) -> Resp {
    signin_as(h, peer, None, json!({ "username": user, "password": password })).await
}

/// Password + TOTP from `peer`: a success the sign-in log keeps.
async fn full_signin_from(h: &Harness, peer: [u8; 4], user: &str, secret: &[u8]) {
    h.signin_mfa_from(peer, user, secret).await.expect(StatusCode::OK);
}

fn assert_locked(r: &Resp) {
    r.expect_problem(StatusCode::TOO_MANY_REQUESTS, "too-many-attempts");
    // The answer says what it always said: nothing about which counter.
    let text = r.text().to_ascii_lowercase();
    assert!(!text.contains("familiar"), "{text}");
}

#[tokio::test]
async fn finding_11_unfamiliar_failures_do_not_lock_out_a_familiar_source() {
    let h = Harness::sqlite().await;
    let secret = h.user_with_totp("admin2", &["admin"]).await;
    full_signin_from(&h, OFFICE, "admin2", &secret).await;

    // Anyone, anywhere: wrong passwords until the lock.
    for _ in 0..5 {
        password_from(&h, ATTACKER, "admin2", "guess")
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    }
    // The lock still stops guessing, even the right guess, from any
    // unfamiliar source.
    assert_locked(&password_from(&h, ATTACKER, "admin2", PASSWORD).await);
    assert_locked(&password_from(&h, ELSEWHERE, "admin2", PASSWORD).await);
    // The administrator, from the office they signed in from, is not locked out.
    full_signin_from(&h, OFFICE, "admin2", &secret).await;
    // And the attacker's counter was not reset by that success: one more
    // request an hour keeps it locked.
    h.advance(3600);
    password_from(&h, ATTACKER, "admin2", "guess")
        .await
        .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    assert_locked(&password_from(&h, ATTACKER, "admin2", PASSWORD).await);
    full_signin_from(&h, OFFICE, "admin2", &secret).await;

    // Guesses from a familiar source still lock familiar sources.
    for _ in 0..5 {
        password_from(&h, OFFICE, "admin2", "guess")
            .await
            .expect_problem(StatusCode::UNAUTHORIZED, "invalid-credentials");
    }
    assert_locked(&password_from(&h, OFFICE, "admin2", PASSWORD).await);

    // The helpdesk clears both counters.
    h.delete("/api/v1/users/admin2/lockout", Some(&h.admin))
        .await
        .expect(StatusCode::NO_CONTENT);
    full_signin_from(&h, ELSEWHERE, "admin2", &secret).await;

    // Familiarity lasts 30 days from the last success there.
    h.advance(31 * 86_400);
    for _ in 0..5 {
        password_from(&h, ATTACKER, "admin2", "guess").await;
    }
    assert_locked(&password_from(&h, OFFICE, "admin2", PASSWORD).await);
}

// ---- RADIUS: Calling-Station-Id is the source ----------------------------------

const SECRET: &str = "nas-shared-secret-0123";

async fn radius(
    env: &federation_support::Env,
    id: u8,
    user: &str,
    password: &str,
    state: Option<&[u8]>,
    station: &str,
) -> Packet {
    let (raw, _) = radius_support::access_request(id, user, password, SECRET, state, Some(station));
    let resp = latchkey_radius::handle(&env.app, "127.0.0.1".parse().unwrap(), &raw)
        .await
        .expect("handled")
        .expect("answered");
    Packet::decode(&resp).expect("well-formed")
}

#[tokio::test]
async fn finding_11_radius_unfamiliar_stations_do_not_lock_out_a_familiar_one() {
    let env = federation_support::Env::new().await;
    let u = env.user("vpnuser").await;
    env.app
        .add_radius_client(&Principal::Operator, "vpn", "127.0.0.1", SECRET)
        .await
        .unwrap();
    let home = "+4930123456";
    // A full VPN sign-in from the user's own line makes it familiar.
    let p = radius(&env, 1, &u.name, &u.password, None, home).await;
    assert_eq!(p.code, packet::ACCESS_CHALLENGE);
    let state = p.attr(packet::STATE).unwrap().to_vec();
    let code = env.fresh_code(&u);
    assert_eq!(
        radius(&env, 2, &u.name, &code, Some(&state), home).await.code,
        packet::ACCESS_ACCEPT
    );

    for i in 0..5u8 {
        let p = radius(&env, 10 + i, &u.name, "wrong", None, "00-11-22-33-44-55").await;
        assert_eq!(p.code, packet::ACCESS_REJECT);
    }
    let p = radius(&env, 20, &u.name, &u.password, None, "00-11-22-33-44-55").await;
    assert_eq!(p.code, packet::ACCESS_REJECT);
    assert!(String::from_utf8_lossy(p.attr(packet::REPLY_MESSAGE).unwrap()).contains("Too many"));
    let p = radius(&env, 21, &u.name, &u.password, None, "+4989000000").await;
    assert_eq!(
        p.code,
        packet::ACCESS_REJECT,
        "another unfamiliar station is locked too"
    );
    let p = radius(&env, 22, &u.name, &u.password, None, home).await;
    assert_eq!(
        p.code,
        packet::ACCESS_CHALLENGE,
        "the user's own line is not locked out"
    );
}
