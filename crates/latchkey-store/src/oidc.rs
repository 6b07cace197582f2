//! OpenID Connect provider state: clients, signing keys, grants, codes and
//! tokens. Single use (codes, refresh tokens) is a conditional `UPDATE ...
//! WHERE used_at IS NULL`, so two nodes redeeming one code cannot both win.

use sqlx::Row;

use crate::{json_vec, Result, Store, StoreError, WriteTx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClientRecord {
    pub id: String,
    pub name: String,
    /// `confidential` or `public`.
    pub kind: String,
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub private_sealed: Vec<u8>,
    pub public_jwk: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub publish_until: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    pub session_id: Option<String>,
    pub scope: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
    pub amr: Vec<String>,
    pub acr: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct CodeRecord {
    pub grant_id: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub grant_id: String,
    pub kind: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// The key that signs now: the newest one not retired.
const ACTIVE_KEY_SQL: &str =
    "SELECT * FROM oidc_signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, kid LIMIT 1";

fn client_from_row(r: &sqlx::any::AnyRow) -> Result<OidcClientRecord> {
    Ok(OidcClientRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        secret_hash: r.try_get("secret_hash")?,
        redirect_uris: json_vec(&r.try_get::<String, _>("redirect_uris_json")?, "redirect_uris")?,
        post_logout_redirect_uris: json_vec(
            &r.try_get::<String, _>("post_logout_redirect_uris_json")?,
            "post_logout_redirect_uris",
        )?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

fn key_from_row(r: &sqlx::any::AnyRow) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.try_get("kid")?,
        alg: r.try_get("alg")?,
        private_sealed: r.try_get("private_sealed")?,
        public_jwk: r.try_get("public_jwk")?,
        created_at: r.try_get("created_at")?,
        retired_at: r.try_get("retired_at")?,
        publish_until: r.try_get("publish_until")?,
    })
}

fn grant_from_row(r: &sqlx::any::AnyRow) -> Result<GrantRecord> {
    Ok(GrantRecord {
        id: r.try_get("id")?,
        client_id: r.try_get("client_id")?,
        user_id: r.try_get("user_id")?,
        session_id: r.try_get("session_id")?,
        scope: r.try_get("scope")?,
        nonce: r.try_get("nonce")?,
        auth_time: r.try_get("auth_time")?,
        amr: json_vec(&r.try_get::<String, _>("amr_json")?, "amr")?,
        acr: r.try_get("acr")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    pub async fn oidc_client(&self, id: &str) -> Result<Option<OidcClientRecord>> {
        sqlx::query("SELECT * FROM oidc_clients WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(client_from_row)
            .transpose()
    }

    pub async fn list_oidc_clients(&self) -> Result<Vec<OidcClientRecord>> {
        sqlx::query("SELECT * FROM oidc_clients WHERE revoked_at IS NULL ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(client_from_row)
            .collect()
    }

    /// Keys to publish: the active ones and retired ones still within
    /// the lifetime of tokens they signed. Newest first.
    pub async fn published_signing_keys(&self, now: i64) -> Result<Vec<SigningKeyRecord>> {
        sqlx::query(
            "SELECT * FROM oidc_signing_keys WHERE retired_at IS NULL OR publish_until > $1 ORDER BY created_at DESC, kid",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_from_row)
        .collect()
    }

    /// The key that signs now: the newest one not retired.
    pub async fn active_signing_key(&self) -> Result<Option<SigningKeyRecord>> {
        sqlx::query(ACTIVE_KEY_SQL)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    pub async fn oidc_grant(&self, id: &str) -> Result<Option<GrantRecord>> {
        sqlx::query("SELECT * FROM oidc_grants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(grant_from_row)
            .transpose()
    }

    pub async fn oidc_code(&self, code_hash: &str) -> Result<Option<CodeRecord>> {
        let row = sqlx::query("SELECT * FROM oidc_codes WHERE code_hash = $1")
            .bind(code_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(CodeRecord {
                grant_id: r.try_get("grant_id")?,
                redirect_uri: r.try_get("redirect_uri")?,
                code_challenge: r.try_get("code_challenge")?,
                expires_at: r.try_get("expires_at")?,
                used_at: r.try_get("used_at")?,
            })
        })
        .transpose()
    }

    pub async fn oidc_token(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM oidc_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(TokenRecord {
                grant_id: r.try_get("grant_id")?,
                kind: r.try_get("kind")?,
                expires_at: r.try_get("expires_at")?,
                used_at: r.try_get("used_at")?,
            })
        })
        .transpose()
    }
}

impl WriteTx {
    pub async fn insert_oidc_client(&mut self, c: &OidcClientRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO oidc_clients (id, name, kind, secret_hash, redirect_uris_json, post_logout_redirect_uris_json, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.kind)
        .bind(c.secret_hash.clone())
        .bind(serde_json::to_string(&c.redirect_uris).expect("strings serialise"))
        .bind(serde_json::to_string(&c.post_logout_redirect_uris).expect("strings serialise"))
        .bind(&c.created_by)
        .bind(c.created_at)
        .execute(self.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, "client"))?;
        Ok(())
    }

    /// Remove a client and, with it, every grant and token it holds.
    pub async fn revoke_oidc_client(&mut self, id: &str, now: i64) -> Result<bool> {
        let n = sqlx::query("UPDATE oidc_clients SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(self.conn())
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $1, revoked_reason = 'client_removed' WHERE client_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(self.conn())
        .await?;
        Ok(n == 1)
    }

    /// Re-read the active key inside the transaction (under the audit-head
    /// lock), so two nodes starting together create one key, not two.
    pub async fn active_signing_key(&mut self) -> Result<Option<SigningKeyRecord>> {
        sqlx::query(ACTIVE_KEY_SQL)
            .fetch_optional(self.conn())
            .await?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    pub async fn insert_signing_key(&mut self, k: &SigningKeyRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO oidc_signing_keys (kid, alg, private_sealed, public_jwk, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(k.private_sealed.clone())
        .bind(&k.public_jwk)
        .bind(k.created_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Retire every key but `keep`; each stays published until `publish_until`.
    pub async fn retire_signing_keys(&mut self, keep: &str, now: i64, publish_until: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE oidc_signing_keys SET retired_at = $1, publish_until = $2 WHERE kid <> $3 AND retired_at IS NULL",
        )
        .bind(now)
        .bind(publish_until)
        .bind(keep)
        .execute(self.conn())
        .await?
        .rows_affected())
    }

    pub async fn insert_oidc_grant(&mut self, g: &GrantRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO oidc_grants (id, client_id, user_id, session_id, scope, nonce, auth_time, amr_json, acr, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&g.id)
        .bind(&g.client_id)
        .bind(&g.user_id)
        .bind(g.session_id.clone())
        .bind(&g.scope)
        .bind(g.nonce.clone())
        .bind(g.auth_time)
        .bind(serde_json::to_string(&g.amr).expect("strings serialise"))
        .bind(&g.acr)
        .bind(g.created_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    pub async fn insert_oidc_code(&mut self, code_hash: &str, c: &CodeRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO oidc_codes (code_hash, grant_id, redirect_uri, code_challenge, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(code_hash)
        .bind(&c.grant_id)
        .bind(&c.redirect_uri)
        .bind(c.code_challenge.clone())
        .bind(c.expires_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Redeem a code: true exactly once, for an unexpired code of a live grant.
    pub async fn redeem_oidc_code(&mut self, code_hash: &str, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE oidc_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1
               AND grant_id IN (SELECT id FROM oidc_grants WHERE revoked_at IS NULL)",
        )
        .bind(now)
        .bind(code_hash)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn insert_oidc_token(
        &mut self,
        token_hash: &str,
        grant_id: &str,
        kind: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO oidc_tokens (token_hash, grant_id, kind, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(grant_id)
        .bind(kind)
        .bind(now)
        .bind(expires_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Rotate a refresh token: true exactly once per token.
    pub async fn use_refresh_token(&mut self, token_hash: &str, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE oidc_tokens SET used_at = $1 WHERE token_hash = $2 AND kind = 'refresh' AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(token_hash)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Revoke a grant; its codes and tokens stop working with it (every
    /// lookup joins the grant). True if this call revoked it.
    pub async fn revoke_oidc_grant(&mut self, id: &str, reason: &str, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(self.conn())
        .await?
        .rows_affected();
        // Expire the tokens too, so nothing relies on the join alone.
        sqlx::query("UPDATE oidc_tokens SET expires_at = $1 WHERE grant_id = $2 AND expires_at > $1")
            .bind(now)
            .bind(id)
            .execute(self.conn())
            .await?;
        Ok(n == 1)
    }

    /// Revoke every live grant issued from one web session (RP-initiated logout).
    pub async fn revoke_oidc_grants_of_session(&mut self, session_id: &str, now: i64) -> Result<u64> {
        sqlx::query("UPDATE oidc_tokens SET expires_at = $1 WHERE expires_at > $1 AND grant_id IN (SELECT id FROM oidc_grants WHERE session_id = $2 AND revoked_at IS NULL)")
            .bind(now)
            .bind(session_id)
            .execute(self.conn())
            .await?;
        Ok(sqlx::query(
            "UPDATE oidc_grants SET revoked_at = $1, revoked_reason = 'logout' WHERE session_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(session_id)
        .execute(self.conn())
        .await?
        .rows_affected())
    }
}
