//! Time limits of a job's stages: the variables GitLab Runner reads them from
//! (`RUNNER_SCRIPT_TIMEOUT`, `RUNNER_AFTER_SCRIPT_TIMEOUT`) in Go's duration syntax, and their
//! defaults. The job's own limit (`runner_info.timeout`) comes from the payload.

use crate::job::Variables;
use std::time::Duration;

/// `after_script` runs at most this long unless `RUNNER_AFTER_SCRIPT_TIMEOUT` says otherwise
/// (GitLab Runner's `AfterScriptTimeout`).
pub(super) const DEFAULT_AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The `after_script` limit from `RUNNER_AFTER_SCRIPT_TIMEOUT`; the default when unset, zero,
/// negative or unparsable.
pub(super) fn after_script_timeout(vars: &Variables) -> Duration {
    vars.expanded("RUNNER_AFTER_SCRIPT_TIMEOUT")
        .and_then(|s| parse_go_duration(&s))
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_AFTER_SCRIPT_TIMEOUT)
}

/// The user steps' limit from `RUNNER_SCRIPT_TIMEOUT`, if set to a positive duration.
pub(super) fn script_timeout(vars: &Variables) -> Option<Duration> {
    vars.expanded("RUNNER_SCRIPT_TIMEOUT")
        .and_then(|s| parse_go_duration(&s))
        .filter(|d| !d.is_zero())
}

/// Parses a Go duration (`"300ms"`, `"1.5h"`, `"2h45m"`). Negative durations and bare numbers
/// other than `0` are refused (`None`), as by Go's `time.ParseDuration`.
pub(super) fn parse_go_duration(text: &str) -> Option<Duration> {
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * nanos_per_unit;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return None;
    }
    Some(crate::time::clamp(Duration::from_nanos(total as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobVariable;

    #[test]
    fn go_durations_parse_like_go() {
        let cases = [
            ("5m", Some(300_000)),
            ("1h30m", Some(5_400_000)),
            ("1.5h", Some(5_400_000)),
            ("300ms", Some(300)),
            ("2s500ms", Some(2_500)),
            ("0", Some(0)),
            ("10", None),
            ("-5m", None),
            ("5 m", None),
            ("", None),
            ("1d", None),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_go_duration(text).map(|d| d.as_millis() as u64),
                millis,
                "{text:?}"
            );
        }
    }

    #[test]
    fn after_script_timeout_defaults_and_overrides() {
        let none = Variables::default();
        assert_eq!(after_script_timeout(&none), DEFAULT_AFTER_SCRIPT_TIMEOUT);
        let set = Variables::new(vec![JobVariable::plain(
            "RUNNER_AFTER_SCRIPT_TIMEOUT",
            "3s",
        )]);
        assert_eq!(after_script_timeout(&set), Duration::from_secs(3));
        let bad = Variables::new(vec![JobVariable::plain(
            "RUNNER_AFTER_SCRIPT_TIMEOUT",
            "soon",
        )]);
        assert_eq!(after_script_timeout(&bad), DEFAULT_AFTER_SCRIPT_TIMEOUT);
        assert_eq!(script_timeout(&none), None);
    }
}
