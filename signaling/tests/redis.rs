//! Several signaling nodes sharing sessions through a real `redis-server` (started by each
//! test on 127.0.0.1, a free port, no persistence): presence, relay and its order across
//! nodes, passwords, a node that stops, resuming on another node, Redis going away and
//! coming back.

mod common;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::time::Duration;

use redis_server::{Redis, http_get, wait_ready};

use common::{Client, WAIT, Welcome, expect_welcome, start};
use peershare_signaling::protocol::codes;
use peershare_signaling::{ServerConfig, ServerMessage, SignalingServer};
use serde_json::json;

/// Long enough for a stopped node's heartbeat to expire and be noticed (5 s + 1 s).
const EXPIRY_WAIT: Duration = Duration::from_secs(20);

fn node_config(redis: &Redis) -> ServerConfig {
    ServerConfig {
        redis: Some(redis.url()),
        ..common::config()
    }
}

/// A node whose Redis connection and channel subscription are up (`/readyz` says 200).
async fn node(redis: &Redis) -> SignalingServer {
    let server = start(node_config(redis)).await;
    wait_ready(server.local_addr(), true).await;
    server
}

/// Join `session` as `name`, resuming the membership `welcome` was for.
async fn resume(client: &mut Client, session: &str, name: &str, welcome: &Welcome) -> Welcome {
    expect_welcome(
        client
            .join_frame(
                json!({"type": "join", "version": 2, "session": session, "name": name,
                               "password": null,
                               "resume": {"id": welcome.client_id, "token": welcome.resume_token}}),
            )
            .await,
    )
}

/// `peershare_signaling_redis_dropped_total{reason}` of `server`'s `/metrics`.
async fn redis_dropped(server: &SignalingServer, reason: &str) -> u64 {
    let (status, body) = http_get(server.local_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let prefix = format!("peershare_signaling_redis_dropped_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in /metrics"))
}

async fn join_json(client: &mut Client, frame: serde_json::Value) -> ServerMessage {
    client.join_frame(frame).await
}

