//! Deciding: two listings in, a plan of plain-data actions out. No I/O.
//!
//! [`plan`] walks the source and destination listings together in one merge pass (both are in
//! path order) and decides, for every path, what must happen: create a directory, write a file
//! or symlink (with the [`Reason`]), fix metadata, delete, or nothing. The result is grouped by
//! the phase that executes it, in the order it must run: directories parent-first, deletions
//! deepest-first, directory metadata last. A dry run prints this plan and stops; the executor
//! runs it. Deletions are planned with the reason they may be withheld, so that the decision to
//! delete nothing after an unreadable source is made here and tested without a disk.

use std::collections::{HashMap, HashSet};

use crate::xattrs::Differs;
use std::fmt;
use std::path::Path;

use crate::compare::{self, Reason, Verdict};
use crate::config::{Config, Method, Ownership, Xattrs};
use crate::endpoint::is_temporary;
use crate::entry::{is_within, merge, Chown, Entry, Kind, Mtime, Owner, Pair, RootMeta, Tag, Tree};

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

/// Create the directory of source entry `src` at its path, first removing the non-directory
/// that holds the path in DST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MakeDir {
    pub src: u32,
    pub replaces: Option<Tag>,
}

/// What a transfer writes, borrowed from the source listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'t> {
    File {
        size: u64,
    },
    Symlink {
        target: &'t Path,
        mtime: Mtime,
    },
    /// A special file: its kind and (for a device) number.
    Special {
        kind: Kind,
        rdev: u64,
    },
}

/// Write the file or symlink of source entry `src` at its path, atomically replacing whatever
/// DST has there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub src: u32,
    pub reason: Reason,
}

impl Transfer {
    /// A destination entry existed at this path before (so this is an update, not a copy).
    pub fn is_update(&self) -> bool {
        self.reason != Reason::New
    }
}

/// Make source entry `src` in DST a hard link to the copy of `leader`, an earlier name of the
/// same source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HardLink {
    pub src: u32,
    pub leader: u32,
    /// `New`; `Link` when DST has a file there already; `Type` when it has a symlink or
    /// special file there.
    pub reason: Reason,
}

/// Metadata that differs on an otherwise unchanged file or symlink: give DST the mode and/or
/// the mtime of source entry `src`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fix {
    pub src: u32,
    /// The link count of DST's file when listed (1 for one not linked).
    pub links: u32,
    pub mode: bool,
    pub mtime: bool,
    /// The owner and group to set (where the run keeps them and they differ).
    pub owner: Chown,
    /// The extended attributes or ACLs differ (`-X`, `-A`).
    pub xattrs: Option<Differs>,
}

/// Give a directory its source mode and mtime once everything below it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirMeta {
    /// The source directory; `None` for the roots.
    pub src: Option<u32>,
    /// The existing directory lacks owner write/search permission and must be opened up
    /// before anything is written in it.
    pub unlock: bool,
    /// The directory existed with another mode or mtime (worth an itemized line).
    pub differed: bool,
    /// The owner and group to set.
    pub owner: Chown,
    /// Give it the source's extended attributes and ACLs (new, or they differ).
    pub xattrs: bool,
}

/// Why no deletion will run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// The source listing had errors: an unread part might hold what DST has.
    SourceErrors(usize),
    /// The destination listing had errors: an unlisted part is planned as if it were empty.
    DestinationErrors(usize),
    /// More deletions than `--max-delete` allows.
    MaxDelete { planned: u64, max: u64 },
    /// Entries failed during the run: a source file unreadable, a write refused (decided by
    /// the executor).
    Failed(u64),
    /// A signal stopped the run (decided by the executor).
    Interrupted(i32),
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Withheld::SourceErrors(n) => write!(
                f,
                "the source could not be read completely ({n} error{})",
                plural(*n as u64)
            ),
            Withheld::DestinationErrors(n) => write!(
                f,
                "the destination could not be listed completely ({n} error{})",
                plural(*n as u64)
            ),
            Withheld::MaxDelete { planned, max } => {
                write!(
                    f,
                    "{planned} deletions planned, more than --max-delete {max}"
                )
            }
            Withheld::Failed(n) => {
                let entries = if *n == 1 { "entry" } else { "entries" };
                write!(f, "{n} {entries} could not be mirrored")
            }
            Withheld::Interrupted(signal) => {
                write!(
                    f,
                    "the run was interrupted ({})",
                    crate::interrupt::name(*signal)
                )
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

/// Everything one run will do, grouped by phase, in execution order. Actions name entries of
/// the two listings by index, so a plan costs a few bytes per action.
#[derive(Debug)]
pub struct Plan<'t> {
    pub src: &'t Tree,
    pub dst: &'t Tree,
    /// Who owns what the run writes (see [`Ownership`]).
    pub ownership: Ownership,
    /// The destination keeps permission bits (not on FAT and exFAT, where they are neither
    /// compared nor more than the plain `rwx` bits set).
    pub modes: bool,
    /// The extended attributes and ACLs copied (`-X`, `-A`).
    pub xattrs: Xattrs,
    /// Holes of sparse files are kept.
    pub sparse: bool,
    /// Files are compared by contents (`--checksum`): an earlier snapshot's file stands for a
    /// copy only with the same contents too.
    pub contents: bool,
    /// The destination stores names with the characters FAT refuses.
    pub any_names: bool,
    /// DST does not exist and is created first.
    pub make_root: bool,
    /// Temporaries left by an interrupted run (DST entries), removed before anything else.
    pub temps: Vec<u32>,
    /// Destination entries spelled otherwise than their source names, on a destination that
    /// ignores case: renamed to the source's spelling, parent first.
    pub respell: Vec<u32>,
    /// Parent before child.
    pub dirs: Vec<MakeDir>,
    pub transfers: Vec<Transfer>,
    pub fixes: Vec<Fix>,
    /// DST entries to remove, deepest first. Empty when deletion is off.
    pub deletes: Vec<u32>,
    /// Names of a source file with several names, made hard links to its first name (its
    /// leader) once that is in place: after every write.
    pub links: Vec<HardLink>,
    /// Files and links that take the place of a destination directory: written after the
    /// deletions, which empty the directory first (what is below it is deleted like anything
    /// SRC does not have), so that it can be removed without losing what the deletions keep.
    pub replacements: Vec<Transfer>,
    /// Deepest first; includes the root.
    pub dir_meta: Vec<DirMeta>,
    /// Source entries that are not mirrored (FIFOs, sockets, devices).
    pub skipped: Vec<u32>,
    /// `--update`: source entries whose destination file is newer and kept.
    pub kept: Vec<u32>,
    pub unchanged: Tally,
    /// Set when `deletes` must not run.
    pub withheld: Option<Withheld>,
    /// Source entries whose type change would destroy a non-empty destination directory while
    /// deletions are withheld: not carried out this run.
    pub held_back: Vec<u32>,
    /// Source entries that would replace a non-empty destination directory under
    /// `--no-delete`: not mirrored (an error each), the directory and its contents kept.
    pub blocked: Vec<u32>,
    /// Source entries that would replace a destination directory on the way to the backup
    /// folder: not mirrored (an error each), the directory and the backups in it kept.
    pub holds_backup: Vec<u32>,
}

