//! An in-memory cluster for unit-testing a reconciler natively, without a
//! host or an API server.
//!
//! [`FakeCluster`] answers every call the SDK makes (the typed [`Api`],
//! events, logs, configuration) and plays the host's part for
//! [`FakeCluster::reconcile`]: it builds the request from the stored
//! primary, manages the registration's finalizer and calls `cleanup` for a
//! primary being deleted. It is a model, not Kubernetes: no admission on
//! its writes, no defaulting, server-side apply without conflicts, and the
//! garbage collector runs at once. Test behaviour that depends on the real
//! thing against a real API server.
//!
//! [`FakeCluster::validate`] and [`FakeCluster::mutate`] ask an
//! [`Admission`] about one request, built with [`ReviewRequest`], as the
//! API server would through the host.
//!
//! ```
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use leasehold_sdk::prelude::*;
//! use leasehold_sdk::testing::FakeCluster;
//!
//! #[derive(Default)]
//! struct Stamp;
//!
//! impl Reconciler for Stamp {
//!     type Object = ConfigMap;
//!     fn registration(&self) -> Registration<ConfigMap> {
//!         Registration::new("stamp")
//!     }
//!     fn reconcile(&self, object: ConfigMap) -> Result<Action, reconciler::Error> {
//!         let stamp = serde_json::json!({ "metadata": { "annotations": { "example.dev/stamped": "yes" } } });
//!         Api::<ConfigMap>::namespaced(&object.namespace().unwrap_or_default())
//!             .apply(&object.name_any(), &stamp, &ApplyParams::new("stamp"))?;
//!         Ok(Action::Done)
//!     }
//! }
//!
//! let cluster = FakeCluster::new();
//! let settings = cluster.insert(serde_json::from_value::<ConfigMap>(serde_json::json!({
//!     "metadata": { "namespace": "default", "name": "settings" }
//! })).unwrap());
//! cluster.reconcile(&Stamp, &ObjectRef::from_object(&settings)).unwrap();
//! let stamped: ConfigMap = cluster.get(&ObjectRef::namespaced("default", "settings")).unwrap();
//! assert_eq!(stamped.annotations()["example.dev/stamped"], "yes");
//! ```
//!
//! [`Api`]: crate::api::Api
//! [`Admission`]: crate::admission::Admission

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::{Map, Value, json};

mod review;

use crate::__private::bindings::exports::leasehold::controller::reconciler as wit;
use crate::admission::{self, Admission, Verdict};
use crate::api::{ApiError, ListParams};
use crate::event::EventType;
use crate::export::{self, Review};
use crate::host;
pub use crate::host::{Host, ObjectPatch, StatusUpdate};
use crate::log::Level;
use crate::object::{Object, ObjectRef, TypeMeta};
use crate::reconciler::{self, Action, Reconciler};
use crate::selector::Selector;
pub use review::{ReviewRequest, Reviewed};

/// The timestamp every fake object is created and deleted at; tests compare
/// objects, and a clock would make them differ run to run.
const FAKE_TIMESTAMP: &str = "2026-01-01T00:00:00Z";

/// An Event a reconciler recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The kind of the object the event is about.
    pub kind: String,
    /// The object the event is about.
    pub regarding: ObjectRef,
    /// Normal or warning.
    pub event_type: EventType,
    /// The short reason, for example `Mirrored`.
    pub reason: String,
    /// The message.
    pub message: String,
}

/// A log record a reconciler wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level.
    pub level: Level,
    /// Its message.
    pub message: String,
    /// Its fields, formatted.
    pub fields: Vec<(String, String)>,
}

/// What a host reconciles, from a plugin's registration: see
/// [`FakeCluster::deliver`].
#[derive(Debug, Clone)]
pub struct Primary<'a> {
    /// The primary kind.
    pub type_meta: TypeMeta,
    /// Only primaries whose labels match are delivered.
    pub label_selector: Option<&'a str>,
    /// Only primaries in this namespace are delivered.
    pub namespace: Option<&'a str>,
    /// The finalizer the host holds primaries with, so `cleanup` runs
    /// before they go.
    pub finalizer: Option<&'a str>,
}

/// What a host hands the plugin for one primary: a reconcile request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The primary.
    pub reference: ObjectRef,
    /// The primary's JSON as stored; `None` when it is absent.
    pub object: Option<String>,
    /// Call `cleanup` (the primary is being deleted) instead of `reconcile`.
    pub cleanup: bool,
}

/// What a plugin asked of the cluster: one of the `kubernetes` imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `get`: read one object.
    Get,
    /// `list`: read many objects.
    List,
    /// `create`: store a new object.
    Create,
    /// `replace`: overwrite an object (PUT).
    Replace,
    /// `apply`: server-side apply.
    Apply,
    /// `patch`: a merge patch or a JSON patch.
    Patch,
    /// `delete`: delete an object.
    Delete,
    /// `update-status`: write the status subresource.
    UpdateStatus,
    /// `emit-event`: record an Event.
    EmitEvent,
}

impl fmt::Display for Verb {
    /// The import's name in the WIT contract, for example `update-status`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Create => "create",
            Self::Replace => "replace",
            Self::Apply => "apply",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::UpdateStatus => "update-status",
            Self::EmitEvent => "emit-event",
        })
    }
}

/// One call a plugin made, in the order it made them, with its outcome.
///
/// Its text form reads like an audit line, which makes whole sequences
/// easy to assert on:
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use leasehold_sdk::{api::Api, testing::FakeCluster};
///
/// let cluster = FakeCluster::new();
/// let _installed = cluster.install();
/// let _ = Api::<ConfigMap>::namespaced("default").get("settings");
/// let calls: Vec<String> = cluster.calls().iter().map(ToString::to_string).collect();
/// assert_eq!(calls, ["get v1/ConfigMap default/settings -> ok"]);
/// ```
///
/// A call that fails says how:
///
/// ```
/// use k8s_openapi::api::core::v1::Secret;
/// use leasehold_sdk::{api::Api, testing::FakeCluster};
///
/// let cluster = FakeCluster::new();
/// cluster.forbid::<Secret>();
/// let _installed = cluster.install();
/// let _ = Api::<Secret>::namespaced("default").get("token");
/// assert_eq!(cluster.calls()[0].to_string(), "get v1/Secret default/token -> 403 Forbidden");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Which import.
    pub verb: Verb,
    /// The resource type it addressed (for an Event, the involved object's).
    pub type_meta: TypeMeta,
    /// The namespace it addressed; `None` for cluster-scoped objects and
    /// for lists across every namespace.
    pub namespace: Option<String>,
    /// The object's name; `None` for lists (and for a create whose object
    /// had no name).
    pub name: Option<String>,
    /// The error it returned, if it failed.
    pub error: Option<ApiError>,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.type_meta)?;
        match (&self.namespace, &self.name) {
            (Some(namespace), Some(name)) => write!(f, " {namespace}/{name}")?,
            (None, Some(name)) => write!(f, " {name}")?,
            (Some(namespace), None) => write!(f, " {namespace}/*")?,
            (None, None) => f.write_str(" *")?,
        }
        match &self.error {
            Some(error) => write!(f, " -> {} {}", error.code, error.reason),
            None => f.write_str(" -> ok"),
        }
    }
}

/// Identifies a stored object: apiVersion, kind, namespace ("" when
/// cluster-scoped) and name.
type Key = (String, String, String, String);

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    /// The last object each field manager applied, so that a field it stops
    /// applying is removed, as server-side apply does.
    applied: BTreeMap<(Key, String), Value>,
    /// Counts writes: resourceVersions and uids come from it.
    writes: u64,
    config: String,
    forbidden: BTreeSet<(String, String)>,
    events: Vec<RecordedEvent>,
    logs: Vec<LogRecord>,
    calls: Vec<Call>,
}

/// An in-memory cluster that answers the SDK's calls on the current thread
/// while [`FakeCluster::reconcile`] or [`FakeCluster::install`] runs.
///
/// Clones share the same cluster.
///
/// ```
/// use k8s_openapi::api::core::v1::Namespace;
/// use leasehold_sdk::{api::Api, testing::FakeCluster};
///
/// let cluster = FakeCluster::new();
/// let _installed = cluster.install();
/// let namespaces = Api::<Namespace>::all().list(&Default::default()).unwrap();
/// assert!(namespaces.is_empty());
/// ```
#[derive(Clone, Default)]
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCluster")
            .field("objects", &lock(&self.state).objects.len())
            .finish()
    }
}

