//! The `system_id` every command sends: the id `flotilla run` keeps in `state_dir/manager-id`
//! (made once: `s_` + 12 random lowercase hex), or the file's `manager_id`. Read leniently from
//! the file's top-level keys, so a file that does not validate yet still gives the id.

use super::error::CommandError;
use crate::config::DEFAULT_STATE_DIR;
use crate::state::StateDir;
use std::path::PathBuf;

/// The system id for the configuration `text` (`None`: no file yet, defaults apply).
pub fn system_id(text: Option<&str>) -> Result<String, CommandError> {
    let doc = text.and_then(|t| t.parse::<toml_edit::DocumentMut>().ok());
    let key = |name: &str| {
        doc.as_ref()
            .and_then(|d| d.get(name))
            .and_then(toml_edit::Item::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let dir = PathBuf::from(key("state_dir").unwrap_or_else(|| DEFAULT_STATE_DIR.to_string()));
    let state = StateDir::open(&dir)?;
    Ok(state.manager_id(key("manager_id").as_deref())?)
}
