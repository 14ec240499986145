//! How many build and helper container starts the manager has in flight on one shared Docker
//! engine (the `docker` executor's local or configured host): at most [`STARTS_IN_FLIGHT`], the
//! others wait their turn in the manager (`container::run_script` takes a slot; service
//! containers, a few per job at most, do not). A burst of jobs otherwise sends every start at
//! once; dockerd answers them one after another all the same (on a 2-core engine 150 starts
//! took 15 s either way), while each waiting start holds an HTTP connection with its buffers
//! (≈ 35 KB): 150 at once were a tenth of the manager's memory with 150 jobs running. A
//! docker+machine VM runs one job and is not bounded. GitLab Runner has no such bound.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::Semaphore;

/// Container starts in flight per shared engine.
pub const STARTS_IN_FLIGHT: usize = 16;

/// The start slots of the engine at `host` (`None`: the local defaults), shared by every job on
/// it; one set per distinct host for the process's life (hosts come from the configuration).
pub fn start_slots(host: Option<&str>) -> Arc<Semaphore> {
    static BY_HOST: LazyLock<Mutex<HashMap<String, Arc<Semaphore>>>> =
        LazyLock::new(Mutex::default);
    BY_HOST
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(host.unwrap_or_default().to_owned())
        .or_insert_with(|| Arc::new(Semaphore::new(STARTS_IN_FLIGHT)))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_on_one_host_share_its_slots_and_other_hosts_have_their_own() {
        let local = start_slots(None);
        assert!(Arc::ptr_eq(&local, &start_slots(None)));
        let other = start_slots(Some("unix:///run/other-docker.sock"));
        assert!(!Arc::ptr_eq(&local, &other));
        assert_eq!(other.available_permits(), STARTS_IN_FLIGHT);
    }
}
