//! The `leasehold` command line.

use clap::{Parser, Subcommand};

use crate::{plugin_cli, replica, telemetry};

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
    // Boxed: the options are large and parsed once.
    Run(Box<replica::Options>),
    /// Write, build, check, push and deploy controller plugins.
    Plugin {
        #[command(subcommand)]
        command: plugin_cli::Command,
    },
}

impl Cli {
    /// Runs the chosen command to completion.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(options) => {
                let config = options.into_config()?;
                replica::Replica::new(config).await?.run().await?;
            }
            Command::Plugin { command } => command.run().await?,
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
        for plugin in [
            &["new", "mirror"][..],
            &["build"],
            &["validate", "m.wasm"],
            &["test"],
            &["push", "m.wasm", "localhost:5000/m:1"],
            &[
                "deploy",
                "m.wasm",
                "--name",
                "m",
                "--namespace",
                "n",
                "--service-account",
                "s",
            ],
            &[
                "deploy",
                "--oci",
                "r/m:1",
                "--name",
                "m",
                "--namespace",
                "n",
                "--service-account",
                "s",
            ],
        ] {
            let args = ["leasehold", "plugin"].iter().chain(plugin);
            assert!(Cli::try_parse_from(args).is_ok(), "{plugin:?}");
        }
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
        let error =
            Cli::try_parse_from(["leasehold", "run", "--wasm-profiler", "vtune"]).unwrap_err();
        assert!(error.to_string().contains("perfmap, jitdump"), "{error}");
        let deploy = [
            "leasehold",
            "plugin",
            "deploy",
            "--name",
            "m",
            "--namespace",
            "n",
        ];
        let error =
            Cli::try_parse_from(deploy.iter().chain(&["--service-account", "s"])).unwrap_err();
        assert!(error.to_string().contains("<FILE>"), "{error}");
    }

    fn run_config(args: &[&str]) -> Result<crate::replica::Config, crate::replica::Error> {
        let Command::Run(options) = Cli::try_parse_from(["leasehold", "run"].iter().chain(args))
            .unwrap()
            .command
        else {
            panic!("parsed as another command");
        };
        options.into_config()
    }

    #[test]
    fn an_issued_certificate_covers_the_admission_endpoint_and_needs_a_name() {
        let config = run_config(&[
            "--tls-secret",
            "ops/leasehold-tls",
            "--admission-service",
            "ops/leasehold:8443",
            "--tls-san",
            "10.0.0.7",
        ])
        .unwrap();
        let Some(crate::api::Https {
            certificate: crate::api::Certificate::Issued(issuing),
            ..
        }) = config.tls
        else {
            panic!("not issued: {:?}", config.tls);
        };
        assert_eq!(
            issuing.names,
            [
                "10.0.0.7",
                "leasehold.ops.svc",
                "leasehold.ops.svc.cluster.local"
            ]
        );
        let error = run_config(&["--tls-secret", "ops/leasehold-tls"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--tls-secret needs a name to certify: give --admission-service, --admission-url or --tls-san"
        );
        let error = Cli::try_parse_from([
            "leasehold",
            "run",
            "--tls-secret",
            "ops/leasehold-tls",
            "--admission-ca-file",
            "/ca.pem",
        ])
        .unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
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
        .command
        else {
            panic!("parsed as another command");
        };
        let error = options.into_config().unwrap_err();
        assert!(
            format!("{:#}", anyhow::Error::from(error))
                .contains("must be greater than renew deadline"),
        );
    }
}
