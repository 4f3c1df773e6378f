//! (a) The raw data-channel ceiling: two peer connections built by the product's
//! `build_peer_connection`, SDP exchanged in-process, one ordered reliable channel,
//! 64 KiB messages, no file I/O.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use peershare::rtc::{RtcChannel, RtcSettings, build_peer_connection};
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
};

/// Size of one raw message: 64 KiB, as row (a) is defined. (The product's own
/// chunk size is `peershare::transfer::CHUNK_SIZE`.)
pub const MESSAGE: usize = 64 * 1024;

/// Where the connection setup of the raw pair went, in ms from the start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup {
    /// Both peer connections built.
    pub built_ms: f64,
    /// Offer and answer exchanged (each side waited for candidate gathering).
    pub sdp_ms: f64,
    /// Offerer's connection state `Connected` (ICE + DTLS done).
    pub connected_ms: f64,
    /// Data channel `OnOpen` on the offerer (SCTP association + DCEP).
    pub open_ms: f64,
}

pub struct RawResult {
    pub mib_per_s: f64,
    pub secs: f64,
    pub setup: Setup,
}

struct Handler {
    gathered: watch::Sender<bool>,
    connected_at: Arc<Mutex<Option<Instant>>>,
    channels: Option<mpsc::UnboundedSender<Arc<dyn DataChannel>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected
            && let Ok(mut at) = self.connected_at.lock()
        {
            at.get_or_insert_with(Instant::now);
        }
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        if let Some(tx) = &self.channels {
            let _ = tx.send(dc);
        }
    }
}

fn ms(start: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(start).as_secs_f64() * 1000.0
}

/// The two ends of the bench channel.
pub enum Ends {
    /// Raw `webrtc` data channels; the sender's is polled by a task of ours.
    Raw {
        tx: Arc<dyn DataChannel>,
        rx: Arc<dyn DataChannel>,
    },
    /// The product's channel adapter on both ends.
    Adapter { tx: RtcChannel, rx: RtcChannel },
}

/// A connected pair with its open channels.
pub struct Pair {
    pub offerer: Arc<dyn PeerConnection>,
    pub answerer: Arc<dyn PeerConnection>,
    /// One entry per channel, all on the pair's one SCTP association.
    pub ends: Vec<Ends>,
    pub setup: Setup,
}

impl Pair {
    pub async fn close(self) {
        drop(self.ends);
        let _ = self.offerer.close().await;
        let _ = self.answerer.close().await;
    }
}

