//! Recovery runbooks in the helpdesk console: a user's cases, opening one,
//! and driving it step by step (verify identity → issue a Temporary Access
//! Pass → deliver it → confirm the new registration → remove the old
//! methods → confirm a normal sign-in → close). Only the next step has a
//! form; the App checks each step's evidence and its refusals are shown on
//! the case page in words.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use latchkey_core::device::DeviceState;
use latchkey_core::helpdesk::{CaseState, CaseStep, Scenario, StepOutcome};
use latchkey_core::tap::{IdentityVerification, VerificationMethod};
use latchkey_core::{MethodState, Role};
use latchkey_store::{DeviceRecord, MethodRecord, UserRecord};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::errors;
use super::layout::{csrf_field, method_name, notice_error, notice_ok, tag, Section};
use super::{when, Ctx};
use latchkey_service::app::{App, IssuedTap};
use latchkey_service::recovery::{CaseView, StepInput};
use latchkey_service::ServiceError;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/helpdesk/users/{username}/cases", get(list).post(open))
        .route("/helpdesk/users/{username}/devices/{id}/lost", post(device_lost))
        .route("/helpdesk/cases/{id}", get(view))
        .route("/helpdesk/cases/{id}/step", post(step))
        .route("/helpdesk/cases/{id}/skip", post(skip))
        .route("/helpdesk/cases/{id}/cancel", post(cancel))
}

const SCENARIOS: [Scenario; 3] = [Scenario::LostPhone, Scenario::PlannedPhoneChange, Scenario::NewEmployee];

pub fn scenario_title(s: Scenario) -> &'static str {
    match s {
        Scenario::LostPhone => "Lost or broken phone",
        Scenario::PlannedPhoneChange => "Planned phone change",
        Scenario::NewEmployee => "New employee, first device",
    }
}

const VERIFICATIONS: [(&str, &str); 4] = [
    ("callback", "Called back the number on file"),
    ("manager_attestation", "Manager attested"),
    ("in_person_id", "Photo ID checked in person"),
    ("video_call", "Video call with ID"),
];

/// Email is deliberately absent: the mailbox is often what an attacker has.
const CHANNELS: [(&str, &str); 4] = [
    ("phone_call", "Read aloud on a call to the number on file"),
    ("in_person", "Handed over in person"),
    ("manager", "Given to the user's manager"),
    ("sms_to_number_on_file", "Text message to the number on file"),
];

