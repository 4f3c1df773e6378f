//! Who the embedded TURN relay may talk to, and how many allocations it hands out: pure
//! logic, no I/O (the relay applies it in `turn` and `relay_plane`).
//!
//! **Peer addresses.** A relay that forwards to any address is an open proxy into the
//! network it runs in (its loopback services, the LAN, a cloud metadata endpoint). Like
//! coturn's `no-loopback-peers` / `no-multicast-peers` / `denied-peer-ip`, the embedded
//! relay refuses by default, for CreatePermission, ChannelBind, Send indications and every
//! datagram its relay sockets send or receive:
//! - loopback 127.0.0.0/8 and ::1; unspecified / "this network" 0.0.0.0/8 and ::;
//! - private 10/8, 172.16/12, 192.168/16; shared (CGNAT) 100.64/10;
//! - link-local 169.254/16 and fe80::/10; multicast 224/4 and ff00::/8; broadcast
//!   255.255.255.255; unique-local fc00::/7;
//! - the IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) of each IPv4 entry;
//! - the relay's own addresses (its listening and advertised IPs);
//!
//! except the relayed address of a live allocation of the same relay (two peers that both
//! relay through it: the in-memory hand-over). CIDRs given with `--turn-allow-peer`
//! ([`TurnConfig::allow_peers`](crate::TurnConfig::allow_peers)) override the list; only
//! the relay's own listening port stays refused (it would relay into itself).
//!
//! **Quotas.** [`AllocationQuota`] bounds the allocations of one user (the `CLIENT` part of
//! the `EXPIRY:CLIENT` username, so renewed credentials count against the same quota) and
//! of the whole relay.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use ipnet::IpNet;
use ipnet::{Ipv4Net, Ipv6Net};

/// Default most allocations one user (client ID) may hold at once.
pub const DEFAULT_ALLOCATIONS_PER_USER: usize = 10;
/// Default most allocations the whole relay holds at once.
pub const DEFAULT_MAX_ALLOCATIONS: usize = 1000;

/// STUN error code of a refused peer address (403 Forbidden).
pub const STUN_FORBIDDEN: u16 = 403;
/// STUN error code of a refused allocation (486 Allocation Quota Reached).
pub const STUN_ALLOCATION_QUOTA_REACHED: u16 = 486;

/// Why a peer address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerDenied {
    #[error("loopback address")]
    Loopback,
    #[error("unspecified or \"this network\" address")]
    Unspecified,
    #[error("private (RFC 1918) address")]
    Private,
    #[error("shared (CGNAT, RFC 6598) address")]
    Shared,
    #[error("link-local address")]
    LinkLocal,
    #[error("multicast address")]
    Multicast,
    #[error("broadcast address")]
    Broadcast,
    #[error("unique-local IPv6 address")]
    UniqueLocal,
    #[error("an address of the relay itself")]
    RelayAddress,
    #[error("the relay's own listening socket")]
    RelayListener,
}

impl PeerDenied {
    /// The STUN error code the relay answers with (403).
    pub fn code(&self) -> u16 {
        STUN_FORBIDDEN
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix))
}

const fn v6(first: u16, prefix: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, 0),
        prefix,
    ))
}

/// The default deny list (IPv4-mapped IPv6 addresses are checked as their IPv4 address).
pub const DENIED_PEER_NETS: &[(IpNet, PeerDenied)] = &[
    (v4(127, 0, 0, 0, 8), PeerDenied::Loopback),
    (v4(0, 0, 0, 0, 8), PeerDenied::Unspecified),
    (v4(10, 0, 0, 0, 8), PeerDenied::Private),
    (v4(172, 16, 0, 0, 12), PeerDenied::Private),
    (v4(192, 168, 0, 0, 16), PeerDenied::Private),
    (v4(100, 64, 0, 0, 10), PeerDenied::Shared),
    (v4(169, 254, 0, 0, 16), PeerDenied::LinkLocal),
    (v4(224, 0, 0, 0, 4), PeerDenied::Multicast),
    (v4(255, 255, 255, 255, 32), PeerDenied::Broadcast),
    (
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
        PeerDenied::Loopback,
    ),
    (
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 128)),
        PeerDenied::Unspecified,
    ),
    (v6(0xfe80, 10), PeerDenied::LinkLocal),
    (v6(0xff00, 8), PeerDenied::Multicast),
    (v6(0xfc00, 7), PeerDenied::UniqueLocal),
];

