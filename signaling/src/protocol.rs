//! Signaling wire types, shared by the server and every client (the `peershare` library
//! depends on this module, so the two cannot drift).
//!
//! Frames are JSON text frames over WebSocket, tagged by `"type"`. See `docs/PROTOCOL.md`.

use serde::{Deserialize, Serialize};

/// Version of the signaling protocol spoken by this build.
pub const PROTOCOL_VERSION: u32 = 2;

/// A client's identity inside one session (assigned by the server).
pub type ClientId = String;

/// Frames sent by a client to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    /// Join a session. `session: null` asks the server to create a fresh session with an
    /// short number as its code. A non-null code joins that session; if it does not exist the
    /// server answers `7006` unless `create` is true (then the client-chosen code, which
    /// must pass [`valid_session_code`], creates it). The field is required: a join
    /// without it is malformed (`7001`), `null` is how a client asks for a new session.
    Join {
        version: u32,
        #[serde(deserialize_with = "required_nullable")]
        session: Option<String>,
        name: String,
        #[serde(default)]
        password: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        create: bool,
        /// The client uses only TURN relay candidates; the server tells the other members
        /// ([`PeerInfo::relay_only`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        relay_only: bool,
        /// Rejoin as the member this client was before its connection was lost: the ID
        /// and the `resume_token` of its last `welcome`. With a valid token the client
        /// gets that ID back (taking the membership over from a connection that still
        /// holds it); otherwise the join goes on as one without `resume`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Resume>,
    },
    /// Relay `data` to one other client of the same session. The server does not
    /// interpret `data` (see [`SignalData`] for what peershare clients put there).
    Signal {
        to: ClientId,
        data: serde_json::Value,
    },
    /// Leave the session (the server then closes the socket).
    Leave,
    /// Keep-alive; answered by `pong`.
    Ping,
}

/// A field that must be present but may be `null` (serde treats a missing `Option` as
/// `None` unless the field has its own deserializer).
fn required_nullable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

/// Frames sent by the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    Welcome {
        session: String,
        client_id: ClientId,
        peers: Vec<PeerInfo>,
        ice_servers: Vec<IceServer>,
        /// What a later `join` carries in `resume` to get `client_id` back in this
        /// session after a lost connection, on this server or on another node of the
        /// same deployment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
    },
    PeerJoined {
        peer: PeerInfo,
    },
    PeerLeft {
        id: ClientId,
    },
    Signal {
        from: ClientId,
        data: serde_json::Value,
    },
    Error {
        code: u16,
        message: String,
        /// With `7012` (the server is draining): a suggested wait in milliseconds before
        /// reconnecting, to this server's URL (a load balancer sends the client to
        /// another node) or another one. With `7017` (a node cannot reach Redis): the
        /// wait before the next `join`. Absent on every other error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Pong,
    /// Fresh TURN credentials for a joined member, sent before the previous ones expire
    /// (every half credential lifetime) while it stays joined.
    IceServers {
        ice_servers: Vec<IceServer>,
    },
}

/// `join.resume`: the membership a client asks to get back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The client ID it had.
    pub id: ClientId,
    /// `welcome.resume_token` of that membership.
    pub token: String,
}

/// Another member of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: ClientId,
    pub name: String,
    /// The peer joined saying it uses only TURN relay candidates. Its side of any
    /// connection can then only be relayed, so the other side need not hold back relay
    /// candidate pairs while waiting for direct ones (the ICE agent's 2 s relay wait).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relay_only: bool,
}

/// One ICE server entry, in the browsers' `RTCIceServer` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What peershare clients carry in `signal.data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SignalData {
    Offer { sdp: String },
    Answer { sdp: String },
    Candidate { candidate: CandidateInit },
}

/// The browsers' `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CandidateInit {
    pub candidate: String,
    #[serde(default)]
    pub sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_mline_index: Option<u16>,
    #[serde(default)]
    pub username_fragment: Option<String>,
}

