//! Owner references: how a child object names the primary that controls it.
//!
//! The host maps a change to an owned child back to its primary through the
//! controller owner reference, and Kubernetes' garbage collector deletes the
//! child with its primary, so a plugin that sets one needs no cleanup for it.
//!
//! ```
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
//! use leasehold_sdk::owner;
//!
//! let primary = ConfigMap {
//!     metadata: ObjectMeta { name: Some("app".into()), namespace: Some("default".into()), uid: Some("1234".into()), ..Default::default() },
//!     ..Default::default()
//! };
//! let mut child = ConfigMap {
//!     metadata: ObjectMeta { name: Some("app-rendered".into()), namespace: Some("default".into()), ..Default::default() },
//!     ..Default::default()
//! };
//! owner::set_controller(&mut child, &primary).unwrap();
//! assert!(owner::is_controlled_by(&child, &primary));
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube_core::Resource;

use crate::object::Object;

/// Why an owner reference cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The owner has no `metadata.uid`: it was built in memory, not read
    /// from the API server.
    #[error("owner {name} has no uid; read it from the api server first")]
    MissingUid {
        /// The owner's name.
        name: String,
    },
    /// A namespaced owner can only own objects in its own namespace.
    #[error("owner in namespace {owner} cannot own an object in namespace {child}")]
    CrossNamespace {
        /// The owner's namespace.
        owner: String,
        /// The child's namespace.
        child: String,
    },
    /// Another object already controls the child.
    #[error("object is already controlled by {kind} {name}")]
    AlreadyControlled {
        /// The kind of the current controller.
        kind: String,
        /// The name of the current controller.
        name: String,
    },
}

/// The controller owner reference that points at `owner`.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
///
/// let owner = ConfigMap {
///     metadata: ObjectMeta { name: Some("app".into()), uid: Some("1234".into()), ..Default::default() },
///     ..Default::default()
/// };
/// let reference = leasehold_sdk::owner::controller_reference(&owner).unwrap();
/// assert_eq!((reference.kind.as_str(), reference.controller), ("ConfigMap", Some(true)));
/// ```
pub fn controller_reference<K: Object>(owner: &K) -> Result<OwnerReference, Error> {
    let meta = owner.meta();
    let name = meta.name.clone().unwrap_or_default();
    let Some(uid) = meta.uid.clone() else {
        return Err(Error::MissingUid { name });
    };
    Ok(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name,
        uid,
        controller: Some(true),
        // Blocking the owner's foreground deletion on its children needs
        // `update` on the owner's finalizers, RBAC a plugin rarely has; the
        // garbage collector removes the children either way.
        block_owner_deletion: None,
    })
}

/// Makes `owner` the controller of `child`, keeping any other (non-
/// controller) owner references; does nothing if it already is.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use leasehold_sdk::owner::{self, Error};
///
/// let unsaved = ConfigMap::default();
/// let error = owner::set_controller(&mut ConfigMap::default(), &unsaved).unwrap_err();
/// assert!(matches!(error, Error::MissingUid { .. }));
/// ```
pub fn set_controller<C: Resource, K: Object>(child: &mut C, owner: &K) -> Result<(), Error> {
    let reference = controller_reference(owner)?;
    if let (Some(owner_namespace), Some(child_namespace)) =
        (&owner.meta().namespace, &child.meta().namespace)
        && owner_namespace != child_namespace
    {
        return Err(Error::CrossNamespace {
            owner: owner_namespace.clone(),
            child: child_namespace.clone(),
        });
    }
    let references = child.meta_mut().owner_references.get_or_insert_default();
    if let Some(current) = references.iter().find(|r| r.controller == Some(true)) {
        if current.uid == reference.uid {
            return Ok(());
        }
        return Err(Error::AlreadyControlled {
            kind: current.kind.clone(),
            name: current.name.clone(),
        });
    }
    references.push(reference);
    Ok(())
}

/// The owner reference of `object`'s controller, if it has one.
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// assert!(leasehold_sdk::owner::controller_of(&ConfigMap::default()).is_none());
/// ```
pub fn controller_of<C: Resource>(object: &C) -> Option<&OwnerReference> {
    object
        .meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `owner` is `child`'s controller (compared by uid, so a deleted
/// and recreated owner of the same name does not count).
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// assert!(!leasehold_sdk::owner::is_controlled_by(&ConfigMap::default(), &ConfigMap::default()));
/// ```
pub fn is_controlled_by<C: Resource, K: Object>(child: &C, owner: &K) -> bool {
    match (controller_of(child), &owner.meta().uid) {
        (Some(reference), Some(uid)) => &reference.uid == uid,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn object(namespace: &str, name: &str, uid: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                uid: uid.map(Into::into),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn setting_the_same_controller_twice_adds_one_reference() {
        let owner = object("a", "owner", Some("1"));
        let mut child = object("a", "child", None);
        set_controller(&mut child, &owner).unwrap();
        set_controller(&mut child, &owner).unwrap();
        assert_eq!(child.metadata.owner_references.unwrap().len(), 1);
    }

    #[test]
    fn a_child_controlled_by_another_owner_is_refused() {
        let mut child = object("a", "child", None);
        set_controller(&mut child, &object("a", "first", Some("1"))).unwrap();
        let error = set_controller(&mut child, &object("a", "second", Some("2"))).unwrap_err();
        assert_eq!(
            error,
            Error::AlreadyControlled {
                kind: "ConfigMap".into(),
                name: "first".into()
            }
        );
    }

    #[test]
    fn an_owner_cannot_control_a_child_in_another_namespace() {
        let error = set_controller(
            &mut object("b", "child", None),
            &object("a", "owner", Some("1")),
        )
        .unwrap_err();
        assert!(matches!(error, Error::CrossNamespace { .. }));
    }

    #[test]
    fn a_recreated_owner_with_the_same_name_is_not_the_controller() {
        let mut child = object("a", "child", None);
        set_controller(&mut child, &object("a", "owner", Some("1"))).unwrap();
        assert!(!is_controlled_by(&child, &object("a", "owner", Some("2"))));
    }
}
