//! `--progress`: a live line on stderr while both sides are scanned (entries listed so far),
//! then a bar with files, bytes, rate and ETA. The bytes count as they are written (see
//! [`crate::bwlimit`]), so a large file — a download, an upload in parts — moves the bar
//! before it is done.
//!
//! The plan is complete before anything is copied, so the totals are exact from the start and
//! never jump. The ETA weighs what is left in bytes and in files: a small file costs its
//! opening, creating and renaming more than its bytes, so ten thousand small files left are
//! not "almost done" because they hold few bytes. Lines printed while the bar is shown
//! (warnings, errors) are written with the bar suspended, so they are never torn. Nothing is
//! drawn when stderr is not a terminal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::bwlimit;
use crate::error::Error;
use crate::plan::Item;
use crate::preflight::Refusal;
use crate::report::{Reporter, Summary, Warning};

/// What one file costs beyond its bytes, in bytes' worth of time: opening, creating, naming.
const FILE_COST: u64 = 64 << 10;

/// Files done and planned, shared with the bar's ETA, and the bytes of the files done.
#[derive(Debug, Default)]
struct Files {
    done: AtomicU64,
    total: AtomicU64,
    bytes: AtomicU64,
}

/// How often the bar's bytes are brought up to date while files are on their way.
const TICK: Duration = Duration::from_millis(100);

/// The time left, from the time spent on what is done: work counted in bytes, plus
/// [`FILE_COST`] for each file.
fn eta(elapsed: Duration, bytes: (u64, u64), files: (u64, u64)) -> Option<Duration> {
    let work = |bytes: u64, files: u64| bytes as f64 + (files * FILE_COST) as f64;
    let (done, total) = (work(bytes.0, files.0), work(bytes.1, files.1));
    (done > 0.0 && total >= done)
        .then(|| Duration::from_secs_f64(elapsed.as_secs_f64() * (total - done) / done))
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// Draws the scan line and the bar, then passes every event on.
#[derive(Debug)]
pub struct Progress<R> {
    inner: R,
    bar: ProgressBar,
    files: Arc<Files>,
    /// The wrapped reporter prints itemized lines, which must not tear the bar.
    itemize: bool,
}

impl<R: Reporter> Progress<R> {
    pub fn new(inner: R, itemize: bool) -> Progress<R> {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        // While the two sides are listed: how many entries so far.
        let listed = |_: &ProgressState, w: &mut dyn std::fmt::Write| {
            let n = crate::scan::LISTED.load(Ordering::Relaxed);
            let _ = write!(w, "{}", crate::report::thousands(n));
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} scanning: {listed} entries listed")
                .expect("valid template")
                .with_key("listed", listed),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Progress {
            inner,
            bar,
            files: Arc::default(),
            itemize,
        }
    }
}

impl<R: Reporter> Reporter for Progress<R> {
    fn planned(&self, files: u64, bytes: u64) {
        self.files.total.store(files, Ordering::Relaxed);
        let counts = self.files.clone();
        let files_key = move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
            let (done, total) = (&counts.done, &counts.total);
            let _ = write!(
                w,
                "{}/{}",
                done.load(Ordering::Relaxed),
                total.load(Ordering::Relaxed)
            );
        };
        let counts = self.files.clone();
        let eta_key = move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let bytes = (state.pos(), state.len().unwrap_or(0));
            let files = (
                counts.done.load(Ordering::Relaxed),
                counts.total.load(Ordering::Relaxed),
            );
            let _ = match eta(state.elapsed(), bytes, files) {
                Some(left) => write!(w, "{}", clock(left)),
                None => write!(w, "-"),
            };
        };
        self.bar.set_style(
            ProgressStyle::with_template(
                "{wide_bar} {bytes}/{total_bytes} {files} files {binary_bytes_per_sec} ETA {left}",
            )
            .expect("valid template")
            .with_key("files", files_key)
            .with_key("left", eta_key),
        );
        self.bar.set_length(bytes);
        self.bar.set_position(0);
        self.bar.reset_elapsed();
        // The bytes moved so far, files done or not (a large file shows moving while it
        // goes); never less than the files done hold (a hard link or a server-side copy moves
        // none here).
        bwlimit::count();
        let (bar, counts, start) = (self.bar.clone(), self.files.clone(), bwlimit::moved());
        std::thread::spawn(move || {
            while !bar.is_finished() {
                let moved = bwlimit::moved().saturating_sub(start);
                let done = counts.bytes.load(Ordering::Relaxed);
                bar.set_position(moved.max(done).min(bytes));
                std::thread::sleep(TICK);
            }
        });
        self.inner.planned(files, bytes);
    }

    fn wrote(&self, bytes: u64) {
        self.files.done.fetch_add(1, Ordering::Relaxed);
        self.files.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.inner.wrote(bytes);
    }

    fn item(&self, item: &Item<'_>) {
        if self.itemize {
            self.bar.suspend(|| self.inner.item(item));
        } else {
            self.inner.item(item);
        }
    }

    fn takes_items(&self) -> bool {
        self.inner.takes_items()
    }

    fn warning(&self, warning: &Warning<'_>) {
        self.bar.suspend(|| self.inner.warning(warning));
    }

    fn error(&self, error: &Error) {
        self.bar.suspend(|| self.inner.error(error));
    }

    fn refused(&self, refusal: &Refusal) {
        self.inner.refused(refusal);
    }

    fn finish(&self, summary: &Summary) {
        self.bar.finish_and_clear();
        self.inner.finish(summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_counts_files_left_as_well_as_bytes() {
        let ten = Duration::from_secs(10);
        // Half the bytes done, and half the files: as long again.
        assert_eq!(eta(ten, (50 << 20, 100 << 20), (10, 20)), Some(ten));
        // Nearly all the bytes (one big file) but few of the many small files: far from done.
        let left = eta(ten, (1 << 30, (1 << 30) + (100 << 20)), (1, 100_001)).unwrap();
        assert!(left > Duration::from_secs(50), "{left:?}");
        assert_eq!(eta(ten, (0, 100), (0, 1)), None);
        assert_eq!(clock(Duration::from_secs(3725)), "1h02m");
        assert_eq!(clock(Duration::from_secs(80)), "1m20s");
    }
}
