//! `make bench-admission`: what an admission plugin adds to a request, and
//! how many reviews one replica answers, against a native webhook in the
//! same run.
//!
//! One replica (HTTPS, self-signed for 127.0.0.1) runs the misbehaving
//! fixture as a Plugin with a validating webhook on ConfigMaps labelled for
//! it; the native baseline is an axum webhook making the same check (deny
//! when `data.admission` is `deny`). Then:
//!
//! 1. **Create latency through the real API server**, sequential creates
//!    of ConfigMaps reviewed by no webhook, by the native one, and by the
//!    plugin: p50 and p99 of each, and the plugin's added latency over the
//!    native one's (`admission_added_latency_ratio`, target ≤ 1.2); and
//!    the CPU each webhook's process used over those creates per review
//!    (`admission_cpu_per_review_*`), the replica's work after its answers
//!    and its idle ticking included.
//! 2. **Reviews per second, sent directly** to the replica's admission path
//!    and to the native webhook, by `LEASEHOLD_BENCH_CONNECTIONS` (32)
//!    concurrent clients for `LEASEHOLD_BENCH_SECONDS` (10) each (target
//!    ≥ 10 000/s per replica). The client shares the machine's two cores
//!    with the server it measures, for both.
//!
//! Creates per case: `LEASEHOLD_BENCH_TRIALS` (default 3000: the ratio of
//! two p50 differences moved by ±0.15 between runs with 300, and spread
//! over 1.16–1.26 in six runs with 1000 where seven with 3000 gave
//! 1.15–1.20, on one machine on one day).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use leasehold::plugins::Plugin;
use leasehold_tests::admission::{
    CASE_ORDERS, NativeWebhook, client_trusting, review_of, serving_certificate,
};
use leasehold_tests::fixtures::{
    apply_plugin, bench_trials, config_map, load_average, percentile, plugin_namespace,
    store_component, sum_of,
};
use leasehold_tests::{
    ReplicaProcess, ReplicaSettings, TestCluster, eventually, free_address, plugin_component,
};
use serde_json::json;

