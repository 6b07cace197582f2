//! Temporary Access Passes: issuing (with identity verification), listing
//! the live ones, and the first administrator's bootstrap pass. The pass's
//! own rules (lifetimes, single use, when it is usable) are
//! `latchkey_core::tap`'s.

use latchkey_core::tap::{self, ChangeKind, IdentityVerification, TapRequest, TapState, VerificationMethod};
use latchkey_core::Role;
use latchkey_store::{new_id, AuditEntry, NewChangeRequest, NewUser, UserRecord};
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
    pub async fn live_passes(&self, user: &UserRecord) -> ServiceResult<Vec<latchkey_store::TapRecord>> {
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
        if !p.has_role(Role::Helpdesk) {
            return Err(ServiceError::Forbidden(
                "issuing a Temporary Access Pass needs the helpdesk or admin role".into(),
            ));
        }
        let user = self.user(username).await?;
        if user.privileged() && !p.is_admin() {
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
        };
        let grant = self.config.tap.validate(&request, now)?;
        let verification = serde_json::to_value(&verification).expect("verification serialises");
        if two_person_rule_applies(p, &user) {
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
