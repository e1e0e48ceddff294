//! The only code that writes below DST.
//!
//! Files and symlinks are first made under a temporary name in their target directory, given
//! their mode and mtime, and only then renamed over the target, so an interrupted run leaves
//! either the old or the new version at every path, never a mix. A new file is written without
//! a name at all (`O_TMPFILE`) and linked into place when complete. Temporary names follow one
//! pattern ([`is_temp_name`]) so the next run can sweep what a killed run left. No function here
//! follows a symlink found in DST: links are replaced, never written through.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tracing::debug;

use crate::entry::{mode_of, Mtime, Tag};
use crate::error::{Context, Error, Op, Result};

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

/// True for a destination entry that is a temporary of this tool: a regular file or link
/// (never a directory, whatever its name) named like one.
pub fn is_temporary(path: &Path, tag: Tag) -> bool {
    matches!(tag, Tag::File | Tag::Symlink) && is_temp_name(path)
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
    Io(Error),
}

impl From<Error> for CopyError {
    fn from(e: Error) -> Self {
        CopyError::Io(e)
    }
}

/// What becomes of a destination entry that is overwritten or deleted.
#[derive(Clone, Copy, Debug)]
pub enum Displaced<'a> {
    /// It is gone.
    Destroy,
    /// It is kept in `dir` at its relative path `rel` (`--backup-dir`).
    Backup { dir: &'a Path, rel: &'a Path },
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

/// What the listing said about a source file; a copy whose source no longer matches it after
/// the copy is not renamed into place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    pub size: u64,
    pub mtime: Mtime,
    pub mode: u16,
}

impl Expected {
    /// True when the source still is what was expected, `read` bytes having been copied from
    /// it: the check made after every copy, before its result may replace the target.
    pub fn still_holds(&self, file: &File, read: u64) -> io::Result<bool> {
        let after = file.metadata()?;
        Ok(read == self.size && after.len() == self.size && Mtime::of(&after) == self.mtime)
    }
}

/// A fresh temporary name (`.syncease-PID<kind>N.tmp`) for a symlink (`kind` 'l'), an
/// unnamed file that needs a name ('f') or a file written by a remote destination ('s'); other
/// local file temporaries come from `tempfile`. All match [`is_temp_name`], so the next run
/// sweeps what a killed one left.
pub fn temp_name(kind: char) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{TEMP_PREFIX}{:x}{kind}{n}{TEMP_SUFFIX}",
        std::process::id()
    )
}

