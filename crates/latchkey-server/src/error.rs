//! The server's one error type, and its single mapping to HTTP problem
//! details (RFC 9457). Every `type` is a stable URN clients can match on.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::otp::OtpError;
use latchkey_core::CoreError;
use latchkey_store::StoreError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
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
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    Unprocessable(String),
    #[error("a pass for a privileged user needs a second approver: request {request_id} awaits approval")]
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
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable identifier, `urn:latchkey:problem:<slug>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<i64>,
    /// The pass request waiting for a second approver (`approval-required`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl AppError {
    pub fn slug_and_status(&self) -> (&'static str, StatusCode, &'static str) {
        use AppError::*;
        match self {
            InvalidRequest(_) => ("invalid-request", StatusCode::BAD_REQUEST, "Invalid request"),
            WeakPassword(_) => ("weak-password", StatusCode::BAD_REQUEST, "Password rejected"),
            Unauthenticated => ("unauthenticated", StatusCode::UNAUTHORIZED, "Authentication required"),
            Forbidden(_) => ("forbidden", StatusCode::FORBIDDEN, "Forbidden"),
            NotFound(_) => ("not-found", StatusCode::NOT_FOUND, "Not found"),
            Conflict(_) => ("conflict", StatusCode::CONFLICT, "Conflict"),
            InvalidCredentials => ("invalid-credentials", StatusCode::UNAUTHORIZED, "Sign-in failed"),
            InvalidCode => ("invalid-code", StatusCode::UNAUTHORIZED, "Code rejected"),
            WrongConfirmationCode => ("invalid-code", StatusCode::BAD_REQUEST, "Code rejected"),
            CodeReplayed => ("code-replayed", StatusCode::UNAUTHORIZED, "Code already used"),
            InvalidPass => ("invalid-pass", StatusCode::UNAUTHORIZED, "Pass rejected"),
            TooManyAttempts { .. } => ("too-many-attempts", StatusCode::TOO_MANY_REQUESTS, "Too many attempts"),
            FlowNotFound => ("flow-not-found", StatusCode::NOT_FOUND, "Sign-in not found"),
            InvalidState(_) => ("invalid-state", StatusCode::CONFLICT, "Not allowed in this state"),
            ReauthenticationRequired(_) => (
                "reauthentication-required",
                StatusCode::FORBIDDEN,
                "Fresh strong sign-in required",
            ),
            PayloadTooLarge => (
                "payload-too-large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
            ),
            UnsupportedMediaType => (
                "invalid-request",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            ),
            Unprocessable(_) => (
                "invalid-request",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid request body",
            ),
            ApprovalRequired { .. } => ("approval-required", StatusCode::CONFLICT, "Second approver required"),
            AccessBlocked(_) => ("access-blocked", StatusCode::FORBIDDEN, "Access blocked by policy"),
            AuthenticationStrengthRequired(_) => (
                "authentication-strength-required",
                StatusCode::FORBIDDEN,
                "Stronger authentication required",
            ),
            PolicyLockout(_) => (
                "policy-lockout",
                StatusCode::CONFLICT,
                "The change would lock users out",
            ),
            WebauthnRejected(_) => (
                "webauthn-rejected",
                StatusCode::UNAUTHORIZED,
                "Authenticator response rejected",
            ),
            WebauthnCounterRegression => (
                "webauthn-counter-regression",
                StatusCode::UNAUTHORIZED,
                "Possible cloned authenticator",
            ),
            PushPending => ("push-pending", StatusCode::CONFLICT, "Waiting for approval"),
            PushNotApproved { .. } => ("push-not-approved", StatusCode::UNAUTHORIZED, "Push not approved"),
            PushUnavailable(_) => ("push-unavailable", StatusCode::FORBIDDEN, "Push unavailable"),
            PushSignatureInvalid => ("push-signature-invalid", StatusCode::UNAUTHORIZED, "Signature rejected"),
            GatewayFailed(_) => ("gateway-failed", StatusCode::BAD_GATEWAY, "Message not sent"),
            Internal(_) => ("internal", StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (slug, status, title) = self.slug_and_status();
        Problem {
            kind: format!("urn:latchkey:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            // Internal details go to the log, never to the client.
            detail: match self {
                AppError::Internal(_) => "an internal error occurred; see the server log".to_owned(),
                other => other.to_string(),
            },
            retry_after: match self {
                AppError::TooManyAttempts { retry_after } => Some(*retry_after),
                _ => None,
            },
            request_id: match self {
                AppError::ApprovalRequired { request_id } => Some(request_id.clone()),
                _ => None,
            },
        }
    }
}

pub fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).expect("problem serialises");
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Internal(msg) = &self {
            tracing::error!(error = %msg, "internal error");
        }
        let (_, status, _) = self.slug_and_status();
        let problem = self.problem();
        let mut resp = problem_response(status, &problem);
        if let AppError::TooManyAttempts { retry_after } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
        }
        resp
    }
}

impl From<CoreError> for AppError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::InvalidInput(m) => AppError::InvalidRequest(m),
            CoreError::WeakPassword(m) => AppError::WeakPassword(m),
            CoreError::Forbidden(m) => AppError::Forbidden(m),
            CoreError::InvalidTransition(m) => AppError::InvalidState(m),
            CoreError::FlowExpired => AppError::FlowNotFound,
            CoreError::Crypto(m) => AppError::Internal(m),
            CoreError::Otp(o) => o.into(),
        }
    }
}

impl From<OtpError> for AppError {
    fn from(e: OtpError) -> Self {
        match e {
            OtpError::Malformed { .. } | OtpError::InvalidParams(_) | OtpError::BadSecret => {
                AppError::InvalidRequest(e.to_string())
            }
            OtpError::Invalid => AppError::InvalidCode,
            OtpError::Replayed => AppError::CodeReplayed,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => AppError::NotFound(what),
            StoreError::Conflict(what) => AppError::Conflict(what),
            other => AppError::Internal(other.to_string()),
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;
