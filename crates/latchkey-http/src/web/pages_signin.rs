//! Sign-in pages: username → password (or a Temporary Access Pass) → the
//! second factor, then the `lk_session` cookie and a redirect to `next`.
//!
//! The flow id lives in the HttpOnly `lk_flow` cookie (10 minutes, like the
//! flow itself); every step is a CSRF-checked POST. Which page comes next is
//! read from the stored flow, so a refresh or "use another method" never
//! skips a step: the App decides what is allowed.
//!
//! ```text
//! GET /signin ──POST /signin (username)──▶ GET /signin/continue ──POST /signin/verify──┐
//!                                              ▲  (password | TAP | code)             │
//!                                              └──────── more steps needed ───────────┤
//!                                                         complete: cookie, 303 next ◀┘
//! ```

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use latchkey_core::signin::{SignInState, FLOW_LIFETIME_SECS};
use latchkey_core::{AuthStrength, VerifyMethod};
use maud::{html, Markup};
use serde::Deserialize;
use std::sync::Arc;

use super::errors;
use super::layout::{csrf_field, notice_error, notice_ok, passkey_origin_notice, Section};
use super::{cookie, parse_acr, percent_encode, removal, safe_next, session_acr, Ctx, WebFlow};
use super::{FLOW_COOKIE, SESSION_COOKIE};
use latchkey_service::app::{App, Principal, Proof, SignInContext};
use latchkey_service::ServiceError;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/signin", get(signin_page).post(signin_username))
        .route("/signin/continue", get(continue_page))
        .route("/signin/verify", post(verify))
        .route("/signin/passkey", post(passkey_start))
        .route("/signin/webauthn/challenge", post(webauthn_challenge))
        .route("/signin/lost", get(lost_device))
}

/// Where to go after signing in, and how strong the sign-in must be.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TargetQuery {
    next: Option<String>,
    prompt: Option<String>,
    acr: Option<String>,
    method: Option<String>,
    signed_out: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct Target {
    next: String,
    acr: Option<AuthStrength>,
    fresh: bool,
}

impl Target {
    pub(super) fn from_parts(next: Option<&str>, acr: Option<&str>, prompt: Option<&str>) -> Self {
        Target {
            next: safe_next(next).unwrap_or("/security-info").to_owned(),
            acr: parse_acr(acr),
            fresh: prompt == Some("login"),
        }
    }

    pub(super) fn query(&self) -> String {
        let mut q = format!("next={}", percent_encode(&self.next));
        if let Some(a) = self.acr {
            q.push_str("&acr=");
            q.push_str(a.as_str());
        }
        if self.fresh {
            q.push_str("&prompt=login");
        }
        q
    }

    pub(super) fn hidden(&self) -> Markup {
        html! {
            input type="hidden" name="next" value=(self.next);
            @if let Some(a) = self.acr { input type="hidden" name="acr" value=(a.as_str()); }
            @if self.fresh { input type="hidden" name="prompt" value="login"; }
        }
    }
}

pub(super) fn web_context(ctx: &Ctx, t: &Target) -> SignInContext {
    SignInContext {
        application: Some("web".into()),
        source_ip: ctx.peer.clone(),
        continues_to: continues_to(&t.next),
        ..Default::default()
    }
}

/// The OIDC client a sign-in continues to, read from where it goes next: its
/// conditional-access policies decide this sign-in too (and the
/// authorization endpoint checks the session against them again).
fn continues_to(next: &str) -> Option<String> {
    let query = next.strip_prefix("/oauth2/authorize?")?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "client_id")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

// ---- step 1: username ------------------------------------------------------

async fn signin_page(ctx: Ctx, Query(q): Query<TargetQuery>) -> Response {
    let t = Target::from_parts(q.next.as_deref(), q.acr.as_deref(), q.prompt.as_deref());
    if let Some(p) = &ctx.principal {
        let strong_enough = match (t.acr, session_acr(p)) {
            (Some(want), Some(have)) => have >= want,
            (Some(_), None) => false,
            (None, _) => true,
        };
        if !t.fresh && strong_enough {
            return Redirect::to(&t.next).into_response();
        }
    }
    let info = q.signed_out.is_some().then_some("You have signed out.");
    let prefill = ctx.username().map(str::to_owned);
    username_page(ctx, &t, None, info, prefill, StatusCode::OK)
}

