//! Times as people and protocols read them.

use crate::error::{ServiceError, ServiceResult};

/// Unix seconds as RFC 3339 (`2026-01-31T14:05:00Z`); empty when out of range.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// A time as RFC 3339 (`2026-11-26T12:00:00Z`) or unix seconds.
pub fn parse_time_arg(s: &str) -> ServiceResult<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| ServiceError::InvalidRequest(format!("'{s}' is not an RFC 3339 time or unix seconds")))
}
