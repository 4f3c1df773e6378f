//! Connection caps, the upgrade and join deadlines, and the bound of the bytes queued for
//! slow clients: a flood of half-open connections or of non-reading members must not lock
//! out legitimate clients or park unbounded memory on the server.
//!
//! Waits are bounded only as hang guards; nothing sleeps to synchronise.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Closed, config, creator, start};
use futures_util::{SinkExt, StreamExt};
use peershare_signaling::protocol::{ServerMessage, codes};
use peershare_signaling::{ServerConfig, SignalingServer};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async};

/// Connections of the flood.
const FLOOD: usize = 300;
/// Hang guard for the flood's connections to be closed; below the idle timeout (60 s),
/// which bounded the upgrade before there was an upgrade deadline.
const GUARD: Duration = Duration::from_secs(30);
/// Long enough never to expire during a test.
const NEVER: Duration = Duration::from_secs(3600);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `FLOOD` TCP connections that never send a byte (so never finish the HTTP upgrade),
/// each read until the server closes it; the tasks yield what the server sent.
async fn flood(addr: SocketAddr) -> JoinSet<std::io::Result<Vec<u8>>> {
    // Client and server sockets of the flood live in this process.
    peershare_signaling::cli::raise_fd_limit().expect("raise the open file limit");
    let mut readers = JoinSet::new();
    for _ in 0..FLOOD {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        readers.spawn(async move {
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.map(|_| got)
        });
    }
    readers
}

/// Wait (hang guard only) until `n` flood connections have been closed by the server;
/// what each was sent.
async fn closed(readers: &mut JoinSet<std::io::Result<Vec<u8>>>, n: usize) -> Vec<Vec<u8>> {
    let mut answers = Vec::new();
    while answers.len() < n {
        let got = timeout(GUARD, readers.join_next())
            .await
            .unwrap_or_else(|_| panic!("only {} connections closed", answers.len()))
            .expect("a reader is left")
            .expect("reader panicked")
            .expect("read error");
        answers.push(got);
    }
    answers
}

fn assert_503(answer: &[u8]) {
    let text = String::from_utf8_lossy(answer);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text:?}");
}

