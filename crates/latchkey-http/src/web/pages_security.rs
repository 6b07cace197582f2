//! The user's own security info: methods with last use, adding an
//! authenticator app (QR + confirmation), recovery codes (shown once,
//! downloadable), password, removing methods, and their sign-in history.
//!
//! Changes need a fresh strong sign-in; the App enforces that and answers
//! `ReauthenticationRequired`, which sends the browser through
//! `/signin?prompt=login&next=/security-info`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use latchkey_core::{MethodState, VerifyMethod};
use maud::{html, Markup};
use serde::Deserialize;

use super::errors;
use super::layout::{csrf_field, method_name, notice_error, notice_ok, signin_table, tag, Section};
use super::{signin_url, when, Ctx};
use latchkey_service::app::{App, Principal};
use latchkey_service::ServiceError;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/security-info", get(overview))
        .route("/security-info/totp", post(totp_start))
        .route("/security-info/totp/{id}", get(totp_pending))
        .route("/security-info/totp/{id}/confirm", post(totp_confirm))
        .route(
            "/security-info/recovery-codes",
            get(show_recovery_codes).post(recovery_codes),
        )
        .route("/security-info/webauthn/start", post(webauthn_start))
        .route("/security-info/webauthn/finish", post(webauthn_finish))
        .route("/security-info/password", post(password))
        .route("/security-info/methods/{id}/delete", post(remove_method))
}

const BACK: &str = "/security-info";

/// On "sign in again", come back to the security info page (the form that
/// was refused cannot be replayed after a sign-in anyway).
fn reauth() -> Response {
    Redirect::to(&signin_url(BACK, true)).into_response()
}

fn me(p: &Principal) -> (&str, &latchkey_store::SessionRecord) {
    match p {
        Principal::Session { user, session } => (&user.username, session),
        _ => unreachable!("web pages only see session principals"),
    }
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    done: Option<String>,
}

fn done_text(d: &str) -> Option<&'static str> {
    Some(match d {
        "totp_added" => "Your authenticator app is registered. You can use its codes to sign in.",
        "phone_added" => {
            "Your phone is registered as a backup. Add an authenticator app or a security key too: they are stronger."
        }
        "password_set" => "Your password was saved.",
        "passkey_added" => "Your passkey is registered. Next time, choose \u{201c}Sign in with a passkey\u{201d}.",
        "security_key_added" => "Your security key is registered. Use it after your password when you sign in.",
        "method_removed" => "The method was removed.",
        _ => return None,
    })
}

async fn overview(ctx: Ctx, Query(q): Query<DoneQuery>) -> Response {
    render_overview(ctx, q.done.as_deref().and_then(done_text), None, StatusCode::OK).await
}

