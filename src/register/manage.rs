//! `flotilla verify`, `unregister`, `list` and `reset-token`: GitLab Runner's commands over the
//! runners of the file. Each rewrite holds the file's lock from read to rename and changes only
//! the entries it touches. Output names runners by name and short token, never a whole token.

use super::api::{ApiError, RunnersApi};
use super::args::{ConfigArg, ResetTokenArgs, UnregisterArgs, VerifyArgs};
use super::error::CommandError;
use super::file::{Edit, Entry, LockedFile};
use super::system;
use crate::config::{short_token, Secret};

/// Runs `flotilla verify`: a 403 means GitLab no longer knows the runner.
pub async fn verify(args: VerifyArgs) -> Result<(), CommandError> {
    let file = LockedFile::lock(&args.config.config)?;
    let text = file.read()?;
    let mut edit = Edit::parse(file.path(), text.as_deref())?;
    let system_id = system::system_id(text.as_deref())?;
    let entries: Vec<Entry> = edit
        .entries()
        .into_iter()
        .filter(|e| args.name.as_deref().is_none_or(|n| e.name == n))
        .collect();
    if let (Some(name), true) = (&args.name, entries.is_empty()) {
        return Err(CommandError::NoMatch(format!("the name {name:?}")));
    }
    let mut gone = Vec::new();
    for entry in &entries {
        let who = describe(entry);
        match api(entry)?.verify(&entry.token, &system_id).await {
            Ok(_) => eprintln!("Verifying runner... is valid: {who}"),
            Err(e) if e.is_forbidden() => {
                eprintln!("ERROR: Verifying runner... is removed: {who}");
                gone.push(entry.index);
            }
            // Only a 403 means gone (as GitLab Runner): the runner may be fine.
            Err(e) => eprintln!("WARNING: Verifying runner... failed: {who}: {e}"),
        }
    }
    if gone.is_empty() {
        return Ok(());
    }
    if !args.delete {
        return Err(CommandError::Failed(
            "Failed to verify runners (remove the runners GitLab no longer knows with --delete)"
                .to_string(),
        ));
    }
    edit.remove(&gone);
    file.write(&edit.render())?;
    eprintln!(
        "Updated {}: {} runner(s) removed",
        file.path().display(),
        gone.len()
    );
    Ok(())
}

/// Runs `flotilla unregister`: `DELETE runners/managers` for `glrt-` tokens, `DELETE runners`
/// for the others; the entries unregistered are removed from the file.
pub async fn unregister(args: UnregisterArgs) -> Result<(), CommandError> {
    let file = LockedFile::lock(&args.config.config)?;
    let text = file.read()?;
    let mut edit = Edit::parse(file.path(), text.as_deref())?;
    let system_id = system::system_id(text.as_deref())?;
    let entries = edit.entries();
    let selected: Vec<Entry> = if args.all_runners {
        entries
    } else if let Some(name) = &args.name {
        let found: Vec<Entry> = entries.into_iter().filter(|e| &e.name == name).collect();
        if found.is_empty() {
            return Err(CommandError::NoMatch(format!("the name {name:?}")));
        }
        found
    } else if let (Some(url), Some(token)) = (&args.url, &args.token) {
        let url = url.trim_end_matches('/');
        let found: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.url.trim_end_matches('/') == url && e.token.expose() == token.trim())
            .collect();
        if found.is_empty() {
            // Not in the file: unregister it from GitLab all the same (as GitLab Runner).
            let entry = Entry {
                index: usize::MAX,
                name: String::new(),
                url: url.to_string(),
                token: Secret(token.trim().to_string()),
                id: 0,
                executor: String::new(),
                tls: Default::default(),
            };
            unregister_one(&entry, &system_id).await?;
            eprintln!(
                "Unregistering runner from GitLab succeeded: {} (not in the file)",
                describe(&entry)
            );
            return Ok(());
        }
        found
    } else {
        return Err(CommandError::Invalid(
            "give --name NAME, --url URL with --token TOKEN, or --all-runners".to_string(),
        ));
    };
    let mut removed = Vec::new();
    let mut failed = 0;
    for entry in &selected {
        match unregister_one(entry, &system_id).await {
            Ok(()) => {
                eprintln!(
                    "Unregistering runner from GitLab succeeded: {}",
                    describe(entry)
                );
                removed.push(entry.index);
            }
            Err(e) => {
                eprintln!(
                    "ERROR: Failed to unregister runner {}: {e}",
                    describe(entry)
                );
                failed += 1;
            }
        }
    }
    if !removed.is_empty() {
        edit.remove(&removed);
        file.write(&edit.render())?;
        eprintln!("Updated {}", file.path().display());
    }
    if failed > 0 {
        return Err(CommandError::Failed(format!(
            "{failed} runner(s) not unregistered: they stay in the file"
        )));
    }
    Ok(())
}

