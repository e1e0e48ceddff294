//! The two ends of a run: the [`Origin`] it reads and the [`Destination`] it writes.
//!
//! The scanner, planner and reporters never see how either side stores things. A run opens
//! SRC as an [`Origin`] and DST as a [`Destination`] — a local folder ([`Folder`], [`Local`],
//! reading and writing through [`crate::fsops`]) or, with the `s3` and `sftp` features, a
//! bucket prefix or a folder on an SSH host (see [`crate::remote`]), in any pairing. An origin
//! lists its tree and opens files for reading: a local one as file handles (so a local copy
//! keeps `copy_file_range`, holes and attributes), a remote one as a stream of bytes that
//! checks itself. A destination carries out the plan's steps, each blocking, safe to call from
//! many workers at once; every error names the path as the user wrote it.
//!
//! The types both sides share live here too: what a copy expects of its source and how it
//! ended, the temporaries' names (one pattern, so the next run sweeps what a killed one left)
//! and the names of kept backups.

mod local;

pub use local::{Folder, Local, Prior};

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{Compare, Xattrs};
use crate::entry::{merge, Chown, Mtime, Pair, Tag, Tree};
use crate::error::{Error, Op, Result};
use crate::filter::Filter;
use crate::fsops::{Base, Node};
use crate::xattrs::Differs;

const TEMP_PREFIX: &str = ".syncease-";
const TEMP_SUFFIX: &str = ".tmp";

/// True for names of temporaries this tool creates (`.syncease-XXXXXX.tmp`).
pub fn is_temp_name(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Some(name) = path.file_name() else {
        return false;
    };
    let name = name.as_bytes();
    name.len() > TEMP_PREFIX.len() + TEMP_SUFFIX.len()
        && name.starts_with(TEMP_PREFIX.as_bytes())
        && name.ends_with(TEMP_SUFFIX.as_bytes())
}

/// True for a destination entry that is a temporary of this tool: a file, link or special
/// file (never a directory, whatever its name) named like one.
pub fn is_temporary(path: &Path, tag: Tag) -> bool {
    tag != Tag::Dir && is_temp_name(path)
}

/// How a file copy ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Copied {
    /// The file is in place; this many bytes were written.
    Done(u64),
    /// The source file disappeared before it could be opened.
    Vanished,
}

/// Why a copy did not complete.
#[derive(Debug)]
pub enum CopyError {
    /// The source's size or mtime moved while it was read; nothing was renamed into place.
    Changed,
    /// The remote source's connection was lost while it was read (opening it again connects
    /// again); nothing was renamed into place.
    Interrupted,
    /// The run was told to stop (a signal) while the file was copied; nothing was placed.
    Stopped,
    Io(Error),
}

impl CopyError {
    /// What an error in reading a source means for its copy, when it is not a failure of the
    /// read itself: the file changed, its connection was lost, or the run was told to stop.
    pub fn of_read(e: &io::Error) -> Option<CopyError> {
        if is_changed(e) {
            Some(CopyError::Changed)
        } else if is_interrupted(e) {
            Some(CopyError::Interrupted)
        } else if crate::interrupt::is_stopped(e) {
            Some(CopyError::Stopped)
        } else {
            None
        }
    }
}

impl From<Error> for CopyError {
    fn from(e: Error) -> Self {
        CopyError::Io(e)
    }
}

/// What a destination path held when it was listed, before a file is written there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Nothing: the file is new.
    Nothing,
    /// An entry of the same type, replaced atomically.
    Same,
    /// An entry of another type (`Tag`), which has to make room first.
    Other(Tag),
}

impl Held {
    /// The entry of another type that has to make room, if any.
    pub fn other(self) -> Option<Tag> {
        match self {
            Held::Other(tag) => Some(tag),
            Held::Nothing | Held::Same => None,
        }
    }
}

/// What the listing said about a source file, and what its copy gets; a copy whose source no
/// longer matches it after the copy is not renamed into place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    pub mtime: Mtime,
    pub mode: u16,
    /// The owner and group to give the copy.
    pub owner: Chown,
    /// Size and mtime are to be taken afresh from the opened source (a second try, after it
    /// changed while being copied); the mode and owner stay as planned.
    pub fresh: bool,
    /// The extended attributes and ACLs copied with the contents.
    pub xattrs: Xattrs,
    /// Holes stay holes (`--no-sparse`: written out as zeros).
    pub sparse: bool,
    /// The destination keeps permission bits: set them (some that keep none refuse `chmod`).
    pub modes: bool,
    /// The copy is to be a file of its own, not a hard link to an earlier snapshot's: it is
    /// written to part it from the names it shared an inode with.
    pub own: bool,
    /// An earlier snapshot's file stands for the copy only with the same contents, not only
    /// the same size and time (`--checksum`).
    pub contents: bool,
}

