//! The [`Reconciler`] trait a plugin implements, and the [`Registration`]
//! that tells the host what to watch.
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use leasehold_sdk::{Action, Reconciler, Registration, reconciler};
//!
//! #[derive(Default)]
//! struct Audit;
//!
//! impl Reconciler for Audit {
//!     type Object = ConfigMap;
//!
//!     fn registration(&self) -> Registration<ConfigMap> {
//!         Registration::new("audit").labels("audit=true")
//!     }
//!
//!     fn reconcile(&self, object: ConfigMap) -> Result<Action, reconciler::Error> {
//!         leasehold_sdk::info!("seen", keys = object.data.unwrap_or_default().len());
//!         Ok(Action::Done)
//!     }
//! }
//!
//! leasehold_sdk::export_controller!(Audit);
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use crate::object::{Object, ObjectRef};
use crate::{api, config, owner, selector};

/// A controller: brings the cluster in line with each primary object.
///
/// Implement it on a `Default` type and export it with
/// [`export_controller!`](crate::export_controller). Keep no state between
/// calls: the host may run each call in a fresh instance.
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use leasehold_sdk::{Action, Reconciler, Registration, reconciler};
///
/// #[derive(Default)]
/// struct Noop;
///
/// impl Reconciler for Noop {
///     type Object = ConfigMap;
///     fn registration(&self) -> Registration<ConfigMap> {
///         Registration::new("noop")
///     }
///     fn reconcile(&self, _object: ConfigMap) -> Result<Action, reconciler::Error> {
///         Ok(Action::Done)
///     }
/// }
/// ```
pub trait Reconciler {
    /// The primary kind, whose objects `reconcile` receives.
    type Object: Object;

    /// What to reconcile and what to watch; the host reads it once per
    /// instance.
    fn registration(&self) -> Registration<Self::Object>;

    /// Brings the cluster in line with `object`. Must be idempotent: the
    /// host calls it again after every change, every resync and every
    /// retryable error.
    fn reconcile(&self, object: Self::Object) -> Result<Action, Error>;

    /// Releases what `object` holds while it is being deleted; called only
    /// when the registration names a finalizer, which the host removes once
    /// this returns [`Action::Done`].
    fn cleanup(&self, object: Self::Object) -> Result<Action, Error> {
        let _ = object;
        Ok(Action::Done)
    }

    /// Called when the primary named by `reference` is gone (deleted, also
    /// after a finalized deletion completes), or no longer matches the
    /// registration's label selector; nothing to do by default, because
    /// owner references let the garbage collector clean up. Must be
    /// idempotent, and may overlap the first reconcile of an object
    /// re-created under the same name; a retryable error is retried a few
    /// times, then dropped.
    fn absent(&self, reference: &ObjectRef) -> Result<Action, Error> {
        let _ = reference;
        Ok(Action::Done)
    }
}

/// What the host does after a successful call.
///
/// ```
/// use std::time::Duration;
/// use leasehold_sdk::Action;
/// let poll = Action::requeue_after(Duration::from_secs(30));
/// assert_eq!(poll, Action::RequeueAfter(Duration::from_secs(30)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing more until something changes (or the resync period passes).
    Done,
    /// Call again after this long, for something no watch can see.
    RequeueAfter(Duration),
}

impl Action {
    /// Call again after `delay`.
    ///
    /// ```
    /// let action = leasehold_sdk::Action::requeue_after(std::time::Duration::from_millis(500));
    /// assert_ne!(action, leasehold_sdk::Action::Done);
    /// ```
    pub fn requeue_after(delay: Duration) -> Self {
        Self::RequeueAfter(delay)
    }
}

/// Why a reconcile failed, and whether retrying can help.
///
/// `?` converts the SDK's own errors: API errors keep their retryability
/// (see [`api::ApiError::is_retryable`]); configuration, selector and owner
/// errors need a person and are permanent.
///
/// ```
/// use leasehold_sdk::reconciler::Error;
/// let error = Error::permanent("spec.replicas must be positive");
/// assert!(!error.retryable);
/// assert!(Error::retryable("upstream busy").retryable);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// What went wrong, for logs and the Plugin's status.
    pub message: String,
    /// Whether the host should retry with backoff (true) or wait for a
    /// change (false).
    pub retryable: bool,
}

