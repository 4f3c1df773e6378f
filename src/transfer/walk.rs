//! The paths given to [`crate::Peer::send_paths`], walked into what is shared: regular
//! files with their place in a tree, the empty directories, and what is skipped and why.
//!
//! A path named on the command line is taken as it is, through a symbolic link if it is
//! one (the user named it). Inside a directory, symbolic links are skipped unless
//! [`WalkOptions::follow_symlinks`] is set (then a directory reached twice is skipped, so
//! a link cycle ends), and special files (FIFOs, sockets, devices) are always skipped:
//! reading a FIFO would block, a device has no end.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::proto::control::{MAX_LABEL_BYTES, MAX_PATH_BYTES, MAX_PATH_DEPTH};

/// How to walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkOptions {
    /// Follow symbolic links inside directories.
    pub follow_symlinks: bool,
    /// Most files in one share (5092 beyond).
    pub max_files: usize,
}

/// One regular file to share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkedFile {
    /// Where it is on disk.
    pub path: PathBuf,
    /// Its place in the shared tree (`photos/2024/a.jpg`), `None` for a file named on
    /// its own.
    pub tree_path: Option<String>,
    /// The owner may execute it.
    pub executable: bool,
}

/// Something inside a shared directory that is not shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
}

/// Why an entry is not shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A symbolic link (not followed).
    Symlink,
    /// A FIFO, socket or device.
    Special,
    /// A directory reached a second time through links.
    Cycle,
    /// It could not be read (the error).
    Unreadable(String),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Symlink => f.write_str("symbolic link, not followed"),
            SkipReason::Special => f.write_str("not a regular file or directory"),
            SkipReason::Cycle => f.write_str("directory already shared through a link"),
            SkipReason::Unreadable(e) => write!(f, "cannot be read: {e}"),
        }
    }
}

/// The result of a walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walked {
    pub files: Vec<WalkedFile>,
    /// Directories with no file below them, as tree paths (recreated by recipients).
    pub dirs: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// What the share is called (`photos/`, `photos/, notes.txt`), `None` for one file.
    pub label: Option<String>,
}

/// Walk `paths` in order; directories in name order.
pub fn walk(paths: &[PathBuf], options: WalkOptions) -> Result<Walked> {
    let mut walker = Walker {
        options,
        out: Walked::default(),
        seen_dirs: HashSet::new(),
    };
    let mut labels = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| access_error(path, &e))?;
        if meta.is_file() {
            walker.add_file(path, None, &meta)?;
            labels.push(display_name(path));
        } else if meta.is_dir() {
            let root = root_name(path);
            labels.push(format!("{root}/"));
            walker.remember_dir(&meta);
            walker.walk_dir(path, &root, 1)?;
        } else {
            return Err(Error::StorageAccessDenied(format!(
                "{} is not a regular file or a directory",
                path.display()
            )));
        }
    }
    if walker.out.files.is_empty() {
        return Err(Error::InvalidArgument(
            "nothing to send: no regular file in the given paths".into(),
        ));
    }
    let single_file = paths.len() == 1 && walker.out.files[0].tree_path.is_none();
    walker.out.label = (!single_file).then(|| bounded_label(&labels));
    Ok(walker.out)
}

struct Walker {
    options: WalkOptions,
    out: Walked,
    /// Directories entered, by device and inode (a link cycle ends at the second visit).
    seen_dirs: HashSet<(u64, u64)>,
}

impl Walker {
    fn add_file(
        &mut self,
        path: &Path,
        tree_path: Option<String>,
        meta: &std::fs::Metadata,
    ) -> Result<()> {
        if self.out.files.len() >= self.options.max_files {
            return Err(Error::TooManyFiles {
                count: self.out.files.len() + 1,
                max: self.options.max_files,
            });
        }
        self.out.files.push(WalkedFile {
            path: path.to_path_buf(),
            tree_path,
            executable: is_executable(meta),
        });
        Ok(())
    }

    /// Whether the directory is new (not entered before).
    fn remember_dir(&mut self, meta: &std::fs::Metadata) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            self.seen_dirs.insert((meta.dev(), meta.ino()))
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            true
        }
    }

    /// Walk directory `dir`, whose tree path is `rel` at `depth` components.
    fn walk_dir(&mut self, dir: &Path, rel: &str, depth: usize) -> Result<()> {
        let before = (self.out.files.len(), self.out.dirs.len());
        let mut entries = match std::fs::read_dir(dir) {
            Ok(list) => list
                .filter_map(|e| match e {
                    Ok(e) => Some(e),
                    Err(err) => {
                        self.out.skipped.push(Skipped {
                            path: dir.to_path_buf(),
                            reason: SkipReason::Unreadable(err.to_string()),
                        });
                        None
                    }
                })
                .collect::<Vec<_>>(),
            Err(e) => {
                self.out.skipped.push(Skipped {
                    path: dir.to_path_buf(),
                    reason: SkipReason::Unreadable(e.to_string()),
                });
                return Ok(());
            }
        };
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = format!("{rel}/{name}");
            if child.len() > MAX_PATH_BYTES || depth + 1 > MAX_PATH_DEPTH {
                return Err(Error::InvalidArgument(format!(
                    "{} is too deep or too long to share (at most {MAX_PATH_DEPTH} levels and \
                     {MAX_PATH_BYTES} bytes)",
                    path.display()
                )));
            }
            let link = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.out.skipped.push(Skipped {
                        path,
                        reason: SkipReason::Unreadable(e.to_string()),
                    });
                    continue;
                }
            };
            let meta = if link.file_type().is_symlink() {
                if !self.options.follow_symlinks {
                    self.out.skipped.push(Skipped {
                        path,
                        reason: SkipReason::Symlink,
                    });
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(m) => m,
                    Err(e) => {
                        self.out.skipped.push(Skipped {
                            path,
                            reason: SkipReason::Unreadable(e.to_string()),
                        });
                        continue;
                    }
                }
            } else {
                link
            };
            if meta.is_file() {
                self.add_file(&path, Some(child), &meta)?;
            } else if meta.is_dir() {
                if !self.remember_dir(&meta) {
                    self.out.skipped.push(Skipped {
                        path,
                        reason: SkipReason::Cycle,
                    });
                    continue;
                }
                self.walk_dir(&path, &child, depth + 1)?;
            } else {
                self.out.skipped.push(Skipped {
                    path,
                    reason: SkipReason::Special,
                });
            }
        }
        // Nothing below it is shared: recreate it as it is.
        if (self.out.files.len(), self.out.dirs.len()) == before {
            self.out.dirs.push(rel.to_string());
        }
        Ok(())
    }
}

