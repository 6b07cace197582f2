//! Devices, helpdesk cases and pass approval requests.

use sqlx::Row;

use crate::{Result, Store, StoreError, WriteTx};

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceRecord {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub platform: String,
    pub ownership: String,
    pub managed: bool,
    pub compliant: bool,
    pub external_id: Option<String>,
    pub state: String,
    pub registered_at: i64,
    pub compliance_updated_at: Option<i64>,
    pub state_changed_at: Option<i64>,
}

fn device_from_row(r: &sqlx::any::AnyRow) -> Result<DeviceRecord> {
    Ok(DeviceRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        platform: r.try_get("platform")?,
        ownership: r.try_get("ownership")?,
        managed: r.try_get::<i64, _>("managed")? != 0,
        compliant: r.try_get::<i64, _>("compliant")? != 0,
        external_id: r.try_get("external_id")?,
        state: r.try_get("state")?,
        registered_at: r.try_get("registered_at")?,
        compliance_updated_at: r.try_get("compliance_updated_at")?,
        state_changed_at: r.try_get("state_changed_at")?,
    })
}

#[derive(Debug, Clone)]
pub struct CaseRecord {
    pub id: String,
    pub user_id: String,
    pub scenario: String,
    pub state: String,
    pub case_json: String,
    pub opened_by: String,
    pub opened_at: i64,
    pub deadline: i64,
    pub updated_at: i64,
}

