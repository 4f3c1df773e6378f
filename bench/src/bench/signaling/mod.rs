//! `peershare-bench signaling`: a load benchmark of the signaling server, one node or two
//! nodes sharing sessions through Redis (docs/PERFORMANCE.md, "Signaling server").
//!
//! The servers are the real `peershare-signaling` binary (next to this one unless
//! `--server-bin`), each started under `taskset -c CORE`: its own process, measured from
//! `/proc/PID/stat` (CPU) and `/proc/PID/status` (RSS). With `--redis`, the benchmark also
//! starts a `redis-server` (127.0.0.1, a free port, no persistence) and two nodes on it.
//! The load generator is this process, pinned to `GENERATOR_CORE` with
//! `sched_setaffinity`, on one thread (a current-thread tokio runtime); its CPU time
//! (`getrusage`) is reported next to the servers', so that a generator at 100 % shows the
//! figure is the generator's, not the servers'. Everything is on 127.0.0.1.
//!
//! Phases:
//! 1. connect: `--peers` WebSocket connections (`--connect-concurrency` at once); with two
//!    nodes, the first member of each pair to node A, the second to node B;
//! 2. join burst: every first member of a pair joins (a new session), then every second
//!    member joins its partner's session, all at once: joins/s over both;
//! 3. idle: the servers' RSS with every peer joined and idle, minus their RSS before the
//!    first connection, divided by the peers;
//! 4. active: each pair runs a connection setup every `--interval` seconds (first setups
//!    spread over one interval): an offer (about 3 KB of SDP), the answer (the same size)
//!    and 10 ICE candidates (about 200 bytes) each way, 22 `signal`s per setup; relay
//!    latency is the time from the generator writing a frame (the send time rides in
//!    `data.t`) to the generator reading it from the recipient's socket (with two nodes,
//!    every frame crosses from one node to the other through Redis);
//! 5. saturation: `--saturate-pairs` pairs bounce `--saturate-window` frames each as fast
//!    as the servers relay them (one in 11 SDP-sized, the rest candidate-sized, as in a
//!    setup): relayed frames/s;
//! 6. failover (two nodes, `--failover-secs` > 0): the active load again; one interval
//!    in, node B is killed (SIGKILL); each of its members rejoins as a peershare peer does
//!    (`failover`), and the phase runs `--failover-secs` past the kill: seconds from the
//!    kill until each member is back in its session under its ID, sessions kept, and
//!    relay latency before and after the kill.
//!
//! The connections come from 64 loopback source addresses (127.0.0.2 …). Each node is
//! started with caps above the load (`--max-connections`, `--max-connections-per-ip`),
//! `--max-peers 2` and long idle and join timeouts; its default rate limit (200 frames/s
//! per connection) stays in force: no phase comes near it per connection.

mod failover;
mod measure;
mod procs;
mod report;
mod traffic;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use tokio::sync::Semaphore;

use failover::Rejoins;
use measure::{Meter, Phase, Samples, Usage, server_histogram, server_quantile};
use procs::{Node, NodeSpec, Proc, pin_to, process_rss_kib, start_node, start_redis};
use traffic::{Member, Ws, connect, join, member_active, member_bounce};

