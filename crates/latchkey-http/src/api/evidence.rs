//! HTTP shell for evidence reports: `GET /api/v1/reports/evidence`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiQuery, Auth};
use latchkey_service::app::App;
use latchkey_service::evidence::{parse_period, render, EvidenceFormat};

type AppState = Arc<App>;

/// The standalone HTML report needs its inline stylesheet and no script,
/// form, frame or base of its own.
pub const HTML_REPORT_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EvidenceQuery {
    /// First day (`2026-01-01`, from 00:00 UTC) or an RFC 3339 time.
    pub from: String,
    /// Last day (`2026-01-31`, until 23:59:59 UTC) or an RFC 3339 time.
    pub to: String,
    /// `json` (default), `csv`, `html` or `pdf`.
    pub format: Option<String>,
}

/// The evidence report for a period: MFA coverage (overall, per department,
/// over time), privileged accounts, SMS-only users, active exceptions,
/// break-glass accounts, the policy set, enforcement proof, detections and
/// the audit chain's verification. Admin or auditor role.
#[utoipa::path(get, path = "/api/v1/reports/evidence", tag = "reports", params(EvidenceQuery),
    responses(
        (status = 200, description = "The report", content(
            (Object = "application/json"),
            (String = "text/csv"),
            (String = "text/html"),
            (Vec<u8> = "application/pdf"),
        )),
        (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn evidence_report(
    State(app): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<EvidenceQuery>,
) -> ApiResult<Response> {
    let format = EvidenceFormat::parse(q.format.as_deref().unwrap_or("json"))?;
    let period = parse_period(&q.from, &q.to)?;
    let report = app.evidence_report(&p, period, format).await?;
    let out = render(&report, format);
    let disposition = match format {
        EvidenceFormat::Json => "inline".to_owned(),
        _ => format!("attachment; filename=\"{}\"", out.filename),
    };
    let mut resp = (
        [
            (header::CONTENT_TYPE, out.content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        out.body,
    )
        .into_response();
    if format == EvidenceFormat::Html {
        // Opened from a download, the document runs on this origin: it may
        // style itself and show inline images, and nothing else.
        resp.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(HTML_REPORT_CSP),
        );
    }
    Ok(resp)
}

#[derive(OpenApi)]
#[openapi(paths(evidence_report))]
pub struct EvidenceDoc;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/reports/evidence", get(evidence_report))
}
