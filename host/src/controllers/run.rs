//! One plugin's controller on the leader: start it (account check,
//! instantiate, register, resolve kinds), run kube-runtime's [`Controller`]
//! over what it registered, and report progress for its status. A plugin
//! that fails to start is retried with backoff; a stop request lets
//! in-flight reconciles finish first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::controller::{self, Action as QueueAction, Controller};
use kube::runtime::reflector::{ObjectRef as QueueRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::bridge::KubeBridge;
use super::cache::{self, Caches};
use super::metrics::PluginMetrics;
use super::throttle::Accounting;
use super::{access, finalizer, index};
use crate::backoff::Backoff;
use crate::election::LeaderGuard;
use crate::election::fence::{self, Fence};
use crate::plugins::LoadedPlugin;
use crate::runtime::contract::ApiError;
use crate::runtime::{
    Action, Backend, GroupVersionKind, Mapping, ObjectRef, ReconcileError, Registration, Request,
};

/// Retries of a failed reconcile: from 0.5 s, doubled per consecutive
/// failure, never beyond 300 s before jitter (kube-controller-manager goes
/// to 1000 s; a plugin fix should be picked up sooner).
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(300));
/// How often an `absent` call that fails with a retryable error is made.
const ABSENT_ATTEMPTS: u32 = 4;
/// A plugin's last error is cut here on its status.
const MAX_STATUS_MESSAGE: usize = 1024;
/// How long past its timeout a reconcile is abandoned. The runtime stops
/// one within a tick of its timeout; this only backs that up.
const OVERRUN_GRACE: Duration = Duration::from_secs(1);
/// Registration gets the plugin's timeout, but at least this long.
const MIN_REGISTER_TIMEOUT: Duration = Duration::from_secs(1);

/// What every plugin's controller shares: the host's client and identity.
#[derive(Clone)]
pub struct Shared {
    /// The host's own client (checks the plugin's ServiceAccount exists).
    pub client: kube::Client,
    /// The base of each plugin's impersonating client.
    pub kube_config: kube::Config,
    /// This replica, as Events report it.
    pub identity: String,
    pub metrics: PluginMetrics,
    /// The runtime's instance slots: a running plugin holds as many as its
    /// concurrency, so the sum never passes the pool.
    pub pool: Arc<Semaphore>,
    /// Whether each request made for a plugin carries its term.
    pub fencing: bool,
    /// With fencing, the host's own ServiceAccount (if it is one): Plugin
    /// statuses are written as it, carrying the term too.
    pub own_account: Option<crate::plugins::ServiceAccount>,
}

/// How far one plugin's controller got, and how its reconciles went: what
/// its status reports.
#[derive(Debug)]
pub struct Report {
    /// Told when the phase or the last error changes (not the counters,
    /// which the status writer reads on its own period).
    changed: Arc<Notify>,
    phase: Mutex<Phase>,
    ok: AtomicU64,
    error: AtomicU64,
    trap: AtomicU64,
    last_error: Mutex<Option<(String, Timestamp)>>,
}

/// Where a plugin's controller is in its life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Starting,
    /// Its controller runs; `primary` is the kind it reconciles.
    Running { primary: String },
    /// It could not start; it is retried with backoff.
    Failed {
        reason: &'static str,
        message: String,
    },
}

impl Report {
    /// A report that tells `changed` when what it says changes.
    pub fn new(changed: Arc<Notify>) -> Self {
        Self {
            changed,
            phase: Mutex::default(),
            ok: AtomicU64::default(),
            error: AtomicU64::default(),
            trap: AtomicU64::default(),
            last_error: Mutex::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reconciles by outcome: (ok, error, trap).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.error.load(Ordering::Relaxed),
            self.trap.load(Ordering::Relaxed),
        )
    }

    pub fn last_error(&self) -> Option<(String, Timestamp)> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_phase(&self, phase: Phase) {
        if let Phase::Failed { message, .. } = &phase {
            self.failed(message.clone());
        }
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
        self.changed.notify_one();
    }

