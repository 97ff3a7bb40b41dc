//! Controller plugins as wasm OCI artifacts: pull one from a registry, push one.
//!
//! A plugin is stored the way the CNCF wasm OCI artifact layout describes: an
//! OCI image manifest whose config has media type
//! [`WASM_CONFIG_MEDIA_TYPE`] and whose single layer ([`WASM_LAYER_MEDIA_TYPE`])
//! is the component. Pulling also accepts any OCI (or Docker v2) image
//! manifest with exactly one `application/wasm` layer, and an image index,
//! from which the `wasm` platform is taken.
//!
//! This is a small client of the OCI distribution API written over reqwest
//! rather than a general OCI library: a plugin needs five requests, and owning
//! them keeps the size bound (checked while streaming, so an oversized blob is
//! never held in memory), the digest checks and the errors exactly as the
//! Plugin status reports them. Registries on loopback, or marked `insecure`,
//! are spoken to over plain HTTP; every other one over HTTPS. Access is
//! anonymous unless the registry challenges: then the standard bearer-token
//! flow (`WWW-Authenticate: Bearer realm=...`) or basic auth, with
//! [`Credentials`] if given.
//!
//! ```no_run
//! # async fn example() -> Result<(), leasehold::oci::Error> {
//! use leasehold::oci::{self, PullOptions, PushOptions, Reference};
//!
//! let reference = Reference::parse("127.0.0.1:5000/plugins/greeter:1.0")?;
//! let component = std::fs::read("greeter.wasm").expect("a component");
//! let pushed = oci::push(&reference, &component, &PushOptions::default()).await?;
//! let pulled = oci::pull(&reference, &PullOptions::default()).await?;
//! assert_eq!(pulled.digest, pushed.digest);
//! # Ok(()) }
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::body::{self, ReadError};

/// Media type of the config blob of a wasm OCI artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the layer that holds the component.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The OCI image manifest, which wasm artifacts use.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index (a manifest per platform).
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Default bound on a pulled component. Controllers built from the SDK are
/// well under 1 MiB; 64 MiB leaves room for components that embed an
/// interpreter (componentize-py, componentize-js) and still stops a wrong
/// reference from filling a replica's memory with a container image layer.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default time for one HTTP request, connection to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Manifests are a few hundred bytes; containerd bounds them at 4 MiB too.
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Error bodies and token responses are read up to this size.
const MAX_SMALL_BODY_BYTES: u64 = 64 * 1024;
/// Tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (OCI distribution spec).
const MAX_TAG_LEN: usize = 128;
const MAX_REPOSITORY_LEN: usize = 255;