/// Routes the current thread's SDK calls to a [`FakeCluster`] until dropped.
#[derive(Debug)]
pub struct Installed(#[allow(dead_code, reason = "held for its Drop")] host::Installed);

impl FakeCluster {
    /// An empty cluster with configuration `{}`.
    ///
    /// ```
    /// let cluster = leasehold_sdk::testing::FakeCluster::new();
    /// assert!(cluster.events().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the plugin configuration that [`crate::config()`] reads.
    ///
    /// ```
    /// let cluster = leasehold_sdk::testing::FakeCluster::new().with_config(&serde_json::json!({ "verbose": true }));
    /// let _installed = cluster.install();
    /// let config: serde_json::Value = leasehold_sdk::config().unwrap();
    /// assert_eq!(config["verbose"], true);
    /// ```
    pub fn with_config<T: Serialize>(self, config: &T) -> Self {
        lock(&self.state).config =
            serde_json::to_string(config).expect("configuration serializes to json");
        self
    }

    /// Makes every call on kind `K` fail with 403, as missing RBAC would.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::Secret;
    /// use leasehold_sdk::{api::Api, testing::FakeCluster};
    ///
    /// let cluster = FakeCluster::new();
    /// cluster.forbid::<Secret>();
    /// let _installed = cluster.install();
    /// let error = Api::<Secret>::namespaced("default").get("token").unwrap_err();
    /// assert_eq!(error.api().unwrap().code, 403);
    /// ```
    pub fn forbid<K: Object>(&self) {
        self.forbid_type(&TypeMeta::of::<K>());
    }

    /// Like [`FakeCluster::forbid`], for a type known only by name.
    ///
    /// ```
    /// use leasehold_sdk::{ObjectRef, TypeMeta, testing::{FakeCluster, Host}};
    /// let cluster = FakeCluster::new();
    /// let secrets = TypeMeta { api_version: "v1".into(), kind: "Secret".into() };
    /// cluster.forbid_type(&secrets);
    /// let error = cluster.host_calls().get(&secrets, &ObjectRef::namespaced("a", "b")).unwrap_err();
    /// assert_eq!(error.code, 403);
    /// ```
    pub fn forbid_type(&self, type_meta: &TypeMeta) {
        lock(&self.state)
            .forbidden
            .insert((type_meta.api_version.clone(), type_meta.kind.clone()));
    }

    /// Routes this thread's SDK calls here until the guard drops.
    ///
    /// ```
    /// let cluster = leasehold_sdk::testing::FakeCluster::new();
    /// let installed = cluster.install();
    /// leasehold_sdk::info!("hello", answer = 42);
    /// drop(installed);
    /// assert_eq!(cluster.logs()[0].fields, [("answer".to_string(), "42".to_string())]);
    /// ```
    pub fn install(&self) -> Installed {
        Installed(host::install(Rc::new(self.host_calls())))
    }

    /// Stores `object` as a user would create it, and returns it as stored
    /// (with uid and resourceVersion).
    ///
    /// # Panics
    ///
    /// When an object of that name exists: a test's setup is wrong.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::Namespace;
    /// let cluster = leasehold_sdk::testing::FakeCluster::new();
    /// let mut namespace = Namespace::default();
    /// namespace.metadata.name = Some("team-a".into());
    /// assert!(cluster.insert(namespace).metadata.uid.is_some());
    /// ```
    pub fn insert<K: Object>(&self, object: K) -> K {
        let namespace = object.meta().namespace.clone();
        let json = serde_json::to_string(&object).expect("object serializes to json");
        let stored = Shared(self.state.clone())
            .create(&TypeMeta::of::<K>(), namespace.as_deref(), &json)
            .unwrap_or_else(|error| panic!("cannot insert {}: {error}", TypeMeta::of::<K>()));
        serde_json::from_str(&stored).expect("stored object decodes")
    }

    /// Replaces a stored object as a user's edit would (its
    /// `resourceVersion`, when set, must be current), and returns it as
    /// stored. Like [`FakeCluster::insert`], it is setup, not a plugin call.
    ///
    /// # Panics
    ///
    /// When the object does not exist or its resourceVersion is stale: a
    /// test's setup is wrong.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::Namespace;
    /// let cluster = leasehold_sdk::testing::FakeCluster::new();
    /// let mut namespace = Namespace::default();
    /// namespace.metadata.name = Some("team-a".into());
    /// let mut stored = cluster.insert(namespace);
    /// stored.metadata.labels = Some([("tier".to_string(), "gold".to_string())].into());
    /// assert_eq!(cluster.update(stored).metadata.labels.unwrap()["tier"], "gold");
    /// ```
    pub fn update<K: Object>(&self, object: K) -> K {
        let reference = ObjectRef::from_object(&object);
        let json = serde_json::to_string(&object).expect("object serializes to json");
        let stored = Shared(self.state.clone())
            .replace(&TypeMeta::of::<K>(), &reference, &json)
            .unwrap_or_else(|error| panic!("cannot update {reference}: {error}"));
        serde_json::from_str(&stored).expect("stored object decodes")
    }

    /// Reads one object, as stored.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use leasehold_sdk::{ObjectRef, testing::FakeCluster};
    /// assert!(FakeCluster::new().get::<ConfigMap>(&ObjectRef::namespaced("a", "b")).is_none());
    /// ```
    pub fn get<K: Object>(&self, reference: &ObjectRef) -> Option<K> {
        let key = key(&TypeMeta::of::<K>(), reference);
        let state = lock(&self.state);
        state
            .objects
            .get(&key)
            .map(|value| serde_json::from_value(value.clone()).expect("stored object decodes"))
    }

    /// Every stored object of kind `K`, ordered by namespace and name.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// assert!(leasehold_sdk::testing::FakeCluster::new().list::<ConfigMap>().is_empty());
    /// ```
    pub fn list<K: Object>(&self) -> Vec<K> {
        let type_meta = TypeMeta::of::<K>();
        let state = lock(&self.state);
        state
            .objects
            .iter()
            .filter(|((api_version, kind, _, _), _)| {
                *api_version == type_meta.api_version && *kind == type_meta.kind
            })
            .map(|(_, value)| serde_json::from_value(value.clone()).expect("stored object decodes"))
            .collect()
    }

    /// Where every stored object of a type is, ordered by namespace and
    /// name: for hosts that know a type only by name.
    ///
    /// ```
    /// use leasehold_sdk::TypeMeta;
    /// let pods = TypeMeta { api_version: "v1".into(), kind: "Pod".into() };
    /// assert!(leasehold_sdk::testing::FakeCluster::new().references(&pods).is_empty());
    /// ```
    pub fn references(&self, type_meta: &TypeMeta) -> Vec<ObjectRef> {
        lock(&self.state)
            .objects
            .keys()
            .filter(|(api_version, kind, _, _)| {
                *api_version == type_meta.api_version && *kind == type_meta.kind
            })
            .map(|(_, _, namespace, name)| ObjectRef {
                namespace: (!namespace.is_empty()).then(|| namespace.clone()),
                name: name.clone(),
            })
            .collect()
    }

    /// Deletes an object as a user would: it stays, marked for deletion,
    /// while it has finalizers. Returns whether it existed.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use leasehold_sdk::{ObjectRef, testing::FakeCluster};
    /// assert!(!FakeCluster::new().delete::<ConfigMap>(&ObjectRef::namespaced("a", "b")));
    /// ```
    pub fn delete<K: Object>(&self, reference: &ObjectRef) -> bool {
        Shared(self.state.clone())
            .delete(&TypeMeta::of::<K>(), reference)
            .is_ok()
    }

    /// Stores `object`, JSON that names its own `apiVersion` and `kind`, as
    /// a user would create it; returns it as stored. For hosts that know
    /// objects only as JSON, such as `leasehold plugin run`.
    ///
    /// ```
    /// let cluster = leasehold_sdk::testing::FakeCluster::new();
    /// let stored = cluster.insert_value(&serde_json::json!({
    ///     "apiVersion": "v1", "kind": "ConfigMap",
    ///     "metadata": { "namespace": "default", "name": "settings" },
    /// })).unwrap();
    /// assert!(stored["metadata"]["uid"].is_string());
    /// assert!(cluster.insert_value(&serde_json::json!({"kind": "ConfigMap"})).is_err());
    /// ```
    pub fn insert_value(&self, object: &Value) -> Result<Value, ApiError> {
        let type_meta = type_meta_of(object)?;
        let namespace = object["metadata"]["namespace"].as_str();
        let stored =
            Shared(self.state.clone()).create(&type_meta, namespace, &object.to_string())?;
        Ok(serde_json::from_str(&stored).expect("stored object is json"))
    }

    /// Reads one object of a type known only by name, as stored.
    ///
    /// ```
    /// use leasehold_sdk::{ObjectRef, TypeMeta};
    /// let pods = TypeMeta { api_version: "v1".into(), kind: "Pod".into() };
    /// let cluster = leasehold_sdk::testing::FakeCluster::new();
    /// assert!(cluster.get_value(&pods, &ObjectRef::namespaced("a", "b")).is_none());
    /// ```
    pub fn get_value(&self, type_meta: &TypeMeta, reference: &ObjectRef) -> Option<Value> {
        lock(&self.state)
            .objects
            .get(&key(type_meta, reference))
            .cloned()
    }

    /// Deletes an object of a type known only by name, as
    /// [`FakeCluster::delete`] does; returns whether it existed.
    ///
    /// ```
    /// use leasehold_sdk::{ObjectRef, TypeMeta};
    /// let pods = TypeMeta { api_version: "v1".into(), kind: "Pod".into() };
    /// let cluster = leasehold_sdk::testing::FakeCluster::new();
    /// assert!(!cluster.delete_value(&pods, &ObjectRef::namespaced("a", "b")));
    /// ```
    pub fn delete_value(&self, type_meta: &TypeMeta, reference: &ObjectRef) -> bool {
        Shared(self.state.clone())
            .delete(type_meta, reference)
            .is_ok()
    }

    /// Every stored object, ordered by apiVersion, kind, namespace and name.
    ///
    /// ```
    /// assert!(leasehold_sdk::testing::FakeCluster::new().objects().is_empty());
    /// ```
    pub fn objects(&self) -> Vec<Value> {
        lock(&self.state).objects.values().cloned().collect()
    }

    /// The Events recorded so far.
    ///
    /// ```
    /// assert!(leasehold_sdk::testing::FakeCluster::new().events().is_empty());
    /// ```
    pub fn events(&self) -> Vec<RecordedEvent> {
        lock(&self.state).events.clone()
    }

    /// The log records written so far.
    ///
    /// ```
    /// assert!(leasehold_sdk::testing::FakeCluster::new().logs().is_empty());
    /// ```
    pub fn logs(&self) -> Vec<LogRecord> {
        lock(&self.state).logs.clone()
    }

    /// The calls the plugin made so far, in order (the test's own setup,
    /// such as [`FakeCluster::insert`], is not among them).
    ///
    /// ```
    /// assert!(leasehold_sdk::testing::FakeCluster::new().calls().is_empty());
    /// ```
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    /// This cluster as a host answers a plugin: raw JSON calls, recorded in
    /// [`FakeCluster::calls`]. For hosts that run a compiled plugin against
    /// the cluster, such as Leasehold's test harness.
    ///
    /// ```
    /// use leasehold_sdk::{ObjectRef, TypeMeta, testing::Host};
    /// let cluster = leasehold_sdk::testing::FakeCluster::new();
    /// let config_map = TypeMeta { api_version: "v1".into(), kind: "ConfigMap".into() };
    /// let found = cluster.host_calls().get(&config_map, &ObjectRef::namespaced("a", "b")).unwrap();
    /// assert_eq!(found, None);
    /// assert_eq!(cluster.calls().len(), 1);
    /// ```
    pub fn host_calls(&self) -> HostCalls {
        HostCalls(Shared(self.state.clone()))
    }

    /// Does what the host does for one queued primary: reads it, adds the
    /// registration's finalizer, and calls `reconcile`, `absent` or (for a
    /// primary being deleted) `cleanup`, removing the finalizer once cleanup
    /// is done.
    ///
    /// ```
    /// # use k8s_openapi::api::core::v1::ConfigMap;
    /// # use leasehold_sdk::prelude::*;
    /// # #[derive(Default)] struct Noop;
    /// # impl Reconciler for Noop {
    /// #     type Object = ConfigMap;
    /// #     fn registration(&self) -> Registration<ConfigMap> { Registration::new("noop") }
    /// #     fn reconcile(&self, _: ConfigMap) -> Result<Action, reconciler::Error> { Ok(Action::Done) }
    /// # }
    /// let cluster = leasehold_sdk::testing::FakeCluster::new();
    /// let action = cluster.reconcile(&Noop, &ObjectRef::namespaced("default", "missing")).unwrap();
    /// assert_eq!(action, Action::Done);
    /// ```
    pub fn reconcile<R: Reconciler>(
        &self,
        reconciler: &R,
        reference: &ObjectRef,
    ) -> Result<Action, reconciler::Error> {
        let _installed = self.install();
        let registration = reconciler.registration();
        let primary = Primary {
            type_meta: TypeMeta::of::<R::Object>(),
            label_selector: registration.label_selector.as_deref(),
            namespace: registration.namespace.as_deref(),
            finalizer: registration.finalizer.as_deref(),
        };
        self.deliver(&primary, reference, |delivery| {
            let request = wit::Request {
                reference: crate::__private::bindings::leasehold::controller::types::ObjectRef {
                    namespace: delivery.reference.namespace,
                    name: delivery.reference.name,
                },
                object: delivery.object,
            };
            let answer = if delivery.cleanup {
                export::cleanup(reconciler, request)
            } else {
                export::reconcile(reconciler, request)
            };
            match answer {
                Ok(wit::Action::Done) => Ok(Action::Done),
                Ok(wit::Action::RequeueAfter(ms)) => {
                    Ok(Action::RequeueAfter(std::time::Duration::from_millis(ms)))
                }
                Err(error) => Err(reconciler::Error {
                    message: error.message,
                    retryable: error.retryable,
                }),
            }
        })
    }

    /// The host's part for one queued primary, whatever runs the plugin:
    /// reads the primary (it is absent when missing, outside the
    /// registration's namespace or not selected by its label selector), adds the registration's finalizer
    /// before the first reconcile, hands a primary being deleted to
    /// `cleanup` and removes the finalizer once cleanup is done. `plugin`
    /// is called at most once, with what the request carries.
    ///
    /// This is how a host that runs a compiled component (Leasehold's test
    /// harness) shares the flow of [`FakeCluster::reconcile`].
    ///
    /// ```
    /// use leasehold_sdk::testing::{FakeCluster, Primary};
    /// use leasehold_sdk::{Action, ObjectRef, TypeMeta, api::ApiError};
    ///
    /// let cluster = FakeCluster::new();
    /// let primary = Primary {
    ///     type_meta: TypeMeta { api_version: "v1".into(), kind: "ConfigMap".into() },
    ///     label_selector: None,
    ///     namespace: None,
    ///     finalizer: None,
    /// };
    /// let missing = ObjectRef::namespaced("default", "missing");
    /// let action = cluster.deliver(&primary, &missing, |delivery| {
    ///     assert!(delivery.object.is_none() && !delivery.cleanup);
    ///     Ok::<_, ApiError>(Action::Done)
    /// });
    /// assert_eq!(action.unwrap(), Action::Done);
    /// ```
    pub fn deliver<E: From<ApiError>>(
        &self,
        primary: &Primary<'_>,
        reference: &ObjectRef,
        plugin: impl FnOnce(Delivery) -> Result<Action, E>,
    ) -> Result<Action, E> {
        let host = Shared(self.state.clone());
        let key = key(&primary.type_meta, reference);
        let deliver = |object: Option<&Value>, cleanup| {
            plugin(Delivery {
                reference: reference.clone(),
                object: object.map(Value::to_string),
                cleanup,
            })
        };
        let mut stored = lock(&self.state).objects.get(&key).cloned();
        if primary
            .namespace
            .is_some_and(|namespace| reference.namespace.as_deref() != Some(namespace))
        {
            stored = None;
        }
        if let (Some(selector), Some(object)) = (primary.label_selector, &stored) {
            let selector: Selector = selector
                .parse()
                .map_err(|error| bad_request(format!("registration label selector: {error}")))?;
            if !selector.matches(&labels_of(object)) {
                stored = None;
            }
        }
        let (Some(mut object), Some(finalizer)) = (stored.clone(), primary.finalizer) else {
            return deliver(stored.as_ref(), false);
        };
        let holds = finalizers_of(&object).iter().any(|held| held == finalizer);
        if meta_str(&object, "deletionTimestamp").is_some() {
            if !holds {
                return Ok(Action::Done);
            }
            let action = deliver(Some(&object), true)?;
            if action == Action::Done {
                // Re-read: cleanup may have written the primary.
                let mut current = lock(&self.state)
                    .objects
                    .get(&key)
                    .cloned()
                    .expect("a primary being deleted is still stored");
                let kept: Vec<String> = finalizers_of(&current)
                    .into_iter()
                    .filter(|held| held != finalizer)
                    .collect();
                metadata(&mut current).insert("finalizers".into(), json!(kept));
                host.replace(&primary.type_meta, reference, &current.to_string())?;
            }
            return Ok(action);
        }
        if !holds {
            let mut held = finalizers_of(&object);
            held.push(finalizer.to_owned());
            metadata(&mut object).insert("finalizers".into(), json!(held));
            object = parse(&host.replace(&primary.type_meta, reference, &object.to_string())?)?;
        }
        deliver(Some(&object), false)
    }

    /// Asks `admission` to validate `request` (the AdmissionReview's
    /// `request` as JSON, usually a [`ReviewRequest`]) as the API server
    /// would through the host, with this cluster answering its calls.
    ///
    /// An error is the plugin's "could not decide", or a request it cannot
    /// decode; a verdict with a patch is an error too, since only mutate
    /// may change the object.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use leasehold_sdk::admission::{self, Admission, Request, Verdict};
    /// use leasehold_sdk::testing::{FakeCluster, ReviewRequest};
    ///
    /// #[derive(Default)]
    /// struct NeedsData;
    /// impl Admission for NeedsData {
    ///     type Object = ConfigMap;
    ///     fn validate(&self, request: &Request<ConfigMap>) -> admission::Result<Verdict> {
    ///         Ok(match request.object().and_then(|object| object.data.as_ref()) {
    ///             Some(_) => Verdict::allow(),
    ///             None => Verdict::deny("a ConfigMap needs data"),
    ///         })
    ///     }
    /// }
    ///
    /// let request = ReviewRequest::create(&ConfigMap::default());
    /// let verdict = FakeCluster::new().validate(&NeedsData, &request).unwrap();
    /// assert_eq!(verdict.message.as_deref(), Some("a ConfigMap needs data"));
    /// ```
    pub fn validate<A: Admission>(
        &self,
        admission: &A,
        request: impl AsRef<str>,
    ) -> admission::Result<Verdict> {
        let _installed = self.install();
        export::decide(admission, request.as_ref().to_owned(), Review::Validate)
    }

    /// Asks `admission` to mutate `request`, and applies the verdict's
    /// patch to the request's object as the API server would (see
    /// [`Reviewed`]).
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use leasehold_sdk::admission::{self, Admission, Request, Verdict};
    /// use leasehold_sdk::testing::{FakeCluster, ReviewRequest};
    ///
    /// #[derive(Default)]
    /// struct DefaultMode;
    /// impl Admission for DefaultMode {
    ///     type Object = ConfigMap;
    ///     fn mutate(&self, request: &Request<ConfigMap>) -> admission::Result<Verdict> {
    ///         let mut object = request.object().cloned().unwrap_or_default();
    ///         object.data.get_or_insert_default().entry("mode".into()).or_insert_with(|| "slow".into());
    ///         Verdict::patched(request, &object)
    ///     }
    /// }
    ///
    /// let request = ReviewRequest::create(&ConfigMap::default());
    /// let reviewed = FakeCluster::new().mutate(&DefaultMode, &request).unwrap();
    /// let defaulted: ConfigMap = reviewed.object().unwrap();
    /// assert_eq!(defaulted.data.unwrap()["mode"], "slow");
    /// ```
    pub fn mutate<A: Admission>(
        &self,
        admission: &A,
        request: impl AsRef<str>,
    ) -> admission::Result<Reviewed> {
        let _installed = self.install();
        let request = request.as_ref();
        let verdict = export::decide(admission, request.to_owned(), Review::Mutate)?;
        Reviewed::new(request, verdict)
    }

    /// Reconciles every stored primary of the reconciler's kind, as a
    /// resync or an "all primaries" mapping would; returns each outcome.
    ///
    /// ```
    /// # use k8s_openapi::api::core::v1::ConfigMap;
    /// # use leasehold_sdk::prelude::*;
    /// # #[derive(Default)] struct Noop;
    /// # impl Reconciler for Noop {
    /// #     type Object = ConfigMap;
    /// #     fn registration(&self) -> Registration<ConfigMap> { Registration::new("noop") }
    /// #     fn reconcile(&self, _: ConfigMap) -> Result<Action, reconciler::Error> { Ok(Action::Done) }
    /// # }
    /// let outcomes = leasehold_sdk::testing::FakeCluster::new().reconcile_all(&Noop);
    /// assert!(outcomes.is_empty());
    /// ```
    pub fn reconcile_all<R: Reconciler>(
        &self,
        reconciler: &R,
    ) -> Vec<(ObjectRef, Result<Action, reconciler::Error>)> {
        let references: Vec<ObjectRef> = self
            .list::<R::Object>()
            .iter()
            .map(ObjectRef::from_object)
            .collect();
        references
            .into_iter()
            .map(|reference| {
                let outcome = self.reconcile(reconciler, &reference);
                (reference, outcome)
            })
            .collect()
    }
}

/// The `apiVersion` and `kind` an object's JSON names; a 400 without them.
fn type_meta_of(object: &Value) -> Result<TypeMeta, ApiError> {
    match (object["apiVersion"].as_str(), object["kind"].as_str()) {
        (Some(api_version), Some(kind)) => Ok(TypeMeta {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        }),
        _ => Err(bad_request("the object needs apiVersion and kind")),
    }
}

fn key(type_meta: &TypeMeta, reference: &ObjectRef) -> Key {
    (
        type_meta.api_version.clone(),
        type_meta.kind.clone(),
        reference.namespace.clone().unwrap_or_default(),
        reference.name.clone(),
    )
}

fn not_found(type_meta: &TypeMeta, name: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", type_meta.kind.to_lowercase()),
    )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(422, "Invalid", message)
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "BadRequest", message)
}

