//! Writing the script's lines: quoted commands, printed notices and warnings, `find` deletions.

use super::{notice, RESET, YELLOW};
use crate::executor::script::quote;

/// Go's `regexp.QuoteMeta`: a regular expression matching `s` literally (git's value patterns).
pub(super) fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(super) fn join(args: &[&str]) -> String {
    args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

/// The script's lines, written in order.
#[derive(Default)]
pub(super) struct Writer {
    /// The lines so far.
    pub lines: Vec<String>,
}

impl Writer {
    /// A raw shell line.
    pub(super) fn line(&mut self, line: &str) {
        self.lines.push(line.to_string());
    }

    /// A command, every argument quoted.
    pub(super) fn cmd(&mut self, args: &[&str]) {
        self.lines.push(join(args));
    }

    /// Prints `text` as it is.
    pub(super) fn print(&mut self, text: &str) {
        self.lines.push(format!("printf '%s\\n' {}", quote(text)));
    }

    /// Prints `text` as a notice (bold green).
    pub(super) fn notice(&mut self, text: &str) {
        self.print(&notice(text));
    }

    /// Prints `text` as a warning (yellow).
    pub(super) fn warning(&mut self, text: &str) {
        self.print(&format!("{YELLOW}WARNING: {text}{RESET}"));
    }

    /// Deletes what `find` finds under `dir` of type `kind` named `name`, if `dir` exists.
    pub(super) fn find_delete(&mut self, dir: &str, kind: &str, name: &str) {
        let action = if kind == "d" {
            "-prune -exec rm -rf {} +"
        } else {
            "-delete"
        };
        self.lines.push(format!(
            "if [ -d {d} ]; then find {d} -type {kind} -name {n} {action}; fi",
            d = quote(dir),
            n = quote(name)
        ));
    }
}