fn username_page(
    ctx: Ctx,
    t: &Target,
    error: Option<&str>,
    info: Option<&str>,
    prefill: Option<String>,
    status: StatusCode,
) -> Response {
    let body = html! {
        h1 { "Sign in" }
        @if t.fresh {
            p.lead { "For your protection, confirm it's you before continuing." }
        }
        @if let Some(a) = t.acr {
            @if a > AuthStrength::Mfa {
                p.notice.info { "This page asks for a " strong { (strength_name(a)) } " sign-in." }
            }
        }
        (notice_ok(info))
        (notice_error(error))
        (passkey_origin_notice(&ctx))
        form.card method="post" action="/signin" {
            (csrf_field(&ctx))
            (t.hidden())
            label for="username" { "Username" }
            // "webauthn": the browser may offer this site's passkeys right here (conditional mediation).
            input #username type="text" name="username" autocomplete="username webauthn" autocapitalize="none"
                spellcheck="false" required autofocus value=(prefill.unwrap_or_default())
                aria-describedby=[error.map(|_| "form-error")];
            button.primary type="submit" { "Next" }
        }
        (passkey_form(&ctx, t, "/signin/passkey", "Sign in with a passkey", true))
        p.muted { a href={ "/signin/lost?" (t.query()) } { "Can't sign in?" } }
    };
    ctx.page(status, "Sign in", Section::SignIn, body)
}

#[derive(Deserialize)]
struct UsernameForm {
    username: String,
    next: Option<String>,
    acr: Option<String>,
    prompt: Option<String>,
}

async fn signin_username(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<UsernameForm>) -> Response {
    let t = Target::from_parts(f.next.as_deref(), f.acr.as_deref(), f.prompt.as_deref());
    let username = f.username.trim().to_lowercase();
    match app.signin_start(&username, None, &web_context(&ctx, &t)).await {
        Ok(view) => {
            let mut c = cookie(FLOW_COOKIE, view.flow_id, ctx.secure);
            c.set_max_age(time::Duration::seconds(FLOW_LIFETIME_SECS));
            let jar = ctx.jar.add(c);
            (jar, Redirect::to(&format!("/signin/continue?{}", t.query()))).into_response()
        }
        Err(ServiceError::InvalidRequest(_)) => username_page(
            ctx,
            &t,
            Some("Enter your username: lower-case letters, digits, '.', '_' or '-'."),
            None,
            Some(f.username),
            StatusCode::BAD_REQUEST,
        ),
        Err(e) => ctx.error_page(e),
    }
}

// ---- later steps -----------------------------------------------------------

/// The flow of a usernameless passkey sign-in (see [`passkey_start`]).
const PASSKEY_FLOW_COOKIE: &str = "lk_passkey_flow";

pub(super) fn flow_id(ctx: &Ctx) -> Option<String> {
    ctx.jar.get(FLOW_COOKIE).map(|c| c.value().to_owned())
}

pub(super) fn restart(ctx: Ctx, t: &Target, why: &str, status: StatusCode) -> Response {
    let mut ctx = ctx;
    ctx.jar = ctx.jar.remove(removal(FLOW_COOKIE));
    username_page(ctx, t, Some(why).filter(|w| !w.is_empty()), None, None, status)
}

pub(super) const EXPIRED: &str =
    "Your sign-in took too long or was already used, so it has expired. Please start again.";

