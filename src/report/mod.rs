//! What the user is told: events from the engine, rendered by a front end.
//!
//! The engine never prints. It calls a [`Reporter`] with each action done, each warning and
//! each error as they happen (from worker threads, so implementations are `Sync`), and once
//! with the [`Summary`] at the end. The human front end lives in [`human`]; tracing is kept for
//! diagnostics and the log file, never for the user's report.

pub mod human;
pub mod json;
pub mod log;
pub mod progress;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::error::Error;
use crate::plan::{plural, Escaped, Item, Tally, Withheld};
use crate::preflight::Refusal;

/// Something worth saying that is not a failure.
#[derive(Debug)]
pub enum Warning<'a> {
    /// FIFOs, sockets or devices in SRC that this run cannot make, not mirrored: how many,
    /// and the first.
    Specials { count: u64, first: &'a Path },
    /// Source symlinks, skipped because the destination cannot store symlinks: how many, and
    /// the first.
    Symlinks { count: u64, first: &'a Path },
    /// Writes stopped after one failed as every other would (DST full, read-only): the cause,
    /// and how many writes were not started.
    Halted { cause: &'a str, left: u64 },
    /// A `--link-dest` / `--reflink-dest` directory that cannot be opened: files are copied.
    NoSnapshot {
        dir: &'a Path,
        cause: &'a std::io::Error,
    },
    /// The S3 manifest could not be written: the next run reads object times with a HEAD each.
    Manifest(&'a crate::error::Error),
    /// The destination refused some extended attributes (the first: `name: cause`); the
    /// entries were mirrored without them.
    XattrsRefused { dst: &'a Path, first: &'a str },
    /// The destination refused setuid, setgid or sticky bits: copies have the plain bits.
    ModeRefused(&'a Path),
    /// What the destination cannot hold of what the run keeps, said once.
    CannotHold {
        dst: &'a Path,
        filesystem: &'a str,
        lost: &'a [&'static str],
    },
    /// A source entry whose name is not UTF-8, skipped because the destination cannot store it.
    Name(&'a Path),
    /// An entry of a remote listing left out, and why (see `Tree::unusable`).
    Unusable { path: &'a Path, why: &'a str },
    /// A source file disappeared before it could be copied.
    Vanished(&'a Path),
    /// No deletion ran, and why.
    DeletionsWithheld { reason: &'a Withheld, count: u64 },
    /// A destination directory that would be replaced by a file or link, kept because
    /// deletions are withheld.
    HeldBack(&'a Path),
    /// A destination directory that still holds entries after its planned deletion.
    NotEmpty(&'a Path),
    /// Another run holds DST's lock: this one waits (`--wait-lock`).
    WaitingForLock { dst: &'a Path, holder: Option<u32> },
    /// A setuid or setgid bit left off a copy that does not have its source's owner or group.
    SetIdDropped(&'a Path),
    /// `--flatten`: two source files share a name; `dropped` is not mirrored.
    Collision { kept: &'a Path, dropped: &'a Path },
}

/// Why special files are not made.
const SPECIALS: &str = "only root makes device nodes, and no special file is made with \
                        --no-specials, from or to a remote, or where the destination cannot hold \
                        them";

impl fmt::Display for Warning<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::Specials { count: 1, first } => write!(
                f,
                "skipping special file '{}': {SPECIALS}",
                Escaped(first)
            ),
            Warning::Specials { count, first } => write!(
                f,
                "skipping {count} special files (the first: '{}'): {SPECIALS}",
                Escaped(first)
            ),
            Warning::Symlinks { count: 1, first } => write!(
                f,
                "skipping symlink '{}': the destination cannot store symlinks",
                Escaped(first)
            ),
            Warning::Symlinks { count, first } => write!(
                f,
                "skipping {count} symlinks (the first: '{}'): the destination cannot store \
                 symlinks",
                Escaped(first)
            ),
            Warning::Manifest(e) => write!(
                f,
                "{e}: the next run reads the time of each same-size object with a request of its own"
            ),
            Warning::XattrsRefused { dst, first } => write!(
                f,
                "'{}' refused some extended attributes (the first: {first}): the entries were \
                 mirrored without them",
                Escaped(dst)
            ),
            Warning::NoSnapshot { dir, cause } => write!(
                f,
                "cannot use '{}' as an earlier snapshot ({cause}): files are copied",
                Escaped(dir)
            ),
            Warning::Halted { cause, left: 0 } => write!(f, "stopped writing: {cause}"),
            Warning::Halted { cause, left } => write!(
                f,
                "stopped writing: {cause}; {} more entr{} not written",
                thousands(*left),
                if *left == 1 { "y" } else { "ies" }
            ),
            Warning::ModeRefused(dst) => write!(
                f,
                "'{}' refused setuid, setgid or sticky bits: the files that have them were \
                 copied with their other permission bits",
                Escaped(dst)
            ),
            Warning::CannotHold {
                dst,
                filesystem,
                lost,
            } => write!(
                f,
                "'{}' ({filesystem}) cannot hold {}: those are not mirrored there",
                Escaped(dst),
                lost.join(", ")
            ),
            Warning::Unusable { path, why } => {
                write!(f, "leaving out '{}': {why}", Escaped(path))
            }
            Warning::Name(p) => write!(
                f,
                "skipping '{}': the destination cannot store this name (not UTF-8, or with a \
                 character FAT and exFAT refuse)",
                Escaped(p)
            ),
            Warning::Vanished(p) => write!(f, "'{}' vanished before it was copied", Escaped(p)),
            Warning::DeletionsWithheld { reason, count } => write!(
                f,
                "deleting nothing ({count} entr{} kept): {reason}",
                if *count == 1 { "y" } else { "ies" }
            ),
            Warning::HeldBack(p) => write!(
                f,
                "not replacing directory '{}' while deletions are withheld",
                Escaped(p)
            ),
            Warning::NotEmpty(p) => write!(
                f,
                "directory '{}' is not empty, so it was not deleted",
                Escaped(p)
            ),
            Warning::WaitingForLock { dst, holder } => {
                write!(f, "waiting for the run ")?;
                if let Some(pid) = holder {
                    write!(f, "(PID {pid}) ")?;
                }
                write!(f, "that is writing to '{}'", Escaped(dst))
            }
            Warning::SetIdDropped(p) => write!(
                f,
                "leaving the setuid/setgid bits off the copy of '{}': its owner or group is not kept",
                Escaped(p)
            ),
            Warning::Collision { kept, dropped } => write!(
                f,
                "'{}' has the same name as '{}', which is newer (or first) and is kept",
                Escaped(dropped),
                Escaped(kept)
            ),
        }
    }
}

/// The totals of one run (or of a plan, in a dry run).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub copied: Tally,
    pub updated: Tally,
    pub deleted: u64,
    pub unchanged: Tally,
    /// Entries whose metadata alone was fixed.
    pub fixed: u64,
    /// Special files not mirrored.
    pub skipped: u64,
    /// `--update`: destination files kept because they are newer.
    pub kept: u64,
    /// Source files that disappeared during the run.
    pub vanished: u64,
    pub errors: u64,
    pub withheld: Option<Withheld>,
    pub elapsed: Duration,
    pub dry_run: bool,
    /// Why the run was refused before changing anything.
    pub refused: Option<String>,
    /// What the destination was found to hold (`None` where it was not probed).
    pub destination: Option<crate::config::Limits>,
    /// The signal that stopped the run before it was done.
    pub interrupted: Option<i32>,
    /// Files and links not written because writing had stopped (DST full, read-only).
    pub not_written: u64,
}

impl Summary {
    /// Add another part's counts (used to merge the results of parallel workers).
    pub fn merge(mut self, other: Summary) -> Summary {
        self.copied.files += other.copied.files;
        self.copied.bytes += other.copied.bytes;
        self.updated.files += other.updated.files;
        self.updated.bytes += other.updated.bytes;
        self.deleted += other.deleted;
        self.fixed += other.fixed;
        self.vanished += other.vanished;
        self.errors += other.errors;
        self
    }

    /// How the run ended.
    pub fn status(&self) -> Status {
        if let Some(signal) = self.interrupted {
            Status::Interrupted(signal)
        } else if self.refused.is_some() {
            Status::Refused
        } else if self.errors > 0 || self.withheld.is_some() {
            Status::Partial
        } else {
            Status::Synced
        }
    }
}

/// The ways a run ends, mapped to exit codes 0, 1, 2 and 128 + a signal in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Everything synced.
    Synced,
    /// Some entries failed or deletions were withheld; the rest synced.
    Partial,
    /// Refused or invalid usage: nothing was changed.
    Refused,
    /// Stopped by a signal (SIGINT, SIGTERM, SIGHUP) before it was done.
    Interrupted(i32),
}

impl Status {
    pub fn code(self) -> u8 {
        match self {
            Status::Synced => 0,
            Status::Partial => 1,
            Status::Refused => 2,
            // As shells report a process a signal ended: 130, 143, 129.
            Status::Interrupted(signal) => (128 + signal) as u8,
        }
    }
}

/// Receives the engine's events. Called from worker threads.
pub trait Reporter: Sync {
    /// The plan is complete: this many files and bytes will be written.
    fn planned(&self, _files: u64, _bytes: u64) {}
    /// An action was carried out (or, in a dry run, planned). Called in plan order, so a
    /// line may come some time after its action was done (see [`Reporter::wrote`]).
    fn item(&self, item: &Item<'_>);
    /// Whether [`Reporter::item`] does anything with the lines. When it does not, the
    /// executor neither builds them nor keeps them in plan order: per file, that is a lock
    /// both workers would take.
    fn takes_items(&self) -> bool {
        true
    }
    /// A file or link was written, `bytes` long: called by the worker the moment it is done,
    /// for live progress.
    fn wrote(&self, _bytes: u64) {}
    fn warning(&self, warning: &Warning<'_>);
    fn error(&self, error: &Error);
    /// The run was refused before anything changed (`finish` follows).
    fn refused(&self, refusal: &Refusal);
    /// The end of every run, refused ones included.
    fn finish(&self, summary: &Summary);
}

impl<R: Reporter + ?Sized> Reporter for Box<R> {
    fn planned(&self, files: u64, bytes: u64) {
        (**self).planned(files, bytes)
    }
    fn item(&self, item: &Item<'_>) {
        (**self).item(item)
    }
    fn takes_items(&self) -> bool {
        (**self).takes_items()
    }
    fn wrote(&self, bytes: u64) {
        (**self).wrote(bytes)
    }
    fn warning(&self, warning: &Warning<'_>) {
        (**self).warning(warning)
    }
    fn error(&self, error: &Error) {
        (**self).error(error)
    }
    fn refused(&self, refusal: &Refusal) {
        (**self).refused(refusal)
    }
    fn finish(&self, summary: &Summary) {
        (**self).finish(summary)
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units with one decimal: `512 B`, `3.4 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The one-line summary printed at the end of a run.
pub fn summary_line(s: &Summary) -> String {
    let mut parts = Vec::new();
    if s.dry_run {
        let mut line = format!(
            "dry run: would copy {} file{} ({}), update {} ({}), delete {}; {} unchanged",
            thousands(s.copied.files),
            plural(s.copied.files),
            human_bytes(s.copied.bytes),
            thousands(s.updated.files),
            human_bytes(s.updated.bytes),
            thousands(s.deleted),
            thousands(s.unchanged.files),
        );
        for (n, word) in [
            (s.fixed, "to fix"),
            (s.skipped, "skipped"),
            (s.kept, "kept newer"),
        ] {
            if n > 0 {
                line.push_str(&format!(", {} {word}", thousands(n)));
            }
        }
        if s.errors > 0 {
            line.push_str(&format!(
                ", {} error{}",
                thousands(s.errors),
                plural(s.errors)
            ));
        }
        return line;
    }
    if let Some(signal) = s.interrupted {
        parts.push(format!("interrupted by {}", crate::interrupt::name(signal)));
    }
    parts.push(format!("{} copied", thousands(s.copied.files)));
    parts.push(format!("{} updated", thousands(s.updated.files)));
    parts.push(format!("{} deleted", thousands(s.deleted)));
    parts.push(format!("{} unchanged", thousands(s.unchanged.files)));
    for (n, word) in [
        (s.fixed, "fixed"),
        (s.skipped, "skipped"),
        (s.kept, "kept newer"),
        (s.vanished, "vanished"),
        (s.not_written, "not written"),
    ] {
        if n > 0 {
            parts.push(format!("{} {word}", thousands(n)));
        }
    }
    if s.errors > 0 {
        parts.push(format!("{} error{}", thousands(s.errors), plural(s.errors)));
    }
    format!(
        "{}, {} in {:.2} s",
        parts.join(", "),
        human_bytes(s.copied.bytes + s.updated.bytes),
        s.elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(10_234), "10,234");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3_565_158), "3.4 MiB");
    }

    #[test]
    fn summary_reads_like_the_spec() {
        let s = Summary {
            copied: Tally {
                files: 12,
                bytes: 3_565_158,
            },
            updated: Tally { files: 2, bytes: 0 },
            deleted: 5,
            unchanged: Tally {
                files: 10_234,
                bytes: 0,
            },
            elapsed: Duration::from_millis(410),
            ..Summary::default()
        };
        assert_eq!(
            summary_line(&s),
            "12 copied, 2 updated, 5 deleted, 10,234 unchanged, 3.4 MiB in 0.41 s"
        );
    }
}