/// Errors from pulling or pushing an artifact.
///
/// [`Unreachable`](Error::Unreachable) and [`Registry`](Error::Registry) with
/// a 5xx or 429 status are worth retrying ([`Error::is_retryable`]); the
/// others need a person to change the reference, the artifact or the
/// credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference is malformed.
    #[error("invalid OCI reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// The registry (or its token service) could not be reached: DNS,
    /// connection refused, TLS, a timeout or a connection cut mid-transfer.
    #[error("registry {registry} unreachable")]
    Unreachable {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    /// The repository, tag or digest does not exist in the registry.
    #[error("{reference} not found")]
    NotFound { reference: String },
    /// The registry refused access: credentials are missing or wrong, or they
    /// do not grant this repository.
    #[error("registry {registry} denied access: {message}")]
    Unauthorized { registry: String, message: String },
    /// The artifact is not a wasm component: its manifest has no single
    /// `application/wasm` layer. `found` lists the media types it has.
    #[error(
        "{reference} is not a wasm artifact: expected one {WASM_LAYER_MEDIA_TYPE} layer, found {}",
        describe_media_types(found)
    )]
    NotWasm {
        reference: String,
        found: Vec<String>,
    },
    /// Content does not hash to the digest it was named by.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// The component (or a manifest) is larger than allowed.
    #[error("artifact larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The registry served a manifest this client cannot read.
    #[error("invalid manifest for {reference}: {reason}")]
    InvalidManifest { reference: String, reason: String },
    /// Any other answer the registry should not have given.
    #[error("registry answered {status}: {message}")]
    Registry { status: u16, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether trying again later may succeed without anyone changing
    /// anything (the network or the registry was briefly unwell).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Registry { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

fn describe_media_types(found: &[String]) -> String {
    if found.is_empty() {
        "no layers".to_owned()
    } else {
        found.join(", ")
    }
}

// === impl Reference ===

/// A parsed artifact reference: `host[:port]/repository[:tag][@sha256:...]`.
///
/// The registry host must be written out (there is no implicit Docker Hub):
/// a plugin reference should say where it comes from. Without a tag or a
/// digest the tag is `latest`. With a digest, pulls fetch that digest and the
/// tag is only informative.
///
/// ```
/// use leasehold::oci::Reference;
/// let reference = Reference::parse("ghcr.io/acme/plugins/mirror:1.2").unwrap();
/// assert_eq!(reference.registry(), "ghcr.io");
/// assert_eq!(reference.repository(), "acme/plugins/mirror");
/// assert_eq!(reference.tag(), Some("1.2"));
/// assert!(Reference::parse("mirror:1.2").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses a reference; an `oci://` prefix is allowed and ignored.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidReference {
            reference: input.to_owned(),
            reason,
        };
        let text = input.strip_prefix("oci://").unwrap_or(input);
        if text.is_empty() {
            return Err(invalid("it is empty".into()));
        }
        if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(format!("it contains {c:?}")));
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        if let Some(digest) = digest {
            validate_digest(digest).map_err(invalid)?;
        }
        let Some((registry, rest)) = name.split_once('/') else {
            return Err(invalid(
                "expected host[:port]/repository[:tag], e.g. ghcr.io/acme/plugin:1.0".into(),
            ));
        };
        if !(registry.contains(['.', ':']) || registry == "localhost") {
            return Err(invalid(format!(
                "{registry:?} is not a registry host; write the host out, e.g. ghcr.io/{name}"
            )));
        }
        validate_host(registry).map_err(invalid)?;
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repository, tag)) => (repository, Some(tag)),
            None => (rest, None),
        };
        validate_repository(repository).map_err(invalid)?;
        if let Some(tag) = tag {
            validate_tag(tag).map_err(invalid)?;
        }
        let tag = match (tag, digest) {
            (None, None) => Some("latest".to_owned()),
            (tag, _) => tag.map(str::to_owned),
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest: digest.map(str::to_owned),
        })
    }

    /// `host[:port]` of the registry.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `latest` when the reference named neither tag nor digest.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The manifest digest (`sha256:...`), when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The same repository pinned to `digest`, with no tag.
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            tag: None,
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// What the manifest is fetched by: the digest if pinned, else the tag.
    fn manifest_target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .expect("a parsed reference has a tag or a digest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

fn validate_digest(digest: &str) -> Result<(), String> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err(format!(
            "digest {digest:?} is not sha256:<64 hex digits> (only sha256 is supported)"
        ));
    };
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "digest {digest:?} is not sha256:<64 lowercase hex digits>"
        ));
    }
    Ok(())
}

