//! Property tests (proptest, run in CI) of the invariants the fuzz targets in `fuzz/` check at
//! length: masking holds whatever the split, expansion stays within its cap, the header parsers
//! and the config and payload decoders never panic, a decode error never quotes a value, and zip
//! extraction never writes outside its destination.

use proptest::prelude::*;

use crate::job::{expand, expand_capped, JobPayload};
use crate::trace::invariant::check_masking;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// No masked value reaches the trace, and the trace does not depend on how output was split
    /// into writes. Values use an alphabet without the letters of `[MASKED]` (so a mask never
    /// spells one), with regex and shell metacharacters, and may be prefixes of each other.
    #[test]
    fn masked_values_never_leak_whatever_the_split(
        base in "[a-z0-9$*.()|+?^{}'\";&\\\\-]{3,12}",
        extra in proptest::collection::vec("[a-z0-9$*.()|+?^{}'\";&\\\\-]{1,6}", 1..4),
        filler in proptest::collection::vec(any::<u8>(), 0..200),
        picks in proptest::collection::vec(any::<u8>(), 0..64),
        cuts in proptest::collection::vec(any::<u16>(), 0..12),
    ) {
        // One value is a prefix of the others.
        let mut phrases = vec![base.clone()];
        phrases.extend(extra.iter().map(|e| format!("{base}{e}")));
        let mut output = Vec::new();
        for (i, b) in filler.iter().enumerate() {
            output.push(*b);
            if let Some(p) = picks.get(i) {
                if p % 3 == 0 {
                    output.extend_from_slice(phrases[*p as usize % phrases.len()].as_bytes());
                }
            }
        }
        let cuts = cuts.iter().map(|c| usize::from(*c));
        prop_assert_eq!(check_masking(&phrases, &output, cuts), Ok(()));
    }

    /// A capped expansion never holds more than its cap, and under it equals the plain one.
    #[test]
    fn expansion_stays_within_its_cap(
        value in "[a-z$]{0,40}",
        text in "[A-C$a{}]{0,60}",
        limit in 0usize..400,
    ) {
        let lookup = |k: &str| match k {
            "A" => Some(value.clone()),
            "B" => Some(format!("{value}{value}")),
            _ => None,
        };
        match expand_capped(&text, lookup, limit) {
            Ok(out) => {
                prop_assert!(out.len() <= limit);
                prop_assert_eq!(out, expand(&text, lookup));
            }
            Err(e) => prop_assert!(expand(&text, lookup).len() > e.limit),
        }
    }

    /// The response-header parsers accept any text without panicking.
    #[test]
    fn header_parsers_never_panic(value in "\\PC{0,40}") {
        let _ = crate::coordinator::parsers::range_end(&value);
        if let Some(wait) = crate::coordinator::parsers::retry_after_wait(&value) {
            prop_assert!(!wait.is_zero());
        }
        let _ = crate::coordinator::parsers::reset_time_wait(&value, std::time::SystemTime::now());
    }

    /// A payload with wrongly typed fields is an error that names no value it was given.
    #[test]
    fn payload_errors_never_quote_a_value(
        secret in "[a-z]{12}",
        field in prop::sample::select(vec!["masked", "public", "raw", "file"]),
        steps_kind in 0u8..3,
    ) {
        let steps = match steps_kind {
            0 => serde_json::json!(secret),
            1 => serde_json::json!({ &secret: 1 }),
            _ => serde_json::json!([]),
        };
        let payload = serde_json::json!({
            "id": 1, "token": "t",
            "variables": [{"key": "K", "value": &secret, field: &secret}],
            "steps": steps,
        });
        let err = JobPayload::parse(payload).expect_err("wrong types").to_string();
        prop_assert!(!err.contains(&secret), "{}", err);
    }

    /// Config parsing returns an error or a config for any text, never a panic.
    #[test]
    fn config_parsing_never_panics(text in "[a-z_\\[\\]=\"' \n0-9.{},-]{0,200}") {
        let _ = crate::config::Config::from_toml_str(&text, "prop.toml");
    }

    /// Whatever names, links and `..` an archive holds, extraction writes only inside its
    /// destination.
    #[test]
    fn zip_extraction_never_escapes(
        entries in proptest::collection::vec(
            (
                proptest::collection::vec(
                    prop::sample::select(vec!["..", ".", "a", "b", "", "/"]), 1..5),
                any::<bool>(),
                prop::sample::select(vec!["..", "/", "../..", "a", "/tmp"]),
            ),
            1..6,
        ),
    ) {
        use std::io::Write;
        use zip::write::SimpleFileOptions;
        let root = tempfile::tempdir().expect("tempdir");
        let archive = root.path().join("in.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive).expect("create"));
        for (parts, is_link, target) in &entries {
            let name = parts.join("/");
            if *is_link {
                let _ = zip.add_symlink(name, *target, SimpleFileOptions::default());
            } else if zip.start_file(name, SimpleFileOptions::default()).is_ok() {
                let _ = zip.write_all(b"x");
            }
        }
        let _ = zip.finish();
        let sandbox = root.path().join("sandbox");
        let dest = sandbox.join("dest");
        std::fs::create_dir_all(&dest).expect("mkdir");
        let _ = crate::helper_commands::extract_zip(&archive, &dest);
        let outside: Vec<_> = std::fs::read_dir(&sandbox)
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .filter(|n| n != "dest")
            .collect();
        prop_assert!(outside.is_empty(), "written outside: {:?}", outside);
    }
}
