//! Listing one side: every entry below a root, with one `lstat` each, and every error.
//!
//! The walk is depth-first with each directory's children sorted by name bytes, which is the
//! path order the planner's merge needs. Each directory is read once, and its children are
//! stat'ed relative to the open directory (`fstatat`, no path walk per entry) in parallel on the
//! rayon pool, so one large tree uses every core while SRC and DST are also scanned at the same
//! time. Symlinks are recorded as links (target text read, never followed); a directory the
//! filter leaves out is not entered. An entry that cannot be listed or stat'ed becomes an error
//! in [`Tree::errors`], never an empty directory: the planner withholds deletions when the
//! source listing is incomplete. An entry that disappears while the scan runs is simply not
//! there.

use std::ffi::OsString;
use std::fs::{self, DirEntry, Metadata};
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tracing::debug;

use crate::entry::{mode_of, Mtime, RootMeta, Tag, Tree};
use crate::error::{Error, Op};
use crate::filter::Filter;

/// Directories with fewer children are stat'ed on the calling thread.
const PARALLEL_FROM: usize = 16;

/// List everything below `root` that the filter allows. A missing root gives an empty tree
/// with `root: None`.
pub fn scan(root: &Path, filter: &Filter) -> Tree {
    let mut tree = Tree::default();
    let root_meta = match fs::metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return tree,
        Err(e) => {
            tree.errors.push(Error::new(Op::Stat, root, e));
            return tree;
        }
    };
    tree.root = Some(RootMeta {
        mtime: Mtime::of(&root_meta),
        mode: mode_of(&root_meta),
    });
    let mut walker = Walker { root, filter, tree };
    walker.walk(root, &mut PathBuf::new());
    let mut tree = walker.tree;
    tree.shrink();
    debug!(
        root = %root.display(),
        entries = tree.entries.len(),
        errors = tree.errors.len(),
        "scanned"
    );
    tree
}

struct Walker<'a> {
    root: &'a Path,
    filter: &'a Filter,
    tree: Tree,
}

/// One child of a directory, stat'ed.
struct Child {
    name: OsString,
    entry: DirEntry,
    meta: io::Result<Metadata>,
}

impl Walker<'_> {
    /// List directory `dir` (whose path below the root is `rel`) and everything below it.
    fn walk(&mut self, dir: &Path, rel: &mut PathBuf) {
        // Each name is fetched once: it is the sort key and then the path component.
        let mut entries = Vec::new();
        let listing = fs::read_dir(dir).and_then(|list| {
            for entry in list {
                let entry = entry?;
                entries.push((entry.file_name(), entry));
            }
            Ok(())
        });
        if let Err(e) = listing {
            // A directory that vanished since it was seen is simply gone; the root is not: a
            // root that cannot be listed is never taken for an empty one.
            if e.kind() != io::ErrorKind::NotFound || rel.as_os_str().is_empty() {
                self.tree.errors.push(Error::new(Op::ReadDir, dir, e));
            }
            if entries.is_empty() {
                return;
            }
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let stat = |(name, entry): (OsString, DirEntry)| {
            let meta = entry.metadata();
            Child { name, entry, meta }
        };
        let children: Vec<Child> = if entries.len() >= PARALLEL_FROM {
            entries.into_par_iter().with_min_len(8).map(stat).collect()
        } else {
            entries.into_iter().map(stat).collect()
        };
        for child in children {
            rel.push(&child.name);
            self.add(child, rel);
            rel.pop();
        }
    }

    /// Record one child and, for a directory, its contents.
    fn add(&mut self, child: Child, rel: &mut PathBuf) {
        let path = || self.root.join(&*rel);
        let meta = match child.meta {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                self.tree.errors.push(Error::new(Op::Stat, path(), e));
                return;
            }
        };
        let file_type = meta.file_type();
        let tag = if file_type.is_file() {
            Tag::File
        } else if file_type.is_dir() {
            Tag::Dir
        } else if file_type.is_symlink() {
            Tag::Symlink
        } else {
            debug_assert!(
                file_type.is_fifo()
                    || file_type.is_socket()
                    || file_type.is_block_device()
                    || file_type.is_char_device()
            );
            Tag::Special
        };
        if !self.filter.allows(rel, tag == Tag::Dir) {
            return;
        }
        let target = match tag {
            Tag::Symlink => match fs::read_link(child.entry.path()) {
                Ok(target) => Some(target),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) => {
                    self.tree.errors.push(Error::new(Op::ReadLink, path(), e));
                    return;
                }
            },
            _ => None,
        };
        self.tree.push(rel, &meta, tag, target.as_deref());
        if tag == Tag::Dir {
            self.walk(&child.entry.path(), rel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_lists_children_right_after_their_parent() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["a/x/y", "b"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        for file in ["a-b", "a.c", "a/x/f"] {
            std::fs::write(root.path().join(file), "").unwrap();
        }
        let tree = scan(root.path(), &Filter::default());
        let paths: Vec<_> = (0..tree.entries.len() as u32)
            .map(|i| tree.path_at(i).to_str().unwrap().to_string())
            .collect();
        // `a-b` and `a.c` sort before `a/` bytewise, but the walk is in path order.
        assert_eq!(paths, ["a", "a/x", "a/x/f", "a/x/y", "a-b", "a.c", "b"]);
    }
}
