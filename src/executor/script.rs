//! The shell text a job container runs: the container command that finds a shell (GitLab Runner's
//! bash detection) and the script written to that shell's stdin for one step. Pure string
//! building, no I/O.
//!
//! Variables travel only inside the script (never as container `Env`, which bollard and hyper log
//! at debug level and `docker inspect` shows): each is exported single-quoted; a `file: true`
//! variable's value is written to a file under the project's temporary directory by the script
//! itself and the variable holds that path.

use crate::job::Variables;

/// `sh -c` argument of the job container: runs the first shell found, as GitLab Runner's
/// `BashDetectShellScript` does. The shell then reads the step script from stdin.
pub(super) const BASH_DETECT: &str = "if [ -x /usr/local/bin/bash ]; then\n\
    \texec /usr/local/bin/bash \n\
    elif [ -x /usr/bin/bash ]; then\n\
    \texec /usr/bin/bash \n\
    elif [ -x /bin/bash ]; then\n\
    \texec /bin/bash \n\
    elif [ -x /usr/local/bin/sh ]; then\n\
    \texec /usr/local/bin/sh \n\
    elif [ -x /usr/bin/sh ]; then\n\
    \texec /usr/bin/sh \n\
    elif [ -x /bin/sh ]; then\n\
    \texec /bin/sh \n\
    elif [ -x /busybox/sh ]; then\n\
    \texec /busybox/sh \n\
    else\n\
    \techo shell not found\n\
    \texit 1\n\
    fi\n";

/// The job container's `Cmd`: `sh -c <bash detection>`.
pub(super) fn container_command() -> Vec<String> {
    vec!["sh".into(), "-c".into(), BASH_DETECT.into()]
}

/// The helper container's `Cmd`: the same with `umask 0000` first, as GitLab Runner's
/// `gitlab-runner-build` does, so that what the helper (root) writes into the builds volume stays
/// writable for a job image running as another user.
pub(super) fn helper_command() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("umask 0000\n{BASH_DETECT}"),
    ]
}

/// Where one step runs and what it sees.
pub(super) struct StepScript<'a> {
    /// Every variable of the job (later wins), with overrides such as `CI_JOB_STATUS` pushed last.
    pub variables: &'a Variables,
    /// `CI_PROJECT_DIR`: created if missing, then the working directory.
    pub project_dir: &'a str,
    /// Where `file: true` variables are written (`<project dir>.tmp`).
    pub tmp_dir: &'a str,
    /// The step's lines, run in order; the first failing one ends the step with its exit code.
    pub lines: &'a [String],
    /// Whether each line is shown as a green `$ line` before it runs (user steps); helper
    /// stages print their own messages instead.
    pub echo: bool,
}

