//! What the scanner records about each path, and nothing more.
//!
//! A [`Tree`] is the listing of one side (SRC or DST): entries in path order (a parent before its
//! children, siblings sorted by name bytes), plus every error met while listing. The order lets
//! the planner compare both sides in one merge pass without a hash map. Paths are relative to
//! the side's root and stay bytes, never lossy strings; they live in one arena per tree, so an
//! entry is a fixed 40 bytes plus its path.

use std::cmp::Ordering;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// A modification time with nanoseconds; `sec` may be negative (before 1970).
///
/// Packed to 12 bytes: every listing entry holds one, and the 4 bytes of padding after the
/// `u32` would make an entry 8 bytes longer. Fields are read by value; an unaligned `i64` load
/// costs nothing on the machines we build for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(C, packed(4))]
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

    /// The mtime an `lstat` (or `fstatat`) returned.
    // The field types differ between platforms: the conversions are not useless everywhere.
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    pub fn of_stat(stat: &rustix::fs::Stat) -> Mtime {
        Mtime {
            sec: i64::from(stat.st_mtime),
            nsec: stat.st_mtime_nsec as u32,
        }
    }

    /// The current time.
    pub fn now() -> Mtime {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Mtime {
            sec: since.as_secs() as i64,
            nsec: since.subsec_nanos(),
        }
    }

    /// The time as a destination that holds only `range` (seconds since 1970, both ends in)
    /// keeps it: outside, the nearest end.
    pub fn held_in(self, range: Option<(i64, i64)>) -> Mtime {
        match range {
            Some((low, _)) if self.sec < low => Mtime { sec: low, nsec: 0 },
            Some((_, high)) if self.sec > high => Mtime { sec: high, nsec: 0 },
            _ => self,
        }
    }

    /// Whole nanoseconds between two times, saturating.
    pub fn abs_diff_nanos(self, other: Mtime) -> u128 {
        let a = self.sec as i128 * 1_000_000_000 + self.nsec as i128;
        let b = other.sec as i128 * 1_000_000_000 + other.nsec as i128;
        a.abs_diff(b)
    }
}

/// The type of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device node: made again where the destination and the run's
    /// privileges allow, skipped with a warning elsewhere.
    Special(Kind),
}

/// The kind of a special file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fifo,
    Socket,
    /// A character device; its device number is the entry's `size`.
    Char,
    /// A block device; its device number is the entry's `size`.
    Block,
}

impl Kind {
    /// Only root can make device nodes.
    pub fn is_device(self) -> bool {
        matches!(self, Kind::Char | Kind::Block)
    }
}

impl Tag {
    /// The one-letter code used in itemized output.
    pub fn letter(self) -> char {
        match self {
            Tag::File => 'f',
            Tag::Dir => 'd',
            Tag::Symlink => 'l',
            Tag::Special(_) => 's',
        }
    }
}

/// Numeric owner and group of an entry (0 where a listing has none, as on S3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub fn of(meta: &Metadata) -> Owner {
        Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        }
    }
}

/// The owner and group to give an entry: `None` leaves that id as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chown {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Chown {
    pub fn is_empty(&self) -> bool {
        self.uid.is_none() && self.gid.is_none()
    }
}

/// One path below a root, as seen by a single `lstat`: 40 bytes, plus its path bytes (and a
/// symlink's target) in the tree's arena. A million-file tree costs about 50 MiB, not the
/// hundreds a `PathBuf` and a boxed target per entry would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Offset of the path bytes in [`Tree::arena`]; a symlink's target follows them.
    start: u64,
    /// Bytes of a file; for a symlink, the length of its target (as `lstat` reports it); for a
    /// device node, its device number.
    pub size: u64,
    pub mtime: Mtime,
    path_len: u32,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u16,
    pub tag: Tag,
    /// Index of the owner and group in [`Tree::owners`]: a tree has few distinct ones. This
    /// and the packed [`Mtime`] make an entry 40 bytes instead of 48, 8 MiB less a side in a
    /// million-entry tree.
    owner: u32,
}

