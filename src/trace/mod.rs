//! The job trace: everything a job prints, masked, timestamped, limited and stored so the
//! coordinator client can upload it incrementally. Writers are the executor (container output)
//! and the manager (runner lines); the reader is the coordinator's trace uploader. Follows GitLab
//! Runner 19: per stream, UTF-8 repair → masked phrases → URL parameters → token prefixes →
//! timestamps, then one shared, file-backed buffer with `output_limit` and a CRC32.

mod banner;
mod buffer;
pub mod invariant;
mod masker;
mod pipeline;
mod sanitize;
mod stage;
mod timestamps;
mod utf8;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

pub use banner::RunnerBanner;
use buffer::TraceBuffer;
use pipeline::{Pipeline, Rules, CHUNK};

/// What a job's trace needs to know. Built by the manager from the job payload and the runner
/// config. `Debug` does not show the masked phrases.
#[derive(Clone, Default)]
pub struct TraceSettings {
    /// `output_limit` in bytes (GitLab Runner default 4 MiB); 0 means no limit.
    pub limit_bytes: usize,
    /// Values to replace with `[MASKED]` (masked variables, the job token).
    pub masked_phrases: Vec<String>,
    /// Token prefixes whose following `[A-Za-z0-9._=-]` run is masked (job's
    /// `features.token_mask_prefixes`; GitLab's defaults are always added).
    pub token_prefixes: Vec<String>,
    /// Prefix each line with a timestamp and stream id (FF_TIMESTAMPS, on by default).
    pub timestamps: bool,
}

impl fmt::Debug for TraceSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceSettings")
            .field("limit_bytes", &self.limit_bytes)
            .field(
                "masked_phrases",
                &format_args!("<{} hidden>", self.masked_phrases.len()),
            )
            .field("token_prefixes", &self.token_prefixes)
            .field("timestamps", &self.timestamps)
            .finish()
    }
}

/// Which output of a process a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Standard output (`O`).
    Stdout,
    /// Standard error (`E`).
    Stderr,
}

/// The stream id of the runner's own lines (GitLab Runner: 00 = executor).
pub const RUNNER_STREAM: u8 = 0;
/// The stream id of the job's script output (GitLab Runner: 01 = work).
pub const WORK_STREAM: u8 = 1;

/// A job's trace. Cheap to clone (shared); created by the manager when a job is received and
/// dropped after its final update, which removes its temp file.
#[derive(Clone)]
pub struct JobTrace {
    shared: Arc<Shared>,
}

struct Shared {
    /// A plain mutex: stream tasks append short, already-processed slices and the uploader reads
    /// at most 1 MiB every few seconds, so contention is negligible; never held across `.await`.
    buffer: Mutex<TraceBuffer>,
    changed: tokio::sync::watch::Sender<u64>,
    rules: Rules,
}

impl JobTrace {
    /// A new, empty trace backed by an anonymous temp file.
    pub fn new(settings: TraceSettings) -> std::io::Result<JobTrace> {
        JobTrace::build(settings, pipeline::system_clock, None)
    }

    /// A new, empty trace whose temp file is made in `dir` (`None`: the system temp directory).
    pub fn new_in(
        settings: TraceSettings,
        dir: Option<&std::path::Path>,
    ) -> std::io::Result<JobTrace> {
        JobTrace::build(settings, pipeline::system_clock, dir)
    }

    /// A finished trace holding exactly the bytes of the file at `path` (a trace kept in the
    /// state directory): masking, timestamps and `output_limit` were applied when it was first
    /// written. Blocking (reads the file).
    pub fn restore(
        path: &std::path::Path,
        dir: Option<&std::path::Path>,
    ) -> std::io::Result<JobTrace> {
        use std::io::Read;
        let trace = JobTrace::build(TraceSettings::default(), pipeline::system_clock, dir)?;
        let mut file = std::fs::File::open(path)?;
        let mut chunk = vec![0; 64 * 1024];
        loop {
            let n = file.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            trace.append(&chunk[..n]);
        }
        trace.finish();
        Ok(trace)
    }

