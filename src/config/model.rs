//! The validated configuration snapshot. Built only by the parser in this module; immutable once
//! built (the manager shares it behind an `Arc` and swaps the whole value on reload).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A secret string (runner token): never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[MASKED]")
    }
}

/// `log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (GitLab Runner's `text` and `runner`).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Jobs running at once across all runners.
    pub concurrent: usize,
    /// Pause between job requests of one runner when no job came.
    pub check_interval: Duration,
    /// How long a forceful shutdown may take.
    pub shutdown_timeout: Duration,
    /// Where `/metrics` and the status page listen (`host:port`).
    pub listen_address: Option<String>,
    /// `log_level` (tracing filter directive: error, warn, info, debug, trace).
    pub log_level: String,
    /// `log_format`.
    pub log_format: LogFormat,
    /// Where `manager-id` and `jobs.json` are kept.
    pub state_dir: PathBuf,
    /// Overrides the persisted manager id.
    pub manager_id: Option<String>,
    /// How often the fleet reconciles with the cloud.
    pub reconcile_interval: Duration,
    /// The `[[runners]]` entries (none is valid: `run` idles until a reload adds one).
    pub runners: Vec<RunnerConfig>,
}

/// `executor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Containers on a Docker engine the manager reaches directly.
    Docker,
    /// Containers on one-job GCE VMs.
    DockerMachine,
}

impl ExecutorKind {
    /// The name GitLab Runner uses (`info.executor`, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Docker => "docker",
            ExecutorKind::DockerMachine => "docker+machine",
        }
    }
}

/// A runner's identity across reloads and token rotations: its URL and GitLab `id` where known,
/// else its URL and short token (as GitLab Runner; a rename is not a new runner).
#[derive(Debug, Clone)]
pub struct RunnerIdentity {
    /// The coordinator URL as configured (trailing `/` removed).
    pub url: String,
    /// The runner's short token (for logs; part of the identity only when `id` is 0).
    pub short_token: String,
    /// GitLab's runner `id` (0: unknown).
    pub id: i64,
}

impl RunnerIdentity {
    fn key(&self) -> (&str, i64, &str) {
        if self.id > 0 {
            (&self.url, self.id, "")
        } else {
            (&self.url, 0, &self.short_token)
        }
    }
}

impl PartialEq for RunnerIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for RunnerIdentity {}

impl std::hash::Hash for RunnerIdentity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for RunnerIdentity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RunnerIdentity {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// One `[[runners]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerConfig {
    /// `name` (a description for people; not the identity).
    pub name: String,
    /// `url` of the coordinator.
    pub url: String,
    /// `token`: the runner authentication token.
    pub token: Secret,
    /// `id`: GitLab's id of the runner (0 when the file has none).
    pub id: i64,
    /// `token_obtained_at`: when the token was issued (absent: unknown).
    pub token_obtained_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `token_expires_at`: when the token expires (absent, empty or Go's zero time: never).
    pub token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The short token the runner's labels, metric series and cache path keep after a token
    /// rotation in this process (set by the manager, never read from the file).
    pub kept_short_token: Option<String>,
    /// `executor`.
    pub executor: ExecutorKind,
    /// `limit`: jobs at once for this runner (0 = no limit but `concurrent`).
    pub limit: usize,
    /// `request_concurrency`: job requests in flight at once (default 1).
    pub request_concurrency: usize,
    /// `output_limit` in KiB (default 4096).
    pub output_limit_kib: usize,
    /// `environment`: `KEY=value` entries added to every job.
    pub environment: Vec<String>,
    /// `unhealthy_requests_limit` (default 3).
    pub unhealthy_requests_limit: u32,
    /// `unhealthy_interval` (default 1 h).
    pub unhealthy_interval: Duration,
    /// `[runners.docker]`.
    pub docker: DockerConfig,
    /// `[runners.machine]` (docker+machine only).
    pub machine: Option<MachineConfig>,
    /// `[runners.gce]`, merged with a carried-over `MachineDriver = "google"` + `MachineOptions`
    /// (docker+machine only).
    pub gce: Option<GceConfig>,
    /// `[runners.cache]`: where job caches are kept.
    pub cache: super::CacheConfig,
}

impl RunnerConfig {
    /// The short token as GitLab Runner shortens it (`helpers/shorten_token.go`).
    pub fn short_token(&self) -> String {
        match &self.kept_short_token {
            Some(kept) => kept.clone(),
            None => short_token(self.token.expose()),
        }
    }

