//! Peer authentication (sans-IO): every pair of peers runs SPAKE2 keyed by the code's
//! secret, and seals everything it sends through signaling about its connection (the
//! offer or answer, with the DTLS certificate fingerprint, and the ICE candidates) with
//! the key. A peer that does not know the secret can neither read those nor produce ones
//! that open, so a DTLS fingerprint is trusted only when it comes from a peer that knows
//! the secret, and the signaling server never learns the peers' addresses.
//!
//! Parameters (`docs/PROTOCOL.md`, "Peer authentication", has the test vectors):
//! - SPAKE2 over Ed25519 as in RustCrypto's `spake2` 0.4 (the python-spake2 /
//!   magic-wormhole parameters), asymmetric: side A is the peer with the smaller client ID
//!   (the offerer). Password: the normalized secret (UTF-8); identities `ROUTE/ID_A` and
//!   `ROUTE/ID_B`.
//! - Pair key: HKDF-SHA256 of the SPAKE2 key (no salt, info `peershare/2 seal`, 32 bytes).
//! - Sealing: AES-256-GCM with a random 96-bit nonce; the associated data is
//!   `peershare/2 KIND\nFROM\nTO\nCONN` (CONN empty when absent); the wire form is the
//!   standard base64 (with padding) of nonce ‖ ciphertext ‖ tag.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use uuid::Uuid;

/// Label of this protocol version in every derivation.
pub const CONTEXT: &str = "peershare/2";
/// HKDF `info` of the pair key.
pub const PAIR_KEY_INFO: &[u8] = b"peershare/2 seal";
/// Length of a PAKE message: a side byte (`A` 0x41 or `B` 0x42) and a 32-byte point.
pub const MESSAGE_LEN: usize = 33;
/// Largest sealed payload accepted (base64 characters): a signaling frame is at most
/// 64 KiB anyway.
pub const MAX_SEALED_LEN: usize = 64 * 1024;

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("malformed PAKE message: {0}")]
    BadMessage(String),
    #[error("sealed data that does not open with the pair's key")]
    BadSeal,
}

/// What a sealed payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealKind {
    /// An SDP offer (the plaintext is the SDP).
    Offer,
    /// An SDP answer (the plaintext is the SDP).
    Answer,
    /// An ICE candidate (the plaintext is the JSON of an `RTCIceCandidateInit`).
    Candidate,
}

impl SealKind {
    fn as_str(self) -> &'static str {
        match self {
            SealKind::Offer => "offer",
            SealKind::Answer => "answer",
            SealKind::Candidate => "candidate",
        }
    }
}

/// The SPAKE2 identities of the pair `a`, `b` in session `route`: (`ROUTE/SMALLER`,
/// `ROUTE/LARGER`).
fn identities(route: &str, a: &str, b: &str) -> (Identity, Identity) {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    (
        Identity::new(format!("{route}/{lo}").as_bytes()),
        Identity::new(format!("{route}/{hi}").as_bytes()),
    )
}

/// Our half of a PAKE run with one peer, until its message arrives.
pub struct Handshake {
    spake: Spake2<Ed25519Group>,
}

impl Handshake {
    /// Start the exchange between `me` and `peer` in session `route`: the handshake and
    /// the message to send to the peer.
    pub fn start(secret: &str, route: &str, me: &str, peer: &str) -> (Self, Vec<u8>) {
        Self::start_with_rng(secret, route, me, peer, rand_core06::OsRng)
    }

    /// [`Handshake::start`] with a given random generator (test vectors).
    pub fn start_with_rng(
        secret: &str,
        route: &str,
        me: &str,
        peer: &str,
        rng: impl rand_core06::CryptoRng + rand_core06::RngCore,
    ) -> (Self, Vec<u8>) {
        let password = Password::new(secret.as_bytes());
        let (id_a, id_b) = identities(route, me, peer);
        let (spake, msg) = if me < peer {
            Spake2::<Ed25519Group>::start_a_with_rng(&password, &id_a, &id_b, rng)
        } else {
            Spake2::<Ed25519Group>::start_b_with_rng(&password, &id_a, &id_b, rng)
        };
        (Handshake { spake }, msg)
    }

    /// Finish with the peer's message. Any well-formed message of the other side gives a
    /// key; whether the peer knew the secret shows when its sealed data opens, or not.
    pub fn finish(self, theirs: &[u8]) -> Result<PairKey, AuthError> {
        Ok(PairKey::from_shared(&self.finish_shared(theirs)?))
    }

    /// The SPAKE2 output itself (32 bytes).
    fn finish_shared(self, theirs: &[u8]) -> Result<Vec<u8>, AuthError> {
        self.spake
            .finish(theirs)
            .map_err(|e| AuthError::BadMessage(format!("{e:?}")))
    }
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handshake(…)")
    }
}

