//! Reading one source file for the architecture check: blanking comments and string literals
//! (newlines kept, so line numbers hold), masking `#[cfg(test)] mod` blocks, counting lines of
//! logic, and finding every `crate::`/`super::`/`self::` path with grouped imports expanded.
//! Knows nothing of other files; resolving paths to files is `graph`'s job.

use regex::Regex;
use std::sync::OnceLock;

/// Lines that hold only one of these are not logic.
const CLOSERS: [&str; 5] = ["}", "{", ");", "};", "),"];

/// One source file made ready for the check.
pub struct Scanned {
    /// Comments blanked, strings kept, test modules blanked: what lines of logic are counted on.
    no_comments: String,
    /// Comments, strings, char literals and test modules blanked: where paths are looked for.
    code: String,
}

/// A `crate::`/`super::`/`self::` path found in a file, one per leaf of a grouped import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRef {
    /// 1-based line of the path's first segment.
    pub line: usize,
    /// The segments, `crate`/`super`/`self` first (`use crate::{a::B}` gives `crate, a, B`).
    pub segments: Vec<String>,
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Blanks comments (both outputs) and string/char literals (only `code`), keeping newlines.
fn strip(src: &str) -> (String, String) {
    let s: Vec<char> = src.chars().collect();
    let mut keep = String::with_capacity(src.len());
    let mut code = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        let prev_ident = i > 0 && is_ident(s[i - 1]);
        if c == '/' && next == Some('/') {
            while i < s.len() && s[i] != '\n' {
                keep.push(' ');
                code.push(' ');
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    keep.push_str("  ");
                    code.push_str("  ");
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    keep.push_str("  ");
                    code.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    keep.push(blank(s[i]));
                    code.push(blank(s[i]));
                    i += 1;
                }
            }
            continue;
        }
        // Raw strings: r"…", r#"…"#, br#"…"#.
        if !prev_ident && (c == 'r' || (c == 'b' && next == Some('r'))) {
            let mut j = if c == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while s.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if s.get(j) == Some(&'"') {
                let mut end = j + 1;
                loop {
                    if end >= s.len() {
                        break;
                    }
                    if s[end] == '"' && (0..hashes).all(|h| s.get(end + 1 + h) == Some(&'#')) {
                        end += 1 + hashes;
                        break;
                    }
                    end += 1;
                }
                for &ch in &s[i..end.min(s.len())] {
                    keep.push(ch);
                    code.push(blank(ch));
                }
                i = end;
                continue;
            }
        }
        if c == '"' {
            let mut j = i + 1;
            while j < s.len() && s[j] != '"' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(s.len());
            for &ch in &s[i..end] {
                keep.push(ch);
                code.push(blank(ch));
            }
            i = end;
            continue;
        }
        if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}'), else a lifetime or label.
            let end = if next == Some('\\') {
                let mut j = i + 2;
                while j < s.len() && s[j] != '\'' && s[j] != '\n' {
                    j += 1;
                }
                Some(j + 1)
            } else if s.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            if let Some(end) = end {
                let end = end.min(s.len());
                for &ch in &s[i..end] {
                    keep.push(ch);
                    code.push(blank(ch));
                }
                i = end;
                continue;
            }
        }
        keep.push(c);
        code.push(c);
        i += 1;
    }
    (keep, code)
}