const DEFAULT_CREATES: usize = 3000;
const PATIENCE: Duration = Duration::from_secs(120);
const REVIEWED_BY: &str = "leasehold.dev/admission";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let creates = bench_trials(DEFAULT_CREATES)?;
    let seconds: u64 = env_or("LEASEHOLD_BENCH_SECONDS", 10)?;
    let connections: usize = env_or("LEASEHOLD_BENCH_CONNECTIONS", 32)?;
    let cluster = TestCluster::shared().await;
    let admin = cluster.client()?;
    let (namespace, account) =
        plugin_namespace(cluster, "bench-admission", &["get", "list", "watch"]).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
    store_component(
        &config_maps,
        "misbehaving-component",
        std::fs::read(plugin_component("misbehaving"))?,
    )
    .await?;
    let workdir = tempfile::tempdir()?;
    let (cert, key) = serving_certificate(workdir.path())?;
    let native = NativeWebhook::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_native-webhook")),
        &cert,
        &key,
    )
    .await?;

    let api = free_address()?;
    let mut settings = ReplicaSettings::fast(&namespace, "leasehold");
    settings.listen = Some(api);
    settings.extra_args = [
        "--tls-cert-file",
        &cert.display().to_string(),
        "--tls-private-key-file",
        &key.display().to_string(),
        "--admission-url",
        &format!("https://{api}"),
        "--admission-ca-file",
        &cert.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let replica = ReplicaProcess::start(
        "bench-admission",
        &settings,
        cluster.kubeconfig(),
        workdir.path(),
    )
    .await?;
    let rules = json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                        "resources": ["configmaps"]}]);
    let namespace_only = json!({"matchLabels": {"kubernetes.io/metadata.name": namespace}});
    let plugins: Api<Plugin> = Api::namespaced(admin.clone(), &namespace);
    apply_plugin(
        &plugins,
        "checker",
        json!({
            "source": {"configMap": {"name": "misbehaving-component"}},
            "serviceAccountName": account,
            "config": {"selector": "leasehold.dev/misbehave=never"},
            "admission": {"validating": {
                "rules": rules, "failurePolicy": "Fail",
                "namespaceSelector": namespace_only,
                "objectSelector": {"matchLabels": {REVIEWED_BY: "plugin"}},
            }},
        }),
    )
    .await?;
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(admin.clone());
    let native_config = format!("{namespace}.native.bench.leasehold.dev");
    let ca_bundle = base64_of(&std::fs::read(&cert)?)?;
    configurations
        .patch(
            &native_config,
            &PatchParams::apply("leasehold-bench").force(),
            &Patch::Apply(json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": native_config},
                "webhooks": [{
                    "name": "native.bench.leasehold.dev",
                    "clientConfig": {"url": native.url(), "caBundle": ca_bundle},
                    "rules": rules, "failurePolicy": "Fail", "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "namespaceSelector": namespace_only,
                    "objectSelector": {"matchLabels": {REVIEWED_BY: "native"}},
                }],
            })),
        )
        .await?;
    // Both webhooks in force: each denies what it should.
    for reviewer in ["native", "plugin"] {
        eventually(
            PATIENCE,
            &format!("the {reviewer} webhook in force"),
            || async {
                let denied = config_maps
                    .create(
                        &PostParams {
                            dry_run: true,
                            ..PostParams::default()
                        },
                        &config_map(
                            "probe",
                            &[(REVIEWED_BY, reviewer)],
                            &[("admission", "deny")],
                        ),
                    )
                    .await;
                matches!(denied, Err(kube::Error::Api(status)) if status.message.contains("denies"))
                    .then_some(())
            },
        )
        .await?;
    }
    eprintln!(
        "admission: {creates} creates per case; load average {}",
        load_average()
    );

    // Interleaved, one create of each case in turn: the API server's own
    // latency drifts over a run (etcd grows, GC runs) by more than a
    // webhook adds, and this way the drift falls on every case alike. The
    // order changes every round (see `CASE_ORDERS`), so what a case leaves
    // behind it (a webhook's work after its answer, on the same two cores)
    // falls on each other case alike too, not always on the one after it.
    let reviewers = ["none", "native", "plugin"];
    let client = client_trusting(&cert)?;
    let replica_metrics = format!("https://{api}/metrics");
    let processes = (&native, &replica);
    let before = Timings::read(cluster, &client, &replica_metrics, processes).await?;
    let mut millis = vec![Vec::with_capacity(creates); reviewers.len()];
    for n in 0..creates {
        for case in CASE_ORDERS[n % CASE_ORDERS.len()] {
            let reviewer = reviewers[case];
            let object = config_map(
                &format!("{reviewer}-{n}"),
                &[(REVIEWED_BY, reviewer)],
                &[("admission", "allow")],
            );
            let started = Instant::now();
            config_maps.create(&PostParams::default(), &object).await?;
            millis[case].push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let timings = Timings::read(cluster, &client, &replica_metrics, processes)
        .await?
        .since(&before);
    timings.tell();
    let mut p50 = Vec::new();
    for (reviewer, millis) in reviewers.iter().zip(&millis) {
        let (median, tail) = (percentile(millis, 0.5), percentile(millis, 0.99));
        println!("bench admission_create_p50_{reviewer} {median:.2} ms");
        println!("bench admission_create_p99_{reviewer} {tail:.2} ms");
        p50.push(median);
    }
    let (native_added, plugin_added) = (p50[1] - p50[0], p50[2] - p50[0]);
    println!("bench admission_added_p50_native {native_added:.2} ms");
    println!("bench admission_added_p50_plugin {plugin_added:.2} ms");
    println!(
        "bench admission_added_latency_ratio {:.2} ratio",
        plugin_added / native_added.max(0.01)
    );
    let [native_cpu, plugin_cpu] = timings.cpu_per_review();
    println!("bench admission_cpu_per_review_native {native_cpu:.3} ms");
    println!("bench admission_cpu_per_review_plugin {plugin_cpu:.3} ms");
    println!(
        "bench admission_cpu_per_review_ratio {:.2} ratio",
        plugin_cpu / native_cpu.max(0.001)
    );

    let body = Arc::new(serde_json::to_vec(&review_of(
        &namespace, "direct", "allow",
    ))?);
    let plugin_url = format!("https://{api}/admission/{namespace}/checker/validate");
    let mut rates = Vec::new();
    for (reviewer, url) in [("native", native.url()), ("plugin", plugin_url)] {
        let rate = reviews_per_second(&client, &url, &body, connections, seconds).await?;
        println!("bench admission_reviews_per_second_{reviewer} {rate:.0} reviews/s");
        rates.push(rate);
    }
    println!(
        "bench admission_reviews_per_second_ratio {:.2} ratio",
        rates[1] / rates[0].max(1.0)
    );
    configurations
        .delete(&native_config, &Default::default())
        .await?;
    Ok(())
}

/// Where a create's webhook time went, as the API server and the replica
/// measure it: sums and counts of their own histograms.
#[derive(Debug)]
struct Timings {
    /// The API server's calls to each webhook (`native`, `plugin`): seconds, calls.
    calls: [(f64, f64); 2],
    /// The replica's own time per review, from the plugin found to its answer.
    inside: (f64, f64),
    /// The CPU time, in seconds, of the native webhook's process and of the
    /// replica's: all of it, its work after each answer and its idle
    /// ticking included, as a replica's CPU request must cover.
    cpu: [f64; 2],
}

impl Timings {
    async fn read(
        cluster: &TestCluster,
        client: &reqwest::Client,
        replica_metrics: &str,
        (native, replica): (&NativeWebhook, &ReplicaProcess),
    ) -> anyhow::Result<Self> {
        let apiserver = cluster.apiserver_metrics().await?;
        let exposed = client.get(replica_metrics).send().await?.text().await?;
        let webhook = |native: bool, part: &str| {
            sum_of(
                &apiserver,
                &format!("apiserver_admission_webhook_admission_duration_seconds_{part}"),
                |labels| {
                    labels.get("operation").map(String::as_str) == Some("CREATE")
                        && labels
                            .get("name")
                            .is_some_and(|name| name.starts_with("native.") == native)
                },
            )
        };
        let inside = |part: &str| {
            sum_of(
                &exposed,
                &format!("leasehold_admission_review_duration_seconds_{part}"),
                |_| true,
            )
        };
        Ok(Self {
            calls: [
                (webhook(true, "sum"), webhook(true, "count")),
                (webhook(false, "sum"), webhook(false, "count")),
            ],
            inside: (inside("sum"), inside("count")),
            cpu: [
                native.cpu_time()?.as_secs_f64(),
                replica.cpu_time()?.as_secs_f64(),
            ],
        })
    }

    fn since(self, before: &Self) -> Self {
        let minus =
            |(sum, count): (f64, f64), (sum0, count0): (f64, f64)| (sum - sum0, count - count0);
        Self {
            calls: [
                minus(self.calls[0], before.calls[0]),
                minus(self.calls[1], before.calls[1]),
            ],
            inside: minus(self.inside, before.inside),
            cpu: [self.cpu[0] - before.cpu[0], self.cpu[1] - before.cpu[1]],
        }
    }

    /// Milliseconds of CPU each webhook's process used per call the API
    /// server made to it.
    fn cpu_per_review(&self) -> [f64; 2] {
        [0, 1].map(|webhook| self.cpu[webhook] * 1000.0 / self.calls[webhook].1.max(1.0))
    }

    /// On stderr: diagnostics, not figures.
    fn tell(&self) {
        let mean_ms = |(sum, count): (f64, f64)| sum * 1000.0 / count.max(1.0);
        eprintln!(
            "admission: the API server's mean call to each webhook: native {:.3} ms, plugin \
             {:.3} ms; the replica's own mean time per review {:.3} ms ({} reviews)",
            mean_ms(self.calls[0]),
            mean_ms(self.calls[1]),
            mean_ms(self.inside),
            self.inside.1
        );
    }
}

/// Reviews answered per second by `url`, `connections` at a time.
async fn reviews_per_second(
    client: &reqwest::Client,
    url: &str,
    body: &Arc<Vec<u8>>,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let answered = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (client, url, body, answered) = (
            client.clone(),
            url.to_owned(),
            body.clone(),
            answered.clone(),
        );
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "{url} answered {}",
                    response.status()
                );
                let review: serde_json::Value = response.json().await?;
                anyhow::ensure!(review["response"]["allowed"] == true, "{review}");
                answered.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for worker in workers {
        worker.await??;
    }
    Ok(answered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .map_err(|error| anyhow::anyhow!("{name}={text:?}: {error}")),
        Err(_) => Ok(default),
    }
}

/// Base64, as Kubernetes encodes bytes in JSON (k8s-openapi does it).
fn base64_of(bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(k8s_openapi::ByteString(
        bytes.to_vec(),
    ))?)
}
