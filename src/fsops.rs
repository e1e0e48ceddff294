//! The only code that writes below DST and the backup directory.
//!
//! Every write goes through a handle on its parent directory ([`Base`]: each directory opened
//! with `O_NOFOLLOW`, one component at a time) and names the entry in it with `*at` calls
//! (`openat`, `mkdirat`, `symlinkat`, `linkat`, `renameat`, `unlinkat`,
//! `utimensat(AT_SYMLINK_NOFOLLOW)`); modes are set on a handle of the entry itself. No path is
//! resolved again after the listing, so a symlink swapped in for a directory while the run goes
//! on is an error for what was to be written below it, never a way out of DST.
//!
//! Files and symlinks are first made under a temporary name in their target directory, given
//! their mode and mtime, and only then renamed over the target, so an interrupted run leaves
//! either the old or the new version at every path, never a mix. A new file is written without
//! a name at all (`O_TMPFILE`) and linked into place when complete. Temporary names follow one
//! pattern ([`crate::endpoint::is_temp_name`]) so the next run can sweep what a killed run left.

mod base;
mod probe;
mod xattr;

pub use base::{joined, Base};
pub use probe::probe;
pub use xattr::{refused as xattr_refused, Attrs};

use std::ffi::{OsStr, OsString};
use std::fs::{File, Permissions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use tracing::debug;

use crate::config::Xattrs;
use crate::endpoint::{Copied, CopyError, Expected, Held, Opened, Source};
use crate::entry::{Chown, Kind, Mtime, Tag};
use crate::error::{Context, Error, Op, Result};
use crate::interrupt;

/// What becomes of a destination entry that is overwritten or deleted.
#[derive(Clone, Copy, Debug)]
pub enum Displaced<'a> {
    /// It is gone.
    Destroy,
    /// It is kept in the backup directory `dir` at its relative path `rel` (`--backup-dir`).
    Backup { dir: BackupDir<'a>, rel: &'a Path },
}

/// The backup directory (`--backup-dir`), made and opened when the first entry is kept in it:
/// a run that displaces nothing leaves no folder behind. One inside DST is reached (and its
/// missing folders made) through DST's directory handles, never through a link.
#[derive(Clone, Copy, Debug)]
pub struct BackupDir<'a> {
    /// Its handle, once opened.
    pub opened: &'a OnceLock<Base>,
    pub path: &'a Path,
    /// DST and the backup directory's path below it, when it lies there.
    pub inside: Option<(&'a Base, &'a Path)>,
    /// The mounts there were when the run began: a folder mounted on since is not entered.
    pub present: &'a crate::mounts::Present,
}

impl<'a> BackupDir<'a> {
    fn base(self) -> Result<&'a Base> {
        if let Some(base) = self.opened.get() {
            return Ok(base);
        }
        let base = match self.inside {
            Some((dst, rel)) => dst
                .in_new_dir(rel, |fd| rustix::io::fcntl_dupfd_cloexec(fd, 0))
                .and_then(|fd| Ok(Base::from_fd(fd?, self.path, self.present.clone()))),
            // Elsewhere its path is the user's, as the roots are: links on it are followed.
            None => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(self.path)
                .and_then(|()| Base::open(self.path, self.present.clone())),
        };
        let base = base.at(Op::MakeDir, self.path)?;
        Ok(self.opened.get_or_init(|| base))
    }
}

/// Make an entry under a fresh temporary name in the directory `dir` with `make`, trying the
/// next name while one is taken; returns the name.
fn new_temp(
    kind: char,
    mut make: impl FnMut(&OsStr) -> rustix::io::Result<()>,
) -> io::Result<OsString> {
    loop {
        let name = OsString::from(crate::endpoint::temp_name(kind));
        match make(&name) {
            Err(rustix::io::Errno::EXIST) => continue,
            other => return other.map(|()| name).map_err(io::Error::from),
        }
    }
}

/// The process umask, read once before any worker starts (see [`prepare`]).
static UMASK: AtomicU32 = AtomicU32::new(0o022);

/// Read the umask (setting it back at once) while no other thread creates files.
pub fn prepare() {
    use rustix::fs::Mode;
    let mask = rustix::process::umask(Mode::empty());
    rustix::process::umask(mask);
    UMASK.store(mask.bits(), Ordering::Relaxed);
    UNNAMED.store(true, Ordering::Relaxed);
}

/// Open the file `rel` below SRC (or DST) for reading, through directory handles (no path is
/// resolved again, no link followed, and no depth is too deep): a link or a FIFO found in
/// its place is an error, never followed or waited on.
pub fn open_read(base: &Base, rel: &Path) -> io::Result<File> {
    let (dir, name) = split(rel);
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let opened = base.in_dir(dir, |fd| rustix::fs::openat(fd, name, flags, Mode::empty()))?;
    Ok(File::from(opened?))
}

/// Open a source file for copying, with what it is expected to be (its size and mtime taken
/// afresh when asked). `None` when the file vanished since it was listed.
/// A link or a FIFO found in its place is an error, never followed or waited on.
pub fn open_source(
    base: &Base,
    rel: &Path,
    expected: Expected,
) -> Result<Option<(File, Expected)>> {
    let from = match open_read(base, rel) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::new(Op::OpenSource, base.path(rel), e)),
    };
    let mut expected = expected;
    if expected.fresh {
        let meta = from.metadata().at(Op::Stat, &base.path(rel))?;
        expected.size = meta.len();
        expected.mtime = Mtime::of(&meta);
    }
    Ok(Some((from, expected)))
}

/// The directory and the name of the entry `rel` (never empty).
fn split(rel: &Path) -> (&Path, &OsStr) {
    let name = rel.file_name().unwrap_or(rel.as_os_str());
    (rel.parent().unwrap_or(Path::new("")), name)
}

