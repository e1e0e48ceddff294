//! Refusals: the checks that run before anything is changed.
//!
//! A refusal exits with status 2 and leaves DST exactly as it was. [`check`] looks at the two
//! roots — existence, type, overlap after resolving symlinks and `..` — before anything is
//! listed; [`listings`] looks at the two listings, as the planner will see them, before anything
//! is written: a source that cannot be read or lists as empty (a disk that is not mounted) and a
//! destination that shares nothing with the source (`syncease photos backup/`, meant as "into
//! backup/") would otherwise have the whole destination deleted.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::config::Config;
use crate::endpoint::is_temporary;
use crate::entry::{is_within, merge, Pair, Tag, Tree};
use crate::mounts::{Mounts, Present, Reach};
use crate::plan::Escaped;

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
    /// Two places of one remote, one inside the other.
    Overlap {
        src: PathBuf,
        dst: PathBuf,
    },
    /// A folder of SRC is a folder of DST too, mounted a second time (found in the table of
    /// mounts, or while listing).
    MountedTwice {
        src: PathBuf,
        dst: PathBuf,
    },
    EmptySource {
        src: PathBuf,
        dst: PathBuf,
    },
    /// DST holds entries, none of which SRC has: every one would be deleted.
    Unrelated {
        src: PathBuf,
        dst: PathBuf,
        /// Entries at the top of DST.
        entries: u64,
    },
    /// The backup directory would put kept files inside SRC, or mix them into DST.
    BackupOverlaps {
        backup: PathBuf,
        reason: &'static str,
    },
    BackupNotDir(PathBuf),
    /// The log file would be written inside SRC or inside the mirror.
    LogFileOverlaps {
        log: PathBuf,
        reason: &'static str,
    },
    /// Another run holds DST (or it cannot be locked).
    Locked(crate::lock::LockError),
    /// Invalid option values, caught after parsing.
    Usage(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Refusal::*;
        match self {
            SourceMissing(p) => write!(f, "source '{}' does not exist", Escaped(p)),
            SourceNotDir(p) => write!(f, "source '{}' is not a directory", Escaped(p)),
            SourceUnreadable(p, e) => write!(f, "cannot read source '{}': {e}", Escaped(p)),
            DestinationNotDir(p) => write!(
                f,
                "destination '{}' exists and is not a directory",
                Escaped(p)
            ),
            DestinationParentMissing(p) => write!(
                f,
                "the parent of destination '{}' does not exist (create it first, or pass --mkpath)",
                Escaped(p)
            ),
            DestinationUnreadable(p, e) => {
                write!(f, "cannot read destination '{}': {e}", Escaped(p))
            }
            Same(p) => write!(
                f,
                "source and destination are the same directory '{}'",
                Escaped(p)
            ),
            DestinationInsideSource { src, dst } => write!(
                f,
                "destination '{}' is inside source '{}'",
                Escaped(dst),
                Escaped(src)
            ),
            SourceInsideDestination { src, dst } => write!(
                f,
                "source '{}' is inside destination '{}', which the mirror would delete",
                Escaped(src),
                Escaped(dst)
            ),
            Overlap { src, dst } => write!(
                f,
                "source '{}' and destination '{}' overlap: one is inside the other",
                Escaped(src),
                Escaped(dst)
            ),
            MountedTwice { src, dst } => write!(
                f,
                "source folder '{}' and destination folder '{}' are one folder, mounted twice \
                 (as by a bind mount): the mirror would change the source through it",
                Escaped(src),
                Escaped(dst)
            ),
            EmptySource { src, dst } => write!(
                f,
                "source '{}' is empty but destination '{}' is not; is the source mounted? \
                 Pass --allow-empty-source to empty the destination",
                Escaped(src),
                Escaped(dst)
            ),
            Unrelated { src, dst, entries } => {
                let name = src
                    .file_name()
                    .map(|n| Path::new(n).to_path_buf())
                    .unwrap_or_default();
                write!(
                    f,
                    "destination '{}' shares no entry with source '{}': all {entries} entr{} at \
                     its top would be deleted. Did you mean '{}'? Pass --allow-unrelated to \
                     make it a mirror of the source anyway",
                    Escaped(dst),
                    Escaped(src),
                    if *entries == 1 { "y" } else { "ies" },
                    Escaped(&dst.join(name))
                )
            }
            BackupOverlaps { backup, reason } => {
                write!(f, "backup directory '{}' {reason}", Escaped(backup))
            }
            BackupNotDir(p) => write!(
                f,
                "backup directory '{}' exists and is not a directory",
                Escaped(p)
            ),
            LogFileOverlaps { log, reason } => write!(f, "log file '{}' {reason}", Escaped(log)),
            Locked(e) => e.fmt(f),
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
    /// The mounts there were when the checks began.
    pub mounts: Present,
}

/// Check the roots: a local one must be a readable directory (SRC) or a directory or a name
/// in one (DST), and the two must not overlap — neither local folders (by path, and by device
/// and inode) nor two places of one remote (see [`crate::remote::Url::overlaps`]). A remote
/// root is checked when it is opened. Nothing is written.
pub fn check(config: &Config) -> Result<Checked, Refusal> {
    let src = &config.src;
    let dst = &config.dst;
    // Read first: a mount made after this is one the checks did not see, and no local side
    // enters it (see [`Present`]).
    let mounts = Mounts::read();
    let present = Present::of(&mounts);
    let src_real = match config.src_url {
        None => Some(check_source(src)?),
        Some(_) => None,
    };
    if let Some(dst_url) = &config.dst_url {
        if let Some(src_url) = &config.src_url {
            if src_url == dst_url {
                return Err(Refusal::Same(src.clone()));
            }
            if src_url.overlaps(dst_url) {
                return Err(Refusal::Overlap {
                    src: src.clone(),
                    dst: dst.clone(),
                });
            }
        }
        return Ok(Checked {
            protected: Vec::new(),
            mounts: present,
        });
    }
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
            match config.mkpath {
                // Its missing parents are made too: resolved from the nearest that exists.
                true => resolve_nearest(dst)
                    .map_err(|_| Refusal::DestinationParentMissing(dst.clone()))?,
                false => resolve_missing(dst)?,
            }
        }
        Err(e) => return Err(Refusal::DestinationUnreadable(dst.clone(), e)),
    };
    let Some(src_real) = src_real else {
        // A remote source cannot overlap a local destination.
        let protected = match &config.backup_dir {
            Some(backup) => check_backup(backup, None, (dst, &dst_real))?,
            None => Vec::new(),
        };
        return Ok(Checked {
            protected,
            mounts: present,
        });
    };

    // By path, and by device and inode: one tree seen through two paths (a bind mount, a
    // second mount of the same filesystem) is one tree.
    let unreadable = |e| Refusal::SourceUnreadable(src.clone(), e);
    let src_id = identity(&src_real).map_err(unreadable)?;
    let dst_id = identity(&dst_real).ok();
    if src_real == dst_real || dst_id == Some(src_id) {
        return Err(Refusal::Same(src_real));
    }
    if dst_real.starts_with(&src_real) || below(&dst_real, src_id) {
        return Err(Refusal::DestinationInsideSource {
            src: src.clone(),
            dst: dst.clone(),
        });
    }
    if src_real.starts_with(&dst_real) || dst_id.is_some_and(|id| below(&src_real, id)) {
        return Err(Refusal::SourceInsideDestination {
            src: src.clone(),
            dst: dst.clone(),
        });
    }
    // Through the table of mounts: a folder of one side mounted a second time inside the
    // other, which the ancestors of the roots do not show (and a listing only where it enters
    // that folder: not where the filters or `-x` leave it out of SRC).
    let src_reach = mounts.reach(&src_real);
    // With `-x`, one filesystem mounted at the same place on both sides is entered on neither:
    // nothing is copied into it or deleted from it (DST only: a backup is written anywhere).
    let same_place = |s: &Reach, d: &Reach, root: &Path| {
        let rel = |r: &Reach, root: &Path| r.seen_at.strip_prefix(root).ok().map(Path::to_owned);
        config.one_file_system && s.other_fs && d.other_fs && rel(s, &src_real) == rel(d, root)
    };
    let shared = |root: &Path, left_alone: bool| {
        let reach = mounts.reach(root);
        (reach.iter()).find_map(|d| {
            (src_reach.iter())
                .filter(|s| !(left_alone && same_place(s, d, root)))
                .find_map(|s| s.meets(d))
        })
    };
    if let Some((src, dst)) = shared(&dst_real, true) {
        return Err(Refusal::MountedTwice { src, dst });
    }
    let protected = match &config.backup_dir {
        Some(backup) => check_backup(backup, Some(&src_real), (dst, &dst_real))?,
        None => Vec::new(),
    };
    if let Some(backup) = &config.backup_dir {
        let real = resolve_nearest(backup).unwrap_or_else(|_| backup.clone());
        if shared(&real, false).is_some() {
            return Err(Refusal::BackupOverlaps {
                backup: backup.clone(),
                reason: "is inside the source, mounted a second time (as by a bind mount)",
            });
        }
    }
    Ok(Checked {
        protected,
        mounts: present,
    })
}

