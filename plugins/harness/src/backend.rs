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
        answer(self.calls.list(
            &type_meta(&meta),
            params.namespace.as_deref(),
            params.label_selector.as_deref(),
            params.field_selector.as_deref(),
        ))
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
        _meta: TypeMeta,
        _target: ObjectRef,
        _patch: ObjectPatch,
    ) -> BackendFuture<'_, String> {
        answer(Err(api::ApiError {
            code: 405,
            reason: "MethodNotAllowed".to_owned(),
            message: "the in-memory cluster does not answer patch yet".to_owned(),
        }))
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
