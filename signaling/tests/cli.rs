//! The `peershare-signaling` binary: prints its URL, serves, shuts down gracefully on SIGTERM.

#![cfg(unix)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peershare_signaling::protocol::{ServerMessage, codes};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The binary under SIGINT (Ctrl-C): the same drain as SIGTERM; exits 0.
#[tokio::test]
async fn binary_sigint_drains_joined_client_7012_1012_and_exits_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peershare-signaling"))
        .args(["--listen", "127.0.0.1:0", "--no-turn", "--drain-secs", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = timeout(common::WAIT, lines.next_line())
        .await
        .expect("no URL line in time")
        .expect("read stdout")
        .expect("stdout closed");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect");
    let join = json!({"type": "join", "version": 2, "session": null, "name": "a"});
    ws.send(Message::text(join.to_string())).await.unwrap();
    let Some(Ok(Message::Text(t))) = timeout(common::WAIT, ws.next()).await.unwrap() else {
        panic!("no welcome");
    };
    assert!(t.as_str().starts_with(r#"{"type":"welcome""#), "{t}");

    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let Some(Ok(Message::Text(t))) = timeout(common::WAIT, ws.next()).await.unwrap() else {
        panic!("no shutdown error");
    };
    assert!(
        matches!(serde_json::from_str(t.as_str()).unwrap(),
            ServerMessage::Error { code, retry_after_ms: Some(_), .. } if code == codes::SHUTTING_DOWN),
        "{t}"
    );
    match timeout(common::WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Restart),
        other => panic!("expected close 1012, got {other:?}"),
    }
    // The last client gone, the drain ends well before --drain-secs.
    while let Ok(Some(Ok(_))) = timeout(common::WAIT, ws.next()).await {}
    let status = timeout(common::WAIT, child.wait())
        .await
        .expect("server did not exit once empty")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn binary_prints_url_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peershare-signaling"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--max-peers",
            "1",
            "--idle-timeout-secs",
            "30",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = timeout(common::WAIT, lines.next_line())
        .await
        .expect("no URL line in time")
        .expect("read stdout")
        .expect("stdout closed");
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    let port: u16 = url.rsplit(':').next().unwrap().parse().expect("port");
    assert_ne!(port, 0);

    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect");
    let join = json!({"type": "join", "version": 2, "session": null, "name": "a"});
    ws.send(Message::text(join.to_string())).await.unwrap();
    let Some(Ok(Message::Text(t))) = timeout(common::WAIT, ws.next()).await.unwrap() else {
        panic!("no welcome");
    };
    let ServerMessage::Welcome { session, .. } = serde_json::from_str(t.as_str()).unwrap() else {
        panic!("expected welcome: {t}");
    };
    // --max-peers 1 is in force.
    let (mut ws2, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect");
    let join2 = json!({"type": "join", "version": 2, "session": session, "name": "b"});
    ws2.send(Message::text(join2.to_string())).await.unwrap();
    let Some(Ok(Message::Text(t))) = timeout(common::WAIT, ws2.next()).await.unwrap() else {
        panic!("no reply");
    };
    assert!(
        matches!(serde_json::from_str(t.as_str()).unwrap(), ServerMessage::Error { code, .. } if code == codes::SESSION_FULL),
        "{t}"
    );

    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());

    let Some(Ok(Message::Text(t))) = timeout(common::WAIT, ws.next()).await.unwrap() else {
        panic!("no shutdown error");
    };
    assert!(
        matches!(serde_json::from_str(t.as_str()).unwrap(),
            ServerMessage::Error { code, retry_after_ms: Some(ms), .. }
                if code == codes::SHUTTING_DOWN && ms < 5_000),
        "{t}"
    );
    match timeout(common::WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Restart),
        other => panic!("expected close 1012, got {other:?}"),
    }
    // Finish the close handshake so the server need not wait for it.
    while let Ok(Some(Ok(_))) = timeout(common::WAIT, ws.next()).await {}
    drop(ws2);
    let status = timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("server did not exit")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn binary_stderr_names_the_page_url_which_serves_the_page() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peershare-signaling"))
        .args(["--listen", "127.0.0.1:0", "--no-turn"])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = timeout(common::WAIT, stdout.next_line())
        .await
        .expect("no URL line in time")
        .expect("read stdout")
        .expect("stdout closed");
    let addr = url.strip_prefix("ws://").expect("ws URL");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = timeout(common::WAIT, stderr.next_line())
        .await
        .expect("no stderr line in time")
        .expect("read stderr")
        .expect("stderr closed");
    let page = format!("http://{addr}/");
    assert!(
        line.contains(&format!(
            "pass --server {url} to clients, or open {page} in a browser"
        )),
        "{line}"
    );
    // The page is there.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    timeout(common::WAIT, tcp.read_to_end(&mut got))
        .await
        .expect("no answer in time")
        .expect("read");
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(got.ends_with(include_bytes!("../web/index.html")));
}

/// `--log-format json`: one JSON object per line; a joined client's lines carry the
/// connection's span with its address, session and client ID.
#[tokio::test]
async fn binary_log_format_json_carries_the_connection_span() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peershare-signaling"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-turn",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut logs = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let url = timeout(common::WAIT, lines.next_line())
        .await
        .expect("no URL line in time")
        .expect("read stdout")
        .expect("stdout closed");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect");
    let join = json!({"type": "join", "version": 2, "session": null, "name": "a"});
    ws.send(Message::text(join.to_string())).await.unwrap();
    let Some(Ok(Message::Text(t))) = timeout(common::WAIT, ws.next()).await.unwrap() else {
        panic!("no welcome");
    };
    let ServerMessage::Welcome {
        session, client_id, ..
    } = serde_json::from_str(t.as_str()).unwrap()
    else {
        panic!("expected welcome: {t}");
    };
    let joined = loop {
        let line = timeout(common::WAIT, logs.next_line())
            .await
            .expect("no log line in time")
            .expect("read stderr")
            .expect("stderr closed");
        if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
            if v["fields"]["message"] == "joined session" {
                break v;
            }
        }
    };
    assert_eq!(joined["level"], "INFO");
    assert_eq!(joined["span"]["name"], "conn");
    assert_eq!(joined["span"]["session"], session.as_str());
    assert_eq!(joined["span"]["client_id"], client_id.as_str());
    let peer = joined["span"]["peer"].as_str().expect("peer");
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
}
