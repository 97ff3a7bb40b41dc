//! The plugin's imports: the `kubernetes`, `log` and `config` interfaces of
//! the contract, answered by a [`Backend`].
//!
//! On a leader the backend is the host's bridge to the API server, acting as
//! the plugin's own ServiceAccount; in a plugin author's unit test it is an
//! in-memory cluster (the `leasehold-harness` crate). Either way the
//! component runs on this same runtime, with the same limits.
//!
//! Every failure a plugin can cause or meet comes back as an `api-error`
//! value (403 from RBAC, 404, malformed JSON, a kind the cluster does not
//! serve, no longer leading); traps are left for misbehaving guests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::HostState;
use super::bindings::Controller;
use super::bindings::leasehold::controller::config;
use super::bindings::leasehold::controller::kubernetes::{
    self, ApplyParams, Event as WitEvent, InvolvedObject, ListParams as WitListParams, StatusUpdate,
};
use super::bindings::leasehold::controller::log::{self, Field, Level};
use super::bindings::leasehold::controller::types::{self, ApiError, ObjectRef, TypeMeta};

/// What a backend call resolves to: the import's result.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

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
