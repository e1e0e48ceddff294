//! `syncease SRC DST`: parse, configure, run, exit with 0, 1 or 2.

mod cli;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{CommandFactory, Parser};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use syncease::report::human::{Human, Verbosity};
use syncease::report::json::{self, Json};
use syncease::report::log::Logged;
use syncease::report::progress::Progress;
use syncease::report::{Reporter, Status, Summary};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if let Some(shell) = cli.completions {
        clap_complete::generate(
            shell,
            &mut cli::Cli::command(),
            "syncease",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    if cli.man {
        let page = clap_mangen::Man::new(cli::Cli::command());
        return match page.render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(Status::Refused.code()),
        };
    }
    let json = cli.json;
    let (config, output) = match cli.into_settings() {
        Ok(settings) => settings,
        Err(message) => return refuse(&message, json),
    };
    let log_file = match &output.log_file {
        Some(path) => {
            if let Err(refusal) = syncease::preflight::check_log_file(path, &config) {
                return refuse(&refusal.to_string(), json);
            }
            let file = OpenOptions::new().append(true).create(true).open(path);
            match file {
                Ok(file) => Some(LogFile(Arc::new(Mutex::new(BufWriter::new(file))))),
                Err(e) => {
                    let message = format!("cannot open log file '{}': {e}", path.display());
                    return refuse(&message, json);
                }
            }
        }
        None => None,
    };
    init_tracing(log_file.clone());
    if let Err(e) = syncease::interrupt::install() {
        return refuse(&format!("cannot handle signals: {e}"), json);
    }

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
    let reporter = Logged(reporter);
    let status = syncease::run(&config, &reporter);
    if let Some(mut log) = log_file {
        let _ = log.flush();
    }
    ExitCode::from(status.code())
}

/// The log file: appended to (as rsync's `--log-file`), through a buffer flushed at the end.
#[derive(Clone)]
struct LogFile(Arc<Mutex<BufWriter<File>>>);

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// Diagnostics on stderr as `SYNCEASE_LOG` asks (off by default); with `--log-file`, every
/// decision and action at debug level in that file too.
fn init_tracing(log_file: Option<LogFile>) {
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

/// clap's own errors: help and version exit 0, anything else is a usage error (exit 2).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let wants_json = std::env::args_os().any(|a| a == "--json");
    if wants_json {
        let _ = e.print();
        return refuse_json(&e.kind().to_string());
    }
    let _ = e.print();
    ExitCode::from(Status::Refused.code())
}

fn refuse(message: &str, json: bool) -> ExitCode {
    eprintln!("syncease: error: {message}");
    if json {
        return refuse_json(message);
    }
    ExitCode::from(Status::Refused.code())
}

fn refuse_json(message: &str) -> ExitCode {
    let summary = Summary {
        refused: Some(message.to_string()),
        ..Summary::default()
    };
    println!("{}", json::document(&summary, &[], &[]));
    ExitCode::from(Status::Refused.code())
}