impl<'t> Plan<'t> {
    fn new(src: &'t Tree, dst: &'t Tree, config: &Config) -> Plan<'t> {
        Plan {
            src,
            dst,
            ownership: config.ownership.clone(),
            modes: config.limits.modes,
            xattrs: config.xattrs,
            sparse: config.sparse,
            contents: config.compare.method == Method::Checksum,
            any_names: config.limits.any_names,
            make_root: dst.root.is_none(),
            temps: Vec::new(),
            respell: Vec::new(),
            dirs: Vec::new(),
            transfers: Vec::new(),
            fixes: Vec::new(),
            deletes: Vec::new(),
            replacements: Vec::new(),
            links: Vec::new(),
            dir_meta: Vec::new(),
            skipped: Vec::new(),
            kept: Vec::new(),
            unchanged: Tally::default(),
            withheld: None,
            held_back: Vec::new(),
            blocked: Vec::new(),
            holds_backup: Vec::new(),
        }
    }

    /// The path (relative to the roots) of source entry `index`.
    pub fn src_path(&self, index: u32) -> &'t Path {
        self.src.path_at(index)
    }

    /// The path (relative to the roots) of destination entry `index`.
    pub fn dst_path(&self, index: u32) -> &'t Path {
        self.dst.path_at(index)
    }

    /// The permission bits DST gets for source entry `i`: the source's, less the setuid
    /// (setgid) bit of a regular file whose copy will not have the source's owner (group), as
    /// `cp` does — a user's setuid program must not become root's.
    /// Where the destination keeps no permission bits, only the plain ones are set.
    pub fn mode_for(&self, i: u32) -> u16 {
        let entry = &self.src.entries[i as usize];
        if !self.modes {
            return self.held_mode(entry.mode);
        }
        if entry.tag != Tag::File || entry.mode & 0o6000 == 0 {
            return entry.mode;
        }
        let mut mode = entry.mode;
        let owner = self.src.owner(entry);
        if !self.ownership.keeps_owner(owner.uid) {
            mode &= !0o4000;
        }
        if !self.ownership.keeps_group(owner.gid) {
            mode &= !0o2000;
        }
        mode
    }

    /// What to change so that an entry owned by `have` (`None`: one this run creates) gets the
    /// owner and group of a source entry owned by `src`, as far as the run keeps them.
    pub fn chown(&self, src: Owner, have: Option<Owner>) -> Chown {
        // Only root gives an entry away, and only its owner changes its group: as a user, an
        // entry another user owns keeps both (no compare that could never converge).
        let creator = self.ownership.creator;
        if let (Some(have), Some(creator)) = (have, creator) {
            if creator.uid != 0 && have.uid != creator.uid {
                return Chown::default();
            }
        }
        let have = have.or(creator);
        let differs = |pick: fn(Owner) -> u32| have.is_none_or(|h| pick(h) != pick(src));
        Chown {
            uid: (self.ownership.keeps_owner(src.uid) && differs(|o| o.uid)).then_some(src.uid),
            gid: (self.ownership.keeps_group(src.gid) && differs(|o| o.gid)).then_some(src.gid),
        }
    }

    /// The owner and group to give the new copy of source entry `i`.
    pub fn chown_new(&self, i: u32) -> Chown {
        self.chown(self.src.owner(&self.src.entries[i as usize]), None)
    }

    /// What a transfer writes.
    pub fn payload(&self, t: &Transfer) -> Payload<'t> {
        let entry = &self.src.entries[t.src as usize];
        match entry.tag {
            Tag::Special(kind) => Payload::Special {
                kind,
                rdev: entry.size,
            },
            _ => match self.src.target(entry) {
                Some(target) => Payload::Symlink {
                    target,
                    mtime: entry.mtime,
                },
                None => Payload::File { size: entry.size },
            },
        }
    }

    /// The mode and mtime a directory gets at the end.
    pub fn dir_meta_values(&self, d: &DirMeta) -> (u16, Mtime) {
        match d.src {
            Some(i) => {
                let e = &self.src.entries[i as usize];
                (self.held_mode(e.mode), e.mtime)
            }
            None => {
                let root = self.src.root.expect("a plan has a source root");
                (self.held_mode(root.mode), root.mtime)
            }
        }
    }

    /// A mode as the destination can hold it: where it keeps none, the plain bits alone.
    fn held_mode(&self, mode: u16) -> u16 {
        match self.modes {
            true => mode,
            false => mode & 0o777,
        }
    }

    /// The path of a directory in `dir_meta` ("" for the root).
    pub fn dir_meta_path(&self, d: &DirMeta) -> &'t Path {
        d.src.map_or(Path::new(""), |i| self.src_path(i))
    }

    /// Whether the name of source entry `i` can be stored in the destination (as far as
    /// the characters FAT refuses go).
    pub fn names_fit(&self, i: u32) -> bool {
        self.any_names || !fat_refuses(self.src_path(i))
    }

    /// The totals the plan would copy and update.
    pub fn totals(&self) -> (Tally, Tally) {
        let mut copied = Tally::default();
        let mut updated = Tally::default();
        for t in self.transfers.iter().chain(&self.replacements) {
            let size = match self.payload(t) {
                Payload::File { size } => size,
                Payload::Symlink { .. } | Payload::Special { .. } => 0,
            };
            if t.is_update() {
                updated.add(size)
            } else {
                copied.add(size)
            }
        }
        for link in &self.links {
            match link.reason {
                Reason::New => copied.add(0),
                _ => updated.add(0),
            }
        }
        (copied, updated)
    }

    /// One itemized line per action, in execution order (deletions only if they will run).
    pub fn items(&self) -> Vec<Item<'t>> {
        let mut items = Vec::new();
        items.extend(self.temps.iter().map(|&i| Item::stale(self.dst_path(i))));
        items.extend(self.respell.iter().map(|&j| self.respell_item(j)));
        items.extend(self.dirs.iter().map(|d| self.make_dir_item(d)));
        items.extend(self.transfers.iter().map(|t| self.transfer_item(t)));
        items.extend(self.fixes.iter().map(|f| self.fix_item(f)));
        if self.withheld.is_none() {
            items.extend(self.deletes.iter().map(|&i| self.delete_item(i)));
        }
        items.extend(self.replacements.iter().map(|t| self.transfer_item(t)));
        items.extend(self.links.iter().map(|l| self.link_item(l)));
        items.extend(
            self.dir_meta
                .iter()
                .filter(|d| d.differed)
                .map(|d| self.dir_meta_item(d)),
        );
        items
    }

    pub fn transfer_item(&self, t: &Transfer) -> Item<'t> {
        let op = match t.reason {
            Reason::New => "+",
            Reason::Type(_) => "~",
            _ => ">",
        };
        let path = self.src_path(t.src);
        match self.payload(t) {
            Payload::File { .. } => Item::new(op, Tag::File, t.reason.word(), path),
            Payload::Special { kind, .. } => {
                Item::new(op, Tag::Special(kind), t.reason.word(), path)
            }
            Payload::Symlink { target, .. } => Item {
                target: Some(target),
                ..Item::new(op, Tag::Symlink, t.reason.word(), path)
            },
        }
    }

    pub fn link_item(&self, link: &HardLink) -> Item<'t> {
        let op = if link.reason == Reason::New { "+" } else { ">" };
        Item {
            target: Some(self.src_path(link.leader)),
            hard: true,
            ..Item::new(op, Tag::File, "link", self.src_path(link.src))
        }
    }

    pub fn delete_item(&self, dst: u32) -> Item<'t> {
        let tag = self.dst.entries[dst as usize].tag;
        Item::new("-", tag, "gone", self.dst_path(dst))
    }

    pub fn fix_item(&self, fix: &Fix) -> Item<'t> {
        let tag = self.src.entries[fix.src as usize].tag;
        let reason = match fix {
            Fix { mode: true, .. } => "mode",
            Fix {
                owner: Chown { uid: Some(_), .. },
                ..
            } => "owner",
            Fix {
                owner: Chown { gid: Some(_), .. },
                ..
            } => "group",
            Fix {
                xattrs: Some(what), ..
            } => what.word(),
            _ => "time",
        };
        Item::new(".", tag, reason, self.src_path(fix.src))
    }

    pub fn respell_item(&self, dst: u32) -> Item<'t> {
        let tag = self.dst.entries[dst as usize].tag;
        Item::new(".", tag, "case", self.dst_path(dst))
    }

    pub fn make_dir_item(&self, dir: &MakeDir) -> Item<'t> {
        let path = self.src_path(dir.src);
        match dir.replaces {
            Some(_) => Item::new("~", Tag::Dir, "type", path),
            None => Item::new("+", Tag::Dir, "new", path),
        }
    }

    pub fn dir_meta_item(&self, dir: &DirMeta) -> Item<'t> {
        Item::new(".", Tag::Dir, "meta", self.dir_meta_path(dir))
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
    /// `target` is the other name of a hard link (`=>`), not a symlink's (`->`).
    pub hard: bool,
}

