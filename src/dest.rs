//! Where the mirror is written: the one seam between the engine and a destination.
//!
//! The scanner, planner and reporters never see how a destination stores things. The executor
//! carries out a plan through a [`Destination`]: the local folder ([`Local`], writing through
//! [`fsops`]) or, with the `s3` and `sftp` features, a bucket prefix or a folder on an SSH host
//! (see `remote`). Each method is one step of a plan, blocking, safe to call from many workers
//! at once; every error names the path as the user wrote it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tracing::debug;

use crate::checksum;
use crate::config::{Compare, Method, Xattrs};
use crate::entry::{Chown, Mtime, Tag, Tree};
use crate::error::{Error, Op, Result};
use crate::filter::Filter;
use crate::fsops::{self, Base, Copied, CopyError, Displaced, Expected, Held, Node, Source};
use crate::lock::{self, Lock};
use crate::xattrs::{self, Differs};

/// One side a plan can be carried out against.
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
        src_base: &Base,
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
    fn fix(
        &self,
        src: Source<'_>,
        rel: &Path,
        tag: Tag,
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
        _src_base: &Base,
        _src: &Tree,
        _dst: &Tree,
        _which: Xattrs,
        _rule: &Compare,
    ) -> (HashMap<u32, Differs>, Vec<Error>) {
        (HashMap::new(), Vec::new())
    }

    /// Remove an entry (a directory is empty by now). Already gone counts as done.
    fn remove(&self, rel: &Path, tag: Tag) -> Result<()>;

    /// Set a directory's mode and mtime, once nothing below it changes any more.
    /// `mode` is `None` where the destination keeps no permission bits (some refuse the call).
    fn set_dir_meta(&self, rel: &Path, mode: Option<u16>, mtime: Mtime, owner: Chown)
        -> Result<()>;
}

/// What a destination that cannot hold `what` answers (the planner never asks it to).
fn unsupported(op: Op, path: PathBuf, what: &str) -> Error {
    let cause = std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("this destination cannot hold {what}"),
    );
    Error::new(op, path, cause)
}

/// A folder on a local filesystem, written only through [`fsops`] and its directory handles.
#[derive(Debug)]
pub struct Local<'a> {
    pub root: &'a Path,
    /// `--backup-dir`: where overwritten and deleted entries go instead of being destroyed.
    pub backup: Option<&'a Path>,
    /// The run's lock on the root (see [`crate::lock`]): taken before the run when the root
    /// exists, else as soon as it is made; empty in a dry run.
    pub lock: OnceLock<Lock>,
    /// The root, opened once it exists.
    base: OnceLock<Base>,
    /// The backup directory, opened (and made) when first needed.
    backup_base: OnceLock<Base>,
    /// Make the root's missing parents with it (`--mkpath`).
    pub mkpath: bool,
    /// `-x`: directories on another filesystem are not entered (nor emptied).
    pub one_fs: bool,
    /// Earlier snapshots to take unchanged files from (`--link-dest`, `--reflink-dest`).
    pub priors: Vec<Prior>,
}

/// An earlier snapshot: a file unchanged against it is taken from it rather than copied from
/// the source.
#[derive(Debug)]
pub struct Prior {
    pub base: Base,
    /// Copied from it with `copy_file_range` (a reflink where the filesystem shares extents:
    /// btrfs, XFS) instead of hard-linked to it.
    pub reflink: bool,
}

impl<'a> Local<'a> {
    pub fn new(root: &'a Path, backup: Option<&'a Path>) -> Local<'a> {
        Local {
            root,
            backup,
            lock: OnceLock::new(),
            base: OnceLock::new(),
            backup_base: OnceLock::new(),
            mkpath: false,
            one_fs: false,
            priors: Vec::new(),
        }
    }

    /// The root's handle, opened on first use (the root exists by the time anything is
    /// written).
    fn base(&self) -> Result<&Base> {
        if let Some(base) = self.base.get() {
            return Ok(base);
        }
        let base = Base::open(self.root).map_err(|e| Error::new(Op::Open, self.root, e))?;
        Ok(self.base.get_or_init(|| base))
    }

    fn displaced<'r>(&'r self, rel: &'r Path) -> Result<Displaced<'r>> {
        let Some(dir) = self.backup else {
            return Ok(Displaced::Destroy);
        };
        let base = match self.backup_base.get() {
            Some(base) => base,
            None => {
                std::fs::create_dir_all(dir).map_err(|e| Error::new(Op::MakeDir, dir, e))?;
                let base = Base::open(dir).map_err(|e| Error::new(Op::Open, dir, e))?;
                self.backup_base.get_or_init(|| base)
            }
        };
        Ok(Displaced::Backup { dir: base, rel })
    }
}

