//! Spread placement at run time: one elector per shard, wanted only where
//! [`assign`] puts the shard.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{ShardView, assign, shard_lease_name, shard_of};
use crate::controllers::Controllers;
use crate::election::directory::REPLICA_OF_LABEL;
use crate::election::roles::LeaderRoles;
use crate::election::{self, ElectionMetrics, Elector, LeaseClient, Role, Status};
use crate::plugins::{Catalog, State};

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
        loop {
            let now = Instant::now();
            let members = seen.live_members(&config.identity, now);
            let views = seen.shard_views(&catalog.borrow(), shards, &shard_by_name, now);
            let desired = assign(&members, &views);
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
                    if let Some((name, lease)) = seen.record(Kind::Shard, event)
                        && let Some(&index) = shard_by_name.get(&name)
                    {
                        changes[index].send_replace(lease);
                    }
                }
                Some(event) = announcements.next() => {
                    seen.record(Kind::Announcement, event);
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Shard,
    Announcement,
}

/// The Leases of the election as this replica has seen them, each with
/// the local instant its current version was first seen (expiry is judged
/// from there, as the elector does, never from another replica's clock).
#[derive(Default)]
struct Seen {
    leases: HashMap<(bool, String), Observed>,
}

struct Observed {
    lease: Lease,
    since: Instant,
}

impl Observed {
    /// Its holder, while its duration has not run out since it was seen.
    fn holder(&self, now: Instant) -> Option<&str> {
        let spec = self.lease.spec.as_ref()?;
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
        (now < self.expires_at()).then_some(holder)
    }

    fn expired_holder(&self, now: Instant) -> Option<&str> {
        let spec = self.lease.spec.as_ref()?;
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
        (now >= self.expires_at()).then_some(holder)
    }

    fn expires_at(&self) -> Instant {
        let seconds = self
            .lease
            .spec
            .as_ref()
            .and_then(|spec| spec.lease_duration_seconds)
            .unwrap_or(0);
        self.since + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    }
}

impl Seen {
    /// Records a watch event; returns the Lease's name and its new state
    /// (`None`: deleted) when one changed.
    fn record(
        &mut self,
        kind: Kind,
        event: Result<Event<Lease>, watcher::Error>,
    ) -> Option<(String, Option<Lease>)> {
        let shard = kind == Kind::Shard;
        match event {
            Ok(Event::Apply(lease) | Event::InitApply(lease)) => {
                let name = lease.metadata.name.clone()?;
                let key = (shard, name.clone());
                let unchanged = self.leases.get(&key).is_some_and(|seen| {
                    seen.lease.metadata.resource_version == lease.metadata.resource_version
                });
                if !unchanged {
                    self.leases.insert(
                        key,
                        Observed {
                            lease: lease.clone(),
                            since: Instant::now(),
                        },
                    );
                }
                Some((name, Some(lease)))
            }
            Ok(Event::Delete(lease)) => {
                let name = lease.metadata.name?;
                self.leases.remove(&(shard, name.clone()));
                Some((name, None))
            }
            Ok(Event::Init | Event::InitDone) => None,
            Err(error) => {
                debug!(%error, "lease watch interrupted; reconnecting");
                None
            }
        }
    }

    fn of(&self, shard: bool) -> impl Iterator<Item = &Observed> {
        self.leases
            .iter()
            .filter(move |((is_shard, _), _)| *is_shard == shard)
            .map(|(_, observed)| observed)
    }

    /// The replicas whose announcement is live, less those that let a
    /// shard Lease expire (gone or cut off: their shards must move now,
    /// not when their announcement runs out too). This replica is always
    /// live to itself.
    fn live_members(&self, identity: &str, now: Instant) -> Vec<String> {
        let lapsed: Vec<&str> = self
            .of(true)
            .filter_map(|observed| observed.expired_holder(now))
            .collect();
        let mut members: Vec<String> = self
            .of(false)
            .filter_map(|observed| observed.holder(now))
            .filter(|member| !lapsed.contains(member) && *member != identity)
            .map(str::to_owned)
            .collect();
        members.push(identity.to_owned());
        members.sort();
        members.dedup();
        members
    }

    /// Each shard's plugins (from the catalogue) and live holder.
    fn shard_views(
        &self,
        catalog: &Catalog,
        shards: u32,
        shard_by_name: &HashMap<String, usize>,
        now: Instant,
    ) -> Vec<ShardView> {
        let mut views = vec![ShardView::default(); shards as usize];
        for (key, entry) in &catalog.entries {
            let view = &mut views[shard_of(key, shards) as usize];
            view.needed = true;
            let runs = !entry.suspend && matches!(entry.state, State::Ready(_) | State::Preparing);
            view.weight += u32::from(runs);
        }
        for ((_, name), observed) in self.leases.iter().filter(|((shard, _), _)| *shard) {
            if let Some(&index) = shard_by_name.get(name) {
                views[index].holder = observed.holder(now).map(str::to_owned);
            }
        }
        views
    }

    /// The next instant at which a Lease seen now runs out.
    fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.leases
            .values()
            .filter(|observed| observed.holder(now).is_some())
            .map(Observed::expires_at)
            .min()
    }
}
