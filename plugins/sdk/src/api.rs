//! A typed client for the Kubernetes API, in the spirit of kube's `Api<K>`.
//!
//! Every call is answered by the host as the plugin's own ServiceAccount, so
//! RBAC applies: a forbidden call is an [`Error::Api`] with code 403, a
//! value to handle like any other, never a panic.
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use leasehold_sdk::api::{Api, ListParams};
//!
//! # fn example() -> Result<(), leasehold_sdk::api::Error> {
//! let config_maps = Api::<ConfigMap>::namespaced("default");
//! if let Some(settings) = config_maps.get("settings")? {
//!     println!("settings has {} keys", settings.data.unwrap_or_default().len());
//! }
//! let mirrored = config_maps.list(&ListParams::default().labels("leasehold.dev/mirror=true"))?;
//! # Ok(()) }
//! ```
//!
//! Besides get, list, create, replace, server-side apply, delete and the
//! status subresource, [`Api::patch`] sends a JSON merge patch or a JSON
//! patch ([`Patch`]), and [`Api::list_page`] reads a long list a page at a
//! time.

use std::marker::PhantomData;

use kube_core::NamespaceResourceScope;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::host::{self, ObjectPatch, StatusUpdate};
use crate::object::{Object, ObjectRef, TypeMeta};

/// The result of an API call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server, or the host on its behalf, refused the call.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// An object could not be encoded as JSON for the host.
    #[error("cannot encode {kind} as json")]
    Encode {
        /// The kind being encoded.
        kind: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The host answered with JSON that is not an object of the kind.
    #[error("cannot decode {kind} from the host's answer")]
    Decode {
        /// The kind being decoded.
        kind: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// The API server's answer, when the call reached it.
    ///
    /// ```
    /// use leasehold_sdk::api::{ApiError, Error};
    /// let error = Error::from(ApiError::new(403, "Forbidden", "no"));
    /// assert_eq!(error.api().map(|api| api.code), Some(403));
    /// ```
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(error) => Some(error),
            Self::Encode { .. } | Self::Decode { .. } => None,
        }
    }

    /// Whether calling again, later, can succeed; see
    /// [`ApiError::is_retryable`]. Encoding and decoding errors are bugs that
    /// a retry does not fix.
    ///
    /// ```
    /// use leasehold_sdk::api::{ApiError, Error};
    /// assert!(Error::from(ApiError::new(409, "Conflict", "stale")).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.api().is_some_and(ApiError::is_retryable)
    }

    /// Whether the API server answered 404.
    ///
    /// ```
    /// use leasehold_sdk::api::{ApiError, Error};
    /// assert!(Error::from(ApiError::new(404, "NotFound", "gone")).is_not_found());
    /// ```
    pub fn is_not_found(&self) -> bool {
        self.api().is_some_and(ApiError::is_not_found)
    }

    /// Whether the API server answered 409: a stale `resourceVersion` or an
    /// object that already exists.
    ///
    /// ```
    /// use leasehold_sdk::api::{ApiError, Error};
    /// assert!(Error::from(ApiError::new(409, "AlreadyExists", "taken")).is_conflict());
    /// ```
    pub fn is_conflict(&self) -> bool {
        self.api().is_some_and(ApiError::is_conflict)
    }
}

/// The API server's (or the host's) answer to a failed call, as the WIT
/// contract's `api-error`.
///
/// ```
/// use leasehold_sdk::api::ApiError;
/// let error = ApiError::new(403, "Forbidden", "configmaps is forbidden");
/// assert!(error.is_forbidden() && error.is_retryable());
/// assert_eq!(error.to_string(), "api error 403 Forbidden: configmaps is forbidden");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("api error {code} {reason}: {message}")]
pub struct ApiError {
    /// The HTTP status; 0 when the call failed before reaching the API server.
    pub code: u16,
    /// The machine-readable reason, for example `NotFound`.
    pub reason: String,
    /// A human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// An error with this status, reason and message.
    ///
    /// ```
    /// let error = leasehold_sdk::api::ApiError::new(404, "NotFound", "configmaps \"x\" not found");
    /// assert!(error.is_not_found());
    /// ```
    pub fn new(code: u16, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// Whether the object does not exist (404).
    ///
    /// ```
    /// assert!(leasehold_sdk::api::ApiError::new(404, "NotFound", "").is_not_found());
    /// ```
    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }

