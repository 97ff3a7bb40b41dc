//! The bridge from a plugin's imports to the API server: every call made as
//! the plugin's own ServiceAccount (impersonation), so Kubernetes RBAC bounds
//! what the plugin can touch, through a client fenced to the term it was
//! made in ([`crate::election::fence`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::client::ClientBuilder;
use kube::discovery::{ApiCapabilities, Scope};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use serde_json::Value;

use super::cache::{Caches, Kind};
use super::throttle::{Accounting, Throttle};
use crate::election::NotLeader;
use crate::election::fence::{self, Fence};
use crate::plugins::{Budget, ServiceAccount};
use crate::runtime::contract::{
    ApiError, ApplyParams, Event as WitEvent, EventType as WitEventType, Field, InvolvedObject,
    Level, ListParams as WitListParams, ObjectPatch, ObjectRef, StatusUpdate, TypeMeta,
};
use crate::runtime::{Backend, BackendFuture, cut};

/// A list is read in pages of this many objects...
const LIST_PAGE: u32 = 500;
/// ...and refused once its objects pass this many bytes of JSON: the host
/// never holds an unbounded list for a plugin.
pub const MAX_LIST_BYTES: usize = 16 << 20;
/// Event notes are cut here (the events.k8s.io limit is 1 KiB).
const MAX_EVENT_NOTE_BYTES: usize = 1024;

/// Answers one plugin's Kubernetes calls with a client that impersonates
/// the plugin's ServiceAccount, so the API server's RBAC bounds the plugin.
pub struct KubeBridge {
    plugin: String,
    client: Client,
    /// Told of every bound the plugin met (metrics, status).
    accounting: Arc<dyn Accounting>,
    recorder: Recorder,
    /// (apiVersion, kind) → resource, learnt through discovery once.
    resources: Mutex<HashMap<(String, String), (ApiResource, ApiCapabilities)>>,
    /// The stores of the plugin's watches, once its controller has them:
    /// reads they can answer cost no request.
    caches: OnceLock<Caches>,
    /// The client's fence and rate limit, for outbound HTTP, which does not
    /// pass the client but is held to both.
    fence: Fence,
    throttle: Throttle,
}

impl std::fmt::Debug for KubeBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBridge")
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

impl KubeBridge {
    /// A bridge for `plugin` that acts as `system:serviceaccount:<namespace>:<account>`
    /// during the term `fence` stands for, and sends nothing after it (a
    /// fence [carrying the term](Fence::carrying_term) also has the API
    /// server check every request).
    pub fn impersonating(
        base: &kube::Config,
        plugin: &str,
        account: &ServiceAccount,
        replica: &str,
        fence: Fence,
        budget: &Budget,
        accounting: Arc<dyn Accounting>,
    ) -> Result<Self, kube::Error> {
        let config = account.impersonated_by(base);
        let throttle = Throttle::new(budget.qps, budget.burst, accounting.clone());
        let client = ClientBuilder::try_from(config)?
            .with_layer(&fence)
            .with_layer(&throttle)
            .build();
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
            accounting,
            recorder,
            resources: Mutex::default(),
            caches: OnceLock::new(),
            fence,
            throttle,
        })
    }

    /// Answers the plugin's reads from `caches` from now on, where they
    /// can (see [`super::cache`]). Set once per controller.
    pub fn read_from(&self, caches: Caches) {
        if self.caches.set(caches).is_err() {
            tracing::debug!(plugin = %self.plugin, "the bridge already reads from caches");
        }
    }

    /// Remembers a write, for the caches to be read again only once they
    /// show it.
    fn wrote(&self, type_meta: &TypeMeta, object: &DynamicObject) {
        if let Some(caches) = self.caches.get() {
            caches.wrote(kind_of(type_meta), object);
        }
    }

    /// The client this plugin acts through (also used for its watches and
    /// the host's finalizer patches): impersonating, and fenced to the term.
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
                if fence::refused(&error) {
                    return not_leader();
                }
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

/// What a plugin sees when the fence refused its call.
fn not_leader() -> ApiError {
    ApiError {
        code: 0,
        reason: "NotLeader".into(),
        message: NotLeader.to_string(),
    }
}

/// What a plugin sees when a reads-only fence refused its write.
fn reads_only() -> ApiError {
    ApiError {
        code: 405,
        reason: "MethodNotAllowed".into(),
        message: fence::ReadsOnly.to_string(),
    }
}

fn api_error(error: kube::Error) -> ApiError {
    if fence::refused(&error) {
        return not_leader();
    }
    if fence::refused_write(&error) {
        return reads_only();
    }
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

fn kind_of(type_meta: &TypeMeta) -> Kind<'_> {
    Kind {
        api_version: &type_meta.api_version,
        kind: &type_meta.kind,
    }
}

fn to_json(object: &DynamicObject) -> Result<String, ApiError> {
    serde_json::to_string(object).map_err(|error| bad_request("cannot encode object", error))
}

