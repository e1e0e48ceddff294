//! Deciding: two listings in, a plan of plain-data actions out. No I/O.
//!
//! [`plan`] walks the source and destination listings together in one merge pass (both are in
//! path order) and decides, for every path, what must happen: create a directory, write a file
//! or symlink (with the [`Reason`]), fix metadata, delete, or nothing. The result is grouped by
//! the phase that executes it, in the order it must run: directories parent-first, deletions
//! deepest-first, directory metadata last. A dry run prints this plan and stops; the executor
//! runs it. Deletions are planned with the reason they may be withheld, so that the decision to
//! delete nothing after an unreadable source is made here and tested without a disk.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::compare::{self, Reason, Verdict};
use crate::config::{Config, Method};
use crate::entry::{Entry, Kind, Mtime, RootMeta, Tag, Tree};
use crate::fsops::is_temp_name;

use tracing::debug;

/// A count of files and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub files: u64,
    pub bytes: u64,
}

impl Tally {
    pub fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// Create a directory, first removing the non-directory that holds its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MakeDir {
    pub path: PathBuf,
    pub replaces: Option<Tag>,
}

/// What a transfer writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    File { size: u64 },
    Symlink { target: Box<Path>, mtime: Mtime },
}

/// Write one file or symlink at `path`, atomically replacing whatever is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub path: PathBuf,
    /// The source path when it differs from `path` (`--flatten`).
    pub from: Option<PathBuf>,
    pub payload: Payload,
    pub reason: Reason,
}

impl Transfer {
    /// A destination entry existed at this path before (so this is an update, not a copy).
    pub fn is_update(&self) -> bool {
        self.reason != Reason::New
    }
}

/// Metadata that differs on an otherwise unchanged file or symlink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fix {
    pub path: PathBuf,
    pub tag: Tag,
    pub mode: Option<u32>,
    pub mtime: Option<Mtime>,
}

/// Remove one destination entry the source does not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub path: PathBuf,
    pub tag: Tag,
}

/// Give a directory its source mode and mtime once everything below it is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirMeta {
    pub path: PathBuf,
    pub mode: u32,
    pub mtime: Mtime,
    /// The existing directory lacks owner write/search permission and must be opened up
    /// before anything is written in it.
    pub unlock: bool,
    /// The directory existed with another mode or mtime (worth an itemized line).
    pub differed: bool,
}

/// Why no deletion will run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// The source listing had errors: an unread part might hold what DST has.
    SourceErrors(usize),
    /// More deletions than `--max-delete` allows.
    MaxDelete { planned: u64, max: u64 },
    /// A write failed during the run (decided by the executor).
    WriteErrors(u64),
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Withheld::SourceErrors(n) => write!(
                f,
                "the source could not be read completely ({n} error{})",
                plural(*n as u64)
            ),
            Withheld::MaxDelete { planned, max } => {
                write!(
                    f,
                    "{planned} deletions planned, more than --max-delete {max}"
                )
            }
            Withheld::WriteErrors(n) => {
                write!(f, "{n} write{} failed", plural(*n))
            }
        }
    }
}

pub(crate) fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Everything one run will do, grouped by phase, in execution order.
#[derive(Debug, Default)]
pub struct Plan {
    /// DST does not exist and is created first.
    pub make_root: bool,
    /// Temporaries left by an interrupted run, removed before anything else.
    pub temps: Vec<PathBuf>,
    /// Parent before child.
    pub dirs: Vec<MakeDir>,
    pub transfers: Vec<Transfer>,
    pub fixes: Vec<Fix>,
    /// Deepest first. Empty when deletion is off.
    pub deletes: Vec<Delete>,
    /// Deepest first; includes the root (empty path).
    pub dir_meta: Vec<DirMeta>,
    /// Source entries that are not mirrored (FIFOs, sockets, devices).
    pub skipped: Vec<PathBuf>,
    /// `--update`: destination files kept because they are newer.
    pub kept: Vec<PathBuf>,
    pub unchanged: Tally,
    /// Set when `deletes` must not run.
    pub withheld: Option<Withheld>,
    /// Type changes that would destroy a non-empty destination directory while deletions are
    /// withheld: not carried out this run.
    pub held_back: Vec<PathBuf>,
}

