//! The per-stream chain of stages every byte of job output goes through before storage, in
//! GitLab Runner's order: UTF-8 repair → phrase masker → URL-parameter sanitizer → token-prefix
//! sanitizer → timestamper. Owns the compiled per-job rules and the stage plumbing; the stages
//! themselves live in their own files.

use std::sync::Arc;
use std::time::SystemTime;

use aho_corasick::{BuildError, MatchKind};

use super::masker::{PhraseMasker, PhraseSet};
use super::sanitize::{TokenSanitizer, UrlSanitizer, DEFAULT_TOKEN_PREFIXES};
use super::timestamps::{Clock, Timestamper};
use super::utf8::Utf8Sanitizer;
use super::{StreamKind, TraceSettings};

/// Input is fed to the stages in slices of at most this size, which bounds their scratch memory.
pub(crate) const CHUNK: usize = 16 * 1024;

/// One step of a stream's pipeline. Stages may hold bytes back between calls; `finish` releases
/// them and leaves the stage ready for more input.
pub(crate) trait Stage: Send {
    /// Appends the output for `input` to `out`.
    fn process(&mut self, input: &[u8], out: &mut Vec<u8>);
    /// Appends everything still held back to `out`.
    fn finish(&mut self, out: &mut Vec<u8>);
}

/// The bytes a scanning stage holds back between writes (a possible start of what it looks for),
/// and the scratch buffer that joins them to the next input. Shared by the phrase masker and the
/// token sanitizer.
#[derive(Default)]
pub(crate) struct HoldBack {
    held: Vec<u8>,
    /// Scratch: `held` followed by the new input (kept to reuse its allocation).
    joined: Vec<u8>,
}

impl HoldBack {
    /// Runs `scan` over the held bytes followed by `input`; `scan` emits what is final and
    /// returns where the bytes to hold back start.
    pub(crate) fn feed(&mut self, input: &[u8], scan: impl FnOnce(&[u8]) -> usize) {
        if self.held.is_empty() {
            let t = scan(input);
            self.held.extend_from_slice(&input[t..]);
        } else {
            let mut joined = std::mem::take(&mut self.joined);
            joined.clear();
            joined.extend_from_slice(&self.held);
            joined.extend_from_slice(input);
            let t = scan(&joined);
            self.held.clear();
            self.held.extend_from_slice(&joined[t..]);
            self.joined = joined;
        }
    }

    /// Runs `scan` over the held bytes as the last ones, then forgets them.
    pub(crate) fn drain(&mut self, scan: impl FnOnce(&[u8])) {
        scan(&self.held);
        self.held.clear();
    }
}

/// A job's masking and framing rules, compiled once when its trace is created.
pub(crate) struct Rules {
    phrases: Option<Arc<PhraseSet>>,
    prefixes: Option<Arc<PhraseSet>>,
    timestamps: bool,
    clock: Clock,
}

impl Rules {
    /// Compiles `settings`; `clock` stamps the lines.
    pub(crate) fn new(settings: &TraceSettings, clock: Clock) -> Result<Rules, BuildError> {
        let phrases =
            PhraseSet::new(&settings.masked_phrases, MatchKind::LeftmostLongest)?.map(Arc::new);
        let prefixes = settings
            .token_prefixes
            .iter()
            .map(|p| p.trim())
            .chain(DEFAULT_TOKEN_PREFIXES.iter().copied());
        let prefixes = PhraseSet::new(prefixes, MatchKind::LeftmostLongest)?.map(Arc::new);
        Ok(Rules {
            phrases,
            prefixes,
            timestamps: settings.timestamps,
            clock,
        })
    }

    /// A fresh pipeline for stream `id` of the given kind.
    pub(crate) fn pipeline(&self, id: u8, kind: StreamKind) -> Pipeline {
        let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(Utf8Sanitizer::new())];
        if let Some(set) = &self.phrases {
            stages.push(Box::new(PhraseMasker::new(Arc::clone(set))));
        }
        stages.push(Box::new(UrlSanitizer::new()));
        if let Some(set) = &self.prefixes {
            stages.push(Box::new(TokenSanitizer::new(Arc::clone(set))));
        }
        if self.timestamps {
            stages.push(Box::new(Timestamper::new(id, kind, self.clock)));
        }
        Pipeline {
            stages,
            a: Vec::new(),
            b: Vec::new(),
        }
    }
}

/// The stages of one stream and their scratch buffers.
pub(crate) struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
    a: Vec<u8>,
    b: Vec<u8>,
}

impl Pipeline {
    /// Runs `input` (at most [`CHUNK`] bytes) through every stage; with `last`, every stage also
    /// releases what it holds. Returns the bytes to store.
    pub(crate) fn run(&mut self, input: &[u8], last: bool) -> &[u8] {
        let Pipeline { stages, a, b } = self;
        for (i, stage) in stages.iter_mut().enumerate() {
            b.clear();
            stage.process(if i == 0 { input } else { a }, b);
            if last {
                stage.finish(b);
            }
            std::mem::swap(a, b);
        }
        a
    }
}

/// The default clock.
pub(crate) fn system_clock() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
impl Pipeline {
    /// Capacity of the scratch buffers (tests check memory stays bounded).
    pub(crate) fn scratch_capacity(&self) -> usize {
        self.a.capacity() + self.b.capacity()
    }
}
