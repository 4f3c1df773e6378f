//! What nodes tell each other through Redis, and how a member is recorded there. Pure.
//!
//! A node subscribes to one channel, `ps:node:NODE`. Every message is text, fields
//! separated by `\n` (no field but the last can hold one: names refuse control
//! characters, codes and IDs are `[A-Za-z0-9_-]`, node IDs hex); the first field is the
//! kind:
//!
//! - `J SESSION ID EV NODE RELAY NAME`: `ID` joined `SESSION` (membership event number
//!   `EV`) on `NODE`; `RELAY` is `1` for `relay_only`.
//! - `L SESSION ID EV`: `ID` left (or was removed, or expired).
//! - `M SESSION ID EV NODE`: `ID` resumed its membership on `NODE`.
//! - `S` then, one or more times, `SESSION TO LEN FRAME`: deliver the server frame
//!   `FRAME` (a relayed `signal`, `LEN` bytes, newlines allowed) to `TO`, in this order.
//!   A node sends the signals it has for another node in one message (at most
//!   [`SIGNALS_MAX_BYTES`] unless a single frame is larger).
//!
//! `EV` numbers every membership change of a session (`HINCRBY` of its `ev` field), so a
//! node can tell a late event from a new one.
//!
//! A member's record (a field of the session's members hash): `NODE\nEV\nRELAY\nNAME`.

/// A node's signals for another node are packed into `S` messages of at most this many
/// bytes (one frame larger than this goes alone).
pub(crate) const SIGNALS_MAX_BYTES: usize = 256 * 1024;

/// Append one signal to the text of an `S` message (which starts `"S\n"`).
pub(crate) fn push_signal(text: &mut String, session: &str, to: &str, frame: &str) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = write!(text, "{session}\n{to}\n{}\n{frame}", frame.len());
}

/// A membership change or a frame to deliver, as sent to a node's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeMsg {
    Joined {
        session: String,
        id: String,
        ev: u64,
        member: Record,
    },
    Left {
        session: String,
        id: String,
        ev: u64,
    },
    Moved {
        session: String,
        id: String,
        ev: u64,
        node: String,
    },
    Signal {
        session: String,
        to: String,
        frame: String,
    },
}

/// Where and who a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub node: String,
    /// The event number of its join (or resumption): orders `welcome.peers`.
    pub ev: u64,
    pub relay_only: bool,
    pub name: String,
}

impl Record {
    /// The record's text.
    pub fn encode(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.node,
            self.ev,
            u8::from(self.relay_only),
            self.name
        )
    }

    /// A record read back, `None` if malformed.
    pub fn parse(text: &str) -> Option<Record> {
        let mut f = text.splitn(4, '\n');
        let node = f.next()?.to_owned();
        let ev = f.next()?.parse().ok()?;
        let relay_only = parse_flag(f.next()?)?;
        let name = f.next()?.to_owned();
        Some(Record {
            node,
            ev,
            relay_only,
            name,
        })
    }
}

