//! `peershare recv` killed with SIGKILL mid-transfer and run again: it resumes.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::cli::GUARD;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const SIZE: usize = 48 * 1024 * 1024;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_killed_and_rerun_resumes_from_offset_and_file_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("movie.bin");
    let data = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let mut v = vec![0u8; SIZE];
        rng.fill(&mut v[..]);
        v
    };
    std::fs::write(&src, &data).unwrap();
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
    let drain =
        tokio::spawn(async move { while let Some(_line) = next_json(&mut send_lines).await {} });

    // First run: killed with SIGKILL once 20 MiB have arrived.
    let mut first = recv(&out, &ticket);
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    loop {
        let ev = next_json(&mut lines).await.expect("first recv ended early");
        if ev["event"] == "download-progress" && ev["bytes"].as_u64().unwrap() >= 20 * 1024 * 1024 {
            break;
        }
        assert_ne!(
            ev["event"], "download-completed",
            "transfer finished before the kill"
        );
    }
    first.start_kill().unwrap();
    let status = tokio::time::timeout(GUARD, first.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    assert!(
        !final_path.exists(),
        "a file existed under the final name before verification"
    );

    // Second run with the same ticket and output directory.
    let mut second = recv(&out, &ticket);
    let mut lines = BufReader::new(second.stdout.take().unwrap()).lines();
    let mut offset = None;
    let mut completed = None;
    while let Some(ev) = next_json(&mut lines).await {
        match ev["event"].as_str().unwrap() {
            "download-started" => {
                offset = ev["offset"].as_u64();
                assert!(
                    !final_path.exists(),
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
    let offset = offset.expect("download-started in the second run");
    assert!(offset > 0, "the second run started over from zero");
    assert!(
        offset <= 24 * 1024 * 1024,
        "resumed past what had arrived: {offset}"
    );
    let completed = completed.expect("download-completed");
    assert_eq!(Path::new(completed["path"].as_str().unwrap()), final_path);
    assert!(std::fs::read(&final_path).unwrap() == data, "bytes differ");
    // Only the published file is left: no partial file, no job record.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);

    let send_status = tokio::time::timeout(GUARD, send.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(send_status.success(), "send failed");
    drain.await.unwrap();
}
