//! The admin console's alert sink: alerts raised by detections, newest
//! first, with acknowledge and resolve (security admins; auditors read; the
//! service layer checks the roles).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use latchkey_core::Role;
use maud::html;
use serde::Deserialize;

use super::layout::{csrf_field, notice_error, tag, Section};
use super::{can, when, Ctx};
use latchkey_service::app::App;
use latchkey_service::ServiceError;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/admin/alerts", get(alerts))
        .route("/admin/alerts/{id}/acknowledge", post(acknowledge))
        .route("/admin/alerts/{id}/resolve", post(resolve))
}

#[derive(Deserialize, Default)]
struct AlertsQuery {
    status: Option<String>,
    error: Option<String>,
}

fn severity_tag(s: &str) -> maud::Markup {
    let class = match s {
        "critical" | "high" => "bad",
        "medium" => "warn",
        _ => "",
    };
    tag(s, class)
}

async fn alerts(ctx: Ctx, Query(q): Query<AlertsQuery>) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let status = q.status.as_deref().filter(|s| !s.is_empty()).or(Some("open"));
    let status = if status == Some("all") { None } else { status };
    let list = match ctx.app.list_alerts(&p, status, 200).await {
        Ok(l) => l,
        Err(e) => return ctx.error_page(e),
    };
    let handler = can(&p, Role::SecurityAdmin);
    let filter = |s: &str, label: &str| {
        let current = status.unwrap_or("all") == s;
        html! { @if current { a href={ "/admin/alerts?status=" (s) } aria-current="page" { (label) } } @else { a href={ "/admin/alerts?status=" (s) } { (label) } } }
    };
    let body = html! {
        h1 { "Alerts" }
        nav.tabs aria-label="Alert status" {
            (filter("open", "Open")) (filter("acknowledged", "Acknowledged")) (filter("resolved", "Resolved")) (filter("all", "All"))
        }
        (notice_error(q.error.as_deref()))
        p.lead { "Raised by detections over the sign-in log and account posture: push fatigue, password spray, credential stuffing, unusual location, impossible travel, failure spikes, privileged accounts without a phishing-resistant method, exceptions ending, break-glass use and overdue tests." }
        div.table-wrap { table #alerts {
            caption.visually-hidden { "Alerts" }
            thead { tr {
                th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Kind" } th scope="col" { "Severity" }
                th scope="col" { "About" } th scope="col" { "Details" } th scope="col" { "Status" } th scope="col" { span.visually-hidden { "Actions" } }
            } }
            tbody {
                @if list.is_empty() { tr { td colspan="8" { span.muted { "No alerts here." } } } }
                @for a in &list { tr data-alert-id=(a.id) {
                    td { (a.id) }
                    td.nowrap { (when(a.at)) }
                    td { code { (a.kind) } }
                    td { (severity_tag(&a.severity)) }
                    td { (a.target) }
                    td.details { code { (a.details) } }
                    td {
                        (a.status)
                        @if let Some(by) = &a.handled_by { br; span.muted { (by) } }
                        @if let Some(r) = &a.resolution { br; span.muted { (r) } }
                    }
                    td.actions { @if handler && a.status != "resolved" {
                        @if a.status == "open" {
                            form.inline method="post" action={ "/admin/alerts/" (a.id) "/acknowledge" } {
                                (csrf_field(&ctx))
                                button.small type="submit" aria-label={ "Acknowledge alert " (a.id) } { "Acknowledge" }
                            }
                        }
                        form.inline method="post" action={ "/admin/alerts/" (a.id) "/resolve" } {
                            (csrf_field(&ctx))
                            label.visually-hidden for={ "res-" (a.id) } { "Resolution" }
                            input id={ "res-" (a.id) } type="text" name="resolution" required maxlength="1000" placeholder="What was done";
                            button.small type="submit" aria-label={ "Resolve alert " (a.id) } { "Resolve" }
                        }
                    } }
                } }
            }
        } }
    };
    ctx.page(StatusCode::OK, "Alerts", Section::Admin, body)
}

#[derive(Deserialize)]
struct ResolveForm {
    #[serde(default)]
    resolution: String,
}

async fn handled(ctx: Ctx, r: Result<latchkey_store::AlertRecord, ServiceError>) -> Response {
    match r {
        Ok(_) => Redirect::to("/admin/alerts").into_response(),
        Err(e) => {
            let shown = |e: &ServiceError| matches!(e, ServiceError::InvalidRequest(_) | ServiceError::InvalidState(_));
            match super::errors::inline(&e, shown) {
                Some(r) => {
                    Redirect::to(&format!("/admin/alerts?error={}", super::percent_encode(&r.message))).into_response()
                }
                None => ctx.error_page(e),
            }
        }
    }
}

async fn acknowledge(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<i64>) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let r = app.handle_alert(&p, id, false, None).await;
    handled(ctx, r).await
}

async fn resolve(State(app): State<Arc<App>>, ctx: Ctx, Path(id): Path<i64>, Form(f): Form<ResolveForm>) -> Response {
    let (ctx, p) = match ctx.gate(None) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let r = app.handle_alert(&p, id, true, Some(&f.resolution)).await;
    handled(ctx, r).await
}