/// The guards on the listings, as the planner will see them (after filters and `--flatten`):
///
/// - the source root must have been listed: a root that vanished or could not be read is a
///   refusal, never an empty tree;
/// - an empty source over a destination that holds anything is refused, unless
///   `--allow-empty-source` (a root holding only an empty `lost+found` is empty: a freshly made
///   filesystem mounted at SRC);
/// - a destination that holds entries none of which the source has is refused, unless
///   `--allow-unrelated`: the run would delete all of it.
///
/// Entries the mirror leaves alone (a backup directory inside DST, leftover temporaries) do not
/// count. Without deletion (`--no-delete`) nothing can be lost and nothing is refused here.
pub fn listings(config: &Config, src: &Tree, dst: &Tree) -> Result<(), Refusal> {
    if src.root.is_none() {
        return Err(Refusal::SourceMissing(config.src.clone()));
    }
    if let Some(e) = src.errors.iter().find(|e| e.path == config.src) {
        let cause = io::Error::new(e.source.kind(), e.source.to_string());
        return Err(Refusal::SourceUnreadable(config.src.clone(), cause));
    }
    let protected = |path: &Path| config.protected.iter().any(|p| is_within(path, p));
    let counted = |i: u32| {
        let path = dst.path_at(i);
        !protected(path) && !is_temporary(path, dst.entries[i as usize].tag)
    };
    let dst_entries = (0..dst.entries.len() as u32).filter(|&i| counted(i));
    if !config.delete || dst_entries.clone().next().is_none() {
        return Ok(());
    }
    let lost_and_found = |i: usize| {
        src.entries[i].tag == Tag::Dir && src.path_at(i as u32) == Path::new("lost+found")
    };
    let src_empty = match src.entries.len() {
        0 => true,
        1 => lost_and_found(0),
        _ => false,
    };
    if src_empty {
        return match config.allow_empty_source {
            true => Ok(()),
            false => Err(Refusal::EmptySource {
                src: config.src.clone(),
                dst: config.dst.clone(),
            }),
        };
    }
    let shared = merge(src, dst).any(|pair| matches!(pair, Pair::Both(..)));
    if shared || config.allow_unrelated {
        return Ok(());
    }
    let top = dst_entries
        .filter(|&i| dst.path_at(i).components().count() == 1)
        .count() as u64;
    Err(Refusal::Unrelated {
        src: config.src.clone(),
        dst: config.dst.clone(),
        entries: top,
    })
}

