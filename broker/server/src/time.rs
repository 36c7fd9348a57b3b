//! Broker timestamps (ms since the Unix epoch) to and from RFC 3339.

use chrono::{DateTime, SecondsFormat, Utc};

/// `ms` as RFC 3339 UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time (any offset) into ms since the Unix epoch.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ms = 1_767_323_045_678;
        assert_eq!(rfc3339_ms(ms), "2026-01-02T03:04:05.678Z");
        assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms));
        assert_eq!(parse_rfc3339_ms("not a time"), None);
    }
}
