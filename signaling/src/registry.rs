//! The session registry: which clients are in which session, and delivery between them.
//!
//! One `std::sync::Mutex` guards the whole map. It is held only for map updates and
//! non-blocking `try_send`s into the members' bounded outbound queues, never across an
//! `.await`. A member whose queue is full is a slow consumer: it is removed from its
//! session (dropping the registry's sender closes its queue, which its connection task
//! notices and answers by closing the socket) and the others get `peer-left`.
//!
//! The bytes waiting in all queues together are bounded too ([`QueueBudget`]): a member
//! whose next frame would push the server's total over the bound is treated as a slow
//! consumer, like one whose own queue is full.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hmac::{Hmac, Mac};
use rand::Rng;
use sha1::Sha1;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::error::Rejection;
use crate::ids;
use crate::protocol::{
    ClientId, MAX_NAME_LEN, PeerInfo, Resume, ServerMessage, codes, valid_session_code,
};
use crate::resume::ResumeKey;

/// An encoded server frame.
pub(crate) type Outbound = Utf8Bytes;

/// The bytes waiting in every member's outbound queue of one server, and their bound.
#[derive(Debug)]
pub(crate) struct QueueBudget {
    used: AtomicUsize,
    max: usize,
}

impl QueueBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(QueueBudget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Reserve `len` bytes, or `None` when that would exceed the bound.
    fn try_charge(self: &Arc<Self>, len: usize) -> Option<Charge> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(len).filter(|total| *total <= self.max)
            })
            .ok()?;
        Some(Charge {
            budget: Arc::clone(self),
            len,
        })
    }

    /// Bytes currently queued (for tests and metrics).
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Bytes reserved in a [`QueueBudget`], given back when dropped.
#[derive(Debug)]
struct Charge {
    budget: Arc<QueueBudget>,
    len: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.len, Ordering::AcqRel);
    }
}

/// A frame waiting in a member's outbound queue. Its bytes count against the server's
/// [`QueueBudget`] until it is dropped (after it was written, or with the queue).
#[derive(Debug)]
pub(crate) struct Queued {
    frame: Outbound,
    _charge: Charge,
    /// For a relayed `signal`: when the sender's connection read it (relay latency).
    received: Option<std::time::Instant>,
}

impl Queued {
    /// The frame, still charged to the budget while `self` lives.
    pub fn frame(&self) -> &Outbound {
        &self.frame
    }

    /// When the sender's connection read the `signal` this frame relays.
    pub fn received(&self) -> Option<std::time::Instant> {
        self.received
    }

    #[cfg(test)]
    fn as_str(&self) -> &str {
        self.frame.as_str()
    }
}

/// Serialize a server frame.
pub(crate) fn encode(msg: &ServerMessage) -> Outbound {
    match serde_json::to_string(msg) {
        Ok(s) => Utf8Bytes::from(s),
        // Unreachable for these types (string-keyed maps only); never panic regardless.
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a server frame");
            Utf8Bytes::from_static(
                r#"{"type":"error","code":7001,"message":"internal encoding error"}"#,
            )
        }
    }
}

/// A join as asked for by a client (fields not yet validated).
#[derive(Debug, Clone, Copy)]
pub(crate) struct JoinRequest<'a> {
    pub session: Option<&'a str>,
    pub create: bool,
    pub name: &'a str,
    pub password: Option<&'a str>,
    pub relay_only: bool,
    pub resume: Option<&'a Resume>,
}

/// A successful join.
#[derive(Debug, Clone)]
pub(crate) struct Joined {
    pub session: String,
    pub client_id: ClientId,
    /// Distinguishes this membership from any later one reusing the same ID.
    pub seq: u64,
    /// The other members, in join order.
    pub peers: Vec<PeerInfo>,
    /// `welcome.resume_token`.
    pub resume_token: String,
    /// Set when a later join resumed this membership (`join.resume`) on another
    /// connection: the registry then drops this connection's queue.
    pub superseded: Arc<AtomicBool>,
}

/// HMAC-SHA1 of the session password under a random per-session key: the password itself
/// is not kept, and checking a candidate compares tags in constant time.
struct PasswordTag {
    key: [u8; 32],
    tag: Vec<u8>,
}