/// The key that seals a pair's signaling data.
#[derive(Clone, PartialEq, Eq)]
pub struct PairKey([u8; 32]);

impl PairKey {
    /// Derive the pair key from the SPAKE2 output.
    pub fn from_shared(shared: &[u8]) -> Self {
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
        let _ = hkdf::Hkdf::<Sha256>::new(None, shared).expand(PAIR_KEY_INFO, &mut key);
        PairKey(key)
    }

    fn aead(&self) -> LessSafeKey {
        // A 32-byte key is what AES-256-GCM takes.
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.0)
                .unwrap_or_else(|_| unreachable!("AES-256-GCM takes 32-byte keys")),
        )
    }

    fn aad(kind: SealKind, from: &str, to: &str, conn: Option<Uuid>) -> Vec<u8> {
        let conn = conn.map(|c| c.to_string()).unwrap_or_default();
        format!("{CONTEXT} {}\n{from}\n{to}\n{conn}", kind.as_str()).into_bytes()
    }

    /// Seal `plain`, sent `from` → `to` for connection `conn`.
    pub fn seal(
        &self,
        kind: SealKind,
        from: &str,
        to: &str,
        conn: Option<Uuid>,
        plain: &[u8],
    ) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::Rng::fill(&mut rand::rng(), &mut nonce[..]);
        self.seal_with_nonce(kind, from, to, conn, plain, nonce)
    }

    /// [`PairKey::seal`] with a given nonce (test vectors; never reuse one).
    pub fn seal_with_nonce(
        &self,
        kind: SealKind,
        from: &str,
        to: &str,
        conn: Option<Uuid>,
        plain: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> String {
        let mut buf = plain.to_vec();
        let aad = Self::aad(kind, from, to, conn);
        // Sealing fails only for inputs above GCM's 64 GiB limit.
        if self
            .aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                &mut buf,
            )
            .is_err()
        {
            unreachable!("signaling payloads are far below the AES-GCM size limit");
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        STANDARD.encode(out)
    }

    /// Open a sealed payload received `from` → `to` for connection `conn`.
    pub fn open(
        &self,
        kind: SealKind,
        from: &str,
        to: &str,
        conn: Option<Uuid>,
        sealed: &str,
    ) -> Result<Vec<u8>, AuthError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(AuthError::BadSeal);
        }
        let raw = STANDARD.decode(sealed).map_err(|_| AuthError::BadSeal)?;
        if raw.len() < NONCE_LEN {
            return Err(AuthError::BadSeal);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AuthError::BadSeal)?;
        let mut body = body.to_vec();
        let aad = Self::aad(kind, from, to, conn);
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(&aad[..]), &mut body)
            .map_err(|_| AuthError::BadSeal)?;
        Ok(plain.to_vec())
    }
}

