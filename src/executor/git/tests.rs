//! The get_sources script for the payload fixtures and each `GIT_*` setting.

use super::*;
use crate::job::{Hook, JobVariable};

const TOKEN: &str = "testTokenHere1234";
const SHA: &str = "abcdef1234567890abcdef1234567890abcdef12";

fn job(allow_git_fetch: bool) -> JobPayload {
    let mut job: JobPayload = serde_json::from_str(include_str!(
        "../../../tests/fixtures/job_response_full_valid.json"
    ))
    .expect("fixture parses");
    job.allow_git_fetch = allow_git_fetch;
    job.token = TOKEN.into();
    job.git_info.sha = SHA.into();
    job.git_info.depth = 20;
    job.git_info.refspecs = vec![
        "+refs/pipelines/99:refs/pipelines/99".into(),
        "+refs/heads/main:refs/remotes/origin/main".into(),
    ];
    job
}

fn vars(pairs: &[(&str, &str)]) -> Variables {
    let mut list = vec![JobVariable::plain(
        "CI_SERVER_URL",
        "https://gitlab.example.com",
    )];
    list.extend(pairs.iter().map(|(k, v)| JobVariable::plain(*k, *v)));
    Variables::new(list)
}

fn script(job: &JobPayload, v: &Variables) -> Result<String, GitError> {
    get_sources_script(&Sources {
        job,
        vars: v,
        strategy: GitStrategy::of(job, v),
        project_dir: "/builds/test/test-project",
        tmp_dir: "/builds/test/test-project.tmp",
    })
    .map(|lines| lines.join("\n"))
}

fn ok(job: &JobPayload, v: &Variables) -> String {
    script(job, v).expect("a script")
}

#[test]
fn the_strategy_follows_git_strategy_then_allow_git_fetch() {
    for (value, allow, expected) in [
        ("clone", true, GitStrategy::Clone),
        ("fetch", false, GitStrategy::Fetch),
        ("none", true, GitStrategy::None),
        ("empty", false, GitStrategy::Empty),
        ("", true, GitStrategy::Fetch),
        ("", false, GitStrategy::Clone),
        ("bogus", false, GitStrategy::Clone),
    ] {
        let v = vars(&[("GIT_STRATEGY", value)]);
        assert_eq!(GitStrategy::of(&job(allow), &v), expected, "{value:?}");
    }
    let expanded = vars(&[("S", "none"), ("GIT_STRATEGY", "$S")]);
    assert_eq!(GitStrategy::of(&job(false), &expanded), GitStrategy::None);
}

#[test]
fn empty_recreates_the_project_directory() {
    let s = ok(&job(false), &vars(&[("GIT_STRATEGY", "empty")]));
    assert!(
        s.contains(
            "'rm' '-rf' '/builds/test/test-project'\n'mkdir' '-p' '/builds/test/test-project'"
        ),
        "{s}"
    );
    assert!(s.contains("creating an empty build directory"), "{s}");
    assert!(!s.contains("git "), "{s}");
}

#[test]
fn clone_fetches_the_refspecs_at_depth_and_checks_out_the_sha() {
    let s = ok(&job(false), &vars(&[]));
    assert!(s.starts_with("export GIT_TERMINAL_PROMPT=0\nexport GCM_INTERACTIVE=Never\n"));
    assert!(s.contains("export GIT_LFS_SKIP_SMUDGE=1"), "{s}");
    assert!(
        s.contains("cd /\n'rm' '-rf' '/builds/test/test-project'"),
        "{s}"
    );
    assert!(
        s.contains("Fetching changes with git depth set to 20..."),
        "{s}"
    );
    assert!(
        s.contains(
            "'git' 'init' '/builds/test/test-project' '--template' \
             '/builds/test/test-project.tmp/git-template'"
        ),
        "{s}"
    );
    assert!(
        s.contains(
            "if git remote add origin 'https://gitlab.example.com/test/test-project.git' \
             >/dev/null 2>&1; then"
        ),
        "{s}"
    );
    assert!(
        s.contains(
            "'fetch' 'origin' '--no-recurse-submodules' \
             '+refs/pipelines/99:refs/pipelines/99' \
             '+refs/heads/main:refs/remotes/origin/main' '--depth' '20' '--prune' '--quiet'"
        ),
        "{s}"
    );
    assert!(
        s.contains("Checking out abcdef12 as detached HEAD (ref is main)..."),
        "{s}"
    );
    assert!(
        s.contains(&format!(
            "'git' '-c' 'submodule.recurse=false' 'checkout' '-f' '-q' '{SHA}'"
        )),
        "{s}"
    );
    assert!(s.contains("'git' 'clean' '-ffdx'"), "{s}");
    assert!(s.contains("then\n'git' 'lfs' 'pull'\nfi"), "{s}");
    assert!(s.contains("Skipping Git submodules setup"), "{s}");
    // Stale locks, configs and hooks go before anything else touches the repository.
    let lock = s.find(".git/index.lock").unwrap();
    let init = s.find("'git' 'init'").unwrap();
    assert!(lock < init);
    assert!(
        s.contains("'rm' '-f' '/builds/test/test-project/.git/config'"),
        "{s}"
    );
    assert!(
        s.contains("'rm' '-rf' '/builds/test/test-project/.git/hooks'"),
        "{s}"
    );
}

