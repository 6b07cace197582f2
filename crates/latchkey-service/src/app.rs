//! The application service: every operation the HTTP API and the CLI offer,
//! written once. Handlers and commands are thin shells over these methods.
//! Each method loads what the domain needs from the store, lets
//! `latchkey-core` decide, and persists the decision with its audit event in
//! one transaction.

use std::sync::Arc;

use latchkey_core::device::{DeviceClaim, DeviceProof};
use latchkey_core::password::PasswordParams;
use latchkey_core::secret::keyed_hash;
use latchkey_core::softlock::LockPolicy;
use latchkey_core::tap::TapPolicy;
use latchkey_core::{AuthStrength, Role, VerifyMethod};
use latchkey_store::{ApiTokenRecord, Keys, MethodRecord, SessionRecord, Store, UserRecord};

use crate::clock::Clock;
// Transports still name it here (it moved to `crate::users`).
use crate::error::{ServiceError, ServiceResult};
pub use crate::users::UserChange;

pub const SESSION_PREFIX: &str = "lk_s_";
pub const API_TOKEN_PREFIX: &str = "lk_at_";
pub const FLOW_PREFIX: &str = "lk_f_";
pub const BOOTSTRAP_ADMIN: &str = "admin";
pub const API_SCOPE_ADMIN: &str = "admin";
pub const API_SCOPE_MDM: &str = "mdm";
/// A relying party (an application that signs its users in through the API):
/// the only caller whose word on the end user's address and device counts.
pub const API_SCOPE_RELYING_PARTY: &str = "relying_party";
/// Every scope a token may have.
pub const API_SCOPES: [&str; 3] = [API_SCOPE_ADMIN, API_SCOPE_MDM, API_SCOPE_RELYING_PARTY];

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
    /// How long a deleted account's username stays taken by its tombstone.
    pub deleted_username_hold_days: i64,
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
    /// Passwords hashed or verified at once (0: one per core); Argon2 takes
    /// its memory cost per hash.
    pub password_slots: usize,
    /// How long a sign-in waits for a free slot before it is told to retry.
    pub password_slot_wait_ms: u64,
    /// Where server-side backups (API, console) are written; None: refused.
    pub backup_dir: Option<std::path::PathBuf>,
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
            deleted_username_hold_days: 365,
            oidc: Default::default(),
            rp_id: None,
            rp_origin: None,
            ops: Default::default(),
            push: Default::default(),
            sms: Default::default(),
            password_slots: 0,
            password_slot_wait_ms: 2000,
            backup_dir: None,
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
            // The human behind a token is named, so the log says who acted.
            Principal::ApiToken(t) => match &t.owner {
                Some(owner) => format!("token:{} (owner:{owner})", t.name),
                None => format!("token:{}", t.name),
            },
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

    /// The human acting (a user id): a session's user, or a token's owner.
    /// `None` for a token without an owner and for the local operator: they
    /// can act, but never count as a person in a two-person rule.
    pub fn human_id(&self) -> Option<&str> {
        match self {
            Principal::ApiToken(t) => t.owner_user_id.as_deref(),
            Principal::Session { user, .. } => Some(&user.id),
            Principal::Operator => None,
        }
    }

    /// Whether the human acting is `target` (through a session or one of
    /// their tokens).
    pub fn acts_for(&self, target: &UserRecord) -> bool {
        self.human_id() == Some(target.id.as_str())
    }

    /// A token with the `relying_party` scope itself (an `admin` token is not
    /// one: automation does not speak for an end user's address or device).
    pub fn is_relying_party(&self) -> bool {
        matches!(self, Principal::ApiToken(t) if t.scopes.iter().any(|s| s == API_SCOPE_RELYING_PARTY))
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
    pub(crate) fn require_read(&self, target: &UserRecord) -> ServiceResult<()> {
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
    /// The device, only when proved ([`DeviceClaim`]); conditional access
    /// sees no other.
    pub device: Option<DeviceClaim>,
    /// A device id the request named without proof: logged, never believed.
    pub unproven_device_id: Option<String>,
    /// The application a web sign-in continues to (an OIDC client). The
    /// session serves both, so both applications' policies apply.
    pub continues_to: Option<String>,
}

/// What a sign-in request says about its end user, before any of it is believed.
#[derive(Debug, Clone, Default)]
pub struct ClaimedContext {
    pub ip: Option<String>,
    pub device_id: Option<String>,
}

impl SignInContext {
    /// The context of a sign-in request from `caller` (if it authenticated)
    /// arriving from `peer`. Only a `relying_party` token speaks for the end
    /// user: its `ip` replaces the peer's and its device counts as vouched
    /// for. Anyone else is throttled by their own address, and a device id
    /// they send is treated as no device (logged as an unproven claim, not
    /// refused, so clients that send one keep working).
    pub fn from_request(
        caller: Option<&Principal>,
        peer: Option<String>,
        application: Option<String>,
        claimed: ClaimedContext,
    ) -> Self {
        let relying_party = caller.is_some_and(Principal::is_relying_party);
        let device_id = claimed.device_id.filter(|d| !d.trim().is_empty());
        let (device, unproven_device_id) = match device_id {
            Some(id) if relying_party => (
                Some(DeviceClaim {
                    id,
                    proof: DeviceProof::VouchedByRelyingParty,
                }),
                None,
            ),
            other => (None, other),
        };
        if let Some(id) = &unproven_device_id {
            tracing::info!(device_id = %id, "sign-in named a device without proof; treated as no device");
        }
        Self {
            application,
            source_ip: if relying_party { claimed.ip.or(peer) } else { peer },
            device,
            unproven_device_id,
            continues_to: None,
        }
    }

    pub fn device_id(&self) -> Option<&str> {
        self.device.as_ref().map(|d| d.id.as_str())
    }
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

/// What revoking a pass did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TapRevocation {
    pub tap_id: String,
    pub revoked_at: i64,
    /// Sessions opened with a pass that ended with it.
    pub sessions_ended: u64,
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
    pub(crate) dummy_hash: String,
    /// The parsed conditional-access set, re-read when its generation changes.
    pub(crate) policy_cache: crate::policy::PolicyCache,
    /// Detection engine wake-ups (crate::ops).
    pub(crate) ops: crate::ops::OpsState,
    /// Bounded concurrent Argon2 (crate::signin).
    pub(crate) password_slots: crate::signin::PasswordSlots,
}

pub(crate) fn source_key(ip: &str) -> String {
    format!("src:{ip}")
}

impl App {
    pub fn new(store: Store, keys: Keys, config: Config, clock: Arc<dyn Clock>) -> ServiceResult<Self> {
        let dummy_hash = config.password.hash("latchkey dummy password that nobody has")?;
        let store = store.with_audit_key(keys.audit_chain_key());
        Ok(Self {
            store,
            keys: Arc::new(keys),
            clock,
            dummy_hash,
            policy_cache: Default::default(),
            ops: Default::default(),
            password_slots: crate::signin::PasswordSlots::new(
                config.password_slots,
                std::time::Duration::from_millis(config.password_slot_wait_ms),
            ),
            config,
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

    /// Hold every password slot, for tests of a server busy hashing.
    #[cfg(feature = "test-support")]
    pub async fn occupy_password_slots(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.password_slots.occupy().await
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
