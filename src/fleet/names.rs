//! VM names and the runner label. Owns the spelling of every instance name the fleet creates
//! (`runner-<short token>-<MachineName with %s = <unix>-<8 hex>>`, as GitLab Runner's
//! docker+machine names them) and of the `flotilla-runner` label value. Pure functions: the
//! caller supplies the clock and the randomness.

/// GCE's longest instance name.
const MAX_NAME_LEN: usize = 63;

/// Why a machine name could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// `MachineName` lacks the `%s` placeholder.
    #[error("MachineName {0:?} must contain %s (where the unique id goes)")]
    NoPlaceholder(String),
    /// The result is not a valid GCE instance name even after trimming.
    #[error(
        "machine name {0:?} is not a valid GCE instance name ([a-z]([-a-z0-9]{{0,61}}[a-z0-9])?)"
    )]
    Invalid(String),
}

/// Whether `name` matches GCE's instance name rule `[a-z]([-a-z0-9]{0,61}[a-z0-9])?`.
pub fn is_valid_instance_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME_LEN || !b[0].is_ascii_lowercase() {
        return false;
    }
    let ok_mid = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    if !b.iter().all(ok_mid) {
        return false;
    }
    b.len() == 1 || b[b.len() - 1] != b'-'
}

/// Lowercases and maps every character outside `[a-z0-9-]` to `-`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The unique part that replaces `%s`: `<unix seconds>-<8 hex of random>`.
pub fn unique_id(unix_secs: u64, random: u32) -> String {
    format!("{unix_secs}-{random:08x}")
}

/// Makes an instance name: `runner-<short token>-<template with %s = unique>` (without the
/// `runner-<short token>-` prefix when `short_token` is `None`), lowercased, other
/// characters mapped to `-`, trimmed to 63 characters by shortening the template's fixed parts
/// (never the unique part), and checked against GCE's rule.
pub fn machine_name(
    short_token: Option<&str>,
    template: &str,
    unique: &str,
) -> Result<String, NameError> {
    let Some((before, after)) = template.split_once("%s") else {
        return Err(NameError::NoPlaceholder(template.to_string()));
    };
    let prefix = short_token.map_or_else(String::new, |t| format!("runner-{}-", sanitize(t)));
    let mut before = sanitize(before);
    let mut after = sanitize(&after.replace("%s", ""));
    let fixed = prefix.len() + unique.len();
    let room = MAX_NAME_LEN.saturating_sub(fixed);
    if before.len() + after.len() > room {
        let keep_after = after.len().min(room / 2);
        after.truncate(keep_after);
        before.truncate(room - after.len());
    }
    let mut name = format!("{prefix}{before}{unique}{after}");
    while name.ends_with('-') {
        name.pop();
    }
    // Collapse runs of '-' to keep names readable ("runner-abc--x" → "runner-abc-x").
    let mut collapsed = String::with_capacity(name.len());
    for c in name.chars() {
        if !(c == '-' && collapsed.ends_with('-')) {
            collapsed.push(c);
        }
    }
    if is_valid_instance_name(&collapsed) {
        Ok(collapsed)
    } else {
        Err(NameError::Invalid(collapsed))
    }
}

/// The `flotilla-runner` label value: `r` + 12 hex characters of a stable hash (FNV-1a, 64 bit)
/// of the runner token. Stable across restarts and Rust versions; the token itself never leaves
/// the process. Fits GCE's label value rule `[a-z0-9_-]{0,63}`.
pub fn runner_label(token: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in token.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("r{:012x}", h >> 16)
}

/// Whether `value` is a valid GCE label value (`[a-z0-9_-]{0,63}`, international letters aside).
pub fn is_valid_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_gitlab_runner_and_gce_rules() {
        let u = unique_id(1_700_000_000, 0xdead_beef);
        assert_eq!(u, "1700000000-deadbeef");
        let cases: &[(&str, &str, Result<&str, ()>)] = &[
            (
                "AbC123xyz",
                "auto-%s",
                Ok("runner-abc123xyz-auto-1700000000-deadbeef"),
            ),
            ("abc", "%s", Ok("runner-abc-1700000000-deadbeef")),
            (
                "a_b",
                "Big_Name.%s.x",
                Ok("runner-a-b-big-name-1700000000-deadbeef-x"),
            ),
            (
                "abc",
                "trailing-%s-",
                Ok("runner-abc-trailing-1700000000-deadbeef"),
            ),
            ("abc", "no-placeholder", Err(())),
        ];
        for (token, template, want) in cases {
            let got = machine_name(Some(token), template, &u);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{token} {template}"),
                Err(()) => assert!(got.is_err(), "{token} {template}: {got:?}"),
            }
        }
    }

    #[test]
    fn without_a_token_the_template_is_the_whole_name() {
        let u = unique_id(1_700_000_000, 1);
        let name = machine_name(None, "ci-runners-group-%s", &u).unwrap();
        assert_eq!(name, format!("ci-runners-group-{u}"));
    }

    #[test]
    fn long_templates_are_trimmed_but_keep_the_unique_part() {
        let u = unique_id(1_700_000_000, 1);
        let name = machine_name(
            Some("abcdefghi"),
            &format!("{}-%s-{}", "x".repeat(50), "y".repeat(50)),
            &u,
        )
        .unwrap();
        assert!(name.len() <= 63, "{name}");
        assert!(name.contains(&u), "{name}");
        assert!(is_valid_instance_name(&name), "{name}");
    }

    #[test]
    fn instance_name_rule() {
        for (n, ok) in [
            ("a", true),
            ("a-1", true),
            ("1a", false),
            ("a-", false),
            ("A", false),
            ("", false),
            (&"a".repeat(63)[..], true),
            (&"a".repeat(64)[..], false),
        ] {
            assert_eq!(is_valid_instance_name(n), ok, "{n}");
        }
    }

    #[test]
    fn runner_labels_are_stable_short_and_valid() {
        let a = runner_label("glrt-secret-token-1");
        let b = runner_label("glrt-secret-token-2");
        assert_ne!(a, b);
        assert_eq!(a, runner_label("glrt-secret-token-1"));
        assert_eq!(a.len(), 13);
        assert!(is_valid_label_value(&a), "{a}");
        assert!(!a.contains("secret"));
        // Pinned: a change would orphan every VM of a running manager after an upgrade.
        assert_eq!(
            runner_label(""),
            format!("r{:012x}", 0xcbf2_9ce4_8422_2325u64 >> 16)
        );
    }
}
