//! Groups: the files shared together in one share (one offer group, e.g. a tree), and
//! when a group has ended as a whole: every file of it ended once, however it ended.
//! Sans-IO: files and their ends in, the tally of a group out once its last file ended.

use std::collections::{HashMap, HashSet};

use super::ids::FileId;

/// How one file of a group ended, for the group's tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileEnd {
    /// Delivered or downloaded and verified (or already there: an identical copy).
    Completed,
    /// Failed (or, for an offer to us, withdrawn by its sender before we had it).
    Failed,
    /// Cancelled (or, for an offer to us, declined).
    Cancelled,
}

/// A group that ended: how many of its files ended which way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEnded {
    pub id: uuid::Uuid,
    pub label: Option<String>,
    /// Who shared it (a client ID; empty for our own shares).
    pub sender: String,
    pub files: u32,
    pub completed: u32,
    pub failed: u32,
    pub cancelled: u32,
}

#[derive(Debug)]
struct Tally {
    ended: GroupEnded,
    members: HashSet<FileId>,
    done: HashSet<FileId>,
}

/// The groups of one side (our shares, or the offers to us), keyed by group ID and
/// sender: a group ends once `count` files of it (the count its first file announced)
/// have each ended once. A file's later ends (a retried download) do not count again;
/// a group that ended is forgotten.
#[derive(Debug, Default)]
pub struct Groups {
    tallies: HashMap<(String, uuid::Uuid), Tally>,
    of_file: HashMap<FileId, (String, uuid::Uuid)>,
}

impl Groups {
    /// File `file_id` belongs to group `id` of `sender`, which has `count` files in all.
    /// A file added twice, or to a group that already has `count` files, is ignored.
    pub fn add(
        &mut self,
        sender: &str,
        id: uuid::Uuid,
        count: u32,
        label: Option<&str>,
        file_id: FileId,
    ) {
        if self.of_file.contains_key(&file_id) {
            return;
        }
        let key = (sender.to_string(), id);
        let tally = self.tallies.entry(key.clone()).or_insert_with(|| Tally {
            ended: GroupEnded {
                id,
                label: label.map(str::to_string),
                sender: sender.to_string(),
                files: count,
                completed: 0,
                failed: 0,
                cancelled: 0,
            },
            members: HashSet::new(),
            done: HashSet::new(),
        });
        if tally.members.len() as u64 >= u64::from(tally.ended.files) {
            return;
        }
        tally.members.insert(file_id);
        self.of_file.insert(file_id, key);
    }

    /// File `file_id` ended as `end`: the group it belongs to, if this was its last
    /// file to end.
    pub fn end(&mut self, file_id: FileId, end: FileEnd) -> Option<GroupEnded> {
        let key = self.of_file.get(&file_id)?.clone();
        let tally = self.tallies.get_mut(&key)?;
        if !tally.done.insert(file_id) {
            return None;
        }
        match end {
            FileEnd::Completed => tally.ended.completed += 1,
            FileEnd::Failed => tally.ended.failed += 1,
            FileEnd::Cancelled => tally.ended.cancelled += 1,
        }
        if (tally.done.len() as u64) < u64::from(tally.ended.files) {
            return None;
        }
        let tally = self.tallies.remove(&key)?;
        for f in &tally.members {
            self.of_file.remove(f);
        }
        Some(tally.ended)
    }

    /// Forget the groups of `sender` (it left for good).
    pub fn forget(&mut self, sender: &str) {
        self.tallies.retain(|(s, _), _| s != sender);
        self.of_file.retain(|_, (s, _)| s != sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_end_once_every_file_ended_once_with_the_tally() {
        let mut g = Groups::default();
        let id = uuid::Uuid::new_v4();
        let files: Vec<FileId> = (0..3).map(|_| FileId::new()).collect();
        for f in &files {
            g.add("alice", id, 3, Some("photos/"), *f);
        }
        assert_eq!(g.end(files[0], FileEnd::Completed), None);
        // A second end of the same file does not count.
        assert_eq!(g.end(files[0], FileEnd::Failed), None);
        assert_eq!(g.end(files[1], FileEnd::Failed), None);
        let ended = g
            .end(files[2], FileEnd::Cancelled)
            .expect("the group ended");
        assert_eq!(
            ended,
            GroupEnded {
                id,
                label: Some("photos/".into()),
                sender: "alice".into(),
                files: 3,
                completed: 1,
                failed: 1,
                cancelled: 1,
            }
        );
        // Forgotten once ended.
        assert_eq!(g.end(files[2], FileEnd::Completed), None);
        assert!(g.tallies.is_empty() && g.of_file.is_empty());
    }

    #[test]
    fn groups_not_all_files_offered_never_end_and_extra_files_are_ignored() {
        let mut g = Groups::default();
        let id = uuid::Uuid::new_v4();
        let (a, b, extra) = (FileId::new(), FileId::new(), FileId::new());
        g.add("bob", id, 2, None, a);
        g.add("bob", id, 2, None, b);
        g.add("bob", id, 2, None, extra);
        assert_eq!(g.end(extra, FileEnd::Completed), None);
        assert_eq!(g.end(a, FileEnd::Completed), None);
        assert!(g.end(b, FileEnd::Completed).is_some());

        let mut g = Groups::default();
        let c = FileId::new();
        g.add("bob", id, 5, None, c);
        assert_eq!(g.end(c, FileEnd::Completed), None);
    }

    #[test]
    fn groups_same_id_from_two_senders_are_two_groups_and_forget_drops_one() {
        let mut g = Groups::default();
        let id = uuid::Uuid::new_v4();
        let (a, b) = (FileId::new(), FileId::new());
        g.add("alice", id, 1, None, a);
        g.add("mallory", id, 1, None, b);
        g.forget("mallory");
        assert_eq!(g.end(b, FileEnd::Completed), None);
        assert_eq!(
            g.end(a, FileEnd::Completed).map(|e| e.sender),
            Some("alice".into())
        );
    }
}
