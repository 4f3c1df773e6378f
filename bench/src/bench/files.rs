//! `peershare-bench files`: many small files, disk to disk, on loopback (issue 17 §2).
//!
//! Per set (`--sets`: `4k` = 10,000 files × 4 KiB, `1m` = 1,000 files × 1 MiB, 100
//! files per subdirectory), in the same run and with the same real binaries:
//! - **tree**: `peershare send DIR` → `peershare recv`, the whole tree as one share;
//! - **single file**: one file of the same total size, the same way;
//! - **sendme**: `sendme send DIR` → `sendme receive`, when sendme is installed
//!   (`tools/install_refs.sh`, found as `--refs` finds it).
//!
//! Each program pair runs as `programs.rs` drives it (`--bind 127.0.0.1`, peershare with
//! the embedded signaling server of `send`). Clock: from the start of the receiving
//! program (once the sender has printed its ticket) to its exit 0; "first byte": to
//! recv's first `download-started` event. Every received file is then checked against
//! the source's BLAKE3 (missing, extra or different files fail the run). Rounds are
//! interleaved: each round runs tree, single file and sendme back to back, so that load
//! coming and going on a shared machine hits each alike; medians are reported, and the
//! ratios are medians of the rounds' ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use rand::{RngCore, SeedableRng};

use super::programs::{self, Net, Transfer};
use super::{MIB, list, median, phase, sys, verdict, write_random_file};

const KIB: u64 = 1024;
/// Files per subdirectory of a source tree.
const FILES_PER_DIR: u64 = 100;
/// The targets: the 4 KiB set within this many seconds…
const SMALL_TARGET_SECS: f64 = 2.0;
/// … and the 1 MiB set at this fraction of the single file's rate at least.
const LARGE_TARGET_RATIO: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SetName {
    /// 10,000 files × 4 KiB (smoke: 200 × 4 KiB).
    #[value(name = "4k")]
    Small,
    /// 1,000 files × 1 MiB (smoke: 20 × 64 KiB).
    #[value(name = "1m")]
    Large,
}

#[derive(Debug, Clone, Args)]
pub struct FilesArgs {
    /// Sets to measure, comma-separated: 4k (10,000 files × 4 KiB), 1m (1,000 × 1 MiB).
    #[arg(long, value_delimiter = ',', default_values = ["4k", "1m"])]
    pub sets: Vec<SetName>,
    /// Interleaved rounds (tree, single file, sendme in each); medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=50))]
    pub rounds: u64,
    /// The peershare binary (default: `peershare` next to this binary).
    #[arg(long, value_name = "PATH")]
    pub peershare: Option<PathBuf>,
    /// Where sendme is installed (DIR/bin/sendme), default $PEERSHARE_REFS or
    /// ~/.cache/peershare-refs (tools/install_refs.sh); skipped when not there.
    #[arg(long, value_name = "DIR")]
    pub refs: Option<PathBuf>,
    /// Leave sendme out.
    #[arg(long)]
    pub no_sendme: bool,
    /// Tiny sets (200 × 4 KiB, 20 × 64 KiB), one round, no sendme: checks that
    /// everything runs.
    #[arg(long)]
    pub smoke: bool,
    /// Directory for the test files (default: a fresh directory under $TMPDIR).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds a transfer may take before its recipient is killed and the run counted
    /// as failed.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// One set of files.
#[derive(Debug, Clone, Copy)]
struct Set {
    name: SetName,
    files: u64,
    file_bytes: u64,
    /// The size (not a smoke set): its target applies.
    full: bool,
}

impl Set {
    fn new(name: SetName, smoke: bool) -> Self {
        let (files, file_bytes) = match (name, smoke) {
            (SetName::Small, false) => (10_000, 4 * KIB),
            (SetName::Large, false) => (1_000, MIB),
            (SetName::Small, true) => (200, 4 * KIB),
            (SetName::Large, true) => (20, 64 * KIB),
        };
        Self {
            name,
            files,
            file_bytes,
            full: !smoke,
        }
    }

    fn bytes(&self) -> u64 {
        self.files * self.file_bytes
    }

    fn mib(&self) -> f64 {
        self.bytes() as f64 / MIB as f64
    }

