//! syncease makes a destination folder an exact, one-way mirror of a source folder.
//!
//! A run is a pipeline with one module per stage: [`preflight`] refuses unsafe or invalid roots
//! before anything changes; SRC is opened as an [`endpoint::Origin`] and DST as an
//! [`endpoint::Destination`] — each a local folder or one of the [`remote`] backends; the origin
//! lists SRC (a local folder through [`scan`]) while the destination lists DST, at the same
//! time (leaving out what the [`filter`] excludes); [`checksum`] (through
//! [`endpoint::Destination::refine`]) and [`flatten`] refine the listings when asked; [`plan`]
//! compares the two listings (using the rules in [`compare`]) into plain-data actions; [`exec`]
//! carries them out on a rayon pool through the destination, reading files from the origin (a
//! local folder is written only through [`fsops`]); the [`report`] front ends turn the events
//! into itemized lines, JSON, progress and a summary. [`run`] ties the stages together and
//! returns the [`Status`] that the binary maps to its exit code.

pub mod bwlimit;
pub mod case;
pub mod checksum;
pub mod compare;
pub mod config;
pub mod endpoint;
pub mod entry;
pub mod error;
pub mod exec;
pub mod filter;
pub mod flatten;
pub mod fsops;
pub mod interrupt;
pub mod lock;
pub mod mounts;
pub mod plan;
pub mod preflight;
pub mod remote;
pub mod report;
pub mod scan;
pub mod xattrs;

use std::time::Instant;

use tracing::debug;

use crate::config::Config;
use crate::endpoint::{Destination, Folder, Local, Origin};
use crate::exec::Roots;
use crate::preflight::Refusal;
use crate::report::{Reporter, Status, Summary, Warning};

/// Mirror `config.src` into `config.dst`, telling `reporter` what happens.
pub fn run(config: &Config, reporter: &dyn Reporter) -> Status {
    let started = Instant::now();
    bwlimit::set(config.bwlimit);
    let refuse = |refusal: Refusal| refuse(config, reporter, started, refusal);
    let checked = match preflight::check(config) {
        Ok(checked) => checked,
        Err(refusal) => return refuse(refusal),
    };
    let config = &settled(config, checked);
    let origin = match open_origin(config) {
        Ok(origin) => origin,
        Err(refusal) => return refuse(refusal),
    };
    let dest = match open_destination(config, reporter) {
        Ok(dest) => dest,
        Err(refusal) => return refuse(refusal),
    };
    if let Err(refusal) = apart(config, &*origin, &*dest) {
        return refuse(refusal);
    }
    let config = &Config {
        symlinks: config.symlinks && dest.stores_symlinks(),
        byte_names: config.byte_names && dest.stores_byte_names(),
        ..config.clone()
    };
    fsops::prepare();
    mirror(config, &*origin, &*dest, reporter, started)
}

/// The run's settings once the roots passed preflight: local roots absolute (every path below
/// them is then absolute too, which spares a getcwd per temporary file), what the process is
/// (its ids and groups, whether it may read every attribute), and what a remote side cannot
/// carry: hard links, special files, attributes, owners.
fn settled(config: &Config, checked: preflight::Checked) -> Config {
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut settled = Config {
        protected: checked.protected,
        mounts: checked.mounts,
        ..config.clone()
    };
    if config.src_url.is_none() {
        settled.src = absolute(&config.src);
    }
    if config.dst_url.is_none() {
        settled.dst = absolute(&config.dst);
        settled.xattrs.privileged = rustix::process::geteuid().is_root();
        settled.ownership.creator = Some(entry::Owner {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        });
        settled.ownership.groups = rustix::process::getgroups()
            .map(|groups| groups.iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
    }
    if config.src_url.is_some() || config.dst_url.is_some() {
        settled.specials = false;
        settled.hard_links = false;
        settled.xattrs = config::Xattrs::default();
    }
    if config.src_url.is_some() {
        // A remote host's user ids mean nothing here: copies belong to whoever runs this.
        settled.ownership.lost = true;
    }
    settled
}

/// With a remote side, the two roots (and the backup directory) as the sides themselves find
/// them once open: no spelling of a path (`/~/x` for `/home/me/x`, a symlink on the host, an
/// SSH host that is this machine) lets a run write into its own source. Two local folders
/// were told apart by preflight.
fn apart(config: &Config, origin: &dyn Origin, dest: &dyn Destination) -> Result<(), Refusal> {
    if config.src_url.is_none() && config.dst_url.is_none() {
        return Ok(());
    }
    let Some(src) = origin.place() else {
        return Ok(());
    };
    if let Some(dst) = dest.place() {
        if src == dst {
            return Err(Refusal::Same(config.src.clone()));
        }
        if src.overlaps(&dst) {
            return Err(Refusal::Overlap {
                src: config.src.clone(),
                dst: config.dst.clone(),
            });
        }
    }
    match (dest.backup_place(), &config.backup_dir) {
        (Some(backup), Some(dir)) if backup.overlaps(&src) => Err(Refusal::BackupOverlaps {
            backup: dir.clone(),
            reason: "is inside the source, or holds it",
        }),
        _ => Ok(()),
    }
}

/// Open SRC: a local folder, or a remote one (connected and found reachable).
fn open_origin(config: &Config) -> Result<Box<dyn Origin>, Refusal> {
    let Some(url) = &config.src_url else {
        return match Folder::open(&config.src, config.one_file_system) {
            Ok(folder) => Ok(Box::new(folder)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Refusal::SourceMissing(config.src.clone()))
            }
            Err(e) => Err(Refusal::SourceUnreadable(config.src.clone(), e)),
        };
    };
    remote::open_origin(url, &config.remote_options)
        .map_err(|e| Refusal::SourceUnreadable(config.src.clone(), e))
}