impl StepScript<'_> {
    /// The text for the shell's stdin. The body runs under `eval` fed by `:`, so a command that
    /// reads stdin does not swallow the rest of the script (as GitLab Runner does).
    pub(super) fn render(&self) -> String {
        let body = self.body();
        let mut out = String::with_capacity(body.len() + 256);
        out.push_str("set -e\n");
        // pipefail where the shell has it (bash, busybox ash; not dash).
        out.push_str("if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi\n");
        out.push_str("set +o noclobber\n");
        out.push_str(": | eval ");
        out.push_str(&quote(&body));
        out.push_str("\nexit 0\n");
        out
    }

    fn body(&self) -> String {
        let mut out = String::new();
        let mut made_tmp = false;
        for var in self.variables.effective() {
            if !is_identifier(&var.key) {
                continue;
            }
            let value = if var.raw {
                var.value.clone()
            } else {
                self.variables.expand(&var.value)
            };
            if var.file {
                if !made_tmp {
                    out.push_str(&format!("mkdir -p {}\n", quote(self.tmp_dir)));
                    made_tmp = true;
                }
                let path = format!("{}/{}", self.tmp_dir.trim_end_matches('/'), var.key);
                out.push_str(&format!(
                    "printf '%s' {} > {}\n",
                    quote(&value),
                    quote(&path)
                ));
                out.push_str(&format!("export {}={}\n", var.key, quote(&path)));
            } else {
                out.push_str(&format!("export {}={}\n", var.key, quote(&value)));
            }
        }
        out.push_str(&format!("mkdir -p {}\n", quote(self.project_dir)));
        out.push_str(&format!("cd {}\n", quote(self.project_dir)));
        for line in self.lines {
            if self.echo {
                out.push_str(&format!("printf '%s\\n' {}\n", quote(&echo_text(line))));
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// The green `$ command` line GitLab Runner prints before running a command; a multi-line
/// command shows its first line only.
fn echo_text(line: &str) -> String {
    let shown = match line.split_once('\n') {
        Some((first, _)) => format!("{first} # collapsed multi-line command"),
        None => line.to_string(),
    };
    format!("\x1b[32;1m$ {shown}\x1b[0;m")
}

/// Single-quotes `s` for a POSIX shell (every byte literal, `'` as `'\''`).
pub(super) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Whether `key` can be exported by a POSIX shell.
fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobVariable;

    fn vars(list: Vec<JobVariable>) -> Variables {
        Variables::new(list)
    }

    #[test]
    fn quoting_survives_quotes_and_newlines() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("a\nb"), "'a\nb'");
    }

    #[test]
    fn identifiers_follow_posix() {
        assert!(is_identifier("CI_JOB_ID"));
        assert!(is_identifier("_x1"));
        assert!(!is_identifier("1x"));
        assert!(!is_identifier("A-B"));
        assert!(!is_identifier(""));
    }

    #[test]
    fn the_body_exports_expands_and_writes_files() {
        let mut file = JobVariable::plain("CERT", "pem $A");
        file.file = true;
        let mut raw = JobVariable::plain("R", "$A");
        raw.raw = true;
        let v = vars(vec![
            JobVariable::plain("A", "1"),
            JobVariable::plain("B", "x$A'y"),
            JobVariable::plain("bad-key", "z"),
            raw,
            file,
        ]);
        let lines = vec!["echo hi".to_string(), "for i in 1\ndo :; done".to_string()];
        let script = StepScript {
            variables: &v,
            project_dir: "/builds/g/p",
            tmp_dir: "/builds/g/p.tmp",
            lines: &lines,
            echo: true,
        };
        let body = script.body();
        assert!(body.contains("export A='1'\n"), "{body}");
        assert!(body.contains(r"export B='x1'\''y'"), "{body}");
        assert!(
            body.contains("export R='$A'\n"),
            "raw stays unexpanded: {body}"
        );
        assert!(!body.contains("bad-key"), "{body}");
        assert!(body.contains("mkdir -p '/builds/g/p.tmp'\n"), "{body}");
        assert!(
            body.contains("printf '%s' 'pem 1' > '/builds/g/p.tmp/CERT'\n"),
            "{body}"
        );
        assert!(
            body.contains("export CERT='/builds/g/p.tmp/CERT'\n"),
            "{body}"
        );
        assert!(body.contains("cd '/builds/g/p'\n"), "{body}");
        assert!(
            body.contains("'\x1b[32;1m$ echo hi\x1b[0;m'\necho hi\n"),
            "{body}"
        );
        assert!(
            body.contains("$ for i in 1 # collapsed multi-line command"),
            "{body}"
        );
        let rendered = script.render();
        assert!(rendered.starts_with("set -e\n"));
        assert!(rendered.ends_with("\nexit 0\n"));
    }

    #[test]
    fn a_later_definition_wins() {
        let v = vars(vec![
            JobVariable::plain("CI_JOB_STATUS", "running"),
            JobVariable::plain("CI_JOB_STATUS", "failed"),
        ]);
        let script = StepScript {
            variables: &v,
            project_dir: "/p",
            tmp_dir: "/p.tmp",
            lines: &[],
            echo: true,
        };
        let body = script.body();
        assert!(body.contains("export CI_JOB_STATUS='failed'"), "{body}");
        assert!(!body.contains("running"), "{body}");
    }
}