    /// Remembers the last error, cut at [`MAX_STATUS_MESSAGE`] bytes: a
    /// plugin's error text lands in its status, which etcd stores.
    fn failed(&self, message: String) {
        let message = crate::runtime::cut(message, MAX_STATUS_MESSAGE);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((message, Timestamp::now()));
        self.changed.notify_one();
    }
}

/// Runs `plugin` until `stop` (draining in-flight reconciles) or the end
/// of the term, retrying a start that fails.
pub async fn run(
    host: Shared,
    plugin: LoadedPlugin,
    guard: LeaderGuard,
    stop: CancellationToken,
    report: Arc<Report>,
) {
    let mut failures = 0;
    loop {
        let started = async {
            let concurrency = u32::from(plugin.definition.limits.concurrency);
            let slots = host
                .pool
                .clone()
                .try_acquire_many_owned(concurrency)
                .map_err(|_| Failure::PoolFull {
                    asked: concurrency,
                    free: host.pool.available_permits(),
                })?;
            let run = start(&host, &plugin, &guard, &report).await?;
            let controller = build_controller(&run).await?;
            Ok::<_, Failure>((run, controller, slots))
        };
        // A start waits on the API server; a stop need not.
        let started = tokio::select! {
            started = started => started,
            () = stop.cancelled() => return,
            () = guard.lost() => return,
        };
        let (run, controller, _slots) = match started {
            Ok(started) => started,
            Err(Failure::NotLeader) => return,
            Err(failure) => {
                failures += 1;
                let delay = BACKOFF.delay(failures);
                warn!(reason = failure.reason(), error = %failure, retry_in = ?delay, "plugin did not start");
                report.set_phase(Phase::Failed {
                    reason: failure.reason(),
                    message: failure.to_string(),
                });
                tokio::select! {
                    () = tokio::time::sleep(delay) => continue,
                    () = stop.cancelled() => return,
                    () = guard.lost() => return,
                }
            }
        };
        report.set_phase(Phase::Running {
            primary: run.primary.kind.clone(),
        });
        let concurrency = plugin.definition.limits.concurrency;
        let outcomes = run.clone();
        let stopping = stop.clone();
        let primary = controller.store();
        let stream = controller
            .with_config(controller::Config::default().concurrency(concurrency))
            // A stop lets running reconciles finish, then ends the stream.
            .graceful_shutdown_on(stop.clone().cancelled_owned())
            .run(reconcile, error_policy, run)
            // Concurrent, so an `absent` call never holds up the controller;
            // the stream ends only once those calls have finished too.
            .for_each_concurrent(concurrency as usize, move |result| {
                let (run, stop) = (outcomes.clone(), stopping.clone());
                async move {
                    match result {
                        Err(controller::Error::ObjectNotFound(gone)) => {
                            absent(&run, &gone, &stop).await;
                        }
                        // A watch that fails later (say, a grant revoked)
                        // starves the plugin silently unless said.
                        Err(controller::Error::QueueError(error)) => {
                            warn!(%error, "watching what the plugin registered failed");
                            run.report
                                .failed(format!("watching what the plugin registered: {error}"));
                        }
                        Err(error) => debug!(%error, "reconcile did not complete"),
                        Ok(_) => {}
                    }
                }
            });
        tokio::select! {
            () = stream => debug!("controller stopped"),
            () = guard.lost() => debug!("term over; controller stopped"),
            () = stopped_before_listing(&stop, &primary) => {
                debug!("stopped before its first list; nothing ran");
            }
        }
        return;
    }
}

/// Resolves when `stop` comes before the primary kind's first list has
/// filled `primary`, never otherwise. kube-runtime's graceful shutdown does
/// not end then: its runner holds every reconcile until the store is
/// ready, and the stop also ends the watch that would make it ready, so it
/// waits forever (kube-runtime 5.0 `Runner::poll_next`). Nothing can have
/// run yet, so the controller can simply be dropped.
async fn stopped_before_listing<K>(stop: &CancellationToken, primary: &Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    stop.cancelled().await;
    if primary.wait_until_ready().now_or_never().is_some() {
        std::future::pending::<()>().await;
    }
}

