//! Rewriting `config.toml` for the commands and the manager's token rotation: one entry
//! appended, removed or given a new token, every other byte kept (`toml_edit` edits in place;
//! an append adds text after the file's own). A rewrite holds an exclusive lock on a sidecar file
//! (`.config.toml.lock` beside it) against a concurrent rewrite, and replaces the file by
//! renaming a temporary file (mode 0600) written in the same directory. Knows nothing of GitLab.

use crate::config::Secret;
use chrono::{DateTime, SecondsFormat, Utc};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use toml_edit::{DocumentMut, Item, Table};

/// Why the configuration file cannot be read or rewritten.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{path}: invalid TOML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// `runners` is not an array of tables.
    #[error("{path}: `runners` must be [[runners]] tables to be rewritten")]
    RunnersShape {
        /// The file.
        path: PathBuf,
    },
}

/// The configuration file, locked against other rewrites until dropped. Created by a command
/// or the manager for one read-modify-write; dropping it releases the lock.
pub struct LockedFile {
    path: PathBuf,
    /// The sidecar lock file; closing it releases the lock.
    _lock: File,
}

impl LockedFile {
    /// Locks `path` (waiting for another rewrite to end); the file itself need not exist.
    pub fn lock(path: &Path) -> Result<LockedFile, FileError> {
        let io = |source| FileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = parent(path);
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let lock_path = dir.join(format!(".{name}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| FileError::Io {
                path: lock_path.clone(),
                source,
            })?;
        // An advisory lock: `run` and every command take it; editors and Chef do not (their
        // writes are whole-file renames, which a reload reads whole).
        lock.lock().map_err(|source| FileError::Io {
            path: lock_path,
            source,
        })?;
        Ok(LockedFile {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The file's text, `None` if it does not exist.
    pub fn read(&self) -> Result<Option<String>, FileError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(FileError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the file with `text`: a temporary file in the same directory, mode 0600,
    /// synced, renamed over it.
    pub fn write(&self, text: &str) -> Result<(), FileError> {
        let io = |source| FileError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = parent(&self.path);
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".flotilla-config-")
            .tempfile_in(dir)
            .map_err(io)?;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        temp.write_all(text.as_bytes()).map_err(io)?;
        temp.as_file().sync_all().map_err(io)?;
        temp.persist(&self.path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// One `[[runners]]` entry as the commands see it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its index in the `[[runners]]` array.
    pub index: usize,
    /// `name`.
    pub name: String,
    /// `url`.
    pub url: String,
    /// `token`.
    pub token: Secret,
    /// `id` (0 when absent).
    pub id: i64,
    /// `executor`.
    pub executor: String,
    /// `tls-ca-file`, `tls-cert-file`, `tls-key-file` (paths).
    pub tls: crate::config::TlsFiles,
}

/// The text written when `register` creates the file.
pub const NEW_FILE_GLOBALS: &str = "concurrent = 1\ncheck_interval = 0\nshutdown_timeout = 0\n";

/// A parsed configuration file being edited: the `[[runners]]` entries read, then appended,
/// removed or given new tokens; untouched text is kept as it was.
pub struct Edit {
    path: PathBuf,
    original: String,
    doc: DocumentMut,
    /// Entries to append, as text (GitLab Runner's layout).
    appended: Vec<String>,
    changed: bool,
}

impl Edit {
    /// Parses `text` (the file's contents; `None`: the file does not exist yet).
    pub fn parse(path: &Path, text: Option<&str>) -> Result<Edit, FileError> {
        let original = text.unwrap_or(NEW_FILE_GLOBALS).to_string();
        let doc: DocumentMut =
            original
                .parse()
                .map_err(|e: toml_edit::TomlError| FileError::Parse {
                    path: path.to_path_buf(),
                    message: e.message().trim_end().to_string(),
                })?;
        match doc.get("runners") {
            None | Some(Item::ArrayOfTables(_)) => {}
            Some(_) => {
                return Err(FileError::RunnersShape {
                    path: path.to_path_buf(),
                })
            }
        }
        Ok(Edit {
            path: path.to_path_buf(),
            changed: text.is_none(),
            original,
            doc,
            appended: Vec::new(),
        })
    }

    /// The `[[runners]]` entries, in the file's order.
    pub fn entries(&self) -> Vec<Entry> {
        let Some(array) = self.doc.get("runners").and_then(Item::as_array_of_tables) else {
            return Vec::new();
        };
        let text =
            |t: &Table, key: &str| t.get(key).and_then(Item::as_str).unwrap_or("").to_string();
        let path = |t: &Table, key: &str| {
            Some(text(t, key))
                .filter(|v| !v.trim().is_empty())
                .map(std::path::PathBuf::from)
        };
        array
            .iter()
            .enumerate()
            .map(|(index, t)| Entry {
                index,
                name: text(t, "name"),
                url: text(t, "url"),
                token: Secret(text(t, "token")),
                id: t.get("id").and_then(Item::as_integer).unwrap_or(0),
                executor: text(t, "executor"),
                tls: crate::config::TlsFiles {
                    ca_file: path(t, "tls-ca-file"),
                    cert_file: path(t, "tls-cert-file"),
                    key_file: path(t, "tls-key-file"),
                },
            })
            .collect()
    }

    /// Appends an entry rendered by [`render_entry`].
    pub fn append(&mut self, entry_text: String) {
        self.appended.push(entry_text);
    }

    /// Removes the entries at `indices`.
    pub fn remove(&mut self, indices: &[usize]) {
        let Some(array) = self
            .doc
            .get_mut("runners")
            .and_then(Item::as_array_of_tables_mut)
        else {
            return;
        };
        let mut sorted = indices.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for index in sorted.into_iter().rev() {
            if index < array.len() {
                array.remove(index);
                self.changed = true;
            }
        }
    }

    /// Gives the entry at `index` a new token, `token_obtained_at` and `token_expires_at`
    /// (each value's own spacing and comments kept; a missing key is added).
    pub fn set_token(
        &mut self,
        index: usize,
        token: &Secret,
        obtained_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) {
        let Some(table) = self
            .doc
            .get_mut("runners")
            .and_then(Item::as_array_of_tables_mut)
            .and_then(|a| a.get_mut(index))
        else {
            return;
        };
        replace(table, "token", toml_edit::Value::from(token.expose()));
        replace(table, "token_obtained_at", datetime(Some(obtained_at)));
        replace(table, "token_expires_at", datetime(expires_at));
        self.changed = true;
    }

    /// The new text of the file: the original bytes where nothing changed.
    pub fn render(&self) -> String {
        let mut text = if self.changed {
            self.doc.to_string()
        } else {
            self.original.clone()
        };
        for entry in &self.appended {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(entry);
        }
        text
    }

    /// Whether anything changed.
    pub fn is_changed(&self) -> bool {
        self.changed || !self.appended.is_empty()
    }

    /// The file being edited.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Replaces `key`'s value keeping its spacing and trailing comment, or adds it.
fn replace(table: &mut Table, key: &str, mut value: toml_edit::Value) {
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        None => {
            table.insert(key, Item::Value(value));
        }
    }
}

/// A TOML datetime as GitLab Runner writes it (`None`: Go's zero time, "never").
fn datetime(t: Option<DateTime<Utc>>) -> toml_edit::Value {
    let text = t.map_or_else(
        || GO_ZERO_TIME.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    match text.parse::<toml_edit::Datetime>() {
        Ok(dt) => toml_edit::Value::from(dt),
        Err(_) => toml_edit::Value::from(text),
    }
}

/// What GitLab Runner writes for a token that never expires.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A TOML string literal (quoted and escaped).
pub fn quote(text: &str) -> String {
    toml_edit::Value::from(text).to_string().trim().to_string()
}

/// A TOML datetime literal for `t` (`None`: Go's zero time).
pub fn datetime_literal(t: Option<DateTime<Utc>>) -> String {
    datetime(t).to_string().trim().to_string()
}

/// A TOML array of strings.
pub fn string_array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}
