//! Table-style tests of collection (paths, globs, `**`, exclude, untracked), the three formats
//! and the guarded extraction, on real temp directories.

use super::*;
use std::io::Read as _;

/// A project directory with a small tree.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        "out/app.bin",
        "out/app.log",
        "out/sub/deep.txt",
        "out/sub/deep.log",
        "out/tmp/scratch.txt",
        "docs/readme.md",
        "top.txt",
    ];
    for f in files {
        let path = dir.path().join(f);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, f.as_bytes()).unwrap();
    }
    dir
}

fn select(paths: &[&str], exclude: &[&str]) -> Selection {
    Selection {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        untracked: false,
    }
}

fn names(c: &Collected) -> Vec<&str> {
    c.files.keys().map(String::as_str).collect()
}

#[test]
fn paths_globs_and_exclusions_select_like_gitlab_runner() {
    let dir = project();
    let cases: Vec<(Vec<&str>, Vec<&str>, Vec<&str>)> = vec![
        // A directory is taken recursively, itself included.
        (
            vec!["out/sub"],
            vec![],
            vec!["out/sub", "out/sub/deep.log", "out/sub/deep.txt"],
        ),
        // `*` stays in one segment.
        (vec!["out/*.log"], vec![], vec!["out/app.log"]),
        // `**` spans segments.
        (
            vec!["out/**/*.txt"],
            vec![],
            vec!["out/sub/deep.txt", "out/tmp/scratch.txt"],
        ),
        // A matched directory is walked; exclusions drop single paths.
        (
            vec!["out"],
            vec!["out/*.log", "out/tmp/**"],
            vec![
                "out",
                "out/app.bin",
                "out/sub",
                "out/sub/deep.log",
                "out/sub/deep.txt",
                "out/tmp",
            ],
        ),
        (
            vec!["out/", "top.txt"],
            vec!["**/*.log"],
            vec![
                "out",
                "out/app.bin",
                "out/sub",
                "out/sub/deep.txt",
                "out/tmp",
                "out/tmp/scratch.txt",
                "top.txt",
            ],
        ),
        // Braces and an absolute path inside the project.
        (vec!["{docs,nothing}/*.md"], vec![], vec!["docs/readme.md"]),
        // Outside the project, or missing: nothing.
        (vec!["../etc/passwd", "missing/*"], vec![], vec![]),
    ];
    for (paths, exclude, want) in cases {
        let got = collect(dir.path(), &select(&paths, &exclude)).unwrap();
        assert_eq!(names(&got), want, "paths {paths:?} exclude {exclude:?}");
    }
    let abs = format!("{}/top.txt", dir.path().display());
    let got = collect(dir.path(), &select(&[&abs], &[])).unwrap();
    assert_eq!(names(&got), vec!["top.txt"]);
}

#[test]
fn messages_report_matches_misses_and_exclusions() {
    let dir = project();
    let got = collect(
        dir.path(),
        &select(&["out/*.log", "missing", "../x"], &["out/app.log"]),
    )
    .unwrap();
    let text = got.messages.join("\n");
    assert!(
        text.contains("WARNING: out/*.log: no matching files"),
        "{text}"
    );
    assert!(
        text.contains("WARNING: missing: no matching files"),
        "{text}"
    );
    assert!(
        text.contains("not a subpath of project directory: ../x"),
        "{text}"
    );
    assert!(text.contains("out/app.log: excluded 1 files"), "{text}");
    assert!(got.files.is_empty());
}

#[test]
fn untracked_takes_what_git_does_not_track() {
    let dir = project();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "out", "docs"]);
    let mut sel = select(&[], &[]);
    sel.untracked = true;
    let got = collect(dir.path(), &sel).unwrap();
    assert_eq!(names(&got), vec!["top.txt"]);
    assert!(got
        .messages
        .contains(&"untracked: found 1 files".to_string()));
}

