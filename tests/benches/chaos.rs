//! `make chaos`: a randomized fault schedule over three replicas with a
//! plugin writing without pause, for `LEASEHOLD_CHAOS_MINUTES` (default
//! 10), with fencing on (as the chart installs it). Every few seconds one
//! fault (SIGKILL, SIGTERM, SIGSTOP past the lease, a partition, delayed
//! delivery) hits whichever replica leads; the API server's audit log then
//! judges every plugin write.
//!
//! Prints `bench <name> <value> <unit>` lines: faults by kind, plugin
//! writes committed, split-brain writes (a write committed while the Lease
//! named another replica; the target is 0, and the run fails otherwise),
//! stale writes the API server refused, takeovers and their p50/p95 (from
//! the fault to the Lease naming the successor; a SIGTERM hands over at
//! once, the other faults wait out the lease). `LEASEHOLD_CHAOS_SEED`
//! repeats a schedule.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::ensure;
use leasehold_tests::chaos::{Fault, Fleet};
use leasehold_tests::fixtures::{load_average, percentile};
use rand::{Rng, SeedableRng};

const DEFAULT_MINUTES: f64 = 10.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let minutes: f64 = match std::env::var("LEASEHOLD_CHAOS_MINUTES") {
        Ok(text) => text
            .parse()
            .map_err(|_| anyhow::anyhow!("LEASEHOLD_CHAOS_MINUTES={text:?} is not a number"))?,
        Err(_) => DEFAULT_MINUTES,
    };
    let seed: u64 = match std::env::var("LEASEHOLD_CHAOS_SEED") {
        Ok(text) => text
            .parse()
            .map_err(|_| anyhow::anyhow!("LEASEHOLD_CHAOS_SEED={text:?} is not a number"))?,
        Err(_) => rand::random(),
    };
    eprintln!("chaos: {minutes} min, seed {seed} (LEASEHOLD_CHAOS_SEED={seed} repeats it)");
    eprintln!("load average at start: {}", load_average());
    let mut random = rand::rngs::StdRng::seed_from_u64(seed);
    let mut fleet = Fleet::start(true).await?;
    let began = Instant::now();
    let mut takeovers: BTreeMap<Fault, Vec<f64>> = BTreeMap::new();
    while began.elapsed().as_secs_f64() < minutes * 60.0 || takeovers.is_empty() {
        let fault = Fault::ALL[random.random_range(0..Fault::ALL.len())];
        let injected = fleet.inject(fault).await?;
        eprintln!(
            "{:>6.1} s {:<9} {} → {} in {:?}",
            began.elapsed().as_secs_f64(),
            fault.name(),
            injected.deposed,
            injected.successor,
            injected.takeover
        );
        takeovers
            .entry(fault)
            .or_default()
            .push(injected.takeover.as_secs_f64() * 1000.0);
        // Between faults the fleet runs undisturbed for a while.
        tokio::time::sleep(Duration::from_millis(random.random_range(500..3000))).await;
    }
    // The last delivered write has reached the audit log once the plugin
    // wrote again after it (`inject` waited for that).
    let verdict = fleet.judge()?;
    eprintln!("load average at end: {}", load_average());
    println!(
        "bench chaos_minutes {:.1} min",
        began.elapsed().as_secs_f64() / 60.0
    );
    for fault in Fault::ALL {
        let count = takeovers.get(&fault).map_or(0, Vec::len);
        println!("bench chaos_faults_{} {count} count", fault.name());
    }
    println!(
        "bench chaos_plugin_writes_committed {} count",
        verdict.committed
    );
    println!(
        "bench chaos_split_brain_writes {} count",
        verdict.split_brain.len()
    );
    let stale = verdict
        .refused
        .iter()
        .filter(|refusal| refusal.message.contains("stale leadership term"))
        .count();
    println!("bench chaos_refused_stale_writes {stale} count");
    println!("bench chaos_takeovers {} count", verdict.takeovers);
    let all: Vec<f64> = takeovers.values().flatten().copied().collect();
    println!("bench chaos_takeover_p50 {:.0} ms", percentile(&all, 0.5));
    println!("bench chaos_takeover_p95 {:.0} ms", percentile(&all, 0.95));
    for (fault, samples) in &takeovers {
        println!(
            "bench chaos_takeover_{}_p50 {:.0} ms",
            fault.name(),
            percentile(samples, 0.5)
        );
    }
    ensure!(
        verdict.split_brain.is_empty(),
        "writes committed while another replica held the Lease: {:#?}",
        verdict.split_brain
    );
    Ok(())
}