/// Open DST: a remote one (connected, its backup prefix checked), or a local folder, locked
/// against other runs when it exists (one made by the run is locked as it is made), with the
/// earlier snapshots to take unchanged files from.
fn open_destination<'a>(
    config: &'a Config,
    reporter: &dyn Reporter,
) -> Result<Box<dyn Destination + 'a>, Refusal> {
    if let Some(url) = &config.dst_url {
        let backup = config.backup_dir.as_deref();
        return remote::open(url, &config.remote_options, backup)
            .map_err(|e| Refusal::DestinationUnreadable(config.dst.clone(), e));
    }
    let mut local = Local::new(&config.dst, config.backup_dir.as_deref());
    // Preflight found where the backup folder really is: inside DST, its one protected path.
    if config.backup_dir.is_some() {
        local.backup_inside = config.protected.first().map(|p| p.as_path());
    }
    local.mkpath = config.mkpath;
    local.one_fs = config.one_file_system;
    local.present = config.mounts.clone();
    for (dir, reflink) in &config.priors {
        match Folder::open(dir, false) {
            Ok(folder) => local.priors.push(endpoint::Prior {
                folder,
                reflink: *reflink,
            }),
            // The first snapshot has no earlier one: everything is copied.
            Err(e) => reporter.warning(&Warning::NoSnapshot { dir, cause: &e }),
        }
    }
    if !config.dry_run && config.dst.is_dir() {
        let waiting = |holder| {
            reporter.warning(&Warning::WaitingForLock {
                dst: &config.dst,
                holder,
            })
        };
        let lock = lock::lock(&config.dst, config.wait_lock, waiting).map_err(Refusal::Locked)?;
        let _ = local.lock.set(lock);
    }
    Ok(Box::new(local))
}

/// Report a run stopped by a signal before anything was planned: nothing was changed.
fn stopped(config: &Config, reporter: &dyn Reporter, started: Instant, signal: i32) -> Status {
    let summary = Summary {
        interrupted: Some(signal),
        dry_run: config.dry_run,
        elapsed: started.elapsed(),
        ..Summary::default()
    };
    reporter.finish(&summary);
    summary.status()
}

/// Report a refusal: nothing was changed.
fn refuse(config: &Config, reporter: &dyn Reporter, started: Instant, refusal: Refusal) -> Status {
    reporter.refused(&refusal);
    let summary = Summary {
        refused: Some(refusal.to_string()),
        dry_run: config.dry_run,
        elapsed: started.elapsed(),
        ..Summary::default()
    };
    reporter.finish(&summary);
    Status::Refused
}

