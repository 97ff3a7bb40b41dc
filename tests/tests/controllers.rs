//! Wasm controller plugins, run by `leasehold run` against the real API
//! server: the examples reconcile real objects, misbehaving plugins are
//! contained, RBAC bounds each plugin, and only the leader instantiates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use leasehold_tests::fixtures::{
    config_map, counter, labelled_namespace, rule, service_account_with,
};
use leasehold_tests::{
    ReplicaProcess, ReplicaSettings, TestCluster, eventually, gone, plugin_component, unique_name,
};
use nix::sys::signal::Signal;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);

/// A ServiceAccount for a plugin, granted exactly `rules` cluster-wide;
/// returns `namespace/name` for the manifest.
async fn plugin_account(
    cluster: &TestCluster,
    namespace: &str,
    rules: Vec<PolicyRule>,
) -> anyhow::Result<String> {
    let name = service_account_with(cluster, namespace, rules).await?;
    Ok(format!("{namespace}/{name}"))
}

fn write_manifest(
    dir: &Path,
    name: &str,
    crate_name: &str,
    account: &str,
    config: serde_json::Value,
    limits: serde_json::Value,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.json"));
    let manifest = json!({
        "name": name,
        "component": plugin_component(crate_name),
        "serviceAccount": account,
        "config": config,
        "limits": limits,
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?)?;
    Ok(path)
}

fn settings(namespace: &str, manifests: &[PathBuf], cache: &Path) -> ReplicaSettings {
    let mut settings = ReplicaSettings::fast(namespace, "leasehold");
    for manifest in manifests {
        settings
            .extra_args
            .extend(["--plugin".into(), manifest.display().to_string()]);
    }
    settings
        .extra_args
        .extend(["--compile-cache".into(), cache.display().to_string()]);
    settings
}

#[tokio::test]
async fn configmap_mirror_copies_keeps_in_sync_and_cleans_up_through_its_finalizer()
-> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let admin = cluster.client()?;
    let plugins_ns = cluster.namespace("plugins").await?;
    let account = plugin_account(
        cluster,
        &plugins_ns,
        vec![
            rule(
                &[""],
                &["configmaps"],
                &[
                    "get", "list", "watch", "create", "update", "patch", "delete",
                ],
            ),
            rule(&[""], &["namespaces"], &["get", "list", "watch"]),
            rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
        ],
    )
    .await?;
    let token = unique_name("mirror");
    let source_ns = cluster.namespace("mirror-source").await?;
    let targets = [
        labelled_namespace(&admin, ("leasehold.dev/mirror-target", &token)).await?,
        labelled_namespace(&admin, ("leasehold.dev/mirror-target", &token)).await?,
    ];
    let workdir = tempfile::tempdir()?;
    let manifest = write_manifest(
        workdir.path(),
        "configmap-mirror",
        "configmap-mirror",
        &account,
        json!({"namespaceSelector": format!("leasehold.dev/mirror-target={token}")}),
        json!({}),
    )?;
    let replica = ReplicaProcess::start(
        "mirror-host",
        &settings(&plugins_ns, &[manifest], &workdir.path().join("cache")),
        cluster.kubeconfig(),
        workdir.path(),
    )
    .await?;

    let sources: Api<ConfigMap> = Api::namespaced(admin.clone(), &source_ns);
    sources
        .create(
            &PostParams::default(),
            &config_map(
                "settings",
                &[("leasehold.dev/mirror", "true")],
                &[("colour", "blue")],
            ),
        )
        .await?;
    let copy_has = |colour: &'static str| {
        let admin = admin.clone();
        let targets = targets.clone();
        async move {
            for target in &targets {
                let copy = Api::<ConfigMap>::namespaced(admin.clone(), target)
                    .get_opt("settings")
                    .await
                    .ok()??;
                if copy.data?.get("colour").map(String::as_str) != Some(colour) {
                    return None;
                }
            }
            Some(())
        }
    };
    eventually(PATIENCE, "copies in every target namespace", || {
        copy_has("blue")
    })
    .await
    .map_err(|error| error.context(replica.log()))?;

    sources
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"colour": "green"}})),
        )
        .await?;
    eventually(PATIENCE, "copies to follow the source", || {
        copy_has("green")
    })
    .await?;

    // A source that loses its label leaves the plugin's watch: the host
    // still tells the plugin (`absent`), which removes the copies and
    // releases the source's finalizer, or deleting it later would hang.
    let labelled = |mirror: Option<&str>| {
        Patch::Merge(json!({"metadata": {"labels": {"leasehold.dev/mirror": mirror}}}))
    };
    sources
        .patch("settings", &PatchParams::default(), &labelled(None))
        .await?;
    eventually(PATIENCE, "an unlabelled source to be let go", || async {
        for target in &targets {
            let copy = Api::<ConfigMap>::namespaced(admin.clone(), target)
                .get_opt("settings")
                .await
                .ok()?;
            if copy.is_some() {
                return None;
            }
        }
        let source = sources.get("settings").await.ok()?;
        source.finalizers().is_empty().then_some(())
    })
    .await
    .map_err(|error| error.context(replica.log()))?;
    sources
        .patch("settings", &PatchParams::default(), &labelled(Some("true")))
        .await?;
    eventually(PATIENCE, "a relabelled source to be mirrored again", || {
        copy_has("green")
    })
    .await
    .map_err(|error| error.context(replica.log()))?;

    sources.delete("settings", &DeleteParams::default()).await?;
    eventually(PATIENCE, "copies and source to be gone", || async {
        for target in &targets {
            gone(
                &Api::<ConfigMap>::namespaced(admin.clone(), target),
                "settings",
            )
            .await?;
        }
        gone(&sources, "settings").await
    })
    .await
    .map_err(|error| error.context(replica.log()))?;
    Ok(())
}