/// Options of `peershare-bench signaling`.
#[derive(Debug, Clone, Args)]
pub struct SignalingArgs {
    /// Joined peers, in sessions of 2.
    #[arg(long, default_value_t = 5_000)]
    pub peers: usize,
    /// Seconds between two connection setups of one pair in the active phase.
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// Seconds of the active phase.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Pairs that bounce frames in the saturation phase (0: no saturation phase).
    #[arg(long, default_value_t = 2_000)]
    pub saturate_pairs: usize,
    /// Frames in flight per pair in the saturation phase.
    #[arg(long, default_value_t = 16)]
    pub saturate_window: usize,
    /// Seconds of the saturation phase.
    #[arg(long, default_value_t = 10)]
    pub saturate_secs: u64,
    /// Two nodes sharing sessions through a `redis-server` the benchmark starts: each
    /// pair's members on different nodes.
    #[arg(long)]
    pub redis: bool,
    /// The `redis-server` binary [default: from PATH].
    #[arg(long, value_name = "PATH")]
    pub redis_bin: Option<PathBuf>,
    /// With `--redis`: seconds the failover phase runs after node B is killed (0: no
    /// failover phase).
    #[arg(long, default_value_t = 20)]
    pub failover_secs: u64,
    /// The server binary [default: peershare-signaling next to this binary].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// One more argument for the servers, e.g. `--server-arg=--backlog=4096`; repeatable.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// The core the server (node A) runs on (taskset).
    #[arg(long, default_value_t = 0)]
    pub server_core: usize,
    /// With `--redis`: the core of node B [default: --server-core].
    #[arg(long)]
    pub second_core: Option<usize>,
    /// With `--redis`: the core of redis-server [default: --server-core].
    #[arg(long)]
    pub redis_core: Option<usize>,
    /// The core the generator runs on.
    #[arg(long, default_value_t = 1)]
    pub generator_core: usize,
    /// Connections being opened at once in the connect phase.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
}

/// The figures of one run.
struct Report {
    peers: usize,
    connect_secs: f64,
    join_secs: f64,
    /// CPU during the connect and join phases.
    connect_cpu: Vec<Usage>,
    join_cpu: Vec<Usage>,
    rss_before_kib: u64,
    rss_idle_kib: u64,
    active: Phase,
    saturation: Option<Phase>,
    failover: Option<Failover>,
    errors: u64,
}

/// The failover phase's figures.
struct Failover {
    /// Members node B held.
    members: usize,
    rejoins: Rejoins,
    /// Pairs still whole at the end: both members in their session under their IDs,
    /// and the first member never told its partner left.
    sessions_kept: usize,
    sessions: usize,
    /// Relay latency after the kill (the frames sent before it are the "warm-up" here).
    phase: Phase,
}

/// The processes of one run: the nodes (A, then B with `--redis`) and Redis.
struct Deployment {
    nodes: Vec<Node>,
    redis: Option<Proc>,
}

impl Deployment {
    /// (name, pid) of every live server process.
    fn processes(&self) -> Vec<(&'static str, u32)> {
        self.nodes
            .iter()
            .map(|n| &n.proc)
            .chain(self.redis.as_ref())
            .map(|p| (p.name, p.pid()))
            .collect()
    }

    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// The nodes' RSS, summed, in KiB.
    fn nodes_rss_kib(&self) -> anyhow::Result<u64> {
        self.nodes
            .iter()
            .map(|n| process_rss_kib(n.proc.pid()))
            .sum()
    }
}

/// Run the benchmark and print its table.
pub fn run(args: SignalingArgs) -> anyhow::Result<()> {
    if args.peers < 2 || !args.peers.is_multiple_of(2) {
        bail!("--peers must be an even number of at least 2");
    }
    if args.saturate_pairs * 2 > args.peers {
        bail!("--saturate-pairs must be at most --peers / 2");
    }
    match peershare::signaling::cli::raise_fd_limit() {
        Ok(limit) if (limit as usize) < args.peers + 64 => {
            bail!("the open file limit ({limit}) is below --peers + 64")
        }
        Ok(_) => {}
        Err(e) => bail!("cannot raise the open file limit: {e}"),
    }
    pin_to(args.generator_core)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, async {
        let mut deployment = deploy(&args).await?;
        drive(&args, &mut deployment).await
    })?;
    report::print(&args, &report);
    Ok(())
}

