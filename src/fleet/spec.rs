//! The instance spec of a new VM, built from `[runners.gce]`: ownership labels over the
//! configured ones, the `flotilla-runner` network tag (and `docker-machine` when carried over),
//! the startup script and the Docker port in metadata beside the TLS material from `VmDockerAccess`.
//! Pure; the actor calls it once per VM name.

use super::access::{VmAccessError, VmDockerAccess};
use super::names::{self, NameError};
use super::worker::CreatePlan;
use super::{FleetSettings, HOST_LABEL, MANAGER_LABEL, RUNNER_LABEL, RUNNER_TAG};
use crate::cloud::InstanceSpec;
use std::collections::BTreeMap;

/// The VM startup script (installs/opens dockerd with the TLS material from metadata).
pub const STARTUP_SCRIPT: &str = include_str!("../../scripts/vm-startup.sh");

/// Metadata key carrying the Docker port for the startup script.
pub const DOCKER_PORT_KEY: &str = "flotilla-docker-port";

/// The labels every VM of this runner carries (the host label when the host has an id).
pub fn ownership_labels(s: &FleetSettings) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGER_LABEL.to_string(), s.manager_id.clone()),
        (RUNNER_LABEL.to_string(), s.runner_label.clone()),
    ]);
    if !s.host_id.is_empty() {
        labels.insert(HOST_LABEL.to_string(), s.host_id.clone());
    }
    labels
}

/// Why no VM could be planned.
#[derive(Debug, thiserror::Error)]
pub(super) enum NewVmError {
    /// `MachineName` makes no valid name.
    #[error("cannot name a VM: {0}")]
    Name(#[from] NameError),
    /// The VM's TLS material could not be made.
    #[error(transparent)]
    Metadata(#[from] VmAccessError),
}

/// A new VM for `zone`: a fresh name (`names`), its TLS material from `access`, and the plan of
/// its creation with a new insert `requestId`.
pub(super) fn new_vm(
    s: &FleetSettings,
    access: &dyn VmDockerAccess,
    zone: &str,
) -> Result<CreatePlan, NewVmError> {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let unique = names::unique_id(unix, rand::random());
    let name = names::machine_name(s.name_token(), &s.machine.machine_name, &unique)?;
    let metadata = access.vm_metadata(&name)?;
    let request_id = uuid::Uuid::new_v4().to_string();
    Ok(create_plan(s, &name, zone, metadata, request_id))
}

/// What a creation worker needs to make VM `name` in `zone` (`request_id`: the insert's
/// idempotency key).
pub(super) fn create_plan(
    s: &FleetSettings,
    name: &str,
    zone: &str,
    metadata: Vec<(String, String)>,
    request_id: String,
) -> CreatePlan {
    CreatePlan {
        spec: instance_spec(s, name, zone, metadata),
        request_id,
        timeout: s.gce.create_timeout,
        docker_port: s.gce.docker_port,
        use_internal_ip: s.gce.use_internal_ip,
    }
}

/// The spec of VM `name` in `zone`, with `VmDockerAccess`'s `metadata`.
pub fn instance_spec(
    s: &FleetSettings,
    name: &str,
    zone: &str,
    metadata: Vec<(String, String)>,
) -> InstanceSpec {
    let gce = &s.gce;
    let mut labels = gce.labels.clone();
    labels.extend(ownership_labels(s));
    let mut tags: Vec<String> = Vec::new();
    let wanted = gce
        .tags
        .iter()
        .map(String::as_str)
        .chain([RUNNER_TAG])
        .chain(gce.docker_machine_tag.then_some("docker-machine"));
    for t in wanted {
        if !tags.iter().any(|x| x == t) {
            tags.push(t.to_string());
        }
    }
    let mut items: Vec<(String, String)> = metadata
        .into_iter()
        .filter(|(k, _)| k != "startup-script" && k != DOCKER_PORT_KEY)
        .collect();
    items.push(("startup-script".into(), STARTUP_SCRIPT.to_string()));
    items.push((DOCKER_PORT_KEY.into(), gce.docker_port.to_string()));
    InstanceSpec {
        name: name.to_string(),
        zone: zone.to_string(),
        machine_type: gce.machine_type.clone(),
        image: gce.image.clone(),
        disk_size_gb: gce.disk_size_gb,
        disk_type: gce.disk_type.clone(),
        network: gce.network.clone(),
        subnetwork: gce.subnetwork.clone(),
        external_ip: !gce.internal_ip_only,
        tags,
        labels,
        metadata: items,
        service_account: gce
            .service_account
            .clone()
            .map(|email| (email, gce.scopes.clone())),
        spot: gce.spot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::tests::settings;

    #[test]
    fn specs_carry_ownership_labels_tags_and_metadata() {
        let mut s = settings();
        s.gce.labels.insert("team".into(), "ci".into());
        s.gce.labels.insert(MANAGER_LABEL.into(), "spoofed".into());
        s.gce.tags = vec!["custom".into(), RUNNER_TAG.into()];
        s.gce.docker_machine_tag = true;
        s.gce.internal_ip_only = true;
        s.gce.service_account = Some("vm@p.iam.gserviceaccount.com".into());
        let spec = instance_spec(
            &s,
            "runner-x-1",
            "zone-a",
            vec![
                ("flotilla-docker-ca".into(), "PEM".into()),
                ("startup-script".into(), "evil".into()),
            ],
        );
        assert_eq!(spec.labels.get(MANAGER_LABEL), Some(&s.manager_id));
        assert_eq!(spec.labels.get(RUNNER_LABEL), Some(&s.runner_label));
        assert_eq!(spec.labels.get("team").map(String::as_str), Some("ci"));
        assert_eq!(spec.tags, vec!["custom", RUNNER_TAG, "docker-machine"]);
        assert!(!spec.external_ip);
        assert_eq!(
            spec.service_account.as_ref().map(|(e, _)| e.as_str()),
            Some("vm@p.iam.gserviceaccount.com")
        );
        let keys: Vec<&str> = spec.metadata.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec!["flotilla-docker-ca", "startup-script", DOCKER_PORT_KEY]
        );
        assert_eq!(spec.metadata[1].1, STARTUP_SCRIPT);
        assert_eq!(spec.metadata[2].1, s.gce.docker_port.to_string());
    }
}
