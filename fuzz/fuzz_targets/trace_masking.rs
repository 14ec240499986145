//! The trace pipeline's invariant (`flotilla::trace::invariant`, which `src/props.rs` checks
//! too): whatever the output and however it is split into writes, no masked value appears in
//! the stored trace, and the result does not depend on the split.
#![no_main]

use arbitrary::Arbitrary;
use flotilla::trace::invariant::check_masking;
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

fuzz_target!(|case: Case| {
    let phrases: Vec<String> = case
        .phrases
        .iter()
        .take(6)
        .filter_map(|p| phrase(p))
        .collect();
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
    let cuts = case.cuts.iter().take(16).map(|c| usize::from(*c));
    if let Err(violation) = check_masking(&phrases, &output, cuts) {
        panic!("{violation}");
    }
});
