//! TLS termination (`wss://`): a client trusting the server's certificate joins; plain
//! `ws://`, untrusting and silent clients do not get in; the connection caps answer over
//! TLS; the binary's `--tls-cert`/`--tls-key`.
//!
//! Waits are bounded only as hang guards; nothing sleeps to synchronise.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::tls::{self, TestCert};
use common::{WAIT, expect_welcome, start};
use peershare_signaling::ServerConfig;
use peershare_signaling::protocol::{PROTOCOL_VERSION, ServerMessage};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::timeout;

/// A handshake deadline short enough for the tests that wait for it.
const SHORT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn tls_trusting_client_joins_and_gets_welcome() {
    let cert = TestCert::localhost();
    let server = start(tls::config(&cert)).await;
    assert!(
        server.url().starts_with("wss://127.0.0.1:"),
        "{}",
        server.url()
    );
    let mut alice = tls::connect(&server, &[&cert]).await.expect("wss connect");
    let welcome = alice.join(None, "alice").await;
    let mut bob = tls::connect(&server, &[&cert]).await.expect("wss connect");
    let joined = bob.join(Some(&welcome.session), "bob").await;
    assert_eq!(joined.peers.len(), 1);
    match alice.recv().await {
        ServerMessage::PeerJoined { peer } => assert_eq!(peer.id, joined.client_id),
        other => panic!("expected peer-joined, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn tls_plain_ws_client_to_tls_port_fails_without_welcome() {
    let cert = TestCert::localhost();
    let server = start(tls::config(&cert)).await;
    let plain = format!("ws://{}", server.local_addr());
    let result = timeout(WAIT, tokio_tungstenite::connect_async(plain))
        .await
        .expect("plain connect hung");
    assert!(
        result.is_err(),
        "a plain client was upgraded on the TLS port"
    );
    // The server still serves TLS clients.
    let mut c = tls::connect(&server, &[&cert]).await.expect("wss connect");
    c.join(None, "a").await;
    server.shutdown().await;
}

#[tokio::test]
async fn tls_client_not_trusting_cert_fails_handshake() {
    let cert = TestCert::localhost();
    let other = TestCert::localhost();
    let server = start(tls::config(&cert)).await;
    for trusted in [&[][..], &[&other][..]] {
        let err = tls::connect(&server, trusted)
            .await
            .err()
            .expect("an untrusted certificate was accepted");
        // UnknownIssuer, or BadSignature for another certificate of the same subject.
        assert!(err.contains("invalid peer certificate"), "{err}");
    }
    let mut c = tls::connect(&server, &[&cert]).await.expect("wss connect");
    c.join(None, "a").await;
    server.shutdown().await;
}

#[tokio::test]
async fn tls_handshake_of_silent_client_cut_at_handshake_timeout() {
    let cert = TestCert::localhost();
    let server = start(ServerConfig {
        handshake_timeout: SHORT,
        ..tls::config(&cert)
    })
    .await;
    // Connects and never sends a ClientHello: closed without an answer.
    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut got = Vec::new();
    let read = timeout(WAIT, silent.read_to_end(&mut got))
        .await
        .expect("the silent connection was not closed");
    assert!(read.is_ok() && got.is_empty(), "{read:?} {got:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn tls_upgrade_of_client_sending_no_request_cut_at_handshake_timeout() {
    let cert = TestCert::localhost();
    let server = start(ServerConfig {
        handshake_timeout: SHORT,
        ..tls::config(&cert)
    })
    .await;
    // Completes the TLS handshake, never sends the HTTP upgrade request.
    let mut stream = tls::tls_stream(server.local_addr(), &[&cert])
        .await
        .expect("TLS handshake");
    let mut got = Vec::new();
    let read = timeout(WAIT, stream.read_to_end(&mut got))
        .await
        .expect("the connection was not closed");
    // Closed (with or without close_notify), nothing answered.
    assert!(got.is_empty(), "{read:?} {got:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn tls_connection_over_cap_answered_503_over_tls() {
    let cert = TestCert::localhost();
    let server = start(ServerConfig {
        max_connections: 1,
        ..tls::config(&cert)
    })
    .await;
    let mut held = tls::connect(&server, &[&cert]).await.expect("wss connect");
    held.join(None, "a").await;
    let err = tls::connect(&server, &[&cert])
        .await
        .err()
        .expect("a client above the cap was upgraded");
    assert!(err.contains("503"), "{err}");
    // The slot is given back when the holder leaves.
    held.close().await;
    let mut next = timeout(WAIT, async {
        loop {
            match tls::connect(&server, &[&cert]).await {
                Ok(c) => break c,
                Err(e) => assert!(e.contains("503"), "{e}"),
            }
        }
    })
    .await
    .expect("the slot was not given back");
    next.join(None, "b").await;
    server.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn binary_tls_flags_print_wss_url_and_serve_tls() {
    let cert = TestCert::localhost();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = cert.write_pem(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_peershare-signaling"))
        .args(["--listen", "127.0.0.1:0", "--no-turn", "--tls-cert"])
        .arg(&cert_file)
        .arg("--tls-key")
        .arg(&key_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = timeout(WAIT, lines.next_line())
        .await
        .expect("no URL line in time")
        .expect("read stdout")
        .expect("stdout closed");
    let addr: std::net::SocketAddr = url
        .strip_prefix("wss://")
        .unwrap_or_else(|| panic!("not a wss URL: {url}"))
        .parse()
        .expect("IP:PORT");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    let stream = tls::tls_stream(addr, &[&cert])
        .await
        .expect("TLS handshake");
    let (ws, _) = timeout(WAIT, tokio_tungstenite::client_async(url.as_str(), stream))
        .await
        .expect("upgrade timed out")
        .expect("upgrade");
    let mut client = common::Client::from_ws(ws);
    client
        .send_json(serde_json::json!({"type": "join", "version": PROTOCOL_VERSION, "session": null, "name": "a"}))
        .await;
    expect_welcome(client.recv().await);
}

#[tokio::test]
async fn binary_unreadable_tls_key_fails_startup_naming_the_file() {
    let cert = TestCert::localhost();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, _) = cert.write_pem(dir.path());
    let missing = dir.path().join("missing-key.pem");
    let out = timeout(
        WAIT,
        Command::new(env!("CARGO_BIN_EXE_peershare-signaling"))
            .args(["--listen", "127.0.0.1:0", "--no-turn", "--tls-cert"])
            .arg(&cert_file)
            .arg("--tls-key")
            .arg(&missing)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the server did not exit")
    .expect("run");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "a URL was printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot set up TLS") && stderr.contains("missing-key.pem"),
        "{stderr}"
    );
}