    fn tag(&self) -> &'static str {
        match self.name {
            SetName::Small => "4k",
            SetName::Large => "1m",
        }
    }

    /// `10,000 × 4 KiB`.
    fn label(&self) -> &'static str {
        match (self.name, self.full) {
            (SetName::Small, true) => "10,000 × 4 KiB",
            (SetName::Large, true) => "1,000 × 1 MiB",
            (SetName::Small, false) => "200 × 4 KiB",
            (SetName::Large, false) => "20 × 64 KiB",
        }
    }
}

/// Write `set` below `root` (FILES_PER_DIR files per subdirectory, every file's bytes
/// its own), then flush everything to disk: dirty pages left behind would be written
/// back during the measurement.
fn write_tree(root: &Path, set: &Set) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xf11e5);
    let mut buf = vec![0u8; usize::try_from(set.file_bytes)?];
    for i in 0..set.files {
        let dir = root.join(format!("d{:03}", i / FILES_PER_DIR));
        if i % FILES_PER_DIR == 0 {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Different bytes in every file: sendme stores by content and would send
        // identical files once.
        rng.fill_bytes(&mut buf);
        let file = dir.join(format!("f{i:05}.bin"));
        std::fs::write(&file, &buf).with_context(|| format!("writing {}", file.display()))?;
    }
    sync();
    Ok(())
}

/// Flush every dirty page to disk (sync(2)), so that one run's writes are not written
/// back during the next one.
fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// BLAKE3 of every file below `root`, by path relative to it.
fn hash_tree(root: &Path) -> anyhow::Result<BTreeMap<PathBuf, String>> {
    let mut hashes = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
                continue;
            }
            let hash = peershare::transfer::hash_file(&path)
                .with_context(|| format!("hashing {}", path.display()))?;
            hashes.insert(path.strip_prefix(root)?.to_path_buf(), hash.to_hex());
        }
    }
    Ok(hashes)
}

/// The tree at `got` holds exactly the files of `want`, byte for byte (by BLAKE3).
fn verify_tree(got: &Path, want: &BTreeMap<PathBuf, String>) -> anyhow::Result<()> {
    let have = hash_tree(got)?;
    if have == *want {
        return Ok(());
    }
    let missing: Vec<_> = want.keys().filter(|p| !have.contains_key(*p)).collect();
    let extra: Vec<_> = have.keys().filter(|p| !want.contains_key(*p)).collect();
    let differ: Vec<_> = want
        .iter()
        .filter(|(p, h)| have.get(*p).is_some_and(|g| g != *h))
        .map(|(p, _)| p)
        .collect();
    bail!(
        "the tree received at {} is not the source's: {} of {} files missing (first {:?}), {} extra (first {:?}), {} with other bytes (first {:?})",
        got.display(),
        missing.len(),
        want.len(),
        missing.first(),
        extra.len(),
        extra.first(),
        differ.len(),
        differ.first()
    )
}

/// The file at `got` has BLAKE3 `want`.
fn verify_file(got: &Path, want: &str) -> anyhow::Result<()> {
    let hash = peershare::transfer::hash_file(got)
        .with_context(|| format!("hashing the received {}", got.display()))?;
    anyhow::ensure!(
        hash.to_hex() == want,
        "{} differs from the source",
        got.display()
    );
    Ok(())
}

fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// One round of one set; None where it failed (the failure is listed) or sendme is not
/// measured.
struct Round {
    tree: Option<Transfer>,
    single: Option<Transfer>,
    sendme: Option<Transfer>,
}

/// What the run measured for one set.
struct Measured {
    set: Set,
    rounds: Vec<Round>,
}

impl Measured {
    fn secs(&self, f: impl Fn(&Round) -> Option<&Transfer>) -> Vec<f64> {
        self.rounds.iter().filter_map(f).map(|t| t.secs).collect()
    }

    fn tree_secs(&self) -> Vec<f64> {
        self.secs(|r| r.tree.as_ref())
    }

    fn single_secs(&self) -> Vec<f64> {
        self.secs(|r| r.single.as_ref())
    }

    fn sendme_secs(&self) -> Vec<f64> {
        self.secs(|r| r.sendme.as_ref())
    }