type HmacSha1 = Hmac<Sha1>;

impl PasswordTag {
    fn new(password: &str) -> Option<Self> {
        let key: [u8; 32] = rand::rng().random();
        let mut mac = HmacSha1::new_from_slice(&key).ok()?;
        mac.update(password.as_bytes());
        Some(PasswordTag {
            key,
            tag: mac.finalize().into_bytes().to_vec(),
        })
    }

    fn verify(&self, candidate: &str) -> bool {
        let Ok(mut mac) = HmacSha1::new_from_slice(&self.key) else {
            return false;
        };
        mac.update(candidate.as_bytes());
        mac.verify_slice(&self.tag).is_ok()
    }
}

struct Member {
    name: String,
    relay_only: bool,
    seq: u64,
    tx: mpsc::Sender<Queued>,
    superseded: Arc<AtomicBool>,
}

struct Session {
    password: Option<PasswordTag>,
    members: HashMap<ClientId, Member>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    clients: HashSet<ClientId>,
    next_seq: u64,
}

/// All sessions of one server.
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    max_peers: usize,
    budget: Arc<QueueBudget>,
    resume_key: ResumeKey,
}

impl Registry {
    /// A registry allowing `max_peers` per session and `max_queued_bytes` waiting in all
    /// outbound queues together.
    pub fn new(max_peers: usize, max_queued_bytes: usize) -> Self {
        Registry {
            inner: Mutex::new(Inner::default()),
            max_peers: max_peers.max(1),
            budget: QueueBudget::new(max_queued_bytes),
            resume_key: ResumeKey::random(),
        }
    }

