//! Reading the sign-in log (written by [`Store::log_signin`]): a user's own
//! history for the security-info page and the helpdesk console.

use sqlx::Row;

use crate::{json_vec, Result, Store};

#[derive(Debug, Clone, serde::Serialize)]
pub struct SignInRecord {
    pub at: i64,
    pub username: String,
    pub application: Option<String>,
    pub source_ip: Option<String>,
    /// `success` or `failure`.
    pub result: String,
    pub reason: Option<String>,
    pub methods: Vec<String>,
    pub acr: Option<String>,
}

impl Store {
    /// The newest `limit` sign-in attempts of one user, newest first.
    pub async fn signins_for_user(&self, user_id: &str, limit: i64) -> Result<Vec<SignInRecord>> {
        let rows = sqlx::query(
            "SELECT at, username, application, source_ip, result, reason, methods_json, acr
             FROM signins WHERE user_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SignInRecord {
                    at: r.try_get("at")?,
                    username: r.try_get("username")?,
                    application: r.try_get("application")?,
                    source_ip: r.try_get("source_ip")?,
                    result: r.try_get("result")?,
                    reason: r.try_get("reason")?,
                    methods: json_vec(&r.try_get::<String, _>("methods_json")?, "sign-in methods")?,
                    acr: r.try_get("acr")?,
                })
            })
            .collect()
    }
}
