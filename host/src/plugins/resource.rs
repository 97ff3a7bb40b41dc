//! The `Plugin` custom resource (`plugins.leasehold.dev/v1alpha1`): how
//! users deploy, configure, pause and observe controller plugins.
//!
//! The committed CRD (`charts/leasehold/crds/plugins.leasehold.dev.yaml`) is
//! generated from these types; a test fails when it drifts. The API server
//! enforces what a schema can say (exactly one source, a sha256 that looks
//! like one, concurrency bounds); the host checks the rest and reports it on
//! the object's status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A controller plugin: a wasm component, who it acts as, its configuration
/// and its limits.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[kube(
    group = "leasehold.dev",
    version = "v1alpha1",
    kind = "Plugin",
    doc = "A controller plugin deployed to Leasehold: a wasm component, the ServiceAccount it acts as, its configuration and limits.",
    namespaced,
    status = "PluginStatus",
    shortname = "lhp",
    category = "leasehold",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".status.source"}"#,
    printcolumn = r#"{"name":"Running-On","type":"string","jsonPath":".status.runningOn"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PluginSpec {
    /// Where the component comes from: exactly one kind of source.
    pub source: Source,

    /// Configuration handed to the plugin as JSON (any object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub config: Option<serde_json::Value>,

    /// The ServiceAccount, in the Plugin's namespace, the plugin acts as: its
    /// RBAC bounds every call the plugin makes and every watch it runs.
    #[x_kube(validation = Rule::new("self != ''").message("must name a ServiceAccount"))]
    pub service_account_name: String,

    /// What one reconcile may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PluginLimits>,

    /// Stops the plugin (in-flight reconciles finish) without deleting it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// Requests the API server sends to the plugin's `admission` export
    /// before storing them, answered by every replica. The leader keeps a
    /// webhook configuration for each and removes it with the Plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionSpec>,

    /// Where the plugin may send HTTP requests (`wasi:http`), as
    /// `scheme://host[:port]`: for example `https://api.example.com`,
    /// `https://*.example.com` (names under it), `http://10.0.0.7:8080`.
    /// Without a port only the scheme's default is allowed; `*` stands for
    /// any scheme, host or port. Empty (the default): no outbound requests.
    /// Each request counts as a call against the reconcile's limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allowed_outbound_hosts: Vec<String>,
}

/// The plugin's admission webhooks: at least one of the two.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.mutating) || has(self.validating)").message("set mutating, validating or both"))]
pub struct AdmissionSpec {
    /// Requests the plugin's `mutate` may change (a
    /// MutatingWebhookConfiguration). Mutating webhooks run first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutating: Option<WebhookSpec>,
    /// Requests the plugin's `validate` may deny (a
    /// ValidatingWebhookConfiguration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validating: Option<WebhookSpec>,
}

/// Which requests one webhook sees, as admissionregistration.k8s.io/v1
/// says it. `sideEffects` is always `None`: a review may read, not write.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Operations and resources, as in a webhook configuration: for example
    /// `{operations: [CREATE, UPDATE], apiGroups: [""], apiVersions: [v1],
    /// resources: [configmaps]}`.
    pub rules: Vec<k8s_openapi::api::admissionregistration::v1::RuleWithOperations>,
    /// What the API server does when the plugin cannot answer (it traps,
    /// runs out of time, or answers nonsense): `Fail` refuses the request,
    /// `Ignore` lets it through. Default `Fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// How long the API server waits, 1–30 seconds. Default 10. The host
    /// answers within it: the plugin's own deadline is cut to fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 30))]
    pub timeout_seconds: Option<i32>,
    /// Only requests for objects in namespaces matching this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// Only requests for objects whose labels match this selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// What happens to a request the plugin could not judge.
#[derive(
    schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize,
)]
pub enum FailurePolicy {
    /// The request is refused.
    #[default]
    Fail,
    /// The request proceeds (with a warning).
    Ignore,
}

impl FailurePolicy {
    /// As a webhook configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "Fail",
            Self::Ignore => "Ignore",
        }
    }
}

/// Where a plugin's component comes from. Exactly one field is set.
///
/// Atomic for server-side apply: applying a new source replaces the old one
/// whole, whichever manager set it, instead of leaving two kinds set.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
#[x_kube(validation = Rule::new(
    "[has(self.configMap), has(self.http), has(self.oci), has(self.image)].filter(x, x).size() == 1"
).message("set exactly one of configMap, http, oci, image"))]
pub struct Source {
    /// A key of a ConfigMap's `binaryData` in the Plugin's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// An HTTP(S) URL, checked against a required digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    /// A wasm OCI artifact in a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSource>,
    /// A file baked into the host's image, under its plugin root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSource>,
}

/// A component stored in a ConfigMap.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// The ConfigMap's name.
    pub name: String,
    /// The `binaryData` key holding the component.
    #[serde(default = "default_key")]
    pub key: String,
    /// The component's expected digest. Optional; when set, a mismatch is
    /// an error, and changing it (as `leasehold plugin deploy` and the
    /// upload API do) reloads the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^(sha256:)?[0-9a-f]{64}$')").message("must be 64 lowercase hex digits, optionally prefixed with sha256:"))]
    pub sha256: Option<String>,
}

