//! The Helm chart, with the real tools: linted and rendered by `helm`, its
//! output checked for what users rely on, accepted by the real API server,
//! its flags and Plugin objects accepted by the host's own parsers, its RBAC
//! enough for the host to lead as the chart's ServiceAccount (and for each
//! declared plugin, exactly what its values grant), and bad values refused
//! at install with the reason.
//!
//! helm and kubectl are the ones `tools/cluster.sh install` builds and caches.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, PostParams};
use leasehold::Cli;
use leasehold::cli::Command as HostCommand;
use leasehold::plugins::{Definition, Plugin, ServiceAccount};
use leasehold::replica::Config as HostConfig;
use leasehold::telemetry::LogFormat;
use leasehold_tests::fixtures::{apply_crd, config_map, install_plugin_crd, labelled_namespace};
use leasehold_tests::kube_tools;
use leasehold_tests::{
    TestCluster, eventually, leasehold_binary, plugin_component, repo_root, unique_name,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Every test installs or renders the release under this name; the chart then
/// names its objects (and the election Lease) plainly "leasehold".
const RELEASE: &str = "leasehold";

/// Values a test renders or installs with.
#[derive(Clone, Copy, Debug)]
enum Values<'a> {
    /// `--set` assignments.
    Set(&'a [&'a str]),
    /// A values file (YAML or JSON, given to helm on stdin): lists of
    /// objects, such as `plugins`, read badly as `--set`.
    File(&'a str),
}

impl<'a> Values<'a> {
    /// helm's arguments for these values, and what to feed its stdin.
    fn args(self) -> (Vec<String>, Option<&'a str>) {
        match self {
            Self::Set(values) => (set_flags(values), None),
            Self::File(yaml) => (vec!["--values".to_owned(), "-".to_owned()], Some(yaml)),
        }
    }
}

/// Value sets a user is likely to install with.
const DEFAULTS: Values = Values::Set(&[]);
const HA: Values = Values::Set(&["replicaCount=3"]);
const MONITORED: Values = Values::Set(&[
    "serviceMonitor.enabled=true",
    "serviceMonitor.labels.release=prom",
    "grafanaDashboard.enabled=true",
]);
/// Two plugins as an operator would declare them: the ConfigMap mirror baked
/// into the image, with rights in every namespace, and the greeter from a
/// ConfigMap, suspended, with rights in its own namespace only. Each acts as
/// a ServiceAccount the chart makes for it.
const PLUGINS: Values = Values::File(PLUGINS_YAML);
const PLUGINS_YAML: &str = r#"
plugins:
  - name: configmap-mirror
    source:
      image: {path: configmap_mirror.wasm}
    serviceAccountName: configmap-mirror
    serviceAccount: {create: true}
    config: {namespaceSelector: "leasehold.dev/mirror-target=true"}
    limits: {memory: 32Mi, timeout: 1s}
    clusterRules:
      - apiGroups: [""]
        resources: [configmaps]
        verbs: [get, list, watch, create, update, patch, delete]
      - apiGroups: [""]
        resources: [namespaces]
        verbs: [get, list, watch]
  - name: greeter
    source:
      configMap:
        name: greeter-component
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    serviceAccountName: greeter
    serviceAccount: {create: true}
    limits: {maxConcurrentReconciles: 2}
    suspend: true
    rules:
      - apiGroups: [examples.leasehold.dev]
        resources: [greetings, greetings/status]
        verbs: [get, list, watch, update, patch]
      - apiGroups: [""]
        resources: [configmaps]
        verbs: [get, list, watch, create, update, patch]
"#;

/// Volumes an operator brings: components for `image` sources under
/// --plugin-root, and somewhere writable for the activity log.
const EXTRA_VOLUMES: Values = Values::File(EXTRA_VOLUMES_YAML);
const EXTRA_VOLUMES_YAML: &str = r#"
extraArgs: ["--activity-log=/var/log/leasehold/activity"]
extraVolumes:
  - name: components
    configMap: {name: my-components}
  - name: activity
    emptyDir: {sizeLimit: 64Mi}
extraVolumeMounts:
  - {name: components, mountPath: /plugins, readOnly: true}
  - {name: activity, mountPath: /var/log/leasehold}
"#;

/// The compile cache on a claim the chart makes, shared by three replicas.
const CACHE_ON_A_CLAIM: Values = Values::Set(&[
    "replicaCount=3",
    "compileCache.persistentVolumeClaim.create=true",
]);

/// HTTPS with the certificate the chart generates, scraped by Prometheus.
const TLS: Values = Values::Set(&["tls.enabled=true", "serviceMonitor.enabled=true"]);
/// HTTPS with a kubernetes.io/tls Secret the operator manages.
const TLS_FROM_A_SECRET: Values = Values::Set(&["tls.enabled=true", "tls.secretName=api-cert"]);
/// HTTPS with a certificate the replicas issue into a Secret themselves.
const TLS_ISSUED_BY_REPLICAS: Values =
    Values::Set(&["tls.enabled=true", "tls.issuedByReplicas=true"]);
/// HTTPS with a certificate cert-manager issues and renews.
const TLS_FROM_CERT_MANAGER: Values = Values::Set(&[
    "tls.enabled=true",
    "tls.certManager.enabled=true",
    "tls.certManager.issuerRef.name=cluster-ca",
    "tls.certManager.issuerRef.kind=ClusterIssuer",
]);

// === helm and kubectl ===

fn chart() -> PathBuf {
    repo_root().join("charts/leasehold")
}

/// Runs a tool to completion, feeding it `stdin`.
async fn run(program: &Path, args: &[String], stdin: Option<&str>) -> anyhow::Result<Output> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().context("stdin is piped")?;
        pipe.write_all(text.as_bytes()).await?;
        drop(pipe);
    }
    Ok(child.wait_with_output().await?)
}

async fn helm(args: Vec<String>, stdin: Option<&str>) -> anyhow::Result<Output> {
    run(&kube_tools().helm, &args, stdin).await
}

fn set_flags(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|value| ["--set".to_owned(), (*value).to_owned()])
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` into `namespace` with `values`; its status and output.
async fn template(namespace: &str, values: Values<'_>) -> anyhow::Result<Output> {
    let mut args = vec![
        "template".to_owned(),
        RELEASE.to_owned(),
        chart().display().to_string(),
        "--namespace".to_owned(),
        namespace.to_owned(),
    ];
    let (values, stdin) = values.args();
    args.extend(values);
    helm(args, stdin).await
}

/// Renders the chart; fails the test with helm's message if it refuses.
async fn render(namespace: &str, values: Values<'_>) -> anyhow::Result<Rendered> {
    let output = template(namespace, values).await?;
    ensure!(
        output.status.success(),
        "helm template {values:?} failed: {}",
        text(&output.stderr)
    );
    Rendered::parse(&text(&output.stdout))
}

/// What helm says when it refuses `values`.
async fn refusal(values: Values<'_>) -> anyhow::Result<String> {
    let output = template("default", values).await?;
    ensure!(
        !output.status.success(),
        "helm template accepted {values:?}, which it must refuse"
    );
    Ok(text(&output.stderr))
}

// === rendered manifests ===

/// The objects `helm template` printed.
struct Rendered {
    yaml: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn parse(yaml: &str) -> anyhow::Result<Self> {
        let objects: Vec<Value> =
            serde_saphyr::from_multiple(yaml).context("parsing helm template output")?;
        Ok(Self {
            yaml: yaml.to_owned(),
            objects,
        })
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|object| object["kind"] == kind)
            .collect()
    }

    fn one(&self, kind: &str) -> &Value {
        match self.all(kind).as_slice() {
            [object] => object,
            found => panic!("expected one {kind}, found {}", found.len()),
        }
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .all(kind)
            .into_iter()
            .filter(|object| object["metadata"]["name"] == name)
            .collect();
        match found.as_slice() {
            [object] => object,
            _ => panic!("expected one {kind} {name}, found {}", found.len()),
        }
    }

    fn pod_spec(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["spec"]
    }

    fn pod_labels(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod_spec()["containers"]
            .as_array()
            .expect("pod spec has containers");
        assert_eq!(containers.len(), 1, "one container per replica");
        &containers[0]
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The item of a list of named objects (volumes, mounts, ports) called `name`.
fn named<'v>(items: &'v Value, name: &str) -> Option<&'v Value> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .find(|item| item["name"] == name)
}

/// Parses container args with the host's own command line, and validates
/// them into a replica configuration as `leasehold run` would at start.
fn host_config(args: &[String]) -> anyhow::Result<(Cli, HostConfig)> {
    let cli = Cli::try_parse_from(std::iter::once("leasehold".to_owned()).chain(args.to_vec()))?;
    let config = match &cli.command {
        HostCommand::Run(options) => options.clone().into_config()?,
        #[allow(unreachable_patterns)]
        other => bail!("the chart must start `leasehold run`, not {other:?}"),
    };
    Ok((cli, config))
}

/// `selector` picks objects labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_some_and(|wanted| {
        !wanted.is_empty() && wanted.iter().all(|(key, value)| labels[key] == *value)
    })
}

/// Whether RBAC `rules` allow `verb` on `resource` in `group`.
fn grants(rules: &Value, group: &str, resource: &str, verb: &str) -> bool {
    rules.as_array().into_iter().flatten().any(|rule| {
        let has = |field: &str, wanted: &str| {
            strings(&rule[field])
                .iter()
                .any(|item| item == wanted || item == "*")
        };
        has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
    })
}

/// Every verb the host uses on Leases (election and replica directory).
const LEASE_VERBS: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// (group, resource, verb) that later plugin work needs cluster-wide.
const PLUGIN_PERMISSIONS: [(&str, &str, &str); 13] = [
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
    ("leasehold.dev", "plugins", "get"),
    ("leasehold.dev", "plugins", "list"),
    ("leasehold.dev", "plugins", "watch"),
    ("leasehold.dev", "plugins/status", "update"),
    ("leasehold.dev", "plugins/status", "patch"),
    ("", "configmaps", "get"),
    ("", "configmaps", "list"),
    ("", "configmaps", "watch"),
    ("", "serviceaccounts", "impersonate"),
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
];

// === linting and rendering ===

#[tokio::test]
async fn chart_passes_strict_lint_with_each_value_set() -> anyhow::Result<()> {
    for values in [
        DEFAULTS,
        HA,
        MONITORED,
        PLUGINS,
        EXTRA_VOLUMES,
        CACHE_ON_A_CLAIM,
        TLS,
        TLS_FROM_A_SECRET,
        TLS_FROM_CERT_MANAGER,
        TLS_ISSUED_BY_REPLICAS,
        Values::Set(&["placement.mode=spread", "replicaCount=3"]),
    ] {
        let mut args = vec![
            "lint".to_owned(),
            "--strict".to_owned(),
            chart().display().to_string(),
        ];
        let (values_args, stdin) = values.args();
        args.extend(values_args);
        let output = helm(args, stdin).await?;
        let report = format!("{}{}", text(&output.stdout), text(&output.stderr));
        ensure!(
            output.status.success() && report.contains("0 chart(s) failed"),
            "helm lint --strict {values:?}:\n{report}"
        );
        ensure!(!report.contains("[WARNING]"), "{report}");
    }
    Ok(())
}

/// Every metric name the host exports, as `# TYPE` lines give them (a
/// counter's samples add `_total`, a histogram's `_bucket`, `_sum`, `_count`).
fn exported_metrics() -> std::collections::BTreeSet<String> {
    let metrics = leasehold::metrics::Metrics::new();
    // A family shows in the text once it has a sample: one of each.
    let plugins = &metrics.plugins;
    plugins.instantiated("p");
    plugins.reconciled("p", "ok");
    plugins.limited("p", "Throttled");
    plugins.api_request("p");
    plugins.cached_read("p");
    plugins.host_call("p", "get", 200);
    plugins.took("p", std::time::Duration::from_millis(1));
    plugins.memory_peak("p", 1 << 20);
    let (_waiting, _running) = (plugins.waiting("p"), plugins.running("p"));
    metrics.admission.reviewed(
        "p",
        leasehold::runtime::Review::Validate,
        &kube::core::admission::AdmissionResponse::invalid("sample"),
        std::time::Duration::from_millis(1),
    );
    metrics
        .render(&leasehold::election::Status::default())
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_grafana_dashboard_asks_only_for_metrics_the_host_exports() -> anyhow::Result<()> {
    let rendered = render("team-g", MONITORED).await?;
    let config_map = rendered
        .all("ConfigMap")
        .into_iter()
        .find(|config_map| config_map["metadata"]["labels"]["grafana_dashboard"] == "1")
        .context("a ConfigMap for Grafana's sidecar")?;
    let dashboard: Value = serde_json::from_str(
        config_map["data"]["leasehold-plugins.json"]
            .as_str()
            .context("the dashboard's JSON")?,
    )?;
    let exported = exported_metrics();
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .context("panels")?
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect();
    queries.extend(
        dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|variable| variable["query"]["query"].as_str().map(str::to_owned)),
    );
    ensure!(queries.len() > 10, "too few queries: {queries:?}");
    let mut named = 0;
    for query in &queries {
        for word in query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("leasehold_") {
                continue;
            }
            named += 1;
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word);
            ensure!(
                exported.contains(word) || exported.contains(base),
                "{word} (in {query}) is not a metric the host exports: {exported:?}"
            );
        }
    }
    ensure!(named >= queries.len(), "a query names no leasehold metric");
    Ok(())
}

