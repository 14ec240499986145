//! `flotilla register`: GitLab Runner's `register` flow. With an authentication token
//! (`--token glrt-…`) the token is verified (`POST runners/verify`) and server-side flags are
//! refused before any request; with a legacy registration token the runner is created
//! (`POST runners`). The entry is then appended to the file (locked, every other byte kept); if
//! that fails, the runner just registered is unregistered again.

use super::api::{RegisterParameters, RunnerCredentials, RunnersApi};
use super::args::RegisterArgs;
use super::error::CommandError;
use super::file::{datetime_literal, quote, string_array, Edit, LockedFile};
use super::{prompt, system};
use crate::config::{short_token, Secret};
use chrono::Utc;

/// Executors `register` accepts.
const EXECUTORS: &[&str] = &["docker", "docker+machine"];

/// How the runner is being registered.
enum Mode {
    /// An authentication token: verify it.
    Verify(Secret),
    /// A legacy registration token: create the runner.
    Create(Secret),
}

/// Runs `flotilla register`.
pub async fn register(args: RegisterArgs) -> Result<(), CommandError> {
    let ask = prompt::interactive(args.non_interactive);
    let url = prompt::text(
        ask,
        args.url.clone(),
        "Enter the GitLab instance URL (for example, https://gitlab.com/)",
        None,
        "url",
    )?
    .trim_end_matches('/')
    .to_string();
    let mode = mode(&args, ask)?;
    let name_given = match (&args.name, &args.description) {
        (Some(a), Some(b)) if a.trim() != b.trim() => {
            return Err(CommandError::Invalid(
                "--name and --description set one field: give them the same value, or only one"
                    .to_string(),
            ))
        }
        (Some(a), _) | (None, Some(a)) => Some(a.clone()),
        (None, None) => None,
    };
    let host = hostname();
    let name = prompt::text(
        ask,
        name_given,
        "Enter a name for the runner",
        Some(&host),
        "name",
    )?;
    let executor = prompt::choose(
        ask,
        args.executor.clone(),
        "Enter an executor",
        EXECUTORS,
        "executor",
    )?;
    if !EXECUTORS.contains(&executor.as_str()) {
        return Err(CommandError::Invalid(format!(
            "executor {executor:?} is not supported: use docker or docker+machine"
        )));
    }
    let image = prompt::text(
        ask,
        args.docker_image.clone(),
        "Enter the default Docker image (for example, ruby:3.3)",
        None,
        "docker-image",
    )?;
    validate_numbers(&args)?;

    let file = LockedFile::lock(&args.config.config)?;
    let text = file.read()?;
    let mut edit = Edit::parse(file.path(), text.as_deref())?;
    let system_id = system::system_id(text.as_deref())?;
    let api = RunnersApi::new(&url, &executor, &args.tls_files())?;
    let credentials = match &mode {
        Mode::Verify(token) => {
            eprintln!(
                "Verifying runner... (token {})",
                short_token(token.expose())
            );
            let credentials = api.verify(token, &system_id).await?;
            if token.expose().starts_with("glrt-") && credentials.id == 0 {
                return Err(CommandError::Invalid(
                    "GitLab's verify answer has no runner id: this GitLab is too old for \
                     authentication tokens"
                        .to_string(),
                ));
            }
            credentials
        }
        Mode::Create(registration_token) => {
            eprintln!("WARNING: registering with a registration token is deprecated by GitLab; create the runner in GitLab and use --token");
            api.register(registration_token, &parameters(&args, &name)?)
                .await?
        }
    };
    let entry = render_entry(&args, &name, &url, &executor, &image, &credentials);
    edit.append(entry);
    if let Err(e) = file.write(&edit.render()) {
        eprintln!(
            "ERROR: cannot save the runner to {}: unregistering it again",
            file.path().display()
        );
        undo(&api, &credentials.token, &system_id).await;
        return Err(e.into());
    }
    eprintln!(
        "Runner registered successfully: {name} (token {}) saved to {}. Start it with `flotilla run -c {}`.",
        short_token(credentials.token.expose()),
        file.path().display(),
        file.path().display()
    );
    Ok(())
}

