//! The OpenID Connect provider's operations (the HTTP shell is in
//! [`http`]). The rules — what a request needs before a code is issued,
//! PKCE, code and refresh-token lifecycles — are in `latchkey_core::oidc`;
//! this file loads state, applies them, and persists with audit.
//!
//! Signing keys are ES256 (P-256), generated here, sealed at rest under the
//! master key and rotated: a retired key stays in the JWKS until every ID
//! token it signed has expired.

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use latchkey_core::oidc::{self as rules, AuthRequirements, AuthorizeDecision, ClientKind, SessionFacts};
use latchkey_core::secret::{ct_eq, random_token};
use latchkey_core::{AuthStrength, UserState};
use latchkey_store::{
    new_id, AuditEntry, CodeRecord, GrantRecord, OidcClientRecord, SessionRecord, SigningKeyRecord, UserRecord, WriteTx,
};
use p256::pkcs8::EncodePrivateKey;
use rand::rngs::OsRng;
use serde_json::json;
use std::collections::HashMap;

use crate::app::{App, Principal, SignInContext};
use crate::error::{ServiceError, ServiceResult};

pub const CLIENT_SECRET_PREFIX: &str = "lk_cs_";
const CODE_PREFIX: &str = "lk_oc_";
const ACCESS_PREFIX: &str = "lk_oat_";
const REFRESH_PREFIX: &str = "lk_ort_";
/// The authorize parameter that marks the way back from a sign-in we asked for.
pub const FRESH_AFTER_PARAM: &str = "lk_fresh_after";

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub code_secs: i64,
    pub access_token_secs: i64,
    pub id_token_secs: i64,
    pub refresh_token_secs: i64,
    /// A signing key older than this is replaced at its next use.
    pub key_rotation_secs: i64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            code_secs: rules::CODE_LIFETIME_SECS,
            access_token_secs: rules::ACCESS_TOKEN_LIFETIME_SECS,
            id_token_secs: rules::ID_TOKEN_LIFETIME_SECS,
            refresh_token_secs: rules::REFRESH_TOKEN_LIFETIME_SECS,
            key_rotation_secs: 30 * 24 * 3600,
        }
    }
}

/// An OAuth 2.0 / OIDC protocol error (RFC 6749 §5.2): these go to the
/// client in the protocol's own shape, not as problem documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
        }
    }
    fn grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }
}

/// Either a protocol error for the client, or our own failure.
#[derive(Debug)]
pub enum TokenError {
    OAuth(OAuthError),
    App(ServiceError),
}

impl From<ServiceError> for TokenError {
    fn from(e: ServiceError) -> Self {
        TokenError::App(e)
    }
}
impl From<OAuthError> for TokenError {
    fn from(e: OAuthError) -> Self {
        TokenError::OAuth(e)
    }
}
impl From<latchkey_store::StoreError> for TokenError {
    fn from(e: latchkey_store::StoreError) -> Self {
        TokenError::App(e.into())
    }
}

pub struct RegisteredClient {
    pub client: OidcClientRecord,
    /// Shown once, confidential clients only.
    pub secret: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    pub id_token: String,
    pub scope: String,
}

/// The parts of a token request the provider reads.
#[derive(Debug, Default)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

pub struct LogoutOutcome {
    pub redirect: Option<String>,
    pub signed_out: bool,
}

fn with_params(base: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(base) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        // Registered URIs were validated; fall back to plain appending.
        Err(_) => {
            let mut s = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in params {
                s.append_pair(k, v);
            }
            format!("{base}{}{}", if base.contains('?') { '&' } else { '?' }, s.finish())
        }
    }
}

impl App {
    pub fn issuer(&self) -> &str {
        &self.config.public_url
    }

    // ---- clients -------------------------------------------------------

