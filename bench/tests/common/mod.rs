//! What the bench's smoke tests share: the binaries, and the check of a run's output.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The bench binary under test.
pub fn bench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_peershare-bench"))
}

/// `peershare-bench SUBCOMMAND --smoke --peershare PEERSHARE --dir DIR`.
pub fn smoke(subcommand: &str, peershare: &Path, dir: &Path) -> Command {
    let mut c = Command::new(bench());
    c.args([subcommand, "--smoke", "--peershare"])
        .arg(peershare)
        .arg("--dir")
        .arg(dir);
    c
}

/// A line on stderr (a test's note on what it skipped).
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The `peershare` binary next to the bench's, or `None` after a note that `test` is
/// skipped without it.
pub fn peershare_or_skip(test: &str) -> Option<PathBuf> {
    let peershare = bench().with_file_name("peershare");
    if peershare.is_file() {
        return Some(peershare);
    }
    note(&format!(
        "SKIPPED {test}: no peershare binary at {} (`cargo test --workspace` builds it)",
        peershare.display()
    ));
    None
}

/// The run succeeded and its standard output holds every one of `rows`; that output.
pub fn assert_rows(out: &Output, rows: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for row in rows {
        assert!(stdout.contains(row), "{row:?} missing from:\n{stdout}");
    }
    stdout
}
