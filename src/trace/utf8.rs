//! Invalid UTF-8 in a stream's output becomes U+FFFD, one per invalid byte (like Go's
//! `encoding.Replacement`, which GitLab Runner uses). A multi-byte character split across writes is
//! held (at most 3 bytes) until it completes. Runs first in a stream, so every later stage sees
//! valid UTF-8 and emits only whole characters.

use super::stage::Stage;

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// The UTF-8 repair stage of one stream.
pub(crate) struct Utf8Sanitizer {
    pending: [u8; 4],
    pending_len: usize,
}

impl Utf8Sanitizer {
    /// A sanitizer for one stream.
    pub(crate) fn new() -> Utf8Sanitizer {
        Utf8Sanitizer {
            pending: [0; 4],
            pending_len: 0,
        }
    }

    /// Resolves the held partial character with the first bytes of `input`; returns how many
    /// input bytes were used.
    fn resolve_pending(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let take = input.len().min(4 - self.pending_len);
        let mut small = [0u8; 8];
        let held = self.pending_len;
        small[..held].copy_from_slice(&self.pending[..held]);
        small[held..held + take].copy_from_slice(&input[..take]);
        let small = &small[..held + take];
        let used = match std::str::from_utf8(small) {
            // The held bytes were a valid start, so the first character is the held one.
            Ok(_) => char_width(small[0]),
            Err(e) if e.valid_up_to() > 0 => char_width(small[0]),
            Err(e) => match e.error_len() {
                Some(n) => {
                    for _ in 0..n {
                        out.extend_from_slice(REPLACEMENT);
                    }
                    self.pending_len = 0;
                    return n.saturating_sub(held);
                }
                None => {
                    // Still incomplete: keep everything.
                    self.pending[held..held + take].copy_from_slice(&input[..take]);
                    self.pending_len += take;
                    return take;
                }
            },
        };
        out.extend_from_slice(&small[..used]);
        self.pending_len = 0;
        used.saturating_sub(held)
    }
}

/// The length of the UTF-8 character that starts with `lead` (a valid lead byte).
fn char_width(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Appends `bytes` to `out` with invalid sequences replaced; returns where an incomplete
/// trailing character starts (`bytes.len()` when there is none, or when `last`).
fn repair(mut bytes: &[u8], out: &mut Vec<u8>, last: bool) -> usize {
    let total = bytes.len();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(_) => {
                out.extend_from_slice(bytes);
                return total;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.extend_from_slice(&bytes[..valid]);
                let n = match e.error_len() {
                    Some(n) => n,
                    None if last => bytes.len() - valid,
                    None => return total - (bytes.len() - valid),
                };
                for _ in 0..n {
                    out.extend_from_slice(REPLACEMENT);
                }
                bytes = &bytes[valid + n..];
            }
        }
    }
}

impl Stage for Utf8Sanitizer {
    fn process(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while self.pending_len > 0 && !input.is_empty() {
            let used = self.resolve_pending(input, out);
            input = &input[used..];
        }
        if self.pending_len > 0 {
            // The input only extended a still incomplete character.
            return;
        }
        let keep = repair(input, out, false);
        let rest = &input[keep..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        let held = self.pending;
        repair(&held[..self.pending_len], out, true);
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = Utf8Sanitizer::new();
        let mut out = Vec::new();
        for c in chunks {
            s.process(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn replaces_invalid_bytes_one_per_byte() {
        let r = "\u{FFFD}";
        let cases: &[(&[u8], String)] = &[
            (b"plain", "plain".into()),
            (b"a\xffb", format!("a{r}b")),
            (b"\xe2\x82A", format!("{r}{r}A")),
            (b"\xc0\x80", format!("{r}{r}")),
            ("é€😀".as_bytes(), "é€😀".into()),
            (b"end\xf0\x9f\x98", format!("end{r}{r}{r}")),
        ];
        for (input, want) in cases {
            assert_eq!(String::from_utf8(run(&[input])).expect("utf8"), *want);
        }
    }

    #[test]
    fn split_characters_are_held_not_replaced() {
        let inputs: &[&[u8]] = &[
            "aé€😀z".as_bytes(),
            b"x\xe2\x82\xffy\xf0\x9f\x98\x80",
            b"\xf0\x9f\x98",
        ];
        for input in inputs {
            let whole = run(&[input]);
            assert!(std::str::from_utf8(&whole).is_ok());
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(run(&[a, b]), whole, "cut {cut} of {input:?}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(run(&bytes), whole);
        }
    }

    #[test]
    fn partial_character_is_held_until_complete() {
        let mut s = Utf8Sanitizer::new();
        let mut out = Vec::new();
        s.process(b"a\xe2\x82", &mut out);
        assert_eq!(out, b"a");
        s.process(b"\xac", &mut out);
        assert_eq!(out, "a€".as_bytes());
    }
}
