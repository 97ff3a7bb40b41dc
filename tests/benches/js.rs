//! `make bench-js`: what writing a plugin in JavaScript costs, measured in
//! one run against the same plugin in Rust: the example
//! `plugins/examples/labeler-js` on the JavaScript SDK, and
//! `tests/fixtures/labeler-rs`, its logic step for step on the Rust SDK.
//! No cluster: the host's runtime (release build, the host's engine
//! configuration, pooling allocator, a fresh instance per call) against the
//! harness's in-memory cluster.
//!
//! * **component**: the `.wasm` a Plugin points at;
//! * **rebuild**: `leasehold-js build` (rolldown + componentize-js, npm
//!   toolchain installed) against `cargo build --release` after touching
//!   the crate's source;
//! * **compile**: `Runtime::compile` into an empty cache (what every
//!   replica does at start without `--compile-cache`), and the load of
//!   that result from the cache (with it); the cache's size on disk;
//! * **instantiate**: a fresh store and instance from the compiled code;
//! * **reconcile**, through the harness (instantiate, call, host calls
//!   answered in memory, drop): a new labelled ConfigMap each time (apply,
//!   Event, log), one already labelled (no host call), and one of 900 KB;
//! * **memory**: the largest linear memory an instance reached (the 900 KB
//!   object included), and the peak resident set of a process of its own
//!   (this benchmark, run again as a child) that loads the component from
//!   the compile cache and reconciles the small ConfigMaps, as a replica
//!   running only that plugin would.
//!
//! Prints `bench <name> <value> <unit>`; `…_ratio` is JavaScript over Rust.
//! `LEASEHOLD_BENCH_RECONCILES` (default 200) sets the samples per figure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use leasehold::runtime::{Compiled, Limits, Runtime};
use leasehold_harness::{FakeCluster, Harness, host_context};
use leasehold_sdk::ObjectRef;
use leasehold_tests::fixtures::{bench_trials, load_average, percentile};
use leasehold_tests::js_plugin::js_plugin_component;
use leasehold_tests::{plugin_component, repo_root};
use serde_json::{Value, json};

/// Fresh compiles per component (`LEASEHOLD_BENCH_TRIALS`): seconds each
/// for the JavaScript engine.
const COMPILES: usize = 2;
/// Cached loads per component.
const LOADS: usize = 5;
const CONFIG: &str = r#"{"selector": "leasehold.dev/labeler=on", "labels": {"tier": "config"}}"#;

/// One measured component.
struct Subject {
    /// `labeler_js` or `labeler_rs`, in the figures' names.
    name: &'static str,
    component: PathBuf,
}

/// What was measured of one subject, for the ratios.
#[derive(Default)]
struct Figures {
    size_mib: f64,
    rebuild_s: f64,
    compile_s: f64,
    cached_load_ms: f64,
    cache_mib: f64,
    instantiate_us: f64,
    reconcile_apply_us: f64,
    reconcile_noop_us: f64,
    reconcile_900kb_ms: f64,
    memory_peak_mib: f64,
    peak_rss_mib: f64,
}

/// Set in the child that measures a process's peak resident set: the
/// component to load (from the compile cache named by `CHILD_CACHE`).
const CHILD_COMPONENT: &str = "LEASEHOLD_BENCH_JS_CHILD";
const CHILD_CACHE: &str = "LEASEHOLD_BENCH_JS_CHILD_CACHE";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(component) = std::env::var_os(CHILD_COMPONENT) {
        return child(Path::new(&component));
    }
    let reconciles: usize = std::env::var("LEASEHOLD_BENCH_RECONCILES")
        .ok()
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(200);
    println!("config load_average {}", load_average());
    println!("config reconciles {reconciles}");
    let subjects = [
        Subject {
            name: "labeler_rs",
            component: plugin_component("labeler-rs"),
        },
        Subject {
            name: "labeler_js",
            component: js_plugin_component(),
        },
    ];
    // One cache for every harness of this process, filled by `compile`.
    let cache = tempfile::tempdir()?;
    leasehold_harness::use_compile_cache(cache.path());

    let mut figures = Vec::new();
    for subject in &subjects {
        figures.push(measure(subject, cache.path(), reconciles).await?);
    }
    // The figures are JavaScript's cost over Rust's for the same plugin.
    let (rs, js) = (&figures[0], &figures[1]);
    for (name, js, rs) in [
        ("component_size", js.size_mib, rs.size_mib),
        ("rebuild", js.rebuild_s, rs.rebuild_s),
        ("compile", js.compile_s, rs.compile_s),
        ("cached_load", js.cached_load_ms, rs.cached_load_ms),
        ("compile_cache_size", js.cache_mib, rs.cache_mib),
        ("instantiate_p50", js.instantiate_us, rs.instantiate_us),
        (
            "reconcile_apply_p50",
            js.reconcile_apply_us,
            rs.reconcile_apply_us,
        ),
        (
            "reconcile_noop_p50",
            js.reconcile_noop_us,
            rs.reconcile_noop_us,
        ),
        (
            "reconcile_900kb_p50",
            js.reconcile_900kb_ms,
            rs.reconcile_900kb_ms,
        ),
        ("memory_peak", js.memory_peak_mib, rs.memory_peak_mib),
        ("peak_rss", js.peak_rss_mib, rs.peak_rss_mib),
    ] {
        println!("bench js_{name}_ratio {:.1} ratio", js / rs);
    }
    Ok(())
}