#[tokio::test]
async fn one_replica_gets_neither_a_disruption_budget_nor_anti_affinity() -> anyhow::Result<()> {
    let rendered = render("default", DEFAULTS).await?;
    assert_eq!(rendered.one("Deployment")["spec"]["replicas"], 1);
    assert!(
        rendered.all("PodDisruptionBudget").is_empty(),
        "a budget of one replica would only block node drains"
    );
    assert_eq!(rendered.pod_spec()["affinity"], Value::Null);
    Ok(())
}

#[tokio::test]
async fn more_replicas_get_a_disruption_budget_and_spread_over_nodes() -> anyhow::Result<()> {
    let rendered = render("default", HA).await?;
    assert_eq!(rendered.one("Deployment")["spec"]["replicas"], 3);

    let budget = rendered.one("PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert!(
        selects(
            &budget["spec"]["selector"]["matchLabels"],
            rendered.pod_labels()
        ),
        "the budget must cover the replicas: {budget}"
    );

    let preferred = &rendered.pod_spec()["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    let term = &preferred[0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert!(
        selects(&term["labelSelector"]["matchLabels"], rendered.pod_labels()),
        "anti-affinity must be against the other replicas: {preferred}"
    );
    assert_eq!(
        rendered.pod_spec()["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        Value::Null,
        "required anti-affinity would leave replicas pending on small clusters"
    );
    Ok(())
}

#[tokio::test]
async fn default_args_are_flags_the_host_accepts() -> anyhow::Result<()> {
    let rendered = render("team-a", DEFAULTS).await?;
    let container = rendered.container();
    let args = strings(&container["args"]);
    let (cli, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;

    assert_eq!(
        config.election.namespace, "team-a",
        "lease in the release namespace"
    );
    assert_eq!(config.election.lease_name, RELEASE);
    assert_eq!(config.election.lease_duration, Duration::from_secs(15));
    assert_eq!(config.election.renew_deadline, Duration::from_secs(10));
    assert_eq!(config.election.retry_period, Duration::from_secs(2));
    assert_eq!(cli.telemetry.log_format, LogFormat::Json);

    let http = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|port| port["name"] == "http")
        .context("a container port named http")?;
    assert_eq!(
        http["containerPort"],
        config.listen.port(),
        "the host listens where the probes and the Service look"
    );
    assert!(
        config.listen.ip().is_unspecified(),
        "reachable from outside the pod"
    );
    Ok(())
}

#[tokio::test]
async fn election_settings_from_values_reach_the_host() -> anyhow::Result<()> {
    let rendered = render(
        "team-b",
        Values::Set(&[
            "election.leaseName=shared-group",
            "election.leaseDuration=1m",
            "election.renewDeadline=45s",
            "election.retryPeriod=500ms",
            "logFormat=text",
        ]),
    )
    .await?;
    let args = strings(&rendered.container()["args"]);
    let (cli, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
    assert_eq!(config.election.namespace, "team-b");
    assert_eq!(config.election.lease_name, "shared-group");
    assert_eq!(config.election.lease_duration, Duration::from_secs(60));
    assert_eq!(config.election.renew_deadline, Duration::from_secs(45));
    assert_eq!(config.election.retry_period, Duration::from_millis(500));
    assert_eq!(cli.telemetry.log_format, LogFormat::Text);
    Ok(())
}

#[tokio::test]
async fn placement_from_values_reaches_the_host_and_bad_placements_are_refused()
-> anyhow::Result<()> {
    use leasehold::placement::Placement;
    let placement = |rendered: &Rendered| -> anyhow::Result<Placement> {
        let args = strings(&rendered.container()["args"]);
        let (_, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
        Ok(config.placement)
    };
    assert_eq!(
        placement(&render("default", DEFAULTS).await?)?,
        Placement::Leader
    );
    let spread = render(
        "default",
        Values::Set(&["placement.mode=spread", "placement.shards=8"]),
    )
    .await?;
    assert_eq!(placement(&spread)?, Placement::Spread { shards: 8 });
    for (values, reason) in [
        (
            &["placement.mode=everywhere"][..],
            "at '/placement/mode': value must be one of 'leader', 'spread'",
        ),
        (
            &["placement.shards=0"],
            "at '/placement/shards': minimum: got 0, want 1",
        ),
        (
            &["placement.shards=300"],
            "at '/placement/shards': maximum: got 300, want 256",
        ),
    ] {
        let refusal = refusal(Values::Set(values)).await?;
        assert!(refusal.contains(reason), "{values:?}: {refusal}");
    }
    Ok(())
}

#[tokio::test]
async fn each_replica_takes_its_identity_from_its_pod_name() -> anyhow::Result<()> {
    let rendered = render("default", HA).await?;
    let container = rendered.container();
    let args = strings(&container["args"]);
    assert!(
        !args.iter().any(|arg| arg.starts_with("--identity")),
        "a fixed --identity would give every replica the same one: {args:?}"
    );
    let pod_name = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|var| var["name"] == "POD_NAME")
        .context("POD_NAME in the container env")?;
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
        "{pod_name}"
    );
    Ok(())
}

#[tokio::test]
async fn probes_check_health_and_readiness_on_the_api_port() -> anyhow::Result<()> {
    let rendered = render("default", DEFAULTS).await?;
    let container = rendered.container();
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "http");

    let service = rendered.one("Service");
    assert!(
        selects(&service["spec"]["selector"], rendered.pod_labels()),
        "the Service must reach the replicas: {service}"
    );
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["name"], "http");
    assert_eq!(port["port"], 8080);
    assert_eq!(port["targetPort"], "http");
    Ok(())
}

#[tokio::test]
async fn replicas_run_locked_down() -> anyhow::Result<()> {
    let rendered = render("default", DEFAULTS).await?;
    let pod = &rendered.pod_spec()["securityContext"];
    assert_eq!(pod["runAsNonRoot"], true);
    assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault");
    let container = &rendered.container()["securityContext"];
    assert_eq!(container["runAsNonRoot"], true);
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["seccompProfile"]["type"], "RuntimeDefault");
    Ok(())
}

#[tokio::test]
async fn plugins_compile_into_a_writable_cache_that_outlives_the_container() -> anyhow::Result<()> {
    let rendered = render("default", DEFAULTS).await?;
    let container = rendered.container();
    let args = strings(&container["args"]);
    let (_, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
    let cache = config
        .plugins
        .compile_cache
        .context("the host is given a compile cache")?;
    let cache = cache.to_str().context("a UTF-8 path")?;
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"], true,
        "the root filesystem stays read-only: the cache needs a volume"
    );
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|mount| mount["mountPath"] == cache)
        .with_context(|| format!("a volume mounted at {cache}"))?;
    assert_ne!(
        mount["readOnly"], true,
        "the host writes the cache: {mount}"
    );
    let name = mount["name"].as_str().unwrap_or_default();
    let volume = named(&rendered.pod_spec()["volumes"], name)
        .with_context(|| format!("the volume {name}"))?;
    assert_eq!(
        volume["emptyDir"],
        json!({"sizeLimit": "1Gi"}),
        "by default the pod's own, with room above wasmtime's 512Mi: {volume}"
    );
    Ok(())
}

#[tokio::test]
async fn a_compile_cache_claim_keeps_compiled_plugins_across_pods() -> anyhow::Result<()> {
    let rendered = render("team-k", CACHE_ON_A_CLAIM).await?;
    let claim = rendered.one("PersistentVolumeClaim");
    assert_eq!(claim["metadata"]["name"], "leasehold-compile-cache");
    assert_eq!(claim["metadata"]["namespace"], "team-k");
    assert_eq!(
        claim["spec"]["accessModes"],
        json!(["ReadWriteMany"]),
        "every replica mounts it, on any node"
    );
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    let volume = named(&rendered.pod_spec()["volumes"], "compile-cache")
        .context("the compile cache volume")?;
    assert_eq!(
        volume["persistentVolumeClaim"]["claimName"],
        claim["metadata"]["name"]
    );
    assert_eq!(
        rendered.pod_spec()["securityContext"]["fsGroup"],
        65532,
        "the claim is made writable for the image's user"
    );

    let existing = render(
        "team-k",
        Values::Set(&["compileCache.persistentVolumeClaim.existingClaim=wasm-cache"]),
    )
    .await?;
    assert!(
        existing.all("PersistentVolumeClaim").is_empty(),
        "an existing claim is used, not made"
    );
    let volume = named(&existing.pod_spec()["volumes"], "compile-cache")
        .context("the compile cache volume")?;
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], "wasm-cache");

    let off = render("team-k", Values::Set(&["compileCache.enabled=false"])).await?;
    let args = strings(&off.container()["args"]);
    let (_, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
    assert_eq!(config.plugins.compile_cache, None);
    assert_eq!(named(&off.pod_spec()["volumes"], "compile-cache"), None);
    Ok(())
}

// === HTTPS ===

/// The decoded data of a rendered Secret, by key.
fn secret_data(secret: &Value) -> anyhow::Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let secret: Secret = serde_json::from_value(secret.clone())?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, bytes)| (key, bytes.0))
        .collect())
}

fn pem<'d>(
    data: &'d std::collections::BTreeMap<String, Vec<u8>>,
    key: &str,
) -> anyhow::Result<&'d [u8]> {
    data.get(key)
        .map(Vec::as_slice)
        .with_context(|| format!("{key} in the Secret"))
}

/// Whether a client that trusts only the Secret's ca.crt accepts its
/// tls.crt for `name`.
fn certifies(
    data: &std::collections::BTreeMap<String, Vec<u8>>,
    name: &str,
) -> anyhow::Result<bool> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pem(data, "ca.crt")?)?)?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()?;
    let certificate = CertificateDer::from_pem_slice(pem(data, "tls.crt")?)?;
    Ok(verifier
        .verify_server_cert(
            &certificate,
            &[],
            &ServerName::try_from(name)?,
            &[],
            UnixTime::now(),
        )
        .is_ok())
}

/// The names clients in the cluster reach the release's Service by.
fn service_names(namespace: &str) -> [String; 4] {
    [
        RELEASE.to_owned(),
        format!("{RELEASE}.{namespace}"),
        format!("{RELEASE}.{namespace}.svc"),
        format!("{RELEASE}.{namespace}.svc.cluster.local"),
    ]
}

#[tokio::test]
async fn the_api_is_plain_http_unless_tls_is_enabled() -> anyhow::Result<()> {
    let rendered = render("default", DEFAULTS).await?;
    let container = rendered.container();
    let args = strings(&container["args"]);
    let (_, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
    assert_eq!(config.tls, None);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["scheme"],
            Value::Null,
            "{probe}"
        );
    }
    assert_eq!(named(&rendered.pod_spec()["volumes"], "tls"), None);
    assert!(rendered.all("Secret").is_empty());
    assert_eq!(
        rendered.one("Service")["spec"]["ports"][0]["appProtocol"],
        Value::Null
    );
    Ok(())
}

