//! A peer whose signaling connection is lost rejoins its session (docs/PROTOCOL.md,
//! "Client behaviour on a lost connection"): through a proxy the test cuts, a server that
//! drains, a list of servers whose first is down. Real WebRTC peers on loopback.

mod common;

use std::time::Duration;

use common::fake_signal::FakeSignal;
use common::proxy::{Cut, Proxy};
use common::*;
use peershare::{Event, JobId, Peer, PeerConfig, Share, codes};

/// The sender's rate: the 8 MiB file takes about two seconds, so it is in progress when
/// the test cuts signaling after its first progress event.
const RATE: u64 = 4 * 1024 * 1024;
const SIZE: usize = 8 * 1024 * 1024;

/// A signaling server, a sender joined to it directly, and a recipient joined through a
/// proxy (rejoining for at most `window`), with the recipient's download of one
/// rate-limited file in progress.
struct Transfer {
    _server: peershare::signaling::SignalingServer,
    proxy: Proxy,
    sender: Peer,
    s_rec: Recorder,
    recipient: Peer,
    r_rec: Recorder,
    data: Vec<u8>,
    upload: JobId,
    download: JobId,
    out: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl Transfer {
    async fn start(window: Duration) -> Self {
        init_tracing();
        let server = server().await;
        let proxy = Proxy::start(server.local_addr()).await;
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let (src, data) = random_file(tmp.path(), "big.bin", SIZE, 41);
        let mut cfg = config(&server, None, "sender", tmp.path());
        cfg.rate_limit = Some(RATE);
        let (sender, s_rec) = join_with(cfg).await;
        let mut cfg = config(&server, Some(sender.session()), "recipient", &out);
        cfg.server = proxy.url();
        cfg.signaling_retry_window = window;
        let (recipient, mut r_rec) = join_with(cfg).await;
        let (upload, download) = r_rec
            .transfer_under_way(&sender, src, &recipient, &out)
            .await;
        Transfer {
            _server: server,
            proxy,
            sender,
            s_rec,
            recipient,
            r_rec,
            data,
            upload,
            download,
            out,
            _tmp: tmp,
        }
    }

    /// Wait for the download and the upload to end, check the bytes and that each job
    /// ended once, leave, and return the events each side emitted until both ended
    /// (before leaving).
    async fn finish(mut self) -> (Vec<Event>, Vec<Event>) {
        let path = self.r_rec.saved().await;
        assert_eq!(path, self.out.join("big.bin"));
        assert!(std::fs::read(&path).unwrap() == self.data, "bytes differ");
        self.s_rec
            .until("upload end", |e| {
                matches!(
                    e,
                    Event::UploadCompleted { .. }
                        | Event::UploadFailed { .. }
                        | Event::UploadCancelled { .. }
                )
            })
            .await;
        let before = (self.s_rec.seen.clone(), self.r_rec.seen.clone());
        self.recipient.leave().await;
        self.sender.leave().await;
        let all = |mut rec: Recorder| async move {
            while let Some(e) = rec.events.recv().await {
                rec.seen.push(e);
            }
            rec.seen
        };
        let (s, r) = (all(self.s_rec).await, all(self.r_rec).await);
        assert_eq!(ends_of(&r, self.download), 1, "{r:#?}");
        assert_eq!(ends_of(&s, self.upload), 1, "{s:#?}");
        assert!(
            r.iter().all(|e| !matches!(e, Event::DownloadFailed { .. })),
            "{r:#?}"
        );
        before
    }
}

/// The presence events about `peer`, in order: `joined` and `left`.
fn presence(events: &[Event], peer: &str) -> Vec<&'static str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PeerJoined { peer: p, .. } if p == peer => Some("joined"),
            Event::PeerLeft { peer: p } if p == peer => Some("left"),
            _ => None,
        })
        .collect()
}

fn count(events: &[Event], pred: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

/// Wait for the next `signaling-reconnected`.
async fn back(rec: &mut Recorder) -> Event {
    rec.until("signaling-reconnected", |e| {
        matches!(e, Event::SignalingReconnected { .. })
    })
    .await
}

/// The window of the tests that rejoin (the default).
const WINDOW: Duration = Duration::from_secs(30);

/// The signaling connection is cut on the client's side only, as when a network change
/// strands it: the server still holds the membership, so the rejoin takes it over. The
/// other member sees nothing (no `peer-left`, no `peer-joined`), the peer connection is
/// never torn down, and the file arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_signaling_cut_client_side_same_id_nothing_seen_by_member_file_identical() {
    let mut t = Transfer::start(WINDOW).await;
    let (recipient_id, sender_id) = (t.recipient.client_id(), t.sender.client_id());
    t.proxy.cut(Cut::Client);
    assert_eq!(
        back(&mut t.r_rec).await,
        Event::SignalingReconnected {
            client_id: recipient_id.clone(),
            server: t.proxy.url(),
            resumed: true,
        }
    );
    assert_eq!(t.recipient.client_id(), recipient_id);
    let (s, r) = t.finish().await;
    assert_eq!(presence(&s, &recipient_id), ["joined"], "{s:#?}");
    assert_eq!(presence(&r, &sender_id), ["joined"], "{r:#?}");
    for events in [&s, &r] {
        assert_eq!(
            count(events, |e| matches!(e, Event::ConnectionLost { .. })),
            0,
            "{events:#?}"
        );
        assert_eq!(
            count(events, |e| matches!(e, Event::Error { .. })),
            0,
            "{events:#?}"
        );
    }
    assert_eq!(
        r.iter()
            .filter(|e| matches!(
                e,
                Event::SignalingLost { .. } | Event::SignalingReconnected { .. }
            ))
            .map(Event::name)
            .collect::<Vec<_>>(),
        ["signaling-lost", "signaling-reconnected"]
    );
}

