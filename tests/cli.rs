//! The built `peershare` binary, end to end on 127.0.0.1.

mod common;

use std::path::Path;

use common::cli::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_recv_embedded_server_files_identical_with_json_events() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("alpha.bin");
    let b = tmp.path().join("beta.txt");
    let a_data = write_random(&a, 5 * 1024 * 1024 + 11, 1);
    std::fs::write(&b, b"hello peershare\n").unwrap();
    let out = tmp.path().join("out");

    let mut send = peershare(&["send", "--bind", "127.0.0.1", "--json"])
        .arg(&a)
        .arg(&b)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(send.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(GUARD, lines.next_line())
        .await
        .expect("no ticket line")
        .unwrap()
        .expect("send closed stdout");
    let ticket_line: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(ticket_line["event"], "ticket");
    let ticket = ticket_line["ticket"].as_str().unwrap().to_string();
    assert!(
        ticket
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"@:._-".contains(&c)),
        "{ticket}"
    );
    let send_rest = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            v.push(l);
        }
        v
    });

    let recv = peershare(&["recv", "--bind", "127.0.0.1", "--yes", "--json", "--out"])
        .arg(&out)
        .arg(&ticket)
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish(recv).await;
    assert_eq!(code, 0, "recv failed: {stderr}");
    let send_status = tokio::time::timeout(GUARD, send.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(send_status.success(), "send failed");

    assert!(std::fs::read(out.join("alpha.bin")).unwrap() == a_data);
    assert_eq!(
        std::fs::read(out.join("beta.txt")).unwrap(),
        b"hello peershare\n"
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        2,
        "stray files in the output"
    );

    let recv_events = json_lines(&stdout);
    let conn = recv_events
        .iter()
        .find(|e| e["event"] == "connection")
        .expect("connection event");
    assert_eq!(conn["path"], "direct", "{conn}");
    let mut recv_names = names(&recv_events);
    recv_names.sort();
    assert_eq!(
        recv_names,
        [
            "download-available",
            "download-available",
            "download-completed",
            "download-completed",
            "download-group-ended",
            "download-started",
            "download-started",
            "file-upload-started",
            "file-upload-started",
            "joined"
        ]
    );
    // The share ends once, after both of its files, as a whole.
    assert_eq!(
        recv_events.last().map(|e| e["event"].clone()),
        Some("download-group-ended".into())
    );
    let ended = &events(&recv_events, "download-group-ended")[0];
    assert_eq!(
        (&ended["files"], &ended["completed"]),
        (&2.into(), &2.into())
    );
    // First, who the recipient is in the session (for a sender's --to).
    assert_eq!(recv_events[0]["event"], "joined");
    assert!(recv_events[0]["client_id"].is_string() && recv_events[0]["name"].is_string());
    for e in &recv_events {
        match e["event"].as_str().unwrap() {
            "download-started" => {
                assert_eq!(e["offset"], 0);
                assert!(e["job_id"].is_string() && e["file_id"].is_string());
                assert!(e["name"].is_string() && e["size"].is_u64());
            }
            "download-completed" => {
                let path = e["path"].as_str().unwrap();
                let name = e["name"].as_str().unwrap();
                assert_eq!(Path::new(path), out.join(name));
            }
            _ => {}
        }
    }

    let send_lines = send_rest.await.unwrap();
    let send_events: Vec<Value> = json_lines(&send_lines.join("\n"));
    let send_names = names(&send_events);
    assert_eq!(
        send_names.iter().filter(|n| *n == "upload-started").count(),
        2
    );
    assert_eq!(
        send_names
            .iter()
            .filter(|n| *n == "upload-completed")
            .count(),
        2,
        "{send_lines:#?}"
    );
    assert!(
        send_events
            .iter()
            .filter(|e| e["event"] == "recipient-outcome")
            .all(|e| e["outcome"] == "delivered")
    );
}

