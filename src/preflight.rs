//! Refusals: the checks that run before anything is changed.
//!
//! A refusal exits with status 2 and leaves DST exactly as it was. The checks are about the two
//! roots only — existence, type, overlap after resolving symlinks and `..` — plus the empty-source
//! guard, which protects a backup from a source disk that is not mounted.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::dest::Destination;

/// Why a run was refused.
#[derive(Debug)]
pub enum Refusal {
    SourceMissing(PathBuf),
    SourceNotDir(PathBuf),
    SourceUnreadable(PathBuf, io::Error),
    DestinationNotDir(PathBuf),
    DestinationParentMissing(PathBuf),
    DestinationUnreadable(PathBuf, io::Error),
    Same(PathBuf),
    DestinationInsideSource {
        src: PathBuf,
        dst: PathBuf,
    },
    SourceInsideDestination {
        src: PathBuf,
        dst: PathBuf,
    },
    EmptySource {
        src: PathBuf,
        dst: PathBuf,
    },
    /// The backup directory would put kept files inside SRC, or mix them into DST.
    BackupOverlaps {
        backup: PathBuf,
        reason: &'static str,
    },
    BackupNotDir(PathBuf),
    /// Invalid option values, caught after parsing.
    Usage(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Refusal::*;
        match self {
            SourceMissing(p) => write!(f, "source '{}' does not exist", p.display()),
            SourceNotDir(p) => write!(f, "source '{}' is not a directory", p.display()),
            SourceUnreadable(p, e) => write!(f, "cannot read source '{}': {e}", p.display()),
            DestinationNotDir(p) => write!(
                f,
                "destination '{}' exists and is not a directory",
                p.display()
            ),
            DestinationParentMissing(p) => write!(
                f,
                "the parent of destination '{}' does not exist (create it first)",
                p.display()
            ),
            DestinationUnreadable(p, e) => {
                write!(f, "cannot read destination '{}': {e}", p.display())
            }
            Same(p) => write!(
                f,
                "source and destination are the same directory '{}'",
                p.display()
            ),
            DestinationInsideSource { src, dst } => write!(
                f,
                "destination '{}' is inside source '{}'",
                dst.display(),
                src.display()
            ),
            SourceInsideDestination { src, dst } => write!(
                f,
                "source '{}' is inside destination '{}', which the mirror would delete",
                src.display(),
                dst.display()
            ),
            EmptySource { src, dst } => write!(
                f,
                "source '{}' is empty but destination '{}' is not; is the source mounted? \
                 Pass --allow-empty-source to empty the destination",
                src.display(),
                dst.display()
            ),
            BackupOverlaps { backup, reason } => {
                write!(f, "backup directory '{}' {reason}", backup.display())
            }
            BackupNotDir(p) => write!(
                f,
                "backup directory '{}' exists and is not a directory",
                p.display()
            ),
            Usage(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Refusal {}

/// What the checks of the roots found.
#[derive(Debug)]
pub struct Checked {
    /// Relative paths inside the mirror that must be left alone (a backup directory in DST).
    pub protected: Vec<PathBuf>,
    /// SRC has no entries at all (see [`empty_source`]).
    pub src_empty: bool,
}

/// Check the roots. Nothing is written.
pub fn check(config: &Config) -> Result<Checked, Refusal> {
    let src = &config.src;
    let dst = &config.dst;
    let (src_real, src_empty) = check_source(src)?;

    let dst_real = match fs::metadata(dst) {
        Ok(meta) if meta.is_dir() => {
            fs::canonicalize(dst).map_err(|e| Refusal::DestinationUnreadable(dst.clone(), e))?
        }
        Ok(_) => return Err(Refusal::DestinationNotDir(dst.clone())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if fs::symlink_metadata(dst).is_ok() {
                // A dangling symlink: creating DST would write through it.
                return Err(Refusal::DestinationNotDir(dst.clone()));
            }
            resolve_missing(dst)?
        }
        Err(e) => return Err(Refusal::DestinationUnreadable(dst.clone(), e)),
    };

    if src_real == dst_real {
        return Err(Refusal::Same(src_real));
    }
    if dst_real.starts_with(&src_real) {
        return Err(Refusal::DestinationInsideSource {
            src: src.clone(),
            dst: dst.clone(),
        });
    }
    if src_real.starts_with(&dst_real) {
        return Err(Refusal::SourceInsideDestination {
            src: src.clone(),
            dst: dst.clone(),
        });
    }
    let protected = match &config.backup_dir {
        Some(backup) => check_backup(backup, &src_real, &dst_real)?,
        None => Vec::new(),
    };
    Ok(Checked {
        protected,
        src_empty,
    })
}

/// The guard against a source disk that is not mounted: an empty SRC over a destination that
/// holds anything is refused, unless `--allow-empty-source`. Asked of any destination, local
/// or remote, once it is reachable and before anything is listed or written.
pub fn empty_source(
    config: &Config,
    src_empty: bool,
    dest: &dyn Destination,
) -> Result<(), Refusal> {
    if !src_empty || config.allow_empty_source {
        return Ok(());
    }
    match dest.is_empty() {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::EmptySource {
            src: config.src.clone(),
            dst: config.dst.clone(),
        }),
        Err(e) => Err(Refusal::DestinationUnreadable(config.dst.clone(), e)),
    }
}

/// SRC must be a readable directory: its real path, and whether it is empty.
pub fn check_source(src: &Path) -> Result<(PathBuf, bool), Refusal> {
    let src_real = match fs::canonicalize(src) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Refusal::SourceMissing(src.to_path_buf()))
        }
        Err(e) => return Err(Refusal::SourceUnreadable(src.to_path_buf(), e)),
    };
    if !src_real.is_dir() {
        return Err(Refusal::SourceNotDir(src.to_path_buf()));
    }
    let mut src_entries =
        fs::read_dir(src).map_err(|e| Refusal::SourceUnreadable(src.to_path_buf(), e))?;
    let src_empty = src_entries.next().is_none();
    Ok((src_real, src_empty))
}

