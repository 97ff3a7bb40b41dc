//! Kubernetes objects the end-to-end tests set up again and again: plugin
//! ServiceAccounts with exactly the rights a test grants, labelled
//! namespaces and ConfigMaps, the Plugin CRD.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};

use crate::{TestCluster, repo_root, unique_name};

/// How long a CRD may take to be served on a busy 2-core machine.
const CRD_PATIENCE: Duration = Duration::from_secs(60);

/// Object metadata with a name and labels.
pub fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

/// An RBAC rule.
pub fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// A new ServiceAccount in `namespace` granted exactly `rules`
/// cluster-wide; returns its name.
pub async fn service_account_with(
    cluster: &TestCluster,
    namespace: &str,
    rules: Vec<PolicyRule>,
) -> anyhow::Result<String> {
    let admin = cluster.client()?;
    let name = unique_name("plugin");
    cluster.service_account_token(namespace, &name).await?;
    grant(&admin, namespace, &name, rules).await?;
    Ok(name)
}

/// Binds a new ClusterRole with `rules` to the ServiceAccount `namespace/name`.
pub async fn grant(
    admin: &Client,
    namespace: &str,
    name: &str,
    rules: Vec<PolicyRule>,
) -> anyhow::Result<()> {
    let role = unique_name(name);
    Api::<ClusterRole>::all(admin.clone())
        .create(
            &PostParams::default(),
            &ClusterRole {
                metadata: meta(&role, &[]),
                rules: Some(rules),
                ..ClusterRole::default()
            },
        )
        .await?;
    let binding = ClusterRoleBinding {
        metadata: meta(&role, &[]),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.to_owned(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// A new namespace carrying `label`.
pub async fn labelled_namespace(client: &Client, label: (&str, &str)) -> anyhow::Result<String> {
    let name = unique_name("target");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta(&name, &[label]),
                ..Namespace::default()
            },
        )
        .await?;
    Ok(name)
}

/// A ConfigMap with labels and text data.
pub fn config_map(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(name, labels),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..ConfigMap::default()
    }
}

/// The value of a counter sample in Prometheus text, 0 when absent.
pub fn counter(metrics: &str, sample: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A sample's labels, as Prometheus text gives them.
pub type Labels = BTreeMap<String, String>;

/// Every sample of the metric `name` in Prometheus text (`name{k="v",...}
/// value`, or `name value`): its labels and its value.
pub fn samples(metrics: &str, name: &str) -> Vec<(Labels, f64)> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => {
                    let (labels, value) = rest.rsplit_once('}')?;
                    (parse_labels(labels)?, value)
                }
                None if rest.starts_with(' ') => (Labels::new(), rest),
                None => return None,
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some((labels, value))
        })
        .collect()
}

/// The sum of the samples of `name` whose labels `keep` accepts.
pub fn sum_of(metrics: &str, name: &str, keep: impl Fn(&Labels) -> bool) -> f64 {
    samples(metrics, name)
        .into_iter()
        .filter(|(labels, _)| keep(labels))
        .map(|(_, value)| value)
        .sum()
}

/// `k="v",k2="v2"` (values may hold escaped quotes).
fn parse_labels(mut text: &str) -> Option<Labels> {
    let mut labels = Labels::new();
    loop {
        text = text.trim_start_matches(',').trim_start();
        if text.is_empty() {
            return Some(labels);
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => value.push(chars.next()?.1),
                (at, '"') => break at,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        text = &rest[end + 1..];
    }
}

/// Applies the committed Plugin CRD (what users install) and waits until
/// it is served. Safe to call from every test: server-side apply.
pub async fn install_plugin_crd(client: &Client) -> anyhow::Result<()> {
    let path = repo_root().join("charts/leasehold/crds/plugins.leasehold.dev.yaml");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&std::fs::read_to_string(path)?)?;
    apply_crd(client, &crd).await
}

/// Applies `crd` (server-side, so a control plane reused from an earlier
/// run gets the current schema) and waits until the API server serves it.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    api.patch(
        &name,
        &PatchParams::apply("leasehold-tests").force(),
        &Patch::Apply(crd),
    )
    .await?;
    let established = await_condition(api, &name, conditions::is_crd_established());
    tokio::time::timeout(CRD_PATIENCE, established)
        .await
        .map_err(|_| anyhow::anyhow!("CRD {name} not Established after {CRD_PATIENCE:?}"))??;
    Ok(())
}

