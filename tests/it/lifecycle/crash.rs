//! `kill -9` of the real binary at random moments — while a VM is being created, while a job
//! runs, while VMs are being deleted — then a restart with the same `state_dir`: every VM of the
//! killed process is deleted by the restart's first reconcile (the startup listing), and the
//! acknowledged jobs it was running are reported failed (`runner_system_failure`).

use super::*;
use crate::process::Running;
use std::collections::BTreeSet;
use testkit::JobState;

/// Kills and restarts this many times.
const ITERATIONS: usize = 21;

/// The moment a kill aims at.
#[derive(Debug, Clone, Copy)]
enum Moment {
    Creating,
    Job,
    Deleting,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_leaks_no_vm_and_fails_the_jobs_it_was_running() {
    let fleet = Fleet::start_with(
        fast_trace(),
        Duration::from_millis(400),
        Duration::from_millis(400),
    )
    .await;
    let path = fleet.write_config(&fleet.config_text(
        "",
        "",
        "IdleCount = 1\nIdleTime = 600\nMaxBuilds = 1",
    ));
    let mut manager = Running::start(&path, fleet.dir.path(), "crash-0");
    let mut failed_jobs = 0;
    let mut moments = Vec::new();
    let mut enqueued = Vec::new();
    for i in 0..ITERATIONS {
        let moment = [Moment::Creating, Moment::Job, Moment::Deleting][i % 3];
        let marker = format!("crash-job-{i}");
        match moment {
            Moment::Creating => {
                // The job takes the idle VM; the pool makes another to keep IdleCount.
                enqueued.push(fleet.enqueue(&[&format!("echo {marker}")]));
                fleet
                    .wait_ours("a VM being created", DEADLINE, |vms| {
                        vms.iter()
                            .any(|v| v.status == "PROVISIONING" || v.status == "STAGING")
                    })
                    .await;
            }
            Moment::Job => {
                let id = fleet.enqueue(&[&format!("echo {marker}"), "sleep 300"]);
                enqueued.push(id);
                trace_shows(&fleet.gitlab, id, &marker).await;
            }
            Moment::Deleting => {
                // MaxBuilds = 1: the job's VM is deleted after it.
                enqueued.push(fleet.enqueue(&[&format!("echo {marker}")]));
                fleet
                    .wait_ours("a VM being deleted", DEADLINE, |vms| {
                        vms.iter().any(|v| v.status == "STOPPING")
                    })
                    .await;
            }
        }
        // A random moment within the phase.
        let jitter = Duration::from_millis(rand::random::<u64>() % 150);
        tokio::time::sleep(jitter).await;
        manager.signal("KILL");
        manager.wait_exit(DEADLINE).await;
        moments.push((moment, jitter));

        let leftovers: BTreeSet<String> = fleet.ours().into_iter().map(|v| v.name).collect();
        let running: Vec<i64> = enqueued
            .iter()
            .filter_map(|id| fleet.gitlab.job(*id))
            .filter(|j| j.state == JobState::Running)
            .map(|j| j.id)
            .collect();

        manager = Running::start(&path, fleet.dir.path(), &format!("crash-{}", i + 1));
        fleet
            .wait_ours("every VM of the killed process deleted", DEADLINE, |vms| {
                vms.iter().all(|v| !leftovers.contains(&v.name))
            })
            .await;
        for id in running {
            let record = fleet
                .gitlab
                .wait_job(id, DEADLINE, |j| j.state.is_finished())
                .await
                .unwrap_or_else(|e| panic!("job {id} was not reported after the restart: {e}"));
            assert_eq!(record.state, JobState::Failed, "job {id}");
            assert_eq!(
                record.failure_reason.as_deref(),
                Some("runner_system_failure"),
                "job {id}"
            );
            failed_jobs += 1;
        }
    }
    assert!(
        failed_jobs >= ITERATIONS / 3,
        "every job killed mid-run was failed ({failed_jobs}); moments: {moments:?}"
    );
    manager.signal("QUIT");
    let status = manager.wait_exit(DEADLINE).await;
    assert!(status.success(), "{status:?}\n{}", manager.log());
    assert!(fleet.ours().is_empty(), "VMs left: {:#?}", fleet.ours());
    let jobs_json =
        std::fs::read_to_string(fleet.state_dir().join("jobs.json")).unwrap_or_default();
    assert!(
        !jobs_json.contains("\"id\""),
        "jobs.json cleared: {jobs_json}"
    );
    fleet.stop().await;
}
