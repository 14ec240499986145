//! The runners of the process as a reload sees them: one [`RunnerState`] per `[[runners]]`
//! identity (URL + short token, as GitLab Runner's: a rename is not a new runner), with its VM
//! pool for docker+machine. A reload updates kept runners in place, starts added ones and
//! retires removed ones: their requesters stop, their jobs finish, their pool drains (idle VMs go
//! at once, busy ones after their job) and is shut down once their last job ended. A runner whose
//! VMs must come from another project or endpoint (or that changes executor) is retired and
//! started again with a new pool. A runner added back while its old pool still drains gets that
//! pool back (two pools with one runner label in one project would delete each other's VMs).

use super::machines::{cloud_key, CloudKey, Fleets, MachinesError};
use super::runner_loop::{self, RunnerState};
use super::Shared;
use crate::config::{Config, RunnerConfig, RunnerIdentity};
use crate::fleet::{FleetHandle, FleetSettings};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a retired runner's pool may take to confirm its deletions.
const RETIRE_DELETE_TIMEOUT: Duration = Duration::from_secs(600);

/// The live runners and those still finishing their jobs after a reload removed them. Owned by
/// the supervisor.
#[derive(Default)]
pub(super) struct Runners {
    active: BTreeMap<RunnerIdentity, Active>,
    retiring: Vec<Retiring>,
}

struct Active {
    state: Arc<RunnerState>,
    key: Option<CloudKey>,
}

/// A retired runner whose pool drains until its last job ends.
struct Retiring {
    identity: RunnerIdentity,
    key: Option<CloudKey>,
    fleet: FleetHandle,
    /// Who got the pool: the retire task (to shut it down) or a reload that added the runner back.
    claim: Arc<Mutex<Claim>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    Waiting,
    Revived,
    ShuttingDown,
}

/// Why a configuration cannot drive its docker+machine runners' pools: one message per runner.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub(super) struct PoolProblems(Vec<String>);

impl Runners {
    /// Starts every runner of `config` (a pool that cannot start fails the start).
    pub(super) async fn start(
        shared: &Arc<Shared>,
        fleets: &mut Fleets,
        config: &Config,
    ) -> Result<Runners, MachinesError> {
        let mut runners = Runners::default();
        for runner in &config.runners {
            let fleet = match cloud_key(runner) {
                Some(_) => Some(fleets.start(config, runner).await?),
                None => None,
            };
            runners.launch(shared, runner, fleet);
        }
        Ok(runners)
    }

    fn launch(&mut self, shared: &Arc<Shared>, runner: &RunnerConfig, fleet: Option<FleetHandle>) {
        let state = runner_loop::start(shared, Arc::new(runner.clone()), fleet);
        self.active.insert(
            runner.identity(),
            Active {
                state,
                key: cloud_key(runner),
            },
        );
    }

    /// The running state of the runner `id` (a token rotation holds its gate).
    pub(super) fn state(&self, id: &RunnerIdentity) -> Option<Arc<RunnerState>> {
        self.active.get(id).map(|a| a.state.clone())
    }

    /// Checks that every docker+machine runner of `config` can drive a pool, before a reload
    /// changes anything.
    pub(super) fn check(config: &Config, manager_id: &str) -> Result<(), PoolProblems> {
        let mut problems = Vec::new();
        for runner in config.runners.iter().filter(|r| cloud_key(r).is_some()) {
            let checked =
                FleetSettings::for_runner(config, runner, manager_id).and_then(|s| s.validate());
            if let Err(e) = checked {
                problems.push(e.to_string());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PoolProblems(problems))
        }
    }

