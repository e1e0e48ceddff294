//! Listing one side: every entry below a root, with one `lstat` each, and every error.
//!
//! The walk is depth-first with each directory's children sorted by name bytes, which is the
//! path order the planner's merge needs. It goes through directory handles, never paths: each
//! directory is opened relative to its parent (`openat` with `O_NOFOLLOW`), read once, and its
//! children are stat'ed relative to it (`fstatat`) in parallel on the rayon pool, so one large
//! tree uses every core while SRC and DST are also scanned at the same time. The walk keeps an
//! explicit stack, not the call stack, and a directory's handle only while it still has a
//! subdirectory to enter, so neither the depth of a tree nor the length of its paths
//! (`PATH_MAX` is a limit on one path given to the kernel, never reached here) is a limit:
//! a chain of directories costs one open handle, and a tree holds at most one per level that
//! still has a subdirectory to visit (the process's open-file limit bounds that number).
//!
//! Symlinks are recorded as links (target text read, never followed); a directory the filter
//! leaves out is not entered. An entry that cannot be listed or stat'ed becomes an error in
//! [`Tree::errors`], never an empty directory: the planner withholds deletions when a listing
//! is incomplete. An entry that disappears while the scan runs is simply not there — except
//! the root, which is never taken for an empty tree.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use tracing::debug;

use crate::entry::{mode_of, Kind, Mtime, Owner, RootMeta, Tag, Tree};
use crate::error::{Error, Op};
use crate::filter::Filter;

/// Directories with fewer children are stat'ed on the calling thread.
const PARALLEL_FROM: usize = 16;

/// Entries listed so far by every scan of the run (both sides), for the progress line shown
/// while a large tree is scanned; counted once per directory, not per entry.
pub static LISTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// List everything below `root` that the filter allows. A missing root gives an empty tree
/// with `root: None`; a root that cannot be read gives an error.
///
/// With `one_fs` (`-x`), a directory on another filesystem than the root's (a mount point) is
/// listed but not entered, and recorded in [`Tree::mount_points`].
pub fn scan(root: &Path, filter: &Filter, one_fs: bool) -> Tree {
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
        owner: Owner::of(&root_meta),
    });
    (tree.dir_ids).push((root_meta.dev(), root_meta.ino(), crate::entry::ROOT));
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let one_fs = one_fs.then_some(root_meta.dev());
    let mut walker = Walker {
        root,
        filter,
        tree,
        one_fs,
    };
    match rustix::fs::open(root, flags, Mode::empty()) {
        Ok(fd) => walker.walk(fd),
        Err(e) => walker
            .tree
            .errors
            .push(Error::new(Op::ReadDir, root, e.into())),
    }
    let mut tree = walker.tree;
    tree.finish();
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
    /// `-x`: the root's device; directories on another are not entered.
    one_fs: Option<u64>,
}

/// One child of a directory, stat'ed, with a symlink's target read.
struct Child {
    name: OsString,
    stat: io::Result<Stat>,
    target: Option<io::Result<PathBuf>>,
}

/// A directory being walked: its children still to record, and its handle while one of them
/// is a directory still to enter.
struct Level {
    dir: Option<OwnedFd>,
    children: std::vec::IntoIter<Child>,
    subdirs_left: usize,
}

fn tag_of(stat: &Stat) -> Tag {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Tag::File,
        FileType::Directory => Tag::Dir,
        FileType::Symlink => Tag::Symlink,
        FileType::Fifo => Tag::Special(Kind::Fifo),
        FileType::Socket => Tag::Special(Kind::Socket),
        FileType::CharacterDevice => Tag::Special(Kind::Char),
        _ => Tag::Special(Kind::Block),
    }
}

/// Room for one read of a directory's entries: one read lists most directories whole (about
/// 800 names of 10 bytes), where a growing buffer would take several.
#[cfg(any(target_os = "linux", target_os = "android"))]
const DIR_READ: usize = 32 * 1024;

/// Append the names in the open directory `dir`, less `.` and `..`, to `names`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_names(dir: BorrowedFd<'_>, names: &mut Vec<OsString>) -> io::Result<()> {
    let mut buf = Vec::<u8>::with_capacity(DIR_READ);
    let mut entries = rustix::fs::RawDir::new(dir, buf.spare_capacity_mut());
    while let Some(entry) = entries.next() {
        keep_name(names, entry?.file_name().to_bytes());
    }
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_names(dir: BorrowedFd<'_>, names: &mut Vec<OsString>) -> io::Result<()> {
    for entry in rustix::fs::Dir::read_from(dir)? {
        keep_name(names, entry?.file_name().to_bytes());
    }
    Ok(())
}

/// Keep a name read from a directory, unless it is `.` or `..`.
fn keep_name(names: &mut Vec<OsString>, name: &[u8]) {
    if name != b"." && name != b".." {
        names.push(OsStr::from_bytes(name).to_os_string());
    }
}

