//! The admin console: users (with their groups and roles), API tokens, and
//! the audit log with the hash chain's status.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use latchkey_core::{Role, UserState};
use maud::{html, Markup};
use serde::Deserialize;

use super::errors;
use super::layout::{csrf_field, notice_error, notice_ok, role_help, role_name, tag, Section};
use super::{when, Ctx};
use latchkey_service::app::{App, API_SCOPES, API_SCOPE_ADMIN};
use latchkey_service::ServiceError;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/users") }))
        .route("/admin/users", get(users).post(create_user))
        .route("/admin/users/roles", post(set_roles))
        .route("/admin/tokens", get(tokens).post(create_token))
        .route("/admin/tokens/{id}/revoke", post(revoke_token))
        .route("/admin/audit", get(audit))
        .route("/admin/requests", get(requests))
        .route("/admin/requests/{id}/approve", post(approve_request))
        .route("/admin/backup", get(backup_page).post(create_backup))
}

fn admin_tabs(current: &str) -> Markup {
    let tab = |href: &str, label: &str| {
        html! {
            @if href == current { a href=(href) aria-current="page" { (label) } } @else { a href=(href) { (label) } }
        }
    };
    html! {
        nav.tabs aria-label="Admin" {
            (tab("/admin/users", "Users, groups and roles"))
            (tab("/admin/tokens", "API tokens"))
            (tab("/admin/requests", "Change requests"))
            (tab("/admin/audit", "Audit log"))
            (tab("/admin/reports", "Evidence reports"))
            (tab("/admin/alerts", "Alerts"))
            (tab("/admin/backup", "Backup"))
        }
    }
}

// ---- users -----------------------------------------------------------------

#[derive(Deserialize, Default)]
struct CreatedQuery {
    created: Option<String>,
    roles_changed: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct NewUserForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    display_name: String,
    department: Option<String>,
    groups: Option<String>,
    // Checkbox values; serde_html_form-style repeats are not supported by
    // axum's Form, so each role is its own field.
    role_admin: Option<String>,
    role_helpdesk: Option<String>,
    role_security_admin: Option<String>,
    role_auditor: Option<String>,
}

/// The roles whose checkbox (admin, helpdesk, security admin, auditor) is ticked.
fn checked_roles(boxes: [&Option<String>; 4]) -> Vec<String> {
    boxes
        .into_iter()
        .zip([Role::Admin, Role::Helpdesk, Role::SecurityAdmin, Role::Auditor])
        .filter(|(v, _)| v.is_some())
        .map(|(_, r)| r.as_str().to_owned())
        .collect()
}

/// Replace a user's roles. Granting one is a change request: the first
/// submission records it, the second (naming the approved request) applies it.
#[derive(Deserialize, Default)]
struct RolesForm {
    #[serde(default)]
    username: String,
    approval: Option<String>,
    role_admin: Option<String>,
    role_helpdesk: Option<String>,
    role_security_admin: Option<String>,
    role_auditor: Option<String>,
}

impl NewUserForm {
    fn roles(&self) -> Vec<String> {
        checked_roles([
            &self.role_admin,
            &self.role_helpdesk,
            &self.role_security_admin,
            &self.role_auditor,
        ])
    }
    fn has(&self, r: Role) -> bool {
        self.roles().iter().any(|x| x == r.as_str())
    }
    fn groups(&self) -> Vec<String> {
        self.groups
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .collect()
    }
}

async fn users(ctx: Ctx, Query(q): Query<CreatedQuery>) -> Response {
    let ok = match (q.created, q.roles_changed) {
        (Some(u), _) => Some(format!(
            "User '{u}' was created. Issue them a Temporary Access Pass so they can register their methods."
        )),
        (None, Some(u)) => Some(format!("The roles of '{u}' were changed.")),
        (None, None) => None,
    };
    render_users(ctx, ok.as_deref(), None, NewUserForm::default(), StatusCode::OK).await
}

