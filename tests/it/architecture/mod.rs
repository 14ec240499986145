//! The architecture check (issue 16): the file import graph of `src/` has no cycle of any
//! length and no file in `src/` has over 500 lines of logic.
//!
//! Definitions: an import is any `crate::`/`super::`/`self::` path, in a `use` or inline,
//! grouped imports expanded, resolved to the file of the longest module it names; `mod.rs` and
//! `lib.rs` are files like any other; `#[cfg(test)] mod` blocks and files named `tests.rs`,
//! `tests_*.rs` or under a `tests/` folder are left out. `pub(in crate::…)` visibilities name a
//! module but use nothing from it, so they are not imports. Lines of logic are non-blank lines
//! outside test modules that are not comments and not only `}`, `{`, `);`, `};` or `),`.
//!
//! Run it and see the report:
//! `cargo test --test it architecture:: -- --nocapture`. A cycle or a big file in the real tree
//! fails the suite, so later work cannot bring them back.

mod graph;
mod scan;

use graph::{check, Report};
use std::collections::BTreeMap;
use std::path::Path;

/// Reads every `.rs` file under `dir`, keyed by its path relative to `dir` with `/`.
fn read_tree(dir: &Path) -> BTreeMap<String, String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("walk src/"))
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| {
            let rel = e.path().strip_prefix(dir).expect("under src/");
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            (
                key,
                std::fs::read_to_string(e.path()).expect("read a source file"),
            )
        })
        .collect()
}

#[test]
fn src_has_no_import_cycle_and_no_big_file() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let report = check(&read_tree(&src));
    assert!(
        report.lines.len() > 50,
        "read src/: {} files",
        report.lines.len()
    );
    assert!(report.lines.contains_key("lib.rs") && report.lines.contains_key("main.rs"));
    println!("{report}");
    assert!(report.is_clean(), "{report}");
}

fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
        .collect()
}

fn targets(report: &Report, from: &str) -> Vec<String> {
    report
        .edges
        .get(from)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn a_two_file_cycle_is_found_and_printed() {
    let r = check(&tree(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        ("b.rs", "pub struct B;\nfn f() -> crate::a::A { todo!() }\n"),
    ]));
    assert_eq!(r.cycles, vec![vec!["a.rs".to_owned(), "b.rs".to_owned()]]);
    let text = r.to_string();
    assert!(text.contains("a.rs → b.rs → a.rs"), "{text}");
    assert!(text.contains("b.rs:2 uses crate::a::A"), "{text}");
    assert!(!r.is_clean());
}

#[test]
fn a_three_file_cycle_through_super_is_found() {
    let r = check(&tree(&[
        ("lib.rs", "pub mod m;\n"),
        ("m/mod.rs", "mod x;\nmod y;\npub use self::x::X;\n"),
        ("m/x.rs", "pub struct X(super::y::Y);\n"),
        (
            "m/y.rs",
            "pub struct Y;\nimpl Y { fn f(&self) { let _ = super::X::default; } }\n",
        ),
    ]));
    // m/mod.rs → m/x.rs → m/y.rs → m/mod.rs
    assert_eq!(
        r.cycles,
        vec![vec![
            "m/mod.rs".to_owned(),
            "m/x.rs".to_owned(),
            "m/y.rs".to_owned()
        ]]
    );
}

#[test]
fn paths_resolve_to_the_longest_existing_module() {
    let r = check(&tree(&[
        ("lib.rs", "pub mod a;\n"),
        ("a/mod.rs", "pub mod b;\npub struct T;\n"),
        ("a/b.rs", "pub struct U;\n"),
        ("c.rs", "fn f() { crate::a::b::U::new(); }\n"),
        ("d.rs", "use crate::a::T;\n"),
        ("e.rs", "use crate::a::b;\n"),
    ]));
    assert_eq!(targets(&r, "c.rs"), ["a/b.rs"]);
    assert_eq!(targets(&r, "d.rs"), ["a/mod.rs"]);
    assert_eq!(targets(&r, "e.rs"), ["a/b.rs"]);
    assert!(r.is_clean(), "{r}");
}

#[test]
fn grouped_imports_are_expanded() {
    let r = check(&tree(&[
        ("lib.rs", "pub mod a;\npub mod c;\n"),
        ("a.rs", "pub struct B;\n"),
        ("c/mod.rs", "pub mod d;\npub mod e;\n"),
        ("c/d.rs", ""),
        ("c/e.rs", ""),
        (
            "f.rs",
            "use crate::{\n    a::B as Bee,\n    c::{d, e::{self}},\n};\n",
        ),
        ("g.rs", "use super::c::{self, *};\n"),
    ]));
    assert_eq!(targets(&r, "f.rs"), ["a.rs", "c/d.rs", "c/e.rs"]);
    assert_eq!(r.edges["f.rs"]["c/d.rs"].line, 1);
    // `super` of a top-level file is the crate root.
    assert_eq!(targets(&r, "g.rs"), ["c/mod.rs"]);
}

#[test]
fn test_blocks_test_files_comments_and_strings_are_skipped() {
    let r = check(&tree(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "a.rs",
            "use crate::b::B;\n\
             #[cfg(test)]\n#[allow(unused)]\nmod tests {\n    use crate::a::A;\n    fn f() { let _ = '{'; }\n}\n",
        ),
        (
            "b.rs",
            "// crate::a::A\n/* crate::a::A */\nconst S: &str = \"crate::a::A\";\n\
             const R: &str = r#\"crate::a::A\"#;\npub struct B;\n\
             pub(in crate::a) fn g() {}\n#[cfg(test)]\nmod tests { use crate::a::A; }\n",
        ),
        ("a/tests.rs", "use crate::b::B;\n"),
        ("b/tests_more.rs", "use crate::a::A;\n"),
        ("c/tests/x.rs", "use crate::a::A;\n"),
    ]));
    assert!(r.is_clean(), "{r}");
    assert_eq!(targets(&r, "a.rs"), ["b.rs"]);
    assert!(targets(&r, "b.rs").is_empty());
    assert!(!r.lines.contains_key("a/tests.rs") && !r.lines.contains_key("c/tests/x.rs"));
    // a.rs: only `use crate::b::B;` is logic.
    assert_eq!(r.lines["a.rs"], 1);
}

#[test]
fn lines_of_logic_skip_blanks_comments_and_closers() {
    let src = "//! header\n\nfn f() {\n    g(\n        1,\n    );\n    /* note\n       more */\n    let v = vec![\n        (1, 2),\n    ];\n}\n{\n};\n),\n";
    let r = check(&tree(&[("lib.rs", ""), ("f.rs", src)]));
    // fn f() {, g(, 1,, let v = vec![, (1, 2),, ]; — six lines.
    assert_eq!(r.lines["f.rs"], 6);

    let big = "fn f() {}\n".repeat(501);
    let ok = "fn f() {}\n}\n".repeat(500);
    let r = check(&tree(&[("lib.rs", ""), ("big.rs", &big), ("ok.rs", &ok)]));
    assert_eq!(r.big_files, vec![("big.rs".to_owned(), 501)]);
    assert!(r.to_string().contains("big.rs: 501 lines of logic"), "{r}");
}
