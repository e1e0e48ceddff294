//! Doing: run a [`Plan`] against the disk, phase by phase.
//!
//! 1. create DST if missing, sweep temporaries a killed run left;
//! 2. open up read-only destination directories that will be written in, then create
//!    directories serially, parent before child;
//! 3. write files and symlinks on every worker of the rayon pool (big files first, largest
//!    first), then fix metadata-only changes;
//! 4. delete — deepest first, and only when the plan allows it and no write failed;
//! 5. put files and links where directories were, now emptied by the deletions (a directory
//!    that still holds something, such as excluded entries, stays and the file fails alone);
//!    then make the later names of hard-linked files, links to their first name's copy;
//! 6. set directory modes and mtimes, deepest first, now that nothing below them changes.
//!
//! Workers never print: they report through the [`Reporter`] and return counts that are merged.
//! Itemized lines come out in the plan's order even from parallel phases (see `InOrder`), so
//! they never depend on which worker finished first. One failed entry never stops the others.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use tracing::debug;

use crate::compare::Reason;
use crate::endpoint::{Copied, CopyError, Destination, Expected, Held, Origin, Source};
use crate::entry::Tag;
use crate::error::{Error, Op};
use crate::fsops::Node;
use crate::interrupt;
use crate::plan::{DirMeta, Item, Payload, Plan, Transfer, Withheld};
use crate::report::{Reporter, Summary, Warning};

/// The source root and the destination a plan is carried out against.
#[derive(Clone, Copy)]
pub struct Roots<'a> {
    pub src: &'a dyn Origin,
    pub dst: &'a dyn Destination,
}

impl std::fmt::Debug for Roots<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roots")
            .field("src", &self.src.path(Path::new("")))
            .field("dst", &self.dst.path(Path::new("")))
            .finish()
    }
}

impl Roots<'_> {
    fn src(&self, rel: &Path) -> PathBuf {
        self.src.path(rel)
    }

    fn source<'r>(&'r self, rel: &'r Path) -> Source<'r> {
        Source {
            origin: self.src,
            rel,
        }
    }
    fn dst(&self, rel: &Path) -> PathBuf {
        self.dst.path(rel)
    }
}

/// Report what the plan would do without touching anything (a dry run).
pub fn preview(plan: &Plan<'_>, roots: Roots<'_>, reporter: &dyn Reporter) -> Summary {
    announce(plan, roots, reporter);
    let errors = report_blocked(plan, roots, reporter);
    // A dry run says why the real one would delete nothing, as the real one would.
    let withheld = withhold(plan, plan.withheld.clone(), reporter);
    for item in plan.items() {
        reporter.item(&item);
    }
    let (copied, updated) = plan.totals();
    Summary {
        copied,
        updated,
        deleted: if plan.withheld.is_none() {
            plan.deletes.len() as u64
        } else {
            0
        },
        unchanged: plan.unchanged,
        fixed: (plan.fixes.len()
            + plan.respell.len()
            + plan.dir_meta.iter().filter(|d| d.differed).count()) as u64,
        kept: plan.kept.len() as u64,
        withheld,
        errors,
        dry_run: true,
        ..Summary::default()
    }
}

/// Warnings that follow from the plan alone.
fn announce(plan: &Plan<'_>, roots: Roots<'_>, reporter: &dyn Reporter) {
    // Skipped links and special files are said once each, with how many.
    let (mut symlinks, mut specials) = ((0, None), (0, None));
    for &i in &plan.skipped {
        let path = roots.src(plan.src.origin(i));
        let utf8 = plan.src_path(i).to_str().is_some() && plan.names_fit(i);
        let tally = match plan.src.entries[i as usize].tag {
            Tag::Special(_) => &mut specials,
            _ if !utf8 => {
                reporter.warning(&Warning::Name(&path));
                continue;
            }
            _ => &mut symlinks,
        };
        tally.0 += 1;
        tally.1.get_or_insert(path);
    }
    if let (count, Some(first)) = symlinks {
        reporter.warning(&Warning::Symlinks {
            count,
            first: &first,
        });
    }
    if let (count, Some(first)) = specials {
        reporter.warning(&Warning::Specials {
            count,
            first: &first,
        });
    }
    for &i in &plan.held_back {
        reporter.warning(&Warning::HeldBack(&roots.dst(plan.src_path(i))));
    }
    let written = plan
        .transfers
        .iter()
        .chain(&plan.replacements)
        .map(|t| t.src);
    let fixed = plan.fixes.iter().filter(|f| f.mode).map(|f| f.src);
    // Where the destination keeps no modes at all, that was said once for the run.
    for i in written.chain(fixed).filter(|_| plan.modes) {
        if plan.mode_for(i) != plan.src.entries[i as usize].mode {
            reporter.warning(&Warning::SetIdDropped(&roots.src(plan.src.origin(i))));
        }
    }
}

