//! `peershare-bench browser`: throughput between the `peershare` binary and the browser
//! page in headless Chromium, both ways, in one interleaved run on 127.0.0.1
//! (docs/PERFORMANCE.md "Browser peers").
//!
//! - Rust → Chromium: `peershare send --embedded --json --bind 127.0.0.1 FILE`; the page
//!   opens the ticket's page URL and accepts. Clocked in the page, from its
//!   `download-started` to its `download-completed` (every byte received, BLAKE3
//!   verified, on disk).
//! - Chromium → Rust: `peershare signal`; the page starts a session and shares the file
//!   (hashed before it is offered); `peershare recv --json --yes` joins. Clocked from the
//!   `download-started` line of `recv` to its `download-completed` line (verified,
//!   durable, final name).
//!
//! Each saved copy is compared with the source's BLAKE3. UDP receive-buffer drops of the
//! whole machine (`/proc/net/snmp`, `Udp: RcvbufErrors`) are counted per transfer: the
//! Chromium side reads its data through a socket buffer that the page cannot size.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use peershare_chromium::{Chrome, Page};

use super::programs::{self, Proc};
use super::sys;

#[derive(Debug, clap::Args)]
pub struct BrowserArgs {
    /// File size in MiB.
    #[arg(long, default_value_t = 256)]
    pub size: u64,
    /// Rounds; each runs one transfer each way.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// The peershare binary (default: next to this one).
    #[arg(long)]
    pub peershare: Option<PathBuf>,
}

const TIMEOUT: Duration = Duration::from_secs(600);

/// One transfer's figures.
struct Run {
    secs: f64,
    udp_drops: u64,
}

/// The machine's UDP receive-buffer drops so far ([`sys::udp_rcvbuf_errors`]), 0 where
/// the kernel does not say.
fn udp_rcvbuf_errors() -> u64 {
    sys::udp_rcvbuf_errors().unwrap_or(0)
}

fn hash_file(path: &Path) -> anyhow::Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    std::io::copy(&mut f, &mut h).with_context(|| format!("hashing {}", path.display()))?;
    Ok(h.finalize())
}

fn event_at(events: &[serde_json::Value], name: &str) -> anyhow::Result<f64> {
    events
        .iter()
        .find(|e| e["event"] == name)
        .and_then(|e| e["at"].as_f64())
        .with_context(|| format!("no {name} in the page's events: {events:?}"))
}

async fn rust_to_chromium(
    chrome: &Chrome,
    peershare: &Path,
    src: &Path,
    want: blake3::Hash,
    work: &Path,
) -> anyhow::Result<Run> {
    let mut send = std::process::Command::new(peershare);
    send.args(["send", "--embedded", "--json", "--bind", "127.0.0.1"])
        .arg(src)
        .env_remove("PEERSHARE_SERVER");
    let sender = Proc::spawn(send, work)?;
    let url = sender.wait_line("the page URL", |l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["event"] == "ticket").then(|| v["page"].as_str().map(str::to_string))?
    })?;
    let downloads = tempfile::tempdir_in(work)?;
    let page = chrome.page(downloads.path()).await;
    let drops = udp_rcvbuf_errors();
    page.goto(&url).await;
    page.wait(
        "the offer",
        "return document.querySelector('#downloads li[data-state=available] button.accept');",
    )
    .await;
    page.click("#downloads li[data-state=available] button.accept")
        .await;
    page.wait(
        "the verified file",
        "return document.querySelector('#downloads li[data-state=completed] a.save');",
    )
    .await;
    let udp_drops = udp_rcvbuf_errors() - drops;
    let events = page.events().await;
    let secs = (event_at(&events, "download-completed")? - event_at(&events, "download-started")?)
        / 1000.0;
    page.click("#downloads li[data-state=completed] a.save")
        .await;
    let name = programs::file_name(src);
    page.downloaded(&name).await;
    ensure!(
        hash_file(&downloads.path().join(name))? == want,
        "the page's saved copy differs"
    );
    page.close().await;
    sender.reap(Duration::from_secs(30));
    Ok(Run { secs, udp_drops })
}

