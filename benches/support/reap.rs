//! Following jobs on the fake GitLab, shared by the `scale` and `soak` benches (each includes
//! it with `#[path]`).

use std::collections::HashSet;
use testkit::FakeGitlab;

/// Jobs of `ids` that finished, removed from `ids`; counts failures.
pub fn reap(gitlab: &FakeGitlab, ids: &mut HashSet<i64>, failed: &mut u64) -> u64 {
    let mut done = Vec::new();
    for id in ids.iter() {
        if let Some(rec) = gitlab.job(*id) {
            if rec.state.is_finished() {
                if rec.state != testkit::JobState::Success {
                    *failed += 1;
                    if *failed <= 3 {
                        eprintln!(
                            "job {id} ended {:?}: {}",
                            rec.state,
                            rec.trace_text().lines().last().unwrap_or("")
                        );
                    }
                }
                done.push(*id);
            }
        }
    }
    for id in &done {
        ids.remove(id);
    }
    done.len() as u64
}
