//! Where plugins come from and how they are described.
//!
//! Users deploy plugins as [`Plugin`] objects (see [`resource`]): every
//! replica's [`PluginWatcher`] fetches and compiles them into its
//! [`Catalog`], which the leader runs. For a host without the CRD (and for
//! tests of the runtime), a plugin can also be a JSON manifest beside its
//! component, given with `--plugin FILE` or found in `--plugin-dir DIR`
//! (every `*.json` file):
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

mod accounts;
mod catalog;
mod definition;
mod limits;
mod manifest;
mod pull_secret;
pub mod resource;
mod source;
pub mod store;

use std::path::{Path, PathBuf};

pub use self::accounts::{AccountPattern, AccountPolicy};
pub use self::catalog::{Catalog, Entry, ObjectInfo, PluginWatcher, Problem, Stage, State};
pub use self::definition::{Definition, ServiceAccount};
pub use self::limits::{Budget, InvalidField, parse_quantity};
pub use self::manifest::{Manifest, ManifestError};
pub use self::resource::{Plugin, PluginSpec, PluginStatus};
pub use self::source::{FetchError, Fetched, Fetcher};
use crate::runtime::{self, Compiled, Compiler};

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

    /// Watch Plugin objects (`plugins.leasehold.dev`) in every namespace.
    /// Turn off for a host that runs only manifest plugins.
    #[arg(long, env = "LEASEHOLD_WATCH_PLUGINS", default_value_t = true, action = clap::ArgAction::Set)]
    pub watch_plugins: bool,

    /// Watch Plugin objects only in this namespace (default: every namespace).
    #[arg(long, env = "LEASEHOLD_PLUGIN_NAMESPACE")]
    pub plugin_namespace: Option<String>,

    /// Where Plugin sources of kind `image` are read from.
    #[arg(long, env = "LEASEHOLD_PLUGIN_ROOT", default_value = "/plugins")]
    pub plugin_root: PathBuf,

    /// A ServiceAccount Plugin objects may not run as, `namespace/name` or
    /// `namespace/*`; may be repeated. The host's own account is always
    /// refused.
    #[arg(
        long = "deny-service-account",
        env = "LEASEHOLD_DENY_SERVICE_ACCOUNTS",
        value_delimiter = ','
    )]
    pub denied_accounts: Vec<AccountPattern>,

    /// Largest component a Plugin source may deliver, as a byte quantity.
    #[arg(long, env = "LEASEHOLD_MAX_COMPONENT_SIZE", default_value = "64Mi", value_parser = parse_size)]
    pub max_component_size: u64,

    /// Name plugin code to a native profiler: `perfmap` writes
    /// /tmp/perf-<pid>.map (read by `perf top` and `perf report`), `jitdump`
    /// writes jit-<pid>.dump in the working directory (for `perf inject
    /// --jit`). Off by default: both files grow with every plugin compiled.
    #[arg(long, env = "LEASEHOLD_WASM_PROFILER", value_enum)]
    pub wasm_profiler: Option<WasmProfiler>,
}

/// The profilers `--wasm-profiler` can name plugin code to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WasmProfiler {
    Perfmap,
    Jitdump,
}

impl Options {
    /// What the runtime writes for `--wasm-profiler`.
    pub fn profiler(&self) -> runtime::Profiler {
        match self.wasm_profiler {
            None => runtime::Profiler::Off,
            Some(WasmProfiler::Perfmap) => runtime::Profiler::PerfMap,
            Some(WasmProfiler::Jitdump) => runtime::Profiler::JitDump,
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    parse_quantity(text).map(|bytes| bytes as u64)
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

/// A plugin ready to run: its definition and its compiled component.
#[derive(Clone, Debug)]
pub struct LoadedPlugin {
    pub definition: Definition,
    pub compiled: Compiled,
}

impl LoadedPlugin {
    /// Whether `other` is the same plugin in every respect that matters to
    /// a running controller (so a change of any of them means a reload).
    pub fn same_version(&self, other: &Self) -> bool {
        self.definition == other.definition && self.compiled.digest == other.compiled.digest
    }
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
pub async fn load_all(compiler: &Compiler, paths: &[PathBuf]) -> Result<Vec<LoadedPlugin>, Error> {
    let mut loaded: Vec<LoadedPlugin> = Vec::new();
    for path in paths {
        let plugin = load(compiler, path).await?;
        if loaded
            .iter()
            .any(|other| other.definition.name == plugin.definition.name)
        {
            return Err(Error::Duplicate(plugin.definition.name));
        }
        tracing::info!(
            plugin = %plugin.definition.name,
            digest = %plugin.compiled.digest,
            compile_ms = plugin.compiled.compile_time.as_millis() as u64,
            "plugin compiled"
        );
        loaded.push(plugin);
    }
    Ok(loaded)
}

async fn load(compiler: &Compiler, path: &Path) -> Result<LoadedPlugin, Error> {
    let manifest = Manifest::read(path).map_err(|source| Error::Manifest {
        path: path.to_owned(),
        source,
    })?;
    let bytes = std::fs::read(&manifest.component).map_err(|source| Error::Component {
        plugin: manifest.definition.name.clone(),
        path: manifest.component.clone(),
        source,
    })?;
    let compiled = compiler
        .compile(bytes)
        .await
        .map_err(|source| Error::Compile {
            plugin: manifest.definition.name.clone(),
            source,
        })?;
    Ok(LoadedPlugin {
        definition: manifest.definition,
        compiled,
    })
}
