//! What the SDK knows about Kubernetes objects: the [`Object`] bound every
//! typed call takes, and the two small names the contract uses to address
//! objects, [`ObjectRef`] and [`TypeMeta`].

use std::fmt;

use kube_core::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A Kubernetes object type the SDK can send and receive.
///
/// Every k8s-openapi type with `ObjectMeta` (ConfigMap, Deployment, …) is
/// one, and so is a custom resource derived with kube's `CustomResource`,
/// because both implement kube's [`Resource`] with a static type.
///
/// ```
/// use leasehold_sdk::Object;
/// use k8s_openapi::api::core::v1::ConfigMap;
///
/// fn kind_of<K: Object>() -> String {
///     leasehold_sdk::TypeMeta::of::<K>().kind
/// }
/// assert_eq!(kind_of::<ConfigMap>(), "ConfigMap");
/// ```
pub trait Object: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone {}

impl<K> Object for K where K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone {}

/// Where an object lives: its namespace (absent for cluster-scoped objects)
/// and its name.
///
/// ```
/// use leasehold_sdk::ObjectRef;
///
/// let reference = ObjectRef::namespaced("default", "settings");
/// assert_eq!(reference.to_string(), "default/settings");
/// assert_eq!(ObjectRef::cluster("kube-system").to_string(), "kube-system");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The object's `metadata.name`.
    pub name: String,
}

impl ObjectRef {
    /// A reference to a namespaced object.
    ///
    /// ```
    /// let reference = leasehold_sdk::ObjectRef::namespaced("default", "settings");
    /// assert_eq!(reference.namespace.as_deref(), Some("default"));
    /// ```
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// A reference to a cluster-scoped object.
    ///
    /// ```
    /// let reference = leasehold_sdk::ObjectRef::cluster("team-a");
    /// assert_eq!(reference.namespace, None);
    /// ```
    pub fn cluster(name: impl Into<String>) -> Self {
        Self {
            namespace: None,
            name: name.into(),
        }
    }

    /// The reference of an object; its name is empty when unset.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    /// use leasehold_sdk::ObjectRef;
    ///
    /// let config_map = ConfigMap {
    ///     metadata: ObjectMeta { namespace: Some("default".into()), name: Some("settings".into()), ..Default::default() },
    ///     ..Default::default()
    /// };
    /// assert_eq!(ObjectRef::from_object(&config_map), ObjectRef::namespaced("default", "settings"));
    /// ```
    pub fn from_object<K: Object>(object: &K) -> Self {
        let meta = object.meta();
        Self {
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A resource type as the host's API calls name it: `apiVersion` and
/// `kind`, as in Kubernetes' `TypeMeta`.
///
/// ```
/// use k8s_openapi::api::apps::v1::Deployment;
/// use leasehold_sdk::TypeMeta;
///
/// let type_meta = TypeMeta::of::<Deployment>();
/// assert_eq!((type_meta.api_version.as_str(), type_meta.kind.as_str()), ("apps/v1", "Deployment"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeMeta {
    /// `group/version`, or only `version` for the core group.
    pub api_version: String,
    /// The kind, for example `ConfigMap`.
    pub kind: String,
}

impl TypeMeta {
    /// The type meta of a Rust object type.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// assert_eq!(leasehold_sdk::TypeMeta::of::<ConfigMap>().api_version, "v1");
    /// ```
    pub fn of<K: Object>() -> Self {
        Self {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
        }
    }
}

impl fmt::Display for TypeMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version, self.kind)
    }
}