impl Expected {
    /// True when the source still is what was expected, `read` bytes having been copied from
    /// it: the check made after every copy, before its result may replace the target.
    pub fn still_holds(&self, file: &File, read: u64) -> io::Result<bool> {
        let after = file.metadata()?;
        Ok(read == self.size && after.len() == self.size && Mtime::of(&after) == self.mtime)
    }

    /// What to expect of a file read afresh (its size and time as it is now), with no mode,
    /// owner or attributes to give a copy: for reading a source again outside a copy.
    pub fn fresh() -> Expected {
        Expected {
            size: 0,
            mtime: Mtime::default(),
            mode: 0,
            owner: Chown::default(),
            fresh: true,
            xattrs: Xattrs::default(),
            sparse: false,
            modes: false,
            own: false,
            contents: false,
        }
    }
}

/// A fresh temporary name (`.syncease-PID<kind>N.tmp`) for a file (`kind` 'f'), a symlink
/// ('l') or a file written by a remote destination ('s'). All match [`is_temp_name`], so the
/// next run sweeps what a killed one left.
pub fn temp_name(kind: char) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{TEMP_PREFIX}{:x}{kind}{n}{TEMP_SUFFIX}",
        std::process::id()
    )
}

/// The cause given when a directory to be replaced is not empty.
pub fn still_holds(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        "it still holds entries that are not to be deleted (excluded, or made during the run)",
    )
}

/// The name a kept backup of `name` takes when `n` earlier ones hold the plain name and the
/// slots before it: `name`, `name.~1~`, `name.~2~`, … (GNU `cp --backup=numbered`'s form).
pub fn backup_slot(name: impl AsRef<std::ffi::OsStr>, n: u32) -> std::ffi::OsString {
    let mut slot = name.as_ref().to_os_string();
    if n > 0 {
        slot.push(format!(".~{n}~"));
    }
    slot
}

/// A file below SRC: a path in the origin's tree.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub origin: &'a dyn Origin,
    pub rel: &'a Path,
}

impl Source<'_> {
    /// Its path, for messages.
    pub fn path(&self) -> PathBuf {
        self.origin.path(self.rel)
    }

    /// Open it for reading (see [`Origin::open`]).
    pub fn open(&self, expected: Expected) -> Result<Option<(Opened, Expected)>> {
        self.origin.open(self.rel, expected)
    }
}

impl std::fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Source").field(&self.path()).finish()
    }
}

/// A source file opened for reading.
pub enum Opened {
    /// A local file: copied between handles (`copy_file_range`, holes, attributes) and
    /// checked against what was expected by its metadata once read.
    File(File),
    /// A remote file's bytes, in order. The stream checks itself: it ends in an error, never
    /// in a short or different copy, when the bytes are not the ones listed (length, the
    /// server's checksum where it gives one), and in [`changed`] when the file was replaced
    /// since it was listed.
    Stream(Stream),
    /// A local file listed as empty: there is nothing to read, so it is not opened, and its
    /// copy is the file as it was listed (a change since is a new mtime, copied next run).
    Empty,
}

/// The bytes of a remote file, and their MD5 when the server gave it beforehand (an upload
/// to S3 in parts records it).
#[allow(missing_debug_implementations)]
pub struct Stream {
    pub bytes: Box<dyn Read + Send>,
    pub md5: Option<[u8; 16]>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Opened::File(file) => f.debug_tuple("File").field(file).finish(),
            Opened::Stream(stream) => f.debug_tuple("Stream").field(&stream.md5).finish(),
            Opened::Empty => f.write_str("Empty"),
        }
    }
}

impl Opened {
    /// True when the source still is what was expected, `read` bytes having been copied
    /// from it (a stream checked itself while it was read).
    pub fn still_holds(&self, expected: &Expected, read: u64) -> io::Result<bool> {
        match self {
            Opened::File(file) => expected.still_holds(file, read),
            Opened::Stream(_) | Opened::Empty => Ok(read == expected.size),
        }
    }
}

impl Read for Opened {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Opened::File(file) => file.read(buf),
            Opened::Stream(stream) => stream.bytes.read(buf),
            Opened::Empty => Ok(0),
        }
    }
}