/// Stable numeric codes of signaling errors (sent in `error` frames).
pub mod codes {
    /// The frame is not valid JSON or misses required fields.
    pub const MALFORMED_FRAME: u16 = 7001;
    /// The frame's `type` is unknown to this server.
    pub const UNKNOWN_TYPE: u16 = 7002;
    /// The frame exceeds the server's frame size limit.
    pub const FRAME_TOO_LARGE: u16 = 7003;
    /// The client sends faster than the server's rate limit.
    pub const RATE_LIMITED: u16 = 7004;
    /// The session already holds the maximum number of peers.
    pub const SESSION_FULL: u16 = 7005;
    /// No session with that code exists.
    pub const SESSION_NOT_FOUND: u16 = 7006;
    /// Wrong or missing session password.
    pub const UNAUTHORIZED: u16 = 7007;
    /// The addressed client is not in the session.
    pub const UNKNOWN_RECIPIENT: u16 = 7008;
    /// A frame that needs a joined session arrived before `join`, or a second `join`.
    pub const BAD_STATE: u16 = 7009;
    /// The connection was idle for too long.
    pub const IDLE_TIMEOUT: u16 = 7010;
    /// The client's protocol version is not supported.
    pub const UNSUPPORTED_VERSION: u16 = 7011;
    /// The server is shutting down.
    pub const SHUTTING_DOWN: u16 = 7012;
    /// A field is out of its allowed range (name too long, bad session code …).
    pub const INVALID_FIELD: u16 = 7013;
    /// The client did not read its frames fast enough (its outbound queue overflowed);
    /// the server drops it from its session and closes the connection.
    pub const SLOW_CONSUMER: u16 = 7014;
    /// `join` with `create: true` and a code whose session exists already.
    pub const SESSION_EXISTS: u16 = 7015;
    /// Another connection resumed this client's membership (`join.resume`); this one is
    /// closed.
    pub const SUPERSEDED: u16 = 7016;
    /// The server cannot reach the store its sessions live in (a deployment of several
    /// nodes on Redis); the frame carries `retry_after_ms`.
    pub const UNAVAILABLE: u16 = 7017;
}

/// Maximum length of a display name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Whether a client-chosen session code is acceptable: 8 to 64 characters from
/// `[A-Za-z0-9_-]` (shell-safe and URL-safe).
pub fn valid_session_code(code: &str) -> bool {
    (8..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_join_roundtrip_matches_architecture_shape() {
        let raw = r#"{"type":"join","version":2,"session":null,"name":"alice","password":null}"#;
        let msg: ClientMessage = serde_json::from_str(raw).unwrap();
        assert_eq!(
            msg,
            ClientMessage::Join {
                version: 2,
                session: None,
                name: "alice".into(),
                password: None,
                create: false,
                relay_only: false,
                resume: None,
            }
        );
    }

    #[test]
    fn client_join_session_missing_is_an_error_null_is_none() {
        let missing = r#"{"type":"join","version":2,"name":"alice","password":null}"#;
        let e = serde_json::from_str::<ClientMessage>(missing).unwrap_err();
        assert!(e.to_string().contains("missing field `session`"), "{e}");
        let null = r#"{"type":"join","version":2,"session":null,"name":"alice"}"#;
        assert!(matches!(
            serde_json::from_str::<ClientMessage>(null),
            Ok(ClientMessage::Join { session: None, .. })
        ));
        let code = r#"{"type":"join","version":2,"session":"7","name":"alice"}"#;
        assert!(matches!(
            serde_json::from_str::<ClientMessage>(code),
            Ok(ClientMessage::Join { session: Some(s), .. }) if s == "7"
        ));
        // What the library sends: `session` always present, `null` included.
        let parsed: ClientMessage = serde_json::from_str(null).unwrap();
        let sent = serde_json::to_value(parsed).unwrap();
        assert_eq!(sent.get("session"), Some(&serde_json::Value::Null));
    }

    #[test]
    fn signal_data_candidate_uses_browser_field_names() {
        let raw = r#"{"kind":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#;
        let data: SignalData = serde_json::from_str(raw).unwrap();
        let SignalData::Candidate { candidate } = &data else {
            panic!("wrong kind")
        };
        assert_eq!(candidate.sdp_mid.as_deref(), Some("0"));
        assert_eq!(candidate.sdp_mline_index, Some(0));
        let back = serde_json::to_value(&data).unwrap();
        assert_eq!(back["candidate"]["sdpMLineIndex"], 0);
    }

    #[test]
    fn session_code_validation_rejects_unsafe_codes() {
        assert!(valid_session_code("abcdEFGH-123_"));
        assert!(!valid_session_code("short"));
        assert!(!valid_session_code("has space in it"));
        assert!(!valid_session_code("semi;colon;code"));
    }
}