fn label_of<'a>(table: &'a [(&str, &'a str)], key: &str) -> &'a str {
    table.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).unwrap_or("—")
}

fn case_url(id: &str) -> String {
    format!("/helpdesk/cases/{id}")
}

fn state_tag(c: &CaseView) -> Markup {
    match &c.case.state {
        CaseState::Open { .. } if c.overdue => tag("Open, overdue", "bad"),
        CaseState::Open { .. } => tag("Open", "warn"),
        CaseState::Closed { .. } => tag("Closed", "ok"),
        CaseState::Cancelled { .. } => tag("Cancelled", "bad"),
    }
}

/// An App refusal as the page shows it: its status and its words.
fn refusal(e: &ServiceError) -> (StatusCode, String) {
    let r = errors::refusal(e);
    (r.status, r.message)
}

// ---- the user's cases ---------------------------------------------------------

#[derive(Deserialize, Default)]
struct ListQuery {
    runbook: Option<String>,
}

async fn list(ctx: Ctx, Path(username): Path<String>, Query(q): Query<ListQuery>) -> Response {
    render_list(ctx, &username, q.runbook.as_deref(), None).await
}

async fn render_list(ctx: Ctx, username: &str, runbook: Option<&str>, error: Option<(StatusCode, String)>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Helpdesk)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let app = ctx.app.clone();
    let (user, _) = match app.methods(&p, username).await {
        Ok(v) => v,
        Err(e) => return ctx.error_page(e),
    };
    let cases = match app.cases(&p, Some(username), false).await {
        Ok(c) => c,
        Err(e) => return ctx.error_page(e),
    };
    let chosen = runbook.and_then(|r| Scenario::parse(r).ok());
    let (status, msg) = match error {
        Some((s, m)) => (s, Some(m)),
        None => (StatusCode::OK, None),
    };
    let u = &user.username;
    let body = html! {
        p.crumbs { a href="/helpdesk" { "Helpdesk" } " › " a href={ "/helpdesk/users/" (u) } { (u) } " › Recovery cases" }
        h1 { "Recovery cases for " (user.display_name) }
        (notice_error(msg.as_deref()))
        @if cases.is_empty() {
            p.muted { "No recovery cases yet." }
        } @else {
            div.table-wrap { table {
                caption { "Cases, newest first" }
                thead { tr {
                    th scope="col" { "Runbook" } th scope="col" { "Opened" } th scope="col" { "State" }
                    th scope="col" { "Next step" } th scope="col" { "Due" }
                } }
                tbody { @for c in &cases { tr {
                    td { a href=(case_url(&c.id)) { (scenario_title(c.scenario)) } }
                    td { (when(c.opened_at)) br; span.muted { "by " (c.opened_by) } }
                    td { (state_tag(c)) }
                    td { @if let Some(n) = c.next_step { (n.title()) } @else { span.muted { "—" } } }
                    td { @if c.next_step.is_some() { (when(c.deadline)) @if c.overdue { " " (tag("Overdue", "bad")) } } @else { span.muted { "—" } } }
                } } }
            } }
        }
        section.card aria-labelledby="open-h" {
            h2 #open-h { "Open a case" }
            p { "Verify who is calling before anything else: the first step records how you did." }
            form method="post" action={ "/helpdesk/users/" (u) "/cases" } {
                (csrf_field(&ctx))
                label for="scenario" { "Runbook" }
                select #scenario name="scenario" required {
                    @for s in SCENARIOS {
                        option value=(s.as_str()) selected[chosen == Some(s)] { (scenario_title(s)) }
                    }
                }
                p { button.primary type="submit" { "Open case" } }
            }
        }
    };
    ctx.page(status, "Recovery cases", Section::Helpdesk, body)
}

#[derive(Deserialize)]
struct OpenForm {
    #[serde(default)]
    scenario: String,
}

async fn open(ctx: Ctx, Path(username): Path<String>, Form(f): Form<OpenForm>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Helpdesk)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match ctx.app.clone().open_case(&p, &username, &f.scenario).await {
        Ok(c) => Redirect::to(&case_url(&c.id)).into_response(),
        Err(e) if errors::needs_own_page(&e) => ctx.error_page(e),
        Err(e) => render_list(ctx, &username, Some(&f.scenario), Some(refusal(&e))).await,
    }
}

// ---- one case -----------------------------------------------------------------

#[derive(Deserialize, Default)]
struct ViewQuery {
    done: Option<String>,
}

async fn view(ctx: Ctx, Path(id): Path<String>, Query(q): Query<ViewQuery>) -> Response {
    let ok = match q.done.as_deref() {
        Some("skip") => Some("The step was skipped.".to_owned()),
        Some("cancel") => {
            Some("The case was cancelled; a pass issued for it that could still be used was revoked.".to_owned())
        }
        Some(s) => CaseStep::parse(s).ok().map(|s| format!("Recorded: {}.", s.title())),
        None => None,
    };
    render_case(
        ctx,
        &id,
        Outcome {
            ok,
            ..Default::default()
        },
    )
    .await
}

/// What the last POST left to show on the case page.
#[derive(Default)]
struct Outcome {
    ok: Option<String>,
    error: Option<(StatusCode, String)>,
    tap: Option<IssuedTap>,
}

