//! Time: the server clock in microseconds since the Unix epoch (UTC), and the two text forms
//! FHIR and HTTP need (FHIR `instant`, R4 datatypes.html#instant; HTTP-date, RFC 9110 §5.6.7).

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, in microseconds since the Unix epoch (UTC).
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn to_datetime(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default()
}

/// A FHIR `instant` such as `2026-11-23T09:00:00.123456Z`.
pub fn format_instant(micros: i64) -> String {
    to_datetime(micros).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An HTTP-date such as `Mon, 23 Nov 2026 09:00:00 GMT` (for `Last-Modified`).
pub fn format_http_date(micros: i64) -> String {
    to_datetime(micros)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_has_utc_zone_and_microseconds() {
        assert_eq!(format_instant(1_000_001), "1970-01-01T00:00:01.000001Z");
        assert_eq!(format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
