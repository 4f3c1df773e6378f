//! Subcommands of the `peershare` binary and their shared output helpers.

pub mod output;
pub mod recv;
pub mod send;
pub mod signal;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};

/// `error CODE: message` for any error; library errors keep their stable code.
pub fn describe(e: &anyhow::Error) -> String {
    let code = e
        .chain()
        .find_map(|c| c.downcast_ref::<peershare::Error>())
        .map(|pe| pe.code())
        .unwrap_or(peershare::codes::INVALID_ARGUMENT);
    format!("error {code}: {e:#}")
}

/// The address other machines on the LAN most likely reach us at: the source address
/// of the default route. A UDP `connect` only consults the routing table; it sends
/// nothing. Falls back to loopback on a machine without a route.
pub fn lan_ip() -> IpAddr {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            // 192.0.2.1 is TEST-NET-1 (documentation); no packet is sent.
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// This machine's host name, as the default display name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "peershare".into())
}

/// Human-readable byte count.
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
