//! What one node knows of the shared sessions it has members in: its members' queues, a
//! mirror of every member's node, and the session's recent membership events. Pure logic
//! (no Redis, no clock): fed by join replies and the node channel's messages.
//!
//! Event numbers (`ev`) order a session's membership changes. A member that joined with
//! a snapshot taken at `ev0` (its `welcome.peers`) gets every later event, and none it
//! already saw in the snapshot, whatever the order in which the join's reply and the
//! channel's messages reach the node.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use super::peer_info;
use super::wire::{NodeMsg, Record};
use crate::error::Rejection;
use crate::protocol::{PeerInfo, ServerMessage};
use crate::registry::{
    Outbound, QueueBudget, Queued, check_signal, encode, not_in_a_session, offer,
};

/// Membership events kept per session for members whose join reply is still on its way.
const RECENT: usize = 1024;

#[derive(Default)]
pub(crate) struct State {
    sessions: HashMap<String, Sess>,
    clients: HashSet<String>,
}

#[derive(Default)]
struct Sess {
    pw_tag: String,
    last_ev: u64,
    local: HashMap<String, Local>,
    /// Members joining on this node whose join script has not answered yet: frames for
    /// them are queued (their `welcome` is written before the queue is read).
    pending: HashMap<String, mpsc::Sender<Queued>>,
    /// Every member's record (`None`: left at `ev`).
    mirror: HashMap<String, Entry>,
    recent: VecDeque<(u64, Change)>,
}

struct Local {
    seq: u64,
    /// The event number of its join: its record's.
    ev: u64,
    /// Events up to this one were in its `welcome`.
    since: u64,
    tx: mpsc::Sender<Queued>,
    superseded: Arc<AtomicBool>,
}

struct Entry {
    ev: u64,
    rec: Option<Record>,
}

#[derive(Clone)]
enum Change {
    Joined(String, Record),
    Left(String),
}

/// A member of this node removed while delivering (a slow consumer): to be removed from
/// Redis too.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Removed {
    pub session: String,
    pub id: String,
    pub ev: u64,
}

/// A join script's answer, with what the joining connection brings.
pub(crate) struct Joining<'a> {
    pub session: &'a str,
    pub id: &'a str,
    pub ev: u64,
    pub pw_tag: String,
    pub members: Vec<(String, Record)>,
    pub seq: u64,
    pub tx: mpsc::Sender<Queued>,
    pub superseded: Arc<AtomicBool>,
    pub budget: &'a Arc<QueueBudget>,
}

pub(crate) struct JoinedLocal {
    pub peers: Vec<PeerInfo>,
    pub slow: Vec<Removed>,
}

/// What a node holds of one session, to write back into a Redis that lost it.
pub(crate) struct Snapshot {
    pub session: String,
    pub pw_tag: String,
    pub last_ev: u64,
    pub members: Vec<(String, Record)>,
}

impl State {
    pub fn counts(&self) -> (usize, usize) {
        (self.sessions.len(), self.clients.len())
    }

    pub fn is_member(&self, client: &str) -> bool {
        self.clients.contains(client)
    }

    /// Queue frames for `id` while its join script runs.
    pub fn pending(&mut self, session: &str, id: &str, tx: mpsc::Sender<Queued>) {
        self.sessions
            .entry(session.to_owned())
            .or_default()
            .pending
            .insert(id.to_owned(), tx);
    }

    /// The join script refused (or failed): forget the pending member.
    pub fn unpending(&mut self, session: &str, id: &str) {
        if let Some(s) = self.sessions.get_mut(session) {
            s.pending.remove(id);
        }
        self.drop_if_unused(session);
    }

    fn drop_if_unused(&mut self, session: &str) {
        if self
            .sessions
            .get(session)
            .is_some_and(|s| s.local.is_empty() && s.pending.is_empty())
        {
            self.sessions.remove(session);
        }
    }

