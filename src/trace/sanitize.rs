//! The two pattern sanitizers that follow the phrase masker in a stream: secrets in URL query
//! parameters, and tokens recognised by their prefix (GitLab's `glpat-`, `glrt-`, … and the job's
//! `features.token_mask_prefixes`). Both work across write boundaries. Owns nothing else.

use std::sync::Arc;

use super::masker::{PhraseSet, MASK};
use super::stage::{HoldBack, Stage};

/// Token prefixes GitLab Runner 19 always masks (`glpat-` plus FF_MASK_ALL_DEFAULT_TOKENS, on by
/// default), before the job's own `token_mask_prefixes`.
pub(crate) const DEFAULT_TOKEN_PREFIXES: &[&str] = &[
    "glpat-",
    "gloas-",
    "gldt-",
    "glrt-",
    "glcbt-",
    "glrtr-",
    "glptt-",
    "glft-",
    "glimt-",
    "glagent-",
    "glsoat-",
    "glffct-",
    "_gitlab_session=",
    "gltok-",
];

/// Query parameters whose values are masked (compared lowercase). GitLab Runner's list plus the
/// GCS signed-URL parameters Flotilla's cache uses.
const SECRET_PARAMS: &[&[u8]] = &[
    b"private_token",
    b"authenticity_token",
    b"rss_token",
    b"x-amz-signature",
    b"x-amz-credential",
    b"x-amz-security-token",
    b"x-goog-signature",
    b"x-goog-credential",
];

/// Longer keys than this cannot be a secret parameter (longest is `x-amz-security-token`, 20).
const MAX_KEY: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlState {
    /// Looking for `?` or `&`.
    Scan,
    /// Collecting a parameter name after `?` or `&`.
    Key,
    /// Dropping a secret value until the parameter ends.
    Value,
}

/// Replaces the value of secret URL query parameters (`?private_token=…`) by [`MASK`]. Holds no
/// bytes back: a parameter name passes through as it comes, a secret value is dropped as it comes
/// and the mask is written where it ends.
pub(crate) struct UrlSanitizer {
    state: UrlState,
    key: [u8; MAX_KEY],
    key_len: usize,
}

impl UrlSanitizer {
    /// A sanitizer for one stream.
    pub(crate) fn new() -> UrlSanitizer {
        UrlSanitizer {
            state: UrlState::Scan,
            key: [0; MAX_KEY],
            key_len: 0,
        }
    }
}

/// Where a parameter value ends (like GitLab Runner: separators, whitespace, control bytes).
fn is_param_end(b: u8) -> bool {
    matches!(b, b'?' | b'&' | b' ') || b.is_ascii_control()
}

impl Stage for UrlSanitizer {
    fn process(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let len = input.len();
        let mut pos = 0;
        let mut emit_from = 0;
        while pos < len {
            match self.state {
                UrlState::Scan => match memchr::memchr2(b'?', b'&', &input[pos..]) {
                    None => pos = len,
                    Some(i) => {
                        pos += i + 1;
                        self.state = UrlState::Key;
                        self.key_len = 0;
                    }
                },
                UrlState::Key => {
                    let b = input[pos];
                    pos += 1;
                    match b {
                        b'?' | b'&' => self.key_len = 0,
                        b'=' => {
                            let key = &self.key[..self.key_len];
                            if SECRET_PARAMS.contains(&key) {
                                out.extend_from_slice(&input[emit_from..pos]);
                                emit_from = pos;
                                self.state = UrlState::Value;
                            } else {
                                self.state = UrlState::Scan;
                            }
                        }
                        _ if self.key_len == MAX_KEY => self.state = UrlState::Scan,
                        _ => {
                            self.key[self.key_len] = b.to_ascii_lowercase();
                            self.key_len += 1;
                        }
                    }
                }
                UrlState::Value => match input[pos..].iter().position(|&b| is_param_end(b)) {
                    None => {
                        pos = len;
                        emit_from = len;
                    }
                    Some(i) => {
                        pos += i;
                        emit_from = pos;
                        out.extend_from_slice(MASK);
                        self.state = UrlState::Scan;
                    }
                },
            }
        }
        out.extend_from_slice(&input[emit_from..]);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.state == UrlState::Value {
            out.extend_from_slice(MASK);
        }
        self.state = UrlState::Scan;
        self.key_len = 0;
    }
}

/// Bytes a token may consist of after its prefix (GitLab Runner's alphabet, which includes `=`).
const fn token_alphabet() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'=');
        b += 1;
    }
    t
}
static ALPHABET: [bool; 256] = token_alphabet();

/// Masks the token after a known prefix: `glpat-abc123` becomes `glpat-[MASKED]` (the prefix is
/// kept, like GitLab Runner does). Holds back a possible prefix start between writes.
pub(crate) struct TokenSanitizer {
    set: Arc<PhraseSet>,
    /// Bytes held back from earlier writes (a possible prefix start).
    hold: HoldBack,
    /// A prefix was seen and its token is being dropped.
    in_token: bool,
    /// At least one token byte was dropped since the prefix.
    dropped: bool,
}

impl TokenSanitizer {
    /// A sanitizer for one stream, over a prefix set built with `MatchKind::LeftmostLongest`.
    pub(crate) fn new(set: Arc<PhraseSet>) -> TokenSanitizer {
        TokenSanitizer {
            set,
            hold: HoldBack::default(),
            in_token: false,
            dropped: false,
        }
    }