    /// Applies a reloaded configuration to the runners (the caller already swapped
    /// `shared`'s config to `new`).
    pub(super) async fn apply(&mut self, shared: &Arc<Shared>, fleets: &mut Fleets, new: &Config) {
        self.retiring
            .retain(|r| *r.claim.lock().unwrap_or_else(|p| p.into_inner()) == Claim::Waiting);
        let wanted: BTreeMap<RunnerIdentity, &RunnerConfig> =
            new.runners.iter().map(|r| (r.identity(), r)).collect();
        let gone: Vec<RunnerIdentity> = self
            .active
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(active) = self.active.remove(&id) {
                tracing::info!(runner = %id.short_token, url = %crate::redact::url(&id.url), "runner removed: it takes no new jobs; its running jobs finish, then its VMs are deleted");
                self.retire(fleets, id, active);
            }
        }
        for (id, runner) in wanted {
            let key = cloud_key(runner);
            match self.active.get(&id) {
                Some(active) if active.key == key => {
                    active.state.update(shared, Arc::new(runner.clone()));
                    if let Some(fleet) = &active.state.fleet {
                        reconfigure(fleet, new, runner, &shared.system_id);
                    }
                }
                Some(_) => {
                    tracing::info!(runner = %id.short_token, "runner's VMs move to another project, endpoint or executor: the old pool drains, a new one starts");
                    if let Some(active) = self.active.remove(&id) {
                        self.retire(fleets, id.clone(), active);
                    }
                    self.add(shared, fleets, new, runner).await;
                }
                None => self.add(shared, fleets, new, runner).await,
            }
        }
    }

    /// Starts runner `runner` added by a reload, with its old pool if that still drains.
    async fn add(
        &mut self,
        shared: &Arc<Shared>,
        fleets: &mut Fleets,
        config: &Config,
        runner: &RunnerConfig,
    ) {
        let (id, key) = (runner.identity(), cloud_key(runner));
        let revived = self.revive(&id, &key);
        let fleet = match (revived, &key) {
            (Some(fleet), _) => {
                tracing::info!(runner = %id.short_token, "runner added back: its draining pool serves it again");
                fleet.set_draining(false);
                reconfigure(&fleet, config, runner, &shared.system_id);
                Some(fleet)
            }
            (None, Some(_)) => match fleets.start(config, runner).await {
                Ok(fleet) => Some(fleet),
                Err(e) => {
                    tracing::error!(runner = %id.short_token, error = %e, "cannot start the added runner's machine pool: the runner is not started");
                    return;
                }
            },
            (None, None) => None,
        };
        tracing::info!(runner = %id.short_token, url = %crate::redact::url(&id.url), "runner added");
        self.launch(shared, runner, fleet);
    }

    /// Takes back the draining pool of `id` if a retired runner of that identity and cloud has
    /// one that is not shutting down yet.
    fn revive(&mut self, id: &RunnerIdentity, key: &Option<CloudKey>) -> Option<FleetHandle> {
        key.as_ref()?;
        let at = self.retiring.iter().position(|r| {
            &r.identity == id
                && &r.key == key
                && *r.claim.lock().unwrap_or_else(|p| p.into_inner()) == Claim::Waiting
        })?;
        let retiring = self.retiring.remove(at);
        let mut claim = retiring.claim.lock().unwrap_or_else(|p| p.into_inner());
        if *claim != Claim::Waiting {
            return None;
        }
        *claim = Claim::Revived;
        Some(retiring.fleet.clone())
    }

    /// Stops `active`'s requesters, drains its pool, and shuts the pool down once the runner's
    /// last job ended (unless a reload adds the runner back first).
    fn retire(&mut self, fleets: &Fleets, identity: RunnerIdentity, active: Active) {
        active.state.retire();
        let Some(fleet) = active.state.fleet.clone() else {
            return;
        };
        fleet.set_draining(true);
        let claim = Arc::new(Mutex::new(Claim::Waiting));
        let task = {
            let (fleet, claim, state) = (fleet.clone(), claim.clone(), active.state.clone());
            let cancel = fleets.cancel.clone();
            let short_token = identity.short_token.clone();
            async move {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = state.tracker.wait() => {}
                }
                {
                    let mut claim = claim.lock().unwrap_or_else(|p| p.into_inner());
                    if *claim == Claim::Revived {
                        return;
                    }
                    *claim = Claim::ShuttingDown;
                }
                let deadline = tokio::time::Instant::now() + RETIRE_DELETE_TIMEOUT;
                let unconfirmed = fleet.shutdown(deadline).await;
                if unconfirmed.is_empty() {
                    tracing::info!(runner = %short_token, "retired runner's jobs ended and its VMs are deleted");
                } else {
                    tracing::warn!(runner = %short_token, vms = ?unconfirmed, "retired runner's VM deletions not confirmed; the next reconcile deletes them");
                }
            }
        };
        fleets.tracker.spawn(task);
        self.retiring.push(Retiring {
            identity,
            key: active.key,
            fleet,
            claim,
        });
    }

    /// Every live runner's pool starts draining (SIGQUIT): idle VMs go now.
    pub(super) fn drain_pools(&self, fleets: &Fleets) {
        for fleet in fleets.handles() {
            fleet.set_draining(true);
        }
    }
}

/// Gives `fleet` the reloaded settings of `runner` (logged when they are refused: the pool keeps
/// its old ones).
fn reconfigure(fleet: &FleetHandle, config: &Config, runner: &RunnerConfig, manager_id: &str) {
    let applied = FleetSettings::for_runner(config, runner, manager_id)
        .and_then(|settings| fleet.reconfigure(settings));
    if let Err(e) = applied {
        tracing::error!(runner = %runner.short_token(), error = %e, "machine pool settings not applied");
    }
}
