//! WebSocket client of the signaling server: joins a session (trying the servers of a
//! list in turn), then pumps frames between the socket and two channels owned by the
//! peer task; after a lost connection, [`rejoin`] gets the membership back on the
//! schedule of [`crate::proto::rejoin`].
//!
//! `wss://` runs over rustls (ring provider) and trusts the system's root certificates
//! plus those of the caller's CA file ([`JoinRequest::ca_file`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peershare_signaling::protocol::codes::SHUTTING_DOWN;
use peershare_signaling::protocol::{
    ClientMessage, IceServer, PROTOCOL_VERSION, PeerInfo, Resume, ServerMessage,
};
use tokio::sync::mpsc;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::error::TlsError;
use tokio_tungstenite::tungstenite::http::{Response, StatusCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::error::{Error, Result};
use crate::proto::rejoin::{Failure, Schedule};

/// How long joining may take before it counts as unreachable.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive period (the server's idle timeout is longer).
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// With nothing at all from the server for this long (every ping is answered), the
/// connection counts as lost: a network that changed under it may never reset it.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// What to join.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub session: Option<String>,
    pub create: bool,
    pub name: String,
    pub password: Option<String>,
    /// We use only TURN relay candidates (told to the other members, see
    /// [`PeerInfo::relay_only`]).
    pub relay_only: bool,
    /// CA certificates (PEM) trusted for a `wss://` server besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The membership to get back (`join.resume`): our client ID and the last
    /// `welcome.resume_token`.
    pub resume: Option<Resume>,
}

/// A joined session.
#[derive(Debug)]
pub struct SignalingSession {
    /// The server's URL (normalized, see [`normalize_url`]).
    pub server: String,
    pub session: String,
    pub client_id: String,
    pub peers: Vec<PeerInfo>,
    pub ice_servers: Vec<IceServer>,
    /// What a later `join` carries in `resume` to get `client_id` back.
    pub resume_token: Option<String>,
    /// Frames to send.
    pub tx: mpsc::Sender<ClientMessage>,
    /// Frames received after the welcome; closed when the socket is gone.
    pub rx: mpsc::Receiver<ServerMessage>,
    /// The task that writes `tx`'s frames to the socket: it ends once it has sent a
    /// `leave` (or the socket is gone), so awaiting it makes sure what was queued before
    /// leaving reached the server.
    pub pump: Option<tokio::task::JoinHandle<()>>,
}

/// Normalize a server address: `ws://h:p`, `wss://…`, `http(s)://…` or a bare `h:p`.
pub fn normalize_url(server: &str) -> String {
    let s = server.trim();
    if let Some(rest) = s.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = s.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if s.starts_with("ws://") || s.starts_with("wss://") {
        s.to_string()
    } else {
        format!("ws://{s}")
    }
}

/// Whether `text` is a JSON object whose `type` is a string this client does not know.
fn is_unknown_frame_type(text: &str) -> bool {
    const KNOWN: &[&str] = &[
        "welcome",
        "peer-joined",
        "peer-left",
        "signal",
        "error",
        "pong",
        "ice-servers",
    ];
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| {
        v.get("type")
            .and_then(|t| t.as_str())
            .is_some_and(|t| !KNOWN.contains(&t))
    })
}

/// A join that failed: why, and how long the server asked to wait before the next
/// attempt (the `retry_after_ms` of a `7012` or `7017`).
#[derive(Debug)]
struct JoinFailed {
    error: Error,
    retry_after: Option<Duration>,
}

