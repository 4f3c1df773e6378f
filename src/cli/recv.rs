//! `peershare recv`: join the session of a ticket and download what is offered, until
//! every offered group is resolved (the README's completion rules,
//! `super::rules::RecvRule`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use peershare::proto::control::OfferGroup;
use peershare::proto::names::saved_place;
use peershare::proto::resume::{OfferMatch, match_offer};
use peershare::store::{JobRecord, JobStore, RecordFile};
use peershare::{Error, Event, FileId, JobId, Peer, PeerConfig, Save, Ticket, codes};
use tokio::sync::mpsc;

use super::output::{Output, shown, shown_text};
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
    /// Its place in a shared tree (as offered).
    path: Option<String>,
    size: u64,
    sender: String,
    text: bool,
    group: Option<OfferGroup>,
    /// The partial download of this content in `--out`, which accepting resumes.
    resume: Option<Resume>,
}

impl Offer {
    /// The group it is asked about with, if it has company (one question per share).
    fn asked_group(&self) -> Option<(String, uuid::Uuid)> {
        self.group
            .as_ref()
            .filter(|g| g.count > 1)
            .map(|g| (self.sender.clone(), g.id))
    }

    /// Where it is saved below `dir` (before a numbered name is taken).
    fn target_in(&self, dir: &std::path::Path) -> PathBuf {
        let (dirs, name) = saved_place(self.path.as_deref(), &self.name);
        let mut target = dir.to_path_buf();
        target.extend(dirs);
        target.join(name)
    }
}

/// Answers per group: one question covers every file of a share.
#[derive(Default)]
struct GroupAnswers {
    answered: HashMap<(String, uuid::Uuid), bool>,
    /// Files of a group whose question waits for an answer.
    held: HashMap<(String, uuid::Uuid), Vec<Offer>>,
}

/// Where accepted files go and what becomes of them.
struct Target {
    /// The directory downloads are saved into (`--out`, or with `--stdout` a private
    /// temporary directory).
    dir: PathBuf,
    /// `--stdout`: the private directory the one file is received into, removed at the
    /// end.
    spool: Option<tempfile::TempDir>,
    /// `--stdout`: the job whose verified file goes to standard output, once accepted.
    stdout_job: Option<JobId>,
    /// `--stdout`: an offer was taken for standard output already.
    stdout_taken: bool,
    /// Jobs of texts (downloaded into memory and printed).
    texts: HashSet<JobId>,
}

/// A partial download an offer resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resume {
    job_id: JobId,
    /// Bytes durably on disk (the job record's checkpoint).
    offset: u64,
    percent: u64,
}

impl Resume {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "job_id": self.job_id,
            "offset": self.offset,
            "percent": self.percent,
        })
    }
}

/// The partial downloads of `store` that hold something: each record with the bytes
/// durably on disk (its checkpoint, within the partial file's length).
fn partial_downloads(store: &JobStore) -> Vec<(JobRecord, u64)> {
    store
        .scan()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|job| match (job.record, job.part) {
            (RecordFile::Found(r), Some(len)) if r.offset.min(len) > 0 => {
                let on_disk = r.offset.min(len);
                Some((r, on_disk))
            }
            _ => None,
        })
        .collect()
}

