//! Runs plugins as controllers, only while this replica leads.
//!
//! [`Controllers`] is a leader-only role. At the start of a term it
//! instantiates each plugin once to read its registration, then runs a
//! kube-runtime [`Controller`] for it: the watches the plugin asked for, a
//! work queue with de-duplication, requeue-after and exponential backoff on
//! errors. Each reconcile gets a fresh instance (a fresh store with the
//! plugin's limits); a trap, timeout or memory overrun fails that reconcile
//! only. Watches and calls run as the plugin's ServiceAccount. When the term
//! ends, every controller stream is dropped: in-flight reconciles are
//! cancelled, and the guard refuses their host calls from the deadline on.

mod finalizer;
mod metrics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::controller::{self, Action as QueueAction, Controller};
use kube::runtime::reflector::ObjectRef as QueueRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{Instrument, debug, info, warn};

pub use self::metrics::PluginMetrics;
use crate::election::LeaderGuard;
use crate::plugins::LoadedPlugin;
use crate::roles::LeaderRole;
use crate::runtime::{
    Action, GroupVersionKind, HostContext, KubeBridge, Mapping, ObjectRef, ReconcileError,
    Registration, Request,
};

/// The first retry of a failed reconcile; doubled per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Backoff never grows beyond this (kube-controller-manager uses 1000 s;
/// a plugin fix should be picked up sooner).
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Registration gets the plugin's timeout, but at least this long.
const MIN_REGISTER_TIMEOUT: Duration = Duration::from_secs(1);

/// The leader-only role that runs every loaded plugin.
#[derive(Clone)]
pub struct Controllers {
    plugins: Arc<Vec<LoadedPlugin>>,
    kube_config: kube::Config,
    identity: String,
    metrics: PluginMetrics,
}

impl std::fmt::Debug for Controllers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controllers")
            .field("plugins", &self.plugins.len())
            .finish_non_exhaustive()
    }
}

impl Controllers {
    pub fn new(
        plugins: Arc<Vec<LoadedPlugin>>,
        kube_config: kube::Config,
        identity: String,
        metrics: PluginMetrics,
    ) -> Self {
        Self {
            plugins,
            kube_config,
            identity,
            metrics,
        }
    }
}

impl LeaderRole for Controllers {
    fn name(&self) -> &str {
        "controllers"
    }

    fn lead(&self, guard: LeaderGuard) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move {
            let runs = this.plugins.iter().map(|plugin| {
                let span = tracing::info_span!("plugin", plugin = %plugin.manifest.name);
                run_plugin(this.clone(), plugin.clone(), guard.clone()).instrument(span)
            });
            futures::future::join_all(runs).await;
        })
    }
}

/// What every reconcile of one plugin shares.
struct PluginRun {
    plugin: LoadedPlugin,
    bridge: Arc<KubeBridge>,
    guard: LeaderGuard,
    registration: Registration,
    primary: ApiResource,
    metrics: PluginMetrics,
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
}

async fn run_plugin(roles: Controllers, plugin: LoadedPlugin, guard: LeaderGuard) {
    let manifest = &plugin.manifest;
    let bridge = match KubeBridge::impersonating(
        &roles.kube_config,
        &manifest.name,
        &manifest.service_account_namespace,
        &manifest.service_account,
        &roles.identity,
    ) {
        Ok(bridge) => Arc::new(bridge),
        Err(error) => {
            warn!(%error, "cannot build the plugin's client; plugin not started");
            return;
        }
    };
    let context = host_context(&bridge, &guard, &plugin, None);
    let timeout = manifest.limits.timeout.max(MIN_REGISTER_TIMEOUT);
    roles.metrics.instantiated(&manifest.name);
    let registration = match plugin.compiled.instantiate(context, &manifest.limits).await {
        Ok(mut instance) => instance.register(timeout).await,
        Err(error) => Err(error),
    };
    let registration = match registration {
        Ok(registration) => registration,
        Err(error) => {
            warn!(error = %error, "plugin failed to register; not started");
            roles.metrics.reconciled(&manifest.name, "trap");
            return;
        }
    };
    let primary = match resource_of(&bridge, &registration.primary).await {
        Ok(resource) => resource,
        Err(message) => {
            warn!(%message, "plugin's primary kind is not served; not started");
            return;
        }
    };
    info!(primary = %primary.kind, owns = registration.owns.len(), watches = registration.watches.len(), "starting controller");
    let run = Arc::new(PluginRun {
        plugin: plugin.clone(),
        bridge: bridge.clone(),
        guard: guard.clone(),
        registration,
        primary,
        metrics: roles.metrics.clone(),
        failures: Mutex::default(),
    });
    let controller = match build_controller(&run).await {
        Ok(controller) => controller,
        Err(message) => {
            warn!(%message, "cannot watch what the plugin registered; not started");
            return;
        }
    };
    let stream = controller
        .with_config(controller::Config::default().concurrency(plugin.manifest.limits.concurrency))
        .run(reconcile, error_policy, run)
        .for_each(|result| async move {
            if let Err(error) = result {
                debug!(%error, "reconcile did not complete");
            }
        });
    tokio::select! {
        () = stream => warn!("controller stream ended"),
        () = guard.lost() => debug!("term over; controller stopped"),
    }
}

fn host_context(
    bridge: &Arc<KubeBridge>,
    guard: &LeaderGuard,
    plugin: &LoadedPlugin,
    object: Option<String>,
) -> HostContext {
    HostContext {
        bridge: bridge.clone(),
        guard: guard.clone(),
        config: plugin.manifest.config.clone(),
        object,
    }
}

