//! `make bench-runtime`: what running a controller as a wasm component
//! costs, measured in release builds against the real control plane, with
//! each target and baseline printed beside the figure it applies to.
//!
//! * **Compile vs cached load**, per example component: a fresh cache
//!   directory makes `Runtime::compile` compile; a second `Runtime` on the
//!   same directory loads the result from wasmtime's cache, as a restarted
//!   replica does. Kubewarden recompiles every policy at restart, so a
//!   restart costs it the compile time.
//! * **Instantiation** (`Compiled::instantiate`: a fresh store with limits
//!   from the `InstancePre`, in a pooling-allocator slot), p50 and p99.
//! * **Fresh-instance reconcile of a 1 KB object**: instantiate, reconcile
//!   and drop, on the misbehaving fixture in `noop` mode: the guest decodes
//!   the 1 KB ConfigMap into its typed struct and returns without calling
//!   Kubernetes, so this is the host's whole per-reconcile overhead.
//! * **Warm host-call overhead**: one instance reconciles an object that
//!   makes N `config.get-config` calls, and one that makes none; the
//!   difference of the medians divided by N.
//! * **Timeout precision**: a spinning plugin with a 50 ms budget; how long
//!   past 50 ms it is stopped (Kubewarden's epoch ticks once a second).
//! * **The ConfigMap mirror, native vs plugin**, against the same API server
//!   in the same run: see [`race`].
//!
//! Prints `bench <name> <value> <unit>` lines for what it measured, and
//! `target`, `config` and `stated` lines, apart, for the goals, the host's
//! own settings and the figures others publish. `LEASEHOLD_BENCH_SOURCES`
//! (default 50) sets how many sources each mirror round creates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use leasehold::controllers::bridge::KubeBridge;
use leasehold::controllers::throttle::Unaccounted;
use leasehold::election::fence::Fence;
use leasehold::election::roles::{LeaderRole, LeaderRoles};
use leasehold::election::{self, Elector, LeaderGuard, LeaseClient, Status};
use leasehold::metrics::Metrics;
use leasehold::plugins::{Budget, ServiceAccount};
use leasehold::runtime::{EPOCH_TICK, HostContext, Limits, ObjectRef, Request, Runtime};
use leasehold_tests::fixtures::{
    config_map, grant, labelled_namespace, load_average, percentile, rule,
};
use leasehold_tests::{
    ReplicaProcess, ReplicaSettings, TestCluster, eventually, native_mirror, plugin_component,
    unique_name,
};
use nix::sys::signal::Signal;
use serde_json::json;
use std::num::NonZeroU32;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Fresh compiles per component (each takes seconds).
const COMPILES: usize = 3;
/// Cached loads per component.
const LOADS: usize = 5;
/// Samples of every per-call figure.
const SAMPLES: usize = 5_000;
/// Host calls in the "many calls" reconcile of the host-call figure.
const HOST_CALLS: u32 = 10_000;
/// Reconciles per side of the host-call figure.
const HOST_CALL_SAMPLES: usize = 200;
/// The budget given to a spinning plugin.
const SHORT_TIMEOUT: Duration = Duration::from_millis(50);
const TIMEOUT_TRIALS: usize = 20;
/// Rounds per contender in the mirror race, interleaved.
const ROUNDS: usize = 3;
/// Namespaces each source is copied into.
const TARGETS: usize = 3;
/// Sources per round unless `LEASEHOLD_BENCH_SOURCES` says otherwise.
const DEFAULT_SOURCES: usize = 50;
/// Reconciles at once, for both mirrors (the plugin's default limit).
const CONCURRENCY: u16 = 4;
/// Stated by Kubewarden's documentation, not measured here.
const KUBEWARDEN_EPOCH_TICK: Duration = Duration::from_secs(1);
const KUBEWARDEN_DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let sources = std::env::var("LEASEHOLD_BENCH_SOURCES")
        .ok()
        .map(|n| n.parse())
        .transpose()
        .context("LEASEHOLD_BENCH_SOURCES must be a number")?
        .unwrap_or(DEFAULT_SOURCES);
    let cluster = TestCluster::shared().await;
    // Per-call figures move with other load on the machine; say what it was.
    eprintln!("load average at start: {}", load_average());

    for crate_name in ["configmap-mirror", "greeter"] {
        compile_and_load(crate_name)?;
    }

    let (guard, stop_leading) = lead(cluster).await?;
    let calls = PerCall::new(cluster, guard).await?;
    for crate_name in ["configmap-mirror", "greeter"] {
        calls.instantiation(crate_name).await?;
    }
    println!("target runtime_instantiate_p50 15 us");
    calls.fresh_reconcile().await?;
    calls.host_calls().await?;
    calls.timeout_precision().await?;
    stop_leading.cancel();
    eprintln!(
        "load average after the per-call figures: {}",
        load_average()
    );

    race(cluster, sources).await
}

