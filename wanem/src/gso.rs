//! TCP segmentation offload through the emulator, without changing what the link model
//! sees.
//!
//! With `IFF_VNET_HDR` and `TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4)` the sending stack hands
//! the TUN device TCP/IPv4 super-packets of up to 64 KiB (a `virtio_net_hdr` with
//! `gso_type` TCPV4 and `gso_size` = MSS in front) instead of one packet per MSS, and
//! the device accepts such super-packets on write, so the receiving stack takes them in
//! one piece, as from a NIC with GRO. That removes most of the per-packet system calls
//! and stack passes, which are the emulator's cost.
//!
//! The link still decides per wire packet: a super-packet counts as its segments, each
//! with its own length (headers + its share of the payload), loss draw, queue slot and
//! delivery time. Consecutive segments that are delivered, not reordered and due within
//! [`COALESCE`] of the first of them leave as one packet (a smaller super-packet, or a
//! plain one), written when the last of them is due: no byte arrives earlier than the
//! link allows, and none later than [`COALESCE`] after. Everything else — dropped,
//! reordered or later segments — is cut out here: new IPv4 and TCP headers (total length,
//! IP ID and header checksum, sequence number, FIN/PSH only on the last piece, CWR only
//! on the first) and a partial checksum that the receiving stack completes or trusts.

use std::time::Duration;

/// Size of the legacy `virtio_net_hdr` in front of every packet (TUN's default).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_ECN`, or-ed into `gso_type`.
pub const GSO_ECN: u8 = 0x80;
/// How far apart the delivery times of segments sent together may be.
pub const COALESCE: Duration = Duration::from_micros(250);

/// The `virtio_net_hdr` (legacy layout, native byte order as TUN uses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let b = buf.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// Its 10 bytes.
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// The layout of a TCP/IPv4 super-packet (the bytes after the vnet header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSuper {
    /// IPv4 header bytes.
    pub ip_len: usize,
    /// TCP header bytes.
    pub tcp_len: usize,
    /// Payload bytes.
    pub payload: usize,
    /// Payload bytes per segment.
    pub mss: usize,
}

impl TcpSuper {
    /// The layout of `pkt` if `hdr` says it is a TCPv4 super-packet and its headers agree.
    pub fn parse(hdr: &VnetHdr, pkt: &[u8]) -> Option<Self> {
        if hdr.gso_type & !GSO_ECN != GSO_TCPV4 || hdr.gso_size == 0 {
            return None;
        }
        let ip = pkt.get(..20)?;
        if ip[0] >> 4 != 4 || ip[9] != 6 {
            return None;
        }
        let ip_len = usize::from(ip[0] & 0x0f) * 4;
        let tcp_len = usize::from(pkt.get(ip_len + 12)? >> 4) * 4;
        let headers = ip_len + tcp_len;
        if ip_len < 20 || tcp_len < 20 || pkt.len() < headers {
            return None;
        }
        Some(Self {
            ip_len,
            tcp_len,
            payload: pkt.len() - headers,
            mss: usize::from(hdr.gso_size),
        })
    }

    /// Header bytes of every segment.
    pub fn headers(&self) -> usize {
        self.ip_len + self.tcp_len
    }

    /// How many segments it stands for.
    pub fn segments(&self) -> usize {
        self.payload.div_ceil(self.mss).max(1)
    }

    /// Payload bytes of segments `first..end`.
    pub fn payload_of(&self, first: usize, end: usize) -> usize {
        (end * self.mss).min(self.payload) - (first * self.mss).min(self.payload)
    }