/// The backup directory may be anywhere but in SRC, and must not hold SRC or DST; inside DST it
/// is left out of the mirror.
fn check_backup(backup: &Path, src: &Path, dst: &Path) -> Result<Vec<PathBuf>, Refusal> {
    let overlaps = |reason| Refusal::BackupOverlaps {
        backup: backup.to_path_buf(),
        reason,
    };
    match fs::metadata(backup) {
        Ok(meta) if !meta.is_dir() => return Err(Refusal::BackupNotDir(backup.to_path_buf())),
        _ => {}
    }
    let real = resolve_nearest(backup).map_err(|_| overlaps("cannot be resolved"))?;
    if real.starts_with(src) {
        return Err(overlaps("is inside the source"));
    }
    if src.starts_with(&real) {
        return Err(overlaps("contains the source"));
    }
    if dst.starts_with(&real) {
        return Err(overlaps("is or contains the destination"));
    }
    Ok(real
        .strip_prefix(dst)
        .map(|rel| vec![rel.to_path_buf()])
        .unwrap_or_default())
}

/// The real path of a directory that may not exist yet: its nearest existing ancestor resolved,
/// with the missing components appended.
fn resolve_nearest(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        match fs::canonicalize(existing) {
            Ok(real) => {
                return Ok(missing.iter().rev().fold(real, |acc, part| acc.join(part)));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(existing.file_name().ok_or(e)?.to_os_string());
                existing = existing
                    .parent()
                    .ok_or_else(|| io::Error::other("no parent"))?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The real path a missing DST will have: its parent resolved, plus its name.
fn resolve_missing(dst: &Path) -> Result<PathBuf, Refusal> {
    let name = match dst.file_name() {
        Some(name) => name,
        None => return Err(Refusal::DestinationParentMissing(dst.to_path_buf())),
    };
    let parent = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match fs::canonicalize(parent) {
        Ok(real) if real.is_dir() => Ok(real.join(name)),
        _ => Err(Refusal::DestinationParentMissing(dst.to_path_buf())),
    }
}
