//! The flags of `register`, `verify`, `unregister`, `list` and `reset-token`, in GitLab Runner's
//! spelling with its environment variables (GitLab Runner 19.x `commands/*.go`). Boolean flags
//! accept `--flag`, `--flag=true` and `--flag=false` (any Go `strconv.ParseBool` spelling), as
//! GitLab Runner's CLI library does: each is made so by [`go_bool::flags`].
//! Plain data: the commands read these; nothing here does I/O.

use crate::go_bool;
use clap::Args;
use std::path::PathBuf;

/// The default configuration file of the commands (GitLab Runner: `-c`, `$CONFIG_FILE`).
pub const DEFAULT_CONFIG: &str = "/etc/flotilla/config.toml";

/// `-c/--config`, shared by every command.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(short = 'c', long = "config", env = "CONFIG_FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

/// `flotilla register`.
#[derive(Clone, Args)]
#[command(mut_args(go_bool::flags(&[
    "non_interactive",
    "docker_privileged",
    "run_untagged",
    "locked",
    "paused",
])))]
pub struct RegisterArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Run registration unattended: a missing value is an error, nothing is asked.
    #[arg(
        short = 'n',
        long,
        env = "REGISTER_NON_INTERACTIVE",
        default_value = "false"
    )]
    pub non_interactive: bool,
    /// GitLab instance URL (a trailing `/` is trimmed).
    #[arg(short = 'u', long, env = "CI_SERVER_URL")]
    pub url: Option<String>,
    /// The runner's authentication token (`glrt-…`, from creating the runner in GitLab).
    #[arg(short = 't', long, env = "CI_SERVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A registration token (deprecated by GitLab; use --token).
    #[arg(short = 'r', long, env = "REGISTRATION_TOKEN", hide_env_values = true)]
    pub registration_token: Option<String>,
    /// The runner's name (the same field as --description).
    #[arg(long, env = "RUNNER_NAME")]
    pub name: Option<String>,
    /// The runner's description (the same field as --name).
    #[arg(long)]
    pub description: Option<String>,
    /// The executor: `docker` or `docker+machine`.
    #[arg(long, env = "RUNNER_EXECUTOR")]
    pub executor: Option<String>,
    /// The default job image.
    #[arg(long, env = "DOCKER_IMAGE")]
    pub docker_image: Option<String>,
    /// Run job containers privileged.
    #[arg(long, env = "DOCKER_PRIVILEGED")]
    pub docker_privileged: Option<bool>,
    /// When to pull the job image: `always`, `if-not-present`, `never` (repeatable).
    #[arg(long, env = "DOCKER_PULL_POLICY", value_delimiter = ',')]
    pub docker_pull_policy: Vec<String>,
    /// A volume for job containers (repeatable).
    #[arg(long, env = "DOCKER_VOLUMES", value_delimiter = ',')]
    pub docker_volumes: Vec<String>,
    /// Jobs at once for this runner (0: no limit but `concurrent`).
    #[arg(long, env = "RUNNER_LIMIT")]
    pub limit: Option<i64>,
    /// Job requests in flight at once.
    #[arg(long, env = "RUNNER_REQUEST_CONCURRENCY")]
    pub request_concurrency: Option<i64>,
    /// `[runners.machine] IdleCount`.
    #[arg(long, env = "MACHINE_IDLE_COUNT")]
    pub machine_idle_nodes: Option<i64>,
    /// `[runners.machine] IdleTime` (seconds).
    #[arg(long, env = "MACHINE_IDLE_TIME")]
    pub machine_idle_time: Option<i64>,
    /// `[runners.machine] MaxBuilds`.
    #[arg(long, env = "MACHINE_MAX_BUILDS")]
    pub machine_max_builds: Option<i64>,
    /// `[runners.machine] MachineDriver` (`google`).
    #[arg(long, env = "MACHINE_DRIVER")]
    pub machine_machine_driver: Option<String>,
    /// `[runners.machine] MachineName` (with `%s`).
    #[arg(long, env = "MACHINE_NAME")]
    pub machine_machine_name: Option<String>,
    /// `[runners.machine] MachineOptions` entry, e.g. `google-zone=europe-west1-b` (repeatable).
    #[arg(long, env = "MACHINE_OPTIONS", value_delimiter = ',')]
    pub machine_machine_options: Vec<String>,
    /// Server-side (registration token only): comma-separated job tags.
    #[arg(long, env = "RUNNER_TAG_LIST")]
    pub tag_list: Option<String>,
    /// Server-side (registration token only): run untagged jobs (true when no tags).
    #[arg(long, env = "REGISTER_RUN_UNTAGGED")]
    pub run_untagged: Option<bool>,
    /// Server-side (registration token only): lock to the current project (default true).
    #[arg(long, env = "REGISTER_LOCKED")]
    pub locked: Option<bool>,
    /// Server-side (registration token only): `not_protected` or `ref_protected`.
    #[arg(long, env = "REGISTER_ACCESS_LEVEL")]
    pub access_level: Option<String>,
    /// Server-side (registration token only): the maximum job timeout in seconds.
    #[arg(long, env = "REGISTER_MAXIMUM_TIMEOUT")]
    pub maximum_timeout: Option<i64>,
    /// Server-side (registration token only): register the runner paused.
    #[arg(long, env = "REGISTER_PAUSED")]
    pub paused: Option<bool>,
    /// Server-side (registration token only): a note for the runner's maintainers.
    #[arg(long, env = "REGISTER_MAINTENANCE_NOTE")]
    pub maintenance_note: Option<String>,
    /// PEM certificates trusted for GitLab besides the system's; written as `tls-ca-file`.
    #[arg(long = "tls-ca-file", env = "CI_SERVER_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate presented to GitLab; written as `tls-cert-file`.
    #[arg(long = "tls-cert-file", env = "CI_SERVER_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Its PEM private key; written as `tls-key-file`.
    #[arg(long = "tls-key-file", env = "CI_SERVER_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
}

