//! The processes the signaling benchmark starts (signaling nodes, `redis-server`), pinned
//! with `taskset`, and what it reads about them and about itself from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpStream;

/// A process the benchmark started, killed when dropped.
pub(super) struct Proc {
    child: Child,
    /// How the report names it ("node A", "redis" …).
    pub name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running signaling node.
pub(super) struct Node {
    pub proc: Proc,
    /// Its `ws://127.0.0.1:PORT` URL.
    pub url: String,
}

/// `name` next to this binary, or `given`; an error naming how to build it if absent.
fn binary(given: Option<&Path>, name: &str, build: &str) -> anyhow::Result<PathBuf> {
    let bin = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of the bench binary")?
            .join(name),
    };
    if !bin.exists() {
        bail!("{} not found: {build}", bin.display());
    }
    Ok(bin)
}

/// What a node is started with.
pub(super) struct NodeSpec<'a> {
    pub name: &'static str,
    pub bin: Option<&'a Path>,
    pub core: usize,
    /// The connection caps (above the load).
    pub connections: usize,
    pub redis: Option<&'a str>,
    pub extra: &'a [String],
}

/// Start `peershare-signaling` under `taskset -c CORE` on 127.0.0.1 (a free port), with
/// caps above the load, sessions of 2 and long timeouts; returns once it printed its URL
/// (and, with Redis, once `/readyz` says it takes joins).
pub(super) async fn start_node(spec: NodeSpec<'_>) -> anyhow::Result<Node> {
    let bin = binary(
        spec.bin,
        "peershare-signaling",
        "build it (cargo build --release -p peershare-signaling) or pass --server-bin",
    )?;
    let cap = spec.connections.to_string();
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(spec.core.to_string())
        .arg(&bin)
        .args(["--listen", "127.0.0.1:0", "--no-turn", "--max-peers", "2"])
        .args(["--max-connections", &cap, "--max-connections-per-ip", &cap])
        .args(["--idle-timeout-secs", "3600", "--join-timeout-secs", "3600"]);
    if let Some(url) = spec.redis {
        cmd.args(["--redis", url]);
    }
    cmd.args(spec.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().context("starting the server under taskset")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let proc = Proc {
        child,
        name: spec.name,
    };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the server's URL")?;
    let url = line.trim().to_string();
    if !url.starts_with("ws://") {
        bail!("the server printed no URL: {url:?}");
    }
    let node = Node { proc, url };
    if spec.redis.is_some() {
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while http_get(&node.url, "/readyz").await.map(|(s, _)| s).ok() != Some(200) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if ready.is_err() {
            bail!("{} never became ready (/readyz) with Redis", spec.name);
        }
    }
    Ok(node)
}

/// Start `redis-server` under `taskset -c CORE` on 127.0.0.1 (a free port, no
/// persistence); returns it and its URL once it accepts connections.
pub(super) fn start_redis(bin: Option<&Path>, core: usize) -> anyhow::Result<(Proc, String)> {
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => PathBuf::from("redis-server"),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir();
    let child = Command::new("taskset")
        .arg("-c")
        .arg(core.to_string())
        .arg(&bin)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} (apt install redis-server)", bin.display()))?;
    let proc = Proc {
        child,
        name: "redis",
    };
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((proc, format!("redis://127.0.0.1:{port}/")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("redis-server did not start on port {port}")
}

/// `GET path` of the server at `url` (`ws://HOST:PORT`): its status and body.
pub(super) async fn http_get(url: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("ws://");
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("status line")?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// CPU seconds (user + system) of process `pid`, from `/proc/PID/stat`.
pub(super) fn process_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), which ends with ')'.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line; 12 and 13 here.
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / ticks)
}

/// Resident set size of process `pid`, in KiB.
pub(super) fn process_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

/// Seconds the threads of process `pid` (`self` for this one) spent runnable but waiting
/// for a CPU, from `/proc/PID/task/*/schedstat`: other work on the machine taking the
/// core shows here.
pub(super) fn run_queue_wait(pid: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>() as f64
        / 1e9
}

/// CPU seconds (user + system) of this process.
pub(super) fn own_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Pin the calling thread (and the threads it starts later) to `core`.
pub(super) fn pin_to(core: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it; sched_setaffinity
    // reads it for the duration of the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}
