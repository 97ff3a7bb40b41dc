//! Kubernetes Events about objects, the trail `kubectl describe` shows.
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! # fn example(source: &ConfigMap) {
//! if let Err(error) = leasehold_sdk::event::normal(source, "Mirrored", "copied to 3 namespaces") {
//!     // An event is a courtesy: losing one must not fail the reconcile.
//!     leasehold_sdk::warn!("cannot record event", error = error);
//! }
//! # }
//! ```

use crate::api::ApiError;
use crate::host;
use crate::object::{Object, ObjectRef, TypeMeta};

/// How serious an Event is.
///
/// ```
/// use leasehold_sdk::event::EventType;
/// assert_ne!(EventType::Normal, EventType::Warning);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// An expected change, such as an object being created.
    Normal,
    /// Something a person may need to look at.
    Warning,
}

/// Records an Event about `object`.
///
/// `reason` is a short UpperCamelCase word (`Mirrored`); `message` says what
/// happened, for a person.
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use leasehold_sdk::event::{self, EventType};
/// # fn example(object: &ConfigMap) -> Result<(), leasehold_sdk::api::ApiError> {
/// event::publish(object, EventType::Warning, "InvalidSelector", "the selector does not parse")?;
/// # Ok(()) }
/// ```
pub fn publish<K: Object>(
    object: &K,
    event_type: EventType,
    reason: &str,
    message: &str,
) -> Result<(), ApiError> {
    let regarding = ObjectRef::from_object(object);
    let uid = object.meta().uid.as_deref();
    host::with(|host| {
        host.emit_event(
            &TypeMeta::of::<K>(),
            &regarding,
            uid,
            event_type,
            reason,
            message,
        )
    })
}

/// Records a [`EventType::Normal`] Event about `object`.
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// # fn example(object: &ConfigMap) -> Result<(), leasehold_sdk::api::ApiError> {
/// leasehold_sdk::event::normal(object, "Mirrored", "copied to 3 namespaces")?;
/// # Ok(()) }
/// ```
pub fn normal<K: Object>(object: &K, reason: &str, message: &str) -> Result<(), ApiError> {
    publish(object, EventType::Normal, reason, message)
}

/// Records a [`EventType::Warning`] Event about `object`.
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// # fn example(object: &ConfigMap) -> Result<(), leasehold_sdk::api::ApiError> {
/// leasehold_sdk::event::warning(object, "CopyFailed", "namespace team-a refused the copy")?;
/// # Ok(()) }
/// ```
pub fn warning<K: Object>(object: &K, reason: &str, message: &str) -> Result<(), ApiError> {
    publish(object, EventType::Warning, reason, message)
}