#[test]
fn zip_round_trip_keeps_tree_modes_and_links() {
    let dir = project();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(
            dir.path().join("out/app.bin"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("app.bin", dir.path().join("out/link")).unwrap();
    }
    let got = collect(dir.path(), &select(&["out"], &["out/tmp/**"])).unwrap();
    let mut buf = io::Cursor::new(Vec::new());
    write_zip(dir.path(), &got.files, &mut buf).unwrap();
    let archive = tempfile::NamedTempFile::new().unwrap();
    fs::write(archive.path(), buf.get_ref()).unwrap();

    let mut zip = zip::ZipArchive::new(io::Cursor::new(buf.get_ref().clone())).unwrap();
    let names: Vec<String> = zip
        .file_names()
        .map(|name| name.unwrap().into_owned())
        .collect();
    let entries: Vec<&str> = names.iter().map(String::as_str).collect();
    assert!(entries.contains(&"out/"), "{entries:?}");
    assert!(entries.contains(&"out/sub/deep.txt"), "{entries:?}");
    assert!(
        !entries.iter().any(|e| e.ends_with("scratch.txt")),
        "{entries:?}"
    );
    let mut content = String::new();
    zip.by_name("out/sub/deep.txt")
        .unwrap()
        .read_to_string(&mut content)
        .unwrap();
    assert_eq!(content, "out/sub/deep.txt");

    let dest = tempfile::tempdir().unwrap();
    let count = extract_zip(archive.path(), dest.path()).unwrap();
    assert_eq!(count, got.files.len());
    assert_eq!(
        fs::read_to_string(dest.path().join("out/app.log")).unwrap(),
        "out/app.log"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dest.path().join("out/app.bin"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(dest.path().join("out/link")).unwrap(),
            PathBuf::from("app.bin")
        );
    }
    // Extracting again over existing files works (a second dependency with the same paths).
    extract_zip(archive.path(), dest.path()).unwrap();
}

/// A zip holding entries with the given names (written raw, as a hostile archive would).
fn hostile_zip(entries: &[(&str, bool)]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut zip = zip::ZipWriter::new(fs::File::create(file.path()).unwrap());
    for (name, is_link) in entries {
        let options = zip::write::SimpleFileOptions::default();
        if *is_link {
            zip.add_symlink(*name, "/", options).unwrap();
        } else {
            zip.start_file(*name, options).unwrap();
            zip.write_all(b"pwned").unwrap();
        }
    }
    zip.finish().unwrap();
    file
}

#[test]
fn extraction_refuses_entries_that_escape() {
    let outside = tempfile::tempdir().unwrap();
    let escape = format!("{}/evil.txt", outside.path().display());
    let cases: Vec<Vec<(&str, bool)>> = vec![
        vec![("../evil.txt", false)],
        vec![("a/../../evil.txt", false)],
        vec![(escape.as_str(), false)],
        // A symbolic link to `/`, then a file written through it.
        vec![("root", true), ("root/tmp/evil.txt", false)],
        // …and no directory is made through it either.
        vec![
            ("root", true),
            ("root/flotilla-must-not-exist/evil.txt", false),
        ],
        vec![("root", true), ("root/flotilla-must-not-exist/", false)],
    ];
    for entries in cases {
        let zip = hostile_zip(&entries);
        let dest = tempfile::tempdir().unwrap();
        let err = extract_zip(zip.path(), dest.path()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Escapes(_)),
            "{entries:?}: {err}"
        );
        assert!(
            err.to_string().contains("outside the project directory"),
            "{err}"
        );
    }
    assert!(!outside.path().join("evil.txt").exists());
    assert!(!Path::new("/tmp/evil.txt").exists());
    assert!(!Path::new("/flotilla-must-not-exist").exists());
}

#[test]
fn gzip_and_raw_formats() {
    let dir = project();
    let one = collect(dir.path(), &select(&["top.txt"], &[])).unwrap();
    let mut gz = Vec::new();
    write_gzip(dir.path(), &one.files, &mut gz).unwrap();
    let mut decoder = flate2::read::GzDecoder::new(gz.as_slice());
    let mut text = String::new();
    decoder.read_to_string(&mut text).unwrap();
    assert_eq!(text, "top.txt");
    assert_eq!(
        decoder.header().and_then(|h| h.filename()),
        Some(b"top.txt".as_slice())
    );

    let mut raw = Vec::new();
    write_raw(dir.path(), &one.files, &mut raw).unwrap();
    assert_eq!(raw, b"top.txt");

    let dirs = collect(dir.path(), &select(&["out/sub"], &[])).unwrap();
    let err = write_gzip(dir.path(), &dirs.files, &mut Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("only supported for regular files"),
        "{err}"
    );
    let err = write_raw(dir.path(), &dirs.files, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("only one file"), "{err}");
}

#[test]
fn collection_never_follows_a_link_out_of_the_project() {
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(outside.path().join("other-project")).unwrap();
    fs::write(
        outside.path().join("other-project/secret.txt"),
        b"other tenant",
    )
    .unwrap();
    let wd = project();
    std::os::unix::fs::symlink(outside.path(), wd.path().join("x")).unwrap();
    for paths in [
        vec!["x/other-project/secret.txt"],
        vec!["x/other-project/"],
        vec!["x/**/*.txt"],
        vec!["x/*/secret.txt"],
    ] {
        let c = collect(wd.path(), &select(&paths, &[])).unwrap();
        assert!(
            !c.files.keys().any(|k| k.contains("secret")),
            "{paths:?}: {:?}",
            names(&c)
        );
    }
    // The link itself may be archived as a link; it is never followed.
    let c = collect(wd.path(), &select(&["x"], &[])).unwrap();
    assert!(
        matches!(c.files.get("x"), Some(Entry::Symlink(_)) | None),
        "{:?}",
        names(&c)
    );
    assert!(
        !c.files.keys().any(|k| k.starts_with("x/")),
        "{:?}",
        names(&c)
    );
}

#[test]
fn extraction_drops_setuid_bits_and_stops_at_its_cap() {
    use std::os::unix::fs::PermissionsExt as _;
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut zip = zip::ZipWriter::new(fs::File::create(file.path()).unwrap());
    let options = zip::write::SimpleFileOptions::default().unix_permissions(0o6755);
    zip.start_file("suid", options).unwrap();
    zip.write_all(&[7u8; 4096]).unwrap();
    zip.start_file("more", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(&[7u8; 4096]).unwrap();
    zip.finish().unwrap();
    let dest = tempfile::tempdir().unwrap();
    extract_zip(file.path(), dest.path()).unwrap();
    let mode = fs::metadata(dest.path().join("suid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "{mode:o}");
    let dest = tempfile::tempdir().unwrap();
    let err = extract::extract_zip_capped(file.path(), dest.path(), 6000).unwrap_err();
    assert!(
        matches!(err, ArchiveError::TooLarge { limit: 6000 }),
        "{err}"
    );
    assert!(
        !dest.path().join("more").exists(),
        "the partial file is removed"
    );
}