/// Scan, plan and carry out the plan against `dest`, once the roots passed preflight.
fn mirror(
    config: &Config,
    origin: &dyn Origin,
    dest: &dyn Destination,
    reporter: &dyn Reporter,
    started: Instant,
) -> Status {
    let refuse = |refusal: Refusal| refuse(config, reporter, started, refusal);
    let workers = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
    };
    let pool = match workers(config.jobs) {
        Ok(pool) => pool,
        Err(e) => return refuse(Refusal::Usage(format!("cannot start worker threads: {e}"))),
    };
    pool.install(|| {
        debug!(src = %config.src.display(), dst = %config.dst.display(), "scanning");
        let (mut src, mut dst) = rayon::join(
            || origin.scan(&config.filter),
            // Excluded paths are left alone in DST too, unless they are to be deleted.
            || match config.delete_excluded {
                true => dest.scan(&filter::Filter::default()),
                false => dest.scan(&config.filter),
            },
        );
        if let Some(signal) = interrupt::requested() {
            return stopped(config, reporter, started, signal);
        }
        // One folder listed on both sides (a bind mount of one inside the other): syncing
        // through it would change SRC, or delete from it.
        if let Some((s, d)) = src.shared_dir(&dst) {
            return refuse(Refusal::MountedTwice {
                src: origin.path(&s),
                dst: dest.path(&d),
            });
        }
        for tree in [&mut src, &mut dst] {
            tree.dir_ids = Vec::new();
        }
        // Only names within SRC make a group of hard links to keep (in DST, a name outside it
        // still tells that a copy shares its inode).
        src.forget_lone_links();
        // -x: below a source mount point nothing was listed, so nothing is deleted there.
        if !src.mount_points.is_empty() {
            dst = dst.without_below(&src.mount_points);
        }
        let mut src = if config.flatten {
            let (flat, collisions) = flatten::flatten(src);
            for c in &collisions {
                let (kept, dropped) = (config.src.join(&c.kept), config.src.join(&c.dropped));
                reporter.warning(&Warning::Collision {
                    kept: &kept,
                    dropped: &dropped,
                });
            }
            flat
        } else {
            src
        };
        // An existing destination is probed before the listings are judged: whether it
        // ignores case decides which entries the two sides share. A new one is made (and
        // probed) only once they passed.
        let mut limits = match dst.root {
            Some(_) => {
                let sample = sample(&dst).map(ToOwned::to_owned);
                probe(config, dest, sample.as_deref(), reporter, &mut dst)
            }
            None => None,
        };
        let (mut dst, mut folded) = fold_names(limits.as_ref(), &src, dst, dest, None);
        if let Err(refusal) = preflight::listings(config, &src, &dst) {
            return refuse(refusal);
        }
        // A new root is made now (by any destination that has roots to make), to learn what
        // it can hold before the plan.
        if dst.root.is_none() && !config.dry_run && dest.make_root().is_ok() {
            // A root that cannot be made here fails again, and is reported, in the plan.
            limits = probe(config, dest, None, reporter, &mut dst);
            (dst, folded) = fold_names(limits.as_ref(), &src, dst, dest, folded);
        }
        let mut config = limits
            .as_ref()
            .map_or_else(|| config.clone(), |l| within(config, l));
        let folded = folded.unwrap_or_default();
        config.protected.extend(folded.protected.iter().cloned());
        let config = &config;
        for names in &folded.collisions {
            reporter.error(&collision(config, names));
        }
        // What the source does not know of its entries (a bucket keeps no modes) is taken
        // from the destination's.
        if let Some(keeps) = origin.keeps() {
            endpoint::adopt(&dst, &mut src, &keeps);
        }
        let (content, errors) = dest.refine(origin, &src, &mut dst, &config.compare);
        src.errors.extend(errors);
        let (xattrs, errors) = match config.xattrs.any() {
            true => dest.xattrs_differing(origin, &src, &dst, config.xattrs, &config.compare),
            false => Default::default(),
        };
        src.errors.extend(errors);
        // Told to stop while comparing (`--checksum` reads): nothing is planned on it.
        if let Some(signal) = interrupt::requested() {
            return stopped(config, reporter, started, signal);
        }
        let known = plan::Known { content, xattrs };
        for error in src.errors.iter().chain(&dst.errors) {
            reporter.error(error);
        }
        for (rel, why) in &src.unusable {
            let path = origin.path(rel);
            reporter.warning(&Warning::Unusable { path: &path, why });
        }
        for (rel, why) in &dst.unusable {
            let path = dest.path(rel);
            reporter.warning(&Warning::Unusable { path: &path, why });
        }
        let plan = plan::plan_with(&src, &dst, config, &known);
        let (copied, updated) = plan.totals();
        debug!(
            dirs = plan.dirs.len(),
            transfers = plan.transfers.len(),
            deletes = plan.deletes.len(),
            "planned"
        );
        reporter.planned(copied.files + updated.files, copied.bytes + updated.bytes);
        let scan_errors = (src.errors.len() + dst.errors.len()) as u64;
        drop(known);
        let roots = Roots {
            src: origin,
            dst: dest,
        };
        let mut summary = if config.dry_run {
            exec::preview(&plan, roots, reporter)
        } else {
            let execute = || exec::execute(&plan, roots, reporter);
            debug!(listed_by = config.jobs, writers = config.writers, "writing");
            // Writers wait on the disks more than listing does: they get a pool of their own
            // (the listing's, should its threads not start).
            let own = (config.writers != config.jobs).then(|| workers(config.writers));
            let summary = match own {
                Some(Ok(writers)) => writers.install(execute),
                Some(Err(e)) => {
                    debug!(error = %e, "writing with the listing's workers");
                    execute()
                }
                None => execute(),
            };
            if let Err(e) = dest.finish() {
                reporter.warning(&Warning::Manifest(&e));
            }
            summary
        };
        summary.errors += scan_errors + folded.collisions.len() as u64;
        summary.skipped = plan.skipped.len() as u64;
        summary.destination = limits;
        summary.interrupted = interrupt::requested();
        summary.elapsed = started.elapsed();
        reporter.finish(&summary);
        summary.status()
    })
}

