//! Tests of the whole trace: streams through storage, as the executor and uploader use it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

const TS: &str = "2024-05-30T14:30:00.123456Z";

fn fixed() -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(1_717_079_400_123_456)
}

fn settings(phrases: &[&str], timestamps: bool) -> TraceSettings {
    TraceSettings {
        limit_bytes: 0,
        masked_phrases: phrases.iter().map(|s| s.to_string()).collect(),
        token_prefixes: vec!["acme_".into()],
        timestamps,
    }
}

fn trace(phrases: &[&str], timestamps: bool) -> JobTrace {
    JobTrace::with_clock(settings(phrases, timestamps), fixed).expect("trace")
}

fn stored(t: &JobTrace) -> String {
    String::from_utf8(t.read_at(0, usize::MAX).expect("read")).expect("utf8")
}

fn through(phrases: &[&str], timestamps: bool, chunks: &[&[u8]]) -> String {
    let t = trace(phrases, timestamps);
    let mut s = t.stream(WORK_STREAM, StreamKind::Stdout);
    for c in chunks {
        s.write(c);
    }
    s.flush();
    stored(&t)
}

#[test]
fn secrets_split_at_every_position_never_appear() {
    let secret = "Sup3r$ecret";
    // Token-looking values are made at run time (no such literal in the tree).
    let job_tail = format!("64_{}", crate::testing::random_alnum(16));
    let job_token = format!("glcbt-{job_tail}");
    let job_token = job_token.as_str();
    let pat_tail = crate::testing::random_alnum(20);
    let input = format!(
        "echo {secret}\ncurl https://gitlab/api?private_token={secret}x&a=1\n\
         token {job_token} glpat-{pat_tail} acme_XYZ\nlast {secret}"
    );
    for timestamps in [false, true] {
        let whole = through(&[secret, job_token], timestamps, &[input.as_bytes()]);
        for cut in 0..=input.len() {
            let (a, b) = input.as_bytes().split_at(cut);
            let got = through(&[secret, job_token], timestamps, &[a, b]);
            assert_eq!(got, whole, "cut {cut}");
            for leak in [secret, job_tail.as_str(), pat_tail.as_str(), "XYZ"] {
                assert!(!got.contains(leak), "{leak} leaked at cut {cut}: {got:?}");
            }
        }
    }
    let plain = through(&[secret, job_token], false, &[input.as_bytes()]);
    assert_eq!(
        plain,
        "echo [MASKED]\ncurl https://gitlab/api?private_token=[MASKED]&a=1\n\
         token [MASKED] glpat-[MASKED] acme_[MASKED]\nlast [MASKED]"
    );
}

#[test]
fn overlapping_phrases_are_masked_whole() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["pass", "password123"],
            "a password123 b pass\n",
            "a [MASKED] b [MASKED]\n",
        ),
        (&["password123", "pass"], "password12\n", "[MASKED]word12\n"),
        (&["abcd", "cdef"], "abcdef\n", "[MASKED]\n"),
    ];
    for (phrases, input, want) in cases {
        assert_eq!(&through(phrases, false, &[input.as_bytes()]), want);
        let bytes: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
        assert_eq!(&through(phrases, false, &bytes), want, "byte by byte");
    }
}

#[test]
fn timestamps_and_continuations() {
    let got = through(
        &[],
        true,
        &[b"one\ntw", b"o\n", b"50%\r", b"100%\n", b"no newline"],
    );
    assert_eq!(
        got,
        format!("{TS} 01O one\n{TS} 01O two\n{TS} 01O 50%\r\n{TS} 01O+100%\n{TS} 01O no newline\n")
    );
    let t = JobTrace::new(settings(&[], true)).expect("trace");
    t.runner_line("Running with flotilla");
    let mut err = t.stream(0x0f, StreamKind::Stderr);
    err.write(b"service says hi\n");
    let re =
        regex::Regex::new(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z [0-9a-f]{2}[OE][ +].*\n)+$")
            .expect("regex");
    let text = stored(&t);
    assert!(re.is_match(&text), "{text:?}");
    assert!(text.contains(" 00O Running with flotilla\n"));
    assert!(text.contains(" 0fE service says hi\n"));
}

#[test]
fn runner_lines_are_masked() {
    let t = trace(&["hunter2"], false);
    t.runner_line("password is hunter2 and glrt-abc");
    assert_eq!(stored(&t), "password is [MASKED] and glrt-[MASKED]\n");
}

