//! Attach and the container's "process": `POST /containers/{id}/attach` with `Upgrade: tcp`
//! answers 101 and hijacks the connection, as dockerd does; what the client writes is the
//! container's stdin (read to its close), what the process prints goes back in Docker's
//! multiplexed framing (`[stream, 0, 0, 0, len BE u32] payload`, `Tty: false`). The process
//! waits for stdin to close when it reads stdin, then prints one line every
//! `Behaviour::line_every` for `run_time` and exits with the behaviour's code.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::state::{ApiError, Attached, Engine};
use super::Behaviour;

/// Frames buffered between the process and a slow reader (back-pressure past it, like a pipe).
const FRAMES_BUFFERED: usize = 64;

/// Stream type byte of stdout in the multiplexed framing.
const STDOUT: u8 = 1;

/// One multiplexed frame.
pub(crate) fn frame(stream: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + payload.len());
    b.put_u8(stream);
    b.put_bytes(0, 3);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// The attach endpoint: registers the stream for the next start and hijacks the connection.
pub(crate) fn attach(
    engine: &Arc<Engine>,
    id: &str,
    mut req: Request,
) -> Result<Response, ApiError> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    if !upgrade {
        // dockerd serves a plain attach too; nothing here uses one, so say so plainly.
        return Err(ApiError::new(
            400,
            "the fake docker engine serves attach only with Upgrade: tcp",
        ));
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(FRAMES_BUFFERED);
    let (stdin_tx, stdin_rx) = watch::channel(false);
    {
        let mut inner = engine.lock();
        let id = inner.resolve(id)?;
        if let Some(c) = inner.containers.get_mut(&id) {
            c.attached = Some(Attached {
                out: out_tx,
                stdin_closed: stdin_rx,
            });
        }
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let stop = engine.stopping();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "fake docker: attach upgrade failed");
                return;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
        let reader = async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            stdin_tx.send_replace(true);
            // Keep the sender alive past EOF so the process sees `true`, not a drop.
            std::future::pending::<()>().await;
        };
        let writer = async move {
            while let Some(f) = out_rx.recv().await {
                if wr.write_all(&f).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = writer => {}
            _ = reader => {}
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONTENT_TYPE, "application/vnd.docker.raw-stream"),
            (header::CONNECTION, "Upgrade"),
            (header::UPGRADE, "tcp"),
        ],
    )
        .into_response())
}

/// Runs a started container's process until it exits or is killed.
pub(crate) fn spawn_process(
    engine: Arc<Engine>,
    id: String,
    behaviour: Behaviour,
    attached: Option<Attached>,
    open_stdin: bool,
    kill: CancellationToken,
) {
    let stop = engine.stopping();
    tokio::spawn(async move {
        let run = run(&engine, behaviour, attached, open_stdin);
        tokio::select! {
            code = run => { engine.exit(&id, code); }
            _ = kill.cancelled() => {}
            _ = stop.cancelled() => {}
        }
    });
}

async fn run(
    engine: &Engine,
    behaviour: Behaviour,
    attached: Option<Attached>,
    open_stdin: bool,
) -> i64 {
    let (out, stdin_closed) = match attached {
        Some(a) => (Some(a.out), Some(a.stdin_closed)),
        None => (None, None),
    };
    if let (true, Some(mut closed)) = (open_stdin, stdin_closed) {
        // A dropped sender (the connection went) also closes stdin.
        let _ = closed.wait_for(|c| *c).await;
    }
    let started = tokio::time::Instant::now();
    let deadline = started + behaviour.run_time;
    if let (Some(every), Some(out)) = (behaviour.line_every, out.as_ref()) {
        let mut line = behaviour.line.clone().into_bytes();
        line.push(b'\n');
        let mut next = started;
        while next <= deadline {
            tokio::time::sleep_until(next).await;
            let f = frame(STDOUT, &line);
            engine
                .output_bytes
                .fetch_add(line.len() as u64, Ordering::Relaxed);
            if out.send(f).await.is_err() {
                // The reader went away; the process still runs to its end.
                break;
            }
            next += every;
        }
    }
    tokio::time::sleep_until(deadline).await;
    behaviour.exit_code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_stream_and_big_endian_length() {
        let f = frame(STDOUT, b"hi\n");
        assert_eq!(&f[..], &[1, 0, 0, 0, 0, 0, 0, 3, b'h', b'i', b'\n']);
    }
}