async fn measure(subject: &Subject, cache: &Path, reconciles: usize) -> anyhow::Result<Figures> {
    let name = subject.name;
    let bytes = std::fs::read(&subject.component)?;
    let mut figures = Figures {
        size_mib: mib(bytes.len()),
        ..Figures::default()
    };
    println!("bench js_component_size_{name} {:.2} MiB", figures.size_mib);

    figures.rebuild_s = rebuild(subject)?.as_secs_f64();
    println!("bench js_rebuild_{name} {:.1} s", figures.rebuild_s);

    // A fresh cache per compile, as a replica without --compile-cache.
    let mut compiles = Vec::new();
    for _ in 0..bench_trials(COMPILES)? {
        let fresh = tempfile::tempdir()?;
        let runtime = Runtime::new(Some(fresh.path().to_owned()))?;
        compiles.push(runtime.compile(&bytes)?.compile_time.as_secs_f64());
        figures.cache_mib = mib(dir_size(fresh.path()));
    }
    figures.compile_s = percentile(&compiles, 0.5);
    println!("bench js_compile_{name} {:.2} s", figures.compile_s);
    println!(
        "bench js_compile_cache_size_{name} {:.1} MiB",
        figures.cache_mib
    );
    Runtime::new(Some(cache.to_owned()))?.compile(&bytes)?;
    let mut loads = Vec::new();
    let mut compiled = None;
    for _ in 0..LOADS {
        let runtime = Runtime::new(Some(cache.to_owned()))?;
        let loaded = runtime.compile(&bytes)?;
        loads.push(loaded.compile_time.as_secs_f64() * 1e3);
        compiled = Some((runtime, loaded));
    }
    figures.cached_load_ms = percentile(&loads, 0.5);
    println!(
        "bench js_cached_load_{name} {:.1} ms",
        figures.cached_load_ms
    );

    let (_runtime, compiled) = compiled.expect("LOADS > 0");
    figures.instantiate_us = instantiate(&compiled, reconciles).await?;
    println!(
        "bench js_instantiate_p50_{name} {:.1} us",
        figures.instantiate_us
    );
    drop((_runtime, compiled));

    // The harness blocks on (and drops) a runtime of its own: not on ours.
    let memory_peak = std::thread::scope(|scope| {
        scope
            .spawn(|| reconcile_through_harness(name, &bytes, reconciles, &mut figures, true))
            .join()
            .expect("the harness thread")
    })?;
    figures.memory_peak_mib = mib(memory_peak);
    println!(
        "bench js_reconcile_apply_p50_{name} {:.1} us",
        figures.reconcile_apply_us
    );
    println!(
        "bench js_reconcile_noop_p50_{name} {:.1} us",
        figures.reconcile_noop_us
    );
    println!(
        "bench js_reconcile_900kb_p50_{name} {:.2} ms",
        figures.reconcile_900kb_ms
    );
    println!(
        "bench js_memory_peak_{name} {:.1} MiB",
        figures.memory_peak_mib
    );
    figures.peak_rss_mib = mib(peak_rss_of_child(&subject.component, cache, reconciles)?);
    println!("bench js_peak_rss_{name} {:.1} MiB", figures.peak_rss_mib);
    Ok(figures)
}

/// The time to build the component again after an edit.
fn rebuild(subject: &Subject) -> anyhow::Result<Duration> {
    let root = repo_root();
    let scratch = tempfile::tempdir()?;
    let mut command = if subject.name == "labeler_js" {
        // The npm toolchain `make plugins-js` installed (keyed by the SDK's lockfile).
        let lock = std::fs::read(root.join("plugins/sdk-js/package-lock.json"))?;
        let digest = leasehold::oci::digest_of(&lock);
        let tools = PathBuf::from(std::env::var("HOME")?)
            .join(".cache/leasehold/npm")
            .join(&digest.trim_start_matches("sha256:")[..16])
            .join("node_modules");
        let mut command = Command::new("node");
        command
            .arg(root.join("plugins/sdk-js/bin/leasehold-js.js"))
            .arg("build")
            .arg(root.join("plugins/examples/labeler-js/labeler.js"))
            .arg("--out")
            .arg(scratch.path().join("labeler-js.wasm"))
            .arg("--tools")
            .arg(tools);
        command
    } else {
        let source = root.join("tests/fixtures/labeler-rs/src/lib.rs");
        let text = std::fs::read(&source)?;
        std::fs::write(&source, text)?;
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command.current_dir(&root).args([
            "build",
            "--profile",
            leasehold_harness::PLUGIN_PROFILE,
            "--target",
            "wasm32-wasip2",
            "-p",
            "labeler-rs",
        ]);
        command
    };
    let started = Instant::now();
    let output = command.output()?;
    anyhow::ensure!(
        output.status.success(),
        "rebuilding {} failed: {}",
        subject.name,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(started.elapsed())
}

async fn instantiate(compiled: &Compiled, samples: usize) -> anyhow::Result<f64> {
    let cluster = FakeCluster::new();
    let limits = Limits::default();
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let instance = compiled
            .instantiate(host_context(&cluster, None), &limits)
            .await?;
        times.push(started.elapsed().as_secs_f64() * 1e6);
        drop(instance);
    }
    Ok(percentile(&times, 0.5))
}

