//! Resume tokens: what lets a client whose connection was lost get its client ID back in
//! its session (`welcome.resume_token`, `join.resume`). Pure logic.
//!
//! A token is `base64url(HMAC-SHA256(key, "peershare-resume-v1" 0 session 0 client_id))`
//! without padding (43 characters). It needs no state: every node of a deployment that
//! holds the same key (one server: random at start; several nodes on Redis: one key kept
//! in Redis) checks it. It binds the ID to one session, so a token is worth nothing
//! elsewhere; a client ID alone (every member of the session sees it) is not enough.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::CLIENT_ID_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Key length in bytes.
pub(crate) const KEY_LEN: usize = 32;

/// The key of one deployment.
#[derive(Clone)]
pub(crate) struct ResumeKey([u8; KEY_LEN]);

impl std::fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeKey(..)")
    }
}

impl ResumeKey {
    pub fn new(bytes: [u8; KEY_LEN]) -> Self {
        ResumeKey(bytes)
    }

    /// A fresh random key.
    pub fn random() -> Self {
        ResumeKey(rand::random())
    }

    /// `None` never happens (HMAC takes keys of any length).
    fn mac(&self, session: &str, client_id: &str) -> Option<HmacSha256> {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).ok()?;
        mac.update(b"peershare-resume-v1\0");
        mac.update(session.as_bytes());
        mac.update(b"\0");
        mac.update(client_id.as_bytes());
        Some(mac)
    }

    /// The token of `client_id` in `session`.
    pub fn token(&self, session: &str, client_id: &str) -> String {
        self.mac(session, client_id)
            .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Whether `token` is the token of `client_id` in `session` (compared in constant
    /// time), and `client_id` has the form the server gives out.
    pub fn verify(&self, session: &str, client_id: &str, token: &str) -> bool {
        if !valid_client_id(client_id) {
            return false;
        }
        let Ok(tag) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        self.mac(session, client_id)
            .is_some_and(|m| m.verify_slice(&tag).is_ok())
    }
}

/// Whether `id` has the form of a server-assigned client ID (12 lowercase hex digits).
pub(crate) fn valid_client_id(id: &str) -> bool {
    id.len() == CLIENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_token_verifies_for_its_session_and_id_only() {
        let key = ResumeKey::new([7; KEY_LEN]);
        let t = key.token("42", "0123456789ab");
        assert_eq!(t.len(), 43);
        assert!(key.verify("42", "0123456789ab", &t));
        assert!(!key.verify("43", "0123456789ab", &t));
        assert!(!key.verify("42", "0123456789ac", &t));
        assert!(!ResumeKey::new([8; KEY_LEN]).verify("42", "0123456789ab", &t));
        assert!(!key.verify("42", "0123456789ab", &t[..42]));
        assert!(!key.verify("42", "0123456789ab", "not base64!"));
        assert!(!key.verify("42", "0123456789AB", &key.token("42", "0123456789AB")));
    }

    #[test]
    fn valid_client_id_accepts_server_ids_only() {
        assert!(valid_client_id(&crate::ids::client_id()));
        assert!(!valid_client_id("0123456789a"));
        assert!(!valid_client_id("0123456789abc"));
        assert!(!valid_client_id("0123456789aG"));
    }
}