impl KubeBridge {
    /// Refuses a list whose objects pass [`MAX_LIST_BYTES`].
    fn within_list_limit(&self, type_meta: &TypeMeta, bytes: usize) -> Result<(), ApiError> {
        if bytes <= MAX_LIST_BYTES {
            return Ok(());
        }
        let message = format!(
            "the list of {} is over {MAX_LIST_BYTES} bytes; narrow it with a label or field selector",
            type_meta.kind
        );
        self.accounting.limited("ResponseTooLarge", &message);
        Err(ApiError {
            code: 413,
            reason: "ResponseTooLarge".into(),
            message,
        })
    }

    /// A list as the API server writes one, from its items, within
    /// [`MAX_LIST_BYTES`].
    fn list_json<'a>(
        &self,
        type_meta: &TypeMeta,
        items: impl Iterator<Item = &'a DynamicObject>,
        resource_version: Option<String>,
        continue_token: Option<String>,
    ) -> Result<String, ApiError> {
        let mut values = Vec::new();
        let mut bytes = 0;
        for item in items {
            let value = serde_json::to_value(item)
                .map_err(|error| bad_request("cannot encode list", error))?;
            bytes += value.to_string().len();
            self.within_list_limit(type_meta, bytes)?;
            values.push(value);
        }
        Ok(serde_json::json!({
            "apiVersion": "v1",
            "kind": format!("{}List", type_meta.kind),
            "metadata": {
                "resourceVersion": resource_version,
                "continue": continue_token.filter(|token| !token.is_empty()),
            },
            "items": values,
        })
        .to_string())
    }
}