/// The partial download among `partials` that an offer of (`name`, `size`, `hash`)
/// resumes (same size and BLAKE3, as the library matches them), taken out of the list:
/// a second offer of the same content starts afresh.
fn take_partial(
    partials: &mut Vec<(JobRecord, u64)>,
    name: &str,
    size: u64,
    hash: &str,
) -> Option<Resume> {
    let i = partials.iter().position(|(r, _)| {
        match_offer((&r.name, r.size, &r.hash), (name, size, hash)) == OfferMatch::SameContent
    })?;
    let (r, on_disk) = partials.remove(i);
    Some(Resume {
        job_id: r.job_id,
        offset: on_disk,
        percent: super::partials::percent(on_disk, r.size),
    })
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
    let servers = match ticket.server {
        Some(_) => ticket.servers(),
        None => defaults.servers(),
    };
    let Some((server, fallback_servers)) = servers.split_first() else {
        return Err(Fatal::new(
            Exit::Usage,
            codes::INVALID_ARGUMENT,
            "the ticket names no server and no default server is configured: give \
             CODE@HOST:PORT, or set PEERSHARE_SERVER (or `server` in the config file)",
        ));
    };
    // Made once a session is joined; one that cannot be made is known now.
    if !args.stdout
        && let Ok(meta) = std::fs::metadata(&args.out)
        && !meta.is_dir()
    {
        return Err(Fatal {
            exit: Exit::Usage,
            ..Fatal::from_error(&Error::StorageAccessDenied(format!(
                "--out {} exists and is not a directory",
                shown(&args.out.display().to_string())
            )))
        });
    }
    let spool = if args.stdout {
        let dir = tempfile::Builder::new()
            .prefix(".peershare-stdout-")
            .tempdir()
            .map_err(|e| {
                Fatal::from_error(&Error::StorageAccessDenied(format!(
                    "cannot create a temporary directory in {}: {e}",
                    std::env::temp_dir().display()
                )))
            })?;
        Some(dir)
    } else {
        None
    };
    let mut target = Target {
        dir: spool
            .as_ref()
            .map_or_else(|| args.out.clone(), |d| d.path().to_path_buf()),
        spool,
        stdout_job: None,
        stdout_taken: false,
        texts: HashSet::new(),
    };
    let mut config = PeerConfig::new(server.clone());
    config.fallback_servers = fallback_servers.to_vec();
    config.session = Some(ticket.code.to_string());
    config.download_dir = target.dir.clone();
    config.overwrite = args.overwrite;
    args.peer.apply(&mut config);
    if config.ca_file.is_none() {
        config.ca_file = defaults.ca.clone();
    }
    let own_name = config.name.clone();
    let (peer, mut events) = Peer::join(config).await?;
    // The directory is made only once there is a session to receive from.
    if let Err(e) = std::fs::create_dir_all(&target.dir) {
        peer.leave().await;
        return Err(Error::StorageAccessDenied(format!("{}: {e}", target.dir.display())).into());
    }
    // The partial downloads of earlier runs; no download of this run has started, so
    // no temporary record there is being written: any is a crash's leftover.
    let store = JobStore::new(&args.out);
    store.remove_stray_temps(&[]);
    let mut partials = partial_downloads(&store);
    for p in peer.peers().await {
        out.name_peer(&p.id, &p.name);
    }
    // Who we are, for a sender's --to.
    if out.is_json() {
        out.json_line(&serde_json::json!({
            "event": "joined",
            "client_id": peer.client_id(),
            "name": own_name,
        }));
    }
    out.note(&format!(
        "joined session as {} (client ID {}); waiting for files",
        shown(&own_name),
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
                    let yes = is_yes(line.as_deref(), offer.resume.is_some());
                    let mut offers = vec![offer];
                    if let Some(key) = offers[0].asked_group() {
                        groups.answered.insert(key.clone(), yes);
                        offers.extend(groups.held.remove(&key).unwrap_or_default());
                        if !yes {
                            out.note(&format!("declined {}", group_title(&offers[0])));
                        }
                    }
                    let mut stopped = false;
                    for offer in offers {
                        let answered = answer(
                            yes,
                            &peer,
                            &offer,
                            (&mut target, &mut mine, &mut rule),
                            out,
                            interrupted.as_mut(),
                        )
                        .await;
                        if answered.is_err() {
                            stopped = true;
                            break;
                        }
                    }
                    if stopped {
                        break Err(interruption(&target));
                    }
                    if let Some(next) = pending.front() {
                        prompt(next, out);
                    }
                }
                None
            }
            _ = super::sleep_until(settle) => break rule.result(),
            _ = super::sleep_until(auth_failure.as_ref().map(|(at, _)| *at)) => {
                if let Some((_, fatal)) = auth_failure.take() {
                    break Err(fatal);
                }
                None
            }
            _ = &mut interrupted => break Err(interruption(&target)),
        };
        if let Some(event) = event {
            // An offer of what a partial download holds: accepting it resumes that.
            let resume = match &event {
                Event::DownloadAvailable {
                    file_id,
                    name,
                    size,
                    hash,
                    path,
                    ..
                } if !rule.knows(*file_id) => {
                    take_partial(&mut partials, path.as_deref().unwrap_or(name), *size, hash)
                }
                _ => None,
            };
            match &event {
                // The file going to standard output was received into a temporary
                // directory: that path means nothing to the user.
                Event::DownloadCompleted {
                    job_id,
                    file_id,
                    name,
                    size,
                    ..
                } if target.stdout_job == Some(*job_id) => out.event(&Event::DownloadCompleted {
                    job_id: *job_id,
                    file_id: *file_id,
                    name: name.clone(),
                    size: *size,
                    path: None,
                    data: None,
                }),
                _ => out.event_with(&event, resume.as_ref().map(|r| ("resume", r.json()))),
            }
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
                    text,
                    path,
                    ..
                } => {
                    if !rule.offered(file_id, &sender, group.clone()) {
                        continue;
                    }
                    settle = None;
                    let offer = Offer {
                        file_id,
                        name: path.clone().unwrap_or(name),
                        path,
                        size,
                        sender,
                        text,
                        group: group.clone(),
                        resume,
                    };
                    let key = offer.asked_group();
                    let known = key.as_ref().and_then(|k| groups.answered.get(k).copied());
                    if let Some(why) = target.refuses_for_stdout(group) {
                        // Resolved here: the checks after this match see it.
                        let _ = peer.decline(offer.file_id).await;
                        out.note(&format!("declined {}: {why}", shown(&offer.name)));
                        let failure = Fatal::new(
                            Exit::Usage,
                            codes::TOO_MANY_FILES,
                            format!(
                                "--stdout receives one file, and {} was offered too ({why}): \
                                 declined",
                                shown(&offer.name)
                            ),
                        );
                        rule.resolved(offer.file_id, Some(failure));
                    } else if args.yes || known.is_some() {
                        let yes = args.yes || known == Some(true);
                        if answer(
                            yes,
                            &peer,
                            &offer,
                            (&mut target, &mut mine, &mut rule),
                            out,
                            interrupted.as_mut(),
                        )
                        .await
                        .is_err()
                        {
                            break Err(interruption(&target));
                        }
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
                Event::DownloadSkipped { file_id, .. } => rule.resolved(file_id, None),
                Event::DownloadCompleted {
                    job_id,
                    file_id,
                    name,
                    size,
                    path,
                    data,
                } if mine.contains(&job_id) => {
                    let result = if target.texts.contains(&job_id) {
                        let text = data.unwrap_or_default();
                        show_text(
                            out,
                            job_id,
                            file_id,
                            &name,
                            size,
                            &text,
                            target.spool.is_some(),
                        )
                    } else if target.stdout_job == Some(job_id) {
                        match to_stdout(path, &name, out, interrupted.as_mut()).await {
                            Some(result) => result,
                            None => break Err(interruption(&target)),
                        }
                    } else {
                        Ok(())
                    };
                    rule.resolved(file_id, result.err());
                }
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
                match target.spool {
                    Some(_) => "the session ended before the file arrived (lost the signaling \
                                server and every peer); nothing was written to standard output"
                        .to_string(),
                    None => format!(
                        "the session ended before every file arrived (lost the signaling \
                         server and every peer); partial downloads are kept in {}: run the \
                         command again with a new ticket of the same files to resume them",
                        target.dir.display()
                    ),
                },
            ));
        }
    };
    // The end of a share is emitted together with its last file's event.
    while let Some(event) = events.try_recv() {
        if matches!(event, Event::DownloadGroupEnded { .. }) {
            out.event(&event);
        }
    }
    out.clear();
    out.summary("received");
    peer.leave().await;
    result
}

