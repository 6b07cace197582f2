//! Sign-in pages for push and SMS/voice: the step page's form posts here to
//! send the prompt (or the code), then the person finishes at
//! `/signin/verify` like every other method.
//!
//! ```text
//! step page (push) ──POST /signin/push──▶ number page ──(approved: push-wait.js submits,
//!                                         or "Continue")──POST /signin/verify {method: push}
//! step page (sms)  ──POST /signin/phone-code──▶ code page ──POST /signin/verify {method: sms, code}
//! ```
//! The number page polls `GET /signin/push/status` (same-origin, the flow
//! cookie) so it can continue by itself; without script, "Continue" works.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use latchkey_core::VerifyMethod;
use maud::{html, Markup};
use serde::Deserialize;

use super::errors;
use super::layout::{csrf_field, Section};
use super::pages_signin::{flow_id, restart, step_page, web_context, Target, EXPIRED};
use super::Ctx;
use latchkey_service::app::App;
use latchkey_service::ServiceError;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/signin/push", post(send_push))
        .route("/signin/push/status", get(push_status))
        .route("/signin/phone-code", post(send_code))
        .route("/security-info/push", post(enroll_push))
        .route("/security-info/phone", post(enroll_phone))
        .route("/security-info/phone/{id}", get(phone_pending))
        .route("/security-info/phone/{id}/confirm", post(confirm_phone))
}

/// Users whose only second factors are SMS/voice are nudged to something stronger.
pub(super) fn sms_only_nudge(methods: &[latchkey_store::MethodRecord]) -> Markup {
    use latchkey_core::{MethodKind, MethodState};
    let second: Vec<MethodKind> = methods
        .iter()
        .filter(|m| m.state == MethodState::Active && m.kind.second_factor().is_some())
        .filter(|m| m.kind != MethodKind::RecoveryCodes)
        .map(|m| m.kind)
        .collect();
    let phone_only = !second.is_empty() && second.iter().all(|k| matches!(k, MethodKind::Sms | MethodKind::Voice));
    html! {
        @if phone_only {
            p.notice.info #sms-nudge {
                "You sign in with text messages or phone calls only. They are the weakest method: a SIM swap "
                "or a phishing page can take the code. Add the Latchkey Authenticator or an authenticator app below."
            }
        }
    }
}

/// The "add a push authenticator" card on the security-info page.
pub(super) fn enroll_card(ctx: &Ctx) -> Markup {
    html! {
        form.card method="post" action="/security-info/push" {
            (csrf_field(ctx))
            h3 { "Latchkey Authenticator (push)" }
            p { "Approve sign-ins on your phone by typing the number the sign-in screen shows." }
            label for="push-label" { "Label for this device (optional)" }
            input #push-label type="text" name="label" maxlength="100" placeholder="e.g. Work phone";
            button.primary type="submit" { "Add Latchkey Authenticator" }
        }
    }
}

#[derive(Deserialize)]
struct LabelForm {
    label: Option<String>,
}

/// The "add a phone" card: a backup, labelled as the weakest method.
pub(super) fn phone_card(ctx: &Ctx) -> Markup {
    html! {
        form.card method="post" action="/security-info/phone" {
            (csrf_field(ctx))
            h3 { "Phone (backup)" }
            p { "Codes by text message or phone call. The weakest method: use it only as a backup." }
            label for="phone-number" { "Phone number, with country code" }
            input #phone-number type="tel" name="phone" autocomplete="tel" placeholder="+44 20 7946 0018" required
                maxlength="32";
            fieldset.inline {
                legend { "Send codes by" }
                label { input type="radio" name="kind" value="sms" checked; " text message" }
                label { input type="radio" name="kind" value="voice"; " phone call" }
            }
            button type="submit" { "Add phone" }
        }
    }
}

#[derive(Deserialize)]
struct PhoneForm {
    phone: String,
    kind: String,
}

async fn enroll_phone(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<PhoneForm>) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let latchkey_service::app::Principal::Session { user, .. } = &p else {
        return ctx.error_page(ServiceError::Unauthenticated);
    };
    let method = if f.kind == "voice" {
        VerifyMethod::Voice
    } else {
        VerifyMethod::Sms
    };
    match app.enroll_phone(&p, &user.username, method, &f.phone, None).await {
        Ok((m, sent)) => phone_page(ctx, &m.id, &sent.to, sent.development_only, None, StatusCode::OK),
        Err(ServiceError::ReauthenticationRequired(_)) => {
            axum::response::Redirect::to(&super::signin_url("/security-info", true)).into_response()
        }
        Err(e) => ctx.error_page(e),
    }
}