/// `ip`, with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into its IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Why `ip` is on the default deny list, if it is.
pub fn default_denied(ip: IpAddr) -> Option<PeerDenied> {
    let ip = canonical_ip(ip);
    DENIED_PEER_NETS
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, why)| why)
}

/// An error in a `--turn-allow-peer` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an IP address or CIDR (e.g. 127.0.0.1/32, 10.1.0.0/16, fd00::/8)")]
pub struct CidrError {
    input: String,
}

impl CidrError {
    /// Numeric code of this error (a usage error of the command line).
    pub fn code(&self) -> u16 {
        2
    }
}

/// Parse `ADDR/PREFIX` or a bare address (a single host). Host bits are cleared
/// (`10.1.2.3/8` → `10.0.0.0/8`).
pub fn parse_cidr(input: &str) -> Result<IpNet, CidrError> {
    let input = input.trim();
    if let Ok(net) = input.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    input
        .parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| CidrError {
            input: input.to_string(),
        })
}

/// The allow/deny decision for peer addresses of one relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    relay_ips: Vec<IpAddr>,
    listener_port: Option<u16>,
}

impl PeerPolicy {
    /// The default deny list, overridden for the CIDRs in `allow`.
    pub fn new(allow: Vec<IpNet>) -> PeerPolicy {
        PeerPolicy {
            allow,
            ..PeerPolicy::default()
        }
    }

    /// Also refuse the relay's own `ips` (unspecified ones are skipped), and always its
    /// listening socket (`listener_port` on those IPs or loopback).
    pub fn with_relay(mut self, ips: impl IntoIterator<Item = IpAddr>, listener_port: u16) -> Self {
        for ip in ips {
            let ip = canonical_ip(ip);
            if !ip.is_unspecified() && !self.relay_ips.contains(&ip) {
                self.relay_ips.push(ip);
            }
        }
        self.listener_port = Some(listener_port);
        self
    }

    /// May the relay exchange datagrams with `peer`? `live_relay`: `peer` is the relayed
    /// address of a live allocation of this relay (always allowed).
    pub fn check(&self, peer: SocketAddr, live_relay: bool) -> Result<(), PeerDenied> {
        if live_relay {
            return Ok(());
        }
        let ip = canonical_ip(peer.ip());
        let own = self.relay_ips.contains(&ip);
        if Some(peer.port()) == self.listener_port && (own || ip.is_loopback()) {
            return Err(PeerDenied::RelayListener);
        }
        if self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&peer.ip()))
        {
            return Ok(());
        }
        if own {
            return Err(PeerDenied::RelayAddress);
        }
        default_denied(ip).map_or(Ok(()), Err)
    }
}

/// Why an allocation is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error("this user already holds {0} allocations")]
    User(usize),
    #[error("the relay already holds {0} allocations")]
    Global(usize),
}

impl QuotaExceeded {
    /// The STUN error code the relay answers with (486).
    pub fn code(&self) -> u16 {
        STUN_ALLOCATION_QUOTA_REACHED
    }
}

/// Live allocations per user and in all. Holds one map entry per user with at least one
/// allocation, so it never grows beyond the global limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationQuota {
    per_user: usize,
    global: usize,
    by_user: HashMap<String, usize>,
    total: usize,
}

impl AllocationQuota {
    /// At most `per_user` allocations per user and `global` in all (`0` is treated as 1).
    pub fn new(per_user: usize, global: usize) -> AllocationQuota {
        AllocationQuota {
            per_user: per_user.max(1),
            global: global.max(1),
            by_user: HashMap::new(),
            total: 0,
        }
    }

    /// Would one more allocation of `user` fit?
    pub fn check(&self, user: &str) -> Result<(), QuotaExceeded> {
        if self.total >= self.global {
            return Err(QuotaExceeded::Global(self.total));
        }
        let held = self.held_by(user);
        if held >= self.per_user {
            return Err(QuotaExceeded::User(held));
        }
        Ok(())
    }

    /// Count one more allocation of `user`, if it fits.
    pub fn acquire(&mut self, user: &str) -> Result<(), QuotaExceeded> {
        self.check(user)?;
        *self.by_user.entry(user.to_string()).or_insert(0) += 1;
        self.total += 1;
        Ok(())
    }