impl Target {
    /// With `--stdout`, why an offer with `group` cannot go to standard output: only the
    /// first offer, of a share of one file, does (and is taken by this call). `None`
    /// without `--stdout`.
    fn refuses_for_stdout(&mut self, group: Option<OfferGroup>) -> Option<String> {
        self.spool.as_ref()?;
        match group {
            Some(g) if g.count > 1 => Some(format!("the share has {} files", g.count)),
            _ if self.stdout_taken => Some("another file goes to standard output".into()),
            _ => {
                self.stdout_taken = true;
                None
            }
        }
    }
}

/// Accept or decline `offer`; `Err` if `interrupted` fired while accepting.
async fn answer<F: std::future::Future<Output = ()>>(
    yes: bool,
    peer: &Peer,
    offer: &Offer,
    (target, mine, rule): (&mut Target, &mut HashSet<JobId>, &mut RecvRule),
    out: &Output,
    interrupted: std::pin::Pin<&mut F>,
) -> Result<(), ()> {
    if yes {
        return accept(peer, offer, target, mine, rule, out, interrupted).await;
    }
    let _ = peer.decline(offer.file_id).await;
    if offer.asked_group().is_none() {
        out.note(&format!("declined {}", shown(&offer.name)));
    }
    rule.resolved(offer.file_id, None);
    Ok(())
}

