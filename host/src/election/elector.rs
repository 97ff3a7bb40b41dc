//! The election loop: follow until the Lease can be taken, lead until it
//! cannot be renewed, and hand over on shutdown.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use super::lease_client::{LeaseClient, LeaseError};
use super::{Config, LeaderGuard, LeaderRecord, Role, Status};
use crate::metrics::ElectionMetrics;
use crate::roles::LeaderRoles;

/// Followers poll up to this fraction later than the retry period, so that
/// replicas started together do not hit the API server in lockstep.
const POLL_JITTER: f64 = 0.2;

/// Runs one replica's side of the election.
#[derive(Debug)]
pub struct Elector {
    config: Config,
    leases: LeaseClient,
    status: watch::Sender<Status>,
    metrics: ElectionMetrics,
    /// The last version of the Lease this replica read or wrote.
    observed: Option<Observed>,
}

#[derive(Debug)]
struct Observed {
    lease: Lease,
    /// Local instant at which this resourceVersion was first seen. Expiry is
    /// judged from here, never from the Lease's renewTime.
    since: Instant,
}

/// Why a leadership term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TermEnd {
    /// The process is shutting down: hand the Lease over.
    Shutdown,
    /// No renewal succeeded before the renew deadline.
    DeadlinePassed,
    /// Another replica holds the Lease.
    Lost,
}

/// The outcome of one attempt to take the Lease.
enum Attempt {
    Acquired,
    HeldBy { holder: String, expires_at: Instant },
}

impl Elector {
    pub fn new(
        config: Config,
        leases: LeaseClient,
        status: watch::Sender<Status>,
        metrics: ElectionMetrics,
    ) -> Self {
        Self {
            config,
            leases,
            status,
            metrics,
            observed: None,
        }
    }

    /// Follows and leads until `shutdown` is cancelled, then stops the
    /// leader-only `roles` and releases the Lease if this replica holds it.
    pub async fn run(mut self, mut roles: LeaderRoles, shutdown: CancellationToken) {
        let (changes_tx, mut changes) = watch::channel(None);
        let watch_task = AbortOnDropHandle::new(tokio::spawn(forward_changes(
            self.leases.clone(),
            changes_tx,
        )));
        loop {
            let Some(guard) = self.follow(&mut changes, &shutdown).await else {
                break;
            };
            roles.start(guard.clone());
            let end = self.lead(&guard, &shutdown).await;
            // Leader-only work stops before anything else happens: before the
            // Lease is released and before this replica may acquire again.
            roles.stop().await;
            self.status.send_modify(|status| {
                status.role = Role::Follower;
                status.leader_since = None;
                status.last_renew = None;
            });
            info!(reason = ?end, "stopped leading");
            if end == TermEnd::Shutdown {
                self.release().await;
                break;
            }
        }
        drop(watch_task);
    }

    /// Tries to acquire until it succeeds (returning the new term's guard)
    /// or `shutdown` is cancelled.
    async fn follow(
        &mut self,
        changes: &mut watch::Receiver<Option<Lease>>,
        shutdown: &CancellationToken,
    ) -> Option<LeaderGuard> {
        // A Lease just delivered by the watch: decide on it without a GET.
        let mut fresh: Option<Lease> = None;
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            // Taken before the first request of the attempt: the term is
            // measured from the earliest moment the write could have happened.
            let started = Instant::now();
            let wake_at = match self.try_acquire(fresh.take()).await {
                Ok(Attempt::Acquired) => {
                    let guard = LeaderGuard::new(started + self.config.renew_deadline);
                    self.became_leader(started);
                    return Some(guard);
                }
                Ok(Attempt::HeldBy { holder, expires_at }) => {
                    debug!(%holder, "lease is held by another replica");
                    expires_at.min(self.next_poll())
                }
                // Someone else wrote first: re-read at once.
                Err(LeaseError::Conflict) => Instant::now(),
                Err(error) => {
                    debug!(%error, "failed to acquire lease; retrying");
                    self.next_poll()
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep_until(wake_at) => {}
                Ok(()) = changes.changed() => fresh = changes.borrow_and_update().clone(),
            }
        }
    }

    async fn try_acquire(&mut self, fresh: Option<Lease>) -> Result<Attempt, LeaseError> {
        let current = match fresh {
            Some(lease) => Some(lease),
            None => self.leases.get(None).await?,
        };
        let identity = self.config.identity.clone();
        let duration_seconds = self.config.lease_duration_seconds();
        let Some(current) = current else {
            let record =
                LeaderRecord::default().acquired_by(&identity, duration_seconds, Timestamp::now());
            let created = self.leases.create(&record, None).await?;
            self.observe(created);
            return Ok(Attempt::Acquired);
        };
        self.observe(current.clone());
        let record = LeaderRecord::from_lease(&current);
        if let Some(holder) = record.holder.as_ref().filter(|holder| **holder != identity) {
            let expires_at = self.observed_since()
                + Duration::from_secs(u64::try_from(record.lease_duration_seconds).unwrap_or(0));
            if Instant::now() < expires_at {
                return Ok(Attempt::HeldBy {
                    holder: holder.clone(),
                    expires_at,
                });
            }
            info!(%holder, "lease expired; taking over");
        }
        let next = record.acquired_by(&identity, duration_seconds, Timestamp::now());
        let written = self.leases.replace(&current, &next, None).await?;
        self.observe(written);
        Ok(Attempt::Acquired)
    }

