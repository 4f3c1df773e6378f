//! Sanitizing file names offered by peers (ARCHITECTURE.md §9).
//!
//! The result is always a single, non-empty path component that is not `.`/`..`, contains
//! no separators, control characters or characters Windows forbids, is not a reserved
//! device name, and is at most [`MAX_SANITIZED_BYTES`] bytes long.

/// Longest sanitized name, in bytes (most file systems allow 255).
pub const MAX_SANITIZED_BYTES: usize = 200;
/// Name used when nothing usable is left.
pub const FALLBACK_NAME: &str = "download";

const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Turn an untrusted offered name into a safe single file name.
///
/// Only the last path component is kept (`a/b` → `b`, `/etc/passwd` → `passwd`), so that
/// the name still says what the file is; what cannot be made safe becomes `download`.
pub fn sanitize_file_name(offered: &str) -> String {
    let last = offered
        .rsplit(['/', '\\'])
        .find(|part| !part.trim().is_empty())
        .unwrap_or("");
    let mut name: String = last
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    // Leading dots would make hidden files or `..`; trailing dots and spaces are
    // stripped by Windows.
    name = name
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' '])
        .to_string();
    let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    if RESERVED.contains(&stem.trim()) {
        name.insert(0, '_');
    }
    if name.len() > MAX_SANITIZED_BYTES {
        name = truncate_keeping_extension(&name, MAX_SANITIZED_BYTES);
    }
    if name.is_empty() {
        FALLBACK_NAME.to_string()
    } else {
        name
    }
}

fn truncate_keeping_extension(name: &str, max: usize) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= 16 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let mut cut = max.saturating_sub(ext.len());
    while cut > 0 && !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &stem[..cut.min(stem.len())], ext)
}

/// The `n`-th alternative for a name that is taken: `a.txt` → `a (1).txt`.
pub fn numbered_name(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_string();
    }
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{} ({n}){}", &name[..i], &name[i..]),
        _ => format!("{name} ({n})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_hostile_names_yield_single_safe_component() {
        let cases = [
            ("../x", "x"),
            ("/etc/passwd", "passwd"),
            ("a/b", "b"),
            ("..", FALLBACK_NAME),
            ("", FALLBACK_NAME),
            (".", FALLBACK_NAME),
            ("..\\..\\windows\\system32", "system32"),
            ("foo/..", FALLBACK_NAME),
            ("CON", "_CON"),
            ("nul.txt", "_nul.txt"),
            ("a\0b\nc", "a_b_c"),
            (".bashrc", "bashrc"),
            ("report.pdf", "report.pdf"),
            ("   ", FALLBACK_NAME),
            ("dir/", "dir"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize_file_name(input), want, "input {input:?}");
        }
    }

    #[test]
    fn sanitize_long_name_is_truncated_on_char_boundary_keeping_extension() {
        let long = format!("{}.tar.gz", "é".repeat(300));
        let out = sanitize_file_name(&long);
        assert!(out.len() <= MAX_SANITIZED_BYTES);
        assert!(out.ends_with(".gz"));
    }

    #[test]
    fn sanitize_never_returns_separator_or_dotdot() {
        for input in ["../../..", "a/../b", "\\\\server\\share", "x/.../y", "...."] {
            let out = sanitize_file_name(input);
            assert!(!out.contains('/') && !out.contains('\\'), "{out}");
            assert!(out != ".." && out != "." && !out.is_empty(), "{out}");
        }
    }

    #[test]
    fn numbered_name_inserts_counter_before_extension() {
        assert_eq!(numbered_name("a.txt", 0), "a.txt");
        assert_eq!(numbered_name("a.txt", 2), "a (2).txt");
        assert_eq!(numbered_name("Makefile", 1), "Makefile (1)");
    }
}
