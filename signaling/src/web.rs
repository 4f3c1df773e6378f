//! The browser page, served over plain HTTP/1.1 on the signaling port next to the
//! WebSocket (and over TLS when the server terminates it).
//!
//! Every connection starts with an HTTP request head, which [`read_head`] reads (at most
//! [`MAX_HEAD`] bytes). A request with an `Upgrade: websocket` header, on any path, goes
//! on to the WebSocket handshake with those bytes replayed first ([`Prefixed`]); any
//! other request gets one answer ([`route`], pure) and the connection is closed.
//!
//! The page's files (`signaling/web/`) are compiled in ([`ASSETS`]).

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Longest request head read, up to and including the empty line that ends it; a longer
/// one is answered `400`.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Most header fields in a request head (tungstenite's own bound); more are answered `400`.
const MAX_HEADERS: usize = 124;
/// How long, after an answer, what the client still sends is read and dropped before the
/// connection is closed (closing with unread data would reset the connection, which can
/// destroy the answer before the client reads it).
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and dropped after an answer.
const MAX_LINGER_BYTES: usize = 64 * 1024;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const TEXT: &str = "text/plain; charset=utf-8";

/// The Content-Security-Policy of the HTML page: its own scripts, styles and images
/// only (and images from `blob:`/`data:` URLs it makes), WebSocket connections to this
/// server only (`'self'` covers same-origin `ws:`/`wss:`), no framing. `'wasm-unsafe-eval'`
/// lets it compile the BLAKE3 WebAssembly module that `vendor.js` carries (it allows
/// WebAssembly only, not `eval` of JavaScript).
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// One file of the page: its path (`/` + its name in `signaling/web/`), type and bytes.
#[derive(Debug)]
pub(crate) struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// `asset!("name", TYPE)`: `signaling/web/name`, compiled in, served at `/name`.
macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            path: concat!("/", $name),
            content_type: $type,
            body: include_bytes!(concat!("../web/", $name)),
        }
    };
}

/// The page's files; `index.html` is also served at `/`. One line per file.
pub(crate) const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("app.js", JS),
    asset!("session.js", JS),
    asset!("rejoin.js", JS),
    asset!("link.js", JS),
    asset!("download.js", JS),
    asset!("upload.js", JS),
    asset!("store.js", JS),
    asset!("wire.js", JS),
    asset!("crypto.js", JS),
    asset!("vendor.js", JS),
    asset!("style.css", CSS),
    asset!("icon.svg", SVG),
];

/// An HTTP answer: the status line and headers ([`Response::head`]), then `body` unless
/// the request was `HEAD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Cow<'static, [u8]>,
    /// A `HEAD` request: the headers of the `GET` answer (its Content-Length too), no body.
    pub head_only: bool,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: &'static [u8]) -> Self {
        Response {
            status,
            content_type,
            body: Cow::Borrowed(body),
            head_only: false,
        }
    }

    pub fn text(status: u16, body: &'static str) -> Self {
        Self::new(status, TEXT, body.as_bytes())
    }

    /// A `200` whose body is made per request (`/metrics`).
    pub fn generated(content_type: &'static str, body: String, head_only: bool) -> Self {
        Response {
            status: 200,
            content_type,
            body: Cow::Owned(body.into_bytes()),
            head_only,
        }
    }

    /// The same answer for a `HEAD` request (no body) when `head_only`.
    pub fn for_head(self, head_only: bool) -> Self {
        Response { head_only, ..self }
    }

    /// The answer to a request head that does not parse or is too long.
    pub fn bad_request() -> Self {
        Self::text(400, "bad request\n")
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            503 => "Service Unavailable",
            _ => "",
        }
    }

    /// The header fields, in the order they are sent.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("Content-Type", self.content_type.to_string()),
            ("Content-Length", self.body.len().to_string()),
            ("Cache-Control", "no-cache".to_string()),
            ("X-Content-Type-Options", "nosniff".to_string()),
            ("Referrer-Policy", "no-referrer".to_string()),
            ("Cross-Origin-Opener-Policy", "same-origin".to_string()),
        ];
        if self.content_type == HTML {
            headers.push(("Content-Security-Policy", CSP.to_string()));
        }
        if self.status == 405 {
            headers.push(("Allow", "GET, HEAD".to_string()));
        }
        headers.push(("Connection", "close".to_string()));
        headers
    }

    /// The status line and the header fields, ending with the empty line.
    pub fn head(&self) -> String {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason());
        for (name, value) in self.headers() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head
    }

    /// What follows the head: the body, or nothing for `HEAD`.
    pub fn payload(&self) -> &[u8] {
        if self.head_only { &[] } else { &self.body }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// The WebSocket upgrade: the handshake goes on with the request replayed.
    Upgrade,
    /// One answer, then the connection is closed.
    Answer(Response),
    /// `/readyz`: `200` while the server accepts joins, else `503` (the connection task
    /// knows which); a `HEAD` request when `head_only`.
    Ready { head_only: bool },
    /// `/metrics`: the server's metrics in the Prometheus text format.
    Metrics { head_only: bool },
}

