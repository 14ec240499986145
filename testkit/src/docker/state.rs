//! The fake engine's model: containers (with their state, watched by waiters), images,
//! volumes and networks, behind one lock, and the engine's answers as typed errors carrying
//! Docker's status codes and messages. Owns the data and its rules; no HTTP.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{normalize_image, Behaviour, DockerStats, FakeDockerOptions};

/// An engine answer other than success: Docker's status code and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn no_container(id: &str) -> Self {
        Self::new(404, format!("No such container: {id}"))
    }
}

/// A container's state as `State.Status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Created,
    Running,
    Exited,
    Removed,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Removed => "removing",
        }
    }
}

/// What waiters watch: the status, the exit code and how many times it exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Life {
    pub status: Status,
    pub exit_code: i64,
    pub exits: u64,
}

/// The attach that the next start streams to: frames out, and whether stdin was closed.
#[derive(Debug)]
pub(crate) struct Attached {
    pub out: mpsc::Sender<Bytes>,
    pub stdin_closed: watch::Receiver<bool>,
}

/// One container.
#[derive(Debug)]
pub(crate) struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub config: serde_json::Value,
    pub open_stdin: bool,
    pub volumes: Vec<String>,
    pub network: Option<String>,
    pub life: watch::Sender<Life>,
    pub attached: Option<Attached>,
    pub kill: CancellationToken,
    pub created_at: String,
    pub started_at: String,
    pub finished_at: String,
}

/// One volume.
#[derive(Debug, Clone)]
pub(crate) struct Volume {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub created_at: String,
}

/// One network.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub labels: HashMap<String, String>,
    pub created_at: String,
}

/// Everything behind the lock.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub containers: HashMap<String, Container>,
    pub names: HashMap<String, String>,
    pub images: HashSet<String>,
    pub volumes: HashMap<String, Volume>,
    pub networks: HashMap<String, Network>,
}

/// The engine: model, options and counters.
#[derive(Debug)]
pub(crate) struct Engine {
    inner: Mutex<Inner>,
    pub opts: FakeDockerOptions,
    stop: OnceLock<CancellationToken>,
    pub created: AtomicU64,
    pub started: AtomicU64,
    pub running: AtomicU64,
    pub peak_running: AtomicU64,
    pub output_bytes: AtomicU64,
    pub starts_in_flight: AtomicU64,
    pub peak_starts_in_flight: AtomicU64,
    pub connections: AtomicU64,
}

/// A 64-hex-digit id, as the engine makes them.
pub(crate) fn new_id() -> String {
    let a: u128 = rand::random();
    let b: u128 = rand::random();
    format!("{a:032x}{b:032x}")
}

/// Now in RFC 3339 with nanoseconds, as the engine writes times.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A container start being answered; counted in [`Engine::starts_in_flight`] until dropped (also
/// when the client goes away mid-answer).
pub(crate) struct StartInFlight<'a>(&'a Engine);