// === compile vs cached load ===

fn compile_and_load(crate_name: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(plugin_component(crate_name))?;
    let name = crate_name.replace('-', "_");
    let (mut compiles, mut loads) = (Vec::new(), Vec::new());
    for _ in 0..COMPILES {
        let cache = tempfile::tempdir()?;
        let cold = Runtime::new(Some(cache.path().to_owned()))?;
        compiles.push(ms(cold.compile(&bytes)?.compile_time));
        drop(cold);
        for _ in 0..LOADS.div_ceil(COMPILES) {
            let restarted = Runtime::new(Some(cache.path().to_owned()))?;
            loads.push(ms(restarted.compile(&bytes)?.compile_time));
        }
    }
    let (compile, load) = (percentile(&compiles, 0.5), percentile(&loads, 0.5));
    println!("bench runtime_compile_{name} {compile:.1} ms");
    println!("bench runtime_cached_load_{name} {load:.2} ms");
    // A host that recompiles at every restart, as Kubewarden does, pays the
    // compile time where Leasehold pays the cached load.
    println!(
        "bench runtime_restart_speedup_vs_recompile_{name} {:.0} ratio",
        compile / load
    );
    Ok(())
}

// === per-call costs ===

/// Makes this process the leader of a Lease of its own, for the guard every
/// `HostContext` carries (the figures below make no Kubernetes calls).
async fn lead(cluster: &TestCluster) -> anyhow::Result<(LeaderGuard, CancellationToken)> {
    struct HandOver(watch::Sender<Option<LeaderGuard>>);
    impl LeaderRole for HandOver {
        fn name(&self) -> &str {
            "bench"
        }
        fn lead(&self, guard: LeaderGuard) -> BoxFuture<'static, ()> {
            let sender = self.0.clone();
            Box::pin(async move {
                sender.send_replace(Some(guard.clone()));
                guard.lost().await;
            })
        }
    }

    let namespace = cluster.namespace("bench-runtime").await?;
    let config = election::Config {
        namespace: namespace.clone(),
        lease_name: "bench-runtime".into(),
        identity: unique_name("bench"),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
        fencing: false,
    };
    let leases = LeaseClient::new(
        cluster.client()?,
        &namespace,
        &config.lease_name,
        config.request_timeout(),
    );
    let elector = Elector::new(
        config,
        leases,
        watch::channel(Status::default()).0,
        Metrics::new().election,
    );
    let (sender, mut receiver) = watch::channel(None);
    let shutdown = CancellationToken::new();
    tokio::spawn(elector.run(LeaderRoles::new().with(HandOver(sender)), shutdown.clone()));
    let guard = receiver
        .wait_for(Option::is_some)
        .await?
        .clone()
        .context("leading")?;
    Ok((guard, shutdown))
}

/// One runtime (no cache: these figures start after loading) and the
/// context every instance gets.
struct PerCall {
    runtime: Runtime,
    context: HostContext,
}

impl PerCall {
    async fn new(cluster: &TestCluster, guard: LeaderGuard) -> anyhow::Result<Self> {
        // A budget no measured loop reaches: the benchmark measures the
        // runtime, not the throttle.
        let budget = Budget {
            qps: NonZeroU32::new(100_000).expect("non-zero"),
            burst: NonZeroU32::new(100_000).expect("non-zero"),
            ..Budget::default()
        };
        let bridge = KubeBridge::impersonating(
            cluster.config(),
            "bench",
            &ServiceAccount::new("default", "default"),
            "bench-runtime",
            Fence::new(guard),
            &budget,
            Arc::new(Unaccounted),
        )?;
        Ok(Self {
            runtime: Runtime::new(None)?,
            context: HostContext {
                backend: Arc::new(bridge),
                config: Arc::from("{}"),
                object: Some("bench/object".into()),
                allowed_hosts: Arc::default(),
            },
        })
    }

