//! The host's side of the contract: the `kubernetes`, `log` and `config`
//! imports.
//!
//! A [`Backend`] answers a plugin's Kubernetes calls and logs. On a leader
//! that is a [`KubeBridge`], the API server as the plugin's own
//! ServiceAccount, which stops answering the moment the term ends; in a
//! plugin author's unit test it is an in-memory cluster (the
//! `leasehold-harness` crate). Either way the component runs on this same
//! runtime, with the same limits.
//!
//! Every failure a plugin can cause or meet comes back as an `api-error`
//! value (403 from RBAC, 404, malformed JSON, a kind the cluster does not
//! serve, no longer leading); traps are left for misbehaving guests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::discovery::{ApiCapabilities, Scope};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use serde_json::Value;
use wasmtime::component::{HasSelf, Linker};

use super::HostState;
use super::bindings::Controller;
use super::bindings::leasehold::controller::config;
use super::bindings::leasehold::controller::kubernetes::{
    self, ApplyParams, Event as WitEvent, EventType as WitEventType, InvolvedObject,
    ListParams as WitListParams, StatusUpdate,
};
use super::bindings::leasehold::controller::log::{self, Field, Level};
use super::bindings::leasehold::controller::types::{self, ApiError, ObjectRef, TypeMeta};
use crate::election::LeaderGuard;

/// What a backend call resolves to: the import's result.
pub type BackendFuture<'a, T> = BoxFuture<'a, Result<T, ApiError>>;

/// Answers a plugin's `kubernetes` and `log` imports.
///
/// Objects cross as JSON text, exactly as the WIT contract carries them;
/// every failure is an [`ApiError`] value for the plugin to handle.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Reads one object; `None` when it does not exist.
    fn get(&self, type_meta: TypeMeta, object: ObjectRef) -> BackendFuture<'_, Option<String>>;
    /// Lists objects; the List's JSON.
    fn list(&self, type_meta: TypeMeta, params: WitListParams) -> BackendFuture<'_, String>;
    /// Creates an object; returns it as stored.
    fn create(
        &self,
        type_meta: TypeMeta,
        namespace: Option<String>,
        object: String,
    ) -> BackendFuture<'_, String>;
    /// Replaces an object; returns it as stored.
    fn replace(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
    ) -> BackendFuture<'_, String>;
    /// Server-side apply; returns the object as stored.
    fn apply(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
        params: ApplyParams,
    ) -> BackendFuture<'_, String>;
    /// Deletes an object.
    fn delete(&self, type_meta: TypeMeta, target: ObjectRef) -> BackendFuture<'_, ()>;
    /// Changes the status subresource; returns the object as stored.
    fn update_status(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        update: StatusUpdate,
    ) -> BackendFuture<'_, String>;
    /// Records an Event about an object.
    fn emit_event(&self, regarding: InvolvedObject, event: WitEvent) -> BackendFuture<'_, ()>;
    /// Writes one log record of the plugin, made while reconciling `object`.
    fn log(&self, level: Level, message: &str, fields: &[Field], object: Option<&str>);
}

/// Answers one plugin's Kubernetes calls with a client that impersonates
/// the plugin's ServiceAccount, so the API server's RBAC bounds the plugin.
pub struct KubeBridge {
    plugin: String,
    client: Client,
    recorder: Recorder,
    /// (apiVersion, kind) → resource, learnt through discovery once.
    resources: Mutex<HashMap<(String, String), (ApiResource, ApiCapabilities)>>,
}

impl std::fmt::Debug for KubeBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBridge")
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

