//! Every replica's view of the plugins it could run: each Plugin object
//! fetched and compiled (or the reason it could not be), plus the plugins
//! given as manifests.
//!
//! Every replica builds the catalog, leader or not, so a new leader starts
//! controllers from compiled code. Work happens only when a Plugin's spec
//! changes (`metadata.generation`), never on status writes; fetches run
//! concurrently so one slow source does not hold up the others, and a
//! failure that may heal (a ConfigMap created later, a server back up) is
//! retried with backoff. Compiled components are shared by digest, so a
//! change of configuration reuses the compiled code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::LoadedPlugin;
use super::accounts::AccountPolicy;
use super::definition::Definition;
use super::resource::Plugin;
use super::source::Fetcher;
use crate::backoff::Backoff;
use crate::runtime::{self, Compiler};

/// Retries of a fetch that may heal: from 1 s, doubled per failure, never
/// beyond 120 s before jitter.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));

/// Every plugin this replica knows, by [`Definition::name`].
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub entries: BTreeMap<String, Entry>,
    /// Whether the Plugin objects that existed when watching began have
    /// all been seen (always, without a watch).
    pub listed: bool,
}

/// One plugin as this replica sees it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The Plugin object behind it; `None` for a manifest.
    pub object: Option<ObjectInfo>,
    /// What the source names, for `kubectl get`.
    pub source: String,
    /// Whether the spec pauses it.
    pub suspend: bool,
    pub state: State,
}

/// Where a Plugin object is and which version of its spec was used.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectInfo {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
}

/// How far a plugin got towards running.
#[derive(Clone, Debug)]
pub enum State {
    /// Being fetched and compiled.
    Preparing,
    /// Compiled and ready to run.
    Ready(LoadedPlugin),
    /// Stopped at a stage, with the reason.
    Failed(Problem),
}

/// The stage a plugin failed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The spec itself is unusable (a limit, the configuration).
    Spec,
    Fetch,
    Compile,
}

/// Why a plugin cannot run, for its status and the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub stage: Stage,
    /// A CamelCase reason for conditions: `DigestMismatch`, `WrongWorld`, ...
    pub reason: &'static str,
    pub message: String,
    /// Trying again may succeed without a change of spec.
    pub retryable: bool,
    /// The digest of what was fetched, when the failure came after fetching.
    pub digest: Option<String>,
}

impl Catalog {
    /// The catalog of plugins given as manifests.
    pub fn of_manifests(plugins: &[LoadedPlugin]) -> Self {
        let entries = plugins
            .iter()
            .map(|plugin| {
                let entry = Entry {
                    object: None,
                    source: "manifest".to_owned(),
                    suspend: false,
                    state: State::Ready(plugin.clone()),
                };
                (plugin.definition.name.clone(), entry)
            })
            .collect();
        Self {
            entries,
            listed: true,
        }
    }

    /// Every plugin this replica knows is past fetching and compiling
    /// (ready to run, or failed with a reason): a replica that leads now
    /// does not make its plugins wait for a compiler.
    pub fn is_prepared(&self) -> bool {
        self.listed
            && self
                .entries
                .values()
                .all(|entry| !matches!(entry.state, State::Preparing))
    }

    /// The plugins still being fetched or compiled, for a message.
    pub fn preparing(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(_, entry)| matches!(entry.state, State::Preparing))
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// Keeps a [`Catalog`] up to date with the Plugin objects in the cluster.
///
/// A loop over kube-runtime's watcher rather than its `Controller`: the
/// catalogue must drop a deleted Plugin at once (a `Controller` reconciles
/// only objects still in its store, and a finalizer on Plugins would make
/// every replica a writer), must prepare again only when the spec changes
/// (the leader's status writes come back as events), and must drop the
/// result of a prepare overtaken by a newer spec. The watch, its backoff
/// and the retry delays are maintained crates' (kube-runtime, backon).
pub struct PluginWatcher {
    api: Api<Plugin>,
    accounts: Arc<AccountPolicy>,
    fetcher: Fetcher,
    compiler: Compiler,
    catalog: watch::Sender<Catalog>,
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginWatcher")
            .field("fetcher", &self.fetcher)
            .finish_non_exhaustive()
    }
}

/// What one prepare task reports: which plugin, which attempt, and how it went.
type Prepared = (String, u64, State);

