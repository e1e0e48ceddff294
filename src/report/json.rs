//! `--json`: one JSON document on stdout when the run ends, whatever the exit path.
//!
//! Errors and warnings still go to stderr as they happen (through the wrapped reporter); the
//! document repeats them with their paths, so a script needs nothing but stdout. The schema is
//! in the README; `version` changes when a field changes meaning.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

use crate::error::Error;
use crate::plan::{Item, Tally};
use crate::preflight::Refusal;
use crate::report::{Reporter, Summary, Warning};

/// Collects errors and warnings, prints the document at `finish`.
#[derive(Debug)]
pub struct Json<R> {
    inner: R,
    errors: Mutex<Vec<ErrorRecord>>,
    warnings: Mutex<Vec<String>>,
    /// Itemized actions by reason word (`new`, `size`, `owner`, `xattr`, ...).
    reasons: Mutex<BTreeMap<&'static str, u64>>,
}

#[derive(Debug, Serialize)]
struct ErrorRecord {
    path: String,
    message: String,
}

#[derive(Serialize)]
struct Count {
    files: u64,
    bytes: u64,
}

impl From<Tally> for Count {
    fn from(t: Tally) -> Count {
        Count {
            files: t.files,
            bytes: t.bytes,
        }
    }
}

#[derive(Serialize)]
struct Document<'a> {
    version: u32,
    status: &'static str,
    exit_code: u8,
    dry_run: bool,
    refused: Option<&'a str>,
    copied: Count,
    updated: Count,
    deleted: u64,
    unchanged: Count,
    fixed: u64,
    skipped: u64,
    kept_newer: u64,
    vanished: u64,
    not_written: u64,
    deletions_withheld: Option<String>,
    /// The signal that stopped the run (`SIGINT`, `SIGTERM`, `SIGHUP`).
    interrupted: Option<&'static str>,
    /// How many actions each reason word had.
    reasons: &'a BTreeMap<&'static str, u64>,
    /// What the destination was found to hold.
    destination: Option<&'a crate::config::Limits>,
    seconds: f64,
    errors: &'a [ErrorRecord],
    warnings: &'a [String],
}

impl<R: Reporter> Json<R> {
    pub fn new(inner: R) -> Json<R> {
        Json {
            inner,
            errors: Mutex::default(),
            warnings: Mutex::default(),
            reasons: Mutex::default(),
        }
    }
}

/// Render a JSON document for a summary (used for usage errors caught before any run, too).
pub fn document(summary: &Summary, errors: &[(String, String)], warnings: &[String]) -> String {
    let errors: Vec<_> = errors
        .iter()
        .map(|(path, message)| ErrorRecord {
            path: path.clone(),
            message: message.clone(),
        })
        .collect();
    render(summary, &errors, warnings, &BTreeMap::new())
}

fn render(
    s: &Summary,
    errors: &[ErrorRecord],
    warnings: &[String],
    reasons: &BTreeMap<&'static str, u64>,
) -> String {
    let status = s.status();
    let doc = Document {
        version: 1,
        status: match status {
            crate::report::Status::Synced => "synced",
            crate::report::Status::Partial => "partial",
            crate::report::Status::Refused => "refused",
            crate::report::Status::Interrupted(_) => "interrupted",
        },
        exit_code: status.code(),
        dry_run: s.dry_run,
        refused: s.refused.as_deref(),
        copied: s.copied.into(),
        updated: s.updated.into(),
        deleted: s.deleted,
        unchanged: s.unchanged.into(),
        fixed: s.fixed,
        skipped: s.skipped,
        kept_newer: s.kept,
        vanished: s.vanished,
        not_written: s.not_written,
        deletions_withheld: s.withheld.as_ref().map(ToString::to_string),
        interrupted: s.interrupted.map(crate::interrupt::name),
        reasons,
        destination: s.destination.as_ref(),
        seconds: s.elapsed.as_secs_f64(),
        errors,
        warnings,
    };
    serde_json::to_string_pretty(&doc).expect("plain data serializes")
}

impl<R: Reporter> Reporter for Json<R> {
    fn planned(&self, files: u64, bytes: u64) {
        self.inner.planned(files, bytes);
    }

    fn item(&self, item: &Item<'_>) {
        // stdout carries the document only: items are counted.
        *self.reasons.lock().unwrap().entry(item.reason).or_default() += 1;
    }

    fn wrote(&self, bytes: u64) {
        self.inner.wrote(bytes);
    }

    fn warning(&self, warning: &Warning<'_>) {
        self.inner.warning(warning);
        self.warnings.lock().unwrap().push(warning.to_string());
    }

    fn error(&self, error: &Error) {
        self.inner.error(error);
        let record = ErrorRecord {
            path: error.path.to_string_lossy().into_owned(),
            message: error.to_string(),
        };
        self.errors.lock().unwrap().push(record);
    }

    fn refused(&self, refusal: &Refusal) {
        self.inner.refused(refusal);
    }

    fn finish(&self, summary: &Summary) {
        let errors = self.errors.lock().unwrap();
        let warnings = self.warnings.lock().unwrap();
        let reasons = self.reasons.lock().unwrap();
        let _ = writeln!(
            std::io::stdout().lock(),
            "{}",
            render(summary, &errors, &warnings, &reasons)
        );
    }
}