impl Destination for Local<'_> {
    fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn scan(&self, filter: &Filter) -> Tree {
        crate::scan::scan(self.root, filter, self.one_fs)
    }

    fn refine(
        &self,
        src_base: &Base,
        src: &Tree,
        dst: &mut Tree,
        compare: &Compare,
    ) -> (HashSet<u32>, Vec<Error>) {
        match (compare.method, self.base()) {
            (Method::Checksum, Ok(dst_base)) => checksum::differing(src, dst, src_base, dst_base),
            // No DST yet (or none to open): no pair of files to compare.
            _ => (HashSet::new(), Vec::new()),
        }
    }

    fn probe(
        &self,
        sample: Option<&std::ffi::OsStr>,
    ) -> std::io::Result<Option<crate::config::Limits>> {
        let base = self.base().map_err(|e| e.source)?;
        fsops::probe(base, sample).map(Some)
    }

    fn make_root(&self) -> Result<()> {
        // Made (and locked) earlier in this run, to probe it before planning.
        if self.lock.get().is_some() {
            return Ok(());
        }
        if let Some(parent) = self.root.parent().filter(|_| self.mkpath) {
            std::fs::create_dir_all(parent).map_err(|e| Error::new(Op::MakeDir, parent, e))?;
        }
        std::fs::create_dir(self.root).map_err(|e| Error::new(Op::MakeDir, self.root, e))?;
        // Nobody else can hold a directory made a moment ago — unless another run raced to
        // make it, and then this one stops here.
        let lock = lock::lock(self.root, false, |_| {}).map_err(|e| {
            let cause = std::io::Error::new(std::io::ErrorKind::WouldBlock, e.to_string());
            Error::new(Op::Lock, self.root, cause)
        })?;
        let _ = self.lock.set(lock);
        Ok(())
    }

    fn respell(&self, rel: &Path, old: &std::ffi::OsStr) -> Result<()> {
        fsops::respell(self.base()?, rel, old)
    }

    fn exists(&self, rel: &Path) -> bool {
        self.base().is_ok_and(|base| fsops::exists_at(base, rel))
    }

    fn vanished(&self) -> bool {
        self.base.get().is_some_and(fsops::is_gone)
    }

    fn remove_temp(&self, rel: &Path) -> Result<()> {
        fsops::remove_entry(self.base()?, rel, Tag::File, Displaced::Destroy)
    }

    fn open_dir(&self, rel: &Path, mode: u16) -> Result<()> {
        fsops::set_mode(self.base()?, rel, u32::from(mode) | 0o700)
    }

    fn make_dir(&self, rel: &Path, replaces: Option<Tag>) -> Result<()> {
        fsops::make_dir(self.base()?, rel, replaces, self.displaced(rel)?)
    }

    fn write_file(
        &self,
        src: Source<'_>,
        rel: &Path,
        expected: Expected,
        held: Held,
    ) -> std::result::Result<Copied, CopyError> {
        let displaced = self.displaced(rel)?;
        let base = self.base()?;
        for prior in &self.priors {
            // A hard link shares the owner too; a reflinked copy gets its own.
            if !fsops::same_as(&prior.base, rel, src, &expected, !prior.reflink) {
                continue;
            }
            let taken = match prior.reflink {
                true => {
                    let from = Source {
                        base: &prior.base,
                        rel,
                    };
                    fsops::copy_file(from, base, rel, expected, held, displaced)
                }
                false => fsops::link_from(&prior.base, rel, base, rel, held, displaced)
                    .map(|()| Copied::Done(0))
                    .map_err(CopyError::Io),
            };
            match taken {
                Ok(Copied::Done(bytes)) => return Ok(Copied::Done(bytes)),
                // Another filesystem, too many links, changed meanwhile: copied from SRC.
                other => {
                    debug!(path = %rel.display(), result = ?other, "not taken from a snapshot")
                }
            }
        }
        fsops::copy_file(src, base, rel, expected, held, displaced)
    }

    fn make_symlink(
        &self,
        rel: &Path,
        target: &Path,
        mtime: Mtime,
        replaces: Option<Tag>,
        owner: Chown,
    ) -> Result<()> {
        let displaced = self.displaced(rel)?;
        let link = fsops::Link {
            target,
            mtime,
            owner,
        };
        fsops::make_symlink(link, self.base()?, rel, replaces, displaced)
    }

    fn make_hard_link(&self, rel: &Path, leader: &Path, held: Held) -> Result<()> {
        let displaced = self.displaced(rel)?;
        fsops::make_hard_link(self.base()?, rel, leader, held, displaced)
    }

    fn make_special(&self, rel: &Path, node: Node, replaces: Option<Tag>) -> Result<()> {
        let displaced = self.displaced(rel)?;
        fsops::make_special(node, self.base()?, rel, replaces, displaced)
    }

    fn fix(
        &self,
        _src: Source<'_>,
        rel: &Path,
        tag: Tag,
        mode: Option<u16>,
        mtime: Option<Mtime>,
        owner: Chown,
    ) -> Result<()> {
        let base = self.base()?;
        // The owner first: a chown clears setuid and setgid bits, which the mode then sets.
        if !owner.is_empty() {
            fsops::set_owner(base, rel, owner)?;
        }
        if let Some(mode) = mode {
            fsops::set_mode(base, rel, u32::from(mode))?;
        }
        match mtime {
            Some(mtime) => fsops::set_mtime(base, rel, mtime, tag),
            None => Ok(()),
        }
    }

    fn copy_xattrs(&self, src: Source<'_>, rel: &Path, which: Xattrs) -> Result<()> {
        fsops::copy_xattrs(src, self.base()?, rel, which)
    }

    fn xattrs_differing(
        &self,
        src_base: &Base,
        src: &Tree,
        dst: &Tree,
        which: Xattrs,
        rule: &Compare,
    ) -> (HashMap<u32, Differs>, Vec<Error>) {
        match self.base() {
            Ok(dst_base) => xattrs::differing(src, dst, (src_base, dst_base), which, rule),
            Err(_) => (HashMap::new(), Vec::new()),
        }
    }

    fn remove(&self, rel: &Path, tag: Tag) -> Result<()> {
        fsops::remove_entry(self.base()?, rel, tag, self.displaced(rel)?)
    }

    fn set_dir_meta(
        &self,
        rel: &Path,
        mode: Option<u16>,
        mtime: Mtime,
        owner: Chown,
    ) -> Result<()> {
        let base = self.base()?;
        if !owner.is_empty() {
            fsops::set_owner(base, rel, owner)?;
        }
        if let Some(mode) = mode {
            fsops::set_mode(base, rel, u32::from(mode))?;
        }
        fsops::set_mtime(base, rel, mtime, Tag::Dir)
    }
}
