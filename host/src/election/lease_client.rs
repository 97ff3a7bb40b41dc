//! Compare-and-swap access to one Lease, with a timeout on every request and
//! a Kubernetes client of its own.
//!
//! [`Leases`] is the narrow boundary the elector talks through:
//! [`LeaseClient`] answers it from the API server; the elector's unit tests
//! answer it from memory, under a paused clock.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::limit::ConcurrencyLimitLayer;

use super::record::LeaderRecord;

/// Lease traffic is a handful of small requests; this only stops a runaway
/// from opening unbounded connections. What matters is that the limit is not
/// shared with controllers (controller-runtime#3092: a shared limiter lost
/// leases under load).
const LEASE_CLIENT_CONCURRENCY: usize = 4;

/// The label every Lease the host elects on carries, naming the election
/// (the main Lease's name). The chart's fencing policy binds to Leases by
/// it, so it covers each of them, whatever their number.
pub const ELECTION_LABEL: &str = "leasehold.dev/election";

/// Why a Lease request failed. Every variant is retryable; [`Conflict`]
/// additionally means "re-read before deciding again".
///
/// [`Conflict`]: LeaseError::Conflict
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another writer changed (or created) the Lease first.
    #[error("lease was changed by another writer")]
    Conflict,
    /// The request did not finish in time.
    #[error("lease request timed out after {0:?}")]
    Timeout(Duration),
    /// The API server refused the request or could not be reached.
    #[error("lease request failed")]
    Api(#[source] kube::Error),
    /// The client for Lease traffic could not be built.
    #[error("failed to build the lease client")]
    Client(#[source] kube::Error),
}

pub type Result<T, E = LeaseError> = std::result::Result<T, E>;

/// Reads and writes one named Lease.
#[derive(Clone)]
pub struct LeaseClient {
    api: Api<Lease>,
    name: String,
    /// The election this Lease belongs to: the main Lease's name, which
    /// its [`ELECTION_LABEL`] carries.
    election: String,
    request_timeout: Duration,
    /// Changes delivered by a watch shared with other Leases of the
    /// election ([`LeaseClient::shard`]); `None` watches this one alone.
    changes: Option<watch::Receiver<Option<Lease>>>,
}

impl std::fmt::Debug for LeaseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseClient")
            .field("name", &self.name)
            .field("election", &self.election)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl LeaseClient {
    /// A dedicated client built from `config`: its own connection pool and
    /// concurrency limit, so controller traffic cannot delay a renewal.
    pub fn dedicated(
        config: kube::Config,
        namespace: &str,
        name: &str,
        request_timeout: Duration,
    ) -> Result<Self> {
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(LeaseError::Client)?
            .with_layer(&ConcurrencyLimitLayer::new(LEASE_CLIENT_CONCURRENCY))
            .build();
        Ok(Self::new(client, namespace, name, request_timeout))
    }

    pub fn new(client: Client, namespace: &str, name: &str, request_timeout: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            election: name.to_owned(),
            request_timeout,
            changes: None,
        }
    }

    /// Another Lease of the same election (a shard's), through the same
    /// client, whose changes arrive on `changes` from one watch over every
    /// Lease of the election rather than a watch of its own each.
    pub fn shard(&self, name: &str, changes: watch::Receiver<Option<Lease>>) -> Self {
        Self {
            name: name.to_owned(),
            changes: Some(changes),
            ..self.clone()
        }
    }

    /// The Leases of this election: its own and its shards'.
    pub fn election_selector(&self) -> String {
        format!("{ELECTION_LABEL}={}", self.election)
    }

    /// The Lease API this client talks to.
    pub fn api(&self) -> &Api<Lease> {
        &self.api
    }

    fn label(&self, lease: &mut Lease) {
        lease
            .metadata
            .labels
            .get_or_insert_default()
            .insert(ELECTION_LABEL.to_owned(), self.election.clone());
    }

    /// Runs `request` with the client-go timeout, cut short so it never runs
    /// past `deadline` (the end of the current term).
    async fn bounded<T>(
        &self,
        deadline: Option<Instant>,
        request: impl Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        let mut limit = self.request_timeout;
        if let Some(deadline) = deadline {
            limit = limit.min(deadline.saturating_duration_since(Instant::now()));
        }
        match tokio::time::timeout(limit, request).await {
            Err(_) => Err(LeaseError::Timeout(limit)),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => Err(LeaseError::Conflict),
            Ok(Err(error)) => Err(LeaseError::Api(error)),
            Ok(Ok(value)) => Ok(value),
        }
    }
}

/// One Lease, read and written by compare-and-swap. Every method is bounded
/// by the request timeout and, when given, by `deadline` (the end of the
/// current term).
pub trait Leases: Clone + Send + Sync + 'static {
    /// The Lease, or `None` if it does not exist.
    fn get(&self, deadline: Option<Instant>) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Creates the Lease with `record`; `Conflict` if it already exists.
    fn create(
        &self,
        record: &LeaderRecord,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Lease>> + Send;

    /// Replaces `current`'s spec with `record`, only if the Lease still has
    /// `current`'s resourceVersion; `Conflict` otherwise.
    fn replace(
        &self,
        current: &Lease,
        record: &LeaderRecord,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Lease>> + Send;

    /// Every change to the Lease as it happens: `Some(lease)` when it is
    /// written, `None` when it is deleted. Reconnects by itself.
    fn watch(&self) -> impl Stream<Item = Option<Lease>> + Send + 'static;
}

impl Leases for LeaseClient {
    async fn get(&self, deadline: Option<Instant>) -> Result<Option<Lease>> {
        self.bounded(deadline, self.api.get_opt(&self.name)).await
    }

    async fn create(&self, record: &LeaderRecord, deadline: Option<Instant>) -> Result<Lease> {
        let mut lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(record.to_spec()),
        };
        self.label(&mut lease);
        self.bounded(deadline, self.api.create(&PostParams::default(), &lease))
            .await
    }

    async fn replace(
        &self,
        current: &Lease,
        record: &LeaderRecord,
        deadline: Option<Instant>,
    ) -> Result<Lease> {
        let mut next = current.clone();
        next.spec = Some(record.to_spec());
        // A Lease an older host created gets the label with its next write.
        self.label(&mut next);
        self.bounded(
            deadline,
            self.api.replace(&self.name, &PostParams::default(), &next),
        )
        .await
    }

    fn watch(&self) -> impl Stream<Item = Option<Lease>> + Send + 'static {
        if let Some(changes) = &self.changes {
            return shared_changes(changes.clone());
        }
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        watcher::watcher(self.api.clone(), config)
            .default_backoff()
            .filter_map(|event| async move {
                match event {
                    Ok(Event::Apply(lease) | Event::InitApply(lease)) => Some(Some(lease)),
                    Ok(Event::Delete(_)) => Some(None),
                    Ok(Event::Init | Event::InitDone) => None,
                    Err(error) => {
                        tracing::debug!(%error, "lease watch interrupted; reconnecting");
                        None
                    }
                }
            })
            .boxed()
    }
}

/// A shared watch's changes of one Lease, as a stream.
fn shared_changes(changes: watch::Receiver<Option<Lease>>) -> BoxStream<'static, Option<Lease>> {
    futures::stream::unfold(changes, |mut changes| async move {
        changes.changed().await.ok()?;
        let lease = changes.borrow_and_update().clone();
        Some((lease, changes))
    })
    .boxed()
}
