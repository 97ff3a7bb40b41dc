//! Whether the replicas agree on where plugins run: a replica runs plugins
//! only while they do (see the [module docs](super#changing-placement)).

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::seen::{Seen, Watched};
use crate::election::{self, LeaseClient};

/// Why plugins must wait: other replicas run them another way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Disagreement {
    /// Nobody holds the election Lease, so nobody says how plugins run.
    #[error("nobody holds the election Lease yet")]
    Unheld,
    /// The election Lease's holder runs plugins another way.
    #[error(
        "the election Lease is held by {holder}, whose placement is {} (this replica's: {ours:?})",
        placement.as_deref().map_or_else(|| "not announced".to_owned(), |p| format!("{p:?}"))
    )]
    Holder {
        holder: String,
        placement: Option<String>,
        ours: String,
    },
    /// A shard Lease is held by a replica that runs plugins another way.
    #[error("shard Lease {shard} is held by {holder}, which runs plugins another way")]
    ShardHeld { shard: String, holder: String },
}

/// Says through `agreed` whether this leader-mode replica may run its
/// plugins (no shard Lease held), following the election's Leases with a
/// watch until `shutdown`. Starts as "no" until the watch has listed.
pub async fn watch_leader_agreement(
    leases: LeaseClient,
    config: election::Config,
    agreed: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let api: Api<Lease> = leases.api().clone();
    let mut events = std::pin::pin!(
        watcher::watcher(
            api,
            watcher::Config::default().labels(&leases.election_selector())
        )
        .default_backoff()
    );
    let mut seen = Seen::default();
    let mut listed = false;
    let mut said: Option<Result<(), Disagreement>> = None;
    loop {
        let now = Instant::now();
        if listed {
            let verdict = seen.leader_may_run(&config.lease_name, now);
            if said.as_ref() != Some(&verdict) {
                match &verdict {
                    Ok(()) if said.is_some() => info!("no shard is led any more; plugins may run"),
                    Ok(()) => {}
                    Err(reason) => {
                        warn!(%reason, "plugins wait until no replica runs them another way")
                    }
                }
                agreed.send_replace(verdict.is_ok());
                said = Some(verdict);
            }
        }
        let wake_at = seen.next_expiry(now).unwrap_or(now + config.retry_period);
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(event) = events.next() => {
                listed |= matches!(event, Ok(watcher::Event::InitDone));
                seen.record(Watched::Election, event);
            }
            () = tokio::time::sleep_until(wake_at) => {}
        }
    }
}
