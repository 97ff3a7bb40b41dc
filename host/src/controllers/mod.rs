//! Runs plugins as controllers, only while this replica leads.
//!
//! [`Controllers`] is a leader-only role. It follows the replica's plugin
//! [`Catalog`] and keeps one controller per runnable plugin (see [`run`]):
//! a new or changed plugin starts, a changed one is reloaded (its in-flight
//! reconciles drain first; other plugins are untouched), a suspended or
//! deleted one stops. It also writes every Plugin's status, when the
//! catalogue or a controller's report changes (counters alone at most every
//! [`status::COUNTS_PERIOD`]). When the term ends, every controller stops;
//! the fence refuses their requests from the deadline on, even before they
//! notice.

mod access;
pub mod bridge;
mod cache;
mod finalizer;
mod index;
mod metrics;
mod run;
mod status;
pub mod throttle;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

pub use self::metrics::PluginMetrics;
use self::run::{Report, Shared};
use self::status::Running;
use crate::election::LeaderGuard;
use crate::election::fence::Fence;
use crate::election::roles::LeaderRole;
use crate::plugins::{Catalog, LoadedPlugin, ServiceAccount, State};

/// How long a stopping controller may take beyond its reconcile timeout
/// before it is cancelled outright.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The leader-only role that runs every plugin in the catalog.
#[derive(Clone)]
pub struct Controllers {
    catalog: watch::Receiver<Catalog>,
    host: Shared,
    /// Which plugins of the catalogue this role runs.
    scope: Scope,
    /// While false, no plugin runs (the replicas disagree on placement;
    /// see [`crate::placement::agreement`]). Always true without one.
    gate: Option<watch::Receiver<bool>>,
}

/// The plugins a [`Controllers`] role runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Every plugin: the leader of the main Lease, in leader placement.
    All,
    /// The plugins hashed onto one shard, in spread placement.
    Shard { index: u32, count: u32 },
}

impl Scope {
    /// The catalogue as this role sees it: only the entries it runs.
    fn narrow(self, catalog: &Catalog) -> Catalog {
        match self {
            Self::All => catalog.clone(),
            Self::Shard { index, count } => Catalog {
                entries: catalog
                    .entries
                    .iter()
                    .filter(|(key, _)| crate::placement::shard_of(key, count) == index)
                    .map(|(key, entry)| (key.clone(), entry.clone()))
                    .collect(),
                ..catalog.clone()
            },
        }
    }
}

impl std::fmt::Debug for Controllers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controllers")
            .field("plugins", &self.catalog.borrow().entries.len())
            .finish_non_exhaustive()
    }
}

impl Controllers {
    pub fn new(
        catalog: watch::Receiver<Catalog>,
        client: kube::Client,
        kube_config: kube::Config,
        identity: String,
        metrics: PluginMetrics,
        fencing: bool,
        own_account: Option<ServiceAccount>,
    ) -> Self {
        Self {
            catalog,
            host: Shared {
                client,
                kube_config,
                identity,
                metrics,
                pool: Arc::new(Semaphore::new(crate::runtime::POOL_INSTANCES as usize)),
                fencing,
                own_account,
            },
            scope: Scope::All,
            gate: None,
        }
    }

    /// Runs plugins only while `gate` is true; stops them all (draining)
    /// while it is false.
    pub fn gated_by(mut self, gate: watch::Receiver<bool>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The same role, running only the plugins of shard `index` of `count`
    /// (sharing this replica's instance pool with the other shards).
    pub fn for_shard(&self, index: u32, count: u32) -> Self {
        Self {
            scope: Scope::Shard { index, count },
            ..self.clone()
        }
    }
}

impl LeaderRole for Controllers {
    fn name(&self) -> &str {
        "controllers"
    }

    fn lead(&self, guard: LeaderGuard) -> BoxFuture<'static, ()> {
        let status_client = status_client(&self.host, &guard);
        let mut catalog = self.catalog.clone();
        let host = self.host.clone();
        let scope = self.scope;
        let mut gate = self.gate.clone();
        Box::pin(async move {
            let status_client = match status_client {
                Ok(client) => client,
                Err(error) => {
                    warn!(%error, "cannot build the status client; statuses go unwritten this term");
                    return;
                }
            };
            let status = status::Writer::new(status_client, &host.identity);
            let mut term = Term {
                host,
                guard,
                running: HashMap::new(),
                status,
                changed: Arc::default(),
            };
            // Counters alone change without a notification; they are
            // written at most this often anyway.
            let mut counts_tick = tokio::time::interval(status::COUNTS_PERIOD);
            counts_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Without a watcher (manifests only) the catalog never changes.
            let mut changing = true;
            loop {
                let snapshot = scope.narrow(&catalog.borrow_and_update());
                let open = gate.as_mut().is_none_or(|gate| *gate.borrow_and_update());
                if open {
                    term.converge(&snapshot).await;
                    term.write_statuses(&snapshot).await;
                } else {
                    // Statuses stay as the replica that ran the plugins
                    // last wrote them.
                    term.stop_all().await;
                }
                loop {
                    let changed = term.changed.clone();
                    tokio::select! {
                        Ok(()) = gate_changed(&mut gate) => break,
                        changed = catalog.changed(), if changing => {
                            changing = changed.is_ok();
                            if changing {
                                break;
                            }
                        }
                        () = changed.notified() => term.write_statuses(&snapshot).await,
                        _ = counts_tick.tick() => term.write_statuses(&snapshot).await,
                        // On shutdown the term outlives the drain: in-flight
                        // reconciles finish with their writes still allowed.
                        () = term.guard.draining() => return term.stop_all().await,
                    }
                }
            }
        })
    }
}

