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

    // A first channel brings the SCTP association up.
    let first = opener.channel("first").await;
    let offer = opener.pc.create_offer(None).await.expect("an offer");
    opener
        .pc
        .set_local_description(offer)
        .await
        .expect("offer set");
    let offer = gathered_sdp(&mut opener).await;
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
    let answer = gathered_sdp(&mut acceptor).await;
    opener
        .pc
        .set_remote_description(answer)
        .await
        .expect("answer applied");
    tokio::time::timeout(PATIENCE, first.wait_open())
        .await
        .expect("the first channel opens")
        .expect("the first channel opens");
    let _first_remote = next_remote_channel(&mut acceptor).await;

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
