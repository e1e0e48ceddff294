//! The binary's set-up around a run: the log file and diagnostics, the front ends that report
//! the run, and the refusals caught before one starts (each still printing its JSON document
//! when `--json` was asked, so every exit path ends in the same report).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use syncease::config::Config;
use syncease::report::human::{Human, Verbosity};
use syncease::report::json::{self, Json};
use syncease::report::log::Logged;
use syncease::report::progress::Progress;
use syncease::report::{Reporter, Status, Summary};

use crate::cli::Output;

/// The log file: appended to (as rsync's `--log-file`), through a buffer flushed at the end.
#[derive(Clone)]
pub struct LogFile(Arc<Mutex<BufWriter<File>>>);

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// Open `--log-file` (refused inside SRC or DST); `Err` is the refusal's message.
pub fn log_file(output: &Output, config: &Config) -> Result<Option<LogFile>, String> {
    let Some(path) = &output.log_file else {
        return Ok(None);
    };
    syncease::preflight::check_log_file(path, config).map_err(|r| r.to_string())?;
    let file = OpenOptions::new().append(true).create(true).open(path);
    match file {
        Ok(file) => Ok(Some(LogFile(Arc::new(Mutex::new(BufWriter::new(file)))))),
        Err(e) => Err(format!("cannot open log file '{}': {e}", path.display())),
    }
}

/// Diagnostics on stderr as `SYNCEASE_LOG` asks (off by default); with `--log-file`, every
/// decision and action at debug level in that file too, never with colour codes.
pub fn tracing(log_file: Option<LogFile>) {
    use std::io::IsTerminal;
    // Colour only for a terminal: diagnostics redirected to a file stay plain text.
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(
            EnvFilter::builder()
                .with_default_directive(LevelFilter::OFF.into())
                .with_env_var("SYNCEASE_LOG")
                .from_env_lossy(),
        );
    let file = log_file.map(|file| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || file.clone())
            .with_filter(LevelFilter::DEBUG)
    });
    tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .init();
}

/// The front ends `output` asks for: human or JSON, with progress, logged.
pub fn reporter(output: &Output) -> impl Reporter {
    let human = Human {
        verbosity: output.verbosity,
    };
    let mut reporter: Box<dyn Reporter> = if output.json {
        Box::new(Json::new(human))
    } else {
        Box::new(human)
    };
    if output.progress {
        let itemize = output.verbosity == Verbosity::Itemize && !output.json;
        reporter = Box::new(Progress::new(reporter, itemize));
    }
    Logged(reporter)
}

/// clap's own errors: help and version exit 0, anything else is a usage error (exit 2).
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let _ = e.print();
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return ExitCode::SUCCESS;
    }
    // The arguments did not parse, so `--json` is looked for among them as typed.
    let json = std::env::args_os().any(|a| a == "--json");
    refused(&e.kind().to_string(), json)
}

/// A refusal before the run: on stderr, and as the JSON document when asked.
pub fn refuse(message: &str, json: bool) -> ExitCode {
    eprintln!("syncease: error: {message}");
    refused(message, json)
}

fn refused(message: &str, json: bool) -> ExitCode {
    if json {
        let summary = Summary {
            refused: Some(message.to_string()),
            ..Summary::default()
        };
        println!("{}", json::document(&summary, &[], &[]));
    }
    ExitCode::from(Status::Refused.code())
}
