//! Job caches with GitLab Runner's semantics: keys (expanded, defaulted to `<job name>/<ref>`,
//! sanitized), `fallback_keys` and `CACHE_FALLBACK_KEY`, policy and `when`, object names
//! `[Path/][runner/<short token>/]project/<id>/<key>`, and the storage: the local cache volume or
//! a GCS bucket through V4 signed URLs.
//!
//! The manager calls [`plan_job`] before the executor starts; the result ([`CachePlan`]) is
//! plain data (paths, signed URLs, messages) the executor turns into stage scripts, so the
//! executor signs nothing and the helper container holds no credentials.
//!
//! Files: `key` (pure key and name rules), `plan` (the plan types, also the helper's wire
//! format), `gcs` (signing), `runner` (a runner's signer and client, made once per runner).

pub mod gcs;
pub mod key;
pub mod plan;
mod runner;

use std::time::Duration;

pub use runner::RunnerCache;

pub use plan::{
    ArchiveSpec, CachePlan, Location, Message, RestoreSpec, Source, Target, LOCAL_CACHE_DIR,
    SPEC_ENV,
};

use crate::config::CacheStorage;
use crate::job::{JobPayload, Variables};
use gcs::GcsSigner;
use key::{Policy, When};

/// GitLab Runner's default `CACHE_REQUEST_TIMEOUT`, in minutes.
const DEFAULT_REQUEST_TIMEOUT_MINUTES: u64 = 10;

/// The name of a runner's local cache volume on a Docker host.
pub fn local_volume_name(short_token: &str) -> String {
    let safe: String = short_token
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("flotilla-runner-{safe}-cache")
}

/// What [`plan_job`] needs.
pub struct PlanInput<'a> {
    /// The job.
    pub job: &'a JobPayload,
    /// Every variable the job sees.
    pub variables: &'a Variables,
    /// The runner's cache settings and signer (made once per runner).
    pub cache: &'a RunnerCache,
    /// The runner's short token (object names).
    pub short_token: &'a str,
}

/// Where archives go for this job.
enum Store {
    Local,
    Gcs(std::sync::Arc<GcsSigner>),
}

/// Computes the job's cache plan: keys, sources and targets, signed URLs (valid for the job
/// timeout) for GCS. Failures (credentials, signing) become warnings in the plan, never errors:
/// as in GitLab Runner, a cache problem does not fail the job.
pub async fn plan_job(input: PlanInput<'_>) -> CachePlan {
    let mut plan = CachePlan::default();
    let job = input.job;
    let wanted = |c: &crate::job::Cache| !c.paths.is_empty() || c.untracked;
    if !job.cache.iter().any(wanted) {
        return plan;
    }
    plan.restore_stage = true;
    let store = match &input.cache.config().storage {
        CacheStorage::Local => {
            plan.local_volume = Some(local_volume_name(input.short_token));
            Store::Local
        }
        CacheStorage::Gcs(gcs) => match input.cache.gcs_signer(gcs).await {
            Ok(signer) => Store::Gcs(signer),
            Err(e) => {
                let text = format!("Failed to obtain GCS credentials for the cache: {e}");
                tracing::warn!(job = job.id, error = %e, "cache credentials");
                plan.restore_messages.push(Message::Warning(text.clone()));
                plan.archive_messages.push(Message::Warning(text));
                return plan;
            }
        },
    };
    let vars = input.variables;
    let timeout_secs = vars
        .expanded("CACHE_REQUEST_TIMEOUT")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|m| *m > 0)
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MINUTES)
        * 60;
    let planner = Planner {
        input: &input,
        store: &store,
        valid_for: Duration::from_secs(job.timeout_secs()),
    };
    for cache in job.cache.iter().filter(|c| wanted(c)) {
        let raw = key::raw_key(&cache.key, &job.job_info.name, &job.git_info.git_ref, |k| {
            vars.expand(k)
        });
        let Some(human_key) = planner.sanitized(&raw, &mut plan.restore_messages) else {
            plan.restore_messages.push(Message::Notice(
                "Skipping cache extraction due to empty cache key".into(),
            ));
            plan.archive_messages.push(Message::Notice(
                "Skipping cache archiving due to empty cache key".into(),
            ));
            continue;
        };
        let policy = match Policy::parse(&vars.expand(&cache.policy)) {
            Ok(policy) => policy,
            Err(e) => {
                let text = format!("{e} for {human_key}: skipping this cache");
                plan.restore_messages.push(Message::Warning(text.clone()));
                plan.archive_messages.push(Message::Warning(text));
                continue;
            }
        };
        if policy.pulls() {
            let spec = planner
                .restore(cache, &human_key, timeout_secs, &mut plan.restore_messages)
                .await;
            plan.restores.push(spec);
        } else {
            plan.restore_messages.push(Message::Notice(format!(
                "Not downloading cache {human_key} due to policy"
            )));
        }
        if policy.pushes() {
            let when = When::parse(&cache.when);
            if let Some(spec) = planner
                .archive(
                    cache,
                    &human_key,
                    when,
                    timeout_secs,
                    &mut plan.archive_messages,
                )
                .await
            {
                plan.archives.push(spec);
            }
        } else {
            plan.archive_messages.push(Message::Notice(format!(
                "Not uploading cache {human_key} due to policy"
            )));
        }
    }
    plan
}

