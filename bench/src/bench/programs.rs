//! Command-line programs as child processes: the `peershare` binary and the reference
//! tools, one transfer at a time, clocked from the start of the receiving program to its
//! exit. Shared by `--refs` (refs.rs), `files` (files.rs) and `wan` (wan.rs).
//!
//! - peershare: `peershare send --embedded --direct-only --json --bind IP SRC` and
//!   `peershare recv --direct-only --yes --json --bind IP --out DIR TICKET`. `SRC` is a
//!   file or a directory (shared as a tree). `--direct-only` because sendme runs with
//!   its relays disabled.
//! - sendme (crates.io): `sendme send SRC --relay disabled --ticket-type addresses
//!   --magic-ipv4-addr IP:0` and `sendme receive TICKET --relay disabled …`, each in a
//!   directory of its own (sendme keeps its store in, and receives into, the current
//!   directory); the sender is ended with SIGINT after the receiver has exited.
//!
//! Peak RSS per side is each process's `ru_maxrss` from `wait4`.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Longest wait for a sender to be ready (import, ticket) or a transfer to finish.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for a sender to exit once its recipient has everything.
const SENDER_EXIT: Duration = Duration::from_secs(30);

/// The `peershare` binary: `given`, or the one next to this bench binary.
pub fn peershare_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .context("locating the bench binary")?
            .with_file_name("peershare"),
    };
    if !path.is_file() {
        bail!(
            "no peershare binary at {} (build it: cargo build --release -p peershare, or pass --peershare PATH)",
            path.display()
        );
    }
    // The peers run from their own working directories: a relative path would not
    // name the binary there.
    std::fs::canonicalize(&path).with_context(|| format!("resolving {}", path.display()))
}

/// What `program --version` prints (empty if it does not run).
pub fn version(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// One network path a transfer runs over.
#[derive(Clone)]
pub struct Net {
    pub label: &'static str,
    /// Sender side (and servers): namespace (None = this one) and address.
    pub send_ns: Option<String>,
    pub send_ip: IpAddr,
    pub recv_ns: Option<String>,
    pub recv_ip: IpAddr,
}

impl Net {
    /// Both ends in this namespace, on 127.0.0.1.
    pub fn loopback() -> Self {
        Self {
            label: "loopback (127.0.0.1)",
            send_ns: None,
            send_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            recv_ns: None,
            recv_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// `program`, run in namespace `ns` if one is given.
    pub fn command(ns: &Option<String>, program: &Path) -> Command {
        match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

/// A running program whose output lines are kept (with the time each was read) and
/// whose peak RSS is read when it is reaped.
pub struct Proc {
    child: std::process::Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

/// What `wait4` returned.
pub struct Exit {
    pub ok: bool,
    pub maxrss_mib: f64,
    /// CPU time, user and system, of the process and the threads it ran.
    pub cpu_secs: f64,
    pub at: Instant,
}

impl Proc {
    pub fn spawn(mut cmd: Command, cwd: &Path) -> anyhow::Result<Self> {
        let mut child = cmd
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err) as Box<dyn std::io::Read + Send>,
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send((Instant::now(), line));
                }
            });
        }
        Ok(Self { child, lines })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The first output line (stdout or stderr) for which `pick` returns something.
    pub fn wait_line<T>(
        &self,
        what: &str,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + TOOL_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, line)) => {
                    if let Some(v) = pick(&line) {
                        return Ok(v);
                    }
                    seen.push(line);
                }
                Err(_) => bail!("no {what}; output so far:\n{}", seen.join("\n")),
            }
        }
    }

    /// The output lines not taken yet, up to the end of the output (or for `wait` at
    /// most): call after the program has exited.
    pub fn rest(&self, wait: Duration) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + wait;
        let mut rest = Vec::new();
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            rest.push(l);
        }
        rest
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Reap the process (killing it after `timeout`); its exit and peak RSS. Once only:
    /// a second call finds no such child.
    pub fn reap(&self, timeout: Duration) -> Exit {
        let pid = self.pid();
        let deadline = Instant::now() + timeout;
        let mut killed = false;
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 on our own child's pid with valid out-pointers. The std Child
            // handle is never waited on, so the pid is reaped by this function only.
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if r == pid {
                let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                return Exit {
                    ok: !killed && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    // Linux reports ru_maxrss in KiB.
                    maxrss_mib: usage.ru_maxrss as f64 / 1024.0,
                    cpu_secs: secs(usage.ru_utime) + secs(usage.ru_stime),
                    at: Instant::now(),
                };
            }
            if r < 0 {
                return Exit {
                    ok: false,
                    maxrss_mib: f64::NAN,
                    cpu_secs: f64::NAN,
                    at: Instant::now(),
                };
            }
            if !killed && Instant::now() >= deadline {
                self.signal(libc::SIGKILL);
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// One transfer between two command-line programs.
pub struct Transfer {
    /// The receiving program's start → its exit.
    pub secs: f64,
    /// The receiving program's start → its first `download-started` event (data flows);
    /// peershare only.
    pub first_byte_secs: Option<f64>,
    pub sender_rss_mib: f64,
    pub recipient_rss_mib: f64,
    /// CPU seconds (user + system) of each program.
    pub sender_cpu_secs: f64,
    pub recipient_cpu_secs: f64,
}

impl Transfer {
    /// Clocked from `start` to the recipient's exit.
    pub fn timed(start: Instant, recv: &Exit, send: &Exit) -> Self {
        Self {
            secs: recv.at.duration_since(start).as_secs_f64(),
            first_byte_secs: None,
            sender_rss_mib: send.maxrss_mib,
            recipient_rss_mib: recv.maxrss_mib,
            sender_cpu_secs: send.cpu_secs,
            recipient_cpu_secs: recv.cpu_secs,
        }
    }
}

/// For an error message: the last `n` lines that are not routine progress events.
fn tail(lines: &[(Instant, String)], n: usize) -> String {
    const ROUTINE: [&str; 4] = [
        "\"download-available\"",
        "\"download-started\"",
        "\"download-progress\"",
        "\"download-completed\"",
    ];
    let notable: Vec<&str> = lines
        .iter()
        .map(|(_, l)| l.as_str())
        .filter(|l| !ROUTINE.iter().any(|r| l.contains(r)))
        .collect();
    notable[notable.len().saturating_sub(n)..].join("\n")
}

/// One peershare transfer of `src` (a file or a directory) into `out` (created); the
/// recipient is killed after `timeout`.
pub fn peershare(
    program: &Path,
    net: &Net,
    src: &Path,
    out: &Path,
    work: &Path,
    timeout: Duration,
) -> anyhow::Result<Transfer> {
    let mut send = Net::command(&net.send_ns, program);
    send.args(["send", "--embedded", "--direct-only", "--json", "--bind"])
        .arg(net.send_ip.to_string())
        .arg(src)
        .env_remove("PEERSHARE_SERVER")
        .env_remove("PEERSHARE_LOG");
    let sender = Proc::spawn(send, work)?;
    let ticket = sender.wait_line("peershare ticket", |l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["event"] == "ticket").then(|| v["ticket"].as_str().map(str::to_string))?
    })?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut recv = Net::command(&net.recv_ns, program);
    recv.args(["recv", "--direct-only", "--yes", "--json", "--bind"])
        .arg(net.recv_ip.to_string())
        .arg("--out")
        .arg(out)
        .arg(&ticket)
        .env_remove("PEERSHARE_SERVER")
        .env_remove("PEERSHARE_LOG");
    let start = Instant::now();
    let recipient = Proc::spawn(recv, work)?;
    let r = recipient.reap(timeout);
    let s = sender.reap(SENDER_EXIT);
    let lines = recipient.rest(Duration::from_secs(5));
    anyhow::ensure!(
        r.ok,
        "peershare recv failed or was killed after {timeout:?}; its last lines:\n{}",
        tail(&lines, 20)
    );
    let first = lines.iter().find(|(_, l)| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["event"] == "download-started")
    });
    Ok(Transfer {
        first_byte_secs: first.map(|(at, _)| at.duration_since(start).as_secs_f64()),
        ..Transfer::timed(start, &r, &s)
    })
}

