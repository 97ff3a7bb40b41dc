//! `make bench-scale`: what Leasehold costs as objects and plugins grow,
//! against the real control plane, with its baselines measured in the same
//! run.
//!
//! * **Many objects** ([`mirror_at_scale`]): `LEASEHOLD_SCALE_OBJECTS`
//!   (10 000) sources spread over `LEASEHOLD_SCALE_NAMESPACES` (100)
//!   namespaces, mirrored into one target namespace (so there is exactly
//!   one copy per source), by the configmap-mirror plugin in a release
//!   `leasehold run` replica and by the same controller written natively on
//!   kube-runtime ([`native_mirror`]), one after the other.
//! * **Many plugins over replicas** ([`spread`]): `LEASEHOLD_SCALE_PLUGINS`
//!   (30) writing plugins on one replica, then on three in
//!   `--placement spread`: each replica's share of the reconciles and its
//!   memory, and how long a SIGKILLed replica's plugins take to reconcile
//!   on the others.
//! * **Plugins loaded** ([`loaded_plugins`]): an idle host's memory, and
//!   with one and with ten distinct plugins loaded from a warm compile
//!   cache.
//!
//! Prints `bench <name> <value> <unit>` lines for what it measured, and
//! `target` and `config` lines, apart, for the goals and the settings. Each
//! `…_ratio` is the plugin's figure over the native one.
//!
//! Memory is each process's own, from `/proc/<pid>/status`: the native
//! mirror runs as a process of its own (the `native-mirror` binary of this
//! crate, built with the same profile) rather than as a task in this one,
//! so that neither side's figure carries the benchmark's own watch of every
//! copy. Both sides impersonate the same ServiceAccount through the admin
//! credentials, so the API server authorizes them alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use leasehold_tests::chaos::{Fleet, Setup, Writers};
use leasehold_tests::fixtures::{
    config_map, install_plugin_crd, labelled_namespace, load_average, rule, service_account_with,
    sum_of,
};
use leasehold_tests::{
    Memory, ReplicaProcess, ReplicaSettings, TestCluster, eventually, plugin_component, unique_name,
};
use nix::sys::signal::Signal;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

/// Sources unless `LEASEHOLD_SCALE_OBJECTS` says otherwise.
const DEFAULT_OBJECTS: usize = 10_000;
/// Namespaces the sources are spread over, unless
/// `LEASEHOLD_SCALE_NAMESPACES` says otherwise.
const DEFAULT_NAMESPACES: usize = 100;
/// Plugins spread over replicas, unless `LEASEHOLD_SCALE_PLUGINS` says
/// otherwise.
const DEFAULT_PLUGINS: usize = 30;
/// Distinct plugins loaded for the memory figure (fewer when
/// `LEASEHOLD_SCALE_PLUGINS` is smaller).
const DISTINCT_PLUGINS: usize = 10;
/// How long each replica's reconciles are counted, unless
/// `LEASEHOLD_BENCH_SOAK_SECS` says otherwise.
const DEFAULT_WINDOW_SECS: usize = 20;
/// Reconciles at once, for both mirrors (the plugin's default limit).
const CONCURRENCY: u16 = 4;
/// Requests the benchmark itself sends at once (creating and touching
/// sources).
const WRITES_AT_ONCE: usize = 32;
/// A controller whose reconcile count has not moved for this long is done.
const QUIET: Duration = Duration::from_secs(2);
/// How long to wait for quiet at most: a host may resync on its own.
const QUIET_AT_MOST: Duration = Duration::from_secs(60);
/// How long a started replica has to be ready and leading.
const START_PATIENCE: Duration = Duration::from_secs(120);
/// How long memory is left to settle before it is read.
const SETTLE: Duration = Duration::from_secs(3);
/// Replicas in the spread figures.
const SPREAD_REPLICAS: usize = 3;
/// Shard Leases in the spread figures (the host's default).
const SHARDS: u32 = 16;
/// How often each spread plugin writes: thirty plugins at ten writes a
/// second each would measure the 2-core test machine, not the placement.
const WRITE_EVERY: Duration = Duration::from_secs(1);
/// The mirror's labels (as in the plugin and [`native_mirror`]).
const SOURCE_LABEL: (&str, &str) = ("leasehold.dev/mirror", "true");
const SOURCE_NAME: &str = "mirror.leasehold.dev/source-name";
const FINALIZER_FREE: &str = r#"{"metadata":{"finalizers":null}}"#;
/// The API server resources the mirrors use (their Lease renewals and the
/// Plugin statuses of the host are left out: the native mirror has none).
const MIRROR_RESOURCES: [&str; 3] = ["configmaps", "namespaces", "events"];

