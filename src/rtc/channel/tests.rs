//! [`RtcChannel`] on two real peer connections on 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use webrtc::peer_connection::{PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState};

use super::*;
use crate::rtc::netsim::{LinkConfig, NetworkModel};
use crate::rtc::{RtcSettings, build_peer_connection};

/// Long enough for anything on loopback; only reached when the behaviour is wrong.
const PATIENCE: Duration = Duration::from_secs(20);

/// Reports the end of candidate gathering and the channels the remote side opens.
struct Handler {
    gathered: watch::Sender<bool>,
    channels: mpsc::UnboundedSender<Arc<dyn DataChannel>>,
}

#[async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.channels.send(dc);
    }
}

struct End {
    pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    channels: mpsc::UnboundedReceiver<Arc<dyn DataChannel>>,
}

impl End {
    /// A new channel of ours, wrapped as the session wraps a job's.
    async fn channel(&self, label: &str) -> RtcChannel {
        let dc = self
            .pc
            .create_data_channel(label, None)
            .await
            .expect("a data channel");
        RtcChannel::spawn(dc, false)
    }
}

async fn end(settings: &RtcSettings) -> End {
    let (gathered_tx, gathered) = watch::channel(false);
    let (channels_tx, channels) = mpsc::unbounded_channel();
    let handler = Handler {
        gathered: gathered_tx,
        channels: channels_tx,
    };
    let pc = build_peer_connection(settings, &[], Arc::new(handler))
        .await
        .expect("a peer connection on 127.0.0.1");
    End {
        pc,
        gathered,
        channels,
    }
}

/// The local description once gathering is complete (no trickle ICE in these tests).
async fn gathered_sdp(end: &mut End) -> webrtc::peer_connection::RTCSessionDescription {
    tokio::time::timeout(PATIENCE, end.gathered.wait_for(|g| *g))
        .await
        .expect("candidates gathered")
        .expect("handler alive");
    end.pc
        .local_description()
        .await
        .expect("a local description")
}

/// The host candidates' addresses in an SDP.
fn candidate_addrs(sdp: &str) -> Vec<SocketAddr> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .filter_map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            format!("{}:{}", f.get(4)?, f.get(5)?).parse().ok()
        })
        .collect()
}

async fn next_remote_channel(end: &mut End) -> Arc<dyn DataChannel> {
    tokio::time::timeout(PATIENCE, end.channels.recv())
        .await
        .expect("the remote channel announced")
        .expect("handler alive")
}

