//! Directory handles: how every write finds its directory without following a link.
//!
//! A [`Base`] is a directory a run writes in (DST, or the backup directory), opened once. A
//! directory below it is reached one component at a time with
//! `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)`: a symlink found where a directory was listed —
//! even one swapped in while the run goes on — stops the walk with an error instead of leading
//! out of the tree. Each thread keeps a cursor per base on the last directory it was in, and
//! moves it step by step: down by name, up by `..`, each step up checked against the device and
//! inode recorded on the way down (a directory moved elsewhere meanwhile sends the cursor back
//! to the base). Work in path order therefore opens each directory about once per worker, the
//! cursor holds one descriptor whatever the depth, and nothing recurses: the only depth limit
//! is the filesystem's.
//!
//! A directory that became a mount point after the run began (its mount is not among
//! [`Present`]) is not entered either: what the listing saw there is hidden under another
//! filesystem, and a deletion through it would reach that filesystem's files.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{Mode, OFlags};

use crate::mounts::Present;

/// A directory this run writes in, opened once, with the path it was given (for messages).
#[derive(Debug)]
pub struct Base {
    fd: OwnedFd,
    path: PathBuf,
    /// Tells this base's cursors from those of another.
    key: u64,
    /// The mounts there were when the run began: no other is entered.
    present: Present,
}

