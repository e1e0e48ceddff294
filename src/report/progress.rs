//! `--progress`: a live bar on stderr with files, bytes, rate and ETA.
//!
//! The plan is complete before anything is copied, so the totals are exact from the start and
//! never jump. Lines printed while the bar is shown (warnings, errors) are written with the bar
//! suspended, so they are never torn. The bar is drawn only when stderr is a terminal.

use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::Error;
use crate::plan::Item;
use crate::preflight::Refusal;
use crate::report::{Reporter, Summary, Warning};

/// Draws the bar, then passes every event on.
#[derive(Debug)]
pub struct Progress<R> {
    inner: R,
    bar: ProgressBar,
    files_done: AtomicU64,
    files_total: AtomicU64,
    /// The wrapped reporter prints itemized lines, which must not tear the bar.
    itemize: bool,
}

impl<R: Reporter> Progress<R> {
    pub fn new(inner: R, itemize: bool) -> Progress<R> {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{wide_bar} {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template"),
        );
        Progress {
            inner,
            bar,
            files_done: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
            itemize,
        }
    }
}

impl<R: Reporter> Reporter for Progress<R> {
    fn planned(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.bar.set_length(bytes);
        self.bar.set_message(format!("0/{files} files"));
        self.bar.set_position(0);
        self.inner.planned(files, bytes);
    }

    fn wrote(&self, bytes: u64) {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.files_total.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{total} files"));
        self.bar.inc(bytes);
        self.inner.wrote(bytes);
    }

    fn item(&self, item: &Item<'_>) {
        if self.itemize {
            self.bar.suspend(|| self.inner.item(item));
        } else {
            self.inner.item(item);
        }
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
