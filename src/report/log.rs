//! Every event also goes to `tracing`, so `--log-file` (a debug-level subscriber layer set up
//! by the binary) records each action, warning and error next to the planner's decisions.

use tracing::{debug, error, info, warn};

use crate::error::Error;
use crate::plan::Item;
use crate::preflight::Refusal;
use crate::report::{summary_line, Reporter, Summary, Warning};

/// Logs each event, then passes it on.
#[derive(Debug)]
pub struct Logged<R>(pub R);

impl<R: Reporter> Reporter for Logged<R> {
    fn planned(&self, files: u64, bytes: u64) {
        info!(files, bytes, "plan complete");
        self.0.planned(files, bytes);
    }

    fn item(&self, item: &Item<'_>) {
        debug!("{item}");
        self.0.item(item);
    }

    fn takes_items(&self) -> bool {
        tracing::enabled!(tracing::Level::DEBUG) || self.0.takes_items()
    }

    fn wrote(&self, bytes: u64) {
        self.0.wrote(bytes);
    }

    fn warning(&self, warning: &Warning<'_>) {
        warn!("{warning}");
        self.0.warning(warning);
    }

    fn error(&self, e: &Error) {
        error!("{e}");
        self.0.error(e);
    }

    fn refused(&self, refusal: &Refusal) {
        error!("refusing to sync: {refusal}");
        self.0.refused(refusal);
    }

    fn finish(&self, summary: &Summary) {
        if summary.refused.is_none() {
            info!("{}", summary_line(summary));
        }
        self.0.finish(summary);
    }
}
