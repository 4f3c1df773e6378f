//! `peershare recv`: join the session of a ticket and download what is offered, until
//! every offered group is resolved (the README's completion rules,
//! `super::rules::RecvRule`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use peershare::proto::control::OfferGroup;
use peershare::{Error, Event, FileId, JobId, Peer, PeerConfig, Save, Ticket, codes};
use tokio::sync::mpsc;

use super::output::{Output, shown};
use super::rules::RecvRule;
use super::{Exit, Fatal};
use crate::RecvArgs;

/// After offers without a group, how long `recv` waits for more before it is done.
const UNGROUPED_SETTLE: Duration = Duration::from_secs(1);
/// After a failed authentication, how long `recv` waits at most for the clients still
/// authenticating (one may never finish) before it gives up.
const AUTH_WAIT: Duration = Duration::from_secs(10);

struct Offer {
    file_id: FileId,
    /// Its place in a shared tree if it has one, else its name (as offered).
    name: String,
    size: u64,
    sender: String,
    group: Option<OfferGroup>,
}

impl Offer {
    /// The group it is asked about with, if it has company (one question per share).
    fn asked_group(&self) -> Option<(String, uuid::Uuid)> {
        self.group
            .as_ref()
            .filter(|g| g.count > 1)
            .map(|g| (self.sender.clone(), g.id))
    }
}

/// Answers per group: one question covers every file of a share.
#[derive(Default)]
struct GroupAnswers {
    answered: HashMap<(String, uuid::Uuid), bool>,
    /// Files of a group whose question waits for an answer.
    held: HashMap<(String, uuid::Uuid), Vec<Offer>>,
}