/// The server notices the lost connection first (its side is cut while the client's
/// stays open): it removes the member, and the other member gets `peer-left`. Then the
/// client notices, rejoins, and gets its ID back as a new member: the other member gets
/// `peer-joined` with the same ID, authenticates it by their pair's key, and the
/// interrupted download resumes to a byte-identical file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_after_server_removed_member_peer_left_then_joined_same_id_file_identical() {
    let mut t = Transfer::start(WINDOW).await;
    let recipient_id = t.recipient.client_id();
    t.proxy.cut(Cut::Server);
    t.s_rec
        .until("peer-left", |e| matches!(e, Event::PeerLeft { .. }))
        .await;
    t.proxy.cut(Cut::Client);
    let again = back(&mut t.r_rec).await;
    assert!(
        matches!(&again, Event::SignalingReconnected { client_id, resumed: true, .. } if *client_id == recipient_id),
        "{again:?}"
    );
    let (s, r) = t.finish().await;
    assert_eq!(
        presence(&s, &recipient_id),
        ["joined", "left", "joined"],
        "{s:#?}"
    );
    // The pair's key authenticated it again: no failure.
    assert_eq!(
        count(&s, |e| matches!(e, Event::PeerAuthFailed { .. })),
        0,
        "{s:#?}"
    );
    assert_eq!(
        count(&r, |e| matches!(e, Event::SignalingReconnected { .. })),
        1
    );
}

/// Signaling is lost for good (the server keeps the stranded membership, so the other
/// member sees nothing; the proxy refuses every new connection): after its retry window
/// the recipient says so once with 1180, and the transfer over the peer connection
/// carries on to a byte-identical file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_gives_up_after_window_with_1180_once_transfer_carries_on() {
    let mut t = Transfer::start(Duration::from_millis(500)).await;
    t.proxy.refuse();
    t.proxy.cut(Cut::Client);
    let gone = t
        .r_rec
        .until("error", |e| matches!(e, Event::Error { .. }))
        .await;
    assert!(
        matches!(&gone, Event::Error { peer: None, code, .. } if *code == codes::NOT_CONNECTED),
        "{gone:?}"
    );
    let (_, r) = t.finish().await;
    assert_eq!(count(&r, |e| matches!(e, Event::SignalingLost { .. })), 1);
    assert_eq!(count(&r, |e| matches!(e, Event::Error { .. })), 1, "{r:#?}");
    assert_eq!(
        count(&r, |e| matches!(
            e,
            Event::SignalingReconnected { .. } | Event::ConnectionLost { .. }
        )),
        0,
        "{r:#?}"
    );
}

/// The first of two servers cannot be reached: the join goes through the second, and
/// two peers configured so meet there and transfer a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_first_server_down_joins_through_second_and_transfers() {
    init_tracing();
    let server = server().await;
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (src, data) = random_file(tmp.path(), "a.bin", 256 * 1024, 44);
    let two = |session: Option<&str>, name: &str, dir: &std::path::Path| {
        let mut cfg = config(&server, session, name, dir);
        cfg.server = format!("ws://{down}");
        cfg.fallback_servers = vec![server.url()];
        cfg
    };
    let (sender, _s_rec) = join_with(two(None, "sender", tmp.path())).await;
    let (recipient, mut r_rec) = join_with(two(Some(sender.session()), "recipient", &out)).await;
    sender.send_files(&[src], Share::Broadcast).await.unwrap();
    let path = r_rec.receive_next(&recipient, &out).await;
    assert!(std::fs::read(&path).unwrap() == data, "bytes differ");
}

/// Every server of the list down: the join fails with 1180 naming each.
#[tokio::test]
async fn join_every_server_down_fails_1180_naming_each() {
    let down: Vec<String> = (0..2)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("ws://{}", listener.local_addr().unwrap())
        })
        .collect();
    let mut cfg = PeerConfig::new(down[0].clone());
    cfg.fallback_servers = vec![down[1].clone()];
    let err = Peer::join(cfg).await.err().expect("no server");
    assert_eq!(err.code(), codes::NOT_CONNECTED);
    for url in &down {
        assert!(err.to_string().contains(url.as_str()), "{err}");
    }
}

