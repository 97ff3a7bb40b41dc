//! `leasehold plugin test`: the crate's own tests, natively, against the
//! SDK's in-memory cluster.

use std::path::PathBuf;

use super::{Result, run_cargo};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The plugin crate's directory.
    #[arg(long, default_value = ".")]
    path: PathBuf,
}

pub(super) fn run(options: Options) -> Result<()> {
    run_cargo(&options.path, &["test"])
}
