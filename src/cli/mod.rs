//! Subcommands of the `peershare` binary and their shared output helpers.

pub mod output;
pub mod recv;
pub mod send;
pub mod signal;

/// `error CODE: message` for any error; library errors keep their stable code.
pub fn describe(e: &anyhow::Error) -> String {
    let code = e
        .chain()
        .find_map(|c| c.downcast_ref::<peershare::Error>())
        .map(|pe| pe.code())
        .unwrap_or(peershare::codes::INVALID_ARGUMENT);
    format!("error {code}: {e:#}")
}

pub use peershare::signaling::cli::lan_ip;

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
