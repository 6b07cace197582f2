//! Latchkey's application services: every operation the HTTP API, the web
//! pages, RADIUS and the CLI offer, written once over `latchkey-core` (which
//! decides) and `latchkey-store` (which persists, with the audit event in the
//! same transaction). Permission checks happen here, once. Nothing in this
//! crate knows HTTP: transports map [`ServiceError`] themselves.

pub mod app;
pub mod audit;
pub mod backup;
pub mod clock;
pub mod doctor;
pub mod error;
pub mod evidence;
pub mod history;
pub mod lifecycle;
pub mod methods;
pub mod metrics;
pub mod oidc;
pub mod ops;
pub mod ops_sinks;
pub mod policy;
pub mod push;
pub mod qr;
pub mod radius;
pub mod recovery;
pub mod signin;
pub mod sms;
pub mod tap;
pub mod time;
pub mod tokens;
pub mod users;
pub mod webauthn;

pub use app::{App, Config, Principal};
pub use error::{ServiceError, ServiceResult};
/// The one outbound HTTP client (SMS and alert webhooks): rustls with the
/// system's CA store, read once per process rather than per message.
pub(crate) fn http_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| format!("HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}