    /// The identity used to match runners across reloads.
    pub fn identity(&self) -> RunnerIdentity {
        RunnerIdentity {
            url: self.url.trim_end_matches('/').to_string(),
            short_token: self.short_token(),
            id: self.id,
        }
    }
}

/// Shortens a token as GitLab Runner does: strip a known prefix, then keep 9 characters.
pub fn short_token(token: &str) -> String {
    let mut rest = token;
    for prefix in ["glrtr-", "glcbt-"] {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r;
        }
    }
    if let Some(r) = rest.strip_prefix("glrt-") {
        rest = r;
    }
    for prefix in ["t1_", "t2_", "t3_"] {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r;
        }
    }
    // `get`, not indexing: a token is config input and may hold multi-byte characters.
    if rest.starts_with("GR")
        && rest
            .get(2..9)
            .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
    {
        rest = &rest[9..];
    }
    rest.chars().take(9).collect()
}

/// `pull_policy` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time.
    Always,
    /// Pull when the image is not present.
    IfNotPresent,
    /// Never pull; a missing image fails the job.
    Never,
}

impl PullPolicy {
    /// The spelling in config and in job payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Never => "never",
        }
    }

    /// Parses the config/payload spelling.
    pub fn parse(s: &str) -> Option<PullPolicy> {
        match s {
            "always" => Some(PullPolicy::Always),
            "if-not-present" => Some(PullPolicy::IfNotPresent),
            "never" => Some(PullPolicy::Never),
            _ => None,
        }
    }
}

/// `[runners.docker]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// `host`: the Docker endpoint (`unix://…`, `tcp://…`); local defaults when unset.
    pub host: Option<String>,
    /// `image`: the default job image.
    pub image: String,
    /// `privileged`.
    pub privileged: bool,
    /// `pull_policy` (default `["always"]`, as GitLab Runner).
    pub pull_policy: Vec<PullPolicy>,
    /// `volumes`: `host:container[:mode]` binds or `container` paths for anonymous volumes.
    pub volumes: Vec<String>,
    /// `network_mode` (`host`, `bridge`, a network name); a per-job network when unset.
    pub network_mode: Option<String>,
    /// `cpus` as nano-CPUs (e.g. "1.5" → 1_500_000_000).
    pub nano_cpus: Option<i64>,
    /// `memory` in bytes (e.g. "512m").
    pub memory_bytes: Option<i64>,
    /// `helper_image`.
    pub helper_image: Option<String>,
    /// `helper_image_archive` (Flotilla's own): a `docker save` tarball of the helper image on
    /// the manager's host, loaded over the Docker API onto an engine that lacks the image.
    pub helper_image_archive: Option<std::path::PathBuf>,
    /// `wait_for_services_timeout`: how long to wait for each service's ports (30 s; 0 in the
    /// file means the default, a negative value turns the wait off → `None`).
    pub wait_for_services_timeout: Option<Duration>,
    /// `services_privileged`: run service containers privileged (`privileged` when unset).
    pub services_privileged: Option<bool>,
    /// `allowed_services`: glob patterns (`*`, `**`) a job's service images must match; empty
    /// allows every image.
    pub allowed_services: Vec<String>,
    /// `services_limit`: most services per job; `None` (the default, or -1) = no limit.
    pub services_limit: Option<u32>,
    /// `allowed_images`: glob patterns (`*`, `**`) the job's image must match; empty allows
    /// every image.
    pub allowed_images: Vec<String>,
    /// `allowed_pull_policies`: the pull policies a job may use; empty allows every one.
    pub allowed_pull_policies: Vec<PullPolicy>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            image: String::new(),
            privileged: false,
            pull_policy: vec![PullPolicy::Always],
            volumes: Vec::new(),
            network_mode: None,
            nano_cpus: None,
            memory_bytes: None,
            helper_image: None,
            helper_image_archive: None,
            wait_for_services_timeout: Some(DEFAULT_WAIT_FOR_SERVICES),
            services_privileged: None,
            allowed_services: Vec::new(),
            services_limit: None,
            allowed_images: Vec::new(),
            allowed_pull_policies: Vec::new(),
        }
    }
}

/// GitLab Runner's default `wait_for_services_timeout`.
pub const DEFAULT_WAIT_FOR_SERVICES: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::short_token;

    #[test]
    fn short_tokens_match_gitlab_runner() {
        assert_eq!(short_token("glrt-t1_abcdefghijklmnop"), "abcdefghi");
        assert_eq!(short_token("glrt-abcdefghijklmnop"), "abcdefghi");
        assert_eq!(short_token("GR1348941abcdefghijkl"), "abcdefghi");
        assert_eq!(short_token("xyz"), "xyz");
    }

    #[test]
    fn short_token_never_cuts_inside_a_character() {
        assert_eq!(short_token("GRéééééééé"), "GRééééééé");
        assert_eq!(short_token("glrt-GR13489éabc"), "GR13489éa");
    }
}

