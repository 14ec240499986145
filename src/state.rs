//! The little that is persisted in `state_dir`: `manager-id` and `jobs.json`.
