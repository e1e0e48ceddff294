//! The command line: the only module that knows about clap.
//!
//! [`Cli`] is what the user typed; [`Cli::into_settings`] validates it into the engine's
//! [`Config`] and the front end's verbosity.

use std::path::PathBuf;

use clap::Parser;

use syncease::config::{Compare, Config, Method};
use syncease::report::human::Verbosity;

const AFTER_HELP: &str = "\
Exit status:
  0  everything synced
  1  partial: some entries failed or deletions were withheld; the rest synced
  2  refused or invalid usage: nothing was changed

Examples:
  syncease ~/photos /mnt/backup/photos       mirror, deleting what ~/photos no longer has
  syncease -n -v ~/photos /mnt/backup/photos show what would change, change nothing";

/// Make DST an exact, one-way mirror of SRC: copy new files, update changed ones, delete what
/// SRC no longer has. Files are written under a temporary name and renamed into place.
#[derive(Debug, Parser)]
#[command(name = "syncease", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// The folder to mirror (never modified)
    #[arg(value_name = "SRC")]
    pub src: PathBuf,

    /// The folder made identical to SRC (created if missing; its parent must exist)
    #[arg(value_name = "DST")]
    pub dst: PathBuf,

    /// Plan and report, change nothing
    #[arg(short = 'n', long, help_heading = "Run")]
    pub dry_run: bool,

    /// Worker threads [default: number of CPUs]
    #[arg(short, long, value_name = "N", help_heading = "Run")]
    pub jobs: Option<usize>,

    /// Never overwrite a destination file that is newer than the source one
    #[arg(short, long, help_heading = "Compare")]
    pub update: bool,

    /// Treat files of equal size as unchanged, whatever their times
    #[arg(long, help_heading = "Compare")]
    pub size_only: bool,

    /// Treat modification times this many seconds apart as equal (2 for FAT)
    #[arg(long, value_name = "SECS", help_heading = "Compare")]
    pub modify_window: Option<f64>,

    /// Copy and update only; keep destination entries SRC does not have
    #[arg(long, help_heading = "Deletion")]
    pub no_delete: bool,

    /// Delete nothing when more than N entries would be deleted (and exit 1)
    #[arg(long, value_name = "N", help_heading = "Deletion")]
    pub max_delete: Option<u64>,

    /// Sync even when SRC is empty and DST is not (empties DST)
    #[arg(long, help_heading = "Deletion")]
    pub allow_empty_source: bool,

    /// Move files that would be overwritten or deleted into DIR (same relative path) instead
    #[arg(long, value_name = "DIR", help_heading = "Deletion")]
    pub backup_dir: Option<PathBuf>,

    /// Print one line per action on stdout (itemized)
    #[arg(short, long, conflicts_with = "quiet", help_heading = "Output")]
    pub verbose: bool,

    /// Print errors only
    #[arg(short, long, help_heading = "Output")]
    pub quiet: bool,
}

impl Cli {
    /// Validate into the engine's settings; `Err` is a usage message (exit 2).
    pub fn into_settings(self) -> Result<(Config, Verbosity), String> {
        let mut config = Config::new(self.src, self.dst);
        if let Some(jobs) = self.jobs {
            if jobs == 0 {
                return Err("--jobs must be at least 1".into());
            }
            config.jobs = jobs;
        }
        let modify_window_ns = match self.modify_window {
            None => 0,
            Some(secs) if secs.is_finite() && secs >= 0.0 => (secs * 1e9).round() as u128,
            Some(secs) => return Err(format!("--modify-window {secs}: must be 0 or more")),
        };
        config.compare = Compare {
            method: if self.size_only {
                Method::SizeOnly
            } else {
                Method::Quick
            },
            modify_window_ns,
            update: self.update,
        };
        config.dry_run = self.dry_run;
        config.delete = !self.no_delete;
        config.max_delete = self.max_delete;
        config.allow_empty_source = self.allow_empty_source;
        config.backup_dir = self.backup_dir;
        let verbosity = if self.quiet {
            Verbosity::Quiet
        } else if self.verbose || self.dry_run {
            Verbosity::Itemize
        } else {
            Verbosity::Normal
        };
        Ok((config, verbosity))
    }
}