/// What the leader needs to keep webhook configurations.
const WEBHOOK_PERMISSIONS: [(&str, &str); 2] = [
    (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
];

#[tokio::test]
async fn with_tls_admission_webhooks_point_at_the_service_and_trust_its_ca() -> anyhow::Result<()> {
    let rendered = render("team-w", TLS).await?;
    let args = strings(&rendered.container()["args"]);
    let (_, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
    let service = rendered.one("Service");
    assert_eq!(
        config.admission_endpoint,
        Some(leasehold::admission::Endpoint::Service {
            namespace: "team-w".into(),
            name: service["metadata"]["name"].as_str().unwrap().into(),
            port: i32::try_from(service["spec"]["ports"][0]["port"].as_i64().unwrap())?,
        })
    );
    let Some(leasehold::api::Https {
        certificate: leasehold::api::Certificate::Files { cert, .. },
        ..
    }) = config.tls
    else {
        bail!(
            "the host serves HTTPS from the Secret's files: {:?}",
            config.tls
        );
    };
    assert_eq!(
        config.admission_ca_file,
        Some(cert.with_file_name("ca.crt")),
        "the CA beside the serving certificate, from the same Secret"
    );
    let generated = secret_data(rendered.one("Secret"))?;
    assert!(generated.contains_key("ca.crt"), "the Secret holds the CA");
    let cluster_role = rendered.one("ClusterRole");
    for (group, resource) in WEBHOOK_PERMISSIONS {
        for verb in ["get", "list", "create", "patch", "delete"] {
            assert!(
                grants(&cluster_role["rules"], group, resource, verb),
                "the ClusterRole must allow {verb} on {resource}"
            );
        }
    }

    // Without TLS (or with admission off) the API server could not call the
    // replicas: no endpoint, and no permission to write configurations.
    for values in [
        DEFAULTS,
        Values::Set(&["tls.enabled=true", "admission.enabled=false"]),
    ] {
        let rendered = render("team-w", values).await?;
        let args = strings(&rendered.container()["args"]);
        let (_, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
        assert_eq!(config.admission_endpoint, None);
        let cluster_role = rendered.one("ClusterRole");
        for (group, resource) in WEBHOOK_PERMISSIONS {
            assert!(!grants(&cluster_role["rules"], group, resource, "create"));
        }
    }
    Ok(())
}

#[tokio::test]
async fn tls_from_an_existing_secret_is_mounted_passed_and_probed_over_https() -> anyhow::Result<()>
{
    let rendered = render("team-t", TLS_FROM_A_SECRET).await?;
    assert!(
        rendered.all("Secret").is_empty() && rendered.all("Certificate").is_empty(),
        "the operator's Secret is used, not made"
    );
    let container = rendered.container();
    let args = strings(&container["args"]);
    let (_, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
    let tls = config.tls.clone().context("the host serves HTTPS")?;
    let leasehold::api::Certificate::Files { cert, key } = &tls.certificate else {
        bail!("the host serves the Secret's files: {tls:?}");
    };

    let volume = named(&rendered.pod_spec()["volumes"], "tls").context("the certificate volume")?;
    assert_eq!(volume["secret"]["secretName"], "api-cert");
    let mount = named(&container["volumeMounts"], "tls").context("the certificate mount")?;
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        mount["subPath"],
        Value::Null,
        "a subPath mount never sees the Secret renewed"
    );
    let dir = Path::new(mount["mountPath"].as_str().context("a mount path")?);
    assert_eq!(
        cert,
        &dir.join("tls.crt"),
        "the host reads the Secret's tls.crt"
    );
    assert_eq!(
        key,
        &dir.join("tls.key"),
        "the host reads the Secret's tls.key"
    );

    let port = named(&container["ports"], "https").context("a container port named https")?;
    assert_eq!(port["containerPort"], config.listen.port());
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "https", "{probe}");
    }
    let service_port = &rendered.one("Service")["spec"]["ports"][0];
    assert_eq!(service_port["name"], "https");
    assert_eq!(service_port["targetPort"], "https");
    assert_eq!(service_port["appProtocol"], "https");

    assert!(!tls.http2, "HTTP/1.1 only unless tls.http2 is set");
    let rendered = render(
        "team-t",
        Values::Set(&[
            "tls.enabled=true",
            "tls.secretName=api-cert",
            "tls.http2=true",
        ]),
    )
    .await?;
    let args = strings(&rendered.container()["args"]);
    let (_, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
    assert!(
        config.tls.context("the host serves HTTPS")?.http2,
        "tls.http2 offers HTTP/2: {args:?}"
    );
    Ok(())
}

#[tokio::test]
async fn generated_tls_is_a_certificate_for_the_service_that_the_host_and_prometheus_accept()
-> anyhow::Result<()> {
    let rendered = render("team-t", TLS).await?;
    let secret = rendered.named("Secret", "leasehold-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let volume = named(&rendered.pod_spec()["volumes"], "tls").context("the certificate volume")?;
    assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"]);
    let data = secret_data(secret)?;
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);

    // The host loads the pair as the pod's mount gives it.
    let dir = tempfile::tempdir()?;
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, pem(&data, "tls.crt")?)?;
    std::fs::write(&key, pem(&data, "tls.key")?)?;
    leasehold::api::load_tls(&cert, &key, false)
        .context("the host refuses the generated certificate")?;

    for name in service_names("team-t") {
        assert!(certifies(&data, &name)?, "the certificate must name {name}");
    }
    assert!(
        !certifies(&data, "leasehold.other.svc")?,
        "and nothing else"
    );

    // Prometheus scrapes pod IPs: it checks the Service's name, against the CA.
    let endpoint = &rendered.one("ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "https");
    assert_eq!(endpoint["scheme"], "https");
    let tls_config = &endpoint["tlsConfig"];
    assert_eq!(
        tls_config["ca"]["secret"],
        json!({"name": "leasehold-tls", "key": "ca.crt"})
    );
    assert_ne!(tls_config["insecureSkipVerify"], true);
    let server_name = tls_config["serverName"]
        .as_str()
        .context("the ServiceMonitor names the server")?;
    assert!(certifies(&data, server_name)?, "{server_name}");
    Ok(())
}

#[tokio::test]
async fn new_names_for_a_generated_certificate_roll_the_replicas() -> anyhow::Result<()> {
    let names_checksum = |rendered: &Rendered| {
        rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
            ["leasehold.dev/tls-dns-names"]
            .clone()
    };
    let before = render("team-t", TLS).await?;
    let after = render(
        "team-t",
        Values::Set(&[
            "tls.enabled=true",
            "tls.extraDnsNames={leasehold.example.com}",
        ]),
    )
    .await?;
    assert!(names_checksum(&before).is_string());
    assert_ne!(names_checksum(&before), names_checksum(&after));
    let data = secret_data(after.named("Secret", "leasehold-tls"))?;
    assert!(certifies(&data, "leasehold.example.com")?);
    assert!(certifies(&data, "leasehold.team-t.svc")?);
    // The names only, not the certificate: each render here generates a new
    // one (nothing to look up), and that must not roll the replicas on its own.
    assert_eq!(
        names_checksum(&before),
        names_checksum(&render("team-t", TLS).await?)
    );
    Ok(())
}

#[tokio::test]
async fn tls_from_cert_manager_is_a_certificate_for_the_service_from_the_issuer_named()
-> anyhow::Result<()> {
    let rendered = render("team-t", TLS_FROM_CERT_MANAGER).await?;
    assert!(
        rendered.all("Secret").is_empty(),
        "cert-manager makes the Secret"
    );
    let certificate = rendered.one("Certificate");
    assert_eq!(certificate["apiVersion"], "cert-manager.io/v1");
    assert_eq!(certificate["metadata"]["namespace"], "team-t");
    assert_eq!(
        certificate["spec"]["issuerRef"],
        json!({"name": "cluster-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    let names = strings(&certificate["spec"]["dnsNames"]);
    for name in service_names("team-t") {
        assert!(
            names.contains(&name),
            "the Certificate must name {name}: {names:?}"
        );
    }
    let volume = named(&rendered.pod_spec()["volumes"], "tls").context("the certificate volume")?;
    assert_eq!(
        volume["secret"]["secretName"],
        certificate["spec"]["secretName"]
    );
    let args = strings(&rendered.container()["args"]);
    let (_, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
    assert!(config.tls.is_some());
    Ok(())
}

#[tokio::test]
async fn tls_issued_by_the_replicas_renders_no_certificate_and_names_the_secret_and_the_service()
-> anyhow::Result<()> {
    let rendered = render("team-t", TLS_ISSUED_BY_REPLICAS).await?;
    assert!(
        rendered.all("Secret").is_empty() && rendered.all("Certificate").is_empty(),
        "the replicas make the Secret"
    );
    assert!(
        named(&rendered.pod_spec()["volumes"], "tls").is_none(),
        "nothing to mount"
    );
    let args = strings(&rendered.container()["args"]);
    let (_, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
    let Some(leasehold::api::Https {
        certificate: leasehold::api::Certificate::Issued(issuing),
        ..
    }) = &config.tls
    else {
        bail!("the host issues its certificate: {:?}", config.tls);
    };
    assert_eq!(
        (issuing.namespace.as_str(), issuing.name.as_str()),
        ("team-t", "leasehold-tls")
    );
    for name in service_names("team-t") {
        assert!(
            issuing.names.contains(&name),
            "the certificate must name {name}: {:?}",
            issuing.names
        );
    }
    assert_eq!(config.admission_ca_file, None, "the CA is the Secret's");
    let role = rendered
        .all("Role")
        .into_iter()
        .find(|role| role["metadata"]["name"] == RELEASE)
        .context("the host's Role")?;
    let rules = &role["rules"];
    let on_the_secret = rules
        .as_array()
        .into_iter()
        .flatten()
        .find(|rule| strings(&rule["resourceNames"]) == ["leasehold-tls"])
        .context("a rule for the certificate's Secret by name")?;
    assert_eq!(strings(&on_the_secret["verbs"]), ["get", "update"]);
    assert!(grants(rules, "", "secrets", "create"));
    assert!(
        !grants(rules, "", "secrets", "list"),
        "no Secret is listed: {rules}"
    );
    Ok(())
}

#[tokio::test]
async fn extra_volumes_and_mounts_pass_through_as_written() -> anyhow::Result<()> {
    let declared: Value = serde_saphyr::from_str(EXTRA_VOLUMES_YAML)?;
    let rendered = render("default", EXTRA_VOLUMES).await?;
    let container = rendered.container();
    for (list, rendered_list) in [
        ("extraVolumes", &rendered.pod_spec()["volumes"]),
        ("extraVolumeMounts", &container["volumeMounts"]),
    ] {
        for item in declared[list].as_array().into_iter().flatten() {
            let name = item["name"].as_str().unwrap_or_default();
            assert_eq!(
                named(rendered_list, name),
                Some(item),
                "{list} {name} must reach the pod as written: {rendered_list}"
            );
        }
    }
    // The host writes where the operator's volume is, not on the read-only
    // root filesystem.
    let args = strings(&container["args"]);
    let (_, config) = host_config(&args).with_context(|| format!("args {args:?}"))?;
    let activity = config
        .activity_log
        .context("--activity-log from extraArgs")?;
    assert!(
        activity.starts_with("/var/log/leasehold"),
        "{}",
        activity.display()
    );
    Ok(())
}

#[tokio::test]
async fn every_object_carries_the_standard_labels() -> anyhow::Result<()> {
    for values in [
        DEFAULTS,
        HA,
        MONITORED,
        PLUGINS,
        EXTRA_VOLUMES,
        CACHE_ON_A_CLAIM,
        TLS,
        TLS_FROM_CERT_MANAGER,
    ] {
        let rendered = render("default", values).await?;
        for object in &rendered.objects {
            let labels = &object["metadata"]["labels"];
            for key in [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app.kubernetes.io/version",
                "app.kubernetes.io/component",
                "app.kubernetes.io/managed-by",
                "helm.sh/chart",
            ] {
                assert!(
                    labels[key].is_string(),
                    "{} {} lacks {key}",
                    object["kind"],
                    object["metadata"]["name"]
                );
            }
            assert_eq!(labels["app.kubernetes.io/instance"], RELEASE);
        }
    }
    Ok(())
}

#[tokio::test]
async fn rbac_grants_the_lease_verbs_and_prepares_plugin_work() -> anyhow::Result<()> {
    let rendered = render("team-c", DEFAULTS).await?;
    let account = rendered.one("ServiceAccount");
    let account_name = &account["metadata"]["name"];
    assert_eq!(rendered.pod_spec()["serviceAccountName"], *account_name);

    let role = rendered.one("Role");
    assert_eq!(role["metadata"]["namespace"], "team-c");
    for verb in LEASE_VERBS {
        assert!(
            grants(&role["rules"], "coordination.k8s.io", "leases", verb),
            "the Role must allow {verb} on leases: {role}"
        );
    }
    let cluster_role = rendered.one("ClusterRole");
    for (group, resource, verb) in PLUGIN_PERMISSIONS {
        assert!(
            grants(&cluster_role["rules"], group, resource, verb),
            "the ClusterRole must allow {verb} on {resource}.{group}"
        );
    }
    assert!(
        !grants(
            &cluster_role["rules"],
            "coordination.k8s.io",
            "leases",
            "update"
        ),
        "Lease access stays namespaced"
    );
    // Uploads write as their caller: the replica itself writes no Plugin
    // and no ConfigMap anywhere.
    for (group, resource) in [("leasehold.dev", "plugins"), ("", "configmaps")] {
        for verb in ["create", "update", "patch", "delete"] {
            assert!(
                !grants(&cluster_role["rules"], group, resource, verb),
                "the ClusterRole must not allow {verb} on {resource}"
            );
        }
    }

    let expected_subject = json!([{
        "kind": "ServiceAccount",
        "name": account_name,
        "namespace": "team-c",
    }]);
    for (binding, granted) in [("RoleBinding", role), ("ClusterRoleBinding", cluster_role)] {
        let binding = rendered.one(binding);
        assert_eq!(binding["subjects"], expected_subject, "{binding}");
        assert_eq!(binding["roleRef"]["kind"], granted["kind"]);
        assert_eq!(binding["roleRef"]["name"], granted["metadata"]["name"]);
    }
    Ok(())
}

#[tokio::test]
async fn service_monitor_is_rendered_only_when_enabled() -> anyhow::Result<()> {
    let plain = render("default", DEFAULTS).await?;
    assert!(plain.all("ServiceMonitor").is_empty());

    let rendered = render("monitoring", MONITORED).await?;
    let monitor = rendered.one("ServiceMonitor");
    let service = rendered.one("Service");
    assert!(
        selects(
            &monitor["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "the ServiceMonitor must select the Service: {monitor}"
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!(["monitoring"])
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(
        monitor["metadata"]["labels"]["release"], "prom",
        "extra labels let a Prometheus select it"
    );
    Ok(())
}

// === plugins ===

/// The Plugin CRD as committed (generated from the host's types).
fn committed_plugin_crd() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(
        chart().join("crds/plugins.leasehold.dev.yaml"),
    )?)
}

#[tokio::test]
async fn the_plugin_crd_ships_in_crds_exactly_as_committed() -> anyhow::Result<()> {
    let plain = render("default", PLUGINS).await?;
    assert!(
        plain.all("CustomResourceDefinition").is_empty(),
        "a CRD among the templates would be deleted, with every Plugin, on uninstall"
    );

    let output = helm(
        vec![
            "template".to_owned(),
            RELEASE.to_owned(),
            chart().display().to_string(),
            "--include-crds".to_owned(),
        ],
        None,
    )
    .await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    let rendered = Rendered::parse(&text(&output.stdout))?;
    let committed = committed_plugin_crd()?;
    assert!(
        rendered.yaml.contains(&committed),
        "helm template --include-crds must print crds/plugins.leasehold.dev.yaml as committed"
    );
    let crd = rendered.one("CustomResourceDefinition");
    assert_eq!(*crd, serde_saphyr::from_str::<Value>(&committed)?);
    assert_eq!(crd["metadata"]["name"], "plugins.leasehold.dev");
    Ok(())
}

#[tokio::test]
async fn declared_plugins_render_as_plugin_objects_with_the_identity_asked_for()
-> anyhow::Result<()> {
    let plain = render("team-p", DEFAULTS).await?;
    assert!(plain.all("Plugin").is_empty(), "no plugins unless declared");

    let rendered = render("team-p", PLUGINS).await?;
    assert_eq!(rendered.all("Plugin").len(), 2);
    let mirror = rendered.named("Plugin", "configmap-mirror");
    assert_eq!(mirror["apiVersion"], "leasehold.dev/v1alpha1");
    assert_eq!(
        mirror["metadata"]["namespace"], "team-p",
        "a plugin lives in the release namespace unless it names one"
    );
    assert_eq!(
        mirror["spec"],
        json!({
            "source": {"image": {"path": "configmap_mirror.wasm"}},
            "serviceAccountName": "configmap-mirror",
            "config": {"namespaceSelector": "leasehold.dev/mirror-target=true"},
            "limits": {"memory": "32Mi", "timeout": "1s"},
        })
    );
    let greeter = rendered.named("Plugin", "greeter");
    assert_eq!(
        greeter["spec"],
        json!({
            "source": {"configMap": {
                "name": "greeter-component",
                "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            }},
            "serviceAccountName": "greeter",
            "limits": {"maxConcurrentReconciles": 2},
            "suspend": true,
        })
    );

    for account in ["configmap-mirror", "greeter"] {
        let account = rendered.named("ServiceAccount", account);
        assert_eq!(account["metadata"]["namespace"], "team-p");
    }
    // Each plugin's rules are granted where its values say, to its own
    // account, and nowhere else.
    let declared: Value = serde_saphyr::from_str(PLUGINS_YAML)?;
    let subject =
        |account: &str| json!([{"kind": "ServiceAccount", "name": account, "namespace": "team-p"}]);
    for (kind, binding_kind, name, rules, account) in [
        (
            "ClusterRole",
            "ClusterRoleBinding",
            "leasehold-plugin:team-p:configmap-mirror",
            &declared["plugins"][0]["clusterRules"],
            "configmap-mirror",
        ),
        (
            "Role",
            "RoleBinding",
            "leasehold-plugin-greeter",
            &declared["plugins"][1]["rules"],
            "greeter",
        ),
    ] {
        let role = rendered.named(kind, name);
        assert_eq!(role["rules"], *rules, "{kind} {name}");
        let binding = rendered.named(binding_kind, name);
        assert_eq!(binding["subjects"], subject(account), "{binding}");
        assert_eq!(binding["roleRef"]["kind"], kind);
        assert_eq!(binding["roleRef"]["name"], name);
    }
    assert_eq!(
        rendered.all("Role").len(),
        2,
        "the chart's own and the greeter's"
    );
    assert_eq!(
        rendered.all("ClusterRole").len(),
        2,
        "the chart's own and the mirror's"
    );

    let for_plugins = [
        ("Plugin", "configmap-mirror"),
        ("Plugin", "greeter"),
        ("ServiceAccount", "configmap-mirror"),
        ("ServiceAccount", "greeter"),
        ("ClusterRole", "leasehold-plugin:team-p:configmap-mirror"),
        (
            "ClusterRoleBinding",
            "leasehold-plugin:team-p:configmap-mirror",
        ),
        ("Role", "leasehold-plugin-greeter"),
        ("RoleBinding", "leasehold-plugin-greeter"),
    ];
    for object in &rendered.objects {
        let labels = &object["metadata"]["labels"];
        let for_a_plugin = for_plugins
            .iter()
            .any(|(kind, name)| object["kind"] == *kind && object["metadata"]["name"] == *name);
        let component = if for_a_plugin {
            "plugin"
        } else {
            "control-plane"
        };
        assert_eq!(
            labels["app.kubernetes.io/component"], component,
            "{} {}",
            object["kind"], object["metadata"]["name"]
        );
    }
    Ok(())
}

#[tokio::test]
async fn rendered_plugins_are_definitions_the_host_accepts() -> anyhow::Result<()> {
    let rendered = render("team-p", PLUGINS).await?;
    let definition = |name: &str| -> anyhow::Result<(Plugin, Definition)> {
        let plugin: Plugin = serde_json::from_value(rendered.named("Plugin", name).clone())?;
        let definition = Definition::of(&plugin)?;
        Ok((plugin, definition))
    };

    let (plugin, mirror) = definition("configmap-mirror")?;
    assert_eq!(plugin.spec.source.describe(), "image:configmap_mirror.wasm");
    assert_eq!(mirror.name, "team-p/configmap-mirror");
    assert_eq!(
        mirror.service_account,
        ServiceAccount::new("team-p", "configmap-mirror")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&mirror.config)?,
        json!({"namespaceSelector": "leasehold.dev/mirror-target=true"})
    );
    assert_eq!(mirror.limits.memory_bytes, 32 << 20);
    assert_eq!(mirror.limits.timeout, Duration::from_secs(1));
    assert!(!plugin.spec.suspend);

    let (plugin, greeter) = definition("greeter")?;
    assert_eq!(
        plugin.spec.source.describe(),
        "configMap:greeter-component/component.wasm"
    );
    assert_eq!(
        greeter.service_account,
        ServiceAccount::new("team-p", "greeter")
    );
    assert_eq!(&*greeter.config, "{}");
    assert_eq!(greeter.limits.concurrency, 2);
    assert!(plugin.spec.suspend);
    Ok(())
}

#[tokio::test]
async fn each_plugin_account_is_made_once_in_the_plugins_namespace() -> anyhow::Result<()> {
    let plugin = |name: &str, namespace: Option<&str>| {
        let mut plugin = json!({
            "name": name,
            "source": {"image": {"path": format!("{name}.wasm")}},
            "serviceAccountName": "shared",
            "serviceAccount": {"create": true},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        });
        if let Some(namespace) = namespace {
            plugin["namespace"] = json!(namespace);
        }
        plugin
    };
    let values = json!({"plugins": [
        plugin("a", Some("team-q")),
        plugin("b", None),
        plugin("c", Some("team-q")),
    ]})
    .to_string();
    let rendered = render("team-p", Values::File(&values)).await?;

    let namespace_of =
        |kind: &str, name: &str| rendered.named(kind, name)["metadata"]["namespace"].clone();
    assert_eq!(namespace_of("Plugin", "a"), "team-q");
    assert_eq!(namespace_of("Plugin", "b"), "team-p");
    let mut accounts: Vec<String> = rendered
        .all("ServiceAccount")
        .iter()
        .map(|account| {
            format!(
                "{}/{}",
                account["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default(),
                account["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    accounts.sort();
    assert_eq!(
        accounts,
        ["team-p/leasehold", "team-p/shared", "team-q/shared"],
        "one account per namespace, however many plugins share it"
    );
    let binding = rendered.named("RoleBinding", "leasehold-plugin-a");
    assert_eq!(binding["metadata"]["namespace"], "team-q");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "shared", "namespace": "team-q"}])
    );
    Ok(())
}

// === bad values ===

#[tokio::test]
async fn bad_values_are_refused_at_install_with_the_reason() -> anyhow::Result<()> {
    let cases: &[(&str, &[&str])] = &[
        ("replicaCount=0", &["/replicaCount", "minimum"]),
        ("replicaCount=three", &["/replicaCount", "want integer"]),
        (
            "election.renewDeadline=soon",
            &["/election/renewDeadline", "does not match pattern"],
        ),
        (
            "election.renewDeadline=10",
            &["/election/renewDeadline", "want string"],
        ),
        (
            "election.leaseDuration=1500ms",
            &["/election/leaseDuration", "does not match pattern"],
        ),
        (
            "replicas=3",
            &["additional properties 'replicas' not allowed"],
        ),
        (
            "election.leaseDurration=20s",
            &["'leaseDurration' not allowed"],
        ),
        ("logFormat=xml", &["/logFormat"]),
        (
            "election.renewDeadline=15s",
            &["election.leaseDuration (15s) must be greater than election.renewDeadline (15s)"],
        ),
        (
            "election.retryPeriod=9s",
            &["election.renewDeadline (10s) must be greater than 1.2 × election.retryPeriod (9s)"],
        ),
    ];
    for (value, reasons) in cases {
        let message = refusal(Values::Set(&[value])).await?;
        for reason in *reasons {
            assert!(
                message.contains(reason),
                "--set {value} was refused, but the message does not say {reason:?}:\n{message}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn bad_volume_and_tls_values_are_refused_at_install_with_the_reason() -> anyhow::Result<()> {
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"extraVolumes": {"name": "scratch", "emptyDir": {}}}),
            &["at '/extraVolumes': got object, want array"],
        ),
        (
            json!({"extraVolumes": [{"emptyDir": {}}]}),
            &["at '/extraVolumes/0': missing property 'name'"],
        ),
        (
            json!({"extraVolumes": [{"name": "Scratch_1", "emptyDir": {}}]}),
            &["at '/extraVolumes/0/name'", "does not match pattern"],
        ),
        (
            json!({"extraVolumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "scratch", "configMap": {"name": "other"}},
            ]}),
            &["extraVolumes[1]: extraVolumes[0] is already named \"scratch\""],
        ),
        (
            json!({"extraVolumeMounts": [{"name": "scratch"}]}),
            &["at '/extraVolumeMounts/0': missing property 'mountPath'"],
        ),
        (
            json!({
                "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
                "extraVolumeMounts": [{"name": "scratch", "mountPath": "tmp"}],
            }),
            &[
                "at '/extraVolumeMounts/0/mountPath'",
                "does not match pattern",
            ],
        ),
        (
            json!({"extraVolumeMounts": [{"name": "scratch", "mountPath": "/tmp"}]}),
            &["extraVolumeMounts[0] mounts \"scratch\", which is not in extraVolumes"],
        ),
        (
            json!({"extraVolumes": [{"name": "compile-cache", "emptyDir": {}}]}),
            &["extraVolumes[0]: \"compile-cache\" is the name of the chart's own volume"],
        ),
        (
            json!({"compileCache": {"persistentVolumeClaim": {"existingClaim": "wasm-cache", "create": true}}}),
            &[
                "compileCache.persistentVolumeClaim: existingClaim (wasm-cache) and create are two claims for one cache; set one",
            ],
        ),
        (
            json!({"compileCache": {"persistentVolumeClaim": {"create": true, "accessModes": ["ReadWriteOncePod"]}}}),
            &[
                "at '/compileCache/persistentVolumeClaim/accessModes/0': value must be one of 'ReadWriteMany', 'ReadWriteOnce'",
            ],
        ),
        (
            json!({"compileCache": {"persistentVolumeClaim": {"existingClaim": "Wasm_Cache"}}}),
            &[
                "at '/compileCache/persistentVolumeClaim/existingClaim'",
                "does not match pattern",
            ],
        ),
        (
            json!({"compileCache": {"emptyDir": {"sizeLimit": "1 GB"}}}),
            &[
                "at '/compileCache/emptyDir/sizeLimit'",
                "does not match pattern",
            ],
        ),
        (
            json!({"compileCache": {"emptyDir": {"medium": "HugePages"}}}),
            &["at '/compileCache/emptyDir/medium': value must be one of '', 'Memory'"],
        ),
        (
            json!({"compileCache": {"path": "/cache"}}),
            &["at '/compileCache': additional properties 'path' not allowed"],
        ),
        (
            json!({"tls": {"enabled": true, "secretName": "api-cert",
                "certManager": {"enabled": true, "issuerRef": {"name": "cluster-ca"}}}}),
            &[
                "tls.secretName (api-cert) and tls.certManager.enabled are two sources for one certificate; set one",
            ],
        ),
        (
            json!({"tls": {"enabled": true, "issuedByReplicas": true, "secretName": "api-cert"}}),
            &[
                "tls.issuedByReplicas and tls.secretName or tls.certManager.enabled are two sources for one certificate; set one",
            ],
        ),
        (
            json!({"tls": {"enabled": true, "certManager": {"enabled": true}}}),
            &[
                "tls.certManager.issuerRef.name is required: the Issuer or ClusterIssuer that signs the certificate",
            ],
        ),
        (
            json!({"tls": {"enabled": "yes"}}),
            &["at '/tls/enabled': got string, want boolean"],
        ),
        (
            json!({"tls": {"enabled": true, "secretName": "API_cert"}}),
            &["at '/tls/secretName'", "does not match pattern"],
        ),
        (
            json!({"tls": {"enabled": true, "certFile": "/etc/tls.crt"}}),
            &["at '/tls': additional properties 'certFile' not allowed"],
        ),
        (
            json!({"tls": {"enabled": true, "certManager": {"enabled": true,
                "issuerRef": {"name": "cluster-ca"}, "duration": "90d"}}}),
            &["at '/tls/certManager/duration'", "does not match pattern"],
        ),
        (
            json!({"tls": {"enabled": true, "extraDnsNames": ["https://leasehold.example.com"]}}),
            &["at '/tls/extraDnsNames/0'", "does not match pattern"],
        ),
        (
            json!({"tls": {"enabled": true},
                "extraVolumes": [{"name": "tls", "secret": {"secretName": "mine"}}]}),
            &["extraVolumes[0]: \"tls\" is the name of the chart's own volume"],
        ),
        (
            json!({"serviceMonitor": {"tlsConfig": "insecure"}}),
            &["at '/serviceMonitor/tlsConfig': got string, want object"],
        ),
    ];
    for (values, reasons) in cases {
        let file = values.to_string();
        let message = refusal(Values::File(&file)).await?;
        for reason in reasons {
            assert!(
                message.contains(reason),
                "{values} was refused, but the message does not say {reason:?}:\n{message}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn chart_and_host_agree_on_which_election_timings_are_valid() -> anyhow::Result<()> {
    // (lease duration, renew deadline, retry period, valid)
    let cases = [
        ("15s", "10s", "2s", true),
        ("4s", "3s", "1s", true),
        ("1m", "45s", "500ms", true),
        ("2h", "1h30m", "1m", true),
        ("15s", "2401ms", "2s", true),
        ("10s", "10s", "2s", false),
        ("10s", "11s", "2s", false),
        ("15s", "2400ms", "2s", false),
        ("15s", "10s", "0s", false),
        ("0s", "10s", "2s", false),
        ("2500ms", "2s", "500ms", false),
    ];
    for (lease, deadline, retry, valid) in cases {
        let values = [
            format!("election.leaseDuration={lease}"),
            format!("election.renewDeadline={deadline}"),
            format!("election.retryPeriod={retry}"),
        ];
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let chart_accepts = template("default", Values::Set(&values))
            .await?
            .status
            .success();
        let host_accepts = host_config(&[
            "run".to_owned(),
            format!("--lease-duration={lease}"),
            format!("--renew-deadline={deadline}"),
            format!("--retry-period={retry}"),
        ])
        .is_ok();
        assert_eq!(
            host_accepts, valid,
            "the host's rules changed for {lease}/{deadline}/{retry}; update this table and the chart"
        );
        assert_eq!(
            chart_accepts, host_accepts,
            "chart and host disagree on lease {lease}, deadline {deadline}, retry {retry}"
        );
    }
    Ok(())
}

/// A plugin the chart accepts.
fn valid_plugin() -> Value {
    json!({
        "name": "mirror",
        "source": {"image": {"path": "configmap_mirror.wasm"}},
        "serviceAccountName": "mirror",
    })
}

/// [`valid_plugin`] with the field at `pointer` (`/limits/memory`) set to
/// `value`, or removed when `value` is `None`.
fn plugin_with(pointer: &str, value: Option<Value>) -> Value {
    let mut plugin = valid_plugin();
    let (parent, field) = pointer.rsplit_once('/').expect("a JSON pointer");
    let mut target = &mut plugin;
    for key in parent.split('/').skip(1) {
        // Indexing creates missing objects on the way.
        target = &mut target[key];
    }
    match value {
        Some(value) => target[field] = value,
        None => {
            if let Some(object) = target.as_object_mut() {
                object.remove(field);
            }
        }
    }
    plugin
}

#[tokio::test]
async fn bad_plugin_values_are_refused_at_install_with_the_reason() -> anyhow::Result<()> {
    let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"name": "mirror"}),
            &["at '/plugins': got object, want array"],
        ),
        (
            json!([plugin_with("/name", None)]),
            &["at '/plugins/0': missing property 'name'"],
        ),
        (
            json!([plugin_with("/name", Some(json!("Mirror_1")))]),
            &["at '/plugins/0/name'", "does not match pattern"],
        ),
        (
            json!([plugin_with("/name", Some(json!(7)))]),
            &["at '/plugins/0/name': got number, want string"],
        ),
        (
            json!([plugin_with("/namespace", Some(json!("team.a")))]),
            &["at '/plugins/0/namespace'", "does not match pattern"],
        ),
        (
            json!([plugin_with("/source", None)]),
            &["at '/plugins/0': missing property 'source'"],
        ),
        (
            json!([plugin_with("/source", Some(json!({})))]),
            &[
                "plugins[0] (Plugin default/mirror): source must set exactly one of configMap, http, oci, image; it sets none",
            ],
        ),
        (
            json!([plugin_with(
                "/source/oci",
                Some(json!({"reference": "registry.example/mirror:1.0"}))
            )]),
            &[
                "plugins[0] (Plugin default/mirror): source must set exactly one",
                "it sets image and oci",
            ],
        ),
        (
            json!([plugin_with(
                "/source/git",
                Some(json!({"url": "https://example.com/mirror"}))
            )]),
            &["at '/plugins/0/source': additional properties 'git' not allowed"],
        ),
        (
            json!([plugin_with(
                "/source",
                Some(json!({"http": {"url": "https://example.com/m.wasm"}}))
            )]),
            &["at '/plugins/0/source/http': missing property 'sha256'"],
        ),
        (
            json!([plugin_with(
                "/source",
                Some(json!({"http": {"url": "ftp://example.com/m.wasm", "sha256": digest}}))
            )]),
            &["at '/plugins/0/source/http/url'", "does not match pattern"],
        ),
        (
            json!([plugin_with(
                "/source",
                Some(json!({"configMap": {"name": "mirror", "sha256": "abc"}}))
            )]),
            &[
                "at '/plugins/0/source/configMap/sha256'",
                "does not match pattern",
            ],
        ),
        (
            json!([plugin_with("/source/image/path", Some(json!("")))]),
            &["at '/plugins/0/source/image/path'", "minLength"],
        ),
        (
            json!([plugin_with("/serviceAccountName", None)]),
            &["at '/plugins/0': missing property 'serviceAccountName'"],
        ),
        (
            json!([plugin_with("/serviceAccountName", Some(json!("leasehold")))]),
            &[
                "plugins[0] (Plugin default/mirror): serviceAccountName \"leasehold\" is the ServiceAccount the replicas run as",
            ],
        ),
        (
            json!([plugin_with("/serviceaccountName", Some(json!("mirror")))]),
            &["at '/plugins/0': additional properties 'serviceaccountName' not allowed"],
        ),
        (
            json!([plugin_with("/serviceAccount/name", Some(json!("mirror")))]),
            &["at '/plugins/0/serviceAccount': additional properties 'name' not allowed"],
        ),
        (
            json!([plugin_with("/serviceAccount/create", Some(json!("yes")))]),
            &["at '/plugins/0/serviceAccount/create': got string, want boolean"],
        ),
        (
            json!([plugin_with(
                "/config",
                Some(json!("namespaceSelector=team"))
            )]),
            &["at '/plugins/0/config': got string, want object"],
        ),
        (
            json!([plugin_with("/suspend", Some(json!("yes")))]),
            &["at '/plugins/0/suspend': got string, want boolean"],
        ),
        (
            json!([plugin_with(
                "/limits/maxConcurrentReconciles",
                Some(json!(0))
            )]),
            &["at '/plugins/0/limits/maxConcurrentReconciles': minimum: got 0, want 1"],
        ),
        (
            json!([plugin_with(
                "/limits/maxConcurrentReconciles",
                Some(json!(-1))
            )]),
            &["at '/plugins/0/limits/maxConcurrentReconciles': minimum: got -1, want 1"],
        ),
        (
            json!([plugin_with(
                "/limits/maxConcurrentReconciles",
                Some(json!(65))
            )]),
            &["at '/plugins/0/limits/maxConcurrentReconciles': maximum: got 65, want 64"],
        ),
        (
            json!([plugin_with(
                "/limits/maxConcurrentReconciles",
                Some(json!("4"))
            )]),
            &["at '/plugins/0/limits/maxConcurrentReconciles': got string, want integer"],
        ),
        (
            json!([plugin_with("/limits/memory", Some(json!(67108864)))]),
            &["at '/plugins/0/limits/memory': got number, want string"],
        ),
        (
            json!([plugin_with("/limits/memory", Some(json!("64MB")))]),
            &["at '/plugins/0/limits/memory'", "does not match pattern"],
        ),
        (
            json!([plugin_with("/limits/memory", Some(json!("1Gi")))]),
            &[
                "plugins[0] (Plugin default/mirror): limits.memory 1Gi is more than the host allows a plugin (512Mi)",
            ],
        ),
        (
            json!([plugin_with("/limits/timeout", Some(json!("2 seconds")))]),
            &["at '/plugins/0/limits/timeout'", "does not match pattern"],
        ),
        (
            json!([plugin_with("/limits/timeout", Some(json!("10m")))]),
            &["plugins[0] (Plugin default/mirror): limits.timeout 10m must be between 1ms and 5m"],
        ),
        (
            json!([plugin_with("/limits/cpu", Some(json!("100m")))]),
            &["at '/plugins/0/limits': additional properties 'cpu' not allowed"],
        ),
        (
            json!([plugin_with(
                "/rules",
                Some(json!([{"apiGroups": [""], "resources": ["configmaps"]}]))
            )]),
            &["at '/plugins/0/rules/0': missing property 'verbs'"],
        ),
        (
            json!([plugin_with(
                "/clusterRules",
                Some(json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": []}]))
            )]),
            &["at '/plugins/0/clusterRules/0/verbs': minItems: got 0, want 1"],
        ),
        (
            json!([plugin_with(
                "/clusterRules",
                Some(json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]))
            )]),
            &[
                "at '/plugins/0/clusterRules/0'",
                "additional properties 'nonResourceURLs' not allowed",
            ],
        ),
        (
            json!([plugin_with("/rules", Some(json!({"apiGroups": [""]})))]),
            &["at '/plugins/0/rules': got object, want array"],
        ),
        (
            json!([valid_plugin(), valid_plugin()]),
            &["plugins[1] (Plugin default/mirror): plugins[0] already declares this Plugin"],
        ),
    ];
    for (plugins, reasons) in cases {
        let values = json!({ "plugins": plugins }).to_string();
        let message = refusal(Values::File(&values)).await?;
        for reason in reasons {
            assert!(
                message.contains(reason),
                "plugins {plugins} were refused, but the message does not say {reason:?}:\n{message}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn chart_and_host_agree_on_which_plugin_limits_are_valid() -> anyhow::Result<()> {
    // (limits, valid)
    let cases = [
        (
            json!({"memory": "64Mi", "timeout": "2s", "maxConcurrentReconciles": 4}),
            true,
        ),
        (json!({"memory": "512Mi"}), true),
        (json!({"memory": "536870912"}), true),
        (json!({"memory": "1024Ki"}), true),
        (json!({"memory": "513Mi"}), false),
        (json!({"memory": "1Gi"}), false),
        (json!({"memory": "536870913"}), false),
        (json!({"memory": "64MB"}), false),
        (json!({"timeout": "1ms"}), true),
        (json!({"timeout": "1m30s"}), true),
        (json!({"timeout": "5m"}), true),
        (json!({"timeout": "5m1s"}), false),
        (json!({"timeout": "1h"}), false),
        (json!({"timeout": "0s"}), false),
        (json!({"timeout": "soon"}), false),
        (json!({"maxConcurrentReconciles": 1}), true),
        (json!({"maxConcurrentReconciles": 0}), false),
        (json!({"maxConcurrentReconciles": -1}), false),
    ];
    for (limits, valid) in cases {
        let plugin = plugin_with("/limits", Some(limits.clone()));
        let values = json!({ "plugins": [plugin.clone()] }).to_string();
        let chart_accepts = template("default", Values::File(&values))
            .await?
            .status
            .success();
        let host_accepts = serde_json::from_value::<Plugin>(json!({
            "apiVersion": "leasehold.dev/v1alpha1",
            "kind": "Plugin",
            "metadata": {"name": "mirror", "namespace": "default"},
            "spec": {
                "source": plugin["source"],
                "serviceAccountName": plugin["serviceAccountName"],
                "limits": limits,
            },
        }))
        .is_ok_and(|plugin| Definition::of(&plugin).is_ok());
        assert_eq!(
            host_accepts, valid,
            "the host's rules changed for limits {limits}; update this table and the chart"
        );
        assert_eq!(
            chart_accepts, host_accepts,
            "chart and host disagree on limits {limits}"
        );
    }
    Ok(())
}

// === against the real API server ===

/// A ServiceMonitor CRD reduced to the fields the chart sets, typed as the
/// Prometheus Operator types them, so a misspelt or mistyped field is
/// refused (kubectl validates strictly).
async fn install_service_monitor_crd(cluster: &TestCluster) -> anyhow::Result<()> {
    let duration = json!({
        "type": "string",
        "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
    });
    let key_selector = json!({
        "type": "object",
        "required": ["key"],
        "properties": {
            "name": {"type": "string"},
            "key": {"type": "string"},
            "optional": {"type": "boolean"}
        }
    });
    // Apart from the rest: one json! this deep passes the macro's recursion limit.
    let endpoint = json!({"type": "object", "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": duration,
        "scrapeTimeout": duration,
        "scheme": {"type": "string", "enum": ["http", "https"]},
        "tlsConfig": {"type": "object", "properties": {
            "ca": {"type": "object", "properties": {
                "secret": key_selector.clone(),
                "configMap": key_selector
            }},
            "serverName": {"type": "string"},
            "insecureSkipVerify": {"type": "boolean"}
        }}
    }});
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "plural": "servicemonitors", "singular": "servicemonitor",
                "kind": "ServiceMonitor", "listKind": "ServiceMonitorList"
            },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {
                            "type": "object",
                            "required": ["endpoints", "selector"],
                            "properties": {
                                "selector": {"type": "object", "properties": {
                                    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                                }},
                                "namespaceSelector": {"type": "object", "properties": {
                                    "any": {"type": "boolean"},
                                    "matchNames": {"type": "array", "items": {"type": "string"}}
                                }},
                                "endpoints": {"type": "array", "items": endpoint}
                            }
                        }
                    }
                }}
            }]
        }
    }))?;
    apply_crd(&cluster.client()?, &crd).await
}