#[tokio::test]
async fn cli_recv_bogus_ticket_exits_nonzero_with_code() {
    let tmp = tempfile::tempdir().unwrap();
    let recv = peershare(&["recv", "--yes", "--out"])
        .arg(tmp.path())
        .arg("this-is-no-ticket")
        .spawn()
        .unwrap();
    let (code, _, stderr) = finish(recv).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("error 6008: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn cli_recv_unreachable_ticket_exits_nonzero_with_1180() {
    // Reserve a port and close it again, so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let recv = peershare(&["recv", "--bind", "127.0.0.1", "--yes", "--out"])
        .arg(&out)
        .arg(format!("424242-orbit-canvas-tiger@127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let (code, _, stderr) = finish(recv).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.starts_with("error 1180: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!out.exists(), "--out was created without a session");
}

#[tokio::test]
async fn cli_recv_unknown_session_exits_with_signaling_code() {
    let tmp = tempfile::tempdir().unwrap();
    let mut signal = peershare(&["signal", "--listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(signal.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(GUARD, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let host_port = url.strip_prefix("ws://").expect("ws URL");
    let out = tmp.path().join("out");
    let recv = peershare(&["recv", "--bind", "127.0.0.1", "--yes", "--json", "--out"])
        .arg(&out)
        .arg(format!("424242-orbit-canvas-tiger@{host_port}"))
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish(recv).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.starts_with("error 7006: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("(code"), "the code is said once: {stderr}");
    // With --json the fatal error is a JSON line too.
    let last = json_lines(&stdout).pop().expect("an error line");
    assert_eq!(
        (&last["event"], &last["code"], &last["exit"]),
        (&"error".into(), &7006.into(), &3.into())
    );
    assert!(!out.exists(), "--out was created without a session");
}

#[tokio::test]
async fn cli_send_missing_file_exits_5089() {
    let tmp = tempfile::tempdir().unwrap();
    let send = peershare(&["send", "--bind", "127.0.0.1"])
        .arg(tmp.path().join("nope.bin"))
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish(send).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("error 5089: "), "{stderr}");
    assert!(
        !stdout.contains("peershare recv"),
        "a ticket was printed: {stdout}"
    );
}

#[tokio::test]
async fn cli_send_over_size_limit_exits_1185() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("big.bin");
    write_random(&f, 2048, 3);
    let send = peershare(&["send", "--bind", "127.0.0.1", "--max-size", "1024"])
        .arg(&f)
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish(send).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("error 1185: "), "{stderr}");
    assert!(
        !stdout.contains("peershare recv"),
        "a ticket was printed: {stdout}"
    );
}

/// `peershare signal` takes the options of `peershare-signaling` and drains on SIGTERM
/// like it: the joined client gets error 7012, then close 1012, and the process exits 0.
#[cfg(unix)]
#[tokio::test]
async fn cli_signal_sigterm_joined_client_gets_7012_and_1012_exit_0() {
    use futures_util::{SinkExt, StreamExt};
    use peershare::signaling::protocol::{ServerMessage, codes};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let mut signal = peershare(&[
        "signal",
        "--listen",
        "127.0.0.1:0",
        "--no-turn",
        "--max-peers",
        "4",
        "--idle-timeout-secs",
        "30",
    ])
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(signal.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(GUARD, lines.next_line())
        .await
        .expect("no URL line")
        .unwrap()
        .expect("signal closed stdout");
    let (mut ws, _) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("connect timed out")
        .expect("connect");
    let join = serde_json::json!({"type": "join", "version": 2, "session": null, "name": "a"});
    ws.send(Message::text(join.to_string())).await.unwrap();
    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;
    async fn next(ws: &mut Ws) -> Message {
        tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("no frame in time")
            .expect("connection ended")
            .expect("read error")
    }
    let Message::Text(t) = next(&mut ws).await else {
        panic!("no welcome");
    };
    assert!(
        matches!(
            serde_json::from_str(t.as_str()).unwrap(),
            ServerMessage::Welcome { .. }
        ),
        "{t}"
    );

    let pid = signal.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());

    let Message::Text(t) = next(&mut ws).await else {
        panic!("no shutdown error");
    };
    assert!(
        matches!(serde_json::from_str(t.as_str()).unwrap(),
            ServerMessage::Error { code, .. } if code == codes::SHUTTING_DOWN),
        "{t}"
    );
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Restart),
        other => panic!("expected close 1012, got {other:?}"),
    }
    // Finish the close handshake so the server need not wait for it.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(GUARD, ws.next()).await {}
    let (code, _, stderr) = finish(signal).await;
    assert_eq!(code, 0, "{stderr}");
}

/// `peershare signal --tls-cert C --tls-key K` serves `wss://` and prints that URL; a peer
/// trusting the certificate joins it.
#[tokio::test]
async fn cli_signal_tls_cert_and_key_print_wss_url_and_serve_tls() {
    let cert = common::TestCert::localhost();
    let mut cmd = peershare(&["signal", "--listen", "127.0.0.1:0", "--no-turn"]);
    cmd.arg("--tls-cert")
        .arg(&cert.cert_file)
        .arg("--tls-key")
        .arg(&cert.key_file);
    let mut signal = LineRun::spawn(cmd);
    let url = signal.next_line().await;
    let addr: std::net::SocketAddr = url
        .strip_prefix("wss://")
        .unwrap_or_else(|| panic!("not a wss URL: {url}"))
        .parse()
        .expect("IP:PORT");
    assert_eq!(addr.ip(), common::LOCALHOST);
    assert_ne!(addr.port(), 0);
    let mut config = peershare::PeerConfig::new(url);
    config.ca_file = Some(cert.cert_file.clone());
    config.rtc.bind = Some(common::LOCALHOST);
    peershare::Peer::join(config)
        .await
        .expect("join over wss trusting the certificate");
}

#[tokio::test]
async fn cli_signal_tls_cert_without_key_is_usage_error_exit_2() {
    let cert = common::TestCert::localhost();
    let signal = peershare(&["signal", "--listen", "127.0.0.1:0", "--no-turn"])
        .arg("--tls-cert")
        .arg(&cert.cert_file)
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish(signal).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

/// `send --server wss://…` needs `--ca` for a server with a self-signed certificate:
/// with it the ticket is printed, without it `send` fails with 1180 naming the cause.
#[tokio::test]
async fn cli_send_wss_server_with_ca_prints_ticket_without_ca_exits_1180() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("a.bin");
    write_random(&f, 1024, 5);
    let cert = common::TestCert::localhost();
    let server = common::tls_server(&cert).await;
    let url = server.url();
    let send = |ca: Option<&Path>| {
        let mut cmd = peershare(&["send", "--bind", "127.0.0.1", "--json", "--server", &url]);
        if let Some(ca) = ca {
            cmd.arg("--ca").arg(ca);
        }
        cmd.arg(&f);
        cmd
    };
    let mut trusting = JsonRun::spawn(send(Some(&cert.cert_file)));
    assert!(!trusting.ticket().await.is_empty());
    drop(trusting);
    let (code, stdout, stderr) = finish(send(None).spawn().unwrap()).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.starts_with("error 1180: ") && stderr.contains("certificate not trusted"),
        "{stderr}"
    );
    assert!(!stdout.contains("\"ticket\""), "{stdout}");
    server.shutdown().await;
}