fn conflict(type_meta: &TypeMeta, name: &str) -> ApiError {
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified",
            type_meta.kind.to_lowercase()
        ),
    )
}

fn parse(json: &str) -> Result<Value, ApiError> {
    serde_json::from_str(json).map_err(|error| bad_request(format!("invalid json: {error}")))
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

fn metadata(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get("labels"))
        .and_then(|labels| serde_json::from_value(labels.clone()).ok())
        .unwrap_or_default()
}

fn finalizers_of(object: &Value) -> Vec<String> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get("finalizers"))
        .and_then(|finalizers| serde_json::from_value(finalizers.clone()).ok())
        .unwrap_or_default()
}

/// `object` without the top-level `fields`.
fn without(object: &Value, fields: &[&str]) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        for field in fields {
            map.remove(*field);
        }
    }
    object
}

/// Removes from `target` the fields `previous` set and `next` leaves out.
fn prune(target: &mut Value, previous: &Value, next: &Value) {
    let (Some(target), Some(previous)) = (target.as_object_mut(), previous.as_object()) else {
        return;
    };
    for (key, old) in previous {
        match next.get(key) {
            None => {
                target.remove(key);
            }
            Some(new) if old.is_object() && new.is_object() => {
                if let Some(child) = target.get_mut(key) {
                    prune(child, old, new);
                }
            }
            Some(_) => {}
        }
    }
}

