//! Tests of the pool actor against an in-memory cloud ([`fake_cloud`]) and a fake connector,
//! on tokio's paused clock (boot latency and timeouts are virtual time).

mod env;
mod fake_cloud;
mod ownership;
mod pool;

use super::FleetSettings;
use crate::config::{GceConfig, MachineConfig};
use std::collections::BTreeMap;
use std::time::Duration;

/// Settings for a pool in tests: two zones, IdleCount 0, no limit.
pub(crate) fn settings() -> FleetSettings {
    FleetSettings {
        manager_id: "mgr1".into(),
        runner_label: super::names::runner_label("glrt-test-token"),
        short_token: "testtoken".into(),
        limit: 0,
        machine: MachineConfig {
            idle_count: 0,
            idle_count_min: 0,
            idle_scale_factor: 0.0,
            idle_time: Duration::from_secs(600),
            max_builds: 0,
            max_growth_rate: 0,
            machine_name: "auto-%s".into(),
            autoscaling: vec![],
            idle_count_policy: Default::default(),
            runner_name_prefix: true,
        },
        gce: GceConfig {
            project: "proj".into(),
            zones: vec!["us-central1-a".into(), "us-central1-b".into()],
            machine_type: "e2-standard-2".into(),
            image: "projects/cos-cloud/global/images/family/cos-stable".into(),
            disk_size_gb: 50,
            disk_type: "pd-balanced".into(),
            network: "default".into(),
            subnetwork: None,
            use_internal_ip: true,
            internal_ip_only: false,
            tags: vec![],
            labels: BTreeMap::new(),
            service_account: None,
            scopes: vec![],
            spot: false,
            endpoint: None,
            credentials_file: None,
            create_timeout: Duration::from_secs(600),
            docker_port: 2376,
            api_rate_per_minute: 600,
            zone_cooldown: Duration::from_secs(300),
            queue_aware: true,
            docker_machine_tag: false,
        },
        reconcile_interval: Duration::from_secs(60),
        queue_aware: true,
        clock: super::WallClock::system(),
    }
}
