//! `peershare::Ticket` parsing (`FromStr`), as `peershare recv TICKET` does with a ticket a
//! stranger may have handed over, and printing (`Display`).
//!
//! Invariants (src/ticket.rs module docs): an accepted ticket has a valid code (a route
//! and a normalized secret) and either no server or `ws://`/`wss://` ones, each once; its
//! printed form uses only `[A-Za-z0-9@:._/,-]` (and `[`, `]` around an IPv6 host) and
//! parses back to the same ticket; its page form names its first server.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peershare::Ticket;
use peershare::proto::code::{normalize_secret, valid_route};

fn shell_safe(s: &str) -> bool {
    s.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'@' | b':' | b'.' | b'_' | b'-' | b'/' | b',' | b'[' | b']')
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ticket) = text.parse::<Ticket>() else {
        return;
    };
    assert!(valid_route(ticket.code.route()), "{ticket:?}");
    assert_eq!(
        normalize_secret(ticket.code.secret()).ok().as_deref(),
        Some(ticket.code.secret()),
        "{ticket:?}"
    );
    assert!(
        ticket.server.is_some() || ticket.fallback_servers.is_empty(),
        "{ticket:?}"
    );
    let servers = ticket.servers();
    for (i, server) in servers.iter().enumerate() {
        assert!(
            server.starts_with("ws://") || server.starts_with("wss://"),
            "{ticket:?}"
        );
        assert!(!servers[..i].contains(server), "{ticket:?}");
    }
    let printed = ticket.to_string();
    assert!(shell_safe(&printed), "{ticket:?} prints as {printed:?}");
    let again: Ticket = printed
        .parse()
        .unwrap_or_else(|e| panic!("{ticket:?} prints as {printed:?}, refused: {e}"));
    assert_eq!(again, ticket, "printed as {printed:?}");
    if let Some(page) = ticket.page_url() {
        let from_page: Ticket = page
            .parse()
            .unwrap_or_else(|e| panic!("{ticket:?} page {page:?} refused: {e}"));
        let first = Ticket {
            fallback_servers: Vec::new(),
            ..ticket.clone()
        };
        assert_eq!(from_page, first, "page {page:?}");
    }
});