/// A patch as the API server decodes it, before it reads the object.
enum Parsed {
    Merge(Value),
    Json(json_patch::Patch),
}

impl Parsed {
    /// Decodes the patch's text; what does not decode is a 400 that says
    /// which format was expected.
    fn from(patch: ObjectPatch<'_>) -> Result<Self, ApiError> {
        match patch {
            ObjectPatch::Merge(text) => serde_json::from_str(text)
                .map(Self::Merge)
                .map_err(|error| bad_request(format!("the merge patch is not JSON: {error}"))),
            ObjectPatch::Json(text) => {
                serde_json::from_str(text).map(Self::Json).map_err(|error| {
                    bad_request(format!(
                        "the JSON patch is not a list of RFC 6902 operations: {error}"
                    ))
                })
            }
        }
    }
}

/// What the fake's continue tokens start with; the rest names the last
/// object of the page. Plugins must treat tokens as opaque, as the API
/// server's are.
const PAGE_TOKEN_PREFIX: &str = "fake-continue:";

/// The continue token of a page that ended at `namespace`/`name`.
fn page_token(namespace: &str, name: &str) -> String {
    format!("{PAGE_TOKEN_PREFIX}{namespace}/{name}")
}

/// The namespace and name a continue token says the previous page ended at.
fn page_after(token: &str) -> Result<(String, String), ApiError> {
    token
        .strip_prefix(PAGE_TOKEN_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .map(|(namespace, name)| (namespace.to_owned(), name.to_owned()))
        .ok_or_else(|| {
            bad_request(format!(
                "continue token {token:?} is not valid: pass the metadata.continue of the previous page"
            ))
        })
}

/// The cluster's state; a test that panicked while holding it leaves it
/// usable for the report.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `State` shared by a [`FakeCluster`] and the host it installs.
#[derive(Clone)]
struct Shared(Arc<Mutex<State>>);

impl Shared {
    fn check(&self, type_meta: &TypeMeta) -> Result<(), ApiError> {
        let forbidden = (type_meta.api_version.clone(), type_meta.kind.clone());
        if lock(&self.0).forbidden.contains(&forbidden) {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{} is forbidden for this plugin's service account",
                    type_meta.kind.to_lowercase()
                ),
            ));
        }
        Ok(())
    }

    /// Stores `object` under `key`, stamping a new resourceVersion, unless
    /// it is being deleted and has no finalizers left: then it goes.
    fn store(state: &mut State, key: Key, mut object: Value) -> Value {
        state.writes += 1;
        metadata(&mut object).insert("resourceVersion".into(), state.writes.to_string().into());
        let finished = meta_str(&object, "deletionTimestamp").is_some()
            && object["metadata"]
                .get("finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if finished {
            Self::remove(state, &key);
        } else {
            state.objects.insert(key, object.clone());
        }
        object
    }

    /// Removes an object and, as the garbage collector would, what it owns.
    fn remove(state: &mut State, key: &Key) {
        let Some(object) = state.objects.remove(key) else {
            return;
        };
        state.applied.retain(|(applied, _), _| applied != key);
        let Some(uid) = meta_str(&object, "uid").map(str::to_owned) else {
            return;
        };
        let owned: Vec<Key> = state
            .objects
            .iter()
            .filter(|(_, child)| {
                child["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|references| references.iter().any(|r| r["uid"] == uid.as_str()))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for child in owned {
            Self::delete_key(state, &child);
        }
    }

    fn delete_key(state: &mut State, key: &Key) {
        let Some(object) = state.objects.get(key).cloned() else {
            return;
        };
        let has_finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            let mut object = object;
            metadata(&mut object)
                .entry("deletionTimestamp")
                .or_insert(FAKE_TIMESTAMP.into());
            Self::store(state, key.clone(), object);
        } else {
            Self::remove(state, key);
        }
    }

    /// Replaces `key`'s object with `next`, keeping what the server owns.
    fn write(state: &mut State, key: Key, stored: &Value, mut next: Value) -> Value {
        let kept = [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ];
        for field in kept {
            match stored["metadata"].get(field) {
                Some(value) => metadata(&mut next).insert(field.into(), value.clone()),
                None => metadata(&mut next).remove(field),
            };
        }
        // The main resource cannot change status; `update-status` can.
        next = without(&next, &["status"]);
        if let Some(status) = stored.get("status") {
            next["status"] = status.clone();
        }
        // Like the API server, count generations of everything but
        // metadata and status.
        if without(stored, &["metadata", "status"]) != without(&next, &["metadata", "status"]) {
            let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            metadata(&mut next).insert("generation".into(), generation.into());
        }
        Self::store(state, key, next)
    }
}

