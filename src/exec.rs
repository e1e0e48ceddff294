//! Doing: run a [`Plan`] against the disk, phase by phase.
//!
//! 1. create DST if missing, sweep temporaries a killed run left;
//! 2. open up read-only destination directories that will be written in, then create
//!    directories serially, parent before child;
//! 3. write files and symlinks in parallel on the rayon pool, then fix metadata-only changes;
//! 4. delete — deepest first, and only when the plan allows it and no write failed;
//! 5. set directory modes and mtimes, deepest first, now that nothing below them changes.
//!
//! Workers never print: they report through the [`Reporter`] and return counts that are merged.
//! One failed entry never stops the others.

use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tracing::debug;

use crate::compare::Reason;
use crate::entry::Tag;
use crate::error::{Error, Op};
use crate::fsops::{self, Copied, CopyError, Displaced};
use crate::plan::{Delete, Item, Payload, Plan, Transfer, Withheld};
use crate::report::{Reporter, Summary, Warning};

/// The two roots (and the backup directory), to turn relative paths into real ones.
#[derive(Debug, Clone, Copy)]
pub struct Roots<'a> {
    pub src: &'a Path,
    pub dst: &'a Path,
    /// `--backup-dir`: where overwritten and deleted entries go instead of being destroyed.
    pub backup: Option<&'a Path>,
}

impl<'a> Roots<'a> {
    fn displaced(&self, rel: &'a Path) -> Displaced<'a> {
        match self.backup {
            Some(dir) => Displaced::Backup { dir, rel },
            None => Displaced::Destroy,
        }
    }

    fn src(&self, rel: &Path) -> PathBuf {
        self.src.join(rel)
    }
    fn dst(&self, rel: &Path) -> PathBuf {
        self.dst.join(rel)
    }
}

/// Report what the plan would do without touching anything (a dry run).
pub fn preview(plan: &Plan, roots: Roots<'_>, reporter: &dyn Reporter) -> Summary {
    announce(plan, roots, reporter);
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
        fixed: (plan.fixes.len() + plan.dir_meta.iter().filter(|d| d.differed).count()) as u64,
        kept: plan.kept.len() as u64,
        withheld: withheld_if_relevant(plan, plan.withheld.clone()),
        dry_run: true,
        ..Summary::default()
    }
}

/// Warnings that follow from the plan alone.
fn announce(plan: &Plan, roots: Roots<'_>, reporter: &dyn Reporter) {
    for path in &plan.skipped {
        reporter.warning(&Warning::Special(&roots.src(path)));
    }
    for path in &plan.held_back {
        reporter.warning(&Warning::HeldBack(&roots.dst(path)));
    }
}

fn withheld_if_relevant(plan: &Plan, withheld: Option<Withheld>) -> Option<Withheld> {
    withheld.filter(|_| !plan.deletes.is_empty() || !plan.held_back.is_empty())
}

/// Carry out the plan.
pub fn execute(plan: &Plan, roots: Roots<'_>, reporter: &dyn Reporter) -> Summary {
    announce(plan, roots, reporter);
    let mut summary = Summary {
        unchanged: plan.unchanged,
        kept: plan.kept.len() as u64,
        ..Summary::default()
    };
    let fail = |summary: &mut Summary, error: Error| {
        reporter.error(&error);
        summary.errors += 1;
    };

    if plan.make_root {
        if let Err(e) = std::fs::create_dir(roots.dst) {
            fail(&mut summary, Error::new(Op::MakeDir, roots.dst, e));
            return summary;
        }
    }
    for temp in &plan.temps {
        match fsops::remove_entry(&roots.dst(temp), Tag::File, Displaced::Destroy) {
            Ok(()) => reporter.item(&Item::stale(temp)),
            Err(e) => fail(&mut summary, e),
        }
    }

    for dir in plan.dir_meta.iter().filter(|d| d.unlock) {
        if let Err(e) = fsops::set_mode(&roots.dst(&dir.path), dir.mode | 0o700) {
            fail(&mut summary, e);
        }
    }
    for dir in &plan.dirs {
        match fsops::make_dir(
            &roots.dst(&dir.path),
            dir.replaces,
            roots.displaced(&dir.path),
        ) {
            Ok(()) => reporter.item(&Item::make_dir(dir)),
            Err(e) => fail(&mut summary, e),
        }
    }

    let written = plan
        .transfers
        .par_iter()
        .map(|t| transfer(t, roots, reporter))
        .reduce(Summary::default, Summary::merge);
    summary = summary.merge(written);

    for fix in &plan.fixes {
        let path = roots.dst(&fix.path);
        let result = fix
            .mode
            .map_or(Ok(()), |mode| fsops::set_mode(&path, mode))
            .and_then(|()| match (fix.mtime, fix.tag) {
                (Some(mtime), Tag::Symlink) => fsops::set_symlink_mtime(&path, mtime),
                (Some(mtime), _) => fsops::set_mtime(&path, mtime),
                (None, _) => Ok(()),
            });
        match result {
            Ok(()) => {
                summary.fixed += 1;
                reporter.item(&Item::fix(fix));
            }
            Err(e) => fail(&mut summary, e),
        }
    }

    let withheld = plan
        .withheld
        .clone()
        .or_else(|| (summary.errors > 0).then_some(Withheld::WriteErrors(summary.errors)));
    match withheld_if_relevant(plan, withheld) {
        Some(reason) => {
            let count = plan.deletes.len() as u64;
            reporter.warning(&Warning::DeletionsWithheld {
                reason: &reason,
                count,
            });
            summary.withheld = Some(reason);
        }
        None => summary = summary.merge(delete_all(&plan.deletes, roots, reporter)),
    }

    for dir in &plan.dir_meta {
        let path = roots.dst(&dir.path);
        let result =
            fsops::set_mode(&path, dir.mode).and_then(|()| fsops::set_mtime(&path, dir.mtime));
        match result {
            Ok(()) if dir.differed => {
                summary.fixed += 1;
                reporter.item(&Item::dir_meta(dir));
            }
            Ok(()) => {}
            // A directory that could not be created has been reported already.
            Err(e) if e.is_not_found() && plan.dirs.iter().any(|d| d.path == dir.path) => {}
            Err(e) => fail(&mut summary, e),
        }
    }
    summary
}