fn default_key() -> String {
    "component.wasm".to_owned()
}

/// A component served over HTTP(S).
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    /// The component's URL (`https://`, or `http://` for trusted networks).
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("must be an http:// or https:// URL"))]
    pub url: String,
    /// The component's required digest.
    #[x_kube(validation = Rule::new("self.matches('^(sha256:)?[0-9a-f]{64}$')").message("must be 64 lowercase hex digits, optionally prefixed with sha256:"))]
    pub sha256: String,
}

/// A wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, one
/// `application/wasm` layer).
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciSource {
    /// `registry/repository:tag` or `registry/repository@sha256:...`.
    pub reference: String,
    /// Use plain HTTP (for a registry on a trusted network or loopback).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// A `kubernetes.io/dockerconfigjson` Secret in the Plugin's namespace
    /// with credentials for the registry. It is read as the Plugin's
    /// ServiceAccount, which must be allowed to `get` it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret: Option<String>,
}

/// A component baked into the host's image.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSource {
    /// A path relative to the host's plugin root (`--plugin-root`).
    pub path: String,
}

/// What one reconcile may use.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginLimits {
    /// Linear memory, as a byte quantity (`64Mi`). Default 64Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Wall-clock budget of one reconcile (`2s`, `500ms`). Default 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Reconciles that may run at once. Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_reconciles: Option<u16>,
    /// Kubernetes calls one reconcile may make. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_calls_per_reconcile: Option<u32>,
    /// Requests per second the plugin's client may send. Default 10.
    #[serde(default, rename = "apiQPS", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub api_qps: Option<u32>,
    /// Requests the plugin's client may send at once after a quiet spell.
    /// Default 20 (or apiQPS if higher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2000))]
    pub api_burst: Option<u32>,
    /// The shortest requeue or resync the plugin may ask for (`1s`,
    /// `250ms`; at least 100ms). Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requeue_after: Option<String>,
}

/// What the leader last observed of a Plugin. Only the leader writes it.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Fetched`, `Compiled`, `Running` and their summary `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The kind of source and what it names, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `sha256:<hex>` of the component that was fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The contract version the component was built for, and whether it
    /// is deprecated (the next host release stops loading it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    /// The replica running the plugin (the leader), when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_on: Option<String>,
    /// The most recent failure, kept after recovery so it can be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// Reconciles of this version since it started, by outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciles: Option<ReconcileCounts>,
}

/// A failure and when it happened.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    pub message: String,
    /// RFC 3339.
    pub time: String,
}

/// Reconciles by outcome.
#[derive(KubeSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileCounts {
    /// Returned an action.
    pub ok: u64,
    /// Returned an error.
    pub error: u64,
    /// Trapped, timed out or ran out of memory.
    pub trap: u64,
}

/// `config` is any JSON object, kept as the user wrote it.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        // Replaced whole by server-side apply: configuration is one value.
        "x-kubernetes-map-type": "atomic",
    })
}

impl Source {
    /// `configMap:<name>/<key>`, `http:<url>`, `oci:<reference>`,
    /// `image:<path>`: what the printer column shows.
    pub fn describe(&self) -> String {
        match self {
            Self {
                config_map: Some(source),
                ..
            } => format!("configMap:{}/{}", source.name, source.key),
            Self {
                http: Some(source), ..
            } => format!("http:{}", source.url),
            Self {
                oci: Some(source), ..
            } => format!("oci:{}", source.reference),
            Self {
                image: Some(source),
                ..
            } => format!("image:{}", source.path),
            _ => "none".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    const COMMITTED: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/leasehold/crds/plugins.leasehold.dev.yaml"
    );

    #[test]
    fn the_committed_crd_matches_the_rust_types() {
        // Regenerate with: UPDATE_CRD=1 cargo test -p leasehold committed_crd
        let generated = format!(
            "# Generated from host/src/plugins/resource.rs; do not edit.\n{}",
            serde_saphyr::to_string(&Plugin::crd()).unwrap()
        );
        if std::env::var_os("UPDATE_CRD").is_some() {
            std::fs::write(COMMITTED, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        assert!(
            committed == generated,
            "{COMMITTED} is stale: run UPDATE_CRD=1 cargo test -p leasehold committed_crd"
        );
    }

    #[test]
    fn a_minimal_plugin_reads_back_with_defaults() {
        let plugin: PluginSpec = serde_json::from_value(serde_json::json!({
            "source": {"configMap": {"name": "mirror"}},
            "serviceAccountName": "mirror",
        }))
        .unwrap();
        let source = plugin.source.config_map.as_ref().unwrap();
        assert_eq!(source.key, "component.wasm");
        assert_eq!(plugin.source.describe(), "configMap:mirror/component.wasm");
        assert!(!plugin.suspend);
        assert_eq!(plugin.limits, None);
    }
}
