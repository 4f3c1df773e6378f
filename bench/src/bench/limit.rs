//! `--rate-limits`: how closely `--limit-rate` holds the asked rate. First the limiter
//! alone (`peershare::transfer::RateLimit` taking 32 KiB chunks in a tight loop, real
//! timers), up to rates far above what loopback transfers reach; then real transfers
//! between two peer processes, each with the cap, next to an uncapped reference run in
//! the same invocation.

use std::path::Path;
use std::time::Instant;

use peershare::transfer::RateLimit;

use super::{MIB, Tune, product};

/// Rates of the limiter-alone rows, MiB/s.
const LIMITER_RATES: [u64; 6] = [1, 10, 100, 1024, 2048, 4096];
/// How long each limiter row runs.
const LIMITER_SECS: f64 = 2.0;
/// Rates of the transfer rows, MiB/s.
const TRANSFER_RATES: [u64; 3] = [4, 16, 64];
/// How long each capped transfer should take at its rate.
const TRANSFER_SECS: u64 = 4;

/// MiB/s of a tight loop of 32 KiB takes at `rate` bytes/s (`None`: no limiter).
async fn limiter_loop(rate: Option<u64>, secs: f64) -> f64 {
    const CHUNK: u64 = 32 * 1024;
    let limit = rate.map(RateLimit::new);
    let start = Instant::now();
    let mut taken = 0u64;
    let budget = rate.map(|r| (r as f64 * secs) as u64);
    loop {
        if let Some(l) = &limit {
            l.take(CHUNK).await;
        } else {
            std::hint::black_box(CHUNK);
        }
        taken += CHUNK;
        let done = match budget {
            Some(b) => taken >= b,
            None => start.elapsed().as_secs_f64() >= secs,
        };
        if done {
            break;
        }
    }
    taken as f64 / MIB as f64 / start.elapsed().as_secs_f64()
}

/// The rows of the `--rate-limits` table.
pub async fn run(server: &str, work: &Path, tune: &Tune) -> anyhow::Result<Vec<String>> {
    let mut rows = Vec::new();
    let ceiling = limiter_loop(None, 0.5).await;
    rows.push(format!(
        "| limiter alone, no cap (the loop's own ceiling) | — | {ceiling:.0} | — |"
    ));
    for rate in LIMITER_RATES {
        super::phase(&format!("limiter alone at {rate} MiB/s"));
        let got = limiter_loop(Some(rate * MIB), LIMITER_SECS).await;
        rows.push(format!(
            "| limiter alone, 32 KiB takes, {LIMITER_SECS} s | {rate} | {got:.1} | {:.3} |",
            got / rate as f64
        ));
    }
    let mut transfer = |label: String, secs: f64, bytes: u64, rate: Option<u64>| {
        let got = bytes as f64 / MIB as f64 / secs;
        let ratio = rate.map_or("—".into(), |r| format!("{:.3}", got / r as f64));
        let asked = rate.map_or("none".into(), |r| r.to_string());
        rows.push(format!("| {label} | {asked} | {got:.1} | {ratio} |"));
    };
    for rate in TRANSFER_RATES.iter().copied().map(Some).chain([None]) {
        let size = rate.unwrap_or(256) * TRANSFER_SECS * MIB;
        super::phase(&format!(
            "transfer of {} MiB, cap {rate:?} MiB/s",
            size / MIB
        ));
        let file = work.join(format!("limit-{}.bin", size / MIB));
        super::write_random_file(&file, size)?;
        let hash = product::hash(file.clone()).await?;
        let mut capped = tune.clone();
        capped.limit_rate = rate.map(|r| r * MIB);
        let r = product::fan_out(server, &file, &hash, 1, work, &capped).await?;
        std::fs::remove_file(&file)?;
        let secs = r.deliveries.first().map_or(r.wall_secs, |d| d.secs);
        let label = format!("transfer, {} MiB, both peers capped", size / MIB);
        transfer(label, secs, size, rate);
    }
    Ok(rows)
}
