//! Fetching a Plugin's component from where its spec says it is, checked
//! against its digest and bounded in size.

use std::path::{Component as PathPart, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

use super::definition::ServiceAccount;
use super::pull_secret::{self, PullSecretError};
use super::resource::{ConfigMapSource, HttpSource, ImageSource, OciSource, Source};
use crate::body::{self, ReadError};
use crate::oci;

/// How long one HTTP fetch may take, start to finish.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A fetched component.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

impl Fetched {
    fn new(bytes: Vec<u8>) -> Self {
        let digest = oci::digest_of(&bytes);
        Self { bytes, digest }
    }
}

/// Why a component could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the source names nothing: set one of configMap, http, oci, image")]
    NoSource,
    #[error("ConfigMap {namespace}/{name} does not exist")]
    ConfigMapNotFound { namespace: String, name: String },
    #[error("ConfigMap {name} has no binaryData key {key:?} (keys: {keys})")]
    KeyMissing {
        name: String,
        key: String,
        keys: String,
    },
    #[error("cannot read ConfigMap {name}: {source}")]
    ConfigMapUnreadable {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot fetch {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url} answered {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("component is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("digest mismatch: the spec expects sha256:{expected}, the component is {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("path {path:?} must be relative to the plugin root and stay inside it")]
    PathOutsideRoot { path: String },
    #[error("cannot read {path}: {source}")]
    ImageFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Oci(#[from] oci::Error),
    #[error("pull Secret {namespace}/{name} does not exist")]
    PullSecretNotFound { namespace: String, name: String },
    #[error("cannot read pull Secret {name} as ServiceAccount {account}")]
    PullSecretUnreadable {
        name: String,
        account: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    PullSecret(#[from] PullSecretError),
}

impl FetchError {
    /// The condition reason a user sees on the Plugin.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoSource | Self::PathOutsideRoot { .. } => "InvalidSource",
            Self::ConfigMapNotFound { .. }
            | Self::KeyMissing { .. }
            | Self::PullSecretNotFound { .. } => "SourceNotFound",
            Self::PullSecretUnreadable {
                source: kube::Error::Api(status),
                ..
            } if status.code == 403 => "SourceUnauthorized",
            Self::PullSecret(_) => "InvalidSource",
            Self::ImageFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "SourceNotFound"
            }
            Self::TooLarge { .. } => "TooLarge",
            Self::DigestMismatch { .. } => "DigestMismatch",
            Self::Oci(error) => match error {
                oci::Error::InvalidReference { .. } => "InvalidSource",
                oci::Error::NotFound { .. } => "SourceNotFound",
                oci::Error::Unauthorized { .. } => "SourceUnauthorized",
                oci::Error::NotWasm { .. }
                | oci::Error::NotComponent { .. }
                | oci::Error::InvalidManifest { .. } => "NotWasm",
                oci::Error::DigestMismatch { .. } => "DigestMismatch",
                oci::Error::TooLarge { .. } => "TooLarge",
                oci::Error::Unreachable { .. }
                | oci::Error::TimedOut { .. }
                | oci::Error::Registry { .. } => "SourceUnreachable",
            },
            Self::ConfigMapUnreadable { .. }
            | Self::PullSecretUnreadable { .. }
            | Self::Unreachable { .. }
            | Self::HttpStatus { .. }
            | Self::ImageFile { .. } => "SourceUnreachable",
        }
    }

    /// Whether trying again later could succeed without a change of spec
    /// (a ConfigMap created later, a server back up).
    pub fn retryable(&self) -> bool {
        match self {
            Self::NoSource | Self::PathOutsideRoot { .. } | Self::TooLarge { .. } => false,
            // A tag may be pushed later; a registry may come back.
            Self::Oci(error) => {
                error.is_retryable() || matches!(error, oci::Error::NotFound { .. })
            }
            _ => true,
        }
    }
}

/// Fetches components for every kind of source.
#[derive(Clone)]
pub struct Fetcher {
    client: kube::Client,
    /// The base of the clients that read pull Secrets as a plugin's account.
    config: kube::Config,
    http: reqwest::Client,
    plugin_root: PathBuf,
    max_bytes: u64,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("plugin_root", &self.plugin_root)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    pub fn new(
        client: kube::Client,
        config: kube::Config,
        plugin_root: PathBuf,
        max_bytes: u64,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("a default reqwest client builds");
        Self {
            client,
            config,
            http,
            plugin_root,
            max_bytes,
        }
    }

    /// Fetches the component a Plugin in `namespace`, acting as `account`,
    /// names.
    pub async fn fetch(
        &self,
        namespace: &str,
        account: &ServiceAccount,
        source: &Source,
    ) -> Result<Fetched, FetchError> {
        match source {
            Source {
                config_map: Some(source),
                ..
            } => self.config_map(namespace, source).await,
            Source {
                http: Some(source), ..
            } => self.http(source).await,
            Source {
                oci: Some(source), ..
            } => self.oci(account, source).await,
            Source {
                image: Some(source),
                ..
            } => self.image(source).await,
            _ => Err(FetchError::NoSource),
        }
    }

    async fn config_map(
        &self,
        namespace: &str,
        source: &ConfigMapSource,
    ) -> Result<Fetched, FetchError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let config_map = api
            .get_opt(&source.name)
            .await
            .map_err(|error| FetchError::ConfigMapUnreadable {
                name: source.name.clone(),
                source: error,
            })?
            .ok_or_else(|| FetchError::ConfigMapNotFound {
                namespace: namespace.to_owned(),
                name: source.name.clone(),
            })?;
        let mut binary = config_map.binary_data.unwrap_or_default();
        let bytes = binary
            .remove(&source.key)
            .ok_or_else(|| FetchError::KeyMissing {
                name: source.name.clone(),
                key: source.key.clone(),
                keys: binary.keys().cloned().collect::<Vec<_>>().join(", "),
            })?
            .0;
        self.check_size(bytes.len() as u64)?;
        verify(Fetched::new(bytes), source.sha256.as_deref())
    }

    async fn http(&self, source: &HttpSource) -> Result<Fetched, FetchError> {
        let unreachable = |error: reqwest::Error| FetchError::Unreachable {
            url: source.url.clone(),
            message: error.without_url().to_string(),
        };
        let response = self
            .http
            .get(&source.url)
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(FetchError::HttpStatus {
                url: source.url.clone(),
                status: response.status().as_u16(),
            });
        }
        let bytes =
            body::read_bounded(response, self.max_bytes)
                .await
                .map_err(|error| match error {
                    ReadError::TooLarge { limit } => FetchError::TooLarge { limit },
                    ReadError::Http(error) => unreachable(error),
                })?;
        verify(Fetched::new(bytes), Some(&source.sha256))
    }

    async fn oci(
        &self,
        account: &ServiceAccount,
        source: &OciSource,
    ) -> Result<Fetched, FetchError> {
        let reference = oci::parse(&source.reference)?;
        let credentials = match &source.pull_secret {
            Some(name) => Some(
                self.credentials(account, name, reference.registry())
                    .await?,
            ),
            None => None,
        };
        let options = oci::PullOptions {
            insecure: source.insecure,
            max_bytes: self.max_bytes,
            credentials,
            ..oci::PullOptions::default()
        };
        let pulled = oci::pull(&reference, &options).await?;
        Ok(Fetched {
            bytes: pulled.bytes,
            digest: pulled.digest,
        })
    }

    /// Reads pull Secret `name` as the plugin's account, not as the host:
    /// a Plugin's author must not be able to send the host's view of every
    /// Secret in the namespace to a registry of their choosing.
    async fn credentials(
        &self,
        account: &ServiceAccount,
        name: &str,
        registry: &str,
    ) -> Result<oci::Credentials, FetchError> {
        let unreadable = |source| FetchError::PullSecretUnreadable {
            name: name.to_owned(),
            account: account.to_string(),
            source,
        };
        let client =
            kube::Client::try_from(account.impersonated_by(&self.config)).map_err(unreadable)?;
        let secrets: Api<Secret> = Api::namespaced(client, &account.namespace);
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(unreadable)?
            .ok_or_else(|| FetchError::PullSecretNotFound {
                namespace: account.namespace.clone(),
                name: name.to_owned(),
            })?;
        Ok(pull_secret::credentials_for(&secret, registry)?)
    }

    async fn image(&self, source: &ImageSource) -> Result<Fetched, FetchError> {
        let path = inside_root(&self.plugin_root, &source.path)?;
        let read = async {
            let size = tokio::fs::metadata(&path).await?.len();
            Ok::<_, std::io::Error>((size, path.clone()))
        };
        let (size, path) = read.await.map_err(|error| FetchError::ImageFile {
            path: path.clone(),
            source: error,
        })?;
        self.check_size(size)?;
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|error| FetchError::ImageFile {
                path,
                source: error,
            })?;
        Ok(Fetched::new(bytes))
    }

    fn check_size(&self, size: u64) -> Result<(), FetchError> {
        if size > self.max_bytes {
            return Err(FetchError::TooLarge {
                limit: self.max_bytes,
            });
        }
        Ok(())
    }
}

