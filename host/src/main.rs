use clap::Parser;
use leasehold::{Cli, telemetry};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(&cli.telemetry);
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime
        .block_on(cli.run())
        .inspect_err(|error| tracing::error!(error = format!("{error:#}"), "leasehold failed"));
    // A compile of a plugin component may still be running on a blocking
    // thread; it has no effect any more, so do not wait for it to finish.
    runtime.shutdown_background();
    result
}