fn validate_host(registry: &str) -> Result<(), String> {
    let (host, port) = split_host_port(registry);
    let host_ok = if let Some(ip) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        ip.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !host_ok {
        return Err(format!("{registry:?} is not a valid registry host"));
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("{port:?} is not a valid port"));
    }
    Ok(())
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]`.
fn split_host_port(registry: &str) -> (&str, Option<&str>) {
    if registry.starts_with('[') {
        return match registry.find("]:") {
            Some(at) => (&registry[..=at], Some(&registry[at + 2..])),
            None => (registry, None),
        };
    }
    match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    }
}

/// Repository path components are lowercase alphanumerics joined by `.`,
/// `_`, `__` or runs of `-` (OCI distribution spec).
fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository is empty".into());
    }
    if repository.len() > MAX_REPOSITORY_LEN {
        return Err(format!(
            "the repository is longer than {MAX_REPOSITORY_LEN} characters"
        ));
    }
    for component in repository.split('/') {
        let bytes = component.as_bytes();
        let valid = !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && !component.contains("..")
            && !component.contains("._")
            && !component.contains("_.")
            && !component.contains("___")
            && !component.contains(".-")
            && !component.contains("-.")
            && !component.contains("_-")
            && !component.contains("-_");
        if !valid {
            return Err(format!(
                "repository component {component:?} must be lowercase letters and digits, \
                 separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1-{MAX_TAG_LEN} letters, digits, '_', '.' or '-', \
             not starting with '.' or '-'"
        ))
    }
}

// === digests ===

pub use crate::runtime::digest_of;

/// Checks that `bytes` hash to `expected` (which must be a sha256 digest).
fn verify_digest(expected: &str, bytes: &[u8]) -> Result<()> {
    let actual = digest_of(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            expected: expected.to_owned(),
            actual,
        })
    }
}

// === manifests ===

/// A content descriptor (OCI image spec).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: digest_of(bytes),
            size: bytes.len() as u64,
            platform: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

/// An image manifest or an index: the fields this client reads of either.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    manifests: Vec<Descriptor>,
}

impl Manifest {
    /// Whether this is an index, judged by its own media type, else by the
    /// response's Content-Type, else by its shape.
    fn is_index(&self, content_type: Option<&str>) -> bool {
        let media_type = self.media_type.as_deref().or(content_type).map(essence);
        match media_type {
            Some(OCI_INDEX_MEDIA_TYPE | DOCKER_LIST_MEDIA_TYPE) => true,
            Some(OCI_MANIFEST_MEDIA_TYPE | DOCKER_MANIFEST_MEDIA_TYPE) => false,
            _ => !self.manifests.is_empty() && self.layers.is_empty(),
        }
    }
}

/// A media type without parameters (`application/json; charset=utf-8`).
fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or_default().trim()
}

/// The component layer of an image manifest: exactly one `application/wasm`
/// layer, whatever the config is. Otherwise the media types found.
fn select_wasm_layer(manifest: &Manifest) -> Result<&Descriptor, Vec<String>> {
    let mut wasm = manifest
        .layers
        .iter()
        .filter(|layer| essence(&layer.media_type) == WASM_LAYER_MEDIA_TYPE);
    match (wasm.next(), wasm.next()) {
        (Some(layer), None) => Ok(layer),
        _ => Err(manifest
            .layers
            .iter()
            .map(|layer| layer.media_type.clone())
            .collect()),
    }
}

/// The manifest of an index to pull: the `wasm` platform, or the only entry.
fn select_from_index(index: &Manifest) -> Result<&Descriptor, Vec<String>> {
    let wasm = index.manifests.iter().find(|entry| {
        entry
            .platform
            .as_ref()
            .is_some_and(|p| p.architecture == "wasm")
    });
    match (wasm, index.manifests.as_slice()) {
        (Some(entry), _) | (None, [entry]) => Ok(entry),
        (None, entries) => Err(entries
            .iter()
            .map(|entry| match &entry.platform {
                Some(p) => format!("{} for {}/{}", entry.media_type, p.os, p.architecture),
                None => entry.media_type.clone(),
            })
            .collect()),
    }
}

/// The config blob of a pushed artifact. No `created` time: the same
/// component pushed twice gives the same manifest digest.
fn wasm_config(layer: &Descriptor) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.digest],
    }))
    .expect("a JSON value serializes")
}

// === pull and push ===

/// How to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// The largest component accepted, in bytes ([`DEFAULT_MAX_BYTES`]).
    pub max_bytes: u64,
    /// Time for each HTTP request ([`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Plain HTTP even off loopback (a registry without TLS).
    pub insecure: bool,
    /// Credentials for a registry that challenges; anonymous if `None`.
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
    /// Time for each HTTP request ([`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Plain HTTP even off loopback (a registry without TLS).
    pub insecure: bool,
    /// Credentials for a registry that challenges; anonymous if `None`.
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
#[derive(Clone)]
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
    /// The manifest's digest: `reference.with_digest(&manifest_digest)`
    /// names exactly this artifact.
    pub manifest_digest: String,
}

/// Pulls the component that `reference` names, checking every digest and
/// stopping as soon as it is larger than `options.max_bytes`.
pub async fn pull(reference: &Reference, options: &PullOptions) -> Result<Pulled> {
    let mut session = Session::new(
        reference,
        options.insecure,
        options.timeout,
        options.credentials.clone(),
    )?;
    let (mut manifest_digest, mut manifest, content_type) =
        session.manifest(reference.manifest_target()).await?;
    if let Some(expected) = reference.digest() {
        check_digest(expected, &manifest_digest)?;
    }
    if manifest.is_index(content_type.as_deref()) {
        let entry = select_from_index(&manifest).map_err(|found| Error::NotWasm {
            reference: reference.to_string(),
            found,
        })?;
        let digest = entry.digest.clone();
        let (actual, inner, inner_type) = session.manifest(&digest).await?;
        check_digest(&digest, &actual)?;
        if inner.is_index(inner_type.as_deref()) {
            return Err(Error::InvalidManifest {
                reference: reference.to_string(),
                reason: format!("index entry {digest} is another index"),
            });
        }
        (manifest_digest, manifest) = (actual, inner);
    }
    let layer = select_wasm_layer(&manifest).map_err(|found| Error::NotWasm {
        reference: reference.to_string(),
        found,
    })?;
    validate_digest(&layer.digest).map_err(|reason| Error::InvalidManifest {
        reference: reference.to_string(),
        reason,
    })?;
    if layer.size > options.max_bytes {
        return Err(Error::TooLarge {
            limit: options.max_bytes,
        });
    }
    let bytes = session.blob(&layer.digest, options.max_bytes).await?;
    verify_digest(&layer.digest, &bytes)?;
    tracing::debug!(%reference, digest = %layer.digest, size = bytes.len(), "pulled wasm artifact");
    Ok(Pulled {
        bytes,
        digest: layer.digest.clone(),
        manifest_digest,
    })
}