/// Under `--no-delete`, a file or link that would take the place of a directory holding
/// entries is not mirrored, nor is one that would take the place of a directory holding the
/// backup folder: one error each. Returns how many.
fn report_blocked(plan: &Plan<'_>, roots: Roots<'_>, reporter: &dyn Reporter) -> u64 {
    let causes = [
        (
            &plan.blocked,
            Op::Replace,
            "--no-delete keeps the entries below it",
        ),
        (
            &plan.holds_backup,
            Op::Mirror,
            "the backup folder's path goes through it",
        ),
    ];
    for (entries, op, cause) in causes {
        for &i in entries {
            let cause = io::Error::other(cause);
            reporter.error(&Error::new(op, roots.dst(plan.src_path(i)), cause));
        }
    }
    (plan.blocked.len() + plan.holds_backup.len()) as u64
}

/// Withhold the plan's deletions (and directory replacements) for `reason`, when there are
/// any to withhold: said once, and returned for the summary.
fn withhold(
    plan: &Plan<'_>,
    reason: Option<Withheld>,
    reporter: &dyn Reporter,
) -> Option<Withheld> {
    let reason = reason.filter(|_| !plan.deletes.is_empty() || !plan.held_back.is_empty())?;
    reporter.warning(&Warning::DeletionsWithheld {
        reason: &reason,
        count: plan.deletes.len() as u64,
    });
    Some(reason)
}