impl KubeBridge {
    /// A bridge for `plugin` that acts as `system:serviceaccount:<namespace>:<account>`.
    pub fn impersonating(
        base: &kube::Config,
        plugin: &str,
        namespace: &str,
        account: &str,
        replica: &str,
    ) -> Result<Self, kube::Error> {
        let mut config = base.clone();
        // Only the user: the API server then gives the request the groups a
        // real token of that account carries (system:serviceaccounts, the
        // namespace's, system:authenticated). Naming groups too would need
        // `impersonate` on groups, which would let the host claim any group.
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{account}"));
        let client = Client::try_from(config)?;
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: format!("leasehold/{plugin}"),
                instance: Some(replica.to_owned()),
            },
        );
        Ok(Self {
            plugin: plugin.to_owned(),
            client,
            recorder,
            resources: Mutex::default(),
        })
    }

    /// The client this plugin acts through (also used for its watches).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The REST resource behind a type, from discovery (cached).
    pub async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities), ApiError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self
            .resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|error| {
                let message = format!("cannot resolve {api_version} {kind}: {error}");
                match error {
                    // The API server refused to answer (403 included).
                    kube::Error::Api(status) => ApiError {
                        code: status.code,
                        reason: status.reason,
                        message,
                    },
                    _ => ApiError {
                        code: 0,
                        reason: "UnknownKind".into(),
                        message,
                    },
                }
            })?;
        self.resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, found.clone());
        Ok(found)
    }

    async fn api_for(
        &self,
        type_meta: &TypeMeta,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, ApiError> {
        let (resource, capabilities) = self
            .resource(&type_meta.api_version, &type_meta.kind)
            .await?;
        Ok(match (capabilities.scope, namespace) {
            (Scope::Namespaced, Some(namespace)) => {
                Api::namespaced_with(self.client.clone(), namespace, &resource)
            }
            _ => Api::all_with(self.client.clone(), &resource),
        })
    }
}

/// What a plugin's store needs to answer its imports during one call.
#[derive(Clone, Debug)]
pub struct HostContext {
    /// Answers the plugin's Kubernetes calls and logs.
    pub backend: Arc<dyn Backend>,
    /// The plugin's configuration as JSON text.
    pub config: Arc<str>,
    /// The object being reconciled, for log lines.
    pub object: Option<String>,
}

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    Controller::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

