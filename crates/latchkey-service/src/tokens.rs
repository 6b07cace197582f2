//! Bearer authentication (session and API tokens) and API token management.

use latchkey_core::secret::random_token;
use latchkey_core::UserState;
use latchkey_store::{new_id, ApiTokenRecord, AuditEntry};
use rand::rngs::OsRng;
use serde_json::json;

use crate::error::{ServiceError, ServiceResult};

use crate::app::*;

impl App {
    // ---- bearer authentication ----------------------------------------

    pub async fn authenticate(&self, bearer: &str) -> ServiceResult<Principal> {
        let now = self.now();
        if bearer.starts_with(API_TOKEN_PREFIX) && bearer.len() < 200 {
            if let Some(t) = self.store.api_token_by_hash(&self.hash("api token", bearer)).await? {
                // A token acts for its owner and holds no more than they do:
                // an admin-scoped token stops when its owner is no longer an
                // active administrator (demoted, disabled), not only when revoked.
                if let Some(owner_id) = t.owner_user_id.as_deref() {
                    if t.scopes.iter().any(|s| s == API_SCOPE_ADMIN) {
                        let holds = self
                            .store
                            .user_by_id(owner_id)
                            .await?
                            .is_some_and(|o| o.state == UserState::Active && o.is_admin());
                        if !holds {
                            return Err(ServiceError::Unauthenticated);
                        }
                    }
                }
                return Ok(Principal::ApiToken(t));
            }
        } else if bearer.starts_with(SESSION_PREFIX) && bearer.len() < 200 {
            if let Some(s) = self
                .store
                .session_by_token_hash(&self.hash("session", bearer), now)
                .await?
            {
                if let Some(user) = self
                    .store
                    .user_by_id(&s.user_id)
                    .await?
                    .filter(|u| u.state == UserState::Active)
                {
                    self.store
                        .touch_session(&s.id, now, self.config.session_idle_secs)
                        .await?;
                    return Ok(Principal::Session { session: s, user });
                }
            }
        }
        Err(ServiceError::Unauthenticated)
    }

    pub async fn logout(&self, p: &Principal) -> ServiceResult<()> {
        let Principal::Session { session, user } = p else {
            return Err(ServiceError::InvalidRequest("only a session can sign out".into()));
        };
        let mut tx = self.store.write().await?;
        tx.revoke_session(&session.id, self.now()).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "session.revoke",
                format!("user:{}", user.username),
                json!({ "session_id": session.id }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_api_token(&self, p: &Principal, name: &str) -> ServiceResult<(ApiTokenRecord, String)> {
        self.create_scoped_api_token(p, name, &[API_SCOPE_ADMIN], None).await
    }

    /// A token limited to `scopes`: `admin` (everything), `mdm` (only
    /// device compliance updates, for an MDM integration) or
    /// `relying_party` (an application signing its users in: its word on
    /// the end user's address and device counts, and it may do nothing else).
    ///
    /// Every token acts for a human, its owner: the person behind a session
    /// that creates it, or behind the token that creates it (a second token
    /// is still the same person). The local operator names the owner
    /// (`owner`); an admin-scoped token's owner must be an active
    /// administrator. A token without an owner works but approves nothing.
    pub async fn create_scoped_api_token(
        &self,
        p: &Principal,
        name: &str,
        scopes: &[&str],
        owner: Option<&str>,
    ) -> ServiceResult<(ApiTokenRecord, String)> {
        p.require_admin()?;
        let owner_user = match (p, owner) {
            (Principal::Operator, Some(username)) => Some(self.user(username).await?),
            (Principal::Operator, None) => None,
            (_, named) => {
                let own = match p.human_id() {
                    Some(id) => self.store.user_by_id(id).await?,
                    None => None,
                };
                if let Some(named) = named {
                    if own.as_ref().map(|u| u.username.as_str()) != Some(named) {
                        return Err(ServiceError::Forbidden(
                            "a token's owner is the person creating it; another person creates their own".into(),
                        ));
                    }
                }
                own
            }
        };
        if let Some(o) = &owner_user {
            if scopes.contains(&API_SCOPE_ADMIN) && !(o.state == UserState::Active && o.is_admin()) {
                return Err(ServiceError::InvalidRequest(format!(
                    "an admin-scoped token's owner must be an active administrator; '{}' is not",
                    o.username
                )));
            }
        }
        if scopes.is_empty() || scopes.iter().any(|s| !API_SCOPES.contains(s)) {
            return Err(ServiceError::InvalidRequest(format!(
                "scopes must be among: {}",
                API_SCOPES.join(", ")
            )));
        }
        let name = name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(ServiceError::InvalidRequest(
                "token name must be 1-100 printable characters".into(),
            ));
        }
        let token = random_token(&mut OsRng, API_TOKEN_PREFIX);
        let rec = ApiTokenRecord {
            id: new_id(),
            name: name.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            created_by: p.actor(),
            owner_user_id: owner_user.as_ref().map(|u| u.id.clone()),
            owner: owner_user.as_ref().map(|u| u.username.clone()),
        };
        let mut tx = self.store.write().await?;
        tx.insert_api_token(&rec, &self.hash("api token", &token), self.now())
            .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "api_token.create",
                format!("api_token:{}", rec.id),
                json!({ "name": rec.name, "scopes": rec.scopes, "owner": rec.owner }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok((rec, token))
    }

    /// Every API token with when it was created and revoked (admin).
    /// Token values are never shown again.
    pub async fn list_api_tokens(&self, p: &Principal) -> ServiceResult<Vec<(ApiTokenRecord, i64, Option<i64>)>> {
        p.require_admin()?;
        Ok(self.store.list_api_tokens().await?)
    }

    pub async fn revoke_api_token(&self, p: &Principal, id: &str) -> ServiceResult<()> {
        p.require_admin()?;
        let mut tx = self.store.write().await?;
        if !tx.revoke_api_token(id, self.now()).await? {
            return Err(ServiceError::NotFound("active API token".into()));
        }
        tx.audit(
            &AuditEntry::new(p.actor(), "api_token.revoke", format!("api_token:{id}"), json!({})),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
