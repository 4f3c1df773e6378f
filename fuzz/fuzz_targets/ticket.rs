//! `peershare::Ticket` parsing (`FromStr`), as `peershare recv TICKET` does with a ticket a
//! stranger may have handed over, and printing (`Display`).
//!
//! Invariants (src/ticket.rs module docs): an accepted ticket has a valid session code
//! and a `ws://`/`wss://` server; its printed form uses only `[A-Za-z0-9@:._-]` and parses
//! back to the same ticket.
#![no_main]

use libfuzzer_sys::fuzz_target;
mod known;
use peershare::Ticket;
use peershare::signaling::protocol::valid_session_code;

fn shell_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'@' | b':' | b'.' | b'_' | b'-'))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ticket) = text.parse::<Ticket>() else {
        return;
    };
    assert!(valid_session_code(&ticket.session), "{ticket:?}");
    assert!(
        ticket.server.starts_with("ws://") || ticket.server.starts_with("wss://"),
        "{ticket:?}"
    );
    let printed = ticket.to_string();
    // F3: the readable form's port is checked with `u16::from_str`, which accepts a
    // leading `+` ("abcdefgh@h:+1"), so a ticket can print with a `+`.
    let f3 = printed.contains('+') && known::tolerated("ticket-plus-port");
    assert!(
        shell_safe(&printed.replace('+', if f3 { "" } else { "+" })),
        "{ticket:?} prints as {printed:?}"
    );
    let again: Ticket = printed
        .parse()
        .unwrap_or_else(|e| panic!("{ticket:?} prints as {printed:?}, refused: {e}"));
    // F4: a readable ticket's server may end in `/` ("abcdefgh@h:1/"), which printing
    // drops, so the printed ticket names "ws://h:1" instead of "ws://h:1/".
    let f4 = ticket.server.strip_suffix('/') == Some(again.server.as_str())
        && again.session == ticket.session
        && known::tolerated("ticket-trailing-slash");
    assert!(
        f4 || again == ticket,
        "{ticket:?} printed as {printed:?} parses to {again:?}"
    );
});
