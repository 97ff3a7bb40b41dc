//! The `leasehold` command line.

use clap::{Parser, Subcommand};

use crate::{replica, telemetry};

/// A highly available Kubernetes control plane whose controllers are
/// WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "leasehold", version)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: telemetry::Options,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a replica: serve the API, join the election, lead when elected.
    Run(replica::Options),
}

impl Cli {
    /// Runs the chosen command to completion.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(options) => {
                let config = options.into_config()?;
                replica::Replica::new(config).await?.run().await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
        // Subcommands are only fully built when they are parsed.
        assert!(Cli::try_parse_from(["leasehold", "run"]).is_ok());
    }

    #[test]
    fn bad_flags_are_rejected_with_the_reason() {
        let error =
            Cli::try_parse_from(["leasehold", "run", "--lease-duration", "soon"]).unwrap_err();
        assert!(error.to_string().contains("examples: 15s"), "{error}");
        let error = Cli::try_parse_from(["leasehold", "run", "--listen", "localhost"]).unwrap_err();
        assert!(error.to_string().contains("--listen"), "{error}");
        let error = Cli::try_parse_from(["leasehold", "run", "--log-format", "xml"]).unwrap_err();
        assert!(error.to_string().contains("json"), "{error}");
    }

    #[test]
    fn invalid_timings_are_reported_before_connecting() {
        let Command::Run(options) = Cli::try_parse_from([
            "leasehold",
            "run",
            "--lease-duration",
            "5s",
            "--renew-deadline",
            "6s",
        ])
        .unwrap()
        .command;
        let error = options.into_config().unwrap_err();
        assert!(
            format!("{:#}", anyhow::Error::from(error))
                .contains("must be greater than renew deadline"),
        );
    }
}