/// Run `f` on the handle of `rel`'s directory below `base`; an error reaching it is an error
/// of `op` on `rel`'s directory.
fn in_parent<T>(
    base: &Base,
    rel: &Path,
    op: Op,
    f: impl FnOnce(BorrowedFd<'_>, &OsStr) -> Result<T, CopyError>,
) -> Result<T, CopyError> {
    let (dir, name) = split(rel);
    if !base::plain(std::os::unix::ffi::OsStrExt::as_bytes(name)) {
        return Err(CopyError::Io(Error::new(
            op,
            base.path(rel),
            base::not_plain(),
        )));
    }
    base.in_dir(dir, |fd| f(fd, name))
        .map_err(|e| CopyError::Io(Error::new(op, base.path(rel), e)))?
}

/// [`in_parent`] for operations that cannot end in [`CopyError::Changed`].
fn at_parent<T>(
    base: &Base,
    rel: &Path,
    op: Op,
    f: impl FnOnce(BorrowedFd<'_>, &OsStr) -> Result<T>,
) -> Result<T> {
    in_parent(base, rel, op, |fd, name| f(fd, name).map_err(CopyError::Io)).map_err(|e| match e {
        CopyError::Io(e) => e,
        CopyError::Changed | CopyError::Interrupted | CopyError::Stopped => {
            unreachable!("only copies see a source change or a stop")
        }
    })
}

/// Copy `src` to `rel` below `dst` through a temporary file in its directory; `held` is what
/// the destination held there when it was listed (an emptied directory is removed just before
/// the rename). `expected` is the listing's view of the source and what the copy gets (its
/// size and mtime taken afresh when trying again after the source changed).
///
/// A new file (`Held::Nothing`) is written to an unnamed temporary (`O_TMPFILE`) and linked
/// into place once complete: no name to create and rename, and nothing left behind if the run
/// is killed. Where that is not possible the named temporary is used, as for every update.
pub fn copy_file(
    src: Source<'_>,
    dst: &Base,
    rel: &Path,
    expected: Expected,
    held: Held,
    displaced: Displaced<'_>,
) -> Result<Copied, CopyError> {
    let Some((mut from, expected)) = src.open(expected)? else {
        return Ok(Copied::Vanished);
    };
    let from = &mut from;
    let path = dst.path(rel);
    let src = &src.path();
    in_parent(dst, rel, Op::CreateTemp, |dir, name| {
        if held == Held::Nothing && UNNAMED.load(Ordering::Relaxed) {
            let at = At {
                dir,
                name,
                path: &path,
            };
            if let Some(copied) = copy_unnamed(from, src, at, &expected, displaced)? {
                return Ok(copied);
            }
        }
        let parent = path.parent().unwrap_or(&path);
        let mode = Mode::from_raw_mode(u32::from(expected.mode) & 0o777);
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut file = None;
        let temp = new_temp('f', |temp| {
            file = Some(File::from(rustix::fs::openat(dir, temp, flags, mode)?));
            Ok(())
        })
        .at(Op::CreateTemp, parent)?;
        let file = file.expect("made with its name");
        let written = fill(from, &file, src, &path, &expected);
        drop(file);
        let placed = written.and_then(|written| {
            let at = At {
                dir,
                name,
                path: &path,
            };
            place(at, &temp, held.other(), displaced)?;
            settle_time(at, expected.mtime)?;
            Ok(written)
        });
        if placed.is_err() {
            let _ = rustix::fs::unlinkat(dir, &temp, AtFlags::empty());
        }
        placed.map(Copied::Done)
    })
}

/// An entry by its directory's handle and its name, with its path for messages.
#[derive(Clone, Copy)]
struct At<'a> {
    dir: BorrowedFd<'a>,
    name: &'a OsStr,
    path: &'a Path,
}

/// The copy of a new file through an unnamed temporary; `None` when it has to be made again
/// through a named one (no unnamed file here, or it could not be linked).
fn copy_unnamed(
    from: &mut Opened,
    src: &Path,
    at: At<'_>,
    expected: &Expected,
    displaced: Displaced<'_>,
) -> Result<Option<Copied>, CopyError> {
    let Some(temp) = unnamed_in(at.dir, expected.mode) else {
        return Ok(None);
    };
    let written = fill(from, &temp, src, at.path, expected)?;
    match link_unnamed(&temp, at.dir, at.name) {
        Ok(()) => {
            settle_time(at, expected.mtime)?;
            Ok(Some(Copied::Done(written)))
        }
        // Something was put at the target since it was listed: replace it atomically, like
        // any other file.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let parent = at.path.parent().unwrap_or(at.path);
            let name = new_temp('f', |name| link_unnamed_raw(&temp, at.dir, name))
                .at(Op::CreateTemp, parent)?;
            if let Err(e) = place(at, &name, None, displaced) {
                let _ = rustix::fs::unlinkat(at.dir, &name, AtFlags::empty());
                return Err(e.into());
            }
            settle_time(at, expected.mtime)?;
            Ok(Some(Copied::Done(written)))
        }
        // Linking an unnamed file is refused (older kernels allow it only to privileged
        // processes): name every temporary from now on, starting with this one.
        Err(e) => {
            debug!(dst = %at.path.display(), error = %e, "unnamed temporaries unusable");
            UNNAMED.store(false, Ordering::Relaxed);
            match from {
                // Copied at explicit offsets (or nothing to read): it is read again from its
                // start as it is.
                Opened::File(_) | Opened::Empty => Ok(None),
                // A stream cannot be read again: the copy is tried again from a new one (with
                // a named temporary, as from now on).
                Opened::Stream(_) => Err(CopyError::Changed),
            }
        }
    }
}