fn api_error(error: kube::Error) -> ApiError {
    match error {
        kube::Error::Api(status) => ApiError {
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        other => ApiError {
            code: 0,
            reason: "ClientError".into(),
            message: other.to_string(),
        },
    }
}

fn bad_request(what: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError {
        code: 0,
        reason: "BadRequest".into(),
        message: format!("{what}: {error}"),
    }
}

fn to_json(object: &DynamicObject) -> Result<String, ApiError> {
    serde_json::to_string(object).map_err(|error| bad_request("cannot encode object", error))
}

/// The calls, made as the plugin's ServiceAccount.
impl KubeBridge {
    pub async fn get(
        &self,
        type_meta: TypeMeta,
        object: ObjectRef,
    ) -> Result<Option<String>, ApiError> {
        let api = self
            .api_for(&type_meta, object.namespace.as_deref())
            .await?;
        match api.get_opt(&object.name).await.map_err(api_error)? {
            Some(found) => Ok(Some(to_json(&found)?)),
            None => Ok(None),
        }
    }

    pub async fn list(
        &self,
        type_meta: TypeMeta,
        params: WitListParams,
    ) -> Result<String, ApiError> {
        let api = self
            .api_for(&type_meta, params.namespace.as_deref())
            .await?;
        let mut list_params = ListParams::default();
        if let Some(labels) = &params.label_selector {
            list_params = list_params.labels(labels);
        }
        if let Some(fields) = &params.field_selector {
            list_params = list_params.fields(fields);
        }
        let list = api.list(&list_params).await.map_err(api_error)?;
        let items: Vec<Value> = list
            .items
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()
            .map_err(|error| bad_request("cannot encode list", error))?;
        Ok(serde_json::json!({
            "apiVersion": "v1",
            "kind": format!("{}List", type_meta.kind),
            "metadata": {"resourceVersion": list.metadata.resource_version},
            "items": items,
        })
        .to_string())
    }

    pub async fn create(
        &self,
        type_meta: TypeMeta,
        namespace: Option<String>,
        object: String,
    ) -> Result<String, ApiError> {
        let parsed = parse(&object)?;
        let api = self.api_for(&type_meta, namespace.as_deref()).await?;
        let created = api
            .create(&PostParams::default(), &parsed)
            .await
            .map_err(api_error)?;
        to_json(&created)
    }

    pub async fn replace(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
    ) -> Result<String, ApiError> {
        let parsed = parse(&object)?;
        let api = self
            .api_for(&type_meta, target.namespace.as_deref())
            .await?;
        let replaced = api
            .replace(&target.name, &PostParams::default(), &parsed)
            .await
            .map_err(api_error)?;
        to_json(&replaced)
    }

    pub async fn apply(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
        params: ApplyParams,
    ) -> Result<String, ApiError> {
        let parsed: Value = serde_json::from_str(&object)
            .map_err(|error| bad_request("object is not JSON", error))?;
        let api = self
            .api_for(&type_meta, target.namespace.as_deref())
            .await?;
        let mut patch_params = PatchParams::apply(&params.field_manager);
        if params.force {
            patch_params = patch_params.force();
        }
        let applied = api
            .patch(&target.name, &patch_params, &Patch::Apply(parsed))
            .await
            .map_err(api_error)?;
        to_json(&applied)
    }

    pub async fn delete(&self, type_meta: TypeMeta, target: ObjectRef) -> Result<(), ApiError> {
        let api = self
            .api_for(&type_meta, target.namespace.as_deref())
            .await?;
        api.delete(&target.name, &DeleteParams::default())
            .await
            .map_err(api_error)?;
        Ok(())
    }

    pub async fn update_status(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        update: StatusUpdate,
    ) -> Result<String, ApiError> {
        let api = self
            .api_for(&type_meta, target.namespace.as_deref())
            .await?;
        let updated = match update {
            StatusUpdate::Replace(object) => {
                let parsed = parse(&object)?;
                api.replace_status(&target.name, &PostParams::default(), &parsed)
                    .await
            }
            StatusUpdate::MergePatch(patch) => {
                let parsed: Value = serde_json::from_str(&patch)
                    .map_err(|error| bad_request("merge patch is not JSON", error))?;
                api.patch_status(&target.name, &PatchParams::default(), &Patch::Merge(parsed))
                    .await
            }
        };
        to_json(&updated.map_err(api_error)?)
    }

    pub async fn emit_event(
        &self,
        regarding: InvolvedObject,
        event: WitEvent,
    ) -> Result<(), ApiError> {
        let reference = ObjectReference {
            api_version: Some(regarding.type_meta.api_version),
            kind: Some(regarding.type_meta.kind),
            namespace: regarding.object.namespace,
            name: Some(regarding.object.name),
            uid: regarding.uid,
            ..ObjectReference::default()
        };
        let event = Event {
            type_: match event.event_type {
                WitEventType::Normal => EventType::Normal,
                WitEventType::Warning => EventType::Warning,
            },
            reason: event.reason,
            note: Some(event.message),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &reference)
            .await
            .map_err(api_error)
    }
}

/// A [`KubeBridge`] that answers only while this replica leads: every call
/// checks the term first, so a replica that stopped leading makes none.
#[derive(Debug)]
struct WhileLeading {
    bridge: Arc<KubeBridge>,
    guard: LeaderGuard,
}

impl KubeBridge {
    /// This bridge as a plugin's [`Backend`] for the term `guard` stands for.
    pub fn while_leading(self: &Arc<Self>, guard: LeaderGuard) -> Arc<dyn Backend> {
        Arc::new(WhileLeading {
            bridge: self.clone(),
            guard,
        })
    }
}

impl WhileLeading {
    fn check(&self) -> Result<&KubeBridge, ApiError> {
        self.guard.check().map_err(|not_leader| ApiError {
            code: 0,
            reason: "NotLeader".into(),
            message: not_leader.to_string(),
        })?;
        Ok(&self.bridge)
    }
}

impl Backend for WhileLeading {
    fn get(&self, type_meta: TypeMeta, object: ObjectRef) -> BackendFuture<'_, Option<String>> {
        Box::pin(async move { self.check()?.get(type_meta, object).await })
    }

    fn list(&self, type_meta: TypeMeta, params: WitListParams) -> BackendFuture<'_, String> {
        Box::pin(async move { self.check()?.list(type_meta, params).await })
    }

    fn create(
        &self,
        type_meta: TypeMeta,
        namespace: Option<String>,
        object: String,
    ) -> BackendFuture<'_, String> {
        Box::pin(async move { self.check()?.create(type_meta, namespace, object).await })
    }

    fn replace(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
    ) -> BackendFuture<'_, String> {
        Box::pin(async move { self.check()?.replace(type_meta, target, object).await })
    }

    fn apply(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
        params: ApplyParams,
    ) -> BackendFuture<'_, String> {
        Box::pin(async move { self.check()?.apply(type_meta, target, object, params).await })
    }

    fn delete(&self, type_meta: TypeMeta, target: ObjectRef) -> BackendFuture<'_, ()> {
        Box::pin(async move { self.check()?.delete(type_meta, target).await })
    }

    fn update_status(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        update: StatusUpdate,
    ) -> BackendFuture<'_, String> {
        Box::pin(async move { self.check()?.update_status(type_meta, target, update).await })
    }

    fn emit_event(&self, regarding: InvolvedObject, event: WitEvent) -> BackendFuture<'_, ()> {
        Box::pin(async move { self.check()?.emit_event(regarding, event).await })
    }

    fn log(&self, level: Level, message: &str, fields: &[Field], object: Option<&str>) {
        let plugin = self.bridge.plugin.as_str();
        let object = object.unwrap_or_default();
        let fields: String = fields
            .iter()
            .map(|field| format!("{}={}", field.key, field.value))
            .collect::<Vec<_>>()
            .join(" ");
        match level {
            Level::Trace => tracing::trace!(plugin, object, fields, "{message}"),
            Level::Debug => tracing::debug!(plugin, object, fields, "{message}"),
            Level::Info => tracing::info!(plugin, object, fields, "{message}"),
            Level::Warn => tracing::warn!(plugin, object, fields, "{message}"),
            Level::Error => tracing::error!(plugin, object, fields, "{message}"),
        }
    }
}

