//! Random identifiers: session numbers and client IDs.
//!
//! Both come from `rand::rng()`, a cryptographically secure generator seeded from the
//! operating system.

use rand::Rng;

/// Length of client IDs in hex digits (48 bits).
pub const CLIENT_ID_LEN: usize = 12;

/// A session number for a new session on a server holding `sessions` sessions: a
/// decimal number, random among those below `10 × (sessions + 1)` rounded up to a power of
/// ten (at least 100), so that it stays short (2 digits for the first 9 sessions, 3 up to
/// 99, …) while at most a tenth of its range is taken. The caller retries
/// on a number in use.
pub fn session_number_from<R: Rng + ?Sized>(rng: &mut R, sessions: usize) -> String {
    let wanted = (sessions as u64).saturating_add(1).saturating_mul(10);
    let mut range: u64 = 100;
    while range < wanted && range < u64::MAX / 10 {
        range *= 10;
    }
    rng.random_range(1..range).to_string()
}

/// A session number (see [`session_number_from`]).
pub fn session_number(sessions: usize) -> String {
    session_number_from(&mut rand::rng(), sessions)
}

/// A random client ID (12 lowercase hex digits) from the given generator.
pub fn client_id_from<R: Rng + ?Sized>(rng: &mut R) -> String {
    let bits: u64 = rng.random::<u64>() & ((1 << (4 * CLIENT_ID_LEN)) - 1);
    format!("{bits:0width$x}", width = CLIENT_ID_LEN)
}

/// A random client ID. Uniqueness within the server is checked by the registry.
pub fn client_id() -> String {
    client_id_from(&mut rand::rng())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn session_number_is_short_and_grows_with_the_sessions() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let n: u64 = session_number_from(&mut rng, 0).parse().unwrap();
            assert!((1..100).contains(&n));
            let n: u64 = session_number_from(&mut rng, 500).parse().unwrap();
            assert!((1..10_000).contains(&n));
        }
    }

    #[test]
    fn client_id_is_twelve_lowercase_hex_digits() {
        for _ in 0..1000 {
            let id = client_id();
            assert_eq!(id.len(), CLIENT_ID_LEN);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        let ids: HashSet<String> = (0..10_000).map(|_| client_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
