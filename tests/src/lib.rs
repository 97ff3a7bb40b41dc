//! Test support: a real kube-apiserver + etcd on loopback, shared by every
//! test of a run, and helpers for what Leasehold's tests need around it.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use leasehold_tests::TestCluster;
//! let cluster = TestCluster::shared().await;
//! let namespace = cluster.namespace("example").await?;
//! let client = cluster.client()?;
//! # Ok(()) }
//! ```
//!
//! The control plane is started by `tools/cluster.sh up` the first time a
//! test asks for it (or by `make test` before the run) and reused while it
//! answers; `tools/cluster.sh down` stops it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

pub mod admission;
mod api_proxy;
pub mod audit;
mod balancer;
pub mod chaos;
mod cluster;
pub mod fixtures;
pub mod js_plugin;
pub mod native_mirror;
mod proxy;
mod registry;
mod replica;

pub use api_proxy::ApiProxy;
pub use balancer::Balancer;
pub use cluster::TestCluster;
pub use proxy::TcpProxy;
pub use registry::TestRegistry;
pub use replica::{
    ActivityInterval, Memory, ReplicaProcess, ReplicaSettings, free_address, kubeconfig_via,
    leasehold_binary, now_micros, overlapping, plugin_component,
};

/// The repository root (for scripts and fixtures).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_owned()
}

/// Runs `tools/<script> up`, which starts the service it manages or finds it
/// running, and returns what it printed: where the service is.
async fn tool_up(script: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let script = repo_root().join("tools").join(script);
    let output = tokio::process::Command::new(&script)
        .arg("up")
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} up failed ({})",
        script.display(),
        output.status
    );
    let printed = String::from_utf8(output.stdout)?.trim().to_owned();
    anyhow::ensure!(
        !printed.is_empty(),
        "{} up printed nothing",
        script.display()
    );
    Ok(printed)
}

/// A name unique to this process and call, valid as a Kubernetes name.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `limit`.
/// Limits are generous on purpose: a shared CI machine can be slow, and
/// timing claims belong in benchmarks, not tests.
pub async fn eventually<T, F, Fut>(
    limit: std::time::Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `Some(())` once the object `name` no longer exists: a check for
/// [`eventually`].
pub async fn gone<K>(api: &kube::Api<K>, name: &str) -> Option<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.ok()?.is_none().then_some(())
}

/// helm and kubectl, as built and cached by `tools/cluster.sh`.
#[derive(Debug)]
pub struct KubeTools {
    pub helm: PathBuf,
    pub kubectl: PathBuf,
}

/// helm and kubectl from the directories `tools/cluster.sh env` puts on PATH.
pub fn kube_tools() -> &'static KubeTools {
    static TOOLS: OnceLock<KubeTools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let script = repo_root().join("tools/cluster.sh");
        // Builds and caches them the first time; a no-op afterwards.
        let status = std::process::Command::new(&script)
            .arg("install")
            .stdout(Stdio::null())
            .status()
            .expect("running tools/cluster.sh install");
        assert!(status.success(), "tools/cluster.sh install failed");
        let env = std::process::Command::new(&script)
            .arg("env")
            .output()
            .expect("running tools/cluster.sh env");
        let env = String::from_utf8(env.stdout).expect("utf-8 from tools/cluster.sh env");
        let dirs: Vec<PathBuf> = env
            .lines()
            .find_map(|line| line.strip_prefix("export PATH="))
            .expect("tools/cluster.sh env prints a PATH line")
            .split(':')
            .filter(|dir| !dir.starts_with('$'))
            .map(PathBuf::from)
            .collect();
        let find = |name: &str| {
            dirs.iter()
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
                .unwrap_or_else(|| panic!("no {name} in {dirs:?} (from tools/cluster.sh env)"))
        };
        KubeTools {
            helm: find("helm"),
            kubectl: find("kubectl"),
        }
    })
}