impl From<Error> for JoinFailed {
    fn from(error: Error) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// Connect to `url` and join.
pub async fn connect(url: &str, join: JoinRequest) -> Result<SignalingSession> {
    attempt(url, join, JOIN_TIMEOUT).await.map_err(|f| f.error)
}

/// Connect to the first of `servers` that takes the join. A server that cannot be
/// reached, or that answers 7012 (draining; also its `503 draining` answer to the
/// upgrade) or 7017 (unavailable), passes the join on to the next one; any
/// other refusal (7006, 7007, …) is the answer. When every server failed, the answer is
/// the last 7012 or 7017, or, when none was reached, 1180 naming each.
pub async fn connect_any(servers: &[String], join: JoinRequest) -> Result<SignalingSession> {
    let mut unreachable = Vec::new();
    let mut last = None;
    for url in servers {
        match attempt(url, join.clone(), JOIN_TIMEOUT).await {
            Ok(joined) => return Ok(joined),
            Err(f) if Failure::of(f.error.code()) == Failure::Refused => return Err(f.error),
            Err(f) => {
                tracing::info!(%url, error = %f.error, "signaling server not available; trying the next");
                match f.error {
                    Error::NotConnected(why) => unreachable.push(why),
                    other => last = Some(other),
                }
            }
        }
    }
    match (last, unreachable.len()) {
        (Some(e), _) => Err(e),
        (None, 0) => Err(Error::InvalidArgument("no signaling server given".into())),
        (None, 1) => Err(Error::NotConnected(unreachable.remove(0))),
        (None, _) => Err(Error::NotConnected(unreachable.join("; "))),
    }
}

/// Get back to signaling after a lost connection: join `join` (with its `resume`)
/// through `servers`, starting with `servers[current]`, on the schedule of
/// [`Schedule`] (the first attempt after `hint`, the wait a draining server asked for),
/// for at most `window` after the call. The joined session, or the error that ended
/// the attempts: a refusal (7006, 7007, …), or 1180 once the window has passed.
pub async fn rejoin(
    servers: &[String],
    current: usize,
    join: JoinRequest,
    window: Duration,
    hint: Option<Duration>,
) -> Result<SignalingSession> {
    retry_joins(
        servers,
        (current, window, hint),
        |url, limit| {
            let join = join.clone();
            async move { attempt(&url, join, limit).await }
        },
        rand::random,
    )
    .await
}

/// [`rejoin`]'s loop over any attempt: `attempt(url, limit)` joins through `url` within
/// `limit`; `unit` draws the jitter (a number in `[0, 1)`).
async fn retry_joins<T, A, F>(
    servers: &[String],
    (current, window, hint): (usize, Duration, Option<Duration>),
    mut attempt: A,
    mut unit: impl FnMut() -> f64,
) -> Result<T>
where
    A: FnMut(String, Duration) -> F,
    F: std::future::Future<Output = Result<T, JoinFailed>>,
{
    let started = tokio::time::Instant::now();
    let deadline = started + window;
    let mut schedule = Schedule::new(servers.len(), current, window);
    let mut next = schedule.first(hint);
    let mut last_error = None;
    while let Some(a) = next {
        tokio::time::sleep(a.delay).await;
        let Some(url) = servers.get(a.server) else {
            break;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match attempt(url.clone(), JOIN_TIMEOUT.min(left)).await {
            Ok(joined) => return Ok(joined),
            Err(f) => {
                tracing::info!(%url, error = %f.error, "rejoining signaling failed");
                let failure = Failure::of(f.error.code());
                if failure == Failure::Refused {
                    return Err(f.error);
                }
                next = schedule.after(failure, started.elapsed(), f.retry_after, unit());
                last_error = Some(f.error);
            }
        }
    }
    let why = last_error.map_or_else(String::new, |e| format!(" (last: {e})"));
    Err(Error::NotConnected(format!(
        "could not get back to signaling within {} s{why}",
        window.as_secs_f64()
    )))
}

/// One attempt to connect to `url` and join, within `limit`.
async fn attempt(
    url: &str,
    join: JoinRequest,
    limit: Duration,
) -> Result<SignalingSession, JoinFailed> {
    let url = normalize_url(url);
    tokio::time::timeout(limit, connect_inner(&url, join))
        .await
        .map_err(|_| {
            JoinFailed::from(Error::NotConnected(format!(
                "signaling server {url} did not answer in time"
            )))
        })?
}

/// The system's root certificates, loaded once; certificates that fail to load are
/// skipped (logged).
fn system_roots() -> &'static rustls::RootCertStore {
    static ROOTS: OnceLock<rustls::RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "cannot load system root certificates");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system root certificates");
        roots
    })
}

