//! The JavaScript example plugin (`plugins/examples/labeler-js`), built by
//! `make plugins-js` with componentize-js from npm.

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

/// The component of the JavaScript example `labeler-js`, built once per
/// test process by `make plugins-js`: a no-op when it is up to date, about
/// half a minute when not, and the npm install of the toolchain on a
/// machine that has never built it. Needs `make`, Node.js and npm.
pub fn js_plugin_component() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = std::process::Command::new("make")
                .current_dir(repo_root())
                .args(["--no-print-directory", "plugins-js"])
                .status()
                .expect("running make plugins-js");
            assert!(
                status.success(),
                "building the JavaScript plugin failed (it needs Node.js and npm)"
            );
            js_plugins_dir().join("labeler-js.wasm")
        })
        .clone()
}
