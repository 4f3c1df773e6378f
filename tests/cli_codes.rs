//! Codes, tickets and authentication as the `peershare` binary shows them: wrong codes,
//! a burnt code, the default server for bare codes. Real binaries on 127.0.0.1.

mod common;

use std::path::Path;

use common::cli::*;
use serde_json::Value;

fn send(extra: &[&str], file: &Path) -> JsonRun {
    let mut cmd = peershare(&["send", "--bind", "127.0.0.1", "--json"]);
    cmd.args(extra).arg(file);
    JsonRun::spawn(cmd)
}

fn recv_cmd(out: &Path, ticket: &str) -> tokio::process::Command {
    let mut cmd = peershare(&["recv", "--bind", "127.0.0.1", "--yes", "--json"]);
    cmd.arg("--out").arg(out).arg(ticket);
    cmd
}

fn last_error(events: &[Value]) -> (u64, u64) {
    let e = events.last().expect("output");
    assert_eq!(e["event"], "error", "the last line is the fatal error: {e}");
    (
        e["code"].as_u64().unwrap_or(0),
        e["exit"].as_u64().unwrap_or(0),
    )
}

/// The ticket with its secret replaced.
fn wrong(ticket: &str) -> String {
    let (code, server) = ticket.split_once('@').expect("CODE@SERVER");
    let (route, _) = code.split_once('-').expect("ROUTE-SECRET");
    format!("{route}-wrong-guess-words@{server}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_three_wrong_codes_exit_5_and_burn_the_senders_code() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("secret.txt");
    std::fs::write(&src, b"for the right person only\n").unwrap();
    let mut s = send(&[], &src);
    let ticket = s.ticket().await;
    // A 3-word code from the word list, with a number for a route.
    let code = ticket.split_once('@').unwrap().0;
    let parts: Vec<&str> = code.split('-').collect();
    assert_eq!(parts.len(), 4, "{code}");
    assert!(parts[0].parse::<u32>().is_ok(), "{code}");
    for i in 0..3 {
        let out = tmp.path().join(format!("out{i}"));
        let (exit, events, stderr) = JsonRun::spawn(recv_cmd(&out, &wrong(&ticket)))
            .finish()
            .await;
        assert_eq!(exit, 5, "{stderr}");
        assert_eq!(last_error(&events), (6011, 5), "{events:#?}");
        assert!(
            !events.iter().any(|e| e["event"] == "download-available"),
            "{events:#?}"
        );
        assert!(!out.join("secret.txt").exists());
    }
    let (exit, events, stderr) = s.finish().await;
    assert_eq!(exit, 5, "{stderr}");
    assert_eq!(last_error(&events), (6012, 5));
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "peer-auth-failed")
            .count(),
        3,
        "{events:#?}"
    );
    assert_eq!(
        events.iter().filter(|e| e["event"] == "code-burnt").count(),
        1
    );
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "recipient-outcome" || e["event"] == "peer-joined"),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_bare_code_uses_the_default_server_from_env_or_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut signal = LineRun::spawn(peershare(&["signal", "--listen", "127.0.0.1:0"]));
    let url = signal.next_line().await;
    let src = tmp.path().join("a.txt");
    std::fs::write(&src, b"hello by default\n").unwrap();

    // `send` with PEERSHARE_SERVER: the code alone is enough for a recipient that has
    // the same default, through the environment or the config file.
    let mut cmd = peershare(&["send", "--bind", "127.0.0.1", "--json"]);
    cmd.env("PEERSHARE_SERVER", &url).arg(&src);
    let mut s = JsonRun::spawn(cmd);
    let ticket_line = s.until("ticket", |e| e["event"] == "ticket").await;
    let code = ticket_line["code"].as_str().unwrap().to_string();
    let host_port = url.strip_prefix("ws://").unwrap();
    assert_eq!(
        ticket_line["ticket"],
        format!("{code}@{host_port}").as_str()
    );
    assert_eq!(
        ticket_line["page"],
        format!("http://{host_port}/#{code}").as_str()
    );

    let config = tmp.path().join("config");
    std::fs::create_dir_all(config.join("peershare")).unwrap();
    std::fs::write(
        config.join("peershare/config.toml"),
        format!("server = \"{url}\"\n"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let mut cmd = recv_cmd(&out, &code);
    cmd.env("XDG_CONFIG_HOME", &config);
    let (exit, _, stderr) = JsonRun::spawn(cmd).finish().await;
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(
        std::fs::read(out.join("a.txt")).unwrap(),
        b"hello by default\n"
    );
    let (exit, _, stderr) = s.finish().await;
    assert_eq!(exit, 0, "{stderr}");

    // Without any default a bare code is a usage error, before anything is joined.
    let out2 = tmp.path().join("out2");
    let (exit, events, stderr) = JsonRun::spawn(recv_cmd(&out2, &code)).finish().await;
    assert_eq!(exit, 2, "{stderr}");
    assert_eq!(last_error(&events), (6008, 2));
    assert!(stderr.contains("PEERSHARE_SERVER"), "{stderr}");
    assert!(!out2.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_send_first_server_unreachable_page_names_the_server_that_joined() {
    let tmp = tempfile::tempdir().unwrap();
    let mut signal = LineRun::spawn(peershare(&["signal", "--listen", "127.0.0.1:0"]));
    let url = signal.next_line().await;
    let live = url.strip_prefix("ws://").unwrap().to_string();
    // A port nothing listens on: connections to it are refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let src = tmp.path().join("a.txt");
    std::fs::write(&src, b"through the second server\n").unwrap();
    let mut cmd = peershare(&["send", "--bind", "127.0.0.1", "--json"]);
    cmd.arg("--server").arg(format!("{dead},{live}")).arg(&src);
    let mut s = JsonRun::spawn(cmd);
    let ticket_line = s.until("ticket", |e| e["event"] == "ticket").await;
    let code = ticket_line["code"].as_str().unwrap().to_string();
    // The ticket keeps every server in the order given; the page form, one server, is
    // the one that took the join.
    assert_eq!(
        ticket_line["ticket"],
        format!("{code}@{dead},{live}").as_str()
    );
    assert_eq!(
        ticket_line["page"],
        format!("http://{live}/#{code}").as_str()
    );
    let out = tmp.path().join("out");
    let (exit, _, stderr) = JsonRun::spawn(recv_cmd(&out, ticket_line["ticket"].as_str().unwrap()))
        .finish()
        .await;
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(
        std::fs::read(out.join("a.txt")).unwrap(),
        b"through the second server\n"
    );
    let (exit, _, stderr) = s.finish().await;
    assert_eq!(exit, 0, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_chosen_code_and_page_url_ticket_deliver_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("b.txt");
    std::fs::write(&src, b"chosen words\n").unwrap();
    let mut s = send(&["--code", "teamroom42-Correct-Horse"], &src);
    let ticket = s.ticket().await;
    let (code, host_port) = ticket.split_once('@').unwrap();
    assert_eq!(code, "teamroom42-correct-horse");
    // The page form of the ticket works for recv too, and the secret's case and
    // separators do not matter.
    let out = tmp.path().join("out");
    let page = format!("http://{host_port}/#teamroom42-CORRECT horse");
    let (exit, _, stderr) = JsonRun::spawn(recv_cmd(&out, &page)).finish().await;
    assert_eq!(exit, 0, "{stderr}");
    assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"chosen words\n");
    let (exit, _, stderr) = s.finish().await;
    assert_eq!(exit, 0, "{stderr}");
}