fn case_from_row(r: &sqlx::any::AnyRow) -> Result<CaseRecord> {
    Ok(CaseRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        scenario: r.try_get("scenario")?,
        state: r.try_get("state")?,
        case_json: r.try_get("case_json")?,
        opened_by: r.try_get("opened_by")?,
        opened_at: r.try_get("opened_at")?,
        deadline: r.try_get("deadline")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A new privileged change request (see `latchkey_service::recovery`).
#[derive(Debug, Clone)]
pub struct NewChangeRequest<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub kind: &'a str,
    pub subject: &'a str,
    pub requested_by: &'a str,
    pub requester_user_id: Option<&'a str>,
    /// The pass parameters (kind `tap`); zero/empty for other kinds.
    pub verification_json: &'a str,
    pub lifetime_minutes: i64,
    pub single_use: bool,
    pub starts_in_minutes: i64,
}

impl<'a> NewChangeRequest<'a> {
    /// A request for a change other than a pass: no pass parameters.
    pub fn change(
        id: &'a str,
        user_id: &'a str,
        kind: &'a str,
        subject: &'a str,
        requested_by: &'a str,
        requester_user_id: Option<&'a str>,
    ) -> Self {
        Self {
            id,
            user_id,
            kind,
            subject,
            requested_by,
            requester_user_id,
            verification_json: "null",
            lifetime_minutes: 0,
            single_use: true,
            starts_in_minutes: 0,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TapRequestRecord {
    pub id: String,
    pub user_id: String,
    pub requested_by: String,
    pub verification_json: String,
    pub lifetime_minutes: i64,
    pub single_use: bool,
    pub starts_in_minutes: i64,
    pub state: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    /// What the approved change produced: the pass, the method, the exception.
    pub tap_id: Option<String>,
    pub created_at: i64,
    /// tap, password, method.enroll, method.remove, device.end,
    /// case.remove_old_methods, policy.exception
    pub kind: String,
    /// What exactly was approved (a method id, a device, canonical JSON).
    pub subject: String,
    /// The human who asked (None: a request made before owners were recorded,
    /// or by a token without an owner).
    pub requester_user_id: Option<String>,
    pub approver_user_id: Option<String>,
}

fn tap_request_from_row(r: &sqlx::any::AnyRow) -> Result<TapRequestRecord> {
    Ok(TapRequestRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        requested_by: r.try_get("requested_by")?,
        verification_json: r.try_get("verification_json")?,
        lifetime_minutes: r.try_get("lifetime_minutes")?,
        single_use: r.try_get::<i64, _>("single_use")? != 0,
        starts_in_minutes: r.try_get("starts_in_minutes")?,
        state: r.try_get("state")?,
        decided_by: r.try_get("decided_by")?,
        decided_at: r.try_get("decided_at")?,
        tap_id: r.try_get("tap_id")?,
        created_at: r.try_get("created_at")?,
        kind: r.try_get("kind")?,
        subject: r.try_get("subject")?,
        requester_user_id: r.try_get("requester_user_id")?,
        approver_user_id: r.try_get("approver_user_id")?,
    })
}

/// A successful sign-in, as the runbook's last check needs it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignInSummary {
    pub at: i64,
    pub methods: Vec<String>,
    pub acr: Option<String>,
}

impl WriteTx {
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_device(
        &mut self,
        id: &str,
        user_id: &str,
        name: &str,
        platform: &str,
        ownership: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO devices (id, user_id, name, platform, ownership, registered_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(user_id)
        .bind(name)
        .bind(platform)
        .bind(ownership)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    pub async fn set_device_compliance(
        &mut self,
        id: &str,
        managed: bool,
        compliant: bool,
        external_id: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let n = sqlx::query(
            "UPDATE devices SET managed = $1, compliant = $2, external_id = COALESCE($3, external_id), compliance_updated_at = $4
             WHERE id = $5 AND state = 'active'",
        )
        .bind(managed as i64)
        .bind(compliant as i64)
        .bind(external_id.map(str::to_owned))
        .bind(now)
        .bind(id)
        .execute(self.conn())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("active device".into()));
        }
        Ok(())
    }

    /// Move an active device to `state` (lost/retired), delete every method
    /// bound to it and end its sessions. Returns the removed method ids and
    /// the number of sessions ended. False-y (NotFound) if it was not active.
    pub async fn end_device(&mut self, id: &str, state: &str, now: i64) -> Result<(Vec<String>, u64)> {
        let n = sqlx::query("UPDATE devices SET state = $1, state_changed_at = $2 WHERE id = $3 AND state = 'active'")
            .bind(state)
            .bind(now)
            .bind(id)
            .execute(self.conn())
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::Conflict("the device is not active".into()));
        }
        let methods: Vec<String> = sqlx::query("SELECT id FROM methods WHERE device_id = $1")
            .bind(id)
            .fetch_all(self.conn())
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        sqlx::query("DELETE FROM methods WHERE device_id = $1")
            .bind(id)
            .execute(self.conn())
            .await?;
        let sessions = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(self.conn())
            .await?
            .rows_affected();
        Ok((methods, sessions))
    }

    pub async fn bind_method_device(&mut self, user_id: &str, method_id: &str, device_id: &str) -> Result<()> {
        let n = sqlx::query(
            "UPDATE methods SET device_id = $1 WHERE id = $2 AND user_id = $3
               AND EXISTS (SELECT 1 FROM devices d WHERE d.id = $1 AND d.user_id = $3 AND d.state = 'active')",
        )
        .bind(device_id)
        .bind(method_id)
        .bind(user_id)
        .execute(self.conn())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound("method or active device of this user".into()));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_case(
        &mut self,
        id: &str,
        user_id: &str,
        scenario: &str,
        state: &str,
        case_json: &str,
        opened_by: &str,
        opened_at: i64,
        deadline: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO helpdesk_cases (id, user_id, scenario, state, case_json, opened_by, opened_at, deadline, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7)",
        )
        .bind(id)
        .bind(user_id)
        .bind(scenario)
        .bind(state)
        .bind(case_json)
        .bind(opened_by)
        .bind(opened_at)
        .bind(deadline)
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Compare-and-swap a case's state, so two agents cannot both record the
    /// same step.
    pub async fn update_case(
        &mut self,
        id: &str,
        expected_json: &str,
        state: &str,
        next_json: &str,
        now: i64,
    ) -> Result<()> {
        let n = sqlx::query(
            "UPDATE helpdesk_cases SET case_json = $1, state = $2, updated_at = $3 WHERE id = $4 AND case_json = $5",
        )
        .bind(next_json)
        .bind(state)
        .bind(now)
        .bind(id)
        .bind(expected_json)
        .execute(self.conn())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::Conflict(
                "the case was changed by someone else; reload it".into(),
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    /// A privileged change request waiting for a second approver.
    pub async fn insert_change_request(&mut self, r: &NewChangeRequest<'_>, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO tap_requests (id, user_id, requested_by, verification_json, lifetime_minutes, single_use, starts_in_minutes, state, created_at, kind, subject, requester_user_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending_approval', $8, $9, $10, $11)",
        )
        .bind(r.id)
        .bind(r.user_id)
        .bind(r.requested_by)
        .bind(r.verification_json)
        .bind(r.lifetime_minutes)
        .bind(r.single_use as i64)
        .bind(r.starts_in_minutes)
        .bind(now)
        .bind(r.kind)
        .bind(r.subject)
        .bind(r.requester_user_id.map(str::to_owned))
        .execute(self.conn())
        .await?;
        Ok(())
    }

    /// Approve a pending request, naming the approving human.
    pub async fn approve_change_request(
        &mut self,
        id: &str,
        actor: &str,
        approver_user_id: &str,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE tap_requests SET state = 'approved', decided_by = $1, decided_at = $2, approver_user_id = $3
             WHERE id = $4 AND state = 'pending_approval'",
        )
        .bind(actor)
        .bind(now)
        .bind(approver_user_id)
        .bind(id)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Move a request from `from` to `to`; false if someone else moved it first.
    pub async fn decide_tap_request(
        &mut self,
        id: &str,
        from: &str,
        to: &str,
        actor: Option<&str>,
        tap_id: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE tap_requests SET state = $1, decided_by = COALESCE($2, decided_by), decided_at = CASE WHEN $2 IS NULL THEN decided_at ELSE $3 END,
                    tap_id = COALESCE($4, tap_id)
             WHERE id = $5 AND state = $6",
        )
        .bind(to)
        .bind(actor.map(str::to_owned))
        .bind(now)
        .bind(tap_id.map(str::to_owned))
        .bind(id)
        .bind(from)
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}