async fn continue_page(State(app): State<Arc<App>>, ctx: Ctx, Query(q): Query<TargetQuery>) -> Response {
    let t = Target::from_parts(q.next.as_deref(), q.acr.as_deref(), q.prompt.as_deref());
    let Some(id) = flow_id(&ctx) else {
        return restart(ctx, &t, EXPIRED, StatusCode::OK);
    };
    match app.signin_flow_state(&id).await {
        // A passkey sign-in that was started and left: nothing to continue.
        Ok(wf) if wf.username.is_empty() => restart(ctx, &t, "", StatusCode::OK),
        Ok(wf) => {
            let method = q.method.as_deref().and_then(parse_method);
            step_page(ctx, &t, &wf, method, None, StatusCode::OK)
        }
        Err(ServiceError::FlowNotFound) => restart(ctx, &t, EXPIRED, StatusCode::OK),
        Err(e) => ctx.error_page(e),
    }
}

fn parse_method(s: &str) -> Option<VerifyMethod> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

/// Steps this page can take. Push and SMS/voice first send something (see
/// `pages_push`), a passkey or security key first asks for a challenge
/// (passkeys.js), then all verify here.
fn supported(m: VerifyMethod) -> bool {
    matches!(
        m,
        VerifyMethod::Password
            | VerifyMethod::Webauthn
            | VerifyMethod::TemporaryAccessPass
            | VerifyMethod::Totp
            | VerifyMethod::RecoveryCode
            | VerifyMethod::Push
            | VerifyMethod::Sms
            | VerifyMethod::Voice
    )
}

fn method_title(m: VerifyMethod) -> &'static str {
    match m {
        VerifyMethod::Password => "Enter your password",
        VerifyMethod::TemporaryAccessPass => "Enter your Temporary Access Pass",
        VerifyMethod::Totp => "Enter the code from your authenticator app",
        VerifyMethod::RecoveryCode => "Enter a recovery code",
        VerifyMethod::Webauthn => "Use your passkey or security key",
        VerifyMethod::Push => "Approve the notification on your phone",
        VerifyMethod::Sms => "Enter the code we texted you",
        VerifyMethod::Voice => "Enter the code from the phone call",
    }
}

fn method_choice(m: VerifyMethod) -> &'static str {
    match m {
        VerifyMethod::Password => "Use my password",
        VerifyMethod::TemporaryAccessPass => "Use a Temporary Access Pass from the helpdesk",
        VerifyMethod::Totp => "Use a code from my authenticator app",
        VerifyMethod::RecoveryCode => "Use a recovery code",
        VerifyMethod::Webauthn => "Use my passkey or security key",
        VerifyMethod::Push => "Approve a notification on my phone",
        VerifyMethod::Sms => "Text me a code",
        VerifyMethod::Voice => "Call me",
    }
}

fn strength_name(a: AuthStrength) -> &'static str {
    match a {
        AuthStrength::Mfa => "multi-factor",
        AuthStrength::PasswordlessMfa => "passwordless multi-factor",
        AuthStrength::PhishingResistant => "phishing-resistant",
    }
}