    /// A join script succeeded: the member is active; its `welcome.peers`.
    pub fn joined(&mut self, j: Joining<'_>) -> JoinedLocal {
        let sess = self.sessions.entry(j.session.to_owned()).or_default();
        sess.pending.remove(j.id);
        sess.pw_tag = j.pw_tag;
        sess.last_ev = sess.last_ev.max(j.ev);
        let mut peers: Vec<(u64, PeerInfo)> = Vec::new();
        for (id, rec) in j.members {
            if id != j.id {
                peers.push((rec.ev, peer_info(&id, &rec)));
            }
            let newer = sess.mirror.get(&id).is_none_or(|e| e.ev < rec.ev);
            if newer {
                sess.mirror.insert(
                    id,
                    Entry {
                        ev: rec.ev,
                        rec: Some(rec),
                    },
                );
            }
        }
        peers.sort_by_key(|(ev, _)| *ev);
        if let Some(old) = sess.local.remove(j.id) {
            old.superseded.store(true, Ordering::Release);
        }
        // Events after the snapshot that reached the node before this reply.
        let mut slow = Vec::new();
        let mut later: Vec<(u64, Change)> = sess
            .recent
            .iter()
            .filter(|(ev, _)| *ev > j.ev)
            .cloned()
            .collect();
        later.sort_by_key(|(ev, _)| *ev);
        for (_, change) in later {
            let (about, frame) = change_frame(&change);
            if about != j.id && !offer(j.budget, &j.tx, &frame, None) {
                slow.push(Removed {
                    session: j.session.to_owned(),
                    id: j.id.to_owned(),
                    ev: j.ev,
                });
                break;
            }
        }
        if slow.is_empty() {
            sess.local.insert(
                j.id.to_owned(),
                Local {
                    seq: j.seq,
                    ev: j.ev,
                    since: j.ev,
                    tx: j.tx,
                    superseded: j.superseded,
                },
            );
            self.clients.insert(j.id.to_owned());
        }
        JoinedLocal {
            peers: peers.into_iter().map(|(_, p)| p).collect(),
            slow,
        }
    }

    /// The connection of membership `seq` of `id` ended: the event number of its join,
    /// if it was still this node's member.
    pub fn leave(&mut self, session: &str, id: &str, seq: u64) -> Option<u64> {
        let sess = self.sessions.get_mut(session)?;
        if sess.local.get(id).is_none_or(|m| m.seq != seq) {
            return None;
        }
        let m = sess.local.remove(id)?;
        self.clients.remove(id);
        self.drop_if_unused(session);
        Some(m.ev)
    }

    /// The node of `to`, for a `signal` of `from` (membership `seq`).
    pub fn route(
        &self,
        session: &str,
        from: &str,
        seq: u64,
        to: &str,
    ) -> Result<String, Rejection> {
        let sess = self.sessions.get(session).ok_or_else(not_in_a_session)?;
        let sender = sess.local.get(from).is_some_and(|m| m.seq == seq);
        let recipient = sess.mirror.get(to).and_then(|e| e.rec.as_ref());
        check_signal(sender, from, to, recipient.is_some())?;
        Ok(recipient.map(|r| r.node.clone()).unwrap_or_default())
    }

    /// A message of the node channel; returns this node's members found too slow.
    pub fn apply(
        &mut self,
        own: &str,
        msg: NodeMsg,
        budget: &Arc<QueueBudget>,
        read: std::time::Instant,
    ) -> Vec<Removed> {
        match msg {
            NodeMsg::Signal { session, to, frame } => {
                let Some(sess) = self.sessions.get(&session) else {
                    return Vec::new();
                };
                let frame = Outbound::from(frame);
                if let Some(m) = sess.local.get(&to) {
                    if !offer(budget, &m.tx, &frame, Some(read)) {
                        let ev = m.ev;
                        self.remove_local(&session, &to);
                        return vec![Removed {
                            session,
                            id: to,
                            ev,
                        }];
                    }
                } else if let Some(tx) = sess.pending.get(&to) {
                    let _ = offer(budget, tx, &frame, Some(read));
                }
                Vec::new()
            }
            NodeMsg::Joined {
                session,
                id,
                ev,
                member,
            } => self.change(&session, ev, Change::Joined(id, member), budget),
            NodeMsg::Left { session, id, ev } => {
                // Removed from Redis while connected here (its node's heartbeat lapsed):
                // its connection ends.
                let ours = self
                    .sessions
                    .get(&session)
                    .and_then(|s| s.local.get(&id))
                    .is_some_and(|m| m.ev < ev);
                if ours {
                    self.remove_local(&session, &id);
                }
                self.change(&session, ev, Change::Left(id), budget)
            }
            NodeMsg::Moved {
                session,
                id,
                ev,
                node,
            } => {
                let Some(sess) = self.sessions.get_mut(&session) else {
                    return Vec::new();
                };
                sess.last_ev = sess.last_ev.max(ev);
                let entry = sess.mirror.get(&id);
                if entry.is_none_or(|e| e.ev < ev) {
                    let mut rec = entry.and_then(|e| e.rec.clone()).unwrap_or(Record {
                        node: String::new(),
                        ev,
                        relay_only: false,
                        name: String::new(),
                    });
                    rec.node.clone_from(&node);
                    rec.ev = ev;
                    sess.mirror.insert(id.clone(), Entry { ev, rec: Some(rec) });
                }
                if node != own && sess.local.get(&id).is_some_and(|m| m.ev < ev) {
                    if let Some(m) = sess.local.get(&id) {
                        m.superseded.store(true, Ordering::Release);
                    }
                    self.remove_local(&session, &id);
                }
                Vec::new()
            }
        }
    }