impl Host for Shared {
    fn get(&self, type_meta: &TypeMeta, object: &ObjectRef) -> Result<Option<String>, ApiError> {
        self.check(type_meta)?;
        Ok(lock(&self.0)
            .objects
            .get(&key(type_meta, object))
            .map(Value::to_string))
    }

    fn list(
        &self,
        type_meta: &TypeMeta,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<String, ApiError> {
        self.check(type_meta)?;
        let after = params
            .continue_token
            .as_deref()
            .map(page_after)
            .transpose()?;
        let labels: Selector = params
            .label_selector
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|error| bad_request(format!("{error}")))?;
        // The fake knows the two field selectors every kind supports.
        let mut fields = Vec::new();
        for requirement in params
            .field_selector
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .filter(|r| !r.trim().is_empty())
        {
            let (field, negated, value) = match requirement.split_once("!=") {
                Some((field, value)) => (field, true, value),
                None => {
                    let (field, value) = requirement
                        .split_once("==")
                        .or_else(|| requirement.split_once('='))
                        .ok_or_else(|| {
                            bad_request(format!("invalid field selector {requirement:?}"))
                        })?;
                    (field, false, value)
                }
            };
            let field = match field.trim() {
                "metadata.name" => "name",
                "metadata.namespace" => "namespace",
                other => {
                    return Err(bad_request(format!(
                        "field selector on {other} is not supported by the fake"
                    )));
                }
            };
            fields.push((field, negated, value.trim().to_owned()));
        }
        let state = lock(&self.0);
        let matching: Vec<(&Key, &Value)> = state
            .objects
            .iter()
            .filter(|((api_version, kind, object_namespace, name), object)| {
                *api_version == type_meta.api_version
                    && *kind == type_meta.kind
                    && namespace.is_none_or(|namespace| namespace == object_namespace)
                    && after
                        .as_ref()
                        .is_none_or(|after| (object_namespace, name) > (&after.0, &after.1))
                    && labels.matches(&labels_of(object))
                    && fields.iter().all(|(field, negated, value)| {
                        (meta_str(object, field).unwrap_or("") == value) != *negated
                    })
            })
            .collect();
        // As for the API server, a limit of 0 is no limit.
        let limit = params
            .limit
            .filter(|limit| *limit > 0)
            .map_or(usize::MAX, |limit| limit as usize);
        let remaining = matching.len().saturating_sub(limit);
        let page = &matching[..matching.len().min(limit)];
        let mut metadata = json!({ "resourceVersion": state.writes.to_string() });
        if let (true, Some(((_, _, namespace, name), _))) = (remaining > 0, page.last()) {
            metadata["continue"] = page_token(namespace, name).into();
            metadata["remainingItemCount"] = remaining.into();
        }
        let list = json!({
            "apiVersion": type_meta.api_version,
            "kind": format!("{}List", type_meta.kind),
            "metadata": metadata,
            // The API server leaves type meta out of list items.
            "items": page
                .iter()
                .map(|(_, object)| without(object, &["apiVersion", "kind"]))
                .collect::<Vec<_>>(),
        });
        Ok(list.to_string())
    }

    fn create(
        &self,
        type_meta: &TypeMeta,
        namespace: Option<&str>,
        object: &str,
    ) -> Result<String, ApiError> {
        self.check(type_meta)?;
        let mut object = parse(object)?;
        let mut state = lock(&self.0);
        let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
            (Some(name), _) => name.to_owned(),
            (None, Some(prefix)) => format!("{prefix}{:05}", state.writes + 1),
            (None, None) => {
                return Err(invalid(
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        if let (Some(namespace), Some(own)) = (namespace, meta_str(&object, "namespace"))
            && namespace != own
        {
            return Err(bad_request(
                "the namespace of the object does not match the request",
            ));
        }
        let reference = ObjectRef {
            namespace: namespace.map(str::to_owned),
            name: name.clone(),
        };
        let key = key(type_meta, &reference);
        if state.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!(
                    "{} \"{name}\" already exists",
                    type_meta.kind.to_lowercase()
                ),
            ));
        }
        object["apiVersion"] = type_meta.api_version.clone().into();
        object["kind"] = type_meta.kind.clone().into();
        let uid = format!("00000000-0000-0000-0000-{:012}", state.writes + 1);
        let meta = metadata(&mut object);
        meta.insert("name".into(), name.into());
        if let Some(namespace) = namespace {
            meta.insert("namespace".into(), namespace.into());
        }
        meta.insert("uid".into(), uid.into());
        meta.insert("creationTimestamp".into(), FAKE_TIMESTAMP.into());
        meta.insert("generation".into(), 1.into());
        meta.remove("deletionTimestamp");
        Ok(Self::store(&mut state, key, object).to_string())
    }

