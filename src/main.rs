//! `syncease SRC DST`: parse, configure, run, exit with 0, 1 or 2.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use syncease::report::human::Human;
use syncease::report::Status;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let (config, verbosity) = match cli.into_settings() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("syncease: error: {message}");
            return ExitCode::from(Status::Refused.code());
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SYNCEASE_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let reporter = Human { verbosity };
    ExitCode::from(syncease::run(&config, &reporter).code())
}