/// Pushes `component` as a wasm OCI artifact to `reference` (its tag, or
/// its digest, which must then be the digest of the manifest pushed).
/// Blobs the registry already has are not uploaded again.
pub async fn push(
    reference: &Reference,
    component: &[u8],
    options: &PushOptions,
) -> Result<Pushed> {
    let mut session = Session::new(
        reference,
        options.insecure,
        options.timeout,
        options.credentials.clone(),
    )?;
    let layer = Descriptor::of(WASM_LAYER_MEDIA_TYPE, component);
    let config_blob = wasm_config(&layer);
    let config = Descriptor::of(WASM_CONFIG_MEDIA_TYPE, &config_blob);
    session.upload_blob(&layer.digest, component).await?;
    session.upload_blob(&config.digest, &config_blob).await?;
    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_owned()),
        config: Some(config),
        layers: vec![layer.clone()],
        manifests: Vec::new(),
    })
    .expect("a manifest serializes");
    let manifest_digest = digest_of(&manifest);
    if let Some(expected) = reference.digest() {
        check_digest(expected, &manifest_digest)?;
    }
    session
        .put_manifest(reference.manifest_target(), &manifest_digest, manifest)
        .await?;
    tracing::debug!(%reference, digest = %layer.digest, %manifest_digest, "pushed wasm artifact");
    Ok(Pushed {
        digest: layer.digest,
        manifest_digest,
    })
}

fn check_digest(expected: &str, actual: &str) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        })
    }
}

// === impl Session ===

/// One repository on one registry, with the authorization its challenges
/// asked for.
struct Session {
    http: reqwest::Client,
    /// `http[s]://host[:port]/v2/<repository>/`
    base: Url,
    registry: String,
    repository: String,
    credentials: Option<Credentials>,
    auth: Auth,
}

enum Auth {
    Anonymous,
    Basic,
    Bearer(String),
}

/// A `WWW-Authenticate` challenge this client can answer.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

