//! Masking of secret phrases (masked variable values, the job token) in one stream's output,
//! also when a phrase is split across writes. Owns the compiled phrase sets that the token-prefix
//! sanitizer reuses; knows nothing of URLs, timestamps or storage.
//!
//! Occurrences that overlap (one phrase a prefix of another, or two phrases sharing bytes) are
//! masked as their union, so no byte of any occurrence reaches the trace. Only the bytes that could
//! still become the start of a phrase are held back between writes (fewer than the longest phrase).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use aho_corasick::{packed, AhoCorasick, AhoCorasickKind, BuildError, Input, MatchKind, Span};

use super::stage::{HoldBack, Stage};

/// What replaces a secret.
pub(crate) const MASK: &[u8] = b"[MASKED]";

/// Bytes a job's own set searches with its automaton before it builds a Teddy searcher: most
/// jobs print less than this and never build one. Built for every job (and for the shared
/// token-prefix set), Teddy searchers came with 99–108 KB of manager RSS per running job at 150
/// jobs against 90–96 KB without (`benches/docker_scale.rs`), though heaptrack showed no larger
/// live heap; built only this way, 95 KB.
const PACKED_AFTER: u64 = 1 << 20;

/// A compiled set of non-empty byte strings plus what streaming matchers need to decide how many
/// trailing bytes to hold back. Built once per job, shared by every stream (`Arc`).
///
/// A job's own set searches with aho-corasick's packed SIMD searcher (Teddy) once it has
/// searched [`PACKED_AFTER`] bytes, where one can be built (x86-64 with SSSE3, aarch64; at most
/// 64 phrases), and with the automaton otherwise. Teddy looks for the phrases' first bytes as a
/// group, so output full of one phrase's "rare" bytes (digits, say) does not stop it at every
/// byte, as the automaton's rare-byte prefilter does.
pub(crate) struct PhraseSet {
    /// The automaton over `phrases`, for searches before (or without) Teddy.
    ac: AhoCorasick,
    /// Teddy over `phrases`, built once `searched` reaches `packed_after` (`None` inside: none
    /// can be built).
    packed: OnceLock<Option<packed::Searcher>>,
    /// `None`: never build Teddy.
    packed_after: Option<u64>,
    /// Bytes searched with the automaton so far (counted until Teddy is built).
    searched: AtomicU64,
    kind: MatchKind,
    phrases: Vec<Vec<u8>>,
    first_bytes: [bool; 256],
    max_len: usize,
}

