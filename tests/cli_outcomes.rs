//! Every transfer of the `peershare` binary ends, with the truth: failures in the middle
//! of a transfer, refusals, completion rules with several recipients, exit codes and the
//! output without a terminal. Real binaries on 127.0.0.1.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::cli::*;
use serde_json::Value;

const MIB: usize = 1024 * 1024;

fn send(extra: &[&str], files: &[&Path]) -> JsonRun {
    JsonRun::spawn(send_command(extra, files))
}

/// The command line of [`send`], to change before it runs.
fn send_command(extra: &[&str], files: &[&Path]) -> tokio::process::Command {
    let mut cmd = peershare(&["send", "--bind", "127.0.0.1", "--json"]);
    cmd.args(extra).args(files);
    cmd
}

fn recv(extra: &[&str], out: &Path, ticket: &str) -> JsonRun {
    let mut cmd = peershare(&["recv", "--bind", "127.0.0.1", "--yes", "--json"]);
    cmd.args(extra).arg("--out").arg(out).arg(ticket);
    JsonRun::spawn(cmd)
}

fn is(name: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == name
}

/// The outcome events of a sender, as (file name, outcome, code).
fn outcomes(events: &[Value]) -> Vec<(String, String, Option<u64>)> {
    let names: std::collections::HashMap<&Value, &Value> = events
        .iter()
        .filter(|e| e["event"] == "upload-started")
        .map(|e| {
            let shown = if e["path"].is_string() {
                &e["path"]
            } else {
                &e["name"]
            };
            (&e["job_id"], shown)
        })
        .collect();
    let mut v: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "recipient-outcome")
        .map(|e| {
            (
                names[&e["job_id"]].as_str().unwrap_or("?").to_string(),
                e["outcome"].as_str().unwrap_or("?").to_string(),
                e["code"].as_u64(),
            )
        })
        .collect();
    v.sort();
    v
}

fn last_error(events: &[Value]) -> (u64, u64) {
    let e = events.last().expect("output");
    assert_eq!(e["event"], "error", "the last line is the fatal error: {e}");
    (
        e["code"].as_u64().unwrap_or(0),
        e["exit"].as_u64().unwrap_or(0),
    )
}

/// A 24 MiB file shared by a `send` capped at 8 MiB/s, and a `recv` of it that has
/// received its first MiB: (sender, recipient, source, output directory).
async fn slow_transfer(
    tmp: &Path,
    seed: u64,
) -> (JsonRun, JsonRun, std::path::PathBuf, std::path::PathBuf) {
    let src = tmp.join("big.bin");
    write_random(&src, 24 * MIB, seed);
    let out = tmp.join("out");
    let mut s = send(&["--limit-rate", "8M"], &[&src]);
    let ticket = s.ticket().await;
    let mut r = recv(&[], &out, &ticket);
    r.until("first progress", is("download-progress")).await;
    (s, r, src, out)
}

/// `peershare send` without `--json` (human lines on stderr): the process and its ticket.
async fn plain_send(file: &Path) -> (tokio::process::Child, String) {
    let mut send = peershare(&["send", "--bind", "127.0.0.1"])
        .arg(file)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(send.stdout.take().unwrap()));
    let first = tokio::time::timeout(GUARD, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ticket = first.strip_prefix("peershare recv ").expect("ticket line");
    // Nothing else is printed on stdout; keep reading it anyway.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (send, ticket.to_string())
}

/// A library peer joins the ticket's session and declines the first file offered.
async fn join_and_decline(ticket: &str) -> peershare::Peer {
    let ticket: peershare::Ticket = ticket.parse().unwrap();
    let mut config = peershare::PeerConfig::new(ticket.server.clone().expect("a server"));
    config.session = Some(ticket.code.to_string());
    config.rtc.bind = Some(common::LOCALHOST);
    let (peer, events) = peershare::Peer::join(config).await.unwrap();
    let mut rec = common::Recorder::new(events);
    let file_id = rec.offer().await;
    peer.decline(file_id).await.unwrap();
    peer
}

/// Run `command` under script(1), which gives it a terminal, typing `typed` into it:
/// its exit code and everything it drew on the terminal.
async fn in_terminal(command: &str, typed: &[u8]) -> (Option<i32>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script(1) from util-linux");
    // Standard input stays open until the command is done, so `script` does not end it.
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(typed).await.expect("typing");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut screen = Vec::new();
    tokio::time::timeout(GUARD, stdout.read_to_end(&mut screen))
        .await
        .expect("the command hung")
        .expect("reading the terminal");
    let status = tokio::time::timeout(GUARD, child.wait())
        .await
        .expect("script hung")
        .expect("script status");
    drop(stdin);
    (status.code(), String::from_utf8_lossy(&screen).into_owned())
}

