//! Line timestamps (GitLab Runner's FF_TIMESTAMPS format): every line of a stream is prefixed
//! `YYYY-MM-DDTHH:MM:SS.ffffffZ <2-hex stream id><O|E><' '|'+'>`. `+` marks the continuation of a
//! line that was written out before its end: a write holding `\r` (progress bars) is written
//! out at once with a `\n` added, and so is a partial line longer than 8 KiB. Other partial lines
//! wait (up to 8 KiB) for their end or for the stream's flush. Owns only the line framing.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{Datelike, Timelike};

use super::stage::Stage;
use super::StreamKind;

/// Where time comes from (tests pin it).
pub(crate) type Clock = fn() -> SystemTime;

/// A partial line is buffered up to this size before it is written out as is.
const LINE_BUF: usize = 8 * 1024;
/// `2024-05-30T14:30:00.123456Z ` then `01O `.
const TIME_LEN: usize = 28;
const HEADER_LEN: usize = TIME_LEN + 4;

/// The timestamping stage of one stream.
pub(crate) struct Timestamper {
    header: [u8; HEADER_LEN],
    /// The current partial line, header included.
    line: Vec<u8>,
    /// The Unix second the date part of `header` was last formatted for.
    cached_sec: i64,
    clock: Clock,
}

impl Timestamper {
    /// A timestamper for stream `id` of the given kind.
    pub(crate) fn new(id: u8, kind: StreamKind, clock: Clock) -> Timestamper {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut header = *b"0000-00-00T00:00:00.000000Z 00O ";
        header[TIME_LEN] = HEX[usize::from(id >> 4)];
        header[TIME_LEN + 1] = HEX[usize::from(id & 0x0f)];
        header[TIME_LEN + 2] = match kind {
            StreamKind::Stdout => b'O',
            StreamKind::Stderr => b'E',
        };
        Timestamper {
            header,
            line: Vec::new(),
            cached_sec: i64::MIN,
            clock,
        }
    }

    /// Appends a fresh header to `out`; the next one is a new line unless marked otherwise.
    fn stamp(&mut self, out: &mut Vec<u8>) {
        let since = (self.clock)()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let sec = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
        let h = &mut self.header;
        if sec != self.cached_sec {
            if let Some(t) = chrono::DateTime::from_timestamp(sec, 0) {
                let year = u32::try_from(t.year()).unwrap_or(0) % 10_000;
                put_digits(&mut h[0..4], year);
                put_digits(&mut h[5..7], t.month());
                put_digits(&mut h[8..10], t.day());
                put_digits(&mut h[11..13], t.hour());
                put_digits(&mut h[14..16], t.minute());
                put_digits(&mut h[17..19], t.second());
            }
            self.cached_sec = sec;
        }
        put_digits(&mut h[20..26], since.subsec_micros());
        out.extend_from_slice(h);
        h[HEADER_LEN - 1] = b' ';
    }

    /// The next header continues the previous line.
    fn mark_continuation(&mut self) {
        self.header[HEADER_LEN - 1] = b'+';
    }
}

/// Writes `value` as zero-padded decimal digits filling `dst`.
fn put_digits(dst: &mut [u8], mut value: u32) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

impl Stage for Timestamper {
    fn process(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut n = 0;
        let mut newlines = memchr::memchr_iter(b'\n', input);
        if let Some(first) = newlines.next() {
            if self.line.is_empty() {
                self.stamp(out);
            } else {
                out.extend_from_slice(&self.line);
                self.line.clear();
            }
            out.extend_from_slice(&input[..=first]);
            n = first + 1;
            for idx in newlines {
                self.stamp(out);
                out.extend_from_slice(&input[n..=idx]);
                n = idx + 1;
            }
        }
        let rest = &input[n..];
        if rest.is_empty() {
            return;
        }
        let carriage_return = memchr::memchr(b'\r', rest).is_some();
        if carriage_return || rest.len() + self.line.len() > LINE_BUF {
            if self.line.is_empty() {
                self.stamp(out);
            } else {
                out.extend_from_slice(&self.line);
                self.line.clear();
            }
            out.extend_from_slice(rest);
            out.push(b'\n');
            self.mark_continuation();
            return;
        }
        if self.line.is_empty() {
            let mut line = std::mem::take(&mut self.line);
            self.stamp(&mut line);
            self.line = line;
        }
        self.line.extend_from_slice(rest);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.line.is_empty() {
            out.extend_from_slice(&self.line);
            out.push(b'\n');
            self.line.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// 2024-05-30T14:30:00.123456Z
    fn fixed() -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(1_717_079_400_123_456)
    }

    fn run(id: u8, kind: StreamKind, chunks: &[&[u8]]) -> String {
        let mut t = Timestamper::new(id, kind, fixed);
        let mut out = Vec::new();
        for c in chunks {
            t.process(c, &mut out);
        }
        t.finish(&mut out);
        String::from_utf8(out).expect("utf8")
    }

    const TS: &str = "2024-05-30T14:30:00.123456Z";

    #[test]
    fn frames_lines() {
        let cases: &[(u8, StreamKind, &[&[u8]], String)] = &[
            (
                1,
                StreamKind::Stdout,
                &[b"a\nb\n"],
                format!("{TS} 01O a\n{TS} 01O b\n"),
            ),
            (0, StreamKind::Stderr, &[b"x"], format!("{TS} 00E x\n")),
            (
                0x1f,
                StreamKind::Stdout,
                &[b"he", b"llo\nwo", b"rld\n"],
                format!("{TS} 1fO hello\n{TS} 1fO world\n"),
            ),
            (
                1,
                StreamKind::Stdout,
                &[b"10%\r", b"50%\r", b"done\n"],
                format!("{TS} 01O 10%\r\n{TS} 01O+50%\r\n{TS} 01O+done\n"),
            ),
            (
                1,
                StreamKind::Stdout,
                &[b"\n\n"],
                format!("{TS} 01O \n{TS} 01O \n"),
            ),
            (
                1,
                StreamKind::Stdout,
                &[b"a", b"\r", b"b\n"],
                format!("{TS} 01O a\r\n{TS} 01O+b\n"),
            ),
        ];
        for (id, kind, chunks, want) in cases {
            assert_eq!(&run(*id, *kind, chunks), want, "{chunks:?}");
        }
    }

    #[test]
    fn long_partial_line_is_written_out_and_continued() {
        let long = vec![b'x'; LINE_BUF + 1];
        let got = run(1, StreamKind::Stdout, &[b"ab", &long, b"cd\n"]);
        let want = format!(
            "{TS} 01O ab{}\n{TS} 01O+cd\n",
            String::from_utf8(long).expect("ascii")
        );
        assert_eq!(got, want);
    }

    #[test]
    fn real_clock_format() {
        let re = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z 05E hi\n$")
            .expect("regex");
        let mut t = Timestamper::new(5, StreamKind::Stderr, SystemTime::now);
        let mut out = Vec::new();
        t.process(b"hi\n", &mut out);
        let s = String::from_utf8(out).expect("utf8");
        assert!(re.is_match(&s), "{s:?}");
    }
}