/// Never shows the key.
impl fmt::Debug for PairKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairKey(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A generator that returns fixed bytes: `Scalar::random` reads 64 bytes and reduces
    /// them, so 32 little-endian bytes of a scalar below the group order followed by 32
    /// zeros give exactly that scalar.
    struct Fixed([u8; 64], usize);

    impl rand_core06::RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            unimplemented!("not used by Scalar::random")
        }
        fn next_u64(&mut self) -> u64 {
            unimplemented!("not used by Scalar::random")
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                *b = self.0[self.1 % 64];
                self.1 += 1;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core06::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl rand_core06::CryptoRng for Fixed {}

    /// The scalar whose 31 low bytes (little-endian) are `fill` and whose top byte is 0.
    fn scalar(fill: u8) -> Fixed {
        let mut b = [0u8; 64];
        b[..31].fill(fill);
        Fixed(b, 0)
    }

    const A: &str = "aaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbb";
    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\na=fingerprint:sha-256 AB:CD\r\n";

    fn conn() -> Uuid {
        Uuid::parse_str("00000000-0000-4000-8000-000000000001").unwrap()
    }

    fn pair(sa: &str, ra: &str, sb: &str, rb: &str) -> (PairKey, PairKey) {
        let (a, msg_a) = Handshake::start(sa, ra, A, B);
        let (b, msg_b) = Handshake::start(sb, rb, B, A);
        (a.finish(&msg_b).unwrap(), b.finish(&msg_a).unwrap())
    }

    /// The vectors of docs/PROTOCOL.md, "Peer authentication".
    #[test]
    fn pake_test_vectors_match_the_protocol_document() {
        let (a, msg_a) = Handshake::start_with_rng("orbit-canvas-tiger", "7", A, B, scalar(0x11));
        let (b, msg_b) = Handshake::start_with_rng("orbit-canvas-tiger", "7", B, A, scalar(0x22));
        let shared = a.finish_shared(&msg_b).unwrap();
        assert_eq!(b.finish_shared(&msg_a).unwrap(), shared);
        let key = PairKey::from_shared(&shared);
        let sealed =
            key.seal_with_nonce(SealKind::Offer, A, B, Some(conn()), SDP.as_bytes(), [7; 12]);
        let got = [
            hex::encode(&msg_a),
            hex::encode(&msg_b),
            hex::encode(&shared),
            hex::encode(key.0),
            sealed.clone(),
        ];
        assert_eq!(got, VECTORS.map(String::from));
        assert_eq!(
            key.open(SealKind::Offer, A, B, Some(conn()), &sealed)
                .unwrap(),
            SDP.as_bytes()
        );
    }

    /// msg A, msg B, SPAKE2 key, pair key, the offer sealed with nonce 07×12.
    const VECTORS: [&str; 5] = [
        "41e57eb68a1a22519b1ddb63e60706d59432d73ada7f764ce32561fc97c88db60a",
        "42bd16f4d8e3c7e2dc2fea5986f8d3b596263e8523e3988591fb6dd120f3a10a0b",
        "699854c2e5a043241a8b924767c25538da14445a08f98cb4b22b4bc85d62e9ee",
        "730ed94006e32f329d5f739322cf04cb2ba90edebd86dbfd5e58c455e3ededc8",
        "BwcHBwcHBwcHBwcHLYOs2ecnY434fHmbk0Lfh2Uhq5zcnyd2qBstATYZOCZmMhCStcrV2ROe1ZerKgByzVSdJFlN3GkFGiRnf2IurY3jE4CBn8flsCHoAB6qpQ==",
    ];

    #[test]
    fn pake_same_secret_gives_same_key_and_seals_open() {
        let (ka, kb) = pair("s3cret-words", "route", "s3cret-words", "route");
        assert_eq!(ka, kb);
        for kind in [SealKind::Offer, SealKind::Answer, SealKind::Candidate] {
            let sealed = ka.seal(kind, A, B, Some(conn()), b"payload");
            assert_eq!(
                kb.open(kind, A, B, Some(conn()), &sealed).unwrap(),
                b"payload"
            );
        }
        // Two seals of the same payload differ (fresh nonces).
        assert_ne!(
            ka.seal(SealKind::Offer, A, B, None, b"x"),
            ka.seal(SealKind::Offer, A, B, None, b"x")
        );
    }

    #[test]
    fn pake_wrong_secret_or_other_session_does_not_open() {
        for (sb, rb) in [("one-three", "7"), ("one-two", "8")] {
            let (ka, kb) = pair("one-two", "7", sb, rb);
            let sealed = ka.seal(SealKind::Offer, A, B, None, SDP.as_bytes());
            assert_eq!(
                kb.open(SealKind::Offer, A, B, None, &sealed),
                Err(AuthError::BadSeal)
            );
        }
    }

    #[test]
    fn pake_seal_is_bound_to_kind_ends_and_connection() {
        let key = PairKey::from_shared(b"shared");
        let sealed = key.seal(SealKind::Offer, A, B, Some(conn()), SDP.as_bytes());
        for (kind, from, to, c) in [
            (SealKind::Answer, A, B, Some(conn())),
            (SealKind::Candidate, A, B, Some(conn())),
            (SealKind::Offer, B, A, Some(conn())),
            (SealKind::Offer, A, "cccccccccccc", Some(conn())),
            (SealKind::Offer, A, B, Some(Uuid::new_v4())),
            (SealKind::Offer, A, B, None),
        ] {
            assert_eq!(
                key.open(kind, from, to, c, &sealed),
                Err(AuthError::BadSeal)
            );
        }
        let mut raw = STANDARD.decode(&sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let flipped = STANDARD.encode(&raw);
        for bad in [
            "",
            "!!",
            "AAAA",
            flipped.as_str(),
            &sealed[..sealed.len() - 4],
        ] {
            assert_eq!(
                key.open(SealKind::Offer, A, B, Some(conn()), bad),
                Err(AuthError::BadSeal),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pake_malformed_messages_are_errors() {
        for msg in [vec![], vec![0x42; 32], vec![0x41; 33], vec![0x42; 34]] {
            let (a, _) = Handshake::start("s", "r", A, B);
            assert!(
                matches!(a.finish(&msg), Err(AuthError::BadMessage(_))),
                "{msg:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn pake_finish_and_open_never_panic(
            msg in proptest::collection::vec(any::<u8>(), 0..40),
            sealed in "\\PC{0,200}",
        ) {
            let (a, _) = Handshake::start("s", "r", A, B);
            let _ = a.finish(&msg);
            let _ = PairKey::from_shared(b"k").open(SealKind::Candidate, A, B, None, &sealed);
        }
    }
}