    fn remove_local(&mut self, session: &str, id: &str) {
        if let Some(s) = self.sessions.get_mut(session)
            && s.local.remove(id).is_some()
        {
            self.clients.remove(id);
        }
        self.drop_if_unused(session);
    }

    /// A membership event: the mirror, the recent events, and `peer-joined`/`peer-left`
    /// for this node's members that did not see it in their `welcome`.
    fn change(
        &mut self,
        session: &str,
        ev: u64,
        change: Change,
        budget: &Arc<QueueBudget>,
    ) -> Vec<Removed> {
        let Some(sess) = self.sessions.get_mut(session) else {
            return Vec::new();
        };
        sess.last_ev = sess.last_ev.max(ev);
        let (about, frame) = change_frame(&change);
        let about = about.to_owned();
        if sess.mirror.get(&about).is_none_or(|e| e.ev < ev) {
            let rec = match &change {
                Change::Joined(_, rec) => Some(rec.clone()),
                Change::Left(_) => None,
            };
            sess.mirror.insert(about.clone(), Entry { ev, rec });
        }
        if sess.recent.len() == RECENT {
            sess.recent.pop_front();
        }
        sess.recent.push_back((ev, change));
        let slow: Vec<(String, u64)> = sess
            .local
            .iter()
            .filter(|(id, m)| **id != about && m.since < ev)
            .filter(|(_, m)| !offer(budget, &m.tx, &frame, None))
            .map(|(id, m)| (id.clone(), m.ev))
            .collect();
        let mut removed = Vec::new();
        for (id, ev) in slow {
            self.remove_local(session, &id);
            removed.push(Removed {
                session: session.to_owned(),
                id,
                ev,
            });
        }
        removed
    }

    /// Nodes other than `own` with members in this node's sessions.
    pub fn remote_nodes(&self, own: &str) -> Vec<String> {
        let nodes: HashSet<&str> = self
            .sessions
            .values()
            .flat_map(|s| s.mirror.values())
            .filter_map(|e| e.rec.as_ref().map(|r| r.node.as_str()))
            .filter(|n| *n != own && !n.is_empty())
            .collect();
        nodes.into_iter().map(str::to_owned).collect()
    }

    /// The members recorded on `node`, as (session, ID).
    pub fn members_on(&self, node: &str) -> Vec<(String, String)> {
        self.sessions
            .iter()
            .flat_map(|(code, s)| {
                s.mirror
                    .iter()
                    .filter(|(_, e)| e.rec.as_ref().is_some_and(|r| r.node == node))
                    .map(move |(id, _)| (code.clone(), id.clone()))
            })
            .collect()
    }

    pub fn sessions(&self) -> Vec<String> {
        self.sessions.keys().cloned().collect()
    }