/// [`native_mirror`]: leasehold_tests::native_mirror
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let objects = setting("LEASEHOLD_SCALE_OBJECTS", DEFAULT_OBJECTS)?.max(1);
    let namespaces = setting("LEASEHOLD_SCALE_NAMESPACES", DEFAULT_NAMESPACES)?.clamp(1, objects);
    let plugins = setting("LEASEHOLD_SCALE_PLUGINS", DEFAULT_PLUGINS)?.max(1);
    let window =
        Duration::from_secs(setting("LEASEHOLD_BENCH_SOAK_SECS", DEFAULT_WINDOW_SECS)? as u64);
    let cluster = TestCluster::shared().await;
    install_plugin_crd(&cluster.client()?).await?;
    eprintln!("load average at start: {}", load_average());
    let home = Home::new(cluster).await?;

    loaded_plugins(&home, plugins.min(DISTINCT_PLUGINS)).await?;
    eprintln!("load average after the loaded plugins: {}", load_average());
    mirror_at_scale(&home, objects, namespaces).await?;
    eprintln!("load average after the mirrors: {}", load_average());
    spread(plugins, window).await?;
    eprintln!("load average at the end: {}", load_average());
    Ok(())
}

/// A count from the environment, else `default`.
fn setting(name: &str, default: usize) -> anyhow::Result<usize> {
    std::env::var(name)
        .ok()
        .map(|n| n.parse())
        .transpose()
        .with_context(|| format!("{name} must be a number"))
        .map(|n| n.unwrap_or(default))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Where the benchmark's replicas meet and its plugins' ServiceAccount,
/// which may do what the mirror and the misbehaving fixture do.
struct Home {
    cluster: &'static TestCluster,
    namespace: String,
    account: String,
    workdir: tempfile::TempDir,
}

impl Home {
    async fn new(cluster: &'static TestCluster) -> anyhow::Result<Self> {
        let namespace = cluster.namespace("bench-scale").await?;
        let all = [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ];
        let rules = vec![
            rule(&[""], &["configmaps"], &all),
            rule(&[""], &["namespaces"], &["get", "list", "watch"]),
            rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
            rule(&["coordination.k8s.io"], &["leases"], &all),
        ];
        let account = service_account_with(cluster, &namespace, rules).await?;
        let workdir = tempfile::Builder::new()
            .prefix("leasehold-scale")
            .tempdir()?;
        Ok(Self {
            cluster,
            namespace,
            account,
            workdir,
        })
    }

    fn dir(&self) -> &Path {
        self.workdir.path()
    }

    /// The user both mirrors act as.
    fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.account)
    }

    /// Writes the manifest of a plugin running `component` with `config`.
    fn manifest(
        &self,
        name: &str,
        component: &Path,
        config: serde_json::Value,
    ) -> anyhow::Result<PathBuf> {
        let path = self.dir().join(format!("{name}.json"));
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&json!({
                "name": name,
                "component": component,
                "serviceAccount": format!("{}/{}", self.namespace, self.account),
                "config": config,
                // The native mirror has no client-side throttle either.
                "limits": {"concurrency": CONCURRENCY, "apiQPS": 1000, "apiBurst": 2000},
            }))?,
        )?;
        Ok(path)
    }

    /// Starts a replica running `manifests` with `cache` as its compile
    /// cache, and waits until it is ready (its plugins compiled or loaded)
    /// and leads.
    async fn replica(
        &self,
        identity: &str,
        manifests: &[PathBuf],
        cache: &Path,
    ) -> anyhow::Result<ReplicaProcess> {
        let mut settings = ReplicaSettings::fast(&self.namespace, identity);
        for manifest in manifests {
            settings.extra_args.push("--plugin".into());
            settings.extra_args.push(manifest.display().to_string());
        }
        settings.extra_args.push("--compile-cache".into());
        settings.extra_args.push(cache.display().to_string());
        let replica =
            ReplicaProcess::start(identity, &settings, self.cluster.kubeconfig(), self.dir())
                .await?;
        eventually(
            START_PATIENCE,
            "the replica to be ready and lead",
            || async {
                let (status, _) = replica.get("/readyz").await.ok()?;
                let role = replica.role().await.ok()?;
                (status == 200 && role == "leader").then_some(())
            },
        )
        .await
        .with_context(|| replica.log())?;
        Ok(replica)
    }
}

/// Stops a replica the way Kubernetes does, and waits for it.
async fn stop(mut replica: ReplicaProcess) -> anyhow::Result<()> {
    replica.signal(Signal::SIGTERM)?;
    replica.wait(Duration::from_secs(30)).await?;
    Ok(())
}

// === plugins loaded ===