/// Carry out the plan.
pub fn execute(plan: &Plan<'_>, roots: Roots<'_>, reporter: &dyn Reporter) -> Summary {
    announce(plan, roots, reporter);
    let mut summary = Summary {
        unchanged: plan.unchanged,
        kept: plan.kept.len() as u64,
        errors: report_blocked(plan, roots, reporter),
        ..Summary::default()
    };
    let fail = |summary: &mut Summary, error: Error| {
        reporter.error(&error);
        summary.errors += 1;
    };

    if plan.make_root {
        if let Err(e) = roots.dst.make_root() {
            fail(&mut summary, e);
            return summary;
        }
    }
    for &temp in &plan.temps {
        let path = plan.dst_path(temp);
        match roots.dst.remove_temp(path) {
            Ok(()) => reporter.item(&Item::stale(path)),
            Err(e) => fail(&mut summary, e),
        }
    }

    for dir in plan.dir_meta.iter().filter(|d| d.unlock) {
        let (mode, _) = plan.dir_meta_values(dir);
        if let Err(e) = roots.dst.open_dir(plan.dir_meta_path(dir), mode) {
            fail(&mut summary, e);
        }
    }
    for &j in &plan.respell {
        let old = plan.dst.old_name(j).expect("planned for a respelled entry");
        match roots.dst.respell(plan.dst_path(j), old) {
            Ok(()) => {
                summary.fixed += 1;
                reporter.item(&plan.respell_item(j));
            }
            Err(e) => fail(&mut summary, e),
        }
    }
    // Directories that could not be made: reported once, then left alone at the end.
    let mut not_made = HashSet::new();
    for dir in &plan.dirs {
        let rel = plan.src_path(dir.src);
        match roots.dst.make_dir(rel, dir.replaces) {
            Ok(()) => reporter.item(&plan.make_dir_item(dir)),
            Err(e) => {
                not_made.insert(dir.src);
                fail(&mut summary, e);
            }
        }
    }

    let halt = Halt::default();
    summary = summary.merge(write_all(plan, &plan.transfers, roots, reporter, &halt));
    if crate::fsops::mode_refused() {
        reporter.warning(&Warning::ModeRefused(&roots.dst(Path::new(""))));
    }

    if let Some(cause) = halt.cause.get() {
        summary.not_written = halt.left.load(Ordering::Relaxed);
        reporter.warning(&Warning::Halted {
            cause,
            left: summary.not_written,
        });
    }
    // Told to stop, or no write can succeed: what is written stays, nothing more is started,
    // nothing is deleted.
    let stop = match interrupt::requested() {
        Some(signal) => Some(Withheld::Interrupted(signal)),
        None if halt.cause.get().is_some() => Some(Withheld::Failed(summary.errors)),
        None => None,
    };
    if stop.is_some() {
        summary.withheld = withhold(plan, stop, reporter);
        return summary;
    }

    for fix in &plan.fixes {
        if interrupt::requested().is_some() {
            break;
        }
        let entry = &plan.src.entries[fix.src as usize];
        // A chown clears setuid and setgid bits: the mode is set again after it.
        let mode = plan.mode_for(fix.src);
        let remode = fix.mode || (!fix.owner.is_empty() && mode & 0o6000 != 0);
        let source = roots.source(plan.src.origin(fix.src));
        let rel = plan.src_path(fix.src);
        let result = roots
            .dst
            .fix(
                source,
                rel,
                entry.tag,
                fix.links,
                remode.then_some(mode),
                fix.mtime.then_some(entry.mtime),
                fix.owner,
            )
            // After the owner, which drops `security.capability`.
            .and_then(|()| {
                match fix.xattrs.is_some() || (!fix.owner.is_empty() && plan.xattrs.any()) {
                    true => roots.dst.copy_xattrs(source, rel, plan.xattrs),
                    false => Ok(()),
                }
            });
        match result {
            Ok(()) => {
                summary.fixed += 1;
                reporter.item(&plan.fix_item(fix));
            }
            Err(e) => fail(&mut summary, e),
        }
    }

    let withheld = plan
        .withheld
        .clone()
        .or_else(|| (summary.errors > 0).then_some(Withheld::Failed(summary.errors)));
    summary.withheld = withhold(plan, withheld, reporter);
    if summary.withheld.is_none() {
        summary = summary.merge(delete_all(plan, roots, reporter));
    }
    summary = summary.merge(write_all(plan, &plan.replacements, roots, reporter, &halt));
    summary = summary.merge(link_all(plan, roots, reporter));

    let made = |d: &&DirMeta| d.src.is_none_or(|i| !not_made.contains(&i));
    for dir in plan.dir_meta.iter().filter(made) {
        if interrupt::requested().is_some() {
            break;
        }
        let (mode, mtime) = plan.dir_meta_values(dir);
        let rel = plan.dir_meta_path(dir);
        let source = roots.source(dir.src.map_or(Path::new(""), |i| plan.src.origin(i)));
        let attrs = match dir.xattrs {
            true => roots.dst.copy_xattrs(source, rel, plan.xattrs),
            false => Ok(()),
        };
        // Where the destination keeps no modes, none is set: some drivers refuse the call.
        let mode = plan.modes.then_some(mode);
        match attrs.and_then(|()| roots.dst.set_dir_meta(rel, mode, mtime, dir.owner)) {
            Ok(()) if dir.differed => {
                summary.fixed += 1;
                reporter.item(&plan.dir_meta_item(dir));
            }
            Ok(()) => {}
            Err(e) => fail(&mut summary, e),
        }
    }
    if let Some(what) = crate::fsops::xattr_refused() {
        reporter.warning(&Warning::XattrsRefused {
            dst: &roots.dst(Path::new("")),
            first: &what,
        });
    }
    summary
}

/// Files at least this large are scheduled one by one, largest first.
const BIG: u64 = 1 << 20;
/// Smaller files are claimed in runs of up to this many, in path order, each ending where its
/// directory's files do.
const RUN: usize = 256;

/// The longest run to claim when `left` files are still unclaimed: shorter as the queue
/// empties, so that every worker still has several to take (a remote destination's worker may
/// spend milliseconds on each file: a long run claimed last would leave the others idle).
fn longest_run(left: usize, workers: usize) -> usize {
    (left / (workers * 4).max(1)).clamp(1, RUN)
}