    /// The bound on bytes queued for all clients (shared with the cluster's deliveries).
    pub fn budget(&self) -> Arc<QueueBudget> {
        Arc::clone(&self.budget)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; if something ever did, the map is still
        // consistent enough to keep serving other sessions.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validate and perform a join. On success the new member's outbound queue is `tx`,
    /// and every other member has been sent `peer-joined`.
    /// Whether `client` is a member of a session now.
    pub fn is_member(&self, client: &str) -> bool {
        self.lock().clients.contains(client)
    }

    pub fn join(
        &self,
        req: JoinRequest<'_>,
        tx: mpsc::Sender<Queued>,
    ) -> Result<Joined, Rejection> {
        let name = checked_name(req.name)?;
        let password = req.password.filter(|p| !p.is_empty());

        let mut guard = self.lock();
        let inner = &mut *guard;
        // With the ID of a valid `resume` (never for a new server-chosen code): taken over
        // if still a member, else joined with again if no one else uses it.
        let (code, resumed) = match req.session {
            // A short number: the route of a code like `7-orbit-canvas-tiger`. Guessing
            // it gains nothing: the peers authenticate each other with the code's secret,
            // which the server never sees.
            None => loop {
                let code = ids::session_number(inner.sessions.len());
                if !inner.sessions.contains_key(&code) {
                    break (code, None);
                }
            },
            Some(code) => {
                let resumed = req
                    .resume
                    .filter(|r| self.resume_key.verify(code, &r.id, &r.token))
                    .map(|r| r.id.as_str());
                if let Some(session) = inner.sessions.get(code) {
                    // Creating never joins silently: someone else may hold this code.
                    // (A member resuming its membership created it, or joined it.)
                    if req.create && resumed.is_none() {
                        return Err(Rejection::new(
                            codes::SESSION_EXISTS,
                            "a session with this code exists already",
                        ));
                    }
                    if let Some(tag) = &session.password
                        && !password.is_some_and(|p| tag.verify(p))
                    {
                        return Err(Rejection::new(
                            codes::UNAUTHORIZED,
                            "wrong or missing session password",
                        ));
                    }
                } else if !req.create {
                    return Err(Rejection::new(codes::SESSION_NOT_FOUND, "no such session"));
                } else if !valid_session_code(code) {
                    return Err(Rejection::new(
                        codes::INVALID_FIELD,
                        "session code must be 8 to 64 characters from [A-Za-z0-9_-]",
                    ));
                }
                (code.to_owned(), resumed)
            }
        };
        inner.next_seq += 1;
        let seq = inner.next_seq;
        let superseded = Arc::new(AtomicBool::new(false));
        if let Some(id) = resumed
            && let Some(session) = inner.sessions.get_mut(&code)
            && let Some(member) = session.members.get_mut(id)
        {
            // The old connection's queue closes with its sender; the flag tells it why.
            member.superseded.store(true, Ordering::Release);
            member.superseded = Arc::clone(&superseded);
            member.tx = tx;
            member.seq = seq;
            tracing::debug!(session = %code, client_id = id, "membership resumed");
            return Ok(Joined {
                peers: peers_in_order(session, Some(id)),
                resume_token: self.resume_key.token(&code, id),
                session: code,
                client_id: id.to_owned(),
                seq,
                superseded,
            });
        }
        if inner
            .sessions
            .get(&code)
            .is_some_and(|s| s.members.len() >= self.max_peers)
        {
            return Err(Rejection::new(
                codes::SESSION_FULL,
                format!("session is full ({} peers)", self.max_peers),
            ));
        }
        let client_id = match resumed {
            Some(id) if !inner.clients.contains(id) => id.to_owned(),
            _ => loop {
                let id = ids::client_id();
                if !inner.clients.contains(&id) {
                    break id;
                }
            },
        };

        let session = inner
            .sessions
            .entry(code.clone())
            .or_insert_with(|| Session {
                password: password.and_then(PasswordTag::new),
                members: HashMap::new(),
            });
        let peers = peers_in_order(session, None);

        let joined_frame = encode(&ServerMessage::PeerJoined {
            peer: PeerInfo {
                id: client_id.clone(),
                name: name.to_owned(),
                relay_only: req.relay_only,
            },
        });
        let slow = deliver(
            &self.budget,
            session,
            session.members.keys().cloned().collect(),
            &joined_frame,
            None,
        );
        session.members.insert(
            client_id.clone(),
            Member {
                name: name.to_owned(),
                relay_only: req.relay_only,
                seq,
                tx,
                superseded: Arc::clone(&superseded),
            },
        );
        inner.clients.insert(client_id.clone());
        remove_members(&self.budget, inner, &code, slow);

        Ok(Joined {
            resume_token: self.resume_key.token(&code, &client_id),
            session: code,
            client_id,
            seq,
            peers,
            superseded,
        })
    }

    /// Remove a member (if it is still the same membership) and tell the others.
    /// Idempotent. Returns whether the member was present.
    pub fn leave(&self, session: &str, client_id: &str, seq: u64) -> bool {
        let mut guard = self.lock();
        let present = guard
            .sessions
            .get(session)
            .and_then(|s| s.members.get(client_id))
            .is_some_and(|m| m.seq == seq);
        if present {
            remove_members(
                &self.budget,
                &mut guard,
                session,
                vec![client_id.to_owned()],
            );
        }
        present
    }

    /// Relay `data` (JSON text, an object, passed through byte for byte) from one member
    /// to another of the same session; `received` is when the sender's connection read
    /// the frame.
    pub fn relay(
        &self,
        session: &str,
        from: &str,
        seq: u64,
        to: &str,
        data: &str,
        received: std::time::Instant,
    ) -> Result<(), Rejection> {
        // Built before taking the lock: the frame `ServerMessage::Signal` serializes to,
        // with `data` spliced in as received.
        let frame = signal_frame(from, data);
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(s) = inner.sessions.get_mut(session) else {
            return Err(not_in_a_session());
        };
        let sender = s.members.get(from).is_some_and(|m| m.seq == seq);
        check_signal(sender, from, to, s.members.contains_key(to))?;
        let slow = deliver(&self.budget, s, vec![to.to_owned()], &frame, Some(received));
        remove_members(&self.budget, inner, session, slow);
        Ok(())
    }

    /// Number of sessions (for tests and metrics).
    #[cfg(test)]
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Sessions and joined clients now (for `/metrics`).
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.sessions.len(), inner.clients.len())
    }
}