/// Char ranges of `#[cfg(test)] mod name { … }` (and `#[cfg(test)] mod name;`) in `code`.
fn test_blocks(code: &[char]) -> Vec<(usize, usize)> {
    static CFG_TEST: OnceLock<Regex> = OnceLock::new();
    let re = CFG_TEST
        .get_or_init(|| Regex::new(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]").expect("a valid regex"));
    let text: String = code.iter().collect();
    // Regex offsets are bytes; map them to char indexes.
    let byte_to_char: Vec<usize> = {
        let mut v = vec![0; text.len() + 1];
        for (ci, (bi, ch)) in text.char_indices().enumerate() {
            for b in 0..ch.len_utf8() {
                v[bi + b] = ci;
            }
        }
        v[text.len()] = code.len();
        v
    };
    let mut out = Vec::new();
    for m in re.find_iter(&text) {
        let start = byte_to_char[m.start()];
        let mut i = byte_to_char[m.end()];
        let skip_ws = |i: &mut usize| {
            while *i < code.len() && code[*i].is_whitespace() {
                *i += 1;
            }
        };
        // Further attributes.
        loop {
            skip_ws(&mut i);
            if code.get(i) == Some(&'#') {
                let mut depth = 0;
                while i < code.len() {
                    match code[i] {
                        '[' => depth += 1,
                        ']' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            } else {
                break;
            }
        }
        let word = |i: &mut usize| {
            let from = *i;
            while *i < code.len() && is_ident(code[*i]) {
                *i += 1;
            }
            code[from..*i].iter().collect::<String>()
        };
        let mut w = word(&mut i);
        if w == "pub" {
            skip_ws(&mut i);
            if code.get(i) == Some(&'(') {
                while i < code.len() && code[i] != ')' {
                    i += 1;
                }
                i += 1;
            }
            skip_ws(&mut i);
            w = word(&mut i);
        }
        if w != "mod" {
            continue;
        }
        skip_ws(&mut i);
        word(&mut i);
        skip_ws(&mut i);
        match code.get(i) {
            Some(';') => out.push((start, i + 1)),
            Some('{') => {
                let mut depth = 0;
                while i < code.len() {
                    match code[i] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                out.push((start, (i + 1).min(code.len())));
            }
            _ => {}
        }
    }
    out
}

impl Scanned {
    /// Prepares `src` for counting and path finding.
    pub fn new(src: &str) -> Scanned {
        let (keep, code) = strip(src);
        let mut keep: Vec<char> = keep.chars().collect();
        let mut code: Vec<char> = code.chars().collect();
        for (from, to) in test_blocks(&code) {
            for i in from..to {
                if code[i] != '\n' {
                    code[i] = ' ';
                    keep[i] = ' ';
                }
            }
        }
        Scanned {
            no_comments: keep.into_iter().collect(),
            code: code.into_iter().collect(),
        }
    }

    /// Non-blank lines outside test modules that are not comments and not only a closer.
    pub fn lines_of_logic(&self) -> usize {
        self.no_comments
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !CLOSERS.contains(l))
            .count()
    }

    /// Every `crate::`/`super::`/`self::` path outside comments, strings and test modules,
    /// grouped imports expanded. `pub(in crate::…)` visibilities are not paths to an item and
    /// are left out.
    pub fn paths(&self) -> Vec<PathRef> {
        let s: Vec<char> = self.code.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            if !is_ident(s[i]) || (i > 0 && is_ident(s[i - 1])) {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < s.len() && is_ident(s[j]) {
                j += 1;
            }
            let word: String = s[i..j].iter().collect();
            let mut k = j;
            while k < s.len() && s[k].is_whitespace() {
                k += 1;
            }
            let is_path = matches!(word.as_str(), "crate" | "super" | "self")
                && s.get(k) == Some(&':')
                && s.get(k + 1) == Some(&':');
            if !is_path {
                i = j;
                continue;
            }
            let before: String = s[..i].iter().collect();
            let before = before.trim_end();
            let visibility = before.strip_suffix("in").is_some_and(|b| {
                b.trim_end().ends_with('(') && !b.ends_with(|c: char| is_ident(c))
            });
            let (trees, end) = parse_tree(&s, i);
            if !visibility {
                let line = 1 + s[..i].iter().filter(|&&c| c == '\n').count();
                out.extend(trees.into_iter().map(|segments| PathRef { line, segments }));
            }
            i = end.max(j);
        }
        out
    }
}

fn skip_ws(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Parses a path (with `{…}` groups) starting at `i`; returns every leaf path and the end.
fn parse_tree(s: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut segments = Vec::new();
    loop {
        i = skip_ws(s, i);
        match s.get(i) {
            Some(&c) if is_ident(c) => {
                let from = i;
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
                segments.push(s[from..i].iter().collect::<String>());
                let k = skip_ws(s, i);
                if s.get(k) == Some(&':') && s.get(k + 1) == Some(&':') {
                    i = k + 2;
                    continue;
                }
                return (vec![segments], i);
            }
            Some('{') => {
                i += 1;
                let mut leaves = Vec::new();
                loop {
                    i = skip_ws(s, i);
                    match s.get(i) {
                        None => return (leaves, i),
                        Some('}') => return (leaves, i + 1),
                        Some(',') => i += 1,
                        _ => {
                            let (subs, end) = parse_tree(s, i);
                            for sub in subs {
                                let mut full = segments.clone();
                                full.extend(sub);
                                leaves.push(full);
                            }
                            // Skip an `as name` or anything else up to the next item.
                            i = end.max(i + 1);
                            let mut depth = 0usize;
                            while i < s.len() {
                                match s[i] {
                                    '{' => depth += 1,
                                    '}' if depth == 0 => break,
                                    '}' => depth -= 1,
                                    ',' if depth == 0 => break,
                                    _ => {}
                                }
                                i += 1;
                            }
                        }
                    }
                }
            }
            // A glob, generics or the end of the path: it names the segments so far.
            _ => return (vec![segments], i),
        }
    }
}