/// Start the node (or Redis and the two nodes).
async fn deploy(args: &SignalingArgs) -> anyhow::Result<Deployment> {
    let connections = args.peers + 64;
    let spec = |name, core, redis| NodeSpec {
        name,
        bin: args.server_bin.as_deref(),
        core,
        connections,
        redis,
        extra: &args.server_args,
    };
    if !args.redis {
        let node = start_node(spec("server", args.server_core, None)).await?;
        return Ok(Deployment {
            nodes: vec![node],
            redis: None,
        });
    }
    let (redis, url) = start_redis(
        args.redis_bin.as_deref(),
        args.redis_core.unwrap_or(args.server_core),
    )?;
    let a = start_node(spec("node A", args.server_core, Some(&url))).await?;
    let b = start_node(spec(
        "node B",
        args.second_core.unwrap_or(args.server_core),
        Some(&url),
    ))
    .await?;
    Ok(Deployment {
        nodes: vec![a, b],
        redis: Some(redis),
    })
}

/// Open `n` connections, member `i` to node `i % nodes`.
async fn connect_all(args: &SignalingArgs, urls: &[String]) -> anyhow::Result<Vec<Ws>> {
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let tasks: Vec<_> = (0..args.peers)
        .map(|i| {
            let gate = Arc::clone(&gate);
            let url = urls[i % urls.len()].clone();
            tokio::task::spawn_local(async move {
                let _permit = gate.acquire_owned().await;
                connect(&url, i).await
            })
        })
        .collect();
    let mut sockets = Vec::with_capacity(args.peers);
    for t in tasks {
        sockets.push(t.await??);
    }
    Ok(sockets)
}

/// The join burst: every first member creates a session, then every second member joins
/// its partner's.
async fn join_all(sockets: Vec<Ws>) -> anyhow::Result<Vec<(Member, Member)>> {
    let (mut firsts, mut seconds) = (Vec::new(), Vec::new());
    for (i, ws) in sockets.into_iter().enumerate() {
        if i % 2 == 0 {
            firsts.push((i, ws));
        } else {
            seconds.push((i, ws));
        }
    }
    let created: Vec<_> = firsts
        .into_iter()
        .map(|(i, mut ws)| {
            tokio::task::spawn_local(async move {
                let w = join(&mut ws, None, None).await?;
                anyhow::Ok((i, ws, w))
            })
        })
        .collect();
    let mut first_members = Vec::with_capacity(created.len());
    for t in created {
        first_members.push(t.await??);
    }
    let joined: Vec<_> = seconds
        .into_iter()
        .zip(first_members.iter().map(|(_, _, w)| w.session.clone()))
        .map(|((i, mut ws), session)| {
            tokio::task::spawn_local(async move {
                let w = join(&mut ws, Some(&session), None).await?;
                anyhow::Ok((i, ws, w))
            })
        })
        .collect();
    let mut pairs = Vec::with_capacity(joined.len());
    for ((ia, ws_a, wa), t) in first_members.into_iter().zip(joined) {
        let (ib, ws_b, wb) = t.await??;
        let member = |slot, ws, w: traffic::Welcome, partner: &str| Member {
            ws,
            session: w.session,
            id: w.id,
            token: w.token,
            partner: partner.to_string(),
            slot,
            lost: false,
        };
        let partner_of_a = wb.id.clone();
        let a = member(ia, ws_a, wa, &partner_of_a);
        let b = member(ib, ws_b, wb, &a.id);
        pairs.push((a, b));
    }
    Ok(pairs)
}