/// The error of an interrupted `recv`.
fn interruption(target: &Target) -> Fatal {
    let message = match target.spool {
        Some(_) => "interrupted; nothing unverified was written to standard output".to_string(),
        None => format!(
            "interrupted; partial downloads are kept in {}: run the same command again to \
             resume them",
            target.dir.display()
        ),
    };
    Fatal::new(Exit::Interrupted, codes::CANCELLED, message)
}

/// Start downloading `offer`: a text into memory, a file into the target directory,
/// unless that directory holds an identical copy already (then the offer is declined as
/// had, and its `download-skipped` event resolves it). A failure to start resolves it as
/// failed. `Err` if `interrupted` fired while an existing file was being compared.
async fn accept<F: std::future::Future<Output = ()>>(
    peer: &Peer,
    offer: &Offer,
    target: &mut Target,
    mine: &mut HashSet<JobId>,
    rule: &mut RecvRule,
    out: &Output,
    interrupted: std::pin::Pin<&mut F>,
) -> Result<(), ()> {
    let save = if offer.text {
        Save::InMemory
    } else {
        if target.spool.is_none() {
            let existing = offer.target_in(&target.dir);
            let skipped = tokio::select! {
                skipped = peer.skip_if_identical(offer.file_id, &existing) => skipped,
                _ = interrupted => return Err(()),
            };
            match skipped {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => out.note(&format!(
                    "{}: cannot compare with {}: error {}: {}; downloading it",
                    shown(&offer.name),
                    shown(&existing.display().to_string()),
                    e.code(),
                    shown(&e.to_string())
                )),
            }
        }
        Save::ToDir(target.dir.clone())
    };
    match peer.download(offer.file_id, save).await {
        Ok(job) => {
            mine.insert(job);
            if offer.text {
                target.texts.insert(job);
            } else if target.spool.is_some() {
                target.stdout_job = Some(job);
            }
        }
        Err(e) => {
            // A refusal of the offer is shown with its `download-failed` event.
            if !e.refuses_offer() {
                out.note(&format!(
                    "{}: error {}: {}",
                    shown(&offer.name),
                    e.code(),
                    shown(&e.to_string())
                ));
            }
            rule.resolved(offer.file_id, Some(not_received(e.code(), &offer.name)));
        }
    }
    Ok(())
}