/// Build a connected pair and open `channels` ordered reliable channels, raw or wrapped in
/// the product's [`RtcChannel`].
pub async fn connect_pair(
    settings: &RtcSettings,
    adapter: bool,
    channels: usize,
) -> anyhow::Result<Pair> {
    let t0 = Instant::now();
    let connected_at = Arc::new(Mutex::new(None));
    let (a_gathered_tx, mut a_gathered) = watch::channel(false);
    let (b_gathered_tx, mut b_gathered) = watch::channel(false);
    let (dc_tx, mut dc_rx) = mpsc::unbounded_channel();
    let a = build_peer_connection(
        settings,
        &[],
        Arc::new(Handler {
            gathered: a_gathered_tx,
            connected_at: connected_at.clone(),
            channels: None,
        }),
    )
    .await?;
    let b = build_peer_connection(
        settings,
        &[],
        Arc::new(Handler {
            gathered: b_gathered_tx,
            connected_at: Arc::new(Mutex::new(None)),
            channels: Some(dc_tx),
        }),
    )
    .await?;
    let built = Instant::now();

    // Every channel must be polled all the time; a task of ours (or the adapter's reader)
    // does, and reports OnOpen.
    let mut locals = Vec::with_capacity(channels);
    for i in 0..channels.max(1) {
        let dc = a
            .create_data_channel(&format!("bench-{i}"), Some(RTCDataChannelInit::default()))
            .await?;
        let (open_tx, open_rx) = oneshot::channel();
        let adapter_tx = if adapter {
            drop(open_tx);
            Some(RtcChannel::spawn(dc.clone(), false))
        } else {
            watch_open(dc.clone(), open_tx);
            None
        };
        locals.push((dc, open_rx, adapter_tx));
    }

    let offer = a.create_offer(None).await?;
    a.set_local_description(offer).await?;
    a_gathered.wait_for(|g| *g).await?;
    let offer = a
        .local_description()
        .await
        .context("offerer has no local description")?;
    b.set_remote_description(offer).await?;
    let answer = b.create_answer(None).await?;
    b.set_local_description(answer).await?;
    b_gathered.wait_for(|g| *g).await?;
    let answer = b
        .local_description()
        .await
        .context("answerer has no local description")?;
    a.set_remote_description(answer).await?;
    let sdp = Instant::now();

    let mut opened = sdp;
    let mut ends = Vec::with_capacity(locals.len());
    for (dc, open_rx, adapter_tx) in locals {
        opened = match &adapter_tx {
            Some(ch) => {
                tokio::time::timeout(Duration::from_secs(30), ch.wait_open())
                    .await
                    .context("data channel did not open within 30 s")?
                    .map_err(|_| anyhow::anyhow!("data channel closed before opening"))?;
                Instant::now()
            }
            None => tokio::time::timeout(Duration::from_secs(30), open_rx)
                .await
                .context("data channel did not open within 30 s")??,
        }
        .max(opened);
        // Remote channels are matched to local ones in arrival order; the bench sends the
        // same amount on each, so which is which does not matter.
        let remote = tokio::time::timeout(Duration::from_secs(30), dc_rx.recv())
            .await
            .context("no remote data channel within 30 s")?
            .context("answerer handler dropped")?;
        ends.push(match adapter_tx {
            Some(tx) => Ends::Adapter {
                tx,
                rx: RtcChannel::spawn(remote, true),
            },
            None => Ends::Raw { tx: dc, rx: remote },
        });
    }
    let connected = connected_at.lock().ok().and_then(|c| *c).unwrap_or(opened);
    let setup = Setup {
        built_ms: ms(t0, built),
        sdp_ms: ms(t0, sdp),
        connected_ms: ms(t0, connected),
        open_ms: ms(t0, opened),
    };
    Ok(Pair {
        offerer: a,
        answerer: b,
        ends,
        setup,
    })
}

/// Send `bytes` as 64 KiB messages; MiB/s measured at the receiver.
pub async fn run(settings: &RtcSettings, bytes: u64) -> anyhow::Result<RawResult> {
    run_parallel(settings, bytes, 1, 1).await
}

/// Send `bytes` in total as 64 KiB messages, split evenly over `associations` pairs with
/// `channels` channels each, all at once, in this process; MiB/s from the first send to
/// the last byte received on any channel. The setup reported is the first pair's.
pub async fn run_parallel(
    settings: &RtcSettings,
    bytes: u64,
    associations: usize,
    channels: usize,
) -> anyhow::Result<RawResult> {
    let mut pairs = Vec::with_capacity(associations);
    for _ in 0..associations.max(1) {
        pairs.push(connect_pair(settings, false, channels).await?);
    }
    let setup = pairs[0].setup;
    let ends: Vec<(Arc<dyn DataChannel>, Arc<dyn DataChannel>)> = pairs
        .iter()
        .flat_map(|p| &p.ends)
        .filter_map(|e| match e {
            Ends::Raw { tx, rx } => Some((tx.clone(), rx.clone())),
            Ends::Adapter { .. } => None,
        })
        .collect();
    let n = ends.len() as u64;
    let share = bytes / n;
    let mut receivers = Vec::with_capacity(ends.len());
    let mut senders = Vec::with_capacity(ends.len());
    let start = Instant::now();
    for (tx, rx) in ends {
        receivers.push(tokio::spawn(async move {
            let got = receive_bytes(&rx, share).await;
            (got, Instant::now())
        }));
        senders.push(tokio::spawn(async move { send_messages(&tx, share).await }));
    }
    for s in senders {
        s.await.context("sender task")??;
    }
    let mut end = start;
    for r in receivers {
        let (got, at) = r.await.context("receiver task")?;
        anyhow::ensure!(got == share, "raw receiver got {got} of {share} bytes");
        end = end.max(at);
    }
    let secs = end.duration_since(start).as_secs_f64();
    for p in pairs {
        p.close().await;
    }
    Ok(RawResult {
        mib_per_s: (share * n) as f64 / (1024.0 * 1024.0) / secs,
        secs,
        setup,
    })
}

