//! Machine facts and per-process figures read from /proc.

use std::net::UdpSocket;

use peershare::rtc::runtime::{BufferReport, enlarge_buffers};

/// What the bench reports about the machine it ran on.
pub struct Machine {
    pub cores: usize,
    pub mem_total_mib: u64,
    pub kernel: String,
    pub rmem_max: Option<u64>,
    pub wmem_max: Option<u64>,
    pub udp_buffer: Option<BufferReport>,
}

impl Machine {
    pub fn probe(socket_buffer_bytes: usize) -> Self {
        let udp_buffer = UdpSocket::bind("127.0.0.1:0")
            .ok()
            .map(|s| enlarge_buffers(&s, socket_buffer_bytes));
        Self {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            mem_total_mib: proc_field("/proc/meminfo", "MemTotal:").unwrap_or(0) / 1024,
            kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into()),
            rmem_max: read_trimmed("/proc/sys/net/core/rmem_max").and_then(|s| s.parse().ok()),
            wmem_max: read_trimmed("/proc/sys/net/core/wmem_max").and_then(|s| s.parse().ok()),
            udp_buffer,
        }
    }

    /// One markdown-friendly line per fact.
    pub fn describe(&self) -> Vec<String> {
        let opt = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        let udp = match &self.udp_buffer {
            Some(r) => format!(
                "requested {} B, granted recv {} B / send {} B (kernel reports 2x), {}, capped: {}",
                r.requested,
                r.recv,
                r.send,
                if r.forced {
                    "SO_RCVBUFFORCE (CAP_NET_ADMIN)"
                } else {
                    "SO_RCVBUF"
                },
                if r.capped() { "YES" } else { "no" }
            ),
            None => "could not open a UDP socket".into(),
        };
        vec![
            format!("cores: {}", self.cores),
            format!("RAM: {} MiB", self.mem_total_mib),
            format!("kernel: {}", self.kernel),
            format!(
                "net.core.rmem_max: {} / wmem_max: {}",
                opt(self.rmem_max),
                opt(self.wmem_max)
            ),
            format!("UDP receive buffer: {udp}"),
        ]
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The first number after `key` in a `/proc` "Key: value kB" file.
fn proc_field(path: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The 1-minute load average: other work on the machine skews every figure.
pub fn load_average() -> String {
    read_trimmed("/proc/loadavg")
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The date and time, `2026-01-31 14:05 UTC` (`?` if date(1) does not run).
pub fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

/// Peak resident set size (VmHWM) of process `pid`, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    proc_field(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// The kernel's count of UDP datagrams dropped because a receive buffer was full
/// (`nstat UdpRcvbufErrors`), machine-wide.
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let header = udp.next()?;
    let values = udp.next()?;
    let idx = header
        .split_whitespace()
        .position(|h| h == "RcvbufErrors")?;
    values.split_whitespace().nth(idx)?.parse().ok()
}