/// An idle replica (no plugins), then one with `count` distinct plugins
/// loaded from a warm compile cache: started once to fill the cache,
/// stopped, started again with the first plugin only and measured, then
/// with all of them and measured. Memory is read `SETTLE` after the
/// replica is ready and leads; no object matches any plugin, so this is
/// the cost of keeping a plugin (its compiled code, its watches), not of
/// its work.
///
/// The plugins alternate between configmap-mirror and the misbehaving
/// fixture, each component made distinct by a custom section of its own
/// (so each is compiled, cached and mapped apart, as distinct plugins are).
async fn loaded_plugins(home: &Home, count: usize) -> anyhow::Result<()> {
    let idle = home
        .replica("idle", &[], &home.dir().join("idle-cache"))
        .await?;
    tokio::time::sleep(SETTLE).await;
    let idle_memory = idle.memory()?;
    stop(idle).await?;

    let token = unique_name("scale-loaded");
    let mut manifests = Vec::new();
    for index in 0..count {
        let (crate_name, config) = if index % 2 == 0 {
            let selector = format!("leasehold.dev/scale-loaded={token}");
            ("configmap-mirror", json!({"namespaceSelector": selector}))
        } else {
            let selector = format!("leasehold.dev/misbehave={token}-{index}");
            ("misbehaving", json!({"selector": selector}))
        };
        let bytes = std::fs::read(plugin_component(crate_name))?;
        let component = home.dir().join(format!("loaded-{index}.wasm"));
        std::fs::write(
            &component,
            with_custom_section(bytes, "leasehold-bench", index.to_string().as_bytes()),
        )?;
        manifests.push(home.manifest(&format!("loaded-{index}"), &component, config)?);
    }
    let cache = home.dir().join("loaded-cache");
    stop(home.replica("loaded-cold", &manifests, &cache).await?).await?;
    // One plugin first: what each further one adds is the issue's figure
    // (the first also brings in the host's code for running any plugin).
    let one = home.replica("loaded-one", &manifests[..1], &cache).await?;
    tokio::time::sleep(SETTLE).await;
    let one_memory = one.memory()?;
    stop(one).await?;
    let loaded = home.replica("loaded", &manifests, &cache).await?;
    tokio::time::sleep(SETTLE).await;
    let loaded_memory = loaded.memory()?;
    stop(loaded).await?;

    let per_plugin =
        (mib(loaded_memory.resident) - mib(idle_memory.resident)) / count.max(1) as f64;
    println!("config scale_loaded_plugins {count} count");
    println!("bench scale_idle_rss {:.1} MiB", mib(idle_memory.resident));
    println!("bench scale_idle_rss_peak {:.1} MiB", mib(idle_memory.peak));
    println!(
        "bench scale_loaded_rss {:.1} MiB",
        mib(loaded_memory.resident)
    );
    println!(
        "bench scale_loaded_rss_peak {:.1} MiB",
        mib(loaded_memory.peak)
    );
    println!("bench scale_rss_per_loaded_plugin {per_plugin:.2} MiB");
    let per_additional = (mib(loaded_memory.resident) - mib(one_memory.resident))
        / count.saturating_sub(1).max(1) as f64;
    println!(
        "bench scale_rss_one_plugin {:.1} MiB",
        mib(one_memory.resident)
    );
    println!("bench scale_rss_per_additional_plugin {per_additional:.2} MiB");
    // Where a plugin's bytes are: its machine code is mapped from the
    // compile cache (file pages), the rest is the heap and its instances.
    let per_plugin_of = |part: fn(&Memory) -> u64| {
        (mib(part(&loaded_memory)) - mib(part(&idle_memory))) / count.max(1) as f64
    };
    println!(
        "bench scale_rss_per_loaded_plugin_anonymous {:.2} MiB",
        per_plugin_of(|memory| memory.anonymous)
    );
    println!(
        "bench scale_rss_per_loaded_plugin_file {:.2} MiB",
        per_plugin_of(|memory| memory.file)
    );
    println!("target scale_idle_rss 25 MiB");
    println!("target scale_rss_per_additional_plugin 2 MiB");
    Ok(())
}

/// `component` with a custom section appended: the same code, but bytes
/// (and so a digest and a compile cache entry) of its own. A component's
/// custom sections may come anywhere, and the runtime ignores them.
fn with_custom_section(mut component: Vec<u8>, name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut content = Vec::new();
    leb128(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    component.push(0);
    leb128(content.len(), &mut component);
    component.extend(content);
    component
}

// === many objects: the mirror, plugin vs native ===

/// Which mirror runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    /// The `native-mirror` process.
    Native,
    /// The configmap-mirror plugin in a `leasehold run` replica.
    Plugin,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::Native => "native",
            Contender::Plugin => "plugin",
        }
    }
}

/// A running mirror.
enum Running {
    Native {
        child: tokio::process::Child,
        reconciles: Arc<AtomicU64>,
    },
    Plugin(Box<ReplicaProcess>),
}

impl Running {
    /// Reconciles finished so far (the plugin's from the replica's own
    /// `leasehold_plugin_reconciles_total`, every result).
    async fn reconciles(&self) -> anyhow::Result<f64> {
        match self {
            Running::Native { reconciles, .. } => Ok(reconciles.load(Ordering::Relaxed) as f64),
            Running::Plugin(replica) => {
                let (_, metrics) = replica.get("/metrics").await?;
                Ok(sum_of(
                    &metrics,
                    "leasehold_plugin_reconciles_total",
                    |_| true,
                ))
            }
        }
    }