/// Make an entry under a fresh temporary name in `dir` with `make`, trying the next name
/// while one is taken; returns its path.
fn new_temp(
    dir: &Path,
    kind: char,
    mut make: impl FnMut(&Path) -> io::Result<()>,
) -> io::Result<PathBuf> {
    loop {
        let temp = dir.join(temp_name(kind));
        match make(&temp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            other => return other.map(|()| temp),
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

/// Open a source file for copying, with what it is expected to be: the listing's view, or a
/// fresh look when `expected` is `None`. `None` when the file vanished since it was listed.
pub fn open_source(src: &Path, expected: Option<Expected>) -> Result<Option<(File, Expected)>> {
    let from = match File::open(src) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::new(Op::Open, src, e)),
    };
    let expected = match expected {
        Some(expected) => expected,
        None => {
            let meta = from.metadata().at(Op::Stat, src)?;
            Expected {
                size: meta.len(),
                mtime: Mtime::of(&meta),
                mode: mode_of(&meta),
            }
        }
    };
    Ok(Some((from, expected)))
}

/// Copy `src` to `dst` through a temporary file in `dst`'s directory; `held` is what the
/// destination held at `dst` when it was listed (a directory is removed, or moved to the backup,
/// just before the rename). `expected` is the listing's view of the source; `None` asks for a
/// fresh look (used when trying again after the source changed).
///
/// A new file (`Held::Nothing`) is written to an unnamed temporary (`O_TMPFILE`) and linked
/// into place once complete: no name to create and rename, and nothing left behind if the run
/// is killed. Where that is not possible the named temporary is used, as for every update.
pub fn copy_file(
    src: &Path,
    dst: &Path,
    expected: Option<Expected>,
    held: Held,
    displaced: Displaced<'_>,
) -> Result<Copied, CopyError> {
    let Some((from, expected)) = open_source(src, expected)? else {
        return Ok(Copied::Vanished);
    };
    let dir = dst.parent().unwrap_or(Path::new("."));
    if held == Held::Nothing && UNNAMED.load(Ordering::Relaxed) {
        if let Some(copied) = copy_unnamed(&from, src, dst, dir, &expected, displaced)? {
            return Ok(copied);
        }
    }
    // Created with its final mode where the umask allows, saving a chmod per file.
    let temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .permissions(Permissions::from_mode(u32::from(expected.mode) & 0o777))
        .tempfile_in(dir)
        .at(Op::CreateTemp, dir)?;
    let written = fill(&from, temp.as_file(), src, dst, &expected)?;
    make_room(dst, held.other(), displaced)?;
    temp.persist(dst)
        .map_err(|e| Error::new(Op::Rename, dst, e.error))?;
    Ok(Copied::Done(written))
}

/// The copy of a new file through an unnamed temporary; `None` when it has to be made again
/// through a named one (no unnamed file here, or it could not be linked).
fn copy_unnamed(
    from: &File,
    src: &Path,
    dst: &Path,
    dir: &Path,
    expected: &Expected,
    displaced: Displaced<'_>,
) -> Result<Option<Copied>, CopyError> {
    let Some(temp) = unnamed_in(dir, expected.mode) else {
        return Ok(None);
    };
    let written = fill(from, &temp, src, dst, expected)?;
    match link_unnamed(&temp, dst) {
        Ok(()) => Ok(Some(Copied::Done(written))),
        // Something was put at the target since it was listed: replace it atomically, like
        // any other file.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let name =
                new_temp(dir, 'f', |name| link_unnamed(&temp, name)).at(Op::CreateTemp, dir)?;
            place(&name, dst, None, displaced)?;
            Ok(Some(Copied::Done(written)))
        }
        // Linking an unnamed file is refused (older kernels allow it only to privileged
        // processes), or the directory went away: name every temporary from now on, starting
        // with this one, which also reports a real problem with the directory.
        Err(e) => {
            debug!(dst = %dst.display(), error = %e, "unnamed temporaries unusable");
            UNNAMED.store(false, Ordering::Relaxed);
            rewind(from).at(Op::Read, src)?;
            Ok(None)
        }
    }
}

/// Copy the source's contents into the temporary `to`, check the source did not change while
/// it was read, and give the copy its mode and mtime. Returns the bytes copied.
fn fill(
    from: &File,
    to: &File,
    src: &Path,
    dst: &Path,
    expected: &Expected,
) -> Result<u64, CopyError> {
    let written = copy_contents(from, to, expected.size).map_err(|e| Error::copy(src, dst, e))?;
    if !expected.still_holds(from, written).at(Op::Stat, src)? {
        return Err(CopyError::Changed);
    }
    let mode = u32::from(expected.mode);
    if mode & !0o777 != 0 || mode & UMASK.load(Ordering::Relaxed) != 0 {
        to.set_permissions(Permissions::from_mode(mode))
            .at(Op::SetPermissions, dst)?;
    }
    filetime::set_file_handle_times(to, None, Some(expected.mtime.as_filetime()))
        .at(Op::SetTimes, dst)?;
    Ok(written)
}

/// Whether unnamed temporaries can be linked into place: set by [`prepare`], cleared for the
/// rest of the run the first time one cannot.
static UNNAMED: AtomicBool = AtomicBool::new(true);

