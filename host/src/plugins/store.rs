//! The component store: how a component given to the cluster by hand (the
//! upload API, `leasehold plugin deploy`) is kept, one convention and one
//! flow for both.
//!
//! The component lives in ConfigMap `<plugin>-component` under
//! `component.wasm`, labelled `leasehold.dev/plugin=<plugin>` and owned by
//! its Plugin, so deleting the Plugin deletes it; the Plugin's source names
//! it with the component's digest, so a new component reloads the plugin.
//! Both objects are written with server-side apply under the writer's field
//! manager. `spec.source` and `spec.config` are atomic in the CRD, so an
//! apply replaces them whole, whoever wrote them before (a Plugin has exactly
//! one source, and `--config` replaces the configuration).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ObjectMeta, PartialObjectMeta, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::resource::{ConfigMapSource, Plugin, Source};

/// A ConfigMap holds at most 1 MiB (the API server's limit on `data` plus
/// `binaryData`), so a larger component could never be stored.
pub const MAX_COMPONENT_BYTES: usize = 1 << 20;

/// The `binaryData` key a stored component is kept under (the Plugin's
/// default key).
pub const COMPONENT_KEY: &str = "component.wasm";

/// Marks the ConfigMaps the store writes, with the Plugin's name: the store
/// never overwrites a ConfigMap that lacks it.
pub const PLUGIN_LABEL: &str = "leasehold.dev/plugin";

/// Why a component was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "configmap {namespace}/{name} exists and is not labelled {PLUGIN_LABEL}={plugin}; delete it or choose another plugin name"
    )]
    ForeignConfigMap {
        namespace: String,
        name: String,
        plugin: String,
    },
    #[error("plugin {namespace}/{plugin} does not exist: name its ServiceAccount to create it")]
    NoServiceAccount { namespace: String, plugin: String },
    #[error(
        "the component is {size} bytes; a ConfigMap holds at most {MAX_COMPONENT_BYTES} (push it to a registry instead)"
    )]
    TooLarge { size: usize },
    #[error("cannot {action} {object}")]
    Kube {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
}

/// A component to store, already validated by the caller.
#[derive(Debug)]
pub struct Component<'a> {
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: &'a str,
}

/// What the Plugin should say besides its source. `None` keeps what an
/// existing Plugin has.
#[derive(Debug, Default)]
pub struct Intent<'a> {
    pub service_account: Option<&'a str>,
    pub config: Option<serde_json::Value>,
}

/// What exists of a Plugin's objects before a store: read once, so a
/// caller can authorize the writes (create or update) before `put`.
#[derive(Debug)]
pub struct Existing {
    plugin: Option<Plugin>,
    config_map: Option<PartialObjectMeta<ConfigMap>>,
}

impl Existing {
    pub fn plugin(&self) -> bool {
        self.plugin.is_some()
    }

    pub fn config_map(&self) -> bool {
        self.config_map.is_some()
    }

    /// The ServiceAccount the existing Plugin runs as.
    pub fn service_account(&self) -> Option<&str> {
        self.plugin
            .as_ref()
            .map(|plugin| plugin.spec.service_account_name.as_str())
    }
}

/// The Plugin as stored, and whether the store created it.
#[derive(Debug)]
pub struct Stored {
    pub plugin: Plugin,
    pub created: bool,
}

/// The store of one namespace, writing as whoever `client` authenticates.
#[derive(Clone, Debug)]
pub struct Store {
    plugins: Api<Plugin>,
    config_maps: Api<ConfigMap>,
    namespace: String,
    field_manager: &'static str,
}

impl Store {
    pub fn new(client: kube::Client, namespace: &str, field_manager: &'static str) -> Self {
        Self {
            plugins: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            field_manager,
        }
    }

    /// The ConfigMap that holds `plugin`'s component.
    pub fn config_map_name(plugin: &str) -> String {
        format!("{plugin}-component")
    }

    /// Reads what exists of Plugin `name` and its ConfigMap.
    pub async fn existing(&self, name: &str) -> Result<Existing, StoreError> {
        let config_map = Self::config_map_name(name);
        Ok(Existing {
            plugin: self
                .plugins
                .get_opt(name)
                .await
                .map_err(self.failed("read", "plugin", name))?,
            config_map: self
                .config_maps
                .get_metadata_opt(&config_map)
                .await
                .map_err(self.failed("read", "configmap", &config_map))?,
        })
    }