pub async fn run(args: RecvArgs, out: &mut Output) -> Result<(), Fatal> {
    let ticket: Ticket = args.ticket.parse()?;
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(Fatal::new(
            Exit::Usage,
            codes::INVALID_ARGUMENT,
            "standard input is not a terminal, so nobody can answer the questions: pass \
             --yes to accept every file",
        ));
    }
    let defaults = super::defaults::load()?;
    let server = match (&ticket.server, &defaults.server) {
        (Some(server), _) | (None, Some(server)) => server.clone(),
        (None, None) => {
            return Err(Fatal::new(
                Exit::Usage,
                codes::INVALID_ARGUMENT,
                "the ticket names no server and no default server is configured: give \
                 CODE@HOST:PORT, or set PEERSHARE_SERVER (or `server` in the config file)",
            ));
        }
    };
    let mut config = PeerConfig::new(server);
    config.session = Some(ticket.code.to_string());
    config.download_dir = args.out.clone();
    args.peer.apply(&mut config);
    if config.ca_file.is_none() {
        config.ca_file = defaults.ca.clone();
    }
    let (peer, mut events) = Peer::join(config).await?;
    // The directory is made only once there is a session to receive from.
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        peer.leave().await;
        return Err(Error::StorageAccessDenied(format!("{}: {e}", args.out.display())).into());
    }
    for p in peer.peers().await {
        out.name_peer(&p.id, &p.name);
    }
    out.note(&format!(
        "joined session as {}; waiting for files",
        peer.client_id()
    ));

    let mut answers = if args.yes { None } else { Some(stdin_lines()) };
    let mut pending: VecDeque<Offer> = VecDeque::new();
    let mut groups = GroupAnswers::default();
    let mut rule = RecvRule::default();
    // Jobs started by this run (a stale partial job may be reported failed with 5100
    // before its file starts over; that is not one of ours).
    let mut mine: HashSet<JobId> = HashSet::new();
    let mut connected: HashSet<String> = HashSet::new();
    let mut signaling_lost = false;
    // Set while waiting for more offers without a group after all others are resolved.
    let mut settle: Option<tokio::time::Instant> = None;
    // A client failed to authenticate while nobody has: unless another one authenticates
    // (within `AUTH_WAIT`, or before none is left authenticating), `recv` ends with that
    // failure (a wrong code).
    let mut auth_failure: Option<(tokio::time::Instant, Fatal)> = None;
    let mut members: HashSet<String> = HashSet::new();

    // Listening from here on: a signal between two events is not lost.
    let interrupted = super::interrupted();
    tokio::pin!(interrupted);
    let result = loop {
        let event = tokio::select! {
            ev = events.recv() => ev,
            line = next_line(&mut answers), if !pending.is_empty() => {
                if let Some(offer) = pending.pop_front() {
                    let yes = is_yes(line.as_deref());
                    let mut offers = vec![offer];
                    if let Some(key) = offers[0].asked_group() {
                        groups.answered.insert(key.clone(), yes);
                        offers.extend(groups.held.remove(&key).unwrap_or_default());
                        if !yes {
                            out.note(&format!("declined {}", group_title(&offers[0])));
                        }
                    }
                    for offer in offers {
                        answer(yes, &peer, &offer, &args, &mut mine, &mut rule, out).await;
                    }
                    if let Some(next) = pending.front() {
                        prompt(next, out);
                    }
                }
                None
            }
            _ = sleep_until(settle) => break rule.result(),
            _ = sleep_until(auth_failure.as_ref().map(|(at, _)| *at)) => {
                if let Some((_, fatal)) = auth_failure.take() {
                    break Err(fatal);
                }
                None
            }
            _ = &mut interrupted => {
                break Err(Fatal::new(
                    Exit::Interrupted,
                    codes::CANCELLED,
                    format!(
                        "interrupted; partial downloads are kept in {}: run the same \
                         command again to resume them",
                        args.out.display()
                    ),
                ));
            }
        };
        if let Some(event) = event {
            out.event(&event);
            match event {
                Event::PeerJoined { peer: who, .. } => {
                    members.insert(who);
                    auth_failure = None;
                }
                Event::PeerLeft { peer: who } => {
                    members.remove(&who);
                }
                Event::PeerAuthFailed {
                    code,
                    message,
                    authenticating,
                    ..
                } if members.is_empty() && !rule.has_offers() => {
                    let message = if code == codes::CODE_BURNT {
                        format!("{message}; ask the sender for a new code")
                    } else {
                        "the sender could not be authenticated: check the code (a wrong \
                         code, or someone interfering with the connection)"
                            .to_string()
                    };
                    // Another client may still prove itself; once none is left, at once.
                    let now = tokio::time::Instant::now();
                    let at = match (authenticating, &auth_failure) {
                        (0, _) => now,
                        (_, Some((at, _))) => *at,
                        (_, None) => now + AUTH_WAIT,
                    };
                    auth_failure = Some((at, Fatal::new(Exit::AuthFailed, code, message)));
                }
                Event::Connection { peer: who, .. } => {
                    connected.insert(who);
                }
                Event::ConnectionLost { peer: who, .. } => {
                    connected.remove(&who);
                }
                Event::DownloadAvailable {
                    file_id,
                    name,
                    size,
                    group,
                    sender,
                    path,
                    ..
                } => {
                    if !rule.offered(file_id, &sender, group.clone()) {
                        continue;
                    }
                    settle = None;
                    let offer = Offer {
                        file_id,
                        name: path.unwrap_or(name),
                        size,
                        sender,
                        group,
                    };
                    let key = offer.asked_group();
                    let known = key.as_ref().and_then(|k| groups.answered.get(k).copied());
                    if args.yes || known.is_some() {
                        let yes = args.yes || known == Some(true);
                        answer(yes, &peer, &offer, &args, &mut mine, &mut rule, out).await;
                    } else if let Some(held) = key.as_ref().and_then(|k| groups.held.get_mut(k)) {
                        // Its group's question is asked already.
                        held.push(offer);
                    } else {
                        if let Some(k) = key {
                            groups.held.insert(k, Vec::new());
                        }
                        if pending.is_empty() {
                            prompt(&offer, out);
                        }
                        pending.push_back(offer);
                    }
                }
                Event::DownloadCompleted {
                    job_id, file_id, ..
                } if mine.contains(&job_id) => rule.resolved(file_id, None),
                Event::DownloadFailed {
                    job_id: Some(job_id),
                    file_id,
                    name,
                    code,
                    ..
                } if mine.contains(&job_id) => {
                    // The details were shown with the event; the closing line names it.
                    rule.resolved(file_id, Some(not_received(code, &name)));
                }
                Event::Error { code, .. } if code == codes::NOT_CONNECTED => {
                    signaling_lost = true;
                }
                _ => {}
            }
        }
        if rule.finished() {
            // Nothing more can come without the signaling server.
            if !rule.saw_ungrouped() || signaling_lost {
                break rule.result();
            }
            settle.get_or_insert_with(|| tokio::time::Instant::now() + UNGROUPED_SETTLE);
        }
        // Without the signaling server nothing can be rebuilt: once no connection is left
        // either, no offer or resume can come.
        if signaling_lost && connected.is_empty() {
            // A failed authentication is why nothing came (the sender may have ended the
            // share because of it).
            if let Some((_, fatal)) = auth_failure.take() {
                break Err(fatal);
            }
            let exit = if rule.has_offers() {
                Exit::TransferFailed
            } else {
                Exit::NoSession
            };
            break Err(Fatal::new(
                exit,
                codes::NOT_CONNECTED,
                format!(
                    "the session ended before every file arrived (lost the signaling server \
                     and every peer); partial downloads are kept in {}: run the command \
                     again with a new ticket of the same files to resume them",
                    args.out.display()
                ),
            ));
        }
    };
    out.clear();
    out.summary("received");
    peer.leave().await;
    result
}