/// Copy the source's contents into the temporary `to`, check the source did not change while
/// it was read, and give the copy its mode and mtime. Returns the bytes copied.
fn fill(
    from: &mut Opened,
    to: &File,
    src: &Path,
    dst: &Path,
    expected: &Expected,
) -> Result<u64, CopyError> {
    let written = match from {
        Opened::File(file) => copy_contents(file, to, expected.size, expected.sparse),
        Opened::Stream(stream) => write_stream(&mut stream.bytes, to),
        Opened::Empty => Ok(0),
    };
    let written = match written {
        Ok(written) => written,
        Err(e) => {
            return Err(CopyError::of_read(&e).unwrap_or_else(|| Error::copy(src, dst, e).into()))
        }
    };
    if !from.still_holds(expected, written).at(Op::Stat, src)? {
        return Err(CopyError::Changed);
    }
    // The owner first: a chown clears setuid and setgid bits, which the mode then sets.
    let owner = expected.owner;
    if !owner.is_empty() {
        let uid = owner.uid.map(rustix::fs::Uid::from_raw);
        let gid = owner.gid.map(rustix::fs::Gid::from_raw);
        rustix::fs::fchown(to, uid, gid).at(Op::SetOwner, dst)?;
    }
    let mode = u32::from(expected.mode);
    let umask = UMASK.load(Ordering::Relaxed);
    if expected.modes && (mode & !0o777 != 0 || mode & umask != 0) {
        match to.set_permissions(Permissions::from_mode(mode)) {
            // A destination that refuses setuid, setgid or sticky bits (some FUSE drivers)
            // still gets the data: the plain bits, and one warning for the run.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && mode & !0o777 != 0 => {
                debug!(path = %dst.display(), error = %e, "special mode bits refused");
                MODE_REFUSED.store(true, Ordering::Relaxed);
                to.set_permissions(Permissions::from_mode(mode & 0o777))
                    .at(Op::SetPermissions, dst)?;
            }
            other => other.at(Op::SetPermissions, dst)?,
        }
    }
    // After the owner (a chown drops `security.capability`) and the mode (an ACL's mask is
    // the group bits).
    if let (true, Opened::File(from)) = (expected.xattrs.any(), &from) {
        let attrs = xattr::read_file(from, expected.xattrs).at(Op::ReadXattrs, src)?;
        xattr::set_file(to, &attrs, expected.xattrs).at(Op::SetXattrs, dst)?;
    }
    rustix::fs::futimens(to, &times(expected.mtime, Tag::File)).at(Op::SetTimes, dst)?;
    Ok(written)
}

/// Where times may not stick (FUSE): each placed file's mtime is read back, and set again by
/// name where the driver lost it. Holds the destination's time resolution in nanoseconds, or 0
/// where times are trusted (see [`check_times`]).
static CHECK_TIMES: AtomicU64 = AtomicU64::new(0);

/// Read back every placed file's mtime (a FUSE destination, whose driver may drop or delay
/// it), counting times within `resolution_ns` as kept.
pub fn check_times(resolution_ns: u64) {
    CHECK_TIMES.store(resolution_ns.max(1), Ordering::Relaxed);
}

/// The range of times the destination holds (FAT, exFAT): a time outside is held as the
/// nearest end, which is what a check of a placed file's time expects.
static TIME_RANGE: std::sync::OnceLock<(i64, i64)> = std::sync::OnceLock::new();

/// Expect placed files' times within `range` (seconds since 1970, both ends in).
pub fn time_range(range: (i64, i64)) {
    let _ = TIME_RANGE.set(range);
}

/// On a destination whose times are checked, make sure the placed file `at` has `mtime`: set
/// again by name (after every handle on it is closed) when the driver lost it.
fn settle_time(at: At<'_>, mtime: Mtime) -> Result<()> {
    let resolution = CHECK_TIMES.load(Ordering::Relaxed);
    if resolution == 0 {
        return Ok(());
    }
    // Outside the range it holds, a driver keeps the nearest end (or, until unmounted, the
    // time itself): either is kept.
    let held = mtime.held_in(TIME_RANGE.get().copied());
    let kept = || -> io::Result<bool> {
        let stat = rustix::fs::statat(at.dir, at.name, AtFlags::SYMLINK_NOFOLLOW)?;
        let got = Mtime::of_stat(&stat);
        let near = |t: Mtime| got.abs_diff_nanos(t) < u128::from(resolution);
        Ok(near(mtime) || near(held))
    };
    if kept().at(Op::Stat, at.path)? {
        return Ok(());
    }
    debug!(path = %at.path.display(), "mtime lost after placing; set again by name");
    set_times_at(at.dir, at.name, mtime, Tag::File).at(Op::SetTimes, at.path)?;
    match kept().at(Op::Stat, at.path)? {
        true => Ok(()),
        false => Err(Error::new(
            Op::SetTimes,
            at.path,
            io::Error::other("the destination did not keep the modification time"),
        )),
    }
}

/// Set when the destination refused a copy's setuid, setgid or sticky bit (see [`fill`]).
static MODE_REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether the destination refused the special mode bits of a copy since the last call.
pub fn mode_refused() -> bool {
    MODE_REFUSED.swap(false, Ordering::Relaxed)
}

/// Whether unnamed temporaries can be linked into place: set by [`prepare`], cleared for the
/// rest of the run the first time one cannot.
static UNNAMED: AtomicBool = AtomicBool::new(true);