impl PhraseSet {
    /// Compiles `phrases` (empty ones and duplicates dropped); `None` when nothing is left.
    /// The automaton is the fastest the crate picks (a DFA for few phrases), and no Teddy: for
    /// sets shared by every job (token prefixes, whose first bytes its prefilter looks for).
    pub(crate) fn new<I, P>(phrases: I, kind: MatchKind) -> Result<Option<PhraseSet>, BuildError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        PhraseSet::build(phrases, kind, None, None)
    }

    /// As [`PhraseSet::new`] with leftmost-longest matching, compiled into a compact automaton
    /// (a contiguous NFA), and Teddy only once the set has searched [`PACKED_AFTER`] bytes: for
    /// one job's own phrases, built for every job and held while it runs. A DFA took ≈ 8 KB of
    /// each running job's heap; searches start at the prefilter's candidates either way.
    pub(crate) fn per_job<I, P>(phrases: I) -> Result<Option<PhraseSet>, BuildError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        PhraseSet::build(
            phrases,
            MatchKind::LeftmostLongest,
            Some(AhoCorasickKind::ContiguousNFA),
            Some(PACKED_AFTER),
        )
    }

    fn build<I, P>(
        phrases: I,
        kind: MatchKind,
        automaton: Option<AhoCorasickKind>,
        packed_after: Option<u64>,
    ) -> Result<Option<PhraseSet>, BuildError>
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
        let ac = AhoCorasick::builder()
            .match_kind(kind)
            .kind(automaton)
            .build(&list)?;
        let mut first_bytes = [false; 256];
        for p in &list {
            first_bytes[usize::from(p[0])] = true;
        }
        let max_len = list.iter().map(Vec::len).max().unwrap_or(1);
        Ok(Some(PhraseSet {
            ac,
            packed: OnceLock::new(),
            packed_after,
            searched: AtomicU64::new(0),
            kind,
            phrases: list,
            first_bytes,
            max_len,
        }))
    }

    /// The leftmost occurrence (by the set's match kind) in `buf[from..]`, as `(start, end)`.
    pub(crate) fn find(&self, buf: &[u8], from: usize) -> Option<(usize, usize)> {
        let span = Span::from(from..buf.len());
        let found = match self.packed_searcher(span.len()) {
            Some(searcher) => searcher.find_in(buf, span).map(|m| m.span()),
            None => self.ac.find(Input::new(buf).span(span)).map(|m| m.span()),
        };
        found.map(|span| (span.start, span.end))
    }

    /// Teddy, once built; counts `len` more bytes searched and builds it when they reach
    /// `packed_after`.
    fn packed_searcher(&self, len: usize) -> Option<&packed::Searcher> {
        if let Some(built) = self.packed.get() {
            return built.as_ref();
        }
        let after = self.packed_after?;
        if self.searched.fetch_add(len as u64, Ordering::Relaxed) < after {
            return None;
        }
        self.packed
            .get_or_init(|| packed_searcher(&self.phrases, self.kind))
            .as_ref()
    }

    /// The end of the union of an occurrence ending at `end` with every complete occurrence
    /// that starts in `from..end` (and, transitively, before the union's end).
    pub(crate) fn union_end(&self, buf: &[u8], from: usize, mut end: usize) -> usize {
        let mut p = from;
        while p < end {
            if self.first_bytes[usize::from(buf[p])] {
                let rest = &buf[p..];
                for ph in &self.phrases {
                    if rest.starts_with(ph) {
                        end = end.max(p + ph.len());
                    }
                }
            }
            p += 1;
        }
        end
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

/// A Teddy searcher over `phrases` with `kind`'s semantics, where one can be built.
fn packed_searcher(phrases: &[Vec<u8>], kind: MatchKind) -> Option<packed::Searcher> {
    let kind = match kind {
        MatchKind::LeftmostLongest => packed::MatchKind::LeftmostLongest,
        MatchKind::LeftmostFirst => packed::MatchKind::LeftmostFirst,
        _ => return None,
    };
    packed::Config::new()
        .match_kind(kind)
        .builder()
        .extend(phrases)
        .build()
}

/// The masking stage of one stream: replaces every phrase occurrence by [`MASK`].
pub(crate) struct PhraseMasker {
    set: Arc<PhraseSet>,
    /// Bytes held back from earlier writes (a possible phrase start).
    hold: HoldBack,
    /// How many leading held bytes belong to an occurrence whose mask is already emitted.
    covered: usize,
}

impl PhraseMasker {
    /// A masker for one stream, over a set built with [`MatchKind::LeftmostLongest`].
    pub(crate) fn new(set: Arc<PhraseSet>) -> PhraseMasker {
        PhraseMasker {
            set,
            hold: HoldBack::default(),
            covered: 0,
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
        let mut cursor = 0;
        // The occurrence reaching into `buf` from the last run, whose mask is already out.
        let mut carried = (covered_in > 0).then(|| (0, self.set.union_end(buf, 0, covered_in)));
        loop {
            let (s, e, already_masked) = match carried.take() {
                Some((s, e)) => (s, e, true),
                None => match self.set.find(buf, cursor) {
                    Some((start, end)) => (start, self.set.union_end(buf, start + 1, end), false),
                    None => break,
                },
            };
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
        self.covered = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(phrases: &[&str]) -> PhraseMasker {
        let set = PhraseSet::new(phrases, MatchKind::LeftmostLongest)
            .expect("build")
            .expect("non-empty");
        PhraseMasker::new(Arc::new(set))
    }

    fn run_chunks(phrases: &[&str], chunks: &[&[u8]]) -> String {
        run_chunks_through(masker(phrases), chunks)
    }

    fn run_chunks_through(mut m: PhraseMasker, chunks: &[&[u8]]) -> String {
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
        let set = PhraseSet::new(["abcd", "cdx"], MatchKind::LeftmostLongest)
            .expect("build")
            .expect("non-empty");
        assert_eq!(set.partial_start(b"zzabc", 0), 2);
        assert_eq!(set.partial_start(b"zzzcd", 0), 3);
        assert_eq!(set.partial_start(b"zzabcd", 0), 4);
        assert_eq!(set.partial_start(b"zzzzz", 0), 5);
        assert_eq!(set.partial_start(b"abc", 1), 2);
        assert_eq!(set.partial_start(b"abc", 3), 3);
    }

    /// Masks the union of every occurrence, computed naively on the whole input.
    fn reference(phrases: &[&str], input: &[u8]) -> Vec<u8> {
        let mut covered: Vec<(usize, usize)> = Vec::new();
        for p in 0..input.len() {
            for ph in phrases {
                if !ph.is_empty() && input[p..].starts_with(ph.as_bytes()) {
                    covered.push((p, p + ph.len()));
                }
            }
        }
        covered.sort_unstable();
        let mut out = Vec::new();
        let mut cursor = 0;
        let mut i = 0;
        while i < covered.len() {
            let (s, mut e) = covered[i];
            i += 1;
            while i < covered.len() && covered[i].0 < e {
                e = e.max(covered[i].1);
                i += 1;
            }
            out.extend_from_slice(&input[cursor..s]);
            out.extend_from_slice(MASK);
            cursor = e;
        }
        out.extend_from_slice(&input[cursor..]);
        out
    }

    /// `phrases` plus 70 that never occur in inputs of `a` and `b`: too many for Teddy.
    fn with_fillers<'a>(phrases: &[&'a str], fillers: &'a [String]) -> Vec<&'a str> {
        let mut all = phrases.to_vec();
        all.extend(fillers.iter().map(String::as_str));
        all
    }

    /// A job's set that builds Teddy (where it can) at its first search (0 bytes to search
    /// first).
    fn teddy_at_once(phrases: &[&str]) -> PhraseSet {
        PhraseSet::build(
            phrases,
            MatchKind::LeftmostLongest,
            Some(AhoCorasickKind::ContiguousNFA),
            Some(0),
        )
        .expect("build")
        .expect("non-empty")
    }

    #[test]
    fn a_jobs_set_builds_teddy_after_a_mebibyte_and_others_never_do() {
        let teddy_here =
            cfg!(target_arch = "x86_64") && std::arch::is_x86_feature_detected!("ssse3");
        let fillers: Vec<String> = (0..70).map(|i| format!("zz{i}")).collect();
        let shared = PhraseSet::new(["aba"], MatchKind::LeftmostLongest)
            .unwrap()
            .unwrap();
        let job = PhraseSet::per_job(["aba"]).unwrap().unwrap();
        let many = PhraseSet::per_job(with_fillers(&["aba"], &fillers))
            .unwrap()
            .unwrap();
        let output = vec![b'b'; 64 * 1024];
        for set in [&shared, &job, &many] {
            for _ in 0..(PACKED_AFTER as usize / output.len()) {
                assert_eq!(set.find(&output, 0), None);
            }
            assert!(set.packed.get().is_none(), "not before a mebibyte");
            assert_eq!(set.find(b"xxabaxx", 0), Some((2, 5)));
        }
        assert!(shared.packed.get().is_none(), "a shared set: never");
        assert_eq!(job.packed.get().unwrap().is_some(), teddy_here);
        assert!(
            many.packed.get().unwrap().is_none(),
            "70 phrases: the automaton"
        );
    }

    #[test]
    fn random_inputs_and_chunkings_match_reference() {
        let phrase_sets: &[&[&str]] = &[
            &["aba"],
            &["bb", "abab"],
            &["a", "aab"],
            &["abba", "ba", "bab"],
        ];
        let mut seed: u64 = 0x5eed;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for phrases in phrase_sets {
            for round in 0..600 {
                // Short inputs, and inputs long enough for Teddy's vector loop.
                let len = if round % 2 == 0 {
                    next() % 24
                } else {
                    next() % 300
                };
                let input: Vec<u8> = (0..len)
                    .map(|_| if next() % 2 == 0 { b'a' } else { b'b' })
                    .collect();
                let want = reference(phrases, &input);
                let mut chunks = Vec::new();
                let mut rest: &[u8] = &input;
                while !rest.is_empty() {
                    let n = 1 + next() % rest.len();
                    let (a, b) = rest.split_at(n);
                    chunks.push(a);
                    rest = b;
                }
                // Every other round through Teddy (where the CPU has it), else the automaton.
                let masker = if round % 4 < 2 {
                    PhraseMasker::new(Arc::new(teddy_at_once(phrases)))
                } else {
                    masker(phrases)
                };
                let got = run_chunks_through(masker, &chunks);
                assert_eq!(
                    got.as_bytes(),
                    &want[..],
                    "{phrases:?} {:?} in {chunks:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }
}