/// An unnamed file in `dir` (`O_TMPFILE`), created with the permission bits of `mode` (less
/// the umask). `None` where the filesystem or kernel has none, or on any other error: the
/// named temporary that is tried next reports a real problem with the directory.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn unnamed_in(dir: &Path, mode: u16) -> Option<File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode((u32::from(mode) & 0o777) as rustix::fs::RawMode);
    rustix::fs::open(dir, flags, mode).ok().map(File::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn unnamed_in(_dir: &Path, _mode: u16) -> Option<File> {
    None
}

/// Give an unnamed file the name `path`, which must not exist.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD};
    Ok(rustix::fs::linkat(
        file,
        "",
        CWD,
        path,
        AtFlags::EMPTY_PATH,
    )?)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn link_unnamed(_file: &File, _path: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Go back to the start of a source file, to read it again.
fn rewind(file: &File) -> io::Result<()> {
    use std::io::Seek;
    let mut file = file;
    file.seek(io::SeekFrom::Start(0)).map(|_| ())
}

/// Copy `len` bytes with `copy_file_range` (the kernel copies, or reflinks, without the data
/// passing through this process), falling back to a read/write copy where the kernel or the
/// filesystem cannot. Stops early if the source is shorter: the caller compares sizes.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn copy_contents(from: &File, to: &File, len: u64) -> io::Result<u64> {
    use rustix::io::Errno;
    let mut copied = 0;
    while copied < len {
        let chunk = (len - copied).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(from, None, to, None, chunk) {
            Ok(0) => break,
            Ok(n) => copied += n as u64,
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if copied == 0 => {
                let (mut from, mut to) = (from, to);
                return io::copy(&mut from, &mut to);
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(copied)
}

/// Elsewhere, the standard library's copy (read/write).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn copy_contents(from: &File, to: &File, _len: u64) -> io::Result<u64> {
    let (mut from, mut to) = (from, to);
    io::copy(&mut from, &mut to)
}

/// Make a symlink at `path` pointing to `target` (the text, unresolved), with its mtime.
pub fn make_symlink(
    target: &Path,
    path: &Path,
    mtime: Mtime,
    replaces: Option<Tag>,
    displaced: Displaced<'_>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = new_temp(dir, 'l', |temp| std::os::unix::fs::symlink(target, temp))
        .at(Op::Symlink, path)?;
    let time = mtime.as_filetime();
    if let Err(e) = filetime::set_symlink_file_times(&temp, time, time) {
        let _ = fs::remove_file(&temp);
        return Err(Error::new(Op::SetTimes, path, e));
    }
    place(&temp, path, replaces, displaced)
}

/// Rename the complete temporary `temp` over `path`, after making room for it; a temporary
/// that cannot be placed is removed.
fn place(temp: &Path, path: &Path, replaces: Option<Tag>, displaced: Displaced<'_>) -> Result<()> {
    let placed = make_room(path, replaces, displaced)
        .and_then(|()| fs::rename(temp, path).at(Op::Rename, path));
    if placed.is_err() {
        let _ = fs::remove_file(temp);
    }
    placed
}

/// Prepare `path` for a rename over it: a directory cannot be renamed over, so it is removed
/// (or moved to the backup); any other entry is renamed over atomically, after a backup copy
/// was kept when asked (the target never disappears in between).
fn make_room(path: &Path, replaces: Option<Tag>, displaced: Displaced<'_>) -> Result<()> {
    match (displaced, replaces) {
        (_, Some(Tag::Dir)) => remove_emptied_dir(path),
        (Displaced::Destroy, _) => Ok(()),
        (Displaced::Backup { dir, rel }, _) => match fs::symlink_metadata(path) {
            Ok(_) => keep_copy(path, &slot(dir, rel)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::new(Op::Stat, path, e)),
        },
    }
}

/// Remove a directory that a file or link takes the place of. The deletions emptied it of
/// everything listed below it (moving it to the backup when asked); what is still there was
/// not to be deleted — entries the filters leave out, or made during the run — and keeps the
/// directory in place.
fn remove_emptied_dir(path: &Path) -> Result<()> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
            Err(Error::new(Op::Replace, path, still_holds(e)))
        }
        Err(e) => Err(Error::new(Op::Replace, path, e)),
    }
}

/// The cause given when a directory to be replaced is not empty.
pub fn still_holds(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        "it still holds entries that are not to be deleted (excluded, or made during the run)",
    )
}

/// Create a directory, after removing the non-directory at its path (a symlink is removed,
/// never followed). Created owner-accessible; its real mode is set at the end of the run.
pub fn make_dir(path: &Path, replaces: Option<Tag>, displaced: Displaced<'_>) -> Result<()> {
    if let Some(tag) = replaces {
        remove_entry(path, tag, displaced)?;
    }
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .at(Op::MakeDir, path)
}