/// `relative` joined to `root`, refusing absolute paths and `..`.
fn inside_root(root: &Path, relative: &str) -> Result<PathBuf, FetchError> {
    let path = Path::new(relative);
    let plain = !relative.is_empty()
        && path
            .components()
            .all(|part| matches!(part, PathPart::Normal(_) | PathPart::CurDir));
    if !plain {
        return Err(FetchError::PathOutsideRoot {
            path: relative.to_owned(),
        });
    }
    Ok(root.join(path))
}

/// Checks `fetched` against an expected digest (hex, `sha256:` optional).
fn verify(fetched: Fetched, expected: Option<&str>) -> Result<Fetched, FetchError> {
    let Some(expected) = expected else {
        return Ok(fetched);
    };
    let expected = expected.strip_prefix("sha256:").unwrap_or(expected);
    if fetched.digest.strip_prefix("sha256:") != Some(expected) {
        return Err(FetchError::DigestMismatch {
            expected: expected.to_owned(),
            actual: fetched.digest,
        });
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_stay_inside_the_plugin_root() {
        let root = Path::new("/plugins");
        assert_eq!(
            inside_root(root, "examples/mirror.wasm").unwrap(),
            Path::new("/plugins/examples/mirror.wasm")
        );
        for escaping in ["/etc/passwd", "../secret.wasm", "a/../../b.wasm", ""] {
            let error = inside_root(root, escaping).unwrap_err();
            assert_eq!(error.reason(), "InvalidSource", "{escaping}");
        }
    }

    #[test]
    fn a_digest_matches_with_or_without_its_prefix() {
        let fetched = Fetched::new(b"component".to_vec());
        let hex = fetched.digest.trim_start_matches("sha256:").to_owned();
        assert!(verify(fetched.clone(), Some(&hex)).is_ok());
        assert!(verify(fetched.clone(), Some(&fetched.digest.clone())).is_ok());
        assert!(verify(fetched.clone(), None).is_ok());
        let error = verify(fetched, Some(&"0".repeat(64))).unwrap_err();
        assert_eq!(error.reason(), "DigestMismatch");
        assert!(error.to_string().contains(&hex), "{error}");
    }
}
