//! Job payload decoding, the job's variables and the expansion caps: any JSON either decodes
//! or is a `PayloadError`, never a panic; a payload that decodes is expanded only within
//! Flotilla's caps.
#![no_main]

use flotilla::job::{check_expansion, JobHandle, JobPayload, RunnerEnvironment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if serde_json::from_value::<JobHandle>(value.clone()).is_err() {
        return;
    }
    let Ok(job) = JobPayload::parse(value) else {
        return;
    };
    let _ = job.timeout_secs();
    let env = RunnerEnvironment {
        short_token: "abcdefgh".into(),
        builds_dir: "/builds".into(),
        ..Default::default()
    };
    let vars = env.job_variables(&job);
    if check_expansion(&job, &vars).is_ok() {
        for var in vars.effective() {
            let _ = vars.expanded(&var.key);
        }
    }
});