#[tokio::test]
async fn redis_two_nodes_presence_and_relay_in_order_across_nodes() {
    let redis = Redis::start();
    let n1 = node(&redis).await;
    let n2 = node(&redis).await;
    let mut a = Client::connect(&n1).await;
    let wa = a.join(None, "alice").await;
    let mut b = Client::connect(&n2).await;
    let wb = b.join(Some(&wa.session), "bob").await;
    assert_eq!(wb.session, wa.session);
    assert_eq!(wb.peers.len(), 1);
    assert_eq!(wb.peers[0].id, wa.client_id);
    assert_eq!(wb.peers[0].name, "alice");
    assert!(wb.resume_token.is_some());
    match a.recv().await {
        ServerMessage::PeerJoined { peer } => {
            assert_eq!(peer.id, wb.client_id);
            assert_eq!(peer.name, "bob");
        }
        other => panic!("expected peer-joined, got {other:?}"),
    }
    // A third member on node 1 sees both, in join order.
    let mut c = Client::connect(&n1).await;
    let wc = c.join(Some(&wa.session), "carol").await;
    let names: Vec<&str> = wc.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    for client in [&mut a, &mut b] {
        assert!(matches!(client.recv().await,
            ServerMessage::PeerJoined { peer } if peer.id == wc.client_id));
    }
    // 200 signals each way across the nodes arrive in order, `data` as sent.
    for i in 0..200 {
        a.signal(&wb.client_id, json!({"n": i})).await;
        b.signal(&wa.client_id, json!({"n": i})).await;
    }
    for (rx, from) in [(&mut b, &wa.client_id), (&mut a, &wb.client_id)] {
        for i in 0..200 {
            match rx.recv().await {
                ServerMessage::Signal { from: f, data } => {
                    assert_eq!(&f, from);
                    assert_eq!(data, json!({"n": i}));
                }
                other => panic!("expected signal {i}, got {other:?}"),
            }
        }
    }
    // An unknown recipient is refused as on one node.
    a.signal("000000000000", json!({})).await;
    a.expect_error(codes::UNKNOWN_RECIPIENT).await;
    // Bob leaves: both others hear it, once.
    b.send_json(json!({"type": "leave"})).await;
    for client in [&mut a, &mut c] {
        assert!(matches!(client.recv().await,
            ServerMessage::PeerLeft { id } if id == wb.client_id));
        client.barrier().await;
    }
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn redis_password_and_missing_session_checked_on_every_node() {
    let redis = Redis::start();
    let n1 = node(&redis).await;
    let n2 = node(&redis).await;
    let mut a = Client::connect(&n1).await;
    let wa = expect_welcome(
        join_json(
            &mut a,
            json!({"type": "join", "version": 2, "session": "guarded-room", "create": true,
                   "name": "alice", "password": "s3cret"}),
        )
        .await,
    );
    let mut b = Client::connect(&n2).await;
    b.send_json(json!({"type": "join", "version": 2, "session": wa.session,
                       "name": "bob", "password": "wrong"}))
        .await;
    b.expect_error(codes::UNAUTHORIZED).await;
    b.send_json(
        json!({"type": "join", "version": 2, "session": "no-such-room",
                       "name": "bob", "password": null}),
    )
    .await;
    b.expect_error(codes::SESSION_NOT_FOUND).await;
    b.send_json(
        json!({"type": "join", "version": 2, "session": "guarded-room",
                       "create": true, "name": "bob", "password": "s3cret"}),
    )
    .await;
    b.expect_error(codes::SESSION_EXISTS).await;
    let wb = expect_welcome(
        join_json(
            &mut b,
            json!({"type": "join", "version": 2, "session": "guarded-room",
                   "name": "bob", "password": "s3cret"}),
        )
        .await,
    );
    assert_eq!(wb.peers.len(), 1);
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn redis_join_create_with_invalid_code_refused_7015_or_7013_as_on_one_node() {
    let redis = Redis::start();
    let n1 = node(&redis).await;
    let n2 = node(&redis).await;
    let mut a = Client::connect(&n1).await;
    // A server-chosen code: a short number, not a code a client may create.
    let wa = a.join(None, "alice").await;
    assert!(!peershare_signaling::protocol::valid_session_code(
        &wa.session
    ));
    let mut b = Client::connect(&n2).await;
    // It exists: `create: true` is refused, never joined.
    b.send_json(json!({"type": "join", "version": 2, "session": wa.session,
                       "create": true, "name": "bob", "password": null}))
        .await;
    b.expect_error(codes::SESSION_EXISTS).await;
    // A code that does not exist and may not be created.
    b.send_json(json!({"type": "join", "version": 2, "session": "7x",
                       "create": true, "name": "bob", "password": null}))
        .await;
    b.expect_error(codes::INVALID_FIELD).await;
    b.send_json(json!({"type": "join", "version": 2, "session": "7x",
                       "name": "bob", "password": null}))
        .await;
    b.expect_error(codes::SESSION_NOT_FOUND).await;
    // No one joined alice's session.
    a.barrier().await;
    // With a valid `resume`, `create: true` takes alice's membership over.
    let mut a2 = Client::connect(&n2).await;
    let wa2 = expect_welcome(
        join_json(
            &mut a2,
            json!({"type": "join", "version": 2, "session": wa.session, "create": true,
                   "name": "alice", "password": null,
                   "resume": {"id": wa.client_id, "token": wa.resume_token}}),
        )
        .await,
    );
    assert_eq!(wa2.client_id, wa.client_id);
    a.expect_error(codes::SUPERSEDED).await;
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn redis_node_stopped_its_members_expire_and_resume_on_another_node_keeps_the_id() {
    let redis = Redis::start();
    let n1 = node(&redis).await;
    let n2 = node(&redis).await;
    let mut a = Client::connect(&n1).await;
    let wa = a.join(None, "alice").await;
    let mut b = Client::connect(&n2).await;
    let wb = b.join(Some(&wa.session), "bob").await;
    let mut c = Client::connect(&n2).await;
    let wc = c.join(Some(&wa.session), "carol").await;
    for _ in 0..2 {
        assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));
    }
    assert!(
        matches!(b.recv().await, ServerMessage::PeerJoined { peer } if peer.id == wc.client_id)
    );
    // Node 2 drains: its clients get 7012 and the members stay in Redis.
    n2.shutdown().await;
    b.expect_error(codes::SHUTTING_DOWN).await;
    // Bob resumes through node 1 at once: same ID, and alice hears nothing.
    let mut b2 = Client::connect(&n1).await;
    let wb2 = resume(&mut b2, &wa.session, "bob", &wb).await;
    assert_eq!(wb2.client_id, wb.client_id);
    // Carol never comes back: once node 2's heartbeat expired, alice and bob get
    // `peer-left` for her, and nothing else (no presence change for bob).
    for client in [&mut a, &mut b2] {
        match client.recv_within(EXPIRY_WAIT).await {
            ServerMessage::PeerLeft { id } => assert_eq!(id, wc.client_id),
            other => panic!("expected carol's peer-left, got {other:?}"),
        }
    }
    // Signals reach the resumed bob on his new node.
    a.signal(&wb.client_id, json!({"after": "resume"})).await;
    assert!(matches!(b2.recv().await,
        ServerMessage::Signal { from, data } if from == wa.client_id && data == json!({"after": "resume"})));
    a.barrier().await;
    drop(c);
    n1.shutdown().await;
}

#[tokio::test]
async fn redis_resume_while_the_old_connection_lives_supersedes_it() {
    let redis = Redis::start();
    let n1 = node(&redis).await;
    let n2 = node(&redis).await;
    let mut a = Client::connect(&n1).await;
    let wa = a.join(None, "alice").await;
    let mut b = Client::connect(&n1).await;
    let wb = b.join(Some(&wa.session), "bob").await;
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));
    let mut b2 = Client::connect(&n2).await;
    let wb2 = resume(&mut b2, &wa.session, "bob", &wb).await;
    assert_eq!(wb2.client_id, wb.client_id);
    b.expect_error(codes::SUPERSEDED).await;
    a.signal(&wb.client_id, json!({"to": "new"})).await;
    assert!(matches!(b2.recv().await, ServerMessage::Signal { .. }));
    a.barrier().await;
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn redis_unreachable_joins_fail_7017_and_recover_with_sessions_restored() {
    let mut redis = Redis::start();
    let port = redis.port;
    let n1 = node(&redis).await;
    let n2 = node(&redis).await;
    let mut a = Client::connect(&n1).await;
    let wa = a.join(None, "alice").await;
    let mut c = Client::connect(&n1).await;
    let wc = c.join(Some(&wa.session), "carol").await;
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { peer } if peer.name == "carol"));
    assert_eq!(redis_dropped(&n1, "write_failed").await, 0);
    redis.stop();
    wait_ready(n1.local_addr(), false).await;
    // A signal while Redis is away is lost, and /metrics counts it.
    a.signal(&wc.client_id, json!({"n": 1})).await;
    tokio::time::timeout(EXPIRY_WAIT, async {
        while redis_dropped(&n1, "write_failed").await == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the lost signal counted in redis_dropped_total");
    let mut b = Client::connect(&n2).await;
    b.send_json(json!({"type": "join", "version": 2, "session": wa.session,
                       "name": "bob", "password": null}))
        .await;
    match b.recv().await {
        ServerMessage::Error {
            code,
            retry_after_ms,
            ..
        } => {
            assert_eq!(code, codes::UNAVAILABLE);
            assert!(retry_after_ms.is_some());
        }
        other => panic!("expected 7017, got {other:?}"),
    }
    // Redis comes back empty; node 1 writes alice's session back, and bob gets in.
    let _redis = Redis::start_on(port);
    wait_ready(n1.local_addr(), true).await;
    wait_ready(n2.local_addr(), true).await;
    let wb = tokio::time::timeout(EXPIRY_WAIT, async {
        loop {
            // A fresh connection each time: a connection must join within 10 s.
            b = Client::connect(&n2).await;
            b.send_json(json!({"type": "join", "version": 2, "session": wa.session,
                               "name": "bob", "password": null}))
                .await;
            match b.recv().await {
                ServerMessage::Welcome { .. } => break,
                ServerMessage::Error { code, .. } => {
                    // Not 7006: the session was written back before the node was ready.
                    assert_eq!(code, codes::UNAVAILABLE);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(wb.is_ok(), "bob never got into the restored session");
    assert!(
        matches!(a.recv_within(WAIT).await, ServerMessage::PeerJoined { peer } if peer.name == "bob")
    );
    n1.shutdown().await;
    n2.shutdown().await;
}
