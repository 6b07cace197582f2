//! The one mapping from a service error to what a web page does with it:
//! what a person reads, the status, and where it is said — on the page the
//! person is on (a wrong code, a weak password), on a page of its own
//! (forbidden, not found, an internal error), or by signing in (again).
//!
//! Statuses come from [`crate::error::classify`] and the App's own words from
//! [`crate::error::detail`] (internal details never reach a page); the
//! sign-in and push errors, which people meet most, have their words here.
//! A page only names the variants it shows inline ([`inline`]); everything
//! else goes to [`super::Ctx::error_page`], which treats it the same on
//! every page.

use axum::http::StatusCode;
use latchkey_service::ServiceError;

use super::wait_text;

/// What a person reads about a refusal, and the response's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub status: StatusCode,
}

impl Refusal {
    /// Other words for this page (the status stays).
    pub fn say(self, message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            ..self
        }
    }
}

/// Where a page says it.
#[derive(Debug, PartialEq, Eq)]
pub enum Treatment {
    /// Sign in (`fresh`: again, strongly) and come back.
    SignIn { fresh: bool },
    /// Nothing to correct in a form: a page of its own, with this title.
    OwnPage { title: &'static str, refusal: Refusal },
}

/// The words and status for `e`, wherever it is shown.
pub fn refusal(e: &ServiceError) -> Refusal {
    use ServiceError::*;
    let (_, status, _) = crate::error::classify(e);
    let message = match e {
        InvalidCredentials => "The username or password is not right. Check them and try again.".to_owned(),
        InvalidCode => "That code is not right. Enter the code your authenticator app shows now.".to_owned(),
        WrongConfirmationCode => "That code does not match. Check it and enter the current code.".to_owned(),
        CodeReplayed => {
            "That code was already used. Wait for the next code to appear (at most 30 seconds) and enter it.".to_owned()
        }
        InvalidPass => {
            "That pass is not valid, has expired or was already used. Ask the helpdesk for a new one.".to_owned()
        }
        TooManyAttempts { retry_after } => format!(
            "Too many failed attempts. To protect your account, signing in is paused: try again in {}.",
            wait_text(*retry_after)
        ),
        PushPending => {
            "The request has not been approved yet. Approve it on your authenticator, then continue.".to_owned()
        }
        PushNotApproved { reason } => match *reason {
            "push_wrong_number" => {
                "The number typed on the authenticator did not match, so the request was refused. Send a new one."
            }
            "push_timeout" => "The request expired before it was approved. Send a new one.",
            _ => "The request was denied on the authenticator.",
        }
        .to_owned(),
        GatewayFailed(_) => {
            "The code could not be sent right now. Try again in a minute or use another method.".to_owned()
        }
        ApprovalRequired { request_id } => format!(
            "This user is privileged, so a second administrator must approve the pass (request {request_id}). \
             Once it is approved and issued, enter the request ID below."
        ),
        other => sentence(&crate::error::detail(other)),
    };
    Refusal { message, status }
}

/// The App's messages are sentence fragments; a page shows a sentence.
fn sentence(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => {
            let mut out: String = c.to_uppercase().chain(chars).collect();
            if !out.ends_with(['.', '!', '?']) {
                out.push('.');
            }
            out
        }
        None => String::new(),
    }
}

/// `e` as the page shows it inline, when it is one of the variants the page
/// shows (`shown`) and needs no page of its own.
pub fn inline(e: &ServiceError, shown: impl Fn(&ServiceError) -> bool) -> Option<Refusal> {
    (!needs_own_page(e) && shown(e)).then(|| refusal(e))
}

/// A code typed to confirm a new method, refused: shown on the confirming
/// page, in `wrong_code` words when it did not match.
pub fn confirmation(e: &ServiceError, wrong_code: &str) -> Option<Refusal> {
    let r = inline(e, |e| {
        matches!(e, ServiceError::WrongConfirmationCode | ServiceError::InvalidRequest(_))
    })?;
    Some(match e {
        ServiceError::WrongConfirmationCode => r.say(wrong_code),
        _ => r,
    })
}

/// Errors no form on the page could answer: who you are, or may not be.
pub fn needs_own_page(e: &ServiceError) -> bool {
    matches!(
        e,
        ServiceError::Unauthenticated | ServiceError::ReauthenticationRequired(_) | ServiceError::Forbidden(_)
    )
}

/// How a page shows an error it does not show inline.
pub fn treatment(e: &ServiceError) -> Treatment {
    match e {
        ServiceError::Unauthenticated => Treatment::SignIn { fresh: false },
        ServiceError::ReauthenticationRequired(_) => Treatment::SignIn { fresh: true },
        other => Treatment::OwnPage {
            title: crate::error::classify(other).2,
            refusal: refusal(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_fragments_become_sentences_and_internals_stay_hidden() {
        let r = refusal(&ServiceError::InvalidRequest("the period ends before it starts".into()));
        assert_eq!(r.message, "The period ends before it starts.");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let r = refusal(&ServiceError::Internal("database at 10.0.0.5 refused".into()));
        assert!(!r.message.contains("10.0.0.5"), "{}", r.message);
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(sentence("done."), "Done.");
    }

    #[test]
    fn pages_show_inline_only_what_they_name_and_never_who_you_are() {
        let code = |e: &ServiceError| matches!(e, ServiceError::InvalidCode | ServiceError::Forbidden(_));
        assert_eq!(
            inline(&ServiceError::InvalidCode, code).map(|r| r.status),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(inline(&ServiceError::Forbidden("no".into()), code), None);
        assert_eq!(inline(&ServiceError::InvalidPass, code), None);
        assert_eq!(
            treatment(&ServiceError::ReauthenticationRequired("x".into())),
            Treatment::SignIn { fresh: true }
        );
        assert_eq!(
            treatment(&ServiceError::Unauthenticated),
            Treatment::SignIn { fresh: false }
        );
        match treatment(&ServiceError::NotFound("case".into())) {
            Treatment::OwnPage { title, refusal } => {
                assert_eq!((title, refusal.status), ("Not found", StatusCode::NOT_FOUND));
                assert_eq!(refusal.message, "Case not found.");
            }
            other => panic!("{other:?}"),
        }
    }
}
