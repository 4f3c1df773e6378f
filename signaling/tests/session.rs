//! Sessions, presence and relay against a real server on loopback.

mod common;

use common::{Client, Closed, config, creator, expect_welcome, joiner, start};
use peershare_signaling::protocol::{IceServer, PeerInfo, ServerMessage, codes};
use serde_json::json;

#[tokio::test]
async fn join_without_code_creates_session_and_welcomes_creator() {
    let ice = vec![IceServer {
        urls: vec![
            "stun:stun.example.invalid:3478".into(),
            "turn:turn.example.invalid:3478".into(),
        ],
        username: Some("1700000000:x".into()),
        credential: Some("c2VjcmV0".into()),
    }];
    let server = start(peershare_signaling::ServerConfig {
        ice_servers: ice.clone(),
        ..config()
    })
    .await;
    let (_a, w) = creator(&server, "alice").await;
    // A short number: the route of a code, which only routes.
    assert!(
        w.session
            .parse::<u32>()
            .is_ok_and(|n| (1..100).contains(&n)),
        "{}",
        w.session
    );
    assert!(!w.client_id.is_empty());
    assert!(w.peers.is_empty());
    assert_eq!(w.ice_servers, ice);

    let (_b, w2) = creator(&server, "bob").await;
    assert_ne!(w2.session, w.session);
    assert_ne!(w2.client_id, w.client_id);
}

#[tokio::test]
async fn join_existing_session_lists_present_peers_and_notifies_them() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (mut b, wb) = joiner(&server, &wa.session, "bob").await;
    assert_eq!(wb.session, wa.session);
    assert_eq!(
        wb.peers,
        vec![PeerInfo {
            id: wa.client_id.clone(),
            name: "alice".into(),
            relay_only: false,
        }]
    );
    let bob = PeerInfo {
        id: wb.client_id.clone(),
        name: "bob".into(),
        relay_only: false,
    };
    assert_eq!(
        a.recv().await,
        ServerMessage::PeerJoined { peer: bob.clone() }
    );

    // Names are trimmed.
    let (_c, wc) = joiner(&server, &wa.session, "  carol ").await;
    let carol = PeerInfo {
        id: wc.client_id.clone(),
        name: "carol".into(),
        relay_only: false,
    };
    let expected_peers = vec![
        PeerInfo {
            id: wa.client_id.clone(),
            name: "alice".into(),
            relay_only: false,
        },
        bob,
    ];
    assert_eq!(wc.peers, expected_peers);
    assert_eq!(
        a.recv().await,
        ServerMessage::PeerJoined {
            peer: carol.clone()
        }
    );
    assert_eq!(b.recv().await, ServerMessage::PeerJoined { peer: carol });
    // Nobody is told about themselves, and nothing else is pending.
    a.barrier().await;
    b.barrier().await;
}

#[tokio::test]
async fn join_relay_only_flag_reaches_welcome_and_peer_joined() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    let wa = expect_welcome(
        a.join_frame(json!({"type": "join", "version": 2, "session": null, "name": "alice", "relay_only": true}))
            .await,
    );
    let alice = PeerInfo {
        id: wa.client_id.clone(),
        name: "alice".into(),
        relay_only: true,
    };
    let (_b, wb) = joiner(&server, &wa.session, "bob").await;
    assert_eq!(wb.peers, vec![alice]);
    // A client that says nothing is not relay-only, and the flag is left out of the frame.
    let bob = PeerInfo {
        id: wb.client_id.clone(),
        name: "bob".into(),
        relay_only: false,
    };
    assert_eq!(a.recv().await, ServerMessage::PeerJoined { peer: bob });
    let frame = serde_json::to_value(ServerMessage::PeerJoined {
        peer: PeerInfo {
            id: wb.client_id.clone(),
            name: "bob".into(),
            relay_only: false,
        },
    })
    .unwrap();
    assert_eq!(frame["peer"].get("relay_only"), None);
}

#[tokio::test]
async fn leave_frame_notifies_remaining_members_and_closes_socket() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (mut b, wb) = joiner(&server, &wa.session, "bob").await;
    let (mut c, _wc) = joiner(&server, &wa.session, "carol").await;
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));
    assert!(matches!(b.recv().await, ServerMessage::PeerJoined { .. }));

    b.send_json(json!({"type": "leave"})).await;
    assert!(matches!(b.expect_closed().await, Closed::Frame(_)));
    let left = ServerMessage::PeerLeft {
        id: wb.client_id.clone(),
    };
    assert_eq!(a.recv().await, left);
    assert_eq!(c.recv().await, left);
    a.barrier().await;
    c.barrier().await;
}

