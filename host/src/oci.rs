//! Controller plugins as wasm OCI artifacts: pull one from a registry, push one.
//!
//! The registry protocol is `oci-client`'s (the client `wkg`, wash and Spin
//! use) and the artifact layout is `oci-wasm`'s, the CNCF wasm OCI artifact
//! layout: an OCI image manifest whose config is a [`WasmConfig`] (media type
//! [`WASM_CONFIG_MEDIA_TYPE`], naming the component's world) and whose single
//! layer ([`WASM_LAYER_MEDIA_TYPE`]) is the component. So `wkg oci pull`
//! reads what `leasehold plugin push` wrote, and a Plugin can name what
//! `wkg oci push` wrote. Pulling also accepts any OCI (or Docker v2) image
//! manifest with exactly one `application/wasm` layer, and an image index,
//! from which the `wasm` platform is taken.
//!
//! What stays here is the thin layer a Plugin's status needs: the size bound
//! (checked against the manifest, then while streaming, so an oversized blob
//! is never held in memory), one deadline for the whole pull, and errors
//! sorted into the reasons a user acts on. A manifest is read whole by
//! `oci-client`, without a size bound of its own: only the deadline bounds
//! it (the hand-written client capped it at 4 MiB). Registries on loopback, or marked
//! `insecure`, are spoken to over plain HTTP; every other one over HTTPS.
//! Access is anonymous unless [`Credentials`] are given; a registry's bearer
//! challenge is answered by `oci-client`.
//!
//! ```no_run
//! # async fn example() -> Result<(), leasehold::oci::Error> {
//! use leasehold::oci::{self, PullOptions, PushOptions};
//!
//! let reference = oci::parse("127.0.0.1:5000/plugins/greeter:1.0")?;
//! let component = std::fs::read("greeter.wasm").expect("a component");
//! let pushed = oci::push(&reference, &component, &PushOptions::default()).await?;
//! let pulled = oci::pull(&reference, &PullOptions::default()).await?;
//! assert_eq!(pulled.digest, pushed.digest);
//! # Ok(()) }
//! ```

use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use oci_wasm::{ToConfig, WasmConfig};
use tokio::io::AsyncWrite;

pub use crate::runtime::digest_of;
pub use oci_client::Reference;
pub use oci_wasm::{
    WASM_LAYER_MEDIA_TYPE, WASM_MANIFEST_CONFIG_MEDIA_TYPE as WASM_CONFIG_MEDIA_TYPE,
    WASM_MANIFEST_MEDIA_TYPE as OCI_MANIFEST_MEDIA_TYPE,
};

/// Default bound on a pulled component. Controllers built from the SDK are
/// well under 1 MiB; 64 MiB leaves room for components that embed an
/// interpreter (componentize-py, componentize-js) and still stops a wrong
/// reference from filling a replica's memory with a container image layer.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default time for a whole pull or push.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors from pulling or pushing an artifact.
///
/// [`Unreachable`](Error::Unreachable), [`TimedOut`](Error::TimedOut) and
/// [`Registry`](Error::Registry) with a 5xx or 429 status are worth retrying
/// ([`Error::is_retryable`]); the others need a person to change the
/// reference, the artifact or the credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference is malformed.
    #[error("invalid OCI reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// The registry (or its token service) could not be reached: DNS,
    /// connection refused, TLS or a connection cut mid-transfer.
    #[error("registry {registry} unreachable")]
    Unreachable {
        registry: String,
        #[source]
        source: OciDistributionError,
    },
    /// The registry did not finish in time.
    #[error("registry {registry} did not answer within {after:?}")]
    TimedOut { registry: String, after: Duration },
    /// The repository, tag or digest does not exist in the registry.
    #[error("{reference} not found")]
    NotFound { reference: String },
    /// The registry refused access: credentials are missing or wrong, or they
    /// do not grant this repository.
    #[error("registry {registry} denied access: {message}")]
    Unauthorized { registry: String, message: String },
    /// The artifact is not a wasm component: its manifest has no single
    /// `application/wasm` layer (`found` says what it has instead).
    #[error(
        "{reference} is not a wasm artifact: expected one {WASM_LAYER_MEDIA_TYPE} layer, found {found}"
    )]
    NotWasm { reference: String, found: String },
    /// What was to be pushed is not a component.
    #[error("not a wasm component: {reason}")]
    NotComponent { reason: String },
    /// Content does not hash to the digest it was named by.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// The component is larger than allowed.
    #[error("artifact larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The registry served a manifest this client cannot read.
    #[error("invalid manifest for {reference}: {reason}")]
    InvalidManifest { reference: String, reason: String },
    /// Any other answer the registry should not have given.
    #[error("registry answered {}: {message}", status.map_or("an error".to_owned(), |s| s.to_string()))]
    Registry {
        status: Option<u16>,
        message: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether trying again later may succeed without anyone changing
    /// anything (the network or the registry was briefly unwell).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::TimedOut { .. } => true,
            Error::Registry { status, .. } => status.is_some_and(|s| s >= 500 || s == 429),
            _ => false,
        }
    }
}

