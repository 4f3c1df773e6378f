//! A plain TCP transfer with a chosen congestion control: the reference next to which
//! the WAN benchmark measures peershare, and the emulator's own throughput check
//! (`peershare-wanem tcp-send` / `tcp-recv`).
//!
//! The sender writes a deterministic pattern ([`Pattern`]) in 256 KiB writes; the
//! receiver can check every byte against it. Both stop at an optional deadline and then
//! report what they moved so far instead of hanging.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Bytes per write and per read.
pub const IO_SIZE: usize = 256 * 1024;

/// The congestion controls the kernel offers (`net.ipv4.tcp_available_congestion_control`).
pub fn available_congestion_controls() -> Vec<String> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Choose the congestion control of `sock` (`TCP_CONGESTION`).
pub fn set_congestion(sock: &impl AsRawFd, name: &str) -> io::Result<()> {
    // SAFETY: passes a valid buffer and its length.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "TCP_CONGESTION {name:?}: {e} (available: {:?})",
                available_congestion_controls()
            ),
        ));
    }
    Ok(())
}

/// The congestion control `sock` uses.
pub fn congestion(sock: &impl AsRawFd) -> io::Result<String> {
    let mut buf = [0u8; 32];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: passes a valid buffer and its length.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let s = &buf[..(len as usize).min(buf.len())];
    let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
    Ok(String::from_utf8_lossy(&s[..end]).into_owned())
}

/// Connect to `addr` and switch to congestion control `cc` before any data moves.
pub fn connect(addr: SocketAddr, cc: Option<&str>, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    if let Some(cc) = cc {
        set_congestion(&stream, cc)?;
    }
    Ok(stream)
}

/// The bytes the sender writes: a 1 MiB block of SplitMix64 output, with the block's
/// index XORed into every 8 bytes, so a byte that arrives at the wrong offset, twice or
/// not at all is seen.
#[derive(Debug, Clone)]
pub struct Pattern {
    block: Vec<u8>,
}

const BLOCK: usize = 1 << 20;

impl Default for Pattern {
    fn default() -> Self {
        Self::new(0x5eed)
    }
}

impl Pattern {
    /// The pattern of `seed`.
    pub fn new(seed: u64) -> Self {
        let mut state = seed;
        let mut block = Vec::with_capacity(BLOCK);
        while block.len() < BLOCK {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            block.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        Self { block }
    }

    /// Fill `buf` with the bytes at `offset..offset + buf.len()`.
    pub fn fill(&self, mut offset: u64, mut buf: &mut [u8]) {
        while !buf.is_empty() {
            let at = (offset % BLOCK as u64) as usize;
            let n = buf.len().min(BLOCK - at);
            let key = (offset / BLOCK as u64).to_le_bytes();
            let (head, rest) = std::mem::take(&mut buf).split_at_mut(n);
            head.copy_from_slice(&self.block[at..at + n]);
            // Byte p of the stream takes key[p % 8]; BLOCK is a multiple of 8, so p % 8 is
            // (at + i) % 8. Bytes up to the next multiple of 8 one by one, then 8 at once.
            let lead = ((8 - at % 8) % 8).min(n);
            let (first, aligned) = head.split_at_mut(lead);
            for (i, b) in first.iter_mut().enumerate() {
                *b ^= key[(at + i) % 8];
            }
            let word = u64::from_le_bytes(key);
            let mut chunks = aligned.chunks_exact_mut(8);
            for c in &mut chunks {
                let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                c.copy_from_slice(&(v ^ word).to_le_bytes());
            }
            for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
                *b ^= key[i % 8];
            }
            offset += n as u64;
            buf = rest;
        }
    }

    /// The first position in `buf` (which holds the bytes from `offset` on) that differs
    /// from the pattern.
    pub fn mismatch(&self, offset: u64, buf: &[u8]) -> Option<u64> {
        let mut expected = vec![0u8; buf.len().min(IO_SIZE)];
        for (k, chunk) in buf.chunks(expected.len().max(1)).enumerate() {
            let start = offset + (k * expected.len()) as u64;
            let want = &mut expected[..chunk.len()];
            self.fill(start, want);
            if want != chunk {
                let i = want.iter().zip(chunk).position(|(a, b)| a != b)?;
                return Some(start + i as u64);
            }
        }
        None
    }
}

/// What one side moved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    /// Bytes written (sender) or read (receiver).
    pub bytes: u64,
    /// From the call to the last byte.
    pub elapsed: Duration,
    /// Every byte asked for moved before the deadline.
    pub complete: bool,
}

