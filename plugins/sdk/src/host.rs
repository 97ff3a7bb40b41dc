//! The boundary to the host.
//!
//! Every call the SDK makes outside the component goes through [`Host`]. In
//! a plugin that is [`Wit`], the WIT imports; in a native test it is the
//! in-memory cluster of [`crate::testing`], installed for the current thread.
//! Nothing else in the SDK touches the generated bindings' imports, so the
//! rest of the crate is plain, testable Rust.

use std::cell::RefCell;
use std::rc::Rc;

use crate::__private::bindings::leasehold::controller as wit;
use crate::api::{ApiError, ListParams};
use crate::event::EventType;
use crate::log::Level;
use crate::object::{ObjectRef, TypeMeta};

/// A change to a status subresource, as the `update-status` import takes it.
#[derive(Debug, Clone, Copy)]
pub enum StatusUpdate<'a> {
    /// Replace the whole status (the object's JSON).
    Replace(&'a str),
    /// A JSON merge patch.
    MergePatch(&'a str),
}

/// A change to an object, as the `patch` import takes it: the patch's
/// text, which the host (not the SDK) parses, so that a malformed one is
/// the API server's 400 and not a panic in the plugin.
#[derive(Debug, Clone, Copy)]
pub enum ObjectPatch<'a> {
    /// A JSON merge patch (RFC 7386).
    Merge(&'a str),
    /// A JSON patch (RFC 6902): a list of operations.
    Json(&'a str),
}

/// Everything a plugin can ask of the host, in the SDK's own types: the WIT
/// imports in a plugin, the in-memory cluster in tests
/// ([`crate::testing::HostCalls`], which a host that runs a compiled
/// plugin can answer its imports with).
pub trait Host {
    /// Reads one object; `None` when it does not exist.
    ///
    /// ```
    /// # use leasehold_sdk::testing::Host;
    /// # use leasehold_sdk::{ObjectRef, TypeMeta};
    /// let calls = leasehold_sdk::testing::FakeCluster::new().host_calls();
    /// let namespace = TypeMeta { api_version: "v1".into(), kind: "Namespace".into() };
    /// assert_eq!(calls.get(&namespace, &ObjectRef::cluster("missing")).unwrap(), None);
    /// ```
    fn get(&self, type_meta: &TypeMeta, object: &ObjectRef) -> Result<Option<String>, ApiError>;
    /// Lists objects in `namespace` (every namespace when `None`) as a
    /// List's JSON; selectors use Kubernetes' syntax. With a `limit` the
    /// List is one page, and its `metadata.continue` names the next.
    ///
    /// ```
    /// # use leasehold_sdk::testing::Host;
    /// # use leasehold_sdk::{TypeMeta, api::ListParams};
    /// let calls = leasehold_sdk::testing::FakeCluster::new().host_calls();
    /// let pods = TypeMeta { api_version: "v1".into(), kind: "Pod".into() };
    /// let list = calls.list(&pods, Some("default"), &ListParams::default().labels("app=web")).unwrap();
    /// assert!(list.contains("\"items\":[]"));
    /// ```
    fn list(
        &self,
        type_meta: &TypeMeta,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<String, ApiError>;
    /// Creates an object and returns it as stored.
    ///
    /// ```
    /// # use leasehold_sdk::testing::Host;
    /// # use leasehold_sdk::TypeMeta;
    /// let calls = leasehold_sdk::testing::FakeCluster::new().host_calls();
    /// let config_map = TypeMeta { api_version: "v1".into(), kind: "ConfigMap".into() };
    /// let stored = calls.create(&config_map, Some("default"), r#"{"metadata":{"name":"a"}}"#).unwrap();
    /// assert!(stored.contains("\"uid\""));
    /// ```
    fn create(
        &self,
        type_meta: &TypeMeta,
        namespace: Option<&str>,
        object: &str,
    ) -> Result<String, ApiError>;
    /// Replaces an object; a stale `resourceVersion` is a 409.
    ///
    /// ```
    /// # use leasehold_sdk::testing::Host;
    /// # use leasehold_sdk::{ObjectRef, TypeMeta};
    /// let calls = leasehold_sdk::testing::FakeCluster::new().host_calls();
    /// let config_map = TypeMeta { api_version: "v1".into(), kind: "ConfigMap".into() };
    /// let missing = calls.replace(&config_map, &ObjectRef::namespaced("default", "a"), "{}");
    /// assert_eq!(missing.unwrap_err().code, 404);
    /// ```
    fn replace(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        object: &str,
    ) -> Result<String, ApiError>;
    /// Server-side apply as `field_manager`; returns the object as stored.
    ///
    /// ```
    /// # use leasehold_sdk::testing::Host;
    /// # use leasehold_sdk::{ObjectRef, TypeMeta};
    /// let calls = leasehold_sdk::testing::FakeCluster::new().host_calls();
    /// let config_map = TypeMeta { api_version: "v1".into(), kind: "ConfigMap".into() };
    /// let target = ObjectRef::namespaced("default", "a");
    /// let applied = calls.apply(&config_map, &target, r#"{"metadata":{"name":"a"},"data":{"k":"v"}}"#, "me", false).unwrap();
    /// assert!(applied.contains("\"k\":\"v\""));
    /// ```
    fn apply(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        object: &str,
        field_manager: &str,
        force: bool,
    ) -> Result<String, ApiError>;
    /// Patches an object and returns it as stored; a patch that does not
    /// parse is a 400, one that does not apply (a failed `test`) a 422.
    ///
    /// ```
    /// # use leasehold_sdk::testing::{Host, ObjectPatch};
    /// # use leasehold_sdk::{ObjectRef, TypeMeta};
    /// let calls = leasehold_sdk::testing::FakeCluster::new().host_calls();
    /// let config_map = TypeMeta { api_version: "v1".into(), kind: "ConfigMap".into() };
    /// let target = ObjectRef::namespaced("default", "a");
    /// let missing = calls.patch(&config_map, &target, ObjectPatch::Merge("{}"));
    /// assert_eq!(missing.unwrap_err().code, 404);
    /// ```
    fn patch(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        patch: ObjectPatch<'_>,
    ) -> Result<String, ApiError>;
    /// Deletes an object (it stays, marked, while it has finalizers).
    ///
    /// ```
    /// # use leasehold_sdk::testing::Host;
    /// # use leasehold_sdk::{ObjectRef, TypeMeta};
    /// let calls = leasehold_sdk::testing::FakeCluster::new().host_calls();
    /// let config_map = TypeMeta { api_version: "v1".into(), kind: "ConfigMap".into() };
    /// let missing = calls.delete(&config_map, &ObjectRef::namespaced("default", "a"));
    /// assert_eq!(missing.unwrap_err().reason, "NotFound");
    /// ```
    fn delete(&self, type_meta: &TypeMeta, target: &ObjectRef) -> Result<(), ApiError>;
    /// Changes an object's status subresource.
    ///
    /// ```
    /// # use leasehold_sdk::testing::Host;
    /// # use leasehold_sdk::{ObjectRef, TypeMeta, testing::StatusUpdate};
    /// let calls = leasehold_sdk::testing::FakeCluster::new().host_calls();
    /// let config_map = TypeMeta { api_version: "v1".into(), kind: "ConfigMap".into() };
    /// let target = ObjectRef::namespaced("default", "a");
    /// let missing = calls.update_status(&config_map, &target, StatusUpdate::MergePatch("{}"));
    /// assert_eq!(missing.unwrap_err().code, 404);
    /// ```
    fn update_status(
        &self,
        type_meta: &TypeMeta,
        target: &ObjectRef,
        update: StatusUpdate<'_>,
    ) -> Result<String, ApiError>;
    /// Records an Event about an object (see [`FakeCluster::events`]).
    ///
    /// ```
    /// # use leasehold_sdk::testing::Host;
    /// # use leasehold_sdk::{ObjectRef, TypeMeta, event::EventType};
    /// let cluster = leasehold_sdk::testing::FakeCluster::new();
    /// let config_map = TypeMeta { api_version: "v1".into(), kind: "ConfigMap".into() };
    /// let regarding = ObjectRef::namespaced("default", "a");
    /// cluster.host_calls().emit_event(&config_map, &regarding, None, EventType::Normal, "Seen", "seen it").unwrap();
    /// assert_eq!(cluster.events()[0].reason, "Seen");
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn emit_event(
        &self,
        type_meta: &TypeMeta,
        regarding: &ObjectRef,
        uid: Option<&str>,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError>;
    /// Writes a log record (see [`FakeCluster::logs`]); logs are not calls.
    ///
    /// ```
    /// # use leasehold_sdk::testing::Host;
    /// # use leasehold_sdk::log::Level;
    /// let cluster = leasehold_sdk::testing::FakeCluster::new();
    /// cluster.host_calls().log(Level::Info, "hello", &[("answer", "42".to_string())]);
    /// assert_eq!(cluster.logs()[0].message, "hello");
    /// ```
    fn log(&self, level: Level, message: &str, fields: &[(&str, String)]);
    /// The plugin's configuration as JSON text.
    ///
    /// ```
    /// # use leasehold_sdk::testing::Host;
    /// let cluster = leasehold_sdk::testing::FakeCluster::new().with_config(&serde_json::json!({"a": 1}));
    /// assert_eq!(cluster.host_calls().config(), r#"{"a":1}"#);
    /// ```
    fn config(&self) -> String;
}

thread_local! {
    /// The host that replaces the WIT imports on this thread, if any. A
    /// thread-local (not a global) so parallel tests each get their own.
    static INSTALLED: RefCell<Option<Rc<dyn Host>>> = const { RefCell::new(None) };
}

/// Runs `f` with the current host: the installed one, or the WIT imports.
pub(crate) fn with<R>(f: impl FnOnce(&dyn Host) -> R) -> R {
    // Clone the Rc out first so that `f` may itself install or call the host
    // without a second borrow of the cell.
    let installed = INSTALLED.with(|cell| cell.borrow().clone());
    match installed {
        Some(host) => f(&*host),
        None => f(&Wit),
    }
}

/// Routes this thread's host calls to `host` until the guard drops.
pub(crate) fn install(host: Rc<dyn Host>) -> Installed {
    let previous = INSTALLED.with(|cell| cell.replace(Some(host)));
    Installed { previous }
}

/// Restores the previous host when dropped.
pub(crate) struct Installed {
    previous: Option<Rc<dyn Host>>,
}

impl std::fmt::Debug for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installed").finish_non_exhaustive()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let previous = self.previous.take();
        INSTALLED.with(|cell| *cell.borrow_mut() = previous);
    }
}

// === impl Wit ===

/// The host as the component model gives it: the WIT imports.
struct Wit;

fn type_meta(type_meta: &TypeMeta) -> wit::types::TypeMeta {
    wit::types::TypeMeta {
        api_version: type_meta.api_version.clone(),
        kind: type_meta.kind.clone(),
    }
}

fn object_ref(object: &ObjectRef) -> wit::types::ObjectRef {
    wit::types::ObjectRef {
        namespace: object.namespace.clone(),
        name: object.name.clone(),
    }
}

impl From<wit::types::ApiError> for ApiError {
    fn from(error: wit::types::ApiError) -> Self {
        Self {
            code: error.code,
            reason: error.reason,
            message: error.message,
        }
    }
}

impl Host for Wit {
    fn get(&self, meta: &TypeMeta, object: &ObjectRef) -> Result<Option<String>, ApiError> {
        Ok(wit::kubernetes::get(&type_meta(meta), &object_ref(object))?)
    }

    fn list(
        &self,
        meta: &TypeMeta,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<String, ApiError> {
        let params = wit::kubernetes::ListParams {
            namespace: namespace.map(str::to_owned),
            label_selector: params.label_selector.clone(),
            field_selector: params.field_selector.clone(),
            limit: params.limit,
            continue_token: params.continue_token.clone(),
        };
        Ok(wit::kubernetes::list(&type_meta(meta), &params)?)
    }

    fn create(
        &self,
        meta: &TypeMeta,
        namespace: Option<&str>,
        object: &str,
    ) -> Result<String, ApiError> {
        Ok(wit::kubernetes::create(
            &type_meta(meta),
            namespace,
            object,
        )?)
    }

    fn replace(
        &self,
        meta: &TypeMeta,
        target: &ObjectRef,
        object: &str,
    ) -> Result<String, ApiError> {
        Ok(wit::kubernetes::replace(
            &type_meta(meta),
            &object_ref(target),
            object,
        )?)
    }

    fn apply(
        &self,
        meta: &TypeMeta,
        target: &ObjectRef,
        object: &str,
        field_manager: &str,
        force: bool,
    ) -> Result<String, ApiError> {
        let params = wit::kubernetes::ApplyParams {
            field_manager: field_manager.to_owned(),
            force,
        };
        Ok(wit::kubernetes::apply(
            &type_meta(meta),
            &object_ref(target),
            object,
            &params,
        )?)
    }

    fn patch(
        &self,
        meta: &TypeMeta,
        target: &ObjectRef,
        patch: ObjectPatch<'_>,
    ) -> Result<String, ApiError> {
        let patch = match patch {
            ObjectPatch::Merge(text) => wit::kubernetes::ObjectPatch::Merge(text.to_owned()),
            ObjectPatch::Json(text) => wit::kubernetes::ObjectPatch::Json(text.to_owned()),
        };
        Ok(wit::kubernetes::patch(
            &type_meta(meta),
            &object_ref(target),
            &patch,
        )?)
    }

    fn delete(&self, meta: &TypeMeta, target: &ObjectRef) -> Result<(), ApiError> {
        Ok(wit::kubernetes::delete(
            &type_meta(meta),
            &object_ref(target),
        )?)
    }

    fn update_status(
        &self,
        meta: &TypeMeta,
        target: &ObjectRef,
        update: StatusUpdate<'_>,
    ) -> Result<String, ApiError> {
        let update = match update {
            StatusUpdate::Replace(object) => {
                wit::kubernetes::StatusUpdate::Replace(object.to_owned())
            }
            StatusUpdate::MergePatch(patch) => {
                wit::kubernetes::StatusUpdate::MergePatch(patch.to_owned())
            }
        };
        Ok(wit::kubernetes::update_status(
            &type_meta(meta),
            &object_ref(target),
            &update,
        )?)
    }

    fn emit_event(
        &self,
        meta: &TypeMeta,
        regarding: &ObjectRef,
        uid: Option<&str>,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let regarding = wit::kubernetes::InvolvedObject {
            type_meta: type_meta(meta),
            object: object_ref(regarding),
            uid: uid.map(str::to_owned),
        };
        let event = wit::kubernetes::Event {
            event_type: match event_type {
                EventType::Normal => wit::kubernetes::EventType::Normal,
                EventType::Warning => wit::kubernetes::EventType::Warning,
            },
            reason: reason.to_owned(),
            message: message.to_owned(),
        };
        Ok(wit::kubernetes::emit_event(&regarding, &event)?)
    }

    fn log(&self, level: Level, message: &str, fields: &[(&str, String)]) {
        let level = match level {
            Level::Trace => wit::log::Level::Trace,
            Level::Debug => wit::log::Level::Debug,
            Level::Info => wit::log::Level::Info,
            Level::Warn => wit::log::Level::Warn,
            Level::Error => wit::log::Level::Error,
        };
        let fields: Vec<_> = fields
            .iter()
            .map(|(key, value)| wit::log::Field {
                key: (*key).to_owned(),
                value: value.clone(),
            })
            .collect();
        wit::log::log(level, message, &fields);
    }

    fn config(&self) -> String {
        wit::config::get_config()
    }
}
