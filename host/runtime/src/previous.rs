//! The previous contract, `leasehold:controller@0.1.0`, linked beside the
//! current one so that a component built for it runs unchanged.
//!
//! 0.2 only added to 0.1 (`patch`, list pages, the `admission` export), so
//! each 0.1 import is the 0.2 import of the same name, and each 0.1 export
//! maps onto the 0.2 one: the records below are copied field by field. The
//! shared `types` need no copying (see [`super::bindings::previous`]).
//!
//! The compatibility policy (README, "Contract versions"): a host serves
//! the current minor version and the one before it; the older one is
//! reported as deprecated in `plugin validate` and the Plugin's status.

use wasmtime::component::{HasSelf, Linker};

use super::HostState;
use super::bindings::current::exports::leasehold::controller::reconciler as now;
use super::bindings::current::leasehold::controller::{
    config as config_now, kubernetes as kubernetes_now, log as log_now,
};
use super::bindings::previous::Controller;
use super::bindings::previous::exports::leasehold::controller::reconciler as then;
use super::bindings::previous::leasehold::controller::{config, kubernetes, log};
use super::contract::{ApiError, ObjectRef, TypeMeta};

/// The previous contract's version.
pub const VERSION: &str = "0.1.0";

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    Controller::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

impl kubernetes::Host for HostState {
    async fn get(
        &mut self,
        type_meta: TypeMeta,
        object: ObjectRef,
    ) -> wasmtime::Result<Result<Option<String>, ApiError>> {
        kubernetes_now::Host::get(self, type_meta, object).await
    }

    async fn list(
        &mut self,
        type_meta: TypeMeta,
        params: kubernetes::ListParams,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        let params = kubernetes_now::ListParams {
            namespace: params.namespace,
            label_selector: params.label_selector,
            field_selector: params.field_selector,
            limit: None,
            continue_token: None,
        };
        kubernetes_now::Host::list(self, type_meta, params).await
    }

    async fn create(
        &mut self,
        type_meta: TypeMeta,
        namespace: Option<String>,
        object: String,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        kubernetes_now::Host::create(self, type_meta, namespace, object).await
    }

    async fn replace(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        kubernetes_now::Host::replace(self, type_meta, target, object).await
    }

    async fn apply(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
        params: kubernetes::ApplyParams,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        let params = kubernetes_now::ApplyParams {
            field_manager: params.field_manager,
            force: params.force,
        };
        kubernetes_now::Host::apply(self, type_meta, target, object, params).await
    }

    async fn delete(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
    ) -> wasmtime::Result<Result<(), ApiError>> {
        kubernetes_now::Host::delete(self, type_meta, target).await
    }

    async fn update_status(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
        update: kubernetes::StatusUpdate,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        let update = match update {
            kubernetes::StatusUpdate::Replace(text) => kubernetes_now::StatusUpdate::Replace(text),
            kubernetes::StatusUpdate::MergePatch(text) => {
                kubernetes_now::StatusUpdate::MergePatch(text)
            }
        };
        kubernetes_now::Host::update_status(self, type_meta, target, update).await
    }

    async fn emit_event(
        &mut self,
        regarding: kubernetes::InvolvedObject,
        event: kubernetes::Event,
    ) -> wasmtime::Result<Result<(), ApiError>> {
        let regarding = kubernetes_now::InvolvedObject {
            type_meta: regarding.type_meta,
            object: regarding.object,
            uid: regarding.uid,
        };
        let event = kubernetes_now::Event {
            event_type: match event.event_type {
                kubernetes::EventType::Normal => kubernetes_now::EventType::Normal,
                kubernetes::EventType::Warning => kubernetes_now::EventType::Warning,
            },
            reason: event.reason,
            message: event.message,
        };
        kubernetes_now::Host::emit_event(self, regarding, event).await
    }
}

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<log::Field>,
    ) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => log_now::Level::Trace,
            log::Level::Debug => log_now::Level::Debug,
            log::Level::Info => log_now::Level::Info,
            log::Level::Warn => log_now::Level::Warn,
            log::Level::Error => log_now::Level::Error,
        };
        let fields = fields
            .into_iter()
            .map(|field| log_now::Field {
                key: field.key,
                value: field.value,
            })
            .collect();
        log_now::Host::log(self, level, message, fields).await
    }
}

impl config::Host for HostState {
    async fn get_config(&mut self) -> wasmtime::Result<String> {
        config_now::Host::get_config(self).await
    }
}

/// A 0.1 registration as the current contract says it.
pub(super) fn registration(registration: then::Registration) -> now::Registration {
    let gvk = |kind: then::GroupVersionKind| now::GroupVersionKind {
        group: kind.group,
        version: kind.version,
        kind: kind.kind,
        plural: kind.plural,
    };
    now::Registration {
        name: registration.name,
        primary: gvk(registration.primary),
        label_selector: registration.label_selector,
        namespace: registration.namespace,
        owns: registration.owns.into_iter().map(gvk).collect(),
        watches: registration
            .watches
            .into_iter()
            .map(|watch| now::Watch {
                kind: gvk(watch.kind),
                label_selector: watch.label_selector,
                mapping: match watch.mapping {
                    then::Mapping::Labels(labels) => now::Mapping::Labels(now::LabelMapping {
                        name: labels.name,
                        namespace: labels.namespace,
                    }),
                    then::Mapping::AllPrimaries => now::Mapping::AllPrimaries,
                },
            })
            .collect(),
        resync_period_ms: registration.resync_period_ms,
        finalizer: registration.finalizer,
    }
}

/// A current request as a 0.1 plugin receives it.
pub(super) fn request(request: &now::Request) -> then::Request {
    then::Request {
        reference: request.reference.clone(),
        object: request.object.clone(),
    }
}

/// A 0.1 reconcile's outcome as the current contract says it.
pub(super) fn outcome(
    outcome: Result<then::Action, then::ReconcileError>,
) -> Result<now::Action, now::ReconcileError> {
    match outcome {
        Ok(then::Action::Done) => Ok(now::Action::Done),
        Ok(then::Action::RequeueAfter(ms)) => Ok(now::Action::RequeueAfter(ms)),
        Err(error) => Err(now::ReconcileError {
            message: error.message,
            retryable: error.retryable,
        }),
    }
}
