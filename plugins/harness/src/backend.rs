//! The host's [`Backend`] answered by the SDK's in-memory cluster: the
//! component's imports, translated from the host's bindings to the SDK's
//! types and back.

use leasehold_runtime::contract::{
    ApiError, ApplyParams, Event, EventType, Field, InvolvedObject, Level, ListParams, ObjectPatch,
    ObjectRef, StatusUpdate, TypeMeta,
};
use leasehold_runtime::{Backend, BackendFuture};
use leasehold_sdk::testing::{self, Host, HostCalls};
use leasehold_sdk::{api, event, log};

/// A plugin's imports, answered from memory. Every answer is ready at once.
#[derive(Debug)]
pub(crate) struct InMemory {
    calls: HostCalls,
}

impl InMemory {
    pub(crate) fn new(calls: HostCalls) -> Self {
        Self { calls }
    }
}

fn type_meta(type_meta: &TypeMeta) -> leasehold_sdk::TypeMeta {
    leasehold_sdk::TypeMeta {
        api_version: type_meta.api_version.clone(),
        kind: type_meta.kind.clone(),
    }
}

fn object_ref(object: &ObjectRef) -> leasehold_sdk::ObjectRef {
    leasehold_sdk::ObjectRef {
        namespace: object.namespace.clone(),
        name: object.name.clone(),
    }
}

/// An answer, as the host's bindings carry it.
fn answer<T: Send + 'static>(result: Result<T, api::ApiError>) -> BackendFuture<'static, T> {
    let result = result.map_err(|error| ApiError {
        code: error.code,
        reason: error.reason,
        message: error.message,
    });
    Box::pin(std::future::ready(result))
}

impl Backend for InMemory {
    fn get(&self, meta: TypeMeta, object: ObjectRef) -> BackendFuture<'_, Option<String>> {
        answer(self.calls.get(&type_meta(&meta), &object_ref(&object)))
    }

    fn list(&self, meta: TypeMeta, params: ListParams) -> BackendFuture<'_, String> {
        let namespace = params.namespace.as_deref();
        let query = api::ListParams {
            label_selector: params.label_selector.clone(),
            field_selector: params.field_selector.clone(),
            limit: params.limit,
            continue_token: params.continue_token.clone(),
        };
        answer(self.calls.list(&type_meta(&meta), namespace, &query))
    }

    fn create(
        &self,
        meta: TypeMeta,
        namespace: Option<String>,
        object: String,
    ) -> BackendFuture<'_, String> {
        answer(
            self.calls
                .create(&type_meta(&meta), namespace.as_deref(), &object),
        )
    }

    fn replace(
        &self,
        meta: TypeMeta,
        target: ObjectRef,
        object: String,
    ) -> BackendFuture<'_, String> {
        answer(
            self.calls
                .replace(&type_meta(&meta), &object_ref(&target), &object),
        )
    }

    fn apply(
        &self,
        meta: TypeMeta,
        target: ObjectRef,
        object: String,
        params: ApplyParams,
    ) -> BackendFuture<'_, String> {
        answer(self.calls.apply(
            &type_meta(&meta),
            &object_ref(&target),
            &object,
            &params.field_manager,
            params.force,
        ))
    }

    fn patch(
        &self,
        meta: TypeMeta,
        target: ObjectRef,
        patch: ObjectPatch,
    ) -> BackendFuture<'_, String> {
        let patch = match &patch {
            ObjectPatch::Merge(text) => testing::ObjectPatch::Merge(text),
            ObjectPatch::Json(text) => testing::ObjectPatch::Json(text),
        };
        answer(
            self.calls
                .patch(&type_meta(&meta), &object_ref(&target), patch),
        )
    }

    fn delete(&self, meta: TypeMeta, target: ObjectRef) -> BackendFuture<'_, ()> {
        answer(self.calls.delete(&type_meta(&meta), &object_ref(&target)))
    }

    fn update_status(
        &self,
        meta: TypeMeta,
        target: ObjectRef,
        update: StatusUpdate,
    ) -> BackendFuture<'_, String> {
        let update = match &update {
            StatusUpdate::Replace(object) => testing::StatusUpdate::Replace(object),
            StatusUpdate::MergePatch(patch) => testing::StatusUpdate::MergePatch(patch),
        };
        answer(
            self.calls
                .update_status(&type_meta(&meta), &object_ref(&target), update),
        )
    }

    fn emit_event(&self, regarding: InvolvedObject, event: Event) -> BackendFuture<'_, ()> {
        let event_type = match event.event_type {
            EventType::Normal => event::EventType::Normal,
            EventType::Warning => event::EventType::Warning,
        };
        answer(self.calls.emit_event(
            &type_meta(&regarding.type_meta),
            &object_ref(&regarding.object),
            regarding.uid.as_deref(),
            event_type,
            &event.reason,
            &event.message,
        ))
    }

    fn log(&self, level: Level, message: &str, fields: &[Field], _object: Option<&str>) {
        let level = match level {
            Level::Trace => log::Level::Trace,
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        let fields: Vec<(&str, String)> = fields
            .iter()
            .map(|field| (field.key.as_str(), field.value.clone()))
            .collect();
        self.calls.log(level, message, &fields);
    }
}