impl Drop for StartInFlight<'_> {
    fn drop(&mut self) {
        self.0.starts_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Engine {
    /// Counts a container start until the guard drops, keeping the peak.
    pub(crate) fn start_in_flight(&self) -> StartInFlight<'_> {
        let now = self.starts_in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_starts_in_flight.fetch_max(now, Ordering::Relaxed);
        StartInFlight(self)
    }

    pub(crate) fn new(opts: FakeDockerOptions) -> Self {
        let images = opts.images.iter().map(|i| normalize_image(i)).collect();
        Self {
            inner: Mutex::new(Inner {
                images,
                ..Default::default()
            }),
            opts,
            stop: OnceLock::new(),
            created: AtomicU64::new(0),
            started: AtomicU64::new(0),
            running: AtomicU64::new(0),
            peak_running: AtomicU64::new(0),
            output_bytes: AtomicU64::new(0),
            starts_in_flight: AtomicU64::new(0),
            peak_starts_in_flight: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_stop(&self, stop: CancellationToken) {
        let _ = self.stop.set(stop);
    }

    /// Cancelled when the engine shuts down.
    pub(crate) fn stopping(&self) -> CancellationToken {
        self.stop.get().cloned().unwrap_or_default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What a container of `image` does.
    pub(crate) fn behaviour(&self, image: &str) -> Behaviour {
        self.opts
            .behaviours
            .get(image)
            .cloned()
            .unwrap_or_else(|| self.opts.default.clone())
    }

    pub(crate) fn stats(&self) -> DockerStats {
        let inner = self.lock();
        DockerStats {
            created: self.created.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            peak_running: self.peak_running.load(Ordering::Relaxed),
            containers: inner.containers.len() as u64,
            volumes: inner.volumes.len() as u64,
            networks: inner.networks.len() as u64,
            output_bytes: self.output_bytes.load(Ordering::Relaxed),
            peak_starts_in_flight: self.peak_starts_in_flight.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn container_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .lock()
            .containers
            .values()
            .map(|c| c.name.clone())
            .collect();
        out.sort();
        out
    }

    /// Counts a container entering `running`.
    pub(crate) fn note_running(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        let now = self.running.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_running.fetch_max(now, Ordering::Relaxed);
    }

    /// Marks container `id` exited with `code` (if it is running); false when it was not.
    pub(crate) fn exit(&self, id: &str, code: i64) -> bool {
        let mut inner = self.lock();
        let Some(c) = inner.containers.get_mut(id) else {
            return false;
        };
        exit_locked(self, c, code)
    }
}

/// Marks `c` exited with `code` when it runs; false otherwise.
pub(crate) fn exit_locked(engine: &Engine, c: &mut Container, code: i64) -> bool {
    let life = *c.life.borrow();
    if life.status != Status::Running {
        return false;
    }
    c.finished_at = now();
    c.kill.cancel();
    engine.running.fetch_sub(1, Ordering::Relaxed);
    c.life.send_replace(Life {
        status: Status::Exited,
        exit_code: code,
        exits: life.exits + 1,
    });
    true
}

impl Inner {
    /// The id of the container named, or with this id or unique id prefix.
    pub(crate) fn resolve(&self, name_or_id: &str) -> Result<String, ApiError> {
        let key = name_or_id.trim_start_matches('/');
        if self.containers.contains_key(key) {
            return Ok(key.to_owned());
        }
        if let Some(id) = self.names.get(key) {
            return Ok(id.clone());
        }
        let mut found = self.containers.keys().filter(|id| id.starts_with(key));
        match (found.next(), found.next()) {
            (Some(id), None) if !key.is_empty() => Ok(id.clone()),
            (Some(_), Some(_)) => Err(ApiError::new(
                400,
                format!("multiple IDs found with provided prefix: {key}"),
            )),
            _ => Err(ApiError::no_container(name_or_id)),
        }
    }

    /// The container named, or with this id or unique id prefix, with its full id.
    pub(crate) fn container_mut(
        &mut self,
        name_or_id: &str,
    ) -> Result<(String, &mut Container), ApiError> {
        let id = self.resolve(name_or_id)?;
        let c = self
            .containers
            .get_mut(&id)
            .ok_or_else(|| ApiError::no_container(&id))?;
        Ok((id, c))
    }

    /// The network named or with this id (or unique id prefix).
    pub(crate) fn network_id(&self, name_or_id: &str) -> Option<String> {
        if self.networks.contains_key(name_or_id) {
            return Some(name_or_id.to_owned());
        }
        if let Some(n) = self.networks.values().find(|n| n.name == name_or_id) {
            return Some(n.id.clone());
        }
        let mut found = self
            .networks
            .keys()
            .filter(|id| !name_or_id.is_empty() && id.starts_with(name_or_id));
        match (found.next(), found.next()) {
            (Some(id), None) => Some(id.clone()),
            _ => None,
        }
    }
}

/// Whether `labels` pass every `label` filter term (`key` or `key=value`).
pub(crate) fn labels_match(labels: &HashMap<String, String>, terms: &[String]) -> bool {
    terms.iter().all(|t| match t.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(t.as_str()),
    })
}

/// Docker's `filters` query parameter: `{"key":["v",…]}` or the old `{"key":{"v":true}}`.
pub(crate) fn parse_filters(raw: Option<&str>) -> Result<HashMap<String, Vec<String>>, ApiError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(HashMap::new());
    };
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::new(400, format!("invalid filter: {e}")))?;
    let Some(map) = value.as_object() else {
        return Err(ApiError::new(400, "invalid filter: not an object"));
    };
    let mut out = HashMap::new();
    for (k, v) in map {
        let values: Vec<String> = match v {
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            serde_json::Value::Object(o) => o
                .iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .map(|(x, _)| x.clone())
                .collect(),
            _ => return Err(ApiError::new(400, format!("invalid filter '{k}'"))),
        };
        out.insert(k.clone(), values);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_both_spellings_and_labels_match() {
        let f = parse_filters(Some(r#"{"label":["a=1","b"]}"#)).unwrap();
        let old = parse_filters(Some(r#"{"label":{"a=1":true,"b":true}}"#)).unwrap();
        let mut x = f["label"].clone();
        let mut y = old["label"].clone();
        x.sort();
        y.sort();
        assert_eq!(x, y);
        let labels = HashMap::from([("a".into(), "1".into()), ("b".into(), "".into())]);
        assert!(labels_match(&labels, &f["label"]));
        assert!(!labels_match(&labels, &["a=2".to_owned()]));
        assert!(parse_filters(Some("[1]")).is_err());
    }
}