    /// Emits what is final in `buf`; returns where the bytes to hold back start.
    fn run(&mut self, buf: &[u8], out: &mut Vec<u8>, last: bool) -> usize {
        let len = buf.len();
        let mut pos = 0;
        loop {
            if self.in_token {
                match buf[pos..].iter().position(|&b| !ALPHABET[usize::from(b)]) {
                    None => {
                        self.dropped |= pos < len;
                        return len;
                    }
                    Some(i) => {
                        self.dropped |= i > 0;
                        if self.dropped {
                            out.extend_from_slice(MASK);
                        }
                        self.in_token = false;
                        self.dropped = false;
                        pos += i;
                    }
                }
            }
            let t = if last {
                len
            } else {
                self.set.partial_start(buf, pos)
            };
            match self.set.find(buf, pos) {
                Some((start, end)) if start < t => {
                    out.extend_from_slice(&buf[pos..end]);
                    pos = end;
                    self.in_token = true;
                }
                _ => {
                    out.extend_from_slice(&buf[pos..t]);
                    return t;
                }
            }
        }
    }
}

impl Stage for TokenSanitizer {
    fn process(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut hold = std::mem::take(&mut self.hold);
        hold.feed(input, |buf| self.run(buf, out, false));
        self.hold = hold;
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        let mut hold = std::mem::take(&mut self.hold);
        hold.drain(|held| {
            self.run(held, out, true);
        });
        self.hold = hold;
        if self.in_token && self.dropped {
            out.extend_from_slice(MASK);
        }
        self.in_token = false;
        self.dropped = false;
    }
}

#[cfg(test)]
mod tests {
    use aho_corasick::MatchKind;

    use super::*;

    fn through(stage: &mut dyn Stage, chunks: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for c in chunks {
            stage.process(c, &mut out);
        }
        stage.finish(&mut out);
        String::from_utf8(out).expect("utf8")
    }

    fn tokens(extra: &[&str]) -> TokenSanitizer {
        let all = DEFAULT_TOKEN_PREFIXES.iter().chain(extra.iter());
        let set = PhraseSet::new(all, MatchKind::LeftmostLongest)
            .expect("build")
            .expect("non-empty");
        TokenSanitizer::new(Arc::new(set))
    }

    #[test]
    fn url_params() {
        let cases = [
            ("https://x/a?private_token=abc123 ok", "https://x/a?private_token=[MASKED] ok"),
            ("u?a=1&PRIVATE_TOKEN=s3cr3t&b=2", "u?a=1&PRIVATE_TOKEN=[MASKED]&b=2"),
            ("?authenticity_token=zz\n", "?authenticity_token=[MASKED]\n"),
            ("?rss_token=zz\tx", "?rss_token=[MASKED]\tx"),
            (
                "s3?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA/1/2&X-Amz-Security-Token=t&x=y",
                "s3?X-Amz-Signature=[MASKED]&X-Amz-Credential=[MASKED]&X-Amz-Security-Token=[MASKED]&x=y",
            ),
            (
                "gs?X-Goog-Signature=abcd&X-Goog-Credential=sa%40p/2024&X-Goog-Date=1",
                "gs?X-Goog-Signature=[MASKED]&X-Goog-Credential=[MASKED]&X-Goog-Date=1",
            ),
            ("?private_token=", "?private_token=[MASKED]"),
            ("?token=abc&private_tokenx=1", "?token=abc&private_tokenx=1"),
            ("no query private_token=abc", "no query private_token=abc"),
            ("a?b?private_token=q", "a?b?private_token=[MASKED]"),
        ];
        for (input, want) in cases {
            assert_eq!(through(&mut UrlSanitizer::new(), &[input.as_bytes()]), want);
            for cut in 0..=input.len() {
                let (a, b) = input.as_bytes().split_at(cut);
                assert_eq!(
                    through(&mut UrlSanitizer::new(), &[a, b]),
                    want,
                    "cut {cut} of {input:?}"
                );
            }
        }
    }

    #[test]
    fn token_prefixes() {
        let cases = [
            ("use glpat-AbC_12.3-x= now", "use glpat-[MASKED] now"),
            ("glrt-t1_abc\nnext", "glrt-[MASKED]\nnext"),
            ("glrtr-abc glrt-", "glrtr-[MASKED] glrt-"),
            ("glpat- alone", "glpat- alone"),
            ("_gitlab_session=abcdef;", "_gitlab_session=[MASKED];"),
            ("gldt-x,gltok-y", "gldt-[MASKED],gltok-[MASKED]"),
            ("myco-secretvalue!", "myco-[MASKED]!"),
            ("glpatglpat-zz", "glpatglpat-[MASKED]"),
            ("ends with glcbt-abc", "ends with glcbt-[MASKED]"),
            ("gl", "gl"),
        ];
        for (input, want) in cases {
            assert_eq!(through(&mut tokens(&["myco-"]), &[input.as_bytes()]), want);
            for cut in 0..=input.len() {
                let (a, b) = input.as_bytes().split_at(cut);
                assert_eq!(
                    through(&mut tokens(&["myco-"]), &[a, b]),
                    want,
                    "cut {cut} of {input:?}"
                );
            }
        }
    }

    #[test]
    fn token_spanning_many_writes_is_masked_once() {
        let mut s = tokens(&[]);
        let mut out = Vec::new();
        s.process(b"x glp", &mut out);
        assert_eq!(out, b"x ");
        s.process(b"at-aaaa", &mut out);
        s.process(b"bbbb", &mut out);
        assert_eq!(out, b"x glpat-");
        s.process(b"cc y", &mut out);
        assert_eq!(out, b"x glpat-[MASKED] y");
    }
}