/// Checks the plugin's account, instantiates it once to read its
/// registration, and resolves its primary kind.
async fn start(
    host: &Shared,
    plugin: &LoadedPlugin,
    guard: &LeaderGuard,
    report: &Arc<Report>,
) -> Result<Arc<PluginRun>, Failure> {
    let definition = &plugin.definition;
    let account = &definition.service_account;
    guard.check().map_err(|_| Failure::NotLeader)?;
    let accounts: Api<ServiceAccount> = Api::namespaced(host.client.clone(), &account.namespace);
    match accounts.get_opt(&account.name).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(Failure::NoServiceAccount(account.to_string())),
        Err(error) => return Err(Failure::Kube(error)),
    }
    let accounting = Arc::new(PluginAccounting {
        plugin: definition.name.clone(),
        metrics: host.metrics.clone(),
        report: report.clone(),
    });
    let fence = if host.fencing {
        Fence::carrying_term(guard.clone())
    } else {
        Fence::new(guard.clone())
    };
    let bridge = KubeBridge::impersonating(
        &host.kube_config,
        &definition.name,
        account,
        &host.identity,
        fence,
        &definition.budget,
        accounting.clone(),
    )
    .map(Arc::new)
    .map_err(Failure::Kube)?;
    let backend: Arc<dyn Backend> = bridge.clone();
    let context = plugin.definition.context(backend.clone(), None);
    let timeout = definition.limits.timeout.max(MIN_REGISTER_TIMEOUT);
    host.metrics.instantiated(&definition.name);
    let registration = match plugin
        .compiled
        .instantiate(context, &definition.limits)
        .await
    {
        Ok(mut instance) => instance.register(timeout).await,
        Err(error) => Err(error),
    };
    let registration = registration.map_err(|trap| {
        host.metrics.reconciled(&definition.name, "trap");
        Failure::Register(trap)
    })?;
    let primary = resource_of(&bridge, &registration.primary).await?;
    info!(primary = %primary.kind, owns = registration.owns.len(), watches = registration.watches.len(), "starting controller");
    Ok(Arc::new(PluginRun {
        plugin: plugin.clone(),
        bridge,
        backend,
        guard: guard.clone(),
        registration,
        primary,
        metrics: host.metrics.clone(),
        report: report.clone(),
        accounting,
        instances: Semaphore::new(usize::from(definition.limits.concurrency)),
        failures: Mutex::default(),
    }))
}

/// One plugin's use of the API server, counted in its metrics; the bounds
/// it meets also land on its status.
struct PluginAccounting {
    plugin: String,
    metrics: PluginMetrics,
    report: Arc<Report>,
}

impl Accounting for PluginAccounting {
    fn sent(&self) {
        self.metrics.api_request(&self.plugin);
    }

    fn served_from_cache(&self) {
        self.metrics.cached_read(&self.plugin);
    }

    fn called(&self, call: &'static str, code: u16) {
        self.metrics.host_call(&self.plugin, call, code);
    }

    fn limited(&self, reason: &'static str, message: &str) {
        self.metrics.limited(&self.plugin, reason);
        // Waiting for a token is the budget working, not a fault.
        if reason != "Throttled" {
            self.report.failed(format!("{reason}: {message}"));
        }
    }
}

/// What every reconcile of one plugin shares.
struct PluginRun {
    plugin: LoadedPlugin,
    bridge: Arc<KubeBridge>,
    /// The bridge as the plugin's imports see it.
    backend: Arc<dyn Backend>,
    guard: LeaderGuard,
    registration: Registration,
    primary: ApiResource,
    metrics: PluginMetrics,
    report: Arc<Report>,
    accounting: Arc<PluginAccounting>,
    /// One permit per instance the plugin may have at once: reconciles and
    /// `absent` calls share them, so it never runs more than configured.
    instances: Semaphore,
    failures: Mutex<HashMap<QueueRef<DynamicObject>, u32>>,
}

