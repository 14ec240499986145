//! The per-stream chain of stages every byte of job output goes through before storage, in
//! GitLab Runner's order: UTF-8 repair → phrase masker → URL-parameter sanitizer → token-prefix
//! sanitizer → timestamper. Owns the compiled per-job rules and puts the stages in order; the
//! stages live in their own files, on the [`Stage`] trait of `stage.rs`.

use std::sync::{Arc, Mutex};
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
        let phrases = PhraseSet::per_job(&settings.masked_phrases)?.map(Arc::new);
        let prefixes = prefix_set(&settings.token_prefixes)?;
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

/// Token-prefix sets already compiled, by the job's `token_mask_prefixes` (trimmed). GitLab sends
/// every job the same list, so all jobs share one automaton instead of each compiling its own
/// (≈ 10 KiB of heap and the build's CPU per job). Bounded: cleared when it holds
/// [`PREFIX_SETS_MAX`] lists.
static PREFIX_SETS: Mutex<Vec<CompiledPrefixes>> = Mutex::new(Vec::new());
/// One job's `token_mask_prefixes` (trimmed) and their compiled set.
type CompiledPrefixes = (Vec<String>, Option<Arc<PhraseSet>>);
const PREFIX_SETS_MAX: usize = 8;

/// The compiled set of `configured` token prefixes and the default ones, shared by every job
/// with the same list.
fn prefix_set(configured: &[String]) -> Result<Option<Arc<PhraseSet>>, BuildError> {
    let key: Vec<String> = configured.iter().map(|p| p.trim().to_string()).collect();
    let mut sets = PREFIX_SETS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, set)) = sets.iter().find(|(k, _)| *k == key) {
        return Ok(set.clone());
    }
    let all = key
        .iter()
        .map(String::as_str)
        .chain(DEFAULT_TOKEN_PREFIXES.iter().copied());
    let set = PhraseSet::new(all, MatchKind::LeftmostLongest)?.map(Arc::new);
    if sets.len() >= PREFIX_SETS_MAX {
        sets.clear();
    }
    sets.push((key, set.clone()));
    Ok(set)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(prefixes: &[&str]) -> TraceSettings {
        TraceSettings {
            token_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            ..TraceSettings::default()
        }
    }

    #[test]
    fn jobs_with_the_same_token_prefixes_share_one_automaton() {
        let a = Rules::new(&settings(&["sharedpfx-"]), system_clock).unwrap();
        let b = Rules::new(&settings(&[" sharedpfx- "]), system_clock).unwrap();
        let other = Rules::new(&settings(&["otherpfx-"]), system_clock).unwrap();
        let (a, b, other) = (
            a.prefixes.unwrap(),
            b.prefixes.unwrap(),
            other.prefixes.unwrap(),
        );
        assert!(Arc::ptr_eq(&a, &b), "the same list compiles once");
        assert!(!Arc::ptr_eq(&a, &other), "another list has its own set");
    }
}