/// `peershare send --json ARGS…` with `TMPDIR` set (its spool files go there).
fn send_json(tmpdir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = peershare(&["send", "--bind", "127.0.0.1", "--json"]);
    cmd.args(args).env("TMPDIR", tmpdir);
    cmd
}

/// `peershare recv --yes ARGS… [--out OUT] TICKET` with `TMPDIR` set.
fn recv_cmd(
    tmpdir: &Path,
    args: &[&str],
    out: Option<&Path>,
    ticket: &str,
) -> tokio::process::Command {
    let mut cmd = peershare(&["recv", "--bind", "127.0.0.1", "--yes"]);
    cmd.args(args);
    if let Some(out) = out {
        cmd.arg("--out").arg(out);
    }
    cmd.arg(ticket).env("TMPDIR", tmpdir);
    cmd
}

/// Wait for a process; its exit code, raw stdout and stderr.
async fn finish_raw(child: tokio::process::Child) -> (i32, Vec<u8>, String) {
    let out = tokio::time::timeout(GUARD, child.wait_with_output())
        .await
        .expect("process hung")
        .expect("process output");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The entries of a directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_text_recv_json_emits_verified_text_event() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "hello\tpeershare\nline two \u{1b}[31m ünïcødé \u{202e}";
    let mut send = JsonRun::spawn(send_json(tmp.path(), &["--text", text]));
    let ticket = send.ticket().await;
    let out = tmp.path().join("out");
    let recv = recv_cmd(tmp.path(), &["--json"], Some(&out), &ticket)
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish(recv).await;
    assert_eq!(code, 0, "{stderr}");
    let evs = json_lines(&stdout);
    assert_eq!(
        names(&evs),
        [
            "joined",
            "file-upload-started",
            "download-available",
            "download-started",
            "download-completed",
            "text",
            "download-group-ended"
        ]
    );
    let available = &events(&evs, "download-available")[0];
    assert_eq!(available["text"], true);
    assert_eq!(available["name"], "text.txt");
    assert!(events(&evs, "download-completed")[0]["path"].is_null());
    let shown = &events(&evs, "text")[0];
    assert_eq!(shown["text"], text);
    assert_eq!(shown["size"], text.len());
    assert_eq!(entries(&out), Vec::<String>::new(), "a text is not saved");

    let (code, evs, stderr) = send.finish().await;
    assert_eq!(code, 0, "{stderr}");
    let outcome = &events(&evs, "recipient-outcome")[0];
    assert_eq!(outcome["outcome"], "delivered");
    // The spool file is gone.
    assert_eq!(entries(tmp.path()), ["out"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_text_recv_piped_stdout_gets_exact_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "raw \u{1b}[1mbytes\u{1b}[0m\r\nno final newline";
    let mut send = JsonRun::spawn(send_json(
        tmp.path(),
        &["--text", text, "--name", "note.txt"],
    ));
    let ticket = send.ticket().await;
    let out = tmp.path().join("out");
    let recv = recv_cmd(tmp.path(), &[], Some(&out), &ticket)
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish_raw(recv).await;
    assert_eq!(code, 0, "{stderr}");
    // Standard output is a pipe: the verified bytes exactly; messages on stderr.
    assert_eq!(stdout, text.as_bytes());
    assert!(
        stderr.contains("received note.txt (BLAKE3 verified)"),
        "{stderr}"
    );
    let (code, _, stderr) = send.finish().await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn cli_send_text_over_64_kib_exits_2_with_1185() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "x".repeat(64 * 1024 + 1);
    let send = send_json(tmp.path(), &["--text", &text]).spawn().unwrap();
    let (code, stdout, stderr) = finish(send).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("error 1185: "), "{stderr}");
    let last = json_lines(&stdout).pop().expect("an error line");
    assert_eq!((&last["code"], &last["exit"]), (&1185.into(), &2.into()));
    assert!(events(&json_lines(&stdout), "ticket").is_empty());
    assert_eq!(entries(tmp.path()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_stdin_recv_stdout_bytes_identical_and_temporaries_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let data = write_random(&tmp.path().join("data.bin"), 3 * 1024 * 1024 + 5, 17);
    let (reader, mut writer) = std::io::pipe().unwrap();
    let mut cmd = send_json(&spool, &["-"]);
    cmd.stdin(reader);
    let mut send = JsonRun::spawn(cmd);
    let feed = {
        let data = data.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            // In pieces, as a producer would write them; the end closes the pipe.
            for piece in data.chunks(100_000) {
                writer.write_all(piece).unwrap();
            }
        })
    };
    let ticket = send.ticket().await;
    feed.join().unwrap();
    let recv = recv_cmd(&spool, &["--stdout"], None, &ticket)
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish_raw(recv).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout == data, "standard output differs from the input");
    assert!(
        stderr.contains("wrote stdin to standard output"),
        "{stderr}"
    );

    let (code, evs, stderr) = send.finish().await;
    assert_eq!(code, 0, "{stderr}");
    let started = &events(&evs, "upload-started")[0];
    assert_eq!(started["name"], "stdin");
    assert_eq!(started["size"], data.len());
    assert_eq!(events(&evs, "recipient-outcome")[0]["outcome"], "delivered");
    // Neither the sender's spool file nor the recipient's directory is left.
    assert_eq!(entries(&spool), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_stdout_share_of_two_files_declined_exit_2_with_5092() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.txt");
    let b = tmp.path().join("b.txt");
    std::fs::write(&a, b"a\n").unwrap();
    std::fs::write(&b, b"b\n").unwrap();
    let mut send = JsonRun::spawn(send_json(
        tmp.path(),
        &[a.to_str().unwrap(), b.to_str().unwrap()],
    ));
    let ticket = send.ticket().await;
    let recv = recv_cmd(tmp.path(), &["--stdout"], None, &ticket)
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish_raw(recv).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout:?}");
    assert!(stderr.contains("error 5092: "), "{stderr}");
    let (code, evs, stderr) = send.finish().await;
    assert_eq!(code, 4, "{stderr}");
    let outcomes: Vec<&str> = events(&evs, "recipient-outcome")
        .iter()
        .map(|e| e["outcome"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(outcomes, ["declined", "declined"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_overwrite_replaces_existing_file_after_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("report.bin");
    let data = write_random(&src, 1024 * 1024 + 3, 21);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("report.bin"), b"an older version").unwrap();
    let mut send = JsonRun::spawn(send_json(tmp.path(), &[src.to_str().unwrap()]));
    let ticket = send.ticket().await;
    let recv = recv_cmd(tmp.path(), &["--json", "--overwrite"], Some(&out), &ticket)
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish(recv).await;
    assert_eq!(code, 0, "{stderr}");
    let evs = json_lines(&stdout);
    let completed = &events(&evs, "download-completed")[0];
    assert_eq!(
        Path::new(completed["path"].as_str().unwrap()),
        out.join("report.bin")
    );
    assert!(std::fs::read(out.join("report.bin")).unwrap() == data);
    assert_eq!(entries(&out), ["report.bin"]);
    let (code, _, stderr) = send.finish().await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_existing_file_without_overwrite_gets_numbered_name() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("a.txt");
    std::fs::write(&src, b"new\n").unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("a.txt"), b"old\n").unwrap();
    let mut send = JsonRun::spawn(send_json(tmp.path(), &[src.to_str().unwrap()]));
    let ticket = send.ticket().await;
    let recv = recv_cmd(tmp.path(), &["--json"], Some(&out), &ticket)
        .spawn()
        .unwrap();
    let (code, _, stderr) = finish(recv).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"old\n");
    assert_eq!(std::fs::read(out.join("a (1).txt")).unwrap(), b"new\n");
    let (code, _, stderr) = send.finish().await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_identical_file_skipped_sender_records_delivered_without_data() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("same.bin");
    let data = write_random(&src, 2 * 1024 * 1024 + 7, 23);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("same.bin"), &data).unwrap();
    let mut send = JsonRun::spawn(send_json(tmp.path(), &[src.to_str().unwrap()]));
    let ticket = send.ticket().await;
    let recv = recv_cmd(tmp.path(), &["--json"], Some(&out), &ticket)
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish(recv).await;
    assert_eq!(code, 0, "{stderr}");
    let evs = json_lines(&stdout);
    assert_eq!(
        names(&evs),
        [
            "joined",
            "file-upload-started",
            "download-available",
            "download-skipped",
            "download-group-ended"
        ]
    );
    let ended = &events(&evs, "download-group-ended")[0];
    assert_eq!(
        (&ended["files"], &ended["completed"], &ended["failed"]),
        (&1.into(), &1.into(), &0.into())
    );
    let skipped = &events(&evs, "download-skipped")[0];
    assert_eq!(
        Path::new(skipped["path"].as_str().unwrap()),
        out.join("same.bin")
    );
    assert_eq!(skipped["size"], data.len());
    assert_eq!(entries(&out), ["same.bin"]);
    assert!(std::fs::read(out.join("same.bin")).unwrap() == data);

    let (code, evs, stderr) = send.finish().await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        names(&evs),
        [
            "ticket",
            "upload-started",
            "recipient-outcome",
            "upload-completed",
            "upload-group-ended"
        ]
    );
    let outcome = &events(&evs, "recipient-outcome")[0];
    assert_eq!(outcome["outcome"], "delivered");
    assert_eq!(outcome["bytes_sent"], 0);
    assert!(events(&evs, "upload-progress").is_empty());
}

