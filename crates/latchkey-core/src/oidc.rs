//! OpenID Connect provider rules: what an authorization request needs before
//! a code may be issued, PKCE, redirect-URI registration, and the life of
//! codes and refresh tokens.
//!
//! Authorization (per request, given the browser's session if any):
//! ```text
//!                 ┌─ no session, prompt=login, too old for max_age ─▶ SignIn{acr}  (redirect to /signin,
//!  AuthorizeReq ──┤                                                    fresh_after = now)
//!                 ├─ acr below acr_values, not yet re-signed-in ─────▶ SignIn{acr}
//!                 ├─ acr below acr_values after a fresh sign-in ─────▶ Refuse(unmet_authentication_requirements)
//!                 ├─ sign-in needed but prompt=none ─────────────────▶ Refuse(login_required)
//!                 └─ otherwise ──────────────────────────────────────▶ Issue (code bound to client,
//!                                                                       redirect_uri, PKCE challenge)
//! ```
//! A code: `Issued ──redeemed once──▶ Redeemed`; `Issued ──lifetime──▶ Expired`;
//! redeeming a `Redeemed` code revokes the whole grant (RFC 6749 §4.1.2).
//! A refresh token: `Active ──used──▶ Rotated` (a new token is issued);
//! presenting a `Rotated` token again revokes the whole grant (RFC 9700 §4.14).

use sha2::{Digest, Sha256};

use crate::strength::AuthStrength;
use crate::CoreError;

/// Lifetimes. Codes are short: they only cross one browser redirect.
pub const CODE_LIFETIME_SECS: i64 = 60;
pub const ACCESS_TOKEN_LIFETIME_SECS: i64 = 10 * 60;
pub const ID_TOKEN_LIFETIME_SECS: i64 = 10 * 60;
pub const REFRESH_TOKEN_LIFETIME_SECS: i64 = 30 * 24 * 3600;

/// Confidential clients authenticate with a secret; public clients (SPAs,
/// native apps) cannot keep one and must prove possession with PKCE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Confidential,
    Public,
}

impl ClientKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientKind::Confidential => "confidential",
            ClientKind::Public => "public",
        }
    }
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "confidential" => Ok(ClientKind::Confidential),
            "public" => Ok(ClientKind::Public),
            other => Err(CoreError::InvalidInput(format!(
                "client type must be 'confidential' or 'public', not '{other}'"
            ))),
        }
    }
}

/// Redirect URIs are matched exactly, so they must be registered exactly:
/// absolute, no fragment; `https`, `http` only to a loopback host, or a
/// private-use scheme with a dot (RFC 8252 §7.1, e.g. `com.example.app:/cb`).
pub fn validate_redirect_uri(uri: &str) -> Result<(), CoreError> {
    let bad = |why: &str| Err(CoreError::InvalidInput(format!("redirect URI '{uri}': {why}")));
    if uri.len() > 2000 || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("too long or contains spaces/control characters");
    }
    if uri.contains('#') {
        return bad("must not contain a fragment");
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return bad("must be an absolute URI");
    };
    let scheme_ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return bad("invalid scheme");
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" | "http" => {
            let Some(auth_path) = rest.strip_prefix("//") else {
                return bad("must be an absolute URI");
            };
            let authority = auth_path.split(['/', '?']).next().unwrap_or("");
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let host = if host.starts_with('[') {
                host.split(']').next().map(|h| format!("{h}]")).unwrap_or_default()
            } else {
                host.split(':').next().unwrap_or("").to_owned()
            };
            if host.is_empty() {
                return bad("has no host");
            }
            let loopback = host == "localhost" || host == "[::1]" || host.starts_with("127.");
            if scheme.eq_ignore_ascii_case("http") && !loopback {
                return bad("plain http is only allowed to a loopback host; use https");
            }
            Ok(())
        }
        "javascript" | "data" | "file" | "vbscript" => bad("this scheme is not allowed"),
        _ if scheme.contains('.') => Ok(()),
        _ => bad("private-use schemes must be reverse domain names (RFC 8252)"),
    }
}

