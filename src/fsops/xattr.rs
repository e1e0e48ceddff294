//! Extended attributes and POSIX ACLs (`-X`, `-A`), read and written through handles.
//!
//! POSIX ACLs are stored as the attributes `system.posix_acl_access` and
//! `system.posix_acl_default`, so one mechanism copies both (and `security.capability`, the
//! file capabilities that let `ping` work without setuid). An entry is named by its
//! directory's handle as `/proc/self/fd/DIR/NAME` with the `l*xattr` calls: the kernel resolves
//! the handle itself, no path below DST is walked again, the entry is never followed, and
//! every kind of entry (a file without read permission, a symlink, a device node) is reached
//! the same way.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::XattrFlags;
use rustix::io::Errno;

use crate::config::Xattrs;

/// An entry's attributes that a run copies: (name, value), sorted by name.
pub type Attrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Where attributes are read or written.
#[derive(Clone, Copy)]
enum On<'a> {
    /// An open file.
    Fd(BorrowedFd<'a>),
    /// The entry `name` in a directory (`""`: the directory itself).
    At(BorrowedFd<'a>, &'a OsStr),
}

impl On<'_> {
    /// The path of an entry through its directory's handle, and whether the call may follow
    /// it (only to reach the directory itself).
    fn path(dir: BorrowedFd<'_>, name: &OsStr) -> (PathBuf, bool) {
        let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        if name.is_empty() {
            return (path, true);
        }
        path.push(name);
        (path, false)
    }

    fn list(self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            On::Fd(fd) => rustix::fs::flistxattr(fd, buf),
            On::At(dir, name) => match On::path(dir, name) {
                (path, true) => rustix::fs::listxattr(&path, buf),
                (path, false) => rustix::fs::llistxattr(&path, buf),
            },
        }
    }

    fn get(self, attr: &[u8], buf: &mut [u8]) -> rustix::io::Result<usize> {
        let attr = OsStr::from_bytes(attr);
        match self {
            On::Fd(fd) => rustix::fs::fgetxattr(fd, attr, buf),
            On::At(dir, name) => match On::path(dir, name) {
                (path, true) => rustix::fs::getxattr(&path, attr, buf),
                (path, false) => rustix::fs::lgetxattr(&path, attr, buf),
            },
        }
    }

    fn set(self, attr: &[u8], value: &[u8]) -> rustix::io::Result<()> {
        let (attr, flags) = (OsStr::from_bytes(attr), XattrFlags::empty());
        match self {
            On::Fd(fd) => rustix::fs::fsetxattr(fd, attr, value, flags),
            On::At(dir, name) => match On::path(dir, name) {
                (path, true) => rustix::fs::setxattr(&path, attr, value, flags),
                (path, false) => rustix::fs::lsetxattr(&path, attr, value, flags),
            },
        }
    }

    fn remove(self, attr: &[u8]) -> rustix::io::Result<()> {
        let attr = OsStr::from_bytes(attr);
        match self {
            On::Fd(fd) => rustix::fs::fremovexattr(fd, attr),
            On::At(dir, name) => match On::path(dir, name) {
                (path, true) => rustix::fs::removexattr(&path, attr),
                (path, false) => rustix::fs::lremovexattr(&path, attr),
            },
        }
    }

    /// The attributes `which` covers.
    fn read(self, which: Xattrs) -> io::Result<Attrs> {
        let names = match sized(|buf| self.list(buf)) {
            Ok(names) => names,
            // A filesystem without attributes has none to copy or compare.
            Err(e) if e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error()) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut attrs = Attrs::new();
        for name in names.split(|&b| b == 0).filter(|n| which.covers(n)) {
            match sized(|buf| self.get(name, buf)) {
                Ok(value) => attrs.push((name.to_vec(), value)),
                // Removed since it was listed.
                Err(e) if e.raw_os_error() == Some(Errno::NODATA.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
        }
        attrs.sort();
        Ok(attrs)
    }

    /// Make the attributes `which` covers exactly `want`: set what differs, remove the rest.
    /// An attribute the destination refuses (not allowed, too large, unsupported) is left out
    /// and noted (see [`refused`]): it never costs the entry.
    fn replace(self, want: &Attrs, which: Xattrs) -> io::Result<()> {
        let have = self.read(which)?;
        for (name, _) in &have {
            if want.binary_search_by(|(n, _)| n.cmp(name)).is_err() {
                self.remove(name).or_else(|e| refuse(name, e))?;
            }
        }
        for (name, value) in want {
            let same = have
                .binary_search_by(|(n, _)| n.cmp(name))
                .is_ok_and(|at| have[at].1 == *value);
            if !same {
                self.set(name, value).or_else(|e| refuse(name, e))?;
            }
        }
        Ok(())
    }
}

/// The first attribute the destination refused since it was last asked (see [`refused`]).
static REFUSED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Note an attribute the destination will not take; any other error stays one.
fn refuse(name: &[u8], e: Errno) -> rustix::io::Result<()> {
    match e {
        Errno::PERM
        | Errno::ACCESS
        | Errno::OPNOTSUPP
        | Errno::NOSPC
        | Errno::TOOBIG
        | Errno::RANGE
        | Errno::INVAL => {
            let mut refused = REFUSED.lock().unwrap_or_else(|e| e.into_inner());
            if refused.is_none() {
                let name = String::from_utf8_lossy(name);
                *refused = Some(format!("{name}: {}", io::Error::from(e)));
            }
            Ok(())
        }
        e => Err(e),
    }
}

/// The first attribute the destination refused (`name: cause`) since the last call, if any.
pub fn refused() -> Option<String> {
    REFUSED.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Call `f` with a buffer large enough for its answer: one call where 256 bytes do (most
/// lists and values), else it is asked for the size (an empty buffer) and called again.
fn sized(f: impl Fn(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // Larger than the buffer (or grown since it was measured).
            Err(Errno::RANGE) => {
                let need = f(&mut [])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The attributes `which` covers of the entry `name` in `dir` (`""`: `dir` itself).
pub fn read_at(dir: BorrowedFd<'_>, name: &OsStr, which: Xattrs) -> io::Result<Attrs> {
    On::At(dir, name).read(which)
}

/// The attributes `which` covers of an open file.
pub(super) fn read_file(file: &File, which: Xattrs) -> io::Result<Attrs> {
    On::Fd(file.as_fd()).read(which)
}

/// Give a new file exactly the attributes `attrs` of those `which` covers: it may have some
/// already, such as an ACL inherited from its directory's default ACL, which must not stay.
pub(super) fn set_file(file: &File, attrs: &Attrs, which: Xattrs) -> io::Result<()> {
    On::Fd(file.as_fd()).replace(attrs, which)
}

/// Make the attributes `which` covers of the entry `name` in `dir` exactly `want`.
pub(super) fn replace_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    want: &Attrs,
    which: Xattrs,
) -> io::Result<()> {
    On::At(dir, name).replace(want, which)
}