/// The sender of a `signal` is not (this membership of) a member of a session: `7009`.
pub(crate) fn not_in_a_session() -> Rejection {
    Rejection::new(codes::BAD_STATE, "not in a session")
}

/// A `signal`'s refusals, in order: the sender is not this membership of a member
/// (`sender`), it addresses itself, or `to` is no member of its session
/// (`recipient`).
pub(crate) fn check_signal(
    sender: bool,
    from: &str,
    to: &str,
    recipient: bool,
) -> Result<(), Rejection> {
    if !sender {
        return Err(not_in_a_session());
    }
    if to == from {
        return Err(Rejection::new(
            codes::UNKNOWN_RECIPIENT,
            "cannot signal yourself",
        ));
    }
    if !recipient {
        return Err(Rejection::new(
            codes::UNKNOWN_RECIPIENT,
            format!("no client {to:?} in this session"),
        ));
    }
    Ok(())
}

/// The trimmed display name of a join, or why it is refused (`7013`).
pub(crate) fn checked_name(name: &str) -> Result<&str, Rejection> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Rejection::new(codes::INVALID_FIELD, "name is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Rejection::new(
            codes::INVALID_FIELD,
            format!("name is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Rejection::new(
            codes::INVALID_FIELD,
            "name contains control characters",
        ));
    }
    Ok(name)
}

/// The members of `session` but `except`, in join order.
fn peers_in_order(session: &Session, except: Option<&str>) -> Vec<PeerInfo> {
    let mut peers: Vec<(u64, PeerInfo)> = session
        .members
        .iter()
        .filter(|(id, _)| Some(id.as_str()) != except)
        .map(|(id, m)| {
            (
                m.seq,
                PeerInfo {
                    id: id.clone(),
                    name: m.name.clone(),
                    relay_only: m.relay_only,
                },
            )
        })
        .collect();
    peers.sort_by_key(|(seq, _)| *seq);
    peers.into_iter().map(|(_, p)| p).collect()
}

/// `{"type":"signal","from":FROM,"data":DATA}`: what `ServerMessage::Signal` encodes to,
/// with `data` (JSON text) spliced in unchanged.
pub(crate) fn signal_frame(from: &str, data: &str) -> Outbound {
    Utf8Bytes::from(signal_text(from, data))
}