/// What the watcher remembers of each Plugin between events.
struct Known {
    generation: Option<i64>,
    uid: Option<String>,
    /// Bumped per prepare; a result for an older attempt is dropped.
    attempt: u64,
    failures: u32,
    object: Arc<Plugin>,
}

impl PluginWatcher {
    /// Watches Plugin objects in `namespace` (or every namespace) through
    /// `client`, publishing into `catalog` (which may already hold manifest
    /// plugins).
    pub fn new(
        client: kube::Client,
        namespace: Option<&str>,
        compiler: Compiler,
        fetcher: Fetcher,
        accounts: AccountPolicy,
        catalog: watch::Sender<Catalog>,
    ) -> Self {
        let api = match namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::all(client),
        };
        Self {
            api,
            accounts: Arc::new(accounts),
            fetcher,
            compiler,
            catalog,
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let events = watcher::watcher(self.api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        self.run_on(events, shutdown).await;
    }

    /// Runs on `events` (the watch of Plugin objects) until `shutdown`.
    async fn run_on(
        self,
        mut events: impl futures::Stream<Item = Result<Event<Plugin>, watcher::Error>> + Unpin,
        shutdown: CancellationToken,
    ) {
        let mut known: HashMap<String, Known> = HashMap::new();
        let mut preparing: JoinSet<Prepared> = JoinSet::new();
        let mut retries: BTreeMap<String, Instant> = BTreeMap::new();
        let mut listed: Option<HashSet<String>> = None;
        self.catalog.send_modify(|catalog| catalog.listed = false);
        loop {
            let next_retry = retries.values().min().copied();
            tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.next() => match event {
                    None => return,
                    Some(Err(error)) => {
                        warn!(%error, "watching Plugin objects failed; retrying");
                        // The Plugin API is not served (its CRD is not
                        // installed): no object exists that could be
                        // compiling, so nothing keeps this replica waiting.
                        if let watcher::Error::InitialListFailed(kube::Error::Api(status)) = &error
                            && status.code == 404
                        {
                            self.mark_listed();
                        }
                    }
                    Some(Ok(Event::Init)) => listed = Some(HashSet::new()),
                    Some(Ok(Event::InitApply(plugin))) => {
                        if let Some(listed) = &mut listed {
                            listed.insert(key_of(&plugin));
                        }
                        self.applied(plugin, &mut known, &mut preparing);
                    }
                    Some(Ok(Event::InitDone)) => {
                        let listed = listed.take().unwrap_or_default();
                        let gone: Vec<String> =
                            known.keys().filter(|key| !listed.contains(*key)).cloned().collect();
                        for key in gone {
                            known.remove(&key);
                            retries.remove(&key);
                            self.remove(&key);
                        }
                        self.mark_listed();
                    }
                    Some(Ok(Event::Apply(plugin))) => self.applied(plugin, &mut known, &mut preparing),
                    Some(Ok(Event::Delete(plugin))) => {
                        let key = key_of(&plugin);
                        known.remove(&key);
                        retries.remove(&key);
                        info!(plugin = %key, "Plugin deleted");
                        self.remove(&key);
                    }
                },
                Some(done) = preparing.join_next(), if !preparing.is_empty() => {
                    let Ok((key, attempt, state)) = done else { continue };
                    let Some(plugin) = known.get_mut(&key).filter(|known| known.attempt == attempt) else {
                        continue;
                    };
                    match &state {
                        State::Failed(problem) if problem.retryable => {
                            plugin.failures = plugin.failures.saturating_add(1);
                            let delay = RETRY.delay(plugin.failures);
                            warn!(plugin = %key, reason = problem.reason, error = %problem.message, retry_in = ?delay, "plugin not ready");
                            retries.insert(key.clone(), Instant::now() + delay);
                        }
                        State::Failed(problem) => {
                            warn!(plugin = %key, reason = problem.reason, error = %problem.message, "plugin cannot run until its spec changes");
                        }
                        State::Ready(loaded) => {
                            plugin.failures = 0;
                            info!(plugin = %key, digest = %loaded.compiled.digest, compile_ms = loaded.compiled.compile_time.as_millis() as u64, "plugin ready");
                        }
                        State::Preparing => {}
                    }
                    self.set_state(&key, state);
                }
                () = sleep_until(next_retry), if next_retry.is_some() => {
                    let now = Instant::now();
                    let due: Vec<String> =
                        retries.iter().filter(|(_, at)| **at <= now).map(|(key, _)| key.clone()).collect();
                    for key in due {
                        retries.remove(&key);
                        if let Some(plugin) = known.get_mut(&key) {
                            plugin.attempt += 1;
                            self.prepare(key, plugin.attempt, plugin.object.clone(), &mut preparing);
                        }
                    }
                }
            }
        }
    }

