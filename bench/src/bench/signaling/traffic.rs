//! The load the signaling benchmark puts on the servers: the frames of a connection
//! setup, the clients that connect, join and exchange them, and what they record.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::measure::Samples;

pub(super) type Ws = WebSocketStream<TcpStream>;

/// About 3 KB of SDP as it travels in JSON (`\r\n` escaped).
pub(super) fn sdp() -> String {
    let mut s = String::from(
        "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\n\
         a=group:BUNDLE 0\\r\\na=msid-semantic: WMS\\r\\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\\r\\nc=IN IP4 0.0.0.0\\r\\n\
         a=ice-ufrag:abcd\\r\\na=ice-pwd:aaaabbbbccccddddeeeeffff\\r\\na=ice-options:trickle\\r\\n",
    );
    while s.len() < 2_900 {
        s.push_str(
            "a=fingerprint:sha-256 4F:1D:2A:0B:6E:33:91:C4:AA:57:12:9E:3B:7D:44:0C:E1:F0:88:21:\
             6A:BC:D3:05:17:9F:62:48:C0:3E:75:DA\\r\\n",
        );
    }
    s.push_str("a=setup:actpass\\r\\na=mid:0\\r\\na=sctp-port:5000\\r\\n");
    s
}

const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 203.0.113.7 53122 typ srflx \
raddr 192.168.1.20 rport 53122 generation 0 ufrag abcd network-cost 999";

/// What a pair member sends: the frame text for `to`, stamped `t` (µs since the start).
pub(super) fn frame(to: &str, kind: Kind, t: u64, sdp: &str) -> String {
    match kind {
        Kind::Offer | Kind::Answer => {
            let k = if kind == Kind::Offer {
                "offer"
            } else {
                "answer"
            };
            format!(
                r#"{{"type":"signal","to":"{to}","data":{{"kind":"{k}","t":{t},"sdp":"{sdp}"}}}}"#
            )
        }
        Kind::Candidate => format!(
            r#"{{"type":"signal","to":"{to}","data":{{"kind":"candidate","t":{t},"candidate":{{"candidate":"{CANDIDATE}","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}}}}}"#
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Offer,
    Answer,
    Candidate,
}

/// The stamp and kind of a relayed `signal` frame; `None` for any other frame.
pub(super) fn parse_signal(text: &str) -> Option<(u64, Kind)> {
    if !text.starts_with(r#"{"type":"signal""#) {
        return None;
    }
    let at = text.find(r#""t":"#)? + 4;
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    let t = text[at..at + digits].parse().ok()?;
    let kind = if text.contains(r#""kind":"offer""#) {
        Kind::Offer
    } else if text.contains(r#""kind":"answer""#) {
        Kind::Answer
    } else {
        Kind::Candidate
    };
    Some((t, kind))
}

/// A joined client: its socket, session, ID and resume token, and its partner's ID.
pub(super) struct Member {
    pub ws: Ws,
    pub session: String,
    pub id: String,
    pub token: String,
    pub partner: String,
    /// Its number among all members (picks its source address).
    pub slot: usize,
    /// The server closed the connection (it is left out of the saturation phase).
    pub lost: bool,
}

/// Source addresses the connections are spread over (127.0.0.2 …): with all of them on
/// one address, the kernel's search for a free ephemeral port (`__inet_hash_connect`)
/// grows with every connection and took most of the generator's time at 19,000.
const SOURCE_ADDRESSES: u32 = 64;

/// Connect from loopback source address number `i % SOURCE_ADDRESSES`, its port chosen
/// at `connect` (`IP_BIND_ADDRESS_NO_PORT`).
pub(super) async fn connect(url: &str, i: usize) -> anyhow::Result<Ws> {
    use std::os::fd::AsRawFd;
    let addr: std::net::SocketAddr = url.trim_start_matches("ws://").parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `one` (a c_int, its size given) during the call; the fd is
    // the socket's own.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let source = std::net::Ipv4Addr::from(0x7f00_0002 + (i as u32 % SOURCE_ADDRESSES));
    socket.bind((source, 0).into())?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    // Small read buffers, as the server's: tungstenite's default is 128 KiB per connection.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await?;
    Ok(ws)
}

/// The string value of `"key":"…"` in `text` (no escapes: session codes and client IDs
/// have none).
fn string_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = text[at..].find('"')?;
    Some(&text[at..at + len])
}

/// A join answered with an `error` frame.
#[derive(Debug)]
pub(super) struct Refused {
    pub code: u16,
    pub retry_after_ms: Option<u64>,
    text: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "join refused: {}", self.text)
    }
}