impl Error {
    /// An error that retrying with backoff can fix.
    ///
    /// ```
    /// assert!(leasehold_sdk::reconciler::Error::retryable("busy").retryable);
    /// ```
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// An error only a change to the object (or configuration) can fix.
    ///
    /// ```
    /// assert!(!leasehold_sdk::reconciler::Error::permanent("bad spec").retryable);
    /// ```
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

impl From<api::Error> for Error {
    fn from(error: api::Error) -> Self {
        Self {
            message: crate::chain(&error),
            retryable: error.is_retryable(),
        }
    }
}

impl From<api::ApiError> for Error {
    fn from(error: api::ApiError) -> Self {
        api::Error::from(error).into()
    }
}

impl From<config::Error> for Error {
    fn from(error: config::Error) -> Self {
        Self::permanent(crate::chain(&error))
    }
}

impl From<selector::Error> for Error {
    fn from(error: selector::Error) -> Self {
        Self::permanent(crate::chain(&error))
    }
}

impl From<owner::Error> for Error {
    fn from(error: owner::Error) -> Self {
        Self::permanent(crate::chain(&error))
    }
}

/// How a change to a watched object finds the primaries to reconcile.
///
/// ```
/// use leasehold_sdk::Mapping;
/// let mapping = Mapping::labels("example.dev/source-name").in_namespace_label("example.dev/source-namespace");
/// assert!(matches!(mapping, Mapping::Labels { namespace: Some(_), .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// The watched object names its primary in labels.
    Labels {
        /// The label whose value is the primary's name.
        name: String,
        /// The label whose value is the primary's namespace; `None` means
        /// the watched object's own namespace.
        namespace: Option<String>,
    },
    /// Every change requeues every primary.
    AllPrimaries,
}

impl Mapping {
    /// The primary is named by the label `name`, in the watched object's
    /// namespace.
    ///
    /// ```
    /// let mapping = leasehold_sdk::Mapping::labels("example.dev/owner");
    /// assert!(matches!(mapping, leasehold_sdk::Mapping::Labels { namespace: None, .. }));
    /// ```
    pub fn labels(name: impl Into<String>) -> Self {
        Self::Labels {
            name: name.into(),
            namespace: None,
        }
    }

    /// Also reads the primary's namespace from the label `namespace`; for
    /// copies kept in other namespaces than their primary.
    ///
    /// ```
    /// let mapping = leasehold_sdk::Mapping::labels("n").in_namespace_label("ns");
    /// assert_eq!(mapping, leasehold_sdk::Mapping::Labels { name: "n".into(), namespace: Some("ns".into()) });
    /// ```
    pub fn in_namespace_label(self, namespace: impl Into<String>) -> Self {
        match self {
            Self::Labels { name, .. } => Self::Labels {
                name,
                namespace: Some(namespace.into()),
            },
            Self::AllPrimaries => Self::AllPrimaries,
        }
    }
}

/// A kind the host watches, as the contract's `group-version-kind`.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// let kind = leasehold_sdk::reconciler::Kind::of::<ConfigMap>();
/// assert_eq!((kind.group.as_str(), kind.version.as_str()), ("", "v1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    /// The API group; empty for the core group.
    pub group: String,
    /// The version, for example `v1`.
    pub version: String,
    /// The kind, for example `ConfigMap`.
    pub kind: String,
    /// The plural resource name, for example `configmaps`.
    pub plural: String,
}

impl Kind {
    /// The kind of a Rust object type.
    ///
    /// ```
    /// use k8s_openapi::api::apps::v1::Deployment;
    /// let kind = leasehold_sdk::reconciler::Kind::of::<Deployment>();
    /// assert_eq!((kind.group.as_str(), kind.plural.as_str()), ("apps", "deployments"));
    /// ```
    pub fn of<K: Object>() -> Self {
        Self {
            group: K::group(&()).into_owned(),
            version: K::version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            plural: K::plural(&()).into_owned(),
        }
    }
}

/// A kind watched for changes that map to primaries; built by
/// [`Registration::watches`] and [`Registration::watches_matching`].
///
/// ```
/// use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
/// use leasehold_sdk::{Mapping, Registration};
/// let registration = Registration::<ConfigMap>::new("e").watches::<Namespace>(Mapping::AllPrimaries);
/// assert_eq!(registration.watches[0].mapping, Mapping::AllPrimaries);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The watched kind.
    pub kind: Kind,
    /// Only objects matching this label selector are watched.
    pub label_selector: Option<String>,
    /// How a change finds its primaries.
    pub mapping: Mapping,
}

/// What a controller reconciles and what makes the host call it; built
/// with chained calls.
///
/// ```
/// use std::time::Duration;
/// use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
/// use leasehold_sdk::{Mapping, Registration};
///
/// let registration = Registration::<ConfigMap>::new("example")
///     .labels("example.dev/enabled=true")
///     .owns::<Secret>()
///     .watches::<Namespace>(Mapping::AllPrimaries)
///     .resync_every(Duration::from_secs(600))
///     .finalizer("example.dev/cleanup");
/// assert_eq!(registration.name, "example");
/// ```
#[derive(Debug, Clone)]
pub struct Registration<K> {
    /// The controller's name: unique among plugins, and the natural field
    /// manager for its applies.
    pub name: String,
    /// Only primaries matching this label selector are reconciled.
    pub label_selector: Option<String>,
    /// Limits the primaries and the watched namespaced kinds to one
    /// namespace.
    pub namespace: Option<String>,
    /// Kinds the controller creates with a controller owner reference.
    pub owns: Vec<Kind>,
    /// Other kinds whose changes reconcile primaries.
    pub watches: Vec<Watch>,
    /// Reconcile every primary this often even without a change.
    pub resync_period: Option<Duration>,
    /// The finalizer the host manages for this controller.
    pub finalizer: Option<String>,
    primary: PhantomData<fn() -> K>,
}

