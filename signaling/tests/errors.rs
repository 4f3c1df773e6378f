//! Coded errors for every refused frame, and isolation between connections.

mod common;

use common::{Client, Closed, config, creator, expect_welcome, joiner, start};
use peershare_signaling::ServerConfig;
use peershare_signaling::protocol::{MAX_NAME_LEN, ServerMessage, codes};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn frame_malformed_json_returns_7001_and_connection_stays_open() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    for raw in ["{", "not json", "", "[1,2", "{\"type\":\"ping\"} trailing"] {
        a.send_text(raw).await;
        a.expect_error(codes::MALFORMED_FRAME).await;
    }
    a.barrier().await;
}

#[tokio::test]
async fn frame_missing_fields_returns_7001() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    for frame in [
        json!({}),
        json!([]),
        json!({"type": 5}),
        json!({"type": "join", "version": 2, "session": null}),
        json!({"type": "join", "version": "one", "session": null, "name": "a"}),
    ] {
        a.send_json(frame).await;
        a.expect_error(codes::MALFORMED_FRAME).await;
    }
    a.join(None, "alice").await;
    a.send_json(json!({"type": "signal", "data": {}})).await;
    a.expect_error(codes::MALFORMED_FRAME).await;
}

#[tokio::test]
async fn join_without_session_field_returns_7001_and_creates_nothing() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    for frame in [
        json!({"type": "join", "version": 2, "name": "alice", "password": null}),
        json!({"type": "join", "version": 2, "name": "alice", "create": true}),
    ] {
        a.send_json(frame).await;
        let message = a.expect_error(codes::MALFORMED_FRAME).await;
        assert!(message.contains("session"), "{message}");
    }
    // Not joined: a `leave` is refused as before a join.
    a.send_json(json!({"type": "leave"})).await;
    a.expect_error(codes::BAD_STATE).await;
    // `session: null` is how a new session is asked for.
    let wa = a.join(None, "alice").await;
    assert!(wa.peers.is_empty());
}

#[tokio::test]
async fn frame_binary_returns_7001() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    a.send_raw(Message::binary(br#"{"type":"ping"}"#.to_vec()))
        .await;
    a.expect_error(codes::MALFORMED_FRAME).await;
    a.barrier().await;
}

#[tokio::test]
async fn signal_non_object_data_returns_7001() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (mut b, wb) = joiner(&server, &wa.session, "bob").await;
    a.recv().await;
    for data in [json!("offer"), json!(1), json!(null), json!([1])] {
        a.signal(&wb.client_id, data).await;
        a.expect_error(codes::MALFORMED_FRAME).await;
    }
    b.barrier().await;
}

