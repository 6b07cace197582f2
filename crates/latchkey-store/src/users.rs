//! Users.

use latchkey_core::{Role, UserState};
use sqlx::Row;

use crate::{json_vec, new_id, Result, Store, StoreError, WriteTx};

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub department: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub department: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<Role>,
    pub state: UserState,
    /// Why the account was disabled or deleted, and when its state last changed.
    pub state_reason: Option<String>,
    pub state_changed_at: Option<i64>,
    /// When the user last lost a role (unix seconds).
    pub roles_removed_at: Option<i64>,
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserRecord {
    pub fn privileged(&self) -> bool {
        latchkey_core::model::is_privileged(&self.roles)
    }
    /// For the two-person rule: privileged, or lost a role recently.
    pub fn privileged_at(&self, now: i64) -> bool {
        latchkey_core::model::is_privileged_at(&self.roles, self.roles_removed_at, now)
    }
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }
}

pub(crate) fn user_from_row(r: &sqlx::any::AnyRow) -> Result<UserRecord> {
    let state: String = r.try_get("state")?;
    Ok(UserRecord {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        display_name: r.try_get("display_name")?,
        department: r.try_get("department")?,
        groups: json_vec(&r.try_get::<String, _>("groups_json")?, "groups")?,
        roles: json_vec(&r.try_get::<String, _>("roles_json")?, "roles")?,
        state: UserState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("user state '{state}'")))?,
        state_reason: r.try_get("state_reason")?,
        state_changed_at: r.try_get("state_changed_at")?,
        roles_removed_at: r.try_get("roles_removed_at")?,
        password_hash: r.try_get("password_hash")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

impl WriteTx {
    pub async fn insert_user(&mut self, u: &NewUser, now: i64) -> Result<UserRecord> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO users (id, username, display_name, department, groups_json, roles_json, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $7)",
        )
        .bind(&id)
        .bind(&u.username)
        .bind(&u.display_name)
        .bind(u.department.clone())
        .bind(to_json(&u.groups))
        .bind(to_json(&u.roles))
        .bind(now)
        .execute(self.conn())
        .await
        .map_err(|e| StoreError::from_insert(e, &format!("user '{}' already exists", u.username)))?;
        Ok(UserRecord {
            id,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            department: u.department.clone(),
            groups: u.groups.clone(),
            roles: u.roles.clone(),
            state: UserState::Active,
            state_reason: None,
            state_changed_at: None,
            roles_removed_at: None,
            password_hash: None,
            created_at: now,
            updated_at: now,
        })
    }

    /// Replace a user's directory attributes (what conditional access and
    /// rollout waves select on).
    /// `roles_removed` records that a role was taken away (now).
    pub async fn update_user_profile(
        &mut self,
        user_id: &str,
        u: &NewUser,
        roles_removed: bool,
        now: i64,
    ) -> Result<()> {
        let n = sqlx::query(
            "UPDATE users SET display_name = $1, department = $2, groups_json = $3, roles_json = $4, updated_at = $5,
                roles_removed_at = CASE WHEN $7 = 1 THEN $5 ELSE roles_removed_at END
             WHERE id = $6",
        )
        .bind(&u.display_name)
        .bind(u.department.clone())
        .bind(to_json(&u.groups))
        .bind(to_json(&u.roles))
        .bind(now)
        .bind(user_id)
        .bind(i64::from(roles_removed))
        .execute(self.conn())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("user".into()));
        }
        Ok(())
    }

    pub async fn set_password_hash(&mut self, user_id: &str, phc: &str, now: i64) -> Result<()> {
        let n =
            sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2, updated_at = $2 WHERE id = $3")
                .bind(phc)
                .bind(now)
                .bind(user_id)
                .execute(self.conn())
                .await?
                .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("user".into()));
        }
        Ok(())
    }

    pub async fn user_by_username(&mut self, username: &str) -> Result<Option<UserRecord>> {
        sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(self.conn())
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }
}

/// A `familiar_source` column: whether user `u` signed in successfully from
/// the source `source` at or after `since` (SQL expressions; the sign-in
/// log's `signins_familiar` index answers it).
pub(crate) fn familiar_source(source: &str, since: &str) -> String {
    format!(
        "CAST(CASE WHEN EXISTS (SELECT 1 FROM signins s \
         WHERE s.user_id = u.id AND s.result = 'success' AND s.source_ip = {source} AND s.at >= {since}) \
         THEN 1 ELSE 0 END AS BIGINT) AS familiar_source"
    )
}

impl Store {
    pub async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>> {
        sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    /// A user by name for a sign-in attempt from `source`, with whether
    /// the sign-in log has a success of theirs from that source at or after
    /// `since` (smart lock-out's familiar source): one read.
    pub async fn user_for_signin(
        &self,
        username: &str,
        source: Option<&str>,
        since: i64,
    ) -> Result<Option<(UserRecord, bool)>> {
        let row = sqlx::query(&format!(
            "SELECT u.*, {} FROM users u WHERE u.username = $1",
            familiar_source("$2", "$3")
        ))
        .bind(username)
        .bind(source.map(str::to_owned))
        .bind(since)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((user_from_row(&r)?, r.try_get::<i64, _>("familiar_source")? != 0)))
            .transpose()
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>> {
        sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    pub async fn list_users(&self) -> Result<Vec<UserRecord>> {
        sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_from_row)
            .collect()
    }

    pub async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}