/// Whether the header fields hold `Upgrade: websocket` (names and the token compared
/// case-insensitively; the token may be one of a list).
fn wants_websocket(headers: &[httparse::Header<'_>]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"websocket"))
}

/// The answer to a parsed request: pure, no I/O. The query string (and a fragment, which
/// browsers never send) of `target` is ignored.
pub(crate) fn route(method: &str, target: &str, headers: &[httparse::Header<'_>]) -> Route {
    if wants_websocket(headers) {
        return Route::Upgrade;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::Answer(Response::text(405, "method not allowed\n")),
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let path = if path == "/" { "/index.html" } else { path };
    if path == "/readyz" {
        return Route::Ready { head_only };
    }
    if path == "/metrics" {
        return Route::Metrics { head_only };
    }
    let response = if path == "/healthz" {
        Response::text(200, "ok\n")
    } else if let Some(asset) = ASSETS.iter().find(|a| a.path == path) {
        Response::new(200, asset.content_type, asset.body)
    } else {
        Response::text(404, "not found\n")
    };
    Route::Answer(Response {
        head_only,
        ..response
    })
}

/// Whether `bytes` hold the end of a request head: an empty line (`\n\n` or `\n\r\n`,
/// the line ends httparse accepts).
fn holds_head_end(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

/// What the bytes read so far make of the request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Head {
    /// Not complete yet.
    Partial,
    /// Complete (or refused): what it asks for.
    Done(Route),
}

/// Parse the request head at the start of `buf`; pure.
pub(crate) fn parse_head(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            Head::Done(Route::Answer(Response::bad_request()))
        }
        Ok(httparse::Status::Partial) => Head::Partial,
        Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
            (Some(method), Some(target)) => Head::Done(route(method, target, request.headers)),
            _ => Head::Done(Route::Answer(Response::bad_request())),
        },
        Err(_) => Head::Done(Route::Answer(Response::bad_request())),
    }
}

/// Read a request head from `stream` (at most [`MAX_HEAD`] bytes): the bytes read (the
/// head, and whatever came with it) and what the request asks for. `None` when the
/// client closes the connection first.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> io::Result<Option<(Vec<u8>, Route)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let room = MAX_HEAD - buf.len();
        if room == 0 {
            return Ok(Some((buf, Route::Answer(Response::bad_request()))));
        }
        let want = room.min(chunk.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        // An empty line may straddle the previous read: look 2 bytes back.
        let from = buf.len().saturating_sub(2);
        let first = buf.is_empty();
        buf.extend_from_slice(&chunk[..n]);
        // What is not HTTP at all (a TLS ClientHello sent to a plain port) is refused on
        // its first bytes, not after a wait for an empty line that never comes.
        if first && let Head::Done(route) = parse_head(&buf) {
            return Ok(Some((buf, route)));
        }
        // Otherwise parsed at most once per read, and only once the head can be complete;
        // a too long head is refused without parsing.
        if holds_head_end(&buf[from..]) {
            if let Head::Done(route) = parse_head(&buf) {
                return Ok(Some((buf, route)));
            }
        } else if buf.len() >= MAX_HEAD {
            return Ok(Some((buf, Route::Answer(Response::bad_request()))));
        }
    }
}