pub(super) fn step_page(
    ctx: Ctx,
    t: &Target,
    wf: &WebFlow,
    want: Option<VerifyMethod>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let mut allowed: Vec<VerifyMethod> = wf
        .flow
        .state
        .allowed_methods()
        .into_iter()
        .filter(|m| supported(*m))
        .collect();
    if wf.pass_first {
        // No password, or a pass from the helpdesk waiting: that is what this person can use.
        allowed.sort_by_key(|m| *m != VerifyMethod::TemporaryAccessPass);
    }
    let started = matches!(wf.flow.state, SignInState::Started);
    // The App lists second factors strongest first: preselect that one.
    let method = want
        .filter(|m| allowed.contains(m))
        .or_else(|| allowed.first().copied());
    let registration = matches!(wf.flow.state, SignInState::RegistrationRequired);
    let second = matches!(wf.flow.state, SignInState::SecondFactorRequired { .. });
    let body = html! {
        h1 { @if let Some(m) = method { (method_title(m)) } @else { "Sign in" } }
        p.who-line { "Signing in as " strong { (wf.username) } " · " a href={ "/signin?" (t.query()) } { "Not you?" } }
        @if registration {
            p.notice.info {
                "Your password is right, but your account has no second sign-in method yet, so a password alone "
                "cannot sign you in. Ask the helpdesk for a Temporary Access Pass, enter it below, and then "
                "register an authenticator app."
            }
        }
        (notice_error(error))
        @if method == Some(VerifyMethod::Webauthn) || started {
            (passkey_origin_notice(&ctx))
        }
        @if let Some(m) = method {
            @let (action, button) = super::pages_push::step_form(m);
            @let webauthn = m == VerifyMethod::Webauthn;
            form.card method="post" action=(action) data-webauthn-signin[webauthn]
                data-challenge-url=[webauthn.then_some("/signin/webauthn/challenge")] {
                (csrf_field(&ctx))
                (t.hidden())
                input type="hidden" name="method" value=(m.as_str());
                (method_input(m, error.is_some()))
                button.primary type="submit" { @if webauthn { "Use my passkey or security key" } @else { (button) } }
            }
            @if started {
                // Not listed among the user's methods (that would tell anyone
                // who has one), but always possible before the password.
                (passkey_form(&ctx, t, "/signin/webauthn/challenge", "Use a passkey instead", false))
            }
        } @else {
            p.notice.error role="alert" {
                "None of your sign-in methods can be used on this page. Contact the helpdesk."
            }
        }
        @let others: Vec<VerifyMethod> = allowed.iter().copied().filter(|o| Some(*o) != method).collect();
        @if !others.is_empty() {
            details.other-methods open[second && error.is_some()] {
                summary { "Use another method" }
                ul.choices {
                    @for o in &others {
                        li { a href={ "/signin/continue?" (t.query()) "&method=" (o.as_str()) } { (method_choice(*o)) } }
                    }
                }
            }
        }
        @if second || registration {
            p.muted { a href={ "/signin/lost?" (t.query()) } { "I lost my device" } }
        }
    };
    ctx.page(status, "Sign in", Section::SignIn, body)
}

fn method_input(m: VerifyMethod, invalid: bool) -> Markup {
    let described = invalid.then_some("form-error");
    let aria_invalid = invalid.then_some("true");
    html! {
        @match m {
            VerifyMethod::Password => {
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required autofocus
                    aria-describedby=[described] aria-invalid=[aria_invalid];
            }
            VerifyMethod::TemporaryAccessPass => {
                label for="pass" { "Temporary Access Pass" }
                input #pass type="text" name="pass" autocomplete="off" autocapitalize="characters" spellcheck="false"
                    required autofocus aria-describedby=[described] aria-invalid=[aria_invalid];
                p.hint { "The helpdesk gave you this pass after checking who you are. It works for a few hours." }
            }
            VerifyMethod::Webauthn => {
                input type="hidden" name="assertion" value="";
                p.hint { "Your browser will ask for your passkey or security key: touch the key, or confirm with your fingerprint, face or PIN." }
                p.hint data-webauthn-status role="status" {}
                noscript { p.hint { "This step needs JavaScript in this browser. Use another method below." } }
            }
            VerifyMethod::Push | VerifyMethod::Sms | VerifyMethod::Voice => {
                (super::pages_push::send_hint(m))
            }
            VerifyMethod::RecoveryCode => {
                label for="code" { "Recovery code" }
                input #code type="text" name="code" autocomplete="off" autocapitalize="characters" spellcheck="false"
                    required autofocus aria-describedby=[described] aria-invalid=[aria_invalid];
                p.hint { "Each recovery code works once." }
            }
            _ => {
                label for="code" { "Code" }
                input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*"
                    maxlength="10" required autofocus aria-describedby=[described] aria-invalid=[aria_invalid];
                p.hint { "Open your authenticator app and enter the 6-digit code shown for Latchkey." }
            }
        }
    }
}

#[derive(Deserialize)]
struct VerifyForm {
    method: String,
    password: Option<String>,
    code: Option<String>,
    pass: Option<String>,
    /// The WebAuthn assertion (PublicKeyCredential JSON) passkeys.js put in the form.
    assertion: Option<String>,
    /// Set by the usernameless passkey form: its flow is in its own cookie.
    passkey: Option<String>,
    next: Option<String>,
    acr: Option<String>,
    prompt: Option<String>,
}

