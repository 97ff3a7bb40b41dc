//! Building the plugin crate under test into its component.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

use crate::{Error, Result};

/// The target every plugin is built for.
const TARGET: &str = "wasm32-wasip2";

/// The profile plugins build with when their workspace declares it.
pub const PLUGIN_PROFILE: &str = "plugin";

/// Builds the plugin crate at `crate_dir` (usually
/// `env!("CARGO_MANIFEST_DIR")`) with `cargo build --target wasm32-wasip2`
/// in the profile [`profile_for`] picks, and returns its component's path.
/// Cargo does nothing when the component is fresh; within one test process
/// each crate is built once.
pub fn build_component(crate_dir: impl AsRef<Path>) -> Result<PathBuf> {
    static BUILT: Mutex<Option<HashMap<PathBuf, PathBuf>>> = Mutex::new(None);
    let crate_dir = crate_dir.as_ref();
    // Held while building: parallel tests of one crate build it once.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(component) = built.get(crate_dir) {
        return Ok(component.clone());
    }
    let component = cargo_build(crate_dir)?;
    built.insert(crate_dir.to_owned(), component.clone());
    Ok(component)
}

fn cargo_build(crate_dir: &Path) -> Result<PathBuf> {
    let failed = |reason: String| Error::Build {
        crate_dir: crate_dir.to_owned(),
        reason,
    };
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(failed(format!("{} does not exist", manifest.display())));
    }
    let profile = profile_for(&workspace_manifest(&manifest).map_err(failed)?);
    let output = cargo()
        .args(["build", "--profile", profile, "--target", TARGET])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .map_err(|error| failed(format!("cannot run cargo: {error}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stderr.contains("may not be installed") || stderr.contains("can't find crate for `std`")
        {
            return Err(failed(format!(
                "the {TARGET} target is not installed; run `rustup target add {TARGET}`"
            )));
        }
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(failed(format!("cargo build failed:\n{}", tail.join("\n"))));
    }
    component_in(&String::from_utf8_lossy(&output.stdout), &manifest).ok_or_else(|| {
        failed(format!(
            "cargo built no .wasm for {}; is its crate-type [\"cdylib\"]?",
            manifest.display()
        ))
    })
}

/// The cargo profile for the plugin crates of the workspace whose root
/// manifest reads `workspace_manifest`: [`PLUGIN_PROFILE`] when it declares
/// `[profile.plugin]`, else `release`. A workspace that also builds native
/// crates (a host, tools) can give its plugins their own settings, such as
/// `lto = true` and `opt-level = "s"`, which make a plugin's cold call
/// cheaper, without giving them to its binaries. An unreadable manifest
/// gets `release`: cargo reports what is wrong with it.
pub fn profile_for(workspace_manifest: &str) -> &'static str {
    let Ok(manifest) = toml::from_str::<toml::Table>(workspace_manifest) else {
        return "release";
    };
    let declared = manifest
        .get("profile")
        .and_then(|profiles| profiles.get(PLUGIN_PROFILE))
        .is_some_and(toml::Value::is_table);
    if declared { PLUGIN_PROFILE } else { "release" }
}

/// The text of the root manifest of the workspace `manifest` belongs to.
fn workspace_manifest(manifest: &Path) -> std::result::Result<String, String> {
    let output = cargo()
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .arg("--manifest-path")
        .arg(manifest)
        .output()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    let root = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    std::fs::read_to_string(&root)
        .map_err(|error| format!("cannot read {}: {error}", root.display()))
}

/// Inside `cargo test`, CARGO is the cargo that runs the test.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The `.wasm` that cargo's JSON messages report for the package whose
/// manifest is `manifest`.
fn component_in(messages: &str, manifest: &Path) -> Option<PathBuf> {
    let manifest = manifest.canonicalize().ok()?;
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| {
            message["manifest_path"]
                .as_str()
                .and_then(|path| Path::new(path).canonicalize().ok())
                .is_some_and(|path| path == manifest)
        })
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|name| name.as_str().map(PathBuf::from))
        .find(|name| {
            name.extension()
                .is_some_and(|extension| extension == "wasm")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_component_is_the_wasm_artifact_of_the_crate_under_test() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let manifest = dir.join("Cargo.toml");
        std::fs::write(&manifest, "").unwrap();
        let other = dir.join("other.toml");
        std::fs::write(&other, "").unwrap();
        let messages = [
            serde_json::json!({"reason": "compiler-artifact", "manifest_path": other, "filenames": ["/t/dep.wasm"]}),
            serde_json::json!({"reason": "compiler-artifact", "manifest_path": manifest, "filenames": ["/t/plugin.d", "/t/plugin.wasm"]}),
            serde_json::json!({"reason": "build-finished", "success": true}),
        ]
        .map(|message| message.to_string())
        .join("\n");
        assert_eq!(
            component_in(&messages, &manifest),
            Some(PathBuf::from("/t/plugin.wasm"))
        );
        assert_eq!(component_in("not json\n", &manifest), None);
    }

    #[test]
    fn plugins_build_with_the_plugin_profile_where_their_workspace_declares_one() {
        let declared = "[workspace]\n[profile.plugin]\ninherits = \"release\"\nlto = true\n";
        assert_eq!(profile_for(declared), "plugin");
        let inline = "[profile]\nplugin = { inherits = \"release\" }\n";
        assert_eq!(profile_for(inline), "plugin");
        let release_only = "[package]\nname = \"p\"\n[profile.release]\nlto = true\n";
        assert_eq!(profile_for(release_only), "release");
        assert_eq!(profile_for("[profile]\nplugin = 1\n"), "release");
        assert_eq!(profile_for("not toml ["), "release");
    }

    #[test]
    fn a_directory_without_a_crate_is_refused_by_name() {
        let error = build_component("/nonexistent/plugin").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("/nonexistent/plugin/Cargo.toml does not exist"),
            "{error}"
        );
    }
}