/// SRC must be a readable directory: its real path.
pub fn check_source(src: &Path) -> Result<PathBuf, Refusal> {
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
    fs::read_dir(src).map_err(|e| Refusal::SourceUnreadable(src.to_path_buf(), e))?;
    Ok(src_real)
}

/// The log file may lie neither inside SRC (which is only read) nor inside a local DST (where
/// the mirror would delete or overwrite it). Checked before the file is opened; a root that
/// cannot be resolved here is left to [`check`] to refuse.
pub fn check_log_file(log: &Path, config: &Config) -> Result<(), Refusal> {
    let overlaps = |reason| Refusal::LogFileOverlaps {
        log: log.to_path_buf(),
        reason,
    };
    let real = resolve_nearest(log).map_err(|_| overlaps("cannot be resolved"))?;
    let inside = |root: &Path| {
        let root = resolve_nearest(root).ok();
        root.is_some_and(|root| {
            real.starts_with(&root) || identity(&root).is_ok_and(|id| below(&real, id))
        })
    };
    if config.src_url.is_none() && inside(&config.src) {
        return Err(overlaps("is inside the source"));
    }
    if config.dst_url.is_none() && inside(&config.dst) {
        return Err(overlaps("is inside the destination"));
    }
    Ok(())
}

/// A directory's device and inode.
fn identity(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Whether the directory `id` is `path` (a real path, which need not exist yet) or one of its
/// ancestors: each existing ancestor is compared by device and inode, so an ancestor reached
/// through a bind mount is still found.
fn below(path: &Path, id: (u64, u64)) -> bool {
    path.ancestors()
        .any(|ancestor| identity(ancestor).is_ok_and(|found| found == id))
}

/// The backup directory may be anywhere but in SRC, and must not hold SRC or DST; inside DST it
/// is left out of the mirror.
/// `dst` is DST as given and its real path.
fn check_backup(
    backup: &Path,
    src: Option<&Path>,
    (given, dst): (&Path, &Path),
) -> Result<Vec<PathBuf>, Refusal> {
    let overlaps = |reason| Refusal::BackupOverlaps {
        backup: backup.to_path_buf(),
        reason,
    };
    match fs::metadata(backup) {
        Ok(meta) if !meta.is_dir() => return Err(Refusal::BackupNotDir(backup.to_path_buf())),
        _ => {}
    }
    let real = resolve_nearest(backup).map_err(|_| overlaps("cannot be resolved"))?;
    let id = identity(&real).ok();
    let contains = |path: &Path| path.starts_with(&real) || id.is_some_and(|id| below(path, id));
    if let Some(src) = src {
        if real.starts_with(src) || identity(src).is_ok_and(|src| below(&real, src)) {
            return Err(overlaps("is inside the source"));
        }
        if contains(src) {
            return Err(overlaps("contains the source"));
        }
    }
    if contains(dst) {
        return Err(overlaps("is or contains the destination"));
    }
    // Named below DST (as a relative one always is): inside it, whatever lies on its way (the
    // checks above still follow a link there, so one into SRC is refused). It is reached
    // through DST's handles, which never follow a link out of DST.
    let given = std::path::absolute(given).unwrap_or_else(|_| given.to_path_buf());
    if let Ok(rel) = backup.strip_prefix(&given) {
        let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
        if plain && !rel.as_os_str().is_empty() {
            return Ok(vec![rel.to_path_buf()]);
        }
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
            // Missing, or below a file (no such folder either).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
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
