//! The contract between the executor, which writes the helper stages' shell scripts, and the
//! `flotilla helper …` commands those scripts run in the helper container: the binary's name and
//! the environment variables that carry secrets and specs (never argv, which shows in process
//! lists and traces). Both sides import these names from here and from nowhere else.

/// The helper binary inside the helper image (`flotilla helper <command>`).
pub const HELPER_BIN: &str = "flotilla";

/// The environment variable holding the job token for the artifacts commands, set by the stage
/// script for the one command that needs it.
pub const TOKEN_ENV: &str = "FLOTILLA_JOB_TOKEN";

/// The environment variable that carries a cache spec (JSON) from the stage script to
/// `cache-archiver` / `cache-extractor` (one per cache: `<SPEC_ENV>_<index>`).
pub const SPEC_ENV: &str = "FLOTILLA_CACHE_SPEC";
