//! A folder on a local filesystem, as either end of a run: [`Folder`] reads SRC, [`Local`]
//! writes DST, both only through [`crate::fsops`] and its directory handles.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tracing::debug;

use super::{Copied, CopyError, Destination, Expected, Held, Opened, Origin, Place, Source};
use crate::checksum;
use crate::config::{Compare, Method, Xattrs};
use crate::entry::{Chown, Mtime, Tag, Tree};
use crate::error::{Error, Op, Result};
use crate::filter::Filter;
use crate::fsops::{self, Base, Displaced, Node};
use crate::lock::{self, Lock};
use crate::mounts::Present;
use crate::xattrs::{self, Differs};

/// A folder on a local filesystem as the side a run reads: listed by [`crate::scan`], its
/// files opened through its directory handles.
#[derive(Debug)]
pub struct Folder {
    root: PathBuf,
    base: Base,
    /// `-x`: directories on another filesystem are listed empty.
    one_fs: bool,
}

impl Folder {
    /// Open the folder at `root` (which exists). It is only read: a mount made below it
    /// during the run (an automount its listing triggered) is read like the rest.
    pub fn open(root: &Path, one_fs: bool) -> std::io::Result<Folder> {
        Ok(Folder {
            root: root.to_path_buf(),
            base: Base::open(root, Present::default())?,
            one_fs,
        })
    }

    /// Its directory handle.
    pub fn base(&self) -> &Base {
        &self.base
    }
}

impl Origin for Folder {
    fn path(&self, rel: &Path) -> PathBuf {
        self.base.path(rel)
    }

    fn scan(&self, filter: &Filter) -> Tree {
        crate::scan::scan(&self.root, filter, self.one_fs)
    }

    fn folder(&self) -> Option<&Base> {
        Some(&self.base)
    }

    fn place(&self) -> Option<Place> {
        std::fs::canonicalize(&self.root).ok().map(Place::Here)
    }

    fn open(&self, rel: &Path, expected: Expected) -> Result<Option<(Opened, Expected)>> {
        // Nothing to read, and no attributes to read with it: opening the file would only
        // tell what the listing told.
        if expected.size == 0 && !expected.fresh && !expected.xattrs.any() {
            return Ok(Some((Opened::Empty, expected)));
        }
        let opened = fsops::open_source(&self.base, rel, expected)?;
        Ok(opened.map(|(file, expected)| (Opened::File(file), expected)))
    }
}

/// A folder on a local filesystem as the side a run writes.
#[derive(Debug)]
pub struct Local<'a> {
    pub root: &'a Path,
    /// `--backup-dir`: where overwritten and deleted entries go instead of being destroyed.
    pub backup: Option<&'a Path>,
    /// Its path below the root, when it lies inside DST (its real path, links followed as
    /// when the run began).
    pub backup_inside: Option<&'a Path>,
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
    /// The mounts there were when the run began: a folder mounted on since is not entered.
    pub present: Present,
}

/// An earlier snapshot: a file unchanged against it is taken from it rather than copied from
/// the source.
#[derive(Debug)]
pub struct Prior {
    pub folder: Folder,
    /// Copied from it with `copy_file_range` (a reflink where the filesystem shares extents:
    /// btrfs, XFS) instead of hard-linked to it.
    pub reflink: bool,
}

impl<'a> Local<'a> {
    pub fn new(root: &'a Path, backup: Option<&'a Path>) -> Local<'a> {
        Local {
            root,
            backup,
            backup_inside: None,
            lock: OnceLock::new(),
            base: OnceLock::new(),
            backup_base: OnceLock::new(),
            mkpath: false,
            one_fs: false,
            priors: Vec::new(),
            present: Present::default(),
        }
    }

    /// The root's handle, opened on first use (the root exists by the time anything is
    /// written).
    fn base(&self) -> Result<&Base> {
        if let Some(base) = self.base.get() {
            return Ok(base);
        }
        let base = Base::open(self.root, self.present.clone())
            .map_err(|e| Error::new(Op::Open, self.root, e))?;
        Ok(self.base.get_or_init(|| base))
    }

    fn displaced<'r>(&'r self, rel: &'r Path) -> Result<Displaced<'r>> {
        let Some(path) = self.backup else {
            return Ok(Displaced::Destroy);
        };
        let inside = match self.backup_inside {
            Some(below) => Some((self.base()?, below)),
            None => None,
        };
        let dir = fsops::BackupDir {
            opened: &self.backup_base,
            path,
            inside,
            present: &self.present,
        };
        Ok(Displaced::Backup { dir, rel })
    }
}

