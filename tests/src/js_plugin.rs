//! The JavaScript plugins, built by `make plugins-js` with componentize-js
//! from npm: the example `labeler-js` on the JavaScript SDK (contract 0.2),
//! and the fixture `labeler-v0.1-js`, the same labeler on raw bindings for
//! the previous contract (0.1).

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::repo_root;

/// Where `make plugins-js` puts its components: under cargo's target
/// directory, so `CARGO_TARGET_DIR` moves them with everything else.
pub fn js_plugins_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from)
        .join("js-plugins")
}

/// The component of the JavaScript example `labeler-js`, on the SDK.
pub fn js_plugin_component() -> PathBuf {
    built("labeler-js.wasm")
}

/// The component of `tests/fixtures/labeler-v0.1-js`, built for contract
/// 0.1 from bindings unchanged since then.
pub fn js_v01_plugin_component() -> PathBuf {
    built("labeler-v0.1-js.wasm")
}

/// `make plugins-js`, once per test process: a no-op when the components
/// are up to date, about a minute when not, and the npm install of the
/// toolchain on a machine that has never built them. Needs `make`,
/// Node.js and npm.
fn built(file: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = std::process::Command::new("make")
            .current_dir(repo_root())
            .args(["--no-print-directory", "plugins-js"])
            .status()
            .expect("running make plugins-js");
        assert!(
            status.success(),
            "building the JavaScript plugins failed (it needs Node.js and npm)"
        );
    });
    js_plugins_dir().join(file)
}