    /// Stores `component` and points Plugin `name` at it, creating the
    /// Plugin if `intent` names a ServiceAccount. `existing` is what
    /// [`Store::existing`] read.
    ///
    /// The Plugin is checked by a dry run first, so a Plugin the API server
    /// would reject leaves no ConfigMap behind. The ConfigMap is written
    /// before the Plugin: when the new digest reaches the leader, the bytes
    /// it names are there.
    pub async fn put(
        &self,
        name: &str,
        Existing {
            plugin: existing,
            config_map: found,
        }: Existing,
        component: Component<'_>,
        intent: Intent<'_>,
    ) -> Result<Stored, StoreError> {
        if component.bytes.len() > MAX_COMPONENT_BYTES {
            return Err(StoreError::TooLarge {
                size: component.bytes.len(),
            });
        }
        let config_map = Self::config_map_name(name);
        if let Some(found) = &found
            && found.labels().get(PLUGIN_LABEL).map(String::as_str) != Some(name)
        {
            return Err(StoreError::ForeignConfigMap {
                namespace: self.namespace.clone(),
                name: config_map,
                plugin: name.to_owned(),
            });
        }
        let source = Source {
            config_map: Some(ConfigMapSource {
                name: config_map.clone(),
                key: COMPONENT_KEY.to_owned(),
                sha256: Some(component.digest.to_owned()),
            }),
            ..Source::default()
        };
        let plugin = self.desired(name, existing.as_ref(), source, intent)?;
        let apply = PatchParams::apply(self.field_manager).force();
        self.plugins
            .patch(name, &apply.clone().dry_run(), &Patch::Apply(&plugin))
            .await
            .map_err(self.failed("check", "plugin", name))?;
        let owner = existing.as_ref().map(owner_reference);
        self.apply_config_map(&config_map, name, Some(component.bytes), owner)
            .await?;
        let applied = match self
            .plugins
            .patch(name, &apply, &Patch::Apply(&plugin))
            .await
        {
            Ok(applied) => applied,
            Err(error) => {
                if found.is_none() {
                    self.remove(&config_map).await;
                }
                return Err(self.failed("write", "plugin", name)(error));
            }
        };
        if existing.is_none() {
            // Under a manager of its own: applying the ConfigMap again
            // without its data, as its writer, would remove the data.
            self.apply_config_map(&config_map, name, None, Some(owner_reference(&applied)))
                .await?;
        }
        Ok(Stored {
            plugin: applied,
            created: existing.is_none(),
        })
    }

    /// Points Plugin `name` at `source` (a registry's, say), creating it
    /// if `intent` names a ServiceAccount: one apply.
    pub async fn point(
        &self,
        name: &str,
        existing: Existing,
        source: Source,
        intent: Intent<'_>,
    ) -> Result<Stored, StoreError> {
        let plugin = self.desired(name, existing.plugin.as_ref(), source, intent)?;
        let apply = PatchParams::apply(self.field_manager).force();
        let applied = self
            .plugins
            .patch(name, &apply, &Patch::Apply(&plugin))
            .await
            .map_err(self.failed("write", "plugin", name))?;
        Ok(Stored {
            plugin: applied,
            created: existing.plugin.is_none(),
        })
    }

    /// The Plugin to apply: the whole intent, every time, since a field this
    /// manager applied before and leaves out now would be removed.
    fn desired(
        &self,
        name: &str,
        existing: Option<&Plugin>,
        source: Source,
        intent: Intent<'_>,
    ) -> Result<serde_json::Value, StoreError> {
        let spec = existing.map(|plugin| &plugin.spec);
        let service_account = intent
            .service_account
            .or(spec.map(|spec| spec.service_account_name.as_str()))
            .ok_or_else(|| StoreError::NoServiceAccount {
                namespace: self.namespace.clone(),
                plugin: name.to_owned(),
            })?;
        let mut plugin = json!({
            "apiVersion": Plugin::api_version(&()),
            "kind": Plugin::kind(&()),
            "metadata": {"name": name},
            "spec": {"source": source, "serviceAccountName": service_account},
        });
        if let Some(config) = intent
            .config
            .or_else(|| spec.and_then(|s| s.config.clone()))
        {
            plugin["spec"]["config"] = config;
        }
        Ok(plugin)
    }

    /// Applies the ConfigMap: with `bytes`, as the store's writer; without,
    /// only the owner, as a second manager.
    async fn apply_config_map(
        &self,
        name: &str,
        plugin: &str,
        bytes: Option<Vec<u8>>,
        owner: Option<OwnerReference>,
    ) -> Result<(), StoreError> {
        let manager = match bytes {
            Some(_) => self.field_manager.to_owned(),
            None => format!("{}-owner", self.field_manager),
        };
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([(
                    PLUGIN_LABEL.to_owned(),
                    plugin.to_owned(),
                )])),
                owner_references: owner.map(|owner| vec![owner]),
                ..ObjectMeta::default()
            },
            binary_data: bytes
                .map(|bytes| BTreeMap::from([(COMPONENT_KEY.to_owned(), ByteString(bytes))])),
            ..ConfigMap::default()
        };
        let mut body = serde_json::to_value(&config_map).expect("a ConfigMap serializes");
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("ConfigMap");
        self.config_maps
            .patch(
                name,
                &PatchParams::apply(&manager).force(),
                &Patch::Apply(&body),
            )
            .await
            .map(drop)
            .map_err(self.failed("write", "configmap", name))
    }

    /// Best effort: undoes a ConfigMap created for a Plugin that was not.
    async fn remove(&self, name: &str) {
        if let Err(error) = self
            .config_maps
            .delete(name, &DeleteParams::default())
            .await
        {
            tracing::warn!(configmap = %format!("{}/{name}", self.namespace), %error, "cannot remove the configmap of a failed store");
        }
    }

    fn failed(
        &self,
        action: &'static str,
        kind: &str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> StoreError {
        let object = format!("{kind} {}/{name}", self.namespace);
        move |source| StoreError::Kube {
            action,
            object,
            source,
        }
    }
}

/// A controller reference without `blockOwnerDeletion`, which would need
/// the right to update `plugins/finalizers` where that is enforced.
fn owner_reference(plugin: &Plugin) -> OwnerReference {
    OwnerReference {
        api_version: Plugin::api_version(&()).into_owned(),
        kind: Plugin::kind(&()).into_owned(),
        name: plugin.name_any(),
        uid: plugin.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_reference_names_the_plugin_without_blocking_deletion() {
        let mut plugin = Plugin::new("mirror", Default::default());
        plugin.metadata.uid = Some("u-1".into());
        let owner = owner_reference(&plugin);
        assert_eq!(owner.kind, "Plugin");
        assert_eq!(owner.name, "mirror");
        assert_eq!(owner.uid, "u-1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, None);
    }
}