async fn render_users(
    ctx: Ctx,
    ok: Option<&str>,
    error: Option<&str>,
    form: NewUserForm,
    status: StatusCode,
) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Admin)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = match ctx.app.list_users(&p).await {
        Ok(u) => u,
        Err(e) => return ctx.error_page(e),
    };
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut roles: BTreeMap<Role, Vec<&str>> = BTreeMap::new();
    for u in &list {
        for g in &u.groups {
            groups.entry(g).or_default().push(&u.username);
        }
        for r in &u.roles {
            roles.entry(*r).or_default().push(&u.username);
        }
    }
    let body = html! {
        h1 { "Admin" }
        (admin_tabs("/admin/users"))
        (notice_ok(ok))
        section aria-labelledby="u-h" {
            h2 #u-h { "Users" }
            div.table-wrap { table {
                caption.visually-hidden { "All users" }
                thead { tr {
                    th scope="col" { "Username" } th scope="col" { "Name" } th scope="col" { "Department" }
                    th scope="col" { "Groups" } th scope="col" { "Roles" } th scope="col" { "State" }
                } }
                tbody { @for u in &list { tr {
                    td { a href={ "/helpdesk/users/" (u.username) } { (u.username) } }
                    td { (u.display_name) }
                    td { (u.department.as_deref().unwrap_or("—")) }
                    td { (u.groups.join(", ")) }
                    td { @for r in &u.roles { (tag(role_name(*r), "warn")) " " } }
                    td { @if u.state == UserState::Active { (tag("Active", "ok")) } @else { (tag("Disabled", "bad")) } }
                } } }
            } }
        }
        section aria-labelledby="c-h" {
            h2 #c-h { "Create a user" }
            (notice_error(error))
            form.card.wide.grid method="post" action="/admin/users" {
                (csrf_field(&ctx))
                div {
                    label for="nu-username" { "Username" }
                    input #nu-username type="text" name="username" required autocomplete="off" autocapitalize="none"
                        spellcheck="false" pattern="[a-z0-9][a-z0-9._\\-]{0,63}" value=(form.username)
                        aria-describedby="nu-username-hint";
                    p.hint #nu-username-hint { "Lower-case letters, digits, '.', '_' or '-'." }
                }
                div {
                    label for="nu-display" { "Display name" }
                    input #nu-display type="text" name="display_name" required maxlength="200" autocomplete="off" value=(form.display_name);
                }
                div {
                    label for="nu-dept" { "Department (optional)" }
                    input #nu-dept type="text" name="department" autocomplete="off" value=(form.department.clone().unwrap_or_default());
                }
                div {
                    label for="nu-groups" { "Groups (optional, comma-separated)" }
                    input #nu-groups type="text" name="groups" autocomplete="off" value=(form.groups.clone().unwrap_or_default());
                }
                fieldset.full {
                    legend { "Roles" }
                    @for (name, r) in [("role_admin", Role::Admin), ("role_helpdesk", Role::Helpdesk), ("role_security_admin", Role::SecurityAdmin), ("role_auditor", Role::Auditor)] {
                        div.check {
                            input #(name) type="checkbox" name=(name) value="1" checked[form.has(r)] aria-describedby={ (name) "-help" };
                            label for=(name) { (role_name(r)) }
                            span.muted #{ (name) "-help" } { "— " (role_help(r)) }
                        }
                    }
                }
                div.full { button.primary type="submit" { "Create user" } }
            }
        }
        section aria-labelledby="g-h" {
            h2 #g-h { "Groups" }
            @if groups.is_empty() { p.muted { "No groups yet. Groups are set when a user is created." } }
            @else { dl.facts { @for (g, members) in &groups { dt { (g) } dd { (members.join(", ")) } } } }
        }
        section aria-labelledby="r-h" {
            h2 #r-h { "Roles" }
            dl.facts { @for r in Role::ALL {
                dt { (role_name(r)) }
                dd { (role_help(r)) br; span.muted { @if let Some(m) = roles.get(&r) { (m.join(", ")) } @else { "Nobody" } } }
            } }
            form.card.wide.grid method="post" action="/admin/users/roles" {
                (csrf_field(&ctx))
                h3.full { "Change a user's roles" }
                p.hint.full { "Removing a role applies at once. Granting one waits for a second administrator: submit once to ask, and again with the request id once someone else approved it under Change requests." }
                div {
                    label for="ro-username" { "Username" }
                    input #ro-username type="text" name="username" required autocomplete="off" autocapitalize="none" spellcheck="false";
                }
                div {
                    label for="ro-approval" { "Approved request id (when granting)" }
                    input #ro-approval type="text" name="approval" autocomplete="off" spellcheck="false";
                }
                fieldset.full {
                    legend { "Roles after the change" }
                    @for (name, r) in [("role_admin", Role::Admin), ("role_helpdesk", Role::Helpdesk), ("role_security_admin", Role::SecurityAdmin), ("role_auditor", Role::Auditor)] {
                        div.check {
                            input #{ "ro-" (name) } type="checkbox" name=(name) value="1";
                            label for={ "ro-" (name) } { (role_name(r)) }
                        }
                    }
                }
                div.full { button.primary type="submit" { "Change roles" } }
            }
        }
    };
    ctx.page(status, "Admin · Users", Section::Admin, body)
}