/// Show a received text: with `--json` as a `text` event; on a terminal with its
/// control, format and bidi characters escaped (newlines and tabs kept); otherwise (a
/// pipe, a file, `--stdout`) its exact bytes.
fn show_text(
    out: &Output,
    job_id: JobId,
    file_id: FileId,
    name: &str,
    size: u64,
    text: &[u8],
    raw: bool,
) -> Result<(), Fatal> {
    let failed = |e: std::io::Error| {
        Fatal::new(
            Exit::TransferFailed,
            codes::SAVE_FAILED,
            format!("cannot write the text to standard output: {e}"),
        )
    };
    if out.is_json() {
        out.json_line(&serde_json::json!({
            "event": "text",
            "job_id": job_id,
            "file_id": file_id,
            "name": name,
            "size": size,
            "text": String::from_utf8_lossy(text),
        }));
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    if raw || !stdout.is_terminal() {
        stdout.write_all(text).map_err(failed)?;
    } else {
        let mut shown = shown_text(&String::from_utf8_lossy(text));
        if !shown.ends_with('\n') {
            shown.push('\n');
        }
        stdout.write_all(shown.as_bytes()).map_err(failed)?;
    }
    stdout.flush().map_err(failed)
}

/// Copy the verified file of `--stdout` to standard output (on a blocking thread) and
/// remove it; `None` if interrupted first.
async fn to_stdout<F: std::future::Future<Output = ()>>(
    path: Option<PathBuf>,
    name: &str,
    out: &Output,
    interrupted: std::pin::Pin<&mut F>,
) -> Option<Result<(), Fatal>> {
    let Some(path) = path else {
        return Some(Ok(()));
    };
    let copy = tokio::task::spawn_blocking(move || copy_to_stdout(&path));
    let copied = tokio::select! {
        copied = copy => copied.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
        _ = interrupted => return None,
    };
    Some(match copied {
        Ok(()) => {
            out.note(&format!("wrote {} to standard output", shown(name)));
            Ok(())
        }
        Err(e) => Err(Fatal::new(
            Exit::TransferFailed,
            codes::SAVE_FAILED,
            format!("cannot write {} to standard output: {e}", shown(name)),
        )),
    })
}

/// Copy a verified file to standard output and remove it (blocking).
fn copy_to_stdout(path: &std::path::Path) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut file, &mut stdout)?;
    stdout.flush()?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// A file that did not arrive, for the closing line (its details were shown already).
fn not_received(code: u16, name: &str) -> Fatal {
    Fatal::new(
        Exit::TransferFailed,
        code,
        format!("{} was not received", shown(name)),
    )
}

/// `y` or `yes` in any case; an empty answer is `default` (yes for a resume, `[Y/n]`);
/// anything else, and no answer at all (standard input closed), is no.
fn is_yes(answer: Option<&str>, default: bool) -> bool {
    answer.is_some_and(|a| match a.trim().to_ascii_lowercase().as_str() {
        "" => default,
        "y" | "yes" => true,
        _ => false,
    })
}

/// The question about `offer`: `[Y/n]` for one that resumes a partial download.
fn question(offer: &Offer, out: &Output) -> String {
    match &offer.resume {
        Some(r) => format!(
            "Resume {} ({} % on disk)? [Y/n] ",
            shown(&offer.name),
            r.percent
        ),
        None => format!(
            "Accept {} ({}) from {}? [y/N] ",
            shown(&offer.name),
            super::human_bytes(offer.size),
            out.peer_name(&offer.sender)
        ),
    }
}

fn prompt(offer: &Offer, out: &Output) {
    let question = match offer.asked_group() {
        Some(_) => format!(
            "Accept {} from {}? [y/N] ",
            group_title(offer),
            out.peer_name(&offer.sender)
        ),
        None => question(offer, out),
    };
    eprint!("{question}");
}

