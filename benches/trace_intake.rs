//! Trace intake throughput: 200 MB of 100-byte lines through one stream with timestamps and a few
//! masked phrases, stored without a limit. Run with `cargo bench --bench trace_intake`.
// Benchmarks time the wall clock on purpose (clippy.toml bans std's Instant in src/).
#![allow(clippy::disallowed_types)]

use std::time::Instant;

use flotilla::trace::{JobTrace, StreamKind, TraceSettings, WORK_STREAM};

const TOTAL: usize = 200 * 1000 * 1000;
const LINE: usize = 100;

fn main() {
    let settings = TraceSettings {
        limit_bytes: 0,
        masked_phrases: vec![
            "hunter2-password".into(),
            "glcbt-64_JobTokenValue123".into(),
            "s3cr3t".into(),
            "AKIAIOSFODNN7EXAMPLE".into(),
        ],
        token_prefixes: vec!["acme_".into()],
        timestamps: true,
    };
    let mut line = format!(
        "{:0>width$}\n",
        "step 42: compiling crate s3cr3t ok",
        width = LINE - 1
    )
    .into_bytes();
    line.truncate(LINE);
    let lines = TOTAL / LINE;

    for round in 1..=3 {
        let trace = JobTrace::new(settings.clone()).expect("trace");
        // Like the uploader: a subscriber exists, so every append wakes the watch.
        let _uploader = trace.subscribe();
        let mut stream = trace.stream(WORK_STREAM, StreamKind::Stdout);
        let start = Instant::now();
        for _ in 0..lines {
            stream.write(&line);
        }
        stream.flush();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "round {round}: {} MB in, {} MB stored, {:.2} s, {:.0} MB/s intake",
            TOTAL / 1_000_000,
            trace.len() / 1_000_000,
            secs,
            TOTAL as f64 / 1e6 / secs
        );
    }
}