async fn create_user(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<NewUserForm>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Admin)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let username = f.username.trim().to_lowercase();
    match app
        .create_user(
            &p,
            &username,
            &f.display_name,
            f.department.clone(),
            f.groups(),
            f.roles(),
        )
        .await
    {
        Ok(u) => Redirect::to(&format!("/admin/users?created={}", u.username)).into_response(),
        Err(e) => {
            let shown = |e: &ServiceError| matches!(e, ServiceError::InvalidRequest(_) | ServiceError::Conflict(_));
            let Some(r) = errors::inline(&e, shown) else {
                return ctx.error_page(e);
            };
            let r = match e {
                ServiceError::Conflict(_) => r.say(format!("A user named '{username}' already exists.")),
                _ => r,
            };
            render_users(ctx, None, Some(&r.message), f, r.status).await
        }
    }
}

async fn set_roles(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<RolesForm>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Admin)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let username = f.username.trim().to_lowercase();
    let change = latchkey_service::users::UserChange {
        roles: Some(checked_roles([
            &f.role_admin,
            &f.role_helpdesk,
            &f.role_security_admin,
            &f.role_auditor,
        ])),
        approval: f.approval.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()),
        ..Default::default()
    };
    match app.update_user(&p, &username, change).await {
        Ok(u) => Redirect::to(&format!("/admin/users?roles_changed={}", u.username)).into_response(),
        Err(ServiceError::ApprovalRequired { request_id }) => {
            let asked = format!(
                "Granting a role needs a second administrator: request {request_id} waits under Change requests. \
                 Once someone else approved it, submit the same roles again with that request id."
            );
            render_users(ctx, Some(&asked), None, NewUserForm::default(), StatusCode::ACCEPTED).await
        }
        Err(e) => {
            let shown = |e: &ServiceError| {
                matches!(
                    e,
                    ServiceError::InvalidRequest(_)
                        | ServiceError::Conflict(_)
                        | ServiceError::InvalidState(_)
                        | ServiceError::NotFound(_)
                )
            };
            let Some(r) = errors::inline(&e, shown) else {
                return ctx.error_page(e);
            };
            render_users(ctx, None, Some(&r.message), NewUserForm::default(), r.status).await
        }
    }
}

// ---- API tokens ----------------------------------------------------------------

async fn tokens(ctx: Ctx) -> Response {
    render_tokens(ctx, None, None, StatusCode::OK).await
}

async fn render_tokens(ctx: Ctx, created: Option<(&str, &str)>, error: Option<&str>, status: StatusCode) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Admin)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = match ctx.app.list_api_tokens(&p).await {
        Ok(t) => t,
        Err(e) => return ctx.error_page(e.into()),
    };
    let body = html! {
        h1 { "Admin" }
        (admin_tabs("/admin/tokens"))
        @if let Some((name, token)) = created {
            div.notice.ok role="status" {
                p { "Token " strong { (name) } " was created. Copy it now: it is shown only once." }
                p { code.secret #new-token { (token) } }
            }
        }
        (notice_error(error))
        p.lead { "API tokens let automation call the JSON API with the rights of their scope. A token you create here is yours: it acts for you and never counts as a second approver to your own requests. Keep them in a secret store; revoke any you no longer need." }
        ul.muted {
            li { strong { "admin" } ": everything an administrator can do." }
            li { strong { "mdm" } ": only device compliance updates, for an MDM integration." }
            li { strong { "relying_party" } ": for an application that signs its users in through the API; only its word on the end user's address and device counts." }
        }
        div.table-wrap { table {
            caption.visually-hidden { "API tokens" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Scopes" } th scope="col" { "Created" } th scope="col" { "By" } th scope="col" { "Owner" } th scope="col" { "State" } th scope="col" { span.visually-hidden { "Actions" } } } }
            tbody {
                @if list.is_empty() { tr { td colspan="7" { span.muted { "No tokens yet." } } } }
                @for (t, created, revoked) in &list { tr {
                    td { (t.name) }
                    td { (t.scopes.join(", ")) }
                    td { (when(*created)) }
                    td { (t.created_by) }
                    td { @if let Some(o) = &t.owner { (o) } @else { span.muted { "none (approves nothing)" } } }
                    td { @if let Some(r) = revoked { (tag("Revoked", "bad")) " " span.muted { (when(*r)) } } @else { (tag("Active", "ok")) } }
                    td.actions { @if revoked.is_none() {
                        form.inline method="post" action={ "/admin/tokens/" (t.id) "/revoke" } data-confirm={ "Revoke the token '" (t.name) "'?" } {
                            (csrf_field(&ctx))
                            button.danger.small type="submit" aria-label={ "Revoke token " (t.name) } { "Revoke" }
                        }
                    } }
                } }
            }
        } }
        form.card method="post" action="/admin/tokens" {
            (csrf_field(&ctx))
            h2 { "Create a token" }
            label for="token-name" { "Name" }
            input #token-name type="text" name="name" required maxlength="100" placeholder="e.g. provisioning";
            label for="token-scope" { "Scope" }
            select #token-scope name="scope" {
                @for s in API_SCOPES { option value=(s) { (s) } }
            }
            button.primary type="submit" { "Create token" }
        }
    };
    ctx.page(status, "Admin · API tokens", Section::Admin, body)
}