/// An unnamed file in the directory `dir` (`O_TMPFILE`), created with the permission bits of
/// `mode` (less the umask). `None` where the filesystem or kernel has none, or on any other
/// error: the named temporary that is tried next reports a real problem with the directory.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn unnamed_in(dir: BorrowedFd<'_>, mode: u16) -> Option<File> {
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode((u32::from(mode) & 0o777) as rustix::fs::RawMode);
    rustix::fs::openat(dir, ".", flags, mode)
        .ok()
        .map(File::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn unnamed_in(_dir: BorrowedFd<'_>, _mode: u16) -> Option<File> {
    None
}

/// Give an unnamed file the name `name` in `dir`, which must not exist.
fn link_unnamed(file: &File, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    Ok(link_unnamed_raw(file, dir, name)?)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn link_unnamed_raw(file: &File, dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    rustix::fs::linkat(file, "", dir, name, AtFlags::EMPTY_PATH)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn link_unnamed_raw(_file: &File, _dir: BorrowedFd<'_>, _name: &OsStr) -> rustix::io::Result<()> {
    Err(rustix::io::Errno::NOTSUP)
}

/// Write a stream of bytes (a remote source file) into `to`, paced by `--bwlimit`; returns
/// the bytes written.
fn write_stream(from: &mut dyn io::Read, to: &File) -> io::Result<u64> {
    use std::io::Write;
    let mut buf = vec![0; 1 << 20];
    let mut to = to;
    let mut written = 0;
    loop {
        if written > 0 {
            interrupt::check()?;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        crate::bwlimit::pace(n as u64);
        written += n as u64;
    }
}

/// Files at least this large are copied extent by extent, keeping their holes; smaller ones
/// (rarely sparse, and the two `lseek`s would be a tenth of their cost) are copied whole.
const SPARSE_FROM: u64 = 64 << 10;

/// The most one `copy_file_range` call copies. A stop asked for is looked at between pieces
/// ([`interrupt::check`]): it waits for one piece of each file being written (a second or so
/// on a slow disk), not for the rest of the file. Pieces this large cost nothing measurable.
const PIECE: u64 = 64 << 20;

/// Copy `len` bytes with `copy_file_range` (the kernel copies, or reflinks, without the data
/// passing through this process), falling back to a read/write copy where the kernel or the
/// filesystem cannot. A file of [`SPARSE_FROM`] bytes or more is copied one data extent at a
/// time (`SEEK_DATA`/`SEEK_HOLE`), so its holes stay holes. Stops early if the source is
/// shorter: the caller compares sizes. Ends in [`interrupt::check`]'s error when a stop is
/// asked for before the last piece.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn copy_contents(from: &File, to: &File, len: u64, sparse: bool) -> io::Result<u64> {
    if sparse && len >= SPARSE_FROM {
        if let Some(copied) = copy_extents(from, to, len)? {
            return Ok(copied);
        }
    }
    // Paced (--bwlimit): in smaller pieces, each accounted as it is written.
    copy_range(from, to, 0, len, crate::bwlimit::piece().unwrap_or(PIECE))
}

/// Copy the data extents of the first `len` bytes at their offsets and give the copy its
/// length, leaving the holes unwritten; `None` where the filesystem cannot tell holes apart
/// (nothing was written then, and the offsets are untouched).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn copy_extents(from: &File, to: &File, len: u64) -> io::Result<Option<u64>> {
    use rustix::fs::{seek, SeekFrom};
    use rustix::io::Errno;
    let data_from = |at: u64| match seek(from, SeekFrom::Data(at)) {
        Ok(found) => Ok(Some(found.min(len))),
        // No data after `at`: the rest is a hole.
        Err(Errno::NXIO) => Ok(None),
        Err(e) => Err(e),
    };
    let mut data = match data_from(0) {
        Ok(data) => data,
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut first = true;
    while let Some(start) = data.filter(|&start| start < len) {
        if !first {
            interrupt::check()?;
        }
        first = false;
        let end = seek(from, SeekFrom::Hole(start))?.min(len);
        let piece = crate::bwlimit::piece().unwrap_or(PIECE);
        if copy_range(from, to, start, end, piece)? < end {
            // The source is shorter than listed: the caller sees it in the size.
            return Ok(Some(start));
        }
        data = if end < len { data_from(end)? } else { None };
    }
    to.set_len(len)?;
    Ok(Some(len))
}

/// Copy bytes `start..end` to the same offsets, at most `piece` bytes a call (each accounted
/// by `--bwlimit` first); returns where the copy stopped (`end`, or less at the source's end).
/// A stop asked for is looked at before each piece but the first.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn copy_range(from: &File, to: &File, start: u64, end: u64, piece: u64) -> io::Result<u64> {
    use rustix::io::Errno;
    let (mut off_in, mut off_out) = (start, start);
    while off_in < end {
        if off_in > start {
            interrupt::check()?;
        }
        let chunk = (end - off_in).min(piece) as usize;
        match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), chunk) {
            Ok(0) => return Ok(off_in),
            Ok(n) => crate::bwlimit::pace(n as u64),
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                let mut buf = vec![0; (end - off_in).min(piece.min(1 << 20)) as usize];
                while off_in < end {
                    if off_in > start {
                        interrupt::check()?;
                    }
                    let want = ((end - off_in) as usize).min(buf.len());
                    let n = rustix::io::pread(from, &mut buf[..want], off_in)?;
                    if n == 0 {
                        return Ok(off_in);
                    }
                    let mut done = 0;
                    while done < n {
                        done += rustix::io::pwrite(to, &buf[done..n], off_in + done as u64)?;
                    }
                    crate::bwlimit::pace(n as u64);
                    off_in += n as u64;
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(off_in)
}

/// Elsewhere, the standard library's copy (read/write).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn copy_contents(from: &File, to: &File, _len: u64, _sparse: bool) -> io::Result<u64> {
    let (mut from, mut to) = (from, to);
    io::copy(&mut from, &mut to)
}

/// A symlink to make: its target text (unresolved), mtime and owner.
#[derive(Clone, Copy, Debug)]
pub struct Link<'a> {
    pub target: &'a Path,
    pub mtime: Mtime,
    pub owner: Chown,
}

/// Make the symlink `link` at `rel` below `dst`.
pub fn make_symlink(
    link: Link<'_>,
    dst: &Base,
    rel: &Path,
    replaces: Option<Tag>,
    displaced: Displaced<'_>,
) -> Result<()> {
    let path = dst.path(rel);
    at_parent(dst, rel, Op::Symlink, |dir, name| {
        let temp = new_temp('l', |temp| rustix::fs::symlinkat(link.target, dir, temp))
            .at(Op::Symlink, &path)?;
        let at = At {
            dir,
            name,
            path: &path,
        };
        finish(at, &temp, replaces, displaced, || {
            chown_at(dir, &temp, link.owner).at(Op::SetOwner, &path)?;
            set_times_at(dir, &temp, link.mtime, Tag::Symlink).at(Op::SetTimes, &path)
        })
    })
}

#[cfg(not(target_vendor = "apple"))]
// `Dev` is a `u64` on Linux, narrower elsewhere.
#[allow(clippy::unnecessary_cast)]
fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    kind: rustix::fs::FileType,
    mode: Mode,
    rdev: u64,
) -> rustix::io::Result<()> {
    rustix::fs::mknodat(dir, name, kind, mode, rdev as rustix::fs::Dev)
}