    /// Whether the call conflicted with the stored object (409).
    ///
    /// ```
    /// assert!(leasehold_sdk::api::ApiError::new(409, "Conflict", "").is_conflict());
    /// ```
    pub fn is_conflict(&self) -> bool {
        self.code == 409
    }

    /// Whether RBAC refused the call (403).
    ///
    /// ```
    /// assert!(leasehold_sdk::api::ApiError::new(403, "Forbidden", "").is_forbidden());
    /// ```
    pub fn is_forbidden(&self) -> bool {
        self.code == 403
    }

    /// Whether the same call can succeed later.
    ///
    /// A request the API server rejects as malformed or invalid (400, 405,
    /// 406, 413, 415, 422) fails the same way every time. Everything else can
    /// heal without a change to the plugin: a conflict by re-reading, a 403
    /// by an RBAC change that no watch sees, a 404 by the object appearing,
    /// a 429 or 5xx by waiting, a 0 (the host could not reach the API server)
    /// by reconnecting.
    ///
    /// ```
    /// use leasehold_sdk::api::ApiError;
    /// assert!(ApiError::new(503, "ServiceUnavailable", "").is_retryable());
    /// assert!(!ApiError::new(422, "Invalid", "").is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        !matches!(self.code, 400 | 405 | 406 | 413 | 415 | 422)
    }
}

/// Which objects [`Api::list`] and [`Api::list_page`] return.
///
/// ```
/// use leasehold_sdk::api::ListParams;
/// let params = ListParams::default().labels("app=web").labels("tier!=cache");
/// assert_eq!(params.label_selector.as_deref(), Some("app=web,tier!=cache"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// A label selector such as `app=web,tier in (a,b)`.
    pub label_selector: Option<String>,
    /// A field selector such as `metadata.name=settings`.
    pub field_selector: Option<String>,
    /// At most this many objects per call (a page); see
    /// [`ListParams::limit`].
    pub limit: Option<u32>,
    /// The previous page's [`Page::continue_token`], to read the next.
    pub continue_token: Option<String>,
}

impl ListParams {
    /// Also requires `selector`; requirements add up, as commas do in a
    /// Kubernetes selector.
    ///
    /// ```
    /// let params = leasehold_sdk::api::ListParams::default().labels("app=web");
    /// assert_eq!(params.label_selector.as_deref(), Some("app=web"));
    /// ```
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(and(self.label_selector.take(), selector));
        self
    }

    /// Also requires the field `selector`.
    ///
    /// ```
    /// let params = leasehold_sdk::api::ListParams::default().fields("metadata.name=settings");
    /// assert_eq!(params.field_selector.as_deref(), Some("metadata.name=settings"));
    /// ```
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(and(self.field_selector.take(), selector));
        self
    }

    /// Reads from the API server itself rather than the host's watch
    /// caches (see the crate's README): the host answers every list with a
    /// field selector live, so this adds one every object matches
    /// (`metadata.name!=`, as every object has a name) unless the list
    /// has one already.
    ///
    /// ```
    /// let params = leasehold_sdk::api::ListParams::default().labels("app=web").live();
    /// assert_eq!(params.field_selector.as_deref(), Some("metadata.name!="));
    /// ```
    pub fn live(mut self) -> Self {
        if self
            .field_selector
            .as_deref()
            .is_none_or(|f| f.trim().is_empty())
        {
            self.field_selector = Some(EVERY_NAME.to_owned());
        }
        self
    }

    /// Returns at most `limit` objects, and a continue token for the rest
    /// (read it with [`Api::list_page`]). A paginated list is always read
    /// from the API server, never from the host's caches, because its
    /// continue token names a snapshot there. A limit of 0 means none, as
    /// for the API server.
    ///
    /// ```
    /// let params = leasehold_sdk::api::ListParams::default().limit(100);
    /// assert_eq!(params.limit, Some(100));
    /// ```
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Reads the page after the one that answered `token` (its
    /// [`Page::continue_token`]); the other parameters must stay as they
    /// were for that page.
    ///
    /// ```
    /// let params = leasehold_sdk::api::ListParams::default().limit(100).continue_token("abc");
    /// assert_eq!(params.continue_token.as_deref(), Some("abc"));
    /// ```
    pub fn continue_token(mut self, token: impl Into<String>) -> Self {
        self.continue_token = Some(token.into());
        self
    }
}