async fn render_case(ctx: Ctx, id: &str, out: Outcome) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Helpdesk)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let app = ctx.app.clone();
    let c = match app.case(&p, id).await {
        Ok(c) => c,
        Err(e) => return ctx.error_page(e),
    };
    let (user, methods) = match app.methods(&p, &c.username).await {
        Ok(v) => v,
        Err(e) => return ctx.error_page(e),
    };
    let devices = match app.devices(&p, &c.username).await {
        Ok(d) => d,
        Err(e) => return ctx.error_page(e),
    };
    let status = out.error.as_ref().map(|(s, _)| *s).unwrap_or(StatusCode::OK);
    let u = &c.username;
    let title = format!("{} · {}", scenario_title(c.scenario), u);
    let body = html! {
        p.crumbs {
            a href="/helpdesk" { "Helpdesk" } " › " a href={ "/helpdesk/users/" (u) } { (u) } " › "
            a href={ "/helpdesk/users/" (u) "/cases" } { "Recovery cases" } " › Case"
        }
        h1 { (scenario_title(c.scenario)) " " span.muted { "(" (user.display_name) ")" } }
        @if let Some(t) = &out.tap { (pass_once(t)) }
        (notice_ok(out.ok.as_deref()))
        (notice_error(out.error.as_ref().map(|(_, m)| m.as_str())))
        dl.facts {
            dt { "State" } dd #case-state { (state_tag(&c)) }
            dt { "Opened" } dd { (when(c.opened_at)) " by " (c.opened_by) }
            @match &c.case.state {
                CaseState::Open { .. } => { dt { "Due" } dd { (when(c.deadline)) } }
                CaseState::Closed { at } => { dt { "Closed" } dd { (when(*at)) } }
                CaseState::Cancelled { at, reason } => { dt { "Cancelled" } dd { (when(*at)) ": " (reason) } }
            }
        }
        section aria-labelledby="steps-h" {
            h2 #steps-h { "Steps" }
            ol.case-steps {
                @for r in &c.case.steps {
                    li data-step=(r.step.as_str()) {
                        h3 { (r.step.title()) " " (step_tag(&c, r.step, r.outcome.as_ref())) }
                        @match &r.outcome {
                            Some(StepOutcome::Done { actor, at, evidence }) => {
                                p.evidence { (evidence_summary(r.step, evidence, &methods)) br; span.muted { (when(*at)) " · " (actor) } }
                            }
                            Some(StepOutcome::Skipped { actor, at, reason }) => {
                                p.evidence { "Reason: " (reason) br; span.muted { (when(*at)) " · " (actor) } }
                            }
                            None => {
                                @if c.next_step == Some(r.step) {
                                    (step_form(&ctx, &c, r.step, &user, &methods, &devices))
                                }
                            }
                        }
                    }
                }
            }
        }
        @if c.next_step.is_some() {
            section.card aria-labelledby="cancel-h" {
                h2 #cancel-h { "Cancel the case" }
                form method="post" action={ (case_url(&c.id)) "/cancel" } {
                    (csrf_field(&ctx))
                    label for="cancel-reason" { "Reason for cancelling" }
                    input #cancel-reason type="text" name="reason" required;
                    button.danger type="submit" { "Cancel case" }
                }
            }
        }
    };
    let mut resp = ctx.page(status, &title, Section::Helpdesk, body);
    if out.tap.is_some() {
        // The pass is on this page once; no cache may keep it.
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

fn step_tag(c: &CaseView, step: CaseStep, outcome: Option<&StepOutcome>) -> Markup {
    match outcome {
        Some(StepOutcome::Done { .. }) => tag("Done", "ok"),
        Some(StepOutcome::Skipped { .. }) => tag("Skipped", "warn"),
        None if c.next_step == Some(step) => tag("Next", "warn"),
        None => html! { span.tag { "Pending" } },
    }
}

fn pass_once(t: &IssuedTap) -> Markup {
    html! {
        div.notice.info role="status" #issued-pass {
            p { strong { "Temporary Access Pass: " } code.secret #tap-pass { (t.pass) } }
            p { "Shown only this once. Read it to the user on a call to the number on file, or hand it over in person. "
                strong { "Never send it by email or chat." } }
            p { "Valid until " (when(t.expires_at)) "; "
                @if t.single_use { "single use." } @else { "usable more than once until then." } }
        }
    }
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn method_desc(id: &str, methods: &[MethodRecord]) -> String {
    match methods.iter().find(|m| m.id == id) {
        Some(m) if m.label.is_empty() => method_name(m.kind).to_owned(),
        Some(m) => format!("{} “{}”", method_name(m.kind), m.label),
        None => "a method since removed".to_owned(),
    }
}

fn id_list(v: &Value, k: &str) -> Vec<String> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// A sign-in log's method name in words.
fn signin_method(m: &str) -> String {
    match m {
        "totp" => "authenticator app".into(),
        "webauthn" => "passkey or security key".into(),
        "temporary_access_pass" => "Temporary Access Pass".into(),
        other => other.replace('_', " "),
    }
}

fn evidence_summary(step: CaseStep, ev: &Value, methods: &[MethodRecord]) -> Markup {
    match step {
        CaseStep::VerifyIdentity => html! {
            (label_of(&VERIFICATIONS, str_field(ev, "method").unwrap_or(""))) ": " (str_field(ev, "note").unwrap_or(""))
        },
        CaseStep::IssueTap => html! {
            @if let Some(r) = str_field(ev, "tap_request_id") {
                "Approved pass request " code { (r) } @if let Some(a) = str_field(ev, "approved_by") { ", approved by " (a) } "."
            } @else {
                "Pass issued" @if let Some(x) = ev.get("expires_at").and_then(Value::as_i64) { ", valid until " (when(x)) }
                @if ev.get("single_use").and_then(Value::as_bool) == Some(true) { ", single use" } "."
            }
        },
        CaseStep::DeliverTap => html! {
            (label_of(&CHANNELS, str_field(ev, "channel").unwrap_or("")))
            @if let Some(n) = str_field(ev, "note") { ": " (n) }
        },
        CaseStep::ConfirmRegistration => {
            let new = id_list(ev, "new_methods");
            html! { "New: " (new.iter().map(|m| method_desc(m, methods)).collect::<Vec<_>>().join(", ")) "." }
        }
        CaseStep::RemoveOldMethods => {
            let removed = id_list(ev, "removed_methods").len();
            let lost = id_list(ev, "lost_devices").len();
            html! { (removed) " method(s) removed, " (lost) " device(s) marked lost." }
        }
        CaseStep::ConfirmSignIn => html! {
            "Signed in "
            @if let Some(t) = ev.get("signin_at").and_then(Value::as_i64) { (when(t)) }
            @let ms = id_list(ev, "methods");
            @if !ms.is_empty() { " with " (ms.iter().map(|m| signin_method(m)).collect::<Vec<_>>().join(" + ")) } "."
        },
        CaseStep::Close => html! {
            @if let Some(n) = str_field(ev, "note") { "Note: " (n) } @else { "Closed." }
        },
    }
}

fn step_form(
    ctx: &Ctx,
    c: &CaseView,
    step: CaseStep,
    user: &UserRecord,
    methods: &[MethodRecord],
    devices: &[DeviceRecord],
) -> Markup {
    let tap = ctx.app.config.tap;
    let action = format!("{}/step", case_url(&c.id));
    let skippable = !matches!(step, CaseStep::VerifyIdentity | CaseStep::Close);
    html! {
        div.card.wide {
        form method="post" action=(action) {
            (csrf_field(ctx))
            input type="hidden" name="step" value=(step.as_str());
            @match step {
                CaseStep::VerifyIdentity => {
                    p { "Never trust the number or details the caller gives you: call back the number on file, or ask the manager." }
                    label for="v-method" { "How did you verify the caller?" }
                    select #v-method name="method" required {
                        @for (k, v) in VERIFICATIONS { option value=(k) { (v) } }
                    }
                    label for="v-note" { "Note (who checked what)" }
                    input #v-note type="text" name="note" required;
                    button.primary type="submit" { "Record verification" }
                }
                CaseStep::IssueTap => {
                    p { "The pass lets the user sign in once and register a new method. You will see it only once." }
                    label for="t-minutes" { "Lifetime in minutes (" (tap.min_minutes) "–" (tap.max_for(Some(c.scenario))) ", this runbook's bound)" }
                    input #t-minutes type="text" inputmode="numeric" pattern="[0-9]+" name="lifetime_minutes"
                        value=(tap.default_minutes.min(tap.max_for(Some(c.scenario)))) required;
                    @if user.privileged() {
                        label for="t-request" { "Approved pass request ID (privileged user)" }
                        input #t-request type="text" name="tap_request_id";
                    }
                    button.primary type="submit" { "Issue pass" }
                }
                CaseStep::DeliverTap => {
                    p { "A pass is never sent by email: the mailbox is often what an attacker already has." }
                    label for="d-channel" { "How was the pass delivered?" }
                    select #d-channel name="channel" required {
                        @for (k, v) in CHANNELS { option value=(k) { (v) } }
                    }
                    label for="d-note" { "Note (optional)" }
                    input #d-note type="text" name="note";
                    button.primary type="submit" { "Record delivery" }
                }
                CaseStep::ConfirmRegistration => {
                    p { "Ask the user to sign in with the pass and register a new method on their security info page, then confirm." }
                    button.primary type="submit" { "Confirm new registration" }
                }
                CaseStep::RemoveOldMethods => {
                    @let old: Vec<&MethodRecord> = methods.iter()
                        .filter(|m| m.kind.second_factor().is_some()).collect();
                    @let live: Vec<&DeviceRecord> = devices.iter().filter(|d| d.state == DeviceState::Active.as_str()).collect();
                    fieldset {
                        legend { "Methods to remove" }
                        @if old.is_empty() { p.muted { "No second-factor methods." } }
                        @for m in &old {
                            div.check {
                                input type="checkbox" id={ "m-" (m.id) } name={ "method:" (m.id) } value="on";
                                label for={ "m-" (m.id) } { (method_desc(&m.id, methods))
                                    @if c.case.methods_at_open.contains(&m.id) { " (registered before the case)" }
                                    @else { " (new)" }
                                    @if m.state != MethodState::Active { " (not confirmed)" } }
                            }
                        }
                    }
                    fieldset {
                        legend { "Devices to mark lost (removes their methods and ends their sessions)" }
                        @if live.is_empty() { p.muted { "No devices on record." } }
                        @for d in &live {
                            div.check {
                                input type="checkbox" id={ "d-" (d.id) } name={ "device:" (d.id) } value="on";
                                label for={ "d-" (d.id) } { (d.name) " (" (d.platform) ")" }
                            }
                        }
                    }
                    button.primary type="submit" { "Remove selected" }
                }
                CaseStep::ConfirmSignIn => {
                    p { "Ask the user to sign out and sign in again with their new method, without the pass, then confirm." }
                    button.primary type="submit" { "Confirm normal sign-in" }
                }
                CaseStep::Close => {
                    label for="c-note" { "Closing note (optional)" }
                    input #c-note type="text" name="note";
                    button.primary type="submit" { "Close case" }
                }
            }
        }
        @if skippable {
            details {
                summary { "Skip this step" }
                form method="post" action={ (case_url(&c.id)) "/skip" } {
                    (csrf_field(ctx))
                    input type="hidden" name="step" value=(step.as_str());
                    label for="skip-reason" { "Why skip it?" }
                    input #skip-reason type="text" name="reason" required;
                    button type="submit" { "Skip step" }
                }
            }
        }
        }
    }
}