impl Plan {
    /// The totals the plan would copy, update and delete.
    pub fn totals(&self) -> (Tally, Tally) {
        let mut copied = Tally::default();
        let mut updated = Tally::default();
        for t in &self.transfers {
            let size = match t.payload {
                Payload::File { size } => size,
                Payload::Symlink { .. } => 0,
            };
            if t.is_update() {
                updated.add(size)
            } else {
                copied.add(size)
            }
        }
        (copied, updated)
    }

    /// One itemized line per action, in execution order (deletions only if they will run).
    pub fn items(&self) -> Vec<Item<'_>> {
        let mut items = Vec::new();
        items.extend(self.temps.iter().map(|p| Item::stale(p)));
        items.extend(self.dirs.iter().map(Item::make_dir));
        items.extend(self.transfers.iter().map(Item::transfer));
        items.extend(self.fixes.iter().map(Item::fix));
        if self.withheld.is_none() {
            items.extend(self.deletes.iter().map(Item::delete));
        }
        items.extend(
            self.dir_meta
                .iter()
                .filter(|d| d.differed)
                .map(Item::dir_meta),
        );
        items
    }
}

/// One itemized line: `<op><type> <reason> <path>`, e.g. `>f size    docs/a.txt`.
///
/// `op` is `+` created, `>` updated, `~` replaced by another type, `-` deleted, `.` metadata
/// fixed; the type is `f` file, `d` directory, `l` symlink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    pub op: &'static str,
    pub tag: Tag,
    pub reason: &'static str,
    pub path: &'a Path,
    pub target: Option<&'a Path>,
    /// Bytes this action writes (for progress); not displayed.
    pub bytes: u64,
}

impl<'a> Item<'a> {
    fn new(op: &'static str, tag: Tag, reason: &'static str, path: &'a Path) -> Self {
        Item {
            op,
            tag,
            reason,
            path,
            target: None,
            bytes: 0,
        }
    }

    /// A metadata fix.
    pub fn fix(fix: &'a Fix) -> Self {
        let reason = if fix.mode.is_some() { "mode" } else { "time" };
        Item::new(".", fix.tag, reason, &fix.path)
    }

    /// A directory created (or replacing another type).
    pub fn make_dir(dir: &'a MakeDir) -> Self {
        match dir.replaces {
            Some(_) => Item::new("~", Tag::Dir, "type", &dir.path),
            None => Item::new("+", Tag::Dir, "new", &dir.path),
        }
    }

    /// Directory metadata that had drifted.
    pub fn dir_meta(dir: &'a DirMeta) -> Self {
        Item::new(".", Tag::Dir, "meta", &dir.path)
    }

    /// A leftover temporary removed.
    pub fn stale(path: &'a Path) -> Self {
        Item::new("-", Tag::File, "stale", path)
    }

    pub fn transfer(t: &'a Transfer) -> Self {
        let op = match t.reason {
            Reason::New => "+",
            Reason::Type(_) => "~",
            _ => ">",
        };
        match &t.payload {
            Payload::File { size } => Item {
                bytes: *size,
                ..Item::new(op, Tag::File, t.reason.word(), &t.path)
            },
            Payload::Symlink { target, .. } => Item {
                target: Some(target),
                ..Item::new(op, Tag::Symlink, t.reason.word(), &t.path)
            },
        }
    }

    pub fn delete(d: &'a Delete) -> Self {
        Item::new("-", d.tag, "gone", &d.path)
    }
}

impl fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} {:<6} {}",
            self.op,
            self.tag.letter(),
            self.reason,
            Escaped(self.path)
        )?;
        if self.path.as_os_str().is_empty() {
            f.write_str(".")?;
        }
        if self.tag == Tag::Dir {
            f.write_str("/")?;
        }
        if let Some(target) = self.target {
            write!(f, " -> {}", Escaped(target))?;
        }
        Ok(())
    }
}