/// Poll `dc` for as long as it lives (every channel must be polled all the time) and
/// report when it opens.
fn watch_open(dc: Arc<dyn DataChannel>, opened: oneshot::Sender<Instant>) {
    tokio::spawn(async move {
        let mut opened = Some(opened);
        while let Some(ev) = dc.poll().await {
            match ev {
                DataChannelEvent::OnOpen => {
                    if let Some(tx) = opened.take() {
                        let _ = tx.send(Instant::now());
                    }
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
}

/// Send `bytes` on `dc` as [`MESSAGE`]-sized messages.
async fn send_messages(dc: &Arc<dyn DataChannel>, bytes: u64) -> anyhow::Result<()> {
    let template = BytesMut::from(&vec![0xa5u8; MESSAGE][..]);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MESSAGE as u64) as usize;
        dc.send(BytesMut::from(&template[..n]))
            .await
            .context("sending on the raw data channel")?;
        left -= n as u64;
    }
    Ok(())
}

/// Receive on `dc` until `bytes` arrived or it closed; returns the bytes received.
async fn receive_bytes(dc: &Arc<dyn DataChannel>, bytes: u64) -> u64 {
    let mut got = 0u64;
    while got < bytes {
        match dc.poll().await {
            Some(DataChannelEvent::OnMessage(msg)) => got += msg.data.len() as u64,
            Some(DataChannelEvent::OnClose) | None => break,
            Some(_) => {}
        }
    }
    got
}

/// Which end of the two-process raw pair a child process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RawRole {
    /// Creates the channel and sends.
    Offer,
    /// Receives and reports when the last byte arrived.
    Answer,
}

/// The hidden `raw-peer` subcommand: one end of the raw pair in its own process, so that
/// (a) runs with the same process layout as (b). SDP travels through the parent as
/// `sdp <json string>` lines.
#[derive(Debug, Clone, clap::Args)]
pub struct RawPeerArgs {
    #[arg(long, value_enum)]
    pub role: RawRole,
    /// Bytes to move.
    #[arg(long)]
    pub bytes: u64,
    #[command(flatten)]
    pub tune: super::Tune,
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn gathered_sdp(
    pc: &Arc<dyn PeerConnection>,
    gathered: &mut watch::Receiver<bool>,
) -> anyhow::Result<String> {
    gathered.wait_for(|g| *g).await?;
    let desc = pc
        .local_description()
        .await
        .context("no local description")?;
    Ok(serde_json::to_string(&desc.sdp)?)
}

async fn read_sdp(
    stdin: &mut tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>,
) -> anyhow::Result<String> {
    let line = stdin
        .next_line()
        .await?
        .context("parent closed stdin before sending the SDP")?;
    let json = line
        .strip_prefix("sdp ")
        .context("expected an `sdp` line")?;
    Ok(serde_json::from_str(json)?)
}

/// One end of the two-process raw pair (the `raw-peer` subcommand).
pub async fn run_peer(args: RawPeerArgs) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    use webrtc::peer_connection::RTCSessionDescription;
    let settings = args.tune.settings();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let (gathered_tx, mut gathered) = watch::channel(false);
    let (dc_tx, mut dc_rx) = mpsc::unbounded_channel();
    let pc = build_peer_connection(
        &settings,
        &[],
        Arc::new(Handler {
            gathered: gathered_tx,
            connected_at: Arc::new(Mutex::new(None)),
            channels: Some(dc_tx),
        }),
    )
    .await?;
    match args.role {
        RawRole::Offer => {
            let dc = pc
                .create_data_channel("bench", Some(RTCDataChannelInit::default()))
                .await?;
            let (open_tx, open_rx) = oneshot::channel();
            watch_open(dc.clone(), open_tx);
            let offer = pc.create_offer(None).await?;
            pc.set_local_description(offer).await?;
            println!("sdp {}", gathered_sdp(&pc, &mut gathered).await?);
            let answer = RTCSessionDescription::answer(read_sdp(&mut stdin).await?)?;
            pc.set_remote_description(answer).await?;
            tokio::time::timeout(Duration::from_secs(30), open_rx)
                .await
                .context("data channel did not open within 30 s")??;
            println!("start {}", unix_nanos());
            send_messages(&dc, args.bytes).await?;
            println!("sent");
        }
        RawRole::Answer => {
            let offer = RTCSessionDescription::offer(read_sdp(&mut stdin).await?)?;
            pc.set_remote_description(offer).await?;
            let answer = pc.create_answer(None).await?;
            pc.set_local_description(answer).await?;
            println!("sdp {}", gathered_sdp(&pc, &mut gathered).await?);
            let rx = tokio::time::timeout(Duration::from_secs(30), dc_rx.recv())
                .await
                .context("no remote data channel within 30 s")?
                .context("handler dropped")?;
            let got = receive_bytes(&rx, args.bytes).await;
            println!("end {} {got}", unix_nanos());
        }
    }
    // Stay connected until the parent has read everything it needs.
    while let Ok(Some(line)) = stdin.next_line().await {
        if line.trim() == "quit" {
            break;
        }
    }
    let _ = pc.close().await;
    Ok(())
}

/// (a) with each end in its own process (the layout of (b)): MiB/s from the sender's
/// first message to the receiver's last byte, plus each process's peak RSS.
pub struct TwoProcess {
    pub mib_per_s: f64,
    pub secs: f64,
    pub sender_rss_mib: Option<f64>,
    pub receiver_rss_mib: Option<f64>,
}

pub async fn run_two_process(tune: &super::Tune, bytes: u64) -> anyhow::Result<TwoProcess> {
    use super::product::ChildPeer;
    let args = |role: &str| {
        let mut v = vec![
            "--role".to_string(),
            role.to_string(),
            "--bytes".to_string(),
            bytes.to_string(),
        ];
        v.extend(tune.args());
        v
    };
    let mut offerer = ChildPeer::spawn_cmd("raw-peer", &args("offer"))?;
    let mut answerer = ChildPeer::spawn_cmd("raw-peer", &args("answer"))?;
    let offer = offerer.expect("sdp").await?;
    answerer.send(&format!("sdp {offer}")).await?;
    let answer = answerer.expect("sdp").await?;
    offerer.send(&format!("sdp {answer}")).await?;
    let start: u128 = offerer.expect("start").await?.trim().parse()?;
    let end = answerer.expect("end").await?;
    let (end, got) = end.split_once(' ').context("malformed end line")?;
    let (end, got): (u128, u64) = (end.parse()?, got.trim().parse()?);
    anyhow::ensure!(got == bytes, "raw receiver got {got} of {bytes} bytes");
    let secs = end.saturating_sub(start) as f64 / 1e9;
    let sender_rss_mib = offerer.peak_rss_mib();
    let receiver_rss_mib = answerer.peak_rss_mib();
    answerer.quit().await;
    offerer.quit().await;
    Ok(TwoProcess {
        mib_per_s: bytes as f64 / (1024.0 * 1024.0) / secs,
        secs,
        sender_rss_mib,
        receiver_rss_mib,
    })
}