/// One page of a paginated list: what [`Api::list_page`] returns.
///
/// ```
/// use leasehold_sdk::api::Page;
/// use k8s_openapi::api::core::v1::ConfigMap;
/// let last = Page::<ConfigMap> { items: vec![], continue_token: None };
/// assert!(last.is_last());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Page<K> {
    /// The page's objects.
    pub items: Vec<K>,
    /// The List's `metadata.continue`: pass it to
    /// [`ListParams::continue_token`] for the next page; `None` on the
    /// last page.
    pub continue_token: Option<String>,
}

impl<K> Page<K> {
    /// Whether no page follows this one.
    ///
    /// ```
    /// use leasehold_sdk::api::Page;
    /// let more = Page::<()> { items: vec![], continue_token: Some("next".into()) };
    /// assert!(!more.is_last());
    /// ```
    pub fn is_last(&self) -> bool {
        self.continue_token.is_none()
    }
}

/// A change to an object, for [`Api::patch`]; the API server applies it to
/// the object as stored, in one step.
///
/// ```
/// use leasehold_sdk::api::Patch;
/// use leasehold_sdk::json_patch;
///
/// // Merge patch (RFC 7386): objects merge, `null` removes.
/// let unlabel = Patch::Merge(serde_json::json!({ "metadata": { "labels": { "tier": null } } }));
/// // JSON patch (RFC 6902): operations in order; a failed `test` fails the
/// // whole patch with 422, which makes it a compare-and-swap.
/// let scale: json_patch::Patch = serde_json::from_value(serde_json::json!([
///     { "op": "test", "path": "/spec/replicas", "value": 1 },
///     { "op": "replace", "path": "/spec/replicas", "value": 2 },
/// ])).unwrap();
/// let scale = Patch::Json(scale);
/// # let _ = (unlabel, scale);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// A JSON merge patch (RFC 7386), for example
    /// `{"data": {"mode": "fast", "old": null}}`. Lists are replaced
    /// whole; use server-side apply ([`Api::apply`]) to own fields.
    Merge(Value),
    /// A JSON patch (RFC 6902): a list of operations (`add`, `remove`,
    /// `replace`, `move`, `copy`, `test`).
    Json(json_patch::Patch),
}

/// A field selector every object matches.
const EVERY_NAME: &str = "metadata.name!=";

fn and(existing: Option<String>, selector: &str) -> String {
    match existing {
        Some(existing) if !existing.is_empty() => format!("{existing},{selector}"),
        _ => selector.to_owned(),
    }
}

/// How [`Api::apply`] makes a server-side apply call.
///
/// ```
/// use leasehold_sdk::api::ApplyParams;
/// let params = ApplyParams::new("configmap-mirror").force();
/// assert!(params.force);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyParams {
    /// The field manager that owns the applied fields; a controller's name
    /// is the usual choice.
    pub field_manager: String,
    /// Take fields that another manager owns instead of failing with 409.
    pub force: bool,
}

impl ApplyParams {
    /// Applies as `field_manager`, without forcing.
    ///
    /// ```
    /// let params = leasehold_sdk::api::ApplyParams::new("configmap-mirror");
    /// assert_eq!(params.field_manager, "configmap-mirror");
    /// ```
    pub fn new(field_manager: impl Into<String>) -> Self {
        Self {
            field_manager: field_manager.into(),
            force: false,
        }
    }

    /// Takes ownership of conflicting fields; what a controller that is the
    /// only writer of its objects usually wants.
    ///
    /// ```
    /// assert!(leasehold_sdk::api::ApplyParams::new("me").force().force);
    /// ```
    pub fn force(mut self) -> Self {
        self.force = true;
        self
    }
}

