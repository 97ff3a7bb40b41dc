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
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker};

use super::bindings::current::ControllerWithAdmission;
use super::bindings::current::leasehold::controller::config;
use super::bindings::current::leasehold::controller::kubernetes::{
    self, ApplyParams, Event as WitEvent, InvolvedObject, ListParams as WitListParams, ObjectPatch,
    StatusUpdate,
};
use super::bindings::current::leasehold::controller::log::{self, Field, Level};
use super::bindings::current::leasehold::controller::types::{self, ApiError, ObjectRef, TypeMeta};
use super::outbound::AllowedHosts;
use super::{Call, HostState};

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
    /// Patches an object; returns it as stored.
    fn patch(
        &self,
        type_meta: TypeMeta,
        target: ObjectRef,
        patch: ObjectPatch,
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
    /// A bound refused or cut something the plugin did (`reason` is the
    /// error's, such as `TooManyCalls`): count it, say it. Nothing by default.
    fn limited(&self, reason: &'static str, message: &str) {
        let _ = (reason, message);
    }
    /// A Kubernetes call of the plugin (`call` as the contract names it,
    /// such as `get` or `update-status`) ended with `code`: 200 for
    /// success, else the error's (0 when it never reached the API server).
    /// Nothing by default.
    fn called(&self, call: &'static str, code: u16) {
        let _ = (call, code);
    }
    /// Lets one outbound HTTP request of the plugin (`method` to `origin`,
    /// a host its Plugin allows) leave once the plugin's bounds allow:
    /// resolves when it may be sent, or refuses it with the reason. The
    /// bridge to a cluster waits for the plugin's rate limit and refuses
    /// after its term; by default every allowed request leaves at once.
    fn outbound(&self, method: &http::Method, origin: &str) -> BackendFuture<'_, ()> {
        let _ = (method, origin);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A log record's message is cut at this many bytes, a field's value too.
pub const MAX_LOG_BYTES: usize = 4096;
/// Log records one call may write; further ones are dropped (counted).
pub const MAX_LOGS_PER_CALL: u32 = 256;
/// Fields one log record may carry; further ones are dropped.
pub const MAX_LOG_FIELDS: usize = 32;

/// What a plugin's store needs to answer its imports during one call.
#[derive(Clone, Debug)]
pub struct HostContext {
    /// Answers the plugin's Kubernetes calls and logs.
    pub backend: Arc<dyn Backend>,
    /// The plugin's configuration as JSON text.
    pub config: Arc<str>,
    /// The object being reconciled, for log lines.
    pub object: Option<String>,
    /// Where the plugin's outbound HTTP requests may go (nowhere unless its
    /// Plugin says).
    pub allowed_hosts: Arc<AllowedHosts>,
}

/// Links the current contract's imports; [`super::previous`] links the
/// previous one's beside them.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    ControllerWithAdmission::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

/// [`Call::admit`] in an import: a refusal is the import's error value.
macro_rules! admit {
    ($state:expr, $request_bytes:expr) => {
        match $state.call.admit($request_bytes) {
            Ok(deadline) => deadline,
            Err(refused) => return Ok(Err(refused)),
        }
    };
}

impl types::Host for HostState {}

impl kubernetes::Host for HostState {
    async fn get(
        &mut self,
        type_meta: TypeMeta,
        object: ObjectRef,
    ) -> wasmtime::Result<Result<Option<String>, ApiError>> {
        let deadline = admit!(self, 0);
        Ok(
            bounded(self.call.context.backend.clone(), "get", deadline, |b| {
                b.get(type_meta, object)
            })
            .await,
        )
    }

    async fn list(
        &mut self,
        type_meta: TypeMeta,
        params: WitListParams,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        let deadline = admit!(self, 0);
        Ok(
            bounded(self.call.context.backend.clone(), "list", deadline, |b| {
                b.list(type_meta, params)
            })
            .await,
        )
    }

    async fn create(
        &mut self,
        type_meta: TypeMeta,
        namespace: Option<String>,
        object: String,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        let deadline = admit!(self, object.len());
        Ok(
            bounded(self.call.context.backend.clone(), "create", deadline, |b| {
                b.create(type_meta, namespace, object)
            })
            .await,
        )
    }

    async fn replace(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        let deadline = admit!(self, object.len());
        Ok(bounded(
            self.call.context.backend.clone(),
            "replace",
            deadline,
            |b| b.replace(type_meta, target, object),
        )
        .await)
    }

    async fn apply(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
        object: String,
        params: ApplyParams,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        let deadline = admit!(self, object.len());
        Ok(
            bounded(self.call.context.backend.clone(), "apply", deadline, |b| {
                b.apply(type_meta, target, object, params)
            })
            .await,
        )
    }

    async fn patch(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
        patch: ObjectPatch,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        let deadline = admit!(
            self,
            match &patch {
                ObjectPatch::Merge(text) | ObjectPatch::Json(text) => text.len(),
            }
        );
        Ok(
            bounded(self.call.context.backend.clone(), "patch", deadline, |b| {
                b.patch(type_meta, target, patch)
            })
            .await,
        )
    }

    async fn delete(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
    ) -> wasmtime::Result<Result<(), ApiError>> {
        let deadline = admit!(self, 0);
        Ok(
            bounded(self.call.context.backend.clone(), "delete", deadline, |b| {
                b.delete(type_meta, target)
            })
            .await,
        )
    }

    async fn update_status(
        &mut self,
        type_meta: TypeMeta,
        target: ObjectRef,
        update: StatusUpdate,
    ) -> wasmtime::Result<Result<String, ApiError>> {
        let deadline = admit!(
            self,
            match &update {
                StatusUpdate::Replace(text) | StatusUpdate::MergePatch(text) => text.len(),
            }
        );
        Ok(bounded(
            self.call.context.backend.clone(),
            "update-status",
            deadline,
            |b| b.update_status(type_meta, target, update),
        )
        .await)
    }

    async fn emit_event(
        &mut self,
        regarding: InvolvedObject,
        event: WitEvent,
    ) -> wasmtime::Result<Result<(), ApiError>> {
        let size = event.reason.len() + event.message.len();
        let deadline = admit!(self, size);
        Ok(bounded(
            self.call.context.backend.clone(),
            "emit-event",
            deadline,
            |b| b.emit_event(regarding, event),
        )
        .await)
    }
}

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<Field>,
    ) -> wasmtime::Result<()> {
        self.call.logs = self.call.logs.saturating_add(1);
        let context = &self.call.context;
        if self.call.logs > MAX_LOGS_PER_CALL {
            if self.call.logs == MAX_LOGS_PER_CALL + 1 {
                let said = format!(
                    "more than {MAX_LOGS_PER_CALL} log records in one call; the rest of this call's are dropped"
                );
                context.backend.limited("LogsDropped", &said);
            }
            return Ok(());
        }
        let fields: Vec<Field> = fields
            .into_iter()
            .take(MAX_LOG_FIELDS)
            .map(|field| Field {
                value: cut(field.value, MAX_LOG_BYTES),
                ..field
            })
            .collect();
        context.backend.log(
            level,
            &cut(message, MAX_LOG_BYTES),
            &fields,
            context.object.as_deref(),
        );
        Ok(())
    }
}