/// Parses `host[:port]/repository[:tag][@sha256:...]`.
///
/// The registry host must be written out: a plugin reference should say
/// where it comes from, so there is no implicit Docker Hub (which
/// `oci-client` alone would assume). Without a tag or a digest the tag is
/// `latest`.
///
/// ```
/// use leasehold::oci;
/// let reference = oci::parse("ghcr.io/acme/plugins/mirror:1.2").unwrap();
/// assert_eq!(reference.registry(), "ghcr.io");
/// assert_eq!(reference.repository(), "acme/plugins/mirror");
/// assert_eq!(reference.tag(), Some("1.2"));
/// assert!(oci::parse("mirror:1.2").is_err());
/// ```
pub fn parse(input: &str) -> Result<Reference> {
    let invalid = |reason: String| Error::InvalidReference {
        reference: input.to_owned(),
        reason,
    };
    let host = input.split_once('/').map(|(host, _)| host);
    if !host.is_some_and(|host| host.contains(['.', ':']) || host == "localhost") {
        return Err(invalid(
            "name the registry host, as in ghcr.io/acme/plugin:1.0".to_owned(),
        ));
    }
    input
        .parse::<Reference>()
        .map_err(|error| invalid(error.to_string()))
}

// === pull and push ===

/// How to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// The largest component accepted, in bytes ([`DEFAULT_MAX_BYTES`]).
    pub max_bytes: u64,
    /// Time for the whole pull ([`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Plain HTTP even off loopback (a registry without TLS).
    pub insecure: bool,
    /// Credentials for the registry; anonymous if `None`.
    pub credentials: Option<Credentials>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            timeout: DEFAULT_TIMEOUT,
            insecure: false,
            credentials: None,
        }
    }
}

/// How to push.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Time for the whole push ([`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Plain HTTP even off loopback (a registry without TLS).
    pub insecure: bool,
    /// Credentials for the registry; anonymous if `None`.
    pub credentials: Option<Credentials>,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            insecure: false,
            credentials: None,
        }
    }
}

/// A user name and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

fn auth(credentials: Option<&Credentials>) -> RegistryAuth {
    match credentials {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    }
}

/// A pulled component.
#[derive(Clone)]
pub struct Pulled {
    /// The component, checked against `digest`.
    pub bytes: Vec<u8>,
    /// The component's digest, `sha256:<hex>`.
    pub digest: String,
    /// The digest of the manifest pulled (pin the reference to it to get the
    /// same component again).
    pub manifest_digest: String,
}

impl fmt::Debug for Pulled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pulled")
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("digest", &self.digest)
            .field("manifest_digest", &self.manifest_digest)
            .finish()
    }
}

/// What a push stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The component's digest, `sha256:<hex>`.
    pub digest: String,
    /// The manifest's digest: `reference.clone_with_digest(manifest_digest)`
    /// names exactly this artifact.
    pub manifest_digest: String,
}

