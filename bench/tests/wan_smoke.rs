//! `peershare-bench wan --smoke` runs one tiny cell through the WAN emulator and prints
//! its table. Needs root (network namespaces, TUN devices) and the `peershare` binary
//! next to the bench's (`cargo test --workspace` builds both); without either it says
//! why and returns. No timing is asserted.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

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
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_peershare-bench"));
    let peershare = bench.with_file_name("peershare");
    if !peershare.is_file() {
        note(&format!(
            "SKIPPED bench_wan_smoke_prints_table_rows: no peershare binary at {} \
             (`cargo test --workspace` builds it)",
            peershare.display()
        ));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(&bench)
        .args(["wan", "--smoke", "--peershare"])
        .arg(&peershare)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run peershare-bench wan");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for row in [
        "## WAN paths (emulator)",
        "- emulator ceiling:",
        "| RTT ms | loss % | rate Mbit/s |",
        "peershare / link",
        "| 10 | 0 | 100 |",
    ] {
        assert!(stdout.contains(row), "{row:?} missing from:\n{stdout}");
    }
    // The bench cleans up after itself: files and namespaces.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !left.contains(&format!("psw-{pid}-")),
        "namespaces left behind:\n{left}"
    );
}
