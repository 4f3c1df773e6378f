//! `peershare-bench signaling` builds and a tiny run against one node, and against two
//! nodes on a real `redis-server` with node B killed, prints its rows: every member of
//! the killed node back in its session, no session lost. No timing is asserted.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The `peershare-signaling` binary next to the bench's, or `None` after a note.
fn signaling_or_skip(test: &str) -> Option<PathBuf> {
    let bin = common::bench().with_file_name("peershare-signaling");
    if bin.is_file() {
        return Some(bin);
    }
    common::note(&format!(
        "SKIPPED {test}: no peershare-signaling binary at {} (`cargo test --workspace` builds it)",
        bin.display()
    ));
    None
}

fn tiny_run(server: &PathBuf, extra: &[&str]) -> std::process::Output {
    Command::new(common::bench())
        .args([
            "signaling",
            "--peers",
            "20",
            "--interval",
            "0.5",
            "--duration",
            "2",
        ])
        .args(["--saturate-pairs", "0"])
        // One core for everything: CI machines may have one.
        .args(["--server-core", "0", "--generator-core", "0"])
        .arg("--server-bin")
        .arg(server)
        .args(extra)
        .output()
        .expect("run peershare-bench signaling")
}

#[test]
fn bench_signaling_one_node_tiny_run_prints_every_row() {
    let Some(server) = signaling_or_skip("bench_signaling_one_node_tiny_run_prints_every_row")
    else {
        return;
    };
    let out = tiny_run(&server, &[]);
    let stdout = common::assert_rows(
        &out,
        &[
            "one node on core 0",
            "| joins/s (burst of 20) |",
            "| RSS per idle joined peer |",
            "| active: relay latency p50 / p99 / max |",
            "| errors (error frames, lost connections) | 0 |",
        ],
    );
    assert!(!stdout.contains("failover"), "{stdout}");
}

#[test]
fn bench_signaling_two_nodes_node_killed_every_member_back() {
    let Some(server) = signaling_or_skip("bench_signaling_two_nodes_node_killed_every_member_back")
    else {
        return;
    };
    let out = tiny_run(&server, &["--redis", "--failover-secs", "2"]);
    common::assert_rows(
        &out,
        &[
            "two nodes + Redis",
            "| active: CPU (one core = 100 %) | node A ",
            "| errors (error frames, lost connections) | 0 |",
            "| failover: node B's members back in their session under their ID | 10 of 10 |",
            "| failover: back within 10 s of the kill | 10 of 10 |",
            "| failover: sessions kept (both members in, no peer-left) | 10 of 10 |",
            "| failover: peer-left frames received | 0 |",
        ],
    );
}