async fn drive(args: &SignalingArgs, d: &mut Deployment) -> anyhow::Result<Report> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before_kib = d.nodes_rss_kib()?;
    let urls = d.urls();
    eprintln!(
        "servers {} (pids {:?}); connecting {} peers",
        urls.join(", "),
        d.processes(),
        args.peers
    );

    // 1. Connect.
    let meter = Meter::start(&d.processes());
    let started = Instant::now();
    let sockets = connect_all(args, &urls).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let connect_cpu = meter.usage();
    eprintln!("connected in {connect_secs:.2} s; joining");

    // 2. Join burst.
    let meter = Meter::start(&d.processes());
    let started = Instant::now();
    let mut pairs = join_all(sockets).await?;
    let join_secs = started.elapsed().as_secs_f64();
    let join_cpu = meter.usage();
    eprintln!("joined in {join_secs:.2} s");

    // 3. Idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle_kib = d.nodes_rss_kib()?;

    // 4. Active.
    let origin = Instant::now();
    let sdp: Rc<str> = traffic::sdp().into();
    let interval = Duration::from_secs_f64(args.interval);
    // The first round of setups is the warm-up.
    let warmup = (origin.elapsed() + interval).as_micros() as u64;
    let samples = Rc::new(RefCell::new(Samples::new(0, warmup)));
    let meter = Meter::start(&d.processes());
    let hist0 = server_histogram(&urls).await;
    let stop_at = tokio::time::Instant::now() + Duration::from_secs(args.duration);
    let n_pairs = pairs.len();
    let mut handles = Vec::with_capacity(pairs.len() * 2);
    for (i, (a, b)) in pairs.drain(..).enumerate() {
        // First setups spread evenly over one interval.
        let first = interval.mul_f64(i as f64 / n_pairs as f64);
        for (m, first) in [(a, Some(first)), (b, None)] {
            handles.push(tokio::task::spawn_local(member_active(
                m,
                first,
                interval,
                stop_at,
                origin,
                Rc::clone(&sdp),
                Rc::clone(&samples),
            )));
        }
    }
    let mut members = Vec::with_capacity(handles.len());
    for h in handles {
        members.push(h.await?);
    }
    let mut active = meter.phase(&samples);
    let hist1 = server_histogram(&urls).await;
    active.server_p50 = server_quantile(&hist0, &hist1, 0.5);
    active.server_p99 = server_quantile(&hist0, &hist1, 0.99);
    eprintln!(
        "active: {} frames in {:.1} s, p99 {:.2} ms",
        active.frames, active.secs, active.p99
    );

    // 5. Saturation.
    let saturation = if args.saturate_pairs > 0 {
        let (phase, kept) = saturate(args, d, members, origin, &sdp).await?;
        members = kept;
        Some(phase)
    } else {
        None
    };

    // 6. Failover.
    let failover = if d.nodes.len() == 2 && args.failover_secs > 0 {
        Some(fail_over(args, d, members, origin, &sdp).await?)
    } else {
        None
    };
    let errors = active.errors + saturation.as_ref().map_or(0, |s| s.errors);
    Ok(Report {
        peers: args.peers,
        connect_secs,
        join_secs,
        connect_cpu,
        join_cpu,
        rss_before_kib,
        rss_idle_kib,
        active,
        saturation,
        failover,
        errors,
    })
}

/// Regroup `members` (a, b, a, b … in pair order) into pairs.
fn into_pairs(members: Vec<Member>) -> Vec<(Member, Member)> {
    let mut it = members.into_iter();
    let mut pairs = Vec::new();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        pairs.push((a, b));
    }
    pairs
}

/// The saturation phase; returns its figures and every member (a, b … in pair order).
async fn saturate(
    args: &SignalingArgs,
    d: &Deployment,
    members: Vec<Member>,
    origin: Instant,
    sdp: &Rc<str>,
) -> anyhow::Result<(Phase, Vec<Member>)> {
    let urls = d.urls();
    // The first second is the warm-up.
    let start = origin.elapsed().as_micros() as u64;
    let samples = Rc::new(RefCell::new(Samples::new(start, start + 1_000_000)));
    let stop_at = tokio::time::Instant::now() + Duration::from_secs(args.saturate_secs);
    let meter = Meter::start(&d.processes());
    let hist0 = server_histogram(&urls).await;
    let mut handles = Vec::new();
    let mut idle = Vec::new();
    for (i, (a, b)) in into_pairs(members).into_iter().enumerate() {
        if i >= args.saturate_pairs || a.lost || b.lost {
            idle.push((a, b));
            continue;
        }
        let bounce = |m, window| {
            tokio::task::spawn_local(member_bounce(
                m,
                window,
                stop_at,
                origin,
                Rc::clone(sdp),
                Rc::clone(&samples),
            ))
        };
        handles.push((bounce(a, args.saturate_window), bounce(b, 0)));
    }
    let mut kept = Vec::with_capacity(args.peers);
    for (a, b) in handles {
        kept.push(a.await??);
        kept.push(b.await??);
    }
    let mut phase = meter.phase(&samples);
    let hist1 = server_histogram(&urls).await;
    phase.server_p50 = server_quantile(&hist0, &hist1, 0.5);
    phase.server_p99 = server_quantile(&hist0, &hist1, 0.99);
    kept.extend(idle.into_iter().flat_map(|(a, b)| [a, b]));
    Ok((phase, kept))
}