/// The plugin's calls, made as its ServiceAccount through the fenced client.
impl Backend for KubeBridge {
    fn get(&self, type_meta: TypeMeta, object: ObjectRef) -> BackendFuture<'_, Option<String>> {
        Box::pin(async move {
            let cached = self.caches.get().and_then(|caches| {
                caches.get(
                    kind_of(&type_meta),
                    object.namespace.as_deref(),
                    &object.name,
                )
            });
            if let Some(found) = cached {
                self.accounting.served_from_cache();
                return found.map(|found| to_json(&found)).transpose();
            }
            let api = self
                .api_for(&type_meta, object.namespace.as_deref())
                .await?;
            match api.get_opt(&object.name).await.map_err(api_error)? {
                Some(found) => Ok(Some(to_json(&found)?)),
                None => Ok(None),
            }
        })
    }

    fn list(&self, type_meta: TypeMeta, params: WitListParams) -> BackendFuture<'_, String> {
        Box::pin(async move {
            let paged = params.limit.is_some() || params.continue_token.is_some();
            // A page is the API server's (its continue token names a
            // snapshot there), so a paginated list is always live.
            let cached = self.caches.get().filter(|_| !paged).and_then(|caches| {
                caches
                    .list(
                        kind_of(&type_meta),
                        params.namespace.as_deref(),
                        params.label_selector.as_deref(),
                        params.field_selector.as_deref(),
                    )
                    .ok()
            });
            if let Some(items) = cached {
                self.accounting.served_from_cache();
                return self.list_json(
                    &type_meta,
                    items.iter().map(|item| item.as_ref()),
                    None,
                    None,
                );
            }
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
            if paged {
                if let Some(limit) = params.limit {
                    list_params = list_params.limit(limit);
                }
                if let Some(token) = &params.continue_token {
                    list_params = list_params.continue_token(token);
                }
                let list = api.list(&list_params).await.map_err(api_error)?;
                return self.list_json(
                    &type_meta,
                    list.items.iter(),
                    list.metadata.resource_version,
                    list.metadata.continue_,
                );
            }
            let mut items = Vec::new();
            let mut bytes = 0;
            let mut resource_version;
            let mut page = list_params.limit(LIST_PAGE);
            loop {
                let list = api.list(&page).await.map_err(api_error)?;
                for item in list.items {
                    // Counted as it comes: a huge list is refused before
                    // all of it is held.
                    bytes += serde_json::to_vec(&item).map_or(0, |json| json.len());
                    self.within_list_limit(&type_meta, bytes)?;
                    items.push(item);
                }
                resource_version = list.metadata.resource_version;
                match list.metadata.continue_.filter(|token| !token.is_empty()) {
                    Some(token) => page = page.continue_token(&token),
                    None => break,
                }
            }
            self.list_json(&type_meta, items.iter(), resource_version, None)
        })
    }

    fn create(
        &self,
        type_meta: TypeMeta,
        namespace: Option<String>,
        object: String,
    ) -> BackendFuture<'_, String> {
        Box::pin(async move {
            let parsed = parse(&object)?;
            let api = self.api_for(&type_meta, namespace.as_deref()).await?;
            let created = api
                .create(&PostParams::default(), &parsed)
                .await
                .map_err(api_error)?;
            self.wrote(&type_meta, &created);
            to_json(&created)
        })
    }

    fn replace(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
    ) -> BackendFuture<'_, String> {
        Box::pin(async move {
            let parsed = parse(&object)?;
            let api = self
                .api_for(&type_meta, target.namespace.as_deref())
                .await?;
            let replaced = api
                .replace(&target.name, &PostParams::default(), &parsed)
                .await
                .map_err(api_error)?;
            self.wrote(&type_meta, &replaced);
            to_json(&replaced)
        })
    }

    fn apply(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
        params: ApplyParams,
    ) -> BackendFuture<'_, String> {
        Box::pin(async move {
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
            self.wrote(&type_meta, &applied);
            to_json(&applied)
        })
    }

    fn patch(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        patch: ObjectPatch,
    ) -> BackendFuture<'_, String> {
        Box::pin(async move {
            let patch = match patch {
                ObjectPatch::Merge(text) => Patch::Merge(
                    serde_json::from_str::<Value>(&text)
                        .map_err(|error| bad_request("merge patch is not JSON", error))?,
                ),
                ObjectPatch::Json(text) => Patch::Json(
                    serde_json::from_str::<json_patch::Patch>(&text).map_err(|error| {
                        bad_request("JSON patch is not a list of RFC 6902 operations", error)
                    })?,
                ),
            };
            let api = self
                .api_for(&type_meta, target.namespace.as_deref())
                .await?;
            let patched = api
                .patch(&target.name, &PatchParams::default(), &patch)
                .await
                .map_err(api_error)?;
            self.wrote(&type_meta, &patched);
            to_json(&patched)
        })
    }

    fn delete(&self, type_meta: TypeMeta, target: ObjectRef) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let api = self
                .api_for(&type_meta, target.namespace.as_deref())
                .await?;
            api.delete(&target.name, &DeleteParams::default())
                .await
                .map_err(api_error)?;
            if let Some(caches) = self.caches.get() {
                caches.deleted(kind_of(&type_meta), target.namespace, target.name);
            }
            Ok(())
        })
    }

    fn update_status(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        update: StatusUpdate,
    ) -> BackendFuture<'_, String> {
        Box::pin(async move {
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
            let updated = updated.map_err(api_error)?;
            self.wrote(&type_meta, &updated);
            to_json(&updated)
        })
    }

    fn emit_event(&self, regarding: InvolvedObject, event: WitEvent) -> BackendFuture<'_, ()> {
        Box::pin(async move {
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
                note: Some(cut(event.message, MAX_EVENT_NOTE_BYTES)),
                action: "Reconcile".into(),
                secondary: None,
            };
            self.recorder
                .publish(&event, &reference)
                .await
                .map_err(api_error)
        })
    }
    fn limited(&self, reason: &'static str, message: &str) {
        self.accounting.limited(reason, message);
    }

    fn called(&self, call: &'static str, code: u16) {
        self.accounting.called(call, code);
    }

    fn outbound(&self, method: &http::Method, _origin: &str) -> BackendFuture<'_, ()> {
        let admitted = self.fence.admit(method);
        Box::pin(async move {
            match admitted {
                Ok(()) => {}
                Err(refused) if refused.is::<NotLeader>() => return Err(not_leader()),
                Err(_) => return Err(reads_only()),
            }
            self.throttle.acquire().await;
            Ok(())
        })
    }

    fn log(&self, level: Level, message: &str, fields: &[Field], object: Option<&str>) {
        let plugin = self.plugin.as_str();
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

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::election::LeaderGuard;

    /// A bridge whose client would reach nothing: any answer but the
    /// fence's would be a connection error.
    fn bridge(guard: LeaderGuard) -> KubeBridge {
        let config = kube::Config::new(http::Uri::from_static("http://127.0.0.1:1"));
        KubeBridge::impersonating(
            &config,
            "p",
            &ServiceAccount::new("ns", "sa"),
            "replica",
            Fence::new(guard),
            &Budget::default(),
            Arc::new(super::super::throttle::Unaccounted),
        )
        .unwrap()
    }

    fn config_map() -> TypeMeta {
        TypeMeta {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
        }
    }

    #[tokio::test]
    async fn a_plugin_call_after_the_term_is_refused_as_not_leader() {
        let bridge = bridge(LeaderGuard::new(Instant::now()));
        let target = ObjectRef {
            namespace: Some("ns".into()),
            name: "settings".into(),
        };
        let error = bridge.get(config_map(), target).await.unwrap_err();
        assert_eq!(error.reason, "NotLeader", "{}", error.message);
    }

    #[tokio::test]
    async fn the_hosts_own_writes_through_the_plugins_client_are_fenced_too() {
        let bridge = bridge(LeaderGuard::new(Instant::now()));
        let api: Api<DynamicObject> = Api::namespaced_with(
            bridge.client().clone(),
            "ns",
            &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
        );
        let patch = Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
        let error = api
            .patch("settings", &PatchParams::default(), &patch)
            .await
            .unwrap_err();
        assert!(fence::refused(&error), "{error}");
    }
}