    /// A Plugin was created or changed: prepare it if its spec changed.
    /// A status-only change is the leader's own write coming back: the
    /// catalogue holds what can run, not what the API server last said.
    fn applied(
        &self,
        plugin: Plugin,
        known: &mut HashMap<String, Known>,
        preparing: &mut JoinSet<Prepared>,
    ) {
        let key = key_of(&plugin);
        let plugin = Arc::new(plugin);
        let generation = plugin.metadata.generation;
        let uid = plugin.metadata.uid.clone();
        if let Some(seen) = known.get_mut(&key)
            && seen.generation == generation
            && seen.uid == uid
        {
            seen.object = plugin.clone();
            return;
        }
        let attempt = known.get(&key).map_or(0, |seen| seen.attempt + 1);
        known.insert(
            key.clone(),
            Known {
                generation,
                uid,
                attempt,
                failures: 0,
                object: plugin.clone(),
            },
        );
        debug!(plugin = %key, ?generation, "Plugin spec changed; preparing");
        self.catalog.send_modify(|catalog| {
            catalog.entries.insert(
                key.clone(),
                Entry {
                    object: Some(ObjectInfo {
                        namespace: plugin.namespace().unwrap_or_default(),
                        name: plugin.name_any(),
                        generation,
                    }),
                    source: plugin.spec.source.describe(),
                    suspend: plugin.spec.suspend,
                    state: State::Preparing,
                },
            );
        });
        self.prepare(key, attempt, plugin, preparing);
    }

    fn prepare(
        &self,
        key: String,
        attempt: u64,
        plugin: Arc<Plugin>,
        preparing: &mut JoinSet<Prepared>,
    ) {
        let fetcher = self.fetcher.clone();
        let compiler = self.compiler.clone();
        let accounts = self.accounts.clone();
        preparing.spawn(async move {
            let state = match prepare(&fetcher, &compiler, &accounts, &plugin).await {
                Ok(loaded) => State::Ready(loaded),
                Err(problem) => State::Failed(problem),
            };
            (key, attempt, state)
        });
    }

    /// Every Plugin object that existed at the start has been seen.
    fn mark_listed(&self) {
        self.catalog
            .send_if_modified(|catalog| !std::mem::replace(&mut catalog.listed, true));
    }

    fn set_state(&self, key: &str, state: State) {
        self.catalog.send_modify(|catalog| {
            if let Some(entry) = catalog.entries.get_mut(key) {
                entry.state = state;
            }
        });
        keep_only_used(&self.compiler, &self.catalog.borrow());
    }

    fn remove(&self, key: &str) {
        self.catalog.send_modify(|catalog| {
            catalog.entries.remove(key);
        });
        keep_only_used(&self.compiler, &self.catalog.borrow());
    }
}

/// `namespace/name`, the same as the plugin's [`Definition::name`].
fn key_of(plugin: &Plugin) -> String {
    format!(
        "{}/{}",
        plugin.namespace().unwrap_or_default(),
        plugin.name_any()
    )
}

async fn prepare(
    fetcher: &Fetcher,
    compiler: &Compiler,
    accounts: &AccountPolicy,
    plugin: &Plugin,
) -> Result<LoadedPlugin, Problem> {
    let definition = Definition::of(plugin).map_err(|invalid| Problem {
        stage: Stage::Spec,
        reason: "InvalidSpec",
        message: invalid.to_string(),
        retryable: false,
        digest: None,
    })?;
    // Before anything is fetched as that account (a pull Secret).
    if let Some(refusal) = accounts.refusal(&definition.service_account) {
        return Err(Problem {
            stage: Stage::Spec,
            reason: "AccountDenied",
            message: refusal,
            retryable: false,
            digest: None,
        });
    }
    let namespace = plugin.namespace().unwrap_or_default();
    let fetched = fetcher
        .fetch(&namespace, &definition.service_account, &plugin.spec.source)
        .await
        .map_err(|error| Problem {
            stage: Stage::Fetch,
            reason: error.reason(),
            message: error.to_string(),
            retryable: error.retryable(),
            digest: None,
        })?;
    let compiled = compiler
        .compile(fetched.bytes)
        .await
        .map_err(|error| Problem {
            stage: Stage::Compile,
            reason: compile_reason(&error),
            message: error.to_string(),
            retryable: false,
            digest: Some(fetched.digest.clone()),
        })?;
    if definition.admission.is_some() && !compiled.admits() {
        return Err(Problem {
            stage: Stage::Compile,
            reason: "NoAdmissionExport",
            message: format!(
                "spec.admission declares webhooks, but the component ({}) exports no leasehold:controller/admission: build it with the SDK's export_controller!(.., admission: ..)",
                compiled.contract
            ),
            retryable: false,
            digest: Some(fetched.digest.clone()),
        });
    }
    Ok(LoadedPlugin {
        definition,
        compiled,
    })
}

