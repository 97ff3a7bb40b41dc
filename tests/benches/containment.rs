//! `make bench-containment`: a well-behaved plugin's reconcile latency
//! alone and beside each abusive plugin, the API request rate each abuser
//! reaches, and the host's peak memory through a soak of every abuse at
//! once, against the real control plane.
//!
//! One replica runs two Plugins of the misbehaving fixture: `good` (work
//! in mode `ok`: create one ConfigMap) and `abuser`, with the default API
//! budget (10 requests/s, bursts of 20; requeues no sooner than 1 s). The
//! abuses: `requeue-now` (requeue at 0 ms), `calls` (a tight loop of
//! `list`), `huge` (a 50 MB object). A good reconcile is timed from
//! creating its ConfigMap to its `-handled` copy appearing in a watch.
//! Baseline, in the same run: the good plugin alone.
//!
//! `LEASEHOLD_BENCH_TRIALS` good reconciles per phase (default 30);
//! `LEASEHOLD_BENCH_SOAK_SECS` of all abuses at once (default 60).

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;
use leasehold::plugins::Plugin;
use leasehold_tests::fixtures::{
    apply_plugin, bench_trials, config_map, load_average, percentile, plugin_namespace,
    store_component,
};
use leasehold_tests::{
    ReplicaProcess, ReplicaSettings, TestCluster, eventually, plugin_component, unique_name,
};
use serde_json::json;

const DEFAULT_TRIALS: usize = 30;
const DEFAULT_SOAK: u64 = 60;
const PATIENCE: Duration = Duration::from_secs(120);
/// The abuser's budget (the defaults), the rate target.
const ABUSER_QPS: f64 = 10.0;
/// Each abuse is stopped and drained before the next starts (see `stop`).
const ABUSES: [(&str, &[(&str, &str)]); 3] = [
    ("huge", &[("bytes", "52428800")]),
    ("requeue-now", &[]),
    ("calls", &[("calls", "1000")]),
];

struct Bench {
    config_maps: Api<ConfigMap>,
    replica: ReplicaProcess,
    /// The abuser's `plugin` label: `namespace/abuser`.
    abuser: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let trials = bench_trials(DEFAULT_TRIALS)?;
    let soak = std::env::var("LEASEHOLD_BENCH_SOAK_SECS")
        .ok()
        .map(|secs| secs.parse())
        .transpose()?
        .unwrap_or(DEFAULT_SOAK);
    let cluster = TestCluster::shared().await;
    let admin = cluster.client()?;
    let (namespace, account) = plugin_namespace(
        cluster,
        "bench-containment",
        &["get", "list", "watch", "create"],
    )
    .await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
    let plugins: Api<Plugin> = Api::namespaced(admin, &namespace);
    store_component(
        &config_maps,
        "fixture",
        std::fs::read(plugin_component("misbehaving"))?,
    )
    .await?;
    for (name, limits) in [
        ("good", json!({})),
        // Room for the 50 MB string to reach the host's bound.
        ("abuser", json!({"memory": "256Mi", "timeout": "5s"})),
    ] {
        let spec = json!({
            "source": {"configMap": {"name": "fixture"}},
            "serviceAccountName": account,
            "config": {"selector": format!("leasehold.dev/misbehave={name}")},
            "limits": limits,
        });
        apply_plugin(&plugins, name, spec).await?;
    }
    let workdir = tempfile::tempdir()?;
    let replica = ReplicaProcess::start(
        "containment",
        &ReplicaSettings::fast(&namespace, "leasehold"),
        cluster.kubeconfig(),
        workdir.path(),
    )
    .await?;
    let bench = Bench {
        config_maps,
        replica,
        abuser: format!("{namespace}/abuser"),
    };
    eprintln!("containment: {trials} good reconciles per phase, soak {soak} s");
    eprintln!("load average at start: {}", load_average());
    println!("config containment_abuser_api_qps {ABUSER_QPS} req/s");
    println!("config containment_trials {trials}");

    bench.good_reconcile().await?; // warm-up: both controllers running
    let alone = bench.latencies(trials).await?;
    let alone_p99 = percentile(&alone, 0.99);
    println!(
        "bench containment_alone_p50 {:.1} ms",
        percentile(&alone, 0.5)
    );
    println!("bench containment_alone_p99 {alone_p99:.1} ms");
    for (mode, data) in ABUSES {
        let abuse = bench.abuse(mode, data).await?;
        let (requests, reconciles) = (
            bench.abuser_requests().await?,
            bench.abuser_reconciles().await?,
        );
        let started = Instant::now();
        let beside = bench.latencies(trials).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let rps = (bench.abuser_requests().await? - requests) / elapsed;
        let reconciles_per_s = (bench.abuser_reconciles().await? - reconciles) / elapsed;
        bench.stop(&abuse).await?;
        let p99 = percentile(&beside, 0.99);
        println!(
            "bench containment_{mode}_p50 {:.1} ms",
            percentile(&beside, 0.5)
        );
        println!("bench containment_{mode}_p99 {p99:.1} ms");
        println!(
            "bench containment_{mode}_p99_ratio {:.2} ratio",
            p99 / alone_p99
        );
        println!("bench containment_{mode}_api_rps {rps:.1} req/s");
        println!("bench containment_{mode}_reconciles_per_s {reconciles_per_s:.1} 1/s");
    }
    println!("target containment_p99_ratio 2 ratio");
    println!("target containment_api_rps {ABUSER_QPS} req/s");
    println!("target containment_requeue-now_reconciles_per_s 1 1/s");