/// PKCE (RFC 7636). Only S256: `plain` gives no protection if the
/// authorization request leaks, and every current client supports S256.
pub fn validate_code_challenge(challenge: &str, method: Option<&str>) -> Result<(), CoreError> {
    if method != Some("S256") {
        return Err(CoreError::InvalidInput("code_challenge_method must be S256".into()));
    }
    let ok = challenge.len() == 43
        && challenge
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(CoreError::InvalidInput(
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)".into(),
        ))
    }
}

/// Does `verifier` hash to `challenge`? Constant-time comparison.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let shape = (43..=128).contains(&verifier.len())
        && verifier
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'));
    if !shape {
        return false;
    }
    let digest = Sha256::digest(verifier.as_bytes());
    let computed = data_encoding::BASE64URL_NOPAD.encode(&digest);
    use subtle::ConstantTimeEq;
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

/// `acr_values` lists acceptable strengths; the RP takes any of them, so the
/// requirement is the weakest one we know. Unknown values are ignored.
pub fn required_strength(acr_values: Option<&str>) -> Option<AuthStrength> {
    acr_values?.split_whitespace().filter_map(parse_strength).min()
}

pub fn parse_strength(s: &str) -> Option<AuthStrength> {
    match s {
        "mfa" => Some(AuthStrength::Mfa),
        "passwordless_mfa" => Some(AuthStrength::PasswordlessMfa),
        "phishing_resistant" => Some(AuthStrength::PhishingResistant),
        _ => None,
    }
}

/// What the browser's existing session proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFacts {
    pub authenticated_at: i64,
    pub acr: Option<AuthStrength>,
}

/// What the request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthRequirements {
    pub prompt_login: bool,
    pub prompt_none: bool,
    pub max_age: Option<i64>,
    pub acr: Option<AuthStrength>,
    /// Set on the way back from a sign-in we asked for: a session
    /// authenticated at or after this instant counts as the fresh sign-in.
    pub fresh_after: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeDecision {
    Issue,
    /// Send the browser to sign in (again), asking for at least `acr`.
    SignIn {
        acr: Option<AuthStrength>,
    },
    /// Answer the client with this OIDC error code.
    Refuse {
        error: &'static str,
        description: String,
    },
}