/// How a directory below a base is opened: a handle to walk through (no read permission
/// needed where `O_PATH` exists), never through a link.
fn open_flags() -> OFlags {
    handle_flags() | OFlags::NOFOLLOW
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn handle_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn handle_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// A directory's device, inode and mount (0 where the kernel does not tell).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Id {
    dev: u64,
    ino: u64,
    mount: u64,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn identity(fd: BorrowedFd<'_>) -> io::Result<Id> {
    use rustix::fs::{AtFlags, StatxFlags};
    let wanted = StatxFlags::INO | crate::mounts::KEY;
    let stat = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, wanted)?;
    Ok(Id {
        dev: rustix::fs::makedev(stat.stx_dev_major, stat.stx_dev_minor),
        ino: stat.stx_ino,
        mount: crate::mounts::told(&stat).unwrap_or(0),
    })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn identity(fd: BorrowedFd<'_>) -> io::Result<Id> {
    let stat = rustix::fs::fstat(fd)?;
    Ok(Id {
        dev: stat.st_dev as u64,
        ino: stat.st_ino as u64,
        mount: 0,
    })
}

impl Base {
    /// Open the directory at `path` (the root given by the user: a link there is followed);
    /// below it, only the `present` mounts are entered.
    pub fn open(path: &Path, present: Present) -> io::Result<Base> {
        let fd = rustix::fs::open(path, handle_flags(), Mode::empty())?;
        Ok(Base::from_fd(fd, path, present))
    }

    /// A base on a directory handle already open (one reached through another base), known
    /// by `path` in messages.
    pub fn from_fd(fd: OwnedFd, path: &Path, present: Present) -> Base {
        static KEYS: AtomicU64 = AtomicU64::new(0);
        Base {
            fd,
            path: path.to_path_buf(),
            key: KEYS.fetch_add(1, Ordering::Relaxed),
            present,
        }
    }

    /// The mounts this base enters.
    pub fn present(&self) -> &Present {
        &self.present
    }

    /// The path of `rel` below the base, for messages.
    pub fn path(&self, rel: &Path) -> PathBuf {
        joined(&self.path, rel)
    }

    /// Run `f` on a handle of directory `dir` (relative to the base; `""` is the base itself).
    pub fn in_dir<T>(&self, dir: &Path, f: impl FnOnce(BorrowedFd<'_>) -> T) -> io::Result<T> {
        self.walk(dir, false, f)
    }

    /// [`Base::in_dir`], creating the directories that are missing (owner-only, as every
    /// directory a run makes before it gets its real mode).
    pub fn in_new_dir<T>(&self, dir: &Path, f: impl FnOnce(BorrowedFd<'_>) -> T) -> io::Result<T> {
        self.walk(dir, true, f)
    }

    fn walk<T>(
        &self,
        dir: &Path,
        create: bool,
        f: impl FnOnce(BorrowedFd<'_>) -> T,
    ) -> io::Result<T> {
        // The cursor is taken out while in use, so that a walk in another base (the backup
        // directory, from inside a walk in DST) has its own.
        let mut cursor = CURSORS
            .with(|cursors| {
                let mut cursors = cursors.borrow_mut();
                let at = cursors.iter().position(|c| c.key == self.key)?;
                Some(cursors.swap_remove(at))
            })
            .map_or_else(|| Cursor::at_base(self), Ok)?;
        let moved = match plain(dir.as_os_str().as_bytes()) {
            true => cursor.go(self, dir.as_os_str().as_bytes(), create),
            false => Err(not_plain()),
        };
        let result = moved.map(|()| f(cursor.fd.as_fd()));
        CURSORS.with(|cursors| {
            let mut cursors = cursors.borrow_mut();
            // Cursors of bases that are gone are of no use: keep a few at most.
            if cursors.len() >= 4 {
                cursors.remove(0);
            }
            cursors.push(cursor);
        });
        result
    }
}

/// `root.join(rel)` in one allocation: a copy names its source and its target for messages,
/// and `join` grows its buffer once more for each. An empty `rel` is `root` itself, with no
/// trailing slash.
pub fn joined(root: &Path, rel: &Path) -> PathBuf {
    let mut path = PathBuf::with_capacity(root.as_os_str().len() + 1 + rel.as_os_str().len());
    path.push(root);
    if !rel.as_os_str().is_empty() {
        path.push(rel);
    }
    path
}

/// Whether a path below a base names a place below it: every part a plain name (no `.`,
/// `..`, empty part or leading `/`). Listings only make such paths; this is the last guard.
pub(crate) fn plain(path: &[u8]) -> bool {
    path.is_empty()
        || path
            .split(|&b| b == b'/')
            .all(|part| !part.is_empty() && part != b"." && part != b"..")
}

/// The error for an entry `name` that a filesystem was mounted on since the run began.
pub(crate) fn mounted_since(name: &OsStr) -> io::Error {
    io::Error::other(format!(
        "a filesystem was mounted on '{}' during the run: left alone (what was listed there is \
         hidden under it)",
        crate::plan::Escaped(Path::new(name))
    ))
}

/// The error for a path that is not [`plain`].
pub(crate) fn not_plain() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the path has a '.', '..' or empty part: it would leave the mirror's root",
    )
}

impl AsFd for Base {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

thread_local! {
    static CURSORS: RefCell<Vec<Cursor>> = const { RefCell::new(Vec::new()) };
}

/// Where one thread last was below one base.
struct Cursor {
    key: u64,
    /// The open directory.
    fd: OwnedFd,
    /// Its path below the base (normal: no `.`, `..` or doubled slashes), and where each of
    /// its components ends in it: paths are compared as bytes, never component by component.
    path: Vec<u8>,
    ends: Vec<usize>,
    /// Device, inode and mount of the base and of each directory on the way.
    ids: Vec<Id>,
}

impl Cursor {
    fn at_base(base: &Base) -> io::Result<Cursor> {
        let fd = rustix::fs::openat(&base.fd, ".", open_flags(), Mode::empty())?;
        let ids = vec![identity(fd.as_fd())?];
        Ok(Cursor {
            key: base.key,
            fd,
            path: Vec::new(),
            ends: Vec::new(),
            ids,
        })
    }

    /// Move to the directory `target` (a normal path below the base, as bytes).
    fn go(&mut self, base: &Base, target: &[u8], create: bool) -> io::Result<()> {
        while let Some(&end) = self.ends.last() {
            let shared = target.len() >= end
                && target[..end] == self.path[..end]
                && (target.len() == end || target[end] == b'/');
            if shared {
                break;
            }
            if self.up().is_err() {
                *self = Cursor::at_base(base)?;
                break;
            }
        }
        let mut at = self.ends.last().map_or(0, |&end| end + 1);
        while at < target.len() {
            let next = target[at..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(target.len(), |n| at + n);
            self.down(OsStr::from_bytes(&target[at..next]), create, &base.present)?;
            at = next + 1;
        }
        Ok(())
    }

    /// One step up, through `..`, to the directory this cursor came from: anything else (the
    /// directory was moved or removed meanwhile) is an error.
    fn up(&mut self) -> io::Result<()> {
        let parent = rustix::fs::openat(&self.fd, "..", open_flags(), Mode::empty())?;
        let expected = self.ids[self.ids.len() - 2];
        if identity(parent.as_fd())? != expected {
            return Err(io::Error::other("the directory was moved during the run"));
        }
        self.fd = parent;
        self.ids.pop();
        self.ends.pop();
        let end = self.ends.last().copied().unwrap_or(0);
        self.path.truncate(end);
        Ok(())
    }

    /// One step down, into `name`, never through a link, nor into a filesystem mounted there
    /// since the run began.
    fn down(&mut self, name: &OsStr, create: bool, present: &Present) -> io::Result<()> {
        let opened = match rustix::fs::openat(&self.fd, name, open_flags(), Mode::empty()) {
            Err(rustix::io::Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&self.fd, name, Mode::RWXU) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                rustix::fs::openat(&self.fd, name, open_flags(), Mode::empty())
            }
            other => other,
        };
        let fd = opened.map_err(|e| match e {
            // O_NOFOLLOW on a link: say what it is.
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => io::Error::new(
                io::ErrorKind::NotADirectory,
                format!(
                    "'{}' is no longer a directory (a symlink or file took its place)",
                    crate::plan::Escaped(Path::new(name))
                ),
            ),
            e => e.into(),
        })?;
        let id = identity(fd.as_fd())?;
        let here = self.ids[self.ids.len() - 1];
        if id.mount != here.mount && !present.allows(id.mount) {
            return Err(mounted_since(name));
        }
        self.ids.push(id);
        if !self.path.is_empty() {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(name.as_bytes());
        self.ends.push(self.path.len());
        self.fd = fd;
        Ok(())
    }
}