    /// Seconds spent reconciling and reconciles, where the mirror says.
    async fn reconciling(&self) -> anyhow::Result<Option<(f64, f64)>> {
        let Running::Plugin(replica) = self else {
            return Ok(None);
        };
        let (_, metrics) = replica.get("/metrics").await?;
        let of = |part: &str| {
            let name = format!("leasehold_plugin_reconcile_duration_seconds_{part}");
            sum_of(&metrics, &name, |_| true)
        };
        Ok(Some((of("sum"), of("count"))))
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        match self {
            Running::Native { child, .. } => {
                Memory::of(child.id().context("native mirror exited")?)
            }
            Running::Plugin(replica) => replica.memory(),
        }
    }

    fn log(&self) -> String {
        match self {
            Running::Native { .. } => String::new(),
            Running::Plugin(replica) => replica.log(),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Running::Native { mut child, .. } => {
                child.start_kill()?;
                child.wait().await?;
                Ok(())
            }
            Running::Plugin(replica) => stop(*replica).await,
        }
    }

    /// Waits until the reconcile count has not moved for `QUIET` (at most
    /// `QUIET_AT_MOST`): the reconciles that copies' own watch events
    /// cause are over.
    async fn quiet(&self) -> anyhow::Result<f64> {
        let began = Instant::now();
        let (mut last, mut since) = (self.reconciles().await?, Instant::now());
        while began.elapsed() < QUIET_AT_MOST {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.reconciles().await?;
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= QUIET {
                break;
            }
        }
        Ok(last)
    }
}

/// What one mirror did.
struct Measured {
    first_sync: Duration,
    first_requests: f64,
    first_reconciles: f64,
    steady: Duration,
    steady_requests: f64,
    steady_reconciles: f64,
    memory: Memory,
    /// The same process's memory with nothing to mirror.
    idle: Memory,
}

/// A figure of [`mirror_at_scale`]: its name, its unit, and how it is
/// computed from what a mirror did over so many sources.
type Figure = (&'static str, &'static str, fn(&Measured, usize) -> f64);

/// The sources, their namespaces, the target namespace and a watch of the
/// copies there.
struct Workload {
    admin: Client,
    sources: Vec<(String, String)>,
    source_namespaces: Vec<String>,
    target: String,
    selector: String,
    copies: Store<ConfigMap>,
    /// The `value` every source holds now.
    generation: usize,
}