impl Session {
    fn new(
        reference: &Reference,
        insecure: bool,
        timeout: Duration,
        credentials: Option<Credentials>,
    ) -> Result<Self> {
        let base = base_url(reference, insecure)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("leasehold/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|source| Error::Unreachable {
                registry: reference.registry.clone(),
                source,
            })?;
        Ok(Self {
            http,
            base,
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            credentials,
            auth: Auth::Anonymous,
        })
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("paths built here are valid")
    }

    /// Fetches a manifest or index: its digest, parsed form and Content-Type.
    async fn manifest(&mut self, target: &str) -> Result<(String, Manifest, Option<String>)> {
        let url = self.url(&format!("manifests/{target}"));
        let accept = [
            OCI_MANIFEST_MEDIA_TYPE,
            OCI_INDEX_MEDIA_TYPE,
            DOCKER_MANIFEST_MEDIA_TYPE,
            DOCKER_LIST_MEDIA_TYPE,
        ]
        .join(", ");
        let response = self
            .send(|http| http.get(url.clone()).header(ACCEPT, &accept))
            .await?;
        let response = self.check(response, target).await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = self.read_bounded(response, MAX_MANIFEST_BYTES).await?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|error| Error::InvalidManifest {
                reference: self.name(target),
                reason: error.to_string(),
            })?;
        if manifest.schema_version != 2 {
            return Err(Error::InvalidManifest {
                reference: self.name(target),
                reason: format!("schema version {} (expected 2)", manifest.schema_version),
            });
        }
        Ok((digest_of(&bytes), manifest, content_type))
    }

    async fn blob(&mut self, digest: &str, max_bytes: u64) -> Result<Vec<u8>> {
        let url = self.url(&format!("blobs/{digest}"));
        let response = self.send(|http| http.get(url.clone())).await?;
        let response = self.check(response, digest).await?;
        self.read_bounded(response, max_bytes).await
    }

    /// Uploads a blob unless the repository has it: POST to open an upload,
    /// PUT the content to the Location the registry gave (monolithic upload).
    async fn upload_blob(&mut self, digest: &str, bytes: &[u8]) -> Result<()> {
        let url = self.url(&format!("blobs/{digest}"));
        let response = self.send(|http| http.head(url.clone())).await?;
        if response.status().is_success() {
            return Ok(());
        }
        if response.status() != StatusCode::NOT_FOUND {
            self.check(response, digest).await?;
        }
        let url = self.url("blobs/uploads/");
        let response = self.send(|http| http.post(url.clone())).await?;
        let response = self.check(response, "blobs/uploads/").await?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| Error::Registry {
                status: response.status().as_u16(),
                message: "blob upload started without a Location header".into(),
            })?;
        let mut upload = self.base.join(location).map_err(|error| Error::Registry {
            status: response.status().as_u16(),
            message: format!("invalid upload Location {location:?}: {error}"),
        })?;
        upload.query_pairs_mut().append_pair("digest", digest);
        let response = self
            .send(|http| {
                http.put(upload.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.to_vec())
            })
            .await?;
        self.check(response, digest).await?;
        Ok(())
    }

    async fn put_manifest(&mut self, target: &str, digest: &str, manifest: Vec<u8>) -> Result<()> {
        let url = self.url(&format!("manifests/{target}"));
        let response = self
            .send(|http| {
                http.put(url.clone())
                    .header(CONTENT_TYPE, OCI_MANIFEST_MEDIA_TYPE)
                    .body(manifest.clone())
            })
            .await?;
        let response = self.check(response, target).await?;
        // The registry names what it stored; it must be what was sent.
        if let Some(stored) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|value| value.to_str().ok())
        {
            check_digest(digest, stored)?;
        }
        Ok(())
    }

    /// Sends a request; on a 401 answers the registry's challenge once and
    /// sends it again. `build` makes the request afresh for each attempt.
    async fn send(
        &mut self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response> {
        let response = self.send_authorized(&build).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_challenge);
        match challenge {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let token = self
                    .fetch_token(&realm, service.as_deref(), scope.as_deref())
                    .await?;
                self.auth = Auth::Bearer(token);
            }
            Some(Challenge::Basic)
                if self.credentials.is_some() && !matches!(self.auth, Auth::Basic) =>
            {
                self.auth = Auth::Basic;
            }
            _ => return Err(self.unauthorized(response).await),
        }
        let response = self.send_authorized(&build).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized(response).await);
        }
        Ok(response)
    }

    async fn send_authorized(
        &self,
        build: &impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response> {
        let request = build(&self.http);
        let request = match (&self.auth, &self.credentials) {
            (Auth::Bearer(token), _) => request.bearer_auth(token),
            (Auth::Basic, Some(credentials)) => {
                request.basic_auth(&credentials.username, Some(&credentials.password))
            }
            _ => request,
        };
        request.send().await.map_err(|source| Error::Unreachable {
            registry: self.registry.clone(),
            source,
        })
    }

    /// The bearer-token flow of the distribution spec: GET the realm with the
    /// service and scope, as the user if there are credentials, else
    /// anonymously.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String> {
        let mut url = Url::parse(realm).map_err(|error| Error::Registry {
            status: StatusCode::UNAUTHORIZED.as_u16(),
            message: format!("invalid token realm {realm:?}: {error}"),
        })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            if let Some(scope) = scope {
                query.append_pair("scope", scope);
            }
        }
        let realm_host = url.host_str().unwrap_or(realm).to_owned();
        let mut request = self.http.get(url);
        if let Some(credentials) = &self.credentials {
            request = request.basic_auth(&credentials.username, Some(&credentials.password));
        }
        let response = request.send().await.map_err(|source| Error::Unreachable {
            registry: realm_host,
            source,
        })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(response).await);
        }
        if !status.is_success() {
            return Err(Error::Registry {
                status: status.as_u16(),
                message: format!("token service: {}", self.error_message(response).await),
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = self.read_bounded(response, MAX_SMALL_BODY_BYTES).await?;
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|error| Error::Registry {
                status: status.as_u16(),
                message: format!("token service answered invalid JSON: {error}"),
            })?;
        token
            .token
            .or(token.access_token)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| Error::Registry {
                status: status.as_u16(),
                message: "token service answered no token".into(),
            })
    }

    /// Maps an unsuccessful answer about `target` to an error.
    async fn check(&self, response: Response, target: &str) -> Result<Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(match status {
            StatusCode::NOT_FOUND => Error::NotFound {
                reference: self.name(target),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => self.unauthorized(response).await,
            _ => Error::Registry {
                status: status.as_u16(),
                message: self.error_message(response).await,
            },
        })
    }

    async fn unauthorized(&self, response: Response) -> Error {
        Error::Unauthorized {
            registry: self.registry.clone(),
            message: self.error_message(response).await,
        }
    }

    /// The registry's explanation: the OCI error body's codes and messages,
    /// else the start of the body, else the status.
    async fn error_message(&self, response: Response) -> String {
        let status = response.status();
        let body = self
            .read_bounded(response, MAX_SMALL_BODY_BYTES)
            .await
            .unwrap_or_default();
        error_message_from_body(status, &body)
    }

    /// Reads a body, failing as soon as it is larger than `limit`.
    async fn read_bounded(&self, response: Response, limit: u64) -> Result<Vec<u8>> {
        body::read_bounded(response, limit)
            .await
            .map_err(|error| match error {
                ReadError::TooLarge { limit } => Error::TooLarge { limit },
                ReadError::Http(source) => Error::Unreachable {
                    registry: self.registry.clone(),
                    source,
                },
            })
    }

    /// `registry/repository@target` or `registry/repository:target`.
    fn name(&self, target: &str) -> String {
        let separator = if target.contains(':') { '@' } else { ':' };
        format!("{}/{}{separator}{target}", self.registry, self.repository)
    }
}