impl<'a> Item<'a> {
    pub fn new(op: &'static str, tag: Tag, reason: &'static str, path: &'a Path) -> Self {
        Item {
            op,
            tag,
            reason,
            path,
            target: None,
            hard: false,
        }
    }

    /// A leftover temporary removed.
    pub fn stale(path: &'a Path) -> Self {
        Item::new("-", Tag::File, "stale", path)
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
            let arrow = if self.hard { "=>" } else { "->" };
            write!(f, " {arrow} {}", Escaped(target))?;
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

/// Whether a name holds a character FAT and exFAT cannot store.
fn fat_refuses(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str()
        .as_bytes()
        .iter()
        .any(|&b| b < 0x20 || b == 0x7f || b"\"*:<>?\\|".contains(&b))
}

/// Compare two listings and decide every action. Pure: reads no disk.
pub fn plan<'t>(src: &'t Tree, dst: &'t Tree, config: &Config) -> Plan<'t> {
    plan_with(src, dst, config, &Known::default())
}

/// What was found out about pairs of entries beyond their listings, by source index.
#[derive(Debug, Default)]
pub struct Known {
    /// Same-size files whose contents differ (`--checksum`).
    pub content: HashSet<u32>,
    /// Entries whose extended attributes or ACLs differ (`-X`, `-A`); `u32::MAX` is the root.
    pub xattrs: HashMap<u32, Differs>,
}

/// [`plan`], knowing more than the listings tell (see [`Known`]).
pub fn plan_with<'t>(src: &'t Tree, dst: &'t Tree, config: &Config, known: &Known) -> Plan<'t> {
    let mut planner = Planner {
        config,
        changed: &known.content,
        attrs: &known.xattrs,
        plan: Plan::new(src, dst, config),
        dirs: Vec::new(),
        open: Vec::new(),
        leaders: Vec::new(),
        owners: Vec::new(),
    };
    if !dst.links.is_empty() {
        planner.owners = owners(src, dst, config);
    }
    if config.hard_links {
        planner.leaders = vec![Leader::default(); src.links.groups()];
        // In index order, so each group's first name in path order leads it; a protected
        // name (inside the backup folder) is never written, so never leads.
        for (i, group) in src.links.iter() {
            let leader = &mut planner.leaders[group as usize];
            if leader.src == u32::MAX && !is_protected(config, src.path_at(i)) {
                leader.src = i;
            }
        }
    }
    // Replacements of destination directories that hold listed entries, by index.
    let mut emptied: Vec<usize> = Vec::new();

    if let Some(root) = src.root {
        planner.dirs.push(DirPair {
            src: None,
            meta: root,
            dst: dst.root,
            written: false,
            attrs: known.xattrs.get(&u32::MAX).copied(),
        });
        planner.open.push((Path::new(""), 0));
    }

    let protected = |path: &Path| is_protected(config, path);
    let holds_protected = |path: &Path| holds_protected(config, path);
    // A destination directory at a path where SRC has something else: (its path, what becomes
    // of what is below it, whether anything is).
    let mut covered: Option<(&Path, Below, bool)> = None;
    for pair in merge(src, dst) {
        if let (Pair::Right(j), Some((dir, below, inside))) = (pair, covered.as_mut()) {
            if is_within(dst.path_at(j), dir) {
                *inside = true;
                if let Below::Emptied(_) = below {
                    planner.destination_only(j);
                }
                continue;
            }
        }
        if let Some((_, Below::Emptied(t), true)) = covered.take() {
            emptied.push(t);
        }
        match pair {
            // Where the backup folder's path goes through, only a folder can be made; a DST
            // folder there, and all below it, stays.
            Pair::Left(i) | Pair::Both(i, _)
                if holds_protected(src.path_at(i)) && src.entries[i as usize].tag != Tag::Dir =>
            {
                planner.plan.holds_backup.push(i);
                if let Pair::Both(_, j) = pair {
                    if dst.entries[j as usize].tag == Tag::Dir {
                        covered = Some((src.path_at(i), Below::Kept, false));
                    }
                }
            }
            Pair::Left(i) if !protected(src.path_at(i)) => planner.source_only(i),
            // A folder DST has on the way to the backup folder holds it: left in place.
            Pair::Right(j) if !protected(dst.path_at(j)) && !holds_protected(dst.path_at(j)) => {
                planner.destination_only(j)
            }
            Pair::Both(i, j) if !protected(src.path_at(i)) => {
                covered = planner
                    .both(i, j)
                    .map(|below| (src.path_at(i), below, false));
            }
            _ => {}
        }
    }
    if let Some((_, Below::Emptied(t), true)) = covered {
        emptied.push(t);
    }

    // A backup folder inside DST may be made by this run, which changes its parent's time:
    // when anything may be displaced into it, the parent's time is set again at the end.
    let plan = &planner.plan;
    let displaces = !plan.deletes.is_empty()
        || !plan.replacements.is_empty()
        || plan.transfers.iter().any(|t| t.reason != Reason::New)
        || plan.links.iter().any(|l| l.reason != Reason::New);
    // That is the nearest folder on its way that SRC has (the ones between may be made too).
    if displaces && config.backup_dir.is_some() {
        for protected in &config.protected {
            let path_of = |d: &DirPair| d.src.map_or(Path::new(""), |i| src.path_at(i));
            let nearest = (protected.ancestors().skip(1))
                .find_map(|parent| planner.dirs.iter().position(|d| path_of(d) == parent));
            if let Some(at) = nearest {
                planner.dirs[at].written = true;
            }
        }
    }

    let Planner { mut plan, dirs, .. } = planner;
    plan.deletes.reverse();
    // Removing a directory that held entries is a deletion too (its entries are counted among
    // the deletions already).
    let planned = (plan.deletes.len() + emptied.len()) as u64;
    plan.withheld = if !src.errors.is_empty() {
        Some(Withheld::SourceErrors(src.errors.len()))
    } else if !dst.errors.is_empty() {
        Some(Withheld::DestinationErrors(dst.errors.len()))
    } else if !plan.holds_backup.is_empty() {
        // Known failures now: a dry run says what the real run will withhold.
        Some(Withheld::Failed(plan.holds_backup.len() as u64))
    } else {
        match config.max_delete {
            Some(max) if planned > max => Some(Withheld::MaxDelete { planned, max }),
            _ => None,
        }
    };
    // A directory whose entries are not deleted (deletions withheld, or off) is not replaced:
    // replacing it would destroy them.
    if plan.withheld.is_some() || !config.delete {
        let mut unplaced = Vec::new();
        for &index in emptied.iter().rev() {
            let t = plan.replacements.remove(index);
            unplaced.push(t.src);
            match config.delete {
                true => plan.held_back.push(t.src),
                false => plan.blocked.push(t.src),
            }
        }
        // The other names of a linked file whose first name that was have no copy to be
        // linked to: a new one is written as a file of its own, one DST has is left as it is
        // (a later run links them).
        let before = plan.transfers.len();
        if !unplaced.is_empty() {
            plan.links.retain(|link| {
                let keep = !unplaced.contains(&link.leader);
                if !keep && link.reason != Reason::Link {
                    plan.transfers.push(Transfer {
                        src: link.src,
                        reason: link.reason,
                    });
                }
                keep
            });
        }
        if plan.transfers.len() > before {
            plan.transfers.sort_by_key(|t| t.src);
        }
        plan.held_back.reverse();
        plan.blocked.reverse();
    }

    for pair in dirs.into_iter().rev() {
        let owner = plan.chown(pair.meta.owner, pair.dst.map(|d| d.owner));
        let (differed, unlock) = match pair.dst {
            None => (false, false),
            // A directory written in gets a new mtime anyway; only an otherwise untouched one
            // whose metadata drifted is worth an itemized line.
            Some(dst) => (
                !pair.written
                    && ((plan.modes && dst.mode != pair.meta.mode)
                        || !owner.is_empty()
                        || pair.attrs.is_some()
                        || !compare::same_time(dst.mtime, pair.meta.mtime, &config.compare)),
                pair.written && dst.mode & 0o700 != 0o700,
            ),
        };
        let xattrs = pair.attrs.is_some() || (pair.dst.is_none() && config.xattrs.any());
        if pair.dst.is_none() || differed || pair.written || xattrs {
            plan.dir_meta.push(DirMeta {
                src: pair.src,
                unlock,
                differed,
                owner,
                xattrs,
            });
        }
    }
    plan
}

/// What becomes of the entries below a destination directory at a path where SRC has
/// something else.
#[derive(Clone, Copy, Debug)]
enum Below {
    /// A file or link replaces the directory (`replacements[index]`): what is below it is
    /// deleted first, like anything SRC does not have.
    Emptied(usize),
    /// The source entry is not mirrored (skipped): the directory and all below it stay.
    Kept,
}

/// A source directory (or the root), with what the destination has at its path.
struct DirPair {
    src: Option<u32>,
    meta: RootMeta,
    dst: Option<RootMeta>,
    /// Something is created, replaced or removed directly in it.
    written: bool,
    /// Its extended attributes or ACLs differ.
    attrs: Option<Differs>,
}

/// The state of one planning pass.
struct Planner<'a, 't> {
    config: &'a Config,
    changed: &'a HashSet<u32>,
    attrs: &'a HashMap<u32, Differs>,
    plan: Plan<'t>,
    /// Every source directory, in path order.
    dirs: Vec<DirPair>,
    /// The chain of source directories (path, index in `dirs`) above the current path.
    open: Vec<(&'t Path, usize)>,
    /// Hard links: for each group of the source's linked names, its leader (empty without
    /// `config.hard_links`).
    leaders: Vec<Leader>,
    /// For each group of the destination's linked names, whose they are (see [`owners`]).
    owners: Vec<(u32, bool)>,
}

/// Marks of [`owners`]: the names of a destination group mirror no source group, or several.
const ALONE: u32 = u32::MAX;
const MIXED: u32 = u32::MAX - 1;

/// For each group of the destination's linked names: the source group all its names in the
/// tree mirror (with hard links kept), [`ALONE`] for a single name whose source is no linked
/// file, or [`MIXED`] for names of several source files; and whether it has a name that
/// mirrors nothing, which stays beside the mirror as a name outside it would: one the run
/// deletes may be kept by `--backup-dir` or withheld, one it does not delete is kept
/// (`--no-delete`, protected, below a skipped entry).
fn owners(src: &Tree, dst: &Tree, config: &Config) -> Vec<(u32, bool)> {
    const UNSET: u32 = u32::MAX - 2;
    let mut owners = vec![(UNSET, false); dst.links.groups()];
    for pair in merge(src, dst) {
        let (i, j) = match pair {
            Pair::Both(i, j) if !is_protected(config, dst.path_at(j)) => (i, j),
            Pair::Both(_, j) | Pair::Right(j) => {
                if let Some(group) = dst.links.group(j) {
                    owners[group as usize].1 = true;
                }
                continue;
            }
            Pair::Left(_) => continue,
        };
        let Some(group) = dst.links.group(j) else {
            continue;
        };
        let mirrors = Some(i)
            .filter(|&i| config.hard_links && src.entries[i as usize].tag == Tag::File)
            .and_then(|i| src.links.group(i))
            .unwrap_or(ALONE);
        let owner = &mut owners[group as usize].0;
        *owner = match *owner {
            UNSET => mirrors,
            same if same == mirrors && same != ALONE => same,
            _ => MIXED,
        };
    }
    owners
}

/// Whether `path` lies in what the run leaves alone on both sides (the backup folder inside
/// DST).
fn is_protected(config: &Config, path: &Path) -> bool {
    config.protected.iter().any(|p| is_within(path, p))
}

/// Whether `path` is a folder on the way to what the run leaves alone (it holds the backup
/// folder).
fn holds_protected(config: &Config, path: &Path) -> bool {
    config
        .protected
        .iter()
        .any(|p| p != path && is_within(p, path))
}

/// Whether a destination file's inode is shared with names that are not its source's own.
#[derive(Clone, Copy, PartialEq)]
enum Shared {
    /// Only with names of its own source group (or none at all): a change in place is right
    /// for every name.
    No,
    /// With names outside the tree (another folder, a `--link-dest` snapshot, an excluded
    /// name) or kept beside the mirror (see [`owners`]): left as it is, but never changed in
    /// place.
    Outside,
    /// With names in the tree that mirror other source files: the source broke the link.
    Broken,
}

/// The first name in path order of a source file with several names: the others are made
/// links to its copy.
#[derive(Clone, Copy)]
struct Leader {
    src: u32,
    /// The destination entry at its path (`u32::MAX`: none, or not yet met).
    dst: u32,
    /// Its copy is written this run, so each other name is linked to it anew.
    rewritten: bool,
    /// Its destination file is newer and kept (`--update`): no other name is linked to it.
    kept: bool,
}

impl Default for Leader {
    fn default() -> Leader {
        Leader {
            src: u32::MAX,
            dst: u32::MAX,
            rewritten: false,
            kept: false,
        }
    }
}

impl<'t> Planner<'_, 't> {
    fn src(&self, i: u32) -> &'t Entry {
        &self.plan.src.entries[i as usize]
    }

    /// The index in `dirs` of the parent directory of `path`, when SRC has it. Closes the
    /// directories the merge has left behind.
    fn parent_dir(&mut self, path: &Path) -> Option<usize> {
        let parent = path.parent().unwrap_or(Path::new(""));
        while let Some(&(dir, _)) = self.open.last() {
            if is_within(parent, dir) {
                break;
            }
            self.open.pop();
        }
        match self.open.last() {
            Some(&(dir, index)) if dir.as_os_str() == parent.as_os_str() => Some(index),
            _ => None,
        }
    }

    /// Something will be created, replaced or removed at `path`: its directory's mtime moves.
    fn writes_in_parent_of(&mut self, path: &Path) {
        if let Some(index) = self.parent_dir(path) {
            self.dirs[index].written = true;
        }
    }

    fn open_dir(&mut self, i: u32, dst: Option<RootMeta>) {
        let entry = self.src(i);
        let path = self.plan.src_path(i);
        self.parent_dir(path);
        self.dirs.push(DirPair {
            src: Some(i),
            meta: RootMeta {
                mtime: entry.mtime,
                mode: entry.mode,
                owner: self.plan.src.owner(entry),
            },
            dst,
            written: false,
            attrs: self.attrs_differ(i),
        });
        self.open.push((path, self.dirs.len() - 1));
    }

    /// The group source entry `i` leads, if it is the first of several names of one file.
    fn leads(&self, i: u32) -> Option<usize> {
        let group = self.plan.src.links.group(i)? as usize;
        (self.leaders.get(group)?.src == i).then_some(group)
    }

    /// The leader of source entry `i`, if it is a later name of a file with several.
    fn follows(&self, i: u32) -> Option<u32> {
        let group = self.plan.src.links.group(i)? as usize;
        let leader = self.leaders.get(group)?.src;
        (leader != i && leader != u32::MAX).then_some(leader)
    }

    /// The first name of source entry `i`'s group is kept as newer (`--update`).
    fn kept_leader(&self, i: u32) -> bool {
        let group = self.plan.src.links.group(i).map(|g| g as usize);
        group
            .and_then(|g| self.leaders.get(g))
            .is_some_and(|l| l.kept)
    }

    /// Source entry `i`, if it leads a group, is written this run.
    fn rewrites(&mut self, i: u32) {
        if let Some(group) = self.leads(i) {
            self.leaders[group].rewritten = true;
        }
    }

    fn transfer(&mut self, i: u32, reason: Reason) {
        self.writes_in_parent_of(self.plan.src_path(i));
        self.rewrites(i);
        self.plan.transfers.push(Transfer { src: i, reason });
    }

    /// Make source entry `i` a hard link to its leader's copy.
    fn hard_link(&mut self, i: u32, leader: u32, reason: Reason) {
        self.writes_in_parent_of(self.plan.src_path(i));
        self.plan.links.push(HardLink {
            src: i,
            leader,
            reason,
        });
    }

    /// For a later name of a linked source file at destination entry `j` (if any): nothing
    /// when DST already has it as a name of the leader's unchanged copy, else a link.
    fn follower(&mut self, i: u32, leader: u32, j: Option<u32>) {
        let group = self
            .plan
            .src
            .links
            .group(leader)
            .expect("a leader is linked") as usize;
        let Some(j) = j else {
            // Its group's first name kept as newer (`--update`): a copy of its own.
            return match self.leaders[group].kept {
                true => self.transfer(i, Reason::New),
                false => self.hard_link(i, leader, Reason::New),
            };
        };
        let Leader {
            dst,
            rewritten,
            kept,
            ..
        } = self.leaders[group];
        // `--update`: a group whose first name was kept as newer is no link to it (that would
        // give it the kept file's contents, not the source's): each later name is a file of
        // its own, kept in turn when newer; so is a later name that is newer itself.
        let newer = || {
            let (src, dst) = (self.src(i), &self.plan.dst.entries[j as usize]);
            self.config.compare.update
                && dst.tag == Tag::File
                && compare::files(src, dst, &self.config.compare, false) == Verdict::KeepNewer
        };
        if kept || newer() {
            return self.file_pair(i, j);
        }
        let inode = |j: u32| self.plan.dst.links.group(j);
        let linked = match (inode(j), inode(dst)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        if linked && !rewritten {
            self.plan.unchanged.add(self.src(i).size);
        } else {
            self.hard_link(i, leader, Reason::Link);
        }
    }

    /// How the attributes of source entry `i` differ from its destination's, if they do.
    fn attrs_differ(&self, i: u32) -> Option<Differs> {
        match self.attrs.is_empty() {
            true => None,
            false => self.attrs.get(&i).copied(),
        }
    }

    /// How the inode of destination file `j` is shared.
    fn shared(&self, j: u32) -> Shared {
        // Most destinations have no file with several names: no lookup at all then.
        if self.owners.is_empty() {
            return Shared::No;
        }
        let Some(group) = self.plan.dst.links.group(j) else {
            return Shared::No;
        };
        match self.owners[group as usize] {
            (MIXED, _) => Shared::Broken,
            (_, true) => Shared::Outside,
            _ if self.plan.dst.links.outside(group) => Shared::Outside,
            _ => Shared::No,
        }
    }

    fn make_dir(&mut self, i: u32, replaces: Option<Tag>) {
        self.writes_in_parent_of(self.plan.src_path(i));
        self.open_dir(i, None);
        self.plan.dirs.push(MakeDir { src: i, replaces });
    }

    /// Whether source entry `i` is left out: a symlink or a name the destination cannot hold,
    /// or a special file this run cannot make (a device node, unless root; any with
    /// `--no-specials` or on a remote destination). Its warning says which.
    fn skipped(&self, i: u32) -> bool {
        match self.src(i).tag {
            Tag::Symlink if !self.config.symlinks => true,
            Tag::Special(kind) if !self.config.specials || kind.is_device() && !self.devices() => {
                true
            }
            _ => {
                let path = self.plan.src_path(i);
                (!self.config.byte_names && path.to_str().is_none())
                    || (!self.config.limits.any_names && fat_refuses(path))
            }
        }
    }

    /// Device nodes can be made (root, on a local destination).
    fn devices(&self) -> bool {
        self.config.ownership.creator.is_some_and(|c| c.uid == 0)
    }

    fn source_only(&mut self, i: u32) {
        if self.skipped(i) {
            return self.plan.skipped.push(i);
        }
        match self.src(i).tag {
            Tag::Dir => self.make_dir(i, None),
            Tag::File => match self.follows(i) {
                Some(leader) => self.follower(i, leader, None),
                None => self.transfer(i, Reason::New),
            },
            Tag::Symlink | Tag::Special(_) => self.transfer(i, Reason::New),
        }
    }

    fn destination_only(&mut self, j: u32) {
        let path = self.plan.dst_path(j);
        if is_temporary(path, self.plan.dst.entries[j as usize].tag) {
            self.writes_in_parent_of(path);
            self.plan.temps.push(j);
        } else if self.config.delete {
            self.writes_in_parent_of(path);
            self.plan.deletes.push(j);
        }
    }

    /// Decide a path both sides have. When the destination has a directory there that stays
    /// no directory, says what becomes of the entries below it.
    fn both(&mut self, i: u32, j: u32) -> Option<Below> {
        let (src, dst) = (self.src(i), &self.plan.dst.entries[j as usize]);
        if self.skipped(i) {
            self.plan.skipped.push(i);
            return (dst.tag == Tag::Dir).then_some(Below::Kept);
        }
        if self.plan.dst.old_name(j).is_some() {
            self.writes_in_parent_of(self.plan.src_path(i));
            self.plan.respell.push(j);
        }
        match (src.tag, dst.tag) {
            (Tag::Dir, Tag::Dir) => self.open_dir(
                i,
                Some(RootMeta {
                    mtime: dst.mtime,
                    mode: dst.mode,
                    owner: self.plan.dst.owner(dst),
                }),
            ),
            (Tag::Dir, other) => self.make_dir(i, Some(other)),
            (Tag::File, Tag::File) if self.follows(i).is_some() => {
                let leader = self.follows(i).expect("just found");
                self.follower(i, leader, Some(j));
            }
            (Tag::File, Tag::File) => self.file_pair(i, j),
            (Tag::Symlink, Tag::Symlink) => {
                if self.plan.src.target(src) != self.plan.dst.target(dst) {
                    self.transfer(i, Reason::Target);
                } else {
                    self.same_node(i, j, false);
                }
            }
            // The same kind of special file, and for a device the same device number.
            (Tag::Special(a), Tag::Special(b))
                if a == b && (!a.is_device() || src.size == dst.size) =>
            {
                self.same_node(i, j, true);
            }
            (Tag::File | Tag::Symlink | Tag::Special(_), Tag::Dir) => {
                self.writes_in_parent_of(self.plan.src_path(i));
                self.rewrites(i);
                let reason = Reason::Type(Tag::Dir);
                self.plan.replacements.push(Transfer { src: i, reason });
                return Some(Below::Emptied(self.plan.replacements.len() - 1));
            }
            // A later name of a linked file where DST has a symlink or special file: linked
            // in its place (a directory is emptied first, below: the name is copied then, and
            // linked by the next run).
            // A group whose first name is kept as newer (`--update`) is no link to it: the
            // name is written as a file of its own.
            (Tag::File, other) if self.follows(i).is_some() => {
                let leader = self.follows(i).expect("just found");
                match self.kept_leader(i) {
                    true => self.transfer(i, Reason::Type(other)),
                    false => self.hard_link(i, leader, Reason::Type(other)),
                }
            }
            (Tag::File | Tag::Symlink | Tag::Special(_), other) => {
                self.transfer(i, Reason::Type(other))
            }
        }
        None
    }

    /// Decide source file `i` (not a later name of a linked file) against destination file
    /// `j`.
    fn file_pair(&mut self, i: u32, j: u32) {
        let (src, dst) = (self.src(i), &self.plan.dst.entries[j as usize]);
        if let Some(group) = self.leads(i) {
            self.leaders[group].dst = j;
        }
        let changed = self.changed.contains(&i);
        let shared = self.shared(j);
        match compare::files(src, dst, &self.config.compare, changed) {
            // The source broke a hard link that DST still has (a time too coarse to tell, or
            // the same time kept): written again, as a name of its own.
            Verdict::Unchanged if shared == Shared::Broken && self.config.hard_links => {
                self.transfer(i, Reason::Link)
            }
            Verdict::Unchanged => self.unchanged_file(i, j, shared != Shared::No),
            Verdict::KeepNewer => {
                debug!(path = %self.plan.src_path(i).display(), "destination newer: kept");
                if let Some(group) = self.leads(i) {
                    self.leaders[group].kept = true;
                }
                self.plan.kept.push(i)
            }
            Verdict::Write(reason) => self.transfer(i, reason),
        }
    }

    /// A symlink or special file that is the same on both sides: fix its owner, mode (not a
    /// link's) and mtime where they differ.
    fn same_node(&mut self, i: u32, j: u32, with_mode: bool) {
        let (src, dst) = (self.src(i), &self.plan.dst.entries[j as usize]);
        let mode = with_mode && self.plan.modes && self.plan.mode_for(i) != dst.mode;
        let mtime = !compare::same_time(src.mtime, dst.mtime, &self.config.compare);
        self.fix_or_unchanged(i, j, mode, mtime, false);
    }

    /// Same content: fix the mode if it differs, and the time when it was not part of the
    /// comparison (`--checksum`; `--size-only`, as rsync does, where a time is set without
    /// writing the file again: not on a remote destination) and differs.
    /// `shared`: its inode has names that are not its own, which a fix would change too.
    fn unchanged_file(&mut self, i: u32, j: u32, shared: bool) {
        let (src, dst) = (self.src(i), &self.plan.dst.entries[j as usize]);
        let rule = &self.config.compare;
        let mode = self.plan.modes && self.plan.mode_for(i) != dst.mode;
        let untimed = match rule.method {
            Method::Quick => false,
            Method::Checksum => true,
            Method::SizeOnly => self.config.dst_url.is_none(),
        };
        let mtime = untimed && !compare::same_time(src.mtime, dst.mtime, rule);
        self.fix_or_unchanged(i, j, mode, mtime, shared);
    }

    /// An entry whose contents are the same on both sides: a fix of what differs (the owner
    /// too, where the run keeps it), or nothing at all. When its inode is `shared` with names
    /// that are not its own, what differs is written as a new file instead: a fix in place
    /// would reach them.
    fn fix_or_unchanged(&mut self, i: u32, j: u32, mode: bool, mtime: bool, shared: bool) {
        let (src, dst) = (self.src(i), &self.plan.dst.entries[j as usize]);
        let owner = self
            .plan
            .chown(self.plan.src.owner(src), Some(self.plan.dst.owner(dst)));
        let xattrs = self.attrs_differ(i);
        let differs = mode || mtime || !owner.is_empty() || xattrs.is_some();
        if differs && shared {
            self.transfer(i, Reason::Link);
        } else if differs {
            let links = self.plan.dst.links.group(j);
            self.plan.fixes.push(Fix {
                src: i,
                links: links.map_or(1, |group| self.plan.dst.links.count(group)),
                mode,
                mtime,
                owner,
                xattrs,
            });
        } else {
            debug!(path = %self.plan.src_path(i).display(), "unchanged");
            let size = if src.tag == Tag::File { src.size } else { 0 };
            self.plan.unchanged.add(size);
        }
    }
}

#[cfg(test)]
mod tests;
