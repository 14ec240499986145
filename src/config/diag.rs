//! Collects the problems and warnings found while loading one file, with line numbers computed
//! from byte offsets. Owned by one load; handed to the reader and the validator in turn.

use std::ops::Range;

use super::error::{ConfigWarning, Problem, WarningKind};

/// Problems and warnings of one load.
pub(super) struct Diagnostics {
    origin: String,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
    /// Errors, in the order found.
    pub problems: Vec<Problem>,
    /// Warnings, in the order found.
    pub warnings: Vec<ConfigWarning>,
}

impl Diagnostics {
    /// Starts collecting for `text`, read from `origin`.
    pub fn new(origin: &str, text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Diagnostics {
            origin: origin.to_string(),
            line_starts,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The 1-based line holding byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// The line of a span, or `fallback` when the parser kept none.
    pub fn line_of(&self, span: Option<Range<usize>>, fallback: usize) -> usize {
        span.map(|s| self.line(s.start)).unwrap_or(fallback)
    }

    /// Records an error.
    pub fn error(&mut self, line: usize, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            origin: self.origin.clone(),
            line,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Records a warning.
    pub fn warn(&mut self, line: usize, path: &str, kind: WarningKind) {
        self.warnings.push(ConfigWarning {
            origin: self.origin.clone(),
            line,
            path: path.to_string(),
            kind,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Diagnostics;

    #[test]
    fn lines_are_one_based() {
        let d = Diagnostics::new("x", "a\nbc\n\nd");
        assert_eq!(d.line(0), 1);
        assert_eq!(d.line(1), 1);
        assert_eq!(d.line(2), 2);
        assert_eq!(d.line(5), 3);
        assert_eq!(d.line(6), 4);
    }
}