#[tokio::test]
async fn cli_recv_same_size_other_content_is_downloaded_not_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f.bin");
    std::fs::write(&src, b"abcd").unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("f.bin"), b"abce").unwrap();
    let mut send = JsonRun::spawn(send_json(tmp.path(), &[src.to_str().unwrap()]));
    let ticket = send.ticket().await;
    let recv = recv_cmd(tmp.path(), &["--json"], Some(&out), &ticket)
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = finish(recv).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(events(&json_lines(&stdout), "download-skipped").is_empty());
    assert_eq!(std::fs::read(out.join("f (1).bin")).unwrap(), b"abcd");
    let (code, _, stderr) = send.finish().await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sparse_file_transfers_identical_and_arrives_sparse() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("disk.img");
    let hole: u64 = 48 * 1024 * 1024;
    let head = write_random(&src, 1024 * 1024, 29);
    let tail = b"the end of the image";
    {
        let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
        f.write_all_at(tail, head.len() as u64 + hole).unwrap();
    }
    let size = head.len() as u64 + hole + tail.len() as u64;
    let out = tmp.path().join("out");
    let mut send = JsonRun::spawn(send_json(tmp.path(), &[src.to_str().unwrap()]));
    let ticket = send.ticket().await;
    let recv = recv_cmd(tmp.path(), &["--json"], Some(&out), &ticket)
        .spawn()
        .unwrap();
    let (code, _, stderr) = finish(recv).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = send.finish().await;
    assert_eq!(code, 0, "{stderr}");
    let got = out.join("disk.img");
    assert_eq!(std::fs::metadata(&got).unwrap().len(), size);
    assert!(std::fs::read(&got).unwrap() == std::fs::read(&src).unwrap());
    // The source was made with a hole: if this filesystem keeps it, it makes holes.
    let allocated = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
    if allocated(&src) < hole / 2 {
        assert!(
            allocated(&got) < 8 * 1024 * 1024,
            "{} bytes allocated for a {size}-byte file with a {hole}-byte hole",
            allocated(&got)
        );
    } else {
        eprintln!("note: this filesystem does not keep holes; allocation not checked");
    }
}