async fn render_overview(ctx: Ctx, ok: Option<&str>, error: Option<&str>, status: StatusCode) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (username, session) = me(&p);
    let app = ctx.app.clone();
    let (user, methods) = match app.methods(&p, username).await {
        Ok(v) => v,
        Err(e) => return ctx.error_page(e),
    };
    let history = match app.signin_history(&p, username, 10).await {
        Ok(h) => h,
        Err(e) => return ctx.error_page(e),
    };
    let active = |k: latchkey_core::MethodKind| methods.iter().any(|m| m.kind == k && m.state == MethodState::Active);
    let has_second = methods
        .iter()
        .any(|m| m.state == MethodState::Active && m.kind.second_factor().is_some());
    let has_recovery = active(latchkey_core::MethodKind::RecoveryCodes);
    let via_tap = session
        .methods
        .iter()
        .any(|m| m == VerifyMethod::TemporaryAccessPass.as_str());
    let via_recovery_code = session.methods.iter().any(|m| m == VerifyMethod::RecoveryCode.as_str());
    let codes_left = match app.recovery_codes_left(&p, username).await {
        Ok(n) => n,
        Err(e) => return ctx.error_page(e),
    };
    let body = html! {
        h1 { "Security info" }
        p.lead { "The ways you sign in to " strong { (user.display_name) } " (" (user.username) "). Keep at least two, so losing one device never locks you out." }
        (notice_ok(ok))
        (notice_error(error))
        @if via_tap && has_second && user.password_hash.is_some() {
            p.notice.ok role="status" {
                "All set. Sign out and sign in again with your password and a second method to check that they work. "
                "An authenticator app's code works once: sign in with the next code it shows, not the one you just typed."
            }
        } @else if via_tap {
            p.notice.info {
                "You signed in with a Temporary Access Pass. Register an authenticator app and set a password now: "
                "the pass stops working at " (when(session.expires_at)) "."
            }
        } @else if via_recovery_code {
            p.notice.info role="status" {
                "You signed in with a recovery code"
                @if let Some(n) = codes_left { " (" (n) " left)" }
                ". If you lost a device, remove it below and register a new authenticator app, passkey or "
                "security key now, then create new recovery codes."
            }
        } @else if !has_second {
            p.notice.error { "You have no second sign-in method. Register an authenticator app now." }
        }
        (super::layout::passkey_origin_notice(&ctx))
        (super::pages_push::sms_only_nudge(&methods))
        section aria-labelledby="methods-h" {
            h2 #methods-h { "Your sign-in methods" }
            div.table-wrap {
                table {
                    caption.visually-hidden { "Registered sign-in methods" }
                    thead { tr {
                        th scope="col" { "Method" } th scope="col" { "Name" } th.opt scope="col" { "Added" }
                        th scope="col" { "Last used" } th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody {
                        tr {
                            td { "Password" }
                            td { @if user.password_hash.is_some() { "Set" } @else { span.muted { "Not set" } } }
                            td.opt { "—" } td { "—" } td {}
                        }
                        @for m in &methods {
                            tr {
                                td { (method_name(m.kind)) " "
                                    @if m.state == MethodState::Pending { (tag("Not confirmed", "warn")) } }
                                td { (m.label)
                                    @if m.kind == latchkey_core::MethodKind::RecoveryCodes {
                                        @if let Some(n) = codes_left {
                                            " " (tag(&format!("{n} unused"), if n > 2 { "ok" } else { "warn" }))
                                        }
                                    }
                                }
                                td.opt { (when(m.registered_at)) }
                                td { @if let Some(t) = m.last_used_at { (when(t)) } @else { span.muted { "Never" } } }
                                td.actions {
                                    @if m.state == MethodState::Pending && m.kind == latchkey_core::MethodKind::Totp {
                                        a href={ "/security-info/totp/" (m.id) } { "Finish setup" } " "
                                    }
                                    @if m.state == MethodState::Pending
                                        && matches!(m.kind, latchkey_core::MethodKind::Sms | latchkey_core::MethodKind::Voice) {
                                        a href={ "/security-info/phone/" (m.id) } { "Finish setup" } " "
                                    }
                                    form.inline method="post" action={ "/security-info/methods/" (m.id) "/delete" }
                                        data-confirm={ "Remove " (method_name(m.kind)) " '" (m.label) "'?" } {
                                        (csrf_field(&ctx))
                                        button.danger.small type="submit" aria-label={ "Remove " (method_name(m.kind)) " " (m.label) } { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.hint { "Removing a method asks you to sign in again first. Your last second method cannot be removed." }
        }
        section aria-labelledby="add-h" {
            h2 #add-h { "Add a method" }
            div.cards {
                form.card method="post" action="/security-info/totp" {
                    (csrf_field(&ctx))
                    h3 { "Authenticator app" }
                    p { "Codes from an app on your phone, such as Microsoft Authenticator or any TOTP app." }
                    label for="totp-label" { "Name (optional)" }
                    input #totp-label type="text" name="label" maxlength="100" placeholder="e.g. Work phone";
                    button.primary type="submit" { "Add authenticator app" }
                }
                (webauthn_card(&ctx))
                (super::pages_push::enroll_card(&ctx))
                (super::pages_push::phone_card(&ctx))
                form.card method="post" action="/security-info/recovery-codes"
                    data-confirm=[has_recovery.then_some("Your current recovery codes will stop working. Continue?")] {
                    (csrf_field(&ctx))
                    h3 { "Recovery codes" }
                    p { "Ten single-use codes to print or store safely, for when you have none of your devices." }
                    button type="submit" { @if has_recovery { "Generate new codes" } @else { "Create recovery codes" } }
                }
            }
        }
        section aria-labelledby="pw-h" {
            h2 #pw-h { @if user.password_hash.is_some() { "Change password" } @else { "Set a password" } }
            (password_form(&ctx))
        }
        section aria-labelledby="hist-h" {
            h2 #hist-h { "Recent sign-ins" }
            p.hint { "If you see a sign-in you don't recognise, call the helpdesk." }
            (signin_table(&history, "Your ten most recent sign-in attempts"))
        }
    };
    ctx.page(status, "Security info", Section::Security, body)
}

fn password_form(ctx: &Ctx) -> Markup {
    html! {
        form.card.wide method="post" action="/security-info/password" {
            (csrf_field(ctx))
            input type="text" name="username" autocomplete="username" hidden value=(ctx.username().unwrap_or(""));
            label for="new-password" { "New password" }
            input #new-password type="password" name="password" autocomplete="new-password" minlength="12" required
                aria-describedby="pw-hint";
            p.hint #pw-hint { "At least 12 characters. A few unrelated words are long and easy to remember." }
            label for="confirm-password" { "Repeat the new password" }
            input #confirm-password type="password" name="confirm" autocomplete="new-password" required;
            button.primary type="submit" { "Save password" }
        }
    }
}

#[derive(Deserialize)]
struct LabelForm {
    label: Option<String>,
}

async fn totp_start(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<LabelForm>) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (username, _) = me(&p);
    match app.enroll_totp(&p, username, f.label, None, None, None).await {
        Ok(e) => Redirect::to(&format!("/security-info/totp/{}", e.method.id)).into_response(),
        Err(ServiceError::ReauthenticationRequired(_)) => reauth(),
        Err(e) => match errors::inline(&e, |e| matches!(e, ServiceError::InvalidRequest(_))) {
            Some(r) => render_overview(ctx, None, Some(&r.message), r.status).await,
            None => ctx.error_page(e),
        },
    }
}

async fn totp_pending(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<String>) -> Response {
    render_pending(&app, ctx, &id, None, StatusCode::OK).await
}

/// The secret part of an `otpauth://` URI, for people who type it in.
fn secret_of(uri: &str) -> String {
    uri.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("secret="))
        .unwrap_or("")
        .to_owned()
}

async fn render_pending(app: &App, ctx: Ctx, id: &str, error: Option<&str>, status: StatusCode) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (username, _) = me(&p);
    let uri = match app.pending_totp_uri(&p, username, id).await {
        Ok(u) => u,
        Err(ServiceError::NotFound(_)) => return Redirect::to(BACK).into_response(),
        Err(ServiceError::ReauthenticationRequired(_)) => return reauth(),
        Err(e) => return ctx.error_page(e),
    };
    let qr = match latchkey_service::qr::svg(&uri) {
        Ok(svg) => format!(
            "data:image/svg+xml;base64,{}",
            data_encoding::BASE64.encode(svg.as_bytes())
        ),
        Err(e) => return ctx.error_page(e),
    };
    let secret = secret_of(&uri);
    let grouped: Vec<String> = secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let body = html! {
        h1 { "Add an authenticator app" }
        ol.steps {
            li { "Open your authenticator app and choose to add an account." }
            li { "Scan this QR code, or type the key below." }
            li { "Enter the 6-digit code the app then shows, to confirm." }
        }
        div.enrol {
            img.qr src=(qr) width="220" height="220" alt="QR code to add Latchkey to your authenticator app";
            div {
                p { "Can't scan? Enter this key:" }
                p { code #totp-secret data-secret=(secret) { (grouped.join(" ")) } }
                p.hint { "Time-based, 6 digits, every 30 seconds." }
            }
        }
        (notice_error(error))
        form.card method="post" action={ "/security-info/totp/" (id) "/confirm" } {
            (csrf_field(&ctx))
            label for="code" { "Code from the app" }
            input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*"
                maxlength="10" required autofocus aria-describedby=[error.map(|_| "form-error")]
                aria-invalid=[error.map(|_| "true")];
            button.primary type="submit" { "Confirm" }
        }
        p { a href=(BACK) { "Cancel" } }
    };
    ctx.page(status, "Add an authenticator app", Section::Security, body)
}

#[derive(Deserialize)]
struct CodeForm {
    code: String,
}

async fn totp_confirm(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(f): Form<CodeForm>,
) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (username, _) = me(&p);
    let code = f.code.trim().replace(' ', "");
    match app.confirm_totp(&p, username, &id, &code).await {
        Ok(_) => Redirect::to("/security-info?done=totp_added").into_response(),
        Err(ServiceError::ReauthenticationRequired(_)) => reauth(),
        Err(ServiceError::InvalidState(_)) => Redirect::to(BACK).into_response(),
        Err(e) => {
            let Some(r) = errors::confirmation(
                &e,
                "That code does not match. Check that your phone's clock is right and enter the current code.",
            ) else {
                return ctx.error_page(e);
            };
            render_pending(&app, ctx, &id, Some(&r.message), r.status).await
        }
    }
}

/// Where a new set of recovery codes waits, sealed to the session, between
/// the POST that made it and the page that shows it: reloading that page
/// shows the same codes again and never makes a new set.
const CODES_COOKIE: &str = "lk_codes";
const CODES_PAGE: &str = "/security-info/recovery-codes";
const CODES_SHOWN_SECS: i64 = 10 * 60;

async fn recovery_codes(State(app): State<Arc<App>>, ctx: Ctx) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (username, session) = me(&p);
    let codes = match app.regenerate_recovery_codes(&p, username, None).await {
        Ok((_, codes)) => codes,
        Err(ServiceError::ReauthenticationRequired(_)) => return reauth(),
        Err(e) => return ctx.error_page(e),
    };
    let sealed = app.seal_for_browser(&codes.join("\n"), &session.id);
    let c = axum_extra::extract::cookie::Cookie::build((CODES_COOKIE, sealed))
        .http_only(true)
        .same_site(axum_extra::extract::cookie::SameSite::Strict)
        .path(CODES_PAGE)
        .secure(ctx.secure)
        .max_age(time::Duration::seconds(CODES_SHOWN_SECS))
        .build();
    (ctx.jar.add(c), Redirect::to(CODES_PAGE)).into_response()
}

async fn show_recovery_codes(State(app): State<Arc<App>>, ctx: Ctx) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (username, session) = me(&p);
    let codes: Vec<String> = match ctx
        .jar
        .get(CODES_COOKIE)
        .and_then(|c| app.open_for_browser(c.value(), &session.id))
    {
        Some(text) => text.lines().map(str::to_owned).collect(),
        // Shown long enough ago (or in another session): never again.
        None => return Redirect::to(BACK).into_response(),
    };
    let text = format!(
        "Latchkey recovery codes for {username}\nEach code works once. Keep them somewhere safe.\n\n{}\n",
        codes.join("\n")
    );
    let download = format!("data:text/plain;charset=utf-8,{}", super::percent_encode(&text));
    let body = html! {
        h1 { "Your recovery codes" }
        p.notice.info role="status" {
            "Save or print these codes now: this page stops showing them in a few minutes. Your earlier codes no longer work."
        }
        ul.codes #recovery-codes {
            @for c in &codes { li { code { (c) } } }
        }
        p {
            a.button.primary href=(download) download="latchkey-recovery-codes.txt" { "Download as text" }
            " "
            button type="button" data-print { "Print" }
        }
        p { a href=(BACK) { "I have saved them — back to security info" } }
    };
    let mut resp = ctx.page(StatusCode::OK, "Recovery codes", Section::Security, body);
    // Not kept by the browser's cache (the back button) nor by a proxy's.
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

#[derive(Deserialize)]
struct PasswordForm {
    password: String,
    confirm: String,
}

async fn password(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<PasswordForm>) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (username, _) = me(&p);
    if f.password != f.confirm {
        return render_overview(ctx, None, Some("The two passwords differ."), StatusCode::BAD_REQUEST).await;
    }
    match app.set_password(&p, username, &f.password, None).await {
        Ok(()) => Redirect::to("/security-info?done=password_set").into_response(),
        Err(ServiceError::ReauthenticationRequired(_)) => reauth(),
        Err(e) => {
            let shown = |e: &ServiceError| matches!(e, ServiceError::WeakPassword(_) | ServiceError::InvalidRequest(_));
            match errors::inline(&e, shown) {
                Some(r) => {
                    let msg = format!("Password not saved. {}", r.message);
                    render_overview(ctx, None, Some(&msg), r.status).await
                }
                None => ctx.error_page(e),
            }
        }
    }
}

async fn remove_method(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (username, _) = me(&p);
    // Self-service never removes the last second factor, whoever you are
    // (the App lets administrators do so for others through the API).
    let methods = match app.methods(&p, username).await {
        Ok((_, m)) => m,
        Err(e) => return ctx.error_page(e),
    };
    let strong = |m: &&latchkey_store::MethodRecord| m.state == MethodState::Active && m.kind.second_factor().is_some();
    let target_strong = methods.iter().filter(strong).any(|m| m.id == id);
    if target_strong && methods.iter().filter(strong).count() <= 1 {
        return render_overview(
            ctx,
            None,
            Some("This is your last second sign-in method. Register another one before removing it."),
            StatusCode::CONFLICT,
        )
        .await;
    }
    match app.delete_method(&p, username, &id, None).await {
        Ok(()) => Redirect::to("/security-info?done=method_removed").into_response(),
        Err(ServiceError::ReauthenticationRequired(_)) => reauth(),
        Err(e) => match errors::inline(&e, |e| matches!(e, ServiceError::Conflict(_))) {
            Some(r) => render_overview(ctx, None, Some(&r.message), r.status).await,
            None => ctx.error_page(e),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_is_read_from_the_uri() {
        assert_eq!(
            super::secret_of("otpauth://totp/Latchkey:al?secret=ABCD&issuer=Latchkey"),
            "ABCD"
        );
        assert_eq!(super::secret_of("otpauth://totp/x?issuer=y"), "");
    }
}

// ---- passkeys and security keys ---------------------------------------------

fn webauthn_card(ctx: &Ctx) -> Markup {
    html! {
        form.card method="post" action="/security-info/webauthn/finish" data-webauthn-register
            data-start-url="/security-info/webauthn/start" {
            (csrf_field(ctx))
            input type="hidden" name="ceremony_id" value="";
            input type="hidden" name="credential" value="";
            h3 { "Passkey or security key" }
            fieldset {
                legend { "Which one?" }
                label.choice {
                    input type="radio" name="kind" value="passkey" checked;
                    " Passkey " span.muted { "— signs you in without a password, with your fingerprint, face or PIN" }
                }
                label.choice {
                    input type="radio" name="kind" value="security_key";
                    " Security key " span.muted { "— a USB or NFC key you touch after your password" }
                }
            }
            label for="webauthn-label" { "Label (optional)" }
            input #webauthn-label type="text" name="label" maxlength="100" placeholder="e.g. Laptop, YubiKey";
            p.hint data-webauthn-status role="status" {}
            noscript { p.hint { "Registering a passkey needs JavaScript in this browser." } }
            button.primary type="submit" { "Add passkey or security key" }
        }
    }
}

#[derive(Deserialize)]
struct WebauthnStartForm {
    kind: String,
    label: Option<String>,
}

/// Step one, called by passkeys.js: the options for `navigator.credentials.create`.
async fn webauthn_start(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<WebauthnStartForm>) -> Response {
    let Some(p) = ctx.principal.clone() else {
        return super::json_refusal(
            ServiceError::Unauthenticated,
            "Your session ended. Sign in again.",
            Some(signin_url(BACK, false)),
        );
    };
    let (username, _) = me(&p);
    let kind = match latchkey_core::webauthn::CredentialKind::parse(&f.kind) {
        Ok(k) => k,
        Err(e) => return super::json_refusal(e.into(), "Choose a passkey or a security key.", None),
    };
    let label = f.label.filter(|l| !l.trim().is_empty());
    match app.webauthn_register_start(&p, username, kind, label).await {
        Ok(s) => axum::Json(serde_json::json!({
            "ceremony_id": s.ceremony_id,
            "publicKey": crate::api::webauthn::public_key_of(&s.options),
        }))
        .into_response(),
        Err(e @ ServiceError::ReauthenticationRequired(_)) => super::json_refusal(
            e,
            "Confirm it's you first: sign in again, then add the passkey.",
            Some(signin_url(BACK, true)),
        ),
        Err(e) => {
            let message = errors::refusal(&e).message;
            super::json_refusal(e, &message, None)
        }
    }
}

#[derive(Deserialize)]
struct WebauthnFinishForm {
    ceremony_id: String,
    credential: String,
}

/// Step two, the form itself: the authenticator's answer.
async fn webauthn_finish(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<WebauthnFinishForm>) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (username, _) = me(&p);
    let Ok(credential) = serde_json::from_str::<serde_json::Value>(&f.credential) else {
        return render_overview(
            ctx,
            None,
            Some("The browser sent no answer from the authenticator. Try again."),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    match app
        .webauthn_register_finish(&p, username, &f.ceremony_id, credential)
        .await
    {
        Ok(c) => Redirect::to(&format!("/security-info?done={}_added", c.kind)).into_response(),
        Err(ServiceError::ReauthenticationRequired(_)) => reauth(),
        Err(e) => {
            let shown = |e: &ServiceError| {
                matches!(
                    e,
                    ServiceError::InvalidRequest(_)
                        | ServiceError::Unprocessable(_)
                        | ServiceError::WebauthnRejected(_)
                        | ServiceError::NotFound(_)
                        | ServiceError::InvalidState(_)
                        | ServiceError::Conflict(_)
                )
            };
            match errors::inline(&e, shown) {
                Some(r) => {
                    let msg = format!("The passkey or security key was not registered. {}", r.message);
                    render_overview(ctx, None, Some(&msg), r.status).await
                }
                None => ctx.error_page(e),
            }
        }
    }
}
