//! RADIUS clients (NAS) and outstanding Access-Challenges. A challenge is
//! answered once: `UPDATE ... WHERE used_at IS NULL`, so a replayed or
//! duplicated answer on another node finds it spent.

use sqlx::Row;

use crate::{Result, Store, StoreError, WriteTx};

#[derive(Debug, Clone)]
pub struct RadiusClientRecord {
    pub id: String,
    pub name: String,
    pub ip: String,
    pub secret_sealed: Vec<u8>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct RadiusChallengeRecord {
    pub client_id: String,
    pub username: String,
    pub flow_sealed: Vec<u8>,
    pub expires_at: i64,
}

fn client_from_row(r: &sqlx::any::AnyRow) -> Result<RadiusClientRecord> {
    Ok(RadiusClientRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        ip: r.try_get("ip")?,
        secret_sealed: r.try_get("secret_sealed")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    pub async fn radius_client_by_ip(&self, ip: &str) -> Result<Option<RadiusClientRecord>> {
        sqlx::query("SELECT * FROM radius_clients WHERE ip = $1")
            .bind(ip)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(client_from_row)
            .transpose()
    }

    pub async fn list_radius_clients(&self) -> Result<Vec<RadiusClientRecord>> {
        sqlx::query("SELECT * FROM radius_clients ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(client_from_row)
            .collect()
    }

    pub async fn insert_radius_challenge(&self, state_hash: &str, c: &RadiusChallengeRecord, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO radius_challenges (state_hash, client_id, username, flow_sealed, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(state_hash)
        .bind(&c.client_id)
        .bind(&c.username)
        .bind(c.flow_sealed.clone())
        .bind(now)
        .bind(c.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Take a challenge for answering: returns it exactly once, unexpired.
    pub async fn take_radius_challenge(&self, state_hash: &str, now: i64) -> Result<Option<RadiusChallengeRecord>> {
        let n = sqlx::query(
            "UPDATE radius_challenges SET used_at = $1 WHERE state_hash = $2 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(state_hash)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(None);
        }
        let r = sqlx::query("SELECT * FROM radius_challenges WHERE state_hash = $1")
            .bind(state_hash)
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(RadiusChallengeRecord {
            client_id: r.try_get("client_id")?,
            username: r.try_get("username")?,
            flow_sealed: r.try_get("flow_sealed")?,
            expires_at: r.try_get("expires_at")?,
        }))
    }

    pub async fn purge_radius_challenges(&self, now: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM radius_challenges WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

impl WriteTx {
    pub async fn insert_radius_client(&mut self, c: &RadiusClientRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO radius_clients (id, name, ip, secret_sealed, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.ip)
        .bind(c.secret_sealed.clone())
        .bind(&c.created_by)
        .bind(c.created_at)
        .execute(self.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, "a RADIUS client with this name or IP"))?;
        Ok(())
    }

    pub async fn delete_radius_client(&mut self, id: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM radius_clients WHERE id = $1")
            .bind(id)
            .execute(self.conn())
            .await?
            .rows_affected()
            == 1)
    }
}