/// The error a stream ends in when the remote file changed since it was listed: the copy is
/// not placed and is tried again with the file as it is now (see [`CopyError::Changed`]).
pub fn changed() -> io::Error {
    io::Error::other(Changed)
}

/// Whether `e` is the [`changed`] error, as it came out of a stream.
pub fn is_changed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Changed>())
}

/// Reads of one file cut by a lost connection that are done again (each on a connection made
/// again): a host that keeps dropping is given up on after this many, for that file.
pub const READS_CUT: u32 = 3;

/// The error a stream ends in when its connection was lost: the copy is not placed and is
/// tried again (see [`CopyError::Interrupted`]).
pub fn interrupted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, Interrupted)
}

/// Whether `e` is the [`interrupted`] error, as it came out of a stream.
pub fn is_interrupted(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Interrupted>())
}

#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection to its source was lost while it was read")
    }
}

impl std::error::Error for Interrupted {}

#[derive(Debug)]
struct Changed;

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("it changed while being copied")
    }
}

impl std::error::Error for Changed {}

/// Where a side's root is, to tell two sides that overlap once both are open (the URLs alone
/// cannot: `/~/x` and `/home/me/x`, a symlink on the host, an SSH host that is this machine).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A folder on this machine, by its real path.
    Here(PathBuf),
    /// A place of a remote service (an S3 bucket, an SSH host and port): its root there, a
    /// `/`-separated path or prefix.
    There { service: String, root: String },
}

impl Place {
    /// Whether one holds the other, or they are the same.
    pub fn overlaps(&self, other: &Place) -> bool {
        match (self, other) {
            (Place::Here(a), Place::Here(b)) => a.starts_with(b) || b.starts_with(a),
            (
                Place::There { service, root: a },
                Place::There {
                    service: other,
                    root: b,
                },
            ) => {
                let (a, b) = (a.trim_matches('/'), b.trim_matches('/'));
                let holds = |outer: &str, inner: &str| {
                    outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}/"))
                };
                service == other && (holds(a, b) || holds(b, a))
            }
            _ => false,
        }
    }
}

/// The side a plan reads from: it lists its tree and opens files.
pub trait Origin: Sync {
    /// How `rel` (a path below the root) is named to the user.
    fn path(&self, rel: &Path) -> PathBuf;

    /// List everything below the root that the filter allows, in path order; what could not
    /// be read is in the tree's errors (the root's own error, or no root, refuses the run).
    fn scan(&self, filter: &Filter) -> Tree;

    /// What the listing knows of its entries' metadata, `None` for all of it. What it does not
    /// know is taken from the destination's entry where there is one (see [`adopt`]); a new
    /// entry gets the listing's defaults.
    fn keeps(&self) -> Option<Keeps> {
        None
    }

    /// The local folder's handle, for what only works between local files: extended
    /// attributes, hard links, checks against earlier snapshots.
    fn folder(&self) -> Option<&Base> {
        None
    }

    /// Open the file `rel` for reading, as `expected` says (its size and mtime taken as they
    /// are now when `expected.fresh`); `None` when it is gone since it was listed. A link or
    /// a FIFO found in its place is an error, never followed or waited on. A file listed as
    /// empty may be given as [`Opened::Empty`] without being looked at again. Never called
    /// from within an async runtime.
    fn open(&self, rel: &Path, expected: Expected) -> Result<Option<(Opened, Expected)>>;

    /// Where its root is (see [`Place`]); `None` where that cannot be told.
    fn place(&self) -> Option<Place> {
        None
    }

    /// For `--checksum`: whether the file `rel` holds the same bytes as `local` (read from its
    /// start), answered from a checksum the origin already has (an S3 object's MD5), without
    /// reading `rel`; `None` when it has none, and both are read and hashed.
    fn same_content(&self, _rel: &Path, _local: &mut File) -> Option<io::Result<bool>> {
        None
    }

    /// The origin as its own type, for a destination that can copy from it without the bytes
    /// passing through here (a server-side copy within one S3 bucket).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// The side a plan is carried out against: the side written.
pub trait Destination: Sync {
    /// How `rel` (a path below the destination root) is named to the user.
    fn path(&self, rel: &Path) -> PathBuf;

    /// False when symlinks cannot be stored: the source's are then skipped with a warning.
    fn stores_symlinks(&self) -> bool {
        true
    }

    /// False when names must be UTF-8 text: source entries with other names are then skipped
    /// with a warning each.
    fn stores_byte_names(&self) -> bool {
        true
    }