impl Entry {
    /// An entry with no path, for comparing metadata in tests.
    #[cfg(test)]
    pub(crate) fn detached(tag: Tag, size: u64, mtime: Mtime, mode: u16) -> Entry {
        Entry {
            start: 0,
            size,
            mtime,
            path_len: 0,
            mode,
            tag,
            owner: 0,
        }
    }
}

/// The metadata a directory root carries (DST takes SRC's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootMeta {
    pub mtime: Mtime,
    pub mode: u16,
    pub owner: Owner,
}

/// The listing of one side.
#[derive(Debug, Default)]
pub struct Tree {
    /// `None` when the root does not exist (a DST to be created).
    pub root: Option<RootMeta>,
    /// In path order: see the module documentation.
    pub entries: Vec<Entry>,
    /// Path bytes (relative to the root, never empty) and symlink targets of all entries.
    arena: Vec<u8>,
    /// Everything that could not be listed or stat'ed. Never silently "empty".
    pub errors: Vec<Error>,
    /// With `--flatten`: for each entry, the arena span of the path below SRC it comes from.
    origins: Vec<(u64, u32)>,
    /// `-x`: the directories on another filesystem, listed but not entered (their paths).
    pub mount_points: Vec<std::path::PathBuf>,
    /// While listing: (entry index, link count, inode) of each regular file with more than one
    /// name, kept apart by device (16 bytes a name): `inodes[n]` holds those on `devices[n]`.
    /// [`Tree::finish`] groups them into [`Tree::links`].
    inodes: Vec<Vec<(u32, u32, u64)>>,
    devices: Vec<u64>,
    /// The regular files that have more than one name, grouped by inode.
    pub links: Links,
    /// The device and inode of each directory of a local listing, with its entry index
    /// ([`ROOT`] for the root): two listings that share a directory (a bind mount of one
    /// side inside the other) overlap. Empty for a remote listing.
    pub dir_ids: Vec<(u64, u64, u32)>,
    /// Entries of a remote listing that cannot be mirrored as they are named (a key with a
    /// `..` part, an object hidden by a folder of its name): left out, each with why. Neither
    /// copied nor deleted: they are warnings, not errors of the listing.
    pub unusable: Vec<(std::path::PathBuf, &'static str)>,
    /// The distinct owners of the entries, each once; an entry holds an index here. Index 0 is
    /// always the default owner (uid and gid 0, all a remote listing has), also while the
    /// table is empty.
    owners: Vec<Owner>,
    /// Where each of `owners` is, to find it again while listing.
    owner_index: std::collections::HashMap<Owner, u32>,
}

fn as_path(bytes: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

fn path_bytes(path: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes()
}

/// Permission bits as a listing keeps them.
pub fn mode_of(meta: &Metadata) -> u16 {
    (meta.mode() & 0o7777) as u16
}

/// Whether the listing path `path` is `dir` or lies below it. Listing paths are normal (no
/// `.`, `..` or repeated or trailing slashes), so bytes tell, at the cost of one `memcmp`,
/// where `Path::starts_with` walks every component — which counts on deep trees.
pub fn is_within(path: &Path, dir: &Path) -> bool {
    let (path, dir) = (path_bytes(path), path_bytes(dir));
    dir.is_empty()
        || (path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/'))
}

/// Where a path stands in a merge of two listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pair {
    /// Only the first listing has it (entry index).
    Left(u32),
    /// Only the second listing has it.
    Right(u32),
    /// Both have it.
    Both(u32, u32),
}

/// The regular files at the same path on both sides with the same size, as (source index,
/// destination index) pairs in path order: the pairs only their contents (or remote metadata)
/// can tell apart.
pub fn same_size_files(src: &Tree, dst: &Tree) -> Vec<(u32, u32)> {
    merge(src, dst)
        .filter_map(|pair| match pair {
            Pair::Both(i, j) => Some((i, j)),
            _ => None,
        })
        .filter(|&(i, j)| {
            let (a, b) = (&src.entries[i as usize], &dst.entries[j as usize]);
            a.tag == Tag::File && b.tag == Tag::File && a.size == b.size
        })
        .collect()
}

/// Walk two listings together in path order, in one pass: the single merge the planner and
/// `--checksum` share.
pub fn merge<'t>(left: &'t Tree, right: &'t Tree) -> impl Iterator<Item = Pair> + 't {
    let (l_len, r_len) = (left.entries.len() as u32, right.entries.len() as u32);
    let (mut i, mut j) = (0u32, 0u32);
    std::iter::from_fn(move || {
        let order = match (i < l_len, j < r_len) {
            (true, true) => left.path_at(i).cmp(right.path_at(j)),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => return None,
        };
        Some(match order {
            Ordering::Less => {
                i += 1;
                Pair::Left(i - 1)
            }
            Ordering::Greater => {
                j += 1;
                Pair::Right(j - 1)
            }
            Ordering::Equal => {
                i += 1;
                j += 1;
                Pair::Both(i - 1, j - 1)
            }
        })
    })
}

/// The regular files of a tree that have more than one name, grouped by the inode they share:
/// `(entry index, group)` in index order, where a group is a number standing for one inode
/// (dense from 0). 8 bytes a linked name and nothing for the others: memory grows with linked
/// files, not with the tree. A group whose inode has more names than the tree holds has
/// others outside it (another folder, a `--link-dest` snapshot, an excluded name): in a
/// destination, changing that inode in place would change them too.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Links {
    names: Vec<(u32, u32)>,
    /// For each group, the link count of its inode (the largest seen while listing, at most
    /// [`MAX_COUNT`]), with [`OUTSIDE`] set when it has names outside the tree.
    counts: Vec<u32>,
}

/// The index [`Tree::dir_ids`] gives the root.
pub const ROOT: u32 = u32::MAX;

/// In a group's count: its inode has names outside the tree.
const OUTSIDE: u32 = 1 << 31;
/// The largest link count a group keeps: above it, the count is taken as this.
const MAX_COUNT: u32 = OUTSIDE - 1;

impl Links {
    /// Group `(entry index, link count, inode)` records by inode, one list per device.
    pub(crate) fn grouped(devices: Vec<Vec<(u32, u32, u64)>>) -> Links {
        let total = devices.iter().map(Vec::len).sum();
        let mut names = Vec::with_capacity(total);
        let mut counts = Vec::new();
        for mut inodes in devices {
            inodes.sort_unstable_by_key(|&(i, _, ino)| (ino, i));
            for same in inodes.chunk_by(|a, b| a.2 == b.2) {
                let group = counts.len() as u32;
                names.extend(same.iter().map(|&(i, ..)| (i, group)));
                // The largest count seen: a name made while listing adds to it.
                let nlink = same.iter().map(|&(_, n, _)| n).max().unwrap_or(0);
                let outside = nlink as usize > same.len();
                counts.push(nlink.min(MAX_COUNT) | if outside { OUTSIDE } else { 0 });
            }
        }
        names.sort_unstable_by_key(|&(i, _)| i);
        Links { names, counts }
    }