    async fn instantiation(&self, crate_name: &str) -> anyhow::Result<()> {
        let compiled = self
            .runtime
            .compile(&std::fs::read(plugin_component(crate_name))?)?;
        let limits = Limits::default();
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let started = Instant::now();
            let instance = compiled.instantiate(self.context.clone(), &limits).await?;
            samples.push(us(started.elapsed()));
            drop(instance);
        }
        let name = crate_name.replace('-', "_");
        println!(
            "bench runtime_instantiate_{name}_p50 {:.2} us",
            percentile(&samples, 0.5)
        );
        println!(
            "bench runtime_instantiate_{name}_p99 {:.2} us",
            percentile(&samples, 0.99)
        );
        Ok(())
    }

    async fn fresh_reconcile(&self) -> anyhow::Result<()> {
        let compiled = self
            .runtime
            .compile(&std::fs::read(plugin_component("misbehaving"))?)?;
        let limits = Limits::default();
        let request = request_of_size("noop", &[], 1024);
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let started = Instant::now();
            let mut instance = compiled.instantiate(self.context.clone(), &limits).await?;
            instance
                .reconcile(&request, false, limits.timeout)
                .await?
                .map_err(|error| anyhow::anyhow!(error.message))?;
            drop(instance);
            samples.push(us(started.elapsed()));
        }
        println!(
            "bench runtime_fresh_reconcile_1kb_p50 {:.2} us",
            percentile(&samples, 0.5)
        );
        println!(
            "bench runtime_fresh_reconcile_1kb_p99 {:.2} us",
            percentile(&samples, 0.99)
        );
        println!("target runtime_fresh_reconcile_1kb_p50 35 us");
        Ok(())
    }

    async fn host_calls(&self) -> anyhow::Result<()> {
        let compiled = self
            .runtime
            .compile(&std::fs::read(plugin_component("misbehaving"))?)?;
        let limits = Limits::default();
        let mut instance = compiled.instantiate(self.context.clone(), &limits).await?;
        let calls = HOST_CALLS.to_string();
        let none = request_of_size("config-calls", &[("calls", "0")], 0);
        let many = request_of_size("config-calls", &[("calls", &calls)], 0);
        let (mut without, mut with) = (Vec::new(), Vec::new());
        // Interleaved, so drift (frequency scaling, other load) hits both.
        for index in 0..HOST_CALL_SAMPLES + 10 {
            for (request, samples) in [(&none, &mut without), (&many, &mut with)] {
                let started = Instant::now();
                instance
                    .reconcile(request, false, limits.timeout)
                    .await?
                    .map_err(|error| anyhow::anyhow!(error.message))?;
                if index >= 10 {
                    samples.push(started.elapsed().as_secs_f64() * 1e9);
                }
            }
        }
        let per_call = (percentile(&with, 0.5) - percentile(&without, 0.5)) / f64::from(HOST_CALLS);
        println!("bench runtime_host_call_overhead {per_call:.0} ns");
        println!("target runtime_host_call_overhead 300 ns");
        Ok(())
    }

    async fn timeout_precision(&self) -> anyhow::Result<()> {
        let compiled = self
            .runtime
            .compile(&std::fs::read(plugin_component("misbehaving"))?)?;
        let limits = Limits {
            timeout: SHORT_TIMEOUT,
            ..Limits::default()
        };
        let request = request_of_size("loop", &[], 0);
        let mut overshoots = Vec::new();
        for _ in 0..TIMEOUT_TRIALS {
            let mut instance = compiled.instantiate(self.context.clone(), &limits).await?;
            let started = Instant::now();
            let outcome = instance.reconcile(&request, false, limits.timeout).await;
            anyhow::ensure!(outcome.is_err(), "a spinning plugin was not stopped");
            overshoots.push(ms(started.elapsed()) - ms(SHORT_TIMEOUT));
        }
        println!("config runtime_epoch_tick {:.0} ms", ms(EPOCH_TICK));
        println!(
            "stated kubewarden_epoch_tick {:.0} ms",
            ms(KUBEWARDEN_EPOCH_TICK)
        );
        println!(
            "bench runtime_timeout_overshoot_p50 {:.2} ms",
            percentile(&overshoots, 0.5)
        );
        println!(
            "bench runtime_timeout_overshoot_max {:.2} ms",
            percentile(&overshoots, 1.0)
        );
        println!(
            "config runtime_default_timeout {:.0} ms",
            ms(Limits::default().timeout)
        );
        println!(
            "stated kubewarden_default_timeout {:.0} ms",
            ms(KUBEWARDEN_DEFAULT_TIMEOUT)
        );
        Ok(())
    }
}

