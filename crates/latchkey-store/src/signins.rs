//! Reading the sign-in log (written by [`Store::log_signin`]): a user's own
//! history for the security-info page and the helpdesk console.

use sqlx::Row;

use crate::{json_vec, Result, SignInLogEntry, Store};

impl Store {
    /// The newest `limit` sign-in attempts of one user, newest first.
    pub async fn signins_for_user(&self, user_id: &str, limit: i64) -> Result<Vec<SignInLogEntry>> {
        let rows = sqlx::query(
            "SELECT at, user_id, username, application, source_ip, result, reason, methods_json, acr
             FROM signins WHERE user_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SignInLogEntry {
                    at: r.try_get("at")?,
                    user_id: r.try_get("user_id")?,
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