/// The step form's fields, read as pairs so the checkbox names can carry ids.
fn step_input(fields: &[(String, String)]) -> Result<(String, StepInput), ServiceError> {
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let prefixed = |p: &str| -> Vec<String> {
        fields
            .iter()
            .filter_map(|(n, _)| n.strip_prefix(p).map(str::to_owned))
            .collect()
    };
    let step = get("step").unwrap_or_default();
    let mut input = StepInput {
        note: get("note"),
        channel: get("channel"),
        tap_request_id: get("tap_request_id"),
        approval_id: get("approval_id"),
        remove_method_ids: prefixed("method:"),
        lost_device_ids: prefixed("device:"),
        ..Default::default()
    };
    if let Some(m) = get("lifetime_minutes") {
        input.lifetime_minutes = Some(
            m.parse()
                .map_err(|_| ServiceError::InvalidRequest("the lifetime must be a whole number of minutes".into()))?,
        );
    }
    if step == CaseStep::VerifyIdentity.as_str() {
        let method = get("method").unwrap_or_default();
        let method: VerificationMethod = serde_json::from_value(Value::String(method.clone()))
            .ok()
            .filter(|m| *m != VerificationMethod::Bootstrap)
            .ok_or_else(|| ServiceError::InvalidRequest(format!("unknown verification method '{method}'")))?;
        input.verification = Some(IdentityVerification {
            method,
            note: input.note.take().unwrap_or_default(),
        });
    }
    Ok((step, input))
}

