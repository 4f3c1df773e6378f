//! The benchmark binary builds and a tiny run prints every row of its table. No timing is
//! asserted: the figures of a CI machine mean nothing.

mod common;

use std::process::Command;

#[test]
fn bench_tiny_run_prints_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bench())
        .args([
            "--size",
            "4",
            "--recipients",
            "2",
            "--latency-runs",
            "1",
            "--parallel",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run peershare-bench");
    common::assert_rows(
        &out,
        &[
            "| (a) |",
            "| (b) |",
            "| (c) |",
            "| (d) | peak RSS, sending",
            "| (d) | peak RSS, receiving",
            "| (e) |",
            "| (f) |",
            "| (g) |",
            "| 2 | 1 |",
            "cores:",
            "net.core.rmem_max:",
            "capped:",
        ],
    );
    // The bench cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_refs_tools_absent_skips_rows() {
    // An empty directory holds no reference tools: the run says what it skipped and
    // exits 0 without measuring anything (CI never installs sendme).
    let refs = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::bench())
        .arg("--refs")
        .arg(refs.path())
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run peershare-bench --refs");
    let stdout = common::assert_rows(
        &out,
        &[
            "- skipped: sendme:",
            "- skipped: magic-wormhole:",
            "reference rows skipped",
        ],
    );
    assert!(!stdout.contains("| peershare |"), "{stdout}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
