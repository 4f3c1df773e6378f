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