async fn step(ctx: Ctx, Path(id): Path<String>, Form(fields): Form<Vec<(String, String)>>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Helpdesk)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let result = match step_input(&fields) {
        Ok((step, input)) => ctx
            .app
            .clone()
            .case_step(&p, &id, &step, input)
            .await
            .map(|r| (step, r)),
        Err(e) => Err(e),
    };
    match result {
        Ok((_, r)) if r.tap.is_some() => {
            let ok = Some(format!("Recorded: {}.", CaseStep::IssueTap.title()));
            render_case(
                ctx,
                &id,
                Outcome {
                    ok,
                    tap: r.tap,
                    error: None,
                },
            )
            .await
        }
        Ok((step, _)) => Redirect::to(&format!("{}?done={}", case_url(&id), step)).into_response(),
        Err(e) => after_refusal(ctx, &id, e).await,
    }
}

async fn after_refusal(ctx: Ctx, id: &str, e: ServiceError) -> Response {
    if errors::needs_own_page(&e) || matches!(e, ServiceError::NotFound(ref w) if w == "case") {
        return ctx.error_page(e);
    }
    render_case(
        ctx,
        id,
        Outcome {
            error: Some(refusal(&e)),
            ..Default::default()
        },
    )
    .await
}

#[derive(Deserialize)]
struct SkipForm {
    #[serde(default)]
    step: String,
    #[serde(default)]
    reason: String,
}