/// A WebSocket client whose TCP connection is set up by `socket` (source address,
/// buffer sizes).
async fn connect_with(server: &SignalingServer, socket: TcpSocket) -> Result<Ws, String> {
    let stream = timeout(common::WAIT, socket.connect(server.local_addr()))
        .await
        .expect("connect timed out")
        .map_err(|e| e.to_string())?;
    let (ws, _) = timeout(
        common::WAIT,
        client_async(server.url(), MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("upgrade timed out")
    .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The next text frame on `ws`, parsed (pings and pongs skipped).
async fn next_message(ws: &mut Ws) -> ServerMessage {
    loop {
        let msg = timeout(GUARD, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("connection ended")
            .expect("read error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("server frame"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn join(ws: &mut Ws, session: Option<&str>, name: &str) -> ServerMessage {
    let join = json!({"type": "join", "version": 2, "session": session, "name": name});
    ws.send(Message::text(join.to_string()))
        .await
        .expect("send");
    next_message(ws).await
}

fn assert_welcome(msg: &ServerMessage) {
    assert!(matches!(msg, ServerMessage::Welcome { .. }), "{msg:?}");
}

#[tokio::test]
async fn global_cap_half_open_flood_excess_answered_503_and_closed() {
    let server = start(ServerConfig {
        max_connections: 100,
        max_connections_per_ip: 10 * FLOOD,
        handshake_timeout: NEVER,
        ..config()
    })
    .await;
    let mut readers = flood(server.local_addr()).await;
    // The first 100 hold every slot; each one above the cap gets 503 and is closed.
    for answer in closed(&mut readers, FLOOD - 100).await {
        assert_503(&answer);
    }
    // While the cap is full a legitimate client is refused too, cheaply.
    let refused = connect_with(&server, TcpSocket::new_v4().unwrap()).await;
    let err = refused.expect_err("a client above the cap was upgraded");
    assert!(err.contains("503"), "{err}");
    assert_eq!(readers.len(), 100);
    server.shutdown().await;
}

#[tokio::test]
async fn upgrade_deadline_half_open_flood_closed_while_client_joins() {
    let server = start(ServerConfig {
        max_connections: 10 * FLOOD,
        max_connections_per_ip: 10 * FLOOD,
        handshake_timeout: Duration::from_secs(1),
        ..config()
    })
    .await;
    let mut readers = flood(server.local_addr()).await;
    // During the flood a legitimate client upgrades and joins.
    let (mut alice, _) = creator(&server, "alice").await;
    // Every half-open connection is closed at the upgrade deadline, without an answer.
    for answer in closed(&mut readers, FLOOD).await {
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    }
    // The joined client is not affected.
    alice.barrier().await;
    server.shutdown().await;
}

/// All test clients come from 127.0.0.1; Linux routes all of 127/8 to loopback, so a
/// second client can come from 127.0.0.2.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn per_ip_cap_half_open_flood_excess_closed_other_ip_joins() {
    let server = start(ServerConfig {
        max_connections: 10 * FLOOD,
        max_connections_per_ip: 64,
        handshake_timeout: NEVER,
        ..config()
    })
    .await;
    let mut readers = flood(server.local_addr()).await;
    for answer in closed(&mut readers, FLOOD - 64).await {
        assert_503(&answer);
    }
    assert_eq!(readers.len(), 64);
    // The flooding address gets nothing more…
    let same = connect_with(&server, TcpSocket::new_v4().unwrap()).await;
    assert!(same.expect_err("over the per-IP cap").contains("503"));
    // …while another address joins during the flood.
    let other = TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut ws = connect_with(&server, other).await.expect("upgrade");
    assert_welcome(&join(&mut ws, None, "bob").await);
    server.shutdown().await;
}

#[tokio::test]
async fn join_deadline_upgraded_client_that_never_joins_gets_7010_and_close() {
    let server = start(ServerConfig {
        join_timeout: Duration::from_secs(10),
        idle_timeout: NEVER,
        ..config()
    })
    .await;
    let (mut joined, _) = creator(&server, "alice").await;
    let mut lurker = Client::connect(&server).await;
    // Activity does not extend the join deadline.
    lurker.barrier().await;

    // Virtual time from here on: the clock jumps to the next timer when all tasks wait.
    tokio::time::pause();
    match lurker.recv_within(Duration::from_secs(120)).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, codes::IDLE_TIMEOUT),
        other => panic!("expected 7010, got {other:?}"),
    }
    match lurker.expect_closed().await {
        Closed::Frame(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected close 1000, got {other:?}"),
    }
    // A joined client has no join deadline.
    joined.barrier().await;
    server.shutdown().await;
}

#[tokio::test]
async fn queued_bytes_over_total_bound_non_reader_dropped_with_7014() {
    // Far below 256 frames of 60 KB (the per-connection queue) in all queues together.
    let server = start(ServerConfig {
        max_queued_bytes: 1024 * 1024,
        ..config()
    })
    .await;
    // The non-reader: a tiny receive buffer, so the kernel absorbs little of what the
    // server writes to it.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut lazy = connect_with(&server, socket).await.expect("upgrade");
    let ServerMessage::Welcome {
        session, client_id, ..
    } = join(&mut lazy, None, "lazy").await
    else {
        panic!("expected welcome");
    };
    let mut sender = Client::connect(&server).await;
    sender.join(Some(&session), "sender").await;

    let blob = "x".repeat(60_000);
    let mut dropped_after = None;
    for sent in 1..=120 {
        sender
            .signal(&client_id, json!({"kind": "blob", "blob": blob}))
            .await;
        sender.send_json(json!({"type": "ping"})).await;
        loop {
            match sender.recv().await {
                ServerMessage::Pong => break,
                ServerMessage::PeerLeft { id } if id == client_id => {
                    dropped_after = Some(sent);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if dropped_after.is_some() {
            break;
        }
    }
    let sent = dropped_after.expect("the non-reader was never dropped");
    assert!(sent < 256, "dropped only when its own queue was full");

    // Reading at last, it gets what was queued before the drop, then 7014 and close 1008.
    loop {
        match next_message(&mut lazy).await {
            ServerMessage::Error { code, .. } => {
                assert_eq!(code, codes::SLOW_CONSUMER);
                break;
            }
            ServerMessage::Signal { .. } | ServerMessage::PeerJoined { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    match timeout(GUARD, lazy.next()).await.expect("no close") {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Policy),
        other => panic!("expected close 1008, got {other:?}"),
    }
    // The others are served as before.
    sender.barrier().await;
    server.shutdown().await;
}

/// Send a join to a session that does not exist; the virtual time until its `7006`.
async fn failed_join_takes(client: &mut Client) -> Duration {
    let t = tokio::time::Instant::now();
    client
        .send_json(json!({"type": "join", "version": 2, "session": "nosuchsession", "name": "p"}))
        .await;
    client.expect_error(codes::SESSION_NOT_FOUND).await;
    t.elapsed()
}

#[tokio::test]
async fn join_failures_back_off_per_connection_and_per_address() {
    let server = start(config()).await;
    let mut prober = Client::connect(&server).await;
    let mut other = Client::connect(&server).await;
    // Virtual time from here on: the server's back-off sleeps pass at once, measured.
    tokio::time::pause();
    let mut took = Vec::new();
    for _ in 0..7 {
        took.push(failed_join_takes(&mut prober).await);
    }
    // Three free failures; after them 250 ms, doubling with each further failure.
    let ms: Vec<u128> = took.iter().map(Duration::as_millis).collect();
    assert!(ms[..3].iter().all(|t| *t < 250), "{ms:?}");
    for (t, wait) in ms[3..].iter().zip([250, 500, 1000, 2000]) {
        assert!((wait..2 * wait).contains(t), "{ms:?}");
    }
    // Another connection from the same address starts where the address stands (7
    // failures: 4 s).
    let t = failed_join_takes(&mut other).await;
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(8)).contains(&t),
        "{t:?}"
    );
}