/// A draining server answers the upgrade `503` (`draining\n`): that counts as `7012`.
/// A draining server first in the list passes the join on to the next; with every
/// server draining the join fails with `7012` (exit 3's "every server draining").
#[tokio::test]
async fn join_draining_server_503_is_7012_passes_the_join_on_or_fails_7012() {
    init_tracing();
    let draining = server().await;
    draining.drain();
    let open = server().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&draining, None, "alone", tmp.path());
    cfg.fallback_servers = vec![draining.url()];
    let err = Peer::join(cfg).await.err().expect("every server draining");
    assert_eq!(
        err.code(),
        peershare::signaling::protocol::codes::SHUTTING_DOWN,
        "{err}"
    );
    assert!(err.to_string().contains(&draining.url()), "{err}");
    let mut cfg = config(&draining, None, "joiner", tmp.path());
    cfg.fallback_servers = vec![open.url()];
    let (peer, _events) = Peer::join(cfg)
        .await
        .expect("joined through the next server");
    assert_eq!(peer.joined_server(), open.url());
    peer.leave().await;
}

/// A draining server: `7012` with `retry_after_ms`, then a close 1012. The peer waits,
/// rejoins the same session with `resume` (its client ID and the last token), and is
/// back under its ID; the drain is the reason of the loss, not an `error` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_draining_server_7012_rejoins_with_resume_same_id() {
    init_tracing();
    let fake = FakeSignal::start(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = PeerConfig::new(fake.url());
    cfg.rtc.bind = Some(LOCALHOST);
    cfg.download_dir = tmp.path().to_path_buf();
    cfg.name = "drained".into();
    let (peer, mut rec) = join_with(cfg).await;
    let id = peer.client_id();
    fake.force_next_id(&id);
    fake.drain(40);
    let lost = rec
        .until("signaling-lost", |e| {
            matches!(e, Event::SignalingLost { .. })
        })
        .await;
    assert!(
        matches!(&lost, Event::SignalingLost { reason } if reason.contains("7012")),
        "{lost:?}"
    );
    assert_eq!(
        back(&mut rec).await,
        Event::SignalingReconnected {
            client_id: id.clone(),
            server: fake.url(),
            resumed: true,
        }
    );
    let joins: Vec<serde_json::Value> = fake
        .frames()
        .iter()
        .filter_map(|f| serde_json::from_str::<serde_json::Value>(f).ok())
        .filter(|f| f["type"] == "join")
        .collect();
    assert_eq!(joins.len(), 2, "{joins:#?}");
    assert!(joins[0].get("resume").is_none(), "{joins:#?}");
    let route = peer.session().split_once('-').unwrap().0.to_string();
    assert_eq!(joins[1]["session"], route.as_str());
    assert_eq!(joins[1]["name"], "drained");
    assert_ne!(joins[1]["create"], true);
    assert_eq!(
        joins[1]["resume"],
        serde_json::json!({"id": id, "token": format!("token-{id}")})
    );
    assert!(
        rec.seen.iter().all(|e| !matches!(e, Event::Error { .. })),
        "{:#?}",
        rec.seen
    );
    peer.leave().await;
}

/// The server refuses the token (here: it hands out other IDs) when both members of a
/// session rejoin after a drain: each adopts its new ID, sees the other leave under its
/// old ID, and authenticates it again under its new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_token_refused_new_ids_adopted_and_members_met_anew() {
    init_tracing();
    let fake = FakeSignal::start(None).await;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = |name: &str, session: Option<String>| {
        let mut cfg = PeerConfig::new(fake.url());
        cfg.rtc.bind = Some(LOCALHOST);
        cfg.download_dir = tmp.path().to_path_buf();
        cfg.name = name.into();
        cfg.session = session;
        cfg
    };
    let (a, mut a_rec) = join_with(cfg("a", None)).await;
    let (b, mut b_rec) = join_with(cfg("b", Some(a.session().to_string()))).await;
    let (old_a, old_b) = (a.client_id(), b.client_id());
    for (rec, other) in [(&mut a_rec, &old_b), (&mut b_rec, &old_a)] {
        rec.until(
            "peer-joined",
            |e| matches!(e, Event::PeerJoined { peer, .. } if peer == other),
        )
        .await;
    }
    fake.force_next_id("0000000000aa");
    fake.force_next_id("0000000000bb");
    fake.drain(0);
    for (rec, me) in [(&mut a_rec, &old_a), (&mut b_rec, &old_b)] {
        let again = back(rec).await;
        assert!(
            matches!(&again, Event::SignalingReconnected { client_id, resumed: false, .. } if client_id != me),
            "{again:?}"
        );
    }
    let (new_a, new_b) = (a.client_id(), b.client_id());
    let mut ids = [new_a.clone(), new_b.clone()];
    ids.sort();
    assert_eq!(ids, ["0000000000aa", "0000000000bb"]);
    for (rec, other_old, other_new) in [(&mut a_rec, &old_b, &new_b), (&mut b_rec, &old_a, &new_a)]
    {
        rec.until(
            "peer-joined under the new ID",
            |e| matches!(e, Event::PeerJoined { peer, .. } if peer == other_new),
        )
        .await;
        assert_eq!(presence(&rec.seen, other_old), ["joined", "left"]);
    }
    a.leave().await;
    b.leave().await;
}