/// `objects` sources in `namespaces` namespaces, one target namespace; each
/// mirror in turn, from the same state (sources without the finalizer, no
/// copies):
///
/// * **first sync**: from starting the mirror's process until every copy
///   exists (start-up, watches and the first reconcile of every source);
/// * **steady**: every source's data is changed (`WRITES_AT_ONCE`
///   patches at a time), and timed until every copy holds the new data:
///   sources brought up to date per second;
/// * **requests**: the API server's own `apiserver_request_total` (every
///   verb but WATCH, on ConfigMaps, Namespaces and Events) before and after
///   each phase, once the mirror is quiet; nothing else runs on this
///   control plane but the controller manager, and the benchmark's own
///   patches are subtracted. Per source, and per reconcile as each side
///   counts its reconciles (kube-runtime and the host do not trigger the
///   same reconciles: the host adds the finalizer itself, kube-runtime's
///   `finalizer` adds it in a reconcile of its own);
/// * **memory**: each process's peak RSS over both phases (the plugin's
///   compile cache is warm, as a restarted replica's is); per 1 000
///   sources, what that peak adds to the same process's RSS with nothing
///   to mirror (started before any source exists, read `SETTLE` after).
async fn mirror_at_scale(home: &Home, objects: usize, namespaces: usize) -> anyhow::Result<()> {
    let cluster = home.cluster;
    let patience = Duration::from_secs(120 + objects as u64 / 5);
    // Fill the compile cache before any source exists (the mirror watches
    // every source, whatever its target selector).
    let cache = home.dir().join("mirror-cache");
    let warm = home.manifest(
        "scale-mirror-warm",
        &plugin_component("configmap-mirror"),
        json!({"namespaceSelector": "leasehold.dev/scale-target=none"}),
    )?;
    stop(
        home.replica("scale-mirror-warm", std::slice::from_ref(&warm), &cache)
            .await?,
    )
    .await?;
    // Each side's memory with nothing to mirror: what the objects add is
    // measured from there.
    let idle_plugin = home.replica("scale-mirror-idle", &[warm], &cache).await?;
    tokio::time::sleep(SETTLE).await;
    let mut idle = BTreeMap::new();
    idle.insert("plugin", idle_plugin.memory()?);
    stop(idle_plugin).await?;
    let idle_native = native(home, "leasehold.dev/scale-target=none")?;
    tokio::time::sleep(SETTLE).await;
    idle.insert("native", idle_native.memory()?);
    idle_native.stop().await?;

    let mut workload = Workload::create(cluster, objects, namespaces).await?;
    let manifest = home.manifest(
        "scale-mirror",
        &plugin_component("configmap-mirror"),
        json!({"namespaceSelector": workload.selector}),
    )?;
    println!("config scale_objects {objects} count");
    println!("config scale_namespaces {namespaces} count");
    println!("config scale_concurrency {CONCURRENCY} count");

    let mut measured = BTreeMap::new();
    for contender in [Contender::Native, Contender::Plugin] {
        let before = requests(cluster).await?;
        let started = Instant::now();
        let running = match contender {
            Contender::Native => native(home, &workload.selector)?,
            Contender::Plugin => Running::Plugin(Box::new(
                home.replica("scale-mirror", std::slice::from_ref(&manifest), &cache)
                    .await?,
            )),
        };
        let outcome = async {
            workload.all_copied(patience).await?;
            let first_sync = started.elapsed();
            let first_reconciles = running.quiet().await?;
            let middle = requests(cluster).await?;
            eprintln!(
                "{}: first-sync requests by verb and resource: {:?}",
                contender.name(),
                breakdown(&before, &middle)
            );

            let steady_started = Instant::now();
            let served_before = served(cluster).await?;
            let reconciling_before = running.reconciling().await?;
            workload.touch_all().await?;
            workload.all_copied(patience).await?;
            let steady = steady_started.elapsed();
            let reconciles = running.quiet().await?;
            let after = requests(cluster).await?;
            let served_after = served(cluster).await?;
            let reconciling = running.reconciling().await?;
            where_the_time_went(
                contender.name(),
                (&served_before, &served_after),
                reconciling_before.zip(reconciling),
            );
            eprintln!(
                "{}: steady-phase requests by verb and resource: {:?}",
                contender.name(),
                breakdown(&middle, &after)
            );
            anyhow::Ok(Measured {
                first_sync,
                first_requests: mirror_requests(&before, &middle),
                first_reconciles,
                steady,
                steady_requests: mirror_requests(&middle, &after) - objects as f64,
                steady_reconciles: reconciles - first_reconciles,
                memory: running.memory()?,
                idle: idle[contender.name()],
            })
        }
        .await
        .map_err(|error| error.context(running.log()))?;
        running.stop().await?;
        eprintln!(
            "{}: first sync {:.1} s, steady {:.1} s",
            contender.name(),
            outcome.first_sync.as_secs_f64(),
            outcome.steady.as_secs_f64()
        );
        measured.insert(contender.name(), outcome);
        workload.reset(patience).await?;
    }
    workload.remove().await?;

    for (name, memory) in &idle {
        println!(
            "bench scale_rss_idle_{name} {:.2} MiB",
            mib(memory.resident)
        );
    }
    let figures: [Figure; 9] = [
        ("scale_first_sync", "s", |m, _| m.first_sync.as_secs_f64()),
        ("scale_first_requests_per_source", "count", |m, n| {
            m.first_requests / n as f64
        }),
        ("scale_first_reconciles", "count", |m, _| m.first_reconciles),
        ("scale_reconciles_per_s", "1/s", |m, n| {
            n as f64 / m.steady.as_secs_f64()
        }),
        ("scale_requests_per_source", "count", |m, n| {
            m.steady_requests / n as f64
        }),
        ("scale_steady_reconciles", "count", |m, _| {
            m.steady_reconciles
        }),
        ("scale_requests_per_reconcile", "count", |m, _| {
            m.steady_requests / m.steady_reconciles.max(1.0)
        }),
        ("scale_rss_peak", "MiB", |m, _| mib(m.memory.peak)),
        ("scale_rss_per_1k_objects", "MiB", |m, n| {
            (mib(m.memory.peak) - mib(m.idle.resident)) / (n as f64 / 1000.0)
        }),
    ];
    for (name, unit, figure) in figures {
        let native = figure(&measured["native"], objects);
        let plugin = figure(&measured["plugin"], objects);
        println!("bench {name}_native {native:.2} {unit}");
        println!("bench {name}_plugin {plugin:.2} {unit}");
        println!("bench {name}_ratio {:.2} ratio", plugin / native);
    }
    println!("target scale_reconciles_per_s_ratio 0.9 ratio");
    println!("target scale_requests_per_source_ratio 1.0 ratio");
    println!("target scale_requests_per_reconcile_ratio 1.0 ratio");
    println!("target scale_rss_peak_ratio 1.5 ratio");
    Ok(())
}

/// Starts the `native-mirror` process as the plugin's ServiceAccount.
fn native(home: &Home, selector: &str) -> anyhow::Result<Running> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_native-mirror"))
        .arg(selector)
        .arg(CONCURRENCY.to_string())
        .arg(home.user())
        .env("KUBECONFIG", home.cluster.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting native-mirror")?;
    let reconciles = Arc::new(AtomicU64::new(0));
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("piped stdout")?).lines();
    let counted = reconciles.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(Ok(n)) = line.strip_prefix("reconciles ").map(str::parse) {
                counted.store(n, Ordering::Relaxed);
            }
        }
    });
    Ok(Running::Native { child, reconciles })
}

