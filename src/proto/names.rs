//! Sanitizing file names offered by peers (ARCHITECTURE.md §9).
//!
//! The result is always a single, non-empty path component that is not `.`/`..`, contains
//! no separators, control characters, invisible format or bidi characters, or characters
//! Windows forbids, does not start with `.`, `-` or a space nor end with `.` or a space,
//! is not a reserved device name in any of its forms, and is at most
//! [`MAX_SANITIZED_BYTES`] bytes long.

/// Longest sanitized name, in bytes (most file systems allow 255).
pub const MAX_SANITIZED_BYTES: usize = 200;
/// Name used when nothing usable is left.
pub const FALLBACK_NAME: &str = "download";

/// Windows device names: reserved whatever the extension (`nul.txt`) and case.
const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$", "COM0", "COM1", "COM2", "COM3",
    "COM4", "COM5", "COM6", "COM7", "COM8", "COM9", "COM¹", "COM²", "COM³", "LPT0", "LPT1", "LPT2",
    "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9", "LPT¹", "LPT²", "LPT³",
];

/// Invisible characters that change how the text around them is shown: bidi
/// embeddings, overrides and isolates (U+202E shows `invoice\u{202e}fdp.exe` as
/// "invoiceexe.pdf"), zero-width characters and marks, the soft hyphen, the byte-order
/// mark, interlinear annotation marks.
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}'
            | '\u{061c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

/// Turn an untrusted offered name into a safe single file name.
///
/// Only the last path component is kept (`a/b` → `b`, `/etc/passwd` → `passwd`), so that
/// the name still says what the file is; what cannot be made safe becomes `download`.
pub fn sanitize_file_name(offered: &str) -> String {
    let last = offered
        .rsplit(['/', '\\'])
        .find(|part| !part.trim().is_empty())
        .unwrap_or("");
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_control()
                || is_invisible_format(c)
                || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*')
            {
                '_'
            } else {
                c
            }
        })
        .collect();
    // Leading dots would make hidden files or `..`; trailing dots and spaces are
    // stripped by Windows. The cut comes first, so that nothing checked below can be
    // exposed by it (a reserved stem under trailing spaces, `CON` + 197 spaces + `x`).
    let mut name = trim_edges(&name).to_string();
    if name.len() > MAX_SANITIZED_BYTES {
        name = trim_edges(&truncate_keeping_extension(&name, MAX_SANITIZED_BYTES)).to_string();
    }
    if name.is_empty() {
        return FALLBACK_NAME.to_string();
    }
    // A leading dash reads as an option to the commands the name is passed to; a device
    // name opens the device on Windows. Either gets a `_` in front (then the name starts
    // with `_`, so neither rule applies again).
    let stem = name
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end()
        .to_uppercase();
    if name.starts_with('-') || RESERVED.contains(&stem.as_str()) {
        name.insert(0, '_');
        if name.len() > MAX_SANITIZED_BYTES {
            name = truncate_keeping_extension(&name, MAX_SANITIZED_BYTES)
                .trim_end_matches(is_edge)
                .to_string();
        }
    }
    name
}

/// Turn an untrusted relative path of a shared tree (`photos/2024/a.jpg`) into safe
/// components, the last one the file's name: separators are `/` and `\`; empty, `.` and
/// `..` components are dropped (so nothing can climb out of the directory the tree is
/// saved in, and an absolute path becomes relative); every other component is sanitized
/// by [`sanitize_file_name`]; at most `max_depth` components are kept (the first
/// `max_depth - 1` directories and the last). Never empty.
pub fn sanitize_relative_path(offered: &str, max_depth: usize) -> Vec<String> {
    let mut parts: Vec<String> = offered
        .split(['/', '\\'])
        .filter(|p| !matches!(p.trim(), "" | "." | ".."))
        .map(sanitize_file_name)
        .collect();
    let max_depth = max_depth.max(1);
    if parts.len() > max_depth {
        let last = parts.pop();
        parts.truncate(max_depth - 1);
        parts.extend(last);
    }
    if parts.is_empty() {
        parts.push(FALLBACK_NAME.to_string());
    }
    parts
}

/// Where an offered file is saved below the download directory, before a taken name gets
/// a number: the sanitized directories of its place in a tree (`path`; none for a file
/// shared on its own) and its sanitized name. What saves a download and what looks for
/// an identical copy both ask this, so they agree.
pub fn saved_place(path: Option<&str>, name: &str) -> (Vec<String>, String) {
    match path {
        Some(path) => {
            let mut parts = sanitize_relative_path(path, crate::proto::control::MAX_PATH_DEPTH);
            let file = parts.pop().unwrap_or_else(|| sanitize_file_name(name));
            (parts, file)
        }
        None => (Vec::new(), sanitize_file_name(name)),
    }
}