/// Why one reconcile failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The plugin returned an error.
    #[error("plugin error: {}", .0.message)]
    Plugin(ReconcileError),
    /// The plugin trapped, timed out or ran out of memory.
    #[error(transparent)]
    Trap(crate::runtime::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer update failed")]
    Finalizer(#[source] kube::Error),
    /// The term ended.
    #[error("no longer leading")]
    NotLeader,
    /// The plugin's ServiceAccount does not exist.
    #[error("ServiceAccount {0} does not exist; create it (and its RBAC) for the plugin to act as")]
    NoServiceAccount(String),
    /// The plugin trapped while registering.
    #[error("registration failed: {0}")]
    Register(#[source] crate::runtime::Error),
    /// The kind the plugin reconciles could not be resolved: the API server
    /// does not serve it, or refused or failed discovery.
    #[error("{}", .0.message)]
    Discovery(ApiError),
    /// The plugin's account may not watch a kind the plugin registered.
    #[error(transparent)]
    Forbidden(access::Denied),
    /// The API server could not be asked.
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// The instance pool has fewer free slots than the plugin's concurrency.
    #[error(
        "the host's instance pool has {free} free slots and this plugin's maxConcurrentReconciles is {asked}; lower it or stop another plugin"
    )]
    PoolFull { asked: u32, free: usize },
    /// A reconcile outlived its timeout by more than the grace.
    #[error("the reconcile was still running after {0:?} and was abandoned")]
    Overran(Duration),
}

impl Failure {
    /// A finalizer patch that failed; the fence's refusal is the term's end.
    fn finalizer(error: kube::Error) -> Self {
        if fence::refused(&error) {
            Self::NotLeader
        } else {
            Self::Finalizer(error)
        }
    }

    /// The condition reason a user sees on the Plugin.
    fn reason(&self) -> &'static str {
        match self {
            Self::Plugin(_) => "ReconcileError",
            Self::Trap(_) | Self::Overran(_) => "Trap",
            Self::PoolFull { .. } => "InstancePoolFull",
            Self::Finalizer(_) | Self::Kube(_) => "KubernetesError",
            Self::NotLeader => "NotLeader",
            Self::NoServiceAccount(_) => "ServiceAccountNotFound",
            Self::Register(_) => "RegistrationFailed",
            Self::Discovery(error) => discovery_reason(error),
            Self::Forbidden(_) => "WatchForbidden",
        }
    }
}

/// Why a kind could not be resolved, as a Plugin's status says it: a kind
/// the API server does not serve, or discovery refused or failed.
fn discovery_reason(error: &ApiError) -> &'static str {
    if error.reason == "UnknownKind" {
        "KindNotServed"
    } else {
        "DiscoveryFailed"
    }
}

async fn resource_of(bridge: &KubeBridge, gvk: &GroupVersionKind) -> Result<ApiResource, Failure> {
    let api_version = if gvk.group.is_empty() {
        gvk.version.clone()
    } else {
        format!("{}/{}", gvk.group, gvk.version)
    };
    bridge
        .resource(&api_version, &gvk.kind)
        .await
        .map(|(resource, _)| resource)
        .map_err(Failure::Discovery)
}

fn api_for(run: &PluginRun, resource: &ApiResource) -> Api<DynamicObject> {
    let client = run.bridge.client().clone();
    match &run.registration.namespace {
        Some(namespace) => Api::namespaced_with(client, namespace, resource),
        None => Api::all_with(client, resource),
    }
}

