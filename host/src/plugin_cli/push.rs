//! `leasehold plugin push`: a validated component, as a wasm OCI artifact.

use std::path::PathBuf;

use super::{Error, Result, validate};
use crate::oci::{self, PushOptions};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The component (`.wasm`) to push.
    file: PathBuf,
    /// Where to: `registry/repository:tag`.
    reference: String,
    /// Plain HTTP, for a registry without TLS (loopback always is).
    #[arg(long)]
    insecure: bool,
}

pub(super) async fn run(options: Options) -> Result<()> {
    // A malformed reference is reported before the slower validation.
    let reference = oci::parse(&options.reference).map_err(Error::Reference)?;
    let validated = validate::validate_file(&options.file).await?;
    let pushed = oci::push(
        &reference,
        &validated.bytes,
        &PushOptions {
            insecure: options.insecure,
            ..PushOptions::default()
        },
    )
    .await
    .map_err(|source| Error::Registry {
        action: "push to",
        reference: reference.to_string(),
        source,
    })?;
    println!("pushed:    {reference}");
    println!("digest:    {}", pushed.digest);
    println!("manifest:  {}", pushed.manifest_digest);
    println!(
        "pinned:    {}",
        reference.clone_with_digest(pushed.manifest_digest.clone())
    );
    Ok(())
}