#[test]
fn the_token_is_only_in_insteadof_rewrites_never_printed_or_in_origin() {
    let s = ok(&job(false), &vars(&[]));
    for line in s.lines().filter(|l| l.contains(TOKEN)) {
        assert!(
            line.starts_with("'git' 'config' '--file' '/builds/test/test-project.tmp/.gitlab-runner.ext.conf' '--replace-all' 'url."),
            "the token may appear only in an insteadOf rewrite: {line}"
        );
    }
    assert!(!s
        .lines()
        .any(|l| l.starts_with("printf") && l.contains(TOKEN)));
    // The project, the server's base and (deduplicated) the repository's base.
    assert!(s.contains(&format!(
        "'url.https://gitlab-ci-token:{TOKEN}@gitlab.example.com/test/test-project.git.insteadOf' \
         'https://gitlab.example.com/test/test-project.git' \
         '^https://gitlab\\.example\\.com/test/test-project\\.git$'"
    )));
    assert!(s.contains(&format!(
        "'url.https://gitlab-ci-token:{TOKEN}@gitlab.example.com.insteadOf' \
         'https://gitlab.example.com'"
    )));
    assert_eq!(s.matches(".insteadOf'").count(), 2, "{s}");
    assert!(s.contains(
        "'git' 'config' '--file' '/builds/test/test-project.tmp/git-template/config' \
         '--replace-all' 'include.path' '/builds/test/test-project.tmp/.gitlab-runner.ext.conf' \
         '\\.gitlab-runner\\.ext\\.conf$'"
    ));
}

#[test]
fn force_https_rewrites_ssh_submodule_urls_to_the_authenticated_server() {
    let s = ok(
        &job(false),
        &vars(&[
            ("GIT_SUBMODULE_FORCE_HTTPS", "true"),
            ("CI_SERVER_HOST", "gitlab.example.com"),
        ]),
    );
    assert!(s.contains(&format!(
        "'url.https://gitlab-ci-token:{TOKEN}@gitlab.example.com/.insteadOf' 'git@gitlab.example.com:'"
    )), "{s}");
    assert!(s.contains("'ssh://git@gitlab.example.com'"), "{s}");
}

#[test]
fn fetch_keeps_the_directory_and_depth_zero_unshallows() {
    let mut job = job(true);
    job.git_info.depth = 0;
    let s = ok(&job, &vars(&[]));
    assert!(
        !s.contains("'rm' '-rf' '/builds/test/test-project'\n"),
        "{s}"
    );
    assert!(s.contains("Fetching changes...\x1b"), "{s}");
    assert!(s.contains("if [ -f .git/shallow ]; then"), "{s}");
    assert!(s.contains("'--prune' '--quiet' '--unshallow'"), "{s}");
    assert!(!s.contains("'--depth'"), "{s}");
    assert!(
        s.contains(
            "'git' 'remote' 'set-url' 'origin' 'https://gitlab.example.com/test/test-project.git'"
        ),
        "{s}"
    );
}