/// On a destination the probe found to ignore case, pair its names with the source's as it
/// does (see [`case::fold`]); elsewhere the listing and what was found stay as they are.
fn fold_names(
    limits: Option<&config::Limits>,
    src: &entry::Tree,
    dst: entry::Tree,
    dest: &dyn Destination,
    folded: Option<case::Folded>,
) -> (entry::Tree, Option<case::Folded>) {
    match limits {
        Some(l) if !l.case_sensitive => {
            let (listing, names) = case::fold(src, dst, &|rel| dest.exists(rel));
            (listing, Some(names))
        }
        _ => (dst, folded),
    }
}

/// A name in the destination's root whose spelling changes with case, to look up as spelled
/// otherwise (found as the same entry, the destination ignores case): one the listing holds
/// under no other spelling. A root that holds `A` beside `a` is case-sensitive, and needs no
/// probe to say so: none is returned then.
fn sample(dst: &entry::Tree) -> Option<&std::ffi::OsStr> {
    let root: Vec<&str> = (0..dst.entries.len() as u32)
        .map(|j| dst.path_at(j))
        .filter(|p| p.parent() == Some(std::path::Path::new("")))
        .filter_map(|p| p.to_str())
        .collect();
    let fold = |s: &str| s.to_uppercase();
    let mut folds = std::collections::HashMap::new();
    for name in &root {
        *folds.entry(fold(name)).or_insert(0) += 1;
    }
    if folds.values().any(|&n| n > 1) {
        return None;
    }
    root.into_iter()
        .find(|name| name.to_uppercase() != *name || name.to_lowercase() != *name)
        .map(std::ffi::OsStr::new)
}

/// The error for source names that are one name on a destination that ignores case.
fn collision(config: &Config, names: &[std::path::PathBuf]) -> error::Error {
    let quoted: Vec<String> = names
        .iter()
        .map(|n| format!("'{}'", plan::Escaped(n)))
        .collect();
    let cause = std::io::Error::other(format!(
        "{} are one name on the destination, which ignores case: none of them is mirrored, \
         and what the destination has under that name is kept",
        quoted.join(" and ")
    ));
    error::Error::new(error::Op::Mirror, config.src.join(&names[0]), cause)
}

/// Probe what the destination (whose root exists) can hold, and say once what of the run's
/// asks it cannot. A probe that failed is an error of the destination's listing, which
/// withholds every deletion: not knowing whether DST ignores case, the run cannot know which
/// of its entries SRC has (a dry run only warns).
fn probe(
    config: &Config,
    dest: &dyn Destination,
    sample: Option<&std::ffi::OsStr>,
    reporter: &dyn Reporter,
    dst: &mut entry::Tree,
) -> Option<config::Limits> {
    let limits = match dest.probe(sample) {
        Ok(limits) => limits?,
        Err(e) => {
            // Deletions are withheld, not knowing how the destination compares names: a
            // dry run says so as the real run would.
            dst.errors
                .push(error::Error::new(error::Op::Probe, &config.dst, e));
            return None;
        }
    };
    debug!(?limits, "destination probed");
    let lost = limits.lost(config);
    if !lost.is_empty() {
        reporter.warning(&Warning::CannotHold {
            dst: &config.dst,
            filesystem: &limits.filesystem,
            lost: &lost,
        });
    }
    if limits.fuse {
        fsops::check_times(limits.time_resolution_ns);
    }
    Some(limits)
}

/// The run's settings, narrowed to what the destination can hold: times compared within its
/// resolution, and nothing planned that it would refuse or drop.
fn within(config: &Config, limits: &config::Limits) -> Config {
    let mut narrowed = config.clone();
    narrowed.symlinks &= limits.symlinks;
    narrowed.hard_links &= limits.hard_links;
    narrowed.specials &= limits.specials;
    narrowed.byte_names &= limits.byte_names;
    narrowed.ownership.lost |= !limits.owners;
    if !limits.xattrs {
        narrowed.xattrs = config::Xattrs::default();
    }
    let window = match limits.time_resolution_ns {
        // Times do not stick: only sizes can be compared.
        0 => u128::MAX,
        step => u128::from(step).saturating_sub(1),
    };
    narrowed.compare.modify_window_ns = narrowed.compare.modify_window_ns.max(window);
    // The FAT family (as the names it refuses tell) keeps times from 1980 to 2107 only.
    if !limits.any_names {
        narrowed.compare.range = Some(config::FAT_TIMES);
        fsops::time_range(config::FAT_TIMES);
    }
    narrowed.limits = limits.clone();
    narrowed
}
