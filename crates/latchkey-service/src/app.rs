//! The application service: every operation the HTTP API and the CLI offer,
//! written once. Handlers and commands are thin shells over these methods.
//! Each method loads what the domain needs from the store, lets
//! `latchkey-core` decide, and persists the decision with its audit event in
//! one transaction.

use std::sync::Arc;

use latchkey_core::otp::{self, OtpAlgorithm, OtpError, TotpParams};
use latchkey_core::password::{check_password_policy, verify_password, PasswordParams};
use latchkey_core::secret::{keyed_hash, random_token};
use latchkey_core::signin::{SignInFlow, SignInState};
use latchkey_core::softlock::LockPolicy;
use latchkey_core::tap::{self, IdentityVerification, TapPolicy, TapRequest, TapState, VerificationMethod};
use latchkey_core::{AuthStrength, MethodKind, MethodState, Role, UserState, Username, VerifyMethod};
use latchkey_store::{
    method_id, new_id, ApiTokenRecord, AuditEntry, FlowRecord, Keys, MethodRecord, NewMethod, NewUser, SessionRecord,
    SignInLogEntry, Store, UserRecord,
};
use rand::rngs::OsRng;
use serde_json::json;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::error::{ServiceError, ServiceResult};

pub const SESSION_PREFIX: &str = "lk_s_";
pub const API_TOKEN_PREFIX: &str = "lk_at_";
pub const FLOW_PREFIX: &str = "lk_f_";
pub const BOOTSTRAP_ADMIN: &str = "admin";
pub const API_SCOPE_ADMIN: &str = "admin";
pub const API_SCOPE_MDM: &str = "mdm";

#[derive(Debug, Clone)]
pub struct Config {
    /// Shown in authenticator apps next to the account.
    pub issuer: String,
    /// Base URL people reach the server at (for printed links).
    pub public_url: String,
    pub password: PasswordParams,
    pub tap: TapPolicy,
    pub session_idle_secs: i64,
    pub session_absolute_secs: i64,
    /// How recent a sign-in must be to register or remove methods.
    pub fresh_auth_secs: i64,
    pub user_lock: LockPolicy,
    pub source_lock: LockPolicy,
    pub totp_window: u64,
    pub bootstrap_pass_minutes: i64,
    /// Longest a policy exception may last.
    pub exception_max_days: i64,
    /// How often break-glass accounts must be test-signed-in.
    pub break_glass_test_interval_days: i64,
    pub oidc: crate::oidc::OidcConfig,
    /// WebAuthn relying party ID; derived from `public_url` when unset.
    pub rp_id: Option<String>,
    /// WebAuthn origin; derived from `public_url` when unset.
    pub rp_origin: Option<String>,
    /// Sign-in log retention, detections, alert sinks (crate::ops).
    pub ops: crate::ops::OpsConfig,
    /// Push approval: fatigue limits, prompt and enrollment lifetimes.
    pub push: crate::push::PushConfig,
    /// SMS/voice codes: limits, gateway, privileged-user rule.
    pub sms: crate::sms::SmsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            issuer: "Latchkey".into(),
            public_url: "http://127.0.0.1:8080".into(),
            password: PasswordParams::default(),
            tap: TapPolicy::default(),
            session_idle_secs: 30 * 60,
            session_absolute_secs: 8 * 3600,
            fresh_auth_secs: 10 * 60,
            user_lock: LockPolicy::USER_DEFAULT,
            source_lock: LockPolicy::SOURCE_DEFAULT,
            totp_window: 1,
            bootstrap_pass_minutes: 8 * 60,
            exception_max_days: 30,
            break_glass_test_interval_days: 90,
            oidc: Default::default(),
            rp_id: None,
            rp_origin: None,
            ops: Default::default(),
            push: Default::default(),
            sms: Default::default(),
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// An automation token; scope `admin` acts as an administrator.
    ApiToken(ApiTokenRecord),
    Session {
        session: SessionRecord,
        user: UserRecord,
    },
    /// The local operator running the CLI against the data directory.
    Operator,
}