/// The CA certificates of `path` (PEM); [`Error::InvalidArgument`] if it cannot be read or
/// holds none.
fn load_ca_file(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    peershare_signaling::tls::load_certificates(path, "CA file")
        .map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// The `wss://` client configuration: rustls with ring, trusting the system's roots and
/// the certificates of `ca_file`.
fn tls_client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = system_roots().clone();
    if let Some(path) = ca_file {
        for cert in load_ca_file(path)? {
            roots.add(cert).map_err(|e| {
                Error::InvalidArgument(format!(
                    "CA file {}: unusable certificate: {e}",
                    path.display()
                ))
            })?;
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(peershare_signaling::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidArgument(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The TLS connector for `url` (`None` for `ws://`). The CA file is checked for every URL,
/// so that a wrong one is reported even before it is needed.
async fn connector_for(url: &str, ca_file: Option<PathBuf>) -> Result<Option<Connector>> {
    let tls = url.starts_with("wss://");
    if !tls && ca_file.is_none() {
        return Ok(None);
    }
    // Reads files (the system's roots once, the CA file).
    let config = tokio::task::spawn_blocking(move || {
        if tls {
            tls_client_config(ca_file.as_deref()).map(Some)
        } else {
            ca_file
                .as_deref()
                .map(load_ca_file)
                .transpose()
                .map(|_| None)
        }
    })
    .await
    .map_err(|e| Error::InvalidArgument(format!("loading TLS certificates: {e}")))??;
    Ok(config.map(Connector::Rustls))
}

/// What a failed TLS handshake means, for people.
fn tls_failure(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "TLS: certificate not trusted (pass its CA with --ca)".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidForNameContext {
            expected,
            presented,
        }) => format!(
            "TLS: certificate not valid for {} (it names {})",
            expected.to_str(),
            presented.join(", ")
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName) => {
            "TLS: certificate not valid for this host name".into()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "TLS: certificate expired".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "TLS: certificate not valid yet".into()
        }
        rustls::Error::InvalidCertificate(other) => format!("TLS: invalid certificate ({other})"),
        rustls::Error::AlertReceived(alert) => {
            format!("TLS: the server refused the handshake ({alert:?})")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("TLS: handshake failed, is it a wss:// server? ({e})")
        }
        other => format!("TLS: handshake failed ({other})"),
    }
}

/// The body of a signaling server's answer to an upgrade while it drains
/// (docs/PROTOCOL.md, "Transport").
const DRAIN_BODY: &[u8] = b"draining\n";

/// Whether `response`, the answer to our upgrade, is a draining signaling server's: `503`,
/// `text/plain`, the body `draining\n`. The handshake keeps only the part of the body
/// that came with the head (maybe none of it): the part present must begin the body, and
/// `Content-Length` must be its length. Any other `503` (a server over its connection
/// caps answers one with no body, a proxy its own) is not a drain.
fn is_drain_answer(response: &Response<Option<Vec<u8>>>) -> bool {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let length = header("content-length").and_then(|l| l.parse::<usize>().ok());
    let received = response.body().as_deref().unwrap_or_default();
    response.status() == StatusCode::SERVICE_UNAVAILABLE
        && header("content-type").is_some_and(|t| t.starts_with("text/plain"))
        && length == Some(DRAIN_BODY.len())
        && DRAIN_BODY.starts_with(received)
}

/// The error of a failed connection to `url`: 7012 when a draining server answered the
/// upgrade (as if it had joined us and sent `7012`, without `retry_after_ms`), otherwise
/// [`Error::NotConnected`], naming a TLS failure's cause.
fn connect_error(url: &str, e: WsError) -> Error {
    if let WsError::Http(response) = &e
        && is_drain_answer(response)
    {
        return Error::from_remote(
            SHUTTING_DOWN,
            format!("signaling server {url} is draining (it answered the upgrade with 503)"),
        );
    }
    let tls = match &e {
        WsError::Io(io) => match io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(r) => Some(tls_failure(r)),
            // tokio-rustls: the connection ended during the handshake.
            None if url.starts_with("wss://")
                && io.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                Some("TLS: the server closed the connection during the handshake (is it a wss:// server?)".into())
            }
            None => None,
        },
        WsError::Tls(TlsError::Rustls(r)) => Some(tls_failure(r)),
        WsError::Tls(TlsError::InvalidDnsName) => {
            Some("TLS: the host is not a valid server name".into())
        }
        _ => None,
    };
    let detail = tls.unwrap_or_else(|| e.to_string());
    Error::NotConnected(format!("cannot reach signaling server {url}: {detail}"))
}

async fn connect_inner(url: &str, join: JoinRequest) -> Result<SignalingSession, JoinFailed> {
    let connector = connector_for(url, join.ca_file).await?;
    // TCP_NODELAY (`disable_nagle`): signaling is small frames sent back to back (a sealed
    // offer or answer, then each candidate). With Nagle's algorithm a frame written while
    // the previous one is unacknowledged waits for that ACK, which the server delays up to
    // 40 ms: two such waits made up most of join → first byte on loopback
    // (docs/PERFORMANCE.md, "Connection setup"). The server sets it on its side too.
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector)
        .await
        .map_err(|e| connect_error(url, e))?;
    let frame = ClientMessage::Join {
        version: PROTOCOL_VERSION,
        session: join.session,
        name: join.name,
        password: join.password,
        create: join.create,
        relay_only: join.relay_only,
        resume: join.resume,
    };
    send_frame(&mut ws, &frame).await?;
    let welcome = loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| Error::NotConnected("signaling server closed the connection".into()))?
            .map_err(|e| Error::NotConnected(format!("signaling: {e}")))?;
        let Message::Text(text) = msg else { continue };
        match serde_json::from_str::<ServerMessage>(&text) {
            Ok(ServerMessage::Error {
                code,
                message,
                retry_after_ms,
            }) => {
                return Err(JoinFailed {
                    error: Error::from_remote(code, message),
                    retry_after: retry_after_ms.map(Duration::from_millis),
                });
            }
            Ok(w @ ServerMessage::Welcome { .. }) => break w,
            Ok(_) => continue,
            // A frame type of a newer server: ignored, as docs/PROTOCOL.md asks.
            Err(_) if is_unknown_frame_type(&text) => continue,
            Err(e) => {
                return Err(Error::NotConnected(format!("bad frame from server: {e}")).into());
            }
        }
    };
    let ServerMessage::Welcome {
        session,
        client_id,
        peers,
        ice_servers,
        resume_token,
    } = welcome
    else {
        return Err(Error::NotConnected("no welcome".into()).into());
    };
    let (out_tx, out_rx) = mpsc::channel(256);
    let (in_tx, in_rx) = mpsc::channel(256);
    let pump = tokio::spawn(pump(ws, out_rx, in_tx));
    Ok(SignalingSession {
        server: url.to_string(),
        session,
        client_id,
        peers,
        ice_servers,
        resume_token,
        tx: out_tx,
        rx: in_rx,
        pump: Some(pump),
    })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send_frame(ws: &mut Ws, frame: &ClientMessage) -> Result<()> {
    let text = serde_json::to_string(frame)
        .map_err(|e| Error::InvalidArgument(format!("encoding frame: {e}")))?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| Error::NotConnected(format!("signaling send: {e}")))
}

