//! Waiting for the job's services (GitLab Runner's `waitForServices`): per service, a short-lived
//! container from the helper image runs `flotilla helper wait-for-ports` on the job's network
//! against `HEALTHCHECK_TCP_PORT` or the image's exposed TCP ports, bounded by
//! `wait_for_services_timeout`. A service that does not come up gets GitLab Runner's warning with
//! the health check's error and the service's logs in the trace; the job goes on either way.

use super::{Services, StartedService, LABEL_TYPE};
use crate::config::PullPolicy;
use crate::executor::error::ExecError;
use crate::executor::pull;
use crate::helper_commands::contract::HELPER_BIN;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StartContainerOptions, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::time::Duration;

/// How much of a container's log goes into the trace (GitLab Runner's `ServiceLogOutputLimit`).
const LOG_LIMIT: usize = 64 * 1024;
/// At most this many exposed ports are waited for per service (as GitLab Runner).
const MAX_PORTS: usize = 20;

impl Services<'_> {
    /// Waits for every service's ports at once, each up to `timeout`; a service that does not
    /// come up gets GitLab Runner's warning and its logs in the trace. Never fails the job.
    pub(in crate::executor) async fn wait_all(
        &self,
        started: &[StartedService],
        timeout: Duration,
        helper_image: &str,
    ) {
        if started.is_empty() {
            return;
        }
        self.log.line(&format!(
            "Waiting for services to be up and running (timeout {} seconds)...",
            timeout.as_secs()
        ));
        let waits = started
            .iter()
            .map(|service| self.wait_one(service, timeout, helper_image));
        futures_util::future::join_all(waits).await;
    }

    async fn wait_one(&self, service: &StartedService, timeout: Duration, helper_image: &str) {
        let Err(failure) = self.health_check(service, timeout, helper_image).await else {
            return;
        };
        let mut text = format!(
            "\n\x1b[0;33m*** WARNING:\x1b[0;m Service {} probably didn't start properly.\n\n\
             Health check error:\n{}\n",
            service.name,
            failure.error.to_string().trim()
        );
        if let Some(logs) = failure.logs {
            text.push_str(&format!("\nHealth check container logs:\n{logs}\n"));
        }
        let logs = read_logs(self.docker, &service.id).await;
        text.push_str(&format!("\nService container logs:\n{logs}\n"));
        text.push_str("\n\x1b[0;33m*********\x1b[0;m\n");
        for line in text.lines() {
            self.log.line(line);
        }
    }

    /// Runs the wait container for `service`; why it failed (and its logs) otherwise.
    async fn health_check(
        &self,
        service: &StartedService,
        timeout: Duration,
        helper_image: &str,
    ) -> Result<(), HealthCheckFailure> {
        let plain = |error: HealthCheckError| HealthCheckFailure { error, logs: None };
        let ports = self.exposed_ports(&service.id).await.map_err(plain)?;
        if ports.is_empty() {
            return Err(plain(HealthCheckError::NoPorts {
                service: service.name.clone(),
            }));
        }
        // As the helper container: the helper image is pulled only when missing.
        pull::ensure_image(
            self.docker,
            self.log,
            helper_image,
            &[PullPolicy::IfNotPresent],
            None,
            self.auths,
        )
        .await
        .map_err(|e| plain(HealthCheckError::Image(Box::new(e))))?;
        let name = format!("{}-wait-for-service", service.name);
        let mut cmd = vec![
            HELPER_BIN.to_string(),
            "helper".into(),
            "wait-for-ports".into(),
            "--host".into(),
            service.address.clone(),
        ];
        for port in &ports {
            cmd.push("--port".into());
            cmd.push(port.to_string());
        }
        let mut labels = self.labels.clone();
        labels.insert(LABEL_TYPE.into(), "wait".into());
        labels.extend([
            crate::executor::gitlab_labels::type_label("wait"),
            (
                crate::executor::gitlab_labels::key("wait"),
                service.id.clone(),
            ),
        ]);
        let body = ContainerCreateBody {
            image: Some(helper_image.to_string()),
            cmd: Some(cmd),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(self.networking.mode()),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| plain(HealthCheckError::Docker("create service container", e)))?;
        let result = self.run_wait_container(&created.id, &name, timeout).await;
        let result = match result {
            Ok(()) => Ok(()),
            Err(error) => Err(HealthCheckFailure {
                error,
                logs: Some(read_logs(self.docker, &created.id).await),
            }),
        };
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        // The job's cleanup removes it too (it carries the job's labels) should this fail.
        let _ = self.docker.remove_container(&created.id, Some(force)).await;
        result
    }

    /// Starts the wait container and waits for its exit, at most `timeout`.
    async fn run_wait_container(
        &self,
        id: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), HealthCheckError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| HealthCheckError::Docker("start service container", e))?;
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(id, Some(options));
        let name = name.to_string();
        match tokio::time::timeout(timeout, wait.next()).await {
            Err(_) => Err(HealthCheckError::Timeout { name }),
            Ok(Some(Ok(done))) if done.status_code == 0 => Ok(()),
            Ok(Some(Ok(done))) => Err(HealthCheckError::Exit {
                name,
                code: done.status_code,
                error: String::new(),
            }),
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, error }))) => {
                Err(HealthCheckError::Exit {
                    name,
                    code,
                    error: format!(" {error}"),
                })
            }
            Ok(Some(Err(source))) => Err(HealthCheckError::Wait { name, source }),
            Ok(None) => Err(HealthCheckError::NoExitCode { name }),
        }
    }

    /// The TCP ports to wait for: `HEALTHCHECK_TCP_PORT` from the container's environment if
    /// set, else its exposed TCP ports (at most 20, sorted), as GitLab Runner.
    async fn exposed_ports(&self, id: &str) -> Result<Vec<u16>, HealthCheckError> {
        let found = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| HealthCheckError::Docker("inspecting the service container", e))?;
        let config = found.config.unwrap_or_default();
        ports_to_wait_for(
            &config.env.unwrap_or_default(),
            &config.exposed_ports.unwrap_or_default(),
        )
    }
}

