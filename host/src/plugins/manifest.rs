//! The plugin manifest: what a plugin is, where its component is, who it
//! acts as, and what it may use.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::definition::{Definition, ServiceAccount, allowed_hosts, config_text};
use super::limits::{InvalidField, parse_budget, parse_limits};

/// A validated plugin manifest: a plugin and its component file.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub definition: Definition,
    /// The component file, resolved against the manifest's directory.
    pub component: PathBuf,
}

/// Why a manifest was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file cannot be read.
    #[error("cannot read the file")]
    Read(#[source] std::io::Error),
    /// The file is not a manifest in JSON.
    #[error("is not a valid manifest: {0}")]
    Syntax(#[source] serde_json::Error),
    /// A field has a value the host cannot use.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Raw {
    name: String,
    component: PathBuf,
    /// `namespace/name`.
    service_account: String,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLimits {
    memory: Option<String>,
    timeout: Option<String>,
    concurrency: Option<u16>,
    max_calls_per_reconcile: Option<u32>,
    #[serde(rename = "apiQPS")]
    api_qps: Option<u32>,
    api_burst: Option<u32>,
    min_requeue_after: Option<String>,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(ManifestError::Read)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
    }

    /// Parses and validates manifest text; `component` is resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ManifestError> {
        let raw: Raw = serde_json::from_str(text).map_err(ManifestError::Syntax)?;
        if !is_dns_label(&raw.name) {
            return Err(InvalidField::new(
                "name",
                format!(
                    "{:?} must be a DNS label (lowercase letters, digits and '-', at most 63)",
                    raw.name
                ),
            )
            .into());
        }
        let (namespace, account) = raw
            .service_account
            .split_once('/')
            .filter(|(ns, sa)| is_dns_label(ns) && !sa.is_empty())
            .ok_or_else(|| {
                InvalidField::new(
                    "serviceAccount",
                    format!("{:?} must be namespace/name", raw.service_account),
                )
            })?;
        let mut limits = parse_limits(
            raw.limits.memory.as_deref(),
            raw.limits.timeout.as_deref(),
            raw.limits.concurrency,
            "limits.concurrency",
        )?;
        if let Some(calls) = raw.limits.max_calls_per_reconcile {
            limits.max_calls = calls.max(1);
        }
        let budget = parse_budget(
            raw.limits.api_qps,
            raw.limits.api_burst,
            raw.limits.min_requeue_after.as_deref(),
        )?;
        Ok(Self {
            definition: Definition {
                name: raw.name,
                service_account: ServiceAccount::new(namespace, account),
                config: config_text(raw.config)?,
                limits,
                budget,
                admission: None,
                allowed_hosts: allowed_hosts(&raw.allowed_outbound_hosts)?,
            },
            component: base.join(raw.component),
        })
    }
}

fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::Limits;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("/plugins"))
    }

    #[test]
    fn a_full_manifest_resolves_its_component_and_limits() {
        let manifest = parse(
            r#"{"name": "mirror", "component": "mirror.wasm", "serviceAccount": "plugins/mirror",
                "config": {"selector": "a=b"}, "limits": {"memory": "32Mi", "timeout": "500ms", "concurrency": 2}}"#,
        )
        .unwrap();
        assert_eq!(manifest.component, Path::new("/plugins/mirror.wasm"));
        let definition = manifest.definition;
        assert_eq!(
            definition.service_account,
            ServiceAccount::new("plugins", "mirror")
        );
        assert_eq!(definition.limits.memory_bytes, 32 << 20);
        assert_eq!(definition.limits.timeout, Duration::from_millis(500));
        assert_eq!(&*definition.config, r#"{"selector":"a=b"}"#);
        assert!(
            definition.allowed_hosts.is_empty(),
            "no outbound HTTP by default"
        );
    }

    #[test]
    fn omitted_config_and_limits_take_defaults() {
        let manifest =
            parse(r#"{"name": "m", "component": "m.wasm", "serviceAccount": "ns/sa"}"#).unwrap();
        assert_eq!(manifest.definition.limits, Limits::default());
        assert_eq!(&*manifest.definition.config, "{}");
    }

    #[test]
    fn bad_manifests_name_the_field_at_fault() {
        let cases = [
            (
                r#"{"name": "Bad_Name", "component": "m.wasm", "serviceAccount": "ns/sa"}"#,
                "field name",
            ),
            (
                r#"{"name": "m", "component": "m.wasm", "serviceAccount": "sa"}"#,
                "field serviceAccount",
            ),
            (
                r#"{"name": "m", "component": "m.wasm", "serviceAccount": "ns/sa", "config": [1]}"#,
                "field config",
            ),
            (
                r#"{"name": "m", "component": "m.wasm", "serviceAccount": "ns/sa", "limits": {"memory": "lots"}}"#,
                "field limits.memory",
            ),
            (
                r#"{"name": "m", "component": "m.wasm", "serviceAccount": "ns/sa", "limits": {"memory": "4Gi"}}"#,
                "host maximum",
            ),
            (
                r#"{"name": "m", "component": "m.wasm", "serviceAccount": "ns/sa", "limits": {"timeout": "0s"}}"#,
                "field limits.timeout",
            ),
            (
                r#"{"name": "m", "component": "m.wasm", "serviceAccount": "ns/sa", "limits": {"concurrency": 0}}"#,
                "field limits.concurrency",
            ),
            (
                r#"{"name": "m", "component": "m.wasm", "serviceAccount": "ns/sa", "allowedOutboundHosts": ["api.example.com"]}"#,
                "field allowedOutboundHosts: entry \"api.example.com\": name a scheme",
            ),
            (
                r#"{"name": "m", "component": "m.wasm", "serviceAccount": "ns/sa", "typo": 1}"#,
                "unknown field",
            ),
            (r#"{"name": "m"}"#, "missing field"),
            ("not json", "is not a valid manifest"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
