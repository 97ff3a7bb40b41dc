//! Unit-test a Leasehold plugin as it will run: the compiled component, on
//! the host's own wasm runtime (the same engine, contract checks, memory
//! limit and timeout), with its Kubernetes calls answered by an in-memory
//! [`FakeCluster`].
//!
//! A test builds the plugin's component, puts fixture objects in the
//! cluster, reconciles one of them and asserts on the [`Call`]s the plugin
//! made and the objects that result:
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use leasehold_harness::{Harness, build_component};
//! use leasehold_sdk::{Action, ObjectRef};
//!
//! let component = build_component(env!("CARGO_MANIFEST_DIR")).unwrap();
//! let harness = Harness::load(&component).unwrap();
//! let settings: ConfigMap = serde_json::from_value(serde_json::json!({
//!     "metadata": { "namespace": "default", "name": "settings" }
//! })).unwrap();
//! harness.cluster().insert(settings);
//!
//! let action = harness.reconcile(&ObjectRef::namespaced("default", "settings")).unwrap();
//! assert_eq!(action, Action::Done);
//! for call in harness.cluster().calls() {
//!     println!("{call}"); // e.g. "apply v1/ConfigMap team-a/settings -> ok"
//! }
//! ```
//!
//! A plugin that exports `admission` is asked about requests as the API
//! server would ask it through a replica: build the request with
//! [`ReviewRequest`], then [`Harness::validate`] returns the verdict and
//! [`Harness::mutate`] the verdict with the patched object.
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use leasehold_harness::{Harness, ReviewRequest, build_component};
//!
//! let harness = Harness::load(build_component(env!("CARGO_MANIFEST_DIR")).unwrap()).unwrap();
//! let request = ReviewRequest::create(&ConfigMap::default()).user("jane", &["devs"]);
//! let verdict = harness.validate(&request).unwrap();
//! assert!(!verdict.allowed, "{:?}", verdict.message);
//! let reviewed = harness.mutate(&request).unwrap();
//! let defaulted: ConfigMap = reviewed.object().unwrap();
//! ```
//!
//! The cluster is the SDK's model (see [`leasehold_sdk::testing`]): no
//! admission on its writes, no defaulting, server-side apply without
//! conflicts, and the garbage collector runs at once. It is for authors'
//! unit tests; behaviour that depends on the real API server belongs in
//! tests against one.

mod backend;
mod build;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use leasehold_runtime::{
    self as runtime, Compiled, Compiler, HostContext, Limits, Registration, Request, Review,
    Runtime,
};
use leasehold_sdk::api::ApiError;
use leasehold_sdk::json_patch;
use leasehold_sdk::testing::{Host, Primary};
use leasehold_sdk::{Action, ObjectRef, TypeMeta};

pub use self::build::{PLUGIN_PROFILE, build_component, profile_for};
pub use leasehold_sdk::admission::Verdict;
pub use leasehold_sdk::testing::{
    Call, FakeCluster, LogRecord, RecordedEvent, ReviewRequest, Reviewed, Verb,
};