async fn skip(ctx: Ctx, Path(id): Path<String>, Form(f): Form<SkipForm>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Helpdesk)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match ctx.app.clone().case_skip(&p, &id, &f.step, &f.reason).await {
        Ok(_) => Redirect::to(&format!("{}?done=skip", case_url(&id))).into_response(),
        Err(e) => after_refusal(ctx, &id, e).await,
    }
}

#[derive(Deserialize)]
struct CancelForm {
    #[serde(default)]
    reason: String,
}

async fn cancel(ctx: Ctx, Path(id): Path<String>, Form(f): Form<CancelForm>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Helpdesk)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match ctx.app.clone().case_cancel(&p, &id, &f.reason).await {
        Ok(_) => Redirect::to(&format!("{}?done=cancel", case_url(&id))).into_response(),
        Err(e) => after_refusal(ctx, &id, e).await,
    }
}

// ---- devices (from the helpdesk user view) -------------------------------------

async fn device_lost(State(app): State<Arc<App>>, ctx: Ctx, Path((username, id)): Path<(String, String)>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Helpdesk)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    // The device must be this user's: the form came from their page.
    match app.devices(&p, &username).await {
        Ok(ds) if ds.iter().any(|d| d.id == id) => {}
        Ok(_) => return ctx.error_page(ServiceError::NotFound("device".into())),
        Err(e) => return ctx.error_page(e),
    }
    match app.end_device(&p, &id, DeviceState::Lost, None).await {
        Ok(_) => Redirect::to(&format!("/helpdesk/users/{username}?done=lost")).into_response(),
        Err(e) => ctx.error_page(e),
    }
}
