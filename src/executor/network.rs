//! Whether a job gets a network of its own, and making it. As GitLab Runner: none by default
//! (every container on the engine's default bridge, services reached through `/etc/hosts`
//! entries); one per job only when the job turns on `FF_NETWORK_PER_BUILD` and `network_mode`
//! is unset. Its subnet is a small one (a /28 by default) picked at random from
//! `network_per_build_pool`, not one of the engine's default pools, which give each network a
//! /16 or /20 and run out after about thirty. A subnet another network holds is skipped: the
//! engine refuses an overlapping pool, and the next attempt picks another.

use super::error::ExecError;
use crate::config::{DockerConfig, SubnetPool};
use crate::job::Variables;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::Docker;
use std::collections::HashMap;

/// How many subnets are tried before the job fails (each taken one is skipped).
const ATTEMPTS: usize = 16;

/// GitLab Runner's feature flag for a network per job.
pub(super) const FF_NETWORK_PER_BUILD: &str = "FF_NETWORK_PER_BUILD";

/// Whether the job gets its own network: `FF_NETWORK_PER_BUILD` is true (Go's `ParseBool`
/// spellings) and `network_mode` names none.
pub(super) fn per_build(settings: &DockerConfig, variables: &Variables) -> bool {
    settings.network_mode.is_none()
        && variables
            .expanded(FF_NETWORK_PER_BUILD)
            .is_some_and(|v| matches!(v.trim(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// Creates the job's bridge network `name` on a free subnet of `pool`.
pub(super) async fn create(
    docker: &Docker,
    name: &str,
    labels: &HashMap<String, String>,
    pool: &SubnetPool,
) -> Result<(), ExecError> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let (subnet, gateway) = pool.subnet(rand::random::<u32>());
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(labels.clone()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet),
                    gateway: Some(gateway),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => return Ok(()),
            Err(e) if is_overlap(&e) => last = Some(e),
            Err(e) => {
                return Err(ExecError::docker(
                    format!("creating the job network {name}"),
                    e,
                ))
            }
        }
    }
    let what = format!("creating the job network {name}: no free subnet in {ATTEMPTS} tries");
    Err(match last {
        Some(e) => ExecError::docker(what, e),
        None => ExecError::Configuration(what),
    })
}

/// Whether the engine refused the subnet because another network holds it.
fn is_overlap(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { message, .. }
        if message.to_ascii_lowercase().contains("overlap"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobVariable;

    #[test]
    fn only_a_true_flag_without_network_mode_makes_a_network() {
        let vars = |v: &str| Variables::new(vec![JobVariable::plain(FF_NETWORK_PER_BUILD, v)]);
        let unset = DockerConfig::default();
        assert!(!per_build(&unset, &Variables::new(Vec::new())));
        for on in ["true", "1", "TRUE", "t"] {
            assert!(per_build(&unset, &vars(on)), "{on}");
        }
        for off in ["false", "0", "", "yes"] {
            assert!(!per_build(&unset, &vars(off)), "{off}");
        }
        let named = DockerConfig {
            network_mode: Some("ci".into()),
            ..DockerConfig::default()
        };
        assert!(!per_build(&named, &vars("true")));
    }

    #[test]
    fn only_an_overlap_is_retried() {
        let server = |message: &str| bollard::errors::Error::DockerResponseServerError {
            status_code: 403,
            message: message.into(),
        };
        assert!(is_overlap(&server(
            "invalid pool request: Pool overlaps with other one on this address space"
        )));
        assert!(!is_overlap(&server("network with name x already exists")));
    }
}