/// Text of one subcommand that the others' help must not show.
const FOREIGN: [(&str, &[&str]); 4] = [
    (
        "send",
        &[
            "--out",
            "--yes",
            "--remove",
            "--listen",
            "--tls-cert",
            "Decline files",
            "port 3478",
            "send's",
            "for `send`",
            "for `signal`",
        ],
    ),
    (
        "recv",
        &[
            "embedded",
            "--keep",
            "--to ",
            "--code",
            "--turn",
            "--listen",
            "--remove",
            "Refuse to share",
            "send's",
            "for `send`",
        ],
    ),
    (
        "signal",
        &[
            "--json",
            "--out",
            "--to ",
            "--keep",
            "--yes",
            "--remove",
            "ticket",
            "for `send`",
            "for `signal`",
        ],
    ),
    (
        "partials",
        &[
            "--bind", "--to ", "--keep", "--yes", "--listen", "--turn", "ticket", "embedded",
        ],
    ),
];

#[tokio::test]
async fn cli_help_of_every_subcommand_exits_0_with_usage_examples_and_only_its_own_text() {
    for (sub, foreign) in FOREIGN {
        let (code, help, stderr) = finish(peershare(&[sub, "--help"]).spawn().unwrap()).await;
        assert_eq!(code, 0, "{sub}: {stderr}");
        assert!(
            help.contains(&format!("Usage: peershare {sub} ")),
            "{sub}: {help}"
        );
        let (options, examples) = help
            .split_once("\nExamples:\n")
            .unwrap_or_else(|| panic!("{sub}: no Examples section: {help}"));
        let examples: Vec<&str> = examples.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!((2..=3).contains(&examples.len()), "{sub}: {examples:#?}");
        for line in &examples {
            assert!(
                line.starts_with(&format!("  peershare {sub} ")),
                "{sub}: {line:?}"
            );
        }
        for text in foreign {
            assert!(
                !options.contains(text),
                "{sub} --help shows {text:?}: {options}"
            );
        }
    }
}