impl std::error::Error for Refused {}

/// What a `welcome` gave.
pub(super) struct Welcome {
    pub session: String,
    pub id: String,
    pub token: String,
}

/// Send a join (`session`: `None` creates one; `resume`: the ID and token of a membership
/// to get back), return the welcome. (Substring look-ups rather than a JSON parse: the
/// generator's work per join stays below the server's.)
pub(super) async fn join(
    ws: &mut Ws,
    session: Option<&str>,
    resume: Option<(&str, &str)>,
) -> anyhow::Result<Welcome> {
    let frame = match (session, resume) {
        (None, _) => r#"{"type":"join","version":2,"session":null,"name":"bench"}"#.to_string(),
        (Some(s), None) => {
            format!(r#"{{"type":"join","version":2,"session":"{s}","name":"bench"}}"#)
        }
        (Some(s), Some((id, token))) => format!(
            r#"{{"type":"join","version":2,"session":"{s}","name":"bench","resume":{{"id":"{id}","token":"{token}"}}}}"#
        ),
    };
    ws.send(Message::text(frame)).await?;
    loop {
        if let Message::Text(t) = ws.next().await.context("closed before welcome")?? {
            let t = t.as_str();
            if t.starts_with(r#"{"type":"welcome""#) {
                let field = |k: &str| {
                    string_field(t, k)
                        .map(str::to_string)
                        .context("welcome field")
                };
                return Ok(Welcome {
                    session: field("session")?,
                    id: field("client_id")?,
                    token: field("resume_token")?,
                });
            }
            if t.starts_with(r#"{"type":"error""#) {
                let v: serde_json::Value = serde_json::from_str(t).unwrap_or_default();
                return Err(Refused {
                    code: v["code"]
                        .as_u64()
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(0),
                    retry_after_ms: v["retry_after_ms"].as_u64(),
                    text: t.to_string(),
                }
                .into());
            }
        }
    }
}

/// Record one received frame.
pub(super) fn record(samples: &RefCell<Samples>, origin: Instant, text: &str) -> Option<Kind> {
    let mut s = samples.borrow_mut();
    match parse_signal(text) {
        Some((t, kind)) => {
            let now = origin.elapsed().as_micros() as u64;
            s.add(t, u32::try_from(now.saturating_sub(t)).unwrap_or(u32::MAX));
            Some(kind)
        }
        None => {
            if text.starts_with(r#"{"type":"error""#) {
                let code = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v["code"].as_u64())
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(0);
                s.error(code);
            } else if text.starts_with(r#"{"type":"peer-left""#) {
                s.left += 1;
            }
            None
        }
    }
}

/// One member in the active phase: the first member of a pair starts a setup at
/// `first`, then every `interval`; the second answers offers. Both send 10 candidates per
/// setup. Returns the member for the saturation phase, marked `lost` if its connection
/// ended (closed, reset, a failed write).
pub(super) async fn member_active(
    mut m: Member,
    first: Option<Duration>,
    interval: Duration,
    stop_at: tokio::time::Instant,
    origin: Instant,
    sdp: Rc<str>,
    samples: Rc<RefCell<Samples>>,
) -> Member {
    let mut next = first.map(|f| tokio::time::Instant::now() + f);
    match setups(&mut m, &mut next, interval, stop_at, origin, &sdp, &samples).await {
        Ok(()) => m,
        Err(_) => lose(m, &samples),
    }
}

/// The loop of [`member_active`] until `stop_at`; an error when the connection ends.
async fn setups(
    m: &mut Member,
    next: &mut Option<tokio::time::Instant>,
    interval: Duration,
    stop_at: tokio::time::Instant,
    origin: Instant,
    sdp: &str,
    samples: &RefCell<Samples>,
) -> anyhow::Result<()> {
    loop {
        let tick = next.unwrap_or(stop_at).min(stop_at);
        tokio::select! {
            () = tokio::time::sleep_until(tick) => {
                if tokio::time::Instant::now() >= stop_at {
                    return Ok(());
                }
                if let Some(n) = next.as_mut() {
                    *n += interval;
                    let t = origin.elapsed().as_micros() as u64;
                    m.ws.feed(Message::text(frame(&m.partner, Kind::Offer, t, sdp))).await?;
                    send_candidates(m, origin, sdp).await?;
                }
            }
            msg = m.ws.next() => {
                let msg = msg.context("closed")??;
                if let Message::Close(_) = msg {
                    bail!("closed");
                }
                if let Message::Text(text) = msg
                    && record(samples, origin, text.as_str()) == Some(Kind::Offer)
                {
                    let t = origin.elapsed().as_micros() as u64;
                    m.ws.feed(Message::text(frame(&m.partner, Kind::Answer, t, sdp))).await?;
                    send_candidates(m, origin, sdp).await?;
                }
            }
        }
    }
}

