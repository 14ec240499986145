//! The docker+machine demo's live view: a task that samples the fake GitLab (jobs queued,
//! running, done; which VM each running job is on, from its trace), the fake Compute Engine
//! (VMs creating, running, removing by zone) and the Docker engine (which VMs have job
//! containers: a VM is busy when a running job names it or it holds a container labelled
//! `com.flotilla.vm=<its name>`) four times a second, shows one progress line
//! (an `indicatif` spinner on a terminal; a plain line on change, at most every few seconds,
//! otherwise), and keeps the tallies the summary needs: every VM that came up and its zone, and
//! idle and busy VM-seconds. Reads the fakes; changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outcome::vm_and_zone;
use crate::gce::{InstanceView, VM_LABEL};
use crate::{FakeGce, FakeGitlab, JobState};

/// How to read the progress line.
pub(super) const LEGEND: &str =
    "progress: jobs queued, running, done │ per zone: VMs creating/idle/busy/removing";
/// How often the fakes are sampled.
const TICK: Duration = Duration::from_millis(250);
/// Without a terminal, a changed line is printed at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(3);

/// VMs of one zone by what they do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct VmCounts {
    /// Inserted, not RUNNING yet.
    pub creating: usize,
    /// RUNNING with no job on it.
    pub idle: usize,
    /// RUNNING a job.
    pub busy: usize,
    /// Being deleted.
    pub removing: usize,
}

/// What the progress line shows at one moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// Jobs not handed out yet.
    pub queued: usize,
    /// Jobs handed out and not finished.
    pub running: usize,
    /// Finished jobs.
    pub done: usize,
    /// VMs by zone, every configured zone present.
    pub zones: BTreeMap<String, VmCounts>,
}

impl Snapshot {
    /// Counts `jobs` (state, and the VM a running job is on) and `vms` over `zones`; a RUNNING
    /// VM is busy when a running job names it or it is in `with_containers`.
    pub(super) fn of(
        jobs: &[(JobState, Option<String>)],
        vms: &[InstanceView],
        with_containers: &BTreeSet<String>,
        zones: &[String],
    ) -> Snapshot {
        let mut s = Snapshot {
            zones: zones
                .iter()
                .map(|z| (z.clone(), VmCounts::default()))
                .collect(),
            ..Snapshot::default()
        };
        let mut busy = with_containers.clone();
        for (state, vm) in jobs {
            match state {
                JobState::Pending | JobState::AwaitingAck => s.queued += 1,
                JobState::Running | JobState::Canceling => {
                    s.running += 1;
                    busy.extend(vm.iter().cloned());
                }
                JobState::Success | JobState::Failed | JobState::Canceled => s.done += 1,
            }
        }
        for vm in vms {
            let counts = s.zones.entry(vm.zone.clone()).or_default();
            match vm.status.as_str() {
                "PROVISIONING" | "STAGING" => counts.creating += 1,
                "RUNNING" if busy.contains(&vm.name) => counts.busy += 1,
                "RUNNING" => counts.idle += 1,
                _ => counts.removing += 1,
            }
        }
        s
    }

    /// VMs idle and busy over every zone.
    fn idle_busy(&self) -> (usize, usize) {
        self.zones
            .values()
            .fold((0, 0), |(i, b), c| (i + c.idle, b + c.busy))
    }

    /// The one-line view, short enough for an 80-column terminal with two zones: VMs per zone
    /// as creating/idle/busy/removing ([`LEGEND`]).
    pub(super) fn line(&self) -> String {
        let mut line = format!(
            "{} queued, {} running, {} done",
            self.queued, self.running, self.done
        );
        for (zone, c) in &self.zones {
            line.push_str(&format!(
                " │ {zone} {}/{}/{}/{}",
                c.creating, c.idle, c.busy, c.removing
            ));
        }
        line
    }
}

/// What the sampler counted over the whole run.
#[derive(Debug, Default, Clone)]
pub(super) struct Tally {
    /// Every VM that booted (reached STAGING or later), with its zone.
    pub vms: BTreeMap<String, String>,
    /// Sum over samples of idle VMs × time.
    pub idle_secs: f64,
    /// Sum over samples of busy VMs × time.
    pub busy_secs: f64,
}

/// The running sampler. Made by [`Progress::start`], ended by [`Progress::finish`].
pub(super) struct Progress {
    bar: Option<ProgressBar>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Tally>,
}

