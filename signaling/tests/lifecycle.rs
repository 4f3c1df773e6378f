//! Idle timeout and graceful shutdown.

mod common;

use std::time::Duration;

use common::{Client, Closed, config, creator, joiner, start};
use peershare_signaling::protocol::{ServerMessage, codes};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Longer than the default idle timeout, in virtual time.
const VIRTUAL_WAIT: Duration = Duration::from_secs(120);

fn assert_error(msg: &ServerMessage, expected: u16) {
    assert!(
        matches!(msg, ServerMessage::Error { code, .. } if *code == expected),
        "expected error {expected}, got {msg:?}"
    );
}

fn assert_close_code(closed: Closed, expected: CloseCode) {
    match closed {
        Closed::Frame(Some(f)) => assert_eq!(f.code, expected),
        other => panic!("expected a close frame with {expected:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn idle_connection_times_out_with_7010() {
    // Default idle timeout (60 s); b never joins, so its join deadline must not come first.
    let server = start(peershare_signaling::ServerConfig {
        join_timeout: Duration::from_secs(600),
        ..config()
    })
    .await;
    let (mut a, _wa) = creator(&server, "alice").await;
    // b's idle timer starts after t0.
    let t0 = tokio::time::Instant::now();
    let mut b = Client::connect(&server).await;

    // Virtual time from here on: when every task waits, the clock jumps to the next timer.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(40)).await;
    // Activity resets a's timer (after t1), not b's.
    let t1 = tokio::time::Instant::now();
    a.barrier().await;

    let msg = b.recv_within(VIRTUAL_WAIT).await;
    assert_error(&msg, codes::IDLE_TIMEOUT);
    assert!(
        t0.elapsed() >= Duration::from_secs(60),
        "{:?}",
        t0.elapsed()
    );
    assert_close_code(b.expect_closed().await, CloseCode::Normal);

    let msg = a.recv_within(VIRTUAL_WAIT).await;
    assert_error(&msg, codes::IDLE_TIMEOUT);
    assert!(
        t1.elapsed() >= Duration::from_secs(60),
        "{:?}",
        t1.elapsed()
    );
    assert_close_code(a.expect_closed().await, CloseCode::Normal);
}

#[tokio::test]
async fn idle_timeout_short_config_closes_silent_client() {
    let server = start(peershare_signaling::ServerConfig {
        idle_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut a = Client::connect(&server).await;
    a.expect_error(codes::IDLE_TIMEOUT).await;
    assert_close_code(a.expect_closed().await, CloseCode::Normal);
}

#[tokio::test]
async fn shutdown_with_clients_sends_7012_and_close_1012() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (mut b, _wb) = joiner(&server, &wa.session, "bob").await;
    let mut idle = Client::connect(&server).await;
    a.recv().await; // peer-joined
    let addr = server.local_addr();

    let shutdown = tokio::spawn(server.shutdown());
    for c in [&mut a, &mut b, &mut idle] {
        let msg = c.recv().await;
        assert_error(&msg, codes::SHUTTING_DOWN);
        assert_close_code(c.expect_closed().await, CloseCode::Restart);
    }
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown took too long")
        .expect("shutdown task panicked");
    // The listener is gone.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_without_clients_returns_promptly() {
    let server = start(config()).await;
    let addr = server.local_addr();
    tokio::time::timeout(Duration::from_secs(1), server.shutdown())
        .await
        .expect("shutdown took too long");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn drop_server_closes_clients_with_7012_and_1012() {
    let server = start(config()).await;
    let (mut a, _wa) = creator(&server, "alice").await;
    drop(server);
    let msg = a.recv().await;
    assert_error(&msg, codes::SHUTTING_DOWN);
    assert_close_code(a.expect_closed().await, CloseCode::Restart);
}

#[tokio::test]
async fn server_url_uses_bound_address() {
    let server = start(config()).await;
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);
    assert_eq!(server.url(), format!("ws://127.0.0.1:{}", addr.port()));
}
