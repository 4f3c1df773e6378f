//! Operations: `/readyz`, `/metrics`, and draining (`SignalingServer::drain`,
//! `shutdown_within`).

mod common;

use std::time::Duration;

use common::{Client, Closed, config, creator, joiner, start};
use peershare_signaling::SignalingServer;
use peershare_signaling::protocol::{ServerMessage, codes};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// One HTTP answer: status, headers (lowercase names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no header {name}"))
    }
}

/// `GET target` on a fresh connection; the whole answer (the server closes after it).
async fn get(server: &SignalingServer, target: &str) -> Answer {
    let mut tcp = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let request = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    timeout(common::WAIT, tcp.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("head end");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

fn assert_shutting_down_with_hint(msg: ServerMessage) {
    match msg {
        ServerMessage::Error {
            code,
            retry_after_ms,
            ..
        } => {
            assert_eq!(code, codes::SHUTTING_DOWN);
            let hint = retry_after_ms.expect("retry_after_ms");
            assert!(hint < 5_000, "{hint}");
        }
        other => panic!("expected error 7012, got {other:?}"),
    }
}

fn assert_close_1012(closed: Closed) {
    match closed {
        Closed::Frame(Some(f)) => assert_eq!(f.code, CloseCode::Restart),
        other => panic!("expected close 1012, got {other:?}"),
    }
}

#[tokio::test]
async fn readyz_serving_answers_200_ready() {
    let server = start(config()).await;
    let a = get(&server, "/readyz").await;
    assert_eq!((a.status, a.body.as_str()), (200, "ready\n"));
    assert_eq!(a.header("content-type"), "text/plain; charset=utf-8");
    assert!(!server.is_draining());
}

#[tokio::test]
async fn drain_readyz_503_healthz_200_and_upgrade_refused_503() {
    let server = start(config()).await;
    // A joined client keeps the server draining (not stopped) until it goes.
    let (mut a, _wa) = creator(&server, "alice").await;
    server.drain();
    assert!(server.is_draining());

    let ready = get(&server, "/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (503, "draining\n"));
    let health = get(&server, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    match tokio_tungstenite::connect_async(server.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
        }
        Err(other) => panic!("expected an HTTP 503 answer, got {other}"),
        Ok(_) => panic!("upgrade accepted while draining"),
    }

    assert_shutting_down_with_hint(a.recv().await);
    assert_close_1012(a.expect_closed().await);
    let metrics = get(&server, "/metrics").await;
    assert!(
        metrics
            .body
            .contains("peershare_signaling_connections_refused_total{reason=\"draining\"} 1\n"),
        "{}",
        metrics.body
    );
    assert_eq!(
        timeout(
            common::WAIT,
            server.shutdown_within(Duration::from_secs(60))
        )
        .await
        .expect("drain ends once the clients are gone"),
        0
    );
}

#[tokio::test]
async fn drain_joined_and_unjoined_clients_get_queued_frames_7012_with_hint_then_1012() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (mut b, wb) = joiner(&server, &wa.session, "bob").await;
    let mut idle = Client::connect(&server).await;
    a.recv().await; // peer-joined
    // Queued for a before the drain: delivered before the 7012.
    b.signal(&wa.client_id, json!({"kind": "offer", "sdp": "v=0"}))
        .await;
    b.barrier().await;
    server.drain();

    match a.recv().await {
        ServerMessage::Signal { from, data } => {
            assert_eq!(from, wb.client_id);
            assert_eq!(data, json!({"kind": "offer", "sdp": "v=0"}));
        }
        other => panic!("expected the queued signal, got {other:?}"),
    }
    for c in [&mut a, &mut b, &mut idle] {
        assert_shutting_down_with_hint(c.recv().await);
        assert_close_1012(c.expect_closed().await);
    }
    let addr = server.local_addr();
    let left = timeout(
        common::WAIT,
        server.shutdown_within(Duration::from_secs(60)),
    )
    .await
    .expect("drain ends once the clients are gone");
    assert_eq!(left, 0);
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn drain_twice_is_one_drain() {
    let server = start(config()).await;
    let (mut a, _wa) = creator(&server, "alice").await;
    server.drain();
    server.drain();
    assert_shutting_down_with_hint(a.recv().await);
    assert_close_1012(a.expect_closed().await);
    timeout(common::WAIT, server.shutdown())
        .await
        .expect("shutdown after a drain");
}

#[tokio::test]
async fn metrics_after_joins_relay_and_refusals_parse_and_count() {
    let server = start(config()).await;
    let (mut a, wa) = creator(&server, "alice").await;
    let (mut b, wb) = joiner(&server, &wa.session, "bob").await;
    a.recv().await; // peer-joined
    a.signal(&wb.client_id, json!({"kind": "offer", "sdp": "v=0"}))
        .await;
    assert!(matches!(b.recv().await, ServerMessage::Signal { .. }));
    // The pong comes from b's task after the signal's write was measured.
    b.barrier().await;
    a.signal("ffffffffffff", json!({"kind": "offer", "sdp": "v=0"}))
        .await;
    a.expect_error(codes::UNKNOWN_RECIPIENT).await;
    let mut c = Client::connect(&server).await;
    c.send_json(json!({"type": "join", "version": 2, "session": "nosuchsession", "name": "c"}))
        .await;
    c.expect_error(codes::SESSION_NOT_FOUND).await;
    // Malformed (no `name`): not read as a join, counted as a rejected frame only.
    c.send_json(json!({"type": "join", "version": 2, "session": null}))
        .await;
    c.expect_error(codes::MALFORMED_FRAME).await;

    let answer = get(&server, "/metrics").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let scrape = prometheus_parse::Scrape::parse(answer.body.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no sample {name} {label:?}"));
        match &sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            other => panic!("{name}: {other:?}"),
        }
    };
    // a, b, c and this request.
    assert_eq!(value("peershare_signaling_connections", None), 4.0);
    assert_eq!(value("peershare_signaling_clients", None), 2.0);
    assert_eq!(value("peershare_signaling_sessions", None), 1.0);
    assert_eq!(value("peershare_signaling_joins_total", None), 2.0);
    assert_eq!(
        value(
            "peershare_signaling_joins_refused_total",
            Some(("code", "7006"))
        ),
        1.0
    );
    assert_eq!(
        value("peershare_signaling_signals_relayed_total", None),
        1.0
    );
    assert_eq!(
        value(
            "peershare_signaling_rejected_frames_total",
            Some(("code", "7008"))
        ),
        1.0
    );
    assert_eq!(
        value(
            "peershare_signaling_rejected_frames_total",
            Some(("code", "7006"))
        ),
        1.0
    );
    assert_eq!(
        value(
            "peershare_signaling_rejected_frames_total",
            Some(("code", "7001"))
        ),
        1.0
    );
    assert_eq!(
        value(
            "peershare_signaling_joins_refused_total",
            Some(("code", "7001"))
        ),
        0.0
    );
    // Joins (4), signals (2), b's ping: text frames received.
    assert_eq!(
        value("peershare_signaling_frames_received_total", None),
        7.0
    );
    assert_eq!(
        value("peershare_signaling_relay_latency_seconds", None),
        1.0
    );
    assert_eq!(value("peershare_signaling_turn_allocations", None), 0.0);
}

#[tokio::test]
async fn metrics_head_gets_headers_only() {
    let server = start(config()).await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    timeout(common::WAIT, tcp.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "{text}");
    assert!(text.contains("Content-Length: "), "{text}");
}
