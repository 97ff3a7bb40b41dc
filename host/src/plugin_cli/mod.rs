//! `leasehold plugin`: the plugin author's commands, from an empty
//! directory to a Plugin running in a cluster.
//!
//! * [`new`](Command::New) scaffolds a plugin on the SDK (a Rust crate, or
//!   with `--lang js` an npm package) that builds and passes its own test at
//!   once;
//! * [`build`](Command::Build) and [`test`](Command::Test) run cargo in it,
//!   or npm (`js.rs`) when it is an npm package;
//! * [`validate`](Command::Validate) loads a component the way a replica
//!   does and prints what it registers;
//! * [`run`](Command::Run) runs a component offline on the harness, for
//!   tests in any language;
//! * [`push`](Command::Push) stores it in an OCI registry, and
//!   [`deploy`](Command::Deploy) creates or updates the Plugin object.
//!
//! Every command that takes a component validates it first, so a broken
//! file is refused on the author's machine, not in the cluster.

mod build;
mod deploy;
mod js;
mod new;
mod push;
mod run;
mod test;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use clap::Subcommand;

use crate::{oci, runtime};

/// The target every plugin is built for: WASI preview 2 produces a
/// component directly, with no adapter step.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// A plugin author's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a plugin (Rust, or --lang js) that builds and passes its
    /// test at once.
    New(new::Options),
    /// Build the plugin (a crate, or an npm package) into a wasm component.
    Build(build::Options),
    /// Check that a file is a controller component this host can run, and
    /// print what it registers.
    Validate(validate::Options),
    /// Run the plugin's tests: a crate's natively (the SDK's in-memory
    /// cluster), an npm package's with `npm test`.
    Test(test::Options),
    /// Run a component offline against an in-memory cluster: fixtures in,
    /// reconciles, JSON out (or JSON commands on stdin with --serve).
    Run(run::Options),
    /// Validate a component, then push it to an OCI registry.
    Push(push::Options),
    /// Create or update a Plugin (and the ConfigMap holding its component)
    /// through the current kubeconfig.
    Deploy(deploy::Options),
}

impl Command {
    /// Runs the command to completion, reporting on stdout.
    pub async fn run(self) -> Result<()> {
        match self {
            Command::New(options) => new::run(options),
            Command::Build(options) => build::run(options).map(drop),
            Command::Validate(options) => validate::run(options).await.map(drop),
            Command::Test(options) => test::run(options),
            Command::Run(options) => run::run(options).await,
            Command::Push(options) => push::run(options).await,
            Command::Deploy(options) => deploy::run(options).await,
        }
    }
}

/// Why a `leasehold plugin` command failed. None is worth retrying as is
/// except [`Push`](Error::Push) and [`Kube`](Error::Kube) when their source
/// says the registry or API server was unreachable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plugin name cannot be a Kubernetes name or a crate name.
    #[error("invalid plugin name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// `new` would overwrite something.
    #[error("{} exists and is not empty; choose another --path or remove it", path.display())]
    NotEmpty { path: PathBuf },
    /// The SDK to depend on is not where `--sdk-path` says.
    #[error("{sdk} not found at {} (pass --sdk-path DIR)", path.display())]
    SdkNotFound { sdk: &'static str, path: PathBuf },
    /// A file or directory could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Rust toolchain cannot build plugins yet.
    #[error("the {WASM_TARGET} target is not installed; run: rustup target add {WASM_TARGET}")]
    MissingTarget,
    /// A tool (cargo, rustc) could not be started.
    #[error("cannot run {program} (is the Rust toolchain installed?)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A cargo or npm command failed; its own output says why.
    #[error("`{command}` failed ({status})")]
    Failed { command: String, status: ExitStatus },
    /// npm could not be started.
    #[error("cannot run {program} (are Node.js and npm installed?)")]
    SpawnNpm {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// `run` could not load the component or a fixture.
    #[error("cannot run {}: {reason}", path.display())]
    Run { path: PathBuf, reason: String },
    /// `cargo metadata` said something this command cannot use.
    #[error("cannot find a package at {}: {reason}", path.display())]
    NoPackage { path: PathBuf, reason: String },
    /// The file is not a controller component this host can run.
    #[error("{} is not a usable plugin", path.display())]
    Component {
        path: PathBuf,
        #[source]
        source: runtime::Error,
    },
    /// The component loaded but trapped when asked what it reconciles.
    #[error("the plugin's register call failed")]
    Register(#[source] runtime::Error),
    /// The OCI reference is malformed.
    #[error(transparent)]
    Reference(oci::Error),
    /// Pushing or pulling the artifact failed.
    #[error("cannot {action} {reference}")]
    Registry {
        action: &'static str,
        reference: String,
        #[source]
        source: oci::Error,
    },
    /// `--config` is not a JSON object.
    #[error("--config must be a JSON object: {reason}")]
    InvalidConfig { reason: String },
    /// The component store refused or failed.
    #[error(transparent)]
    Store(#[from] crate::plugins::store::StoreError),
    /// The Kubernetes API refused or could not be reached.
    #[error("cannot {action}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads a file, naming it in the error.
fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

/// The program cargo was started through (`CARGO` when leasehold itself
/// runs under cargo), so a pinned toolchain stays pinned.
fn cargo() -> std::process::Command {
    std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs cargo with `args` in `dir`, its output going to the terminal.
fn run_cargo(dir: &Path, args: &[&str]) -> Result<()> {
    let status = cargo()
        .current_dir(dir)
        .args(args)
        .status()
        .map_err(|source| Error::Spawn {
            program: "cargo".into(),
            source,
        })?;
    succeeded(status, "cargo", args)
}

/// `Ok` when `program args` exited with success.
fn succeeded(status: ExitStatus, program: &str, args: &[&str]) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    Err(Error::Failed {
        command: format!("{program} {}", args.join(" ")),
        status,
    })
}