/// macOS has no `mknodat`: special files are not planned there (see `Config::specials`).
#[cfg(target_vendor = "apple")]
fn mknod_at(
    _dir: BorrowedFd<'_>,
    _name: &OsStr,
    _kind: rustix::fs::FileType,
    _mode: Mode,
    _rdev: u64,
) -> rustix::io::Result<()> {
    Err(rustix::io::Errno::NOSYS)
}

/// Make `rel` below `dst` another name of the file at `leader` (placed earlier in the run):
/// linked under a temporary name, then renamed over what `held` says is there.
pub fn make_hard_link(
    dst: &Base,
    rel: &Path,
    leader: &Path,
    held: Held,
    displaced: Displaced<'_>,
) -> Result<()> {
    link_from(dst, leader, dst, rel, held, displaced)
}

/// Make `rel` below `dst` another name of the file `leader` below `from` (DST itself, or an
/// earlier snapshot with `--link-dest`).
pub fn link_from(
    from: &Base,
    leader: &Path,
    dst: &Base,
    rel: &Path,
    held: Held,
    displaced: Displaced<'_>,
) -> Result<()> {
    let path = dst.path(rel);
    at_parent(from, leader, Op::Link, |from, leader_name| {
        // A walk within a walk in the same tree takes a cursor of its own.
        at_parent(dst, rel, Op::Link, |dir, name| {
            let link =
                |temp: &OsStr| rustix::fs::linkat(from, leader_name, dir, temp, AtFlags::empty());
            let temp = new_temp('h', link).at(Op::Link, &path)?;
            let at = At {
                dir,
                name,
                path: &path,
            };
            finish(at, &temp, held.other(), displaced, || Ok(()))?;
            // A rename between two names of one inode does nothing and leaves both: the
            // name was that file already, and the temporary goes.
            match rustix::fs::unlinkat(dir, &temp, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(e).at(Op::Remove, &path),
            }
        })
    })
}

/// A special file to make: FIFO, socket or device node, with its metadata.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    pub kind: Kind,
    /// The device number of a device node.
    pub rdev: u64,
    pub mode: u16,
    pub mtime: Mtime,
    pub owner: Chown,
}

/// Make the special file `node` at `rel` below `dst`: under a temporary name, given its owner,
/// mode and mtime, then renamed into place like a file.
pub fn make_special(
    node: Node,
    dst: &Base,
    rel: &Path,
    replaces: Option<Tag>,
    displaced: Displaced<'_>,
) -> Result<()> {
    use rustix::fs::FileType;
    let kind = match node.kind {
        Kind::Fifo => FileType::Fifo,
        Kind::Socket => FileType::Socket,
        Kind::Char => FileType::CharacterDevice,
        Kind::Block => FileType::BlockDevice,
    };
    let path = dst.path(rel);
    at_parent(dst, rel, Op::MakeNode, |dir, name| {
        let mode = Mode::from_raw_mode(u32::from(node.mode & 0o777) as rustix::fs::RawMode);
        let temp = new_temp('n', |temp| mknod_at(dir, temp, kind, mode, node.rdev))
            .at(Op::MakeNode, &path)?;
        let at = At {
            dir,
            name,
            path: &path,
        };
        finish(at, &temp, replaces, displaced, || {
            chown_at(dir, &temp, node.owner).at(Op::SetOwner, &path)?;
            chmod_at(dir, &temp, u32::from(node.mode)).at(Op::SetPermissions, &path)?;
            set_times_at(dir, &temp, node.mtime, Tag::File).at(Op::SetTimes, &path)
        })
    })
}

/// Give the temporary `temp` (made in the entry's directory) its metadata with `meta`, then
/// rename it over the entry; a temporary that cannot be finished or placed is removed.
fn finish(
    at: At<'_>,
    temp: &OsStr,
    replaces: Option<Tag>,
    displaced: Displaced<'_>,
    meta: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let placed = meta().and_then(|()| place(at, temp, replaces, displaced));
    if placed.is_err() {
        let _ = rustix::fs::unlinkat(at.dir, temp, AtFlags::empty());
    }
    placed
}

/// Rename the complete temporary `temp` (in the same directory) over the entry, after making
/// room for it.
fn place(at: At<'_>, temp: &OsStr, replaces: Option<Tag>, displaced: Displaced<'_>) -> Result<()> {
    make_room(at, replaces, displaced)?;
    rustix::fs::renameat(at.dir, temp, at.dir, at.name).at(Op::Rename, at.path)
}

/// Prepare the entry for a rename over it: a directory cannot be renamed over, and is removed
/// (the deletions emptied it); any other entry is renamed over atomically, after a backup copy
/// was kept when asked (the target never disappears in between).
fn make_room(at: At<'_>, replaces: Option<Tag>, displaced: Displaced<'_>) -> Result<()> {
    match (displaced, replaces) {
        (_, Some(Tag::Dir)) => remove_emptied_dir(at),
        (Displaced::Destroy, _) => Ok(()),
        (Displaced::Backup { dir, rel }, _) => {
            match exists(at.dir, at.name).at(Op::Stat, at.path)? {
                true => keep(at, dir, rel, Keep::Copy),
                false => Ok(()),
            }
        }
    }
}

/// Whether the directory a base was opened on is gone: removed (no name left), or no longer
/// readable at all (its disk unplugged).
pub fn is_gone(base: &Base) -> bool {
    match rustix::fs::fstat(base) {
        Ok(stat) => stat.st_nlink == 0,
        Err(_) => true,
    }
}