#[tokio::test]
async fn cli_max_size_with_suffix_refuses_larger_file_and_bad_suffix_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("big.bin");
    write_random(&f, 1537, 3);
    // 1.5K = 1536 bytes: one byte too many.
    let send = peershare(&["send", "--bind", "127.0.0.1", "--max-size", "1.5K"])
        .arg(&f)
        .spawn()
        .unwrap();
    let (code, _, stderr) = finish(send).await;
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr,
        "error 1185: file big.bin is 1537 bytes, above the maximum of 1536 bytes\n"
    );
    for (sub, last) in [("send", "f.bin"), ("recv", "x@127.0.0.1:9")] {
        let (code, stdout, stderr) = finish(
            peershare(&[sub, "--max-size", "10XB", last])
                .spawn()
                .unwrap(),
        )
        .await;
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stdout, "");
        assert!(
            stderr.starts_with(
                "error: invalid value '10XB' for '--max-size <BYTES>': \"10XB\" has an unknown unit"
            ),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn cli_send_qr_prints_page_url_and_qr_block_on_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f.txt");
    std::fs::write(&f, b"qr\n").unwrap();
    let mut send = peershare(&["send", "--bind", "127.0.0.1", "--qr"])
        .arg(&f)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(send.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(GUARD, stdout.next_line())
        .await
        .expect("no ticket line")
        .unwrap()
        .expect("send closed stdout");
    // The first stdout line is the ticket line, as without --qr.
    let ticket = first
        .strip_prefix("peershare recv ")
        .unwrap_or_else(|| panic!("{first}"));
    let (code, server) = ticket.split_once('@').expect("CODE@HOST:PORT");
    let page = format!("http://{server}/#{code}");
    // stderr: the page URL, then the QR code, then the "sharing" note.
    let mut stderr = BufReader::new(send.stderr.take().unwrap()).lines();
    let mut lines = Vec::new();
    while !lines
        .last()
        .is_some_and(|l: &String| l.starts_with("sharing "))
    {
        let line = tokio::time::timeout(GUARD, stderr.next_line())
            .await
            .unwrap_or_else(|_| panic!("no sharing note; stderr so far: {lines:#?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("stderr closed: {lines:#?}"));
        lines.push(line);
    }
    assert_eq!(lines[0], format!("(in a browser: {page})"), "{lines:#?}");
    let qr = &lines[1..lines.len() - 1];
    assert!(qr.len() >= (21 + 8) / 2, "{lines:#?}");
    let width = qr[0].chars().count();
    for line in qr {
        assert_eq!(line.chars().count(), width, "{lines:#?}");
        assert!(line.chars().all(|c| "█▀▄ ".contains(c)), "{line:?}");
    }
    // The quiet zone is drawn light: full blocks.
    assert!(qr[0].chars().all(|c| c == '█'), "{:?}", qr[0]);
    assert!(qr.iter().any(|l| l.contains(' ')), "{lines:#?}");
    send.kill().await.unwrap();
}

/// `send --server` twice, the first down: `send` joins through the second, the ticket
/// lists both (`CODE@DOWN,LIVE`), and `recv` of that ticket falls back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_two_servers_first_down_ticket_lists_both_recv_joins_through_second() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("a.bin");
    let data = write_random(&f, 300 * 1024, 31);
    let server = common::server().await;
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let live = server.local_addr();
    let mut send = JsonRun::spawn({
        let mut cmd = send_json(tmp.path(), &["--server", &format!("ws://{down}")]);
        cmd.args(["--server", &server.url()]).arg(&f);
        cmd
    });
    let ticket = send.ticket().await;
    assert!(ticket.ends_with(&format!("@{down},{live}")), "{ticket}");
    let out = tmp.path().join("out");
    let recv = recv_cmd(tmp.path(), &["--json"], Some(&out), &ticket)
        .spawn()
        .unwrap();
    let (code, _, stderr) = finish(recv).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        std::fs::read(out.join("a.bin")).unwrap() == data,
        "bytes differ"
    );
    let (code, _, stderr) = send.finish().await;
    assert_eq!(code, 0, "{stderr}");
}

/// A library sender whose rate-limited file `recv` downloads through `proxy`.
async fn proxied_recv(
    tmp: &Path,
    server: &peershare::signaling::SignalingServer,
    proxy: &common::proxy::Proxy,
    extra: &[&str],
) -> (peershare::Peer, common::Recorder, JsonRun, Vec<u8>) {
    let f = tmp.join("big.bin");
    let data = write_random(&f, 8 * 1024 * 1024, 32);
    let mut cfg = common::config(server, None, "sender", tmp);
    cfg.rate_limit = Some(4 * 1024 * 1024);
    let (sender, s_rec) = common::join_with(cfg).await;
    sender
        .send_files(&[f], peershare::Share::Broadcast)
        .await
        .unwrap();
    let ticket = format!("{}@{}", sender.session(), proxy.addr);
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let recv = JsonRun::spawn(recv_cmd(tmp, &args, Some(&tmp.join("out")), &ticket));
    (sender, s_rec, recv, data)
}

/// `recv` does not end because its signaling connection dropped: it rejoins while the
/// download goes on, and exits 0 with the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_signaling_cut_mid_transfer_rejoins_and_exits_0() {
    use common::proxy::{Cut, Proxy};
    let tmp = tempfile::tempdir().unwrap();
    let server = common::server().await;
    let proxy = Proxy::start(server.local_addr()).await;
    let (_sender, _s_rec, mut recv, data) = proxied_recv(tmp.path(), &server, &proxy, &[]).await;
    recv.until("progress", |e| e["event"] == "download-progress")
        .await;
    proxy.cut(Cut::Client);
    let (code, seen, stderr) = recv.finish().await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        std::fs::read(tmp.path().join("out/big.bin")).unwrap() == data,
        "bytes differ"
    );
    assert_eq!(events(&seen, "signaling-lost").len(), 1, "{seen:#?}");
    let back = events(&seen, "signaling-reconnected");
    assert_eq!(back.len(), 1, "{seen:#?}");
    assert_eq!(back[0]["resumed"], true);
    assert!(events(&seen, "error").is_empty(), "{seen:#?}");
}

