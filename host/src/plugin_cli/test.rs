//! `leasehold plugin test`: a crate's own tests, natively, against the SDK's
//! in-memory cluster; a JavaScript plugin's `npm test`.

use std::path::PathBuf;

use super::{Result, js, run_cargo};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The plugin's directory: a crate, or an npm package.
    #[arg(long, default_value = ".")]
    path: PathBuf,
}

pub(super) fn run(options: Options) -> Result<()> {
    if js::is_package(&options.path) {
        return js::test(&options.path);
    }
    run_cargo(&options.path, &["test"])
}
