//! Share files with everyone who joins the session, using only the public library API.
//!
//! ```text
//! cargo run --release -- signal --listen 127.0.0.1:8787         # a signaling server
//! cargo run --release --example sender -- ws://127.0.0.1:8787 FILE...
//! ```
//! Prints the code; run the receiver example with it. Ends once every file has reached
//! every recipient that joined (or was declined or failed there).

use peershare::{Event, Peer, PeerConfig, Share};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: sender SERVER FILE..."))?;
    let files: Vec<std::path::PathBuf> = args.map(Into::into).collect();
    anyhow::ensure!(!files.is_empty(), "usage: sender SERVER FILE...");

    let (peer, mut events) = Peer::join(PeerConfig::new(server.clone())).await?;
    peer.send_files(&files, Share::Broadcast).await?;
    println!("code: {}", peer.session());
    println!(
        "on the other side: cargo run --release --example receiver -- {server} {} out",
        peer.session()
    );

    let mut completed = 0;
    while let Some(event) = events.recv().await {
        match event {
            Event::PeerJoined { name, .. } => println!("{} joined", name.escape_debug()),
            Event::PeerAuthFailed { name, code, .. } => {
                println!(
                    "{} could not authenticate (error {code}): a wrong code?",
                    name.escape_debug()
                )
            }
            Event::UploadCompleted { name, outcomes, .. } => {
                for (recipient, outcome) in &outcomes {
                    println!("{}: {outcome} to {recipient}", name.escape_debug());
                }
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
                anyhow::bail!(
                    "{}: error {code}: {}",
                    name.escape_debug(),
                    message.escape_debug()
                )
            }
            _ => {}
        }
    }
    peer.leave().await;
    Ok(())
}