    #[cfg(test)]
    fn with_clock(settings: TraceSettings, clock: timestamps::Clock) -> std::io::Result<JobTrace> {
        JobTrace::build(settings, clock, None)
    }

    fn build(
        settings: TraceSettings,
        clock: timestamps::Clock,
        dir: Option<&std::path::Path>,
    ) -> std::io::Result<JobTrace> {
        let rules = Rules::new(&settings, clock).map_err(|e| {
            std::io::Error::other(format!("compiling the trace's masking rules: {e}"))
        })?;
        Ok(JobTrace {
            shared: Arc::new(Shared {
                buffer: Mutex::new(TraceBuffer::new_in(settings.limit_bytes, dir)?),
                changed: tokio::sync::watch::channel(0).0,
                rules,
            }),
        })
    }

    /// A writer for one output stream of a process (masking and line framing hold per stream).
    /// The owner must `flush` it (or drop it, which flushes) when the stream ends, and before
    /// `finish`.
    pub fn stream(&self, id: u8, kind: StreamKind) -> TraceStream {
        TraceStream {
            trace: self.clone(),
            pipeline: self.shared.rules.pipeline(id, kind),
        }
    }

    /// Appends a whole line from the runner itself (stream 00, stdout, masked like job output);
    /// `\n` is added.
    pub fn runner_line(&self, text: &str) {
        let mut pipeline = self
            .shared
            .rules
            .pipeline(RUNNER_STREAM, StreamKind::Stdout);
        let mut line = String::with_capacity(text.len() + 1);
        line.push_str(text);
        line.push('\n');
        let chunks: Vec<&[u8]> = line.as_bytes().chunks(CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let out = pipeline.run(chunk, i + 1 == chunks.len());
            self.append(out);
        }
    }

    fn lock(&self) -> MutexGuard<'_, TraceBuffer> {
        // A panic elsewhere while appending leaves the buffer consistent enough to keep going.
        self.shared
            .buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn append(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let len = self.lock().append(bytes);
        // Appends from several threads may notify out of order: only ever move forward. Waking
        // costs ~100 ns, so with nobody subscribed the value is only updated.
        let wake = self.shared.changed.receiver_count() > 0;
        self.shared.changed.send_if_modified(|seen| {
            if len > *seen {
                *seen = len;
                wake
            } else {
                false
            }
        });
    }

    /// Bytes stored so far.
    pub fn len(&self) -> u64 {
        self.lock().len()
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `max` stored bytes from `offset` (fewer, or none, at the end).
    pub fn read_at(&self, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
        self.lock().read_at(offset, max)
    }

    /// `crc32:%08x` of every stored byte, and their count.
    pub fn checksum(&self) -> (String, u64) {
        self.lock().checksum()
    }

    /// Notified with the stored length whenever it grows.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// Marks the trace finished: later writes are dropped. Streams are not flushed here; their
    /// owners flush (or drop) them first.
    pub fn finish(&self) {
        self.lock().finish();
    }

    #[cfg(test)]
    fn memory_capacity(&self) -> usize {
        self.lock().memory_capacity()
    }
}

impl fmt::Debug for JobTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobTrace")
            .field("len", &self.len())
            .finish()
    }
}

/// Writes one stream's bytes into the trace. Created by [`JobTrace::stream`], owned by the task
/// that copies the stream; flushed on drop.
pub struct TraceStream {
    trace: JobTrace,
    pipeline: Pipeline,
}

impl TraceStream {
    /// Writes output as produced (any chunking).
    pub fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(CHUNK) {
            let out = self.pipeline.run(chunk, false);
            self.trace.append(out);
        }
    }

    /// Writes out held-back bytes (partial line, possible secret start): the end of the stream.
    /// Writing again afterwards is fine.
    pub fn flush(&mut self) {
        let out = self.pipeline.run(&[], true);
        self.trace.append(out);
    }
}

impl Drop for TraceStream {
    fn drop(&mut self) {
        self.flush();
    }
}

impl fmt::Debug for TraceStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceStream").finish_non_exhaustive()
    }
}
