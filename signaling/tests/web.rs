//! The browser page on the signaling port: plain HTTP requests over a raw TCP (or TLS)
//! connection get the page's files, `/healthz`, 404, 405 and 400 answers with their
//! headers, and the connection is closed; a WebSocket upgrade on any path still joins.
//! The connection caps and the upgrade deadline hold for page requests too.
//!
//! Waits are bounded only as hang guards; nothing sleeps to synchronise.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::tls::{self, TestCert};
use common::{Client, WAIT, config, expect_welcome, start};
use peershare_signaling::{ServerConfig, SignalingServer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A handshake deadline short enough for the tests that wait for it.
const SHORT: Duration = Duration::from_millis(300);

const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// The files of the page: path, Content-Type, bytes.
const FILES: [(&str, &str, &[u8]); 5] = [
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "/vendor.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/vendor.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/style.css"),
    ),
    (
        "/icon.svg",
        "image/svg+xml",
        include_bytes!("../web/icon.svg"),
    ),
];

/// A parsed HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header names in lowercase; each name once.
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("no {name} header: {self:?}"))
    }

    /// The headers every answer has, with this Content-Type and Content-Length.
    fn assert_common(&self, content_type: &str, length: usize) {
        assert_eq!(self.header("Content-Type"), content_type);
        assert_eq!(self.header("Content-Length"), length.to_string());
        assert_eq!(self.header("Cache-Control"), "no-cache");
        assert_eq!(self.header("X-Content-Type-Options"), "nosniff");
        assert_eq!(self.header("Referrer-Policy"), "no-referrer");
        assert_eq!(self.header("Cross-Origin-Opener-Policy"), "same-origin");
        assert_eq!(self.header("Connection"), "close");
    }
}

/// Send `request` as is and read everything until the server closes the connection.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).await.expect("write the request");
    let mut got = Vec::new();
    let read = timeout(WAIT, stream.read_to_end(&mut got))
        .await
        .expect("the server did not close the connection");
    // Over TLS the server sends close_notify; a reset after the answer is tolerated.
    if let Err(e) = read {
        assert!(!got.is_empty(), "read failed before any answer: {e}");
    }
    got
}

fn parse(raw: &[u8]) -> Answer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head: {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = HashMap::new();
    for line in lines {
        let (name, value) = line.split_once(": ").expect("header line");
        let old = headers.insert(name.to_ascii_lowercase(), value.to_string());
        assert!(old.is_none(), "{name} twice");
    }
    Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// `request` over a fresh plain TCP connection to `server`; the parsed answer.
async fn fetch_raw(server: &SignalingServer, request: &[u8]) -> Answer {
    let mut tcp = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    parse(&exchange(&mut tcp, request).await)
}

/// Like [`fetch_raw`], but `None` if the connection fails or ends without an answer.
async fn try_fetch(server: &SignalingServer, request: &[u8]) -> Option<Answer> {
    let mut tcp = TcpStream::connect(server.local_addr()).await.ok()?;
    tcp.write_all(request).await.ok()?;
    let mut got = Vec::new();
    let _ = timeout(WAIT, tcp.read_to_end(&mut got)).await.ok()?;
    (!got.is_empty()).then(|| parse(&got))
}

/// `METHOD target` with a Host header.
async fn fetch(server: &SignalingServer, method: &str, target: &str) -> Answer {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n",
        server.local_addr()
    );
    fetch_raw(server, request.as_bytes()).await
}

