//! `peershare-bench files --smoke` moves two tiny trees (200 × 4 KiB, 20 × 64 KiB) and a
//! file of each's size between real `peershare` processes on loopback, verifies every
//! file and prints its table. Needs the `peershare` binary next to the bench's (`cargo
//! test --workspace` builds both); without it it says why and returns. No timing is
//! asserted.

mod common;

#[test]
fn bench_files_smoke_prints_table_rows() {
    let Some(peershare) = common::peershare_or_skip("bench_files_smoke_prints_table_rows") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = common::smoke("files", &peershare, dir.path())
        .output()
        .expect("run peershare-bench files");
    common::assert_rows(
        &out,
        &[
            "## Many small files",
            "- command: `",
            "| set | files | MiB | peershare s | MiB/s | files/s |",
            "| 200 × 4 KiB | 200 |",
            "| 20 × 64 KiB | 20 |",
            "- sendme: skipped",
            "- 10,000 × 4 KiB in ≤ 2 s: n/a",
            "- 1,000 × 1 MiB at ≥ 0.8× the single-file rate: n/a",
        ],
    );
    // The bench cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
