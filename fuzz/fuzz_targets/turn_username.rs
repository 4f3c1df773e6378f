//! The embedded TURN relay's input from strangers (UDP, before any authentication).
//!
//! Even first byte: the rest is a TURN REST username `EXPIRY:CLIENT`, parsed by
//! `parse_turn_username` and checked by `RestAuthHandler::key_at` (the relay's
//! `AuthHandler`). Odd first byte: the rest is a UDP datagram as the relay's listener
//! reads it: first our `RelayGate::inspect_at` (credentials, peer-address policy and
//! quota before the `turn` server sees it), then the way webrtc-rs `turn` 0.17
//! `server::request` handles it: ChannelData if it looks like one, else a STUN message,
//! whose NONCE/REALM/USERNAME go through `key_at` and whose MESSAGE-INTEGRITY is checked
//! with the key, plus the attribute getters the request handlers use.
//!
//! Invariants: a parsed username is exactly `DIGITS:CLIENT` with DIGITS its expiry;
//! credentials issued by `turn_credentials` parse back; `key_at` accepts exactly the
//! well-formed, unexpired usernames and returns the RFC 5389 long-term key
//! MD5(username:realm:HMAC password); a decoded STUN message or ChannelData re-encodes
//! to bytes that decode to the same message; the gate passes non-STUN datagrams, replaces
//! a refused request by its bare 20-byte header (same type and transaction, no
//! attributes), and answers with an error response to the same transaction that carries
//! a MESSAGE-INTEGRITY valid under the requester's key.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use peershare_signaling::relay_plane::{GateVerdict, RelayPlane};
use peershare_signaling::turn::{
    RelayGate, RestAuthHandler, TURN_REALM, parse_turn_username, turn_credentials, turn_password,
};
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::integrity::MessageIntegrity;
use stun::message::CLASS_ERROR_RESPONSE;
use stun::message::{Getter, Message};
use stun::textattrs::TextAttribute;
use turn::proto::chandata::ChannelData;

const SECRET: &str = "fuzz-secret";
/// "Now" for expiry checks (2027-01-15).
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(username) = std::str::from_utf8(rest) {
            username_invariants(username, TURN_REALM);
        }
    } else {
        datagram(rest);
    }
});

fn username_invariants(username: &str, realm: &str) {
    let parsed = parse_turn_username(username);
    if let Some((expiry, client)) = parsed {
        let (digits, tail) = username.split_once(':').expect("parsed without a colon");
        assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(digits.parse::<u64>().ok(), Some(expiry));
        assert_eq!(tail, client);
        assert!(!client.is_empty());
        let issued = turn_credentials(SECRET, client, expiry);
        assert_eq!(issued.username, format!("{expiry}:{client}"));
        assert_eq!(
            parse_turn_username(&issued.username),
            Some((expiry, client))
        );
    }
    let handler = RestAuthHandler::new(SECRET);
    match handler.key_at(username, realm, NOW) {
        Ok(key) => {
            let (expiry, _) = parsed.expect("key for a malformed username");
            assert!(expiry >= NOW, "key for an expired username");
            let password = turn_password(SECRET, username);
            let want = MessageIntegrity::new_long_term_integrity(
                username.to_owned(),
                realm.to_owned(),
                password,
            );
            assert_eq!(key, want.0, "long-term key differs from RFC 5389's");
        }
        Err(_) => assert!(
            parsed.is_none_or(|(expiry, _)| expiry < NOW),
            "refused a valid username {username:?}"
        ),
    }
}