#[tokio::test]
async fn signal_key_given_twice_or_array_frame_returns_7001_and_relays_nothing() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (mut b, wb) = joiner(&server, &wa.session, "bob").await;
    a.recv().await;
    let to = &wb.client_id;
    for raw in [
        format!(r#"{{"type":"signal","to":"{to}","data":{{"n":1}},"data":{{"n":2}}}}"#),
        format!(r#"{{"type":"ping","type":"signal","to":"{to}","data":{{"n":3}}}}"#),
        format!(r#"["signal","{to}",{{"n":4}}]"#),
    ] {
        a.send_text(raw).await;
        a.expect_error(codes::MALFORMED_FRAME).await;
    }
    // The next frame bob gets is the next well-formed signal.
    a.signal(to, json!({"n": 5})).await;
    assert_eq!(
        b.recv().await,
        ServerMessage::Signal {
            from: wa.client_id.clone(),
            data: json!({"n": 5})
        }
    );
}

#[tokio::test]
async fn frame_invalid_utf8_returns_7001_and_closes() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    a.send_raw(Message::Frame(bad)).await;
    a.expect_error(codes::MALFORMED_FRAME).await;
    match a.expect_closed().await {
        Closed::Frame(Some(f)) => assert_eq!(f.code, CloseCode::Invalid),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn frame_unknown_type_returns_7002() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    a.send_json(json!({"type": "subscribe", "topic": "x"}))
        .await;
    let msg = a.expect_error(codes::UNKNOWN_TYPE).await;
    assert!(msg.contains("subscribe"), "{msg}");
    // Server-to-client types are unknown as client frames too.
    a.send_json(json!({"type": "welcome"})).await;
    a.expect_error(codes::UNKNOWN_TYPE).await;
    a.barrier().await;
}

#[tokio::test]
async fn frame_oversize_returns_7003_and_connection_stays_open() {
    let server = start(ServerConfig {
        max_frame_bytes: 1024,
        ..config()
    })
    .await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (mut b, wb) = joiner(&server, &wa.session, "bob").await;
    a.recv().await;
    // An oversized but otherwise valid signal is dropped, not relayed.
    let big = "x".repeat(1100);
    a.signal(&wb.client_id, json!({"kind": "offer", "sdp": big}))
        .await;
    a.expect_error(codes::FRAME_TOO_LARGE).await;
    a.send_raw(Message::binary(vec![0u8; 1025])).await;
    a.expect_error(codes::FRAME_TOO_LARGE).await;
    // Exactly at the limit is fine.
    let prefix = format!(
        r#"{{"type":"signal","to":"{}","data":{{"pad":""#,
        wb.client_id
    );
    let frame = format!("{prefix}{}\"}}}}", "p".repeat(1024 - prefix.len() - 3));
    assert_eq!(frame.len(), 1024);
    a.send_text(frame).await;
    assert!(matches!(b.recv().await, ServerMessage::Signal { .. }));
    a.barrier().await;
}

#[tokio::test]
async fn frame_far_above_limit_returns_7003_and_closes() {
    let server = start(ServerConfig {
        max_frame_bytes: 1024,
        ..config()
    })
    .await;
    let mut a = Client::connect(&server).await;
    a.send_text("y".repeat(64 * 1024)).await;
    a.expect_error(codes::FRAME_TOO_LARGE).await;
    match a.expect_closed().await {
        Closed::Frame(Some(f)) => assert_eq!(f.code, CloseCode::Size),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn frame_before_join_returns_7009() {
    let server = start(config()).await;
    let (_b, wb) = creator(&server, "bob").await;
    let mut a = Client::connect(&server).await;
    a.signal(&wb.client_id, json!({"kind": "offer", "sdp": ""}))
        .await;
    a.expect_error(codes::BAD_STATE).await;
    a.send_json(json!({"type": "leave"})).await;
    a.expect_error(codes::BAD_STATE).await;
    a.barrier().await;
}

#[tokio::test]
async fn join_twice_returns_7009() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    a.send_json(json!({"type": "join", "version": 2, "session": wa.session, "name": "again"}))
        .await;
    a.expect_error(codes::BAD_STATE).await;
    a.send_json(json!({"type": "join", "version": 2, "session": null, "name": "again"}))
        .await;
    a.expect_error(codes::BAD_STATE).await;
}

#[tokio::test]
async fn join_bad_version_returns_7011() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    for v in [0, 1, 3, 999] {
        a.send_json(json!({"type": "join", "version": v, "session": null, "name": "a"}))
            .await;
        a.expect_error(codes::UNSUPPORTED_VERSION).await;
    }
    a.join(None, "a").await;
}

#[tokio::test]
async fn join_unknown_session_returns_7006() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    a.send_json(json!({"type": "join", "version": 2, "session": "abcdefghjkmnpqrs", "name": "a"}))
        .await;
    a.expect_error(codes::SESSION_NOT_FOUND).await;
    // Even an unsafe code is simply "not found" without create.
    a.send_json(json!({"type": "join", "version": 2, "session": "x y", "name": "a"}))
        .await;
    a.expect_error(codes::SESSION_NOT_FOUND).await;
}

#[tokio::test]
async fn join_wrong_password_returns_7007() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    let wa = expect_welcome(
        a.join_frame(json!({"type": "join", "version": 2, "session": null, "name": "alice", "password": "hunter2"}))
            .await,
    );
    let mut b = Client::connect(&server).await;
    for pw in [
        json!(null),
        json!(""),
        json!("hunter"),
        json!("hunter22"),
        json!("HUNTER2"),
    ] {
        b.send_json(json!({"type": "join", "version": 2, "session": wa.session, "name": "bob", "password": pw}))
            .await;
        b.expect_error(codes::UNAUTHORIZED).await;
    }
    // Field omitted entirely.
    b.send_json(json!({"type": "join", "version": 2, "session": wa.session, "name": "bob"}))
        .await;
    b.expect_error(codes::UNAUTHORIZED).await;
    // Refused joiners were never announced.
    a.barrier().await;
}

#[tokio::test]
async fn join_full_session_returns_7005() {
    let server = start(ServerConfig {
        max_peers_per_session: 2,
        ..config()
    })
    .await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (_b, _wb) = joiner(&server, &wa.session, "bob").await;
    a.recv().await;
    let mut c = Client::connect(&server).await;
    c.send_json(json!({"type": "join", "version": 2, "session": wa.session, "name": "carol"}))
        .await;
    c.expect_error(codes::SESSION_FULL).await;
    a.barrier().await;
}