async fn kubectl(cluster: &TestCluster, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
    let mut all = vec![
        "--kubeconfig".to_owned(),
        cluster.kubeconfig().display().to_string(),
    ];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    run(&kube_tools().kubectl, &all, Some(stdin)).await
}

/// The `plugins:` example commented in values.yaml, uncommented: what users
/// copy must install.
fn values_yaml_plugin_example() -> anyhow::Result<String> {
    let values = std::fs::read_to_string(chart().join("values.yaml"))?;
    let example: Vec<&str> = values
        .lines()
        .skip_while(|line| *line != "# plugins:")
        .take_while(|line| line.starts_with('#'))
        .map(|line| line.strip_prefix("# ").unwrap_or("").trim_end())
        .collect();
    ensure!(
        example.len() > 1,
        "values.yaml lacks its commented `# plugins:` example"
    );
    Ok(example.join("\n"))
}

#[tokio::test]
async fn api_server_accepts_the_rendered_manifests_in_a_server_side_dry_run() -> anyhow::Result<()>
{
    let cluster = TestCluster::shared().await;
    install_service_monitor_crd(cluster).await?;
    install_plugin_crd(&cluster.client()?).await?;
    let example = values_yaml_plugin_example()?;
    for values in [
        DEFAULTS,
        HA,
        MONITORED,
        PLUGINS,
        EXTRA_VOLUMES,
        CACHE_ON_A_CLAIM,
        TLS,
        TLS_FROM_A_SECRET,
        Values::File(&example),
    ] {
        let namespace = cluster.namespace("chart-dry-run").await?;
        let rendered = render(&namespace, values).await?;
        let output = kubectl(
            cluster,
            &[
                "apply",
                "--dry-run=server",
                "--namespace",
                &namespace,
                "-f",
                "-",
            ],
            &rendered.yaml,
        )
        .await?;
        let report = text(&output.stdout);
        ensure!(
            output.status.success(),
            "the API server refused the chart with {values:?}:\n{}{report}",
            text(&output.stderr)
        );
        let accepted = report
            .lines()
            .filter(|line| line.ends_with("(server dry run)"))
            .count();
        assert_eq!(
            accepted,
            rendered.objects.len(),
            "every rendered object must be accepted:\n{report}"
        );
    }
    Ok(())
}

