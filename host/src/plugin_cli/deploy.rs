//! `leasehold plugin deploy`: create or update a Plugin through the
//! current kubeconfig, with the component in a ConfigMap beside it (the
//! convention the upload API follows) or in an OCI registry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use super::{Error, Result, validate};
use crate::api::{COMPONENT_KEY, MAX_COMPONENT_BYTES, PLUGIN_LABEL};
use crate::oci::{self, PullOptions};
use crate::plugins::{Plugin, PluginSpec};

/// The field manager of everything `deploy` writes.
const FIELD_MANAGER: &str = "leasehold-plugin-deploy";

#[derive(Debug, clap::Args)]
pub struct Options {
    /// The component (`.wasm`) to store in a ConfigMap.
    #[arg(required_unless_present = "oci", conflicts_with = "oci")]
    file: Option<PathBuf>,
    /// Instead of a file: an OCI reference the cluster pulls the component
    /// from (`leasehold plugin push` it first).
    #[arg(long, value_name = "REFERENCE")]
    oci: Option<String>,
    /// Pull over plain HTTP (with --oci).
    #[arg(long, requires = "oci")]
    insecure: bool,
    /// The Plugin's name.
    #[arg(long)]
    name: String,
    /// The namespace of the Plugin and its ServiceAccount.
    #[arg(long)]
    namespace: String,
    /// The ServiceAccount the plugin acts as.
    #[arg(long)]
    service_account: String,
    /// The plugin's configuration, a JSON object.
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
}

pub(super) async fn run(options: Options) -> Result<()> {
    super::new::check_name(&options.name)?;
    let config = options.config.as_deref().map(parse_config).transpose()?;
    let client = Client::try_default().await.map_err(|source| Error::Kube {
        action: "connect to Kubernetes with the current kubeconfig".into(),
        source,
    })?;
    let deploy = Deploy {
        plugins: Api::namespaced(client.clone(), &options.namespace),
        config_maps: Api::namespaced(client, &options.namespace),
        options: &options,
    };
    let source = match (&options.file, &options.oci) {
        (Some(file), _) => deploy.store_component(file).await?,
        (None, Some(reference)) => deploy.check_artifact(reference).await?,
        (None, None) => unreachable!("clap requires a file or --oci"),
    };
    let plugin = deploy.apply_plugin(source, config).await?;
    if options.file.is_some() {
        deploy.owned_by(&plugin).await?;
    }
    println!("deployed:  plugin {}/{}", options.namespace, options.name);
    Ok(())
}

/// `--config`: any JSON object (a Plugin's `spec.config`).
fn parse_config(text: &str) -> Result<serde_json::Value> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| Error::InvalidConfig {
            reason: error.to_string(),
        })?;
    if !value.is_object() {
        return Err(Error::InvalidConfig {
            reason: "it is not an object".into(),
        });
    }
    Ok(value)
}

struct Deploy<'a> {
    plugins: Api<Plugin>,
    config_maps: Api<ConfigMap>,
    options: &'a Options,
}