/// Only the given names in `dir` (no partial or record files left over).
fn assert_dir_holds(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    assert_eq!(found, names, "contents of {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_source_overwritten_mid_transfer_both_sides_fail_5100() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, r, src, out) = slow_transfer(tmp.path(), 1).await;
    // Same size, new bytes near the end: not read yet at 8 MiB/s.
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    f.write_all_at(b"tampered", (23 * MIB) as u64).unwrap();
    drop(f);

    let (code, events, stderr) = r.finish().await;
    assert_eq!(code, 1, "{stderr}");
    let failed = events
        .iter()
        .find(|e| e["event"] == "download-failed")
        .expect("download-failed");
    assert_eq!(failed["code"], 5100);
    assert_eq!(last_error(&events), (5100, 1));
    assert!(events.iter().all(|e| e["event"] != "download-completed"));
    assert_dir_holds(&out, &[]);

    let (code, events, stderr) = s.finish().await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        outcomes(&events),
        [("big.bin".into(), "failed".into(), Some(5100))]
    );
    assert_eq!(last_error(&events), (5100, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_max_size_refusal_reaches_sender_both_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one.txt");
    std::fs::write(&one, b"one\n").unwrap();
    let five = tmp.path().join("five.bin");
    write_random(&five, 5000, 2);
    let out = tmp.path().join("out");
    let mut s = send(&[], &[&one, &five]);
    let ticket = s.ticket().await;
    let (code, events, stderr) = recv(&["--max-size", "1000"], &out, &ticket).finish().await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(last_error(&events), (1185, 1));
    // The refused file ends as any failed one: `download-failed` (no job was made), and
    // the share ends with it, before the closing error line.
    let failed = common::cli::events(&events, "download-failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0]["name"], "five.bin");
    assert_eq!(failed[0]["code"], 1185);
    assert!(failed[0]["job_id"].is_null(), "{:?}", failed[0]);
    let ended = common::cli::events(&events, "download-group-ended");
    assert_eq!(ended.len(), 1, "{events:#?}");
    assert_eq!(
        (
            &ended[0]["files"],
            &ended[0]["completed"],
            &ended[0]["failed"]
        ),
        (&Value::from(2), &Value::from(1), &Value::from(1))
    );
    assert_eq!(std::fs::read(out.join("one.txt")).unwrap(), b"one\n");
    assert_dir_holds(&out, &["one.txt"]);

    let (code, events, stderr) = s.finish().await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        outcomes(&events),
        [
            ("five.bin".into(), "failed".into(), Some(1185)),
            ("one.txt".into(), "delivered".into(), None)
        ]
    );
    assert_eq!(last_error(&events), (1185, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_output_dir_removed_mid_transfer_fails_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, r, _src, out) = slow_transfer(tmp.path(), 3).await;
    std::fs::remove_dir_all(&out).unwrap();

    let (code, events, stderr) = r.finish().await;
    assert_eq!(code, 1, "{stderr}");
    let failed = events
        .iter()
        .find(|e| e["event"] == "download-failed")
        .expect("download-failed");
    let failed_code = failed["code"].as_u64().unwrap();
    assert!([5089, 5090].contains(&failed_code), "{failed}");
    assert!(!out.join("big.bin").exists());

    let (code, events, stderr) = s.finish().await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        outcomes(&events),
        [("big.bin".into(), "failed".into(), Some(failed_code))]
    );
}

/// A tmpfs of `mib` MiB mounted at a fresh directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: usize) -> Option<Self> {
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } != 0 {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_disk_full_fails_5090_and_leaves_nothing() {
    let Some(fs) = Tmpfs::mount(24) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    write_random(&src, 40 * MIB, 4);
    let mut s = send(&[], &[&src]);
    let ticket = s.ticket().await;
    let (code, events, stderr) = recv(&[], fs.0.path(), &ticket).finish().await;
    assert_eq!(code, 1, "{stderr}");
    let failed = events
        .iter()
        .find(|e| e["event"] == "download-failed")
        .expect("download-failed");
    assert_eq!(failed["code"], 5090, "{failed}");
    assert_eq!(last_error(&events), (5090, 1));
    assert_dir_holds(fs.0.path(), &[]);

    let (code, events, stderr) = s.finish().await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        outcomes(&events),
        [("big.bin".into(), "failed".into(), Some(5090))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_decline_by_one_member_waits_for_the_downloading_recipient() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    let data = write_random(&src, 16 * MIB, 5);
    let out = tmp.path().join("out");
    let mut s = send(&[], &[&src]);
    let ticket_text = s.ticket().await;
    let mut r = recv(&["--limit-rate", "4M"], &out, &ticket_text);
    r.until("first progress", is("download-progress")).await;

    // Another member of the session declines while the recipient is downloading.
    let decliner = join_and_decline(&ticket_text).await;

    let (code, _, stderr) = r.finish().await;
    assert_eq!(code, 0, "{stderr}");
    assert!(std::fs::read(out.join("data.bin")).unwrap() == data);
    let (code, events, stderr) = s.finish().await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        outcomes(&events),
        [
            ("data.bin".into(), "declined".into(), None),
            ("data.bin".into(), "delivered".into(), None)
        ]
    );
    decliner.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_without_keep_serves_every_recipient_that_joined_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    let data = write_random(&src, 24 * MIB, 6);
    let (out1, out2) = (tmp.path().join("one"), tmp.path().join("two"));
    let mut s = send(&[], &[&src]);
    let ticket = s.ticket().await;
    let mut first = recv(&["--limit-rate", "4M"], &out1, &ticket);
    first.until("first progress", is("download-progress")).await;
    // The second recipient joins while the first is still downloading.
    let second = recv(&[], &out2, &ticket);
    let mut logs = String::new();
    for (run, out) in [(first, &out1), (second, &out2)] {
        let (code, _, stderr) = run.finish().await;
        assert_eq!(code, 0, "{stderr}");
        assert!(std::fs::read(out.join("data.bin")).unwrap() == data);
        logs.push_str("\n--- a recipient's stderr ---\n");
        logs.push_str(&stderr);
    }
    let (code, events, stderr) = s.finish().await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        outcomes(&events),
        [
            ("data.bin".into(), "delivered".into(), None),
            ("data.bin".into(), "delivered".into(), None)
        ],
        "sender's stderr:\n{stderr}\nsender's events: {events:?}{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_keep_after_failed_delivery_exits_1_when_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("five.bin");
    write_random(&src, 5000, 7);
    let mut s = send(&["--keep"], &[&src]);
    let ticket = s.ticket().await;
    let (code, _, stderr) = recv(&["--max-size", "1000"], &tmp.path().join("out"), &ticket)
        .finish()
        .await;
    assert_eq!(code, 1, "{stderr}");
    s.until("the recipient's outcome", is("upload-failed"))
        .await;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(s.pid(), libc::SIGINT) };
    let (code, events, stderr) = s.finish().await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(last_error(&events), (1185, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_interrupted_exits_130_and_says_how_to_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    write_random(&src, 24 * MIB, 8);
    let out = tmp.path().join("out");
    let mut s = send(&[], &[&src]);
    let ticket = s.ticket().await;
    let mut r = recv(&["--limit-rate", "4M"], &out, &ticket);
    r.until("first progress", is("download-progress")).await;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(r.pid(), libc::SIGINT) };
    let (code, events, stderr) = r.finish().await;
    assert_eq!(code, 130, "{stderr}");
    assert_eq!(last_error(&events), (6009, 130));
    assert!(stderr.contains("run the same command again"), "{stderr}");
    // The partial data stays for the resume.
    assert!(
        std::fs::read_dir(&out).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".part"))
    );
    // SAFETY: as above.
    unsafe { libc::kill(s.pid(), libc::SIGINT) };
    let (code, _, _) = s.finish().await;
    assert_eq!(code, 130);
}