/// A share of several files, as asked about: `photos/ (1,204 files, 3.10 GiB)`.
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
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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
            path: Some("photos/a.jpg".into()),
            size: 1,
            sender: "s".into(),
            text: false,
            resume: None,
            group: Some(OfferGroup {
                id: uuid::Uuid::new_v4(),
                count: 1204,
                index: 0,
                label: Some("photos\u{1b}[2J/".into()),
                bytes: Some(3 << 30),
            }),
        };
        assert_eq!(
            group_title(&offer),
            format!(
                "photos\\u{{1b}}[2J/ (1,204 files, {})",
                super::super::human_bytes(3 << 30)
            )
        );
        // Where an identical copy would be: its place in the tree, sanitized.
        assert_eq!(
            offer.target_in(std::path::Path::new("/out")),
            std::path::Path::new("/out/photos/a.jpg")
        );
    }

    #[test]
    fn is_yes_accepts_any_case_and_refuses_the_rest() {
        for a in ["y", "Y", "yes", "Yes", "YES", " yes "] {
            assert!(is_yes(Some(a), false), "{a:?}");
        }
        for a in ["", "n", "no", "yess", "ja"] {
            assert!(!is_yes(Some(a), false), "{a:?}");
        }
        assert!(!is_yes(None, false));
    }

    #[test]
    fn is_yes_empty_answer_is_the_default_and_no_still_declines() {
        for a in ["", "  ", "y", "YES"] {
            assert!(is_yes(Some(a), true), "{a:?}");
        }
        for a in ["n", "No", "later"] {
            assert!(!is_yes(Some(a), true), "{a:?}");
        }
        assert!(!is_yes(None, true));
    }

    fn record(name: &str, size: u64, hash: &str, offset: u64) -> JobRecord {
        JobRecord {
            version: peershare::store::RECORD_VERSION,
            job_id: JobId::new(),
            file_id: FileId::new(),
            name: name.into(),
            size,
            hash: hash.into(),
            sender_name: "s".into(),
            sender_id: "c1".into(),
            offset,
        }
    }

    #[test]
    fn take_partial_same_content_resumes_once_and_other_content_does_not() {
        let a = record("a.bin", 300, "ab", 100);
        let mut partials = vec![(record("b.bin", 300, "cd", 10), 10), (a.clone(), 100)];
        assert_eq!(take_partial(&mut partials, "a.bin", 300, "ef"), None);
        assert_eq!(take_partial(&mut partials, "a.bin", 299, "ab"), None);
        // Same size and hash under another name is the same content.
        assert_eq!(
            take_partial(&mut partials, "renamed.bin", 300, "AB"),
            Some(Resume {
                job_id: a.job_id,
                offset: 100,
                percent: 33
            })
        );
        assert_eq!(take_partial(&mut partials, "a.bin", 300, "ab"), None);
        assert_eq!(partials.len(), 1);
    }

    #[test]
    fn partial_downloads_count_the_checkpoint_within_the_file_and_skip_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path());
        let cases = [
            (100, 150, Some(100)),
            (100, 30, Some(30)),
            (0, 50, None),
            (100, 0, None),
        ];
        let mut expected = Vec::new();
        for (offset, len, on_disk) in cases {
            let r = record("a.bin", 300, "ab", offset);
            store.save(&r).unwrap();
            std::fs::write(store.partial_path(&r.job_id), vec![0u8; len]).unwrap();
            if let Some(d) = on_disk {
                expected.push((r.job_id, d));
            }
        }
        // A record without its partial file.
        store.save(&record("b.bin", 300, "cd", 100)).unwrap();
        let mut found: Vec<(JobId, u64)> = partial_downloads(&store)
            .into_iter()
            .map(|(r, d)| (r.job_id, d))
            .collect();
        found.sort();
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn question_for_a_resume_is_default_yes_with_the_share_on_disk() {
        let out = Output::new(true);
        let mut offer = Offer {
            file_id: FileId::new(),
            name: "rand2g\u{1b}.bin".into(),
            path: None,
            size: 3 << 20,
            sender: "c0ffee000001".into(),
            text: false,
            group: None,
            resume: None,
        };
        assert_eq!(
            question(&offer, &out),
            "Accept rand2g\\u{1b}.bin (3.00 MiB) from c0ffee000001? [y/N] "
        );
        offer.resume = Some(Resume {
            job_id: JobId::new(),
            offset: 1 << 20,
            percent: 33,
        });
        assert_eq!(
            question(&offer, &out),
            "Resume rand2g\\u{1b}.bin (33 % on disk)? [Y/n] "
        );
    }
}
