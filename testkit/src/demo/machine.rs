//! `testkit demo` (the default): flotilla's `docker+machine` executor on the fake Compute Engine.
//! Starts the fake GitLab (with the sample repository) and the fake GCE (two zones, VMs booting
//! in a few seconds, each a mutual-TLS endpoint to the local Docker engine), writes a config
//! (warm pool `IdleCount = 2`, `MaxBuilds = 1`, `limit = 4`, the admin server on a free local
//! port), runs the real `flotilla run`, waits for the warm pool, enqueues a burst of jobs larger
//! than the pool, stocks out the preferred zone part-way, enqueues `test` once `build`
//! succeeded, drains flotilla with SIGQUIT, then prints each job's final state with its VM and
//! zone, the summary table and the leftover check. The order of events lives here; the jobs,
//! the live view, the per-job reading, the table and the leak check live in sibling files.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::time::Instant;

use super::child::Flotilla;
use super::leftovers;
use super::outcome::Outcome;
use super::progress::{Progress, Tally, LEGEND};
use super::samples::{samples, test_sample, work_samples, Sample, IMAGE};
use super::summary::Summary;
use super::DemoOptions;
use crate::{FakeGce, FakeGceOptions, FakeGitlab, FakeGitlabOptions, GceFault, JobState, ZoneSpec};

/// The preferred zone, stocked out part-way.
const ZONE_A: &str = "us-central1-a";
/// The fallback zone.
const ZONE_B: &str = "us-central1-b";
/// Insert → RUNNING in the fake.
const BOOT: Duration = Duration::from_secs(3);
/// Idle VMs the pool keeps.
const IDLE_COUNT: usize = 2;
/// The runner's `limit` (VMs in every state, and jobs).
const LIMIT: usize = 4;
/// Short jobs added to the samples to make the burst.
const WORK_JOBS: usize = 7;
/// The zone runs out of capacity once this many jobs are done.
const STOCKOUT_AFTER_DONE: usize = 4;
/// The whole run must end within this.
const DEADLINE: Duration = Duration::from_secs(150);

fn config(gitlab: &FakeGitlab, token: &str, gce: &FakeGce, admin: &str, dir: &Path) -> String {
    format!(
        r#"concurrent = {LIMIT}
check_interval = 1
log_level = "info"
listen_address = "{admin}"
state_dir = "{state}"
manager_id = "demo-{manager:08x}"
shutdown_timeout = 30

[[runners]]
name = "demo-machine"
url = "{url}"
token = "{token}"
executor = "docker+machine"
limit = {LIMIT}
[runners.machine]
IdleCount = {IDLE_COUNT}
IdleTime = 60
MaxBuilds = 1
MaxGrowthRate = 2
MachineName = "demo-%s"
[runners.gce]
project = "{project}"
zones = ["{ZONE_A}", "{ZONE_B}"]
endpoint = "{endpoint}"
create_timeout = 60
zone_cooldown = 600
[runners.docker]
image = "{IMAGE}"
pull_policy = ["if-not-present"]
network_mode = "host"
"#,
        state = dir.join("state").display(),
        manager = rand::random::<u32>(),
        url = gitlab.url(),
        project = gce.project(),
        endpoint = gce.endpoint(),
    )
}

/// A local address nothing listens on now, for flotilla's admin server.
fn free_local_addr() -> anyhow::Result<String> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(probe.local_addr()?.to_string())
}

/// The jobs enqueued so far, with what the summary needs of each.
#[derive(Default)]
struct Enqueued {
    /// (id, name, expected state, when enqueued)
    jobs: Vec<(i64, String, JobState, SystemTime)>,
    /// Ids, shared with the live view.
    ids: Arc<Mutex<Vec<i64>>>,
}

impl Enqueued {
    fn add(&mut self, gitlab: &FakeGitlab, token: &str, sample: Sample) -> i64 {
        let at = SystemTime::now();
        let id = gitlab.enqueue(token, sample.payload);
        self.jobs.push((id, sample.name, sample.expect, at));
        if let Ok(mut ids) = self.ids.lock() {
            ids.push(id);
        }
        id
    }
}

