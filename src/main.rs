//! `syncease SRC DST`: parse, configure, run, exit with 0, 1 or 2.

mod cli;

use std::fs::File;
use std::process::ExitCode;
use std::sync::Mutex;

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
        Some(path) => match File::create(path) {
            Ok(file) => Some(file),
            Err(e) => {
                return refuse(
                    &format!("cannot create log file '{}': {e}", path.display()),
                    json,
                )
            }
        },
        None => None,
    };
    init_tracing(log_file);

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
    ExitCode::from(syncease::run(&config, &reporter).code())
}

/// Diagnostics on stderr as `SYNCEASE_LOG` asks (off by default); with `--log-file`, every
/// decision and action at debug level in that file too.
fn init_tracing(log_file: Option<File>) {
    let stderr = tracing_subscriber::fmt::layer()
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
            .with_writer(Mutex::new(file))
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
