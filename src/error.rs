//! Errors that say what was being done, and to which path.
//!
//! Every filesystem call in syncease goes through [`Context::at`], so an error can never lose the
//! path it happened on: the user reads `cannot read 'src/a.txt': Permission denied (os error 13)`
//! instead of a bare OS message. `anyhow` is only used at the binary's edge.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::plan::Escaped;

/// The operation that failed, phrased so it reads after "cannot".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Open,
    Read,
    ReadDir,
    Stat,
    ReadLink,
    Copy,
    CreateTemp,
    Rename,
    Remove,
    MakeDir,
    Symlink,
    SetPermissions,
    SetTimes,
    /// Put a file or link where a directory is.
    Replace,
    Lock,
    SetOwner,
    MakeNode,
    Link,
    /// Give an entry the spelling of its source name.
    Respell,
    /// Mirror a source entry at all.
    Mirror,
    ReadXattrs,
    SetXattrs,
    /// Open a source file to copy it.
    OpenSource,
    /// Find out what the destination can hold.
    Probe,
    /// Write a copy's contents in the destination.
    Write,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Open => "open",
            Op::Read => "read",
            Op::ReadDir => "read directory",
            Op::Stat => "stat",
            Op::ReadLink => "read symlink",
            Op::Copy => "copy",
            Op::CreateTemp => "create a temporary file in",
            Op::Rename => "rename into place",
            Op::Remove => "remove",
            Op::MakeDir => "create directory",
            Op::Symlink => "create symlink",
            Op::SetPermissions => "set permissions on",
            Op::SetTimes => "set times on",
            Op::Replace => "replace directory",
            Op::Lock => "lock",
            Op::SetOwner => "set the owner of",
            Op::MakeNode => "make special file",
            Op::Link => "make hard link",
            Op::Respell => "rename (case only)",
            Op::Mirror => "mirror",
            Op::ReadXattrs => "read the extended attributes of",
            Op::SetXattrs => "set the extended attributes of",
            Op::OpenSource => "open the source file",
            Op::Probe => "probe what the destination can hold in",
            Op::Write => "write",
        }
    }
}

/// A failed filesystem operation on one path.
#[derive(Debug)]
pub struct Error {
    pub op: Op,
    pub path: PathBuf,
    /// The second path of a two-path operation (the destination of a copy).
    pub to: Option<PathBuf>,
    pub source: io::Error,
}

impl Error {
    pub fn new(op: Op, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error {
            op,
            path: path.into(),
            to: None,
            source,
        }
    }

    /// A failed copy from `from` to `to`. Where the cause can only be the destination (full,
    /// over quota, read-only, file too large) the error names the write; otherwise either
    /// end may be the cause, and it names both.
    pub fn copy(from: &Path, to: &Path, source: io::Error) -> Self {
        use rustix::io::Errno;
        let write_side = [Errno::NOSPC, Errno::DQUOT, Errno::ROFS, Errno::FBIG];
        if write_side
            .iter()
            .any(|e| source.raw_os_error() == Some(e.raw_os_error()))
        {
            return Error::new(Op::Write, to, source);
        }
        Error {
            to: Some(to.to_path_buf()),
            ..Error::new(Op::Copy, from, source)
        }
    }

    /// True when the path simply is not there (any more).
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Escaped as itemized lines are: a name with a newline stays on one line.
        write!(f, "cannot {} '{}'", self.op.verb(), Escaped(&self.path))?;
        if let Some(to) = &self.to {
            write!(f, " to '{}'", Escaped(to))?;
        }
        write!(f, ": {}", self.source)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach an operation and a path to an `io::Result`.
pub trait Context<T> {
    fn at(self, op: Op, path: &Path) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn at(self, op: Op, path: &Path) -> Result<T> {
        self.map_err(|e| Error::new(op, path, e))
    }
}

impl<T> Context<T> for rustix::io::Result<T> {
    fn at(self, op: Op, path: &Path) -> Result<T> {
        self.map_err(|e| Error::new(op, path, e.into()))
    }
}
