//! The ConfigMap mirror of `plugins/examples/configmap-mirror`, written
//! natively with kube-runtime: the baseline that `make bench-runtime`
//! races the plugin against, and the native side of the lines-of-code
//! comparison.
//!
//! It is a faithful port: the same source label, copy labels, finalizer,
//! events and writes per reconcile. Target namespaces and existing copies
//! are read from reflector stores fed by the watches that trigger the
//! controller, as the plugin's lists are answered from its host's caches
//! (and as controller-runtime's client reads): both sides send the API
//! server only their writes. Nothing is stripped from the stored objects
//! (kube-runtime keeps what the API server sends, as a controller written
//! with `Controller::new` does).
//!
//! The plugin also handles a source that loses its label while it carries
//! the finalizer (`absent`); a kube-runtime controller never reconciles an
//! object that has left its watch, so that path has no counterpart here.
//!
//! ```no_run
//! # async fn example(client: kube::Client) {
//! use futures::StreamExt;
//! let config = leasehold_tests::native_mirror::Config {
//!     namespace_selector: "leasehold.dev/mirror-target=true".into(),
//!     concurrency: 4,
//! };
//! leasehold_tests::native_mirror::run(client, config)
//!     .for_each(|_| async {})
//!     .await;
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

/// The controller's name, also its event reporter.
const NAME: &str = "configmap-mirror";
/// Sources carry this label.
const SOURCE_SELECTOR: &str = "leasehold.dev/mirror=true";
/// On a copy: the source's name and namespace.
const SOURCE_NAME: &str = "mirror.leasehold.dev/source-name";
const SOURCE_NAMESPACE: &str = "mirror.leasehold.dev/source-namespace";
const FINALIZER: &str = "mirror.leasehold.dev/copies";
/// A failed reconcile is retried after this long.
const RETRY: Duration = Duration::from_millis(500);

/// How the mirror runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespaces matching this label selector receive copies: `key=value`
    /// requirements joined by commas (kube-core parses no selector text).
    pub namespace_selector: String,
    /// Sources reconciled at once.
    pub concurrency: u16,
}

/// Why one reconcile failed; every variant is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes call failed")]
    Kube(#[from] kube::Error),
    /// Some copies could not be written (each is reported in an Event).
    #[error("{failed} of {targets} copies failed")]
    Copies { failed: usize, targets: usize },
    /// Adding or removing the finalizer, or the work it guards, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

/// What every reconcile shares.
struct Context {
    client: Client,
    recorder: Recorder,
    namespace_selector: Selector,
    /// Every namespace, as the namespace watch last saw it.
    namespaces: Store<Namespace>,
    /// Every copy (ConfigMaps labelled with their source's name).
    copies: Store<ConfigMap>,
}

/// Runs the mirror until the stream is dropped; each item is the outcome of
/// one reconcile.
///
/// # Panics
///
/// If a requirement of `config.namespace_selector` is not `key=value`.
pub fn run(
    client: Client,
    config: Config,
) -> impl Stream<Item = Result<(ObjectRef<ConfigMap>, Action), controller::Error<Error, watcher::Error>>>
{
    let (namespaces, namespace_writer) = reflector::store();
    let namespace_changes = watcher(Api::<Namespace>::all(client.clone()), Default::default())
        .default_backoff()
        .reflect(namespace_writer)
        .touched_objects();
    let (copies, copy_writer) = reflector::store();
    let copy_changes = watcher(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().labels(SOURCE_NAME),
    )
    .default_backoff()
    .reflect(copy_writer)
    .touched_objects();
    let sources = Controller::new(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().labels(SOURCE_SELECTOR),
    );
    // A new or relabelled namespace may need copies of every source.
    let store = sources.store();
    let controller = sources
        .watches_stream(namespace_changes, move |_| {
            store
                .state()
                .iter()
                .map(|source| ObjectRef::from_obj(source.as_ref()))
                .collect::<Vec<_>>()
        })
        // A copy edited or deleted by hand is put back.
        .watches_stream(copy_changes, |copy| {
            let labels = copy.labels();
            let name = labels.get(SOURCE_NAME)?;
            let namespace = labels.get(SOURCE_NAMESPACE)?;
            Some(ObjectRef::new(name).within(namespace))
        })
        .with_config(controller::Config::default().concurrency(config.concurrency));
    let context = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: NAME.into(),
                instance: None,
            },
        ),
        client,
        namespace_selector: equalities(&config.namespace_selector),
        namespaces,
        copies,
    });
    controller.run(reconcile, error_policy, context)
}