impl Transfer {
    /// MiB per second.
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Gbit per second.
    pub fn gbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e9 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Write `bytes` of the pattern, then close the sending side. At the deadline the
/// connection is shut down and the transfer reported as incomplete.
pub fn send(stream: &mut TcpStream, bytes: u64, deadline: Option<Instant>) -> io::Result<Transfer> {
    let pattern = Pattern::default();
    let start = Instant::now();
    let mut buf = vec![0u8; IO_SIZE];
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(IO_SIZE as u64) as usize;
        pattern.fill(sent, &mut buf[..n]);
        let mut off = 0;
        while off < n {
            if let Some(left) = remaining(deadline) {
                if left.is_zero() {
                    let _ = stream.shutdown(Shutdown::Both);
                    return Ok(Transfer {
                        bytes: sent + off as u64,
                        elapsed: start.elapsed(),
                        complete: false,
                    });
                }
                stream.set_write_timeout(Some(left.min(Duration::from_secs(1))))?;
            }
            match stream.write(&buf[off..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => off += w,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        sent += n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    Ok(Transfer {
        bytes: sent,
        elapsed: start.elapsed(),
        complete: true,
    })
}

/// Read until the sender closes (or `expect` bytes arrived), checking every byte against
/// the pattern when `verify` is set. At the deadline the connection is shut down and
/// the transfer reported as incomplete.
pub fn receive(
    stream: &mut TcpStream,
    expect: Option<u64>,
    verify: bool,
    deadline: Option<Instant>,
) -> io::Result<Transfer> {
    let pattern = verify.then(Pattern::default);
    let start = Instant::now();
    let mut buf = vec![0u8; IO_SIZE];
    let mut got = 0u64;
    let mut last = start;
    loop {
        if expect.is_some_and(|e| got >= e) {
            break;
        }
        if let Some(left) = remaining(deadline) {
            if left.is_zero() {
                let _ = stream.shutdown(Shutdown::Both);
                return Ok(Transfer {
                    bytes: got,
                    elapsed: last.duration_since(start),
                    complete: false,
                });
            }
            stream.set_read_timeout(Some(left.min(Duration::from_secs(1))))?;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(p) = &pattern
                    && let Some(at) = p.mismatch(got, &buf[..n])
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("byte {at} differs from what the sender wrote"),
                    ));
                }
                got += n as u64;
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Transfer {
        bytes: got,
        elapsed: last.duration_since(start),
        complete: expect.is_none_or(|e| got >= e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn pattern_detects_misplaced_bytes() {
        let p = Pattern::new(1);
        let mut a = vec![0u8; 3 * BLOCK];
        p.fill(0, &mut a);
        assert_eq!(p.mismatch(0, &a), None);
        // The second block is not a copy of the first.
        assert_ne!(a[..BLOCK], a[BLOCK..2 * BLOCK]);
        assert_eq!(p.mismatch(BLOCK as u64, &a[..BLOCK]), Some(BLOCK as u64));
        let mut b = a.clone();
        b[12345] ^= 1;
        assert_eq!(p.mismatch(0, &b), Some(12345));
        let mut part = vec![0u8; 1000];
        p.fill(777, &mut part);
        assert_eq!(part[..], a[777..1777]);
        // Across a block boundary, from an unaligned offset.
        let mut edge = vec![0u8; 21];
        p.fill(BLOCK as u64 - 5, &mut edge);
        assert_eq!(edge[..], a[BLOCK - 5..BLOCK + 16]);
        // Every byte of a block follows one rule: block byte XOR the block index.
        let key = 2u64.to_le_bytes();
        for i in [0, 1, 7, 8, 9, 1000, BLOCK - 1] {
            assert_eq!(a[2 * BLOCK + i], a[i] ^ key[i % 8]);
        }
    }

    #[test]
    fn tcp_loopback_transfer_verified_and_cc_set() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let size = 5 * 1024 * 1024 + 17;
        let sender = std::thread::spawn(move || {
            let mut s = connect(addr, Some("reno"), Duration::from_secs(5)).unwrap();
            assert_eq!(congestion(&s).unwrap(), "reno");
            send(&mut s, size, None).unwrap()
        });
        let (mut conn, _) = listener.accept().unwrap();
        let got = receive(&mut conn, None, true, None).unwrap();
        let sent = sender.join().unwrap();
        assert!(sent.complete && got.complete);
        assert_eq!(sent.bytes, size);
        assert_eq!(got.bytes, size);
    }

    #[test]
    fn tcp_receive_deadline_reports_incomplete() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // A sender that connects and then sends nothing until the receiver gives up.
        let idle = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
        });
        let (mut conn, _) = listener.accept().unwrap();
        let deadline = Instant::now() + Duration::from_millis(200);
        let got = receive(&mut conn, Some(10), false, Some(deadline)).unwrap();
        assert!(!got.complete);
        assert_eq!(got.bytes, 0);
        idle.join().unwrap();
    }

    #[test]
    fn set_congestion_unknown_name_fails_with_choices() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let err = set_congestion(&s, "no-such-cc").unwrap_err();
        assert!(err.to_string().contains("available"), "{err}");
    }
}
