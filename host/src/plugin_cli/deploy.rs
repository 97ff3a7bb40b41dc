//! `leasehold plugin deploy`: create or update a Plugin through the
//! current kubeconfig, with the component in a ConfigMap beside it (the
//! convention the upload API follows) or in an OCI registry.

use std::path::PathBuf;

use kube::Client;

use super::{Error, Result, validate};
use crate::oci::{self, PullOptions};
use crate::plugins::resource::{OciSource, Source};
use crate::plugins::store::{Component, Intent, Store};

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
    super::new::check_name(&options.name, super::new::Lang::Js)?;
    let config = options.config.as_deref().map(parse_config).transpose()?;
    let client = Client::try_default().await.map_err(|source| Error::Kube {
        action: "connect to Kubernetes with the current kubeconfig".into(),
        source,
    })?;
    let store = Store::new(client, &options.namespace, FIELD_MANAGER);
    let intent = Intent {
        service_account: Some(&options.service_account),
        config,
    };
    let existing = store.existing(&options.name).await?;
    match (&options.file, &options.oci) {
        (Some(file), _) => {
            let validated = validate::validate_file(file).await?;
            let size = validated.bytes.len();
            let component = Component {
                bytes: validated.bytes,
                digest: &validated.digest,
            };
            store
                .put(&options.name, existing, component, intent)
                .await?;
            println!(
                "stored:    {} ({size} bytes) in configmap {}/{}",
                validated.digest,
                options.namespace,
                Store::config_map_name(&options.name),
            );
        }
        (None, Some(reference)) => {
            let source = check_artifact(reference, options.insecure).await?;
            store.point(&options.name, existing, source, intent).await?;
        }
        (None, None) => unreachable!("clap requires a file or --oci"),
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

/// Pulls the artifact as the cluster will, so a typo or an artifact that
/// is not a controller fails here rather than on the leader.
async fn check_artifact(reference: &str, insecure: bool) -> Result<Source> {
    let parsed = oci::parse(reference).map_err(Error::Reference)?;
    let options = PullOptions {
        insecure,
        ..PullOptions::default()
    };
    let pulled = oci::pull(&parsed, &options)
        .await
        .map_err(|source| Error::Registry {
            action: "pull",
            reference: reference.to_owned(),
            source,
        })?;
    let validated = validate::validate(reference.as_ref(), pulled.bytes).await?;
    println!("checked:   {reference} ({})", validated.digest);
    Ok(Source {
        oci: Some(OciSource {
            reference: reference.to_owned(),
            insecure,
            pull_secret: None,
        }),
        ..Source::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