/// A path for a terminal: valid UTF-8 as is, control characters, backslashes and invalid bytes
/// as `\xNN` escapes, so a name with a newline stays on one line and nothing is lost.
#[derive(Debug)]
pub struct Escaped<'a>(pub &'a Path);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::ffi::OsStrExt;
        for chunk in self.0.as_os_str().as_bytes().utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() || c == '\\' {
                    for b in c.to_string().bytes() {
                        write!(f, "\\x{b:02x}")?;
                    }
                } else {
                    fmt::Write::write_char(f, c)?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// The parent of a relative path ("" for top-level entries).
fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// Compare two listings and decide every action. Pure: reads no disk.
pub fn plan(src: &Tree, dst: &Tree, config: &Config) -> Plan {
    plan_with(src, dst, config, &HashSet::new())
}

/// [`plan`], knowing which same-size files differ in content (`--checksum`), by DST path.
pub fn plan_with(src: &Tree, dst: &Tree, config: &Config, changed: &HashSet<PathBuf>) -> Plan {
    let mut planner = Planner {
        config,
        changed,
        plan: Plan {
            make_root: dst.root.is_none(),
            ..Plan::default()
        },
        dirs: Vec::new(),
        written: HashSet::new(),
    };
    // Type changes that remove a non-empty destination directory: (transfer index, entries).
    let mut dir_replacements: Vec<(usize, u64)> = Vec::new();
    let mut replaced_entries = 0u64;

    if let Some(root) = src.root {
        planner.dirs.push(DirPair {
            path: PathBuf::new(),
            src: root,
            dst: dst.root,
        });
    }

    let (s, d) = (&src.entries, &dst.entries);
    let (mut i, mut j) = (0, 0);
    let protected = |e: &Entry| config.protected.iter().any(|p| e.path.starts_with(p));
    while i < s.len() || j < d.len() {
        if s.get(i).is_some_and(protected) {
            i += 1;
            continue;
        }
        if d.get(j).is_some_and(protected) {
            j += 1;
            continue;
        }
        let order = match (s.get(i), d.get(j)) {
            (Some(a), Some(b)) => a.path.cmp(&b.path),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                planner.source_only(&s[i], src.origin(i));
                i += 1;
            }
            Ordering::Greater => {
                planner.destination_only(&d[j]);
                j += 1;
            }
            Ordering::Equal => {
                let (a, b) = (&s[i], &d[j]);
                let replaces_dir = planner.both(a, src.origin(i), b);
                i += 1;
                j += 1;
                if replaces_dir {
                    let mut inside = 0;
                    while d.get(j).is_some_and(|e| e.path.starts_with(&a.path)) {
                        inside += 1;
                        j += 1;
                    }
                    if inside > 0 {
                        dir_replacements.push((planner.plan.transfers.len() - 1, inside));
                        replaced_entries += inside + 1;
                    }
                }
            }
        }
    }

    let Planner {
        mut plan,
        dirs,
        written,
        ..
    } = planner;
    plan.deletes.reverse();
    let planned = plan.deletes.len() as u64 + replaced_entries;
    plan.withheld = if !src.errors.is_empty() {
        Some(Withheld::SourceErrors(src.errors.len()))
    } else {
        match config.max_delete {
            Some(max) if planned > max => Some(Withheld::MaxDelete { planned, max }),
            _ => None,
        }
    };
    if plan.withheld.is_some() {
        // Replacing a non-empty directory by a file or link destroys what is below it: that is a
        // deletion too, and waits for a clean run.
        for (index, _) in dir_replacements.into_iter().rev() {
            let t = plan.transfers.remove(index);
            plan.held_back.push(t.path);
        }
        plan.held_back.reverse();
    }

    for pair in dirs.into_iter().rev() {
        let needs_write = written.contains(&pair.path);
        let (differed, unlock) = match pair.dst {
            None => (false, false),
            // A directory written in gets a new mtime anyway; only an otherwise untouched one
            // whose metadata drifted is worth an itemized line.
            Some(dst) => (
                !needs_write
                    && (dst.mode != pair.src.mode
                        || !compare::same_time(dst.mtime, pair.src.mtime, &config.compare)),
                needs_write && dst.mode & 0o700 != 0o700,
            ),
        };
        if pair.dst.is_none() || differed || needs_write {
            plan.dir_meta.push(DirMeta {
                path: pair.path,
                mode: pair.src.mode,
                mtime: pair.src.mtime,
                unlock,
                differed,
            });
        }
    }
    plan
}

/// A source directory and what the destination has at its path.
struct DirPair {
    path: PathBuf,
    src: RootMeta,
    dst: Option<RootMeta>,
}

/// The state of one planning pass.
struct Planner<'a> {
    config: &'a Config,
    changed: &'a HashSet<PathBuf>,
    plan: Plan,
    /// Every source directory, in path order, with its destination counterpart.
    dirs: Vec<DirPair>,
    /// Destination directories that will be written in (created in, renamed in, deleted from).
    written: HashSet<PathBuf>,
}

