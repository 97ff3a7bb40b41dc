//! Spread placement on the real control plane: plugins spread over every
//! live replica, each run by exactly one at a time (judged from the API
//! server's audit log against each plugin's shard Lease), moving by
//! handover when a replica joins and by expiry when one is killed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use kube::api::{DeleteParams, Patch, PatchParams};
use leasehold_tests::chaos::{Fleet, Setup, Writers};
use leasehold_tests::eventually;
use nix::sys::signal::Signal;
use serde_json::json;

/// Six shards, one writing plugin on each.
const SHARDS: u32 = 6;
/// Generous for a busy 2-core machine: correctness, not speed.
const PATIENCE: Duration = Duration::from_secs(90);

/// Waits until the Leases give each replica exactly `share` writers (by
/// their identities), and the Plugin statuses say so too.
async fn shares_become(fleet: &Fleet, expected: &[(&str, usize)]) -> anyhow::Result<()> {
    let expected: BTreeMap<String, usize> = expected
        .iter()
        .map(|(identity, share)| ((*identity).to_owned(), *share))
        .collect();
    let what = format!("the writers to be spread {expected:?}");
    eventually(PATIENCE, &what, || async {
        let shares = fleet.shares().await.ok()?;
        let holders = fleet.holders().await.ok()?;
        let running_on = fleet.running_on().await.ok()?;
        (shares == expected && running_on == holders).then_some(())
    })
    .await
    .with_context(|| format!("shares never became {expected:?}\n{}", fleet.logs()))
}

async fn every_writer_writes(fleet: &Fleet) -> anyhow::Result<()> {
    for writer in &fleet.writers {
        fleet
            .writes_resume_of(writer)
            .await
            .with_context(|| fleet.logs())?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_spread_evenly_run_once_and_follow_replicas_that_join_and_die() -> anyhow::Result<()>
{
    let mut fleet = Fleet::start_with(Setup::spread(2, SHARDS)).await?;
    shares_become(&fleet, &[("replica-0", 3), ("replica-1", 3)]).await?;

    // A joining replica takes its share by handover.
    fleet.add_replica().await?;
    shares_become(
        &fleet,
        &[("replica-0", 2), ("replica-1", 2), ("replica-2", 2)],
    )
    .await?;
    every_writer_writes(&fleet).await?;

    // A killed replica's writers move to the others once its Leases
    // expire. (That the others lead what they led all along is asserted
    // by the placement unit tests: here a survivor slowed by a loaded
    // machine can lose a shard by expiry, which is correct.)
    let killed = Instant::now();
    fleet.signal("replica-1", Signal::SIGKILL)?;
    shares_become(&fleet, &[("replica-0", 3), ("replica-2", 3)]).await?;
    every_writer_writes(&fleet).await?;
    println!("killed replica's writers moved in {:?}", killed.elapsed());

    // A deleted plugin frees its shard: nobody leads it any more.
    let deleted = fleet.writers[0].clone();
    let lease = fleet.lease_of_writer(&deleted);
    fleet
        .plugins()?
        .delete(&deleted, &DeleteParams::default())
        .await?;
    eventually(
        PATIENCE,
        "the deleted plugin's shard to be released",
        || async { fleet.holder_of(&lease).await.ok()?.is_none().then_some(()) },
    )
    .await
    .with_context(|| fleet.logs())?;

    // A suspended one stops on its replica; the rest keep writing.
    let suspended = fleet.writers[1].clone();
    fleet
        .plugins()?
        .patch(
            &suspended,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await?;
    eventually(PATIENCE, "the suspended plugin to stop", || async {
        let running_on = fleet.running_on().await.ok()?;
        running_on.get(&suspended)?.is_none().then_some(())
    })
    .await
    .with_context(|| fleet.logs())?;
    for writer in &fleet.writers[2..] {
        fleet.writes_resume_of(writer).await?;
    }

    let verdict = fleet.judge()?;
    assert!(
        verdict.split_brain.is_empty(),
        "writes committed while another replica led their shard: {:?}",
        verdict.split_brain
    );
    for replica in ["replica-0", "replica-1", "replica-2"] {
        assert!(
            verdict.committed_by.get(replica).is_some_and(|&n| n > 0),
            "{replica} ran no writer: {:?}",
            verdict.committed_by
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replica_list_names_the_shards_each_replica_leads() -> anyhow::Result<()> {
    let fleet = Fleet::start_with(Setup::spread(2, 2)).await?;
    shares_become(&fleet, &[("replica-0", 1), ("replica-1", 1)]).await?;
    let replicas = fleet.replica_view("replica-0").await?;
    let mut shards: Vec<String> = replicas["replicas"]
        .as_array()
        .context("a list of replicas")?
        .iter()
        .flat_map(|replica| {
            replica["shards"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|shard| shard.as_str().map(str::to_owned))
        })
        .collect();
    shards.sort();
    assert_eq!(
        shards,
        ["leasehold-shard-0", "leasehold-shard-1"],
        "{replicas}"
    );
    for replica in ["replica-0", "replica-1"] {
        let (_, metrics) = fleet.replica_get(replica, "/metrics").await?;
        assert!(
            metrics.contains("leasehold_placement_shards_led 1\n"),
            "{replica}: {metrics}"
        );
    }
    Ok(())
}

/// A rolling switch from leader to spread placement: the spread replica
/// leads no shard while the leader-mode replica is there (every write is
/// the leader's), and takes every plugin once it has drained and left.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_of_another_placement_wait_until_the_old_ones_have_left() -> anyhow::Result<()> {
    let mut fleet = Fleet::start_with(Setup {
        replicas: 1,
        writers: Writers::Named(vec!["a".into(), "b".into()]),
        ..Setup::leader(true)
    })
    .await?;
    let newcomer = fleet
        .add_replica_with(&["--placement=spread", "--shards=2"])
        .await?;
    eventually(
        PATIENCE,
        "the spread replica to see the disagreement",
        || async {
            fleet
                .log_of(&newcomer)
                .ok()?
                .contains("no shard is led until every replica runs plugins the same way")
                .then_some(())
        },
    )
    .await
    .with_context(|| fleet.logs())?;
    // Writes go on meanwhile, all of them the leader-mode replica's.
    every_writer_writes(&fleet).await?;
    every_writer_writes(&fleet).await?;
    let verdict = fleet.judge()?;
    assert_eq!(
        verdict.committed_by.get(&newcomer),
        None,
        "the spread replica ran plugins beside the leader: {:?}",
        verdict.committed_by
    );

    fleet.signal("replica-0", Signal::SIGTERM)?;
    fleet.exited("replica-0").await?;
    every_writer_writes(&fleet).await?;
    let verdict = fleet.judge()?;
    assert!(
        verdict.committed_by.get(&newcomer).is_some_and(|&n| n > 0),
        "the spread replica never took over: {:?}\n{}",
        verdict.committed_by,
        fleet.logs()
    );
    Ok(())
}