/// Why a health check failed, with the wait container's logs when it ran.
struct HealthCheckFailure {
    error: HealthCheckError,
    logs: Option<String>,
}

/// Why a service's health check failed (written to the trace as a warning; never fails the job).
#[derive(Debug, thiserror::Error)]
enum HealthCheckError {
    /// The service exposes no TCP port to wait for.
    #[error("service {service:?} has no exposed ports")]
    NoPorts {
        /// The service's name.
        service: String,
    },
    /// `HEALTHCHECK_TCP_PORT` is not a port number.
    #[error("invalid health check tcp port: {0}")]
    BadPort(String),
    /// The helper image could not be had.
    #[error(transparent)]
    Image(Box<ExecError>),
    /// A Docker call failed (`what` says which).
    #[error("{0}: {1}")]
    Docker(&'static str, #[source] bollard::errors::Error),
    /// The wait container did not exit in time.
    #[error("service {name:?} timeout")]
    Timeout {
        /// The wait container's name.
        name: String,
    },
    /// The wait container exited non-zero (`error`: the engine's text, with a leading space).
    #[error("service {name:?} health check: exit code {code}{error}")]
    Exit {
        /// The wait container's name.
        name: String,
        /// Its exit code.
        code: i64,
        /// The engine's error text, if any.
        error: String,
    },
    /// Waiting for the container failed.
    #[error("service {name:?} health check: {source}")]
    Wait {
        /// The wait container's name.
        name: String,
        /// The engine's error.
        source: bollard::errors::Error,
    },
    /// The engine ended the wait stream without an exit code.
    #[error("service {name:?} health check: the engine ended the wait without an exit code")]
    NoExitCode {
        /// The wait container's name.
        name: String,
    },
}

/// The ports to wait for from a container's `Env` and `ExposedPorts` keys (`8080/tcp`, or a
/// range `8000-8002/tcp`).
fn ports_to_wait_for(env: &[String], exposed: &[String]) -> Result<Vec<u16>, HealthCheckError> {
    for entry in env {
        if let Some((key, value)) = entry.split_once('=') {
            if key.eq_ignore_ascii_case("HEALTHCHECK_TCP_PORT") {
                return value
                    .trim()
                    .parse::<u16>()
                    .map(|p| vec![p])
                    .map_err(|_| HealthCheckError::BadPort(value.to_string()));
            }
        }
    }
    let mut ports = Vec::new();
    for key in exposed {
        let (range, proto) = key.split_once('/').unwrap_or((key, "tcp"));
        if proto != "tcp" {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap_or((range, range));
        let (Ok(start), Ok(end)) = (start.parse::<u16>(), end.parse::<u16>()) else {
            continue;
        };
        for port in start..=end {
            if ports.len() >= MAX_PORTS {
                break;
            }
            ports.push(port);
        }
    }
    ports.sort_unstable();
    Ok(ports)
}

/// Up to 64 KiB of a container's stdout and stderr, with timestamps; the error text if the
/// engine cannot give them.
async fn read_logs(docker: &Docker, id: &str) -> String {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .build();
    let mut stream = docker.logs(id, Some(options));
    let mut out: Vec<u8> = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message })
            | Ok(LogOutput::Console { message }) => {
                let room = LOG_LIMIT.saturating_sub(out.len());
                out.extend_from_slice(&message[..message.len().min(room)]);
                if out.len() >= LOG_LIMIT {
                    break;
                }
            }
            Ok(LogOutput::StdIn { .. }) => {}
            Err(e) => {
                if out.is_empty() {
                    return e.to_string();
                }
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_healthcheck_variable_or_the_exposed_tcp_ports() {
        let exposed = vec!["9000/tcp".to_string(), "53/udp".into(), "80/tcp".into()];
        assert_eq!(ports_to_wait_for(&[], &exposed).unwrap(), vec![80, 9000]);
        let env = vec!["A=1".to_string(), "healthcheck_tcp_port=6379".into()];
        assert_eq!(ports_to_wait_for(&env, &exposed).unwrap(), vec![6379]);
        assert!(ports_to_wait_for(&["HEALTHCHECK_TCP_PORT=x".into()], &[]).is_err());
        let range = vec!["8000-8100/tcp".to_string()];
        assert_eq!(ports_to_wait_for(&[], &range).unwrap().len(), MAX_PORTS);
        assert!(ports_to_wait_for(&[], &[]).unwrap().is_empty());
    }
}
