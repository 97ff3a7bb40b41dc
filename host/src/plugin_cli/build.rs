//! `leasehold plugin build`: cargo, for the one target plugins need; npm
//! for a JavaScript plugin.

use std::path::{Path, PathBuf};

use super::{Error, Result, WASM_TARGET, cargo, js, read, run_cargo};
use crate::oci;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The plugin's directory: a crate, or an npm package.
    #[arg(long, default_value = ".")]
    path: PathBuf,
}

/// Builds the plugin at `options.path` and returns the component's path.
pub(super) fn run(options: Options) -> Result<PathBuf> {
    let component = if js::is_package(&options.path) {
        js::build(&options.path)?
    } else {
        build_crate(options)?
    };
    let bytes = read(&component)?;
    println!("component: {}", component.display());
    println!("digest:    {}", oci::digest_of(&bytes));
    println!("size:      {} bytes", bytes.len());
    Ok(component)
}

/// cargo, for the one target plugins need.
fn build_crate(options: Options) -> Result<PathBuf> {
    check_target(&options.path)?;
    let (package, metadata) = package(&options.path)?;
    // The harness's choice, so `plugin build` and the plugin's tests build
    // the same component.
    let workspace_manifest = read(&metadata.workspace_root.join("Cargo.toml"))?;
    let profile = leasehold_harness::profile_for(&String::from_utf8_lossy(&workspace_manifest));
    run_cargo(
        &options.path,
        &["build", "--profile", profile, "--target", WASM_TARGET],
    )?;
    let component = metadata
        .target_directory
        .join(WASM_TARGET)
        .join(profile)
        .join(format!("{}.wasm", package.replace('-', "_")));
    if !component.is_file() {
        return Err(Error::NoPackage {
            path: options.path,
            reason: format!(
                "cargo built no {} (is `crate-type = [\"cdylib\"]` set?)",
                component.display()
            ),
        });
    }
    Ok(component)
}

/// Fails early, with the fix, when the toolchain that would build in `dir`
/// lacks the target's standard library (cargo's own error does not say
/// what to run). Asks rustc for its sysroot rather than rustup, so a
/// toolchain not managed by rustup is judged the same way.
fn check_target(dir: &Path) -> Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = std::process::Command::new(&rustc)
        .current_dir(dir)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|source| Error::Spawn {
            program: rustc.to_string_lossy().into_owned(),
            source,
        })?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !output.status.success() || !sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir() {
        return Err(Error::MissingTarget);
    }
    Ok(())
}

/// The name of the package whose manifest is in `dir`, and its workspace's
/// root and where cargo puts its builds (honouring `CARGO_TARGET_DIR` and
/// `.cargo/config`).
fn package(dir: &Path) -> Result<(String, Metadata)> {
    let no_package = |reason: String| Error::NoPackage {
        path: dir.to_owned(),
        reason,
    };
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(no_package("it has no Cargo.toml".into()));
    }
    let output = cargo()
        .current_dir(dir)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|source| Error::Spawn {
            program: "cargo".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(no_package(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let metadata: Metadata = serde_json::from_slice(&output.stdout)
        .map_err(|error| no_package(format!("unreadable cargo metadata: {error}")))?;
    let manifest = std::fs::canonicalize(&manifest).map_err(|source| Error::Io {
        action: "read",
        path: manifest,
        source,
    })?;
    let package = metadata
        .packages
        .iter()
        .find(|package| package.manifest_path == manifest)
        .ok_or_else(|| no_package("its Cargo.toml declares no [package]".into()))?;
    Ok((package.name.clone(), metadata))
}

#[derive(serde::Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_root: PathBuf,
    target_directory: PathBuf,
}

#[derive(serde::Deserialize)]
struct Package {
    name: String,
    manifest_path: PathBuf,
}
