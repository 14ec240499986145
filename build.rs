//! Embeds the source revision (`git rev-parse --short=8 HEAD`) as `FLOTILLA_REVISION`, which
//! GitLab shows as the runner's revision; "unknown" outside a git checkout. An explicit
//! `FLOTILLA_REVISION` in the environment wins (release builds from a tarball).

fn main() {
    println!("cargo:rerun-if-env-changed=FLOTILLA_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    if std::env::var_os("FLOTILLA_REVISION").is_some() {
        return;
    }
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "--short=8", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit()));
    if let Some(revision) = revision {
        println!("cargo:rustc-env=FLOTILLA_REVISION={revision}");
    }
}