/// `helm install`s the chart into a fresh namespace; returns the namespace
/// and helm's output (with NOTES).
#[tokio::test]
async fn a_plugin_declared_in_values_runs_with_the_charts_rbac_alone() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let admin = cluster.client()?;
    // The built components stand in for the ones the image bakes in.
    let plugin_root = plugin_component("configmap-mirror")
        .parent()
        .context("components live in a directory")?
        .display()
        .to_string();
    let selector = unique_name("mirror-target");
    let values = format!(
        r#"
extraArgs: ["--plugin-root={plugin_root}"]
plugins:
  - name: configmap-mirror
    source: {{image: {{path: configmap_mirror.wasm}}}}
    serviceAccountName: configmap-mirror
    serviceAccount: {{create: true}}
    config: {{namespaceSelector: "leasehold.dev/mirror-target={selector}"}}
    clusterRules:
      - {{apiGroups: [""], resources: [configmaps], verbs: [get, list, watch, create, update, patch, delete]}}
      - {{apiGroups: [""], resources: [namespaces], verbs: [get, list, watch]}}
      - {{apiGroups: ["", events.k8s.io], resources: [events], verbs: [create, patch]}}
"#
    );
    let (namespace, _) = install(cluster, Values::File(&values)).await?;
    let pod_name = "leasehold-7d4b9c6f8-m2p5r";
    let replica = InstalledReplica::start(cluster, &namespace, pod_name).await?;

    let plugins: Api<Plugin> = Api::namespaced(admin.clone(), &namespace);
    eventually(Duration::from_secs(90), "the plugin to run", || async {
        let status = plugins.get("configmap-mirror").await.ok()?.status?;
        let ready = status
            .conditions
            .iter()
            .any(|condition| condition.type_ == "Ready" && condition.status == "True");
        (ready && status.running_on.as_deref() == Some(pod_name)).then_some(())
    })
    .await
    .with_context(|| replica.log())?;

    // It acts as its own account, which the host impersonates: a copy lands.
    // (Other tests' mirrors see every labelled source: a unique name keeps
    // their copies from colliding with theirs.)
    let target = labelled_namespace(&admin, ("leasehold.dev/mirror-target", &selector)).await?;
    let source = unique_name("source");
    Api::<ConfigMap>::namespaced(admin.clone(), &namespace)
        .create(
            &PostParams::default(),
            &config_map(&source, &[("leasehold.dev/mirror", "true")], &[("a", "1")]),
        )
        .await?;
    let copies: Api<ConfigMap> = Api::namespaced(admin, &target);
    eventually(Duration::from_secs(60), "the mirrored copy", || async {
        copies.get_opt(&source).await.ok()?.map(|_| ())
    })
    .await
    .with_context(|| replica.log())?;
    // The chart watches Plugins in every namespace, so its replica also
    // runs other tests' plugins, whose own 403s are theirs: only the host's
    // lines and this plugin's count.
    let log = replica.log();
    let own = format!("\"plugin\":\"{namespace}/configmap-mirror\"");
    let denied: Vec<&str> = log
        .lines()
        .filter(|line| line.to_lowercase().contains("forbidden"))
        .filter(|line| !line.contains("\"plugin\":\"") || line.contains(&own))
        .collect();
    assert!(
        denied.is_empty(),
        "the chart's RBAC denied the host something:\n{}",
        denied.join("\n")
    );

    // With fencing (the chart's default) even the status is written carrying
    // the term: as the host's own account, impersonated with the extra.
    // A term of this replica's Lease: `…/1`, or a later one if a loaded
    // machine made it step down and lead again meanwhile.
    let term = format!("{namespace}/{RELEASE}/{pod_name}/");
    let audit = std::fs::read_to_string(cluster.audit_log())?;
    let status_terms: Vec<Value> = audit
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| {
            let target = &event["objectRef"];
            // This replica's (other tests' installed replicas watch every
            // namespace too, each with a term of its own release).
            target["resource"] == "plugins"
                && target["subresource"] == "status"
                && target["namespace"] == namespace.as_str()
                && event["stage"] == "ResponseComplete"
                && event["userAgent"]
                    .as_str()
                    .is_some_and(|agent| agent.ends_with(&format!("({pod_name})")))
        })
        .map(|event| event["impersonatedUser"]["extra"]["leasehold.dev/term"].clone())
        .collect();
    assert!(!status_terms.is_empty(), "no status write in the audit log");
    let carries_a_term = |terms: &Value| {
        terms.as_array().is_some_and(|terms| {
            terms.len() == 1
                && terms[0]
                    .as_str()
                    .and_then(|carried| carried.strip_prefix(&term))
                    .is_some_and(|transitions| transitions.parse::<u32>().is_ok_and(|n| n >= 1))
        })
    };
    assert!(
        status_terms.iter().all(carries_a_term),
        "every status write carries a term {term}<n>: {status_terms:?}"
    );
    Ok(())
}

