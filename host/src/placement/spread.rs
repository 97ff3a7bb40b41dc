//! Spread placement at run time: one elector per shard, wanted only where
//! [`assign`] puts the shard.

use std::collections::HashMap;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::agreement::Disagreement;
use super::seen::{Seen, Watched};
use super::{Placement, assign, shard_lease_name};
use crate::controllers::Controllers;
use crate::election::directory::REPLICA_OF_LABEL;
use crate::election::roles::LeaderRoles;
use crate::election::{self, ElectionMetrics, Elector, LeaseClient, Role, Status};
use crate::plugins::Catalog;

/// Every replica's side of spread placement.
pub struct Spread {
    config: election::Config,
    shards: u32,
    leases: LeaseClient,
    catalog: watch::Receiver<Catalog>,
    controllers: Controllers,
    prepared: watch::Receiver<bool>,
    metrics: ElectionMetrics,
    /// How many shards this replica leads, for `/metrics`.
    led: Gauge,
}

impl std::fmt::Debug for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spread")
            .field("lease", &self.config.lease_name)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl Spread {
    /// `controllers` is the role every shard runs, narrowed to the shard;
    /// `leases` the main Lease's client, which the shards' derive from.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: election::Config,
        shards: u32,
        leases: LeaseClient,
        catalog: watch::Receiver<Catalog>,
        controllers: Controllers,
        prepared: watch::Receiver<bool>,
        metrics: ElectionMetrics,
        led: Gauge,
    ) -> Self {
        Self {
            config,
            shards,
            leases,
            catalog,
            controllers,
            prepared,
            metrics,
            led,
        }
    }

    /// Runs until `shutdown`, then waits for every shard this replica
    /// leads to drain and be released.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self {
            config,
            shards,
            leases,
            mut catalog,
            controllers,
            prepared,
            metrics,
            led,
        } = self;
        let mut electors = JoinSet::new();
        let mut shard_by_name = HashMap::new();
        let mut changes = Vec::new();
        let mut wanted = Vec::new();
        let mut statuses = Vec::new();
        for index in 0..shards {
            let name = shard_lease_name(&config.lease_name, index);
            let (changes_tx, changes_rx) = watch::channel(None);
            let (wanted_tx, wanted_rx) = watch::channel(false);
            let (status_tx, status) = watch::channel(Status::default());
            let shard_config = election::Config {
                lease_name: name.clone(),
                ..config.clone()
            };
            let roles = LeaderRoles::new().with(controllers.for_shard(index, shards));
            let elector = Elector::new(
                shard_config,
                leases.shard(&name, changes_rx),
                status_tx,
                metrics.clone(),
            )
            .ready_when(prepared.clone())
            .wanted_when(wanted_rx);
            electors.spawn(elector.run(roles, shutdown.clone()));
            shard_by_name.insert(name, index as usize);
            changes.push(changes_tx);
            wanted.push(wanted_tx);
            statuses.push(status);
        }
        info!(shards, "spreading plugins over the live replicas");

        let api: Api<Lease> = leases.api().clone();
        let mut shard_leases = std::pin::pin!(
            watcher::watcher(
                api.clone(),
                watcher::Config::default().labels(&leases.election_selector())
            )
            .default_backoff()
        );
        let mut announcements = std::pin::pin!(
            watcher::watcher(
                api,
                watcher::Config::default()
                    .labels(&format!("{REPLICA_OF_LABEL}={}", config.lease_name))
            )
            .default_backoff()
        );
        let mut seen = Seen::default();
        let mut catalog_open = true;
        let ours = Placement::Spread { shards }.announced();
        let mut said: Option<Result<(), Disagreement>> = None;
        loop {
            let now = Instant::now();
            let agreed = seen.spread_may_lead(&ours, &config.lease_name, &config.identity, now);
            if said.as_ref() != Some(&agreed) {
                match &agreed {
                    Ok(()) if said.is_some() => {
                        info!("replicas agree on spread placement; shards may be led")
                    }
                    Ok(()) => {}
                    Err(reason) => {
                        warn!(%reason, "no shard is led until every replica runs plugins the same way")
                    }
                }
                said = Some(agreed.clone());
            }
            let desired = if agreed.is_ok() {
                let members = seen.live_members(&config.identity, now);
                let views = seen.shard_views(&catalog.borrow(), shards, &shard_by_name, now);
                assign(&members, &views)
            } else {
                vec![None; shards as usize]
            };
            for (index, holder) in desired.iter().enumerate() {
                let mine = holder.as_deref() == Some(config.identity.as_str());
                wanted[index].send_if_modified(|wanted| {
                    let changed = *wanted != mine;
                    if changed {
                        debug!(shard = index, mine, "shard assignment changed");
                    }
                    *wanted = mine;
                    changed
                });
            }
            let leading = statuses
                .iter()
                .filter(|status| status.borrow().role == Role::Leader)
                .count();
            led.set(i64::try_from(leading).unwrap_or(i64::MAX));
            // Past expiries are no wake-up; the next renewal is.
            let wake_at = seen.next_expiry(now).unwrap_or(now + config.retry_period);
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(event) = shard_leases.next() => {
                    if let Some((name, lease)) = seen.record(Watched::Election, event)
                        && let Some(&index) = shard_by_name.get(&name)
                    {
                        changes[index].send_replace(lease);
                    }
                }
                Some(event) = announcements.next() => {
                    seen.record(Watched::Announcement, event);
                }
                changed = catalog.changed(), if catalog_open => catalog_open = changed.is_ok(),
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
        led.set(0);
        // Each elector drains and releases the shards it leads.
        while electors.join_next().await.is_some() {}
    }
}
