//! The job trace: everything a job prints, masked, timestamped, limited and stored so the
//! coordinator client can upload it incrementally. Writers are the executor (container output)
//! and the manager (runner lines); the reader is the coordinator's trace uploader.
//!
//! PLACEHOLDER API (skeleton): the real implementation keeps these signatures.

use std::sync::{Arc, Mutex};

/// What a job's trace needs to know.
#[derive(Debug, Clone, Default)]
pub struct TraceSettings {
    /// `output_limit` in bytes.
    pub limit_bytes: usize,
    /// Values to replace with `[MASKED]` (masked variables, the job token).
    pub masked_phrases: Vec<String>,
    /// Token prefixes whose following `[A-Za-z0-9._-]` run is masked (job's
    /// `features.token_mask_prefixes`; GitLab's defaults are always added).
    pub token_prefixes: Vec<String>,
    /// Prefix each line with a timestamp and stream id (FF_TIMESTAMPS, on by default).
    pub timestamps: bool,
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
/// dropped after its final update.
#[derive(Clone)]
pub struct JobTrace {
    inner: Arc<Mutex<Vec<u8>>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl JobTrace {
    /// A new, empty trace.
    pub fn new(_settings: TraceSettings) -> std::io::Result<JobTrace> {
        Ok(JobTrace {
            inner: Arc::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    /// A writer for one output stream of a process (masking holds per stream).
    pub fn stream(&self, _id: u8, _kind: StreamKind) -> TraceStream {
        TraceStream {
            trace: self.clone(),
        }
    }

    /// Appends a whole line from the runner itself (stream 00, stdout); `\n` is added.
    pub fn runner_line(&self, text: &str) {
        self.append(format!("{text}\n").as_bytes());
    }

    fn append(&self, bytes: &[u8]) {
        let mut buf = self.inner.lock().unwrap();
        buf.extend_from_slice(bytes);
        self.changed.send_replace(buf.len() as u64);
    }

    /// Bytes stored so far.
    pub fn len(&self) -> u64 {
        self.inner.lock().unwrap().len() as u64
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `max` stored bytes from `offset`.
    pub fn read_at(&self, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
        let buf = self.inner.lock().unwrap();
        let start = (offset as usize).min(buf.len());
        let end = (start + max).min(buf.len());
        Ok(buf[start..end].to_vec())
    }

    /// `crc32:%08x` of every stored byte, and their count.
    pub fn checksum(&self) -> (String, u64) {
        let buf = self.inner.lock().unwrap();
        (
            format!("crc32:{:08x}", crc32fast::hash(&buf)),
            buf.len() as u64,
        )
    }

    /// Notified with the stored length whenever it grows.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Flushes what writers held back (partial lines, possible secret prefixes).
    pub fn finish(&self) {}
}

/// Writes one stream's bytes into the trace.
pub struct TraceStream {
    trace: JobTrace,
}

impl TraceStream {
    /// Writes output as produced (any chunking).
    pub fn write(&mut self, bytes: &[u8]) {
        self.trace.append(bytes);
    }

    /// Flushes held-back bytes (end of the stream).
    pub fn flush(&mut self) {}
}
