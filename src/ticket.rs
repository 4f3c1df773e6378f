//! Tickets: what `peershare send` prints and `peershare recv` takes, a code and where its
//! signaling server is. Grammar: `docs/PROTOCOL.md`, "Codes and tickets".
//!
//! - `CODE`, e.g. `7-orbit-canvas-tiger`: the server is the user's default one;
//! - `CODE@HOST:PORT`: the `ws://` server at `HOST:PORT` (an IPv4 address or DNS name);
//! - `CODE@URL`: any `ws://` or `wss://` URL, e.g. `7-orbit-canvas-tiger@wss://signal.example.org`;
//! - `http(s)://HOST[:PORT][/PATH]#CODE`: the page form, for a browser; it names the
//!   `ws(s)://` server at the same address.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::proto::code::Code;
use crate::signal_client::normalize_url;

/// A code and where to find its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Signaling server URL (`ws://…` or `wss://…`); `None`: the user's default server.
    pub server: Option<String>,
    /// The session's code.
    pub code: Code,
}

impl Ticket {
    /// A ticket for `code` on `server` (any form `--server` accepts).
    pub fn new(server: Option<&str>, code: Code) -> Self {
        Self {
            server: server.map(|s| canonical_server(normalize_url(s))),
            code,
        }
    }

    /// The page form, `http(s)://HOST:PORT/#CODE`, when the server has one.
    pub fn page_url(&self) -> Option<String> {
        let server = self.server.as_deref()?;
        let page = if let Some(rest) = server.strip_prefix("ws://") {
            format!("http://{rest}")
        } else {
            format!("https://{}", server.strip_prefix("wss://")?)
        };
        let sep = if page[page.find("://").map_or(0, |i| i + 3)..].contains('/') {
            ""
        } else {
            "/"
        };
        Some(format!("{page}{sep}#{}", self.code))
    }
}

/// A server URL whose path is just `/` names the same server as one without a path.
fn canonical_server(mut url: String) -> String {
    if url.ends_with('/') && url.matches('/').count() == 3 {
        url.pop();
    }
    url
}

/// `HOST:PORT` of a `ws://` URL whose host is an IPv4 address or a DNS name and which has
/// no path: the readable ticket form.
fn readable_host_port(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("ws://")?;
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

/// Whether `url` is a `ws://` or `wss://` URL with a host and nothing a shell or a
/// ticket reader would trip on.
fn valid_server_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.starts_with('/')
        && rest.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/' | b'[' | b']')
        })
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.server.as_deref() {
            None => write!(f, "{}", self.code),
            Some(url) => match readable_host_port(url) {
                Some(hp) => write!(f, "{}@{hp}", self.code),
                None => write!(f, "{}@{url}", self.code),
            },
        }
    }
}

impl FromStr for Ticket {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let bad = |why: &str| Error::InvalidArgument(format!("invalid ticket {s:?}: {why}"));
        // The page form: http(s)://HOST:PORT/#CODE.
        if s.starts_with("http://") || s.starts_with("https://") {
            let (page, code) = s
                .split_once('#')
                .ok_or_else(|| bad("a page URL carries the code after '#'"))?;
            let server = canonical_server(normalize_url(page));
            if !valid_server_url(&server) {
                return Err(bad("malformed server address"));
            }
            return Ok(Ticket {
                server: Some(server),
                code: code.parse()?,
            });
        }
        let (code, server) = match s.split_once('@') {
            None => (s, None),
            Some((code, at)) if at.contains("://") => {
                if !valid_server_url(at) {
                    return Err(bad("the server must be a ws:// or wss:// URL"));
                }
                (code, Some(canonical_server(at.to_string())))
            }
            Some((code, host_port)) => {
                let server = format!("ws://{host_port}");
                if readable_host_port(&server).is_none() {
                    return Err(bad("expected CODE@HOST:PORT"));
                }
                (code, Some(server))
            }
        };
        Ok(Ticket {
            server,
            code: code.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code() -> Code {
        "7-orbit-canvas-tiger".parse().unwrap()
    }

    #[test]
    fn ticket_port_with_sign_or_trailing_slash_is_refused() {
        // Found by the `ticket` fuzz target: both parsed, neither printed back the same.
        for bad in ["7-abc@1:+2", "7-abc@l:8/"] {
            assert!(bad.parse::<Ticket>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ticket_ipv4_is_readable_and_roundtrips() {
        let t = Ticket::new(Some("127.0.0.1:4000"), code());
        assert_eq!(t.to_string(), "7-orbit-canvas-tiger@127.0.0.1:4000");
        assert_eq!(t.to_string().parse::<Ticket>().unwrap(), t);
        assert_eq!(
            t.page_url().as_deref(),
            Some("http://127.0.0.1:4000/#7-orbit-canvas-tiger")
        );
    }

    #[test]
    fn ticket_code_alone_has_no_server() {
        let t: Ticket = "7-Orbit-Canvas-Tiger".parse().unwrap();
        assert_eq!(t, Ticket::new(None, code()));
        assert_eq!(t.to_string(), "7-orbit-canvas-tiger");
        assert_eq!(t.page_url(), None);
    }

    #[test]
    fn ticket_urls_and_page_form_roundtrip() {
        for server in [
            "ws://[::1]:4000",
            "wss://signal.example.org/ps",
            "wss://h.example:443",
        ] {
            let t = Ticket::new(Some(server), code());
            let s = t.to_string();
            assert_eq!(s, format!("7-orbit-canvas-tiger@{server}"));
            assert_eq!(s.parse::<Ticket>().unwrap(), t);
            let page = t.page_url().unwrap();
            assert_eq!(page.parse::<Ticket>().unwrap(), t, "{page}");
        }
        let t: Ticket = "https://signal.example.org/#7-orbit-canvas-tiger"
            .parse()
            .unwrap();
        assert_eq!(t.server.as_deref(), Some("wss://signal.example.org"));
    }

    #[test]
    fn ticket_bogus_inputs_are_invalid_argument() {
        for s in [
            "",
            "hello",
            "x@y",
            "7-abc@host",
            "7@1.2.3.4:5",
            "7-abc@http://h:1",
            "7-abc@ws://",
            "7-abc@ws://h:1/a?b",
            "http://h:1/",
            "https://h:1/#7",
        ] {
            let e = s.parse::<Ticket>().unwrap_err();
            assert_eq!(e.code(), crate::error::codes::INVALID_ARGUMENT, "{s}");
        }
    }

    proptest! {
        #[test]
        fn ticket_parse_never_panics_and_display_parses_back(s in "\\PC{0,80}") {
            if let Ok(t) = s.parse::<Ticket>() {
                prop_assert_eq!(t.to_string().parse::<Ticket>().unwrap(), t);
            }
        }
    }
}