#[tokio::test]
async fn web_get_root_serves_index_html_with_headers_and_csp() {
    let server = start(config()).await;
    let index = include_bytes!("../web/index.html");
    for target in ["/", "/index.html", "/?x=1"] {
        let a = fetch(&server, "GET", target).await;
        assert_eq!(a.status, 200, "{target}");
        a.assert_common("text/html; charset=utf-8", index.len());
        assert_eq!(a.header("Content-Security-Policy"), CSP);
        assert_eq!(a.body, index, "{target}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn web_get_each_asset_serves_its_bytes_and_type() {
    let server = start(config()).await;
    for (path, content_type, bytes) in FILES {
        let a = fetch(&server, "GET", path).await;
        assert_eq!(a.status, 200, "{path}");
        a.assert_common(content_type, bytes.len());
        assert_eq!(a.body, bytes, "{path}");
        assert_eq!(
            a.headers.contains_key("content-security-policy"),
            path == "/index.html",
            "{path}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn web_head_gets_the_get_headers_without_body() {
    let server = start(config()).await;
    for (path, content_type, bytes) in FILES {
        let a = fetch(&server, "HEAD", path).await;
        assert_eq!(a.status, 200, "{path}");
        a.assert_common(content_type, bytes.len());
        assert!(a.body.is_empty(), "{path}: {:?}", a.body);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn web_healthz_answers_200_ok() {
    let server = start(config()).await;
    let a = fetch(&server, "GET", "/healthz").await;
    assert_eq!(a.status, 200);
    a.assert_common("text/plain; charset=utf-8", 3);
    assert_eq!(a.body, b"ok\n");
    assert!(!a.headers.contains_key("content-security-policy"));
    server.shutdown().await;
}

#[tokio::test]
async fn web_unknown_path_gets_404() {
    let server = start(config()).await;
    for target in ["/x", "/index.htm", "/web/app.js", "/healthz/"] {
        let a = fetch(&server, "GET", target).await;
        assert_eq!(a.status, 404, "{target}");
        a.assert_common("text/plain; charset=utf-8", a.body.len());
        assert!(!a.body.is_empty());
    }
    server.shutdown().await;
}

#[tokio::test]
async fn web_other_method_gets_405_with_allow() {
    let server = start(config()).await;
    let a = fetch(&server, "DELETE", "/").await;
    assert_eq!(a.status, 405);
    assert_eq!(a.header("Allow"), "GET, HEAD");
    a.assert_common("text/plain; charset=utf-8", a.body.len());
    // A request with a body (up to 64 KiB of it is read and dropped after the answer):
    // the answer arrives whole although the body is never parsed.
    let body = "x".repeat(20_000);
    let request = format!(
        "POST /app.js HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let a = fetch_raw(&server, request.as_bytes()).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.header("Allow"), "GET, HEAD");
    server.shutdown().await;
}

#[tokio::test]
async fn web_unparsable_or_oversized_head_gets_400() {
    let server = start(config()).await;
    let garbage = fetch_raw(&server, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n").await;
    assert_eq!(garbage.status, 400);
    garbage.assert_common("text/plain; charset=utf-8", garbage.body.len());
    // 8 KiB of header without the empty line that ends the head.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n",
        "a".repeat(9000)
    );
    let a = fetch_raw(&server, big.as_bytes()).await;
    assert_eq!(a.status, 400);
    // Also with the end: still too long.
    let a = fetch_raw(&server, format!("{big}\r\n").as_bytes()).await;
    assert_eq!(a.status, 400);
    // Just under the bound is served.
    let head = "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Pad: \r\n\r\n";
    let pad = "a".repeat(8 * 1024 - head.len());
    let fits = head.replace("X-Pad: ", &format!("X-Pad: {pad}"));
    assert_eq!(fits.len(), 8 * 1024);
    assert_eq!(fetch_raw(&server, fits.as_bytes()).await.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn web_websocket_on_root_and_other_path_still_joins() {
    let server = start(config()).await;
    let base = server.url();
    let mut session = None;
    let mut clients = Vec::new();
    for path in ["/", "/x", "/index.html", "/healthz?x=1"] {
        let (ws, _) = timeout(
            WAIT,
            tokio_tungstenite::connect_async(format!("{base}{path}")),
        )
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut client = Client::from_ws(ws);
        let welcome = expect_welcome(
            client
                .join_frame(json!({"type": "join", "version": 2, "session": session, "name": "a"}))
                .await,
        );
        assert_eq!(welcome.peers.len(), clients.len(), "{path}");
        session.get_or_insert(welcome.session);
        // Stays joined until the end of the test.
        clients.push(client);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn web_page_request_gives_its_slot_back_and_is_refused_503_over_the_cap() {
    let server = start(ServerConfig {
        max_connections: 1,
        ..config()
    })
    .await;
    // A page request does not keep its slot: the next one gets the page once the server
    // has seen the previous one closed (until then: 503, or a reset).
    for _ in 0..3 {
        let a = timeout(WAIT, async {
            loop {
                match try_fetch(&server, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await {
                    Some(a) if a.status != 503 => break a,
                    _ => tokio::task::yield_now().await,
                }
            }
        })
        .await
        .expect("the slot was not given back");
        assert_eq!((a.status, a.body.as_slice()), (200, &b"ok\n"[..]));
    }
    let mut held = timeout(WAIT, async {
        loop {
            if let Ok((ws, _)) = tokio_tungstenite::connect_async(server.url()).await {
                break Client::from_ws(ws);
            }
        }
    })
    .await
    .expect("no slot for the WebSocket");
    held.join(None, "a").await;
    // Over the cap a connection is refused before its request is read: one that has not
    // sent it yet gets the 503 (one that has may see a reset instead).
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut got = Vec::new();
    let _ = timeout(WAIT, tcp.read_to_end(&mut got))
        .await
        .expect("the server did not close the connection");
    assert!(
        got.starts_with(b"HTTP/1.1 503 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn web_incomplete_head_closed_without_answer_at_handshake_timeout() {
    let server = start(ServerConfig {
        handshake_timeout: SHORT,
        ..config()
    })
    .await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let got = exchange(&mut tcp, b"GET / HTTP/1.1\r\nHost: a\r\n").await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    server.shutdown().await;
}

#[tokio::test]
async fn web_tls_get_root_serves_index_and_wss_still_joins() {
    let cert = TestCert::localhost();
    let server = start(tls::config(&cert)).await;
    let index = include_bytes!("../web/index.html");
    let mut stream = tls::tls_stream(server.local_addr(), &[&cert])
        .await
        .expect("TLS handshake");
    let a = parse(&exchange(&mut stream, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await);
    assert_eq!(a.status, 200);
    a.assert_common("text/html; charset=utf-8", index.len());
    assert_eq!(a.header("Content-Security-Policy"), CSP);
    assert_eq!(a.body, index);
    let mut stream = tls::tls_stream(server.local_addr(), &[&cert])
        .await
        .expect("TLS handshake");
    let a = parse(
        &exchange(
            &mut stream,
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await,
    );
    assert_eq!((a.status, a.body.as_slice()), (200, &b"ok\n"[..]));
    let mut client = tls::connect(&server, &[&cert]).await.expect("wss connect");
    client.join(None, "a").await;
    server.shutdown().await;
}