/// The name a directory is shared under: its last component, or that of its canonical
/// form for `.`, `..` and `/`-ended paths.
fn root_name(path: &Path) -> String {
    let named = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..");
    named
        .or_else(|| {
            std::fs::canonicalize(path)
                .ok()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "root".into())
}

/// The name a file named on its own is offered under.
pub fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
}

fn bounded_label(labels: &[String]) -> String {
    let mut label = labels.join(", ");
    if label.len() > MAX_LABEL_BYTES {
        let mut cut = MAX_LABEL_BYTES - '…'.len_utf8();
        while !label.is_char_boundary(cut) {
            cut -= 1;
        }
        label.truncate(cut);
        label.push('…');
    }
    label
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o100 != 0
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

fn access_error(path: &Path, e: &std::io::Error) -> Error {
    Error::StorageAccessDenied(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: WalkOptions = WalkOptions {
        follow_symlinks: false,
        max_files: 100,
    };

    fn tree(dir: &Path) -> PathBuf {
        let root = dir.join("photos");
        std::fs::create_dir_all(root.join("2024/empty")).unwrap();
        std::fs::create_dir_all(root.join("nothing")).unwrap();
        std::fs::write(root.join("b.txt"), b"b").unwrap();
        std::fs::write(root.join("2024/a.jpg"), b"a").unwrap();
        root
    }

    #[test]
    fn walk_tree_lists_files_in_name_order_and_empty_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = tree(dir.path());
        let w = walk(std::slice::from_ref(&root), OPTIONS).unwrap();
        let paths: Vec<_> = w.files.iter().map(|f| f.tree_path.clone()).collect();
        assert_eq!(
            paths,
            [
                Some("photos/2024/a.jpg".into()),
                Some("photos/b.txt".into())
            ]
        );
        assert_eq!(w.dirs, ["photos/2024/empty", "photos/nothing"]);
        assert_eq!(w.label.as_deref(), Some("photos/"));
        assert!(w.skipped.is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn walk_symlinks_and_fifos_skipped_with_reason_unless_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = tree(dir.path());
        std::os::unix::fs::symlink(root.join("b.txt"), root.join("link.txt")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("loop")).unwrap();
        let fifo = root.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let w = walk(std::slice::from_ref(&root), OPTIONS).unwrap();
        let skipped: Vec<_> = w
            .skipped
            .iter()
            .map(|s| (s.path.file_name().unwrap().to_owned(), s.reason.clone()))
            .collect();
        assert_eq!(
            skipped,
            [
                ("fifo".into(), SkipReason::Special),
                ("link.txt".into(), SkipReason::Symlink),
                ("loop".into(), SkipReason::Symlink),
            ]
        );
        assert_eq!(w.files.len(), 2);

        let followed = walk(
            std::slice::from_ref(&root),
            WalkOptions {
                follow_symlinks: true,
                ..OPTIONS
            },
        )
        .unwrap();
        let paths: Vec<_> = followed
            .files
            .iter()
            .filter_map(|f| f.tree_path.clone())
            .collect();
        assert!(paths.contains(&"photos/link.txt".to_string()), "{paths:?}");
        assert!(
            followed
                .skipped
                .iter()
                .any(|s| s.reason == SkipReason::Cycle && s.path.ends_with("loop"))
        );
    }

    #[cfg(unix)]
    #[test]
    fn walk_executable_bit_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = tree(dir.path());
        let script = root.join("run.sh");
        std::fs::write(&script, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let w = walk(std::slice::from_ref(&root), OPTIONS).unwrap();
        let exec: Vec<_> = w
            .files
            .iter()
            .filter(|f| f.executable)
            .filter_map(|f| f.tree_path.clone())
            .collect();
        assert_eq!(exec, ["photos/run.sh"]);
    }

    #[test]
    fn walk_single_file_has_no_label_and_no_tree_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, b"x").unwrap();
        let w = walk(std::slice::from_ref(&file), OPTIONS).unwrap();
        assert_eq!(w.label, None);
        assert_eq!(w.files[0].tree_path, None);
    }

    #[test]
    fn walk_only_empty_dirs_is_invalid_too_many_files_is_5092() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = walk(std::slice::from_ref(&empty), OPTIONS).unwrap_err();
        assert_eq!(e.code(), crate::error::codes::INVALID_ARGUMENT);

        let root = tree(dir.path());
        let e = walk(
            &[root],
            WalkOptions {
                max_files: 1,
                ..OPTIONS
            },
        )
        .unwrap_err();
        assert_eq!(e.code(), crate::error::codes::TOO_MANY_FILES);
    }

    #[test]
    fn walk_missing_path_is_5089() {
        let e = walk(&[PathBuf::from("/nonexistent/peershare")], OPTIONS).unwrap_err();
        assert_eq!(e.code(), crate::error::codes::STORAGE_ACCESS_DENIED);
    }
}