/// Why a harnessed call (a reconcile or a review) did not produce an
/// answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The component file could not be read.
    #[error("cannot read the component {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The plugin crate did not build into a component.
    #[error("cannot build the component of {crate_dir}: {reason}")]
    Build { crate_dir: PathBuf, reason: String },
    /// The host refused or could not run the component: not a component,
    /// another world or contract version, a trap, a timeout, too much
    /// memory. A replica would record the same on the Plugin's status.
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    /// The plugin answered with an error (its `reconcile-error`).
    #[error("the plugin failed (retryable: {retryable}): {message}")]
    Reconcile { message: String, retryable: bool },
    /// The plugin could not decide about an admission request (the
    /// `admission` export's error); the host applies the rule's failure
    /// policy.
    #[error("the plugin could not decide: {message}")]
    Undecided { message: String },
    /// The plugin's verdict carries a patch the API server would refuse:
    /// not a JSON patch, one that does not apply to the object, or one
    /// from `validate`.
    #[error("the plugin's patch is unusable: {message}")]
    Patch { message: String },
    /// The host's own bookkeeping (the registration's finalizer or label
    /// selector) failed against the cluster.
    #[error("host bookkeeping failed: {0}")]
    Cluster(#[from] ApiError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One compiled plugin, an in-memory cluster, and the host's reconcile flow.
pub struct Harness {
    compiled: Compiled,
    cluster: FakeCluster,
    registration: Registration,
    limits: Limits,
    /// The largest linear memory a reconcile's instance reached, in bytes.
    memory_peak: AtomicUsize,
    /// Reconciles are async on the host; a harness test need not be.
    executor: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("plugin", &self.registration.name)
            .field("digest", &self.compiled.digest)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// Compiles `component` through one compile service shared by every
/// harness of a test process (an engine reserves address space for its
/// instance pool, and tests run in parallel): once per distinct component,
/// however many tests load it at once.
fn compile(executor: &tokio::runtime::Runtime, component: &[u8]) -> Result<Compiled> {
    let compiler = match COMPILER.get() {
        Some(compiler) => compiler,
        None => {
            let runtime = Runtime::new(COMPILE_CACHE.get().cloned())?;
            COMPILER.get_or_init(|| Compiler::new(Arc::new(runtime)))
        }
    };
    Ok(executor.block_on(compiler.compile(component.to_vec()))?)
}

static COMPILER: OnceLock<Compiler> = OnceLock::new();
static COMPILE_CACHE: OnceLock<PathBuf> = OnceLock::new();

/// Keeps the compiled code of every component this process loads in `dir`,
/// across processes, as a replica's `--compile-cache` does: a large
/// component (a JavaScript engine) then compiles once, not once per test
/// run. Call it before the first [`Harness::load`]; returns `false`, and
/// changes nothing, when a harness has already compiled without it (or
/// another directory was chosen).
pub fn use_compile_cache(dir: impl Into<PathBuf>) -> bool {
    let dir = dir.into();
    COMPILER.get().is_none() && COMPILE_CACHE.get_or_init(|| dir.clone()) == &dir
}

impl Harness {
    /// Compiles the component at `path` as a replica would and asks it for
    /// its registration, against an empty cluster.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Like [`Harness::load`], from the component's bytes.
    pub fn from_bytes(component: &[u8]) -> Result<Self> {
        // Only a runtime with an I/O driver can fail to build.
        let executor = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime without I/O builds");
        let compiled = compile(&executor, component)?;
        let cluster = FakeCluster::new();
        let limits = Limits::default();
        let registration = register(&executor, &compiled, &cluster, &limits)?;
        Ok(Self {
            compiled,
            cluster,
            registration,
            limits,
            memory_peak: AtomicUsize::new(0),
            executor,
        })
    }

    /// Uses `cluster` (with its objects and configuration) from now on, and
    /// asks the plugin for its registration again, since configuration can
    /// change it.
    pub fn with_cluster(mut self, cluster: FakeCluster) -> Result<Self> {
        self.registration = register(&self.executor, &self.compiled, &cluster, &self.limits)?;
        self.cluster = cluster;
        Ok(self)
    }

    /// Runs every call with these limits instead of the host's defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The in-memory cluster the plugin acts on.
    pub fn cluster(&self) -> &FakeCluster {
        &self.cluster
    }

    /// What the plugin said it reconciles.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// `sha256:<hex>` of the component, as a Plugin's status shows it.
    pub fn digest(&self) -> &str {
        &self.compiled.digest
    }

    /// Does for the primary at `reference` what the leader does for a
    /// queued primary: reads it (absent when missing, outside the
    /// registration's namespace or not matching its label selector), holds
    /// it with the registration's finalizer before the first reconcile (the
    /// host then waits for the update event; the harness goes straight on),
    /// and hands a primary being deleted to `cleanup`, releasing the
    /// finalizer once that is done.
    pub fn reconcile(&self, reference: &ObjectRef) -> Result<Action> {
        let primary = Primary {
            type_meta: self.primary_type(),
            label_selector: self.registration.label_selector.as_deref(),
            namespace: self.registration.namespace.as_deref(),
            finalizer: self.registration.finalizer.as_deref(),
        };
        self.cluster.deliver(&primary, reference, |delivery| {
            let request = Request {
                reference: runtime::ObjectRef {
                    namespace: delivery.reference.namespace.clone(),
                    name: delivery.reference.name.clone(),
                },
                object: delivery.object,
            };
            let answer = self.executor.block_on(async {
                let context = self.context(Some(delivery.reference.to_string()));
                let mut instance = self.compiled.instantiate(context, &self.limits).await?;
                let answer = instance
                    .reconcile(&request, delivery.cleanup, self.limits.timeout)
                    .await;
                self.memory_peak
                    .fetch_max(instance.memory_peak(), Ordering::Relaxed);
                answer
            })?;
            match answer {
                Ok(runtime::Action::Done) => Ok(Action::Done),
                Ok(runtime::Action::RequeueAfter(millis)) => {
                    Ok(Action::RequeueAfter(Duration::from_millis(millis)))
                }
                Err(error) => Err(Error::Reconcile {
                    message: error.message,
                    retryable: error.retryable,
                }),
            }
        })
    }

    /// The largest linear memory any reconcile's instance has grown to, in
    /// bytes: how close the plugin comes to its memory limit (64 MiB by
    /// default). A JavaScript component starts at the size of its engine's
    /// snapshot.
    pub fn memory_peak(&self) -> usize {
        self.memory_peak.load(Ordering::Relaxed)
    }

    /// Whether the component exports `admission` (it can be asked to
    /// validate and mutate).
    pub fn admits(&self) -> bool {
        self.compiled.admits()
    }

    /// Asks the plugin to validate `request` (the AdmissionReview's
    /// `request` as JSON, usually a [`ReviewRequest`]), in a fresh
    /// instance within the harness's limits, as a replica does for the
    /// API server.
    pub fn validate(&self, request: impl AsRef<str>) -> Result<Verdict> {
        let verdict = self.review(Review::Validate, request.as_ref())?;
        if verdict.patch.is_some() {
            return Err(Error::Patch {
                message: "validate answered a patch; the API server takes one from mutate only"
                    .into(),
            });
        }
        Ok(verdict)
    }

    /// Asks the plugin to mutate `request`, and applies its patch to the
    /// request's object as the API server would.
    pub fn mutate(&self, request: impl AsRef<str>) -> Result<Reviewed> {
        let request = request.as_ref();
        let verdict = self.review(Review::Mutate, request)?;
        Reviewed::new(request, verdict).map_err(|error| Error::Patch {
            message: error.message,
        })
    }

    fn review(&self, review: Review, request: &str) -> Result<Verdict> {
        let answer = self.executor.block_on(async {
            let mut instance = self
                .compiled
                .instantiate(self.context(None), &self.limits)
                .await?;
            instance.review(review, request, self.limits.timeout).await
        })?;
        let verdict = answer.map_err(|message| Error::Undecided { message })?;
        verdict_of(verdict)
    }

    /// Reconciles every stored primary, in namespace and name order, as a
    /// resync would; returns each outcome.
    pub fn reconcile_all(&self) -> Vec<(ObjectRef, Result<Action>)> {
        self.cluster
            .references(&self.primary_type())
            .into_iter()
            .map(|reference| {
                let outcome = self.reconcile(&reference);
                (reference, outcome)
            })
            .collect()
    }

    fn context(&self, object: Option<String>) -> HostContext {
        context(&self.cluster, object)
    }

    /// The primary kind as the cluster names types.
    fn primary_type(&self) -> TypeMeta {
        let gvk = &self.registration.primary;
        TypeMeta {
            api_version: if gvk.group.is_empty() {
                gvk.version.clone()
            } else {
                format!("{}/{}", gvk.group, gvk.version)
            },
            kind: gvk.kind.clone(),
        }
    }
}

/// A verdict as the contract carries it, in the SDK's types; a patch that is
/// not a JSON patch is refused as the API server would.
fn verdict_of(verdict: runtime::Verdict) -> Result<Verdict> {
    let patch = verdict
        .patch
        .map(|text| serde_json::from_str::<json_patch::Patch>(&text))
        .transpose()
        .map_err(|error| Error::Patch {
            message: format!("not a JSON patch (RFC 6902): {error}"),
        })?;
    Ok(Verdict {
        allowed: verdict.allowed,
        message: verdict.message,
        code: verdict.code,
        warnings: verdict.warnings,
        patch,
    })
}

/// What a plugin's store answers its imports with: `cluster`, as the
/// harness wires it. For measuring the runtime itself (instantiating a
/// [`Compiled`] directly); tests go through [`Harness`]. `object` names the
/// object the call is about, in its log records.
pub fn host_context(cluster: &FakeCluster, object: Option<String>) -> HostContext {
    context(cluster, object)
}

fn context(cluster: &FakeCluster, object: Option<String>) -> HostContext {
    let calls = cluster.host_calls();
    HostContext {
        config: Arc::from(calls.config()),
        backend: Arc::new(backend::InMemory::new(calls)),
        object,
        // Offline: a plugin's outbound requests are refused, as on a
        // cluster whose Plugin allows no hosts.
        allowed_hosts: Arc::default(),
    }
}

/// Asks the plugin what it reconciles, as a replica does before starting it.
fn register(
    executor: &tokio::runtime::Runtime,
    compiled: &Compiled,
    cluster: &FakeCluster,
    limits: &Limits,
) -> Result<Registration> {
    let registration = executor.block_on(async {
        let mut instance = compiled.instantiate(context(cluster, None), limits).await?;
        instance.register(limits.timeout).await
    })?;
    Ok(registration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(patch: Option<&str>) -> runtime::Verdict {
        runtime::Verdict {
            allowed: true,
            message: None,
            code: None,
            warnings: vec!["careful".into()],
            patch: patch.map(str::to_owned),
        }
    }

    #[test]
    fn a_verdict_crosses_into_the_sdks_types() {
        let verdict = verdict_of(answered(Some(
            r#"[{"op":"add","path":"/metadata/labels","value":{}}]"#,
        )))
        .unwrap();
        assert!(verdict.allowed);
        assert_eq!(verdict.warnings, ["careful"]);
        assert_eq!(verdict.patch.unwrap().0.len(), 1);
    }

    #[test]
    fn a_patch_that_is_not_a_json_patch_is_refused_with_the_reason() {
        for text in ["{not json", r#"{"op":"add"}"#] {
            let error = verdict_of(answered(Some(text))).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with("the plugin's patch is unusable: not a JSON patch (RFC 6902): "),
                "{text}: {error}"
            );
        }
    }
}
