//! A TCP proxy on 127.0.0.1 between peers and a signaling server, whose connections the
//! test cuts: both sides (the server sees the client go), only the server's side (the
//! client notices nothing yet), or only the client's side (the server still holds the
//! membership, as when a network change strands a connection).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Which side of the proxied connections a cut closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Both: the client sees its connection close, the server sees the client leave.
    Both,
    /// The client's side; the server's side stays open and silent.
    Client,
    /// The server's side; the client's side stays open and silent.
    Server,
}

pub struct Proxy {
    pub addr: SocketAddr,
    /// One sender per open connection: a cut goes to all of them.
    cuts: Arc<Mutex<Vec<oneshot::Sender<Cut>>>>,
    /// Sides left open by a cut, held so that they stay open: the client's
    /// (`Cut::Client` closes it later) or the server's (`Cut::Server`).
    held: Arc<Mutex<Vec<(Cut, TcpStream)>>>,
    accept: tokio::task::JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Proxy {
    /// Forward every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let cuts: Arc<Mutex<Vec<oneshot::Sender<Cut>>>> = Arc::default();
        let held: Arc<Mutex<Vec<(Cut, TcpStream)>>> = Arc::default();
        let (c, h) = (cuts.clone(), held.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (tx, rx) = oneshot::channel();
                lock(&c).push(tx);
                tokio::spawn(forward(client, server, rx, h.clone()));
            }
        });
        Proxy {
            addr,
            cuts,
            held,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Cut every connection open now (and the sides earlier cuts left open); new ones
    /// are forwarded as before.
    pub fn cut(&self, how: Cut) {
        for tx in lock(&self.cuts).drain(..) {
            let _ = tx.send(how);
        }
        lock(&self.held).retain(|(side, _)| how != Cut::Both && *side != how);
    }

    /// Accept no more connections: from now on they are refused.
    pub fn refuse(&self) {
        self.accept.abort();
    }
}

async fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    cut: oneshot::Receiver<Cut>,
    held: Arc<Mutex<Vec<(Cut, TcpStream)>>>,
) {
    let how = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        how = cut => how.unwrap_or(Cut::Both),
    };
    match how {
        Cut::Both => {}
        Cut::Client => lock(&held).push((Cut::Server, server)),
        Cut::Server => lock(&held).push((Cut::Client, client)),
    }
}
