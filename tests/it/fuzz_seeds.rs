//! The fuzz targets' seed inputs (and any input that once made one fail) replayed as ordinary
//! tests, so that the parsers are exercised without a nightly toolchain. See fuzz/README.md.

use std::path::PathBuf;

fn every_fuzz_seed_parses_without_panicking() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    type Target = fn(&[u8]);
    let targets: [(&str, Target); 4] = [
        ("helpdesk", otnsx::fuzzing::helpdesk),
        ("nsxv", otnsx::fuzzing::nsxv),
        ("nsxt", otnsx::fuzzing::nsxt),
        ("config", otnsx::fuzzing::config),
    ];
    let mut replayed = 0;
    for (name, target) in targets {
        for dir in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                target(&std::fs::read(&path).unwrap());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 12, "only {replayed} seeds found under fuzz/");
}

crate::tests! {
    every_fuzz_seed_parses_without_panicking,
}