/// A typed handle on one kind of object, in one namespace or in all of them.
///
/// Creating an `Api` is free: it holds only the namespace.
///
/// ```no_run
/// use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
/// use leasehold_sdk::api::Api;
///
/// # fn example() -> Result<(), leasehold_sdk::api::Error> {
/// let in_default = Api::<ConfigMap>::namespaced("default");
/// let everywhere = Api::<ConfigMap>::all();
/// let namespaces = Api::<Namespace>::all();
/// let missing = in_default.get("does-not-exist")?;
/// assert!(missing.is_none());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Api<K> {
    namespace: Option<String>,
    // `fn() -> K` keeps `Api<K>` Send + Sync whatever K is: it holds no K.
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Self {
            namespace: self.namespace.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Object<Scope = NamespaceResourceScope>> Api<K> {
    /// Objects of a namespaced kind in one namespace.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// let api = leasehold_sdk::api::Api::<ConfigMap>::namespaced("default");
    /// assert_eq!(api.namespace(), Some("default"));
    /// ```
    pub fn namespaced(namespace: &str) -> Self {
        Self {
            namespace: Some(namespace.to_owned()),
            kind: PhantomData,
        }
    }
}

impl<K: Object> Api<K> {
    /// Objects of a cluster-scoped kind, or of a namespaced kind across every
    /// namespace (for `list`; single-object calls need a namespace).
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::Namespace;
    /// assert_eq!(leasehold_sdk::api::Api::<Namespace>::all().namespace(), None);
    /// ```
    pub fn all() -> Self {
        Self {
            namespace: None,
            kind: PhantomData,
        }
    }

    /// The namespace this handle addresses, if any.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// assert_eq!(leasehold_sdk::api::Api::<ConfigMap>::namespaced("a").namespace(), Some("a"));
    /// ```
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Reads one object; `Ok(None)` when it does not exist. For a kind the
    /// plugin watches, the host answers from its watch cache once that
    /// shows the plugin's own writes (see the crate's README).
    ///
    /// ```no_run
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// # fn example() -> Result<(), leasehold_sdk::api::Error> {
    /// let settings = leasehold_sdk::api::Api::<ConfigMap>::namespaced("default").get("settings")?;
    /// # Ok(()) }
    /// ```
    pub fn get(&self, name: &str) -> Result<Option<K>> {
        let found = host::with(|host| host.get(&TypeMeta::of::<K>(), &self.reference(name)))?;
        found.map(|json| decode(&json)).transpose()
    }

    /// Reads one object from the API server itself, never from the host's
    /// watch caches: what the API server holds now, even where a cache
    /// has not caught up with another writer. Costs a request; `get` is
    /// what a reconcile usually wants.
    ///
    /// ```no_run
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// # fn example() -> Result<(), leasehold_sdk::api::Error> {
    /// let settings = leasehold_sdk::api::Api::<ConfigMap>::namespaced("default").get_live("settings")?;
    /// # Ok(()) }
    /// ```
    pub fn get_live(&self, name: &str) -> Result<Option<K>> {
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        Ok(self.list(&params)?.into_iter().next())
    }

    /// Lists the objects that match `params`: from the host's watch cache
    /// when a watch of the plugin covers them, live with a field selector
    /// (see the crate's README).
    ///
    /// With a [`limit`](ListParams::limit) this is the first page only;
    /// [`Api::list_page`] also returns the token for the next.
    ///
    /// ```no_run
    /// use k8s_openapi::api::core::v1::Namespace;
    /// use leasehold_sdk::api::{Api, ListParams};
    /// # fn example() -> Result<(), leasehold_sdk::api::Error> {
    /// let teams = Api::<Namespace>::all().list(&ListParams::default().labels("team"))?;
    /// # Ok(()) }
    /// ```
    pub fn list(&self, params: &ListParams) -> Result<Vec<K>> {
        Ok(self.list_page(params)?.items)
    }

    /// Lists one page of the objects that match `params`: at most
    /// `params.limit` of them, after the page that `params.continue_token`
    /// ended, with the token of the next page. A paginated list is read
    /// from the API server (the token names a snapshot there), so a
    /// plugin can walk a large list without holding all of it.
    ///
    /// ```no_run
    /// use k8s_openapi::api::core::v1::Pod;
    /// use leasehold_sdk::api::{Api, ListParams};
    /// # fn example() -> Result<(), leasehold_sdk::api::Error> {
    /// let pods = Api::<Pod>::all();
    /// let mut params = ListParams::default().labels("app=web").limit(100);
    /// let mut running = 0;
    /// loop {
    ///     let page = pods.list_page(&params)?;
    ///     running += page.items.iter().filter(|pod| {
    ///         pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    ///     }).count();
    ///     match page.continue_token {
    ///         Some(token) => params = params.continue_token(token),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn list_page(&self, params: &ListParams) -> Result<Page<K>> {
        let json =
            host::with(|host| host.list(&TypeMeta::of::<K>(), self.namespace.as_deref(), params))?;
        decode_list(&json)
    }

    /// Creates `object` and returns it as stored; a 409 means it exists.
    ///
    /// The namespace is this handle's, or else the object's own.
    ///
    /// ```no_run
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    /// # fn example() -> Result<(), leasehold_sdk::api::Error> {
    /// let config_map = ConfigMap {
    ///     metadata: ObjectMeta { name: Some("settings".into()), ..Default::default() },
    ///     ..Default::default()
    /// };
    /// let created = leasehold_sdk::api::Api::namespaced("default").create(&config_map)?;
    /// # Ok(()) }
    /// ```
    pub fn create(&self, object: &K) -> Result<K> {
        let namespace = self
            .namespace
            .clone()
            .or_else(|| object.meta().namespace.clone());
        let json = encode::<K, _>(object)?;
        let stored =
            host::with(|host| host.create(&TypeMeta::of::<K>(), namespace.as_deref(), &json))?;
        decode(&stored)
    }

    /// Replaces the object called `name`; with `metadata.resourceVersion`
    /// set this is a compare-and-swap that fails with 409 on a stale copy.
    ///
    /// ```no_run
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use leasehold_sdk::api::Api;
    /// # fn example() -> Result<(), leasehold_sdk::api::Error> {
    /// let api = Api::<ConfigMap>::namespaced("default");
    /// if let Some(mut settings) = api.get("settings")? {
    ///     settings.data.get_or_insert_default().insert("mode".into(), "fast".into());
    ///     api.replace("settings", &settings)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn replace(&self, name: &str, object: &K) -> Result<K> {
        let json = encode::<K, _>(object)?;
        let stored =
            host::with(|host| host.replace(&TypeMeta::of::<K>(), &self.reference(name), &json))?;
        decode(&stored)
    }

    /// Server-side apply: creates the object or sets the fields `object`
    /// names, owned by the field manager, and returns it as stored.
    ///
    /// `object` may be a typed `K` or any serializable partial object such
    /// as `serde_json::json!({...})`; `apiVersion`, `kind` and
    /// `metadata.name` are filled in when it leaves them out.
    ///
    /// ```no_run
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use leasehold_sdk::api::{Api, ApplyParams};
    /// # fn example() -> Result<(), leasehold_sdk::api::Error> {
    /// let desired = serde_json::json!({ "data": { "mode": "fast" } });
    /// Api::<ConfigMap>::namespaced("default").apply("settings", &desired, &ApplyParams::new("example").force())?;
    /// # Ok(()) }
    /// ```
    pub fn apply<T: Serialize>(&self, name: &str, object: &T, params: &ApplyParams) -> Result<K> {
        let json = apply_body::<K, T>(name, object)?;
        let stored = host::with(|host| {
            host.apply(
                &TypeMeta::of::<K>(),
                &self.reference(name),
                &json,
                &params.field_manager,
                params.force,
            )
        })?;
        decode(&stored)
    }

    /// Patches the object called `name` and returns it as stored.
    ///
    /// A patch the API server cannot parse is a 400, one it cannot apply
    /// (a JSON patch whose `test` fails, or whose path is missing) a 422;
    /// neither is retryable. A missing object is a 404.
    ///
    /// ```no_run
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use leasehold_sdk::api::{Api, Patch};
    /// # fn example() -> Result<(), leasehold_sdk::api::Error> {
    /// let patch = Patch::Merge(serde_json::json!({ "data": { "mode": "fast" } }));
    /// let patched = Api::<ConfigMap>::namespaced("default").patch("settings", &patch)?;
    /// # Ok(()) }
    /// ```
    pub fn patch(&self, name: &str, patch: &Patch) -> Result<K> {
        let stored = match patch {
            Patch::Merge(value) => {
                let text = encode::<K, _>(value)?;
                self.send_patch(name, ObjectPatch::Merge(&text))?
            }
            Patch::Json(operations) => {
                let text = encode::<K, _>(operations)?;
                self.send_patch(name, ObjectPatch::Json(&text))?
            }
        };
        decode(&stored)
    }

    fn send_patch(&self, name: &str, patch: ObjectPatch<'_>) -> Result<String> {
        Ok(host::with(|host| {
            host.patch(&TypeMeta::of::<K>(), &self.reference(name), patch)
        })?)
    }

    /// Deletes the object called `name`; `Ok(false)` when it was already
    /// gone, so cleanups can run twice.
    ///
    /// ```no_run
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// # fn example() -> Result<(), leasehold_sdk::api::Error> {
    /// let deleted = leasehold_sdk::api::Api::<ConfigMap>::namespaced("default").delete("settings")?;
    /// # Ok(()) }
    /// ```
    pub fn delete(&self, name: &str) -> Result<bool> {
        match host::with(|host| host.delete(&TypeMeta::of::<K>(), &self.reference(name))) {
            Ok(()) => Ok(true),
            Err(error) if error.is_not_found() => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Replaces the status subresource with `object`'s status; its
    /// `resourceVersion` makes it a compare-and-swap.
    ///
    /// ```no_run
    /// use k8s_openapi::api::apps::v1::Deployment;
    /// use leasehold_sdk::api::Api;
    /// # fn example() -> Result<(), leasehold_sdk::api::Error> {
    /// let api = Api::<Deployment>::namespaced("default");
    /// if let Some(deployment) = api.get("web")? {
    ///     api.replace_status("web", &deployment)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn replace_status(&self, name: &str, object: &K) -> Result<K> {
        let json = encode::<K, _>(object)?;
        let stored = host::with(|host| {
            host.update_status(
                &TypeMeta::of::<K>(),
                &self.reference(name),
                StatusUpdate::Replace(&json),
            )
        })?;
        decode(&stored)
    }

    /// Applies a JSON merge patch (RFC 7386) to the status subresource, for
    /// example `{"status": {"ready": true}}`.
    ///
    /// ```no_run
    /// use k8s_openapi::api::apps::v1::Deployment;
    /// # fn example() -> Result<(), leasehold_sdk::api::Error> {
    /// let patch = serde_json::json!({ "status": { "observedGeneration": 3 } });
    /// leasehold_sdk::api::Api::<Deployment>::namespaced("default").patch_status("web", &patch)?;
    /// # Ok(()) }
    /// ```
    pub fn patch_status<T: Serialize>(&self, name: &str, patch: &T) -> Result<K> {
        let json = encode::<K, _>(patch)?;
        let stored = host::with(|host| {
            host.update_status(
                &TypeMeta::of::<K>(),
                &self.reference(name),
                StatusUpdate::MergePatch(&json),
            )
        })?;
        decode(&stored)
    }

    fn reference(&self, name: &str) -> ObjectRef {
        ObjectRef {
            namespace: self.namespace.clone(),
            name: name.to_owned(),
        }
    }
}

