//! The wire shapes of a VM: [`instance_body`] turns the fleet's [`InstanceSpec`] into the
//! `instances.insert` body (with Flotilla's fixed choices: no automatic restart, Spot VMs deleted
//! on preemption, a service account only when asked), [`instance_from_model`] reads an Instance
//! back, and [`label_filter`] writes the AIP-160 filter of a label listing. Pure; no I/O.

use std::collections::BTreeMap;
use std::net::IpAddr;

use google_cloud_compute_v1::model::{
    access_config, metadata, scheduling, AccessConfig, AttachedDisk, AttachedDiskInitializeParams,
    Instance as GceInstance, Metadata, NetworkInterface, Scheduling, ServiceAccount, Tags,
};

use crate::cloud::{Instance, InstanceSpec, InstanceStatus};

/// `zones/<zone>/<kind>/<name>` unless `name` is already a path or URL.
fn zonal(zone: &str, kind: &str, name: &str) -> String {
    if name.contains('/') {
        name.to_owned()
    } else {
        format!("zones/{zone}/{kind}/{name}")
    }
}

/// The region of a zone name (`us-central1-a` → `us-central1`).
pub fn region_of(zone: &str) -> &str {
    zone.rsplit_once('-').map(|(r, _)| r).unwrap_or(zone)
}

/// The `instances.insert` body for `spec`.
pub fn instance_body(spec: &InstanceSpec) -> GceInstance {
    let zone = spec.zone.as_str();
    let disk = AttachedDisk::new()
        .set_boot(true)
        .set_auto_delete(true)
        .set_initialize_params(
            AttachedDiskInitializeParams::new()
                .set_source_image(spec.image.clone())
                .set_disk_size_gb(i64::try_from(spec.disk_size_gb).unwrap_or(i64::MAX))
                .set_disk_type(zonal(zone, "diskTypes", &spec.disk_type)),
        );
    let network = if spec.network.contains('/') {
        spec.network.clone()
    } else {
        format!("global/networks/{}", spec.network)
    };
    let mut nic = NetworkInterface::new().set_network(network);
    if let Some(sub) = &spec.subnetwork {
        let sub = if sub.contains('/') {
            sub.clone()
        } else {
            format!("regions/{}/subnetworks/{sub}", region_of(zone))
        };
        nic = nic.set_subnetwork(sub);
    }
    if spec.external_ip {
        nic = nic.set_access_configs([AccessConfig::new()
            .set_name("External NAT")
            .set_type(access_config::Type::OneToOneNat)]);
    }
    // A host-failure restart would bring back an empty dockerd that looks healthy.
    let mut sched = Scheduling::new().set_automatic_restart(false);
    if spec.spot {
        sched = sched
            .set_provisioning_model(scheduling::ProvisioningModel::Spot)
            .set_instance_termination_action(scheduling::InstanceTerminationAction::Delete)
            .set_on_host_maintenance(scheduling::OnHostMaintenance::Terminate);
    }
    let items = spec.metadata.iter().map(|(k, v)| {
        metadata::Items::new()
            .set_key(k.clone())
            .set_value(v.clone())
    });
    let mut body = GceInstance::new()
        .set_name(spec.name.clone())
        .set_machine_type(zonal(zone, "machineTypes", &spec.machine_type))
        .set_disks([disk])
        .set_network_interfaces([nic])
        .set_metadata(Metadata::new().set_items(items))
        .set_labels(spec.labels.clone())
        .set_tags(Tags::new().set_items(spec.tags.clone()))
        .set_scheduling(sched);
    if let Some((email, scopes)) = &spec.service_account {
        body = body.set_service_accounts([ServiceAccount::new()
            .set_email(email.clone())
            .set_scopes(scopes.clone())]);
    }
    body
}

/// The last path segment of a Compute link (`.../zones/us-central1-a` → `us-central1-a`).
pub fn short_name(link: &str) -> &str {
    link.rsplit('/').next().unwrap_or(link)
}

/// An Instance's `status` string as the fleet reads it.
pub fn status_of(raw: Option<&str>) -> InstanceStatus {
    match raw.unwrap_or_default() {
        "PROVISIONING" => InstanceStatus::Provisioning,
        "STAGING" => InstanceStatus::Staging,
        "RUNNING" => InstanceStatus::Running,
        "STOPPING" => InstanceStatus::Stopping,
        "TERMINATED" => InstanceStatus::Terminated,
        other => InstanceStatus::Other(other.to_owned()),
    }
}