async fn verify(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<VerifyForm>) -> Response {
    let t = Target::from_parts(f.next.as_deref(), f.acr.as_deref(), f.prompt.as_deref());
    let id = match f.passkey {
        Some(_) => ctx.jar.get(PASSKEY_FLOW_COOKIE).map(|c| c.value().to_owned()),
        None => flow_id(&ctx),
    };
    let Some(id) = id else {
        return restart(ctx, &t, EXPIRED, StatusCode::NOT_FOUND);
    };
    let method = match parse_method(&f.method).filter(|m| supported(*m)) {
        Some(m) => m,
        None => return ctx.error_page(ServiceError::InvalidRequest("unknown sign-in method".into())),
    };
    let proof = match method {
        VerifyMethod::Password => Proof::Password(f.password.unwrap_or_default()),
        VerifyMethod::TemporaryAccessPass => Proof::Pass(f.pass.unwrap_or_default().trim().to_owned()),
        VerifyMethod::Push => Proof::Push,
        VerifyMethod::Webauthn => match serde_json::from_str(f.assertion.as_deref().unwrap_or("")) {
            Ok(a) => Proof::Assertion(a),
            Err(_) => {
                return ctx.error_page(ServiceError::InvalidRequest(
                    "the browser sent no answer from the passkey or security key".into(),
                ))
            }
        },
        _ => Proof::Code(f.code.unwrap_or_default().trim().replace(' ', "")),
    };
    match app.signin_verify(&id, method, proof, &web_context(&ctx, &t)).await {
        Ok(o) => match (o.session_token.clone(), o.acr) {
            (Some(token), Some(acr)) => {
                let mut ctx = ctx;
                if let Some(old @ Principal::Session { .. }) = &ctx.principal {
                    // A fresh sign-in replaces the old session rather than leaving it behind.
                    let _ = app.logout(old).await;
                }
                ctx.jar = ctx
                    .jar
                    .remove(removal(FLOW_COOKIE))
                    .remove(removal(PASSKEY_FLOW_COOKIE))
                    .add(cookie(SESSION_COOKIE, token, ctx.secure));
                let to_app = t.next.starts_with("/oauth2/");
                if !o.registration_campaigns.is_empty() && !matches!(t.acr, Some(want) if acr < want) {
                    // A rollout wave is nudging: say what to register and by when first.
                    let to = format!("/signin/campaign?next={}", percent_encode(&t.next));
                    return (ctx.jar, Redirect::to(&to)).into_response();
                }
                if method == VerifyMethod::RecoveryCode && !to_app {
                    // A spent recovery code usually means a lost device: say so, and what to do.
                    return (ctx.jar, Redirect::to("/security-info")).into_response();
                }
                match t.acr {
                    // An application asked for more: it gets the answer (the
                    // OIDC error) rather than a page meant for people.
                    Some(want) if acr < want && !to_app => weaker_than_asked(ctx, &t, want, acr),
                    _ if to_app => continue_to_app(ctx, &t.next),
                    _ => (ctx.jar, Redirect::to(&t.next)).into_response(),
                }
            }
            _ => Redirect::to(&format!("/signin/continue?{}", t.query())).into_response(),
        },
        Err(ServiceError::FlowNotFound) => restart(ctx, &t, EXPIRED, StatusCode::NOT_FOUND),
        Err(ServiceError::InvalidState(_)) => restart(
            ctx,
            &t,
            "This sign-in cannot continue from here. Please start again.",
            StatusCode::CONFLICT,
        ),
        Err(e) => {
            let shown = |e: &ServiceError| {
                use ServiceError::*;
                matches!(
                    e,
                    InvalidCredentials
                        | InvalidCode
                        | CodeReplayed
                        | InvalidPass
                        | TooManyAttempts { .. }
                        | InvalidRequest(_)
                        | PushPending
                        | PushNotApproved { .. }
                        | PushUnavailable(_)
                        | GatewayFailed(_)
                        | WebauthnRejected(_)
                        | WebauthnCounterRegression
                )
            };
            let Some(refusal) = errors::inline(&e, shown) else {
                return ctx.error_page(e);
            };
            let refusal = match e {
                ServiceError::InvalidCode if method == VerifyMethod::RecoveryCode => {
                    refusal.say("That recovery code is not valid or was already used.")
                }
                ServiceError::WebauthnRejected(_) => refusal.say(
                    "That passkey or security key was not accepted: it may not be registered for this account. \
                     Try again, or use another method.",
                ),
                ServiceError::WebauthnCounterRegression => refusal.say(
                    "This security key may have been copied, so it was refused. Use another method and call the helpdesk.",
                ),
                _ => refusal,
            };
            let (msg, status) = (refusal.message, refusal.status);
            match app.signin_flow_state(&id).await {
                Ok(wf) if wf.username.is_empty() => username_page(ctx, &t, Some(&msg), None, None, status),
                Ok(wf) => step_page(ctx, &t, &wf, Some(method), Some(&msg), status),
                Err(_) => restart(ctx, &t, EXPIRED, StatusCode::NOT_FOUND),
            }
        }
    }
}