/// Runs the docker+machine demo; whether everything ended as expected and nothing was left.
pub(super) async fn run(opts: &DemoOptions) -> anyhow::Result<bool> {
    let (gitlab, repos) = FakeGitlab::start_with_git(FakeGitlabOptions {
        trace_update_interval_secs: Some(1),
        ..FakeGitlabOptions::default()
    })
    .await?;
    let token = format!(
        "glrt-t1_demo{:012x}",
        rand::random::<u64>() & 0xffff_ffff_ffff
    );
    gitlab.add_runner(&token);
    let gce = Arc::new(
        FakeGce::start(FakeGceOptions {
            zones: vec![ZoneSpec::new(ZONE_A, BOOT), ZoneSpec::new(ZONE_B, BOOT)],
            delete_latency: Duration::from_secs(1),
            ..FakeGceOptions::default()
        })
        .await?,
    );
    let dir = tempfile::Builder::new()
        .prefix("flotilla-demo-")
        .tempdir()?;
    let admin = free_local_addr()?;
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        config(&gitlab, &token, &gce, &admin, dir.path()),
    )?;
    let log_path = dir.path().join("flotilla.log");

    println!("Flotilla demo: executor \"docker+machine\" on a fake Compute Engine, jobs from a fake GitLab");
    println!("  fake GitLab     {}", gitlab.url());
    println!("  fake GCE        {} (zones {ZONE_A}, {ZONE_B}; VMs boot in {}s and serve Docker over mutual TLS)", gce.endpoint(), BOOT.as_secs());
    println!("  status page     http://{admin}/status");
    println!("  metrics         http://{admin}/metrics");
    println!("  config          {}", config_path.display());
    println!("  flotilla's log  {}", log_path.display());
    println!("  pool            IdleCount {IDLE_COUNT}, MaxBuilds 1, limit {LIMIT}");
    println!("{LEGEND}\n");

    let started = Instant::now();
    let mut flotilla = Flotilla::spawn(&opts.flotilla, &config_path, Some(&log_path))?;
    let mut enqueued = Enqueued::default();
    let zones = vec![ZONE_A.to_owned(), ZONE_B.to_owned()];
    let progress = Progress::start(
        gitlab.clone(),
        gce.clone(),
        zones.clone(),
        enqueued.ids.clone(),
    );

    let driven = drive(
        &gitlab,
        &token,
        &gce,
        &repos,
        &progress,
        &mut enqueued,
        &mut flotilla,
    )
    .await;
    // Drained whatever happened, so flotilla deletes its VMs before the fakes stop.
    let drained = flotilla.drain(Duration::from_secs(60)).await;
    let elapsed = started.elapsed();
    let tally = progress.finish().await;
    let verdict = match (driven, drained) {
        (Ok(()), Ok(status)) => {
            println!("flotilla exited after SIGQUIT (drain): {status}\n");
            let end = End {
                tally: &tally,
                zones: &zones,
                elapsed,
            };
            conclude(opts, &gitlab, &gce, &enqueued, &end)
                .await
                .map(|ok| ok && status.success())
        }
        (Err(e), _) | (Ok(()), Err(e)) => {
            println!("the demo stopped: {e:#}");
            Ok(false)
        }
    };
    if !matches!(verdict, Ok(true)) {
        println!("flotilla's log is kept: {}", log_path.display());
        let _ = dir.keep();
    }
    if let Ok(gce) = Arc::try_unwrap(gce) {
        gce.shutdown().await;
    }
    gitlab.shutdown().await;
    verdict
}

/// What the run measured, for [`conclude`].
struct End<'a> {
    tally: &'a Tally,
    zones: &'a [String],
    elapsed: Duration,
}