async fn resource_of(bridge: &KubeBridge, gvk: &GroupVersionKind) -> Result<ApiResource, String> {
    let api_version = if gvk.group.is_empty() {
        gvk.version.clone()
    } else {
        format!("{}/{}", gvk.group, gvk.version)
    };
    bridge
        .resource(&api_version, &gvk.kind)
        .await
        .map(|(resource, _)| resource)
        .map_err(|error| error.message)
}

fn api_for(run: &PluginRun, resource: &ApiResource) -> Api<DynamicObject> {
    let client = run.bridge.client().clone();
    match &run.registration.namespace {
        Some(namespace) => Api::namespaced_with(client, namespace, resource),
        None => Api::all_with(client, resource),
    }
}

async fn build_controller(run: &Arc<PluginRun>) -> Result<Controller<DynamicObject>, String> {
    let registration = &run.registration;
    let mut primary_watch = watcher::Config::default();
    if let Some(selector) = &registration.label_selector {
        primary_watch = primary_watch.labels(selector);
    }
    let mut controller = Controller::new_with(
        api_for(run, &run.primary),
        primary_watch,
        run.primary.clone(),
    );
    for owned in &registration.owns {
        let resource = resource_of(&run.bridge, owned).await?;
        controller = controller.owns_with(
            api_for(run, &resource),
            resource,
            watcher::Config::default(),
        );
    }
    for watch in &registration.watches {
        let resource = resource_of(&run.bridge, &watch.kind).await?;
        let mut config = watcher::Config::default();
        if let Some(selector) = &watch.label_selector {
            config = config.labels(selector);
        }
        let primary = run.primary.clone();
        let api = api_for(run, &resource);
        controller = match watch.mapping.clone() {
            Mapping::Labels(labels) => {
                controller.watches_with(api, resource, config, move |object: DynamicObject| {
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
                })
            }
            Mapping::AllPrimaries => {
                let store = controller.store();
                controller.watches_with(api, resource, config, move |_: DynamicObject| {
                    store
                        .state()
                        .iter()
                        .map(|object| QueueRef::from_obj_with(object.as_ref(), primary.clone()))
                        .collect::<Vec<_>>()
                })
            }
        };
    }
    Ok(controller)
}

async fn reconcile(
    object: Arc<DynamicObject>,
    run: Arc<PluginRun>,
) -> Result<QueueAction, Failure> {
    run.guard.check().map_err(|_| Failure::NotLeader)?;
    let name = run.plugin.manifest.name.as_str();
    let reference = ObjectRef {
        namespace: object.namespace(),
        name: object.name_any(),
    };
    let cleanup = match &run.registration.finalizer {
        None => false,
        Some(finalizer) => match finalizer::state(&object, finalizer) {
            finalizer::State::Missing => {
                finalizer::add(&api_for_object(&run, &object), &object, finalizer)
                    .await
                    .map_err(Failure::Finalizer)?;
                // The update triggers the next reconcile.
                return Ok(QueueAction::await_change());
            }
            finalizer::State::Present => false,
            finalizer::State::Cleanup => true,
            finalizer::State::Released => return Ok(QueueAction::await_change()),
        },
    };
    let request = Request {
        reference: reference.clone(),
        object: Some(serde_json::to_string(object.as_ref()).unwrap_or_default()),
    };
    let display = match &reference.namespace {
        Some(namespace) => format!("{namespace}/{}", reference.name),
        None => reference.name.clone(),
    };
    let context = host_context(&run.bridge, &run.guard, &run.plugin, Some(display));
    let limits = &run.plugin.manifest.limits;
    run.metrics.instantiated(name);
    let outcome = match run.plugin.compiled.instantiate(context, limits).await {
        Ok(mut instance) => instance.reconcile(&request, cleanup, limits.timeout).await,
        Err(error) => Err(error),
    };
    let action = match outcome {
        Err(trap) => {
            run.metrics.reconciled(name, "trap");
            return Err(Failure::Trap(trap));
        }
        Ok(Err(error)) => {
            run.metrics.reconciled(name, "error");
            return Err(Failure::Plugin(error));
        }
        Ok(Ok(action)) => action,
    };
    run.metrics.reconciled(name, "ok");
    if cleanup
        && matches!(action, Action::Done)
        && let Some(finalizer) = &run.registration.finalizer
    {
        finalizer::remove(&api_for_object(&run, &object), &object, finalizer)
            .await
            .map_err(Failure::Finalizer)?;
    }
    let queue_ref = QueueRef::from_obj_with(object.as_ref(), run.primary.clone());
    run.failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&queue_ref);
    Ok(match action {
        Action::RequeueAfter(millis) => QueueAction::requeue(Duration::from_millis(millis)),
        Action::Done => match run.registration.resync_period_ms {
            Some(millis) => QueueAction::requeue(Duration::from_millis(millis)),
            None => QueueAction::await_change(),
        },
    })
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
        Failure::Trap(_) | Failure::Finalizer(_) => true,
    };
    let mut failures = run.failures.lock().unwrap_or_else(|e| e.into_inner());
    let count = failures.entry(queue_ref).or_default();
    *count = count.saturating_add(1);
    let delay = backoff(*count);
    warn!(object = %object.name_any(), error = %failure, retryable, attempt = *count, "reconcile failed");
    if retryable {
        QueueAction::requeue(delay)
    } else {
        QueueAction::await_change()
    }
}

/// 0.5 s, 1 s, 2 s, ... capped at [`BACKOFF_MAX`].
fn backoff(consecutive_failures: u32) -> Duration {
    let exponent = consecutive_failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_failure_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }
}