/// Remove one entry: a directory must be empty by now; anything else is unlinked (a symlink
/// itself, not its target) or moved to the backup. Already gone counts as done.
pub fn remove_entry(path: &Path, tag: Tag, displaced: Displaced<'_>) -> Result<()> {
    if let (Displaced::Backup { dir, rel }, false) = (displaced, tag == Tag::Dir) {
        return match fs::symlink_metadata(path) {
            Ok(_) => move_aside(path, &slot(dir, rel)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::new(Op::Stat, path, e)),
        };
    }
    let result = if tag == Tag::Dir {
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::new(Op::Remove, path, e)),
        _ => Ok(()),
    }
}

/// Remove a directory and everything below it, never following symlinks.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::new(Op::Remove, path, e)),
        _ => Ok(()),
    }
}

/// Set the permission bits of a file or directory (not used on symlinks).
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, Permissions::from_mode(mode)).at(Op::SetPermissions, path)
}

/// Set the mtime of a directory or file, leaving its atime alone.
pub fn set_mtime(path: &Path, mtime: Mtime) -> Result<()> {
    filetime::set_file_mtime(path, mtime.as_filetime()).at(Op::SetTimes, path)
}

/// Set the mtime of a symlink itself.
pub fn set_symlink_mtime(path: &Path, mtime: Mtime) -> Result<()> {
    let time = mtime.as_filetime();
    filetime::set_symlink_file_times(path, time, time).at(Op::SetTimes, path)
}

/// The backup path for `rel`: `DIR/rel`, or `DIR/rel.~N~` with the first free N when an
/// earlier run's backup is there, so no backup ever overwrites another.
fn slot(dir: &Path, rel: &Path) -> Result<PathBuf> {
    let base = dir.join(rel);
    if let Some(parent) = base.parent() {
        fs::create_dir_all(parent).at(Op::MakeDir, parent)?;
    }
    let mut candidate = base.clone();
    for n in 1.. {
        match fs::symlink_metadata(&candidate) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(candidate),
            Err(e) => return Err(Error::new(Op::Stat, &candidate, e)),
            Ok(_) => {
                let mut name = base.as_os_str().to_owned();
                name.push(format!(".~{n}~"));
                candidate = PathBuf::from(name);
            }
        }
    }
    unreachable!("the loop returns")
}

/// Move an entry (a whole directory too) to `to`; across filesystems, copy then remove.
fn move_aside(path: &Path, to: &Path) -> Result<()> {
    match fs::rename(path, to) {
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            copy_tree(path, to)?;
            match fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => remove_tree(path),
                _ => remove_entry(path, Tag::File, Displaced::Destroy),
            }
        }
        other => other.at(Op::Rename, to),
    }
}

/// Keep a copy of a file or link at `to` while it stays in place: a hard link where possible.
fn keep_copy(path: &Path, to: &Path) -> Result<()> {
    match fs::hard_link(path, to) {
        Ok(()) => Ok(()),
        Err(_) => copy_tree(path, to),
    }
}

/// Copy an entry with its mode and mtime, recursively, never following links.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(from).at(Op::Stat, from)?;
    let mtime = Mtime::of(&meta);
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(from).at(Op::ReadLink, from)?;
        std::os::unix::fs::symlink(target, to).at(Op::Symlink, to)?;
        return set_symlink_mtime(to, mtime);
    }
    if kind.is_dir() {
        fs::create_dir(to).at(Op::MakeDir, to)?;
        for entry in fs::read_dir(from).at(Op::ReadDir, from)? {
            let entry = entry.at(Op::ReadDir, from)?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        fs::set_permissions(to, meta.permissions()).at(Op::SetPermissions, to)?;
    } else if kind.is_file() {
        fs::copy(from, to).map_err(|e| Error::copy(from, to, e))?;
    } else {
        return Ok(()); // a FIFO or socket holds no data to keep
    }
    set_mtime(to, mtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_only_in_full() {
        assert!(is_temp_name(Path::new("a/.syncease-Ab12Cd.tmp")));
        assert!(!is_temp_name(Path::new(".syncease-.tmp")));
        assert!(!is_temp_name(Path::new("syncease-x.tmp")));
        assert!(!is_temp_name(Path::new(".syncease-x.tmp/child")));
        let name = Path::new(".syncease-Ab12Cd.tmp");
        assert!(is_temporary(name, Tag::File) && is_temporary(name, Tag::Symlink));
        assert!(!is_temporary(name, Tag::Dir) && !is_temporary(name, Tag::Special));
    }
}