#[test]
fn invalid_utf8_is_replaced_even_when_split() {
    let input: &[u8] = b"ok \xff \xe2\x82\xac \xf0\x9f\x98\x80\n";
    let want = "ok \u{FFFD} € 😀\n";
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(
            through(&["€"], false, &[a, b]),
            want.replace('€', "[MASKED]")
        );
        assert_eq!(through(&[], false, &[a, b]), want, "cut {cut}");
    }
}

#[test]
fn limit_notice_once_and_checksum() {
    let mut s = settings(&[], true);
    s.limit_bytes = 100;
    let t = JobTrace::with_clock(s, fixed).expect("trace");
    let mut out = t.stream(WORK_STREAM, StreamKind::Stdout);
    for _ in 0..10 {
        out.write(b"0123456789012345678901234567890123456789\n");
    }
    out.flush();
    let text = stored(&t);
    let notice = "\n\x1b[33;1mJob's log exceeded limit of 100 bytes.\n\
                  Job execution will continue but no more output will be collected.\x1b[0;m\n";
    assert_eq!(text.matches(notice).count(), 1);
    assert!(text.ends_with(notice));
    assert_eq!(text.len() - notice.len(), 100);
    let (sum, size) = t.checksum();
    assert_eq!(size, text.len() as u64);
    assert_eq!(t.len(), size);
    assert_eq!(
        sum,
        format!("crc32:{:08x}", crc32fast::hash(text.as_bytes()))
    );
}

#[test]
fn finish_drops_later_writes_and_drop_flushes() {
    let t = trace(&[], false);
    {
        let mut s = t.stream(WORK_STREAM, StreamKind::Stdout);
        s.write(b"partial");
    }
    assert_eq!(stored(&t), "partial");
    t.finish();
    t.runner_line("late");
    assert_eq!(stored(&t), "partial");
}

#[test]
fn a_job_printing_little_holds_a_small_buffer() {
    let t = trace(&["s3cret"], true);
    t.runner_line("one line of a short job");
    assert!(t.memory_capacity() < 4096, "{}", t.memory_capacity());
}

#[test]
fn memory_stays_bounded() {
    let t = trace(&["s3cret"], true);
    let mut s = t.stream(WORK_STREAM, StreamKind::Stdout);
    let block: Vec<u8> = b"some output line with s3cret inside it\n"
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    for _ in 0..50 {
        s.write(&block);
    }
    s.flush();
    assert!(t.len() > 50 << 20);
    assert!(t.memory_capacity() <= 64 * 1024, "{}", t.memory_capacity());
    assert!(
        s.pipeline.scratch_capacity() <= 2 << 20,
        "{}",
        s.pipeline.scratch_capacity()
    );
    let tail = t.read_at(t.len() - 100, 200).expect("read");
    assert_eq!(tail.len(), 100);
    assert!(!String::from_utf8_lossy(&tail).contains("s3cret"));
}

#[test]
fn concurrent_streams_keep_lines_whole() {
    let t = trace(&[], true);
    let writers: Vec<_> = [StreamKind::Stdout, StreamKind::Stderr]
        .into_iter()
        .map(|kind| {
            let t = t.clone();
            std::thread::spawn(move || {
                let mut s = t.stream(WORK_STREAM, kind);
                for i in 0..2000 {
                    s.write(format!("{kind:?} line {i}\n").as_bytes());
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let text = stored(&t);
    assert_eq!(text.lines().count(), 4000);
    for line in text.lines() {
        let ok = line.starts_with(&format!("{TS} 01O Stdout line "))
            || line.starts_with(&format!("{TS} 01E Stderr line "));
        assert!(ok, "{line:?}");
    }
}

#[tokio::test]
async fn subscribers_see_growth() {
    let t = trace(&[], false);
    let mut rx = t.subscribe();
    let writer = t.clone();
    let task = tokio::spawn(async move { writer.runner_line("hello") });
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|len| *len == 6))
        .await
        .expect("notified in time")
        .expect("sender alive");
    task.await.expect("task");
}

#[test]
fn debug_hides_secrets() {
    let s = settings(&["topsecretvalue"], true);
    assert!(!format!("{s:?}").contains("topsecretvalue"));
    let t = JobTrace::new(s).expect("trace");
    assert!(!format!("{t:?}").contains("topsecretvalue"));
}