/// Whether the entry `rel` below `base` exists (found through directory handles, a link
/// counting as itself).
pub fn exists_at(base: &Base, rel: &Path) -> bool {
    let (dir, name) = split(rel);
    base.in_dir(dir, |fd| exists(fd, name).unwrap_or(false))
        .unwrap_or(false)
}

/// Whether `name` in `dir` is a directory (a link to one is not).
fn is_dir(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|stat| rustix::fs::FileType::from_raw_mode(stat.st_mode).is_dir())
}

/// Whether `name` exists in `dir` (a link counts as itself).
fn exists(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Remove a directory that a file or link takes the place of. The deletions emptied it of
/// everything listed below it (moving it to the backup when asked); what is still there was
/// not to be deleted — entries the filters leave out, or made during the run — and keeps the
/// directory in place.
fn remove_emptied_dir(at: At<'_>) -> Result<()> {
    match rustix::fs::unlinkat(at.dir, at.name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => {
            let e = io::Error::from(e);
            let cause = match e.kind() {
                io::ErrorKind::DirectoryNotEmpty => crate::endpoint::still_holds(e),
                _ => e,
            };
            Err(Error::new(Op::Replace, at.path, cause))
        }
    }
}

/// Create the directory `rel` below `dst`, after removing the non-directory at its path (a
/// symlink is removed, never followed). Created owner-accessible; its real mode is set at the
/// end of the run.
pub fn make_dir(
    dst: &Base,
    rel: &Path,
    replaces: Option<Tag>,
    displaced: Displaced<'_>,
) -> Result<()> {
    let path = dst.path(rel);
    at_parent(dst, rel, Op::MakeDir, |dir, name| {
        let at = At {
            dir,
            name,
            path: &path,
        };
        if let Some(tag) = replaces {
            remove_at(at, tag, displaced)?;
        }
        match rustix::fs::mkdirat(dir, name, Mode::RWXU) {
            // Made meanwhile by this run (on the way to the backup folder) or by someone else:
            // a real directory is taken as it is (it gets its mode and time at the end).
            Err(rustix::io::Errno::EXIST) if is_dir(dir, name) => Ok(()),
            made => made.at(Op::MakeDir, &path),
        }
    })
}

/// Whether the file `rel` below `prior` (an earlier snapshot, `--link-dest`) can stand for the
/// copy `expected` describes of the source file `src`: a regular file of the same size, mtime,
/// mode and (where `owner` asks) owner and group, and the same attributes when they are
/// copied. Anything unreadable or different is simply no match.
pub fn same_as(
    prior: &Base,
    rel: &Path,
    src: Source<'_>,
    expected: &Expected,
    owner: bool,
) -> bool {
    let (dir, name) = split(rel);
    let stat = prior.in_dir(dir, |fd| {
        rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)
    });
    let Ok(Ok(stat)) = stat else {
        return false;
    };
    // What the process creates has its ids: asked once, not per file.
    static CREATOR: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    let creator = *CREATOR.get_or_init(|| {
        let (uid, gid) = (rustix::process::geteuid(), rustix::process::getegid());
        (uid.as_raw(), gid.as_raw())
    });
    let ids = (
        expected.owner.uid.unwrap_or(creator.0),
        expected.owner.gid.unwrap_or(creator.1),
    );
    rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile
        && stat.st_size as u64 == expected.size
        && Mtime::of_stat(&stat) == expected.mtime
        && (stat.st_mode & 0o7777) as u16 == expected.mode
        && (!owner || (stat.st_uid, stat.st_gid) == ids)
        && (!expected.xattrs.any()
            || src.origin.folder().is_some_and(|base| {
                read_xattrs(prior, rel, expected.xattrs).ok()
                    == read_xattrs(base, src.rel, expected.xattrs).ok()
            }))
}

/// The extended attributes and ACLs `which` covers of the entry `rel` below `base` (`""`:
/// the base itself).
pub fn read_xattrs(base: &Base, rel: &Path, which: Xattrs) -> Result<Attrs> {
    let (dir, name) = split(rel);
    let read = base.in_dir(dir, |fd| xattr::read_at(fd, name, which));
    read.and_then(|attrs| attrs)
        .at(Op::ReadXattrs, &base.path(rel))
}

/// Give the entry `rel` below `dst` exactly the extended attributes and ACLs `which` covers
/// that the source entry `src` has.
pub fn copy_xattrs(src: Source<'_>, dst: &Base, rel: &Path, which: Xattrs) -> Result<()> {
    let attrs = match src.origin.folder() {
        Some(base) => read_xattrs(base, src.rel, which)?,
        // A remote source has none (a run from one asks for none).
        None => Attrs::default(),
    };
    let path = dst.path(rel);
    let (dir, name) = split(rel);
    let done = dst.in_dir(dir, |fd| {
        not_mounted_since(dst, fd, name)?;
        xattr::replace_at(fd, name, &attrs, which)
    });
    done.and_then(|done| done).at(Op::SetXattrs, &path)
}

/// Rename the entry `old` in the directory of `rel` to `rel`'s name, which differs from `old`
/// only in case (a destination that ignores case, where both name one entry).
pub fn respell(dst: &Base, rel: &Path, old: &OsStr) -> Result<()> {
    let path = dst.path(rel);
    at_parent(dst, rel, Op::Respell, |dir, name| {
        rustix::fs::renameat(dir, old, dir, name).at(Op::Respell, &path)
    })
}

/// Remove the entry `rel` below `dst`: a directory must be empty by now; anything else is
/// unlinked (a symlink itself, not its target) or moved to the backup. Already gone counts as
/// done.
pub fn remove_entry(dst: &Base, rel: &Path, tag: Tag, displaced: Displaced<'_>) -> Result<()> {
    let path = dst.path(rel);
    at_parent(dst, rel, Op::Remove, |dir, name| {
        remove_at(
            At {
                dir,
                name,
                path: &path,
            },
            tag,
            displaced,
        )
    })
}