/// Write one file or symlink; a source that changes while being read is tried once more.
fn transfer<'a>(t: &'a Transfer, roots: Roots<'a>, reporter: &dyn Reporter) -> Summary {
    let mut summary = Summary::default();
    let dst = roots.dst(&t.path);
    let replaces = match t.reason {
        Reason::Type(tag) => Some(tag),
        _ => None,
    };
    let result = match &t.payload {
        Payload::File { .. } => {
            let src = roots.src(t.from.as_deref().unwrap_or(&t.path));
            let mut tries = 0;
            loop {
                tries += 1;
                match fsops::copy_file(&src, &dst, replaces, roots.displaced(&t.path)) {
                    Err(CopyError::Changed(_)) if tries < 2 => {
                        debug!(path = %src.display(), "changed while copied; trying again");
                    }
                    Err(CopyError::Changed(path)) => {
                        let cause = io::Error::other("it changed while being copied (tried twice)");
                        break Err(Error::copy(&path, &dst, cause));
                    }
                    Err(CopyError::Io(e)) => break Err(e),
                    Ok(Copied::Vanished) => {
                        reporter.warning(&Warning::Vanished(&src));
                        summary.vanished += 1;
                        return summary;
                    }
                    Ok(Copied::Done(bytes)) => break Ok(bytes),
                }
            }
        }
        Payload::Symlink { target, mtime } => {
            fsops::make_symlink(target, &dst, *mtime, replaces, roots.displaced(&t.path))
                .map(|()| 0)
        }
    };
    match result {
        Ok(bytes) => {
            if t.is_update() {
                summary.updated.add(bytes);
            } else {
                summary.copied.add(bytes);
            }
            reporter.item(&Item::transfer(t));
        }
        Err(e) => {
            reporter.error(&e);
            summary.errors += 1;
        }
    }
    summary
}

/// Remove entries, given deepest first: non-directories in parallel, then directories in order.
fn delete_all<'a>(deletes: &'a [Delete], roots: Roots<'a>, reporter: &dyn Reporter) -> Summary {
    let remove = |d: &'a Delete| {
        let mut summary = Summary::default();
        match fsops::remove_entry(&roots.dst(&d.path), d.tag, roots.displaced(&d.path)) {
            Ok(()) => {
                summary.deleted += 1;
                reporter.item(&Item::delete(d));
            }
            Err(e) if d.tag == Tag::Dir && is_not_empty(&e) => {
                reporter.warning(&Warning::NotEmpty(&roots.dst(&d.path)));
            }
            Err(e) => {
                reporter.error(&e);
                summary.errors += 1;
            }
        }
        summary
    };
    let files = deletes
        .par_iter()
        .filter(|d| d.tag != Tag::Dir)
        .map(remove)
        .reduce(Summary::default, Summary::merge);
    deletes
        .iter()
        .filter(|d| d.tag == Tag::Dir)
        .map(remove)
        .fold(files, Summary::merge)
}

fn is_not_empty(e: &Error) -> bool {
    e.op == Op::Remove && e.source.kind() == io::ErrorKind::DirectoryNotEmpty
}
