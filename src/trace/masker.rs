//! Masking of secret phrases (masked variable values, the job token) in one stream's output,
//! also when a phrase is split across writes. Owns the compiled phrase sets that the token-prefix
//! sanitizer reuses; knows nothing of URLs, timestamps or storage.
//!
//! Occurrences that overlap (one phrase a prefix of another, or two phrases sharing bytes) are
//! masked as their union, so no byte of any occurrence reaches the trace. Only the bytes that could
//! still become the start of a phrase are held back between writes (fewer than the longest phrase).

use std::sync::Arc;

use aho_corasick::{AhoCorasick, BuildError, MatchKind};

use super::pipeline::Stage;

/// What replaces a secret.
pub(crate) const MASK: &[u8] = b"[MASKED]";

/// A compiled set of non-empty byte strings plus what streaming matchers need to decide how many
/// trailing bytes to hold back. Built once per job, shared by every stream (`Arc`).
pub(crate) struct PhraseSet {
    /// The automaton over `phrases`.
    pub(crate) ac: AhoCorasick,
    phrases: Vec<Vec<u8>>,
    first_bytes: [bool; 256],
    max_len: usize,
}

impl PhraseSet {
    /// Compiles `phrases` (empty ones and duplicates dropped); `None` when nothing is left.
    pub(crate) fn new<I, P>(phrases: I, kind: MatchKind) -> Result<Option<PhraseSet>, BuildError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let mut list: Vec<Vec<u8>> = Vec::new();
        for p in phrases {
            let p = p.as_ref();
            if !p.is_empty() && !list.iter().any(|q| q == p) {
                list.push(p.to_vec());
            }
        }
        if list.is_empty() {
            return Ok(None);
        }
        let ac = AhoCorasick::builder().match_kind(kind).build(&list)?;
        let mut first_bytes = [false; 256];
        for p in &list {
            first_bytes[usize::from(p[0])] = true;
        }
        let max_len = list.iter().map(Vec::len).max().unwrap_or(1);
        Ok(Some(PhraseSet {
            ac,
            phrases: list,
            first_bytes,
            max_len,
        }))
    }

    /// The earliest position `>= from` at which the rest of `buf` is a proper prefix of some
    /// phrase (so more bytes could still complete it); `buf.len()` when there is none.
    pub(crate) fn partial_start(&self, buf: &[u8], from: usize) -> usize {
        let len = buf.len();
        let lo = from.max(len.saturating_sub(self.max_len.saturating_sub(1)));
        for p in lo..len {
            if !self.first_bytes[usize::from(buf[p])] {
                continue;
            }
            let tail = &buf[p..];
            if self
                .phrases
                .iter()
                .any(|ph| ph.len() > tail.len() && ph.starts_with(tail))
            {
                return p;
            }
        }
        len
    }
}

/// The masking stage of one stream: replaces every phrase occurrence by [`MASK`].
pub(crate) struct PhraseMasker {
    set: Arc<PhraseSet>,
    /// Bytes held back from earlier writes (a possible phrase start).
    held: Vec<u8>,
    /// How many leading bytes of `held` belong to an occurrence whose mask is already emitted.
    covered: usize,
    /// Scratch: `held` followed by the new input.
    joined: Vec<u8>,
    /// Scratch: occurrence spans of one run.
    spans: Vec<(usize, usize)>,
}