impl<K: Object> Registration<K> {
    /// A controller called `name` that reconciles every object of `K`.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// let registration = leasehold_sdk::Registration::<ConfigMap>::new("example");
    /// assert!(registration.owns.is_empty());
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            label_selector: None,
            namespace: None,
            owns: Vec::new(),
            watches: Vec::new(),
            resync_period: None,
            finalizer: None,
            primary: PhantomData,
        }
    }

    /// The primary kind.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// let registration = leasehold_sdk::Registration::<ConfigMap>::new("example");
    /// assert_eq!(registration.primary().kind, "ConfigMap");
    /// ```
    pub fn primary(&self) -> Kind {
        Kind::of::<K>()
    }

    /// Reconciles only primaries matching the label `selector`.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// let registration = leasehold_sdk::Registration::<ConfigMap>::new("example").labels("a=b");
    /// assert_eq!(registration.label_selector.as_deref(), Some("a=b"));
    /// ```
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Watches only `namespace`.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// let registration = leasehold_sdk::Registration::<ConfigMap>::new("example").namespace("team-a");
    /// assert_eq!(registration.namespace.as_deref(), Some("team-a"));
    /// ```
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Reconciles a primary when a `C` it controls changes.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    /// let registration = leasehold_sdk::Registration::<ConfigMap>::new("example").owns::<Secret>();
    /// assert_eq!(registration.owns[0].kind, "Secret");
    /// ```
    pub fn owns<C: Object>(mut self) -> Self {
        self.owns.push(Kind::of::<C>());
        self
    }

    /// Reconciles the primaries `mapping` finds when any `W` changes.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    /// use leasehold_sdk::{Mapping, Registration};
    /// let registration = Registration::<ConfigMap>::new("example").watches::<Namespace>(Mapping::AllPrimaries);
    /// assert_eq!(registration.watches[0].kind.kind, "Namespace");
    /// ```
    pub fn watches<W: Object>(self, mapping: Mapping) -> Self {
        self.watch(Watch {
            kind: Kind::of::<W>(),
            label_selector: None,
            mapping,
        })
    }

    /// Like [`Registration::watches`], for only the `W` matching the label
    /// `selector`.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use leasehold_sdk::{Mapping, Registration};
    /// let registration = Registration::<ConfigMap>::new("example")
    ///     .watches_matching::<ConfigMap>("example.dev/copy", Mapping::labels("example.dev/copy"));
    /// assert_eq!(registration.watches[0].label_selector.as_deref(), Some("example.dev/copy"));
    /// ```
    pub fn watches_matching<W: Object>(
        self,
        selector: impl Into<String>,
        mapping: Mapping,
    ) -> Self {
        self.watch(Watch {
            kind: Kind::of::<W>(),
            label_selector: Some(selector.into()),
            mapping,
        })
    }

    fn watch(mut self, watch: Watch) -> Self {
        self.watches.push(watch);
        self
    }

    /// Reconciles every primary this often even without a change.
    ///
    /// ```
    /// use std::time::Duration;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// let registration = leasehold_sdk::Registration::<ConfigMap>::new("e").resync_every(Duration::from_secs(60));
    /// assert_eq!(registration.resync_period, Some(Duration::from_secs(60)));
    /// ```
    pub fn resync_every(mut self, period: Duration) -> Self {
        self.resync_period = Some(period);
        self
    }

    /// Has the host guard primaries with the finalizer `name` and call
    /// [`Reconciler::cleanup`] before they go.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// let registration = leasehold_sdk::Registration::<ConfigMap>::new("e").finalizer("example.dev/cleanup");
    /// assert_eq!(registration.finalizer.as_deref(), Some("example.dev/cleanup"));
    /// ```
    pub fn finalizer(mut self, name: impl Into<String>) -> Self {
        self.finalizer = Some(name.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_their_retryability_through_question_mark() {
        let conflict: Error = api::ApiError::new(409, "Conflict", "stale").into();
        let invalid: Error = api::ApiError::new(422, "Invalid", "bad").into();
        assert!(conflict.retryable);
        assert!(!invalid.retryable);
        assert_eq!(conflict.message, "api error 409 Conflict: stale");
    }

    #[test]
    fn configuration_errors_are_permanent_and_name_their_cause() {
        let error: Error = config::parse::<std::collections::BTreeMap<String, u8>>("[]")
            .unwrap_err()
            .into();
        assert!(!error.retryable);
        assert!(
            error.message.starts_with("invalid plugin configuration: "),
            "{}",
            error.message
        );
    }
}