/// Which token was given and what it means; server-side flags checked.
fn mode(args: &RegisterArgs, ask: bool) -> Result<Mode, CommandError> {
    if let Some(token) = args.token.clone().filter(|t| !t.trim().is_empty()) {
        let token = token.trim().to_string();
        if token.starts_with("glrt-") {
            if let Some(flag) = server_side_flag(args) {
                return Err(CommandError::ServerSideFlag { flag });
            }
        }
        return Ok(Mode::Verify(Secret(token)));
    }
    let token = match args.registration_token.clone() {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => prompt::secret(ask, None, "Enter the runner authentication token", "token")?,
    };
    if token.starts_with("glrt-") {
        if let Some(flag) = server_side_flag(args) {
            eprintln!("WARNING: {flag} and the other server-side flags are ignored with an authentication token (glrt-…): set them in GitLab's runner settings");
        }
        return Ok(Mode::Verify(Secret(token)));
    }
    Ok(Mode::Create(Secret(token)))
}

/// The first server-side flag set to anything but its default (GitLab Runner's
/// `ensureServerConfigArgsEmpty` compares values: `--locked=true`, `--paused=false` or an empty
/// `--tag-list` pass).
fn server_side_flag(args: &RegisterArgs) -> Option<&'static str> {
    [
        ("--locked", args.locked == Some(false)),
        (
            "--access-level",
            args.access_level.as_deref().is_some_and(|v| !v.is_empty()),
        ),
        ("--run-untagged", args.run_untagged == Some(true)),
        (
            "--maximum-timeout",
            args.maximum_timeout.is_some_and(|v| v != 0),
        ),
        ("--paused", args.paused == Some(true)),
        (
            "--tag-list",
            args.tag_list
                .as_deref()
                .is_some_and(|v| !v.trim().is_empty()),
        ),
        (
            "--maintenance-note",
            args.maintenance_note
                .as_deref()
                .is_some_and(|v| !v.is_empty()),
        ),
    ]
    .into_iter()
    .find(|(_, set)| *set)
    .map(|(flag, _)| flag)
}

/// The `POST runners` parameters, with GitLab Runner's defaults (locked; untagged jobs when
/// there are no tags).
fn parameters(args: &RegisterArgs, name: &str) -> Result<RegisterParameters, CommandError> {
    let tag_list: Vec<String> = args
        .tag_list
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let access_level = args.access_level.clone().unwrap_or_default();
    if !matches!(
        access_level.as_str(),
        "" | "not_protected" | "ref_protected"
    ) {
        return Err(CommandError::Invalid(format!(
            "--access-level {access_level:?}: use not_protected or ref_protected"
        )));
    }
    Ok(RegisterParameters {
        description: name.to_string(),
        maintenance_note: args.maintenance_note.clone().unwrap_or_default(),
        run_untagged: tag_list.is_empty() || args.run_untagged.unwrap_or(false),
        tag_list,
        locked: args.locked.unwrap_or(true),
        access_level,
        maximum_timeout: args.maximum_timeout.unwrap_or(0),
        paused: args.paused.unwrap_or(false),
    })
}

fn validate_numbers(args: &RegisterArgs) -> Result<(), CommandError> {
    for (flag, value) in [
        ("--limit", args.limit),
        ("--request-concurrency", args.request_concurrency),
        ("--machine-idle-nodes", args.machine_idle_nodes),
        ("--machine-idle-time", args.machine_idle_time),
        ("--machine-max-builds", args.machine_max_builds),
        ("--maximum-timeout", args.maximum_timeout),
    ] {
        if value.is_some_and(|v| v < 0) {
            return Err(CommandError::Invalid(format!(
                "{flag} must not be negative"
            )));
        }
    }
    Ok(())
}