/// What ends a text that [`cut`] shortened.
const CUT_MARK: &str = "… (cut)";

/// `text` in at most `max` bytes: longer, it is cut on a character
/// boundary and ends with a mark saying so. For anything a plugin writes
/// that the host passes on (logs, Events, status messages).
pub fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max.saturating_sub(CUT_MARK.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(CUT_MARK);
    }
    text
}

impl Call {
    /// Admits one Kubernetes call of a request of `request_bytes`: refused
    /// past the call budget or the size bound, else the deadline it must
    /// meet (the current call's).
    pub(super) fn admit(&mut self, request_bytes: usize) -> Result<Instant, ApiError> {
        self.calls = self.calls.saturating_add(1);
        let refusal = if self.calls > self.max_calls {
            Some((
                "TooManyCalls",
                429,
                format!(
                    "more than {} Kubernetes calls in one reconcile; requeue and continue in the next",
                    self.max_calls
                ),
            ))
        } else if request_bytes > self.max_request_bytes {
            Some((
                "RequestTooLarge",
                413,
                format!(
                    "the request is {request_bytes} bytes, over the {} a plugin may send",
                    self.max_request_bytes
                ),
            ))
        } else {
            None
        };
        match refusal {
            None => Ok(self.deadline),
            Some((reason, code, message)) => {
                self.context.backend.limited(reason, &message);
                Err(ApiError {
                    code,
                    reason: reason.to_owned(),
                    message,
                })
            }
        }
    }
}

/// Runs a backend call, cut off at `deadline` with a `Timeout` error. (Not
/// a method: the store's state is not `Sync`, the backend is.)
async fn bounded<T>(
    backend: Arc<dyn Backend>,
    name: &'static str,
    deadline: Instant,
    call: impl for<'a> FnOnce(&'a dyn Backend) -> BackendFuture<'a, T>,
) -> Result<T, ApiError> {
    let backend = backend.as_ref();
    let result = match tokio::time::timeout_at(deadline.into(), call(backend)).await {
        Ok(result) => result,
        Err(_) => {
            let message = "the call did not finish before the reconcile's deadline".to_owned();
            backend.limited("Timeout", &message);
            Err(ApiError {
                code: 504,
                reason: "Timeout".to_owned(),
                message,
            })
        }
    };
    let code = match &result {
        Ok(_) => 200,
        Err(error) => error.code,
    };
    backend.called(name, code);
    result
}

impl config::Host for HostState {
    async fn get_config(&mut self) -> wasmtime::Result<String> {
        Ok(self.call.context.config.to_string())
    }
}