// === JSON ===

fn encode<K: Object, T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Encode {
        kind: K::kind(&()).into_owned(),
        source,
    })
}

pub(crate) fn decode<K: Object>(json: &str) -> Result<K> {
    serde_json::from_str(json).map_err(|source| Error::Decode {
        kind: K::kind(&()).into_owned(),
        source,
    })
}

/// The part of a List the SDK reads.
#[derive(Deserialize)]
#[serde(bound = "K: DeserializeOwned")]
struct List<K> {
    // `null` and a missing `items` both mean an empty list to the API server.
    #[serde(default = "Vec::new", deserialize_with = "null_as_empty")]
    items: Vec<K>,
    #[serde(default)]
    metadata: ListMeta,
}

/// The part of a List's `metadata` the SDK reads.
#[derive(Default, Deserialize)]
struct ListMeta {
    /// Absent, `null` or empty on the last page.
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

fn null_as_empty<'de, D, K>(deserializer: D) -> std::result::Result<Vec<K>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: DeserializeOwned,
{
    Ok(Option::<Vec<K>>::deserialize(deserializer)?.unwrap_or_default())
}

fn decode_list<K: Object>(json: &str) -> Result<Page<K>> {
    let list: List<K> = serde_json::from_str(json).map_err(|source| Error::Decode {
        kind: format!("{}List", K::kind(&())),
        source,
    })?;
    Ok(Page {
        items: list.items,
        continue_token: list
            .metadata
            .continue_token
            .filter(|token| !token.is_empty()),
    })
}

/// The body of an apply call: `object` with `apiVersion`, `kind` and
/// `metadata.name` filled in when missing, because server-side apply needs
/// all three and a partial `json!` object rarely spells them out.
fn apply_body<K: Object, T: Serialize + ?Sized>(name: &str, object: &T) -> Result<String> {
    let mut value = serde_json::to_value(object).map_err(|source| Error::Encode {
        kind: K::kind(&()).into_owned(),
        source,
    })?;
    if let Value::Object(fields) = &mut value {
        fields
            .entry("apiVersion")
            .or_insert_with(|| K::api_version(&()).into_owned().into());
        fields
            .entry("kind")
            .or_insert_with(|| K::kind(&()).into_owned().into());
        let metadata = fields
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(metadata) = metadata {
            metadata.entry("name").or_insert_with(|| name.into());
        }
    }
    encode::<K, _>(&value)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    use super::*;

    #[test]
    fn label_requirements_add_up_with_commas() {
        let params = ListParams::default()
            .labels("a=b")
            .labels("c")
            .fields("metadata.name=x");
        assert_eq!(params.label_selector.as_deref(), Some("a=b,c"));
        assert_eq!(params.field_selector.as_deref(), Some("metadata.name=x"));
    }

    #[test]
    fn apply_body_fills_in_type_and_name_of_a_partial_object() {
        let body =
            apply_body::<ConfigMap, _>("settings", &json!({ "data": { "a": "1" } })).unwrap();
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings" }, "data": { "a": "1" } })
        );
    }

