//! `peershare recv` killed with SIGKILL mid-transfer and run again: it resumes after what
//! it had written, having checked the bytes past its last checkpoint against the
//! sender's block hashes, so at most 1 MiB that it had reported holding is sent again.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::cli::GUARD;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const MIB: u64 = 1024 * 1024;
const SIZE: usize = 48 * 1024 * 1024;
/// The first `recv` is killed once it reports this much (its checkpoints are 8 MiB apart,
/// so at least 4 MiB lie past the last one).
const KILL_AT: u64 = 20 * MIB;

fn peershare(args: &[&str]) -> Command {
    let mut c = common::cli::peershare(args);
    c.stderr(Stdio::inherit());
    c
}

async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<Value> {
    let line = tokio::time::timeout(GUARD, lines.next_line())
        .await
        .expect("process hung")
        .ok()??;
    Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}")))
}

fn recv(out: &Path, ticket: &str) -> Child {
    peershare(&[
        "recv",
        "--bind",
        "127.0.0.1",
        "--yes",
        "--json",
        "--limit-rate",
        "8M",
        "--out",
    ])
    .arg(out)
    .arg(ticket)
    .spawn()
    .unwrap()
}

/// A download whose `recv` was killed with SIGKILL mid-transfer, and what it left.
struct Killed {
    _tmp: tempfile::TempDir,
    data: Vec<u8>,
    out: PathBuf,
    final_path: PathBuf,
    ticket: String,
    send: Child,
    /// The sender's JSON events, once it has exited.
    send_events: tokio::task::JoinHandle<Vec<Value>>,
    /// The highest `download-progress` bytes the killed `recv` printed.
    reported: u64,
    /// The job record's durable offset after the kill.
    record: u64,
    /// The partial file after the kill.
    partial: PathBuf,
    on_disk: u64,
}

/// Share a random file, download it with `recv`, and kill that `recv` with SIGKILL once
/// it reports [`KILL_AT`] bytes; everything it printed before it died is read.
async fn killed_recv(seed: u64) -> Killed {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("movie.bin");
    let data = common::cli::write_random(&src, SIZE, seed);
    let out = tmp.path().join("out");
    let final_path = out.join("movie.bin");

    let mut send = peershare(&["send", "--bind", "127.0.0.1", "--json"])
        .arg(&src)
        .spawn()
        .unwrap();
    let mut send_lines = BufReader::new(send.stdout.take().unwrap()).lines();
    let ticket_line = next_json(&mut send_lines).await.expect("ticket");
    let ticket = ticket_line["ticket"].as_str().unwrap().to_string();
    // Keep draining the sender's output so it never blocks on a full pipe.
    let send_events = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(ev) = next_json(&mut send_lines).await {
            events.push(ev);
        }
        events
    });

    let mut first = recv(&out, &ticket);
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let mut reported = 0;
    while reported < KILL_AT {
        let ev = next_json(&mut lines).await.expect("first recv ended early");
        assert_ne!(
            ev["event"], "download-completed",
            "transfer finished before the kill"
        );
        if ev["event"] == "download-progress" {
            reported = reported.max(ev["bytes"].as_u64().unwrap());
        }
    }
    first.start_kill().unwrap();
    let status = tokio::time::timeout(GUARD, first.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    // What it printed between the line above and its death.
    while let Some(ev) = next_json(&mut lines).await {
        if ev["event"] == "download-progress" {
            reported = reported.max(ev["bytes"].as_u64().unwrap());
        }
    }
    assert!(
        !final_path.exists(),
        "a file existed under the final name before verification"
    );
    let jobs = peershare::store::JobStore::new(&out).list();
    assert_eq!(jobs.len(), 1, "one partial job is left");
    let partial = peershare::store::JobStore::new(&out).partial_path(&jobs[0].job_id);
    let on_disk = std::fs::metadata(&partial).unwrap().len();
    Killed {
        _tmp: tmp,
        data,
        out,
        final_path,
        ticket,
        send,
        send_events,
        reported,
        record: jobs[0].offset,
        partial,
        on_disk,
    }
}

/// Run the same `recv` again until it exits; the offset it resumed from, after checking
/// that it and the sender succeeded, the file is byte-identical and only it is left.
async fn rerun(killed: Killed) -> u64 {
    let mut second = recv(&killed.out, &killed.ticket);
    let mut lines = BufReader::new(second.stdout.take().unwrap()).lines();
    let mut offset = None;
    let mut completed = None;
    while let Some(ev) = next_json(&mut lines).await {
        match ev["event"].as_str().unwrap() {
            "download-started" => {
                offset = offset.or(ev["offset"].as_u64());
                assert!(
                    !killed.final_path.exists(),
                    "final name in use before verification"
                );
            }
            "download-completed" => completed = Some(ev),
            _ => {}
        }
    }
    let status = tokio::time::timeout(GUARD, second.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "second recv failed");
    let completed = completed.expect("download-completed");
    assert_eq!(
        Path::new(completed["path"].as_str().unwrap()),
        killed.final_path
    );
    assert!(
        std::fs::read(&killed.final_path).unwrap() == killed.data,
        "bytes differ"
    );
    // Only the published file is left: no partial file, no job record.
    assert_eq!(std::fs::read_dir(&killed.out).unwrap().count(), 1);

    let mut send = killed.send;
    let send_status = tokio::time::timeout(GUARD, send.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(send_status.success(), "send failed");
    let send_events = killed.send_events.await.unwrap();
    let bytes_sent = send_events
        .iter()
        .find(|e| e["event"] == "recipient-outcome")
        .and_then(|e| e["bytes_sent"].as_u64());
    let offset = offset.expect("download-started in the second run");
    eprintln!(
        "killed after reporting {} bytes; record {}, on disk {}; resumed at {}; \
         reported and sent again {}; the sender sent {:?} bytes in all for {SIZE}",
        killed.reported,
        killed.record,
        killed.on_disk,
        offset,
        killed.reported.saturating_sub(offset),
        bytes_sent
    );
    offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_sigkilled_and_rerun_resends_at_most_1_mib_and_file_matches() {
    let killed = killed_recv(42).await;
    let (reported, record, on_disk) = (killed.reported, killed.record, killed.on_disk);
    assert!(
        on_disk > record,
        "nothing past the checkpoint ({record}, {on_disk} on disk): the test proves nothing"
    );
    let offset = rerun(killed).await;
    // Every byte that reached the partial file was verified and kept.
    assert_eq!(offset, on_disk, "resumed at {offset}, {on_disk} on disk");
    assert!(
        reported.saturating_sub(offset) <= MIB,
        "the recipient had reported {reported} bytes and resumed at {offset}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_sigkilled_corrupt_bytes_past_checkpoint_are_sent_again_and_file_matches() {
    let killed = killed_recv(43).await;
    let (record, on_disk) = (killed.record, killed.on_disk);
    assert!(
        on_disk >= record + 2 * MIB,
        "too little past the checkpoint ({record}, {on_disk} on disk)"
    );
    // What a power loss may leave: one byte of the second unsynced mebibyte is wrong.
    let mut bytes = std::fs::read(&killed.partial).unwrap();
    bytes[(record + MIB + 100) as usize] ^= 0x5a;
    std::fs::write(&killed.partial, &bytes).unwrap();
    let offset = rerun(killed).await;
    // The block before it is kept; from the changed block on everything is sent again.
    assert_eq!(offset, record + MIB);
}
