//! The file import graph of a source tree and what the architecture check reports on it:
//! files mapped to modules by their paths (`lib.rs` and `main.rs` are crate roots, `a/mod.rs`
//! and `a.rs` are `a`), each path resolved to the file of the longest module it names, cycles
//! found by strongly connected components, and files over the line limit.

use super::scan::Scanned;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

/// The most lines of logic a source file may have.
pub const MAX_LINES_OF_LOGIC: usize = 500;

/// Where one file imports another: the first line of the first path that makes the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// 1-based line in the importing file.
    pub line: usize,
    /// The path as written, groups expanded (`crate::config::raw::RawConfig`).
    pub path: String,
}

/// What the check found on a tree.
#[derive(Debug, Default)]
pub struct Report {
    /// Import edges, importing file → imported file → first evidence.
    pub edges: BTreeMap<String, BTreeMap<String, Evidence>>,
    /// Elementary cycles, one shortest cycle through each file of each circle, each starting at
    /// its smallest file (the first file is not repeated at the end).
    pub cycles: Vec<Vec<String>>,
    /// Files over [`MAX_LINES_OF_LOGIC`], with their count.
    pub big_files: Vec<(String, usize)>,
    /// Lines of logic of every checked file.
    pub lines: BTreeMap<String, usize>,
}

impl Report {
    /// True when there is no cycle and no file over the limit.
    pub fn is_clean(&self) -> bool {
        self.cycles.is_empty() && self.big_files.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return writeln!(
                f,
                "architecture: {} files, no import cycle, none over {} lines of logic",
                self.lines.len(),
                MAX_LINES_OF_LOGIC
            );
        }
        writeln!(f, "architecture: {} import cycle(s)", self.cycles.len())?;
        for cycle in &self.cycles {
            let mut names = cycle.clone();
            names.push(cycle[0].clone());
            writeln!(f, "  cycle: {}", names.join(" → "))?;
            for pair in names.windows(2) {
                if let Some(e) = self.edges.get(&pair[0]).and_then(|m| m.get(&pair[1])) {
                    writeln!(f, "    {}:{} uses {}", pair[0], e.line, e.path)?;
                }
            }
        }
        writeln!(
            f,
            "architecture: {} file(s) over {} lines of logic",
            self.big_files.len(),
            MAX_LINES_OF_LOGIC
        )?;
        for (file, n) in &self.big_files {
            writeln!(f, "  {file}: {n} lines of logic")?;
        }
        Ok(())
    }
}

/// True for files the check leaves out: `tests.rs`, `tests_*.rs`, anything under `tests/`.
pub fn is_test_file(path: &str) -> bool {
    let mut parts: Vec<&str> = path.split('/').collect();
    let name = parts.pop().unwrap_or_default();
    name == "tests.rs"
        || (name.starts_with("tests_") && name.ends_with(".rs"))
        || parts.contains(&"tests")
}

/// (crate, module path) of a file path relative to `src/`; `main.rs` roots its own crate.
fn module_of(path: &str) -> (&'static str, Vec<String>) {
    if path == "main.rs" {
        return ("bin", Vec::new());
    }
    let stem = path.strip_suffix(".rs").unwrap_or(path);
    let mut parts: Vec<String> = stem.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    ("lib", parts)
}

/// Resolves `segments` written in the module `here` to the longest module that exists.
fn resolve(
    modules: &BTreeMap<(&'static str, Vec<String>), String>,
    krate: &'static str,
    here: &[String],
    segments: &[String],
) -> Option<String> {
    let mut base: Vec<String> = match segments.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("self") | Some("super") => here.to_vec(),
        _ => return None,
    };
    let mut rest = segments.iter().skip(usize::from(segments[0] == "crate"));
    let mut rest_vec = Vec::new();
    let mut leading = true;
    for seg in rest.by_ref() {
        match seg.as_str() {
            "super" if leading => {
                base.pop()?;
            }
            "self" => {}
            _ => {
                leading = false;
                rest_vec.push(seg.clone());
            }
        }
    }
    for seg in rest_vec {
        let mut next = base.clone();
        next.push(seg);
        if modules.contains_key(&(krate, next.clone())) {
            base = next;
        } else {
            break;
        }
    }
    modules.get(&(krate, base)).cloned()
}

/// Checks a tree given as paths relative to `src/` (with `/`) and their contents.
pub fn check(files: &BTreeMap<String, String>) -> Report {
    let files: BTreeMap<&String, &String> =
        files.iter().filter(|(p, _)| !is_test_file(p)).collect();
    let modules: BTreeMap<(&'static str, Vec<String>), String> =
        files.keys().map(|p| (module_of(p), (*p).clone())).collect();
    let mut report = Report::default();
    for (path, src) in &files {
        let scanned = Scanned::new(src);
        let n = scanned.lines_of_logic();
        report.lines.insert((*path).clone(), n);
        if n > MAX_LINES_OF_LOGIC {
            report.big_files.push(((*path).clone(), n));
        }
        let (krate, here) = module_of(path);
        let out = report.edges.entry((*path).clone()).or_default();
        for r in scanned.paths() {
            let Some(target) = resolve(&modules, krate, &here, &r.segments) else {
                continue;
            };
            if &target != *path {
                out.entry(target).or_insert(Evidence {
                    line: r.line,
                    path: r.segments.join("::"),
                });
            }
        }
    }
    report.cycles = cycles(&report.edges);
    report
}

/// Strongly connected components of more than one file (Tarjan's algorithm).
fn components(edges: &BTreeMap<String, BTreeMap<String, Evidence>>) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, Evidence>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a str) {
        let i = st.index.len();
        st.index.insert(v, i);
        st.low.insert(v, i);
        st.stack.push(v);
        st.on_stack.insert(v);
        let edges = st.edges;
        for w in edges.get(v).into_iter().flat_map(|m| m.keys()) {
            let w = w.as_str();
            if !st.index.contains_key(w) {
                visit(st, w);
                let lw = st.low[w];
                let lv = st.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if st.on_stack.contains(w) {
                let iw = st.index[w];
                let lv = st.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = BTreeSet::new();
            while let Some(w) = st.stack.pop() {
                st.on_stack.remove(w);
                comp.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                st.out.push(comp);
            }
        }
    }
    let mut st = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !st.index.contains_key(v.as_str()) {
            visit(&mut st, v);
        }
    }
    st.out
}

/// One shortest cycle through each file of each component, rotated and deduplicated.
fn cycles(edges: &BTreeMap<String, BTreeMap<String, Evidence>>) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for comp in components(edges) {
        for start in &comp {
            // Breadth-first from `start` inside the component until an edge leads back to it.
            let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
            let mut queue = VecDeque::from([start.as_str()]);
            let mut last = None;
            'bfs: while let Some(v) = queue.pop_front() {
                for w in edges.get(v).into_iter().flat_map(|m| m.keys()) {
                    if w == start {
                        last = Some(v);
                        break 'bfs;
                    }
                    if comp.contains(w) && !prev.contains_key(w.as_str()) {
                        prev.insert(w, v);
                        queue.push_back(w);
                    }
                }
            }
            let Some(mut v) = last else { continue };
            let mut cycle = vec![v.to_owned()];
            while v != start {
                v = prev[v];
                cycle.push(v.to_owned());
            }
            cycle.reverse();
            let min = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap_or(0);
            cycle.rotate_left(min);
            found.insert(cycle);
        }
    }
    found.into_iter().collect()
}