async fn install(cluster: &TestCluster, values: Values<'_>) -> anyhow::Result<(String, String)> {
    let namespace = cluster.namespace("chart-install").await?;
    let mut args = vec![
        "install".to_owned(),
        RELEASE.to_owned(),
        chart().display().to_string(),
        "--namespace".to_owned(),
        namespace.clone(),
        "--kubeconfig".to_owned(),
        cluster.kubeconfig().display().to_string(),
    ];
    let (values, stdin) = values.args();
    args.extend(values);
    let output = helm(args, stdin).await?;
    ensure!(
        output.status.success(),
        "helm install failed: {}",
        text(&output.stderr)
    );
    Ok((namespace, text(&output.stdout)))
}

async fn upgrade(
    cluster: &TestCluster,
    namespace: &str,
    values: Values<'_>,
) -> anyhow::Result<Output> {
    let mut args = vec![
        "upgrade".to_owned(),
        RELEASE.to_owned(),
        chart().display().to_string(),
        "--namespace".to_owned(),
        namespace.to_owned(),
        "--kubeconfig".to_owned(),
        cluster.kubeconfig().display().to_string(),
        "--reuse-values".to_owned(),
    ];
    let (values, stdin) = values.args();
    args.extend(values);
    helm(args, stdin).await
}

