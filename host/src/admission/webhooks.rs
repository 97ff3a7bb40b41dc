//! The webhook configurations that point the API server at the replicas,
//! kept by the leader: one ValidatingWebhookConfiguration and/or one
//! MutatingWebhookConfiguration per Plugin that declares admission.
//!
//! What should exist is a pure function of the catalog ([`plan`]); the role
//! applies it (server-side apply, fenced to the term) at the start of each
//! term, on every change of the catalog or the CA bundle and every
//! [`RESYNC`], and deletes the configurations of this installation that no
//! Plugin asks for any more.
//! (A cluster-scoped configuration cannot be owned by a namespaced Plugin,
//! so garbage collection cannot do it.) A Plugin that is being prepared or
//! failed to load keeps its configurations: the replicas keep reviewing
//! with its last ready version.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ServiceReference, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{info, warn};

use super::declaration::{Declaration, Webhook};
use crate::election::LeaderGuard;
use crate::election::fence::Fence;
use crate::election::roles::LeaderRole;
use crate::plugins::{Catalog, ObjectInfo, State};
use crate::runtime::Review;

/// Configurations are applied again this often, repairing one that was
/// edited or deleted by hand.
const RESYNC: Duration = Duration::from_secs(60);

/// The field manager of the configurations.
const FIELD_MANAGER: &str = "leasehold";

/// Marks the configurations Leasehold manages.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "leasehold");

/// Names the installation (`<lease namespace>/<lease name>`) that keeps a
/// configuration: installations sharing a cluster delete only their own.
/// An annotation, because the name does not fit a label's 63 characters.
const INSTALLATION: &str = "leasehold.dev/installation";

/// Where the API server reaches the replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A base `https://` URL, for example a load balancer in front of every
    /// replica, or a replica on loopback in tests.
    Url(String),
    /// The Service in front of the replicas (what the chart sets).
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
}

impl Endpoint {
    /// The names the API server checks the replicas' certificate against
    /// when it calls this endpoint: the URL's host, or the Service's DNS
    /// names.
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::Url(base) => base
                .parse::<http::Uri>()
                .ok()
                .and_then(|uri| {
                    uri.host()
                        .map(|host| host.trim_matches(['[', ']']).to_owned())
                })
                .into_iter()
                .collect(),
            Self::Service {
                namespace, name, ..
            } => vec![
                format!("{name}.{namespace}.svc"),
                format!("{name}.{namespace}.svc.cluster.local"),
            ],
        }
    }

    fn client_config(&self, path: String, ca_bundle: Option<&[u8]>) -> WebhookClientConfig {
        let ca_bundle = ca_bundle.map(|pem| ByteString(pem.to_vec()));
        match self {
            Self::Url(base) => WebhookClientConfig {
                url: Some(format!("{}{path}", base.trim_end_matches('/'))),
                ca_bundle,
                service: None,
            },
            Self::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    port: Some(*port),
                    path: Some(path),
                }),
                ca_bundle,
                url: None,
            },
        }
    }
}

/// Where each plugin's reviews are served, relative to the API's root.
pub fn review_path(namespace: &str, name: &str, review: Review) -> String {
    format!("/admission/{namespace}/{name}/{}", review.as_str())
}

/// The configurations' name for a plugin: a DNS subdomain, unambiguous
/// because a namespace holds no dots.
pub fn configuration_name(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}.plugins.leasehold.dev")
}

/// What should exist: configurations to apply, and names to keep as they
/// are (plugins being prepared); every other managed one goes.
#[derive(Debug, Default)]
pub struct Plan {
    pub validating: Vec<ValidatingWebhookConfiguration>,
    pub mutating: Vec<MutatingWebhookConfiguration>,
    pub keep: BTreeSet<String>,
}

/// Where one Plugin stands, as far as its configurations go.
#[derive(Clone, Copy, Debug)]
pub enum Standing<'a> {
    /// Ready (or suspended, `None`): these webhooks should exist.
    Serving(Option<&'a Declaration>),
    /// Being prepared, or its new version failed: its configurations stay
    /// as they are.
    Preparing,
}