#[derive(Deserialize)]
struct TokenForm {
    name: String,
    /// One of the API scopes; admin when absent.
    scope: Option<String>,
}

async fn create_token(State(app): State<Arc<App>>, ctx: Ctx, Form(f): Form<TokenForm>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Admin)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let scope = f.scope.as_deref().unwrap_or(API_SCOPE_ADMIN);
    match app.create_scoped_api_token(&p, &f.name, &[scope], None).await {
        Ok((rec, token)) => render_tokens(ctx, Some((&rec.name, &token)), None, StatusCode::CREATED).await,
        Err(e) => match errors::inline(&e, |e| matches!(e, ServiceError::InvalidRequest(_))) {
            Some(r) => render_tokens(ctx, None, Some(&r.message), r.status).await,
            None => ctx.error_page(e),
        },
    }
}

async fn revoke_token(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Admin)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app.revoke_api_token(&p, &id).await {
        Ok(()) => Redirect::to("/admin/tokens").into_response(),
        Err(e) => ctx.error_page(e),
    }
}

// ---- change requests ---------------------------------------------------------------

/// Privileged changes waiting for a second person, and the approve button.
async fn requests(ctx: Ctx) -> Response {
    render_requests(ctx, None, StatusCode::OK).await
}

async fn render_requests(ctx: Ctx, error: Option<&str>, status: StatusCode) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = match ctx.app.change_requests(&p, None).await {
        Ok(l) => l,
        Err(e) => return ctx.error_page(e.into()),
    };
    // `latchkey doctor`'s findings, for those who may read them: fewer than
    // two administrators means these requests wait for nobody.
    let findings = ctx.app.doctor(&p).await.unwrap_or_default();
    let body = html! {
        h1 { "Admin" }
        (admin_tabs("/admin/requests"))
        (notice_error(error))
        p.lead { "A pass, a password, a method or a device of anyone who holds a role, changed by someone else, a role granted, and every policy exception, wait here for a second person. You cannot approve your own requests, nor one for your own account." }
        @for f in &findings {
            p.notice.info role="status" data-doctor=(f.code) { strong { (f.level) ": " } (f.message) }
        }
        div.table-wrap { table {
            caption.visually-hidden { "Change requests" }
            thead { tr { th scope="col" { "Requested" } th scope="col" { "What" } th scope="col" { "For user" } th scope="col" { "By" } th scope="col" { "State" } th scope="col" { span.visually-hidden { "Actions" } } } }
            tbody {
                @if list.is_empty() { tr { td colspan="6" { span.muted { "No requests." } } } }
                @for r in &list { tr {
                    td { (when(r.created_at)) }
                    td { code { (r.kind) } @if !r.subject.is_empty() { " " span.muted { (r.subject) } } }
                    td { code { (r.user_id) } }
                    td { (r.requested_by) }
                    td { (r.state) @if let Some(d) = &r.decided_by { " " span.muted { "by " (d) } } }
                    td.actions { @if r.state == "pending_approval" {
                        form.inline method="post" action={ "/admin/requests/" (r.id) "/approve" } data-confirm={ "Approve this " (r.kind) " request?" } {
                            (csrf_field(&ctx))
                            button.primary.small type="submit" aria-label={ "Approve request " (r.id) } { "Approve" }
                        }
                    } }
                } }
            }
        } }
    };
    ctx.page(status, "Admin · Change requests", Section::Admin, body)
}

async fn approve_request(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app.approve_change_request(&p, &id).await {
        Ok(_) => Redirect::to("/admin/requests").into_response(),
        Err(ServiceError::Forbidden(m)) | Err(ServiceError::InvalidState(m)) => {
            render_requests(ctx, Some(&format!("{m}.")), StatusCode::FORBIDDEN).await
        }
        Err(e) => ctx.error_page(e),
    }
}

