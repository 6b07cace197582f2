//! OpenID Connect provider, in process: code flow with PKCE, step-up,
//! max_age, code and refresh-token reuse, expiry, key rotation, logout.

mod federation_support;

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{header, Request};
use federation_support::{Env, Now, ISSUER};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use latchkey_service::Principal;
use serde_json::{json, Value};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "https://app.example.com/cb";

struct Client {
    id: String,
    secret: Option<String>,
}

async fn register(env: &Env, kind: &str) -> Client {
    let body = json!({ "name": "Mail", "type": kind, "redirect_uris": [REDIRECT], "post_logout_redirect_uris": ["https://app.example.com/bye"] });
    let (s, _, b) = env
        .send(
            Request::post("/api/v1/oidc/clients")
                .header(header::AUTHORIZATION, format!("Bearer {}", env.admin))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    Client {
        id: v["client_id"].as_str().unwrap().to_owned(),
        secret: v["client_secret"].as_str().map(str::to_owned),
    }
}

fn authorize_query(c: &Client, extra: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    s.append_pair("response_type", "code")
        .append_pair("client_id", &c.id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", "openid profile")
        .append_pair("state", "st-123")
        .append_pair("nonce", "n-456")
        .append_pair("code_challenge", CHALLENGE)
        .append_pair("code_challenge_method", "S256");
    for (k, v) in extra {
        s.append_pair(k, v);
    }
    format!("/oauth2/authorize?{}", s.finish())
}

/// GET a path with the session cookie; return (status, Location).
async fn get_with_cookie(env: &Env, path: &str, session: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut r = Request::get(path);
    if let Some(s) = session {
        r = r.header(header::COOKIE, format!("theme=dark; lk_session={s}"));
    }
    let (status, h, b) = env.send(r.body(Body::empty()).unwrap()).await;
    let loc = h
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, loc, b)
}

fn query_of(location: &str) -> HashMap<String, String> {
    let u = url::Url::parse(location)
        .or_else(|_| url::Url::parse(&format!("http://x{location}")))
        .unwrap();
    u.query_pairs().into_owned().collect()
}

async fn token(env: &Env, c: &Client, form: &[(&str, &str)]) -> (u16, Value) {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    s.append_pair("client_id", &c.id);
    if let Some(sec) = &c.secret {
        s.append_pair("client_secret", sec);
    }
    for (k, v) in form {
        s.append_pair(k, v);
    }
    let (status, _, b) = env
        .send(
            Request::post("/oauth2/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(s.finish()))
                .unwrap(),
        )
        .await;
    (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn code_for(env: &Env, c: &Client, session: &str) -> String {
    let (s, loc, _) = get_with_cookie(env, &authorize_query(c, &[]), Some(session)).await;
    assert_eq!(s, 302);
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let q = query_of(&loc);
    assert_eq!(q["state"], "st-123");
    assert_eq!(q["iss"], ISSUER);
    q["code"].clone()
}

async fn exchange(env: &Env, c: &Client, code: &str) -> (u16, Value) {
    token(
        env,
        c,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
}

async fn verify_id_token(env: &Env, c: &Client, id_token: &str) -> Value {
    let (s, _, b) = get_with_cookie(env, "/oauth2/jwks", None).await;
    assert_eq!(s, 200);
    let set: JwkSet = serde_json::from_slice(&b).unwrap();
    let kid = jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap();
    let key = DecodingKey::from_jwk(set.find(&kid).expect("kid published")).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[&c.id]);
    v.set_issuer(&[ISSUER]);
    // The ManualClock is in the future of the wall clock; check exp by hand.
    v.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &v)
        .expect("valid signature")
        .claims;
    assert!(claims["exp"].as_i64().unwrap() > env.clock.now_secs());
    claims
}

#[tokio::test]
async fn discovery_and_jwks() {
    let env = Env::new().await;
    let (s, _, b) = get_with_cookie(&env, "/.well-known/openid-configuration", None).await;
    assert_eq!(s, 200);
    let d: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(d["issuer"], ISSUER);
    assert_eq!(d["jwks_uri"], format!("{ISSUER}/oauth2/jwks"));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert!(d["acr_values_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("phishing_resistant")));
    let (s, _, b) = get_with_cookie(&env, "/oauth2/jwks", None).await;
    assert_eq!(s, 200);
    let set: Value = serde_json::from_slice(&b).unwrap();
    let k = &set["keys"][0];
    assert_eq!(
        (k["kty"].as_str(), k["crv"].as_str(), k["alg"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(k.get("d").is_none(), "private part never published");
}

#[tokio::test]
async fn code_flow_with_pkce_issues_signed_id_token_with_amr_and_acr() {
    let env = Env::new().await;
    let alice = env.user("alice").await;
    let c = register(&env, "public").await;
    let session = env.session(&alice, Some(&c.id)).await;
    let code = code_for(&env, &c, &session).await;
    let (s, t) = exchange(&env, &c, &code).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    let claims = verify_id_token(&env, &c, t["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["nonce"], "n-456");
    assert_eq!(claims["acr"], "mfa");
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(claims["preferred_username"], "alice");
    assert!(claims["auth_time"].as_i64().unwrap() <= env.clock.now_secs());

    // userinfo with the access token
    let (s, _, b) = env
        .send(
            Request::get("/oauth2/userinfo")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", t["access_token"].as_str().unwrap()),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, 200);
    let u: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(u["sub"], claims["sub"]);
    assert_eq!(u["name"], "alice Example");
    let (s, _, _) = env
        .send(
            Request::get("/oauth2/userinfo")
                .header(header::AUTHORIZATION, "Bearer nope")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn without_a_session_the_browser_is_sent_to_sign_in_and_back() {
    let env = Env::new().await;
    let bob = env.user("bob").await;
    let c = register(&env, "public").await;
    let (s, loc, _) = get_with_cookie(&env, &authorize_query(&c, &[]), None).await;
    assert_eq!(s, 302);
    assert!(loc.starts_with("/signin?"), "{loc}");
    let q = query_of(&loc);
    assert_eq!(q["prompt"], "login");
    let next = q["next"].clone();
    assert!(next.starts_with("/oauth2/authorize?") && !next.starts_with("//"));
    // Sign in (as the web UI would), then follow `next`.
    let session = env.session(&bob, Some(&c.id)).await;
    let (s, loc, _) = get_with_cookie(&env, &next, Some(&session)).await;
    assert_eq!(s, 302);
    assert!(query_of(&loc).contains_key("code"), "{loc}");
    // prompt=none without a session: an error for the client, no sign-in page.
    let (_, loc, _) = get_with_cookie(&env, &authorize_query(&c, &[("prompt", "none")]), None).await;
    assert_eq!(query_of(&loc)["error"], "login_required");
}

#[tokio::test]
async fn phishing_resistant_request_for_a_totp_user_steps_up_then_fails() {
    let env = Env::new().await;
    let carol = env.user("carol").await;
    let c = register(&env, "public").await;
    let session = env.session(&carol, Some(&c.id)).await;
    // (A session from the very same second as the request would count as fresh.)
    env.clock.advance(1);
    let (s, loc, _) = get_with_cookie(
        &env,
        &authorize_query(&c, &[("acr_values", "phishing_resistant")]),
        Some(&session),
    )
    .await;
    assert_eq!(s, 302);
    let q = query_of(&loc);
    assert!(loc.starts_with("/signin?"), "step-up goes to sign-in first: {loc}");
    assert_eq!(q["acr"], "phishing_resistant");
    assert_eq!(q["prompt"], "login");
    // The same old session coming back does not count as the fresh sign-in.
    let (_, loc2, _) = get_with_cookie(&env, &q["next"], Some(&session)).await;
    assert!(loc2.starts_with("/signin?"), "{loc2}");
    // A fresh sign-in that still only reaches mfa: the client gets the OIDC error.
    env.clock.advance(5);
    let fresh = env.session(&carol, Some(&c.id)).await;
    let (s, loc, _) = get_with_cookie(&env, &q["next"], Some(&fresh)).await;
    assert_eq!(s, 302);
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let e = query_of(&loc);
    assert_eq!(e["error"], "unmet_authentication_requirements");
    assert_eq!(e["state"], "st-123");
    assert!(!e.contains_key("code"));
    // acr_values=mfa is met by the same session.
    let (_, loc, _) = get_with_cookie(&env, &authorize_query(&c, &[("acr_values", "mfa")]), Some(&fresh)).await;
    assert!(query_of(&loc).contains_key("code"));
}

#[tokio::test]
async fn max_age_and_prompt_login_force_a_fresh_sign_in() {
    let env = Env::new().await;
    let dan = env.user("dan").await;
    let c = register(&env, "public").await;
    let session = env.session(&dan, None).await;
    env.clock.advance(600);
    let (_, loc, _) = get_with_cookie(&env, &authorize_query(&c, &[("max_age", "300")]), Some(&session)).await;
    assert!(loc.starts_with("/signin?"), "{loc}");
    let (_, loc, _) = get_with_cookie(&env, &authorize_query(&c, &[("max_age", "3600")]), Some(&session)).await;
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let (_, loc, _) = get_with_cookie(&env, &authorize_query(&c, &[("prompt", "login")]), Some(&session)).await;
    assert!(loc.starts_with("/signin?"), "{loc}");
    let next = query_of(&loc)["next"].clone();
    let fresh = env.session(&dan, None).await;
    let (_, loc, _) = get_with_cookie(&env, &next, Some(&fresh)).await;
    let code = query_of(&loc)["code"].clone();
    let (s, t) = exchange(&env, &c, &code).await;
    assert_eq!(s, 200);
    let claims = verify_id_token(&env, &c, t["id_token"].as_str().unwrap()).await;
    assert!(
        claims["auth_time"].as_i64().unwrap() >= env.clock.now_secs() - 31,
        "auth_time is the fresh sign-in"
    );
}

#[tokio::test]
async fn bad_authorization_requests() {
    let env = Env::new().await;
    let erin = env.user("erin").await;
    let c = register(&env, "public").await;
    let session = env.session(&erin, None).await;
    // Redirect URI mismatch: never redirected there; an error page instead.
    let q = authorize_query(&c, &[]).replace("app.example.com%2Fcb", "app.example.com%2Fcb%2Fextra");
    let (s, loc, b) = get_with_cookie(&env, &q, Some(&session)).await;
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    assert!(loc.is_empty());
    // Unknown client.
    let (s, _, _) = get_with_cookie(
        &env,
        "/oauth2/authorize?client_id=nope&redirect_uri=https%3A%2F%2Fx.example%2F",
        Some(&session),
    )
    .await;
    assert_eq!(s, 400);
    // Public client without PKCE.
    let no_pkce =
        authorize_query(&c, &[]).replace(&format!("&code_challenge={CHALLENGE}&code_challenge_method=S256"), "");
    let (_, loc, _) = get_with_cookie(&env, &no_pkce, Some(&session)).await;
    assert_eq!(query_of(&loc)["error"], "invalid_request");
    // plain PKCE refused.
    let plain = authorize_query(&c, &[]).replace("code_challenge_method=S256", "code_challenge_method=plain");
    let (_, loc, _) = get_with_cookie(&env, &plain, Some(&session)).await;
    assert_eq!(query_of(&loc)["error"], "invalid_request");
    // No openid scope.
    let (_, loc, _) = get_with_cookie(
        &env,
        &authorize_query(&c, &[]).replace("scope=openid+profile", "scope=profile"),
        Some(&session),
    )
    .await;
    assert_eq!(query_of(&loc)["error"], "invalid_scope");
}

#[tokio::test]
async fn pkce_mismatch_and_redirect_mismatch_at_the_token_endpoint() {
    let env = Env::new().await;
    let fay = env.user("fay").await;
    let c = register(&env, "public").await;
    let session = env.session(&fay, None).await;
    let code = code_for(&env, &c, &session).await;
    let (s, e) = token(
        &env,
        &c,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX"),
        ],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    let (s, e) = token(
        &env,
        &c,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://app.example.com/other"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    // The failed attempts did not spend the code.
    let (s, _) = exchange(&env, &c, &code).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn code_reuse_revokes_the_whole_grant() {
    let env = Env::new().await;
    let gus = env.user("gus").await;
    let c = register(&env, "public").await;
    let session = env.session(&gus, None).await;
    let code = code_for(&env, &c, &session).await;
    let (s, first) = exchange(&env, &c, &code).await;
    assert_eq!(s, 200);
    let (s, e) = exchange(&env, &c, &code).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    let rt = first["refresh_token"].as_str().unwrap();
    let (s, e) = token(&env, &c, &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "refresh token from the first exchange is dead"
    );
    let (s, _, _) = env
        .send(
            Request::get("/oauth2/userinfo")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", first["access_token"].as_str().unwrap()),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, 401, "access token from the first exchange is dead");
    let audit = env.app.store().audit_page(0, 1000, None).await.unwrap();
    assert!(audit
        .events
        .iter()
        .any(|e| e.action == "oidc.grant.revoke" && e.details.contains("code_reuse")));
}

#[tokio::test]
async fn expired_codes_are_refused() {
    let env = Env::new().await;
    let hal = env.user("hal").await;
    let c = register(&env, "public").await;
    let session = env.session(&hal, None).await;
    let code = code_for(&env, &c, &session).await;
    env.clock.advance(61);
    let (s, e) = exchange(&env, &c, &code).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    assert!(e["error_description"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn refresh_rotation_and_reuse_detection() {
    let env = Env::new().await;
    let ivy = env.user("ivy").await;
    let c = register(&env, "confidential").await;
    assert!(c.secret.as_deref().unwrap().starts_with("lk_cs_"));
    let session = env.session(&ivy, None).await;
    let code = code_for(&env, &c, &session).await;
    let (s, t1) = exchange(&env, &c, &code).await;
    assert_eq!(s, 200, "{t1}");
    let rt1 = t1["refresh_token"].as_str().unwrap().to_owned();
    let (s, t2) = token(&env, &c, &[("grant_type", "refresh_token"), ("refresh_token", &rt1)]).await;
    assert_eq!(s, 200, "{t2}");
    let rt2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2, "rotated");
    let claims = verify_id_token(&env, &c, t2["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["acr"], "mfa");
    // The old one again: reuse. The whole grant goes, the new token too.
    let (s, e) = token(&env, &c, &[("grant_type", "refresh_token"), ("refresh_token", &rt1)]).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    let (s, e) = token(&env, &c, &[("grant_type", "refresh_token"), ("refresh_token", &rt2)]).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
    // Wrong client secret.
    let wrong = Client {
        id: c.id.clone(),
        secret: Some("lk_cs_wrong".into()),
    };
    let (s, e) = token(
        &env,
        &wrong,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt2)],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (401, Some("invalid_client")));
}

#[tokio::test]
async fn key_rotation_keeps_old_keys_until_their_tokens_expire() {
    let env = Env::new().await;
    let jo = env.user("jo").await;
    let c = register(&env, "public").await;
    let session = env.session(&jo, None).await;
    let code = code_for(&env, &c, &session).await;
    let (_, t) = exchange(&env, &c, &code).await;
    let old_token = t["id_token"].as_str().unwrap().to_owned();
    let old_kid = jsonwebtoken::decode_header(&old_token).unwrap().kid.unwrap();
    let new_kid = env.app.rotate_signing_key(&Principal::Operator).await.unwrap();
    assert_ne!(old_kid, new_kid);
    verify_id_token(&env, &c, &old_token).await;
    let code = code_for(&env, &c, &session).await;
    let (_, t) = exchange(&env, &c, &code).await;
    assert_eq!(
        jsonwebtoken::decode_header(t["id_token"].as_str().unwrap())
            .unwrap()
            .kid
            .unwrap(),
        new_kid
    );
    env.clock.advance(601 + 300);
    let (_, _, b) = get_with_cookie(&env, "/oauth2/jwks", None).await;
    let set: JwkSet = serde_json::from_slice(&b).unwrap();
    assert!(
        set.find(&old_kid).is_none(),
        "retired key dropped after its tokens expired"
    );
    assert!(set.find(&new_kid).is_some());
    // The stored private key is sealed, not plain PKCS#8.
    let keys = env.app.store().published_signing_keys(0).await.unwrap();
    assert!(keys
        .iter()
        .all(|k| !k.private_sealed.windows(4).any(|w| w == [0x30, 0x81, 0x87, 0x02])));
}

#[tokio::test]
async fn rp_initiated_logout() {
    let env = Env::new().await;
    let kim = env.user("kim").await;
    let c = register(&env, "public").await;
    let session = env.session(&kim, None).await;
    let code = code_for(&env, &c, &session).await;
    let (_, t) = exchange(&env, &c, &code).await;
    let hint = t["id_token"].as_str().unwrap();
    let bad = format!("/oauth2/logout?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F");
    let (s, _, _) = get_with_cookie(&env, &bad, Some(&session)).await;
    assert_eq!(s, 400);
    let (s, _, _) = get_with_cookie(&env, "/oauth2/logout", Some(&session)).await;
    assert_eq!(s, 400, "id_token_hint required");
    let ok = format!(
        "/oauth2/logout?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Fapp.example.com%2Fbye&state=s1"
    );
    let (s, loc, _) = get_with_cookie(&env, &ok, Some(&session)).await;
    assert_eq!((s, loc.as_str()), (302, "https://app.example.com/bye?state=s1"));
    assert!(env.app.authenticate(&session).await.is_err(), "session ended");
    let (s, _) = token(
        &env,
        &c,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(s, 400, "grants of the session revoked");
}

#[tokio::test]
async fn client_registration_is_admin_only_and_validated() {
    let env = Env::new().await;
    let lee = env.user("lee").await;
    let session = env.session(&lee, None).await;
    let body = json!({ "name": "x", "type": "public", "redirect_uris": [REDIRECT] }).to_string();
    let (s, _, _) = env
        .send(
            Request::post("/api/v1/oidc/clients")
                .header(header::AUTHORIZATION, format!("Bearer {session}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
    assert_eq!(s, 403);
    for bad in [
        json!({ "name": "x", "type": "public", "redirect_uris": ["http://app.example.com/cb"] }),
        json!({ "name": "x", "type": "weird", "redirect_uris": [REDIRECT] }),
        json!({ "name": "x", "type": "public", "redirect_uris": [] }),
        json!({ "name": "x", "type": "public", "redirect_uris": [REDIRECT], "extra": 1 }),
    ] {
        let (s, h, _) = env
            .send(
                Request::post("/api/v1/oidc/clients")
                    .header(header::AUTHORIZATION, format!("Bearer {}", env.admin))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(bad.to_string()))
                    .unwrap(),
            )
            .await;
        assert!(s == 400 || s == 422, "{bad}: {s}");
        assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
    }
}

async fn app_policy(env: &Env, id: &str, app: &str, grant: Value, frequency: Option<i64>) {
    let mut p = json!({
        "id": id, "name": id, "state": "enabled",
        "assignments": { "users": { "include": ["*"] }, "applications": { "include": [app] } },
        "grant": grant
    });
    if let Some(f) = frequency {
        p["session"] = json!({ "sign_in_frequency_secs": f });
    }
    let (s, _, b) = env
        .send(
            Request::post("/api/v1/policies")
                .header(header::AUTHORIZATION, format!("Bearer {}", env.admin))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({ "policy": p, "force": true }).to_string()))
                .unwrap(),
        )
        .await;
    assert!(s == 200 || s == 201, "{s} {}", String::from_utf8_lossy(&b));
}

async fn phishing_resistant_for(env: &Env, client_id: &str) {
    let grant = json!([{ "require_strength": "phishing_resistant" }]);
    app_policy(env, "payroll-pr", client_id, grant, None).await;
}

#[tokio::test]
async fn a_reused_session_must_satisfy_the_clients_own_conditional_access() {
    let env = Env::new().await;
    let erin = env.user("erin").await;
    let payroll = register(&env, "public").await;
    let legacy = register(&env, "public").await;
    let wiki = register(&env, "public").await;
    phishing_resistant_for(&env, &payroll.id).await;
    app_policy(&env, "legacy-block", &legacy.id, json!(["block"]), None).await;
    app_policy(
        &env,
        "wiki-hourly",
        &wiki.id,
        json!([{ "require_strength": "mfa" }]),
        Some(600),
    )
    .await;
    // A password + TOTP session from the portal.
    let session = env.session(&erin, Some("web")).await;
    env.clock.advance(1);

    // Payroll wants phishing-resistant: the TOTP session is not enough, sign in again.
    let (s, loc, _) = get_with_cookie(&env, &authorize_query(&payroll, &[]), Some(&session)).await;
    assert_eq!(s, 302);
    assert!(loc.starts_with("/signin?"), "{loc}");
    assert_eq!(query_of(&loc)["prompt"], "login");
    // prompt=none cannot ask: login_required goes back to the client.
    let (_, loc, _) = get_with_cookie(&env, &authorize_query(&payroll, &[("prompt", "none")]), Some(&session)).await;
    assert_eq!(query_of(&loc)["error"], "login_required", "{loc}");

    // A blocked application answers access_denied, and the attempt is logged.
    let (_, loc, _) = get_with_cookie(&env, &authorize_query(&legacy, &[]), Some(&session)).await;
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let q = query_of(&loc);
    assert_eq!(q["error"], "access_denied");
    assert!(q["error_description"].contains("legacy-block"), "{q:?}");
    assert!(!q.contains_key("code"));
    let log = env.app.store().signin_history(0, 1000).await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.application.as_deref(), Some(legacy.id.as_str()));
    assert_eq!(last.result, "failure");

    // The wiki's sign-in frequency: within 10 minutes single sign-on works and
    // is logged as a sign-in to the wiki; after that a new sign-in is needed.
    let (_, loc, _) = get_with_cookie(&env, &authorize_query(&wiki, &[]), Some(&session)).await;
    assert!(query_of(&loc).contains_key("code"), "{loc}");
    let log = env.app.store().signin_history(0, 1000).await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.application.as_deref(), Some(wiki.id.as_str()));
    assert_eq!(last.result, "success");
    assert_eq!(last.methods, vec!["password", "totp"]);
    assert!(last.policy.as_ref().unwrap().to_string().contains("wiki-hourly"));
    env.clock.advance(600);
    let (_, loc, _) = get_with_cookie(&env, &authorize_query(&wiki, &[]), Some(&session)).await;
    assert!(loc.starts_with("/signin?"), "{loc}");
}

#[tokio::test]
async fn a_web_sign_in_that_continues_to_a_client_is_held_to_its_policies() {
    use latchkey_core::VerifyMethod;
    use latchkey_service::app::{Proof, SignInContext};
    let env = Env::new().await;
    let fay = env.user("fay").await;
    let payroll = register(&env, "public").await;
    phishing_resistant_for(&env, &payroll.id).await;
    let ctx = SignInContext {
        application: Some("web".into()),
        source_ip: Some("127.0.0.1".into()),
        continues_to: Some(payroll.id.clone()),
        ..Default::default()
    };
    // Known right after the password: none of fay's methods can satisfy payroll.
    let r = env.app.signin_start(&fay.name, Some(&fay.password), &ctx).await;
    let e = r
        .err()
        .expect("TOTP cannot satisfy payroll's phishing-resistant policy");
    assert!(
        matches!(e, latchkey_service::ServiceError::AuthenticationStrengthRequired(_)),
        "{e:?}"
    );
    assert!(format!("{e:?}").contains("payroll-pr"), "{e:?}");
    // The same sign-in for the portal alone completes.
    let portal = SignInContext {
        continues_to: None,
        ..ctx
    };
    let code = env.fresh_code(&fay);
    let f = env
        .app
        .signin_start(&fay.name, Some(&fay.password), &portal)
        .await
        .unwrap();
    let o = env
        .app
        .signin_verify(&f.flow_id, VerifyMethod::Totp, Proof::Code(code), &portal)
        .await
        .unwrap();
    assert!(o.session_token.is_some());
}

#[tokio::test]
async fn a_disabled_users_refresh_token_and_session_stop_within_the_request() {
    let env = Env::new().await;
    let leo = env.user("leo").await;
    let c = register(&env, "confidential").await;
    let session = env.session(&leo, None).await;
    let code = code_for(&env, &c, &session).await;
    let (s, t1) = exchange(&env, &c, &code).await;
    assert_eq!(s, 200, "{t1}");
    let rt = t1["refresh_token"].as_str().unwrap().to_owned();
    let (s, _, b) = env
        .send(
            Request::post("/api/v1/users/leo/disable")
                .header(header::AUTHORIZATION, format!("Bearer {}", env.admin))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({ "reason": "left the company" }).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["user"]["state"], "disabled");
    assert_eq!(v["revoked"]["oidc_grants"], 1, "{v}");
    // The refresh token no longer rotates.
    let (s, e) = token(&env, &c, &[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")), "{e}");
    // The web session no longer reaches the authorize endpoint: sign in again.
    let (s, loc, _) = get_with_cookie(&env, &authorize_query(&c, &[]), Some(&session)).await;
    assert_eq!(s, 302);
    assert!(
        loc.starts_with("/signin"),
        "sent to sign in, not back with a code: {loc}"
    );
}

/// PUT a password for `user` with a bearer token; the status.
async fn put_password(env: &Env, user: &str, bearer: &str) -> u16 {
    let (s, _, b) = env
        .send(
            Request::put(format!("/api/v1/users/{user}/password"))
                .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({ "password": "a brand new long passphrase" }).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert!(s < 500, "{}", String::from_utf8_lossy(&b));
    s
}

#[tokio::test]
async fn an_administrators_password_reset_ends_the_users_sessions_and_refresh_tokens() {
    let env = Env::new().await;
    let leo = env.user("leo").await;
    let c = register(&env, "confidential").await;
    let session = env.session(&leo, None).await;
    let code = code_for(&env, &c, &session).await;
    let (s, t1) = exchange(&env, &c, &code).await;
    assert_eq!(s, 200, "{t1}");
    let rt = t1["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(put_password(&env, "leo", &env.admin).await, 204);
    let (s, e) = token(&env, &c, &[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")), "{e}");
    let (s, loc, _) = get_with_cookie(&env, &authorize_query(&c, &[]), Some(&session)).await;
    assert_eq!(s, 302);
    assert!(loc.starts_with("/signin"), "sent to sign in again: {loc}");
}

#[tokio::test]
async fn removing_ones_own_method_ends_the_other_sessions_and_their_grants() {
    let env = Env::new().await;
    let leo = env.user("leo").await;
    let (codes_id, _) = env
        .app
        .regenerate_recovery_codes(&Principal::Operator, "leo", None)
        .await
        .unwrap();
    let c = register(&env, "confidential").await;
    let other = env.session(&leo, None).await;
    let here = env.session(&leo, None).await;
    let (_, t_other) = exchange(&env, &c, &code_for(&env, &c, &other).await).await;
    let (_, t_here) = exchange(&env, &c, &code_for(&env, &c, &here).await).await;
    let (s, _, b) = env
        .send(
            Request::delete(format!("/api/v1/users/leo/methods/{codes_id}"))
                .header(header::AUTHORIZATION, format!("Bearer {here}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, 204, "{}", String::from_utf8_lossy(&b));
    // The other session and the grant made from it are over...
    let rt = t_other["refresh_token"].as_str().unwrap();
    let (s, e) = token(&env, &c, &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")), "{e}");
    let (s, loc, _) = get_with_cookie(&env, &authorize_query(&c, &[]), Some(&other)).await;
    assert_eq!(s, 302);
    assert!(loc.starts_with("/signin"), "{loc}");
    // ...the one the change was made in, and its grant, carry on.
    let rt = t_here["refresh_token"].as_str().unwrap();
    let (s, t) = token(&env, &c, &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await;
    assert_eq!(s, 200, "{t}");
    let (s, loc, _) = get_with_cookie(&env, &authorize_query(&c, &[]), Some(&here)).await;
    assert_eq!(s, 302);
    assert!(loc.starts_with(REDIRECT), "{loc}");
}