    /// One allocation of `user` ended.
    pub fn release(&mut self, user: &str) {
        if let Some(held) = self.by_user.get_mut(user) {
            *held -= 1;
            if *held == 0 {
                self.by_user.remove(user);
            }
            self.total = self.total.saturating_sub(1);
        }
    }

    /// Allocations `user` holds.
    pub fn held_by(&self, user: &str) -> usize {
        self.by_user.get(user).copied().unwrap_or(0)
    }

    /// Allocations held in all.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Default for AllocationQuota {
    fn default() -> Self {
        AllocationQuota::new(DEFAULT_ALLOCATIONS_PER_USER, DEFAULT_MAX_ALLOCATIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_denied_table_matches_each_range_and_its_edges() {
        use PeerDenied::*;
        let table: &[(&str, Option<PeerDenied>)] = &[
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("126.255.255.255", None),
            ("128.0.0.0", None),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("1.0.0.0", None),
            ("10.0.0.1", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("9.255.255.255", None),
            ("172.16.0.0", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.168.0.1", Some(Private)),
            ("192.168.255.255", Some(Private)),
            ("192.169.0.0", None),
            ("192.167.255.255", None),
            ("100.64.0.0", Some(Shared)),
            ("100.127.255.255", Some(Shared)),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("169.253.255.255", None),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("223.255.255.255", None),
            ("240.0.0.1", None),
            ("255.255.255.255", Some(Broadcast)),
            ("255.255.255.254", None),
            // Documentation and public addresses pass.
            ("192.0.2.1", None),
            ("198.51.100.7", None),
            ("203.0.113.10", None),
            ("8.8.8.8", None),
            // IPv6.
            ("::1", Some(Loopback)),
            ("::", Some(Unspecified)),
            ("::2", None),
            ("fe80::1", Some(LinkLocal)),
            ("febf:ffff::1", Some(LinkLocal)),
            ("fec0::1", None),
            ("ff02::1", Some(Multicast)),
            ("ff0e::1", Some(Multicast)),
            ("fc00::1", Some(UniqueLocal)),
            ("fdff:ffff::1", Some(UniqueLocal)),
            ("fe00::1", None),
            ("fbff::1", None),
            ("2001:db8::1", None),
            ("2606:4700::1111", None),
            // IPv4-mapped IPv6 forms.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:172.16.0.1", Some(Private)),
            ("::ffff:192.168.1.1", Some(Private)),
            ("::ffff:100.64.0.1", Some(Shared)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:224.0.0.1", Some(Multicast)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:255.255.255.255", Some(Broadcast)),
            ("::ffff:8.8.8.8", None),
        ];
        for &(ip, expected) in table {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(default_denied(parsed), expected, "{ip}");
        }
    }

    #[test]
    fn peer_policy_default_refuses_denied_and_allows_public() {
        let p = PeerPolicy::new(Vec::new());
        assert_eq!(
            p.check(addr("127.0.0.1:9"), false),
            Err(PeerDenied::Loopback)
        );
        assert_eq!(
            p.check(addr("[::ffff:169.254.169.254]:80"), false),
            Err(PeerDenied::LinkLocal)
        );
        assert_eq!(p.check(addr("203.0.113.5:4000"), false), Ok(()));
        assert_eq!(p.check(addr("[2001:db8::5]:4000"), false), Ok(()));
    }

    #[test]
    fn peer_policy_live_relay_is_allowed_even_when_denied() {
        let p = PeerPolicy::new(Vec::new()).with_relay(["127.0.0.1".parse().unwrap()], 3478);
        assert_eq!(p.check(addr("127.0.0.1:50000"), true), Ok(()));
        assert_eq!(
            p.check(addr("127.0.0.1:50000"), false),
            Err(PeerDenied::RelayAddress)
        );
        assert_eq!(
            p.check(addr("127.0.0.2:50000"), false),
            Err(PeerDenied::Loopback)
        );
    }

    #[test]
    fn peer_policy_relay_own_address_is_refused_unless_allowed() {
        let relay: IpAddr = "203.0.113.10".parse().unwrap();
        let p = PeerPolicy::new(Vec::new()).with_relay([relay, IpAddr::from([0, 0, 0, 0])], 3478);
        assert_eq!(
            p.check(addr("203.0.113.10:8787"), false),
            Err(PeerDenied::RelayAddress)
        );
        assert_eq!(
            p.check(addr("[::ffff:203.0.113.10]:22"), false),
            Err(PeerDenied::RelayAddress)
        );
        assert_eq!(p.check(addr("203.0.113.11:8787"), false), Ok(()));
        let allowed =
            PeerPolicy::new(vec![parse_cidr("203.0.113.0/24").unwrap()]).with_relay([relay], 3478);
        assert_eq!(allowed.check(addr("203.0.113.10:8787"), false), Ok(()));
    }

    #[test]
    fn peer_policy_listener_is_refused_even_when_allowed() {
        let p = PeerPolicy::new(vec![parse_cidr("127.0.0.1/32").unwrap()])
            .with_relay(["127.0.0.1".parse().unwrap()], 3478);
        assert_eq!(
            p.check(addr("127.0.0.1:3478"), false),
            Err(PeerDenied::RelayListener)
        );
        assert_eq!(p.check(addr("127.0.0.1:3479"), false), Ok(()));
        // A relay listening on 0.0.0.0 is reachable on loopback too.
        let any = PeerPolicy::new(vec![parse_cidr("127.0.0.0/8").unwrap()])
            .with_relay([IpAddr::from([0, 0, 0, 0])], 3478);
        assert_eq!(
            any.check(addr("127.0.0.1:3478"), false),
            Err(PeerDenied::RelayListener)
        );
    }

    #[test]
    fn peer_policy_allow_list_overrides_only_its_ranges() {
        let p = PeerPolicy::new(vec![
            parse_cidr("127.0.0.1/32").unwrap(),
            parse_cidr("10.1.0.0/16").unwrap(),
            parse_cidr("fd00::/8").unwrap(),
        ]);
        assert_eq!(p.check(addr("127.0.0.1:9"), false), Ok(()));
        assert_eq!(p.check(addr("[::ffff:127.0.0.1]:9"), false), Ok(()));
        assert_eq!(
            p.check(addr("127.0.0.2:9"), false),
            Err(PeerDenied::Loopback)
        );
        assert_eq!(p.check(addr("10.1.200.3:9"), false), Ok(()));
        assert_eq!(p.check(addr("10.2.0.1:9"), false), Err(PeerDenied::Private));
        assert_eq!(p.check(addr("[fd12::1]:9"), false), Ok(()));
        assert_eq!(
            p.check(addr("[fc00::1]:9"), false),
            Err(PeerDenied::UniqueLocal)
        );
    }

    #[test]
    fn parse_cidr_accepts_nets_and_hosts_and_rejects_garbage() {
        assert_eq!(
            parse_cidr("10.1.2.3/8").unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_cidr("127.0.0.1").unwrap(),
            "127.0.0.1/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_cidr(" ::1 ").unwrap(),
            "::1/128".parse::<IpNet>().unwrap()
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "host",
            "10.0.0/8",
            "1.2.3.4/-1",
        ] {
            let err = parse_cidr(bad).unwrap_err();
            assert_eq!(err.code(), 2);
            assert!(err.to_string().contains("CIDR"), "{err}");
        }
    }

    #[test]
    fn allocation_quota_per_user_and_global_limits_and_release() {
        let mut q = AllocationQuota::new(2, 3);
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("a"), Err(QuotaExceeded::User(2)));
        assert_eq!(q.acquire("b"), Ok(()));
        assert_eq!(q.acquire("c"), Err(QuotaExceeded::Global(3)));
        assert_eq!(QuotaExceeded::Global(3).code(), 486);
        q.release("a");
        assert_eq!(q.held_by("a"), 1);
        assert_eq!(q.acquire("c"), Ok(()));
        assert_eq!(q.total(), 3);
        // Releasing what was never held changes nothing.
        q.release("nobody");
        assert_eq!(q.total(), 3);
        for user in ["a", "b", "c"] {
            q.release(user);
        }
        assert_eq!((q.total(), q.by_user.len()), (0, 0));
    }

    #[test]
    fn allocation_quota_zero_limits_mean_one() {
        let mut q = AllocationQuota::new(0, 0);
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("b"), Err(QuotaExceeded::Global(1)));
    }
}