fn remove_at(at: At<'_>, tag: Tag, displaced: Displaced<'_>) -> Result<()> {
    if let (Displaced::Backup { dir, rel }, false) = (displaced, tag == Tag::Dir) {
        return match exists(at.dir, at.name).at(Op::Stat, at.path)? {
            true => keep(at, dir, rel, Keep::Move),
            false => Ok(()),
        };
    }
    let flags = match tag {
        Tag::Dir => AtFlags::REMOVEDIR,
        _ => AtFlags::empty(),
    };
    match rustix::fs::unlinkat(at.dir, at.name, flags) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::new(Op::Remove, at.path, e.into())),
    }
}

/// Give the regular file `rel` below `dst` its owner, then mode, then mtime, all through one
/// handle of the file itself, unless it has more than `links` names now (the count it was
/// listed with): a name was linked to it outside the mirror meanwhile, and the change would
/// reach it. A chown drops setuid and setgid bits, which the mode then sets.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn fix_file(
    dst: &Base,
    rel: &Path,
    links: u32,
    owner: Chown,
    mode: Option<u32>,
    mtime: Option<Mtime>,
) -> Result<()> {
    use rustix::fs::StatxFlags;
    let path = dst.path(rel);
    at_parent(dst, rel, Op::Mirror, |dir, name| {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let entry = rustix::fs::openat(dir, name, flags, Mode::empty()).at(Op::Stat, &path)?;
        // One call for the type, the link count and the mount the handle is on.
        let wanted = StatxFlags::TYPE | StatxFlags::NLINK | crate::mounts::KEY;
        let stat =
            rustix::fs::statx(&entry, "", AtFlags::EMPTY_PATH, wanted).at(Op::Stat, &path)?;
        if !dst
            .present()
            .allows(crate::mounts::told(&stat).unwrap_or(0))
        {
            return Err(Error::new(Op::Mirror, &path, base::mounted_since(name)));
        }
        if rustix::fs::FileType::from_raw_mode(stat.stx_mode.into())
            != rustix::fs::FileType::RegularFile
        {
            let cause = io::Error::other("something else took the file's place: left alone");
            return Err(Error::new(Op::Mirror, &path, cause));
        }
        if stat.stx_nlink > links {
            let cause = io::Error::other(
                "it was hard-linked elsewhere since it was listed: not changed through the link \
                 (the next run writes it anew)",
            );
            return Err(Error::new(Op::Mirror, &path, cause));
        }
        if !owner.is_empty() {
            let uid = owner.uid.map(rustix::fs::Uid::from_raw);
            let gid = owner.gid.map(rustix::fs::Gid::from_raw);
            chown_handle(entry.as_fd(), uid, gid).at(Op::SetOwner, &path)?;
        }
        if let Some(mode) = mode {
            chmod_handle(entry.as_fd(), mode).at(Op::SetPermissions, &path)?;
        }
        match mtime {
            Some(mtime) => {
                set_times_handle(entry.as_fd(), &times(mtime, Tag::File)).at(Op::SetTimes, &path)
            }
            None => Ok(()),
        }
    })
}

