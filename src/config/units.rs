//! Value syntaxes borrowed from Go and Docker: Go durations (`"1h30m"`), Docker memory sizes
//! (`"512m"`), Docker CPU counts (`"1.5"`) and `listen_address` with GitLab Runner's default port.
//! Pure functions; errors are messages for the validator to attach to a key.

use std::time::Duration;

/// GitLab Runner's default metrics port, added to a `listen_address` without one.
pub(super) const DEFAULT_METRICS_PORT: u16 = 9252;

/// A duration, memory size or CPU count that does not parse; the message shows a valid one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum UnitError {
    /// Not a Go duration.
    #[error("invalid duration {text:?}: expected a Go duration such as \"90s\" or \"1h30m\"")]
    Duration { text: String },
    /// A negative duration.
    #[error("invalid duration {text:?}: must not be negative")]
    NegativeDuration { text: String },
    /// Not a Docker memory size.
    #[error("invalid memory size {text:?}: expected a size such as \"512m\" or \"2g\"")]
    Memory { text: String },
    /// A memory size below one byte (or beyond `i64`).
    #[error("invalid memory size {text:?}: must be at least 1 byte")]
    MemoryTooSmall { text: String },
    /// Not a positive CPU count.
    #[error("invalid cpus {text:?}: expected a positive number such as \"1.5\"")]
    Cpus { text: String },
}

/// Parses a Go duration (`time.ParseDuration`): `"90s"`, `"1h30m"`, `"1.5h"`, `"300ms"`, `"0"`.
/// Friendlier forms such as `"1h 30min"` (which GitLab's docs show) are accepted too.
pub(super) fn parse_go_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    let bad = || UnitError::Duration {
        text: text.to_string(),
    };
    if text.starts_with('-') {
        return Err(UnitError::NegativeDuration {
            text: text.to_string(),
        });
    }
    let body = text.strip_prefix('+').unwrap_or(text);
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    go_duration(body)
        .or_else(|| humantime::parse_duration(body).ok())
        .ok_or_else(bad)
}

/// Go's syntax only: one or more `<decimal><unit>` groups with no spaces.
fn go_duration(mut rest: &str) -> Option<Duration> {
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total)
        .ok()
        .map(crate::time::clamp)
}

/// Parses a memory size as Docker does (`units.RAMInBytes`): a number with an optional unit
/// `b`, `k`, `m`, `g`, `t` or `p` (powers of 1024, case-insensitive, optional `i`/`b` after).
pub(super) fn parse_memory(text: &str) -> Result<i64, UnitError> {
    let bad = || UnitError::Memory {
        text: text.to_string(),
    };
    let trimmed = text.trim();
    let number_len = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let number: f64 = trimmed[..number_len].parse().map_err(|_| bad())?;
    let unit = trimmed[number_len..].trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    let bytes = number * multiplier;
    if !(1.0..=i64::MAX as f64).contains(&bytes) {
        return Err(UnitError::MemoryTooSmall {
            text: text.to_string(),
        });
    }
    Ok(bytes as i64)
}

/// Parses a CPU count (`"1.5"`) into nano-CPUs, exactly (no floating point).
pub(super) fn parse_cpus(text: &str) -> Result<i64, UnitError> {
    let bad = || UnitError::Cpus {
        text: text.to_string(),
    };
    let trimmed = text.trim();
    let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let mut nanos: i64 = 0;
    for (i, c) in fraction.chars().take(9).enumerate() {
        nanos += i64::from(c as u8 - b'0') * 10i64.pow(8 - i as u32);
    }
    let total = whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(nanos))
        .ok_or_else(bad)?;
    if total <= 0 {
        return Err(bad());
    }
    Ok(total)
}

/// Adds GitLab Runner's default port to a `listen_address` that names only a host.
pub fn with_default_port(address: &str) -> String {
    if let Some(rest) = address.strip_prefix('[') {
        return if rest.contains("]:") {
            address.to_string()
        } else {
            format!("{address}:{DEFAULT_METRICS_PORT}")
        };
    }
    match address.matches(':').count() {
        0 => format!("{address}:{DEFAULT_METRICS_PORT}"),
        1 => address.to_string(),
        _ => format!("[{address}]:{DEFAULT_METRICS_PORT}"),
    }
}

/// A non-negative count from the file as `usize` (saturating; the callers check the sign).
pub(super) fn to_usize(value: i64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let d = |s| parse_go_duration(s).unwrap();
        assert_eq!(d("90s"), Duration::from_secs(90));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("300ms"), Duration::from_millis(300));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("15m0s"), Duration::from_secs(900));
        assert_eq!(d("1h 30min"), Duration::from_secs(5400));
        assert!(parse_go_duration("90").is_err());
        assert!(parse_go_duration("soon").is_err());
        assert!(parse_go_duration("-1s").is_err());
    }

    #[test]
    fn memory_sizes_use_docker_units() {
        assert_eq!(parse_memory("512m"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("1024k"), Ok(1 << 20));
        assert_eq!(parse_memory("2GiB"), Ok(2 << 30));
        assert_eq!(parse_memory("1.5g"), Ok(3 << 29));
        assert_eq!(parse_memory("4096"), Ok(4096));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("12x").is_err());
        assert!(parse_memory("0").is_err());
    }

    #[test]
    fn cpus_become_nano_cpus() {
        assert_eq!(parse_cpus("1.5"), Ok(1_500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_cpus("0.25"), Ok(250_000_000));
        assert_eq!(parse_cpus(".5"), Ok(500_000_000));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("two").is_err());
        assert!(parse_cpus("1.2.3").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[test]
    fn listen_address_gets_default_port() {
        assert_eq!(with_default_port("localhost"), "localhost:9252");
        assert_eq!(with_default_port("0.0.0.0:9000"), "0.0.0.0:9000");
        assert_eq!(with_default_port(":9252"), ":9252");
        assert_eq!(with_default_port("[::]"), "[::]:9252");
        assert_eq!(with_default_port("[::1]:80"), "[::1]:80");
        assert_eq!(with_default_port("::1"), "[::1]:9252");
    }
}