/// Signaling lost and never back: once `--signaling-retry-secs` has passed (1180, said
/// once) and the last peer connection is gone, `recv` exits 3 with 1180.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_recv_signaling_lost_for_good_exits_3_with_1180_after_retry_window() {
    use common::proxy::{Cut, Proxy};
    let tmp = tempfile::tempdir().unwrap();
    let server = common::server().await;
    let proxy = Proxy::start(server.local_addr()).await;
    // A member that shares nothing: `recv` waits for it.
    let (member, _m_rec) = common::join(&server, None, "member", tmp.path()).await;
    let ticket = format!("{}@{}", member.session(), proxy.addr);
    let mut recv = JsonRun::spawn(recv_cmd(
        tmp.path(),
        &["--json", "--signaling-retry-secs", "1"],
        Some(&tmp.path().join("out")),
        &ticket,
    ));
    recv.until("peer-joined", |e| e["event"] == "peer-joined")
        .await;
    proxy.refuse();
    proxy.cut(Cut::Client);
    recv.until("signaling-lost", |e| e["event"] == "signaling-lost")
        .await;
    let gone = recv.until("error", |e| e["event"] == "error").await;
    assert_eq!(gone["code"], 1180, "{gone}");
    assert!(gone.get("exit").is_none(), "not the fatal line yet: {gone}");
    // The peer connection is all that is left; once it goes, `recv` is done.
    member.leave().await;
    let (code, seen, stderr) = recv.finish().await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.starts_with("error 1180: "), "{stderr}");
    let last = seen.last().expect("a fatal line");
    assert_eq!(
        (&last["event"], &last["code"], &last["exit"]),
        (&"error".into(), &1180.into(), &3.into())
    );
    assert!(
        events(&seen, "signaling-reconnected").is_empty(),
        "{seen:#?}"
    );
}

