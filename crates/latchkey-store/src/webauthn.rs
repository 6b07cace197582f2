//! WebAuthn credentials, pending ceremonies and the admin policy row.
//!
//! The two security rules live in single statements: a ceremony is consumed
//! by `DELETE ... RETURNING` (one finisher wins on any node), and the
//! signature counter only moves forward by a conditional `UPDATE`.

use sqlx::Row;

use crate::{Result, Store, StoreError, WriteTx};

#[derive(Debug, Clone)]
pub struct WebauthnCredentialRecord {
    pub method_id: String,
    pub user_id: String,
    pub credential_id: String,
    pub kind: String,
    pub credential_json: String,
    pub aaguid: Option<String>,
    pub model: Option<String>,
    pub attested: bool,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub sign_count: i64,
    pub created_at: i64,
    /// From the method row.
    pub label: String,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct CeremonyRecord {
    pub user_id: Option<String>,
    pub purpose_json: String,
    pub state_json: String,
    pub expires_at: i64,
}

fn cred_from_row(r: &sqlx::any::AnyRow) -> Result<WebauthnCredentialRecord> {
    Ok(WebauthnCredentialRecord {
        method_id: r.try_get("method_id")?,
        user_id: r.try_get("user_id")?,
        credential_id: r.try_get("credential_id")?,
        kind: r.try_get("kind")?,
        credential_json: r.try_get("credential_json")?,
        aaguid: r.try_get("aaguid")?,
        model: r.try_get("model")?,
        attested: r.try_get::<i64, _>("attested")? != 0,
        backup_eligible: r.try_get::<i64, _>("backup_eligible")? != 0,
        backup_state: r.try_get::<i64, _>("backup_state")? != 0,
        sign_count: r.try_get("sign_count")?,
        created_at: r.try_get("created_at")?,
        label: r.try_get("label")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

const SELECT_CRED: &str =
    "SELECT w.method_id, w.user_id, w.credential_id, w.kind, w.credential_json, w.aaguid, w.model,
        w.attested, w.backup_eligible, w.backup_state, w.sign_count, w.created_at, m.label, m.last_used_at
     FROM webauthn_credentials w JOIN methods m ON m.id = w.method_id
     WHERE m.state = 'active'";

impl Store {
    /// Active credentials of one user, oldest first.
    pub async fn webauthn_credentials(&self, user_id: &str) -> Result<Vec<WebauthnCredentialRecord>> {
        let rows = sqlx::query(&format!(
            "{SELECT_CRED} AND w.user_id = $1 ORDER BY w.created_at, w.method_id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(cred_from_row).collect()
    }

    pub async fn webauthn_credential_by_id(&self, credential_id: &str) -> Result<Option<WebauthnCredentialRecord>> {
        let row = sqlx::query(&format!("{SELECT_CRED} AND w.credential_id = $1"))
            .bind(credential_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(cred_from_row).transpose()
    }

    pub async fn insert_ceremony(&self, id_hash: &str, c: &CeremonyRecord, now: i64) -> Result<()> {
        // A flow's assertion challenge is keyed by the flow: asking again
        // replaces the earlier challenge, which then no longer verifies.
        sqlx::query("DELETE FROM webauthn_ceremonies WHERE id_hash = $1 OR expires_at <= $2")
            .bind(id_hash)
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO webauthn_ceremonies (id_hash, user_id, purpose_json, state_json, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id_hash)
        .bind(c.user_id.clone())
        .bind(&c.purpose_json)
        .bind(&c.state_json)
        .bind(now)
        .bind(c.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::from_insert(e, "ceremony"))?;
        Ok(())
    }

    /// Take a ceremony out of the store: whoever gets the row is the only
    /// one who can finish it. Expired rows come back too (the caller refuses
    /// them) so that they are gone either way.
    pub async fn take_ceremony(&self, id_hash: &str) -> Result<Option<CeremonyRecord>> {
        let row = sqlx::query(
            "DELETE FROM webauthn_ceremonies WHERE id_hash = $1
             RETURNING user_id, purpose_json, state_json, expires_at",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(CeremonyRecord {
                user_id: r.try_get("user_id")?,
                purpose_json: r.try_get("purpose_json")?,
                state_json: r.try_get("state_json")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    pub async fn webauthn_policy_json(&self) -> Result<Option<String>> {
        let row = sqlx::query("SELECT policy_json FROM webauthn_settings WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("policy_json")).transpose()?)
    }
}

/// A credential about to be stored beside its (already inserted) method row.
#[derive(Debug, Clone)]
pub struct NewWebauthnCredential<'a> {
    pub method_id: &'a str,
    pub user_id: &'a str,
    pub credential_id: &'a str,
    pub kind: &'a str,
    pub credential_json: &'a str,
    pub aaguid: Option<&'a str>,
    pub model: Option<&'a str>,
    pub attested: bool,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub sign_count: i64,
}

impl WriteTx {
    pub async fn insert_webauthn_credential(&mut self, c: &NewWebauthnCredential<'_>, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO webauthn_credentials (method_id, user_id, credential_id, kind, credential_json, aaguid, model,
                 attested, backup_eligible, backup_state, sign_count, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(c.method_id)
        .bind(c.user_id)
        .bind(c.credential_id)
        .bind(c.kind)
        .bind(c.credential_json)
        .bind(c.aaguid)
        .bind(c.model)
        .bind(c.attested as i64)
        .bind(c.backup_eligible as i64)
        .bind(c.backup_state as i64)
        .bind(c.sign_count)
        .bind(now)
        .execute(self.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, "this authenticator is already registered"))?;
        Ok(())
    }

    /// Record a successful assertion. The counter moves only forward (or
    /// stays 0 for authenticators that keep none); false means another use
    /// with this or a higher count got there first: a replay or a clone.
    pub async fn record_webauthn_use(
        &mut self,
        method_id: &str,
        sign_count: i64,
        backup_state: bool,
        credential_json: &str,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE webauthn_credentials SET sign_count = $1, backup_state = $2, credential_json = $3
             WHERE method_id = $4 AND (sign_count < $1 OR (sign_count = 0 AND $1 = 0))",
        )
        .bind(sign_count)
        .bind(backup_state as i64)
        .bind(credential_json)
        .bind(method_id)
        .execute(self.conn())
        .await?
        .rows_affected();
        if n == 1 {
            sqlx::query("UPDATE methods SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(method_id)
                .execute(self.conn())
                .await?;
        }
        Ok(n == 1)
    }

    pub async fn set_webauthn_policy(&mut self, policy_json: &str, actor: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO webauthn_settings (id, policy_json, updated_by, updated_at) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET policy_json = $1, updated_by = $2, updated_at = $3",
        )
        .bind(policy_json)
        .bind(actor)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