#[tokio::test]
async fn disconnect_without_leave_notifies_remaining_members() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (b, wb) = joiner(&server, &wa.session, "bob").await;
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));
    drop(b);
    assert_eq!(
        a.recv().await,
        ServerMessage::PeerLeft {
            id: wb.client_id.clone()
        }
    );
}

#[tokio::test]
async fn session_last_member_leaving_removes_session() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    a.send_json(json!({"type": "leave"})).await;
    a.expect_closed().await;
    // The session is gone once the leave has been processed (the close proves it was).
    let mut d = Client::connect(&server).await;
    d.send_json(json!({"type": "join", "version": 2, "session": wa.session, "name": "dave"}))
        .await;
    d.expect_error(codes::SESSION_NOT_FOUND).await;
}

#[tokio::test]
async fn join_with_create_flag_uses_client_chosen_code() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    let wa = expect_welcome(
        a.join_frame(json!({"type": "join", "version": 2, "session": "team-room_42", "name": "alice", "create": true}))
            .await,
    );
    assert_eq!(wa.session, "team-room_42");
    // Creating it again is refused (someone else holds the code): never a silent join.
    let mut b = Client::connect(&server).await;
    b.send_json(json!({"type": "join", "version": 2, "session": "team-room_42", "name": "bob", "create": true}))
        .await;
    b.expect_error(7015).await;
    // Joining it without `create` works.
    let (_c, wc) = joiner(&server, "team-room_42", "carol").await;
    assert_eq!(wc.peers.len(), 1);
}

#[tokio::test]
async fn join_with_create_flag_and_unsafe_code_returns_7013() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    for code in ["short", "has space here", "semi;colon;x", &"x".repeat(65)] {
        a.send_json(
            json!({"type": "join", "version": 2, "session": code, "name": "a", "create": true}),
        )
        .await;
        a.expect_error(codes::INVALID_FIELD).await;
    }
}

#[tokio::test]
async fn join_password_session_with_matching_password_succeeds() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    let wa = expect_welcome(
        a.join_frame(json!({"type": "join", "version": 2, "session": null, "name": "alice", "password": "hunter2"}))
            .await,
    );
    let mut b = Client::connect(&server).await;
    let wb = expect_welcome(
        b.join_frame(json!({"type": "join", "version": 2, "session": wa.session, "name": "bob", "password": "hunter2"}))
            .await,
    );
    assert_eq!(wb.peers.len(), 1);
}

#[tokio::test]
async fn signal_between_members_is_relayed_with_sender_id() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (mut b, wb) = joiner(&server, &wa.session, "bob").await;
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));

    let offer = json!({"kind": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"});
    a.signal(&wb.client_id, offer.clone()).await;
    assert_eq!(
        b.recv().await,
        ServerMessage::Signal {
            from: wa.client_id.clone(),
            data: offer
        }
    );
    let cand = json!({"kind": "candidate", "candidate": {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}});
    b.signal(&wa.client_id, cand.clone()).await;
    assert_eq!(
        a.recv().await,
        ServerMessage::Signal {
            from: wb.client_id.clone(),
            data: cand
        }
    );
    // Opaque data: unknown shapes are relayed unchanged, in order.
    for i in 0..20 {
        a.signal(&wb.client_id, json!({"seq": i, "nested": {"x": [1, 2, 3]}}))
            .await;
    }
    for i in 0..20 {
        match b.recv().await {
            ServerMessage::Signal { from, data } => {
                assert_eq!(from, wa.client_id);
                assert_eq!(data["seq"], i);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The sender got nothing back.
    a.barrier().await;
}

#[tokio::test]
async fn signal_data_is_relayed_byte_for_byte_and_a_key_given_twice_refused_7001() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (b, wb) = joiner(&server, &wa.session, "bob").await;
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));
    let mut b = b.into_inner();
    let mut next_text = async || loop {
        match tokio::time::timeout(common::WAIT, b.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    };

    // Key order, whitespace, escapes and number forms stay as the sender wrote them.
    let data = r#"{ "z": 1.50, "a" : ["\u00e9", 1e3],"kind":"offer" }"#;
    a.send_text(format!(
        r#"{{"data":{data},"type":"signal","extra":[1],"to":"{}"}}"#,
        wb.client_id
    ))
    .await;
    assert_eq!(
        next_text().await,
        format!(
            r#"{{"type":"signal","from":"{}","data":{data}}}"#,
            wa.client_id
        )
    );
    // A key given twice: refused, nothing relayed (`data` could not go as sent).
    a.send_text(format!(
        r#"{{"type":"signal","to":"nobody","to":"{}","data":{{"n":1}}}}"#,
        wb.client_id
    ))
    .await;
    a.expect_error(codes::MALFORMED_FRAME).await;
    // A recipient ID written with an escape is the same ID.
    let escaped = wb.client_id.replacen(
        &wb.client_id[..1],
        &format!("\\u{:04x}", wb.client_id.as_bytes()[0]),
        1,
    );
    a.send_text(format!(
        r#"{{"type":"signal","to":"{escaped}","data":{{}}}}"#
    ))
    .await;
    assert_eq!(
        next_text().await,
        format!(
            r#"{{"type":"signal","from":"{}","data":{{}}}}"#,
            wa.client_id
        )
    );
    a.barrier().await;
}

#[tokio::test]
async fn signal_to_unknown_recipient_returns_7008() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    a.signal("000000000000", json!({"kind": "offer", "sdp": ""}))
        .await;
    a.expect_error(codes::UNKNOWN_RECIPIENT).await;
    a.signal(&wa.client_id, json!({})).await;
    a.expect_error(codes::UNKNOWN_RECIPIENT).await;
}

#[tokio::test]
async fn signal_to_client_of_other_session_returns_7008() {
    let server = start(config()).await;
    let (mut a, _wa) = creator(&server, "alice").await;
    let (mut x, wx) = creator(&server, "mallory-target").await;
    a.signal(&wx.client_id, json!({"kind": "offer", "sdp": "v=0"}))
        .await;
    a.expect_error(codes::UNKNOWN_RECIPIENT).await;
    // Nothing leaked into the other session.
    x.barrier().await;
}

#[tokio::test]
async fn ping_before_and_after_join_returns_pong() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    a.barrier().await;
    a.join(None, "alice").await;
    a.barrier().await;
}