    /// The group of entry `index`, if it is a linked file.
    pub fn group(&self, index: u32) -> Option<u32> {
        let at = self.names.binary_search_by_key(&index, |&(i, _)| i).ok()?;
        Some(self.names[at].1)
    }

    /// How many groups there are: every group is below this.
    pub fn groups(&self) -> usize {
        self.counts.len()
    }

    /// Whether the inode of `group` has names outside the tree.
    pub fn outside(&self, group: u32) -> bool {
        self.counts[group as usize] & OUTSIDE != 0
    }

    /// The link count the inode of `group` was listed with.
    pub fn count(&self, group: u32) -> u32 {
        self.counts[group as usize] & MAX_COUNT
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// `(entry index, group)`, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.names.iter().copied()
    }

    /// Keep only the groups of several names, numbered afresh.
    fn forget_lone(&mut self) {
        // Names in each group (up to 2: enough to tell), then the new number of each kept one.
        let mut renumber = vec![0u32; self.groups()];
        for &(_, g) in &self.names {
            renumber[g as usize] = (renumber[g as usize] + 1).min(2);
        }
        let mut counts = Vec::new();
        for (slot, &count) in renumber.iter_mut().zip(&self.counts) {
            *slot = match *slot {
                2 => {
                    counts.push(count);
                    counts.len() as u32 - 1
                }
                _ => u32::MAX,
            };
        }
        self.names.retain_mut(|(_, g)| {
            *g = renumber[*g as usize];
            *g != u32::MAX
        });
        self.names.shrink_to_fit();
        self.counts = counts;
    }