fn parse_flag(s: &str) -> Option<bool> {
    match s {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

impl NodeMsg {
    /// The message's text (what the Lua scripts build for `J`, `L` and `M`, and the
    /// outbox for `S`).
    #[cfg(test)]
    pub fn encode(&self) -> String {
        match self {
            NodeMsg::Joined {
                session,
                id,
                ev,
                member,
            } => format!(
                "J\n{session}\n{id}\n{ev}\n{}\n{}\n{}",
                member.node,
                u8::from(member.relay_only),
                member.name
            ),
            NodeMsg::Left { session, id, ev } => format!("L\n{session}\n{id}\n{ev}"),
            NodeMsg::Moved {
                session,
                id,
                ev,
                node,
            } => format!("M\n{session}\n{id}\n{ev}\n{node}"),
            NodeMsg::Signal { session, to, frame } => {
                let mut text = String::from("S\n");
                push_signal(&mut text, session, to, frame);
                text
            }
        }
    }

    /// A message read from the channel (several for an `S` message), `None` if
    /// malformed.
    pub fn parse(text: &str) -> Option<Vec<NodeMsg>> {
        let (kind, rest) = text.split_once('\n')?;
        if kind == "S" {
            return parse_signals(rest);
        }
        Self::parse_one(kind, rest).map(|m| vec![m])
    }

    fn parse_one(kind: &str, rest: &str) -> Option<NodeMsg> {
        match kind {
            "J" => {
                let mut f = rest.splitn(6, '\n');
                let session = f.next()?.to_owned();
                let id = f.next()?.to_owned();
                let ev = f.next()?.parse().ok()?;
                let node = f.next()?.to_owned();
                let relay_only = parse_flag(f.next()?)?;
                let name = f.next()?.to_owned();
                Some(NodeMsg::Joined {
                    session,
                    id,
                    ev,
                    member: Record {
                        node,
                        ev,
                        relay_only,
                        name,
                    },
                })
            }
            "L" => {
                let mut f = rest.splitn(3, '\n');
                Some(NodeMsg::Left {
                    session: f.next()?.to_owned(),
                    id: f.next()?.to_owned(),
                    ev: f.next()?.parse().ok()?,
                })
            }
            "M" => {
                let mut f = rest.splitn(4, '\n');
                Some(NodeMsg::Moved {
                    session: f.next()?.to_owned(),
                    id: f.next()?.to_owned(),
                    ev: f.next()?.parse().ok()?,
                    node: f.next()?.to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// The signals of an `S` message (after its first line), in order; `None` if any is
/// malformed or there is none.
fn parse_signals(mut rest: &str) -> Option<Vec<NodeMsg>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (session, r) = rest.split_once('\n')?;
        let (to, r) = r.split_once('\n')?;
        let (len, r) = r.split_once('\n')?;
        let len: usize = len.parse().ok()?;
        let frame = r.get(..len)?;
        rest = r.get(len..)?;
        out.push(NodeMsg::Signal {
            session: session.to_owned(),
            to: to.to_owned(),
            frame: frame.to_owned(),
        });
    }
    (!out.is_empty()).then_some(out)
}

/// The Redis channel of a node.
pub(crate) fn channel(node: &str) -> String {
    format!("ps:node:{node}")
}

/// The liveness key of a node (set with a TTL by its heartbeat).
pub(crate) fn alive_key(node: &str) -> String {
    format!("ps:alive:{node}")
}

/// A session's hash (`pw`: password tag or empty, `ev`: last event number) and its
/// members hash; the `{…}` hash tag keeps both in one Redis Cluster slot.
pub(crate) fn session_keys(session: &str) -> [String; 2] {
    [
        format!("ps:s:{{{session}}}"),
        format!("ps:s:{{{session}}}:m"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_msg_every_kind_round_trips_and_the_last_field_keeps_newlines() {
        let member = Record {
            node: "00aa".into(),
            ev: 7,
            relay_only: true,
            name: "Ada Lovelace".into(),
        };
        for msg in [
            NodeMsg::Joined {
                session: "42".into(),
                id: "0123456789ab".into(),
                ev: 7,
                member: member.clone(),
            },
            NodeMsg::Left {
                session: "42".into(),
                id: "0123456789ab".into(),
                ev: 8,
            },
            NodeMsg::Moved {
                session: "42".into(),
                id: "0123456789ab".into(),
                ev: 9,
                node: "00bb".into(),
            },
            NodeMsg::Signal {
                session: "42".into(),
                to: "0123456789ab".into(),
                frame: "{\"type\":\"signal\",\n\"data\":{}}".into(),
            },
        ] {
            assert_eq!(NodeMsg::parse(&msg.encode()), Some(vec![msg]));
        }
        assert_eq!(Record::parse(&member.encode()), Some(member));
    }

    #[test]
    fn node_msg_signals_packed_in_one_message_come_out_in_order() {
        let mut text = String::from("S\n");
        let frames = ["{\"a\":\n1}", "", "é\n\n", "{}"];
        for (i, f) in frames.iter().enumerate() {
            push_signal(&mut text, "42", &format!("id{i}"), f);
        }
        let msgs = NodeMsg::parse(&text).unwrap();
        let expected: Vec<NodeMsg> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| NodeMsg::Signal {
                session: "42".into(),
                to: format!("id{i}"),
                frame: (*f).into(),
            })
            .collect();
        assert_eq!(msgs, expected);
    }

    #[test]
    fn node_msg_malformed_is_none() {
        for bad in [
            "",
            "J",
            "X\na\nb",
            "J\n42\nid\nnot-a-number\nn\n0\nname",
            "J\n42\nid\n7\nn\n2\nname",
            "L\n42\nid",
            "M\n42\nid\n1",
            "S\n42",
            "S\n",
            "S\n42\nto\n5\nabc",
            "S\n42\nto\nx\nabc",
            "S\n42\nto\n1\né",
        ] {
            assert_eq!(NodeMsg::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Record::parse("n\n1\n0"), None);
    }
}
