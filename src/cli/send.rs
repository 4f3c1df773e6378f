//! `peershare send`: share files until the recipients have them (the README's
//! completion rules, `super::rules::SendRule`).

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use peershare::proto::code::Code;
use peershare::proto::control::MAX_TEXT_BYTES;
use peershare::signal_client::normalize_url;
use peershare::signaling::{ServerConfig, SignalingServer};
use peershare::transfer::walk::display_name;
use peershare::{
    Error, Event, Peer, PeerConfig, Role, SendOptions, Share, SharedPaths, Ticket, codes,
};

use super::defaults::Defaults;
use super::output::{Output, shown};
use super::rules::{SendRule, Targets};
use super::{Exit, Fatal};
use crate::SendArgs;

/// How long each `--to` may match no member of the session, from the moment the files
/// are shared, before `send` gives up on it (6013).
pub const TO_GRACE: Duration = Duration::from_secs(10);

pub async fn run(args: SendArgs, out: &mut Output) -> Result<(), Fatal> {
    // Standard input and texts are spooled first: a failure there creates no session.
    let sources = Sources::of(&args).await?;
    // A server given or configured; else an embedded one.
    let given: Vec<String> = args
        .server
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let defaults = if !given.is_empty() || args.embedded {
        Defaults::default()
    } else {
        super::defaults::load()?
    };
    let configured = if given.is_empty() {
        defaults.servers()
    } else {
        given
    };
    let by_default = args.server.is_empty() && !configured.is_empty();
    // The embedded server lives as long as this function.
    let (server, own_urls, ticket_urls) = if !configured.is_empty() {
        (None, configured.clone(), configured)
    } else {
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
        (Some(server), vec![own], vec![public])
    };

    let mut config = PeerConfig::new(own_urls[0].clone());
    config.fallback_servers = own_urls[1..].to_vec();
    config.session = args.code.clone();
    config.create_session = args.code.is_some() && !args.join;
    config.secret_words = usize::from(args.words);
    config.role = Role::SendOnly;
    // The offers live as long as `send` runs: a recipient may come hours later.
    config.offer_ttl = SEND_OFFER_TTL;
    args.peer.apply(&mut config);
    if config.ca_file.is_none() {
        config.ca_file = defaults.ca.clone();
    }
    let own_name = config.name.clone();
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
    // Files and directories alone are walked (trees); standard input and texts go
    // under the names given to them.
    let shared = if sources.options.names.is_some() {
        peer.send_files_with(&sources.paths, share, sources.options.clone())
            .await
            .map(|jobs| SharedPaths {
                files: jobs
                    .into_iter()
                    .zip(sources.names.iter().cloned())
                    .collect(),
                dirs: Vec::new(),
                skipped: Vec::new(),
            })
    } else {
        let options = SendOptions {
            follow_symlinks: args.follow_symlinks,
            ..sources.options.clone()
        };
        peer.send_paths(&sources.paths, share, options).await
    };
    let shared = match shared {
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
    let names: HashMap<_, _> = shared
        .files
        .iter()
        .map(|(job, name)| (*job, super::output::shown(name)))
        .collect();
    let jobs: Vec<peershare::JobId> = shared.files.iter().map(|(job, _)| *job).collect();
    let audience = (!args.to.is_empty()).then(|| args.to.iter().cloned().collect());
    let mut rule = SendRule::new(names, audience);
    let mut targets = Targets::new(&args.to);
    // Until then, a --to that matches nobody may still find its member.
    let mut to_deadline = (!args.to.is_empty()).then(|| tokio::time::Instant::now() + TO_GRACE);

    let code: Code = peer.session().parse()?;
    let ticket = Ticket::with_servers(&ticket_urls, code.clone());
    // The page form names one server: the one that took the join, not a dead first one.
    let page = own_urls
        .iter()
        .position(|u| normalize_url(u) == peer.joined_server())
        .and_then(|i| ticket_urls.get(i))
        .map_or_else(
            || ticket.page_url(),
            |server| Ticket::new(Some(server), code.clone()).page_url(),
        );
    if out.is_json() {
        out.json_line(&serde_json::json!({
            "event": "ticket",
            "ticket": ticket.to_string(),
            "code": code.to_string(),
            "page": page,
            "client_id": peer.client_id(),
            "name": own_name,
        }));
        if args.qr
            && let Some(page) = &page
        {
            print_qr(page, out);
        }
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
        if let Some(page) = &page {
            out.note(&format!("(in a browser: {page})"));
            if args.qr {
                print_qr(page, out);
            }
        }
        let dirs = match shared.dirs.len() {
            0 => String::new(),
            1 => " and 1 empty directory".to_string(),
            n => format!(" and {n} empty directories"),
        };
        out.note(&format!(
            "sharing {} file(s){dirs} as {} (client ID {}); waiting for recipients (Ctrl-C to stop)",
            shared.files.len(),
            shown(&own_name),
            peer.client_id()
        ));
    }
    // After the ticket: `--json`'s first line is the ticket.
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
    for p in peer.peers().await {
        out.name_peer(&p.id, &p.name);
        if !args.to.is_empty() {
            target(
                &peer,
                &jobs,
                &args.to,
                &mut targets,
                &mut rule,
                out,
                &p.id,
                &p.name,
            )
            .await;
        }
        rule.joined(&p.id, &p.name);
    }

    // Listening from here on: a signal between two events is not lost.
    let interrupted = super::interrupted();
    tokio::pin!(interrupted);
    // Members that only send (another `send` in the session) are no recipients to wait
    // for, whether or not they offer us anything.
    let mut send_only = peer.send_only_members();
    let result = loop {
        let event = tokio::select! {
            Ok(()) = send_only.changed() => {
                for member in send_only.borrow_and_update().iter() {
                    rule.fellow_sender(member);
                }
                None
            }
            ev = events.recv() => match ev {
                Some(ev) => Some(ev),
                None => break Err(Fatal::new(
                    Exit::TransferFailed,
                    codes::NOT_CONNECTED,
                    "the peer shut down",
                )),
            },
            _ = super::sleep_until(to_deadline) => {
                to_deadline = None;
                if !targets.any_matched()
                    && let Some(fatal) = targets.not_found(TO_GRACE)
                {
                    break Err(fatal);
                }
                for value in targets.unmatched() {
                    out.note(&format!(
                        "--to {}: no member of the session has this client ID or display \
                         name; sharing with the others",
                        shown(value)
                    ));
                }
                // No event: whether `send` is done now is decided below.
                None
            }
            _ = &mut interrupted => {
                if args.keep {
                    break with_targets(rule.on_stop(), &targets);
                }
                break Err(Fatal::new(
                    Exit::Interrupted,
                    codes::CANCELLED,
                    "interrupted before every recipient had every file; recipients keep \
                     their partial downloads: share the same files again and they resume",
                ));
            }
        };
        if let Some(event) = &event {
            out.event(event);
        }
        match &event {
            None => {}
            Some(Event::PeerJoined { peer: who, name }) => {
                if !args.to.is_empty() {
                    target(
                        &peer,
                        &jobs,
                        &args.to,
                        &mut targets,
                        &mut rule,
                        out,
                        who,
                        name,
                    )
                    .await;
                }
                rule.joined(who, name);
            }
            Some(Event::PeerLeft { peer: who }) => rule.left(who),
            Some(Event::CodeBurnt { failures }) => rule.burnt(*failures),
            Some(Event::RecipientOutcome {
                job_id,
                peer: who,
                outcome,
                ..
            }) => rule.outcome(who, *job_id, outcome.clone()),
            _ => {}
        }
        // Until its grace period ends, a --to may still find members (one that matched
        // nobody yet, or a display name more members may have), and they are waited for.
        let targets_settled = to_deadline.is_none() || targets.settled();
        if !args.keep
            && targets_settled
            && let Some(verdict) = rule.verdict()
        {
            break with_targets(verdict, &targets);
        }
    };
    // Show what was emitted together with the last outcome (its upload-completed and
    // group end), not what the peers did after it: a recipient that has everything and
    // leaves is no news once `send` is done.
    while let Some(event) = events.try_recv() {
        if completes_outcome(&event) {
            out.event(&event);
        }
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

/// The events the session emits together with a recipient's outcome.
fn completes_outcome(event: &Event) -> bool {
    matches!(
        event,
        Event::RecipientOutcome { .. }
            | Event::UploadCompleted { .. }
            | Event::UploadFailed { .. }
            | Event::UploadCancelled { .. }
            | Event::UploadGroupEnded { .. }
    )
}

/// The lifetime of `send`'s offers: a century, so in practice as long as `send` runs.
const SEND_OFFER_TTL: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// Name of standard input's offer without `--name`.
const STDIN_NAME: &str = "stdin";
/// Name of a `--text` offer without `--name`.
const TEXT_NAME: &str = "text.txt";

/// What `send` shares: the paths (standard input and a text spooled into private
/// temporary files, removed when `send` ends), the names shown, and the options.
struct Sources {
    paths: Vec<PathBuf>,
    names: Vec<String>,
    options: SendOptions,
    /// The spooled temporary file, alive as long as the share.
    _spool: Option<tempfile::TempPath>,
}

impl Sources {
    async fn of(args: &SendArgs) -> Result<Self, Fatal> {
        let usage = |message: String| Fatal::new(Exit::Usage, codes::INVALID_ARGUMENT, message);
        if let Some(text) = &args.text {
            if text.len() as u64 > MAX_TEXT_BYTES {
                return Err(Fatal {
                    exit: Exit::Usage,
                    ..Fatal::from_error(&Error::FileTooLarge {
                        name: "--text".into(),
                        size: text.len() as u64,
                        max: MAX_TEXT_BYTES,
                    })
                });
            }
            let name = args.name.clone().unwrap_or_else(|| TEXT_NAME.into());
            let bytes = text.clone().into_bytes();
            let spool = spool(
                move |file| {
                    std::io::Write::write_all(file, &bytes)?;
                    Ok(bytes.len() as u64)
                },
                MAX_TEXT_BYTES,
            )
            .await?;
            return Ok(Self {
                paths: vec![spool.to_path_buf()],
                names: vec![name.clone()],
                options: SendOptions {
                    names: Some(vec![name]),
                    text: true,
                    ..SendOptions::default()
                },
                _spool: Some(spool),
            });
        }
        let stdin_args = args.files.iter().filter(|p| is_stdin(p)).count();
        if stdin_args > 1 {
            return Err(usage("`-` (standard input) can be given once".into()));
        }
        if stdin_args == 0 {
            if args.name.is_some() {
                return Err(usage(
                    "--name names standard input (`-`) or --text; files keep their names".into(),
                ));
            }
            return Ok(Self {
                paths: args.files.clone(),
                names: args.files.iter().map(|p| display_name(p)).collect(),
                options: SendOptions::default(),
                _spool: None,
            });
        }
        // Named files go along with standard input; a tree does not (checked before
        // standard input is read).
        if let Some(dir) = args.files.iter().find(|p| !is_stdin(p) && p.is_dir()) {
            return Err(usage(format!(
                "`-` (standard input) is shared with files, not directories: {} is a directory",
                shown(&dir.display().to_string())
            )));
        }
        let max = args
            .peer
            .max_size
            .unwrap_or(PeerConfig::new("").max_file_size);
        let stdin_name = args.name.clone().unwrap_or_else(|| STDIN_NAME.into());
        let spool = spool(
            move |file| {
                let mut stdin = std::io::stdin().lock().take(max.saturating_add(1));
                std::io::copy(&mut stdin, file)
            },
            max,
        )
        .await?;
        let paths: Vec<PathBuf> = args
            .files
            .iter()
            .map(|p| {
                if is_stdin(p) {
                    spool.to_path_buf()
                } else {
                    p.clone()
                }
            })
            .collect();
        let names: Vec<String> = args
            .files
            .iter()
            .map(|p| {
                if is_stdin(p) {
                    stdin_name.clone()
                } else {
                    display_name(p)
                }
            })
            .collect();
        Ok(Self {
            paths,
            options: SendOptions {
                names: Some(names.clone()),
                ..SendOptions::default()
            },
            names,
            _spool: Some(spool),
        })
    }
}

/// `text` as a QR code for a terminal: Unicode half blocks (two modules per character
/// cell), the light modules and the quiet zone drawn as blocks, so that it reads right
/// in the usual light-on-dark terminal. `None` if `text` is too long for a QR code.
fn qr_block(text: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// `send --qr`: the page URL as a QR code on stderr (also with `--json`, whose stdout it
/// leaves alone), the URL under it in JSON mode (human output names it already).
fn print_qr(page: &str, out: &Output) {
    let Some(qr) = qr_block(page) else {
        let message = format!("--qr: {page} is too long for a QR code");
        if out.is_json() {
            eprintln!("{message}");
        } else {
            out.note(&message);
        }
        return;
    };
    if out.is_json() {
        eprintln!("{qr}\n{page}");
    } else {
        out.note(&qr);
    }
}

/// `-` stands for standard input.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Fill a private temporary file (mode 0600, in `$TMPDIR`, removed when the returned
/// path is dropped) with `fill` on a blocking thread; `fill` returns the bytes written,
/// and more than `max` is refused (1185). Bounded by the free space there (5090).
/// Ctrl-C or SIGTERM while it runs removes the file and ends `send` (130).
async fn spool<F>(fill: F, max: u64) -> Result<tempfile::TempPath, Fatal>
where
    F: FnOnce(&mut std::fs::File) -> std::io::Result<u64> + Send + 'static,
{
    let spool_error = |e: std::io::Error| {
        Fatal::from_error(&Error::SaveFailed(format!(
            "cannot spool the input into a temporary file in {}: {e}",
            std::env::temp_dir().display()
        )))
    };
    let (mut file, path) = tempfile::Builder::new()
        .prefix(".peershare-spool-")
        .tempfile()
        .map_err(spool_error)?
        .into_parts();
    // The blocking read may never end (a terminal, a producer that hangs): the path
    // stays here, so an interruption removes the file whatever the thread does.
    let task = tokio::task::spawn_blocking(move || fill(&mut file));
    let written = tokio::select! {
        written = task => written
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .map_err(spool_error)?,
        _ = super::interrupted() => {
            return Err(Fatal::new(
                Exit::Interrupted,
                codes::CANCELLED,
                "interrupted while reading the input; nothing was shared",
            ));
        }
    };
    if written > max {
        return Err(Fatal::new(
            Exit::Usage,
            codes::FILE_TOO_LARGE,
            format!("the input is larger than the maximum of {max} bytes (--max-size)"),
        ));
    }
    Ok(path)
}

/// A member that `--to` may name (`who`, display name `name`): if it matches values it
/// had not, it becomes a recipient (the jobs are offered to it, if its client ID was not
/// given already), and the match is reported.
#[allow(clippy::too_many_arguments)]
async fn target(
    peer: &Peer,
    jobs: &[peershare::JobId],
    to: &[String],
    targets: &mut Targets,
    rule: &mut SendRule,
    out: &Output,
    who: &str,
    name: &str,
) {
    let matched = targets.member(who, name);
    if matched.is_empty() {
        return;
    }
    rule.add_recipient(who);
    if !to.iter().any(|v| v == who)
        && let Err(e) = peer.share_with(jobs, who).await
    {
        out.note(&format!("cannot share with {who}: error {}: {e}", e.code()));
    }
    for (value, count) in matched {
        if out.is_json() {
            out.json_line(&serde_json::json!({
                "event": "recipient-matched",
                "to": value,
                "peer": who,
                "name": name,
                "matches": count,
            }));
        } else {
            out.note(&match_note(&value, who, name, count));
        }
    }
}

/// The line saying that `--to value` matched member `who` (display name `name`), the
/// `count`th member it matches.
fn match_note(value: &str, who: &str, name: &str, count: usize) -> String {
    let member = match name {
        "" => format!("client ID {}", shown(who)),
        name => format!("{} (client ID {})", shown(name), shown(who)),
    };
    match count {
        1 => format!("--to {}: sharing with {member}", shown(value)),
        n => format!(
            "--to {}: {n} members match it; also sharing with {member}: every one of them \
             gets the files",
            shown(value)
        ),
    }
}

/// `send`'s verdict, failed (6013) if a `--to` never matched a member although the rest
/// went well.
fn with_targets(verdict: Result<(), Fatal>, targets: &Targets) -> Result<(), Fatal> {
    verdict?;
    match targets.not_found(TO_GRACE) {
        Some(fatal) => Err(fatal),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_outcome_upload_endings_shown_departures_and_errors_after_it_not() {
        let group = Event::UploadGroupEnded {
            group_id: uuid::Uuid::nil(),
            label: None,
            files: 1,
            completed: 1,
            failed: 0,
            cancelled: 0,
        };
        let failed = Event::UploadFailed {
            job_id: None,
            file_id: None,
            name: "a".into(),
            size: 1,
            code: 5089,
            message: "gone".into(),
        };
        assert!(completes_outcome(&group) && completes_outcome(&failed));
        let after = [
            Event::ConnectionLost {
                peer: "p".into(),
                reason: "control channel closed".into(),
            },
            Event::PeerLeft { peer: "p".into() },
            Event::Error {
                peer: Some("p".into()),
                code: 7004,
                message: "no such member".into(),
            },
        ];
        for event in &after {
            assert!(!completes_outcome(event), "{}", event.name());
        }
    }

    #[test]
    fn qr_block_page_url_is_a_square_of_half_blocks_with_a_light_quiet_zone() {
        let qr = qr_block("http://192.168.1.20:40213/#7-orbit-canvas-tiger").unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        let width = lines[0].chars().count();
        // 17 + 4 × version modules and a quiet zone of 4 on each side; two rows a line.
        assert!(width >= 21 + 8 && (width - 8) % 4 == 1, "{width}");
        assert_eq!(lines.len(), width.div_ceil(2));
        for line in &lines {
            assert_eq!(line.chars().count(), width, "{line:?}");
            assert!(line.chars().all(|c| "█▀▄ ".contains(c)), "{line:?}");
        }
        // The quiet zone is light, drawn as blocks: the first line and both edges.
        assert!(lines[0].chars().all(|c| c == '█'), "{}", lines[0]);
        let (last, rest) = lines.split_last().unwrap();
        assert!(
            rest.iter()
                .all(|l| l.starts_with("██") && l.ends_with("██"))
        );
        // An odd number of rows: the last line holds the quiet zone's last row only.
        assert!(last.chars().all(|c| c == '▀'), "{last}");
        assert!(qr_block(&"x".repeat(8000)).is_none());
    }

    #[test]
    fn qr_block_draws_every_module_of_the_code_light_as_block() {
        let url = "https://signal.example.org/#7-orbit-canvas-tiger";
        let code = qrcode::QrCode::new(url.as_bytes()).unwrap();
        let n = code.width();
        let colors = code.to_colors();
        // Module (x, y) of the picture with the quiet zone of 4: is it light?
        let light = |x: usize, y: usize| {
            let inside = (4..n + 4).contains(&x) && (4..n + 4).contains(&y);
            !inside || colors[(y - 4) * n + (x - 4)] == qrcode::Color::Light
        };
        let qr = qr_block(url).unwrap();
        for (row, line) in qr.lines().enumerate() {
            for (x, c) in line.chars().enumerate() {
                let (top, bottom) = (2 * row, 2 * row + 1);
                // The last line of an odd height has no bottom module: drawn dark.
                let bottom_light = bottom < n + 8 && light(x, bottom);
                let expected = match (light(x, top), bottom_light) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                };
                assert_eq!(c, expected, "line {row}, column {x}");
            }
        }
    }

    #[test]
    fn match_note_names_the_member_escaped_and_says_when_a_name_is_shared() {
        assert_eq!(
            match_note("alice", "c0ffee000001", "alice", 1),
            "--to alice: sharing with alice (client ID c0ffee000001)"
        );
        assert_eq!(
            match_note("alice", "c0ffee000002", "alice", 2),
            "--to alice: 2 members match it; also sharing with alice (client ID \
             c0ffee000002): every one of them gets the files"
        );
        assert_eq!(
            match_note("c1", "c1", "", 1),
            "--to c1: sharing with client ID c1"
        );
        assert_eq!(
            match_note("b\\u{1b}ob", "c2", "b\u{1b}ob", 1),
            "--to b\\u{1b}ob: sharing with b\\u{1b}ob (client ID c2)"
        );
    }
}