/// `fchownat` on `name` in `dir` without following a link (`""`: `dir` itself).
fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, owner: Chown) -> io::Result<()> {
    if owner.is_empty() {
        return Ok(());
    }
    let uid = owner.uid.map(rustix::fs::Uid::from_raw);
    let gid = owner.gid.map(rustix::fs::Gid::from_raw);
    if name.is_empty() {
        return chown_handle(dir, uid, gid);
    }
    Ok(rustix::fs::chownat(
        dir,
        name,
        uid,
        gid,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// `chown` of the entry a handle is open on (an `O_PATH` one included, on Linux).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn chown_handle(
    fd: BorrowedFd<'_>,
    uid: Option<rustix::fs::Uid>,
    gid: Option<rustix::fs::Gid>,
) -> io::Result<()> {
    Ok(rustix::fs::chownat(fd, "", uid, gid, AtFlags::EMPTY_PATH)?)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn chown_handle(
    fd: BorrowedFd<'_>,
    uid: Option<rustix::fs::Uid>,
    gid: Option<rustix::fs::Gid>,
) -> io::Result<()> {
    Ok(rustix::fs::fchown(fd, uid, gid)?)
}

/// Give the entry `rel` below `dst` ("" is `dst` itself) its owner, then mode, then mtime,
/// never through a link (a symlink itself gets its owner and time). A chown drops setuid and
/// setgid bits, which the mode then sets; the access time is set to now (some FUSE drivers
/// ignore a change that leaves it alone). On Linux a regular file goes through [`fix_file`].
pub fn fix_entry(
    dst: &Base,
    rel: &Path,
    tag: Tag,
    owner: Chown,
    mode: Option<u32>,
    mtime: Option<Mtime>,
) -> Result<()> {
    let path = dst.path(rel);
    let fix = |dir: BorrowedFd<'_>, name: &OsStr| -> Result<()> {
        not_mounted_since(dst, dir, name).at(Op::Mirror, &path)?;
        chown_at(dir, name, owner).at(Op::SetOwner, &path)?;
        if let Some(mode) = mode {
            match name.is_empty() {
                true => chmod_handle(dir, mode),
                false => chmod_at(dir, name, mode),
            }
            .at(Op::SetPermissions, &path)?;
        }
        match mtime {
            Some(mtime) => set_times_at(dir, name, mtime, tag).at(Op::SetTimes, &path),
            None => Ok(()),
        }
    };
    if rel.as_os_str().is_empty() {
        return fix(dst.as_fd(), OsStr::new(""));
    }
    at_parent(dst, rel, Op::Mirror, fix)
}

/// An error for the entry `name` in `dir` when a filesystem was mounted on it since the run
/// began: a change to it would reach the root of that filesystem (a source folder or file
/// bound there), not what the listing saw. `""` (the directory itself) was checked when it
/// was entered.
fn not_mounted_since(base: &Base, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    if name.is_empty() {
        return Ok(());
    }
    match crate::mounts::key_at(dir, Path::new(name), AtFlags::SYMLINK_NOFOLLOW) {
        Some(id) if !base.present().allows(id) => Err(base::mounted_since(name)),
        _ => Ok(()),
    }
}

fn timespec(mtime: Mtime) -> Timespec {
    Timespec {
        tv_sec: mtime.sec,
        tv_nsec: i64::from(mtime.nsec) as _,
    }
}

/// The times an entry gets: its mtime, and for the access time the time of the write (a
/// symlink, whose access time means nothing, gets its mtime). Both are always given: some FUSE
/// drivers (exfat-fuse, fusefat) accept a change that leaves the access time alone
/// (`UTIME_OMIT`) and ignore it.
fn times(mtime: Mtime, tag: Tag) -> Timestamps {
    let last_access = match tag {
        Tag::Symlink => timespec(mtime),
        _ => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
    };
    Timestamps {
        last_access,
        last_modification: timespec(mtime),
    }
}

/// `utimensat` on `name` in `dir` without following a link (`""`: `dir` itself).
fn set_times_at(dir: BorrowedFd<'_>, name: &OsStr, mtime: Mtime, tag: Tag) -> io::Result<()> {
    let times = times(mtime, tag);
    if name.is_empty() {
        return set_times_handle(dir, &times);
    }
    Ok(rustix::fs::utimensat(
        dir,
        name,
        &times,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// The times of the entry a handle is open on (an `O_PATH` one included, on Linux).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_times_handle(fd: BorrowedFd<'_>, times: &Timestamps) -> io::Result<()> {
    Ok(rustix::fs::utimensat(fd, "", times, AtFlags::EMPTY_PATH)?)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_times_handle(fd: BorrowedFd<'_>, times: &Timestamps) -> io::Result<()> {
    Ok(rustix::fs::futimens(fd, times)?)
}

/// `chmod` of `name` in `dir`, never of what a link points to: on a handle of the entry itself
/// (opened without following a link and without reading it, so a directory without read
/// permission and a device node are handled alike).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let entry = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    let stat = rustix::fs::fstat(&entry)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Symlink {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a symlink took its place: not followed",
        ));
    }
    chmod_handle(entry.as_fd(), mode)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let mode = Mode::from_raw_mode(mode as rustix::fs::RawMode);
    Ok(rustix::fs::chmodat(
        dir,
        name,
        mode,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// `chmod` through a handle that may not allow `fchmod` (`O_PATH`): through its entry in
/// `/proc/self/fd`, which names that very inode.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn chmod_handle(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mode = Mode::from_raw_mode(mode as rustix::fs::RawMode);
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::chmod(proc_path.as_str(), mode)?)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn chmod_handle(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let mode = Mode::from_raw_mode(mode as rustix::fs::RawMode);
    Ok(rustix::fs::fchmod(fd, mode)?)
}

/// How an entry is kept in the backup directory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// It stays where it is (it is about to be renamed over): a hard link, or a copy.
    Copy,
    /// It leaves: renamed, or copied then removed across filesystems.
    Move,
}

/// Keep the non-directory entry in the backup directory at `rel`, under the first free name:
/// `rel`, else `rel.~N~`, so that no backup ever overwrites another.
fn keep(at: At<'_>, backup: BackupDir<'_>, rel: &Path, how: Keep) -> Result<()> {
    let backup = backup.base()?;
    let slot_path = backup.path(rel);
    let (dir, name) = split(rel);
    let kept = backup.in_new_dir(dir, |to| {
        let slot = free_slot(to, name)?;
        let done = match how {
            Keep::Copy => rustix::fs::linkat(at.dir, at.name, to, &slot, AtFlags::empty()),
            Keep::Move => rustix::fs::renameat(at.dir, at.name, to, &slot),
        };
        use rustix::io::Errno;
        match done {
            Ok(()) => Ok(()),
            // Another filesystem (or no hard links there): copy.
            Err(Errno::XDEV | Errno::PERM | Errno::MLINK | Errno::NOTSUP)
                if how == Keep::Copy || done == Err(Errno::XDEV) =>
            {
                copy_entry(at.dir, at.name, to, &slot)?;
                match how {
                    Keep::Copy => Ok(()),
                    Keep::Move => Ok(rustix::fs::unlinkat(at.dir, at.name, AtFlags::empty())?),
                }
            }
            Err(e) => Err(e.into()),
        }
    });
    kept.and_then(|kept| kept).at(Op::Rename, &slot_path)
}

/// The first name of `name`, `name.~1~`, `name.~2~`, … that `dir` does not have.
fn free_slot(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    for n in 0.. {
        let candidate = crate::endpoint::backup_slot(name, n);
        if !exists(dir, &candidate)? {
            return Ok(candidate);
        }
    }
    unreachable!("a free name is found before the counter runs out")
}

/// Copy a file or symlink, with its mode and mtime, from one directory to another (which may
/// be on another filesystem). Anything else holds no data to keep.
fn copy_entry(
    from: BorrowedFd<'_>,
    name: &OsStr,
    to: BorrowedFd<'_>,
    slot: &OsStr,
) -> io::Result<()> {
    let stat = rustix::fs::statat(from, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let mtime = Mtime::of_stat(&stat);
    match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
        rustix::fs::FileType::Symlink => {
            let target = rustix::fs::readlinkat(from, name, Vec::new())?;
            rustix::fs::symlinkat(target.as_c_str(), to, slot)?;
            set_times_at(to, slot, mtime, Tag::Symlink)
        }
        rustix::fs::FileType::RegularFile => {
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let source = File::from(rustix::fs::openat(from, name, flags, Mode::empty())?);
            let flags =
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let copy = File::from(rustix::fs::openat(
                to,
                slot,
                flags,
                Mode::RUSR | Mode::WUSR,
            )?);
            copy_contents(&source, &copy, stat.st_size as u64, true)?;
            rustix::fs::fchmod(&copy, Mode::from_raw_mode(stat.st_mode & 0o7777))?;
            set_times_at(copy.as_fd(), OsStr::new(""), mtime, Tag::File)
        }
        _ => Ok(()),
    }
}