/// A reconcile request for a ConfigMap that the misbehaving fixture handles
/// in `mode`, padded so that its JSON is `size` bytes (when `size` is more
/// than the unpadded object).
fn request_of_size(mode: &str, data: &[(&str, &str)], size: usize) -> Request {
    let object = |padding: &str| {
        let mut object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "object",
                "namespace": "bench",
                "uid": "0b9f4a4e-6c39-4d7c-9a51-1d2b8f0a3c11",
                "resourceVersion": "123456",
                "creationTimestamp": "2025-01-01T00:00:00Z",
                "labels": {"leasehold.dev/misbehave": "bench"},
            },
            "data": {"mode": mode, "padding": padding},
        });
        for (key, value) in data {
            object["data"][*key] = json!(value);
        }
        object.to_string()
    };
    let unpadded = object("").len();
    let text = object(&"x".repeat(size.saturating_sub(unpadded)));
    Request {
        reference: ObjectRef {
            namespace: Some("bench".into()),
            name: "object".into(),
        },
        object: Some(text),
    }
}

// === the ConfigMap mirror, native vs plugin ===

/// Which mirror runs a round.
#[derive(Clone, Copy, Debug)]
enum Contender {
    /// [`native_mirror`] in this process, on kube-runtime.
    Native,
    /// The configmap-mirror plugin in a `leasehold run` process.
    Plugin,
}

/// A running mirror; stopped by [`Running::stop`].
enum Running {
    Native(tokio::task::JoinHandle<()>),
    Plugin(Box<ReplicaProcess>),
}

/// Both mirrors, one at a time, run as the same ServiceAccount with the same
/// concurrency and copy the same workload into the same `TARGETS`
/// namespaces. A round: start the mirror; mirror one warm-up source (so its
/// watches are synced and, for the plugin, the replica leads); then **the
/// timed part**: from just before `sources` labelled ConfigMaps are created
/// (16 requests at a time) until a poll (every 20 ms) finds all
/// `sources × TARGETS` copies. Then every source is deleted and the mirror's
/// finalizer removes the copies before it is stopped. Rounds alternate
/// between the contenders; the figure is sources mirrored per second, the
/// median over `ROUNDS`. Each source takes a reconcile that adds the
/// finalizer (done by the host for the plugin, by kube-runtime's `finalizer`
/// for the native mirror) and one that writes its copies, followed by no-op
/// reconciles triggered by the copies' own watch events.
async fn race(cluster: &TestCluster, sources: usize) -> anyhow::Result<()> {
    let admin = cluster.client()?;
    let home = cluster.namespace("bench-mirror").await?;
    let account = unique_name("mirror");
    let native_client = cluster.service_account_client(&home, &account).await?;
    let all = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let rules = vec![
        rule(&[""], &["configmaps"], &all),
        rule(&[""], &["namespaces"], &["get", "list", "watch"]),
        rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
    ];
    grant(&admin, &home, &account, rules).await?;
    let token = unique_name("bench-target");
    let selector = format!("leasehold.dev/mirror-target={token}");
    for _ in 0..TARGETS {
        labelled_namespace(&admin, ("leasehold.dev/mirror-target", &token)).await?;
    }
    let foreign = Api::<ConfigMap>::all(admin.clone())
        .list(&ListParams::default().labels("leasehold.dev/mirror=true"))
        .await?
        .items
        .len();
    eprintln!(
        "mirror race: {sources} sources × {TARGETS} namespaces, {ROUNDS} rounds each, concurrency {CONCURRENCY}; {foreign} sources already in the cluster"
    );
    let workdir = tempfile::Builder::new()
        .prefix("leasehold-bench")
        .tempdir()?;
    let manifest = workdir.path().join("configmap-mirror.json");
    std::fs::write(
        &manifest,
        serde_json::to_vec_pretty(&json!({
            "name": "configmap-mirror",
            "component": plugin_component("configmap-mirror"),
            "serviceAccount": format!("{home}/{account}"),
            "config": {"namespaceSelector": selector},
            // The native baseline has no client-side throttle either.
            "limits": {"concurrency": CONCURRENCY, "apiQPS": 1000, "apiBurst": 2000},
        }))?,
    )?;

    let (mut native, mut plugin) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for contender in [Contender::Native, Contender::Plugin] {
            let running = match contender {
                Contender::Native => {
                    let config = native_mirror::Config {
                        namespace_selector: selector.clone(),
                        concurrency: CONCURRENCY,
                    };
                    let mirror = native_mirror::run(native_client.clone(), config);
                    Running::Native(tokio::spawn(mirror.for_each(|_| async {})))
                }
                Contender::Plugin => {
                    let mut settings = ReplicaSettings::fast(&home, &format!("mirror-{round}"));
                    settings.extra_args = vec![
                        "--plugin".into(),
                        manifest.display().to_string(),
                        "--compile-cache".into(),
                        workdir.path().join("cache").display().to_string(),
                    ];
                    Running::Plugin(Box::new(
                        ReplicaProcess::start(
                            &format!("mirror-{round}"),
                            &settings,
                            cluster.kubeconfig(),
                            workdir.path(),
                        )
                        .await?,
                    ))
                }
            };
            let rate =
                mirror_round(cluster, &admin, sources)
                    .await
                    .map_err(|error| match &running {
                        Running::Plugin(replica) => error.context(replica.log()),
                        Running::Native(_) => error,
                    })?;
            eprintln!("round {round} {contender:?}: {rate:.1} sources/s");
            match contender {
                Contender::Native => native.push(rate),
                Contender::Plugin => plugin.push(rate),
            }
            running.stop().await?;
        }
    }
    let (native, plugin) = (percentile(&native, 0.5), percentile(&plugin, 0.5));
    println!("bench mirror_native_sources_per_s {native:.1} 1/s");
    println!("bench mirror_plugin_sources_per_s {plugin:.1} 1/s");
    println!(
        "bench mirror_plugin_over_native {:.2} ratio",
        plugin / native
    );
    println!("target mirror_plugin_over_native 0.80 ratio");
    Ok(())
}

