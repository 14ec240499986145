//! Zip extraction: any archive is extracted or refused, never a panic, and nothing is ever
//! written outside the destination directory (its parent holds only it afterwards).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let root = tempfile::tempdir().expect("tempdir");
    let archive = root.path().join("in.zip");
    std::fs::write(&archive, data).expect("write");
    let sandbox = root.path().join("sandbox");
    let dest = sandbox.join("dest");
    std::fs::create_dir_all(&dest).expect("mkdir");
    let _ = flotilla::helper_commands::extract_zip(&archive, &dest);
    let outside: Vec<_> = std::fs::read_dir(&sandbox)
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "dest")
        .collect();
    assert!(outside.is_empty(), "written outside: {outside:?}");
});