impl Workload {
    async fn create(
        cluster: &TestCluster,
        objects: usize,
        namespaces: usize,
    ) -> anyhow::Result<Self> {
        let admin = cluster.client()?;
        let token = unique_name("scale-target");
        let selector = format!("leasehold.dev/scale-target={token}");
        let target = labelled_namespace(&admin, ("leasehold.dev/scale-target", &token)).await?;
        let source_namespaces: Vec<String> = futures::stream::iter(0..namespaces)
            .map(|_| cluster.namespace("scale-source"))
            .buffered(8)
            .try_collect()
            .await?;
        // Copies are named after their sources, and all share one target
        // namespace: source names are unique across namespaces.
        let sources: Vec<(String, String)> = (0..objects)
            .map(|i| {
                (
                    source_namespaces[i % namespaces].clone(),
                    format!("source-{i}"),
                )
            })
            .collect();
        let began = Instant::now();
        futures::stream::iter(&sources)
            .map(|(namespace, name)| {
                let api = Api::<ConfigMap>::namespaced(admin.clone(), namespace);
                async move {
                    api.create(
                        &PostParams::default(),
                        &config_map(name, &[SOURCE_LABEL], &[("value", "0")]),
                    )
                    .await
                }
            })
            .buffer_unordered(WRITES_AT_ONCE)
            .try_collect::<Vec<_>>()
            .await?;
        eprintln!(
            "created {objects} sources in {namespaces} namespaces in {:.1} s",
            began.elapsed().as_secs_f64()
        );

        let (copies, writer) = reflector::store();
        let watch = watcher(
            Api::<ConfigMap>::namespaced(admin.clone(), &target),
            watcher::Config::default().labels(SOURCE_NAME),
        );
        tokio::spawn(
            reflector::reflector(writer, watch)
                .default_backoff()
                .for_each(|_| async {}),
        );
        copies.wait_until_ready().await?;
        Ok(Self {
            admin,
            sources,
            source_namespaces,
            target,
            selector,
            copies,
            generation: 0,
        })
    }

    /// Copies that hold the sources' current value.
    fn current_copies(&self) -> usize {
        let value = self.generation.to_string();
        self.copies
            .state()
            .iter()
            .filter(|copy| {
                copy.data
                    .as_ref()
                    .and_then(|data| data.get("value"))
                    .is_some_and(|held| *held == value)
            })
            .count()
    }

    async fn all_copied(&self, patience: Duration) -> anyhow::Result<()> {
        let what = format!("{} up-to-date copies", self.sources.len());
        eventually(patience, &what, || async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            (self.current_copies() == self.sources.len()).then_some(())
        })
        .await
        .with_context(|| format!("{} of them", self.current_copies()))
    }

    /// Patches `patch` into every source, `WRITES_AT_ONCE` at a time.
    async fn patch_all(&self, patch: serde_json::Value) -> anyhow::Result<()> {
        futures::stream::iter(&self.sources)
            .map(|(namespace, name)| {
                let api = Api::<ConfigMap>::namespaced(self.admin.clone(), namespace);
                let patch = patch.clone();
                async move {
                    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                }
            })
            .buffer_unordered(WRITES_AT_ONCE)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    /// Gives every source a new value.
    async fn touch_all(&mut self) -> anyhow::Result<()> {
        self.generation += 1;
        self.patch_all(json!({"data": {"value": self.generation.to_string()}}))
            .await
    }

    /// Back to sources without the finalizer and no copies, with no mirror
    /// running.
    async fn reset(&self, patience: Duration) -> anyhow::Result<()> {
        self.patch_all(serde_json::from_str(FINALIZER_FREE)?)
            .await?;
        Api::<ConfigMap>::namespaced(self.admin.clone(), &self.target)
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(SOURCE_NAME),
            )
            .await?;
        eventually(patience, "the copies to be deleted", || async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.copies.state().is_empty().then_some(())
        })
        .await
    }

    /// Deletes the namespaces (the controller manager deletes what is in
    /// them); the sources carry no finalizer after [`reset`](Self::reset).
    async fn remove(self) -> anyhow::Result<()> {
        let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.admin.clone());
        for namespace in self.source_namespaces.iter().chain([&self.target]) {
            namespaces
                .delete(namespace, &DeleteParams::default())
                .await?;
        }
        Ok(())
    }
}

/// `apiserver_request_total` by (verb, resource), from the API server.
async fn requests(cluster: &TestCluster) -> anyhow::Result<BTreeMap<(String, String), f64>> {
    let metrics = cluster.apiserver_metrics().await?;
    let mut totals = BTreeMap::new();
    for (labels, value) in leasehold_tests::fixtures::samples(&metrics, "apiserver_request_total") {
        let key = (
            labels.get("verb").cloned().unwrap_or_default(),
            labels.get("resource").cloned().unwrap_or_default(),
        );
        *totals.entry(key).or_default() += value;
    }
    Ok(totals)
}

