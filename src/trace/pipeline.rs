//! The per-stream chain of stages every byte of job output goes through before storage, in
//! GitLab Runner's order: UTF-8 repair → phrase masker → URL-parameter sanitizer → token-prefix
//! sanitizer → timestamper. Owns the compiled per-job rules and puts the stages in order; the
//! stages live in their own files, on the [`Stage`] trait of `stage.rs`.

use std::sync::Arc;
use std::time::SystemTime;

use aho_corasick::{BuildError, MatchKind};

use super::masker::{PhraseMasker, PhraseSet};
use super::sanitize::{TokenSanitizer, UrlSanitizer, DEFAULT_TOKEN_PREFIXES};
use super::stage::Stage;
use super::timestamps::{Clock, Timestamper};
use super::utf8::Utf8Sanitizer;
use super::{StreamKind, TraceSettings};

/// Input is fed to the stages in slices of at most this size, which bounds their scratch memory.
pub(crate) const CHUNK: usize = 16 * 1024;

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
