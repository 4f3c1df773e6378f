//! The benchmark binary builds and a tiny run prints every row of its table. No timing is
//! asserted: the figures of a CI machine mean nothing.

use std::process::Command;

#[test]
fn bench_tiny_run_prints_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_peershare-bench"))
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for row in [
        "| (a) |",
        "| (b) |",
        "| (c) |",
        "| (d) | peak RSS, sending",
        "| (d) | peak RSS, receiving",
        "| (e) |",
        "| (f) |",
        "| (g) |",
        "| 2 | 1 |",
    ] {
        assert!(stdout.contains(row), "row {row} missing from:\n{stdout}");
    }
    for fact in ["cores:", "net.core.rmem_max:", "capped:"] {
        assert!(stdout.contains(fact), "{fact} missing from:\n{stdout}");
    }
    // The bench cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_refs_tools_absent_skips_rows() {
    // An empty directory holds no reference tools: the run says what it skipped and
    // exits 0 without measuring anything (CI never installs sendme).
    let refs = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_peershare-bench"))
        .arg("--refs")
        .arg(refs.path())
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run peershare-bench --refs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for line in [
        "- skipped: sendme:",
        "- skipped: magic-wormhole:",
        "reference rows skipped",
    ] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
    assert!(!stdout.contains("| peershare |"), "{stdout}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