/// One sendme transfer of `src` (a file or a directory): the sender runs in `send_dir`,
/// the recipient in `recv_dir` (both created), where it saves what it receives.
pub fn sendme(
    program: &Path,
    net: &Net,
    src: &Path,
    send_dir: &Path,
    recv_dir: &Path,
) -> anyhow::Result<Transfer> {
    for d in [send_dir, recv_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut send = Net::command(&net.send_ns, program);
    send.arg("send")
        .arg(src)
        .args([
            "--relay",
            "disabled",
            "--ticket-type",
            "addresses",
            "--no-progress",
        ])
        .arg("--magic-ipv4-addr")
        .arg(SocketAddr::new(net.send_ip, 0).to_string());
    let sender = Proc::spawn(send, send_dir)?;
    let ticket = sender.wait_line("sendme ticket", |l| {
        l.trim()
            .strip_prefix("sendme receive ")
            .map(|t| t.trim().to_string())
    })?;
    let mut recv = Net::command(&net.recv_ns, program);
    recv.args(["receive", &ticket, "--relay", "disabled", "--no-progress"])
        .arg("--magic-ipv4-addr")
        .arg(SocketAddr::new(net.recv_ip, 0).to_string());
    let start = Instant::now();
    let recipient = Proc::spawn(recv, recv_dir)?;
    let r = recipient.reap(TOOL_TIMEOUT);
    sender.signal(libc::SIGINT);
    let s = sender.reap(Duration::from_secs(10));
    anyhow::ensure!(
        r.ok,
        "sendme receive failed; its last lines:\n{}",
        tail(&recipient.rest(Duration::from_secs(5)), 10)
    );
    Ok(Transfer::timed(start, &r, &s))
}

/// The last component of `path`, as text.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peershare_binary_relative_path_resolved_to_absolute() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let bin = dir.path().join("peershare");
        std::fs::write(&bin, b"").unwrap();
        let relative = Path::new(".")
            .join(dir.path().file_name().unwrap())
            .join("peershare");
        let got = peershare_binary(Some(&relative)).unwrap();
        assert!(got.is_absolute(), "{}", got.display());
        assert_eq!(got, std::fs::canonicalize(&bin).unwrap());
    }

    #[test]
    fn peershare_binary_missing_file_refused() {
        let err = peershare_binary(Some(Path::new("./no-such-peershare"))).unwrap_err();
        assert!(err.to_string().contains("no peershare binary"), "{err}");
    }
}