    /// Per round with both: `other`'s seconds over the tree's (the tree's rate over
    /// `other`'s).
    fn tree_rate_over(&self, other: impl Fn(&Round) -> Option<&Transfer>) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|r| Some(other(r)?.secs / r.tree.as_ref()?.secs))
            .collect()
    }

    fn first_byte_ms(&self) -> Vec<f64> {
        self.trees()
            .filter_map(|t| t.first_byte_secs)
            .map(|s| s * 1e3)
            .collect()
    }

    fn trees(&self) -> impl Iterator<Item = &Transfer> {
        self.rounds.iter().filter_map(|r| r.tree.as_ref())
    }

    /// Highest peak RSS of the tree runs: (sender, recipient).
    fn tree_rss(&self) -> (f64, f64) {
        let max = |f: fn(&Transfer) -> f64| self.trees().map(f).fold(f64::NAN, f64::max);
        (max(|t| t.sender_rss_mib), max(|t| t.recipient_rss_mib))
    }

    /// Median CPU seconds of the tree runs: (sender, recipient).
    fn tree_cpu(&self) -> (f64, f64) {
        let med = |f: fn(&Transfer) -> f64| median(self.trees().map(f).collect());
        (med(|t| t.sender_cpu_secs), med(|t| t.recipient_cpu_secs))
    }
}

/// Where the run works and what it runs.
struct Lab {
    peershare: PathBuf,
    sendme: Option<PathBuf>,
    net: Net,
    work: PathBuf,
    /// Longest a transfer may take before its recipient is killed.
    timeout: Duration,
    /// Transfers so far: each writes into a directory of its own.
    runs: std::cell::Cell<u32>,
}

impl Lab {
    /// A fresh directory below `received/` for one transfer. Received copies are
    /// removed only when a set's rounds are over: on ext4 without a journal, creating
    /// files right after thousands were deleted in the same block group scans the
    /// recently freed inodes (`recently_deleted`, up to 6 minutes) and made every later
    /// round of the 10,000-file set three to four times slower, for every program.
    fn fresh(&self, what: &str) -> PathBuf {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        self.work.join("received").join(format!("{what}-{n}"))
    }

    /// One peershare transfer of `src` (file or tree), checked by `check`.
    fn peershare(
        &self,
        src: &Path,
        check: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Transfer> {
        let out = self.fresh("peershare");
        sync();
        let t = programs::peershare(
            &self.peershare,
            &self.net,
            src,
            &out,
            &self.work,
            self.timeout,
        )?;
        check(&out.join(programs::file_name(src)))?;
        Ok(t)
    }

    /// One sendme transfer of the tree `src`, checked against `want`.
    fn sendme(
        &self,
        sendme: &Path,
        src: &Path,
        want: &BTreeMap<PathBuf, String>,
    ) -> anyhow::Result<Transfer> {
        let (send_dir, recv_dir) = (self.fresh("sendme-send"), self.fresh("sendme-recv"));
        sync();
        let t = programs::sendme(sendme, &self.net, src, &send_dir, &recv_dir)?;
        verify_tree(&recv_dir.join(programs::file_name(src)), want)?;
        Ok(t)
    }

    /// Every round of `set`: sources written, measured, removed.
    fn measure(
        &self,
        set: Set,
        rounds: u64,
        failures: &mut Vec<String>,
    ) -> anyhow::Result<Measured> {
        let label = set.label();
        phase(&format!("{label}: writing the tree and the single file"));
        let tree = self.work.join(format!("tree-{}", set.tag()));
        write_tree(&tree, &set)?;
        let want = hash_tree(&tree)?;
        anyhow::ensure!(
            want.len() as u64 == set.files,
            "wrote {} files of {}",
            want.len(),
            set.files
        );
        let single = self.work.join(format!("single-{}.bin", set.tag()));
        write_random_file(&single, set.bytes())?;
        let single_hash = peershare::transfer::hash_file(&single)?.to_hex();

        let mut measured = Measured {
            set,
            rounds: Vec::new(),
        };
        for round in 1..=rounds {
            let at = format!("{label}, round {round}/{rounds}");
            // A failure is listed and the run goes on: one bad round must not hide the
            // others (the run still exits non-zero).
            let mut keep = |what: &str, r: anyhow::Result<Transfer>| match r {
                Ok(t) => {
                    phase(&format!(
                        "{at}: {what} {:.2} s ({:.1} MiB/s)",
                        t.secs,
                        set.mib() / t.secs
                    ));
                    Some(t)
                }
                Err(e) => {
                    eprintln!("[peershare-bench] {at}: {what} FAILED: {e:#}");
                    failures.push(format!("{at}, {what}: {e:#}"));
                    None
                }
            };
            let tree_run = self.peershare(&tree, |got| verify_tree(got, &want));
            let tree_run = keep("peershare tree", tree_run);
            let single_run = self.peershare(&single, |got| verify_file(got, &single_hash));
            let single_run = keep("peershare single file", single_run);
            let sendme_run = match &self.sendme {
                Some(sendme) => keep("sendme tree", self.sendme(sendme, &tree, &want)),
                None => None,
            };
            measured.rounds.push(Round {
                tree: tree_run,
                single: single_run,
                sendme: sendme_run,
            });
        }
        remove_dir(&tree)?;
        remove_dir(&self.work.join("received"))?;
        std::fs::remove_file(&single).with_context(|| format!("removing {}", single.display()))?;
        Ok(measured)
    }
}

/// The median of `v` with `decimals` decimals and `unit`, or `–` when empty.
fn cell(v: &[f64], decimals: usize, unit: &str) -> String {
    if v.is_empty() {
        "–".into()
    } else {
        format!("{:.decimals$}{unit}", median(v.to_vec()))
    }
}

/// `x` with `decimals` decimals, or `–` when it is not a number (nothing measured).
fn num(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.decimals$}")
    }
}

