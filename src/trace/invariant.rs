//! The masking invariant, in one place for the property test (`src/props.rs`) and the fuzz
//! target (`fuzz/fuzz_targets/trace_masking.rs`): whatever the output and however it is split
//! into writes, no masked value appears in the stored trace, and the stored trace does not
//! depend on the split.

use super::{JobTrace, StreamKind, TraceSettings, WORK_STREAM};

/// How a trace broke the masking invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskingViolation {
    /// Writing the output in pieces stored another trace than writing it whole.
    #[error("the split changed the trace: {split:?} (split) != {whole:?} (whole)")]
    SplitChanged {
        /// The trace of the output written in pieces (lossy UTF-8).
        split: String,
        /// The trace of the output written at once (lossy UTF-8).
        whole: String,
    },
    /// A masked value reached the stored trace.
    #[error("{phrase:?} leaked in {trace:?}")]
    Leaked {
        /// The value.
        phrase: String,
        /// The stored trace (lossy UTF-8).
        trace: String,
    },
}

/// The stored trace of `chunks` written one after another to the work stream of a fresh trace
/// (no size limit, no timestamps) masking `phrases`.
pub fn masked_trace(phrases: &[String], chunks: &[&[u8]]) -> Vec<u8> {
    let trace = JobTrace::new(TraceSettings {
        limit_bytes: 0,
        masked_phrases: phrases.to_vec(),
        token_prefixes: Vec::new(),
        timestamps: false,
    })
    .expect("a trace without a size limit");
    let mut stream = trace.stream(WORK_STREAM, StreamKind::Stdout);
    for c in chunks {
        stream.write(c);
    }
    stream.flush();
    trace.finish();
    trace.read_at(0, usize::MAX).expect("read the stored trace")
}

/// `output` cut at each of `cuts` (each taken modulo `output.len() + 1`, in increasing order).
pub fn split_at_cuts(output: &[u8], cuts: impl IntoIterator<Item = usize>) -> Vec<&[u8]> {
    let mut at: Vec<usize> = cuts.into_iter().map(|c| c % (output.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for c in at {
        chunks.push(&output[start..c]);
        start = c;
    }
    chunks.push(&output[start..]);
    chunks
}

/// Checks the invariant for `output` masking `phrases`, written whole and cut at `cuts` (see
/// [`split_at_cuts`]).
pub fn check_masking(
    phrases: &[String],
    output: &[u8],
    cuts: impl IntoIterator<Item = usize>,
) -> Result<(), MaskingViolation> {
    let split = masked_trace(phrases, &split_at_cuts(output, cuts));
    let whole = masked_trace(phrases, &[output]);
    if split != whole {
        return Err(MaskingViolation::SplitChanged {
            split: String::from_utf8_lossy(&split).into_owned(),
            whole: String::from_utf8_lossy(&whole).into_owned(),
        });
    }
    let text = String::from_utf8_lossy(&split);
    match first_leak(phrases, &text) {
        Some(p) => Err(MaskingViolation::Leaked {
            phrase: p.clone(),
            trace: text.into_owned(),
        }),
        None => Ok(()),
    }
}

/// The first of `phrases` that `text` holds.
fn first_leak<'p>(phrases: &'p [String], text: &str) -> Option<&'p String> {
    phrases.iter().find(|p| text.contains(p.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_are_reduced_and_sorted() {
        // 9 is 2 modulo 7.
        let chunks = split_at_cuts(b"abcdef", [9, 1, 6, 4]);
        assert_eq!(chunks, [&b"a"[..], b"b", b"cd", b"ef", b""]);
        assert_eq!(split_at_cuts(b"", []), [&b""[..]]);
    }

    #[test]
    fn a_masked_value_passes_and_a_leak_is_named() {
        let phrases = vec!["s3cr$t".to_string(), "other".to_string()];
        assert_eq!(check_masking(&phrases, b"x s3cr$t y\n", [3, 4, 5]), Ok(()));
        assert_eq!(first_leak(&phrases, "a s3cr$t b"), Some(&phrases[0]));
        assert_eq!(first_leak(&phrases, "a [MASKED] b"), None);
    }
}