    /// List the destination: every entry below the root that the filter allows, in path order.
    fn scan(&self, filter: &Filter) -> Tree;

    /// Called once both listings are known, before planning: complete what the listing alone
    /// cannot tell (remote metadata, content checks). Returns the source indices of same-size
    /// files whose contents differ (`--checksum`), and the errors met.
    fn refine(
        &self,
        origin: &dyn Origin,
        src: &Tree,
        dst: &mut Tree,
        compare: &Compare,
    ) -> (HashSet<u32>, Vec<Error>);

    /// Find out what the destination can hold (its root exists); `sample` names an entry in
    /// the root, if there is one. `Ok(None)` for a destination that is not probed (what it
    /// holds is known otherwise); an error when the probe failed, and nothing is known.
    fn probe(
        &self,
        _sample: Option<&std::ffi::OsStr>,
    ) -> std::io::Result<Option<crate::config::Limits>> {
        Ok(None)
    }

    /// Create the root (it was missing). Done already counts as done.
    fn make_root(&self) -> Result<()>;

    /// Rename the entry called `old` in `rel`'s directory to `rel`'s name: the same name but
    /// for case, on a destination that ignores case.
    fn respell(&self, rel: &Path, _old: &std::ffi::OsStr) -> Result<()> {
        Err(unsupported(
            Op::Respell,
            self.path(rel),
            "names that ignore case",
        ))
    }

    /// Whether the destination's root is gone (removed, or its disk unplugged) since the run
    /// opened it: checked after a write fails.
    fn vanished(&self) -> bool {
        false
    }

    /// Where its root is (see [`Place`]); `None` where that cannot be told.
    fn place(&self) -> Option<Place> {
        None
    }

    /// Where `--backup-dir` keeps what is replaced or deleted, when it is on the same side.
    fn backup_place(&self) -> Option<Place> {
        None
    }

    /// Called once after the plan was carried out (not after a dry run): keep what the next
    /// run needs (the S3 manifest). An error is a warning: nothing of the mirror depends on it.
    fn finish(&self) -> Result<()> {
        Ok(())
    }

    /// Whether the destination finds an entry at `rel` (under this spelling).
    fn exists(&self, _rel: &Path) -> bool {
        false
    }

    /// Remove a temporary that a killed run left.
    fn remove_temp(&self, rel: &Path) -> Result<()>;

    /// Make a directory writable for the run (its real mode is set at the end).
    fn open_dir(&self, rel: &Path, mode: u16) -> Result<()>;

    /// Create a directory, replacing the non-directory `replaces` at its path.
    fn make_dir(&self, rel: &Path, replaces: Option<Tag>) -> Result<()>;

    /// Copy the source file `src` to `rel`, atomically: readers see the old version or the new
    /// one, never a mix. `held` is what the listing found at `rel`.
    fn write_file(
        &self,
        src: Source<'_>,
        rel: &Path,
        expected: Expected,
        held: Held,
    ) -> std::result::Result<Copied, CopyError>;

    /// Make a symlink at `rel` with the given target text and mtime.
    fn make_symlink(
        &self,
        rel: &Path,
        target: &Path,
        mtime: Mtime,
        replaces: Option<Tag>,
        owner: Chown,
    ) -> Result<()>;

    /// Make `rel` another name of the file at `leader` (both relative to the root); `held` is
    /// what the listing found at `rel`.
    fn make_hard_link(&self, rel: &Path, _leader: &Path, _held: Held) -> Result<()> {
        Err(unsupported(Op::Link, self.path(rel), "hard links"))
    }

    /// Make a FIFO, socket or device node at `rel`, replacing the non-directory `replaces`.
    fn make_special(&self, rel: &Path, _node: Node, _replaces: Option<Tag>) -> Result<()> {
        Err(unsupported(Op::MakeNode, self.path(rel), "special files"))
    }

    /// Give an entry whose contents are already right its owner, mode and/or mtime. `src` is
    /// the source file, for destinations that can only change metadata by writing again.
    /// `links` is the link count the file had when DST was listed: a file that has more names
    /// now was linked elsewhere meanwhile, and a change through it would reach them.
    #[allow(clippy::too_many_arguments)]
    fn fix(
        &self,
        src: Source<'_>,
        rel: &Path,
        tag: Tag,
        links: u32,
        mode: Option<u16>,
        mtime: Option<Mtime>,
        owner: Chown,
    ) -> Result<()>;

