//! Push devices, enrollment tokens, prompts, and SMS/voice codes.
//!
//! The security rules are single statements, so they hold with several nodes
//! on one database: an enrollment token is taken by a conditional UPDATE; a
//! prompt is answered only while `status = 'pending'` and unexpired, and its
//! approval used once (`used_at IS NULL`); at most one pending prompt per user
//! (unique partial index); an SMS code is spent by one conditional UPDATE that
//! also checks its hash, expiry and attempt count.

use sqlx::Row;

use crate::{Result, Store, StoreError, WriteTx};

#[derive(Debug, Clone)]
pub struct PushDeviceRecord {
    pub method_id: String,
    pub user_id: String,
    /// SEC1 uncompressed P-256 point.
    pub public_key: Vec<u8>,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
    /// From the method row.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPromptRecord {
    pub id: String,
    pub user_id: String,
    pub flow_key: String,
    pub number: i64,
    pub challenge: String,
    pub application: Option<String>,
    pub source_ip: Option<String>,
    pub location: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
    pub answered_by: Option<String>,
    pub used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct SmsCodeRecord {
    pub id: String,
    pub user_id: String,
    pub method_id: String,
    pub phone_hash: String,
    pub channel: String,
    pub flow_key: String,
    pub code_hash: String,
    pub attempts: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

fn device_from_row(r: &sqlx::any::AnyRow) -> Result<PushDeviceRecord> {
    Ok(PushDeviceRecord {
        method_id: r.try_get("method_id")?,
        user_id: r.try_get("user_id")?,
        public_key: r.try_get("public_key")?,
        created_at: r.try_get("created_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
        label: r.try_get("label")?,
    })
}

const PROMPT_COLS: &str = "id, user_id, flow_key, number, challenge, application, source_ip, location, status,
    created_at, expires_at, ended_at, answered_by, used_at";

fn prompt_from_row(r: &sqlx::any::AnyRow) -> Result<PushPromptRecord> {
    Ok(PushPromptRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        flow_key: r.try_get("flow_key")?,
        number: r.try_get("number")?,
        challenge: r.try_get("challenge")?,
        application: r.try_get("application")?,
        source_ip: r.try_get("source_ip")?,
        location: r.try_get("location")?,
        status: r.try_get("status")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        ended_at: r.try_get("ended_at")?,
        answered_by: r.try_get("answered_by")?,
        used_at: r.try_get("used_at")?,
    })
}

const SMS_COLS: &str =
    "id, user_id, method_id, phone_hash, channel, flow_key, code_hash, attempts, created_at, expires_at, used_at";

fn sms_from_row(r: &sqlx::any::AnyRow) -> Result<SmsCodeRecord> {
    Ok(SmsCodeRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        method_id: r.try_get("method_id")?,
        phone_hash: r.try_get("phone_hash")?,
        channel: r.try_get("channel")?,
        flow_key: r.try_get("flow_key")?,
        code_hash: r.try_get("code_hash")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        used_at: r.try_get("used_at")?,
    })
}

const SELECT_DEVICE: &str = "SELECT d.method_id, d.user_id, d.public_key, d.created_at, d.last_seen_at, m.label
     FROM push_devices d JOIN methods m ON m.id = d.method_id WHERE m.state = 'active'";

impl Store {
    /// The device a bearer token belongs to (token stored as a keyed hash).
    pub async fn push_device_by_token(&self, token_hash: &str) -> Result<Option<PushDeviceRecord>> {
        let row = sqlx::query(&format!("{SELECT_DEVICE} AND d.token_hash = $1"))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    pub async fn push_device(&self, method_id: &str) -> Result<Option<PushDeviceRecord>> {
        let row = sqlx::query(&format!("{SELECT_DEVICE} AND d.method_id = $1"))
            .bind(method_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    pub async fn push_devices(&self, user_id: &str) -> Result<Vec<PushDeviceRecord>> {
        let rows = sqlx::query(&format!("{SELECT_DEVICE} AND d.user_id = $1 ORDER BY d.created_at"))
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(device_from_row).collect()
    }

    pub async fn touch_push_device(&self, method_id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE push_devices SET last_seen_at = $1 WHERE method_id = $2")
            .bind(now)
            .bind(method_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn push_prompt(&self, id: &str) -> Result<Option<PushPromptRecord>> {
        let row = sqlx::query(&format!("SELECT {PROMPT_COLS} FROM push_prompts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(prompt_from_row).transpose()
    }

    /// The newest prompt created for a sign-in flow.
    pub async fn push_prompt_for_flow(&self, flow_key: &str) -> Result<Option<PushPromptRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROMPT_COLS} FROM push_prompts WHERE flow_key = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(flow_key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(prompt_from_row).transpose()
    }

    /// Prompts still waiting for an answer (for the device's stream).
    pub async fn pending_push_prompts(&self, user_id: &str, now: i64) -> Result<Vec<PushPromptRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PROMPT_COLS} FROM push_prompts WHERE user_id = $1 AND status = 'pending' AND expires_at > $2 ORDER BY created_at"
        ))
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(prompt_from_row).collect()
    }

    /// How many SMS/voice codes went out since `since` to this user and to
    /// this phone number (by keyed hash).
    pub async fn sms_sends_since(&self, user_id: &str, phone_hash: &str, since: i64) -> Result<(u32, u32)> {
        let count = |sql: &'static str, key: String| {
            let pool = self.pool.clone();
            async move {
                let n: i64 = sqlx::query(sql)
                    .bind(key)
                    .bind(since)
                    .fetch_one(&pool)
                    .await?
                    .try_get(0)?;
                Ok::<u32, StoreError>(n.clamp(0, u32::MAX as i64) as u32)
            }
        };
        let by_user = count(
            "SELECT COUNT(*) FROM sms_codes WHERE user_id = $1 AND created_at > $2",
            user_id.to_owned(),
        )
        .await?;
        let by_phone = count(
            "SELECT COUNT(*) FROM sms_codes WHERE phone_hash = $1 AND created_at > $2",
            phone_hash.to_owned(),
        )
        .await?;
        Ok((by_user, by_phone))
    }

    /// The newest code sent for a sign-in flow.
    pub async fn sms_code_for_flow(&self, flow_key: &str) -> Result<Option<SmsCodeRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {SMS_COLS} FROM sms_codes WHERE flow_key = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(flow_key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sms_from_row).transpose()
    }

