//! Trace sections and the runner's own lines around stages, in GitLab Runner's format
//! (`helpers/build_section.go`, `common/build.go` `GetStageDescription`): a stage is wrapped in
//! `section_start:<unix>:<name>\r\x1b[0K` … `section_end:<unix>:<name>\r\x1b[0K` when the job
//! asks for `features.trace_sections`, and always gets its bold cyan header line.

use super::observer::StageObserver;
use crate::trace::JobTrace;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const BOLD_CYAN: &str = "\x1b[36;1m";
const YELLOW: &str = "\x1b[0;33m";
const BOLD_RED: &str = "\x1b[31;1m";
const RESET: &str = "\x1b[0;m";
const CLEAR: &str = "\x1b[0K";

/// The description GitLab Runner prints for a stage.
pub(super) fn stage_description(stage: &str) -> String {
    match stage {
        "prepare_script" => "Preparing environment".into(),
        "get_sources" => "Getting source from Git repository".into(),
        "clear_worktree" => {
            "Deleting all tracked and untracked files due to source fetch failure".into()
        }
        "restore_cache" => "Restoring cache".into(),
        "download_artifacts" => "Downloading artifacts".into(),
        "after_script" => "Running after_script".into(),
        "archive_cache" => "Saving cache for successful job".into(),
        "archive_cache_on_failure" => "Saving cache for failed job".into(),
        "upload_artifacts_on_failure" => "Uploading artifacts for failed job".into(),
        "upload_artifacts_on_success" => "Uploading artifacts for successful job".into(),
        "cleanup_file_variables" => "Cleaning up project directory and file based variables".into(),
        other => format!("Executing \"{other}\" stage of the job script"),
    }
}

/// Writes the runner's lines of one job: section markers, headers, warnings; tells the
/// job's [`StageObserver`] (if any) when a stage's section opens and closes.
#[derive(Clone)]
pub(super) struct RunnerLog {
    trace: JobTrace,
    sections: bool,
    observer: Option<Arc<dyn StageObserver>>,
}

impl RunnerLog {
    /// Lines into `trace`; section markers only when `sections` (the job's `trace_sections`).
    pub(super) fn new(trace: JobTrace, sections: bool) -> Self {
        RunnerLog {
            trace,
            sections,
            observer: None,
        }
    }

    /// The same, telling `observer` about stages.
    pub(super) fn observed(mut self, observer: Option<Arc<dyn StageObserver>>) -> Self {
        self.observer = observer;
        self
    }

    /// The executor entered `stage`.
    pub(super) fn executor_stage(&self, stage: &'static str) {
        if let Some(o) = &self.observer {
            o.executor_stage(stage);
        }
    }

    /// Opens section `name` with its bold cyan `header`.
    pub(super) fn start(&self, name: &str, header: &str) {
        if let Some(o) = &self.observer {
            o.stage_started(name);
        }
        if self.sections {
            self.trace.runner_line(&format!(
                "section_start:{}:{name}\r{CLEAR}{BOLD_CYAN}{header}{RESET}",
                unix_now()
            ));
        } else {
            self.trace
                .runner_line(&format!("{BOLD_CYAN}{header}{RESET}"));
        }
    }

    /// Closes section `name`.
    pub(super) fn end(&self, name: &str) {
        if let Some(o) = &self.observer {
            o.stage_ended(name);
        }
        if self.sections {
            self.trace
                .runner_line(&format!("section_end:{}:{name}\r{CLEAR}", unix_now()));
        }
    }

    /// A plain line.
    pub(super) fn line(&self, text: &str) {
        self.trace.runner_line(text);
    }

    /// A `WARNING:` line (yellow, as GitLab Runner's `Warningln`).
    pub(super) fn warning(&self, text: &str) {
        self.trace
            .runner_line(&format!("{YELLOW}WARNING: {text}{RESET}"));
    }

    /// An `ERROR:` line (red, as GitLab Runner's `Errorln`).
    pub(super) fn error(&self, text: &str) {
        self.trace
            .runner_line(&format!("{BOLD_RED}ERROR: {text}{RESET}"));
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceSettings;

    fn text(trace: &JobTrace) -> String {
        String::from_utf8(trace.read_at(0, 1 << 20).unwrap()).unwrap()
    }

    #[test]
    fn descriptions_match_gitlab_runner() {
        assert_eq!(
            stage_description("get_sources"),
            "Getting source from Git repository"
        );
        assert_eq!(
            stage_description("step_script"),
            "Executing \"step_script\" stage of the job script"
        );
    }

    #[test]
    fn sections_wrap_the_header_only_when_asked() {
        let trace = JobTrace::new(TraceSettings::default()).unwrap();
        let log = RunnerLog::new(trace.clone(), true);
        log.start("get_sources", "Getting source from Git repository");
        log.end("get_sources");
        let t = text(&trace);
        assert!(t.starts_with("section_start:"), "{t:?}");
        assert!(
            t.contains(":get_sources\r\x1b[0K\x1b[36;1mGetting source from Git repository\x1b[0;m"),
            "{t:?}"
        );
        assert!(t.contains("section_end:"), "{t:?}");

        let plain = JobTrace::new(TraceSettings::default()).unwrap();
        let log = RunnerLog::new(plain.clone(), false);
        log.start("get_sources", "Getting source");
        log.end("get_sources");
        let t = text(&plain);
        assert!(!t.contains("section_"), "{t:?}");
        assert!(t.contains("\x1b[36;1mGetting source\x1b[0;m"), "{t:?}");
    }
}
