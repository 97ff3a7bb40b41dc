use clap::Parser;
use leasehold::{Cli, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(&cli.telemetry);
    cli.run()
        .await
        .inspect_err(|error| tracing::error!(error = format!("{error:#}"), "leasehold failed"))
}