/// Reads a listed or fetched Instance; `fallback_zone` is used when it names none. Addresses
/// that do not parse are treated as absent.
pub fn instance_from_model(i: &GceInstance, fallback_zone: &str) -> Instance {
    let nic = i.network_interfaces.first();
    let parse = |s: Option<&String>| s.and_then(|s| s.parse::<IpAddr>().ok());
    let internal_ip = parse(nic.and_then(|n| n.network_ip.as_ref()));
    let external_ip = parse(
        nic.and_then(|n| n.access_configs.first())
            .and_then(|a| a.nat_ip.as_ref()),
    );
    Instance {
        name: i.name.clone().unwrap_or_default(),
        zone: i
            .zone
            .as_deref()
            .map(short_name)
            .unwrap_or(fallback_zone)
            .to_owned(),
        status: status_of(i.status.as_ref().and_then(|s| s.name())),
        internal_ip,
        external_ip,
        labels: i
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The AIP-160 filter selecting every label of `labels`: `(labels.k = "v") (labels.k2 = "v2")`
/// (parenthesised clauses are ANDed). `None` when `labels` is empty.
pub fn label_filter(labels: &BTreeMap<String, String>) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let quote = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let clauses: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("(labels.{k} = \"{}\")", quote(v)))
        .collect();
    Some(clauses.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(spot: bool) -> InstanceSpec {
        InstanceSpec {
            name: "runner-1".into(),
            zone: "us-central1-a".into(),
            machine_type: "e2-standard-4".into(),
            image: "projects/debian-cloud/global/images/family/debian-12".into(),
            disk_size_gb: 50,
            disk_type: "pd-balanced".into(),
            network: "default".into(),
            subnetwork: Some("runners".into()),
            external_ip: true,
            tags: vec!["flotilla-runner".into()],
            labels: BTreeMap::from([("flotilla-pool".into(), "pool-a".into())]),
            metadata: vec![("startup-script".into(), "#!/bin/sh\n".into())],
            service_account: None,
            spot,
        }
    }

    fn wire(spec: &InstanceSpec) -> serde_json::Value {
        serde_json::to_value(instance_body(spec)).expect("serialises")
    }

    #[test]
    fn body_has_tag_paths_and_no_restart() {
        let v = wire(&spec(false));
        assert_eq!(v["tags"]["items"], json!(["flotilla-runner"]));
        assert_eq!(v["scheduling"]["automaticRestart"], json!(false));
        assert!(v["scheduling"].get("provisioningModel").is_none());
        assert_eq!(
            v["machineType"],
            json!("zones/us-central1-a/machineTypes/e2-standard-4")
        );
        let disk = &v["disks"][0];
        assert_eq!(disk["boot"], json!(true));
        assert_eq!(disk["autoDelete"], json!(true));
        assert_eq!(
            disk["initializeParams"]["diskType"],
            json!("zones/us-central1-a/diskTypes/pd-balanced")
        );
        assert_eq!(disk["initializeParams"]["diskSizeGb"], json!("50"));
        let nic = &v["networkInterfaces"][0];
        assert_eq!(nic["network"], json!("global/networks/default"));
        assert_eq!(
            nic["subnetwork"],
            json!("regions/us-central1/subnetworks/runners")
        );
        assert_eq!(
            nic["accessConfigs"],
            json!([{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}])
        );
        assert_eq!(
            v["metadata"]["items"],
            json!([{"key": "startup-script", "value": "#!/bin/sh\n"}])
        );
        assert_eq!(v["labels"], json!({"flotilla-pool": "pool-a"}));
        assert!(v.get("serviceAccounts").is_none());
    }

    #[test]
    fn spot_is_deleted_on_preemption() {
        let v = wire(&spec(true));
        assert_eq!(v["scheduling"]["provisioningModel"], json!("SPOT"));
        assert_eq!(
            v["scheduling"]["instanceTerminationAction"],
            json!("DELETE")
        );
        assert_eq!(v["scheduling"]["onHostMaintenance"], json!("TERMINATE"));
        assert_eq!(v["scheduling"]["automaticRestart"], json!(false));
    }

    #[test]
    fn internal_only_paths_kept_and_service_account() {
        let mut s = spec(false);
        s.external_ip = false;
        s.network = "projects/host/global/networks/shared".into();
        s.subnetwork = Some("regions/us-central1/subnetworks/x".into());
        s.service_account = Some(("sa@p.iam.gserviceaccount.com".into(), vec!["scope".into()]));
        let v = wire(&s);
        let nic = &v["networkInterfaces"][0];
        assert!(nic.get("accessConfigs").is_none());
        assert_eq!(
            nic["network"],
            json!("projects/host/global/networks/shared")
        );
        assert_eq!(
            nic["subnetwork"],
            json!("regions/us-central1/subnetworks/x")
        );
        assert_eq!(
            v["serviceAccounts"],
            json!([{"email": "sa@p.iam.gserviceaccount.com", "scopes": ["scope"]}])
        );
    }

    #[test]
    fn reads_instances_and_unknown_status() {
        let i: GceInstance = serde_json::from_value(json!({
            "name": "runner-1", "status": "PENDING_STOP",
            "zone": "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-b",
            "labels": {"a": "b"},
            "networkInterfaces": [{"networkIP": "10.0.0.7",
                                   "accessConfigs": [{"natIP": "not-an-ip"}]}]
        }))
        .expect("parses");
        let got = instance_from_model(&i, "zz");
        assert_eq!(got.zone, "us-central1-b");
        assert_eq!(got.status, InstanceStatus::Other("PENDING_STOP".into()));
        assert_eq!(got.internal_ip, Some("10.0.0.7".parse().expect("ip")));
        assert_eq!(got.external_ip, None);
        assert_eq!(got.labels.get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn filter_ands_label_clauses() {
        assert_eq!(label_filter(&BTreeMap::new()), None);
        let labels = BTreeMap::from([
            ("flotilla-pool".to_owned(), "a".to_owned()),
            ("flotilla-manager".to_owned(), "m-1".to_owned()),
        ]);
        assert_eq!(
            label_filter(&labels).as_deref(),
            Some(r#"(labels.flotilla-manager = "m-1") (labels.flotilla-pool = "a")"#)
        );
    }
}