/// The markdown report.
fn report(
    args: &FilesArgs,
    lab: &Lab,
    sendme_note: &str,
    results: &[Measured],
    facts: &[String],
) -> String {
    let mut out = String::new();
    let command: Vec<String> = std::env::args().collect();
    let _ = writeln!(
        out,
        "\n## Many small files (peershare-bench files), {}\n",
        sys::utc_now()
    );
    let _ = writeln!(out, "- command: `{}`", command.join(" "));
    let _ = writeln!(
        out,
        "- peershare: {} ({})",
        lab.peershare.display(),
        programs::version(&lab.peershare)
    );
    let _ = writeln!(out, "- sendme: {sendme_note}");
    let _ = writeln!(
        out,
        "- {}, both CLIs `--bind 127.0.0.1`; peershare `send --embedded --direct-only --json DIR` → `recv --direct-only --yes --json --out DIR`; disk to disk ({}); {} per subdirectory",
        lab.net.label,
        lab.work.display(),
        FILES_PER_DIR
    );
    let _ = writeln!(
        out,
        "- clock: the receiving program's start (the sender has printed its ticket) → its exit 0; first byte: → recv's first `download-started`; every received file BLAKE3-checked against the source afterwards (missing, extra or different files fail the run)"
    );
    let _ = writeln!(
        out,
        "- {} interleaved round(s) (tree, single file, sendme's tree, back to back); seconds: medians; set / single: median of the rounds' tree rate ÷ single-file rate; peershare / sendme: median of the rounds' peershare tree rate ÷ sendme tree rate (> 1: peershare faster)",
        args.rounds_run()
    );
    for f in facts {
        let _ = writeln!(out, "- {f}");
    }
    let _ = writeln!(
        out,
        "\n| set | files | MiB | peershare s | MiB/s | files/s | first byte ms | single file s | single MiB/s | set / single | sendme s | peershare / sendme |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for m in results {
        let (tree, single) = (median(m.tree_secs()), median(m.single_secs()));
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            m.set.label(),
            m.set.files,
            m.set.mib(),
            num(tree, 2),
            num(m.set.mib() / tree, 1),
            num(m.set.files as f64 / tree, 0),
            cell(&m.first_byte_ms(), 0, ""),
            num(single, 2),
            num(m.set.mib() / single, 1),
            cell(&m.tree_rate_over(|r| r.single.as_ref()), 2, "×"),
            cell(&m.sendme_secs(), 2, ""),
            cell(&m.tree_rate_over(|r| r.sendme.as_ref()), 2, "×"),
        );
    }
    let _ = writeln!(out, "\nEvery run (seconds, in round order):\n");
    for m in results {
        let (sender, recipient) = m.tree_rss();
        let (sender_cpu, recipient_cpu) = m.tree_cpu();
        let runs = |v: Vec<f64>, decimals: usize| {
            if v.is_empty() {
                "–".to_string()
            } else {
                list(&v, decimals)
            }
        };
        let _ = writeln!(
            out,
            "- {}: peershare tree {} (completed runs); single file {}; sendme {}; first byte {} ms; tree runs: CPU (user + system, median) sender {} s, recipient {} s; peak RSS sender {} MiB, recipient {} MiB",
            m.set.label(),
            runs(m.tree_secs(), 2),
            runs(m.single_secs(), 2),
            runs(m.sendme_secs(), 2),
            runs(m.first_byte_ms(), 0),
            num(sender_cpu, 2),
            num(recipient_cpu, 2),
            num(sender, 1),
            num(recipient, 1),
        );
    }
    let _ = writeln!(out, "\nTargets (issue 17 §2, loopback):\n");
    let mut target = |name: SetName, goal: String, judge: &dyn Fn(&Measured) -> String| {
        let result = results
            .iter()
            .find(|m| m.set.name == name && m.set.full)
            .map_or_else(|| "n/a (not measured in this run)".to_string(), judge);
        let _ = writeln!(out, "- {goal}: {result}");
    };
    target(
        SetName::Small,
        format!("10,000 × 4 KiB in ≤ {SMALL_TARGET_SECS} s"),
        &|m| {
            let secs = median(m.tree_secs());
            format!("{secs:.2} s: {}", verdict(secs <= SMALL_TARGET_SECS))
        },
    );
    target(
        SetName::Large,
        format!("1,000 × 1 MiB at ≥ {LARGE_TARGET_RATIO}× the single-file rate"),
        &|m| {
            let ratio = median(m.tree_rate_over(|r| r.single.as_ref()));
            format!("{ratio:.2}×: {}", verdict(ratio >= LARGE_TARGET_RATIO))
        },
    );
    out
}