#[cfg(test)]
mod tests {
    use leasehold_sdk::testing::FakeCluster;
    use serde_json::{Value, json};

    use super::*;

    fn config_maps() -> TypeMeta {
        TypeMeta {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
        }
    }

    fn in_default(name: &str) -> ObjectRef {
        ObjectRef {
            namespace: Some("default".into()),
            name: name.into(),
        }
    }

    /// A cluster holding ConfigMaps `default/a`, `default/b` and `default/c`,
    /// and the backend a component's imports reach it through.
    fn backend() -> (FakeCluster, InMemory) {
        let cluster = FakeCluster::new();
        for name in ["a", "b", "c"] {
            let object = json!({ "metadata": { "name": name }, "data": { "n": name } });
            cluster
                .host_calls()
                .create(
                    &type_meta(&config_maps()),
                    Some("default"),
                    &object.to_string(),
                )
                .unwrap();
        }
        let backend = InMemory::new(cluster.host_calls());
        (cluster, backend)
    }

    /// Every answer of the in-memory backend is ready at once.
    fn now<T>(future: BackendFuture<'_, T>) -> Result<T, ApiError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn both_kinds_of_patch_reach_the_cluster() {
        let (cluster, backend) = backend();

        let merged = now(backend.patch(
            config_maps(),
            in_default("a"),
            ObjectPatch::Merge(r#"{"data":{"n":null,"m":"1"}}"#.into()),
        ))
        .unwrap();
        let patched = now(backend.patch(
            config_maps(),
            in_default("b"),
            ObjectPatch::Json(r#"[{"op":"replace","path":"/data/n","value":"B"}]"#.into()),
        ))
        .unwrap();

        let merged: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(merged["data"], json!({ "m": "1" }));
        let patched: Value = serde_json::from_str(&patched).unwrap();
        assert_eq!(patched["data"], json!({ "n": "B" }));
        let calls: Vec<String> = cluster.calls()[3..].iter().map(|c| c.to_string()).collect();
        assert_eq!(
            calls,
            [
                "patch v1/ConfigMap default/a -> ok",
                "patch v1/ConfigMap default/b -> ok"
            ]
        );
    }

    #[test]
    fn a_patch_the_cluster_refuses_comes_back_as_its_error() {
        let (_cluster, backend) = backend();

        let error = now(backend.patch(
            config_maps(),
            in_default("a"),
            ObjectPatch::Json(r#"{"op":"remove","path":"/data"}"#.into()),
        ))
        .unwrap_err();

        assert_eq!((error.code, error.reason.as_str()), (400, "BadRequest"));
    }

    #[test]
    fn a_limited_list_is_a_page_with_the_token_of_the_next() {
        let (_cluster, backend) = backend();
        let params = |continue_token| ListParams {
            namespace: Some("default".into()),
            label_selector: None,
            field_selector: None,
            limit: Some(2),
            continue_token,
        };

        let first: Value =
            serde_json::from_str(&now(backend.list(config_maps(), params(None))).unwrap()).unwrap();
        let token = first["metadata"]["continue"].as_str().unwrap().to_owned();
        let second: Value =
            serde_json::from_str(&now(backend.list(config_maps(), params(Some(token)))).unwrap())
                .unwrap();

        let names = |list: &Value| -> Vec<String> {
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["metadata"]["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(names(&second), ["c"]);
        assert!(second["metadata"].get("continue").is_none());
    }
}
