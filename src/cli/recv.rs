//! `peershare recv`: join the session of a ticket and download what is offered.

use std::collections::{HashSet, VecDeque};
use std::io::BufRead;

use anyhow::Context;
use peershare::{Error, Event, FileId, JobId, Peer, PeerConfig, Save, Ticket, codes};
use tokio::sync::mpsc;

use super::output::Output;
use crate::RecvArgs;

struct Offer {
    file_id: FileId,
    name: String,
    size: u64,
}

pub async fn run(args: RecvArgs) -> anyhow::Result<()> {
    let ticket: Ticket = args.ticket.parse()?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Error::StorageAccessDenied(format!("{}: {e}", args.out.display())))
        .with_context(|| "preparing the output directory")?;
    let mut out = Output::new(args.peer.json);
    let mut config = PeerConfig::new(ticket.server.clone());
    config.session = Some(ticket.session.clone());
    config.download_dir = args.out.clone();
    args.peer.apply(&mut config);
    let (peer, mut events) = Peer::join(config).await?;
    out.note(&format!(
        "joined session as {}; waiting for files",
        peer.client_id()
    ));

    let mut answers = if args.yes { None } else { Some(stdin_lines()) };
    let mut pending: VecDeque<Offer> = VecDeque::new();
    let mut expected: Option<(uuid::Uuid, u32)> = None;
    let mut seen: HashSet<FileId> = HashSet::new();
    let mut done = 0u32;
    let mut first_error: Option<Error> = None;
    let mut sender: Option<String> = None;
    // Jobs started by this run (a stale partial job may be reported failed with 5100
    // before its file starts over; that is not one of ours).
    let mut mine: HashSet<JobId> = HashSet::new();

    let result = loop {
        let event = tokio::select! {
            ev = events.recv() => ev,
            line = next_line(&mut answers), if !pending.is_empty() => {
                let offer = pending.pop_front();
                if let Some(offer) = offer {
                    let yes = matches!(line.as_deref().map(str::trim), Some("y" | "Y" | "yes"));
                    if yes {
                        match peer.download(offer.file_id, Save::ToDir(args.out.clone())).await {
                            Ok(job) => {
                                mine.insert(job);
                            }
                            Err(e) => {
                                out.note(&format!("{}: error {}: {e}", offer.name, e.code()));
                                first_error.get_or_insert(e);
                                done += 1;
                            }
                        }
                    } else {
                        let _ = peer.decline(offer.file_id).await;
                        out.note(&format!("declined {}", offer.name));
                        done += 1;
                    }
                    if let Some(next) = pending.front() {
                        prompt(next);
                    }
                }
                if finished(expected, done) {
                    break first_error.map_or(Ok(()), Err);
                }
                continue;
            }
            _ = tokio::signal::ctrl_c() => {
                break Err(Error::DownloadFailed("interrupted".into()));
            }
        };
        let Some(event) = event else {
            break Err(Error::NotConnected("the peer shut down".into()));
        };
        out.event(&event);
        match event {
            Event::DownloadAvailable {
                file_id,
                name,
                size,
                group,
                sender: from,
                ..
            } => {
                if !seen.insert(file_id) {
                    continue;
                }
                // The first offer decides which sender and which group we wait for.
                if expected.is_none() {
                    expected = Some(group.map_or((uuid::Uuid::nil(), 1), |g| (g.id, g.count)));
                    sender = Some(from.clone());
                }
                if args.yes {
                    match peer.download(file_id, Save::ToDir(args.out.clone())).await {
                        Ok(job) => {
                            mine.insert(job);
                        }
                        Err(e) => {
                            out.note(&format!("{name}: error {}: {e}", e.code()));
                            first_error.get_or_insert(e);
                            done += 1;
                        }
                    }
                } else {
                    let offer = Offer {
                        file_id,
                        name,
                        size,
                    };
                    if pending.is_empty() {
                        prompt(&offer);
                    }
                    pending.push_back(offer);
                }
            }
            Event::DownloadCompleted { job_id, .. } if mine.contains(&job_id) => done += 1,
            Event::DownloadFailed {
                job_id: Some(job_id),
                code,
                message,
                ..
            } if mine.contains(&job_id) => {
                done += 1;
                first_error.get_or_insert(Error::from_remote(code, message));
            }
            Event::PeerLeft { peer: who } if Some(&who) == sender.as_ref() => {
                out.note("the sender left; waiting for it to come back (its jobs resume)");
            }
            Event::Error { code, message, .. } if code == codes::NOT_CONNECTED => {
                // The signaling server is gone (the sender's embedded server exits
                // with it): nobody can reach us. Partial files stay for a resume.
                break Err(first_error.unwrap_or(Error::NotConnected(message)));
            }
            _ => {}
        }
        if finished(expected, done) {
            break first_error.map_or(Ok(()), Err);
        }
    };
    out.clear();
    peer.leave().await;
    result.map_err(Into::into)
}

fn finished(expected: Option<(uuid::Uuid, u32)>, done: u32) -> bool {
    expected.is_some_and(|(_, count)| done >= count)
}

fn prompt(offer: &Offer) {
    eprint!(
        "Accept {} ({})? [y/N] ",
        offer.name,
        super::human_bytes(offer.size)
    );
}

/// Lines of standard input, read on a blocking thread.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next answer; `None` (= no) once standard input is closed.
async fn next_line(answers: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match answers {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