/// Resolves when `gate` changes; never without one (or once its sender is
/// gone).
async fn gate_changed(gate: &mut Option<watch::Receiver<bool>>) -> Result<(), ()> {
    let changed = match gate {
        Some(gate) => gate.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
    Ok(())
}

/// The client Plugin statuses are written with, fenced to `guard`'s term
/// like everything else done for a plugin. With fencing the host writes
/// them as its own ServiceAccount, impersonated with the term as an extra,
/// so the API server refuses a deposed leader's statuses as it refuses its
/// plugins' writes (impersonating itself needs nothing the chart does not
/// grant already). A host that is not a ServiceAccount (a developer's
/// kubeconfig) could impersonate itself only with rights over users and
/// groups; its statuses stay fenced by the clock alone.
fn status_client(host: &Shared, guard: &LeaderGuard) -> Result<kube::Client, kube::Error> {
    let (config, fence) = match &host.own_account {
        Some(account) if host.fencing => (
            account.impersonated_by(&host.kube_config),
            Fence::carrying_term(guard.clone()),
        ),
        _ => (host.kube_config.clone(), Fence::new(guard.clone())),
    };
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&fence)
        .build())
}

/// One term's controllers.
struct Term {
    host: Shared,
    guard: LeaderGuard,
    running: HashMap<String, RunningPlugin>,
    status: status::Writer,
    /// Told by every running plugin's report when what it says changes.
    changed: Arc<Notify>,
}

/// A controller this term started.
struct RunningPlugin {
    plugin: LoadedPlugin,
    stop: CancellationToken,
    task: JoinHandle<()>,
    report: Arc<Report>,
}

impl Term {
    /// Starts, reloads and stops controllers to match the catalog.
    async fn converge(&mut self, catalog: &Catalog) {
        let wanted = |name: &str| -> Option<&LoadedPlugin> {
            let entry = catalog.entries.get(name)?;
            match &entry.state {
                State::Ready(plugin) if !entry.suspend => Some(plugin),
                _ => None,
            }
        };
        // A plugin whose new version is still being fetched and compiled
        // keeps running the old one meanwhile.
        let preparing = |name: &str| {
            catalog
                .entries
                .get(name)
                .is_some_and(|entry| !entry.suspend && matches!(entry.state, State::Preparing))
        };
        let outdated: Vec<String> = self
            .running
            .iter()
            .filter(|(name, running)| {
                !preparing(name)
                    && !wanted(name).is_some_and(|plugin| plugin.same_version(&running.plugin))
            })
            .map(|(name, _)| name.clone())
            .collect();
        // Stopping drains in-flight reconciles; do it for all at once.
        let stopping = outdated.iter().filter_map(|name| {
            self.running
                .remove(name)
                .map(|running| (name.clone(), running))
        });
        futures::future::join_all(stopping.map(|(name, running)| drain(name, running))).await;
        for (name, entry) in &catalog.entries {
            if let Some(plugin) = wanted(name)
                && !self.running.contains_key(name)
            {
                self.start(name, entry.object.is_some(), plugin.clone());
            }
        }
    }

    fn start(&mut self, name: &str, is_object: bool, plugin: LoadedPlugin) {
        info!(plugin = name, digest = %plugin.compiled.digest, from_object = is_object, "starting plugin");
        let stop = CancellationToken::new();
        let report = Arc::new(Report::new(self.changed.clone()));
        let span = tracing::info_span!("plugin", plugin = %name);
        let task = tokio::spawn(
            run::run(
                self.host.clone(),
                plugin.clone(),
                self.guard.clone(),
                stop.clone(),
                report.clone(),
            )
            .instrument(span),
        );
        self.running.insert(
            name.to_owned(),
            RunningPlugin {
                plugin,
                stop,
                task,
                report,
            },
        );
    }

    async fn write_statuses(&mut self, catalog: &Catalog) {
        let now = Timestamp::now();
        for (name, entry) in &catalog.entries {
            let running = match self.running.get(name) {
                Some(running) => Running::Yes(&running.report),
                None if entry.suspend => Running::Suspended,
                None => Running::No,
            };
            let previous = self.status.previous(name, entry).await;
            let desired =
                status::desired(entry, running, &self.host.identity, previous.as_ref(), now);
            self.status.write(name, entry, desired, &self.guard).await;
        }
        self.status
            .retain(|name| catalog.entries.contains_key(name));
    }

    async fn stop_all(&mut self) {
        let all = self.running.drain();
        futures::future::join_all(all.map(|(name, running)| drain(name, running))).await;
    }
}

/// Stops one controller: no new reconciles, running ones finish (bounded
/// by the plugin's timeout), then it is gone.
async fn drain(name: String, running: RunningPlugin) {
    running.stop.cancel();
    let patience = running.plugin.definition.limits.timeout + DRAIN_GRACE;
    let mut task = running.task;
    if tokio::time::timeout(patience, &mut task).await.is_err() {
        warn!(plugin = %name, "controller did not drain in time; cancelling it");
        task.abort();
    }
    info!(plugin = %name, "plugin stopped");
}