impl Progress {
    /// Starts sampling the jobs whose ids are in `jobs` (the demo adds ids as it enqueues) and
    /// the fake's VMs in `zones`.
    pub(super) fn start(
        gitlab: FakeGitlab,
        gce: Arc<FakeGce>,
        zones: Vec<String>,
        jobs: Arc<Mutex<Vec<i64>>>,
    ) -> Progress {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {wide_msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let stop = CancellationToken::new();
        let sampler = Sampler {
            gitlab,
            gce,
            zones,
            jobs,
            bar: bar.clone(),
            vm_of_job: HashMap::new(),
            tally: Tally::default(),
        };
        let task = tokio::spawn(sampler.run(stop.clone()));
        Progress { bar, stop, task }
    }

    /// Prints `line` above the progress line (or as a plain line).
    pub(super) fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    /// Stops sampling, clears the progress line and returns the tallies.
    pub(super) async fn finish(self) -> Tally {
        self.stop.cancel();
        let tally = self.task.await.unwrap_or_default();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        tally
    }
}

/// The sampling task's state.
struct Sampler {
    gitlab: FakeGitlab,
    gce: Arc<FakeGce>,
    zones: Vec<String>,
    jobs: Arc<Mutex<Vec<i64>>>,
    bar: Option<ProgressBar>,
    /// The VM each job's trace named (read once found).
    vm_of_job: HashMap<i64, String>,
    tally: Tally,
}

impl Sampler {
    async fn run(mut self, stop: CancellationToken) -> Tally {
        let docker = match Docker::connect_with_local_defaults() {
            Ok(d) => d.negotiate_version().await.ok(),
            Err(_) => None,
        };
        let started = Instant::now();
        let mut last = Instant::now();
        let mut printed: Option<(Instant, String)> = None;
        loop {
            let with_containers = match &docker {
                Some(d) => vms_with_containers(d).await,
                None => BTreeSet::new(),
            };
            let snap = self.sample(last.elapsed(), &with_containers);
            last = Instant::now();
            let line = snap.line();
            match &self.bar {
                Some(bar) => bar.set_message(line),
                None => {
                    let due = printed
                        .as_ref()
                        .is_none_or(|(at, old)| *old != line && at.elapsed() >= PLAIN_EVERY);
                    if due {
                        println!("[{:>4}s] {line}", started.elapsed().as_secs());
                        printed = Some((Instant::now(), line));
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return self.tally,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Reads both fakes once, adds `dt` of idle and busy time to the tallies.
    fn sample(&mut self, dt: Duration, with_containers: &BTreeSet<String>) -> Snapshot {
        let ids = self.jobs.lock().map(|j| j.clone()).unwrap_or_default();
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(record) = self.gitlab.job(id) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = self.vm_of_job.entry(id) {
                if let Some((vm, _)) = vm_and_zone(&record.trace_text()) {
                    slot.insert(vm);
                }
            }
            jobs.push((record.state, self.vm_of_job.get(&id).cloned()));
        }
        let vms = self.gce.instances();
        for vm in &vms {
            if vm.status != "PROVISIONING" {
                self.tally.vms.insert(vm.name.clone(), vm.zone.clone());
            }
        }
        let snap = Snapshot::of(&jobs, &vms, with_containers, &self.zones);
        let (idle, busy) = snap.idle_busy();
        self.tally.idle_secs += idle as f64 * dt.as_secs_f64();
        self.tally.busy_secs += busy as f64 * dt.as_secs_f64();
        snap
    }
}

/// The VM names on the containers of the engine that carry `com.flotilla.vm` (empty when the
/// engine does not answer: the live view then relies on the traces alone).
async fn vms_with_containers(docker: &Docker) -> BTreeSet<String> {
    let filters = HashMap::from([("label".to_owned(), vec![VM_LABEL.to_owned()])]);
    let opts = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    docker
        .list_containers(Some(opts))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.labels?.remove(VM_LABEL))
        .filter(|vm| !vm.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, zone: &str, status: &str) -> InstanceView {
        InstanceView {
            id: 1,
            name: name.to_owned(),
            zone: zone.to_owned(),
            status: status.to_owned(),
            labels: BTreeMap::new(),
            network_ip: None,
            nat_ip: None,
            metadata_keys: Vec::new(),
            scheduling: crate::gce::Scheduling {
                provisioning_model: "STANDARD".to_owned(),
                preemptible: false,
                instance_termination_action: None,
                automatic_restart: true,
                on_host_maintenance: "MIGRATE".to_owned(),
            },
        }
    }

    #[test]
    fn counts_jobs_and_vms_by_zone() {
        let zones = vec!["a".to_owned(), "b".to_owned()];
        let jobs = vec![
            (JobState::Pending, None),
            (JobState::AwaitingAck, None),
            (JobState::Running, Some("vm1".to_owned())),
            (JobState::Running, None),
            (JobState::Success, Some("vm0".to_owned())),
            (JobState::Failed, None),
        ];
        let vms = vec![
            vm("vm1", "a", "RUNNING"),
            vm("vm2", "a", "RUNNING"),
            vm("vm3", "a", "STAGING"),
            vm("vm0", "a", "STOPPING"),
            vm("vm4", "b", "RUNNING"),
        ];
        let containers = BTreeSet::from(["vm4".to_owned(), "vm0".to_owned()]);
        let s = Snapshot::of(&jobs, &vms, &containers, &zones);
        assert_eq!((s.queued, s.running, s.done), (2, 2, 2));
        let a = VmCounts {
            creating: 1,
            idle: 1,
            busy: 1,
            removing: 1,
        };
        let b = VmCounts {
            busy: 1,
            ..VmCounts::default()
        };
        assert_eq!(s.zones["a"], a);
        assert_eq!(s.zones["b"], b);
        assert_eq!(
            s.line(),
            "2 queued, 2 running, 2 done │ a 1/1/1/1 │ b 0/0/1/0"
        );
    }
}