/// The `[[runners]]` entry in GitLab Runner's layout (two-space indents, its key names).
fn render_entry(
    args: &RegisterArgs,
    name: &str,
    url: &str,
    executor: &str,
    image: &str,
    credentials: &RunnerCredentials,
) -> String {
    let mut lines = vec![
        String::new(),
        "[[runners]]".to_string(),
        format!("  name = {}", quote(name)),
        format!("  url = {}", quote(url)),
    ];
    if credentials.id > 0 {
        lines.push(format!("  id = {}", credentials.id));
    }
    lines.push(format!("  token = {}", quote(credentials.token.expose())));
    let tls = args.tls_files();
    for (key, file) in [
        ("tls-ca-file", &tls.ca_file),
        ("tls-cert-file", &tls.cert_file),
        ("tls-key-file", &tls.key_file),
    ] {
        if let Some(file) = file {
            lines.push(format!("  {key} = {}", quote(&file.display().to_string())));
        }
    }
    lines.push(format!(
        "  token_obtained_at = {}",
        datetime_literal(Some(Utc::now()))
    ));
    lines.push(format!(
        "  token_expires_at = {}",
        datetime_literal(credentials.token_expires_at)
    ));
    lines.push(format!("  executor = {}", quote(executor)));
    if let Some(limit) = args.limit {
        lines.push(format!("  limit = {limit}"));
    }
    if let Some(n) = args.request_concurrency {
        lines.push(format!("  request_concurrency = {n}"));
    }
    lines.push("  [runners.docker]".to_string());
    lines.push(format!("    image = {}", quote(image)));
    lines.push(format!(
        "    privileged = {}",
        args.docker_privileged.unwrap_or(false)
    ));
    if !args.docker_pull_policy.is_empty() {
        lines.push(format!(
            "    pull_policy = {}",
            string_array(&args.docker_pull_policy)
        ));
    }
    let volumes = if args.docker_volumes.is_empty() {
        vec!["/cache".to_string()]
    } else {
        args.docker_volumes.clone()
    };
    lines.push(format!("    volumes = {}", string_array(&volumes)));
    let machine_given = args.machine_idle_nodes.is_some()
        || args.machine_idle_time.is_some()
        || args.machine_max_builds.is_some()
        || args.machine_machine_driver.is_some()
        || args.machine_machine_name.is_some()
        || !args.machine_machine_options.is_empty();
    if executor == "docker+machine" || machine_given {
        lines.push("  [runners.machine]".to_string());
        lines.push(format!(
            "    IdleCount = {}",
            args.machine_idle_nodes.unwrap_or(0)
        ));
        lines.push(format!(
            "    IdleTime = {}",
            args.machine_idle_time.unwrap_or(0)
        ));
        if let Some(n) = args.machine_max_builds {
            lines.push(format!("    MaxBuilds = {n}"));
        }
        if let Some(driver) = &args.machine_machine_driver {
            lines.push(format!("    MachineDriver = {}", quote(driver)));
        }
        if let Some(name) = &args.machine_machine_name {
            lines.push(format!("    MachineName = {}", quote(name)));
        }
        lines.push(format!(
            "    MachineOptions = {}",
            string_array(&args.machine_machine_options)
        ));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Unregisters a runner just registered whose entry could not be saved (as GitLab Runner).
async fn undo(api: &RunnersApi, token: &Secret, system_id: &str) {
    let result = if token.expose().starts_with("glrt-") {
        api.unregister_manager(token, system_id).await
    } else {
        api.unregister_runner(token).await
    };
    if let Err(e) = result {
        eprintln!("ERROR: unregistering the runner failed: {e}");
    }
}

/// The host's name, the default runner name (as GitLab Runner).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "flotilla".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RegisterArgs,
    }

    #[test]
    fn tls_flags_are_written_into_the_entry_and_read_back() {
        let cli = Cli::try_parse_from([
            "register",
            "--tls-ca-file",
            "/etc/gitlab-runner/certs/gitlab.crt",
            "--tls-cert-file",
            "/etc/flotilla/c.pem",
            "--tls-key-file",
            "/etc/flotilla/k.pem",
        ])
        .expect("flags");
        let credentials = RunnerCredentials {
            id: 7,
            token: Secret(format!("glrt-{}", "t".repeat(20))),
            token_expires_at: None,
        };
        let entry = render_entry(
            &cli.args,
            "r",
            "https://gitlab.example.com",
            "docker",
            "alpine",
            &credentials,
        );
        assert!(
            entry.contains("tls-ca-file = \"/etc/gitlab-runner/certs/gitlab.crt\""),
            "{entry}"
        );
        assert!(
            entry.contains("tls-key-file = \"/etc/flotilla/k.pem\""),
            "{entry}"
        );
        let text = format!("concurrent = 1\n{entry}");
        let config = crate::config::Config::from_toml_str(&text, "t.toml").expect("loads");
        let tls = &config.config.runners[0].tls;
        assert_eq!(
            tls.cert_file.as_deref(),
            Some(std::path::Path::new("/etc/flotilla/c.pem"))
        );
    }
}