/// Whether two files have the same contents, read and hashed (`--checksum`); one that cannot
/// be read is no match.
fn same_contents(a: Source<'_>, b: Source<'_>) -> bool {
    let (a, b) = rayon::join(|| checksum::hash(a), || checksum::hash(b));
    matches!((a, b), (Ok(a), Ok(b)) if a == b)
}

impl Destination for Local<'_> {
    fn path(&self, rel: &Path) -> PathBuf {
        crate::fsops::joined(self.root, rel)
    }

    /// Its real path, or (not made yet) its parent's and its name.
    fn place(&self) -> Option<Place> {
        let real = std::fs::canonicalize(self.root).or_else(|_| {
            let parent = self.root.parent().filter(|p| !p.as_os_str().is_empty());
            let parent = std::fs::canonicalize(parent.unwrap_or(Path::new(".")))?;
            Ok::<_, std::io::Error>(parent.join(self.root.file_name().unwrap_or_default()))
        });
        real.ok().map(Place::Here)
    }

    fn scan(&self, filter: &Filter) -> Tree {
        crate::scan::scan(self.root, filter, self.one_fs)
    }

    fn refine(
        &self,
        origin: &dyn Origin,
        src: &Tree,
        dst: &mut Tree,
        compare: &Compare,
    ) -> (HashSet<u32>, Vec<Error>) {
        match (compare.method, self.base()) {
            (Method::Checksum, Ok(dst_base)) => checksum::differing(src, dst, origin, dst_base),
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
        let mode = Some(u32::from(mode) | 0o700);
        fsops::fix_entry(self.base()?, rel, Tag::Dir, Chown::default(), mode, None)
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
        // A copy to be a file of its own may be a reflinked one, never a hard link.
        for prior in self.priors.iter().filter(|p| p.reflink || !expected.own) {
            // A hard link shares the owner too; a reflinked copy gets its own.
            let prior_base = prior.folder.base();
            if !fsops::same_as(prior_base, rel, src, &expected, !prior.reflink) {
                continue;
            }
            let from = Source {
                origin: &prior.folder,
                rel,
            };
            if expected.contents && !same_contents(src, from) {
                continue;
            }
            let taken = match prior.reflink {
                true => fsops::copy_file(from, base, rel, expected, held, displaced),
                false => fsops::link_from(prior_base, rel, base, rel, held, displaced)
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
        links: u32,
        mode: Option<u16>,
        mtime: Option<Mtime>,
        owner: Chown,
    ) -> Result<()> {
        let base = self.base()?;
        // A file through one handle of its own, its link count checked on it (`O_PATH`).
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if tag == Tag::File {
            return fsops::fix_file(base, rel, links, owner, mode.map(u32::from), mtime);
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = links; // no handle to read it on without opening the file
        fsops::fix_entry(base, rel, tag, owner, mode.map(u32::from), mtime)
    }

    fn copy_xattrs(&self, src: Source<'_>, rel: &Path, which: Xattrs) -> Result<()> {
        fsops::copy_xattrs(src, self.base()?, rel, which)
    }

    fn xattrs_differing(
        &self,
        origin: &dyn Origin,
        src: &Tree,
        dst: &Tree,
        which: Xattrs,
        rule: &Compare,
    ) -> (HashMap<u32, Differs>, Vec<Error>) {
        match (origin.folder(), self.base()) {
            (Some(src_base), Ok(dst_base)) => {
                xattrs::differing(src, dst, (src_base, dst_base), which, rule)
            }
            // A remote source has none to compare (the run asks for none).
            _ => (HashMap::new(), Vec::new()),
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
        let mode = mode.map(u32::from);
        fsops::fix_entry(self.base()?, rel, Tag::Dir, owner, mode, Some(mtime))
    }
}