/// Write every file and link on all workers from a shared queue. Big files go first, largest
/// first, one at a time (longest-processing-time-first: one big file found late cannot leave
/// the other workers idle at the end); the many small ones follow in path order, a directory
/// at a time, so a worker writes in a directory alone (two creating in one wait on its lock)
/// and keeps its handle on it.
fn write_all(
    plan: &Plan<'_>,
    list: &[Transfer],
    roots: Roots<'_>,
    reporter: &dyn Reporter,
    halt: &Halt,
) -> Summary {
    let size = |&i: &usize| plan.src.entries[list[i].src as usize].size;
    let (mut big, small): (Vec<usize>, Vec<usize>) = (0..list.len()).partition(|i| size(i) >= BIG);
    big.sort_by_key(|i| std::cmp::Reverse(size(i)));
    let item = |i: usize| plan.transfer_item(&list[i]);
    let in_order = InOrder::new(list.len(), reporter, &item);
    let (next_big, next_small) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let workers = rayon::current_num_threads().min(list.len());
    let longest = |left| longest_run(left, workers);
    let same_dir = |a: usize, b: usize| {
        let dir = |k: usize| parent_bytes(plan.src_path(list[small[k]].src));
        dir(a) == dir(b)
    };
    let worker = || {
        let mut summary = Summary::default();
        while let Some(&i) = big.get(next_big.fetch_add(1, Ordering::Relaxed)) {
            summary = summary.merge(transfer(plan, list, i, roots, reporter, &in_order, halt));
        }
        while let Some(run) = claim_run(&next_small, small.len(), longest, same_dir) {
            for &i in &small[run] {
                summary = summary.merge(transfer(plan, list, i, roots, reporter, &in_order, halt));
            }
        }
        summary
    };
    (0..workers)
        .into_par_iter()
        .with_max_len(1)
        .map(|_| worker())
        .reduce(Summary::default, Summary::merge)
}

/// The directory part of a path below a root, as bytes (empty for the root itself).
fn parent_bytes(path: &Path) -> &[u8] {
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    &bytes[..bytes.iter().rposition(|&b| b == b'/').unwrap_or(0)]
}

/// Claim the next run of the `len` queued items from `next`: at most `longest(unclaimed)`,
/// all in the directory of the first (`same_dir` tells). `None` once all are claimed.
fn claim_run(
    next: &AtomicUsize,
    len: usize,
    longest: impl Fn(usize) -> usize,
    same_dir: impl Fn(usize, usize) -> bool,
) -> Option<std::ops::Range<usize>> {
    let mut start = next.load(Ordering::Relaxed);
    loop {
        if start >= len {
            return None;
        }
        let limit = start + longest(len - start).clamp(1, len - start);
        let end = (start + 1..limit)
            .find(|&k| !same_dir(start, k))
            .unwrap_or(limit);
        match next.compare_exchange_weak(start, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some(start..end),
            Err(now) => start = now,
        }
    }
}

