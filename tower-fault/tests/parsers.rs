//! Property tests: the header parsers never panic, and accept exactly what they should.

use std::time::{Duration, SystemTime};

use http::HeaderValue;
use proptest::prelude::*;
use tower_fault::{IdempotencyKey, retry_after};

proptest! {
    #[test]
    fn retry_after_never_panics_and_is_capped(input in ".{0,64}") {
        if let Some(d) = retry_after::parse_str(&input, SystemTime::now()) {
            prop_assert!(d <= retry_after::CAP);
        }
    }

    #[test]
    fn retry_after_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let _ = retry_after::parse(&value, SystemTime::UNIX_EPOCH);
        }
    }

    #[test]
    fn retry_after_delta_seconds_round_trip(secs in 0u64..86_400) {
        prop_assert_eq!(
            retry_after::parse_str(&secs.to_string(), SystemTime::now()),
            Some(Duration::from_secs(secs))
        );
    }

    #[test]
    fn key_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes)
            && let Ok(key) = IdempotencyKey::parse(&value) {
                prop_assert!((1..=255).contains(&key.as_str().len()));
                prop_assert!(key.as_str().bytes().all(|b| (b' '..=b'~').contains(&b)));
            }
    }

    #[test]
    fn bare_tokens_of_visible_ascii_are_keys(key in "[!-~]{1,255}") {
        prop_assume!(!key.starts_with('"'));
        let parsed = IdempotencyKey::parse_str(&key).unwrap();
        prop_assert_eq!(parsed.as_str(), key.as_str());
        // and they survive the sf-string round trip
        prop_assert_eq!(IdempotencyKey::parse(&parsed.to_header_value()).unwrap(), parsed);
    }
}
