//! Logging: structured `tracing` output as JSON (for log collectors) or
//! plain text (for people), filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// `info` for Leasehold itself, `warn` for the libraries under it: kube and
/// hyper are chatty at `info` and say nothing an operator acts on.
const DEFAULT_FILTER: &str = "warn,leasehold=info";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    #[default]
    Text,
}

/// Logging options, flattened into every command.
#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Logging")]
#[group(id = "logging-options")]
pub struct Options {
    /// Log line format.
    #[arg(long, env = "LEASEHOLD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(options: &Options) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match options.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