#[tokio::test]
async fn cli_recv_without_terminal_or_yes_exits_2_before_joining() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // The ticket's server does not exist: the refusal must come before any join.
    let recv = peershare(&["recv", "--out"])
        .arg(&out)
        .arg("42-orbit-canvas-tiger@127.0.0.1:9")
        .spawn()
        .unwrap();
    let (code, _, stderr) = finish(recv).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("error 6008: "), "{stderr}");
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_plain_output_without_terminal_shows_each_line_once() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("report.txt");
    std::fs::write(&src, b"quarterly\n").unwrap();
    let (send, ticket) = plain_send(&src).await;
    // A relative --out: the saved path is shown absolute.
    let recv = peershare(&["recv", "--bind", "127.0.0.1", "--yes", "--out", "rel"])
        .arg(&ticket)
        .current_dir(tmp.path())
        .spawn()
        .unwrap();
    let (code, _, stderr) = finish(recv).await;
    assert_eq!(code, 0, "{stderr}");
    let saved = tmp.path().join("rel").join("report.txt");
    assert!(
        stderr.contains(&format!("saved {} (BLAKE3 verified)", saved.display())),
        "{stderr}"
    );
    assert!(stderr.contains("received 1 file, 10 B in "), "{stderr}");
    let (code, _, send_err) = finish(send).await;
    assert_eq!(code, 0, "{send_err}");
    assert!(send_err.contains("report.txt → "), "{send_err}");
    assert!(send_err.contains(": done"), "{send_err}");
    assert!(
        send_err.contains("report.txt: delivered to 1"),
        "{send_err}"
    );
    assert!(send_err.contains("sent 1 file, 10 B in "), "{send_err}");
    for text in [&stderr, &send_err] {
        assert!(!text.contains('\u{1b}'), "escape sequences: {text:?}");
        assert!(!text.contains("WARN"), "log lines: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_plain_output_declined_file_is_not_shown_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("secret.txt");
    std::fs::write(&src, b"no\n").unwrap();
    let (send, ticket) = plain_send(&src).await;
    let decliner = join_and_decline(&ticket).await;
    let (code, _, stderr) = finish(send).await;
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains(": declined"), "{stderr}");
    assert!(
        stderr.contains("secret.txt: delivered to 0, declined by 1"),
        "{stderr}"
    );
    assert!(!stderr.contains(": done"), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("error 6002: ")),
        "{stderr}"
    );
    decliner.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_prompt_on_terminal_one_question_per_share_accepts_yes_in_any_case() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.txt");
    let b = tmp.path().join("b.txt");
    let c = tmp.path().join("c.txt");
    for (p, text) in [(&a, "alpha\n"), (&b, "beta\n"), (&c, "gamma\n")] {
        std::fs::write(p, text).unwrap();
    }
    let out = tmp.path().join("out");
    let mut s = send(&[], &[&a, &b, &c]);
    let ticket = s.ticket().await;
    // `script` gives recv a terminal; the answer is typed into it. One share, one
    // question.
    let command = format!(
        "{BIN} recv --bind 127.0.0.1 --out {} {ticket}",
        out.display()
    );
    let (status, screen) = in_terminal(&command, b"Yes\n").await;
    assert_eq!(status, Some(0), "{screen}");
    assert!(
        screen.contains("Accept a.txt, b.txt, c.txt (3 files, 17 B) from "),
        "{screen}"
    );
    assert_eq!(screen.matches("Accept ").count(), 1, "{screen}");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"beta\n");
    assert_eq!(std::fs::read(out.join("c.txt")).unwrap(), b"gamma\n");
    let (code, events, stderr) = s.finish().await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        outcomes(&events),
        [
            ("a.txt".into(), "delivered".into(), None),
            ("b.txt".into(), "delivered".into(), None),
            ("c.txt".into(), "delivered".into(), None)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_json_prompt_on_terminal_names_the_sender_by_its_display_name() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.txt");
    std::fs::write(&a, "alpha\n").unwrap();
    let out = tmp.path().join("out");
    let mut s = send(&[], &[&a]);
    let ticket_line = s.until("ticket", is("ticket")).await;
    let ticket = ticket_line["ticket"].as_str().unwrap().to_string();
    let name = ticket_line["name"].as_str().unwrap().to_string();
    let client_id = ticket_line["client_id"].as_str().unwrap().to_string();
    // --json without --yes: the question still goes to the terminal, with the name the
    // sender announced (it authenticates after recv joined: a `peer-joined` event).
    let command = format!(
        "{BIN} recv --bind 127.0.0.1 --json --out {} {ticket}",
        out.display()
    );
    let (status, screen) = in_terminal(&command, b"y\n").await;
    assert_eq!(status, Some(0), "{screen}");
    assert!(
        screen.contains(&format!("Accept a.txt (6 B) from {name}? [y/N]")),
        "{screen}"
    );
    assert!(!screen.contains(&format!("from {client_id}?")), "{screen}");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"alpha\n");
    let (code, _, stderr) = s.finish().await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_prompt_on_terminal_share_declined_declines_every_file_sender_exits_4() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("docs");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(dir.join("sub/b.txt"), "beta\n").unwrap();
    let out = tmp.path().join("out");
    let mut s = send(&[], &[&dir]);
    let ticket = s.ticket().await;
    let command = format!(
        "{BIN} recv --bind 127.0.0.1 --out {} {ticket}",
        out.display()
    );
    let (status, screen) = in_terminal(&command, b"no\n").await;
    assert_eq!(status, Some(0), "{screen}");
    assert!(
        screen.contains("Accept docs/ (2 files, 11 B) from "),
        "{screen}"
    );
    assert!(
        screen.contains("declined docs/ (2 files, 11 B)"),
        "{screen}"
    );
    assert!(
        !out.join("docs").exists(),
        "nothing of a declined share is made"
    );
    let (code, events, stderr) = s.finish().await;
    assert_eq!(code, 4, "{stderr}");
    assert_eq!(last_error(&events), (6002, 4));
    assert_eq!(
        outcomes(&events),
        [
            ("docs/a.txt".into(), "declined".into(), None),
            ("docs/sub/b.txt".into(), "declined".into(), None)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_failure_in_one_senders_group_waits_for_the_other_group() {
    let tmp = tempfile::tempdir().unwrap();
    let mut signal = LineRun::spawn(peershare(&["signal", "--listen", "127.0.0.1:0"]));
    let url = signal.next_line().await;
    let session = "grp2senders23456-two-senders-secret";
    let (a, b) = (tmp.path().join("a.bin"), tmp.path().join("b.bin"));
    write_random(&a, 16 * MIB, 9);
    let b_data = write_random(&b, 24 * MIB, 10);
    let shared = ["--server", &url, "--session", session];
    let mut sa = send(&[&shared[..], &["--limit-rate", "8M"]].concat(), &[&a]);
    sa.ticket().await;
    // The second sender joins the existing session on purpose.
    let mut sb = send(
        &[&shared[..], &["--join", "--limit-rate", "6M"]].concat(),
        &[&b],
    );
    sb.ticket().await;
    let host_port = url.strip_prefix("ws://").unwrap();
    let out = tmp.path().join("out");
    let mut r = recv(&[], &out, &format!("{session}@{host_port}"));
    r.until("progress of a.bin", |e| {
        e["event"] == "download-progress" && e["name"] == "a.bin"
    })
    .await;
    let f = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
    f.write_all_at(b"tampered", (15 * MIB) as u64).unwrap();
    drop(f);

    let (code, events, stderr) = r.finish().await;
    assert_eq!(code, 1, "{stderr}");
    let ends: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["event"] == "download-completed" || e["event"] == "download-failed")
        .map(|e| {
            (
                e["event"].as_str().unwrap().into(),
                e["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        ends,
        [
            ("download-failed".into(), "a.bin".into()),
            ("download-completed".into(), "b.bin".into())
        ]
    );
    assert!(std::fs::read(out.join("b.bin")).unwrap() == b_data);
    assert_eq!(last_error(&events), (5100, 1));
    // Each sender ends by its own recipient's outcome, not waiting for the other sender.
    let (code, events, _) = sa.finish().await;
    assert_eq!(code, 1);
    assert!(outcomes(&events).contains(&("a.bin".into(), "failed".into(), Some(5100))));
    let (code, events, _) = sb.finish().await;
    assert_eq!(code, 0);
    assert!(outcomes(&events).contains(&("b.bin".into(), "delivered".into(), None)));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(signal.pid(), libc::SIGINT) };
}

#[tokio::test]
async fn cli_json_usage_error_is_a_json_line_and_exit_2() {
    let recv = peershare(&["recv", "--json", "--no-such-flag", "x@127.0.0.1:9"])
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish(recv).await;
    assert_eq!(code, 2, "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(last_error(&lines), (6008, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_session_code_taken_refuses_with_7015_instead_of_joining() {
    let tmp = tempfile::tempdir().unwrap();
    let mut signal = LineRun::spawn(peershare(&["signal", "--listen", "127.0.0.1:0"]));
    let url = signal.next_line().await;
    let src = tmp.path().join("f.txt");
    std::fs::write(&src, b"secret\n").unwrap();
    // A stranger creates `team-share` first.
    let mut config = peershare::PeerConfig::new(url.clone());
    config.session = Some("teamshare-stranger-words".into());
    config.create_session = true;
    config.rtc.bind = Some(common::LOCALHOST);
    let (stranger, _events) = peershare::Peer::join(config).await.unwrap();
    let (code, events_out, stderr) = send(
        &["--server", &url, "--code", "teamshare-my-own-words"],
        &[&src],
    )
    .finish()
    .await;
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(last_error(&events_out), (7015, 3));
    assert!(stderr.contains("--join"), "{stderr}");
    // The sender never became a member of the stranger's session.
    assert!(stranger.peers().await.is_empty());
    stranger.leave().await;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(signal.pid(), libc::SIGINT) };
}

#[tokio::test]
async fn cli_send_chosen_code_route_too_short_is_usage_error_6008() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f.txt");
    std::fs::write(&src, b"x").unwrap();
    // Refused before any server is contacted: nothing listens on port 9.
    let (code, events, stderr) = send(
        &["--server", "127.0.0.1:9", "--code", "short-my-own-words"],
        &[&src],
    )
    .finish()
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(last_error(&events), (6008, 2));
    let message = events.last().map(|e| e["message"].to_string());
    assert!(
        message.as_deref().is_some_and(|m| m.contains("8 to 64")),
        "{message:?}"
    );
}

#[tokio::test]
async fn cli_send_stdin_with_a_directory_is_usage_error_6008() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("photos");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), b"x").unwrap();
    // Refused before standard input is read or any server is contacted.
    let dash = Path::new("-");
    let (code, events, stderr) = send(&["--server", "127.0.0.1:9"], &[dash, &dir])
        .finish()
        .await;
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(last_error(&events), (6008, 2));
    let message = events.last().map(|e| e["message"].to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("not directories") && m.contains("photos")),
        "{message:?}"
    );
}

