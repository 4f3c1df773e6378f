//! Codes: what one person reads out to another to share files.
//!
//! A code is `ROUTE-SECRET`, e.g. `7-orbit-canvas-tiger`. The route (everything before the
//! first `-`) names the session on the signaling server; the secret (the rest) never
//! leaves the peers: it keys the PAKE that every pair of peers runs
//! ([`super::pake`]). Grammar and normalization: `docs/PROTOCOL.md`, "Codes and tickets".

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use crate::error::Error;

/// Words in a generated secret: 3 words of 11 bits (33 bits). A PAKE gives an attacker
/// one guess per attempt, and a peer allows only a few failed attempts per code.
pub const DEFAULT_WORDS: usize = 3;
/// Most words a generated secret may have.
pub const MAX_WORDS: usize = 16;
/// Longest route, in bytes (the signaling server's limit for session codes).
pub const MAX_ROUTE_LEN: usize = 64;
/// The shortest route a client may choose for a session it creates (the signaling
/// server's rule: server-chosen routes are short numbers, chosen ones must not collide
/// with them or be easy to guess).
pub const MIN_CHOSEN_ROUTE_LEN: usize = 8;
/// Longest secret after normalization, in bytes.
pub const MAX_SECRET_LEN: usize = 256;

/// The word list of generated secrets: the 2048 words of BIP-39 (English), each
/// identified by its first four letters.
pub fn word_list() -> &'static [&'static str; 2048] {
    bip39::Language::English.word_list()
}

/// A session code: a route for the signaling server and a secret for the peers.
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    route: String,
    secret: String,
}

impl Code {
    /// A code from its two parts; the secret is normalized.
    pub fn new(route: &str, secret: &str) -> Result<Self, Error> {
        if !valid_route(route) {
            return Err(Error::InvalidArgument(format!(
                "invalid code: the part before the first '-' must be 1 to {MAX_ROUTE_LEN} \
                 characters from [A-Za-z0-9_]"
            )));
        }
        Ok(Code {
            route: route.to_string(),
            secret: normalize_secret(secret)?,
        })
    }

    /// A code with a fresh secret of `words` random words for the session `route`.
    pub fn generate<R: Rng + ?Sized>(
        route: &str,
        words: usize,
        rng: &mut R,
    ) -> Result<Self, Error> {
        if !(1..=MAX_WORDS).contains(&words) {
            return Err(Error::InvalidArgument(format!(
                "a generated secret has 1 to {MAX_WORDS} words"
            )));
        }
        let list = word_list();
        let secret: Vec<&str> = (0..words)
            .map(|_| list[rng.random_range(0..list.len())])
            .collect();
        Code::new(route, &secret.join("-"))
    }

    /// The part sent to the signaling server.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The normalized secret (the PAKE password).
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

/// Route: 1–64 characters of `[A-Za-z0-9_]`.
pub fn valid_route(route: &str) -> bool {
    (1..=MAX_ROUTE_LEN).contains(&route.len())
        && route
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The canonical form of a secret: its words (runs of ASCII letters and digits, split
/// at `-` and whitespace) in ASCII lowercase, joined by single `-`.
pub fn normalize_secret(secret: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::InvalidArgument(format!("invalid code secret: {why}"));
    let mut words = Vec::new();
    for word in secret.split(|c: char| c == '-' || c.is_whitespace()) {
        if word.is_empty() {
            continue;
        }
        if !word.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad("words are made of letters A-Z and digits"));
        }
        words.push(word.to_ascii_lowercase());
    }
    let joined = words.join("-");
    if joined.is_empty() {
        return Err(bad(
            "a code needs a secret after its first '-', e.g. 7-orbit-canvas-tiger",
        ));
    }
    if joined.len() > MAX_SECRET_LEN {
        return Err(bad("longer than 256 characters"));
    }
    Ok(joined)
}

impl FromStr for Code {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let Some((route, secret)) = s.split_once('-') else {
            return Err(Error::InvalidArgument(
                "invalid code: expected ROUTE-SECRET, e.g. 7-orbit-canvas-tiger".into(),
            ));
        };
        Code::new(route, secret)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.route, self.secret)
    }
}

/// Never shows the secret.
impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({}-…)", self.route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::codes;
    use proptest::prelude::*;

    #[test]
    fn code_parse_normalizes_case_and_separators() {
        let c: Code = " 7-Orbit  canvas--TIGER ".parse().unwrap();
        assert_eq!(c.route(), "7");
        assert_eq!(c.secret(), "orbit-canvas-tiger");
        assert_eq!(c.to_string(), "7-orbit-canvas-tiger");
    }

    #[test]
    fn code_without_secret_or_with_bad_parts_is_invalid_argument() {
        for bad in [
            "",
            "7",
            "7-",
            "7- - ",
            "-orbit",
            "7-orbit-can@vas",
            "7-élan",
            "a.b-orbit",
            &format!("{}-x", "r".repeat(65)),
            &format!("7-{}", "w".repeat(257)),
        ] {
            let e = bad.parse::<Code>().unwrap_err();
            assert_eq!(e.code(), codes::INVALID_ARGUMENT, "{bad:?}");
        }
    }

    #[test]
    fn code_debug_hides_the_secret() {
        let c: Code = "7-orbit-canvas-tiger".parse().unwrap();
        assert!(!format!("{c:?}").contains("orbit"));
    }

    #[test]
    fn code_word_list_has_2048_distinct_four_letter_prefixes() {
        let prefixes: std::collections::HashSet<String> = word_list()
            .iter()
            .map(|w| w.chars().take(4).collect())
            .collect();
        assert_eq!(prefixes.len(), 2048);
        assert!(
            word_list()
                .iter()
                .all(|w| w.bytes().all(|b| b.is_ascii_lowercase()))
        );
    }

    #[test]
    fn code_generate_uses_words_from_the_list() {
        let c = Code::generate("42", DEFAULT_WORDS, &mut rand::rng()).unwrap();
        let words: Vec<&str> = c.secret().split('-').collect();
        assert_eq!(words.len(), DEFAULT_WORDS);
        assert!(words.iter().all(|w| word_list().contains(w)));
        assert_eq!(c.to_string().parse::<Code>().unwrap(), c);
        assert!(Code::generate("42", 0, &mut rand::rng()).is_err());
    }

    proptest! {
        #[test]
        fn code_display_parses_back_to_the_same_code(
            route in "[A-Za-z0-9_]{1,64}",
            words in proptest::collection::vec("[A-Za-z0-9]{1,12}", 1..8),
            seps in proptest::collection::vec("[- \t]{1,3}", 8),
        ) {
            let mut secret = String::new();
            for (i, w) in words.iter().enumerate() {
                if i > 0 { secret.push_str(&seps[i]); }
                secret.push_str(w);
            }
            let c = Code::new(&route, &secret).unwrap();
            prop_assert_eq!(c.to_string().parse::<Code>().unwrap(), c.clone());
            prop_assert_eq!(normalize_secret(c.secret()).unwrap(), c.secret());
        }

        #[test]
        fn code_parse_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Code>();
        }
    }
}
