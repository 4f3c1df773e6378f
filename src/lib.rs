//! # peershare
//!
//! Peer-to-peer file transfer over WebRTC data channels. A [`Peer`] joins a session on a
//! signaling server, connects directly to every other member, and shares files with
//! everyone or with chosen client IDs. Files move in 32 KiB chunks over one reliable data
//! channel per job (small files many to a channel, in batches), paced by the data
//! channel's send buffer, and are verified with BLAKE3 before they appear under their
//! final name.
//!
//! ```
//! use peershare::{Event, Peer, PeerConfig, Save, Share};
//! # use peershare::signaling::{ServerConfig, SignalingServer};
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = SignalingServer::bind(ServerConfig {
//! #     listen: "127.0.0.1:0".parse()?,
//! #     ..ServerConfig::default()
//! # })
//! # .await?;
//! # let dir = tempfile::tempdir()?;
//! # let report = dir.path().join("report.pdf");
//! # std::fs::write(&report, b"%PDF-1.7")?;
//! # let downloads = dir.path().join("downloads");
//! let mut config = PeerConfig::new(server.url()); // e.g. "ws://127.0.0.1:8787"
//! # config.rtc.bind = Some([127, 0, 0, 1].into());
//! let (sender, _events) = Peer::join(config.clone()).await?;
//! sender.send_files(&[report], Share::Broadcast).await?;
//!
//! config.session = Some(sender.session().to_string()); // the code, 7-orbit-canvas-tiger
//! let (recipient, mut events) = Peer::join(config).await?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::DownloadAvailable { file_id, .. } => {
//!             recipient.download(file_id, Save::ToDir(downloads.clone())).await?;
//!         }
//!         Event::DownloadCompleted { .. } => break,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! From the wire inwards:
//! - [`proto`]: the sans-IO core: control messages and their codec, IDs, name
//!   sanitizing, the upload/download job state machines, the frames of a batch channel
//!   and their reading (`proto::batch`), the tally of a share's files until the share
//!   ends (`proto::group`), codes (`ROUTE-SECRET`), peer
//!   authentication (SPAKE2 and the sealing of signaling data), and the policy for getting
//!   back to signaling after a lost connection: which failures try another server, the
//!   jittered backoff over the server list, presence reconciliation (`proto::rejoin`). No
//!   I/O, clocks or tokio.
//! - [`rtc`]: the WebRTC adapter: tuned peer connections (socket buffers, SCTP window,
//!   message size, SCTP packet size or its probe, bind address), the runtime wrapper that works around the stack's
//!   driver stalls and batches TURN-relayed writes into GSO sends (`rtc::runtime`), the
//!   simulated network (`rtc::netsim`; its sans-IO link model `rtc::netsim::link` is the
//!   workspace crate `peershare-linkmodel`, re-exported, which the WAN emulator
//!   `peershare-wanem` applies too) and the data-channel implementation of `Channel`.
//! - [`transport`]: the `Channel` seam (a reliable ordered message channel with a send
//!   buffer) and an in-memory implementation for tests.
//! - [`transfer`]: the engine that streams a file into a channel and a channel into a
//!   verified file, with read-ahead and write-behind threads; inside it, the partial
//!   file's writer (direct I/O where the filesystem allows), the checkpoint thread
//!   that makes a partial file durable while it is written, and the block hashes that
//!   vouch for the bytes past the last checkpoint when a restarted download resumes (the
//!   arithmetic in `proto::resume`); the publishing of a verified file into its place in
//!   a tree; `transfer::batch`, which streams many small files on one channel and
//!   writes, verifies, syncs together and publishes them on the other side; and
//!   `transfer::walk`, which turns the paths given to `send_paths` into files, empty
//!   directories and what is skipped.
//! - [`store`]: durable download job records next to the partial files, and what a
//!   download directory holds of them (partial downloads, orphans, stray temporary
//!   records).
//! - `signal_client`: the WebSocket client of the signaling server (`ws://`, and `wss://`
//!   over rustls): the first join through a list of servers, and the rejoin after a lost
//!   connection on `proto::rejoin`'s schedule.
//! - `session`: the task that owns all session state: links (authentication,
//!   connections and reconnection), uploads, downloads (at most 64 requested per
//!   sender, the rest queued) and their resume, batches of small files on both sides
//!   (`session::batches`), the empty directories of shared trees (`session::tree`), its
//!   signaling connection (`session::signaling`: a lost connection, the task that
//!   rejoins and hands the new one back, presence reconciled with the new `welcome`); and
//!   `session::connection`, one task per remote peer owning its `RTCPeerConnection`.
//! - [`peer`]: the public [`Peer`] handle that talks to the session task.
//! - [`ticket`]: tickets, a code and where its signaling servers are.
//! - [`events`], [`error`], [`config`], [`clock`]: the public event, error, configuration
//!   and clock types.
//! - `fuzz_harness` (feature `fuzz-harness`, never on in the product): the entry points of
//!   the stateful fuzz target in `fuzz/`, over the property harness of the session's job
//!   handling (`session::job_props`).

pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod peer;
pub mod proto;
pub mod rtc;
mod session;
pub mod signal_client;
pub mod store;
pub mod ticket;
pub mod transfer;
pub mod transport;

/// Entry points of the stateful fuzz target (`fuzz/fuzz_targets/session_jobs.rs`): the
/// session's job handling driven by the properties of `session::job_props`, with the
/// random choices taken from the fuzzer's bytes.
#[cfg(feature = "fuzz-harness")]
#[doc(hidden)]
pub mod fuzz_harness {
    pub use crate::session::job_props::{fuzz_download, fuzz_upload};
}

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Let glibc malloc use one arena in this process (unless `MALLOC_ARENA_MAX` or
/// `GLIBC_TUNABLES` says otherwise). Call it first thing in `main`, before any thread
/// starts. By default glibc gives each thread that contends for the allocator an arena
/// of its own, up to 8 per core; a peer's tokio workers, file readers and writer each
/// fragment one. Measured on a 4 GiB transfer, two arenas instead of the default took
/// about 3 MiB off a sending peer's peak RSS, and one arena instead of two another
/// 2–3 MiB off each side, at the same speed (docs/PERFORMANCE.md, "Memory"). No effect
/// on other allocators or libcs.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && std::env::var_os("GLIBC_TUNABLES").is_none()
    {
        // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any
        // positive count.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

pub use config::PeerConfig;
pub use error::{Error, Result, codes};
pub use events::{Event, FileInfo};
pub use peer::{Events, Peer, Role, Save, SendOptions, Share, SharedPaths};
pub use peershare_signaling as signaling;
#[doc(inline)]
pub use peershare_signaling::protocol::{IceServer, PeerInfo};
pub use proto::ids::{FileId, JobId};
pub use proto::upload::Outcome;
pub use ticket::Ticket;
pub use transfer::walk::{SkipReason, Skipped};