/// Offer, answer and a first channel that brings the SCTP association up. Returns that
/// channel (both ends) and the opener's candidate addresses.
async fn connect(
    opener: &mut End,
    acceptor: &mut End,
) -> (RtcChannel, Arc<dyn DataChannel>, Vec<SocketAddr>) {
    let first = opener.channel("first").await;
    let offer = opener.pc.create_offer(None).await.expect("an offer");
    opener
        .pc
        .set_local_description(offer)
        .await
        .expect("offer set");
    let offer = gathered_sdp(opener).await;
    let opener_addrs = candidate_addrs(&offer.sdp);
    assert!(
        !opener_addrs.is_empty(),
        "no host candidate in {}",
        offer.sdp
    );
    acceptor
        .pc
        .set_remote_description(offer)
        .await
        .expect("offer applied");
    let answer = acceptor.pc.create_answer(None).await.expect("an answer");
    acceptor
        .pc
        .set_local_description(answer)
        .await
        .expect("answer set");
    let answer = gathered_sdp(acceptor).await;
    opener
        .pc
        .set_remote_description(answer)
        .await
        .expect("answer applied");
    tokio::time::timeout(PATIENCE, first.wait_open())
        .await
        .expect("the first channel opens")
        .expect("the first channel opens");
    let first_remote = next_remote_channel(acceptor).await;
    (first, first_remote, opener_addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtc_channel_send_before_peer_acknowledges_open_reaches_peer() {
    let on_loopback = |network| RtcSettings {
        bind: Some(Ipv4Addr::LOCALHOST.into()),
        network: Some(network),
        ..Default::default()
    };
    let opener_net = NetworkModel::new(1, LinkConfig::default());
    let acceptor_net = NetworkModel::new(2, LinkConfig::default());
    let mut opener = end(&on_loopback(opener_net)).await;
    let mut acceptor = end(&on_loopback(acceptor_net.clone())).await;

    let (_first, _first_remote, opener_addrs) = connect(&mut opener, &mut acceptor).await;

    // From now on nothing the acceptor sends reaches the opener: not its
    // DATA_CHANNEL_ACK, not a SACK. What the opener sends still arrives.
    acceptor_net.set_filter(move |src, _| opener_addrs.contains(&src));

    let job = opener.channel("job").await;
    tokio::time::timeout(PATIENCE, job.send(BytesMut::from(&b"early bytes"[..])))
        .await
        .expect("the send does not wait for the DATA_CHANNEL_ACK")
        .expect("the stack takes the message");
    let remote = RtcChannel::spawn(next_remote_channel(&mut acceptor).await, true);
    let got = tokio::time::timeout(PATIENCE, remote.recv())
        .await
        .expect("the message arrives")
        .expect("the channel is open");
    assert_eq!(&got[..], b"early bytes");
    assert_eq!(
        *job.state.borrow(),
        State::Connecting,
        "the opener cannot have seen the acknowledgement"
    );

    let _ = opener.pc.close().await;
    let _ = acceptor.pc.close().await;
}

/// The send buffer follows the SCTP windows (`RtcSettings::send_buffer_window_min`): a
/// recipient that stops reading closes its window, and the sender then stops taking
/// messages long before the fixed limit. When the recipient reads again, everything
/// arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_buffer_recipient_stops_reading_sender_holds_its_window() {
    const MESSAGE: usize = 1024;
    const TOTAL: usize = 16 * 1024 * 1024;
    let settings = |window: u32| RtcSettings {
        bind: Some(Ipv4Addr::LOCALHOST.into()),
        loopback_window: None,
        sctp_receive_window: window,
        send_buffer_limit: 64 * 1024 * 1024,
        send_buffer_window_min: Some(64 * 1024),
        ..Default::default()
    };
    let mut opener = end(&settings(256 * 1024)).await;
    let mut acceptor = end(&settings(256 * 1024)).await;
    let (_first, _first_remote, _) = connect(&mut opener, &mut acceptor).await;

    let job = opener.channel("job").await;
    tokio::time::timeout(PATIENCE, job.send(BytesMut::from(&0u32.to_be_bytes()[..])))
        .await
        .expect("the first message is taken")
        .expect("the channel is open");
    // Announced, read by its reader task into a queue nobody empties yet.
    let remote = RtcChannel::spawn(next_remote_channel(&mut acceptor).await, true);

    // Numbered messages until the stack refuses one. What the recipient can hold is its
    // 256 KiB window plus the messages queued above SCTP (a few hundred); a fixed 64 MiB
    // limit would take all 16 MiB.
    let message = |n: u32| {
        let mut m = BytesMut::zeroed(MESSAGE);
        m[..4].copy_from_slice(&n.to_be_bytes());
        m
    };
    let mut sent: u32 = 1;
    loop {
        match job.dc.try_send(message(sent)).await {
            Ok(()) => sent += 1,
            Err(webrtc::error::Error::ErrSendBufferFull) => break,
            Err(e) => panic!("the stack failed a send: {e}"),
        }
        assert!(
            (sent as usize) * MESSAGE < TOTAL,
            "the sender never held back for a recipient that does not read"
        );
    }
    let admitted = sent as usize * MESSAGE;
    assert!(
        admitted < 4 * 1024 * 1024,
        "the sender took {admitted} bytes for a recipient that does not read"
    );

    // The recipient reads; the rest goes with the waiting send.
    let reader = tokio::spawn(async move {
        let mut next: u32 = 0;
        while (next as usize) < TOTAL / MESSAGE {
            let got = tokio::time::timeout(PATIENCE, remote.recv())
                .await
                .expect("the next message arrives")
                .expect("the channel is open");
            let n = u32::from_be_bytes([got[0], got[1], got[2], got[3]]);
            assert_eq!(n, next, "messages arrive in order");
            next += 1;
        }
        next
    });
    while (sent as usize) < TOTAL / MESSAGE {
        tokio::time::timeout(PATIENCE, job.send(message(sent)))
            .await
            .expect("the window reopens")
            .expect("the channel is open");
        sent += 1;
    }
    let received = reader.await.expect("the reader finishes");
    assert_eq!(received as usize, TOTAL / MESSAGE);

    let _ = opener.pc.close().await;
    let _ = acceptor.pc.close().await;
}
