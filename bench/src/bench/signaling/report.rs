//! The signaling benchmark's table (Markdown, as docs/PERFORMANCE.md records it).

use super::measure::{Phase, Usage};
use super::{Report, SignalingArgs};

/// "node A 40 % / redis 12 % / generator 55 %"; a process that could not be read at the
/// end (killed in the phase) shows "—".
fn cpu_list(usage: &[Usage], pick: impl Fn(&Usage) -> f64) -> String {
    usage
        .iter()
        .map(|u| {
            let v = pick(u);
            if v.is_finite() {
                format!("{} {:.0} %", u.name, v * 100.0)
            } else {
                format!("{} —", u.name)
            }
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn bound(ms: f64) -> String {
    if ms.is_finite() {
        format!("≤ {ms}")
    } else {
        "> 5000".to_string()
    }
}

fn phase(name: &str, warmup: &str, p: &Phase) {
    println!(
        "| {name}: relayed frames/s | {:.0} |",
        p.frames as f64 / p.secs
    );
    println!(
        "| {name}: relay latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        p.p50, p.p99, p.max
    );
    println!(
        "| {name}: servers' own relay latency (read → written, /metrics buckets) p50 / p99 | {} / {} ms |",
        bound(p.server_p50),
        bound(p.server_p99)
    );
    println!(
        "| {name}: {warmup} relay latency p99 / max | {:.2} / {:.2} ms |",
        p.warmup_p99, p.warmup_max
    );
    if !p.codes.is_empty() {
        println!(
            "| {name}: error frames by code, lost connections | {} |",
            p.codes
        );
    }
    println!(
        "| {name}: CPU (one core = 100 %) | {} |",
        cpu_list(&p.usage, |u| u.cpu)
    );
    println!(
        "| {name}: waited for a CPU (other load) | {} |",
        cpu_list(&p.usage, |u| u.wait)
    );
}

pub(super) fn print(args: &SignalingArgs, r: &Report) {
    println!();
    let layout = if args.redis {
        format!(
            "two nodes + Redis, each pair across the nodes; node A on core {}, node B on core {}, redis on core {}",
            args.server_core,
            args.second_core.unwrap_or(args.server_core),
            args.redis_core.unwrap_or(args.server_core)
        )
    } else {
        format!("one node on core {}", args.server_core)
    };
    println!(
        "## signaling: {} peers ({} pairs), setup every {} s, {} s active; {layout}, generator on core {}",
        r.peers,
        r.peers / 2,
        args.interval,
        args.duration,
        args.generator_core
    );
    println!();
    println!(
        "{}; load average at the end {}; server {}",
        crate::bench::sys::utc_now(),
        crate::bench::sys::load_average(),
        args.server_bin
            .as_deref()
            .map_or("peershare-signaling (next to this binary)".into(), |p| p
                .display()
                .to_string()),
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| connects/s (TCP + upgrade, {} at once) | {:.0} |",
        args.connect_concurrency,
        r.peers as f64 / r.connect_secs
    );
    println!(
        "| connect phase: CPU | {} |",
        cpu_list(&r.connect_cpu, |u| u.cpu)
    );
    println!(
        "| joins/s (burst of {}) | {:.0} |",
        r.peers,
        r.peers as f64 / r.join_secs
    );
    println!("| join burst: CPU | {} |", cpu_list(&r.join_cpu, |u| u.cpu));
    let per_peer = (r.rss_idle_kib.saturating_sub(r.rss_before_kib)) as f64 / r.peers as f64;
    println!(
        "| servers' RSS: before / {} idle joined peers | {:.1} MiB / {:.1} MiB |",
        r.peers,
        r.rss_before_kib as f64 / 1024.0,
        r.rss_idle_kib as f64 / 1024.0
    );
    println!("| RSS per idle joined peer | {per_peer:.1} KiB |");
    phase("active", "warm-up (first round of setups)", &r.active);
    if let Some(s) = &r.saturation {
        phase(
            &format!(
                "saturation ({} pairs × {} in flight)",
                args.saturate_pairs, args.saturate_window
            ),
            "warm-up (first second)",
            s,
        );
    }
    println!("| errors (error frames, lost connections) | {} |", r.errors);
    if let Some(f) = &r.failover {
        let (p50, p99, max) = f.rejoins.summary();
        println!(
            "| failover: node B's members back in their session under their ID | {} of {} |",
            f.rejoins.back_after.len(),
            f.members
        );
        println!(
            "| failover: seconds from the kill to back, p50 / p99 / max | {p50:.2} / {p99:.2} / {max:.2} s |"
        );
        let (n50, n99, nmax) = f.rejoins.noticed();
        println!(
            "| failover: seconds from the kill to the lost connection noticed, p50 / p99 / max | {n50:.2} / {n99:.2} / {nmax:.2} s |"
        );
        println!(
            "| failover: back within 10 s of the kill | {} of {} |",
            f.rejoins.within(10.0),
            f.members
        );
        println!(
            "| failover: sessions kept (both members in, no peer-left) | {} of {} |",
            f.sessions_kept, f.sessions
        );
        println!(
            "| failover: join attempts; failed ones by code; gave up; came back as another member | {}; {}; {}; {} |",
            f.rejoins.attempts,
            f.rejoins.refusals(),
            f.rejoins.gave_up,
            f.rejoins.other_identity
        );
        println!("| failover: peer-left frames received | {} |", f.phase.left);
        for e in &f.rejoins.examples {
            eprintln!("failover: an attempt that reached no server: {e}");
        }
        phase(
            &format!("failover (after the kill, {} s)", args.failover_secs),
            "before the kill",
            &f.phase,
        );
    }
}
