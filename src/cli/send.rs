//! `peershare send`: share files until the recipients have them (the README's
//! completion rules, `super::rules::SendRule`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use peershare::proto::code::Code;
use peershare::signaling::{ServerConfig, SignalingServer};
use peershare::{Event, Peer, PeerConfig, SendOptions, Share, Ticket, codes};

use super::defaults::Defaults;
use super::output::Output;
use super::rules::SendRule;
use super::{Exit, Fatal};
use crate::SendArgs;

pub async fn run(args: SendArgs, out: &mut Output) -> Result<(), Fatal> {
    // A server given or configured; else an embedded one.
    let defaults = if args.server.is_some() || args.embedded {
        Defaults::default()
    } else {
        super::defaults::load()?
    };
    let configured = args.server.clone().or_else(|| defaults.server.clone());
    let by_default = args.server.is_none() && configured.is_some();
    // The embedded server lives as long as this function.
    let (server, own_url, ticket_url) = match configured {
        Some(url) => (None, url.clone(), url),
        None => {
            let listen_ip = args.peer.bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let server = SignalingServer::bind(ServerConfig {
                listen: SocketAddr::new(listen_ip, 0),
                turn: args.turn.config(listen_ip, 0),
                ..ServerConfig::default()
            })
            .await
            .with_context(|| format!("cannot start the embedded signaling server on {listen_ip}"))
            .map_err(|e| Fatal {
                exit: Exit::NoSession,
                ..Fatal::from(e)
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
    config.session = args.code.clone();
    config.create_session = args.code.is_some() && !args.join;
    config.secret_words = usize::from(args.words);
    args.peer.apply(&mut config);
    if config.ca_file.is_none() {
        config.ca_file = defaults.ca.clone();
    }
    let (peer, mut events) = Peer::join(config).await.map_err(|e| {
        let mut fatal = Fatal::from_error(&e);
        if e.code() == peershare::signaling::protocol::codes::SESSION_EXISTS {
            let route = args.code.as_deref().unwrap_or_default();
            let route = route.split_once('-').map_or(route, |(r, _)| r);
            fatal.message = format!(
                "a session {} exists already (someone else may have taken the code): \
                 choose another code, or pass --join to share into that session",
                super::output::shown(route)
            );
        }
        fatal
    })?;
    let share = if args.to.is_empty() {
        Share::Broadcast
    } else {
        Share::To(args.to.clone())
    };
    let options = SendOptions {
        follow_symlinks: args.follow_symlinks,
        ..SendOptions::default()
    };
    let shared = match peer.send_paths(&args.files, share, options).await {
        Ok(shared) => shared,
        Err(e) => {
            // A file that cannot be shared (missing, unreadable, too large) is bad input.
            peer.leave().await;
            return Err(Fatal {
                exit: Exit::Usage,
                ..Fatal::from_error(&e)
            });
        }
    };
    for skipped in &shared.skipped {
        let path = skipped.path.display().to_string();
        if out.is_json() {
            out.json_line(&serde_json::json!({
                "event": "skipped",
                "path": path,
                "reason": skipped.reason.to_string(),
            }));
        } else {
            out.note(&format!(
                "skipped {}: {}",
                super::output::shown(&path),
                skipped.reason
            ));
        }
    }
    let names: HashMap<_, _> = shared
        .files
        .iter()
        .map(|(job, name)| (*job, super::output::shown(name)))
        .collect();
    let audience = (!args.to.is_empty()).then(|| args.to.iter().cloned().collect());
    let mut rule = SendRule::new(names, audience);
    for p in peer.peers().await {
        out.name_peer(&p.id, &p.name);
        rule.joined(&p.id, &p.name);
    }

    let code: Code = peer.session().parse()?;
    let ticket = Ticket::new(Some(&ticket_url), code.clone());
    if out.is_json() {
        out.json_line(&serde_json::json!({
            "event": "ticket",
            "ticket": ticket.to_string(),
            "code": code.to_string(),
            "page": ticket.page_url(),
            "client_id": peer.client_id(),
        }));
    } else {
        if by_default {
            // The recipient most likely has the same default server.
            println!("peershare recv {code}");
            out.note(&format!(
                "(without that default server: peershare recv {ticket})"
            ));
        } else {
            println!("peershare recv {ticket}");
        }
        let dirs = match shared.dirs.len() {
            0 => String::new(),
            1 => " and 1 empty directory".to_string(),
            n => format!(" and {n} empty directories"),
        };
        out.note(&format!(
            "sharing {} file(s){dirs} as {}; waiting for recipients (Ctrl-C to stop)",
            shared.files.len(),
            peer.client_id()
        ));
    }

    // Listening from here on: a signal between two events is not lost.
    let interrupted = super::interrupted();
    tokio::pin!(interrupted);
    let result = loop {
        let event = tokio::select! {
            ev = events.recv() => ev,
            _ = &mut interrupted => {
                if args.keep {
                    break rule.on_stop();
                }
                break Err(Fatal::new(
                    Exit::Interrupted,
                    codes::CANCELLED,
                    "interrupted before every recipient had every file; recipients keep \
                     their partial downloads: share the same files again and they resume",
                ));
            }
        };
        let Some(event) = event else {
            break Err(Fatal::new(
                Exit::TransferFailed,
                codes::NOT_CONNECTED,
                "the peer shut down",
            ));
        };
        out.event(&event);
        match &event {
            Event::PeerJoined { peer: who, name } => rule.joined(who, name),
            Event::PeerLeft { peer: who } => rule.left(who),
            Event::CodeBurnt { failures } => rule.burnt(*failures),
            // `send` receives nothing: another sender in the session is told so at once.
            Event::DownloadAvailable {
                file_id, sender, ..
            } => {
                rule.fellow_sender(sender);
                let _ = peer.decline(*file_id).await;
            }
            Event::RecipientOutcome {
                job_id,
                peer: who,
                outcome,
                ..
            } => rule.outcome(who, *job_id, outcome.clone()),
            _ => {}
        }
        if !args.keep
            && let Some(verdict) = rule.verdict()
        {
            break verdict;
        }
    };
    // Show what was emitted together with the last outcome (its upload-completed).
    while let Some(event) = events.try_recv() {
        out.event(&event);
    }
    out.clear();
    out.summary("sent");
    peer.leave().await;
    // The embedded server delivers what it still holds for the others (a refusal, a
    // peer-left) and tells them it is going, before the process ends.
    if let Some(server) = server {
        server.shutdown().await;
    }
    result
}