// ---- backup --------------------------------------------------------------------

async fn backup_page(ctx: Ctx) -> Response {
    render_backup(ctx, None, None, StatusCode::OK)
}

fn render_backup(
    ctx: Ctx,
    made: Option<&latchkey_service::backup::BackupInfo>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let (ctx, _p) = match ctx.gate(Some(Role::Admin)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let body = html! {
        h1 { "Admin" }
        (admin_tabs("/admin/backup"))
        @if let Some(b) = made {
            div.notice.ok role="status" #backup-result {
                p { "Backup written on the server: " code { (b.file.display()) } " (" (b.bytes) " bytes)." }
                p { "Its audit chain ends at event " (b.audit_head_seq) "." }
            }
        }
        (notice_error(error))
        p.lead { "A backup is a consistent copy of the database, taken while Latchkey keeps serving. It is written into the server's backup folder (never downloaded: it holds every password hash and sealed secret); its name carries the audit event it ends at." }
        p.notice.info { strong { "The key file is not in the backup." } " " (latchkey_service::backup::KEY_REMINDER) }
        form.card method="post" action="/admin/backup" {
            (csrf_field(&ctx))
            button.primary type="submit" { "Back up now" }
        }
    };
    ctx.page(status, "Admin · Backup", Section::Admin, body)
}

async fn create_backup(State(app): State<Arc<App>>, ctx: Ctx) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Admin)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app.backup_to_folder(&p).await {
        Ok(b) => render_backup(ctx, Some(&b), None, StatusCode::CREATED),
        Err(e) => match errors::inline(&e, |e| {
            matches!(e, ServiceError::InvalidRequest(_) | ServiceError::Conflict(_))
        }) {
            Some(r) => render_backup(ctx, None, Some(&r.message), r.status),
            None => ctx.error_page(e),
        },
    }
}

// ---- audit ---------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct AuditQuery {
    after: Option<i64>,
}

const AUDIT_PAGE: i64 = 50;

async fn audit(State(app): State<Arc<App>>, ctx: Ctx, Query(q): Query<AuditQuery>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Auditor)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let chain = match app.verify_audit(&p).await {
        Ok(c) => c,
        Err(e) => return ctx.error_page(e.into()),
    };
    // Newest page by default; `after` pages through older ones.
    let after = q
        .after
        .unwrap_or((chain.length - AUDIT_PAGE).max(0))
        .clamp(0, chain.length.max(0));
    let page = match app.audit_page(&p, after, AUDIT_PAGE, None).await {
        Ok(p) => p,
        Err(e) => return ctx.error_page(e.into()),
    };
    let older = (after > 0).then(|| (after - AUDIT_PAGE).max(0));
    let newer = (page.next_after < chain.length).then_some(page.next_after);
    let body = html! {
        h1 { @if p.is_admin() { "Admin" } @else { "Audit log" } }
        @if p.is_admin() { (admin_tabs("/admin/audit")) }
        @if chain.ok {
            p.notice.ok role="status" #chain-status {
                strong { "Chain intact." } " " (chain.length) " events; every link recomputed. Head hash "
                code.hash { (chain.head_hash.get(..16).unwrap_or(&chain.head_hash)) "…" }
            }
        } @else {
            @let b = chain.first_broken.as_ref();
            p.notice.error role="alert" #chain-status {
                strong { "Chain BROKEN" }
                @if let Some(b) = b { " at event " (b.seq) ": " (b.reason) }
                ". Events from there on cannot be trusted; investigate now."
            }
        }
        div.table-wrap { table.audit {
            caption { "Events " (after + 1) "–" (page.next_after) " of " (chain.length) }
            thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Action" } th scope="col" { "Target" } th scope="col" { "Details" } } }
            tbody { @for e in page.events.iter().rev() { tr {
                td { (e.seq) }
                td.nowrap { (when(e.at_ms.div_euclid(1000))) }
                td { (e.actor) }
                td { code { (e.action) } }
                td { (e.target) }
                td.details { code { (e.details) } }
            } } }
        } }
        nav.pager aria-label="Audit pages" {
            @if let Some(n) = newer { a href={ "/admin/audit?after=" (n) } { "← Newer" } }
            @if let Some(o) = older { a href={ "/admin/audit?after=" (o) } { "Older →" } }
        }
    };
    ctx.page(StatusCode::OK, "Audit log", Section::Audit, body)
}
