//! Temporary Access Passes: issuing (with identity verification), listing
//! the live ones, revoking one, checking a pass a sign-in flow carries, and
//! the first administrator's bootstrap pass. The pass's own rules
//! (lifetimes, single use, when it is usable) are `latchkey_core::tap`'s.

use latchkey_core::account;
use latchkey_core::helpdesk::Scenario;
use latchkey_core::tap::{self, ChangeKind, IdentityVerification, TapRequest, TapState, VerificationMethod};
use latchkey_core::Role;
use latchkey_store::{new_id, AuditEntry, NewChangeRequest, NewUser, TapRecord, UserRecord, WriteTx};
use rand::rngs::OsRng;
use serde_json::json;

use crate::error::{ServiceError, ServiceResult};

use crate::app::*;
use crate::recovery::two_person_rule_applies;

impl App {
    // ---- temporary access passes ---------------------------------------

    /// Passes of `user` that can still be used, or will be after a delayed
    /// start: the helpdesk must see a pass it forgot about. The caller has
    /// read the user through [`App::methods`] or [`App::get_user`].
    pub async fn live_passes(&self, user: &UserRecord) -> ServiceResult<Vec<TapRecord>> {
        let now = self.now();
        Ok(self
            .store
            .taps_for_user(&user.id)
            .await?
            .into_iter()
            .filter(|t| {
                matches!(
                    tap::tap_state(t.starts_at, t.expires_at, t.single_use, t.used_at, now),
                    TapState::Usable | TapState::NotYetValid
                )
            })
            .collect())
    }

    /// The live passes of `username` (helpdesk, admin): what an agent may revoke.
    pub async fn passes(&self, p: &Principal, username: &str) -> ServiceResult<(UserRecord, Vec<TapRecord>)> {
        if !p.has_role(Role::Helpdesk) {
            return Err(ServiceError::Forbidden(
                "listing Temporary Access Passes needs the helpdesk or admin role".into(),
            ));
        }
        let user = self.user(username).await?;
        let live = self.live_passes(&user).await?;
        Ok((user, live))
    }

    /// Issue a pass after a recorded identity verification. For a privileged
    /// user the pass does not exist yet: a request waits for a second person
    /// (see `approve_change_request`).
    pub async fn issue_tap(
        &self,
        p: &Principal,
        username: &str,
        lifetime_minutes: Option<i64>,
        single_use: bool,
        starts_in_minutes: Option<i64>,
        verification: Option<IdentityVerification>,
    ) -> ServiceResult<TapOutcome> {
        self.issue_tap_for(
            p,
            username,
            lifetime_minutes,
            single_use,
            starts_in_minutes,
            verification,
            None,
        )
        .await
    }