/// Write `list[i]` (a file or symlink); a source that changes while being read is tried once
/// more.
fn transfer(
    plan: &Plan<'_>,
    list: &[Transfer],
    i: usize,
    roots: Roots<'_>,
    reporter: &dyn Reporter,
    in_order: &InOrder<'_>,
    halt: &Halt,
) -> Summary {
    let t = &list[i];
    let mut summary = Summary::default();
    if interrupt::requested().is_some() {
        in_order.done(i, false);
        return summary;
    }
    if halt.cause.get().is_some() {
        halt.left.fetch_add(1, Ordering::Relaxed);
        in_order.done(i, false);
        return summary;
    }
    let rel = plan.src_path(t.src);
    let held = match t.reason {
        Reason::New => Held::Nothing,
        Reason::Type(tag) => Held::Other(tag),
        _ => Held::Same,
    };
    let result = match plan.payload(t) {
        Payload::File { .. } => {
            let source = roots.source(plan.src.origin(t.src));
            let entry = &plan.src.entries[t.src as usize];
            let mut expected = Expected {
                size: entry.size,
                mtime: entry.mtime,
                mode: plan.mode_for(t.src),
                owner: plan.chown_new(t.src),
                fresh: false,
                xattrs: plan.xattrs,
                sparse: plan.sparse,
                modes: plan.modes,
                own: t.reason == Reason::Link,
                contents: plan.contents,
            };
            let (mut tries, mut cuts) = (0, 0);
            loop {
                tries += 1;
                let written = roots.dst.write_file(source, rel, expected, held);
                expected.fresh = true;
                match written {
                    Err(CopyError::Changed) if tries < 2 => {
                        debug!(path = %source.path().display(), "changed while copied; trying again");
                    }
                    Err(CopyError::Changed) => {
                        let dst = roots.dst(rel);
                        let cause = io::Error::other("it changed while being copied (tried twice)");
                        break Err(Error::copy(&source.path(), &dst, cause));
                    }
                    // Not a change of the file: its own count, as many as a lost connection
                    // is connected again for.
                    Err(CopyError::Interrupted) if cuts < crate::endpoint::READS_CUT => {
                        tries -= 1;
                        cuts += 1;
                        debug!(path = %source.path().display(), "read cut; reading again");
                    }
                    Err(CopyError::Interrupted) => {
                        let dst = roots.dst(rel);
                        let cause = io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            format!(
                                "the connection to its source was lost while it was read, \
                                 {} times",
                                crate::endpoint::READS_CUT + 1
                            ),
                        );
                        break Err(Error::copy(&source.path(), &dst, cause));
                    }
                    Err(CopyError::Io(e)) => break Err(e),
                    // Told to stop: the file is not placed, as one not started.
                    Err(CopyError::Stopped) => {
                        in_order.done(i, false);
                        return summary;
                    }
                    Ok(Copied::Vanished) => {
                        reporter.warning(&Warning::Vanished(&source.path()));
                        summary.vanished += 1;
                        in_order.done(i, false);
                        return summary;
                    }
                    Ok(Copied::Done(bytes)) => break Ok(bytes),
                }
            }
        }
        Payload::Special { kind, rdev } => {
            let entry = &plan.src.entries[t.src as usize];
            let node = Node {
                kind,
                rdev,
                mode: plan.mode_for(t.src),
                mtime: entry.mtime,
                owner: plan.chown_new(t.src),
            };
            roots.dst.make_special(rel, node, held.other()).map(|()| 0)
        }
        Payload::Symlink { target, mtime } => roots
            .dst
            .make_symlink(rel, target, mtime, held.other(), plan.chown_new(t.src))
            .map(|()| 0),
    };
    // A file got its attributes with its contents; a link or special file gets them once in
    // place (a run killed in between leaves them to the next run, which compares them).
    let result = match plan.payload(t) {
        Payload::Symlink { .. } | Payload::Special { .. } if plan.xattrs.any() => {
            result.and_then(|bytes| {
                let source = roots.source(plan.src.origin(t.src));
                roots
                    .dst
                    .copy_xattrs(source, rel, plan.xattrs)
                    .map(|()| bytes)
            })
        }
        _ => result,
    };
    match result {
        Ok(bytes) => {
            if t.is_update() {
                summary.updated.add(bytes);
            } else {
                summary.copied.add(bytes);
            }
            reporter.wrote(bytes);
            in_order.done(i, true);
        }
        Err(e) => {
            halt.check(&e, roots.dst);
            reporter.error(&e);
            summary.errors += 1;
            in_order.done(i, false);
        }
    }
    summary
}

/// Set once a write fails in a way every further write would (DST full, over quota, or
/// read-only): no new write is started, so one cause is one error, not one per file.
#[derive(Default)]
struct Halt {
    cause: std::sync::OnceLock<String>,
    /// Writes not started since.
    left: std::sync::atomic::AtomicU64,
}

impl Halt {
    fn check(&self, e: &Error, dst: &dyn Destination) {
        use rustix::io::Errno;
        let hopeless = [Errno::NOSPC, Errno::DQUOT, Errno::ROFS]
            .iter()
            .any(|errno| e.source.raw_os_error() == Some(errno.raw_os_error()));
        if hopeless {
            let _ = self.cause.set(e.source.to_string());
        } else if dst.vanished() {
            // Unplugged, unmounted or removed: nothing more can be written to it.
            let _ = self.cause.set(format!("the destination is gone ({e})"));
        }
    }
}