    /// The same groups for a tree whose entry `i` became `moved[i]` (`u32::MAX`: gone; its
    /// group then has a name outside the tree).
    fn moved(&self, moved: &[u32]) -> Links {
        let mut counts = self.counts.clone();
        let mut names = Vec::with_capacity(self.names.len());
        for &(i, g) in &self.names {
            match moved[i as usize] {
                u32::MAX => counts[g as usize] |= OUTSIDE,
                to => names.push((to, g)),
            }
        }
        names.sort_unstable_by_key(|&(i, _)| i);
        Links { names, counts }
    }
}

impl Tree {
    /// Append an entry from its `lstat` (callers keep path order). `target` is a symlink's
    /// target text.
    pub fn push(&mut self, path: &Path, stat: &rustix::fs::Stat, tag: Tag, target: Option<&Path>) {
        let mtime = Mtime::of_stat(stat);
        let mode = (stat.st_mode & 0o7777) as u16;
        let size = match (tag, target) {
            (Tag::File, _) => stat.st_size as u64,
            (Tag::Special(kind), _) if kind.is_device() => stat.st_rdev,
            (_, Some(target)) => path_bytes(target).len() as u64,
            _ => 0,
        };
        self.push_raw(path, tag, size, mtime, mode, target);
        self.set_last_owner(Owner {
            uid: stat.st_uid,
            gid: stat.st_gid,
        });
        #[allow(clippy::useless_conversion)] // the field types differ between platforms
        if tag == Tag::Dir {
            let index = self.entries.len() as u32 - 1;
            let id = (u64::from(stat.st_dev), u64::from(stat.st_ino), index);
            self.dir_ids.push(id);
        }
        #[allow(clippy::useless_conversion)] // the field types differ between platforms
        if tag == Tag::File && u64::from(stat.st_nlink) > 1 {
            let index = self.entries.len() as u32 - 1;
            let dev = u64::from(stat.st_dev);
            // Almost always the one device, found first.
            let device = match self.devices.iter().position(|&d| d == dev) {
                Some(at) => at,
                None => {
                    self.devices.push(dev);
                    self.inodes.push(Vec::new());
                    self.devices.len() - 1
                }
            };
            let nlink = u32::try_from(stat.st_nlink).unwrap_or(u32::MAX);
            self.inodes[device].push((index, nlink, u64::from(stat.st_ino)));
        }
    }

    /// Append an entry from its parts (used by tests and by `--flatten`).
    pub fn push_raw(
        &mut self,
        path: &Path,
        tag: Tag,
        size: u64,
        mtime: Mtime,
        mode: u16,
        target: Option<&Path>,
    ) {
        let start = self.arena.len() as u64;
        let bytes = path_bytes(path);
        self.arena.extend_from_slice(bytes);
        let size = match target {
            Some(target) => {
                let t = path_bytes(target);
                self.arena.extend_from_slice(t);
                t.len() as u64
            }
            None => size,
        };
        self.entries.push(Entry {
            start,
            size,
            mtime,
            path_len: u32::try_from(bytes.len()).expect("a path fits in 4 GiB"),
            mode,
            tag,
            owner: 0,
        });
    }