    /// Give the entry `rel` exactly the extended attributes and ACLs `which` covers that the
    /// source entry `src` has.
    fn copy_xattrs(&self, _src: Source<'_>, rel: &Path, _which: Xattrs) -> Result<()> {
        Err(unsupported(
            Op::SetXattrs,
            self.path(rel),
            "extended attributes",
        ))
    }

    /// The source entries whose destination entry differs in the attributes `which` covers
    /// (see [`crate::xattrs`]), and the errors reading the source's.
    fn xattrs_differing(
        &self,
        _origin: &dyn Origin,
        _src: &Tree,
        _dst: &Tree,
        _which: Xattrs,
        _rule: &Compare,
    ) -> (HashMap<u32, Differs>, Vec<Error>) {
        (HashMap::new(), Vec::new())
    }

    /// Remove an entry (a directory is empty by now). Already gone counts as done.
    fn remove(&self, rel: &Path, tag: Tag) -> Result<()>;

    /// How many entries one call of [`Destination::remove_files`] takes: 1 where removing
    /// them one by one costs no more (the workers remove in parallel).
    fn batch(&self) -> usize {
        1
    }

    /// Remove entries that are not directories, as [`Destination::remove`] does; one result
    /// per entry, in their order. A store that removes many in one request (S3: 1,000) does.
    fn remove_files(&self, entries: &[(&Path, Tag)]) -> Vec<Result<()>> {
        entries
            .iter()
            .map(|&(rel, tag)| self.remove(rel, tag))
            .collect()
    }

    /// Set a directory's mode and mtime, once nothing below it changes any more.
    /// `mode` is `None` where the destination keeps no permission bits (some refuse the call).
    fn set_dir_meta(&self, rel: &Path, mode: Option<u16>, mtime: Mtime, owner: Chown)
        -> Result<()>;
}

/// What a side keeps of an entry's metadata. What a destination does not keep is taken from
/// the source's entry, and what an origin does not keep from the destination's, so the
/// planner sees no difference it could never fix (or would make up).
#[derive(Clone, Debug)]
pub struct Keeps {
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

/// Line up the listing `into` with what its side keeps (see [`Keeps`]), taking what it does
/// not keep from `from`, the other side's listing: the root, and every path both have with
/// the same type.
pub fn adopt(from: &Tree, into: &mut Tree, keeps: &Keeps) {
    let (src, dst) = (from, into);
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

/// What a destination that cannot hold `what` answers (the planner never asks it to).
fn unsupported(op: Op, path: PathBuf, what: &str) -> Error {
    let cause = std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("this destination cannot hold {what}"),
    );
    Error::new(op, path, cause)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Kind;

    #[test]
    fn temp_names_are_recognised_only_in_full() {
        assert!(is_temp_name(Path::new("a/.syncease-Ab12Cd.tmp")));
        assert!(!is_temp_name(Path::new(".syncease-.tmp")));
        assert!(!is_temp_name(Path::new("syncease-x.tmp")));
        assert!(!is_temp_name(Path::new(".syncease-x.tmp/child")));
        let name = Path::new(".syncease-Ab12Cd.tmp");
        assert!(is_temporary(name, Tag::File) && is_temporary(name, Tag::Symlink));
        assert!(is_temporary(name, Tag::Special(Kind::Fifo)));
        assert!(!is_temporary(name, Tag::Dir));
    }

    #[test]
    fn places_overlap_when_one_holds_the_other_on_one_service() {
        let here = |p: &str| Place::Here(PathBuf::from(p));
        let there = |s: &str, r: &str| Place::There {
            service: s.into(),
            root: r.into(),
        };
        assert!(here("/a/b").overlaps(&here("/a")) && here("/a").overlaps(&here("/a/b")));
        assert!(!here("/a/bc").overlaps(&here("/a/b")));
        assert!(there("h", "/x").overlaps(&there("h", "/x/y/")));
        assert!(there("h", "/").overlaps(&there("h", "/x")));
        assert!(!there("h", "/x").overlaps(&there("g", "/x")));
        assert!(!there("h", "/x").overlaps(&there("h", "/xy")));
        assert!(!there("h", "/x").overlaps(&here("/x")));
    }

    #[test]
    fn backups_take_the_plain_name_then_numbered_ones() {
        assert_eq!(backup_slot("a.txt", 0), "a.txt");
        assert_eq!(backup_slot("a.txt", 1), "a.txt.~1~");
        assert_eq!(backup_slot("d/a", 12), "d/a.~12~");
    }
}