async fn unregister_one(entry: &Entry, system_id: &str) -> Result<(), CommandError> {
    let api = api(entry)?;
    if entry.token.expose().starts_with("glrt-") {
        api.unregister_manager(&entry.token, system_id).await?;
    } else {
        api.unregister_runner(&entry.token).await?;
    }
    Ok(())
}

/// Runs `flotilla list`: one line per runner (name, executor, URL, short token).
pub fn list(args: ConfigArg) -> Result<(), CommandError> {
    let text = std::fs::read_to_string(&args.config).map_err(|source| {
        CommandError::File(super::file::FileError::Io {
            path: args.config.clone(),
            source,
        })
    })?;
    let edit = Edit::parse(&args.config, Some(&text))?;
    eprintln!(
        "Listing configured runners ConfigFile={}",
        args.config.display()
    );
    for entry in edit.entries() {
        println!(
            "{}\tExecutor={} Token={} URL={}",
            entry.name,
            entry.executor,
            short_token(entry.token.expose()),
            entry.url
        );
    }
    Ok(())
}

/// Runs `flotilla reset-token`: a new token for each runner chosen, written with its
/// `token_obtained_at` and `token_expires_at`.
pub async fn reset_token(args: ResetTokenArgs) -> Result<(), CommandError> {
    let file = LockedFile::lock(&args.config.config)?;
    let text = file.read()?;
    let mut edit = Edit::parse(file.path(), text.as_deref())?;
    let entries = edit.entries();
    let selected: Vec<Entry> = match (&args.name, args.all_runners) {
        (_, true) => entries,
        (Some(name), false) => {
            let found: Vec<Entry> = entries.into_iter().filter(|e| &e.name == name).collect();
            if found.is_empty() {
                return Err(CommandError::NoMatch(format!("the name {name:?}")));
            }
            found
        }
        (None, false) => {
            return Err(CommandError::Invalid(
                "give --name NAME or --all-runners".to_string(),
            ))
        }
    };
    let mut failed = 0;
    let mut reset = 0;
    for entry in &selected {
        let obtained_at = chrono::Utc::now();
        match api(entry)?.reset_token(&entry.token).await {
            Ok(new) => {
                edit.set_token(entry.index, &new.token, obtained_at, new.token_expires_at);
                reset += 1;
                eprintln!(
                    "Runner token reset: {} (new token {})",
                    describe(entry),
                    short_token(new.token.expose())
                );
            }
            Err(e) => {
                eprintln!(
                    "ERROR: Failed to reset the token of {}: {e}",
                    describe(entry)
                );
                failed += 1;
            }
        }
    }
    if reset > 0 {
        file.write(&edit.render())?;
        eprintln!("Updated {}", file.path().display());
    }
    if failed > 0 {
        return Err(CommandError::Failed(format!(
            "{failed} runner token(s) not reset"
        )));
    }
    Ok(())
}

fn api(entry: &Entry) -> Result<RunnersApi, ApiError> {
    let executor = if entry.executor.is_empty() {
        "docker"
    } else {
        &entry.executor
    };
    RunnersApi::new(&entry.url, executor, &entry.tls)
}

/// `name (token abc123456, url)` for messages.
fn describe(entry: &Entry) -> String {
    format!(
        "{} (token {}, {})",
        if entry.name.is_empty() {
            "-"
        } else {
            &entry.name
        },
        short_token(entry.token.expose()),
        entry.url
    )
}