impl Planner<'_> {
    fn writes_in_parent_of(&mut self, path: &Path) {
        self.written.insert(parent(path).to_path_buf());
    }

    fn transfer(&mut self, src: &Entry, origin: &Path, reason: Reason) {
        let payload = match &src.kind {
            Kind::Symlink(target) => Payload::Symlink {
                target: target.clone(),
                mtime: src.mtime,
            },
            _ => Payload::File { size: src.size },
        };
        self.writes_in_parent_of(&src.path);
        self.plan.transfers.push(Transfer {
            path: src.path.clone(),
            from: (origin != src.path).then(|| origin.to_path_buf()),
            payload,
            reason,
        });
    }

    fn make_dir(&mut self, src: &Entry, replaces: Option<Tag>) {
        self.dirs.push(dir_pair(src, None));
        self.writes_in_parent_of(&src.path);
        self.plan.dirs.push(MakeDir {
            path: src.path.clone(),
            replaces,
        });
    }

    fn source_only(&mut self, entry: &Entry, origin: &Path) {
        match &entry.kind {
            Kind::Special => self.plan.skipped.push(origin.to_path_buf()),
            Kind::Dir => self.make_dir(entry, None),
            Kind::File | Kind::Symlink(_) => self.transfer(entry, origin, Reason::New),
        }
    }

    fn destination_only(&mut self, entry: &Entry) {
        if is_temp_name(&entry.path) {
            self.writes_in_parent_of(&entry.path);
            self.plan.temps.push(entry.path.clone());
        } else if self.config.delete {
            self.writes_in_parent_of(&entry.path);
            self.plan.deletes.push(Delete {
                path: entry.path.clone(),
                tag: entry.kind.tag(),
            });
        }
    }

    /// Decide a path both sides have. Returns true when a destination directory is replaced by
    /// a non-directory (its contents go with it).
    fn both(&mut self, src: &Entry, origin: &Path, dst: &Entry) -> bool {
        let dst_tag = dst.kind.tag();
        match (&src.kind, &dst.kind) {
            (Kind::Special, _) => self.plan.skipped.push(origin.to_path_buf()),
            (Kind::Dir, Kind::Dir) => self.dirs.push(dir_pair(src, Some(dst))),
            (Kind::Dir, _) => self.make_dir(src, Some(dst_tag)),
            (Kind::File, Kind::File) => {
                let changed = self.changed.contains(&src.path);
                match compare::files(src, dst, &self.config.compare, changed) {
                    Verdict::Unchanged => self.unchanged_file(src, dst),
                    Verdict::KeepNewer => {
                        debug!(path = %src.path.display(), "destination is newer: kept");
                        self.plan.kept.push(src.path.clone())
                    }
                    Verdict::Write(reason) => self.transfer(src, origin, reason),
                }
            }
            (Kind::Symlink(a), Kind::Symlink(b)) if a == b => {
                if src.mtime != dst.mtime {
                    self.plan.fixes.push(Fix {
                        path: src.path.clone(),
                        tag: Tag::Symlink,
                        mode: None,
                        mtime: Some(src.mtime),
                    });
                } else {
                    self.plan.unchanged.add(0);
                }
            }
            (Kind::Symlink(_), Kind::Symlink(_)) => self.transfer(src, origin, Reason::Target),
            (Kind::File | Kind::Symlink(_), _) => {
                self.transfer(src, origin, Reason::Type(dst_tag));
                return dst_tag == Tag::Dir;
            }
        }
        false
    }

    /// Same content: fix the mode if it differs, and the time when contents were compared
    /// (`--checksum`) and the times differ.
    fn unchanged_file(&mut self, src: &Entry, dst: &Entry) {
        let rule = &self.config.compare;
        let mode = (src.mode != dst.mode).then_some(src.mode);
        let mtime = (rule.method == Method::Checksum
            && !compare::same_time(src.mtime, dst.mtime, rule))
        .then_some(src.mtime);
        if mode.is_some() || mtime.is_some() {
            self.plan.fixes.push(Fix {
                path: src.path.clone(),
                tag: Tag::File,
                mode,
                mtime,
            });
        } else {
            debug!(path = %src.path.display(), "unchanged: same size and time");
            self.plan.unchanged.add(src.size);
        }
    }
}

fn dir_pair(src: &Entry, dst: Option<&Entry>) -> DirPair {
    let meta = |e: &Entry| RootMeta {
        mtime: e.mtime,
        mode: e.mode,
    };
    DirPair {
        path: src.path.clone(),
        src: meta(src),
        dst: dst.map(meta),
    }
}

#[cfg(test)]
mod tests;
