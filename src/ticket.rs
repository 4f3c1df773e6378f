//! Tickets: one shell-safe token that carries a signaling server address and a session
//! code, printed by `peershare send` and given to `peershare recv`.
//!
//! Two forms:
//! - readable, for `ws://` servers named by an IPv4 address or a DNS name:
//!   `SESSION@HOST:PORT`, e.g. `k3xq7m2p9wz4hr6t@192.168.1.20:40213`;
//! - encoded, for anything else (IPv6, `wss://`, paths): `ps1` followed by the URL-safe
//!   base64 of `URL\nSESSION`.
//!
//! Both use only `[A-Za-z0-9@:._-]`, which no shell interprets.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use peershare_signaling::protocol::valid_session_code;

use crate::error::Error;
use crate::signal_client::normalize_url;

const ENCODED_PREFIX: &str = "ps1";

/// Where to find a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Signaling server URL (`ws://…` or `wss://…`).
    pub server: String,
    /// Session code.
    pub session: String,
}

impl Ticket {
    /// A ticket for `session` on `server` (any form `--server` accepts).
    pub fn new(server: &str, session: &str) -> Self {
        Self {
            server: normalize_url(server),
            session: session.to_string(),
        }
    }
}

fn readable_host_port(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("ws://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':')?;
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    // Digits only: `u16::from_str` also takes a leading `+`.
    let port_ok =
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok();
    (host_ok && port_ok).then_some(rest)
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match readable_host_port(&self.server) {
            Some(hp) if valid_session_code(&self.session) => write!(f, "{}@{hp}", self.session),
            _ => {
                let raw = format!("{}\n{}", self.server, self.session);
                write!(f, "{ENCODED_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
            }
        }
    }
}

impl FromStr for Ticket {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let bad = |why: &str| Error::InvalidArgument(format!("invalid ticket {s:?}: {why}"));
        if let Some((session, host_port)) = s.rsplit_once('@') {
            if !valid_session_code(session) {
                return Err(bad("malformed session code"));
            }
            // The ticket names exactly HOST:PORT (no path, not even `/`), so that it
            // prints back as it was given.
            let server = format!("ws://{host_port}");
            if host_port.ends_with('/') || readable_host_port(&server).is_none() {
                return Err(bad("expected SESSION@HOST:PORT"));
            }
            return Ok(Ticket {
                server,
                session: session.to_string(),
            });
        }
        let encoded = s
            .strip_prefix(ENCODED_PREFIX)
            .ok_or_else(|| bad("expected SESSION@HOST:PORT or a ps1… ticket"))?;
        let raw = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| bad("not valid base64"))?;
        let raw = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
        let (server, session) = raw.split_once('\n').ok_or_else(|| bad("missing session"))?;
        if !(server.starts_with("ws://") || server.starts_with("wss://")) {
            return Err(bad("server is not a ws:// or wss:// URL"));
        }
        if !valid_session_code(session) {
            return Err(bad("malformed session code"));
        }
        Ok(Ticket {
            server: server.to_string(),
            session: session.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_port_with_sign_or_trailing_slash_is_refused() {
        // Found by the `ticket` fuzz target: both parsed, neither printed back the same.
        for bad in ["abcde679@1:+2", "kq27m26t@l:8/"] {
            assert!(bad.parse::<Ticket>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ticket_ipv4_is_readable_and_roundtrips() {
        let t = Ticket::new("127.0.0.1:4000", "abcdefgh23456789");
        assert_eq!(t.to_string(), "abcdefgh23456789@127.0.0.1:4000");
        assert_eq!(t.to_string().parse::<Ticket>().unwrap(), t);
    }

    #[test]
    fn ticket_ipv6_and_wss_are_encoded_shell_safe_and_roundtrip() {
        for server in ["ws://[::1]:4000", "wss://signal.example.org/ps"] {
            let t = Ticket::new(server, "abcdefgh23456789");
            let s = t.to_string();
            assert!(s.starts_with("ps1"));
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(s.parse::<Ticket>().unwrap(), t);
        }
    }

    #[test]
    fn ticket_bogus_inputs_are_invalid_argument() {
        for s in [
            "",
            "hello",
            "x@y",
            "abcdefgh@host",
            "short@1.2.3.4:5",
            "ps1!!!",
            "ps1aGVsbG8",
        ] {
            let e = s.parse::<Ticket>().unwrap_err();
            assert_eq!(e.code(), crate::error::codes::INVALID_ARGUMENT, "{s}");
        }
    }
}
