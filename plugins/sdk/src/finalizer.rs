//! Finalizers on objects.
//!
//! A plugin that names a finalizer in its [`Registration`] needs none of
//! this: the host adds it, calls [`Reconciler::cleanup`] while the object is
//! being deleted, and removes it when cleanup is done. These helpers are for
//! plugins that guard *other* objects with finalizers of their own.
//!
//! They change the object in memory; persist it with
//! [`Api::replace`](crate::api::Api::replace), whose `resourceVersion` check
//! keeps another writer's finalizers safe.
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use leasehold_sdk::{api::Api, finalizer};
//!
//! # fn example(mut object: ConfigMap) -> Result<(), leasehold_sdk::api::Error> {
//! if finalizer::add(&mut object, "example.dev/cleanup") {
//!     Api::<ConfigMap>::namespaced("default").replace("settings", &object)?;
//! }
//! # Ok(()) }
//! ```
//!
//! [`Registration`]: crate::Registration
//! [`Reconciler::cleanup`]: crate::Reconciler::cleanup

use kube_core::Resource;

/// Whether `object` carries the finalizer `name`.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// let mut object = ConfigMap::default();
/// leasehold_sdk::finalizer::add(&mut object, "example.dev/cleanup");
/// assert!(leasehold_sdk::finalizer::has(&object, "example.dev/cleanup"));
/// ```
pub fn has<K: Resource>(object: &K, name: &str) -> bool {
    object
        .meta()
        .finalizers
        .as_ref()
        .is_some_and(|finalizers| finalizers.iter().any(|f| f == name))
}

/// Adds the finalizer `name`; returns whether the object changed.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// let mut object = ConfigMap::default();
/// assert!(leasehold_sdk::finalizer::add(&mut object, "example.dev/cleanup"));
/// assert!(!leasehold_sdk::finalizer::add(&mut object, "example.dev/cleanup"));
/// ```
pub fn add<K: Resource>(object: &mut K, name: &str) -> bool {
    if has(object, name) {
        return false;
    }
    object
        .meta_mut()
        .finalizers
        .get_or_insert_default()
        .push(name.to_owned());
    true
}

/// Removes the finalizer `name`; returns whether the object changed.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// let mut object = ConfigMap::default();
/// leasehold_sdk::finalizer::add(&mut object, "example.dev/cleanup");
/// assert!(leasehold_sdk::finalizer::remove(&mut object, "example.dev/cleanup"));
/// assert!(!leasehold_sdk::finalizer::has(&object, "example.dev/cleanup"));
/// ```
pub fn remove<K: Resource>(object: &mut K, name: &str) -> bool {
    let Some(finalizers) = object.meta_mut().finalizers.as_mut() else {
        return false;
    };
    let before = finalizers.len();
    finalizers.retain(|f| f != name);
    before != finalizers.len()
}

/// Whether `object` is being deleted: it has a deletion timestamp and waits
/// only for its finalizers.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// assert!(!leasehold_sdk::finalizer::is_deleting(&ConfigMap::default()));
/// ```
pub fn is_deleting<K: Resource>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn with_finalizers(names: &[&str]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                finalizers: Some(names.iter().map(|name| (*name).to_owned()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn adding_keeps_other_finalizers_in_order() {
        let mut object = with_finalizers(&["other.dev/a"]);
        assert!(add(&mut object, "mine.dev/b"));
        assert_eq!(
            object.metadata.finalizers.unwrap(),
            ["other.dev/a", "mine.dev/b"]
        );
    }

    #[test]
    fn removing_leaves_other_finalizers_alone() {
        let mut object = with_finalizers(&["other.dev/a", "mine.dev/b"]);
        assert!(remove(&mut object, "mine.dev/b"));
        assert_eq!(object.metadata.finalizers.unwrap(), ["other.dev/a"]);
    }

    #[test]
    fn removing_from_an_object_without_finalizers_changes_nothing() {
        assert!(!remove(&mut ConfigMap::default(), "mine.dev/b"));
    }
}