/// A form that signs in with a passkey (passkeys.js asks `challenge_url` for
/// the options, then posts the assertion to /signin/verify). `autofill`: the
/// page's username field offers passkeys too.
fn passkey_form(ctx: &Ctx, t: &Target, challenge_url: &str, button: &str, autofill: bool) -> Markup {
    html! {
        form.passkey method="post" action="/signin/verify" data-webauthn-signin data-challenge-url=(challenge_url)
            data-passkey-autofill[autofill] hidden {
            (csrf_field(ctx))
            (t.hidden())
            input type="hidden" name="method" value=(VerifyMethod::Webauthn.as_str());
            input type="hidden" name="assertion" value="";
            @if autofill { input type="hidden" name="passkey" value="1"; }
            p.or { span { "or" } }
            button type="submit" { (button) }
            p.hint data-webauthn-status role="status" {}
        }
    }
}

/// passkeys.js: start a usernameless sign-in; the flow cookie is set here
/// and the options for `navigator.credentials.get` come back.
async fn passkey_start(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<TargetForm>) -> Response {
    let t = Target::from_parts(f.next.as_deref(), f.acr.as_deref(), f.prompt.as_deref());
    match app.passkey_signin_start(&web_context(&ctx, &t)).await {
        Ok(s) => {
            // Its own cookie: the autofill request starts this flow while the
            // person may be typing a username, whose flow must not be replaced.
            let mut c = cookie(PASSKEY_FLOW_COOKIE, s.flow.flow_id, ctx.secure);
            c.set_max_age(time::Duration::seconds(FLOW_LIFETIME_SECS));
            let body = serde_json::json!({ "publicKey": crate::api::webauthn::public_key_of(&s.options) });
            (ctx.jar.add(c), axum::Json(body)).into_response()
        }
        Err(e) => webauthn_refusal(e, &t),
    }
}

/// passkeys.js: the options for the WebAuthn step of the flow this browser holds.
async fn webauthn_challenge(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<TargetForm>) -> Response {
    let t = Target::from_parts(f.next.as_deref(), f.acr.as_deref(), f.prompt.as_deref());
    let Some(id) = flow_id(&ctx) else {
        return super::json_refusal(
            ServiceError::FlowNotFound,
            EXPIRED,
            Some(format!("/signin?{}", t.query())),
        );
    };
    match app.webauthn_challenge(&id).await {
        Ok(o) => {
            axum::Json(serde_json::json!({ "publicKey": crate::api::webauthn::public_key_of(&o) })).into_response()
        }
        Err(e) => webauthn_refusal(e, &t),
    }
}

fn webauthn_refusal(e: ServiceError, t: &Target) -> Response {
    if let ServiceError::Internal(msg) = &e {
        tracing::error!(error = %msg, "internal error");
    }
    let restart = matches!(e, ServiceError::FlowNotFound | ServiceError::InvalidState(_));
    let message = if restart {
        EXPIRED.to_owned()
    } else {
        errors::refusal(&e).message
    };
    super::json_refusal(e, &message, restart.then(|| format!("/signin?{}", t.query())))
}

