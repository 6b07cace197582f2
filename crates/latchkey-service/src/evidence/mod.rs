//! Evidence reports for auditors and insurers: the figures come from
//! [`latchkey_core::evidence`] over data the store loads; this module checks
//! who may ask, and renders the report as JSON, or as CSV, HTML or PDF from
//! one format-neutral [model] of its sections.

mod csv;
mod html;
mod model;
mod pdf;

use latchkey_core::evidence::{EvidenceReport, Period};
use latchkey_core::Role;
use latchkey_store::AuditEntry;
use serde_json::json;

use crate::app::{App, Principal};
use crate::error::{ServiceError, ServiceResult};

pub use html::CSS;

/// The report as markup to place inside a page (the console); pair it with [`CSS`].
pub fn html_body(r: &EvidenceReport) -> String {
    html::body(&model::build(r))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceFormat {
    Html,
    Pdf,
    Json,
    Csv,
}

impl EvidenceFormat {
    pub fn parse(s: &str) -> ServiceResult<Self> {
        match s {
            "html" => Ok(Self::Html),
            "pdf" => Ok(Self::Pdf),
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            other => Err(ServiceError::InvalidRequest(format!(
                "unknown report format '{other}' (html, pdf, json or csv)"
            ))),
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Html => "html",
            Self::Pdf => "pdf",
            Self::Json => "json",
            Self::Csv => "csv",
        }
    }
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Html => "text/html; charset=utf-8",
            Self::Pdf => "application/pdf",
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// A date (`2026-01-31`, the whole day in UTC) or an RFC 3339 time. `end`
/// picks the last second of a plain date, so `--to 2026-01-31` includes that day.
pub fn parse_report_time(s: &str, end: bool) -> ServiceResult<i64> {
    let s = s.trim();
    let bad = || ServiceError::InvalidRequest(format!("'{s}' is not a date (2026-01-31) or an RFC 3339 time"));
    if let Ok(d) = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")) {
        let start = d.midnight().assume_utc().unix_timestamp();
        return Ok(if end { start + 86_399 } else { start });
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| bad())
}

/// The period from the two user-given ends.
pub fn parse_period(from: &str, to: &str) -> ServiceResult<Period> {
    Ok(Period::new(
        parse_report_time(from, false)?,
        parse_report_time(to, true)?,
    )?)
}

/// Unix seconds as "2026-01-31 14:05 UTC" (dates only when `date_only`).
pub fn fmt_time(secs: i64, date_only: bool) -> String {
    let t = match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => t,
        Err(_) => return "-".into(),
    };
    let r = if date_only {
        t.format(time::macros::format_description!("[year]-[month]-[day]"))
    } else {
        t.format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
    };
    r.unwrap_or_else(|_| "-".into())
}

pub(crate) fn fmt_opt(secs: Option<i64>) -> String {
    secs.map_or_else(|| "never".into(), |s| fmt_time(s, false))
}

/// "66.7%"
pub(crate) fn fmt_pct(p: f64) -> String {
    format!("{p:.1}%")
}

/// A share of a population: "n/a" when there is nobody to count (0 of 0
/// is not 0 %).
pub(crate) fn fmt_share(p: f64, population: i64) -> String {
    if population == 0 {
        "n/a".into()
    } else {
        fmt_pct(p)
    }
}

/// Human names of method kinds (unknown kinds are shown as stored).
pub(crate) fn kind_name(kind: &str) -> String {
    match kind {
        "webauthn" => "Passkey / security key".into(),
        "push" => "Push (authenticator app)".into(),
        "totp" => "Authenticator code (TOTP)".into(),
        "sms" => "Text message (SMS)".into(),
        "voice" => "Phone call".into(),
        other => other.replace('_', " "),
    }
}

pub(crate) fn class_name(class: &str) -> &'static str {
    match class {
        "phishing_resistant" => "Phishing resistant",
        "app_based" => "App based",
        "telephony" => "Telephony",
        "other" => "Other",
        _ => "No MFA method",
    }
}