impl Running {
    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Running::Native(task) => task.abort(),
            Running::Plugin(mut replica) => {
                replica.signal(Signal::SIGTERM)?;
                replica.wait(Duration::from_secs(20)).await?;
            }
        }
        Ok(())
    }
}

/// One round against whichever mirror runs now; returns sources mirrored
/// per second.
async fn mirror_round(cluster: &TestCluster, admin: &Client, count: usize) -> anyhow::Result<f64> {
    let patience = Duration::from_secs(120);
    let namespace = cluster.namespace("mirror-source").await?;
    let sources: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
    let copies_of_round = ListParams::default().labels(&format!(
        "mirror.leasehold.dev/source-namespace={namespace}"
    ));
    let all_copies = Api::<ConfigMap>::all(admin.clone());
    let copies = || async {
        all_copies
            .list_metadata(&copies_of_round)
            .await
            .ok()
            .map(|list| list.items.len())
    };

    sources
        .create(&PostParams::default(), &source("warm-up"))
        .await?;
    eventually(patience, "the warm-up source to be mirrored", || async {
        (copies().await? == TARGETS).then_some(())
    })
    .await?;

    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|index| {
            let sources = sources.clone();
            async move {
                sources
                    .create(&PostParams::default(), &source(&format!("source-{index}")))
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    eventually(patience, "every source to be mirrored", || async {
        (copies().await? == (count + 1) * TARGETS).then_some(())
    })
    .await?;
    let elapsed = started.elapsed();

    sources
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("leasehold.dev/mirror=true"),
        )
        .await?;
    eventually(patience, "the mirror to clean up", || async {
        // Only the sources: the control plane keeps kube-root-ca.crt in
        // every namespace.
        let left = sources
            .list_metadata(&ListParams::default().labels("leasehold.dev/mirror=true"))
            .await
            .ok()?;
        (left.items.is_empty() && copies().await? == 0).then_some(())
    })
    .await?;
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// A source for the mirror.
fn source(name: &str) -> ConfigMap {
    config_map(
        name,
        &[("leasehold.dev/mirror", "true")],
        &[("value", name)],
    )
}

// === statistics ===

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn us(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
