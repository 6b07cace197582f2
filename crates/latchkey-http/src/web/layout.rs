//! The page frame and small shared pieces of markup.

use latchkey_core::{MethodKind, Role};
use maud::{html, Markup, DOCTYPE};

use super::{can, Ctx};
use latchkey_service::app::Principal;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    None,
    SignIn,
    Security,
    Helpdesk,
    Admin,
    Audit,
    Reports,
}

pub fn page(ctx: &Ctx, title: &str, section: Section, body: Markup) -> Markup {
    let nav_link = |href: &str, label: &str, s: Section| {
        html! {
            @if s == section {
                a href=(href) aria-current="page" { (label) }
            } @else {
                a href=(href) { (label) }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Latchkey" }
                link rel="stylesheet" href="/static/latchkey.css";
                script src="/static/latchkey.js" defer {}
                @if matches!(section, Section::SignIn | Section::Security) {
                    // webauthn.js converts WebAuthn's binary fields; passkeys.js drives the pages' buttons.
                    script src="/static/webauthn.js" defer {}
                    script src="/static/passkeys.js" defer {}
                }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { span.logo aria-hidden="true" { "◆" } " Latchkey" }
                    @if let Some(p @ Principal::Session { user, .. }) = &ctx.principal {
                        nav aria-label="Main" {
                            (nav_link("/security-info", "Security info", Section::Security))
                            @if can(p, Role::Helpdesk) {
                                (nav_link("/helpdesk", "Helpdesk", Section::Helpdesk))
                            }
                            @if p.is_admin() {
                                (nav_link("/admin/users", "Admin", Section::Admin))
                            }
                            @if can(p, Role::Auditor) {
                                (nav_link("/admin/audit", "Audit log", Section::Audit))
                                (nav_link("/admin/reports", "Evidence reports", Section::Reports))
                            }
                        }
                        form.signout method="post" action="/signout" {
                            (csrf_field(ctx))
                            span.who { (user.display_name) }
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main class=(if section == Section::SignIn { "narrow" } else { "" }) {
                    (body)
                }
                footer.bottom { "Latchkey · self-hosted multi-factor authentication" }
            }
        }
    }
}

pub fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

pub fn notice_error(msg: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = msg {
            p.notice.error role="alert" id="form-error" { (m) }
        }
    }
}

/// Said where passkeys are offered on a page opened at another address than
/// the one they are registered for (the browser would only refuse).
pub fn passkey_origin_notice(ctx: &Ctx) -> Markup {
    html! {
        @if let Some(origin) = &ctx.passkey_origin {
            p.notice.info {
                "Passkeys and security keys only work at " a href=(origin) { (origin) } ". "
                "Open this page at that address to use them."
            }
        }
    }
}

pub fn notice_ok(msg: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = msg {
            p.notice.ok role="status" { (m) }
        }
    }
}

pub fn method_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Password => "Password",
        MethodKind::Totp => "Authenticator app",
        MethodKind::Webauthn => "Passkey or security key",
        MethodKind::Push => "Push notification",
        MethodKind::Sms => "Text message",
        MethodKind::Voice => "Phone call",
        MethodKind::RecoveryCodes => "Recovery codes",
        MethodKind::TemporaryAccessPass => "Temporary Access Pass",
    }
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "Administrator",
        Role::Helpdesk => "Helpdesk",
        Role::SecurityAdmin => "Security administrator",
        Role::Auditor => "Auditor",
    }
}

pub fn role_help(r: Role) -> &'static str {
    match r {
        Role::Admin => "Full control over users, methods, tokens and settings.",
        Role::Helpdesk => "Looks users up, runs recovery cases, issues Temporary Access Passes.",
        Role::SecurityAdmin => "Manages policies and reviews detections.",
        Role::Auditor => "Reads the audit log and reports; changes nothing.",
    }
}

pub fn tag(text: &str, class: &str) -> Markup {
    html! { span class={ "tag " (class) } { (text) } }
}

/// The sign-in history table shared by security info and the helpdesk view.
pub fn signin_table(rows: &[latchkey_store::SignInLogEntry], caption: &str) -> Markup {
    html! {
        @if rows.is_empty() {
            p.muted { "No sign-ins recorded yet." }
        } @else {
            div.table-wrap {
                table {
                    caption { (caption) }
                    thead { tr { th scope="col" { "When" } th scope="col" { "Result" } th scope="col" { "Methods" } th scope="col" { "From" } } }
                    tbody {
                        @for s in rows {
                            tr {
                                td { (super::when(s.at)) }
                                td {
                                    @if s.result == "success" { (tag("Success", "ok")) }
                                    @else { (tag("Failed", "bad")) " " span.muted { (s.reason.as_deref().unwrap_or("").replace('_', " ")) } }
                                }
                                td { (s.methods.join(" + ").replace('_', " ")) }
                                td { (s.source_ip.as_deref().unwrap_or("—")) }
                            }
                        }
                    }
                }
            }
        }
    }
}