    /// The owner and group of an entry of this tree.
    pub fn owner(&self, entry: &Entry) -> Owner {
        self.owners
            .get(entry.owner as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Give the entry pushed last the owner `owner`.
    fn set_last_owner(&mut self, owner: Owner) {
        // A directory's entries mostly share one owner: the one given last is the likeliest
        // and costs no hashing. A shared home can still have thousands, hence the map.
        let last = self
            .entries
            .len()
            .checked_sub(2)
            .map(|i| self.entries[i].owner);
        let index = match last {
            Some(last) if self.owners.get(last as usize) == Some(&owner) => last,
            _ => self.intern(owner),
        };
        if let Some(entry) = self.entries.last_mut() {
            entry.owner = index;
        }
    }

    /// The index of `owner` in `owners`, added if new.
    fn intern(&mut self, owner: Owner) -> u32 {
        if self.owners.is_empty() {
            self.owners.push(Owner::default());
            self.owner_index.insert(Owner::default(), 0);
        }
        if let Some(&index) = self.owner_index.get(&owner) {
            return index;
        }
        let index = u32::try_from(self.owners.len()).expect("fewer than 2^32 owners");
        self.owners.push(owner);
        self.owner_index.insert(owner, index);
        index
    }

    /// Forget the files whose other names all lie outside the tree (a snapshot's, say): in a
    /// source they link to nothing that is copied, and a tree of them — every file of a
    /// `--link-dest` snapshot — would otherwise keep their groups, and the planner a leader
    /// for each, for nothing.
    pub fn forget_lone_links(&mut self) {
        self.links.forget_lone();
    }

    /// Once the listing is complete: group the linked names by inode, and release the slack
    /// of the growing vectors.
    pub fn finish(&mut self) {
        self.links = Links::grouped(std::mem::take(&mut self.inodes));
        self.entries.shrink_to_fit();
        self.arena.shrink_to_fit();
    }

    /// The entry's path relative to the root.
    pub fn path(&self, entry: &Entry) -> &Path {
        let start = entry.start as usize;
        as_path(&self.arena[start..start + entry.path_len as usize])
    }

    /// The path of entry `index`.
    pub fn path_at(&self, index: u32) -> &Path {
        self.path(&self.entries[index as usize])
    }

    /// A symlink's target text.
    pub fn target(&self, entry: &Entry) -> Option<&Path> {
        (entry.tag == Tag::Symlink).then(|| {
            let start = entry.start as usize + entry.path_len as usize;
            as_path(&self.arena[start..start + entry.size as usize])
        })
    }

    /// Where entry `index` lives below the root on disk (differs from its path with
    /// `--flatten`).
    pub fn origin(&self, index: u32) -> &Path {
        match self.origins.get(index as usize) {
            Some(&(start, len)) => {
                as_path(&self.arena[start as usize..start as usize + len as usize])
            }
            None => self.path_at(index),
        }
    }

    /// Rebuild the tree with new paths for some entries, in a new order: `(index, new path)`,
    /// already sorted by new path. Each entry remembers its old path as its origin.
    pub fn renamed(self, order: Vec<(u32, &Path)>) -> Tree {
        let mut tree = Tree {
            root: self.root,
            errors: Vec::new(),
            ..Tree::default()
        };
        let mut moved = vec![u32::MAX; self.entries.len()];
        for (index, new_path) in order {
            moved[index as usize] = tree.entries.len() as u32;
            let entry = self.entries[index as usize];
            let old = path_bytes(self.path(&entry));
            tree.push_raw(
                new_path,
                entry.tag,
                entry.size,
                entry.mtime,
                entry.mode,
                self.target(&entry),
            );
            if let Some(renamed) = tree.entries.last_mut() {
                renamed.owner = entry.owner;
            }
            let start = tree.arena.len() as u64;
            tree.arena.extend_from_slice(old);
            tree.origins.push((start, old.len() as u32));
        }
        tree.errors = self.errors;
        tree.mount_points = self.mount_points;
        tree.owners = self.owners;
        tree.owner_index = self.owner_index;
        tree.links = self.links.moved(&moved);
        tree
    }

    /// The topmost directory `other` lists that this listing lists too, the same device and
    /// inode under two names, as a bind mount of one side inside the other makes: its path here
    /// and in `other` (empty for a root). Only local listings know.
    pub fn shared_dir(&self, other: &Tree) -> Option<(PathBuf, PathBuf)> {
        if self.dir_ids.is_empty() || other.dir_ids.is_empty() {
            return None;
        }
        let path = |tree: &Tree, index: u32| match index {
            ROOT => PathBuf::new(),
            _ => tree.path_at(index).to_path_buf(),
        };
        let here: std::collections::HashMap<(u64, u64), u32> = (self.dir_ids.iter())
            .map(|&(dev, ino, index)| ((dev, ino), index))
            .collect();
        // With `-x`, one filesystem mounted at the same place on both sides is entered on
        // neither: nothing is copied into it or deleted from it.
        let apart = |(mine, there): &(PathBuf, PathBuf)| {
            mine != there
                || !self.mount_points.contains(mine)
                || !other.mount_points.contains(there)
        };
        // Listed in path order: the first found is the topmost.
        (other.dir_ids.iter()).find_map(|&(dev, ino, there)| {
            let pair = here
                .get(&(dev, ino))
                .map(|&mine| (path(self, mine), path(other, there)));
            pair.filter(apart)
        })
    }

    /// The listing without the entries strictly below any of `dirs` (the directories stay).
    pub fn without_below(self, dirs: &[std::path::PathBuf]) -> Tree {
        let below = |p: &Path| dirs.iter().any(|d| p != d.as_path() && is_within(p, d));
        let kept: Vec<(u32, &Path)> = (0..self.entries.len() as u32)
            .map(|i| (i, self.path_at(i)))
            .filter(|(_, p)| !below(p))
            .collect();
        if kept.len() == self.entries.len() {
            return self;
        }
        let kept: Vec<(u32, std::path::PathBuf)> = kept
            .into_iter()
            .map(|(i, p)| (i, p.to_path_buf()))
            .collect();
        let order = kept.iter().map(|(i, p)| (*i, p.as_path())).collect();
        self.renamed(order)
    }

    /// The name entry `index` has on disk, where it differs from its listed name (a
    /// destination entry listed under the source's spelling, see `case::fold`).
    pub fn old_name(&self, index: u32) -> Option<&std::ffi::OsStr> {
        // Most listings were never renamed: no path to take apart for them.
        if self.origins.is_empty() {
            return None;
        }
        let (now, was) = (
            self.path_at(index).file_name(),
            self.origin(index).file_name(),
        );
        (now != was).then_some(was).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_is_by_whole_components() {
        let yes = [("a/b", "a"), ("a", "a"), ("a", ""), ("a/b/c", "a/b")];
        let no = [("ab", "a"), ("a-b/c", "a"), ("a", "a/b"), ("b/a", "a")];
        for (path, dir) in yes {
            assert!(
                is_within(Path::new(path), Path::new(dir)),
                "{path} in {dir}"
            );
        }
        for (path, dir) in no {
            assert!(
                !is_within(Path::new(path), Path::new(dir)),
                "{path} not in {dir}"
            );
        }
    }

    #[test]
    fn owners_come_back_per_entry_from_one_table() {
        let owner = |uid, gid| Owner { uid, gid };
        let mut tree = Tree::default();
        let given = [
            Some(owner(1000, 100)),
            Some(owner(1000, 100)),
            Some(owner(0, 0)),
            None,
            Some(owner(1001, 100)),
            Some(owner(1000, 100)),
            Some(owner(1000, 1000)),
        ];
        for (n, &o) in given.iter().enumerate() {
            tree.push_raw(
                Path::new(&format!("f{n}")),
                Tag::File,
                0,
                Mtime::default(),
                0o644,
                None,
            );
            if let Some(o) = o {
                tree.set_last_owner(o);
            }
        }
        let got: Vec<Owner> = tree.entries.iter().map(|e| tree.owner(e)).collect();
        let want: Vec<Owner> = given.iter().map(|o| o.unwrap_or_default()).collect();
        assert_eq!(got, want);
        assert_eq!(tree.owners.len(), 4, "each distinct owner once");
        let order = vec![(6, Path::new("a")), (4, Path::new("b"))];
        let renamed = tree.renamed(order);
        let got: Vec<Owner> = renamed.entries.iter().map(|e| renamed.owner(e)).collect();
        assert_eq!(got, [owner(1000, 1000), owner(1001, 100)]);
    }

    #[test]
    fn only_inodes_with_several_names_in_the_tree_stay_linked() {
        // (index, link count, inode) by device: 1 and 4 share an inode, 0 and 3 have their
        // other names elsewhere, 2 and 5 share one on another device with 3's inode number,
        // and a third name outside the tree.
        let mut tree = Tree {
            inodes: vec![
                vec![(0, 2, 10), (1, 2, 11), (3, 3, 12), (4, 2, 11)],
                vec![(2, 3, 12), (5, 3, 12)],
            ],
            ..Tree::default()
        };
        tree.finish();
        let all: Vec<_> = tree.links.iter().collect();
        assert_eq!(all, [(0, 0), (1, 1), (2, 3), (3, 2), (4, 1), (5, 3)]);
        assert_eq!(tree.links.groups(), 4);
        let outside: Vec<_> = (0..4).map(|g| tree.links.outside(g)).collect();
        assert_eq!(outside, [true, false, true, true]);
        tree.forget_lone_links();
        let kept: Vec<_> = tree.links.iter().collect();
        assert_eq!(kept, [(1, 0), (2, 1), (4, 0), (5, 1)]);
        assert_eq!(tree.links.groups(), 2);
        assert!(!tree.links.outside(0) && tree.links.outside(1));
        assert_eq!(tree.links.group(4), Some(0));
        assert_eq!(tree.links.group(3), None);
        let mut lone = Tree {
            inodes: vec![vec![(0, 2, 10)]],
            ..Tree::default()
        };
        lone.finish();
        assert_eq!(
            lone.links.group(0),
            Some(0),
            "a destination keeps a lone name"
        );
        lone.forget_lone_links();
        assert!(lone.links.is_empty());
        assert_eq!(lone.links.groups(), 0);
    }

    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
    }

    #[test]
    fn paths_and_targets_come_back_as_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let mut tree = Tree::default();
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"a/\xff\n"));
        let time = Mtime::default();
        tree.push_raw(Path::new("a"), Tag::Dir, 0, time, 0o755, None);
        tree.push_raw(odd, Tag::File, 3, time, 0o644, None);
        tree.push_raw(
            Path::new("a/l"),
            Tag::Symlink,
            0,
            time,
            0o777,
            Some(Path::new("../t")),
        );
        assert_eq!(tree.path_at(1), odd);
        assert_eq!(tree.entries[2].size, 4);
        assert_eq!(tree.target(&tree.entries[2]), Some(Path::new("../t")));
        assert_eq!(tree.target(&tree.entries[1]), None);
        let flat = tree.renamed(vec![(2, Path::new("l")), (1, Path::new("x"))]);
        assert_eq!(flat.path_at(0), Path::new("l"));
        assert_eq!(flat.origin(0), Path::new("a/l"));
        assert_eq!(flat.target(&flat.entries[0]), Some(Path::new("../t")));
        assert_eq!(flat.origin(1), odd);
    }

    #[test]
    fn merge_pairs_paths_in_one_pass() {
        let build = |paths: &[&str]| {
            let mut tree = Tree::default();
            for p in paths {
                tree.push_raw(Path::new(p), Tag::File, 0, Mtime::default(), 0o644, None);
            }
            tree
        };
        let (a, b) = (build(&["a", "a/x", "c"]), build(&["a", "a-b", "c", "d"]));
        let pairs: Vec<_> = merge(&a, &b).collect();
        use Pair::*;
        assert_eq!(pairs, [Both(0, 0), Left(1), Right(1), Both(2, 2), Right(3)]);
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
