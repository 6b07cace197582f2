//! Latchkey's domain. Pure logic, no I/O, no async: callers pass in the
//! current time (unix seconds unless a name says otherwise) and persist what
//! these functions decide.

pub mod account;
pub mod analyzer;
pub mod audit;
pub mod detect;
pub mod device;
pub mod evidence;
pub mod helpdesk;
pub mod model;
pub mod oidc;
pub mod otp;
pub mod password;
pub mod policy;
pub mod push;
pub mod recovery;
pub mod replay;
pub mod rollout;
pub mod secret;
pub mod signin;
pub mod sms;
pub mod softlock;
pub mod strength;
pub mod tap;
pub mod webauthn;

pub use model::{MethodKind, MethodState, Role, UserState, Username, VerifyMethod};
pub use strength::AuthStrength;

/// The domain's one error type. Each variant maps to one HTTP problem type
/// in the server crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("this step is not allowed now: {0}")]
    InvalidTransition(String),
    #[error("the sign-in has expired; start again")]
    FlowExpired,
    #[error("cryptographic failure: {0}")]
    Crypto(String),
    #[error(transparent)]
    Otp(#[from] otp::OtpError),
}
