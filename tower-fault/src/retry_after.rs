//! `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tower_fault::retry_after;
//!
//! let now = SystemTime::now();
//! assert_eq!(retry_after::parse_str("120", now), Some(Duration::from_secs(120)));
//! assert_eq!(retry_after::parse_str("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::ZERO));
//! assert_eq!(retry_after::parse_str("soon", now), None);
//! ```

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, header::RETRY_AFTER};

/// The largest hint this crate reports: anything longer is capped to it (one day).
///
/// Layers apply their own, smaller caps on top (retry's `max_retry_after`).
pub const CAP: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses a `Retry-After` value relative to `now`.
///
/// Delta-seconds and HTTP-dates (all three RFC 9110 formats) are accepted; a date in the past is
/// zero; values beyond [`CAP`] are capped; anything else (garbage, negative numbers, fractions)
/// is `None`.
#[must_use]
pub fn parse(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    parse_str(value.to_str().ok()?, now)
}

/// Like [`parse`], over a string.
#[must_use]
pub fn parse_str(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate instead of failing: "99999999999999999999" means "a very long time".
        let secs = value.bytes().fold(0u64, |acc, digit| {
            acc.saturating_mul(10)
                .saturating_add(u64::from(digit - b'0'))
        });
        return Some(Duration::from_secs(secs).min(CAP));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO).min(CAP))
}

/// The first parseable `Retry-After` header of `headers`, relative to `now`.
#[must_use]
pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get_all(RETRY_AFTER)
        .iter()
        .find_map(|value| parse(value, now))
}

/// A `Retry-After` value for `delay`, in whole seconds rounded up (so a client never comes back
/// early), capped at [`CAP`] like [`parse`].
#[must_use]
pub fn header_value(delay: Duration) -> HeaderValue {
    let delay = delay.min(CAP);
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    HeaderValue::from(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_str("0", now), Some(Duration::ZERO));
        assert_eq!(parse_str(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_str("99999999999999999999999", now), Some(CAP));
        assert_eq!(parse_str("-1", now), None);
        assert_eq!(parse_str("1.5", now), None);
        assert_eq!(parse_str("", now), None);
        assert_eq!(parse_str("+3", now), None);
    }

    #[test]
    fn http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_str("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        // obsolete RFC 850 and asctime forms
        assert_eq!(
            parse_str("Sunday, 06-Nov-94 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_str("Sun Nov  6 08:49:57 1994", now),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            parse_str("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_str("Sat, 06 Nov 2094 08:00:00 GMT", now), Some(CAP));
        assert_eq!(parse_str("Sun, 32 Nov 1994 08:00:00 GMT", now), None);
    }

    #[test]
    fn header_value_rounds_up() {
        assert_eq!(header_value(Duration::from_millis(1500)), "2");
        assert_eq!(header_value(Duration::from_secs(3)), "3");
        assert_eq!(header_value(Duration::ZERO), "0");
        assert_eq!(
            header_value(Duration::MAX),
            CAP.as_secs().to_string().as_str()
        );
    }

    #[test]
    fn from_headers_takes_first_parseable() {
        let mut headers = HeaderMap::new();
        headers.append(RETRY_AFTER, HeaderValue::from_static("garbage"));
        headers.append(RETRY_AFTER, HeaderValue::from_static("5"));
        assert_eq!(
            from_headers(&headers, SystemTime::now()),
            Some(Duration::from_secs(5))
        );
        assert_eq!(from_headers(&HeaderMap::new(), SystemTime::now()), None);
    }
}