/// Resolves what the plugin owns and watches, checks that its account may
/// watch all of it, and builds the controller.
async fn build_controller(run: &Arc<PluginRun>) -> Result<Controller<DynamicObject>, Failure> {
    let registration = &run.registration;
    let mut owned = Vec::new();
    for kind in &registration.owns {
        owned.push(resource_of(&run.bridge, kind).await?);
    }
    let mut watched = Vec::new();
    for watch in &registration.watches {
        watched.push((resource_of(&run.bridge, &watch.kind).await?, watch));
    }
    let every_resource: Vec<ApiResource> = std::iter::once(run.primary.clone())
        .chain(owned.iter().cloned())
        .chain(watched.iter().map(|(resource, _)| resource.clone()))
        .collect();
    access::may_watch(
        run.bridge.client(),
        &run.plugin.definition.service_account.to_string(),
        &every_resource,
        registration.namespace.as_deref(),
    )
    .await
    .map_err(Failure::Forbidden)?;
    let mut primary_watch = watcher::Config::default();
    if let Some(selector) = &registration.label_selector {
        primary_watch = primary_watch.labels(selector);
    }
    // kube-runtime's own primary stream triggers on applies only; this one
    // also triggers on deletions (including leaving the label selector), so
    // a primary that is gone reaches the plugin as `absent` (see
    // `ObjectNotFound` in `run`). The store is updated before the trigger.
    // Every watch keeps a store, which also answers the plugin's reads.
    let mut caches = Caches::default();
    let namespace = registration.namespace.clone();
    let mut cached = |resource: &ApiResource, config: watcher::Config| {
        let writer = reflector::store::Writer::new(resource.clone());
        let (indexed, mut feed) = index::indexed(resource.clone(), writer);
        let store = indexed.store().clone();
        caches.add(namespace.clone(), config.label_selector.as_deref(), indexed);
        // As kube-runtime's `reflector`, with the index kept beside the store.
        let events = watcher::watcher(api_for(run, resource), config)
            .modify(cache::strip)
            .inspect_ok(move |event| feed.apply(event));
        (store, events.touched_objects())
    };
    let (store, primaries) = cached(&run.primary, primary_watch);
    let mut controller = Controller::for_stream_with(primaries, store, run.primary.clone());
    for resource in owned {
        let (_, changes) = cached(&resource, watcher::Config::default());
        controller = controller.owns_stream_with(changes, resource);
    }
    for (resource, watch) in watched {
        let mut config = watcher::Config::default();
        if let Some(selector) = &watch.label_selector {
            config = config.labels(selector);
        }
        let primary = run.primary.clone();
        let (_, changes) = cached(&resource, config);
        controller = match watch.mapping.clone() {
            Mapping::Labels(labels) => controller.watches_stream_with(
                changes,
                move |object: DynamicObject| {
                    let name = object.labels().get(&labels.name)?.clone();
                    let namespace = match &labels.namespace {
                        Some(label) => object.labels().get(label).cloned(),
                        None => object.namespace(),
                    };
                    let reference = QueueRef::new_with(&name, primary.clone());
                    Some(match namespace {
                        Some(namespace) => reference.within(&namespace),
                        None => reference,
                    })
                },
                resource,
            ),
            Mapping::AllPrimaries => {
                let store = controller.store();
                controller.watches_stream_with(
                    changes,
                    move |_: DynamicObject| {
                        store
                            .state()
                            .iter()
                            .map(|object| QueueRef::from_obj_with(object.as_ref(), primary.clone()))
                            .collect::<Vec<_>>()
                    },
                    resource,
                )
            }
        };
    }
    run.bridge.read_from(caches);
    Ok(controller)
}

async fn reconcile(
    object: Arc<DynamicObject>,
    run: Arc<PluginRun>,
) -> Result<QueueAction, Failure> {
    run.guard.check().map_err(|_| Failure::NotLeader)?;
    let reference = ObjectRef {
        namespace: object.namespace(),
        name: object.name_any(),
    };
    let cleanup = match &run.registration.finalizer {
        None => false,
        Some(finalizer) => match finalizer::standing(&object, finalizer) {
            finalizer::Standing::Missing => {
                finalizer::add(&api_for_object(&run, &object), &object, finalizer)
                    .await
                    .map_err(Failure::finalizer)?;
                // The update triggers the next reconcile.
                return Ok(QueueAction::await_change());
            }
            finalizer::Standing::Present => false,
            finalizer::Standing::Cleanup => true,
            finalizer::Standing::Released => return Ok(QueueAction::await_change()),
        },
    };
    let json = serde_json::to_string(object.as_ref()).unwrap_or_default();
    let action = call(&run, reference, Some(json), cleanup).await?;
    if cleanup
        && matches!(action, Action::Done)
        && let Some(finalizer) = &run.registration.finalizer
    {
        finalizer::remove(&api_for_object(&run, &object), &object, finalizer)
            .await
            .map_err(Failure::finalizer)?;
    }
    let queue_ref = QueueRef::from_obj_with(object.as_ref(), run.primary.clone());
    run.failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&queue_ref);
    let asked = match action {
        Action::RequeueAfter(millis) => Some(millis),
        Action::Done => run.registration.resync_period_ms,
    };
    Ok(match asked {
        Some(millis) => QueueAction::requeue(at_least_floor(&run, Duration::from_millis(millis))),
        None => QueueAction::await_change(),
    })
}