#[derive(Deserialize)]
struct TargetForm {
    next: Option<String>,
    acr: Option<String>,
    prompt: Option<String>,
}

/// Go on to the authorize endpoint, which redirects to the application. Not
/// a redirect from this form post: `form-action 'self'` would make the
/// browser refuse the cross-site hop at the end of the chain. A refresh is a
/// plain navigation (and needs no inline script).
fn continue_to_app(ctx: Ctx, next: &str) -> Response {
    let body = html! {
        meta http-equiv="refresh" content={ "0;url=" (next) };
        h1 { "Signed in" }
        p { "Returning to the application… " a href=(next) { "Continue" } }
    };
    let mut resp = ctx.page(StatusCode::OK, "Signed in", Section::SignIn, body);
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("0;url={next}")) {
        resp.headers_mut().insert(axum::http::header::REFRESH, v);
    }
    resp
}

fn weaker_than_asked(ctx: Ctx, t: &Target, want: AuthStrength, got: AuthStrength) -> Response {
    let body = html! {
        h1 { "A stronger sign-in is needed" }
        p.notice.error role="alert" {
            "The page you were going to asks for a " strong { (strength_name(want)) } " sign-in, "
            "but your sign-in methods only give a " strong { (strength_name(got)) } " one."
        }
        p { "You are signed in. Register a stronger method in your security info, then try again." }
        p { a.button href="/security-info" { "Go to security info" } " " a href=(t.next) { "Try the page again" } }
    };
    ctx.page(StatusCode::FORBIDDEN, "Stronger sign-in needed", Section::SignIn, body)
}

async fn lost_device(ctx: Ctx, Query(q): Query<TargetQuery>) -> Response {
    let t = Target::from_parts(q.next.as_deref(), q.acr.as_deref(), q.prompt.as_deref());
    let body = html! {
        h1 { "Lost your phone or security key?" }
        p { "No problem — but nobody, not even the helpdesk, can switch off the second step of your sign-in. "
            "Instead, they will give you a one-time pass once they have checked who you are." }
        ol.steps {
            li { strong { "Call the helpdesk" } " (or visit them in person). Say that you lost your sign-in device." }
            li { strong { "Prove who you are." } " They will call you back on a known number, check your ID, or ask your manager to confirm." }
            li { strong { "Get a Temporary Access Pass." } " It works for a few hours and usually only once. They will tell it to you directly — never by email." }
            li { strong { "Sign in with the pass" } " and register your new phone or key straight away in your security info." }
        }
        p { "If you still have a recovery code, you can use it instead: choose " em { "Use another method" } " on the sign-in page." }
        p.notice.info { "Someone asking you for a code or pass over the phone is not the helpdesk. Never share them." }
        p { a.button href={ "/signin?" (t.query()) } { "Back to sign in" } }
    };
    ctx.page(StatusCode::OK, "Lost device", Section::SignIn, body)
}

pub async fn signout(State(app): State<Arc<App>>, ctx: Ctx) -> Response {
    if let Some(p) = &ctx.principal {
        if let Err(e) = app.logout(p).await {
            return ctx.error_page(e);
        }
    }
    let jar = ctx.jar.remove(removal(SESSION_COOKIE)).remove(removal(FLOW_COOKIE));
    (jar, Redirect::to("/signin?signed_out=1")).into_response()
}

#[cfg(test)]
mod tests {
    use super::continues_to;

    #[test]
    fn the_client_a_sign_in_continues_to_comes_from_its_authorize_url() {
        assert_eq!(
            continues_to("/oauth2/authorize?response_type=code&client_id=c%2D1&x=y").as_deref(),
            Some("c-1")
        );
        assert_eq!(continues_to("/security-info"), None);
        assert_eq!(continues_to("/oauth2/authorize?client_id="), None);
        assert_eq!(continues_to("/oauth2/token?client_id=c-1"), None);
    }
}