/// Where a test or benchmark deploys Plugin objects: the CRD installed, a
/// fresh namespace, and a ServiceAccount there that may use `verbs` on
/// ConfigMaps (what the test plugins handle). Returns both names.
pub async fn plugin_namespace(
    cluster: &TestCluster,
    prefix: &str,
    verbs: &[&str],
) -> anyhow::Result<(String, String)> {
    install_plugin_crd(&cluster.client()?).await?;
    let namespace = cluster.namespace(prefix).await?;
    let account = service_account_with(
        cluster,
        &namespace,
        vec![rule(&[""], &["configmaps"], verbs)],
    )
    .await?;
    Ok((namespace, account))
}

/// Serves fixed bodies over plain HTTP on loopback (for Plugin sources of
/// kind `http`): `GET <path>` answers 200 with the body, anything else 404.
pub async fn serve_files(
    files: Vec<(&'static str, Vec<u8>)>,
) -> anyhow::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let files = std::sync::Arc::new(files);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                let mut request = vec![0; 4096];
                let Ok(read) = stream.read(&mut request).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&request[..read]);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let found = files.iter().find(|(served, _)| *served == path);
                let (status, body) = match found {
                    Some((_, body)) => ("200 OK", body.as_slice()),
                    None => ("404 Not Found", &b"not found"[..]),
                };
                let header = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: application/wasm\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(header.as_bytes()).await;
                let _ = stream.write_all(body).await;
            });
        }
    });
    Ok(address)
}

/// Stores a component in ConfigMap `name` (binaryData `component.wasm`),
/// creating or replacing it.
pub async fn store_component(
    config_maps: &Api<ConfigMap>,
    name: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<()> {
    let mut holder = ConfigMap {
        metadata: meta(name, &[]),
        ..ConfigMap::default()
    };
    holder.binary_data =
        Some([("component.wasm".to_owned(), k8s_openapi::ByteString(bytes))].into());
    config_maps
        .patch(
            name,
            &PatchParams::apply("leasehold-tests").force(),
            &Patch::Apply(&holder),
        )
        .await?;
    Ok(())
}

/// Creates or updates (server-side apply) the Plugin `name` with `spec`.
pub async fn apply_plugin<K>(
    plugins: &Api<K>,
    name: &str,
    spec: serde_json::Value,
) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let plugin = serde_json::json!({
        "apiVersion": "leasehold.dev/v1alpha1",
        "kind": "Plugin",
        "metadata": {"name": name},
        "spec": spec,
    });
    plugins
        .patch(
            name,
            &PatchParams::apply("leasehold-tests").force(),
            &Patch::Apply(&plugin),
        )
        .await
}

/// The 25th, 50th, ... percentile of `samples` (nearest rank).
pub fn percentile(samples: &[f64], quantile: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The machine's 1, 5 and 15 minute load averages: figures measured on a
/// shared machine move with them, so benchmarks report them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// A benchmark's trial count: `LEASEHOLD_BENCH_TRIALS`, else `default`.
pub fn bench_trials(default: usize) -> anyhow::Result<usize> {
    use anyhow::Context;
    std::env::var("LEASEHOLD_BENCH_TRIALS")
        .ok()
        .map(|n| n.parse())
        .transpose()
        .context("LEASEHOLD_BENCH_TRIALS must be a number")
        .map(|trials| trials.unwrap_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_their_labels() {
        let text = "# HELP x_total X\n\
                    x_total{verb=\"LIST\",resource=\"configmaps\"} 3\n\
                    x_total{verb=\"POST\",note=\"a \\\"quoted\\\", b\"} 4\n\
                    x_total 5\n\
                    x_total_other 6\n";
        let found = samples(text, "x_total");
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0].0["resource"], "configmaps");
        assert_eq!(found[1].0["note"], "a \"quoted\", b");
        assert_eq!(found[2], (Labels::new(), 5.0));
        assert_eq!(
            sum_of(text, "x_total", |labels| labels.contains_key("verb")),
            7.0
        );
    }
}
