//! A user's authentication methods: listing, authenticator-app enrolment,
//! recovery codes, removal, and the notifications those changes send.

use latchkey_core::otp::{self, OtpAlgorithm, OtpError, TotpParams};
use latchkey_core::tap::ChangeKind;
use latchkey_core::{MethodKind, MethodState};
use latchkey_store::{method_id, AuditEntry, MethodRecord, NewMethod, UserRecord};
use rand::rngs::OsRng;
use serde_json::json;
use zeroize::Zeroizing;

use crate::error::{ServiceError, ServiceResult};

use crate::app::*;
use crate::recovery::{same_requester, two_person_rule_applies};
use crate::signin::via_tap;

impl App {
    // ---- methods -------------------------------------------------------

    pub async fn methods(&self, p: &Principal, username: &str) -> ServiceResult<(UserRecord, Vec<MethodRecord>)> {
        let user = self.get_user(p, username).await?;
        let methods = self.store.methods_for_user(&user.id).await?;
        Ok((user, methods))
    }

    /// Start enrolling an authenticator app. For a privileged user enrolled
    /// by someone else, `approval` names the approved request.
    pub async fn enroll_totp(
        &self,
        p: &Principal,
        username: &str,
        label: Option<String>,
        algorithm: Option<String>,
        digits: Option<u32>,
        approval: Option<&str>,
    ) -> ServiceResult<TotpEnrollment> {
        let user = self.user(username).await?;
        let approved = self
            .authorize_credential_change(p, &user, ChangeKind::MethodEnroll, "totp", approval)
            .await?;
        let algorithm = match algorithm {
            Some(a) => OtpAlgorithm::parse(&a)?,
            None => OtpAlgorithm::Sha1,
        };
        let params = TotpParams::new(algorithm, digits.unwrap_or(6))?;
        let label = clean_label(label, "Authenticator app")?;
        let secret = Zeroizing::new(otp::generate_secret(&mut OsRng, algorithm));
        let id = method_id();
        let sealed = self.keys.seal(&secret, &id);
        let now = self.now();
        let mut tx = self.store.write().await?;
        if let Some(req) = &approved {
            // The request now names the method, so its confirmation is covered.
            self.consume_change(&mut tx, req, Some(&id)).await?;
        }
        tx.insert_method(
            NewMethod {
                id: &id,
                user_id: &user.id,
                kind: MethodKind::Totp,
                label: &label,
                state: MethodState::Pending,
                secret_sealed: Some(sealed),
                params: serde_json::to_value(params).expect("params serialise"),
            },
            now,
        )
        .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "method.enroll.start",
                format!("user:{}", user.username),
                json!({ "method_id": id, "kind": "totp", "label": label, "algorithm": algorithm, "digits": params.digits }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        let method = self
            .store
            .method(&user.id, &id)
            .await?
            .ok_or_else(|| ServiceError::Internal("method vanished".into()))?;
        Ok(TotpEnrollment {
            method,
            secret_base32: otp::encode_secret(&secret),
            otpauth_uri: otp::otpauth_uri(&self.config.issuer, &user.username, &secret, &params),
        })
    }

    pub(crate) fn totp_secret(&self, m: &MethodRecord) -> ServiceResult<(Zeroizing<Vec<u8>>, TotpParams)> {
        let sealed = m
            .secret_sealed
            .as_deref()
            .ok_or_else(|| ServiceError::Internal("TOTP method without a secret".into()))?;
        let secret = self.keys.open(sealed, &m.id)?;
        let params: TotpParams = serde_json::from_value(m.params.clone())
            .map_err(|e| ServiceError::Internal(format!("TOTP params: {e}")))?;
        Ok((secret, params))
    }

    /// The otpauth URI of a TOTP method still waiting for its first code (for
    /// the QR code). Once confirmed, the secret is never shown again.
    pub async fn pending_totp_uri(&self, p: &Principal, username: &str, id: &str) -> ServiceResult<String> {
        let user = self.user(username).await?;
        self.require_enrolment(p, &user, id).await?;
        let m = self
            .store
            .method(&user.id, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("method".into()))?;
        if m.kind != MethodKind::Totp || m.state != MethodState::Pending {
            return Err(ServiceError::NotFound("pending TOTP method".into()));
        }
        let (secret, params) = self.totp_secret(&m)?;
        Ok(otp::otpauth_uri(&self.config.issuer, &user.username, &secret, &params))
    }

    pub async fn confirm_totp(
        &self,
        p: &Principal,
        username: &str,
        id: &str,
        code: &str,
    ) -> ServiceResult<MethodRecord> {
        let user = self.user(username).await?;
        self.require_enrolment(p, &user, id).await?;
        let m = self
            .store
            .method(&user.id, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound("method".into()))?;
        if m.kind != MethodKind::Totp {
            return Err(ServiceError::NotFound("TOTP method".into()));
        }
        if m.state != MethodState::Pending {
            return Err(ServiceError::InvalidState("this method is already confirmed".into()));
        }
        let (secret, params) = self.totp_secret(&m)?;
        let now = self.now();
        let step = match otp::verify_totp(&secret, code, now.max(0) as u64, &params, self.config.totp_window, None) {
            Ok(step) => step,
            Err(OtpError::Invalid) => {
                return Err(ServiceError::WrongConfirmationCode);
            }
            Err(e) => return Err(e.into()),
        };
        let mut tx = self.store.write().await?;
        if !tx.activate_method(&m.id, Some(step as i64), now).await? {
            return Err(ServiceError::InvalidState("this method is already confirmed".into()));
        }
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "method.add",
                format!("user:{}", user.username),
                json!({ "method_id": m.id, "kind": "totp", "label": m.label }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.notify(
            &user.id,
            "outbox",
            "A new sign-in method was added to your account",
            &format!(
                "An authenticator app ('{}') was registered{}. If this was not you, call the helpdesk now.",
                m.label,
                if via_tap(p) {
                    " while signed in with a Temporary Access Pass"
                } else {
                    ""
                }
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        self.store
            .method(&user.id, id)
            .await?
            .ok_or_else(|| ServiceError::Internal("method vanished".into()))
    }

    pub async fn regenerate_recovery_codes(
        &self,
        p: &Principal,
        username: &str,
        approval: Option<&str>,
    ) -> ServiceResult<(String, Vec<String>)> {
        let user = self.user(username).await?;
        let approved = self
            .authorize_credential_change(p, &user, ChangeKind::MethodEnroll, "recovery_codes", approval)
            .await?;
        let set = latchkey_core::recovery::generate(&mut OsRng, self.keys.pepper());
        let id = method_id();
        let now = self.now();
        let mut tx = self.store.write().await?;
        if let Some(req) = &approved {
            self.consume_change(&mut tx, req, Some(&id)).await?;
        }
        let replaced = tx.replace_recovery_codes(&user.id, &id, &set.hashes, now).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                if replaced.is_empty() {
                    "method.add"
                } else {
                    "method.recovery_codes.regenerate"
                },
                format!("user:{}", user.username),
                json!({ "method_id": id, "kind": "recovery_codes", "count": set.codes.len(), "replaced": replaced }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.notify(
            &user.id,
            "outbox",
            "New recovery codes were generated",
            "A new set of recovery codes was generated; the old set no longer works. If this was not you, call the helpdesk now.",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok((id, set.codes))
    }

    /// Remove a method. For a privileged user's method removed by someone
    /// else, `approval` names the approved request.
    pub async fn delete_method(
        &self,
        p: &Principal,
        username: &str,
        id: &str,
        approval: Option<&str>,
    ) -> ServiceResult<()> {
        let user = self.user(username).await?;
        let methods = self.store.methods_for_user(&user.id).await?;
        let m = methods
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| ServiceError::NotFound("method".into()))?;
        let approved = self
            .authorize_credential_change(p, &user, ChangeKind::MethodRemove, id, approval)
            .await?;
        if p.is_user(&user) && !p.is_admin() {
            let usable = self.usable_second_factor_methods(&user).await?;
            if usable.iter().any(|u| u.id == m.id) && usable.len() == 1 {
                return Err(ServiceError::Conflict(
                    "this is your last second factor; register another before removing it".into(),
                ));
            }
        }
        let now = self.now();
        let mut tx = self.store.write().await?;
        if let Some(req) = &approved {
            self.consume_change(&mut tx, req, Some(id)).await?;
        }
        tx.delete_method(&user.id, id).await?;
        let (sessions, grants) = self
            .end_sessions_for_credential_change(&mut tx, p, &user, "method_removed", now)
            .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "method.remove",
                format!("user:{}", user.username),
                json!({ "method_id": m.id, "kind": m.kind, "label": m.label, "sessions_ended": sessions, "oidc_grants_revoked": grants }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.notify(
            &user.id,
            "outbox",
            "A sign-in method was removed from your account",
            &format!(
                "The method '{}' was removed. If this was not you, call the helpdesk now.",
                m.label
            ),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Finishing an enrolment (its QR code, its first code): the same rules
    /// as starting one, where an approved start covers its method.
    async fn require_enrolment(&self, p: &Principal, user: &UserRecord, method_id: &str) -> ServiceResult<()> {
        if !two_person_rule_applies(p, user, self.now()) {
            return self.require_register(p, user).await;
        }
        p.require_admin()?;
        let started = self
            .store
            .change_request_for_result(ChangeKind::MethodEnroll.as_str(), method_id)
            .await?;
        match started {
            Some(req) if req.user_id == user.id && same_requester(&req, p) => Ok(()),
            _ => self.require_register(p, user).await,
        }
    }

    pub async fn notifications(
        &self,
        p: &Principal,
        username: &str,
    ) -> ServiceResult<Vec<latchkey_store::NotificationRecord>> {
        let user = self.get_user(p, username).await?;
        Ok(self.store.notifications(&user.id).await?)
    }
}