/// Every Plugin object in `catalog` with its standing.
pub fn standings(catalog: &Catalog) -> impl Iterator<Item = (&ObjectInfo, Standing<'_>)> {
    catalog.entries.values().filter_map(|entry| {
        let standing = match &entry.state {
            State::Ready(_) if entry.suspend => Standing::Serving(None),
            State::Ready(loaded) => Standing::Serving(loaded.definition.admission.as_deref()),
            State::Preparing | State::Failed(_) => Standing::Preparing,
        };
        Some((entry.object.as_ref()?, standing))
    })
}

/// The configurations the `plugins` ask for.
pub fn plan<'a>(
    plugins: impl IntoIterator<Item = (&'a ObjectInfo, Standing<'a>)>,
    endpoint: &Endpoint,
    ca_bundle: Option<&[u8]>,
    installation: &str,
) -> Plan {
    let mut plan = Plan::default();
    for (object, standing) in plugins {
        let name = configuration_name(&object.namespace, &object.name);
        let declared = match standing {
            Standing::Serving(Some(declared)) => declared,
            Standing::Serving(None) => continue,
            Standing::Preparing => {
                plan.keep.insert(name);
                continue;
            }
        };
        let metadata = ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_owned(),
                MANAGED_BY.1.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([
                (INSTALLATION.to_owned(), installation.to_owned()),
                (
                    "leasehold.dev/plugin".to_owned(),
                    format!("{}/{}", object.namespace, object.name),
                ),
            ])),
            ..ObjectMeta::default()
        };
        let client_config = |review| {
            endpoint.client_config(
                review_path(&object.namespace, &object.name, review),
                ca_bundle,
            )
        };
        let webhook_name = |review: Review| {
            format!(
                "{}.{}.{}.leasehold.dev",
                object.name,
                object.namespace,
                review.as_str()
            )
        };
        if let Some(webhook) = &declared.validating {
            plan.validating.push(ValidatingWebhookConfiguration {
                metadata: metadata.clone(),
                webhooks: Some(vec![ValidatingWebhook {
                    name: webhook_name(Review::Validate),
                    client_config: client_config(Review::Validate),
                    ..validating(webhook)
                }]),
            });
        }
        if let Some(webhook) = &declared.mutating {
            plan.mutating.push(MutatingWebhookConfiguration {
                metadata,
                webhooks: Some(vec![MutatingWebhook {
                    name: webhook_name(Review::Mutate),
                    client_config: client_config(Review::Mutate),
                    // Once: a plugin's patch is not re-reviewed after later
                    // webhooks change the object.
                    reinvocation_policy: Some("Never".into()),
                    ..mutating(webhook)
                }]),
            });
        }
    }
    plan
}

fn validating(webhook: &Webhook) -> ValidatingWebhook {
    ValidatingWebhook {
        admission_review_versions: vec!["v1".into()],
        failure_policy: Some(webhook.failure_policy.as_str().into()),
        namespace_selector: webhook.spec.namespace_selector.clone(),
        object_selector: webhook.spec.object_selector.clone(),
        rules: Some(webhook.spec.rules.clone()),
        // A review may only read (the host fences its writes), so dry-run
        // requests are reviewed too.
        side_effects: "None".into(),
        timeout_seconds: Some(webhook.timeout.as_secs().try_into().unwrap_or(30)),
        ..ValidatingWebhook::default()
    }
}

fn mutating(webhook: &Webhook) -> MutatingWebhook {
    let validating = validating(webhook);
    MutatingWebhook {
        admission_review_versions: validating.admission_review_versions,
        failure_policy: validating.failure_policy,
        namespace_selector: validating.namespace_selector,
        object_selector: validating.object_selector,
        rules: validating.rules,
        side_effects: validating.side_effects,
        timeout_seconds: validating.timeout_seconds,
        ..MutatingWebhook::default()
    }
}