/// `http[s]://host/v2/<repository>/`. Plain HTTP for loopback or `insecure`.
fn base_url(reference: &Reference, insecure: bool) -> Result<Url> {
    let (host, _) = split_host_port(&reference.registry);
    let scheme = if insecure || is_loopback(host) {
        "http"
    } else {
        "https"
    };
    // Docker Hub's API lives on another host than its references name.
    let registry = match reference.registry.as_str() {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    };
    Url::parse(&format!(
        "{scheme}://{registry}/v2/{}/",
        reference.repository
    ))
    .map_err(|error| Error::InvalidReference {
        reference: reference.to_string(),
        reason: error.to_string(),
    })
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parses a `WWW-Authenticate` header's first challenge.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_auth_params(rest);
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: param("realm")?,
            service: param("service"),
            scope: param("scope"),
        })
    } else if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else {
        None
    }
}

/// `key="quoted, value", key=token` pairs (RFC 9110 auth-params).
fn parse_auth_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            return params;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ',')));
        }
        params.push((key.trim().to_owned(), value.trim().to_owned()));
    }
}

fn error_message_from_body(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(Errors { errors }) = serde_json::from_slice::<Errors>(body)
        && !errors.is_empty()
    {
        return errors
            .iter()
            .map(
                |error| match (error.code.is_empty(), error.message.is_empty()) {
                    (false, false) => format!("{}: {}", error.code, error.message),
                    (false, true) => error.code.clone(),
                    _ => error.message.clone(),
                },
            )
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.to_string()
    } else {
        text.chars().take(200).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn parse(input: &str) -> Reference {
        Reference::parse(input).unwrap_or_else(|error| panic!("{input}: {error}"))
    }

    fn reason(input: &str) -> String {
        match Reference::parse(input) {
            Err(Error::InvalidReference { reason, .. }) => reason,
            other => panic!("{input} parsed: {other:?}"),
        }
    }

    #[test]
    fn references_parse_host_repository_tag_and_digest() {
        let reference = parse("127.0.0.1:5000/plugins/greeter:1.0");
        assert_eq!(reference.registry(), "127.0.0.1:5000");
        assert_eq!(reference.repository(), "plugins/greeter");
        assert_eq!(reference.tag(), Some("1.0"));
        assert_eq!(reference.digest(), None);

        let reference = parse(&format!("ghcr.io/acme/mirror@{DIGEST}"));
        assert_eq!(reference.tag(), None);
        assert_eq!(reference.digest(), Some(DIGEST));
        assert_eq!(reference.manifest_target(), DIGEST);

        let reference = parse(&format!("localhost/mirror:v2@{DIGEST}"));
        assert_eq!(reference.tag(), Some("v2"));
        assert_eq!(reference.manifest_target(), DIGEST, "the digest wins");

        let reference = parse("oci://[::1]:5000/a/b/c");
        assert_eq!(reference.registry(), "[::1]:5000");
        assert_eq!(reference.tag(), Some("latest"));
    }

    #[test]
    fn references_display_as_parsed() {
        for text in [
            "127.0.0.1:5000/plugins/greeter:1.0",
            "registry.example.com/a.b/c_d/e--f:_tag.1-x",
            &format!("ghcr.io/acme/mirror@{DIGEST}"),
            &format!("ghcr.io/acme/mirror:1@{DIGEST}"),
        ] {
            assert_eq!(parse(text).to_string(), text);
        }
        assert_eq!(parse("localhost/x").to_string(), "localhost/x:latest");
        let pinned = parse("localhost/x:1").with_digest(DIGEST);
        assert_eq!(pinned.to_string(), format!("localhost/x@{DIGEST}"));
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        assert!(reason("").contains("empty"));
        assert!(reason("greeter:1.0").contains("host[:port]/repository"));
        assert!(reason("acme/greeter:1.0").contains("not a registry host"));
        assert!(reason("ghcr.io/Acme/greeter").contains("lowercase"));
        assert!(reason("ghcr.io/acme//greeter").contains("lowercase"));
        assert!(reason("ghcr.io/").contains("empty"));
        assert!(reason("ghcr.io/acme/greeter:").contains("tag"));
        assert!(reason("ghcr.io/acme/greeter:-x").contains("tag"));
        assert!(reason("ghcr.io/acme/greeter:a/b").contains("tag"));
        assert!(reason("ghcr.io/acme/greeter@sha256:abc").contains("64"));
        assert!(reason("ghcr.io/acme/greeter@md5:abc").contains("only sha256"));
        assert!(reason("ghcr.io/acme/greeter@").contains("sha256"));
        assert!(reason("host:99999/greeter").contains("port"));
        assert!(reason("host:/greeter").contains("port"));
        assert!(reason("bad_host.io/greeter").contains("registry host"));
        assert!(reason("ghcr.io/acme greeter").contains("' '"));
        assert!(reason(&format!("ghcr.io/{}", "a".repeat(256))).contains("longer"));
        assert!(reason(&format!("ghcr.io/a:{}", "t".repeat(129))).contains("tag"));
    }

    #[test]
    fn plain_http_only_for_loopback_or_insecure() {
        let url = |text: &str, insecure| base_url(&parse(text), insecure).unwrap().to_string();
        assert_eq!(
            url("127.0.0.1:5000/a:1", false),
            "http://127.0.0.1:5000/v2/a/"
        );
        assert_eq!(url("localhost/a", false), "http://localhost/v2/a/");
        assert_eq!(url("[::1]:5000/a", false), "http://[::1]:5000/v2/a/");
        assert_eq!(url("ghcr.io/acme/a", false), "https://ghcr.io/v2/acme/a/");
        assert_eq!(
            url("registry.lan:5000/a", true),
            "http://registry.lan:5000/v2/a/"
        );
        assert_eq!(
            url("docker.io/library/a", false),
            "https://registry-1.docker.io/v2/library/a/"
        );
    }

    fn layer(media_type: &str) -> Descriptor {
        Descriptor::of(media_type, media_type.as_bytes())
    }

    fn manifest(config: &str, layers: &[&str]) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
            config: Some(layer(config)),
            layers: layers.iter().map(|media_type| layer(media_type)).collect(),
            manifests: Vec::new(),
        }
    }

    #[test]
    fn the_wasm_layer_of_a_wasm_artifact_or_an_image_is_selected() {
        let artifact = manifest(WASM_CONFIG_MEDIA_TYPE, &[WASM_LAYER_MEDIA_TYPE]);
        assert_eq!(select_wasm_layer(&artifact), Ok(&artifact.layers[0]));
        let image = manifest(
            "application/vnd.oci.image.config.v1+json",
            &["application/wasm; charset=binary"],
        );
        assert_eq!(select_wasm_layer(&image), Ok(&image.layers[0]));
    }

    #[test]
    fn artifacts_without_exactly_one_wasm_layer_are_not_wasm() {
        let tarball = "application/vnd.oci.image.layer.v1.tar+gzip";
        let image = manifest("application/vnd.oci.image.config.v1+json", &[tarball]);
        assert_eq!(select_wasm_layer(&image), Err(vec![tarball.to_owned()]));
        let two = manifest(WASM_CONFIG_MEDIA_TYPE, &[WASM_LAYER_MEDIA_TYPE; 2]);
        assert_eq!(select_wasm_layer(&two).unwrap_err().len(), 2);
        let empty = manifest(WASM_CONFIG_MEDIA_TYPE, &[]);
        let found = select_wasm_layer(&empty).unwrap_err();
        let error = Error::NotWasm {
            reference: "localhost/x:1".into(),
            found,
        };
        assert_eq!(
            error.to_string(),
            "localhost/x:1 is not a wasm artifact: expected one application/wasm layer, found no layers"
        );
    }

    #[test]
    fn an_index_yields_its_wasm_platform_or_its_only_entry() {
        let entry = |architecture: &str| Descriptor {
            platform: Some(Platform {
                architecture: architecture.into(),
                os: "linux".into(),
            }),
            ..layer(OCI_MANIFEST_MEDIA_TYPE)
        };
        let index = |entries: Vec<Descriptor>| Manifest {
            schema_version: 2,
            manifests: entries,
            ..Manifest::default()
        };
        let mixed = index(vec![entry("amd64"), entry("wasm")]);
        assert!(mixed.is_index(None));
        assert_eq!(select_from_index(&mixed), Ok(&mixed.manifests[1]));
        let single = index(vec![entry("amd64")]);
        assert_eq!(select_from_index(&single), Ok(&single.manifests[0]));
        let found = select_from_index(&index(vec![entry("amd64"), entry("arm64")])).unwrap_err();
        assert_eq!(
            found[1],
            format!("{OCI_MANIFEST_MEDIA_TYPE} for linux/arm64")
        );
        assert!(!manifest(WASM_CONFIG_MEDIA_TYPE, &[]).is_index(Some(OCI_INDEX_MEDIA_TYPE)));
        let untyped = Manifest {
            media_type: None,
            ..manifest(WASM_CONFIG_MEDIA_TYPE, &[])
        };
        assert!(untyped.is_index(Some(DOCKER_LIST_MEDIA_TYPE)));
    }

    #[test]
    fn digests_are_checked() {
        assert_eq!(digest_of(b"test"), DIGEST);
        verify_digest(DIGEST, b"test").unwrap();
        match verify_digest(DIGEST, b"tampered") {
            Err(Error::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, DIGEST);
                assert_eq!(actual, digest_of(b"tampered"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pushed_manifests_follow_the_wasm_artifact_layout() {
        let layer = Descriptor::of(WASM_LAYER_MEDIA_TYPE, b"\0asm");
        let config: serde_json::Value = serde_json::from_slice(&wasm_config(&layer)).unwrap();
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["layerDigests"][0], layer.digest.as_str());
        assert_eq!(wasm_config(&layer), wasm_config(&layer), "no timestamps");
    }

    #[test]
    fn bearer_challenges_parse_with_quoted_commas() {
        let header = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:acme/a:pull,push""#;
        assert_eq!(
            parse_challenge(header),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:acme/a:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1/t"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1/t".into(),
                service: None,
                scope: None,
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None, "no realm");
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn registry_error_bodies_become_messages() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            error_message_from_body(StatusCode::NOT_FOUND, body),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(
            error_message_from_body(StatusCode::BAD_GATEWAY, b""),
            "502 Bad Gateway"
        );
        assert_eq!(
            error_message_from_body(StatusCode::BAD_GATEWAY, b" upstream down \n"),
            "upstream down"
        );
    }

    #[test]
    fn only_transient_errors_are_retryable() {
        let registry = |status| Error::Registry {
            status,
            message: String::new(),
        };
        assert!(registry(503).is_retryable());
        assert!(registry(429).is_retryable());
        assert!(!registry(400).is_retryable());
        assert!(!Error::TooLarge { limit: 1 }.is_retryable());
    }

    fn wasm_manifest(layer: Descriptor) -> Vec<u8> {
        serde_json::to_vec(&Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST_MEDIA_TYPE.into()),
            config: Some(Descriptor::of(WASM_CONFIG_MEDIA_TYPE, b"{}")),
            layers: vec![layer],
            manifests: Vec::new(),
        })
        .unwrap()
    }

    /// Serves `app` on a loopback port (plain HTTP, as `pull` expects there).
    async fn serve(app: axum::Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        address
    }

    /// A registry whose tag `acme/a:1` names `layer` and whose blob at that
    /// digest is `blob`, streamed without a Content-Length.
    async fn lying_registry(layer: Descriptor, blob: Vec<u8>) -> Reference {
        use axum::routing::get;
        let manifest = wasm_manifest(layer.clone());
        let chunks: Vec<Result<Vec<u8>, std::convert::Infallible>> = blob
            .chunks(16 * 1024)
            .map(|chunk| Ok(chunk.to_vec()))
            .collect();
        let app =
            axum::Router::new()
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
        parse(&format!("{}/acme/a:1", serve(app).await))
    }

    #[tokio::test]
    async fn a_blob_larger_than_its_descriptor_says_is_cut_off_while_streaming() {
        let small = b"\0asm".to_vec();
        let reference = lying_registry(
            Descriptor::of(WASM_LAYER_MEDIA_TYPE, &small),
            vec![0; 1024 * 1024],
        )
        .await;
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
        let expected = Descriptor::of(WASM_LAYER_MEDIA_TYPE, b"\0asm original");
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

    /// The bearer-token flow against an in-process registry and token
    /// service: anonymous request, challenge, token, retried request.
    #[tokio::test]
    async fn a_bearer_challenge_is_answered_with_a_token() {
        use axum::Router;
        use axum::extract::Query;
        use axum::http::{HeaderMap, StatusCode as AxumStatus, header};
        use axum::routing::get;
        use std::collections::HashMap;

        let component = b"\0asm\x0d\0\x01\0".to_vec();
        let digest = digest_of(&component);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let realm = format!("http://{address}/token");
        let manifest = wasm_manifest(Descriptor::of(WASM_LAYER_MEDIA_TYPE, &component));
        let authorized = |headers: &HeaderMap| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                == Some("Bearer secret-token")
        };
        let challenge = move || {
            (
                AxumStatus::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    format!(
                        r#"Bearer realm="{realm}",service="test",scope="repository:acme/a:pull""#
                    ),
                )],
            )
        };
        let manifest_route = {
            let challenge = challenge.clone();
            move |headers: HeaderMap| async move {
                if authorized(&headers) {
                    Ok(([(header::CONTENT_TYPE, OCI_MANIFEST_MEDIA_TYPE)], manifest))
                } else {
                    Err(challenge())
                }
            }
        };
        let blob_route = move |headers: HeaderMap| async move {
            if authorized(&headers) {
                Ok(component)
            } else {
                Err(challenge())
            }
        };
        let token_route = |Query(query): Query<HashMap<String, String>>| async move {
            assert_eq!(query["service"], "test");
            assert_eq!(query["scope"], "repository:acme/a:pull");
            axum::Json(serde_json::json!({"token": "secret-token"}))
        };
        let app = Router::new()
            .route("/token", get(token_route))
            .route("/v2/acme/a/manifests/1", get(manifest_route))
            .route(&format!("/v2/acme/a/blobs/{digest}"), get(blob_route));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let reference = parse(&format!("{address}/acme/a:1"));
        let pulled = pull(&reference, &PullOptions::default()).await.unwrap();
        assert_eq!(pulled.digest, digest);
    }
}