/// Says (on stderr) the API server's mean time per ConfigMap request by
/// verb between two readings of [`served`], and the mirror's mean
/// reconcile between two of [`Running::reconciling`], where it says.
fn where_the_time_went(
    name: &str,
    (before, after): (&Served, &Served),
    reconciling: Option<((f64, f64), (f64, f64))>,
) {
    for (verb, (seconds, count)) in after {
        let (seconds_before, count_before) = before.get(verb).copied().unwrap_or_default();
        if count - count_before > 0.0 {
            eprintln!(
                "{name}: steady phase, API server's mean {verb} on configmaps {:.2} ms over {}",
                (seconds - seconds_before) / (count - count_before) * 1e3,
                count - count_before
            );
        }
    }
    if let Some((before, after)) = reconciling {
        eprintln!(
            "{name}: steady phase, mean reconcile {:.2} ms",
            (after.0 - before.0) / (after.1 - before.1).max(1.0) * 1e3
        );
    }
}

/// Seconds and count of requests, by verb.
type Served = BTreeMap<String, (f64, f64)>;

/// The API server's own time serving ConfigMap requests, by verb: seconds
/// and count (`apiserver_request_duration_seconds`).
async fn served(cluster: &TestCluster) -> anyhow::Result<Served> {
    let metrics = cluster.apiserver_metrics().await?;
    let by_verb = |part: &str| {
        let name = format!("apiserver_request_duration_seconds_{part}");
        let mut totals: BTreeMap<String, f64> = BTreeMap::new();
        for (labels, value) in leasehold_tests::fixtures::samples(&metrics, &name) {
            let configmaps = labels.get("resource").map(String::as_str) == Some("configmaps")
                && labels.get("subresource").is_none_or(String::is_empty);
            if configmaps {
                *totals
                    .entry(labels.get("verb").cloned().unwrap_or_default())
                    .or_default() += value;
            }
        }
        totals
    };
    let counts = by_verb("count");
    Ok(by_verb("sum")
        .into_iter()
        .map(|(verb, seconds)| {
            let count = counts.get(&verb).copied().unwrap_or_default();
            (verb, (seconds, count))
        })
        .collect())
}

/// What changed between two readings of [`requests`], where anything did.
fn breakdown(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(key, value)| {
            let delta = value - before.get(key).copied().unwrap_or_default();
            (format!("{}:{}", key.0, key.1), delta)
        })
        .filter(|(_, delta)| *delta > 0.0)
        .collect()
}

/// The mirrors' requests between two readings: every verb but WATCH (a
/// watch is counted when it ends) on `MIRROR_RESOURCES`.
fn mirror_requests(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
) -> f64 {
    after
        .iter()
        .filter(|((verb, resource), _)| {
            verb != "WATCH" && MIRROR_RESOURCES.contains(&resource.as_str())
        })
        .map(|(key, value)| value - before.get(key).copied().unwrap_or_default())
        .sum()
}

// === many plugins over replicas ===