#[tokio::test]
async fn cli_recv_out_is_a_regular_file_is_usage_error_5089() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("taken");
    std::fs::write(&file, b"mine").unwrap();
    // Refused before any server is contacted: nothing listens on port 9.
    let (code, events, stderr) = recv(&[], &file, "7-orbit-canvas-tiger@127.0.0.1:9")
        .finish()
        .await;
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(last_error(&events), (5089, 2));
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_session_full_is_no_session_exit_3_with_7005() {
    let tmp = tempfile::tempdir().unwrap();
    let mut signal = LineRun::spawn(peershare(&[
        "signal",
        "--listen",
        "127.0.0.1:0",
        "--max-peers",
        "1",
    ]));
    let url = signal.next_line().await;
    let code = "fullroom123-amber-koala-river";
    let mut config = peershare::PeerConfig::new(url.clone());
    config.session = Some(code.into());
    config.create_session = true;
    config.rtc.bind = Some(common::LOCALHOST);
    let (member, _events) = peershare::Peer::join(config).await.unwrap();
    let (status, events, stderr) = recv(&[], tmp.path(), &format!("{code}@{url}"))
        .finish()
        .await;
    assert_eq!(status, 3, "{stderr}");
    assert_eq!(last_error(&events), (7005, 3));
    member.leave().await;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(signal.pid(), libc::SIGINT) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_prompt_shows_hostile_name_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    // A name that would clear the screen, recolour it, retitle the window and read
    // right-to-left if printed raw.
    let hostile = "\u{1b}[2J\u{1b}[1;31mOWNED\u{1b}]0;pwned\u{7}\u{202e}fdp.exe";
    let src = tmp.path().join(hostile);
    std::fs::write(&src, b"x").unwrap();
    let mut s = send(&[], &[&src]);
    let ticket = s.ticket().await;
    let command = format!(
        "{BIN} recv --bind 127.0.0.1 --out {} {ticket}",
        tmp.path().join("out").display()
    );
    let (_, screen) = in_terminal(&command, b"n\n").await;
    assert!(screen.contains("Accept \\u{1b}[2J"), "{screen:?}");
    assert!(screen.contains("\\u{202e}fdp.exe"), "{screen:?}");
    for raw in ["\u{1b}[2J", "\u{1b}]0;", "\u{202e}", "\u{7}"] {
        assert!(
            !screen.contains(raw),
            "raw {raw:?} reached the terminal: {screen:?}"
        );
    }
    let (code, _, stderr) = s.finish().await;
    assert_eq!(code, 4, "{stderr}");
}

