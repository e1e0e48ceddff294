//! The terminal front end: itemized lines on stdout with `-v`, warnings and errors on stderr as
//! they happen, one summary line at the end. `-q` keeps only errors.

use std::io::Write;

use crate::error::Error;
use crate::plan::Item;
use crate::preflight::Refusal;
use crate::report::{summary_line, Reporter, Summary, Warning};

/// How much the terminal front end says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// Warnings, errors and the summary.
    #[default]
    Normal,
    /// Also one line per action on stdout.
    Itemize,
}

/// Writes to the process's stdout and stderr; each line is written under the stream's lock,
/// so lines from worker threads never interleave.
#[derive(Debug, Default)]
pub struct Human {
    pub verbosity: Verbosity,
}

impl Human {
    fn stderr(&self, line: std::fmt::Arguments<'_>) {
        // Nothing useful can be done when stderr itself is gone.
        let _ = writeln!(std::io::stderr().lock(), "syncease: {line}");
    }
}

impl Reporter for Human {
    fn item(&self, item: &Item<'_>) {
        if self.verbosity == Verbosity::Itemize {
            let _ = writeln!(std::io::stdout().lock(), "{item}");
        }
    }

    fn takes_items(&self) -> bool {
        self.verbosity == Verbosity::Itemize
    }

    fn warning(&self, warning: &Warning<'_>) {
        if self.verbosity != Verbosity::Quiet {
            self.stderr(format_args!("warning: {warning}"));
        }
    }

    fn error(&self, error: &Error) {
        self.stderr(format_args!("error: {error}"));
    }

    fn refused(&self, refusal: &Refusal) {
        self.stderr(format_args!("refusing to sync: {refusal}"));
    }

    fn finish(&self, summary: &Summary) {
        if self.verbosity != Verbosity::Quiet && summary.refused.is_none() {
            let _ = writeln!(std::io::stderr().lock(), "{}", summary_line(summary));
        }
    }
}