async fn reconcile(source: Arc<ConfigMap>, context: Arc<Context>) -> Result<Action, Error> {
    let home = source.namespace().unwrap_or_default();
    let sources = Api::<ConfigMap>::namespaced(context.client.clone(), &home);
    finalizer(&sources, FINALIZER, source, |event| async {
        match event {
            finalizer::Event::Apply(source) => context.mirror(&source).await,
            finalizer::Event::Cleanup(source) => context.delete_copies(&source).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

fn error_policy(source: Arc<ConfigMap>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(source = %ObjectRef::from_obj(source.as_ref()), %error, "reconcile failed");
    Action::requeue(RETRY)
}

impl Context {
    /// Brings the copies of `source` in line with it and with the target
    /// namespaces.
    async fn mirror(&self, source: &ConfigMap) -> Result<Action, Error> {
        let home = source.namespace().unwrap_or_default();
        let targets: BTreeSet<String> = self
            .namespaces
            .state()
            .into_iter()
            .filter(|namespace| self.namespace_selector.matches(namespace.labels()))
            .filter(|namespace| namespace.meta().deletion_timestamp.is_none())
            .map(|namespace| namespace.name_any())
            .filter(|namespace| *namespace != home)
            .collect();
        let copies: BTreeMap<String, Arc<ConfigMap>> = self
            .copies_of(source)
            .into_iter()
            .map(|copy| (copy.namespace().unwrap_or_default(), copy))
            .collect();

        let (mut changed, mut failed) = (0, 0);
        for namespace in &targets {
            let api = Api::<ConfigMap>::namespaced(self.client.clone(), namespace);
            let outcome = match copies.get(namespace) {
                Some(copy)
                    if copy.data == source.data && copy.binary_data == source.binary_data =>
                {
                    continue;
                }
                // The whole copy is the mirror's: replace it (with its
                // resourceVersion, so a concurrent edit retries).
                Some(copy) => {
                    let updated = ConfigMap {
                        data: source.data.clone(),
                        binary_data: source.binary_data.clone(),
                        ..copy.as_ref().clone()
                    };
                    api.replace(&copy.name_any(), &PostParams::default(), &updated)
                        .await
                        .map(drop)
                }
                // `create`, not apply: a ConfigMap of that name that is not
                // a copy belongs to someone else and must not be overwritten.
                None => api
                    .create(&PostParams::default(), &copy_of(source))
                    .await
                    .map(drop),
            };
            match outcome {
                Ok(()) => changed += 1,
                Err(error) => {
                    failed += 1;
                    tracing::warn!(namespace, %error, "cannot write copy");
                    self.event(
                        source,
                        EventType::Warning,
                        "CopyFailed",
                        format!("namespace {namespace}: {error}"),
                    )
                    .await;
                }
            }
        }
        for (namespace, copy) in &copies {
            if !targets.contains(namespace) {
                Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
                    .delete(&copy.name_any(), &DeleteParams::default())
                    .await?;
                changed += 1;
            }
        }
        if changed > 0 {
            tracing::info!(source = %ObjectRef::from_obj(source), namespaces = targets.len(), changed, "mirrored");
            self.event(
                source,
                EventType::Normal,
                "Mirrored",
                format!("copied into {} namespaces", targets.len()),
            )
            .await;
        }
        if failed > 0 {
            return Err(Error::Copies {
                failed,
                targets: targets.len(),
            });
        }
        Ok(Action::await_change())
    }

    async fn delete_copies(&self, source: &ConfigMap) -> Result<Action, Error> {
        for copy in self.copies_of(source) {
            Api::<ConfigMap>::namespaced(
                self.client.clone(),
                &copy.namespace().unwrap_or_default(),
            )
            .delete(&copy.name_any(), &DeleteParams::default())
            .await?;
        }
        Ok(Action::await_change())
    }

    /// The copies of `source` the copy watch has seen.
    fn copies_of(&self, source: &ConfigMap) -> Vec<Arc<ConfigMap>> {
        let (name, namespace) = (source.name_any(), source.namespace().unwrap_or_default());
        self.copies
            .state()
            .into_iter()
            .filter(|copy| {
                let labels = copy.labels();
                labels.get(SOURCE_NAME) == Some(&name)
                    && labels.get(SOURCE_NAMESPACE) == Some(&namespace)
            })
            .collect()
    }

    /// Records an Event on `source`; a failure to record one is not worth
    /// failing the reconcile for.
    async fn event(&self, source: &ConfigMap, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        let _ = self.recorder.publish(&event, &source.object_ref(&())).await;
    }
}

/// The selector of `key=value` requirements joined by commas.
fn equalities(text: &str) -> Selector {
    text.split(',')
        .map(|requirement| {
            let (key, value) = requirement
                .split_once('=')
                .expect("a namespace selector requirement is key=value");
            (key.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// The copy of `source` to keep in another namespace: its data, and labels
/// naming it (not its own labels, or the copy would be mirrored in turn).
fn copy_of(source: &ConfigMap) -> ConfigMap {
    let mut copy = ConfigMap {
        data: source.data.clone(),
        binary_data: source.binary_data.clone(),
        ..ConfigMap::default()
    };
    copy.metadata.name = source.metadata.name.clone();
    copy.labels_mut()
        .insert(SOURCE_NAME.into(), source.name_any());
    copy.labels_mut().insert(
        SOURCE_NAMESPACE.into(),
        source.namespace().unwrap_or_default(),
    );
    copy
}