async fn pump(
    mut ws: Ws,
    mut out_rx: mpsc::Receiver<ClientMessage>,
    in_tx: mpsc::Sender<ServerMessage>,
) {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(frame) => {
                    let leaving = matches!(frame, ClientMessage::Leave);
                    if send_frame(&mut ws, &frame).await.is_err() {
                        break;
                    }
                    if leaving {
                        // The server answers `leave` with a Close once it has handled
                        // every frame sent before it (relayed our last signals).
                        while let Some(Ok(msg)) = ws.next().await {
                            if matches!(msg, Message::Close(_)) {
                                break;
                            }
                        }
                        break;
                    }
                }
                None => {
                    let _ = send_frame(&mut ws, &ClientMessage::Leave).await;
                    break;
                }
            },
            incoming = ws.next() => match incoming.inspect(|_| heard = tokio::time::Instant::now()) {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(msg) => {
                        if in_tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!("ignoring unparsable signaling frame: {e}"),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if heard.elapsed() >= SILENCE_LIMIT {
                    tracing::info!("nothing from the signaling server for {SILENCE_LIMIT:?}; the connection is lost");
                    break;
                }
                if send_frame(&mut ws, &ClientMessage::Ping).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = ws.close(None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_url_accepts_bare_and_http_forms() {
        assert_eq!(normalize_url("127.0.0.1:9"), "ws://127.0.0.1:9");
        assert_eq!(normalize_url("ws://h:1"), "ws://h:1");
        assert_eq!(normalize_url("https://h"), "wss://h");
    }

    #[test]
    fn tls_failure_names_untrusted_and_wrong_name_certificates() {
        use rustls::CertificateError as C;
        let untrusted = rustls::Error::InvalidCertificate(C::UnknownIssuer);
        assert_eq!(
            tls_failure(&untrusted),
            "TLS: certificate not trusted (pass its CA with --ca)"
        );
        let wrong_name = rustls::Error::InvalidCertificate(C::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("a.example").unwrap(),
            presented: vec!["b.example".into()],
        });
        assert_eq!(
            tls_failure(&wrong_name),
            "TLS: certificate not valid for a.example (it names b.example)"
        );
    }

    #[test]
    fn connect_error_finds_the_rustls_error_inside_an_io_error() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let e = connect_error("wss://h:1", WsError::Io(io));
        assert_eq!(e.code(), crate::codes::NOT_CONNECTED);
        assert!(
            e.to_string()
                .contains("wss://h:1: TLS: certificate not trusted"),
            "{e}"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = connect_error("wss://h:1", WsError::Io(refused));
        assert!(!e.to_string().contains("TLS"), "{e}");
    }

    /// An answer to the upgrade: `status`, `headers`, and the part of the body that came
    /// with the head.
    fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Response<Option<Vec<u8>>> {
        let mut b = Response::builder().status(status);
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        b.body(Some(body.to_vec())).unwrap()
    }

    #[test]
    fn connect_error_drain_answer_503_is_7012_other_answers_stay_1180() {
        // What the server sends while draining (signaling/src/web.rs), with all, part or
        // none of its body read along with the head.
        let drain = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", "9"),
            ("Cache-Control", "no-cache"),
            ("Connection", "close"),
        ];
        for body in [&b"draining\n"[..], b"drain", b""] {
            let e = connect_error(
                "ws://h:1",
                WsError::Http(Box::new(answer(503, &drain, body))),
            );
            assert_eq!(e.code(), SHUTTING_DOWN, "{body:?}");
            assert_eq!(Failure::of(e.code()), Failure::Retry);
            assert!(e.to_string().contains("ws://h:1"), "{e}");
        }
        let not_drains = [
            // Over the server's connection caps: no body.
            answer(
                503,
                &[
                    ("Connection", "close"),
                    ("Content-Length", "0"),
                    ("Retry-After", "10"),
                ],
                b"",
            ),
            // Another body of the same length; another text; another type; another status.
            answer(503, &drain, b"elsewhere"),
            answer(
                503,
                &[("Content-Type", "text/plain"), ("Content-Length", "10")],
                b"not ready\n",
            ),
            answer(
                503,
                &[("Content-Type", "text/html"), ("Content-Length", "9")],
                b"",
            ),
            answer(502, &drain, b"draining\n"),
        ];
        for response in not_drains {
            let status = response.status();
            let e = connect_error("ws://h:1", WsError::Http(Box::new(response)));
            assert_eq!(e.code(), crate::codes::NOT_CONNECTED, "{status}");
        }
    }

    /// Runs `retry_joins` over `servers` with attempts that fail as `outcomes` says (in
    /// order; `Ok` joins), on a paused clock: each attempt's server and start after the
    /// loss (`URL +MSms`), and the result.
    async fn attempts(
        servers: &[&str],
        (current, window, hint): (usize, Duration, Option<Duration>),
        outcomes: Vec<Result<(), (u16, Option<u64>)>>,
    ) -> (Vec<String>, Result<()>) {
        let servers: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
        let start = tokio::time::Instant::now();
        let log = std::cell::RefCell::new(Vec::new());
        let mut outcomes = outcomes.into_iter();
        let result = retry_joins(
            &servers,
            (current, window, hint),
            |url, _limit| {
                log.borrow_mut()
                    .push(format!("{url} +{}ms", start.elapsed().as_millis()));
                let outcome = outcomes.next().unwrap_or(Err((1180, None)));
                async move {
                    outcome.map_err(|(code, retry_after_ms)| JoinFailed {
                        error: Error::from_remote(code, "refused"),
                        retry_after: retry_after_ms.map(Duration::from_millis),
                    })
                }
            },
            || 1.0,
        )
        .await;
        (log.into_inner(), result)
    }

    #[tokio::test(start_paused = true)]
    async fn rejoin_draining_hint_delays_the_first_attempt_then_backs_off() {
        let (log, result) = attempts(
            &["ws://a:1"],
            (
                0,
                Duration::from_secs(30),
                Some(Duration::from_millis(2315)),
            ),
            vec![Err((1180, None)), Err((7012, Some(40))), Ok(())],
        )
        .await;
        assert!(result.is_ok());
        // At the hint; then the backoff's 0.25 s; then the 40 ms a draining server asked.
        assert_eq!(
            log,
            ["ws://a:1 +2315ms", "ws://a:1 +2565ms", "ws://a:1 +2605ms"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rejoin_two_servers_alternate_and_give_up_with_1180_after_the_window() {
        let (log, result) = attempts(
            &["ws://a:1", "ws://b:2"],
            (1, Duration::from_secs(1), None),
            vec![],
        )
        .await;
        let err = result.expect_err("never joins");
        assert_eq!(err.code(), crate::codes::NOT_CONNECTED);
        assert_eq!(
            log,
            [
                "ws://b:2 +0ms",
                "ws://a:1 +0ms",
                "ws://b:2 +250ms",
                "ws://a:1 +250ms",
                "ws://b:2 +750ms",
                "ws://a:1 +750ms",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rejoin_refusal_ends_the_attempts_with_its_code() {
        let (log, result) = attempts(
            &["ws://a:1", "ws://b:2"],
            (0, Duration::from_secs(30), None),
            vec![Err((7017, Some(100))), Err((7006, None))],
        )
        .await;
        assert_eq!(result.expect_err("refused").code(), 7006);
        assert_eq!(log, ["ws://a:1 +0ms", "ws://b:2 +100ms"]);
    }

    #[test]
    fn unknown_frame_type_is_recognised_and_malformed_known_is_not() {
        assert!(is_unknown_frame_type(
            r#"{"type":"turn-credentials","ice_servers":[]}"#
        ));
        assert!(!is_unknown_frame_type(r#"{"type":"welcome"}"#));
        assert!(!is_unknown_frame_type("not json"));
        assert!(!is_unknown_frame_type(r#"{"kind":"x"}"#));
    }
}