impl Store {
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRecord>> {
        sqlx::query("SELECT * FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(device_from_row)
            .transpose()
    }

    pub async fn devices_for_user(&self, user_id: &str) -> Result<Vec<DeviceRecord>> {
        sqlx::query("SELECT * FROM devices WHERE user_id = $1 ORDER BY registered_at, id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(device_from_row)
            .collect()
    }

    pub async fn case(&self, id: &str) -> Result<Option<CaseRecord>> {
        sqlx::query("SELECT * FROM helpdesk_cases WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(case_from_row)
            .transpose()
    }

    pub async fn list_cases(&self, user_id: Option<&str>, open_only: bool) -> Result<Vec<CaseRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM helpdesk_cases WHERE ($1 IS NULL OR user_id = $1) AND ($2 = 0 OR state = 'open') ORDER BY opened_at DESC, id LIMIT 500",
        )
        .bind(user_id.map(str::to_owned))
        .bind(open_only as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(case_from_row).collect()
    }

    pub async fn tap_request(&self, id: &str) -> Result<Option<TapRequestRecord>> {
        sqlx::query("SELECT * FROM tap_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tap_request_from_row)
            .transpose()
    }

    /// The used request of `kind` whose change produced `result_id`.
    pub async fn change_request_for_result(&self, kind: &str, result_id: &str) -> Result<Option<TapRequestRecord>> {
        sqlx::query("SELECT * FROM tap_requests WHERE kind = $1 AND tap_id = $2 AND state = 'used'")
            .bind(kind)
            .bind(result_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tap_request_from_row)
            .transpose()
    }

    pub async fn list_tap_requests(&self, state: Option<&str>) -> Result<Vec<TapRequestRecord>> {
        sqlx::query("SELECT * FROM tap_requests WHERE ($1 IS NULL OR state = $1) ORDER BY created_at DESC LIMIT 500")
            .bind(state.map(str::to_owned))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(tap_request_from_row)
            .collect()
    }

    /// The most recent successful sign-in of a user since `since` that did
    /// not use a Temporary Access Pass: proof that normal sign-in works.
    pub async fn normal_signin_since(&self, user_id: &str, since: i64) -> Result<Option<SignInSummary>> {
        let rows = sqlx::query(
            "SELECT at, methods_json, acr FROM signins WHERE user_id = $1 AND result = 'success' AND at >= $2 ORDER BY at DESC LIMIT 50",
        )
        .bind(user_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let methods: Vec<String> = crate::json_vec(&r.try_get::<String, _>("methods_json")?, "methods")?;
            if !methods.iter().any(|m| m == "temporary_access_pass") {
                return Ok(Some(SignInSummary {
                    at: r.try_get("at")?,
                    methods,
                    acr: r.try_get("acr")?,
                }));
            }
        }
        Ok(None)
    }
}