impl PhraseMasker {
    /// A masker for one stream, over a set built with [`MatchKind::Standard`].
    pub(crate) fn new(set: Arc<PhraseSet>) -> PhraseMasker {
        PhraseMasker {
            set,
            held: Vec::new(),
            covered: 0,
            joined: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// Emits what is final in `buf` into `out`; returns where the bytes to hold back start.
    fn run(&mut self, buf: &[u8], out: &mut Vec<u8>, last: bool) -> usize {
        let covered_in = self.covered;
        self.covered = 0;
        let t = if last {
            buf.len()
        } else {
            self.set.partial_start(buf, 0)
        };
        self.spans.clear();
        if covered_in > 0 {
            self.spans.push((0, covered_in));
        }
        self.spans.extend(
            self.set
                .ac
                .find_overlapping_iter(buf)
                .map(|m| (m.start(), m.end())),
        );
        if self.spans.len() > 1 {
            self.spans.sort_unstable();
        }
        let mut cursor = 0;
        let mut i = 0;
        while i < self.spans.len() {
            let (s, mut e) = self.spans[i];
            let already_masked = covered_in > 0 && s == 0;
            i += 1;
            // Strictly overlapping occurrences are masked as one.
            while i < self.spans.len() && self.spans[i].0 < e {
                e = e.max(self.spans[i].1);
                i += 1;
            }
            if s >= t {
                if already_masked {
                    self.covered = covered_in;
                }
                break;
            }
            out.extend_from_slice(&buf[cursor..s]);
            if !already_masked {
                out.extend_from_slice(MASK);
            }
            if e > t {
                // The occurrence reaches into the held bytes: remember they are masked already.
                self.covered = e - t;
                return t;
            }
            cursor = e;
        }
        out.extend_from_slice(&buf[cursor..t]);
        t
    }
}

impl Stage for PhraseMasker {
    fn process(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.held.is_empty() {
            let t = self.run(input, out, false);
            self.held.extend_from_slice(&input[t..]);
        } else {
            let mut joined = std::mem::take(&mut self.joined);
            joined.clear();
            joined.extend_from_slice(&self.held);
            joined.extend_from_slice(input);
            let t = self.run(&joined, out, false);
            self.held.clear();
            self.held.extend_from_slice(&joined[t..]);
            self.joined = joined;
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        self.run(&held, out, true);
        self.covered = 0;
        self.held = held;
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(phrases: &[&str]) -> PhraseMasker {
        let set = PhraseSet::new(phrases, MatchKind::Standard)
            .expect("build")
            .expect("non-empty");
        PhraseMasker::new(Arc::new(set))
    }

    fn run_chunks(phrases: &[&str], chunks: &[&[u8]]) -> String {
        let mut m = masker(phrases);
        let mut out = Vec::new();
        for c in chunks {
            m.process(c, &mut out);
        }
        m.finish(&mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn masks_whole_phrases() {
        let cases: &[(&[&str], &str, &str)] = &[
            (&["secret"], "a secret b", "a [MASKED] b"),
            (&["secret"], "secretsecret", "[MASKED][MASKED]"),
            (&["secret"], "secre t", "secre t"),
            (&["abc", "abcdef"], "xabcdefx", "x[MASKED]x"),
            (&["abc", "abcdef"], "xabcdex", "x[MASKED]dex"),
            (&["abc", "bcdef"], "abcdef!", "[MASKED]!"),
            (&["aa"], "aaaaa b", "[MASKED] b"),
            (&["sss"], "ssssx", "[MASKED]x"),
            (&["é€"], "xé€y", "x[MASKED]y"),
            (&["", "k"], "kk", "[MASKED][MASKED]"),
        ];
        for (phrases, input, want) in cases {
            assert_eq!(&run_chunks(phrases, &[input.as_bytes()]), want, "{input}");
        }
    }

    #[test]
    fn secret_split_at_every_position_never_appears() {
        let phrases = ["token-123456", "token-123456-extended", "456-ext"];
        let inputs = [
            "pre token-123456 post\n",
            "pre token-123456-extended post\n",
            "token-123456token-123456\n",
            "ttoken-12345token-123456-extende\n",
        ];
        for input in inputs {
            let whole = run_chunks(&phrases, &[input.as_bytes()]);
            for cut in 0..=input.len() {
                let (a, b) = input.as_bytes().split_at(cut);
                let got = run_chunks(&phrases, &[a, b]);
                assert_eq!(got, whole, "cut at {cut} of {input:?}");
                assert!(!got.contains("token-123456"), "{got:?}");
                assert!(!got.contains("456-ext"), "{got:?}");
            }
            // Byte by byte, too.
            let bytes: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
            assert_eq!(run_chunks(&phrases, &bytes), whole);
        }
    }

    #[test]
    fn holds_back_only_possible_phrase_starts() {
        let mut m = masker(&["secret"]);
        let mut out = Vec::new();
        m.process(b"hello sec", &mut out);
        assert_eq!(out, b"hello ");
        m.process(b"ond", &mut out);
        assert_eq!(out, b"hello second");
        m.process(b"x sec", &mut out);
        m.finish(&mut out);
        assert_eq!(out, b"hello secondx sec");
    }

    #[test]
    fn partial_start_finds_earliest_proper_prefix() {
        let set = PhraseSet::new(["abcd", "cdx"], MatchKind::Standard)
            .expect("build")
            .expect("non-empty");
        assert_eq!(set.partial_start(b"zzabc", 0), 2);
        assert_eq!(set.partial_start(b"zzzcd", 0), 3);
        assert_eq!(set.partial_start(b"zzabcd", 0), 4);
        assert_eq!(set.partial_start(b"zzzzz", 0), 5);
        assert_eq!(set.partial_start(b"abc", 1), 2);
        assert_eq!(set.partial_start(b"abc", 3), 3);
    }
}