    // Every abuse at once, then the host's peak memory.
    let mut soaking = Vec::new();
    for (mode, data) in ABUSES {
        soaking.push(bench.abuse(mode, data).await?);
    }
    tokio::time::sleep(Duration::from_secs(soak)).await;
    bench.good_reconcile().await?;
    let peak = bench.replica.peak_rss()? as f64 / f64::from(1 << 20);
    println!("bench containment_peak_rss_after_{soak}s_of_abuse {peak:.1} MiB");
    for abuse in &soaking {
        bench.stop(abuse).await?;
    }
    eprintln!("load average at end: {}", load_average());
    Ok(())
}

impl Bench {
    /// `trials` good reconciles, one after the other, in milliseconds.
    async fn latencies(&self, trials: usize) -> anyhow::Result<Vec<f64>> {
        let mut samples = Vec::with_capacity(trials);
        for _ in 0..trials {
            samples.push(self.good_reconcile().await?.as_secs_f64() * 1e3);
        }
        Ok(samples)
    }

    /// Creates a good work item and times it to its `-handled` copy.
    async fn good_reconcile(&self) -> anyhow::Result<Duration> {
        let name = unique_name("good");
        let handled = format!("{name}-handled");
        let config = watcher::Config::default().fields(&format!("metadata.name={handled}"));
        let mut events = watcher::watcher(self.config_maps.clone(), config).boxed();
        while let Some(event) = events.next().await {
            if matches!(event?, watcher::Event::InitDone) {
                break;
            }
        }
        let started = Instant::now();
        self.config_maps
            .create(
                &PostParams::default(),
                &config_map(
                    &name,
                    &[("leasehold.dev/misbehave", "good")],
                    &[("mode", "ok")],
                ),
            )
            .await?;
        let seen = tokio::time::timeout(PATIENCE, async {
            while let Some(event) = events.next().await {
                if let watcher::Event::Apply(_) = event? {
                    return Ok(started.elapsed());
                }
            }
            anyhow::bail!("the watch ended")
        })
        .await;
        let elapsed =
            seen.map_err(|_| anyhow::anyhow!("{name} was never handled\n{}", self.replica.log()))??;
        self.config_maps
            .delete(&name, &DeleteParams::default())
            .await?;
        self.config_maps
            .delete(&handled, &DeleteParams::default())
            .await?;
        Ok(elapsed)
    }

    /// Starts the abuser on one work item in `mode`; waits until it bites.
    async fn abuse(&self, mode: &str, data: &[(&str, &str)]) -> anyhow::Result<String> {
        let name = unique_name(mode);
        let mut fields = vec![("mode", mode)];
        fields.extend_from_slice(data);
        self.config_maps
            .create(
                &PostParams::default(),
                &config_map(&name, &[("leasehold.dev/misbehave", "abuser")], &fields),
            )
            .await?;
        let reconciled = self.abuser_reconciles().await?;
        eventually(PATIENCE, &format!("the {mode} abuser to run"), || async {
            (self.abuser_reconciles().await.ok()? > reconciled).then_some(())
        })
        .await?;
        Ok(name)
    }

    /// Deletes the abuser's work item and waits until it is quiet (no new
    /// reconcile for two seconds): an abuse's tail (an in-flight reconcile,
    /// its retries) must not be measured as the next one's.
    async fn stop(&self, abuse: &str) -> anyhow::Result<()> {
        self.config_maps
            .delete(abuse, &DeleteParams::default())
            .await?;
        let quiet = Duration::from_secs(2);
        let mut seen = self.abuser_reconciles().await?;
        let started = Instant::now();
        loop {
            tokio::time::sleep(quiet).await;
            let now = self.abuser_reconciles().await?;
            if now == seen || started.elapsed() > PATIENCE {
                return Ok(());
            }
            seen = now;
        }
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.replica.get("/metrics").await?.1)
    }

    /// The sum of the abuser's samples of `metric`, whatever their other labels.
    async fn abuser_total(&self, metric: &str) -> anyhow::Result<f64> {
        let metrics = self.metrics().await?;
        let label = format!("plugin=\"{}\"", self.abuser);
        Ok(metrics
            .lines()
            .filter(|line| line.starts_with(&format!("{metric}{{")) && line.contains(&label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    async fn abuser_requests(&self) -> anyhow::Result<f64> {
        self.abuser_total("leasehold_plugin_api_requests_total")
            .await
    }

    async fn abuser_reconciles(&self) -> anyhow::Result<f64> {
        self.abuser_total("leasehold_plugin_reconciles_total").await
    }
}