    fn replace(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        object: &str,
    ) -> Result<String, ApiError> {
        self.check(type_meta)?;
        let next = parse(object)?;
        let key = key(type_meta, target);
        let mut state = lock(&self.0);
        let stored = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(type_meta, &target.name))?;
        if let Some(version) = meta_str(&next, "resourceVersion")
            && Some(version) != meta_str(&stored, "resourceVersion")
        {
            return Err(conflict(type_meta, &target.name));
        }
        Ok(Self::write(&mut state, key, &stored, next).to_string())
    }

    fn apply(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        object: &str,
        field_manager: &str,
        _force: bool,
    ) -> Result<String, ApiError> {
        self.check(type_meta)?;
        let applied = parse(object)?;
        if field_manager.is_empty() {
            return Err(invalid(
                "fieldManager: Required value: is required for apply patch",
            ));
        }
        let key = key(type_meta, target);
        let stored = lock(&self.0).objects.get(&key).cloned();
        let result = match stored {
            None => {
                let created =
                    self.create(type_meta, target.namespace.as_deref(), &applied.to_string())?;
                parse(&created)?
            }
            Some(stored) => {
                let mut state = lock(&self.0);
                let mut next = stored.clone();
                if let Some(previous) = state.applied.get(&(key.clone(), field_manager.to_owned()))
                {
                    prune(&mut next, previous, &applied);
                }
                json_patch::merge(&mut next, &applied);
                Self::write(&mut state, key.clone(), &stored, next)
            }
        };
        lock(&self.0)
            .applied
            .insert((key, field_manager.to_owned()), applied);
        Ok(result.to_string())
    }

    fn patch(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        patch: ObjectPatch<'_>,
    ) -> Result<String, ApiError> {
        self.check(type_meta)?;
        // Parsed before the object is looked up, as the API server decodes
        // the request before it reads storage.
        let patch = Parsed::from(patch)?;
        let key = key(type_meta, target);
        let mut state = lock(&self.0);
        let stored = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(type_meta, &target.name))?;
        let mut next = stored.clone();
        match patch {
            Parsed::Merge(patch) => json_patch::merge(&mut next, &patch),
            Parsed::Json(operations) => json_patch::patch(&mut next, &operations)
                .map_err(|error| invalid(format!("the JSON patch does not apply: {error}")))?,
        }
        if !next.is_object() {
            return Err(invalid("the patched object is not a JSON object"));
        }
        if meta_str(&next, "name") != Some(target.name.as_str()) {
            return Err(bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                meta_str(&next, "name").unwrap_or_default(),
                target.name
            )));
        }
        if let Some(version) = meta_str(&next, "resourceVersion")
            && Some(version) != meta_str(&stored, "resourceVersion")
        {
            return Err(conflict(type_meta, &target.name));
        }
        Ok(Self::write(&mut state, key, &stored, next).to_string())
    }

    fn delete(&self, type_meta: &TypeMeta, target: &ObjectRef) -> Result<(), ApiError> {
        self.check(type_meta)?;
        let key = key(type_meta, target);
        let mut state = lock(&self.0);
        if !state.objects.contains_key(&key) {
            return Err(not_found(type_meta, &target.name));
        }
        Self::delete_key(&mut state, &key);
        Ok(())
    }

    fn update_status(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        update: StatusUpdate<'_>,
    ) -> Result<String, ApiError> {
        self.check(type_meta)?;
        let key = key(type_meta, target);
        let mut state = lock(&self.0);
        let mut stored = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found(type_meta, &target.name))?;
        match update {
            StatusUpdate::Replace(object) => {
                let next = parse(object)?;
                if let Some(version) = meta_str(&next, "resourceVersion")
                    && Some(version) != meta_str(&stored, "resourceVersion")
                {
                    return Err(conflict(type_meta, &target.name));
                }
                stored["status"] = next.get("status").cloned().unwrap_or(Value::Null);
            }
            StatusUpdate::MergePatch(patch) => {
                // The status subresource ignores everything but `status`.
                if let Some(status) = parse(patch)?.get("status") {
                    json_patch::merge(&mut stored["status"], status);
                }
            }
        }
        Ok(Self::store(&mut state, key, stored).to_string())
    }

    fn emit_event(
        &self,
        type_meta: &TypeMeta,
        regarding: &ObjectRef,
        _uid: Option<&str>,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        lock(&self.0).events.push(RecordedEvent {
            kind: type_meta.kind.clone(),
            regarding: regarding.clone(),
            event_type,
            reason: reason.to_owned(),
            message: message.to_owned(),
        });
        Ok(())
    }

    fn log(&self, level: Level, message: &str, fields: &[(&str, String)]) {
        lock(&self.0).logs.push(LogRecord {
            level,
            message: message.to_owned(),
            fields: fields
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.clone()))
                .collect(),
        });
    }

    fn config(&self) -> String {
        lock(&self.0).config.clone()
    }
}

/// A [`FakeCluster`] as a host answers a plugin's imports: objects and
/// lists as JSON text, errors as [`ApiError`] values, every Kubernetes call
/// recorded as a [`Call`].
///
/// The SDK's own calls land here while a cluster is [installed]; a host that
/// runs a compiled component sends the component's imports here, so a
/// native test and a test of the built `.wasm` see the same model.
///
/// [installed]: FakeCluster::install
#[derive(Clone)]
pub struct HostCalls(Shared);

impl fmt::Debug for HostCalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostCalls").finish_non_exhaustive()
    }
}

/// The name in an object's JSON, if it has one.
fn name_in(object: &str) -> Option<String> {
    meta_str(&serde_json::from_str(object).ok()?, "name").map(str::to_owned)
}

impl HostCalls {
    fn record<T>(
        &self,
        verb: Verb,
        type_meta: &TypeMeta,
        namespace: Option<&str>,
        name: Option<String>,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        lock(&self.0.0).calls.push(Call {
            verb,
            type_meta: type_meta.clone(),
            namespace: namespace.map(str::to_owned),
            name,
            error: result.as_ref().err().cloned(),
        });
        result
    }

    /// Records a call that addressed one object.
    fn record_at<T>(
        &self,
        verb: Verb,
        type_meta: &TypeMeta,
        object: &ObjectRef,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let name = Some(object.name.clone());
        self.record(verb, type_meta, object.namespace.as_deref(), name, result)
    }
}

impl Host for HostCalls {
    fn get(&self, type_meta: &TypeMeta, object: &ObjectRef) -> Result<Option<String>, ApiError> {
        let result = self.0.get(type_meta, object);
        self.record_at(Verb::Get, type_meta, object, result)
    }