#[test]
fn checkout_clean_fetch_flags_and_lfs_follow_their_variables() {
    let s = ok(
        &job(false),
        &vars(&[
            ("GIT_CHECKOUT", "false"),
            ("GIT_FETCH_EXTRA_FLAGS", "--no-tags"),
            ("GIT_LFS_SKIP_SMUDGE", "1"),
        ]),
    );
    assert!(s.contains("Skipping Git checkout"), "{s}");
    assert!(!s.contains("'checkout'"), "{s}");
    assert!(s.contains("'--depth' '20' '--no-tags'\n"), "{s}");
    assert!(!s.contains("--prune"), "{s}");
    assert!(!s.contains("GIT_LFS_SKIP_SMUDGE=1"), "{s}");
    assert!(!s.contains("lfs"), "{s}");

    let s = ok(
        &job(false),
        &vars(&[
            ("GIT_CLEAN_FLAGS", "none"),
            ("GIT_FETCH_EXTRA_FLAGS", "none"),
        ]),
    );
    assert!(!s.contains("'clean'"), "{s}");
    assert!(s.contains("'--depth' '20'\n"), "{s}");
    let s = ok(
        &job(false),
        &vars(&[("GIT_CLEAN_FLAGS", "-ffdx -e cache/")]),
    );
    assert!(s.contains("'git' 'clean' '-ffdx' '-e' 'cache/'"), "{s}");
}

#[test]
fn submodules_update_with_paths_depth_flags_and_credentials() {
    let s = ok(
        &job(false),
        &vars(&[
            ("GIT_SUBMODULE_STRATEGY", "recursive"),
            ("GIT_SUBMODULE_PATHS", "lib/a :(exclude)lib/b"),
            ("GIT_SUBMODULE_DEPTH", "3"),
            ("GIT_SUBMODULE_UPDATE_FLAGS", "--jobs 4"),
        ]),
    );
    assert!(
        s.contains("Updating/initializing submodules recursively with git depth set to 3..."),
        "{s}"
    );
    assert!(s.contains("'git' 'submodule' 'init'"), "{s}");
    assert!(
        s.contains("'git' 'submodule' 'sync' '--recursive' '--' 'lib/a' ':(exclude)lib/b'"),
        "{s}"
    );
    assert!(
        s.contains(
            "if 'git' '-c' 'include.path=/builds/test/test-project.tmp/.gitlab-runner.ext.conf' \
             'submodule' 'update' '--init' '--recursive' '--depth' '3' '--jobs' '4' '--' \
             'lib/a' ':(exclude)lib/b'; then"
        ),
        "{s}"
    );
    assert!(
        s.contains("'git' 'submodule' 'foreach' '--recursive' 'git clean -ffdx'"),
        "{s}"
    );
    assert!(s.contains("Updating submodules failed. Retrying..."), "{s}");
    assert!(
        s.contains("Configuring submodules to use parent git credentials..."),
        "{s}"
    );
    assert!(
        s.contains(
            "find '/builds/test/test-project/.git/modules' -type f -name 'index.lock' -delete"
        ),
        "{s}"
    );

    let s = ok(&job(false), &vars(&[("GIT_SUBMODULE_STRATEGY", "normal")]));
    assert!(
        s.contains("Updating/initializing submodules with git depth set to 20..."),
        "{s}"
    );
    assert!(s.contains("'git' 'submodule' 'sync'\n"), "{s}");
}

#[test]
fn bad_submodule_settings_are_clear_errors() {
    let e = script(&job(false), &vars(&[("GIT_SUBMODULE_STRATEGY", "deep")])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown GIT_SUBMODULE_STRATEGY \"deep\" (use none, normal or recursive)"
    );
    let e = script(
        &job(false),
        &vars(&[
            ("GIT_SUBMODULE_STRATEGY", "normal"),
            ("GIT_SUBMODULE_PATHS", "a :(exclude) b"),
        ]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("invalid submodule pathspec"), "{e}");
}

#[test]
fn a_bad_repository_url_is_an_error_that_names_no_token() {
    let mut job = job(false);
    for url in [
        format!("gitlab-ci-token:{TOKEN}@nowhere"),
        format!("http://gitlab-ci-token:{TOKEN}@[not-a-host/x.git"),
    ] {
        job.git_info.repo_url = url;
        let e = script(&job, &vars(&[])).unwrap_err();
        assert!(!e.to_string().contains(TOKEN), "{e}");
    }
}

#[test]
fn hooks_run_before_and_after_with_their_commands_shown() {
    let mut job = job(false);
    job.hooks = vec![
        Hook {
            name: "pre_get_sources_script".into(),
            script: vec!["echo pre".into()],
        },
        Hook {
            name: "post_get_sources_script".into(),
            script: vec!["echo post".into()],
        },
    ];
    let s = ok(&job, &vars(&[]));
    let pre = s.find("\necho pre\n").expect("pre hook");
    let post = s.find("\necho post").expect("post hook");
    assert!(pre < s.find("'git' 'init'").unwrap());
    assert!(post > s.find("Skipping Git submodules setup").unwrap());
    assert!(s.contains("$ echo pre"), "{s}");
}