pub fn decide_authorize(req: &AuthRequirements, session: Option<SessionFacts>, now: i64) -> AuthorizeDecision {
    let fresh = match (session, req.fresh_after) {
        (Some(s), Some(after)) => s.authenticated_at >= after,
        _ => false,
    };
    let sign_in = |req: &AuthRequirements| {
        if req.prompt_none {
            AuthorizeDecision::Refuse {
                error: "login_required",
                description: "a sign-in is required and prompt=none forbids asking for one".into(),
            }
        } else {
            AuthorizeDecision::SignIn { acr: req.acr }
        }
    };
    let Some(s) = session else { return sign_in(req) };
    if !fresh {
        let too_old = req
            .max_age
            .is_some_and(|m| now - s.authenticated_at > m.max(0) || m <= 0);
        if req.prompt_login || too_old {
            return sign_in(req);
        }
    }
    if let Some(needed) = req.acr {
        if s.acr.is_none_or(|got| got < needed) {
            if fresh {
                return AuthorizeDecision::Refuse {
                    error: "unmet_authentication_requirements",
                    description: format!("the sign-in did not reach the requested strength '{}'", needed.as_str()),
                };
            }
            return sign_in(req);
        }
    }
    AuthorizeDecision::Issue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(at: i64, acr: AuthStrength) -> Option<SessionFacts> {
        Some(SessionFacts {
            authenticated_at: at,
            acr: Some(acr),
        })
    }

    #[test]
    fn rfc7636_appendix_b_example() {
        assert!(pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches("short", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    }

    #[test]
    fn only_s256_challenges() {
        let c = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(validate_code_challenge(c, Some("S256")).is_ok());
        assert!(validate_code_challenge(c, Some("plain")).is_err());
        assert!(validate_code_challenge(c, None).is_err());
        assert!(validate_code_challenge("abc", Some("S256")).is_err());
    }

    #[test]
    fn redirect_uris() {
        for ok in [
            "https://app.example.com/cb",
            "http://127.0.0.1:8123/callback?x=1",
            "http://localhost/cb",
            "com.example.app:/oauth",
        ] {
            assert!(validate_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#frag",
            "/relative",
            "javascript:alert(1)",
            "myapp:/cb",
            "https:///nohost",
            "https://a b/",
        ] {
            assert!(validate_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn acr_values_take_the_weakest_known() {
        assert_eq!(
            required_strength(Some("phishing_resistant mfa")),
            Some(AuthStrength::Mfa)
        );
        assert_eq!(
            required_strength(Some("urn:x phishing_resistant")),
            Some(AuthStrength::PhishingResistant)
        );
        assert_eq!(required_strength(Some("urn:unknown")), None);
        assert_eq!(required_strength(None), None);
    }

    #[test]
    fn no_session_signs_in_or_refuses_with_prompt_none() {
        let r = AuthRequirements::default();
        assert_eq!(decide_authorize(&r, None, 100), AuthorizeDecision::SignIn { acr: None });
        let r = AuthRequirements {
            prompt_none: true,
            ..Default::default()
        };
        assert!(matches!(
            decide_authorize(&r, None, 100),
            AuthorizeDecision::Refuse {
                error: "login_required",
                ..
            }
        ));
    }

    #[test]
    fn valid_session_issues() {
        let r = AuthRequirements {
            acr: Some(AuthStrength::Mfa),
            max_age: Some(600),
            ..Default::default()
        };
        assert_eq!(
            decide_authorize(&r, session(50, AuthStrength::Mfa), 100),
            AuthorizeDecision::Issue
        );
    }

    #[test]
    fn max_age_and_prompt_login_force_a_fresh_sign_in_once() {
        let old = session(0, AuthStrength::Mfa);
        let r = AuthRequirements {
            max_age: Some(60),
            ..Default::default()
        };
        assert_eq!(decide_authorize(&r, old, 100), AuthorizeDecision::SignIn { acr: None });
        let r = AuthRequirements {
            prompt_login: true,
            ..Default::default()
        };
        assert_eq!(
            decide_authorize(&r, session(99, AuthStrength::Mfa), 100),
            AuthorizeDecision::SignIn { acr: None }
        );
        // Back from the sign-in we asked for: no loop.
        let r = AuthRequirements {
            prompt_login: true,
            max_age: Some(0),
            fresh_after: Some(100),
            ..Default::default()
        };
        assert_eq!(
            decide_authorize(&r, session(101, AuthStrength::Mfa), 102),
            AuthorizeDecision::Issue
        );
        // ...but the old session does not count as fresh.
        assert_eq!(
            decide_authorize(&r, session(99, AuthStrength::Mfa), 102),
            AuthorizeDecision::SignIn { acr: None }
        );
    }

    #[test]
    fn step_up_then_unmet_requirements() {
        let r = AuthRequirements {
            acr: Some(AuthStrength::PhishingResistant),
            ..Default::default()
        };
        assert_eq!(
            decide_authorize(&r, session(90, AuthStrength::Mfa), 100),
            AuthorizeDecision::SignIn {
                acr: Some(AuthStrength::PhishingResistant)
            }
        );
        let r = AuthRequirements {
            fresh_after: Some(100),
            ..r
        };
        assert!(matches!(
            decide_authorize(&r, session(101, AuthStrength::Mfa), 102),
            AuthorizeDecision::Refuse {
                error: "unmet_authentication_requirements",
                ..
            }
        ));
        assert_eq!(
            decide_authorize(&r, session(101, AuthStrength::PhishingResistant), 102),
            AuthorizeDecision::Issue
        );
    }
}
