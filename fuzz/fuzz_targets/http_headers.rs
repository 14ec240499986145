//! The header parsers: `Range` of a 416 to a trace PATCH, `Retry-After`, `RateLimit-ResetTime`,
//! and the fake GitLab's `Content-Range`. Never a panic; what parses is consistent.
#![no_main]

use flotilla::coordinator::parsers::{range_end, reset_time_wait, retry_after_wait};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|value: &str| {
    let _ = range_end(value);
    if let Some(wait) = retry_after_wait(value) {
        assert!(wait > Duration::ZERO);
    }
    if let Some(wait) = reset_time_wait(value, UNIX_EPOCH + Duration::from_secs(1_700_000_000)) {
        assert!(wait > Duration::ZERO);
    }
    if let Some((start, end)) = testkit::gitlab::parse_range(value) {
        let shown = format!("{start}-{end}");
        assert_eq!(testkit::gitlab::parse_range(&shown), Some((start, end)));
    }
});