    /// Wire length of segment `i` (what the link serialises).
    pub fn wire_len(&self, i: usize) -> usize {
        self.headers() + self.payload_of(i, i + 1)
    }
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The one's-complement sum of `data` as 16-bit big-endian words.
fn sum16(data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    let mut sum: u32 = chunks
        .by_ref()
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// The IPv4 header checksum of `ip` (its checksum field counted as zero).
pub fn ipv4_checksum(ip: &[u8]) -> u16 {
    !fold(sum16(ip) - u32::from(u16::from_be_bytes([ip[10], ip[11]])))
}

/// The folded, not complemented, pseudo-header sum of a TCP/IPv4 segment of `tcp_bytes`
/// (header + payload): what a partial checksum holds before the rest is added.
pub fn tcp_pseudo_sum(ip: &[u8], tcp_bytes: usize) -> u16 {
    fold(sum16(&ip[12..20]) + 6 + tcp_bytes as u32)
}

/// Build, into `out`, the packet (vnet header included) that carries segments
/// `first..end` of the super-packet `pkt` (the bytes after its vnet header `hdr`). A
/// single segment becomes a plain packet, several a smaller super-packet.
pub fn build_run(
    hdr: &VnetHdr,
    pkt: &[u8],
    lay: &TcpSuper,
    first: usize,
    end: usize,
    out: &mut Vec<u8>,
) {
    let headers = lay.headers();
    let start = headers + (first * lay.mss).min(lay.payload);
    let payload = lay.payload_of(first, end);
    let last = end >= lay.segments();
    let vnet = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if end - first > 1 {
            hdr.gso_type
        } else {
            GSO_NONE
        },
        hdr_len: headers as u16,
        gso_size: if end - first > 1 { lay.mss as u16 } else { 0 },
        csum_start: lay.ip_len as u16,
        csum_offset: 16,
    };
    out.clear();
    out.extend_from_slice(&vnet.to_bytes());
    out.extend_from_slice(&pkt[..headers]);
    out.extend_from_slice(&pkt[start..start + payload]);
    let ip = VNET_HDR_LEN;
    let tcp = ip + lay.ip_len;
    // IPv4: total length, ID (+1 per segment, as the kernel's segmentation does),
    // header checksum.
    let total = (headers + payload) as u16;
    out[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    let id = u16::from_be_bytes([out[ip + 4], out[ip + 5]]).wrapping_add(first as u16);
    out[ip + 4..ip + 6].copy_from_slice(&id.to_be_bytes());
    out[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let check = ipv4_checksum(&out[ip..ip + lay.ip_len]);
    out[ip + 10..ip + 12].copy_from_slice(&check.to_be_bytes());
    // TCP: sequence number, flags, partial checksum.
    let seq = u32::from_be_bytes([out[tcp + 4], out[tcp + 5], out[tcp + 6], out[tcp + 7]])
        .wrapping_add((first * lay.mss) as u32);
    out[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
    const FIN: u8 = 0x01;
    const PSH: u8 = 0x08;
    const CWR: u8 = 0x80;
    if !last {
        out[tcp + 13] &= !(FIN | PSH);
    }
    if first > 0 {
        out[tcp + 13] &= !CWR;
    }
    let pseudo = tcp_pseudo_sum(&out[ip..ip + lay.ip_len], lay.tcp_len + payload);
    out[tcp + 16..tcp + 18].copy_from_slice(&pseudo.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 super-packet: 20-byte IP header, 32-byte TCP header (timestamps),
    /// `payload` bytes, MSS `mss`, flags PSH|ACK|CWR|FIN.
    fn super_packet(payload: usize, mss: u16) -> (VnetHdr, Vec<u8>) {
        let mut p = vec![0u8; 52 + payload];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((52 + payload) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xfff0u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 51, 100, 1]);
        p[16..20].copy_from_slice(&[198, 51, 100, 2]);
        let t = 20;
        p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&0xffff_f000u32.to_be_bytes());
        p[t + 12] = 8 << 4;
        p[t + 13] = 0x80 | 0x10 | 0x08 | 0x01;
        for (i, b) in p[52..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: mss,
            csum_start: 20,
            csum_offset: 16,
        };
        (hdr, p)
    }

    /// Complete a partial checksum as the kernel does and check the segment verifies.
    fn tcp_checksum_ok(pkt: &[u8], ip_len: usize) -> bool {
        let mut seg = pkt[ip_len..].to_vec();
        // Completing: sum from csum_start (the field holds the pseudo-header sum).
        let c = !fold(sum16(&seg));
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        // Verifying: pseudo-header + segment sums to 0xffff.
        let pseudo = sum16(&pkt[12..20]) + 6 + seg.len() as u32;
        fold(pseudo + sum16(&seg)) == 0xffff
    }

    #[test]
    fn vnet_hdr_roundtrip() {
        let (hdr, _) = super_packet(10, 4);
        assert_eq!(VnetHdr::parse(&hdr.to_bytes()), Some(hdr));
        assert_eq!(VnetHdr::parse(&[0; 9]), None);
    }

    #[test]
    fn tcp_super_layout_and_wire_lengths() {
        let (hdr, p) = super_packet(3000, 1448);
        let lay = TcpSuper::parse(&hdr, &p).unwrap();
        assert_eq!((lay.ip_len, lay.tcp_len, lay.payload), (20, 32, 3000));
        assert_eq!(lay.segments(), 3);
        assert_eq!(lay.wire_len(0), 1500);
        assert_eq!(lay.wire_len(2), 52 + 104);
        assert_eq!(lay.payload_of(1, 3), 1552);
        let plain = VnetHdr {
            gso_type: GSO_NONE,
            ..hdr
        };
        assert_eq!(TcpSuper::parse(&plain, &p), None);
        assert_eq!(TcpSuper::parse(&hdr, &p[..30]), None);
    }

    #[test]
    fn build_run_rewrites_headers_per_piece() {
        let (hdr, p) = super_packet(5000, 1448);
        let lay = TcpSuper::parse(&hdr, &p).unwrap();
        assert_eq!(lay.segments(), 4);
        let mut out = Vec::new();
        let mut payload = Vec::new();
        for (first, end) in [(0, 1), (1, 3), (3, 4)] {
            build_run(&hdr, &p, &lay, first, end, &mut out);
            let v = VnetHdr::parse(&out).unwrap();
            let pkt = &out[VNET_HDR_LEN..];
            let n = lay.payload_of(first, end);
            assert_eq!(pkt.len(), 52 + n);
            assert_eq!(u16::from_be_bytes([pkt[2], pkt[3]]) as usize, 52 + n);
            assert_eq!(
                u16::from_be_bytes([pkt[4], pkt[5]]),
                0xfff0u16.wrapping_add(first as u16)
            );
            assert_eq!(
                ipv4_checksum(&pkt[..20]),
                u16::from_be_bytes([pkt[10], pkt[11]])
            );
            let seq = u32::from_be_bytes([pkt[24], pkt[25], pkt[26], pkt[27]]);
            assert_eq!(seq, 0xffff_f000u32.wrapping_add((first * 1448) as u32));
            let flags = pkt[33];
            assert_eq!(flags & 0x80 != 0, first == 0, "CWR only on the first piece");
            assert_eq!(
                flags & 0x09 != 0,
                end == 4,
                "FIN/PSH only on the last piece"
            );
            assert_eq!(flags & 0x10, 0x10, "ACK kept");
            // A super-packet's partial checksum covers its whole length, as the kernel's
            // segmentation expects; completed over the piece it verifies either way.
            assert!(
                tcp_checksum_ok(pkt, 20),
                "partial checksum of piece {first}..{end}"
            );
            if end - first > 1 {
                assert_eq!((v.gso_type, v.gso_size), (GSO_TCPV4, 1448));
            } else {
                assert_eq!((v.gso_type, v.gso_size), (GSO_NONE, 0));
            }
            assert_eq!(
                (v.flags, v.csum_start, v.csum_offset),
                (F_NEEDS_CSUM, 20, 16)
            );
            payload.extend_from_slice(&pkt[52..]);
        }
        assert_eq!(payload, p[52..]);
    }

    #[test]
    fn ipv4_checksum_known_header() {
        // The classic example header (checksum 0xb861).
        let h: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
    }
}