/// Pulls the component that `reference` names, checking every digest and
/// stopping as soon as it is larger than `options.max_bytes`.
pub async fn pull(reference: &Reference, options: &PullOptions) -> Result<Pulled> {
    let client = client(reference, options.insecure);
    let auth = auth(options.credentials.as_ref());
    within(reference, options.timeout, async {
        let (manifest, manifest_digest) = client.pull_image_manifest(reference, &auth).await?;
        let layer = wasm_layer(&manifest).ok_or_else(|| Error::NotWasm {
            reference: reference.to_string(),
            found: describe_layers(&manifest),
        })?;
        if u64::try_from(layer.size).unwrap_or(u64::MAX) > options.max_bytes {
            return Err(Error::TooLarge {
                limit: options.max_bytes,
            }
            .into());
        }
        let mut bytes = Bounded::new(options.max_bytes);
        // Checks the layer's digest (and the registry's digest header).
        client.pull_blob(reference, layer, &mut bytes).await?;
        tracing::debug!(%reference, digest = %layer.digest, size = bytes.0.len(), "pulled wasm artifact");
        Ok::<_, Failure>(Pulled {
            bytes: bytes.0,
            digest: layer.digest.clone(),
            manifest_digest,
        })
    })
    .await
}

/// Pushes `component` as a wasm OCI artifact to `reference` (its tag, or
/// its digest, which must then be the digest of the manifest pushed).
pub async fn push(
    reference: &Reference,
    component: &[u8],
    options: &PushOptions,
) -> Result<Pushed> {
    let (mut config, layer) =
        WasmConfig::from_raw_component(component.to_vec(), None).map_err(|error| {
            Error::NotComponent {
                reason: format!("{error:#}"),
            }
        })?;
    // The epoch, as reproducible builds use: the same component pushed twice
    // is the same manifest, so its digest can be known before pushing.
    config.created = chrono::DateTime::UNIX_EPOCH;
    let config = config.to_config().map_err(|error| Error::NotComponent {
        reason: format!("{error:#}"),
    })?;
    let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
    manifest.media_type = Some(OCI_MANIFEST_MEDIA_TYPE.to_owned());
    let body = serde_json::to_vec(&manifest).expect("a manifest serializes");
    let manifest_digest = digest_of(&body);
    if let Some(expected) = reference.digest()
        && expected != manifest_digest
    {
        return Err(Error::DigestMismatch {
            expected: expected.to_owned(),
            actual: manifest_digest,
        });
    }
    let client = client(reference, options.insecure);
    let auth = auth(options.credentials.as_ref());
    let digest = manifest.layers[0].digest.clone();
    within(reference, options.timeout, async {
        client
            .auth(reference, &auth, RegistryOperation::Push)
            .await?;
        client.push_blob(reference, &layer.data, &digest).await?;
        client
            .push_blob(reference, &config.data, &manifest.config.digest)
            .await?;
        let content_type = http::HeaderValue::from_static(OCI_MANIFEST_MEDIA_TYPE);
        client
            .push_manifest_raw(reference, body, content_type)
            .await?;
        Ok::<_, Failure>(())
    })
    .await?;
    tracing::debug!(%reference, %digest, %manifest_digest, "pushed wasm artifact");
    Ok(Pushed {
        digest,
        manifest_digest,
    })
}

/// A client for `reference`'s registry. One per pull: the registry decides
/// the protocol, and bearer tokens are scoped to it anyway.
fn client(reference: &Reference, insecure: bool) -> Client {
    let registry = reference.resolve_registry();
    let protocol = if insecure || is_loopback(registry) {
        ClientProtocol::HttpsExcept(vec![registry.to_owned()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(wasm_platform)),
        ..ClientConfig::default()
    })
}

fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Runs a registry exchange under one deadline, sorting its errors.
async fn within<T>(
    reference: &Reference,
    timeout: Duration,
    exchange: impl Future<Output = Result<T, Failure>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(|failure| failure.sorted(reference)),
        Err(_) => Err(Error::TimedOut {
            registry: reference.registry().to_owned(),
            after: timeout,
        }),
    }
}