async fn chromium_to_rust(
    chrome: &Chrome,
    peershare: &Path,
    src: &Path,
    want: blake3::Hash,
    work: &Path,
) -> anyhow::Result<Run> {
    let mut signal = std::process::Command::new(peershare);
    signal.args(["signal", "--listen", "127.0.0.1:0"]);
    let server = Proc::spawn(signal, work)?;
    let ws = server.wait_line("the server URL", |l| {
        l.starts_with("ws://").then(|| l.trim().to_string())
    })?;
    let host = ws
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_string();
    let downloads = tempfile::tempdir_in(work)?;
    let page: Page = chrome.page(downloads.path()).await;
    let code = page.create_session(&format!("http://{host}/")).await;
    page.choose_files(&[src]).await;
    page.wait(
        "upload-started",
        "return window.peershare.events.some(e => e.event === 'upload-started');",
    )
    .await;
    let out = tempfile::tempdir_in(work)?;
    let mut recv = std::process::Command::new(peershare);
    recv.args(["recv", "--json", "--yes", "--bind", "127.0.0.1", "--out"])
        .arg(out.path())
        .arg(format!("{code}@{host}"))
        .env_remove("PEERSHARE_SERVER");
    let drops = udp_rcvbuf_errors();
    let recipient = Proc::spawn(recv, work)?;
    let exit = recipient.reap(TIMEOUT);
    let udp_drops = udp_rcvbuf_errors() - drops;
    let lines = recipient.rest(Duration::from_secs(5));
    ensure!(exit.ok, "peershare recv failed");
    let at = |name: &str| -> anyhow::Result<Instant> {
        lines
            .iter()
            .find(|(_, l)| {
                serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["event"] == name)
            })
            .map(|(at, _)| *at)
            .with_context(|| format!("no {name} from recv"))
    };
    let secs = at("download-completed")?
        .duration_since(at("download-started")?)
        .as_secs_f64();
    ensure!(
        hash_file(&out.path().join(programs::file_name(src)))? == want,
        "recv's copy differs"
    );
    page.close().await;
    server.signal(libc::SIGTERM);
    server.reap(Duration::from_secs(10));
    Ok(Run { secs, udp_drops })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(args: BrowserArgs) -> anyhow::Result<()> {
    if args.rounds == 0 || args.size == 0 {
        bail!("--rounds and --size must be at least 1");
    }
    let peershare = programs::peershare_binary(args.peershare.as_deref())?;
    let work = tempfile::tempdir()?;
    let src = work.path().join("browser-bench.bin");
    {
        use rand::RngCore;
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        let mut rng = rand::rng();
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..args.size {
            rng.fill_bytes(&mut block);
            f.write_all(&block)?;
        }
        f.flush()?;
    }
    let want = hash_file(&src)?;
    let chrome = Chrome::start().await;
    let mib = args.size as f64;
    println!(
        "peershare-bench browser: {} MiB, {} round(s), {} / {}",
        args.size,
        args.rounds,
        programs::version(&peershare),
        programs::version(Path::new(peershare_chromium::CHROMIUM))
    );
    println!("round  Rust→Chromium MiB/s (UDP drops)  Chromium→Rust MiB/s (UDP drops)");
    let (mut r2c, mut c2r) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let a = rust_to_chromium(&chrome, &peershare, &src, want, work.path()).await?;
        let b = chromium_to_rust(&chrome, &peershare, &src, want, work.path()).await?;
        println!(
            "{round:>5}  {:>14.1} ({:>6})             {:>14.1} ({:>6})",
            mib / a.secs,
            a.udp_drops,
            mib / b.secs,
            b.udp_drops
        );
        r2c.push(mib / a.secs);
        c2r.push(mib / b.secs);
    }
    let (r, c) = (median(r2c), median(c2r));
    println!(
        "median Rust→Chromium {r:.1} MiB/s, Chromium→Rust {c:.1} MiB/s: ratio {:.2}",
        r / c
    );
    Ok(())
}