fn parse(object: &str) -> Result<DynamicObject, ApiError> {
    serde_json::from_str(object)
        .map_err(|error| bad_request("object is not a Kubernetes object in JSON", error))
}

impl types::Host for HostState {}

impl kubernetes::Host for HostState {
    async fn get(
        &mut self,
        type_meta: TypeMeta,
        object: ObjectRef,
    ) -> wasmtime::Result<Result<Option<String>, ApiError>> {
        Ok(self.context.backend.get(type_meta, object).await)
    }

    async fn list(
        &mut self,
        type_meta: TypeMeta,
        params: WitListParams,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        Ok(self.context.backend.list(type_meta, params).await)
    }

    async fn create(
        &mut self,
        type_meta: TypeMeta,
        namespace: Option<String>,
        object: String,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        Ok(self
            .context
            .backend
            .create(type_meta, namespace, object)
            .await)
    }

    async fn replace(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        Ok(self
            .context
            .backend
            .replace(type_meta, target, object)
            .await)
    }

    async fn apply(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
        params: ApplyParams,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        Ok(self
            .context
            .backend
            .apply(type_meta, target, object, params)
            .await)
    }

    async fn delete(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
    ) -> wasmtime::Result<Result<(), ApiError>> {
        Ok(self.context.backend.delete(type_meta, target).await)
    }

    async fn update_status(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
        update: StatusUpdate,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        Ok(self
            .context
            .backend
            .update_status(type_meta, target, update)
            .await)
    }

    async fn emit_event(
        &mut self,
        regarding: InvolvedObject,
        event: WitEvent,
    ) -> wasmtime::Result<Result<(), ApiError>> {
        Ok(self.context.backend.emit_event(regarding, event).await)
    }
}

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<Field>,
    ) -> wasmtime::Result<()> {
        let context = &self.context;
        context
            .backend
            .log(level, &message, &fields, context.object.as_deref());
        Ok(())
    }
}

impl config::Host for HostState {
    async fn get_config(&mut self) -> wasmtime::Result<String> {
        Ok(self.context.config.to_string())
    }
}
