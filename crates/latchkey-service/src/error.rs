//! The service's one error type. It names what went wrong in the domain's
//! words and knows nothing of HTTP: each transport maps it once
//! (`latchkey-http`'s `error.rs` to problem documents, RADIUS to a reject
//! message, the CLI to a line on stderr).

use latchkey_core::otp::OtpError;
use latchkey_core::CoreError;
use latchkey_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the username or password is incorrect")]
    InvalidCredentials,
    #[error("the code is not valid")]
    InvalidCode,
    #[error("the code does not match; check the authenticator app's clock and try the current code")]
    WrongConfirmationCode,
    #[error("this code was already used; wait for the next one")]
    CodeReplayed,
    #[error("the pass is not valid, has expired or was already used")]
    InvalidPass,
    #[error("too many failed attempts; try again in {retry_after} seconds")]
    TooManyAttempts { retry_after: i64 },
    #[error("the sign-in was not found or has expired; start again")]
    FlowNotFound,
    #[error("{0}")]
    InvalidState(String),
    #[error("a fresh strong sign-in is required: {0}")]
    ReauthenticationRequired(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("this change to a privileged account needs a second approver: request {request_id} awaits approval")]
    ApprovalRequired { request_id: String },
    #[error("{0}")]
    AccessBlocked(String),
    #[error("{0}")]
    AuthenticationStrengthRequired(String),
    #[error("{0}")]
    PolicyLockout(String),
    /// A WebAuthn response that does not verify (wrong origin or RP ID, bad
    /// signature, unknown credential, stale challenge).
    #[error("the security key or passkey response was rejected: {0}")]
    WebauthnRejected(String),
    /// The signature counter went backwards: possibly a cloned authenticator.
    #[error("this authenticator's signature counter went backwards; it may have been cloned. Use another method and tell the helpdesk")]
    WebauthnCounterRegression,
    /// The push prompt has not been answered yet; ask again shortly.
    #[error("waiting for the push approval on the authenticator device")]
    PushPending,
    /// The push prompt ended without approval (denied, reported, wrong
    /// number, timed out); `reason` is the sign-in log reason.
    #[error("the push prompt was not approved ({reason}); start again or use another method")]
    PushNotApproved { reason: &'static str },
    /// Push cannot be used now (suspended after repeated rejections, or too
    /// many prompts lately): the sign-in must use another method.
    #[error("{0}")]
    PushUnavailable(String),
    /// An answer whose signature does not match the device key.
    #[error("the approval's signature does not match this device's key")]
    PushSignatureInvalid,
    /// The SMS/voice gateway refused or could not be reached.
    #[error("the message could not be sent: {0}")]
    GatewayFailed(String),
    /// Too many passwords are being checked at once (Argon2 is bounded by
    /// memory); nothing was counted or decided. Retry shortly.
    #[error("the server is busy checking passwords; try again in {retry_after} seconds")]
    Busy { retry_after: i64 },
    #[error("internal error")]
    Internal(String),
}

impl From<CoreError> for ServiceError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::InvalidInput(m) => ServiceError::InvalidRequest(m),
            CoreError::WeakPassword(m) => ServiceError::WeakPassword(m),
            CoreError::Forbidden(m) => ServiceError::Forbidden(m),
            CoreError::InvalidTransition(m) => ServiceError::InvalidState(m),
            CoreError::FlowExpired => ServiceError::FlowNotFound,
            CoreError::Crypto(m) => ServiceError::Internal(m),
            CoreError::Otp(o) => o.into(),
        }
    }
}

impl From<OtpError> for ServiceError {
    fn from(e: OtpError) -> Self {
        match e {
            OtpError::Malformed { .. } | OtpError::InvalidParams(_) | OtpError::BadSecret => {
                ServiceError::InvalidRequest(e.to_string())
            }
            OtpError::Invalid => ServiceError::InvalidCode,
            OtpError::Replayed => ServiceError::CodeReplayed,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ServiceError::NotFound(what),
            StoreError::Conflict(what) => ServiceError::Conflict(what),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