/// An error inside an exchange: already sorted, or `oci-client`'s, to sort.
enum Failure {
    Sorted(Error),
    Client(OciDistributionError),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Sorted(error)
    }
}

impl From<OciDistributionError> for Failure {
    fn from(error: OciDistributionError) -> Self {
        Failure::Client(error)
    }
}

impl Failure {
    fn sorted(self, reference: &Reference) -> Error {
        match self {
            Failure::Sorted(error) => error,
            Failure::Client(error) => sort(error, reference),
        }
    }
}

/// Sorts `oci-client`'s error into the reasons a Plugin's status reports.
fn sort(error: OciDistributionError, reference: &Reference) -> Error {
    use OciDistributionError as E;
    let registry = || reference.registry().to_owned();
    let not_found = || Error::NotFound {
        reference: reference.to_string(),
    };
    let invalid_manifest = |reason: String| Error::InvalidManifest {
        reference: reference.to_string(),
        reason,
    };
    match error {
        E::IoError(io) if io.get_ref().is_some_and(|inner| inner.is::<Overflow>()) => {
            let limit = io
                .into_inner()
                .and_then(|inner| inner.downcast::<Overflow>().ok());
            Error::TooLarge {
                limit: limit.map_or(0, |overflow| overflow.0),
            }
        }
        E::DigestError(oci_client::errors::DigestError::VerificationError { expected, actual }) => {
            Error::DigestMismatch { expected, actual }
        }
        E::UnauthorizedError { .. } => Error::Unauthorized {
            registry: registry(),
            message: "authentication required".to_owned(),
        },
        E::AuthenticationFailure(message) => Error::Unauthorized {
            registry: registry(),
            message,
        },
        E::RegistryError { envelope, .. } => {
            let message = envelope
                .errors
                .iter()
                .map(|e| e.message.trim())
                .filter(|m| !m.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            match envelope.errors.first().map(|e| &e.code) {
                Some(
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NotFound,
                ) => not_found(),
                Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => Error::Unauthorized {
                    registry: registry(),
                    message,
                },
                Some(OciErrorCode::Toomanyrequests) => Error::Registry {
                    status: Some(429),
                    message,
                },
                _ => Error::Registry {
                    status: None,
                    message,
                },
            }
        }
        E::ServerError { code: 404, .. } => not_found(),
        E::ServerError {
            code: 401 | 403,
            message,
            ..
        } => Error::Unauthorized {
            registry: registry(),
            message: message.trim().to_owned(),
        },
        E::ServerError { code, message, .. } => Error::Registry {
            status: Some(code),
            message: message.trim().to_owned(),
        },
        E::RequestError(ref request) if request.status().is_some() => {
            let status = request.status().map(|s| s.as_u16());
            match status {
                Some(404) => not_found(),
                _ => Error::Registry {
                    status,
                    message: error.to_string(),
                },
            }
        }
        E::RequestError(_) | E::IoError(_) => Error::Unreachable {
            registry: registry(),
            source: error,
        },
        E::ImageManifestNotFoundError(reason) => Error::NotWasm {
            reference: reference.to_string(),
            found: reason,
        },
        E::ManifestParsingError(reason)
        | E::VersionedParsingError(reason)
        | E::SpecViolationError(reason) => invalid_manifest(reason),
        E::UnsupportedMediaTypeError(media_type) => {
            invalid_manifest(format!("unsupported media type {media_type}"))
        }
        E::UnsupportedSchemaVersionError(version) => {
            invalid_manifest(format!("unsupported schema version {version}"))
        }
        other => Error::Registry {
            status: None,
            message: other.to_string(),
        },
    }
}

/// From an image index, the manifest of the `wasm` platform, or the only
/// entry. `oci-client` would pick the host's own platform (linux/amd64).
fn wasm_platform(entries: &[ImageIndexEntry]) -> Option<String> {
    let wasm = entries.iter().find(|entry| {
        entry
            .platform
            .as_ref()
            .is_some_and(|p| p.architecture == "wasm")
    });
    match (wasm, entries) {
        (Some(entry), _) | (None, [entry]) => Some(entry.digest.clone()),
        _ => None,
    }
}

/// The component layer of an image manifest: exactly one `application/wasm`
/// layer, whatever the config is.
fn wasm_layer(manifest: &OciImageManifest) -> Option<&OciDescriptor> {
    let mut wasm = manifest
        .layers
        .iter()
        .filter(|layer| essence(&layer.media_type) == WASM_LAYER_MEDIA_TYPE);
    match (wasm.next(), wasm.next()) {
        (Some(layer), None) => Some(layer),
        _ => None,
    }
}

fn describe_layers(manifest: &OciImageManifest) -> String {
    if manifest.layers.is_empty() {
        return "no layers".to_owned();
    }
    let types: Vec<&str> = manifest
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    types.join(", ")
}

/// A media type without parameters (`application/json; charset=utf-8`).
fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or_default().trim()
}

