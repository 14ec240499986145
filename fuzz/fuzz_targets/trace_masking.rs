//! The trace pipeline's invariant: whatever the output and however it is split into writes, no
//! masked value appears in the stored trace, and the result does not depend on the split.
#![no_main]

use arbitrary::Arbitrary;
use flotilla::trace::{JobTrace, StreamKind, TraceSettings, WORK_STREAM};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Case {
    /// Masked values, drawn from an alphabet without the letters of `[MASKED]` so that a mask
    /// never spells a value by itself.
    phrases: Vec<Vec<u8>>,
    output: Vec<u8>,
    cuts: Vec<u16>,
}

const ALPHABET: &[u8] = b"abcz019$*.()|+?^\\{}'\"; &-_/:=\n\r\t";

fn phrase(raw: &[u8]) -> Option<String> {
    let s: String = raw
        .iter()
        .take(24)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    (s.trim().len() >= 3 && !s.contains(['\n', '\r'])).then_some(s)
}

fn run(phrases: &[String], chunks: &[&[u8]]) -> Vec<u8> {
    let trace = JobTrace::new(TraceSettings {
        limit_bytes: 0,
        masked_phrases: phrases.to_vec(),
        token_prefixes: Vec::new(),
        timestamps: false,
    })
    .expect("trace");
    let mut stream = trace.stream(WORK_STREAM, StreamKind::Stdout);
    for c in chunks {
        stream.write(c);
    }
    stream.flush();
    trace.finish();
    trace.read_at(0, usize::MAX).expect("read")
}

fuzz_target!(|case: Case| {
    let phrases: Vec<String> = case.phrases.iter().take(6).filter_map(|p| phrase(p)).collect();
    if phrases.is_empty() {
        return;
    }
    // Weave the phrases into the output so that matches are frequent.
    let mut output = Vec::new();
    for (i, b) in case.output.iter().take(4096).enumerate() {
        if b % 7 == 0 {
            output.extend_from_slice(phrases[i % phrases.len()].as_bytes());
        } else {
            output.push(*b);
        }
    }
    let mut cuts: Vec<usize> = case
        .cuts
        .iter()
        .take(16)
        .map(|c| *c as usize % (output.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for c in cuts {
        chunks.push(&output[start..c]);
        start = c;
    }
    chunks.push(&output[start..]);
    let split = run(&phrases, &chunks);
    let whole = run(&phrases, &[&output]);
    assert_eq!(split, whole, "the split changed the trace");
    let text = String::from_utf8_lossy(&split);
    for p in &phrases {
        assert!(!text.contains(p.as_str()), "{p:?} leaked: {text:?}");
    }
});
