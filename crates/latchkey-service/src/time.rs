//! Times as people and protocols read them.

/// Unix seconds as RFC 3339 (`2026-01-31T14:05:00Z`); empty when out of range.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}
