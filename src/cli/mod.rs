//! Subcommands of the `peershare` binary and their shared output helpers.

pub mod defaults;
pub mod output;
pub mod recv;
pub mod send;
pub mod signal;

pub mod rules;

use peershare::codes;

/// The process exit status of a failed `send` or `recv` (the README's exit-code table;
/// success is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A transfer failed (a recipient failed, a file did not verify, …).
    TransferFailed = 1,
    /// Bad usage or input: a bad ticket or option, no terminal to ask on.
    Usage = 2,
    /// No session to work in: the server is unreachable, the session does not exist or
    /// ended, the password is wrong.
    NoSession = 3,
    /// `send`: no recipient failed, but some file was declined by every recipient.
    Declined = 4,
    /// Peer authentication failed: a wrong code, someone altering the connection setup,
    /// or a code burnt by too many failed attempts (6011, 6012).
    AuthFailed = 5,
    /// Interrupted (Ctrl-C / SIGTERM); partial data is kept for a resume.
    Interrupted = 130,
}

/// A command that did not succeed: how to exit and the error line to show.
#[derive(Debug)]
pub struct Fatal {
    pub exit: Exit,
    pub code: u16,
    pub message: String,
}

impl Fatal {
    pub fn new(exit: Exit, code: u16, message: impl Into<String>) -> Self {
        Self {
            exit,
            code,
            message: message.into(),
        }
    }

    /// A library error, with the exit status its code calls for.
    pub fn from_error(e: &peershare::Error) -> Self {
        let exit = match e.code() {
            codes::INVALID_ARGUMENT => Exit::Usage,
            codes::NOT_CONNECTED | 7006 | 7007 | 7011 | 7012 | 7015 => Exit::NoSession,
            codes::DECLINED => Exit::Declined,
            codes::PEER_AUTH_FAILED | codes::CODE_BURNT => Exit::AuthFailed,
            _ => Exit::TransferFailed,
        };
        Self::new(exit, e.code(), e.to_string())
    }

    /// The one line shown on stderr.
    pub fn line(&self) -> String {
        format!("error {}: {}", self.code, output::shown(&self.message))
    }
}

impl From<peershare::Error> for Fatal {
    fn from(e: peershare::Error) -> Self {
        Fatal::from_error(&e)
    }
}

impl From<anyhow::Error> for Fatal {
    /// Library errors keep their code; anything else is an invalid argument (6008).
    fn from(e: anyhow::Error) -> Self {
        match e.chain().find_map(|c| c.downcast_ref::<peershare::Error>()) {
            Some(pe) => Fatal {
                message: format!("{e:#}"),
                ..Fatal::from_error(pe)
            },
            None => Fatal::new(Exit::Usage, codes::INVALID_ARGUMENT, format!("{e:#}")),
        }
    }
}

pub use peershare::signaling::cli::lan_ip;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// This machine's host name, as the default display name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "peershare".into())
}

/// Parse a byte count such as `1048576`, `512K`, `10M` or `1G` (binary multiples).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown unit in {text:?} (use K, M or G)")),
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count"))?;
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{text:?} is out of range")),
        Some(v) => Ok(v),
    }
}

/// Human-readable byte count.
pub fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_bytes_accepts_units_and_rejects_garbage() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("512K"), Ok(512 * 1024));
        assert_eq!(parse_bytes("10m"), Ok(10 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("10X").is_err());
        assert!(parse_bytes("fast").is_err());
        assert!(parse_bytes("99999999999G").is_err());
    }
}