/// The condition reason for a component the runtime refused.
fn compile_reason(error: &runtime::Error) -> &'static str {
    match error {
        runtime::Error::Compile(_) | runtime::Error::CoreModule => "NotAComponent",
        runtime::Error::WrongWorld(_) => "WrongWorld",
        runtime::Error::IncompatibleContract { .. } => "IncompatibleContract",
        runtime::Error::Engine(_)
        | runtime::Error::NoAdmission
        | runtime::Error::Trap { .. }
        | runtime::Error::MemoryLimit { .. } => "CompileFailed",
    }
}

/// Forgets compiled code no plugin uses any more.
fn keep_only_used(compiler: &Compiler, catalog: &Catalog) {
    let used: HashSet<&str> = catalog
        .entries
        .values()
        .filter_map(|entry| match &entry.state {
            State::Ready(loaded) => Some(loaded.compiled.digest.as_str()),
            _ => None,
        })
        .collect();
    compiler.retain(|digest| used.contains(digest));
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use futures::channel::mpsc;

    use super::*;

    /// A watcher on a fake event stream, fetching `image` sources from a
    /// temporary plugin root (no API server is ever asked).
    struct Harness {
        events: mpsc::UnboundedSender<Result<Event<Plugin>, watcher::Error>>,
        catalog: watch::Receiver<Catalog>,
        root: tempfile::TempDir,
        _stop: tokio_util::sync::DropGuard,
    }

    impl Harness {
        fn start() -> Self {
            let root = tempfile::tempdir().unwrap();
            let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
            let client = kube::Client::try_from(config.clone()).unwrap();
            let fetcher = Fetcher::new(client.clone(), config, root.path().to_owned(), 1 << 20);
            let runtime = Arc::new(runtime::Runtime::new(None).unwrap());
            let (catalog_tx, catalog) = watch::channel(Catalog::default());
            let watcher = PluginWatcher::new(
                client,
                Some("team"),
                Compiler::new(runtime),
                fetcher,
                AccountPolicy::default(),
                catalog_tx,
            );
            let (events, stream) = mpsc::unbounded();
            let stop = CancellationToken::new();
            tokio::spawn(watcher.run_on(stream, stop.clone()));
            Self {
                events,
                catalog,
                root,
                _stop: stop.drop_guard(),
            }
        }

        fn send(&self, event: Event<Plugin>) {
            self.events.unbounded_send(Ok(event)).unwrap();
        }

        /// Waits until the catalogue satisfies `check`.
        async fn until(&mut self, what: &str, check: impl Fn(&Catalog) -> bool) {
            let waited = tokio::time::timeout(
                Duration::from_secs(30),
                self.catalog.wait_for(|catalog| check(catalog)),
            )
            .await
            .is_ok();
            assert!(
                waited,
                "{what}; the catalogue is {:?}",
                self.catalog.borrow().entries.keys().collect::<Vec<_>>()
            );
        }

        /// Waits until plugin `name` failed with `reason`.
        async fn failed_with(&mut self, name: &str, reason: &str) {
            let key = format!("team/{name}");
            self.until(&format!("{key} failed with {reason}"), |catalog| {
                matches!(
                    catalog.entries.get(&key).map(|e| &e.state),
                    Some(State::Failed(problem)) if problem.reason == reason
                )
            })
            .await;
        }
    }

    fn plugin(name: &str, generation: i64) -> Plugin {
        let mut plugin: Plugin = serde_json::from_value(serde_json::json!({
            "apiVersion": "leasehold.dev/v1alpha1",
            "kind": "Plugin",
            "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}"), "generation": generation},
            "spec": {"source": {"image": {"path": format!("{name}.wasm")}}, "serviceAccountName": "sa"},
        }))
        .unwrap();
        plugin.status = None;
        plugin
    }

    #[tokio::test]
    async fn a_source_that_heals_is_fetched_again_without_a_spec_change() {
        let mut harness = Harness::start();
        harness.send(Event::Apply(plugin("late", 1)));
        harness.failed_with("late", "SourceNotFound").await;
        std::fs::write(harness.root.path().join("late.wasm"), b"not wasm").unwrap();
        // The retry fetches it, so it gets as far as the compiler.
        harness.failed_with("late", "NotAComponent").await;
    }

    #[tokio::test]
    async fn only_a_new_generation_prepares_a_plugin_again() {
        let mut harness = Harness::start();
        std::fs::write(harness.root.path().join("p.wasm"), b"not wasm").unwrap();
        harness.send(Event::Apply(plugin("p", 1)));
        harness.failed_with("p", "NotAComponent").await;
        std::fs::remove_file(harness.root.path().join("p.wasm")).unwrap();
        // The leader's status write coming back: same generation.
        let mut written = plugin("p", 1);
        written.status = Some(Default::default());
        harness.send(Event::Apply(written));
        // A marker after it: once the marker is in, the status event was handled.
        harness.send(Event::Apply(plugin("marker", 1)));
        harness
            .until("the marker is in", |c| {
                c.entries.contains_key("team/marker")
            })
            .await;
        harness.failed_with("p", "NotAComponent").await;
        harness.send(Event::Apply(plugin("p", 2)));
        harness.failed_with("p", "SourceNotFound").await;
    }

    #[tokio::test]
    async fn deleted_plugins_and_plugins_missing_from_a_relist_leave_the_catalogue() {
        let mut harness = Harness::start();
        for name in ["a", "b", "c"] {
            harness.send(Event::Apply(plugin(name, 1)));
        }
        harness
            .until("three plugins", |c| c.entries.len() == 3)
            .await;
        harness.send(Event::Delete(plugin("a", 1)));
        harness
            .until("a deleted", |c| !c.entries.contains_key("team/a"))
            .await;
        // After a watch restart the list has only b: c was deleted meanwhile.
        harness.send(Event::Init);
        harness.send(Event::InitApply(plugin("b", 1)));
        harness.send(Event::InitDone);
        harness
            .until("only b", |c| c.entries.keys().eq(["team/b"]))
            .await;
    }

    #[test]
    fn a_catalogue_is_prepared_once_listed_with_nothing_being_fetched_or_compiled() {
        let mut catalog = Catalog::of_manifests(&[]);
        assert!(catalog.is_prepared(), "manifests need no list");
        let entry = |state| Entry {
            object: None,
            source: "http".to_owned(),
            suspend: false,
            state,
        };
        catalog
            .entries
            .insert("team/slow".to_owned(), entry(State::Preparing));
        assert!(!catalog.is_prepared());
        assert_eq!(catalog.preparing(), ["team/slow"]);
        catalog.entries.insert(
            "team/slow".to_owned(),
            entry(State::Failed(Problem {
                stage: Stage::Fetch,
                reason: "SourceNotFound",
                message: String::new(),
                retryable: true,
                digest: None,
            })),
        );
        assert!(catalog.is_prepared(), "a failure is not a wait");
        catalog.listed = false;
        assert!(
            !catalog.is_prepared(),
            "objects not yet listed may be compiling"
        );
    }

    #[tokio::test]
    async fn the_watched_catalogue_is_listed_only_after_the_first_list() {
        let mut harness = Harness::start();
        harness.until("watching has begun", |c| !c.listed).await;
        harness.send(Event::Init);
        harness.send(Event::InitApply(plugin("missing", 1)));
        harness.failed_with("missing", "SourceNotFound").await;
        assert!(!harness.catalog.borrow().is_prepared());
        harness.send(Event::InitDone);
        harness.until("listed", Catalog::is_prepared).await;
    }

    #[tokio::test]
    async fn without_the_plugin_api_there_is_nothing_to_wait_for() {
        let mut harness = Harness::start();
        let missing = kube::core::Status::failure(
            "the server could not find the requested resource",
            "NotFound",
        )
        .with_code(404);
        harness
            .events
            .unbounded_send(Err(watcher::Error::InitialListFailed(kube::Error::Api(
                Box::new(missing),
            ))))
            .unwrap();
        harness.until("listed", Catalog::is_prepared).await;
    }
}