    /// Renews every retry period until the term ends.
    async fn lead(&mut self, guard: &LeaderGuard, shutdown: &CancellationToken) -> TermEnd {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return TermEnd::Shutdown,
                () = guard.lost() => return TermEnd::DeadlinePassed,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
            let started = Instant::now();
            let Some(current) = self.observed.as_ref().map(|o| o.lease.clone()) else {
                return TermEnd::Lost;
            };
            let renewed = LeaderRecord::from_lease(&current).renewed(Timestamp::now());
            match self
                .leases
                .replace(&current, &renewed, Some(guard.valid_until()))
                .await
            {
                Ok(written) => {
                    guard.extend(started + self.config.renew_deadline);
                    self.metrics
                        .renew_duration
                        .observe(started.elapsed().as_secs_f64());
                    self.observe(written);
                    self.status
                        .send_modify(|status| status.last_renew = Some(started));
                }
                Err(LeaseError::Conflict) => match self.leases.get(Some(guard.valid_until())).await
                {
                    Ok(Some(lease))
                        if LeaderRecord::from_lease(&lease).is_held_by(&self.config.identity) =>
                    {
                        // Still ours (someone touched another field): renew
                        // from this version on the next round.
                        self.observe(lease);
                    }
                    Ok(lease) => {
                        if let Some(lease) = lease {
                            self.observe(lease);
                        }
                        return TermEnd::Lost;
                    }
                    Err(error) => warn!(%error, "failed to re-read lease after a conflict"),
                },
                Err(error) => {
                    let left = guard
                        .valid_until()
                        .saturating_duration_since(Instant::now());
                    warn!(%error, ?left, "failed to renew lease; retrying until the renew deadline");
                }
            }
        }
    }

    /// Hands the Lease over: empty holder, so followers take it at once.
    async fn release(&mut self) {
        let Some(current) = self.observed.as_ref().map(|o| o.lease.clone()) else {
            return;
        };
        let record = LeaderRecord::from_lease(&current);
        if !record.is_held_by(&self.config.identity) {
            return;
        }
        match self
            .leases
            .replace(&current, &record.released(Timestamp::now()), None)
            .await
        {
            Ok(written) => {
                self.observe(written);
                info!("released lease");
            }
            // Someone else already holds it: there is nothing to release.
            Err(LeaseError::Conflict) => debug!("lease changed before release"),
            Err(error) => {
                warn!(%error, "failed to release lease; another replica takes over when it expires")
            }
        }
    }

    fn became_leader(&mut self, started: Instant) {
        self.metrics.acquisitions.inc();
        self.metrics
            .renew_duration
            .observe(started.elapsed().as_secs_f64());
        self.status.send_modify(|status| {
            status.role = Role::Leader;
            status.leader_since = Some(Timestamp::now());
            status.last_renew = Some(started);
            status.acquisitions += 1;
        });
        let transitions = self.status.borrow().transitions;
        info!(identity = %self.config.identity, transitions, "acquired lease; leading");
    }

    /// Records `lease` as the latest version seen, restarting the expiry
    /// clock only when its resourceVersion changed.
    fn observe(&mut self, lease: Lease) {
        let unchanged = self.observed.as_ref().is_some_and(|observed| {
            observed.lease.metadata.resource_version == lease.metadata.resource_version
        });
        let since = match &self.observed {
            Some(observed) if unchanged => observed.since,
            _ => Instant::now(),
        };
        let record = LeaderRecord::from_lease(&lease);
        self.status.send_modify(|status| {
            if status.role == Role::Starting {
                status.role = Role::Follower;
            }
            status.holder = record.holder.clone();
            status.transitions = record.transitions;
        });
        self.observed = Some(Observed { lease, since });
    }

    fn observed_since(&self) -> Instant {
        self.observed
            .as_ref()
            .map_or_else(Instant::now, |observed| observed.since)
    }

    fn next_poll(&self) -> Instant {
        let jitter = 1.0 + rand::random::<f64>() * POLL_JITTER;
        Instant::now() + self.config.retry_period.mul_f64(jitter)
    }
}

/// Forwards every change of the Lease from its watch into `changes`, so the
/// follower loop wakes on a release instead of on its next poll.
async fn forward_changes(leases: LeaseClient, changes: watch::Sender<Option<Lease>>) {
    use futures::StreamExt;
    let mut stream = std::pin::pin!(leases.watch());
    while let Some(lease) = stream.next().await {
        changes.send_replace(lease);
    }
}
