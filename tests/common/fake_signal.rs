//! A signaling server under the test's control: it speaks enough of the protocol
//! (`join`, `welcome`, `peer-joined`, `peer-left`, `signal`, `ping`) for peershare peers,
//! records every frame it sees, and can misbehave: rewrite the `data` of relayed signals
//! (a man in the middle) and hand out chosen client IDs (a server that lies about who is
//! who). Its `welcome` carries a `resume_token` (`token-CLIENT_ID`), which it does not
//! check: a rejoining client gets the ID the test forces. It can drain: `7012` with a
//! `retry_after_ms`, then a close 1012, to every member.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// What the writer of a client sends.
enum Out {
    Text(String),
    Close(u16),
}

/// Rewrites the `data` of a signal relayed `from` → `to`.
pub type Tamper = Box<dyn Fn(&str, &str, &mut Value) + Send + Sync>;

struct Member {
    conn: u64,
    id: String,
    name: String,
    tx: mpsc::UnboundedSender<Out>,
}

#[derive(Default)]
struct State {
    /// Every text frame, in both directions, as sent.
    frames: Vec<String>,
    /// Client IDs to hand out to the next joiners, in order.
    forced_ids: VecDeque<String>,
    /// Members by session: (connection number, client ID, name, outbound queue).
    sessions: HashMap<String, Vec<Member>>,
    next: u64,
}

/// The running fake server.
pub struct FakeSignal {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeSignal {
    /// Start on 127.0.0.1 with an optional tamper function.
    pub async fn start(tamper: Option<Tamper>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let tamper: Arc<Option<Tamper>> = Arc::new(tamper);
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (st, tamper) = (st.clone(), tamper.clone());
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        client(ws, st, tamper).await;
                    }
                });
            }
        });
        FakeSignal { addr, state }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The next client to join gets this ID.
    pub fn force_next_id(&self, id: &str) {
        lock(&self.state).forced_ids.push_back(id.to_string());
    }

    /// Every frame seen so far.
    pub fn frames(&self) -> Vec<String> {
        lock(&self.state).frames.clone()
    }

    /// Drain: every member gets `7012` with `retry_after_ms`, then a close 1012, and is
    /// forgotten (without `peer-left`s: everyone goes).
    pub fn drain(&self, retry_after_ms: u64) {
        let frame = json!({"type": "error", "code": 7012,
                           "message": "server is shutting down; reconnect",
                           "retry_after_ms": retry_after_ms})
        .to_string();
        let mut s = lock(&self.state);
        let members: Vec<Member> = s.sessions.drain().flat_map(|(_, m)| m).collect();
        for m in members {
            s.frames.push(frame.clone());
            let _ = m.tx.send(Out::Text(frame.clone()));
            let _ = m.tx.send(Out::Close(1012));
        }
    }
}

async fn client(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    state: Arc<Mutex<State>>,
    tamper: Arc<Option<Tamper>>,
) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let msg = match out {
                Out::Text(text) => Message::text(text),
                Out::Close(code) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: code.into(),
                            reason: "".into(),
                        })))
                        .await;
                    let _ = sink.close().await;
                    return;
                }
            };
            if sink.send(msg).await.is_err() {
                return;
            }
        }
    });
    let send = |state: &Mutex<State>, to: &mpsc::UnboundedSender<Out>, v: Value| {
        let text = v.to_string();
        lock(state).frames.push(text.clone());
        let _ = to.send(Out::Text(text));
    };
    let conn = {
        let mut s = lock(&state);
        s.next += 1;
        s.next
    };
    let mut me: Option<(String, String)> = None;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else {
            continue;
        };
        lock(&state).frames.push(text.to_string());
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match frame["type"].as_str() {
            Some("ping") => send(&state, &tx, json!({"type": "pong"})),
            Some("join") if me.is_none() => {
                // The welcome and the others' `peer-joined` are queued under the same lock
                // as the membership change, as a real server orders them: a member that
                // joins at the same moment can never put its `peer-joined` ahead of our
                // welcome.
                let mut s = lock(&state);
                s.next += 1;
                let id = s
                    .forced_ids
                    .pop_front()
                    .unwrap_or_else(|| format!("{:012x}", 0x5000_0000_0000 + s.next * 7919));
                let session = frame["session"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| (40 + s.next).to_string());
                let name = frame["name"].as_str().unwrap_or("?").to_string();
                let members = s.sessions.entry(session.clone()).or_default();
                let peers: Vec<Value> = members
                    .iter()
                    .map(|m| json!({"id": m.id, "name": m.name}))
                    .collect();
                let others: Vec<_> = members.iter().map(|m| m.tx.clone()).collect();
                members.push(Member {
                    conn,
                    id: id.clone(),
                    name: name.clone(),
                    tx: tx.clone(),
                });
                let welcome = json!({"type": "welcome", "session": session, "client_id": id,
                                     "peers": peers, "ice_servers": [],
                                     "resume_token": format!("token-{id}")})
                .to_string();
                s.frames.push(welcome.clone());
                let _ = tx.send(Out::Text(welcome));
                let joined =
                    json!({"type": "peer-joined", "peer": {"id": id, "name": name}}).to_string();
                for q in others {
                    s.frames.push(joined.clone());
                    let _ = q.send(Out::Text(joined.clone()));
                }
                drop(s);
                me = Some((id, session));
            }
            Some("signal") => {
                let Some((id, session)) = &me else { continue };
                let to = frame["to"].as_str().unwrap_or_default().to_string();
                let mut data = frame["data"].clone();
                if let Some(t) = tamper.as_ref() {
                    t(id, &to, &mut data);
                }
                let target = lock(&state)
                    .sessions
                    .get(session)
                    .and_then(|m| m.iter().find(|m| m.id == to).map(|m| m.tx.clone()));
                if let Some(q) = target {
                    send(
                        &state,
                        &q,
                        json!({"type": "signal", "from": id, "data": data}),
                    );
                }
            }
            Some("leave") => break,
            _ => {}
        }
    }
    if let Some((id, session)) = me {
        let others: Vec<_> = {
            let mut s = lock(&state);
            let Some(members) = s.sessions.get_mut(&session) else {
                // Drained: forgotten already.
                writer.abort();
                return;
            };
            let before = members.len();
            members.retain(|m| m.conn != conn);
            if members.len() == before {
                writer.abort();
                return;
            }
            members.iter().map(|m| m.tx.clone()).collect()
        };
        for q in others {
            send(&state, &q, json!({"type": "peer-left", "id": id}));
        }
    }
    writer.abort();
}