impl FilesArgs {
    fn rounds_run(&self) -> u64 {
        if self.smoke { 1 } else { self.rounds }
    }
}

pub fn run(args: FilesArgs) -> anyhow::Result<()> {
    let peershare = programs::peershare_binary(args.peershare.as_deref())?;
    let refs = args.refs.clone().unwrap_or_else(super::refs::default_dir);
    let sendme_path = refs.join("bin/sendme");
    let (sendme, sendme_note) = if args.smoke || args.no_sendme {
        (None, "skipped (--smoke or --no-sendme)".to_string())
    } else if sendme_path.is_file() {
        let note = format!(
            "{} ({})",
            sendme_path.display(),
            programs::version(&sendme_path)
        );
        (Some(sendme_path), note)
    } else {
        (
            None,
            format!(
                "skipped: {} not found (tools/install_refs.sh {})",
                sendme_path.display(),
                refs.display()
            ),
        )
    };
    let work = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let lab = Lab {
        peershare,
        sendme,
        net: Net::loopback(),
        work: work.path().to_path_buf(),
        timeout: Duration::from_secs(args.timeout),
        runs: std::cell::Cell::new(0),
    };
    let machine = sys::Machine::probe(peershare::rtc::RtcSettings::default().socket_buffer_bytes);
    let load_before = sys::load_average();
    let mut sets: Vec<SetName> = Vec::new();
    for s in &args.sets {
        if !sets.contains(s) {
            sets.push(*s);
        }
    }
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for name in sets {
        let set = Set::new(name, args.smoke);
        results.push(lab.measure(set, args.rounds_run(), &mut failures)?);
    }
    let mut facts = vec![format!(
        "1-min load average: {load_before} at the start, {} at the end (other work skews the figures)",
        sys::load_average()
    )];
    facts.extend(machine.describe());
    let mut out = report(&args, &lab, &sendme_note, &results, &facts);
    for f in &failures {
        let _ = writeln!(out, "- FAILED: {f}");
    }
    print!("{out}");
    std::io::stdout().flush()?;
    drop(work);
    if !failures.is_empty() {
        bail!("{} transfer(s) failed (listed above)", failures.len());
    }
    Ok(())
}
