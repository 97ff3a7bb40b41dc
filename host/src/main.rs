use std::process::ExitCode;

use clap::Parser;
use leasehold::cli::Command;
use leasehold::{Cli, telemetry};

/// Runs the command and says a failure once: a replica in its log (where an
/// operator's log pipeline reads it), an author's command as one line on
/// stderr, with its causes.
fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.telemetry);
    let replica = matches!(cli.command, Command::Run(_));
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            let result = runtime.block_on(cli.run());
            // A compile of a plugin component may still be running on a
            // blocking thread; it has no effect any more, so do not wait.
            runtime.shutdown_background();
            result
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if replica => {
            tracing::error!(error = format!("{error:#}"), "leasehold failed");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