#[tokio::test]
async fn replica_count_is_all_it_takes_to_go_ha_and_back() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let (namespace, notes) = install(cluster, DEFAULTS).await?;
    for hint in [
        format!("kubectl --namespace {namespace} port-forward svc/{RELEASE} 8080:8080"),
        "curl -s localhost:8080/api/v1/leader".to_owned(),
        format!("kubectl --namespace {namespace} get lease {RELEASE}"),
        "--reuse-values --set replicaCount=3".to_owned(),
    ] {
        assert!(notes.contains(&hint), "NOTES lack {hint:?}:\n{notes}");
    }

    let client = cluster.client()?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client, &namespace);
    let replicas = |deployment: &Deployment| deployment.spec.as_ref().and_then(|s| s.replicas);
    let anti_affinity = |deployment: &Deployment| {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .is_some()
    };
    let deployment = deployments.get(RELEASE).await?;
    assert_eq!(replicas(&deployment), Some(1));
    assert!(budgets.get_opt(RELEASE).await?.is_none());

    let output = upgrade(cluster, &namespace, HA).await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    let upgraded = text(&output.stdout);
    assert!(
        !upgraded.contains("--set replicaCount=3"),
        "no HA hint once HA:\n{upgraded}"
    );
    let deployment = deployments.get(RELEASE).await?;
    assert_eq!(replicas(&deployment), Some(3));
    assert!(anti_affinity(&deployment));
    let budget = budgets.get(RELEASE).await?;
    assert_eq!(
        budget.spec.and_then(|s| s.min_available),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );

    // A bad upgrade is refused by helm and changes nothing.
    let before = deployments.get(RELEASE).await?.metadata.resource_version;
    let output = upgrade(
        cluster,
        &namespace,
        Values::Set(&["election.renewDeadline=20s"]),
    )
    .await?;
    assert!(
        !output.status.success(),
        "renewDeadline 20s > leaseDuration 15s"
    );
    assert!(text(&output.stderr).contains("election.renewDeadline (20s)"));
    assert_eq!(
        deployments.get(RELEASE).await?.metadata.resource_version,
        before
    );

    let output = upgrade(cluster, &namespace, Values::Set(&["replicaCount=1"])).await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    let deployment = deployments.get(RELEASE).await?;
    assert_eq!(replicas(&deployment), Some(1));
    assert!(!anti_affinity(&deployment));
    assert!(budgets.get_opt(RELEASE).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn installed_plugins_act_with_the_rights_their_values_grant_and_no_more() -> anyhow::Result<()>
{
    let cluster = TestCluster::shared().await;
    // helm installs crds/ only when the CRD is absent, and the cluster is
    // shared: install it as a first install would, and wait until it is served.
    install_plugin_crd(&cluster.client()?).await?;
    let (namespace, notes) = install(cluster, PLUGINS).await?;
    let hint =
        format!("kubectl get plugins --all-namespaces -l app.kubernetes.io/instance={RELEASE}");
    assert!(notes.contains(&hint), "NOTES lack {hint:?}:\n{notes}");

    let plugins: Api<Plugin> = Api::namespaced(cluster.client()?, &namespace);
    let mut names: Vec<String> = plugins
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|plugin| plugin.metadata.name.clone().unwrap_or_default())
        .collect();
    names.sort();
    assert_eq!(names, ["configmap-mirror", "greeter"]);
    assert!(plugins.get("greeter").await?.spec.suspend);

    let mirror = format!("system:serviceaccount:{namespace}:configmap-mirror");
    let greeter = format!("system:serviceaccount:{namespace}:greeter");
    for (user, scope, permission) in [
        (&mirror, "any-namespace", ("", "configmaps", "update")),
        (&mirror, "", ("", "namespaces", "watch")),
        (&greeter, namespace.as_str(), ("", "configmaps", "create")),
        (
            &greeter,
            namespace.as_str(),
            ("examples.leasehold.dev", "greetings/status", "patch"),
        ),
    ] {
        assert!(
            allowed(cluster, user, scope, permission).await?,
            "{user} must be allowed {permission:?} in {scope:?}"
        );
    }
    for (user, scope, permission) in [
        (&greeter, "default", ("", "configmaps", "get")),
        (&greeter, namespace.as_str(), ("", "configmaps", "delete")),
        (&mirror, namespace.as_str(), ("", "secrets", "get")),
        (&greeter, namespace.as_str(), ("", "secrets", "get")),
        (
            &mirror,
            namespace.as_str(),
            ("leasehold.dev", "plugins", "update"),
        ),
        (
            &mirror,
            namespace.as_str(),
            ("", "serviceaccounts", "impersonate"),
        ),
    ] {
        assert!(
            !allowed(cluster, user, scope, permission).await?,
            "{user} must not be allowed {permission:?} in {scope:?}"
        );
    }
    Ok(())
}

