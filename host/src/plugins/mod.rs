//! Where plugins come from and how they are described.
//!
//! Until the Plugin custom resource exists, a plugin is a JSON manifest
//! beside its component, given with `--plugin FILE` or found in
//! `--plugin-dir DIR` (every `*.json` file):
//!
//! ```json
//! {
//!   "name": "configmap-mirror",
//!   "component": "configmap_mirror.wasm",
//!   "serviceAccount": "plugins/configmap-mirror",
//!   "config": {"namespaceSelector": "mirror=true"},
//!   "limits": {"memory": "64Mi", "timeout": "2s", "concurrency": 4}
//! }
//! ```
//!
//! `component` is relative to the manifest. Every replica loads and compiles
//! every plugin at start-up; only the leader instantiates them.

mod manifest;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use self::manifest::{Manifest, ManifestError, parse_quantity};
use crate::runtime::{self, Compiled, Runtime};

/// Plugin sources, flattened into `leasehold run`.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(next_help_heading = "Plugins")]
#[group(id = "plugin-options")]
pub struct Options {
    /// A plugin manifest (JSON); may be repeated.
    #[arg(long = "plugin", env = "LEASEHOLD_PLUGINS", value_delimiter = ',')]
    pub manifests: Vec<PathBuf>,

    /// A directory whose `*.json` files are plugin manifests.
    #[arg(long, env = "LEASEHOLD_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,

    /// Where compiled plugins are cached across restarts (keyed by the
    /// component and the engine configuration). Off when unset.
    #[arg(long, env = "LEASEHOLD_COMPILE_CACHE")]
    pub compile_cache: Option<PathBuf>,
}

/// Why plugins could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A manifest is missing, unreadable or invalid.
    #[error("plugin manifest {path}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    /// The plugin directory cannot be read.
    #[error("cannot read plugin directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A component file cannot be read.
    #[error("plugin {plugin}: cannot read component {path}")]
    Component {
        plugin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A component does not compile or is not a controller.
    #[error("plugin {plugin}")]
    Compile {
        plugin: String,
        #[source]
        source: runtime::Error,
    },
    /// Two manifests use the same name.
    #[error("two plugins are named {0}")]
    Duplicate(String),
}

/// A plugin ready to run: its manifest and its compiled component.
#[derive(Clone, Debug)]
pub struct LoadedPlugin {
    pub manifest: Manifest,
    pub compiled: Compiled,
}

impl Options {
    /// Every manifest path named by the options, directory entries sorted.
    pub fn manifest_paths(&self) -> Result<Vec<PathBuf>, Error> {
        let mut paths = self.manifests.clone();
        if let Some(dir) = &self.plugin_dir {
            let entries = std::fs::read_dir(dir).map_err(|source| Error::Directory {
                path: dir.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                .collect();
            found.sort();
            paths.extend(found);
        }
        Ok(paths)
    }
}

/// Reads every manifest and compiles every component. One bad plugin fails
/// start-up with a message naming it: nothing starts half-configured.
pub fn load_all(runtime: &Runtime, paths: &[PathBuf]) -> Result<Arc<Vec<LoadedPlugin>>, Error> {
    let mut loaded: Vec<LoadedPlugin> = Vec::new();
    for path in paths {
        let plugin = load(runtime, path)?;
        if loaded
            .iter()
            .any(|other| other.manifest.name == plugin.manifest.name)
        {
            return Err(Error::Duplicate(plugin.manifest.name));
        }
        tracing::info!(
            plugin = %plugin.manifest.name,
            digest = %plugin.compiled.digest,
            compile_ms = plugin.compiled.compile_time.as_millis() as u64,
            "plugin compiled"
        );
        loaded.push(plugin);
    }
    Ok(Arc::new(loaded))
}

fn load(runtime: &Runtime, path: &Path) -> Result<LoadedPlugin, Error> {
    let manifest = Manifest::read(path).map_err(|source| Error::Manifest {
        path: path.to_owned(),
        source,
    })?;
    let bytes = std::fs::read(&manifest.component).map_err(|source| Error::Component {
        plugin: manifest.name.clone(),
        path: manifest.component.clone(),
        source,
    })?;
    let compiled = runtime.compile(&bytes).map_err(|source| Error::Compile {
        plugin: manifest.name.clone(),
        source,
    })?;
    Ok(LoadedPlugin { manifest, compiled })
}
