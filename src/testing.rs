//! Test-only helpers: fake secrets made at run time, so that no token-looking literal is
//! committed to the tree (scanners would flag it, and a test must not depend on one value).

use rand::Rng;

/// `n` random lowercase ASCII letters and digits (no `_` and no capitals, so a fake runner
/// token's tail never looks like a further prefix to strip).
pub(crate) fn random_alnum(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// A fake token: `prefix` then 20 random lowercase letters and digits.
pub(crate) fn fake_token(prefix: &str) -> String {
    format!("{prefix}{}", random_alnum(20))
}

/// A fake runner authentication token, `glrt-t1_` then 20 random characters.
pub(crate) fn fake_runner_token() -> String {
    fake_token("glrt-t1_")
}

/// The short token GitLab Runner shows for a token of [`fake_runner_token`], computed on its
/// own (not by `config::short_token`): the 9 characters after `glrt-t1_`.
pub(crate) fn expected_short_token(token: &str) -> String {
    token["glrt-t1_".len()..][..9].to_string()
}