/// The leader-only role that keeps the configurations.
pub struct WebhookConfigs {
    catalog: watch::Receiver<Catalog>,
    kube_config: kube::Config,
    endpoint: Endpoint,
    /// The CA the API server checks the replicas against, as it changes.
    ca_bundle: watch::Receiver<Option<Vec<u8>>>,
    installation: String,
}

impl std::fmt::Debug for WebhookConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfigs")
            .field("endpoint", &self.endpoint)
            .field("installation", &self.installation)
            .finish_non_exhaustive()
    }
}

impl WebhookConfigs {
    pub fn new(
        catalog: watch::Receiver<Catalog>,
        kube_config: kube::Config,
        endpoint: Endpoint,
        ca_bundle: watch::Receiver<Option<Vec<u8>>>,
        installation: String,
    ) -> Self {
        Self {
            catalog,
            kube_config,
            endpoint,
            ca_bundle,
            installation,
        }
    }
}

impl LeaderRole for WebhookConfigs {
    fn name(&self) -> &str {
        "webhook-configurations"
    }

    fn lead(&self, guard: LeaderGuard) -> BoxFuture<'static, ()> {
        let mut catalog = self.catalog.clone();
        let (kube_config, endpoint) = (self.kube_config.clone(), self.endpoint.clone());
        let (mut ca_bundle, installation) = (self.ca_bundle.clone(), self.installation.clone());
        Box::pin(async move {
            let client = match kube::client::ClientBuilder::try_from(kube_config) {
                Ok(builder) => builder.with_layer(&Fence::new(guard.clone())).build(),
                Err(error) => {
                    warn!(%error, "cannot build the client for webhook configurations");
                    return;
                }
            };
            loop {
                let current = {
                    let catalog = catalog.borrow_and_update();
                    let ca_bundle = ca_bundle.borrow_and_update();
                    catalog.listed.then(|| {
                        plan(
                            standings(&catalog),
                            &endpoint,
                            ca_bundle.as_deref(),
                            &installation,
                        )
                    })
                };
                // Until every Plugin has been seen, deleting "stale"
                // configurations could delete live ones.
                if let Some(plan) = current
                    && let Err(error) = sync(&client, plan, &installation).await
                {
                    warn!(error = %format!("{error:#}"), "cannot bring the webhook configurations in line; trying again at the next change or in a minute");
                }
                tokio::select! {
                    () = guard.draining() => return,
                    changed = catalog.changed() => if changed.is_err() { return },
                    // A bundle no longer followed stays as it is.
                    Ok(()) = ca_bundle.changed() => {}
                    () = tokio::time::sleep(RESYNC) => {}
                }
            }
        })
    }
}

/// Applies `plan` and deletes the managed configurations it does not name.
async fn sync(client: &Client, plan: Plan, installation: &str) -> Result<(), kube::Error> {
    let mut wanted = plan.keep;
    wanted.extend(plan.validating.iter().map(|config| config.name_any()));
    wanted.extend(plan.mutating.iter().map(|config| config.name_any()));
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    apply_all(&validating, plan.validating).await?;
    apply_all(&mutating, plan.mutating).await?;
    delete_others(&validating, &wanted, installation).await?;
    delete_others(&mutating, &wanted, installation).await
}

async fn apply_all<K>(api: &Api<K>, configs: Vec<K>) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for config in configs {
        api.patch(&config.name_any(), &params, &Patch::Apply(&config))
            .await?;
    }
    Ok(())
}