    /// [`App::issue_tap`] for a helpdesk case of `scenario`, whose runbook
    /// bounds the pass's lifetime.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn issue_tap_for(
        &self,
        p: &Principal,
        username: &str,
        lifetime_minutes: Option<i64>,
        single_use: bool,
        starts_in_minutes: Option<i64>,
        verification: Option<IdentityVerification>,
        scenario: Option<Scenario>,
    ) -> ServiceResult<TapOutcome> {
        if !p.has_role(Role::Helpdesk) {
            return Err(ServiceError::Forbidden(
                "issuing a Temporary Access Pass needs the helpdesk or admin role".into(),
            ));
        }
        let user = self.user(username).await?;
        if user.privileged_at(self.now()) && !p.is_admin() {
            // A pass signs in as its user: a helpdesk agent must not be able
            // to become an administrator with one.
            return Err(ServiceError::Forbidden(
                "a pass for a privileged user can only be issued by an administrator".into(),
            ));
        }
        let now = self.now();
        let request = TapRequest {
            lifetime_minutes,
            single_use,
            starts_in_minutes,
            verification: verification.clone(),
            // One person's sessions and tokens are all that person.
            issuer_is_subject: p.acts_for(&user),
            scenario,
        };
        let grant = self.config.tap.validate(&request, now)?;
        let verification = serde_json::to_value(&verification).expect("verification serialises");
        if two_person_rule_applies(p, &user, self.now()) {
            tap::check_change_request(p.human_id(), Some(&user.id))?;
            let id = new_id();
            let mut tx = self.store.write().await?;
            tx.insert_change_request(
                &NewChangeRequest {
                    id: &id,
                    user_id: &user.id,
                    kind: ChangeKind::Tap.as_str(),
                    subject: "",
                    requested_by: &p.actor(),
                    requester_user_id: p.human_id(),
                    verification_json: &verification.to_string(),
                    lifetime_minutes: (grant.expires_at - grant.starts_at) / 60,
                    single_use: grant.single_use,
                    starts_in_minutes: (grant.starts_at - now) / 60,
                },
                now,
            )
            .await?;
            tx.audit(
                &AuditEntry::new(
                    p.actor(),
                    "tap.request",
                    format!("user:{}", user.username),
                    json!({ "request_id": id, "reason": "privileged user: a second approver is required", "verification": verification }),
                ),
                self.clock.now_ms(),
            )
            .await?;
            tx.commit().await?;
            return Ok(TapOutcome::PendingApproval { request_id: id });
        }
        let mut tx = self.store.write().await?;
        let issued = self
            .insert_tap(&mut tx, &user, &p.actor(), &verification, &grant, None, now)
            .await?;
        tx.commit().await?;
        Ok(TapOutcome::Issued(issued))
    }

    /// Revoke a pass (helpdesk, admin): it signs nobody in from now on, not
    /// even a sign-in that already proved it, and the sessions opened with a
    /// pass end with it. A pass already used once may still have opened a
    /// session, so it can be revoked until it expires.
    pub async fn revoke_tap(
        &self,
        p: &Principal,
        username: &str,
        tap_id: &str,
        reason: Option<&str>,
    ) -> ServiceResult<TapRevocation> {
        if !p.has_role(Role::Helpdesk) {
            return Err(ServiceError::Forbidden(
                "revoking a Temporary Access Pass needs the helpdesk or admin role".into(),
            ));
        }
        let reason = reason.map(account::check_reason).transpose()?;
        let user = self.user(username).await?;
        let t = self
            .store
            .tap(&user.id, tap_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("pass".into()))?;
        let mut tx = self.store.write().await?;
        let out = self
            .revoke_tap_in(&mut tx, &p.actor(), &user, &t, reason.as_deref(), None)
            .await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Revoke pass `t` of `user` inside `tx`, audited (`case_id`: the
    /// helpdesk case whose cancellation revokes it).
    pub(crate) async fn revoke_tap_in(
        &self,
        tx: &mut WriteTx,
        actor: &str,
        user: &UserRecord,
        t: &TapRecord,
        reason: Option<&str>,
        case_id: Option<&str>,
    ) -> ServiceResult<TapRevocation> {
        let now = self.now();
        let tap_id = t.id.as_str();
        if t.revoked_at.is_some() {
            return Err(ServiceError::InvalidState("the pass is already revoked".into()));
        }
        if now >= t.expires_at {
            return Err(ServiceError::InvalidState(
                "the pass has expired; there is nothing left to revoke".into(),
            ));
        }
        if !tx.revoke_tap(&user.id, tap_id, actor, reason, now).await? {
            return Err(ServiceError::InvalidState("the pass is already revoked".into()));
        }
        let sessions_ended = tx.end_pass_sessions(&user.id, now).await?;
        tx.audit(
            &AuditEntry::new(
                actor,
                "tap.revoke",
                format!("user:{}", user.username),
                json!({ "tap_id": tap_id, "reason": reason, "case_id": case_id, "sessions_ended": sessions_ended, "was_used": t.used_at.is_some() }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        Ok(TapRevocation {
            tap_id: tap_id.to_owned(),
            revoked_at: now,
            sessions_ended,
        })
    }

    /// The pass a sign-in flow proved in an earlier step, if it carries one:
    /// refused once revoked, spent or expired, so revoking a pass also stops
    /// a sign-in that already started with it.
    pub(crate) async fn flow_pass(
        &self,
        user: Option<&UserRecord>,
        pass_id: Option<&str>,
    ) -> ServiceResult<Option<TapRecord>> {
        let Some(pass_id) = pass_id else { return Ok(None) };
        let now = self.now();
        let t = match user {
            Some(u) => self.store.tap(&u.id, pass_id).await?,
            None => None,
        };
        match t {
            Some(t)
                if t.revoked_at.is_none()
                    && tap::tap_state(t.starts_at, t.expires_at, t.single_use, t.used_at, now) == TapState::Usable =>
            {
                Ok(Some(t))
            }
            _ => Err(ServiceError::InvalidPass),
        }
    }

    /// Generate, store (hashed), audit and announce a pass inside `tx`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn insert_tap(
        &self,
        tx: &mut latchkey_store::WriteTx,
        user: &UserRecord,
        actor: &str,
        verification: &serde_json::Value,
        grant: &tap::TapGrant,
        approved_by: Option<&str>,
        now: i64,
    ) -> ServiceResult<IssuedTap> {
        let pass = tap::generate_pass(&mut OsRng);
        let id = new_id();
        tx.insert_tap(
            &id,
            &user.id,
            &tap::hash_pass_input(self.keys.pepper(), &pass)?,
            actor,
            verification,
            grant.single_use,
            grant.starts_at,
            grant.expires_at,
            now,
        )
        .await?;
        tx.audit(
            &AuditEntry::new(
                actor,
                "tap.issue",
                format!("user:{}", user.username),
                json!({ "tap_id": id, "starts_at": grant.starts_at, "expires_at": grant.expires_at, "single_use": grant.single_use, "verification": verification, "approved_by": approved_by }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.notify(
            &user.id,
            "outbox",
            "A Temporary Access Pass was issued for your account",
            &format!(
                "{actor} issued a Temporary Access Pass for you. If you did not ask the helpdesk for one, call them now."
            ),
            now,
        )
        .await?;
        Ok(IssuedTap {
            id,
            pass,
            starts_at: grant.starts_at,
            expires_at: grant.expires_at,
            single_use: grant.single_use,
        })
    }

    /// First start: create the first administrator with a one-time pass, so
    /// the very first account has a bootstrap path that needs no phone.
    /// Returns `None` when users already exist (or another node won the race).
    pub async fn bootstrap_if_empty(&self) -> ServiceResult<Option<Bootstrap>> {
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let now = self.now();
        let pass = tap::generate_pass(&mut OsRng);
        let expires_at = now + self.config.bootstrap_pass_minutes * 60;
        let mut tx = self.store.write().await?;
        // Re-check under the audit-head lock: two nodes starting together on
        // one PostgreSQL must not both bootstrap.
        if tx.user_by_username(BOOTSTRAP_ADMIN).await?.is_some() {
            return Ok(None);
        }
        let user = tx
            .insert_user(
                &NewUser {
                    username: BOOTSTRAP_ADMIN.into(),
                    display_name: "First administrator".into(),
                    department: None,
                    groups: vec![],
                    roles: vec![Role::Admin],
                },
                now,
            )
            .await?;
        let id = new_id();
        let verification =
            json!({ "method": VerificationMethod::Bootstrap, "note": "created by latchkey serve on first start" });
        tx.insert_tap(
            &id,
            &user.id,
            &tap::hash_pass_input(self.keys.pepper(), &pass)?,
            "system",
            &verification,
            true,
            now,
            expires_at,
            now,
        )
        .await?;
        let ms = self.clock.now_ms();
        tx.audit(
            &AuditEntry::new(
                "system",
                "user.create",
                format!("user:{BOOTSTRAP_ADMIN}"),
                json!({ "roles": ["admin"], "bootstrap": true }),
            ),
            ms,
        )
        .await?;
        tx.audit(
            &AuditEntry::new(
                "system",
                "tap.issue",
                format!("user:{BOOTSTRAP_ADMIN}"),
                json!({ "tap_id": id, "expires_at": expires_at, "single_use": true, "verification": verification }),
            ),
            ms,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Bootstrap {
            username: BOOTSTRAP_ADMIN.into(),
            pass,
            expires_at,
        }))
    }
}
