//! Subcommands of the `peershare` binary and their shared output helpers.

pub mod defaults;
pub mod output;
pub mod partials;
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
            codes::NOT_CONNECTED | 7005 | 7006 | 7007 | 7011 | 7012 | 7015 | 7017 => {
                Exit::NoSession
            }
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

/// Resolves at `at`; never without one.
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

/// Parse a byte count: a whole number of bytes (`1048576`), or a number with a unit, K,
/// M, G or T, optionally followed by `B` or `iB` and in any case (`512K`, `10MB`,
/// `1.5G`, `2GiB`). Units are binary multiples: `1M` = `1MB` = `1MiB` = 1,048,576 bytes;
/// a fraction is rounded down to whole bytes. Zero and counts beyond 2^64 - 1 are refused.
/// `--limit-rate` and `--max-size` both take this form.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    const UNITS: &str = "use a number of bytes, or one with K, M, G or T (binary: 1M = 1 MiB), \
                         e.g. 512K, 10MB, 1.5G";
    let t = text.trim();
    let number_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(number_end);
    let shift = match unit.trim_start().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{text:?} has an unknown unit: {UNITS}")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    // At most 9 decimals: exact for every unit up to T (2^40 * 10^9 < 2^128).
    let well_formed = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() <= 9
        && !number.ends_with('.');
    if !well_formed {
        return Err(format!("{text:?} is not a byte count: {UNITS}"));
    }
    if shift == 0 && !fraction.is_empty() {
        return Err(format!(
            "{text:?}: a byte count without a unit is a whole number"
        ));
    }
    let whole: u128 = whole
        .parse()
        .map_err(|_| format!("{text:?} is out of range"))?;
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction
            .parse()
            .map_err(|_| format!("{text:?} is not a byte count: {UNITS}"))?
    };
    let scale = 10u128.pow(fraction.len() as u32);
    let bytes = whole
        .checked_mul(1 << shift)
        .and_then(|w| w.checked_add(fraction_value * (1u128 << shift) / scale));
    match bytes.map(u64::try_from) {
        Some(Ok(0)) => Err(format!("{text:?}: the count must be above zero")),
        Some(Ok(v)) => Ok(v),
        _ => Err(format!("{text:?} is out of range (at most 16 EiB)")),
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

    #[test]
    fn parse_bytes_suffix_forms_and_fractions_are_binary_multiples() {
        for (text, bytes) in [
            ("1M", 1 << 20),
            ("10MB", 10 << 20),
            ("10MiB", 10 << 20),
            ("10 mb", 10 << 20),
            ("1.5G", 3 << 29),
            ("1.5gib", 3 << 29),
            ("0.5K", 512),
            ("2T", 2 << 40),
            ("100B", 100),
            (" 7 ", 7),
            ("1.0000001K", 1024),
        ] {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text:?}");
        }
    }

    #[test]
    fn parse_bytes_malformed_or_out_of_range_is_an_error_naming_the_input() {
        for text in [
            "",
            "M",
            ".5M",
            "1.M",
            "1..5M",
            "1.5.5G",
            "1.5",
            "-1M",
            "+1M",
            "1e6",
            "0.0001B",
            "0K",
            "0.0000000001K",
            "1X",
            "1MBB",
            "1 M B",
            "16777216T",
            "18446744073709551616",
        ] {
            let err = parse_bytes(text).expect_err(text);
            assert!(err.contains(&format!("{text:?}")), "{text:?}: {err}");
        }
        assert_eq!(parse_bytes("18446744073709551615"), Ok(u64::MAX));
    }
}