/// Make the later names of linked files, now that every first name is in place.
fn link_all(plan: &Plan<'_>, roots: Roots<'_>, reporter: &dyn Reporter) -> Summary {
    let mut summary = Summary::default();
    for link in &plan.links {
        if interrupt::requested().is_some() {
            break;
        }
        let held = match link.reason {
            Reason::New => Held::Nothing,
            Reason::Type(other) => Held::Other(other),
            _ => Held::Same,
        };
        let (rel, leader) = (plan.src_path(link.src), plan.src_path(link.leader));
        match roots.dst.make_hard_link(rel, leader, held) {
            Ok(()) => {
                match held {
                    Held::Nothing => summary.copied.add(0),
                    _ => summary.updated.add(0),
                }
                reporter.wrote(0);
                reporter.item(&plan.link_item(link));
            }
            Err(e) => {
                reporter.error(&e);
                summary.errors += 1;
            }
        }
    }
    summary
}

/// Remove entries, given deepest first: non-directories in parallel, then directories in order.
/// Itemized lines come out in the plan's order all the same.
fn delete_all(plan: &Plan<'_>, roots: Roots<'_>, reporter: &dyn Reporter) -> Summary {
    let is_dir = |i: usize| plan.dst.entries[plan.deletes[i] as usize].tag == Tag::Dir;
    let item = |i: usize| plan.delete_item(plan.deletes[i]);
    let in_order = InOrder::new(plan.deletes.len(), reporter, &item);
    let report = |i: usize, result: Result<(), Error>| {
        let mut summary = Summary::default();
        let j = plan.deletes[i];
        let (rel, tag) = (plan.dst_path(j), plan.dst.entries[j as usize].tag);
        match &result {
            Ok(()) => summary.deleted += 1,
            Err(e) if tag == Tag::Dir && is_not_empty(e) => {
                reporter.warning(&Warning::NotEmpty(&roots.dst(rel)));
            }
            Err(e) => {
                reporter.error(e);
                summary.errors += 1;
            }
        }
        in_order.done(i, result.is_ok());
        summary
    };
    let entry = |i: usize| {
        let j = plan.deletes[i];
        (plan.dst_path(j), plan.dst.entries[j as usize].tag)
    };
    // Files in batches the destination takes at once, the batches in parallel.
    let remove_files = |batch: &[usize]| {
        if interrupt::requested().is_some() {
            batch.iter().for_each(|&i| in_order.done(i, false));
            return Summary::default();
        }
        let entries: Vec<(&Path, Tag)> = batch.iter().map(|&i| entry(i)).collect();
        let results = roots.dst.remove_files(&entries);
        batch
            .iter()
            .zip(results)
            .map(|(&i, result)| report(i, result))
            .fold(Summary::default(), Summary::merge)
    };
    let remove_dir = |i: usize| {
        if interrupt::requested().is_some() {
            in_order.done(i, false);
            return Summary::default();
        }
        let (rel, tag) = entry(i);
        report(i, roots.dst.remove(rel, tag))
    };
    // A read-only directory is opened up for its owner before it is emptied (as rsync does);
    // it is removed right after. Parents come before their children here.
    let mut opening_failed = 0;
    for &j in plan.deletes.iter().rev() {
        let entry = &plan.dst.entries[j as usize];
        if entry.tag == Tag::Dir && entry.mode & 0o300 != 0o300 {
            if let Err(e) = roots.dst.open_dir(plan.dst_path(j), entry.mode) {
                reporter.error(&e);
                opening_failed += 1;
            }
        }
    }
    let files: Vec<usize> = (0..plan.deletes.len()).filter(|&i| !is_dir(i)).collect();
    let files = files
        .par_chunks(roots.dst.batch().max(1))
        .map(remove_files)
        .reduce(Summary::default, Summary::merge);
    let mut summary = (0..plan.deletes.len())
        .filter(|&i| is_dir(i))
        .map(remove_dir)
        .fold(files, Summary::merge);
    summary.errors += opening_failed;
    summary
}

