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

use super::lease_client::{LeaseClient, LeaseError, Leases};
use super::roles::LeaderRoles;
use super::{Config, ElectionMetrics, LeaderGuard, LeaderRecord, Role, Status};

/// Followers poll up to this fraction later than the retry period, so that
/// replicas started together do not hit the API server in lockstep.
const POLL_JITTER: f64 = 0.2;

/// How long a shutting-down leader keeps its term for work in flight to
/// finish before it stops it and releases the Lease. Inside the chart's
/// `terminationGracePeriodSeconds` (30 s) with room for the release, so a
/// pod is not killed holding the Lease; a reconcile with a longer timeout
/// is cut at this point (its guard fails, its writes are refused).
const DRAIN_LIMIT: Duration = Duration::from_secs(25);

/// Runs one replica's side of the election, on the Lease that `L` reads
/// and writes (the API server's, except in unit tests).
#[derive(Debug)]
pub struct Elector<L = LeaseClient> {
    config: Config,
    leases: L,
    status: watch::Sender<Status>,
    metrics: ElectionMetrics,
    /// The last version of the Lease this replica read or wrote.
    observed: Option<Observed>,
    /// Becomes true once this replica is fit to lead (see
    /// [`Elector::ready_when`]); it does not try to acquire before.
    ready: Option<watch::Receiver<bool>>,
    /// Whether this replica should lead this Lease at all (see
    /// [`Elector::wanted_when`]); always, without one.
    wanted: Option<watch::Receiver<bool>>,
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
    /// The Lease should be led elsewhere: hand it over and follow.
    Handover,
    /// Another replica holds the Lease.
    Lost,
}

/// The outcome of one attempt to take the Lease.
enum Attempt {
    Acquired,
    HeldBy { holder: String, expires_at: Instant },
}

impl<L: Leases> Elector<L> {
    pub fn new(
        config: Config,
        leases: L,
        status: watch::Sender<Status>,
        metrics: ElectionMetrics,
    ) -> Self {
        Self {
            config,
            leases,
            status,
            metrics,
            observed: None,
            ready: None,
            wanted: None,
        }
    }

    /// Campaigns only while `wanted` is true, and hands the Lease over
    /// (drain, stop, release, as on shutdown) when it turns false while
    /// leading; meanwhile it keeps following the Lease through its watch,
    /// so the moment it is wanted it judges expiry from what it has seen
    /// rather than starting to watch from scratch. Spread placement runs
    /// one elector per shard this way, each wanted by one replica.
    pub fn wanted_when(mut self, wanted: watch::Receiver<bool>) -> Self {
        self.wanted = Some(wanted);
        self
    }