/// A requeue or resync no sooner than the plugin's floor.
fn at_least_floor(run: &PluginRun, asked: Duration) -> Duration {
    let floor = run.plugin.definition.budget.min_requeue;
    if asked >= floor {
        return asked;
    }
    run.accounting.limited(
        "RequeueFloored",
        &format!("asked to requeue after {asked:?}; requeued after the floor, {floor:?} (limits.minRequeueAfter)"),
    );
    floor
}

/// Tells the plugin that a primary is gone (deleted, or no longer
/// selected). Nothing is left in the queue to retry it, so a retryable
/// error is retried here, a few times with backoff, unless the plugin is
/// stopping (a reload must not wait out the backoff).
async fn absent(run: &PluginRun, gone: &QueueRef<DynamicObject>, stop: &CancellationToken) {
    let reference = ObjectRef {
        namespace: gone.namespace.clone(),
        name: gone.name.clone(),
    };
    for attempt in 1..=ABSENT_ATTEMPTS {
        if run.guard.check().is_err() {
            return;
        }
        match call(run, reference.clone(), None, false).await {
            Ok(_) => return,
            Err(Failure::Plugin(error)) if error.retryable && attempt < ABSENT_ATTEMPTS => {
                tokio::select! {
                    () = tokio::time::sleep(BACKOFF.delay(attempt)) => {}
                    () = stop.cancelled() => return,
                }
            }
            Err(failure) => {
                warn!(object = %gone, error = %failure, attempt, "absent primary not handled");
                return;
            }
        }
    }
}

/// One call into a fresh instance of the plugin, counted and reported.
async fn call(
    run: &PluginRun,
    reference: ObjectRef,
    object: Option<String>,
    cleanup: bool,
) -> Result<Action, Failure> {
    let name = run.plugin.definition.name.as_str();
    let display = match &reference.namespace {
        Some(namespace) => format!("{namespace}/{}", reference.name),
        None => reference.name.clone(),
    };
    let request = Request { reference, object };
    let context = run
        .plugin
        .definition
        .context(run.backend.clone(), Some(display.clone()));
    let limits = &run.plugin.definition.limits;
    let _instance = {
        let _waiting = run.metrics.waiting(name);
        run.instances
            .acquire()
            .await
            .expect("the semaphore is never closed")
    };
    let _running = run.metrics.running(name);
    run.metrics.instantiated(name);
    let started = std::time::Instant::now();
    let reconciled = async {
        match run.plugin.compiled.instantiate(context, limits).await {
            Ok(mut instance) => {
                let outcome = instance.reconcile(&request, cleanup, limits.timeout).await;
                run.metrics.memory_peak(name, instance.memory_peak());
                outcome
            }
            Err(error) => Err(error),
        }
    };
    // The runtime ends a reconcile by its deadline, host calls included;
    // this is the backstop should anything else ever hold it.
    let outcome = tokio::time::timeout(limits.timeout + OVERRUN_GRACE, reconciled).await;
    run.metrics.took(name, started.elapsed());
    let Ok(outcome) = outcome else {
        run.metrics.reconciled(name, "trap");
        run.report.trap.fetch_add(1, Ordering::Relaxed);
        let failure = Failure::Overran(limits.timeout + OVERRUN_GRACE);
        run.report.failed(format!("{display}: {failure}"));
        return Err(failure);
    };
    match outcome {
        Err(trap) => {
            run.metrics.reconciled(name, "trap");
            run.report.trap.fetch_add(1, Ordering::Relaxed);
            run.report.failed(format!("{display}: {trap}"));
            Err(Failure::Trap(trap))
        }
        Ok(Err(error)) => {
            run.metrics.reconciled(name, "error");
            run.report.error.fetch_add(1, Ordering::Relaxed);
            run.report.failed(format!("{display}: {}", error.message));
            Err(Failure::Plugin(error))
        }
        Ok(Ok(action)) => {
            run.metrics.reconciled(name, "ok");
            run.report.ok.fetch_add(1, Ordering::Relaxed);
            Ok(action)
        }
    }
}