fn config_map(name: &str, labels: Value, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "namespace": "default", "name": name, "labels": labels },
        "data": data,
    })
}

/// Reconciles through a harness (the 900 KB objects too when `large`);
/// returns its memory peak.
fn reconcile_through_harness(
    name: &str,
    bytes: &[u8],
    samples: usize,
    figures: &mut Figures,
    large: bool,
) -> anyhow::Result<usize> {
    let config: Value = serde_json::from_str(CONFIG)?;
    let cluster = FakeCluster::new().with_config(&config);
    let harness = Harness::from_bytes(bytes)?.with_cluster(cluster)?;
    let cluster = harness.cluster();
    let selected = json!({ "leasehold.dev/labeler": "on" });
    let timed = |reference: &ObjectRef| -> anyhow::Result<f64> {
        let started = Instant::now();
        harness.reconcile(reference)?;
        Ok(started.elapsed().as_secs_f64() * 1e6)
    };

    let mut applies = Vec::with_capacity(samples);
    for index in 0..samples {
        let object = format!("apply-{index}");
        cluster.insert_value(&config_map(&object, selected.clone(), json!({ "a": "1" })))?;
        applies.push(timed(&ObjectRef::namespaced("default", object))?);
    }
    let calls = cluster.calls();
    anyhow::ensure!(
        calls.len() == 2 * samples && calls.iter().all(|call| call.error.is_none()),
        "{name}: every reconcile applies and records an Event: {:?}",
        calls.first()
    );
    figures.reconcile_apply_us = percentile(&applies, 0.5);

    let labelled = ObjectRef::namespaced("default", "apply-0");
    let noops = (0..samples)
        .map(|_| timed(&labelled))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        cluster.calls().len() == calls.len(),
        "{name}: a labelled ConfigMap makes no call"
    );
    figures.reconcile_noop_us = percentile(&noops, 0.5);
    if !large {
        return Ok(harness.memory_peak());
    }

    // 900 KB of data in 900 keys: near the API server's 1 MiB object limit.
    let value = "x".repeat(1000);
    let data: serde_json::Map<String, Value> = (0..900)
        .map(|key| (format!("key-{key}"), Value::from(value.clone())))
        .collect();
    let large: Vec<f64> = (0..(samples / 10).max(3))
        .map(|index| {
            let object = format!("large-{index}");
            cluster.insert_value(&config_map(
                &object,
                selected.clone(),
                Value::Object(data.clone()),
            ))?;
            Ok(timed(&ObjectRef::namespaced("default", object))? / 1e3)
        })
        .collect::<anyhow::Result<_>>()?;
    figures.reconcile_900kb_ms = percentile(&large, 0.5);
    Ok(harness.memory_peak())
}

/// Runs this benchmark again as a child that loads `component` from
/// `cache` and reconciles `samples` small ConfigMaps; returns the child's
/// peak resident set.
fn peak_rss_of_child(component: &Path, cache: &Path, samples: usize) -> anyhow::Result<usize> {
    let output = Command::new(std::env::current_exe()?)
        .env(CHILD_COMPONENT, component)
        .env(CHILD_CACHE, cache)
        .env("LEASEHOLD_BENCH_RECONCILES", samples.to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "the child failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("peak_rss_bytes "))
        .and_then(|bytes| bytes.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("the child said no peak_rss_bytes: {stdout}"))
}

/// The child of [`peak_rss_of_child`].
fn child(component: &Path) -> anyhow::Result<()> {
    let cache = std::env::var_os(CHILD_CACHE).expect("the cache is named");
    leasehold_harness::use_compile_cache(PathBuf::from(cache));
    let samples = std::env::var("LEASEHOLD_BENCH_RECONCILES")?.parse()?;
    let bytes = std::fs::read(component)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                reconcile_through_harness("child", &bytes, samples, &mut Figures::default(), false)
            })
            .join()
            .expect("the harness thread")
    })?;
    // VmHWM: the peak resident set, in kB.
    let status = std::fs::read_to_string("/proc/self/status")?;
    let peak_kb: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))?;
    println!("peak_rss_bytes {}", peak_kb * 1024);
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            _ => entry.metadata().map_or(0, |metadata| metadata.len()),
        })
        .sum()
}

fn mib(bytes: impl TryInto<u64>) -> f64 {
    bytes.try_into().unwrap_or(u64::MAX) as f64 / (1024.0 * 1024.0)
}
