//! Moving a container's attached output into the job's trace in batches: every frame already
//! received when one arrives is taken too (without waiting), and consecutive frames of one stream
//! are written to the trace as one piece, so the trace's pipeline, lock and change notification
//! run once per batch rather than once per frame. Frames of the two streams keep their order: a
//! batch ends where the stream changes.

use crate::trace::TraceStream;
use bollard::container::LogOutput;
use futures_util::{FutureExt, Stream, StreamExt};

/// Most bytes gathered into one write.
const BATCH: usize = 256 * 1024;

/// Which of the container's streams a frame belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Out,
    Err,
}

/// Copies `output` into `stdout` and `stderr` until it ends; the first read error ends it.
pub(super) async fn pump<S>(
    mut output: S,
    stdout: &mut TraceStream,
    stderr: &mut TraceStream,
) -> Result<(), bollard::errors::Error>
where
    S: Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
{
    let mut batch = Batch {
        pending: Vec::new(),
        kind: Kind::Out,
        stdout,
        stderr,
    };
    while let Some(first) = output.next().await {
        let mut item = first;
        let mut ended = false;
        // This frame, then whatever is ready now, up to BATCH bytes.
        loop {
            match item {
                Ok(LogOutput::StdErr { message }) => batch.add(Kind::Err, &message),
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    batch.add(Kind::Out, &message)
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    batch.write();
                    return Err(e);
                }
            }
            if batch.pending.len() >= BATCH {
                break;
            }
            match output.next().now_or_never() {
                Some(Some(next)) => item = next,
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        batch.write();
        if ended {
            break;
        }
    }
    Ok(())
}

/// Bytes of one stream gathered for one write.
struct Batch<'a> {
    pending: Vec<u8>,
    kind: Kind,
    stdout: &'a mut TraceStream,
    stderr: &'a mut TraceStream,
}

impl Batch<'_> {
    /// Adds a frame; a frame of the other stream first writes what is gathered.
    fn add(&mut self, kind: Kind, bytes: &[u8]) {
        if kind != self.kind {
            self.write();
            self.kind = kind;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// Writes what is gathered to its stream.
    fn write(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.kind {
            Kind::Out => self.stdout.write(&self.pending),
            Kind::Err => self.stderr.write(&self.pending),
        }
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{JobTrace, StreamKind, TraceSettings, WORK_STREAM};
    use bytes::Bytes;

    fn settings() -> TraceSettings {
        TraceSettings {
            limit_bytes: 0,
            masked_phrases: vec!["s3cr3t".into()],
            token_prefixes: Vec::new(),
            timestamps: false,
        }
    }

    #[tokio::test]
    async fn frames_are_written_in_order_and_split_secrets_are_still_masked() {
        let frames = vec![
            Ok(LogOutput::StdOut {
                message: Bytes::from_static(b"one s3"),
            }),
            Ok(LogOutput::StdOut {
                message: Bytes::from_static(b"cr3t\ntwo\n"),
            }),
            Ok(LogOutput::StdErr {
                message: Bytes::from_static(b"warn\n"),
            }),
            Ok(LogOutput::StdOut {
                message: Bytes::from_static(b"three\n"),
            }),
        ];
        let trace = JobTrace::new(settings()).unwrap();
        let mut out = trace.stream(WORK_STREAM, StreamKind::Stdout);
        let mut err = trace.stream(WORK_STREAM, StreamKind::Stderr);
        pump(futures_util::stream::iter(frames), &mut out, &mut err)
            .await
            .unwrap();
        out.flush();
        err.flush();
        let text = String::from_utf8_lossy(&trace.read_at(0, 1 << 20).unwrap()).to_string();
        assert_eq!(text, "one [MASKED]\ntwo\nwarn\nthree\n");
    }

    #[tokio::test]
    async fn a_read_error_ends_the_pump_after_what_came_before() {
        let frames = vec![
            Ok(LogOutput::StdOut {
                message: Bytes::from_static(b"before\n"),
            }),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: "gone".into(),
            }),
        ];
        let trace = JobTrace::new(settings()).unwrap();
        let mut out = trace.stream(WORK_STREAM, StreamKind::Stdout);
        let mut err = trace.stream(WORK_STREAM, StreamKind::Stderr);
        let result = pump(futures_util::stream::iter(frames), &mut out, &mut err).await;
        assert!(result.is_err());
        out.flush();
        assert!(String::from_utf8_lossy(&trace.read_at(0, 1 << 20).unwrap()).starts_with("before"));
    }
}