impl Walker<'_> {
    /// Walk the tree below the open root, depth first, without recursion.
    fn walk(&mut self, root: OwnedFd) {
        let mut rel = PathBuf::new();
        let mut stack = vec![self.level(root, &rel)];
        while let Some(level) = stack.last_mut() {
            // Told to stop: the listing is left incomplete, and the run plans nothing on it.
            if crate::interrupt::requested().is_some() {
                return;
            }
            let Some(child) = level.children.next() else {
                stack.pop();
                rel.pop(); // the root's level pops nothing: `rel` is empty then
                continue;
            };
            rel.push(&child.name);
            let Some(()) = self.add(&child, &rel) else {
                rel.pop();
                continue;
            };
            // A directory to enter: the handle of its parent is kept only while another
            // subdirectory is left to enter.
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let crosses = self
                .one_fs
                .is_some_and(|dev| child.stat.as_ref().is_ok_and(|s| s.st_dev != dev));
            let opened = level
                .dir
                .as_ref()
                .filter(|_| !crosses)
                .map(|parent| rustix::fs::openat(parent, &child.name, flags, Mode::empty()));
            level.subdirs_left -= 1;
            if level.subdirs_left == 0 {
                level.dir = None;
            }
            if crosses {
                self.tree.mount_points.push(rel.clone());
                rel.pop();
                continue;
            }
            match opened {
                Some(Ok(fd)) => {
                    let level = self.level(fd, &rel);
                    stack.push(level);
                }
                Some(Err(e)) if e != rustix::io::Errno::NOENT => {
                    let path = self.root.join(&rel);
                    self.tree
                        .errors
                        .push(Error::new(Op::ReadDir, path, e.into()));
                    rel.pop();
                }
                _ => {
                    rel.pop();
                }
            }
        }
    }

    /// List the open directory `dir` (whose path below the root is `rel`).
    fn level(&mut self, dir: OwnedFd, rel: &Path) -> Level {
        let children = self.list(dir.as_fd(), rel);
        LISTED.fetch_add(children.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let subdirs_left = children
            .iter()
            .filter(|c| c.stat.as_ref().is_ok_and(|s| tag_of(s) == Tag::Dir))
            .count();
        Level {
            dir: (subdirs_left > 0).then_some(dir),
            children: children.into_iter(),
            subdirs_left,
        }
    }

    /// The children of `dir`, sorted by name, each stat'ed (and a symlink's target read).
    fn list(&mut self, dir: BorrowedFd<'_>, rel: &Path) -> Vec<Child> {
        let mut names = Vec::new();
        if let Err(e) = read_names(dir, &mut names) {
            // A directory removed since it was seen is simply gone: it reads as ENOENT, and it
            // has no links left. The root never is, nor is a directory that still has links,
            // whatever its filesystem said: taken for empty, it would have its copy emptied.
            let gone = e.kind() == io::ErrorKind::NotFound
                && !rel.as_os_str().is_empty()
                && rustix::fs::fstat(dir).is_ok_and(|s| s.st_nlink == 0);
            if !gone {
                self.tree
                    .errors
                    .push(Error::new(Op::ReadDir, self.root.join(rel), e));
            }
        }
        names.sort_unstable();
        let stat = |name: OsString| {
            let stat =
                rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(Into::into);
            let target = match &stat {
                Ok(s) if tag_of(s) == Tag::Symlink => Some(
                    rustix::fs::readlinkat(dir, &name, Vec::new())
                        .map(|t| PathBuf::from(OsStr::from_bytes(t.as_bytes())))
                        .map_err(Into::into),
                ),
                _ => None,
            };
            Child { name, stat, target }
        };
        if names.len() >= PARALLEL_FROM {
            names.into_par_iter().with_min_len(8).map(stat).collect()
        } else {
            names.into_iter().map(stat).collect()
        }
    }

    /// Record one child; `Some` when it is a directory to enter.
    fn add(&mut self, child: &Child, rel: &Path) -> Option<()> {
        let path = || self.root.join(rel);
        let stat = match &child.stat {
            Ok(stat) => stat,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                let e = io::Error::new(e.kind(), e.to_string());
                self.tree.errors.push(Error::new(Op::Stat, path(), e));
                return None;
            }
        };
        let tag = tag_of(stat);
        if !self.filter.allows(rel, tag == Tag::Dir) {
            return None;
        }
        let target = match &child.target {
            Some(Ok(target)) => Some(target.as_path()),
            Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => return None,
            Some(Err(e)) => {
                let e = io::Error::new(e.kind(), e.to_string());
                self.tree.errors.push(Error::new(Op::ReadLink, path(), e));
                return None;
            }
            None => None,
        };
        self.tree.push(rel, stat, tag, target);
        (tag == Tag::Dir).then_some(())
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
        let tree = scan(root.path(), &Filter::default(), false);
        let paths: Vec<_> = (0..tree.entries.len() as u32)
            .map(|i| tree.path_at(i).to_str().unwrap().to_string())
            .collect();
        // `a-b` and `a.c` sort before `a/` bytewise, but the walk is in path order.
        assert_eq!(paths, ["a", "a/x", "a/x/f", "a/x/y", "a-b", "a.c", "b"]);
    }

    #[test]
    fn a_folder_removed_since_it_was_opened_is_gone_not_an_error() {
        let root = tempfile::tempdir().unwrap();
        let sub = root.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(&sub, flags, Mode::empty()).unwrap();
        std::fs::remove_dir(&sub).unwrap();
        let filter = Filter::default();
        let mut walker = Walker {
            root: root.path(),
            filter: &filter,
            tree: Tree::default(),
            one_fs: None,
        };
        assert!(walker.list(fd.as_fd(), Path::new("sub")).is_empty());
        assert!(walker.tree.errors.is_empty(), "{:?}", walker.tree.errors);
    }

    #[test]
    fn a_directory_too_big_for_one_read_is_listed_whole() {
        let root = tempfile::tempdir().unwrap();
        // 3,000 entries of 80-byte names: about 300 KiB of entries, many reads.
        let name = |i: usize| format!("{i:05}{}", "n".repeat(75));
        for i in 0..3000 {
            std::fs::write(root.path().join(name(i)), "").unwrap();
        }
        let tree = scan(root.path(), &Filter::default(), false);
        assert!(tree.errors.is_empty());
        let paths: Vec<_> = (0..tree.entries.len() as u32)
            .map(|i| tree.path_at(i).to_str().unwrap().to_string())
            .collect();
        assert_eq!(paths, (0..3000).map(name).collect::<Vec<_>>());
    }
}
