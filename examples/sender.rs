//! Share files with everyone who joins the session, using only the public library API.
//!
//! ```text
//! cargo run --example sender -- ws://127.0.0.1:8787 FILE...
//! ```
//! Prints the session code; run the receiver example with it.

use peershare::{Event, Peer, PeerConfig, Share};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: sender SERVER FILE..."))?;
    let files: Vec<std::path::PathBuf> = args.map(Into::into).collect();

    let (peer, mut events) = Peer::join(PeerConfig::new(server)).await?;
    peer.send_files(&files, Share::Broadcast).await?;
    println!("session code: {}", peer.session());

    let mut completed = 0;
    while let Some(event) = events.recv().await {
        match event {
            Event::UploadCompleted { name, outcomes, .. } => {
                println!("{name}: {outcomes:?}");
                completed += 1;
                if completed == files.len() {
                    break;
                }
            }
            Event::UploadFailed {
                name,
                code,
                message,
                ..
            } => {
                anyhow::bail!("{name}: error {code}: {message}")
            }
            _ => {}
        }
    }
    peer.leave().await;
    Ok(())
}