impl RegisterArgs {
    /// The TLS files given (empty paths are none).
    pub fn tls_files(&self) -> crate::config::TlsFiles {
        let set = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        crate::config::TlsFiles {
            ca_file: set(&self.tls_ca_file),
            cert_file: set(&self.tls_cert_file),
            key_file: set(&self.tls_key_file),
        }
    }
}

impl std::fmt::Debug for RegisterArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterArgs")
            .field("config", &self.config.config)
            .field("url", &self.url)
            .field("name", &self.name)
            .field("executor", &self.executor)
            .finish_non_exhaustive()
    }
}

/// `flotilla verify`.
#[derive(Debug, Clone, Args)]
#[command(mut_args(go_bool::flags(&["delete"])))]
pub struct VerifyArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Only the runner of this name.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Remove the runners GitLab no longer knows from the file.
    #[arg(long, default_value = "false")]
    pub delete: bool,
}

/// `flotilla unregister`.
#[derive(Clone, Args)]
#[command(mut_args(go_bool::flags(&["all_runners"])))]
pub struct UnregisterArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// The runner of this name.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// With --token: the runner's GitLab URL.
    #[arg(short = 'u', long, env = "CI_SERVER_URL")]
    pub url: Option<String>,
    /// With --url: the runner's authentication token.
    #[arg(short = 't', long, env = "CI_SERVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Every runner of the file.
    #[arg(long, default_value = "false")]
    pub all_runners: bool,
}

impl std::fmt::Debug for UnregisterArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnregisterArgs")
            .field("config", &self.config.config)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("all_runners", &self.all_runners)
            .finish_non_exhaustive()
    }
}

/// `flotilla reset-token`.
#[derive(Debug, Clone, Args)]
#[command(mut_args(go_bool::flags(&["all_runners"])))]
pub struct ResetTokenArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// The runner of this name.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Every runner of the file.
    #[arg(long, default_value = "false")]
    pub all_runners: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Register {
        #[command(flatten)]
        args: RegisterArgs,
    }

    #[derive(Parser)]
    struct Verify {
        #[command(flatten)]
        args: VerifyArgs,
    }

    #[derive(Parser)]
    struct Unregister {
        #[command(flatten)]
        args: UnregisterArgs,
    }

    #[derive(Parser)]
    struct ResetToken {
        #[command(flatten)]
        args: ResetTokenArgs,
    }

    #[test]
    fn boolean_flags_read_go_booleans() {
        let r = Register::try_parse_from(["r", "-n", "--docker-privileged=0", "--locked"])
            .expect("flags")
            .args;
        assert!(r.non_interactive);
        assert_eq!(r.docker_privileged, Some(false));
        assert_eq!(r.locked, Some(true));
        assert_eq!((r.paused, r.run_untagged), (None, None));
        let r = Register::try_parse_from(["r", "--paused=False", "--run-untagged=true"])
            .expect("flags")
            .args;
        assert!(!r.non_interactive);
        assert_eq!((r.paused, r.run_untagged), (Some(false), Some(true)));
        assert!(Register::try_parse_from(["r", "--locked=maybe"]).is_err());
        assert!(!Verify::try_parse_from(["v"]).unwrap().args.delete);
        assert!(
            Verify::try_parse_from(["v", "--delete"])
                .unwrap()
                .args
                .delete
        );
        assert!(
            !Verify::try_parse_from(["v", "--delete=f"])
                .unwrap()
                .args
                .delete
        );
    }
}