/// `[runners.machine]`: the warm-pool policy, in GitLab Runner's spelling and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineConfig {
    /// `IdleCount`: idle VMs to keep ready.
    pub idle_count: u32,
    /// `IdleCountMin`: the floor when `IdleScaleFactor` is used.
    pub idle_count_min: u32,
    /// `IdleScaleFactor`: idle VMs as a multiple of VMs in use (0 = off).
    pub idle_scale_factor: f64,
    /// `IdleTime`: how long an idle VM above the idle count is kept.
    pub idle_time: Duration,
    /// `MaxBuilds`: jobs per VM before it is removed (0 = no limit).
    pub max_builds: u32,
    /// `MaxGrowthRate`: VMs being created at once (0 = no limit).
    pub max_growth_rate: u32,
    /// `MachineName` with `%s` (a unique lowercase id goes there).
    pub machine_name: String,
    /// `[[runners.machine.autoscaling]]` periods; the last matching one wins.
    pub autoscaling: Vec<AutoscalingPeriod>,
    /// `IdleCountPolicy` (Flotilla's key): a fixed IdleCount, or a warm pool that follows demand.
    pub idle_count_policy: IdleCountPolicy,
}

/// `IdleCountPolicy`: how many idle VMs a docker+machine runner keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IdleCountPolicy {
    /// `"static"` (the default): GitLab Runner's IdleCount / IdleScaleFactor / periods.
    #[default]
    Static,
    /// `"adaptive"`: arrival rate × time to ready + burst headroom, between IdleCountMin (and
    /// an active period's IdleCount) and IdleCount; jobs are taken without a VM leased and get
    /// one from the warm pool or made on demand.
    Adaptive,
}

impl IdleCountPolicy {
    /// The value as written in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdleCountPolicy::Static => "static",
            IdleCountPolicy::Adaptive => "adaptive",
        }
    }
}

/// One `[[runners.machine.autoscaling]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalingPeriod {
    /// `Periods`: GitLab Runner's 7-field cron expressions (seconds … year; Sunday = 0).
    pub periods: Vec<String>,
    /// `Timezone` (IANA name; UTC when empty).
    pub timezone: String,
    /// `IdleCount` while the period is active.
    pub idle_count: u32,
    /// `IdleCountMin` while the period is active.
    pub idle_count_min: u32,
    /// `IdleScaleFactor` while the period is active.
    pub idle_scale_factor: f64,
    /// `IdleTime` while the period is active.
    pub idle_time: Duration,
}

/// `[runners.gce]`: how VMs are made on Compute Engine.
#[derive(Debug, Clone, PartialEq)]
pub struct GceConfig {
    /// `project`.
    pub project: String,
    /// `zones`: tried in order; a cooling zone is skipped.
    pub zones: Vec<String>,
    /// `machine_type` (default `e2-standard-2`).
    pub machine_type: String,
    /// `image` (default `projects/cos-cloud/global/images/family/cos-stable`).
    pub image: String,
    /// `disk_size_gb` (default 50).
    pub disk_size_gb: u64,
    /// `disk_type` (default `pd-balanced`).
    pub disk_type: String,
    /// `network` (default `default`).
    pub network: String,
    /// `subnetwork` (regional).
    pub subnetwork: Option<String>,
    /// `use_internal_ip` (default true): connect to the VM's internal IP.
    pub use_internal_ip: bool,
    /// `internal_ip_only` (default false): no external IP at all.
    pub internal_ip_only: bool,
    /// `tags` (the `flotilla-runner` tag is always added).
    pub tags: Vec<String>,
    /// `labels` added to every VM (besides the ownership labels).
    pub labels: BTreeMap<String, String>,
    /// `service_account` email (none attached when unset).
    pub service_account: Option<String>,
    /// `scopes` for that service account.
    pub scopes: Vec<String>,
    /// `spot`: Spot VMs (deleted on preemption).
    pub spot: bool,
    /// `endpoint`: the Compute API base (tests); anonymous credentials when set.
    pub endpoint: Option<String>,
    /// `credentials_file`: a service-account JSON key (else Application Default Credentials).
    pub credentials_file: Option<PathBuf>,
    /// `create_timeout` (default 600 s): insert to dockerd answering.
    pub create_timeout: Duration,
    /// `docker_port` (default 2376).
    pub docker_port: u16,
    /// `api_rate_per_minute` (default 600).
    pub api_rate_per_minute: u32,
    /// `zone_cooldown` (default 300 s, doubling up to 1 h).
    pub zone_cooldown: Duration,
    /// `queue_aware_scaling` (default true): also create VMs for the backlog GitLab reports
    /// (`job_info.queue_size`), besides the idle settings.
    pub queue_aware: bool,
    /// Also tag VMs `docker-machine` (a config carried over from MachineOptions).
    pub docker_machine_tag: bool,
}
