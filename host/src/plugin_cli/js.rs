//! A plugin that is an npm package (`plugin new --lang js`): `build` and
//! `test` run its npm scripts, installing its dependencies first when it
//! has none yet.

use std::path::{Path, PathBuf};

use super::{Error, Result, read, succeeded};

/// Where a JavaScript plugin says its component is: `package.json`'s
/// `leasehold.component`, relative to the package.
const COMPONENT_FIELD: &str = "leasehold.component";

/// Whether `dir` holds an npm package rather than a crate.
pub(super) fn is_package(dir: &Path) -> bool {
    dir.join("package.json").is_file() && !dir.join("Cargo.toml").is_file()
}

/// `npm run build`, then the component's path, as `package.json` names it.
pub(super) fn build(dir: &Path) -> Result<PathBuf> {
    install(dir)?;
    npm(dir, &["run", "build"])?;
    let manifest = dir.join("package.json");
    let package: serde_json::Value =
        serde_json::from_slice(&read(&manifest)?).map_err(|error| Error::NoPackage {
            path: dir.to_owned(),
            reason: format!("unreadable package.json: {error}"),
        })?;
    let component = package["leasehold"]["component"]
        .as_str()
        .ok_or_else(|| Error::NoPackage {
            path: dir.to_owned(),
            reason: format!("its package.json names no {COMPONENT_FIELD}"),
        })?;
    let component = dir.join(component);
    if !component.is_file() {
        return Err(Error::NoPackage {
            path: dir.to_owned(),
            reason: format!("npm run build made no {}", component.display()),
        });
    }
    Ok(component)
}

/// `npm test`, with `LEASEHOLD` naming this binary: the SDK's test harness
/// runs components through `leasehold plugin run`.
pub(super) fn test(dir: &Path) -> Result<()> {
    install(dir)?;
    npm(dir, &["test"])
}

/// `npm install` when the package has no `node_modules` yet.
fn install(dir: &Path) -> Result<()> {
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    npm(dir, &["install", "--no-audit", "--no-fund"])
}

fn npm(dir: &Path, args: &[&str]) -> Result<()> {
    let program = std::env::var_os("NPM").unwrap_or_else(|| "npm".into());
    let mut command = std::process::Command::new(&program);
    command.current_dir(dir).args(args);
    if let Ok(exe) = std::env::current_exe() {
        command.env("LEASEHOLD", exe);
    }
    let status = command.status().map_err(|source| Error::SpawnNpm {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    succeeded(status, "npm", args)
}