#[tokio::test]
async fn join_after_failed_join_succeeds() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    a.send_json(json!({"type": "join", "version": 2, "session": "nosuchsession", "name": "a"}))
        .await;
    a.expect_error(codes::SESSION_NOT_FOUND).await;
    a.join(None, "alice").await;
}

/// A member that stops reading is dropped from its session once its outbound queue is
/// full; the sender and the other members are never blocked by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_to_slow_consumer_drops_it_with_peer_left() {
    use futures_util::{SinkExt, StreamExt};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio_tungstenite::tungstenite::Message;

    let server = start(peershare_signaling::ServerConfig {
        rate_per_sec: 1_000_000,
        rate_burst: 1_000_000,
        ..config()
    })
    .await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (b, wb) = joiner(&server, &wa.session, "slow-bob").await;
    let (mut c, wc) = joiner(&server, &wa.session, "carol").await;
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));

    // b never reads again. a floods it with large signals from a separate task.
    let (mut a_tx, mut a_rx) = a.into_inner().split();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let to = wb.client_id.clone();
    let flood = tokio::spawn(async move {
        let pad = "x".repeat(60_000);
        for i in 0..5_000 {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            let frame = json!({"type": "signal", "to": to, "data": {"i": i, "pad": pad}});
            if a_tx.send(Message::text(frame.to_string())).await.is_err() {
                break;
            }
        }
        a_tx
    });

    // c, in the same session, is not blocked by b: it sees b leave.
    let left = ServerMessage::PeerLeft {
        id: wb.client_id.clone(),
    };
    assert_eq!(
        c.recv_within(std::time::Duration::from_secs(30)).await,
        left
    );
    stop.store(true, Ordering::Relaxed);
    // a sees b leave too (possibly after 7008 errors for signals sent after that).
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(30), a_rx.next())
            .await
            .expect("timed out")
            .expect("ended")
            .expect("read error");
        let Message::Text(t) = msg else { continue };
        match serde_json::from_str::<ServerMessage>(t.as_str()).unwrap() {
            m if m == left => break,
            ServerMessage::Error { code, .. } => assert_eq!(code, codes::UNKNOWN_RECIPIENT),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut a_tx = flood.await.unwrap();
    // The session still relays between the others.
    a_tx.send(Message::text(
        json!({"type": "signal", "to": wc.client_id, "data": {"kind": "offer", "sdp": "still"}})
            .to_string(),
    ))
    .await
    .unwrap();
    match c.recv().await {
        ServerMessage::Signal { from, .. } => assert_eq!(from, wa.client_id),
        other => panic!("unexpected {other:?}"),
    }
    drop(b);
}
