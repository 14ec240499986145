//! A fake Docker Engine for measuring the manager at scale on one machine: the Engine API
//! (v1.41 shapes, status codes and error bodies) over HTTP on a Unix socket — the socket the
//! fake GCE's per-VM mutual-TLS proxies forward to (`FakeGceOptions::docker_socket`), or a
//! `[runners.docker] host = "unix://…"` for the `docker` executor. Containers run no process:
//! each "runs" for its image's [`Behaviour`] (run time, one output line every so often, exit
//! code), streamed through a hijacked attach in Docker's multiplexed framing. This file holds
//! the public handle and options; the model is `state.rs`, the routes `routes.rs`, attach and
//! the container "process" `attach.rs`, images `images.rs`, volumes and networks `objects.rs`.

mod attach;
mod images;
mod objects;
mod routes;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use tokio_util::sync::CancellationToken;

use state::Engine;

/// What a container of an image does once started (and, when it reads stdin, once its stdin
/// is closed, as a shell reading its script does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// From start (or stdin closed) to exit.
    pub run_time: Duration,
    /// One output line every this long while running; `None`: no output.
    pub line_every: Option<Duration>,
    /// The line printed (a newline is added).
    pub line: String,
    /// The exit code.
    pub exit_code: i64,
}

impl Default for Behaviour {
    /// Exits 0 at once without output.
    fn default() -> Self {
        Self {
            run_time: Duration::ZERO,
            line_every: None,
            line: "fake docker output".to_owned(),
            exit_code: 0,
        }
    }
}

/// How to start a [`FakeDocker`].
#[derive(Debug, Clone, Default)]
pub struct FakeDockerOptions {
    /// Images present from the start (`name:tag`; a name without tag means `:latest`).
    pub images: Vec<String>,
    /// Per image (normalized `name:tag`), what its containers do; others use `default`.
    pub behaviours: HashMap<String, Behaviour>,
    /// What containers of other images do.
    pub default: Behaviour,
    /// How long each container start takes to answer (dockerd's under a burst of starts).
    pub start_latency: std::time::Duration,
}

/// Counters of what the engine did, for benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DockerStats {
    /// Containers created.
    pub created: u64,
    /// Container starts.
    pub started: u64,
    /// Containers running now.
    pub running: u64,
    /// Most containers running at once.
    pub peak_running: u64,
    /// Containers that exist now (any state).
    pub containers: u64,
    /// Volumes that exist now.
    pub volumes: u64,
    /// Networks that exist now.
    pub networks: u64,
    /// Output bytes written to attach streams.
    pub output_bytes: u64,
    /// Most container starts being answered at once.
    pub peak_starts_in_flight: u64,
    /// Connections accepted on the socket (a client that reuses connections makes few).
    pub connections: u64,
}

/// A running fake Docker Engine on a Unix socket in its own temporary directory. Dropping it
/// stops the server and removes the socket.
#[derive(Debug)]
pub struct FakeDocker {
    engine: Arc<Engine>,
    socket: PathBuf,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl FakeDocker {
    /// Starts the engine; its socket is [`FakeDocker::socket`].
    pub async fn start(opts: FakeDockerOptions) -> anyhow::Result<FakeDocker> {
        let dir = tempfile::Builder::new()
            .prefix("fake-docker-")
            .tempdir()
            .context("making the fake docker's directory")?;
        let socket = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket)
            .with_context(|| format!("binding {}", socket.display()))?;
        let engine = Arc::new(Engine::new(opts));
        let stop = CancellationToken::new();
        let app = routes::router(engine.clone());
        let server_stop = stop.clone();
        let counted = engine.clone();
        let listener = listener.tap_io(move |_| {
            counted.connections.fetch_add(1, Ordering::Relaxed);
        });
        tokio::spawn(async move {
            let server =
                axum::serve(listener, app).with_graceful_shutdown(server_stop.cancelled_owned());
            if let Err(e) = server.await {
                tracing::error!(error = %e, "fake docker: server failed");
            }
        });
        engine.set_stop(stop.clone());
        tracing::info!(socket = %socket.display(), "fake docker: listening");
        Ok(FakeDocker {
            engine,
            socket,
            stop,
            _dir: dir,
        })
    }

    /// The Unix socket the engine listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix:///…/docker.sock`, for `[runners.docker] host`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// What the engine did so far.
    pub fn stats(&self) -> DockerStats {
        self.engine.stats()
    }

    /// Names of the containers that exist now.
    pub fn container_names(&self) -> Vec<String> {
        self.engine.container_names()
    }

    /// Stops the server and every running container's "process".
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

impl Drop for FakeDocker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `name` with `:latest` when it has neither tag nor digest, and without Docker Hub's implied
/// `docker.io/` and `library/` prefixes (as the engine stores references).
pub(crate) fn normalize_image(name: &str) -> String {
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_image;

    #[test]
    fn image_names_normalize_as_the_engine_stores_them() {
        assert_eq!(normalize_image("busybox"), "busybox:latest");
        assert_eq!(normalize_image("docker.io/library/alpine:3"), "alpine:3");
        assert_eq!(
            normalize_image("localhost:5000/team/img"),
            "localhost:5000/team/img:latest"
        );
        assert_eq!(normalize_image("a/b@sha256:00"), "a/b@sha256:00");
    }
}
