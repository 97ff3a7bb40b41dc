//! `make bench-failover`: how fast leadership moves, against the real
//! control plane, for Leasehold and — in the same run, with the same timings
//! — client-go's leader election (the baseline; built by
//! `tools/cluster.sh baseline` and passed in `LEASEHOLD_BASELINE_ELECTOR`).
//!
//! * graceful: SIGTERM to the leader → the new leader's first leader-only action.
//! * crash: SIGKILL to the leader → the new leader's first leader-only
//!   action, minus leaseDuration. Negative values are possible: followers
//!   time expiry from the last renewal they saw, which precedes the kill by
//!   up to one retry period.
//!
//! Prints `bench <name> <value> <unit>` lines. Trials: `LEASEHOLD_BENCH_TRIALS`
//! (default 20).

use std::path::{Path, PathBuf};
use std::time::Duration;

use leasehold_tests::fixtures::{bench_trials, percentile};
use leasehold_tests::{
    ReplicaProcess, ReplicaSettings, TestCluster, eventually, leasehold_binary, now_micros,
};
use nix::sys::signal::Signal;

const DEFAULT_TRIALS: usize = 20;
const REPLICAS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let trials = bench_trials(DEFAULT_TRIALS)?;
    let mut contenders = vec![("leasehold", leasehold_binary())];
    match std::env::var_os("LEASEHOLD_BASELINE_ELECTOR") {
        Some(path) => contenders.push(("client_go", PathBuf::from(path))),
        None => eprintln!(
            "LEASEHOLD_BASELINE_ELECTOR not set: measuring Leasehold only (make bench-failover sets it)"
        ),
    }
    let cluster = TestCluster::shared().await;
    let namespace = cluster.namespace("bench-failover").await?;
    let probe = ReplicaSettings::fast(&namespace, "probe");
    eprintln!(
        "failover: {trials} trials each, {REPLICAS} replicas, lease {:?} / renew deadline {:?} / retry {:?}",
        probe.lease_duration, probe.renew_deadline, probe.retry_period
    );

    let mut medians = Vec::new();
    for (name, binary) in &contenders {
        let settings =
            ReplicaSettings::fast(&namespace, &format!("bench-{}", name.replace('_', "-")));
        let graceful = measure(cluster, binary, &settings, Signal::SIGTERM, trials).await?;
        let lease_ms = settings.lease_duration.as_secs_f64() * 1e3;
        let crash: Vec<f64> = measure(cluster, binary, &settings, Signal::SIGKILL, trials)
            .await?
            .into_iter()
            .map(|ms| ms - lease_ms)
            .collect();
        for (scenario, samples) in [("graceful", &graceful), ("crash_over_lease", &crash)] {
            let (median, p95) = (percentile(samples, 0.5), percentile(samples, 0.95));
            println!("bench failover_{scenario}_{name}_median {median:.1} ms");
            println!("bench failover_{scenario}_{name}_p95 {p95:.1} ms");
        }
        medians.push((
            percentile(&graceful, 0.5),
            percentile(&crash, 0.5) + lease_ms,
        ));
    }
    if let [(ours_graceful, ours_crash), (theirs_graceful, theirs_crash)] = medians[..] {
        println!(
            "bench failover_graceful_speedup_vs_client_go {:.1} x",
            theirs_graceful / ours_graceful
        );
        println!(
            "bench failover_crash_speedup_vs_client_go {:.2} x",
            theirs_crash / ours_crash
        );
    }
    Ok(())
}

/// Runs `trials` failovers by sending `signal` to the current leader of a
/// group of replicas, replacing the signalled replica after each trial.
/// Returns the time to the successor's first action, in milliseconds.
async fn measure(
    cluster: &TestCluster,
    binary: &Path,
    settings: &ReplicaSettings,
    signal: Signal,
    trials: usize,
) -> anyhow::Result<Vec<f64>> {
    let workdir = tempfile::Builder::new()
        .prefix("leasehold-bench")
        .tempdir()?;
    let mut next_identity = 0;
    let start = async |next: &mut usize| {
        *next += 1;
        let identity = format!("{signal:?}-{next}").to_lowercase();
        ReplicaProcess::start_binary(
            binary,
            &identity,
            settings,
            cluster.kubeconfig(),
            workdir.path(),
        )
        .await
    };
    let mut group = Vec::new();
    for _ in 0..REPLICAS {
        group.push(start(&mut next_identity).await?);
    }
    let mut samples = Vec::with_capacity(trials);
    for _ in 0..trials {
        let leader = current_leader(&group).await?;
        // Signal at a random point of the renew cycle, not in step with it.
        let offset = rand_fraction() * settings.retry_period.as_secs_f64();
        tokio::time::sleep(settings.retry_period + Duration::from_secs_f64(offset)).await;
        let signalled_at = now_micros();
        group[leader].signal(signal)?;
        let others: Vec<usize> = (0..group.len()).filter(|i| *i != leader).collect();
        let first = eventually(
            Duration::from_secs(60),
            "a successor's first action",
            || async {
                others
                    .iter()
                    .filter_map(|i| group[*i].first_action_after(signalled_at))
                    .min()
            },
        )
        .await?;
        samples.push((first - signalled_at) as f64 / 1e3);
        let mut gone = group.swap_remove(leader);
        gone.wait(Duration::from_secs(20)).await?;
        group.push(start(&mut next_identity).await?);
    }
    Ok(samples)
}

/// The replica whose leader-only work is running now (it acts every 10 ms).
async fn current_leader(group: &[ReplicaProcess]) -> anyhow::Result<usize> {
    eventually(Duration::from_secs(60), "a leader", || async {
        let now = now_micros();
        group.iter().position(|r| {
            r.last_action()
                .is_some_and(|at| now.saturating_sub(at) < 100_000)
        })
    })
    .await
}

fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    f64::from(nanos % 1_000) / 1_000.0
}
