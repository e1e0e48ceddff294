//! syncease makes a destination folder an exact, one-way mirror of a source folder.
//!
//! A run is a pipeline with one module per stage: [`preflight`] refuses unsafe or invalid roots
//! before anything changes; [`scan`] lists SRC and DST at the same time; [`plan`] compares the
//! two listings (using the rules in [`compare`]) into plain-data actions; [`exec`] carries them
//! out on a rayon pool, writing only through [`fsops`]; the [`report`] front ends turn the
//! events into itemized lines and a summary. [`run`] ties the stages together and returns the
//! [`Status`] that the binary maps to its exit code.

pub mod compare;
pub mod config;
pub mod entry;
pub mod error;
pub mod exec;
pub mod fsops;
pub mod plan;
pub mod preflight;
pub mod report;
pub mod scan;

use std::time::Instant;

use tracing::debug;

use crate::config::Config;
use crate::exec::Roots;
use crate::preflight::Refusal;
use crate::report::{Reporter, Status};

/// Mirror `config.src` into `config.dst`, telling `reporter` what happens.
pub fn run(config: &Config, reporter: &dyn Reporter) -> Status {
    let started = Instant::now();
    let protected = match preflight::check(config) {
        Ok(protected) => protected,
        Err(refusal) => {
            reporter.refused(&refusal);
            return Status::Refused;
        }
    };
    let config = &Config {
        protected,
        ..config.clone()
    };
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(config.jobs.max(1))
        .build()
    {
        Ok(pool) => pool,
        Err(e) => {
            reporter.refused(&Refusal::Usage(format!("cannot start worker threads: {e}")));
            return Status::Refused;
        }
    };
    pool.install(|| {
        let (src, dst) = rayon::join(|| scan::scan(&config.src), || scan::scan(&config.dst));
        for error in src.errors.iter().chain(&dst.errors) {
            reporter.error(error);
        }
        let plan = plan::plan(&src, &dst, config);
        debug!(
            dirs = plan.dirs.len(),
            transfers = plan.transfers.len(),
            deletes = plan.deletes.len(),
            "planned"
        );
        drop((src.entries, dst.entries));
        let roots = Roots {
            src: &config.src,
            dst: &config.dst,
            backup: config.backup_dir.as_deref(),
        };
        let mut summary = if config.dry_run {
            exec::preview(&plan, roots, reporter)
        } else {
            exec::execute(&plan, roots, reporter)
        };
        summary.errors += (src.errors.len() + dst.errors.len()) as u64;
        summary.skipped = plan.skipped.len() as u64;
        summary.elapsed = started.elapsed();
        reporter.finish(&summary);
        summary.status()
    })
}