/// `plugins` writing plugins (the misbehaving fixture in `write` mode,
/// each on a ConfigMap of its own, writing every `WRITE_EVERY`) in a
/// [`Fleet`] with spread placement over `SHARDS` shards and fencing: first
/// on one replica, then on `SPREAD_REPLICAS` once the two that join have
/// taken their shares by handover. Each replica's reconciles are counted
/// over `window` from its own `leasehold_plugin_reconciles_total`, and its
/// RSS read at the end of the window. Then one replica is SIGKILLed and
/// the time taken until every plugin it ran has reconciled on another
/// replica is measured (its shard Leases must expire first).
async fn spread(plugins: usize, window: Duration) -> anyhow::Result<()> {
    let mut setup = Setup::spread(1, SHARDS);
    setup.writers = Writers::Named((0..plugins).map(|i| format!("p{i}")).collect());
    setup.write_every = WRITE_EVERY;
    let mut fleet = Fleet::start_with(setup).await?;
    println!("config scale_spread_plugins {plugins} count");
    println!("config scale_spread_shards {SHARDS} count");
    println!("config scale_spread_window {} s", window.as_secs());

    let one = reconciles_over(&fleet, window).await?;
    let total: f64 = one.values().sum();
    println!(
        "bench scale_spread_1_reconciles_per_s {:.1} 1/s",
        total / window.as_secs_f64()
    );
    println!(
        "bench scale_spread_1_rss {:.1} MiB",
        mib(fleet.memory("replica-0")?.resident)
    );

    for _ in 1..SPREAD_REPLICAS {
        fleet.add_replica().await?;
    }
    let identities = fleet.identities();
    // Few plugins may share fewer shards than there are replicas.
    let used_shards: std::collections::BTreeSet<String> = fleet
        .writers
        .iter()
        .map(|writer| fleet.lease_of_writer(writer))
        .collect();
    let leading = identities.len().min(used_shards.len());
    eventually(
        Duration::from_secs(120),
        "every replica to lead its share",
        || async {
            let shares = fleet.shares().await.ok()?;
            let running_on = fleet.running_on().await.ok()?;
            let holders = fleet.holders().await.ok()?;
            (shares.len() == leading
                && shares.values().sum::<usize>() == plugins
                && running_on == holders)
                .then_some(())
        },
    )
    .await
    .with_context(|| fleet.logs())?;
    let shares = fleet.shares().await?;
    eprintln!("plugins per replica by their shard Leases: {shares:?}");

    let three = reconciles_over(&fleet, window).await?;
    let total: f64 = three.values().sum();
    println!(
        "bench scale_spread_{SPREAD_REPLICAS}_reconciles_per_s {:.1} 1/s",
        total / window.as_secs_f64()
    );
    let fair = 1.0 / identities.len() as f64;
    let mut deviation: f64 = 0.0;
    for (index, identity) in identities.iter().enumerate() {
        let share = three.get(identity).copied().unwrap_or_default() / total.max(1.0);
        deviation = deviation.max((share - fair).abs() / fair);
        println!("bench scale_spread_share_{index} {:.1} %", share * 100.0);
        println!(
            "bench scale_spread_rss_{index} {:.1} MiB",
            mib(fleet.memory(identity)?.resident)
        );
    }
    println!(
        "bench scale_spread_share_deviation_max {:.1} %",
        deviation * 100.0
    );
    println!("target scale_spread_share_deviation_max 20 %");

    // The victim: the replica running the most plugins.
    let victim = shares
        .iter()
        .max_by_key(|(_, count)| **count)
        .map(|(identity, _)| identity.clone())
        .context("nobody runs a plugin")?;
    let moved: Vec<String> = fleet
        .holders()
        .await?
        .into_iter()
        .filter(|(_, holder)| holder.as_deref() == Some(victim.as_str()))
        .map(|(writer, _)| writer)
        .collect();
    anyhow::ensure!(!moved.is_empty(), "{victim} runs no plugin");
    let survivors: Vec<String> = identities.into_iter().filter(|i| *i != victim).collect();
    let before = per_plugin_reconciles(&fleet, &survivors).await?;
    let killed = Instant::now();
    fleet.signal(&victim, Signal::SIGKILL)?;
    eventually(
        Duration::from_secs(120),
        "the killed replica's plugins to reconcile elsewhere",
        || async {
            let now = per_plugin_reconciles(&fleet, &survivors).await.ok()?;
            moved
                .iter()
                .all(|plugin| now.get(plugin) > before.get(plugin).or(Some(&0.0)))
                .then_some(())
        },
    )
    .await
    .with_context(|| fleet.logs())?;
    let elapsed = killed.elapsed();
    let lease = ReplicaSettings::fast("", "").lease_duration;
    println!(
        "config scale_spread_lease_duration {} ms",
        lease.as_millis()
    );
    println!("config scale_spread_moved_plugins {} count", moved.len());
    println!(
        "bench scale_spread_failover {:.0} ms",
        elapsed.as_secs_f64() * 1e3
    );
    println!(
        "bench scale_spread_failover_over_lease {:.0} ms",
        (elapsed.as_secs_f64() - lease.as_secs_f64()) * 1e3
    );
    println!("target scale_spread_failover_over_lease 500 ms");
    Ok(())
}

/// Each replica's plugin reconciles over `window`.
async fn reconciles_over(fleet: &Fleet, window: Duration) -> anyhow::Result<BTreeMap<String, f64>> {
    let identities = fleet.identities();
    let count = || async {
        let mut counts = BTreeMap::new();
        for identity in &identities {
            let (_, metrics) = fleet.replica_get(identity, "/metrics").await?;
            let total = sum_of(&metrics, "leasehold_plugin_reconciles_total", |_| true);
            counts.insert(identity.clone(), total);
        }
        anyhow::Ok(counts)
    };
    let before = count().await?;
    tokio::time::sleep(window).await;
    let after = count().await?;
    Ok(after
        .into_iter()
        .map(|(identity, total)| {
            let delta = total - before.get(&identity).copied().unwrap_or_default();
            (identity, delta)
        })
        .collect())
}

/// Reconciles per plugin (by its name in the fleet's namespace) summed over
/// `replicas`.
async fn per_plugin_reconciles(
    fleet: &Fleet,
    replicas: &[String],
) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut counts = BTreeMap::new();
    for identity in replicas {
        let (_, metrics) = fleet.replica_get(identity, "/metrics").await?;
        for (labels, value) in
            leasehold_tests::fixtures::samples(&metrics, "leasehold_plugin_reconciles_total")
        {
            let plugin = labels.get("plugin").cloned().unwrap_or_default();
            let name = plugin.rsplit('/').next().unwrap_or_default().to_owned();
            *counts.entry(name).or_default() += value;
        }
    }
    Ok(counts)
}