/// The misbehaving fixture plugin, reconciling ConfigMaps labelled
/// `leasehold.dev/misbehave=<group>` as a ServiceAccount that may only touch
/// ConfigMaps (so listing Secrets is forbidden).
struct Misbehaving {
    plugins_ns: String,
    group: String,
    manifest: PathBuf,
    workdir: tempfile::TempDir,
}

impl Misbehaving {
    async fn set_up(cluster: &TestCluster, limits: serde_json::Value) -> anyhow::Result<Self> {
        let plugins_ns = cluster.namespace("plugins").await?;
        let account = plugin_account(
            cluster,
            &plugins_ns,
            vec![rule(
                &[""],
                &["configmaps"],
                &["get", "list", "watch", "create", "update"],
            )],
        )
        .await?;
        let workdir = tempfile::tempdir()?;
        let group = unique_name("misbehave");
        let manifest = write_manifest(
            workdir.path(),
            "misbehaving",
            "misbehaving",
            &account,
            json!({"selector": format!("leasehold.dev/misbehave={group}")}),
            limits,
        )?;
        Ok(Self {
            plugins_ns,
            group,
            manifest,
            workdir,
        })
    }

    fn settings(&self) -> ReplicaSettings {
        settings(
            &self.plugins_ns,
            std::slice::from_ref(&self.manifest),
            &self.workdir.path().join("cache"),
        )
    }

    /// A ConfigMap this plugin reconciles in `mode`.
    fn object(&self, name: &str, mode: &str) -> ConfigMap {
        config_map(
            name,
            &[("leasehold.dev/misbehave", &self.group)],
            &[("mode", mode)],
        )
    }
}

#[tokio::test]
async fn with_wasm_profiler_perfmap_perf_can_name_a_plugins_functions() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let namespace = cluster.namespace("profiled").await?;
    let reads = rule(&[""], &["configmaps"], &["get", "list", "watch"]);
    let account = plugin_account(cluster, &namespace, vec![reads]).await?;
    let workdir = tempfile::tempdir()?;
    let manifest = write_manifest(
        workdir.path(),
        "profiled",
        "misbehaving",
        &account,
        json!({"selector": "leasehold.dev/misbehave=never"}),
        json!({}),
    )?;
    let mut settings = settings(&namespace, &[manifest], &workdir.path().join("cache"));
    settings
        .extra_args
        .extend(["--wasm-profiler".into(), "perfmap".into()]);
    let replica =
        ReplicaProcess::start("profiled", &settings, cluster.kubeconfig(), workdir.path()).await?;

    // The map is written as each compiled function's code is published:
    // manifest plugins are compiled while the replica starts. Lines are
    // `<address> <size> <name>`; the fixture's own functions are named
    // after its crate (Rust's mangling keeps it).
    let map = PathBuf::from(format!("/tmp/perf-{}.map", replica.pid()?));
    let found = eventually(PATIENCE, "the plugin's functions in perf's map", || {
        let written = std::fs::read_to_string(&map).unwrap_or_default();
        let named = written
            .lines()
            .filter(|line| {
                line.split(' ')
                    .nth(2)
                    .is_some_and(|name| name.contains("misbehaving"))
            })
            .count();
        async move { (named > 10).then_some(named) }
    })
    .await;
    let _ = std::fs::remove_file(&map);
    found.with_context(|| format!("{}, replica log:\n{}", map.display(), replica.log()))?;
    Ok(())
}