/// A rendered report.
pub struct Rendered {
    pub content_type: &'static str,
    pub filename: String,
    pub body: Vec<u8>,
}

pub fn render(r: &EvidenceReport, format: EvidenceFormat) -> Rendered {
    let body = match format {
        EvidenceFormat::Json => serde_json::to_vec_pretty(r).expect("the report serialises"),
        EvidenceFormat::Csv => csv::render(&model::build(r)),
        EvidenceFormat::Html => html::document(&model::build(r)).into_bytes(),
        EvidenceFormat::Pdf => pdf::render(&model::build(r)),
    };
    Rendered {
        content_type: format.content_type(),
        filename: format!(
            "latchkey-evidence-{}-{}.{}",
            fmt_time(r.period.from, true),
            fmt_time(r.period.to, true),
            format.as_str()
        ),
        body,
    }
}

impl App {
    /// Build the evidence report for a period (admins and auditors). Who
    /// exported evidence, for which period, is itself audited.
    pub async fn evidence_report(
        &self,
        p: &Principal,
        period: Period,
        format: EvidenceFormat,
    ) -> ServiceResult<EvidenceReport> {
        if !p.has_role(Role::Auditor) {
            return Err(ServiceError::Forbidden(
                "evidence reports need the auditor or admin role".into(),
            ));
        }
        let now = self.now();
        let input = self.store.evidence_input(period).await?;
        let report = EvidenceReport::build(&input, period, now);
        self.store
            .audit_only(
                &AuditEntry::new(
                    p.actor(),
                    "report.evidence",
                    "report:evidence",
                    json!({ "from": period.from, "to": period.to, "format": format.as_str(),
                            "audit_head_hash": report.audit_chain.head_hash }),
                ),
                self.clock.now_ms(),
            )
            .await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::model::LIST_LIMIT;
    use super::*;

    #[test]
    fn dates_cover_whole_days_and_times_are_exact() {
        assert_eq!(parse_report_time("1970-01-02", false).unwrap(), 86_400);
        assert_eq!(parse_report_time("1970-01-02", true).unwrap(), 2 * 86_400 - 1);
        assert_eq!(parse_report_time("1970-01-01T00:01:00Z", true).unwrap(), 60);
        assert!(parse_report_time("2026-02-30", false).is_err());
        assert!(parse_report_time("yesterday", false).is_err());
        assert!(parse_period("2026-02-01", "2026-01-01").is_err());
        assert!(EvidenceFormat::parse("docx").is_err());
    }

    #[test]
    fn documents_cut_long_lists_and_data_formats_do_not() {
        use latchkey_core::evidence::{EvidenceInput, MethodRow, UserRow};
        let n = LIST_LIMIT + 50;
        let input = EvidenceInput {
            users: (0..n)
                .map(|i| UserRow {
                    username: format!("sms{i:04}"),
                    display_name: format!("SMS {i}"),
                    active: true,
                    ..Default::default()
                })
                .collect(),
            methods: (0..n)
                .map(|i| MethodRow {
                    id: format!("m{i}"),
                    username: format!("sms{i:04}"),
                    kind: "sms".into(),
                    active: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let r = EvidenceReport::build(&input, Period::new(0, 86_400).unwrap(), 86_400);
        assert_eq!(r.sms_only.len(), n);
        let note = format!("The first {LIST_LIMIT} of {n} are listed");
        let html = String::from_utf8(render(&r, EvidenceFormat::Html).body).unwrap();
        assert!(html.contains(&note) && html.contains("sms0199") && !html.contains("sms0200"));
        let pdf = render(&r, EvidenceFormat::Pdf).body;
        assert!(String::from_utf8_lossy(&pdf).contains(&note));
        let csv = String::from_utf8(render(&r, EvidenceFormat::Csv).body).unwrap();
        assert!(csv.contains("sms0249"));
    }
}