#[tokio::test]
async fn join_invalid_name_returns_7013() {
    let server = start(config()).await;
    let mut a = Client::connect(&server).await;
    let long = "n".repeat(MAX_NAME_LEN + 1);
    for name in ["", "   ", long.as_str(), "bell\u{7}"] {
        a.send_json(json!({"type": "join", "version": 2, "session": null, "name": name}))
            .await;
        a.expect_error(codes::INVALID_FIELD).await;
    }
    a.join(None, &"n".repeat(MAX_NAME_LEN)).await;
}

#[tokio::test]
async fn rate_limit_burst_exceeded_returns_7004() {
    let server = start(ServerConfig {
        rate_per_sec: 1,
        rate_burst: 3,
        ..config()
    })
    .await;
    let mut a = Client::connect(&server).await;
    for _ in 0..4 {
        a.send_json(json!({"type": "ping"})).await;
    }
    for _ in 0..3 {
        assert_eq!(a.recv().await, ServerMessage::Pong);
    }
    a.expect_error(codes::RATE_LIMITED).await;
}

#[tokio::test]
async fn rate_limit_sustained_abuse_closes_connection() {
    let server = start(ServerConfig {
        rate_per_sec: 1,
        rate_burst: 1,
        ..config()
    })
    .await;
    let mut a = Client::connect(&server).await;
    for _ in 0..150 {
        if a.try_send_json(json!({"type": "ping"})).await.is_err() {
            break;
        }
    }
    assert_eq!(a.recv().await, ServerMessage::Pong);
    // 99 dropped frames get 7004, the 100th rejection gets 7004 and the close. (Should a
    // token refill on a very slow machine, an extra pong does not reset the streak.)
    let mut rejections = 0;
    loop {
        match a.recv_or_close().await {
            Some(ServerMessage::Error { code, .. }) => {
                assert_eq!(code, codes::RATE_LIMITED);
                rejections += 1;
            }
            Some(ServerMessage::Pong) => {}
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert_eq!(rejections, 100);
}

/// While a client of one session sends every kind of garbage, two clients of another
/// session on the same server keep relaying. (Multi-threaded runtime: the server's tasks
/// really run in parallel.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_from_one_client_does_not_disturb_other_session() {
    let server = start(ServerConfig {
        max_frame_bytes: 2048,
        ..config()
    })
    .await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (mut b, wb) = joiner(&server, &wa.session, "bob").await;
    a.recv().await;
    let (mut g, wg) = creator(&server, "garbage").await;

    let garbage: Vec<(Message, u16)> = vec![
        (Message::text("{"), codes::MALFORMED_FRAME),
        (Message::text(r#"{"type":"nope"}"#), codes::UNKNOWN_TYPE),
        (Message::binary(vec![0xff; 16]), codes::MALFORMED_FRAME),
        (Message::text("z".repeat(3000)), codes::FRAME_TOO_LARGE),
        (
            Message::text(json!({"type": "signal", "to": wa.client_id, "data": {"kind": "offer", "sdp": "evil"}}).to_string()),
            codes::UNKNOWN_RECIPIENT,
        ),
        (
            Message::text(json!({"type": "join", "version": 2, "session": wa.session, "name": "g"}).to_string()),
            codes::BAD_STATE,
        ),
        (
            Message::text(json!({"type": "signal", "to": wg.client_id, "data": 3}).to_string()),
            codes::MALFORMED_FRAME,
        ),
    ];
    for round in 0..10 {
        for (frame, code) in &garbage {
            g.send_raw(frame.clone()).await;
            g.expect_error(*code).await;
        }
        let offer = json!({"kind": "offer", "sdp": format!("round {round}")});
        a.signal(&wb.client_id, offer.clone()).await;
        assert_eq!(
            b.recv().await,
            ServerMessage::Signal {
                from: wa.client_id.clone(),
                data: offer
            }
        );
        let answer = json!({"kind": "answer", "sdp": format!("round {round}")});
        b.signal(&wa.client_id, answer.clone()).await;
        assert_eq!(
            a.recv().await,
            ServerMessage::Signal {
                from: wb.client_id.clone(),
                data: answer
            }
        );
    }
    // Finally the garbage client is cut off for a frame far above the limit; the other
    // session is unaffected.
    g.send_text("q".repeat(64 * 1024)).await;
    g.expect_error(codes::FRAME_TOO_LARGE).await;
    g.expect_closed().await;
    a.signal(&wb.client_id, json!({"kind": "offer", "sdp": "after"}))
        .await;
    assert!(matches!(b.recv().await, ServerMessage::Signal { .. }));
    a.barrier().await;
    b.barrier().await;
}