fn api_for_object(run: &PluginRun, object: &DynamicObject) -> Api<DynamicObject> {
    let client = run.bridge.client().clone();
    match object.namespace() {
        Some(namespace) => Api::namespaced_with(client, &namespace, &run.primary),
        None => Api::all_with(client, &run.primary),
    }
}

fn error_policy(object: Arc<DynamicObject>, failure: &Failure, run: Arc<PluginRun>) -> QueueAction {
    let queue_ref = QueueRef::from_obj_with(object.as_ref(), run.primary.clone());
    let retryable = match failure {
        Failure::Plugin(error) => error.retryable,
        Failure::NotLeader => return QueueAction::await_change(),
        _ => true,
    };
    let mut failures = run.failures.lock().unwrap_or_else(|e| e.into_inner());
    let count = failures.entry(queue_ref).or_default();
    *count = count.saturating_add(1);
    let delay = BACKOFF.delay(*count);
    warn!(object = %object.name_any(), error = %failure, retryable, attempt = *count, "reconcile failed");
    if retryable {
        QueueAction::requeue(delay)
    } else {
        QueueAction::await_change()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(changed: &Notify) -> bool {
        changed.notified().now_or_never().is_some()
    }

    #[tokio::test(start_paused = true)]
    async fn a_controller_stopped_before_its_first_list_ends_at_once() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let (primary, _writer) = reflector::store::<ConfigMap>();
        let stop = CancellationToken::new();
        // A watch that never lists, as a slow first list of many objects.
        let stream = Controller::for_stream(futures::stream::pending(), primary.clone())
            .graceful_shutdown_on(stop.clone().cancelled_owned())
            .run(
                |_, _| async { Ok::<_, std::convert::Infallible>(QueueAction::await_change()) },
                |_, _, _| QueueAction::await_change(),
                Arc::new(()),
            )
            .for_each(|_| async {});
        stop.cancel();
        let ended = async {
            tokio::select! {
                () = stream => {}
                () = stopped_before_listing(&stop, &primary) => {}
            }
        };
        // Paused time: the timeout fires only if nothing else can happen.
        tokio::time::timeout(Duration::from_secs(60), ended)
            .await
            .expect("the stopped controller never ended");
    }

    #[test]
    fn a_report_tells_the_status_writer_of_a_new_phase_or_error_and_not_of_counts() {
        let changed = Arc::new(Notify::new());
        let report = Report::new(changed.clone());
        report.ok.fetch_add(1, Ordering::Relaxed);
        assert!(!told(&changed), "a counter alone woke the writer");
        report.set_phase(Phase::Running {
            primary: "ConfigMap".into(),
        });
        assert!(told(&changed), "a new phase went unwritten");
        report.failed("default/x: plugin error".into());
        assert!(told(&changed), "a new last error went unwritten");
    }

    #[test]
    fn a_long_error_is_cut_before_it_reaches_the_status() {
        let report = Report::new(Arc::new(Notify::new()));
        report.failed("é".repeat(4096));
        let (message, _) = report.last_error.lock().unwrap().clone().unwrap();
        assert!(
            message.len() <= MAX_STATUS_MESSAGE + "… (cut)".len(),
            "{}",
            message.len()
        );
        assert!(message.ends_with("… (cut)"));
    }
}
