//! Leader-only writes, proven on a plugin's: three replicas, a plugin
//! writing with server-side apply (no resourceVersion, so no object-level
//! compare-and-swap can refuse a late write), a fault of every kind into
//! whichever replica leads, and the API server's audit log as the judge.
//!
//! Takeover speed is measured by `make chaos` and `make bench-failover`;
//! here only what must never happen is asserted.

use std::time::Duration;

use leasehold_tests::chaos::{Fault, Fleet, LEASE};
use leasehold_tests::eventually;
use nix::sys::signal::Signal;

/// Both tests run three replicas on two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a sleeping reconcile may take to show.
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn no_plugin_write_is_committed_outside_its_term_through_every_fault() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut fleet = Fleet::start(true).await?;
    let mut delayed = None;
    for fault in Fault::ALL {
        let injected = fleet.inject(fault).await?;
        eprintln!(
            "{}: {} → {} in {:?}",
            fault.name(),
            injected.deposed,
            injected.successor,
            injected.takeover
        );
        if fault == Fault::Delay {
            delayed = Some(injected);
        }
    }
    let delayed = delayed.expect("the delay fault ran");
    let stale = format!(
        "stale leadership term {}/{LEASE}/{}/",
        fleet.namespace, delayed.deposed
    );
    let verdict = fleet
        .judged(
            "the delayed write to be refused in the audit log",
            |verdict| {
                verdict.refused.iter().any(|refusal| {
                    refusal.replica == delayed.deposed
                        && refusal.code == 403
                        && refusal.message.contains(&stale)
                })
            },
        )
        .await?;
    assert!(
        verdict.split_brain.is_empty(),
        "writes committed while another replica held the Lease: {:#?}",
        verdict.split_brain
    );
    assert!(verdict.committed > 0, "the plugin wrote nothing");
    assert!(
        verdict.takeovers > Fault::ALL.len(),
        "the audit log shows {} takeovers",
        verdict.takeovers
    );
    Ok(())
}

#[tokio::test]
async fn without_fencing_a_delayed_write_lands_after_the_takeover() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut fleet = Fleet::start(false).await?;
    let injected = fleet.inject(Fault::Delay).await?;
    let verdict = fleet
        .judged("the delayed write to land in the audit log", |verdict| {
            verdict.split_brain.iter().any(|write| {
                write.replica == injected.deposed
                    && write.holder.as_deref() == Some(injected.successor.as_str())
            })
        })
        .await?;
    assert!(verdict.refused.is_empty(), "{:?}", verdict.refused);
    Ok(())
}

#[tokio::test]
async fn shutdown_lets_a_reconcile_in_flight_finish_its_write_before_the_lease_goes()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let mut fleet = Fleet::start(true).await?;
    // Alone, so that nobody takes over and writes after it.
    let leader = fleet.leave_the_leader_alone().await?;
    // Each reconcile now says it sleeps, sleeps 2 s, then writes.
    fleet.set_writer(&[("delay", "2000")]).await?;
    eventually(PATIENCE, "a reconcile to be sleeping", || async {
        (fleet.last_phase().await.ok()?.as_deref() == Some("sleeping")).then_some(())
    })
    .await?;
    assert_eq!(fleet.signal_leader(Signal::SIGTERM).await?, leader);
    let code = fleet.exited(&leader).await?;
    assert_eq!(code, Some(0), "{}", fleet.logs());
    assert_eq!(
        fleet.last_phase().await?.as_deref(),
        Some("written"),
        "the reconcile in flight at SIGTERM finished its write before the release:\n{}",
        fleet.logs()
    );
    assert_eq!(fleet.holder().await?, None, "the Lease was released");
    let verdict = fleet.judge()?;
    assert!(verdict.split_brain.is_empty(), "{:#?}", verdict.split_brain);
    Ok(())
}
