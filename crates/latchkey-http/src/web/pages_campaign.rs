//! The registration-campaign interstitial of a staged rollout: after a
//! sign-in, a user in a wave that is nudging (and whose methods do not reach
//! the wave's strength yet) is told what to register and by when, before
//! continuing. "Not now" continues; the deadline is what enforces.
//!
//! ```text
//! POST /signin/verify ─complete, nudged─▶ GET /signin/campaign?next=…
//!                                           ├─ "Set it up now" ─▶ /security-info
//!                                           └─ "Not now"       ─▶ next
//! ```

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;
use std::sync::Arc;

use super::layout::Section;
use super::{safe_next, wait_text, when, Ctx};
use latchkey_service::app::{App, Principal};

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/signin/campaign", get(campaign_page))
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

/// What registering for a strength means, in words a user acts on.
fn what_to_register(strength: &str) -> String {
    match strength {
        "phishing_resistant" => "a security key or passkey (phishing-resistant sign-in)".into(),
        "passwordless_mfa" => "a passkey or security key (passwordless sign-in)".into(),
        "mfa" => "a second sign-in method such as an authenticator app".into(),
        custom => format!("a method that meets your organisation's '{custom}' requirement"),
    }
}

async fn campaign_page(ctx: Ctx, Query(q): Query<Next>) -> Response {
    let next = safe_next(q.next.as_deref()).unwrap_or("/security-info").to_owned();
    let Some(Principal::Session { user, .. }) = &ctx.principal else {
        return Redirect::to(&next).into_response();
    };
    let nudges = match ctx.app.registration_nudges(user).await {
        Ok(n) if !n.is_empty() => n,
        Ok(_) => return Redirect::to(&next).into_response(),
        Err(e) => return ctx.error_page(e),
    };
    let now = ctx.app.now();
    let body = html! {
        h1 { "Time to strengthen your sign-in" }
        @for n in &nudges {
            section.notice role="status" {
                p {
                    "Your organisation is rolling out stronger sign-in (" (n.wave_name) "). "
                    "Register " strong { (what_to_register(&n.strength)) } "."
                }
                p {
                    "From " strong { (when(n.deadline)) } " (in " (wait_text(n.deadline - now)) ") "
                    "signing in will require it."
                }
            }
        }
        p {
            a.button href="/security-info" { "Set it up now" }
            " "
            a href=(next) { "Not now, continue" }
        }
    };
    ctx.page(StatusCode::OK, "Strengthen your sign-in", Section::SignIn, body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn custom_strengths_are_named() {
        assert!(super::what_to_register("fido_yubikey").contains("'fido_yubikey'"));
        assert!(super::what_to_register("phishing_resistant").contains("security key"));
    }
}
