//! Join a session and download every file offered, using only the public library API.
//!
//! ```text
//! cargo run --example receiver -- ws://127.0.0.1:8787 SESSION_CODE [OUT_DIR]
//! ```

use peershare::{Event, Peer, PeerConfig, Save};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: receiver SERVER SESSION [OUT_DIR]");
    let server = args.next().ok_or_else(usage)?;
    let session = args.next().ok_or_else(usage)?;
    let out: std::path::PathBuf = args.next().unwrap_or_else(|| ".".into()).into();

    let mut config = PeerConfig::new(server);
    config.session = Some(session);
    let (peer, mut events) = Peer::join(config).await?;

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
                println!("downloading {name} ({size} bytes)");
                expected.get_or_insert(group.map_or(1, |g| g.count));
                peer.download(file_id, Save::ToDir(out.clone())).await?;
            }
            Event::DownloadCompleted { path, .. } => {
                println!("saved {path:?}, BLAKE3 verified");
                done += 1;
            }
            Event::DownloadFailed {
                name,
                code,
                message,
                ..
            } => {
                anyhow::bail!("{name}: error {code}: {message}")
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