impl Deploy<'_> {
    fn config_map_name(&self) -> String {
        format!("{}-component", self.options.name)
    }

    /// Validates the file and writes it into `<name>-component`; returns
    /// the Plugin's source, carrying the digest whose change reloads it.
    async fn store_component(&self, file: &std::path::Path) -> Result<serde_json::Value> {
        let validated = validate::validate_file(file).await?;
        if validated.bytes.len() > MAX_COMPONENT_BYTES {
            return Err(Error::TooLarge {
                size: validated.bytes.len(),
                limit: MAX_COMPONENT_BYTES,
            });
        }
        let name = self.config_map_name();
        let kube = |action: &str| {
            let action = format!("{action} configmap {}/{name}", self.options.namespace);
            move |source| Error::Kube { action, source }
        };
        let existing = self
            .config_maps
            .get_opt(&name)
            .await
            .map_err(kube("read"))?;
        if let Some(existing) = &existing
            && existing.labels().get(PLUGIN_LABEL) != Some(&self.options.name)
        {
            return Err(Error::ForeignConfigMap {
                namespace: self.options.namespace.clone(),
                name,
                label: PLUGIN_LABEL,
                plugin: self.options.name.clone(),
            });
        }
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    PLUGIN_LABEL.to_owned(),
                    self.options.name.clone(),
                )])),
                ..ObjectMeta::default()
            },
            binary_data: Some(BTreeMap::from([(
                COMPONENT_KEY.to_owned(),
                ByteString(validated.bytes.clone()),
            )])),
            ..ConfigMap::default()
        };
        if existing.is_some() {
            self.config_maps
                .patch(&name, &patch_params(), &Patch::Merge(&config_map))
                .await
                .map_err(kube("update"))?;
        } else {
            self.config_maps
                .create(&post_params(), &config_map)
                .await
                .map_err(kube("create"))?;
        }
        println!(
            "stored:    {} ({} bytes) in configmap {}/{name}",
            validated.digest,
            validated.bytes.len(),
            self.options.namespace
        );
        Ok(json!({ "configMap": {
            "name": name,
            "key": COMPONENT_KEY,
            "sha256": validated.digest,
        }}))
    }

    /// Pulls the artifact as the cluster will, so a typo or an artifact
    /// that is not a controller fails here rather than on the leader.
    async fn check_artifact(&self, reference: &str) -> Result<serde_json::Value> {
        let parsed = oci::parse(reference).map_err(Error::Reference)?;
        let pulled = oci::pull(
            &parsed,
            &PullOptions {
                insecure: self.options.insecure,
                ..PullOptions::default()
            },
        )
        .await
        .map_err(|source| Error::Registry {
            action: "pull",
            reference: reference.to_owned(),
            source,
        })?;
        let validated = validate::validate(reference.as_ref(), pulled.bytes).await?;
        println!("checked:   {reference} ({})", validated.digest);
        Ok(json!({ "oci": { "reference": reference, "insecure": self.options.insecure } }))
    }

    /// Creates the Plugin, or points the existing one at `source` (clearing
    /// every other kind of source: a Plugin has exactly one).
    async fn apply_plugin(
        &self,
        source: serde_json::Value,
        config: Option<serde_json::Value>,
    ) -> Result<Plugin> {
        let name = &self.options.name;
        let kube = |action: &str| {
            let action = format!("{action} plugin {}/{name}", self.options.namespace);
            move |source| Error::Kube { action, source }
        };
        let existing = self.plugins.get_opt(name).await.map_err(kube("read"))?;
        if existing.is_none() {
            let spec: PluginSpec = serde_json::from_value(json!({
                "source": source,
                "serviceAccountName": self.options.service_account,
                "config": config,
            }))
            .expect("the spec is built from valid parts");
            return self
                .plugins
                .create(&post_params(), &Plugin::new(name, spec))
                .await
                .map_err(kube("create"));
        }
        let mut cleared = json!({ "configMap": null, "http": null, "oci": null, "image": null });
        if let (Some(cleared), Some(source)) = (cleared.as_object_mut(), source.as_object()) {
            cleared.extend(source.clone());
        }
        let mut spec = json!({
            "source": cleared,
            "serviceAccountName": self.options.service_account,
        });
        if let Some(config) = config {
            // A merge patch would merge the old and new configuration;
            // `--config` replaces it, so the old one is removed first.
            self.plugins
                .patch(
                    name,
                    &patch_params(),
                    &Patch::Merge(json!({ "spec": { "config": null } })),
                )
                .await
                .map_err(kube("update"))?;
            spec["config"] = config;
        }
        self.plugins
            .patch(
                name,
                &patch_params(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .map_err(kube("update"))
    }

    /// Makes the Plugin own its ConfigMap, so deleting one deletes both.
    async fn owned_by(&self, plugin: &Plugin) -> Result<()> {
        let Some(owner) = plugin.controller_owner_ref(&()) else {
            return Ok(());
        };
        let name = self.config_map_name();
        self.config_maps
            .patch(
                &name,
                &patch_params(),
                &Patch::Merge(json!({ "metadata": { "ownerReferences": [owner] } })),
            )
            .await
            .map(drop)
            .map_err(|source| Error::Kube {
                action: format!(
                    "set the owner of configmap {}/{name}",
                    self.options.namespace
                ),
                source,
            })
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_must_be_a_json_object() {
        assert_eq!(parse_config(r#"{"a": 1}"#).unwrap(), json!({ "a": 1 }));
        for bad in ["[1]", "3", "{", ""] {
            let error = parse_config(bad).unwrap_err().to_string();
            assert!(
                error.starts_with("--config must be a JSON object"),
                "{error}"
            );
        }
    }
}