impl Principal {
    pub fn actor(&self) -> String {
        match self {
            Principal::ApiToken(t) => format!("token:{}", t.name),
            Principal::Session { user, .. } => format!("user:{}", user.username),
            Principal::Operator => "cli:operator".into(),
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        match self {
            Principal::ApiToken(t) => t.scopes.iter().any(|s| s == API_SCOPE_ADMIN),
            Principal::Session { user, .. } => user.roles.contains(&role) || user.roles.contains(&Role::Admin),
            Principal::Operator => true,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(Role::Admin)
    }

    /// An API token scope (admins hold every scope).
    pub fn has_scope(&self, scope: &str) -> bool {
        match self {
            Principal::ApiToken(t) => t.scopes.iter().any(|s| s == scope || s == API_SCOPE_ADMIN),
            other => other.is_admin(),
        }
    }

    pub fn is_user(&self, target: &UserRecord) -> bool {
        matches!(self, Principal::Session { user, .. } if user.id == target.id)
    }

    pub fn require_admin(&self) -> ServiceResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ServiceError::Forbidden("this needs the admin role".into()))
        }
    }

    /// Read access to a user's data: the user, helpdesk, auditors, admins.
    fn require_read(&self, target: &UserRecord) -> ServiceResult<()> {
        if self.is_user(target) || self.has_role(Role::Helpdesk) || self.has_role(Role::Auditor) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden("you may only see your own account".into()))
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SignInContext {
    pub application: Option<String>,
    pub source_ip: Option<String>,
    pub device_id: Option<String>,
    /// The application a web sign-in continues to (an OIDC client). The
    /// session serves both, so both applications' policies apply.
    pub continues_to: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FlowView {
    pub flow_id: String,
    pub state: String,
    pub allowed_methods: Vec<VerifyMethod>,
    pub expires_at: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyOutcome {
    pub flow_id: String,
    pub state: String,
    pub allowed_methods: Vec<VerifyMethod>,
    pub amr: Vec<String>,
    pub methods: Vec<VerifyMethod>,
    pub acr: Option<AuthStrength>,
    pub session_token: Option<String>,
    pub session_expires_at: Option<i64>,
    /// Rollout campaigns asking this user to register a stronger method
    /// before their deadline (only on a completed sign-in).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registration_campaigns: Vec<latchkey_core::rollout::RegistrationNudge>,
}

/// What a verify request carries.
#[derive(Debug, Clone)]
pub enum Proof {
    Password(String),
    Code(String),
    Pass(String),
    /// A WebAuthn assertion (PublicKeyCredential JSON, base64url fields).
    Assertion(serde_json::Value),
    /// Push: the flow's prompt must have been approved on the device.
    Push,
}

pub struct TotpEnrollment {
    pub method: MethodRecord,
    pub secret_base32: String,
    pub otpauth_uri: String,
}

pub struct IssuedTap {
    pub id: String,
    pub pass: String,
    pub starts_at: i64,
    pub expires_at: i64,
    pub single_use: bool,
}

/// A pass, or a request waiting for a second approver.
pub enum TapOutcome {
    Issued(IssuedTap),
    PendingApproval { request_id: String },
}

pub struct Bootstrap {
    pub username: String,
    pub pass: String,
    pub expires_at: i64,
}

pub struct App {
    pub(crate) store: Store,
    pub(crate) keys: Arc<Keys>,
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    /// A real Argon2 hash that no password matches, verified against for
    /// unknown users so timing doesn't reveal which usernames exist.
    dummy_hash: String,
    /// The parsed conditional-access set, re-read when its generation changes.
    pub(crate) policy_cache: crate::policy::PolicyCache,
    /// Detection engine wake-ups (crate::ops).
    pub(crate) ops: crate::ops::OpsState,
}

fn user_key(username: &str) -> String {
    format!("user:{username}")
}
fn source_key(ip: &str) -> String {
    format!("src:{ip}")
}

impl App {
    pub fn new(store: Store, keys: Keys, config: Config, clock: Arc<dyn Clock>) -> ServiceResult<Self> {
        let dummy_hash = config.password.hash("latchkey dummy password that nobody has")?;
        Ok(Self {
            store,
            keys: Arc::new(keys),
            config,
            clock,
            dummy_hash,
            policy_cache: Default::default(),
            ops: Default::default(),
        })
    }

    /// Open the store (SQLite in `data`, or PostgreSQL at `database_url`) and
    /// the master key (from `data`, or the environment).
    pub async fn open(
        data: &std::path::Path,
        database_url: Option<&str>,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> ServiceResult<Self> {
        let store = match database_url {
            Some(url) => Store::connect(url).await?,
            None => Store::open_sqlite(data).await?,
        };
        let keys = Keys::load_or_create(data)?;
        Self::new(store, keys, config, clock)
    }

    /// The store itself, for tests that seed or tamper with data behind the
    /// service's back. Only with the `test-support` feature, which only test
    /// builds enable: no transport can reach the store.
    #[cfg(feature = "test-support")]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The sealing keys, for tests (see [`App::store`]).
    #[cfg(feature = "test-support")]
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether the database answers (readiness).
    pub async fn ready(&self) -> ServiceResult<()> {
        Ok(self.store.ping().await?)
    }

    /// Close the database connections (at shutdown).
    pub async fn close(&self) {
        self.store.close().await;
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub(crate) fn hash(&self, purpose: &str, value: &str) -> String {
        keyed_hash(self.keys.pepper(), purpose, value)
    }

    /// A keyed hash under the master key's pepper, for values a transport
    /// derives and checks itself (the web pages' CSRF tokens).
    pub fn keyed_hash(&self, purpose: &str, value: &str) -> String {
        self.hash(purpose, value)
    }

    /// The stored key of a sign-in flow id.
    pub(crate) fn hash_flow(&self, flow_id: &str) -> String {
        self.hash("flow", flow_id)
    }

    // ---- users ---------------------------------------------------------

    pub async fn user(&self, username: &str) -> ServiceResult<UserRecord> {
        let name = Username::parse(username)?;
        self.store
            .user_by_username(name.as_str())
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("user '{name}'")))
    }

    pub async fn get_user(&self, p: &Principal, username: &str) -> ServiceResult<UserRecord> {
        let u = self.user(username).await?;
        p.require_read(&u)?;
        Ok(u)
    }

    pub async fn list_users(&self, p: &Principal) -> ServiceResult<Vec<UserRecord>> {
        if !(p.has_role(Role::Helpdesk) || p.has_role(Role::Auditor)) {
            return Err(ServiceError::Forbidden(
                "listing users needs the helpdesk, auditor or admin role".into(),
            ));
        }
        Ok(self.store.list_users().await?)
    }

    pub async fn create_user(
        &self,
        p: &Principal,
        username: &str,
        display_name: &str,
        department: Option<String>,
        groups: Vec<String>,
        roles: Vec<String>,
    ) -> ServiceResult<UserRecord> {
        p.require_admin()?;
        let new = new_user(username, display_name, department, groups, roles)?;
        let now = self.now();
        let mut tx = self.store.write().await?;
        let user = tx.insert_user(&new, now).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "user.create",
                format!("user:{}", user.username),
                json!({ "display_name": user.display_name, "department": user.department, "groups": user.groups, "roles": user.roles }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Change a user's directory attributes (admin). Fields left `None` keep
    /// their value; an empty department clears it. The last active
    /// administrator cannot lose the admin role.
    pub async fn update_user(&self, p: &Principal, username: &str, change: UserChange) -> ServiceResult<UserRecord> {
        p.require_admin()?;
        let before = self.user(username).await?;
        let new = new_user(
            &before.username,
            change.display_name.as_deref().unwrap_or(&before.display_name),
            match change.department {
                Some(d) => Some(d),
                None => before.department.clone(),
            },
            change.groups.unwrap_or_else(|| before.groups.clone()),
            match change.roles {
                Some(r) => r,
                None => before.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            },
        )?;
        if before.roles.contains(&Role::Admin) && !new.roles.contains(&Role::Admin) {
            let admins = self
                .store
                .list_users()
                .await?
                .into_iter()
                .filter(|u| u.state == UserState::Active && u.roles.contains(&Role::Admin))
                .count();
            if admins <= 1 {
                return Err(ServiceError::Conflict(format!(
                    "'{}' is the last active administrator; make someone else an administrator first",
                    before.username
                )));
            }
        }
        let mut tx = self.store.write().await?;
        tx.update_user_profile(&before.id, &new, self.now()).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "user.update",
                format!("user:{}", before.username),
                json!({
                    "before": { "display_name": before.display_name, "department": before.department, "groups": before.groups, "roles": before.roles },
                    "after": { "display_name": new.display_name, "department": new.department, "groups": new.groups, "roles": new.roles },
                }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.user(username).await
    }

    pub async fn set_password(&self, p: &Principal, username: &str, password: &str) -> ServiceResult<()> {
        let user = self.user(username).await?;
        self.require_register(p, &user).await?;
        check_password_policy(password)?;
        let params = self.config.password;
        let pw = Zeroizing::new(password.to_owned());
        let phc = tokio::task::spawn_blocking(move || params.hash(&pw))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let now = self.now();
        let mut tx = self.store.write().await?;
        tx.set_password_hash(&user.id, &phc, now).await?;
        tx.audit(
            &AuditEntry::new(p.actor(), "password.set", format!("user:{}", user.username), json!({})),
            self.clock.now_ms(),
        )
        .await?;
        tx.notify(
            &user.id,
            "outbox",
            "Your password was changed",
            "If this was not you, call the helpdesk now.",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- authorisation helpers ----------------------------------------

    /// Registering or removing methods, or changing a password: an admin, or
    /// the user themself with a fresh strong sign-in (or a TAP session). A
    /// stolen password alone never gets this far: there is no password-only
    /// session.
    pub(crate) async fn require_register(&self, p: &Principal, target: &UserRecord) -> ServiceResult<()> {
        if p.is_admin() {
            return Ok(());
        }
        match p {
            Principal::Session { session, user } if user.id == target.id => {
                let via_tap = session
                    .methods
                    .iter()
                    .any(|m| m == VerifyMethod::TemporaryAccessPass.as_str());
                if via_tap || self.now() - session.authenticated_at <= self.config.fresh_auth_secs {
                    self.check_registration_policy(user, session).await
                } else {
                    Err(ServiceError::ReauthenticationRequired(format!(
                        "sign in again with a second factor (sign-ins older than {} minutes cannot change security info)",
                        self.config.fresh_auth_secs / 60
                    )))
                }
            }
            _ => Err(ServiceError::Forbidden(
                "you may only change your own security info".into(),
            )),
        }
    }

    // ---- methods -------------------------------------------------------

    pub async fn methods(&self, p: &Principal, username: &str) -> ServiceResult<(UserRecord, Vec<MethodRecord>)> {
        let user = self.get_user(p, username).await?;
        let methods = self.store.methods_for_user(&user.id).await?;
        Ok((user, methods))
    }

    pub async fn enroll_totp(
        &self,
        p: &Principal,
        username: &str,
        label: Option<String>,
        algorithm: Option<String>,
        digits: Option<u32>,
    ) -> ServiceResult<TotpEnrollment> {
        let user = self.user(username).await?;
        self.require_register(p, &user).await?;
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

    fn totp_secret(&self, m: &MethodRecord) -> ServiceResult<(Zeroizing<Vec<u8>>, TotpParams)> {
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
        self.require_register(p, &user).await?;
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
        self.require_register(p, &user).await?;
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
    ) -> ServiceResult<(String, Vec<String>)> {
        let user = self.user(username).await?;
        self.require_register(p, &user).await?;
        let set = latchkey_core::recovery::generate(&mut OsRng, self.keys.pepper());
        let id = method_id();
        let now = self.now();
        let mut tx = self.store.write().await?;
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

    pub async fn delete_method(&self, p: &Principal, username: &str, id: &str) -> ServiceResult<()> {
        let user = self.user(username).await?;
        self.require_register(p, &user).await?;
        let methods = self.store.methods_for_user(&user.id).await?;
        let m = methods
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| ServiceError::NotFound("method".into()))?;
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
        tx.delete_method(&user.id, id).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "method.remove",
                format!("user:{}", user.username),
                json!({ "method_id": m.id, "kind": m.kind, "label": m.label }),
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

    pub async fn notifications(
        &self,
        p: &Principal,
        username: &str,
    ) -> ServiceResult<Vec<latchkey_store::NotificationRecord>> {
        let user = self.get_user(p, username).await?;
        Ok(self.store.notifications(&user.id).await?)
    }

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
    /// (see `approve_tap_request`).
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
            issuer_is_subject: p.is_user(&user),
        };
        let grant = self.config.tap.validate(&request, now)?;
        let verification = serde_json::to_value(&verification).expect("verification serialises");
        if user.privileged() {
            let id = new_id();
            let mut tx = self.store.write().await?;
            tx.insert_tap_request(
                &id,
                &user.id,
                &p.actor(),
                &verification.to_string(),
                (grant.expires_at - grant.starts_at) / 60,
                grant.single_use,
                (grant.starts_at - now) / 60,
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

    // ---- sign-in -------------------------------------------------------

    fn throttle_keys(&self, username: &str, ctx: &SignInContext) -> Vec<(String, LockPolicy)> {
        // A usernameless (passkey) flow has no name to count against yet.
        let mut keys: Vec<(String, LockPolicy)> = (!username.is_empty())
            .then(|| (user_key(username), self.config.user_lock))
            .into_iter()
            .collect();
        if let Some(ip) = &ctx.source_ip {
            keys.push((source_key(ip), self.config.source_lock));
        }
        keys
    }

    /// Count this attempt against the user and the source before verifying
    /// it; refuse it while either is locked.
    async fn begin_attempt(&self, username: &str, ctx: &SignInContext) -> ServiceResult<()> {
        let now = self.now();
        let mut counted = vec![];
        for (key, policy) in self.throttle_keys(username, ctx) {
            match self.store.begin_attempt(&key, &policy, now).await? {
                Ok(_) => counted.push(key),
                Err(wait) => {
                    for k in counted {
                        self.store.refund_attempt(&k).await?;
                    }
                    return Err(ServiceError::TooManyAttempts { retry_after: wait });
                }
            }
        }
        Ok(())
    }

    /// The attempt was right, or was not a guess at all (malformed input).
    async fn refund_attempt(&self, username: &str, ctx: &SignInContext) -> ServiceResult<()> {
        for (key, _) in self.throttle_keys(username, ctx) {
            self.store.refund_attempt(&key).await?;
        }
        Ok(())
    }

    /// Settle a counted attempt: refund it unless it was a wrong credential,
    /// which is logged as a failed sign-in step.
    async fn settle_attempt(
        &self,
        username: &str,
        user_id: Option<String>,
        ctx: &SignInContext,
        method: VerifyMethod,
        result: &ServiceResult<()>,
    ) -> ServiceResult<()> {
        match result {
            Err(
                e @ (ServiceError::InvalidCredentials
                | ServiceError::InvalidCode
                | ServiceError::CodeReplayed
                | ServiceError::InvalidPass
                | ServiceError::WebauthnRejected(_)
                | ServiceError::WebauthnCounterRegression),
            ) => {
                self.log_failure(username, user_id, ctx, method.as_str(), failure_reason(e))
                    .await
            }
            _ => self.refund_attempt(username, ctx).await,
        }
    }

    async fn log_failure(
        &self,
        username: &str,
        user_id: Option<String>,
        ctx: &SignInContext,
        method: &str,
        reason: &str,
    ) -> ServiceResult<()> {
        self.record_signin(
            SignInLogEntry {
                at: self.now(),
                user_id,
                username: username.to_owned(),
                application: ctx.application.clone(),
                source_ip: ctx.source_ip.clone(),
                result: "failure".into(),
                reason: Some(reason.to_owned()),
                methods: vec![],
                acr: None,
            },
            ctx,
            &[method],
            None,
        )
        .await?;
        tracing::info!(user = username, reason, "sign-in step failed");
        Ok(())
    }

    async fn verify_password_for(&self, user: Option<&UserRecord>, password: &str) -> ServiceResult<bool> {
        let phc = user
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let exists = user.is_some_and(|u| u.password_hash.is_some() && u.state == UserState::Active);
        let pw = Zeroizing::new(password.to_owned());
        let ok = tokio::task::spawn_blocking(move || verify_password(&phc, &pw))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(ok && exists)
    }

    /// Replace a hash made with older parameters, now that we know the password.
    async fn rehash_if_needed(&self, user: &UserRecord, password: &str) -> ServiceResult<()> {
        let Some(phc) = &user.password_hash else { return Ok(()) };
        if !self.config.password.needs_rehash(phc) {
            return Ok(());
        }
        let params = self.config.password;
        let pw = Zeroizing::new(password.to_owned());
        let new = tokio::task::spawn_blocking(move || params.hash(&pw))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let mut tx = self.store.write().await?;
        tx.set_password_hash(&user.id, &new, self.now()).await?;
        tx.audit(
            &AuditEntry::new(
                "system",
                "password.rehash",
                format!("user:{}", user.username),
                json!({ "params": params }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Active methods that can answer a second-factor step now (a recovery
    /// code set with no codes left cannot).
    pub async fn usable_second_factor_methods(&self, user: &UserRecord) -> ServiceResult<Vec<MethodRecord>> {
        let mut out = vec![];
        for m in self.store.methods_for_user(&user.id).await? {
            if m.state != MethodState::Active || m.kind.second_factor().is_none() {
                continue;
            }
            if m.kind == MethodKind::RecoveryCodes && self.store.recovery_codes_left(&m.id).await? == 0 {
                continue;
            }
            out.push(m);
        }
        Ok(out)
    }

    pub(crate) async fn second_factors(&self, user: &UserRecord) -> ServiceResult<Vec<VerifyMethod>> {
        let mut out = vec![];
        for m in self.usable_second_factor_methods(user).await? {
            if let Some(v) = m.kind.second_factor() {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        self.drop_forbidden_phone_methods(user, &mut out);
        // Strongest first, so clients can preselect it.
        out.sort_by_key(|v| match v {
            VerifyMethod::Webauthn => 0,
            VerifyMethod::Push => 1,
            VerifyMethod::Totp => 2,
            VerifyMethod::Sms | VerifyMethod::Voice => 3,
            _ => 4,
        });
        Ok(out)
    }

    async fn active_user(&self, username: &str) -> ServiceResult<Option<UserRecord>> {
        Ok(self
            .store
            .user_by_username(username)
            .await?
            .filter(|u| u.state == UserState::Active))
    }

    /// `POST /signin`. Unknown users get the same answers as known ones.
    pub async fn signin_start(
        &self,
        username: &str,
        password: Option<&str>,
        ctx: &SignInContext,
    ) -> ServiceResult<FlowView> {
        let name = Username::parse(username.trim())?;
        let username = name.as_str();
        let user = self.active_user(username).await?;
        let now = self.now();
        let mut flow = SignInFlow::start(now, AuthStrength::Mfa);
        if let Some(password) = password {
            self.begin_attempt(username, ctx).await?;
            let checked = match self.verify_password_for(user.as_ref(), password).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(ServiceError::InvalidCredentials),
                Err(e) => Err(e),
            };
            self.settle_attempt(
                username,
                user.as_ref().map(|u| u.id.clone()),
                ctx,
                VerifyMethod::Password,
                &checked,
            )
            .await?;
            checked?;
            let user = user.as_ref().expect("verified password implies a user");
            self.rehash_if_needed(user, password).await?;
            // Conditional access decides what this sign-in must prove.
            let decision = self.enforce_access(user, ctx).await?;
            let factors = self.second_factors(user).await?;
            flow =
                crate::policy::apply_decision(flow, &decision).step_verified(VerifyMethod::Password, &factors, now)?;
            self.check_step_up(user, &flow, &factors, &decision, ctx).await?;
        }
        self.persist_new_flow(flow, username, user.map(|u| u.id), ctx, now)
            .await
    }

    async fn persist_new_flow(
        &self,
        flow: SignInFlow,
        username: &str,
        user_id: Option<String>,
        ctx: &SignInContext,
        now: i64,
    ) -> ServiceResult<FlowView> {
        let flow_id = random_token(&mut OsRng, FLOW_PREFIX);
        let rec = FlowRecord {
            user_id,
            username: username.to_owned(),
            flow_json: serde_json::to_string(&flow).expect("flow serialises"),
            application: ctx.application.clone(),
            source_ip: ctx.source_ip.clone(),
            expires_at: flow.expires_at,
        };
        self.store.insert_flow(&self.hash("flow", &flow_id), &rec, now).await?;
        Ok(FlowView {
            flow_id,
            state: flow.state.name().to_owned(),
            allowed_methods: flow.state.allowed_methods(),
            expires_at: flow.expires_at,
        })
    }

    /// `POST /signin/{flow}/verify`: check one step, advance the flow, and
    /// on completion open a session.
    pub async fn signin_verify(
        &self,
        flow_id: &str,
        method: VerifyMethod,
        proof: Proof,
        ctx: &SignInContext,
    ) -> ServiceResult<VerifyOutcome> {
        let now = self.now();
        if !flow_id.starts_with(FLOW_PREFIX) || flow_id.len() > 128 {
            return Err(ServiceError::FlowNotFound);
        }
        let flow_hash = self.hash("flow", flow_id);
        let rec = self
            .store
            .flow(&flow_hash, now)
            .await?
            .ok_or(ServiceError::FlowNotFound)?;
        let flow: SignInFlow =
            serde_json::from_str(&rec.flow_json).map_err(|e| ServiceError::Internal(format!("stored flow: {e}")))?;
        flow.check_allowed(method, now)?;
        // The relying party may not change the context mid-flow.
        let ctx = SignInContext {
            application: rec.application.clone(),
            source_ip: ctx.source_ip.clone().or(rec.source_ip.clone()),
            device_id: ctx.device_id.clone(),
            continues_to: ctx.continues_to.clone(),
        };
        self.begin_attempt(&rec.username, &ctx).await?;
        let mut user = match &rec.user_id {
            Some(id) => self
                .store
                .user_by_id(id)
                .await?
                .filter(|u| u.state == UserState::Active),
            None => None,
        };
        let mut tap_used: Option<latchkey_store::TapRecord> = None;
        let mut step_amr: Vec<String> = vec![];
        // An async block, so a `?` inside still settles the counted attempt.
        let checked: ServiceResult<()> = async {
            match (method, &proof) {
                (VerifyMethod::Password, Proof::Password(pw)) => {
                    if self.verify_password_for(user.as_ref(), pw).await? {
                        Ok(())
                    } else {
                        Err(ServiceError::InvalidCredentials)
                    }
                }
                (VerifyMethod::Totp, Proof::Code(code)) => self.check_totp(user.as_ref(), code, now).await,
                (VerifyMethod::RecoveryCode, Proof::Code(code)) => {
                    let h = latchkey_core::recovery::hash_input(self.keys.pepper(), code)?;
                    match &user {
                        Some(u) if self.store.use_recovery_code(&u.id, &h, now).await? => Ok(()),
                        _ => Err(ServiceError::InvalidCode),
                    }
                }
                (VerifyMethod::TemporaryAccessPass, Proof::Pass(pass)) => {
                    let h = tap::hash_pass_input(self.keys.pepper(), pass)?;
                    match &user {
                        Some(u) => match self.store.tap_by_hash(&u.id, &h).await? {
                            Some(t)
                                if tap::tap_state(t.starts_at, t.expires_at, t.single_use, t.used_at, now)
                                    == TapState::Usable =>
                            {
                                tap_used = Some(t);
                                Ok(())
                            }
                            _ => Err(ServiceError::InvalidPass),
                        },
                        None => Err(ServiceError::InvalidPass),
                    }
                }
                (VerifyMethod::Push, Proof::Push) => self.check_push(&flow_hash, user.as_ref(), now).await,
                (VerifyMethod::Sms | VerifyMethod::Voice, Proof::Code(code)) => {
                    self.check_phone_code(&flow_hash, user.as_ref(), code, now).await
                }
                (VerifyMethod::Webauthn, Proof::Assertion(a)) => {
                    let o = self.check_webauthn_assertion(flow_id, &rec, &flow, a, now).await?;
                    step_amr = o.amr;
                    // A usernameless flow learns its user from the passkey.
                    user = Some(o.user);
                    Ok(())
                }
                _ => Err(ServiceError::InvalidRequest(format!(
                    "method '{}' needs its matching field",
                    method.as_str()
                ))),
            }
        }
        .await;
        self.settle_attempt(&rec.username, rec.user_id.clone(), &ctx, method, &checked)
            .await?;
        checked?;
        let user = user.expect("a verified step implies a user");
        // Re-evaluated at every step, so a policy change applies to flows in progress.
        let decision = self.enforce_access(&user, &ctx).await?;
        let factors = self.second_factors(&user).await?;
        let next = crate::policy::apply_decision(flow.clone(), &decision)
            .step_verified_with_amr(method, &step_amr, &factors, now)?;
        self.check_step_up(&user, &next, &factors, &decision, &ctx).await?;
        let next_json = serde_json::to_string(&next).expect("flow serialises");
        if !self.store.update_flow(&flow_hash, &rec.flow_json, &next_json).await? {
            return Err(ServiceError::InvalidState(
                "this sign-in was advanced by another request; start again".into(),
            ));
        }
        let mut outcome = VerifyOutcome {
            flow_id: flow_id.to_owned(),
            state: next.state.name().to_owned(),
            allowed_methods: next.state.allowed_methods(),
            amr: next.amr(),
            methods: next.methods.clone(),
            acr: None,
            session_token: None,
            session_expires_at: None,
            registration_campaigns: vec![],
        };
        if let SignInState::Complete { acr } = next.state {
            outcome.registration_campaigns = self.registration_nudges(&user).await?;
            let (token, expires_at) = self
                .open_session(&user, &next, acr, tap_used.as_ref(), &ctx, Some(&decision))
                .await?;
            if decision.break_glass {
                self.record_break_glass_use(&user, &ctx).await?;
            }
            self.store.delete_flow(&flow_hash).await?;
            self.store.clear_throttle(&user_key(&user.username)).await?;
            outcome.acr = Some(acr);
            outcome.session_token = Some(token);
            outcome.session_expires_at = Some(expires_at);
        }
        Ok(outcome)
    }

    /// Verify a TOTP code for a user against every active TOTP method,
    /// advancing the durable replay guard. Used by sign-in (and RADIUS, bench).
    pub async fn check_totp(&self, user: Option<&UserRecord>, code: &str, now: i64) -> ServiceResult<()> {
        let Some(user) = user else {
            // Same shape checks as for a real user, then the same answer.
            let _ = otp::verify_totp(&[0u8; 20], code, now.max(0) as u64, &TotpParams::default(), 1, None)?;
            return Err(ServiceError::InvalidCode);
        };
        let mut replayed = false;
        let mut malformed: Option<OtpError> = None;
        for m in self.store.methods_for_user(&user.id).await? {
            if m.kind != MethodKind::Totp || m.state != MethodState::Active {
                continue;
            }
            let (secret, params) = self.totp_secret(&m)?;
            let last = m.last_used_step.map(|s| s.max(0) as u64);
            match otp::verify_totp(&secret, code, now.max(0) as u64, &params, self.config.totp_window, last) {
                Ok(step) => {
                    // The store has the last word: another node may have
                    // accepted this step a moment ago.
                    if self.store.advance_totp_step(&m.id, step as i64, now).await? {
                        return Ok(());
                    }
                    replayed = true;
                }
                Err(OtpError::Replayed) => replayed = true,
                Err(e @ OtpError::Malformed { .. }) => malformed = Some(e),
                Err(_) => {}
            }
        }
        if replayed {
            Err(ServiceError::CodeReplayed)
        } else if let Some(e) = malformed {
            Err(e.into())
        } else {
            Err(ServiceError::InvalidCode)
        }
    }

    async fn open_session(
        &self,
        user: &UserRecord,
        flow: &SignInFlow,
        acr: AuthStrength,
        tap_used: Option<&latchkey_store::TapRecord>,
        ctx: &SignInContext,
        decision: Option<&latchkey_core::policy::Decision>,
    ) -> ServiceResult<(String, i64)> {
        let now = self.now();
        let token = random_token(&mut OsRng, SESSION_PREFIX);
        let mut expires_at = now + self.config.session_absolute_secs;
        if let Some(f) = decision.and_then(|d| d.sign_in_frequency_secs) {
            // Sign-in frequency: the session ends when the policy wants a new sign-in.
            expires_at = expires_at.min(now + f);
        }
        if let Some(t) = tap_used {
            // A TAP session exists to register methods; it ends with the pass.
            expires_at = expires_at.min(t.expires_at);
        }
        let session = SessionRecord {
            id: new_id(),
            user_id: user.id.clone(),
            amr: flow.amr(),
            methods: flow.methods.iter().map(|m| m.as_str().to_owned()).collect(),
            acr: acr.as_str().to_owned(),
            authenticated_at: now,
            idle_expires_at: (now + self.config.session_idle_secs).min(expires_at),
            expires_at,
        };
        let mut tx = self.store.write().await?;
        if let Some(t) = tap_used {
            if !tx.use_tap(&t.id, now).await? {
                // Another node spent this single-use pass first.
                drop(tx);
                self.store
                    .record_failure(&user_key(&user.username), &self.config.user_lock, now)
                    .await?;
                self.log_failure(
                    &user.username,
                    Some(user.id.clone()),
                    ctx,
                    VerifyMethod::TemporaryAccessPass.as_str(),
                    "invalid_pass",
                )
                .await?;
                return Err(ServiceError::InvalidPass);
            }
            tx.audit(
                &AuditEntry::new(
                    format!("user:{}", user.username),
                    "tap.use",
                    format!("user:{}", user.username),
                    json!({ "tap_id": t.id }),
                ),
                self.clock.now_ms(),
            )
            .await?;
        }
        tx.insert_session(
            &self.hash("session", &token),
            &session,
            ctx.source_ip.as_deref(),
            ctx.device_id.as_deref(),
        )
        .await?;
        tx.audit(
            &AuditEntry::new(
                format!("user:{}", user.username),
                "session.create",
                format!("user:{}", user.username),
                json!({ "session_id": session.id, "acr": session.acr, "amr": session.amr, "application": ctx.application, "source_ip": ctx.source_ip }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        self.log_session_signin(&user, ctx, &session, None, decision).await?;
        Ok((token, expires_at))
    }

    /// A successful sign-in on the log: a new session, or (with a reason)
    /// an existing one reused for another application.
    pub(crate) async fn log_session_signin(
        &self,
        user: &UserRecord,
        ctx: &SignInContext,
        session: &SessionRecord,
        reason: Option<&str>,
        decision: Option<&latchkey_core::policy::Decision>,
    ) -> ServiceResult<()> {
        let tried: Vec<&str> = session.methods.iter().map(String::as_str).collect();
        self.record_signin(
            SignInLogEntry {
                at: self.now(),
                user_id: Some(user.id.clone()),
                username: user.username.clone(),
                application: ctx.application.clone(),
                source_ip: ctx.source_ip.clone(),
                result: "success".into(),
                reason: reason.map(str::to_owned),
                methods: session.methods.clone(),
                acr: Some(session.acr.clone()),
            },
            ctx,
            &tried,
            decision,
        )
        .await
    }

    // ---- bearer authentication ----------------------------------------

    pub async fn authenticate(&self, bearer: &str) -> ServiceResult<Principal> {
        let now = self.now();
        if bearer.starts_with(API_TOKEN_PREFIX) && bearer.len() < 200 {
            if let Some(t) = self.store.api_token_by_hash(&self.hash("api token", bearer)).await? {
                return Ok(Principal::ApiToken(t));
            }
        } else if bearer.starts_with(SESSION_PREFIX) && bearer.len() < 200 {
            if let Some(s) = self
                .store
                .session_by_token_hash(&self.hash("session", bearer), now)
                .await?
            {
                if let Some(user) = self
                    .store
                    .user_by_id(&s.user_id)
                    .await?
                    .filter(|u| u.state == UserState::Active)
                {
                    self.store
                        .touch_session(&s.id, now, self.config.session_idle_secs)
                        .await?;
                    return Ok(Principal::Session { session: s, user });
                }
            }
        }
        Err(ServiceError::Unauthenticated)
    }

    pub async fn logout(&self, p: &Principal) -> ServiceResult<()> {
        let Principal::Session { session, user } = p else {
            return Err(ServiceError::InvalidRequest("only a session can sign out".into()));
        };
        let mut tx = self.store.write().await?;
        tx.revoke_session(&session.id, self.now()).await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "session.revoke",
                format!("user:{}", user.username),
                json!({ "session_id": session.id }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_api_token(&self, p: &Principal, name: &str) -> ServiceResult<(ApiTokenRecord, String)> {
        self.create_scoped_api_token(p, name, &[API_SCOPE_ADMIN]).await
    }

    /// A token limited to `scopes`: `admin` (everything), or `mdm` (only
    /// device compliance updates, for an MDM integration).
    pub async fn create_scoped_api_token(
        &self,
        p: &Principal,
        name: &str,
        scopes: &[&str],
    ) -> ServiceResult<(ApiTokenRecord, String)> {
        p.require_admin()?;
        if scopes.is_empty() || scopes.iter().any(|s| ![API_SCOPE_ADMIN, API_SCOPE_MDM].contains(s)) {
            return Err(ServiceError::InvalidRequest("scopes must be 'admin' or 'mdm'".into()));
        }
        let name = name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(ServiceError::InvalidRequest(
                "token name must be 1-100 printable characters".into(),
            ));
        }
        let token = random_token(&mut OsRng, API_TOKEN_PREFIX);
        let rec = ApiTokenRecord {
            id: new_id(),
            name: name.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            created_by: p.actor(),
        };
        let mut tx = self.store.write().await?;
        tx.insert_api_token(&rec, &self.hash("api token", &token), self.now())
            .await?;
        tx.audit(
            &AuditEntry::new(
                p.actor(),
                "api_token.create",
                format!("api_token:{}", rec.id),
                json!({ "name": rec.name, "scopes": rec.scopes }),
            ),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok((rec, token))
    }

    /// Every API token with when it was created and revoked (admin).
    /// Token values are never shown again.
    pub async fn list_api_tokens(&self, p: &Principal) -> ServiceResult<Vec<(ApiTokenRecord, i64, Option<i64>)>> {
        p.require_admin()?;
        Ok(self.store.list_api_tokens().await?)
    }

    pub async fn revoke_api_token(&self, p: &Principal, id: &str) -> ServiceResult<()> {
        p.require_admin()?;
        let mut tx = self.store.write().await?;
        if !tx.revoke_api_token(id, self.now()).await? {
            return Err(ServiceError::NotFound("active API token".into()));
        }
        tx.audit(
            &AuditEntry::new(p.actor(), "api_token.revoke", format!("api_token:{id}"), json!({})),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn clear_lockout(&self, p: &Principal, username: &str) -> ServiceResult<()> {
        if !p.has_role(Role::Helpdesk) {
            return Err(ServiceError::Forbidden(
                "clearing a lockout needs the helpdesk or admin role".into(),
            ));
        }
        let user = self.user(username).await?;
        self.store.clear_throttle(&user_key(&user.username)).await?;
        self.store
            .audit_only(
                &AuditEntry::new(p.actor(), "lockout.clear", format!("user:{}", user.username), json!({})),
                self.clock.now_ms(),
            )
            .await?;
        Ok(())
    }
}

/// Whether the caller is a session opened with a Temporary Access Pass.
fn via_tap(p: &Principal) -> bool {
    matches!(p, Principal::Session { session, .. } if session.methods.iter().any(|m| m == VerifyMethod::TemporaryAccessPass.as_str()))
}

fn failure_reason(e: &ServiceError) -> &'static str {
    match e {
        ServiceError::InvalidCredentials => "invalid_credentials",
        ServiceError::CodeReplayed => "code_replayed",
        ServiceError::InvalidPass => "invalid_pass",
        ServiceError::WebauthnRejected(_) => "webauthn_rejected",
        ServiceError::WebauthnCounterRegression => "webauthn_counter_regression",
        _ => "invalid_code",
    }
}

pub(crate) fn clean_label(label: Option<String>, default: &str) -> ServiceResult<String> {
    let l = label
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| default.to_owned());
    if l.chars().count() > 100 || l.chars().any(char::is_control) {
        return Err(ServiceError::InvalidRequest(
            "label must be at most 100 printable characters".into(),
        ));
    }
    Ok(l)
}

/// A change to a user's directory attributes; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub display_name: Option<String>,
    /// `Some("")` clears the department.
    pub department: Option<String>,
    pub groups: Option<Vec<String>>,
    pub roles: Option<Vec<String>>,
}

/// Validated directory attributes, for creating or updating a user.
fn new_user(
    username: &str,
    display_name: &str,
    department: Option<String>,
    groups: Vec<String>,
    roles: Vec<String>,
) -> ServiceResult<NewUser> {
    let name = Username::parse(username)?;
    let display_name = display_name.trim();
    if display_name.is_empty() || display_name.chars().count() > 200 {
        return Err(ServiceError::InvalidRequest(
            "display_name must be 1-200 characters".into(),
        ));
    }
    for g in &groups {
        if g.is_empty() || g.len() > 100 || g.chars().any(char::is_control) {
            return Err(ServiceError::InvalidRequest(
                "group names must be 1-100 printable characters".into(),
            ));
        }
    }
    let mut parsed_roles = roles.iter().map(|r| Role::parse(r)).collect::<Result<Vec<_>, _>>()?;
    parsed_roles.sort();
    parsed_roles.dedup();
    Ok(NewUser {
        username: name.as_str().to_owned(),
        display_name: display_name.to_owned(),
        department: department.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()),
        groups,
        roles: parsed_roles,
    })
}