/// `text` with every ANSI escape sequence (CSI `ESC [ … letter`, OSC `ESC ] … BEL`)
/// turned into a line break: what a terminal draws between two cursor moves.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        out.push('\n');
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            Some(']') => {
                for c in chars.by_ref() {
                    if c == '\u{7}' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_progress_bar_on_80_column_terminal_fits_its_row() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("a-rather-long-file-name-for-the-label.bin");
    let data = write_random(&src, 8 * MIB, 11);
    let mut s = send(&[], &[&src]);
    let ticket = s.ticket().await;
    let out = tmp.path().join("out");
    // An 80-column terminal; the rate limit keeps the bar on screen for a few redraws.
    let command = format!(
        "stty cols 80 rows 24; {BIN} recv --bind 127.0.0.1 --yes --limit-rate 4M --out {} {ticket}",
        out.display()
    );
    let (_, screen) = in_terminal(&command, b"").await;
    assert!(std::fs::read(out.join("a-rather-long-file-name-for-the-label.bin")).unwrap() == data);
    let screen = strip_ansi(&screen);
    // Bars are labelled with the name cut to 24 columns.
    let bars: Vec<&str> = screen
        .split(['\r', '\n'])
        .filter(|l| l.contains("a-rather-long-file-name…"))
        .collect();
    assert!(!bars.is_empty(), "no progress bar drawn: {screen:?}");
    // Each drawn row is padded to the terminal's 80 columns: the bar's own text ends
    // within them (the widths themselves are checked in `cli::output`'s tests).
    for line in &bars {
        let start = line.find("a-rather-long-file-name…").unwrap_or(0);
        let from_label: String = line[start..].chars().take(80).collect();
        assert!(from_label.contains("/8.00 MiB"), "{line:?}");
    }
    assert!(
        screen.contains("received 1 file, 8.00 MiB in "),
        "{screen:?}"
    );
    let (code, _, stderr) = s.finish().await;
    assert_eq!(code, 0, "{stderr}");
}

/// This machine's host name: the display name `send` and `recv` use.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "peershare".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_resume_prompt_defaults_to_yes_and_continues_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("rand2g.bin");
    let data = write_random(&src, 3 * MIB, 12);
    let out = tmp.path().join("out");
    plant_partial(
        &out,
        "rand2g.bin",
        &data,
        MIB,
        std::time::Duration::from_secs(60),
    );
    let mut s = send(&[], &[&src]);
    let ticket = s.ticket().await;
    let command = format!(
        "{BIN} recv --bind 127.0.0.1 --out {} {ticket}",
        out.display()
    );
    // Enter alone: the default, yes.
    let (status, screen) = in_terminal(&command, b"\n").await;
    assert_eq!(status, Some(0), "{screen}");
    assert!(
        screen.contains(&format!("joined session as {} (client ID ", host_name())),
        "{screen:?}"
    );
    assert!(
        screen.contains("Resume rand2g.bin (33 % on disk)? [Y/n] "),
        "{screen:?}"
    );
    assert!(!screen.contains("Accept "), "{screen:?}");
    assert!(
        screen.contains("resuming rand2g.bin from 1.00 MiB"),
        "{screen:?}"
    );
    assert!(std::fs::read(out.join("rand2g.bin")).unwrap() == data);
    assert_dir_holds(&out, &["rand2g.bin"]);
    let (code, _, stderr) = s.finish().await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_to_display_name_shares_with_every_member_so_named_and_no_one_else() {
    let tmp = tempfile::tempdir().unwrap();
    let mut signal = LineRun::spawn(peershare(&["signal", "--listen", "127.0.0.1:0"]));
    let url = signal.next_line().await;
    let code = "tonamed23456-amber-koala-river";
    // A member that is not named: it creates the session.
    let mut config = peershare::PeerConfig::new(url.clone());
    config.session = Some(code.into());
    config.create_session = true;
    config.name = "bystander".into();
    config.rtc.bind = Some(common::LOCALHOST);
    let (bystander, mut by_events) = peershare::Peer::join(config).await.unwrap();
    let ticket = format!("{code}@{}", url.strip_prefix("ws://").unwrap());
    // Two recipients on this machine: both have its host name.
    let (out1, out2) = (tmp.path().join("out1"), tmp.path().join("out2"));
    let mut r1 = recv(&[], &out1, &ticket);
    let j1 = r1.until("joined", is("joined")).await;
    let mut r2 = recv(&[], &out2, &ticket);
    let j2 = r2.until("joined", is("joined")).await;
    let name = host_name();
    assert_eq!(j1["name"], name.as_str());
    assert_eq!(j2["name"], name.as_str());
    let (id1, id2) = (j1["client_id"].clone(), j2["client_id"].clone());

    let src = tmp.path().join("slides.pdf");
    let data = write_random(&src, 200_000, 13);
    let s = send(
        &["--server", &url, "--code", code, "--join", "--to", &name],
        &[&src],
    );
    let (status, events, stderr) = s.finish().await;
    assert_eq!(status, 0, "{stderr}");
    let mut matched: Vec<(Value, Value, Value)> = events
        .iter()
        .filter(|e| e["event"] == "recipient-matched")
        .map(|e| {
            assert_eq!(e["to"], name.as_str());
            assert_eq!(e["name"], name.as_str());
            (e["peer"].clone(), e["matches"].clone(), e["to"].clone())
        })
        .collect();
    matched.sort_by_key(|m| m.1.as_u64());
    let mut expected = vec![id1.as_str().unwrap(), id2.as_str().unwrap()];
    expected.sort();
    let mut peers: Vec<&str> = matched.iter().map(|m| m.0.as_str().unwrap()).collect();
    peers.sort();
    assert_eq!(peers, expected);
    assert_eq!(
        matched.iter().map(|m| m.1.clone()).collect::<Vec<_>>(),
        [1, 2]
    );
    // Every recipient the file was offered to is one of the two.
    let completed = events
        .iter()
        .find(|e| e["event"] == "upload-completed")
        .expect("upload-completed");
    let mut offered: Vec<&String> = completed["outcomes"].as_object().unwrap().keys().collect();
    offered.sort();
    assert_eq!(offered, expected);
    for (r, out) in [(r1, &out1), (r2, &out2)] {
        let (code, _, stderr) = r.finish().await;
        assert_eq!(code, 0, "{stderr}");
        assert!(std::fs::read(out.join("slides.pdf")).unwrap() == data);
    }
    // Nothing was offered to the member that was not named.
    while let Some(e) = by_events.try_recv() {
        assert!(
            !matches!(e, peershare::Event::DownloadAvailable { .. }),
            "offered to the bystander: {e:?}"
        );
    }
    bystander.leave().await;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(signal.pid(), libc::SIGINT) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_to_nobody_present_exits_1_with_6013_after_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f.txt");
    std::fs::write(&src, b"for nobody\n").unwrap();
    let (code, events, stderr) = send(&["--to", "nobody-here"], &[&src]).finish().await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(last_error(&events), (6013, 1));
    assert_eq!(
        stderr.lines().last(),
        Some(
            "error 6013: no such recipient: --to nobody-here: no member of the session has \
             this client ID or display name (10 s after the share started); nothing was sent"
        )
    );
    assert!(events.iter().all(|e| e["event"] != "recipient-outcome"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_broadcast_does_not_wait_for_a_fellow_send_to_others_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let mut signal = LineRun::spawn(peershare(&["signal", "--listen", "127.0.0.1:0"]));
    let url = signal.next_line().await;
    let code = "fellowsend234-amber-koala-river";
    let (a_src, b_src) = (tmp.path().join("a.bin"), tmp.path().join("b.bin"));
    let a_data = write_random(&a_src, 4 * MIB, 31);
    let b_data = write_random(&b_src, 1000, 32);
    // Sender A shares with everyone (with the session's logs, shown if it hangs).
    let mut a = send_command(&["--server", &url, "--code", code], &[&a_src]);
    a.env("PEERSHARE_LOG", "peershare=debug");
    let mut a = JsonRun::spawn(a);
    let ticket = a.ticket().await;
    // A recipient slow enough that B joins before it has A's file (before A's cut-off).
    let out = tmp.path().join("out");
    let mut r = recv(&["--limit-rate", "1M"], &out, &ticket);
    let r_id = r.until("joined", is("joined")).await["client_id"]
        .as_str()
        .expect("client ID")
        .to_string();
    // Sender B shares with the recipient only, and keeps serving: it offers A nothing,
    // and A must not wait for it.
    let mut b = send(
        &[
            "--server", &url, "--code", code, "--join", "--keep", "--to", &r_id,
        ],
        &[&b_src],
    );
    b.ticket().await;
    let (status, events, stderr) = a.finish().await;
    assert_eq!(status, 0, "{stderr}");
    let completed = events
        .iter()
        .find(|e| e["event"] == "upload-completed")
        .expect("upload-completed");
    let recipients: Vec<&String> = completed["outcomes"].as_object().unwrap().keys().collect();
    assert_eq!(recipients, [&r_id]);
    let (status, _, stderr) = r.finish().await;
    assert_eq!(status, 0, "{stderr}");
    assert!(std::fs::read(out.join("a.bin")).unwrap() == a_data);
    assert!(std::fs::read(out.join("b.bin")).unwrap() == b_data);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(b.pid(), libc::SIGINT) };
    let (status, _, stderr) = b.finish().await;
    assert_eq!(status, 0, "{stderr}");
    // SAFETY: as above.
    unsafe { libc::kill(signal.pid(), libc::SIGINT) };
}