/// After the drain: the leftover check, each job's final state (and trace with `--traces`),
/// the summary; whether every job ended as expected and nothing was left.
async fn conclude(
    opts: &DemoOptions,
    gitlab: &FakeGitlab,
    gce: &FakeGce,
    enqueued: &Enqueued,
    end: &End<'_>,
) -> anyhow::Result<bool> {
    // Flotilla confirmed its deletions before exiting; give the fake its delete latency.
    gce.wait_until(Duration::from_secs(5), |vms| vms.is_empty())
        .await;
    let seen: BTreeSet<String> = end.tally.vms.keys().cloned().collect();
    let left = leftovers::check(gce, &seen).await?;

    let mut outcomes = Vec::new();
    for (id, name, expect, at) in &enqueued.jobs {
        let record = gitlab
            .job(*id)
            .context("a job vanished from the fake GitLab")?;
        outcomes.push(Outcome::read(&record, name, *expect, *at));
    }
    if opts.traces {
        for o in &outcomes {
            println!("──────── job {} ({}) ────────\n{}", o.id, o.name, o.trace);
        }
    }
    println!("Jobs (final state, VM and zone, wait from enqueue to first script output):");
    for o in &outcomes {
        println!("  {}", o.line());
    }
    let calls = gce.calls();
    let summary = Summary {
        outcomes: &outcomes,
        tally: end.tally,
        calls: &calls,
        zones: end.zones,
        leftovers: &left,
        elapsed: end.elapsed,
    };
    println!("\nSummary:\n{}", summary.render());
    if left.is_empty() {
        println!("demo: nothing was left behind");
    } else {
        println!("demo: LEFT BEHIND: {}", left.describe());
    }
    Ok(outcomes.iter().all(Outcome::as_expected) && left.is_empty())
}

/// The run itself: warm pool, burst, stockout part-way, `test` after `build`, until every job
/// is finished (or the deadline passes, or flotilla exits).
async fn drive(
    gitlab: &FakeGitlab,
    token: &str,
    gce: &FakeGce,
    repos: &crate::GitRepos,
    progress: &Progress,
    enqueued: &mut Enqueued,
    flotilla: &mut Flotilla,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    let warm_by = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = flotilla.exited() {
            anyhow::bail!("flotilla exited before its pool was warm: {status}");
        }
        let warm = gce
            .wait_until(Duration::from_millis(500), |vms| {
                vms.iter().filter(|v| v.status == "RUNNING").count() >= IDLE_COUNT
            })
            .await;
        if warm {
            break;
        }
        anyhow::ensure!(
            Instant::now() < warm_by,
            "the warm pool of {IDLE_COUNT} VMs did not come up within 60 s"
        );
    }
    let burst: Vec<Sample> = samples(repos)?
        .into_iter()
        .chain(work_samples(WORK_JOBS))
        .collect();
    progress.println(&format!(
        "warm pool ready ({IDLE_COUNT} idle VMs); enqueuing a burst of {} jobs",
        burst.len()
    ));
    let mut build_id = None;
    for sample in burst {
        let is_build = sample.name == "build";
        let id = enqueued.add(gitlab, token, sample);
        if is_build {
            build_id = Some(id);
        }
    }
    let mut stocked_out = false;
    let mut test_enqueued = false;
    loop {
        if let Some(status) = flotilla.exited() {
            anyhow::bail!("flotilla exited early: {status}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the jobs did not finish within {DEADLINE:?}"
        );
        let records: Vec<_> = enqueued
            .jobs
            .iter()
            .filter_map(|(id, ..)| gitlab.job(*id))
            .collect();
        let done = records.iter().filter(|r| r.state.is_finished()).count();
        if !stocked_out && done >= STOCKOUT_AFTER_DONE {
            gce.inject(GceFault::Stockout {
                zone: ZONE_A.to_owned(),
                with_details: false,
            });
            progress.println(&format!(
                "{done} jobs done: {ZONE_A} is now out of capacity (ZONE_RESOURCE_POOL_EXHAUSTED); new VMs must go to {ZONE_B}"
            ));
            stocked_out = true;
        }
        if let Some(build) = build_id.filter(|_| !test_enqueued) {
            if let Some(r) = records
                .iter()
                .find(|r| r.id == build && r.state.is_finished())
            {
                if r.state == JobState::Success {
                    let size = gitlab.artifacts(build).first().map_or(0, |a| a.bytes.len());
                    enqueued.add(gitlab, token, test_sample(build, size));
                    progress
                        .println("build succeeded: enqueued test, which downloads its artifacts");
                }
                test_enqueued = true;
            }
        }
        if test_enqueued && done == records.len() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