    #[test]
    fn apply_body_keeps_what_the_object_says() {
        let body = apply_body::<ConfigMap, _>(
            "ignored",
            &json!({ "metadata": { "name": "own", "namespace": "n" } }),
        )
        .unwrap();
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["metadata"], json!({ "name": "own", "namespace": "n" }));
    }

    #[test]
    fn list_items_decode_without_their_own_type_meta() {
        // The API server leaves apiVersion and kind out of list items.
        let json = r#"{"apiVersion":"v1","kind":"ConfigMapList","metadata":{},"items":[{"metadata":{"name":"a"}}]}"#;
        let page = decode_list::<ConfigMap>(json).unwrap();
        assert_eq!(page.items[0].metadata.name.as_deref(), Some("a"));
        assert!(page.is_last());
    }

    #[test]
    fn a_list_with_null_items_is_empty() {
        assert!(
            decode_list::<ConfigMap>(r#"{"items":null}"#)
                .unwrap()
                .items
                .is_empty()
        );
        assert!(decode_list::<ConfigMap>(r#"{}"#).unwrap().items.is_empty());
    }

    #[test]
    fn a_page_carries_the_lists_continue_token_and_an_empty_one_ends_the_list() {
        let more = r#"{"metadata":{"continue":"next"},"items":[]}"#;
        assert_eq!(
            decode_list::<ConfigMap>(more)
                .unwrap()
                .continue_token
                .as_deref(),
            Some("next")
        );
        for last in [
            r#"{"metadata":{"continue":""},"items":[]}"#,
            r#"{"metadata":{"continue":null},"items":[]}"#,
            r#"{"metadata":{},"items":[]}"#,
        ] {
            assert!(decode_list::<ConfigMap>(last).unwrap().is_last(), "{last}");
        }
    }

    #[test]
    fn an_object_of_another_kind_is_a_decode_error() {
        let error = decode::<ConfigMap>(r#"{"apiVersion":"v1","kind":"Secret","metadata":{}}"#)
            .unwrap_err();
        assert!(matches!(error, Error::Decode { ref kind, .. } if kind == "ConfigMap"));
        assert!(!error.is_retryable());
    }

    #[test]
    fn only_malformed_requests_are_not_retryable() {
        for code in [0, 403, 404, 409, 429, 500, 503] {
            assert!(ApiError::new(code, "", "").is_retryable(), "{code}");
        }
        for code in [400, 422] {
            assert!(!ApiError::new(code, "", "").is_retryable(), "{code}");
        }
    }
}