fn gate(buf: &[u8]) {
    static GATE: OnceLock<RelayGate> = OnceLock::new();
    let gate = GATE.get_or_init(|| {
        RelayGate::new(
            RestAuthHandler::new(SECRET),
            Arc::new(RelayPlane::default()),
        )
    });
    let from: SocketAddr = "203.0.113.7:5000".parse().unwrap();
    let verdict = gate.inspect_at(buf, from, NOW);
    if buf.first().is_none_or(|b| b & 0xC0 != 0) {
        assert_eq!(verdict, GateVerdict::Pass, "non-STUN datagram not passed");
        return;
    }
    match verdict {
        GateVerdict::Pass | GateVerdict::Drop => {}
        GateVerdict::Replace(out) => {
            assert_eq!(out.len(), 20, "replacement is not a bare header");
            assert_eq!(&out[..2], &buf[..2]);
            assert_eq!(&out[2..4], &[0, 0]);
            assert_eq!(&out[4..20], &buf[4..20]);
            let mut m = Message {
                raw: out,
                ..Default::default()
            };
            m.decode().expect("replacement decodes");
            assert!(m.attributes.0.is_empty());
        }
        GateVerdict::Answer(out) => {
            let mut req = Message {
                raw: buf.to_vec(),
                ..Default::default()
            };
            req.decode()
                .expect("answered a datagram that does not decode");
            let mut ans = Message {
                raw: out,
                ..Default::default()
            };
            ans.decode().expect("answer decodes");
            assert_eq!(ans.transaction_id, req.transaction_id);
            assert_eq!(ans.typ.method, req.typ.method);
            assert_eq!(ans.typ.class, CLASS_ERROR_RESPONSE);
            let user = TextAttribute::get_from_as(&req, ATTR_USERNAME).expect("username");
            let realm = TextAttribute::get_from_as(&req, ATTR_REALM).expect("realm");
            let key = RestAuthHandler::new(SECRET)
                .key_at(&user.text, &realm.text, NOW)
                .expect("answered a request whose credentials are refused");
            MessageIntegrity(key)
                .check(&mut ans)
                .expect("answer's MESSAGE-INTEGRITY does not verify");
        }
    }
}

fn datagram(buf: &[u8]) {
    gate(buf);
    if ChannelData::is_channel_data(buf) {
        let mut c = ChannelData {
            raw: buf.to_vec(),
            ..Default::default()
        };
        if c.decode().is_ok() {
            let mut out = ChannelData {
                data: c.data.clone(),
                number: c.number,
                raw: Vec::new(),
            };
            out.encode();
            let mut back = ChannelData {
                raw: out.raw.clone(),
                ..Default::default()
            };
            back.decode().expect("re-encoded ChannelData decodes");
            assert_eq!(back, c);
        }
        return;
    }

    let mut m = Message {
        raw: buf.to_vec(),
        ..Default::default()
    };
    if m.decode().is_err() {
        return;
    }

    // Round trip through the encoder.
    let mut copy = Message {
        typ: m.typ,
        transaction_id: m.transaction_id,
        attributes: m.attributes.clone(),
        ..Default::default()
    };
    copy.encode();
    let mut back = Message {
        raw: copy.raw.clone(),
        ..Default::default()
    };
    back.decode().expect("re-encoded STUN message decodes");
    assert!(back == m, "STUN round trip: {m} vs {back}");

    // The attribute getters of the request handlers: errors are fine, panics are not.
    let _ = turn::proto::reqtrans::RequestedTransport::default().get_from(&m);
    let _ = turn::proto::lifetime::Lifetime::default().get_from(&m);
    let _ = turn::proto::peeraddr::PeerAddress::default().get_from(&m);
    let _ = turn::proto::channum::ChannelNumber::default().get_from(&m);
    let _ = turn::proto::evenport::EvenPort::default().get_from(&m);
    let _ = turn::proto::reqfamily::RequestedAddressFamily::default().get_from(&m);
    let _ = turn::proto::rsrvtoken::ReservationToken::default().get_from(&m);
    let _ = turn::proto::data::Data::default().get_from(&m);
    let _ = turn::proto::dontfrag::DontFragmentAttr.get_from(&m);
    let _ = stun::xoraddr::XorMappedAddress::default().get_from(&m);
    let _ = stun::error_code::ErrorCodeAttribute::default().get_from(&m);
    let _ = stun::fingerprint::FINGERPRINT.check(&m);

    // Authentication as in `authenticate_request`.
    let mut nonce = TextAttribute::new(ATTR_NONCE, String::new());
    let mut realm = TextAttribute::new(ATTR_REALM, String::new());
    let mut username = TextAttribute::new(ATTR_USERNAME, String::new());
    if nonce.get_from(&m).is_err() || realm.get_from(&m).is_err() || username.get_from(&m).is_err()
    {
        return;
    }
    let (username, realm) = (username.to_string(), realm.to_string());
    username_invariants(&username, &realm);
    if let Ok(key) = RestAuthHandler::new(SECRET).key_at(&username, &realm, NOW) {
        let _ = MessageIntegrity(key).check(&mut m.clone());
    }
}