/// Reloading the confirmation page shows it again (no new code is sent).
async fn phone_pending(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let latchkey_service::app::Principal::Session { user, .. } = &p else {
        return ctx.error_page(ServiceError::Unauthenticated);
    };
    match app.methods(&p, &user.username).await {
        Ok((_, methods)) => match methods
            .iter()
            .find(|m| m.id == id && m.state == latchkey_core::MethodState::Pending)
        {
            Some(m) => {
                let to = m.params["masked"].as_str().unwrap_or("your phone").to_owned();
                phone_page(
                    ctx,
                    &id,
                    &to,
                    app.config.sms.gateway_is_development_only(),
                    None,
                    StatusCode::OK,
                )
            }
            None => axum::response::Redirect::to("/security-info").into_response(),
        },
        Err(e) => ctx.error_page(e),
    }
}

fn phone_page(ctx: Ctx, id: &str, to: &str, development: bool, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        h1 { "Confirm your phone" }
        p.notice.info { "We sent a code to " strong { (to) } ". Enter it to finish adding this phone." }
        @if development {
            p.notice.error role="note" {
                "Development setup: messages are written to the server's outbox file, not sent to a phone."
            }
        }
        (super::layout::notice_error(error))
        form.card method="post" action={ "/security-info/phone/" (id) "/confirm" } {
            (csrf_field(&ctx))
            label for="phone-code" { "Code" }
            input #phone-code type="text" name="code" inputmode="numeric" autocomplete="one-time-code"
                pattern="[0-9 ]*" maxlength="12" required autofocus;
            button.primary type="submit" { "Confirm" }
        }
        p { a href="/security-info" { "Cancel" } }
    };
    ctx.page(status, "Confirm your phone", Section::Security, body)
}

#[derive(Deserialize)]
struct PhoneCodeForm {
    code: String,
}

async fn confirm_phone(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<PhoneCodeForm>,
) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let latchkey_service::app::Principal::Session { user, .. } = &p else {
        return ctx.error_page(ServiceError::Unauthenticated);
    };
    let code = f.code.trim().replace(' ', "");
    match app.confirm_phone(&p, &user.username, &id, &code).await {
        Ok(_) => axum::response::Redirect::to("/security-info?done=phone_added").into_response(),
        Err(ServiceError::InvalidState(_)) => axum::response::Redirect::to("/security-info").into_response(),
        Err(e) => {
            let Some(r) = errors::confirmation(
                &e,
                "That code does not match or has expired. Check it, or add the phone again for a new code.",
            ) else {
                return ctx.error_page(e);
            };
            let dev = app.config.sms.gateway_is_development_only();
            phone_page(ctx, &id, "your phone", dev, Some(&r.message), r.status)
        }
    }
}

async fn enroll_push(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<LabelForm>) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let latchkey_service::app::Principal::Session { user, .. } = &p else {
        return ctx.error_page(ServiceError::Unauthenticated);
    };
    let label = f.label.filter(|l| !l.trim().is_empty());
    let e = match app.push_enrollment_start(&p, &user.username, label).await {
        Ok(e) => e,
        Err(e) => return ctx.error_page(e),
    };
    let qr = match latchkey_service::qr::svg(&e.enrollment_url) {
        Ok(svg) => format!(
            "data:image/svg+xml;base64,{}",
            data_encoding::BASE64.encode(svg.as_bytes())
        ),
        Err(e) => return ctx.error_page(e),
    };
    let body = html! {
        h1 { "Add the Latchkey Authenticator" }
        ol.steps {
            li { "On your phone, scan this QR code (or open the link) to open the Latchkey Authenticator." }
            li { "It creates a key that never leaves the device and registers it with your account." }
            li { "Desktop: run " code { "latchkey-authenticator enroll --url '<link>'" } "." }
        }
        div.enrol {
            img.qr src=(qr) width="220" height="220" alt="QR code that opens the Latchkey Authenticator enrollment";
            div {
                p { a #enroll-link href=(e.enrollment_url) { "Open the enrollment link" } }
                p.hint { "The link works once, until " (super::when(e.expires_at)) "." }
            }
        }
        p { a href="/security-info" { "Done" } }
    };
    ctx.page(
        StatusCode::OK,
        "Add the Latchkey Authenticator",
        Section::Security,
        body,
    )
}

/// Where the step page's form posts for `m`, and its button.
pub(super) fn step_form(m: VerifyMethod) -> (&'static str, &'static str) {
    match m {
        VerifyMethod::Push => ("/signin/push", "Send a notification"),
        VerifyMethod::Sms => ("/signin/phone-code", "Text me a code"),
        VerifyMethod::Voice => ("/signin/phone-code", "Call me with a code"),
        _ => ("/signin/verify", "Sign in"),
    }
}

pub(super) fn send_hint(m: VerifyMethod) -> Markup {
    html! {
        @match m {
            VerifyMethod::Push => p.hint {
                "We will send a sign-in request to your Latchkey Authenticator. It asks for the number this page "
                "will show: type it there to approve. If you did not start this sign-in, choose \u{201c}This wasn't me\u{201d}."
            },
            _ => p.hint {
                "Codes sent by text message or phone call are the weakest sign-in method: they can be "
                "intercepted or redirected to another SIM. Prefer an authenticator app or a security key."
            },
        }
    }
}