#[tokio::test]
async fn misbehaving_plugins_fail_one_reconcile_each_and_the_host_keeps_working()
-> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let plugin = Misbehaving::set_up(
        cluster,
        json!({"memory": "16Mi", "timeout": "200ms", "concurrency": 2}),
    )
    .await?;
    let workdir = plugin.workdir.path();
    let replica = ReplicaProcess::start(
        "contained-host",
        &plugin.settings(),
        cluster.kubeconfig(),
        workdir,
    )
    .await?;
    let work_ns = cluster.namespace("misbehave").await?;
    let objects: Api<ConfigMap> = Api::namespaced(cluster.client()?, &work_ns);
    for mode in ["trap", "loop", "allocate", "forbidden", "malformed", "ok"] {
        objects
            .create(&PostParams::default(), &plugin.object(mode, mode))
            .await?;
    }

    eventually(
        PATIENCE,
        "the well-behaved object to be handled",
        || async { objects.get_opt("ok-handled").await.ok()?.map(|_| ()) },
    )
    .await
    .map_err(|error| error.context(replica.log()))?;
    let metrics = eventually(PATIENCE, "every failure to be counted", || async {
        let (_, metrics) = replica.get("/metrics").await.ok()?;
        let traps = counter(
            &metrics,
            r#"leasehold_plugin_reconciles_total{plugin="misbehaving",result="trap"}"#,
        );
        let errors = counter(
            &metrics,
            r#"leasehold_plugin_reconciles_total{plugin="misbehaving",result="error"}"#,
        );
        (traps >= 3.0 && errors >= 2.0).then_some(metrics)
    })
    .await
    .map_err(|error| error.context(replica.log()))?;
    assert!(
        counter(
            &metrics,
            r#"leasehold_plugin_reconciles_total{plugin="misbehaving",result="ok"}"#
        ) >= 1.0
    );
    // Per-plugin observability: calls by verb and outcome, how long
    // reconciles took, the largest memory an instance grew to, and the
    // process's own figures.
    for (sample, what) in [
        (
            r#"leasehold_plugin_host_calls_total{plugin="misbehaving",call="create",code="200"}"#,
            "the ok mode's create",
        ),
        (
            r#"leasehold_plugin_host_calls_total{plugin="misbehaving",call="list",code="403"}"#,
            "the forbidden list of Secrets",
        ),
        (
            r#"leasehold_plugin_host_calls_total{plugin="misbehaving",call="create",code="0"}"#,
            "the malformed create, refused before the API server",
        ),
        (
            r#"leasehold_plugin_reconcile_duration_seconds_count{plugin="misbehaving"}"#,
            "timed reconciles",
        ),
        (
            r#"leasehold_process_resident_memory_bytes"#,
            "the process's memory",
        ),
    ] {
        assert!(
            counter(&metrics, sample) >= 1.0,
            "{what}: {sample} in\n{metrics}"
        );
    }
    assert!(
        counter(
            &metrics,
            r#"leasehold_plugin_memory_peak_bytes{plugin="misbehaving"}"#
        ) >= f64::from(1 << 20),
        "an instance's memory high-water mark is at least its first MiB"
    );

    let log = replica.log();
    assert!(
        log.contains("listing secrets") && log.contains("403"),
        "the 403 reaches the plugin as a value:\n{log}"
    );
    assert!(
        log.contains("malformed create refused: BadRequest"),
        "bad JSON from a plugin is refused:\n{log}"
    );
    assert!(
        log.contains("epoch deadline") || log.contains("interrupt"),
        "the endless loop is cut off:\n{log}"
    );
    assert!(
        log.contains("its stderr ends: ") && log.contains("asked to trap"),
        "the panic's own message names the trap:\n{log}"
    );

    // Still serving and still reconciling after all of that.
    assert_eq!(replica.get("/healthz").await?.0, 200);
    objects
        .create(&PostParams::default(), &plugin.object("ok-again", "ok"))
        .await?;
    eventually(PATIENCE, "a later object to be handled", || async {
        objects.get_opt("ok-again-handled").await.ok()?.map(|_| ())
    })
    .await?;
    Ok(())
}

