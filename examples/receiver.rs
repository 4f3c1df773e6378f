//! Join a session and download every file offered, using only the public library API.
//!
//! ```text
//! cargo run --release --example receiver -- ws://127.0.0.1:8787 CODE [OUT_DIR]
//! ```
//! `OUT_DIR` (default `.`) is created if missing. Ends once every file of the first
//! share offered has arrived, verified.

use peershare::{Event, Peer, PeerConfig, Save};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: receiver SERVER CODE [OUT_DIR]");
    let server = args.next().ok_or_else(usage)?;
    let code = args.next().ok_or_else(usage)?;
    let out: std::path::PathBuf = args.next().unwrap_or_else(|| ".".into()).into();

    let mut config = PeerConfig::new(server);
    config.session = Some(code);
    let (peer, mut events) = Peer::join(config).await?;
    println!("joined; waiting for files");

    let mut expected = None;
    let mut done = 0;
    while let Some(event) = events.recv().await {
        match event {
            Event::DownloadAvailable {
                file_id,
                name,
                size,
                group,
                ..
            } => {
                println!("downloading {} ({size} bytes)", name.escape_debug());
                expected.get_or_insert(group.map_or(1, |g| g.count));
                peer.download(file_id, Save::ToDir(out.clone())).await?;
            }
            Event::DownloadCompleted {
                path: Some(path), ..
            } => {
                println!("saved {} (BLAKE3 verified)", path.display());
                done += 1;
            }
            Event::DownloadFailed {
                name,
                code,
                message,
                ..
            } => {
                anyhow::bail!(
                    "{}: error {code}: {}",
                    name.escape_debug(),
                    message.escape_debug()
                )
            }
            Event::PeerAuthFailed { code, message, .. } => {
                anyhow::bail!(
                    "could not authenticate the sender: error {code}: {}",
                    message.escape_debug()
                )
            }
            _ => {}
        }
        if expected == Some(done) {
            break;
        }
    }
    peer.leave().await;
    Ok(())
}