    /// This node's sessions and members, to write back into an empty Redis.
    pub fn snapshot(&self, own: &str) -> Vec<Snapshot> {
        self.sessions
            .iter()
            .map(|(code, s)| Snapshot {
                session: code.clone(),
                pw_tag: s.pw_tag.clone(),
                last_ev: s.last_ev,
                members: s
                    .local
                    .iter()
                    .filter_map(|(id, m)| {
                        let rec = s.mirror.get(id).and_then(|e| e.rec.clone());
                        Some((
                            id.clone(),
                            Record {
                                node: own.to_owned(),
                                ev: m.ev,
                                ..rec?
                            },
                        ))
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Whom a change is about, and the frame the other members get.
fn change_frame(change: &Change) -> (&str, Outbound) {
    match change {
        Change::Joined(id, rec) => (
            id,
            encode(&ServerMessage::PeerJoined {
                peer: peer_info(id, rec),
            }),
        ),
        Change::Left(id) => (id, encode(&ServerMessage::PeerLeft { id: id.clone() })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codes;

    fn rec(node: &str, ev: u64, name: &str) -> Record {
        Record {
            node: node.into(),
            ev,
            relay_only: false,
            name: name.into(),
        }
    }

    fn frames(rx: &mut mpsc::Receiver<Queued>) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        while let Ok(q) = rx.try_recv() {
            out.push(serde_json::from_str(q.frame().as_str()).unwrap());
        }
        out
    }

    fn join(
        st: &mut State,
        budget: &Arc<QueueBudget>,
        id: &str,
        ev: u64,
        members: Vec<(String, Record)>,
    ) -> (JoinedLocal, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(16);
        st.pending("s", id, tx.clone());
        let j = st.joined(Joining {
            session: "s",
            id,
            ev,
            pw_tag: String::new(),
            members,
            seq: ev,
            tx,
            superseded: Arc::new(AtomicBool::new(false)),
            budget,
        });
        (j, rx)
    }

    #[test]
    fn state_events_before_the_join_reply_are_replayed_once_and_older_ones_skipped() {
        let budget = QueueBudget::new(usize::MAX);
        let mut st = State::default();
        let (tx, mut rx) = mpsc::channel(16);
        st.pending("s", "j", tx.clone());
        // Before the reply: x (ev 1, in the snapshot) leaves at ev 3, y joins at ev 4.
        st.apply(
            "A",
            NodeMsg::Left {
                session: "s".into(),
                id: "x".into(),
                ev: 3,
            },
            &budget,
            std::time::Instant::now(),
        );
        st.apply(
            "A",
            NodeMsg::Joined {
                session: "s".into(),
                id: "y".into(),
                ev: 4,
                member: rec("B", 4, "yann"),
            },
            &budget,
            std::time::Instant::now(),
        );
        let j = st.joined(Joining {
            session: "s",
            id: "j",
            ev: 2,
            pw_tag: String::new(),
            members: vec![
                ("x".into(), rec("B", 1, "xena")),
                ("j".into(), rec("A", 2, "jo")),
            ],
            seq: 1,
            tx,
            superseded: Arc::new(AtomicBool::new(false)),
            budget: &budget,
        });
        assert_eq!(
            j.peers.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["x"]
        );
        let got = frames(&mut rx);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[0], ServerMessage::PeerLeft { id } if id == "x"));
        assert!(matches!(&got[1], ServerMessage::PeerJoined { peer } if peer.id == "y"));
        // x's mirror entry stays a tombstone: no route to it; y routes to B.
        assert!(st.route("s", "j", 1, "x").is_err());
        assert_eq!(st.route("s", "j", 1, "y").unwrap(), "B");
        // A late event already in the snapshot (x's join, ev 1) is not delivered.
        st.apply(
            "A",
            NodeMsg::Joined {
                session: "s".into(),
                id: "x".into(),
                ev: 1,
                member: rec("B", 1, "xena"),
            },
            &budget,
            std::time::Instant::now(),
        );
        assert!(frames(&mut rx).is_empty());
        assert!(st.route("s", "j", 1, "x").is_err());
    }

    #[test]
    fn state_signal_reaches_pending_and_joined_members_and_moved_supersedes() {
        let budget = QueueBudget::new(usize::MAX);
        let mut st = State::default();
        let (j, mut rx) = join(
            &mut st,
            &budget,
            "j",
            1,
            vec![("j".into(), rec("A", 1, "jo"))],
        );
        assert!(j.peers.is_empty());
        st.apply(
            "A",
            NodeMsg::Signal {
                session: "s".into(),
                to: "j".into(),
                frame: r#"{"type":"signal","from":"x","data":{}}"#.into(),
            },
            &budget,
            std::time::Instant::now(),
        );
        assert_eq!(frames(&mut rx).len(), 1);
        assert!(st.is_member("j"));
        let superseded = Arc::new(AtomicBool::new(false));
        if let Some(m) = st.sessions.get_mut("s").and_then(|s| s.local.get_mut("j")) {
            m.superseded = Arc::clone(&superseded);
        }
        st.apply(
            "A",
            NodeMsg::Moved {
                session: "s".into(),
                id: "j".into(),
                ev: 2,
                node: "B".into(),
            },
            &budget,
            std::time::Instant::now(),
        );
        assert!(superseded.load(Ordering::Acquire));
        assert!(!st.is_member("j"));
        assert_eq!(st.counts(), (0, 0));
    }

    #[test]
    fn state_leave_of_the_current_membership_only_and_routes_refuse_strangers() {
        let budget = QueueBudget::new(usize::MAX);
        let mut st = State::default();
        let members = vec![
            ("j".into(), rec("A", 5, "jo")),
            ("k".into(), rec("C", 3, "kim")),
        ];
        let (_j, _rx) = join(&mut st, &budget, "j", 5, members);
        assert_eq!(st.remote_nodes("A"), ["C"]);
        assert_eq!(st.members_on("C"), [("s".to_string(), "k".to_string())]);
        assert_eq!(
            st.route("s", "j", 5, "j").unwrap_err().code,
            codes::UNKNOWN_RECIPIENT
        );
        assert_eq!(
            st.route("s", "j", 5, "nobody").unwrap_err().code,
            codes::UNKNOWN_RECIPIENT
        );
        assert_eq!(
            st.route("s", "j", 4, "k").unwrap_err().code,
            codes::BAD_STATE
        );
        assert_eq!(st.snapshot("A")[0].members.len(), 1);
        assert_eq!(st.leave("s", "j", 4), None);
        assert_eq!(st.leave("s", "j", 5), Some(5));
        assert_eq!(st.counts(), (0, 0));
    }
}
