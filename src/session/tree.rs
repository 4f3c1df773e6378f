//! Shared trees: the empty directories of a group (`dirs` messages), sent to peers that
//! announced the `tree` feature and recreated where the recipient saves the group's
//! files. Files carry their own place in the tree (`offer.path`).

use std::collections::HashMap;
use std::path::PathBuf;

use super::Session;
use crate::events::Event;
use crate::proto::control::{ControlMessage, MAX_CONTROL_MESSAGE, MAX_PATH_DEPTH};
use crate::proto::names::sanitize_relative_path;
use crate::transfer;

/// Most empty directories kept for the groups offered to us, over all senders: a
/// stranger cannot make us hold more.
pub(super) const MAX_RECEIVED_DIRS: usize = 100_000;
/// Bytes of paths in one `dirs` message at most (well inside the control-message limit).
const DIRS_MESSAGE_BYTES: usize = MAX_CONTROL_MESSAGE - 1024;

/// The empty directories of one group offered to us.
#[derive(Debug, Default)]
pub(super) struct ReceivedTree {
    paths: Vec<String>,
    /// Directories the group's files are saved into (where its directories go too).
    targets: Vec<PathBuf>,
}

impl Session {
    /// Register the empty directories of a group we share (sent with its offers).
    pub(super) fn register_tree(&mut self, group: uuid::Uuid, dirs: Vec<String>) {
        if !dirs.is_empty() {
            self.shared_trees.insert(group, dirs);
        }
    }

    /// Send `peer` the empty directories of every live group it may receive, if it
    /// takes them (after its `hello`).
    pub(super) fn send_tree_dirs_to(&mut self, peer: &str) {
        let now = self.now_ms();
        self.shared_trees.retain(|group, _| {
            self.shares
                .values()
                .any(|s| s.group.id == *group && s.state.is_alive(now))
        });
        let groups: Vec<uuid::Uuid> = self
            .shared_trees
            .keys()
            .copied()
            .filter(|g| {
                self.shares.values().any(|s| {
                    s.group.id == *g && s.state.audience().includes(peer) && s.state.is_alive(now)
                })
            })
            .collect();
        for group in groups {
            self.send_group_dirs(peer, group);
        }
    }

    /// Send one group's empty directories to `peer` if it announced `tree`.
    pub(super) fn send_group_dirs(&mut self, peer: &str, group: uuid::Uuid) {
        if !self
            .links
            .get(peer)
            .is_some_and(|l| l.tree && l.control_open)
        {
            return;
        }
        let Some(dirs) = self.shared_trees.get(&group) else {
            return;
        };
        let mut batches: Vec<Vec<String>> = vec![Vec::new()];
        let mut bytes = 0;
        for dir in dirs {
            // JSON quoting and escapes can double a path's size.
            let cost = 2 * dir.len() + 8;
            if bytes + cost > DIRS_MESSAGE_BYTES && !batches.last().is_some_and(Vec::is_empty) {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += cost;
            if let Some(b) = batches.last_mut() {
                b.push(dir.clone());
            }
        }
        for paths in batches.into_iter().filter(|b| !b.is_empty()) {
            self.send_control(peer, ControlMessage::Dirs { group, paths });
        }
    }

    /// `peer` sent empty directories of one of its groups.
    pub(super) fn on_tree_dirs(&mut self, peer: &str, group: uuid::Uuid, paths: Vec<String>) {
        let held: usize = self.received_trees.values().map(|t| t.paths.len()).sum();
        if held + paths.len() > MAX_RECEIVED_DIRS {
            tracing::warn!(%peer, "too many empty directories offered; ignoring more");
            return;
        }
        let tree = self
            .received_trees
            .entry((peer.to_string(), group))
            .or_default();
        tree.paths.extend(paths.iter().cloned());
        let targets = tree.targets.clone();
        for base in targets {
            self.make_tree_dirs(peer, &base, &paths);
        }
    }

    /// A file of `peer`'s group `group` is being saved into `base`: the group's empty
    /// directories go there too (once per directory).
    pub(super) fn tree_target(&mut self, peer: &str, group: uuid::Uuid, base: PathBuf) {
        let tree = self
            .received_trees
            .entry((peer.to_string(), group))
            .or_default();
        if tree.targets.contains(&base) {
            return;
        }
        tree.targets.push(base.clone());
        let paths = tree.paths.clone();
        self.make_tree_dirs(peer, &base, &paths);
    }

    /// Forget the trees offered by `peer` (it left).
    pub(super) fn forget_trees_of(&mut self, peer: &str) {
        self.received_trees.retain(|(sender, _), _| sender != peer);
    }

    fn make_tree_dirs(&mut self, peer: &str, base: &std::path::Path, paths: &[String]) {
        for path in paths {
            let parts = sanitize_relative_path(path, MAX_PATH_DEPTH);
            if let Err(e) = transfer::tree_dir(base, &parts) {
                tracing::warn!(%peer, "cannot create a directory of a shared tree: {e}");
                self.emit(Event::Error {
                    peer: Some(peer.to_string()),
                    code: e.code(),
                    message: format!("cannot create an empty directory of the share: {e}"),
                });
            }
        }
    }
}

/// The received trees, by sender and group.
pub(super) type ReceivedTrees = HashMap<(String, uuid::Uuid), ReceivedTree>;
