//! `peershare-bench wan --smoke` runs one tiny cell through the WAN emulator and prints
//! its table. Needs root (network namespaces, TUN devices) and the `peershare` binary
//! next to the bench's (`cargo test --workspace` builds both); without either it says
//! why and returns. No timing is asserted.

mod common;

use std::process::{Command, Stdio};

use common::note;

#[test]
fn bench_wan_smoke_prints_table_rows() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        note(
            "SKIPPED bench_wan_smoke_prints_table_rows: needs root for network namespaces and \
             TUN devices (CI runs as root)",
        );
        return;
    }
    let Some(peershare) = common::peershare_or_skip("bench_wan_smoke_prints_table_rows") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let child = common::smoke("wan", &peershare, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run peershare-bench wan");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    common::assert_rows(
        &out,
        &[
            "## WAN paths (emulator)",
            "- emulator ceiling:",
            "| RTT ms | loss % | rate Mbit/s |",
            "peershare / link | bound / link |",
            "| 10 | 0 | 100 |",
        ],
    );
    // The bench cleans up after itself: files and namespaces.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !left.contains(&format!("psw-{pid}-")),
        "namespaces left behind:\n{left}"
    );
}
