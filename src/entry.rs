//! What the scanner records about each path, and nothing more.
//!
//! A [`Tree`] is the listing of one side (SRC or DST): entries in path order (a parent before its
//! children, siblings sorted by name bytes), plus every error met while listing. The order lets
//! the planner compare both sides in one merge pass without a hash map. Paths are relative to
//! the side's root and stay bytes (`PathBuf`), never lossy strings.

use std::cmp::Ordering;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// A modification time with nanoseconds; `sec` may be negative (before 1970).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mtime {
    pub sec: i64,
    pub nsec: u32,
}

impl Mtime {
    pub fn of(meta: &Metadata) -> Mtime {
        Mtime {
            sec: meta.mtime(),
            nsec: meta.mtime_nsec() as u32,
        }
    }

    pub fn as_filetime(self) -> filetime::FileTime {
        filetime::FileTime::from_unix_time(self.sec, self.nsec)
    }

    /// Whole nanoseconds between two times, saturating.
    pub fn abs_diff_nanos(self, other: Mtime) -> u128 {
        let a = self.sec as i128 * 1_000_000_000 + self.nsec as i128;
        let b = other.sec as i128 * 1_000_000_000 + other.nsec as i128;
        a.abs_diff(b)
    }
}

/// The type of an entry; a symlink carries its target text, never followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(Box<Path>),
    /// FIFO, socket or device: never copied.
    Special,
}

impl Kind {
    pub fn tag(&self) -> Tag {
        match self {
            Kind::File => Tag::File,
            Kind::Dir => Tag::Dir,
            Kind::Symlink(_) => Tag::Symlink,
            Kind::Special => Tag::Special,
        }
    }
}

/// [`Kind`] without the link target, for plain-data actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    File,
    Dir,
    Symlink,
    Special,
}

impl Tag {
    /// The one-letter code used in itemized output.
    pub fn letter(self) -> char {
        match self {
            Tag::File => 'f',
            Tag::Dir => 'd',
            Tag::Symlink => 'l',
            Tag::Special => 's',
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Tag::File => "file",
            Tag::Dir => "directory",
            Tag::Symlink => "symlink",
            Tag::Special => "special file",
        }
    }
}

/// One path below a root, as seen by a single `lstat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the root; never empty (the root itself is kept in [`Tree::root`]).
    pub path: PathBuf,
    pub kind: Kind,
    pub size: u64,
    pub mtime: Mtime,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
}

impl Entry {
    pub fn from_metadata(path: PathBuf, meta: &Metadata, kind: Kind) -> Entry {
        Entry {
            path,
            size: if kind == Kind::File { meta.len() } else { 0 },
            kind,
            mtime: Mtime::of(meta),
            mode: meta.mode() & 0o7777,
        }
    }
}

/// The metadata a directory root carries (DST takes SRC's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootMeta {
    pub mtime: Mtime,
    pub mode: u32,
}

/// The listing of one side.
#[derive(Debug, Default)]
pub struct Tree {
    /// `None` when the root does not exist (a DST to be created).
    pub root: Option<RootMeta>,
    /// In path order: see the module documentation.
    pub entries: Vec<Entry>,
    /// Everything that could not be listed or stat'ed. Never silently "empty".
    pub errors: Vec<Error>,
    /// With `--flatten`: for each entry, the path below SRC it comes from (empty otherwise).
    pub origins: Vec<PathBuf>,
}

impl Tree {
    /// Where entry `index` lives on disk, relative to the root.
    pub fn origin(&self, index: usize) -> &Path {
        self.origins.get(index).unwrap_or(&self.entries[index].path)
    }
}

/// The order of [`Tree::entries`]: component by component, bytes within a component, which is
/// what a depth-first walk with name-sorted siblings produces.
pub fn path_order(a: &Path, b: &Path) -> Ordering {
    a.cmp(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_order_puts_children_right_after_their_parent() {
        let mut paths = vec!["a-b", "a/x", "a", "b", "a/x/y", "a.c"];
        paths.sort_by(|a, b| path_order(Path::new(a), Path::new(b)));
        assert_eq!(paths, ["a", "a/x", "a/x/y", "a-b", "a.c", "b"]);
    }

    #[test]
    fn mtime_difference_spans_negative_seconds() {
        let a = Mtime {
            sec: -1,
            nsec: 500_000_000,
        };
        let b = Mtime { sec: 0, nsec: 0 };
        assert_eq!(a.abs_diff_nanos(b), 500_000_000);
    }
}
