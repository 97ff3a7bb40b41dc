//! The plugin manifest: what a plugin is, where its component is, who it
//! acts as, and what it may use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::runtime::{Limits, MAX_MEMORY_BYTES};

/// A validated plugin manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub name: String,
    /// The component file, resolved against the manifest's directory.
    pub component: PathBuf,
    pub service_account_namespace: String,
    pub service_account: String,
    /// The configuration handed to the plugin, as JSON text.
    pub config: Arc<str>,
    pub limits: Limits,
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
    #[error("field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
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
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLimits {
    memory: Option<String>,
    timeout: Option<String>,
    concurrency: Option<u16>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field,
        reason: reason.into(),
    }
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
            return Err(invalid(
                "name",
                format!(
                    "{:?} must be a DNS label (lowercase letters, digits and '-', at most 63)",
                    raw.name
                ),
            ));
        }
        let (namespace, account) = raw
            .service_account
            .split_once('/')
            .filter(|(ns, sa)| is_dns_label(ns) && !sa.is_empty())
            .ok_or_else(|| {
                invalid(
                    "serviceAccount",
                    format!("{:?} must be namespace/name", raw.service_account),
                )
            })?;
        let defaults = Limits::default();
        let memory_bytes = match &raw.limits.memory {
            None => defaults.memory_bytes,
            Some(text) => {
                parse_quantity(text).map_err(|reason| invalid("limits.memory", reason))?
            }
        };
        if memory_bytes > MAX_MEMORY_BYTES {
            return Err(invalid(
                "limits.memory",
                format!("{memory_bytes} bytes is more than the host maximum of {MAX_MEMORY_BYTES}"),
            ));
        }
        let timeout = match &raw.limits.timeout {
            None => defaults.timeout,
            Some(text) => humantime::parse_duration(text)
                .map_err(|error| invalid("limits.timeout", error.to_string()))?,
        };
        if timeout.is_zero() || timeout > Duration::from_secs(300) {
            return Err(invalid("limits.timeout", "must be between 1ms and 5m"));
        }
        let concurrency = raw.limits.concurrency.unwrap_or(defaults.concurrency);
        if concurrency == 0 {
            return Err(invalid("limits.concurrency", "must be at least 1"));
        }
        let config = match raw.config {
            None => "{}".to_owned(),
            Some(value @ Value::Object(_)) => value.to_string(),
            Some(_) => return Err(invalid("config", "must be a JSON object")),
        };
        Ok(Self {
            name: raw.name,
            component: base.join(raw.component),
            service_account_namespace: namespace.to_owned(),
            service_account: account.to_owned(),
            config: config.into(),
            limits: Limits {
                memory_bytes,
                timeout,
                concurrency,
            },
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

/// Parses a Kubernetes-style byte quantity: `1048576`, `512Ki`, `64Mi`, `1Gi`.
pub fn parse_quantity(text: &str) -> Result<usize, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte quantity (examples: 64Mi, 512Ki, 1Gi)"))?;
    let unit: usize = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(format!("{text:?} has an unknown unit (use Ki, Mi or Gi)")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            (
                manifest.service_account_namespace.as_str(),
                manifest.service_account.as_str()
            ),
            ("plugins", "mirror")
        );
        assert_eq!(manifest.limits.memory_bytes, 32 << 20);
        assert_eq!(manifest.limits.timeout, Duration::from_millis(500));
        assert_eq!(&*manifest.config, r#"{"selector":"a=b"}"#);
    }

    #[test]
    fn omitted_config_and_limits_take_defaults() {
        let manifest =
            parse(r#"{"name": "m", "component": "m.wasm", "serviceAccount": "ns/sa"}"#).unwrap();
        assert_eq!(manifest.limits, Limits::default());
        assert_eq!(&*manifest.config, "{}");
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

    #[test]
    fn quantities_use_binary_units() {
        assert_eq!(parse_quantity("1048576"), Ok(1 << 20));
        assert_eq!(parse_quantity("512Ki"), Ok(512 << 10));
        assert_eq!(parse_quantity("1Gi"), Ok(1 << 30));
        assert!(parse_quantity("1MB").unwrap_err().contains("unknown unit"));
        assert!(
            parse_quantity("Mi")
                .unwrap_err()
                .contains("not a byte quantity")
        );
    }
}