/// Accept or decline `offer`.
async fn answer(
    yes: bool,
    peer: &Peer,
    offer: &Offer,
    args: &RecvArgs,
    mine: &mut HashSet<JobId>,
    rule: &mut RecvRule,
    out: &Output,
) {
    if yes {
        accept(peer, offer, args, mine, rule, out).await;
    } else {
        let _ = peer.decline(offer.file_id).await;
        if offer.asked_group().is_none() {
            out.note(&format!("declined {}", shown(&offer.name)));
        }
        rule.resolved(offer.file_id, None);
    }
}

/// Start downloading `offer`; a failure to start resolves it as failed.
async fn accept(
    peer: &Peer,
    offer: &Offer,
    args: &RecvArgs,
    mine: &mut HashSet<JobId>,
    rule: &mut RecvRule,
    out: &Output,
) {
    match peer
        .download(offer.file_id, Save::ToDir(args.out.clone()))
        .await
    {
        Ok(job) => {
            mine.insert(job);
        }
        Err(e) => {
            out.note(&format!(
                "{}: error {}: {}",
                shown(&offer.name),
                e.code(),
                shown(&e.to_string())
            ));
            rule.resolved(offer.file_id, Some(not_received(e.code(), &offer.name)));
        }
    }
}

/// A file that did not arrive, for the closing line (its details were shown already).
fn not_received(code: u16, name: &str) -> Fatal {
    Fatal::new(
        Exit::TransferFailed,
        code,
        format!("{} was not received", shown(name)),
    )
}

/// `y` or `yes` in any case.
fn is_yes(answer: Option<&str>) -> bool {
    answer.is_some_and(|a| matches!(a.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

fn prompt(offer: &Offer, out: &Output) {
    let what = match offer.asked_group() {
        Some(_) => group_title(offer),
        None => format!(
            "{} ({})",
            shown(&offer.name),
            super::human_bytes(offer.size)
        ),
    };
    eprint!(
        "Accept {what} from {}? [y/N] ",
        out.peer_name(&offer.sender)
    );
}

/// A share of several files, as asked about: `photos/ (1,204 files, 3.1 GiB)`.
fn group_title(offer: &Offer) -> String {
    let Some(g) = &offer.group else {
        return shown(&offer.name);
    };
    let files = format!("{} files", thousands(u64::from(g.count)));
    let size = g
        .bytes
        .map(|b| format!(", {}", super::human_bytes(b)))
        .unwrap_or_default();
    match &g.label {
        Some(label) => format!("{} ({files}{size})", shown(label)),
        None => format!("{files}{size}"),
    }
}

/// `1204` → `1,204`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn group_title_names_label_count_and_size_escaped() {
        let offer = Offer {
            file_id: FileId::new(),
            name: "photos/a.jpg".into(),
            size: 1,
            sender: "s".into(),
            group: Some(OfferGroup {
                id: uuid::Uuid::new_v4(),
                count: 1204,
                index: 0,
                label: Some("photos\u{1b}[2J/".into()),
                bytes: Some(3 * 1024 * 1024 * 1024),
            }),
        };
        assert_eq!(
            group_title(&offer),
            format!(
                "photos\\u{{1b}}[2J/ (1,204 files, {})",
                super::super::human_bytes(3 << 30)
            )
        );
    }

    #[test]
    fn is_yes_accepts_any_case_and_refuses_the_rest() {
        for a in ["y", "Y", "yes", "Yes", "YES", " yes "] {
            assert!(is_yes(Some(a)), "{a:?}");
        }
        for a in ["", "n", "no", "yess", "ja"] {
            assert!(!is_yes(Some(a)), "{a:?}");
        }
        assert!(!is_yes(None));
    }
}