async fn delete_others<K>(
    api: &Api<K>,
    wanted: &BTreeSet<String>,
    installation: &str,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    for config in api
        .list_metadata(&ListParams::default().labels(&selector))
        .await?
    {
        let name = config.name_any();
        let ours = config.annotations().get(INSTALLATION).map(String::as_str) == Some(installation);
        if ours && !wanted.contains(&name) {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    info!(configuration = %name, "deleted the webhook configuration of a plugin that no longer asks for it")
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_endpoint_names_what_the_api_server_checks_the_certificate_for() {
        assert_eq!(
            Endpoint::Url("https://127.0.0.1:8443/base".into()).names(),
            ["127.0.0.1"]
        );
        assert_eq!(Endpoint::Url("https://[::1]:8443".into()).names(), ["::1"]);
        assert_eq!(
            Endpoint::Url("https://hooks.example.com".into()).names(),
            ["hooks.example.com"]
        );
        assert_eq!(
            Endpoint::Service {
                namespace: "ops".into(),
                name: "leasehold".into(),
                port: 8443
            }
            .names(),
            ["leasehold.ops.svc", "leasehold.ops.svc.cluster.local"]
        );
    }

    fn plugin(name: &str) -> ObjectInfo {
        ObjectInfo {
            namespace: "team".into(),
            name: name.into(),
            generation: Some(1),
        }
    }

    fn declared(spec: serde_json::Value) -> Declaration {
        Declaration::of(&serde_json::from_value(spec).unwrap()).unwrap()
    }

    fn rules() -> serde_json::Value {
        json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}])
    }

    fn loopback() -> Endpoint {
        Endpoint::Url("https://127.0.0.1:9443".into())
    }

    #[test]
    fn a_plugin_declaring_both_webhooks_gets_both_configurations() {
        let both = declared(json!({
            "mutating": {"rules": rules(), "timeoutSeconds": 5},
            "validating": {"rules": rules(), "failurePolicy": "Ignore",
                           "objectSelector": {"matchLabels": {"checked": "yes"}}},
        }));
        let checker = plugin("checker");
        let plan = plan(
            [(&checker, Standing::Serving(Some(&both)))],
            &loopback(),
            Some(b"ca"),
            "leasehold/leasehold",
        );
        let validating = serde_json::to_value(&plan.validating[0]).unwrap();
        assert_eq!(
            validating["metadata"]["name"],
            "team.checker.plugins.leasehold.dev"
        );
        assert_eq!(
            validating["metadata"]["annotations"]["leasehold.dev/installation"],
            "leasehold/leasehold"
        );
        let webhook = &validating["webhooks"][0];
        assert_eq!(webhook["name"], "checker.team.validate.leasehold.dev");
        assert_eq!(
            webhook["clientConfig"]["url"],
            "https://127.0.0.1:9443/admission/team/checker/validate"
        );
        assert_eq!(webhook["failurePolicy"], "Ignore");
        assert_eq!(webhook["sideEffects"], "None");
        assert_eq!(webhook["timeoutSeconds"], 10);
        assert_eq!(webhook["objectSelector"]["matchLabels"]["checked"], "yes");
        assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]));
        let mutating = serde_json::to_value(&plan.mutating[0]).unwrap();
        let webhook = &mutating["webhooks"][0];
        assert_eq!(
            webhook["clientConfig"]["url"],
            "https://127.0.0.1:9443/admission/team/checker/mutate"
        );
        assert_eq!(webhook["failurePolicy"], "Fail");
        assert_eq!(webhook["timeoutSeconds"], 5);
        assert_eq!(webhook["reinvocationPolicy"], "Never");
    }

    #[test]
    fn a_suspended_or_undeclared_plugin_has_none_and_a_preparing_one_keeps_its_own() {
        let (quiet, compiling) = (plugin("quiet"), plugin("compiling"));
        let plan = plan(
            [
                (&quiet, Standing::Serving(None)),
                (&compiling, Standing::Preparing),
            ],
            &loopback(),
            None,
            "leasehold",
        );
        assert!(plan.validating.is_empty() && plan.mutating.is_empty());
        assert_eq!(
            plan.keep,
            BTreeSet::from(["team.compiling.plugins.leasehold.dev".to_owned()])
        );
    }

    #[test]
    fn a_service_endpoint_names_the_service_and_the_plugins_path() {
        let config = Endpoint::Service {
            namespace: "leasehold".into(),
            name: "leasehold".into(),
            port: 8443,
        }
        .client_config(review_path("team", "greeter", Review::Mutate), None);
        let service = config.service.unwrap();
        assert_eq!(
            service.path.as_deref(),
            Some("/admission/team/greeter/mutate")
        );
        assert_eq!(service.port, Some(8443));
        assert!(config.url.is_none() && config.ca_bundle.is_none());
    }
}
