//! The one mapping from service errors to HTTP problem details (RFC 9457).
//! Every `type` is a stable URN clients can match on.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_service::ServiceError;
use serde::Serialize;

/// What an API handler fails with: a service error, or a request the HTTP
/// layer refused before any service ran.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("send the body as application/json")]
    UnsupportedMediaType,
}

impl From<latchkey_store::StoreError> for ApiError {
    fn from(e: latchkey_store::StoreError) -> Self {
        ApiError::Service(e.into())
    }
}

impl From<latchkey_core::CoreError> for ApiError {
    fn from(e: latchkey_core::CoreError) -> Self {
        ApiError::Service(e.into())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

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

impl ApiError {
    pub fn slug_and_status(&self) -> (&'static str, StatusCode, &'static str) {
        let e = match self {
            ApiError::PayloadTooLarge => {
                return (
                    "payload-too-large",
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request body too large",
                )
            }
            ApiError::UnsupportedMediaType => {
                return (
                    "invalid-request",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Unsupported media type",
                )
            }
            ApiError::Service(e) => e,
        };
        classify(e)
    }

    pub fn problem(&self) -> Problem {
        let (slug, status, title) = self.slug_and_status();
        Problem {
            kind: format!("urn:latchkey:problem:{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            // Internal details go to the log, never to the client.
            detail: match self {
                ApiError::Service(e) => detail(e),
                other => other.to_string(),
            },
            retry_after: match self {
                ApiError::Service(
                    ServiceError::TooManyAttempts { retry_after } | ServiceError::Busy { retry_after },
                ) => Some(*retry_after),
                _ => None,
            },
            request_id: match self {
                ApiError::Service(ServiceError::ApprovalRequired { request_id }) => Some(request_id.clone()),
                _ => None,
            },
        }
    }
}

/// What a person may read about a service error: internal details go to
/// the log, never to the client.
pub fn detail(e: &ServiceError) -> String {
    match e {
        ServiceError::Internal(_) => "an internal error occurred; see the server log".to_owned(),
        other => other.to_string(),
    }
}

/// The problem slug, HTTP status and title of a service error: the one
/// mapping from the domain's failures to HTTP.
pub fn classify(e: &ServiceError) -> (&'static str, StatusCode, &'static str) {
    use ServiceError::*;
    {
        match e {
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
            Busy { .. } => ("busy", StatusCode::SERVICE_UNAVAILABLE, "Busy"),
            FlowNotFound => ("flow-not-found", StatusCode::NOT_FOUND, "Sign-in not found"),
            InvalidState(_) => ("invalid-state", StatusCode::CONFLICT, "Not allowed in this state"),
            ReauthenticationRequired(_) => (
                "reauthentication-required",
                StatusCode::FORBIDDEN,
                "Fresh strong sign-in required",
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Service(ServiceError::Internal(msg)) = &self {
            tracing::error!(error = %msg, "internal error");
        }
        let (_, status, _) = self.slug_and_status();
        let problem = self.problem();
        let mut resp = problem_response(status, &problem);
        if let ApiError::Service(ServiceError::TooManyAttempts { retry_after } | ServiceError::Busy { retry_after }) =
            self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
        }
        resp
    }
}
