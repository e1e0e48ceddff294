//! `syncease SRC DST`: parse, configure, set up the report, run, exit with the run's status.

mod cli;
mod manual;
mod setup;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return setup::usage_error(e),
    };
    // --completions and --man print and end there.
    if let Some(code) = cli.print_extras() {
        return code;
    }
    let json = cli.json;
    let (config, output) = match cli.into_settings() {
        Ok(settings) => settings,
        Err(message) => return setup::refuse(&message, json),
    };
    let log_file = match setup::log_file(&output, &config) {
        Ok(log_file) => log_file,
        Err(message) => return setup::refuse(&message, json),
    };
    setup::tracing(log_file.clone());
    if let Err(e) = syncease::interrupt::install() {
        return setup::refuse(&format!("cannot handle signals: {e}"), json);
    }
    let status = syncease::run(&config, &setup::reporter(&output));
    if let Some(mut log) = log_file {
        let _ = log.flush();
    }
    ExitCode::from(status.code())
}
