//! Evidence reports in the console (auditors and admins): a from/to form,
//! the report rendered in the page, and downloads as PDF, HTML, JSON or CSV.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use latchkey_core::evidence::Period;
use latchkey_core::Role;
use maud::{html, PreEscaped};
use serde::Deserialize;

use super::layout::{notice_error, Section};
use super::Ctx;
use latchkey_service::app::App;
use latchkey_service::evidence::{self, EvidenceFormat};
use latchkey_service::ServiceError;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/admin/reports", get(reports))
        .route("/admin/reports/evidence", get(download))
        .route(
            "/static/evidence.css",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=3600"),
                    ],
                    evidence::CSS,
                )
            }),
        )
}

#[derive(Deserialize, Default)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

fn period(q: &ReportQuery) -> Option<Result<Period, ServiceError>> {
    match (q.from.as_deref(), q.to.as_deref()) {
        (Some(f), Some(t)) if !f.is_empty() && !t.is_empty() => Some(evidence::parse_period(f, t)),
        _ => None,
    }
}

async fn reports(State(app): State<Arc<App>>, ctx: Ctx, Query(q): Query<ReportQuery>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Auditor)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    // Default: the last 30 days.
    let today = evidence::fmt_time(app.now(), true);
    let month_ago = evidence::fmt_time(app.now() - 29 * 86_400, true);
    let from = q.from.clone().unwrap_or(month_ago);
    let to = q.to.clone().unwrap_or(today);
    let (report, error) = match period(&q) {
        None => (None, None),
        Some(Err(e)) => (None, Some(crate::error::detail(&e))),
        Some(Ok(period)) => match app.evidence_report(&p, period, EvidenceFormat::Html).await {
            Ok(r) => (Some(r), None),
            Err(e) => return ctx.error_page(e),
        },
    };
    let qs = format!(
        "from={}&to={}",
        super::percent_encode(&from),
        super::percent_encode(&to)
    );
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let body = html! {
        link rel="stylesheet" href="/static/evidence.css";
        h1 { "Evidence reports" }
        p { "MFA coverage, privileged accounts, exceptions, break-glass accounts, policies, enforcement proof, detections and the audit chain, for auditors and insurers." }
        (notice_error(error.as_deref()))
        form.stack method="get" action="/admin/reports" {
            label { "From " input type="date" name="from" value=(from) required; }
            " "
            label { "To " input type="date" name="to" value=(to) required; }
            " "
            button type="submit" { "Show report" }
        }
        @if let Some(r) = &report {
            p #downloads {
                "Download: "
                a href={ "/admin/reports/evidence?" (qs) "&format=pdf" } { "PDF" } " · "
                a href={ "/admin/reports/evidence?" (qs) "&format=html" } { "HTML" } " · "
                a href={ "/admin/reports/evidence?" (qs) "&format=json" } { "JSON" } " · "
                a href={ "/admin/reports/evidence?" (qs) "&format=csv" } { "CSV" }
            }
            // The report's own writer escapes every string it is given.
            (PreEscaped(evidence::html_body(r)))
        }
    };
    ctx.page(status, "Evidence reports", Section::Reports, body)
}

async fn download(State(app): State<Arc<App>>, ctx: Ctx, Query(q): Query<ReportQuery>) -> Response {
    let (ctx, p) = match ctx.gate(Some(Role::Auditor)) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let format = match EvidenceFormat::parse(q.format.as_deref().unwrap_or("pdf")) {
        Ok(f) => f,
        Err(e) => return ctx.error_page(e),
    };
    let period = match period(&q) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return ctx.error_page(e),
        None => return ctx.error_page(ServiceError::InvalidRequest("choose a period (from and to)".into())),
    };
    match app.evidence_report(&p, period, format).await {
        Ok(r) => {
            let out = evidence::render(&r, format);
            (
                [
                    (header::CONTENT_TYPE, out.content_type.to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{}\"", out.filename),
                    ),
                ],
                out.body,
            )
                .into_response()
        }
        Err(e) => ctx.error_page(e),
    }
}
