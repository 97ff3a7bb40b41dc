//! Registry credentials from a pull Secret, the kind a Pod's
//! `imagePullSecrets` names: `kubernetes.io/dockerconfigjson` (key
//! `.dockerconfigjson`) or the older `kubernetes.io/dockercfg` (`.dockercfg`).
//!
//! Parsed here rather than with a Docker credential crate: those read a
//! user's `~/.docker/config.json` and its credential helpers, which a host
//! must never run; a Secret holds only the two inline forms below.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

use crate::oci::Credentials;

/// Why a pull Secret gave no credentials for a registry.
#[derive(Debug, thiserror::Error)]
pub enum PullSecretError {
    #[error("Secret {name} has neither .dockerconfigjson nor .dockercfg")]
    NoDockerConfig { name: String },
    #[error("Secret {name} is not a Docker config: {reason}")]
    Invalid { name: String, reason: String },
    #[error("Secret {name} has no credentials for registry {registry} (it has: {found})")]
    NoEntry {
        name: String,
        registry: String,
        found: String,
    },
}

/// `.dockerconfigjson` wraps the registries in `auths`; `.dockercfg` is the map.
#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// One registry's entry: a user name and password, or both in `auth`
/// (base64 of `user:password`), as `docker login` writes it.
#[derive(Deserialize)]
struct Entry {
    username: Option<String>,
    password: Option<String>,
    auth: Option<ByteString>,
}

/// The credentials `secret` holds for `registry` (`host[:port]`).
pub fn credentials_for(secret: &Secret, registry: &str) -> Result<Credentials, PullSecretError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let invalid = |reason: String| PullSecretError::Invalid {
        name: name.clone(),
        reason,
    };
    let data = secret.data.as_ref();
    let entries = if let Some(json) = data.and_then(|d| d.get(".dockerconfigjson")) {
        serde_json::from_slice::<DockerConfigJson>(&json.0)
            .map_err(|error| invalid(error.to_string()))?
            .auths
    } else if let Some(json) = data.and_then(|d| d.get(".dockercfg")) {
        serde_json::from_slice(&json.0).map_err(|error| invalid(error.to_string()))?
    } else {
        return Err(PullSecretError::NoDockerConfig { name });
    };
    let entry = entries
        .iter()
        .find(|(key, _)| host_of(key) == registry)
        .map(|(_, entry)| entry)
        .ok_or_else(|| PullSecretError::NoEntry {
            name: name.clone(),
            registry: registry.to_owned(),
            found: entries.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
    match entry {
        Entry {
            username: Some(username),
            password: Some(password),
            ..
        } => Ok(Credentials {
            username: username.clone(),
            password: password.clone(),
        }),
        Entry {
            auth: Some(auth), ..
        } => {
            let text = std::str::from_utf8(&auth.0)
                .map_err(|_| invalid(format!("the auth of {registry} is not text")))?;
            let (username, password) = text
                .split_once(':')
                .ok_or_else(|| invalid(format!("the auth of {registry} is not user:password")))?;
            Ok(Credentials {
                username: username.to_owned(),
                password: password.to_owned(),
            })
        }
        _ => Err(invalid(format!(
            "the entry of {registry} has neither username and password nor auth"
        ))),
    }
}

/// Keys may be written as URLs (`https://index.docker.io/v1/`).
fn host_of(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, json: serde_json::Value) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("pull".to_owned()),
                ..Default::default()
            },
            data: Some([(key.to_owned(), ByteString(json.to_string().into_bytes()))].into()),
            ..Default::default()
        }
    }

    fn user(name: &str, password: &str) -> Credentials {
        Credentials {
            username: name.to_owned(),
            password: password.to_owned(),
        }
    }

    #[test]
    fn credentials_come_from_the_registrys_entry_in_either_form() {
        let config = secret(
            ".dockerconfigjson",
            serde_json::json!({"auths": {
                "https://ghcr.io/v2/": {"username": "u", "password": "p"},
                // `robot:s3:cret`, base64: the password keeps its colons.
                "127.0.0.1:5000": {"auth": "cm9ib3Q6czM6Y3JldA=="},
            }}),
        );
        assert_eq!(credentials_for(&config, "ghcr.io").unwrap(), user("u", "p"));
        assert_eq!(
            credentials_for(&config, "127.0.0.1:5000").unwrap(),
            user("robot", "s3:cret")
        );
        let legacy = secret(
            ".dockercfg",
            serde_json::json!({"quay.io": {"username": "q", "password": "r"}}),
        );
        assert_eq!(credentials_for(&legacy, "quay.io").unwrap(), user("q", "r"));
    }

    #[test]
    fn a_secret_without_credentials_for_the_registry_says_what_it_has() {
        let config = secret(
            ".dockerconfigjson",
            serde_json::json!({"auths": {"ghcr.io": {"auth": "dTpw"}}}),
        );
        let error = credentials_for(&config, "quay.io").unwrap_err().to_string();
        assert_eq!(
            error,
            "Secret pull has no credentials for registry quay.io (it has: ghcr.io)"
        );
        let opaque = secret("token", serde_json::json!("x"));
        assert!(matches!(
            credentials_for(&opaque, "quay.io"),
            Err(PullSecretError::NoDockerConfig { .. })
        ));
        let garbled = secret(
            ".dockerconfigjson",
            serde_json::json!({"auths": {"quay.io": {"auth": "bm9jb2xvbg=="}}}),
        );
        let error = credentials_for(&garbled, "quay.io")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not user:password"), "{error}");
        let not_json = Secret {
            data: Some([(".dockerconfigjson".to_owned(), ByteString(b"{".to_vec()))].into()),
            ..secret("x", serde_json::json!(1))
        };
        assert!(matches!(
            credentials_for(&not_json, "quay.io"),
            Err(PullSecretError::Invalid { .. })
        ));
    }
}