/// `peershare signal --log-format json` logs on stderr as `peershare-signaling` does: one
/// JSON object per line, at `info` when `PEERSHARE_LOG` is not set. Without the option
/// (and without `PEERSHARE_LOG`) the server writes no log lines.
#[tokio::test]
async fn cli_signal_log_format_json_logs_json_lines_without_it_none() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    for json in [true, false] {
        let mut cmd = peershare(&["signal", "--listen", "127.0.0.1:0", "--no-turn"]);
        cmd.env_remove("PEERSHARE_LOG");
        if json {
            cmd.args(["--log-format", "json"]);
        }
        let mut signal = cmd.spawn().unwrap();
        let mut lines = BufReader::new(signal.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(GUARD, lines.next_line())
            .await
            .expect("no URL line")
            .expect("stdout readable")
            .expect("a URL line");
        assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
        let pid = signal.id().expect("pid") as libc::pid_t;
        // SAFETY: a plain signal to our own child, which is still running.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let (code, _, stderr) = finish(signal).await;
        assert_eq!(code, 0, "{stderr}");
        let logs: Vec<serde_json::Value> = stderr
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if json {
            assert!(
                logs.iter().any(|v| v["level"] == "INFO"
                    && v["fields"]["message"] == "signaling server listening"),
                "{stderr}"
            );
        } else {
            // Only the server's human line.
            assert!(logs.is_empty(), "{stderr}");
            assert!(!stderr.contains("INFO"), "{stderr}");
        }
    }
}