/// The text of [`signal_frame`].
pub(crate) fn signal_text(from: &str, data: &str) -> String {
    // A client ID is 12 characters from [a-z0-9]; encoded as a JSON string regardless.
    let from = serde_json::to_string(from).unwrap_or_else(|_| "\"\"".to_string());
    let mut frame = String::with_capacity(36 + from.len() + data.len());
    frame.push_str(r#"{"type":"signal","from":"#);
    frame.push_str(&from);
    frame.push_str(r#","data":"#);
    frame.push_str(data);
    frame.push('}');
    frame
}

/// `try_send` `frame` to each of `targets`; return those whose queue is full or whose
/// frame would push the bytes queued on the whole server over the budget.
fn deliver(
    budget: &Arc<QueueBudget>,
    session: &Session,
    targets: Vec<ClientId>,
    frame: &Outbound,
    received: Option<std::time::Instant>,
) -> Vec<ClientId> {
    let mut slow = Vec::new();
    for id in targets {
        let Some(member) = session.members.get(&id) else {
            continue;
        };
        if !offer(budget, &member.tx, frame, received) {
            slow.push(id);
        }
    }
    slow
}

/// `try_send` `frame` to one member's queue, charged to `budget`; `false` when the queue
/// is full or the budget would be exceeded (a slow consumer). A closed queue counts as
/// delivered: its connection task is ending and removes itself.
pub(crate) fn offer(
    budget: &Arc<QueueBudget>,
    tx: &mpsc::Sender<Queued>,
    frame: &Outbound,
    received: Option<std::time::Instant>,
) -> bool {
    let Some(charge) = budget.try_charge(frame.len()) else {
        return false;
    };
    let queued = Queued {
        frame: frame.clone(),
        _charge: charge,
        received,
    };
    !matches!(tx.try_send(queued), Err(mpsc::error::TrySendError::Full(_)))
}

/// Remove members from a session, telling the remaining ones (which may in turn turn out
/// to be slow and be removed too). Drops the session when it becomes empty.
fn remove_members(
    budget: &Arc<QueueBudget>,
    inner: &mut Inner,
    code: &str,
    mut pending: Vec<ClientId>,
) {
    let Some(session) = inner.sessions.get_mut(code) else {
        return;
    };
    while let Some(id) = pending.pop() {
        if session.members.remove(&id).is_none() {
            continue;
        }
        inner.clients.remove(&id);
        tracing::debug!(session = code, client_id = %id, "member removed");
        let frame = encode(&ServerMessage::PeerLeft { id });
        let others: Vec<ClientId> = session
            .members
            .keys()
            .filter(|k| !pending.contains(k))
            .cloned()
            .collect();
        pending.extend(deliver(budget, session, others, &frame, None));
    }
    if session.members.is_empty() {
        inner.sessions.remove(code);
        tracing::debug!(session = code, "session removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(session: Option<&'a str>, name: &'a str) -> JoinRequest<'a> {
        JoinRequest {
            session,
            create: false,
            name,
            password: None,
            relay_only: false,
            resume: None,
        }
    }

    fn recv_now(rx: &mut mpsc::Receiver<Queued>) -> Option<ServerMessage> {
        rx.try_recv()
            .ok()
            .map(|f| serde_json::from_str(f.as_str()).unwrap())
    }

    #[test]
    fn registry_join_without_code_creates_session() {
        let r = Registry::new(4, usize::MAX);
        let (tx, _rx) = mpsc::channel(8);
        let j = r.join(req(None, " alice "), tx).unwrap();
        assert!(
            j.session
                .parse::<u32>()
                .is_ok_and(|n| (1..100).contains(&n))
        );
        assert!(j.peers.is_empty());
        assert_eq!(r.session_count(), 1);
    }

    #[test]
    fn registry_resume_of_a_present_member_takes_it_over_silently() {
        let r = Registry::new(2, usize::MAX);
        let (ta, mut ra) = mpsc::channel(8);
        let a = r.join(req(None, "alice"), ta).unwrap();
        let (tb, mut rb) = mpsc::channel(8);
        let b = r.join(req(Some(&a.session), "bob"), tb).unwrap();
        assert_eq!(recv_now(&mut ra).map(|_| ()), Some(()));
        let resume = Resume {
            id: b.client_id.clone(),
            token: b.resume_token.clone(),
        };
        // The session is full (2), yet the member it holds comes back: no capacity check.
        let (tb2, _rb2) = mpsc::channel(8);
        let b2 = r
            .join(
                JoinRequest {
                    resume: Some(&resume),
                    ..req(Some(&a.session), "bob again")
                },
                tb2,
            )
            .unwrap();
        assert_eq!(b2.client_id, b.client_id);
        assert_eq!(b2.resume_token, b.resume_token);
        assert_eq!(b2.peers.len(), 1);
        assert!(b.superseded.load(Ordering::Acquire));
        assert!(!b2.superseded.load(Ordering::Acquire));
        // The old queue is closed; alice heard nothing.
        assert!(matches!(
            rb.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(recv_now(&mut ra), None);
        // The old connection's leave is a no-op; the new membership relays.
        assert!(!r.leave(&a.session, &b.client_id, b.seq));
        r.relay(
            &a.session,
            &a.client_id,
            a.seq,
            &b.client_id,
            "{}",
            std::time::Instant::now(),
        )
        .unwrap();
    }

    #[test]
    fn registry_resume_after_leave_rejoins_with_the_same_id_and_bad_tokens_get_a_new_one() {
        let r = Registry::new(4, usize::MAX);
        let (ta, mut ra) = mpsc::channel(8);
        let a = r.join(req(None, "alice"), ta).unwrap();
        let (tb, _rb) = mpsc::channel(8);
        let b = r.join(req(Some(&a.session), "bob"), tb).unwrap();
        assert!(r.leave(&a.session, &b.client_id, b.seq));
        assert_eq!(recv_now(&mut ra).map(|_| ()), Some(()));
        assert_eq!(recv_now(&mut ra).map(|_| ()), Some(()));
        let good = Resume {
            id: b.client_id.clone(),
            token: b.resume_token.clone(),
        };
        let (tb2, _rb2) = mpsc::channel(8);
        let b2 = r
            .join(
                JoinRequest {
                    resume: Some(&good),
                    ..req(Some(&a.session), "bob")
                },
                tb2,
            )
            .unwrap();
        assert_eq!(b2.client_id, b.client_id);
        assert!(matches!(
            recv_now(&mut ra),
            Some(ServerMessage::PeerJoined { peer }) if peer.id == b.client_id
        ));
        // A token of another ID, or for alice's ID: a fresh ID, and alice stays.
        for bad in [
            Resume {
                id: a.client_id.clone(),
                token: b.resume_token.clone(),
            },
            Resume {
                id: a.client_id.clone(),
                token: "x".repeat(43),
            },
        ] {
            let (tc, _rc) = mpsc::channel(8);
            let c = r
                .join(
                    JoinRequest {
                        resume: Some(&bad),
                        ..req(Some(&a.session), "carol")
                    },
                    tc,
                )
                .unwrap();
            assert_ne!(c.client_id, a.client_id);
            assert!(matches!(
                recv_now(&mut ra),
                Some(ServerMessage::PeerJoined { peer }) if peer.id == c.client_id
            ));
        }
        // `create: true` with a valid resume is not "session exists".
        let (tb3, _rb3) = mpsc::channel(8);
        let resumed = Resume {
            id: b2.client_id.clone(),
            token: b2.resume_token.clone(),
        };
        let b3 = r
            .join(
                JoinRequest {
                    create: true,
                    resume: Some(&resumed),
                    ..req(Some(&a.session), "bob")
                },
                tb3,
            )
            .unwrap();
        assert_eq!(b3.client_id, b.client_id);
    }

    #[test]
    fn registry_join_existing_lists_peers_in_join_order_and_notifies() {
        let r = Registry::new(4, usize::MAX);
        let (ta, mut ra) = mpsc::channel(8);
        let a = r.join(req(None, "alice"), ta).unwrap();
        let (tb, mut rb) = mpsc::channel(8);
        let b = r.join(req(Some(&a.session), "bob"), tb).unwrap();
        let (tc, _rc) = mpsc::channel(8);
        let c = r.join(req(Some(&a.session), "carol"), tc).unwrap();
        let names: Vec<_> = c.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(
            recv_now(&mut ra),
            Some(ServerMessage::PeerJoined {
                peer: PeerInfo {
                    id: b.client_id.clone(),
                    name: "bob".into(),
                    relay_only: false,
                }
            })
        );
        assert!(matches!(
            recv_now(&mut ra),
            Some(ServerMessage::PeerJoined { .. })
        ));
        assert!(matches!(
            recv_now(&mut rb),
            Some(ServerMessage::PeerJoined { .. })
        ));
        assert_eq!(recv_now(&mut rb), None);
    }

    #[test]
    fn registry_join_validates_name_and_code() {
        let r = Registry::new(4, usize::MAX);
        let (tx, _rx) = mpsc::channel(8);
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for name in ["", "   ", long.as_str(), "a\u{7}b"] {
            let e = r.join(req(None, name), tx.clone()).unwrap_err();
            assert_eq!(e.code, codes::INVALID_FIELD, "{name:?}");
        }
        let e = r
            .join(req(Some("nosuchsession"), "a"), tx.clone())
            .unwrap_err();
        assert_eq!(e.code, codes::SESSION_NOT_FOUND);
        let bad = JoinRequest {
            create: true,
            ..req(Some("bad code!"), "a")
        };
        assert_eq!(
            r.join(bad, tx.clone()).unwrap_err().code,
            codes::INVALID_FIELD
        );
        let good = JoinRequest {
            create: true,
            ..req(Some("my-own-code_1"), "a")
        };
        assert_eq!(r.join(good, tx).unwrap().session, "my-own-code_1");
    }

    #[test]
    fn registry_create_existing_code_is_refused_not_joined() {
        let r = Registry::new(4, usize::MAX);
        let (tx, _rx) = mpsc::channel(8);
        let create = |name| JoinRequest {
            create: true,
            ..req(Some("team-share"), name)
        };
        let squatter = r.join(create("stranger"), tx.clone()).unwrap();
        assert_eq!(squatter.session, "team-share");
        let e = r.join(create("owner"), tx.clone()).unwrap_err();
        assert_eq!(e.code, codes::SESSION_EXISTS);
        // Joining on purpose still works.
        assert!(r.join(req(Some("team-share"), "member"), tx).is_ok());
    }

    #[test]
    fn registry_password_session_rejects_wrong_password() {
        let r = Registry::new(4, usize::MAX);
        let (tx, _rx) = mpsc::channel(8);
        let a = r
            .join(
                JoinRequest {
                    password: Some("s3cret"),
                    ..req(None, "a")
                },
                tx.clone(),
            )
            .unwrap();
        for pw in [None, Some(""), Some("s3cre"), Some("s3cret!")] {
            let e = r
                .join(
                    JoinRequest {
                        password: pw,
                        ..req(Some(&a.session), "b")
                    },
                    tx.clone(),
                )
                .unwrap_err();
            assert_eq!(e.code, codes::UNAUTHORIZED, "{pw:?}");
        }
        r.join(
            JoinRequest {
                password: Some("s3cret"),
                ..req(Some(&a.session), "b")
            },
            tx,
        )
        .unwrap();
    }

    #[test]
    fn registry_full_session_rejects_join() {
        let r = Registry::new(2, usize::MAX);
        let (tx, _rx) = mpsc::channel(8);
        let a = r.join(req(None, "a"), tx.clone()).unwrap();
        r.join(req(Some(&a.session), "b"), tx.clone()).unwrap();
        let e = r.join(req(Some(&a.session), "c"), tx).unwrap_err();
        assert_eq!(e.code, codes::SESSION_FULL);
    }

    #[test]
    fn registry_last_leave_removes_session() {
        let r = Registry::new(4, usize::MAX);
        let (ta, _ra) = mpsc::channel(8);
        let a = r.join(req(None, "a"), ta).unwrap();
        let (tb, mut rb) = mpsc::channel(8);
        let b = r.join(req(Some(&a.session), "b"), tb).unwrap();
        assert!(!r.leave(&a.session, &a.client_id, a.seq + 100));
        assert!(r.leave(&a.session, &a.client_id, a.seq));
        assert!(!r.leave(&a.session, &a.client_id, a.seq));
        assert_eq!(
            recv_now(&mut rb),
            Some(ServerMessage::PeerLeft {
                id: a.client_id.clone()
            })
        );
        assert_eq!(r.session_count(), 1);
        assert!(r.leave(&b.session, &b.client_id, b.seq));
        assert_eq!(r.session_count(), 0);
    }

    #[test]
    fn registry_relay_routes_only_within_session() {
        let r = Registry::new(4, usize::MAX);
        let (ta, _ra) = mpsc::channel(8);
        let a = r.join(req(None, "a"), ta).unwrap();
        let (tb, mut rb) = mpsc::channel(8);
        let b = r.join(req(Some(&a.session), "b"), tb).unwrap();
        let (tx, _rx) = mpsc::channel(8);
        let x = r.join(req(None, "x"), tx).unwrap();
        let data = serde_json::json!({"kind": "offer", "sdp": "v=0"});
        r.relay(
            &a.session,
            &a.client_id,
            a.seq,
            &b.client_id,
            &data.to_string(),
            std::time::Instant::now(),
        )
        .unwrap();
        assert_eq!(
            recv_now(&mut rb),
            Some(ServerMessage::Signal {
                from: a.client_id.clone(),
                data: data.clone()
            })
        );
        let e = r
            .relay(
                &a.session,
                &a.client_id,
                a.seq,
                &x.client_id,
                &data.to_string(),
                std::time::Instant::now(),
            )
            .unwrap_err();
        assert_eq!(e.code, codes::UNKNOWN_RECIPIENT);
        let e = r
            .relay(
                &a.session,
                &a.client_id,
                a.seq,
                &a.client_id,
                &data.to_string(),
                std::time::Instant::now(),
            )
            .unwrap_err();
        assert_eq!(e.code, codes::UNKNOWN_RECIPIENT);
    }

    #[test]
    fn registry_slow_member_is_dropped_and_others_told() {
        let r = Registry::new(4, usize::MAX);
        let (ta, mut ra) = mpsc::channel(1);
        let a = r.join(req(None, "a"), ta).unwrap();
        let (tb, mut rb) = mpsc::channel(8);
        let b = r.join(req(Some(&a.session), "b"), tb).unwrap();
        // a's queue now holds peer-joined(b) and is full.
        let data = serde_json::json!({});
        r.relay(
            &b.session,
            &b.client_id,
            b.seq,
            &a.client_id,
            &data.to_string(),
            std::time::Instant::now(),
        )
        .unwrap();
        assert_eq!(
            recv_now(&mut rb),
            Some(ServerMessage::PeerLeft {
                id: a.client_id.clone()
            })
        );
        assert!(matches!(
            recv_now(&mut ra),
            Some(ServerMessage::PeerJoined { .. })
        ));
        // The registry dropped a's sender: its queue is closed.
        assert!(matches!(
            ra.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(!r.leave(&a.session, &a.client_id, a.seq));
    }
    #[test]
    fn registry_total_queued_bytes_over_budget_drops_recipient_as_slow() {
        // Room for two relayed frames (and small presence events) in all queues
        // together; each queue alone could hold 8 frames.
        let data = serde_json::json!({"blob": "x".repeat(100)});
        let frame_len = encode(&ServerMessage::Signal {
            from: "aaaaaaaaaaaa".into(),
            data: data.clone(),
        })
        .len();
        let r = Registry::new(4, 3 * frame_len - 1);
        let (ta, mut ra) = mpsc::channel(8);
        let a = r.join(req(None, "a"), ta).unwrap();
        // a's queue: peer-joined(b), peer-joined(c); drained so only relays count.
        let (tb, rb) = mpsc::channel(8);
        let b = r.join(req(Some(&a.session), "b"), tb).unwrap();
        let (tc, rc) = mpsc::channel(8);
        let c = r.join(req(Some(&a.session), "c"), tc).unwrap();
        while ra.try_recv().is_ok() {}
        let mut rb = rb;
        while rb.try_recv().is_ok() {}
        assert_eq!(r.budget.used(), 0);

        r.relay(
            &a.session,
            &a.client_id,
            a.seq,
            &b.client_id,
            &data.to_string(),
            std::time::Instant::now(),
        )
        .unwrap();
        r.relay(
            &a.session,
            &a.client_id,
            a.seq,
            &b.client_id,
            &data.to_string(),
            std::time::Instant::now(),
        )
        .unwrap();
        assert_eq!(r.budget.used(), 2 * frame_len);
        // c's own queue is empty, but the server's total would exceed the budget.
        r.relay(
            &a.session,
            &a.client_id,
            a.seq,
            &c.client_id,
            &data.to_string(),
            std::time::Instant::now(),
        )
        .unwrap();
        assert_eq!(
            recv_now(&mut ra),
            Some(ServerMessage::PeerLeft {
                id: c.client_id.clone()
            })
        );
        let mut rc = rc;
        assert!(matches!(
            rc.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        // b's frames were not lost, and reading them gives their bytes back.
        assert!(matches!(
            recv_now(&mut rb),
            Some(ServerMessage::Signal { .. })
        ));
        assert!(matches!(
            recv_now(&mut rb),
            Some(ServerMessage::Signal { .. })
        ));
        assert!(r.budget.used() < frame_len);
        drop(rb);
        drop(rc);
        assert!(r.leave(&b.session, &b.client_id, b.seq));
        assert_eq!(
            recv_now(&mut ra),
            Some(ServerMessage::PeerLeft {
                id: b.client_id.clone()
            })
        );
        assert_eq!(r.budget.used(), 0);
    }
}