#[derive(Deserialize)]
struct SendForm {
    method: Option<String>,
    next: Option<String>,
    acr: Option<String>,
    prompt: Option<String>,
}

/// Show the step page again with an error (the flow is still there).
async fn back_to_step(app: &App, ctx: Ctx, t: &Target, id: &str, m: VerifyMethod, e: ServiceError) -> Response {
    if let ServiceError::FlowNotFound = e {
        return restart(ctx, t, EXPIRED, StatusCode::NOT_FOUND);
    }
    // Everything is said on the step page: a person signing in has nowhere
    // else to go. Sending is not verifying: its words (and a refused send's
    // 409) say so.
    let r = errors::refusal(&e);
    let (msg, status) = match e {
        ServiceError::TooManyAttempts { retry_after } => (
            format!(
                "Too many requests lately. Try again in {} or use another method.",
                super::wait_text(retry_after)
            ),
            r.status,
        ),
        ServiceError::InvalidState(_) | ServiceError::InvalidRequest(_) | ServiceError::Forbidden(_) => {
            (r.message, StatusCode::CONFLICT)
        }
        ServiceError::NotFound(_) => ("No phone is registered for this method.".into(), StatusCode::CONFLICT),
        _ => (r.message, r.status),
    };
    match app.signin_flow_state(id).await {
        Ok(wf) => step_page(ctx, t, &wf, Some(m), Some(&msg), status),
        Err(_) => restart(ctx, t, EXPIRED, StatusCode::NOT_FOUND),
    }
}

async fn send_push(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<SendForm>) -> Response {
    let t = Target::from_parts(f.next.as_deref(), f.acr.as_deref(), f.prompt.as_deref());
    let Some(id) = flow_id(&ctx) else {
        return restart(ctx, &t, EXPIRED, StatusCode::NOT_FOUND);
    };
    let p = match app.signin_push_start(&id, &web_context(&ctx, &t)).await {
        Ok(p) => p,
        Err(e) => return back_to_step(&app, ctx, &t, &id, VerifyMethod::Push, e).await,
    };
    let body = html! {
        h1 { "Approve the sign-in on your authenticator" }
        div #push-wait data-status-url="/signin/push/status" {
            p { "Open Latchkey Authenticator and type this number:" }
            p.push-number #push-number aria-live="polite" { (format!("{:02}", p.number)) }
            p.hint #push-state { "Waiting for your approval…" }
        }
        form.card #push-continue method="post" action="/signin/verify" {
            (csrf_field(&ctx))
            (t.hidden())
            input type="hidden" name="method" value="push";
            button.primary type="submit" { "Continue" }
        }
        p.muted { a href={ "/signin/continue?" (t.query()) } { "Use another method" } }
        script src="/static/push-wait.js" {}
    };
    ctx.page(StatusCode::OK, "Approve the sign-in", Section::SignIn, body)
}

/// `{status}` of this browser's push prompt, for push-wait.js.
async fn push_status(State(app): State<Arc<App>>, ctx: Ctx) -> Response {
    let Some(id) = flow_id(&ctx) else {
        return crate::error::ApiError::from(ServiceError::FlowNotFound).into_response();
    };
    match app.signin_push_status(&id).await {
        Ok(p) => Json(serde_json::json!({ "status": p.status })).into_response(),
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}

async fn send_code(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<SendForm>) -> Response {
    let t = Target::from_parts(f.next.as_deref(), f.acr.as_deref(), f.prompt.as_deref());
    let Some(id) = flow_id(&ctx) else {
        return restart(ctx, &t, EXPIRED, StatusCode::NOT_FOUND);
    };
    let method = match f.method.as_deref() {
        Some("voice") => VerifyMethod::Voice,
        _ => VerifyMethod::Sms,
    };
    let sent = match app.signin_phone_send(&id, method).await {
        Ok(s) => s,
        Err(e) => return back_to_step(&app, ctx, &t, &id, method, e).await,
    };
    let body = html! {
        h1 { @if method == VerifyMethod::Voice { "Enter the code from the phone call" } @else { "Enter the code we texted you" } }
        p.notice.info { "We sent a code to " strong { (sent.to) } ". It works once, for a few minutes." }
        @if sent.development_only {
            p.notice.error role="alert" {
                "Development setup: messages are written to the server's outbox file, not sent to a phone."
            }
        }
        form.card method="post" action="/signin/verify" {
            (csrf_field(&ctx))
            (t.hidden())
            input type="hidden" name="method" value=(method.as_str());
            label for="code" { "Code" }
            input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*"
                maxlength="10" required autofocus;
            button.primary type="submit" { "Sign in" }
        }
        p.muted { a href={ "/signin/continue?" (t.query()) } { "Use another method" } }
    };
    ctx.page(StatusCode::OK, "Enter the code", Section::SignIn, body)
}