/// Characters a name may not start or end with: dots, and any kind of space (a name of
/// a hair space alone looks empty).
fn is_edge(c: char) -> bool {
    c == '.' || c.is_whitespace()
}

fn trim_edges(name: &str) -> &str {
    name.trim_start_matches(is_edge).trim_end_matches(is_edge)
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
    fn sanitize_deceptive_and_reserved_forms_are_neutralised() {
        let cases = [
            ("invoice\u{202e}fdp.exe", "invoice_fdp.exe"),
            ("a\u{200b}b", "a_b"),
            ("-rf", "_-rf"),
            ("--help.txt", "_--help.txt"),
            ("conin$", "_conin$"),
            ("CONOUT$.log", "_CONOUT$.log"),
            ("COM¹.log", "_COM¹.log"),
            ("lpt³", "_lpt³"),
            ("com0.txt", "_com0.txt"),
            ("CON .txt", "_CON .txt"),
            ("console.txt", "console.txt"),
            // Found by the `names` fuzz target.
            ("\u{200a}.", FALLBACK_NAME),
            ("\u{a0}..", FALLBACK_NAME),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize_file_name(input), want, "input {input:?}");
        }
    }

    #[test]
    fn sanitize_reserved_stem_exposed_by_truncation_is_neutralised() {
        // Found by the `names` fuzz target: the cut to 200 bytes and the trim after it
        // left `CON`.
        let input = format!("CON{}x", " ".repeat(197));
        let out = sanitize_file_name(&input);
        assert_eq!(out, "_CON");
        assert_eq!(sanitize_file_name(&out), out);
    }

    proptest::proptest! {
        #[test]
        fn sanitize_arbitrary_input_keeps_every_guarantee(input in ".{0,300}") {
            let out = sanitize_file_name(&input);
            proptest::prop_assert!(!out.is_empty() && out.len() <= MAX_SANITIZED_BYTES);
            proptest::prop_assert!(out != "." && out != "..");
            proptest::prop_assert!(
                !out.chars().any(|c| c == '/' || c == '\\' || c.is_control() || is_invisible_format(c)
                    || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*')),
                "{:?} -> {:?}", input, out
            );
            proptest::prop_assert!(!out.starts_with(is_edge) && !out.starts_with('-') && !out.ends_with(is_edge));
            let stem = out.split('.').next().unwrap_or("").trim_end().to_uppercase();
            proptest::prop_assert!(!RESERVED.contains(&stem.as_str()), "{:?}", out);
            // Sanitizing is idempotent: a saved name is already safe.
            proptest::prop_assert_eq!(sanitize_file_name(&out), out);
        }
    }

    #[test]
    fn sanitize_relative_path_hostile_paths_stay_inside() {
        let cases: [(&str, &[&str]); 9] = [
            ("photos/2024/a.jpg", &["photos", "2024", "a.jpg"]),
            ("../../etc/passwd", &["etc", "passwd"]),
            ("/abs/x", &["abs", "x"]),
            ("a/../b", &["a", "b"]),
            ("a\\..\\..\\b", &["a", "b"]),
            ("./././", &[FALLBACK_NAME]),
            ("", &[FALLBACK_NAME]),
            ("dir/CON/.hidden", &["dir", "_CON", "hidden"]),
            ("a/\u{202e}gpj.exe/b", &["a", "_gpj.exe", "b"]),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize_relative_path(input, 64), want, "input {input:?}");
        }
    }

    #[test]
    fn sanitize_relative_path_too_deep_keeps_last_component() {
        let deep = format!("{}file.txt", "d/".repeat(100));
        let parts = sanitize_relative_path(&deep, 4);
        assert_eq!(parts, ["d", "d", "d", "file.txt"]);
    }

    proptest::proptest! {
        #[test]
        fn sanitize_relative_path_arbitrary_input_components_are_safe_names(input in ".{0,400}") {
            let parts = sanitize_relative_path(&input, 8);
            proptest::prop_assert!(!parts.is_empty() && parts.len() <= 8);
            for part in &parts {
                proptest::prop_assert_eq!(&sanitize_file_name(part), part);
            }
        }
    }

    #[test]
    fn saved_place_tree_path_gives_dirs_and_name_lone_file_its_name() {
        assert_eq!(
            saved_place(Some("photos/../2024/.a.jpg"), "ignored"),
            (
                vec!["photos".to_string(), "2024".to_string()],
                "a.jpg".to_string()
            )
        );
        assert_eq!(
            saved_place(None, "../x.txt"),
            (Vec::new(), "x.txt".to_string())
        );
    }

    #[test]
    fn numbered_name_inserts_counter_before_extension() {
        assert_eq!(numbered_name("a.txt", 0), "a.txt");
        assert_eq!(numbered_name("a.txt", 2), "a (2).txt");
        assert_eq!(numbered_name("Makefile", 1), "Makefile (1)");
    }
}