/// Reports the items of one parallel phase in plan order, whatever order the workers finish
/// them in: each action marks its slot when done, and every finished slot at the front of the
/// plan is reported at once. So `-v` prints the same lines in the same order on every run, and
/// a dry run prints exactly what the real run will (one byte of state per action).
struct InOrder<'a> {
    reporter: &'a dyn Reporter,
    /// Whether the reporter takes the lines at all: if not, there is nothing to order.
    wanted: bool,
    item: &'a (dyn Fn(usize) -> Item<'a> + Sync),
    slots: Mutex<Slots>,
}

struct Slots {
    /// The first action not reported yet.
    next: usize,
    /// Per action: not done yet (`None`), done with a line to print, or done without one.
    done: Vec<Option<bool>>,
}

impl<'a> InOrder<'a> {
    fn new(
        len: usize,
        reporter: &'a dyn Reporter,
        item: &'a (dyn Fn(usize) -> Item<'a> + Sync),
    ) -> InOrder<'a> {
        let wanted = reporter.takes_items();
        InOrder {
            reporter,
            wanted,
            item,
            slots: Mutex::new(Slots {
                next: 0,
                done: vec![None; if wanted { len } else { 0 }],
            }),
        }
    }

    /// Action `i` is finished; `itemize` when it succeeded and has a line.
    fn done(&self, i: usize, itemize: bool) {
        if !self.wanted {
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.done[i] = Some(itemize);
        while let Some(&Some(itemize)) = slots.done.get(slots.next) {
            if itemize {
                self.reporter.item(&(self.item)(slots.next));
            }
            slots.next += 1;
        }
    }
}

fn is_not_empty(e: &Error) -> bool {
    e.op == Op::Remove && e.source.kind() == io::ErrorKind::DirectoryNotEmpty
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runs claimed from `paths`, in turns, each as its paths.
    fn runs<'p>(paths: &[&'p str], max: usize) -> Vec<Vec<&'p str>> {
        let next = AtomicUsize::new(0);
        let dir = |k: usize| parent_bytes(Path::new(paths[k]));
        let same_dir = |a: usize, b: usize| dir(a) == dir(b);
        std::iter::from_fn(|| claim_run(&next, paths.len(), |_| max, same_dir))
            .map(|run| paths[run].to_vec())
            .collect()
    }

    #[test]
    fn a_run_ends_where_its_directory_does_or_at_its_length() {
        let paths = ["a", "b", "d/x", "d/y", "d/z", "d/e/1", "d/f", "g/1"];
        assert_eq!(
            runs(&paths, 64),
            [
                vec!["a", "b"],
                vec!["d/x", "d/y", "d/z"],
                vec!["d/e/1"],
                vec!["d/f"],
                vec!["g/1"],
            ]
        );
        assert_eq!(
            runs(&paths, 2),
            [
                vec!["a", "b"],
                vec!["d/x", "d/y"],
                vec!["d/z"],
                vec!["d/e/1"],
                vec!["d/f"],
                vec!["g/1"],
            ]
        );
        assert!(runs(&[], 64).is_empty());
    }

    #[test]
    fn runs_shorten_as_the_queue_empties() {
        assert_eq!(longest_run(100_000, 8), RUN);
        assert_eq!(longest_run(1_000, 8), 31);
        assert_eq!(longest_run(100, 8), 3);
        assert_eq!(longest_run(5, 8), 1);
        assert_eq!(longest_run(5, 0), 5);
    }

    #[test]
    fn workers_claiming_at_once_get_every_item_once() {
        let paths: Vec<String> = (0..10_000).map(|i| format!("d{}/f{i}", i / 37)).collect();
        let next = AtomicUsize::new(0);
        let dir = |k: usize| parent_bytes(Path::new(&paths[k]));
        let claimed: Vec<usize> = (0..8)
            .into_par_iter()
            .with_max_len(1)
            .flat_map_iter(|_| {
                let mut mine = Vec::new();
                let same_dir = |a: usize, b: usize| dir(a) == dir(b);
                while let Some(run) = claim_run(&next, paths.len(), |_| 16, same_dir) {
                    assert!(run.len() <= 16 && run.clone().all(|k| dir(k) == dir(run.start)));
                    mine.extend(run);
                }
                mine
            })
            .collect();
        let mut sorted = claimed.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..paths.len()).collect::<Vec<_>>());
    }
}