    fn list(
        &self,
        type_meta: &TypeMeta,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<String, ApiError> {
        let result = Host::list(&self.0, type_meta, namespace, params);
        self.record(Verb::List, type_meta, namespace, None, result)
    }

    fn create(
        &self,
        type_meta: &TypeMeta,
        namespace: Option<&str>,
        object: &str,
    ) -> Result<String, ApiError> {
        let result = self.0.create(type_meta, namespace, object);
        self.record(Verb::Create, type_meta, namespace, name_in(object), result)
    }

    fn replace(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        object: &str,
    ) -> Result<String, ApiError> {
        let result = self.0.replace(type_meta, target, object);
        self.record_at(Verb::Replace, type_meta, target, result)
    }

    fn apply(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        object: &str,
        field_manager: &str,
        force: bool,
    ) -> Result<String, ApiError> {
        let result = self
            .0
            .apply(type_meta, target, object, field_manager, force);
        self.record_at(Verb::Apply, type_meta, target, result)
    }

    fn patch(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        patch: ObjectPatch<'_>,
    ) -> Result<String, ApiError> {
        let result = self.0.patch(type_meta, target, patch);
        self.record_at(Verb::Patch, type_meta, target, result)
    }

    fn delete(&self, type_meta: &TypeMeta, target: &ObjectRef) -> Result<(), ApiError> {
        let result = self.0.delete(type_meta, target);
        self.record_at(Verb::Delete, type_meta, target, result)
    }

    fn update_status(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        update: StatusUpdate<'_>,
    ) -> Result<String, ApiError> {
        let result = self.0.update_status(type_meta, target, update);
        self.record_at(Verb::UpdateStatus, type_meta, target, result)
    }

    fn emit_event(
        &self,
        type_meta: &TypeMeta,
        regarding: &ObjectRef,
        uid: Option<&str>,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let result = Host::emit_event(
            &self.0, type_meta, regarding, uid, event_type, reason, message,
        );
        self.record_at(Verb::EmitEvent, type_meta, regarding, result)
    }

    fn log(&self, level: Level, message: &str, fields: &[(&str, String)]) {
        self.0.log(level, message, fields);
    }

    fn config(&self) -> String {
        self.0.config()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;
    use crate::api::{Api, ApplyParams, ListParams, Patch};

    fn json_patch(operations: Value) -> Patch {
        Patch::Json(serde_json::from_value(operations).unwrap())
    }

    fn config_map(namespace: &str, name: &str, labels: Value) -> ConfigMap {
        serde_json::from_value(
            json!({ "metadata": { "namespace": namespace, "name": name, "labels": labels } }),
        )
        .unwrap()
    }

    #[test]
    fn a_stale_replace_conflicts() {
        let cluster = FakeCluster::new();
        let stale = cluster.insert(config_map("a", "x", json!({})));
        let _installed = cluster.install();
        let api = Api::<ConfigMap>::namespaced("a");
        api.replace("x", &stale).unwrap();

        let error = api.replace("x", &stale).unwrap_err();

        assert!(error.is_conflict() && error.is_retryable());
    }

    #[test]
    fn creating_an_existing_object_conflicts() {
        let cluster = FakeCluster::new();
        let object = cluster.insert(config_map("a", "x", json!({})));
        let _installed = cluster.install();
        assert!(
            Api::<ConfigMap>::namespaced("a")
                .create(&object)
                .unwrap_err()
                .is_conflict()
        );
    }

    #[test]
    fn apply_removes_the_fields_its_manager_stopped_applying() {
        let cluster = FakeCluster::new();
        let _installed = cluster.install();
        let api = Api::<ConfigMap>::namespaced("a");
        let manager = ApplyParams::new("test");
        api.apply(
            "x",
            &json!({ "data": { "keep": "1", "drop": "2" } }),
            &manager,
        )
        .unwrap();
        api.apply(
            "x",
            &json!({ "data": { "other": "3" } }),
            &ApplyParams::new("someone-else"),
        )
        .unwrap();

        let applied = api
            .apply("x", &json!({ "data": { "keep": "1" } }), &manager)
            .unwrap();

        let keys: Vec<_> = applied.data.unwrap().into_keys().collect();
        assert_eq!(keys, ["keep", "other"]);
    }

    #[test]
    fn lists_filter_by_namespace_labels_and_name() {
        let cluster = FakeCluster::new();
        cluster.insert(config_map("a", "x", json!({ "team": "red" })));
        cluster.insert(config_map("a", "y", json!({ "team": "blue" })));
        cluster.insert(config_map("b", "x", json!({ "team": "red" })));
        let _installed = cluster.install();
        let names = |api: Api<ConfigMap>, params: ListParams| -> Vec<String> {
            api.list(&params)
                .unwrap()
                .iter()
                .map(|c| ObjectRef::from_object(c).to_string())
                .collect()
        };

        assert_eq!(
            names(Api::all(), ListParams::default().labels("team=red")),
            ["a/x", "b/x"]
        );
        assert_eq!(
            names(Api::namespaced("a"), ListParams::default()),
            ["a/x", "a/y"]
        );
        assert_eq!(
            names(Api::all(), ListParams::default().fields("metadata.name!=x")),
            ["a/y"]
        );
    }

    #[test]
    fn live_reads_ask_for_what_a_field_selector_returns() {
        let cluster = FakeCluster::new();
        cluster.insert(config_map("a", "x", json!({ "team": "red" })));
        cluster.insert(config_map("a", "y", json!({ "team": "blue" })));
        let _installed = cluster.install();
        let api = Api::<ConfigMap>::namespaced("a");
        let found = api.get_live("y").unwrap().unwrap();
        assert_eq!(ObjectRef::from_object(&found).to_string(), "a/y");
        assert!(api.get_live("z").unwrap().is_none());
        let every = api.list(&ListParams::default().live()).unwrap();
        assert_eq!(every.len(), 2, "metadata.name!= matches every object");
        let red = api
            .list(&ListParams::default().labels("team=red").live())
            .unwrap();
        assert_eq!(red.len(), 1);
    }

    #[test]
    fn a_merge_patch_merges_objects_and_null_removes_a_field() {
        let cluster = FakeCluster::new();
        cluster.insert(config_map(
            "a",
            "x",
            json!({ "tier": "gold", "team": "red" }),
        ));
        let _installed = cluster.install();

        let patched = Api::<ConfigMap>::namespaced("a")
            .patch(
                "x",
                &Patch::Merge(json!({ "metadata": { "labels": { "tier": null, "new": "1" } } })),
            )
            .unwrap();

        let labels: Vec<_> = patched.metadata.labels.unwrap().into_iter().collect();
        assert_eq!(
            labels,
            [("new".into(), "1".into()), ("team".into(), "red".into())]
        );
        assert_eq!(
            cluster.calls()[0].to_string(),
            "patch v1/ConfigMap a/x -> ok"
        );
    }

    #[test]
    fn a_json_patch_applies_its_operations_in_order() {
        let cluster = FakeCluster::new();
        cluster.insert(config_map("a", "x", json!({ "tier": "gold" })));
        let _installed = cluster.install();

        let patched = Api::<ConfigMap>::namespaced("a")
            .patch(
                "x",
                &json_patch(json!([
                    { "op": "test", "path": "/metadata/labels/tier", "value": "gold" },
                    { "op": "add", "path": "/data", "value": { "a": "1" } },
                    { "op": "move", "from": "/data/a", "path": "/data/b" },
                ])),
            )
            .unwrap();

        assert_eq!(patched.data.unwrap(), [("b".into(), "1".into())].into());
    }

    #[test]
    fn a_json_patch_whose_test_fails_is_invalid_and_changes_nothing() {
        let cluster = FakeCluster::new();
        let before = cluster.insert(config_map("a", "x", json!({ "tier": "gold" })));
        let _installed = cluster.install();

        let error = Api::<ConfigMap>::namespaced("a")
            .patch(
                "x",
                &json_patch(json!([
                    { "op": "test", "path": "/metadata/labels/tier", "value": "silver" },
                    { "op": "replace", "path": "/metadata/labels/tier", "value": "bronze" },
                ])),
            )
            .unwrap_err();

        let api = error.api().unwrap();
        assert_eq!((api.code, api.reason.as_str()), (422, "Invalid"));
        assert!(api.message.contains("value did not match"), "{api}");
        assert!(!error.is_retryable());
        let after: ConfigMap = cluster.get(&ObjectRef::namespaced("a", "x")).unwrap();
        assert_eq!(after, before);
    }

    #[test]
    fn a_json_patch_that_is_not_a_list_of_operations_is_a_bad_request_that_says_so() {
        let cluster = FakeCluster::new();
        cluster.insert(config_map("a", "x", json!({})));
        let target = ObjectRef::namespaced("a", "x");
        for text in [
            r#"{"op":"add","path":"/data","value":{}}"#,
            r#"[{"op":"frobnicate","path":"/data"}]"#,
            "not json",
        ] {
            let error = cluster
                .host_calls()
                .patch(
                    &TypeMeta::of::<ConfigMap>(),
                    &target,
                    ObjectPatch::Json(text),
                )
                .unwrap_err();
            assert_eq!((error.code, error.reason.as_str()), (400, "BadRequest"));
            assert!(
                error
                    .message
                    .starts_with("the JSON patch is not a list of RFC 6902 operations: "),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn a_merge_patch_that_is_not_json_is_a_bad_request() {
        let cluster = FakeCluster::new();
        cluster.insert(config_map("a", "x", json!({})));
        let error = cluster
            .host_calls()
            .patch(
                &TypeMeta::of::<ConfigMap>(),
                &ObjectRef::namespaced("a", "x"),
                ObjectPatch::Merge("{data"),
            )
            .unwrap_err();
        assert_eq!(error.code, 400);
        assert!(
            error.message.starts_with("the merge patch is not JSON: "),
            "{error}"
        );
    }

    #[test]
    fn patching_a_missing_object_is_not_found() {
        let cluster = FakeCluster::new();
        let _installed = cluster.install();
        let error = Api::<ConfigMap>::namespaced("a")
            .patch("x", &Patch::Merge(json!({ "data": { "a": "1" } })))
            .unwrap_err();
        assert!(error.is_not_found(), "{error}");
        assert_eq!(
            cluster.calls()[0].to_string(),
            "patch v1/ConfigMap a/x -> 404 NotFound"
        );
    }

    #[test]
    fn a_patch_that_names_a_stale_resource_version_conflicts() {
        let cluster = FakeCluster::new();
        let stale = cluster.insert(config_map("a", "x", json!({})));
        let version = stale.metadata.resource_version.clone().unwrap();
        let _installed = cluster.install();
        let api = Api::<ConfigMap>::namespaced("a");
        let guarded = Patch::Merge(
            json!({ "metadata": { "resourceVersion": version }, "data": { "a": "1" } }),
        );
        api.patch("x", &guarded).unwrap();

        let error = api.patch("x", &guarded).unwrap_err();

        assert!(error.is_conflict(), "{error}");
    }

    #[test]
    fn a_patch_cannot_rename_an_object_or_change_its_status() {
        let cluster = FakeCluster::new();
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": { "namespace": "a", "name": "web" },
            "spec": { "selector": {}, "template": {} },
            "status": { "replicas": 1 }
        }))
        .unwrap();
        cluster.insert(deployment);
        let _installed = cluster.install();
        let api = Api::<Deployment>::namespaced("a");

        let rename = Patch::Merge(json!({ "metadata": { "name": "other" } }));
        let error = api.patch("web", &rename).unwrap_err();
        assert_eq!(error.api().unwrap().code, 400, "{error}");

        let status = Patch::Merge(json!({ "status": { "replicas": 9 } }));
        let patched = api.patch("web", &status).unwrap();
        assert_eq!(patched.status.unwrap().replicas, Some(1));
    }

    #[test]
    fn pages_return_every_matching_object_once_in_order() {
        let cluster = FakeCluster::new();
        for (namespace, name) in [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "z")] {
            cluster.insert(config_map(namespace, name, json!({ "team": "red" })));
        }
        cluster.insert(config_map("a", "blue", json!({ "team": "blue" })));
        let _installed = cluster.install();
        let api = Api::<ConfigMap>::all();

        let mut params = ListParams::default().labels("team=red").limit(2);
        let mut pages = Vec::new();
        loop {
            let page = api.list_page(&params).unwrap();
            pages.push(
                page.items
                    .iter()
                    .map(|c| ObjectRef::from_object(c).to_string())
                    .collect::<Vec<_>>(),
            );
            match page.continue_token {
                Some(token) => params = params.continue_token(token),
                None => break,
            }
        }

        assert_eq!(pages, [vec!["a/x", "a/y"], vec!["b/x", "b/y"], vec!["c/z"]]);
    }

    #[test]
    fn a_page_says_how_many_objects_remain() {
        let cluster = FakeCluster::new();
        for name in ["x", "y", "z"] {
            cluster.insert(config_map("a", name, json!({})));
        }
        let list = cluster
            .host_calls()
            .list(
                &TypeMeta::of::<ConfigMap>(),
                Some("a"),
                &ListParams::default().limit(1),
            )
            .unwrap();
        let list: Value = serde_json::from_str(&list).unwrap();
        assert_eq!(list["metadata"]["remainingItemCount"], 2);
        assert!(list["metadata"]["continue"].is_string());
    }

    #[test]
    fn a_limit_of_zero_or_one_past_the_end_reads_the_whole_list() {
        let cluster = FakeCluster::new();
        cluster.insert(config_map("a", "x", json!({})));
        cluster.insert(config_map("a", "y", json!({})));
        let _installed = cluster.install();
        let api = Api::<ConfigMap>::namespaced("a");
        for limit in [0, 2, 3] {
            let page = api.list_page(&ListParams::default().limit(limit)).unwrap();
            assert_eq!((page.items.len(), page.is_last()), (2, true), "{limit}");
        }
    }

    #[test]
    fn a_continue_token_the_cluster_did_not_give_is_a_bad_request() {
        let cluster = FakeCluster::new();
        let _installed = cluster.install();
        let error = Api::<ConfigMap>::all()
            .list_page(&ListParams::default().limit(1).continue_token("made-up"))
            .unwrap_err();
        let api = error.api().unwrap();
        assert_eq!(api.code, 400);
        assert!(
            api.message
                .contains("continue token \"made-up\" is not valid"),
            "{api}"
        );
    }

    /// Denies every change to a namespace whose ConfigMap `policy` says
    /// `frozen: "true"`.
    #[derive(Default)]
    struct Freeze;

    impl Admission for Freeze {
        type Object = ConfigMap;

        fn validate(&self, request: &admission::Request<ConfigMap>) -> admission::Result<Verdict> {
            let namespace = request.namespace().unwrap_or_default();
            let policy = Api::<ConfigMap>::namespaced(namespace).get("policy")?;
            let frozen = policy
                .and_then(|policy| policy.data)
                .is_some_and(|data| data.get("frozen").is_some_and(|f| f == "true"));
            Ok(match frozen {
                true => Verdict::deny(format!("namespace {namespace} is frozen")),
                false => Verdict::allow(),
            })
        }
    }

    #[test]
    fn a_review_reads_the_cluster_it_runs_against() {
        let cluster = FakeCluster::new();
        let request = ReviewRequest::create(&config_map("a", "x", json!({})));
        assert!(cluster.validate(&Freeze, &request).unwrap().allowed);

        let mut policy = config_map("a", "policy", json!({}));
        policy.data = Some([("frozen".to_string(), "true".to_string())].into());
        cluster.insert(policy);

        let verdict = cluster.validate(&Freeze, &request).unwrap();
        assert_eq!(verdict.message.as_deref(), Some("namespace a is frozen"));
        assert_eq!(
            cluster.calls().last().unwrap().to_string(),
            "get v1/ConfigMap a/policy -> ok"
        );
    }

    #[test]
    fn a_call_that_fails_during_a_review_leaves_the_plugin_undecided() {
        let cluster = FakeCluster::new();
        cluster.forbid::<ConfigMap>();
        let request = ReviewRequest::create(&config_map("a", "x", json!({})));

        let error = cluster.validate(&Freeze, &request).unwrap_err();

        assert!(
            error.message.starts_with("api error 403 Forbidden"),
            "{error}"
        );
    }

    #[test]
    fn an_unparsable_selector_is_a_bad_request() {
        let cluster = FakeCluster::new();
        let _installed = cluster.install();
        let error = Api::<ConfigMap>::all()
            .list(&ListParams::default().labels("a in (b"))
            .unwrap_err();
        assert_eq!(error.api().unwrap().code, 400);
    }

    #[test]
    fn finalizers_hold_a_deleted_object_until_removed() {
        let cluster = FakeCluster::new();
        let mut object = config_map("a", "x", json!({}));
        object.metadata.finalizers = Some(vec!["test/hold".into()]);
        let reference = ObjectRef::from_object(&cluster.insert(object));

        assert!(cluster.delete::<ConfigMap>(&reference));
        let mut held: ConfigMap = cluster.get(&reference).unwrap();
        assert!(crate::finalizer::is_deleting(&held));

        crate::finalizer::remove(&mut held, "test/hold");
        let _installed = cluster.install();
        Api::<ConfigMap>::namespaced("a")
            .replace("x", &held)
            .unwrap();
        assert!(cluster.get::<ConfigMap>(&reference).is_none());
    }

    #[test]
    fn deleting_an_owner_deletes_what_it_controls() {
        let cluster = FakeCluster::new();
        let owner = cluster.insert(config_map("a", "owner", json!({})));
        let mut child = config_map("a", "child", json!({}));
        crate::owner::set_controller(&mut child, &owner).unwrap();
        cluster.insert(child);

        cluster.delete::<ConfigMap>(&ObjectRef::from_object(&owner));

        assert!(cluster.list::<ConfigMap>().is_empty());
    }

    #[test]
    fn a_status_patch_changes_only_the_status() {
        let cluster = FakeCluster::new();
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": { "namespace": "a", "name": "web" },
            "spec": { "selector": {}, "template": {} },
            "status": { "replicas": 1, "readyReplicas": 1 }
        }))
        .unwrap();
        cluster.insert(deployment);
        let _installed = cluster.install();
        let api = Api::<Deployment>::namespaced("a");

        let patched = api
            .patch_status(
                "web",
                &json!({ "spec": { "replicas": 9 }, "status": { "readyReplicas": 0 } }),
            )
            .unwrap();

        assert_eq!(patched.spec.unwrap().replicas, None);
        let status = patched.status.unwrap();
        assert_eq!((status.replicas, status.ready_replicas), (Some(1), Some(0)));
    }

    #[test]
    fn a_registration_finalizer_is_added_before_the_first_reconcile() {
        #[derive(Default)]
        struct Guarded;
        impl Reconciler for Guarded {
            type Object = ConfigMap;
            fn registration(&self) -> crate::Registration<ConfigMap> {
                crate::Registration::new("guarded").finalizer("test/guard")
            }
            fn reconcile(&self, object: ConfigMap) -> Result<Action, reconciler::Error> {
                assert!(crate::finalizer::has(&object, "test/guard"));
                Ok(Action::requeue_after(std::time::Duration::from_secs(5)))
            }
        }
        let cluster = FakeCluster::new();
        let reference = ObjectRef::from_object(&cluster.insert(config_map("a", "x", json!({}))));

        let action = cluster.reconcile(&Guarded, &reference).unwrap();

        assert_eq!(
            action,
            Action::RequeueAfter(std::time::Duration::from_secs(5))
        );
        cluster.delete::<ConfigMap>(&reference);
        assert_eq!(
            cluster.reconcile(&Guarded, &reference).unwrap(),
            Action::Done
        );
        assert!(
            cluster.get::<ConfigMap>(&reference).is_none(),
            "cleanup's default released the finalizer"
        );
    }
}