/// The error a [`Bounded`] writer fails with once full.
#[derive(Debug, thiserror::Error)]
#[error("larger than {0} bytes")]
struct Overflow(u64);

/// A buffer that refuses to grow past its limit: `oci-client` streams the
/// blob into it, so a registry that sends more than the descriptor said is
/// cut off at the limit instead of filling memory.
struct Bounded(Vec<u8>, u64);

impl Bounded {
    fn new(limit: u64) -> Self {
        Self(Vec::new(), limit)
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        chunk: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let limit = self.1;
        if (self.0.len() + chunk.len()) as u64 > limit {
            return Poll::Ready(Err(std::io::Error::other(Overflow(limit))));
        }
        self.0.extend_from_slice(chunk);
        Poll::Ready(Ok(chunk.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::{StatusCode, header};
    use axum::routing::get;

    fn layer(media_type: &str) -> OciDescriptor {
        OciDescriptor {
            media_type: media_type.to_owned(),
            ..OciDescriptor::default()
        }
    }

    fn manifest(layers: &[&str]) -> OciImageManifest {
        OciImageManifest {
            layers: layers.iter().map(|media_type| layer(media_type)).collect(),
            ..OciImageManifest::default()
        }
    }

    fn entry(digest: &str, platform: Option<(&str, &str)>) -> ImageIndexEntry {
        serde_json::from_value(serde_json::json!({
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "digest": digest,
            "size": 1,
            "platform": platform.map(|(os, architecture)| serde_json::json!({"os": os, "architecture": architecture})),
        }))
        .unwrap()
    }

    #[test]
    fn references_must_name_their_registry() {
        let reference = parse("127.0.0.1:5000/acme/mirror@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(reference.registry(), "127.0.0.1:5000");
        assert_eq!(reference.repository(), "acme/mirror");
        assert!(reference.digest().is_some());
        assert_eq!(parse("localhost/a").unwrap().tag(), Some("latest"));
        for input in ["mirror:1.2", "acme/mirror:1.2", ""] {
            let error = parse(input).unwrap_err().to_string();
            assert!(error.contains("name the registry host"), "{input}: {error}");
        }
        let error = parse("ghcr.io/acme/mirror@sha256:abc")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            r#"invalid OCI reference "ghcr.io/acme/mirror@sha256:abc": invalid reference format"#
        );
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("ghcr.io"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn the_wasm_layer_of_a_wasm_artifact_or_an_image_is_selected() {
        let found = manifest(&[
            "application/vnd.oci.image.layer.v1.tar",
            WASM_LAYER_MEDIA_TYPE,
        ]);
        assert_eq!(
            wasm_layer(&found).unwrap().media_type,
            WASM_LAYER_MEDIA_TYPE
        );
        assert!(wasm_layer(&manifest(&[])).is_none());
        assert!(wasm_layer(&manifest(&[WASM_LAYER_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE])).is_none());
        assert_eq!(describe_layers(&manifest(&[])), "no layers");
        assert_eq!(describe_layers(&manifest(&["a", "b"])), "a, b");
    }

    #[test]
    fn an_index_yields_its_wasm_platform_or_its_only_entry() {
        let linux = entry("sha256:1", Some(("linux", "amd64")));
        let wasm = entry("sha256:2", Some(("wasip2", "wasm")));
        assert_eq!(
            wasm_platform(&[linux.clone(), wasm]).as_deref(),
            Some("sha256:2")
        );
        assert_eq!(
            wasm_platform(std::slice::from_ref(&linux)).as_deref(),
            Some("sha256:1")
        );
        assert_eq!(wasm_platform(&[linux.clone(), linux]), None);
    }

    #[test]
    fn registry_errors_are_sorted_into_what_a_user_can_act_on() {
        let reference = parse("127.0.0.1:1/a/b:1").unwrap();
        let envelope = |code: &str| OciDistributionError::RegistryError {
            envelope: serde_json::from_value(
                serde_json::json!({"errors": [{"code": code, "message": "told"}]}),
            )
            .unwrap(),
            url: String::new(),
        };
        let server = |code| OciDistributionError::ServerError {
            code,
            url: String::new(),
            message: " upstream down \n".to_owned(),
        };
        assert!(matches!(
            sort(envelope("MANIFEST_UNKNOWN"), &reference),
            Error::NotFound { .. }
        ));
        assert!(
            matches!(sort(envelope("DENIED"), &reference), Error::Unauthorized { message, .. } if message == "told")
        );
        let throttled = sort(envelope("TOOMANYREQUESTS"), &reference);
        assert!(throttled.is_retryable(), "{throttled:?}");
        assert!(matches!(
            sort(server(404), &reference),
            Error::NotFound { .. }
        ));
        let unwell = sort(server(502), &reference);
        assert_eq!(unwell.to_string(), "registry answered 502: upstream down");
        assert!(unwell.is_retryable());
        assert!(!sort(server(400), &reference).is_retryable());
        let overflow = OciDistributionError::IoError(std::io::Error::other(Overflow(7)));
        assert!(matches!(
            sort(overflow, &reference),
            Error::TooLarge { limit: 7 }
        ));
        assert!(!Error::TooLarge { limit: 1 }.is_retryable());
    }

    /// Serves `app` on a loopback port (plain HTTP, as `pull` expects there).
    async fn serve(app: Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    fn descriptor(bytes: &[u8]) -> OciDescriptor {
        OciDescriptor {
            media_type: WASM_LAYER_MEDIA_TYPE.to_owned(),
            digest: digest_of(bytes),
            size: bytes.len() as i64,
            ..OciDescriptor::default()
        }
    }

    fn wasm_manifest(layer: OciDescriptor) -> Vec<u8> {
        let mut manifest = manifest(&[]);
        manifest.media_type = Some(OCI_MANIFEST_MEDIA_TYPE.to_owned());
        manifest.config = OciDescriptor {
            media_type: WASM_CONFIG_MEDIA_TYPE.to_owned(),
            digest: digest_of(b"{}"),
            size: 2,
            ..OciDescriptor::default()
        };
        manifest.layers = vec![layer];
        serde_json::to_vec(&manifest).unwrap()
    }

    /// A registry whose tag `acme/a:1` names `layer` and whose blob at that
    /// digest is `blob`, streamed without a Content-Length.
    async fn lying_registry(layer: OciDescriptor, blob: Vec<u8>) -> Reference {
        let manifest = wasm_manifest(layer.clone());
        let chunks: Vec<Result<Vec<u8>, std::convert::Infallible>> = blob
            .chunks(16 * 1024)
            .map(|chunk| Ok(chunk.to_vec()))
            .collect();
        let app =
            Router::new()
                .route(
                    "/v2/acme/a/manifests/1",
                    get(move || async move { manifest }),
                )
                .route(
                    &format!("/v2/acme/a/blobs/{}", layer.digest),
                    get(move || async move {
                        axum::body::Body::from_stream(futures::stream::iter(chunks))
                    }),
                );
        parse(&format!("{}/acme/a:1", serve(app).await)).unwrap()
    }

    #[tokio::test]
    async fn a_blob_larger_than_its_descriptor_says_is_cut_off_while_streaming() {
        let reference = lying_registry(descriptor(b"\0asm"), vec![0; 1024 * 1024]).await;
        let options = PullOptions {
            max_bytes: 64 * 1024,
            ..PullOptions::default()
        };
        match pull(&reference, &options).await {
            Err(Error::TooLarge { limit }) => assert_eq!(limit, 64 * 1024),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_blob_that_does_not_hash_to_its_digest_is_refused() {
        let expected = descriptor(b"\0asm original");
        let reference = lying_registry(expected.clone(), b"\0asm tampered".to_vec()).await;
        match pull(&reference, &PullOptions::default()).await {
            Err(Error::DigestMismatch {
                expected: digest,
                actual,
            }) => {
                assert_eq!(digest, expected.digest);
                assert_eq!(actual, digest_of(b"\0asm tampered"));
            }
            other => panic!("expected DigestMismatch, got {other:?}"),
        }
    }

    /// A registry that answers only requests carrying `authorization`, and
    /// challenges every other with `challenge`.
    fn guarded(app: Router, authorization: &'static str, challenge: String) -> Router {
        app.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let challenge = challenge.clone();
                async move {
                    let given = request
                        .headers()
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok());
                    if given == Some(authorization) {
                        Ok(next.run(request).await)
                    } else {
                        Err((
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, challenge)],
                        ))
                    }
                }
            },
        ))
    }

    fn component_routes(component: &[u8]) -> Router {
        let manifest = wasm_manifest(descriptor(component));
        let blob = component.to_vec();
        Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route(
                "/v2/acme/a/manifests/1",
                get(move || async move {
                    ([(header::CONTENT_TYPE, OCI_MANIFEST_MEDIA_TYPE)], manifest)
                }),
            )
            .route(
                &format!("/v2/acme/a/blobs/{}", digest_of(component)),
                get(move || async move { blob }),
            )
    }

    /// The bearer-token flow: anonymous request, challenge, token, retried
    /// request.
    #[tokio::test]
    async fn a_bearer_challenge_is_answered_with_a_token() {
        let component = b"\0asm\x0d\0\x01\0".to_vec();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let challenge = format!(
            r#"Bearer realm="http://{address}/token",service="test",scope="repository:acme/a:pull""#
        );
        let token = |query: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
            assert_eq!(query["service"], "test");
            axum::Json(serde_json::json!({"token": "secret-token"}))
        };
        let app = guarded(
            component_routes(&component),
            "Bearer secret-token",
            challenge,
        )
        .route("/token", get(token));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let reference = parse(&format!("{address}/acme/a:1")).unwrap();
        let pulled = pull(&reference, &PullOptions::default()).await.unwrap();
        assert_eq!(pulled.digest, digest_of(&component));
    }

    /// Basic auth with the credentials given; refused without them.
    #[tokio::test]
    async fn credentials_answer_a_basic_challenge() {
        let component = b"\0asm\x0d\0\x01\0".to_vec();
        // `user:secret`, base64.
        let app = guarded(
            component_routes(&component),
            "Basic dXNlcjpzZWNyZXQ=",
            r#"Basic realm="test""#.to_owned(),
        );
        let reference = parse(&format!("{}/acme/a:1", serve(app).await)).unwrap();
        let options = PullOptions {
            credentials: Some(Credentials {
                username: "user".to_owned(),
                password: "secret".to_owned(),
            }),
            ..PullOptions::default()
        };
        assert_eq!(pull(&reference, &options).await.unwrap().bytes, component);
        let refused = pull(&reference, &PullOptions::default()).await.unwrap_err();
        assert!(matches!(refused, Error::Unauthorized { .. }), "{refused:?}");
        assert!(format!("{:?}", options.credentials).contains("<redacted>"));
    }

    #[tokio::test]
    async fn a_registry_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Accepts connections and never answers.
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let options = PullOptions {
            timeout: Duration::from_millis(200),
            ..PullOptions::default()
        };
        let error = pull(&parse(&format!("{address}/a/b:1")).unwrap(), &options)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::TimedOut { .. }), "{error:?}");
        assert!(error.is_retryable());
    }
}
