//! Random identifiers: session codes and client IDs.
//!
//! Both come from `rand::rng()`, a cryptographically secure generator seeded from the
//! operating system.

use rand::Rng;

/// Alphabet of generated session codes: lowercase base32 without the ambiguous `0`, `1`,
/// `l` and `o` (32 symbols, 5 bits each).
pub const SESSION_CODE_ALPHABET: &[u8; 32] = b"23456789abcdefghijkmnpqrstuvwxyz";
/// Length of generated session codes: 16 symbols = 80 bits.
pub const SESSION_CODE_LEN: usize = 16;
/// Length of client IDs in hex digits (48 bits).
pub const CLIENT_ID_LEN: usize = 12;

/// A fresh, unguessable session code from the given generator.
pub fn session_code_from<R: Rng + ?Sized>(rng: &mut R) -> String {
    (0..SESSION_CODE_LEN)
        .map(|_| {
            // 256 is a multiple of 32, so masking is unbiased.
            let i = usize::from(rng.random::<u8>() & 31);
            char::from(SESSION_CODE_ALPHABET[i])
        })
        .collect()
}

/// A fresh, unguessable session code.
pub fn session_code() -> String {
    session_code_from(&mut rand::rng())
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
    use crate::protocol::valid_session_code;
    use std::collections::HashSet;

    #[test]
    fn session_code_has_80_bits_of_shell_safe_symbols() {
        for _ in 0..1000 {
            let code = session_code();
            assert_eq!(code.len(), SESSION_CODE_LEN);
            assert!(valid_session_code(&code), "{code}");
            assert!(code.bytes().all(|b| SESSION_CODE_ALPHABET.contains(&b)));
            assert!(!code.contains(['0', '1', 'l', 'o']), "{code}");
        }
        // 32 distinct symbols, 16 of them: 80 bits.
        let distinct: HashSet<u8> = SESSION_CODE_ALPHABET.iter().copied().collect();
        assert_eq!(distinct.len(), 32);
        assert_eq!(SESSION_CODE_LEN * 5, 80);
    }

    #[test]
    fn session_code_generator_does_not_repeat() {
        let codes: HashSet<String> = (0..10_000).map(|_| session_code()).collect();
        assert_eq!(codes.len(), 10_000);
    }

    #[test]
    fn session_code_uses_whole_alphabet() {
        let mut seen = HashSet::new();
        for _ in 0..500 {
            seen.extend(session_code().into_bytes());
        }
        assert_eq!(seen.len(), 32);
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