    /// Spend a code: one statement checks the hash, expiry, attempt limit and
    /// single use. Otherwise counts a wrong attempt. True when spent.
    pub async fn use_sms_code(&self, id: &str, code_hash: &str, max_attempts: i64, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE sms_codes SET used_at = $1
             WHERE id = $2 AND code_hash = $3 AND used_at IS NULL AND expires_at > $1 AND attempts < $4",
        )
        .bind(now)
        .bind(id)
        .bind(code_hash)
        .bind(max_attempts)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 1 {
            sqlx::query(
                "UPDATE methods SET last_used_at = $1 WHERE id = (SELECT method_id FROM sms_codes WHERE id = $2)",
            )
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
            return Ok(true);
        }
        sqlx::query("UPDATE sms_codes SET attempts = attempts + 1 WHERE id = $1 AND used_at IS NULL")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(false)
    }
}

impl WriteTx {
    pub async fn insert_push_enrollment(
        &mut self,
        token_hash: &str,
        user_id: &str,
        label: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO push_enrollments (token_hash, user_id, label, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(label)
        .bind(now)
        .bind(expires_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Take an unused, unexpired enrollment token: `(user_id, label)`.
    pub async fn take_push_enrollment(&mut self, token_hash: &str, now: i64) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "UPDATE push_enrollments SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1
             RETURNING user_id, label",
        )
        .bind(now)
        .bind(token_hash)
        .fetch_optional(self.conn())
        .await?;
        row.map(|r| Ok((r.try_get("user_id")?, r.try_get("label")?)))
            .transpose()
    }

    pub async fn insert_push_device(
        &mut self,
        method_id: &str,
        user_id: &str,
        public_key: &[u8],
        token_hash: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO push_devices (method_id, user_id, public_key, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(method_id)
        .bind(user_id)
        .bind(public_key.to_vec())
        .bind(token_hash)
        .bind(now)
        .execute(self.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, "this device is already registered"))?;
        Ok(())
    }

    /// Mark this user's overdue pending prompts expired; returns them.
    pub async fn expire_push_prompts(&mut self, user_id: &str, now: i64) -> Result<Vec<PushPromptRecord>> {
        let rows = sqlx::query(&format!(
            "UPDATE push_prompts SET status = 'expired', ended_at = expires_at
             WHERE user_id = $1 AND status = 'pending' AND expires_at <= $2
             RETURNING {PROMPT_COLS}"
        ))
        .bind(user_id)
        .bind(now)
        .fetch_all(self.conn())
        .await?;
        rows.iter().map(prompt_from_row).collect()
    }

    /// Prompts of a user created or ended since `since` (fatigue history).
    pub async fn push_history(&mut self, user_id: &str, since: i64) -> Result<Vec<PushPromptRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PROMPT_COLS} FROM push_prompts
             WHERE user_id = $1 AND (created_at > $2 OR ended_at > $2 OR status = 'pending') ORDER BY created_at"
        ))
        .bind(user_id)
        .bind(since)
        .fetch_all(self.conn())
        .await?;
        rows.iter().map(prompt_from_row).collect()
    }

    /// Insert a pending prompt. A second pending prompt for the same user
    /// (another node, same instant) is a conflict.
    pub async fn insert_push_prompt(&mut self, p: &PushPromptRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO push_prompts ({PROMPT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&p.id)
        .bind(&p.user_id)
        .bind(&p.flow_key)
        .bind(p.number)
        .bind(&p.challenge)
        .bind(p.application.clone())
        .bind(p.source_ip.clone())
        .bind(p.location.clone())
        .bind(&p.status)
        .bind(p.created_at)
        .bind(p.expires_at)
        .bind(p.ended_at)
        .bind(p.answered_by.clone())
        .bind(p.used_at)
        .execute(self.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, "a push prompt is already pending for this user"))?;
        Ok(())
    }

    /// Move a pending, unexpired prompt to its final `status`. False if it
    /// was answered (or expired) first.
    pub async fn answer_push_prompt(&mut self, id: &str, status: &str, device: &str, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE push_prompts SET status = $1, ended_at = $2, answered_by = $3
             WHERE id = $4 AND status = 'pending' AND expires_at > $2",
        )
        .bind(status)
        .bind(now)
        .bind(device)
        .bind(id)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Use an approval to complete its sign-in, once.
    pub async fn use_push_approval(&mut self, id: &str, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE push_prompts SET used_at = $1 WHERE id = $2 AND status = 'approved' AND used_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(self.conn())
        .await?
        .rows_affected();
        if n == 1 {
            // The device that approved was used to sign in.
            sqlx::query(
                "UPDATE methods SET last_used_at = $1 WHERE id = (SELECT answered_by FROM push_prompts WHERE id = $2)",
            )
            .bind(now)
            .bind(id)
            .execute(self.conn())
            .await?;
        }
        Ok(n == 1)
    }

    pub async fn insert_sms_code(&mut self, c: &SmsCodeRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO sms_codes ({SMS_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&c.id)
        .bind(&c.user_id)
        .bind(&c.method_id)
        .bind(&c.phone_hash)
        .bind(&c.channel)
        .bind(&c.flow_key)
        .bind(&c.code_hash)
        .bind(c.attempts)
        .bind(c.created_at)
        .bind(c.expires_at)
        .bind(c.used_at)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
