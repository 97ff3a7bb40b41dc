//! `make bench-new-plugin`: the time from `leasehold plugin new` to that
//! plugin reconciling in the local control plane, build included.
//!
//! The steps a plugin author takes, each timed, with the real binary:
//! `plugin new` (a scaffold that greets labelled ConfigMaps), `plugin
//! build`, `plugin deploy` into a namespace where a replica already runs,
//! until a labelled ConfigMap carries the scaffold's greeting.
//!
//! The build uses a fresh `CARGO_TARGET_DIR`, as a new machine would (the
//! SDK's dependencies compile from nothing; cargo's download cache under
//! `~/.cargo/registry` is whatever this machine has). Set
//! `LEASEHOLD_BENCH_TARGET_DIR` to reuse a target directory and measure the
//! warm path instead. The target is under 5 minutes.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use leasehold_tests::fixtures::{config_map, load_average, plugin_namespace};
use leasehold_tests::{ReplicaProcess, ReplicaSettings, TestCluster, eventually, leasehold_binary};

const PLUGIN: &str = "hello-world";
const PATIENCE: Duration = Duration::from_secs(120);
const TARGET_MINUTES: f64 = 5.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let admin = cluster.client()?;
    let (namespace, account) = plugin_namespace(
        cluster,
        "bench-new-plugin",
        &["get", "list", "watch", "patch"],
    )
    .await?;
    let workdir = tempfile::tempdir()?;
    let target = match std::env::var_os("LEASEHOLD_BENCH_TARGET_DIR") {
        Some(dir) => dir.into(),
        None => workdir.path().join("target"),
    };
    // The platform is already running when an author starts: one replica.
    let _replica = ReplicaProcess::start(
        "platform",
        &ReplicaSettings::fast(&namespace, "leasehold"),
        cluster.kubeconfig(),
        workdir.path(),
    )
    .await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(admin, &namespace);
    config_maps
        .create(
            &PostParams::default(),
            &config_map(
                "settings",
                &[(&format!("example.com/{PLUGIN}"), "true")],
                &[],
            ),
        )
        .await?;
    eprintln!(
        "new plugin: target dir {}, load average {}",
        target.display(),
        load_average()
    );

    let crate_dir = workdir.path().join(PLUGIN);
    let crate_path = crate_dir.to_str().expect("a UTF-8 temp path");
    let started = Instant::now();
    run(&["new", PLUGIN, "--path", crate_path], &target, cluster).await?;
    let scaffolded = started.elapsed();
    run(&["build", "--path", crate_path], &target, cluster).await?;
    let built = started.elapsed();
    let component = target.join(format!(
        "wasm32-wasip2/plugin/{}.wasm",
        PLUGIN.replace('-', "_")
    ));
    let component = component.to_str().expect("a UTF-8 target path");
    run(
        &[
            "deploy",
            component,
            "--name",
            PLUGIN,
            "--namespace",
            &namespace,
            "--service-account",
            &account,
            "--config",
            r#"{"greeting": "hi"}"#,
        ],
        &target,
        cluster,
    )
    .await?;
    let deployed = started.elapsed();
    eventually(PATIENCE, "the scaffold's greeting", || async {
        let settings = config_maps.get("settings").await.ok()?;
        (settings.data?.get("greeting")? == "hi, settings").then_some(())
    })
    .await?;
    let reconciled = started.elapsed();

    println!(
        "bench new_plugin_scaffold {:.1} s",
        scaffolded.as_secs_f64()
    );
    println!(
        "bench new_plugin_build {:.1} s",
        (built - scaffolded).as_secs_f64()
    );
    println!(
        "bench new_plugin_deploy {:.1} s",
        (deployed - built).as_secs_f64()
    );
    println!(
        "bench new_plugin_deploy_to_reconcile {:.1} s",
        (reconciled - deployed).as_secs_f64()
    );
    println!(
        "bench new_plugin_total {:.1} min",
        reconciled.as_secs_f64() / 60.0
    );
    println!("target new_plugin {TARGET_MINUTES:.1} min");
    Ok(())
}

/// `leasehold plugin <args>` against the test cluster; fails with its
/// output when it fails.
async fn run(args: &[&str], target: &Path, cluster: &TestCluster) -> anyhow::Result<Output> {
    let output = tokio::process::Command::new(leasehold_binary())
        .arg("plugin")
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .env("KUBECONFIG", cluster.kubeconfig())
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "leasehold plugin {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}