/// The per-job context of [`plan_job`].
struct Planner<'a> {
    input: &'a PlanInput<'a>,
    store: &'a Store,
    valid_for: Duration,
}

impl Planner<'_> {
    /// A sanitized key, with its warning noted.
    fn sanitized(&self, raw: &str, messages: &mut Vec<Message>) -> Option<String> {
        let s = key::sanitize(raw);
        if let Some(w) = s.warning {
            messages.push(Message::Warning(w));
        }
        s.key
    }

    fn object_name(&self, key: &str, messages: &mut Vec<Message>) -> Option<String> {
        let config = self.input.cache.config();
        match key::object_name(
            &config.path,
            config.shared,
            self.input.short_token,
            self.input.job.job_info.project_id,
            key,
        ) {
            Ok(name) => Some(name),
            Err(e) => {
                messages.push(Message::Warning(format!("cache key {key:?}: {e}")));
                None
            }
        }
    }

    async fn restore(
        &self,
        cache: &crate::job::Cache,
        human_key: &str,
        timeout_secs: u64,
        messages: &mut Vec<Message>,
    ) -> RestoreSpec {
        let vars = self.input.variables;
        let mut keys = vec![human_key.to_string()];
        for fallback in &cache.fallback_keys {
            let expanded = vars.expand(fallback);
            if expanded.is_empty() {
                continue;
            }
            if let Some(k) = self.sanitized(&expanded, messages) {
                keys.push(k);
            }
        }
        if let Some(global) = vars
            .expanded("CACHE_FALLBACK_KEY")
            .filter(|k| !k.is_empty())
        {
            if let Some(k) = self.sanitized(&global, messages) {
                if key::fallback_key_allowed(&k) {
                    keys.push(k);
                } else {
                    messages.push(Message::Warning(format!(
                        "CACHE_FALLBACK_KEY {k:?} not allowed to end in \"-protected\""
                    )));
                }
            }
        }
        let mut sources = Vec::new();
        for key in keys {
            let Some(object) = self.object_name(&key, messages) else {
                continue;
            };
            let location = match self.store {
                Store::Local => Location::File(plan::local_archive_path(&object)),
                Store::Gcs(signer) => match signer.get_url(&object, self.valid_for).await {
                    Ok(url) => Location::Url(url),
                    Err(e) => {
                        messages.push(Message::Warning(format!(
                            "Failed to sign the download URL of cache {key}: {e}"
                        )));
                        continue;
                    }
                },
            };
            sources.push(Source { key, location });
        }
        RestoreSpec {
            key: human_key.to_string(),
            sources,
            timeout_secs,
        }
    }

    async fn archive(
        &self,
        cache: &crate::job::Cache,
        human_key: &str,
        when: When,
        timeout_secs: u64,
        messages: &mut Vec<Message>,
    ) -> Option<ArchiveSpec> {
        let object = self.object_name(human_key, messages)?;
        let max_size = self.input.cache.config().max_uploaded_archive_size;
        let target = match self.store {
            Store::Local => Target::File(plan::local_archive_path(&object)),
            Store::Gcs(signer) => {
                match signer
                    .put_url(&object, human_key, max_size, self.valid_for)
                    .await
                {
                    Ok((url, headers)) => Target::Url { url, headers },
                    Err(e) => {
                        messages.push(Message::Warning(format!(
                            "Failed to sign the upload URL of cache {human_key}: {e}"
                        )));
                        return None;
                    }
                }
            }
        };
        let vars = self.input.variables;
        Some(ArchiveSpec {
            key: human_key.to_string(),
            when,
            paths: cache.paths.iter().map(|p| vars.expand(p)).collect(),
            untracked: cache.untracked,
            target,
            timeout_secs,
            max_size,
        })
    }
}

#[cfg(test)]
mod tests;
