//! Unit tests of the byte-keeping rewrites.

use super::file::{datetime_literal, Edit, LockedFile};
use crate::config::{Config, Secret};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::sync::LazyLock;

/// The first runner's token (created in GitLab), made once per test run.
static FIRST: LazyLock<String> = LazyLock::new(crate::testing::fake_runner_token);

/// A file with comments and two runners, as an operator keeps it (`@FIRST@` and `@SECOND@`
/// stand for the tokens).
const TWO_RUNNERS_TEMPLATE: &str = r#"# Fleet config: managed by hand.
concurrent = 4   # two runners, two jobs each
check_interval = 3

# The first runner.
[[runners]]
  name = "first"
  url = "https://gitlab.example.com/"
  id = 11
  token = "@FIRST@"   # keep me
  token_obtained_at = 2026-01-01T00:00:00Z
  token_expires_at = 0001-01-01T00:00:00Z
  executor = "docker"
  [runners.docker]
    image = "alpine:3.20"   # pinned

# The second runner.
[[runners]]
  name = "second"
  url = "https://gitlab.example.com"
  token = "@SECOND@"
  executor = "docker"
  [runners.docker]
    image = "debian"
"#;

/// [`TWO_RUNNERS_TEMPLATE`] with [`FIRST`] and a generated `glrtr-` token.
static TWO_RUNNERS: LazyLock<String> = LazyLock::new(|| {
    TWO_RUNNERS_TEMPLATE
        .replace("@FIRST@", &FIRST)
        .replace("@SECOND@", &crate::testing::fake_token("glrtr-"))
});

fn at(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
}

#[test]
fn an_untouched_file_renders_byte_for_byte() {
    let edit = Edit::parse(Path::new("c.toml"), Some(TWO_RUNNERS.as_str())).unwrap();
    assert!(!edit.is_changed());
    assert_eq!(edit.render(), *TWO_RUNNERS);
    let names: Vec<String> = edit.entries().iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(edit.entries()[0].id, 11);
}

#[test]
fn an_append_keeps_every_byte_before_it() {
    let mut edit = Edit::parse(Path::new("c.toml"), Some(TWO_RUNNERS.as_str())).unwrap();
    edit.append("\n[[runners]]\n  name = \"third\"\n  url = \"https://x\"\n  token = \"glrt-third\"\n  executor = \"docker\"\n  [runners.docker]\n    image = \"a\"\n".into());
    let text = edit.render();
    assert!(text.starts_with(TWO_RUNNERS.as_str()), "{text}");
    let loaded = Config::from_toml_str(&text, "c.toml").unwrap();
    assert_eq!(loaded.config.runners.len(), 3);
}

#[test]
fn a_removal_changes_only_the_removed_entry() {
    let mut edit = Edit::parse(Path::new("c.toml"), Some(TWO_RUNNERS.as_str())).unwrap();
    edit.remove(&[1]);
    let text = edit.render();
    // The entry goes with its comment and the blank line before it.
    let start = TWO_RUNNERS.find("\n# The second runner.").unwrap();
    assert_eq!(text, &TWO_RUNNERS[..start]);
    let mut edit = Edit::parse(Path::new("c.toml"), Some(TWO_RUNNERS.as_str())).unwrap();
    edit.remove(&[0]);
    let text = edit.render();
    let first = TWO_RUNNERS.find("# The first runner.").unwrap();
    let second = TWO_RUNNERS.find("# The second runner.").unwrap();
    let expected = format!("{}{}", &TWO_RUNNERS[..first], &TWO_RUNNERS[second..]);
    assert_eq!(text, expected);
}

#[test]
fn a_new_token_changes_only_its_three_values() {
    let new = crate::testing::fake_runner_token();
    let mut edit = Edit::parse(Path::new("c.toml"), Some(TWO_RUNNERS.as_str())).unwrap();
    edit.set_token(
        0,
        &Secret(new.clone()),
        at("2026-02-01T10:00:00Z"),
        Some(at("2026-03-01T10:00:00Z")),
    );
    let expected = TWO_RUNNERS
        .replace(FIRST.as_str(), &new)
        .replace(
            "token_obtained_at = 2026-01-01T00:00:00Z",
            "token_obtained_at = 2026-02-01T10:00:00Z",
        )
        .replace(
            "token_expires_at = 0001-01-01T00:00:00Z",
            "token_expires_at = 2026-03-01T10:00:00Z",
        );
    assert_eq!(edit.render(), expected);
    // A runner without the keys gets them added inside its entry.
    let mut edit = Edit::parse(Path::new("c.toml"), Some(TWO_RUNNERS.as_str())).unwrap();
    edit.set_token(
        1,
        &Secret("glrtr-new".into()),
        at("2026-02-01T10:00:00Z"),
        None,
    );
    let loaded = Config::from_toml_str(&edit.render(), "c.toml")
        .unwrap()
        .config;
    assert_eq!(loaded.runners[1].token.expose(), "glrtr-new");
    assert_eq!(loaded.runners[1].token_expires_at, None);
    assert_eq!(loaded.runners[0].token.expose(), FIRST.as_str());
}

#[test]
fn a_new_file_gets_globals_and_validates() {
    let mut edit = Edit::parse(Path::new("c.toml"), None).unwrap();
    assert!(edit.is_changed());
    edit.append(format!(
        "\n[[runners]]\n  name = \"n\"\n  url = \"https://x\"\n  token = \"glrt-a\"\n  token_obtained_at = {}\n  token_expires_at = {}\n  executor = \"docker\"\n  [runners.docker]\n    image = \"a\"\n",
        datetime_literal(Some(at("2026-02-01T10:00:00Z"))),
        datetime_literal(None)
    ));
    let loaded = Config::from_toml_str(&edit.render(), "c.toml").unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn a_rewrite_is_a_rename_with_mode_0600_under_the_lock() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &*TWO_RUNNERS).unwrap();
    let file = LockedFile::lock(&path).unwrap();
    assert_eq!(file.read().unwrap().as_deref(), Some(TWO_RUNNERS.as_str()));
    file.write("concurrent = 2\n").unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second locker waits until the first is dropped.
    let (tx, rx) = std::sync::mpsc::channel();
    let path2 = path.clone();
    let waiter = std::thread::spawn(move || {
        let _second = LockedFile::lock(&path2).unwrap();
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "the lock is held"
    );
    drop(file);
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("the lock is released");
    waiter.join().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".flotilla-config-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