/// Count a connection the server closed (or reset).
pub(super) fn lose(mut m: Member, samples: &RefCell<Samples>) -> Member {
    let mut s = samples.borrow_mut();
    s.errors += 1;
    s.lost += 1;
    m.lost = true;
    m
}

pub(super) async fn send_candidates(
    m: &mut Member,
    origin: Instant,
    sdp: &str,
) -> anyhow::Result<()> {
    for _ in 0..10 {
        let t = origin.elapsed().as_micros() as u64;
        m.ws.feed(Message::text(frame(&m.partner, Kind::Candidate, t, sdp)))
            .await?;
    }
    m.ws.flush().await?;
    Ok(())
}

/// How long a connection stays silent before the frames of a phase count as drained.
const QUIET: Duration = Duration::from_millis(500);

/// One member in the saturation phase: sends `window` frames, then returns every frame it
/// receives to its partner, until `stop_at`.
pub(super) async fn member_bounce(
    mut m: Member,
    window: usize,
    stop_at: tokio::time::Instant,
    origin: Instant,
    sdp: Rc<str>,
    samples: Rc<RefCell<Samples>>,
) -> anyhow::Result<Member> {
    let kind_of = |i: usize| {
        if i.is_multiple_of(11) {
            Kind::Offer
        } else {
            Kind::Candidate
        }
    };
    for i in 0..window {
        let t = origin.elapsed().as_micros() as u64;
        m.ws.feed(Message::text(frame(&m.partner, kind_of(i), t, &sdp)))
            .await?;
    }
    m.ws.flush().await?;
    let _ = &m.id;
    loop {
        tokio::select! {
            // The connection stays open until every member has stopped (closing it
            // would turn the partner's frames in flight into 7008s), and what is still
            // in flight is read first, so that the next phase starts with empty queues.
            () = tokio::time::sleep_until(stop_at) => {
                while let Ok(Some(Ok(_))) = tokio::time::timeout(QUIET, m.ws.next()).await {}
                return Ok(m);
            }
            msg = m.ws.next() => {
                let Some(msg) = msg else {
                    return Ok(lose(m, &samples));
                };
                // This frame and every one already here: each goes back (the same size:
                // an offer stays SDP-sized), with one flush for all.
                let mut msg = Some(msg?);
                while let Some(current) = msg.take() {
                    if let Message::Text(text) = current
                        && let Some(kind) = record(&samples, origin, text.as_str())
                    {
                        let kind = if kind == Kind::Candidate { Kind::Candidate } else { Kind::Offer };
                        let t = origin.elapsed().as_micros() as u64;
                        m.ws.feed(Message::text(frame(&m.partner, kind, t, &sdp))).await?;
                    }
                    if let Some(Some(next)) = m.ws.next().now_or_never() {
                        msg = Some(next?);
                    }
                }
                m.ws.flush().await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_signal_reads_stamp_and_kind_in_any_key_order() {
        let sdp = sdp();
        let sent = frame("abc", Kind::Offer, 123_456, &sdp);
        // As relayed byte for byte ...
        let relayed = sent.replacen(r#""to":"abc""#, r#""from":"xyz""#, 1);
        assert_eq!(parse_signal(&relayed), Some((123_456, Kind::Offer)));
        // ... and as a server that re-serializes `data` sends it (its keys sorted).
        let v: serde_json::Value = serde_json::from_str(&relayed).unwrap();
        let reserialized = format!(r#"{{"type":"signal","from":"xyz","data":{}}}"#, v["data"]);
        assert!(reserialized.ends_with(r#""t":123456}}"#), "{reserialized}");
        assert_eq!(parse_signal(&reserialized), Some((123_456, Kind::Offer)));
        let c = frame("abc", Kind::Candidate, 7, &sdp);
        assert_eq!(parse_signal(&c), Some((7, Kind::Candidate)));
        assert_eq!(parse_signal(r#"{"type":"pong"}"#), None);
        assert!((2_900..3_300).contains(&sdp.len()), "{}", sdp.len());
        assert!((200..330).contains(&c.len()), "{}", c.len());
    }
}
