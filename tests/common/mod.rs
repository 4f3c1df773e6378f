//! Shared helpers for the integration tests: an in-process signaling server on
//! 127.0.0.1 (plain, or `wss://` with a self-signed certificate), peers bound to
//! 127.0.0.1, and an event recorder.
#![allow(dead_code)]

pub mod cli;
pub mod fake_signal;
pub mod proxy;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use peershare::signaling::{ServerConfig, SignalingServer};
use peershare::{Event, Events, Peer, PeerConfig};

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Upper bound for any single wait; generous so that a loaded CI machine never flakes.
pub const WAIT: Duration = Duration::from_secs(120);

pub async fn server() -> SignalingServer {
    server_with(ServerConfig::default()).await
}

/// A server with `config`, listening on an ephemeral port of 127.0.0.1.
pub async fn server_with(config: ServerConfig) -> SignalingServer {
    let config = ServerConfig {
        listen: (LOCALHOST, 0).into(),
        ..config
    };
    SignalingServer::bind(config)
        .await
        .expect("bind signaling server")
}

/// A self-signed certificate for `localhost` and 127.0.0.1, as PEM files.
pub struct TestCert {
    /// The certificate: the server's chain, and the CA file its clients trust.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCert {
    pub fn localhost() -> Self {
        let c = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            LOCALHOST.to_string(),
        ])
        .expect("generate certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, c.cert.pem()).expect("write cert");
        std::fs::write(&key_file, c.signing_key.serialize_pem()).expect("write key");
        TestCert {
            cert_file,
            key_file,
            _dir: dir,
        }
    }
}

/// A `wss://` server presenting `cert`.
pub async fn tls_server(cert: &TestCert) -> SignalingServer {
    let tls = peershare::signaling::ServerTls::from_pem_files(&cert.cert_file, &cert.key_file)
        .expect("server TLS config");
    server_with(ServerConfig {
        tls: Some(tls),
        ..ServerConfig::default()
    })
    .await
}

pub fn config(
    server: &SignalingServer,
    session: Option<&str>,
    name: &str,
    dir: &Path,
) -> PeerConfig {
    let mut c = PeerConfig::new(server.url());
    c.session = session.map(str::to_string);
    c.name = name.to_string();
    c.download_dir = dir.to_path_buf();
    c.rtc.bind = Some(LOCALHOST);
    c
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn random_file(dir: &Path, name: &str, size: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; size];
    rng.fill(&mut data[..]);
    let path = dir.join(name);
    std::fs::write(&path, &data).expect("write source file");
    (path, data)
}

/// Records every event of a peer and waits for particular ones.
pub struct Recorder {
    pub events: Events,
    pub seen: Vec<Event>,
}

impl Recorder {
    pub fn new(events: Events) -> Self {
        Self {
            events,
            seen: Vec::new(),
        }
    }

    /// Wait for the first event (from now on) matching `pred`.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {:#?}", self.names()))
                .unwrap_or_else(|| panic!("event stream ended waiting for {what}"));
            let hit = pred(&ev);
            self.seen.push(ev.clone());
            if hit {
                return ev;
            }
        }
    }

    /// Wait for the next `download-available`; its file ID.
    pub async fn offer(&mut self) -> peershare::FileId {
        match self
            .until("offer", |e| matches!(e, Event::DownloadAvailable { .. }))
            .await
        {
            Event::DownloadAvailable { file_id, .. } => file_id,
            _ => unreachable!(),
        }
    }

    /// Wait for the next end of a download; the path it was saved at (panics on any other
    /// end).
    pub async fn saved(&mut self) -> PathBuf {
        let end = self
            .until("download end", |e| {
                matches!(
                    e,
                    Event::DownloadCompleted { .. }
                        | Event::DownloadFailed { .. }
                        | Event::DownloadCancelled { .. }
                )
            })
            .await;
        match end {
            Event::DownloadCompleted {
                path: Some(path), ..
            } => path,
            other => panic!("expected a saved download, got {other:?}"),
        }
    }

    /// Start downloading the next file offered to `recipient` (whose recorder this is)
    /// into `dir`; the download's job ID.
    pub async fn accept_next(&mut self, recipient: &Peer, dir: &Path) -> peershare::JobId {
        let file_id = self.offer().await;
        recipient
            .download(file_id, peershare::Save::ToDir(dir.to_path_buf()))
            .await
            .expect("download")
    }

    /// `sender` shares `src` with everyone; `recipient` (whose recorder this is) accepts
    /// it into `dir`, and bytes flow (its first `download-progress`): the upload's and
    /// the download's job IDs.
    pub async fn transfer_under_way(
        &mut self,
        sender: &Peer,
        src: PathBuf,
        recipient: &Peer,
        dir: &Path,
    ) -> (peershare::JobId, peershare::JobId) {
        let upload = sender
            .send_files(&[src], peershare::Share::Broadcast)
            .await
            .expect("share")[0];
        let download = self.accept_next(recipient, dir).await;
        self.until("progress", |e| matches!(e, Event::DownloadProgress { .. }))
            .await;
        (upload, download)
    }

    /// Download the next file offered to `recipient` (whose recorder this is) into
    /// `dir`; the path it was saved at once verified (panics on any other end).
    pub async fn receive_next(&mut self, recipient: &Peer, dir: &Path) -> PathBuf {
        self.accept_next(recipient, dir).await;
        self.saved().await
    }

    /// The first event seen so far that matches `pred`, or else the next one to come.
    pub async fn seen_or_until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return e.clone();
        }
        self.until(what, pred).await
    }

    /// Names of the transfer events seen, without progress, presence and connection events.
    pub fn names(&self) -> Vec<&'static str> {
        self.seen
            .iter()
            .filter(|e| {
                !e.is_progress()
                    && !matches!(
                        e,
                        Event::PeerJoined { .. }
                            | Event::PeerLeft { .. }
                            | Event::Connection { .. }
                    )
            })
            .map(Event::name)
            .collect()
    }
}

/// Join a new session as `name`; returns the peer and its recorder.
pub async fn join(
    server: &SignalingServer,
    session: Option<&str>,
    name: &str,
    dir: &Path,
) -> (Peer, Recorder) {
    join_with(config(server, session, name, dir)).await
}

/// Join with `config`; returns the peer and its recorder.
pub async fn join_with(config: PeerConfig) -> (Peer, Recorder) {
    let (peer, events) = Peer::join(config).await.expect("join");
    (peer, Recorder::new(events))
}

/// Wait until `rec` has seen a peer-joined for each of `ids`... or they were present at join.
pub async fn wait_connected(rec: &mut Recorder, count: usize) {
    let mut n = rec
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Connection { .. }))
        .count();
    while n < count {
        rec.until("connection", |e| matches!(e, Event::Connection { .. }))
            .await;
        n += 1;
    }
}

/// How many times job `job` (an upload or a download) ended.
pub fn ends_of(events: &[Event], job: peershare::JobId) -> usize {
    events
        .iter()
        .filter(|e| match e {
            Event::DownloadCompleted { job_id, .. }
            | Event::DownloadCancelled { job_id, .. }
            | Event::UploadCompleted { job_id, .. }
            | Event::UploadCancelled { job_id, .. } => *job_id == job,
            Event::DownloadFailed { job_id, .. } | Event::UploadFailed { job_id, .. } => {
                *job_id == Some(job)
            }
            _ => false,
        })
        .count()
}
