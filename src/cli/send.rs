//! `peershare send`: share files and wait until a recipient has them all.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use peershare::signaling::{ServerConfig, SignalingServer};
use peershare::{Error, Event, Outcome, Peer, PeerConfig, Share, Ticket};

use super::output::Output;
use crate::SendArgs;

pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let mut out = Output::new(args.peer.json);
    // The embedded server lives as long as this function.
    let (_server, own_url, ticket_url) = match &args.server {
        Some(url) => (None, url.clone(), url.clone()),
        None => {
            let listen_ip = args.peer.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let server = SignalingServer::bind(ServerConfig {
                listen: SocketAddr::new(listen_ip, 0),
                turn: args.turn.config(listen_ip, 0),
                ..ServerConfig::default()
            })
            .await
            .with_context(|| {
                format!("cannot start the embedded signaling server on {listen_ip}")
            })?;
            let port = server.local_addr().port();
            let (own, public) = if listen_ip.is_unspecified() {
                (IpAddr::V4(Ipv4Addr::LOCALHOST), super::lan_ip())
            } else {
                (listen_ip, listen_ip)
            };
            let own = format!("ws://{}", SocketAddr::new(own, port));
            let public = format!("ws://{}", SocketAddr::new(public, port));
            (Some(server), own, public)
        }
    };

    let mut config = PeerConfig::new(own_url);
    config.session = args.session.clone();
    config.create_session = args.session.is_some();
    args.peer.apply(&mut config);
    let (peer, mut events) = Peer::join(config).await?;
    let share = if args.to.is_empty() {
        Share::Broadcast
    } else {
        Share::To(args.to.clone())
    };
    let jobs = peer.send_files(&args.files, share).await?;
    let jobs: HashSet<_> = jobs.into_iter().collect();

    let ticket = Ticket::new(&ticket_url, peer.session()).to_string();
    if out.is_json() {
        out.json_line(&serde_json::json!({"event": "ticket", "ticket": ticket, "client_id": peer.client_id()}));
    } else {
        println!("peershare recv {ticket}");
        out.note(&format!(
            "sharing {} file(s) as {}; waiting for a recipient (Ctrl-C to stop)",
            jobs.len(),
            peer.client_id()
        ));
    }

    // Per recipient: the jobs it resolved, and whether each was delivered.
    let mut resolved: HashMap<String, HashMap<peershare::JobId, Outcome>> = HashMap::new();
    let result = loop {
        let event = tokio::select! {
            ev = events.recv() => ev,
            _ = tokio::signal::ctrl_c() => {
                if args.keep {
                    break Ok(());
                }
                break Err(Error::UploadFailed("interrupted before a recipient had every file".into()));
            }
        };
        let Some(event) = event else {
            break Err(Error::NotConnected("the peer shut down".into()));
        };
        out.event(&event);
        match &event {
            Event::RecipientOutcome {
                job_id,
                peer: who,
                outcome,
                ..
            } if jobs.contains(job_id) => {
                let mine = resolved.entry(who.clone()).or_default();
                mine.insert(*job_id, outcome.clone());
                if mine.len() == jobs.len() && !args.keep {
                    break verdict(mine.values());
                }
            }
            Event::UploadFailed { code, message, .. } if !args.keep => {
                break Err(Error::from_remote(*code, message.clone()));
            }
            _ => {}
        }
    };
    // Show what was emitted together with the last outcome (its upload-completed).
    while let Some(event) = events.try_recv() {
        out.event(&event);
    }
    out.clear();
    peer.leave().await;
    result.map_err(Into::into)
}

/// Success only when every file was delivered to the recipient.
fn verdict<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> Result<(), Error> {
    for o in outcomes {
        match o {
            Outcome::Delivered => {}
            Outcome::Declined => return Err(Error::Declined),
            Outcome::Failed { code } => {
                return Err(Error::from_remote(
                    *code,
                    "delivery to the recipient failed",
                ));
            }
        }
    }
    Ok(())
}