    pub async fn register_oidc_client(
        &self,
        p: &Principal,
        name: &str,
        kind: &str,
        redirect_uris: Vec<String>,
        post_logout_redirect_uris: Vec<String>,
    ) -> ServiceResult<RegisteredClient> {
        p.require_admin()?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ServiceError::InvalidRequest(
                "client name must be 1-100 printable characters".into(),
            ));
        }
        let kind = ClientKind::parse(kind)?;
        if redirect_uris.is_empty() || redirect_uris.len() > 20 || post_logout_redirect_uris.len() > 20 {
            return Err(ServiceError::InvalidRequest(
                "register 1-20 redirect URIs (and at most 20 post-logout redirect URIs)".into(),
            ));
        }
        for u in redirect_uris.iter().chain(&post_logout_redirect_uris) {
            rules::validate_redirect_uri(u)?;
        }
        let secret = (kind == ClientKind::Confidential).then(|| random_token(&mut OsRng, CLIENT_SECRET_PREFIX));
        let client = OidcClientRecord {
            id: format!("lkc_{}", new_id().replace('-', "")),
            name: name.to_owned(),
            kind: kind.as_str().to_owned(),
            secret_hash: secret.as_ref().map(|s| self.hash("oidc client secret", s)),
            redirect_uris,
            post_logout_redirect_uris,
            created_by: p.actor(),
            created_at: self.now(),
        };
        let mut tx = self.store.write().await?;
        tx.insert_oidc_client(&client).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "oidc.client.create",
                format!("oidc_client:{}", client.id),
                json!({ "name": client.name, "type": client.kind, "redirect_uris": client.redirect_uris, "post_logout_redirect_uris": client.post_logout_redirect_uris }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(RegisteredClient { client, secret })
    }

    pub async fn list_oidc_clients(&self, p: &Principal) -> ServiceResult<Vec<OidcClientRecord>> {
        p.require_admin()?;
        Ok(self.store.list_oidc_clients().await?)
    }

    pub async fn remove_oidc_client(&self, p: &Principal, id: &str) -> ServiceResult<()> {
        p.require_admin()?;
        let mut tx = self.store.write().await?;
        if !tx.revoke_oidc_client(id, self.now()).await? {
            return Err(ServiceError::NotFound("OIDC client".into()));
        }
        tx.audit(
            &AuditEntry::new(p.actor(), "oidc.client.remove", format!("oidc_client:{id}"), json!({})),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- signing keys --------------------------------------------------

    /// The key that signs now, creating (first use) or rotating (too old) it.
    async fn signing_key(&self) -> ServiceResult<(String, EncodingKey)> {
        let now = self.now();
        let current = self.store.active_signing_key().await?;
        let key = match current {
            Some(k) if now - k.created_at < self.config.oidc.key_rotation_secs => k,
            _ => self.rotate_signing_key_as("system", false).await?,
        };
        let der = self.keys.open(&key.private_sealed, &key.kid)?;
        Ok((key.kid, EncodingKey::from_ec_der(&der)))
    }

    /// Replace the signing key (admin). The old key stays published until the
    /// ID tokens it signed have expired.
    pub async fn rotate_signing_key(&self, p: &Principal) -> ServiceResult<String> {
        p.require_admin()?;
        Ok(self.rotate_signing_key_as(&p.actor(), true).await?.kid)
    }

    async fn rotate_signing_key_as(&self, actor: &str, forced: bool) -> ServiceResult<SigningKeyRecord> {
        let now = self.now();
        let secret = p256::SecretKey::random(&mut OsRng);
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| ServiceError::Internal(format!("encoding a signing key: {e}")))?;
        let kid = new_id().replace('-', "")[..16].to_owned();
        let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_ec_der(der.as_bytes()), Algorithm::ES256)
            .map_err(|e| ServiceError::Internal(format!("public JWK: {e}")))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        let rec = SigningKeyRecord {
            kid: kid.clone(),
            alg: "ES256".into(),
            private_sealed: self.keys.seal(der.as_bytes(), &kid),
            public_jwk: serde_json::to_string(&jwk).expect("JWK serialises"),
            created_at: now,
            retired_at: None,
            publish_until: None,
        };
        let mut tx = self.store.write().await?;
        if !forced {
            // Another node may have rotated while we waited for the lock.
            if let Some(k) = tx.active_signing_key().await? {
                if now - k.created_at < self.config.oidc.key_rotation_secs {
                    return Ok(k);
                }
            }
        }
        tx.insert_signing_key(&rec).await?;
        // Tokens signed a moment ago must still verify: keep the old key
        // published for an ID token's lifetime plus clock skew.
        let retired = tx
            .retire_signing_keys(&kid, now, now + self.config.oidc.id_token_secs + 300)
            .await?;
        tx.audit(
            &AuditEntry::new(
                actor,
                "oidc.key.rotate",
                format!("oidc_key:{kid}"),
                json!({ "alg": "ES256", "retired": retired }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(rec)
    }

    pub async fn jwks(&self) -> ServiceResult<JwkSet> {
        let mut keys = self.store.published_signing_keys(self.now()).await?;
        if keys.is_empty() {
            self.signing_key().await?;
            keys = self.store.published_signing_keys(self.now()).await?;
        }
        let keys = keys
            .iter()
            .map(|k| serde_json::from_str::<Jwk>(&k.public_jwk))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServiceError::Internal(format!("stored JWK: {e}")))?;
        Ok(JwkSet { keys })
    }

    /// Verify an ID token we issued (signature, issuer; expiry not required:
    /// an `id_token_hint` is often expired). Returns its claims.
    pub async fn verify_own_id_token(&self, token: &str) -> ServiceResult<serde_json::Value> {
        let bad = || ServiceError::InvalidRequest("id_token_hint is not an ID token issued here".into());
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad())?;
        let kid = header.kid.ok_or_else(bad)?;
        let set = self.jwks().await?;
        let jwk = set.find(&kid).ok_or_else(bad)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| bad())?;
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        v.set_issuer(&[self.issuer()]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|_| bad())?;
        Ok(data.claims)
    }

    // ---- authorization endpoint ----------------------------------------

    /// `GET /oauth2/authorize`. `Err` means the request cannot be answered
    /// at the client's redirect URI (unknown client, unregistered redirect
    /// URI): the browser gets an error page. Otherwise: the URL to redirect to.
    pub async fn oidc_authorize(
        &self,
        q: &HashMap<String, String>,
        session_token: Option<&str>,
        source_ip: Option<String>,
    ) -> ServiceResult<String> {
        let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let client_id = get("client_id").ok_or_else(|| ServiceError::InvalidRequest("client_id is missing".into()))?;
        let client = self
            .store
            .oidc_client(client_id)
            .await?
            .ok_or_else(|| ServiceError::InvalidRequest("unknown client_id".into()))?;
        let redirect_uri =
            get("redirect_uri").ok_or_else(|| ServiceError::InvalidRequest("redirect_uri is missing".into()))?;
        // Exact string match: no prefix, no normalisation (RFC 9700 §4.1.3).
        if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
            return Err(ServiceError::InvalidRequest(
                "redirect_uri is not registered for this client".into(),
            ));
        }
        let state = get("state");
        let iss = self.issuer().to_owned();
        let refuse = |e: OAuthError| {
            let mut ps = vec![("error", e.error), ("error_description", e.description.as_str())];
            if let Some(s) = state {
                ps.push(("state", s));
            }
            ps.push(("iss", iss.as_str()));
            Ok(with_params(redirect_uri, &ps))
        };
        if get("request").is_some() || get("request_uri").is_some() {
            return refuse(OAuthError::new(
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        if get("response_type") != Some("code") {
            return refuse(OAuthError::new(
                "unsupported_response_type",
                "only the authorization code flow (response_type=code) is supported",
            ));
        }
        let scope = get("scope").unwrap_or("");
        if !scope.split(' ').any(|s| s == "openid") {
            return refuse(OAuthError::new("invalid_scope", "scope must include openid"));
        }
        let challenge = get("code_challenge");
        match challenge {
            Some(c) => {
                if let Err(e) = rules::validate_code_challenge(c, get("code_challenge_method")) {
                    return refuse(OAuthError::new("invalid_request", e.to_string()));
                }
            }
            None if client.kind == ClientKind::Public.as_str() => {
                return refuse(OAuthError::new(
                    "invalid_request",
                    "public clients must use PKCE (code_challenge with S256)",
                ));
            }
            None => {}
        }
        let prompts: Vec<&str> = get("prompt")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .collect();
        if prompts.contains(&"none") && prompts.len() > 1 {
            return refuse(OAuthError::new("invalid_request", "prompt=none cannot be combined"));
        }
        let max_age = match get("max_age").map(str::parse::<i64>) {
            None => None,
            Some(Ok(v)) if v >= 0 => Some(v),
            Some(_) => {
                return refuse(OAuthError::new(
                    "invalid_request",
                    "max_age must be a non-negative integer",
                ))
            }
        };
        let now = self.now();
        let req = AuthRequirements {
            prompt_login: prompts.contains(&"login"),
            prompt_none: prompts.contains(&"none"),
            max_age,
            acr: rules::required_strength(get("acr_values")),
            fresh_after: get(FRESH_AFTER_PARAM).and_then(|v| v.parse().ok()),
        };
        let session = match session_token {
            Some(t) => match self.authenticate(t).await {
                Ok(Principal::Session { session, user }) => Some((session, user)),
                _ => None,
            },
            None => None,
        };
        let facts = session.as_ref().map(|(s, _)| SessionFacts {
            authenticated_at: s.authenticated_at,
            acr: rules::parse_strength(&s.acr),
        });
        let mut decision = rules::decide_authorize(&req, facts, now);
        if let (AuthorizeDecision::Issue, Some((s, user))) = (&decision, &session) {
            decision = self.client_access(&client, s, user, &req, source_ip).await?;
        }
        match decision {
            AuthorizeDecision::Refuse { error, description } => refuse(OAuthError::new(error, description)),
            AuthorizeDecision::SignIn { acr } => {
                // Come back to this very request, marked so that a session
                // begun from now on counts as the fresh sign-in (no loop).
                let mut back = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in q {
                    if k != FRESH_AFTER_PARAM {
                        back.append_pair(k, v);
                    }
                }
                back.append_pair(FRESH_AFTER_PARAM, &now.to_string());
                let next = format!("/oauth2/authorize?{}", back.finish());
                let mut s = url::form_urlencoded::Serializer::new(String::new());
                s.append_pair("next", &next).append_pair("prompt", "login");
                if let Some(a) = acr {
                    s.append_pair("acr", a.as_str());
                }
                Ok(format!("/signin?{}", s.finish()))
            }
            AuthorizeDecision::Issue => {
                let (session, user) = session.expect("issuing implies a session");
                let code = random_token(&mut OsRng, CODE_PREFIX);
                let grant = GrantRecord {
                    id: new_id(),
                    client_id: client.id.clone(),
                    user_id: user.id.clone(),
                    session_id: Some(session.id.clone()),
                    scope: scope.to_owned(),
                    nonce: get("nonce").map(str::to_owned),
                    auth_time: session.authenticated_at,
                    amr: session.amr.clone(),
                    acr: session.acr.clone(),
                    created_at: now,
                    revoked_at: None,
                };
                let mut tx = self.store.write().await?;
                tx.insert_oidc_grant(&grant).await?;
                tx.insert_oidc_code(
                    &self.hash("oidc code", &code),
                    &CodeRecord {
                        grant_id: grant.id.clone(),
                        redirect_uri: redirect_uri.to_owned(),
                        code_challenge: challenge.map(str::to_owned),
                        expires_at: now + self.config.oidc.code_secs,
                        used_at: None,
                    },
                )
                .await?;
                tx.audit(
                    &AuditEntry::new(
                        format!("user:{}", user.username),
                        "oidc.authorize",
                        format!("user:{}", user.username),
                        json!({ "client_id": client.id, "grant_id": grant.id, "scope": scope, "acr": grant.acr, "amr": grant.amr }),
                    ),
                    self.clock.now_ms(),
                )
                .await?;
                tx.commit().await?;
                let mut ps = vec![("code", code.as_str())];
                if let Some(s) = state {
                    ps.push(("state", s));
                }
                ps.push(("iss", iss.as_str()));
                Ok(with_params(redirect_uri, &ps))
            }
        }
    }

    /// Conditional access for this client, checked against the session
    /// that would be reused: the session was made for another application
    /// (or with older policies), so this client's policies must hold too. A
    /// fresh sign-in begun for this request already went through them (the
    /// web flow evaluates the client it continues to); only a block is
    /// re-checked then.
    async fn client_access(
        &self,
        client: &OidcClientRecord,
        session: &SessionRecord,
        user: &UserRecord,
        req: &AuthRequirements,
        source_ip: Option<String>,
    ) -> ServiceResult<AuthorizeDecision> {
        let (origin_ip, device_id) = self.store.session_origin(&session.id).await?;
        let ctx = SignInContext {
            application: Some(client.id.clone()),
            source_ip: source_ip.or(origin_ip),
            device: device_id.map(latchkey_core::device::DeviceClaim::recorded),
            unproven_device_id: None,
            continues_to: None,
        };
        let d = self.access_decision(user, &ctx).await?;
        if d.is_blocked() {
            self.log_policy_failure(user, &ctx, "access_blocked", &d).await?;
            return Ok(AuthorizeDecision::Refuse {
                error: "access_denied",
                description: format!(
                    "conditional access blocks sign-in to this application: {}",
                    d.block_reason().unwrap_or_default()
                ),
            });
        }
        let now = self.now();
        let fresh = req.fresh_after.is_some_and(|after| session.authenticated_at >= after);
        if fresh {
            return Ok(AuthorizeDecision::Issue);
        }
        let methods = crate::policy::steps(&session.methods);
        let too_old = d
            .sign_in_frequency_secs
            .is_some_and(|f| now - session.authenticated_at > f);
        if too_old || !d.strengths_satisfied(&methods, None) {
            return Ok(if req.prompt_none {
                AuthorizeDecision::Refuse {
                    error: "login_required",
                    description:
                        "this application's policies need a new sign-in and prompt=none forbids asking for one".into(),
                }
            } else {
                AuthorizeDecision::SignIn { acr: req.acr }
            });
        }
        // Single sign-on is a sign-in to this application: log it with the decision.
        self.log_session_signin(user, &ctx, session, Some("session_reused"), Some(&d))
            .await?;
        Ok(AuthorizeDecision::Issue)
    }

    // ---- token endpoint ------------------------------------------------

    /// Authenticate the client of a token request (RFC 6749 §2.3).
    async fn token_client(&self, r: &TokenRequest) -> Result<OidcClientRecord, TokenError> {
        let invalid = || OAuthError::new("invalid_client", "client authentication failed");
        let id = r.client_id.as_deref().ok_or_else(invalid)?;
        let client = self.store.oidc_client(id).await?.ok_or_else(invalid)?;
        match (&client.secret_hash, &r.client_secret) {
            (Some(h), Some(s)) if ct_eq(h, &self.hash("oidc client secret", s)) => Ok(client),
            (None, None) => Ok(client),
            _ => Err(invalid().into()),
        }
    }

    pub async fn oidc_token(&self, r: &TokenRequest) -> Result<TokenResponse, TokenError> {
        let client = self.token_client(r).await?;
        match r.grant_type.as_deref() {
            Some("authorization_code") => self.redeem_code(&client, r).await,
            Some("refresh_token") => self.refresh(&client, r).await,
            _ => Err(OAuthError::new(
                "unsupported_grant_type",
                "grant_type must be authorization_code or refresh_token",
            )
            .into()),
        }
    }

    /// Revoke a grant in its own audited transaction (reuse detected).
    async fn revoke_grant(&self, grant: &GrantRecord, reason: &str) -> ServiceResult<()> {
        let mut tx = self.store.write().await?;
        let revoked = tx.revoke_oidc_grant(&grant.id, reason, self.now()).await?;
        tx.audit(
            &AuditEntry::new(
                format!("oidc_client:{}", grant.client_id),
                "oidc.grant.revoke",
                format!("user_id:{}", grant.user_id),
                json!({ "grant_id": grant.id, "reason": reason, "already_revoked": !revoked }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(grant = %grant.id, client = %grant.client_id, reason, "OIDC grant revoked");
        Ok(())
    }

    async fn grant_user(&self, grant: &GrantRecord) -> Result<UserRecord, TokenError> {
        self.store
            .user_by_id(&grant.user_id)
            .await?
            .filter(|u| u.state == UserState::Active)
            .ok_or_else(|| OAuthError::grant("the user is no longer active").into())
    }

    async fn redeem_code(&self, client: &OidcClientRecord, r: &TokenRequest) -> Result<TokenResponse, TokenError> {
        let now = self.now();
        let code = r
            .code
            .as_deref()
            .ok_or_else(|| OAuthError::new("invalid_request", "code is missing"))?;
        let code_hash = self.hash("oidc code", code);
        let rec = self
            .store
            .oidc_code(&code_hash)
            .await?
            .ok_or_else(|| OAuthError::grant("unknown authorization code"))?;
        let grant = self
            .store
            .oidc_grant(&rec.grant_id)
            .await?
            .ok_or_else(|| OAuthError::grant("unknown authorization code"))?;
        if grant.client_id != client.id {
            return Err(OAuthError::grant("the code was issued to another client").into());
        }
        if rec.used_at.is_some() {
            // A second redemption means the code leaked: whatever was issued
            // for it can no longer be trusted (RFC 6749 §4.1.2).
            self.revoke_grant(&grant, "code_reuse").await?;
            return Err(OAuthError::grant("the code was already used; every token issued for it is revoked").into());
        }
        if grant.revoked_at.is_some() {
            return Err(OAuthError::grant("the grant was revoked").into());
        }
        if rec.expires_at <= now {
            return Err(OAuthError::grant("the code has expired").into());
        }
        if r.redirect_uri.as_deref() != Some(rec.redirect_uri.as_str()) {
            return Err(OAuthError::grant("redirect_uri does not match the authorization request").into());
        }
        match (&rec.code_challenge, &r.code_verifier) {
            (Some(c), Some(v)) if rules::pkce_matches(v, c) => {}
            (None, None) => {}
            (Some(_), _) => return Err(OAuthError::grant("PKCE verification failed").into()),
            (None, Some(_)) => {
                return Err(OAuthError::grant("code_verifier sent for a code issued without PKCE").into())
            }
        }
        let user = self.grant_user(&grant).await?;
        let signing = self.signing_key().await?;
        let mut tx = self.store.write().await?;
        if !tx.redeem_oidc_code(&code_hash, now).await? {
            drop(tx);
            self.revoke_grant(&grant, "code_reuse").await?;
            return Err(OAuthError::grant("the code was already used; every token issued for it is revoked").into());
        }
        let resp = self
            .issue_tokens(&mut tx, &grant, &user, grant.nonce.as_deref(), signing)
            .await?;
        tx.audit(
            &AuditEntry::new(
                format!("oidc_client:{}", client.id),
                "oidc.token.issue",
                format!("user:{}", user.username),
                json!({ "grant_id": grant.id, "grant_type": "authorization_code" }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(resp)
    }

    async fn refresh(&self, client: &OidcClientRecord, r: &TokenRequest) -> Result<TokenResponse, TokenError> {
        let now = self.now();
        let token = r
            .refresh_token
            .as_deref()
            .ok_or_else(|| OAuthError::new("invalid_request", "refresh_token is missing"))?;
        let hash = self.hash("oidc token", token);
        let rec = self
            .store
            .oidc_token(&hash)
            .await?
            .filter(|t| t.kind == "refresh")
            .ok_or_else(|| OAuthError::grant("unknown refresh token"))?;
        let grant = self
            .store
            .oidc_grant(&rec.grant_id)
            .await?
            .ok_or_else(|| OAuthError::grant("unknown refresh token"))?;
        if grant.client_id != client.id {
            return Err(OAuthError::grant("the refresh token was issued to another client").into());
        }
        if grant.revoked_at.is_some() {
            return Err(OAuthError::grant("the grant was revoked").into());
        }
        if rec.used_at.is_some() {
            // A rotated token came back: one copy was stolen. We cannot tell
            // which party is honest, so both lose the grant (RFC 9700 §4.14.2).
            self.revoke_grant(&grant, "refresh_token_reuse").await?;
            return Err(OAuthError::grant("the refresh token was already used; the grant is revoked").into());
        }
        if rec.expires_at <= now {
            return Err(OAuthError::grant("the refresh token has expired").into());
        }
        let user = self.grant_user(&grant).await?;
        let signing = self.signing_key().await?;
        let mut tx = self.store.write().await?;
        if !tx.use_refresh_token(&hash, now).await? {
            drop(tx);
            self.revoke_grant(&grant, "refresh_token_reuse").await?;
            return Err(OAuthError::grant("the refresh token was already used; the grant is revoked").into());
        }
        let resp = self.issue_tokens(&mut tx, &grant, &user, None, signing).await?;
        tx.audit(
            &AuditEntry::new(
                format!("oidc_client:{}", client.id),
                "oidc.token.refresh",
                format!("user:{}", user.username),
                json!({ "grant_id": grant.id }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(resp)
    }

    async fn issue_tokens(
        &self,
        tx: &mut WriteTx,
        grant: &GrantRecord,
        user: &UserRecord,
        nonce: Option<&str>,
        (kid, key): (String, EncodingKey),
    ) -> ServiceResult<TokenResponse> {
        let now = self.now();
        let c = &self.config.oidc;
        let access = random_token(&mut OsRng, ACCESS_PREFIX);
        let refresh = random_token(&mut OsRng, REFRESH_PREFIX);
        tx.insert_oidc_token(
            &self.hash("oidc token", &access),
            &grant.id,
            "access",
            now,
            now + c.access_token_secs,
        )
        .await?;
        tx.insert_oidc_token(
            &self.hash("oidc token", &refresh),
            &grant.id,
            "refresh",
            now,
            now + c.refresh_token_secs,
        )
        .await?;
        let mut claims = json!({
            "iss": self.issuer(),
            "sub": user.id,
            "aud": grant.client_id,
            "azp": grant.client_id,
            "iat": now,
            "exp": now + c.id_token_secs,
            "auth_time": grant.auth_time,
            "amr": grant.amr,
            "acr": grant.acr,
            "sid": grant.session_id,
            "preferred_username": user.username,
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        if grant.scope.split(' ').any(|s| s == "profile") {
            claims["name"] = json!(user.display_name);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid);
        let id_token = jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|e| ServiceError::Internal(format!("signing an ID token: {e}")))?;
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: c.access_token_secs,
            refresh_token: refresh,
            id_token,
            scope: grant.scope.clone(),
        })
    }

    // ---- userinfo and logout ------------------------------------------

    /// Claims for a live access token; `None` when the token is not valid.
    pub async fn oidc_userinfo(&self, access_token: &str) -> ServiceResult<Option<serde_json::Value>> {
        let now = self.now();
        let Some(t) = self.store.oidc_token(&self.hash("oidc token", access_token)).await? else {
            return Ok(None);
        };
        if t.kind != "access" || t.expires_at <= now {
            return Ok(None);
        }
        let Some(grant) = self
            .store
            .oidc_grant(&t.grant_id)
            .await?
            .filter(|g| g.revoked_at.is_none())
        else {
            return Ok(None);
        };
        let Some(user) = self
            .store
            .user_by_id(&grant.user_id)
            .await?
            .filter(|u| u.state == UserState::Active)
        else {
            return Ok(None);
        };
        let mut v = json!({ "sub": user.id, "preferred_username": user.username });
        if grant.scope.split(' ').any(|s| s == "profile") {
            v["name"] = json!(user.display_name);
            v["groups"] = json!(user.groups);
            if let Some(d) = &user.department {
                v["department"] = json!(d);
            }
        }
        Ok(Some(v))
    }

    /// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0). The
    /// `id_token_hint` is required: it names the client (whose registered
    /// post-logout URIs are the only allowed targets) and the user, so a
    /// cross-site link cannot sign anyone out.
    pub async fn oidc_logout(
        &self,
        q: &HashMap<String, String>,
        session_token: Option<&str>,
    ) -> ServiceResult<LogoutOutcome> {
        let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let hint =
            get("id_token_hint").ok_or_else(|| ServiceError::InvalidRequest("id_token_hint is required".into()))?;
        let claims = self.verify_own_id_token(hint).await?;
        let aud = claims["aud"].as_str().unwrap_or_default().to_owned();
        if let Some(c) = get("client_id") {
            if c != aud {
                return Err(ServiceError::InvalidRequest(
                    "client_id does not match the id_token_hint".into(),
                ));
            }
        }
        let client =
            self.store.oidc_client(&aud).await?.ok_or_else(|| {
                ServiceError::InvalidRequest("the client of this id_token_hint no longer exists".into())
            })?;
        let redirect = match get("post_logout_redirect_uri") {
            Some(u) if client.post_logout_redirect_uris.iter().any(|r| r == u) => {
                let mut ps = vec![];
                if let Some(s) = get("state") {
                    ps.push(("state", s));
                }
                Some(if ps.is_empty() {
                    u.to_owned()
                } else {
                    with_params(u, &ps)
                })
            }
            Some(_) => {
                return Err(ServiceError::InvalidRequest(
                    "post_logout_redirect_uri is not registered for this client".into(),
                ))
            }
            None => None,
        };
        let mut signed_out = false;
        if let Some(t) = session_token {
            if let Ok(Principal::Session { session, user }) = self.authenticate(t).await {
                if claims["sub"].as_str() == Some(user.id.as_str()) {
                    let now = self.now();
                    let mut tx = self.store.write().await?;
                    tx.revoke_session(&session.id, now).await?;
                    let grants = tx.revoke_oidc_grants_of_session(&session.id, now).await?;
                    tx.audit(
                        &AuditEntry::new(
                            format!("user:{}", user.username),
                            "session.revoke",
                            format!("user:{}", user.username),
                            json!({ "session_id": session.id, "via": "oidc_logout", "client_id": client.id, "grants_revoked": grants }),
                        ),
                        self.clock.now_ms(),
                    )
                    .await?;
                    tx.commit().await?;
                    signed_out = true;
                }
            }
        }
        Ok(LogoutOutcome { redirect, signed_out })
    }
}

/// The strengths the provider can be asked for.
pub fn acr_values_supported() -> Vec<&'static str> {
    [
        AuthStrength::Mfa,
        AuthStrength::PasswordlessMfa,
        AuthStrength::PhishingResistant,
    ]
    .iter()
    .map(|s| s.as_str())
    .collect()
}