/// The failover phase: the active load, node B killed one interval in, its members
/// rejoining through node A.
async fn fail_over(
    args: &SignalingArgs,
    d: &mut Deployment,
    members: Vec<Member>,
    origin: Instant,
    sdp: &Rc<str>,
) -> anyhow::Result<Failover> {
    let interval = Duration::from_secs_f64(args.interval);
    let kill_in = interval;
    let kill_at = Instant::now() + kill_in;
    let stop_at = tokio::time::Instant::now() + kill_in + Duration::from_secs(args.failover_secs);
    // Frames sent before the kill are this phase's "warm-up": the figures after it are
    // what the kill did.
    let samples = Rc::new(RefCell::new(Samples::new(
        origin.elapsed().as_micros() as u64,
        (kill_at - origin).as_micros() as u64,
    )));
    let urls: Vec<String> = d.urls();
    let shared = Rc::new(failover::Shared {
        // A member of node B tries B first, then A.
        urls: urls.clone().into(),
        interval,
        stop_at,
        origin,
        kill_at,
        sdp: Rc::clone(sdp),
        samples: Rc::clone(&samples),
        rejoins: Rc::new(RefCell::new(Rejoins::default())),
    });
    let node_a = [urls[0].clone()];
    let meter = Meter::start(&d.processes());
    let hist0 = server_histogram(&node_a).await;
    let pairs = into_pairs(members);
    let n_pairs = pairs.len();
    let mut handles = Vec::with_capacity(n_pairs);
    let mut lost_before = 0;
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        if a.lost || b.lost {
            lost_before += 1;
            continue;
        }
        let first = interval.mul_f64(i as f64 / n_pairs as f64);
        let a = tokio::task::spawn_local(member_active(
            a,
            Some(first),
            interval,
            stop_at,
            origin,
            Rc::clone(sdp),
            Rc::clone(&samples),
        ));
        let b = tokio::task::spawn_local(failover::member_resilient(b, 1, Rc::clone(&shared)));
        handles.push((a, b));
    }
    tokio::time::sleep(kill_in).await;
    let b = &mut d.nodes[1].proc;
    eprintln!("killing node B (pid {})", b.pid());
    b.kill();
    let mut sessions_kept: usize = 0;
    for (a, b) in handles {
        let (a, b_in) = (a.await?, b.await?);
        if !a.lost && b_in {
            sessions_kept += 1;
        }
    }
    let mut phase = meter.phase(&samples);
    let hist1 = server_histogram(&node_a).await;
    phase.server_p50 = server_quantile(&hist0, &hist1, 0.5);
    phase.server_p99 = server_quantile(&hist0, &hist1, 0.99);
    let rejoins = std::mem::take(&mut *shared.rejoins.borrow_mut());
    // A first member told its partner left counts against its session.
    let sessions_kept = sessions_kept
        .saturating_sub(phase.left as usize)
        .saturating_sub(rejoins.other_identity as usize);
    eprintln!(
        "failover: {} of {} members back, {sessions_kept} sessions kept",
        rejoins.back_after.len(),
        n_pairs - lost_before
    );
    Ok(Failover {
        members: n_pairs - lost_before,
        rejoins,
        sessions_kept,
        sessions: n_pairs,
        phase,
    })
}
