//! TUN devices (IFF_TUN | IFF_NO_PI: one IPv4 packet per read or write; with offload a
//! vnet header in front and TCP super-packets, [`crate::gso`]) created directly inside
//! a network namespace and configured there by ioctl: MTU,
//! transmit queue length, a point-to-point address pair, IPv6 off, up. Nothing ever
//! appears in the namespace the process runs in. The device lives as long as its file
//! descriptor (and every copy of it, e.g. in a child process that has not run its
//! program yet): closing the last one removes the device and its addresses, and
//! [`remove`] deletes it by name.

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::netns;

/// One end of the emulated path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunSpec {
    /// Network namespace (a name under /run/netns, or an absolute path).
    pub netns: String,
    /// Device name inside it (at most 15 bytes).
    pub device: String,
    /// This end's address.
    pub local: Ipv4Addr,
    /// The other end's address (the point-to-point peer).
    pub peer: Ipv4Addr,
    /// MTU in bytes.
    pub mtu: u32,
    /// Transmit queue length in packets: what the kernel holds for the emulator to read.
    pub txqueuelen: u32,
    /// A vnet header on every packet, checksum and TCPv4 segmentation offload
    /// ([`crate::gso`]).
    pub offload: bool,
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad device name {name:?} (1–15 bytes)"),
        ));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; the kernel reads the
    // address family first.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(fd: RawFd, request: libc::c_ulong, req: &mut libc::ifreq, what: &str) -> io::Result<()> {
    // SAFETY: `req` is a valid, initialised ifreq that outlives the call; every request
    // used here reads or writes only an ifreq.
    if unsafe { libc::ioctl(fd, request as _, req as *mut libc::ifreq) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn cvt(ret: libc::c_int, what: &str) -> io::Result<RawFd> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(ret)
}

/// Create and configure the TUN device of `spec` inside its namespace; returns its
/// non-blocking file descriptor.
pub fn create(spec: &TunSpec) -> io::Result<OwnedFd> {
    netns::run_in(&spec.netns, || create_here(spec))
}

/// Remove `device` from namespace `netns` if it is still there (`ip link del`): for a
/// device whose descriptor this process closed while a copy of it lives on elsewhere.
pub fn remove(netns: &str, device: &str) -> io::Result<()> {
    let name = ifreq(device)?.ifr_name;
    netns::run_in(netns, || {
        // SAFETY: plain call; `ifreq` leaves the name NUL-terminated.
        if unsafe { libc::if_nametoindex(name.as_ptr()) } == 0 {
            return Ok(());
        }
        // The child runs in this thread's namespace.
        netns::command(&["ip", "link", "del", "dev", device])
    })
}

fn create_here(spec: &TunSpec) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with a NUL-terminated path.
    let raw = cvt(
        unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        },
        "open /dev/net/tun",
    )?;
    // SAFETY: `raw` is a fresh descriptor owned by nothing else.
    let tun = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = ifreq(&spec.device)?;
    let vnet = if spec.offload { libc::IFF_VNET_HDR } else { 0 };
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | vnet) as libc::c_short;
    ioctl(
        tun.as_raw_fd(),
        libc::TUNSETIFF as libc::c_ulong,
        &mut req,
        &format!("TUNSETIFF {}", spec.device),
    )?;
    if spec.offload {
        let features = (libc::TUN_F_CSUM | libc::TUN_F_TSO4) as libc::c_ulong;
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        let r = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETOFFLOAD as _, features) };
        cvt(r, "TUNSETOFFLOAD")?;
    }
    // SAFETY: the kernel wrote a NUL-terminated name into ifr_name.
    let name = unsafe { CStr::from_ptr(req.ifr_name.as_ptr()) }
        .to_string_lossy()
        .into_owned();

    // SAFETY: plain syscall; the socket is only a handle for the interface ioctls, in
    // this thread's (the target) namespace.
    let sock = cvt(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) },
        "socket for interface ioctls",
    )?;
    // SAFETY: `sock` is a fresh descriptor owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let fd = sock.as_raw_fd();

    let mut req = ifreq(&name)?;
    req.ifr_ifru.ifru_mtu = spec.mtu as libc::c_int;
    ioctl(fd, libc::SIOCSIFMTU, &mut req, "set MTU")?;
    let mut req = ifreq(&name)?;
    // ifr_qlen shares its place with ifr_ifindex (an int).
    req.ifr_ifru.ifru_ifindex = spec.txqueuelen as libc::c_int;
    ioctl(fd, libc::SIOCSIFTXQLEN, &mut req, "set txqueuelen")?;
    // Before the device is up, so that it never sends a router solicitation.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    let mut req = ifreq(&name)?;
    req.ifr_ifru.ifru_addr = sockaddr(spec.local);
    ioctl(fd, libc::SIOCSIFADDR, &mut req, "set address")?;
    let mut req = ifreq(&name)?;
    req.ifr_ifru.ifru_dstaddr = sockaddr(spec.peer);
    ioctl(fd, libc::SIOCSIFDSTADDR, &mut req, "set peer address")?;
    let mut req = ifreq(&name)?;
    ioctl(fd, libc::SIOCGIFFLAGS, &mut req, "get flags")?;
    // SAFETY: SIOCGIFFLAGS filled ifru_flags.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(fd, libc::SIOCSIFFLAGS, &mut req, "set up")?;
    Ok(tun)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_rejects_bad_names() {
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-that-is-too-long").is_err());
        assert!(ifreq("nul\0").is_err());
        let req = ifreq("wanem0").unwrap();
        assert_eq!(req.ifr_name[5] as u8, b'0');
        assert_eq!(req.ifr_name[6], 0);
    }

    #[test]
    fn sockaddr_is_network_order() {
        let sa = sockaddr(Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        // sa_data: port (2 bytes), then the address bytes in order.
        let bytes: Vec<u8> = sa.sa_data[2..6].iter().map(|b| *b as u8).collect();
        assert_eq!(bytes, [198, 51, 100, 1]);
    }
}