    /// Tries to acquire only once `ready` is true (the replica's plugins
    /// are compiled, so a new pod never wins the Lease while its compiler
    /// would keep every plugin waiting). Readiness is a latch: once true it
    /// is never waited for again.
    pub fn ready_when(mut self, ready: watch::Receiver<bool>) -> Self {
        self.ready = Some(ready);
        self
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
            let end = self.lead(&guard, &mut roles, &shutdown).await;
            // Leader-only work stops before anything else happens: before the
            // Lease is released and before this replica may acquire again.
            roles.stop().await;
            self.status.send_modify(|status| {
                status.role = Role::Follower;
                status.leader_since = None;
                status.last_renew = None;
            });
            info!(lease = %self.config.lease_name, reason = ?end, "stopped leading");
            match end {
                TermEnd::Shutdown => {
                    self.release().await;
                    break;
                }
                TermEnd::Handover => self.release().await,
                TermEnd::DeadlinePassed | TermEnd::Lost => {}
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
        if let Some(mut ready) = self.ready.take() {
            if !*ready.borrow() {
                debug!("not campaigning until this replica's plugins are compiled");
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                // A closed channel is a readiness that will never come
                // from it: campaign rather than never.
                _ = ready.wait_for(|ready| *ready) => {}
            }
        }
        // A Lease just delivered by the watch: decide on it without a GET.
        let mut fresh: Option<Lease> = None;
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            if !self.is_wanted() {
                fresh = self.watch_until_wanted(changes, shutdown).await?;
            }
            // Taken before the first request of the attempt: the term is
            // measured from the earliest moment the write could have happened.
            let started = Instant::now();
            let wake_at = match self.try_acquire(fresh.take()).await {
                Ok(Attempt::Acquired) => {
                    self.became_leader(started);
                    let term = format!(
                        "{}/{}/{}/{}",
                        self.config.namespace,
                        self.config.lease_name,
                        self.config.identity,
                        self.status.borrow().transitions
                    );
                    let guard =
                        LeaderGuard::with_term(started + self.config.renew_deadline, Some(term));
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
            let mut wanted = self.wanted.clone();
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep_until(wake_at) => {}
                Ok(()) = changes.changed() => fresh = changes.borrow_and_update().clone(),
                _ = unwanted(&mut wanted) => {}
            }
        }
    }

    fn is_wanted(&self) -> bool {
        self.wanted.as_ref().is_none_or(|wanted| *wanted.borrow())
    }

    /// Follows the Lease from its watch alone (no requests) until this
    /// replica is wanted as its leader; returns the latest Lease seen, to
    /// decide on at once. `None` on shutdown.
    async fn watch_until_wanted(
        &mut self,
        changes: &mut watch::Receiver<Option<Lease>>,
        shutdown: &CancellationToken,
    ) -> Option<Option<Lease>> {
        let mut wanted = self.wanted.clone()?;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                // A closed channel: nobody will ever want it again.
                closed = async { wanted.wait_for(|wanted| *wanted).await.is_err() } => {
                    if closed {
                        shutdown.cancelled().await;
                        return None;
                    }
                    return Some(changes.borrow_and_update().clone());
                }
                Ok(()) = changes.changed() => {
                    if let Some(lease) = changes.borrow_and_update().clone() {
                        self.observe(lease);
                    }
                }
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
        // A Lease in this replica's own name is waited out like anyone
        // else's: this process is not leading, so the holder is an earlier
        // process with the same identity (a restarted pod) or this one's
        // previous term, and either may still have writes in flight.
        if let Some(holder) = &record.holder {
            let expires_at = self.observed_since()
                + Duration::from_secs(u64::try_from(record.lease_duration_seconds).unwrap_or(0));
            if Instant::now() < expires_at {
                if *holder == identity {
                    debug!(
                        "the lease names this identity from an earlier term; waiting out its duration"
                    );
                }
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

    /// Renews every retry period until the term ends. On shutdown it asks
    /// the roles to drain and keeps renewing until they have finished (or
    /// [`DRAIN_LIMIT`] passed), so work in flight completes inside the term
    /// instead of being cut off by it.
    async fn lead(
        &mut self,
        guard: &LeaderGuard,
        roles: &mut LeaderRoles,
        shutdown: &CancellationToken,
    ) -> TermEnd {
        let mut drain_until: Option<Instant> = None;
        // Why the term is draining: shutdown, or a handover.
        let mut ending = TermEnd::Shutdown;
        let mut wanted = self.wanted.clone();
        loop {
            let draining = drain_until.is_some();
            let drain_limit = drain_until.unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !draining => {
                    info!("shutting down; draining leader-only work before the release");
                    guard.drain();
                    drain_until = Some(Instant::now() + DRAIN_LIMIT);
                    continue;
                }
                () = unwanted(&mut wanted), if !draining => {
                    info!(lease = %self.config.lease_name, "to be led elsewhere; draining leader-only work before handing over");
                    guard.drain();
                    drain_until = Some(Instant::now() + DRAIN_LIMIT);
                    ending = TermEnd::Handover;
                    continue;
                }
                () = roles.finished(), if draining => return ending,
                () = tokio::time::sleep_until(drain_limit), if draining => {
                    warn!(limit = ?DRAIN_LIMIT, "leader-only work did not drain in time; stopping it");
                    return ending;
                }
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

/// Resolves once `wanted` is false; never without a gate, or once nothing
/// can change it any more.
async fn unwanted(wanted: &mut Option<watch::Receiver<bool>>) {
    let gone = match wanted {
        Some(wanted) => wanted.wait_for(|wanted| !*wanted).await.is_err(),
        None => true,
    };
    if gone {
        std::future::pending::<()>().await;
    }
}

/// Forwards every change of the Lease from its watch into `changes`, so the
/// follower loop wakes on a release instead of on its next poll.
async fn forward_changes(leases: impl Leases, changes: watch::Sender<Option<Lease>>) {
    use futures::StreamExt;
    let mut stream = std::pin::pin!(leases.watch());
    while let Some(lease) = stream.next().await {
        changes.send_replace(lease);
    }
}

#[cfg(test)]
mod tests {
    //! The elector's transitions against an in-memory Lease, under tokio's
    //! paused clock: what a replica does, and when, as the Lease changes.

    use std::sync::{Arc, Mutex};

    use futures::Stream;
    use futures::future::BoxFuture;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::election::roles::LeaderRole;

    const LEASE: Duration = Duration::from_secs(15);
    const RENEW_DEADLINE: Duration = Duration::from_secs(10);
    const RETRY: Duration = Duration::from_secs(2);

    /// What happened, in order: the Lease's writes and the role's starts
    /// and stops.
    type Journal = Arc<Mutex<Vec<String>>>;

    /// One Lease in memory, with compare-and-swap on its resourceVersion.
    #[derive(Clone)]
    struct Memory {
        state: Arc<Mutex<MemoryState>>,
        changes: watch::Sender<Option<Lease>>,
        journal: Journal,
    }

    #[derive(Default)]
    struct MemoryState {
        lease: Option<Lease>,
        version: u64,
        /// Every request times out, as from a partitioned replica.
        unreachable: bool,
    }

    impl Memory {
        fn new(journal: &Journal) -> Self {
            Self {
                state: Arc::default(),
                changes: watch::channel(None).0,
                journal: journal.clone(),
            }
        }

        fn holder(&self) -> Option<String> {
            let state = self.state.lock().unwrap();
            LeaderRecord::from_lease(state.lease.as_ref()?).holder
        }

        fn record(&self) -> Option<LeaderRecord> {
            let state = self.state.lock().unwrap();
            Some(LeaderRecord::from_lease(state.lease.as_ref()?))
        }

        /// Another replica writes the Lease (or, with `None`, releases it).
        fn written_by(&self, holder: Option<&str>) {
            let record = match (self.record(), holder) {
                (record, Some(holder)) => {
                    record
                        .unwrap_or_default()
                        .acquired_by(holder, 15, Timestamp::now())
                }
                (Some(record), None) => record.released(Timestamp::now()),
                (None, None) => return,
            };
            self.store(&record, "another replica");
        }

        fn cut_off(&self) {
            self.state.lock().unwrap().unreachable = true;
        }

        fn store(&self, record: &LeaderRecord, writer: &str) -> Lease {
            let mut state = self.state.lock().unwrap();
            state.version += 1;
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some("election".into()),
                    resource_version: Some(state.version.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(record.to_spec()),
            };
            state.lease = Some(lease.clone());
            self.journal.lock().unwrap().push(format!(
                "{writer} wrote holder {:?}",
                record.holder.as_deref().unwrap_or("")
            ));
            self.changes.send_replace(Some(lease.clone()));
            lease
        }

        /// Fails the way an unreachable API server does: at the deadline.
        async fn reachable(&self, deadline: Option<Instant>) -> Result<(), LeaseError> {
            if !self.state.lock().unwrap().unreachable {
                return Ok(());
            }
            let limit = deadline.map_or(RETRY, |deadline| {
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(RETRY)
            });
            tokio::time::sleep(limit).await;
            Err(LeaseError::Timeout(limit))
        }
    }

    impl Leases for Memory {
        async fn get(&self, deadline: Option<Instant>) -> Result<Option<Lease>, LeaseError> {
            self.reachable(deadline).await?;
            Ok(self.state.lock().unwrap().lease.clone())
        }

        async fn create(
            &self,
            record: &LeaderRecord,
            deadline: Option<Instant>,
        ) -> Result<Lease, LeaseError> {
            self.reachable(deadline).await?;
            if self.state.lock().unwrap().lease.is_some() {
                return Err(LeaseError::Conflict);
            }
            Ok(self.store(record, "elector"))
        }

        async fn replace(
            &self,
            current: &Lease,
            record: &LeaderRecord,
            deadline: Option<Instant>,
        ) -> Result<Lease, LeaseError> {
            self.reachable(deadline).await?;
            let version = self.state.lock().unwrap().version.to_string();
            if current.metadata.resource_version.as_deref() != Some(version.as_str()) {
                return Err(LeaseError::Conflict);
            }
            Ok(self.store(record, "elector"))
        }

        fn watch(&self) -> impl Stream<Item = Option<Lease>> + Send + 'static {
            futures::stream::unfold(self.changes.subscribe(), |mut changes| async move {
                changes.changed().await.ok()?;
                let lease = changes.borrow_and_update().clone();
                Some((lease, changes))
            })
        }
    }

    /// A leader-only role that notes its starts and stops in the journal;
    /// asked to drain, it first finishes work that takes `finishing`.
    struct Noting {
        journal: Journal,
        finishing: Duration,
    }

    impl Noting {
        fn new(journal: &Journal) -> Self {
            Self {
                journal: journal.clone(),
                finishing: Duration::ZERO,
            }
        }
    }

    impl LeaderRole for Noting {
        fn name(&self) -> &str {
            "noting"
        }

        fn lead(&self, guard: LeaderGuard) -> BoxFuture<'static, ()> {
            let (journal, finishing) = (self.journal.clone(), self.finishing);
            Box::pin(async move {
                journal.lock().unwrap().push("role started".into());
                guard.draining().await;
                if !finishing.is_zero() {
                    tokio::time::sleep(finishing).await;
                    let outcome = match guard.check() {
                        Ok(()) => "role finished its work within the term",
                        Err(_) => "role finished its work after the term",
                    };
                    journal.lock().unwrap().push(outcome.into());
                }
                journal.lock().unwrap().push("role stopped".into());
            })
        }
    }

    struct Replica {
        status: watch::Receiver<Status>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Replica {
        fn start(leases: &Memory, journal: &Journal) -> Self {
            Self::with_role(leases, Noting::new(journal))
        }

        fn with_role(leases: &Memory, role: Noting) -> Self {
            Self::with_role_when(leases, role, None, None)
        }

        fn with_role_when(
            leases: &Memory,
            role: Noting,
            ready: Option<watch::Receiver<bool>>,
            wanted: Option<watch::Receiver<bool>>,
        ) -> Self {
            let config = Config {
                namespace: "default".into(),
                lease_name: "election".into(),
                identity: "me".into(),
                lease_duration: LEASE,
                renew_deadline: RENEW_DEADLINE,
                retry_period: RETRY,
                fencing: false,
            };
            let (status_tx, status) = watch::channel(Status::default());
            let mut elector =
                Elector::new(config, leases.clone(), status_tx, ElectionMetrics::new());
            if let Some(ready) = ready {
                elector = elector.ready_when(ready);
            }
            if let Some(wanted) = wanted {
                elector = elector.wanted_when(wanted);
            }
            let roles = LeaderRoles::new().with(role);
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(elector.run(roles, shutdown.clone()));
            Self {
                status,
                shutdown,
                task,
            }
        }

        /// Waits (in paused time, so at no cost) until the replica's role
        /// is `role`; an hour without it fails the test.
        async fn becomes(&mut self, role: Role) {
            let became = self.status.wait_for(|status| status.role == role);
            tokio::time::timeout(Duration::from_secs(3600), became)
                .await
                .unwrap_or_else(|_| panic!("not {role:?} after an hour"))
                .expect("the elector is running");
        }
    }

    fn journal() -> Journal {
        Arc::default()
    }

    fn entries(journal: &Journal) -> Vec<String> {
        journal.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_replica_creates_the_lease_and_keeps_renewing_it() {
        let journal = journal();
        let leases = Memory::new(&journal);
        let mut replica = Replica::start(&leases, &journal);
        replica.becomes(Role::Leader).await;
        assert_eq!(leases.holder().as_deref(), Some("me"));
        tokio::time::sleep(RETRY * 3 + RETRY / 2).await;
        let writes = entries(&journal)
            .iter()
            .filter(|entry| *entry == "elector wrote holder \"me\"")
            .count();
        assert_eq!(writes, 4, "one create and a renewal every retry period");
        assert_eq!(replica.status.borrow().role, Role::Leader);
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_takes_over_only_once_the_lease_went_unrenewed_for_its_duration() {
        let journal = journal();
        let leases = Memory::new(&journal);
        leases.written_by(Some("other"));
        let started = Instant::now();
        let mut replica = Replica::start(&leases, &journal);
        replica.becomes(Role::Follower).await;
        replica.becomes(Role::Leader).await;
        let waited = started.elapsed();
        assert!(waited >= LEASE, "took over after {waited:?}");
        assert!(
            waited <= LEASE + RETRY.mul_f64(1.0 + POLL_JITTER),
            "took over after {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewing_leader_is_never_taken_over() {
        let journal = journal();
        let leases = Memory::new(&journal);
        leases.written_by(Some("other"));
        let mut replica = Replica::start(&leases, &journal);
        replica.becomes(Role::Follower).await;
        for _ in 0..20 {
            tokio::time::sleep(RETRY).await;
            leases.written_by(Some("other"));
        }
        assert_eq!(replica.status.borrow().role, Role::Follower);
        assert_eq!(leases.holder().as_deref(), Some("other"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_taken_at_once_through_the_watch() {
        let journal = journal();
        let leases = Memory::new(&journal);
        leases.written_by(Some("other"));
        let mut replica = Replica::start(&leases, &journal);
        replica.becomes(Role::Follower).await;
        let released = Instant::now();
        leases.written_by(None);
        replica.becomes(Role::Leader).await;
        assert_eq!(released.elapsed(), Duration::ZERO, "waited for a poll");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_cut_off_from_the_api_server_stops_its_roles_by_the_renew_deadline() {
        let journal = journal();
        let leases = Memory::new(&journal);
        let mut replica = Replica::start(&leases, &journal);
        replica.becomes(Role::Leader).await;
        let cut = Instant::now();
        leases.cut_off();
        replica.becomes(Role::Follower).await;
        let stepped_down = cut.elapsed();
        assert!(
            stepped_down <= RENEW_DEADLINE,
            "led {stepped_down:?} unrenewed"
        );
        assert!(stepped_down < LEASE, "a follower may already lead");
        assert_eq!(
            entries(&journal).last().map(String::as_str),
            Some("role stopped"),
            "the role must stop before the replica calls itself a follower"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_overwritten_by_another_writer_steps_down() {
        let journal = journal();
        let leases = Memory::new(&journal);
        let mut replica = Replica::start(&leases, &journal);
        replica.becomes(Role::Leader).await;
        leases.written_by(Some("other"));
        replica.becomes(Role::Follower).await;
        assert_eq!(replica.status.borrow().holder.as_deref(), Some("other"));
        assert!(entries(&journal).contains(&"role stopped".to_owned()));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_the_roles_then_hands_the_lease_over() {
        let journal = journal();
        let leases = Memory::new(&journal);
        let mut replica = Replica::start(&leases, &journal);
        replica.becomes(Role::Leader).await;
        replica.shutdown.cancel();
        replica.task.await.unwrap();
        let record = leases.record().unwrap();
        assert_eq!(record.holder, None);
        assert_eq!(record.lease_duration_seconds, 1);
        let tail = entries(&journal);
        assert_eq!(
            tail[tail.len() - 2..],
            [
                "role stopped".to_owned(),
                "elector wrote holder \"\"".to_owned()
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_work_in_flight_finish_within_the_term_before_the_release() {
        let journal = journal();
        let leases = Memory::new(&journal);
        let role = Noting {
            journal: journal.clone(),
            finishing: RENEW_DEADLINE + RETRY,
        };
        let mut replica = Replica::with_role(&leases, role);
        replica.becomes(Role::Leader).await;
        let asked = Instant::now();
        replica.shutdown.cancel();
        replica.task.await.unwrap();
        assert!(asked.elapsed() >= RENEW_DEADLINE + RETRY, "did not wait");
        let tail = entries(&journal);
        assert_eq!(
            tail[tail.len() - 3..],
            [
                "role finished its work within the term".to_owned(),
                "role stopped".to_owned(),
                "elector wrote holder \"\"".to_owned()
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_replica_waits_out_its_earlier_term_and_starts_a_new_one() {
        let journal = journal();
        let leases = Memory::new(&journal);
        // The previous process of this identity led and died mid-term.
        leases.written_by(Some("me"));
        let started = Instant::now();
        let mut replica = Replica::start(&leases, &journal);
        replica.becomes(Role::Follower).await;
        replica.becomes(Role::Leader).await;
        let waited = started.elapsed();
        assert!(waited >= LEASE, "led after {waited:?}, inside the old term");
        assert_eq!(leases.record().unwrap().transitions, 2, "not a new term");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_takes_a_free_lease_only_once_it_is_ready() {
        let journal = journal();
        let leases = Memory::new(&journal);
        let (ready_tx, ready) = watch::channel(false);
        let mut replica =
            Replica::with_role_when(&leases, Noting::new(&journal), Some(ready), None);
        tokio::time::sleep(LEASE * 4).await;
        assert_eq!(leases.holder(), None, "led while compiling");
        ready_tx.send_replace(true);
        replica.becomes(Role::Leader).await;
        assert_eq!(leases.holder().as_deref(), Some("me"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_campaigns_only_while_it_is_wanted_and_hands_over_when_not() {
        let journal = journal();
        let leases = Memory::new(&journal);
        let (wanted_tx, wanted) = watch::channel(false);
        let mut replica =
            Replica::with_role_when(&leases, Noting::new(&journal), None, Some(wanted));
        tokio::time::sleep(LEASE * 4).await;
        assert_eq!(leases.holder(), None, "campaigned while not wanted");

        wanted_tx.send_replace(true);
        replica.becomes(Role::Leader).await;
        wanted_tx.send_replace(false);
        replica.becomes(Role::Follower).await;
        assert_eq!(leases.holder(), None, "not released");
        let tail = entries(&journal);
        assert_eq!(
            tail[tail.len() - 2..],
            [
                "role stopped".to_owned(),
                "elector wrote holder \"\"".to_owned()
            ],
            "released before its work stopped"
        );
        tokio::time::sleep(LEASE * 4).await;
        assert_eq!(
            leases.holder(),
            None,
            "took the Lease back while not wanted"
        );
        assert!(!replica.task.is_finished(), "stopped following");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unwanted_replica_takes_over_an_expired_lease_as_soon_as_it_is_wanted() {
        let journal = journal();
        let leases = Memory::new(&journal);
        let (wanted_tx, wanted) = watch::channel(false);
        let mut replica =
            Replica::with_role_when(&leases, Noting::new(&journal), None, Some(wanted));
        // Another replica's last renewal, seen through the watch while
        // unwanted (once its watch runs).
        tokio::time::sleep(RETRY).await;
        leases.written_by(Some("other"));
        let renewed = Instant::now();
        tokio::time::sleep(LEASE + RETRY).await;
        assert_eq!(leases.holder().as_deref(), Some("other"));
        wanted_tx.send_replace(true);
        replica.becomes(Role::Leader).await;
        // Judged from the renewal it saw, not from when it became wanted.
        assert_eq!(renewed.elapsed(), LEASE + RETRY, "waited a second lease");
    }
}
