//! Packetization-layer path MTU discovery for one larger packet size (RFC 8899 §6.2).
//!
//! The association starts with packets that fit any path. When configured with a larger
//! size, it sends a HEARTBEAT whose heartbeat information pads the packet to exactly that
//! size. A conforming peer echoes the information in its HEARTBEAT ACK, so an answer
//! proves that the path carries packets of that size in both directions and that the
//! peer reads them. Without an answer after `MAX_PROBES` tries (each waiting one RTO),
//! the size is given up and nothing changes. Pure state: the association passes in the
//! time and sends what this returns.

use bytes::{BufMut, Bytes, BytesMut};
use std::time::{Duration, Instant};

/// Marks the heartbeat information of a probe (followed by the probe's nonce).
const MAGIC: &[u8; 8] = b"rtcPLPMT";
/// Probes sent before the size is given up (RFC 8899's MAX_PROBES).
pub(crate) const MAX_PROBES: u32 = 3;
/// Bytes of a probe packet before its heartbeat information: the SCTP common header
/// (12), the chunk header (4) and the parameter header (4).
const PROBE_OVERHEAD: u32 = 20;
/// The smallest information a probe carries: the magic and the nonce.
const MIN_INFO: u32 = 16;

/// What a timeout did to the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeTimeout {
    /// Nothing was due.
    NotDue,
    /// The probe goes again.
    Retry,
    /// `MAX_PROBES` probes went unanswered: the path does not carry the size.
    GaveUp,
}

/// One probe size under test.
#[derive(Debug, Clone)]
pub(crate) struct MtuProbe {
    size: u32,
    nonce: u64,
    sent: u32,
    due: Option<Instant>,
    send_now: bool,
}

impl MtuProbe {
    /// A probe for packets of `size` bytes (rounded down to the 4-byte chunk padding).
    pub(crate) fn new(size: u32, nonce: u64) -> Self {
        let size = (size.max(PROBE_OVERHEAD + MIN_INFO)) & !3;
        Self {
            size,
            nonce,
            sent: 0,
            due: None,
            send_now: true,
        }
    }

    /// The packet size under test: what the path carries once the probe is answered.
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// The heartbeat information of a probe to send at `now`, if one is due; `timeout`
    /// is how long to wait for its answer.
    pub(crate) fn poll_send(&mut self, now: Instant, timeout: Duration) -> Option<Bytes> {
        if !self.send_now {
            return None;
        }
        self.send_now = false;
        self.sent += 1;
        self.due = Some(now + timeout);
        let len = (self.size - PROBE_OVERHEAD) as usize;
        let mut info = BytesMut::with_capacity(len);
        info.put_slice(MAGIC);
        info.put_u64(self.nonce);
        info.resize(len, 0);
        Some(info.freeze())
    }

    /// When the wait for the current probe's answer ends.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Called on every timer pass.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> ProbeTimeout {
        match self.due {
            Some(due) if now >= due => {
                self.due = None;
                if self.sent >= MAX_PROBES {
                    ProbeTimeout::GaveUp
                } else {
                    self.send_now = true;
                    ProbeTimeout::Retry
                }
            }
            _ => ProbeTimeout::NotDue,
        }
    }

    /// Whether a HEARTBEAT ACK carrying `info` answers one of this probe's packets (a
    /// retry carries the same information, so a late answer to an earlier try counts).
    pub(crate) fn is_answer(&self, info: &[u8]) -> bool {
        self.sent > 0
            && info.len() == (self.size - PROBE_OVERHEAD) as usize
            && info.starts_with(MAGIC)
            && info[MAGIC.len()..MAGIC.len() + 8] == self.nonce.to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTO: Duration = Duration::from_secs(1);

    #[test]
    fn mtu_probe_info_pads_packet_to_size_and_is_recognised() {
        let mut p = MtuProbe::new(1402, 7);
        assert_eq!(p.size(), 1400);
        let now = Instant::now();
        let info = p.poll_send(now, RTO).unwrap();
        assert_eq!(info.len() as u32 + PROBE_OVERHEAD, 1400);
        assert!(p.is_answer(&info));
        assert!(p.poll_send(now, RTO).is_none(), "one probe per try");
        // Another nonce, a cut information or a plain heartbeat is not an answer.
        let other = MtuProbe::new(1400, 8);
        assert!(!other.is_answer(&info));
        assert!(!p.is_answer(&info[..info.len() - 4]));
        assert!(!p.is_answer(b"plain heartbeat info"));
    }

    #[test]
    fn mtu_probe_unanswered_retries_then_gives_up() {
        let mut p = MtuProbe::new(1400, 1);
        let mut now = Instant::now();
        for try_ in 1..=MAX_PROBES {
            assert!(p.poll_send(now, RTO).is_some(), "try {try_}");
            assert_eq!(p.on_timeout(now), ProbeTimeout::NotDue);
            now += RTO;
            let want = if try_ == MAX_PROBES {
                ProbeTimeout::GaveUp
            } else {
                ProbeTimeout::Retry
            };
            assert_eq!(p.on_timeout(now), want);
        }
        assert!(p.poll_send(now, RTO).is_none());
    }
}
