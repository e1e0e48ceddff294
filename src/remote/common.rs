//! What the remote backends share: their async runtime, turning a flat remote listing into a
//! [`Tree`], and lining up metadata a store does not keep with the source's.

use std::collections::HashSet;
use std::fmt::Display;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::entry::{merge, Mtime, Pair, RootMeta, Tag, Tree};
use crate::filter::Filter;

/// One entry as a remote listing reports it.
#[derive(Debug)]
pub(crate) struct Listed {
    pub rel: PathBuf,
    pub tag: Tag,
    pub size: u64,
    pub mtime: Mtime,
    pub mode: u16,
    pub target: Option<PathBuf>,
}

impl Listed {
    pub fn dir(rel: PathBuf) -> Listed {
        Listed {
            rel,
            tag: Tag::Dir,
            size: 0,
            mtime: Mtime::default(),
            mode: 0o755,
            target: None,
        }
    }
}

/// The runtime remote calls run on; workers of the rayon pool block on it, each with its own
/// request in flight.
pub(crate) fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("syncease-net")
        .enable_all()
        .build()
}

/// An error from a remote library as an `io::Error` of the given kind, keeping its message.
pub(crate) fn io_error(kind: io::ErrorKind, e: impl Display) -> io::Error {
    io::Error::new(kind, e.to_string())
}

/// Build a tree from entries in any order: sorted into path order, with every directory that
/// only shows as a prefix of deeper paths added, and what the filter excludes (or lies below an
/// excluded directory) left out (a listing already filtered passes `Filter::default()`).
pub(crate) fn tree_of(mut listed: Vec<Listed>, filter: &Filter, root: RootMeta) -> Tree {
    // Walk up from each entry only until a directory already known: one set lookup for most
    // entries, one allocation per directory that exists only as a prefix.
    let mut known: HashSet<&Path> = listed
        .iter()
        .filter(|l| l.tag == Tag::Dir)
        .map(|l| l.rel.as_path())
        .collect();
    let mut implied = Vec::new();
    for l in &listed {
        for dir in l.rel.ancestors().skip(1) {
            if dir.as_os_str().is_empty() || !known.insert(dir) {
                break;
            }
            implied.push(Listed::dir(dir.to_path_buf()));
        }
    }
    drop(known);
    listed.extend(implied);
    // A directory marker and a prefix name the same directory; a file and a directory of the
    // same name can both exist in a key space, and the file is then shadowed.
    listed.sort_by(|a, b| {
        a.rel
            .cmp(&b.rel)
            .then((b.tag == Tag::Dir).cmp(&(a.tag == Tag::Dir)))
    });
    listed.dedup_by(|later, first| later.rel == first.rel);
    let mut tree = Tree::default();
    tree.root = Some(root);
    let mut excluded: Option<PathBuf> = None;
    for l in listed {
        if excluded
            .as_deref()
            .is_some_and(|dir| l.rel.starts_with(dir))
        {
            continue;
        }
        if !filter.allows(&l.rel, l.tag == Tag::Dir) {
            if l.tag == Tag::Dir {
                excluded = Some(l.rel);
            }
            continue;
        }
        tree.push_raw(&l.rel, l.tag, l.size, l.mtime, l.mode, l.target.as_deref());
    }
    tree.shrink();
    tree
}

/// What a destination keeps of an entry's metadata; what it does not keep is taken from the
/// source, so the planner sees no difference it could never fix.
#[derive(Clone, Debug)]
pub(crate) struct Keeps {
    /// Permission bits.
    pub modes: bool,
    /// Modification times of directories (and the root).
    pub dir_times: bool,
    /// A symlink's own modification time.
    pub link_times: bool,
    /// Sub-second parts of modification times.
    pub nanoseconds: bool,
    /// The seconds a time can have there; a time outside is stored clamped to this range.
    pub seconds: RangeInclusive<i64>,
}

impl Keeps {
    /// Make the stored `mode` and `mtime` of an entry of type `tag` show what the store could not
    /// keep of the source's `src_mode` and `src_mtime`.
    fn apply(&self, tag: Tag, src_mode: u16, src_mtime: Mtime, mode: &mut u16, mtime: &mut Mtime) {
        if !self.modes {
            *mode = src_mode;
        }
        let untimed = match tag {
            Tag::Dir => !self.dir_times,
            Tag::Symlink => !self.link_times,
            _ => false,
        };
        let (low, high) = (*self.seconds.start(), *self.seconds.end());
        let clamped = src_mtime.sec.clamp(low, high);
        if untimed || (clamped != src_mtime.sec && mtime.sec == clamped) {
            *mtime = src_mtime;
        } else if !self.nanoseconds && mtime.sec == src_mtime.sec {
            mtime.nsec = src_mtime.nsec;
        }
    }
}

/// Line up the destination listing with what the store keeps (see [`Keeps`]): the root, and
/// every path both sides have with the same type.
pub(crate) fn adopt(src: &Tree, dst: &mut Tree, keeps: &Keeps) {
    if let (Some(s), Some(d)) = (src.root, dst.root.as_mut()) {
        keeps.apply(Tag::Dir, s.mode, s.mtime, &mut d.mode, &mut d.mtime);
    }
    let pairs: Vec<(u32, u32)> = merge(src, dst)
        .filter_map(|p| match p {
            Pair::Both(i, j) => Some((i, j)),
            _ => None,
        })
        .collect();
    for (i, j) in pairs {
        let s = src.entries[i as usize];
        let d = &mut dst.entries[j as usize];
        if s.tag == d.tag {
            keeps.apply(s.tag, s.mode, s.mtime, &mut d.mode, &mut d.mtime);
        }
    }
}

/// A path below the root as the `/`-separated text remote protocols use; `None` when it is not
/// valid UTF-8 (such names cannot be sent).
pub(crate) fn text(rel: &Path) -> io::Result<&str> {
    rel.to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the name is not valid UTF-8, which this destination cannot store",
        )
    })
}
