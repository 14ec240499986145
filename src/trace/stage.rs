//! What every stage of a trace pipeline shares: the [`Stage`] trait and [`HoldBack`], the bytes a
//! scanning stage keeps between writes. Sits below `pipeline.rs` (which puts the stages in order)
//! and the stages themselves (`utf8.rs`, `masker.rs`, `sanitize.rs`, `timestamps.rs`); imports
//! none of them.

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