/// Send `response`, close the sending side, and read (and drop) what the client still
/// sends for a moment, so that closing does not reset the connection.
pub(crate) async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    response: &Response,
) -> io::Result<()> {
    stream.write_all(response.head().as_bytes()).await?;
    stream.write_all(response.payload()).await?;
    stream.flush().await?;
    // With TLS: close_notify, then FIN.
    stream.shutdown().await?;
    let mut scratch = [0u8; 2048];
    let mut dropped = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while dropped < MAX_LINGER_BYTES {
            match stream.read(&mut scratch).await {
                Ok(n @ 1..) => dropped += n,
                _ => break,
            }
        }
    })
    .await;
    Ok(())
}

/// A stream whose reads return `prefix` first, then the inner stream's bytes; writes go
/// to the inner stream. For the WebSocket handshake to read the request head again.
///
/// (tokio's `AsyncReadExt::chain` chains readers only; `tokio::io::join` of a chain over
/// a `split` read half and the write half would work, at the cost of a lock on every
/// read and write.)
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    /// Bytes of `prefix` already read.
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = this.prefix.get(this.pos..).unwrap_or_default();
        if rest.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.pos += n;
        if this.pos >= this.prefix.len() {
            // Replayed: free it.
            this.prefix = Vec::new();
            this.pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    fn answer_of(method: &str, target: &str) -> Response {
        match route(method, target, &[header("Host", "example.org")]) {
            Route::Answer(r) => r,
            other => panic!("{method} {target}: {other:?}"),
        }
    }

    fn asset(path: &str) -> &'static Asset {
        ASSETS
            .iter()
            .find(|a| a.path == path)
            .unwrap_or_else(|| panic!("no asset {path}"))
    }

    #[test]
    fn route_root_and_index_html_serve_index_with_csp() {
        for target in ["/", "/index.html", "/?x=1", "/index.html?a=b&c", "/#frag"] {
            let r = answer_of("GET", target);
            assert_eq!(r.status, 200, "{target}");
            assert_eq!(r.content_type, "text/html; charset=utf-8");
            assert_eq!(&*r.body, include_bytes!("../web/index.html"));
            assert!(!r.head_only);
            let headers = r.headers();
            assert!(headers.contains(&("Content-Security-Policy", CSP.to_string())));
        }
    }

    #[test]
    fn route_each_asset_served_with_its_type_and_no_csp() {
        for (path, ty, body) in [
            (
                "/app.js",
                "text/javascript; charset=utf-8",
                &include_bytes!("../web/app.js")[..],
            ),
            (
                "/vendor.js",
                "text/javascript; charset=utf-8",
                &include_bytes!("../web/vendor.js")[..],
            ),
            (
                "/style.css",
                "text/css; charset=utf-8",
                &include_bytes!("../web/style.css")[..],
            ),
            (
                "/icon.svg",
                "image/svg+xml",
                &include_bytes!("../web/icon.svg")[..],
            ),
        ] {
            let r = answer_of("GET", path);
            assert_eq!(
                (r.status, r.content_type, &*r.body),
                (200, ty, body),
                "{path}"
            );
            assert_eq!(asset(path).body, body);
            assert!(
                r.headers()
                    .iter()
                    .all(|(n, _)| *n != "Content-Security-Policy"),
                "{path}"
            );
        }
    }

    #[test]
    fn route_healthz_answers_ok_text() {
        let r = answer_of("GET", "/healthz?probe=1");
        assert_eq!(
            (r.status, r.content_type, &*r.body),
            (200, "text/plain; charset=utf-8", &b"ok\n"[..])
        );
    }

    #[test]
    fn route_readyz_and_metrics_are_left_to_the_connection() {
        let h = [header("Host", "example.org")];
        assert_eq!(
            route("GET", "/readyz?x=1", &h),
            Route::Ready { head_only: false }
        );
        assert_eq!(
            route("HEAD", "/readyz", &h),
            Route::Ready { head_only: true }
        );
        assert_eq!(
            route("GET", "/metrics", &h),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route("HEAD", "/metrics", &h),
            Route::Metrics { head_only: true }
        );
        assert!(matches!(route("POST", "/metrics", &h), Route::Answer(r) if r.status == 405));
        assert_eq!(
            route("GET", "/readyz/", &h),
            Route::Answer(Response::text(404, "not found\n"))
        );
    }

    #[test]
    fn route_unknown_paths_get_404() {
        for target in [
            "/x",
            "/index.htm",
            "/INDEX.HTML",
            "//",
            "/app.js/",
            "/web/app.js",
            "/%2e",
            "*",
            "http://example.org/",
            "",
        ] {
            assert_eq!(answer_of("GET", target).status, 404, "{target:?}");
        }
    }

    #[test]
    fn route_other_methods_get_405_with_allow() {
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "get", "head", "CONNECT"] {
            let r = answer_of(method, "/");
            assert_eq!(r.status, 405, "{method}");
            assert!(
                r.headers().contains(&("Allow", "GET, HEAD".to_string())),
                "{method}"
            );
        }
        assert!(
            answer_of("GET", "/")
                .headers()
                .iter()
                .all(|(n, _)| *n != "Allow")
        );
    }

    #[test]
    fn route_head_has_get_headers_and_no_payload() {
        let get = answer_of("GET", "/app.js");
        let head = answer_of("HEAD", "/app.js");
        assert!(head.head_only);
        assert_eq!(head.headers(), get.headers());
        assert_eq!(head.payload(), b"");
        assert_eq!(get.payload(), &*get.body);
        let missing = answer_of("HEAD", "/nope");
        assert_eq!((missing.status, missing.payload()), (404, &b""[..]));
    }

    #[test]
    fn route_upgrade_websocket_header_upgrades_on_any_path_and_method() {
        for (target, value) in [
            ("/", "websocket"),
            ("/x", "WebSocket"),
            ("/index.html", " websocket "),
            ("/healthz", "h2c, websocket"),
            ("/?q", "WEBSOCKET"),
        ] {
            assert_eq!(
                route("GET", target, &[header("UPGRADE", value)]),
                Route::Upgrade,
                "{target} {value:?}"
            );
        }
        // tungstenite refuses a non-GET upgrade, as before.
        assert_eq!(
            route("POST", "/", &[header("upgrade", "websocket")]),
            Route::Upgrade
        );
        for value in ["websockets", "h2c", "web socket", ""] {
            assert!(
                matches!(route("GET", "/", &[header("Upgrade", value)]), Route::Answer(r) if r.status == 200),
                "{value:?}"
            );
        }
        // The token in another header does not count.
        assert!(matches!(
            route("GET", "/", &[header("Connection", "websocket")]),
            Route::Answer(_)
        ));
    }

    #[test]
    fn response_head_has_status_line_headers_and_empty_line() {
        let head = answer_of("GET", "/").head();
        let body_len = include_bytes!("../web/index.html").len();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        for line in [
            "Content-Type: text/html; charset=utf-8",
            &format!("Content-Length: {body_len}"),
            "Cache-Control: no-cache",
            "X-Content-Type-Options: nosniff",
            "Referrer-Policy: no-referrer",
            "Cross-Origin-Opener-Policy: same-origin",
            &format!("Content-Security-Policy: {CSP}"),
            "Connection: close",
        ] {
            assert!(head.contains(&format!("\r\n{line}\r\n")), "{line}: {head}");
        }
        let not_found = answer_of("GET", "/x").head();
        assert!(not_found.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(
            answer_of("PUT", "/")
                .head()
                .starts_with("HTTP/1.1 405 Method Not Allowed\r\n")
        );
        assert!(
            Response::bad_request()
                .head()
                .starts_with("HTTP/1.1 400 Bad Request\r\n")
        );
    }

    #[test]
    fn parse_head_partial_complete_and_invalid() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n"), Head::Partial);
        assert!(matches!(
            parse_head(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"),
            Head::Done(Route::Answer(r)) if &*r.body == b"ok\n"
        ));
        assert_eq!(
            parse_head(b"GET /x HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
            Head::Done(Route::Upgrade)
        );
        // Bare line feeds, as httparse (and so tungstenite) takes them.
        assert!(matches!(
            parse_head(b"HEAD / HTTP/1.0\n\n"),
            Head::Done(Route::Answer(r)) if r.head_only
        ));
        for bad in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"G\0T / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(bad),
                Head::Done(Route::Answer(Response::bad_request())),
                "{bad:?}"
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            parse_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Head::Done(Route::Answer(Response::bad_request()))
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(
            parse_head(long.as_bytes()),
            Head::Done(Route::Answer(Response::bad_request()))
        );
    }

    #[test]
    fn holds_head_end_finds_crlf_and_lf_empty_lines() {
        assert!(holds_head_end(b"a\r\n\r\n"));
        assert!(holds_head_end(b"a\n\n"));
        assert!(holds_head_end(b"\n\r\n"));
        assert!(!holds_head_end(b"a\r\nb\r\n"));
        assert!(!holds_head_end(b"\r\n\r"));
        assert!(!holds_head_end(b""));
    }

    /// A reader that returns the given pieces, one per read, then EOF.
    struct Pieces(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if let Some(mut piece) = this.0.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    this.0.push_front(piece.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    fn pieces(parts: &[&[u8]]) -> Pieces {
        Pieces(parts.iter().map(|p| p.to_vec()).collect())
    }

    #[tokio::test]
    async fn read_head_across_reads_keeps_bytes_after_the_head() {
        let mut r = pieces(&[b"GET /app.js HTTP/1.1\r\nHost: a\r", b"\n\r", b"\nextra"]);
        let (bytes, route) = read_head(&mut r).await.unwrap().unwrap();
        assert_eq!(bytes, b"GET /app.js HTTP/1.1\r\nHost: a\r\n\r\nextra");
        assert!(matches!(route, Route::Answer(a) if &*a.body == asset("/app.js").body));
    }

    #[tokio::test]
    async fn read_head_eof_before_the_end_is_none() {
        let mut r = pieces(&[b"GET / HTTP/1.1\r\n"]);
        assert_eq!(read_head(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn read_head_tls_client_hello_is_400_on_its_first_bytes() {
        // A TLS record header and the start of a ClientHello, with no empty line: were
        // the head awaited, the stream's end would give `None`.
        let mut r = pieces(&[&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]]);
        let (_, route) = read_head(&mut r).await.unwrap().unwrap();
        assert_eq!(route, Route::Answer(Response::bad_request()));
    }

    #[tokio::test]
    async fn read_head_over_8_kib_is_400_without_reading_more() {
        let big = vec![b'a'; 3 * MAX_HEAD];
        let mut r = pieces(&[b"GET / HTTP/1.1\r\nX: ", &big]);
        let (bytes, route) = read_head(&mut r).await.unwrap().unwrap();
        assert_eq!(bytes.len(), MAX_HEAD);
        assert_eq!(route, Route::Answer(Response::bad_request()));
        // A head that ends exactly at the bound is served.
        let head = b"GET / HTTP/1.1\r\nX: ";
        let mut exact = head.to_vec();
        exact.resize(MAX_HEAD - 4, b'a');
        exact.extend_from_slice(b"\r\n\r\n");
        let mut r = pieces(&[&exact]);
        let (_, route) = read_head(&mut r).await.unwrap().unwrap();
        assert!(matches!(route, Route::Answer(a) if a.status == 200));
    }

    #[tokio::test]
    async fn prefixed_replays_prefix_then_inner_and_writes_through() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut s = Prefixed::new(b"head".to_vec(), server);
        client.write_all(b"tail").await.unwrap();
        let mut got = [0u8; 8];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"headtail");
        s.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
        // Small reads take the prefix piecewise.
        let (_c, server) = tokio::io::duplex(64);
        let mut s = Prefixed::new(b"abc".to_vec(), server);
        let mut one = [0u8; 2];
        assert_eq!(s.read(&mut one).await.unwrap(), 2);
        assert_eq!(&one, b"ab");
        assert_eq!(s.read(&mut one).await.unwrap(), 1);
        assert_eq!(one[0], b'c');
    }
}