/// Asks the API server whether `user` may do `verb` on `resource`.
async fn allowed(
    cluster: &TestCluster,
    user: &str,
    namespace: &str,
    (group, resource, verb): (&str, &str, &str),
) -> anyhow::Result<bool> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, sub)) => (resource, Some(sub.to_owned())),
        None => (resource, None),
    };
    let account_namespace = user.split(':').nth(2).unwrap_or_default();
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            groups: Some(vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{account_namespace}"),
                "system:authenticated".to_owned(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource,
                verb: Some(verb.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviewed = Api::<SubjectAccessReview>::all(cluster.client()?)
        .create(&PostParams::default(), &review)
        .await?;
    Ok(reviewed.status.is_some_and(|status| status.allowed))
}

#[tokio::test]
async fn installed_rbac_grants_the_service_account_what_it_needs_and_no_more() -> anyhow::Result<()>
{
    let cluster = TestCluster::shared().await;
    let (namespace, _) = install(cluster, DEFAULTS).await?;
    let user = format!("system:serviceaccount:{namespace}:{RELEASE}");
    for verb in LEASE_VERBS {
        let permission = ("coordination.k8s.io", "leases", verb);
        assert!(
            allowed(cluster, &user, &namespace, permission).await?,
            "{verb} leases in the release namespace"
        );
        assert!(
            !allowed(cluster, &user, "default", permission).await?,
            "{verb} leases outside the release namespace must be denied"
        );
    }
    for permission in PLUGIN_PERMISSIONS {
        assert!(
            allowed(cluster, &user, "any-namespace", permission).await?,
            "{permission:?} for plugin work"
        );
    }
    for denied in [
        ("", "secrets", "get"),
        ("", "pods", "create"),
        ("leasehold.dev", "plugins", "delete"),
        ("leasehold.dev", "plugins", "create"),
        ("", "configmaps", "create"),
        ("", "users", "impersonate"),
        // Naming groups when impersonating would let the host claim any
        // group, system:masters included; a ServiceAccount's come with it.
        ("", "groups", "impersonate"),
    ] {
        assert!(
            !allowed(cluster, &user, &namespace, denied).await?,
            "{denied:?} must not be granted"
        );
    }
    Ok(())
}

/// A kubeconfig that authenticates with `token` only.
fn token_kubeconfig(admin: &Path, token: &str, out: &Path) -> anyhow::Result<()> {
    let admin = kube::config::Kubeconfig::read_from(admin)?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|named| named.cluster.clone())
        .context("the admin kubeconfig names a cluster")?;
    let server = cluster.server.context("the cluster has a server")?;
    let ca = cluster
        .certificate_authority
        .context("the cluster has a CA file")?;
    std::fs::write(
        out,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
             users:\n- name: replica\n  user:\n    token: {token}\n\
             contexts:\n- name: replica\n  context:\n    cluster: test\n    user: replica\n\
             current-context: replica\n"
        ),
    )?;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A replica started the way the installed Deployment's container runs: its
/// args (bar the listen address: a test shares loopback with others; and the
/// compile cache, the pod's volume, which is a directory of the test's), the
/// pod's ServiceAccount token and, through the downward API, its name.
struct InstalledReplica {
    child: tokio::process::Child,
    port: u16,
    log: PathBuf,
    _workdir: tempfile::TempDir,
}

impl InstalledReplica {
    async fn start(cluster: &TestCluster, namespace: &str, pod_name: &str) -> anyhow::Result<Self> {
        let deployment = Api::<Deployment>::namespaced(cluster.client()?, namespace)
            .get(RELEASE)
            .await?;
        let container = deployment
            .spec
            .and_then(|spec| spec.template.spec)
            .and_then(|pod| pod.containers.into_iter().next())
            .context("the Deployment has a container")?;
        let port = free_port()?;
        let workdir = tempfile::Builder::new()
            .prefix("leasehold-chart")
            .tempdir()?;
        let cache = workdir.path().join("compile-cache");
        let args: Vec<String> = container
            .args
            .unwrap_or_default()
            .into_iter()
            .map(|arg| {
                if arg.starts_with("--listen=") {
                    format!("--listen=127.0.0.1:{port}")
                } else if arg.starts_with("--compile-cache=") {
                    format!("--compile-cache={}", cache.display())
                } else {
                    arg
                }
            })
            .collect();
        let token = cluster.service_account_token(namespace, RELEASE).await?;
        let kubeconfig = workdir.path().join("kubeconfig");
        token_kubeconfig(cluster.kubeconfig(), &token, &kubeconfig)?;
        let log = workdir.path().join("replica.log");
        let child = tokio::process::Command::new(leasehold_binary())
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", pod_name)
            .env("RUST_LOG", "warn,leasehold=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self {
            child,
            port,
            log,
            _workdir: workdir,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[tokio::test]
async fn host_leads_with_the_installed_args_as_the_charts_service_account() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let (namespace, _) = install(cluster, DEFAULTS).await?;
    let admin = cluster.client()?;
    let pod_name = "leasehold-6c9f7d8b5-x7k2q";
    let InstalledReplica {
        mut child,
        port,
        log,
        _workdir,
    } = InstalledReplica::start(cluster, &namespace, pod_name).await?;
    let replica_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let get = |path: &str| {
        let request = http.get(format!("http://127.0.0.1:{port}{path}"));
        async move {
            let response = request.send().await.ok()?;
            response
                .status()
                .is_success()
                .then_some(response.json::<Value>().await.ok()?)
        }
    };
    let view = eventually(Duration::from_secs(60), "the replica to lead", || async {
        let view = get("/api/v1/leader").await?;
        (view["role"] == "leader").then_some(view)
    })
    .await
    .with_context(replica_log)?;
    assert_eq!(view["holder"], pod_name, "identity is the pod name: {view}");
    assert_eq!(view["lease"]["namespace"], namespace.as_str());
    eventually(
        Duration::from_secs(30),
        "the replica to list itself",
        || async {
            let listed = get("/api/v1/replicas").await?;
            listed["replicas"]
                .as_array()?
                .iter()
                .any(|replica| replica["identity"] == pod_name)
                .then_some(())
        },
    )
    .await
    .with_context(replica_log)?;
    let ready = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await?;
    assert!(ready.status().is_success(), "/readyz: {}", ready.status());

    let leases: Api<Lease> = Api::namespaced(admin, &namespace);
    let holder = |lease: Lease| lease.spec.and_then(|spec| spec.holder_identity);
    assert_eq!(
        holder(leases.get(RELEASE).await?).as_deref(),
        Some(pod_name),
        "`kubectl get lease` shows the leader's pod"
    );

    // Shutdown releases the election Lease and removes the replica's own.
    let pid = child.id().context("the replica is running")?;
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM)?;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    assert!(status.success(), "exit {status}:\n{}", replica_log());
    let released = holder(leases.get(RELEASE).await?);
    assert!(
        released.as_deref().is_none_or(str::is_empty),
        "the Lease is released on shutdown, held by {released:?}"
    );
    let replica_leases = leases
        .list(&ListParams::default().labels(&format!("leasehold.dev/replica-of={RELEASE}")))
        .await?;
    assert!(
        replica_leases.items.is_empty(),
        "the replica removes its own Lease on shutdown:\n{}",
        replica_log()
    );

    let log_text = replica_log();
    assert!(
        !log_text.to_lowercase().contains("forbidden"),
        "the chart's RBAC denied the host something:\n{log_text}"
    );
    Ok(())
}

#[tokio::test]
async fn with_tls_issued_by_the_replicas_the_host_issues_and_serves_it_with_the_charts_rbac_alone()
-> anyhow::Result<()> {
    let cluster = TestCluster::shared().await;
    let (namespace, _) = install(cluster, TLS_ISSUED_BY_REPLICAS).await?;
    let replica = InstalledReplica::start(cluster, &namespace, "leasehold-6c9f7d8b5-t1s2x").await?;
    let secrets: Api<Secret> = Api::namespaced(cluster.client()?, &namespace);
    let secret_name = format!("{RELEASE}-tls");
    let secret = eventually(Duration::from_secs(60), "the issued Secret", || async {
        secrets.get_opt(&secret_name).await.ok()?
    })
    .await
    .with_context(|| replica.log())?;
    let data = secret_data(&serde_json::to_value(&secret)?)?;
    let ca = pem(&data, "ca.crt")?;

    // Reached by the Service's name, checked against the Secret's CA.
    let service_host = format!("{RELEASE}.{namespace}.svc");
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca)?)
        .resolve(
            &service_host,
            std::net::SocketAddr::from(([127, 0, 0, 1], replica.port)),
        )
        .timeout(Duration::from_secs(2))
        .build()?;
    let url = format!("https://{service_host}:{}/readyz", replica.port);
    eventually(
        Duration::from_secs(60),
        "the replica ready over HTTPS",
        || async {
            let response = client.get(&url).send().await.ok()?;
            response.status().is_success().then_some(())
        },
    )
    .await
    .with_context(|| replica.log())?;
    let log = replica.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the chart's RBAC denied the host something:\n{log}"
    );
    Ok(())
}

/// The chart's admission policy: whoever writes a Plugin's spec must be
/// allowed to impersonate the ServiceAccount it runs as. Refused by the API
/// server itself (nothing is written), then allowed once granted.
#[tokio::test]
async fn a_plugin_runs_only_as_an_account_its_writer_may_impersonate() -> anyhow::Result<()> {
    use leasehold_tests::fixtures::{grant, rule};
    let cluster = TestCluster::shared().await;
    install_plugin_crd(&cluster.client()?).await?;
    install(cluster, DEFAULTS).await?;
    let namespace = cluster.namespace("accounts").await?;
    cluster
        .service_account_token(&namespace, "powerful")
        .await?;
    let author_name = unique_name("author");
    let author = cluster
        .service_account_client(&namespace, &author_name)
        .await?;
    let admin = cluster.client()?;
    grant(
        &admin,
        &namespace,
        &author_name,
        vec![rule(
            &["leasehold.dev"],
            &["plugins"],
            &["get", "create", "update"],
        )],
    )
    .await?;
    let plugins: Api<Plugin> = Api::namespaced(author, &namespace);
    let plugin: Plugin = serde_json::from_value(json!({
        "apiVersion": "leasehold.dev/v1alpha1", "kind": "Plugin",
        "metadata": {"name": "escalation"},
        "spec": {"source": {"image": {"path": "x.wasm"}}, "serviceAccountName": "powerful"},
    }))?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    // The policy takes effect once the API server has loaded it, and the
    // author's grant once RBAC has (until then RBAC's own 403 answers).
    let refusal = eventually(Duration::from_secs(60), "the policy to refuse", || async {
        match plugins.create(&dry_run, &plugin).await {
            Err(kube::Error::Api(status))
                if (status.code == 403 || status.code == 422)
                    && status.message.contains("may not run a Plugin") =>
            {
                Some(status.message)
            }
            _ => None,
        }
    })
    .await?;
    assert!(
        refusal.contains(&format!(
            "may not run a Plugin as ServiceAccount {namespace}/powerful"
        )),
        "{refusal}"
    );
    grant(
        &admin,
        &namespace,
        &author_name,
        vec![rule(&[""], &["serviceaccounts"], &["impersonate"])],
    )
    .await?;
    eventually(Duration::from_secs(60), "the grant to allow it", || async {
        plugins.create(&dry_run, &plugin).await.ok().map(drop)
    })
    .await?;
    Ok(())
}

/// Fencing on the real API server: a write carrying the Lease's current
/// term passes; once the Lease moves to another holder, the same term is
/// refused by the API server itself, with a reason naming the stale term.
/// Prints how long the API server took to see the new term (its policy
/// parameter cache): the window that remains.
#[tokio::test]
async fn the_api_server_refuses_a_write_from_a_stale_term() -> anyhow::Result<()> {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use kube::api::{ObjectMeta, Patch, PatchParams};
    use leasehold::election::LeaderGuard;
    use leasehold::election::fence::Fence;
    use leasehold_tests::fixtures::{grant, rule};

    let cluster = TestCluster::shared().await;
    let (namespace, _) = install(cluster, DEFAULTS).await?;
    let admin = cluster.client()?;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &namespace);
    let lease = |name: &str, holder: &str, transitions: i32| Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            // What the host puts on every Lease it elects on.
            labels: Some([("leasehold.dev/election".to_owned(), RELEASE.to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_transitions: Some(transitions),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    };
    leases
        .create(&PostParams::default(), &lease(RELEASE, "replica-a", 1))
        .await?;
    let writer = unique_name("writer");
    cluster.service_account_token(&namespace, &writer).await?;
    grant(
        &admin,
        &namespace,
        &writer,
        vec![rule(&[""], &["configmaps"], &["create"])],
    )
    .await?;

    // What a plugin's client is: impersonating its account, fenced, the term on.
    let config_maps_of =
        |lease: &str, holder: &str, transitions: i32| -> anyhow::Result<Api<ConfigMap>> {
            let account = ServiceAccount::new(&namespace, &writer);
            let term = format!("{namespace}/{lease}/{holder}/{transitions}");
            let guard = LeaderGuard::with_term(
                tokio::time::Instant::now() + Duration::from_secs(3600),
                Some(term),
            );
            let client =
                kube::client::ClientBuilder::try_from(account.impersonated_by(cluster.config()))?
                    .with_layer(&Fence::carrying_term(guard))
                    .build();
            Ok(Api::namespaced(client, &namespace))
        };
    let config_maps = |holder: &str, transitions: i32| config_maps_of(RELEASE, holder, transitions);
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let dry_run = &params;
    let write = |api: Api<ConfigMap>| async move {
        let object = config_map(&unique_name("fenced"), &[], &[]);
        api.create(dry_run, &object).await
    };
    // The policy is loaded once a term it has never seen is refused.
    eventually(
        Duration::from_secs(60),
        "the fencing policy to be loaded",
        || async { write(config_maps("nobody", 0).ok()?).await.err().map(drop) },
    )
    .await?;
    write(config_maps("replica-a", 1)?).await?;

    // Another replica takes over: a new holder, one more transition.
    leases
        .patch(
            RELEASE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "replica-b", "leaseTransitions": 2}})),
        )
        .await?;
    let moved = std::time::Instant::now();
    let refusal = eventually(
        Duration::from_secs(60),
        "the stale term to be refused",
        || async {
            match write(config_maps("replica-a", 1).ok()?).await {
                Err(kube::Error::Api(status)) if status.code == 403 => Some(status.message),
                _ => None,
            }
        },
    )
    .await?;
    let window = moved.elapsed();
    eprintln!("the API server refused the stale term {window:?} after the Lease moved");
    assert!(
        refusal.contains(&format!(
            "stale leadership term {namespace}/{RELEASE}/replica-a/1: the Lease is now at term {namespace}/{RELEASE}/replica-b/2"
        )),
        "{refusal}"
    );
    write(config_maps("replica-b", 2)?).await?;

    // Another Lease of the same election (as the spread placement's shards
    // will be): the same binding fences it, by its label.
    let shard = format!("{RELEASE}-shard-1");
    leases
        .create(&PostParams::default(), &lease(&shard, "replica-c", 4))
        .await?;
    let refusal = eventually(
        Duration::from_secs(60),
        "a stale term of the second Lease to be refused",
        || async {
            match write(config_maps_of(&shard, "replica-a", 3).ok()?).await {
                Err(kube::Error::Api(status)) if status.code == 403 => Some(status.message),
                _ => None,
            }
        },
    )
    .await?;
    assert!(
        refusal.contains(&format!(
            "the Lease is now at term {namespace}/{shard}/replica-c/4"
        )),
        "{refusal}"
    );
    write(config_maps_of(&shard, "replica-c", 4)?).await?;
    Ok(())
}