/// The host answers a plugin's reads from its watch caches, and still a
/// plugin reads back what it has just written: twenty reconciles, each
/// reading its object, writing the next count with a compare-and-swap and
/// reading it back (from the cache, then live from the API server), none
/// of them failing.
#[tokio::test]
async fn a_plugin_reads_from_the_hosts_caches_and_sees_its_own_writes_at_once() -> anyhow::Result<()>
{
    let cluster = TestCluster::shared().await;
    let plugin = Misbehaving::set_up(cluster, json!({})).await?;
    let replica = ReplicaProcess::start(
        "caching-host",
        &plugin.settings(),
        cluster.kubeconfig(),
        plugin.workdir.path(),
    )
    .await?;
    let work_ns = cluster.namespace("count").await?;
    let objects: Api<ConfigMap> = Api::namespaced(cluster.client()?, &work_ns);
    objects
        .create(&PostParams::default(), &plugin.object("counter", "count"))
        .await?;
    eventually(PATIENCE, "the plugin to count to 20", || async {
        let counter = objects.get_opt("counter").await.ok()??;
        (counter.data?.get("count")? == "20").then_some(())
    })
    .await
    .map_err(|error| error.context(replica.log()))?;
    let (_, metrics) = replica.get("/metrics").await?;
    let sample = |name: &str, label: &str| {
        counter(
            &metrics,
            &format!(r#"leasehold_plugin_{name}_total{{plugin="misbehaving"{label}}}"#),
        )
    };
    let log = replica.log();
    assert_eq!(
        sample("reconciles", r#",result="error""#),
        0.0,
        "a read missed the plugin's own write:\n{log}"
    );
    let cached = sample("cached_reads", "");
    assert!(cached >= 20.0, "only {cached} reads came from the caches");
    // Twenty writes and twenty live reads (each a request: the host answers
    // a field selector, which `get_live` sends, only live), whatever else
    // went live.
    let requests = sample("api_requests", "");
    assert!(
        requests >= 40.0,
        "only {requests} requests: a live read came from a cache"
    );
    println!(
        "40 reads, 20 live reads and 20 writes: {cached} reads from the caches, {requests} API requests"
    );
    Ok(())
}

/// A plugin that requeues at 0 ms and one that lists in a tight loop are
/// held to their budget (requeue floor, API rate) on the real API server,
/// and a well-behaved object beside them is still handled.
#[tokio::test]
async fn an_abusive_plugin_is_held_to_its_api_budget() -> anyhow::Result<()> {
    const QPS: f64 = 5.0;
    let cluster = TestCluster::shared().await;
    let plugin = Misbehaving::set_up(
        cluster,
        json!({"timeout": "5s", "concurrency": 2, "apiQPS": QPS as u32, "apiBurst": QPS as u32,
               "minRequeueAfter": "1s", "maxCallsPerReconcile": 1000}),
    )
    .await?;
    let replica = ReplicaProcess::start(
        "budget-host",
        &plugin.settings(),
        cluster.kubeconfig(),
        plugin.workdir.path(),
    )
    .await?;
    let work_ns = cluster.namespace("budget").await?;
    let objects: Api<ConfigMap> = Api::namespaced(cluster.client()?, &work_ns);
    let mut lister = plugin.object("lister", "calls");
    lister
        .data
        .get_or_insert_default()
        .insert("calls".into(), "200".into());
    for object in [plugin.object("requeue", "requeue-now"), lister] {
        objects.create(&PostParams::default(), &object).await?;
    }
    let sample = |metrics: &str, name: &str, label: &str| {
        counter(
            metrics,
            &format!(r#"leasehold_plugin_{name}_total{{plugin="misbehaving"{label}}}"#),
        )
    };
    let limited =
        |metrics: &str, reason: &str| sample(metrics, "limited", &format!(r#",reason="{reason}""#));
    let before = eventually(PATIENCE, "both bounds to bite", || async {
        let (_, metrics) = replica.get("/metrics").await.ok()?;
        (limited(&metrics, "RequeueFloored") >= 2.0 && limited(&metrics, "Throttled") >= 1.0)
            .then_some(metrics)
    })
    .await
    .map_err(|error| error.context(replica.log()))?;
    let started = std::time::Instant::now();

    // Beside them, a well-behaved object is handled.
    objects
        .create(&PostParams::default(), &plugin.object("ok", "ok"))
        .await?;
    eventually(
        PATIENCE,
        "the well-behaved object to be handled",
        || async { objects.get_opt("ok-handled").await.ok()?.map(|_| ()) },
    )
    .await
    .map_err(|error| error.context(replica.log()))?;

    let (_, after) = replica.get("/metrics").await?;
    let elapsed = started.elapsed().as_secs_f64();
    let requests = sample(&after, "api_requests", "") - sample(&before, "api_requests", "");
    let reconciles = sample(&after, "reconciles", r#",result="ok""#)
        - sample(&before, "reconciles", r#",result="ok""#);
    // Upper bounds only: a slow machine sends fewer, never more. The
    // bucket allows its rate plus one burst; one more per second of slack
    // for the request that was in flight at each scrape.
    assert!(
        requests <= QPS * elapsed + QPS + 2.0,
        "{requests} API requests in {elapsed:.1}s at {QPS}/s"
    );
    // The requeue-at-0 object: at most one reconcile a second (+ the ok one).
    assert!(
        reconciles <= elapsed + 3.0,
        "{reconciles} successful reconciles in {elapsed:.1}s with a 1s floor"
    );
    // The abuse never cost the replica its Lease: it renewed throughout.
    assert_eq!(replica.role().await?, "leader");
    assert_eq!(counter(&after, "leasehold_leader_acquisitions_total"), 1.0);
    Ok(())
}

#[tokio::test]
async fn only_the_leader_instantiates_and_a_new_leader_reconciles_without_compiling()
-> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let plugin = Misbehaving::set_up(cluster, json!({})).await?;
    let settings = plugin.settings();
    let workdir = plugin.workdir.path();
    let mut replicas = Vec::new();
    for index in 0..3 {
        replicas.push(
            ReplicaProcess::start(
                &format!("replica-{index}"),
                &settings,
                cluster.kubeconfig(),
                workdir,
            )
            .await?,
        );
    }
    let leader = eventually(PATIENCE, "a leader", || async {
        let mut leaders = Vec::new();
        for (index, replica) in replicas.iter().enumerate() {
            if replica.role().await.ok()? == "leader" {
                leaders.push(index);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await?;
    let work_ns = cluster.namespace("leader-only").await?;
    let objects: Api<ConfigMap> = Api::namespaced(cluster.client()?, &work_ns);
    objects
        .create(&PostParams::default(), &plugin.object("first", "ok"))
        .await?;
    eventually(PATIENCE, "the leader to reconcile", || async {
        objects.get_opt("first-handled").await.ok()?.map(|_| ())
    })
    .await?;

    let instantiations = r#"leasehold_plugin_instantiations_total{plugin="misbehaving"}"#;
    for (index, replica) in replicas.iter().enumerate() {
        let (_, metrics) = replica.get("/metrics").await?;
        let count = counter(&metrics, instantiations);
        if index == leader {
            assert!(count >= 1.0, "the leader instantiated the plugin");
        } else {
            assert_eq!(
                count, 0.0,
                "follower {} instantiated the plugin",
                replica.identity
            );
        }
    }

    replicas[leader].signal(Signal::SIGTERM)?;
    let exit = replicas[leader].wait(Duration::from_secs(20)).await;
    assert_eq!(
        exit.ok(),
        Some(Some(0)),
        "the old leader exits cleanly:\n{}",
        replicas[leader].log()
    );
    objects
        .create(&PostParams::default(), &plugin.object("second", "ok"))
        .await?;
    eventually(PATIENCE, "the new leader to reconcile", || async {
        objects.get_opt("second-handled").await.ok()?.map(|_| ())
    })
    .await?;
    let successor = replicas
        .iter()
        .enumerate()
        .find(|(index, replica)| *index != leader && replica.log().contains("acquired lease"))
        .map(|(_, replica)| replica)
        .expect("a successor acquired the lease");
    let log = successor.log();
    let compiled = log.find("plugin compiled").expect("compiled at start-up");
    let acquired = log.find("acquired lease").expect("acquired");
    assert!(
        compiled < acquired,
        "the successor compiled before it led, never after:\n{log}"
    );
    assert_eq!(log.matches("plugin compiled").count(), 1);
    Ok(())
}
