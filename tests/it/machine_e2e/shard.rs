//! A shard of managers: two `flotilla run` processes (in-process here, each with its own state
//! directory) on one runner token and one GCE project. Jobs spread over both, each keeps its
//! own `limit`, reconciles (every 2 s here) and deletes only its own VMs, and a drain of one
//! leaves the other's jobs and VMs alone. Two hosts configured with the same `manager_id`: the
//! one that finds the other's VMs stops with an error and deletes nothing.

use super::*;

/// [`Env::config_text`] for manager id `id`, reconciling every 2 s.
fn shard_config(env: &Env, dir: &std::path::Path, id: &str, machine: &str) -> String {
    env.config_text(dir, "limit = 2", machine, "")
        .replace(
            &format!("manager_id = \"{}\"", env.manager_id),
            &format!("manager_id = \"{id}\""),
        )
        .replace("reconcile_interval = 3600", "reconcile_interval = 2")
}

fn start(text: &str, dir: tempfile::TempDir) -> InProcessManager {
    InProcessManager::start_with(config(text), dir, Default::default())
}

/// The manager label of VM `name` in any sample.
fn manager_of(samples: &[Vec<InstanceView>], name: &str) -> Option<String> {
    samples
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .and_then(|v| v.labels.get(MANAGER_LABEL).cloned())
}

/// Whether one of `ids` is running on (was handed out to) the runner manager `system_id`.
fn one_runs_on(env: &Env, ids: &[i64], system_id: &str) -> bool {
    ids.iter()
        .filter_map(|id| env.gitlab.job(*id))
        .any(|j| j.state == JobState::Running && j.runner_manager.as_deref() == Some(system_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_share_a_runner_and_a_project_each_with_its_own_vms() {
    let env = Env::start().await;
    let (id_a, id_b) = (
        format!("{}-a", env.manager_id),
        format!("{}-b", env.manager_id),
    );
    let machine = "IdleCount = 1\nIdleTime = 600\nMaxBuilds = 1";
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(&shard_config(&env, dir_a.path(), &id_a, machine), dir_a);
    let b = start(&shard_config(&env, dir_b.path(), &id_b, machine), dir_b);
    for id in [&id_a, &id_b] {
        wait_for_manager_vms(&env.gce, id, "each manager warmed", DEADLINE, |vms| {
            vms.iter().any(|v| v.status == "RUNNING")
        })
        .await;
    }
    // Eight jobs at once: more than one manager's limit holds.
    let ids: Vec<i64> = (0..8)
        .map(|i| {
            let script = format!("echo shard-{i}; sleep 2");
            env.gitlab.enqueue(&env.token, job(&[&script], &[]))
        })
        .collect();
    // B drains while one of its jobs runs: its own jobs finish, its VMs go, A's stay. (Waiting
    // for any job to run is not enough: A may take the first ones before B polls.)
    eventually("a job runs on B", DEADLINE, || {
        one_runs_on(&env, &ids, &id_b)
    })
    .await;
    b.drain().await;
    let mut records = Vec::new();
    for id in ids {
        let record = env
            .gitlab
            .wait_job(id, DEADLINE, |j| j.state.is_finished())
            .await
            .expect("every job finishes");
        assert_success(&record);
        records.push(record);
    }
    let left_b: Vec<_> = env
        .gce
        .instances()
        .into_iter()
        .filter(|v| v.labels.get(MANAGER_LABEL) == Some(&id_b))
        .collect();
    assert!(left_b.is_empty(), "B left VMs after its drain: {left_b:#?}");
    // A still has its warm VM: B's drain and reconciles did not touch it.
    wait_for_manager_vms(&env.gce, &id_a, "A keeps its idle VM", DEADLINE, |vms| {
        vms.iter().any(|v| v.status == "RUNNING")
    })
    .await;
    a.drain().await;
    let samples = env.sampler.finish().await;
    let by_manager: BTreeSet<String> = records
        .iter()
        .filter_map(|r| manager_of(&samples, &vm_of(r).0))
        .collect();
    assert_eq!(
        by_manager,
        BTreeSet::from([id_a.clone(), id_b.clone()]),
        "jobs ran on both managers' VMs"
    );
    for id in [&id_a, &id_b] {
        let peak = samples
            .iter()
            .map(|s| {
                s.iter()
                    .filter(|v| v.labels.get(MANAGER_LABEL) == Some(id))
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(peak <= 2, "{id}: {peak} VMs at once with limit = 2");
    }
    assert!(env.gce.instances().is_empty(), "{:#?}", env.gce.instances());
    if let Ok(gce) = Arc::try_unwrap(env.gce) {
        gce.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_with_the_same_manager_id_stops_and_deletes_nothing() {
    let env = Env::start().await;
    let first = env.manager("", "IdleCount = 1\nIdleTime = 600", "");
    env.wait_ours("the first host warmed", DEADLINE, |vms| {
        vms.iter().any(|v| v.status == "RUNNING")
    })
    .await;
    let before: Vec<String> = env.ours().into_iter().map(|v| v.name).collect();
    // Same configuration (same manager_id), another state directory: another host.
    let second = env.manager("", "IdleCount = 1\nIdleTime = 600", "");
    let ended = tokio::time::timeout(DEADLINE, second.task)
        .await
        .expect("the second host stops on its own")
        .expect("no panic");
    match ended {
        Err(flotilla::manager::RunError::ManagerIdConflict { manager_id, seen }) => {
            assert_eq!(manager_id, env.manager_id);
            assert!(before.iter().any(|n| seen.contains(n.as_str())), "{seen}");
        }
        other => panic!("expected a manager id conflict, got {other:?}"),
    }
    let deletes = env
        .gce
        .calls()
        .into_iter()
        .filter(|c| c.api == "instances.delete")
        .count();
    assert_eq!(deletes, 0, "nothing was deleted");
    let after: Vec<String> = env.ours().into_iter().map(|v| v.name).collect();
    assert_eq!(before, after, "the first host's VMs are untouched");
    // The first host keeps serving.
    let record = env.run_job(&["echo still-here"]).await;
    assert_success(&record);
    env.finish(first).await;
}
